//! Stopping and starting the host's Docker engine for a test, and leaving it as it was found:
//! the same daemon command line, never a second daemon, and whatever supervises it is used.
//! - systemd: `systemctl stop`/`start` of `docker` (and of `docker.socket` when it was active,
//!   so socket activation cannot bring the engine back early and is there again afterwards);
//! - another supervisor (dockerd's parent is not init): it is frozen (SIGSTOP) while the engine
//!   is down, so it cannot restart dockerd early, and thawed (SIGCONT) to restart it itself;
//! - nothing: dockerd is started again with its old command line, in a session of its own.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{signal, wait_for};

pub fn up() -> bool {
    super::docker_cli().arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The engines running: processes running dockerd that no dockerd started. Not `pidof
/// dockerd`: a starting engine forks helpers (libnetwork's `libnetwork-setkey`, `set-ipv6`
/// and the like), which run dockerd's binary and, until they exec, its command line too.
fn dockerd_pids() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let dockerd: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|c| *c == 0).next().unwrap_or_default();
            argv0.rsplit(|c| *c == b'/').next() == Some(b"dockerd".as_slice())
        })
        .collect();
    let started_by_dockerd = |pid: &u32| parent_of(&pid.to_string()).is_some_and(|p| dockerd.contains(&p));
    dockerd.iter().filter(|pid| !started_by_dockerd(pid)).map(u32::to_string).collect()
}

fn systemd_active(unit: &str) -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", unit])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The parent pid of `pid`, from `/proc/<pid>/stat` (the field after the state).
fn parent_of(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// How the engine was running before the test stopped it.
pub struct Engine {
    /// Its command line, to start it again the same way (when nothing supervises it).
    cmdline: Vec<String>,
    /// systemd runs it: `systemctl` stops and starts it.
    systemd: bool,
    /// `docker.socket` was active (systemd): it is started again too.
    socket: bool,
    /// The supervisor that ran it (its parent, not init), frozen while the engine is down.
    supervisor: Option<u32>,
    /// The supervisor has been thawed (or there was none).
    thawed: bool,
}

impl Engine {
    /// Stops the running engine and waits until it is gone.
    pub fn stop() -> Engine {
        let pids = dockerd_pids();
        assert_eq!(pids.len(), 1, "exactly one dockerd should run: {pids:?}");
        let pid = pids[0].clone();
        let systemd = systemd_active("docker");
        let socket = systemd && systemd_active("docker.socket");
        let supervisor = match systemd {
            true => None,
            false => parent_of(&pid).filter(|p| *p > 1),
        };
        let cmdline: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let engine = Engine { cmdline, systemd, socket, supervisor, thawed: supervisor.is_none() };
        if systemd {
            let units: &[&str] = if socket { &["docker.socket", "docker"] } else { &["docker"] };
            assert!(Command::new("systemctl").arg("stop").args(units).status().unwrap().success());
        } else {
            if let Some(s) = supervisor {
                signal(s, "STOP");
            }
            assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        }
        wait_for(90, "dockerd to exit", || (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()));
        engine
    }

    /// Starts it again as it ran before (unless something already did), and waits for it.
    pub fn start(&mut self) {
        if self.systemd {
            let units: &[&str] = if self.socket { &["docker.socket", "docker"] } else { &["docker"] };
            assert!(Command::new("systemctl").arg("start").args(units).status().unwrap().success());
        } else {
            if let Some(s) = self.supervisor.filter(|_| !self.thawed) {
                self.thawed = true;
                signal(s, "CONT");
                // Its supervisor restarts it; only if it does not within 30 s is it started here.
                let until = Instant::now() + Duration::from_secs(30);
                while dockerd_pids().is_empty() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            if dockerd_pids().is_empty() {
                self.start_alone();
            }
        }
        wait_for(90, "the engine to answer", || up().then_some(()));
        assert_eq!(dockerd_pids().len(), 1, "one dockerd, not two");
    }

    /// Starts dockerd with its old command line in a session of its own.
    fn start_alone(&self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open("/var/log/lightd-dockerd.log").unwrap();
        let (prog, args) = self.cmdline.split_first().expect("the old command line");
        // `setsid -f` puts dockerd in its own session, beyond the test's process group. It
        // inherits no descriptor but its standard three: `flock -x /work/engine.lock cargo test`
        // hands its locked one down, and a dockerd holding it would keep the lock after the test.
        let mut cmd = Command::new("setsid");
        // SAFETY: close_range is async-signal-safe and touches only the child's descriptors.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        let started = cmd
            .arg("-f")
            .arg(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .expect("start dockerd");
        assert!(started.success());
    }
}

/// Starts the engine again if the test failed while it was down, and never leaves its
/// supervisor frozen.
impl Drop for Engine {
    fn drop(&mut self) {
        if !up() {
            self.start();
        }
        if let Some(s) = self.supervisor.filter(|_| !self.thawed) {
            signal(s, "CONT");
        }
    }
}
