//! The Docker engine restarts under a running daemon: REST says 503 only while it is down,
//! viewers stay connected and are told, streams come back on their own.
//! Alone in its file: it stops the engine, so nothing else may run beside it.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_restart_is_survived() {
    require_docker();
    let d = Daemon::start();
    let (vol, _) = d.new_volume();
    let id = d.id("srv");
    let spare = d.id("spare");
    for name in [&id, &spare] {
        let body = json!({"internal_id": name, "image": IMAGE, "volume_id": vol,
                          "startup_command": "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.1; done"});
        assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
        d.wait_installed(name, 120);
    }
    assert_eq!(d.call("POST", &format!("/containers/{id}/start"), None).status, 202);
    let mut ws = ws::connect(d.port, &format!("/ws/{id}?token={TOKEN}"), None).await.unwrap();

    let daemon_port = d.port;
    let notes = tokio::spawn(async move {
        // Everything the viewer is told, until the console runs again after the restart.
        let mut notes = Vec::new();
        let mut back = false;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(180), ws.next()).await {
            let Message::Text(t) = msg else { continue };
            let f: Value = serde_json::from_str(&t).unwrap();
            if f["event"] == "daemon_message" {
                let text = f["args"][0].as_str().unwrap().to_string();
                back |= text.contains("reachable again");
                notes.push(text);
            }
            if back && f["event"] == "console output" {
                return (notes, true);
            }
        }
        let _ = daemon_port;
        (notes, false)
    });

    let engine = tokio::task::spawn_blocking(engine::Engine::stop).await.unwrap();
    wait_for(30, "health to say unreachable", || {
        (d.call_with("GET", "/health", None, &[]).json()["docker"] == "unreachable").then_some(())
    });
    let r = d.call("DELETE", &format!("/containers/{spare}"), None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.error().contains("Docker engine unreachable"), "{}", r.error());
    assert_eq!(d.get(&format!("/containers/{spare}")).status, 200, "nothing deleted while the engine is down");
    assert_eq!(d.get("/volumes").status, 200, "routes without Docker keep working");

    let engine = tokio::task::spawn_blocking(move || {
        let mut engine = engine;
        engine.start();
        engine
    })
    .await
    .unwrap();
    wait_for(30, "health to say reachable", || {
        (d.call_with("GET", "/health", None, &[]).json()["docker"] == "reachable").then_some(())
    });
    wait_for(30, "the events stream back", || {
        (metric(&d.get("/metrics").body, "lightd_docker_streams{kind=\"events\",container=\"\"}") == Some(1))
            .then_some(())
    });
    // The engine stopped the server with itself: that is recorded as an exit lightd did not
    // ask for, so the crash policy starts it again by itself.
    let v = wait_for(30, "the server running again", || {
        Some(d.record(&id)).filter(|v| v["state"] == "running" && v["last_exit"]["code"].is_i64())
    });
    assert_eq!(v["install_state"], "ready");
    let (notes, console_back) = notes.await.unwrap();
    assert!(notes.iter().any(|n| n.contains("connection lost")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("reachable again")), "{notes:?}");
    assert!(notes.iter().any(|n| n == "Restarting the crashed server (crash_restart)"), "{notes:?}");
    assert!(console_back, "the viewer stayed connected and sees the console again: {notes:?}");
    assert_eq!(
        metric(&d.get("/metrics").body, &format!("lightd_docker_streams{{kind=\"attach\",container=\"{id}\"}}")),
        Some(1)
    );
    assert_eq!(d.call("DELETE", &format!("/containers/{spare}"), None).status, 200);
    drop(engine);
    assert!(engine::up(), "the engine is left running");
}
