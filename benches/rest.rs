//! REST throughput and latency measured by `wrk` (Debian's package, a client we did not
//! write): `GET /health` and an authenticated `GET /containers/:id` against a bare hyper
//! hello-world, in alternating rounds in one run so drift on the machine hits all three alike.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::process::Command;

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
        "| target | req/s (median) | rounds | p50 ms | p99 ms | errors | ratio to bare hyper (median of the rounds' ratios) |".into(),
        "|---|---|---|---|---|---|---|".into(),
    ];
    for (i, ((name, ..), r)) in targets.iter().zip(&runs).enumerate() {
        let rps = median(r, |w| w.rps);
        table.push(format!(
            "| {name} | {rps:.0} | {} | {:.2} | {:.2} | {} | {:.2} |",
            r.iter().map(|w| format!("{:.0}", w.rps)).collect::<Vec<_>>().join(" / "),
            median(r, |w| w.p50),
            median(r, |w| w.p99),
            r.iter().map(|w| w.errors).sum::<u64>(),
            ratio(i)
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
    let table = table.join("\n");
    println!("{table}");
    write_section("rest", &table);
}
