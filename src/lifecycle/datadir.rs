//! `<storage.data_path>/<internal_id>/`, mounted read-only at `/app/data` in both of a
//! server's containers: the scripts lightd writes for it, each with an owner and a mode of its
//! own whatever the process umask (the unit sets 0077), set on the open file before it is
//! renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{fchown, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Supervisors;
use crate::model::ContainerRecord;

/// The directory: root's, in the server's group, which may enter it (`rwxr-x---`).
const DIR_MODE: u32 = 0o750;
/// `install.sh`: run as root by the install container only, and it may hold the operator's
/// secrets (a download token): root's alone.
const INSTALL_MODE: u32 = 0o700;
/// `entrypoint.sh`: read by `/bin/sh` running as the server's user, whose group may read it
/// (the startup command in it may hold a password); nobody else on the host may.
const ENTRYPOINT_MODE: u32 = 0o640;

/// The data directory of container `id`.
pub fn data_dir(sups: &Supervisors, id: &str) -> PathBuf {
    sups.config.storage.data_path.join(id)
}

/// The group of the user `rec` runs as (root's for one that cannot be read, which `check_create`
/// never lets on record).
fn group(rec: &ContainerRecord) -> u32 {
    crate::model::parse_user(&rec.user).map_or(0, |(_, gid)| gid)
}

/// Makes (or takes over) the data directory of `rec`, root's in the server's group, mode
/// 0750, and writes `install.sh` into it when there is a script.
pub fn prepare(sups: &Supervisors, rec: &ContainerRecord) -> io::Result<PathBuf> {
    let dir = data_dir(sups, &rec.internal_id);
    fs::create_dir_all(&dir)?;
    // Through a descriptor of the directory itself, never through a symlink in its place.
    let handle = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(&dir)?;
    fchown(&handle, Some(0), Some(group(rec)))?;
    handle.set_permissions(fs::Permissions::from_mode(DIR_MODE))?;
    if let Some(script) = &rec.install_script {
        write(&dir.join("install.sh"), script, INSTALL_MODE, 0)?;
    }
    Ok(dir)
}

/// Writes `entrypoint.sh` into the data directory `dir` of `rec`.
pub fn write_entrypoint(dir: &Path, rec: &ContainerRecord, text: &str) -> io::Result<()> {
    write(&dir.join("entrypoint.sh"), text, ENTRYPOINT_MODE, group(rec))
}

/// Replaces `path` with `text`, owned by root and `gid`, with `mode`: a fresh temp sibling
/// (never through a planted file or link) gets owner and mode before any byte, then is
/// renamed over `path`, so a crash leaves the old script or the new one, never half of one.
fn write(path: &Path, text: &str, mode: u32, gid: u32) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let tmp = path.with_file_name(name);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        let mut f: File =
            OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).mode(mode).open(&tmp)?;
        fchown(&f, Some(0), Some(gid))?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn scripts_get_their_own_owner_and_mode() {
        let dir = std::env::temp_dir().join(format!("lightd-datadir-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("entrypoint.sh");
        // A link planted where the temp file goes is replaced, never written through.
        std::os::unix::fs::symlink("/nonexistent-target", dir.join("entrypoint.sh.new")).unwrap();
        write(&path, "echo one\n", ENTRYPOINT_MODE, 1000).expect("runs as root, as CI does");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o640, 0, 1000));
        assert_eq!(fs::read_to_string(&path).unwrap(), "echo one\n");
        write(&path, "echo two\n", INSTALL_MODE, 0).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o700, 0));
        assert_eq!(fs::read_to_string(&path).unwrap(), "echo two\n");
        assert!(!Path::new("/nonexistent-target").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
