//! `kill -9` in the middle of concurrent writes leaves a valid state.json that holds every
//! acknowledged write.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;

#[test]
fn kill9_during_200_concurrent_writes() {
    let mut d = Daemon::start();
    let port = d.port;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..200u16 {
        let acked = Arc::clone(&acked);
        threads.push(std::thread::spawn(move || {
            let body = json!({"ip": "127.0.0.1", "port": 20000 + i}).to_string();
            let req = format!(
                "POST /network/ports HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if let Ok(r) = raw(port, req.as_bytes()) {
                if r.status == 201 {
                    acked.lock().unwrap().push(20000 + i);
                }
            }
        }));
    }
    // Let some of the writes land, then kill without warning.
    wait_for(20, "first acknowledged writes", || (acked.lock().unwrap().len() >= 20).then_some(()));
    d.kill9();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let state = d.state();
    let stored: Vec<u64> = state["ports"].as_array().unwrap().iter().map(|p| p["port"].as_u64().unwrap()).collect();
    for p in &acked {
        assert!(stored.contains(&u64::from(*p)), "acknowledged port {p} lost");
    }
    // No stray temp file is left behind after a restart, and the daemon loads the state.
    d.spawn();
    assert!(!d.dir.0.join("state.json.tmp").exists());
    let listed = d.get("/network/ports").json()["ports"].as_array().unwrap().len();
    assert_eq!(listed, stored.len());
}

#[test]
fn corrupt_state_file_is_a_clear_startup_error() {
    let dir = TempDir::new("corrupt");
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config_for(&dir.0).to_string()).unwrap();
    std::fs::write(dir.0.join("state.json"), b"{\"volumes\": {").unwrap();
    let out = std::process::Command::new(bin()).arg("--config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(std::fs::read(dir.0.join("state.json")).unwrap(), b"{\"volumes\": {", "never replaced");
}
