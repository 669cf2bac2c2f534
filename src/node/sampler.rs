//! The background reading, every `node.meter_interval`: the engine's facts, the host's, and for
//! every server its cgroup, network and volume; the meters are advanced and saved. Docker is
//! asked only when a run begins or ends (its init process, when it started and stopped).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;

use super::cgroup::Cgroups;
use super::host;
use super::meters::{Observation, Sight};
use super::netdev::NetNs;
use super::report::{DockerFacts, Facts, SystemFacts, Utilization};
use super::Node;
use crate::docker::Docker;
use crate::model::Quota;
use crate::store::Store;

/// A volume without a size limit is measured by walking it: once every this many readings.
const WALK_EVERY: u32 = 6;
/// Longest wait for one answer of the engine: a hung engine must not stop the kernel's readings.
const DOCKER_WAIT: Duration = Duration::from_secs(5);

/// Reads and saves the meters until the daemon stops (spawned by `main`).
pub async fn run(node: Node, store: Arc<Store>, docker: &Docker) {
    let mut ticker = tokio::time::interval(node.settings().interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampler = Sampler::default();
    let mut saving = true;
    loop {
        ticker.tick().await;
        sampler = sampler.tick(&node, &store, docker).await;
        let n = node.clone();
        let saved =
            tokio::task::spawn_blocking(move || n.save()).await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match (saved, saving) {
            (Err(e), true) => {
                crate::warn!("cannot save the usage meters {}: {e}", node.settings().ledger.display());
                saving = false;
            }
            (Ok(()), false) => {
                crate::info!("usage meters saved again");
                saving = true;
            }
            _ => {}
        }
    }
}

/// One server at a reading, as the records have it.
struct Target {
    id: String,
    record_id: String,
    created_at: u64,
    container_id: Option<String>,
    /// Its volume: id, directory, how its limit is kept.
    volume: Option<(String, PathBuf, Quota)>,
    /// The run its meters know: container id, cgroup inode, init process.
    known: Option<(String, u64, u32)>,
}

impl Target {
    /// Whether `r` is the run the meters know.
    fn same_run(&self, r: &super::cgroup::Reading) -> bool {
        matches!((&self.known, &self.container_id), (Some((c, ino, _)), Some(cid)) if c == cid && *ino == r.ino)
    }
}

/// What the sampler keeps between readings (never on disk).
#[derive(Default)]
struct Sampler {
    /// Each running server's network namespace: its container, cgroup inode, and init process.
    nets: HashMap<String, (String, u64, NetNs)>,
    /// Volumes without a limit: when each was last walked, and what it held.
    walked: HashMap<String, (Instant, u64)>,
    /// The host's CPU counters at the last reading.
    cpu: Option<(u64, u64)>,
    /// The engine's facts and data directory, as last answered.
    docker: Option<(DockerFacts, Option<PathBuf>)>,
    /// The engine answered in time during this reading (once it has not, it is not asked again
    /// until the next).
    engine_answers: bool,
}

impl Sampler {
    async fn tick(mut self, node: &Node, store: &Store, docker: &Docker) -> Sampler {
        self.engine_answers = true;
        if let Some(info) = self.ask(docker.json(Method::GET, "/info", None)).await {
            self.docker = Some(super::report::docker_facts(&info));
        }
        let targets = targets(node, store);
        let (cgroups, dirs) = (node.inner.cgroups.clone(), node.settings().dirs.clone());
        let walk_every = node.settings().interval * WALK_EVERY;
        let looked = tokio::task::spawn_blocking(move || {
            let looked = self.look(&cgroups, targets, walk_every);
            let (facts, cpu) = host_facts(&dirs, self.docker.as_ref(), self.cpu);
            self.cpu = cpu;
            (self, looked, facts)
        })
        .await;
        let Ok((mut sampler, looked, facts)) = looked else {
            // The reading panicked: begin again with nothing kept (the ledger holds the runs).
            return Sampler::default();
        };
        node.set_facts(facts);
        let mut observed = Vec::with_capacity(looked.len());
        for (target, o) in looked {
            let o = sampler.ask_docker(docker, &target, o).await;
            observed.push((target, o));
        }
        let mut ledger = node.ledger();
        for (t, o) in &observed {
            ledger.entry(&t.id, &t.record_id, t.created_at).observe(o);
        }
        sampler
    }

    /// The kernel's side of every server (blocking: cgroup and `/proc` files, volume walks).
    fn look(&mut self, cgroups: &Cgroups, targets: Vec<Target>, walk_every: Duration) -> Vec<(Target, Observation)> {
        let mut out = Vec::with_capacity(targets.len());
        let mut walked_now = HashSet::new();
        for t in targets {
            let disk = self.disk(t.volume.as_ref(), walk_every, &mut walked_now);
            let sight = match t.container_id.as_deref().map(|cid| cgroups.read(cid)) {
                None | Some(Ok(None)) => Sight::Absent,
                Some(Ok(Some(r))) => Sight::Present(r),
                Some(Err(_)) => Sight::Unknown,
            };
            let now_ms = now_ms();
            let mut net = None;
            match sight {
                Sight::Present(r) if t.same_run(&r) => {
                    let cid = t.container_id.clone().unwrap_or_default();
                    let open = matches!(self.nets.get(&t.id), Some((c, ino, _)) if *c == cid && *ino == r.ino);
                    if !open {
                        self.nets.remove(&t.id);
                        // After a daemon restart: the init process the meters kept, if it still is.
                        let pid = t.known.as_ref().map_or(0, |k| k.2);
                        if let Ok(ns) = NetNs::open(pid, &cid) {
                            self.nets.insert(t.id.clone(), (cid, r.ino, ns));
                        }
                    }
                    net = self.nets.get(&t.id).and_then(|(_, _, ns)| ns.counters().ok());
                }
                Sight::Present(_) | Sight::Absent => {
                    self.nets.remove(&t.id);
                }
                Sight::Unknown => {}
            }
            let pid = self.nets.get(&t.id).map_or(0, |(_, _, ns)| ns.pid);
            let o = Observation {
                container_id: t.container_id.clone(),
                cgroup: sight,
                net,
                pid,
                started_at_ms: None,
                finished_at_ms: None,
                disk,
                now_ms,
            };
            out.push((t, o));
        }
        self.nets.retain(|id, _| out.iter().any(|(t, _)| &t.id == id));
        self.walked.retain(|vid, _| out.iter().any(|(t, _)| t.volume.as_ref().is_some_and(|v| &v.0 == vid)));
        out
    }

    /// Bytes a volume uses: `statfs` of a loop volume, else a walk at most every `walk_every`.
    fn disk(
        &mut self,
        volume: Option<&(String, PathBuf, Quota)>,
        walk_every: Duration,
        walked_now: &mut HashSet<String>,
    ) -> Option<u64> {
        let (id, path, quota) = volume?;
        match quota {
            Quota::Loop => crate::quota::usage(path).ok().map(|u| u.used_bytes),
            Quota::None => {
                let fresh = self.walked.get(id).is_some_and(|(at, _)| at.elapsed() < walk_every);
                if !fresh && walked_now.insert(id.clone()) {
                    if let Ok(bytes) = crate::vfs::Root::open(path).and_then(|root| root.usage()) {
                        self.walked.insert(id.clone(), (Instant::now(), bytes));
                    }
                }
                self.walked.get(id).map(|(_, bytes)| *bytes)
            }
        }
    }

    /// Docker's side of a run that begins (its init process, when it started, when the one
    /// before it ended) or ends (when); nothing for a run already known.
    async fn ask_docker(&mut self, docker: &Docker, t: &Target, mut o: Observation) -> Observation {
        match (o.cgroup, t.container_id.as_deref()) {
            (Sight::Present(r), Some(cid)) => {
                let same = t.same_run(&r);
                if same && self.nets.contains_key(&t.id) {
                    return o;
                }
                let Some(info) = self.ask(docker.inspect_container(cid)).await else { return o };
                let st = &info["State"];
                if !same {
                    let started = st["StartedAt"].as_str().and_then(rfc3339_ms);
                    let finished = st["FinishedAt"].as_str().and_then(rfc3339_ms);
                    o.started_at_ms = started;
                    o.finished_at_ms = finished.filter(|f| started.is_some_and(|s| *f <= s));
                }
                let pid = st["Pid"].as_u64().and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
                if let Ok(ns) = NetNs::open(pid, cid) {
                    o.net = ns.counters().ok();
                    o.pid = pid;
                    self.nets.insert(t.id.clone(), (cid.to_string(), r.ino, ns));
                }
            }
            (Sight::Absent, _) => {
                if let Some((cid, _, _)) = &t.known {
                    if let Some(info) = self.ask(docker.inspect_container(cid)).await {
                        o.finished_at_ms = info["State"]["FinishedAt"].as_str().and_then(rfc3339_ms);
                    }
                }
            }
            _ => {}
        }
        o
    }
}

impl Sampler {
    /// One call to the engine, bounded by [`DOCKER_WAIT`]; none once one did not answer in time.
    async fn ask<T>(
        &mut self,
        call: impl std::future::Future<Output = Result<T, crate::docker::DockerError>>,
    ) -> Option<T> {
        if !self.engine_answers {
            return None;
        }
        match tokio::time::timeout(DOCKER_WAIT, call).await {
            Ok(answer) => answer.ok(),
            Err(_) => {
                self.engine_answers = false;
                None
            }
        }
    }
}

/// Every server on record, with the run its meters know; the meters of servers no longer on
/// record go (under the ledger's lock, so a start told meanwhile is never dropped).
fn targets(node: &Node, store: &Store) -> Vec<Target> {
    let mut ledger = node.ledger();
    let mut targets: Vec<Target> = store.read(|s| {
        s.containers
            .values()
            .map(|c| Target {
                id: c.internal_id.clone(),
                record_id: c.record_id.clone(),
                created_at: c.created_at,
                container_id: c.container_id.clone(),
                volume: s.volumes.get(&c.volume_id).map(|v| (v.volume_id.clone(), v.path.clone(), v.quota)),
                known: None,
            })
            .collect()
    });
    let on_record: HashSet<(&str, &str)> = targets.iter().map(|t| (t.id.as_str(), t.record_id.as_str())).collect();
    ledger.retain(|id, record_id| on_record.contains(&(id, record_id)));
    for t in &mut targets {
        let run = ledger.servers.get(&t.id).filter(|m| m.record_id == t.record_id).and_then(|m| m.run.as_ref());
        t.known = run.map(|r| (r.container_id.clone(), r.cgroup_ino, r.pid));
    }
    targets
}

/// The host's facts now (blocking: `/proc` and `statvfs`), and its CPU counters for the next.
pub fn host_facts(
    dirs: &[(&'static str, PathBuf)],
    docker: Option<&(DockerFacts, Option<PathBuf>)>,
    cpu_before: Option<(u64, u64)>,
) -> (Facts, Option<(u64, u64)>) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mem = host::parse_meminfo(&read("/proc/meminfo"));
    let cpu = host::parse_cpu(&read("/proc/stat"));
    let cpu_percent = cpu.map_or(0.0, |now| host::cpu_percent(cpu_before.unwrap_or((0, 0)), now));
    let mut dirs = dirs.to_vec();
    if let Some(root) = docker.and_then(|d| d.1.clone()) {
        dirs.push(("docker", root));
    }
    let os = host::os_name(&read("/etc/os-release")).or_else(|| host::os_name(&read("/usr/lib/os-release")));
    let facts = Facts {
        docker: docker.map(|d| d.0.clone()).unwrap_or_default(),
        system: SystemFacts {
            architecture: host::architecture(),
            cpu_threads: host::cpu_threads(),
            memory_bytes: mem.total,
            kernel_version: host::kernel_version(),
            os: os.unwrap_or_else(|| "Linux".into()),
            os_type: std::env::consts::OS,
        },
        utilization: Utilization {
            cpu_percent,
            memory_used_bytes: mem.total.saturating_sub(mem.available),
            swap_total_bytes: mem.swap_total,
            swap_used_bytes: mem.swap_total.saturating_sub(mem.swap_free),
            load_average: host::parse_loadavg(&read("/proc/loadavg")),
            filesystems: host::filesystems(&dirs),
        },
        updated_at: crate::model::now(),
    };
    (facts, cpu)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds of an RFC 3339 time as Docker writes them (`2024-05-06T07:08:09.123456789Z`,
/// or with a `+hh:mm` offset); `None` for anything else, or a time before 1970 (Docker's
/// "never": `0001-01-01T00:00:00Z`).
pub fn rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (num(0, 4)?, num(5, 2)?, num(8, 2)?, num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let frac = &s[i + 1..i + 1 + digits.min(3)];
        ms = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
        i += 1 + digits;
    }
    let offset_min = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(tz.as_bytes()[0], b'+' | b'-') && tz.as_bytes()[3] == b':' => {
            let mins = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if tz.starts_with('-') {
                -mins
            } else {
                mins
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    u64::try_from(secs.checked_mul(1000)?.checked_add(ms)?).ok()
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("2024-02-29T12:34:56.789123456Z"), Some(1_709_210_096_789));
        assert_eq!(rfc3339_ms("2024-02-29T12:34:56Z"), Some(1_709_210_096_000));
        assert_eq!(rfc3339_ms("2024-02-29T14:34:56.5+02:00"), Some(1_709_210_096_500));
        assert_eq!(rfc3339_ms("0001-01-01T00:00:00Z"), None, "Docker's never");
        for bad in ["", "2024-02-29", "2024-13-01T00:00:00Z", "2024-02-29T12:34:56.Z", "2024-02-29T12:34:56+0200", "x"]
        {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn host_facts_read_this_host() {
        let dirs = vec![("state", std::env::temp_dir())];
        let (f, cpu) = host_facts(&dirs, None, None);
        assert!(cpu.is_some());
        assert!(f.system.memory_bytes > 0 && f.system.cpu_threads >= 1);
        assert_eq!((f.system.os_type, f.docker.version.as_str()), ("linux", ""));
        assert!(f.utilization.memory_used_bytes <= f.system.memory_bytes);
        assert_eq!(f.utilization.filesystems.len(), 1);
        let (again, _) = host_facts(&dirs, None, cpu);
        assert!((0.0..=100.0).contains(&again.utilization.cpu_percent));
    }
}
