//! Footprint: binary size, idle RSS, start-up time to the first answered request with 100
//! records, RSS while one client holds 5000 idle connections and after it lets go, and RSS
//! with 100 running containers and 1000 viewers; the bare hyper
//! hello-world's size, RSS and start-up are the baseline, measured in the same run.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use support::*;

/// Spawns `cmd` and times it until `port` answers an HTTP request; returns (ms, child).
/// The caller kills and waits for the child.
#[allow(clippy::zombie_processes)]
fn time_to_answer(mut cmd: Command, port: u16) -> (f64, std::process::Child) {
    let t = Instant::now();
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    loop {
        if let Ok(r) = raw(port, b"GET /api/v1/public/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") {
            if r.status == 200 {
                return (t.elapsed().as_secs_f64() * 1000.0, child);
            }
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no answer");
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn main() {
    maybe_serve_hello();
    let me = std::env::current_exe().unwrap();
    let lightd_size = std::fs::metadata(bin()).unwrap().len();
    let hello_size = std::fs::metadata(&me).unwrap().len();

    // Start-up with 100 records (median of 5), beside the hello-world's start-up.
    let mut starts = Vec::new();
    let mut hello_starts = Vec::new();
    for _ in 0..5 {
        let port = free_port();
        let d = Daemon::prepare(|c| c["server"]["port"] = serde_json::json!(port));
        seed_records(&d.dir.0, 100, &d.prefix);
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(&d.config);
        let (ms, mut child) = time_to_answer(cmd, port);
        starts.push(ms);
        let _ = child.kill();
        let _ = child.wait();
        let port = free_port();
        let mut cmd = Command::new(&me);
        cmd.args(["--hello", &port.to_string()]);
        let (ms, mut child) = time_to_answer(cmd, port);
        hello_starts.push(ms);
        let _ = child.kill();
        let _ = child.wait();
    }
    let (starts, hello_starts) = (sorted(starts), sorted(hello_starts));

    let hello_port = free_port();
    let mut hello = spawn_hello(hello_port);
    let mut d = Daemon::start();
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss(d.pid());
    let hello_idle = rss(hello.id());

    // One client opens 5000 idle connections (the per-IP cap refuses past it), then closes
    // them: RSS while held and once they are gone.
    let held: Vec<std::net::TcpStream> =
        (0..5000).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", d.port)).ok()).collect();
    let connected = held.len();
    std::thread::sleep(Duration::from_secs(2));
    // Counted by the kernel: a request to /metrics from this address would be over its cap.
    let open = Command::new("ss")
        .args(["-Htn", "state", "established", &format!("( sport = :{} )", d.port)])
        .output()
        .map_or(0, |o| String::from_utf8_lossy(&o.stdout).lines().count());
    let holding = rss(d.pid());
    drop(held);
    wait_for(30, "the idle connections to close", || (d.metric("lightd_connections") == Some(1)).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let after_idle = rss(d.pid());

    // Loaded: 100 running containers, 10 viewers each.
    let ids = populate(&d, "s", 100, "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 1; done");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let viewers: Vec<_> = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..1000 {
            let url = format!("ws://127.0.0.1:{}/ws/{}?token={TOKEN}", d.port, ids[i % ids.len()]);
            let (mut s, _) = tokio_tungstenite::connect_async(url).await.expect("viewer");
            v.push(tokio::spawn(async move { while let Some(Ok(_)) = s.next().await {} }));
        }
        v
    });
    std::thread::sleep(Duration::from_secs(10));
    let loaded = rss(d.pid());
    let m = d.get("/metrics").body;
    let viewers_seen: u64 = m
        .lines()
        .filter(|l| l.starts_with("lightd_viewers{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    for v in viewers {
        v.abort();
    }
    for id in &ids {
        d.call("POST", &format!("/containers/{id}/kill"), None);
    }
    let _ = hello.kill();
    let _ = hello.wait();
    d.stop();

    let text = [
        "| figure | lightd | bare hyper hello-world (baseline) | ratio |".to_string(),
        "|---|---|---|---|".into(),
        format!("| stripped binary size | {} | {} | {:.2} |", mib(lightd_size), mib(hello_size), lightd_size as f64 / hello_size as f64),
        format!("| idle RSS | {} | {} | {:.2} |", mib(idle), mib(hello_idle), idle as f64 / hello_idle as f64),
        format!(
            "| start-up to first answer (100 records; median of 5; with `volumes.quota` auto, whose probe makes and loop-mounts a small ext4 image, about 14 ms here) | {:.1} ms | {:.1} ms | {:.2} |",
            pct(&starts, 50.0),
            pct(&hello_starts, 50.0),
            pct(&starts, 50.0) / pct(&hello_starts, 50.0)
        ),
        format!("| RSS while one client holds 5000 idle connections ({} connected, {open} held by the daemon 2 s later, the rest refused by `server.max_connections_per_ip`) | {} | - | - |", connected, mib(holding)),
        format!(
            "| RSS once they closed (vs idle: {:+.2} MiB) | {} | - | - |",
            (after_idle as f64 - idle as f64) / 1048576.0,
            mib(after_idle)
        ),
        format!("| RSS with 100 running containers and {viewers_seen} WebSocket viewers | {} | - | - |", mib(loaded)),
        String::new(),
        "The hello-world baseline is this bench program itself (it also carries the WebSocket client), so its size is an upper bound for a bare hyper server.".into(),
    ]
    .join("\n");
    println!("{text}");
    write_section("footprint", &text);
}
