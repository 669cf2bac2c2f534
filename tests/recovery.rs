//! Restart safety: the daemon comes back to what Docker really has.

mod common;

use common::*;
use serde_json::{json, Value};

/// Prints `line N` every 50 ms and echoes stdin as `got <text>`.
const ECHO_COUNTER: &str =
    "i=0; while true; do i=$((i+1)); echo \"line $i\"; if read -t 0.05 l; then echo \"got $l\"; fi; done";

fn number(line: &str) -> Option<u64> {
    line.strip_prefix("line ")?.parse().ok()
}

fn last_number(d: &Daemon, id: &str) -> Option<u64> {
    let logs = d.get(&format!("/containers/{id}/logs?tail=5")).json();
    logs["lines"].as_array()?.iter().rev().find_map(|l| number(l.as_str()?))
}

/// After a graceful restart and after `kill -9`, the running server is re-attached: its tail
/// is there as soon as the record says `running` (filled from Docker), the console runs on
/// across the restart with no line lost or doubled, a new viewer gets the tail and then live
/// lines (printed after it connected) exactly once with no gap at the seam, and stdin works.
/// Each round proves itself: its own `before`, its own stdin marker, its own live lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_servers_are_reattached_after_a_restart() {
    require_docker();
    let mut d = Daemon::start();
    let id = d.ready_container("keep", ECHO_COUNTER, json!({}));
    assert_eq!(d.act(&id, "start"), 202);
    wait_for(20, "lines", || last_number(&d, &id).filter(|n| *n > 20));
    for round in ["restart", "kill9"] {
        let before = last_number(&d, &id).unwrap();
        tokio::task::block_in_place(|| match round {
            "restart" => d.restart(),
            _ => {
                d.kill9();
                d.spawn();
            }
        });
        let v = d.wait_state(&id, "running", 20);
        assert_eq!(v["install_state"], "ready");
        // The tail is served only once it is filled: never empty once `running` shows.
        let ring: Vec<u64> = d.get(&format!("/containers/{id}/logs?tail=1000")).json()["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| number(l.as_str()?))
            .collect();
        assert!(ring.len() >= 20, "{round}: tail filled from Docker: {} lines", ring.len());
        // Across the restart, exactly once: the lines from before it, those printed while the
        // daemon was down (backfilled from Docker) and the live ones since, with no gap or
        // repeat at either seam.
        assert!(ring.contains(&before), "{round}: line {before} (last seen before) is in the console: {ring:?}");
        assert!(ring.windows(2).all(|w| w[1] == w[0] + 1), "{round}: a gap or repeat across the restart: {ring:?}");
        let mut ws = ws::open(&d, &id).await;
        assert_eq!(ws::next(&mut ws).await["event"], "status");
        let logs = ws::next_event(&mut ws, "logs").await;
        let tail: Vec<u64> = logs["args"].as_array().unwrap().iter().filter_map(|l| number(l.as_str()?)).collect();
        assert!(tail.windows(2).all(|w| w[1] == w[0] + 1), "{round}: the tail has no gap or repeat: {tail:?}");
        // Live output after the restart: 20 lines printed after this viewer connected (past
        // its tail), each exactly once, in order.
        let mut prev = *tail.last().unwrap();
        let until = prev + 20;
        while prev < until {
            let f = ws::next_event(&mut ws, "console output").await;
            let Some(n) = f["args"][0].as_str().and_then(number) else { continue };
            assert_eq!(n, prev + 1, "{round}: after line {prev} came line {n}");
            prev = n;
        }
        assert_eq!(d.streams(&id, "attach"), 1);
        // stdin reaches the re-attached server: a marker that cannot come from before, echoed
        // within 30 s while the numbered lines keep their order.
        let marker = format!("ping-{round}");
        let r = d.call("POST", &format!("/containers/{id}/command"), Some(json!({"command": marker})));
        assert_eq!(r.status, 202, "{}", r.body);
        let echoed = async {
            loop {
                let f = ws::next_event(&mut ws, "console output").await;
                let text = f["args"][0].as_str().unwrap_or_default();
                if text == format!("got {marker}") {
                    return;
                }
                if let Some(n) = number(text) {
                    assert_eq!(n, prev + 1, "{round}: after line {prev} came line {n}");
                    prev = n;
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), echoed)
            .await
            .unwrap_or_else(|_| panic!("{round}: the command sent after the re-attach was not echoed within 30 s"));
    }
    assert_eq!(d.act(&id, "kill"), 202);
    assert_eq!(d.wait_state(&id, "offline", 20)["last_exit"]["code"], 137);
}

/// What happened while the daemon was down is recorded when it comes back: an exit (and the
/// crash policy leaves a server alone that was stopped on purpose), a removal.
#[test]
fn exits_and_removals_while_down_are_recorded() {
    require_docker();
    let mut d = Daemon::start();
    // It exits only when told (a file in its volume), so its exit falls while the daemon is
    // down, however slow the machine.
    let exits = d.ready_container(
        "exits",
        "echo up; while [ ! -e /home/container/go ]; do sleep 0.1; done; exit 5",
        json!({"crash_restart": false, "start_pattern": "up"}),
    );
    let removed = d.ready_container("removed", "while true; do sleep 1; done", json!({}));
    let volume = d.record(&exits)["volume_id"].as_str().unwrap().to_string();
    let home = std::path::PathBuf::from(d.get(&format!("/volumes/{volume}")).json()["path"].as_str().unwrap());
    assert_eq!(d.act(&exits, "start"), 202);
    assert_eq!(d.act(&removed, "start"), 202);
    d.wait_state(&exits, "running", 20);
    d.kill9();
    assert_eq!(d.state()["containers"][&exits]["state"], "running", "on record as running when the daemon died");
    std::fs::write(home.join("go"), b"").unwrap();
    docker(&["rm", "-f", &format!("lightd-{removed}")]);
    wait_for(20, "the server to exit on its own", || {
        (docker(&["inspect", "-f", "{{.State.Running}}", &format!("lightd-{exits}")]).trim() == "false").then_some(())
    });
    d.spawn();
    let v = d.wait_state(&exits, "offline", 20);
    assert_eq!(v["last_exit"]["code"], 5);
    let v = wait_for(20, "removal noticed", || Some(d.record(&removed)).filter(|v| v["install_state"] == "failed"));
    assert_eq!(v["state"], "offline");
    assert!(v["error"].as_str().unwrap().contains("vanished"), "{v}");
    assert_eq!(v["container_id"], Value::Null);
    let r = d.call("POST", &format!("/containers/{removed}/start"), None);
    assert_eq!(r.status, 409);
    assert!(r.error().contains("reinstall"), "{}", r.body);
    // A reinstall brings it back.
    assert_eq!(d.call("POST", &format!("/containers/{removed}/reinstall"), None).status, 202);
    assert_eq!(d.wait_installed(&removed, 120)["install_state"], "ready");
}

/// A container removed by hand while a job runs (here: under its own install script) is
/// noticed when the job ends: the record says it vanished, and a start answers 409 saying
/// how to recover (it used to record `ready` with the removed container, and the next start
/// got Docker's 404 as a 500).
#[test]
fn a_removal_during_an_install_is_recorded_when_it_ends() {
    require_docker();
    let d = Daemon::start();
    let id = d.create_container("rm-install", "sleep 100", json!({"install_script": "sleep 2"}));
    let name = format!("lightd-{id}");
    wait_for(20, "the server's container to be made", || inspect(&name));
    assert_eq!(d.record(&id)["install_state"], "installing");
    docker(&["rm", "-f", &name]);
    let v = d.wait_installed(&id, 60);
    assert_eq!(v["install_state"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("vanished"), "{v}");
    assert_eq!(v["container_id"], Value::Null);
    let r = d.call("POST", &format!("/containers/{id}/start"), None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().contains("reinstall"), "{}", r.body);
    assert_eq!(d.call("POST", &format!("/containers/{id}/reinstall"), None).status, 202);
    assert_eq!(d.wait_installed(&id, 60)["install_state"], "ready");
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 20);
}

#[test]
fn the_port_pool_is_made_to_match_the_records() {
    require_docker();
    let mut d = Daemon::start();
    let [p1, p2] = ports(2)[..] else { unreachable!() };
    d.add_port("127.0.0.1", p1, "tcp");
    d.add_port("127.0.0.1", p2, "tcp");
    let id = d.ready_container("owner", "sleep 100", json!({"ports": [{"ip": "127.0.0.1", "port": p1}]}));
    d.stop();
    // Damage the pool by hand: p1 looks free, p2 looks taken by nobody real.
    let mut state = d.state();
    for p in state["ports"].as_array_mut().unwrap() {
        if p["port"] == p1 {
            p["in_use"] = json!(false);
            p["used_by"] = Value::Null;
        } else {
            p["in_use"] = json!(true);
            p["used_by"] = json!("ghost");
        }
    }
    std::fs::write(d.dir.0.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
    d.spawn();
    let port = |p: u16| {
        let all = d.get("/network/ports").json()["ports"].clone();
        all.as_array().unwrap().iter().find(|e| e["port"] == p).cloned().unwrap()
    };
    wait_for(20, "pool repaired", || {
        (port(p1)["used_by"] == id.as_str() && port(p2)["used_by"].is_null()).then_some(())
    });
    assert_eq!(port(p1)["in_use"], true);
    assert_eq!(port(p2)["in_use"], false);
}

/// A container this daemon made whose record is gone (a create cut short by `kill -9`) is
/// removed when the daemon comes back; another daemon's containers are never touched.
#[test]
fn orphans_are_removed_and_neighbours_left_alone() {
    require_docker();
    let mut d = Daemon::start();
    let neighbour = Daemon::start();
    let theirs = neighbour.ready_container("theirs", "sleep 1000", json!({}));
    let id = d.ready_container("orphan", "sleep 1000", json!({}));
    d.stop();
    let mut state = d.state();
    state["containers"].as_object_mut().unwrap().remove(&id);
    std::fs::write(d.dir.0.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
    d.spawn();
    wait_for(20, "the orphan removed", || inspect(&format!("lightd-{id}")).is_none().then_some(()));
    assert!(inspect(&format!("lightd-{theirs}")).is_some(), "the neighbour's container stays");
    assert!(d.containers().is_empty(), "{:?}", d.containers());
}
