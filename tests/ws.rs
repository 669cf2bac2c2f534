//! The WebSocket console with a tokio-tungstenite client against the real daemon and engine.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(port: u16, path: &str, bearer: Option<&str>) -> Result<Ws, WsError> {
    let mut req = format!("ws://127.0.0.1:{port}{path}").into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut().insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

async fn open(d: &Daemon, id: &str) -> Ws {
    connect(d.port, &format!("/ws/{id}"), Some(TOKEN)).await.expect("websocket opens")
}

fn refused_status(r: Result<Ws, WsError>) -> u16 {
    match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connection was accepted"),
    }
}

/// The next JSON frame within 30 s (pings are answered by the client library).
async fn next(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("a frame within 30 s");
        match msg.expect("stream open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// The next frame whose event is `event`, within 30 s.
async fn next_event(ws: &mut Ws, event: &str) -> Value {
    let wanted = async {
        loop {
            let f = next(ws).await;
            if f["event"] == event {
                return f;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wanted)
        .await
        .unwrap_or_else(|_| panic!("no {event} frame within 30 s"))
}

fn number(line: &Value) -> u64 {
    line.as_str().and_then(|l| l.strip_prefix("line ")).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

fn create(d: &Daemon, name: &str, command: &str, install: Option<&str>) -> String {
    d.create_container(name, command, install.map_or(json!({}), |s| json!({"install_script": s})))
}

fn start(d: &Daemon, id: &str) {
    assert_eq!(d.wait_installed(id, 120)["install_state"], "ready");
    assert_eq!(d.call("POST", &format!("/containers/{id}/start"), None).status, 202);
}

const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.05; done";

fn streams(d: &Daemon, id: &str, kind: &str) -> u64 {
    metric(&d.get("/metrics").body, &format!("lightd_docker_streams{{kind=\"{kind}\",container=\"{id}\"}}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_then_tail_of_100_at_once() {
    require_docker();
    let d = Daemon::start();
    let id = create(&d, "tail", "i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo \"line $i\"; done; sleep 1000", None);
    start(&d, &id);
    wait_for(20, "150 lines", || {
        (d.get(&format!("/containers/{id}/logs?tail=1")).json()["lines"][0] == "line 150").then_some(())
    });
    let mut ws = open(&d, &id).await;
    assert_eq!(next(&mut ws).await, json!({"event": "status", "args": ["running"]}));
    let logs = next(&mut ws).await;
    assert_eq!(logs["event"], "logs");
    let lines: Vec<u64> = logs["args"].as_array().unwrap().iter().map(number).collect();
    assert_eq!(lines, (51..=150).collect::<Vec<_>>());
    // request_logs, both shapes.
    ws.send(Message::Text(r#"{"event":"request_logs","args":["3"]}"#.into())).await.unwrap();
    assert_eq!(next_event(&mut ws, "logs").await["args"], json!(["line 148", "line 149", "line 150"]));
    ws.send(Message::Text(r#"{"logs":["1"]}"#.into())).await.unwrap();
    assert_eq!(next_event(&mut ws, "logs").await["args"], json!(["line 150"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_viewers_get_every_line_once_in_order() {
    require_docker();
    let d = Daemon::start();
    let id = create(&d, "many", COUNTER, None);
    start(&d, &id);
    wait_for(20, "first lines", || {
        (d.get(&format!("/containers/{id}/logs")).json()["lines"].as_array()?.len() > 3).then_some(())
    });
    let port = d.port;
    let mut viewers = Vec::new();
    for _ in 0..1000 {
        let id = id.clone();
        viewers.push(tokio::spawn(async move {
            let mut ws = connect(port, &format!("/ws/{id}"), Some(TOKEN)).await.expect("connect");
            assert_eq!(next(&mut ws).await["event"], "status");
            let logs = next(&mut ws).await;
            let mut prev = logs["args"].as_array().unwrap().last().map(number).unwrap_or(0);
            let mut got = 0;
            while got < 40 {
                let f = next(&mut ws).await;
                if f["event"] != "console output" {
                    continue;
                }
                let n = number(&f["args"][0]);
                assert_eq!(n, prev + 1, "after line {prev} came line {n}");
                prev = n;
                got += 1;
            }
            ws
        }));
    }
    // While they connect and read: one attach stream, at most one stats stream.
    for _ in 0..5 {
        assert_eq!(streams(&d, &id, "attach"), 1);
        assert!(streams(&d, &id, "stats") <= 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut open = Vec::new();
    for v in viewers {
        open.push(v.await.expect("viewer saw every line once, in order"));
    }
    let m = d.get("/metrics").body;
    assert_eq!(metric(&m, &format!("lightd_viewers{{container=\"{id}\",kind=\"ws\"}}")), Some(1000));
    assert_eq!(streams(&d, &id, "attach"), 1);
    assert_eq!(streams(&d, &id, "stats"), 1);
    // Detach closes them all with a reason.
    let r = d.call("POST", &format!("/containers/{id}/detach"), None);
    assert_eq!(r.json()["sessions"], 1000);
    let mut ws = open.pop().unwrap();
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(c)))) => break c,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(reason.reason, "detached");
    drop(open);
    wait_for(20, "stats stream closed after the last viewer", || (streams(&d, &id, "stats") == 0).then_some(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_does_not_hold_back_the_others() {
    require_docker();
    let d = Daemon::start();
    // About 4 MB/s of console output: enough to fill any socket buffer quickly.
    let id = create(
        &d,
        "flood",
        "pad=$(printf '%0900d' 0); i=0; while true; do i=$((i+1)); echo \"line $i $pad\"; done",
        None,
    );
    start(&d, &id);
    let rss = |d: &Daemon| metric(&d.get("/metrics").body, "lightd_process_resident_bytes").unwrap();
    let mut stalled = open(&d, &id).await;
    let mut live = open(&d, &id).await;
    let before = rss(&d);
    let flood_number =
        |f: &Value| -> u64 { f["args"][0].as_str().unwrap().split(' ').nth(1).unwrap().parse().unwrap() };
    let mut last = 0;
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < deadline {
        let f = next(&mut live).await;
        if f["event"] == "console output" {
            let n = flood_number(&f);
            assert!(n > last, "in order");
            last = n;
            seen += 1;
        }
    }
    assert!(seen > 1000, "the live viewer kept receiving ({seen} lines) while the other stalled");
    let after = rss(&d);
    assert!(after < before + 64 * 1024 * 1024, "memory stays bounded: {before} -> {after}");
    // The stalled viewer resumes and is told what it missed.
    let note = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let f = next(&mut stalled).await;
            if f["event"] == "daemon_message" && f["args"][0].as_str().unwrap().ends_with("lines skipped") {
                return f;
            }
        }
    })
    .await
    .expect("a skipped-lines note");
    let skipped: u64 = note["args"][0].as_str().unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(skipped > 0);
    assert_eq!(d.call("POST", &format!("/containers/{id}/kill"), None).status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_and_commands_over_the_socket() {
    require_docker();
    let d = Daemon::start();
    let id = create(&d, "ctl", "echo ready; while read line; do echo \"echo: $line\"; done", Some("sleep 3"));
    let mut ws = open(&d, &id).await;
    assert_eq!(next(&mut ws).await, json!({"event": "status", "args": ["offline"]}));
    ws.send(Message::Text(r#"{"event":"power","args":["start"]}"#.into())).await.unwrap();
    let err = next_event(&mut ws, "error").await;
    assert_eq!(err["args"][0], "Cannot start while container is installing");
    ws.send(Message::Text(r#"{"send_command":["hello"]}"#.into())).await.unwrap();
    let err = next_event(&mut ws, "error").await;
    assert!(err["args"][0].as_str().unwrap().contains("installing"), "{err}");
    // The install's events arrive live.
    let mut names = Vec::new();
    while names.last() != Some(&"Ready".to_string()) {
        let f = next_event(&mut ws, "event").await;
        names.push(f["args"][0].as_str().unwrap().to_string());
    }
    assert!(
        names.ends_with(&["InstallScriptComplete".into(), "SettingUpEntrypoint".into(), "Ready".into()]),
        "{names:?}"
    );
    d.wait_installed(&id, 60);
    ws.send(Message::Text(r#"{"power":["start"]}"#.into())).await.unwrap();
    assert_eq!(next_event(&mut ws, "status").await["args"], json!(["starting"]));
    assert_eq!(next_event(&mut ws, "status").await["args"], json!(["running"]));
    ws.send(Message::Text(r#"{"event":"send_command","args":["say hi"]}"#.into())).await.unwrap();
    loop {
        let f = next_event(&mut ws, "console output").await;
        if f["args"][0] == "echo: say hi" {
            break;
        }
    }
    ws.send(Message::Text(r#"{"event":"power","args":["fly"]}"#.into())).await.unwrap();
    assert!(next_event(&mut ws, "error").await["args"][0].as_str().unwrap().contains("power takes"));
    ws.send(Message::Text(r#"{"event":"power","args":["kill"]}"#.into())).await.unwrap();
    assert_eq!(next_event(&mut ws, "status").await["args"], json!(["stopping"]));
    assert_eq!(next_event(&mut ws, "status").await["args"], json!(["offline"]));
    let note = next_event(&mut ws, "daemon_message").await;
    assert_eq!(note["args"][0], "Server killed (exit code 137)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_bad_frames_get_their_answers() {
    require_docker();
    let d = Daemon::start();
    let a = create(&d, "a", "sleep 1000", None);
    let b = create(&d, "b", "sleep 1000", None);
    d.wait_installed(&a, 120);
    let p = d.port;
    assert_eq!(refused_status(connect(p, &format!("/ws/{a}"), None).await), 401);
    assert_eq!(refused_status(connect(p, &format!("/ws/{a}"), Some("lightd_wrongwrongwrongwrong")).await), 401);
    assert_eq!(refused_status(connect(p, &format!("/ws/{a}?token=lightd_nope"), None).await), 401);
    assert_eq!(refused_status(connect(p, "/ws/nobody", Some(TOKEN)).await), 404);
    // Master token in the query works.
    connect(p, &format!("/ws/{a}?token={TOKEN}"), None).await.expect("master token in query");

    let token = |body: Value| {
        let r = d.call("POST", "/auth/tokens", Some(body));
        assert_eq!(r.status, 201, "{}", r.body);
        assert!(r.json()["expires_at"].as_u64().unwrap() > 1_700_000_000);
        r.json()["token"].as_str().unwrap().to_string()
    };
    let bound = token(json!({"ttl": "10m", "internal_id": a}));
    connect(p, &format!("/ws/{a}?token={bound}"), None).await.expect("bound token, right container");
    connect(p, &format!("/ws/{a}?token={bound}"), None).await.expect("reusable without remove_on_use");
    assert_eq!(refused_status(connect(p, &format!("/ws/{b}?token={bound}"), None).await), 403);
    let once = token(json!({"remove_on_use": true}));
    connect(p, &format!("/ws/{b}?token={once}"), None).await.expect("first use");
    assert_eq!(refused_status(connect(p, &format!("/ws/{b}?token={once}"), None).await), 401);
    let short = token(json!({"ttl": "1s"}));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(refused_status(connect(p, &format!("/ws/{a}?token={short}"), None).await), 401);
    // Temporary tokens open consoles only, never the REST API.
    let free = token(json!({}));
    assert_eq!(d.call_with("GET", "/volumes", None, &[("Authorization", &format!("Bearer {free}"))]).status, 401);
    for (body, status) in [
        (json!({"ttl": "forever"}), 400),
        (json!({"ttl": "0s"}), 400),
        (json!({"internal_id": "nobody"}), 404),
        (json!({"internal_id": "../x"}), 400),
        (json!({"scope": "all"}), 400),
    ] {
        assert_eq!(d.call("POST", "/auth/tokens", Some(body.clone())).status, status, "{body}");
    }

    // Garbage and unknown messages: an error frame each, and the socket stays open.
    let mut ws = open(&d, &a).await;
    next_event(&mut ws, "logs").await;
    for (msg, needle) in [
        ("not json at all", "invalid JSON"),
        ("[1,2,3]", "object"),
        (r#"{"event":"fly","args":[]}"#, "unknown event"),
        (r#"{"event":"power","args":[1]}"#, "string"),
        (r#"{"event":"request_logs","args":["99999999"]}"#, "request_logs"),
    ] {
        ws.send(Message::Text(msg.into())).await.unwrap();
        let f = next_event(&mut ws, "error").await;
        assert!(f["args"][0].as_str().unwrap().contains(needle), "{msg}: {f}");
    }
    ws.send(Message::Binary(vec![0xff, 0xfe])).await.unwrap();
    assert!(next_event(&mut ws, "error").await["args"][0].as_str().unwrap().contains("UTF-8"));
    // Too fast: some messages are dropped with an error, none crash anything.
    for _ in 0..100 {
        ws.send(Message::Text(r#"{"logs":["0"]}"#.into())).await.unwrap();
    }
    loop {
        let f = next(&mut ws).await;
        if f["event"] == "error" {
            assert!(f["args"][0].as_str().unwrap().contains("rate limit"));
            break;
        }
    }
    // Oversized: closed with 1009.
    ws.send(Message::Text("x".repeat(40 * 1024))).await.unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
            Some(Ok(Message::Close(c))) => break c,
            Some(Ok(_)) => continue,
            other => panic!("expected close, got {other:?}"),
        }
    };
    assert_eq!(close.map(|c| c.code), Some(CloseCode::Size));
    assert_eq!(d.get("/health").status, 200, "the daemon is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_with_a_reason() {
    require_docker();
    let mut d = Daemon::start();
    let id = d.ready_container("bye", "sleep 1000", json!({}));
    let mut ws = open(&d, &id).await;
    next_event(&mut ws, "logs").await;
    tokio::task::spawn_blocking(move || {
        d.stop();
        d
    });
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next()).await.expect("a close within 15 s") {
            Some(Ok(Message::Close(c))) => break c,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|c| c.reason.to_string()), Some("daemon shutting down".into()));
}
