//! Crash safety under a scripted mix of 500 API operations with `kill -9` at random moments:
//! state.json always parses, and after each restart every record agrees with Docker.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

/// xorshift64*: small, seeded, reproducible (`LIGHTD_SEED=<n>` replays a run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Waits until records, pool and Docker agree, or fails saying where they do not.
fn settle(d: &Daemon, what: &str, idle: bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let why = match (idle, busy(d)) {
            (true, Some(b)) => Err(format!("still busy: {b}")),
            _ => consistent(d),
        };
        match why {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

/// A container still installing, starting or stopping.
fn busy(d: &Daemon) -> Option<String> {
    let list = d.get("/containers").json()["containers"].clone();
    list.as_array()?
        .iter()
        .find(|c| c["install_state"] == "installing" || c["state"] == "stopping" || c["state"] == "starting")
        .map(|c| c.to_string())
}

/// Whether records, pool and Docker agree, and if not, where.
fn consistent(d: &Daemon) -> Result<(), String> {
    let state = d.state();
    let records = state["containers"].as_object().cloned().unwrap_or_default();
    let mut expected = BTreeSet::new();
    for (id, rec) in &records {
        let Some(cid) = rec["container_id"].as_str() else { continue };
        let out = std::process::Command::new("docker").args(["inspect", cid]).output().unwrap();
        let info: Value = serde_json::from_slice(&out.stdout).map_err(|_| format!("{id}: container {cid} missing"))?;
        let info = &info[0];
        if info.is_null() {
            return Err(format!("{id}: container {cid} missing"));
        }
        assert_eq!(info["Name"], format!("/lightd-{id}"), "record {id} points at the wrong container");
        let running = info["State"]["Running"] == true;
        let st = rec["state"].as_str().unwrap();
        if (st == "offline") == running && st != "stopping" {
            return Err(format!("{id}: record says {st}, Docker running={running}"));
        }
        expected.insert(format!("lightd-{id}"));
    }
    let actual: BTreeSet<String> = d.docker_names().into_iter().collect();
    if actual != expected {
        let extra: Vec<String> = actual
            .symmetric_difference(&expected)
            .map(|n| {
                format!("{n}: record {}", records.get(n.trim_start_matches("lightd-")).cloned().unwrap_or_default())
            })
            .collect();
        return Err(format!("Docker has {actual:?}, records point at {expected:?}; {extra:?}"));
    }
    for p in state["ports"].as_array().unwrap() {
        let owner = p["used_by"].as_str();
        let listed = owner.and_then(|o| records.get(o)).is_some_and(|r| {
            r["ports"].as_array().unwrap().iter().any(|rp| rp["port"] == p["port"] && rp["ip"] == p["ip"])
        });
        if owner.is_some() != listed || p["in_use"] != owner.is_some() {
            return Err(format!("pool entry {p} does not match the records"));
        }
    }
    Ok(())
}

#[test]
fn kill9_at_random_moments_during_500_operations() {
    require_docker();
    let seed = std::env::var("LIGHTD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("crash mix seed: {seed} (LIGHTD_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let mut d = Daemon::start();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let volumes: Vec<String> = (0..2).map(|_| d.new_volume().0).collect();
    let names: Vec<String> = (0..5).map(|i| d.id(&format!("c{i}"))).collect();
    let mut kills = 0;
    let mut next_kill = 20 + rng.below(80);
    for op in 0..500u64 {
        if op == next_kill {
            d.kill9();
            // The moment of truth: whatever was in flight, the file parses.
            let state = d.state();
            assert!(state["containers"].is_object() && state["ports"].is_array(), "seed {seed}");
            d.spawn();
            settle(&d, &format!("after kill {kills} (seed {seed})"), false);
            kills += 1;
            next_kill = op + 20 + rng.below(80);
        }
        let id = &names[rng.below(names.len() as u64) as usize];
        let port = ports[rng.below(ports.len() as u64) as usize];
        let r = match rng.below(12) {
            0 => d.call("POST", "/network/ports", Some(json!({"ip": "127.0.0.1", "port": port}))),
            1 => d.call("DELETE", &format!("/network/ports/127.0.0.1/{port}"), None),
            2 | 3 => {
                let vol = &volumes[rng.below(2) as usize];
                let mut body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol,
                                      "startup_command": "trap 'exit 0' TERM; while true; do echo tick; sleep 0.2; done"});
                if rng.below(2) == 0 {
                    body["ports"] = json!([{"ip": "127.0.0.1", "port": port}]);
                }
                if rng.below(3) == 0 {
                    body["install_script"] = json!("echo installing; sleep 0.3");
                }
                d.call("POST", "/containers", Some(body))
            }
            4 => d.call("DELETE", &format!("/containers/{id}"), None),
            5 | 6 => d.call("POST", &format!("/containers/{id}/start"), None),
            7 => d.call("POST", &format!("/containers/{id}/stop"), None),
            8 => d.call("POST", &format!("/containers/{id}/kill"), None),
            9 => d.call("POST", &format!("/containers/{id}/restart"), None),
            10 => d.call(
                "POST",
                &format!("/containers/{id}/rebind-network"),
                Some(json!({"ports": [{"ip": "127.0.0.1", "port": port}]})),
            ),
            _ => d.call("POST", &format!("/containers/{id}/reinstall"), None),
        };
        assert!(r.status < 500 || r.status == 503, "op {op}: {} {} (seed {seed})", r.status, r.body);
    }
    assert!(kills >= 4, "killed {kills} times");
    d.kill9();
    d.state();
    d.spawn();
    // Let installs and stops in flight finish, then everything must agree.
    settle(&d, &format!("at the end (seed {seed})"), true);
}
