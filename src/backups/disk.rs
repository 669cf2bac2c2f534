//! Where backups lie: `<backups.path>/<volume_id>/<backup_id>.tar.gz` (or `.tar.zst`),
//! written under a `.part` name first. Archives are created `0600` in folders `0700` (a tenant's world is
//! nobody else's to read, whatever the process umask); a volume's folder goes with its last
//! archive. Making a folder with a file in it and removing an empty one take one lock, so a
//! folder is never removed under a file about to be made there.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::lock;
use super::Backups;
use crate::model::Backup;

/// Mode of backup archives and of their temp files.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the folders lightd makes under `backups.path` (and of that path, when lightd makes it).
pub const DIR_MODE: u32 = 0o700;

/// Where the archive of a backup lives.
pub fn archive_path(backups: &Backups, b: &Backup) -> PathBuf {
    volume_dir(backups, &b.volume_id).join(format!("{}.{}", b.backup_id, b.format.extension()))
}

/// The folder of a volume's archives.
pub fn volume_dir(backups: &Backups, volume_id: &str) -> PathBuf {
    backups.config.backups.path.join(volume_id)
}

/// The temp name an archive is written under until it is complete.
pub fn part_path(path: &Path) -> PathBuf {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    PathBuf::from(part)
}

/// Creates `part` (a new file, `0600`) and its folders (`0700`) for writing.
pub fn create_part(backups: &Backups, part: &Path) -> io::Result<File> {
    let _dirs = lock(&backups.jobs.dirs);
    if let Some(dir) = part.parent() {
        DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    }
    OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(part)
}

/// Removes the folder of `volume_id`'s archives if nothing is left in it.
pub fn remove_dir_if_empty(backups: &Backups, volume_id: &str) {
    let _dirs = lock(&backups.jobs.dirs);
    let dir = volume_dir(backups, volume_id);
    match std::fs::remove_dir(&dir) {
        Ok(()) => crate::debug!("removed {}: no backups left in it", dir.display()),
        // Not empty, or already gone: nothing to do.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST | libc::ENOENT)) => {}
        Err(e) => crate::warn!("cannot remove the empty folder {}: {e}", dir.display()),
    }
}

/// Removes a file that may not exist; any other failure is said.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
