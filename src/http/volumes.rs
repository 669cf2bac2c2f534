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
}

pub async fn create(app: &App, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body: Option<CreateBody> = ctx.json_opt().await?;
    let size = body.and_then(|b| b.size_limit);
    let v = volumes::create(app, size.as_deref()).await?;
    Ok(json(StatusCode::CREATED, &v))
}

pub async fn list(app: &App) -> Result<Reply, ApiError> {
    Ok(ok(&json!({ "volumes": volumes::list(app).await })))
}

pub async fn get(app: &App, ctx: Ctx) -> Result<Reply, ApiError> {
    Ok(ok(&volumes::get(app, ctx.param(0)).await?))
}

pub async fn delete(app: &App, ctx: Ctx) -> Result<Reply, ApiError> {
    volumes::delete(app, ctx.param(0)).await?;
    Ok(message(StatusCode::OK, "Volume deleted successfully"))
}
