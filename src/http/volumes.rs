//! `/volumes` handlers.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::handles::Handles;
use super::reply::{json, message, ok, ApiError, Reply};
use super::request::Ctx;
use crate::volumes;

/// `POST /volumes` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    size_limit: Option<String>,
    name: Option<String>,
}

pub async fn create(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body: Option<CreateBody> = ctx.json_opt().await?;
    let (size, name) = body.map_or((None, None), |b| (b.size_limit, b.name));
    let v = volumes::create(app.volumes(), size.as_deref(), name).await?;
    Ok(json(StatusCode::CREATED, &v))
}

pub async fn list(app: &Handles) -> Result<Reply, ApiError> {
    Ok(ok(&json!({ "volumes": volumes::list(app.volumes()).await })))
}

pub async fn get(app: &Handles, ctx: Ctx) -> Result<Reply, ApiError> {
    Ok(ok(&volumes::get(app.volumes(), ctx.param(0)).await?))
}

/// `PATCH /volumes/:v` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    size_limit: String,
}

pub async fn patch(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body: PatchBody = ctx.json().await?;
    Ok(ok(&volumes::resize(app.volumes(), ctx.param(0), &body.size_limit).await?))
}

pub async fn delete(app: &std::sync::Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    volumes::delete(app.volumes(), app.backups(), ctx.param(0)).await?;
    Ok(message(StatusCode::OK, "Volume deleted successfully"))
}
