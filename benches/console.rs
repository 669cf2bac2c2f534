//! The console under load, beside the seed's design measured in the same run:
//! - fan-out: a container printing as fast as it can, N = 1, 100, 1000 WebSocket viewers:
//!   lines/s delivered, p99 stdout-to-viewer latency, daemon CPU; baseline: N Docker
//!   `logs --follow` streams read directly (one per viewer, as the seed did), N = 1 and 100;
//! - tail-on-connect with 1000 viewers: upgrade to the last of the 100 tail lines;
//! - Docker streams per container for N = 0, 1, 100, 1000 viewers (from /metrics).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const SECS: f64 = 5.0;
const FLOOD: &str = "i=0; while true; do i=$((i+1)); echo \"$i $EPOCHREALTIME\"; done";
const SLOW: &str = "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.05; done";

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Lines seen and their latencies (ms), shared by many readers.
#[derive(Default)]
struct Tally {
    lines: AtomicU64,
    latencies: Mutex<Vec<f64>>,
}

impl Tally {
    fn line(&self, text: &str) {
        self.lines.fetch_add(1, Relaxed);
        if let Some(t) = text.split(' ').nth(1).and_then(|t| t.parse::<f64>().ok()) {
            self.latencies.lock().unwrap().push((now() - t) * 1000.0);
        }
    }
}

async fn ws(
    port: u16,
    id: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://127.0.0.1:{port}/ws/{id}?token={TOKEN}");
    tokio_tungstenite::connect_async(url).await.expect("websocket").0
}

/// `n` WebSocket viewers reading for `SECS`; returns (lines/s, p99 ms, daemon CPU %).
async fn fan_out(d: &Daemon, id: &str, n: usize) -> (f64, f64, f64, u64) {
    let tally = Arc::new(Tally::default());
    // Connect while the flood is paused: on 2 cores a flood starves the handshakes.
    assert_eq!(d.call("POST", &format!("/containers/{id}/suspend"), None).status, 202);
    let mut socks = Vec::new();
    for _ in 0..n {
        let mut s = ws(d.port, id).await;
        while let Some(Ok(m)) = s.next().await {
            if matches!(&m, Message::Text(t) if t.contains("\"logs\"")) {
                break;
            }
        }
        socks.push(s);
    }
    assert_eq!(d.call("POST", &format!("/containers/{id}/resume"), None).status, 202);
    let cpu0 = cpu_seconds(d.pid());
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(SECS);
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|mut s| {
            let tally = Arc::clone(&tally);
            tokio::spawn(async move {
                // A ready stream never lets a timeout fire, so the clock is checked each time.
                while Instant::now() < until {
                    let Ok(Some(Ok(m))) = tokio::time::timeout_at(until.into(), s.next()).await else { break };
                    if let Message::Text(t) = m {
                        let f: Value = serde_json::from_str(&t).unwrap();
                        if f["event"] == "console output" {
                            tally.line(f["args"][0].as_str().unwrap());
                        }
                    }
                }
            })
        })
        .collect();
    let mut attach_max = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = d.get("/metrics").body;
        attach_max = attach_max
            .max(metric(&m, &format!("lightd_docker_streams{{kind=\"attach\",container=\"{id}\"}}")).unwrap());
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(d.pid()) - cpu0) / secs * 100.0;
    let lat = sorted(std::mem::take(&mut *tally.latencies.lock().unwrap()));
    (tally.lines.load(Relaxed) as f64 / secs, pct(&lat, 99.0), cpu, attach_max)
}

/// The seed's way: one Docker `logs --follow` stream per viewer, read straight from the
/// engine. Returns (lines/s, p99 ms, dockerd CPU %).
async fn docker_direct(container: &str, n: usize) -> (f64, f64, f64) {
    let dockerd: u32 = String::from_utf8(std::process::Command::new("pidof").arg("dockerd").output().unwrap().stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let tally = Arc::new(Tally::default());
    let cpu0 = cpu_seconds(dockerd);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(SECS);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (tally, container) = (Arc::clone(&tally), container.to_string());
            tokio::spawn(async move {
                let stream = tokio::net::UnixStream::connect("/var/run/docker.sock").await.unwrap();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                let conn = tokio::spawn(conn);
                let req = hyper::Request::get(format!("/v1.41/containers/{container}/logs?follow=1&stdout=1&tail=0"))
                    .header("host", "docker")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let mut body = send.send_request(req).await.unwrap().into_body();
                let mut buf: Vec<u8> = Vec::new();
                while Instant::now() < until {
                    let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until.into(), body.frame()).await else { break };
                    let Ok(data) = frame.into_data() else { continue };
                    buf.extend_from_slice(&data);
                    // 8-byte stream headers, then the payload.
                    let mut pos = 0;
                    while buf.len() >= pos + 8 {
                        let size =
                            u32::from_be_bytes([buf[pos + 4], buf[pos + 5], buf[pos + 6], buf[pos + 7]]) as usize;
                        if buf.len() < pos + 8 + size {
                            break;
                        }
                        for line in String::from_utf8_lossy(&buf[pos + 8..pos + 8 + size]).lines() {
                            tally.line(line);
                        }
                        pos += 8 + size;
                    }
                    buf.drain(..pos);
                }
                // Close the stream now, so the engine stops pushing to a reader that left.
                drop(body);
                conn.abort();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(dockerd) - cpu0) / secs * 100.0;
    let lat = sorted(std::mem::take(&mut *tally.latencies.lock().unwrap()));
    (tally.lines.load(Relaxed) as f64 / secs, pct(&lat, 99.0), cpu)
}

/// The seed's tail: each connecting viewer asks Docker for the last 100 lines.
async fn docker_tail_per_viewer(container: &str, n: usize) -> Vec<f64> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let container = container.to_string();
            tokio::spawn(async move {
                let t = Instant::now();
                let stream = tokio::net::UnixStream::connect("/var/run/docker.sock").await.unwrap();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                let req = hyper::Request::get(format!("/v1.41/containers/{container}/logs?stdout=1&stderr=1&tail=100"))
                    .header("host", "docker")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let body = send.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
                assert!(body.len() > 100);
                t.elapsed().as_secs_f64() * 1000.0
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    sorted(out)
}

fn streams(d: &Daemon, id: &str) -> (u64, u64) {
    let m = d.get("/metrics").body;
    let get = |k: &str| metric(&m, &format!("lightd_docker_streams{{kind=\"{k}\",container=\"{id}\"}}")).unwrap();
    (get("attach"), get("stats"))
}

fn main() {
    let d = Daemon::start();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let flood = populate(&d, "flood", 1, FLOOD).remove(0);
    let flood_cid = d.get(&format!("/containers/{flood}")).json()["container_id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(1));

    let mut rows = vec![
        format!("Fan-out: one container printing `<n> <time>` lines as fast as busybox sh can; {SECS} s per row."),
        "Latency is from the container's own clock (`$EPOCHREALTIME`) to the viewer's decode.\n".into(),
        "| readers | path | lines/s delivered (all readers) | p99 latency ms | CPU % | Docker streams |".into(),
        "|---|---|---|---|---|---|".into(),
    ];
    for n in [1usize, 100] {
        let (lps, p99, cpu) = rt.block_on(docker_direct(&flood_cid, n));
        println!("docker direct n={n}: {lps:.0} lines/s, p99 {p99:.1} ms, dockerd {cpu:.0}%");
        rows.push(format!(
            "| {n} | baseline: Docker `logs --follow` per reader | {lps:.0} | {p99:.1} | dockerd {cpu:.0} | {n} logs |"
        ));
    }
    for n in [1usize, 100, 1000] {
        println!("lightd ws n={n}: connecting");
        let (lps, p99, cpu, attach) = rt.block_on(fan_out(&d, &flood, n));
        println!("lightd ws n={n}: {lps:.0} lines/s, p99 {p99:.1} ms, lightd {cpu:.0}%, attach streams {attach}");
        rows.push(format!("| {n} | lightd WebSocket | {lps:.0} | {p99:.1} | lightd {cpu:.0} | {attach} attach |"));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(d.call("POST", &format!("/containers/{flood}/kill"), None).status, 202);

    // Tail-on-connect and streams on a steady container.
    let slow = populate(&d, "slow", 1, SLOW).remove(0);
    wait_for(30, "100 lines", || {
        (d.get(&format!("/containers/{slow}/logs?tail=100")).json()["lines"].as_array()?.len() == 100).then_some(())
    });
    let (tails, socks) = rt.block_on(async {
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (port, id) = (d.port, slow.clone());
                tokio::spawn(async move {
                    let mut s = ws(port, &id).await;
                    let t = Instant::now();
                    loop {
                        let Some(Ok(Message::Text(txt))) = s.next().await else { panic!("closed") };
                        let f: Value = serde_json::from_str(&txt).unwrap();
                        if f["event"] == "logs" {
                            assert_eq!(f["args"].as_array().unwrap().len(), 100);
                            return (t.elapsed().as_secs_f64() * 1000.0, s);
                        }
                    }
                })
            })
            .collect();
        let mut tails = Vec::new();
        let mut socks = Vec::new();
        for t in tasks {
            let (ms, s) = t.await.unwrap();
            tails.push(ms);
            socks.push(s);
        }
        (sorted(tails), socks)
    });
    let with_1000 = streams(&d, &slow);
    let slow_cid = d.get(&format!("/containers/{slow}")).json()["container_id"].as_str().unwrap().to_string();
    let docker_tails = rt.block_on(docker_tail_per_viewer(&slow_cid, 1000));
    // Keep the 1000 sockets drained in the background while counting streams.
    let drained: Vec<_> =
        socks.into_iter().map(|mut s| rt.spawn(async move { while let Some(Ok(_)) = s.next().await {} })).collect();
    std::thread::sleep(Duration::from_secs(2));
    let with_1000 = (with_1000.0.max(streams(&d, &slow).0), with_1000.1.max(streams(&d, &slow).1));
    for t in drained {
        t.abort();
    }
    let zero = wait_for(30, "streams with no viewer", || {
        let s = streams(&d, &slow);
        (s.1 == 0).then_some(s)
    });
    let counts = |n: usize| {
        rt.block_on(async {
            let mut socks = Vec::new();
            for _ in 0..n {
                socks.push(ws(d.port, &slow).await);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let s = streams(&d, &slow);
            drop(socks);
            s
        })
    };
    let one = counts(1);
    let hundred = counts(100);
    rows.extend([
        String::new(),
        format!(
            "Tail-on-connect, 1000 viewers connecting at once: upgrade to the last of 100 tail lines p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.\n",
            pct(&tails, 50.0),
            pct(&tails, 99.0),
            pct(&tails, 100.0)
        ),
        format!(
            "Baseline, the seed's way (a Docker `logs?tail=100` call per connecting viewer, 1000 at once): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.\n",
            pct(&docker_tails, 50.0),
            pct(&docker_tails, 99.0),
            pct(&docker_tails, 100.0)
        ),
        "| viewers on one container | Docker attach streams | Docker stats streams | seed's design (logs + stats per viewer) |".into(),
        "|---|---|---|---|".into(),
        format!("| 0 | {} | {} | 0 |", zero.0, zero.1),
        format!("| 1 | {} | {} | 2 |", one.0, one.1),
        format!("| 100 | {} | {} | 200 |", hundred.0, hundred.1),
        format!("| 1000 | {} | {} | 2000 |", with_1000.0, with_1000.1),
    ]);
    let text = rows.join("\n");
    println!("{text}");
    write_section("console", &text);
}
