//! A console viewer that can keep up with a daemon on the same two cores: a raw WebSocket
//! client that reads frame headers, takes the line number and the container's timestamp out
//! of each `console output` frame without decoding its JSON, answers pings, and tallies into
//! a fixed histogram. And the seed's way beside it: a Docker `logs --follow` stream per viewer.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Seconds on the wall clock (the container's `$EPOCHREALTIME` is on the same clock).
pub fn wall() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A latency histogram of 0.1 ms buckets up to 10 s (log-spaced past 10 ms).
#[derive(Clone)]
pub struct Hist {
    buckets: Vec<u64>,
    pub count: u64,
}

const LINEAR: usize = 100; // 0.1 ms steps to 10 ms
const LOG: usize = 200; // then 10 ms * 1.025^k

impl Default for Hist {
    fn default() -> Self {
        Hist { buckets: vec![0; LINEAR + LOG], count: 0 }
    }
}

impl Hist {
    pub fn add(&mut self, ms: f64) {
        let ms = ms.max(0.0);
        let i = if ms < 10.0 {
            (ms * 10.0) as usize
        } else {
            (LINEAR + ((ms / 10.0).ln() / 1.025f64.ln()) as usize).min(LINEAR + LOG - 1)
        };
        self.buckets[i] += 1;
        self.count += 1;
    }

    pub fn merge(&mut self, o: &Hist) {
        self.buckets.iter_mut().zip(&o.buckets).for_each(|(a, b)| *a += b);
        self.count += o.count;
    }

    fn upper(i: usize) -> f64 {
        if i < LINEAR {
            (i + 1) as f64 / 10.0
        } else {
            10.0 * 1.025f64.powi((i - LINEAR + 1) as i32)
        }
    }

    /// The `p` (0-100) percentile in ms (the upper bound of its bucket).
    pub fn pct(&self, p: f64) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        let want = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Hist::upper(i);
            }
        }
        f64::INFINITY
    }
}

/// What a group of viewers saw.
#[derive(Default)]
pub struct Tally {
    pub lines: AtomicU64,
    /// Lines missing between consecutive numbers one viewer saw.
    pub lost: AtomicU64,
    /// Lines the daemon said it skipped for a viewer that fell behind.
    pub skipped: AtomicU64,
    pub latency: Mutex<Hist>,
}

impl Tally {
    pub fn take(&self) -> (u64, u64, u64, Hist) {
        let h = std::mem::take(&mut *self.latency.lock().unwrap());
        (self.lines.swap(0, Relaxed), self.lost.swap(0, Relaxed), self.skipped.swap(0, Relaxed), h)
    }
}

/// One viewer's running count; folded into a [`Tally`] now and then.
struct Local {
    prev: u64,
    lines: u64,
    lost: u64,
    hist: Hist,
}

impl Local {
    /// A console line `<n> <epoch seconds>`.
    fn line(&mut self, text: &[u8]) {
        let mut parts = text.split(|b| *b == b' ');
        let n = parts.next().and_then(|x| std::str::from_utf8(x).ok()?.parse::<u64>().ok());
        // The time runs up to the line's end (or the closing quote inside a frame).
        let t = parts.next().and_then(|x| {
            let end = x.iter().position(|b| !(b.is_ascii_digit() || *b == b'.')).unwrap_or(x.len());
            std::str::from_utf8(&x[..end]).ok()?.parse::<f64>().ok()
        });
        let Some(n) = n else {
            // Not a numbered line (a real game server's output): counted, not timed.
            self.lines += 1;
            return;
        };
        if self.prev > 0 && n > self.prev + 1 {
            self.lost += n - self.prev - 1;
        }
        self.prev = self.prev.max(n);
        self.lines += 1;
        if let Some(t) = t {
            self.hist.add((wall() - t) * 1000.0);
        }
    }

    fn flush(&mut self, tally: &Tally) {
        tally.lines.fetch_add(std::mem::take(&mut self.lines), Relaxed);
        tally.lost.fetch_add(std::mem::take(&mut self.lost), Relaxed);
        tally.latency.lock().unwrap().merge(&self.hist);
        self.hist = Hist::default();
    }
}

const OUTPUT: &[u8] = br#"{"event":"console output","args":[""#;
const LOGS: &[u8] = br#"{"event":"logs","args":["#;
const SKIPPED: &[u8] = br#"{"event":"daemon_message","args":[""#;

/// An open console socket.
pub struct Viewer {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Line number of the tail's last line.
    pub tail_last: u64,
}

impl Viewer {
    /// Opens `/ws/<id>` and reads up to the `logs` frame (the tail); returns the viewer and
    /// the time from sending the upgrade to having the whole tail.
    pub async fn connect(port: u16, id: &str, token: &str) -> (Viewer, Duration) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let t = Instant::now();
        let req = format!(
            "GET /ws/{id}?token={token} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut v = Viewer { stream, buf: Vec::with_capacity(8192), tail_last: 0 };
        loop {
            if let Some(end) = v.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(v.buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&v.buf));
                v.buf.drain(..end + 4);
                break;
            }
            v.fill().await.expect("handshake");
        }
        loop {
            let (op, payload) = v.frame().await.expect("tail");
            if op == 0x1 && payload.starts_with(LOGS) {
                v.tail_last = last_number(&payload);
                return (v, t.elapsed());
            }
        }
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.ok()?;
        (n > 0).then(|| self.buf.extend_from_slice(&chunk[..n]))
    }

    /// The next frame (opcode, payload); pings are answered on the way.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((op, start, len)) = header(&self.buf) {
                if self.buf.len() >= start + len {
                    let payload = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    if op == 0x9 {
                        // A pong, masked with a zero key as a client must mask.
                        let mut pong = vec![0x8A, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                        pong.extend_from_slice(&payload);
                        self.stream.write_all(&pong).await.ok()?;
                        continue;
                    }
                    return Some((op, payload));
                }
            }
            self.fill().await?;
        }
    }

    /// Reads until `until`, tallying every console line read from `from` on (what was queued
    /// before is drained, not counted); flushes into `tally` each second.
    pub async fn read(mut self, from: Instant, until: Instant, tally: Arc<Tally>) -> Viewer {
        let mut local = Local { prev: self.tail_last, lines: 0, lost: 0, hist: Hist::default() };
        let mut flushed = Instant::now();
        while Instant::now() < until {
            let Ok(Some((op, payload))) = tokio::time::timeout_at(until.into(), self.frame()).await else { break };
            if op == 0x8 {
                break;
            }
            if let Some(rest) = payload.strip_prefix(OUTPUT) {
                if Instant::now() < from {
                    local.prev = local.prev.max(first_number(rest));
                    continue;
                }
                local.line(rest);
            } else if let Some(rest) = payload.strip_prefix(SKIPPED) {
                let n: u64 = std::str::from_utf8(rest.split(|b| *b == b' ').next().unwrap_or(b"0"))
                    .ok()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
                tally.skipped.fetch_add(n, Relaxed);
                local.prev = 0; // the next line starts a new run
            }
            if flushed.elapsed() > Duration::from_secs(1) {
                local.flush(&tally);
                flushed = Instant::now();
            }
        }
        local.flush(&tally);
        self.tail_last = local.prev;
        self
    }
}

/// A server frame's (opcode, payload start, payload length), once the header is complete.
fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
    let op = b.first()? & 0x0f;
    match b.get(1)? & 0x7f {
        126 => Some((op, 4, u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize)),
        127 => Some((op, 10, u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize)),
        n => Some((op, 2, n as usize)),
    }
}

fn first_number(text: &[u8]) -> u64 {
    std::str::from_utf8(text.split(|b| *b == b' ').next().unwrap_or(b"")).ok().and_then(|x| x.parse().ok()).unwrap_or(0)
}

/// The number of the last `"<n> ..."` string in a `logs` frame.
fn last_number(payload: &[u8]) -> u64 {
    let Some(q) = payload.windows(3).rposition(|w| w == b",\"" || w == b"[\"").map(|i| i + 2) else {
        return 0;
    };
    let q = if payload[q - 1] == b'"' { q } else { q + 1 };
    std::str::from_utf8(&payload[q..]).ok().and_then(|s| s.split(' ').next()?.parse().ok()).unwrap_or(0)
}

/// The seed's way: one Docker `logs --follow` stream read straight from the engine.
pub async fn docker_follow(container: String, until: Instant, tally: Arc<Tally>) {
    let req = format!(
        "GET /v1.41/containers/{container}/logs?follow=1&stdout=1&stderr=1&tail=0 HTTP/1.1\r\nHost: docker\r\n\r\n"
    );
    engine_stream(req, true, until, tally).await
}

/// What reaches the daemon: a Docker attach stream (the kind the daemon holds, one per server)
/// read straight from the engine, its lines timed as a viewer's are.
pub async fn docker_attach(container: String, until: Instant, tally: Arc<Tally>) {
    let req = format!(
        "POST /v1.41/containers/{container}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: docker\r\n\
         Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    );
    engine_stream(req, false, until, tally).await
}

/// Sends `req` to the engine and tallies the lines of the 8-byte-header frames it answers
/// with until `until`: inside chunked transfer (`logs`) or raw after `101 UPGRADED` (`attach`).
async fn engine_stream(req: String, chunked: bool, until: Instant, tally: Arc<Tally>) {
    let mut s = UnixStream::connect("/var/run/docker.sock").await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    let mut local = Local { prev: 0, lines: 0, lost: 0, hist: Hist::default() };
    let mut body = false;
    let mut pending = Vec::new();
    let mut flushed = Instant::now();
    while Instant::now() < until {
        let Ok(Ok(n)) = tokio::time::timeout_at(until.into(), s.read(&mut chunk)).await else { break };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !body {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let status = if chunked { "HTTP/1.1 200" } else { "HTTP/1.1 101" };
            assert!(buf.starts_with(status.as_bytes()), "engine: {}", String::from_utf8_lossy(&buf[..end]));
            buf.drain(..end + 4);
            body = true;
        }
        if chunked {
            // Take the chunk sizes out first.
            let mut pos = 0;
            while let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") {
                let size = usize::from_str_radix(std::str::from_utf8(&buf[pos..pos + eol]).unwrap_or("0").trim(), 16)
                    .unwrap_or(0);
                if buf.len() < pos + eol + 2 + size + 2 {
                    break;
                }
                pending.extend_from_slice(&buf[pos + eol + 2..pos + eol + 2 + size]);
                pos += eol + 2 + size + 2;
            }
            buf.drain(..pos);
        } else {
            pending.append(&mut buf);
        }
        frames_into(&mut pending, &mut local);
        if flushed.elapsed() > Duration::from_secs(1) {
            local.flush(&tally);
            flushed = Instant::now();
        }
    }
    local.flush(&tally);
}

/// Docker's 8-byte-header stream frames gathered in `pending` (a frame may span reads),
/// each line tallied.
fn frames_into(pending: &mut Vec<u8>, local: &mut Local) {
    let mut pos = 0;
    while pending.len() >= pos + 8 {
        let size =
            u32::from_be_bytes([pending[pos + 4], pending[pos + 5], pending[pos + 6], pending[pos + 7]]) as usize;
        if pending.len() < pos + 8 + size {
            break;
        }
        for line in pending[pos + 8..pos + 8 + size].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            local.line(line);
        }
        pos += 8 + size;
    }
    pending.drain(..pos);
}

/// The seed's tail: a Docker `logs?tail=100` call; returns its time.
pub async fn docker_tail(container: &str) -> Duration {
    let t = Instant::now();
    let mut s = UnixStream::connect("/var/run/docker.sock").await.unwrap();
    let req = format!(
        "GET /v1.41/containers/{container}/logs?stdout=1&stderr=1&tail=100 HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(out.len() > 100);
    t.elapsed()
}
