//! Resolution beneath a root with `openat2(2)`, and the fd-level steps every operation is made of.
//!
//! Two ways to resolve: [`CONFINED`] for the files API (symlinks followed, but `..` and absolute
//! links stop at the volume root) and [`STRICT`] for archive extraction (no symlink at all).
//! Operations on a final name resolve only its parent ([`Root::parent`]) and then act on the
//! name with `*at` calls that never follow it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{FileType, Mode, OFlags, RenameFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use super::path::RelPath;
use super::{FsError, Root};

/// The files API: symlinks followed only inside the volume, never through /proc magic links or
/// onto another mount.
pub(crate) const CONFINED: ResolveFlags =
    ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS).union(ResolveFlags::NO_XDEV);

/// Archive extraction: no symlink on the way, nothing above the base directory.
pub(crate) const STRICT: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Flags to open a directory we will read or create in.
pub(crate) const DIR: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

/// [`DIR`] for a name in a walk: a symlink there is never entered.
pub(crate) const DIR_NOFOLLOW: OFlags = DIR.union(OFlags::NOFOLLOW);

/// `openat2` with the raw errno. EAGAIN is retried: the kernel returns it when a rename elsewhere
/// raced a `..` step, which a server can provoke at will.
pub(crate) fn openat2_raw(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    how: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut retries = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, Mode::empty(), how) {
            Err(Errno::AGAIN) if retries < 100 => retries += 1,
            result => return result,
        }
    }
}

/// `openat2` with errors in this layer's terms.
pub(crate) fn openat2(dir: BorrowedFd<'_>, path: &str, flags: OFlags, how: ResolveFlags) -> Result<OwnedFd, FsError> {
    openat2_raw(dir, path, flags, how).map_err(resolve_error)
}

/// An `openat2` errno as this layer's error; a kernel without `openat2` is named as the cause.
pub(crate) fn resolve_error(e: Errno) -> FsError {
    match e {
        Errno::NOSYS => FsError::Io(io::Error::new(
            io::ErrorKind::Unsupported,
            "openat2(2) is not available: lightd's files API needs Linux >= 5.6",
        )),
        e => e.into(),
    }
}

impl Root {
    /// Opens `path` with `flags`, following symlinks only inside the volume.
    pub(crate) fn open_in(&self, path: &RelPath, flags: OFlags) -> Result<OwnedFd, FsError> {
        openat2(self.fd(), path.as_str(), flags, CONFINED)
    }

    /// Opens directory `path` for reading.
    pub(crate) fn dir(&self, path: &RelPath) -> Result<OwnedFd, FsError> {
        self.open_in(path, DIR)
    }

    /// The directory holding `path`'s final name, opened, and that name, which is not resolved:
    /// the caller acts on a symlink there, never on its target. The root has no name to act on.
    pub(crate) fn parent<'p>(&self, path: &'p RelPath) -> Result<(OwnedFd, &'p str), FsError> {
        let (parent, name) =
            path.split_last().ok_or_else(|| FsError::Invalid("Not possible on the volume root itself".into()))?;
        Ok((self.dir(&parent)?, name))
    }

    /// Opens directory `path` beneath `base`, making each missing one on the way (0755, adopted).
    /// Every step is resolved again from `base` the `how` way, so a component swapped for a
    /// symlink is followed only as `how` allows; `mkdirat` itself never follows one.
    pub(crate) fn make_dirs(
        &self,
        base: BorrowedFd<'_>,
        path: &RelPath,
        how: ResolveFlags,
    ) -> Result<OwnedFd, FsError> {
        match openat2(base, path.as_str(), DIR, how) {
            Err(FsError::NotFound) => {}
            done => return done,
        }
        let mut dir = openat2(base, ".", DIR, how)?;
        for (prefix, name) in path.prefixes() {
            dir = match openat2(base, prefix, DIR, how) {
                Err(FsError::NotFound) => {
                    match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) => self.adopt(dir.as_fd(), name)?,
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    openat2(base, prefix, DIR, how)?
                }
                found => found?,
            };
        }
        Ok(dir)
    }
}

/// An `O_PATH` handle on `name` in `dir` itself (a symlink is not followed). Nothing is opened
/// for I/O, so a fifo or device node there has no effect.
pub(crate) fn handle<P: rustix::path::Arg>(dir: BorrowedFd<'_>, name: P) -> Result<OwnedFd, FsError> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// The path through which the kernel reaches exactly the inode `fd` refers to.
pub(crate) fn proc_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens for reading what an `O_PATH` handle refers to, only if it is a regular file. The type is
/// checked on the handle, then the same inode is reopened through /proc: a fifo can never block
/// us and a device node is never opened at all.
pub(crate) fn open_regular(handle: OwnedFd) -> Result<(File, Stat), FsError> {
    let stat = rustix::fs::fstat(&handle)?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => {}
        FileType::Directory => return Err(FsError::IsADirectory),
        _ => return Err(FsError::Invalid("Not a regular file".into())),
    }
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(proc_path(handle.as_fd()), flags, Mode::empty())?;
    Ok((File::from(fd), stat))
}

/// Renames `from` in `from_dir` to `to` in `to_dir`; an existing `to` is replaced only when
/// `overwrite`. Neither name is followed. Tells whether `to` is new.
pub(crate) fn place(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
    overwrite: bool,
) -> Result<bool, FsError> {
    match rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) if overwrite => {
            rustix::fs::renameat(from_dir, from, to_dir, to)?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
