//! The confined file system layer: every path in a volume is resolved beneath its root, fd-relative.
//!
//! The server inside a container is root (or uid 1000) in its volume: it can plant any symlink,
//! hard link, fifo or device node there and swap a directory for a symlink while we work. So
//! nothing here trusts a path string. A user's path is parsed lexically first (`path.rs`), then
//! resolved with `openat2(2)` from the volume's root fd (`resolve.rs`): symlinks are followed only
//! inside the volume (an absolute link is taken relative to its root), never onto another mount.
//! Operations on a final name (delete, rename, lstat, replace) act on it with `*at` calls that
//! never follow it, and tree walks (`walk.rs`) open each directory with `O_NOFOLLOW` and stay on
//! the volume's file system. Regular files are opened only after an `O_PATH` handle showed them
//! regular, so a fifo or device node planted by the server is never opened.
//!
//! Everything is blocking std I/O; the HTTP layer calls it from `spawn_blocking`.

mod archive;
mod copy;
mod dial;
mod entry;
mod extract;
mod formats;
mod ignore;
mod inspect;
pub mod limits;
mod listing;
mod mirror;
mod ops;
mod path;
#[cfg(test)]
mod race;
mod resolve;
mod settle;
mod single;
mod staging;
mod tar_guard;
#[cfg(test)]
mod testbed;
mod tree;
mod upload;
mod walk;
mod zip_guard;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

pub use archive::{pack, pack_until, Codec, PackStats};
pub use dial::{Dial, Tally};
pub use entry::{mode_string, parse_mode, Entry, Kind};
pub use extract::{extract, extract_from, extract_with};
pub use formats::{scan, Scan};
pub use ignore::Ignore;
pub use inspect::backup_files;
pub use listing::{DirStream, Page, MAX_PAGE};
pub use mirror::Node;
pub use settle::settle;
pub use tar_guard::TarGuard;
pub use upload::{Upload, Written};

/// Checks a user's path lexically (no NUL, no `..` above the root): the first filter only;
/// every operation resolves it again, fd-relative.
pub fn check_path(rel: &str) -> Result<(), FsError> {
    path::RelPath::parse(rel).map(drop)
}

/// Which archive format `file` holds (`tar`, `tar.gz`, `tar.zst` or `zip`, told by its first bytes); the
/// file is read from its start and left there.
pub fn sniff(file: &mut std::fs::File) -> Result<&'static str, FsError> {
    std::io::Seek::rewind(file)?;
    Ok(match formats::Format::sniff(file)? {
        formats::Format::Tar => "tar",
        formats::Format::TarGz => "tar.gz",
        formats::Format::TarZst => "tar.zst",
        formats::Format::Zip => "zip",
    })
}

/// An open volume root. Every operation starts from this fd, never from the root's path again, so
/// a volume directory renamed or replaced on the host after opening cannot redirect us.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// The file system the root lives on: walks do not cross into another one.
    dev: u64,
    /// Who gets what this layer creates (upload, mkdir, copy, extract), when set.
    owner: Option<(Uid, Gid)>,
}

impl Root {
    /// Opens a volume root. The path itself must be a real directory: a symlink there is refused.
    pub fn open(path: &Path) -> Result<Root, FsError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => {
                FsError::Invalid(format!("Volume root {} is not a directory (a symlink is refused)", path.display()))
            }
            e => e.into(),
        })?;
        let dev = rustix::fs::fstat(&fd)?.st_dev;
        Ok(Root { fd, dev, owner: None })
    }

    /// Makes everything this layer creates from now on belong to `uid:gid` (the server's user),
    /// so a server that does not run as root can change what was uploaded for it.
    pub fn owned_by(mut self, uid: u32, gid: u32) -> Result<Root, FsError> {
        self.owner = Some(ids(uid, gid)?);
        Ok(self)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Hands `name` in `dir`, just created by us, to the owner (the entry itself, never a link's target).
    fn adopt<P: rustix::path::Arg>(&self, dir: BorrowedFd<'_>, name: P) -> Result<(), FsError> {
        if let Some((uid, gid)) = self.owner {
            rustix::fs::chownat(dir, name, Some(uid), Some(gid), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }
}

/// Checked user and group ids: `u32::MAX` means "leave unchanged" to the kernel, so it is refused.
fn ids(uid: u32, gid: u32) -> Result<(Uid, Gid), FsError> {
    if uid == u32::MAX || gid == u32::MAX {
        return Err(FsError::Invalid(format!("Invalid owner {uid}:{gid}")));
    }
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

/// What a file operation in a volume can fail with; the HTTP layer maps it to a status in one place.
#[derive(Debug)]
pub enum FsError {
    /// The path would leave the volume (400).
    Escapes,
    /// Nothing at that path (404).
    NotFound,
    /// The target name is taken (409).
    Exists,
    /// A directory was needed (400).
    NotADirectory,
    /// A file was needed, a directory found (400).
    IsADirectory,
    /// ENOSPC or EDQUOT: the volume hit its size limit (507).
    NoSpace,
    /// Bad input: a bad mode, an operation on the root, a fifo where a file was needed (400).
    Invalid(String),
    /// An archive entry refused before anything was extracted; the text names it (400).
    BadEntry(String),
    /// Anything else from the kernel (500).
    Io(io::Error),
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::Escapes => f.write_str("Path escapes the volume"),
            FsError::NotFound => f.write_str("File not found"),
            FsError::Exists => f.write_str("File already exists"),
            FsError::NotADirectory => f.write_str("Not a directory"),
            FsError::IsADirectory => f.write_str("Is a directory"),
            FsError::NoSpace => f.write_str("Volume is full"),
            FsError::Invalid(m) | FsError::BadEntry(m) => f.write_str(m),
            FsError::Io(e) => write!(f, "File system error: {e}"),
        }
    }
}

impl std::error::Error for FsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FsError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Errno> for FsError {
    fn from(e: Errno) -> Self {
        match e {
            Errno::NOENT => FsError::NotFound,
            Errno::EXIST | Errno::NOTEMPTY => FsError::Exists,
            Errno::NOTDIR => FsError::NotADirectory,
            Errno::ISDIR => FsError::IsADirectory,
            Errno::NOSPC | Errno::DQUOT => FsError::NoSpace,
            // RESOLVE_NO_XDEV: the path leads onto another mount.
            Errno::XDEV => FsError::Escapes,
            Errno::LOOP => FsError::Invalid("Too many levels of symbolic links".into()),
            Errno::NAMETOOLONG => FsError::Invalid("File name too long".into()),
            e => FsError::Io(io::Error::from_raw_os_error(e.raw_os_error())),
        }
    }
}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) => Errno::from_raw_os_error(code).into(),
            None => FsError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::testbed::Bed;
    use super::*;

    #[test]
    fn a_root_that_is_a_symlink_is_refused() {
        let bed = Bed::new("rootlink");
        let link = bed.base.join("link");
        symlink(bed.path(""), &link).unwrap();
        assert!(matches!(Root::open(&link), Err(FsError::Invalid(m)) if m.contains("symlink")));
        assert!(matches!(Root::open(&bed.path("data/file.txt")), Err(FsError::Invalid(_))));
        assert!(matches!(Root::open(&bed.base.join("missing")), Err(FsError::NotFound)));
        assert!(Root::open(&bed.path("data")).is_ok());
    }

    #[test]
    fn kernel_errors_map_to_sentences() {
        for (errno, want) in [
            (Errno::NOENT, "File not found"),
            (Errno::XDEV, "Path escapes the volume"),
            (Errno::NOSPC, "Volume is full"),
            (Errno::DQUOT, "Volume is full"),
            (Errno::EXIST, "File already exists"),
        ] {
            assert_eq!(FsError::from(errno).to_string(), want);
            assert_eq!(FsError::from(io::Error::from_raw_os_error(errno.raw_os_error())).to_string(), want);
        }
        assert!(matches!(FsError::from(Errno::PERM), FsError::Io(_)));
        let missing = resolve::resolve_error(Errno::NOSYS).to_string();
        assert!(missing.contains("openat2") && missing.contains("Linux >= 5.6"), "{missing}");
    }
}
