//! `/containers/:id/firewall`: a server's firewall rules, with what each dropped.

use serde::Deserialize;
use serde_json::json;

use super::handles::Handles;
use super::reply::{ok, ApiError, Reply};
use super::request::Ctx;
use crate::firewall::RawRule;
use crate::lifecycle;

/// `PUT` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    rules: Vec<RawRule>,
}

/// `GET`: the rules and their counters.
pub async fn get(app: &Handles, ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    lifecycle::check_id(id)?;
    let fw = app.sups().firewall();
    let rules = fw.counted(app.store(), id).await?;
    Ok(ok(&json!({ "table": fw.table(), "rules": rules })))
}

/// `PUT`: replaces the rules (all applied in one transaction, or none).
pub async fn put(app: &Handles, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param(0).to_string();
    lifecycle::check_id(&id)?;
    lifecycle::record(app.sups(), &id)?;
    let body: PutBody = ctx.json().await?;
    let fw = app.sups().firewall();
    let rules = fw.replace(app.store(), &id, body.rules).await?;
    Ok(ok(&json!({ "table": fw.table(), "rules": rules })))
}

/// `DELETE`: no rules; the port is open again.
pub async fn delete(app: &Handles, ctx: Ctx) -> Result<Reply, ApiError> {
    let id = ctx.param(0);
    lifecycle::check_id(id)?;
    app.sups().firewall().replace(app.store(), id, Vec::new()).await?;
    Ok(ok(&json!({ "message": "Firewall rules removed" })))
}
