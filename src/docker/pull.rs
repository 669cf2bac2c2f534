//! `POST /images/create`: an image pull, its JSON progress stream read into
//! [`PullMessage`]s, and the engine's error line turned into the error.

use hyper::Method;
use serde_json::Value;

use super::api::{encode, split_image};
use super::auth::RegistryAuth;
use super::stream::{Chunks, LineSplitter};
use super::{Docker, DockerError};

/// A pull that reports no progress for this long is given up.
pub const PULL_STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// One progress message of a pull, as the engine sends it (one per layer change, often
/// many per second: callers throttle what they show).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PullMessage {
    /// The layer (short digest), or the tag for whole-image messages; absent for some.
    pub id: Option<String>,
    /// "Downloading", "Extracting", "Pull complete", "Digest: sha256:..", ...
    pub status: String,
    /// Bytes done and in all, while downloading or extracting.
    pub current: Option<u64>,
    pub total: Option<u64>,
}

impl PullMessage {
    /// Reads one line of the engine's stream: `Ok(None)` for lines that say nothing,
    /// `Err` with the engine's words for its error line.
    pub fn parse(line: &str) -> Result<Option<PullMessage>, String> {
        let Ok(v) = serde_json::from_str::<Value>(line) else { return Ok(None) };
        if let Some(err) = v.get("error").and_then(Value::as_str) {
            return Err(err.to_string());
        }
        let Some(status) = v.get("status").and_then(Value::as_str) else { return Ok(None) };
        let detail = |k: &str| v.pointer(&format!("/progressDetail/{k}")).and_then(Value::as_u64);
        Ok(Some(PullMessage {
            id: v.get("id").and_then(Value::as_str).map(str::to_owned),
            status: status.to_string(),
            current: detail("current"),
            total: detail("total").filter(|t| *t > 0),
        }))
    }
}

impl Docker {
    /// Pulls `image` (with `auth` sent as `X-Registry-Auth` when given), handing each
    /// progress message to `progress`; the engine's error line (unknown image, refused
    /// credentials, no registry) becomes the error. A pull that reports nothing for
    /// [`PULL_STALL`] is given up.
    pub async fn pull(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        mut progress: impl FnMut(PullMessage),
    ) -> Result<(), DockerError> {
        let (repo, tag) = split_image(image);
        let mut path = format!("/images/create?fromImage={}", encode(repo));
        path.push_str(&format!("&tag={}", encode(tag.unwrap_or("latest"))));
        let header = auth.map(RegistryAuth::header);
        let headers: Vec<(&'static str, &str)> = header.iter().map(|h| ("x-registry-auth", h.as_str())).collect();
        let resp = self.send_with(Method::POST, &path, None, &headers).await?;
        let mut chunks = Chunks(resp.into_body());
        let mut lines = LineSplitter::new(64 * 1024);
        let mut failure = None;
        loop {
            let chunk = match tokio::time::timeout(PULL_STALL, chunks.next()).await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(_) => return Err(DockerError::Timeout(format!("pull of {image} stalled"))),
            };
            lines.push(&chunk?, |line| match PullMessage::parse(&line) {
                Ok(Some(m)) => progress(m),
                Ok(None) => {}
                Err(e) => failure = Some(e),
            });
        }
        match failure {
            Some(message) => Err(DockerError::Api { status: 500, message }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        let m = PullMessage::parse(
            r#"{"status":"Downloading","progressDetail":{"current":512,"total":2048},"progress":"[==>  ]","id":"3f4e5d6c7b8a"}"#,
        );
        assert_eq!(
            m,
            Ok(Some(PullMessage {
                id: Some("3f4e5d6c7b8a".into()),
                status: "Downloading".into(),
                current: Some(512),
                total: Some(2048)
            }))
        );
        let m = PullMessage::parse(r#"{"status":"Digest: sha256:ab"}"#).unwrap().unwrap();
        assert_eq!((m.id, m.status.as_str(), m.total), (None, "Digest: sha256:ab", None));
        let m = PullMessage::parse(r#"{"status":"Waiting","progressDetail":{},"id":"a"}"#).unwrap().unwrap();
        assert_eq!((m.current, m.total), (None, None));
        assert_eq!(PullMessage::parse("not json"), Ok(None));
        assert_eq!(
            PullMessage::parse(r#"{"errorDetail":{"message":"x"},"error":"unauthorized: authentication required"}"#),
            Err("unauthorized: authentication required".into())
        );
    }
}
