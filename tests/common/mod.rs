//! Test bed: starts the real `lightd` binary with its own temp directory on a port it picks
//! itself, and speaks raw HTTP/1.1 to it, so every header and byte is under the test's
//! control. Every daemon has a deadline (a hung test fails, it never hangs the suite), and
//! whatever it made on the engine is removed when it is dropped, whatever the outcome.
#![allow(dead_code)]

pub mod bombs;
pub mod engine;
pub mod firewall;
pub mod jobs;
pub mod netns;
pub mod service;
pub mod ws;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const TOKEN: &str = "lightd_0123456789abcdef0123456789abcdef";
pub const IMAGE: &str = "lightd-test/busybox";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop (mounts under it first).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("lightd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        live().dirs.push(p.clone());
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_tree(&self.0);
        live().dirs.retain(|d| d != &self.0);
    }
}

/// Whatever a test process has made that must not outlive it: temp dirs (with the state file
/// naming the instance whose containers are to go) and daemon processes. A test that runs past
/// its deadline ends the process without unwinding; the watchdog leaves this list to a cleanup
/// that runs once the process is gone.
#[derive(Default)]
struct Live {
    dirs: Vec<PathBuf>,
    pids: Vec<u32>,
}

fn live() -> std::sync::MutexGuard<'static, Live> {
    static LIVE: std::sync::Mutex<Live> = std::sync::Mutex::new(Live { dirs: Vec::new(), pids: Vec::new() });
    LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes `dir` after unmounting what is mounted below it.
fn remove_tree(dir: &Path) {
    unmount_under(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// The mount points below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&prefix)).map(String::from).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points
}

/// For a test process about to exit without unwinding (past its deadline): a detached shell
/// that waits until this process is gone, then kills every daemon it started, removes their
/// containers, unmounts and removes every temp dir. It runs after the exit, so nothing the
/// cleanup does (a daemon's socket closing) can let the overdue test finish and pass first.
fn clean_up_after_exit() {
    let Live { dirs, pids } = std::mem::take(&mut *live());
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut script = format!("while kill -0 {} 2>/dev/null; do sleep 0.05; done\n", std::process::id());
    for pid in pids {
        script.push_str(&format!("kill -9 {pid} 2>/dev/null\n"));
    }
    for dir in &dirs {
        let instance = std::fs::read(dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["instance"].as_str().map(String::from));
        if let Some(i) = instance {
            let filter = quote(&format!("label=lightd.instance={i}"));
            script.push_str(&format!(
                "ids=$(docker ps -aq --filter {filter}); [ -z \"$ids\" ] || docker rm -f $ids >/dev/null 2>&1\n"
            ));
            script.push_str(&format!("nft delete table inet {} 2>/dev/null\n", firewall_table(&i)));
        }
    }
    for dir in &dirs {
        for m in mounts_under(dir) {
            script.push_str(&format!("umount -l {} 2>/dev/null\n", quote(&m)));
        }
        script.push_str(&format!("rm -rf {}\n", quote(&dir.display().to_string())));
    }
    use std::os::unix::process::CommandExt;
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

/// Unmounts every mount point below `dir` (volume images), deepest first.
pub fn unmount_under(dir: &Path) {
    for p in mounts_under(dir) {
        let _ = Command::new("umount").args(["-l", &p]).status();
    }
}

/// Host ports for containers to publish: a block of its own per test process, outside the
/// kernel's ephemeral range, so nothing else takes them between allocation and use. The block
/// is held with a lock file for the life of the process, so two test processes running at the
/// same time (two checkouts, two binaries) never share one; no port is probed and then used.
pub fn ports(n: u16) -> Vec<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const BLOCK: u16 = 300;
    let base = 12_000 + port_block() * BLOCK;
    let first = NEXT.fetch_add(n, Ordering::Relaxed);
    assert!(first + n <= BLOCK, "this test process used more than {BLOCK} ports");
    (first..first + n).map(|i| base + i).collect()
}

/// The index (0..60) of the port block this process holds, taken on first use: the first free
/// one from `pid % 60` on, held by an exclusive `flock` on `/tmp/lightd-test-ports/<i>.lock`
/// (released by the kernel when the process ends, however it ends).
fn port_block() -> u16 {
    static BLOCK: std::sync::OnceLock<(u16, std::fs::File)> = std::sync::OnceLock::new();
    const BLOCKS: u16 = 60;
    BLOCK
        .get_or_init(|| {
            use std::os::fd::AsRawFd;
            let dir = Path::new("/tmp/lightd-test-ports");
            std::fs::create_dir_all(dir).expect("the port lock directory");
            let start = (std::process::id() % u32::from(BLOCKS)) as u16;
            for k in 0..BLOCKS {
                let i = (start + k) % BLOCKS;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(format!("{i}.lock")))
                    .expect("a port lock file");
                // SAFETY: flock on a file descriptor this function owns.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    return (i, file);
                }
            }
            panic!("all {BLOCKS} port blocks are held by other test processes");
        })
        .0
}

pub fn port() -> u16 {
    ports(1)[0]
}

/// Starts `cmd` in a session of its own, as a service manager starts a daemon, at `nice`
/// (0: as this process). With the kernel's autogroup scheduling (on by default) every session
/// shares one CPU weight, so a server started in the client's session would share its CPU
/// with the client loading it.
pub fn own_session(cmd: &mut Command, nice: i32) -> &mut Command {
    // SAFETY: setsid and setpriority are async-signal-safe and touch nothing of the parent's;
    // every thread the program starts inherits the priority.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            libc::setsid();
            if nice != 0 {
                libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            }
            Ok(())
        })
    }
}

/// The daemon under test: this build's, or `LIGHTD_BIN` (to run the tests against another
/// build, e.g. to show a test fails on the code before a fix).
pub fn bin() -> String {
    std::env::var("LIGHTD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_lightd").to_string())
}

/// A config pointing every path into `dir`; the daemon picks its own port.
pub fn config_for(dir: &Path) -> Value {
    json!({
        "server": {"host": "127.0.0.1", "port": 0},
        // Every test daemon shares this machine's disk: the room check (volumes.overcommit
        // false, the default) has its own test in tests/hardening.rs.
        "volumes": {"base_path": dir.join("volumes"), "overcommit": true},
        "storage": {"state_file": dir.join("state.json"), "data_path": dir.join("data")},
        "backups": {"path": dir.join("backups")},
        "containers": {"default_network": "lightd-test-net", "cleanup_timeout": 3},
        "authorization": {"token": TOKEN},
        // Each test daemon's SFTP server on a port of its own (see `sftp_port`).
        "sftp": {"enabled": true, "host": "127.0.0.1", "port": 0},
    })
}

/// Seconds a test may run before the whole test process is stopped with a report
/// (`LIGHTD_TEST_DEADLINE` changes it). Only tests have a deadline by default: the bench
/// programs share this file (built without `cfg(test)`) and a soak runs as long as it is told.
fn deadline_secs() -> Option<u64> {
    let set = std::env::var("LIGHTD_TEST_DEADLINE").ok().and_then(|s| s.parse().ok());
    set.or(cfg!(test).then_some(600))
}

/// A running daemon; killed on drop, and everything it made on the engine removed.
pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    pub config: PathBuf,
    /// Prefix of every internal id a test makes here.
    pub prefix: String,
    /// Set when the test ends, so the watchdog stands down.
    done: Arc<AtomicBool>,
    /// Environment variables the daemon is started with (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
    /// The daemon's CPU priority (a nice value for it and its session's autogroup); benches
    /// set the one `dist/lightd.service` gives it, tests leave 0.
    pub nice: i32,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(|_| {})
    }

    /// Starts with the test config after `tweak` edits it.
    pub fn start_with(tweak: impl FnOnce(&mut Value)) -> Daemon {
        let mut d = Daemon::prepare(tweak);
        d.spawn();
        d
    }

    /// Writes the config (after `tweak`) without starting the daemon yet.
    pub fn prepare(tweak: impl FnOnce(&mut Value)) -> Daemon {
        raise_nofile();
        let dir = TempDir::new("daemon");
        let mut cfg = config_for(&dir.0);
        tweak(&mut cfg);
        let config = dir.0.join("config.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("t{}x{n}", std::process::id());
        let done = Arc::new(AtomicBool::new(false));
        watchdog(Arc::clone(&done), dir.0.join("daemon.log"));
        Daemon { child: None, port: 0, dir, config, prefix, done, env: Vec::new(), nice: 0 }
    }

    /// Starts the binary and waits until it answers; its port is read from its log, or from
    /// the config when it names one (a `log.level` above `info` hides the listening line).
    pub fn spawn(&mut self) {
        let log_path = self.dir.0.join("daemon.log");
        let before = std::fs::read_to_string(&log_path).map(|s| s.len()).unwrap_or(0);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let configured = std::fs::read(&self.config)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|c| c["server"]["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        let nice = self.nice;
        let child = own_session(&mut Command::new(bin()), nice)
            .arg("--config")
            .arg(&self.config)
            // Only a test that binds a notification socket gets one, never the runner's own.
            .env_remove("NOTIFY_SOCKET")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start lightd");
        live().pids.push(child.id());
        if nice != 0 {
            // Autogroup scheduling weighs the session against the others by this value.
            std::fs::write(format!("/proc/{}/autogroup", child.id()), nice.to_string())
                .expect("set the autogroup's nice");
        }
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if let Some(port) = log.get(before..).and_then(listening_port).or(configured) {
                self.port = port;
                if self
                    .try_raw(b"GET /api/v1/public/ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .is_ok_and(|r| r.status == 200)
                {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("lightd exited with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "lightd did not answer within 20 s: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM and wait: the graceful path. The daemon must exit 0 within 15 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _gone = Forget(c.id());
            signal(c.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = c.try_wait() {
                    assert!(status.success(), "lightd exited with {status} after SIGTERM: {}", self.log());
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("lightd did not stop on SIGTERM within 15 s: {}", self.log());
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _gone = Forget(c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn state(&self) -> Value {
        let bytes = std::fs::read(self.dir.0.join("state.json")).expect("state.json exists");
        serde_json::from_slice(&bytes).expect("state.json is valid JSON")
    }

    /// The daemon's instance id: the label on every container it makes.
    pub fn instance(&self) -> String {
        self.state()["instance"].as_str().expect("instance in state.json").to_string()
    }

    pub fn try_raw(&self, request: &[u8]) -> std::io::Result<Resp> {
        raw(self.port, request)
    }

    /// An authenticated JSON request.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call_with(method, path, body, &[("Authorization", &format!("Bearer {TOKEN}"))])
    }

    /// A JSON request with exactly these extra headers.
    pub fn call_with(&self, method: &str, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Resp {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(&body);
        raw(self.port, &bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }

    /// `POST /containers/:id/<action>`, returning the status.
    pub fn act(&self, id: &str, action: &str) -> u16 {
        self.call("POST", &format!("/containers/{id}/{action}"), None).status
    }

    /// The record of `id`.
    pub fn record(&self, id: &str) -> Value {
        let r = self.get(&format!("/containers/{id}"));
        assert_eq!(r.status, 200, "GET /containers/{id}: {}", r.body);
        r.json()
    }

    /// Waits until the power state of `id` is `want`; returns the record.
    pub fn wait_state(&self, id: &str, want: &str, secs: u64) -> Value {
        wait_for(secs, &format!("{id} to be {want}"), || Some(self.record(id)).filter(|v| v["state"] == want))
    }

    /// An internal id unique to this daemon.
    pub fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Writes a file into a volume by the files API, as raw bytes (`call` sends JSON only).
    pub fn put_file(&self, vol: &str, path: &str, body: &[u8]) {
        let head = format!(
            "PUT /volumes/{vol}/files/content?path={path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        let r = raw(self.port, &bytes).unwrap();
        assert!(r.status == 200 || r.status == 201, "PUT {path}: {} {}", r.status, r.body);
    }

    pub fn new_volume(&self) -> (String, PathBuf) {
        let r = self.call("POST", "/volumes", None);
        assert_eq!(r.status, 201, "{}", r.body);
        let v = r.json();
        (v["volume_id"].as_str().unwrap().to_string(), PathBuf::from(v["path"].as_str().unwrap()))
    }

    pub fn add_port(&self, ip: &str, port: u16, protocol: &str) {
        let r = self.call("POST", "/network/ports", Some(json!({"ip": ip, "port": port, "protocol": protocol})));
        assert_eq!(r.status, 201, "{}", r.body);
    }

    /// Creates container `name` on a new volume running `command`, with `extra` fields
    /// merged into the body; asserts the `202` and returns the internal id.
    pub fn create_container(&self, name: &str, command: &str, extra: Value) -> String {
        let (vol, _) = self.new_volume();
        let id = self.id(name);
        let mut body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol, "startup_command": command});
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let r = self.call("POST", "/containers", Some(body));
        assert_eq!(r.status, 202, "{}", r.body);
        id
    }

    /// Like `create_container`, then waits until the install is `ready`.
    pub fn ready_container(&self, name: &str, command: &str, extra: Value) -> String {
        let id = self.create_container(name, command, extra);
        let rec = self.wait_installed(&id, 120);
        assert_eq!(rec["install_state"], "ready", "{rec}");
        id
    }

    /// The record of `id`, waiting until its install leaves `installing`.
    pub fn wait_installed(&self, id: &str, secs: u64) -> Value {
        wait_for(secs, &format!("{id} to finish installing"), || {
            Some(self.record(id)).filter(|v| v["install_state"] != "installing")
        })
    }

    /// Docker containers this daemon made (by its instance label), as (id, name, running).
    pub fn containers(&self) -> Vec<(String, String, bool)> {
        let filter = match self.state_instance() {
            Some(i) => format!("label=lightd.instance={i}"),
            // A build from before instance labels: its servers by name.
            None => format!("name=^/lightd-{}-", self.prefix),
        };
        docker(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}} {{.State}}", "--filter", &filter])
            .lines()
            .filter_map(|l| {
                let mut it = l.split(' ');
                Some((it.next()?.to_string(), it.next()?.to_string(), it.next()? == "running"))
            })
            .collect()
    }

    /// Names of the Docker containers this daemon made.
    pub fn docker_names(&self) -> Vec<String> {
        self.containers().into_iter().map(|c| c.1).collect()
    }

    /// A metric's value from `/metrics`.
    pub fn metric(&self, name_and_labels: &str) -> Option<u64> {
        metric(&self.get("/metrics").body, name_and_labels)
    }

    /// Waits until the console of `id` has printed `line` (within the last 100 lines).
    pub fn wait_line(&self, id: &str, line: &str) {
        wait_for(30, &format!("{line:?} in the console of {id}"), || {
            let lines = self.get(&format!("/containers/{id}/logs?tail=100")).json()["lines"].clone();
            lines.as_array()?.iter().any(|l| l == line).then_some(())
        });
    }

    /// Open Docker streams of `kind` for `id` (from `/metrics`).
    pub fn streams(&self, id: &str, kind: &str) -> u64 {
        self.metric(&format!("lightd_docker_streams{{kind=\"{kind}\",container=\"{id}\"}}")).unwrap_or(0)
    }
}

/// Takes a daemon's pid off the list of processes to kill once it has been reaped.
struct Forget(u32);

impl Drop for Forget {
    fn drop(&mut self) {
        live().pids.retain(|p| *p != self.0);
    }
}

/// The port in the daemon's "sftp serving on 127.0.0.1:PORT" line.
pub fn sftp_port(log: &str) -> Option<u16> {
    let rest = log.split("sftp serving on ").nth(1)?;
    rest.split_whitespace().next()?.rsplit(':').next()?.parse().ok()
}

/// The port in the daemon's "listening on 127.0.0.1:PORT" line.
pub fn listening_port(log: &str) -> Option<u16> {
    let rest = log.split("listening on ").nth(1)?;
    rest.split_whitespace().next()?.rsplit(':').next()?.parse().ok()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        self.kill9();
        if std::thread::panicking() || std::env::var_os("LIGHTD_KEEP_LOGS").is_some() {
            // Keep the daemon's log of a failed test (the temp dir goes).
            let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.daemon.log", self.prefix));
            if std::fs::copy(self.dir.0.join("daemon.log"), &keep).is_ok() {
                eprintln!("daemon log kept at {}", keep.display());
            }
        }
        match self.state_instance() {
            Some(instance) => {
                remove_labelled(&format!("label=lightd.instance={instance}"));
                // The firewall rules it left (a killed daemon keeps them, as it should).
                let _ = Command::new("nft").args(["delete", "table", "inet", &firewall_table(&instance)]).output();
            }
            None => remove_labelled(&format!("name=^/lightd-{}-", self.prefix)),
        }
    }
}

/// The nftables table of the daemon whose instance id is `instance` (`lightd_` and its first
/// 12 hex digits, as `lightd::firewall::Firewall::new` names it).
pub fn firewall_table(instance: &str) -> String {
    let hex: String = instance.chars().filter(char::is_ascii_hexdigit).take(12).collect();
    format!("lightd_{hex}")
}

impl Daemon {
    fn state_instance(&self) -> Option<String> {
        let bytes = std::fs::read(self.dir.0.join("state.json")).ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        v["instance"].as_str().map(String::from)
    }
}

/// Stops the whole test process when a test outlives its deadline, saying which one: a hung
/// test fails loudly instead of hanging the suite.
fn watchdog(done: Arc<AtomicBool>, log: PathBuf) {
    let name = std::thread::current().name().unwrap_or("a test").to_string();
    let Some(secs) = deadline_secs() else { return };
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if done.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let tail: String =
            std::fs::read_to_string(&log).unwrap_or_default().lines().rev().take(40).collect::<Vec<_>>().join("\n");
        // Straight to the stderr handle: `eprintln!` in a thread spawned by a test is captured
        // with the test's output, which is never shown when the process exits here.
        let _ =
            writeln!(std::io::stderr(), "\n{name} ran past its {secs} s deadline; daemon log (newest first):\n{tail}");
        // Exiting skips every Drop: what the daemons made is removed once this process is gone.
        clean_up_after_exit();
        std::process::exit(101);
    });
}

/// Longest any one `docker` command of the tests may take.
pub const DOCKER_DEADLINE_SECS: u64 = 180;

/// The `docker` command, killed past [`DOCKER_DEADLINE_SECS`] (coreutils' `timeout`): an
/// engine that stops answering (Debian's 20.10 once deadlocked in libnetwork under load) fails
/// the test with docker's exit status 124 in minutes, instead of hanging the run to CI's limit.
pub fn docker_cli() -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=10", &DOCKER_DEADLINE_SECS.to_string(), "docker"]);
    cmd
}

/// Force-removes every Docker container matching `filter` (`label=k=v`, `name=...`).
pub fn remove_labelled(filter: &str) {
    let out = docker_cli().args(["ps", "-aq", "--filter", filter]).output();
    if let Ok(out) = out {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let _ = docker_cli().args(["rm", "-f"]).args(&ids).output();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// Lets this test process open as many sockets as the hard limit allows (1000 viewers).
pub fn raise_nofile() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = lightd::rlimit::raise_nofile();
    });
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `error` sentence of an error body.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {}", self.body)).to_string()
    }
}

/// `POST /volumes/:v/backups/upload` of `body` as `content_type`, on a raw connection.
pub fn upload_backup(port: u16, vol: &str, content_type: &str, body: &[u8]) -> Resp {
    let head = format!(
        "POST /volumes/{vol}/backups/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    raw(port, &bytes).unwrap()
}

/// Sends `request` bytes and reads the response until the server closes.
pub fn raw(port: u16, request: &[u8]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(90)))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> std::io::Result<Resp> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other(format!("no response head in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Ok(Resp { status, headers, body })
}

/// Undoes chunked encoding; a malformed or cut chunk is an error, never a shorter body.
fn dechunk(mut s: &str) -> std::io::Result<String> {
    let bad = |what: &str| std::io::Error::other(format!("bad chunked body: {what}"));
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").ok_or_else(|| bad("no chunk size line"))?;
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad(&format!("chunk size {size:?}")))?;
        if n == 0 {
            return Ok(out);
        }
        let data = rest.get(..n).ok_or_else(|| bad("chunk shorter than its size"))?;
        out.push_str(data);
        s = rest[n..].strip_prefix("\r\n").ok_or_else(|| bad("no CRLF after a chunk"))?;
    }
}

/// Runs `docker` with `args` and returns its stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = docker_cli().args(args).stderr(Stdio::piped()).output().expect("run docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker inspect` of one container, `None` when it does not exist.
pub fn inspect(name: &str) -> Option<Value> {
    let out = docker_cli().args(["inspect", name]).output().expect("run docker");
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0).cloned()
}

/// Fails loudly (never skips) when the engine or the test image is missing.
pub fn require_docker() {
    let ok = docker_cli().args(["image", "inspect", IMAGE]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        matches!(ok, Ok(s) if s.success()),
        "Docker engine or image {IMAGE} missing: run `bash scripts/setup.sh` (the README's test command does)"
    );
}

/// Polls `f` until it returns `Some`, or panics after `secs` with `what`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The seed of a randomized test: `LIGHTD_SEED` replays one; otherwise one from the clock.
/// Printed either way, so a failing run can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("LIGHTD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("{test}: seed {seed} (LIGHTD_SEED={seed} replays it)");
    seed
}

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What reading an attach stream found.
#[derive(Debug, PartialEq)]
pub enum Line {
    Text(String),
    /// The server ended the stream.
    End,
}

/// A streaming `POST /containers/:id/attach` session read line by line.
pub struct AttachSession {
    reader: std::io::BufReader<TcpStream>,
    pending: String,
    pub lines: std::collections::VecDeque<String>,
}

impl AttachSession {
    pub fn open(port: u16, id: &str) -> AttachSession {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Reads wait at most this long: a silent stream is reported, never mistaken for an end.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let req = format!(
            "POST /containers/{id}/attach HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
        );
        (&s).write_all(req.as_bytes()).unwrap();
        let mut reader = std::io::BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            if l == "\r\n" || l.is_empty() {
                break;
            }
            head.push_str(&l);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/plain"), "{head}");
        AttachSession { reader, pending: String::new(), lines: Default::default() }
    }

    /// The next line, or `End` when the server ended the stream; panics when nothing came
    /// within 30 s or the chunked encoding is broken.
    pub fn next_line(&mut self) -> Line {
        while self.lines.is_empty() {
            let mut size = String::new();
            match self.reader.read_line(&mut size) {
                Ok(0) => return Line::End,
                Ok(_) => {}
                Err(e) => panic!("attach stream: nothing within 30 s ({e})"),
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
            if n == 0 {
                return Line::End;
            }
            let mut data = vec![0; n + 2];
            self.reader.read_exact(&mut data).unwrap_or_else(|e| panic!("attach stream cut mid-chunk: {e}"));
            assert_eq!(&data[n..], b"\r\n", "chunk not followed by CRLF");
            self.pending.push_str(&String::from_utf8_lossy(&data[..n]));
            while let Some(i) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=i).collect();
                self.lines.push_back(line.trim_end_matches('\n').to_string());
            }
        }
        Line::Text(self.lines.pop_front().unwrap_or_default())
    }

    /// The next text line; panics if the stream ended instead.
    pub fn text(&mut self) -> String {
        match self.next_line() {
            Line::Text(t) => t,
            Line::End => panic!("the attach stream ended"),
        }
    }
}

/// The value of a Prometheus sample line `name{labels} value` in `metrics`.
pub fn metric(metrics: &str, name_and_labels: &str) -> Option<u64> {
    metrics.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.parse().ok())
}
