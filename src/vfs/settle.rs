//! After a restore's extraction: every name the archive holds is handed to the root's owner
//! (see [`Root::owned_by`]) and given back its archived mtime, directories included (their
//! mtimes only hold once nothing more is made in them, hence a pass of its own). The archive is
//! read again through the reader extraction uses; each name is acted on in its parent,
//! resolved strictly (no symlink on the way, nothing above the root), and never followed.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, OFlags, Timespec, Timestamps, UTIME_OMIT};
use rustix::io::Errno;

use super::formats::{Format, Item, ItemKind};
use super::path::RelPath;
use super::resolve::{openat2_raw, resolve_error, STRICT};
use super::{FsError, Root};

/// Directories kept open between entries (an archive lists a directory's names together).
const OPEN_DIRS: usize = 64;

/// Owner and mtime for each entry of `archive` found beneath the root; returns how many names
/// were settled. A name the archive has and the volume does not (or no longer as such) is
/// passed over. `stop` is asked before each entry.
pub fn settle(root: &Root, mut archive: File, stop: &dyn Fn() -> Result<(), FsError>) -> Result<usize, FsError> {
    let format = Format::sniff(&mut archive)?;
    let mut dirs: HashMap<String, OwnedFd> = HashMap::new();
    let mut count = 0;
    format.each(&mut archive, &super::Dial::new(None), &mut |item: Item<'_>| {
        stop()?;
        if matches!(item.kind, ItemKind::Refused(_) | ItemKind::Skip) {
            return Ok(());
        }
        let Ok(path) = RelPath::parse(&item.name) else { return Ok(()) };
        let Some((parent, name)) = path.split_last() else { return Ok(()) };
        if !dirs.contains_key(parent.as_str()) {
            let flags = OFlags::PATH | OFlags::DIRECTORY;
            match openat2_raw(root.fd(), parent.as_str(), flags, STRICT) {
                Ok(fd) => {
                    if dirs.len() == OPEN_DIRS {
                        dirs.clear();
                    }
                    dirs.insert(parent.as_str().to_owned(), fd);
                }
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => return Ok(()),
                Err(e) => return Err(resolve_error(e)),
            }
        }
        let Some(dir) = dirs.get(parent.as_str()) else { return Ok(()) };
        let dir = dir.as_fd();
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        if let Some((uid, gid)) = root.owner {
            match rustix::fs::chownat(dir, name, Some(uid), Some(gid), nofollow) {
                Ok(()) => {}
                Err(Errno::NOENT) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(mtime) = item.mtime.and_then(|m| i64::try_from(m).ok()) {
            let times = Timestamps {
                last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
                last_modification: Timespec { tv_sec: mtime, tv_nsec: 0 },
            };
            match rustix::fs::utimensat(dir, name, &times, nofollow) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};

    use tar::{EntryType, Header};

    use super::*;
    use crate::vfs::testbed::{is_root, Bed};

    fn entry(tar: &mut tar::Builder<Vec<u8>>, name: &str, kind: EntryType, mtime: u64, link: &str) {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
        header.set_mtime(mtime);
        header.set_size(0);
        if kind == EntryType::Symlink {
            tar.append_link(&mut header, name, link).unwrap();
        } else {
            tar.append_data(&mut header, name, std::io::empty()).unwrap();
        }
    }

    #[test]
    fn restored_names_get_the_owner_and_their_mtimes_never_through_a_link() {
        let bed = Bed::new("settle");
        let mut tar = tar::Builder::new(Vec::new());
        entry(&mut tar, "w", EntryType::Directory, 1_000_000, "");
        entry(&mut tar, "w/level.dat", EntryType::Regular, 1_100_000, "");
        entry(&mut tar, "w/link", EntryType::Symlink, 1_200_000, "/etc/passwd");
        entry(&mut tar, "gone.txt", EntryType::Regular, 1_300_000, "");
        entry(&mut tar, "data/out/marker", EntryType::Regular, 1_400_000, "");
        let archive = bed.base.join("a.tar");
        fs::write(&archive, tar.into_inner().unwrap()).unwrap();
        fs::create_dir(bed.path("w")).unwrap();
        fs::write(bed.path("w/level.dat"), b"x").unwrap();
        symlink("/etc/passwd", bed.path("w/link")).unwrap();
        let marker = || fs::metadata(bed.outside().join("marker")).map(|m| (m.mtime(), m.uid())).unwrap();
        let outside = marker();
        let me = fs::metadata(bed.path("")).unwrap();
        let (uid, gid) = if is_root() { (4321, 4321) } else { (me.uid(), me.gid()) };
        let root = Root::open(&bed.path("")).unwrap().owned_by(uid, gid).unwrap();
        // w, w/level.dat and w/link; gone.txt is not there, data/out is a symlink.
        assert_eq!(settle(&root, File::open(&archive).unwrap(), &|| Ok(())).unwrap(), 3);
        for (name, mtime) in [("w", 1_000_000), ("w/level.dat", 1_100_000), ("w/link", 1_200_000)] {
            let m = fs::symlink_metadata(bed.path(name)).unwrap();
            assert_eq!((m.mtime(), m.uid(), m.gid()), (mtime, uid, gid), "{name}");
        }
        assert_ne!(fs::metadata("/etc/passwd").unwrap().mtime(), 1_200_000, "a link's target is never touched");
        assert_eq!(marker(), outside, "data/out is a symlink out of the volume: never gone through");
        bed.assert_outside_untouched();

        let stopped = settle(&root, File::open(&archive).unwrap(), &|| Err(FsError::Invalid("stop".into())));
        assert!(matches!(stopped, Err(FsError::Invalid(m)) if m == "stop"));
    }
}
