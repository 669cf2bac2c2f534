//! Which backups leave the record: past `backups.max_per_volume` the oldest ready ones; a
//! failed one once a later backup of its volume is ready, or past that many failed ones; all
//! of a volume's when the volume is deleted (nothing could reach them again). Records go in
//! one state update, their archives after it is saved.

use super::disk::{archive_path, part_path, remove_dir_if_empty, remove_file};
use super::Backups;
use crate::error::Error;
use crate::model::{Backup, BackupState};
use crate::store::State;

/// Takes out of the state what `volume_id` keeps no longer (see the module doc), never
/// `keep` (the backup that just ended: its times are seconds, and others may share them).
/// Called inside the update that ends a backup, so nobody ever sees more than the limit; the
/// caller hands what is returned to [`delete_archives`] once the update is saved.
pub(super) fn take_excess(s: &mut State, volume_id: &str, max: usize, keep: &str) -> Vec<Backup> {
    let of_volume = |state: BackupState| {
        let mut found: Vec<(u64, Option<u64>, String)> = s
            .backups
            .values()
            .filter(|b| b.volume_id == volume_id && b.state == state && b.backup_id != keep)
            .map(|b| (b.created_at, b.completed_at, b.backup_id.clone()))
            .collect();
        found.sort_by(|a, b| (a.1, a.0, &a.2).cmp(&(b.1, b.0, &b.2)));
        found
    };
    let ready = of_volume(BackupState::Ready);
    let failed = of_volume(BackupState::Failed);
    let kept = s.backups.get(keep).filter(|b| b.volume_id == volume_id).map(|b| (b.state, b.created_at));
    let (keep_ready, keep_failed) = match kept {
        Some((BackupState::Ready, _)) => (1, 0),
        Some((BackupState::Failed, _)) => (0, 1),
        _ => (0, 0),
    };
    let newest_ready = ready
        .iter()
        .map(|(created, _, _)| *created)
        .chain(kept.filter(|k| k.0 == BackupState::Ready).map(|k| k.1))
        .max();
    let mut gone: Vec<String> =
        ready.iter().take((ready.len() + keep_ready).saturating_sub(max)).map(|r| r.2.clone()).collect();
    let (superseded, left): (Vec<_>, Vec<_>) =
        failed.into_iter().partition(|(created, _, _)| newest_ready.is_some_and(|n| *created <= n));
    gone.extend(superseded.into_iter().map(|f| f.2));
    gone.extend(left.iter().take((left.len() + keep_failed).saturating_sub(max)).map(|f| f.2.clone()));
    gone.iter().filter_map(|id| s.backups.remove(id)).collect()
}

/// Deletes the archives (and temp files) of backups taken off the record, then the volume's
/// folder if that emptied it.
pub(super) fn delete_archives(backups: &Backups, gone: Vec<Backup>) {
    let mut volumes: Vec<String> = Vec::new();
    for old in gone {
        crate::info!("removed backup {} ({:?}) of volume {}", old.backup_id, old.state, old.volume_id);
        let path = archive_path(backups, &old);
        for file in [part_path(&path), path] {
            if let Err(e) = remove_file(&file) {
                crate::error!("backup record removed but {} could not be: {e}", file.display());
            }
        }
        if !volumes.contains(&old.volume_id) {
            volumes.push(old.volume_id);
        }
    }
    for volume_id in volumes {
        remove_dir_if_empty(backups, &volume_id);
    }
}

/// A deleted volume's backups: records, archives and folder. Its deletion holds the volume's
/// claim, so none of them is being made or restored.
pub async fn volume_deleted(backups: &Backups, volume_id: &str) {
    let id = volume_id.to_string();
    let gone = backups
        .store
        .update(|s| {
            let ids: Vec<String> =
                s.backups.values().filter(|b| b.volume_id == id).map(|b| b.backup_id.clone()).collect();
            Ok::<_, Error>(ids.iter().filter_map(|b| s.backups.remove(b)).collect::<Vec<_>>())
        })
        .await;
    match gone {
        Ok(gone) => delete_archives(backups, gone),
        Err(e) => crate::error!("volume {volume_id} deleted but its backups could not be: {e}"),
    }
    remove_dir_if_empty(backups, volume_id);
}

/// At start: backups of volumes no longer on record (a crash between a volume's deletion and
/// that of its backups) go, and every empty volume folder.
pub async fn sweep(backups: &Backups) {
    let gone = backups
        .store
        .update(|s| {
            let orphans: Vec<String> = s
                .backups
                .values()
                .filter(|b| !s.volumes.contains_key(&b.volume_id))
                .map(|b| b.backup_id.clone())
                .collect();
            Ok::<_, Error>(orphans.iter().filter_map(|b| s.backups.remove(b)).collect::<Vec<_>>())
        })
        .await;
    match gone {
        Ok(gone) => delete_archives(backups, gone),
        Err(e) => crate::error!("cannot remove the backups of deleted volumes: {e}"),
    }
    let folders = std::fs::read_dir(&backups.config.backups.path).into_iter().flatten().flatten();
    for folder in folders.filter(|f| f.file_type().is_ok_and(|t| t.is_dir())) {
        if let Some(volume_id) = folder.file_name().to_str() {
            remove_dir_if_empty(backups, volume_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(s: &mut State, id: &str, vol: &str, state: BackupState, created: u64, done: Option<u64>) {
        let mut b = Backup::new(id.into(), vol, id.into(), state, created);
        b.completed_at = done;
        s.backups.insert(id.into(), b);
    }

    fn left(s: &State) -> Vec<&str> {
        s.backups.keys().map(String::as_str).collect()
    }

    fn ids(gone: Vec<Backup>) -> Vec<String> {
        gone.into_iter().map(|b| b.backup_id).collect()
    }

    #[test]
    fn the_oldest_ready_backups_of_the_volume_go_past_the_limit() {
        let mut s = State::default();
        add(&mut s, "a", "v", BackupState::Ready, 1, Some(5));
        add(&mut s, "b", "v", BackupState::Ready, 2, Some(3));
        add(&mut s, "c", "v", BackupState::Ready, 3, Some(9));
        add(&mut s, "d", "v", BackupState::Creating, 4, None);
        add(&mut s, "f", "w", BackupState::Ready, 1, Some(1));
        assert_eq!(ids(take_excess(&mut s, "v", 2, "")), vec!["b"]);
        assert_eq!(left(&s), vec!["a", "c", "d", "f"]);
        assert!(take_excess(&mut s, "v", 2, "").is_empty());
    }

    #[test]
    fn failed_backups_go_once_a_later_one_is_ready_or_past_the_limit() {
        let mut s = State::default();
        add(&mut s, "r1", "v", BackupState::Ready, 10, Some(11));
        for (i, id) in ["f1", "f2", "f3", "f4"].iter().enumerate() {
            add(&mut s, id, "v", BackupState::Failed, 20 + i as u64, None);
        }
        add(&mut s, "fw", "w", BackupState::Failed, 1, None);
        // Four failures after the last good one: the two oldest go past max 2.
        assert_eq!(ids(take_excess(&mut s, "v", 2, "")), vec!["f1", "f2"]);
        assert_eq!(left(&s), vec!["f3", "f4", "fw", "r1"]);
        // A later backup is ready: the failures before it go, the other volume's stays.
        add(&mut s, "r2", "v", BackupState::Ready, 30, Some(31));
        assert_eq!(ids(take_excess(&mut s, "v", 2, "")), vec!["f3", "f4"]);
        assert_eq!(left(&s), vec!["fw", "r1", "r2"]);
        // A failure newer than every ready one stays (its error is still news).
        add(&mut s, "f5", "v", BackupState::Failed, 40, None);
        assert!(take_excess(&mut s, "v", 2, "").is_empty());
        // The one that just ended stays, even against others of the same second.
        add(&mut s, "f7", "v", BackupState::Failed, 41, None);
        add(&mut s, "f6", "v", BackupState::Failed, 41, None);
        assert_eq!(ids(take_excess(&mut s, "v", 2, "f6")), vec!["f5"]);
        add(&mut s, "r4", "v", BackupState::Ready, 50, Some(50));
        add(&mut s, "r3", "v", BackupState::Ready, 50, Some(50));
        assert_eq!(ids(take_excess(&mut s, "v", 2, "r3")), vec!["r1", "r2", "f6", "f7"]);
        assert_eq!(left(&s), vec!["fw", "r3", "r4"]);
    }
}
