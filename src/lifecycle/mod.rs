//! Long operations on containers (install, reinstall, rebind, delete), each under the
//! container's operation lock so two never interleave.

pub mod install;
pub mod power;
pub mod rebind;
pub mod recover;
pub mod remove;
pub mod spec;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use crate::app::App;
use crate::docker::DockerError;
use crate::error::{Error, Result};
use crate::model::{now, ContainerRecord, InstallState, PortBinding, PortKey};
use crate::store::State;

/// The seed's timeouts.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an action waits for another operation on the same container to finish.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Per-container operation locks.
#[derive(Default)]
pub struct Ops {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Ops {
    /// Takes the lock of `id`, waiting up to [`LOCK_WAIT`] for an operation that is just
    /// finishing; past that, a 409 naming `action`.
    pub async fn begin(&self, id: &str, action: &str) -> Result<OwnedMutexGuard<()>> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(id.to_string()).or_default())
        };
        tokio::time::timeout(LOCK_WAIT, lock.lock_owned()).await.map_err(|_| {
            Error::Conflict(format!("Cannot {action} while another operation is running on this container"))
        })
    }

    pub fn forget(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

fn not_found() -> Error {
    Error::NotFound("Container not found".into())
}

/// The record of `id`, or 404.
pub fn record(app: &App, id: &str) -> Result<ContainerRecord> {
    if !crate::ids::valid_internal_id(id) {
        return Err(Error::BadRequest(
            "internal_id must be 1-64 characters of A-Z a-z 0-9 _ . - and not start with .".into(),
        ));
    }
    app.store.read(|s| s.containers.get(id).cloned()).ok_or_else(not_found)
}

/// The record of `id` if `action` may run on it now: it exists and is not installing.
pub fn actionable(app: &App, id: &str, action: &str) -> Result<ContainerRecord> {
    let rec = record(app, id)?;
    if rec.install_state == InstallState::Installing {
        return Err(Error::Conflict(format!("Cannot {action} while container is installing")));
    }
    Ok(rec)
}

/// Checks that `action` may run on `id` now (404, 409 while installing), then takes its
/// operation lock (409 while another operation runs).
pub async fn begin(app: &App, id: &str, action: &str) -> Result<OwnedMutexGuard<()>> {
    actionable(app, id, action)?;
    app.ops.begin(id, action).await
}

/// Changes the record of `id` (stamping `updated_at`) and waits until it is saved.
pub async fn edit(app: &App, id: &str, f: impl FnOnce(&mut ContainerRecord)) -> Result<()> {
    app.store
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

/// At boot: installs that a restart cut short can never finish; say so instead of leaving
/// them `installing` (which would refuse every action, delete included).
pub async fn fail_interrupted_installs(app: &App) -> Result<usize> {
    if !app.store.read(|s| s.containers.values().any(|r| r.install_state == InstallState::Installing)) {
        return Ok(0);
    }
    app.store
        .update(|s| {
            let mut n = 0;
            for rec in s.containers.values_mut().filter(|r| r.install_state == InstallState::Installing) {
                rec.install_state = InstallState::Failed;
                rec.error = Some("interrupted by daemon restart".into());
                rec.updated_at = now();
                n += 1;
            }
            Ok(n)
        })
        .await
}
