//! `rebind-network`: the seed's five steps. The new ports are reserved first; a running server
//! is stopped gracefully; the new container is made beside the old one before the old one
//! goes, so any failure leaves the old container and ports as they were; the server is
//! started again (on the new ports, or on the old ones after a failure).

use super::request::check_ports;
use super::spec::{container_spec, RunSpec};
use super::supervisor::{Intent, JobKind, Supervisor, Then};
use super::Supervisors;
use super::{bounded, claim_ports, datadir::data_dir, release_ports, JobResult, CREATE_TIMEOUT, REMOVE_TIMEOUT};
use crate::error::{Error, Result};
use crate::model::{now, PortBinding, PortKey, PowerState};

impl Supervisor {
    /// Step 1 (validate and reserve the new ports) before the `202`; the rest in the background.
    pub(super) async fn rebind(&mut self, ports: Vec<PortBinding>) -> Result<()> {
        check_ports(&ports)?;
        let id = self.id.clone();
        self.sups.store.update(|s| claim_ports(s, &id, &ports)).await?;
        let rec = self.record().ok_or_else(super::not_found)?;
        if rec.container_id.is_none() {
            // No container to move: only the record and the pool change.
            self.commit_rebind(ports, None).await;
            return Ok(());
        }
        if rec.state == PowerState::Offline {
            self.begin_rebind(ports, false);
            return Ok(());
        }
        let keep: Vec<PortKey> = rec.ports.iter().map(PortBinding::key).collect();
        if let Err(e) = self.stop(Intent::For("rebind-network"), Then::Rebind { ports, start_after: true }).await {
            let undo = self.sups.store.update(|s| {
                release_ports(s, &id, &keep);
                Ok::<_, Error>(())
            });
            let _ = undo.await;
            return Err(e);
        }
        Ok(())
    }

    /// Steps 2-3 in the background: the new container beside the old, then the old one goes.
    pub(super) fn begin_rebind(&mut self, ports: Vec<PortBinding>, start_after: bool) {
        let (sups, id, wanted) = (self.sups.clone(), self.id.clone(), ports.clone());
        self.start_job(JobKind::Rebind { ports, start_after }, async move {
            JobResult::Rebound(swap(&sups, &id, &wanted).await)
        });
    }

    /// Steps 4-5: the record and the pool follow the new container, or stay as they were.
    pub(super) async fn rebound(&mut self, outcome: std::result::Result<String, String>) {
        let Some(super::supervisor::Job { kind: JobKind::Rebind { ports, start_after }, .. }) = self.job.take() else {
            return;
        };
        match outcome {
            Ok(cid) => self.commit_rebind(ports, Some(cid)).await,
            Err(why) => {
                // Give back the ports this rebind took; the old ones were never let go.
                let id = self.id.clone();
                let undo = self.sups.store.update(|s| {
                    let rec = s.containers.get_mut(&id).ok_or_else(super::not_found)?;
                    rec.error = Some(format!("rebind-network failed: {why}"));
                    let old: Vec<PortKey> = rec.ports.iter().map(PortBinding::key).collect();
                    release_ports(s, &id, &old);
                    Ok::<_, Error>(())
                });
                if let Err(e) = undo.await {
                    crate::error!("{id}: could not release ports after a failed rebind: {e}");
                }
                self.say(format!("Network rebind failed, the old ports are kept: {why}"));
            }
        }
        self.sweep().await;
        if start_after {
            if let Err(e) = self.start().await {
                self.say(format!("Start after the rebind failed: {e}"));
            }
        }
    }

    /// The record takes the new ports (and container); the old ports go back to the pool.
    async fn commit_rebind(&mut self, ports: Vec<PortBinding>, cid: Option<String>) {
        let id = self.id.clone();
        let keep: Vec<PortKey> = ports.iter().map(PortBinding::key).collect();
        let saved = self
            .sups
            .store
            .update(|s| {
                let rec = s.containers.get_mut(&id).ok_or_else(super::not_found)?;
                // The firewall's rules move with the ports they are about.
                rec.firewall = crate::firewall::rule::follow(&rec.firewall, &rec.ports, &ports);
                rec.ports = ports;
                if cid.is_some() {
                    rec.container_id = cid;
                }
                rec.error = None;
                rec.updated_at = now();
                release_ports(s, &id, &keep);
                Ok::<_, Error>(())
            })
            .await;
        match saved {
            Ok(()) => self.say("Network rebound"),
            Err(e) => self.say(format!("Network rebound, but the record could not be saved: {e}")),
        }
        self.sups.sync_firewall("a rebind").await;
    }
}

/// The new container (anonymous until the old one is gone), then the swap of names.
async fn swap(sups: &Supervisors, id: &str, ports: &[PortBinding]) -> std::result::Result<String, String> {
    let mut next = sups.store.read(|s| s.containers.get(id).cloned()).ok_or("the record is gone")?;
    next.ports = ports.to_vec();
    let old_cid = next.container_id.clone().ok_or("no container to rebind")?;
    let docker = &sups.docker;
    let volume_path = crate::volumes::mount_path_off(&sups.volumes, &next.volume_id).await?;
    let binds = super::mounts::verify(sups, &next).await?;
    let data = data_dir(sups, id);
    let net = &sups.config.containers.default_network;
    let network = docker
        .ensure_network(net, &super::network::network_options())
        .await
        .map_err(|e| format!("cannot prepare network {net}: {e}"))?;
    let run = RunSpec::server(&next, &volume_path, &data, &binds, &network, &sups.instance);
    let body = container_spec(&next, &sups.config, &run);
    let cid = bounded(CREATE_TIMEOUT, "creating the container", docker.create_container(None, &body))
        .await
        .map_err(|e| e.to_string())?;
    if let Err(e) = bounded(REMOVE_TIMEOUT, "removing the old container", docker.remove_container(&old_cid)).await {
        let _ = docker.remove_container(&cid).await;
        return Err(e.to_string());
    }
    if let Err(e) = docker.rename_container(&cid, &next.docker_name(&sups.config.containers.name_prefix)).await {
        // It works under its generated name; lightd addresses it by id.
        crate::warn!("{id}: could not rename the new container: {e}");
    }
    Ok(cid)
}
