//! The SFTP server against the real daemon, driven by clients we did not write: OpenSSH's
//! `sftp` in batch mode with a key, and Python's paramiko with a password. Every test checks
//! what landed on the volume's directory (and what did not land outside it).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const PYTHON: &str = "/opt/lightd-test/venv/bin/python";

/// A test daemon and its SFTP port.
fn start() -> (Daemon, u16) {
    start_with(|_| {})
}

/// A test daemon with `tweak` made to its config, and its SFTP port.
fn start_with(tweak: impl FnOnce(&mut Value)) -> (Daemon, u16) {
    let d = Daemon::start_with(tweak);
    let port = sftp_port(&d.log()).unwrap_or_else(|| panic!("no sftp line in the log: {}", d.log()));
    (d, port)
}

/// Makes an ed25519 key pair in `dir`: the private key's path and the public key's line.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@lightd", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

fn add_user(d: &Daemon, volume: &str, body: Value) -> Value {
    let r = d.call("POST", &format!("/volumes/{volume}/sftp/users"), Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

/// How long any one client may run: a stalled transfer fails its test with a clear message
/// (and the client killed) instead of hanging the run.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `cmd` with `input` on its stdin and collects its output, killing it and failing the
/// test when it outlives [`CLIENT_DEADLINE`].
fn run_client(mut cmd: Command, input: &[u8], what: &str) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = r.read_to_end(&mut all);
            all
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > CLIENT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = feeder.join();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    match status {
        Some(status) => Output { status, stdout, stderr },
        None => panic!(
            "{what} was still running after {CLIENT_DEADLINE:?} (an SFTP stall?); killed.\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// OpenSSH client options every test uses: no host key prompts, and a server that stops
/// answering keepalives is given up on within a minute.
const SSH_OPTIONS: [&str; 16] = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ServerAliveInterval=10",
    "-o",
    "ServerAliveCountMax=6",
    "-o",
    "ConnectTimeout=30",
];

/// Runs OpenSSH's `sftp -b -` with `script` on stdin, logging in with `key`.
fn sftp_batch(port: u16, login: &str, key: &Path, script: &str) -> Output {
    let mut cmd = Command::new("/usr/bin/sftp");
    cmd.args(["-b", "-", "-q"]).args(SSH_OPTIONS).args(["-o", "PasswordAuthentication=no"]).arg("-i").arg(key).args([
        "-P",
        &port.to_string(),
        &format!("{login}@127.0.0.1"),
    ]);
    run_client(cmd, script.as_bytes(), "sftp")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a paramiko script: `sftp` (an SFTPClient) and `t` (its Transport) are connected as
/// `login` with `password` before `body` runs; `connect_error` is printed instead when the
/// login fails.
fn paramiko(port: u16, login: &str, password: &str, body: &str) -> Output {
    let script = format!(
        r#"
import os, sys, time, stat, signal, paramiko
signal.alarm({alarm})
t = paramiko.Transport(("127.0.0.1", {port}))
try:
    t.connect(username=os.environ["LOGIN"], password=os.environ["PASSWORD"])
except paramiko.AuthenticationException as e:
    print("connect_error", type(e).__name__)
    sys.exit(0)
sftp = paramiko.SFTPClient.from_transport(t)
sftp.get_channel().settimeout({timeout})
{body}
"#,
        alarm = CLIENT_DEADLINE.as_secs() + 10,
        timeout = CLIENT_DEADLINE.as_secs() / 2,
    );
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c").arg(script).env("LOGIN", login).env("PASSWORD", password);
    run_client(cmd, b"", "paramiko")
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A directory outside the volume with a marker file, and a snapshot of it.
fn outside(d: &Daemon) -> (PathBuf, Vec<(PathBuf, Vec<u8>)>) {
    let dir = d.dir.0.join("outside");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("marker"), b"outside secret").unwrap();
    let snap = snapshot(&dir);
    (dir, snap)
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all.push((p.clone(), Vec::new()));
            all.extend(snapshot(&p));
        } else {
            all.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    all.sort();
    all
}

#[test]
fn openssh_with_a_key_moves_files_and_they_land_owned_by_the_servers_user() {
    let (d, port) = start();
    let (volume, path) = d.new_volume();
    let (key, public) = keygen(&d.dir.0, "alice");
    let user = add_user(&d, &volume, json!({"username": "alice", "public_keys": [public]}));
    assert_eq!(user["login"], format!("alice.{volume}"));
    // The list shows how many keys and their fingerprints, as OpenSSH computes them.
    let listed = d.get(&format!("/volumes/{volume}/sftp/users")).json();
    let fingerprint = Command::new("ssh-keygen").arg("-lf").arg(key.with_extension("pub")).output().unwrap();
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout).split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(listed["users"][0]["public_keys"], 1, "{listed}");
    assert_eq!(listed["users"][0]["key_fingerprints"], json!([fingerprint]), "{listed}");
    let login = user["login"].as_str().unwrap().to_string();
    let local = d.dir.0.join("local");
    std::fs::create_dir_all(&local).unwrap();
    let big = noise(100 << 20, 7);
    std::fs::write(local.join("big.bin"), &big).unwrap();
    std::fs::write(local.join("small.txt"), b"hello sftp\n").unwrap();
    let l = local.display();
    let script = format!(
        "mkdir world\nput {l}/small.txt world/small.txt\nput {l}/big.bin world/big.bin\nget world/big.bin {l}/big.back\n\
         rename world/small.txt world/renamed.txt\nchmod 600 world/renamed.txt\nput {l}/small.txt doomed.txt\nrm doomed.txt\n\
         symlink renamed.txt world/link\nls -l world\nget world/link {l}/through-link.txt\n"
    );
    let started = Instant::now();
    let out = sftp_batch(port, &login, &key, &script);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("100 MiB up and down over OpenSSH sftp in {:?}", started.elapsed());
    let listing = String::from_utf8_lossy(&out.stdout);
    for name in ["big.bin", "renamed.txt", "link"] {
        assert!(listing.contains(name), "ls shows {name}: {listing}");
    }
    // Byte for byte, both ways.
    assert!(std::fs::read(path.join("world/big.bin")).unwrap() == big, "the upload differs");
    assert!(std::fs::read(local.join("big.back")).unwrap() == big, "the download differs");
    assert_eq!(std::fs::read(path.join("world/renamed.txt")).unwrap(), b"hello sftp\n");
    assert_eq!(std::fs::read(local.join("through-link.txt")).unwrap(), b"hello sftp\n");
    assert!(!path.join("world/small.txt").exists() && !path.join("doomed.txt").exists());
    assert_eq!(std::fs::metadata(path.join("world/renamed.txt")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_link(path.join("world/link")).unwrap(), Path::new("renamed.txt"));
    // Everything made over SFTP belongs to the server's user (containers.user, 1000:1000).
    for made in ["world", "world/big.bin", "world/renamed.txt", "world/link"] {
        let meta = std::fs::symlink_metadata(path.join(made)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000), "{made}");
    }
    // No temp file is left behind.
    let names: Vec<String> = std::fs::read_dir(path.join("world"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".lightd-tmp")), "{names:?}");
    // Only the sftp subsystem: a shell or a command is refused.
    let mut ssh = Command::new("ssh");
    ssh.args(SSH_OPTIONS).arg("-i").arg(&key).args([
        "-p",
        &port.to_string(),
        &format!("{login}@127.0.0.1"),
        "touch /tmp/lightd-sftp-exec-marker; echo ran",
    ]);
    let ssh = run_client(ssh, b"", "ssh");
    assert!(!ssh.status.success(), "exec was allowed: {}", text(&ssh));
    assert!(!String::from_utf8_lossy(&ssh.stdout).contains("ran"));
    assert!(!Path::new("/tmp/lightd-sftp-exec-marker").exists());
    // The host key: made on first start, 0600, beside the state file, its fingerprint logged.
    let host_key = d.dir.0.join("sftp_host_ed25519_key");
    assert_eq!(std::fs::metadata(&host_key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(d.log().contains("(host key SHA256:"), "{}", d.log());
}

#[test]
fn paramiko_with_a_password_does_the_same() {
    let (d, port) = start();
    let (volume, path) = d.new_volume();
    let user = add_user(&d, &volume, json!({"username": "bob", "password": "correct horse battery"}));
    let login = user["login"].as_str().unwrap();
    let body = r#"
import io, hashlib
data = bytes((i * 7919) % 251 for i in range(5 << 20))
sftp.mkdir("/mods")
sftp.putfo(io.BytesIO(data), "/mods/pack.jar")
back = io.BytesIO(); sftp.getfo("/mods/pack.jar", back)
assert back.getvalue() == data, "round trip differs"
sftp.rename("/mods/pack.jar", "/mods/moved.jar")
sftp.posix_rename("/mods/moved.jar", "/mods/final.jar")
sftp.chmod("/mods/final.jar", 0o640)
sftp.symlink("final.jar", "/mods/alias")
assert sftp.readlink("/mods/alias") == "final.jar"
sftp.putfo(io.BytesIO(b"x"), "/gone.txt"); sftp.remove("/gone.txt")
sftp.mkdir("/empty"); sftp.rmdir("/empty")
print("listing", sorted(sftp.listdir("/mods")))
print("stat", oct(stat.S_IMODE(sftp.stat("/mods/final.jar").st_mode)), sftp.stat("/mods/alias").st_size, stat.S_ISLNK(sftp.lstat("/mods/alias").st_mode))
print("realpath", sftp.normalize("/mods/../mods/./x/.."))
"#;
    let out = paramiko(port, login, "correct horse battery", body);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout.contains("listing ['alias', 'final.jar']"), "{stdout}");
    assert!(stdout.contains(&format!("stat 0o640 {} True", 5 << 20)), "{stdout}");
    assert!(stdout.contains("realpath /mods"), "{stdout}");
    let want: Vec<u8> = (0..(5usize << 20)).map(|i| ((i * 7919) % 251) as u8).collect();
    assert!(std::fs::read(path.join("mods/final.jar")).unwrap() == want);
    assert_eq!(std::fs::metadata(path.join("mods/final.jar")).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(std::fs::metadata(path.join("mods/final.jar")).unwrap().uid(), 1000);
    assert!(!path.join("gone.txt").exists() && !path.join("empty").exists() && !path.join("mods/pack.jar").exists());
}

/// paramiko pipelines its writes (it reads their answers only now and then) and prefetches a
/// download with every READ sent at once. Both once stalled the daemon's connection for good
/// within a few MiB: russh's session loop waited to hand the SFTP loop more requests while the
/// SFTP loop waited for the session loop to take its answers (see src/sftp/pipe.rs).
#[test]
fn paramiko_pipelined_uploads_and_prefetched_downloads_never_stall() {
    let (d, port) = start();
    let (volume, path) = d.new_volume();
    let user = add_user(&d, &volume, json!({"username": "pipes", "password": "correct horse battery"}));
    let kept = d.dir.0.join("sent.bin");
    let body = format!(
        r#"
import io
data = os.urandom(8 << 20)
open({kept:?}, "wb").write(data)
started = time.time()
for i in range(6):
    sftp.putfo(io.BytesIO(data), "/big.bin")
    back = io.BytesIO(); sftp.getfo("/big.bin", back)
    assert back.getvalue() == data, f"round {{i}} differs"
print(f"moved 96 MiB in {{time.time() - started:.1f}} s")
"#,
        kept = kept.display().to_string()
    );
    let out = paramiko(port, user["login"].as_str().unwrap(), "correct horse battery", &body);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(std::fs::read(path.join("big.bin")).unwrap() == std::fs::read(&kept).unwrap(), "the upload differs");
}

#[test]
fn links_and_renames_never_leave_the_volume() {
    let (d, port) = start();
    let (volume, path) = d.new_volume();
    let (out_dir, before) = outside(&d);
    // Planted by the server: links to the host's root and to the marker's directory.
    std::os::unix::fs::symlink("/", path.join("planted_root")).unwrap();
    std::os::unix::fs::symlink(&out_dir, path.join("planted_out")).unwrap();
    std::fs::write(path.join("keep.txt"), b"inside").unwrap();
    let user = add_user(&d, &volume, json!({"username": "eve", "password": "correct horse battery"}));
    let marker = out_dir.join("marker");
    let body = format!(
        r#"
import io
def attempt(name, f):
    try:
        r = f()
        print(name, "ok", repr(r)[:80])
    except Exception as e:
        print(name, "refused", type(e).__name__)
attempt("read_planted", lambda: sftp.open("/planted_root{m}").read())
attempt("read_planted_out", lambda: sftp.open("/planted_out/marker").read())
attempt("write_planted", lambda: sftp.putfo(io.BytesIO(b"pwned"), "/planted_out/marker"))
attempt("write_planted_sub", lambda: sftp.putfo(io.BytesIO(b"pwned"), "/planted_root{o}/sub/new"))
attempt("symlink_root", lambda: sftp.symlink("/", "/mine"))
attempt("read_mine", lambda: sftp.open("/mine{m}").read())
attempt("symlink_up", lambda: sftp.symlink("../../../../../../../..{o}", "/up"))
attempt("write_up", lambda: sftp.putfo(io.BytesIO(b"pwned"), "/up/marker"))
attempt("list_up", lambda: sftp.listdir("/up"))
attempt("rename_out", lambda: sftp.rename("/keep.txt", "/../../../../../..{o}/stolen"))
attempt("rename_out_rel", lambda: sftp.rename("/keep.txt", "../../../../../../tmp/stolen"))
attempt("rename_into_link", lambda: sftp.rename("/keep.txt", "/planted_out/stolen"))
attempt("chmod_out", lambda: sftp.chmod("/planted_out/marker", 0o777))
attempt("remove_out", lambda: sftp.remove("/planted_out/marker"))
attempt("mkdir_out", lambda: sftp.mkdir("/planted_root{o}/madedir"))
attempt("list_root", lambda: sorted(sftp.listdir("/")))
"#,
        m = marker.display(),
        o = out_dir.display()
    );
    let out = paramiko(port, user["login"].as_str().unwrap(), "correct horse battery", &body);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("{stdout}");
    assert!(!stdout.contains("outside secret"), "read outside: {stdout}");
    for refused in ["read_planted ", "read_planted_out ", "read_mine ", "rename_out ", "chmod_out ", "mkdir_out "] {
        assert!(stdout.lines().any(|l| l.starts_with(refused) && l.contains("refused")), "{refused}: {stdout}");
    }
    // Nothing outside changed, whatever was answered.
    assert_eq!(snapshot(&out_dir), before, "{stdout}");
    assert!(!Path::new("/tmp/stolen").exists());
    assert_eq!(std::fs::metadata(&marker).unwrap().permissions().mode() & 0o777, 0o644);
    // What the links made over SFTP say is only text inside the volume.
    assert_eq!(std::fs::read_link(path.join("mine")).unwrap(), Path::new("/"));
    // A write through a link either was refused or landed inside the volume.
    assert!(!out_dir.join("sub/new").exists() && !out_dir.join("madedir").exists());
    assert!(stdout.contains("list_root ok"), "{stdout}");
}

#[test]
fn a_read_only_user_reads_and_cannot_write() {
    let (d, port) = start();
    let (volume, path) = d.new_volume();
    std::fs::create_dir(path.join("cfg")).unwrap();
    std::fs::write(path.join("cfg/server.properties"), b"motd=hi\n").unwrap();
    let user =
        add_user(&d, &volume, json!({"username": "viewer", "password": "correct horse battery", "read_only": true}));
    assert_eq!(user["read_only"], true);
    let body = r#"
import io
def attempt(name, f):
    try:
        f(); print(name, "ok")
    except Exception as e:
        print(name, "refused", type(e).__name__)
print("read", sftp.open("/cfg/server.properties").read())
attempt("put", lambda: sftp.putfo(io.BytesIO(b"x"), "/new.txt"))
attempt("overwrite", lambda: sftp.open("/cfg/server.properties", "r+").write(b"pwned"))
attempt("mkdir", lambda: sftp.mkdir("/d"))
attempt("rename", lambda: sftp.rename("/cfg/server.properties", "/moved"))
attempt("remove", lambda: sftp.remove("/cfg/server.properties"))
attempt("rmdir", lambda: sftp.rmdir("/cfg"))
attempt("chmod", lambda: sftp.chmod("/cfg/server.properties", 0o600))
attempt("symlink", lambda: sftp.symlink("cfg", "/l"))
"#;
    let out = paramiko(port, user["login"].as_str().unwrap(), "correct horse battery", body);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout.contains("read b'motd=hi\\n'"), "{stdout}");
    for op in ["put", "overwrite", "mkdir", "rename", "remove", "rmdir", "chmod", "symlink"] {
        assert!(stdout.contains(&format!("{op} refused")), "{op}: {stdout}");
    }
    let names: Vec<_> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("cfg")]);
    assert_eq!(std::fs::read(path.join("cfg/server.properties")).unwrap(), b"motd=hi\n");
    assert_eq!(std::fs::metadata(path.join("cfg/server.properties")).unwrap().permissions().mode() & 0o777, 0o644);
}

#[test]
fn users_are_checked_kept_hashed_and_refused_on_bad_logins() {
    let (d, port) = start();
    let (volume, _) = d.new_volume();
    let url = format!("/volumes/{volume}/sftp/users");
    for (body, want) in [
        (json!({"username": "Bad.Name", "password": "correct horse"}), "username"),
        (json!({"username": "nopass"}), "password or at least one public key"),
        (json!({"username": "short", "password": "abc"}), "password must be"),
        (json!({"username": "badkey", "public_keys": ["ssh-ed25519 AAAA"]}), "public_keys[0]"),
        (json!({"username": "x", "password": "correct horse", "shell": true}), "unknown field"),
    ] {
        let r = d.call("POST", &url, Some(body.clone()));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.error().contains(want), "{body}: {}", r.body);
    }
    add_user(&d, &volume, json!({"username": "carol", "password": "correct horse battery"}));
    let dup = d.call("POST", &url, Some(json!({"username": "carol", "password": "another password"})));
    assert_eq!(dup.status, 409, "{}", dup.body);
    let missing = d.call(
        "POST",
        "/volumes/00000000-0000-4000-8000-000000000000/sftp/users",
        Some(json!({"username": "z", "password": "correct horse"})),
    );
    assert_eq!(missing.status, 404, "{}", missing.body);
    let list = d.get(&url);
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["users"].as_array().unwrap().len(), 1);
    assert_eq!(list.json()["users"][0]["password"], true);
    assert!(!list.body.contains("argon2") && !list.body.contains("correct horse"), "{}", list.body);
    // The state file keeps only a slow salted hash.
    let state = std::fs::read_to_string(d.dir.0.join("state.json")).unwrap();
    assert!(state.contains("$argon2id$") && !state.contains("correct horse"), "{state}");
    // Wrong password, unknown login, unknown volume: refused.
    let login = format!("carol.{volume}");
    for (who, password) in [
        (login.as_str(), "wrong password"),
        (&*format!("nobody.{volume}"), "correct horse battery"),
        ("carol.novolume", "correct horse battery"),
        ("carol", "correct horse battery"),
    ] {
        let out = paramiko(port, who, password, "print('logged in')");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("connect_error") && !stdout.contains("logged in"), "{who}: {}", text(&out));
    }
    let ok = paramiko(port, &login, "correct horse battery", "print('logged in', sftp.listdir('/'))");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("logged in []"), "{}", text(&ok));
    let bad = d.call("DELETE", &format!("{url}/Not.Valid"), None);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(d.call("DELETE", &format!("{url}/nobody"), None).status, 404);
    assert_eq!(d.call("DELETE", &format!("{url}/carol"), None).status, 200);
    assert_eq!(d.get(&url).json()["users"], json!([]));
}

#[test]
fn too_many_failed_logins_from_one_address_are_refused_for_a_minute() {
    let (d, port) = start_with(|c| c["sftp"]["max_failed_logins_per_minute"] = json!(3));
    let (volume, _) = d.new_volume();
    add_user(&d, &volume, json!({"username": "dave", "password": "correct horse battery"}));
    let login = format!("dave.{volume}");
    for _ in 0..3 {
        let out = paramiko(port, &login, "wrong password", "print('logged in')");
        assert!(String::from_utf8_lossy(&out.stdout).contains("connect_error"), "{}", text(&out));
    }
    // Now even the right password is refused from this address.
    let out = paramiko(port, &login, "correct horse battery", "print('logged in')");
    assert!(String::from_utf8_lossy(&out.stdout).contains("connect_error"), "{}", text(&out));
    assert!(d.log().contains("too many failed logins"), "{}", d.log());
}

/// Login attempts made at once are each counted before the costly password check: with a
/// limit of 3 a minute, 3 of 12 parallel wrong guesses are checked and the rest refused
/// unchecked. (They were counted only after the check, so every parallel guess got one.)
#[test]
fn parallel_wrong_passwords_are_counted_before_they_are_checked() {
    let (d, port) = start_with(|c| c["sftp"]["max_failed_logins_per_minute"] = json!(3));
    let (volume, _) = d.new_volume();
    add_user(&d, &volume, json!({"username": "judy", "password": "correct horse battery"}));
    let login = format!("judy.{volume}");
    // Twelve connections with their key exchange done, then every guess sent at once.
    let script = format!(
        r#"
import os, threading, signal, paramiko
signal.alarm({alarm})
ts = [paramiko.Transport(("127.0.0.1", {port})) for _ in range(12)]
for t in ts:
    t.start_client(timeout=30)
go = threading.Barrier(12)
said = []
def guess(i, t):
    go.wait()
    try:
        t.auth_password(os.environ["LOGIN"], f"wrong guess {{i}}")
        said.append("logged in")
    except paramiko.AuthenticationException:
        said.append("refused")
threads = [threading.Thread(target=guess, args=(i, t)) for i, t in enumerate(ts)]
for th in threads: th.start()
for th in threads: th.join()
print(sorted(said))
"#,
        alarm = CLIENT_DEADLINE.as_secs() + 10
    );
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c").arg(script).env("LOGIN", &login);
    let out = run_client(cmd, b"", "paramiko");
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("'refused'").count(), 12, "{}", text(&out));
    let log = d.log();
    assert_eq!(log.matches(": wrong password").count(), 3, "{log}");
    assert_eq!(log.matches(": too many failed logins from this address").count(), 9, "{log}");
}

/// A login name has its own limit, from every address together: guesses spread over many
/// addresses (here 127.0.0.2 to .5) lock that name, and only it, for the minute.
#[test]
fn failed_logins_are_limited_per_user_across_addresses() {
    let (d, port) = start_with(|c| c["sftp"]["max_failed_logins_per_user_per_minute"] = json!(4));
    let (volume, _) = d.new_volume();
    add_user(&d, &volume, json!({"username": "kim", "password": "correct horse battery"}));
    add_user(&d, &volume, json!({"username": "lee", "password": "correct horse battery"}));
    for (i, source) in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"].iter().enumerate() {
        let out = sock_login(port, source, &format!("kim.{volume}"), &format!("wrong {i}"));
        assert!(out.contains("refused"), "{out}");
    }
    // The right password for kim, from an address with no failures, is refused this minute...
    let out = sock_login(port, "127.0.0.6", &format!("kim.{volume}"), "correct horse battery");
    assert!(out.contains("refused"), "{out}");
    assert!(d.log().contains("too many failed logins for this user"), "{}", d.log());
    // ...while another user logs in from the same addresses.
    let out = sock_login(port, "127.0.0.2", &format!("lee.{volume}"), "correct horse battery");
    assert!(out.contains("logged in"), "{out}");
}

/// Logs in as `login` from source address `source`; what happened (`logged in`, `refused`).
fn sock_login(port: u16, source: &str, login: &str, password: &str) -> String {
    let script = format!(
        r#"
import os, socket, signal, paramiko
signal.alarm({alarm})
s = socket.create_connection(("127.0.0.1", {port}), timeout=30, source_address=("{source}", 0))
t = paramiko.Transport(s)
try:
    t.connect(username=os.environ["LOGIN"], password=os.environ["PASSWORD"])
    print("logged in")
except paramiko.AuthenticationException:
    print("refused")
"#,
        alarm = CLIENT_DEADLINE.as_secs() + 10
    );
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c").arg(script).env("LOGIN", login).env("PASSWORD", password);
    text(&run_client(cmd, b"", "paramiko"))
}

/// A connection has `sftp.login_timeout` seconds to log in, whether it stalls before the SSH
/// handshake or after it; and at most `sftp.max_unauthenticated` connections may be waiting
/// to log in at once (a logged-in session does not count), past which a new one is closed at
/// once. Before, an idle connection held its place for an hour.
#[test]
fn connections_must_log_in_in_time_and_few_may_wait_to() {
    let (d, port) = start_with(|c| {
        c["sftp"]["login_timeout"] = json!(2);
        c["sftp"]["max_unauthenticated"] = json!(3);
    });
    let (volume, _) = d.new_volume();
    add_user(&d, &volume, json!({"username": "mia", "password": "correct horse battery"}));
    let script = format!(
        r#"
import os, socket, time, signal, paramiko
signal.alarm({alarm})
def closed_after(s, start):
    s.settimeout(20)
    try:
        while s.recv(4096):
            pass
    except (ConnectionError, socket.timeout) as e:
        if isinstance(e, socket.timeout):
            return "still open"
    return round(time.time() - start, 1)
# A logged-in session, held throughout: it does not count as waiting.
t = paramiko.Transport(("127.0.0.1", {port}))
t.connect(username=os.environ["LOGIN"], password=os.environ["PASSWORD"])
sftp = paramiko.SFTPClient.from_transport(t)
# Three connections that never log in, one of them after its key exchange.
idle = [socket.create_connection(("127.0.0.1", {port})) for _ in range(2)]
opened = time.time()
half = paramiko.Transport(("127.0.0.1", {port}))
half.start_client(timeout=10)
time.sleep(0.3)
# A fourth is turned away at once.
print("fourth", closed_after(socket.create_connection(("127.0.0.1", {port})), time.time()), flush=True)
# The waiting ones are closed at their deadline (2 s, checked every 0.2 s).
print("idle", [closed_after(s, opened) for s in idle], flush=True)
deadline = time.time() + 10
while half.is_active() and time.time() < deadline:
    time.sleep(0.1)
print("after key exchange", "closed" if not half.is_active() else "still open", flush=True)
# The logged-in session lives on, and new connections are let in again.
print("session", sftp.listdir("/"), flush=True)
again = paramiko.Transport(("127.0.0.1", {port}))
again.connect(username=os.environ["LOGIN"], password=os.environ["PASSWORD"])
print("again", paramiko.SFTPClient.from_transport(again).listdir("/"), flush=True)
"#,
        alarm = CLIENT_DEADLINE.as_secs() + 10
    );
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c").arg(script).env("LOGIN", format!("mia.{volume}")).env("PASSWORD", "correct horse battery");
    let out = run_client(cmd, b"", "paramiko");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    let fourth: f64 = said.split("fourth ").nth(1).unwrap().lines().next().unwrap().parse().expect(&said);
    assert!(fourth < 1.0, "{said}");
    let idle = said.split("idle [").nth(1).unwrap().split(']').next().unwrap().to_string();
    for took in idle.split(", ") {
        let took: f64 = took.parse().unwrap_or_else(|_| panic!("{said}"));
        assert!((1.0..5.0).contains(&took), "{said}");
    }
    assert!(said.contains("after key exchange closed"), "{said}");
    assert!(said.contains("session []") && said.contains("again []"), "{said}");
    let log = d.log();
    assert!(log.contains("too many connections not logged in yet"), "{log}");
    assert!(log.contains("not logged in within 2s"), "{log}");
}

/// Connects as `login`, prints `ready`, then lists `/` until that fails; prints when the first
/// request failed and when the transport was found closed (unix seconds).
const WATCH_SESSION: &str = r#"
print("ready", flush=True)
failed = None
deadline = time.time() + 10
while time.time() < deadline:
    try:
        sftp.listdir("/")
    except Exception:
        if failed is None:
            failed = time.time()
    if not t.is_active():
        print("closed", failed or time.time(), time.time(), flush=True)
        break
    time.sleep(0.02)
else:
    print("still open", flush=True)
"#;

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Starts [`WATCH_SESSION`] and waits for its `ready`.
fn watcher(port: u16, login: &str) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let script = format!(
        "import os, sys, time, signal, paramiko\nsignal.alarm({alarm})\nt = paramiko.Transport(('127.0.0.1', {port}))\nt.connect(username=os.environ['LOGIN'], password=os.environ['PASSWORD'])\nsftp = paramiko.SFTPClient.from_transport(t)\nsftp.get_channel().settimeout(30)\n{WATCH_SESSION}",
        alarm = CLIENT_DEADLINE.as_secs()
    );
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .env("LOGIN", login)
        .env("PASSWORD", "correct horse battery")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    (child, out)
}

/// The seconds from `since` until the session was closed.
fn closed_after(mut child: std::process::Child, mut out: BufReader<std::process::ChildStdout>, since: f64) -> f64 {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    child.wait().unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"closed"), "{line}");
    let closed: f64 = fields[2].parse().unwrap();
    closed - since
}

#[test]
fn deleting_the_user_or_its_volume_ends_live_sessions_within_a_second() {
    let (d, port) = start();
    let (volume, _) = d.new_volume();
    add_user(&d, &volume, json!({"username": "frank", "password": "correct horse battery"}));
    let (child, out) = watcher(port, &format!("frank.{volume}"));
    let (second, second_out) = watcher(port, &format!("frank.{volume}"));
    let since = now();
    let deleted = d.call("DELETE", &format!("/volumes/{volume}/sftp/users/frank"), None);
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json(), json!({"message": "SFTP user deleted", "sessions_closed": 2}));
    for (child, out) in [(child, out), (second, second_out)] {
        let took = closed_after(child, out, since);
        assert!(took < 1.0, "the session outlived its user by {took:.2} s");
    }
    // A volume deleted: its users and their sessions go.
    let (other, _) = d.new_volume();
    add_user(&d, &other, json!({"username": "grace", "password": "correct horse battery"}));
    let (child, out) = watcher(port, &format!("grace.{other}"));
    let since = now();
    assert_eq!(d.call("DELETE", &format!("/volumes/{other}"), None).status, 200);
    let took = closed_after(child, out, since);
    assert!(took < 1.0, "the session outlived its volume by {took:.2} s");
    assert!(d.state()["sftp_users"].as_object().is_none_or(|m| m.is_empty()), "{}", d.state());
}

/// A user deleted and created again under the same name at once (within one tick of the
/// 200 ms watch) is another user: the old one's sessions end all the same, and can do nothing
/// meanwhile. They used to live on as the new user.
#[test]
fn a_user_deleted_and_created_again_at_once_does_not_keep_old_sessions() {
    let (d, port) = start();
    let (volume, _) = d.new_volume();
    let (_, public) = keygen(&d.dir.0, "new-owner");
    add_user(&d, &volume, json!({"username": "nina", "password": "correct horse battery"}));
    for round in 0..3 {
        let (child, out) = watcher(port, &format!("nina.{volume}"));
        let since = now();
        // Back to back, no password to hash: a few milliseconds apart.
        let deleted = d.call("DELETE", &format!("/volumes/{volume}/sftp/users/nina"), None);
        assert_eq!(deleted.json()["sessions_closed"], 1, "round {round}");
        add_user(&d, &volume, json!({"username": "nina", "public_keys": [public.clone()]}));
        let took = closed_after(child, out, since);
        assert!(took < 1.0, "round {round}: the old session outlived its user by {took:.2} s");
        // The next round logs in with a password again; the old session is not the new user's.
        let deleted = d.call("DELETE", &format!("/volumes/{volume}/sftp/users/nina"), None);
        assert_eq!(deleted.json()["sessions_closed"], 0, "round {round}");
        add_user(&d, &volume, json!({"username": "nina", "password": "correct horse battery"}));
    }
}

/// Data a client sends on a channel before asking for the sftp subsystem is drained (and the
/// channel closed past 64 KiB): it used to pile up in russh's queue for that channel until the
/// session loop waited on it for good, hanging the whole connection.
#[test]
fn data_before_the_subsystem_does_not_hang_the_connection() {
    let (d, port) = start();
    let (volume, _) = d.new_volume();
    let user = add_user(&d, &volume, json!({"username": "olga", "password": "correct horse battery"}));
    let body = r#"
ch = t.open_session(timeout=30)
ch.settimeout(30)
sent = 0
try:
    for _ in range(400):
        sent += ch.send(b"x" * 1024)
except Exception as e:
    print("send stopped", type(e).__name__)
time.sleep(0.5)
print("sent", sent, "closed" if ch.closed or ch.eof_received else "open", flush=True)
print("still works", sftp.listdir("/"), paramiko.SFTPClient.from_transport(t).listdir("/"), flush=True)
"#;
    let out = paramiko(port, user["login"].as_str().unwrap(), "correct horse battery", body);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(said.contains("closed"), "{said}");
    assert!(said.contains("still works [] []"), "{said}");
    assert!(d.log().contains("data sent on a channel before its subsystem"), "{}", d.log());
}

#[test]
fn fifty_sessions_at_once_all_work() {
    let (d, port) = start();
    let (volume, path) = d.new_volume();
    let (key, public) = keygen(&d.dir.0, "many");
    let user = add_user(&d, &volume, json!({"username": "many", "public_keys": [public]}));
    let login = user["login"].as_str().unwrap().to_string();
    let local = d.dir.0.join("clients");
    std::fs::create_dir_all(&local).unwrap();
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let file = local.join(format!("f{i}.bin"));
            std::fs::write(&file, noise(256 << 10, i + 1)).unwrap();
            let script = format!("put {} /f{i}.bin\nls /\nget /f{i}.bin {}.back\n", file.display(), file.display());
            let (login, key) = (login.clone(), key.clone());
            std::thread::spawn(move || sftp_batch(port, &login, &key, &script))
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let out = c.join().unwrap();
        assert!(out.status.success(), "client {i}: {}", text(&out));
    }
    for i in 0..50u64 {
        let want = noise(256 << 10, i + 1);
        assert!(std::fs::read(path.join(format!("f{i}.bin"))).unwrap() == want, "f{i} on the volume");
        assert!(std::fs::read(local.join(format!("f{i}.bin.back"))).unwrap() == want, "f{i} downloaded");
    }
}

#[test]
fn an_upload_past_the_volume_limit_fails_and_the_volume_stays_usable() {
    let (d, port) = start_with(|c| c["volumes"]["quota"] = json!("loop"));
    let r = d.call("POST", "/volumes", Some(json!({"size_limit": "32MB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["quota"], "loop");
    let volume = r.json()["volume_id"].as_str().unwrap().to_string();
    let path = PathBuf::from(r.json()["path"].as_str().unwrap());
    let user = add_user(&d, &volume, json!({"username": "filler", "password": "correct horse battery"}));
    let body = r#"
import io
try:
    sftp.putfo(io.BytesIO(b"\x01" * (48 << 20)), "/too-big.bin")
    print("big ok")
except Exception as e:
    print("big refused", type(e).__name__, e)
sftp.putfo(io.BytesIO(b"still works"), "/after.txt")
print("after", sftp.open("/after.txt").read())
"#;
    let out = paramiko(port, user["login"].as_str().unwrap(), "correct horse battery", body);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout.contains("big refused") && stdout.contains("Volume is full"), "{stdout}");
    assert!(stdout.contains("after b'still works'"), "{stdout}");
    assert_eq!(std::fs::read(path.join("after.txt")).unwrap(), b"still works");
    let names: Vec<String> =
        std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n == "too-big.bin" || n.starts_with(".lightd-tmp")), "{names:?}");
}

/// OpenSSH's `df` asks `statvfs@openssh.com`: a loop volume answers with its own size (32 MB
/// here), never the host disk's, and a path is resolved inside the volume.
#[test]
fn df_shows_the_volumes_own_size() {
    let (d, port) = start_with(|c| c["volumes"]["quota"] = json!("loop"));
    let r = d.call("POST", "/volumes", Some(json!({"size_limit": "32MB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let volume = r.json()["volume_id"].as_str().unwrap().to_string();
    let path = PathBuf::from(r.json()["path"].as_str().unwrap());
    std::fs::create_dir(path.join("sub")).unwrap();
    let (key, public) = keygen(&d.dir.0, "df");
    let user = add_user(&d, &volume, json!({"username": "df", "public_keys": [public]}));
    let login = user["login"].as_str().unwrap();
    let out = sftp_batch(port, login, &key, "df -h /\ndf /\ndf /sub\ndf /sub/../sub\n");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    // `df` without -h: a header, then Size Used Avail (root) in KiB, and the capacity.
    let sizes: Vec<u64> = said.lines().filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok()).collect();
    assert_eq!(sizes.len(), 3, "{said}");
    for kib in sizes {
        assert!((16 << 10..=32 << 10).contains(&kib), "a 32 MB volume shows {kib} KiB: {said}");
    }
    // `df -h` shows mebibytes, not the host disk's gigabytes.
    let human = said.lines().skip_while(|l| !l.contains("df -h")).nth(2).unwrap_or_default();
    assert!(human.split_whitespace().next().is_some_and(|s| s.ends_with("MB") || s.ends_with("MiB")), "{said}");
    let missing = sftp_batch(port, login, &key, "df /nowhere\n");
    assert!(!missing.status.success(), "{}", text(&missing));
}

#[test]
fn sessions_per_user_are_capped_and_large_directories_list_in_full() {
    let (d, port) = start_with(|c| c["sftp"]["max_sessions_per_user"] = json!(2));
    let (volume, path) = d.new_volume();
    std::fs::create_dir(path.join("many")).unwrap();
    for i in 0..1500 {
        std::fs::write(path.join(format!("many/file-{i:04}")), b"").unwrap();
    }
    let user = add_user(&d, &volume, json!({"username": "capped", "password": "correct horse battery"}));
    let login = user["login"].as_str().unwrap().to_string();
    // Two sessions held open; a third login is refused while they last.
    let (first, first_out) = watcher(port, &login);
    let (second, second_out) = watcher(port, &login);
    let third = paramiko(port, &login, "correct horse battery", "print('logged in', len(sftp.listdir('/many')))");
    assert!(String::from_utf8_lossy(&third.stdout).contains("connect_error"), "{}", text(&third));
    assert!(d.log().contains("too many sessions for that user"), "{}", d.log());
    // Ending them (the user deleted) frees the slots for a new user of that name.
    let since = now();
    assert_eq!(d.call("DELETE", &format!("/volumes/{volume}/sftp/users/capped"), None).status, 200);
    assert!(closed_after(first, first_out, since) < 1.0);
    assert!(closed_after(second, second_out, since) < 1.0);
    add_user(&d, &volume, json!({"username": "capped", "password": "correct horse battery"}));
    // 1500 names come back in pages of 512, every one once.
    let out = paramiko(
        port,
        &login,
        "correct horse battery",
        "names = sftp.listdir('/many'); print('listed', len(names), len(set(names)))",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("listed 1500 1500"), "{}", text(&out));
}

/// A listing streams: each READDIR reads on where the last stopped. Pages by name rescanned
/// the whole directory for each 512 names, so 120,000 names took about 30 s on the test
/// machine (quadratic); streamed they take a few seconds, mostly paramiko's own.
#[test]
fn a_huge_directory_lists_in_one_pass() {
    let (d, port) = start();
    let (volume, path) = d.new_volume();
    std::fs::create_dir(path.join("huge")).unwrap();
    for i in 0..120_000 {
        std::fs::File::create(path.join(format!("huge/entry-{i:06}"))).unwrap();
    }
    let user = add_user(&d, &volume, json!({"username": "lister", "password": "correct horse battery"}));
    let out = paramiko(
        port,
        user["login"].as_str().unwrap(),
        "correct horse battery",
        "s = time.time(); names = sftp.listdir('/huge'); print('listed', len(names), len(set(names)), 'in', time.time() - s)",
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("listed 120000 120000 in "), "{}", text(&out));
    let took: f64 = said.rsplit(" in ").next().unwrap().trim().parse().unwrap();
    eprintln!("120,000 names listed in {took:.1} s");
    assert!(took < 12.0, "listing 120,000 names took {took:.1} s: is READDIR rescanning the directory?");
}

#[test]
fn viewers_of_the_volumes_server_hear_of_sftp_logins_and_uploads() {
    require_docker();
    let (d, port) = start();
    let (volume, _) = d.new_volume();
    let id = d.ready_container("sftp-viewer", "sleep 1000", json!({"volume_id": volume}));
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 60);
    let mut console = AttachSession::open(d.port, &id);
    let user = add_user(&d, &volume, json!({"username": "heidi", "password": "correct horse battery"}));
    let body = "import io\nsftp.mkdir('/world')\nsftp.putfo(io.BytesIO(b'level'), '/world/level.dat')\nprint('done')";
    let out = paramiko(port, user["login"].as_str().unwrap(), "correct horse battery", body);
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"), "{}", text(&out));
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("sftp upload world/level.dat")) {
        seen.push(console.text());
        assert!(seen.len() < 200, "{seen:?}");
    }
    assert!(seen.iter().any(|l| l == "[lightd] sftp login heidi"), "{seen:?}");
}

#[test]
fn users_and_the_host_key_survive_a_restart() {
    let mut d = Daemon::start();
    let (volume, path) = d.new_volume();
    let user = add_user(&d, &volume, json!({"username": "ivan", "password": "correct horse battery"}));
    d.restart();
    let log = d.log();
    // Both starts logged the same key's fingerprint; only the first made it.
    let prints: Vec<&str> =
        log.split("(host key ").skip(1).map(|rest| rest.split(')').next().unwrap_or_default()).collect();
    assert_eq!(prints.len(), 2, "{log}");
    assert!(prints[0].starts_with("SHA256:") && prints[0] == prints[1], "{prints:?}");
    assert_eq!(log.matches("made a new host key").count(), 1, "{log}");
    let later = log.rsplit("sftp serving on ").next().unwrap();
    let port: u16 = later.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
    let out = paramiko(
        port,
        user["login"].as_str().unwrap(),
        "correct horse battery",
        "import io\nsftp.putfo(io.BytesIO(b'again'), '/again.txt')\nprint('ok')",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"), "{}", text(&out));
    assert_eq!(std::fs::read(path.join("again.txt")).unwrap(), b"again");
}

/// One connection runs at most 4 SFTP sessions at once (each may hold its own open handles):
/// a fifth on the same connection is refused while they last, and one more is allowed once one
/// of them ends. Before the cap, one login could start sessions without bound.
#[test]
fn one_connection_runs_at_most_four_sftp_sessions() {
    let (d, port) = start();
    let (volume, _) = d.new_volume();
    let user = add_user(&d, &volume, json!({"username": "many", "password": "correct horse battery"}));
    let login = user["login"].as_str().unwrap();
    let out = paramiko(
        port,
        login,
        "correct horse battery",
        r#"
held = [sftp] + [paramiko.SFTPClient.from_transport(t) for _ in range(3)]
for s in held:
    s.listdir('/')
print('four open')
try:
    paramiko.SFTPClient.from_transport(t).listdir('/')
    print('fifth opened')
except Exception as e:
    print('fifth refused', type(e).__name__)
held.pop().close()
time.sleep(0.5)
paramiko.SFTPClient.from_transport(t).listdir('/')
print('another after one closed')
"#,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("four open"), "{}", text(&out));
    assert!(said.contains("fifth refused"), "{}", text(&out));
    assert!(said.contains("another after one closed"), "{}", text(&out));
}

/// The SFTP server runs on a thread of its own ("lightd-sftp") without CAP_IPC_LOCK, under a
/// soft locked-memory limit of 0: russh's `mlock`/`munlock` of every packet buffer then fails
/// at once instead of pinning pages (a third of an upload's CPU as root). The rest of the
/// daemon keeps its capabilities.
#[test]
fn the_sftp_thread_locks_no_memory() {
    let (d, port) = start();
    let (volume, _) = d.new_volume();
    add_user(&d, &volume, json!({"username": "lock", "password": "correct horse battery"}));
    // A session is open, so the server has run on its thread.
    let (child, out) = watcher(port, &format!("lock.{volume}"));
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap();
    let (mut sftp, mut others) = (Vec::new(), Vec::new());
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let eff =
            status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(|v| u64::from_str_radix(v.trim(), 16).unwrap());
        let ipc_lock = eff.is_some_and(|e| e & (1 << 14) != 0);
        if name.trim() == "lightd-sftp" {
            sftp.push(ipc_lock)
        } else if name.trim() == "lightd" {
            others.push(ipc_lock)
        }
    }
    assert_eq!(sftp, vec![false], "one SFTP thread, without CAP_IPC_LOCK");
    assert!(others.contains(&true), "the main thread keeps CAP_IPC_LOCK (a positive control): {others:?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let memlock = limits.lines().find(|l| l.starts_with("Max locked memory")).unwrap();
    assert_eq!(memlock.split_whitespace().nth(3), Some("0"), "{memlock}");
    drop(out);
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
}
