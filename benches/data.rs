//! Volume data at 1 GiB, each figure beside the plain tool on the same disk in the same run:
//! - upload (`curl -T` to the files API) and download (`curl -o`) of a 1 GiB file beside `cp`;
//! - a backup of the volume beside `tar czf` of the same tree, and its restore beside `tar xzf`;
//! - backup formats on a mix of compressible world data and random bytes: `tar.gz` and
//!   `tar.zst` backups beside `tar czf` and `tar -I 'zstd -T0'` of the same tree;
//!
//! with the daemon's peak RSS during each (its high-water mark reset before each step).
//! `LIGHTD_BENCH_MIB` sets the data size (default 1024 MiB; a small one for a smoke run).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use support::*;

/// The data size: `LIGHTD_BENCH_MIB` MiB, 1 GiB unless set.
fn data_size() -> u64 {
    std::env::var("LIGHTD_BENCH_MIB").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1024) << 20
}

/// Runs `sh -c script`, failing loudly; returns its time.
fn timed(script: &str) -> Duration {
    let t = Instant::now();
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    t.elapsed()
}

/// Empties the page cache, so every step reads from the disk alike (best effort: a machine
/// that refuses leaves every step warm alike).
fn cold() {
    let _ = Command::new("sh").args(["-c", "sync; echo 3 > /proc/sys/vm/drop_caches"]).status();
}

/// Resets the peak RSS of `pid` (VmHWM) to its current RSS.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn peak(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM:")
}

fn mibs(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

struct Row {
    what: String,
    lightd: Duration,
    baseline: Duration,
    baseline_name: &'static str,
    rss: u64,
}

fn main() {
    let size = data_size();
    let human = if size % (1 << 30) == 0 { format!("{} GiB", size >> 30) } else { format!("{} MiB", size >> 20) };
    let d = Daemon::start();
    let pid = d.pid();
    let work = d.dir.0.join("bench-data");
    std::fs::create_dir_all(&work).unwrap();
    let src = work.join("big.bin");
    // Incompressible, as a world save mostly is: gzip has to work for every byte.
    timed(&format!("head -c {size} /dev/urandom > {}", src.display()));
    let r = d.call("POST", "/volumes", Some(json!({"size_limit": "3GB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let vol = r.json()["volume_id"].as_str().unwrap().to_string();
    let vol_path = r.json()["path"].as_str().unwrap().to_string();
    let quota = r.json()["quota"].as_str().unwrap_or("none").to_string();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let base = format!("http://127.0.0.1:{}/volumes/{vol}", d.port);
    let mut rows = Vec::new();

    // Upload beside cp into the same volume.
    cold();
    let cp_in = timed(&format!("cp {} {vol_path}/cp-copy.bin && sync", src.display()));
    cold();
    reset_peak(pid);
    let up = timed(&format!(
        "curl -sf -T {} -H '{auth}' '{base}/files/content?path=/big.bin' -o /dev/null && sync",
        src.display()
    ));
    rows.push(Row {
        what: format!("upload {human}"),
        lightd: up,
        baseline: cp_in,
        baseline_name: "cp into the volume",
        rss: peak(pid),
    });

    // Download beside cp out of the same volume.
    let out = work.join("out.bin");
    cold();
    let cp_out = timed(&format!("cp {vol_path}/cp-copy.bin {} && sync", out.display()));
    std::fs::remove_file(&out).unwrap();
    cold();
    reset_peak(pid);
    let down =
        timed(&format!("curl -sf -H '{auth}' '{base}/files/content?path=/big.bin' -o {} && sync", out.display()));
    rows.push(Row {
        what: format!("download {human}"),
        lightd: down,
        baseline: cp_out,
        baseline_name: "cp out of the volume",
        rss: peak(pid),
    });
    assert_eq!(std::fs::metadata(&out).unwrap().len(), size, "the whole file came back");
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(Path::new(&vol_path).join("cp-copy.bin")).unwrap();

    // Backup beside tar czf of the same tree.
    let tarball = work.join("baseline.tar.gz");
    cold();
    let tar_c = timed(&format!("tar czf {} -C {vol_path} .", tarball.display()));
    cold();
    reset_peak(pid);
    let t = Instant::now();
    let r = d.call("POST", &format!("/volumes/{vol}/backups"), Some(json!({"name": "bench"})));
    assert_eq!(r.status, 202, "{}", r.body);
    let backup = r.json()["backup_id"].as_str().unwrap().to_string();
    wait_for(900, "the backup ready", || {
        let b = d.get(&format!("/volumes/{vol}/backups/{backup}")).json();
        assert_ne!(b["state"], "failed", "{b}");
        (b["state"] == "ready").then_some(())
    });
    rows.push(Row {
        what: format!("backup of {human} (tar.gz + sha256)"),
        lightd: t.elapsed(),
        baseline: tar_c,
        baseline_name: "tar czf",
        rss: peak(pid),
    });

    // Restore (truncating) beside tar xzf into an empty directory.
    let unpacked = work.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    cold();
    let tar_x = timed(&format!("tar xzf {} -C {} && sync", tarball.display(), unpacked.display()));
    cold();
    reset_peak(pid);
    let t = Instant::now();
    let r = d.call("POST", &format!("/volumes/{vol}/backups/{backup}/restore"), Some(json!({"truncate": true})));
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for(900, "the restore done", || {
        let b = d.get(&format!("/volumes/{vol}/backups/{backup}")).json();
        let last = &b["last_restore"];
        assert!(last["error"].is_null(), "{b}");
        (!last["completed_at"].is_null()).then_some(())
    });
    let _ = Command::new("sync").status();
    rows.push(Row {
        what: format!("restore of {human} (truncate)"),
        lightd: t.elapsed(),
        baseline: tar_x,
        baseline_name: "tar xzf",
        rss: peak(pid),
    });
    let st = d.get(&format!("/volumes/{vol}/files/stat?path=/big.bin"));
    assert_eq!(st.json()["size"], size, "the restore brought the file back: {}", st.body);
    let formats = backup_formats(&d, &work, size, &human);
    let _ = std::fs::remove_dir_all(&work);

    let mut text = vec![
        format!(
            "Volume data: one {human} file of random bytes (incompressible) on a `{quota}` volume; page cache dropped before each step; client `curl` on the same machine.\n"
        ),
        "| step | lightd | MiB/s | baseline (same disk, same run) | MiB/s | ratio | lightd peak RSS |".into(),
        "|---|---|---|---|---|---|---|".into(),
    ];
    for r in &rows {
        text.push(format!(
            "| {} | {:.1} s | {:.0} | {}: {:.1} s | {:.0} | {:.2} | {} |",
            r.what,
            r.lightd.as_secs_f64(),
            mibs(size, r.lightd),
            r.baseline_name,
            r.baseline.as_secs_f64(),
            mibs(size, r.baseline),
            r.baseline.as_secs_f64() / r.lightd.as_secs_f64(),
            mib(r.rss)
        ));
    }
    text.push(String::new());
    text.push("Ratio: baseline time / lightd time (1.00 is as fast as the plain tool). Uploads and downloads stream in fixed buffers; backups and restores run gzip in one thread each, as `tar czf` does.".into());
    text.push(String::new());
    text.push(formats);
    let text = text.join("\n");
    println!("{text}");
    write_section("data", &text);
}

/// A volume of `size` bytes, three quarters world-like data (bytes from a small palette, as
/// region files mostly are: compressible) and a quarter random: the daemon's `tar.gz` and
/// `tar.zst` backups beside `tar czf` and `tar -I 'zstd -T0'` of the same tree, each from a
/// cold page cache, with archive sizes. A table to print.
fn backup_formats(d: &Daemon, work: &Path, size: u64, human: &str) -> String {
    let r = d.call("POST", "/volumes", Some(json!({"size_limit": format!("{}MB", (size >> 20) * 3)})));
    assert_eq!(r.status, 201, "{}", r.body);
    let vol = r.json()["volume_id"].as_str().unwrap().to_string();
    let vol_path = Path::new(r.json()["path"].as_str().unwrap()).to_path_buf();
    std::fs::create_dir_all(vol_path.join("world/region")).unwrap();
    let mut rng = Rng(seed("bench data formats"));
    let palette = *b"\0\0\0\x01\x01\x02\x07\x30";
    let world = size / 4 * 3;
    let chunk = 16 << 20;
    for i in 0..world.div_ceil(chunk) {
        let len = chunk.min(world - i * chunk) as usize;
        let bytes: Vec<u8> = (0..len / 8)
            .flat_map(|_| {
                let r = rng.next();
                (0..8).map(move |k| palette[((r >> (k * 3)) & 7) as usize])
            })
            .collect();
        std::fs::write(vol_path.join(format!("world/region/r.{i}.0.mca")), bytes).unwrap();
    }
    timed(&format!("head -c {} /dev/urandom > {}/world/random.bin", size - world, vol_path.display()));
    let tar = |name: &str, script: String| {
        let out = work.join(name);
        cold();
        let t = timed(&script.replace("OUT", &out.display().to_string()));
        let len = std::fs::metadata(&out).unwrap().len();
        std::fs::remove_file(&out).unwrap();
        (t, len)
    };
    let vp = vol_path.display();
    let gz_tool = tar("mix.tar.gz", format!("tar czf OUT -C {vp} ."));
    let zst_tool = tar("mix.tar.zst", format!("tar -I 'zstd -T0' -cf OUT -C {vp} ."));
    let backup = |format: &str| {
        cold();
        let t = Instant::now();
        let r = d.call("POST", &format!("/volumes/{vol}/backups"), Some(json!({"format": format})));
        assert_eq!(r.status, 202, "{}", r.body);
        let id = r.json()["backup_id"].as_str().unwrap().to_string();
        let b = wait_for(900, "the backup ready", || {
            let b = d.get(&format!("/volumes/{vol}/backups/{id}")).json();
            assert_ne!(b["state"], "failed", "{b}");
            (b["state"] == "ready").then_some(b)
        });
        assert_eq!(b["format"], format);
        (t.elapsed(), b["size_bytes"].as_u64().unwrap())
    };
    let gz = backup("tar.gz");
    let zst = backup("tar.zst");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut text = vec![
        format!(
            "Backup formats: {human} volume, three quarters world-like data (a small palette of bytes) and a quarter random; page cache dropped before each; {cores} cores.\n"
        ),
        "| archiver | time | MiB/s | archive | of the data |".into(),
        "|---|---|---|---|---|".into(),
    ];
    for (what, (t, len)) in [
        ("lightd backup, tar.gz (+ sha256)", gz),
        ("lightd backup, tar.zst (+ sha256)", zst),
        ("tar czf", gz_tool),
        ("tar -I 'zstd -T0'", zst_tool),
    ] {
        text.push(format!(
            "| {what} | {:.1} s | {:.0} | {} | {:.0}% |",
            t.as_secs_f64(),
            mibs(size, t),
            mib(len),
            len as f64 * 100.0 / size as f64
        ));
    }
    text.push(String::new());
    text.push(format!(
        "tar.zst backup vs `tar -I 'zstd -T0'`: {:.2} of its speed; vs the tar.gz backup: {:.1}x as fast.",
        zst_tool.0.as_secs_f64() / zst.0.as_secs_f64(),
        gz.0.as_secs_f64() / zst.0.as_secs_f64()
    ));
    text.join("\n")
}
