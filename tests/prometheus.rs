//! lightd under a real Prometheus (Debian's package): scraped with its bearer token every
//! second, the request counts Prometheus stores are exactly what the test sent, per method
//! and status (no series dropped as a duplicate), and `promtool check metrics` finds
//! nothing to lint in `/metrics`.

mod common;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use common::service::{prometheus, query_encode, require_program, run, Service};
use common::*;
use serde_json::{json, Value};

/// The `data.result` of an instant query.
fn query(p: &Service, q: &str) -> Vec<Value> {
    let r = p.get(&format!("/api/v1/query?query={}", query_encode(q)));
    assert_eq!(r.status, 200, "{q}: {}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// A sample's value as a number.
fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no value in {sample}"))
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn prometheus_stores_the_request_counts_that_were_sent() {
    require_docker();
    let d = Daemon::start();
    let dir = TempDir::new("prometheus");
    let p = prometheus(&dir.0, d.port);

    // Requests to one route, counted by (method, status) as they are sent.
    let mut sent: BTreeMap<(&str, String), u64> = BTreeMap::new();
    let mut tally = |method: &'static str, r: &Resp| *sent.entry((method, r.status.to_string())).or_default() += 1;
    let mut volumes = Vec::new();
    for _ in 0..3 {
        let r = d.call("POST", "/volumes", None);
        assert_eq!(r.status, 201, "{}", r.body);
        volumes.push(r.json()["volume_id"].as_str().unwrap().to_string());
        tally("POST", &r);
    }
    for _ in 0..4 {
        let r = d.get("/volumes");
        assert_eq!(r.status, 200);
        tally("GET", &r);
    }
    for _ in 0..2 {
        let r = d.call_with("GET", "/volumes", None, &[]);
        assert_eq!(r.status, 401);
        tally("GET", &r);
    }
    for _ in 0..5 {
        let r = d.call_with("POST", "/volumes", None, &[("Authorization", "Bearer lightd_wrongwrongwrongwrong")]);
        assert_eq!(r.status, 401);
        tally("POST", &r);
    }
    // A container on record, so the per-container series exist too.
    let id = d.id("prom");
    let body = json!({"internal_id": id, "image": IMAGE, "volume_id": volumes[0], "startup_command": "sleep 600"});
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    assert_eq!(d.wait_installed(&id, 120)["install_state"], "ready");
    let done = now_secs();

    // Two scrapes that began after the last request.
    wait_for(60, "two scrapes after the requests", || {
        let r = query(&p, "up{job=\"lightd\"}[1m]");
        let stamps = r.first()?["values"].as_array()?.iter().filter_map(|s| s[0].as_f64()).filter(|t| *t > done);
        (stamps.count() >= 2).then_some(())
    });
    let up = query(&p, "up{job=\"lightd\"}");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(value(&up[0]), 1.0, "Prometheus reaches lightd with the bearer token: {up:?}\n{}", p.log());

    let containers = query(&p, "lightd_containers{job=\"lightd\"}");
    let by_state: BTreeMap<String, f64> =
        containers.iter().map(|s| (s["metric"]["state"].as_str().unwrap().to_string(), value(s))).collect();
    let states = ["offline", "running", "starting", "stopping", "suspended"];
    assert_eq!(by_state.keys().map(String::as_str).collect::<Vec<_>>(), states, "{containers:?}");
    assert_eq!(by_state["offline"], 1.0, "{by_state:?}");

    let stored = query(&p, "lightd_http_requests_total{job=\"lightd\",route=\"/volumes\"}");
    let stored: BTreeMap<(String, String), u64> = stored
        .iter()
        .map(|s| {
            let m = &s["metric"];
            let key = (m["method"].as_str().unwrap().to_string(), m["status"].as_str().unwrap().to_string());
            (key, value(s) as u64)
        })
        .collect();
    let expected: BTreeMap<(String, String), u64> =
        sent.iter().map(|((m, s), n)| ((m.to_string(), s.clone()), *n)).collect();
    assert_eq!(stored, expected, "what Prometheus stored for /volumes, by (method, status)");

    // Prometheus dropped no sample of ours as a duplicate series.
    let own = p.get("/metrics").body;
    assert_eq!(metric(&own, "prometheus_target_scrapes_sample_duplicate_timestamp_total"), Some(0), "{own}");

    // The exposition passes promtool's parser and linter.
    let text = d.get("/metrics").body;
    assert!(text.contains(&format!("lightd_viewers{{container=\"{id}\",kind=\"ws\"}} 0")), "{text}");
    require_program("promtool", "prometheus");
    let (ok, out, err) = run("promtool", &["check", "metrics"], &[], Some(text.as_bytes()));
    assert!(ok && out.trim().is_empty() && err.trim().is_empty(), "promtool check metrics:\n{out}{err}\n{text}");
}
