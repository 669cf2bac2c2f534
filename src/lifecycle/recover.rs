//! Making the records agree with Docker: at boot and each time the engine comes back.
//! Running servers are re-attached (their console continues; the tail is filled from Docker
//! once), servers that ended while we were away are recorded `offline` with their exit,
//! vanished containers are marked with a reason, and the port pool is made to match.

use std::sync::atomic::Ordering::*;
use std::sync::Arc;

use regex_lite::Regex;

use super::power::{on_exit, set_state};
use crate::app::App;
use crate::console::{pump, stats, Event};
use crate::error::Error;
use crate::model::{now, ContainerRecord, InstallState, PortBinding, PortKey, PowerState};

/// Reconciles every record; errors are logged, never fatal (the engine may go away again).
pub async fn reconcile(app: &Arc<App>) {
    let records: Vec<ContainerRecord> = app.store.read(|s| s.containers.values().cloned().collect());
    for rec in records {
        if let Err(e) = reconcile_one(app, &rec).await {
            eprintln!("lightd: {}: reconcile: {e}", rec.internal_id);
        }
    }
    if let Err(e) = fix_port_pool(app).await {
        eprintln!("lightd: reconcile of the port pool: {e}");
    }
}

/// Reconciles one container, e.g. when the engine reports a change lightd did not make
/// (a call still in flight when a previous daemon was killed lands after the boot reconcile).
pub async fn reconcile_container(app: &Arc<App>, id: &str) {
    let Some(rec) = app.store.read(|s| s.containers.get(id).cloned()) else { return };
    if let Err(e) = reconcile_one(app, &rec).await {
        eprintln!("lightd: {id}: reconcile: {e}");
    }
}

async fn reconcile_one(app: &Arc<App>, rec: &ContainerRecord) -> Result<(), Error> {
    let id = &rec.internal_id;
    // An operation in flight (install, rebind, start) knows better; leave it alone.
    let Ok(_op) = app.ops.begin(id, "reconcile").await else { return Ok(()) };
    let Some(rec) = app.store.read(|s| s.containers.get(id).cloned()) else { return Ok(()) };
    // Left from an install or rebind cut short; the record no longer points at them.
    for leftover in [format!("{}-install", rec.docker_name()), format!("{}-rebind", rec.docker_name())] {
        if rec.install_state != InstallState::Installing && rec.container_id.as_deref() != Some(&leftover) {
            let _ = app.docker.remove_container(&leftover).await;
        }
    }
    if rec.install_state == InstallState::Installing {
        return Ok(());
    }
    // A container under the server's name that the record does not point at was made by an
    // install cut short before it was recorded: it goes (a reinstall makes a fresh one).
    match app.docker.inspect_container(&rec.docker_name()).await {
        Ok(named) if named["Id"].as_str() != rec.container_id.as_deref() => {
            app.docker.remove_container(&rec.docker_name()).await?;
        }
        Err(e) if !e.is_not_found() => return Err(e.into()),
        _ => {}
    }
    let Some(cid) = rec.container_id.clone() else { return Ok(()) };
    let info = match app.docker.inspect_container(&cid).await {
        Ok(info) => info,
        Err(e) if e.is_not_found() => return vanished(app, id).await,
        Err(e) => return Err(e.into()),
    };
    let st = &info["State"];
    if st["Running"].as_bool() != Some(true) {
        on_exit(app, id).await;
        return Ok(());
    }
    let hub = app.hubs.get(id);
    if hub.attach_open.load(Acquire) {
        return Ok(());
    }
    let pattern = rec.start_pattern.as_deref().and_then(|p| Regex::new(p).ok());
    let waiting = rec.state == PowerState::Starting && pattern.is_some();
    hub.awaiting_pattern.store(waiting, Release);
    if hub.started_at.load(Acquire) == 0 {
        hub.started_at.store(now(), Release);
    }
    let backfill = if hub.lines_total() == 0 {
        app.docker.log_tail(&cid, app.config.console.ring_lines, pump::MAX_LINE).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    pump::open(app, &hub, &cid, pattern, backfill).await?;
    let to = match (st["Paused"].as_bool(), waiting) {
        (Some(true), _) => PowerState::Suspended,
        (_, true) => PowerState::Starting,
        _ => PowerState::Running,
    };
    set_state(app, id, to, |_| true).await?;
    stats::ensure(app, &hub);
    eprintln!("lightd: {id}: re-attached to its running container");
    Ok(())
}

/// The Docker container is gone (removed by hand): say so; a reinstall brings it back.
async fn vanished(app: &App, id: &str) -> Result<(), Error> {
    let why = "Docker container vanished (removed outside lightd); reinstall to recreate it";
    let changed = app
        .store
        .update(|s| {
            let Some(r) = s.containers.get_mut(id) else { return Ok(false) };
            if r.container_id.is_none() {
                return Ok(false);
            }
            r.container_id = None;
            r.install_state = InstallState::Failed;
            r.state = PowerState::Offline;
            r.error = Some(why.into());
            r.updated_at = now();
            Ok::<_, Error>(true)
        })
        .await?;
    if changed {
        let hub = app.hubs.get(id);
        hub.publish(Event::Status(PowerState::Offline));
        hub.publish(Event::DaemonMessage(why.into()));
        eprintln!("lightd: {id}: {why}");
    }
    Ok(())
}

/// Every record's ports are held by it; every held port belongs to a record that lists it.
async fn fix_port_pool(app: &App) -> Result<(), Error> {
    app.store
        .update(|s| {
            let wanted: Vec<(PortKey, String)> = s
                .containers
                .values()
                .flat_map(|r| r.ports.iter().map(|p: &PortBinding| (p.key(), r.internal_id.clone())))
                .collect();
            for port in s.ports.values_mut() {
                let owner = wanted.iter().find(|(k, _)| *k == port.key()).map(|(_, id)| id.clone());
                if port.in_use != owner.is_some() || port.used_by != owner {
                    eprintln!("lightd: port {} fixed: used by {owner:?} (was {:?})", port.key(), port.used_by);
                    port.in_use = owner.is_some();
                    port.used_by = owner;
                }
            }
            Ok(())
        })
        .await
}
