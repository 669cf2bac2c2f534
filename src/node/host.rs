//! What the host itself says of its CPUs, memory, load and file systems (`/proc`, `statvfs`):
//! read in the background, never on a request.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The host's memory, from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

pub fn parse_meminfo(text: &str) -> Memory {
    let kb = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_mul(1024)
    };
    Memory {
        total: kb("MemTotal"),
        available: kb("MemAvailable"),
        swap_total: kb("SwapTotal"),
        swap_free: kb("SwapFree"),
    }
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> [f64; 3] {
    let mut it = text.split_whitespace().map(|f| f.parse::<f64>().unwrap_or(0.0));
    [it.next().unwrap_or(0.0), it.next().unwrap_or(0.0), it.next().unwrap_or(0.0)]
}

/// CPU time of all CPUs from `/proc/stat`'s first line, in clock ticks: `(busy, total)`.
pub fn parse_cpu(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Busy share of all CPUs between two [`parse_cpu`] readings, 0-100.
pub fn cpu_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1) as f64;
    if total <= 0.0 {
        return 0.0;
    }
    ((busy / total * 100.0).clamp(0.0, 100.0) * 100.0).round() / 100.0
}

/// The distribution's name from an `os-release` text: `PRETTY_NAME`, else `NAME` (as Wings).
pub fn os_name(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
            .filter(|v| !v.is_empty())
    };
    value("PRETTY_NAME").or_else(|| value("NAME"))
}

/// Hardware threads this process may run on (as `nproc` counts them).
pub fn cpu_threads() -> usize {
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into the set it is
    // given; CPU_COUNT only reads it.
    let counted = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) {
            0 => usize::try_from(libc::CPU_COUNT(&set)).unwrap_or(0),
            _ => 0,
        }
    };
    match counted {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The architecture as Go (and so Wings) names it.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        "arm" => "arm",
        other => other,
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// One file system holding what lightd keeps, and what it holds of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filesystem {
    /// The first of lightd's directories on it.
    pub path: PathBuf,
    /// What lightd keeps there: `volumes`, `state`, `backups`, `docker`.
    pub holds: Vec<&'static str>,
    pub total_bytes: u64,
    pub used_bytes: u64,
}

/// The file systems holding `dirs` (`(what, directory)`), each once, in the order first met; a
/// directory not made yet (backups before the first) is on the file system of its nearest parent.
pub fn filesystems(dirs: &[(&'static str, PathBuf)]) -> Vec<Filesystem> {
    let mut out: Vec<(u64, Filesystem)> = Vec::new();
    for (what, dir) in dirs {
        let Some((there, meta)) = dir.ancestors().find_map(|d| Some((d, std::fs::metadata(d).ok()?))) else { continue };
        if let Some((_, fs)) = out.iter_mut().find(|(dev, _)| *dev == meta.dev()) {
            if !fs.holds.contains(what) {
                fs.holds.push(what);
            }
            continue;
        }
        let Some((total_bytes, used_bytes)) = space(there) else { continue };
        out.push((meta.dev(), Filesystem { path: dir.clone(), holds: vec![what], total_bytes, used_bytes }));
    }
    out.into_iter().map(|(_, fs)| fs).collect()
}

/// Size and use of the file system holding `dir`, in bytes.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(dir).ok()?;
    let unit = s.f_frsize;
    Some((s.f_blocks.saturating_mul(unit), s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(unit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts() {
        let m = parse_meminfo(
            "MemTotal:       24683716 kB\nMemFree:  100 kB\nMemAvailable:   22927808 kB\nSwapTotal: 2048 kB\nSwapFree: 1024 kB\n",
        );
        assert_eq!(
            m,
            Memory { total: 24683716 * 1024, available: 22927808 * 1024, swap_total: 2 << 20, swap_free: 1 << 20 }
        );
        assert_eq!(parse_meminfo("").total, 0);
        assert_eq!(parse_loadavg("0.52 0.58 0.59 2/345 12345\n"), [0.52, 0.58, 0.59]);
        assert_eq!(parse_loadavg("junk"), [0.0, 0.0, 0.0]);
        let a = parse_cpu("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!(a, (150, 1000));
        let b = parse_cpu("cpu  200 0 100 1500 100 0 0 0 0 0\n").unwrap();
        assert_eq!(cpu_percent(a, b), 16.67, "150 busy of 900 ticks");
        assert_eq!(cpu_percent(b, b), 0.0);
        assert!(parse_cpu("intr 5\n").is_none());
    }

    #[test]
    fn os_release_and_host_facts() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(os_name(text).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(os_name("NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(os_name("ID=x\n"), None);
        assert!(cpu_threads() >= 1);
        assert!(!kernel_version().is_empty());
        let tmp = std::env::temp_dir();
        let fs = filesystems(&[("state", tmp.clone()), ("backups", tmp.join("not-made/yet")), ("docker", tmp.clone())]);
        assert_eq!(fs.len(), 1, "{fs:?}");
        assert_eq!(fs[0].holds, ["state", "backups", "docker"], "a directory not made yet: its parent's");
        assert!(fs[0].total_bytes >= fs[0].used_bytes && fs[0].total_bytes > 0);
    }
}
