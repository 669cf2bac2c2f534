//! Volume backups: a streamed `tar.gz` of a volume under `backups.path`, written to a temp
//! name and renamed when complete, with its sha256 and size on record; listed, downloaded,
//! deleted, uploaded from elsewhere, and restored through the supervisors (servers are
//! stopped gracefully first and started again after). One backup or restore at a time per
//! volume, `backups.max_parallel` over all.

mod create;
mod restore;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Semaphore;

pub use create::start as create;
pub use restore::start as restore;
pub use restore::upload;

use crate::app::App;
use crate::console::Event;
use crate::error::{conflict, Error, Result};
use crate::model::{Backup, BackupState, Volume};
use crate::store::State;

/// What runs now, in memory: which volumes are busy, and how far each backup got.
pub struct Backups {
    busy: Mutex<HashSet<String>>,
    /// Volumes being restored: their servers may not start meanwhile.
    restoring: Mutex<HashSet<String>>,
    progress: Mutex<HashMap<String, Progress>>,
    permits: Arc<Semaphore>,
}

/// A running backup's progress.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Progress {
    pub bytes: u64,
    pub files: u64,
}

/// A backup as the API shows it.
#[derive(Debug, Serialize)]
pub struct BackupView {
    #[serde(flatten)]
    pub backup: Backup,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// Marks a volume busy (a backup or restore) until dropped.
pub struct Busy {
    app: Arc<App>,
    volume_id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        lock(&self.app.backups.busy).remove(&self.volume_id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backups {
    pub fn new(max_parallel: usize) -> Backups {
        Backups {
            busy: Mutex::new(HashSet::new()),
            restoring: Mutex::new(HashSet::new()),
            progress: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max_parallel)),
        }
    }

    /// Whether a restore of `volume_id` runs (servers on it may not start meanwhile).
    pub fn is_restoring(&self, volume_id: &str) -> bool {
        lock(&self.restoring).contains(volume_id)
    }

    fn set_restoring(&self, volume_id: &str, on: bool) {
        let mut set = lock(&self.restoring);
        if on {
            set.insert(volume_id.to_string());
        } else {
            set.remove(volume_id);
        }
    }

    pub(crate) fn set_progress(&self, backup_id: &str, p: Progress) {
        lock(&self.progress).insert(backup_id.to_string(), p);
    }

    fn progress(&self, backup_id: &str) -> Option<Progress> {
        lock(&self.progress).get(backup_id).copied()
    }

    fn forget(&self, backup_id: &str) {
        lock(&self.progress).remove(backup_id);
    }
}

/// Claims `volume_id` for one backup or restore: 409 while another runs.
fn claim(app: &Arc<App>, volume_id: &str, what: &str) -> Result<Busy> {
    if !lock(&app.backups.busy).insert(volume_id.to_string()) {
        return Err(conflict(format!("Cannot {what}: a backup or restore of this volume is running")));
    }
    Ok(Busy { app: Arc::clone(app), volume_id: volume_id.to_string() })
}

/// Where the archive of a backup lives (and its temp name while it is written).
pub fn archive_path(app: &App, b: &Backup) -> PathBuf {
    app.config.backups.path.join(&b.volume_id).join(format!("{}.tar.gz", b.backup_id))
}

/// Saves `backup`'s record (new, or replacing the one with its id).
async fn save(app: &App, backup: &Backup) -> Result<()> {
    let record = backup.clone();
    app.store
        .update(|s| {
            s.backups.insert(record.backup_id.clone(), record);
            Ok::<_, Error>(())
        })
        .await
}

/// Past `backups.max_per_volume`, the oldest ready backups of `volume_id` leave the state.
/// Called inside the update that makes a backup ready, so nobody ever sees more than the
/// limit; the caller deletes the archives of what is returned once the update is saved.
fn take_excess(s: &mut State, volume_id: &str, max: usize) -> Vec<Backup> {
    let mut ready: Vec<(Option<u64>, u64, String)> = s
        .backups
        .values()
        .filter(|b| b.volume_id == volume_id && b.state == BackupState::Ready)
        .map(|b| (b.completed_at, b.created_at, b.backup_id.clone()))
        .collect();
    ready.sort();
    let excess = ready.len().saturating_sub(max);
    ready.into_iter().take(excess).filter_map(|(_, _, id)| s.backups.remove(&id)).collect()
}

/// Deletes the archives of backups `take_excess` dropped from the record.
async fn delete_archives(app: &App, gone: Vec<Backup>) {
    let max = app.config.backups.max_per_volume;
    for old in gone {
        crate::info!("removed backup {} of volume {} (backups.max_per_volume = {max})", old.backup_id, old.volume_id);
        let path = archive_path(app, &old);
        if let Err(e) = tokio::fs::remove_file(&path).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                crate::error!("backup record removed but {} could not be: {e}", path.display());
            }
        }
    }
}

fn part_path(path: &Path) -> PathBuf {
    path.with_extension("gz.part")
}

fn not_found() -> Error {
    Error::NotFound("Backup not found".into())
}

/// The backup `backup_id` of the volume a user's key names.
pub fn find(app: &App, volume_key: &str, backup_id: &str) -> Result<(Volume, Backup)> {
    let volume = crate::volumes::find(app, volume_key)?;
    let backup = app
        .store
        .read(|s| s.backups.get(backup_id).filter(|b| b.volume_id == volume.volume_id).cloned())
        .ok_or_else(not_found)?;
    Ok((volume, backup))
}

pub fn view(app: &App, backup: Backup) -> BackupView {
    let progress =
        (backup.state == BackupState::Creating).then(|| app.backups.progress(&backup.backup_id).unwrap_or_default());
    BackupView { backup, progress }
}

pub fn list(app: &App, volume_key: &str) -> Result<Vec<BackupView>> {
    let volume = crate::volumes::find(app, volume_key)?;
    let mut all: Vec<Backup> =
        app.store.read(|s| s.backups.values().filter(|b| b.volume_id == volume.volume_id).cloned().collect());
    all.sort_by_key(|b| (b.created_at, b.backup_id.clone()));
    Ok(all.into_iter().map(|b| view(app, b)).collect())
}

/// `DELETE`: the archive and the record; 409 while it is being made or restored.
pub async fn delete(app: &Arc<App>, volume_key: &str, backup_id: &str) -> Result<()> {
    let (volume, backup) = find(app, volume_key, backup_id)?;
    if backup.state == BackupState::Creating {
        return Err(conflict("Cannot delete a backup while it is being created"));
    }
    let _busy = claim(app, &volume.volume_id, "delete the backup")?;
    remove(app, &backup).await
}

async fn remove(app: &App, backup: &Backup) -> Result<()> {
    let path = archive_path(app, backup);
    let id = backup.backup_id.clone();
    app.store
        .update(|s| {
            s.backups.remove(&id);
            Ok::<_, Error>(())
        })
        .await?;
    match tokio::fs::remove_file(&path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Internal(format!("backup record removed but {} could not be: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

/// At start: a backup cut short by a restart is `failed`, and every temp file goes (the
/// sweep below); a finished one is never touched.
pub async fn recover(app: &App) {
    let cut: Vec<Backup> =
        app.store.read(|s| s.backups.values().filter(|b| b.state == BackupState::Creating).cloned().collect());
    if !cut.is_empty() {
        let saved = app
            .store
            .update(|s| {
                for b in &cut {
                    if let Some(r) = s.backups.get_mut(&b.backup_id) {
                        r.state = BackupState::Failed;
                        r.error = Some("interrupted by daemon restart".into());
                    }
                }
                Ok::<_, Error>(())
            })
            .await;
        if let Err(e) = saved {
            crate::error!("cannot mark interrupted backups failed: {e}");
        }
    }
    // Temp files of uploads and backups a crash left, whatever their record says.
    if let Ok(dirs) = std::fs::read_dir(&app.config.backups.path) {
        for dir in dirs.flatten() {
            for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().ends_with(".part") {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
}

/// Tells the viewers of every server using the volume: an `event` and a note.
fn tell(app: &App, volume_id: &str, event: Option<&'static str>, note: &str) {
    let users = app.store.read(|s| crate::volumes::used_by(s, volume_id));
    for id in users {
        let hub = app.hubs.get(&id);
        if let Some(e) = event {
            hub.publish(Event::Named(e));
        }
        hub.publish(Event::DaemonMessage(note.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_ready_backups_of_the_volume_go_past_the_limit() {
        let mut s = State::default();
        let mut add = |id: &str, vol: &str, state: BackupState, done: Option<u64>| {
            let mut b = Backup::new(id.into(), vol, id.into(), state, 100);
            b.completed_at = done;
            s.backups.insert(id.into(), b);
        };
        add("a", "v", BackupState::Ready, Some(5));
        add("b", "v", BackupState::Ready, Some(3));
        add("c", "v", BackupState::Ready, Some(9));
        add("d", "v", BackupState::Creating, None);
        add("e", "v", BackupState::Failed, None);
        add("f", "w", BackupState::Ready, Some(1));
        let gone: Vec<String> = take_excess(&mut s, "v", 2).into_iter().map(|b| b.backup_id).collect();
        assert_eq!(gone, vec!["b"]);
        let left: Vec<&str> = s.backups.keys().map(String::as_str).collect();
        assert_eq!(left, vec!["a", "c", "d", "e", "f"]);
        assert!(take_excess(&mut s, "v", 2).is_empty());
    }
}
