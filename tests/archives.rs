//! Archives against the real daemon: bombs refused in bounded memory, extraction as a job
//! (done, cancelled, past its deadline: never a half-written file), listings a page at a time,
//! and an archive download cut off at its deadline.

mod common;

use std::io::{Read, Write};
use std::path::Path;

use common::bombs::{long_name_gz, peak_rss, zip_claiming};
use common::jobs::{extract, post_bytes as post_raw, wait_job};
use common::*;
use serde_json::{json, Value};

/// Names the daemon left at the volume root while extracting (its staging directories).
fn leftovers(volume: &Path) -> Vec<String> {
    let names = std::fs::read_dir(volume).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    names.filter(|n| n.starts_with(".lightd-tmp-")).collect()
}

/// Every regular file under `dir` with its size.
fn files_under(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().strip_prefix(dir).unwrap().display().to_string(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// A tar.gz of `n` small files (`d<i/1000>/f<i>.txt`, each holding its own name), slow to
/// extract for its many entries, small on the wire.
fn many_files_tgz(n: usize) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for i in 0..n {
        let name = format!("d{}/f{i}.txt", i / 1000);
        let mut h = tar::Header::new_gnu();
        h.set_size(name.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, &name, name.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// The 2 MB long-name bomb and a zip claiming 10 million entries are refused, naming the
/// cap, while the daemon's peak RSS stays under 128 MiB; it keeps serving, nothing is left.
#[test]
fn archive_bombs_are_refused_in_bounded_memory() {
    let d = Daemon::start();
    let (vol, path) = d.new_volume();
    let bomb = long_name_gz(2 << 30);
    let mut check = Vec::new();
    flate2::read::GzDecoder::new(&bomb[..]).take(1 << 20).read_to_end(&mut check).unwrap();
    assert!(bomb.len() < 3 << 20 && check[156] == b'L', "a 2 MB gzip of a long-name header");
    let limit = 128 << 20;
    for (what, body, cap) in [
        ("long-name bomb", bomb, "name longer than 4096 bytes"),
        ("zip claiming 10 million entries", zip_claiming(10_000_000), "more than 100000 entries"),
    ] {
        let end = extract(&d, &vol, "path=bombed", &body);
        let peak = peak_rss(d.pid());
        eprintln!("{what}: {end}; daemon peak RSS {} MiB", peak >> 20);
        assert!(peak < limit, "{what}: peak RSS {} MiB, over 128 MiB", peak >> 20);
        assert!(end["state"] == "failed" || end["status"] == 400, "{what}: {end}");
        let error = end["error"].as_str().unwrap_or_default();
        assert!(error.contains(cap), "{what}: the refusal names the cap: {error:?}");
        assert!(!path.join("bombed").exists() && leftovers(&path).is_empty(), "{what}: nothing left");
    }
    assert_eq!(d.get("/health").status, 200, "the daemon keeps serving");
}

/// A good archive: 202, the job runs to `done` with its counts, the files are there; an
/// archive already in the volume (`?from=`) too; a body that is no archive is a 400 at once.
#[test]
fn a_good_archive_extracts_as_a_job() {
    let d = Daemon::start();
    let (vol, path) = d.new_volume();
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [("world/level.dat", &b"level"[..]), ("world/region/r.0.0.mca", &[7u8; 100_000][..])] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o640);
        tar.append_data(&mut h, name, data).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let r = post_raw(&d, &format!("/volumes/{vol}/extract?path=maps/new"), &tar);
    assert_eq!(r.status, 202, "{}", r.body);
    let job = r.json()["job_id"].as_str().unwrap().to_string();
    let end = wait_job(&d, &vol, &job);
    assert_eq!(
        (&end["state"], &end["kind"], &end["path"], &end["extracted"], &end["entries"], &end["bytes"], &end["error"]),
        (&json!("done"), &json!("extract"), &json!("maps/new"), &json!(2), &json!(2), &json!(100_005), &Value::Null),
        "{end}"
    );
    assert!(end["finished_at"].as_u64() >= end["started_at"].as_u64());
    assert_eq!(std::fs::read(path.join("maps/new/world/level.dat")).unwrap(), b"level");
    assert_eq!(std::fs::metadata(path.join("maps/new/world/region/r.0.0.mca")).unwrap().len(), 100_000);
    assert!(leftovers(&path).is_empty());
    // An archive already in the volume.
    std::fs::write(path.join("upload.tar"), &tar).unwrap();
    let r = post_raw(&d, &format!("/volumes/{vol}/extract?path=again&from=upload.tar"), b"");
    assert_eq!(r.status, 202, "{}", r.body);
    let end = wait_job(&d, &vol, r.json()["job_id"].as_str().unwrap());
    assert_eq!(end["state"], "done", "{end}");
    assert_eq!(std::fs::read(path.join("again/world/level.dat")).unwrap(), b"level");
    // Refused at once: no archive, both a body and from, from missing or a directory, bad path.
    for (query, body, status) in [
        ("path=x", &b"not an archive at all"[..], 400),
        ("path=x&from=upload.tar", &tar[..], 400),
        ("path=x&from=missing.tar", b"", 404),
        ("path=x&from=maps", b"", 400),
        ("path=../../etc", &tar[..], 400),
    ] {
        let r = post_raw(&d, &format!("/volumes/{vol}/extract?{query}"), body);
        assert_eq!(r.status, status, "{query}: {}", r.body);
        assert!(!r.error().is_empty());
    }
    assert!(!path.join("x").exists());
    // Jobs: unknown ones, and a finished one cannot be cancelled.
    assert_eq!(d.get(&format!("/volumes/{vol}/jobs/no-such-job")).status, 404);
    let r = d.call("DELETE", &format!("/volumes/{vol}/jobs/{job}"), None);
    assert_eq!(r.status, 409, "{}", r.body);
    let (other, _) = d.new_volume();
    assert_eq!(d.get(&format!("/volumes/{other}/jobs/{job}")).status, 404, "a job is its volume's");
}

/// A cancelled extract (`DELETE` while it writes) ends `cancelled` and leaves nothing of the
/// archive: no file, whole or half-written, no staging directory.
#[test]
fn a_cancelled_extract_leaves_nothing() {
    let d = Daemon::start();
    let (vol, path) = d.new_volume();
    std::fs::create_dir(path.join("dest")).unwrap();
    std::fs::write(path.join("dest/keep.txt"), b"mine").unwrap();
    let b = d.call("POST", &format!("/volumes/{vol}/backups"), Some(json!({})));
    assert_eq!(b.status, 202, "{}", b.body);
    let backup = b.json()["backup_id"].as_str().unwrap().to_string();
    wait_for(60, "the backup", || {
        (d.get(&format!("/volumes/{vol}/backups/{backup}")).json()["state"] == "ready").then_some(())
    });
    let r = post_raw(&d, &format!("/volumes/{vol}/extract?path=dest"), &many_files_tgz(60_000));
    assert_eq!(r.status, 202, "{}", r.body);
    let job = r.json()["job_id"].as_str().unwrap().to_string();
    // A restore would empty the volume under the job's staging directory: refused meanwhile.
    let restore = format!("/volumes/{vol}/backups/{backup}/restore");
    let r = d.call("POST", &restore, Some(json!({"truncate": true})));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().contains("extract job"), "{}", r.error());
    // Once it writes: every entry checked, some written (into its staging directory).
    let writing = wait_for(120, "the job to write", || {
        let v = d.get(&format!("/volumes/{vol}/jobs/{job}")).json();
        assert_eq!(v["state"], "running", "the job ended before it could be cancelled: {v}");
        Some(v).filter(|v| v["extracted"].as_u64() > Some(0))
    });
    assert_eq!(writing["entries"], 60_000, "{writing}");
    let r = d.call("DELETE", &format!("/volumes/{vol}/jobs/{job}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let end = r.json();
    assert_eq!(end["state"], "cancelled", "the job was still running when cancelled: {end}");
    assert!(end["error"].as_str().unwrap().contains("Cancelled"), "{end}");
    eprintln!("cancelled after {} entries checked, {} written", end["entries"], end["extracted"]);
    assert_eq!(wait_job(&d, &vol, &job)["state"], "cancelled");
    assert_eq!(files_under(&path.join("dest")), [("keep.txt".to_string(), 4)], "nothing of the archive");
    assert!(leftovers(&path).is_empty(), "{:?}", leftovers(&path));
    assert_eq!(d.call("DELETE", &format!("/volumes/{vol}/jobs/{job}"), None).status, 409);
}

/// A job past `files.job_timeout` fails naming it and leaves nothing half-written.
#[test]
fn an_extract_past_its_deadline_fails_and_leaves_nothing() {
    let d = Daemon::start_with(|c| c["files"] = json!({"job_timeout": "1s"}));
    let (vol, path) = d.new_volume();
    let end = extract(&d, &vol, "path=dest", &many_files_tgz(60_000));
    eprintln!("stopped after {} entries checked, {} written", end["entries"], end["extracted"]);
    assert_eq!(end["state"], "failed", "{end}");
    assert!(end["error"].as_str().unwrap().contains("files.job_timeout (1s)"), "{end}");
    assert!(
        files_under(&path).is_empty(),
        "nothing extracted: {:?}",
        &files_under(&path)[..3.min(files_under(&path).len())]
    );
    assert!(leftovers(&path).is_empty(), "{:?}", leftovers(&path));
}

/// `limit` and `after` walk a 2500-entry directory with no gaps or repeats, sorted by name;
/// the default page is 1000; a bad limit is a 400.
#[test]
fn listings_are_paged() {
    let d = Daemon::start();
    let (vol, path) = d.new_volume();
    std::fs::create_dir(path.join("big")).unwrap();
    let mut want: Vec<String> = (0..2500).map(|i| format!("file-{:05}.dat", (i * 7919) % 2500)).collect();
    for name in &want {
        std::fs::write(path.join("big").join(name), b"").unwrap();
    }
    want.sort();
    let page = |query: &str| {
        let r = d.get(&format!("/volumes/{vol}/files?path=big{query}"));
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        r.json()
    };
    let first = page("");
    assert_eq!(first["entries"].as_array().unwrap().len(), 1000, "the default page");
    assert_eq!(first["next"], json!(want[999]));
    for limit in [1000, 999, 7] {
        let (mut seen, mut after) = (Vec::new(), String::new());
        loop {
            let p = page(&format!("&limit={limit}&after={after}"));
            let names: Vec<String> =
                p["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
            assert!(names.len() <= limit);
            seen.extend(names);
            match p["next"].as_str() {
                Some(next) => after = next.to_string(),
                None => break,
            }
        }
        assert_eq!(seen, want, "limit {limit}: every name once, in order");
    }
    let last = page(&format!("&after={}", want[2499]));
    assert_eq!((last["entries"].as_array().unwrap().len(), &last["next"]), (0, &Value::Null));
    for bad in ["0", "10001", "-1", "x", "1.5", ""] {
        let r = d.get(&format!("/volumes/{vol}/files?path=big&limit={bad}"));
        assert_eq!(r.status, 400, "limit={bad}: {}", r.body);
        assert!(r.error().contains("limit"), "{}", r.error());
    }
}

/// An archive download does not run forever: a client that stops reading is cut off at
/// `files.job_timeout`, the transfer aborted (never ended as if complete).
#[test]
fn an_archive_download_stops_at_its_deadline() {
    let d = Daemon::start_with(|c| c["files"] = json!({"job_timeout": "2s"}));
    let (vol, path) = d.new_volume();
    // Incompressible content, more than the socket buffers hold.
    let mut rng = Rng(seed("an_archive_download_stops_at_its_deadline"));
    let noise: Vec<u8> = (0..48 << 20).map(|_| rng.next() as u8).collect();
    std::fs::write(path.join("noise.bin"), noise).unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(
        format!("GET /volumes/{vol}/archive HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    s.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..got.len().min(200)]));
    assert!(!got.ends_with(b"\r\n0\r\n\r\n"), "the response was cut off, not ended as complete");
    assert!(got.len() < 40 << 20, "stopped well before the end: {} bytes", got.len());
    assert_eq!(d.get("/health").status, 200);
}

/// Viewers of a server using the volume hear of an extract job: started, then completed or
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_hear_of_extract_jobs() {
    require_docker();
    let d = Daemon::start();
    let id = d.ready_container("viewer", "echo up; while true; do sleep 1; done", json!({}));
    let vol = d.record(&id)["volume_id"].as_str().unwrap().to_string();
    let mut ws = ws::open(&d, &id).await;
    let mut events = Vec::new();
    for (body, last) in [(many_files_tgz(3), "extract completed"), (long_name_gz(1 << 20), "extract failed")] {
        let end = tokio::task::block_in_place(|| extract(&d, &vol, "path=x", &body));
        assert_ne!(end["state"], "running", "{end}");
        while events.last().map(String::as_str) != Some(last) {
            let f = ws::next_event(&mut ws, "event").await;
            events.push(f["args"][0].as_str().unwrap().to_string());
        }
    }
    let ours: Vec<&str> = events.iter().map(String::as_str).filter(|e| e.starts_with("extract")).collect();
    assert_eq!(ours, ["extract started", "extract completed", "extract started", "extract failed"]);
    let note = ws::next_note(&mut ws, "Extraction failed").await;
    assert!(note.contains("name longer than 4096 bytes"), "{note}");
}

/// The request head of an extract declaring `length` body bytes, and `sent` of them; the answer.
fn partial_upload(d: &Daemon, vol: &str, length: u64, sent: &[u8]) -> Resp {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let head = format!(
        "POST /volumes/{vol}/extract HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(sent).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    parse_response(&got).unwrap()
}

/// A body larger than the volume's size limit is a 507 before it is read; one that does not
/// arrive within `files.job_timeout` is a 408; neither keeps a job slot.
#[test]
fn archive_bodies_are_bounded_by_the_volume_and_the_deadline() {
    let d = Daemon::start_with(|c| c["files"] = json!({"job_timeout": "1s"}));
    let r = d.call("POST", "/volumes", Some(json!({"size_limit": "16MB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let vol = r.json()["volume_id"].as_str().unwrap().to_string();
    let r = partial_upload(&d, &vol, 17 << 20, b"");
    assert_eq!(r.status, 507, "{}", r.body);
    assert!(r.error().contains("larger than the volume"), "{}", r.error());
    let r = partial_upload(&d, &vol, 1000, &[0u8; 10]);
    assert_eq!(r.status, 408, "{}", r.body);
    assert!(r.error().contains("files.job_timeout (1s)"), "{}", r.error());
    for _ in 0..3 {
        let end = extract(&d, &vol, "path=ok", &many_files_tgz(2));
        assert_eq!(end["state"], "done", "no slot was kept by the refused ones: {end}");
    }
}
