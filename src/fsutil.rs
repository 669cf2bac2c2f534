//! Crash-safe file writes: a fresh temp file, fsync, rename, fsync of the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Marker between a file's name and the random part of its temp siblings.
const TEMP_MARK: &str = ".tmp-";

/// A new, unique temp sibling name for `path` (`state.json.tmp-1a2b3c4d5e6f7a8b`).
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(TEMP_MARK);
    name.push(hex(&random_bytes::<8>()?));
    Ok(path.with_file_name(name))
}

/// Removes temp siblings of `path` left by a crash mid-write; returns how many went.
pub fn remove_stale_temps(path: &Path) -> io::Result<usize> {
    let dir = parent(path);
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return Ok(0) };
    let prefix = format!("{name}{TEMP_MARK}");
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
            // remove_file never follows a symlink: a planted link only loses itself.
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` so that a crash at any instant leaves either the old or the
/// new content, never a mix. The temp file is created new (`O_EXCL|O_NOFOLLOW`: a planted
/// file or symlink is never written through) and gets `mode` before any byte is written.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path);
    fs::create_dir_all(dir)?;
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut f =
            OpenOptions::new().write(true).create_new(true).custom_flags(libc_o_nofollow()).mode(mode).open(&tmp)?;
        // The umask may have narrowed `mode`, and it must be exact before the content lands.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    File::open(dir)?.sync_all()
}

/// `O_NOFOLLOW` (0o400000 on every Linux architecture lightd builds for).
const fn libc_o_nofollow() -> i32 {
    0o400000
}

/// `n` bytes from the kernel's CSPRNG.
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    use std::io::Read;
    let mut buf = [0u8; N];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lightd-fsutil-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = dir("replace");
        let p = d.join("x.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1, "no temp left");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn planted_temps_are_never_written_through_and_are_cleaned() {
        let d = dir("planted");
        let p = d.join("state.json");
        let target = d.join("target");
        fs::write(&target, b"keep").unwrap();
        // Every name a temp could take cannot be planted, but stale ones of the old fixed
        // name and of the pattern can: they are removed at boot, never followed.
        std::os::unix::fs::symlink(&target, d.join("state.json.tmp-0000")).unwrap();
        fs::write(d.join("state.json.tmp-1111"), b"token").unwrap();
        assert_eq!(remove_stale_temps(&p).unwrap(), 2);
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        write_atomic(&p, b"{}", 0o600).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        fs::remove_dir_all(d).unwrap();
    }
}
