//! Console history on disk: each server's console lines (and its install output) appended to
//! bounded segment files off the console thread, read for tails of stopped servers and after
//! restarts; and the record of each crash.
//!
//! Layout: `<journal dir>/<internal_id>/console/*.seg`, `.../install/*.seg` and
//! `.../crashes.json`. The journal dir is lightd's own (beside the state file), never inside a
//! volume or `/app/data`, so no server can read or plant anything in it. Every call here does
//! file I/O: call it from the blocking pool or the journal's own thread, never from an async
//! worker or the console thread.

pub mod crashes;
pub mod segments;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crashes::Crash;
use segments::Segments;

/// Which of a server's journals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// What the server printed.
    Console,
    /// What its installs printed (image pulls and install scripts).
    Install,
}

impl Stream {
    fn dir(self) -> &'static str {
        match self {
            Stream::Console => "console",
            Stream::Install => "install",
        }
    }
}

/// Every server's journal: a cheap handle to share.
#[derive(Clone)]
pub struct Journals {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Bytes each of a server's journals may hold (0: no journal).
    limit: u64,
    open: Mutex<HashMap<String, Arc<Mutex<Server>>>>,
}

/// A server's open journals.
struct Server {
    console: Segments,
    install: Segments,
}

impl Journals {
    /// Journals under `root`, of at most `limit` bytes per server and stream (0 turns them off).
    pub fn new(root: PathBuf, limit: u64) -> Journals {
        Journals { inner: Arc::new(Inner { root, limit, open: Mutex::new(HashMap::new()) }) }
    }

    /// Whether lines are kept on disk at all.
    pub fn enabled(&self) -> bool {
        self.inner.limit > 0
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.inner.root.join(id)
    }

    /// `id`'s journals, opened (and repaired) on first use.
    fn server(&self, id: &str) -> io::Result<Arc<Mutex<Server>>> {
        let mut open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = open.get(id) {
            return Ok(Arc::clone(s));
        }
        let dir = self.dir(id);
        let limit = self.inner.limit;
        let s = Arc::new(Mutex::new(Server {
            console: Segments::open(&dir.join(Stream::Console.dir()), limit)?,
            install: Segments::open(&dir.join(Stream::Install.dir()), limit)?,
        }));
        open.insert(id.to_string(), Arc::clone(&s));
        Ok(s)
    }

    fn with<T>(&self, id: &str, stream: Stream, f: impl FnOnce(&mut Segments) -> io::Result<T>) -> io::Result<T> {
        let s = self.server(id)?;
        let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
        f(match stream {
            Stream::Console => &mut s.console,
            Stream::Install => &mut s.install,
        })
    }

    /// The number of the newest line of `id`'s `stream` on disk (0: none): numbering goes on
    /// from there, across daemon restarts and container recreation.
    pub fn last(&self, id: &str, stream: Stream) -> io::Result<u64> {
        if !self.enabled() {
            return Ok(0);
        }
        self.with(id, stream, |s| Ok(s.last()))
    }

    /// Appends numbered lines (JSON string literals) to `id`'s `stream`.
    pub fn append<'a>(
        &self,
        id: &str,
        stream: Stream,
        lines: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> io::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        self.with(id, stream, |s| s.append(lines))
    }

    /// Up to `n` of the newest lines of `id`'s `stream` numbered below `before`, oldest first.
    pub fn read(&self, id: &str, stream: Stream, before: u64, n: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        if !self.enabled() || n == 0 {
            return Ok(Vec::new());
        }
        self.with(id, stream, |s| s.read(before, n))
    }

    /// Makes every open journal durable (a power cut loses nothing appended before).
    pub fn sync_all(&self) {
        let open: Vec<_> = self.inner.open.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for s in open {
            let mut guard = s.lock().unwrap_or_else(|p| p.into_inner());
            let s = &mut *guard;
            for seg in [&mut s.console, &mut s.install] {
                if let Err(e) = seg.sync() {
                    crate::warn!("cannot sync a console journal: {e}");
                }
            }
        }
    }

    /// `id`'s crashes, newest first.
    pub fn crashes(&self, id: &str) -> Vec<Crash> {
        crashes::read(&self.crash_file(id))
    }

    /// Records a crash of `id` (kept even with the journal off: it is small).
    pub fn add_crash(&self, id: &str, crash: Crash) -> io::Result<()> {
        crashes::add(&self.crash_file(id), crash)
    }

    fn crash_file(&self, id: &str) -> PathBuf {
        self.dir(id).join("crashes.json")
    }

    /// Removes everything kept of `id` (its server was deleted).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        self.inner.open.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        remove_dir(&self.dir(id))
    }

    /// Removes the journals of servers not in `keep` (deleted while the daemon was down).
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.inner.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if let Some(id) = name.to_str().filter(|id| !keep(id)) {
                self.remove(id)?;
            }
        }
        Ok(())
    }
}

fn remove_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn streams_are_kept_apart_and_go_with_their_server() {
        let dir = TempDir::new("journals");
        let j = Journals::new(dir.path().to_path_buf(), 1 << 20);
        let a = serde_json::to_vec("console line").unwrap();
        let b = serde_json::to_vec("install line").unwrap();
        j.append("srv", Stream::Console, [(1, a.as_slice())]).unwrap();
        j.append("srv", Stream::Install, [(1, b.as_slice()), (2, b.as_slice())]).unwrap();
        assert_eq!(j.last("srv", Stream::Console).unwrap(), 1);
        assert_eq!(j.last("srv", Stream::Install).unwrap(), 2);
        assert_eq!(j.read("srv", Stream::Console, u64::MAX, 10).unwrap(), vec![(1, a.clone())]);
        let crash = Crash {
            at: 1,
            exit_code: 137,
            signal: Some("SIGKILL".into()),
            oom_killed: true,
            restarted: false,
            lines: vec![],
        };
        j.add_crash("srv", crash.clone()).unwrap();
        assert_eq!(j.crashes("srv"), vec![crash]);
        // A new journal object (a daemon restart) finds the same lines.
        let again = Journals::new(dir.path().to_path_buf(), 1 << 20);
        assert_eq!(again.read("srv", Stream::Install, u64::MAX, 10).unwrap().len(), 2);
        again.retain(&|id| id != "srv").unwrap();
        assert!(!dir.path().join("srv").exists());
        assert_eq!(again.last("srv", Stream::Console).unwrap(), 0, "a new server of that name starts afresh");
    }

    #[test]
    fn a_zero_limit_keeps_nothing() {
        let dir = TempDir::new("journals-off");
        let j = Journals::new(dir.path().to_path_buf(), 0);
        j.append("srv", Stream::Console, [(1, b"\"x\"".as_slice())]).unwrap();
        assert!(j.read("srv", Stream::Console, u64::MAX, 10).unwrap().is_empty());
        assert!(!dir.path().join("srv").exists());
    }
}
