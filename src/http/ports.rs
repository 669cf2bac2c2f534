//! `/network/ports` handlers.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::handles::Handles;
use super::reply::{json, message, ok, ApiError, Reply};
use super::request::Ctx;
use crate::error::bad;
use crate::model::PortKey;
use crate::ports::{self, parse_ip, parse_port, parse_protocol, Filter};

/// `POST /ports` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    ip: String,
    port: Option<u64>,
    port_start: Option<u64>,
    port_end: Option<u64>,
    protocol: Option<String>,
}

pub async fn add(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let b: AddBody = ctx.json().await?;
    let ip = parse_ip(&b.ip)?;
    let protocol = parse_protocol(b.protocol.as_deref())?;
    let (first, last) = match (b.port, b.port_start, b.port_end) {
        (Some(p), None, None) => {
            let p = parse_port(p, "port")?;
            (p, p)
        }
        (None, Some(s), Some(e)) => (parse_port(s, "port_start")?, parse_port(e, "port_end")?),
        _ => return Err(bad("give either port, or both port_start and port_end").into()),
    };
    let added = ports::add(app.store(), ip, first, last, protocol).await?;
    Ok(json(StatusCode::CREATED, &json!({ "message": "Port added to pool", "ports": added })))
}

pub async fn list(app: &Handles, ctx: Ctx) -> Result<Reply, ApiError> {
    let q = ctx.query(&["available", "protocol", "ip"])?;
    let available = match q.get("available").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::bad_request("available must be true or false")),
    };
    let protocol = q.get("protocol").map(|p| parse_protocol(Some(p))).transpose()?;
    let ip = q.get("ip").map(|i| parse_ip(i)).transpose()?;
    let filter = Filter { available, protocol, ip };
    Ok(ok(&json!({ "ports": ports::list(app.store(), &filter) })))
}

pub async fn random(app: &Handles, ctx: Ctx) -> Result<Reply, ApiError> {
    let q = ctx.query(&["protocol"])?;
    let protocol = q.get("protocol").map(|p| parse_protocol(Some(p))).transpose()?;
    Ok(ok(&ports::random(app.store(), protocol)?))
}

pub async fn delete(app: &Handles, ctx: Ctx) -> Result<Reply, ApiError> {
    let q = ctx.query(&["protocol"])?;
    let ip = parse_ip(ctx.param(0))?;
    let port: u64 = ctx.param(1).parse().map_err(|_| bad("port must be a number"))?;
    let port = parse_port(port, "port")?;
    let protocol = parse_protocol(q.get("protocol").map(String::as_str))?;
    ports::remove(app.store(), PortKey { ip, port, protocol }).await?;
    Ok(message(StatusCode::OK, "Port removed from pool"))
}
