//! Outside programs a test runs beside the daemon (Prometheus, a registry): a loopback port
//! of their own, the program killed on drop whatever the outcome, its log kept for the failure
//! message, and plain HTTP GETs to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{raw, wait_for, Resp};

/// A port for a program to listen on: one of this test process's own block (see
/// [`super::ports`]), outside the kernel's ephemeral range, so nothing else takes it before
/// the program binds it (a port probed free and bound again later could be).
pub fn free_port() -> u16 {
    super::port()
}

/// Fails loudly (never skips) when `program` is not installed.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{program} is missing: install the Debian package {package} (`bash scripts/setup.sh` does)")
    })
}

/// A running outside program; killed (and reaped) on drop.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `cmd` with its output in `log`, then waits until `GET ready_path` on `port`
    /// answers `ready_status` (failing with the program's log after `secs`).
    pub fn start(
        name: &'static str,
        mut cmd: Command,
        port: u16,
        log: &Path,
        ready: (&str, u16),
        secs: u64,
    ) -> Service {
        let out = std::fs::File::create(log).expect("service log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut s = Service { name, port, child, log: log.to_path_buf() };
        wait_for(secs, &format!("{name} to answer GET {} on port {port}", ready.0), || {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("{name} exited with {status}: {}", s.log());
            }
            s.try_get(ready.0).filter(|r| r.status == ready.1).map(drop)
        });
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_get(&self, path: &str) -> Option<Resp> {
        raw(self.port, format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).ok()
    }

    /// `GET path`; panics (with the program's log) when it cannot be asked.
    pub fn get(&self, path: &str) -> Resp {
        self.try_get(path).unwrap_or_else(|| panic!("{} did not answer GET {path}: {}", self.name, self.log()))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
    }
}

/// Percent-encodes a query value.
pub fn query_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `program` with `args` (and `stdin` fed in), returning (success, stdout, stderr).
pub fn run(program: &str, args: &[&str], envs: &[(&str, &Path)], stdin: Option<&[u8]>) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("wait");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// Runs `cmd` to its end and returns its output, failing the test when it has not exited
/// within `secs` (it is killed first): a program that should refuse at once (a bad config)
/// but serves instead fails the test rather than hanging it.
pub fn output_within(cmd: &mut Command, secs: u64) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Drained meanwhile, so a chatty program never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the program") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!("{cmd:?} still ran after {secs} s: {}", String::from_utf8_lossy(&err));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Starts Prometheus scraping the daemon on `target` every second, storing into `dir`.
pub fn prometheus(dir: &std::path::Path, target: u16) -> Service {
    let bin = require_program("prometheus", "prometheus");
    let config = dir.join("prometheus.yml");
    let token = super::TOKEN;
    let yml = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: lightd\n    scrape_interval: 1s\n    scrape_timeout: 1s\n\
         \x20   metrics_path: /metrics\n    authorization:\n      credentials: {token}\n\
         \x20   static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
    );
    std::fs::write(&config, yml).unwrap();
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn");
    Service::start("prometheus", cmd, port, &dir.join("prometheus.log"), ("/-/ready", 200), 60)
}
