//! What the console journal costs, measured against the same daemon with the journal off in
//! the same run: the realistic load (100 servers printing 20 lines/s, 1000 viewers over them)
//! with `console.journal_bytes` at its default and at 0, side by side: delivery p99 inside the
//! daemon and lightd's CPU seconds per million lines; bytes written to disk per line printed
//! (the daemon's `/proc/<pid>/io`); and `logs?tail=1000` of a stopped server after a daemon
//! restart (every line from the journal), beside the same call answered from memory.

#[path = "../tests/common/mod.rs"]
mod common;
mod fanout;
mod support;
mod viewer;

use std::time::{Duration, Instant};

use common::*;
use fanout::*;
use serde_json::json;
use support::*;

/// `<n> <wall clock>` 20 times a second (see benches/console.rs for why `read -t`, not sleep).
const STEADY: &str = "mkfifo /tmp/pause; exec 3<>/tmp/pause; i=0; while true; do i=$((i+1)); echo \"$i $EPOCHREALTIME\"; read -t 0.05 -u 3 _; done";
const SECS: u64 = 20;
const SERVICE_NICE: i32 = -5;

fn write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// The realistic row with the journal at `journal_bytes`, and the bytes the daemon wrote per
/// line printed meanwhile.
fn realistic(journal_bytes: u64) -> (Row, f64) {
    let mut d = Daemon::prepare(|c| {
        c["server"]["max_connections_per_ip"] = json!(8192);
        c["console"]["max_sessions_per_container"] = json!(4000);
        c["console"]["journal_bytes"] = json!(journal_bytes);
    });
    d.nice = SERVICE_NICE;
    d.spawn();
    let servers = populate(&d, "s", 100, STEADY);
    std::thread::sleep(Duration::from_secs(6));
    let cids: Vec<String> = servers.iter().map(|id| container_id(&d, id)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let what = if journal_bytes == 0 { "journal off" } else { "journal on (4 MiB per server)" };
    let (row, written) = rt.block_on(async {
        let all = open_viewers(d.port, &servers, 10).await;
        let wrote = write_bytes(d.pid());
        let (row, _probe, all) = measure_probed(&d, what, all, &cids, SECS).await;
        // The journal's last round of the span lands within its second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let wrote = write_bytes(d.pid()) - wrote;
        drop(all);
        (row, wrote)
    });
    // Each line printed reached its server's 10 viewers.
    let printed = row.lines_per_s * SECS as f64 / 10.0;
    let per_line = written as f64 / printed.max(1.0);
    for id in &servers {
        d.call("DELETE", &format!("/containers/{id}"), None);
    }
    (row, per_line)
}

/// `logs?tail=1000` of a stopped server, `n` times: from memory, then after a daemon restart
/// (from the journal). Milliseconds, sorted.
fn stopped_tails(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut d = Daemon::start();
    let cmd = "i=0; while [ $i -lt 5000 ]; do i=$((i+1)); echo \"line $i of a world that was\"; \
               [ $((i % 200)) -eq 0 ] && sleep 0.05; done";
    let id = populate(&d, "t", 1, cmd).remove(0);
    wait_for(60, "the server to print and stop", || (d.record(&id)["state"] == "offline").then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let time = |d: &Daemon| -> Vec<f64> {
        let mut v: Vec<f64> = (0..n)
            .map(|_| {
                let t = Instant::now();
                let r = d.get(&format!("/containers/{id}/logs?tail=1000"));
                assert_eq!(r.status, 200);
                assert_eq!(r.json()["lines"].as_array().unwrap().len(), 1000);
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let memory = time(&d);
    d.kill9();
    d.spawn();
    let journal = time(&d);
    (memory, journal)
}

fn main() {
    let (on, on_bytes) = realistic(4 << 20);
    let (off, off_bytes) = realistic(0);
    let (memory, journal) = stopped_tails(200);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let summary = vec![
        format!(
            "- delivery p99 in the daemon: {:.2} ms on, {:.2} ms off ({:.2}x)",
            on.daemon_p99,
            off.daemon_p99,
            ratio(on.daemon_p99, off.daemon_p99)
        ),
        format!(
            "- lightd CPU seconds per million lines: {:.2} on, {:.2} off ({:.2}x)",
            on.cpu_per_million,
            off.cpu_per_million,
            ratio(on.cpu_per_million, off.cpu_per_million)
        ),
        format!("- bytes written to disk per line printed: {on_bytes:.1} on, {off_bytes:.1} off"),
        format!(
            "- `logs?tail=1000` of a stopped server: from memory p50 {:.2} ms, p99 {:.2} ms; after a restart, from \
             the journal, p50 {:.2} ms, p99 {:.2} ms (200 calls each, one at a time)",
            pct(&memory, 50.0),
            pct(&memory, 99.0),
            pct(&journal, 50.0),
            pct(&journal, 99.0)
        ),
    ];
    let mut out = vec![
        "Realistic load (100 servers at 20 lines/s each, 1000 viewers, 20 s), the journal on and off in one run:"
            .into(),
        String::new(),
    ];
    out.extend(Row::table(&[on, off]));
    out.push(String::new());
    out.extend(summary);
    for l in &out {
        println!("{l}");
    }
    write_section("journal", &out.join("\n"));
}
