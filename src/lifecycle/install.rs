//! Create and reinstall: the image first (the server keeps running meanwhile), then, with the
//! server stopped, the new container, the install script in a one-shot container, and the
//! entrypoint. A reinstall whose image cannot be had leaves the server exactly as it was.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use super::datadir;
use super::spec::{self, container_spec, RunSpec};
use super::supervisor::{Intent, JobKind, Rollback, Supervisor, Then};
use super::Supervisors;
use super::{bounded, JobResult, CREATE_TIMEOUT, REMOVE_TIMEOUT};
use crate::console::{Event, Hub, Lifecycle};
use crate::docker::stream::OutputLines;
use crate::docker::DockerError;
use crate::error::Result;
use crate::model::{ContainerRecord, InstallState, PowerState};

/// How many of its last lines a failed install quotes.
const LAST_LINES: usize = 10;
const MAX_LINE: usize = 16 * 1024;

impl Supervisor {
    /// `POST /containers/:id/reinstall`: back to `installing` with the new image and script.
    pub(super) async fn reinstall(&mut self, image: Option<String>, script: Option<String>) -> Result<()> {
        if let Some(i) = &image {
            super::request::check_image(i, &self.sups.config.docker.allowed_registries)?;
        }
        let rec = self.record().ok_or_else(super::not_found)?;
        let rollback = Rollback {
            image: rec.image.clone(),
            install_script: rec.install_script.clone(),
            install_state: rec.install_state,
        };
        self.edit(|r| {
            if let Some(i) = image {
                r.image = i;
            }
            if let Some(s) = script {
                r.install_script = Some(s).filter(|s| !s.trim().is_empty());
            }
            r.install_state = InstallState::Installing;
            r.error = None;
        })
        .await?;
        self.begin_install(Some(rollback));
        Ok(())
    }

    /// Step one of an install: the image (pulled when missing).
    pub(super) fn begin_install(&mut self, rollback: Option<Rollback>) {
        self.hub.news().lifecycle(Lifecycle::Started);
        let (sups, hub, id) = (self.sups.clone(), self.hub.clone(), self.id.clone());
        self.start_job(JobKind::Pull { rollback }, async move {
            JobResult::Pulled(super::pull::pull(&sups, &hub, &id).await)
        });
    }

    /// The image is there (or not): stop a running server gracefully, then install.
    pub(super) async fn pulled(&mut self, outcome: std::result::Result<(), String>) {
        let Some(super::supervisor::Job { kind: JobKind::Pull { rollback }, .. }) = self.job.take() else { return };
        if let Err(why) = outcome {
            return self.install_failed(why, rollback, None).await;
        }
        let up = self.record().is_some_and(|r| r.state != PowerState::Offline && r.container_id.is_some());
        if !up {
            return self.begin_install_steps(false);
        }
        if let Err(e) = self.stop(Intent::For("reinstall"), Then::Install { start_after: true }).await {
            self.install_failed(format!("cannot stop the server: {e}"), rollback, None).await;
        }
    }

    /// Step two: the container, the script, the entrypoint.
    pub(super) fn begin_install_steps(&mut self, start_after: bool) {
        let (sups, hub, id) = (self.sups.clone(), self.hub.clone(), self.id.clone());
        self.start_job(
            JobKind::Install { start_after },
            async move { JobResult::Installed(steps(&sups, &id, &hub).await) },
        );
    }

    pub(super) async fn installed(&mut self, outcome: std::result::Result<String, (String, Option<String>)>) {
        let Some(super::supervisor::Job { kind: JobKind::Install { start_after }, .. }) = self.job.take() else {
            return;
        };
        // A container was removed while the job ran: if it was the one just made, the
        // install failed (recorded as vanished, never as `ready`).
        let outcome = match outcome {
            Ok(cid) if std::mem::take(&mut self.gone_pending) && self.is_gone(&cid).await => {
                Err((super::power::VANISHED.to_string(), None))
            }
            other => other,
        };
        match outcome {
            Ok(cid) => {
                // Events first, then the record: whoever sees `ready` also finds the event.
                self.hub.news().lifecycle(Lifecycle::Ready);
                let saved = self
                    .edit(|r| {
                        r.container_id = Some(cid);
                        r.install_state = InstallState::Ready;
                        r.state = PowerState::Offline;
                        r.error = None;
                    })
                    .await;
                if let Err(e) = saved {
                    crate::error!("{}: could not record the install: {e}", self.id);
                }
                self.sweep().await;
                if start_after {
                    if let Err(e) = self.start().await {
                        self.say(format!("Start after the reinstall failed: {e}"));
                    }
                }
            }
            Err((why, cid)) => self.install_failed(why, None, Some(cid)).await,
        }
    }

    /// Records a failed install. With a `rollback` (a reinstall whose image could not be
    /// had) the server is left as it was; otherwise the record says `failed` and why.
    /// `made`: the container the failed steps left as the server's (`Some(None)`: none).
    async fn install_failed(&mut self, why: String, rollback: Option<Rollback>, made: Option<Option<String>>) {
        self.hub.news().lifecycle(Lifecycle::Error);
        let saved = match rollback {
            Some(rb) => {
                self.say(format!("Reinstall failed, the server is left as it was: {why}"));
                self.edit(|r| {
                    r.image = rb.image;
                    r.install_script = rb.install_script;
                    r.install_state = rb.install_state;
                    r.error = Some(format!("Reinstall failed: {why}"));
                })
                .await
            }
            None => {
                self.say(format!("Install failed: {why}"));
                self.edit(|r| {
                    if let Some(made) = made {
                        r.container_id = made;
                    }
                    r.install_state = InstallState::Failed;
                    r.state = PowerState::Offline;
                    r.error = Some(why);
                })
                .await
            }
        };
        if let Err(e) = saved {
            crate::error!("{}: could not record the install outcome: {e}", self.id);
        }
        self.sweep().await;
    }
}

/// The point of no return: the old container goes, the new one is made and installed.
async fn steps(sups: &Supervisors, id: &str, hub: &Hub) -> std::result::Result<String, (String, Option<String>)> {
    let fail = |e: String| (e, None);
    let rec = sups.store.read(|s| s.containers.get(id).cloned()).ok_or_else(|| fail("the record is gone".into()))?;
    let docker = &sups.docker;
    let net = &sups.config.containers.default_network;
    let network = docker
        .ensure_network(net, &super::network::network_options())
        .await
        .map_err(|e| fail(format!("cannot prepare network {net}: {e}")))?;
    hub.news().lifecycle(Lifecycle::CreatingContainer);
    let volume_path = crate::volumes::mount_path_off(&sups.volumes, &rec.volume_id).await.map_err(fail)?;
    let binds = super::mounts::verify(sups, &rec).await.map_err(fail)?;
    // Written and fsynced on the blocking pool.
    let data_dir = {
        let (sups, rec) = (sups.clone(), rec.clone());
        tokio::task::spawn_blocking(move || datadir::prepare(&sups, &rec))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| fail(format!("cannot write the data directory: {e}")))?
    };
    let name = rec.docker_name(&sups.config.containers.name_prefix);
    let old = rec.container_id.iter().chain(std::iter::once(&name));
    for leftover in old {
        bounded(REMOVE_TIMEOUT, "removing the old container", docker.remove_container(leftover))
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let run = RunSpec::server(&rec, &volume_path, &data_dir, &binds, &network, &sups.instance);
    let body = container_spec(&rec, &sups.config, &run);
    let cid = bounded(CREATE_TIMEOUT, "creating the container", docker.create_container(Some(&name), &body))
        .await
        .map_err(|e| fail(format!("cannot create container: {}", message(&e))))?;
    let made = |e: String| (e, Some(cid.clone()));
    hub.news().lifecycle(Lifecycle::ContainerCreated);
    if rec.install_script.is_some() {
        hub.news().lifecycle(Lifecycle::RunningInstallScript);
        let run = RunSpec::install(&volume_path, &data_dir, &binds, &network, &sups.instance);
        run_script(sups, &rec, hub, &run).await.map_err(made)?;
        hub.news().lifecycle(Lifecycle::InstallScriptComplete);
    }
    hand_over(&volume_path, &rec.user).await.map_err(made)?;
    hub.news().lifecycle(Lifecycle::SettingUpEntrypoint);
    let command = match rec.startup_command.as_str() {
        // Resolved at each install, so a reinstall with another image runs that image's.
        "" => {
            let cmd = bounded(CREATE_TIMEOUT, "inspecting the image", docker.image_cmd(&rec.image))
                .await
                .map_err(|e| made(format!("cannot inspect the image: {e}")))?;
            spec::image_command(&cmd).map_err(|e| made(format!("image {}: {e}", rec.image)))?
        }
        given => given.to_string(),
    };
    let (dir, script) = (data_dir.clone(), spec::entrypoint_script(&command));
    tokio::task::spawn_blocking(move || datadir::write_entrypoint(&dir, &rec, &script))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| made(format!("cannot write entrypoint.sh: {e}")))?;
    Ok(cid)
}

/// Gives the volume (what the install script, as root, left in it included) to the user the
/// server runs as: an fd-relative walk that never follows a link out of the volume.
async fn hand_over(volume_path: &Path, user: &str) -> std::result::Result<(), String> {
    let Some((uid, gid)) = crate::model::parse_user(user).filter(|(uid, gid)| (*uid, *gid) != (0, 0)) else {
        return Ok(());
    };
    let path = volume_path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::vfs::Root::open(&path).and_then(|root| root.chown_tree(uid, gid)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot hand the volume to {user}: {e}"))
}

/// The engine's own words for an API error, without our prefix.
pub(super) fn message(e: &DockerError) -> String {
    match e {
        DockerError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Runs `install.sh` in a one-shot container of the same image and mounts (found by its
/// labels, never by a name a server could have), streaming its output as install output; a
/// non-zero exit fails with the code and the last lines. Bounded by
/// `containers.install_timeout`.
async fn run_script(
    sups: &Supervisors,
    rec: &ContainerRecord,
    hub: &Hub,
    run: &RunSpec<'_>,
) -> std::result::Result<(), String> {
    let docker = &sups.docker;
    let body = container_spec(rec, &sups.config, run);
    let cid = bounded(CREATE_TIMEOUT, "creating the install container", docker.create_container(None, &body))
        .await
        .map_err(|e| format!("cannot create the install container: {}", message(&e)))?;
    let mut last = VecDeque::with_capacity(LAST_LINES);
    let limit = Duration::from_secs(sups.config.containers.install_timeout);
    let outcome = tokio::time::timeout(limit, async {
        docker.start_container(&cid).await?;
        let mut chunks = docker.follow_logs(&cid).await?;
        let mut output = OutputLines::new(MAX_LINE);
        let mut emit = |line: String| {
            if last.len() == LAST_LINES {
                last.pop_front();
            }
            last.push_back(line.clone());
            hub.news().publish(Event::InstallOutput(line));
        };
        while let Some(chunk) = chunks.next().await {
            output.push(&chunk?, &mut emit);
        }
        output.finish(&mut emit);
        bounded(REMOVE_TIMEOUT, "waiting for the install script", docker.wait_container(&cid)).await
    })
    .await;
    // Removed here, awaited, when the script ends however it ends; a job cut short (the
    // server deleted, the daemon stopping) leaves it to the label sweeps of the deletion and
    // of the next start.
    if let Err(e) = bounded(REMOVE_TIMEOUT, "removing the install container", docker.remove_container(&cid)).await {
        crate::warn!("install container {cid}: {e}");
    }
    let tail = || Vec::from(last.clone()).join(" | ");
    match outcome {
        Err(_) => Err(format!("Install script timed out after {} s (containers.install_timeout)", limit.as_secs())),
        Ok(Err(e)) => Err(format!("Install script could not run: {}", message(&e))),
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(code)) => Err(format!("Install script exited with code {code}; last output: {}", tail())),
    }
}
