//! A console socket's way in. One that came with credentials takes its place among its
//! container's viewers at once ([`enter`]). One opened without them waits for its `auth`
//! frame ([`first_auth`]) holding only its pending slot: no hub, no viewer place, nothing kept
//! per id; at most [`AUTH_WAIT`], and pushed out first when too many wait
//! (`server.max_pending_sockets`). Only once authenticated does it look the container up (on
//! record) and take its place, so sockets that never authenticate keep no viewer out.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::super::conns::Slot;
use super::super::reply::ApiError;
use super::super::tokens::{self as auth, Access};
use super::super::viewer;
use super::inbound::{self, Inbound};
use super::{frames, Close, UNAUTHORIZED, WRITE_TIMEOUT};
use crate::console::{Hub, ViewerGuard, ViewerKind};
use crate::http::Handles;
use crate::lifecycle::record;
use crate::model::TempToken;
use crate::tokens::SessionGuard;

/// A socket opened without a token must send its `auth` frame within this time.
pub const AUTH_WAIT: Duration = Duration::from_secs(5);
/// Close code for "come back later": pushed out while waiting, or the container is full.
const TRY_AGAIN: u16 = 1013;

/// A session's place: its container's hub, its count among the viewers, and what it
/// authenticated with.
pub struct Entry {
    pub hub: Arc<Hub>,
    pub viewer: ViewerGuard,
    /// The console token (`None`: the master token).
    pub token: Option<TempToken>,
    pub guard: Option<SessionGuard>,
}

/// How a socket that never became a session ends: frames before its close (`auth success`
/// for a token that was good), its close frame, and whether the peer gets a moment to answer
/// it (not one pushed out by a flood: it just goes).
pub struct Ending {
    pub before: Vec<u8>,
    pub close: Close,
    pub linger: bool,
}

impl Ending {
    fn with(code: u16, reason: impl Into<String>) -> Ending {
        Ending { before: Vec::new(), close: Some((code, reason.into())), linger: true }
    }

    /// The peer learns its token was good before it learns why it cannot stay.
    fn after_auth(mut self) -> Ending {
        frames::event::<&str>(&mut self.before, "auth success", &[]);
        self
    }
}

/// The place of a socket that came with credentials, on container `id` (on record).
pub fn enter(app: &Arc<Handles>, id: &str, access: Access, slot: Option<&Slot>) -> Result<Entry, ApiError> {
    let (token, guard) = viewer::enter(app, &access)?.unzip();
    place(app, id, token, guard, slot)
}

/// Takes a viewer's place on container `id` (on record): `429` when it has
/// `console.max_sessions_per_container`. The connection is then admitted for good.
fn place(
    app: &Arc<Handles>,
    id: &str,
    token: Option<TempToken>,
    guard: Option<SessionGuard>,
    slot: Option<&Slot>,
) -> Result<Entry, ApiError> {
    let hub = app.hubs().get(id);
    super::super::console::check_room(app, &hub)?;
    let viewer = hub.viewer(ViewerKind::Ws);
    if let Some(slot) = slot {
        slot.promote();
    }
    Ok(Entry { hub, viewer, token, guard })
}

/// A socket opened without a token: its first frame must be `auth` with a valid token, within
/// [`AUTH_WAIT`], before it is pushed out of the pending pool; then it takes its place.
pub async fn first_auth(
    app: &Arc<Handles>,
    id: &str,
    inbound: &mut mpsc::Receiver<Inbound>,
    slot: Option<&Slot>,
) -> Result<Entry, Ending> {
    let refused = |why: &str| Ending::with(UNAUTHORIZED, why);
    let shed = async {
        match slot {
            Some(slot) => slot.shed().await,
            None => std::future::pending().await,
        }
    };
    let first = tokio::select! {
        first = tokio::time::timeout(AUTH_WAIT, inbound.recv()) => first,
        () = shed => {
            let why = "too many sockets waiting to authenticate (server.max_pending_sockets); try again";
            return Err(Ending { before: Vec::new(), close: Some((TRY_AGAIN, why.into())), linger: false });
        }
    };
    let text = match first {
        Err(_) => {
            return Err(refused("authentication required: send {\"event\":\"auth\",\"args\":[token]} within 5 s"))
        }
        Ok(None) => return Err(Ending { before: Vec::new(), close: None, linger: false }),
        Ok(Some(Inbound::Text(t))) => t,
        // A broken frame is answered as it would be in a session (1002, 1007, 1008, 1009).
        Ok(Some(msg)) => {
            return Err(inbound::ending(&msg).map_or_else(
                || refused("authentication required: the first message must be auth"),
                |(code, why)| Ending::with(code, why),
            ))
        }
    };
    let args = match inbound::parse(&text) {
        Ok((name, args)) if name == "auth" => args,
        _ => return Err(refused("authentication required: the first message must be auth")),
    };
    let mut guard = None;
    let token = check_auth(app, id, args.first(), &mut guard).await.map_err(|why| refused(&why))?;
    if record(app.sups(), id).is_err() {
        return Err(Ending::with(4004, "Container not found").after_auth());
    }
    place(app, id, token, guard, slot).map_err(|e| Ending::with(TRY_AGAIN, e.message).after_auth())
}

/// What an `auth` frame's token opens on container `id`: the console token (`None`: the
/// master token); a console token's session is counted under it once (`guard`).
pub async fn check_auth(
    app: &Arc<Handles>,
    id: &str,
    presented: Option<&String>,
    guard: &mut Option<SessionGuard>,
) -> Result<Option<TempToken>, String> {
    let presented = presented.ok_or("auth needs the token as its arg")?;
    let access = auth::check(app, presented, id).await.map_err(|e| e.message)?;
    let Access::Token(t) = &access else { return Ok(None) };
    if guard.is_none() {
        *guard = viewer::enter(app, &access).map_err(|e| e.message)?.map(|(_, g)| g);
    }
    Ok(Some(t.clone()))
}

/// Says goodbye to a socket that never became a session.
pub async fn end(wr: &mut WriteHalf<TokioIo<Upgraded>>, ending: Ending, mut reader: JoinHandle<()>) {
    if let Some((code, reason)) = ending.close {
        let wait = if ending.linger { WRITE_TIMEOUT } else { Duration::from_secs(1) };
        let mut out = ending.before;
        out.extend_from_slice(&frames::close(code, &reason));
        let sent = matches!(tokio::time::timeout(wait, wr.write_all(&out)).await, Ok(Ok(())));
        if sent && ending.linger && tokio::time::timeout(Duration::from_secs(1), &mut reader).await.is_ok() {
            return;
        }
    }
    reader.abort();
}
