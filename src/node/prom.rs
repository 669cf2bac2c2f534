//! The node's part of `GET /metrics`: every server's meters as counters (a panel or Prometheus
//! takes a period's usage as a difference), and the node report's numbers as gauges.

use std::fmt::Write;

use super::meters::Totals;
use super::report::{Committed, Facts, Free};
use crate::metrics::escape;

/// One family of per-server samples: name, type, help, and the value of one server's meters.
type Family = (&'static str, &'static str, &'static str, fn(&Totals) -> f64);

const SERVER_FAMILIES: [Family; 10] = [
    ("lightd_container_cpu_seconds_total", "counter", "CPU time the server used.", |t| t.cpu_ns as f64 / 1e9),
    (
        "lightd_container_memory_byte_seconds_total",
        "counter",
        "Memory in use (less inactive page cache) integrated over time; / 2^30 / 3600 = GiB-hours.",
        |t| t.memory_byte_seconds,
    ),
    ("lightd_container_network_receive_bytes_total", "counter", "Bytes the server received.", |t| {
        t.network_rx_bytes as f64
    }),
    ("lightd_container_network_transmit_bytes_total", "counter", "Bytes the server sent.", |t| {
        t.network_tx_bytes as f64
    }),
    ("lightd_container_uptime_seconds_total", "counter", "Time the server's container ran.", |t| {
        t.uptime_ms as f64 / 1000.0
    }),
    ("lightd_container_starts_total", "counter", "Starts of the server.", |t| t.starts as f64),
    ("lightd_container_crashes_total", "counter", "Exits of the server lightd did not ask for.", |t| t.crashes as f64),
    ("lightd_container_memory_peak_bytes", "gauge", "The most memory the server had in use at a reading.", |t| {
        t.memory_peak_bytes as f64
    }),
    ("lightd_container_disk_bytes", "gauge", "Bytes the server's volume uses.", |t| t.disk_bytes as f64),
    ("lightd_container_disk_peak_bytes", "gauge", "The most bytes the server's volume used at a reading.", |t| {
        t.disk_peak_bytes as f64
    }),
];

/// Appends every server's meters (`servers`: internal id and meters, in id order).
pub fn servers(out: &mut String, servers: &[(String, Totals)]) {
    let ids: Vec<String> = servers.iter().map(|(id, _)| escape(id)).collect();
    for (name, kind, help, value) in SERVER_FAMILIES {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (id, (_, t)) in ids.iter().zip(servers) {
            let _ = writeln!(out, "{name}{{container=\"{id}\"}} {}", value(t));
        }
    }
}

/// Appends the node report's numbers as gauges.
pub fn node(out: &mut String, facts: &Facts, committed: &Committed, free: &Free) {
    let u = &facts.utilization;
    let gauges: [(&str, &str, f64); 17] = [
        ("lightd_node_cpu_threads", "Hardware threads of the node.", facts.system.cpu_threads as f64),
        ("lightd_node_memory_bytes", "Memory of the node.", facts.system.memory_bytes as f64),
        ("lightd_node_cpu_percent", "Busy share of all CPUs over the last interval (0-100).", u.cpu_percent),
        ("lightd_node_memory_used_bytes", "Memory in use (total less available).", u.memory_used_bytes as f64),
        ("lightd_node_swap_total_bytes", "Swap of the node.", u.swap_total_bytes as f64),
        ("lightd_node_swap_used_bytes", "Swap in use.", u.swap_used_bytes as f64),
        ("lightd_node_load1", "Load average over 1 minute.", u.load_average[0]),
        ("lightd_node_load5", "Load average over 5 minutes.", u.load_average[1]),
        ("lightd_node_load15", "Load average over 15 minutes.", u.load_average[2]),
        ("lightd_node_committed_memory_bytes", "Sum of the servers' memory limits.", committed.memory_bytes as f64),
        ("lightd_node_committed_cpu", "Sum of the servers' CPU limits, in cores.", committed.cpu),
        ("lightd_node_committed_disk_bytes", "Sum of the volumes' size limits.", committed.disk_bytes as f64),
        ("lightd_node_free_memory_bytes", "Memory left for new servers under node.*.", free.memory_bytes as f64),
        ("lightd_node_free_cpu", "CPU cores left for new servers under node.*.", free.cpu),
        ("lightd_node_free_disk_bytes", "Volume space left for new servers under node.*.", free.disk_bytes as f64),
        ("lightd_node_report_updated_seconds", "Unix time of the node's last reading.", facts.updated_at as f64),
        (
            "lightd_node_docker_containers",
            "Containers on the engine (all of them, not only lightd's).",
            facts.docker.containers.total as f64,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
    }
    for (name, help, value) in [
        ("lightd_node_filesystem_size_bytes", "Size of a file system holding lightd's data.", 0),
        ("lightd_node_filesystem_used_bytes", "Bytes used on a file system holding lightd's data.", 1),
    ] {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for fs in &u.filesystems {
            let bytes = if value == 0 { fs.total_bytes } else { fs.used_bytes };
            let path = escape(&fs.path.to_string_lossy());
            let _ = writeln!(out, "{name}{{path=\"{path}\",holds=\"{}\"}} {bytes}", fs.holds.join(","));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_series_per_server_and_family() {
        let mut t = Totals::new("r", 0);
        t.cpu_ns = 1_500_000_000;
        t.network_tx_bytes = 52_428_800;
        let mut out = String::new();
        servers(&mut out, &[("a\"b".into(), t), ("c".into(), Totals::default())]);
        assert!(out.contains("lightd_container_cpu_seconds_total{container=\"a\\\"b\"} 1.5\n"), "{out}");
        assert!(out.contains("lightd_container_network_transmit_bytes_total{container=\"a\\\"b\"} 52428800\n"));
        assert!(out.contains("lightd_container_cpu_seconds_total{container=\"c\"} 0\n"));
        assert_eq!(out.matches("# TYPE ").count(), SERVER_FAMILIES.len());
        let mut facts = Facts::default();
        facts.utilization.filesystems = vec![super::super::host::Filesystem {
            path: "/x".into(),
            holds: vec!["volumes"],
            total_bytes: 9,
            used_bytes: 4,
        }];
        node(&mut out, &facts, &Committed::default(), &Free::default());
        assert!(out.contains("lightd_node_filesystem_used_bytes{path=\"/x\",holds=\"volumes\"} 4\n"), "{out}");
    }
}
