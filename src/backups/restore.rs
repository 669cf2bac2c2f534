//! Restoring a backup (the servers on the volume stopped gracefully through their supervisors
//! first, started again after if they ran), and taking in a backup made elsewhere.

use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::disk::{archive_path, create_part, part_path, remove_dir_if_empty, remove_file};
use super::job::{Job, Kind, Stopped};
use super::Backups;
use super::{claim, delete_archives, take_excess, tell, Busy, CANCEL_WAIT};
use crate::error::{bad, conflict, Error, Result};
use crate::fsutil::hex;
use crate::lifecycle::{self, Action, Supervisors};
use crate::model::{now, Backup, BackupFormat, BackupState, PowerState, Restore, Volume};
use crate::vfs::{self, FsError, Root};

/// `POST .../restore`: checks, then restores in the background.
pub async fn start(
    backups: &Backups,
    sups: &Supervisors,
    volume_key: &str,
    backup_id: &str,
    truncate: bool,
) -> Result<()> {
    let (volume, backup) = super::find(backups, volume_key, backup_id)?;
    if backup.state != BackupState::Ready {
        return Err(conflict(format!("Cannot restore a backup that is {}", state_name(backup.state))));
    }
    let installing = backups.store.read(|s| {
        s.containers
            .values()
            .any(|c| c.volume_id == volume.volume_id && c.install_state == crate::model::InstallState::Installing)
    });
    if installing {
        return Err(conflict("Cannot restore while a container on this volume is installing"));
    }
    // A truncating restore would empty an extract's staging directory under it.
    if backups.extracts.running_on(&volume.volume_id) {
        return Err(conflict("Cannot restore while an extract job runs on this volume"));
    }
    let busy = claim(backups, &volume.volume_id, "restore", Kind::Restore, backup_id)?;
    let id = backup.backup_id.clone();
    backups
        .store
        .update(|s| {
            if let Some(r) = s.backups.get_mut(&id) {
                r.last_restore = Some(Restore { started_at: now(), completed_at: None, truncate, error: None });
            }
            Ok::<_, Error>(())
        })
        .await?;
    let job = Arc::clone(busy.job());
    super::spawn_job(backups, &job, run(backups.clone(), sups.clone(), volume, backup, truncate, busy));
    Ok(())
}

/// `DELETE .../restore`: cancels the running restore of this backup and waits for it to end
/// (at most [`CANCEL_WAIT`]); `409` when none runs. Tells whether it ended in that time.
pub async fn cancel(backups: &Backups, volume_key: &str, backup_id: &str) -> Result<bool> {
    let (volume, _) = super::find(backups, volume_key, backup_id)?;
    let job = backups
        .jobs
        .job_of(&volume.volume_id, Kind::Restore, backup_id)
        .ok_or_else(|| conflict("No restore of this backup is running"))?;
    job.cancel();
    Ok(job.finished(CANCEL_WAIT).await)
}

fn state_name(s: BackupState) -> &'static str {
    match s {
        BackupState::Creating => "still being created",
        BackupState::Ready => "ready",
        BackupState::Failed => "failed",
    }
}

async fn run(backups: Backups, sups: Supervisors, volume: Volume, backup: Backup, truncate: bool, busy: Busy) {
    let job = Arc::clone(busy.job());
    let permits = Arc::clone(&backups.jobs.permits);
    let permit = tokio::select! {
        permit = permits.acquire_owned() => permit.map_err(|_| "the daemon is stopping".to_string()),
        why = job.interrupted() => Err(why.to_string()),
    };
    let (ran, outcome) = match permit {
        Ok(_permit) => {
            job.start_clock();
            tell(&backups, &volume.volume_id, None, &format!("Restoring backup {}", backup.name));
            backups.jobs.set_restoring(&volume.volume_id, true);
            let ran = running(&backups, &volume.volume_id);
            let stopped = tokio::select! {
                stopped = stop_servers(&backups, &sups, &ran) => stopped,
                why = job.interrupted() => Err(format!("{why} while the servers were stopping")),
            };
            let outcome = match stopped {
                Ok(()) => {
                    let (a, v, b, j) = (backups.clone(), volume.clone(), backup.clone(), Arc::clone(&job));
                    tokio::task::spawn_blocking(move || extract(&a, &v, &b, truncate, &j))
                        .await
                        .unwrap_or_else(|e| Err(format!("restore task failed: {e}")))
                }
                // Those that ran are started again below, whether they stopped or not yet.
                Err(why) => Err(why),
            };
            backups.jobs.set_restoring(&volume.volume_id, false);
            (ran, outcome)
        }
        Err(why) => (Vec::new(), Err(why)),
    };
    let cancelled = job.stopped() == Some(Stopped::Cancelled);
    busy.release();
    record(&backups, &volume, &backup, outcome, cancelled).await;
    // The volume is left alone and the outcome on record: a canceller may go on.
    drop(busy);
    if job.stopped() == Some(Stopped::Shutdown) {
        // The daemon stops: servers are left as they are, as a restart would leave them.
        return;
    }
    start_again(&backups, &sups, &volume, &ran).await;
}

/// The outcome on the backup's record, and told to the viewers.
async fn record(
    backups: &Backups,
    volume: &Volume,
    backup: &Backup,
    outcome: std::result::Result<usize, String>,
    cancelled: bool,
) {
    let id = backup.backup_id.clone();
    let error = outcome.as_ref().err().cloned();
    let _ = backups
        .store
        .update(|s| {
            if let Some(r) = s.backups.get_mut(&id) {
                r.error = error.clone().map(|e| format!("Restore failed: {e}"));
                if let Some(last) = r.last_restore.as_mut() {
                    last.completed_at = Some(now());
                    last.error = error;
                }
            }
            Ok::<_, Error>(())
        })
        .await;
    match &outcome {
        Ok(n) => tell(
            backups,
            &volume.volume_id,
            Some("backup restore completed"),
            &format!("Backup {} restored ({n} entries)", backup.name),
        ),
        Err(why) => tell(
            backups,
            &volume.volume_id,
            Some(if cancelled { "backup restore cancelled" } else { "backup restore failed" }),
            &format!("Restore of backup {} failed: {why}", backup.name),
        ),
    }
}

/// Starts again the servers that ran before the restore.
async fn start_again(backups: &Backups, sups: &Supervisors, volume: &Volume, ran: &[String]) {
    // After a cancel while they were stopping, their stop goes on: started once it is over.
    if !wait_offline(backups, ran).await {
        tell(backups, &volume.volume_id, None, "The servers on the volume did not stop; they are not started again");
        return;
    }
    for id in ran {
        if let Err(e) = lifecycle::act(sups, id, Action::Start).await {
            tell(backups, &volume.volume_id, None, &format!("{id} could not be started after the restore: {e}"));
        }
    }
}

/// The servers on the volume that are not offline.
fn running(backups: &Backups, volume_id: &str) -> Vec<String> {
    backups.store.read(|s| {
        s.containers
            .values()
            .filter(|c| c.volume_id == volume_id && c.state != PowerState::Offline)
            .map(|c| c.internal_id.clone())
            .collect()
    })
}

/// Stops the servers `up` through their supervisors (a graceful stop) and waits until each
/// is offline.
async fn stop_servers(backups: &Backups, sups: &Supervisors, up: &[String]) -> std::result::Result<(), String> {
    for id in up {
        match lifecycle::act(sups, id, Action::Stop).await {
            Ok(()) | Err(Error::Conflict(_)) => {}
            Err(e) => return Err(format!("cannot stop {id}: {e}")),
        }
    }
    if !wait_offline(backups, up).await {
        return Err("the servers on the volume did not stop".to_string());
    }
    Ok(())
}

/// Waits until each of `ids` is offline (or gone), at most a stop's time and a minute.
async fn wait_offline(backups: &Backups, ids: &[String]) -> bool {
    let limit = Duration::from_secs(backups.config.containers.cleanup_timeout + 60);
    let offline = tokio::time::timeout(limit, async {
        loop {
            let left = backups
                .store
                .read(|s| ids.iter().any(|id| s.containers.get(id).is_some_and(|c| c.state != PowerState::Offline)));
            if !left {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    offline.is_ok()
}

/// Verifies the archive against its sha256, then extracts it (every entry checked first;
/// with `truncate` the volume is emptied just before) as the volume's owner, and gives each
/// restored name that owner and its archived mtime. A cancel or the deadline ends it between
/// entries, each file written whole or not at all.
fn extract(
    backups: &Backups,
    volume: &Volume,
    backup: &Backup,
    truncate: bool,
    job: &Job,
) -> std::result::Result<usize, String> {
    // A stopped job's reason, whatever error the stop made on its way out.
    let why = |e: FsError| job.stopped().map_or_else(|| e.to_string(), |why| why.to_string());
    let path = archive_path(backups, backup);
    let open = || File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()));
    let sha = sha256_of(&mut open()?, job).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Some(stopped) = job.stopped() {
        return Err(stopped.to_string());
    }
    if backup.sha256.as_deref() != Some(sha.as_str()) {
        return Err(format!(
            "the archive's sha256 is {sha}, not the {} on record",
            backup.sha256.as_deref().unwrap_or("none")
        ));
    }
    check_format(&mut open()?, backup)?;
    let volume_path = crate::volumes::mount_path(&backups.volumes, &volume.volume_id)?;
    let (uid, gid) = crate::volumes::owner(&backups.volumes, &volume.volume_id);
    let root = Root::open(&volume_path).and_then(|r| r.owned_by(uid, gid)).map_err(|e| e.to_string())?;
    let stop = || job.check();
    let emptied = if truncate {
        let names: Vec<String> = root.list("/").map_err(|e| e.to_string())?.into_iter().map(|e| e.name).collect();
        if !names.is_empty() {
            root.delete(&names).map_err(|e| format!("emptying the volume failed, it is partly emptied: {e}"))?;
        }
        "the volume was emptied, then "
    } else {
        ""
    };
    let n = vfs::extract_with(&root, "/", open()?, job.dial())
        .map_err(|e| format!("{emptied}extracting failed: {}", why(e)))?;
    vfs::settle(&root, open()?, &stop)
        .map_err(|e| format!("{emptied}giving the files to {uid}:{gid} failed: {}", why(e)))?;
    Ok(n)
}

/// Refuses an archive whose first bytes are not of the format on its record (restores read
/// the format the record names, nothing else).
fn check_format(file: &mut File, backup: &Backup) -> std::result::Result<(), String> {
    let found = vfs::sniff(file).map_err(|e| format!("the archive is unreadable: {e}"))?;
    let want = backup.format.extension();
    if found != want {
        return Err(format!("the archive is a {found}, but the backup's record says {want}"));
    }
    Ok(())
}

/// The sha256 of a file, read through; stops early (the caller sees `job.stopped()`) when
/// the job must end.
fn sha256_of(file: &mut File, job: &Job) -> io::Result<String> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    while job.stopped().is_none() {
        match file.read(&mut buf)? {
            0 => break,
            n => hash.update(&buf[..n]),
        }
    }
    Ok(hex(&hash.finalize()))
}

/// `POST .../backups/upload`: a `tar.gz` or `tar.zst` made elsewhere (told by its first bytes),
/// streamed to disk and hashed; it is read through once with the reader restores use (and its
/// limits) to check it is readable (its entries are checked again, with the files API's rules,
/// when it is restored).
pub async fn upload(backups: &Backups, volume_key: &str, body: impl AsyncRead + Unpin + Send) -> Result<Backup> {
    let volume = crate::volumes::find(&backups.volumes, volume_key)?;
    let backup_id = crate::ids::new_uuid().map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let created_at = now();
    let name = format!("upload-{created_at}");
    let mut backup = Backup::new(backup_id, &volume.volume_id, name, BackupState::Ready, created_at);
    let path = archive_path(backups, &backup);
    let part = part_path(&path);
    let taken = take_in(backups, body, &part).await;
    let (size, sha, format, files) = match taken {
        Ok(taken) => taken,
        Err(e) => {
            if let Err(e) = remove_file(&part) {
                crate::error!("cannot remove {}: {e}", part.display());
            }
            remove_dir_if_empty(backups, &volume.volume_id);
            return Err(e);
        }
    };
    backup.format = format;
    let path = archive_path(backups, &backup);
    tokio::fs::rename(&part, &path)
        .await
        .map_err(|e| Error::Internal(format!("cannot rename {}: {e}", part.display())))?;
    backup.size_bytes = size;
    backup.sha256 = Some(sha);
    backup.files = files;
    backup.completed_at = Some(now());
    let (record, max) = (backup.clone(), backups.config.backups.max_per_volume);
    let kept = backups
        .store
        .update(|s| {
            // Deleted while the body came: the archive goes, no record for a volume that is not.
            if !s.volumes.contains_key(&record.volume_id) {
                return Ok(None);
            }
            let id = record.backup_id.clone();
            s.backups.insert(id.clone(), record);
            Ok::<_, Error>(Some(take_excess(s, &volume.volume_id, max, &id)))
        })
        .await?;
    match kept {
        Some(excess) => delete_archives(backups, excess),
        None => {
            delete_archives(backups, vec![backup]);
            return Err(Error::NotFound("Volume not found (deleted during the upload)".into()));
        }
    }
    Ok(backup)
}

/// The body written to `part` and read back as a tar.gz or tar.zst: its size, sha256, format
/// and file count.
async fn take_in(
    backups: &Backups,
    body: impl AsyncRead + Unpin + Send,
    part: &std::path::Path,
) -> Result<(u64, String, BackupFormat, u64)> {
    let file =
        create_part(backups, part).map_err(|e| Error::Internal(format!("cannot create {}: {e}", part.display())))?;
    let (size, sha) = receive(body, tokio::fs::File::from_std(file), part).await?;
    let written = File::open(part).map_err(|e| Error::Internal(format!("cannot read {}: {e}", part.display())))?;
    let files = tokio::task::spawn_blocking(move || vfs::backup_files(written))
        .await
        .map_err(|e| Error::Internal(format!("checking the upload failed: {e}")))?;
    match files {
        Ok((codec, files)) => Ok((size, sha, BackupFormat::of(codec), files)),
        Err(FsError::Io(e)) => Err(Error::Internal(format!("cannot read {}: {e}", part.display()))),
        Err(e) => Err(bad(format!("not a readable tar.gz or tar.zst: {e}"))),
    }
}

/// Streams a body to `file`, hashing it; returns its size and sha256. Memory holds one buffer
/// at a time, whatever the body's size.
async fn receive(
    mut body: impl AsyncRead + Unpin + Send,
    mut file: tokio::fs::File,
    part: &std::path::Path,
) -> Result<(u64, String)> {
    let io_err = |e: io::Error| Error::Internal(format!("cannot write {}: {e}", part.display()));
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = body.read(&mut buf).await.map_err(|e| bad(format!("could not read the request body: {e}")))?;
        if n == 0 {
            break;
        }
        let data = &buf[..n];
        hash.update(data);
        size += n as u64;
        file.write_all(data).await.map_err(io_err)?;
    }
    file.sync_all().await.map_err(io_err)?;
    Ok((size, hex(&hash.finalize())))
}
