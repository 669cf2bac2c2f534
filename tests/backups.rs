//! Backups against the real daemon and engine: made, listed, downloaded (checked with `tar`
//! and `sha256sum`), restored with and without `truncate`, around a running server, and
//! surviving `kill -9` mid-way.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// The tree under `dir`: path -> (kind, mode, sha256 of the content or the link target).
fn tree(dir: &Path) -> BTreeMap<String, (char, u32, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let mode = meta.permissions().mode() & 0o777;
            let entry = if meta.file_type().is_symlink() {
                ('l', 0, std::fs::read_link(e.path()).unwrap().to_string_lossy().into_owned())
            } else if meta.is_dir() {
                stack.push(e.path());
                ('d', mode, String::new())
            } else {
                use sha2::Digest;
                ('f', mode, format!("{:x}", sha2::Sha256::digest(std::fs::read(e.path()).unwrap())))
            };
            out.insert(rel, entry);
        }
    }
    out
}

fn backup(d: &Daemon, vol: &str, body: Value) -> Value {
    let r = d.call("POST", &format!("/volumes/{vol}/backups"), Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["state"], "creating");
    let id = r.json()["backup_id"].as_str().unwrap().to_string();
    wait_for(120, "the backup to finish", || {
        let b = d.get(&format!("/volumes/{vol}/backups/{id}")).json();
        (b["state"] != "creating").then_some(b)
    })
}

fn download(d: &Daemon, vol: &str, id: &str, to: &Path) {
    let out = Command::new("curl")
        .args(["-sf", "-o"])
        .arg(to)
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://127.0.0.1:{}/volumes/{vol}/backups/{id}/download", d.port))
        .status()
        .unwrap();
    assert!(out.success(), "download failed");
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A volume with nested directories, symlinks (inside and out), an ignored folder, a
/// `.lightdignore` and a 200 MiB file: the archive has what it should, byte for byte, and
/// restores with and without `truncate` give back the tree.
#[test]
fn backup_download_and_restore_give_back_the_tree() {
    let d = Daemon::start();
    let (vol, path) = d.new_volume();
    std::fs::create_dir_all(path.join("world/region")).unwrap();
    std::fs::write(path.join("world/level.dat"), b"level").unwrap();
    std::fs::write(path.join("world/region/r.0.0.mca"), vec![3u8; 4096]).unwrap();
    std::fs::set_permissions(path.join("world/level.dat"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("world/level.dat", path.join("level-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", path.join("outside-link")).unwrap();
    std::fs::create_dir_all(path.join("logs")).unwrap();
    std::fs::write(path.join("logs/latest.log"), b"noise").unwrap();
    std::fs::create_dir_all(path.join("cache")).unwrap();
    std::fs::write(path.join("cache/tmp.bin"), b"cache").unwrap();
    std::fs::write(path.join(".lightdignore"), b"# caches\ncache/\n").unwrap();
    let mut big = std::fs::File::create(path.join("big.bin")).unwrap();
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    for _ in 0..200 {
        big.write_all(&block).unwrap();
    }
    drop(big);
    let b = backup(&d, &vol, json!({"name": "nightly", "ignore": ["logs/**"]}));
    assert_eq!(b["state"], "ready", "{b}");
    assert_eq!(b["name"], "nightly");
    let id = b["backup_id"].as_str().unwrap().to_string();
    let file = d.dir.0.join("nightly.tar.gz");
    download(&d, &vol, &id, &file);
    assert_eq!(sha256sum(&file), b["sha256"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&file).unwrap().len(), b["size_bytes"].as_u64().unwrap());
    let listing = String::from_utf8(Command::new("tar").arg("-tzvf").arg(&file).output().unwrap().stdout).unwrap();
    for needed in [
        "world/level.dat",
        "world/region/r.0.0.mca",
        "big.bin",
        "level-link -> world/level.dat",
        "outside-link -> /etc/passwd",
        ".lightdignore",
    ] {
        assert!(listing.contains(needed), "{needed} missing:\n{listing}");
    }
    for left_out in ["logs/latest.log", "cache/tmp.bin"] {
        assert!(!listing.contains(left_out), "{left_out} should be ignored:\n{listing}");
    }
    assert!(listing.contains("-rw-------"), "modes kept:\n{listing}");
    assert_eq!(b["files"], 4, "regular files: {b}");
    // Range download.
    let r = d.call_with(
        "GET",
        &format!("/volumes/{vol}/backups/{id}/download"),
        None,
        &[("Authorization", &format!("Bearer {TOKEN}")), ("Range", "bytes=0-1")],
    );
    assert_eq!(
        (r.status, r.header("content-range").map(String::from)),
        (206, Some(format!("bytes 0-1/{}", b["size_bytes"])))
    );

    // The volume changes; a restore without truncate puts back what the backup had and keeps
    // what is new; with truncate, what is new goes too.
    let before: BTreeMap<_, _> =
        tree(&path).into_iter().filter(|(k, _)| !k.starts_with("logs/") && !k.starts_with("cache")).collect();
    std::fs::write(path.join("world/level.dat"), b"corrupted").unwrap();
    std::fs::remove_file(path.join("world/region/r.0.0.mca")).unwrap();
    std::fs::write(path.join("new.txt"), b"new").unwrap();
    let restore = |truncate: bool| {
        let r = d.call("POST", &format!("/volumes/{vol}/backups/{id}/restore"), Some(json!({"truncate": truncate})));
        assert_eq!(r.status, 202, "{}", r.body);
        let again = d.call("POST", &format!("/volumes/{vol}/backups/{id}/restore"), None);
        assert_eq!(again.status, 409, "one restore at a time: {}", again.body);
        let done = wait_for(120, "the restore", || {
            let b = d.get(&format!("/volumes/{vol}/backups/{id}")).json();
            b["last_restore"]["completed_at"].is_u64().then_some(b)
        });
        assert_eq!(done["last_restore"]["error"], Value::Null, "{done}");
        assert_eq!(done["last_restore"]["truncate"], truncate);
    };
    restore(false);
    let after = tree(&path);
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} restored");
    }
    assert!(after.contains_key("new.txt"), "kept without truncate");
    restore(true);
    let after: BTreeMap<_, _> = tree(&path);
    let differ: Vec<_> = before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).collect();
    assert!(
        differ.is_empty(),
        "truncate gives back exactly the backup's tree; differ: {differ:?} {before:?} {after:?}"
    );
}

/// A restore while the server runs stops it gracefully, restores, and starts it again;
/// viewers are told; a paused backup suspends the server for its duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_around_a_running_server() {
    require_docker();
    let d = Daemon::start();
    let id = d.ready_container(
        "game",
        "trap 'echo saving; exit 0' TERM; echo up; while true; do sleep 0.2; done",
        json!({"start_pattern": "up", "install_script": "echo v1 > /home/container/save.dat"}),
    );
    let vol = d.record(&id)["volume_id"].as_str().unwrap().to_string();
    let path = std::path::PathBuf::from(d.get(&format!("/volumes/{vol}")).json()["path"].as_str().unwrap());
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 20);
    let mut ws = ws::open(&d, &id).await;
    let b = tokio::task::block_in_place(|| backup(&d, &vol, json!({"pause": true})));
    assert_eq!(b["state"], "ready");
    let mut events = Vec::new();
    while events.last().map(String::as_str) != Some("backup completed") {
        let f = ws::next_event(&mut ws, "event").await;
        events.push(f["args"][0].as_str().unwrap().to_string());
    }
    assert!(events.contains(&"backup started".into()) && events.contains(&"suspended".into()), "{events:?}");
    d.wait_state(&id, "running", 20);
    std::fs::write(path.join("save.dat"), b"v2-broken").unwrap();
    let bid = b["backup_id"].as_str().unwrap();
    let r = d.call("POST", &format!("/volumes/{vol}/backups/{bid}/restore"), None);
    assert_eq!(r.status, 202, "{}", r.body);
    let note = ws::next_note(&mut ws, "Server stopped").await;
    assert_eq!(note, "Server stopped (exit code 0)", "a graceful stop");
    loop {
        let f = ws::next_event(&mut ws, "event").await;
        if f["args"][0] == "backup restore completed" {
            break;
        }
    }
    d.wait_state(&id, "running", 30);
    assert_eq!(std::fs::read(path.join("save.dat")).unwrap(), b"v1\n");
    // A corrupted archive is refused by its checksum, with the reason on record.
    let archive = d.dir.0.join("backups").join(&vol).join(format!("{bid}.tar.gz"));
    let mut bytes = std::fs::read(&archive).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();
    assert_eq!(d.call("POST", &format!("/volumes/{vol}/backups/{bid}/restore"), None).status, 202);
    let b = wait_for(60, "the failed restore", || {
        let b = d.get(&format!("/volumes/{vol}/backups/{bid}")).json();
        b["error"].as_str().map(|_| b.clone())
    });
    assert!(b["error"].as_str().unwrap().contains("sha256"), "{b}");
    d.wait_state(&id, "running", 30);
}

/// `kill -9` in the middle of a backup: after the restart it is `failed` and no temp file is
/// left; a finished backup is never lost; the oldest go past `max_per_volume`; upload works.
#[test]
fn kill9_mid_backup_limits_and_upload() {
    let mut d = Daemon::start_with(|c| {
        c["backups"]["max_per_volume"] = json!(2);
        c["backups"]["write_limit"] = json!(4);
    });
    let (vol, path) = d.new_volume();
    std::fs::write(path.join("data.bin"), vec![0u8; 1 << 20]).unwrap();
    let done = backup(&d, &vol, json!({"name": "first"}));
    assert_eq!(done["state"], "ready");
    // A slow one (4 MiB/s of random data) to cut.
    let (cut, part) = start_slow_backup(&d, &vol, &path, "backups");
    assert_eq!(d.get(&format!("/volumes/{vol}/backups/{cut}")).json()["state"], "creating");
    d.kill9();
    d.spawn();
    let b = d.get(&format!("/volumes/{vol}/backups/{cut}")).json();
    assert_eq!((b["state"].clone(), b["error"].clone()), (json!("failed"), json!("interrupted by daemon restart")));
    assert!(!part.exists(), "the temp file is gone");
    let first = d.get(&format!("/volumes/{vol}/backups/{}", done["backup_id"].as_str().unwrap())).json();
    assert_eq!(first["state"], "ready", "a finished backup survives");
    // Upload a tar.gz made elsewhere.
    let src = TempDir::new("upload");
    std::fs::write(src.0.join("hello.txt"), b"hi").unwrap();
    let tgz = d.dir.0.join("up.tar.gz");
    assert!(Command::new("tar").arg("-czf").arg(&tgz).arg("-C").arg(&src.0).arg(".").status().unwrap().success());
    let body = std::fs::read(&tgz).unwrap();
    let req = format!(
        "POST /volumes/{vol}/backups/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(&body);
    let r = raw(d.port, &bytes).unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["sha256"], sha256sum(&tgz));
    assert_eq!(r.json()["files"], 1);
    // max_per_volume = 2: a third ready backup pushes the oldest ready one out.
    let first_id = done["backup_id"].as_str().unwrap().to_string();
    std::fs::remove_file(path.join("random.bin")).unwrap();
    let third = backup(&d, &vol, json!({"name": "third"}));
    assert_eq!(third["state"], "ready");
    let ready: Vec<String> = d.get(&format!("/volumes/{vol}/backups")).json()["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["state"] == "ready")
        .map(|b| b["backup_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ready.len(), 2, "{ready:?}");
    assert!(!ready.contains(&first_id), "the oldest went");
    // Its record went in the same step that made the third one ready; its archive right after.
    let archive = d.dir.0.join("backups").join(&vol).join(format!("{first_id}.tar.gz"));
    wait_for(10, "the pruned backup's archive deleted", || (!archive.exists()).then_some(()));
    let bad = b"definitely not gzip";
    let req = format!(
        "POST /volumes/{vol}/backups/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {}\r\n\r\n",
        bad.len()
    );
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(bad);
    assert_eq!(raw(d.port, &bytes).unwrap().status, 400);
}

/// A clean stop (SIGTERM) in the middle of a backup: the job hears the shutdown, so the state
/// file already says `failed` (as a restart would) and no temp file is left, before any
/// restart.
#[test]
fn sigterm_mid_backup_ends_the_job_on_record() {
    let mut d = Daemon::start_with(|c| {
        c["backups"]["write_limit"] = json!(4);
    });
    let (vol, path) = d.new_volume();
    let (cut, part) = start_slow_backup(&d, &vol, &path, "sigterm");
    d.stop();
    let b = d.state()["backups"][&cut].clone();
    assert_eq!(b["state"], "failed", "the stopped job is on record: {b}");
    assert!(!part.exists(), "the temp file is gone");
}

/// Starts a backup named `cut` of 64 MiB of random data (seeded by `tag`), slow at a 4 MiB/s
/// write limit, and waits until its partial file passes 1 MiB; its id and that file.
fn start_slow_backup(d: &Daemon, vol: &str, path: &Path, tag: &str) -> (String, PathBuf) {
    let mut f = std::fs::File::create(path.join("random.bin")).unwrap();
    let mut rng = Rng(seed(tag));
    let junk: Vec<u8> = (0..64 << 20).map(|_| rng.next() as u8).collect();
    f.write_all(&junk).unwrap();
    drop(f);
    let r = d.call("POST", &format!("/volumes/{vol}/backups"), Some(json!({"name": "cut"})));
    let cut = r.json()["backup_id"].as_str().unwrap().to_string();
    let part = d.dir.0.join("backups").join(vol).join(format!("{cut}.tar.gz.part"));
    wait_for(30, "the backup under way", || {
        (std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) > 1 << 20).then_some(())
    });
    (cut, part)
}

/// `download`, also giving the response's headers (lower-cased names).
fn download_with_headers(d: &Daemon, vol: &str, id: &str, to: &Path) -> String {
    let headers = to.with_extension("headers");
    let out = Command::new("curl")
        .args(["-sf", "-o"])
        .arg(to)
        .arg("-D")
        .arg(&headers)
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://127.0.0.1:{}/volumes/{vol}/backups/{id}/download", d.port))
        .status()
        .unwrap();
    assert!(out.success(), "download failed");
    std::fs::read_to_string(headers).unwrap().to_ascii_lowercase()
}

/// `POST /volumes/:v/backups/upload` with `body`.
fn upload(d: &Daemon, vol: &str, body: &[u8]) -> Resp {
    upload_backup(d.port, vol, "application/zstd", body)
}

/// Restores backup `id` of `vol` and waits for it to end; the backup's record after.
fn restore_and_wait(d: &Daemon, vol: &str, id: &str, truncate: bool) -> Value {
    let r = d.call("POST", &format!("/volumes/{vol}/backups/{id}/restore"), Some(json!({"truncate": truncate})));
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for(120, "the restore", || {
        let b = d.get(&format!("/volumes/{vol}/backups/{id}")).json();
        b["last_restore"]["completed_at"].is_u64().then_some(b)
    })
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A volume of compressible files, a link and nested folders: a `tar.zst` backup is on record
/// as such, downloads as `application/zstd` named `.tar.zst`, starts with the zstd magic, is
/// far smaller than the data, and restores (with `truncate`) byte for byte; the same archive
/// uploaded is recognized as `tar.zst`. Without `format` a backup is still a `tar.gz`; a bad
/// format is a 400 naming it.
#[test]
fn a_tar_zst_backup_downloads_as_zstd_and_restores_byte_for_byte() {
    let d = Daemon::start();
    let (vol, path) = d.new_volume();
    std::fs::create_dir_all(path.join("world/region")).unwrap();
    let lines: String = (0..200_000).map(|i| format!("player{} joined at tick {}\n", i % 97, i)).collect();
    std::fs::write(path.join("world/log.txt"), &lines).unwrap();
    std::fs::write(path.join("world/region/r.0.0.mca"), vec![5u8; 1 << 20]).unwrap();
    std::fs::write(path.join("level.dat"), b"level").unwrap();
    std::fs::set_permissions(path.join("level.dat"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("world/log.txt", path.join("log-link")).unwrap();
    let before = tree(&path);
    let data_bytes = (lines.len() + (1 << 20) + 5) as u64;

    let bad = d.call("POST", &format!("/volumes/{vol}/backups"), Some(json!({"format": "tar.bz2"})));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.error().contains("tar.bz2") && bad.error().contains("tar.zst"), "{}", bad.body);

    // Positive control, and the default: a tar.gz.
    let gz = backup(&d, &vol, json!({}));
    assert_eq!((gz["state"].as_str(), gz["format"].as_str()), (Some("ready"), Some("tar.gz")), "{gz}");
    let gz_file = d.dir.0.join("b.tar.gz");
    let headers = download_with_headers(&d, &vol, gz["backup_id"].as_str().unwrap(), &gz_file);
    assert!(headers.contains("content-type: application/gzip"), "{headers}");
    assert!(std::fs::read(&gz_file).unwrap().starts_with(&[0x1f, 0x8b]));

    let zst = backup(&d, &vol, json!({"name": "zst", "format": "tar.zst"}));
    assert_eq!((zst["state"].as_str(), zst["format"].as_str()), (Some("ready"), Some("tar.zst")), "{zst}");
    let id = zst["backup_id"].as_str().unwrap().to_string();
    assert!(d.dir.0.join("backups").join(&vol).join(format!("{id}.tar.zst")).exists());
    let zst_file = d.dir.0.join("b.tar.zst");
    let headers = download_with_headers(&d, &vol, &id, &zst_file);
    assert!(headers.contains("content-type: application/zstd"), "{headers}");
    assert!(headers.contains("zst.tar.zst"), "named for the format: {headers}");
    let archive = std::fs::read(&zst_file).unwrap();
    assert!(archive.starts_with(&ZSTD_MAGIC), "{:02x?}", &archive[..archive.len().min(8)]);
    assert!((archive.len() as u64) * 4 < data_bytes, "{} bytes of zstd for {data_bytes} of data", archive.len());
    assert_eq!(zst["size_bytes"], archive.len() as u64);
    assert_eq!(zst["sha256"], sha256sum(&zst_file));
    assert_eq!(zst["files"], 3);

    // The volume changes; a truncating restore gives back exactly the backup's tree.
    std::fs::write(path.join("world/log.txt"), b"overwritten").unwrap();
    std::fs::write(path.join("new.txt"), b"new").unwrap();
    std::fs::remove_file(path.join("level.dat")).unwrap();
    assert_ne!(tree(&path), before);
    let done = restore_and_wait(&d, &vol, &id, true);
    assert_eq!(done["last_restore"]["error"], Value::Null, "{done}");
    assert_eq!(tree(&path), before, "restored byte for byte");

    // The same archive uploaded is a tar.zst backup.
    let up = upload(&d, &vol, &archive);
    assert_eq!(up.status, 201, "{}", up.body);
    assert_eq!((up.json()["format"].as_str(), up.json()["files"].as_u64()), (Some("tar.zst"), Some(3)));
    assert_eq!(up.json()["sha256"], zst["sha256"]);
}

/// A zstd long-name bomb (64 KiB declaring a 2 GiB name) is refused at upload in bounded
/// memory; planted as a backup's archive (its sha256 on record, as if it had passed), its
/// restore is refused, first because the record says tar.gz, then by the archive reader's cap,
/// and the volume is unchanged both times.
#[test]
fn a_zstd_bomb_restore_is_refused_and_changes_nothing() {
    let mut d = Daemon::start();
    let (vol, path) = d.new_volume();
    std::fs::create_dir_all(path.join("world")).unwrap();
    std::fs::write(path.join("world/level.dat"), b"level").unwrap();
    let before = tree(&path);
    let bomb = common::bombs::long_name_zst(2 << 30);
    assert!(bomb.starts_with(&ZSTD_MAGIC) && bomb.len() < 1 << 20, "a small bomb: {} bytes", bomb.len());
    let up = upload(&d, &vol, &bomb);
    assert_eq!(up.status, 400, "{}", up.body);
    assert!(up.error().contains("name longer than 4096 bytes"), "{}", up.body);
    assert!(common::bombs::peak_rss(d.pid()) < 128 << 20, "bounded memory");

    let zst = backup(&d, &vol, json!({"format": "tar.zst"}));
    assert_eq!(zst["state"], "ready", "{zst}");
    let id = zst["backup_id"].as_str().unwrap().to_string();
    let plant = |d: &mut Daemon, format: &str| {
        d.stop();
        std::fs::write(d.dir.0.join("backups").join(&vol).join(format!("{id}.{format}")), &bomb).unwrap();
        let mut state = d.state();
        let record = &mut state["backups"][id.as_str()];
        assert!(record["sha256"].is_string(), "the backup's record: {record}");
        record["format"] = json!(format);
        record["sha256"] = json!(sha256sum(&d.dir.0.join("backups").join(&vol).join(format!("{id}.{format}"))));
        std::fs::write(d.dir.0.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
        d.restart();
    };

    plant(&mut d, "tar.gz");
    let done = restore_and_wait(&d, &vol, &id, false);
    let error = done["last_restore"]["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("is a tar.zst, but the backup's record says tar.gz"), "{done}");
    assert_eq!(tree(&path), before, "nothing changed");

    plant(&mut d, "tar.zst");
    let done = restore_and_wait(&d, &vol, &id, false);
    let error = done["last_restore"]["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("name longer than 4096 bytes"), "{done}");
    assert_eq!(tree(&path), before, "nothing changed");
    assert!(common::bombs::peak_rss(d.pid()) < 128 << 20, "bounded memory");
    assert_eq!(d.get("/api/v1/public/ping").status, 200);
}
