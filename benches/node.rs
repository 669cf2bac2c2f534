//! The node report and the usage meters at 100 running servers: `GET /system` and
//! `GET /containers/:id/usage` under `wrk`, beside `GET /health` (the baseline) in alternating
//! rounds of one run; and what metering costs the daemon in CPU, from its own `/proc/<pid>/stat`
//! over quiet minutes: metering every 10 s (the default) and every 1 s, against once an hour.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use support::*;

const SERVERS: usize = 100;
const SECS: u32 = 4;
const ROUNDS: usize = 5;
/// How long each metering interval is left to run, quiet, while the daemon's CPU is counted.
const QUIET: Duration = Duration::from_secs(60);

/// One wrk run: requests/s, p50 and p99 latency (ms), non-2xx answers and socket errors.
#[derive(Clone, Copy, Default)]
struct Wrk {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

fn wrk(port: u16, path: &str, auth: bool, conns: usize, secs: u32) -> Wrk {
    let threads = conns.min(2);
    let mut cmd = Command::new("wrk");
    cmd.args([format!("-t{threads}"), format!("-c{conns}"), format!("-d{secs}s"), "--latency".into()]);
    if auth {
        cmd.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    }
    let out = cmd.arg(format!("http://127.0.0.1:{port}{path}")).output().expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let ms = |v: &str| {
        let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
        let (n, unit) = v.split_at(split);
        let n: f64 = n.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "s" => n * 1000.0,
            _ => n,
        }
    };
    let mut w = Wrk::default();
    for line in text.lines().map(str::trim) {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => w.p50 = ms(v),
            ["99%", v] => w.p99 = ms(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                w.errors += rest.iter().filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    w
}

/// The p50 and p99 (ms, the upper bound of their bucket) of `route`'s answers as the daemon
/// timed them (`lightd_http_request_duration_seconds`: request routed to answer ready).
fn in_daemon(metrics: &str, route: &str) -> (f64, f64) {
    let prefix = format!("lightd_http_request_duration_seconds_bucket{{method=\"GET\",route=\"{route}\",le=\"");
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, n) = rest.split_once("\"} ")?;
            Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, n.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let q = |p: f64| buckets.iter().find(|b| b.1 >= total * p).map_or(f64::NAN, |b| b.0 * 1000.0);
    (q(0.5), q(0.99))
}

fn median(v: &[f64]) -> f64 {
    let v = sorted(v.to_vec());
    v[v.len() / 2]
}

/// Restarts the daemon metering every `secs` (the servers keep running), lets it settle, then
/// counts its CPU over [`QUIET`]: CPU seconds per hour.
fn metering_cost(d: &mut Daemon, secs: u64) -> f64 {
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&d.config).unwrap()).unwrap();
    cfg["node"]["meter_interval"] = json!(secs);
    std::fs::write(&d.config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    d.restart();
    // Re-attaching to 100 consoles and the first reading are start-up, not metering.
    std::thread::sleep(Duration::from_secs(15));
    let before = cpu_seconds(d.pid());
    std::thread::sleep(QUIET);
    let used = cpu_seconds(d.pid()) - before;
    println!("metering every {secs} s: {used:.2} CPU-s in {} s", QUIET.as_secs());
    used / QUIET.as_secs_f64() * 3600.0
}

fn main() {
    let mut d = Daemon::prepare(|c| c["node"] = json!({"meter_interval": 10}));
    d.spawn();
    let ids = populate(&d, "m", SERVERS, "sleep 1000000");
    for id in &ids {
        d.wait_state(id, "running", 120);
    }
    wait_for(60, "every server metered", || {
        ids.iter().all(|id| d.get(&format!("/containers/{id}/usage")).json()["starts"] == 1).then_some(())
    });
    let usage = format!("/containers/{}/usage", ids[7]);
    let targets: [(&str, &str, bool); 3] = [
        ("`GET /health` (baseline)", "/health", false),
        ("`GET /system`", "/system", true),
        ("`GET /containers/:id/usage`", usage.as_str(), true),
    ];
    for (_, path, auth) in &targets {
        wrk(d.port, path, *auth, 50, 1);
    }
    let mut busy: Vec<Vec<Wrk>> = vec![Vec::new(); targets.len()];
    let mut alone: Vec<Vec<Wrk>> = vec![Vec::new(); targets.len()];
    for round in 0..ROUNDS {
        for (i, (name, path, auth)) in targets.iter().enumerate() {
            let w = wrk(d.port, path, *auth, 50, SECS);
            let one = wrk(d.port, path, *auth, 1, SECS);
            println!("round {}: {name}: {:.0} req/s (50 conns), p99 {:.3} ms (1 conn)", round + 1, w.rps, one.p99);
            busy[i].push(w);
            alone[i].push(one);
        }
    }
    let metrics = d.get("/metrics").body;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let timed: Vec<(f64, f64)> =
        ["/health", "/system", "/containers/:id/usage"].iter().map(|r| in_daemon(&metrics, r)).collect();
    let per_hour: Vec<(u64, f64)> = [3600, 10, 1].iter().map(|s| (*s, metering_cost(&mut d, *s))).collect();

    let mut out = vec![
        format!(
            "{SERVERS} servers running (`sleep`), metered every 10 s. `wrk --latency` for {SECS} s, \
             {ROUNDS} alternating rounds (medians): 50 connections (`-t2 -c50`, the throughput, client on the \
             same 2 cores), and 1 connection (`-t1 -c1`, one panel's poll: its latency without a queue).\n"
        ),
        "| route | req/s, 50 conns | rounds | p50 / p99 ms, 50 conns | ratio to `/health` | p50 / p99 ms, 1 conn | in the daemon p50 / p99 ms (bucket bound) | errors |".into(),
        "|---|---|---|---|---|---|---|---|".into(),
    ];
    for (i, (name, ..)) in targets.iter().enumerate() {
        let rps: Vec<f64> = busy[i].iter().map(|w| w.rps).collect();
        let ratio: Vec<f64> = busy[i].iter().zip(&busy[0]).map(|(w, b)| w.rps / b.rps).collect();
        out.push(format!(
            "| {name} | {:.0} | {} | {:.2} / {:.2} | {:.2} | {:.3} / {:.3} | {} / {} | {} |",
            median(&rps),
            rps.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" / "),
            median(&busy[i].iter().map(|w| w.p50).collect::<Vec<_>>()),
            median(&busy[i].iter().map(|w| w.p99).collect::<Vec<_>>()),
            median(&ratio),
            median(&alone[i].iter().map(|w| w.p50).collect::<Vec<_>>()),
            median(&alone[i].iter().map(|w| w.p99).collect::<Vec<_>>()),
            timed[i].0,
            timed[i].1,
            busy[i].iter().chain(&alone[i]).map(|w| w.errors).sum::<u64>(),
        ));
    }
    let p99 = |i: usize| median(&alone[i].iter().map(|w| w.p99).collect::<Vec<_>>());
    let met = |v: f64| if v < 5.0 { "met" } else { "NOT met" };
    out.push(String::new());
    out.push(format!(
        "Goal: `GET /system` p99 < 5 ms at {SERVERS} servers: in the daemon {} ms ({}); at the client {:.3} ms at 1 \
         connection ({}), {:.2} ms at 50 ({}). Load average at the end of the rounds: {}.",
        timed[1].1,
        met(timed[1].1),
        p99(1),
        met(p99(1)),
        median(&busy[1].iter().map(|w| w.p99).collect::<Vec<_>>()),
        met(median(&busy[1].iter().map(|w| w.p99).collect::<Vec<_>>())),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    ));
    out.push(String::new());
    out.push(format!(
        "Metering's CPU at {SERVERS} running servers: the daemon's own CPU (utime + stime of `/proc/<pid>/stat`) \
         over {} quiet seconds per interval, after a restart and 15 s to settle; the baseline reads once an hour.\n",
        QUIET.as_secs()
    ));
    out.push("| `node.meter_interval` | daemon CPU-s per hour | of which metering (less the baseline) | per reading of 100 servers |".into());
    out.push("|---|---|---|---|".into());
    let base = per_hour[0].1;
    for (secs, cost) in &per_hour {
        let readings = 3600.0 / *secs as f64;
        let metering = (cost - base).max(0.0);
        let per = if *secs == 3600 { "-".to_string() } else { format!("{:.1} ms", metering / readings * 1000.0) };
        let label = if *secs == 3600 { "3600 (baseline)".to_string() } else { secs.to_string() };
        out.push(format!(
            "| {label} | {cost:.1} | {} | {per} |",
            if *secs == 3600 { "-".into() } else { format!("{metering:.1}") }
        ));
    }
    let table = out.join("\n");
    println!("{table}");
    write_section("node", &table);
}
