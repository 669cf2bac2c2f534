//! The only place that knows hyper's server side: accept loop, dispatch, per-request checks.

mod auth;
mod backups;
mod conns;
mod console;
mod containers;
mod files;
mod ports;
mod power;
mod reply;
mod request;
pub mod router;
mod seed_form;
mod stream;
mod system;
mod tokens;
mod volumes;
mod ws;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
pub use auth::bearer_matches;
use conns::{Conns, Slot};
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
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    // The app lives as long as the process; requests borrow it for good instead of each
    // counting a reference on a shared counter (which two cores would pass back and forth).
    let app: &'static Arc<App> = Box::leak(Box::new(app));
    // Each connection holds a receiver; `closed()` resolves when the last one is gone.
    let (stop, stopped) = watch::channel(false);
    let conns = Conns::new(app.config.server.max_connections, app.config.server.max_connections_per_ip);
    let trimmer = tokio::spawn(Arc::clone(&conns).trim_after_bursts());
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
        let service = service_fn(move |req: Request<Incoming>| {
            // The slot follows the request, so a console session it becomes keeps it taken.
            let slot = Arc::clone(&slot);
            async move { Ok::<_, Infallible>(handle(app, req, slot).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEAD)
            .max_header_size(MAX_HEAD)
            .serve_connection(TokioIo::new(conns::Timed::new(stream)), service)
            .with_upgrades();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopped.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    trimmer.abort();
    // Console sessions never end by themselves: tell them why they end now, and give them a
    // moment to say goodbye to their peers.
    app.hubs.close_all("daemon shutting down");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while app.hubs.sessions() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stopped);
    let _ = stop.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, stop.closed()).await.is_err() {
        crate::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
}

/// Routes one request, counts it, and turns any error into its JSON reply.
pub async fn handle(app: &'static Arc<App>, req: Request<Incoming>, slot: Arc<Slot>) -> Reply {
    let started = std::time::Instant::now();
    let (head, body) = req.into_parts();
    // The request line for the debug log (the path only: a query may hold a console token).
    let logged =
        crate::log::enabled(crate::log::Level::Debug).then(|| (head.method.clone(), head.uri.path().to_owned()));
    let (label, reply) = match router::resolve(head.method.as_str(), head.uri.path()) {
        Ok((index, route, params)) => {
            let ctx = Ctx { head, body: Some(body), params, slot: Some(slot) };
            let reply = dispatch(app, route, ctx).await.unwrap_or_else(ApiError::into_reply);
            (Some(index), reply)
        }
        Err(miss) => (None, miss_error(miss).into_reply()),
    };
    let took = started.elapsed();
    app.metrics.record_request(label, reply.status().as_u16(), took);
    if let Some((method, path)) = logged {
        crate::debug!("{method} {path} {} ({:.1} ms)", reply.status().as_u16(), took.as_secs_f64() * 1e3);
    }
    reply
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

async fn dispatch(app: &Arc<App>, route: Route, ctx: Ctx) -> Result<Reply, ApiError> {
    if route.is_console() {
        return Box::pin(answer(app, route, ctx)).await;
    }
    if !route.is_public() && !app.master.with(|t| auth::bearer_matches(&ctx.head.headers, t)) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Missing or invalid token (send Authorization: Bearer lightd_...; lightd --token what shows it)",
        ));
    }
    acceptable(route, &ctx)?;
    // The routes a panel polls are answered right here. Every other route's future is boxed,
    // so a request's future stays small: hyper moves it around, and the biggest handler's
    // state would otherwise be copied for every `/health`.
    match route {
        Route::Health => Ok(system::health(app)),
        Route::Ping => Ok(system::ping()),
        Route::OpenApi => Ok(system::openapi()),
        Route::Metrics => Ok(system::metrics(app, ctx.slot.as_ref().map(|s| s.open_connections()))),
        Route::ContainerList => Ok(containers::list(app)),
        Route::ContainerGet => containers::get(app, &ctx),
        _ => Box::pin(answer(app, route, ctx)).await,
    }
}

/// Whether the client takes what `route` answers with.
fn acceptable(route: Route, ctx: &Ctx) -> Result<(), ApiError> {
    let extra: &[&str] = match route {
        Route::Metrics => &["text/plain", "application/openmetrics-text"],
        Route::ContainerAttach => &["text/plain"],
        Route::FileRead => &["application/octet-stream"],
        Route::VolumeArchive | Route::BackupDownload => {
            &["application/gzip", "application/x-gzip", "application/octet-stream"]
        }
        _ => &[],
    };
    if route != Route::Ws && !auth::accept_ok(&ctx.head.headers, extra) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "lightd answers with Application/vnd.pkglatv1+json or application/json",
        ));
    }
    Ok(())
}

/// Every route past the quick ones; consoles authorize here (the master token, or a console
/// token, or the WebSocket's first frame).
async fn answer(app: &Arc<App>, route: Route, ctx: Ctx) -> Result<Reply, ApiError> {
    let access = match route.is_console() {
        true => {
            let access = tokens::authorize_console(app, &ctx, route == Route::Ws).await?;
            acceptable(route, &ctx)?;
            Some(access)
        }
        false => None,
    };
    match route {
        Route::Health => Ok(system::health(app)),
        Route::Ping => Ok(system::ping()),
        Route::OpenApi => Ok(system::openapi()),
        Route::Metrics => Ok(system::metrics(app, ctx.slot.as_ref().map(|s| s.open_connections()))),
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
        Route::BackupList => backups::list(app, ctx).await,
        Route::BackupCreate => backups::create(app, ctx).await,
        Route::BackupUpload => backups::upload(app, ctx).await,
        Route::BackupGet => backups::get(app, ctx).await,
        Route::BackupDelete => backups::delete(app, ctx).await,
        Route::BackupDownload => backups::download(app, ctx).await,
        Route::BackupRestore => backups::restore(app, ctx).await,
        Route::VolumeDelete => volumes::delete(app, ctx).await,
        Route::PortList => ports::list(app, ctx).await,
        Route::PortAdd => ports::add(app, ctx).await,
        Route::PortRandom => ports::random(app, ctx).await,
        Route::PortDelete => ports::delete(app, ctx).await,
        Route::ContainerList => Ok(containers::list(app)),
        Route::ContainerCreate => containers::create(app, ctx).await,
        Route::ContainerGet => containers::get(app, &ctx),
        Route::ContainerDelete => containers::delete(app, ctx).await,
        Route::ContainerReinstall => containers::reinstall(app, ctx).await,
        Route::ContainerRebind => containers::rebind(app, ctx).await,
        Route::ContainerPower(action) => power::action(app, ctx, action).await,
        Route::ContainerCommand => power::command(app, ctx).await,
        Route::ContainerLogs => console::logs(app, &ctx).await,
        Route::ContainerStats => console::stats(app, &ctx).await,
        Route::ContainerAttach => console::attach(app, &ctx, access.unwrap_or(tokens::Access::Pending)),
        Route::ContainerDetach => console::detach(app, &ctx),
        Route::TokenCreate => tokens::create(app, ctx).await,
        Route::TokenRevoke => tokens::revoke(app).await,
        Route::Ws => {
            let id = ctx.param(0).to_string();
            let Ctx { head, body, slot, .. } = ctx;
            let body = body.ok_or_else(|| ApiError::bad_request("request body already read"))?;
            let access = access.unwrap_or(tokens::Access::Pending);
            ws::upgrade(app, Request::from_parts(head, body), &id, access, slot)
        }
    }
}
