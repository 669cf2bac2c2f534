//! Copying a file, symlink or whole tree inside a volume.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags, Stat};

use super::entry::Kind;
use super::path::RelPath;
use super::resolve::{handle, open_regular, DIR_NOFOLLOW};
use super::upload::Staged;
use super::walk::{walk, Visitor};
use super::{FsError, Root};

impl Root {
    /// Copies `from` to `to`: a file, a symlink (as a symlink, never followed) or a whole tree
    /// (fifos, sockets and devices in it left out). `Exists` when `to` exists and `!overwrite`.
    /// The copy is built under a temp name beside `to` and renamed into place when complete.
    pub fn copy(&self, from: &str, to: &str, overwrite: bool) -> Result<(), FsError> {
        let (from, to) = (RelPath::parse(from)?, RelPath::parse(to)?);
        let (from_dir, from_name) = self.parent(&from)?;
        let (to_dir, to_name) = self.parent(&to)?;
        let stat = rustix::fs::statat(&from_dir, from_name, AtFlags::SYMLINK_NOFOLLOW)?;
        if !overwrite && rustix::fs::statat(&to_dir, to_name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            return Err(FsError::Exists);
        }
        let staged = Staged::new(self, to_dir)?;
        if Kind::of(&stat) == Kind::Dir {
            let source = rustix::fs::openat(&from_dir, from_name, DIR_NOFOLLOW, Mode::empty())?;
            let copy = self.mkdir_at(staged.dir(), staged.tmp(), &stat)?;
            // The copy may be inside the source (`a` to `a/b`): its own directory is not copied.
            let made = rustix::fs::fstat(&copy)?;
            let mut copier =
                Copier { root: self, current: copy, parents: Vec::new(), skip: (made.st_dev, made.st_ino) };
            walk(self.dev, source, &mut copier)?;
        } else if !self.copy_one(from_dir.as_fd(), from_name, &stat, staged.dir(), staged.tmp())? {
            return Err(FsError::Invalid("Only files, directories and symlinks can be copied".into()));
        }
        staged.publish(to_name, overwrite)?;
        Ok(())
    }

    /// Makes directory `name` in `dir` with the permission bits of `like`, adopted, and opens it.
    fn mkdir_at<P: rustix::path::Arg + Copy>(
        &self,
        dir: BorrowedFd<'_>,
        name: P,
        like: &Stat,
    ) -> Result<OwnedFd, FsError> {
        rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(like.st_mode & 0o777))?;
        self.adopt(dir, name)?;
        Ok(rustix::fs::openat(dir, name, DIR_NOFOLLOW, Mode::empty())?)
    }

    /// Copies a file or symlink `name` in `dir` to `to` in `to_dir`; `false` for anything else.
    fn copy_one<P, Q>(
        &self,
        dir: BorrowedFd<'_>,
        name: P,
        stat: &Stat,
        to_dir: BorrowedFd<'_>,
        to: Q,
    ) -> Result<bool, FsError>
    where
        P: rustix::path::Arg + Copy,
        Q: rustix::path::Arg + Copy,
    {
        match Kind::of(stat) {
            Kind::File => {
                let (mut source, stat) = open_regular(handle(dir, name)?)?;
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(to_dir, to, flags, Mode::from_raw_mode(stat.st_mode & 0o777))?;
                self.adopt(to_dir, to)?;
                io::copy(&mut source, &mut File::from(fd))?;
            }
            Kind::Symlink => {
                let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
                rustix::fs::symlinkat(&target, to_dir, to)?;
                self.adopt(to_dir, to)?;
            }
            Kind::Dir | Kind::Other => return Ok(false),
        }
        Ok(true)
    }
}

/// Mirrors a walked tree into the directory being built, one level per directory entered.
struct Copier<'r> {
    root: &'r Root,
    current: OwnedFd,
    parents: Vec<OwnedFd>,
    /// Device and inode of the copy's own top directory.
    skip: (u64, u64),
}

impl Visitor for Copier<'_> {
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> Result<(), FsError> {
        self.root.copy_one(dir, name, stat, self.current.as_fd(), name).map(drop)
    }

    fn enter(&mut self, _: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> Result<bool, FsError> {
        if (stat.st_dev, stat.st_ino) == self.skip {
            return Ok(false);
        }
        let made = self.root.mkdir_at(self.current.as_fd(), name, stat)?;
        self.parents.push(mem::replace(&mut self.current, made));
        Ok(true)
    }

    fn leave(&mut self, _: BorrowedFd<'_>, _: &CStr) -> Result<(), FsError> {
        if let Some(parent) = self.parents.pop() {
            self.current = parent;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::vfs::testbed::{snapshot, Bed, TRAPS};

    #[test]
    fn trees_are_copied_with_links_as_links() {
        let bed = Bed::new("copy");
        fs::set_permissions(bed.path("data/nested/deep.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            bed.path("data/fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        bed.root.copy("data", "copy", false).unwrap();
        let mut want = snapshot(&bed.path("data"));
        want.remove(std::path::Path::new("fifo"));
        assert_eq!(snapshot(&bed.path("copy")), want);
        assert_eq!(fs::read_link(bed.path("copy/secret")).unwrap(), std::path::Path::new("../../outside/marker"));
        bed.assert_outside_untouched();
    }

    #[test]
    fn links_are_copied_never_followed() {
        let bed = Bed::new("copylinks");
        for (i, trap) in TRAPS.iter().enumerate() {
            bed.root.copy(trap, &format!("c{i}"), false).unwrap();
            assert_eq!(fs::read_link(bed.path(&format!("c{i}"))).unwrap(), fs::read_link(bed.path(trap)).unwrap());
            for through in ["marker", "sub", "passwd"] {
                let _ = bed.root.copy(&format!("{trap}/{through}"), &format!("d{i}{through}"), false);
                let _ = bed.root.copy("data/file.txt", &format!("{trap}/{through}"), true);
            }
        }
        assert!(snapshot(&bed.path("")).values().all(|(_, _, _, content)| content != crate::vfs::testbed::SECRET));
        bed.assert_outside_untouched();
    }

    #[test]
    fn copy_into_itself_ends_and_overwrite_is_asked_for() {
        let bed = Bed::new("copyself");
        bed.root.copy("data", "data/nested/again", false).unwrap();
        assert_eq!(fs::read(bed.path("data/nested/again/file.txt")).unwrap(), b"hello");
        assert!(bed.path("data/nested/again/nested/deep.txt").exists());
        assert!(!bed.path("data/nested/again/nested/again").exists());
        assert!(matches!(bed.root.copy("data/file.txt", "data/nested/deep.txt", false), Err(FsError::Exists)));
        bed.root.copy("data/file.txt", "data/nested/deep.txt", true).unwrap();
        assert_eq!(fs::read(bed.path("data/nested/deep.txt")).unwrap(), b"hello");
        assert!(matches!(bed.root.copy("fifo", "fifo2", false), Err(FsError::Invalid(_))));
        assert!(matches!(bed.root.copy("missing", "x", false), Err(FsError::NotFound)));
        assert!(matches!(bed.root.copy("", "x", false), Err(FsError::Invalid(_))));
        let names: Vec<String> = bed.root.list("data/nested").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["again", "deep.txt"], "a temp name was left behind");
    }
}
