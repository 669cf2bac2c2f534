//! Network port pool API: add one and a range, duplicates, filters, random, delete, restart.

mod common;

use common::*;
use serde_json::json;

#[test]
fn pool_lifecycle_and_restart() {
    let mut d = Daemon::start();
    let r = d.call("POST", "/network/ports", Some(json!({"ip": "0.0.0.0", "port": 25565})));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["message"], "Port added to pool");
    assert_eq!(
        r.json()["ports"],
        json!([{"ip": "0.0.0.0", "port": 25565, "protocol": "tcp", "in_use": false, "used_by": null}])
    );
    let r = d.call(
        "POST",
        "/network/ports",
        Some(json!({"ip": "127.0.0.1", "port_start": 30000, "port_end": 30009, "protocol": "udp"})),
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["ports"].as_array().unwrap().len(), 10);

    // Duplicates: the single port, and a range overlapping the first range (nothing added).
    let r = d.call("POST", "/network/ports", Some(json!({"ip": "0.0.0.0", "port": 25565, "protocol": "tcp"})));
    assert_eq!(r.status, 409);
    assert!(r.error().contains("0.0.0.0:25565/tcp"), "{}", r.error());
    let r = d.call(
        "POST",
        "/network/ports",
        Some(json!({"ip": "127.0.0.1", "port_start": 30005, "port_end": 30020, "protocol": "udp"})),
    );
    assert_eq!(r.status, 409);
    // Same number, other protocol: a different entry.
    assert_eq!(
        d.call("POST", "/network/ports", Some(json!({"ip": "0.0.0.0", "port": 25565, "protocol": "udp"}))).status,
        201
    );

    let all = d.get("/network/ports").json()["ports"].as_array().unwrap().len();
    assert_eq!(all, 12);
    assert_eq!(d.get("/network/ports?available=true").json()["ports"].as_array().unwrap().len(), 12);
    assert_eq!(d.get("/network/ports?available=false").json()["ports"], json!([]));
    assert_eq!(d.get("/network/ports?protocol=udp").json()["ports"].as_array().unwrap().len(), 11);
    assert_eq!(d.get("/network/ports?ip=0.0.0.0").json()["ports"].as_array().unwrap().len(), 2);

    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let r = d.get("/network/ports/random?protocol=udp");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["protocol"], "udp");
        assert_eq!(r.json()["in_use"], false);
        seen.insert(r.json()["port"].as_u64().unwrap());
    }
    assert!(seen.len() > 1, "random picks vary: {seen:?}");
    assert_eq!(d.get("/network/ports/random?protocol=tcp").json()["port"], 25565);

    d.restart();
    assert_eq!(d.get("/network/ports").json()["ports"].as_array().unwrap().len(), 12, "pool survives restart");

    let r = d.call("DELETE", "/network/ports/0.0.0.0/25565?protocol=tcp", None);
    assert_eq!((r.status, r.json()), (200, json!({"message": "Port removed from pool"})));
    assert_eq!(d.call("DELETE", "/network/ports/0.0.0.0/25565", None).status, 404, "tcp is the default and it is gone");
    assert_eq!(d.get("/network/ports/random?protocol=tcp").status, 404);
    assert_eq!(d.get("/network/ports/random?protocol=tcp").error(), "No available ports");
    d.restart();
    assert_eq!(d.get("/network/ports?ip=0.0.0.0").json()["ports"].as_array().unwrap().len(), 1);
}

#[test]
fn pool_errors() {
    let d = Daemon::start();
    for (body, needle) in [
        (json!({"ip": "300.1.1.1", "port": 1}), "ip"),
        (json!({"ip": "0.0.0.0", "port": 0}), "port"),
        (json!({"ip": "0.0.0.0", "port": 70000}), "port"),
        (json!({"ip": "0.0.0.0", "port": -1}), "invalid"),
        (json!({"ip": "0.0.0.0", "port": "80"}), "invalid"),
        (json!({"ip": "0.0.0.0", "port": 80, "protocol": "sctp"}), "protocol"),
        (json!({"ip": "0.0.0.0"}), "port"),
        (json!({"ip": "0.0.0.0", "port": 80, "port_start": 81, "port_end": 82}), "either"),
        (json!({"ip": "0.0.0.0", "port_start": 90, "port_end": 80}), "port_start"),
        (json!({"ip": "0.0.0.0", "port_start": 1, "port_end": 1001}), "1000"),
        (json!({"port": 80}), "ip"),
        (json!({"ip": "0.0.0.0", "port": 80, "extra": 1}), "extra"),
    ] {
        let r = d.call("POST", "/network/ports", Some(body.clone()));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error().contains(needle), "{body}: {}", r.error());
    }
    assert_eq!(d.get("/network/ports").json()["ports"], json!([]), "nothing added");
    assert_eq!(
        d.call("POST", "/network/ports", Some(json!({"ip": "::1", "port_start": 1, "port_end": 1000}))).status,
        201
    );
    assert_eq!(d.get("/network/ports?available=maybe").status, 400);
    assert_eq!(d.get("/network/ports?colour=red").status, 400);
    assert_eq!(d.get("/network/ports/random?protocol=icmp").status, 400);
    assert_eq!(d.call("DELETE", "/network/ports/not-an-ip/80", None).status, 400);
    assert_eq!(d.call("DELETE", "/network/ports/0.0.0.0/eighty", None).status, 400);
    assert_eq!(d.call("DELETE", "/network/ports/0.0.0.0/0", None).status, 400);
    assert_eq!(d.call("DELETE", "/network/ports/0.0.0.0/80?protocol=xyz", None).status, 400);
    let r = d.call("DELETE", "/network/ports/0.0.0.0/80", None);
    assert_eq!((r.status, r.error().as_str()), (404, "Port not found in network pool"));
    // IPv6 in a path segment, percent-encoded or not.
    assert_eq!(d.call("DELETE", "/network/ports/%3A%3A1/1", None).status, 200);
    assert_eq!(d.call("DELETE", "/network/ports/::1/2", None).status, 200);
}
