//! Volume backups: a streamed `tar.gz` or `tar.zst` of a volume under `backups.path`, written to a temp
//! name and renamed when complete, with its sha256 and size on record; listed, downloaded,
//! deleted, uploaded from elsewhere, and restored through the supervisors (servers are
//! stopped gracefully first and started again after). One backup or restore at a time per
//! volume, `backups.max_parallel` over all, each within `backups.timeout`; a backup being made
//! is cancelled by deleting it, a restore by `DELETE .../restore`.

mod create;
mod disk;
mod job;
mod restore;
mod retention;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

pub use create::{start as create, Request};
pub use disk::{archive_path, FILE_MODE};
pub use restore::{cancel as cancel_restore, start as restore, upload};
pub use retention::volume_deleted;

use crate::config::Config;
use crate::console::Event;
use crate::console::Hubs;
use crate::error::{conflict, Error, Result};
use crate::model::{Backup, BackupState, Volume};
use crate::shutdown::Tasks;
use crate::store::Store;
use crate::volumes::Volumes;
use disk::part_path;
use job::{Job, Kind};
use retention::{delete_archives, take_excess};

/// How long a `DELETE` waits for the job it cancelled to end.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// The backups room's handle: the jobs running now, and what they reach (the config, the
/// store, the consoles they report to, the volumes they read and write, the task tracker
/// that runs them and tells them when the daemon stops).
/// Cheap to clone; its fields are reached only through this room's functions.
#[derive(Clone)]
pub struct Backups {
    jobs: Arc<Jobs>,
    config: Arc<Config>,
    store: Arc<Store>,
    hubs: Arc<Hubs>,
    volumes: Volumes,
    tasks: Tasks,
    /// The extract jobs (a restore waits for none on its volume).
    extracts: Arc<crate::jobs::Jobs>,
}

/// What runs now, in memory: the job of each busy volume, and how far each backup got.
struct Jobs {
    /// Volume id -> the backup, restore or delete holding it.
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    /// Volumes being restored: their servers may not start meanwhile.
    restoring: Mutex<HashSet<String>>,
    progress: Mutex<HashMap<String, Progress>>,
    permits: Arc<Semaphore>,
    /// Held to make or remove a volume's folder of archives (see `disk`).
    dirs: Mutex<()>,
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

/// Marks a volume busy with a job until released or dropped; dropped, the job is finished.
pub struct Busy {
    jobs: Arc<Jobs>,
    volume_id: String,
    job: Arc<Job>,
}

impl Busy {
    fn job(&self) -> &Arc<Job> {
        &self.job
    }

    /// Frees the volume for the next job before this one's outcome is on record: whoever
    /// sees that outcome may start another at once. A canceller waits for the drop.
    fn release(&self) {
        let mut jobs = lock(&self.jobs.jobs);
        if jobs.get(&self.volume_id).is_some_and(|j| Arc::ptr_eq(j, &self.job)) {
            jobs.remove(&self.volume_id);
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.release();
        self.job.finish();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backups {
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        hubs: Arc<Hubs>,
        volumes: Volumes,
        tasks: Tasks,
        extracts: Arc<crate::jobs::Jobs>,
    ) -> Backups {
        let jobs = Arc::new(Jobs::new(config.backups.max_parallel));
        Backups { jobs, config, store, hubs, volumes, tasks, extracts }
    }

    /// Whether a restore of `volume_id` runs (servers on it may not start meanwhile).
    pub fn is_restoring(&self, volume_id: &str) -> bool {
        self.jobs.is_restoring(volume_id)
    }
}

impl Jobs {
    fn new(max_parallel: usize) -> Jobs {
        Jobs {
            jobs: Mutex::new(HashMap::new()),
            restoring: Mutex::new(HashSet::new()),
            progress: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max_parallel)),
            dirs: Mutex::new(()),
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

    /// The job of `volume_id` if it is `kind` for `backup_id`.
    fn job_of(&self, volume_id: &str, kind: Kind, backup_id: &str) -> Option<Arc<Job>> {
        lock(&self.jobs).get(volume_id).filter(|j| j.kind == kind && j.backup_id == backup_id).cloned()
    }
}

/// Runs a job's task through the tracker (counted until it ends); at the shutdown signal its
/// job is stopped, so it records why and ends promptly.
fn spawn_job(backups: &Backups, job: &Arc<Job>, body: impl std::future::Future<Output = ()> + Send + 'static) {
    let (mut signal, job) = (backups.tasks.signal(), Arc::clone(job));
    backups.tasks.spawn(async move {
        tokio::pin!(body);
        tokio::select! {
            () = &mut body => return,
            () = signal.wait() => job.shut_down(),
        }
        body.await
    });
}

/// Claims `volume_id` for one job: 409 while another runs.
fn claim(backups: &Backups, volume_id: &str, what: &str, kind: Kind, backup_id: &str) -> Result<Busy> {
    let job = Arc::new(Job::new(kind, backup_id, Duration::from_secs(backups.config.backups.timeout)));
    let mut jobs = lock(&backups.jobs.jobs);
    if jobs.contains_key(volume_id) {
        return Err(conflict(format!("Cannot {what}: a backup or restore of this volume is running")));
    }
    jobs.insert(volume_id.to_string(), Arc::clone(&job));
    Ok(Busy { jobs: Arc::clone(&backups.jobs), volume_id: volume_id.to_string(), job })
}

/// Holds `volume_id` while it is deleted: `409` while a backup or restore of it runs, and
/// none starts until the hold is dropped.
pub fn hold_for_delete(backups: &Backups, volume_id: &str) -> Result<Busy> {
    claim(backups, volume_id, "delete the volume", Kind::Delete, "")
}

/// Saves `backup`'s record (new, or replacing the one with its id).
async fn save(backups: &Backups, backup: &Backup) -> Result<()> {
    let record = backup.clone();
    backups
        .store
        .update(|s| {
            s.backups.insert(record.backup_id.clone(), record);
            Ok::<_, Error>(())
        })
        .await
}

fn not_found() -> Error {
    Error::NotFound("Backup not found".into())
}

/// The backup `backup_id` of the volume a user's key names.
pub fn find(backups: &Backups, volume_key: &str, backup_id: &str) -> Result<(Volume, Backup)> {
    let volume = crate::volumes::find(&backups.volumes, volume_key)?;
    let backup = backups
        .store
        .read(|s| s.backups.get(backup_id).filter(|b| b.volume_id == volume.volume_id).cloned())
        .ok_or_else(not_found)?;
    Ok((volume, backup))
}

pub fn view(backups: &Backups, backup: Backup) -> BackupView {
    let progress =
        (backup.state == BackupState::Creating).then(|| backups.jobs.progress(&backup.backup_id).unwrap_or_default());
    BackupView { backup, progress }
}

pub fn list(backups: &Backups, volume_key: &str) -> Result<Vec<BackupView>> {
    let volume = crate::volumes::find(&backups.volumes, volume_key)?;
    let mut all: Vec<Backup> =
        backups.store.read(|s| s.backups.values().filter(|b| b.volume_id == volume.volume_id).cloned().collect());
    all.sort_by_key(|b| (b.created_at, b.backup_id.clone()));
    Ok(all.into_iter().map(|b| view(backups, b)).collect())
}

/// `DELETE`: the archive and the record; one being made is cancelled first (its job ends
/// within [`CANCEL_WAIT`], its temp file removed); `409` while it is restored. Tells whether
/// a backup being made was cancelled.
pub async fn delete(backups: &Backups, volume_key: &str, backup_id: &str) -> Result<bool> {
    let (volume, backup) = find(backups, volume_key, backup_id)?;
    let making = backups.jobs.job_of(&volume.volume_id, Kind::Create, backup_id);
    if let Some(job) = &making {
        job.cancel();
        if !job.finished(CANCEL_WAIT).await {
            return Err(Error::Unavailable("The backup is cancelled but has not stopped yet; try again".into()));
        }
    }
    if backups.jobs.job_of(&volume.volume_id, Kind::Restore, backup_id).is_some() {
        return Err(conflict(
            "Cannot delete a backup while it is being restored (DELETE its /restore to cancel the restore)",
        ));
    }
    let _busy = claim(backups, &volume.volume_id, "delete the backup", Kind::Delete, backup_id)?;
    // Read again: the job that just ended may have changed or pruned it.
    let Some(backup) = backups.store.read(|s| s.backups.get(&backup.backup_id).cloned()) else {
        return Ok(making.is_some());
    };
    if backup.state == BackupState::Creating {
        // A record says creating with no job behind it: only a restart makes that right.
        return Err(conflict("Cannot delete a backup while it is being created"));
    }
    let id = backup.backup_id.clone();
    backups
        .store
        .update(|s| {
            s.backups.remove(&id);
            Ok::<_, Error>(())
        })
        .await?;
    let path = archive_path(backups, &backup);
    for file in [part_path(&path), path] {
        disk::remove_file(&file)
            .map_err(|e| Error::Internal(format!("backup record removed but {} could not be: {e}", file.display())))?;
    }
    disk::remove_dir_if_empty(backups, &backup.volume_id);
    Ok(making.is_some())
}

/// At start: a backup cut short by a restart is `failed` (and pruned like any failed one),
/// every temp file goes, and the backups of volumes deleted meanwhile; a finished one is never
/// touched.
pub async fn recover(backups: &Backups) {
    let cut: Vec<Backup> =
        backups.store.read(|s| s.backups.values().filter(|b| b.state == BackupState::Creating).cloned().collect());
    if !cut.is_empty() {
        let max = backups.config.backups.max_per_volume;
        let saved = backups
            .store
            .update(|s| {
                let mut gone = Vec::new();
                for b in &cut {
                    if let Some(r) = s.backups.get_mut(&b.backup_id) {
                        r.state = BackupState::Failed;
                        r.error = Some("interrupted by daemon restart".into());
                    }
                    gone.extend(take_excess(s, &b.volume_id, max, ""));
                }
                Ok::<_, Error>(gone)
            })
            .await;
        match saved {
            Ok(gone) => delete_archives(backups, gone),
            Err(e) => crate::error!("cannot mark interrupted backups failed: {e}"),
        }
    }
    // Temp files of uploads and backups a crash left, whatever their record says.
    if let Ok(dirs) = std::fs::read_dir(&backups.config.backups.path) {
        for dir in dirs.flatten() {
            for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().ends_with(".part") {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
    retention::sweep(backups).await;
}

/// Tells the viewers of every server using the volume: an `event` and a note.
fn tell(backups: &Backups, volume_id: &str, event: Option<&'static str>, note: &str) {
    let users = backups.store.read(|s| crate::volumes::used_by(s, volume_id));
    for id in users {
        let hub = backups.hubs.get(&id);
        if let Some(e) = event {
            hub.news().publish(Event::Named(e));
        }
        hub.news().publish(Event::DaemonMessage(note.to_string()));
    }
}
