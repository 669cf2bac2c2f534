//! Moving a server to another lightd node while it runs: a live pre-copy of its volume in
//! rounds (a manifest of chunk hashes, the target answers what it lacks, only that is sent,
//! zstd-compressed and verified), a short final round with the server stopped, one digest of
//! the whole tree compared, then the server created and started at the target and removed
//! here. See `docs/transfers.md` for the protocol and what failures leave behind.

pub mod archives;
pub mod manifest;
pub mod peer;
pub mod source;
pub mod target;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::console::Hubs;
use crate::docker::Docker;
use crate::lifecycle::request::CreateRequest;
use crate::lifecycle::Supervisors;
use crate::model::{ContainerRecord, Limits, PortBinding};
use crate::shutdown::Tasks;
use crate::store::Store;
use crate::volumes::Volumes;

/// The rooms a transfer works with, on either side.
#[derive(Clone)]
pub struct Rooms {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub docker: Arc<Docker>,
    pub sups: Supervisors,
    pub volumes: Volumes,
    pub backups: crate::backups::Backups,
    pub hubs: Arc<Hubs>,
    pub transfers: Transfers,
}

/// The transfers room's handle, made once per daemon: the jobs this node sends, the sessions
/// it receives, and the tracker a job runs under (so shutdown stops and awaits it). Cheap to
/// clone; two daemons in one process never share one.
#[derive(Clone)]
pub struct Transfers {
    jobs: Arc<source::Jobs>,
    sessions: Arc<target::Sessions>,
    tasks: Tasks,
}

impl Transfers {
    pub fn new(tasks: Tasks) -> Transfers {
        Transfers { jobs: Arc::default(), sessions: Arc::default(), tasks }
    }
}

/// What the target needs to create the same server: the record's spec, less what is the
/// node's own (its volume, its container).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub image: String,
    pub startup_command: String,
    #[serde(default)]
    pub start_pattern: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub mount: BTreeMap<String, String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub crash_restart: Option<bool>,
    pub user: String,
    #[serde(default)]
    pub stop_command: Option<String>,
}

impl Spec {
    pub fn of(rec: &ContainerRecord) -> Spec {
        Spec {
            image: rec.image.clone(),
            startup_command: rec.startup_command.clone(),
            start_pattern: rec.start_pattern.clone(),
            ports: rec.ports.clone(),
            limits: rec.limits,
            mount: rec.mount.clone(),
            env: rec.env.clone(),
            crash_restart: Some(rec.crash_restart),
            user: rec.user.clone(),
            stop_command: rec.stop_command.clone(),
        }
    }

    /// The create request of server `id` on volume `volume_id` (no install script: its files
    /// came along).
    pub fn request(&self, id: &str, volume_id: &str, ports: Vec<PortBinding>) -> CreateRequest {
        CreateRequest {
            internal_id: id.to_string(),
            image: self.image.clone(),
            volume_id: volume_id.to_string(),
            startup_command: self.startup_command.clone(),
            start_pattern: self.start_pattern.clone(),
            ports,
            limits: self.limits,
            mount: self.mount.clone(),
            install_script: None,
            env: self.env.clone(),
            crash_restart: self.crash_restart,
            user: Some(self.user.clone()),
            stop_command: self.stop_command.clone(),
            image_command: self.startup_command.trim().is_empty(),
        }
    }
}

/// Splits `items` into one run per core (at most 4) and runs `f` on each run on a thread of
/// its own (hashing and zstd are CPU-bound); the results in the order of the runs.
pub fn in_parallel<T: Sync, R: Send, E: Send>(
    items: &[T],
    f: impl Fn(&[T]) -> std::result::Result<R, E> + Sync,
    panicked: impl Fn() -> E,
) -> std::result::Result<Vec<R>, E> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let per = items.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let f = &f;
        let runs: Vec<_> = items.chunks(per).map(|run| s.spawn(move || f(run))).collect();
        runs.into_iter().map(|r| r.join().unwrap_or_else(|_| Err(panicked()))).collect()
    })
}
