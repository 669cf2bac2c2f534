//! Shared by the bench programs: load generation, percentiles, process figures, the
//! docs/benchmarks.md writer, and many ready containers at once.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::common::*;

/// A free port for a program of the bench's own (the baseline server), picked by the kernel.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(18080)
}

/// `p` (0-100) percentile of sorted `v`.
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p / 100.0).round() as usize]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Resident memory of `pid`, bytes.
pub fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// Where a process's resident memory is, bytes (from `/proc/<pid>/smaps`).
#[derive(Default, Clone, Copy)]
pub struct MemSplit {
    /// Heap, stacks: what only this process holds.
    pub anon: u64,
    /// Pages of its own executable (code, read-only data) mapped in.
    pub binary: u64,
    /// Pages of shared libraries (libc, libm...) mapped in; every process using them maps the same.
    pub libs: u64,
    /// Proportional set size: shared pages divided among the processes mapping them.
    pub pss: u64,
}

pub fn mem_split(pid: u32) -> MemSplit {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    let mut m = MemSplit::default();
    let (mut path, mut rss) = (String::new(), 0);
    let kb = |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024;
    for line in smaps.lines() {
        let field = line.split_whitespace().next().unwrap_or("");
        if !field.ends_with(':') {
            // A mapping's header: `start-end perms offset dev inode [path]`.
            path = line.split_whitespace().nth(5).unwrap_or("").to_string();
            continue;
        }
        match field {
            "Rss:" => rss = kb(line),
            "Pss:" => m.pss += kb(line),
            "Anonymous:" => {
                let anon = kb(line);
                m.anon += anon;
                let file = rss.saturating_sub(anon);
                if path == exe {
                    m.binary += file;
                } else if path.starts_with('/') {
                    m.libs += file;
                }
            }
            _ => {}
        }
    }
    m
}

/// A `kB` figure of `/proc/<pid>/status` (`field` with its colon), in bytes; 0 if absent.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds (user + system) used by `pid` so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// CPU seconds (user + system) in the text of a `/proc/<pid>/stat`.
fn stat_cpu_seconds(stat: &str) -> f64 {
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime, in clock ticks) are the 12th and 13th after ")".
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by every process on the machine, summed by command name (the
/// 100 servers' shells, their shims, dockerd, the daemon, this client): who shares the cores.
pub fn cpu_by_command() -> std::collections::HashMap<String, f64> {
    let mut by = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some(name) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(')')).map(|(n, _)| n.to_string()) else {
            continue;
        };
        *by.entry(name).or_insert(0.0) += stat_cpu_seconds(&stat);
    }
    by
}

/// The biggest users of CPU between two [`cpu_by_command`] snapshots taken `secs` apart, as
/// `name NN%` (100% is one core), busiest first.
pub fn cpu_split(before: &std::collections::HashMap<String, f64>, secs: f64) -> String {
    let mut used: Vec<(String, f64)> = cpu_by_command()
        .into_iter()
        .map(|(name, s)| {
            let was = before.get(&name).copied().unwrap_or(0.0);
            (name, (s - was) / secs * 100.0)
        })
        .filter(|(_, pct)| *pct >= 1.0)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = used.iter().map(|u| u.1).sum();
    let named: Vec<String> = used.iter().take(8).map(|(n, p)| format!("{n} {p:.0}%")).collect();
    format!("{} (all {total:.0}% of 200%)", named.join(", "))
}

/// Seconds the threads of `pid` have spent ready to run but waiting for a CPU (the second
/// field of each thread's `schedstat`, in ns): how much a busy machine delays the daemon.
pub fn runq_wait_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Result of one closed-loop load run.
pub struct LoadResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// `conns` keep-alive connections each sending `GET path` back to back for `secs`.
pub async fn load(port: u16, path: &str, auth: bool, conns: usize, secs: f64) -> LoadResult {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
            stream.set_nodelay(true).unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            while Instant::now() < until {
                let mut req = hyper::Request::get(&path).header("host", "bench");
                if auth {
                    req = req.header("authorization", format!("Bearer {TOKEN}"));
                }
                let req = req.body(Empty::<Bytes>::new()).unwrap();
                let t = Instant::now();
                match send.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let n = all.len();
    let all = sorted(all);
    LoadResult { rps: n as f64 / secs, p50_ms: pct(&all, 50.0), p99_ms: pct(&all, 99.0), errors }
}

/// A bare hyper 1.x hello-world in its own process (this program re-executed with
/// `--hello PORT`), the baseline every REST figure is set against.
pub fn spawn_hello(port: u16) -> std::process::Child {
    let me = std::env::current_exe().unwrap();
    let child = own_session(Command::new(me).args(["--hello", &port.to_string()]), 0).spawn().unwrap();
    wait_for(10, "the hello server", || std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop));
    child
}

/// Runs the hello server when asked to (call first thing in `main`); never returns then.
pub fn maybe_serve_hello() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--hello") {
        return;
    }
    let port: u16 = args[2].parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let mut r =
                        hyper::Response::new(http_body_util::Full::new(Bytes::from_static(br#"{"status":"ok"}"#)));
                    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    std::process::exit(0);
}

/// Creates `n` containers `<name><i>` running `command` (installs in parallel) and starts them.
pub fn populate(d: &Daemon, name: &str, n: usize, command: &str) -> Vec<String> {
    let (vol, _) = d.new_volume();
    let ids: Vec<String> = (0..n).map(|i| d.id(&format!("{name}{i}"))).collect();
    std::thread::scope(|s| {
        for chunk in ids.chunks(10) {
            let vol = &vol;
            s.spawn(move || {
                for id in chunk {
                    let body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol, "startup_command": command});
                    let r = d.call("POST", "/containers", Some(body));
                    assert_eq!(r.status, 202, "{}", r.body);
                }
            });
        }
    });
    for id in &ids {
        assert_eq!(d.wait_installed(id, 600)["install_state"], "ready");
    }
    std::thread::scope(|s| {
        for chunk in ids.chunks(10) {
            s.spawn(move || {
                for id in chunk {
                    let r = d.call("POST", &format!("/containers/{id}/start"), None);
                    assert_eq!(r.status, 202, "{}", r.body);
                }
            });
        }
    });
    ids
}

/// A state.json holding `n` ready container records (no Docker containers behind them):
/// what `GET /containers` and start-up have to walk through, made in no time.
pub fn seed_records(dir: &Path, n: usize, prefix: &str) {
    let containers: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            let id = format!("{prefix}-r{i}");
            let rec = json!({
                "internal_id": id, "container_id": null, "volume_id": "d6764075-c5f1-4045-9fb3-85315b85cb0f",
                "image": IMAGE, "startup_command": "true", "start_pattern": null, "install_state": "ready",
                "state": "offline", "ports": [], "limits": {}, "mount": {}, "env": {}, "install_script": null,
                "last_exit": null, "error": null, "created_at": 1_700_000_000u64, "updated_at": 1_700_000_000u64
            });
            (id, rec)
        })
        .collect();
    let state = json!({"volumes": {}, "ports": [], "containers": containers, "tokens": []});
    std::fs::write(dir.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
}

/// Replaces this program's section of docs/benchmarks.md (between its markers) with `body`,
/// headed by the machine, the date and the commit.
pub fn write_section(name: &str, body: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| "# lightd benchmarks\n\nWritten by the programs in `benches/`; see the README.\n".into());
    let (start, end) = (format!("<!-- bench:{name} -->"), format!("<!-- /bench:{name} -->"));
    let sh = |c: &str| {
        Command::new("sh").args(["-c", c]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let machine = format!(
        "{} cores, {}, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").unwrap_or_default().trim(),
        sh("uname -sr").unwrap_or_default()
    );
    let section = format!(
        "{start}\n_Machine: {machine}. Date: {}. Commit: {}._\n\n{body}\n{end}",
        sh("date -u +%Y-%m-%dT%H:%MZ").unwrap_or_default(),
        sh("git rev-parse --short HEAD").unwrap_or_default()
    );
    match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) => text.replace_range(a..b + end.len(), &section),
        _ => text.push_str(&format!("\n{section}\n")),
    }
    std::fs::write(&path, text).unwrap();
    println!("(written to {})", path.display());
}
