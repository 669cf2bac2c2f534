//! A small Docker Engine API client over the Unix socket. It knows HTTP and Docker's wire
//! formats, nothing of lightd's domain.

pub mod api;
pub mod auth;
pub mod frame;
pub mod pull;
pub mod stream;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

/// Newest Engine API version this client speaks; never ask for more, even of a newer engine.
pub const MAX_API: (u32, u32) = (1, 41);
/// Oldest Engine API version we accept.
pub const MIN_API: (u32, u32) = (1, 25);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for an answer head (and for a whole JSON answer).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a Docker call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum DockerError {
    /// The socket is missing, refuses connections or died mid-call.
    Unreachable(String),
    /// The engine answered with an error status; `message` is its own reason.
    Api { status: u16, message: String },
    /// The engine took longer than the call allows.
    Timeout(String),
    /// The engine answered something this client cannot read.
    Protocol(String),
}

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerError::Unreachable(e) => write!(f, "Docker engine unreachable: {e}"),
            DockerError::Api { status, message } => {
                write!(f, "Docker engine error {status}: {message}")
            }
            DockerError::Timeout(what) => write!(f, "Docker engine timed out: {what}"),
            DockerError::Protocol(e) => write!(f, "unexpected answer from Docker engine: {e}"),
        }
    }
}

impl DockerError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::Api { status: 404, .. })
    }
}

/// The engine client. Each call opens its own connection: a Unix socket connect costs
/// microseconds and keeps streams and plain calls independent.
pub struct Docker {
    socket: PathBuf,
    /// Negotiated `"1.41"`-style version; `None` until a ping succeeds.
    api: Mutex<Option<String>>,
    reachable: AtomicBool,
    /// Serializes `ensure_network` within this process.
    network_lock: tokio::sync::Mutex<()>,
}

impl Docker {
    pub fn new(socket: &Path) -> Docker {
        Docker {
            socket: socket.into(),
            api: Mutex::new(None),
            reachable: AtomicBool::new(false),
            network_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether the last contact with the engine worked.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /_ping`: checks the engine and negotiates the API version from its `Api-Version`.
    pub async fn ping(&self) -> Result<String, DockerError> {
        let resp = self.exchange(Method::GET, "/_ping".into(), None, &[], false).await?;
        let theirs = resp.headers().get("api-version").and_then(|v| v.to_str().ok()).and_then(parse_version);
        let version = negotiate(theirs)?;
        *self.api.lock().unwrap_or_else(|p| p.into_inner()) = Some(version.clone());
        Ok(version)
    }

    async fn api_prefix(&self) -> Result<String, DockerError> {
        let known = self.api.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match known {
            Some(v) => Ok(v),
            None => self.ping().await,
        }
    }

    /// One request on a fresh connection (asking to hijack it when `upgrade`); marks the
    /// engine reachable or not.
    async fn exchange(
        &self,
        method: Method,
        uri: String,
        body: Option<&Value>,
        headers: &[(&'static str, &str)],
        upgrade: bool,
    ) -> Result<Response<Incoming>, DockerError> {
        // Every call has a deadline for the engine's answer head, streams and upgrades
        // included; reading a long body is bounded by the caller.
        let what = format!("{method} {uri}");
        let result = tokio::time::timeout(CALL_TIMEOUT, self.connect_and_send(method, uri, body, headers, upgrade))
            .await
            .unwrap_or_else(|_| Err(DockerError::Timeout(what)));
        let ok = !matches!(result, Err(DockerError::Unreachable(_)));
        self.reachable.store(ok, Ordering::Relaxed);
        if !ok {
            // The engine may come back as another version.
            *self.api.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        result
    }

    async fn connect_and_send(
        &self,
        method: Method,
        uri: String,
        body: Option<&Value>,
        headers: &[(&'static str, &str)],
        upgrade: bool,
    ) -> Result<Response<Incoming>, DockerError> {
        let unreachable = |e: &dyn fmt::Display| DockerError::Unreachable(format!("{}: {e}", self.socket.display()));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket))
            .await
            .map_err(|_| unreachable(&"connect timed out"))?
            .map_err(|e| unreachable(&e))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(&e))?;
        crate::shutdown::detach(async move {
            let _ = conn.with_upgrades().await;
        });
        let mut req = Request::builder().method(method).uri(uri).header("host", "docker");
        if upgrade {
            req = req.header("connection", "Upgrade").header("upgrade", "tcp");
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let bytes = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(v).map_err(|e| DockerError::Protocol(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| DockerError::Protocol(e.to_string()))?;
        sender.send_request(req).await.map_err(|e| unreachable(&e))
    }

    /// Opens a hijacked connection (`Upgrade: tcp`), as `attach` uses: after the engine's
    /// `101`, the socket carries raw bytes both ways.
    pub async fn upgrade(&self, method: Method, path: &str) -> Result<hyper::upgrade::Upgraded, DockerError> {
        let uri = format!("/v{}{path}", self.api_prefix().await?);
        let resp = self.exchange(method, uri, None, &[], true).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status().as_u16();
            let bytes = collect(resp.into_body()).await.unwrap_or_default();
            return Err(DockerError::Api { status, message: error_message(&bytes) });
        }
        tokio::time::timeout(CALL_TIMEOUT, hyper::upgrade::on(resp))
            .await
            .map_err(|_| DockerError::Timeout(format!("upgrade of {path}")))?
            .map_err(|e| DockerError::Unreachable(format!("upgrade failed: {e}")))
    }

    /// Sends a versioned request and returns the response once its status is a success;
    /// an error status becomes [`DockerError::Api`] with the engine's message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response<Incoming>, DockerError> {
        self.send_with(method, path, body, &[]).await
    }

    /// [`Docker::send`] with extra request headers (e.g. `X-Registry-Auth`).
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&'static str, &str)],
    ) -> Result<Response<Incoming>, DockerError> {
        let uri = format!("/v{}{path}", self.api_prefix().await?);
        let resp = self.exchange(method, uri, body, headers, false).await?;
        if resp.status().is_success() || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let bytes = collect(resp.into_body()).await.unwrap_or_default();
        Err(DockerError::Api { status, message: error_message(&bytes) })
    }

    /// A call whose answer is JSON (or empty: `Value::Null`), bounded by the call timeout.
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, DockerError> {
        let what = format!("{method} {path}");
        let call = async {
            let resp = self.send(method, path, body).await?;
            let bytes = collect(resp.into_body()).await?;
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_slice(&bytes).map_err(|e| DockerError::Protocol(format!("{what}: {e}")))
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| DockerError::Timeout(what.clone()))?
    }
}

/// Reads a whole body.
pub async fn collect(body: Incoming) -> Result<Bytes, DockerError> {
    body.collect().await.map(|c| c.to_bytes()).map_err(|e| DockerError::Unreachable(format!("reading answer: {e}")))
}

/// The engine's `{"message": ".."}`, or the raw text when it is not JSON.
fn error_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_owned())
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The version to speak: the engine's own, capped at ours (an engine without the header
/// is assumed to be at least our newest, as Docker's own clients do).
fn negotiate(theirs: Option<(u32, u32)>) -> Result<String, DockerError> {
    let v = theirs.map_or(MAX_API, |t| t.min(MAX_API));
    if v < MIN_API {
        return Err(DockerError::Protocol(format!(
            "engine speaks API {}.{}, lightd needs at least {}.{}",
            v.0, v.1, MIN_API.0, MIN_API.1
        )));
    }
    Ok(format!("{}.{}", v.0, v.1))
}

/// Keeps `reachable()` fresh for `/health`: a ping every few seconds, more often while the
/// engine is away so recovery is noticed quickly. Runs for the daemon's lifetime.
pub async fn watch(docker: std::sync::Arc<Docker>) {
    let mut was = None;
    loop {
        let now = docker.ping().await.is_ok();
        if was != Some(now) {
            let sock = docker.socket().display();
            match now {
                true => crate::info!("Docker engine reachable at {sock}"),
                false => crate::warn!("Docker engine unreachable at {sock}"),
            }
            was = Some(now);
        }
        let pause = if now { std::time::Duration::from_secs(5) } else { std::time::Duration::from_secs(1) };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_negotiation_never_exceeds_ours() {
        assert_eq!(negotiate(Some((1, 50))).unwrap(), "1.41");
        assert_eq!(negotiate(Some((1, 40))).unwrap(), "1.40");
        assert_eq!(negotiate(None).unwrap(), "1.41");
        assert!(negotiate(Some((1, 12))).is_err());
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert_eq!(parse_version("x"), None);
    }

    #[test]
    fn engine_error_messages() {
        assert_eq!(error_message(br#"{"message":"No such container: x"}"#), "No such container: x");
        assert_eq!(error_message(b"page not found\n"), "page not found");
    }
}
