//! Stopping and starting the host's Docker engine for a test, and leaving it as it was found:
//! the same daemon command line, never a second daemon, and whatever supervises it is used.

use std::process::{Command, Stdio};

use super::wait_for;

pub fn up() -> bool {
    Command::new("docker").arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn dockerd_pids() -> Vec<String> {
    let out = Command::new("pidof").arg("dockerd").output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out).split_whitespace().map(String::from).collect()
}

/// How the engine was running before the test stopped it.
pub struct Engine {
    /// Its command line, to start it again the same way (when nothing supervises it).
    cmdline: Vec<String>,
    /// systemd runs it: `systemctl` stops and starts it.
    systemd: bool,
}

impl Engine {
    /// Stops the running engine and waits until it is gone.
    pub fn stop() -> Engine {
        let pids = dockerd_pids();
        assert_eq!(pids.len(), 1, "exactly one dockerd should run: {pids:?}");
        let pid = pids[0].clone();
        let systemd = Command::new("systemctl")
            .args(["is-active", "--quiet", "docker"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let cmdline: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if systemd {
            assert!(Command::new("systemctl").args(["stop", "docker.socket", "docker"]).status().unwrap().success());
        } else {
            assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        }
        wait_for(90, "dockerd to exit", || (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()));
        Engine { cmdline, systemd }
    }

    /// Starts it again as it ran before (unless something already did), and waits for it.
    pub fn start(&self) {
        if self.systemd {
            assert!(Command::new("systemctl").args(["start", "docker"]).status().unwrap().success());
        } else if dockerd_pids().is_empty() {
            let log =
                std::fs::OpenOptions::new().create(true).append(true).open("/var/log/lightd-dockerd.log").unwrap();
            let (prog, args) = self.cmdline.split_first().expect("the old command line");
            // `setsid -f` puts dockerd in its own session, beyond the test's process group.
            let started = Command::new("setsid")
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
        wait_for(90, "the engine to answer", || up().then_some(()));
        assert_eq!(dockerd_pids().len(), 1, "one dockerd, not two");
    }
}

/// Starts the engine again if the test failed while it was down.
impl Drop for Engine {
    fn drop(&mut self) {
        if !up() {
            self.start();
        }
    }
}
