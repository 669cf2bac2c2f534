//! The host disk's side of loop volumes (`volumes.overcommit: false`, the default): images are
//! sparse, so each is a promise of space the host's file system has not set aside. A new image,
//! or a grown one, is refused when the images could then not all fill up to their size with
//! what the disk has free: a full host disk would otherwise fail the writes of whichever volume
//! happens to write next (`errors=remount-ro`: a neighbour's volume turns read-only).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{failed, sys, Kind, QuotaError};

/// Held from an image's new size to its check, so two creates cannot both take the last of
/// the room.
static LOCK: Mutex<()> = Mutex::new(());

/// What the images in `images_dir` may still claim from the disk: their sizes less what they
/// already hold (a trimmed image, sparse again, claims more, never less than its size).
fn promised(images_dir: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    for entry in fs::read_dir(images_dir)? {
        // The entry's own metadata: a symlink counts as nothing, never as what it points at.
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total = total.saturating_add(meta.len().saturating_sub(meta.blocks().saturating_mul(512)));
        }
    }
    Ok(total)
}

/// Taken before an image is made or grown and held until its size is checked (and, if
/// refused, put back).
pub fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`Kind::NoRoom`] when the images in `images_dir` (one just made or grown among them, with
/// its new size already set) could not all fill up with what their disk has free. Checked
/// after the size is set, so a size no file may have is refused as too large first.
pub fn check(images_dir: &Path) -> Result<(), QuotaError> {
    let promised = promised(images_dir).map_err(|e| failed("check room", images_dir, e))?;
    let s = sys::statvfs(images_dir).map_err(|e| failed("check room", images_dir, e))?;
    let free = (s.f_bavail as u64).saturating_mul(s.f_frsize as u64);
    if promised > free {
        let why = format!(
            "the disk has {} free, and the volume images, this one included, could still claim {} of it",
            crate::volumes::human(free),
            crate::volumes::human(promised)
        );
        return Err(QuotaError::new(Kind::NoRoom, "check room", images_dir, why));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn sparse_images_promise_their_unwritten_part() {
        let dir = std::env::temp_dir().join(format!("lightd-room-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let sparse = File::create(dir.join("a.ext4")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        fs::write(dir.join("b.ext4"), vec![1u8; 1 << 20]).unwrap();
        std::os::unix::fs::symlink(dir.join("a.ext4"), dir.join("link.ext4")).unwrap();
        let p = promised(&dir).unwrap();
        assert_eq!(p, 64 << 20, "the sparse one promises all of it, the written one nothing, the link nothing");
        check(&dir).unwrap();
        sparse.set_len(8 << 40).unwrap(); // more than this disk has, less than ext4 lets a file be
        let e = check(&dir).unwrap_err();
        assert_eq!(e.kind, Kind::NoRoom);
        assert!(e.cause.contains("8.0 TiB"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
