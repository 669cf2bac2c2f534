//! `POST /auth/tokens`, and who may open a console (WebSocket or attach).

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::auth::bearer;
use super::handles::Handles;
use super::reply::{json, ApiError, Reply};
use super::request::Ctx;
use crate::tokens::{self, Denied};

/// `POST /auth/tokens` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    ttl: Option<String>,
    internal_id: Option<String>,
    #[serde(default)]
    remove_on_use: bool,
    /// `console` (the default: one container's console, `internal_id` required), `all`
    /// (every console: an explicit opt-in, never implied by a missing `internal_id`) or
    /// `transfer` (the node-to-node transfer routes of `internal_id`, a server not here yet).
    scope: Option<String>,
}

/// The container a new token opens, from the body's `scope` and `internal_id`: `None` for
/// every console, which must be asked for by name; and whether it is a transfer token.
fn bound_to(scope: Option<&str>, internal_id: Option<String>) -> Result<(Option<String>, bool), ApiError> {
    let console = console_scope(scope, internal_id.clone());
    match (scope, internal_id) {
        (Some("transfer"), Some(id)) => Ok((Some(id), true)),
        (Some("transfer"), None) => Err(ApiError::bad_request(
            "internal_id is required: a transfer token receives one server (the id it has at the source)",
        )),
        _ => console.map(|bound| (bound, false)),
    }
}

/// A console token's container: `None` for every console.
fn console_scope(scope: Option<&str>, internal_id: Option<String>) -> Result<Option<String>, ApiError> {
    match (scope.unwrap_or("console"), internal_id) {
        ("console", Some(id)) => Ok(Some(id)),
        ("console", None) => Err(ApiError::bad_request(
            "internal_id is required: a console token opens one container's console (\"scope\": \"all\" opens \
             every console, and every server's power actions with it)",
        )),
        ("all", None) => Ok(None),
        ("all", Some(_)) => {
            Err(ApiError::bad_request("a token of scope \"all\" opens every console: leave internal_id out"))
        }
        (other, _) => {
            Err(ApiError::bad_request(format!("scope {other:?} must be \"console\", \"all\" or \"transfer\"")))
        }
    }
}

pub async fn create(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let b: Body =
        ctx.json_opt().await?.unwrap_or(Body { ttl: None, internal_id: None, remove_on_use: false, scope: None });
    let ttl = match b.ttl.as_deref() {
        Some(t) => tokens::parse_ttl(t)?,
        None => tokens::DEFAULT_TTL,
    };
    let (bound, transfer) = bound_to(b.scope.as_deref(), b.internal_id)?;
    let given = bearer(&ctx.head.headers).unwrap_or_default();
    let t = tokens::issue(app.tokens(), given, ttl, bound, b.remove_on_use, transfer).await?;
    Ok(json(StatusCode::CREATED, &json!({ "token": t.token, "expires_at": t.expires_at })))
}

/// Who opens a console.
pub enum Access {
    Master,
    /// A console token (`POST /auth/tokens`).
    Token(crate::model::TempToken),
    /// No credentials yet: a WebSocket may send them as its first frame.
    Pending,
}

/// A console may be opened with the master token (header or `?token=`), or with a console
/// token in `?token=` (403 when it is bound to another container). A WebSocket opened with
/// no credentials at all may authenticate with its first frame (`pending_ok`).
pub async fn authorize_console(app: &Handles, ctx: &Ctx, pending_ok: bool) -> Result<Access, ApiError> {
    if bearer(&ctx.head.headers).is_some_and(|given| app.tokens().is_master(given)) {
        return Ok(Access::Master);
    }
    let q = ctx.query(&["token"])?;
    match q.get("token") {
        Some(presented) => check(app, presented, ctx.param(0)).await,
        None if pending_ok && is_upgrade(ctx) && !ctx.head.headers.contains_key(hyper::header::AUTHORIZATION) => {
            Ok(Access::Pending)
        }
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Missing or invalid token (send Authorization: Bearer lightd_... or ?token=; lightd --token what shows \
             the master token)",
        )),
    }
}

/// A WebSocket upgrade request (only those may bring their credentials in a first frame).
fn is_upgrade(ctx: &Ctx) -> bool {
    ctx.head
        .headers
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// What a presented token opens on container `id`.
pub async fn check(app: &Handles, presented: &str, id: &str) -> Result<Access, ApiError> {
    if app.tokens().is_master(presented.as_bytes()) {
        return Ok(Access::Master);
    }
    match tokens::redeem(app.tokens(), presented, id).await {
        Ok(t) => Ok(Access::Token(t)),
        Err(Denied::Invalid(why)) => Err(ApiError::new(StatusCode::UNAUTHORIZED, why)),
        Err(Denied::OtherContainer) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "This token is bound to another container"))
        }
    }
}

/// `DELETE /auth/tokens`: every console token goes.
pub async fn revoke(app: &Handles) -> Result<Reply, ApiError> {
    let revoked = tokens::revoke_all(app.tokens()).await?;
    Ok(json(StatusCode::OK, &json!({ "message": "Tokens revoked", "revoked": revoked })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A console token names its container unless asked for as `"scope": "all"`, which names
    /// none; a missing `internal_id` never means every console.
    #[test]
    fn a_console_token_names_its_container_unless_scope_all() {
        let id = || Some("srv".to_string());
        assert_eq!(bound_to(None, id()).ok(), Some((Some("srv".into()), false)));
        assert_eq!(bound_to(Some("console"), id()).ok(), Some((Some("srv".into()), false)));
        assert_eq!(bound_to(Some("all"), None).ok(), Some((None, false)));
        assert_eq!(bound_to(Some("transfer"), id()).ok(), Some((Some("srv".into()), true)));
        for (scope, internal_id, says) in [
            (None, None, "internal_id is required"),
            (Some("console"), None, "internal_id is required"),
            (Some("all"), id(), "leave internal_id out"),
            (Some("transfer"), None, "internal_id is required"),
            (Some("ALL"), None, "must be \"console\", \"all\" or \"transfer\""),
        ] {
            let e = bound_to(scope, internal_id).expect_err("refused");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(says), "{scope:?}: {}", e.message);
        }
    }
}
