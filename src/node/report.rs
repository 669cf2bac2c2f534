//! `GET /system`, the node report: Wings' `/api/system?v=2` fields, the host's utilization,
//! what servers have been promised (`committed`) and what is left for new ones (`free`).

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::host::Filesystem;
use crate::config::Overcommit;
use crate::store::State;

/// What the engine says of itself (`GET /info`), in Wings' shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DockerFacts {
    pub version: String,
    pub cgroups: DockerCgroups,
    pub containers: DockerContainers,
    pub storage: DockerStorage,
    pub runc: DockerRunc,
}

/// The engine's cgroup driver (`cgroupfs`, `systemd`) and version (`1`, `2`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DockerCgroups {
    pub driver: String,
    pub version: String,
}

/// Containers on the engine, all of them (not only lightd's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DockerContainers {
    pub total: u64,
    pub running: u64,
    pub paused: u64,
    pub stopped: u64,
}

/// The storage driver and the file system under it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DockerStorage {
    pub driver: String,
    pub filesystem: String,
}

/// The runc build the engine runs (its commit, as Wings reports it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DockerRunc {
    pub version: String,
}

/// Reads `GET /info`: the facts, and the engine's data directory (`DockerRootDir`).
pub fn docker_facts(info: &Value) -> (DockerFacts, Option<PathBuf>) {
    let s = |k: &str| info.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let n = |k: &str| info.get(k).and_then(Value::as_u64).unwrap_or(0);
    let filesystem = info
        .get("DriverStatus")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|pair| pair.get(0).and_then(Value::as_str) == Some("Backing Filesystem"))
        .and_then(|pair| pair.get(1).and_then(Value::as_str))
        .unwrap_or("")
        .to_string();
    let facts = DockerFacts {
        version: s("ServerVersion"),
        cgroups: DockerCgroups { driver: s("CgroupDriver"), version: s("CgroupVersion") },
        containers: DockerContainers {
            total: n("Containers"),
            running: n("ContainersRunning"),
            paused: n("ContainersPaused"),
            stopped: n("ContainersStopped"),
        },
        storage: DockerStorage { driver: s("Driver"), filesystem },
        runc: DockerRunc { version: info.pointer("/RuncCommit/ID").and_then(Value::as_str).unwrap_or("").to_string() },
    };
    let root = info.get("DockerRootDir").and_then(Value::as_str).filter(|r| r.starts_with('/')).map(PathBuf::from);
    (facts, root)
}

/// The host, in Wings' shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SystemFacts {
    pub architecture: &'static str,
    pub cpu_threads: usize,
    pub memory_bytes: u64,
    pub kernel_version: String,
    pub os: String,
    pub os_type: &'static str,
}

/// How busy the host is.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Utilization {
    /// All CPUs over the last interval, 0-100.
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    /// 1, 5 and 15 minutes.
    pub load_average: [f64; 3],
    pub filesystems: Vec<Filesystem>,
}

/// Everything of the report that is read in the background, with when it was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub docker: DockerFacts,
    pub system: SystemFacts,
    pub utilization: Utilization,
    /// Unix seconds of the reading.
    pub updated_at: u64,
}

impl Facts {
    /// Size of the file system holding the volumes (0 when it could not be read).
    fn volumes_bytes(&self) -> u64 {
        self.utilization.filesystems.iter().find(|f| f.holds.contains(&"volumes")).map_or(0, |f| f.total_bytes)
    }
}

/// What the servers on record were promised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Committed {
    /// Sum of the servers' memory limits.
    pub memory_bytes: u64,
    /// Sum of the servers' CPU limits, in cores.
    pub cpu: f64,
    /// Sum of the volumes' size limits.
    pub disk_bytes: u64,
    pub containers: usize,
    pub volumes: usize,
}

pub fn committed(s: &State) -> Committed {
    let limits = s.containers.values().map(|c| c.limits);
    Committed {
        memory_bytes: limits.clone().filter_map(|l| l.memory).fold(0u64, u64::saturating_add),
        cpu: round4(limits.filter_map(|l| l.cpu).fold(0.0, |a, b| a + b)),
        disk_bytes: s.volumes.values().map(|v| v.size_limit_bytes).fold(0u64, u64::saturating_add),
        containers: s.containers.len(),
        volumes: s.volumes.len(),
    }
}

/// What the node's own limits leave for new servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Free {
    /// Memory x `node.overcommit.memory`, less `node.reserved_memory` and what is committed.
    pub memory_bytes: u64,
    /// CPU threads x `node.overcommit.cpu`, less what is committed.
    pub cpu: f64,
    /// The volumes' file system x `node.overcommit.disk`, less what is committed.
    pub disk_bytes: u64,
}

/// The node's own limits on what it offers servers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub reserved_memory: u64,
    pub overcommit: Overcommit,
}

pub fn free(facts: &Facts, c: &Committed, cap: &Capacity) -> Free {
    let scaled = |v: u64, r: f64| (v as f64 * r).min(u64::MAX as f64) as u64;
    let o = cap.overcommit;
    Free {
        memory_bytes: scaled(facts.system.memory_bytes, o.memory)
            .saturating_sub(cap.reserved_memory)
            .saturating_sub(c.memory_bytes),
        cpu: round4((facts.system.cpu_threads as f64 * o.cpu - c.cpu).max(0.0)),
        disk_bytes: scaled(facts.volumes_bytes(), o.disk).saturating_sub(c.disk_bytes),
    }
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// The whole answer of `GET /system`.
#[derive(Serialize)]
struct Report<'a> {
    version: &'static str,
    docker: &'a DockerFacts,
    system: &'a SystemFacts,
    utilization: &'a Utilization,
    committed: &'a Committed,
    free: &'a Free,
    updated_at: u64,
}

/// The report as JSON.
pub fn render(facts: &Facts, committed: &Committed, cap: &Capacity) -> Vec<u8> {
    let free = free(facts, committed, cap);
    let report = Report {
        version: env!("CARGO_PKG_VERSION"),
        docker: &facts.docker,
        system: &facts.system,
        utilization: &facts.utilization,
        committed,
        free: &free,
        updated_at: facts.updated_at,
    };
    serde_json::to_vec(&report).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn docker_info_in_wings_shape() {
        let info = json!({
            "ServerVersion": "20.10.24", "CgroupDriver": "cgroupfs", "CgroupVersion": "1",
            "Containers": 5, "ContainersRunning": 2, "ContainersPaused": 1, "ContainersStopped": 2,
            "Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
            "RuncCommit": {"ID": "v1.1.5"}, "DockerRootDir": "/var/lib/docker"
        });
        let (f, root) = docker_facts(&info);
        assert_eq!(f.version, "20.10.24");
        assert_eq!((f.cgroups.driver.as_str(), f.cgroups.version.as_str()), ("cgroupfs", "1"));
        assert_eq!(f.containers, DockerContainers { total: 5, running: 2, paused: 1, stopped: 2 });
        assert_eq!((f.storage.driver.as_str(), f.storage.filesystem.as_str()), ("overlay2", "extfs"));
        assert_eq!(f.runc.version, "v1.1.5");
        assert_eq!(root, Some(PathBuf::from("/var/lib/docker")));
        let (empty, none) = docker_facts(&json!({"DockerRootDir": "relative"}));
        assert_eq!((empty, none), (DockerFacts::default(), None));
    }

    #[test]
    fn free_is_what_the_limits_leave() {
        let mut facts = Facts::default();
        facts.system.memory_bytes = 8 << 30;
        facts.system.cpu_threads = 4;
        facts.utilization.filesystems = vec![Filesystem {
            path: "/v".into(),
            holds: vec!["volumes", "state"],
            total_bytes: 100 << 30,
            used_bytes: 1,
        }];
        let c = Committed { memory_bytes: 3 << 30, cpu: 2.5, disk_bytes: 30 << 30, containers: 3, volumes: 3 };
        let cap = Capacity { reserved_memory: 1 << 30, overcommit: Overcommit::default() };
        assert_eq!(free(&facts, &c, &cap), Free { memory_bytes: 4 << 30, cpu: 1.5, disk_bytes: 70 << 30 });
        let cap = Capacity { reserved_memory: 1 << 30, overcommit: Overcommit { memory: 2.0, cpu: 0.5, disk: 1.5 } };
        assert_eq!(free(&facts, &c, &cap), Free { memory_bytes: 12 << 30, cpu: 0.0, disk_bytes: 120 << 30 });
        let over = Committed { memory_bytes: 64 << 30, ..c };
        assert_eq!(free(&facts, &over, &cap).memory_bytes, 0, "never below nothing");
        let v: Value = serde_json::from_slice(&render(&facts, &c, &cap)).unwrap();
        assert_eq!(v["committed"]["memory_bytes"], 3u64 << 30);
        assert_eq!(v["utilization"]["filesystems"][0]["holds"], json!(["volumes", "state"]));
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(round4(0.1 + 0.2), 0.3);
        let none = committed(&State::default());
        assert!(none.cpu.is_sign_positive(), "no servers: 0 cores, not -0");
    }
}
