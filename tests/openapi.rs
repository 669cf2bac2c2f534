//! `openapi.json` (the repository root) against the router: every route of the table is
//! described and nothing else is, the document is OpenAPI 3.1 whose references all resolve,
//! and `GET /openapi.json` serves exactly that file without a token.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn spec_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn spec() -> Value {
    serde_json::from_str(&spec_text()).unwrap_or_else(|e| panic!("openapi.json is not JSON: {e}"))
}

/// `/volumes/:volume_id` as OpenAPI writes it: `/volumes/{volume_id}`.
fn openapi_path(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|s| s.strip_prefix(':').map_or_else(|| s.to_string(), |p| format!("{{{p}}}")))
        .collect::<Vec<_>>()
        .join("/")
}

/// Every (METHOD, path) the document describes.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_object().expect("paths is an object");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        for (key, _) in item.as_object().expect("a path item is an object") {
            if METHODS.contains(&key.as_str()) {
                ops.insert((key.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn spec_and_router_describe_the_same_routes() {
    let spec = spec();
    let described = operations(&spec);
    let routed: BTreeSet<(String, String)> =
        lightd::http::router::routes().into_iter().map(|(m, p)| (m.to_string(), openapi_path(p))).collect();
    let undocumented: Vec<_> = routed.difference(&described).collect();
    let unrouted: Vec<_> = described.difference(&routed).collect();
    assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
    assert!(unrouted.is_empty(), "operations in openapi.json that the router does not have: {unrouted:?}");
    eprintln!("openapi.json describes the router's {} routes", routed.len());
}

#[test]
fn spec_is_openapi_3_1_and_consistent() {
    let spec = spec();
    let version = spec["openapi"].as_str().expect("an openapi version string");
    assert!(version.starts_with("3.1."), "openapi {version}, not 3.1.x");
    assert!(spec["info"]["title"].is_string() && spec["info"]["version"].is_string());
    assert_eq!(spec["security"], serde_json::json!([{"bearerAuth": []}]), "bearer auth is the global default");
    assert_eq!(spec["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
    let mut public = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        let names: BTreeSet<&str> = path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
        for (method, op) in item.as_object().unwrap() {
            let label = format!("{method} {path}");
            assert!(op["operationId"].is_string(), "{label}: operationId");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{label}: responses"));
            assert!(!responses.is_empty(), "{label}: no responses");
            for code in responses.keys() {
                assert!(code.len() == 3 && code.parse::<u16>().is_ok(), "{label}: status {code:?}");
            }
            if op["security"] == serde_json::json!([]) {
                public.insert(format!("{} {path}", method.to_ascii_uppercase()));
            } else if path != "/ws/{internal_id}" {
                assert!(responses.contains_key("401"), "{label}: a guarded route answers 401");
            }
            // Path parameters: exactly the path's names, each required.
            let params: Vec<Value> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| resolve(&spec, p).clone())
                .filter(|p| p["in"] == "path")
                .collect();
            let declared: BTreeSet<&str> = params.iter().filter_map(|p| p["name"].as_str()).collect();
            assert_eq!(declared, names, "{label}: path parameters");
            assert!(params.iter().all(|p| p["required"] == true), "{label}: path parameters are required");
        }
    }
    let want: BTreeSet<String> =
        ["GET /health", "GET /api/v1/public/ping", "GET /openapi.json"].into_iter().map(String::from).collect();
    assert_eq!(public, want, "the routes with security: [] are the public ones");
    // Every local reference points at something.
    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r}: only local references"));
        assert!(spec.pointer(pointer).is_some(), "{r} resolves to nothing");
    }
}

/// Follows a local `$ref`.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => spec.pointer(pointer).unwrap_or_else(|| panic!("{pointer} resolves to nothing")),
        None => v,
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

#[test]
fn served_openapi_is_the_file() {
    let d = Daemon::start();
    // Public: no token at all.
    let r = d.call_with("GET", "/openapi.json", None, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, spec_text(), "GET /openapi.json serves openapi.json byte for byte");
    // A wrong token changes nothing, and the Accept rules apply as everywhere.
    let r = d.call_with("GET", "/openapi.json", None, &[("Authorization", "Bearer lightd_wrongwrongwrong")]);
    assert_eq!(r.status, 200);
    let r = d.call_with("GET", "/openapi.json", None, &[("Accept", "text/html")]);
    assert_eq!(r.status, 406, "{}", r.body);
    let r = d.call_with("POST", "/openapi.json", None, &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
}
