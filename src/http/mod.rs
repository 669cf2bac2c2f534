//! The only place that knows hyper's server side: accept loop, dispatch, per-request checks.

mod auth;
mod backups;
mod body_reader;
mod conns;
mod console;
mod containers;
mod deadline;
mod files;
mod firewall;
mod handles;
mod ports;
mod power;
mod reply;
mod request;
pub mod router;
mod seed_form;
mod sftp;
mod stream;
mod system;
mod tokens;
mod transfer;
mod viewer;
mod volumes;
mod ws;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use conns::{Conns, Slot};
pub use handles::{Handles, Parts};
use reply::{ApiError, Reply};
use request::Ctx;
use router::{Miss, Route};

/// A client must send its whole request head within this time (slowloris guard).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line + headers).
const MAX_HEAD: usize = 64 * 1024;
/// How long open connections get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then lets open connections finish (bounded).
pub async fn serve(app: Handles, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    // The app lives as long as the process; requests borrow it for good instead of each
    // counting a reference on a shared counter (which two cores would pass back and forth).
    let app: &'static Arc<Handles> = Box::leak(Box::new(Arc::new(app)));
    let server = &app.config().server;
    let conns = Conns::new(conns::Limits {
        max: server.max_connections,
        anonymous: server.max_anonymous_connections,
        pending: server.max_pending_sockets,
        per_ip: server.max_connections_per_ip,
    });
    let trimmer = crate::shutdown::detach(Arc::clone(&conns).trim_after_bursts());
    let alarms = deadline::Alarms::new();
    let ringer = crate::shutdown::detach(Arc::clone(&alarms).ring());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and such: back off instead of spinning.
                    crate::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let slot = match conns.admit(peer.ip()) {
            Ok(slot) => Arc::new(slot),
            Err(why) => {
                conns::refuse(stream, why);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let watched = Arc::clone(&slot);
        let service = service_fn(move |req: Request<Incoming>| respond(app, req, &slot));
        let conn = http1::Builder::new()
            // A client that sends its request and then shuts its side (`nc -N`, scripts) is
            // still answered: by default hyper dropped the connection at the EOF when it came
            // before the answer was written (tests/hostile.rs, seed 1796673627003948895).
            .half_close(true)
            .timer(alarms.timer())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEAD)
            .max_header_size(MAX_HEAD)
            .serve_connection(TokioIo::new(conns::Timed::new(stream)), service)
            .with_upgrades();
        let alarms = Arc::clone(&alarms);
        crate::shutdown::detach(async move {
            // Asked to end at shutdown: the flag is one load per wake-up, and `stop` wakes
            // every connection (an idle one through its alarm) so each sees it. An anonymous
            // connection pushed out of its pool (`conns`) is dropped, closing it.
            let mut conn = std::pin::pin!(conn);
            let mut told = false;
            let _ = std::future::poll_fn(|cx| {
                if watched.poll_shed(cx).is_ready() {
                    return Poll::Ready(Ok(()));
                }
                if !told && alarms.stopping() {
                    told = true;
                    conn.as_mut().graceful_shutdown();
                }
                conn.as_mut().poll(cx)
            })
            .await;
        });
    }
    drop(listener);
    trimmer.abort();
    // Console sessions never end by themselves: tell them why they end now, and give them a
    // moment to say goodbye to their peers.
    app.hubs().close_all("daemon shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(3), app.hubs().sessions_ended()).await;
    // Idle connections close now; a request under way gets its answer first.
    alarms.stop();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, conns.drained()).await;
    if conns.open() > 0 {
        crate::warn!("{} connection(s) did not finish within {DRAIN_TIMEOUT:?}", conns.open());
    }
    ringer.abort();
}

/// A request's answer: made in the call for the routes a panel polls, so they cost no future
/// at all; a boxed future for every other route.
pub enum Answer {
    Ready(Option<Reply>),
    Later(Pin<Box<dyn Future<Output = Reply> + Send>>),
}

impl Future for Answer {
    type Output = Result<Reply, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // Taken once; a future is never polled again after it is ready.
            Answer::Ready(reply) => reply.take().map_or(Poll::Pending, |r| Poll::Ready(Ok(r))),
            Answer::Later(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

/// Routes one request, counts it, and turns any error into its JSON reply.
fn respond(app: &'static Arc<Handles>, req: Request<Incoming>, slot: &Arc<Slot>) -> Answer {
    let started = Instant::now();
    let (index, route, params) = match router::resolve(req.method().as_str(), req.uri().path()) {
        Ok(found) => found,
        Err(miss) => return Answer::Ready(Some(finish(app, &req, None, miss_error(miss).into_reply(), started))),
    };
    if !route.is_console() && !route.is_transfer() {
        let answered = match checks(app, route, req.headers()) {
            Ok(()) => {
                // The master token: the connection is the operator's, never pushed out.
                if !route.is_public() {
                    slot.promote();
                }
                quick(app, route, &params, slot)
            }
            Err(e) => Some(Err(e)),
        };
        if let Some(reply) = answered {
            let reply = reply.unwrap_or_else(ApiError::into_reply);
            return Answer::Ready(Some(finish(app, &req, Some(index), reply, started)));
        }
    }
    // The slot follows the request, so a console session it becomes keeps it taken.
    let slot = Arc::clone(slot);
    Answer::Later(Box::pin(async move {
        let (head, body) = req.into_parts();
        let line = logged(&head.method, &head.uri);
        let ctx = Ctx { head, body: Some(body), params, slot: Some(slot) };
        let reply = answer(app, route, ctx).await.unwrap_or_else(ApiError::into_reply);
        count(app, line, Some(index), reply, started)
    }))
}

/// The request line for the debug log (the path only: a query may hold a console token).
fn logged(method: &hyper::Method, uri: &hyper::Uri) -> Option<(hyper::Method, String)> {
    crate::log::enabled(crate::log::Level::Debug).then(|| (method.clone(), uri.path().to_owned()))
}

fn finish(app: &Handles, req: &Request<Incoming>, label: Option<usize>, reply: Reply, started: Instant) -> Reply {
    count(app, logged(req.method(), req.uri()), label, reply, started)
}

/// Counts an answered request (and logs it at debug level).
fn count(
    app: &Handles,
    line: Option<(hyper::Method, String)>,
    label: Option<usize>,
    reply: Reply,
    started: Instant,
) -> Reply {
    let took = started.elapsed();
    app.metrics().record_request(label, reply.status().as_u16(), took);
    if let Some((method, path)) = line {
        crate::debug!("{method} {path} {} ({:.1} ms)", reply.status().as_u16(), took.as_secs_f64() * 1e3);
    }
    reply
}

/// The token (every route but the public ones) and the `Accept` header, for all but the
/// console routes (they authorize in `answer`).
fn checks(app: &Handles, route: Route, headers: &hyper::HeaderMap) -> Result<(), ApiError> {
    if !route.is_public() && !auth::bearer(headers).is_some_and(|given| app.tokens().is_master(given)) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Missing or invalid token (send Authorization: Bearer lightd_...; lightd --token what shows it)",
        ));
    }
    acceptable(route, headers)
}

fn miss_error(miss: Miss) -> ApiError {
    match miss {
        Miss::NotFound => ApiError::new(StatusCode::NOT_FOUND, "No such route"),
        Miss::BadPath => ApiError::bad_request("path segment is not valid percent-encoded UTF-8"),
        Miss::MethodNotAllowed(methods) => {
            let allow = methods.join(", ");
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: format!("Method not allowed here; use {allow}"),
                allow: Some(allow),
                content_range: None,
            }
        }
    }
}

/// The routes a panel polls, answered in the call from the borrowed request (`None`: any
/// other route).
fn quick(app: &Handles, route: Route, params: &[String], slot: &Slot) -> Option<Result<Reply, ApiError>> {
    let reply = match route {
        Route::Health => Ok(system::health(app)),
        Route::Ping => Ok(system::ping()),
        Route::OpenApi => Ok(system::openapi()),
        Route::Metrics => Ok(system::metrics(app, Some(slot.open_connections()))),
        Route::System => Ok(system::system(app)),
        Route::ContainerUsage => system::usage(app, params.first().map_or("", String::as_str)),
        Route::ContainerList => Ok(containers::list(app)),
        Route::ContainerGet => containers::get(app, params.first().map_or("", String::as_str)),
        _ => return None,
    };
    Some(reply)
}

/// Whether the client takes what `route` answers with.
fn acceptable(route: Route, headers: &hyper::HeaderMap) -> Result<(), ApiError> {
    let extra: &[&str] = match route {
        Route::Metrics => &["text/plain", "application/openmetrics-text"],
        Route::ContainerAttach => &["text/plain"],
        Route::FileRead => &["application/octet-stream"],
        Route::VolumeArchive => &["application/gzip", "application/x-gzip", "application/octet-stream"],
        Route::BackupDownload => {
            &["application/gzip", "application/x-gzip", "application/zstd", "application/octet-stream"]
        }
        _ => &[],
    };
    if route != Route::Ws && !auth::accept_ok(headers, extra) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "lightd answers with Application/vnd.pkglatv1+json or application/json",
        ));
    }
    Ok(())
}

/// Every route past the quick ones; consoles authorize here (the master token, or a console
/// token, or the WebSocket's first frame).
async fn answer(app: &Arc<Handles>, route: Route, ctx: Ctx) -> Result<Reply, ApiError> {
    let access = match route.is_console() {
        true => {
            let access = tokens::authorize_console(app, &ctx, route == Route::Ws).await?;
            if let (tokens::Access::Master, Some(slot)) = (&access, &ctx.slot) {
                slot.promote();
            }
            acceptable(route, &ctx.head.headers)?;
            Some(access)
        }
        false => None,
    };
    if route.is_transfer() {
        transfer::authorize(app, &ctx)?;
        acceptable(route, &ctx.head.headers)?;
    }
    match route {
        Route::VolumeList => volumes::list(app).await,
        Route::VolumeCreate => volumes::create(app, ctx).await,
        Route::VolumeGet => volumes::get(app, ctx).await,
        Route::VolumePatch => volumes::patch(app, ctx).await,
        Route::FilesList => files::list(app, ctx).await,
        Route::FileStat => files::stat(app, ctx).await,
        Route::FileRead => files::read(app, ctx).await,
        Route::FileWrite => files::write(app, ctx).await,
        Route::FileMkdir => files::mkdir(app, ctx).await,
        Route::FileRename => files::rename(app, ctx).await,
        Route::FileCopy => files::copy(app, ctx).await,
        Route::FileDelete => files::delete(app, ctx).await,
        Route::FileChmod => files::chmod(app, ctx).await,
        Route::VolumeArchive => files::archive(app, ctx).await,
        Route::VolumeExtract => files::extract(app, ctx).await,
        Route::JobGet => files::job(app, ctx).await,
        Route::JobCancel => files::cancel_job(app, ctx).await,
        Route::BackupList => backups::list(app, ctx).await,
        Route::BackupCreate => backups::create(app, ctx).await,
        Route::BackupUpload => backups::upload(app, ctx).await,
        Route::BackupGet => backups::get(app, ctx).await,
        Route::BackupDelete => backups::delete(app, ctx).await,
        Route::BackupDownload => backups::download(app, ctx).await,
        Route::BackupRestore => backups::restore(app, ctx).await,
        Route::BackupRestoreCancel => backups::cancel_restore(app, ctx).await,
        Route::SftpUserList => sftp::list(app, ctx).await,
        Route::SftpUserCreate => sftp::create(app, ctx).await,
        Route::SftpUserDelete => sftp::delete(app, ctx).await,
        Route::VolumeDelete => volumes::delete(app, ctx).await,
        Route::PortList => ports::list(app, ctx).await,
        Route::PortAdd => ports::add(app, ctx).await,
        Route::PortRandom => ports::random(app, ctx).await,
        Route::PortDelete => ports::delete(app, ctx).await,
        Route::ContainerCreate => containers::create(app, ctx).await,
        Route::ContainerDelete => containers::delete(app, ctx).await,
        Route::ContainerReinstall => containers::reinstall(app, ctx).await,
        Route::ContainerRebind => containers::rebind(app, ctx).await,
        Route::ContainerPower(action) => power::action(app, ctx, action).await,
        Route::ContainerCommand => power::command(app, ctx).await,
        Route::ContainerLogs => console::logs(app, &ctx).await,
        Route::ContainerCrashes => console::crashes(app, &ctx).await,
        Route::ContainerStats => console::stats(app, &ctx).await,
        Route::ContainerAttach => console::attach(app, &ctx, access.unwrap_or(tokens::Access::Pending)),
        Route::ContainerDetach => console::detach(app, &ctx),
        Route::FirewallGet => firewall::get(app, ctx).await,
        Route::FirewallPut => firewall::put(app, ctx).await,
        Route::FirewallDelete => firewall::delete(app, ctx).await,
        Route::TokenCreate => tokens::create(app, ctx).await,
        Route::TokenRevoke => tokens::revoke(app).await,
        Route::TransferStart => transfer::start(app, ctx).await,
        Route::TransferGet => transfer::status(app, &ctx),
        Route::TransferCancel => transfer::cancel(app, &ctx).await,
        Route::TransferPrepare => transfer::prepare(app, ctx).await,
        Route::TransferDiscard => transfer::discard(app, ctx).await,
        Route::TransferChunks => transfer::chunks(app, ctx).await,
        Route::TransferFinish => transfer::finish(app, ctx).await,
        Route::TransferBackupOffer => transfer::backup_offer(app, ctx).await,
        Route::TransferBackupPiece => transfer::backup_piece(app, ctx).await,
        Route::Ws => {
            let id = ctx.param(0).to_string();
            let Ctx { head, body, slot, .. } = ctx;
            let body = body.ok_or_else(|| ApiError::bad_request("request body already read"))?;
            let access = access.unwrap_or(tokens::Access::Pending);
            ws::upgrade(app, Request::from_parts(head, body), &id, access, slot)
        }
        // Answered by `quick` before the request was taken apart.
        Route::Health
        | Route::Ping
        | Route::OpenApi
        | Route::Metrics
        | Route::System
        | Route::ContainerList
        | Route::ContainerGet
        | Route::ContainerUsage => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "this route is answered before dispatch"))
        }
    }
}
