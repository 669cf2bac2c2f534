//! Extraction as a job, as a client drives it: post the archive, poll the job to its end.

use serde_json::{json, Value};

use super::{raw, wait_for, Daemon, Resp, TOKEN};

/// A raw POST with a byte body.
pub fn post_bytes(d: &Daemon, path: &str, body: &[u8]) -> Resp {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(d.port, &bytes).unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", d.log()))
}

/// Polls job `job` of volume `vol` until it is over (2 minutes at most); its last view.
pub fn wait_job(d: &Daemon, vol: &str, job: &str) -> Value {
    wait_for(120, &format!("job {job} to end"), || {
        let r = d.get(&format!("/volumes/{vol}/jobs/{job}"));
        assert_eq!(r.status, 200, "{}", r.body);
        Some(r.json()).filter(|v| v["state"] != "running")
    })
}

/// `POST /volumes/:vol/extract?<query>` with `body`, and how it ended: the job's last view,
/// or for a refusal at once `{"state": "refused", "status", "error"}`.
pub fn extract(d: &Daemon, vol: &str, query: &str, body: &[u8]) -> Value {
    let r = post_bytes(d, &format!("/volumes/{vol}/extract?{query}"), body);
    match r.status {
        202 => wait_job(d, vol, r.json()["job_id"].as_str().expect("a job_id")),
        status => json!({"state": "refused", "status": status, "error": r.json()["error"]}),
    }
}
