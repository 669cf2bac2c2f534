//! Hostile input: malformed bodies, wrong types, huge numbers, unicode and path tricks in
//! every id and path field, symlinked volume dirs, header abuse and random bytes. Every
//! answer is a clear 4xx (or a closed connection), and the daemon keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn still_fine(d: &Daemon) {
    let h = d.call_with("GET", "/health", None, &[]);
    assert_eq!(h.status, 200, "daemon still answers: {}", d.log());
}

#[test]
fn bodies_ids_and_paths() {
    require_docker();
    let d = Daemon::start();
    let (vol, _) = d.new_volume();
    let base = json!({"internal_id": "ok-id", "image": IMAGE, "volume_id": vol, "startup_command": "true"});
    let tricks = [
        "../../etc/passwd",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "a\u{0}b",
        "é",
        "\u{202e}evil",
        " ",
        "",
        ".",
        "..",
        "%2e%2e",
        "a b",
        "a:b",
        "x".repeat(65).leak(),
        "${HOME}",
        "$(id)",
        "`id`",
        "a\nb",
    ];
    for t in tricks {
        for field in ["internal_id", "volume_id", "image"] {
            // Valid image references (a repository path, a tag, a long name) are not tricks.
            if field == "image" && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"/:".contains(&b)) && !t.is_empty() {
                continue;
            }
            let mut body = base.clone();
            body[field] = json!(t);
            let r = d.call("POST", "/containers", Some(body));
            assert_eq!(r.status, 400, "{field}={t:?}: {}", r.body);
            assert!(!r.error().is_empty());
        }
    }
    // Wrong types, huge and negative numbers, deep nesting.
    let nested = "[".repeat(10_000) + &"]".repeat(10_000);
    for (field, value) in [
        ("internal_id", json!(7)),
        ("ports", json!("25565")),
        ("ports", json!([{"ip": "0.0.0.0", "port": 18446744073709551616u128 as f64}])),
        ("ports", json!([{"ip": "0.0.0.0", "port": 99999999999u64}])),
        ("limits", json!({"memory": 1e300})),
        ("limits", json!({"memory": -1})),
        ("limits", json!({"cpu": 1e308})),
        ("limits", json!({"cpu": "fast"})),
        ("env", json!(["A=1"])),
        ("mount", json!({"/x": 5})),
        ("start_pattern", json!("(".repeat(5000))),
        ("start_pattern", json!("a{99999}{99999}")),
    ] {
        let mut body = base.clone();
        body[field] = value.clone();
        let r = d.call("POST", "/containers", Some(body));
        assert_eq!(r.status, 400, "{field}={value}: {}", r.body);
    }
    for raw in [
        nested.as_str(),
        "{\"internal_id\": \"a\", \"internal_id\": \"b\"}",
        "\u{feff}{}",
        "null",
        "1e999",
        "{\"a\":\"\\ud800\"}",
    ] {
        let req = format!(
            "POST /containers HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{raw}",
            raw.len()
        );
        let r = d.try_raw(req.as_bytes()).unwrap();
        assert_eq!(r.status, 400, "{:.60}: {}", raw, r.body);
    }
    // Path tricks in every path parameter.
    for p in ["..%2F..%2Fetc", "%2e%2e", "%00", "%ff%fe", "a%2Fb", "%E2%80%AE", "x".repeat(300).leak()] {
        for path in [
            format!("/containers/{p}"),
            format!("/containers/{p}/start"),
            format!("/containers/{p}/logs"),
            format!("/volumes/{p}"),
            format!("/network/ports/{p}/80"),
            format!("/network/ports/127.0.0.1/{p}"),
        ] {
            let r = d.get(&path);
            assert!(matches!(r.status, 400 | 404 | 405), "{path}: {} {}", r.status, r.body);
            let r = d.call("POST", &path, None);
            assert!(matches!(r.status, 400 | 404 | 405), "POST {path}: {} {}", r.status, r.body);
            assert!(r.json()["error"].is_string(), "{path}: {}", r.body);
        }
    }
    let r = d.get("/containers/..%2F..%2Fetc%2Fpasswd");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("internal_id"));
    assert_eq!(d.get("/containers").json()["containers"], json!([]), "nothing was created");
    still_fine(&d);
}

#[test]
fn symlinked_volume_dirs_are_never_followed() {
    require_docker();
    // Plain-directory volumes: a loop volume's directory is a mount point, not replaceable.
    let d = Daemon::start_with(|c| c["volumes"]["quota"] = json!("none"));
    let (vol, path) = d.new_volume();
    let outside = TempDir::new("outside");
    std::fs::write(outside.0.join("secret"), vec![1u8; 5000]).unwrap();
    std::fs::remove_dir(&path).unwrap();
    std::os::unix::fs::symlink(&outside.0, &path).unwrap();
    assert_eq!(d.get(&format!("/volumes/{vol}")).json()["used_bytes"], 0, "the link is not followed");
    let id = d.id("linked");
    let body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol, "startup_command": "true"});
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    let rec = d.wait_installed(&id, 120);
    assert_eq!(rec["install_state"], "failed");
    assert!(rec["error"].as_str().unwrap().contains("not a plain directory"), "{rec}");
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).status, 200);
    assert_eq!(d.call("DELETE", &format!("/volumes/{vol}"), None).status, 200);
    assert!(outside.0.join("secret").exists(), "deleting the volume removed only the link");
    // A link planted inside a volume is not followed by the size count either.
    let (vol2, path2) = d.new_volume();
    std::os::unix::fs::symlink(&outside.0, path2.join("escape")).unwrap();
    assert_eq!(d.get(&format!("/volumes/{vol2}")).json()["used_bytes"], 0);
    assert_eq!(d.call("DELETE", &format!("/volumes/{vol2}"), None).status, 200);
    assert!(outside.0.join("secret").exists());
}

/// What a request the daemon should refuse got: a 4xx (one of `codes`) or a connection
/// closed without an answer; never a success, a server error or silence.
fn refused(what: &str, r: std::io::Result<Resp>, codes: &[u16]) {
    match r {
        Ok(r) => assert!(codes.contains(&r.status), "{what}: {} {}", r.status, r.body),
        Err(e) => assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "{what}: no answer and not closed either ({e})"
        ),
    }
}

#[test]
fn header_abuse() {
    let d = Daemon::start();
    // No Host header (HTTP/1.0 and 1.1).
    for req in ["GET /health HTTP/1.0\r\n\r\n", "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"] {
        let r = d.try_raw(req.as_bytes()).unwrap();
        assert!(r.status == 200 || r.status == 400, "{req:?}: {}", r.status);
    }
    // 100 KB of headers: refused, never buffered without bound.
    let big =
        format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(100 * 1024));
    refused("100 KB of headers", d.try_raw(big.as_bytes()), &[431, 400]);
    still_fine(&d);
    // 500 headers (small ones, 5 KB in all): refused too.
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /health HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    refused("500 headers", d.try_raw(req.as_bytes()), &[431, 400]);
    still_fine(&d);
    // An overlong Authorization, a bad token encoding.
    let r = d.call_with("GET", "/volumes", None, &[("Authorization", &format!("Bearer {}", "x".repeat(8000)))]);
    assert_eq!(r.status, 401);
    let r = d
        .try_raw(b"GET /volumes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 401);
    // Slowloris: a head trickled byte by byte (and never finished) is cut off, and others
    // are served meanwhile.
    let mut slow = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    slow.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let cut = loop {
        assert!(started.elapsed() < Duration::from_secs(30), "a trickled head was not cut off within 30 s");
        if slow.write_all(b"a").is_err() {
            break "write refused";
        }
        std::thread::sleep(Duration::from_millis(400));
        still_fine(&d);
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break "reset",
        }
    };
    let text = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 400"), "{cut}: {text}");
    eprintln!("slowloris: {cut} after {:?}", started.elapsed());
    still_fine(&d);
}

#[test]
fn random_bytes_never_hurt() {
    let d = Daemon::start();
    let mut rng = Rng(seed("random_bytes_never_hurt"));
    let prefixes: [&[u8]; 4] = [
        b"",
        b"GET / HTTP/1.1\r\n",
        b"POST /containers HTTP/1.1\r\nContent-Length: 5\r\n",
        b"GET /ws/x HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    ];
    let (mut answered, mut complete) = (0, 0);
    for i in 0..300 {
        let mut req = rng.pick(&prefixes).to_vec();
        let len = rng.below(2000) as usize;
        req.extend((0..len).map(|_| rng.next() as u8));
        // A head that ends is a request the daemon must answer (its garbage with a 400).
        let ends = rng.below(3) == 0;
        if ends {
            req.extend_from_slice(b"\r\n\r\n");
            complete += 1;
        }
        let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("the daemon accepts connections");
        // The input ends here, so the daemon has all it will get: it answers or closes. The
        // read timeout only catches a daemon that does neither.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(&req);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        if let Err(e) = s.read_to_end(&mut sink) {
            let hung = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
            assert!(!hung, "request {i}: neither answered nor closed within 30 s ({} bytes sent)", req.len());
        }
        let text = String::from_utf8_lossy(&sink);
        match parse_response(&sink) {
            Ok(r) => {
                assert!((400..500).contains(&r.status), "request {i}: random input got {}: {text}", r.status);
                answered += 1;
            }
            Err(_) => {
                assert!(sink.is_empty(), "request {i}: a broken answer: {text:?}");
                assert!(!ends, "request {i}: a whole head ({} bytes) closed without an answer", req.len());
            }
        }
    }
    eprintln!("{answered} of 300 random requests got a 4xx, {complete} of them had a whole head");
    assert!(answered >= complete, "{answered} answers for {complete} whole heads");
    still_fine(&d);
    let m = d.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.body.contains("lightd_http_requests_total"), "{}", m.body);
}

/// A client that sends its request and then shuts its side of the connection (`nc -N`, many
/// scripts) still gets its answer, every time. hyper's default dropped the connection at that
/// EOF whenever it came before the answer was written (seen as a silent close of a whole
/// WebSocket head in `random_bytes_never_hurt`).
#[test]
fn a_request_followed_by_a_half_close_is_answered() {
    require_docker();
    let d = Daemon::start();
    let heads: [(&str, u16); 3] = [
        ("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        ("GET /ws/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 400),
        ("GET /containers HTTP/1.1\r\nHost: x\r\n\r\n", 401),
    ];
    for round in 0..30 {
        for (head, want) in heads {
            let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("answered or closed within 30 s");
            let r = parse_response(&got).unwrap_or_else(|_| panic!("round {round}: no answer to {head:?}"));
            assert_eq!(r.status, want, "round {round}: {head:?}");
        }
    }
    still_fine(&d);
}
