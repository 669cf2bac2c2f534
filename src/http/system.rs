//! `GET /health`, `GET /api/v1/public/ping`, `GET /metrics`.

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde_json::json;

use super::reply::{full, ok, Reply};
use crate::app::App;
use crate::metrics::{gauge, resident_bytes};
use crate::model::PowerState;
use std::fmt::Write;

pub fn health(app: &App) -> Reply {
    let docker = if app.docker.reachable() { "reachable" } else { "unreachable" };
    ok(&json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION"), "docker": docker }))
}

pub fn ping() -> Reply {
    ok(&json!({ "status": "ok" }))
}

pub fn metrics(app: &App) -> Reply {
    let mut out = String::with_capacity(4096);
    app.metrics.render_http(&mut out);
    let (volumes, ports, ports_in_use, by_state) = app.store.read(|s| {
        let by_state = PowerState::ALL.map(|p| (p, s.containers.values().filter(|c| c.state == p).count()));
        (s.volumes.len(), s.ports.len(), s.ports.values().filter(|p| p.in_use).count(), by_state)
    });
    out.push_str("# HELP lightd_containers Containers on record, by power state.\n# TYPE lightd_containers gauge\n");
    for (state, n) in by_state {
        let _ = writeln!(out, "lightd_containers{{state=\"{}\"}} {n}", state.as_str());
    }
    gauge(&mut out, "lightd_volumes", "Volumes on record.", volumes as u64);
    gauge(&mut out, "lightd_pool_ports", "Ports in the network pool.", ports as u64);
    gauge(&mut out, "lightd_pool_ports_in_use", "Pool ports taken by containers.", ports_in_use as u64);
    gauge(&mut out, "lightd_docker_reachable", "1 when the Docker engine answers.", app.docker.reachable().into());
    gauge(&mut out, "lightd_uptime_seconds", "Seconds since start.", app.started.elapsed().as_secs());
    gauge(&mut out, "lightd_process_resident_bytes", "Resident memory of the daemon.", resident_bytes());
    let mut resp = Response::new(full(out));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}
