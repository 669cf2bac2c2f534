//! `/volumes/:v/backups...`: create, list, get, download, delete (which cancels one being
//! made), restore and its cancel, upload.

use std::sync::Arc;

use hyper::header::CONTENT_DISPOSITION;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::body_reader::BodyReader;
use super::files::ranged;
use super::handles::Handles;
use super::reply::{json, message, ok, ApiError, Reply};
use super::request::Ctx;
use crate::backups;
use crate::error::Error;
use crate::model::{BackupFormat, BackupState};

/// `POST /volumes/:v/backups` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: Option<String>,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    pause: bool,
    /// `tar.gz` (the default) or `tar.zst`.
    format: Option<String>,
}

pub async fn create(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let b: Option<CreateBody> = ctx.json_opt().await?;
    let b = b.unwrap_or(CreateBody { name: None, ignore: Vec::new(), pause: false, format: None });
    let format = match b.format.as_deref() {
        None => BackupFormat::TarGz,
        Some(name) => BackupFormat::parse(name).map_err(ApiError::bad_request)?,
    };
    let req = backups::Request { name: b.name, ignore: b.ignore, pause: b.pause, format };
    let backup = backups::create(app.backups(), app.sups(), ctx.param(0), req).await?;
    Ok(json(StatusCode::ACCEPTED, &json!({ "backup_id": backup.backup_id, "state": "creating" })))
}

pub async fn list(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    Ok(ok(&json!({ "backups": backups::list(app.backups(), ctx.param(0))? })))
}

pub async fn get(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    let (_, backup) = backups::find(app.backups(), ctx.param(0), ctx.param(1))?;
    Ok(ok(&backups::view(app.backups(), backup)))
}

pub async fn delete(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    let cancelled = backups::delete(app.backups(), ctx.param(0), ctx.param(1)).await?;
    Ok(message(StatusCode::OK, if cancelled { "Backup cancelled and deleted" } else { "Backup deleted" }))
}

/// The archive, streamed; one `Range` of bytes honoured.
pub async fn download(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    let (_, backup) = backups::find(app.backups(), ctx.param(0), ctx.param(1))?;
    if backup.state != BackupState::Ready {
        return Err(Error::Conflict("The backup is not ready".into()).into());
    }
    let path = backups::archive_path(app.backups(), &backup);
    // Opened and measured on the blocking pool, not on a runtime thread.
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            Ok::<_, std::io::Error>((file, size))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    let (file, size) = opened.map_err(|e| Error::Internal(format!("cannot open {}: {e}", path.display())))?;
    let mut resp = ranged(&ctx, file, size, "archive", backup.format.content_type())?;
    let file_name = format!("{}.{}", backup.name, backup.format.extension());
    resp.headers_mut().insert(CONTENT_DISPOSITION, super::files::attachment(&file_name));
    Ok(resp)
}

/// `POST .../restore` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    #[serde(default)]
    truncate: bool,
}

pub async fn restore(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let b: Option<RestoreBody> = ctx.json_opt().await?;
    let truncate = b.is_some_and(|b| b.truncate);
    backups::restore(app.backups(), app.sups(), ctx.param(0), ctx.param(1), truncate).await?;
    Ok(json(StatusCode::ACCEPTED, &json!({ "message": "Backup restore started", "backup_id": ctx.param(1) })))
}

/// `DELETE .../restore`: `200` once the cancelled restore has ended, `202` if it is still
/// ending after the wait.
pub async fn cancel_restore(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    Ok(match backups::cancel_restore(app.backups(), ctx.param(0), ctx.param(1)).await? {
        true => message(StatusCode::OK, "Restore cancelled"),
        false => message(StatusCode::ACCEPTED, "Restore cancelled; it is still ending"),
    })
}

pub async fn upload(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body = ctx.body.take().ok_or_else(|| ApiError::bad_request("request body already read"))?;
    let backup = backups::upload(app.backups(), ctx.param(0), BodyReader::new(body)).await?;
    Ok(json(StatusCode::CREATED, &backups::view(app.backups(), backup)))
}
