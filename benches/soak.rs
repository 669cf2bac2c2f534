//! Soak (bounded, loopback only): 100 containers, 1000 WebSocket viewers and a REST loop for
//! `LIGHTD_SOAK_SECS` (default 600). Reports errors (must be 0), the daemon's RSS over time
//! (must plateau) and Docker streams (must stay 1 attach per container). Exits non-zero
//! when an expectation fails.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const CONTAINERS: usize = 100;
const VIEWERS: usize = 1000;

#[derive(Default)]
struct Counts {
    lines: AtomicU64,
    errors: AtomicU64,
    skipped_notes: AtomicU64,
    rest: AtomicU64,
}

fn main() {
    let secs: u64 = std::env::var("LIGHTD_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let d = Daemon::start();
    println!("soak: {CONTAINERS} containers, {VIEWERS} viewers, {secs} s");
    let ids = populate(&d, "s", CONTAINERS, "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.2; done");
    let counts = Arc::new(Counts::default());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    // Viewers: every line in order, once; a gap is an error unless the daemon said it skipped.
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|i| {
            let (port, id, counts) = (d.port, ids[i % CONTAINERS].clone(), Arc::clone(&counts));
            rt.spawn(async move {
                let url = format!("ws://127.0.0.1:{port}/ws/{id}?token={TOKEN}");
                let Ok((mut s, _)) = tokio_tungstenite::connect_async(url).await else {
                    counts.errors.fetch_add(1, Relaxed);
                    return;
                };
                let mut last: Option<u64> = None;
                loop {
                    if Instant::now() >= until {
                        return;
                    }
                    let msg = match tokio::time::timeout_at(until.into(), s.next()).await {
                        Err(_) => return,
                        Ok(Some(Ok(m))) => m,
                        Ok(_) => {
                            counts.errors.fetch_add(1, Relaxed);
                            eprintln!("soak: viewer of {id} disconnected");
                            return;
                        }
                    };
                    let Message::Text(t) = msg else { continue };
                    let f: Value = serde_json::from_str(&t).unwrap_or_default();
                    let args = f["args"].as_array().cloned().unwrap_or_default();
                    let number = |v: &Value| v.as_str()?.strip_prefix("line ")?.parse::<u64>().ok();
                    match f["event"].as_str() {
                        Some("logs") => last = args.last().and_then(number),
                        Some("console output") => {
                            let n = args.first().and_then(number);
                            if let (Some(prev), Some(n)) = (last, n) {
                                if n != prev + 1 {
                                    counts.errors.fetch_add(1, Relaxed);
                                    eprintln!("soak: {id}: line {n} after {prev}");
                                }
                            }
                            last = n.or(last);
                            counts.lines.fetch_add(1, Relaxed);
                        }
                        Some("daemon_message")
                            if args.first().and_then(Value::as_str).is_some_and(|m| m.ends_with("skipped")) =>
                        {
                            counts.skipped_notes.fetch_add(1, Relaxed);
                            last = None;
                        }
                        Some("error") => {
                            counts.errors.fetch_add(1, Relaxed);
                        }
                        _ => {}
                    }
                }
            })
        })
        .collect();
    // REST traffic beside them: lists, logs, stats and commands.
    let rest = {
        let (port, ids, counts) = (d.port, ids.clone(), Arc::clone(&counts));
        std::thread::spawn(move || {
            let mut i = 0usize;
            while Instant::now() < until {
                let id = &ids[i % ids.len()];
                let req = |m: &str, p: &str, body: Option<Value>| {
                    let body = body.map(|b| b.to_string()).unwrap_or_default();
                    let ct = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
                    let r = format!(
                        "{m} {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    raw(port, r.as_bytes()).map(|r| r.status).unwrap_or(0)
                };
                let statuses = [
                    req("GET", "/containers", None),
                    req("GET", &format!("/containers/{id}/logs?tail=20"), None),
                    req("GET", &format!("/containers/{id}/stats"), None),
                    req("POST", &format!("/containers/{id}/command"), Some(json!({"command": "noop"}))),
                ];
                for s in statuses {
                    counts.rest.fetch_add(1, Relaxed);
                    if !(200..300).contains(&s) {
                        counts.errors.fetch_add(1, Relaxed);
                        eprintln!("soak: REST answered {s}");
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let t0 = Instant::now();
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut worst_attach = 0;
    let mut worst_stats = 0;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(5).min(until.saturating_duration_since(Instant::now())));
        let m = d.get("/metrics").body;
        let per = |kind: &str| -> u64 {
            m.lines()
                .filter(|l| {
                    l.starts_with(&format!("lightd_docker_streams{{kind=\"{kind}\"")) && !l.contains("container=\"\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .max()
                .unwrap_or(0)
        };
        worst_attach = worst_attach.max(per("attach"));
        worst_stats = worst_stats.max(per("stats"));
        let r = rss(d.pid());
        samples.push((t0.elapsed().as_secs(), r));
        println!(
            "soak: t={:>4}s rss={} lines={} rest={} errors={} max attach/container={} max stats/container={}",
            t0.elapsed().as_secs(),
            mib(r),
            counts.lines.load(Relaxed),
            counts.rest.load(Relaxed),
            counts.errors.load(Relaxed),
            per("attach"),
            per("stats")
        );
    }
    rest.join().unwrap();
    rt.block_on(async {
        for v in viewers {
            let _ = v.await;
        }
    });
    for id in &ids {
        d.call("POST", &format!("/containers/{id}/kill"), None);
    }
    let errors = counts.errors.load(Relaxed);
    // Plateau: the second half's peak is no more than 10% above the first half's.
    let half = samples.len() / 2;
    let first = samples[..half.max(1)].iter().map(|s| s.1).max().unwrap_or(0);
    let second = samples[half..].iter().map(|s| s.1).max().unwrap_or(0);
    let plateau = second as f64 <= first as f64 * 1.10;
    let every = (samples.len() / 10).max(1);
    let curve: Vec<String> = samples.iter().step_by(every).map(|(t, r)| format!("{t}s: {}", mib(*r))).collect();
    let text = [
        format!("{CONTAINERS} containers (a line every 0.2 s each), {VIEWERS} WebSocket viewers checking order, REST loop (list, logs, stats, command) for {secs} s.\n"),
        "| figure | value | expectation |".into(),
        "|---|---|---|".into(),
        format!("| errors (disconnects, gaps, error frames, non-2xx) | {errors} | 0 |"),
        format!("| console lines delivered | {} | - |", counts.lines.load(Relaxed)),
        format!("| \"lines skipped\" notes | {} | - |", counts.skipped_notes.load(Relaxed)),
        format!("| REST requests | {} | - |", counts.rest.load(Relaxed)),
        format!("| peak RSS, first half / second half | {} / {} | plateau: {} |", mib(first), mib(second), if plateau { "yes" } else { "NO" }),
        format!("| most Docker attach streams per container | {worst_attach} | 1 |"),
        format!("| most Docker stats streams per container | {worst_stats} | <= 1 |"),
        String::new(),
        format!("RSS over time: {}", curve.join(", ")),
    ]
    .join("\n");
    println!("{text}");
    write_section("soak", &text);
    let ok = errors == 0 && plateau && worst_attach == 1 && worst_stats <= 1;
    std::process::exit(if ok { 0 } else { 1 });
}
