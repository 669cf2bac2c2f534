//! A container's cgroup as the kernel keeps it: found where Docker puts it (cgroup v1 with the
//! cgroupfs or the systemd driver, or v2), read for CPU time and memory in use.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Which cgroup hierarchy the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One directory per controller (`cpuacct/`, `memory/`).
    V1,
    /// The unified hierarchy (`cgroup.controllers` at the root).
    V2,
}

/// Where containers' cgroups live on this host.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    layout: Layout,
}

/// What the kernel says of one container's cgroup now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The cgroup directory's inode: a new one is a new cgroup (a new run of the container),
    /// whose counters began again at 0.
    pub ino: u64,
    /// CPU time used by the cgroup's tasks since it was made, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use less the inactive page cache (what `docker stats` shows).
    pub memory_bytes: u64,
}

impl Cgroups {
    /// The hierarchy mounted at `root` (`/sys/fs/cgroup` on a host).
    pub fn detect(root: &Path) -> Cgroups {
        let layout = if root.join("cgroup.controllers").exists() { Layout::V2 } else { Layout::V1 };
        Cgroups { root: root.to_path_buf(), layout }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The cgroup of container `cid` (64 hex digits, as Docker names it): `Ok(None)` when it
    /// has none (it does not run), an error when it has one that could not be read.
    pub fn read(&self, cid: &str) -> io::Result<Option<Reading>> {
        if cid.len() != 64 || !cid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        match self.layout {
            Layout::V1 => {
                let Some((cpu_dir, ino)) = self.find(&["cpuacct"], cid)? else { return Ok(None) };
                let cpu_ns = number(&read(&cpu_dir.join("cpuacct.usage"))?)?;
                let memory_bytes = match self.find(&["memory"], cid)? {
                    Some((dir, _)) => {
                        let usage = number(&read(&dir.join("memory.usage_in_bytes"))?)?;
                        usage.saturating_sub(stat_field(&read(&dir.join("memory.stat"))?, "total_inactive_file"))
                    }
                    None => 0,
                };
                Ok(Some(Reading { ino, cpu_ns, memory_bytes }))
            }
            Layout::V2 => {
                let Some((dir, ino)) = self.find(&[], cid)? else { return Ok(None) };
                let cpu_ns = stat_field(&read(&dir.join("cpu.stat"))?, "usage_usec").saturating_mul(1000);
                let current = match read(&dir.join("memory.current")) {
                    Ok(text) => number(&text)?,
                    // No memory controller enabled for it.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(e),
                };
                let inactive = read(&dir.join("memory.stat")).map(|t| stat_field(&t, "inactive_file")).unwrap_or(0);
                Ok(Some(Reading { ino, cpu_ns, memory_bytes: current.saturating_sub(inactive) }))
            }
        }
    }

    /// The first of Docker's places for `cid`'s cgroup that exists, under `controller` (v1),
    /// with its inode.
    fn find(&self, controller: &[&str], cid: &str) -> io::Result<Option<(PathBuf, u64)>> {
        let base: PathBuf = controller.iter().fold(self.root.clone(), |p, c| p.join(c));
        let candidates = match self.layout {
            // cgroupfs driver first (this host's), then the systemd driver.
            Layout::V1 => {
                [base.join("docker").join(cid), base.join("system.slice").join(format!("docker-{cid}.scope"))]
            }
            Layout::V2 => {
                [base.join("system.slice").join(format!("docker-{cid}.scope")), base.join("docker").join(cid)]
            }
        };
        for dir in candidates {
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => return Ok(Some((dir, m.ino()))),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
}

/// A file holding one number.
fn number(text: &str) -> io::Result<u64> {
    text.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("not a number: {text:?}")))
}

/// The value of `key` in a `key value` per line file (`memory.stat`, `cpu.stat`); 0 when absent.
pub fn stat_field(text: &str, key: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn tree(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lightd-cgroup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn put(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn v1_cgroupfs_and_systemd_layouts() {
        let root = tree("v1");
        let cg = Cgroups::detect(&root);
        assert_eq!(cg.layout(), Layout::V1);
        assert_eq!(cg.read(CID).unwrap(), None, "no cgroup: not running");
        let cpu = root.join("cpuacct/docker").join(CID);
        let mem = root.join("memory/docker").join(CID);
        put(&cpu, "cpuacct.usage", "2000000000\n");
        put(&mem, "memory.usage_in_bytes", "10485760\n");
        put(&mem, "memory.stat", "cache 100\ninactive_file 1\ntotal_inactive_file 2097152\n");
        let r = cg.read(CID).unwrap().unwrap();
        assert_eq!((r.cpu_ns, r.memory_bytes), (2_000_000_000, 8 << 20));
        assert_eq!(r.ino, std::fs::metadata(&cpu).unwrap().ino());
        std::fs::remove_dir_all(root.join("cpuacct/docker")).unwrap();
        let scope = root.join("cpuacct/system.slice").join(format!("docker-{CID}.scope"));
        put(&scope, "cpuacct.usage", "5\n");
        assert_eq!(cg.read(CID).unwrap().unwrap().cpu_ns, 5, "the systemd driver's place");
        put(&scope, "cpuacct.usage", "garbage\n");
        assert!(cg.read(CID).is_err(), "a cgroup that cannot be read is an error, not an absence");
        assert_eq!(cg.read("../../etc").unwrap(), None, "only Docker's ids make paths");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn v2_layout() {
        let root = tree("v2");
        put(&root, "cgroup.controllers", "cpu memory\n");
        let cg = Cgroups::detect(&root);
        assert_eq!(cg.layout(), Layout::V2);
        let dir = root.join("system.slice").join(format!("docker-{CID}.scope"));
        put(&dir, "cpu.stat", "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n");
        let r = cg.read(CID).unwrap().unwrap();
        assert_eq!((r.cpu_ns, r.memory_bytes), (1_500_000_000, 0), "no memory controller: 0");
        put(&dir, "memory.current", "4096\n");
        put(&dir, "memory.stat", "anon 1\ninactive_file 1024\n");
        assert_eq!(cg.read(CID).unwrap().unwrap().memory_bytes, 3072);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn stat_fields() {
        let text = "usage_usec 12\nuser_usec 7\n";
        assert_eq!((stat_field(text, "usage_usec"), stat_field(text, "user_usec"), stat_field(text, "x")), (12, 7, 0));
        assert_eq!(stat_field("usage_usec_extra 5\n", "usage_usec"), 0, "whole keys only");
    }
}
