//! Power handlers: `start`, `stop`, `kill`, `restart`, `suspend`, `resume`, `command`.

use std::sync::Arc;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::handles::Handles;
use super::reply::{json, ApiError, Reply};
use super::request::Ctx;
use crate::lifecycle;

/// `POST /containers/:id/<name>` for a power action `name` (the router's table names them).
pub async fn action(app: &Arc<Handles>, ctx: Ctx, name: &'static str) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    let action = lifecycle::Action::power(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no power action {name:?}")))?;
    lifecycle::act(app.sups(), id, action).await?;
    let message = format!("Container {name} initiated");
    Ok(json(StatusCode::ACCEPTED, &json!({ "message": message, "internal_id": id })))
}

/// `POST /containers/:id/command` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    command: String,
}

pub async fn command(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body: CommandBody = ctx.json().await?;
    let id = ctx.param(0);
    lifecycle::act(app.sups(), id, lifecycle::Action::Command(body.command)).await?;
    Ok(json(StatusCode::ACCEPTED, &json!({ "message": "Command sent", "internal_id": id })))
}
