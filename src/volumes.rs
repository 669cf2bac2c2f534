//! Volumes: host directories under `volumes.base_path`, one per UUID, kept in the store.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::app::App;
use crate::config::parse_size;
use crate::error::{bad, Error, Result};
use crate::ids;
use crate::model::{now, Volume};
use crate::store::State;

/// A volume as the API shows it: the record plus what is measured on demand.
#[derive(Debug, Serialize)]
pub struct VolumeView {
    #[serde(flatten)]
    pub volume: Volume,
    pub used_bytes: u64,
    pub used_by: Vec<String>,
}

fn not_found() -> Error {
    Error::NotFound("Volume not found".into())
}

/// Checks and normalises a volume id given by a user.
pub fn parse_id(id: &str) -> Result<String> {
    if ids::valid_uuid(id) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(bad("volume_id must be a UUID like d6764075-c5f1-4045-9fb3-85315b85cb0f"))
    }
}

/// Creates the directory (mode 0700) and the record; a failed save removes the directory.
pub async fn create(app: &App, size_limit: Option<&str>) -> Result<Volume> {
    let size_limit_bytes = match size_limit {
        Some(s) => parse_size(s).map_err(|e| bad(format!("size_limit: {e}")))?,
        None => app.config.default_size_limit(),
    };
    let volume_id = ids::new_uuid().map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let path = app.config.volumes.base_path.join(&volume_id);
    let dir = path.clone();
    blocking(move || {
        DirBuilder::new().recursive(true).mode(0o711).create(dir.parent().unwrap_or(&dir))?;
        DirBuilder::new().mode(0o700).create(&dir)
    })
    .await
    .map_err(|e| Error::Internal(format!("cannot create volume directory {}: {e}", path.display())))?;
    let volume = Volume { volume_id, path, size_limit_bytes, created_at: now() };
    let record = volume.clone();
    let saved = app
        .store
        .update(|s| {
            s.volumes.insert(record.volume_id.clone(), record);
            Ok::<_, Error>(())
        })
        .await;
    if let Err(e) = saved {
        let _ = std::fs::remove_dir(&volume.path);
        return Err(e);
    }
    Ok(volume)
}

/// Internal ids of the containers that mount `volume_id`.
pub fn used_by(state: &State, volume_id: &str) -> Vec<String> {
    state.containers.values().filter(|c| c.volume_id == volume_id).map(|c| c.internal_id.clone()).collect()
}

pub async fn list(app: &App) -> Vec<VolumeView> {
    let volumes: Vec<(Volume, Vec<String>)> =
        app.store.read(|s| s.volumes.values().map(|v| (v.clone(), used_by(s, &v.volume_id))).collect());
    let mut out = Vec::with_capacity(volumes.len());
    for (volume, users) in volumes {
        out.push(view(volume, users).await);
    }
    out
}

pub async fn get(app: &App, id: &str) -> Result<VolumeView> {
    let id = parse_id(id)?;
    let (volume, users) =
        app.store.read(|s| s.volumes.get(&id).map(|v| (v.clone(), used_by(s, &id)))).ok_or_else(not_found)?;
    Ok(view(volume, users).await)
}

/// Drops the record, then the directory (a crash in between leaves only an orphan directory,
/// never a record without its data). Refused while a container uses the volume.
pub async fn delete(app: &App, id: &str) -> Result<()> {
    let id = parse_id(id)?;
    let volume = app
        .store
        .update(|s| {
            let users = used_by(s, &id);
            if !users.is_empty() {
                return Err(Error::Conflict(format!("Volume is in use by {}", users.join(", "))));
            }
            s.volumes.remove(&id).ok_or_else(not_found)
        })
        .await?;
    let path = volume.path.clone();
    // remove_dir_all never follows symlinks: a volume dir swapped for a link only loses the link.
    match blocking(move || std::fs::remove_dir_all(&path)).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Internal(format!(
            "volume record removed but its directory {} could not be: {e}",
            volume.path.display()
        ))),
    }
}

async fn view(volume: Volume, used_by: Vec<String>) -> VolumeView {
    let path = volume.path.clone();
    let used_bytes = blocking(move || Ok(disk_usage(&path))).await.unwrap_or(0);
    VolumeView { volume, used_bytes, used_by }
}

/// The directory to mount for `volume_id`: it must still be on record and be a plain
/// directory, never a symlink someone swapped in (that would mount its target instead).
pub fn mount_path(app: &App, volume_id: &str) -> std::result::Result<PathBuf, String> {
    let path = app
        .store
        .read(|s| s.volumes.get(volume_id).map(|v| v.path.clone()))
        .ok_or_else(|| format!("volume {volume_id} no longer exists"))?;
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => Err(format!("volume directory {} is not a plain directory (a symlink?)", path.display())),
        Err(e) => Err(format!("volume directory {}: {e}", path.display())),
    }
}

/// Bytes of regular files below `dir`: an fd-relative walk that never follows a symlink and
/// never enters another file system, so nothing a container swaps in mid-walk widens it (a
/// volume directory swapped for a link counts as empty).
fn disk_usage(dir: &Path) -> u64 {
    crate::vfs::Root::open(dir).and_then(|root| root.usage()).unwrap_or(0)
}

/// Runs file-system work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}
