//! Moving a running server between two nodes: two daemons on this machine sharing one engine,
//! each with its own state, volumes, network and container name prefix.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// The server: appends the host's uptime to `ts` in its volume ten times a second, and stops
/// at once on SIGTERM.
const WRITER: &str = "trap 'exit 0' TERM; echo ready; \
                      while true; do cut -d' ' -f1 /proc/uptime >> /home/container/ts; usleep 100000; done";

/// Random bytes (incompressible) and world-like text (compressible), this many MiB each.
const HALF_MIB: usize = 100;

/// A node: its prefix and network set apart; `env` for the test hooks of debug builds.
fn node(name: &str, env: &[(&str, &str)]) -> Daemon {
    let (prefix, net) = (format!("{name}-"), format!("lightd-test-{name}"));
    let mut d = Daemon::prepare(|c| {
        c["containers"]["name_prefix"] = json!(prefix);
        c["containers"]["default_network"] = json!(net);
    });
    d.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    d.spawn();
    d
}

/// The host path of volume `vol` of `d`.
fn volume_path(d: &Daemon, vol: &str) -> PathBuf {
    let r = d.get(&format!("/volumes/{vol}"));
    assert_eq!(r.status, 200, "{}", r.body);
    PathBuf::from(r.json()["path"].as_str().unwrap())
}

/// A running writer server with `mib` MiB of data in its volume; returns its id and volume path.
fn running_server(d: &Daemon, name: &str, mib: usize) -> (String, PathBuf) {
    let id = d.ready_container(name, WRITER, json!({"start_pattern": "ready"}));
    let vol = d.record(&id)["volume_id"].as_str().unwrap().to_string();
    let path = volume_path(d, &vol);
    fill(&path, mib / 2);
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 60);
    (id, path)
}

/// `mib` MiB of random bytes and as much of repetitive text, a small tree and a symlink.
fn fill(path: &Path, mib: usize) {
    let mut rng = Rng(seed("transfer"));
    let mut random = vec![0u8; mib << 20];
    for c in random.chunks_mut(8) {
        let n = rng.next().to_le_bytes();
        c.copy_from_slice(&n[..c.len()]);
    }
    std::fs::write(path.join("random.bin"), &random).unwrap();
    let line = b"chunk 0,0 biome plains blocks stone stone dirt grass air air air\n";
    let world: Vec<u8> = line.iter().copied().cycle().take(mib << 20).collect();
    std::fs::create_dir_all(path.join("world/region")).unwrap();
    std::fs::write(path.join("world/region/r.0.0.mca"), &world).unwrap();
    std::fs::write(path.join("server.properties"), b"motd=moved\n").unwrap();
    std::os::unix::fs::symlink("world/region", path.join("regions")).unwrap();
}

/// A transfer token minted at `target` for server `id`.
fn transfer_token(target: &Daemon, id: &str) -> String {
    let r = target.call("POST", "/auth/tokens", Some(json!({"scope": "transfer", "internal_id": id, "ttl": "1h"})));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["token"].as_str().unwrap().to_string()
}

/// Asks `source` to move `id` to `target`; returns the `202`'s status.
fn begin(source: &Daemon, target: &Daemon, id: &str, token: &str) -> Value {
    let body = json!({"target": format!("http://127.0.0.1:{}", target.port), "token": token});
    let r = source.call("POST", &format!("/containers/{id}/transfer"), Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    r.json()
}

fn transfer_status(source: &Daemon, id: &str) -> Value {
    let r = source.get(&format!("/containers/{id}/transfer"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Waits until the transfer of `id` is over; returns its last status.
fn wait_over(source: &Daemon, id: &str) -> Value {
    wait_for(300, "the transfer to end", || {
        Some(transfer_status(source, id))
            .filter(|s| ["done", "failed", "cancelled"].contains(&s["state"].as_str().unwrap()))
    })
}

/// The uptime stamps the server wrote, in order.
fn stamps(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path.join("ts")).unwrap().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn longest_gap(stamps: &[f64]) -> f64 {
    stamps.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

fn same_file(a: &Path, b: &Path, rel: &str) {
    let (x, y) = (std::fs::read(a.join(rel)).unwrap(), std::fs::read(b.join(rel)).unwrap());
    assert!(x == y, "{rel} differs: {} vs {} bytes", x.len(), y.len());
}

/// The target's volume of server `id`.
fn target_volume(target: &Daemon, id: &str) -> PathBuf {
    let vol = target.record(id)["volume_id"].as_str().unwrap().to_string();
    volume_path(target, &vol)
}

/// Checks a finished move: the target runs the server on the same data, the source has no
/// container or record left, the writes went on with a short gap.
fn assert_moved(source: &Daemon, target: &Daemon, id: &str, src_path: &Path) -> PathBuf {
    target.wait_state(id, "running", 60);
    let dst_path = target_volume(target, id);
    for rel in ["random.bin", "world/region/r.0.0.mca", "server.properties"] {
        same_file(src_path, &dst_path, rel);
    }
    assert_eq!(std::fs::read_link(dst_path.join("regions")).unwrap(), Path::new("world/region"));
    assert_eq!(source.get(&format!("/containers/{id}")).status, 404, "the record left the source");
    assert!(source.docker_names().is_empty(), "no container left at the source: {:?}", source.docker_names());
    // The stamps the source wrote came along, then the target's follow.
    let before = stamps(src_path).len();
    wait_for(30, "the moved server to keep writing", || (stamps(&dst_path).len() > before + 10).then_some(()));
    let all = stamps(&dst_path);
    assert!(all.len() > before, "{} stamps at the target, {before} at the source", all.len());
    let gap = longest_gap(&all);
    assert!(gap < 5.0, "the longest gap in the timestamps was {gap:.2} s");
    dst_path
}

#[test]
fn a_running_server_moves_with_its_data_and_a_short_gap() {
    require_docker();
    let source = node("lta", &[]);
    let target = node("ltb", &[]);
    let (id, src_path) = running_server(&source, "mv", HALF_MIB * 2);
    // Positive control: it writes its stamps at the source.
    wait_for(30, "stamps at the source", || (stamps(&src_path).len() > 5).then_some(()));
    let token = transfer_token(&target, &id);
    let started = begin(&source, &target, &id, &token);
    assert_eq!(started["state"], "copying");
    let end = wait_over(&source, &id);
    assert_eq!(end["state"], "done", "{end}");
    let data = (HALF_MIB as u64 * 2) << 20;
    assert!(end["bytes_total"].as_u64().unwrap() >= data, "{end}");
    assert!(end["files"].as_u64().unwrap() >= 3, "{end}");
    assert!(end["downtime_ms"].as_u64().is_some(), "{end}");
    // Compressed: the random half and little of the rest.
    assert!(end["bytes_sent"].as_u64().unwrap() < data * 3 / 4, "{end}");
    assert_moved(&source, &target, &id, &src_path);
}
