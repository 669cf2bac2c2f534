//! One server's usage meters: totals that only ever grow, advanced by the kernel counters of
//! each run of its container. A counter is read as a delta from the last reading of the same
//! run; a new run (a new cgroup, a new container) starts its counters at 0 again.

use serde::{Deserialize, Serialize};

use super::cgroup::Reading;
use super::netdev::Counters;

/// What one server has used since its meters began; kept in the ledger on disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// The record these meters belong to (a new record of the same id starts new ones).
    pub record_id: String,
    /// Unix seconds the meters began.
    pub since: u64,
    pub cpu_ns: u64,
    /// Memory in use integrated over time.
    pub memory_byte_seconds: f64,
    /// The most memory in use at a reading.
    pub memory_peak_bytes: u64,
    pub disk_bytes: u64,
    pub disk_peak_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub uptime_ms: u64,
    pub starts: u64,
    pub crashes: u64,
    /// Unix seconds of the last reading.
    pub updated_at: u64,
    /// The run being metered, if the container runs.
    pub run: Option<Run>,
}

/// A run of the server's container, and its kernel counters as last read: the next reading
/// adds what they grew by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub container_id: String,
    /// The inode of its cgroup directory: another one is another run.
    pub cgroup_ino: u64,
    pub cpu_ns: u64,
    /// Per interface, as last read; `None` until its network was first read.
    pub net: Option<Counters>,
    /// The run began after the meters did: everything its counters hold is the server's (else
    /// only what they gain from the first reading on).
    pub from_zero: bool,
    /// Its init process (for the network counters), 0 while unknown.
    pub pid: u32,
    /// Unix milliseconds of the last reading.
    pub read_at_ms: u64,
}

/// What a server's cgroup looked like at one sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sight {
    /// It has none: the container does not run.
    Absent,
    Present(Reading),
    /// It could not be read this time: nothing is concluded.
    Unknown,
}

/// One sampling of a server, as the sampler found it.
#[derive(Debug, Clone)]
pub struct Observation {
    pub container_id: Option<String>,
    pub cgroup: Sight,
    /// Its network counters, when read.
    pub net: Option<Counters>,
    pub pid: u32,
    /// When a run that is new here began, per Docker (unix ms).
    pub started_at_ms: Option<u64>,
    /// When the run that ended (or was replaced) finished, per Docker (unix ms).
    pub finished_at_ms: Option<u64>,
    /// Bytes its volume uses, when read.
    pub disk: Option<u64>,
    pub now_ms: u64,
}

/// How much a counter grew since `prev`; one that went down was begun anew (a new cgroup or
/// interface), so all of it is new.
pub fn advance(prev: u64, now: u64) -> u64 {
    if now >= prev {
        now - prev
    } else {
        now
    }
}

impl Totals {
    /// New meters for record `record_id`, beginning at `since`.
    pub fn new(record_id: &str, since: u64) -> Totals {
        Totals { record_id: record_id.to_string(), since, ..Totals::default() }
    }

    /// Adds what `o` shows since the last reading.
    pub fn observe(&mut self, o: &Observation) {
        if let Some(d) = o.disk {
            self.disk_bytes = d;
            self.disk_peak_bytes = self.disk_peak_bytes.max(d);
        }
        let (reading, cid) = match (o.cgroup, &o.container_id) {
            (Sight::Unknown, _) => return,
            (Sight::Present(r), Some(cid)) => (r, cid),
            (Sight::Absent, _) | (Sight::Present(_), None) => {
                self.end_run(o);
                self.updated_at = o.now_ms / 1000;
                return;
            }
        };
        let same = self.run.as_ref().is_some_and(|r| &r.container_id == cid && r.cgroup_ino == reading.ino);
        if !same {
            self.end_run(o);
            self.run = Some(self.begin_run(cid, reading, o));
        }
        let Some(run) = self.run.as_mut() else { return };
        self.cpu_ns = self.cpu_ns.saturating_add(advance(run.cpu_ns, reading.cpu_ns));
        run.cpu_ns = reading.cpu_ns;
        let dt = o.now_ms.saturating_sub(run.read_at_ms);
        self.uptime_ms = self.uptime_ms.saturating_add(dt);
        self.memory_byte_seconds += reading.memory_bytes as f64 * dt as f64 / 1000.0;
        self.memory_peak_bytes = self.memory_peak_bytes.max(reading.memory_bytes);
        run.read_at_ms = run.read_at_ms.max(o.now_ms);
        if o.pid != 0 {
            run.pid = o.pid;
        }
        if let Some(now) = &o.net {
            let base = match run.net.take() {
                Some(prev) => prev,
                // First read of this run: all of it is the server's, or none of what came before.
                None if run.from_zero => Counters::new(),
                None => now.clone(),
            };
            for (name, (rx, tx)) in now {
                let (rx0, tx0) = base.get(name).copied().unwrap_or((0, 0));
                self.network_rx_bytes = self.network_rx_bytes.saturating_add(advance(rx0, *rx));
                self.network_tx_bytes = self.network_tx_bytes.saturating_add(advance(tx0, *tx));
            }
            run.net = Some(now.clone());
        }
        self.updated_at = o.now_ms / 1000;
    }

    /// A run seen for the first time. Its counters began at 0 when it did; one that began
    /// before the meters did counts from now on.
    fn begin_run(&self, cid: &str, reading: Reading, o: &Observation) -> Run {
        let since_ms = self.since.saturating_mul(1000);
        let from_zero = o.started_at_ms.is_none_or(|s| s >= since_ms);
        let counted_from = o.started_at_ms.map_or(o.now_ms, |s| s.max(since_ms)).min(o.now_ms);
        Run {
            container_id: cid.to_string(),
            cgroup_ino: reading.ino,
            cpu_ns: if from_zero { 0 } else { reading.cpu_ns },
            net: None,
            from_zero,
            pid: o.pid,
            read_at_ms: counted_from,
        }
    }

    /// The current run is over: the time from its last reading to its end counts too, when
    /// Docker said when it ended. (Its CPU and network since that reading died with its cgroup.)
    fn end_run(&mut self, o: &Observation) {
        let Some(run) = self.run.take() else { return };
        if let Some(end) = o.finished_at_ms.filter(|end| *end > run.read_at_ms) {
            let tail = (end - run.read_at_ms).min(o.now_ms.saturating_sub(run.read_at_ms));
            self.uptime_ms = self.uptime_ms.saturating_add(tail);
        }
    }

    /// The meters as `GET /containers/:id/usage` shows them.
    pub fn usage(&self) -> Usage {
        Usage {
            since: self.since,
            updated_at: self.updated_at,
            cpu_seconds: self.cpu_ns as f64 / 1e9,
            memory_gib_hours: self.memory_byte_seconds / GIB_HOUR,
            memory_peak_bytes: self.memory_peak_bytes,
            disk_bytes: self.disk_bytes,
            disk_peak_bytes: self.disk_peak_bytes,
            network_rx_bytes: self.network_rx_bytes,
            network_tx_bytes: self.network_tx_bytes,
            uptime_seconds: self.uptime_ms as f64 / 1000.0,
            starts: self.starts,
            crashes: self.crashes,
        }
    }
}

/// Byte-seconds in a GiB-hour.
pub const GIB_HOUR: f64 = (1u64 << 30) as f64 * 3600.0;

/// A server's meters for a panel: `GET /containers/:id/usage`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    pub since: u64,
    pub updated_at: u64,
    pub cpu_seconds: f64,
    pub memory_gib_hours: f64,
    pub memory_peak_bytes: u64,
    pub disk_bytes: u64,
    pub disk_peak_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub uptime_seconds: f64,
    pub starts: u64,
    pub crashes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "c1";

    fn seen(ino: u64, cpu_ns: u64, mem: u64, net: Option<(u64, u64)>, now_ms: u64) -> Observation {
        Observation {
            container_id: Some(CID.into()),
            cgroup: Sight::Present(Reading { ino, cpu_ns, memory_bytes: mem }),
            net: net.map(|(rx, tx)| Counters::from([("eth0".to_string(), (rx, tx))])),
            pid: 42,
            started_at_ms: None,
            finished_at_ms: None,
            disk: None,
            now_ms,
        }
    }

    fn gone(now_ms: u64, finished_at_ms: Option<u64>) -> Observation {
        Observation {
            container_id: Some(CID.into()),
            cgroup: Sight::Absent,
            net: None,
            pid: 0,
            started_at_ms: None,
            finished_at_ms,
            disk: None,
            now_ms,
        }
    }

    #[test]
    fn deltas_of_one_run_then_a_new_run_from_zero() {
        let mut t = Totals::new("r1", 1000);
        let mut first = seen(7, 3_000_000_000, 1 << 30, Some((100, 200)), 1_010_000);
        first.started_at_ms = Some(1_005_000);
        t.observe(&first);
        assert_eq!((t.cpu_ns, t.network_rx_bytes, t.network_tx_bytes), (3_000_000_000, 100, 200), "a new run from 0");
        assert_eq!(t.uptime_ms, 5000, "up since Docker's StartedAt");
        t.observe(&seen(7, 4_000_000_000, 1 << 30, Some((150, 260)), 1_020_000));
        assert_eq!((t.cpu_ns, t.network_rx_bytes, t.network_tx_bytes), (4_000_000_000, 150, 260));
        assert_eq!(t.uptime_ms, 15_000);
        assert!((t.memory_byte_seconds - (15.0 * (1u64 << 30) as f64)).abs() < 1.0, "{}", t.memory_byte_seconds);
        // Restarted between two readings: a new cgroup whose counter is already past the old one.
        t.observe(&seen(8, 5_000_000_000, 1 << 20, Some((10, 20)), 1_030_000));
        assert_eq!(t.cpu_ns, 9_000_000_000, "a new cgroup counts from 0, even when its counter is higher");
        assert_eq!((t.network_rx_bytes, t.network_tx_bytes), (160, 280));
        assert_eq!(t.memory_peak_bytes, 1 << 30);
        let u = t.usage();
        assert_eq!((u.cpu_seconds, u.since, u.updated_at), (9.0, 1000, 1030));
    }

    #[test]
    fn a_stop_ends_the_run_with_its_tail_and_nothing_goes_back() {
        let mut t = Totals::new("r1", 0);
        t.observe(&seen(1, 10, 5, Some((1, 1)), 10_000));
        t.observe(&seen(1, 20, 5, Some((2, 2)), 20_000));
        let before = t.clone();
        t.observe(&gone(30_000, Some(24_000)));
        assert_eq!(t.run, None);
        assert_eq!(t.uptime_ms, before.uptime_ms + 4000, "up until Docker's FinishedAt");
        assert_eq!((t.cpu_ns, t.network_rx_bytes), (before.cpu_ns, before.network_rx_bytes));
        t.observe(&gone(40_000, Some(24_000)));
        assert_eq!(t.uptime_ms, before.uptime_ms + 4000, "an ended run is ended once");
        // Unreadable: nothing changes.
        let mut unknown = seen(1, 0, 0, None, 50_000);
        unknown.cgroup = Sight::Unknown;
        let kept = t.clone();
        t.observe(&unknown);
        assert_eq!(t, kept);
    }

    #[test]
    fn counters_that_go_down_and_interfaces_that_come_and_go() {
        assert_eq!((advance(10, 15), advance(10, 3), advance(0, 0)), (5, 3, 0));
        let mut t = Totals::new("r1", 0);
        t.observe(&seen(1, 100, 0, Some((1000, 1000)), 1000));
        let mut two = seen(1, 50, 0, None, 2000);
        two.net = Some(Counters::from([("eth0".into(), (1500, 1100)), ("eth1".into(), (7, 9))]));
        t.observe(&two);
        assert_eq!(t.cpu_ns, 150, "a counter that went down was begun anew");
        assert_eq!((t.network_rx_bytes, t.network_tx_bytes), (1507, 1109));
        t.observe(&seen(1, 60, 0, Some((1600, 1200)), 3000));
        assert_eq!((t.network_rx_bytes, t.network_tx_bytes), (1607, 1209), "eth1 gone: nothing taken back");
    }

    #[test]
    fn a_run_older_than_the_meters_counts_from_the_first_reading() {
        let mut t = Totals::new("r1", 100);
        let mut o = seen(3, 8_000_000_000, 1 << 20, None, 130_000);
        o.started_at_ms = Some(50_000);
        t.observe(&o);
        assert_eq!(t.cpu_ns, 0, "what it used before the meters began is not the server's bill");
        assert_eq!(t.uptime_ms, 30_000, "up since the meters began");
        t.observe(&seen(3, 9_000_000_000, 1 << 20, Some((500, 600)), 140_000));
        assert_eq!((t.cpu_ns, t.network_rx_bytes, t.network_tx_bytes), (1_000_000_000, 0, 0));
        t.observe(&seen(3, 9_000_000_000, 1 << 20, Some((510, 650)), 150_000));
        assert_eq!((t.network_rx_bytes, t.network_tx_bytes), (10, 50));
    }

    #[test]
    fn the_ledger_form_round_trips() {
        let mut t = Totals::new("r1", 5);
        t.observe(&seen(9, 123, 1 << 20, Some((4, 5)), 9000));
        t.memory_byte_seconds = 0.1 + 0.2;
        let back: Totals = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        let old: Totals = serde_json::from_str(r#"{"record_id":"r","cpu_ns":5}"#).unwrap();
        assert_eq!((old.cpu_ns, old.run), (5, None), "missing fields default");
    }
}
