//! Create and reinstall: image, data directory, the server container, the install script
//! in a one-shot container, the entrypoint. Runs in the background after the `202`.

use std::collections::VecDeque;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use super::spec::{self, container_spec, CreateRequest, RunSpec};
use super::{begin, bounded, claim_ports, edit, CREATE_TIMEOUT, REMOVE_TIMEOUT};
use crate::app::App;
use crate::console::{Event, Hub, Lifecycle};
use crate::docker::stream::OutputLines;
use crate::error::{Error, Result};
use crate::model::{ContainerRecord, InstallState, PowerState};

/// An install script may run this long (downloads of game files can be slow).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(3600);
/// How many of its last lines a failed install quotes.
const LAST_LINES: usize = 10;
const MAX_LINE: usize = 16 * 1024;

/// Validates, reserves the ports, records the container as `installing` and starts the
/// install in the background. Everything a user can get wrong fails here, before the `202`.
pub async fn create(app: &Arc<App>, req: CreateRequest) -> Result<()> {
    let rec = spec::check_create(req, &app.config)?;
    let id = rec.internal_id.clone();
    if app.store.read(|s| s.containers.contains_key(&id)) {
        return Err(exists(&id));
    }
    let guard = app.ops.begin(&id, "create").await?;
    let max = app.config.containers.max_containers;
    app.store
        .update(|s| {
            if s.containers.contains_key(&id) {
                return Err(exists(&id));
            }
            if s.containers.len() >= max {
                return Err(Error::Conflict(format!("Container limit reached (containers.max_containers = {max})")));
            }
            if !s.volumes.contains_key(&rec.volume_id) {
                return Err(Error::NotFound("Volume not found".into()));
            }
            claim_ports(s, &id, &rec.ports)?;
            s.containers.insert(id.clone(), rec);
            Ok(())
        })
        .await?;
    tokio::spawn(run(Arc::clone(app), id, guard));
    Ok(())
}

fn exists(id: &str) -> Error {
    Error::Conflict(format!("Container {id} already exists"))
}

/// Puts the container back to `installing` with a possibly new image and script, then
/// installs again; the volume's data is kept.
pub async fn reinstall(app: &Arc<App>, id: &str, image: Option<String>, script: Option<String>) -> Result<()> {
    if let Some(i) = &image {
        spec::check_image(i)?;
    }
    let guard = begin(app, id, "reinstall").await?;
    edit(app, id, |r| {
        if let Some(i) = image {
            r.image = i;
        }
        if let Some(s) = script {
            r.install_script = Some(s).filter(|s| !s.trim().is_empty());
        }
        r.install_state = InstallState::Installing;
        r.state = PowerState::Offline;
        r.error = None;
    })
    .await?;
    tokio::spawn(run(Arc::clone(app), id.to_string(), guard));
    Ok(())
}

/// The background half: runs the steps and records `ready` or `failed` with the reason.
async fn run(app: Arc<App>, id: String, _guard: OwnedMutexGuard<()>) {
    let hub = app.hubs.get(&id);
    hub.lifecycle(Lifecycle::Started);
    let result = steps(&app, &id, &hub).await;
    // Events first, then the record: whoever sees `ready` or `failed` also finds the event.
    match &result {
        Ok(_) => hub.lifecycle(Lifecycle::Ready),
        Err(e) => {
            eprintln!("lightd: {id}: install failed: {e}");
            hub.lifecycle(Lifecycle::Error);
            hub.publish(Event::DaemonMessage(format!("Install failed: {e}")));
        }
    }
    let saved = edit(&app, &id, |r| match result {
        Ok(cid) => {
            r.container_id = Some(cid);
            r.install_state = InstallState::Ready;
            r.error = None;
        }
        Err(e) => {
            r.install_state = InstallState::Failed;
            r.error = Some(e);
        }
    })
    .await;
    if let Err(e) = saved {
        eprintln!("lightd: {id}: could not record the install outcome: {e}");
    }
}

async fn steps(app: &App, id: &str, hub: &Hub) -> std::result::Result<String, String> {
    let rec = super::record(app, id).map_err(|e| e.to_string())?;
    let docker = &app.docker;
    let net = &app.config.containers.default_network;
    let network = docker.ensure_network(net).await.map_err(|e| format!("cannot prepare network {net}: {e}"))?;
    if !docker.image_exists(&rec.image).await.map_err(|e| e.to_string())? {
        hub.publish(Event::InstallOutput(format!("Pulling image {}", rec.image)));
        docker
            .pull(&rec.image, |line| hub.publish(Event::InstallOutput(line)))
            .await
            .map_err(|e| format!("Image pull failed for {}: {}", rec.image, message(&e)))?;
    }

    hub.lifecycle(Lifecycle::CreatingContainer);
    let volume_path = crate::volumes::mount_path(app, &rec.volume_id)?;
    let data_dir = prepare_data_dir(app, &rec).map_err(|e| format!("cannot write the data directory: {e}"))?;
    let name = rec.docker_name();
    for leftover in [&name, &install_name(&rec)] {
        bounded(REMOVE_TIMEOUT, "removing the old container", docker.remove_container(leftover))
            .await
            .map_err(|e| e.to_string())?;
    }
    let body = container_spec(&rec, &app.config, &RunSpec::server(&volume_path, &data_dir, &network));
    let cid = bounded(CREATE_TIMEOUT, "creating the container", docker.create_container(&name, &body))
        .await
        .map_err(|e| format!("cannot create container: {}", message(&e)))?;
    // Remember it at once, so a delete or a restart finds it even if the install fails.
    edit(app, id, |r| r.container_id = Some(cid.clone())).await.map_err(|e| e.to_string())?;
    hub.lifecycle(Lifecycle::ContainerCreated);

    if rec.install_script.is_some() {
        hub.lifecycle(Lifecycle::RunningInstallScript);
        run_script(app, &rec, hub, &RunSpec::install(&volume_path, &data_dir, &network)).await?;
        hub.lifecycle(Lifecycle::InstallScriptComplete);
    }

    hub.lifecycle(Lifecycle::SettingUpEntrypoint);
    write_file(&data_dir.join("entrypoint.sh"), &spec::entrypoint_script(&rec.startup_command))
        .map_err(|e| format!("cannot write entrypoint.sh: {e}"))?;
    Ok(cid)
}

fn install_name(rec: &ContainerRecord) -> String {
    format!("{}-install", rec.docker_name())
}

/// The engine's own words for an API error, without our prefix.
fn message(e: &crate::docker::DockerError) -> String {
    match e {
        crate::docker::DockerError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `<data_path>/<internal_id>/` with `install.sh` (when there is a script).
fn prepare_data_dir(app: &App, rec: &ContainerRecord) -> std::io::Result<PathBuf> {
    let dir = data_dir(app, &rec.internal_id);
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(&dir)?;
    if let Some(script) = &rec.install_script {
        write_file(&dir.join("install.sh"), script)?;
    }
    Ok(dir)
}

pub fn data_dir(app: &App, id: &str) -> PathBuf {
    app.config.storage.data_path.join(id)
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o755).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Runs `install.sh` in a one-shot container of the same image and mounts, streaming its
/// output as install output; a non-zero exit fails with the code and the last lines.
async fn run_script(app: &App, rec: &ContainerRecord, hub: &Hub, run: &RunSpec<'_>) -> std::result::Result<(), String> {
    let docker = &app.docker;
    let body = container_spec(rec, &app.config, run);
    let cid =
        bounded(CREATE_TIMEOUT, "creating the install container", docker.create_container(&install_name(rec), &body))
            .await
            .map_err(|e| format!("cannot create the install container: {}", message(&e)))?;
    let mut last = VecDeque::with_capacity(LAST_LINES);
    let outcome = tokio::time::timeout(INSTALL_TIMEOUT, async {
        docker.start_container(&cid).await?;
        let mut chunks = docker.follow_logs(&cid).await?;
        let mut output = OutputLines::new(MAX_LINE);
        let mut emit = |line: String| {
            if last.len() == LAST_LINES {
                last.pop_front();
            }
            last.push_back(line.clone());
            hub.publish(Event::InstallOutput(line));
        };
        while let Some(chunk) = chunks.next().await {
            output.push(&chunk?, &mut emit);
        }
        output.finish(&mut emit);
        docker.wait_container(&cid).await
    })
    .await;
    if let Err(e) = bounded(REMOVE_TIMEOUT, "removing the install container", docker.remove_container(&cid)).await {
        eprintln!("lightd: {}: {e}", rec.internal_id);
    }
    let tail = || Vec::from(last.clone()).join(" | ");
    match outcome {
        Err(_) => Err(format!("Install script timed out after {} s", INSTALL_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(format!("Install script could not run: {}", message(&e))),
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(code)) => Err(format!("Install script exited with code {code}; last output: {}", tail())),
    }
}
