//! In-memory state plus one writer task that persists it to one JSON file.
//!
//! Every mutation goes through [`Store::update`]: it applies the change to the pending copy
//! under a short lock, wakes the writer, and waits for the writer's verdict. The writer is the
//! only code that writes the file: it takes everything pending (many updates, one write),
//! writes atomically, and then either publishes the new state (every caller in the batch gets
//! `Ok`) or, when the write fails or takes longer than [`STORE_TIMEOUT`], rolls the pending
//! copy back to what is on disk (every caller gets the error). Readers only ever see state
//! that is on disk, and an update is either applied and saved or not applied at all.
//! `kill -9` at any instant leaves either the previous or the next valid `state.json`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::fsutil;
use crate::model::{Backup, ContainerRecord, Port, PortKey, SftpUser, TempToken, Volume};

/// Longest a state write may take before its batch is rolled back (the seed's store timeout).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything lightd remembers across restarts.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct State {
    /// This daemon's identity on the engine: every container it makes carries it as a label,
    /// so daemons sharing one engine never touch each other's containers.
    #[serde(default)]
    pub instance: String,
    #[serde(default)]
    pub volumes: BTreeMap<String, Volume>,
    #[serde(default, with = "port_list")]
    pub ports: BTreeMap<PortKey, Port>,
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerRecord>,
    /// Volume backups, by backup id.
    #[serde(default)]
    pub backups: BTreeMap<String, Backup>,
    /// Temporary console tokens (`POST /auth/tokens`), by token. A `HashMap` hashes with a
    /// secret random key, so how long a lookup takes tells a guesser nothing.
    #[serde(default, with = "token_list")]
    pub tokens: HashMap<String, TempToken>,
    /// SFTP users, by login (`<username>.<volume id>`).
    #[serde(default)]
    pub sftp_users: BTreeMap<String, SftpUser>,
}

/// Why the state could not be changed or saved.
#[derive(Debug, Clone)]
pub enum StoreError {
    Io(PathBuf, String),
    Corrupt(PathBuf, String),
    /// The write did not finish in time; the change was rolled back.
    Timeout,
    /// The writer is gone (the daemon is shutting down).
    Closed,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(p, e) => write!(f, "state file {}: {e}; the change was not applied", p.display()),
            StoreError::Corrupt(p, e) => write!(
                f,
                "state file {} is corrupt ({e}); fix or move it away, lightd will not overwrite it",
                p.display()
            ),
            StoreError::Timeout => write!(
                f,
                "state could not be saved within {} seconds; the change was not applied",
                STORE_TIMEOUT.as_secs()
            ),
            StoreError::Closed => write!(f, "the daemon is shutting down; the change was not applied"),
        }
    }
}

/// The state and its persistence; share it as `Arc<Store>`.
pub struct Store {
    path: PathBuf,
    inner: Mutex<Inner>,
    wake: Notify,
    /// The writer's verdicts, newest last.
    verdict: watch::Sender<Verdict>,
}

/// The state as saved and as pending, under the store's lock.
struct Inner {
    /// What is on disk; all readers see this.
    saved: State,
    saved_version: u64,
    /// `saved` plus the changes not yet written; `None` when there are none.
    pending: Option<State>,
    pending_version: u64,
    closed: bool,
}

/// What the writer tells waiters: how far saving got, and what was rolled back.
#[derive(Debug, Clone, Default)]
struct Verdict {
    /// Every version up to this one is on disk, except those in `failed`.
    saved: u64,
    /// Ranges of versions `(first, last)` that were rolled back, and why (the latest few).
    failed: Vec<(u64, u64, StoreError)>,
}

/// Rolled-back ranges remembered for waiters that have not looked yet.
const FAILED_KEPT: usize = 64;

impl Verdict {
    /// The outcome of `version`, once known.
    fn of(&self, version: u64) -> Option<Result<(), StoreError>> {
        if let Some((_, _, e)) = self.failed.iter().find(|(lo, hi, _)| (*lo..=*hi).contains(&version)) {
            return Some(Err(e.clone()));
        }
        (self.saved >= version).then_some(Ok(()))
    }
}

impl Store {
    /// Loads `path` (absent: empty state) after removing temp files left by a crash.
    pub fn open(path: &Path) -> Result<Arc<Store>, StoreError> {
        let io = |p: &Path, e: std::io::Error| StoreError::Io(p.into(), e.to_string());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        match fsutil::remove_stale_temps(path) {
            Ok(0) => {}
            Ok(n) => crate::info!("removed {n} stale temp file(s) beside {}", path.display()),
            Err(e) => return Err(io(path, e)),
        }
        let mut state: State = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(path.into(), e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(path, e)),
        };
        if state.instance.is_empty() {
            state.instance = crate::ids::new_uuid().map_err(|e| io(path, e))?;
        }
        // Write once at boot so a bad directory or permission fails start-up, not a request.
        write(path, &state)?;
        Ok(Arc::new(Store {
            path: path.into(),
            inner: Mutex::new(Inner {
                saved: state,
                saved_version: 0,
                pending: None,
                pending_version: 0,
                closed: false,
            }),
            wake: Notify::new(),
            verdict: watch::channel(Verdict::default()).0,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the saved state under the lock; keep `f` short.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock().saved)
    }

    /// Like [`read`](Self::read), of the latest state: changes still being written
    /// included. For checks that must honour a revocation from the moment it is made, not
    /// from when it is on disk (a change that is rolled back stops counting then).
    pub fn read_latest<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let inner = self.lock();
        f(inner.pending.as_ref().unwrap_or(&inner.saved))
    }

    /// Like [`read`](Self::read), with the version of the state it saw: answers derived
    /// from one version can be cached until the next change.
    pub fn read_versioned<R>(&self, f: impl FnOnce(&State) -> R) -> (u64, R) {
        let inner = self.lock();
        (inner.saved_version, f(&inner.saved))
    }

    /// The saved version (bumped by every saved change).
    pub fn version(&self) -> u64 {
        self.lock().saved_version
    }

    /// Applies `f` to the latest state (saved plus pending changes) and waits for the
    /// writer: `Ok` once the change is on disk, the store's error once it was rolled back.
    /// `f` must leave the state untouched when it returns an error.
    pub async fn update<R, E: From<StoreError>>(&self, f: impl FnOnce(&mut State) -> Result<R, E>) -> Result<R, E> {
        let mut verdicts = self.verdict.subscribe();
        let (out, version) = {
            let mut inner = self.lock();
            if inner.closed {
                return Err(StoreError::Closed.into());
            }
            let Inner { saved, pending, .. } = &mut *inner;
            let state = pending.get_or_insert_with(|| saved.clone());
            let out = f(state)?;
            inner.pending_version += 1;
            (out, inner.pending_version)
        };
        self.wake.notify_one();
        let verdict = verdicts.wait_for(|v| v.of(version).is_some()).await;
        match verdict.map(|v| v.of(version)) {
            Ok(Some(Ok(()))) => Ok(out),
            Ok(Some(Err(e))) => Err(e.into()),
            _ => Err(StoreError::Closed.into()),
        }
    }

    /// The single writer. Returns once [`close`](Self::close) was called and everything
    /// pending before it has been written (or rolled back).
    pub async fn run_writer(self: Arc<Self>) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (batch, closed) = {
                let inner = self.lock();
                (inner.pending.clone().map(|s| (s, inner.pending_version)), inner.closed)
            };
            match batch {
                Some((state, version)) => self.write_batch(state, version).await,
                None if closed => return,
                None => woken.await,
            }
        }
    }

    async fn write_batch(&self, state: State, version: u64) {
        let path = self.path.clone();
        // The state moves into the blocking task and comes back with the result.
        let mut job = tokio::task::spawn_blocking(move || {
            let result = write(&path, &state);
            (state, result)
        });
        let outcome = match tokio::time::timeout(STORE_TIMEOUT, &mut job).await {
            Ok(Ok((state, Ok(())))) => Ok(state),
            Ok(Ok((_, Err(e)))) => Err(e),
            Ok(Err(e)) => Err(StoreError::Io(self.path.clone(), format!("writer task failed: {e}"))),
            Err(_) => Err(StoreError::Timeout),
        };
        let failed = match outcome {
            Ok(state) => {
                let mut inner = self.lock();
                if inner.pending_version == version {
                    inner.pending = None;
                }
                inner.saved = state;
                inner.saved_version = version;
                drop(inner);
                self.verdict.send_modify(|v| v.saved = version);
                return;
            }
            Err(e) => e,
        };
        crate::error!("saving state failed, rolled back: {failed}");
        // Everything pending builds on the batch that failed: all of it goes back.
        let range = {
            let mut inner = self.lock();
            inner.pending = None;
            (inner.saved_version + 1, inner.pending_version)
        };
        let slow = matches!(failed, StoreError::Timeout);
        self.verdict.send_modify(|v| {
            if v.failed.len() == FAILED_KEPT {
                v.failed.remove(0);
            }
            v.failed.push((range.0, range.1, failed));
        });
        if slow && tokio::time::timeout(Duration::from_secs(60), job).await.is_ok_and(|r| r.is_ok_and(|r| r.1.is_ok()))
        {
            // A write that was only slow may have landed after all: put the saved state back.
            let saved = self.read(State::clone);
            let path = self.path.clone();
            let _ = tokio::task::spawn_blocking(move || write(&path, &saved)).await;
        }
    }

    /// Refuses new updates; the writer finishes what is pending and returns.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// Serializes and writes `state` atomically (mode 0600: it holds tokens).
fn write(path: &Path, state: &State) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Io(path.into(), e.to_string()))?;
    fsutil::write_atomic(path, &bytes, 0o600).map_err(|e| StoreError::Io(path.into(), e.to_string()))
}

/// The port pool is a map in memory and a plain list in the file.
mod port_list {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<PortKey, Port>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<PortKey, Port>, D::Error> {
        let list = Vec::<Port>::deserialize(d)?;
        Ok(list.into_iter().map(|p| (p.key(), p)).collect())
    }
}

/// Console tokens are a map in memory (found in O(1)) and a plain list in the file.
mod token_list {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &HashMap<String, TempToken>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<String, TempToken>, D::Error> {
        let list = Vec::<TempToken>::deserialize(d)?;
        Ok(list.into_iter().map(|t| (t.token.clone(), t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lightd-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("state.json")
    }

    /// A store at a fresh `temp_file(name)` with its writer running.
    fn writing(name: &str) -> (PathBuf, Arc<Store>) {
        let path = temp_file(name);
        let store = Store::open(&path).unwrap();
        tokio::spawn(Arc::clone(&store).run_writer());
        (path, store)
    }

    /// Breaks the disk under `path`: its directory is moved aside (`<dir>.moved`) and a file
    /// takes its name, so no temp file can be made in it. The directory's path.
    fn break_dir(path: &Path) -> PathBuf {
        let dir = path.parent().unwrap().to_path_buf();
        std::fs::rename(&dir, dir.with_extension("moved")).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
        dir
    }

    fn key(port: u16) -> PortKey {
        PortKey { ip: "127.0.0.1".parse().unwrap(), port, protocol: Protocol::Udp }
    }

    /// Awaits `f`, or fails the test once it has waited 10 s: a store that never answers (a
    /// writer that died or never wrote) is a failure, not a hang. A bound, not a timing: each
    /// answer here takes milliseconds.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f).await.expect("the store did not answer within 10 s")
    }

    async fn add(store: &Store, port: u16) -> Result<(), StoreError> {
        within(store.update(|s| {
            s.ports.insert(key(port), Port::free(key(port)));
            Ok::<_, StoreError>(())
        }))
        .await
    }

    #[tokio::test]
    async fn update_persists_and_reloads() {
        let path = temp_file("reload");
        let store = Store::open(&path).unwrap();
        let writer = tokio::spawn(Arc::clone(&store).run_writer());
        add(&store, 25565).await.unwrap();
        let instance = store.read(|s| s.instance.clone());
        assert_eq!(instance.len(), 36);
        store.close();
        within(writer).await.unwrap();
        assert!(matches!(add(&store, 1).await, Err(StoreError::Closed)));
        let again = Store::open(&path).unwrap();
        assert_eq!(again.read(|s| s.ports.get(&key(25565)).cloned()), Some(Port::free(key(25565))));
        assert_eq!(again.read(|s| s.instance.clone()), instance, "the instance id is kept");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn the_latest_state_holds_a_change_before_it_is_on_disk() {
        let path = temp_file("latest");
        let store = Store::open(&path).unwrap();
        // No writer yet: the change stays pending.
        let pending = tokio::spawn({
            let store = Arc::clone(&store);
            async move { add(&store, 27015).await }
        });
        let seen = |s: &State| s.ports.contains_key(&key(27015));
        while !store.read_latest(seen) {
            tokio::task::yield_now().await;
        }
        assert!(!store.read(seen), "not saved yet");
        tokio::spawn(Arc::clone(&store).run_writer());
        within(pending).await.unwrap().unwrap();
        assert!(store.read(seen) && store.read_latest(seen));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn many_concurrent_updates_all_land() {
        let (path, store) = writing("many");
        let tasks: Vec<_> = (1..=200)
            .map(|p| {
                tokio::spawn({
                    let store = Arc::clone(&store);
                    async move { add(&store, p).await }
                })
            })
            .collect();
        for t in tasks {
            within(t).await.unwrap().unwrap();
        }
        assert_eq!(store.read(|s| s.ports.len()), 200);
        assert_eq!(Store::open(&path).unwrap().read(|s| s.ports.len()), 200);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A failed write is rolled back: the caller gets the error, readers never see the change,
    /// and the next update (once the disk works again) does not carry it either.
    #[tokio::test]
    async fn failed_write_rolls_back() {
        let (path, store) = writing("rollback");
        add(&store, 1).await.unwrap();
        let dir = break_dir(&path);
        let err = add(&store, 2).await.unwrap_err();
        assert!(err.to_string().contains("not applied"), "{err}");
        assert!(store.read(|s| !s.ports.contains_key(&key(2))), "readers never saw it");
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(dir.with_extension("moved"), &dir).unwrap();
        add(&store, 3).await.unwrap();
        let disk = Store::open(&path).unwrap();
        assert!(disk.read(|s| s.ports.contains_key(&key(1)) && s.ports.contains_key(&key(3))));
        assert!(disk.read(|s| !s.ports.contains_key(&key(2))), "the failed change never reached the disk");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn verdicts_of_versions() {
        let v = Verdict { saved: 5, failed: vec![(7, 9, StoreError::Timeout), (2, 2, StoreError::Closed)] };
        let of = |n| v.of(n).map(|r| r.map_err(|e| e.to_string()));
        assert_eq!(of(1), Some(Ok(())));
        assert_eq!(of(5), Some(Ok(())), "the newest saved");
        assert!(matches!(v.of(2), Some(Err(StoreError::Closed))), "rolled back, though older than saved");
        assert_eq!(of(6), None, "not decided yet");
        for n in 7..=9 {
            assert!(matches!(v.of(n), Some(Err(StoreError::Timeout))), "{n}");
        }
        assert_eq!(of(10), None);
        let later = Verdict { saved: 9, ..v.clone() };
        assert!(matches!(later.of(8), Some(Err(StoreError::Timeout))), "a rollback stands once later ones are saved");
    }

    #[test]
    fn errors_say_the_change_was_not_applied() {
        let p = PathBuf::from("/x/state.json");
        let msgs = [
            (
                StoreError::Io(p.clone(), "disk full".into()),
                "state file /x/state.json: disk full; the change was not applied",
            ),
            (
                StoreError::Corrupt(p, "eof".into()),
                "state file /x/state.json is corrupt (eof); fix or move it away, lightd will not overwrite it",
            ),
            (StoreError::Timeout, "state could not be saved within 5 seconds; the change was not applied"),
            (StoreError::Closed, "the daemon is shutting down; the change was not applied"),
        ];
        for (e, want) in msgs {
            assert_eq!(e.to_string(), want);
        }
    }

    /// Every saved change bumps the version readers see; once it is saved nothing is left
    /// pending, and ports and tokens come back from the file as they went in.
    #[tokio::test]
    async fn versions_count_saved_changes_and_nothing_stays_pending() {
        let (path, store) = writing("versions");
        assert_eq!(store.version(), 0);
        add(&store, 1).await.unwrap();
        assert!(store.lock().pending.is_none(), "saved: nothing pending");
        add(&store, 2).await.unwrap();
        assert_eq!(store.version(), 2);
        assert_eq!(store.read_versioned(|s| s.ports.len()), (2, 2));
        let token = TempToken {
            token: "t".into(),
            internal_id: Some("srv".into()),
            expires_at: 9,
            remove_on_use: true,
            transfer: false,
        };
        let value =
            within(store.update(|s| Ok::<_, StoreError>(s.tokens.insert("t".into(), token.clone()).is_none()))).await;
        assert!(value.unwrap(), "update returns what the change returned");
        assert_eq!(store.read_latest(|s| s.ports.len()), 2, "latest is saved when nothing is pending");
        let again = Store::open(&path).unwrap();
        assert_eq!(again.read(|s| s.tokens.get("t").cloned()), Some(token));
        assert_eq!(again.read(|s| s.ports.keys().copied().collect::<Vec<_>>()), [key(1), key(2)]);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A refused change (`f` returns an error) is not a change: no version, nothing pending.
    #[tokio::test]
    async fn a_refused_change_is_no_change() {
        let (path, store) = writing("refused");
        let r = within(store.update(|_| Err::<(), _>(StoreError::Closed))).await;
        assert!(matches!(r, Err(StoreError::Closed)));
        add(&store, 1).await.unwrap();
        assert_eq!(store.version(), 1);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// Failures in a row: each caller hears its own, versions saved before keep their `Ok`,
    /// and only the latest [`FAILED_KEPT`] ranges are remembered.
    #[tokio::test]
    async fn failures_are_remembered_per_version_and_bounded() {
        let (path, store) = writing("failures");
        add(&store, 1).await.unwrap();
        let dir = break_dir(&path);
        for i in 0..FAILED_KEPT + 6 {
            let r = add(&store, 100 + i as u16).await;
            assert!(matches!(r, Err(StoreError::Io(..))), "{r:?}");
            assert!(store.lock().pending.is_none(), "rolled back");
        }
        let v = store.verdict.borrow().clone();
        assert_eq!(v.failed.len(), FAILED_KEPT);
        // Each range runs from the first version after the saved one to the failed one.
        let last = 1 + (FAILED_KEPT + 6) as u64;
        let newest: Vec<_> = v.failed.iter().map(|(lo, hi, _)| (*lo, *hi)).collect();
        let want: Vec<_> = (last + 1 - FAILED_KEPT as u64..=last).map(|hi| (2, hi)).collect();
        assert_eq!(newest, want, "the newest kept, oldest first");
        assert!(matches!(v.of(1), Some(Ok(()))), "the saved version is still saved");
        assert_eq!(store.version(), 1);
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(dir.with_extension("moved"), &dir).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Only a missing file means an empty state: a file that cannot be read is an error and
    /// is left as it is (here a symlink loop, which a blind write would replace).
    #[test]
    fn an_unreadable_file_is_an_error_and_is_kept() {
        let path = temp_file("unreadable");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("state.json", &path).unwrap();
        let err = Store::open(&path).err().expect("a state file that cannot be read");
        assert!(matches!(err, StoreError::Io(..)), "{err}");
        assert_eq!(std::fs::read_link(&path).unwrap(), PathBuf::from("state.json"), "left as it was");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A state directory that cannot be made fails start-up naming that directory.
    #[test]
    fn a_directory_that_cannot_be_made_is_named() {
        let path = temp_file("nodir");
        let base = path.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("file"), b"not a directory").unwrap();
        let dir = base.join("file/sub");
        let err = Store::open(&dir.join("state.json")).err().expect("no directory under a file");
        assert!(matches!(&err, StoreError::Io(p, _) if *p == dir), "{err}");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_and_is_kept() {
        let path = temp_file("corrupt");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{\"volumes\": ").unwrap();
        let stale = path.with_file_name("state.json.tmp-0011223344556677");
        std::fs::write(&stale, b"half").unwrap();
        let err = Store::open(&path).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"volumes\": ");
        assert!(!stale.exists());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
