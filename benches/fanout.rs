//! Fan-out measurement shared by the console and game benches: viewers read for a span while
//! the daemon's delivery histogram and CPU are sampled around it; the seed's way (a Docker
//! `logs --follow` per reader) measured the same way.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;
use crate::viewer::*;

/// The daemon's delivery histogram: (upper bound s, cumulative count) per bucket.
pub fn delivery(d: &Daemon) -> Vec<(f64, u64)> {
    histogram(d, "lightd_console_delivery_seconds")
}

/// One of the daemon's unlabelled histograms: (upper bound s, cumulative count) per bucket.
pub fn histogram(d: &Daemon, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    d.get("/metrics")
        .body
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            let (le, n) = l.split_once("\"} ")?;
            Some((le.parse().unwrap_or(f64::INFINITY), n.parse().ok()?))
        })
        .collect()
}

/// The `q` quantile (ms) of what was delivered between two snapshots, interpolated within its
/// bucket as Prometheus' `histogram_quantile` does.
pub fn quantile_between(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
    let diff: Vec<(f64, u64)> = after.iter().zip(before).map(|(a, b)| (a.0, a.1 - b.1)).collect();
    let total = diff.last().map_or(0, |x| x.1);
    if total == 0 {
        return f64::NAN;
    }
    let want = q * total as f64;
    let mut prev = (0.0, 0u64);
    for &(le, n) in &diff {
        if n as f64 >= want {
            if le.is_infinite() {
                return prev.0 * 1000.0;
            }
            let within = (want - prev.1 as f64) / (n - prev.1).max(1) as f64;
            return (prev.0 + (le - prev.0) * within) * 1000.0;
        }
        prev = (le, n);
    }
    f64::NAN
}

pub fn dockerd_pid() -> u32 {
    let out = std::process::Command::new("pidof").arg("dockerd").output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

pub fn container_id(d: &Daemon, id: &str) -> String {
    d.get(&format!("/containers/{id}")).json()["container_id"].as_str().unwrap().to_string()
}

/// One measured row.
pub struct Row {
    pub what: String,
    pub path: &'static str,
    pub readers: usize,
    pub lines_per_s: f64,
    pub lost: u64,
    pub skipped: u64,
    pub daemon_p99: f64,
    pub e2e: Hist,
    pub cpu: (String, f64),
    pub cpu_per_million: f64,
    /// Milliseconds per second the daemon's threads were ready to run but waited for a CPU.
    pub runq_wait: f64,
    /// Who used the machine's CPU during the span (lightd's own rows).
    pub cpu_split: String,
}

impl Row {
    /// The row of a run that took `took` seconds, `cpu` being whose CPU seconds it used;
    /// the daemon's own figures (delivery, run-queue wait) are left unknown.
    fn new(what: &str, path: &'static str, readers: usize, tally: &Tally, took: f64, cpu: (&str, f64)) -> Row {
        let (lines, lost, skipped, e2e) = tally.take();
        Row {
            what: what.to_string(),
            path,
            readers,
            lines_per_s: lines as f64 / took,
            lost,
            skipped,
            daemon_p99: f64::NAN,
            e2e,
            cpu: (cpu.0.to_string(), cpu.1 / took * 100.0),
            cpu_per_million: cpu.1 / (lines.max(1) as f64 / 1e6),
            runq_wait: f64::NAN,
            cpu_split: String::new(),
        }
    }

    pub fn table(rows: &[Row]) -> Vec<String> {
        let mut out = vec![
            "| load | readers | path | lines/s delivered | lost | skipped | delivery p99 in daemon ms | end-to-end p50 / p99 ms | CPU % | CPU s per million lines | run-queue wait ms/s |".into(),
            "|---|---|---|---|---|---|---|---|---|---|---|".into(),
        ];
        for r in rows {
            out.push(format!(
                "| {} | {} | {} | {:.0} | {} | {} | {} | {:.1} / {:.1} | {} {:.0} | {} | {} |",
                r.what,
                r.readers,
                r.path,
                r.lines_per_s,
                r.lost,
                r.skipped,
                if r.daemon_p99.is_nan() { "-".to_string() } else { format!("{:.2}", r.daemon_p99) },
                r.e2e.pct(50.0),
                r.e2e.pct(99.0),
                r.cpu.0,
                r.cpu.1,
                if r.cpu_per_million.is_nan() { "-".to_string() } else { format!("{:.2}", r.cpu_per_million) },
                if r.runq_wait.is_nan() { "-".to_string() } else { format!("{:.0}", r.runq_wait) }
            ));
        }
        out
    }
}

/// Reads `viewers` for `secs` while timing the daemon; the viewers come back open.
pub async fn measure(d: &Daemon, what: &str, viewers: Vec<Viewer>, secs: u64) -> (Row, Vec<Viewer>) {
    let (row, _, open) = measure_probed(d, what, viewers, &[], secs).await;
    (row, open)
}

/// [`measure`], with one Docker attach stream per container of `probe` read beside the
/// viewers over the same span: what reaches the daemon, and how late, under the same load
/// (its row is the floor under the viewers' end-to-end figures).
pub async fn measure_probed(
    d: &Daemon,
    what: &str,
    viewers: Vec<Viewer>,
    probe: &[String],
    secs: u64,
) -> (Row, Option<Row>, Vec<Viewer>) {
    let readers = viewers.len();
    let tally = Arc::new(Tally::default());
    let probed = Arc::new(Tally::default());
    // A second to drain what queued while the viewers connected, then the measured span.
    let from = Instant::now() + Duration::from_secs(1);
    let until = from + Duration::from_secs(secs);
    let tasks: Vec<_> = viewers.into_iter().map(|v| tokio::spawn(v.read(from, until, Arc::clone(&tally)))).collect();
    tokio::time::sleep_until(from.into()).await;
    let probes: Vec<_> =
        probe.iter().map(|c| tokio::spawn(docker_attach(c.clone(), until, Arc::clone(&probed)))).collect();
    let before = delivery(d);
    let cpu0 = cpu_seconds(d.pid());
    let dockerd0 = cpu_seconds(dockerd_pid());
    let wait0 = runq_wait_seconds(d.pid());
    let machine0 = cpu_by_command();
    let start = Instant::now();
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await.unwrap());
    }
    for t in probes {
        t.await.unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(d.pid()) - cpu0;
    let dockerd = cpu_seconds(dockerd_pid()) - dockerd0;
    let waited = runq_wait_seconds(d.pid()) - wait0;
    let after = delivery(d);
    let mut row = Row::new(what, "lightd WebSocket", readers, &tally, took, ("lightd", cpu));
    row.daemon_p99 = quantile_between(&before, &after, 0.99);
    row.runq_wait = waited / took * 1000.0;
    row.cpu_split = cpu_split(&machine0, took);
    println!("{}", Row::table(std::slice::from_ref(&row)).pop().unwrap());
    println!("  CPU by process: {}", row.cpu_split);
    let probe_row = (!probe.is_empty()).then(|| {
        let mut r = Row::new(what, PROBE_PATH, probe.len(), &probed, took, ("dockerd", dockerd));
        // dockerd's CPU over the span serves the daemon's streams too: not this row's per line.
        r.cpu_per_million = f64::NAN;
        println!("{}", Row::table(std::slice::from_ref(&r)).pop().unwrap());
        r
    });
    (row, probe_row, open)
}

/// The probe row's path: the daemon's input, read by this client beside the daemon.
pub const PROBE_PATH: &str = "same span: one Docker attach per server, read by this client (the daemon's input)";

/// The seed's way for the same load: a Docker `logs --follow` per reader of `containers`.
pub async fn measure_docker(what: &str, containers: Vec<String>, secs: u64) -> Row {
    let readers = containers.len();
    let tally = Arc::new(Tally::default());
    let dockerd = dockerd_pid();
    let cpu0 = cpu_seconds(dockerd);
    let machine0 = cpu_by_command();
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let tasks: Vec<_> =
        containers.into_iter().map(|c| tokio::spawn(docker_follow(c, until, Arc::clone(&tally)))).collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(dockerd) - cpu0;
    let mut row =
        Row::new(what, "baseline: Docker `logs --follow` per reader", readers, &tally, took, ("dockerd", cpu));
    row.cpu_split = cpu_split(&machine0, took);
    println!("{}", Row::table(std::slice::from_ref(&row)).pop().unwrap());
    println!("  CPU by process: {}", row.cpu_split);
    row
}

/// Opens `n` viewers on each of `ids` in turn (at most 100 handshakes at a time).
pub async fn open_viewers(port: u16, ids: &[String], n: usize) -> Vec<Viewer> {
    let targets: Vec<String> = (0..n).flat_map(|_| ids.iter().cloned()).collect();
    let mut out = Vec::new();
    for chunk in targets.chunks(100) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|id| {
                let id = id.clone();
                tokio::spawn(async move { Viewer::connect(port, &id, TOKEN).await.0 })
            })
            .collect();
        for t in tasks {
            out.push(t.await.unwrap());
        }
    }
    out
}
