//! Test bed: starts the real `lightd` binary on a free port with its own temp directory and
//! speaks raw HTTP/1.1 to it, so every header and byte is under the test's control.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const TOKEN: &str = "lightd_0123456789abcdef0123456789abcdef";
pub const IMAGE: &str = "lightd-test/busybox";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("lightd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lightd")
}

/// A config pointing every path into `dir`, listening on `port`.
pub fn config_for(dir: &Path, port: u16) -> Value {
    json!({
        "server": {"host": "127.0.0.1", "port": port},
        "volumes": {"base_path": dir.join("volumes")},
        "storage": {"state_file": dir.join("state.json"), "data_path": dir.join("data")},
        "containers": {"default_network": "lightd-test-net", "cleanup_timeout": 3},
        "authorization": {"token": TOKEN},
    })
}

/// A running daemon; killed on drop.
pub struct Daemon {
    /// Prefix of every internal id a test makes here, so its Docker leftovers can be found.
    pub prefix: String,
    pub child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    pub config: PathBuf,
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
        let dir = TempDir::new("daemon");
        let port = free_port();
        let mut cfg = config_for(&dir.0, port);
        tweak(&mut cfg);
        let config = dir.0.join("config.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("t{}x{n}", std::process::id());
        Daemon { prefix, child: None, port, dir, config }
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.0.join("daemon.log")).unwrap();
        let child = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start lightd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) =
                self.try_raw("GET /api/v1/public/ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".as_bytes())
            {
                if r.status == 200 {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("lightd exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("lightd did not answer within 20 s: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("daemon.log")).unwrap_or_default()
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("lightd did not stop on SIGTERM within 15 s");
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
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

    /// An internal id unique to this daemon.
    pub fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub fn new_volume(&self) -> (String, PathBuf) {
        let v = self.call("POST", "/volumes", None).json();
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
        assert_eq!(self.wait_installed(&id, 120)["install_state"], "ready");
        id
    }

    /// The record of `id`, waiting until its install leaves `installing`.
    pub fn wait_installed(&self, id: &str, secs: u64) -> Value {
        wait_for(secs, &format!("{id} to finish installing"), || {
            let r = self.get(&format!("/containers/{id}"));
            assert_eq!(r.status, 200, "{}", r.body);
            let v = r.json();
            (v["install_state"] != "installing").then_some(v)
        })
    }

    /// Names of Docker containers (running or not) that belong to this daemon's tests.
    pub fn docker_names(&self) -> Vec<String> {
        docker(&["ps", "-a", "--format", "{{.Names}}", "--filter", &format!("name=^/lightd-{}-", self.prefix)])
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        remove_containers(&format!("lightd-{}-", self.prefix));
    }
}

/// Force-removes every Docker container whose name starts with `prefix`.
pub fn remove_containers(prefix: &str) {
    let out = Command::new("docker").args(["ps", "-aq", "--filter", &format!("name=^/{prefix}")]).output();
    if let Ok(out) = out {
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).output();
        }
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
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

/// Sends `request` bytes and reads the response until the server closes.
pub fn raw(port: u16, request: &[u8]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
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
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Ok(Resp { status, headers, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Runs `docker` with `args` and returns its stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).stderr(Stdio::piped()).output().expect("run docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails loudly (never skips) when the engine or the test image is missing.
pub fn require_docker() {
    let ok =
        Command::new("docker").args(["image", "inspect", IMAGE]).stdout(Stdio::null()).stderr(Stdio::null()).status();
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

/// A streaming `POST /containers/:id/attach` session read line by line.
pub struct AttachSession {
    reader: std::io::BufReader<TcpStream>,
    pending: String,
    pub lines: std::collections::VecDeque<String>,
}

impl AttachSession {
    pub fn open(port: u16, id: &str) -> AttachSession {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let req = format!(
            "POST /containers/{id}/attach HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = std::io::BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut l = String::new();
            use std::io::BufRead;
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

    /// The next line, waiting for it; `None` when the server ended the stream.
    pub fn next_line(&mut self) -> Option<String> {
        use std::io::BufRead;
        while self.lines.is_empty() {
            let mut size = String::new();
            if self.reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                return None;
            }
            let mut data = vec![0; n + 2];
            self.reader.read_exact(&mut data).ok()?;
            self.pending.push_str(&String::from_utf8_lossy(&data[..n]));
            while let Some(i) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=i).collect();
                self.lines.push_back(line.trim_end_matches('\n').to_string());
            }
        }
        self.lines.pop_front()
    }
}

/// The value of a Prometheus sample line `name{labels} value` in `metrics`.
pub fn metric(metrics: &str, name_and_labels: &str) -> Option<u64> {
    metrics.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.parse().ok())
}
