//! `/volumes/:v/sftp/users...`: a volume's SFTP users (see `crate::sftp::users`). A build
//! without the `sftp` feature answers 503 here.

use std::sync::Arc;

#[cfg(feature = "sftp")]
use hyper::StatusCode;
#[cfg(feature = "sftp")]
use serde_json::json;

use super::handles::Handles;
#[cfg(feature = "sftp")]
use super::reply::{json, ok};
use super::reply::{ApiError, Reply};
use super::request::Ctx;

#[cfg(feature = "sftp")]
pub async fn list(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    let users = crate::sftp::users::list(app.volumes(), app.store(), ctx.param(0))?;
    Ok(ok(&json!({ "users": users })))
}

#[cfg(feature = "sftp")]
pub async fn create(app: &Arc<Handles>, mut ctx: Ctx) -> Result<Reply, ApiError> {
    let new: crate::sftp::users::NewUser = ctx.json().await?;
    let user = crate::sftp::users::create(app.volumes(), app.store(), ctx.param(0), new).await?;
    Ok(json(StatusCode::CREATED, &user))
}

#[cfg(feature = "sftp")]
pub async fn delete(app: &Arc<Handles>, ctx: Ctx) -> Result<Reply, ApiError> {
    let username = ctx.param(1);
    if !crate::sftp::users::valid_username(username) {
        return Err(ApiError::bad_request(
            "username must be 1-32 characters of a-z 0-9 _ -, starting with a letter or digit",
        ));
    }
    let closed =
        crate::sftp::users::delete(app.volumes(), app.store(), app.sftp_sessions(), ctx.param(0), username).await?;
    Ok(ok(&json!({"message": "SFTP user deleted", "sessions_closed": closed})))
}

#[cfg(not(feature = "sftp"))]
fn unavailable() -> Result<Reply, ApiError> {
    Err(ApiError::from(crate::error::Error::Unavailable("lightd was built without the sftp feature".into())))
}

#[cfg(not(feature = "sftp"))]
pub async fn list(_: &Arc<Handles>, _: Ctx) -> Result<Reply, ApiError> {
    unavailable()
}

#[cfg(not(feature = "sftp"))]
pub async fn create(_: &Arc<Handles>, _: Ctx) -> Result<Reply, ApiError> {
    unavailable()
}

#[cfg(not(feature = "sftp"))]
pub async fn delete(_: &Arc<Handles>, _: Ctx) -> Result<Reply, ApiError> {
    unavailable()
}
