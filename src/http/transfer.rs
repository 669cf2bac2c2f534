//! Moving a server between nodes: `POST/GET/DELETE /containers/:id/transfer` at the source
//! (master token), and the node-to-node routes under `/transfers/:id` at the target, which
//! take the master token or a transfer token for that id (`POST /auth/tokens` with
//! `"scope": "transfer"` there).

use http_body_util::{BodyExt, Limited};
use hyper::body::Bytes;
use hyper::header::CONTENT_LENGTH;
use hyper::StatusCode;
use serde::de::DeserializeOwned;

use super::auth::bearer;
use super::handles::Handles;
use super::reply::{json, ApiError, Reply};
use super::request::Ctx;
use crate::tokens::{self, Denied};
use crate::transfer::{self, source, target, Rooms};

/// Largest manifest (a million files' names and hashes fit).
const MAX_MANIFEST: usize = 256 << 20;

fn rooms(app: &Handles) -> Rooms {
    Rooms {
        config: std::sync::Arc::clone(app.config_arc()),
        store: std::sync::Arc::clone(app.store()),
        docker: std::sync::Arc::clone(app.docker()),
        sups: app.sups().clone(),
        volumes: app.volumes().clone(),
        backups: app.backups().clone(),
        hubs: std::sync::Arc::clone(app.hubs()),
        transfers: app.transfers().clone(),
    }
}

/// The body, at most `limit` bytes.
async fn body(ctx: &mut Ctx, limit: usize) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {limit} bytes"));
    let declared = ctx.head.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let Some(b) = ctx.body.take() else { return Ok(Bytes::new()) };
    match Limited::new(b, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!("could not read request body: {e}"))),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// `POST /containers/:id/transfer`: starts moving the server (202).
pub async fn start(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let req: source::Start = ctx.json().await?;
    let status = source::start(&rooms(app), ctx.param(0), req)?;
    Ok(json(StatusCode::ACCEPTED, &status))
}

/// `GET /containers/:id/transfer`.
pub fn status(app: &Handles, ctx: &Ctx) -> Result<Reply, ApiError> {
    Ok(json(StatusCode::OK, &source::status(app.transfers(), ctx.param(0))?))
}

/// `DELETE /containers/:id/transfer`.
pub async fn cancel(app: &Handles, ctx: &Ctx) -> Result<Reply, ApiError> {
    Ok(json(StatusCode::OK, &source::cancel(app.transfers(), ctx.param(0)).await?))
}

/// The node-to-node routes take the master token or a transfer token for this server.
pub fn authorize(app: &Handles, ctx: &Ctx) -> Result<(), ApiError> {
    let Some(given) = bearer(&ctx.head.headers) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Missing transfer token (Authorization: Bearer ...)"));
    };
    if app.tokens().is_master(given) {
        return Ok(());
    }
    let given = std::str::from_utf8(given).unwrap_or_default();
    match tokens::redeem_transfer(app.tokens(), given, ctx.param(0)) {
        Ok(_) => Ok(()),
        Err(Denied::Invalid(why)) => Err(ApiError::new(StatusCode::UNAUTHORIZED, why)),
        Err(Denied::OtherContainer) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "This transfer token is for another server"))
        }
    }
}

/// `POST /transfers/:id`: a round's manifest; answers what this node lacks.
pub async fn prepare(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let bytes = body(&mut ctx, MAX_MANIFEST).await?;
    let p: target::Prepare = parse(&bytes)?;
    let need = target::prepare(&rooms(app), ctx.param(0), p).await?;
    Ok(json(StatusCode::OK, &need))
}

/// `PUT /transfers/:id/chunks`: chunk frames, verified and written.
pub async fn chunks(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let bytes = body(&mut ctx, transfer::wire::MAX_BATCH).await?;
    let written = target::chunks(&rooms(app), ctx.param(0), bytes).await?;
    Ok(json(StatusCode::OK, &written))
}

/// `POST /transfers/:id/finish`: digests compared, the server made (and started).
pub async fn finish(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let f: target::Finish = ctx.json().await?;
    let done = target::finish(&rooms(app), ctx.param(0), f).await?;
    Ok(json(StatusCode::CREATED, &done))
}

/// `DELETE /transfers/:id`: the staging goes.
pub async fn discard(app: &Handles, ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    if !target::discard(&rooms(app), id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("No transfer of {id} is staged here")));
    }
    Ok(json(StatusCode::OK, &serde_json::json!({"message": "Transfer discarded", "internal_id": id})))
}

/// `POST /transfers/:id/backups`: a backup to come along; how much of it is here.
pub async fn backup_offer(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let v: serde_json::Value = ctx.json().await?;
    let b: crate::model::Backup = serde_json::from_value(integral(v))
        .map_err(|e| ApiError::bad_request(format!("invalid backup record: {e}")))?;
    let held = transfer::archives::offer(&rooms(app), ctx.param(0), b).await?;
    Ok(json(StatusCode::OK, &held))
}

/// `PUT /transfers/:id/backups/:backup_id?offset=N`: a piece of its archive.
pub async fn backup_piece(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let q = ctx.query(&["offset"])?;
    let offset = q
        .get("offset")
        .and_then(|o| o.parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request("offset must be given: the bytes of the backup already sent"))?;
    let bytes = body(&mut ctx, transfer::archives::PIECE).await?;
    let held = transfer::archives::piece(&rooms(app), ctx.param(0), ctx.param(1), offset, bytes).await?;
    Ok(json(StatusCode::OK, &held))
}

/// JSON numbers written as whole floats (`330.0`, which JSON Schema counts as an integer) as
/// integers, so a record's counts parse whichever way a client wrote them.
fn integral(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) if !n.is_u64() && !n.is_i64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..9.007_199_254_740_992e15).contains(&f) => Value::from(f as u64),
            _ => Value::Number(n),
        },
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        v => v,
    }
}
