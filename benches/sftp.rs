//! lightd's SFTP server beside OpenSSH's own, in the same run, with the same client and the
//! same files. The baseline is `sshd` (Debian's `openssh-server`) started by this program on a
//! loopback port with a throwaway host key, serving `internal-sftp` chrooted to a directory of
//! its own; lightd serves a volume. Both are driven by OpenSSH's `sftp` in batch mode, logging
//! in with one throwaway key, each client with the ciphers it negotiates by default.
//! - a 1 GiB file up and down (MiB/s) and 10,000 small files (1 KiB each, in 10 directories) up
//!   and down (`put -R`, `get -R`, files/s), each the median of three rounds, the two servers'
//!   rounds taken in turn;
//! - server memory idle and with 50 sessions open at once (for sshd, every process of its: the
//!   listener and each connection's);
//! - lightd's binary size and idle RSS with and without the `sftp` cargo feature (the build
//!   without it is made by this program, in `target/bench-nosftp`).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::*;
use serde_json::json;
use support::*;

const BIG: usize = 1 << 30;
const SMALL_FILES: usize = 10_000;
const SMALL_SIZE: usize = 1024;
const ROUNDS: usize = 3;
const SESSIONS: usize = 50;

/// Where a client logs in: a port and a login name; files land in `dir`.
struct Target {
    what: &'static str,
    port: u16,
    login: String,
    dir: PathBuf,
    /// The server's processes, for memory.
    pids: Box<dyn Fn() -> Vec<u32>>,
}

/// OpenSSH's `sftp -b -`, logging in with `key`, `script` on its stdin; panics on a failure.
fn sftp(t: &Target, key: &Path, script: &str) {
    let mut child = client(t, key);
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sftp to {} failed: {}{}",
        t.what,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn client(t: &Target, key: &Path) -> Child {
    Command::new("/usr/bin/sftp")
        .args(["-b", "-", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i"])
        .arg(key)
        .args(["-P", &t.port.to_string(), &format!("{}@127.0.0.1", t.login)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Seconds `script` takes.
fn timed(t: &Target, key: &Path, script: &str) -> f64 {
    let start = Instant::now();
    sftp(t, key, script);
    start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One round of `t`'s throughputs: MiB/s up and down of the big file, files/s up and down of
/// the small ones; each copy checked and removed.
fn round(t: &Target, key: &Path, local: &Path) -> [f64; 4] {
    let big = local.join("big.bin");
    let back = local.join(format!("big-{}.bin", t.what));
    let mib = (BIG >> 20) as f64;
    let up = mib / timed(t, key, &format!("put {} big.bin\n", big.display()));
    let down = mib / timed(t, key, &format!("get big.bin {}\n", back.display()));
    assert!(same_file(&big, &back), "{}: the big file came back different", t.what);
    std::fs::remove_file(&back).unwrap();
    std::fs::remove_file(t.dir.join("big.bin")).unwrap();
    let small = local.join("small");
    let small_back = local.join(format!("small-{}", t.what));
    let files = SMALL_FILES as f64;
    let up_small = files / timed(t, key, &format!("put -R {} small\n", small.display()));
    let down_small = files / timed(t, key, &format!("get -R small {}\n", small_back.display()));
    assert_eq!(walk(&small_back), SMALL_FILES, "{}: small files back", t.what);
    std::fs::remove_dir_all(&small_back).unwrap();
    std::fs::remove_dir_all(t.dir.join("small")).unwrap();
    [up, down, up_small, down_small]
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// How many files are under `dir`.
fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| if e.file_type().unwrap().is_dir() { walk(&e.path()) } else { 1 })
        .sum()
}

/// Resident memory of `t`'s processes, idle and with [`SESSIONS`] sessions open, bytes.
fn memory(t: &Target, key: &Path) -> (u64, u64) {
    let total = || (t.pids)().into_iter().map(rss).sum::<u64>();
    let idle = total();
    let mut clients: Vec<Child> = (0..SESSIONS).map(|_| client(t, key)).collect();
    // Each session lists the root and says so; then it stays open, waiting for more.
    for c in &mut clients {
        c.stdin.as_mut().unwrap().write_all(b"ls\n!echo listed\n").unwrap();
    }
    for c in &mut clients {
        let mut out = BufReader::new(c.stdout.as_mut().unwrap());
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 && !line.contains("listed") {
            line.clear();
        }
        assert!(line.contains("listed"), "{}: a session ended early", t.what);
    }
    let busy = total();
    for mut c in clients {
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success(), "{}: a session failed", t.what);
    }
    (idle, busy)
}

/// The pids of `root` and every process below it.
fn family(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
        all.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        i += 1;
    }
    all
}

/// `sshd -D` on a free loopback port, `internal-sftp` only, chrooted to `<dir>/chroot` with the
/// files in its `data`; root logs in with `public` only.
fn start_sshd(dir: &Path, public: &str) -> (Child, u16) {
    let host_key = dir.join("host_ed25519");
    keygen(&host_key);
    std::fs::write(dir.join("authorized_keys"), format!("{public}\n")).unwrap();
    std::fs::create_dir_all(dir.join("chroot/data")).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = free_port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             MaxStartups 200\nMaxSessions 200\nSubsystem sftp internal-sftp\n\
             ForceCommand internal-sftp -d /data\nChrootDirectory {dir}/chroot\n",
            host = host_key.display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/sbin/sshd (Debian's openssh-server; bash scripts/setup.sh installs it)");
    wait_for(30, "sshd listening", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sshd ended: {status}");
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (child, port)
}

fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench@lightd", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_to_string(path.with_extension("pub")).unwrap().trim().to_string()
}

/// The files both servers get: one big file of noise and the small files.
fn make_files(local: &Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(local.join("big.bin")).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..BIG / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        f.write_all(&x.to_le_bytes()).unwrap();
    }
    f.flush().unwrap();
    for i in 0..SMALL_FILES {
        let dir = local.join("small").join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}.txt")), vec![b'a' + (i % 26) as u8; SMALL_SIZE]).unwrap();
    }
}

/// Builds lightd without the `sftp` feature; its binary.
fn build_without_sftp() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/bench-nosftp");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--no-default-features", "--bin", "lightd", "--target-dir"])
        .arg(&target)
        .current_dir(root)
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --no-default-features");
    target.join("release/lightd")
}

/// Idle RSS of a daemon started from `binary` (SFTP on where it was built in), after a second.
fn idle_rss(binary: &Path) -> u64 {
    std::env::set_var("LIGHTD_BIN", binary);
    let d = Daemon::start();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let r = rss(d.pid());
    std::env::remove_var("LIGHTD_BIN");
    r
}

fn main() {
    require_docker();
    let scratch = TempDir::new("bench-sftp");
    let local = scratch.0.join("local");
    std::fs::create_dir_all(&local).unwrap();
    make_files(&local);
    let key = scratch.0.join("client_ed25519");
    let public = keygen(&key);

    let d = Daemon::start();
    let port = sftp_port(&d.log()).unwrap_or_else(|| panic!("no sftp line in the log: {}", d.log()));
    let r = d.call("POST", "/volumes", Some(json!({"size_limit": "4GB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let vol = r.json();
    let (vol_id, vol_dir) = (vol["volume_id"].as_str().unwrap().to_string(), vol["path"].as_str().unwrap().into());
    let r = d.call(
        "POST",
        &format!("/volumes/{vol_id}/sftp/users"),
        Some(json!({"username": "bench", "public_keys": [public]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let pid = d.pid();
    let lightd = Target {
        what: "lightd",
        port,
        login: r.json()["login"].as_str().unwrap().to_string(),
        dir: vol_dir,
        pids: Box::new(move || vec![pid]),
    };

    // sshd refuses a chroot with a group- or world-writable component (as /tmp is): its
    // folder is under /run, removed at the end.
    let sshd_dir = PathBuf::from(format!("/run/lightd-bench-sshd-{}", std::process::id()));
    std::fs::create_dir_all(&sshd_dir).unwrap();
    let (mut sshd, sshd_port) = start_sshd(&sshd_dir, &public);
    let sshd_pid = sshd.id();
    let openssh = Target {
        what: "sshd",
        port: sshd_port,
        login: "root".into(),
        dir: sshd_dir.join("chroot/data"),
        pids: Box::new(move || family(sshd_pid)),
    };

    // Rounds alternate between the two servers, so a change in the machine's load between
    // rounds weighs on both alike; each figure is the median of its rounds.
    let targets = [&openssh, &lightd];
    let memory: Vec<(u64, u64)> = targets.iter().map(|t| memory(t, &key)).collect();
    let mut rounds: Vec<Vec<[f64; 4]>> = vec![Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, t) in targets.iter().enumerate() {
            rounds[i].push(round(t, &key, &local));
        }
    }
    let figures: Vec<[f64; 4]> =
        rounds.iter().map(|r| std::array::from_fn(|k| median(r.iter().map(|f| f[k]).collect()))).collect();
    let mut rows = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let [up, down, up_small, down_small] = figures[i];
        let (idle, busy) = memory[i];
        println!(
            "{}: 1 GiB up {up:.0} MiB/s, down {down:.0} MiB/s; {SMALL_FILES} small files up {up_small:.0}/s, down \
             {down_small:.0}/s; RSS idle {}, with {SESSIONS} sessions {}",
            t.what,
            mib(idle),
            mib(busy)
        );
        rows.push(format!(
            "| {} | {up:.0} | {down:.0} | {up_small:.0} | {down_small:.0} | {} | {} |",
            if t.what == "sshd" { "baseline: OpenSSH `sshd`, `internal-sftp`" } else { "lightd" },
            mib(idle),
            mib(busy)
        ));
    }
    let _ = sshd.kill();
    let _ = sshd.wait();
    let _ = std::fs::remove_dir_all(&sshd_dir);
    let ratios: Vec<String> = (0..4).map(|i| format!("{:.2}", figures[1][i] / figures[0][i])).collect();
    rows.push(format!(
        "| ratio (lightd / sshd) | {} | {} | {} | {} | - | - |",
        ratios[0], ratios[1], ratios[2], ratios[3]
    ));
    drop(d);

    let with = PathBuf::from(bin());
    let without = build_without_sftp();
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let (with_rss, without_rss) = (idle_rss(&with), idle_rss(&without));
    let binary = format!(
        "The binary: {} with the `sftp` feature, {} without ({:.2}x); idle RSS {} with SFTP serving, {} without ({:.2}x).",
        mib(size(&with)),
        mib(size(&without)),
        size(&with) as f64 / size(&without) as f64,
        mib(with_rss),
        mib(without_rss),
        with_rss as f64 / without_rss as f64
    );
    println!("{binary}");
    let body = [
        format!(
            "One client, OpenSSH's `sftp -b` with an ed25519 key, the ciphers it negotiates by default, on loopback. \
             1 GiB of noise up and down (MiB/s, checked byte for byte), {SMALL_FILES} files of {SMALL_SIZE} bytes in \
             10 directories up and down (`put -R`, `get -R`, files/s), each the median of {ROUNDS} rounds taken \
             in turn with the baseline's, and the \
             server's RSS idle and with {SESSIONS} sessions open at once (for sshd, its listener and every \
             connection's processes together):"
        ),
        String::new(),
        "| server | 1 GiB up MiB/s | 1 GiB down MiB/s | small files up /s | small files down /s | RSS idle | RSS with 50 sessions |".into(),
        "|---|---|---|---|---|---|---|".into(),
        rows.join("\n"),
        String::new(),
        "Goals: at least 0.8x sshd on the large file, at least 1x on small files.".into(),
        String::new(),
        binary,
    ]
    .join("\n");
    write_section("sftp", &body);
}
