//! Public routes, auth and Accept rules, error shapes, CLI, Docker reachability.

mod common;

use std::process::Command;

use common::service::output_within;
use common::*;
use serde_json::json;

#[test]
fn public_routes_need_no_token() {
    require_docker();
    let d = Daemon::start();
    let h = d.call_with("GET", "/health", None, &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    assert_eq!(h.json()["docker"], "reachable");
    assert_eq!(h.json()["version"], env!("CARGO_PKG_VERSION"));
    assert!(!h.body.contains(TOKEN));
    let p = d.call_with("GET", "/api/v1/public/ping", None, &[]);
    assert_eq!((p.status, p.json()), (200, json!({"status": "ok"})));
}

/// A plausible value for a `:param` of a route pattern.
fn plausible(param: &str) -> &'static str {
    match param {
        "volume_id" => "d6764075-c5f1-4045-9fb3-85315b85cb0f",
        "ip" => "0.0.0.0",
        "port" => "25565",
        "id" | "internal_id" => "srv-1",
        _ => "a1",
    }
}

/// The path of `pattern` with every `:param` filled in.
fn fill(pattern: &'static str) -> String {
    let segment = |s: &'static str| s.strip_prefix(':').map_or(s, plausible);
    pattern.split('/').map(segment).collect::<Vec<_>>().join("/")
}

#[test]
fn every_other_route_needs_the_token() {
    let d = Daemon::start();
    // The router's own table: a route added later is covered without touching this test.
    let routes = lightd::http::router::routes();
    let public = [("GET", "/health"), ("GET", "/api/v1/public/ping"), ("GET", "/openapi.json")];
    for p in public {
        assert!(routes.contains(&p), "{p:?} is in the table: {routes:?}");
    }
    let guarded: Vec<(&str, String)> =
        routes.iter().filter(|r| !public.contains(r)).map(|(m, p)| (*m, fill(p))).collect();
    assert!(guarded.len() >= 20, "the table has its routes: {routes:?}");
    let wrong = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    for (m, p) in &guarded {
        let no_scheme: &[(&str, &str)] = &[("Authorization", TOKEN)];
        for headers in [&[][..], &[("Authorization", wrong.as_str())][..], no_scheme] {
            let r = d.call_with(m, p, None, headers);
            assert_eq!(r.status, 401, "{m} {p} with {headers:?}: {}", r.body);
            assert!(r.error().contains("token"), "{m} {p}: {}", r.body);
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{m} {p}");
        }
        // A wrong token in the query opens nothing either.
        let r = d.call_with(m, &format!("{p}?token=lightd_wrongwrongwrongwrong"), None, &[]);
        assert_eq!(r.status, 401, "{m} {p}?token=wrong: {}", r.body);
    }
    // Nothing was created by the refused calls.
    assert_eq!(d.get("/volumes").json()["volumes"], json!([]));
    assert_eq!(d.get("/network/ports").json()["ports"], json!([]));
    // With the token each of them is reached (so the 401s above came from the token check,
    // not from a path that matched nothing): a 404 may say the thing named is missing, never
    // that the router has no such route, and the method is the route's (no 405).
    for (m, p) in &guarded {
        let r = d.call(m, p, None);
        assert!(
            r.status != 401 && r.status != 405 && r.status < 500,
            "{m} {p} with the token: {} {}",
            r.status,
            r.body
        );
        if r.status == 404 {
            assert_ne!(r.error(), "No such route", "{m} {p} matched no route");
        }
    }
    // The router's own 404, for contrast: what the check above tells apart.
    assert_eq!(d.get("/no-such-route").error(), "No such route");
}

/// The test client's own HTTP reader: a malformed or cut chunked body is an error, never a
/// shorter body that a check could take for the whole answer.
#[test]
fn the_test_client_refuses_a_malformed_chunked_body() {
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let parse = |body: &str| parse_response(format!("{head}{body}").as_bytes());
    let ok = parse("3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n").expect("a well-formed body");
    assert_eq!(ok.body, "abcde");
    for (bad, what) in [
        ("3\r\nabc\r\nzz\r\nde\r\n0\r\n\r\n", "a chunk size that is not hex"),
        ("3\r\nabc\r\n\r\nde\r\n0\r\n\r\n", "an empty chunk size"),
        ("3\r\nabc\r\n9\r\nde\r\n0\r\n\r\n", "a chunk shorter than its size"),
        ("3\r\nabcd\r\n0\r\n\r\n", "a chunk longer than its size"),
        ("3\r\nabc\r\n", "no last chunk (the stream was cut)"),
        ("3\r\nab", "cut inside a chunk"),
    ] {
        match parse(bad) {
            Err(e) => assert!(e.to_string().contains("bad chunked body"), "{what}: {e}"),
            Ok(r) => panic!("{what}: parsed as the body {:?}", r.body),
        }
    }
}

#[test]
fn accept_header_rules() {
    let d = Daemon::start();
    let auth = format!("Bearer {TOKEN}");
    for accept in ["Application/vnd.pkglatv1+json", "application/json", "*/*", "APPLICATION/JSON; q=1"] {
        let r = d.call_with("GET", "/volumes", None, &[("Authorization", &auth), ("Accept", accept)]);
        assert_eq!(r.status, 200, "Accept: {accept}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // Plain curl sends */*; no header at all works too.
    assert_eq!(d.call_with("GET", "/volumes", None, &[("Authorization", &auth)]).status, 200);
    let r = d.call_with("GET", "/volumes", None, &[("Authorization", &auth), ("Accept", "text/html")]);
    assert_eq!(r.status, 406);
    assert!(r.error().contains("application/json"));
    let r = d.call_with("GET", "/health", None, &[("Accept", "text/html")]);
    assert_eq!(r.status, 406);
    // Prometheus asks for text.
    let r = d.call_with("GET", "/metrics", None, &[("Authorization", &auth), ("Accept", "text/plain;version=0.0.4")]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("lightd_process_resident_bytes "));
}

#[test]
fn routing_errors_and_body_rules() {
    let d = Daemon::start();
    let r = d.get("/nowhere");
    assert_eq!(r.status, 404);
    assert!(!r.error().is_empty());
    let r = d.call("PUT", "/volumes", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST"));
    assert!(r.error().contains("GET, POST"));

    // Wrong content type.
    let body = r#"{"ip":"127.0.0.1","port":1}"#;
    let req = format!(
        "POST /network/ports HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = d.try_raw(req.as_bytes()).unwrap();
    assert_eq!(r.status, 415, "{}", r.body);
    // Too large (declared), and too large (actually sent, chunked).
    let req = format!(
        "POST /network/ports HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
    );
    assert_eq!(d.try_raw(req.as_bytes()).unwrap().status, 413);
    let mut req = format!(
        "POST /network/ports HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..20 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = d.try_raw(&req).unwrap();
    assert_eq!(r.status, 413, "{}", r.body);
    // Malformed JSON, unknown field named.
    let r = d.call_with(
        "POST",
        "/network/ports",
        Some(json!({"ip":"127.0.0.1","port":1,"colour":"red"})),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("colour"), "{}", r.error());
    let req = format!(
        "POST /network/ports HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 5\r\n\r\n{{\"ip\""
    );
    let r = d.try_raw(req.as_bytes()).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.error().contains("invalid JSON"), "{}", r.body);
    // The daemon is still fine.
    assert_eq!(d.get("/health").status, 200);
}

#[test]
fn metrics_count_requests() {
    let d = Daemon::start();
    d.get("/volumes");
    d.get("/volumes");
    d.call_with("GET", "/volumes", None, &[]);
    let m = d.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let volumes = "method=\"GET\",route=\"/volumes\"";
    assert!(m.body.contains(&format!("lightd_http_requests_total{{{volumes},status=\"200\"}} 2\n")), "{}", m.body);
    assert!(m.body.contains(&format!("lightd_http_requests_total{{{volumes},status=\"401\"}} 1\n")));
    // Three requests timed, each within the histogram's buckets.
    assert!(m.body.contains(&format!("lightd_http_request_duration_seconds_count{{{volumes}}} 3\n")), "{}", m.body);
    assert!(m.body.contains(&format!("lightd_http_request_duration_seconds_bucket{{{volumes},le=\"+Inf\"}} 3\n")));
    let rss: u64 = m
        .body
        .lines()
        .find_map(|l| l.strip_prefix("lightd_process_resident_bytes "))
        .and_then(|v| v.parse().ok())
        .expect("rss gauge");
    assert!(rss > 0);
}

#[test]
fn missing_docker_socket_is_reported_not_fatal() {
    let d = Daemon::start_with(|c| c["docker"] = json!({"socket_path": "/nonexistent/docker.sock"}));
    let h = d.call_with("GET", "/health", None, &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["docker"], "unreachable");
    // Routes that do not need Docker keep working.
    assert_eq!(d.call("POST", "/volumes", None).status, 201);
    let m = d.get("/metrics");
    assert!(m.body.contains("lightd_docker_reachable 0\n"));
}

#[test]
fn graceful_stop_on_sigterm() {
    let mut d = Daemon::start();
    d.stop();
    assert!(d.log().contains("stopped"), "{}", d.log());
}

#[test]
fn cli_version_check_config_and_token() {
    let out = output_within(Command::new(bin()).arg("--version"), 20);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("lightd {}", env!("CARGO_PKG_VERSION")));

    let dir = TempDir::new("cli");
    let cfg = dir.0.join("config.json");
    // A --config that names no file is an error (embedded defaults only without --config).
    let out = output_within(Command::new(bin()).args(["--check-config", "--config"]).arg(&cfg), 20);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!cfg.exists(), "--check-config must not write");
    let out = output_within(Command::new(bin()).args(["--config"]).arg(&cfg), 20);
    assert_eq!(out.status.code(), Some(2), "serving refuses it too");
    // Without --config, the embedded defaults are valid.
    let out = output_within(Command::new(bin()).arg("--check-config").current_dir(&dir.0), 20);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("embedded defaults"));

    // Bad files: exit code 2 and a message naming the problem.
    for (text, needle) in [
        ("{not json", "not valid"),
        (r#"{"server":{"port":"eighty"}}"#, "server: invalid type"),
        (r#"{"sever":{}}"#, "sever"),
        (r#"{"console":{"ring_lines":10,"tail_lines":50}}"#, "tail_lines"),
        (r#"{"volumes":{"default_size_limit":"lots"}}"#, "default_size_limit"),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let out = output_within(Command::new(bin()).arg("--check-config").arg("--config").arg(&cfg), 20);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
        // Serving refuses it the same way.
        let out = output_within(Command::new(bin()).arg("--config").arg(&cfg), 20);
        assert_eq!(out.status.code(), Some(2), "{text}");
    }
    let out = output_within(Command::new(bin()).args(["--token", "maybe"]), 20);
    assert_eq!(out.status.code(), Some(2));

    // A missing token is generated into the state directory (never into the config, which
    // may be a tracked file); reset replaces it there.
    let state = dir.0.join("state.json");
    let text = json!({"server": {"port": 9999}, "storage": {"state_file": state}}).to_string();
    std::fs::write(&cfg, &text).unwrap();
    let what = |arg: &str| {
        let out = output_within(Command::new(bin()).args(["--token", arg, "--config"]).arg(&cfg), 20);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first = what("what");
    assert!(first.starts_with("lightd_") && first.len() >= 39, "{first}");
    assert_eq!(what("what"), first);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text, "the config is not touched");
    let token_file = dir.0.join("token");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), first);
    let second = what("reset");
    assert_ne!(second, first);
    assert_eq!(what("what"), second);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    // A token the config names is the operator's: reset writes it back there (mode 0600).
    let named = json!({"storage": {"state_file": state}, "authorization": {"token": TOKEN}}).to_string();
    std::fs::write(&cfg, named).unwrap();
    assert_eq!(what("what"), TOKEN);
    let third = what("reset");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(saved["authorization"]["token"], third.as_str());
    assert_eq!(std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777, 0o600);
}
