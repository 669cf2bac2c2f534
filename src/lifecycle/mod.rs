//! The lifecycle of every container, as one supervisor task per container (see
//! `supervisor.rs`). Everything else (REST handlers, WebSocket `power` frames, the engine's
//! events, the boot reconcile) only sends a supervisor messages and awaits the answer.

pub mod action;
mod datadir;
pub mod error;
pub mod events;
mod image;
mod install;
mod mounts;
pub mod network;
mod power;
mod progress;
mod pull;
mod rebind;
mod recover;
mod remove;
pub mod request;
pub mod spec;
pub mod supervisor;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use action::{Action, Fact, JobResult};
use action::{Ask, Msg};
pub use datadir::data_dir;
pub use power::MAX_COMMAND;
use supervisor::Supervisor;

use crate::backups::Backups;
use crate::config::Config;
use crate::console::Hubs;
use crate::docker::{Docker, DockerError};
use crate::error::{Error, Result};
use crate::journal::Journals;
use crate::metrics::Metrics;
use crate::model::{now, ContainerRecord, InstallState, PortBinding, PortKey};
use crate::shutdown::Tasks;
use crate::store::State;
use crate::store::Store;
use crate::volumes::Volumes;

/// The seed's timeouts.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an action waits for another operation on the same container to finish.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);
/// How long a tail waits for the console of a server that was running at boot to be refilled.
pub const FILL_WAIT: Duration = Duration::from_secs(5);

/// The lifecycle room's handle: the mailbox of every container's supervisor, and what the
/// supervisors reach (handed to each when it is spawned). Cheap to clone (one `Arc`); its
/// fields are private to `lifecycle`, reached from outside only through its functions.
#[derive(Clone)]
pub struct Supervisors(Arc<Shared>);

/// What a [`Supervisors`] handle shares: the mailboxes, and the handles of the rooms a
/// supervisor works with.
pub struct Shared {
    map: Mutex<HashMap<String, mpsc::UnboundedSender<Msg>>>,
    config: Arc<Config>,
    store: Arc<Store>,
    docker: Arc<Docker>,
    hubs: Arc<Hubs>,
    journals: Journals,
    backups: Backups,
    volumes: Volumes,
    metrics: Arc<Metrics>,
    tasks: Tasks,
    /// Usage meters (starts and crashes are counted as they happen).
    node: crate::node::Node,
    /// This daemon's identity on the engine (a label on every container it makes).
    instance: String,
    /// The daemon's multi-threaded runtime: where a stats stream asked for on the console
    /// thread runs.
    runtime: tokio::runtime::Handle,
    /// The servers' firewall (its rules follow the records: rebind, delete, boot).
    firewall: Arc<crate::firewall::Firewall>,
}

impl std::ops::Deref for Supervisors {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The handles a [`Supervisors`] is built from (see [`Supervisors::new`]).
pub struct Parts {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub docker: Arc<Docker>,
    pub hubs: Arc<Hubs>,
    pub journals: Journals,
    pub backups: Backups,
    pub volumes: Volumes,
    pub metrics: Arc<Metrics>,
    pub tasks: Tasks,
    pub node: crate::node::Node,
}

impl Supervisors {
    /// Called on the daemon's runtime (it keeps its handle).
    pub fn new(p: Parts) -> Supervisors {
        let instance = p.store.read(|s| s.instance.clone());
        Supervisors(Arc::new(Shared {
            map: Mutex::default(),
            config: p.config,
            store: p.store,
            docker: p.docker,
            hubs: p.hubs,
            journals: p.journals,
            backups: p.backups,
            volumes: p.volumes,
            metrics: p.metrics,
            tasks: p.tasks,
            node: p.node,
            firewall: Arc::new(crate::firewall::Firewall::new(&instance)),
            instance,
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    /// The servers' firewall.
    pub fn firewall(&self) -> &Arc<crate::firewall::Firewall> {
        &self.firewall
    }

    /// Brings the firewall to the records, saying so in the log when it cannot.
    pub(crate) async fn sync_firewall(&self, why: &str) {
        if let Err(e) = self.firewall.sync(&self.store).await {
            crate::error!("firewall not brought up to date after {why}: {e}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Msg>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<mpsc::UnboundedSender<Msg>> {
        self.lock().get(id).cloned()
    }

    /// Hands `fact` to the supervisor of `id`, if there is one.
    pub fn tell(&self, id: &str, fact: Fact) {
        if let Some(tx) = self.get(id) {
            let _ = tx.send(Msg::Fact(fact));
        }
    }

    /// Hands a fact to every supervisor.
    pub fn tell_all(&self, fact: impl Fn() -> Fact) {
        for tx in self.lock().values() {
            let _ = tx.send(Msg::Fact(fact()));
        }
    }

    /// Takes `id` for a supervisor about to start: `false` when one has it (the record
    /// exists, or is still being deleted).
    fn reserve(&self, id: &str, tx: &mpsc::UnboundedSender<Msg>) -> bool {
        let mut map = self.lock();
        if map.contains_key(id) {
            return false;
        }
        map.insert(id.to_string(), tx.clone());
        true
    }

    /// Drops the entry of a supervisor that ended (unless a newer one took the id).
    pub(crate) fn forget(&self, id: &str, tx: &mpsc::UnboundedSender<Msg>) {
        let mut map = self.lock();
        if map.get(id).is_some_and(|t| t.same_channel(tx)) {
            map.remove(id);
        }
    }
}

/// Starts a supervisor for every record (at boot, before the reconcile).
pub async fn boot(sups: &Supervisors) {
    // An install the last run did not finish never will: say so before anyone can ask.
    let cut_short = sups.store.read(|s| s.containers.values().any(|r| r.install_state == InstallState::Installing));
    if cut_short {
        let cut = sups
            .store
            .update(|s| {
                for r in s.containers.values_mut().filter(|r| r.install_state == InstallState::Installing) {
                    r.install_state = InstallState::Failed;
                    r.error = Some("interrupted by daemon restart".into());
                    r.updated_at = now();
                }
                Ok::<_, Error>(())
            })
            .await;
        if let Err(e) = cut {
            crate::warn!("cannot mark interrupted installs as failed: {e}");
        }
    }
    let ids: Vec<String> = sups.store.read(|s| s.containers.keys().cloned().collect());
    {
        let mut map = sups.lock();
        for id in ids {
            map.insert(id.clone(), Supervisor::spawn(sups, &id, false));
        }
    }
    // The rules on record, applied once (a table left by the last run is reused, never doubled).
    sups.sync_firewall("the daemon's start").await;
}

/// Asks the supervisor of `id` for `action` and waits for its answer.
pub async fn act(sups: &Supervisors, id: &str, action: Action) -> Result<()> {
    check_id(id)?;
    let tx = sups.get(id).ok_or_else(not_found)?;
    let (reply, answer) = oneshot::channel();
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    tx.send(Msg::Ask(Ask { action, reply, deadline })).map_err(|_| not_found())?;
    answer.await.unwrap_or_else(|_| Err(not_found()))
}

/// Validates a create, reserves its ports, records it as `installing` and hands it to a new
/// supervisor. Everything a user can get wrong fails here, before the `202`.
pub async fn create(sups: &Supervisors, req: request::CreateRequest) -> Result<()> {
    let mut rec = request::check_create(req, &sups.config)?;
    let id = rec.internal_id.clone();
    if sups.store.read(|s| s.containers.contains_key(&id)) {
        return Err(exists(&id));
    }
    // Mount sources resolved (symlinks and all) off the runtime's threads; what is recorded
    // is what gets mounted.
    rec.mount = mounts::resolve(sups, &rec.mount).await?;
    sups.docker.ping().await?;
    // The mailbox is listed before the record is saved, so an action that finds the record
    // also finds its supervisor (it waits in the mailbox until the supervisor starts).
    let (tx, rx) = mpsc::unbounded_channel();
    if !sups.reserve(&id, &tx) {
        return Err(exists(&id));
    }
    let max = sups.config.containers.max_containers;
    let saved = sups
        .store
        .update(|s| {
            if s.containers.contains_key(&id) {
                return Err(exists(&id));
            }
            if s.containers.len() >= max {
                return Err(Error::Conflict(format!("Container limit reached (containers.max_containers = {max})")));
            }
            // The body may name the volume by id or by name; the record keeps the id.
            rec.volume_id =
                crate::volumes::resolve(s, &rec.volume_id).ok_or(Error::NotFound("Volume not found".into()))?;
            let others: Vec<&ContainerRecord> = s.containers.values().collect();
            mounts::check_isolation(&rec, &others)?;
            claim_ports(s, &id, &rec.ports)?;
            s.containers.insert(id.clone(), rec);
            Ok(())
        })
        .await;
    if let Err(e) = saved {
        sups.forget(&id, &tx);
        return Err(e);
    }
    sups.journals.revive(&id);
    Supervisor::run(sups, &id, tx, rx, true);
    Ok(())
}

fn exists(id: &str) -> Error {
    Error::Conflict(format!("Container {id} already exists"))
}

pub fn not_found() -> Error {
    Error::NotFound("Container not found".into())
}

pub fn check_id(id: &str) -> Result<()> {
    if crate::ids::valid_internal_id(id) {
        Ok(())
    } else {
        Err(Error::BadRequest("internal_id must be 1-64 characters of A-Z a-z 0-9 _ . - and not start with .".into()))
    }
}

/// The record of `id`, or 404.
pub fn record(sups: &Supervisors, id: &str) -> Result<ContainerRecord> {
    check_id(id)?;
    sups.store.read(|s| s.containers.get(id).cloned()).ok_or_else(not_found)
}

/// Changes the record of `id` (stamping `updated_at`) and waits until it is saved.
pub async fn edit(sups: &Supervisors, id: &str, f: impl FnOnce(&mut ContainerRecord)) -> Result<()> {
    sups.store
        .update(|s| {
            let rec = s.containers.get_mut(id).ok_or_else(not_found)?;
            f(rec);
            rec.updated_at = now();
            Ok(())
        })
        .await
}

/// Marks `ports` as used by `id`: every one must be in the pool (400) and free or already
/// `id`'s (409). Checks all before changing any.
pub fn claim_ports(s: &mut State, id: &str, ports: &[PortBinding]) -> Result<()> {
    for p in ports {
        let entry = s
            .ports
            .get(&p.key())
            .ok_or_else(|| Error::BadRequest(format!("Port not found in network pool: {}", p.key())))?;
        if entry.in_use && entry.used_by.as_deref() != Some(id) {
            return Err(Error::Conflict(format!(
                "Port already in use: {} by {}",
                p.key(),
                entry.used_by.as_deref().unwrap_or("another container")
            )));
        }
    }
    for p in ports {
        if let Some(entry) = s.ports.get_mut(&p.key()) {
            entry.in_use = true;
            entry.used_by = Some(id.to_string());
        }
    }
    Ok(())
}

/// Frees every pool port held by `id` except those in `keep`.
pub fn release_ports(s: &mut State, id: &str, keep: &[PortKey]) {
    for (key, entry) in s.ports.iter_mut() {
        if entry.used_by.as_deref() == Some(id) && !keep.contains(key) {
            entry.in_use = false;
            entry.used_by = None;
        }
    }
}

/// Runs a Docker call under one of the seed's timeouts, with a clear error past it.
pub async fn bounded<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = std::result::Result<T, DockerError>>,
) -> std::result::Result<T, DockerError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(DockerError::Timeout(format!("{what} took longer than {} s", limit.as_secs()))))
}
