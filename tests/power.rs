//! Power actions against the real engine: state moves, `docker inspect` agrees.

mod common;

use std::time::Instant;

use common::*;
use serde_json::{json, Value};

/// A ready container running `command` (through the usual entrypoint).
fn ready(d: &Daemon, name: &str, command: &str, pattern: Option<&str>) -> String {
    d.ready_container(name, command, pattern.map_or(json!({}), |p| json!({"start_pattern": p})))
}

fn state(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/containers/{id}")).json()
}

fn wait_state(d: &Daemon, id: &str, want: &str, secs: u64) -> Value {
    wait_for(secs, &format!("{id} to be {want}"), || {
        let v = state(d, id);
        (v["state"] == want).then_some(v)
    })
}

fn docker_status(id: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Status}}", &format!("lightd-{id}")]).trim().to_string()
}

fn act(d: &Daemon, id: &str, action: &str) -> u16 {
    d.call("POST", &format!("/containers/{id}/{action}"), None).status
}

#[test]
fn pattern_then_every_power_action() {
    require_docker();
    let d = Daemon::start();
    let id = ready(&d, "power", "echo booting; sleep 1; while true; do echo Hello; sleep 0.1; done", Some("Hel+o"));
    let r = d.call("POST", &format!("/containers/{id}/start"), None);
    assert_eq!((r.status, r.json()), (202, json!({"message": "Container start initiated", "internal_id": id})));
    assert_eq!(state(&d, &id)["state"], "starting", "the pattern has not matched yet");
    wait_state(&d, &id, "running", 20);
    assert_eq!(docker_status(&id), "running");
    assert_eq!(act(&d, &id, "start"), 409);

    assert_eq!(act(&d, &id, "suspend"), 202);
    assert_eq!(state(&d, &id)["state"], "suspended");
    assert_eq!(docker_status(&id), "paused");
    assert_eq!(act(&d, &id, "suspend"), 409);
    assert_eq!(act(&d, &id, "resume"), 202);
    assert_eq!(state(&d, &id)["state"], "running");
    assert_eq!(docker_status(&id), "running");
    assert_eq!(act(&d, &id, "resume"), 409);

    assert_eq!(act(&d, &id, "stop"), 202);
    let v = wait_state(&d, &id, "offline", 30);
    assert_eq!(v["last_exit"]["code"], 143, "SIGTERM ended it: {v}");
    assert_ne!(docker_status(&id), "running");
    assert_eq!(act(&d, &id, "stop"), 409);
    assert_eq!(act(&d, &id, "kill"), 409);

    assert_eq!(act(&d, &id, "restart"), 202, "restart from offline starts");
    wait_state(&d, &id, "running", 30);
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &format!("lightd-{id}")]);
    assert_eq!(act(&d, &id, "restart"), 202);
    wait_for(30, "a new run", || {
        let now = docker(&["inspect", "-f", "{{.State.StartedAt}}", &format!("lightd-{id}")]);
        (now != started && state(&d, &id)["state"] == "running").then_some(())
    });
    assert_eq!(docker_status(&id), "running");

    assert_eq!(act(&d, &id, "kill"), 202);
    let v = wait_state(&d, &id, "offline", 30);
    assert_eq!(v["last_exit"]["code"], 137);
    assert_eq!(v["last_exit"]["oom_killed"], false);
    assert_ne!(docker_status(&id), "running");
    assert_eq!(act(&d, &id, "resume"), 409);
    assert_eq!(act(&d, "nobody", "start"), 404);
    let m = d.get("/metrics").body;
    assert_eq!(metric(&m, "lightd_containers{state=\"offline\"}"), Some(1));
}

#[test]
fn stop_escalates_to_sigkill_after_the_timeout() {
    require_docker();
    // cleanup_timeout is 3 s in the test config.
    let d = Daemon::start();
    let id = ready(&d, "stubborn", "trap '' TERM; echo up; while true; do sleep 0.2; done", None);
    assert_eq!(act(&d, &id, "start"), 202);
    assert_eq!(state(&d, &id)["state"], "running", "no pattern: running at once");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let t = Instant::now();
    assert_eq!(act(&d, &id, "stop"), 202);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(state(&d, &id)["state"], "stopping", "SIGTERM is ignored");
    assert_eq!(docker_status(&id), "running");
    let v = wait_state(&d, &id, "offline", 30);
    assert!(t.elapsed().as_secs_f64() >= 2.5, "ended only after the timeout");
    assert_eq!(v["last_exit"]["code"], 137, "SIGKILL: {v}");
}

#[test]
fn crash_with_exit_code_is_offline_not_a_stop() {
    require_docker();
    let d = Daemon::start();
    let id = ready(&d, "crash", "echo about to fail; sleep 1; exit 3", None);
    let mut attach_session = None;
    assert_eq!(act(&d, &id, "start"), 202);
    attach_session.get_or_insert_with(|| AttachSession::open(d.port, &id));
    let v = wait_state(&d, &id, "offline", 30);
    assert_eq!(v["last_exit"]["code"], 3);
    assert_eq!(v["last_exit"]["oom_killed"], false);
    assert!(v["last_exit"]["at"].as_u64().unwrap() > 1_700_000_000);
    let s = attach_session.as_mut().unwrap();
    let note = wait_for(10, "crash note", || {
        let l = s.next_line()?;
        l.contains("crashed").then_some(l)
    });
    assert_eq!(note, "[lightd] Server crashed with exit code 3");
    // It can start again.
    assert_eq!(act(&d, &id, "start"), 202);
    wait_for(30, "second exit", || {
        let v = state(&d, &id);
        (v["state"] == "offline" && v["last_exit"]["at"] != json!(null)).then_some(())
    });
}

#[test]
fn command_reaches_stdin() {
    require_docker();
    let d = Daemon::start();
    let id = ready(&d, "echo", "echo ready; while read line; do echo \"echo: $line\"; done", Some("ready"));
    assert_eq!(d.call("POST", &format!("/containers/{id}/command"), Some(json!({"command": "say hi"}))).status, 409);
    assert_eq!(act(&d, &id, "start"), 202);
    wait_state(&d, &id, "running", 20);
    let r = d.call("POST", &format!("/containers/{id}/command"), Some(json!({"command": "say hi"})));
    assert_eq!((r.status, r.json()), (202, json!({"message": "Command sent", "internal_id": id})));
    wait_for(10, "the echo in logs", || {
        let lines = d.get(&format!("/containers/{id}/logs?tail=10")).json()["lines"].clone();
        lines.as_array().unwrap().iter().any(|l| l == "echo: say hi").then_some(())
    });
    for bad in [json!({"command": ""}), json!({"cmd": "x"}), json!({"command": "a\u{0}b"})] {
        assert_eq!(d.call("POST", &format!("/containers/{id}/command"), Some(bad.clone())).status, 400, "{bad}");
    }
    assert_eq!(d.get(&format!("/containers/{id}/logs?tail=100000")).status, 400);
    assert_eq!(d.get(&format!("/containers/{id}/logs?tail=x")).status, 400);
    assert_eq!(d.get("/containers/nobody/logs").status, 404);
    let stats = d.get(&format!("/containers/{id}/stats")).json();
    assert_eq!(stats["state"], "running");
    assert!(stats["memory_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["uptime_s"].is_u64() && stats["cpu_percent"].is_number());
}

#[test]
fn rebind_of_a_running_server_restarts_it_on_the_new_port() {
    require_docker();
    let d = Daemon::start();
    let (old, new) = (free_port(), free_port());
    d.add_port("127.0.0.1", old, "tcp");
    d.add_port("127.0.0.1", new, "tcp");
    let id = d.ready_container(
        "moving",
        "echo up; while true; do sleep 0.2; done",
        json!({"ports": [{"ip": "127.0.0.1", "port": old}], "start_pattern": "up"}),
    );
    assert_eq!(act(&d, &id, "start"), 202);
    wait_state(&d, &id, "running", 20);
    let first = state(&d, &id)["container_id"].clone();
    let r = d.call(
        "POST",
        &format!("/containers/{id}/rebind-network"),
        Some(json!({"ports": [{"ip": "127.0.0.1", "port": new}]})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let v = wait_for(30, "running again on the new container", || {
        let v = state(&d, &id);
        (v["container_id"] != first && v["state"] == "running").then_some(v)
    });
    assert_eq!(v["ports"][0]["port"], new);
    assert_eq!(docker_status(&id), "running");
    let bindings = docker(&["inspect", "-f", "{{json .HostConfig.PortBindings}}", &format!("lightd-{id}")]);
    assert!(bindings.contains(&format!("\"{new}/tcp\"")), "{bindings}");
    let m = d.get("/metrics").body;
    assert_eq!(metric(&m, &format!("lightd_docker_streams{{kind=\"attach\",container=\"{id}\"}}")), Some(1));
    assert_eq!(act(&d, &id, "kill"), 202);
    wait_state(&d, &id, "offline", 20);
}
