//! The node report and the usage meters against the real daemon and engine: `GET /system`
//! checked against `nproc`, `/proc/meminfo`, `docker info` and the volumes made; `committed`
//! and `free` following creates exactly; a server's `cpu_seconds` and `network_tx_bytes` against
//! its cgroup and interface counters; meters that never go back across a restart, a reinstall,
//! a crash, a daemon kill -9 and an engine restart, and go with the server; a real Prometheus whose
//! `increase()` matches the usage route.
//!
//! `meters_only_ever_grow` restarts the Docker engine, so every test here holds a lock it
//! takes alone. `LIGHTD_TEST_SKIP_ENGINE_RESTART=1` (for development on a shared engine, off by
//! default) leaves that one step out and says so.

mod common;

use std::io::Read;
use std::process::Command;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::service::{prometheus, query_encode, Service};
use common::*;
use serde_json::{json, Value};

/// Held for reading by every test, for writing by the one that stops the engine.
static ENGINE: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    ENGINE.read().unwrap_or_else(|p| p.into_inner())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A daemon reading its meters every second.
fn daemon(node: Value) -> Daemon {
    let mut node = node;
    node["meter_interval"] = json!(1);
    Daemon::start_with(move |c| c["node"] = node)
}

fn usage(d: &Daemon, id: &str) -> Value {
    let r = d.get(&format!("/containers/{id}/usage"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// The meters once a reading made after now is shown.
fn fresh_usage(d: &Daemon, id: &str) -> Value {
    let after = now_secs() + 1;
    wait_for(30, "a reading of the meters", || Some(usage(d, id)).filter(|u| u["updated_at"].as_u64() >= Some(after)))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn stdout(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A `key: N kB` line of `/proc/meminfo`, in bytes.
fn meminfo(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// CPU time of a container's cgroup, read as the kernel keeps it (v1 or v2, either driver).
fn cgroup_cpu_seconds(cid: &str) -> f64 {
    let v1 = [
        format!("/sys/fs/cgroup/cpuacct/docker/{cid}"),
        format!("/sys/fs/cgroup/cpuacct/system.slice/docker-{cid}.scope"),
    ];
    for dir in v1 {
        if let Ok(t) = std::fs::read_to_string(format!("{dir}/cpuacct.usage")) {
            return t.trim().parse::<f64>().unwrap() / 1e9;
        }
    }
    for dir in [format!("/sys/fs/cgroup/system.slice/docker-{cid}.scope"), format!("/sys/fs/cgroup/docker/{cid}")] {
        if let Ok(t) = std::fs::read_to_string(format!("{dir}/cpu.stat")) {
            let usec = t.lines().find_map(|l| l.strip_prefix("usage_usec ")).unwrap();
            return usec.trim().parse::<f64>().unwrap() / 1e6;
        }
    }
    panic!("no cgroup found for container {cid}");
}

/// Bytes received and sent by the container's `eth0`, from its init process's `/proc/<pid>/net/dev`.
fn interface_counters(cid: &str) -> (u64, u64) {
    let pid = stdout("docker", &["inspect", "-f", "{{.State.Pid}}", cid]);
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    let line = text.lines().find(|l| l.trim_start().starts_with("eth0:")).expect("eth0 in net/dev");
    let fields: Vec<u64> = line.split_once(':').unwrap().1.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (fields[0], fields[8])
}

/// Waits (up to `secs`) until the console of `id` has printed `line`.
fn wait_printed(d: &Daemon, id: &str, line: &str, secs: u64) {
    wait_for(secs, &format!("{line:?} in the console of {id}"), || {
        let lines = d.get(&format!("/containers/{id}/logs?tail=100")).json()["lines"].clone();
        lines.as_array()?.iter().any(|l| l == line).then_some(())
    });
}

#[test]
fn the_node_report_matches_the_host_and_the_engine() {
    require_docker();
    let _shared = shared();
    let d = daemon(json!({"reserved_memory": "1GB", "overcommit": {"memory": 1.5, "cpu": 2.0, "disk": 1.0}}));
    let r = wait_for(30, "a report with the engine's facts", || {
        Some(d.get("/system").json()).filter(|r| r["docker"]["version"] != "")
    });

    // The host, as nproc, /proc/meminfo and uname see it.
    let threads: u64 = stdout("nproc", &[]).parse().unwrap();
    let sys = &r["system"];
    assert_eq!(sys["cpu_threads"], threads, "{r}");
    assert_eq!(sys["memory_bytes"], meminfo("MemTotal"), "{r}");
    assert_eq!(sys["kernel_version"], stdout("uname", &["-r"]));
    assert_eq!(sys["os_type"], "linux");
    let arch = match stdout("uname", &["-m"]).as_str() {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_string(),
    };
    assert_eq!(sys["architecture"], arch.as_str());
    assert!(!sys["os"].as_str().unwrap().is_empty());
    assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));

    // The engine, as docker info sees it.
    let info: Value = serde_json::from_str(&stdout("docker", &["info", "--format", "{{json .}}"])).unwrap();
    let dk = &r["docker"];
    assert_eq!(dk["version"], info["ServerVersion"]);
    assert_eq!(dk["cgroups"]["driver"], info["CgroupDriver"]);
    assert_eq!(dk["cgroups"]["version"], info["CgroupVersion"]);
    assert_eq!(dk["storage"]["driver"], info["Driver"]);
    assert_eq!(dk["runc"]["version"], info["RuncCommit"]["ID"]);
    let c = &dk["containers"];
    let parts: u64 = ["running", "paused", "stopped"].iter().map(|k| c[k].as_u64().unwrap()).sum();
    assert_eq!(c["total"].as_u64(), Some(parts), "{c}");

    // Utilization: memory from /proc/meminfo, and the file systems holding lightd's data.
    let u = &r["utilization"];
    assert!(u["memory_used_bytes"].as_u64().unwrap() <= meminfo("MemTotal"));
    assert_eq!(u["swap_total_bytes"], meminfo("SwapTotal"));
    assert_eq!(u["load_average"].as_array().unwrap().len(), 3);
    assert!((0.0..=100.0).contains(&f(u, "cpu_percent")));
    let filesystems = u["filesystems"].as_array().unwrap();
    let holds: std::collections::BTreeSet<&str> =
        filesystems.iter().flat_map(|fs| fs["holds"].as_array().unwrap()).map(|h| h.as_str().unwrap()).collect();
    assert_eq!(holds.into_iter().collect::<Vec<_>>(), ["backups", "docker", "state", "volumes"], "{u}");
    let volumes_fs = filesystems.iter().find(|fs| fs["holds"].as_array().unwrap().contains(&json!("volumes"))).unwrap();
    let base = d.dir.0.join("volumes");
    let st = stdout("stat", &["-f", "-c", "%S %b", base.to_str().unwrap()]);
    let (frsize, blocks) = st.split_once(' ').unwrap();
    let fs_total = frsize.parse::<u64>().unwrap() * blocks.parse::<u64>().unwrap();
    assert_eq!(volumes_fs["total_bytes"], fs_total, "{volumes_fs}");

    // Committed and free follow what is made, exactly.
    let mem_total = meminfo("MemTotal");
    let r0 = d.get("/system").json();
    assert_eq!(r0["committed"], json!({"memory_bytes": 0, "cpu": 0.0, "disk_bytes": 0, "containers": 0, "volumes": 0}));
    assert_eq!(r0["free"]["memory_bytes"], (mem_total as f64 * 1.5) as u64 - (1 << 30));
    assert_eq!(f(&r0["free"], "cpu"), threads as f64 * 2.0);
    for size in ["1GB", "2GB"] {
        assert_eq!(d.call("POST", "/volumes", Some(json!({"size_limit": size}))).status, 201);
    }
    let r1 = d.get("/system").json();
    assert_eq!((r1["committed"]["volumes"].as_u64(), r1["committed"]["disk_bytes"].as_u64()), (Some(2), Some(3 << 30)));
    let fs_total_now = r1["utilization"]["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|fs| fs["holds"].as_array().unwrap().contains(&json!("volumes")))
        .unwrap()["total_bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(r1["free"]["disk_bytes"], fs_total_now - (3 << 30));
    let id = d.create_container("committed", "sleep 600", json!({"limits": {"memory": 268435456u64, "cpu": 0.5}}));
    let r2 = d.get("/system").json();
    let moved = |v: &Value, key: &str| v[key].as_u64().unwrap();
    assert_eq!(moved(&r2["committed"], "memory_bytes"), moved(&r1["committed"], "memory_bytes") + 268435456);
    assert_eq!(f(&r2["committed"], "cpu"), f(&r1["committed"], "cpu") + 0.5);
    assert_eq!(moved(&r2["committed"], "containers"), 1);
    assert_eq!(moved(&r2["free"], "memory_bytes"), moved(&r1["free"], "memory_bytes") - 268435456);
    assert_eq!(f(&r2["free"], "cpu"), f(&r1["free"], "cpu") - 0.5);

    // The meters' route: its own errors, and zeros for a server that never ran.
    let none = d.get("/containers/nope/usage");
    assert_eq!((none.status, none.error().as_str()), (404, "Container not found"));
    assert_eq!(d.get("/containers/a%20b/usage").status, 400);
    d.wait_installed(&id, 120);
    let u = fresh_usage(&d, &id);
    assert_eq!((f(&u, "cpu_seconds"), u["starts"].as_u64(), u["network_tx_bytes"].as_u64()), (0.0, Some(0), Some(0)));
    assert!(u["since"].as_u64().unwrap() >= d.record(&id)["created_at"].as_u64().unwrap(), "{u}");
    assert!(d.get("/metrics").body.contains(&format!("lightd_container_cpu_seconds_total{{container=\"{id}\"}} 0\n")));
}

#[test]
fn meters_follow_the_kernel_counters() {
    require_docker();
    let _shared = shared();
    let d = daemon(json!({}));
    let port = port();
    d.add_port("127.0.0.1", port, "tcp");
    // 2 CPU-seconds (the kernel stops the loop there), then 50 MiB to whoever connects.
    let command = "dd if=/dev/zero of=/home/container/big bs=1M count=5 2>/dev/null; \
                   sh -c 'ulimit -t 2; while :; do :; done'; echo burned; \
                   dd if=/dev/zero bs=1M count=50 2>/dev/null | nc -l -p $SERVER_PORT; echo sent; sleep 600";
    let id = d.ready_container("kernel", command, json!({"ports": [{"ip": "127.0.0.1", "port": port}]}));
    let started = now_secs();
    assert_eq!(d.act(&id, "start"), 202);
    wait_printed(&d, &id, "burned", 180);
    let cid = d.record(&id)["container_id"].as_str().unwrap().to_string();

    let before = cgroup_cpu_seconds(&cid);
    assert!(before >= 1.5, "the server burned about 2 CPU-seconds (ulimit -t 2): {before}");
    let u = fresh_usage(&d, &id);
    let after = cgroup_cpu_seconds(&cid);
    let cpu = f(&u, "cpu_seconds");
    assert!(cpu >= before * 0.95 && cpu <= after * 1.05, "cpu_seconds {cpu} within 5% of cpuacct {before}..{after}");

    // 50 MiB through the published port.
    let mut conn = wait_for(30, "the server listening", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 50 << 20);
    // nc ends once this side closes too.
    drop(conn);
    wait_printed(&d, &id, "sent", 60);
    let (rx, tx) = interface_counters(&cid);
    assert!(tx >= 50 << 20, "eth0 sent {tx}");
    let u = fresh_usage(&d, &id);
    let sent = u["network_tx_bytes"].as_u64().unwrap();
    let diff = (sent as f64 - tx as f64).abs() / tx as f64;
    assert!(diff <= 0.01, "network_tx_bytes {sent} within 1% of eth0's {tx}");
    assert!(u["network_rx_bytes"].as_u64().unwrap() <= interface_counters(&cid).0 && rx > 0, "{u}");

    // The rest, read from the same places.
    assert_eq!((u["starts"].as_u64(), u["crashes"].as_u64()), (Some(1), Some(0)), "{u}");
    assert!(u["memory_peak_bytes"].as_u64().unwrap() > 0 && f(&u, "memory_gib_hours") > 0.0, "{u}");
    let up = f(&u, "uptime_seconds");
    assert!(up > 1.0 && up <= (now_secs() - started + 2) as f64, "uptime {up}");
    let u = wait_for(60, "the volume's 5 MiB in disk_bytes", || {
        Some(usage(&d, &id)).filter(|u| u["disk_bytes"].as_u64().unwrap() >= 5 << 20)
    });
    assert!(u["disk_peak_bytes"].as_u64() >= u["disk_bytes"].as_u64());
    let text = d.get("/metrics").body;
    assert!(text.contains(&format!("lightd_container_network_transmit_bytes_total{{container=\"{id}\"}} ")), "{text}");
}

/// Every counter of the usage route: none may ever be lower than before.
const COUNTERS: [&str; 9] = [
    "cpu_seconds",
    "memory_gib_hours",
    "memory_peak_bytes",
    "disk_peak_bytes",
    "network_rx_bytes",
    "network_tx_bytes",
    "uptime_seconds",
    "starts",
    "crashes",
];

/// Watches one server's meters, failing the moment any counter goes back.
struct Watch<'a> {
    d: &'a Daemon,
    id: String,
    last: Value,
    readings: usize,
}

impl Watch<'_> {
    fn read(&mut self, step: &str) -> Value {
        let now = usage(self.d, &self.id);
        for k in COUNTERS {
            assert!(f(&now, k) >= f(&self.last, k), "{k} went back at {step}: {} -> {}", self.last, now);
        }
        self.readings += 1;
        self.last = now.clone();
        now
    }

    /// Reads until `done` holds for the latest meters (checking each reading).
    fn until(&mut self, secs: u64, step: &str, done: impl Fn(&Value) -> bool) -> Value {
        let step = step.to_string();
        wait_for(secs, &step.clone(), || {
            std::thread::sleep(Duration::from_millis(150));
            Some(self.read(&step)).filter(|u| done(u))
        })
    }

    /// Reads until CPU, network and uptime all grew past `from`, in readings made at least 2 s
    /// after it (and after `now`), and `done` holds.
    fn grown(&mut self, secs: u64, step: &str, from: &Value, done: impl Fn(&Value) -> bool) -> Value {
        let from = from.clone();
        let after = from["updated_at"].as_u64().unwrap_or(0).max(now_secs()) + 2;
        self.until(secs, step, move |u| {
            ["cpu_seconds", "network_tx_bytes", "network_rx_bytes", "uptime_seconds", "memory_gib_hours"]
                .iter()
                .all(|k| f(u, k) > f(&from, k))
                && u["updated_at"].as_u64() >= Some(after)
                && done(u)
        })
    }
}

#[test]
fn meters_only_ever_grow() {
    require_docker();
    let engine_step = std::env::var_os("LIGHTD_TEST_SKIP_ENGINE_RESTART").is_none();
    if !engine_step {
        eprintln!("meters_only_ever_grow: SKIPPING the engine restart step (LIGHTD_TEST_SKIP_ENGINE_RESTART is set)");
    }
    let _alone = ENGINE.write().unwrap_or_else(|p| p.into_inner());
    // Every crash is restarted (two come less than a minute apart here).
    let mut d = Daemon::start_with(|c| {
        c["node"] = json!({"meter_interval": 1});
        c["containers"]["crash_window"] = json!(0);
    });
    // Connections to a closed port of the network's gateway (a SYN out, a RST back): traffic both
    // ways all along, and a little CPU.
    let command = "gw=$(ip route | awk '/default/ {print $3}'); \
                   while :; do nc -w 1 $gw 9 </dev/null 2>/dev/null; sleep 0.2; done & \
                   while :; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 0.2; done";
    let id = d.ready_container("grow", command, json!({}));
    let mut w = Watch { d: &d, id: id.clone(), last: usage(&d, &id), readings: 0 };
    let zero = w.last.clone();

    assert_eq!(d.act(&id, "start"), 202);
    let u = w.grown(120, "the first run", &zero, |u| u["starts"] == 1);
    assert_eq!(d.act(&id, "restart"), 202);
    let u = w.grown(120, "after a restart", &u, |u| u["starts"] == 2);
    let r = d.call("POST", &format!("/containers/{id}/reinstall"), None);
    assert_eq!(r.status, 202, "{}", r.body);
    let u = w.grown(240, "after a reinstall", &u, |u| u["starts"] == 3);
    // Killed outside lightd: a crash, and the crash policy's start.
    let cid = d.record(&id)["container_id"].as_str().unwrap().to_string();
    docker(&["kill", &cid]);
    let u = w.grown(120, "after a crash", &u, |u| u["starts"] == 4 && u["crashes"] == 1);
    let readings = w.readings;
    drop(w);

    // What was shown before the kill is on disk: the first answer after it is never lower.
    d.kill9();
    d.spawn();
    let mut w = Watch { d: &d, id: id.clone(), last: u.clone(), readings };
    let u = w.grown(120, "after a daemon kill -9", &u, |u| u["starts"] == 4);
    assert_eq!(u["crashes"], 1);

    let u = if engine_step {
        let engine = engine::Engine::stop();
        // No Docker call behind the meters: they answer (and never go back) while it is down.
        for _ in 0..5 {
            w.read("while the engine is down");
            std::thread::sleep(Duration::from_millis(300));
        }
        assert_eq!(d.get("/system").status, 200);
        let mut engine = engine;
        engine.start();
        // The engine stopped the server with itself: a crash, and the crash policy starts it again.
        let u = w.grown(180, "after an engine restart", &u, |u| u["starts"] == 5 && u["crashes"] == 2);
        drop(engine);
        assert!(engine::up(), "the engine is left running");
        u
    } else {
        u
    };
    assert!(w.readings > 10, "the meters were watched: {} readings", w.readings);
    eprintln!("meters after every step: {u}");

    // The meters go with the server.
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).status, 200);
    assert_eq!(d.get(&format!("/containers/{id}/usage")).status, 404);
    let gone = now_secs() + 1;
    wait_for(30, "a reading after the delete", || {
        let ledger: Value = serde_json::from_slice(&std::fs::read(d.dir.0.join("meters.json")).ok()?).ok()?;
        let read_after = ledger["servers"].as_object()?.values().all(|s| s["updated_at"].as_u64() >= Some(gone));
        (read_after && now_secs() > gone).then_some(ledger)
    });
    let ledger: Value = serde_json::from_slice(&std::fs::read(d.dir.0.join("meters.json")).unwrap()).unwrap();
    assert!(ledger["servers"].get(&id).is_none(), "{ledger}");
    assert!(!d.get("/metrics").body.contains(&format!("container=\"{id}\"")));
}

/// The `data.result` of an instant query at `time` (unix seconds).
fn query(p: &Service, q: &str, time: f64) -> Vec<Value> {
    let r = p.get(&format!("/api/v1/query?query={}&time={time}", query_encode(q)));
    assert_eq!(r.status, 200, "{q}: {}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn prometheus_increase_matches_the_usage_route() {
    require_docker();
    let _shared = shared();
    let d = daemon(json!({}));
    let dir = TempDir::new("node-prometheus");
    let p = prometheus(&dir.0, d.port);
    let command = "sh -c 'ulimit -t 1; while :; do :; done'; gw=$(ip route | awk '/default/ {print $3}'); \
                   for i in 1 2 3 4 5 6 7 8 9 10; do nc -w 1 $gw 9 </dev/null 2>/dev/null; done; echo knocked; sleep 600";
    let id = d.ready_container("prom", command, json!({}));
    let series = format!("lightd_container_cpu_seconds_total{{container=\"{id}\"}}");
    wait_for(60, "Prometheus to have the meters at 0", || {
        let r = query(&p, &series, now_secs() as f64);
        (r.first()?["value"][1] == "0").then_some(())
    });
    // Two runs: the kernel's counters begin again at 0 in the second, the server's never do.
    for run in 1..=2 {
        assert_eq!(d.act(&id, if run == 1 { "start" } else { "restart" }), 202);
        wait_for(180, "the run's burn and knocks", || {
            let u = usage(&d, &id);
            let lines = d.get(&format!("/containers/{id}/logs?tail=100")).json()["lines"].clone();
            let knocked = lines.as_array()?.iter().filter(|l| *l == "knocked").count() >= run;
            (u["starts"] == run && knocked).then_some(())
        });
        // What a run used after the last reading before its stop dies with its cgroup: read it first.
        fresh_usage(&d, &id);
    }
    assert_eq!(d.act(&id, "stop"), 202);
    d.wait_state(&id, "offline", 60);
    // Still: two readings in a row agree, and Prometheus has scraped them twice since.
    let settled = wait_for(60, "the meters to settle", || {
        let a = fresh_usage(&d, &id);
        let b = fresh_usage(&d, &id);
        (a["cpu_seconds"] == b["cpu_seconds"] && a["network_tx_bytes"] == b["network_tx_bytes"]).then_some(b)
    });
    let done = now_secs() as f64;
    let last = wait_for(60, "two scrapes after the meters settled", || {
        let r = query(&p, &format!("{series}[1m]"), now_secs() as f64);
        let stamps: Vec<f64> = r.first()?["values"].as_array()?.iter().filter_map(|s| s[0].as_f64()).collect();
        (stamps.iter().filter(|t| **t > done).count() >= 2).then(|| *stamps.last().unwrap())
    });
    let u = usage(&d, &id);
    for k in COUNTERS {
        assert_eq!(u[k], settled[k], "{k} moved after the stop");
    }
    assert!(f(&u, "cpu_seconds") >= 1.0 && u["network_tx_bytes"].as_u64() > Some(0), "{u}");

    // increase() over the whole test, at the last scrape: the meters from 0, no reset.
    let gib_hour = (1u64 << 30) as f64 * 3600.0;
    for (metric, field, scale) in [
        ("lightd_container_cpu_seconds_total", "cpu_seconds", 1.0),
        ("lightd_container_network_receive_bytes_total", "network_rx_bytes", 1.0),
        ("lightd_container_network_transmit_bytes_total", "network_tx_bytes", 1.0),
        ("lightd_container_memory_byte_seconds_total", "memory_gib_hours", gib_hour),
        ("lightd_container_uptime_seconds_total", "uptime_seconds", 1.0),
        ("lightd_container_starts_total", "starts", 1.0),
    ] {
        let sel = format!("{metric}{{container=\"{id}\"}}");
        let inc = query(&p, &format!("increase({sel}[15m])"), last);
        assert_eq!(inc.len(), 1, "{metric}: {inc:?}\n{}", p.log());
        let got: f64 = inc[0]["value"][1].as_str().unwrap().parse().unwrap();
        let want = f(&u, field) * scale;
        let samples = || query(&p, &format!("{sel}[15m]"), last);
        assert!(
            (got - want).abs() <= want.abs() * 1e-6 + 1e-9,
            "increase({metric}) {got}, usage {want}: {:?}",
            samples()
        );
        let resets = query(&p, &format!("resets({sel}[15m])"), last);
        assert_eq!(resets[0]["value"][1], "0", "{metric} never went back: {resets:?}");
    }
}
