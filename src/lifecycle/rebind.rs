//! `rebind-network`: the seed's five steps. The new container is created beside the old one
//! before the old one goes, so any failure leaves the old container and ports as they were.
//! A server that was running is started again on the new ports.

use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;

use super::power::{self, set_state};
use super::spec::{check_ports, container_spec, RunSpec};
use super::{begin, bounded, claim_ports, edit, install::data_dir, release_ports, CREATE_TIMEOUT, REMOVE_TIMEOUT};
use crate::app::App;
use crate::console::{Event, Intent};
use crate::error::{Error, Result};
use crate::model::{PortBinding, PortKey, PowerState};

/// Step 1 (validate and reserve the new ports) before the `202`; the rest in the background.
pub async fn rebind(app: &Arc<App>, id: &str, ports: Vec<PortBinding>) -> Result<()> {
    check_ports(&ports)?;
    let guard = begin(app, id, "rebind network").await?;
    app.store.update(|s| claim_ports(s, id, &ports)).await?;
    tokio::spawn(run(Arc::clone(app), id.to_string(), ports, guard));
    Ok(())
}

async fn run(app: Arc<App>, id: String, ports: Vec<PortBinding>, guard: OwnedMutexGuard<()>) {
    let hub = app.hubs.get(&id);
    let Ok(old) = super::record(&app, &id) else {
        return;
    };
    let old_keys: Vec<PortKey> = old.ports.iter().map(PortBinding::key).collect();
    match swap(&app, &id, &ports).await {
        Ok(()) => {
            hub.publish(Event::DaemonMessage("Network rebound".into()));
            // A running server went with its old container: bring it back on the new ports.
            if old.state != PowerState::Offline {
                hub.set_intent(Intent::Stop);
                let _ = set_state(&app, &id, PowerState::Offline, |_| true).await;
                drop(guard);
                if let Err(e) = power::start(&app, &id).await {
                    hub.publish(Event::DaemonMessage(format!("Start after rebind failed: {e}")));
                }
            }
        }
        Err(e) => {
            eprintln!("lightd: {id}: rebind failed: {e}");
            // Give back the ports this rebind took; the old ones were never let go.
            let undo = app.store.update(|s| {
                release_ports(s, &id, &old_keys);
                Ok::<_, Error>(())
            });
            if let Err(u) = undo.await {
                eprintln!("lightd: {id}: could not release ports after a failed rebind: {u}");
            }
            let _ = edit(&app, &id, |r| r.error = Some(format!("rebind-network failed: {e}"))).await;
            hub.publish(Event::DaemonMessage(format!("Network rebind failed: {e}")));
        }
    }
}

/// Steps 2-5: new container beside the old, old removed, new renamed, record and pool updated.
async fn swap(app: &App, id: &str, ports: &[PortBinding]) -> std::result::Result<(), String> {
    let mut next = super::record(app, id).map_err(|e| e.to_string())?;
    next.ports = ports.to_vec();
    let docker = &app.docker;
    let mut new_cid = None;
    if let Some(old_cid) = next.container_id.clone() {
        let volume_path = crate::volumes::mount_path(app, &next.volume_id)?;
        let data = data_dir(app, id);
        let net = &app.config.containers.default_network;
        let network = docker.ensure_network(net).await.map_err(|e| format!("cannot prepare network {net}: {e}"))?;
        let temp = format!("{}-rebind", next.docker_name());
        bounded(REMOVE_TIMEOUT, "removing a leftover container", docker.remove_container(&temp))
            .await
            .map_err(|e| e.to_string())?;
        let body = container_spec(&next, &app.config, &RunSpec::server(&volume_path, &data, &network));
        let cid = bounded(CREATE_TIMEOUT, "creating the container", docker.create_container(&temp, &body))
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = bounded(REMOVE_TIMEOUT, "removing the old container", docker.remove_container(&old_cid)).await {
            let _ = docker.remove_container(&cid).await;
            return Err(e.to_string());
        }
        if let Err(e) = docker.rename_container(&cid, &next.docker_name()).await {
            // It works under the temporary name; lightd addresses it by id.
            eprintln!("lightd: {id}: could not rename {temp}: {e}");
        }
        new_cid = Some(cid);
    }
    let keep: Vec<PortKey> = ports.iter().map(PortBinding::key).collect();
    app.store
        .update(|s| {
            let rec = s.containers.get_mut(id).ok_or_else(|| Error::NotFound("Container not found".into()))?;
            rec.ports = ports.to_vec();
            if new_cid.is_some() {
                rec.container_id = new_cid;
            }
            rec.error = None;
            rec.updated_at = crate::model::now();
            release_ports(s, id, &keep);
            Ok::<_, Error>(())
        })
        .await
        .map_err(|e| e.to_string())
}
