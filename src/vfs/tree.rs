//! Operations on a volume's whole tree: its usage, and handing it to the server's user.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use rustix::fs::{AtFlags, Gid, Stat, Uid};

use super::entry::Kind;
use super::path::RelPath;
use super::walk::{unless_gone, walk, Visitor};
use super::{ids, FsError, Root};

impl Root {
    /// Bytes of regular files in the volume: symlinks not followed, other file systems not entered.
    pub fn usage(&self) -> Result<u64, FsError> {
        /// Sums the bytes of regular files.
        struct Usage(u64);
        impl Visitor for Usage {
            fn entry(&mut self, _: BorrowedFd<'_>, _: &CStr, stat: &Stat) -> Result<(), FsError> {
                if Kind::of(stat) == Kind::File {
                    self.0 += u64::try_from(stat.st_size).unwrap_or(0);
                }
                Ok(())
            }
        }
        let mut usage = Usage(0);
        walk(self.dev, self.dir(&RelPath::root())?, &mut usage)?;
        Ok(usage.0)
    }

    /// Gives the whole volume, the root included, to `uid:gid` (after an install script ran as
    /// root for a server that does not). Each name is changed itself, never a symlink's target.
    pub fn chown_tree(&self, uid: u32, gid: u32) -> Result<(), FsError> {
        /// Gives each entry to one owner.
        struct Chown(Uid, Gid);
        impl Visitor for Chown {
            fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, _: &Stat) -> Result<(), FsError> {
                let (uid, gid) = (Some(self.0), Some(self.1));
                unless_gone(rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW))
            }
            fn enter(&mut self, dir: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> Result<bool, FsError> {
                self.entry(dir, name, stat).map(|()| true)
            }
        }
        let (uid, gid) = ids(uid, gid)?;
        rustix::fs::fchown(&self.fd, Some(uid), Some(gid))?;
        walk(self.dev, self.dir(&RelPath::root())?, &mut Chown(uid, gid))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::vfs::testbed::{is_root, snapshot, Bed};

    #[test]
    fn usage_counts_only_regular_files_inside() {
        let bed = Bed::new("usage");
        assert_eq!(bed.root.usage().unwrap(), 9);
        bed.assert_outside_untouched();
    }

    #[test]
    fn chown_tree_changes_names_not_targets() {
        let bed = Bed::new("chown");
        assert!(matches!(bed.root.chown_tree(u32::MAX, 0), Err(FsError::Invalid(_))));
        if !is_root() {
            eprintln!("NOT TESTED: handing files to another user needs root");
            return;
        }
        bed.root.chown_tree(1000, 1000).unwrap();
        let tree = snapshot(&bed.path(""));
        assert!(tree.values().all(|(_, _, owner, _)| *owner == 1000), "{tree:?}");
        assert_eq!(fs::symlink_metadata(bed.path("")).unwrap().uid(), 1000);
        bed.assert_outside_untouched();
    }

    #[test]
    fn other_file_systems_are_not_entered() {
        let bed = Bed::new("xdev");
        let Some(_mount) = bed.mount_tmpfs("mnt", "1m") else { return };
        fs::write(bed.path("mnt/big"), vec![7u8; 100_000]).unwrap();
        assert!(matches!(bed.root.list("mnt"), Err(FsError::Escapes)));
        assert!(matches!(bed.root.open_read("mnt/big"), Err(FsError::Escapes)));
        assert_eq!(bed.root.usage().unwrap(), 9);
        assert!(bed.root.delete(&["mnt"]).is_err());
        assert!(bed.path("mnt/big").exists());
        bed.root.chown_tree(0, 0).unwrap();
    }
}
