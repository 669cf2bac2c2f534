//! REST throughput and latency measured by `wrk` (Debian's package, a client we did not
//! write): `GET /health` and an authenticated `GET /containers/:id` against a bare hyper
//! hello-world, in alternating rounds in one run so drift on the machine hits all three alike.
//! Beside them, the instructions each answer costs, counted by valgrind's callgrind: wrk's
//! figures move by a tenth from run to run on a shared VM, instruction counts do not.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use support::*;

const CONNS: usize = 50;
const SECS: u32 = 4;
/// Rounds: on a shared 2-core VM one round can be a third off the next, so the ratio is the
/// median of each round's ratio to the baseline run just before it.
const ROUNDS: usize = 7;

/// One wrk run: requests/s, p50 and p99 latency (ms), non-2xx answers and socket errors.
#[derive(Clone, Copy, Default)]
struct Wrk {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

fn wrk(port: u16, path: &str, auth: bool, secs: u32) -> Wrk {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", &format!("-c{CONNS}"), &format!("-d{secs}s"), "--latency"]);
    if auth {
        cmd.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    }
    let out = cmd.arg(format!("http://127.0.0.1:{port}{path}")).output().expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    parse_wrk(&text)
}

/// The figures of wrk's `--latency` report.
fn parse_wrk(text: &str) -> Wrk {
    let ms = |v: &str| {
        let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
        let (n, unit) = v.split_at(split);
        let n: f64 = n.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "s" => n * 1000.0,
            _ => n,
        }
    };
    let mut w = Wrk::default();
    for line in text.lines().map(str::trim) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => w.p50 = ms(v),
            ["99%", v] => w.p99 = ms(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                w.errors += rest.iter().filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    w
}

/// Requests counted under callgrind, after as many to warm up.
const COUNTED: usize = 2000;

/// Instructions per answer of the server `cmd` starts (under callgrind) on `port` (`None`:
/// the port its log says it listens on): `path` asked `COUNTED` times on one keep-alive
/// connection, with the headers wrk sends.
fn instructions(cmd: &[&str], port: Option<u16>, path: &str, auth: bool, out: &std::path::Path) -> f64 {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).unwrap();
    // A small descriptor limit: valgrind reserves its own at the top of the range.
    let mut child = Reaped(
        Command::new("prlimit")
            .args(["--nofile=4096", "valgrind", "--tool=callgrind"])
            .arg(format!("--callgrind-out-file={}/cg.%p", out.display()))
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(out.join("stderr.log")).unwrap())
            .spawn()
            .expect("valgrind (apt-get install valgrind)"),
    );
    let log = || std::fs::read_to_string(out.join("stderr.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut conn, port) = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("{} under callgrind ended ({status}): {}", cmd[0], log());
        }
        if let Some(port) = port.or_else(|| listening_port(&log())) {
            if let Ok(c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                break (c, port);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} under callgrind not listening after 120 s: {}",
            cmd[0],
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = if auth { format!("Authorization: Bearer {TOKEN}\r\n") } else { String::new() };
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}\r\n");
    let mut ask = |n: usize| {
        for _ in 0..n {
            conn.write_all(request.as_bytes()).unwrap();
            read_response(&mut conn);
        }
    };
    let control = |flag: &str| {
        let ok = Command::new("callgrind_control").args([flag, &child.0.id().to_string()]).output();
        assert!(ok.is_ok_and(|o| o.status.success()), "callgrind_control {flag}");
    };
    ask(COUNTED);
    control("-z");
    ask(COUNTED);
    control("-d");
    drop(child);
    // The dump holds the counts since the zeroing: `summary: <Ir>` (or `totals:`).
    let mut dumps = std::fs::read_dir(out).unwrap().filter_map(|e| e.ok()).map(|e| e.path());
    let dump = dumps.find(|p| p.to_string_lossy().ends_with(".1")).expect("a callgrind dump");
    let text = std::fs::read_to_string(dump).unwrap();
    let total = text.lines().find_map(|l| l.strip_prefix("summary: ").or_else(|| l.strip_prefix("totals: ")));
    total.and_then(|t| t.trim().parse::<f64>().ok()).expect("an instruction total") / COUNTED as f64
}

/// A server that is killed however the bench ends (a failed step must not leave it running).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads one response (head, then `Content-Length` bytes of body) off `conn`.
fn read_response(conn: &mut std::net::TcpStream) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).unwrap(), 1, "the server closed the connection");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let len = head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
}

fn median(runs: &[Wrk], f: impl Fn(&Wrk) -> f64) -> f64 {
    let v = sorted(runs.iter().map(f).collect());
    v[v.len() / 2]
}

fn main() {
    maybe_serve_hello();
    let hello_port = free_port();
    let mut hello = spawn_hello(hello_port);
    let d = Daemon::prepare(|_| {});
    seed_records(&d.dir.0, 100, &d.prefix);
    let mut d = d;
    d.spawn();
    let one = format!("/containers/{}-r7", d.prefix);
    assert_eq!(d.get(&one).status, 200);
    let targets: [(&str, u16, &str, bool); 3] = [
        ("bare hyper hello-world (baseline)", hello_port, "/", false),
        ("lightd `GET /health`", d.port, "/health", false),
        ("lightd `GET /containers/:id` (authenticated, 100 records)", d.port, one.as_str(), true),
    ];
    for (_, port, path, auth) in &targets {
        wrk(*port, path, *auth, 1); // warm-up
    }
    let mut runs: Vec<Vec<Wrk>> = vec![Vec::new(); targets.len()];
    for round in 0..ROUNDS {
        for (i, (name, port, path, auth)) in targets.iter().enumerate() {
            let w = wrk(*port, path, *auth, SECS);
            println!("round {}: {name}: {:.0} req/s", round + 1, w.rps);
            runs[i].push(w);
        }
    }
    let _ = hello.kill();
    let _ = hello.wait();
    // The same three answers under callgrind, one server at a time.
    d.stop();
    let me = std::env::current_exe().unwrap().display().to_string();
    let (daemon, config) = (bin(), d.config.display().to_string());
    let cg = d.dir.0.join("callgrind");
    let hello_cmd = [me.as_str(), "--hello", &hello_port.to_string()];
    let daemon_cmd = [daemon.as_str(), "--config", config.as_str()];
    let ir: Vec<f64> = targets
        .iter()
        .enumerate()
        .map(|(i, (_, port, path, auth))| {
            let (cmd, port): (&[&str], _) = if i == 0 { (&hello_cmd, Some(*port)) } else { (&daemon_cmd, None) };
            instructions(cmd, port, path, *auth, &cg)
        })
        .collect();
    // Each round's ratio to the baseline of the same round, then their median.
    let ratio = |i: usize| {
        let per_round: Vec<f64> = runs[i].iter().zip(&runs[0]).map(|(w, b)| w.rps / b.rps).collect();
        sorted(per_round)[ROUNDS / 2]
    };
    let mut table = vec![
        format!(
            "REST measured with `wrk -t2 -c{CONNS} -d{SECS}s --latency` (client on the same 2 cores), \
             {ROUNDS} alternating rounds; medians, with each round's req/s; each ratio is the median of the rounds' own ratios.\n"
        ),
        "| target | req/s (median) | rounds | p50 ms | p99 ms | errors | ratio to bare hyper (median of the rounds' ratios) | instructions per answer (callgrind) | ratio (bare / lightd) |".into(),
        "|---|---|---|---|---|---|---|---|---|".into(),
    ];
    for (i, ((name, ..), r)) in targets.iter().zip(&runs).enumerate() {
        let rps = median(r, |w| w.rps);
        table.push(format!(
            "| {name} | {rps:.0} | {} | {:.2} | {:.2} | {} | {:.2} | {:.0} | {:.2} |",
            r.iter().map(|w| format!("{:.0}", w.rps)).collect::<Vec<_>>().join(" / "),
            median(r, |w| w.p50),
            median(r, |w| w.p99),
            r.iter().map(|w| w.errors).sum::<u64>(),
            ratio(i),
            ir[i],
            ir[0] / ir[i]
        ));
    }
    let verdict = |r: f64, goal: f64| if r >= goal { "met" } else { "NOT met" };
    table.push(String::new());
    table.push(format!(
        "Goals: `/health` >= 0.95x of bare ({:.2}x, {}); `/containers/:id` >= 0.9x ({:.2}x, {}).",
        ratio(1),
        verdict(ratio(1), 0.95),
        ratio(2),
        verdict(ratio(2), 0.9)
    ));
    table.push(format!(
        "Instructions are the server's own (user space; the kernel's share of a request is not in them), \
         {COUNTED} requests on one keep-alive connection after {COUNTED} to warm up, with wrk's headers."
    ));
    let table = table.join("\n");
    println!("{table}");
    write_section("rest", &table);
}
