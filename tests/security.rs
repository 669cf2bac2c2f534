//! Host isolation and abuse limits, one black-box test per finding of the audit: nothing a
//! container or a token holder does reaches past its own server.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Mount sources can never be swapped for the host's `/`: a source inside (or around)
/// another container's source, a volume or lightd's own files is refused; a source swapped
/// for a symlink after the create is refused at the next start; mounts are read-only unless
/// the config marks their root read-write.
#[test]
fn mount_sources_cannot_be_turned_into_the_host_root() {
    require_docker();
    let shared = TempDir::new("shared");
    let (ro, rw) = (shared.0.join("ro"), shared.0.join("rw"));
    for d in [rw.join("a"), rw.join("b"), ro.clone()] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(ro.join("map.txt"), b"map\n").unwrap();
    let (ro2, rw2) = (ro.clone(), rw.clone());
    let d = Daemon::start_with(move |c| {
        c["containers"]["allowed_mounts"] = json!([ro2, {"path": rw2, "rw": true}]);
    });
    // The attacker: a server whose rw mount is the parent of what another server mounts.
    let a =
        d.ready_container("a", "echo up; sleep 1000", json!({"mount": {"/data": rw.join("a")}, "start_pattern": "up"}));
    let (vol, _) = d.new_volume();
    let body = |id: &str, source: &Path| {
        json!({"internal_id": d.id(id), "image": IMAGE, "volume_id": vol, "startup_command": "true",
               "mount": {"/data": source}})
    };
    for (source, needle) in
        [(rw.join("a").join("inner"), "overlaps"), (rw.clone(), "overlaps"), (d.dir.0.join("volumes"), "not allowed")]
    {
        std::fs::create_dir_all(&source).unwrap();
        let before = d.state();
        let r = d.call("POST", "/containers", Some(body("b", &source)));
        assert_eq!(r.status, 400, "{}: {}", source.display(), r.body);
        assert!(r.error().contains(needle), "{}", r.error());
        refused_left_nothing(&d, &d.id("b"), &before);
    }
    // Read-only by default: a plain allowed path cannot be written through.
    let reader = d.ready_container(
        "reader",
        "cat /maps/map.txt; echo x > /maps/new.txt || echo refused; sleep 1000",
        json!({"mount": {"/maps": ro}}),
    );
    assert_eq!(d.act(&reader, "start"), 202);
    d.wait_line(&reader, "map");
    d.wait_line(&reader, "refused");
    assert!(!ro.join("new.txt").exists());
    // The swap itself, done from the host as a container with a wider mount would: the next
    // start is refused and the host root is never mounted.
    assert_eq!(d.act(&a, "start"), 202);
    d.wait_state(&a, "running", 20);
    assert_eq!(d.act(&a, "stop"), 202);
    d.wait_state(&a, "offline", 20);
    std::fs::remove_dir_all(rw.join("a")).unwrap();
    std::os::unix::fs::symlink("/", rw.join("a")).unwrap();
    let r = d.call("POST", &format!("/containers/{a}/start"), None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().contains("changed since it was checked"), "{}", r.error());
    assert_eq!(d.record(&a)["state"], "offline");
    let mounts = docker(&["inspect", "-f", "{{json .Mounts}}", &format!("lightd-{a}")]);
    assert!(!mounts.contains("\"Source\":\"/\""), "{mounts}");
}

/// After a refused create of `id`: no record, no Docker container, and the state file as it
/// was (`before`: containers, ports, volumes, backups, and as many tokens), also once the
/// next change is saved.
fn refused_left_nothing(d: &Daemon, id: &str, before: &Value) {
    assert_eq!(d.get(&format!("/containers/{id}")).status, 404, "no record of {id}");
    assert!(inspect(&format!("lightd-{id}")).is_none(), "no Docker container for {id}");
    let after = d.state();
    for key in ["containers", "ports", "volumes", "backups"] {
        assert_eq!(after[key], before[key], "a refused create of {id} changed the state's {key}");
    }
    let tokens = |s: &Value| s["tokens"].as_array().map_or(0, Vec::len);
    assert_eq!(tokens(&after), tokens(before), "a refused create of {id} changed the tokens");
    // Nor is anything of it waiting to be saved with the next write: make one (a pool port
    // added and removed), then look again.
    let p = port();
    d.add_port("127.0.0.1", p, "tcp");
    assert_eq!(d.call("DELETE", &format!("/network/ports/127.0.0.1/{p}"), None).status, 200);
    assert_eq!(d.get(&format!("/containers/{id}")).status, 404, "{id} was saved with the next write");
    assert_eq!(d.state()["containers"], before["containers"], "a refused create of {id} was saved with the next write");
}

/// Console tokens die with their container and with `DELETE /auth/tokens`; a master token
/// replaced by `lightd --token reset` stops working on the running daemon within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_die_with_their_container_and_with_a_reset() {
    require_docker();
    // No token in the config: the daemon keeps a generated one in its state directory.
    let d = Daemon::start_with(|c| c["authorization"] = json!({}));
    let token_file = d.dir.0.join("token");
    let master = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let config: Value = serde_json::from_slice(&std::fs::read(&d.config).unwrap()).unwrap();
    assert!(!config.to_string().contains(&master), "the config never holds the generated token");
    let auth = format!("Bearer {master}");
    let call = |m: &str, p: &str, b: Option<Value>, t: &str| d.call_with(m, p, b, &[("Authorization", t)]);
    let (vol, _) = {
        let r = call("POST", "/volumes", None, &auth);
        assert_eq!(r.status, 201, "{}", r.body);
        (r.json()["volume_id"].as_str().unwrap().to_string(), ())
    };
    let id = d.id("tok");
    let body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol, "startup_command": "sleep 1000"});
    assert_eq!(call("POST", "/containers", Some(body.clone()), &auth).status, 202);
    let issue = |ttl: &str| {
        let r = call("POST", "/auth/tokens", Some(json!({"ttl": ttl, "internal_id": id})), &auth);
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["token"].as_str().unwrap().to_string()
    };
    let bound = issue("1h");
    let ws_path = format!("/ws/{id}?token={bound}");
    let mut live = ws::connect(d.port, &ws_path, None).await.expect("the token opens the console");
    ws::next_event(&mut live, "logs").await;
    // The container goes: its token with it, and its live session is closed.
    assert_eq!(call("DELETE", &format!("/containers/{id}"), None, &auth).status, 200);
    let close = ws::closed(&mut live, 10).await.expect("a close frame");
    assert_eq!(&*close.reason, "container deleted");
    assert_eq!(call("POST", "/containers", Some(body), &auth).status, 202);
    assert_eq!(ws::refused_status(ws::connect(d.port, &ws_path, None).await), 401, "a new X is not the old X");
    // DELETE /auth/tokens revokes every console token, and live sessions end with it.
    let t2 = issue("1h");
    let mut live = ws::connect(d.port, &format!("/ws/{id}?token={t2}"), None).await.unwrap();
    ws::next_event(&mut live, "logs").await;
    let r = call("DELETE", "/auth/tokens", None, &auth);
    assert_eq!((r.status, r.json()), (200, json!({"message": "Tokens revoked", "revoked": 1})));
    let close = ws::closed(&mut live, 10).await.expect("a close frame");
    assert_eq!((u16::from(close.code), &*close.reason), (4001, "token revoked"));
    assert_eq!(ws::refused_status(ws::connect(d.port, &format!("/ws/{id}?token={t2}"), None).await), 401);
    // `--token reset` on the running daemon: the old master token is refused within a second.
    let t3 = issue("1h");
    let out = std::process::Command::new(bin()).args(["--token", "reset", "--config"]).arg(&d.config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fresh = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_ne!(fresh, master);
    // The daemon polls for the change twice a second; the deadline leaves room for a busy
    // machine. Polled tightly: at no moment is the old master refused while a console token
    // it minted still opens the console (the revocation is being written to disk then).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while call("GET", "/volumes", None, &auth).status != 401 {
        assert!(std::time::Instant::now() < deadline, "the old master token still works after 5 s");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let t3_path = format!("/ws/{id}?token={t3}");
    assert_eq!(ws::refused_status(ws::connect(d.port, &t3_path, None).await), 401, "revoked with the master");
    let r = call("GET", "/volumes", None, &auth);
    assert!(r.error().contains("lightd --token what"), "the 401 says where the token is: {}", r.body);
    assert_eq!(call("GET", "/volumes", None, &format!("Bearer {fresh}")).status, 200);
    assert_eq!(ws::refused_status(ws::connect(d.port, &t3_path, None).await), 401);
}

/// Thousands of idle connections from one client leave the daemon serving others (the
/// per-address cap refuses the excess with a 503), and every one is released when they close.
/// (What memory they cost is measured by the benches, not asserted here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_floods_are_capped() {
    let d = Daemon::start();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", d.port).parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..5000 {
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        held.push(s);
    }
    // The flooding address holds at most its share (2048): past it, its own oldest idle
    // connections were closed to make room for its newest.
    wait_for(10, "the flood held to its address's share", || {
        let open = d.metric("lightd_connections")?;
        (open <= 2048 + 1).then_some(())
    });
    // A newcomer from the flood's own address (an operator behind the same proxy) is served,
    // checked at once (idle connections are closed after 10 s, which would free their slots).
    let r = d.try_raw(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // The oldest were the ones closed, the newest stay open.
    let mut closed = vec![false; held.len()];
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while closed.iter().filter(|c| **c).count() < 2900 && tokio::time::Instant::now() < until {
        for (s, done) in held.iter_mut().zip(closed.iter_mut()).filter(|(_, done)| !**done) {
            let mut buf = [0u8; 64];
            match s.try_read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // End of stream or a reset: the daemon closed it.
                _ => *done = true,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shed = closed.iter().filter(|c| **c).count();
    assert!(shed >= 2900, "the per-address share (2048) closed {shed} of 5000");
    assert!(closed[..2900].iter().all(|c| *c), "the oldest went first");
    assert!(closed[4000..].iter().all(|c| !*c), "the newest stay");
    // Another client is served meanwhile.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = other.connect(addr).await.expect("another address connects");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    wait_for(10, "only the metrics request itself open", || (d.metric("lightd_connections") == Some(1)).then_some(()));
}

/// A viewer that stops reading is let go: its session closes within the write deadline and
/// the viewer count and the stats stream it kept open are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_is_let_go() {
    require_docker();
    let d = Daemon::start();
    let id = d.ready_container(
        "flood",
        "pad=$(printf '%0900d' 0); i=0; while true; do i=$((i+1)); echo \"line $i $pad\"; done",
        json!({}),
    );
    assert_eq!(d.act(&id, "start"), 202);
    let stuck = ws::open(&d, &id).await;
    let viewers = || d.metric(&format!("lightd_viewers{{container=\"{id}\",kind=\"ws\"}}")).unwrap_or(0);
    wait_for(10, "the viewer counted", || (viewers() == 1).then_some(()));
    // It never reads again; the daemon gives up on it.
    let t = Instant::now();
    wait_for(90, "the stuck viewer released", || (viewers() == 0).then_some(()));
    assert!(t.elapsed() >= Duration::from_secs(20), "not before the deadline: {:?}", t.elapsed());
    wait_for(20, "the stats stream closed", || (d.streams(&id, "stats") == 0).then_some(()));
    drop(stuck);
    assert_eq!(d.act(&id, "kill"), 202);
}

/// A network the test asks the daemon to make (a fresh name), removed when the test ends,
/// after the daemon and its containers (declare it before the daemon).
struct OwnNetwork(String);

impl OwnNetwork {
    fn new() -> OwnNetwork {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("lightd-t{}-net{n}", std::process::id());
        let found = docker_cli().args(["network", "inspect", &name]).output().unwrap();
        assert!(!found.status.success(), "network {name} exists already: the daemon must make it itself");
        OwnNetwork(name)
    }
}

impl Drop for OwnNetwork {
    fn drop(&mut self) {
        let _ = docker_cli().args(["network", "rm", &self.0]).output();
    }
}

/// Servers keep only the capabilities they need, and reach each other only through
/// published ports: on the network the daemon makes itself (a fresh name, not the shared
/// test network that `scripts/setup.sh` makes), a server's port is refused to another
/// server by its address and reached through its published port, the probe's control.
#[test]
fn servers_are_confined_to_their_own_powers_and_ports() {
    require_docker();
    let net = OwnNetwork::new();
    let name = net.0.clone();
    let d = Daemon::start_with(|c| c["containers"]["default_network"] = json!(name));
    // Made by the daemon (at start, in the background), with traffic between containers off.
    let made = wait_for(30, "the daemon to make its network", || inspect_network(&net.0));
    assert_eq!(made["Options"]["com.docker.network.bridge.enable_icc"], "false", "{made}");
    let gateway = made["IPAM"]["Config"][0]["Gateway"].as_str().expect("the network's gateway").to_string();
    // The listener publishes its port on the gateway's address, where other servers can
    // reach the host (a 127.0.0.1 port is not theirs to reach).
    let p = port();
    d.add_port(&gateway, p, "tcp");
    let listener = d.ready_container(
        "rcon",
        "echo up; while true; do echo secret | nc -l -p $SERVER_PORT; done",
        json!({"start_pattern": "up", "ports": [{"ip": gateway, "port": p}]}),
    );
    assert_eq!(d.act(&listener, "start"), 202);
    d.wait_state(&listener, "running", 20);
    let info = inspect(&format!("lightd-{listener}")).unwrap();
    let ip = info["NetworkSettings"]["Networks"][&net.0]["IPAddress"].as_str().unwrap_or_default().to_string();
    assert!(!ip.is_empty(), "the listener is on the daemon's network: {}", info["NetworkSettings"]["Networks"]);
    // The same port by the two ways, the refused one between two that must pass (so the
    // listener was up while it was refused).
    let reach = |what: &str, addr: &str| {
        format!(
            "if nc -w 3 {addr} {p} </dev/null | grep -q secret; then echo {what}-reached; else echo {what}-blocked; fi"
        )
    };
    let probe = d.ready_container(
        "probe",
        &format!(
            "grep CapEff /proc/self/status; echo \"pid1 $(cat /proc/1/comm)\"; \
             mknod /tmp/disk b 8 0 && echo mknod-ok || echo mknod-refused; \
             {}; {}; {}; echo probed; sleep 1000",
            reach("published", &gateway),
            reach("direct", &ip),
            reach("again", &gateway)
        ),
        json!({}),
    );
    assert_eq!(d.act(&probe, "start"), 202);
    let cap = wait_for(30, "CapEff", || {
        let lines = d.get(&format!("/containers/{probe}/logs?tail=10")).json()["lines"].clone();
        lines.as_array()?.iter().find_map(|l| l.as_str()?.strip_prefix("CapEff:").map(|c| c.trim().to_string()))
    });
    let cap = u64::from_str_radix(&cap, 16).unwrap();
    const MKNOD: u64 = 1 << 27;
    const NET_RAW: u64 = 1 << 13;
    const SYS_ADMIN: u64 = 1 << 21;
    assert_eq!(cap & (MKNOD | NET_RAW | SYS_ADMIN), 0, "CapEff {cap:x}");
    // Init: the server is not PID 1; Docker's init is, reaping zombies and passing signals on.
    d.wait_line(&probe, "pid1 docker-init");
    d.wait_line(&probe, "mknod-refused");
    d.wait_line(&probe, "probed");
    let lines = d.get(&format!("/containers/{probe}/logs?tail=20")).json()["lines"].to_string();
    for want in ["published-reached", "direct-blocked", "again-reached"] {
        assert!(lines.contains(want), "{want}: {lines}");
    }
    // Defaults from containers.default_limits when a create gives none.
    let host = &inspect(&format!("lightd-{probe}")).unwrap()["HostConfig"];
    assert_eq!(host["Memory"], 2u64 << 30);
    assert_eq!(host["NanoCpus"], 1_000_000_000u64);
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    assert_eq!(host["Init"], true);
}

/// `docker network inspect` of one network, `None` when there is none.
fn inspect_network(name: &str) -> Option<Value> {
    let out = docker_cli().args(["network", "inspect", name]).output().ok()?;
    serde_json::from_slice::<Value>(&out.stdout).ok()?.get(0).cloned()
}

/// The size of a volume counts its own bytes only, whatever symlink a server swaps in while
/// the walk runs.
#[test]
fn the_size_walk_never_follows_a_swapped_symlink() {
    // The walk is what plain-directory volumes use (loop volumes answer with statfs).
    let d = Daemon::start_with(|c| c["volumes"]["quota"] = json!("none"));
    let (vol, path) = d.new_volume();
    std::fs::write(path.join("world.dat"), vec![7u8; 1 << 20]).unwrap();
    std::fs::create_dir(path.join("d")).unwrap();
    std::fs::write(path.join("d").join("x"), b"12345").unwrap();
    let own = (1 << 20) + 5;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, dir) = (std::sync::Arc::clone(&stop), path.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::rename(dir.join("d"), dir.join("d.real"));
                let _ = std::os::unix::fs::symlink("/usr", dir.join("d"));
                let _ = std::fs::remove_file(dir.join("d"));
                let _ = std::fs::rename(dir.join("d.real"), dir.join("d"));
                swaps += 1;
            }
            swaps
        })
    };
    for _ in 0..200 {
        // Mid-swap the small file may be seen under both names, or under none; never more.
        let used = d.get(&format!("/volumes/{vol}")).json()["used_bytes"].as_u64().unwrap();
        assert!((1 << 20..=own + 5).contains(&used), "used_bytes {used}: only the volume's own bytes");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 100, "the swap raced the walk");
}

/// Bounded inputs: console tokens (429 past the cap), `start_pattern` complexity, image
/// references by Docker's grammar and the allowed registries; `suspend` over a console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_limits_and_the_console_contract() {
    require_docker();
    let d = Daemon::start_with(|c| {
        c["authorization"]["max_console_tokens"] = json!(3);
        c["docker"]["allowed_registries"] = json!(["docker.io", "127.0.0.1:5000"]);
    });
    for _ in 0..3 {
        assert_eq!(d.call("POST", "/auth/tokens", Some(json!({"ttl": "1h", "scope": "all"}))).status, 201);
    }
    let r = d.call("POST", "/auth/tokens", Some(json!({"ttl": "1h", "scope": "all"})));
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.error().contains("max_console_tokens"));
    assert_eq!(d.call("DELETE", "/auth/tokens", None).json()["revoked"], 3);
    assert_eq!(d.state()["tokens"], json!([]), "revoked tokens leave the state file");

    let (vol, _) = d.new_volume();
    let create = |field: &str, value: Value| {
        let mut body = json!({"internal_id": d.id("lim"), "image": IMAGE, "volume_id": vol, "startup_command": "true"});
        body[field] = value;
        d.call("POST", "/containers", Some(body))
    };
    for (field, value, needle) in [
        ("start_pattern", json!("(?:.?){2000}Z"), "start_pattern"),
        ("start_pattern", json!("x".repeat(300)), "at most 256"),
        ("image", json!("../../etc"), "registry"),
        ("image", json!("UPPER/case"), "path component"),
        ("image", json!("app:bad:tag"), "tag"),
        ("image", json!("evil.example.com/app"), "docker.allowed_registries"),
    ] {
        let before = d.state();
        let r = create(field, value.clone());
        assert_eq!(r.status, 400, "{field}={value}: {}", r.body);
        assert!(r.error().contains(needle), "{field}={value}: {}", r.error());
        refused_left_nothing(&d, &d.id("lim"), &before);
    }
    let id = d.ready_container("ctl", "sleep 1000", json!({}));
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 30);
    let mut ws = ws::open(&d, &id).await;
    use futures_util::SinkExt;
    ws.send(Message::Text(r#"{"event":"power","args":["suspend"]}"#.into())).await.unwrap();
    assert_eq!(ws::next_event(&mut ws, "error").await["args"][0], "power takes start, stop, kill or restart");
    // Refused, not done: the server was never suspended.
    assert_eq!(d.record(&id)["state"], "running");
    let _ = ws.next().await;
}

/// Links planted beside the state file, under the temp names a writer could use (the old
/// fixed `state.json.tmp` and the `state.json.tmp-<hex>` form), are never written through
/// while the daemon writes its state, and the stale ones are removed at start, unfollowed.
/// (The random part of a temp name cannot be guessed from outside, so the daemon cannot be
/// made to open a planted one; `src/fsutil.rs` tests `O_EXCL|O_NOFOLLOW` itself.)
#[test]
fn planted_temp_files_are_never_written_through() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::start();
    let target = d.dir.0.join("target");
    std::fs::write(&target, b"keep").unwrap();
    let fixed = d.dir.0.join("state.json.tmp");
    let patterned = d.dir.0.join("state.json.tmp-0000000000000000");
    for link in [&fixed, &patterned] {
        std::os::unix::fs::symlink(&target, link).unwrap();
    }
    // State writes with the links in place: each is a whole new file beside them.
    let added: Vec<u16> = ports(5);
    for p in &added {
        d.add_port("127.0.0.1", *p, "tcp");
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"keep", "the target is untouched");
    let meta = std::fs::symlink_metadata(d.dir.0.join("state.json")).unwrap();
    assert!(meta.file_type().is_file(), "state.json is a plain file, not a planted link");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut stored: Vec<u64> =
        d.state()["ports"].as_array().unwrap().iter().filter_map(|p| p["port"].as_u64()).collect();
    stored.sort_unstable();
    assert_eq!(stored, added.iter().map(|p| u64::from(*p)).collect::<Vec<_>>(), "every write landed in state.json");
    for link in [&fixed, &patterned] {
        assert!(std::fs::symlink_metadata(link).unwrap().file_type().is_symlink(), "{} left alone", link.display());
    }
    // At the next start the stale temp of the pattern goes, as a link (its target stays).
    d.restart();
    assert!(std::fs::symlink_metadata(&patterned).is_err(), "the planted link is gone");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert_eq!(d.get("/network/ports").json()["ports"].as_array().map(Vec::len), Some(added.len()));
}

/// A console token names its container: one asked for without `internal_id` is refused and
/// nothing is minted (a panel that forgets the field must not hand out every console); a
/// token for every console is the explicit opt-in `"scope": "all"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_tokens_name_their_container_unless_scope_all() {
    require_docker();
    let d = Daemon::start();
    let (vol, _) = d.new_volume();
    let mk = |n: &str| {
        let id = d.id(n);
        let body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol, "startup_command": "sleep 1000"});
        assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
        d.wait_installed(&id, 120);
        id
    };
    let (a, b) = (mk("sa"), mk("sb"));
    for body in [json!({}), json!({"ttl": "10m"}), json!({"scope": "console"}), json!({"remove_on_use": true})] {
        let r = d.call("POST", "/auth/tokens", Some(body.clone()));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error().contains("internal_id is required"), "{}", r.error());
    }
    for body in [json!({"scope": "all", "internal_id": a}), json!({"scope": "every"}), json!({"scope": 1})] {
        assert_eq!(d.call("POST", "/auth/tokens", Some(body.clone())).status, 400, "{body}");
    }
    assert_eq!(d.state()["tokens"], json!([]), "a refused request mints nothing");
    // A bound token opens its own console only; `scope: all` opens every one.
    let r = d.call("POST", "/auth/tokens", Some(json!({"internal_id": a, "scope": "console"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let bound = r.json()["token"].as_str().unwrap().to_string();
    ws::connect(d.port, &format!("/ws/{a}?token={bound}"), None).await.expect("its own console");
    assert_eq!(ws::refused_status(ws::connect(d.port, &format!("/ws/{b}?token={bound}"), None).await), 403);
    let r = d.call("POST", "/auth/tokens", Some(json!({"scope": "all"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let all = r.json()["token"].as_str().unwrap().to_string();
    for id in [&a, &b] {
        ws::connect(d.port, &format!("/ws/{id}?token={all}"), None).await.expect("scope all opens every console");
    }
}
