//! The WebSocket console with a tokio-tungstenite client against the real daemon and engine.

mod common;

use std::time::Duration;

use common::ws::*;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

fn number(line: &Value) -> u64 {
    line.as_str()
        .and_then(|l| l.strip_prefix("line "))
        .and_then(|n| n.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

fn create(d: &Daemon, name: &str, command: &str, install: Option<&str>) -> String {
    d.create_container(name, command, install.map_or(json!({}), |s| json!({"install_script": s})))
}

fn start(d: &Daemon, id: &str) {
    assert_eq!(d.wait_installed(id, 120)["install_state"], "ready");
    assert_eq!(d.act(id, "start"), 202);
}

const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.05; done";

/// Follows one viewer's console: every line once, in order, and every gap in the numbers
/// announced first by a `N lines skipped` note.
#[derive(Debug, Default)]
struct Follow {
    /// The last line number seen (or counted as skipped).
    at: u64,
    /// Lines the daemon said this viewer skipped.
    skipped: u64,
    /// Lines announced as skipped whose gap has not been seen yet.
    owed: u64,
    lines: u64,
}

impl Follow {
    fn from(at: u64) -> Follow {
        Follow { at, ..Follow::default() }
    }

    /// Takes one frame.
    fn frame(&mut self, f: &Value) {
        if f["event"] == "daemon_message" {
            let text = f["args"][0].as_str().unwrap();
            if let Some(n) = text.strip_suffix(" lines skipped") {
                let n: u64 = n.parse().unwrap_or_else(|_| panic!("{text:?}"));
                assert!(n > 0, "{text:?}");
                self.skipped += n;
                self.owed += n;
            }
            return;
        }
        if f["event"] != "console output" {
            return;
        }
        let n = number(&f["args"][0]);
        assert!(n > self.at, "after line {} came line {n}: a repeat or out of order", self.at);
        let gap = n - self.at - 1;
        assert!(
            gap <= self.owed,
            "lines {}..{n} are missing, but only {} were announced as skipped",
            self.at + 1,
            self.owed
        );
        self.owed -= gap;
        self.at = n;
        self.lines += 1;
    }
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
    for v in 0..1000 {
        let id = id.clone();
        viewers.push(tokio::spawn(async move {
            let mut ws = connect(port, &format!("/ws/{id}"), Some(TOKEN)).await.expect("connect");
            assert_eq!(next(&mut ws).await["event"], "status");
            let logs = next(&mut ws).await;
            assert_eq!(logs["event"], "logs");
            let tail: Vec<u64> = logs["args"].as_array().unwrap().iter().map(number).collect();
            let first = tail.first().copied().unwrap_or(1);
            assert_eq!(tail, (first..first + tail.len() as u64).collect::<Vec<_>>(), "viewer {v}: the tail in order");
            let mut prev = tail.last().copied().unwrap_or(0);
            let mut got = 0;
            while got < 40 {
                let f = next(&mut ws).await;
                assert_ne!(f["event"], "daemon_message", "viewer {v}: {f}");
                if f["event"] != "console output" {
                    continue;
                }
                let n = number(&f["args"][0]);
                assert_eq!(n, prev + 1, "viewer {v}: after line {prev} came line {n}");
                prev = n;
                got += 1;
            }
            ws
        }));
    }
    // While they connect and read: one attach stream, at most one stats stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while !viewers.iter().all(|v| v.is_finished()) {
        assert_eq!(d.streams(&id, "attach"), 1);
        assert!(d.streams(&id, "stats") <= 1);
        assert!(tokio::time::Instant::now() < deadline, "the viewers did not all read 40 lines within 300 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut open = Vec::new();
    for v in viewers {
        open.push(v.await.expect("viewer saw every line once, in order"));
    }
    assert_eq!(d.metric(&format!("lightd_viewers{{container=\"{id}\",kind=\"ws\"}}")), Some(1000));
    // Every live line each viewer read was timed from the ring to its socket.
    let delivered = d.metric("lightd_console_delivery_seconds_count").unwrap_or(0);
    assert!(delivered >= 40_000, "{delivered} deliveries timed");
    // And every session's tail, from its upgrade request.
    let tails = d.metric("lightd_console_tail_seconds_count").unwrap_or(0);
    assert!(tails >= 1000, "{tails} tails timed");
    assert_eq!(d.streams(&id, "attach"), 1);
    assert_eq!(d.streams(&id, "stats"), 1);
    // Detach closes them all with a reason.
    let r = d.call("POST", &format!("/containers/{id}/detach"), None);
    assert_eq!(r.json()["sessions"], 1000);
    for ws in open.iter_mut().rev().take(10) {
        let reason = closed(ws, 10).await.expect("a close frame");
        assert_eq!(reason.reason, "detached");
    }
    drop(open);
    wait_for(20, "stats stream closed after the last viewer", || (d.streams(&id, "stats") == 0).then_some(()));
    assert_eq!(d.metric(&format!("lightd_viewers{{container=\"{id}\",kind=\"ws\"}}")), Some(0));
}

/// A console session whose socket holds little: the daemon's writes to it block soon after
/// the client stops reading.
async fn open_small(d: &Daemon, id: &str, rcvbuf: u32) -> Ws {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(rcvbuf).unwrap();
    let stream = sock.connect(([127, 0, 0, 1], d.port).into()).await.unwrap();
    let mut req = format!("ws://127.0.0.1:{}/ws/{id}", d.port).into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await.expect("websocket opens").0
}

/// The largest send buffer the kernel grows a socket to.
fn wmem_max() -> u64 {
    let t = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
    t.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_does_not_hold_back_the_others() {
    require_docker();
    let d = Daemon::start();
    // Lines of about 910 bytes, as fast as the shell can: enough to fill any socket quickly.
    const LINE: u64 = 910;
    let id = create(
        &d,
        "flood",
        "pad=$(printf '%0900d' 0); i=0; while true; do i=$((i+1)); echo \"line $i $pad\"; done",
        None,
    );
    start(&d, &id);
    wait_for(20, "first lines", || {
        (d.get(&format!("/containers/{id}/logs")).json()["lines"].as_array()?.len() > 3).then_some(())
    });
    const RCVBUF: u32 = 16 * 1024;
    let mut stalled = open_small(&d, &id, RCVBUF).await;
    let mut live = open(&d, &id).await;
    assert_eq!(next(&mut stalled).await["event"], "status");
    let tail = next(&mut stalled).await;
    assert_eq!(tail["event"], "logs");
    let stalled_at = tail["args"].as_array().unwrap().last().map(number).expect("a tail");
    // The stalled viewer now reads nothing. What can be in flight to it: the socket buffers
    // (the daemon's send side at most wmem_max, our receive side a few times RCVBUF), one
    // write batch (256 lines) and the ring (at most 1000 lines). Once the live viewer is
    // that far past where the stalled one stopped, the stalled one must have been lapped.
    let lapped_at = stalled_at + (wmem_max() + 4 * u64::from(RCVBUF)) / LINE + 256 + 1000;
    let mut live_follow = Follow::default();
    assert_eq!(next(&mut live).await["event"], "status");
    let tail = next(&mut live).await;
    live_follow.at = tail["args"].as_array().unwrap().last().map(number).expect("a tail");
    // The live viewer keeps receiving, in order, while the other is stalled (each frame
    // within 30 s: a viewer held back by the stalled one fails here).
    while live_follow.at < lapped_at {
        let f = next(&mut live).await;
        live_follow.frame(&f);
    }
    // The stalled viewer resumes (well within the daemon's 30 s write timeout), is told how
    // many lines it missed, and the numbers it then sees agree with that count.
    let mut stalled_follow = Follow::from(stalled_at);
    while stalled_follow.skipped == 0 {
        let f = next(&mut stalled).await;
        stalled_follow.frame(&f);
    }
    assert_eq!(d.act(&id, "kill"), 202);
    d.wait_state(&id, "offline", 30);
    let tail = d.get(&format!("/containers/{id}/logs?tail=5")).json()["lines"].clone();
    let last = number(&tail[4]);
    // What the daemon held at the end, for a failure to say (a once-seen failure had the
    // viewers past the last line `logs` gave).
    let ends: Vec<u64> = tail.as_array().unwrap().iter().map(number).collect();
    for (who, ws, follow) in [("stalled", &mut stalled, &mut stalled_follow), ("live", &mut live, &mut live_follow)] {
        while follow.at < last {
            let f = next(ws).await;
            follow.frame(&f);
        }
        assert_eq!(follow.at, last, "{who}: the last 5 lines in the daemon: {ends:?}");
        assert_eq!(follow.owed, 0, "{who}: every line announced as skipped is a gap in what it saw: {follow:?}");
    }
    assert!(stalled_follow.skipped > 0);
    eprintln!("stalled viewer: {stalled_follow:?}; live viewer: {live_follow:?}; stopped at line {last}");
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
    // Only the four console power actions; suspend and resume need the API.
    for action in ["fly", "suspend", "resume"] {
        ws.send(Message::Text(json!({"event": "power", "args": [action]}).to_string())).await.unwrap();
        assert_eq!(next_event(&mut ws, "error").await["args"][0], "power takes start, stop, kill or restart");
    }
    assert_eq!(d.record(&id)["state"], "running", "a refused power message changes nothing");
    ws.send(Message::Text(r#"{"event":"power","args":["kill"]}"#.into())).await.unwrap();
    assert_eq!(next_event(&mut ws, "status").await["args"], json!(["stopping"]));
    assert_eq!(next_event(&mut ws, "status").await["args"], json!(["offline"]));
    let note = next_event(&mut ws, "daemon_message").await;
    assert_eq!(note["args"][0], "Server killed (exit code 137)");
}

/// Reads until the server closes the socket (within `secs`), failing on any data frame on
/// the way: a socket that has not authenticated is told nothing (control frames aside).
async fn closed_unheard(
    ws: &mut Ws,
    secs: u64,
) -> Option<tokio_tungstenite::tungstenite::protocol::CloseFrame<'static>> {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the socket was not closed within {secs} s"),
            Ok(Some(Ok(Message::Close(c)))) => return c,
            Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => panic!("sent before auth: {m:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(None) | Ok(Some(Err(_))) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_without_a_token_must_authenticate_first() {
    require_docker();
    let d = Daemon::start();
    let a = create(&d, "a", "sleep 1000", None);
    d.wait_installed(&a, 120);
    let p = d.port;
    // Anything but an auth frame first: closed with a reason, and nothing was sent before.
    let mut ws = connect(p, &format!("/ws/{a}"), None).await.expect("the upgrade itself needs no token");
    ws.send(Message::Text(r#"{"event":"request_logs","args":["5"]}"#.into())).await.unwrap();
    let close = closed_unheard(&mut ws, 10).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4001);
    assert!(close.reason.contains("first message must be auth"), "{close:?}");
    // Silence: closed after 5 s.
    let mut ws = connect(p, &format!("/ws/{a}"), None).await.unwrap();
    let t = std::time::Instant::now();
    let close = closed_unheard(&mut ws, 15).await.expect("a close frame");
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(close.reason.contains("within 5 s"), "{close:?}");
    // A bad token in the auth frame: closed.
    let mut ws = connect(p, &format!("/ws/{a}"), None).await.unwrap();
    ws.send(Message::Text(r#"{"event":"auth","args":["lightd_nopenopenopenope"]}"#.into())).await.unwrap();
    assert_eq!(closed_unheard(&mut ws, 10).await.map(|c| u16::from(c.code)), Some(4001));
    // The Wings way: auth, then the usual status and logs.
    let t = d.call("POST", "/auth/tokens", Some(json!({"ttl": "10m", "internal_id": a}))).json()["token"].clone();
    let mut ws = connect(p, &format!("/ws/{a}"), None).await.unwrap();
    ws.send(Message::Text(json!({"event": "auth", "args": [t]}).to_string())).await.unwrap();
    assert_eq!(next(&mut ws).await, json!({"event": "auth success", "args": []}));
    assert_eq!(next(&mut ws).await["event"], "status");
    assert_eq!(next(&mut ws).await["event"], "logs");
    // Nobody learns whether a container exists before authenticating.
    let mut ws = connect(p, "/ws/nobody", None).await.expect("upgraded before auth");
    ws.send(Message::Text(json!({"event": "auth", "args": [TOKEN]}).to_string())).await.unwrap();
    assert_eq!(next(&mut ws).await["event"], "auth success");
    let close = ws::closed(&mut ws, 10).await.expect("a close frame");
    assert_eq!((u16::from(close.code), &*close.reason), (4004, "Container not found"));
}

/// A console token's session is warned before it expires and ends when it does; a fresh
/// `auth` frame extends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_token_sessions_expire_unless_extended() {
    require_docker();
    let d = Daemon::start();
    let a = create(&d, "a", "sleep 1000", None);
    d.wait_installed(&a, 120);
    let token =
        |ttl: &str| d.call("POST", "/auth/tokens", Some(json!({"ttl": ttl, "internal_id": a}))).json()["token"].clone();
    // 61 s: the warning comes within two seconds (a minute before the end).
    let mut ws = connect(d.port, &format!("/ws/{a}?token={}", token("61s").as_str().unwrap()), None).await.unwrap();
    next_event(&mut ws, "token expiring").await;
    // A fresh token extends the session: no expiry within the next seconds.
    ws.send(Message::Text(json!({"event": "auth", "args": [token("1h")]}).to_string())).await.unwrap();
    next_event(&mut ws, "auth success").await;
    // 3 s: warned at once, expired after 3 s, then closed.
    let mut short = connect(d.port, &format!("/ws/{a}?token={}", token("3s").as_str().unwrap()), None).await.unwrap();
    next_event(&mut short, "token expiring").await;
    next_event(&mut short, "token expired").await;
    let close = ws::closed(&mut short, 10).await.expect("a close frame");
    assert_eq!((u16::from(close.code), &*close.reason), (4001, "token expired"));
    // The extended one is still open and served.
    ws.send(Message::Text(r#"{"logs":["1"]}"#.into())).await.unwrap();
    next_event(&mut ws, "logs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_bad_frames_get_their_answers() {
    require_docker();
    let d = Daemon::start();
    let a = create(&d, "a", "sleep 1000", None);
    let b = create(&d, "b", "sleep 1000", None);
    d.wait_installed(&a, 120);
    let p = d.port;
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
    let once = token(json!({"remove_on_use": true, "internal_id": b}));
    connect(p, &format!("/ws/{b}?token={once}"), None).await.expect("first use");
    assert_eq!(refused_status(connect(p, &format!("/ws/{b}?token={once}"), None).await), 401);
    // A 1 s token works at once and no longer once its second has passed.
    let short = token(json!({"ttl": "1s", "internal_id": a}));
    connect(p, &format!("/ws/{a}?token={short}"), None).await.expect("a fresh 1 s token");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(refused_status(connect(p, &format!("/ws/{a}?token={short}"), None).await), 401);
    // Temporary tokens open consoles only, never the REST API.
    let free = token(json!({"scope": "all"}));
    assert_eq!(d.call_with("GET", "/volumes", None, &[("Authorization", &format!("Bearer {free}"))]).status, 401);
    for (body, status) in [
        (json!({"ttl": "forever"}), 400),
        (json!({"ttl": "0s"}), 400),
        (json!({"internal_id": "nobody"}), 404),
        (json!({"internal_id": "../x"}), 400),
        (json!({"scope": "everything"}), 400),
        (json!({"scope": "all", "internal_id": a}), 400),
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

    // Too fast (README: 20 messages/s, a burst of 40): of 100 messages sent at once on a
    // fresh socket, the burst and what trickles in meanwhile are answered, and every other
    // one is dropped with an error frame. One answer per message, nothing lost.
    let mut fast = open(&d, &a).await;
    next_event(&mut fast, "logs").await;
    let sent_at = std::time::Instant::now();
    for _ in 0..100 {
        fast.feed(Message::Text(r#"{"logs":["0"]}"#.into())).await.unwrap();
    }
    fast.flush().await.unwrap();
    let (mut answered, mut refused) = (0, 0);
    while answered + refused < 100 {
        let f = next(&mut fast).await;
        match f["event"].as_str() {
            Some("logs") => {
                assert_eq!(f["args"], json!([]), "{f}");
                answered += 1;
            }
            Some("error") => {
                assert_eq!(f["args"][0], "rate limit exceeded: message dropped");
                refused += 1;
            }
            _ => {}
        }
    }
    let took = sent_at.elapsed();
    // 40 at once, then one more for every 50 ms it took to handle them (a few ms here, so
    // 40 or 41; the bound follows the clock so a slow machine does not fail it).
    let most = 41 + (took.as_secs_f64() * 20.0).floor() as u32;
    assert!((40..=most).contains(&answered), "{answered} answered, {refused} refused in {took:?}");
    eprintln!("rate limit: {answered} answered, {refused} refused in {took:?}");
    assert_eq!(answered + refused, 100);
    // The socket is still open: a message after the burst has refilled is answered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    fast.send(Message::Text(r#"{"logs":["0"]}"#.into())).await.unwrap();
    assert_eq!(next(&mut fast).await, json!({"event": "logs", "args": []}));

    // Oversized: closed with 1009.
    ws.send(Message::Text("x".repeat(40 * 1024))).await.unwrap();
    let close = closed(&mut ws, 10).await;
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
    // Daemon::stop asserts the daemon exits 0 within 15 s.
    let stopping = tokio::task::spawn_blocking(move || {
        d.stop();
        d
    });
    let close = closed(&mut ws, 15).await;
    assert_eq!(close.map(|c| c.reason.to_string()), Some("daemon shutting down".into()));
    let d = stopping.await.expect("the daemon stopped with exit status 0");
    assert!(d.log().contains("stopped"), "{}", d.log());
}

/// API.md: `stats` frames come "about once a second while the container runs and someone
/// watches"; the README: the stats stream opens only while someone watches. Once the server
/// is offline, its Docker stats stream closes and the frames stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_stop_when_the_server_stops() {
    require_docker();
    let d = Daemon::start();
    let id = create(&d, "stats", "sleep 1000", None);
    start(&d, &id);
    let mut ws = open(&d, &id).await;
    let first = next_event(&mut ws, "stats").await;
    assert!(first["args"][0].as_str().unwrap().contains("\"state\":\"running\""), "{first}");
    assert_eq!(d.act(&id, "kill"), 202);
    next_note(&mut ws, "Server killed").await;
    d.wait_state(&id, "offline", 30);
    let closed = tokio::time::Instant::now() + Duration::from_secs(10);
    while d.streams(&id, "stats") != 0 {
        assert!(tokio::time::Instant::now() < closed, "the stats stream is still open 10 s after the server stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Whatever was sent before the stream closed has arrived by now; nothing more comes.
    let mut late = Vec::new();
    let window = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(f) = tokio::time::timeout_at(window, next(&mut ws)).await {
        if f["event"] == "stats" {
            late.push(f);
        }
    }
    assert!(late.len() <= 1, "{} stats frames for an offline server: {:?}", late.len(), late.first());
}

/// RFC 6455 framing as the daemon reads it: a ping is answered with its payload, a message in
/// fragments is one message, and a client frame sent unmasked ends the session with 1002.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_fragments_and_unmasked_frames() {
    use std::io::{Read, Write};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    require_docker();
    let d = Daemon::start();
    let id = create(&d, "frames", "sleep 1000", None);
    d.wait_installed(&id, 120);
    let mut ws = open(&d, &id).await;
    next_event(&mut ws, "logs").await;

    ws.send(Message::Ping(b"are you there".to_vec())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        use futures_util::StreamExt;
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("a pong within 10 s") {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(p, b"are you there");
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("no pong: {other:?}"),
        }
    }

    let part =
        |data: &str, code, fin| Message::Frame(Frame::message(data.as_bytes().to_vec(), OpCode::Data(code), fin));
    ws.send(part(r#"{"event":"request_"#, Data::Text, false)).await.unwrap();
    ws.send(part(r#"logs","args":["0"]}"#, Data::Continue, true)).await.unwrap();
    assert_eq!(next(&mut ws).await, json!({"event": "logs", "args": []}), "two fragments are one message");

    // By hand: the upgrade, then a text frame with no mask.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let upgrade = format!(
        "GET /ws/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    raw.write_all(upgrade.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = raw.read(&mut buf).expect("the upgrade answer");
        assert!(n > 0, "closed before the upgrade answer");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    raw.write_all(&[0x81, 0x02, b'{', b'}']).unwrap();
    // Frames until the close: its code is 1002.
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut frames = got.split_off(end);
    let code = loop {
        // Server frames here are short: a two-byte header (or four for lengths past 125).
        if frames.len() >= 2 {
            let (head, len) = match frames[1] {
                126 if frames.len() >= 4 => (4, u16::from_be_bytes([frames[2], frames[3]]) as usize),
                126 => (usize::MAX, 0),
                n => (2, n as usize),
            };
            if head != usize::MAX && frames.len() >= head + len {
                if frames[0] == 0x88 {
                    break u16::from_be_bytes([frames[head], frames[head + 1]]);
                }
                frames.drain(..head + len);
                continue;
            }
        }
        let n = raw.read(&mut buf).expect("a close frame within 10 s");
        assert!(n > 0, "the socket ended without a close frame");
        frames.extend_from_slice(&buf[..n]);
    };
    assert_eq!(code, 1002, "an unmasked client frame is a protocol error");
    assert_eq!(d.get("/health").status, 200);

    // A ping flood: every frame counts (README: 100 frames/s, a burst of 200), so the daemon
    // answers the burst's pings and then closes with 1008, instead of a pong for each.
    let mut flood = open(&d, &id).await;
    next_event(&mut flood, "logs").await;
    let flooded = tokio::time::timeout(Duration::from_secs(30), ping_flood(&mut flood)).await;
    let (close, pongs, took) = flooded.expect("the ping flood answered and closed within 30 s");
    assert_eq!(close.code, CloseCode::Policy, "{close:?}");
    let most = 201 + (took * 100.0).ceil() as u32;
    assert!((1..=most).contains(&pongs), "{pongs} pongs for 1000 pings (at most {most})");
    assert_eq!(d.get("/health").status, 200);
}

/// Sends 1000 pings at once and reads until the close: its frame, the pongs, the seconds taken.
async fn ping_flood(
    flood: &mut Ws,
) -> (tokio_tungstenite::tungstenite::protocol::frame::CloseFrame<'static>, u32, f64) {
    let sent_at = std::time::Instant::now();
    for _ in 0..1000 {
        flood.feed(Message::Ping(b"x".to_vec())).await.unwrap();
    }
    flood.flush().await.unwrap();
    let mut pongs = 0u32;
    let close = loop {
        use futures_util::StreamExt;
        match tokio::time::timeout(Duration::from_secs(10), flood.next()).await.expect("a close within 10 s") {
            Some(Ok(Message::Pong(_))) => pongs += 1,
            Some(Ok(Message::Close(c))) => break c.expect("a close code"),
            Some(Ok(_)) => {}
            other => panic!("the flood ended without a close frame: {other:?} after {pongs} pongs"),
        }
    };
    (close, pongs, sent_at.elapsed().as_secs_f64())
}
