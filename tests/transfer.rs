//! Moving a running server between two nodes: two daemons on this machine sharing one engine,
//! each with its own state, volumes, network and container name prefix.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// The server: appends the host's uptime to `ts` in its volume ten times a second, and stops
/// at once on SIGTERM.
const WRITER: &str = "trap 'exit 0' TERM; echo ready; \
                      while true; do cut -d' ' -f1 /proc/uptime >> /home/container/ts; usleep 100000; done";

/// Random bytes (incompressible) and world-like text (compressible), this many MiB each.
const HALF_MIB: usize = 100;

/// The resumed transfers move this many MiB of random bytes: what goes over the wire is the
/// data itself, so bytes sent compare with it directly.
const RESUME_MIB: u64 = 200;

/// Debug builds pause this long after each chunk upload when asked (so a test can act
/// mid-copy).
const SLOW: (&str, &str) = ("LIGHTD_TEST_SEND_DELAY_MS", "400");

/// The target nodes' network: every pair's second node joins it, the first one the tests'
/// usual network (two names in all, so the engine's address pools are not used up).
const TARGET_NET: &str = "lightd-test-net-b";

/// A node: its own name prefix, and a network apart from its pair's (a name ending in `b` is
/// the target of its pair); `env` for the test hooks of debug builds.
fn node(name: &str, env: &[(&str, &str)]) -> Daemon {
    let prefix = format!("{name}-");
    let net = if name.ends_with('b') { TARGET_NET } else { "lightd-test-net" };
    let mut d = Daemon::prepare(|c| {
        c["containers"]["name_prefix"] = json!(prefix);
        c["containers"]["default_network"] = json!(net);
    });
    d.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    d.spawn();
    d
}

/// The host path of volume `vol` of `d`.
fn volume_path(d: &Daemon, vol: &str) -> PathBuf {
    let r = d.get(&format!("/volumes/{vol}"));
    assert_eq!(r.status, 200, "{}", r.body);
    PathBuf::from(r.json()["path"].as_str().unwrap())
}

/// A running writer server with `random` MiB of random data and `world` MiB of compressible
/// data in its volume; returns its id and volume path.
fn running_server(d: &Daemon, name: &str, random: usize, world: usize) -> (String, PathBuf) {
    let id = d.ready_container(name, WRITER, json!({"start_pattern": "ready"}));
    let vol = d.record(&id)["volume_id"].as_str().unwrap().to_string();
    let path = volume_path(d, &vol);
    fill(&path, random, world);
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 60);
    (id, path)
}

/// `random` MiB of random bytes and `world` MiB of repetitive text, a small tree and a symlink.
fn fill(path: &Path, random: usize, world: usize) {
    let mut rng = Rng(seed("transfer"));
    let mut random = vec![0u8; random << 20];
    for c in random.chunks_mut(8) {
        let n = rng.next().to_le_bytes();
        c.copy_from_slice(&n[..c.len()]);
    }
    std::fs::write(path.join("random.bin"), &random).unwrap();
    let line = b"chunk 0,0 biome plains blocks stone stone dirt grass air air air\n";
    let world: Vec<u8> = line.iter().copied().cycle().take(world << 20).collect();
    std::fs::create_dir_all(path.join("world/region")).unwrap();
    std::fs::write(path.join("world/region/r.0.0.mca"), &world).unwrap();
    std::fs::write(path.join("server.properties"), b"motd=moved\n").unwrap();
    std::os::unix::fs::symlink("world/region", path.join("regions")).unwrap();
}

/// A transfer token minted at `target` for server `id`.
fn transfer_token(target: &Daemon, id: &str) -> String {
    let r = target.call("POST", "/auth/tokens", Some(json!({"scope": "transfer", "internal_id": id, "ttl": "1h"})));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["token"].as_str().unwrap().to_string()
}

/// Asks `source` to move `id` to `target`; returns the `202`'s status.
fn begin(source: &Daemon, target: &Daemon, id: &str, token: &str) -> Value {
    let body = json!({"target": format!("http://127.0.0.1:{}", target.port), "token": token});
    let r = source.call("POST", &format!("/containers/{id}/transfer"), Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    r.json()
}

fn transfer_status(source: &Daemon, id: &str) -> Value {
    let r = source.get(&format!("/containers/{id}/transfer"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Waits until the transfer of `id` is over; returns its last status.
fn wait_over(source: &Daemon, id: &str) -> Value {
    wait_for(300, "the transfer to end", || {
        Some(transfer_status(source, id))
            .filter(|s| ["done", "failed", "cancelled"].contains(&s["state"].as_str().unwrap()))
    })
}

/// The uptime stamps the server wrote, in order.
fn stamps(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path.join("ts")).unwrap().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn longest_gap(stamps: &[f64]) -> f64 {
    stamps.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

fn same_file(a: &Path, b: &Path, rel: &str) {
    let (x, y) = (std::fs::read(a.join(rel)).unwrap(), std::fs::read(b.join(rel)).unwrap());
    assert!(x == y, "{rel} differs: {} vs {} bytes", x.len(), y.len());
}

/// The target's volume of server `id`.
fn target_volume(target: &Daemon, id: &str) -> PathBuf {
    let vol = target.record(id)["volume_id"].as_str().unwrap().to_string();
    volume_path(target, &vol)
}

/// Checks a finished move: the target runs the server on the same data, the source has no
/// container or record left, the writes went on with a short gap.
fn assert_moved(source: &Daemon, target: &Daemon, id: &str, src_path: &Path) -> PathBuf {
    target.wait_state(id, "running", 60);
    let dst_path = target_volume(target, id);
    for rel in ["random.bin", "world/region/r.0.0.mca", "server.properties"] {
        same_file(src_path, &dst_path, rel);
    }
    assert_eq!(std::fs::read_link(dst_path.join("regions")).unwrap(), Path::new("world/region"));
    assert_eq!(source.get(&format!("/containers/{id}")).status, 404, "the record left the source");
    assert!(source.docker_names().is_empty(), "no container left at the source: {:?}", source.docker_names());
    // The stamps the source wrote came along, then the target's follow.
    let before = stamps(src_path).len();
    wait_for(30, "the moved server to keep writing", || (stamps(&dst_path).len() > before + 10).then_some(()));
    let all = stamps(&dst_path);
    assert!(all.len() > before, "{} stamps at the target, {before} at the source", all.len());
    let gap = longest_gap(&all);
    assert!(gap < 5.0, "the longest gap in the timestamps was {gap:.2} s");
    dst_path
}

#[test]
fn a_running_server_moves_with_its_data_and_a_short_gap() {
    require_docker();
    let source = node("lta", &[]);
    let target = node("ltb", &[]);
    let (id, src_path) = running_server(&source, "mv", HALF_MIB, HALF_MIB);
    // Positive control: it writes its stamps at the source.
    wait_for(30, "stamps at the source", || (stamps(&src_path).len() > 5).then_some(()));
    let token = transfer_token(&target, &id);
    let started = begin(&source, &target, &id, &token);
    assert_eq!(started["state"], "copying");
    let end = wait_over(&source, &id);
    eprintln!("moved: {end}");
    assert_eq!(end["state"], "done", "{end}");
    let data = (HALF_MIB as u64 * 2) << 20;
    assert!(end["bytes_total"].as_u64().unwrap() >= data, "{end}");
    assert!(end["files"].as_u64().unwrap() >= 3, "{end}");
    assert!(end["downtime_ms"].as_u64().is_some(), "{end}");
    // Compressed: the random half and little of the rest.
    assert!(end["bytes_sent"].as_u64().unwrap() < data * 3 / 4, "{end}");
    assert_moved(&source, &target, &id, &src_path);
}

/// Waits until the transfer of `id` has sent at least `bytes`, still copying; its status.
fn wait_sent(source: &Daemon, id: &str, bytes: u64) -> Value {
    wait_for(120, "the copy to be under way", || {
        let s = transfer_status(source, id);
        assert!(["copying", "syncing"].contains(&s["state"].as_str().unwrap()), "{s}");
        (s["bytes_sent"].as_u64().unwrap() >= bytes).then_some(s)
    })
}

fn sent(s: &Value) -> u64 {
    s["bytes_sent"].as_u64().unwrap()
}

/// Nothing of the transfer is left at `target`: no server, no volume, no container.
fn nothing_at(target: &Daemon) {
    let servers = target.get("/containers").json();
    assert_eq!(servers["containers"].as_array().map(Vec::len), Some(0), "no server at the target: {servers}");
    let vols = target.get("/volumes").json();
    assert_eq!(vols["volumes"].as_array().map(Vec::len), Some(0), "no volume at the target: {vols}");
    assert!(target.docker_names().is_empty());
}

#[test]
fn a_kill_9_of_the_source_mid_copy_resumes_with_what_the_target_holds() {
    require_docker();
    let mut source = node("lsa", &[SLOW]);
    let target = node("lsb", &[]);
    let (id, src_path) = running_server(&source, "rs", RESUME_MIB as usize, 0);
    let token = transfer_token(&target, &id);
    begin(&source, &target, &id, &token);
    let first = wait_sent(&source, &id, 48 << 20);
    source.kill9();
    source.spawn();
    // The engine ran the server all along; the restarted daemon finds it running.
    source.wait_state(&id, "running", 60);
    assert_eq!(source.get(&format!("/containers/{id}/transfer")).status, 404, "the job died with the daemon");
    begin(&source, &target, &id, &token);
    let end = wait_over(&source, &id);
    eprintln!("first attempt: {first}\nresumed: {end}");
    assert_eq!(end["state"], "done", "{end}");
    assert!(end["bytes_reused"].as_u64().unwrap() >= sent(&first) / 2, "resumed from what the target held: {end}");
    let data = RESUME_MIB << 20;
    let total = sent(&first) + sent(&end);
    assert!(total < data * 12 / 10, "{total} bytes sent over both attempts for {data} bytes of data");
    assert_moved(&source, &target, &id, &src_path);
}

#[test]
fn a_kill_9_of_the_target_mid_copy_fails_then_the_same_request_resumes() {
    require_docker();
    let source = node("lka", &[SLOW]);
    let port = common::port();
    let mut target = Daemon::prepare(|c| {
        c["containers"]["name_prefix"] = json!("lkb-");
        c["containers"]["default_network"] = json!(TARGET_NET);
        c["server"]["port"] = json!(port);
    });
    target.spawn();
    let (id, src_path) = running_server(&source, "rt", RESUME_MIB as usize, 0);
    let token = transfer_token(&target, &id);
    begin(&source, &target, &id, &token);
    wait_sent(&source, &id, 48 << 20);
    target.kill9();
    let failed = wait_over(&source, &id);
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("target"), "{failed}");
    assert_eq!(source.record(&id)["state"], "running", "the server still runs at the source");
    target.spawn();
    begin(&source, &target, &id, &token);
    let end = wait_over(&source, &id);
    eprintln!("failed attempt: {failed}\nresumed: {end}");
    assert_eq!(end["state"], "done", "{end}");
    assert!(end["bytes_reused"].as_u64().unwrap() > 0, "{end}");
    let (data, total) = (RESUME_MIB << 20, sent(&failed) + sent(&end));
    assert!(total < data * 12 / 10, "{total} bytes sent over both attempts for {data} bytes of data");
    assert_moved(&source, &target, &id, &src_path);
}

#[test]
fn a_byte_flipped_in_transit_is_caught_and_sent_again() {
    require_docker();
    let source = node("lfa", &[("LIGHTD_TEST_FLIP_CHUNK", "2")]);
    let target = node("lfb", &[]);
    let (id, src_path) = running_server(&source, "fl", 8, 8);
    let token = transfer_token(&target, &id);
    begin(&source, &target, &id, &token);
    let end = wait_over(&source, &id);
    assert_eq!(end["state"], "done", "{end}");
    assert!(end["chunks_resent"].as_u64().unwrap() >= 1, "the corrupt chunk was asked for again: {end}");
    assert_moved(&source, &target, &id, &src_path);
}

#[test]
fn a_cancel_leaves_the_server_running_at_the_source_and_nothing_at_the_target() {
    require_docker();
    let source = node("lca", &[SLOW]);
    let target = node("lcb", &[]);
    let (id, src_path) = running_server(&source, "cc", 100, 0);
    let token = transfer_token(&target, &id);
    begin(&source, &target, &id, &token);
    wait_sent(&source, &id, 24 << 20);
    // Positive control: the target holds a staging volume mid-copy.
    assert_eq!(target.get("/volumes").json()["volumes"].as_array().map(Vec::len), Some(1));
    let r = source.call("DELETE", &format!("/containers/{id}/transfer"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "cancelled");
    assert_eq!(source.record(&id)["state"], "running");
    let before = stamps(&src_path).len();
    wait_for(30, "the server to keep writing at the source", || (stamps(&src_path).len() > before + 5).then_some(()));
    nothing_at(&target);
    // Cancelling again: nothing under way.
    assert_eq!(source.call("DELETE", &format!("/containers/{id}/transfer"), None).status, 409);
}

/// Debug builds pause this long once the server is stopped for the last round (so a test
/// can stop the daemon then).
const HOLD_STOPPED: (&str, &str) = ("LIGHTD_TEST_STOPPED_DELAY_MS", "4000");

#[test]
fn a_source_stopped_with_its_server_stopped_for_the_last_round_leaves_it_running() {
    require_docker();
    let mut source = node("lqa", &[HOLD_STOPPED]);
    let target = node("lqb", &[]);
    let (id, src_path) = running_server(&source, "sd", 1, 1);
    let token = transfer_token(&target, &id);
    begin(&source, &target, &id, &token);
    // The transfer stopped the server for its last round (positive control of the moment).
    wait_for(60, "the transfer to stop the server", || (source.record(&id)["state"] == "offline").then_some(()));
    assert_eq!(transfer_status(&source, &id)["state"], "stopping", "held once the server stopped");
    source.stop();
    let names = source.docker_names();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &names[0]]).trim(), "true", "started again");
    source.spawn();
    source.wait_state(&id, "running", 60);
    assert_eq!(source.get(&format!("/containers/{id}/transfer")).status, 404, "the job ended with the daemon");
    let before = stamps(&src_path).len();
    wait_for(30, "the server to keep writing at the source", || (stamps(&src_path).len() > before + 5).then_some(()));
    assert!(target.get(&format!("/containers/{id}")).status == 404, "no server at the target");
}

#[test]
fn wrong_expired_or_foreign_tokens_fail_clearly_and_the_server_stays() {
    require_docker();
    let source = node("lta", &[]);
    let target = node("ltb", &[]);
    let (id, _) = running_server(&source, "tk", 1, 1);
    let foreign = transfer_token(&target, "someone-else");
    let expired = {
        let r = target.call("POST", "/auth/tokens", Some(json!({"scope": "transfer", "internal_id": id, "ttl": "1s"})));
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["token"].as_str().unwrap().to_string()
    };
    // The target itself refuses the expired token once its second is over.
    wait_for(10, "the token to expire", || {
        let r = target.call_with(
            "DELETE",
            &format!("/transfers/{id}"),
            None,
            &[("Authorization", &format!("Bearer {expired}"))],
        );
        (r.status == 401).then_some(())
    });
    for (token, says) in [
        ("lightd_nothing_like_a_token", "Invalid transfer token"),
        (foreign.as_str(), "another server"),
        (expired.as_str(), "expired"),
        (TOKEN_FOR_CONSOLE, "Invalid transfer token"),
    ] {
        let token = if token == TOKEN_FOR_CONSOLE { console_token(&target) } else { token.to_string() };
        begin(&source, &target, &id, &token);
        let end = wait_over(&source, &id);
        assert_eq!(end["state"], "failed", "{end}");
        assert!(end["error"].as_str().unwrap().contains(says), "{says}: {end}");
        assert_eq!(end["bytes_sent"], 0, "{end}");
        assert_eq!(source.record(&id)["state"], "running");
    }
    nothing_at(&target);
}

/// Stands for a console token in the table above (minted when its turn comes).
const TOKEN_FOR_CONSOLE: &str = "console";

/// A console token of the target, for a server of its own.
fn console_token(target: &Daemon) -> String {
    let r = target.call("POST", "/auth/tokens", Some(json!({"scope": "all"})));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["token"].as_str().unwrap().to_string()
}

#[test]
fn a_missing_image_at_the_target_fails_clearly_and_the_server_stays() {
    require_docker();
    let source = node("lia", &[]);
    let target = node("lib", &[]);
    let image = format!("lightd-test/xfer-gone-{}", std::process::id());
    docker(&["tag", IMAGE, &image]);
    let id = source.ready_container("img", WRITER, json!({"image": image, "start_pattern": "ready"}));
    assert_eq!(source.act(&id, "start"), 202);
    source.wait_state(&id, "running", 60);
    // The running container keeps its image; the name is gone from the engine.
    docker(&["rmi", &image]);
    let token = transfer_token(&target, &id);
    begin(&source, &target, &id, &token);
    let end = wait_over(&source, &id);
    assert_eq!(end["state"], "failed", "{end}");
    assert!(end["error"].as_str().unwrap().contains("not on the target node"), "{end}");
    assert_eq!(source.record(&id)["state"], "running");
    nothing_at(&target);
}

#[test]
fn two_daemons_on_one_engine_keep_to_their_own_containers() {
    require_docker();
    let one = node("lna", &[]);
    let two = node("lnb", &[]);
    // The same server id on both: their containers are named apart.
    let id = one.id("same");
    for d in [&one, &two] {
        let (vol, _) = d.new_volume();
        let body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol, "startup_command": WRITER,
                          "start_pattern": "ready"});
        let r = d.call("POST", "/containers", Some(body));
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(d.wait_installed(&id, 120)["install_state"], "ready");
        assert_eq!(d.act(&id, "start"), 202);
        d.wait_state(&id, "running", 60);
    }
    assert_eq!(one.docker_names(), [format!("lna-{id}")]);
    assert_eq!(two.docker_names(), [format!("lnb-{id}")]);
    // One deletes its server: the other's keeps running, and is not taken for an orphan.
    assert_eq!(one.call("DELETE", &format!("/containers/{id}"), None).status, 200);
    assert!(one.docker_names().is_empty());
    assert_eq!(two.docker_names(), [format!("lnb-{id}")]);
    assert_eq!(two.record(&id)["state"], "running");
    // The other daemon still follows its own container's events.
    assert_eq!(two.act(&id, "kill"), 202);
    two.wait_state(&id, "offline", 30);
}

#[test]
fn a_full_target_fails_clearly_and_the_server_stays() {
    require_docker();
    let source = node("lda", &[]);
    // The target says it has 1 MiB free where its volumes are (a debug-build hook).
    let target = node("ldb", &[("LIGHTD_TEST_FREE_BYTES", "1048576")]);
    let (id, _) = running_server(&source, "full", 4, 4);
    let token = transfer_token(&target, &id);
    begin(&source, &target, &id, &token);
    let end = wait_over(&source, &id);
    assert_eq!(end["state"], "failed", "{end}");
    let error = end["error"].as_str().unwrap();
    assert!(error.contains("507") && error.contains("free"), "{end}");
    assert_eq!(end["bytes_sent"], 0, "{end}");
    assert_eq!(source.record(&id)["state"], "running");
    nothing_at(&target);
}

/// A ready backup of `vol` at `d`, holding what the volume holds now; its record.
fn backup_of(d: &Daemon, vol: &str) -> Value {
    let r = d.call("POST", &format!("/volumes/{vol}/backups"), Some(json!({})));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["backup_id"].as_str().unwrap().to_string();
    let b = wait_for(120, "the backup to finish", || {
        let b = d.get(&format!("/volumes/{vol}/backups/{id}")).json();
        (b["state"] != "creating").then_some(b)
    });
    assert_eq!(b["state"], "ready", "{b}");
    b
}

fn backups_at(d: &Daemon, vol: &str) -> Vec<Value> {
    let r = d.get(&format!("/volumes/{vol}/backups"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    v.as_array().or_else(|| v["backups"].as_array()).cloned().unwrap_or_default()
}

#[test]
fn with_backups_the_backups_go_along_and_restore_at_the_target_and_without_none_do() {
    require_docker();
    let source = node("lba", &[]);
    let target = node("lbb", &[]);
    let mut moved = Vec::new();
    for (name, with_backups) in [("bw", true), ("bn", false)] {
        let (id, src_path) = running_server(&source, name, 1, 1);
        let vol = source.record(&id)["volume_id"].as_str().unwrap().to_string();
        std::fs::write(src_path.join("saved.txt"), b"the backed-up bytes").unwrap();
        let b = backup_of(&source, &vol);
        std::fs::write(src_path.join("saved.txt"), b"changed after the backup").unwrap();
        let token = transfer_token(&target, &id);
        let body = json!({"target": format!("http://127.0.0.1:{}", target.port), "token": token,
                          "with_backups": with_backups});
        let r = source.call("POST", &format!("/containers/{id}/transfer"), Some(body));
        assert_eq!(r.status, 202, "{}", r.body);
        let end = wait_over(&source, &id);
        assert_eq!(end["state"], "done", "{end}");
        target.wait_state(&id, "running", 60);
        let tvol = target.record(&id)["volume_id"].as_str().unwrap().to_string();
        let dst = volume_path(&target, &tvol);
        assert_eq!(std::fs::read(dst.join("saved.txt")).unwrap(), b"changed after the backup");
        moved.push((id, b, tvol, dst, with_backups));
    }
    for (id, b, tvol, dst, with_backups) in moved {
        let listed = backups_at(&target, &tvol);
        if !with_backups {
            assert!(listed.is_empty(), "no backup moved without the flag: {listed:?}");
            continue;
        }
        assert_eq!(listed.len(), 1, "{listed:?}");
        let got = &listed[0];
        for k in ["backup_id", "name", "sha256", "size_bytes", "created_at"] {
            assert_eq!(got[k], b[k], "{k}: {got} vs {b}");
        }
        assert_eq!(got["state"], "ready");
        let bid = b["backup_id"].as_str().unwrap();
        let r =
            target.call("POST", &format!("/volumes/{tvol}/backups/{bid}/restore"), Some(json!({"truncate": false})));
        assert_eq!(r.status, 202, "{}", r.body);
        let done = wait_for(120, "the restore at the target", || {
            let b = target.get(&format!("/volumes/{tvol}/backups/{bid}")).json();
            b["last_restore"]["completed_at"].is_u64().then_some(b)
        });
        assert_eq!(done["last_restore"]["error"], Value::Null, "{done}");
        assert_eq!(std::fs::read(dst.join("saved.txt")).unwrap(), b"the backed-up bytes", "restored at the target");
        target.wait_state(&id, "running", 60);
    }
}
