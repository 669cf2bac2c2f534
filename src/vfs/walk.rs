//! Fd-relative tree walks that never follow a symlink and never leave the volume's file system;
//! and the removal of a tree, the simplest walk.

use std::ffi::CStr;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Dir, FileType, Mode, Stat};
use rustix::io::Errno;

use super::resolve::DIR_NOFOLLOW;
use super::FsError;

/// Deeper trees are refused: each level holds an fd and a buffer, and a server could nest
/// directories without end to exhaust them.
pub(crate) const MAX_DEPTH: usize = 256;

/// What a walk does at each name. The walk opens directories itself; a visitor only sees the
/// directory fd holding a name and the name, and acts with `*at` calls that do not follow it.
pub(crate) trait Visitor {
    /// A name that is not a directory (file, symlink, fifo, ...), with its lstat.
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> Result<(), FsError>;

    /// A directory about to be walked, with the fstat of the directory actually opened;
    /// `false` skips it (and then there is no `leave`).
    fn enter(&mut self, _dir: BorrowedFd<'_>, _name: &CStr, _stat: &Stat) -> Result<bool, FsError> {
        Ok(true)
    }

    /// A directory whose walk is over.
    fn leave(&mut self, _dir: BorrowedFd<'_>, _name: &CStr) -> Result<(), FsError> {
        Ok(())
    }
}

/// Walks directory `dir` depth first, staying on file system `dev` (the volume root's). Each
/// subdirectory is opened from its parent's fd with `O_NOFOLLOW|O_DIRECTORY`: one swapped for a
/// symlink since we listed it is skipped, never entered; one on another file system is skipped.
pub(crate) fn walk(dev: u64, dir: OwnedFd, visitor: &mut dyn Visitor) -> Result<(), FsError> {
    if rustix::fs::fstat(&dir)?.st_dev != dev {
        return Err(FsError::Escapes);
    }
    walk_at(dev, dir, visitor, 0)
}

fn walk_at(dev: u64, dir: OwnedFd, visitor: &mut dyn Visitor, depth: usize) -> Result<(), FsError> {
    if depth >= MAX_DEPTH {
        return Err(FsError::Invalid(format!("Directory tree deeper than {MAX_DEPTH} levels")));
    }
    let mut names = Dir::new(dir)?;
    while let Some(entry) = names.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let fd = names.fd()?;
        let stat = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
            visitor.entry(fd, name, &stat)?;
            continue;
        }
        let sub = match rustix::fs::openat(fd, name, DIR_NOFOLLOW, Mode::empty()) {
            Ok(sub) => sub,
            // Gone, or no longer a directory since the lstat: not entered.
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&sub)?;
        if stat.st_dev != dev {
            continue;
        }
        if visitor.enter(fd, name, &stat)? {
            walk_at(dev, sub, visitor, depth + 1)?;
            visitor.leave(fd, name)?;
        }
    }
    Ok(())
}

/// A step on a name that may have vanished meanwhile: gone is as good as done.
pub(crate) fn unless_gone(result: rustix::io::Result<()>) -> Result<(), FsError> {
    match result {
        Err(Errno::NOENT) => Ok(()),
        other => Ok(other?),
    }
}

/// Removes `name` in `dir`: a file, symlink (itself, never its target) or fifo, or a whole tree.
pub(crate) fn remove(dev: u64, dir: BorrowedFd<'_>, name: &str) -> Result<(), FsError> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Err(Errno::ISDIR) => {}
        done => return Ok(done?),
    }
    let sub = rustix::fs::openat(dir, name, DIR_NOFOLLOW, Mode::empty())?;
    walk(dev, sub, &mut Remover)?;
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Empties a tree bottom up.
struct Remover;

impl Visitor for Remover {
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, _: &Stat) -> Result<(), FsError> {
        unless_gone(rustix::fs::unlinkat(dir, name, AtFlags::empty()))
    }

    fn leave(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> Result<(), FsError> {
        unless_gone(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR))
    }
}
