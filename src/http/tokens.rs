//! `POST /auth/tokens`, and who may open a console (WebSocket or attach).

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::auth::bearer_matches;
use super::reply::{json, ApiError, Reply};
use super::request::Ctx;
use crate::app::App;
use crate::ids::constant_time_eq;
use crate::tokens::{self, Denied};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    ttl: Option<String>,
    internal_id: Option<String>,
    #[serde(default)]
    remove_on_use: bool,
}

pub async fn create(app: &App, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let b: Body = ctx.json_opt().await?.unwrap_or(Body { ttl: None, internal_id: None, remove_on_use: false });
    let ttl = match b.ttl.as_deref() {
        Some(t) => tokens::parse_ttl(t)?,
        None => tokens::DEFAULT_TTL,
    };
    let t = tokens::issue(app, ttl, b.internal_id, b.remove_on_use).await?;
    Ok(json(StatusCode::CREATED, &json!({ "token": t.token, "expires_at": t.expires_at })))
}

/// A console may be opened with the master token (header or `?token=`), or with a temporary
/// token in `?token=` (403 when it is bound to another container).
pub async fn authorize_console(app: &App, ctx: &Ctx) -> Result<(), ApiError> {
    let master = &app.config.authorization.token;
    if bearer_matches(&ctx.head.headers, master) {
        return Ok(());
    }
    let q = ctx.query(&["token"])?;
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let Some(presented) = q.get("token") else {
        return Err(unauthorized("Missing or invalid token (send Authorization: Bearer lightd_... or ?token=)"));
    };
    if constant_time_eq(presented.as_bytes(), master.as_bytes()) {
        return Ok(());
    }
    match tokens::redeem(app, presented, ctx.param(0)).await {
        Ok(_) => Ok(()),
        Err(Denied::Invalid(why)) => Err(unauthorized(why)),
        Err(Denied::OtherContainer) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "This token is bound to another container"))
        }
    }
}
