//! Typed wrappers for the engine endpoints lightd uses (images, networks, containers).

use hyper::Method;
use serde_json::{json, Value};

use super::stream::{Chunks, OutputLines};
use super::{collect, Docker, DockerError};

/// A container as `GET /containers/json` lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub labels: serde_json::Map<String, Value>,
    pub running: bool,
}

/// Percent-encodes a query or path value (everything but unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Like [`encode`] but keeps `/`, `:` and `@`, for image references inside a path.
pub fn encode_ref(s: &str) -> String {
    encode(s).replace("%2F", "/").replace("%3A", ":").replace("%40", "@")
}

/// Splits `repo[:tag]` (a registry port is not a tag); digests pass whole.
pub fn split_image(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], Some(&image[i + 1..])),
        _ => (image, None),
    }
}

impl Docker {
    pub async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        match self.json(Method::GET, &format!("/images/{}/json", encode_ref(image)), None).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The image's own command (`Config.Cmd`), empty when it has none.
    pub async fn image_cmd(&self, image: &str) -> Result<Vec<String>, DockerError> {
        let v = self.json(Method::GET, &format!("/images/{}/json", encode_ref(image)), None).await?;
        let words = v["Config"]["Cmd"].as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(words.iter().filter_map(Value::as_str).map(String::from).collect())
    }

    /// Creates the bridge network `name` unless it exists; returns its id. The engine's
    /// duplicate check is not atomic, so racing creators (several daemons) can leave two
    /// networks of one name: the oldest is used (by id, never ambiguous) and empty twins go.
    pub async fn ensure_network(&self, name: &str, options: &Value) -> Result<String, DockerError> {
        let _one_at_a_time = self.network_lock.lock().await;
        let filter = encode(&format!(r#"{{"name":{{"{name}":true}}}}"#));
        let list = self.json(Method::GET, &format!("/networks?filters={filter}"), None).await?;
        let mut same: Vec<&Value> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n.get("Name").and_then(Value::as_str) == Some(name))
            .collect();
        if same.is_empty() {
            let body = json!({"Name": name, "Driver": "bridge", "CheckDuplicate": true, "Options": options,
                              "Labels": {"lightd.managed": "true"}});
            let created = self.json(Method::POST, "/networks/create", Some(&body)).await?;
            return created
                .get("Id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| DockerError::Protocol("network create answered without an Id".into()));
        }
        same.sort_by_key(|n| n.get("Created").and_then(Value::as_str).unwrap_or("").to_string());
        for twin in same.iter().skip(1) {
            let Some(id) = twin.get("Id").and_then(Value::as_str) else { continue };
            // A twin with containers on it cannot go; the engine then keeps reporting the name as
            // ambiguous, which is the clearest error there is.
            let _ = self.json(Method::DELETE, &format!("/networks/{}", encode(id)), None).await;
        }
        same[0]
            .get("Id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| DockerError::Protocol("network listed without an Id".into()))
    }

    /// Every container (running or not) carrying all of `labels` (`key=value` each).
    pub async fn list_containers(&self, labels: &[String]) -> Result<Vec<Listed>, DockerError> {
        let filters = encode(&json!({ "label": labels }).to_string());
        let v = self.json(Method::GET, &format!("/containers/json?all=1&filters={filters}"), None).await?;
        let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(list
            .iter()
            .filter_map(|c| {
                Some(Listed {
                    id: c.get("Id")?.as_str()?.to_string(),
                    labels: c.get("Labels").and_then(Value::as_object).cloned().unwrap_or_default(),
                    running: c.get("State").and_then(Value::as_str) == Some("running"),
                })
            })
            .collect())
    }

    /// Creates a container from `spec` (named `name`, or anonymous); returns its id.
    pub async fn create_container(&self, name: Option<&str>, spec: &Value) -> Result<String, DockerError> {
        let path = match name {
            Some(n) => format!("/containers/create?name={}", encode(n)),
            None => "/containers/create".to_string(),
        };
        let v = self.json(Method::POST, &path, Some(spec)).await?;
        v.get("Id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| DockerError::Protocol("container create answered without an Id".into()))
    }

    pub async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        match self.json(Method::POST, &format!("/containers/{}/start", encode(id)), None).await {
            Err(DockerError::Api { status: 304, .. }) | Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until the container stops; returns its exit code. No call timeout: the caller
    /// bounds it when it must.
    pub async fn wait_container(&self, id: &str) -> Result<i64, DockerError> {
        let resp = self.send(Method::POST, &format!("/containers/{}/wait", encode(id)), None).await?;
        let bytes = collect(resp.into_body()).await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| DockerError::Protocol(e.to_string()))?;
        if let Some(msg) = v.pointer("/Error/Message").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            return Err(DockerError::Api { status: 500, message: msg.to_string() });
        }
        v.get("StatusCode")
            .and_then(Value::as_i64)
            .ok_or_else(|| DockerError::Protocol("wait answered without StatusCode".into()))
    }

    /// Force-removes a container (with its anonymous volumes); an absent one is fine.
    pub async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        match self.json(Method::DELETE, &format!("/containers/{}?force=1&v=1", encode(id)), None).await {
            Err(e) if e.is_not_found() => Ok(()),
            Err(DockerError::Api { status: 409, message }) if message.contains("already in progress") => Ok(()),
            r => r.map(drop),
        }
    }

    pub async fn rename_container(&self, id: &str, name: &str) -> Result<(), DockerError> {
        let path = format!("/containers/{}/rename?name={}", encode(id), encode(name));
        self.json(Method::POST, &path, None).await.map(drop)
    }

    pub async fn inspect_container(&self, id: &str) -> Result<Value, DockerError> {
        self.json(Method::GET, &format!("/containers/{}/json", encode(id)), None).await
    }

    /// `docker stop`: SIGTERM, then SIGKILL after `grace` seconds; returns once it stopped.
    pub async fn stop_container(&self, id: &str, grace: u64) -> Result<(), DockerError> {
        let path = format!("/containers/{}/stop?t={grace}", encode(id));
        let call = async {
            let resp = self.send(Method::POST, &path, None).await?;
            collect(resp.into_body()).await.map(drop)
        };
        match tokio::time::timeout(std::time::Duration::from_secs(grace + 30), call).await {
            Err(_) => Err(DockerError::Timeout(format!("stopping {id}"))),
            Ok(Err(DockerError::Api { status: 304, .. })) | Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Sends `signal` (e.g. `SIGKILL`) to the container's main process.
    pub async fn kill_container(&self, id: &str, signal: &str) -> Result<(), DockerError> {
        let path = format!("/containers/{}/kill?signal={}", encode(id), encode(signal));
        self.json(Method::POST, &path, None).await.map(drop)
    }

    pub async fn pause_container(&self, id: &str) -> Result<(), DockerError> {
        self.json(Method::POST, &format!("/containers/{}/pause", encode(id)), None).await.map(drop)
    }

    pub async fn unpause_container(&self, id: &str) -> Result<(), DockerError> {
        self.json(Method::POST, &format!("/containers/{}/unpause", encode(id)), None).await.map(drop)
    }

    /// Attaches to stdin, stdout and stderr (before start, so no output is missed). The
    /// connection then carries multiplexed output frames in and raw stdin bytes out.
    pub async fn attach(&self, id: &str) -> Result<hyper::upgrade::Upgraded, DockerError> {
        let path = format!("/containers/{}/attach?stream=1&stdin=1&stdout=1&stderr=1", encode(id));
        self.upgrade(Method::POST, &path).await
    }

    /// One JSON stats object per second until the container stops or the caller drops it.
    pub async fn stats(&self, id: &str) -> Result<Chunks, DockerError> {
        let path = format!("/containers/{}/stats?stream=1", encode(id));
        Ok(Chunks(self.send(Method::GET, &path, None).await?.into_body()))
    }

    /// The engine's event stream (JSON lines) for containers carrying `label`.
    pub async fn container_events(&self, label: &str) -> Result<Chunks, DockerError> {
        let filters = encode(&format!(r#"{{"type":["container"],"label":["{label}"]}}"#));
        Ok(Chunks(self.send(Method::GET, &format!("/events?filters={filters}"), None).await?.into_body()))
    }

    /// The last `n` lines the container printed (from its log), as text.
    pub async fn log_tail(&self, id: &str, n: usize, max_line: usize) -> Result<Vec<String>, DockerError> {
        let path = format!("/containers/{}/logs?stdout=1&stderr=1&tail={n}", encode(id));
        let body = self.send(Method::GET, &path, None).await?.into_body();
        let bytes = tokio::time::timeout(super::CALL_TIMEOUT, collect(body))
            .await
            .map_err(|_| DockerError::Timeout(format!("reading the log of {id}")))??;
        let mut lines = Vec::new();
        let mut out = OutputLines::new(max_line);
        out.push(&bytes, |l| lines.push(l));
        out.finish(|l| lines.push(l));
        Ok(lines)
    }

    /// The container's stdout and stderr as multiplexed frames (see `frame`), following
    /// until it stops.
    pub async fn follow_logs(&self, id: &str) -> Result<Chunks, DockerError> {
        let path = format!("/containers/{}/logs?follow=1&stdout=1&stderr=1", encode(id));
        Ok(Chunks(self.send(Method::GET, &path, None).await?.into_body()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert_eq!(split_image("ubuntu:22.04"), ("ubuntu", Some("22.04")));
        assert_eq!(split_image("ubuntu"), ("ubuntu", None));
        assert_eq!(split_image("reg:5000/team/app"), ("reg:5000/team/app", None));
        assert_eq!(split_image("reg:5000/app:1"), ("reg:5000/app", Some("1")));
        assert_eq!(split_image("app@sha256:abc"), ("app@sha256:abc", None));
        assert_eq!(encode("lightd-test/busybox:latest"), "lightd-test%2Fbusybox%3Alatest");
    }
}
