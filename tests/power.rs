//! Power actions and the crash policy against the real engine: every state move is checked
//! against `docker inspect`, and what the viewers are told is checked word for word.

mod common;

use common::*;
use serde_json::{json, Value};

fn docker_state(id: &str) -> (String, String) {
    let out = docker(&["inspect", "-f", "{{.State.Status}} {{.State.StartedAt}}", &format!("lightd-{id}")]);
    let (status, started) = out.trim().split_once(' ').unwrap();
    (status.to_string(), started.to_string())
}

fn status(id: &str) -> String {
    docker_state(id).0
}

/// A server that announces the TERM trap before anything else, so "ready" means "trap set".
const TRAPPED: &str = "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done";

#[test]
fn pattern_then_every_power_action() {
    require_docker();
    let d = Daemon::start();
    // `exec`: the loop runs in a shell with no trap, which SIGTERM ends at once with 143. (In
    // lightd's own shell, whose trap exits with the status of the command the signal ended, a
    // TERM landing on `echo` between two sleeps made the exit 0: a flaky 143.)
    let id = d.ready_container(
        "power",
        "exec sh -c 'echo booting; sleep 3; while true; do echo Hello; sleep 0.1; done'",
        json!({"start_pattern": "Hel+o"}),
    );
    let r = d.call("POST", &format!("/containers/{id}/start"), None);
    assert_eq!((r.status, r.json()), (202, json!({"message": "Container start initiated", "internal_id": id})));
    assert_eq!(d.record(&id)["state"], "starting", "the pattern cannot match before 3 s");
    d.wait_state(&id, "running", 20);
    assert_eq!(status(&id), "running");
    let r = d.call("POST", &format!("/containers/{id}/start"), None);
    assert_eq!((r.status, r.error().as_str()), (409, "Container is already running"));

    assert_eq!(d.act(&id, "suspend"), 202);
    assert_eq!(d.record(&id)["state"], "suspended");
    assert_eq!(status(&id), "paused");
    assert_eq!(d.act(&id, "suspend"), 409);
    let r = d.call("POST", &format!("/containers/{id}/command"), Some(json!({"command": "x"})));
    assert_eq!((r.status, r.error().as_str()), (409, "Container is suspended"));
    assert_eq!(d.act(&id, "resume"), 202);
    assert_eq!(d.record(&id)["state"], "running");
    assert_eq!(status(&id), "running");
    assert_eq!(d.act(&id, "resume"), 409);

    assert_eq!(d.act(&id, "stop"), 202);
    let v = d.wait_state(&id, "offline", 30);
    assert_eq!(v["last_exit"]["code"], 143, "SIGTERM ended it: {v}");
    assert_eq!(status(&id), "exited");
    let r = d.call("POST", &format!("/containers/{id}/stop"), None);
    assert_eq!((r.status, r.error().as_str()), (409, "Container is not running"));
    assert_eq!(d.act(&id, "kill"), 409);

    assert_eq!(d.act(&id, "restart"), 202, "restart from offline starts");
    d.wait_state(&id, "running", 30);
    let (_, started) = docker_state(&id);
    assert_eq!(d.act(&id, "restart"), 202);
    let v = wait_for(30, "a new run", || {
        let (st, now) = docker_state(&id);
        let v = d.record(&id);
        (now != started && st == "running" && v["state"] == "running").then_some(v)
    });
    assert_eq!(v["last_exit"]["code"], 143, "the restart's stop was graceful");

    assert_eq!(d.act(&id, "kill"), 202);
    let v = d.wait_state(&id, "offline", 30);
    assert_eq!(v["last_exit"]["code"], 137);
    assert_eq!(v["last_exit"]["oom_killed"], false);
    assert_eq!(status(&id), "exited");
    assert_eq!(d.act(&id, "resume"), 409);
    assert_eq!(d.act("nobody", "start"), 404);
    assert_eq!(d.metric("lightd_containers{state=\"offline\"}"), Some(1));
}

#[test]
fn stop_escalates_to_sigkill_after_the_timeout() {
    require_docker();
    // cleanup_timeout is 3 s in the test config.
    let d = Daemon::start();
    let id = d.ready_container(
        "stubborn",
        "trap '' TERM; echo up; while true; do sleep 0.2; done",
        json!({"start_pattern": "up"}),
    );
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 20);
    let t = std::time::Instant::now();
    assert_eq!(d.act(&id, "stop"), 202);
    assert_eq!(d.record(&id)["state"], "stopping");
    let v = d.wait_state(&id, "offline", 30);
    assert!(t.elapsed().as_secs_f64() >= 2.5, "it ended only after the 3 s timeout: {:?}", t.elapsed());
    assert_eq!(v["last_exit"]["code"], 137, "SIGKILL: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_restarted_once_then_left_down() {
    require_docker();
    let d = Daemon::start();
    let id = d.ready_container("crash", "echo up; sleep 1; exit 3", json!({"start_pattern": "up"}));
    let mut ws = ws::open(&d, &id).await;
    assert_eq!(d.act(&id, "start"), 202);
    assert_eq!(ws::next_note(&mut ws, "crashed").await, "Server crashed with exit code 3");
    assert_eq!(ws::next_note(&mut ws, "Restarting").await, "Restarting the crashed server (crash_restart)");
    assert_eq!(ws::next_note(&mut ws, "crashed").await, "Server crashed with exit code 3");
    let note = ws::next_note(&mut ws, "not restarting").await;
    assert_eq!(note, "Server crashed again within 60 s: not restarting it (containers.crash_window)");
    let v = d.wait_state(&id, "offline", 10);
    assert_eq!(v["last_exit"]["code"], 3);
    assert!(v["last_exit"]["at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(status(&id), "exited");
    // A user's start is not a crash: it runs again.
    assert_eq!(d.act(&id, "start"), 202);
    ws::next_event(&mut ws, "status").await;
    assert_eq!(ws::next_note(&mut ws, "crashed").await, "Server crashed with exit code 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_crash_restart_a_crash_stays_down_and_a_stop_is_no_crash() {
    require_docker();
    let d = Daemon::start();
    let id = d.ready_container("nocrash", "echo up; sleep 1; exit 4", json!({"crash_restart": false}));
    assert_eq!(d.record(&id)["crash_restart"], false);
    let mut s = AttachSession::open(d.port, &id);
    assert_eq!(d.act(&id, "start"), 202);
    wait_for(20, "the server's first line", || (s.text() == "up").then_some(()));
    // The run that is to crash (a restart would start another).
    let (_, first_run) = docker_state(&id);
    let note = wait_for(20, "the crash note", || {
        let l = s.text();
        l.contains("crashed").then_some(l)
    });
    assert_eq!(note, "[lightd] Server crashed with exit code 4");
    let v = d.wait_state(&id, "offline", 10);
    assert_eq!(v["last_exit"]["code"], 4);
    // Nothing restarts it. The supervisor applies the crash policy in the same step that
    // records the exit, and takes one message at a time: a stop asked now is decided after
    // that step, so it finds the server down (a restart would have made it `starting`), and
    // the container's last run is still the one that crashed.
    let r = d.call("POST", &format!("/containers/{id}/stop"), None);
    assert_eq!((r.status, r.error().as_str()), (409, "Container is not running"), "the crash policy started it");
    assert_eq!(docker_state(&id), ("exited".to_string(), first_run), "the crash policy started it again");
    assert_eq!(d.record(&id)["state"], "offline");

    // A graceful stop of a crash_restart server is recorded as a stop, and it stays down.
    let calm = d.ready_container("calm", TRAPPED, json!({"start_pattern": "ready"}));
    let mut s = AttachSession::open(d.port, &calm);
    assert_eq!(d.act(&calm, "start"), 202);
    d.wait_state(&calm, "running", 20);
    assert_eq!(d.act(&calm, "stop"), 202);
    let note = wait_for(20, "the stop note", || {
        let l = s.text();
        l.contains("Server").then_some(l)
    });
    assert_eq!(note, "[lightd] Server stopped (exit code 0)");
    assert_eq!(d.wait_state(&calm, "offline", 10)["last_exit"]["code"], 0);
    assert_eq!(status(&calm), "exited");
}

#[test]
fn command_reaches_stdin() {
    require_docker();
    let d = Daemon::start();
    let id = d.ready_container(
        "echo",
        "echo ready; while read line; do echo \"echo: $line\"; done",
        json!({"start_pattern": "ready"}),
    );
    let r = d.call("POST", &format!("/containers/{id}/command"), Some(json!({"command": "say hi"})));
    assert_eq!((r.status, r.error().as_str()), (409, "Container is not running"));
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 20);
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
    // The first sample of Docker's stats stream may take a while on a busy machine (the call
    // waits 3 s for it, then answers zeros).
    let stats: Value = wait_for(30, "a stats sample", || {
        let stats: Value = d.get(&format!("/containers/{id}/stats")).json();
        (stats["memory_bytes"].as_u64()? > 0).then_some(stats)
    });
    assert_eq!(stats["state"], "running");
    assert!(stats["uptime_s"].is_u64() && stats["cpu_percent"].is_number());
}
