//! The meters of every server, in memory and in `meters.json` beside the state file (written
//! atomically after each reading, so a kill -9 loses at most one interval).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::meters::Totals;

/// Every server's meters, by internal id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Unix seconds the first meters on this node began: no server's `since` is earlier.
    pub began: u64,
    #[serde(default)]
    pub servers: BTreeMap<String, Totals>,
}

impl Ledger {
    /// The meters of record `record_id` of server `id` (made when it has none, or when the ones
    /// kept are of an earlier record of the same id).
    pub fn entry(&mut self, id: &str, record_id: &str, created_at: u64) -> &mut Totals {
        let since = created_at.max(self.began);
        let t = self.servers.entry(id.to_string()).or_insert_with(|| Totals::new(record_id, since));
        if t.record_id != record_id {
            *t = Totals::new(record_id, since);
        }
        t
    }

    /// Keeps the meters of the records `on_record` knows (`(id, record_id)`): a deleted
    /// server's go with it. Whether any went.
    pub fn retain(&mut self, on_record: impl Fn(&str, &str) -> bool) -> bool {
        let before = self.servers.len();
        self.servers.retain(|id, t| on_record(id, &t.record_id));
        self.servers.len() != before
    }

    /// Reads `path`; none yet: empty, beginning `now`. A file that cannot be parsed is moved
    /// aside (`meters.json.corrupt-<unix seconds>`) and said so: lightd starts new meters
    /// rather than refuse to run.
    pub fn load(path: &Path, now: u64) -> io::Result<Ledger> {
        let fresh = Ledger { began: now, servers: BTreeMap::new() };
        crate::fsutil::remove_stale_temps(path)?;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(fresh),
            Err(e) => return Err(e),
        };
        match serde_json::from_slice::<Ledger>(&bytes) {
            Ok(l) => Ok(l),
            Err(e) => {
                let aside = corrupt_name(path, now);
                std::fs::rename(path, &aside)?;
                crate::error!(
                    "usage meters {} are not valid ({e}); moved to {} and begun anew",
                    path.display(),
                    aside.display()
                );
                Ok(fresh)
            }
        }
    }

    /// Writes the ledger to `path` atomically (mode 0600).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        crate::fsutil::write_atomic(path, &bytes, 0o600)
    }
}

fn corrupt_name(path: &Path, now: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{now}"));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lightd-ledger-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn entries_follow_the_record() {
        let mut l = Ledger { began: 100, servers: BTreeMap::new() };
        l.entry("a", "r1", 50).cpu_ns = 7;
        assert_eq!(l.servers["a"].since, 100, "not before the ledger began");
        assert_eq!(l.entry("a", "r1", 50).cpu_ns, 7);
        assert_eq!(l.entry("a", "r2", 200).cpu_ns, 0, "a new record of the same id: new meters");
        assert_eq!(l.servers["a"].since, 200);
        l.entry("b", "r3", 0);
        assert!(l.retain(|id, rec| id == "a" && rec == "r2"));
        assert_eq!(l.servers.keys().collect::<Vec<_>>(), ["a"]);
        assert!(!l.retain(|_, _| true));
    }

    #[test]
    fn saved_loaded_and_a_corrupt_file_moved_aside() {
        let d = dir("io");
        let path = d.join("meters.json");
        assert_eq!(Ledger::load(&path, 9).unwrap().began, 9, "none yet");
        let mut l = Ledger { began: 5, servers: BTreeMap::new() };
        l.entry("a", "r1", 10).network_rx_bytes = 12345;
        l.save(&path).unwrap();
        assert_eq!(Ledger::load(&path, 99).unwrap(), l);
        std::fs::write(&path, b"{\"began\": 5, \"servers\": {").unwrap();
        let again = Ledger::load(&path, 77).unwrap();
        assert_eq!((again.began, again.servers.len()), (77, 0));
        assert!(d.join("meters.json.corrupt-77").exists());
        assert!(!path.exists());
        std::fs::remove_dir_all(d).unwrap();
    }
}
