//! Power handlers: `start`, `stop`, `kill`, `restart`, `suspend`, `resume`, `command`.

use std::sync::Arc;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::reply::{json, ApiError, Reply};
use super::request::Ctx;
use crate::app::App;
use crate::lifecycle::power;

/// The power actions reachable by URL (and by the WebSocket `power` message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Kill,
    Restart,
    Suspend,
    Resume,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "start" => Action::Start,
            "stop" => Action::Stop,
            "kill" => Action::Kill,
            "restart" => Action::Restart,
            "suspend" => Action::Suspend,
            "resume" => Action::Resume,
            _ => return None,
        })
    }

    fn message(self) -> &'static str {
        match self {
            Action::Start => "Container start initiated",
            Action::Stop => "Container stop initiated",
            Action::Kill => "Container kill initiated",
            Action::Restart => "Container restart initiated",
            Action::Suspend => "Container suspend initiated",
            Action::Resume => "Container resume initiated",
        }
    }
}

/// Runs `action` on `id`.
pub async fn run(app: &Arc<App>, id: &str, action: Action) -> crate::error::Result<()> {
    match action {
        Action::Start => power::start(app, id).await,
        Action::Stop => power::stop(app, id).await,
        Action::Kill => power::kill(app, id).await,
        Action::Restart => power::restart(app, id).await,
        Action::Suspend => power::suspend(app, id).await,
        Action::Resume => power::resume(app, id).await,
    }
}

pub async fn action(app: &Arc<App>, ctx: Ctx, action: Action) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    run(app, id, action).await?;
    Ok(json(StatusCode::ACCEPTED, &json!({ "message": action.message(), "internal_id": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    command: String,
}

pub async fn command(app: &App, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let body: CommandBody = ctx.json().await?;
    let id = ctx.param(0);
    power::command(app, id, &body.command).await?;
    Ok(json(StatusCode::ACCEPTED, &json!({ "message": "Command sent", "internal_id": id })))
}
