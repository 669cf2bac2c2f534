//! A real game server's console under load: Debian's freeciv-server with 100 viewers while
//! clients flood it with `list` commands (through `POST .../command`, as a panel would send
//! them), beside a busybox server flooding its console with 100 viewers, in the same run:
//! lines/s delivered to all viewers, delivery p99 inside the daemon, lightd CPU.

#[path = "../tests/common/mod.rs"]
mod common;
mod fanout;
mod support;
mod viewer;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fanout::*;
use serde_json::json;

const SECS: u64 = 10;
const FLOOD: &str = "i=0; while true; do i=$((i+1)); echo \"$i $EPOCHREALTIME\"; done";
const SENDERS: usize = 4;

/// `SENDERS` clients sending `list` back to back until `until`; returns how many were taken.
async fn flood_commands(port: u16, id: String, until: Instant) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (id, sent) = (id.clone(), Arc::clone(&sent));
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                while Instant::now() < until {
                    let req = hyper::Request::post(format!("/containers/{id}/command"))
                        .header("host", "bench")
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(hyper::body::Bytes::from_static(br#"{"command":"list"}"#)))
                        .unwrap();
                    match send.send_request(req).await {
                        Ok(r) if r.status().is_success() => {
                            sent.fetch_add(1, Relaxed);
                            let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    sent.load(Relaxed)
}

fn main() {
    let out = docker_cli().args(["image", "inspect", "lightd-test/freeciv"]).output().unwrap();
    assert!(out.status.success(), "the image lightd-test/freeciv is missing: run `bash scripts/setup.sh` first");
    let d = Daemon::start();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let port = ports(1)[0];
    d.add_port("127.0.0.1", port, "tcp");
    let (vol, _) = d.new_volume();
    let id = d.id("freeciv");
    let body = json!({
        "internal_id": id, "image": "lightd-test/freeciv", "volume_id": vol,
        "startup_command": "exec freeciv-server --port $SERVER_PORT --saves /home/container/saves",
        "start_pattern": "For introductory help",
        "stop_command": "quit",
        "ports": [{"ip": "127.0.0.1", "port": port}],
        "install_script": "mkdir -p /home/container/saves",
    });
    let r = d.call("POST", "/containers", Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(d.wait_installed(&id, 300)["install_state"], "ready");
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 120);

    let mut rows = Vec::new();
    let commands = rt.block_on(async {
        let viewers = open_viewers(d.port, std::slice::from_ref(&id), 100).await;
        let until = Instant::now() + Duration::from_secs(SECS + 1);
        let flood = tokio::spawn(flood_commands(d.port, id.clone(), until));
        let (row, open) = measure(&d, "freeciv, 4 clients sending `list`", viewers, SECS).await;
        let commands = flood.await.unwrap();
        drop(open);
        rows.push(row);
        commands
    });
    assert_eq!(d.act(&id, "stop"), 202);

    let busy = support::populate(&d, "flood", 1, FLOOD).remove(0);
    rt.block_on(async {
        assert_eq!(d.call("POST", &format!("/containers/{busy}/suspend"), None).status, 202);
        let viewers = open_viewers(d.port, std::slice::from_ref(&busy), 100).await;
        assert_eq!(d.call("POST", &format!("/containers/{busy}/resume"), None).status, 202);
        let (row, open) = measure(&d, "busybox flood (baseline)", viewers, SECS).await;
        drop(open);
        rows.push(row);
    });
    assert_eq!(d.act(&busy, "kill"), 202);

    let mut text = vec![format!(
        "A real game server's console: freeciv-server 3.0 with 100 WebSocket viewers while {SENDERS} clients send `list` back to back ({:.0} commands/s taken), beside a busybox server printing as fast as it can to 100 viewers; {SECS} s each. freeciv's lines carry no timestamps, so only the daemon's own delivery time is given for them.\n",
        commands as f64 / (SECS + 1) as f64
    )];
    text.extend(Row::table(&rows));
    if let [game, base] = rows.as_slice() {
        text.push(String::new());
        text.push(format!(
            "Ratio of lines/s delivered, freeciv to the busybox flood: {:.2}; lightd CPU per million lines delivered: {:.2} s (freeciv) vs {:.2} s (busybox).",
            game.lines_per_s / base.lines_per_s,
            game.cpu_per_million,
            base.cpu_per_million
        ));
    }
    let text = text.join("\n");
    println!("{text}");
    support::write_section("game", &text);
}
