//! Making a backup: the volume packed as `tar.gz` or `tar.zst` (the files API's confinement: symlinks are
//! stored as links, never followed; `ignore` patterns and `.lightdignore` leave things out)
//! into a temp file, hashed as it is written, rate-limited when configured, then fsynced and
//! renamed. With `pause`, the servers on the volume are suspended for the time of the archive.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::disk::{archive_path, create_part, part_path, remove_dir_if_empty};
use super::job::{Job, Kind, Stopped};
use super::Backups;
use super::{claim, delete_archives, save, take_excess, tell, Busy, Progress};
use crate::error::{bad, Error, Result};
use crate::lifecycle::{self, Action, Supervisors};
use crate::model::{now, Backup, BackupFormat, BackupState, PowerState, Volume};
use crate::vfs::{self, Ignore, Root};

/// How often progress goes to the viewers.
const NOTE_EVERY: Duration = Duration::from_secs(2);

/// What `POST /volumes/:v/backups` asks for.
pub struct Request {
    pub name: Option<String>,
    pub ignore: Vec<String>,
    pub pause: bool,
    pub format: BackupFormat,
}

/// `POST /volumes/:v/backups`: records the backup as `creating` and makes it in the background.
pub async fn start(backups: &Backups, sups: &Supervisors, volume_key: &str, req: Request) -> Result<Backup> {
    let Request { name, ignore, pause, format } = req;
    let volume = crate::volumes::find(&backups.volumes, volume_key)?;
    if let Some(n) = &name {
        if n.is_empty() || n.chars().count() > 128 || n.chars().any(char::is_control) {
            return Err(bad("name must be 1-128 characters without control characters"));
        }
    }
    Ignore::check(&ignore).map_err(bad)?;
    let backup_id = crate::ids::new_uuid().map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let busy = claim(backups, &volume.volume_id, "start a backup", Kind::Create, &backup_id)?;
    let created_at = now();
    let name = name.unwrap_or_else(|| format!("backup-{created_at}"));
    let mut backup = Backup::new(backup_id, &volume.volume_id, name, BackupState::Creating, created_at);
    backup.format = format;
    save(backups, &backup).await?;
    let job = Arc::clone(busy.job());
    super::spawn_job(backups, &job, run(backups.clone(), sups.clone(), volume, backup.clone(), ignore, pause, busy));
    Ok(backup)
}

/// Waits for a slot (or a cancel), makes the archive, and records how it went.
#[allow(clippy::too_many_arguments)]
async fn run(
    backups: Backups,
    sups: Supervisors,
    volume: Volume,
    backup: Backup,
    ignore: Vec<String>,
    pause: bool,
    busy: Busy,
) {
    let job = Arc::clone(busy.job());
    let permits = Arc::clone(&backups.jobs.permits);
    let permit = tokio::select! {
        permit = permits.acquire_owned() => permit.map_err(|_| "the daemon is stopping".to_string()),
        why = job.interrupted() => Err(why.to_string()),
    };
    let outcome = match permit {
        Ok(_permit) => {
            job.start_clock();
            tell(&backups, &volume.volume_id, Some("backup started"), &format!("Backup {} started", backup.name));
            let paused = if pause { suspend(&backups, &sups, &volume.volume_id).await } else { Vec::new() };
            let (a, b, v, j) = (backups.clone(), backup.clone(), volume.clone(), Arc::clone(&job));
            let outcome = tokio::task::spawn_blocking(move || write(&a, &v, &b, &ignore, &j))
                .await
                .unwrap_or_else(|e| Err(format!("backup task failed: {e}")));
            for id in paused {
                if let Err(e) = lifecycle::act(&sups, &id, Action::Resume).await {
                    crate::error!("{id}: could not resume after the backup: {e}");
                }
            }
            outcome
        }
        Err(why) => Err(why),
    };
    backups.jobs.forget(&backup.backup_id);
    let id = backup.backup_id.clone();
    if outcome.is_err() {
        if let Err(e) = super::disk::remove_file(&part_path(&archive_path(&backups, &backup))) {
            crate::error!("backup {id} failed and its temp file could not be removed: {e}");
        }
        remove_dir_if_empty(&backups, &volume.volume_id);
    }
    busy.release();
    let max = backups.config.backups.max_per_volume;
    let saved = backups
        .store
        .update(|s| {
            let Some(r) = s.backups.get_mut(&id) else { return Ok(Vec::new()) };
            match &outcome {
                Ok((stats, size, sha)) => {
                    r.state = BackupState::Ready;
                    r.size_bytes = *size;
                    r.sha256 = Some(sha.clone());
                    r.files = stats.files;
                    r.completed_at = Some(now());
                }
                Err(why) => {
                    r.state = BackupState::Failed;
                    r.error = Some(why.clone());
                }
            }
            Ok::<_, Error>(take_excess(s, &volume.volume_id, max, &id))
        })
        .await;
    let excess = saved.unwrap_or_else(|e| {
        crate::error!("backup {id}: could not record its outcome: {e}");
        Vec::new()
    });
    // The outcome is on record: a canceller may go on.
    drop(busy);
    match outcome {
        Ok((stats, size, _)) => {
            let note = format!(
                "Backup {} completed: {} files, {} archived",
                backup.name,
                stats.files,
                crate::volumes::human(size)
            );
            tell(&backups, &volume.volume_id, Some("backup completed"), &note);
        }
        Err(why) => {
            if job.stopped() == Some(Stopped::Cancelled) {
                tell(
                    &backups,
                    &volume.volume_id,
                    Some("backup cancelled"),
                    &format!("Backup {} cancelled", backup.name),
                );
            } else {
                tell(
                    &backups,
                    &volume.volume_id,
                    Some("backup failed"),
                    &format!("Backup {} failed: {why}", backup.name),
                );
            }
        }
    }
    delete_archives(&backups, excess);
}

/// Suspends the running servers on the volume; returns those to resume.
async fn suspend(backups: &Backups, sups: &Supervisors, volume_id: &str) -> Vec<String> {
    let running: Vec<String> = backups.store.read(|s| {
        s.containers
            .values()
            .filter(|c| c.volume_id == volume_id && matches!(c.state, PowerState::Running | PowerState::Starting))
            .map(|c| c.internal_id.clone())
            .collect()
    });
    let mut paused = Vec::new();
    for id in running {
        match lifecycle::act(sups, &id, Action::Suspend).await {
            Ok(()) => paused.push(id),
            Err(e) => crate::warn!("{id}: could not suspend for the backup ({e}); it is taken live"),
        }
    }
    paused
}

/// The archive: packed, hashed and written to the temp file, then fsynced and renamed. Ends
/// early, its temp file left to the caller, when the job is cancelled or past its deadline.
fn write(
    backups: &Backups,
    volume: &Volume,
    backup: &Backup,
    ignore: &[String],
    job: &Job,
) -> std::result::Result<(vfs::PackStats, u64, String), String> {
    let path = archive_path(backups, backup);
    let part = part_path(&path);
    let volume_path = crate::volumes::mount_path(&backups.volumes, &volume.volume_id)?;
    let root = Root::open(&volume_path).map_err(|e| e.to_string())?;
    let ignore = Ignore::load(&root, ignore).map_err(|e| e.to_string())?;
    let file = create_part(backups, &part).map_err(|e| format!("cannot create {}: {e}", part.display()))?;
    let limit = backups.config.backups.write_limit << 20;
    let mut out = Hashed { file, hash: Sha256::new(), written: 0, limit, started: Instant::now(), job };
    let mut last_note = Instant::now();
    let packed = vfs::pack_until(
        &root,
        "/",
        &ignore,
        &mut out,
        backup.format.codec(),
        |bytes, files| {
            backups.jobs.set_progress(&backup.backup_id, Progress { bytes, files });
            if last_note.elapsed() >= NOTE_EVERY {
                last_note = Instant::now();
                let note = format!("Backup {}: {} files, {}", backup.name, files, crate::volumes::human(bytes));
                tell(backups, &volume.volume_id, None, &note);
            }
        },
        &|| job.check(),
    );
    // A stopped job's reason, whatever error the stop made on its way out.
    let stats = packed.map_err(|e| job.stopped().map_or_else(|| e.to_string(), |why| why.to_string()))?;
    out.file.sync_all().map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    let size = out.written;
    let sha = crate::fsutil::hex(&out.hash.finalize());
    std::fs::rename(&part, &path).map_err(|e| format!("cannot rename {}: {e}", part.display()))?;
    let dir = super::disk::volume_dir(backups, &volume.volume_id);
    File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
    Ok((stats, size, sha))
}

/// The archive's writer: hashes what goes to the file, holds to `backups.write_limit`, and
/// fails once the job must stop.
struct Hashed<'j> {
    file: File,
    hash: Sha256,
    written: u64,
    /// Bytes per second (0: none).
    limit: u64,
    started: Instant,
    job: &'j Job,
}

impl Write for Hashed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let stop = |job: &Job| job.stopped().map_or(Ok(()), |why| Err(io::Error::other(why.to_string())));
        stop(self.job)?;
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        if self.limit > 0 {
            let due = Duration::from_secs_f64(self.written as f64 / self.limit as f64);
            // In short naps, so that a cancel or the deadline is heard meanwhile.
            while let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                stop(self.job)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
