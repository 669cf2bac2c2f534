//! Backups that go along (`"with_backups": true`): each ready backup of the volume is offered
//! to the target (`POST /transfers/:id/backups`, its record), which answers how many bytes of
//! its archive it holds; the rest is sent in pieces (`PUT /transfers/:id/backups/:backup_id
//! ?offset=N`) and appended to a temp file beside the archives. The last piece is checked
//! against the record's sha256 and the backup recorded for the staging volume, which becomes
//! the moved server's volume. A broken transfer resumes from what the temp file holds.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::body::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::peer::{answer_of, Peer};
use super::Rooms;
use crate::error::{Error, Result};
use crate::lifecycle;
use crate::model::{Backup, BackupState};

/// Raw bytes per piece of an archive.
pub const PIECE: usize = 8 << 20;

/// How much of an archive the target holds.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Held {
    pub have: u64,
    /// The archive is complete, verified and on record here.
    pub done: bool,
}

/// The temp file an incoming archive is written to (beside the archives; not a `.part`, which
/// a restart removes: this one is kept for the resume).
fn incoming(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(".incoming");
    PathBuf::from(name)
}

/// The record of `b` as this node keeps it, for volume `volume_id`.
fn ours(b: &Backup, volume_id: &str) -> Backup {
    Backup { volume_id: volume_id.to_string(), last_restore: None, error: None, ..b.clone() }
}

fn check(b: &Backup) -> Result<()> {
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit());
    if !crate::ids::valid_uuid(&b.backup_id) {
        return Err(Error::BadRequest("backup_id must be a backup's UUID".into()));
    }
    if b.state != BackupState::Ready || !b.sha256.as_deref().is_some_and(hex64) {
        return Err(Error::BadRequest("only a ready backup with its sha256 can be sent".into()));
    }
    if b.name.is_empty() || b.name.chars().count() > 256 {
        return Err(Error::BadRequest("backup name must be 1 to 256 bytes".into()));
    }
    Ok(())
}

/// `POST /transfers/:id/backups`: takes note of a backup to come; how much of it is here.
pub async fn offer(rooms: &Rooms, id: &str, b: Backup) -> Result<Held> {
    lifecycle::check_id(id)?;
    check(&b)?;
    let slot = super::target::slot(rooms, id);
    let mut guard = slot.lock().await;
    let Some(session) = guard.as_mut() else {
        return Err(Error::Conflict(format!("no transfer of {id} is under way here: send its manifest first")));
    };
    let volume_id = session.volume_id.clone();
    let existing = rooms.store.read(|s| s.backups.get(&b.backup_id).cloned());
    if let Some(e) = existing {
        if e.volume_id == volume_id && e.sha256 == b.sha256 {
            return Ok(Held { have: e.size_bytes, done: true });
        }
        return Err(Error::Conflict(format!("backup {} is already on this node for another volume", b.backup_id)));
    }
    let record = ours(&b, &volume_id);
    let part = incoming(&crate::backups::archive_path(&rooms.backups, &record));
    let have = match std::fs::metadata(&part) {
        Ok(m) if m.len() <= b.size_bytes => m.len(),
        Ok(_) => {
            let _ = std::fs::remove_file(&part);
            0
        }
        Err(_) => 0,
    };
    session.backups.insert(b.backup_id.clone(), record);
    Ok(Held { have, done: false })
}

/// `PUT /transfers/:id/backups/:backup_id?offset=N`: appends a piece; the last one verified
/// and the backup recorded.
pub async fn piece(rooms: &Rooms, id: &str, backup_id: &str, offset: u64, body: Bytes) -> Result<Held> {
    lifecycle::check_id(id)?;
    let slot = super::target::slot(rooms, id);
    let guard = slot.lock().await;
    let record = guard
        .as_ref()
        .and_then(|s| s.backups.get(backup_id).cloned())
        .ok_or_else(|| Error::Conflict(format!("backup {backup_id} was not offered: POST its record first")))?;
    let archive = crate::backups::archive_path(&rooms.backups, &record);
    let part = incoming(&archive);
    let (r, p) = (record.clone(), part.clone());
    let have = tokio::task::spawn_blocking(move || append(&p, offset, &body, r.size_bytes))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    if have < record.size_bytes {
        return Ok(Held { have, done: false });
    }
    let p = part.clone();
    let sha = tokio::task::spawn_blocking(move || sha256_of(&p))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Internal(format!("cannot read {}: {e}", part.display())))?;
    if Some(&sha) != record.sha256.as_ref() {
        let _ = std::fs::remove_file(&part);
        return Err(Error::Conflict(format!(
            "backup {backup_id} arrived with sha256 {sha}, its record says {}: send it again",
            record.sha256.as_deref().unwrap_or_default()
        )));
    }
    std::fs::rename(&part, &archive).map_err(|e| Error::Internal(format!("cannot rename {}: {e}", part.display())))?;
    let saved = rooms
        .store
        .update(|s| {
            if !s.volumes.contains_key(&record.volume_id) {
                return Err(Error::Conflict("the staging volume is gone".into()));
            }
            s.backups.insert(record.backup_id.clone(), record.clone());
            Ok(())
        })
        .await;
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&archive);
        return Err(e);
    }
    Ok(Held { have, done: true })
}

/// Writes `body` at `offset` of `part` (which must hold exactly `offset` bytes); its length.
fn append(part: &Path, offset: u64, body: &[u8], size: u64) -> Result<u64> {
    if let Some(dir) = part.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(crate::backups::FILE_MODE)
        .open(part)
        .map_err(|e| Error::Internal(format!("cannot open {}: {e}", part.display())))?;
    let len = file.metadata().map_err(|e| Error::Internal(e.to_string()))?.len();
    if offset != len {
        return Err(Error::Conflict(format!("this node holds {len} bytes of the backup, not {offset}")));
    }
    if offset.saturating_add(body.len() as u64) > size {
        return Err(Error::BadRequest("more bytes than the backup's size".into()));
    }
    file.seek(SeekFrom::Start(offset)).and_then(|_| file.write_all(body)).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSPC) => Error::Full("no room left for the backup".into()),
        _ => Error::Internal(format!("cannot write {}: {e}", part.display())),
    })?;
    Ok(offset + body.len() as u64)
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::fsutil::hex(&h.finalize()))
}

/// The temp files of incoming archives for `volume_id` go (its transfer was discarded).
pub fn forget(rooms: &Rooms, volume_id: &str) {
    let probe = Backup::new(String::new(), volume_id, String::new(), BackupState::Ready, 0);
    let Some(dir) = crate::backups::archive_path(&rooms.backups, &probe).parent().map(PathBuf::from) else {
        return;
    };
    for f in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if f.file_name().to_string_lossy().ends_with(".incoming") {
            let _ = std::fs::remove_file(f.path());
        }
    }
    let _ = std::fs::remove_dir(&dir);
}

/// The source's side: sends every ready backup of `volume_id` the target lacks; the bytes
/// sent.
pub async fn send(rooms: &Rooms, peer: &Peer, id: &str, volume_id: &str) -> std::result::Result<u64, String> {
    let mut all: Vec<Backup> = rooms.store.read(|s| {
        s.backups.values().filter(|b| b.volume_id == volume_id && b.state == BackupState::Ready).cloned().collect()
    });
    all.sort_by_key(|b| (b.created_at, b.backup_id.clone()));
    let mut sent = 0u64;
    for b in all {
        // Its record as the target keeps it: what happened here (a restore, its error) stays here.
        let offered = Backup { last_restore: None, error: None, ..b.clone() };
        let held: Held = peer.json(&format!("/transfers/{id}/backups"), &offered, Duration::from_secs(60)).await?;
        if held.done {
            continue;
        }
        let path = crate::backups::archive_path(&rooms.backups, &b);
        let mut offset = held.have;
        loop {
            let p = path.clone();
            let piece = tokio::task::spawn_blocking(move || read_piece(&p, offset))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot read backup {}: {e}", b.backup_id))?;
            if piece.is_empty() && offset < b.size_bytes {
                return Err(format!("backup {} is shorter than its record says", b.backup_id));
            }
            let len = piece.len() as u64;
            let path = format!("/transfers/{id}/backups/{}?offset={offset}", b.backup_id);
            let answer = peer
                .call(Method::PUT, &path, Bytes::from(piece), "application/octet-stream", Duration::from_secs(300))
                .await?;
            let held: Held = answer_of(&answer)?;
            sent += len;
            offset = held.have;
            if held.done {
                break;
            }
        }
    }
    Ok(sent)
}

fn read_piece(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; PIECE];
    let n = super::manifest::read_full(&mut file, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
