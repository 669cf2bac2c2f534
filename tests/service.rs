//! lightd as an operator runs it: the systemd unit (checked by `systemd-analyze verify`),
//! readiness and stopping notifications over `$NOTIFY_SOCKET`, and the start-up error of a
//! user who may not write the configured directories.

mod common;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const UNIT: &str = include_str!("../dist/lightd.service");
const HINT: &str = "run lightd as root, or set storage.* / volumes.base_path / backups.path in the config";
/// `nobody` on Debian; any uid without rights to root's directories would do.
const NOBODY: &str = "65534";

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(Path::new(root).join("scripts/verify-unit.sh"))
        .arg(bin())
        .current_dir(root)
        .output()
        .expect("run scripts/verify-unit.sh");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scripts/verify-unit.sh failed ({}):\n{said}", out.status);
    assert!(said.contains("verified"), "{said}");
}

/// Whether systemd's `SystemCallFilter=` lines (in order) let the service make the calls of
/// `group`: the first non-empty line sets the mode (an allow-list, or with `~` a deny-list);
/// later lines of the same kind add to the list, lines of the other kind take names away from
/// it; an empty value resets.
fn syscalls_allowed(lines: &[&str], group: &str) -> bool {
    // (denying, names): no list at all allows everything.
    let mut list: Option<(bool, Vec<&str>)> = None;
    for line in lines {
        let (denying, names) = match line.strip_prefix('~') {
            Some(rest) => (true, rest.split_whitespace().collect::<Vec<_>>()),
            None => (false, line.split_whitespace().collect()),
        };
        match list.as_mut() {
            _ if names.is_empty() && !denying => list = None,
            None => list = Some((denying, names)),
            Some((mode, held)) if *mode == denying => held.extend(names),
            Some((_, held)) => held.retain(|n| !names.contains(n)),
        }
    }
    match list {
        None => true,
        Some((denying, held)) => held.contains(&group) != denying,
    }
}

#[test]
fn the_filter_reader_follows_systemd() {
    assert!(syscalls_allowed(&["@system-service @mount"], "@mount"));
    assert!(!syscalls_allowed(&["@system-service"], "@mount"));
    assert!(!syscalls_allowed(&["~@mount"], "@mount"));
    assert!(!syscalls_allowed(&["@system-service @mount", "~@mount"], "@mount"));
    assert!(!syscalls_allowed(&["@system-service @mount-extra"], "@mount"));
    assert!(syscalls_allowed(&["~@mount", "", "@mount"], "@mount"));
    assert!(syscalls_allowed(&[], "@mount"), "no filter allows everything");
}

/// The settings the daemon relies on, and none of those that would hide its loop mounts from
/// dockerd (a private mount namespace; see the unit's own comments).
#[test]
fn unit_file_keeps_what_lightd_needs() {
    let settings: Vec<(&str, &str)> = UNIT
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect();
    let value = |key: &str| settings.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v).collect::<Vec<_>>();
    assert_eq!(value("Type"), ["notify"]);
    assert_eq!(value("NotifyAccess"), ["main"]);
    assert!(value("ExecStart").iter().any(|v| v.starts_with("/usr/local/bin/lightd --config ")), "{UNIT}");
    let nofile: u64 = value("LimitNOFILE").first().and_then(|v| v.parse().ok()).expect("a numeric LimitNOFILE");
    assert!(nofile >= 65_536, "LimitNOFILE={nofile}");
    let caps = value("CapabilityBoundingSet").join(" ");
    for cap in ["CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE"] {
        assert!(caps.split_whitespace().any(|c| c == cap), "{cap} missing from CapabilityBoundingSet={caps}");
    }
    let devices = value("DeviceAllow");
    assert!(devices.contains(&"/dev/loop-control rw") && devices.contains(&"block-loop rw"), "{devices:?}");
    assert!(value("RestrictAddressFamilies").join(" ").contains("AF_UNIX"), "the Docker socket and sd_notify");
    assert!(syscalls_allowed(&value("SystemCallFilter"), "@mount"), "loop volumes are mounted: {UNIT}");
    assert_eq!(value("KillMode"), ["process"], "servers and helpers are not the daemon's to kill");
    assert_eq!(value("UMask"), ["0077"], "what lightd writes without a mode of its own is root's alone");
    assert!(value("RestartPreventExitStatus").join(" ").split_whitespace().any(|s| s == "2"), "config errors");
    for namespaced in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "BindPaths",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "MountFlags",
        "PrivateNetwork",
        "DynamicUser",
        "User",
    ] {
        assert!(value(namespaced).is_empty(), "{namespaced}= would break loop mounts or Docker: {UNIT}");
    }
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no notification within 10 s: {e}"),
    }
}

#[test]
fn notifies_ready_when_serving_and_stopping_on_sigterm() {
    let mut d = Daemon::prepare(|_| {});
    let path = d.dir.0.join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    d.env.push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    d.spawn();
    // `spawn` returned once the daemon answered; READY=1 was sent before (or as) it could.
    manager.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let n = manager.recv(&mut buf).unwrap_or_else(|e| panic!("READY=1 not there when the daemon answers: {e}"));
    assert_eq!(&buf[..n], b"READY=1");
    assert_eq!(d.get("/health").status, 200);
    assert!(manager.recv(&mut buf).is_err(), "nothing else until the stop");
    manager.set_nonblocking(false).unwrap();
    d.stop();
    assert_eq!(receive(&manager), "STOPPING=1");
    let log = d.log();
    assert!(log.contains("SIGTERM: stopping") && log.contains("stopped"), "{log}");
    assert!(!log.contains("cannot tell the service manager"), "{log}");
}

#[test]
fn a_notification_socket_that_is_gone_is_a_warning_not_a_failure() {
    let mut d = Daemon::prepare(|_| {});
    let missing = d.dir.0.join("no-such.sock");
    d.env.push(("NOTIFY_SOCKET".into(), missing.display().to_string()));
    d.spawn();
    assert_eq!(d.get("/health").status, 200);
    let log = d.log();
    assert!(log.contains("WARN cannot tell the service manager READY=1"), "{log}");
    d.stop();
}

/// Runs `args` as uid/gid 65534 with no supplementary groups; kills it after 20 s.
fn run_unprivileged(bin: &Path, cwd: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .arg(bin)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run setpriv (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("lightd as uid {NOBODY} did not exit within 20 s: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Every file below `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// A copy of the daemon that uid 65534 can run (the build's may lie under a private directory).
fn runnable_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("lightd");
    // Copied by `cp`, not in this process: a write descriptor held here is inherited by any
    // child another test thread forks meanwhile, and exec of the copy then fails with "Text
    // file busy" (ETXTBSY) until that child execs (seen once in CI).
    let ok = Command::new("cp").arg(bin()).arg(&copy).status().expect("run cp");
    assert!(ok.success(), "cp {} {}", bin(), copy.display());
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

fn require_root() {
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test runs the daemon as another user, which needs root (the test command runs as root)");
}

#[test]
fn unwritable_paths_are_named_with_the_fix_before_anything_is_written() {
    require_root();
    let tmp = TempDir::new("unprivileged");
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = runnable_copy(&tmp.0);
    // Root's own directory, as /var/lib is: uid 65534 may neither enter nor write it.
    let locked = tmp.0.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A directory uid 65534 may write, for every other path.
    let open = tmp.0.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let cfg = tmp.0.join("config.json");
    let cases: [(&str, Value, PathBuf); 5] = [
        ("storage.state_file", json!({"storage": {"state_file": locked.join("state.json")}}), locked.clone()),
        ("storage.data_path", json!({"storage": {"data_path": locked.join("data")}}), locked.join("data")),
        ("volumes.base_path", json!({"volumes": {"base_path": locked.join("volumes")}}), locked.join("volumes")),
        ("backups.path", json!({"backups": {"path": locked.join("backups")}}), locked.join("backups")),
        // The state directory exists and is the user's, the state file in it is root's.
        (
            "storage.state_file",
            json!({"storage": {"state_file": open.join("root-owned/state.json")}}),
            open.join("root-owned/state.json"),
        ),
    ];
    let root_owned = open.join("root-owned");
    std::fs::create_dir(&root_owned).unwrap();
    std::os::unix::fs::chown(&root_owned, Some(65534), Some(65534)).unwrap();
    std::fs::write(root_owned.join("state.json"), b"{}").unwrap();
    std::fs::set_permissions(root_owned.join("state.json"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&cfg, b"{}").unwrap();
    let before = files_under(&tmp.0);
    for (key, paths, named) in cases {
        // No token in the config: a start that got further would generate and write one.
        let mut config = json!({
            "server": {"host": "127.0.0.1", "port": 0},
            "docker": {"socket_path": "/nonexistent/docker.sock"},
            "storage": {"state_file": open.join("state/state.json"), "data_path": open.join("data")},
            "volumes": {"base_path": open.join("volumes")},
            "backups": {"path": open.join("backups")},
        });
        for (section, values) in paths.as_object().unwrap() {
            for (k, v) in values.as_object().unwrap() {
                config[section][k] = v.clone();
            }
        }
        std::fs::write(&cfg, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = run_unprivileged(&bin, &tmp.0, &["--config".as_ref(), cfg.as_os_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: exit {} and {err}", out.status);
        assert!(err.contains(&format!("{} ({key})", named.display())), "{key}: the path and its key: {err}");
        assert!(err.contains("uid 65534") && err.contains("Permission denied"), "{key}: {err}");
        assert!(err.contains(HINT), "{key}: the fix: {err}");
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
        assert!(out.stdout.is_empty(), "{key}: {}", String::from_utf8_lossy(&out.stdout));
        // Nothing was made or written: no token, no state, no directories.
        assert_eq!(files_under(&tmp.0), before, "{key}: {err}");
        assert_eq!(std::fs::read_dir(&open).unwrap().count(), 1, "{key}: only root-owned/ in {}", open.display());
    }
}

/// The defaults (`/var/lib/lightd`) need root: as another user they are named with the fix.
#[test]
fn default_paths_as_another_user_say_to_run_as_root() {
    require_root();
    let tmp = TempDir::new("defaults");
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = runnable_copy(&tmp.0);
    let cfg = tmp.0.join("config.json");
    std::fs::write(&cfg, json!({"server": {"host": "127.0.0.1", "port": 0}}).to_string()).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let existed = Path::new("/var/lib/lightd/token").exists();
    let out = run_unprivileged(&bin, &tmp.0, &["--config".as_ref(), cfg.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/var/lib/lightd") && err.contains("(storage.state_file)"), "{err}");
    assert!(err.contains(HINT), "{err}");
    assert_eq!(Path::new("/var/lib/lightd/token").exists(), existed, "no token was written");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), json!({"server": {"host": "127.0.0.1", "port": 0}}).to_string());
}

/// The check refuses only what cannot work: the same user with directories it may write
/// starts, serves and writes its token there.
#[test]
fn another_user_with_writable_paths_starts() {
    require_root();
    let tmp = TempDir::new("userok");
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = runnable_copy(&tmp.0);
    let open = tmp.0.join("open");
    std::fs::create_dir(&open).unwrap();
    std::os::unix::fs::chown(&open, Some(65534), Some(65534)).unwrap();
    let cfg = tmp.0.join("config.json");
    let config = json!({
        "server": {"host": "127.0.0.1", "port": 0},
        "sftp": {"host": "127.0.0.1", "port": 0},
        "docker": {"socket_path": "/nonexistent/docker.sock"},
        "storage": {"state_file": open.join("state/state.json"), "data_path": open.join("data")},
        "volumes": {"base_path": open.join("volumes"), "quota": "none"},
        "backups": {"path": open.join("backups")},
    });
    std::fs::write(&cfg, config.to_string()).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log_path = tmp.0.join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .arg(&bin)
        .arg("--config")
        .arg(&cfg)
        .current_dir(&tmp.0)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run setpriv (util-linux)");
    let started = wait_for(20, "lightd as uid 65534 to listen, or to exit", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("listening on") {
            return Some(Ok(()));
        }
        child.try_wait().unwrap().map(|status| Err(format!("exited with {status}: {log}")))
    });
    if let Err(why) = started {
        panic!("{why}");
    }
    signal(child.id(), "TERM");
    let status = wait_for(15, "lightd to stop on SIGTERM", || child.try_wait().unwrap());
    let mut log = String::new();
    std::fs::File::open(&log_path).unwrap().read_to_string(&mut log).unwrap();
    assert!(status.success(), "{status}: {log}");
    let token = open.join("state/token");
    let meta = std::fs::metadata(&token).unwrap_or_else(|e| panic!("{}: {e}\n{log}", token.display()));
    assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o600));
    assert!(std::fs::read_to_string(&token).unwrap().starts_with("lightd_"));
}
