//! Names under construction: made under a temp name, renamed over the real one when complete.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};

use super::resolve::place;
use super::walk::remove;
use super::{FsError, Root};

/// Prefix of the temp names this layer makes in a volume.
pub(crate) const TEMP_PREFIX: &str = ".lightd-tmp-";

/// A temp name (`.lightd-tmp-<random>`) in a directory that becomes a real name only through
/// [`Staged::publish`]; dropped before that, whatever was made under it is removed. Nobody ever
/// sees half a file or half a copied tree under the real name.
pub(crate) struct Staged {
    dev: u64,
    dir: OwnedFd,
    tmp: String,
    published: bool,
}

impl Staged {
    /// A fresh temp name in `dir`; nothing is created yet.
    pub(crate) fn new(root: &Root, dir: OwnedFd) -> Result<Staged, FsError> {
        let random: [u8; 8] = crate::fsutil::random_bytes()?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Staged { dev: root.dev, dir, tmp: format!("{TEMP_PREFIX}{hex}"), published: false })
    }

    pub(crate) fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    pub(crate) fn tmp(&self) -> &str {
        &self.tmp
    }

    /// Renames the temp name to `name` in the same directory (see [`place`]); tells whether
    /// `name` is new.
    pub(crate) fn publish(mut self, name: &str, overwrite: bool) -> Result<bool, FsError> {
        let created = place(self.dir(), &self.tmp, self.dir(), name, overwrite)?;
        self.published = true;
        Ok(created)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.published {
            // Best effort: there is no one to report to; a failure leaves the temp name behind.
            let _ = remove(self.dev, self.dir.as_fd(), &self.tmp);
        }
    }
}

/// A file being written into a volume (the content route, extraction): the bytes go to a temp
/// sibling of the final name, which only [`Upload::commit`] renames over it. Dropped without a
/// commit, the temp file is removed and the old file, if any, is untouched.
pub struct Upload {
    staged: Staged,
    file: File,
    name: String,
}

/// What a committed upload did: its size, and whether the name is new (201) or was replaced (200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub created: bool,
}

impl Upload {
    /// Creates the temp file (0644, `O_EXCL|O_NOFOLLOW`) in `dir`, for `name` there.
    pub(crate) fn create(root: &Root, dir: OwnedFd, name: &str) -> Result<Upload, FsError> {
        let staged = Staged::new(root, dir)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(staged.dir(), staged.tmp(), flags, Mode::from_raw_mode(0o644))?;
        if let Some((uid, gid)) = root.owner {
            rustix::fs::fchown(&fd, Some(uid), Some(gid))?;
        }
        Ok(Upload { staged, file: File::from(fd), name: name.to_owned() })
    }

    /// Where the content goes. Map a write error with `FsError::from` to see `NoSpace`.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Renames the written file over the final name (a symlink there is replaced, not followed).
    pub fn commit(self) -> Result<Written, FsError> {
        let bytes = self.file.metadata()?.len();
        let created = self.staged.publish(&self.name, true)?;
        Ok(Written { bytes, created })
    }
}
