//! Volumes: host directories under `volumes.base_path`, one per UUID, kept in the store. With
//! `quota: loop` each is an ext4 image of its size limit, loop-mounted at its directory, so
//! the kernel refuses writes past the limit (`crate::quota` does the mounting).

mod files;
mod fullness;

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use files::{fs_error, human, open_root, owner};
pub use fullness::watch as watch_fullness;

use crate::config::{parse_size, Config};
use crate::error::{bad, conflict, Error, Result};
use crate::ids;
use crate::model::{now, InstallState, PowerState, Quota, Volume};
use crate::quota;
use crate::store::{State, Store};

/// The volumes room's handle: the config, how size limits are enforced here, and the store.
/// Cheap to clone; its fields are reached only through this room's functions.
#[derive(Clone)]
pub struct Volumes {
    config: Arc<Config>,
    /// How volume size limits are enforced here (`volumes.quota` resolved at start).
    quota: Quota,
    store: Arc<Store>,
}

impl Volumes {
    pub fn new(config: Arc<Config>, quota: Quota, store: Arc<Store>) -> Volumes {
        Volumes { config, quota, store }
    }

    /// How volume size limits are enforced here.
    pub fn quota(&self) -> Quota {
        self.quota
    }
}

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

/// Checks a volume key given by a user: a UUID (normalised to lower case) or a name.
pub fn parse_key(key: &str) -> Result<String> {
    if ids::valid_uuid(key) {
        Ok(key.to_ascii_lowercase())
    } else if valid_name(key) {
        Ok(key.to_string())
    } else {
        Err(bad("volume_id must be a UUID like d6764075-c5f1-4045-9fb3-85315b85cb0f, or a volume's name"))
    }
}

/// A volume name: an `internal_id`-like name (1-64 of `[A-Za-z0-9_.-]`, not starting with
/// `.`), not shaped like a UUID (so a key is never both).
pub fn valid_name(s: &str) -> bool {
    ids::valid_internal_id(s) && !ids::valid_uuid(s)
}

/// The id of the volume a (parsed) key names, by id or by name.
pub fn resolve(state: &State, key: &str) -> Option<String> {
    if state.volumes.contains_key(key) {
        return Some(key.to_string());
    }
    state.volumes.values().find(|v| v.name.as_deref() == Some(key)).map(|v| v.volume_id.clone())
}

/// The record a user's key names: 400 for a malformed key, 404 for none.
pub fn find(volumes: &Volumes, key: &str) -> Result<Volume> {
    let key = parse_key(key)?;
    volumes.store.read(|s| resolve(s, &key).and_then(|id| s.volumes.get(&id).cloned())).ok_or_else(not_found)
}

/// Creates the directory (mode 0700; with `quota: loop` an image mounted there) and the
/// record; a failed save removes what was made.
pub async fn create(volumes: &Volumes, size_limit: Option<&str>, name: Option<String>) -> Result<Volume> {
    let size_limit_bytes = match size_limit {
        Some(s) => parse_size(s).map_err(|e| bad(format!("size_limit: {e}")))?,
        None => volumes.config.default_size_limit(),
    };
    if let Some(n) = &name {
        if !valid_name(n) {
            return Err(bad(
                "name must be 1-64 characters of A-Z a-z 0-9 _ . -, not start with . and not be shaped like a UUID",
            ));
        }
        if volumes.store.read(|s| resolve(s, n).is_some()) {
            return Err(conflict(format!("A volume named {n} already exists")));
        }
    }
    let quota = volumes.quota;
    if quota == Quota::Loop && size_limit_bytes < quota::MIN_BYTES {
        return Err(bad(format!("size_limit must be at least {} MiB for a loop volume", quota::MIN_BYTES >> 20)));
    }
    let volume_id = ids::new_uuid().map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let path = volumes.config.volumes.base_path.join(&volume_id);
    let image = quota::image_path(&volumes.config.volumes.base_path, &volume_id);
    let (dir, img) = (path.clone(), image.clone());
    let disk = disk_rule(volumes);
    let made = blocking(move || {
        DirBuilder::new().recursive(true).mode(0o711).create(dir.parent().unwrap_or(&dir))?;
        DirBuilder::new().mode(0o700).create(&dir)?;
        if quota == Quota::Loop {
            if let Err(e) = quota::create(&img, &dir, size_limit_bytes, disk) {
                let _ = std::fs::remove_dir(&dir);
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    })
    .await
    .map_err(|e| Error::Internal(format!("cannot create volume {}: {e}", path.display())))?;
    match made {
        Err(e) if e.kind == quota::Kind::TooLarge => return Err(too_large(size_limit_bytes)),
        Err(e) if e.kind == quota::Kind::NoRoom => return Err(no_room(size_limit_bytes, &e)),
        Err(e) => return Err(Error::Internal(format!("cannot create volume {}: {e}", path.display()))),
        Ok(()) => {}
    }
    let volume = Volume { volume_id, name, path, size_limit_bytes, quota, created_at: now() };
    let record = volume.clone();
    let saved = volumes
        .store
        .update(|s| {
            if let Some(n) = &record.name {
                if resolve(s, n).is_some() {
                    return Err(conflict(format!("A volume named {n} already exists")));
                }
            }
            s.volumes.insert(record.volume_id.clone(), record);
            Ok::<_, Error>(())
        })
        .await;
    if let Err(e) = saved {
        let (dir, img) = (volume.path.clone(), image);
        let _ = blocking(move || discard(&img, &dir)).await;
        return Err(e);
    }
    Ok(volume)
}

/// How a loop volume's image must fit on the host's disk (`volumes.overcommit`).
fn disk_rule(volumes: &Volumes) -> quota::Disk {
    if volumes.config.volumes.overcommit {
        quota::Disk::Overcommit
    } else {
        quota::Disk::Reserve
    }
}

/// A size limit the host's disk could not hold beside the other volumes' (409: it clashes with
/// what the node has promised already, and frees up when volumes go or shrink the promise).
fn no_room(bytes: u64, e: &quota::QuotaError) -> Error {
    Error::Conflict(format!(
        "size_limit {} does not fit on this host's disk: {} (volumes.overcommit is false: every volume \
         can always fill up to its limit)",
        human(bytes),
        e.cause
    ))
}

/// A loop volume's image would be larger than the host's file system allows one file to be.
fn too_large(bytes: u64) -> Error {
    bad(format!("size_limit {} is more than this host's file system can hold as one volume image", human(bytes)))
}

/// Removes a volume's image (unmounted first) and directory.
fn discard(image: &Path, dir: &Path) -> std::io::Result<()> {
    if image.exists() {
        quota::remove(image, dir).map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Internal ids of the containers that mount `volume_id`.
pub fn used_by(state: &State, volume_id: &str) -> Vec<String> {
    state.containers.values().filter(|c| c.volume_id == volume_id).map(|c| c.internal_id.clone()).collect()
}

pub async fn list(volumes: &Volumes) -> Vec<VolumeView> {
    let volumes: Vec<(Volume, Vec<String>)> =
        volumes.store.read(|s| s.volumes.values().map(|v| (v.clone(), used_by(s, &v.volume_id))).collect());
    let mut out = Vec::with_capacity(volumes.len());
    for (volume, users) in volumes {
        out.push(view(volume, users).await);
    }
    out
}

pub async fn get(volumes: &Volumes, key: &str) -> Result<VolumeView> {
    let volume = find(volumes, key)?;
    let users = volumes.store.read(|s| used_by(s, &volume.volume_id));
    Ok(view(volume, users).await)
}

/// `PATCH /volumes/:id`: a new size limit. A loop volume grows in place (online where the
/// kernel lets lightd, else while no server runs on it); a limit below what is used is refused.
pub async fn resize(volumes: &Volumes, key: &str, size_limit: &str) -> Result<VolumeView> {
    let bytes = parse_size(size_limit).map_err(|e| bad(format!("size_limit: {e}")))?;
    let volume = find(volumes, key)?;
    let used = usage(&volume).await;
    if bytes < used {
        return Err(conflict(format!("size_limit {bytes} is below the {used} bytes the volume uses")));
    }
    if volume.quota == Quota::Loop && bytes != volume.size_limit_bytes {
        if bytes < volume.size_limit_bytes {
            return Err(conflict("A loop volume cannot shrink; create a smaller one and move the data"));
        }
        // A server's container keeps its own hold on the mount: unmounting to grow offline
        // would resize a file system it still writes to.
        let busy: Vec<String> = volumes.store.read(|s| {
            s.containers
                .values()
                .filter(|c| c.volume_id == volume.volume_id)
                .filter(|c| c.state != PowerState::Offline || c.install_state == InstallState::Installing)
                .map(|c| c.internal_id.clone())
                .collect()
        });
        if !busy.is_empty() && !quota::grows_online() {
            return Err(conflict(format!(
                "Volume is in use by {}: growing a mounted volume needs CAP_SYS_RESOURCE, which lightd lacks here; \
                 stop its servers first",
                busy.join(", ")
            )));
        }
        let (image, dir) =
            (quota::image_path(&volumes.config.volumes.base_path, &volume.volume_id), volume.path.clone());
        let disk = disk_rule(volumes);
        match tokio::task::spawn_blocking(move || quota::grow(&image, &dir, bytes, disk)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind == quota::Kind::NoRoom => return Err(no_room(bytes, &e)),
            Ok(Err(e)) if e.kind == quota::Kind::Busy => return Err(conflict(e.to_string())),
            Ok(Err(e)) if e.kind == quota::Kind::TooLarge => return Err(too_large(bytes)),
            Ok(Err(e)) => return Err(Error::Internal(e.to_string())),
            Err(e) => return Err(Error::Internal(format!("resize task failed: {e}"))),
        }
    }
    let id = volume.volume_id.clone();
    volumes
        .store
        .update(|s| {
            let v = s.volumes.get_mut(&id).ok_or_else(not_found)?;
            v.size_limit_bytes = bytes;
            Ok::<_, Error>(())
        })
        .await?;
    get(volumes, &id).await
}

/// Drops the record, then the image and directory (a crash in between leaves only an orphan
/// directory, never a record without its data). Refused while a container uses the volume.
pub async fn delete(volumes: &Volumes, backups: &crate::backups::Backups, key: &str) -> Result<()> {
    let id = find(volumes, key)?.volume_id;
    // No backup or restore of it runs, or starts, until its backups went with it.
    let _hold = crate::backups::hold_for_delete(backups, &id)?;
    let volume = volumes
        .store
        .update(|s| {
            let users = used_by(s, &id);
            if !users.is_empty() {
                return Err(Error::Conflict(format!("Volume is in use by {}", users.join(", "))));
            }
            let volume = s.volumes.remove(&id).ok_or_else(not_found)?;
            // Its SFTP users go with it (their live sessions are ended by the SFTP server).
            s.sftp_users.retain(|_, u| u.volume_id != id);
            Ok(volume)
        })
        .await?;
    crate::backups::volume_deleted(backups, &id).await;
    let (image, dir) = (quota::image_path(&volumes.config.volumes.base_path, &id), volume.path.clone());
    // remove_dir_all never follows symlinks: a volume dir swapped for a link only loses the link.
    blocking(move || discard(&image, &dir)).await.map_err(|e| {
        Error::Internal(format!("volume record removed but its data {} could not be: {e}", volume.path.display()))
    })
}

async fn view(volume: Volume, used_by: Vec<String>) -> VolumeView {
    let used_bytes = usage(&volume).await;
    VolumeView { volume, used_bytes, used_by }
}

/// Bytes a volume uses: `statfs` of its file system under `quota: loop` (O(1)), else an
/// fd-relative walk that never follows a symlink or enters another file system.
pub async fn usage(volume: &Volume) -> u64 {
    let (path, quota) = (volume.path.clone(), volume.quota);
    blocking(move || {
        Ok(match quota {
            Quota::Loop => quota::usage(&path).map(|u| u.used_bytes).unwrap_or(0),
            Quota::None => crate::vfs::Root::open(&path).and_then(|root| root.usage()).unwrap_or(0),
        })
    })
    .await
    .unwrap_or(0)
}

/// The directory to mount for `volume_id`: still on record, a plain directory (never a
/// symlink someone swapped in: that would mount its target), and, for a loop volume, with
/// its image mounted (or a server would write, unlimited, into the directory beneath).
pub fn mount_path(volumes: &Volumes, volume_id: &str) -> std::result::Result<PathBuf, String> {
    let volume = volumes
        .store
        .read(|s| s.volumes.get(volume_id).cloned())
        .ok_or_else(|| format!("volume {volume_id} no longer exists"))?;
    match volume.path.symlink_metadata() {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!("volume directory {} is not a plain directory (a symlink?)", volume.path.display()))
        }
        Err(e) => return Err(format!("volume directory {}: {e}", volume.path.display())),
    }
    if volume.quota == Quota::Loop && !quota::is_mounted(&volume.path) {
        return Err(format!(
            "volume {volume_id} is not mounted (its image could not be mounted at start; see the log)"
        ));
    }
    Ok(volume.path)
}

/// [`mount_path`] on the blocking pool (it reads `/proc/self/mountinfo` and resolves paths):
/// for async callers (a server's start, install and rebind).
pub async fn mount_path_off(volumes: &Volumes, volume_id: &str) -> std::result::Result<PathBuf, String> {
    let (volumes, id) = (volumes.clone(), volume_id.to_string());
    tokio::task::spawn_blocking(move || mount_path(&volumes, &id)).await.unwrap_or_else(|e| Err(e.to_string()))
}

/// At start, before any server is reconciled: every loop volume's image mounted again.
pub async fn mount_all(volumes: &Volumes) {
    let loops: Vec<Volume> =
        volumes.store.read(|s| s.volumes.values().filter(|v| v.quota == Quota::Loop).cloned().collect());
    let base = volumes.config.volumes.base_path.clone();
    let _ = blocking(move || {
        for v in loops {
            if let Err(e) = quota::mount(&quota::image_path(&base, &v.volume_id), &v.path) {
                crate::error!("cannot mount volume {}: {e}", v.volume_id);
            }
        }
        Ok(())
    })
    .await;
}

/// Runs file-system work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}
