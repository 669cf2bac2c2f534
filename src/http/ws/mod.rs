//! `GET /ws/:internal_id`: the console protocol of API.md. fastwebsockets checks the
//! handshake; frames are read (`inbound.rs`) and written (`frames.rs`) by hand, so a batch of
//! lines is one buffer and one write and an idle viewer holds only a small read buffer.
//!
//! A reader task turns inbound frames into messages; the session task owns the write half and
//! selects over the ring (console lines), the hub's events, inbound messages, `detach`, a ping
//! timer and the console token's clock. Every write has a deadline: a viewer that stops
//! reading is closed, and only ever delays itself (the ring moves on; it is told how many
//! lines it missed).

mod frames;
mod inbound;
mod pending;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{broadcast, mpsc, watch};

use super::conns::Slot;
use super::reply::{ApiError, Reply};
use super::tokens::Access;
use super::viewer::{self, Feed, Next, Wire};
use crate::console::viewer::Cursor;
use crate::console::{stats, Event, Hub};
use crate::http::Handles;
use crate::journal::tail;
use crate::lifecycle::{self, record, FILL_WAIT};
use crate::metrics::{LocalHistogram, DELIVERY_BUCKETS};
use crate::model::now;
use crate::tokens::{self, SessionGuard};
use inbound::{Bucket, Inbound};
use pending::Entry;

/// The write buffer a session keeps between writes; a bigger one (the tail, a burst) is let go
/// after its write, so a thousand quiet viewers do not each hold their biggest batch.
const KEEP_BUFFER: usize = 1024;
const PING_EVERY: Duration = Duration::from_secs(10);
/// A peer silent this long (no frame, no pong) is gone, or no longer reading.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that does not finish in this time ends the session (the peer stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// An upgrade must complete within this time.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// A console token's session is warned this long before the token expires.
const EXPIRY_WARNING: u64 = 60;
/// Close code for authentication failures (4000-4999 are the application's).
const UNAUTHORIZED: u16 = 4001;

/// Upgrades the connection (the router checked what credentials came with it) and starts
/// the session. A socket with credentials takes its place among the container's viewers here;
/// one without waits for its `auth` frame holding nothing but a pending slot (`pending.rs`).
pub fn upgrade(
    app: &Arc<Handles>,
    req: Request<Incoming>,
    id: &str,
    access: Access,
    slot: Option<Arc<Slot>>,
) -> Result<Reply, ApiError> {
    let asked = Instant::now();
    let waits = matches!(access, Access::Pending);
    // Before it authenticates, a socket learns nothing, not even whether the container exists.
    match waits {
        true => lifecycle::check_id(id)?,
        false => drop(record(app.sups(), id)?),
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Err(ApiError::new(hyper::StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required"));
    }
    let mut req = req;
    let (resp, fut) = fastwebsockets::upgrade::upgrade(&mut req)
        .map_err(|e| ApiError::bad_request(format!("bad WebSocket handshake: {e}")))?;
    let entry = match access {
        Access::Pending => {
            if let Some(slot) = &slot {
                slot.wait_for_auth();
            }
            None
        }
        access => Some(pending::enter(app, id, access, slot.as_deref())?),
    };
    // The connection's slot stays taken while the session runs.
    let app = Arc::clone(app);
    let id = id.to_string();
    crate::shutdown::detach(async move {
        match tokio::time::timeout(UPGRADE_TIMEOUT, fut).await {
            Ok(Ok(ws)) => Session::run(app, id, entry, ws.into_inner(), asked, slot).await,
            Ok(Err(e)) => crate::info!("websocket upgrade failed: {e}"),
            Err(_) => crate::info!("websocket upgrade did not finish within {UPGRADE_TIMEOUT:?}"),
        }
    });
    let (parts, _) = resp.into_parts();
    Ok(hyper::Response::from_parts(parts, super::reply::full(hyper::body::Bytes::new())))
}

/// How a session ends: a close frame with this code and reason (none for a peer that left).
type Close = Option<(u16, String)>;

/// One console session.
struct Session {
    app: Arc<Handles>,
    hub: Arc<Hub>,
    wr: WriteHalf<TokioIo<Upgraded>>,
    /// Bytes waiting for the next write.
    out: Vec<u8>,
    /// The console token the session runs on (`None`: the master token).
    token: Option<crate::model::TempToken>,
    warned: bool,
    _guard: Option<SessionGuard>,
    /// When the console lines in `out` were pushed, and how long they took to go out.
    times: Vec<u64>,
    delivered: LocalHistogram,
}

/// Where a session's live phase starts: just after its tail, with what it listens to.
struct Live {
    cursor: Cursor,
    closed: watch::Receiver<Option<&'static str>>,
    events: broadcast::Receiver<Event>,
}

impl Session {
    /// `entry`: the session's place among its container's viewers, taken when the upgrade
    /// came with credentials; `None` for a socket that authenticates with its first frame (it
    /// takes its place only then). `asked`: when the upgrade request was handled, to time the
    /// tail (not for a socket that authenticates with its first frame: that wait is the
    /// peer's). Authentication, status and tail happen here, on the daemon's runtime (a
    /// thousand panels reconnecting at once get their tails on every core); the live phase
    /// then moves to the console thread, where the pump that feeds it runs.
    async fn run(
        app: Arc<Handles>,
        id: String,
        entry: Option<Entry>,
        io: TokioIo<Upgraded>,
        asked: Instant,
        slot: Option<Arc<Slot>>,
    ) {
        let (rd, mut wr) = tokio::io::split(io);
        let (in_tx, mut inbound) = mpsc::channel(64);
        // The reader runs where the live phase will, so its frames reach the session there.
        let reader = crate::console::thread::spawn(inbound::read_loop(rd, in_tx.clone()));
        let (entry, asked, greet) = match entry {
            Some(entry) => (entry, Some(asked), false),
            None => match pending::first_auth(&app, &id, &mut inbound, slot.as_deref()).await {
                Ok(entry) => (entry, None, true),
                Err(ending) => return pending::end(&mut wr, ending, reader).await,
            },
        };
        let Entry { hub, viewer, token, guard } = entry;
        let mut s = Session {
            app,
            hub,
            wr,
            out: Vec::new(),
            token,
            warned: false,
            _guard: guard,
            times: Vec::new(),
            delivered: LocalHistogram::new(&DELIVERY_BUCKETS),
        };
        if greet {
            frames::event::<&str>(&mut s.out, "auth success", &[]);
        }
        // A peer that went before its tail was written just goes.
        let begun = s.begin(asked).await;
        crate::console::thread::spawn(async move {
            // The viewer count and the connection's slot last as long as the session.
            let _held = (viewer, slot);
            let close = match begun {
                Some(live) => s.serve(&mut inbound, &in_tx, live).await,
                None => None,
            };
            s.end(close, reader).await;
        });
    }

    /// Says goodbye with `close` (if any), giving the peer a moment to answer it.
    async fn end(&mut self, close: Close, mut reader: tokio::task::JoinHandle<()>) {
        if let Some((code, reason)) = close {
            self.out.extend_from_slice(&frames::close(code, &reason));
            if self.write().await && tokio::time::timeout(Duration::from_secs(1), &mut reader).await.is_ok() {
                return;
            }
        }
        reader.abort();
    }

    /// Checks a fresh `auth` frame's token and makes it the session's; answers `auth success`.
    async fn authenticate(&mut self, presented: Option<&String>) -> Result<(), String> {
        self.token = pending::check_auth(&self.app, &self.hub.id, presented, &mut self._guard).await?;
        self.warned = false;
        frames::event::<&str>(&mut self.out, "auth success", &[]);
        Ok(())
    }

    /// Status and tail, written; `None` if the peer went.
    async fn begin(&mut self, asked: Option<Instant>) -> Option<Live> {
        let (app, hub) = (Arc::clone(&self.app), Arc::clone(&self.hub));
        stats::ensure(app.store(), app.docker(), app.runtime(), &hub);
        let closed = hub.tty().closed();
        let events = hub.news().subscribe();
        hub.tty().wait_filled(FILL_WAIT).await;
        let state = record(app.sups(), &hub.id).map(|r| r.state.as_str()).unwrap_or("offline");
        frames::event(&mut self.out, "status", &[state]);
        // The tail's copies of the lines go once framed: they would otherwise stay with the
        // session for as long as it lasts.
        let cursor = {
            let (cursor, lines) = tail::console(app.journals(), &hub, app.config().console.tail_lines, u64::MAX).await;
            let lines: Vec<Vec<u8>> = lines.into_iter().map(|l| l.1).collect();
            frames::logs(&mut self.out, &lines);
            cursor
        };
        if !self.write().await {
            return None;
        }
        if let Some(t) = asked {
            app.metrics().tail.observe(t.elapsed());
        }
        Some(Live { cursor, closed, events })
    }

    /// The live phase: everything until one side ends it.
    async fn serve(
        &mut self,
        inbound: &mut mpsc::Receiver<Inbound>,
        in_tx: &mpsc::Sender<Inbound>,
        live: Live,
    ) -> Close {
        let Live { cursor, closed, events } = live;
        let mut feed = Feed::new(Arc::clone(&self.hub), cursor, closed, events);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut last_seen = Instant::now();
        let mut bucket = Bucket::default();
        loop {
            if !self.out.is_empty() && !self.write().await {
                return None;
            }
            // One frame per line (panels built for Wings read one line per frame), all of them
            // in one write: the ring holds each line as its finished frame.
            let own = async {
                tokio::select! {
                    msg = inbound.recv() => Some(msg),
                    _ = ping.tick() => None,
                }
            };
            let msg = match feed.next::<Frames, _>(&mut self.out, &mut self.times, own).await {
                Next::Lines => continue,
                Next::Event(ev) => {
                    event_frames(&mut self.out, &ev);
                    continue;
                }
                Next::Lagged(n) => {
                    frames::event(&mut self.out, "daemon_message", &[format!("{n} events skipped")]);
                    continue;
                }
                Next::Deleted => return Some((1001, "container deleted".into())),
                Next::Closed(why) => return Some((1000, why.to_string())),
                Next::Tick => {
                    if let Some(close) = self.check_token() {
                        return Some(close);
                    }
                    continue;
                }
                Next::Other(None) => {
                    if last_seen.elapsed() > PEER_TIMEOUT {
                        return Some((1001, "ping timeout".into()));
                    }
                    frames::push(&mut self.out, frames::PING, b"lightd");
                    continue;
                }
                Next::Other(Some(msg)) => msg,
            };
            match msg {
                None => return Some((1000, String::new())),
                Some(Inbound::Alive) => last_seen = Instant::now(),
                Some(Inbound::Reply(f)) => self.out.extend_from_slice(&f),
                Some(ending @ (Inbound::TooBig | Inbound::Protocol(_) | Inbound::Invalid(_) | Inbound::Flood)) => {
                    return inbound::ending(&ending)
                }
                Some(Inbound::NotUtf8) => error(&mut self.out, "messages must be UTF-8 JSON text"),
                Some(Inbound::Send { frame, close }) => {
                    self.out.extend_from_slice(&frame);
                    if !self.write().await || close {
                        return None;
                    }
                }
                Some(Inbound::Text(text)) => {
                    last_seen = Instant::now();
                    if !bucket.take() {
                        error(&mut self.out, "rate limit exceeded: message dropped");
                        continue;
                    }
                    if let Err(why) = self.handle(&text, in_tx).await {
                        return Some((UNAUTHORIZED, why));
                    }
                }
            }
        }
    }

    /// A console token's session is warned before its token expires, and ends when it
    /// expires or is revoked (container deleted, `DELETE /auth/tokens`, master token reset).
    fn check_token(&mut self) -> Close {
        let t = self.token.as_ref()?;
        let left = t.expires_at.saturating_sub(now());
        if left > 0 && left <= EXPIRY_WARNING && !self.warned {
            self.warned = true;
            frames::event::<&str>(&mut self.out, "token expiring", &[]);
        }
        // The container's deletion closes its sessions too; whichever comes first says so.
        viewer::token_gone(&self.app, t, &self.hub.id).map(|why| match why {
            tokens::Revoked::Expired => {
                frames::event::<&str>(&mut self.out, "token expired", &[]);
                (UNAUTHORIZED, why.reason().to_string())
            }
            tokens::Revoked::ContainerDeleted => (1001, why.reason().to_string()),
            tokens::Revoked::Revoked => (UNAUTHORIZED, why.reason().to_string()),
        })
    }

    /// Writes what is waiting, within the write deadline; false when the peer is gone or stuck.
    async fn write(&mut self) -> bool {
        let out = std::mem::take(&mut self.out);
        let ok = matches!(tokio::time::timeout(WRITE_TIMEOUT, self.wr.write_all(&out)).await, Ok(Ok(())));
        self.out = out;
        self.out.clear();
        if ok {
            super::console::observe(&self.app, &mut self.delivered, &self.times);
        }
        self.times.clear();
        // A burst (the tail, a flood) leaves big buffers behind: a thousand idle viewers
        // should not each keep one.
        if self.out.capacity() > KEEP_BUFFER {
            self.out = Vec::new();
            self.times = Vec::new();
        }
        ok
    }

    /// Handles one inbound message. Quick answers go out at once; actions go to the
    /// supervisor in the background and answer (only on failure) through `replies`. An `auth`
    /// with a bad token ends the session.
    async fn handle(&mut self, text: &str, replies: &mpsc::Sender<Inbound>) -> Result<(), String> {
        let (name, args) = match inbound::parse(text) {
            Ok(m) => m,
            Err(e) => {
                error(&mut self.out, &e);
                return Ok(());
            }
        };
        let first = args.first().cloned();
        let action = match name.as_str() {
            "auth" => return self.authenticate(first.as_ref()).await,
            "request_logs" | "logs" => {
                match super::console::tail_count(&self.app, "request_logs", first.as_deref()) {
                    Ok(n) => {
                        let (_, lines) = tail::console(self.app.journals(), &self.hub, n, u64::MAX).await;
                        let lines: Vec<Vec<u8>> = lines.into_iter().map(|l| l.1).collect();
                        frames::logs(&mut self.out, &lines);
                    }
                    Err(e) => error(&mut self.out, &e),
                }
                return Ok(());
            }
            "send_command" => {
                first.map(lifecycle::Action::Command).ok_or("send_command needs the command as its arg".to_string())
            }
            // The console's power actions are API.md's four; suspend and resume need the API.
            "power" => first
                .as_deref()
                .filter(|a| ["start", "stop", "kill", "restart"].contains(a))
                .and_then(lifecycle::Action::power)
                .ok_or("power takes start, stop, kill or restart".to_string()),
            other => Err(format!("unknown event {other:?}")),
        };
        let action = match action {
            Ok(a) => a,
            Err(e) => {
                error(&mut self.out, &e);
                return Ok(());
            }
        };
        let (app, id, replies) = (Arc::clone(&self.app), self.hub.id.clone(), replies.clone());
        // The supervisor's work runs on the daemon's runtime, not the console thread.
        crate::shutdown::detach_on(self.app.runtime(), async move {
            if let Err(e) = lifecycle::act(app.sups(), &id, action).await {
                let mut frame = Vec::new();
                frames::event(&mut frame, "error", &[e.to_string()]);
                let _ = replies.send(Inbound::Reply(frame)).await;
            }
        });
        Ok(())
    }
}

/// The WebSocket console's wire: lines go as the ring holds them (a frame each), notes as
/// `daemon_message` events.
struct Frames;

impl Wire for Frames {
    fn note(out: &mut Vec<u8>, text: &str) {
        frames::event(out, "daemon_message", &[text]);
    }
}

fn error(out: &mut Vec<u8>, text: &str) {
    frames::event(out, "error", &[text]);
}

/// The frames one hub event becomes.
fn event_frames(out: &mut Vec<u8>, ev: &Event) {
    match ev {
        Event::Lifecycle(l) => frames::event(out, "event", &[l.as_str()]),
        Event::InstallOutput(line) => frames::event(out, "install output", &[line]),
        Event::Status(s) => {
            frames::event(out, "status", &[s.as_str()]);
            frames::event(out, "event", &[s.as_str()]);
        }
        Event::DaemonMessage(m) => frames::event(out, "daemon_message", &[m]),
        Event::Stats(json) => frames::event(out, "stats", &[json]),
        Event::Named(name) => frames::event(out, "event", &[name]),
        Event::Activity(text) => frames::event(out, "event", &[text]),
    }
}
