//! The stats stream: opened only while someone watches (or a REST lease runs), closed when
//! the last viewer leaves; CPU and memory computed the way `docker stats` does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::{lock, Event, Hub};
use crate::docker::stream::LineSplitter;
use crate::docker::Docker;
use crate::model::{now, PowerState};
use crate::store::Store;

/// One container's stats: whether its stream is open, how long a REST request keeps it open,
/// the latest sample, and when the server last started (for `uptime_s`).
#[derive(Default)]
pub struct Stats {
    /// Whether the stats stream is open.
    pub open: AtomicBool,
    /// A REST stats request keeps the stats stream open until then.
    lease: Mutex<Option<Instant>>,
    latest: Mutex<Option<Sample>>,
    /// Unix seconds of the last start (0: not running).
    pub started_at: AtomicU64,
}

impl Stats {
    /// Keeps the stream wanted until `until` (a REST request).
    pub fn lease(&self, until: Instant) {
        *lock(&self.lease) = Some(until);
    }

    /// Whether a REST lease runs now.
    pub fn leased(&self) -> bool {
        lock(&self.lease).is_some_and(|until| Instant::now() < until)
    }

    /// The latest sample, if any came.
    pub fn latest(&self) -> Option<Sample> {
        lock(&self.latest).clone()
    }

    /// Keeps `s` as the latest sample.
    pub fn set(&self, s: Sample) {
        *lock(&self.latest) = Some(s);
    }
}

/// One sample, as `GET /containers/:id/stats` and the `stats` frame carry it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Sample {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub uptime_s: u64,
    pub state: &'static str,
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// Reads one engine stats object. CPU% = container CPU delta / system CPU delta x online
/// CPUs x 100; memory excludes the page cache (`inactive_file`), as the Docker CLI shows it.
pub fn sample(v: &Value) -> Sample {
    let cpu_delta =
        u(v, "/cpu_stats/cpu_usage/total_usage").saturating_sub(u(v, "/precpu_stats/cpu_usage/total_usage"));
    let sys_delta = u(v, "/cpu_stats/system_cpu_usage").saturating_sub(u(v, "/precpu_stats/system_cpu_usage"));
    let cpus = match u(v, "/cpu_stats/online_cpus") {
        0 => v.pointer("/cpu_stats/cpu_usage/percpu_usage").and_then(Value::as_array).map_or(1, |a| a.len().max(1))
            as u64,
        n => n,
    };
    let cpu_percent =
        if sys_delta > 0 && cpu_delta > 0 { cpu_delta as f64 / sys_delta as f64 * cpus as f64 * 100.0 } else { 0.0 };
    let usage = u(v, "/memory_stats/usage");
    let cache = match u(v, "/memory_stats/stats/total_inactive_file") {
        0 => u(v, "/memory_stats/stats/inactive_file"),
        n => n,
    };
    let (mut rx, mut tx) = (0, 0);
    if let Some(nets) = v.get("networks").and_then(Value::as_object) {
        for n in nets.values() {
            rx += u(n, "/rx_bytes");
            tx += u(n, "/tx_bytes");
        }
    }
    Sample {
        cpu_percent: (cpu_percent * 100.0).round() / 100.0,
        memory_bytes: if cache < usage { usage - cache } else { usage },
        memory_limit_bytes: u(v, "/memory_stats/limit"),
        network_rx_bytes: rx,
        network_tx_bytes: tx,
        uptime_s: 0,
        state: "",
    }
}

/// Opens the stats stream of `id`'s container unless one is open, nobody wants it, or the
/// server is not up.
pub fn ensure(store: &Arc<Store>, docker: &Arc<Docker>, runtime: &tokio::runtime::Handle, hub: &Arc<Hub>) {
    let Some((cid, st)) = store.read(|s| s.containers.get(&hub.id).map(|r| (r.container_id.clone(), r.state))) else {
        return;
    };
    let (Some(cid), true) = (cid, matches!(st, PowerState::Starting | PowerState::Running | PowerState::Suspended))
    else {
        return;
    };
    if !hub.wants_stats() || hub.stats().open.swap(true, AcqRel) {
        return;
    }
    let (store, docker, hub) = (Arc::clone(store), Arc::clone(docker), Arc::clone(hub));
    // On the daemon's runtime whoever asks (the stream is no console thread work).
    crate::shutdown::detach_on(runtime, async move {
        run(&store, &docker, &hub, &cid).await;
        hub.stats().open.store(false, Release);
    });
}

async fn run(store: &Store, docker: &Docker, hub: &Hub, container_id: &str) {
    let state = || store.read(|s| s.containers.get(&hub.id).map_or(PowerState::Offline, |r| r.state));
    let Ok(mut chunks) = docker.stats(container_id).await else { return };
    let mut lines = LineSplitter::new(1 << 20);
    loop {
        let viewers_changed = hub.tty().viewers_changed.notified();
        tokio::pin!(viewers_changed);
        viewers_changed.as_mut().enable();
        if !hub.wants_stats() {
            return;
        }
        let chunk = tokio::select! {
            c = chunks.next() => c,
            _ = viewers_changed => continue,
        };
        let Some(Ok(chunk)) = chunk else { return };
        let mut samples = Vec::new();
        lines.push(&chunk, |l| {
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                samples.push(sample(&v));
            }
        });
        for mut s in samples {
            let st = state();
            if st == PowerState::Offline {
                // The server stopped: a stats stream stays open on a stopped container, so end it.
                return;
            }
            s.state = st.as_str();
            let started = hub.stats().started_at.load(Acquire);
            s.uptime_s = if st == PowerState::Offline || started == 0 { 0 } else { now().saturating_sub(started) };
            hub.news().publish(Event::Stats(serde_json::to_string(&s).unwrap_or_default()));
            hub.stats().set(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_and_memory_like_docker_stats() {
        let v = json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 300_000_000u64}, "system_cpu_usage": 2_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 100_000_000u64}, "system_cpu_usage": 1_000_000_000u64},
            "memory_stats": {"usage": 50_000_000u64, "limit": 100_000_000u64, "stats": {"total_inactive_file": 10_000_000u64}},
            "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}}
        });
        let s = sample(&v);
        assert_eq!(s.cpu_percent, 40.0);
        assert_eq!(s.memory_bytes, 40_000_000);
        assert_eq!(s.memory_limit_bytes, 100_000_000);
        assert_eq!((s.network_rx_bytes, s.network_tx_bytes), (11, 22));
        // cgroup v2 names, per-cpu fallback, first sample without precpu.
        let v = json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 10u64, "percpu_usage": [5, 5, 0, 0]}, "system_cpu_usage": 100u64},
            "memory_stats": {"usage": 500u64, "stats": {"inactive_file": 100u64}}
        });
        let s = sample(&v);
        assert_eq!(s.cpu_percent, 40.0);
        assert_eq!(s.memory_bytes, 400);
        assert_eq!(sample(&json!({})), Sample::default());
    }
}
