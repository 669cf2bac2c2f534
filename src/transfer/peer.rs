//! The source's client of the target node: one HTTP/1.1 request per connection over TCP
//! (hyper's client connection, as the Docker client does over its socket), authenticated
//! with the transfer token.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Connecting to the target may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from the target.
const MAX_ANSWER: usize = 64 << 20;

/// The target node, as `POST /containers/:id/transfer` named it.
#[derive(Clone, Debug)]
pub struct Peer {
    host: String,
    port: u16,
    token: String,
}

impl Peer {
    /// Checks `url` (`http://host:port`, nothing after it) and `token`.
    pub fn new(url: &str, token: &str) -> Result<Peer, String> {
        let uri: Uri = url.parse().map_err(|_| format!("target {url:?} is not a URL like http://node2:8080"))?;
        if uri.scheme_str() != Some("http") || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(format!("target {url:?} must be http://host:port with nothing after it"));
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("target {url:?} names no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if token.is_empty() || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("token must be the transfer token the target node issued (POST /auth/tokens there)".into());
        }
        Ok(Peer { host, port: uri.port_u16().unwrap_or(80), token: token.to_string() })
    }

    /// Sends one request and reads its answer; any status but 2xx is an error naming it.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: &str,
        timeout: Duration,
    ) -> Result<Bytes, String> {
        let work = async {
            let addr = (self.host.as_str(), self.port);
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| "connecting to the target timed out".to_string())?
                .map_err(|e| format!("cannot reach the target: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("cannot talk to the target: {e}"))?;
            crate::shutdown::detach(async move {
                let _ = conn.await;
            });
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", format!("{}:{}", self.host, self.port))
                .header("authorization", format!("Bearer {}", self.token))
                .header("content-type", content_type)
                .body(Full::new(body))
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| format!("the target broke off: {e}"))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("the target broke off its answer: {e}"))?
                .to_bytes();
            if status.is_success() {
                return Ok(bytes);
            }
            Err(refusal(status, &bytes))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("the target did not answer within {timeout:?}"))?
    }
}

impl Peer {
    /// Sends `body` as JSON and reads the JSON answer.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<T, String> {
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let answer = self.call(Method::POST, path, body.into(), "application/json", timeout).await?;
        answer_of(&answer)
    }
}

/// The target's JSON answer, typed.
pub fn answer_of<T: serde::de::DeserializeOwned>(answer: &[u8]) -> Result<T, String> {
    serde_json::from_slice(answer).map_err(|e| format!("the target's answer is not understood: {e}"))
}

/// The target's refusal as one sentence: its status and its `error`.
fn refusal(status: StatusCode, body: &[u8]) -> String {
    let said = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    format!("the target refused ({}): {said}", status.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_targets_and_sane_tokens() {
        let p = Peer::new("http://127.0.0.1:8081", "lightd_abc").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("127.0.0.1", 8081));
        assert_eq!(Peer::new("http://[::1]:9", "t").unwrap().host, "::1");
        assert_eq!(Peer::new("http://node2/", "t").unwrap().port, 80);
        for bad in ["node2:8080", "https://node2", "http://node2/x", "ftp://a", "", "http://"] {
            assert!(Peer::new(bad, "t").is_err(), "{bad}");
        }
        assert!(Peer::new("http://a:1", "").is_err());
        assert!(Peer::new("http://a:1", "a b").is_err());
    }
}
