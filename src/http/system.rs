//! `GET /health`, `GET /api/v1/public/ping`, `GET /openapi.json`, `GET /metrics`, and the node
//! room's answers: `GET /system` and `GET /containers/:id/usage` (no Docker call: read in the
//! background).

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde_json::json;

use super::handles::Handles;
use super::reply::{full, json_bytes, ok, ApiError, Reply};
use crate::console::ViewerKind;
use crate::metrics::{escape, gauge, resident_bytes};
use crate::model::PowerState;
use hyper::body::Bytes;
use hyper::StatusCode;
use std::fmt::Write;
use std::sync::atomic::Ordering::Acquire;

/// `GET /health`: answered from bytes made at compile time (the busiest public route).
pub fn health(app: &Handles) -> Reply {
    const UP: &str = concat!(r#"{"status":"ok","version":""#, env!("CARGO_PKG_VERSION"), r#"","docker":"reachable"}"#);
    const DOWN: &str =
        concat!(r#"{"status":"ok","version":""#, env!("CARGO_PKG_VERSION"), r#"","docker":"unreachable"}"#);
    let body = if app.docker().reachable() { UP } else { DOWN };
    json_bytes(StatusCode::OK, Bytes::from_static(body.as_bytes()))
}

pub fn ping() -> Reply {
    ok(&json!({ "status": "ok" }))
}

/// The OpenAPI 3.1 description at the repository root, compiled in.
pub const OPENAPI: &[u8] = include_bytes!("../../openapi.json");

pub fn openapi() -> Reply {
    json_bytes(hyper::StatusCode::OK, hyper::body::Bytes::from_static(OPENAPI))
}

/// `GET /system`: the node report, as last read in the background.
pub fn system(app: &Handles) -> Reply {
    json_bytes(StatusCode::OK, app.node().system(app.store()))
}

/// `GET /containers/:id/usage`: the server's meters as last read.
pub fn usage(app: &Handles, id: &str) -> Result<Reply, ApiError> {
    crate::lifecycle::check_id(id)?;
    let found = app.store().read(|s| s.containers.get(id).map(|r| (r.record_id.clone(), r.created_at)));
    let (record_id, created_at) = found.ok_or_else(crate::lifecycle::not_found)?;
    Ok(ok(&app.node().usage(id, &record_id, created_at)))
}

pub fn metrics(app: &Handles, connections: Option<usize>) -> Reply {
    let mut out = String::with_capacity(4096);
    app.metrics().render_http(&mut out);
    let (volumes, ports, ports_in_use, by_state) = app.store().read(|s| {
        let by_state = PowerState::ALL.map(|p| (p, s.containers.values().filter(|c| c.state == p).count()));
        (s.volumes.len(), s.ports.len(), s.ports.values().filter(|p| p.in_use).count(), by_state)
    });
    out.push_str("# HELP lightd_containers Containers on record, by power state.\n# TYPE lightd_containers gauge\n");
    for (state, n) in by_state {
        let _ = writeln!(out, "lightd_containers{{state=\"{}\"}} {n}", state.as_str());
    }
    console_metrics(app, &mut out);
    gauge(&mut out, "lightd_volumes", "Volumes on record.", volumes as u64);
    gauge(&mut out, "lightd_pool_ports", "Ports in the network pool.", ports as u64);
    gauge(&mut out, "lightd_pool_ports_in_use", "Pool ports taken by containers.", ports_in_use as u64);
    gauge(&mut out, "lightd_docker_reachable", "1 when the Docker engine answers.", app.docker().reachable().into());
    gauge(&mut out, "lightd_uptime_seconds", "Seconds since start.", app.started().elapsed().as_secs());
    gauge(&mut out, "lightd_process_resident_bytes", "Resident memory of the daemon.", resident_bytes());
    gauge(
        &mut out,
        "lightd_connections",
        "Open client connections and console sessions.",
        connections.unwrap_or(0) as u64,
    );
    app.node().render_metrics(app.store(), &mut out);
    app.sups().firewall().render_metrics(app.store(), &mut out);
    let mut resp = Response::new(full(out));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// Docker streams, viewers and console lines per container: the O(1) claim, checkable.
fn console_metrics(app: &Handles, out: &mut String) {
    let ids: Vec<String> = app.store().read(|s| s.containers.keys().cloned().collect());
    let hubs: Vec<(String, Option<std::sync::Arc<crate::console::Hub>>)> =
        ids.into_iter().map(|id| (escape(&id), app.hubs().peek(&id))).collect();
    out.push_str("# HELP lightd_docker_streams Open Docker streams by kind and container.\n");
    out.push_str("# TYPE lightd_docker_streams gauge\n");
    let events = u8::from(app.metrics().events_stream());
    let _ = writeln!(out, "lightd_docker_streams{{kind=\"events\",container=\"\"}} {events}");
    for (id, hub) in &hubs {
        let (attach, stats) =
            hub.as_ref().map_or((false, false), |h| (h.tty().attach_open.load(Acquire), h.stats().open.load(Acquire)));
        let _ = writeln!(out, "lightd_docker_streams{{kind=\"attach\",container=\"{id}\"}} {}", u8::from(attach));
        let _ = writeln!(out, "lightd_docker_streams{{kind=\"logs\",container=\"{id}\"}} 0");
        let _ = writeln!(out, "lightd_docker_streams{{kind=\"stats\",container=\"{id}\"}} {}", u8::from(stats));
    }
    out.push_str("# HELP lightd_viewers Open console sessions by container and kind.\n# TYPE lightd_viewers gauge\n");
    for (id, hub) in &hubs {
        for (kind, k) in [(ViewerKind::Ws, "ws"), (ViewerKind::Attach, "attach")] {
            let n = hub.as_ref().map_or(0, |h| h.tty().viewers(kind));
            let _ = writeln!(out, "lightd_viewers{{container=\"{id}\",kind=\"{k}\"}} {n}");
        }
    }
    out.push_str("# HELP lightd_console_lines_total Console lines read from Docker.\n");
    out.push_str("# TYPE lightd_console_lines_total counter\n");
    for (id, hub) in &hubs {
        let n = hub.as_ref().map_or(0, |h| h.tty().lines_total());
        let _ = writeln!(out, "lightd_console_lines_total{{container=\"{id}\"}} {n}");
    }
    let (held, reserved) = hubs
        .iter()
        .filter_map(|(_, h)| h.as_ref())
        .fold((0, 0), |(h, r), hub| (h + hub.tty().ring().bytes_held(), r + hub.tty().ring().bytes_reserved()));
    gauge(out, "lightd_console_ring_bytes", "Console ring bytes holding lines (all containers).", held);
    gauge(out, "lightd_console_ring_reserved_bytes", "Console ring bytes reserved (all containers).", reserved);
}
