//! Moving a running server between two nodes on this machine, beside the peers' way, in the
//! same run on the same volume:
//! - downtime: our live transfer (the server stopped for the last round only) beside
//!   stop-then-copy (the server stopped for the whole copy, as Wings and Calagopus do);
//! - throughput: our transfer's first round beside `tar | zstd -T0 | <TCP>` over loopback into
//!   `zstd -d | tar -x` (bash's `/dev/tcp` stands for `nc`).
//!
//! The volume holds `LIGHTD_BENCH_TRANSFER_MIB` MiB (default 2048), half random bytes, half
//! world-like text, while the server rewrites 1 MiB of it every 0.1 s (10 MB/s).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The server: rewrites one of 64 MiB-sized slots of `churn` ten times a second.
const CHURN: &str = "trap 'exit 0' TERM; echo ready; i=0; while true; do \
                     dd if=/dev/urandom of=/home/container/churn bs=1048576 count=1 seek=$((i % 64)) \
                     conv=notrunc 2>/dev/null; i=$((i + 1)); usleep 100000; done";

fn node(name: &str) -> Daemon {
    Daemon::start_with(|c| {
        c["containers"]["name_prefix"] = json!(format!("{name}-"));
        c["containers"]["default_network"] = json!(format!("lightd-{name}"));
    })
}

fn volume_path(d: &Daemon, vol: &str) -> PathBuf {
    PathBuf::from(d.get(&format!("/volumes/{vol}")).json()["path"].as_str().unwrap())
}

/// `mib` MiB: half random, half compressible.
fn fill(path: &Path, mib: usize) {
    let mut rng = Rng(seed("bench-transfer"));
    let mut random = vec![0u8; (mib / 2) << 20];
    for c in random.chunks_mut(8) {
        let n = rng.next().to_le_bytes();
        c.copy_from_slice(&n[..c.len()]);
    }
    std::fs::write(path.join("random.bin"), &random).unwrap();
    let line = b"chunk 0,0 biome plains blocks stone stone dirt grass air air air\n";
    let world: Vec<u8> = line.iter().copied().cycle().take((mib / 2) << 20).collect();
    std::fs::create_dir_all(path.join("world")).unwrap();
    std::fs::write(path.join("world/region.mca"), &world).unwrap();
}

/// A running churning server holding `mib` MiB; its id and volume path.
fn server(d: &Daemon, name: &str, mib: usize) -> (String, PathBuf) {
    let id = d.ready_container(name, CHURN, json!({"start_pattern": "ready", "limits": {"memory": 1u64 << 30}}));
    let path = volume_path(d, d.record(&id)["volume_id"].as_str().unwrap());
    fill(&path, mib);
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 60);
    (id, path)
}

/// Our transfer of `id`: its final status and how long it took.
fn ours(source: &Daemon, target: &Daemon, id: &str) -> (Value, Duration) {
    let r = target.call("POST", "/auth/tokens", Some(json!({"scope": "transfer", "internal_id": id, "ttl": "1h"})));
    let token = r.json()["token"].as_str().unwrap().to_string();
    let t = Instant::now();
    let body = json!({"target": format!("http://127.0.0.1:{}", target.port), "token": token});
    let r = source.call("POST", &format!("/containers/{id}/transfer"), Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    let end = wait_for(3600, "the transfer", || {
        let s = source.get(&format!("/containers/{id}/transfer")).json();
        ["done", "failed", "cancelled"].contains(&s["state"].as_str().unwrap_or("")).then_some(s)
    });
    assert_eq!(end["state"], "done", "{end}");
    (end, t.elapsed())
}

/// `tar | zstd -T0 | TCP` of `from` into `zstd -d | tar -x` in `to`, over loopback; its time.
fn pipeline(from: &Path, to: &Path) -> Duration {
    std::fs::create_dir_all(to).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let to = to.to_path_buf();
    let receiver = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut child = Command::new("sh")
            .args(["-c", &format!("zstd -d -q | tar -C '{}' -xf -", to.display())])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = sock.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            stdin.write_all(&buf[..n]).unwrap();
        }
        drop(stdin);
        assert!(child.wait().unwrap().success());
    });
    let t = Instant::now();
    let script = format!("tar -C '{}' -cf - . | zstd -T0 -1 -q > /dev/tcp/127.0.0.1/{port}", from.display());
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    receiver.join().unwrap();
    t.elapsed()
}

fn main() {
    let mib: usize = std::env::var("LIGHTD_BENCH_TRANSFER_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    let bytes = (mib as u64) << 20;
    let (source, target) = (node("bench-a"), node("bench-b"));
    let (id, path) = server(&source, "bench", mib);
    let (end, took) = ours(&source, &target, &id);
    let downtime = end["downtime_ms"].as_u64().unwrap_or(0);
    // Stop-then-copy of the same tree (the source kept its volume): the whole copy is downtime.
    let copy_to = source.dir.0.join("pipeline-copy");
    let piped = pipeline(&path, &copy_to);
    let mibs = |d: Duration| bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!("transfer of {mib} MiB (half random), server rewriting 10 MB/s:");
    println!("| | lightd live transfer | stop-then-copy (tar, zstd -T0, TCP) |");
    println!("|---|---|---|");
    println!("| downtime | {:.2} s | {:.2} s |", downtime as f64 / 1e3, piped.as_secs_f64());
    println!(
        "| whole move | {:.2} s ({:.0} MiB/s) | {:.2} s ({:.0} MiB/s) |",
        took.as_secs_f64(),
        mibs(took),
        piped.as_secs_f64(),
        mibs(piped)
    );
    println!(
        "| bytes sent | {} MiB in {} rounds | - |",
        end["bytes_sent"].as_u64().unwrap_or(0) >> 20,
        end["round"].as_u64().unwrap_or(0)
    );
    println!("throughput ratio (ours / pipeline): {:.2}", mibs(took) / mibs(piped));
}
