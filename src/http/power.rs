//! Power handlers: `start`, `stop`, `kill`, `restart`, `suspend`, `resume`, `command`.

use std::sync::Arc;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::handles::Handles;
use super::reply::{json, ApiError, Reply};
use super::request::Ctx;
use crate::lifecycle;

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

impl Action {
    /// The supervisor's action for it.
    pub fn lifecycle(self) -> lifecycle::Action {
        match self {
            Action::Start => lifecycle::Action::Start,
            Action::Stop => lifecycle::Action::Stop,
            Action::Kill => lifecycle::Action::Kill,
            Action::Restart => lifecycle::Action::Restart,
            Action::Suspend => lifecycle::Action::Suspend,
            Action::Resume => lifecycle::Action::Resume,
        }
    }
}

pub async fn action(app: &Arc<Handles>, ctx: Ctx, action: Action) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    lifecycle::act(app.sups(), id, action.lifecycle()).await?;
    Ok(json(StatusCode::ACCEPTED, &json!({ "message": action.message(), "internal_id": id })))
}

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
