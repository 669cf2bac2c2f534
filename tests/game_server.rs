//! A real game server, end to end: Debian's `freeciv-server` under lightd, driven as an
//! operator drives it: installed with a settings file, started (running only once it says
//! so), watched by 100 viewers, saved from the console, backed up and restored, reinstalled
//! with its save kept, stopped gracefully, killed from inside and brought back by the crash
//! policy. And refused, with its own words, when asked to run as root.

mod common;

use std::process::Stdio;

use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const FREECIV: &str = "lightd-test/freeciv";
const READY: &str = "For introductory help, type 'help'.";

fn require_freeciv() {
    let ok = docker_cli().args(["image", "inspect", FREECIV]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        matches!(ok, Ok(s) if s.success()),
        "image {FREECIV} missing: run `bash scripts/setup.sh` (the test command does)"
    );
}

/// The save files in the volume, by the files API.
fn saves(d: &Daemon, vol: &str) -> Vec<String> {
    let r = d.get(&format!("/volumes/{vol}/files?path=saves"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
}

/// Waits for a console line containing `needle` on one viewer.
async fn line_with(ws: &mut ws::Ws, needle: &str) -> String {
    loop {
        let f = ws::next_event(ws, "console output").await;
        if let Some(l) = f["args"].as_array().unwrap().iter().filter_map(Value::as_str).find(|l| l.contains(needle)) {
            return l.to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_day_with_freeciv() {
    require_docker();
    require_freeciv();
    let d = Daemon::start();
    let port = port();
    d.add_port("127.0.0.1", port, "tcp");
    let (vol, _) = d.new_volume();
    let id = d.id("freeciv");
    let install = "mkdir -p /home/container/saves\n\
                   printf 'set timeout 0\\nset aifill 4\\n' > /home/container/server.serv\n\
                   echo settings written";
    let body = json!({
        "internal_id": id, "image": FREECIV, "volume_id": vol,
        "startup_command": "exec freeciv-server --port $SERVER_PORT --read server.serv --saves /home/container/saves",
        "start_pattern": "For introductory help",
        // freeciv 3.0.6 can abort on SIGTERM after a save (a double free): `quit` is its way out.
        "stop_command": "quit",
        "ports": [{"ip": "127.0.0.1", "port": port}],
        "install_script": install,
    });
    let r = d.call("POST", "/containers", Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    let rec = d.wait_installed(&id, 300);
    assert_eq!(rec["install_state"], "ready", "{rec}");
    assert_eq!(rec["user"], "1000:1000", "servers run as a user, not root");
    let settings = d.get(&format!("/volumes/{vol}/files/stat?path=server.serv")).json();
    assert_eq!(settings["type"], "file", "the install script wrote the settings: {settings}");

    // Started: `running` only once freeciv says it is ready.
    let mut first = ws::open(&d, &id).await;
    assert_eq!(d.act(&id, "start"), 202);
    let mut seen = Vec::new();
    loop {
        let f = ws::next(&mut first).await;
        match f["event"].as_str() {
            Some("status") => seen.push(f["args"][0].as_str().unwrap().to_string()),
            Some("console output") if f["args"].to_string().contains(READY) => seen.push("ready line".into()),
            _ => {}
        }
        if seen.last().map(String::as_str) == Some("running") {
            break;
        }
    }
    let order: Vec<&str> = seen.iter().map(String::as_str).filter(|s| *s != "offline").collect();
    assert_eq!(order, ["starting", "ready line", "running"], "running only after the pattern: {seen:?}");
    let user = docker(&["inspect", "-f", "{{.Config.User}}", &format!("lightd-{id}")]);
    assert_eq!(user.trim(), "1000:1000");

    // 100 viewers get the tail (with the ready line) and the live console.
    let mut viewers = Vec::new();
    for _ in 0..100 {
        let mut ws = ws::open(&d, &id).await;
        let logs = ws::next_event(&mut ws, "logs").await;
        assert!(logs["args"].to_string().contains(READY), "the tail has the ready line");
        viewers.push(ws);
    }
    // `save` from one viewer: every viewer sees it done, and the save is in the volume.
    first.send(Message::Text(json!({"event": "send_command", "args": ["save"]}).to_string())).await.unwrap();
    let mut tasks = Vec::new();
    for mut ws in viewers {
        tasks.push(tokio::spawn(async move {
            let l = line_with(&mut ws, "Game saved as").await;
            (ws, l)
        }));
    }
    let mut viewers = Vec::new();
    for t in tasks {
        let (ws, line) = t.await.expect("every viewer saw the save");
        assert!(line.contains("/home/container/saves/"), "{line}");
        viewers.push(ws);
    }
    let names = saves(&d, &vol);
    assert_eq!(names.len(), 1, "{names:?}");
    let save = names[0].clone();
    assert!(save.ends_with(".sav.xz"), "{save}");
    let content = d.get(&format!("/volumes/{vol}/files/content?path=saves/{save}&download=1"));
    assert_eq!(content.status, 200);
    assert_eq!(content.header("content-disposition"), Some(format!("attachment; filename=\"{save}\"").as_str()));
    drop(viewers);

    // A backup; the save deleted; a restore (the server stopped and started around it) brings it back.
    let r = d.call("POST", &format!("/volumes/{vol}/backups"), Some(json!({"name": "before-delete"})));
    assert_eq!(r.status, 202, "{}", r.body);
    let bid = r.json()["backup_id"].as_str().unwrap().to_string();
    wait_for(120, "the backup", || {
        (d.get(&format!("/volumes/{vol}/backups/{bid}")).json()["state"] == "ready").then_some(())
    });
    let r = d.call("POST", &format!("/volumes/{vol}/files/delete"), Some(json!({"paths": [format!("saves/{save}")]})));
    assert_eq!(r.json()["deleted"], 1);
    assert!(saves(&d, &vol).is_empty());
    assert_eq!(d.call("POST", &format!("/volumes/{vol}/backups/{bid}/restore"), None).status, 202);
    assert_eq!(ws::next_note(&mut first, "Server stopped").await, "Server stopped (exit code 0)");
    wait_for(120, "the restore", || {
        let b = d.get(&format!("/volumes/{vol}/backups/{bid}")).json();
        b["last_restore"]["completed_at"].is_u64().then_some(())
    });
    assert_eq!(saves(&d, &vol), std::slice::from_ref(&save), "the restore brought the save back");
    d.wait_state(&id, "running", 60);

    // A reinstall keeps the save, and brings the server back.
    assert_eq!(d.call("POST", &format!("/containers/{id}/reinstall"), None).status, 202);
    assert_eq!(ws::next_note(&mut first, "Server stopped").await, "Server stopped for reinstall (exit code 0)");
    assert_eq!(d.wait_installed(&id, 300)["install_state"], "ready");
    d.wait_state(&id, "running", 60);
    assert_eq!(saves(&d, &vol), std::slice::from_ref(&save), "the reinstall kept the save");

    // A graceful stop: exit 0, recorded as a stop, not a crash.
    assert_eq!(d.act(&id, "stop"), 202);
    assert_eq!(ws::next_note(&mut first, "Server").await, "Server stopped (exit code 0)");
    let v = d.wait_state(&id, "offline", 60);
    assert_eq!(v["last_exit"]["code"], 0);

    // Killed from inside: the crash policy starts it again.
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 60);
    // Detached: the exec dies with the container it kills, so only its start can be checked.
    let killed = docker_cli()
        .args(["exec", "-d", &format!("lightd-{id}"), "sh", "-c"])
        .arg("for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = freeciv-server ] && kill -9 ${p#/proc/}; done; true")
        .status()
        .unwrap();
    assert!(killed.success());
    let note = ws::next_note(&mut first, "crashed").await;
    assert!(note.starts_with("Server crashed with exit code"), "{note}");
    assert_eq!(ws::next_note(&mut first, "Restarting").await, "Restarting the crashed server (crash_restart)");
    line_with(&mut first, READY).await;
    d.wait_state(&id, "running", 60);
    assert_eq!(d.act(&id, "kill"), 202);
    d.wait_state(&id, "offline", 30);
}

/// As root, freeciv refuses to run: its own message is in the console and the exit is on
/// record, not a daemon error.
#[test]
fn as_root_freeciv_refuses_in_its_own_words() {
    require_docker();
    require_freeciv();
    let d = Daemon::start();
    let id = d.ready_container(
        "rootciv",
        "exec freeciv-server --port 5556",
        json!({"image": FREECIV, "user": "0:0", "crash_restart": false}),
    );
    assert_eq!(d.record(&id)["user"], "0:0");
    assert_eq!(d.act(&id, "start"), 202);
    let v = wait_for(60, "the exit", || {
        Some(d.record(&id)).filter(|v| v["state"] == "offline" && v["last_exit"].is_object())
    });
    assert_ne!(v["last_exit"]["code"], 0, "{v}");
    assert_eq!(v["install_state"], "ready");
    assert_eq!(v["error"], Value::Null, "no daemon error: {v}");
    let logs = d.get(&format!("/containers/{id}/logs?tail=50")).json()["lines"].to_string();
    assert!(logs.contains("Fatal error: you're trying to run me as superuser!"), "{logs}");
}
