//! Volumes API: create, list, get, delete, errors, restart survival.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::json;

#[test]
fn volume_lifecycle_and_restart() {
    // Plain directories: used_bytes counts file bytes (a loop volume reports its file system's use).
    let mut d = Daemon::start_with(|c| c["volumes"]["quota"] = json!("none"));
    let r = d.call("POST", "/volumes", Some(json!({"size_limit": "2GB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let id = v["volume_id"].as_str().unwrap().to_string();
    assert_eq!(v["size_limit_bytes"], 2u64 << 30);
    assert!(v["created_at"].as_u64().unwrap() > 1_700_000_000);
    let path = std::path::PathBuf::from(v["path"].as_str().unwrap());
    assert_eq!(path, d.dir.0.join("volumes").join(&id));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);

    // Default size, and no body at all.
    let r2 = d.call("POST", "/volumes", None);
    assert_eq!(r2.status, 201);
    assert_eq!(r2.json()["size_limit_bytes"], 10u64 << 30);
    let id2 = r2.json()["volume_id"].as_str().unwrap().to_string();

    std::fs::write(path.join("world.dat"), vec![7u8; 1234]).unwrap();
    let g = d.get(&format!("/volumes/{id}"));
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["used_bytes"], 1234);
    assert_eq!(g.json()["used_by"], json!([]));
    // Ids are case-insensitive UUIDs.
    assert_eq!(d.get(&format!("/volumes/{}", id.to_uppercase())).status, 200);

    let list = d.get("/volumes").json();
    let ids: Vec<&str> = list["volumes"].as_array().unwrap().iter().map(|v| v["volume_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id.as_str()) && ids.contains(&id2.as_str()));

    d.restart();
    let g = d.get(&format!("/volumes/{id}"));
    assert_eq!(g.status, 200, "volume survives restart");
    assert_eq!(g.json()["size_limit_bytes"], 2u64 << 30);

    let del = d.call("DELETE", &format!("/volumes/{id}"), None);
    assert_eq!((del.status, del.json()), (200, json!({"message": "Volume deleted successfully"})));
    assert!(!path.exists());
    assert_eq!(d.get(&format!("/volumes/{id}")).status, 404);
    assert_eq!(d.call("DELETE", &format!("/volumes/{id}"), None).status, 404);

    d.restart();
    assert_eq!(d.get(&format!("/volumes/{id}")).status, 404, "deletion survives restart");
    assert_eq!(d.get(&format!("/volumes/{id2}")).status, 200);
}

#[test]
fn volume_errors() {
    let d = Daemon::start();
    let r = d.get("/volumes/d6764075-c5f1-4045-9fb3-85315b85cb0f");
    assert_eq!((r.status, r.error().as_str()), (404, "Volume not found"));
    for bad in ["not%20a%20uuid", "..", "..%2F..%2Fetc", ".hidden", "%00"] {
        let r = d.get(&format!("/volumes/{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        let r = d.call("DELETE", &format!("/volumes/{bad}"), None);
        assert_eq!(r.status, 400, "{bad}");
    }
    for (body, needle) in [
        (json!({"size_limit": "0GB"}), "size_limit"),
        (json!({"size_limit": "ten"}), "size_limit"),
        (json!({"size_limit": 10}), "invalid"),
        (json!({"size": "1GB"}), "size"),
        (json!([1, 2]), "invalid"),
    ] {
        let r = d.call("POST", "/volumes", Some(body.clone()));
        assert_eq!(r.status, 400, "{body}");
        assert!(r.error().contains(needle), "{body}: {}", r.error());
    }
    assert_eq!(d.get("/volumes").json()["volumes"], json!([]), "nothing created");
    assert_eq!(std::fs::read_dir(d.dir.0.join("volumes")).map(|r| r.count()).unwrap_or(0), 0);
}
