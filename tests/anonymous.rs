//! Anonymous peers (anyone who can reach the port, no token) cannot exhaust the node: what
//! they hold is bounded and freed, pending WebSockets are nobody's viewers, and the operator
//! always gets in. And a client's close frame is checked like any other frame.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::ws::{self, connect, next, next_event};
use common::{require_docker, seed, wait_for, Daemon, Rng, TOKEN};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The daemon's resident memory in bytes (`VmRSS` of `/proc/<pid>/status`).
fn rss(d: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).expect("the daemon's status");
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS");
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().expect("VmRSS in kB") * 1024
}

/// Reads one HTTP response (head and `content-length` body) off a keep-alive connection;
/// returns its status.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> u16 {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                .map_or(0, |(_, v)| v.trim().parse().expect("content-length"));
            if buf.len() >= end + 4 + len {
                buf.drain(..end + 4 + len);
                return head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status");
            }
        }
        let n = s.read(&mut chunk).expect("a response");
        assert!(n > 0, "the daemon closed a keep-alive connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// 40,000 unauthenticated WebSocket upgrades of made-up ids (no key, so each is answered on a
/// connection kept alive) leave the daemon's memory where it was: no hub, nothing per id.
#[test]
fn upgrades_of_made_up_ids_cost_no_memory() {
    let d = Daemon::start();
    let port = d.port;
    let flood = |n: usize, seed: u64| {
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut buf = Vec::new();
                    for _ in 0..n / 4 {
                        let id = format!("{:016x}{:016x}", rng.next(), rng.next());
                        let req = format!(
                            "GET /ws/{id} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                             Sec-WebSocket-Version: 13\r\n\r\n"
                        );
                        s.write_all(req.as_bytes()).expect("send");
                        assert_eq!(read_response(&mut s, &mut buf), 400, "a handshake without a key is refused");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a flooding thread");
        }
    };
    // The daemon's own buffers warm up first.
    flood(400, seed("made-up-warm-up"));
    let before = rss(&d);
    flood(40_000, seed("made-up-ids"));
    let after = rss(&d);
    eprintln!("RSS {} -> {} KiB", before / 1024, after / 1024);
    assert!(after <= before + 8 * 1024 * 1024, "RSS grew from {} to {} KiB", before / 1024, after / 1024);
    assert_eq!(d.get("/health").status, 200, "still serving");
}

/// With 10,000 idle unauthenticated connections open from 25 addresses (400 each, under the
/// per-address cap, together past `server.max_connections`, 8192), the operator's request with the
/// master token is served, and the flood holds no more than its pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_gets_in_past_any_number_of_idle_connections() {
    let d = Daemon::start();
    let addr: SocketAddr = format!("127.0.0.1:{}", d.port).parse().unwrap();
    let mut held = Vec::with_capacity(10_000);
    for a in 0..25u8 {
        let opened = (0..400).map(|_| async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::from(([127, 0, 0, 2 + a], 0))).unwrap();
            s.connect(addr).await.expect("connect")
        });
        held.extend(futures_util::future::join_all(opened).await);
    }
    // At once: idle connections are closed after 10 s, which would free their slots.
    let r = tokio::task::spawn_blocking({
        let port = d.port;
        move || {
            common::raw(
                port,
                format!(
                    "GET /containers HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                )
                .as_bytes(),
            )
        }
    })
    .await
    .unwrap()
    .expect("the operator's request is answered");
    assert_eq!(r.status, 200, "{}", r.body);
    // Shed connections close as soon as their tasks see it.
    let holds = || d.metric("lightd_connections").filter(|open| *open <= 4096 + 2);
    wait_for(3, "the flood to hold at most server.max_anonymous_connections (4096)", holds);
    drop(held);
}

/// Sockets waiting for their `auth` frame are nobody's viewers: with as many of them open as
/// the container takes viewers, an authenticated viewer still gets in; each takes its place
/// only once it authenticates, and is refused (1013) when there is none left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_sockets_are_not_viewers() {
    require_docker();
    let d = Daemon::start_with(|c| c["console"]["max_sessions_per_container"] = json!(3));
    let id = d.ready_container("v", "sleep 1000", json!({}));
    let path = format!("/ws/{id}");
    let mut pending = Vec::new();
    for _ in 0..3 {
        pending.push(connect(d.port, &path, None).await.expect("upgraded without a token"));
    }
    // The server side of each has started (on the old code it would now be counted).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut viewer = match connect(d.port, &path, Some(TOKEN)).await {
        Ok(ws) => ws,
        Err(e) => panic!("the authenticated viewer was refused with {}", ws::refused_status(Err(e))),
    };
    next_event(&mut viewer, "status").await;
    let viewers = || d.metric(&format!("lightd_viewers{{container=\"{id}\",kind=\"ws\"}}")).unwrap_or(0);
    assert_eq!(viewers(), 1, "waiting sockets are not viewers");
    let auth = Message::Text(json!({"event": "auth", "args": [TOKEN]}).to_string());
    for p in &mut pending[..2] {
        p.send(auth.clone()).await.unwrap();
        assert_eq!(next(p).await["event"], "auth success");
    }
    assert_eq!(viewers(), 3);
    let last = &mut pending[2];
    last.send(auth).await.unwrap();
    assert_eq!(next(last).await["event"], "auth success", "the token was good");
    let close = ws::closed(last, 10).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1013, "{close:?}");
    assert!(close.reason.contains("max_sessions_per_container"), "{close:?}");
    assert_eq!(viewers(), 3);
}

/// Sockets waiting for their `auth` frame have a pool of their own: past
/// `server.max_pending_sockets` the oldest is closed (1013), the others wait on; made-up ids
/// are learned of only after authenticating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_sockets_push_out_their_oldest() {
    let d = Daemon::start_with(|c| c["server"]["max_pending_sockets"] = json!(2));
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(connect(d.port, &format!("/ws/made-up-{i}"), None).await.expect("upgraded without a token"));
    }
    let close = ws::closed(&mut waiting[0], 10).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1013, "{close:?}");
    assert!(close.reason.contains("server.max_pending_sockets"), "{close:?}");
    for w in &mut waiting[1..] {
        w.send(Message::Text(json!({"event": "auth", "args": [TOKEN]}).to_string())).await.unwrap();
        assert_eq!(next(w).await["event"], "auth success", "still waiting, not pushed out");
        let close = ws::closed(w, 10).await.expect("a close frame");
        assert_eq!((u16::from(close.code), &*close.reason), (4004, "Container not found"));
    }
}

/// A WebSocket opened by hand on a blocking socket: the handshake, then raw frames.
struct RawWs(TcpStream);

impl RawWs {
    fn open(port: u16, path: &str, bearer: Option<&str>) -> RawWs {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{auth}\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).expect("the handshake answer");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        RawWs(s)
    }

    /// Sends one masked frame.
    fn send(&mut self, opcode: u8, payload: &[u8]) {
        assert!(payload.len() <= 125);
        let mask = [7u8, 1, 2, 9];
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&f).unwrap();
    }

    /// Reads frames until the server's close; its code and reason.
    fn close_frame(&mut self) -> (u16, String) {
        loop {
            let mut h = [0u8; 2];
            self.0.read_exact(&mut h).expect("a frame before the socket closes");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    self.0.read_exact(&mut l).unwrap();
                    u64::from(u16::from_be_bytes(l))
                }
                127 => {
                    let mut l = [0u8; 8];
                    self.0.read_exact(&mut l).unwrap();
                    u64::from_be_bytes(l)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.0.read_exact(&mut payload).unwrap();
            if h[0] & 0x0f == 0x8 {
                assert!(payload.len() >= 2, "a close frame with a code: {payload:?}");
                return (u16::from_be_bytes([payload[0], payload[1]]), String::from_utf8_lossy(&payload[2..]).into());
            }
        }
    }
}

/// A close frame whose code may not be sent (1005, 999) gets a protocol error (1002) back, one
/// whose reason is not UTF-8 gets 1007; in a live session and before authentication alike.
#[test]
fn close_frames_are_checked() {
    require_docker();
    let d = Daemon::start();
    let id = d.ready_container("c", "sleep 1000", json!({}));
    let path = format!("/ws/{id}");
    for (payload, want) in [
        (1005u16.to_be_bytes().to_vec(), 1002),
        (999u16.to_be_bytes().to_vec(), 1002),
        (vec![0x03, 0xe8, b'o', 0xff], 1007),
    ] {
        for bearer in [Some(TOKEN), None] {
            let mut s = RawWs::open(d.port, &path, bearer);
            s.send(0x8, &payload);
            let (code, reason) = s.close_frame();
            assert_eq!(code, want, "{payload:?} (token: {}): {reason}", bearer.is_some());
        }
    }
    // A valid close is echoed.
    let mut s = RawWs::open(d.port, &path, Some(TOKEN));
    s.send(0x8, &[0x03, 0xe8, b'b', b'y', b'e']);
    assert_eq!(s.close_frame().0, 1000);
}
