//! Restoring a backup (the servers on the volume stopped gracefully through their supervisors
//! first, started again after if they ran), and taking in a backup made elsewhere.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{archive_path, claim, delete_archives, part_path, take_excess, tell, Busy};
use crate::app::App;
use crate::error::{bad, conflict, Error, Result};
use crate::fsutil::hex;
use crate::lifecycle::{self, Action};
use crate::model::{now, Backup, BackupState, PowerState, Restore, Volume};
use crate::vfs::{self, Root};

/// `POST .../restore`: checks, then restores in the background.
pub async fn start(app: &Arc<App>, volume_key: &str, backup_id: &str, truncate: bool) -> Result<()> {
    let (volume, backup) = super::find(app, volume_key, backup_id)?;
    if backup.state != BackupState::Ready {
        return Err(conflict(format!("Cannot restore a backup that is {}", state_name(backup.state))));
    }
    let installing = app.store.read(|s| {
        s.containers
            .values()
            .any(|c| c.volume_id == volume.volume_id && c.install_state == crate::model::InstallState::Installing)
    });
    if installing {
        return Err(conflict("Cannot restore while a container on this volume is installing"));
    }
    let busy = claim(app, &volume.volume_id, "restore")?;
    let id = backup.backup_id.clone();
    app.store
        .update(|s| {
            if let Some(r) = s.backups.get_mut(&id) {
                r.last_restore = Some(Restore { started_at: now(), completed_at: None, truncate, error: None });
            }
            Ok::<_, Error>(())
        })
        .await?;
    tokio::spawn(run(Arc::clone(app), volume, backup, truncate, busy));
    Ok(())
}

fn state_name(s: BackupState) -> &'static str {
    match s {
        BackupState::Creating => "still being created",
        BackupState::Ready => "ready",
        BackupState::Failed => "failed",
    }
}

async fn run(app: Arc<App>, volume: Volume, backup: Backup, truncate: bool, _busy: Busy) {
    let Ok(_permit) = Arc::clone(&app.backups.permits).acquire_owned().await else { return };
    tell(&app, &volume.volume_id, None, &format!("Restoring backup {}", backup.name));
    app.backups.set_restoring(&volume.volume_id, true);
    let (ran, outcome) = match stop_servers(&app, &volume.volume_id).await {
        Ok(ran) => {
            let (a, v, b) = (Arc::clone(&app), volume.clone(), backup.clone());
            let outcome = tokio::task::spawn_blocking(move || extract(&a, &v, &b, truncate))
                .await
                .unwrap_or_else(|e| Err(format!("restore task failed: {e}")));
            (ran, outcome)
        }
        Err(why) => (Vec::new(), Err(why)),
    };
    app.backups.set_restoring(&volume.volume_id, false);
    finish(&app, &volume, &backup, outcome, &ran).await;
}

async fn finish(
    app: &Arc<App>,
    volume: &Volume,
    backup: &Backup,
    outcome: std::result::Result<usize, String>,
    ran: &[String],
) {
    let id = backup.backup_id.clone();
    let error = outcome.as_ref().err().cloned();
    let _ = app
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
            app,
            &volume.volume_id,
            Some("backup restore completed"),
            &format!("Backup {} restored ({n} entries)", backup.name),
        ),
        Err(why) => tell(
            app,
            &volume.volume_id,
            Some("backup restore failed"),
            &format!("Restore of backup {} failed: {why}", backup.name),
        ),
    }
    for id in ran {
        if let Err(e) = lifecycle::act(app, id, Action::Start).await {
            tell(app, &volume.volume_id, None, &format!("{id} could not be started after the restore: {e}"));
        }
    }
}

/// Stops every server on the volume through its supervisor (a graceful stop) and waits until
/// each is offline; returns those that were running.
async fn stop_servers(app: &Arc<App>, volume_id: &str) -> std::result::Result<Vec<String>, String> {
    let up: Vec<String> = app.store.read(|s| {
        s.containers
            .values()
            .filter(|c| c.volume_id == volume_id && c.state != PowerState::Offline)
            .map(|c| c.internal_id.clone())
            .collect()
    });
    for id in &up {
        match lifecycle::act(app, id, Action::Stop).await {
            Ok(()) | Err(Error::Conflict(_)) => {}
            Err(e) => return Err(format!("cannot stop {id}: {e}")),
        }
    }
    let limit = Duration::from_secs(app.config.containers.cleanup_timeout + 60);
    let offline = tokio::time::timeout(limit, async {
        loop {
            let left = app
                .store
                .read(|s| up.iter().any(|id| s.containers.get(id).is_some_and(|c| c.state != PowerState::Offline)));
            if !left {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    offline.map_err(|_| "the servers on the volume did not stop".to_string())?;
    Ok(up)
}

/// Verifies the archive against its sha256, then extracts it (every entry checked first;
/// with `truncate` the volume is emptied just before).
fn extract(app: &App, volume: &Volume, backup: &Backup, truncate: bool) -> std::result::Result<usize, String> {
    let path = archive_path(app, backup);
    let mut file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let sha = sha256_of(&mut file).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if backup.sha256.as_deref() != Some(sha.as_str()) {
        return Err(format!(
            "the archive's sha256 is {sha}, not the {} on record",
            backup.sha256.as_deref().unwrap_or("none")
        ));
    }
    io::Seek::rewind(&mut file).map_err(|e| e.to_string())?;
    let volume_path = crate::volumes::mount_path(app, &volume.volume_id)?;
    let root = Root::open(&volume_path).map_err(|e| e.to_string())?;
    if truncate {
        let names: Vec<String> = root.list("/").map_err(|e| e.to_string())?.into_iter().map(|e| e.name).collect();
        if !names.is_empty() {
            root.delete(&names).map_err(|e| format!("emptying the volume failed, it is partly emptied: {e}"))?;
        }
        return vfs::extract(&root, "/", file)
            .map_err(|e| format!("the volume was emptied, then extracting failed: {e}"));
    }
    vfs::extract(&root, "/", file).map_err(|e| e.to_string())
}

fn sha256_of(file: &mut File) -> io::Result<String> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hex(&hash.finalize())),
            n => hash.update(&buf[..n]),
        }
    }
}

/// `POST .../backups/upload`: a `tar.gz` made elsewhere, streamed to disk and hashed; it is
/// checked to be a readable tar.gz (its entries are checked again, with the files API's rules,
/// when it is restored).
pub async fn upload(app: &Arc<App>, volume_key: &str, body: hyper::body::Incoming) -> Result<Backup> {
    let volume = crate::volumes::find(app, volume_key)?;
    let backup_id = crate::ids::new_uuid().map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let created_at = now();
    let name = format!("upload-{created_at}");
    let mut backup = Backup::new(backup_id, &volume.volume_id, name, BackupState::Ready, created_at);
    let path = archive_path(app, &backup);
    let part = part_path(&path);
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let received = receive(body, &part).await;
    let (size, sha) = match received {
        Ok(r) => r,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    let p = part.clone();
    let files = tokio::task::spawn_blocking(move || count_entries(&p)).await.unwrap_or_else(|e| Err(e.to_string()));
    let files = match files {
        Ok(n) => n,
        Err(why) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(bad(format!("not a readable tar.gz: {why}")));
        }
    };
    tokio::fs::rename(&part, &path)
        .await
        .map_err(|e| Error::Internal(format!("cannot rename {}: {e}", part.display())))?;
    backup.size_bytes = size;
    backup.sha256 = Some(sha);
    backup.files = files;
    backup.completed_at = Some(now());
    let (record, max) = (backup.clone(), app.config.backups.max_per_volume);
    let excess = app
        .store
        .update(|s| {
            s.backups.insert(record.backup_id.clone(), record);
            Ok::<_, Error>(take_excess(s, &volume.volume_id, max))
        })
        .await?;
    delete_archives(app, excess).await;
    Ok(backup)
}

/// Streams a body to `part` (new file), hashing it; returns its size and sha256.
async fn receive(mut body: hyper::body::Incoming, part: &std::path::Path) -> Result<(u64, String)> {
    let io_err = |e: io::Error| Error::Internal(format!("cannot write {}: {e}", part.display()));
    let mut file = tokio::fs::File::options().write(true).create_new(true).open(part).await.map_err(io_err)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad(format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            hash.update(&data);
            size += data.len() as u64;
            file.write_all(&data).await.map_err(io_err)?;
        }
    }
    file.sync_all().await.map_err(io_err)?;
    Ok((size, hex(&hash.finalize())))
}

/// Entries of a tar.gz, reading it through once.
fn count_entries(path: &std::path::Path) -> std::result::Result<u64, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut n = 0;
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        io::copy(&mut entry, &mut io::sink()).map_err(|e| e.to_string())?;
        if entry.header().entry_type().is_file() {
            n += 1;
        }
    }
    if n == 0 && File::open(path).map(|f| f.metadata().map(|m| m.len()).unwrap_or(0)).unwrap_or(0) == 0 {
        return Err("the body is empty".into());
    }
    Ok(n)
}
