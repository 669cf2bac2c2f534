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
pub mod tail;
pub mod writer;

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

/// What a [`Journals`] handle shares.
struct Inner {
    root: PathBuf,
    /// Bytes each of a server's journals may hold (0: no journal).
    limit: u64,
    open: Mutex<HashMap<String, Arc<Mutex<Server>>>>,
    /// Servers deleted since the daemon started (until a new server takes the id): a round
    /// of the writer that was under way then must not bring their journal back.
    removed: Mutex<std::collections::HashSet<String>>,
}

/// A server's open journals.
struct Server {
    console: Segments,
    install: Segments,
}

impl Journals {
    /// Journals under `root`, of at most `limit` bytes per server and stream (0 turns them off).
    pub fn new(root: PathBuf, limit: u64) -> Journals {
        let (open, removed) = (Mutex::new(HashMap::new()), Mutex::new(Default::default()));
        Journals { inner: Arc::new(Inner { root, limit, open, removed }) }
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
        if !self.enabled() || self.inner.removed.lock().unwrap_or_else(|p| p.into_inner()).contains(id) {
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
        self.inner.removed.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string());
        let open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        // An append under way holds the server's lock: it finishes before the files go.
        let _busy = open.as_ref().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()));
        remove_dir(&self.dir(id))
    }

    /// A new server takes `id`: its journal starts afresh.
    pub fn revive(&self, id: &str) {
        self.inner.removed.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
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

/// Lines a backfill and the journal are compared over, back from the journal's newest.
const WINDOW: usize = 100;
/// Matching lines that place the journal's end in a backfill when no place matches the whole
/// window: the journal has a gap there (lines it never got, say while the engine was going
/// down), and a handful of lines agreeing is still far better evidence than none.
const MIN_ANCHOR: usize = 8;

/// Where the lines of a backfill (Docker's log tail, read when lightd re-attaches to a server
/// that ran while it was down) stop repeating what the journal already holds: the index of the
/// first new line. `journal` is the journal's newest lines and `backfill` the log's, both as
/// JSON string literals, oldest first.
///
/// The journal's newest line is looked for in the backfill, and at each place the lines before
/// it are compared, up to [`WINDOW`] of them (or to the backfill's start). The latest place
/// where the whole window agrees wins. Failing that, the place with the longest agreeing run of
/// at least [`MIN_ANCHOR`] lines (the latest of equals): a journal with a gap a few lines back
/// must not have the whole backfill pushed again, every line of it twice. None found: the
/// server printed more than the backfill holds meanwhile, and every line is new.
pub fn unseen(journal: &[Vec<u8>], backfill: &[Vec<u8>]) -> usize {
    let Some(newest) = journal.last() else { return 0 };
    let window = journal.len().min(WINDOW);
    // (lines agreeing, place) of the best partial match so far.
    let mut best: Option<(usize, usize)> = None;
    for p in (0..backfill.len()).rev().filter(|&p| &backfill[p] == newest) {
        let k = window.min(p + 1);
        let agree = (0..k).take_while(|&i| backfill[p - i] == journal[journal.len() - 1 - i]).count();
        if agree == window {
            return p + 1;
        }
        // Agreeing back to the backfill's start is as much as it can say.
        let strong = agree == k || agree >= MIN_ANCHOR;
        if strong && best.is_none_or(|(most, _)| agree > most) {
            best = Some((agree, p));
        }
    }
    best.map_or(0, |(_, p)| p + 1)
}

#[cfg(test)]
mod unseen_tests {
    use super::unseen;

    fn lits(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| serde_json::to_vec(s).unwrap()).collect()
    }

    #[test]
    fn the_backfill_goes_on_where_the_journal_stops() {
        let journal = lits(&["1", "2", "3", "4"]);
        assert_eq!(unseen(&journal, &lits(&["2", "3", "4", "5", "6"])), 3);
        assert_eq!(unseen(&journal, &lits(&["3", "4"])), 2, "nothing new");
        assert_eq!(unseen(&journal, &lits(&["7", "8"])), 0, "all new: the journal's end is past");
        assert_eq!(unseen(&[], &lits(&["1"])), 0);
        // A line that repeats: the whole window before it must match too.
        let journal = lits(&["a", "x", "b", "x"]);
        assert_eq!(unseen(&journal, &lits(&["b", "x", "c", "x", "d"])), 2);
    }

    /// The journal missed a run (printed while lightd could not read it back) a few lines
    /// before its end: the backfill still goes on after the journal's newest line, not from
    /// its start (which pushed every line twice; found by tests/model.rs).
    #[test]
    fn a_gap_in_the_journal_does_not_repeat_the_backfill() {
        fn run(nonce: &'static str, n: u32) -> impl Iterator<Item = String> {
            (1..=n).map(move |i| format!("{nonce} {i}"))
        }
        let journal: Vec<String> = run("a", 15).chain(["Terminated".into()]).chain(run("c", 9)).collect();
        let log: Vec<String> =
            run("a", 15).chain(run("b", 9)).chain(["Terminated".into()]).chain(run("c", 15)).collect();
        let strs = |v: &[String]| lits(&v.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(unseen(&strs(&journal), &strs(&log)), 34, "c 10 is the first new line");
        // Fewer agreeing lines than MIN_ANCHOR before a gap is no evidence: all new.
        let journal: Vec<String> = run("a", 15).chain(run("c", 3)).collect();
        let log: Vec<String> = run("b", 15).chain(run("c", 5)).collect();
        assert_eq!(unseen(&strs(&journal), &strs(&log)), 0);
        // Of two partial matches the longer wins, wherever it is.
        let journal = lits(&["p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z"]);
        let log =
            lits(&["0", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "1", "s", "t", "u", "v", "w", "x", "y", "z"]);
        assert_eq!(unseen(&journal, &log), 11);
    }
}
