//! What every console viewer shares, the WebSocket session and the streaming `attach` alike:
//! the one console-token check (entering a session, and whether its token still holds it
//! open), and the live loop ([`Feed`]) that polls the viewer's cursor into the ring, notes
//! the lines it skipped, and hears the hub's events, `detach` and the token's clock. Each
//! path says in its own [`Wire`] how a line and a note are written.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::handles::Handles;
use super::reply::ApiError;
use super::tokens::Access;
use crate::console::ring::Ring;
use crate::console::viewer::Cursor;
use crate::console::{Event, Hub};
use crate::model::TempToken;
use crate::tokens::{self, Revoked, SessionGuard};

/// Lines one poll hands to a session at most (a batch is one socket write).
pub const BATCH: usize = 256;

/// The console token a session opens with, counted among its token's sessions until the
/// guard drops (`None`: the master token, not counted).
pub fn enter(app: &Handles, access: &Access) -> Result<Option<(TempToken, SessionGuard)>, ApiError> {
    match access {
        Access::Token(t) => Ok(Some((t.clone(), tokens::enter(app.tokens(), &t.token)?))),
        _ => Ok(None),
    }
}

/// Why console token `t` no longer holds a session on container `id` open (expired, revoked,
/// or its container deleted); `None` while it does.
pub fn token_gone(app: &Handles, t: &TempToken, id: &str) -> Option<Revoked> {
    tokens::gone(app.tokens(), t, id)
}

/// How a viewer's connection writes what its feed gives it.
pub trait Wire {
    /// Appends a note from the daemon (`N lines skipped`, a daemon message).
    fn note(out: &mut Vec<u8>, text: &str);

    /// Appends up to `max` of the lines `cursor` has not read from `ring`, their push times to
    /// `times`; returns how many lines were lost to lapping. By default the lines go as the
    /// ring holds them (finished WebSocket frames).
    fn lines(cursor: &mut Cursor, ring: &Ring, max: usize, out: &mut Vec<u8>, times: &mut Vec<u64>) -> u64 {
        cursor.poll_into(ring, max, out, times, |_, _| {})
    }
}

/// What woke a viewer's feed.
pub enum Next<T> {
    /// New lines (after a note of those skipped, if any) were appended: write them.
    Lines,
    /// An event of the container's.
    Event(Event),
    /// This many events were lost to a slow reader.
    Lagged(u64),
    /// The container's sessions were closed, for this reason (`detach`, shutdown).
    Closed(&'static str),
    /// The container's channel ended.
    Deleted,
    /// A second passed: time to look at the session's token.
    Tick,
    /// What the caller's own future gave.
    Other(T),
}

/// A viewer's live phase: its cursor into the hub's ring, and what it listens to.
pub struct Feed {
    hub: Arc<Hub>,
    cursor: Cursor,
    closed: watch::Receiver<Option<&'static str>>,
    events: broadcast::Receiver<Event>,
    tick: tokio::time::Interval,
}

impl Feed {
    /// Starts just after the tail that `cursor` was taken with; `closed` and `events` were
    /// subscribed before the tail, so nothing between them is missed.
    pub fn new(
        hub: Arc<Hub>,
        cursor: Cursor,
        closed: watch::Receiver<Option<&'static str>>,
        events: broadcast::Receiver<Event>,
    ) -> Feed {
        Feed { hub, cursor, closed, events, tick: tokio::time::interval(Duration::from_secs(1)) }
    }

    /// Waits for the next thing to write or handle: new lines (appended to `out` as `W` writes
    /// them), an event, the end of the sessions, a second's tick, or `other`.
    pub async fn next<W: Wire, T>(
        &mut self,
        out: &mut Vec<u8>,
        times: &mut Vec<u64>,
        other: impl Future<Output = T>,
    ) -> Next<T> {
        tokio::pin!(other);
        loop {
            let woken = self.hub.tty().wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let mark = out.len();
            let skipped = W::lines(&mut self.cursor, self.hub.tty().ring(), BATCH, out, times);
            if skipped > 0 {
                // The note goes before the batch's lines, where the gap is.
                let mut note = Vec::new();
                W::note(&mut note, &format!("{skipped} lines skipped"));
                out.splice(mark..mark, note);
            }
            if out.len() > mark {
                return Next::Lines;
            }
            tokio::select! {
                _ = &mut woken => {}
                ev = self.events.recv() => return match ev {
                    Ok(ev) => Next::Event(ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => Next::Lagged(n),
                    Err(broadcast::error::RecvError::Closed) => Next::Deleted,
                },
                _ = self.closed.changed() => return Next::Closed(self.closed.borrow().unwrap_or("closed")),
                _ = self.tick.tick() => return Next::Tick,
                t = &mut other => return Next::Other(t),
            }
        }
    }

    /// Resolves when the container's sessions are closed (to give up a write).
    pub async fn closed(&mut self) {
        let _ = self.closed.changed().await;
    }
}
