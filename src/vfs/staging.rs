//! Extraction's staging directory: the archive is written into a temp directory at the volume
//! root, and only once all of it is there is it moved into the destination, name by name,
//! each a rename on the same file system. Dropped before that (cancelled, failed, past its
//! deadline), the temp directory and everything in it is removed and the destination is as
//! it was: no half-written file, and no whole one either.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, Stat};
use rustix::io::Errno;

use super::resolve::{DIR, DIR_NOFOLLOW};
use super::upload::Staged;
use super::walk::{walk, Visitor};
use super::{FsError, Root};

/// The mark of a directory the archive listed itself (its mode is applied when moved in); a
/// directory made only to hold entries has none. Cleared when moved in.
pub(crate) const LISTED: u32 = 0o1000;

/// A temp directory (`.lightd-tmp-<random>`, 0700, root's) at the volume root, removed with all
/// it holds when dropped.
pub(crate) struct Staging {
    staged: Staged,
    fd: OwnedFd,
}

impl Staging {
    pub(crate) fn new(root: &Root) -> Result<Staging, FsError> {
        let top = rustix::fs::openat(root.fd(), ".", DIR, Mode::empty())?;
        let staged = Staged::new(root, top)?;
        rustix::fs::mkdirat(staged.dir(), staged.tmp(), Mode::from_raw_mode(0o700))?;
        let fd = rustix::fs::openat(staged.dir(), staged.tmp(), DIR_NOFOLLOW, Mode::empty())?;
        Ok(Staging { staged, fd })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Moves every name staged into `dest`: directories are made there (or found, never
    /// through a symlink), everything else is renamed over the name `dest` has. Not cancelled
    /// half-way: renames are quick, and a stop here would leave a half-moved tree.
    pub(crate) fn move_into(self, root: &Root, dest: OwnedFd) -> Result<(), FsError> {
        let mut mover = Mover { root, dirs: vec![dest], path: Vec::new() };
        walk(root.dev, self.fd.try_clone()?, &mut mover)?;
        drop(self.staged);
        Ok(())
    }
}

/// The walk's visitor: the destination directory matching each staged one, and the path there.
struct Mover<'r> {
    root: &'r Root,
    dirs: Vec<OwnedFd>,
    path: Vec<String>,
}

impl Mover<'_> {
    fn here(&self) -> Result<BorrowedFd<'_>, FsError> {
        self.dirs.last().map(AsFd::as_fd).ok_or_else(|| FsError::Invalid("no destination directory".into()))
    }

    fn shown(&self, name: &CStr) -> String {
        let mut path = self.path.join("/");
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&name.to_string_lossy());
        path
    }
}

impl Visitor for Mover<'_> {
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, _: &Stat) -> Result<(), FsError> {
        match rustix::fs::renameat(dir, name, self.here()?, name) {
            Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => Err(FsError::BadEntry(format!(
                "Archive entry {:?} would replace a directory in the volume",
                self.shown(name)
            ))),
            done => Ok(done?),
        }
    }

    fn enter(&mut self, _: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> Result<bool, FsError> {
        let here = self.here()?;
        let made = match rustix::fs::mkdirat(here, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(e.into()),
        };
        if made {
            self.root.adopt(here, name)?;
        }
        let sub = match rustix::fs::openat(here, name, DIR_NOFOLLOW, Mode::empty()) {
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(FsError::BadEntry(format!(
                    "Archive entry {:?} needs a directory where the volume now has a file or symlink",
                    self.shown(name)
                )))
            }
            opened => opened?,
        };
        if rustix::fs::fstat(&sub)?.st_dev != self.root.dev {
            return Err(FsError::Escapes);
        }
        if stat.st_mode & LISTED != 0 {
            rustix::fs::fchmod(&sub, Mode::from_raw_mode(stat.st_mode & 0o777))?;
        }
        self.path.push(name.to_string_lossy().into_owned());
        self.dirs.push(sub);
        Ok(true)
    }

    fn leave(&mut self, _: BorrowedFd<'_>, _: &CStr) -> Result<(), FsError> {
        self.path.pop();
        self.dirs.pop();
        Ok(())
    }
}
