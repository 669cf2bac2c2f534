//! What a transfer between nodes needs from a volume, fd-relative like everything here: the
//! tree as a list of names (files, directories, symlinks; fifos and devices left out), a file
//! opened for writing chunks in place, a symlink placed, a file's mode and time set.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, Mode, OFlags, Stat, Timespec, Timestamps};

use super::entry::Kind;
use super::path::RelPath;
use super::resolve::CONFINED;
use super::walk::{walk, Visitor};
use super::{FsError, Root};

/// One name of a tree as a transfer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Relative to the root, `/`-separated, no leading `/`.
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Last modification, unix seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Inode and change time: a file whose size, mtime, inode and ctime are unchanged is taken
    /// as unchanged (what a rescan trusts).
    pub stamp: (u64, i64, i64),
    /// A symlink's target text.
    pub target: Option<String>,
}

impl Root {
    /// Every file, directory and symlink under the root, parents before children; names that
    /// are not UTF-8 are refused (a transfer could not name them).
    pub fn nodes(&self) -> Result<Vec<Node>, FsError> {
        struct Lister {
            stack: Vec<String>,
            out: Vec<Node>,
        }
        impl Lister {
            fn path(&self, name: &CStr) -> Result<String, FsError> {
                let name = name
                    .to_str()
                    .map_err(|_| FsError::Invalid(format!("a name under {:?} is not UTF-8", self.stack.join("/"))))?;
                Ok(match self.stack.last() {
                    Some(p) => format!("{p}/{name}"),
                    None => name.to_owned(),
                })
            }
            fn push(&mut self, path: String, stat: &Stat, target: Option<String>) {
                self.out.push(Node {
                    path,
                    kind: Kind::of(stat),
                    size: u64::try_from(stat.st_size).unwrap_or(0),
                    mode: stat.st_mode & 0o7777,
                    mtime: (stat.st_mtime, u32::try_from(stat.st_mtime_nsec).unwrap_or(0)),
                    stamp: (stat.st_ino, stat.st_ctime, i64::from(stat.st_ctime_nsec as i32)),
                    target,
                });
            }
        }
        impl Visitor for Lister {
            fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> Result<(), FsError> {
                let target = match Kind::of(stat) {
                    Kind::File => None,
                    Kind::Symlink => {
                        let t = rustix::fs::readlinkat(dir, name, Vec::new())?;
                        Some(
                            t.to_str()
                                .map_err(|_| FsError::Invalid("a symlink target is not UTF-8".into()))?
                                .to_owned(),
                        )
                    }
                    _ => return Ok(()),
                };
                let path = self.path(name)?;
                self.push(path, stat, target);
                Ok(())
            }

            fn enter(&mut self, _: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> Result<bool, FsError> {
                let path = self.path(name)?;
                self.push(path.clone(), stat, None);
                self.stack.push(path);
                Ok(true)
            }

            fn leave(&mut self, _: BorrowedFd<'_>, _: &CStr) -> Result<(), FsError> {
                self.stack.pop();
                Ok(())
            }
        }
        let mut lister = Lister { stack: Vec::new(), out: Vec::new() };
        walk(self.dev, self.dir(&RelPath::root())?, &mut lister)?;
        Ok(lister.out)
    }

    /// Opens regular file `rel` for writing in place, made (with its parents) when missing;
    /// a symlink or anything else at the final name is refused, never followed.
    pub fn open_in_place(&self, rel: &str) -> Result<File, FsError> {
        let path = RelPath::parse(rel)?;
        let (parent, name) = path.split_last().ok_or(FsError::IsADirectory)?;
        let dir = self.make_dirs(self.fd(), &parent, CONFINED)?;
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = rustix::fs::openat(&dir, name, flags, Mode::from_raw_mode(0o644))?;
        let stat = rustix::fs::fstat(&fd)?;
        if Kind::of(&stat) != Kind::File {
            return Err(FsError::Invalid(format!("{rel} is not a regular file")));
        }
        if self.owner.is_some_and(|(uid, gid)| stat.st_uid != uid.as_raw() || stat.st_gid != gid.as_raw()) {
            self.adopt(dir.as_fd(), name)?;
        }
        Ok(File::from(fd))
    }

    /// Makes directory `rel` and its parents when missing.
    pub fn make_dir_all(&self, rel: &str) -> Result<(), FsError> {
        self.make_dirs(self.fd(), &RelPath::parse(rel)?, CONFINED).map(drop)
    }

    /// Makes `rel` a symlink to `target` (anything at that name replaced first).
    pub fn place_symlink(&self, rel: &str, target: &str) -> Result<(), FsError> {
        let path = RelPath::parse(rel)?;
        let (parent, name) = path.split_last().ok_or(FsError::IsADirectory)?;
        let dir = self.make_dirs(self.fd(), &parent, CONFINED)?;
        super::walk::remove(self.dev, dir.as_fd(), name).or_else(|e| match e {
            FsError::NotFound => Ok(()),
            e => Err(e),
        })?;
        rustix::fs::symlinkat(target, &dir, name)?;
        if let Some((uid, gid)) = self.owner {
            rustix::fs::chownat(&dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }

    /// Sets the permission bits and modification time of `rel` itself (a symlink's time only).
    pub fn set_meta(&self, rel: &str, mode: Option<u32>, mtime: (i64, u32)) -> Result<(), FsError> {
        let path = RelPath::parse(rel)?;
        let (dir, name) = match path.split_last() {
            Some((parent, name)) => (self.dir(&parent)?, name),
            None => (self.dir(&RelPath::root())?, "."),
        };
        if let Some(mode) = mode {
            rustix::fs::chmodat(&dir, name, Mode::from_raw_mode(mode & 0o7777), AtFlags::empty())?;
        }
        let time = Timespec { tv_sec: mtime.0, tv_nsec: mtime.1.into() };
        let omit = Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT };
        let times = Timestamps { last_access: omit, last_modification: time };
        rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::super::testbed::Bed;
    use super::*;

    /// The tree lists files, directories and symlinks (never followed) with paths relative to
    /// the root; what a transfer writes stays inside the volume.
    #[test]
    fn nodes_and_writes_stay_in_the_volume() {
        let bed = Bed::new("mirror");
        let root = &bed.root;
        let mut f = root.open_in_place("world/region/r.0.0").unwrap();
        f.write_all(b"chunk").unwrap();
        root.place_symlink("link", "/etc/passwd").unwrap();
        root.set_meta("world/region/r.0.0", Some(0o600), (1_000_000, 5)).unwrap();
        let nodes = root.nodes().unwrap();
        let find = |p: &str| nodes.iter().find(|n| n.path == p).unwrap_or_else(|| panic!("{p} in {nodes:?}"));
        assert_eq!(find("world").kind, Kind::Dir);
        let file = find("world/region/r.0.0");
        assert_eq!((file.kind, file.size, file.mode, file.mtime), (Kind::File, 5, 0o600, (1_000_000, 5)));
        assert_eq!(find("link").target.as_deref(), Some("/etc/passwd"));
        let parents_first = nodes.iter().position(|n| n.path == "world").unwrap()
            < nodes.iter().position(|n| n.path == "world/region").unwrap();
        assert!(parents_first);
        // Through a symlink planted out of the volume: refused, never followed.
        assert!(root.open_in_place("out_abs/x").is_err());
        assert!(root.open_in_place("data/out/x").is_err());
        assert!(root.open_in_place("link").is_err(), "a symlink at the final name is not opened");
        assert!(matches!(root.open_in_place("../x"), Err(FsError::Escapes)));
        let mut back = String::new();
        root.open_read("world/region/r.0.0").unwrap().0.read_to_string(&mut back).unwrap();
        assert_eq!(back, "chunk");
    }
}
