//! Images from a real registry (Debian's `docker-registry` on loopback): a server is created
//! from `127.0.0.1:<port>/...` (allowed by `docker.allowed_registries`), its pull shows
//! viewers layer and percent, a few lines a second; a private registry (htpasswd) needs
//! `docker.registry_auth`, whose password never shows in the daemon's log or answers.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::service::{free_port, require_program, run, Service};
use common::*;
use serde_json::{json, Value};

/// A `docker-registry` on 127.0.0.1 with filesystem storage in its own temp dir, and a
/// Docker CLI config of its own (so `docker login` never touches the host's).
struct Registry {
    port: u16,
    host: String,
    cli_config: PathBuf,
    _service: Service,
    _dir: TempDir,
}

impl Registry {
    /// Starts one; with `htpasswd` = (user, password) it wants basic auth.
    fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        let bin = require_program("docker-registry", "docker-registry");
        let dir = TempDir::new("registry");
        let port = free_port();
        let mut yml = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.0.join("data").display()
        );
        let mut ready = 200;
        if let Some((user, password)) = htpasswd {
            require_program("htpasswd", "apache2-utils");
            let (ok, line, err) = run("htpasswd", &["-Bbn", user, password], &[], None);
            assert!(ok, "htpasswd: {err}");
            std::fs::write(dir.0.join("htpasswd"), line.trim()).unwrap();
            let path = dir.0.join("htpasswd");
            yml.push_str(&format!("auth:\n  htpasswd:\n    realm: lightd-test\n    path: {}\n", path.display()));
            ready = 401;
        }
        let config = dir.0.join("config.yml");
        std::fs::write(&config, yml).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&config);
        let service = Service::start("docker-registry", cmd, port, &dir.0.join("registry.log"), ("/v2/", ready), 30);
        let cli_config = dir.0.join("docker-cli");
        std::fs::create_dir_all(&cli_config).unwrap();
        Registry { port, host: format!("127.0.0.1:{port}"), cli_config, _service: service, _dir: dir }
    }

    /// `docker` with this registry's CLI config; panics with its words on failure.
    fn docker(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let (ok, out, err) = run("docker", args, &[("DOCKER_CONFIG", &self.cli_config)], stdin);
        assert!(ok, "docker {args:?}: {err}{out}");
        out
    }

    /// Pushes a new image (the test image plus a layer of random bytes no other image has)
    /// as `<host>/lightd/busybox:<tag>`, and leaves no local copy: lightd must pull it.
    fn push_new(&self, tag: &str, images: &mut Images) -> String {
        let reference = format!("{}/lightd/busybox:{tag}", self.host);
        let builder = format!("lightd-test-build-{}-{tag}", std::process::id());
        images.0.push(reference.clone());
        docker(&["run", "--name", &builder, IMAGE, "dd", "if=/dev/urandom", "of=/blob", "bs=1M", "count=4"]);
        docker(&["commit", &builder, &reference]);
        docker(&["rm", &builder]);
        self.docker(&["push", &reference], None);
        docker(&["rmi", &reference]);
        reference
    }
}

/// A slow link to a registry: a loopback TCP proxy whose answers flow at [`SlowLink::RATE`]
/// bytes a second, so a pull lasts long enough for the engine to report many steps.
struct SlowLink {
    port: u16,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl SlowLink {
    const RATE: f64 = 2.0 * 1024.0 * 1024.0;

    fn to(upstream: u16) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, open) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (stop2, open2) = (Arc::clone(&stop), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::Acquire) {
                    return;
                }
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(("127.0.0.1", upstream))) else { continue };
                let mut tracked = open2.lock().unwrap();
                tracked.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client, server, None));
                std::thread::spawn(move || pipe(s2, c2, Some(SlowLink::RATE)));
            }
        });
        SlowLink { port, stop, open }
    }
}

/// Copies `from` to `to` (at most `rate` bytes a second) until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream, rate: Option<f64>) {
    let started = Instant::now();
    let (mut buf, mut sent) = (vec![0; 16 * 1024], 0usize);
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
        if let Some(rate) = rate {
            let due = std::time::Duration::from_secs_f64(sent as f64 / rate);
            std::thread::sleep(due.saturating_sub(started.elapsed()));
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Images a test pushed or had pulled, removed when it ends (declared before the daemon, so
/// they go after its containers).
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for i in &self.0 {
            let _ = docker_cli().args(["rmi", "-f", i]).output();
        }
    }
}

/// A tag no other test (or run) uses.
fn tag(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

/// Whether `line` is a progress line naming a layer and a percent:
/// `pulling <12 hex>: <phase> <n>%` (possibly more layers after `; `).
fn layer_percent(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("pulling ") else { return false };
    rest.split("; ").any(|part| {
        let Some((layer, state)) = part.split_once(": ") else { return false };
        let percent = state.rsplit(' ').next().and_then(|p| p.strip_suffix('%')).and_then(|p| p.parse::<u8>().ok());
        layer.len() == 12 && layer.bytes().all(|b| b.is_ascii_hexdigit()) && percent.is_some_and(|p| p <= 100)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_come_from_a_local_registry_with_pull_progress() {
    require_docker();
    let registry = Registry::start(None);
    let mut images = Images(Vec::new());
    let first = registry.push_new(&tag("first"), &mut images);
    // The second image is pulled over a slow link (the same registry, another port), so the
    // engine reports many steps: viewers must get them a few a second, not each one.
    let pushed = registry.push_new(&tag("second"), &mut images);
    let link = SlowLink::to(registry.port);
    let slow_host = format!("127.0.0.1:{}", link.port);
    let second = pushed.replacen(&registry.host, &slow_host, 1);
    images.0.push(second.clone());
    let host = registry.host.clone();
    let d = Daemon::start_with(|c| c["docker"] = json!({"allowed_registries": [host, slow_host]}));

    // Only the allowed registry: Docker Hub and another port are refused before any pull.
    let (vol, _) = d.new_volume();
    for other in [IMAGE.to_string(), format!("127.0.0.1:{}/lightd/busybox:x", free_port())] {
        let body = json!({"internal_id": d.id("refused"), "image": other, "volume_id": vol, "startup_command": "true"});
        let r = d.call("POST", "/containers", Some(body));
        assert_eq!(r.status, 400, "{other}: {}", r.body);
        assert!(r.error().contains("docker.allowed_registries"), "{}", r.body);
    }

    // Created from the registry: pulled, installed, running.
    let id = d.id("pulled");
    let body = json!({
        "internal_id": id, "image": first, "volume_id": vol,
        "startup_command": "echo server up; exec sleep 600", "start_pattern": "server up",
        "install_script": "echo installed from the registry",
    });
    let r = d.call("POST", "/containers", Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    let rec = d.wait_installed(&id, 120);
    assert_eq!(rec["install_state"], "ready", "{rec}");
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 30);
    let image_of = || docker(&["inspect", "-f", "{{.Config.Image}}", &format!("lightd-{id}")]).trim().to_string();
    assert_eq!(image_of(), first);

    // A viewer watches a reinstall from the other image: the pull in a few lines a second,
    // each naming a layer and a percent.
    let mut ws = ws::open(&d, &id).await;
    let asked = Instant::now();
    let r = d.call("POST", &format!("/containers/{id}/reinstall"), Some(json!({"image": second})));
    assert_eq!(r.status, 202, "{}", r.body);
    let mut output = Vec::new();
    loop {
        let f = ws::next(&mut ws).await;
        match (f["event"].as_str(), f["args"][0].as_str()) {
            (Some("install output"), Some(line)) => output.push(line.to_string()),
            (Some("event"), Some("Ready")) => break,
            (Some("event"), Some("Error")) => panic!("the reinstall failed: {output:?} {}", d.record(&id)),
            _ => {}
        }
    }
    let elapsed = asked.elapsed().as_secs_f64();
    let start = output.iter().position(|l| *l == format!("Pulling image {second}")).expect("pull announced");
    let end = output.iter().position(|l| l.starts_with(&format!("pulled {second} (sha256:"))).expect("pull done");
    let pull = &output[start..=end];
    assert!(pull.iter().any(|l| layer_percent(l)), "a line with layer and percent: {pull:?}");
    let partial = pull.iter().filter(|l| l.contains(": downloading ") && !l.contains(" 100%")).count();
    assert!(partial >= 2, "the download is shown as it goes: {pull:?}");
    assert!(
        pull[1..pull.len() - 1].iter().all(|l| layer_percent(l)),
        "every line between is a progress line: {pull:?}"
    );
    // Lines go out at least 250 ms apart: never more than 4 a second over the whole reinstall
    // (the engine reports up to 10 a second per layer and phase).
    assert!(pull.len() as f64 <= 4.0 * elapsed + 1.0, "{} lines in {elapsed:.2} s: {pull:?}", pull.len());
    assert!(output.contains(&"installed from the registry".to_string()), "{output:?}");
    d.wait_state(&id, "running", 30);
    assert_eq!(image_of(), second, "the server runs the new image");
    assert_eq!(d.record(&id)["image"], json!(second));
}

/// Rewrites the daemon's `docker.registry_auth` and restarts it.
fn set_registry_auth(d: &mut Daemon, auth: Value) {
    d.stop();
    let mut config: Value = serde_json::from_slice(&std::fs::read(&d.config).unwrap()).unwrap();
    config["docker"]["registry_auth"] = auth;
    std::fs::write(&d.config, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    d.spawn();
}

#[test]
fn a_private_registry_needs_registry_auth() {
    require_docker();
    let password = format!("pw-{}-Zq9x7Lk", std::process::id());
    let registry = Registry::start(Some(("lightd", &password)));
    let host = registry.host.clone();
    registry.docker(&["login", &host, "-u", "lightd", "--password-stdin"], Some(password.as_bytes()));
    let mut images = Images(Vec::new());
    let image = registry.push_new(&tag("private"), &mut images);
    registry.docker(&["logout", &host], None);
    assert!(!std::fs::read_to_string(registry.cli_config.join("config.json")).unwrap_or_default().contains(&host));

    let mut d = Daemon::start();
    let (vol, _) = d.new_volume();
    let id = d.id("private");
    let body = json!({"internal_id": id, "image": image, "volume_id": vol, "startup_command": "exec sleep 600"});
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);

    // Without credentials: the install fails and says the registry wants them.
    let rec = d.wait_installed(&id, 120);
    assert_eq!((rec["install_state"].as_str(), rec["state"].as_str()), (Some("failed"), Some("offline")), "{rec}");
    let error = rec["error"].as_str().unwrap_or_default();
    assert!(error.contains("registry authentication failed"), "{error}");
    assert!(error.contains(&format!("{host} wants credentials; set docker.registry_auth")), "{error}");

    // A wrong password: refused, and said so.
    set_registry_auth(&mut d, json!({ &host: {"username": "lightd", "password": "not-the-password"} }));
    assert_eq!(d.call("POST", &format!("/containers/{id}/reinstall"), None).status, 202);
    let rec = wait_for(120, "the reinstall to fail", || {
        Some(d.record(&id)).filter(|r| r["error"].as_str().is_some_and(|e| e.contains("Reinstall failed")))
    });
    assert!(rec["error"].as_str().unwrap().contains("refused the credentials in docker.registry_auth"), "{rec}");

    // The right ones: installed and running.
    set_registry_auth(&mut d, json!({ &host: {"username": "lightd", "password": password} }));
    assert_eq!(d.call("POST", &format!("/containers/{id}/reinstall"), None).status, 202);
    let rec = wait_for(120, "the install with credentials", || {
        Some(d.record(&id)).filter(|r| r["install_state"] == "ready" && r["error"].is_null())
    });
    assert_eq!(rec["image"], json!(image));
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 30);

    // The password is nowhere lightd speaks or writes, but in its config.
    let record = d.get(&format!("/containers/{id}")).body;
    let metrics = d.get("/metrics").body;
    let state = std::fs::read_to_string(d.dir.0.join("state.json")).unwrap();
    let log = d.log();
    for (what, text) in [("log", &log), ("record", &record), ("metrics", &metrics), ("state", &state)] {
        assert!(!text.contains(&password), "the password is in the daemon's {what}: {text}");
        assert!(!text.contains("not-the-password"), "the wrong password is in the daemon's {what}");
    }
    let check = Command::new(bin()).arg("--check-config").arg("--config").arg(&d.config).output().unwrap();
    assert!(check.status.success());
    assert!(!String::from_utf8_lossy(&check.stdout).contains(&password));
}
