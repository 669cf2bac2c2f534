//! One-name operations the SFTP server needs beside the files API's: stat that follows a link
//! (inside the volume only), in-place writes, removing one file or one empty directory,
//! making one directory, and symlinks. Same rules as `ops.rs`: a final name is acted on with
//! `*at` calls that never follow it, everything else is resolved fd-relative, confined.

use std::fs::File;
use std::os::fd::AsFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::path::RelPath;
use super::resolve::proc_path;
use super::{FsError, Root};

impl Root {
    /// lstat of `rel` (a final symlink described, not followed).
    pub fn lstat_raw(&self, rel: &str) -> Result<Stat, FsError> {
        let path = RelPath::parse(rel)?;
        if path.is_root() {
            return Ok(rustix::fs::fstat(&self.fd)?);
        }
        let (dir, name) = self.parent(&path)?;
        Ok(rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// stat of `rel`, symlinks followed inside the volume only.
    pub fn stat_raw(&self, rel: &str) -> Result<Stat, FsError> {
        let path = RelPath::parse(rel)?;
        Ok(rustix::fs::fstat(self.open_in(&path, OFlags::PATH)?)?)
    }

    /// Opens the existing regular file `rel` for writing in place (symlinks followed inside the
    /// volume only; a fifo or device is refused without being opened).
    pub fn open_write(&self, rel: &str, read: bool) -> Result<File, FsError> {
        let path = RelPath::parse(rel)?;
        let handle = self.open_in(&path, OFlags::PATH)?;
        let stat = rustix::fs::fstat(&handle)?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Err(FsError::IsADirectory),
            _ => return Err(FsError::Invalid("Not a regular file".into())),
        }
        let access = if read { OFlags::RDWR } else { OFlags::WRONLY };
        let flags = access | OFlags::CLOEXEC | OFlags::NOCTTY;
        Ok(File::from(rustix::fs::open(proc_path(handle.as_fd()), flags, Mode::empty())?))
    }

    /// Removes `rel` if it is not a directory (a symlink itself, never its target).
    pub fn remove_file(&self, rel: &str) -> Result<(), FsError> {
        let path = RelPath::parse(rel)?;
        let (dir, name) = self.parent(&path)?;
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::empty())?)
    }

    /// Removes the empty directory `rel`.
    pub fn rmdir(&self, rel: &str) -> Result<(), FsError> {
        let path = RelPath::parse(rel)?;
        let (dir, name) = self.parent(&path)?;
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR)?)
    }

    /// Makes directory `rel` (its parent must exist), owned like everything this layer makes.
    pub fn mkdir_one(&self, rel: &str, mode: u32) -> Result<(), FsError> {
        let path = RelPath::parse(rel)?;
        let (dir, name) = self.parent(&path)?;
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode & 0o777))?;
        self.adopt(dir.as_fd(), name)
    }

    /// Makes symlink `rel` pointing at `target`. The target is only text: whatever it says,
    /// this layer resolves it beneath the volume root (an absolute target from the root, `..`
    /// stopping there), so it can never lead the daemon outside.
    pub fn symlink(&self, target: &str, rel: &str) -> Result<(), FsError> {
        if target.is_empty() || target.contains('\0') {
            return Err(FsError::Invalid("Invalid symlink target".into()));
        }
        let path = RelPath::parse(rel)?;
        let (dir, name) = self.parent(&path)?;
        rustix::fs::symlinkat(target, &dir, name)?;
        self.adopt(dir.as_fd(), name)
    }

    /// The numbers of the file system `rel` lives on (statvfs), `rel` resolved inside the
    /// volume like any other path: for a volume of its own (a loop mount) they are its own.
    pub fn statvfs(&self, rel: &str) -> Result<rustix::fs::StatVfs, FsError> {
        let path = RelPath::parse(rel)?;
        if path.is_root() {
            return Ok(rustix::fs::fstatvfs(&self.fd)?);
        }
        Ok(rustix::fs::fstatvfs(self.open_in(&path, OFlags::PATH)?)?)
    }

    /// The text of symlink `rel`.
    pub fn readlink(&self, rel: &str) -> Result<String, FsError> {
        let path = RelPath::parse(rel)?;
        let (dir, name) = self.parent(&path)?;
        let target = rustix::fs::readlinkat(&dir, name, Vec::new())?;
        Ok(target.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::vfs::testbed::{Bed, SECRET, TRAPS};

    #[test]
    fn single_name_operations_stay_inside() {
        let bed = Bed::new("single");
        for trap in TRAPS {
            let inner = format!("{trap}/marker");
            if let Ok(mut f) = bed.root.open_write(&inner, false) {
                let _ = std::io::Write::write_all(&mut f, b"x");
            }
            let _ = bed.root.remove_file(&inner);
            let _ = bed.root.rmdir(&format!("{trap}/sub"));
            let _ = bed.root.mkdir_one(&format!("{trap}/new"), 0o755);
            let _ = bed.root.symlink("/", &format!("{trap}/link"));
            if let Ok(st) = bed.root.stat_raw(&inner) {
                assert_ne!(st.st_size as usize, SECRET.len(), "{inner} reached outside");
            }
            // Twice: the second lookup finds whatever the first cached.
            for _ in 0..2 {
                if let Some((f, _)) = bed.root.open_read_cached(&inner) {
                    assert_ne!(f.metadata().unwrap().len() as usize, SECRET.len(), "{inner} reached outside");
                }
            }
            if let Ok(st) = bed.root.statvfs(&inner) {
                assert_eq!(st.f_fsid, bed.root.statvfs("").unwrap().f_fsid, "{inner} reached another file system");
            }
        }
        bed.assert_outside_untouched();
        // A link made to the host's root resolves beneath the volume's.
        bed.root.symlink("/", "toroot").unwrap();
        assert_eq!(bed.root.readlink("toroot").unwrap(), "/");
        assert!(bed.root.stat_raw("toroot/marker").is_err());
        assert!(bed.root.stat_raw("toroot/data/file.txt").is_ok());
        bed.root.mkdir_one("d", 0o700).unwrap();
        assert!(matches!(bed.root.mkdir_one("x/y", 0o700), Err(FsError::NotFound)));
        assert!(matches!(bed.root.rmdir("data"), Err(FsError::Exists)));
        bed.root.rmdir("d").unwrap();
        assert!(bed.root.remove_file("data").is_err());
        bed.root.remove_file("toroot").unwrap();
        bed.root.open_read("data/file.txt").unwrap();
        let (cached, _) = bed.root.open_read_cached("data/file.txt").expect("a lookup just made is cached");
        assert_eq!(cached.metadata().unwrap().len(), 5);
        assert!(bed.root.open_read_cached("data").is_none(), "a directory is not opened for reading");
        let mut f = bed.root.open_write("data/file.txt", false).unwrap();
        std::io::Write::write_all(&mut f, b"J").unwrap();
        assert_eq!(fs::read(bed.path("data/file.txt")).unwrap(), b"Jello");
        assert!(matches!(bed.root.open_write("fifo", false), Err(FsError::Invalid(_))));
        bed.assert_outside_untouched();
    }
}
