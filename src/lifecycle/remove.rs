//! `DELETE /containers/:id`: an install in progress is cancelled, a running server is stopped
//! gracefully; then the Docker containers, the data directory, the ports, the console tokens
//! bound to it and the record go. The volume stays.

use tokio::sync::oneshot;

use super::error::Failure;
use super::supervisor::{Intent, JobKind, Supervisor, Then};
use super::{bounded, datadir::data_dir, release_ports, REMOVE_TIMEOUT};
use crate::error::{Error, Result};
use crate::model::PowerState;

impl Supervisor {
    pub(super) async fn delete(&mut self, reply: oneshot::Sender<Result<()>>) {
        if let Some(job) = self.job.take_if(|j| matches!(j.kind, JobKind::Pull { .. } | JobKind::Install { .. })) {
            job.task.abort();
            self.say("Install cancelled: the container is being deleted");
        }
        let rec = self.record();
        let up = rec.as_ref().is_some_and(|r| r.state != PowerState::Offline && r.container_id.is_some());
        if up && self.job.is_none() {
            if let Err(e) = self.sups.docker.ping().await {
                let _ = reply.send(Err(e.into()));
                return;
            }
            if let Err(e) = self.stop(Intent::For("deletion"), Then::Nothing).await {
                let _ = reply.send(Err(e));
                return;
            }
        }
        if let Some(JobKind::Stop { then }) = self.job.as_mut().map(|j| &mut j.kind) {
            // Answered once the server has stopped and everything is gone.
            *then = Then::Delete(reply);
            return;
        }
        let _ = reply.send(self.remove().await);
    }

    /// Removes Docker's side first: if the engine is down (503) or slow (past 30 s) while a
    /// container exists, nothing else is touched, so the record never points at a
    /// half-deleted server. A record that never had a container needs no engine: anything an
    /// install left behind is swept when the engine answers again.
    pub(super) async fn remove(&mut self) -> Result<()> {
        let rec = self.record().ok_or_else(super::not_found)?;
        let docker = &self.sups.docker;
        let mut ids: Vec<String> = rec
            .container_id
            .iter()
            .cloned()
            .chain([rec.docker_name(&self.sups.config.containers.name_prefix)])
            .collect();
        match docker.list_containers(&self.labels()).await {
            Ok(found) => ids.extend(found.into_iter().map(|c| c.id)),
            Err(e) if rec.container_id.is_some() => return Err(e.into()),
            Err(_) => ids.clear(),
        }
        for cid in &ids {
            bounded(REMOVE_TIMEOUT, "removing the container", docker.remove_container(cid)).await?;
        }
        if let Some(p) = self.hub.tty().take_pump() {
            p.abort();
        }
        let dir = data_dir(&self.sups, &self.id);
        let removing = dir.clone();
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&removing))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Failure::RemoveData(dir, e).into());
            }
            _ => {}
        }
        // Its console history and crash records go with it.
        let (journals, id) = (self.sups.journals.clone(), self.id.clone());
        match tokio::task::spawn_blocking(move || journals.remove(&id)).await {
            Ok(Err(e)) => crate::warn!("{}: cannot remove the console journal: {e}", self.id),
            Err(e) => crate::warn!("{}: cannot remove the console journal: {e}", self.id),
            Ok(Ok(())) => {}
        }
        let id = self.id.clone();
        self.sups
            .store
            .update(|s| {
                release_ports(s, &id, &[]);
                s.containers.remove(&id);
                s.tokens.retain(|_, t| t.internal_id.as_deref() != Some(id.as_str()));
                Ok::<_, Error>(())
            })
            .await?;
        // The hub goes before the id is free again: a new record's supervisor and viewers
        // meet on a new hub, never on this one.
        self.sups.hubs.remove(&self.id);
        self.sups.forget(&self.id, &self.tx);
        self.deleted = true;
        self.sups.sync_firewall("a deletion").await;
        // A create the engine was still working on when a cancelled install let go of it
        // lands after the removal above: look again a little later.
        // Only this record's containers (a new record of the same id has other labels).
        let mut labels = self.labels();
        labels.push(format!("lightd.record={}", rec.record_id));
        let sups = self.sups.clone();
        crate::shutdown::detach(async move {
            for wait in [1, 4, 10] {
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                for c in sups.docker.list_containers(&labels).await.unwrap_or_default() {
                    let _ = sups.docker.remove_container(&c.id).await;
                }
            }
        });
        Ok(())
    }

    /// The labels that find every container this daemon made for this server.
    pub(super) fn labels(&self) -> Vec<String> {
        vec![format!("lightd.instance={}", self.sups.instance), format!("lightd.internal_id={}", self.id)]
    }

    /// Removes this server's containers that nothing refers to (helpers of a job that was
    /// cut short, a half-made container of an install a crash interrupted). Never while a job
    /// runs: its containers are its own.
    pub(super) async fn sweep(&self) {
        if self.job.is_some() {
            return;
        }
        let current = self.record().and_then(|r| r.container_id);
        let Ok(found) = self.sups.docker.list_containers(&self.labels()).await else { return };
        for c in found.into_iter().filter(|c| Some(&c.id) != current.as_ref()) {
            crate::info!("{}: removing leftover container {}", self.id, &c.id[..12.min(c.id.len())]);
            let _ = bounded(REMOVE_TIMEOUT, "removing a leftover container", self.sups.docker.remove_container(&c.id))
                .await;
        }
    }
}
