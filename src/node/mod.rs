//! The node report (`GET /system`) and the usage meters (`GET /containers/:id/usage`): the
//! kernel's counters of every server's container, read in the background every
//! `node.meter_interval`, added to totals that only ever grow, and kept on disk.

pub mod cgroup;
pub mod host;
pub mod ledger;
pub mod meters;
pub mod netdev;
mod prom;
pub mod report;
pub mod sampler;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::body::Bytes;

use crate::config::Config;
use crate::model::ContainerRecord;
use crate::store::Store;
use cgroup::Cgroups;
use ledger::Ledger;
use meters::{Totals, Usage};
use report::{Capacity, Facts};

pub use sampler::run;

/// What the node room is told by the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time between two readings (and saves) of the meters.
    pub interval: Duration,
    pub capacity: Capacity,
    /// Where the meters are kept (`meters.json` beside the state file).
    pub ledger: PathBuf,
    /// lightd's own directories, whose file systems the report shows.
    pub dirs: Vec<(&'static str, PathBuf)>,
    /// Where the cgroup hierarchy is mounted.
    pub cgroup_root: PathBuf,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            interval: Duration::from_secs(c.node.meter_interval),
            capacity: Capacity { reserved_memory: c.node.reserved_memory_bytes(), overcommit: c.node.overcommit },
            ledger: c.storage.state_dir().join("meters.json"),
            dirs: vec![
                ("volumes", c.volumes.base_path.clone()),
                ("state", c.storage.state_dir().to_path_buf()),
                ("backups", c.backups.path.clone()),
            ],
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// The node room's handle: the meters of every server and the latest reading of the node,
/// cheap to clone. The sampler ([`run`]) fills it; handlers and the supervisors read and tell it.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// What the handles share.
struct Inner {
    settings: Settings,
    cgroups: Cgroups,
    /// The meters as the sampler and the supervisors advance them.
    ledger: Mutex<Ledger>,
    /// The meters as last saved: all that is shown, so a kill -9 never takes back what a panel
    /// has seen.
    shown: Mutex<Arc<Ledger>>,
    /// One save at a time, so an older snapshot never lands after a newer one.
    saving: Mutex<()>,
    facts: Mutex<Arc<Facts>>,
    /// Bumped with every new reading of the node.
    facts_version: AtomicU64,
    /// `GET /system` as serialized at (state version, facts version).
    answer: Mutex<Option<(u64, u64, Bytes)>>,
}

impl Node {
    /// Loads the meters kept on disk (see [`Ledger::load`]).
    pub fn new(settings: Settings) -> Node {
        let now = crate::model::now();
        let ledger = Ledger::load(&settings.ledger, now).unwrap_or_else(|e| {
            crate::error!("cannot read the usage meters {}: {e}; they begin anew", settings.ledger.display());
            Ledger { began: now, servers: Default::default() }
        });
        let cgroups = Cgroups::detect(&settings.cgroup_root);
        let facts = Arc::new(sampler::host_facts(&settings.dirs, None, None).0);
        Node {
            inner: Arc::new(Inner {
                settings,
                cgroups,
                shown: Mutex::new(Arc::new(ledger.clone())),
                ledger: Mutex::new(ledger),
                saving: Mutex::new(()),
                facts: Mutex::new(facts),
                facts_version: AtomicU64::new(0),
                answer: Mutex::new(None),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The supervisor started `rec`'s server.
    pub fn started(&self, rec: &ContainerRecord) {
        self.ledger().entry(&rec.internal_id, &rec.record_id, rec.created_at).starts += 1;
    }

    /// `rec`'s server exited without lightd asking (a crash record was made of it).
    pub fn crashed(&self, rec: &ContainerRecord) {
        self.ledger().entry(&rec.internal_id, &rec.record_id, rec.created_at).crashes += 1;
    }

    /// The meters as last saved.
    fn shown(&self) -> Arc<Ledger> {
        Arc::clone(&self.inner.shown.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The meters of record `record_id` (made at `created_at`) of server `id`, as last saved
    /// (all zero before their first reading).
    pub fn usage(&self, id: &str, record_id: &str, created_at: u64) -> Usage {
        let ledger = self.shown();
        match ledger.servers.get(id).filter(|t| t.record_id == record_id) {
            Some(t) => t.usage(),
            None => Totals::new(record_id, created_at.max(ledger.began)).usage(),
        }
    }

    /// Saves the meters, and shows what was saved (blocking: call it off the async workers, or
    /// at shutdown).
    pub fn save(&self) -> std::io::Result<()> {
        let _one = self.inner.saving.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.ledger().clone();
        snapshot.save(&self.inner.settings.ledger)?;
        *self.inner.shown.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        Ok(())
    }

    fn facts(&self) -> Arc<Facts> {
        Arc::clone(&self.inner.facts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn set_facts(&self, facts: Facts) {
        *self.inner.facts.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(facts);
        self.inner.facts_version.fetch_add(1, Relaxed);
    }

    /// `GET /system`: the latest reading of the node with what is on record now, serialized
    /// once per (state version, reading) and shared until either changes.
    pub fn system(&self, store: &Store) -> Bytes {
        let facts_version = self.inner.facts_version.load(Relaxed);
        let state_version = store.version();
        let mut cached = self.inner.answer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, f, bytes)) = cached.as_ref() {
            if (*s, *f) == (state_version, facts_version) {
                return bytes.clone();
            }
        }
        let facts = self.facts();
        let (version, committed) = store.read_versioned(report::committed);
        let bytes = Bytes::from(report::render(&facts, &committed, &self.inner.settings.capacity));
        *cached = Some((version, facts_version, bytes.clone()));
        bytes
    }

    /// Appends the meters of every server on record, and the node's gauges, to `/metrics`.
    pub fn render_metrics(&self, store: &Store, out: &mut String) {
        let (records, committed) = store.read(|s| {
            let records: Vec<(String, String, u64)> =
                s.containers.values().map(|c| (c.internal_id.clone(), c.record_id.clone(), c.created_at)).collect();
            (records, report::committed(s))
        });
        let servers: Vec<(String, Totals)> = {
            let ledger = self.shown();
            records
                .into_iter()
                .map(|(id, record_id, created_at)| {
                    let t = ledger.servers.get(&id).filter(|t| t.record_id == record_id).cloned();
                    let t = t.unwrap_or_else(|| Totals::new(&record_id, created_at.max(ledger.began)));
                    (id, t)
                })
                .collect()
        };
        prom::servers(out, &servers);
        let facts = self.facts();
        let free = report::free(&facts, &committed, &self.inner.settings.capacity);
        prom::node(out, &facts, &committed, &free);
    }
}
