//! Restart safety: the daemon comes back to what Docker really has.

mod common;

use common::*;
use serde_json::{json, Value};

const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.05; done";

fn ready(d: &Daemon, name: &str, command: &str) -> String {
    d.ready_container(name, command, json!({}))
}

fn last_number(d: &Daemon, id: &str) -> Option<u64> {
    let logs = d.get(&format!("/containers/{id}/logs?tail=1")).json();
    logs["lines"][0].as_str()?.strip_prefix("line ")?.parse().ok()
}

fn rec(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/containers/{id}")).json()
}

#[test]
fn running_servers_are_reattached_after_a_restart() {
    require_docker();
    let mut d = Daemon::start();
    let id = ready(
        &d,
        "keep",
        "i=0; while true; do i=$((i+1)); echo \"line $i\"; if read -t 0.05 l; then echo \"got $l\"; fi; done",
    );
    assert_eq!(d.call("POST", &format!("/containers/{id}/start"), None).status, 202);
    let before = wait_for(20, "lines", || last_number(&d, &id).filter(|n| *n > 20));
    for kill in [false, true] {
        if kill {
            d.kill9();
            d.spawn();
        } else {
            d.restart();
        }
        let v = wait_for(20, "running again", || Some(rec(&d, &id)).filter(|v| v["state"] == "running"));
        assert_eq!(v["install_state"], "ready");
        // The tail came back from Docker, and the console goes on.
        let tail = d.get(&format!("/containers/{id}/logs?tail=1000")).json()["lines"].as_array().unwrap().len();
        assert!(tail >= 20, "tail filled from Docker: {tail} lines");
        let n = wait_for(20, "new lines after the restart", || last_number(&d, &id).filter(|n| *n > before + 10));
        assert!(n > before);
        let m = d.get("/metrics").body;
        assert_eq!(metric(&m, &format!("lightd_docker_streams{{kind=\"attach\",container=\"{id}\"}}")), Some(1));
        assert_eq!(d.call("POST", &format!("/containers/{id}/command"), Some(json!({"command": "ping"}))).status, 202);
        wait_for(10, "the command's echo", || {
            let lines = d.get(&format!("/containers/{id}/logs?tail=50")).json()["lines"].clone();
            lines.as_array()?.iter().any(|l| l == "got ping").then_some(())
        });
        d.get(&format!("/containers/{id}/logs?tail=1000"));
    }
    assert_eq!(d.call("POST", &format!("/containers/{id}/kill"), None).status, 202);
    let v = wait_for(20, "offline", || Some(rec(&d, &id)).filter(|v| v["state"] == "offline"));
    assert_eq!(v["last_exit"]["code"], 137);
}

#[test]
fn exits_and_removals_while_down_are_recorded() {
    require_docker();
    let mut d = Daemon::start();
    let exits = ready(&d, "exits", "sleep 2; exit 5");
    let removed = ready(&d, "removed", COUNTER);
    assert_eq!(d.call("POST", &format!("/containers/{exits}/start"), None).status, 202);
    assert_eq!(d.call("POST", &format!("/containers/{removed}/start"), None).status, 202);
    assert_eq!(rec(&d, &exits)["state"], "running");
    d.kill9();
    docker(&["rm", "-f", &format!("lightd-{removed}")]);
    wait_for(20, "the server to exit on its own", || {
        (docker(&["inspect", "-f", "{{.State.Running}}", &format!("lightd-{exits}")]).trim() == "false").then_some(())
    });
    d.spawn();
    let v = wait_for(20, "exit recorded", || Some(rec(&d, &exits)).filter(|v| v["state"] == "offline"));
    assert_eq!(v["last_exit"]["code"], 5);
    let v = wait_for(20, "removal noticed", || Some(rec(&d, &removed)).filter(|v| v["install_state"] == "failed"));
    assert_eq!(v["state"], "offline");
    assert!(v["error"].as_str().unwrap().contains("vanished"), "{v}");
    assert_eq!(v["container_id"], Value::Null);
    let r = d.call("POST", &format!("/containers/{removed}/start"), None);
    assert_eq!(r.status, 409);
    // A reinstall brings it back.
    assert_eq!(d.call("POST", &format!("/containers/{removed}/reinstall"), None).status, 202);
    assert_eq!(d.wait_installed(&removed, 120)["install_state"], "ready");
}

#[test]
fn the_port_pool_is_made_to_match_the_records() {
    require_docker();
    let mut d = Daemon::start();
    let (p1, p2) = (free_port(), free_port());
    d.add_port("127.0.0.1", p1, "tcp");
    d.add_port("127.0.0.1", p2, "tcp");
    let (vol, _) = d.new_volume();
    let id = d.id("owner");
    let body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol, "startup_command": "sleep 100",
                      "ports": [{"ip": "127.0.0.1", "port": p1}]});
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    d.wait_installed(&id, 120);
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
    wait_for(20, "pool repaired", || (port(p1)["used_by"] == id.as_str()).then_some(()));
    assert_eq!(port(p1)["in_use"], true);
    assert_eq!(port(p2)["in_use"], false);
    assert_eq!(port(p2)["used_by"], Value::Null);
}
