//! Making the records agree with Docker: at boot and each time the engine comes back.
//! Running servers are re-attached (their console continues; the tail is filled from Docker
//! once), servers that ended while we were away are recorded `offline` with their exit (and
//! the crash policy applies), vanished containers are marked with a reason, leftovers are
//! removed, and the port pool is made to match.

use std::sync::atomic::Ordering;

use super::request::compile_pattern;
use super::supervisor::{Intent, Supervisor, Then};
use super::Supervisors;
use crate::console::{pump, stats};
use crate::error::Error;
use crate::model::{now, PortKey, PowerState};
use crate::store::State;

impl Supervisor {
    /// One server's reconcile; a running job knows better and is left alone.
    pub(super) async fn reconcile(&mut self) {
        if self.job.is_some() {
            return;
        }
        if let Err(e) = self.reconcile_steps().await {
            crate::error!("{}: reconcile: {e}", self.id);
        }
    }

    async fn reconcile_steps(&mut self) -> Result<(), Error> {
        let Some(rec) = self.record() else { return Ok(()) };
        self.fix_ports().await?;
        self.sweep().await;
        // A container under the server's name that the record does not point at was made by
        // an install cut short before it was recorded: it goes (a reinstall makes a fresh one).
        match self.sups.docker.inspect_container(&rec.docker_name(&self.sups.config.containers.name_prefix)).await {
            Ok(named) if named["Id"].as_str() != rec.container_id.as_deref() => {
                self.sups.docker.remove_container(&rec.docker_name(&self.sups.config.containers.name_prefix)).await?;
            }
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
        let Some(cid) = rec.container_id.clone() else {
            self.hub.tty().set_filled(true);
            return Ok(());
        };
        let info = match self.sups.docker.inspect_container(&cid).await {
            Ok(info) => info,
            Err(e) if e.is_not_found() => {
                self.hub.tty().set_filled(true);
                self.vanished().await;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let st = &info["State"];
        if st["Running"].as_bool() != Some(true) {
            self.hub.tty().set_filled(true);
            if rec.state != PowerState::Offline {
                // Ended while we were away: a stop we had begun, or a crash.
                self.intent = if rec.state == PowerState::Stopping { Intent::Stop } else { Intent::None };
                self.check_exit(None).await;
            }
            return Ok(());
        }
        let paused = st["Paused"].as_bool() == Some(true);
        if !self.hub.tty().attach_open.load(Ordering::Acquire) {
            let waiting = rec.state == PowerState::Starting && rec.start_pattern.is_some();
            let pattern = match (&rec.start_pattern, waiting) {
                (Some(p), true) => Some(compile_pattern(p)?),
                _ => None,
            };
            // The console of a server that ran while nobody listened comes from Docker's log.
            let backfill = if self.hub.tty().lines_total() == 0 { self.sups.config.console.ring_lines } else { 0 };
            self.run += 1;
            self.pattern_pending = pattern.is_some();
            // The engine attaches to no paused container: it thaws for the moment it takes.
            if paused {
                self.sups.docker.unpause_container(&cid).await?;
            }
            let opened = pump::open(
                &self.sups.docker,
                &self.sups.journals,
                &self.hub,
                &cid,
                self.run,
                pattern,
                backfill,
                self.report(),
            )
            .await;
            if paused {
                self.sups.docker.pause_container(&cid).await?;
            }
            self.hub.tty().set_filled(true);
            opened?;
            crate::info!("{}: re-attached to its running container", self.id);
        }
        if self.hub.stats().started_at.load(Ordering::Acquire) == 0 {
            self.hub.stats().started_at.store(now(), Ordering::Release);
        }
        let to = match (paused, rec.state) {
            (true, _) => PowerState::Suspended,
            // A stop that a daemon restart interrupted: finish it.
            (false, PowerState::Stopping) => {
                self.set_state(PowerState::Running).await?;
                return self.stop(Intent::Stop, Then::Nothing).await;
            }
            _ if self.pattern_pending => PowerState::Starting,
            _ => PowerState::Running,
        };
        self.set_state(to).await?;
        stats::ensure(&self.sups.store, &self.sups.docker, &self.sups.runtime, &self.hub);
        Ok(())
    }
}

impl Supervisor {
    /// The pool gives this server exactly the ports its record lists (run while no job runs:
    /// a rebind holds ports its record does not list yet).
    async fn fix_ports(&self) -> Result<(), Error> {
        let id = self.id.as_str();
        let wrong = |s: &State| -> Vec<(PortKey, bool)> {
            let Some(rec) = s.containers.get(id) else { return Vec::new() };
            let listed: Vec<PortKey> = rec.ports.iter().map(|p| p.key()).collect();
            s.ports
                .values()
                .filter_map(|p| {
                    let mine = listed.contains(&p.key());
                    let held = p.in_use && p.used_by.as_deref() == Some(id);
                    let claimed = p.used_by.as_deref() == Some(id);
                    (mine != held || (!mine && claimed)).then_some((p.key(), mine))
                })
                .collect()
        };
        if self.sups.store.read(|s| wrong(s).is_empty()) {
            return Ok(());
        }
        self.sups
            .store
            .update(|s| {
                for (key, mine) in wrong(s) {
                    if let Some(port) = s.ports.get_mut(&key) {
                        crate::info!(
                            "port {key} fixed: {} {id} (was {:?})",
                            if mine { "held by" } else { "freed from" },
                            port.used_by
                        );
                        port.in_use = mine;
                        port.used_by = mine.then(|| id.to_string());
                    }
                }
                Ok(())
            })
            .await
    }
}

/// Removes containers this daemon made whose record is gone (a delete or create cut short by
/// a crash or an engine outage).
pub async fn sweep_orphans(sups: &Supervisors) {
    let mine = vec![format!("lightd.instance={}", sups.instance)];
    let Ok(found) = sups.docker.list_containers(&mine).await else { return };
    for c in found {
        let id = c.labels.get("lightd.internal_id").and_then(|v| v.as_str()).unwrap_or_default();
        if !sups.store.read(|s| s.containers.contains_key(id)) {
            remove_orphan(sups, &c.id, id).await;
        }
    }
}

/// Removes container `cid`, made for `id`, which has no record.
pub(super) async fn remove_orphan(sups: &Supervisors, cid: &str, id: &str) {
    crate::info!("removing container {} of {id:?}, which has no record", &cid[..12.min(cid.len())]);
    let _ = sups.docker.remove_container(cid).await;
}

/// Frees pool ports held for containers that have no record (each supervisor repairs its own).
pub async fn fix_port_pool(sups: &Supervisors) -> Result<(), Error> {
    let stray = |s: &State| -> Vec<PortKey> {
        s.ports
            .values()
            .filter(|p| {
                let owned = p.used_by.as_ref().is_some_and(|o| s.containers.contains_key(o));
                (p.in_use || p.used_by.is_some()) && !owned
            })
            .map(|p| p.key())
            .collect()
    };
    if sups.store.read(|s| stray(s).is_empty()) {
        return Ok(());
    }
    sups.store
        .update(|s| {
            for key in stray(s) {
                if let Some(port) = s.ports.get_mut(&key) {
                    crate::info!("port {key} fixed: used by {:?}, which has no record", port.used_by);
                    port.in_use = false;
                    port.used_by = None;
                }
            }
            Ok(())
        })
        .await
}
