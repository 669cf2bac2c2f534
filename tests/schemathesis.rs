//! schemathesis against the real daemon: every operation of `openapi.json` (as `GET /openapi.json`
//! serves it) is exercised with all of schemathesis' checks, on a daemon that has a volume with
//! files, a backup, pool ports and a running server to act on. Scoping and the reasons for it are
//! in `tests/schemathesis.toml` and below; docs/testing.md says how to run it.
//!
//! `LIGHTD_SCHEMATHESIS_SEED` replays another seed, `LIGHTD_SCHEMATHESIS_EXAMPLES` changes how
//! many cases each operation's fuzzing gets.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;
use serde_json::json;

/// The CLI `scripts/setup.sh` installs (pinned by `scripts/schemathesis-requirements.txt`).
const ST: &str = "/opt/lightd-test/venv/bin/st";
const SEED: u64 = 1;
/// Cases per operation in the fuzzing phase (the other phases make their own, bounded sets).
/// About two minutes for the whole run on a 2-core machine.
const EXAMPLES: u32 = 60;
/// Operations schemathesis cannot exercise, left out by path: the WebSocket console (a 101
/// upgrade; schemathesis speaks no WebSocket) and `attach` (its answer streams until the client
/// leaves, and schemathesis reads every body to the end). tests/ws.rs and tests/console.rs cover them.
const EXCLUDED: [&str; 2] = ["/ws/{internal_id}", "/containers/{id}/attach"];
/// The names openapi.json's examples use, so the examples phase finds real things.
const VOLUME: &str = "my-world";
const SERVER: &str = "my-server-001";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Fails (never skips) when schemathesis is not installed; returns its version line.
fn require_schemathesis() -> String {
    let hint = "schemathesis is missing: run `bash scripts/setup.sh` (it installs the pinned version in /opt/lightd-test/venv)";
    assert!(Path::new(ST).exists(), "{ST} not found; {hint}");
    let out = Command::new(ST).arg("--version").output().unwrap_or_else(|e| panic!("{ST} --version: {e}; {hint}"));
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success() && version.contains("version"), "{ST} --version printed {version:?}; {hint}");
    let pinned = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/schemathesis-requirements.txt"))
        .ok()
        .and_then(|r| r.lines().find_map(|l| l.strip_prefix("schemathesis==").map(str::to_string)));
    if let Some(pinned) = pinned {
        assert!(version.ends_with(&pinned), "{version}, but {pinned} is pinned; {hint}");
    }
    version
}

/// What the run acts on: the volume, server and ports the spec's examples name, plus a backup.
fn prepare(d: &Daemon) {
    let r = d.call("POST", "/volumes", Some(json!({"name": VOLUME, "size_limit": "64MB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    for (path, body) in [("server.properties", "motd=lightd\n"), ("world/level.dat", "level")] {
        let req = format!(
            "PUT /volumes/{VOLUME}/files/content?path={path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = d.try_raw(req.as_bytes()).unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = d.call("POST", &format!("/volumes/{VOLUME}/backups"), Some(json!({"name": "first"})));
    assert_eq!(r.status, 202, "{}", r.body);
    let backup = r.json()["backup_id"].as_str().unwrap().to_string();
    wait_for(60, "the first backup", || {
        Some(()).filter(|_| d.get(&format!("/volumes/{VOLUME}/backups/{backup}")).json()["state"] == "ready")
    });
    let ports = ports(4);
    let r = d.call(
        "POST",
        "/network/ports",
        Some(json!({"ip": "127.0.0.1", "port_start": ports[0], "port_end": ports[3]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let body = json!({
        "internal_id": SERVER,
        "image": IMAGE,
        "volume_id": VOLUME,
        "startup_command": "sh -c 'while true; do echo tick; sleep 1; done'",
        "ports": [{"ip": "127.0.0.1", "port": ports[0]}],
    });
    let r = d.call("POST", "/containers", Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    let rec = d.wait_installed(SERVER, 120);
    assert_eq!(rec["install_state"], "ready", "{rec}");
    assert_eq!(d.act(SERVER, "start"), 202);
    d.wait_state(SERVER, "running", 30);
}

/// The number in schemathesis' summary line `Test cases: N generated, ...`.
fn generated(output: &str) -> Option<u64> {
    output.lines().find_map(|l| l.trim().split_once(" generated")?.0.parse().ok())
}

#[test]
fn schemathesis_passes_every_check() {
    require_docker();
    let version = require_schemathesis();
    let seed: u64 = env_or("LIGHTD_SCHEMATHESIS_SEED", SEED);
    let examples: u32 = env_or("LIGHTD_SCHEMATHESIS_EXAMPLES", EXAMPLES);
    eprintln!(
        "schemathesis: {version}, seed {seed} (LIGHTD_SCHEMATHESIS_SEED changes it), {examples} examples per operation"
    );
    // The disk's room checked as shipped (`volumes.overcommit` false): a volume of terabytes is
    // refused at once, where a sparse image of 16 TB took over 30 s to delete on a busy machine.
    let d = Daemon::start_with(|c| c["volumes"]["overcommit"] = json!(false));
    prepare(&d);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let url = format!("http://127.0.0.1:{}/openapi.json", d.port);
    let (seed_s, examples_s, auth) = (seed.to_string(), examples.to_string(), format!("Authorization: Bearer {TOKEN}"));
    let mut args = vec!["--config-file", config, "run", "--checks", "all", "-n", &examples_s, "--seed", &seed_s];
    // One worker keeps the run reproducible from its seed; the database off keeps one run from
    // replaying another's failures. `--checks all` includes max_response_time, 10 s by default:
    // growing or deleting a multi-terabyte loop volume takes seconds, more on a loaded 2-core
    // machine, so answers get 30 s (a slower one fails that check), and a request that hangs
    // fails at 60 s instead of stalling the run.
    args.extend(["--workers", "1", "--generation-database", "none", "--no-color"]);
    args.extend(["--max-response-time", "30", "--request-timeout", "60"]);
    for path in EXCLUDED {
        args.extend(["--exclude-path", path]);
    }
    args.extend(["-H", &auth, &url]);
    let started = Instant::now();
    // Its working directory is the daemon's temp dir: schemathesis writes caches where it runs.
    let out = Command::new(ST).args(&args).current_dir(&d.dir.0).output().expect("run schemathesis");
    let took = started.elapsed();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Its report (phases, warnings, summary); with --nocapture it shows on success too.
    eprintln!("{text}");
    let cases = generated(&text);
    eprintln!(
        "schemathesis: {} cases generated in {} s (exit {:?})",
        cases.map_or("?".into(), |n| n.to_string()),
        took.as_secs(),
        out.status.code()
    );
    let replay = format!("LIGHTD_SCHEMATHESIS_SEED={seed} cargo test --test schemathesis -- --nocapture");
    assert!(
        out.status.success(),
        "schemathesis found problems (its report is above; replay: {replay}); {ST} {}",
        args.join(" ")
    );
    assert!(cases.is_some_and(|n| n > 0), "no case count in schemathesis' summary:\n{text}");
    let images = d.dir.0.join("volumes/.images");
    let on_disk: u64 = std::fs::read_dir(&images)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum();
    let volumes = d.get("/volumes").json()["volumes"].as_array().map_or(0, Vec::len);
    eprintln!("schemathesis left {volumes} volumes, their images taking {} MiB on disk", on_disk >> 20);
    let log = d.log();
    assert!(!log.contains("panicked"), "the daemon panicked during the run:\n{log}");
    // Still up and answering after all of it.
    assert_eq!(d.get("/health").status, 200);
}

/// What schemathesis found, pinned down without it: each of these once answered 2xx or 500.
#[test]
fn schemathesis_findings_stay_fixed() {
    require_docker();
    let d = Daemon::start();
    let (vol, _) = d.new_volume();
    // serde reads a struct from an array of its fields; a body, limits and ports are objects only.
    for body in ["[null, null]", "null", "[]", "\"x\""] {
        let req = format!(
            "POST /volumes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = d.try_raw(req.as_bytes()).unwrap();
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error().contains("JSON object"), "{}", r.body);
    }
    assert_eq!(d.get("/volumes").json()["volumes"].as_array().map(Vec::len), Some(1), "nothing was created");
    let id = d.id("st");
    let create = |extra: serde_json::Value| {
        let mut body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol, "startup_command": "sleep 1"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        d.call("POST", "/containers", Some(body))
    };
    let r = create(json!({"limits": [null, null]}));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = create(json!({"ports": [["127.0.0.1", 25565, "tcp"]]}));
    assert_eq!(r.status, 400, "{}", r.body);
    // A NUL in a reinstall's script is refused as it is at create.
    let r = create(json!({}));
    assert_eq!(r.status, 202, "{}", r.body);
    d.wait_installed(&id, 120);
    let r = d.call("POST", &format!("/containers/{id}/reinstall"), Some(json!({"install_script": "echo a\u{0}b"})));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("NUL"), "{}", r.body);
    // Only JSON's whitespace is an empty body: a form feed is not JSON, so no reinstall starts.
    let req = format!(
        "POST /containers/{id}/reinstall HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1\r\n\r\n\x0c"
    );
    let r = d.try_raw(req.as_bytes()).unwrap();
    assert_eq!(r.status, 400, "a form feed body: {}", r.body);
    // `/volumes/v/backups/upload` is the upload route only, not a backup named "upload".
    for method in ["GET", "DELETE"] {
        let r = d.call(method, &format!("/volumes/{vol}/backups/upload"), None);
        assert_eq!(r.status, 405, "{method}: {}", r.body);
        assert_eq!(r.header("allow"), Some("POST"));
    }
    // A backup name of 128 characters is fine whatever their UTF-8 length.
    let r = d.call("POST", &format!("/volumes/{vol}/backups"), Some(json!({"name": "é".repeat(128)})));
    assert_eq!(r.status, 202, "{}", r.body);
    let r = d.call("POST", &format!("/volumes/{vol}/backups"), Some(json!({"name": "é".repeat(129)})));
    assert!(r.status == 400 || r.status == 409, "{}", r.body);
    // A loop volume larger than any host file system holds in one file: 400, not 500.
    if d.get(&format!("/volumes/{vol}")).json()["quota"] == "loop" {
        let huge = json!({"size_limit": "16000000TB"});
        let r = d.call("PATCH", &format!("/volumes/{vol}"), Some(huge.clone()));
        assert_eq!(r.status, 400, "{}", r.body);
        let r = d.call("POST", "/volumes", Some(huge));
        assert_eq!(r.status, 400, "{}", r.body);
        // ... and a small one grows far (ext4's resize_inode reserve ended at about 1024 times).
        let r = d.call("POST", "/volumes", Some(json!({"name": "small", "size_limit": "8MB"})));
        assert_eq!(r.status, 201, "{}", r.body);
        let r = d.call("PATCH", "/volumes/small", Some(json!({"size_limit": "16GB"})));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["size_limit_bytes"], 16u64 << 30);
    }
}

/// `tests/schemathesis.toml` lets 20 operations answer schema-valid data with a 400 (their
/// rules are beyond JSON Schema), so schemathesis alone would pass a daemon refusing every
/// valid request to them. The control: one valid request to each, with what it did checked.
#[test]
fn the_operations_allowed_a_400_take_valid_requests() {
    require_docker();
    // Its own name prefix: the fuzzing test's daemon makes a server of the same id at once.
    let d = Daemon::start_with(|c| c["containers"]["name_prefix"] = json!("lightd-control-"));
    prepare(&d);
    let listed: Vec<String> = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix("\",").map(String::from))
        .collect();
    let v = |p: &str| format!("/volumes/{VOLUME}{p}");
    let send = |method: &str, path: &str, content_type: &str, body: &[u8]| -> Resp {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        d.try_raw(&req).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    };
    let archive = {
        let mut tar = Vec::new();
        let mut h = [0u8; 512];
        h[..9].copy_from_slice(b"hello.txt");
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(b"00000000005\0");
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..265].copy_from_slice(b"ustar\x0000");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(b"hello");
        tar.resize(512 * 4, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    };
    let [a, b] = ports(2)[..] else { unreachable!() };
    let other = d.id("st-control");
    let mut done = Vec::new();
    let mut check = |op: &str, r: Resp, effect: &dyn Fn() -> bool| {
        assert!((200..300).contains(&r.status), "{op}: a valid request got {} {}", r.status, r.body);
        assert!(effect(), "{op}: answered {} but did not do it: {}", r.status, r.body);
        done.push(op.to_string());
    };
    let file = |p: &str| d.get(&v(&format!("/files/content?path={p}")));
    let json_of = |value: serde_json::Value| value.to_string().into_bytes();
    let j = "application/json";
    check(
        "createVolume",
        send("POST", "/volumes", j, &json_of(json!({"name": "second", "size_limit": "64MB"}))),
        &|| d.get("/volumes/second").status == 200,
    );
    check("patchVolume", send("PATCH", "/volumes/second", j, &json_of(json!({"size_limit": "128MB"}))), &|| {
        d.get("/volumes/second").json()["size_limit_bytes"] == 128u64 << 20
    });
    check("listFiles", d.get(&v("/files?path=world")), &|| {
        d.get(&v("/files?path=world")).json()["entries"][0]["name"] == "level.dat"
    });
    check("statFile", d.get(&v("/files/stat?path=server.properties")), &|| true);
    check("readFile", file("server.properties"), &|| file("server.properties").body == "motd=lightd\n");
    check("writeFile", send("PUT", &v("/files/content?path=notes.txt"), "application/octet-stream", b"note"), &|| {
        file("notes.txt").body == "note"
    });
    check("mkdir", send("POST", &v("/files/mkdir"), j, &json_of(json!({"path": "world/region"}))), &|| {
        d.get(&v("/files/stat?path=world/region")).status == 200
    });
    let copy = json!({"from": "server.properties", "to": "server.properties.bak", "overwrite": true});
    check("copyFile", send("POST", &v("/files/copy"), j, &json_of(copy)), &|| {
        file("server.properties.bak").body == "motd=lightd\n"
    });
    let rename = json!({"from": "server.properties.bak", "to": "server.properties.old", "overwrite": true});
    check("renameFile", send("POST", &v("/files/rename"), j, &json_of(rename)), &|| {
        file("server.properties.old").status == 200 && file("server.properties.bak").status == 404
    });
    check(
        "deleteFiles",
        send("POST", &v("/files/delete"), j, &json_of(json!({"paths": ["server.properties.old"]}))),
        &|| file("server.properties.old").status == 404,
    );
    check(
        "chmod",
        send("POST", &v("/files/chmod"), j, &json_of(json!({"path": "notes.txt", "mode": "0600"}))),
        &|| d.get(&v("/files/stat?path=notes.txt")).body.contains("600"),
    );
    // The archive is binary: asked for over HTTP/1.0, its body is the bytes up to the close.
    let req = format!("GET {} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n", v("/archive?path=world"));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = parse_response(&answer[..split]).unwrap();
    let mut tar = Vec::new();
    let _ = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&answer[split..]), &mut tar);
    check("archive", head, &|| tar.windows(9).any(|w| w == b"level.dat"));
    // Extraction is a job: the 202 comes first, the file once the job is done.
    check("extract", send("POST", &v("/extract?path=world"), "application/gzip", &archive), &|| {
        wait_for(60, "the extract job", || (file("world/hello.txt").body == "hello").then_some(()));
        true
    });
    let backups = || d.get(&v("/backups")).json()["backups"].as_array().map_or(0, Vec::len);
    let before = backups();
    check("uploadBackup", send("POST", &v("/backups/upload"), "application/gzip", &archive), &|| {
        backups() == before + 1
    });
    let range = json!({"ip": "127.0.0.1", "port_start": a, "port_end": b});
    check("addPorts", send("POST", "/network/ports", j, &json_of(range)), &|| {
        d.get("/network/ports?available=true").body.contains(&format!("\"port\":{b}"))
    });
    let create = json!({"internal_id": other, "image": IMAGE, "volume_id": "second", "startup_command": "sleep 100"});
    check("createContainer", send("POST", "/containers", j, &json_of(create)), &|| {
        d.wait_installed(&other, 120)["install_state"] == "ready"
    });
    let rebind = json!({"ports": [{"ip": "127.0.0.1", "port": a}]});
    check("rebind", send("POST", &format!("/containers/{SERVER}/rebind-network"), j, &json_of(rebind)), &|| {
        wait_for(60, "the rebind", || Some(()).filter(|_| d.record(SERVER)["ports"][0]["port"] == a));
        true
    });
    let before = d.record(&other)["container_id"].clone();
    check("reinstall", send("POST", &format!("/containers/{other}/reinstall"), j, b"{}"), &|| {
        let rec = d.wait_installed(&other, 120);
        rec["install_state"] == "ready" && rec["container_id"] != before
    });
    let user = json!({"username": "st-control", "password": "correct horse battery"});
    check("createSftpUser", send("POST", &v("/sftp/users"), j, &json_of(user)), &|| {
        d.get(&v("/sftp/users")).json()["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["username"] == "st-control"))
    });
    // A transfer to a node that is not there: the 202 and a status to poll.
    let start = json!({"target": "http://127.0.0.1:1", "token": "lightd_nothing"});
    check("startTransfer", send("POST", &format!("/containers/{SERVER}/transfer"), j, &json_of(start)), &|| {
        d.get(&format!("/containers/{SERVER}/transfer")).status == 200
    });
    // A transfer received from a source speaking the protocol by hand: one 5-byte file.
    use lightd::transfer::{manifest, wire};
    let incoming = d.id("st-incoming");
    let hash = manifest::hash(b"hello");
    let entry = manifest::Entry {
        path: "hello.txt".into(),
        kind: manifest::EntryKind::File,
        size: 5,
        mode: 0o644,
        mtime: 1_700_000_000,
        mtime_ns: 0,
        target: None,
        chunks: vec![manifest::hex(&hash)],
    };
    let spec = json!({"image": IMAGE, "startup_command": "sleep 100", "user": "1000:1000"});
    let manifest = json!({"spec": spec, "size_limit_bytes": 64u64 << 20, "entries": [entry]});
    let at = |p: &str| format!("/transfers/{incoming}{p}");
    check("transferManifest", send("POST", &at(""), j, &json_of(manifest)), &|| true);
    let mut frames = Vec::new();
    wire::put(&mut frames, "hello.txt", 0, 5, &hash, &zstd::bulk::compress(b"hello", 1).unwrap());
    check("transferChunks", send("PUT", &at("/chunks"), "application/octet-stream", &frames), &|| true);
    let finish = json!({"digest": manifest::digest(&[entry]), "start": false});
    check("transferFinish", send("POST", &at("/finish"), j, &json_of(finish)), &|| {
        let vol = d.record(&incoming)["volume_id"].as_str().unwrap_or_default().to_string();
        d.get(&format!("/volumes/{vol}/files/content?path=hello.txt")).body == "hello"
    });
    let own = d.record(SERVER)["ports"][0]["port"].as_u64().unwrap();
    let rules = json!({"rules": [{"port": own, "deny": ["192.0.2.0/24"]}]});
    check("putFirewall", send("PUT", &format!("/containers/{SERVER}/firewall"), j, &json_of(rules)), &|| {
        d.get(&format!("/containers/{SERVER}/firewall")).json()["rules"][0]["deny"] == json!(["192.0.2.0/24"])
    });
    done.sort();
    let mut listed = listed;
    listed.sort();
    assert_eq!(done, listed, "one control for each operation tests/schemathesis.toml lets answer 400");
}
