//! Console handlers: `logs`, `stats`, the streaming `attach`, and `detach`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;

use super::handles::Handles;
use super::reply::{json_bytes, ok, ApiError, Reply};
use super::request::Ctx;
use super::stream::channel_body;
use super::tokens::Access;
use super::viewer::{self, Feed, Next, Wire};
use crate::console::line;
use crate::console::ring::Ring;
use crate::console::viewer::Cursor;
use crate::console::{stats, Event, ViewerKind};
use crate::journal::tail;
use crate::lifecycle::{record, FILL_WAIT};
use crate::metrics::{LocalHistogram, DELIVERY_BUCKETS};

/// A client that takes no bytes for this long is let go.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /containers/:id/logs?tail=N&before=L&source=console|install`: the newest `N` lines
/// numbered below `L`, from memory and then the journal, for running and stopped servers.
pub async fn logs(app: &Handles, ctx: &Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    record(app.sups(), id)?;
    let q = ctx.query(&["tail", "before", "source"])?;
    let n = match q.get("tail") {
        None => app.config().console.tail_lines,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= tail::MAX_LINES)
            .ok_or_else(|| ApiError::bad_request(format!("tail must be a number from 0 to {}", tail::MAX_LINES)))?,
    };
    let before = match q.get("before") {
        None => u64::MAX,
        Some(b) => b
            .parse::<u64>()
            .ok()
            .filter(|b| *b >= 1)
            .ok_or_else(|| ApiError::bad_request("before must be a line number (1 or more)"))?,
    };
    let literals: Vec<(u64, Vec<u8>)> = match q.get("source").map(String::as_str) {
        None | Some("console") => {
            let hub = app.hubs().get(id);
            hub.tty().wait_filled(FILL_WAIT).await;
            let (_, frames) = tail::console(app.journals(), &hub, n, before).await;
            frames.into_iter().map(|(num, f)| (num, line::literal(&f).to_vec())).collect()
        }
        Some("install") => tail::install(app.journals(), id, n, before).await,
        Some(_) => return Err(ApiError::bad_request("source must be console or install")),
    };
    // The lines' JSON strings are copied as they are, not re-escaped.
    let mut body = Vec::with_capacity(literals.iter().map(|l| l.1.len() + 1).sum::<usize>() + 64);
    body.extend_from_slice(br#"{"lines":["#);
    for (i, (_, lit)) in literals.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(lit);
    }
    let bound = |l: Option<&(u64, Vec<u8>)>| l.map_or("null".to_string(), |l| l.0.to_string());
    body.extend_from_slice(
        format!(r#"],"first":{},"last":{}}}"#, bound(literals.first()), bound(literals.last())).as_bytes(),
    );
    Ok(json_bytes(StatusCode::OK, Bytes::from(body)))
}

/// `GET /containers/:id/crashes`: the exits the daemon did not ask for, newest first, each
/// with the console lines before it.
pub async fn crashes(app: &Handles, ctx: &Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    record(app.sups(), id)?;
    let (journals, id) = (app.journals().clone(), id.to_string());
    let crashes = tokio::task::spawn_blocking(move || journals.crashes(&id)).await.unwrap_or_default();
    Ok(ok(&json!({ "crashes": crashes })))
}

/// How many tail lines a viewer asks for with `request_logs`: the configured tail when
/// absent, at most [`tail::MAX_LINES`].
pub fn tail_count(app: &Handles, name: &str, asked: Option<&str>) -> Result<usize, String> {
    let max = tail::MAX_LINES;
    match asked {
        None => Ok(app.config().console.tail_lines),
        Some(t) => {
            t.parse::<usize>().ok().filter(|n| *n <= max).ok_or(format!("{name} must be a number from 0 to {max}"))
        }
    }
}

/// The latest sample; asking keeps the stats stream open a little while so the next answer
/// is fresh, and waits briefly for a first sample.
pub async fn stats(app: &Arc<Handles>, ctx: &Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    let rec = record(app.sups(), id)?;
    let hub = app.hubs().get(id);
    hub.stats().lease(Instant::now() + Duration::from_secs(30));
    stats::ensure(app.store(), app.docker(), app.runtime(), &hub);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut sample = hub.stats().latest();
    while sample.is_none() && hub.stats().open.load(std::sync::atomic::Ordering::Acquire) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sample = hub.stats().latest();
    }
    let mut sample = sample.unwrap_or_default();
    sample.state = rec.state.as_str();
    if rec.state == crate::model::PowerState::Offline {
        sample =
            stats::Sample { state: sample.state, memory_limit_bytes: sample.memory_limit_bytes, ..Default::default() };
    }
    Ok(ok(&sample))
}

/// Refuses a new console session on a container that has `console.max_sessions_per_container`.
pub fn check_room(app: &Handles, hub: &crate::console::Hub) -> Result<(), ApiError> {
    let max = app.config().console.max_sessions_per_container;
    if hub.tty().sessions() >= max {
        return Err(ApiError::new(
            hyper::StatusCode::TOO_MANY_REQUESTS,
            format!("this container already has {max} console sessions (console.max_sessions_per_container)"),
        ));
    }
    Ok(())
}

pub fn detach(app: &Handles, ctx: &Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    record(app.sups(), id)?;
    let sessions = app.hubs().peek(id).map_or(0, |h| h.tty().close_sessions("detached"));
    Ok(ok(&json!({ "message": "Detached", "sessions": sessions })))
}

/// `text/plain` chunks: the tail, then live lines, plus `[lightd] ...` notes, until the
/// client leaves, `detach` is called or the container is deleted.
pub fn attach(app: &Arc<Handles>, ctx: &Ctx, access: Access) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    record(app.sups(), id)?;
    let hub = app.hubs().get(id);
    check_room(app, &hub)?;
    let token = viewer::enter(app, &access)?;
    // A session granted: the connection is admitted for good (the master token's already was).
    if let Some(slot) = &ctx.slot {
        slot.promote();
    }
    let (tx, body) = channel_body(16);
    let tail_lines = app.config().console.tail_lines;
    let guard = hub.viewer(ViewerKind::Attach);
    stats::ensure(app.store(), app.docker(), app.runtime(), &hub);
    let app = Arc::clone(app);
    crate::shutdown::detach(async move {
        let _guard = guard;
        let (token, _session) = token.unzip();
        let closed = hub.tty().closed();
        let events = hub.news().subscribe();
        hub.tty().wait_filled(FILL_WAIT).await;
        // The tail's lines go once sent: a session lasts hours, and they would stay with it.
        let (cursor, first) = {
            let (cursor, lines) = tail::console(app.journals(), &hub, tail_lines, u64::MAX).await;
            let frames: Vec<Vec<u8>> = lines.into_iter().map(|l| l.1).collect();
            (cursor, (!frames.is_empty()).then(|| join(&frames)))
        };
        if let Some(first) = first {
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
        }
        let id = hub.id.clone();
        let mut feed = Feed::new(hub, cursor, closed, events);
        let mut delivered = LocalHistogram::new(&DELIVERY_BUCKETS);
        let (mut out, mut times) = (Vec::new(), Vec::new());
        loop {
            if let Some(why) = token.as_ref().and_then(|t| viewer::token_gone(&app, t, &id)) {
                let mut note = Vec::new();
                Text::note(&mut note, why.reason());
                let _ = tokio::time::timeout(WRITE_TIMEOUT, tx.send(Ok(Bytes::from(note)))).await;
                return;
            }
            match feed.next::<Text, _>(&mut out, &mut times, tx.closed()).await {
                Next::Lines => {}
                Next::Event(Event::DaemonMessage(m) | Event::Activity(m)) => Text::note(&mut out, &m),
                Next::Event(Event::Status(s)) => Text::note(&mut out, &format!("status: {}", s.as_str())),
                Next::Event(_) | Next::Lagged(_) | Next::Tick => continue,
                Next::Closed(_) | Next::Deleted | Next::Other(()) => return,
            }
            // A client that stops reading is let go after the write deadline.
            let chunk = Bytes::from(std::mem::take(&mut out));
            tokio::select! {
                sent = tokio::time::timeout(WRITE_TIMEOUT, tx.send(Ok(chunk))) => {
                    if !matches!(sent, Ok(Ok(()))) { return }
                    observe(&app, &mut delivered, &times);
                    times.clear();
                }
                () = feed.closed() => return,
            }
        }
    });
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Records how long the lines pushed at `times` took to reach the client.
pub fn observe(app: &Handles, local: &mut LocalHistogram, times: &[u64]) {
    if times.is_empty() {
        return;
    }
    let now = line::now_nanos();
    for &t in times {
        local.observe_nanos(now.saturating_sub(t));
    }
    app.metrics().delivery.merge(local);
    local.clear();
}

/// The attach console's wire: plain text, a line each; notes as `[lightd] ...` lines.
struct Text;

impl Wire for Text {
    fn note(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(b"[lightd] ");
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }

    fn lines(cursor: &mut Cursor, ring: &Ring, max: usize, out: &mut Vec<u8>, times: &mut Vec<u64>) -> u64 {
        let batch = cursor.poll(ring, max);
        for f in &batch.lines {
            out.extend_from_slice(line::text(f).as_bytes());
            out.push(b'\n');
        }
        times.extend_from_slice(&batch.times);
        batch.skipped
    }
}

/// The text of `frames`, a line each.
fn join(frames: &[Vec<u8>]) -> Bytes {
    let mut s = String::with_capacity(frames.iter().map(|l| l.len()).sum());
    for f in frames {
        s.push_str(&line::text(f));
        s.push('\n');
    }
    Bytes::from(s)
}
