//! `GET /ws/:internal_id`: the console protocol of API.md on fastwebsockets.
//!
//! A reader task turns inbound frames into messages; the session task owns the write half and
//! selects over the ring (console lines), the hub's events, inbound messages, `detach` and a
//! ping timer. A viewer that stops reading only delays itself: the ring moves on and it is
//! told how many lines it missed; a write stuck for too long ends the session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fastwebsockets::{after_handshake_split, Frame, OpCode, Payload, Role, WebSocketError};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{BufWriter, ReadHalf};
use tokio::sync::{broadcast, mpsc};

use super::power::Action;
use super::reply::{ApiError, Reply};
use crate::app::App;
use crate::console::viewer::Cursor;
use crate::console::{stats, Event, Hub, ViewerKind};
use crate::lifecycle::{self, record, FILL_WAIT};

/// Largest inbound message (also across fragments).
pub const MAX_INBOUND: usize = 32 * 1024;
/// Largest frame read whole before refusing it, so a modestly oversized message still gets
/// a clean 1009 close instead of a reset; anything larger is cut off mid-frame.
const MAX_FRAME_READ: usize = 4 * MAX_INBOUND;
/// Lines written per batch before the socket is flushed.
const BATCH: usize = 256;
const PING_EVERY: Duration = Duration::from_secs(20);
/// A peer silent this long (no frame, no pong) is dead.
const PEER_TIMEOUT: Duration = Duration::from_secs(60);
/// A batch that cannot be written in this time ends the session (the peer stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Inbound messages per second allowed, and the burst above it.
const RATE: f64 = 20.0;
const BURST: f64 = 40.0;

/// Upgrades the connection (auth was checked by the router) and starts the session.
pub fn upgrade(app: &Arc<App>, req: Request<Incoming>, id: &str) -> Result<Reply, ApiError> {
    record(app, id)?;
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Err(ApiError::new(hyper::StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required"));
    }
    let mut req = req;
    let (resp, fut) = fastwebsockets::upgrade::upgrade(&mut req)
        .map_err(|e| ApiError::bad_request(format!("bad WebSocket handshake: {e}")))?;
    let (app, hub) = (Arc::clone(app), app.hubs.get(id));
    tokio::spawn(async move {
        match fut.await {
            Ok(ws) => session(app, hub, ws.into_inner()).await,
            Err(e) => eprintln!("lightd: websocket upgrade failed: {e}"),
        }
    });
    let (parts, _) = resp.into_parts();
    Ok(hyper::Response::from_parts(parts, super::reply::full(hyper::body::Bytes::new())))
}

/// What the reader task reports.
enum Inbound {
    Text(String),
    /// A frame the protocol obliges us to send (pong, close echo).
    Send(OpCode, Vec<u8>),
    /// Any sign of life (pong, ping).
    Alive,
    TooBig,
    /// The reply to a request handled in the background.
    Reply(Vec<u8>),
}

#[derive(Serialize)]
struct Out<'a> {
    event: &'a str,
    args: &'a [&'a str],
}

fn frame(event: &str, args: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&Out { event, args }).unwrap_or_default()
}

fn error_frame(text: &str) -> Vec<u8> {
    frame("error", &[text])
}

type Sink = fastwebsockets::WebSocketWrite<BufWriter<tokio::io::WriteHalf<TokioIo<Upgraded>>>>;

async fn session(app: Arc<App>, hub: Arc<Hub>, io: TokioIo<Upgraded>) {
    let _viewer = hub.viewer(ViewerKind::Ws);
    stats::ensure(&app, &hub);
    let (rd, wr) = tokio::io::split(io);
    let (mut rx, mut tx) = after_handshake_split(rd, BufWriter::new(wr), Role::Server);
    rx.set_max_message_size(MAX_FRAME_READ);
    rx.set_auto_close(true);
    rx.set_auto_pong(true);
    let (in_tx, mut inbound) = mpsc::channel(64);
    let reader = tokio::spawn(read_loop(rx, in_tx.clone()));
    let mut closed = hub.closed();
    let mut events = hub.subscribe();
    hub.wait_filled(FILL_WAIT).await;
    let state = record(&app, &hub.id).map(|r| r.state.as_str()).unwrap_or("offline");
    let (mut cursor, tail) = Cursor::tail(hub.ring(), app.config.console.tail_lines);
    let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
    let mut out = vec![frame("status", &[state]), frame("logs", &tail)];
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_seen = Instant::now();
    let mut bucket = (BURST, Instant::now());
    let close: (u16, &str) = loop {
        if !out.is_empty() {
            if !write_all(&mut tx, std::mem::take(&mut out)).await {
                break (1001, "");
            }
            continue;
        }
        let woken = hub.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let batch = cursor.poll(hub.ring(), BATCH);
        if batch.skipped > 0 {
            out.push(frame("daemon_message", &[&format!("{} lines skipped", batch.skipped)]));
        }
        out.extend(batch.lines.iter().map(|l| frame("console output", &[l])));
        if !out.is_empty() {
            continue;
        }
        tokio::select! {
            _ = &mut woken => {}
            ev = events.recv() => match ev {
                Ok(ev) => out.extend(event_frames(&ev)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    out.push(frame("daemon_message", &[&format!("{n} events skipped")]));
                }
                Err(broadcast::error::RecvError::Closed) => break (1001, "container deleted"),
            },
            msg = inbound.recv() => match msg {
                None => break (1000, ""),
                Some(Inbound::Alive) => last_seen = Instant::now(),
                Some(Inbound::Reply(f)) => out.push(f),
                Some(Inbound::TooBig) => break (1009, "message too big"),
                Some(Inbound::Send(op, payload)) => {
                    let is_close = op == OpCode::Close;
                    let _ = tx.write_frame(Frame::new(true, op, None, Payload::Owned(payload))).await;
                    let _ = tx.flush().await;
                    if is_close {
                        reader.abort();
                        return;
                    }
                }
                Some(Inbound::Text(text)) => {
                    last_seen = Instant::now();
                    if !take_token(&mut bucket) {
                        out.push(error_frame("rate limit exceeded: message dropped"));
                        continue;
                    }
                    if let Some(reply) = handle(&app, &hub, &text, in_tx.clone()) {
                        out.push(reply);
                    }
                }
            },
            _ = closed.changed() => break (1000, closed.borrow().unwrap_or("closed")),
            _ = ping.tick() => {
                if last_seen.elapsed() > PEER_TIMEOUT {
                    break (1001, "ping timeout");
                }
                let _ = tx.write_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"lightd"))).await;
                let _ = tx.flush().await;
            }
        }
    };
    if !(close.1.is_empty() && close.0 == 1001) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = tx.write_frame(Frame::close(close.0, close.1.as_bytes())).await;
            let _ = tx.flush().await;
        })
        .await;
        // Give the peer a moment to answer the close, so the socket ends cleanly.
        let mut reader = reader;
        if tokio::time::timeout(Duration::from_secs(1), &mut reader).await.is_ok() {
            return;
        }
        reader.abort();
    } else {
        reader.abort();
    }
}

/// Writes frames and flushes once; false when the peer is gone or stuck.
async fn write_all(tx: &mut Sink, frames: Vec<Vec<u8>>) -> bool {
    let write = async {
        for f in frames {
            tx.write_frame(Frame::text(Payload::Owned(f))).await?;
        }
        tx.flush().await
    };
    matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

/// The frames one hub event becomes.
fn event_frames(ev: &Event) -> Vec<Vec<u8>> {
    match ev {
        Event::Lifecycle(l) => vec![frame("event", &[l.as_str()])],
        Event::InstallOutput(line) => vec![frame("install output", &[line])],
        Event::Status(s) => vec![frame("status", &[s.as_str()]), frame("event", &[s.as_str()])],
        Event::DaemonMessage(m) => vec![frame("daemon_message", &[m])],
        Event::Stats(json) => vec![frame("stats", &[json])],
    }
}

/// A token bucket: `RATE` per second, `BURST` at most.
fn take_token(bucket: &mut (f64, Instant)) -> bool {
    let now = Instant::now();
    bucket.0 = (bucket.0 + now.duration_since(bucket.1).as_secs_f64() * RATE).min(BURST);
    bucket.1 = now;
    if bucket.0 >= 1.0 {
        bucket.0 -= 1.0;
        true
    } else {
        false
    }
}

/// An inbound message in either accepted shape: `{"event": name, "args": [..]}` or the
/// shorthand `{name: [..]}`.
fn parse(text: &str) -> Result<(String, Vec<String>), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("a message must be a JSON object")?;
    let (name, args) = match (obj.get("event"), obj.len()) {
        (Some(Value::String(name)), _) => (name.clone(), obj.get("args").cloned().unwrap_or(Value::Array(vec![]))),
        (Some(_), _) => return Err("event must be a string".into()),
        (None, 1) => {
            let (k, v) = obj.iter().next().ok_or("empty message")?;
            (k.clone(), v.clone())
        }
        (None, _) => return Err("a message needs \"event\" and \"args\"".into()),
    };
    let args = match args {
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err("every arg must be a string"),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("args must be an array of strings".into()),
    };
    Ok((name, args))
}

/// What one inbound message asks for.
enum Asked {
    /// Answered at once with this frame.
    Reply(Vec<u8>),
    /// Sent to the container's supervisor.
    Act(lifecycle::Action),
}

/// Handles one inbound message. Quick answers come back at once; actions go to the
/// supervisor in the background and answer (only on failure) through `replies`.
fn handle(app: &Arc<App>, hub: &Arc<Hub>, text: &str, replies: mpsc::Sender<Inbound>) -> Option<Vec<u8>> {
    let action = match request(app, hub, text) {
        Asked::Reply(frame) => return Some(frame),
        Asked::Act(action) => action,
    };
    let (app, id) = (Arc::clone(app), hub.id.clone());
    tokio::spawn(async move {
        if let Err(e) = lifecycle::act(&app, &id, action).await {
            let _ = replies.send(Inbound::Reply(error_frame(&e.to_string()))).await;
        }
    });
    None
}

fn request(app: &App, hub: &Hub, text: &str) -> Asked {
    let (name, args) = match parse(text) {
        Ok(m) => m,
        Err(e) => return Asked::Reply(error_frame(&e)),
    };
    let first = args.first().cloned();
    match name.as_str() {
        "request_logs" | "logs" => {
            let n = match super::console::tail_count(app, "request_logs", first.as_deref()) {
                Ok(n) => n,
                Err(e) => return Asked::Reply(error_frame(&e)),
            };
            let (_, lines) = Cursor::tail(hub.ring(), n);
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            Asked::Reply(frame("logs", &lines))
        }
        "send_command" => match first {
            Some(cmd) => Asked::Act(lifecycle::Action::Command(cmd)),
            None => Asked::Reply(error_frame("send_command needs the command as its arg")),
        },
        "power" => {
            // The console's power actions are API.md's four; suspend and resume need the API.
            let action = first.as_deref().filter(|a| ["start", "stop", "kill", "restart"].contains(a));
            match action.and_then(Action::parse) {
                Some(action) => Asked::Act(action.lifecycle()),
                None => Asked::Reply(error_frame("power takes start, stop, kill or restart")),
            }
        }
        other => Asked::Reply(error_frame(&format!("unknown event {other:?}"))),
    }
}

/// Reads frames until the peer leaves; reassembles fragments up to `MAX_INBOUND`.
async fn read_loop(
    mut rx: fastwebsockets::WebSocketRead<ReadHalf<TokioIo<Upgraded>>>,
    to_session: mpsc::Sender<Inbound>,
) {
    let mut partial: Option<Vec<u8>> = None;
    loop {
        let obligations = to_session.clone();
        let mut send = move |f: Frame<'_>| {
            let msg = Inbound::Send(f.opcode, f.payload.to_vec());
            let tx = obligations.clone();
            async move { tx.send(msg).await.map_err(|_| WebSocketError::ConnectionClosed) }
        };
        let msg = match rx.read_frame(&mut send).await {
            Err(WebSocketError::FrameTooLarge) => Inbound::TooBig,
            Err(_) => return,
            Ok(f) => match f.opcode {
                OpCode::Close => return,
                OpCode::Ping | OpCode::Pong => Inbound::Alive,
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    let buf = partial.get_or_insert_with(Vec::new);
                    buf.extend_from_slice(&f.payload);
                    if buf.len() > MAX_INBOUND {
                        Inbound::TooBig
                    } else if !f.fin {
                        continue;
                    } else {
                        let bytes = partial.take().unwrap_or_default();
                        match String::from_utf8(bytes) {
                            Ok(t) => Inbound::Text(t),
                            Err(_) => Inbound::Reply(error_frame("messages must be UTF-8 JSON text")),
                        }
                    }
                }
            },
        };
        let stop = matches!(msg, Inbound::TooBig);
        if to_session.send(msg).await.is_err() || stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_message_shapes() {
        assert_eq!(
            parse(r#"{"event":"send_command","args":["say hi"]}"#).unwrap(),
            ("send_command".into(), vec!["say hi".into()])
        );
        assert_eq!(parse(r#"{"power":["start"]}"#).unwrap(), ("power".into(), vec!["start".into()]));
        assert_eq!(parse(r#"{"event":"request_logs"}"#).unwrap(), ("request_logs".into(), vec![]));
        assert!(parse("not json").unwrap_err().contains("invalid JSON"));
        assert!(parse("[1]").is_err());
        assert!(parse(r#"{"event":5}"#).is_err());
        assert!(parse(r#"{"event":"power","args":[1]}"#).is_err());
        assert!(parse(r#"{"a":[],"b":[]}"#).is_err());
        assert!(parse(r#"{"power":"start"}"#).is_err());
    }

    #[test]
    fn frames_are_event_and_string_args() {
        let f: Value = serde_json::from_slice(&frame("console output", &["a \"quoted\" line"])).unwrap();
        assert_eq!(f, serde_json::json!({"event": "console output", "args": ["a \"quoted\" line"]}));
        let status = event_frames(&Event::Status(crate::model::PowerState::Running));
        assert_eq!(status.len(), 2);
    }

    #[test]
    fn rate_limit_allows_a_burst_then_refuses() {
        let mut bucket = (BURST, Instant::now());
        let allowed = (0..100).filter(|_| take_token(&mut bucket)).count();
        assert!((40..=42).contains(&allowed), "{allowed}");
    }
}
