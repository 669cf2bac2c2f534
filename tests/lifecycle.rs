//! The supervisor's promises, one test per way the old lifecycle lost control of a server:
//! overlapping actions, failed reinstalls, graceful stops before reinstall/rebind, cancelling
//! a hung install, helper names that collided with servers, and answers while the engine is
//! unreachable.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Saves on SIGTERM for `secs` seconds, then exits 0; says "ready" once the trap is set.
fn slow_saver(secs: u32) -> String {
    format!("trap 'echo saving; sleep {secs}; echo saved; exit 0' TERM; echo ready; while true; do sleep 0.1; done")
}

fn started_at(id: &str) -> String {
    docker(&["inspect", "-f", "{{.State.StartedAt}}", &format!("lightd-{id}")]).trim().to_string()
}

fn running(d: &Daemon, name: &str, command: &str, extra: serde_json::Value) -> String {
    let mut extra = extra;
    extra["start_pattern"] = json!("ready");
    let id = d.ready_container(name, command, extra);
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 30);
    id
}

/// During a 12 s graceful stop, actions neither interleave nor lie: restart adds a start, a
/// second stop drops it again, what cannot run within 2 s is refused naming the stop, and
/// the server stops exactly once.
#[test]
fn actions_during_a_graceful_stop_follow_the_table() {
    require_docker();
    let d = Daemon::start_with(|c| c["containers"]["cleanup_timeout"] = json!(30));
    let [p] = ports(1)[..] else { unreachable!() };
    d.add_port("127.0.0.1", p, "tcp");
    let id = running(&d, "busy", &slow_saver(12), json!({}));
    let first_run = started_at(&id);
    assert_eq!(d.act(&id, "stop"), 202);
    assert_eq!(d.record(&id)["state"], "stopping");
    assert_eq!(d.act(&id, "restart"), 202, "restart during a stop adds a start");
    assert_eq!(d.act(&id, "restart"), 202);
    assert_eq!(d.act(&id, "stop"), 202, "a second stop is a no-op that drops the pending start");
    let t = Instant::now();
    let r = d.call("POST", &format!("/containers/{id}/start"), None);
    assert_eq!((r.status, r.error().as_str()), (409, "Cannot start while the server is stopping"));
    assert!(t.elapsed() >= Duration::from_millis(1900), "it waited its 2 s first: {:?}", t.elapsed());
    let r = d.call(
        "POST",
        &format!("/containers/{id}/rebind-network"),
        Some(json!({"ports": [{"ip": "127.0.0.1", "port": p}]})),
    );
    assert_eq!((r.status, r.error().as_str()), (409, "Cannot rebind network while the server is stopping"));
    let r = d.call("POST", &format!("/containers/{id}/reinstall"), None);
    assert_eq!((r.status, r.error().as_str()), (409, "Cannot reinstall while the server is stopping"));
    let r = d.call("POST", &format!("/containers/{id}/command"), Some(json!({"command": "x"})));
    assert_eq!((r.status, r.error().as_str()), (409, "Cannot send a command while the server is stopping"));
    let v = d.wait_state(&id, "offline", 30);
    assert_eq!(v["last_exit"]["code"], 0, "it saved and exited on its own terms: {v}");
    assert!(v["ports"].as_array().unwrap().is_empty(), "the refused rebind changed nothing");
    // It stays down: the dropped restart never ran. What follows a stop runs in the step
    // that records its exit, and the supervisor takes one message at a time: a stop asked
    // now is decided after that step, and finds the server down (not `starting`).
    let r = d.call("POST", &format!("/containers/{id}/stop"), None);
    assert_eq!((r.status, r.error().as_str()), (409, "Container is not running"), "the dropped restart ran");
    assert_eq!(d.record(&id)["state"], "offline");
    assert_eq!(started_at(&id), first_run);
    let logs = d.get(&format!("/containers/{id}/logs?tail=100")).json()["lines"].to_string();
    assert!(!logs.contains("already running"), "{logs}");
}

#[test]
fn kill_escalates_a_stop_and_restart_waits_for_it() {
    require_docker();
    let d = Daemon::start_with(|c| c["containers"]["cleanup_timeout"] = json!(30));
    let id = running(&d, "escalate", &slow_saver(20), json!({}));
    assert_eq!(d.act(&id, "stop"), 202);
    d.wait_line(&id, "saving");
    assert_eq!(d.act(&id, "kill"), 202, "kill during stopping escalates at once");
    // Killed mid-save: SIGKILL's exit code, and the save never finished (a stop that ran its
    // course would end 20 s later with "saved" and exit code 0).
    let v = d.wait_state(&id, "offline", 60);
    assert_eq!(v["last_exit"]["code"], 137, "{v}");
    let lines = d.get(&format!("/containers/{id}/logs?tail=100")).json()["lines"].clone();
    assert!(!lines.as_array().unwrap().iter().any(|l| l == "saved"), "the save ran to its end: {lines}");

    // A restart of a running server: the old run ends gracefully, exactly one new run starts.
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 20);
    let before = started_at(&id);
    let quick = running(&d, "quick", &slow_saver(3), json!({}));
    let quick_before = started_at(&quick);
    assert_eq!(d.act(&quick, "restart"), 202);
    assert_eq!(d.record(&quick)["state"], "stopping");
    let v = wait_for(30, "the restarted run", || {
        let v = d.record(&quick);
        (v["state"] == "running" && started_at(&quick) != quick_before).then_some(v)
    });
    assert_eq!(v["last_exit"]["code"], 0, "the restart let it save: {v}");
    assert_eq!(d.streams(&quick, "attach"), 1);
    assert_eq!(started_at(&id), before, "the other server was not touched");
}

/// A reinstall whose image cannot be pulled leaves the running server running and
/// controllable, with the old image on record and the reason in `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reinstall_leaves_the_server_controllable() {
    require_docker();
    let d = Daemon::start();
    let id = running(&d, "keep", &slow_saver(0), json!({}));
    let cid = d.record(&id)["container_id"].clone();
    let mut ws = ws::open(&d, &id).await;
    let r = d.call("POST", &format!("/containers/{id}/reinstall"), Some(json!({"image": "lightd-test/nowhere:1"})));
    assert_eq!(r.status, 202, "{}", r.body);
    let note = ws::next_note(&mut ws, "Reinstall failed").await;
    assert!(note.contains("lightd-test/nowhere:1"), "{note}");
    let v = d.wait_installed(&id, 60);
    assert_eq!(v["install_state"], "ready");
    assert_eq!(v["image"], IMAGE, "the old image is back on record");
    assert_eq!(v["container_id"], cid);
    assert_eq!(v["state"], "running");
    assert!(v["error"].as_str().unwrap().contains("Reinstall failed"), "{v}");
    assert_eq!(docker(&["inspect", "-f", "{{.State.Status}}", &format!("lightd-{id}")]).trim(), "running");
    assert_eq!(d.act(&id, "stop"), 202, "still controllable");
    assert_eq!(d.wait_state(&id, "offline", 20)["last_exit"]["code"], 0);
}

/// Reinstall and rebind of a running server stop it gracefully (no SIGKILL, no "crashed"),
/// say so to viewers, and bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinstall_and_rebind_stop_gracefully_and_come_back() {
    require_docker();
    let d = Daemon::start();
    let [old, new] = ports(2)[..] else { unreachable!() };
    d.add_port("127.0.0.1", old, "tcp");
    d.add_port("127.0.0.1", new, "tcp");
    let id = running(&d, "move", &slow_saver(1), json!({"ports": [{"ip": "127.0.0.1", "port": old}]}));
    let mut ws = ws::open(&d, &id).await;
    let r = d.call(
        "POST",
        &format!("/containers/{id}/rebind-network"),
        Some(json!({"ports": [{"ip": "127.0.0.1", "port": new}]})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(ws::next_note(&mut ws, "Stopping").await, "Stopping the server for rebind-network");
    assert_eq!(ws::next_note(&mut ws, "Server").await, "Server stopped for rebind-network (exit code 0)");
    assert_eq!(ws::next_note(&mut ws, "rebound").await, "Network rebound");
    let v = d.wait_state(&id, "running", 30);
    assert_eq!(v["last_exit"]["code"], 0);
    assert_eq!(v["ports"][0]["port"], new);
    let bindings = docker(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", &format!("lightd-{id}")]);
    assert!(bindings.contains(&format!("\"{new}/tcp\"")), "{bindings}");
    let pool = d.get("/network/ports").json()["ports"].clone();
    let entry = |p: u16| pool.as_array().unwrap().iter().find(|e| e["port"] == p).unwrap().clone();
    assert_eq!((entry(old)["in_use"].clone(), entry(new)["used_by"].clone()), (json!(false), json!(id)));

    assert_eq!(d.call("POST", &format!("/containers/{id}/reinstall"), None).status, 202);
    assert_eq!(ws::next_note(&mut ws, "Server").await, "Server stopped for reinstall (exit code 0)");
    let v = d.wait_installed(&id, 60);
    assert_eq!(v["install_state"], "ready", "{v}");
    let v = d.wait_state(&id, "running", 30);
    assert_eq!(v["last_exit"]["code"], 0);
    assert_eq!(d.streams(&id, "attach"), 1);
    assert_eq!(d.containers().len(), 1, "one container for the server, nothing left over: {:?}", d.containers());
}

/// `DELETE` during a hung install cancels it at once: the install container goes, the ports
/// are free, nothing is left.
#[test]
fn delete_cancels_a_hung_install() {
    require_docker();
    let d = Daemon::start();
    let [p] = ports(1)[..] else { unreachable!() };
    d.add_port("127.0.0.1", p, "tcp");
    let id = d.create_container(
        "hung",
        "true",
        json!({"install_script": "echo installing; sleep 3600", "ports": [{"ip": "127.0.0.1", "port": p}]}),
    );
    wait_for(60, "the install script running", || {
        let events = d.record(&id)["install_events"].clone();
        events.as_array()?.iter().any(|e| e == "RunningInstallScript").then_some(())
    });
    let r = d.call("POST", &format!("/containers/{id}/start"), None);
    assert_eq!((r.status, r.error().as_str()), (409, "Cannot start while container is installing"));
    // Answered once the install is cancelled (waiting for the hour-long script instead would
    // outlast the client's 90 s read): the record, the install container and the port go.
    let r = d.call("DELETE", &format!("/containers/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.get(&format!("/containers/{id}")).status, 404);
    wait_for(20, "every container gone", || d.containers().is_empty().then_some(()));
    let pool = d.get("/network/ports").json()["ports"][0].clone();
    assert_eq!((pool["in_use"].clone(), pool["used_by"].clone()), (json!(false), json!(null)));
}

/// Install helpers are found by labels, never by a name: a server named `X-install` survives
/// the install of `X`, and `X-rebind` its rebind.
#[test]
fn helper_containers_never_collide_with_servers() {
    require_docker();
    let d = Daemon::start();
    let [p] = ports(1)[..] else { unreachable!() };
    d.add_port("127.0.0.1", p, "tcp");
    let other = d.ready_container("x-install", "sleep 1000", json!({}));
    let other2 = d.ready_container("x-rebind", "sleep 1000", json!({}));
    let x = d.ready_container("x", "sleep 1000", json!({"install_script": "echo hi"}));
    assert_eq!(x, d.id("x"));
    assert_eq!(
        d.call(
            "POST",
            &format!("/containers/{x}/rebind-network"),
            Some(json!({"ports": [{"ip": "127.0.0.1", "port": p}]}))
        )
        .status,
        202
    );
    wait_for(30, "the rebind", || (d.record(&x)["ports"][0]["port"] == p).then_some(()));
    assert_eq!(d.call("POST", &format!("/containers/{x}/reinstall"), None).status, 202);
    d.wait_installed(&x, 60);
    for (sibling, rec) in [(&other, d.record(&other)), (&other2, d.record(&other2))] {
        let cid = rec["container_id"].as_str().unwrap().to_string();
        let info = inspect(&format!("lightd-{sibling}")).unwrap_or_else(|| panic!("{sibling} was removed"));
        assert_eq!(info["Id"], cid.as_str());
    }
}

/// Routes that need the engine answer 503 before anything happens; a delete of a record that
/// never had a container needs no engine.
#[test]
fn without_the_engine_nothing_is_accepted_that_would_fail() {
    require_docker();
    let mut d = Daemon::start();
    let [p] = ports(1)[..] else { unreachable!() };
    d.add_port("127.0.0.1", p, "tcp");
    let made = d.ready_container("made", "sleep 1000", json!({}));
    let never = d.create_container("never", "true", json!({"image": "lightd-test/nowhere:1"}));
    assert_eq!(d.wait_installed(&never, 60)["container_id"], json!(null));
    let (vol, _) = d.new_volume();
    d.stop();
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&d.config).unwrap()).unwrap();
    cfg["docker"] = json!({"socket_path": d.dir.0.join("no-engine.sock")});
    std::fs::write(&d.config, cfg.to_string()).unwrap();
    d.spawn();
    let body = json!({"internal_id": d.id("new"), "image": IMAGE, "volume_id": vol, "startup_command": "true"});
    for (method, path, body) in [
        ("POST", "/containers".to_string(), Some(body)),
        ("POST", format!("/containers/{made}/reinstall"), None),
        (
            "POST",
            format!("/containers/{made}/rebind-network"),
            Some(json!({"ports": [{"ip": "127.0.0.1", "port": p}]})),
        ),
        ("POST", format!("/containers/{made}/start"), None),
        ("DELETE", format!("/containers/{made}"), None),
    ] {
        let r = d.call(method, &path, body);
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        assert!(r.error().contains("Docker engine unreachable"), "{}", r.body);
    }
    assert_eq!(d.get(&format!("/containers/{}", d.id("new"))).status, 404, "nothing was recorded");
    let v = d.record(&made);
    assert_eq!((v["install_state"].clone(), v["ports"].clone()), (json!("ready"), json!([])));
    assert_eq!(d.get("/network/ports").json()["ports"][0]["in_use"], false);
    assert_eq!(d.call("DELETE", &format!("/containers/{never}"), None).status, 200);
}
