//! `/volumes/:v/files...`, `/archive`, `/extract`, `/jobs/:job`: the files API. Every path goes
//! to `crate::vfs`, which resolves it fd-relative beneath the volume root; this file only moves
//! bytes (streamed both ways, with bounded memory) and shapes answers. Extraction runs as a
//! job (`crate::jobs`); an archive download is cut off at `files.job_timeout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::handles::Handles;
use super::reply::{json, ok, ApiError, Reply};
use super::request::Ctx;
use super::stream::{channel_body, ChannelWriter};
use crate::error::Error;
use crate::jobs::{self, Job, Source, State};
use crate::model::Volume;
use crate::vfs::{self, FsError, Root};
use crate::volumes;

/// Entries in a listing page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 1000;
/// How long `DELETE .../jobs/:job` waits for the job to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Bytes per chunk of a streamed download.
const CHUNK: usize = 64 * 1024;

/// Runs `f` on the volume's open root, off the async threads.
async fn with_root<T: Send + 'static>(
    app: &Arc<Handles>,
    key: &str,
    f: impl FnOnce(&Volume, &Root) -> Result<T, FsError> + Send + 'static,
) -> Result<T, ApiError> {
    let (app, key) = (Arc::clone(app), key.to_string());
    tokio::task::spawn_blocking(move || {
        let (volume, root) = volumes::open_root(app.volumes(), &key)?;
        f(&volume, &root).map_err(|e| volumes::fs_error(e, &volume))
    })
    .await
    .map_err(|e| ApiError::from(Error::Internal(format!("file task failed: {e}"))))?
    .map_err(ApiError::from)
}

/// The `path` of the query (the root when absent).
fn path_param(ctx: &Ctx, allowed: &[&str]) -> Result<(String, std::collections::HashMap<String, String>), ApiError> {
    let q = ctx.query(allowed)?;
    Ok((q.get("path").cloned().unwrap_or_else(|| "/".into()), q))
}

/// `GET .../files`: a page of the directory (`limit` entries, default 1000, at most 10000)
/// whose names sort after `after`; `next` is the `after` of the next page, `null` at the end.
pub async fn list(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    let (path, q) = path_param(&ctx, &["path", "limit", "after"])?;
    let limit = match q.get("limit") {
        None => DEFAULT_PAGE,
        Some(n) => n.parse().ok().filter(|n| (1..=vfs::MAX_PAGE).contains(n)).ok_or_else(|| {
            ApiError::bad_request(format!("limit must be a whole number from 1 to {}", vfs::MAX_PAGE))
        })?,
    };
    let after = q.get("after").cloned().filter(|a| !a.is_empty());
    let shown = path.clone();
    let page = with_root(app, ctx.param(0), move |_, root| root.list_page(&path, after.as_deref(), limit)).await?;
    Ok(ok(&json!({ "path": shown, "entries": page.entries, "next": page.next })))
}

pub async fn stat(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    let (path, _) = path_param(&ctx, &["path"])?;
    Ok(ok(&with_root(app, ctx.param(0), move |_, root| root.stat(&path)).await?))
}

/// `GET .../files/content`: the file's bytes, streamed; one `Range` of bytes honoured.
pub async fn read(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    let (path, q) = path_param(&ctx, &["path", "download"])?;
    let download = match q.get("download").map(String::as_str) {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("download must be 1 or 0")),
    };
    let name = path.rsplit('/').next().unwrap_or("file").to_string();
    let (file, entry) = with_root(app, ctx.param(0), move |_, root| root.open_read(&path)).await?;
    let mut resp = ranged(&ctx, file, entry.size, "file", "application/octet-stream")?;
    if download {
        resp.headers_mut().insert(CONTENT_DISPOSITION, attachment(&name));
    }
    Ok(resp)
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` of a `size`-byte file as `[start, end)`; `None` when
/// it cannot be satisfied (or asks for several ranges).
pub(super) fn byte_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().ok()?, size),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.saturating_add(1).min(size)),
    };
    (start < end && start < size).then_some((start, end))
}

pub(super) fn attachment(name: &str) -> HeaderValue {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '_' }).collect();
    HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")).unwrap_or(HeaderValue::from_static("attachment"))
}

/// `file` (`size` bytes, the `what` of the 416 message) as a `content_type` response: whole,
/// or the one byte `Range` the request asks for.
pub(super) fn ranged(
    ctx: &Ctx,
    file: std::fs::File,
    size: u64,
    what: &str,
    content_type: &'static str,
) -> Result<Reply, ApiError> {
    let range = ctx.head.headers.get(RANGE).and_then(|v| v.to_str().ok()).map(|r| byte_range(r, size));
    let (start, end, status) = match range {
        None => (0, size, StatusCode::OK),
        Some(Some((a, b))) => (a, b, StatusCode::PARTIAL_CONTENT),
        Some(None) => {
            let mut e = ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, format!("the {what} has {size} bytes"));
            e.content_range = Some(format!("bytes */{size}"));
            return Err(e);
        }
    };
    let mut resp = stream_file(file, start, end - start);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        // Digits, a dash and a slash: always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end.saturating_sub(1))) {
            h.insert(CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// A response streaming `len` bytes of `file` from `start`, a chunk at a time.
pub(super) fn stream_file(file: std::fs::File, start: u64, len: u64) -> Reply {
    let (tx, body) = channel_body(4);
    crate::shutdown::detach(async move {
        let mut file = tokio::fs::File::from_std(file);
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
            let _ = tx.send(Err(e)).await;
            return;
        }
        let mut left = len;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            match file.read(&mut buf).await {
                Ok(0) => {
                    let _ = tx.send(Err(std::io::Error::other("the file shrank while it was read"))).await;
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Response::new(body)
}

/// `PUT .../files/content`: the raw body, streamed into a temp file renamed over `path`.
pub async fn write(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let q = ctx.query(&["path"])?;
    let path = q.get("path").cloned().ok_or_else(|| ApiError::bad_request("path is required"))?;
    let target = path.clone();
    let (volume, mut upload) =
        with_root(app, ctx.param(0), move |v, root| Ok((v.clone(), root.create_temp(&target)?))).await?;
    let body = ctx.body.take().ok_or_else(|| ApiError::bad_request("request body already read"))?;
    let fs_err = |e: std::io::Error| ApiError::from(volumes::fs_error(FsError::from(e), &volume));
    let dup = upload.file().try_clone().map_err(fs_err)?;
    pour(body, tokio::fs::File::from_std(dup)).await.map_err(|e| match e {
        Pour::Read(m) => ApiError::bad_request(format!("could not read the request body: {m}")),
        Pour::Write(e) => fs_err(e),
    })?;
    let written = tokio::task::spawn_blocking(move || upload.commit())
        .await
        .map_err(|e| ApiError::from(Error::Internal(e.to_string())))?
        .map_err(|e| ApiError::from(volumes::fs_error(e, &volume)))?;
    let status = if written.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &json!({ "path": path, "size": written.bytes })))
}

/// Why pouring a body into a file stopped: the client's side or the disk's.
enum Pour {
    Read(String),
    Write(std::io::Error),
}

/// Copies a request body into `file` chunk by chunk (memory bounded by one chunk).
async fn pour(mut body: hyper::body::Incoming, mut file: tokio::fs::File) -> Result<(), Pour> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Pour::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data).await.map_err(Pour::Write)?;
        }
    }
    file.flush().await.map_err(Pour::Write)?;
    file.sync_all().await.map_err(Pour::Write)
}

/// A body naming one path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathBody {
    path: String,
}

/// A move's body: from, to, and whether to overwrite.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    from: String,
    to: String,
    #[serde(default)]
    overwrite: bool,
}

/// A delete's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    paths: Vec<String>,
}

/// A chmod's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChmodBody {
    path: String,
    mode: String,
}

pub async fn mkdir(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let b: PathBody = ctx.json().await?;
    let path = b.path.clone();
    with_root(app, ctx.param(0), move |_, root| root.mkdir(&path)).await?;
    Ok(json(StatusCode::CREATED, &json!({ "path": b.path })))
}

pub async fn rename(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let b: MoveBody = ctx.json().await?;
    let to = b.to.clone();
    with_root(app, ctx.param(0), move |_, root| root.rename(&b.from, &b.to, b.overwrite)).await?;
    Ok(ok(&json!({ "path": to })))
}

pub async fn copy(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let b: MoveBody = ctx.json().await?;
    let to = b.to.clone();
    with_root(app, ctx.param(0), move |_, root| root.copy(&b.from, &b.to, b.overwrite)).await?;
    Ok(ok(&json!({ "path": to })))
}

pub async fn delete(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let b: DeleteBody = ctx.json().await?;
    if b.paths.is_empty() || b.paths.len() > 1000 {
        return Err(ApiError::bad_request("paths must list 1 to 1000 paths"));
    }
    let deleted = with_root(app, ctx.param(0), move |_, root| root.delete(&b.paths)).await?;
    Ok(ok(&json!({ "deleted": deleted })))
}

pub async fn chmod(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let b: ChmodBody = ctx.json().await?;
    let path = b.path.clone();
    let entry = with_root(app, ctx.param(0), move |_, root| root.chmod(&b.path, &b.mode)).await?;
    Ok(ok(&json!({ "path": path, "mode": vfs::mode_string(entry.mode) })))
}

/// `GET .../archive`: a `tar.gz` of a directory, made while it streams. It stops when the
/// client goes away, and is cut off (the response aborted, never ended short) at
/// `files.job_timeout`, however slowly the client reads.
pub async fn archive(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    let (path, _) = path_param(&ctx, &["path"])?;
    let deadline = Instant::now() + app.config().files.job_timeout();
    let dir = path.clone();
    let (volume, root) = with_root(app, ctx.param(0), move |v, root| {
        let entry = root.stat(&dir)?;
        if entry.kind != vfs::Kind::Dir {
            return Err(FsError::NotADirectory);
        }
        Ok((v.clone(), Root::open(&v.path)?))
    })
    .await?;
    let name = match path.trim_matches('/') {
        "" => format!("{}.tar.gz", ctx.param(0)),
        dir => format!("{}.tar.gz", dir.rsplit('/').next().unwrap_or("archive")),
    };
    let (tx, body) = channel_body(4);
    let late = format!("the archive took longer than files.job_timeout ({})", app.config().files.job_timeout);
    let mut out = ChannelWriter::new(tx, deadline, late);
    tokio::task::spawn_blocking(move || {
        let packed = vfs::pack(&root, &path, &vfs::Ignore::new::<&str>(&[]), &mut out, |_, _| {});
        match packed.map_err(|e| volumes::fs_error(e, &volume)) {
            Ok(_) => {
                if let Err(e) = out.finish() {
                    crate::debug!("archive of volume {} not sent whole: {e}", volume.volume_id);
                }
            }
            Err(e) => out.fail(std::io::Error::other(e.to_string())),
        }
    });
    let mut resp = Response::new(body);
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    resp.headers_mut().insert(CONTENT_DISPOSITION, attachment(&name));
    Ok(resp)
}

/// `POST .../extract`: a job extracting a `tar`, `tar.gz` or `zip` into `path` (made if
/// missing). The archive is the body, spooled to an unnamed file on the volume (counted by its
/// limit, at most its size limit, within `files.job_timeout`), or `from`, a file in the volume.
/// `202 {"job_id"}`; a body that is no archive is a `400` at once.
pub async fn extract(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let q = ctx.query(&["path", "from"])?;
    let path = q.get("path").cloned().unwrap_or_else(|| "/".into());
    vfs::check_path(&path).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let volume = volumes::find(app.volumes(), ctx.param(0))?;
    if app.backups().is_restoring(&volume.volume_id) {
        return Err(Error::Conflict("Cannot extract while a backup of this volume is being restored".into()).into());
    }
    let deadline = Instant::now() + app.config().files.job_timeout();
    let job = app.jobs().begin(&volume.volume_id, "extract", &path, deadline)?;
    let job = Unannounced { app: Arc::clone(app), job, announced: false };
    let body = ctx.body.take().ok_or_else(|| ApiError::bad_request("request body already read"))?;
    let source = match q.get("from").cloned() {
        Some(from) => {
            match tokio::time::timeout_at(deadline.into(), body_is_empty(body)).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(ApiError::bad_request("send the archive as the body or name it with from, not both"))
                }
                Err(_) => return Err(body_too_slow(app)),
            }
            let f = from.clone();
            let entry = with_root(app, ctx.param(0), move |_, root| root.stat(&f)).await?;
            if entry.kind != vfs::Kind::File {
                return Err(ApiError::bad_request(format!("from must name a file; {from:?} is not one")));
            }
            Source::InVolume(from)
        }
        None => Source::Spooled(receive(app, &ctx, &volume, body, deadline).await?),
    };
    let job = job.announce();
    jobs::start_extract(app.reach(), Arc::clone(&job), volume, source);
    Ok(json(StatusCode::ACCEPTED, &json!({ "job_id": job.id, "state": "running" })))
}

/// A job recorded for a request that has not answered yet: forgotten unless announced.
struct Unannounced {
    app: Arc<Handles>,
    job: Arc<Job>,
    announced: bool,
}

impl Unannounced {
    fn announce(mut self) -> Arc<Job> {
        self.announced = true;
        Arc::clone(&self.job)
    }
}

impl Drop for Unannounced {
    fn drop(&mut self) {
        if !self.announced {
            self.app.jobs().forget(&self.job);
        }
    }
}

/// `408`: the request body did not arrive within `files.job_timeout`.
fn body_too_slow(app: &Handles) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!("the archive did not arrive within files.job_timeout ({})", app.config().files.job_timeout),
    )
}

/// Whether a request body holds nothing (read to its end to know).
async fn body_is_empty(mut body: hyper::body::Incoming) -> bool {
    while let Some(frame) = body.frame().await {
        match frame.map(|f| f.into_data()) {
            Ok(Ok(data)) if data.is_empty() => {}
            Ok(Err(_)) => {}
            _ => return false,
        }
    }
    true
}

/// Spools an archive body to an unnamed file on the volume: at most the volume's size limit
/// (a longer one is a `507` at once when its length says so, else when it passes it), received
/// before `deadline` (`408` after). A body that is no archive is a `400`.
async fn receive(
    app: &Arc<Handles>,
    ctx: &Ctx,
    volume: &Volume,
    mut body: hyper::body::Incoming,
    deadline: Instant,
) -> Result<std::fs::File, ApiError> {
    let cap = volume.size_limit_bytes;
    let too_big = || {
        ApiError::from(Error::Full(format!(
            "Volume is full (limit {}): the archive is larger than the volume",
            volumes::human(cap)
        )))
    };
    let declared = ctx.head.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_big());
    }
    let spool = with_root(app, &volume.volume_id, |_, root| root.spool()).await?;
    let fs_err = |e: std::io::Error| ApiError::from(volumes::fs_error(FsError::from(e), volume));
    let mut file = tokio::fs::File::from_std(spool.try_clone().map_err(fs_err)?);
    let mut received = 0u64;
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return Err(body_too_slow(app)),
        };
        let frame = frame.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            if received > cap {
                return Err(too_big());
            }
            file.write_all(&data).await.map_err(fs_err)?;
        }
    }
    file.flush().await.map_err(fs_err)?;
    drop(file);
    let mut spool = spool;
    let checked = tokio::task::spawn_blocking(move || vfs::sniff(&mut spool).map(|_| spool))
        .await
        .map_err(|e| ApiError::from(Error::Internal(format!("file task failed: {e}"))))?;
    checked.map_err(|e| ApiError::from(volumes::fs_error(e, volume)))
}

/// The job `:job` of volume `:volume_id`.
fn find_job(app: &Handles, ctx: &Ctx) -> Result<Arc<Job>, ApiError> {
    let volume = volumes::find(app.volumes(), ctx.param(0))?;
    app.jobs()
        .find(&volume.volume_id, ctx.param(1))
        .ok_or_else(|| ApiError::from(Error::NotFound("Job not found".into())))
}

/// `GET .../jobs/:job`: its state and progress.
pub async fn job(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    Ok(ok(&find_job(app, &ctx)?.view()))
}

/// `DELETE .../jobs/:job`: cancels a running job and waits (a while) for it to stop; nothing
/// it was extracting is left. A job that already moves its files in place finishes (`done`).
pub async fn cancel_job(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    let job = find_job(app, &ctx)?;
    let state = job.state();
    if state != State::Running {
        return Err(Error::Conflict(format!("The job is over ({})", state.name())).into());
    }
    job.dial.cancel();
    job.wait(CANCEL_WAIT).await;
    Ok(ok(&job.view()))
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(byte_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(byte_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(byte_range("bytes=95-200", 100), Some((95, 100)));
        assert_eq!(byte_range("bytes=100-", 100), None);
        assert_eq!(byte_range("bytes=5-2", 100), None);
        assert_eq!(byte_range("bytes=0-1,3-4", 100), None);
        assert_eq!(byte_range("items=0-1", 100), None);
        assert_eq!(byte_range("bytes=-0", 100), None);
    }
}
