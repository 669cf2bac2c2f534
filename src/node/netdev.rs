//! A container's network counters, read from the host through its init process's
//! `/proc/<pid>/net/dev` (every interface of the container's namespace but `lo`).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};

/// Bytes received and sent per interface, as the kernel counts them.
pub type Counters = BTreeMap<String, (u64, u64)>;

/// The `/proc` directory of one container's init process, held open: it stays bound to that
/// process, so once it exits a read fails instead of reaching whatever process reuses its pid.
#[derive(Debug)]
pub struct NetNs {
    proc_dir: OwnedFd,
    pub pid: u32,
}

impl NetNs {
    /// Opens `/proc/<pid>` and checks that the process is in container `cid`'s cgroup (a pid
    /// from an old inspect may since name another process).
    pub fn open(pid: u32, cid: &str) -> io::Result<NetNs> {
        if pid == 0 || cid.len() < 12 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no process"));
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let proc_dir = rustix::fs::open(format!("/proc/{pid}"), flags, Mode::empty())?;
        let cgroup = read_at(&proc_dir, "cgroup")?;
        if !cgroup.contains(cid) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("process {pid} is not in container {cid}")));
        }
        Ok(NetNs { proc_dir, pid })
    }

    /// The counters of every interface but `lo`; an error once the process is gone.
    pub fn counters(&self) -> io::Result<Counters> {
        Ok(parse(&read_at(&self.proc_dir, "net/dev")?))
    }
}

/// Reads a file below an open `/proc/<pid>` directory.
fn read_at(dir: &OwnedFd, name: &str) -> io::Result<String> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut text = String::new();
    std::fs::File::from(fd).read_to_string(&mut text)?;
    Ok(text)
}

/// The interfaces of a `net/dev` text (two header lines, then `name: rx_bytes ... tx_bytes ...`),
/// `lo` left out.
pub fn parse(text: &str) -> Counters {
    let mut out = Counters::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name == "lo" || name.is_empty() {
            continue;
        }
        let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
        if let (Some(rx), Some(tx)) = (fields.first(), fields.get(8)) {
            out.insert(name.to_string(), (*rx, *tx));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     500       5    0    0    0     0          0         0      500       5    0    0    0     0       0          0
  eth0: 52433261   36107    0    0    0     0          0         0 1234567    8904    0    0    0     0       0          0
  eth1:10       1    0    0    0     0          0         0       20       2    0    0    0     0       0          0
";

    #[test]
    fn every_interface_but_lo() {
        let c = parse(SAMPLE);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c["eth0"], (52_433_261, 1_234_567));
        assert_eq!(c["eth1"], (10, 20), "a name run into its first number");
        assert!(parse("garbage\n\nno colon here\n").is_empty());
    }

    #[test]
    fn a_process_outside_the_container_is_refused() {
        let me = std::process::id();
        let cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let e = NetNs::open(me, cid).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(NetNs::open(0, cid).is_err());
    }
}
