//! `/volumes` handlers.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::reply::{json, message, ok, ApiError, Reply};
use super::request::Ctx;
use crate::app::App;
use crate::volumes;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    size_limit: Option<String>,
    name: Option<String>,
}

pub async fn create(app: &App, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body: Option<CreateBody> = ctx.json_opt().await?;
    let (size, name) = body.map_or((None, None), |b| (b.size_limit, b.name));
    let v = volumes::create(app, size.as_deref(), name).await?;
    Ok(json(StatusCode::CREATED, &v))
}

pub async fn list(app: &App) -> Result<Reply, ApiError> {
    Ok(ok(&json!({ "volumes": volumes::list(app).await })))
}

pub async fn get(app: &App, ctx: Ctx) -> Result<Reply, ApiError> {
    Ok(ok(&volumes::get(app, ctx.param(0)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    size_limit: String,
}

pub async fn patch(app: &App, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body: PatchBody = ctx.json().await?;
    Ok(ok(&volumes::resize(app, ctx.param(0), &body.size_limit).await?))
}

pub async fn delete(app: &std::sync::Arc<App>, ctx: Ctx) -> Result<Reply, ApiError> {
    volumes::delete(app, ctx.param(0)).await?;
    Ok(message(StatusCode::OK, "Volume deleted successfully"))
}
