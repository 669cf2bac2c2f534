//! In-memory state plus one writer task that persists it to one JSON file.
//!
//! Every mutation goes through [`Store::update`]: it changes memory under a short lock, wakes
//! the writer and waits until a file holding that change is on disk. The writer coalesces
//! bursts (many updates, one write) and writes atomically, so `kill -9` at any instant leaves
//! either the previous or the next valid `state.json`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::fsutil;
use crate::model::{ContainerRecord, Port, PortKey, Volume};
use crate::tokens::TempToken;

/// How long a caller waits for its change to reach the disk (the seed's store timeout).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything lightd remembers across restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub volumes: BTreeMap<String, Volume>,
    #[serde(default, with = "port_list")]
    pub ports: BTreeMap<PortKey, Port>,
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerRecord>,
    /// Temporary console tokens (`POST /auth/tokens`).
    #[serde(default)]
    pub tokens: Vec<TempToken>,
}

#[derive(Debug)]
pub enum StoreError {
    Io(PathBuf, std::io::Error),
    Corrupt(PathBuf, String),
    Timeout,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(p, e) => write!(f, "state file {}: {e}", p.display()),
            StoreError::Corrupt(p, e) => write!(
                f,
                "state file {} is corrupt ({e}); fix or move it away, lightd will not overwrite it",
                p.display()
            ),
            StoreError::Timeout => write!(f, "state could not be saved within {} seconds", STORE_TIMEOUT.as_secs()),
        }
    }
}

/// The state and its persistence; share it as `Arc<Store>`.
pub struct Store {
    path: PathBuf,
    inner: Mutex<Inner>,
    wake: Notify,
    /// Highest version known to be on disk.
    saved: watch::Sender<u64>,
}

struct Inner {
    state: State,
    version: u64,
}

impl Store {
    /// Loads `path` (absent: empty state) after removing a stale temp file from a crash.
    pub fn open(path: &Path) -> Result<Arc<Store>, StoreError> {
        let tmp = fsutil::temp_path(path);
        match std::fs::remove_file(&tmp) {
            Ok(()) => eprintln!("lightd: removed stale {}", tmp.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io(tmp, e)),
        }
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(path.into(), e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(StoreError::Io(path.into(), e)),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.into(), e))?;
        }
        let store = Arc::new(Store {
            path: path.into(),
            inner: Mutex::new(Inner { state, version: 0 }),
            wake: Notify::new(),
            saved: watch::channel(0).0,
        });
        // Write once at boot so a bad directory or permission fails start-up, not a request.
        store.write_now()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the state under the lock; keep `f` short.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock().state)
    }

    /// Like [`read`](Self::read), with the version of the state it saw: answers derived
    /// from one version can be cached until the next change.
    pub fn read_versioned<R>(&self, f: impl FnOnce(&State) -> R) -> (u64, R) {
        let inner = self.lock();
        (inner.version, f(&inner.state))
    }

    /// The current version (bumped by every change).
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Applies `f`; when it succeeds, waits until the change is on disk.
    /// `f` must leave the state untouched when it returns an error.
    pub async fn update<R, E: From<StoreError>>(&self, f: impl FnOnce(&mut State) -> Result<R, E>) -> Result<R, E> {
        let (out, version) = {
            let mut inner = self.lock();
            let out = f(&mut inner.state)?;
            inner.version += 1;
            (out, inner.version)
        };
        self.wake.notify_one();
        let mut saved = self.saved.subscribe();
        tokio::time::timeout(STORE_TIMEOUT, saved.wait_for(|v| *v >= version))
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(|_| StoreError::Timeout)?;
        Ok(out)
    }

    /// Serializes the current state and writes it; returns the version written.
    fn write_now(&self) -> Result<u64, StoreError> {
        let (bytes, version) = {
            let inner = self.lock();
            let bytes = serde_json::to_vec_pretty(&inner.state).expect("state serializes");
            (bytes, inner.version)
        };
        fsutil::write_atomic(&self.path, &bytes, 0o600).map_err(|e| StoreError::Io(self.path.clone(), e))?;
        self.saved.send_if_modified(|v| {
            let newer = version > *v;
            *v = (*v).max(version);
            newer
        });
        Ok(version)
    }

    /// The single writer: one write per wake-up, whatever the number of updates behind it.
    pub async fn run_writer(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            self.flush().await;
        }
    }

    /// Writes until the file holds the latest version (also used at shutdown).
    pub async fn flush(self: &Arc<Self>) {
        let mut delay = Duration::from_millis(50);
        while self.lock().version > *self.saved.borrow() {
            let me = Arc::clone(self);
            match tokio::task::spawn_blocking(move || me.write_now()).await {
                Ok(Ok(_)) => delay = Duration::from_millis(50),
                Ok(Err(e)) => {
                    eprintln!("lightd: saving state failed, retrying: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => eprintln!("lightd: state writer task failed: {e}"),
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lightd-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("state.json")
    }

    #[tokio::test]
    async fn update_persists_and_reloads() {
        let path = temp_file("reload");
        let store = Store::open(&path).unwrap();
        tokio::spawn(Arc::clone(&store).run_writer());
        let key = PortKey { ip: "127.0.0.1".parse().unwrap(), port: 25565, protocol: Protocol::Udp };
        store
            .update(|s| {
                s.ports.insert(key, Port::free(key));
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        let again = Store::open(&path).unwrap();
        assert_eq!(again.read(|s| s.ports.get(&key).cloned()), Some(Port::free(key)));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_and_is_kept() {
        let path = temp_file("corrupt");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{\"volumes\": ").unwrap();
        std::fs::write(fsutil::temp_path(&path), b"half").unwrap();
        let err = Store::open(&path).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"volumes\": ");
        assert!(!fsutil::temp_path(&path).exists());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
