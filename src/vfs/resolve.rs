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
    retry_eagain(|| rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, Mode::empty(), how))
}

/// How many times an `openat2` that failed with EAGAIN is tried again.
const EAGAIN_RETRIES: u32 = 100;

/// Calls `op` until it answers something other than EAGAIN, at most [`EAGAIN_RETRIES`] times more.
fn retry_eagain<T>(mut op: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    let mut retries = 0;
    loop {
        match op() {
            Err(Errno::AGAIN) if retries < EAGAIN_RETRIES => retries += 1,
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::vfs::testbed::Bed;

    /// Whether `fd` is closed on exec (no server or child process inherits it).
    fn cloexec(fd: BorrowedFd<'_>) -> bool {
        rustix::io::fcntl_getfd(fd).unwrap().contains(rustix::io::FdFlags::CLOEXEC)
    }

    #[test]
    fn eagain_is_retried_a_bounded_number_of_times() {
        // Answers EAGAIN `fails` times, then 7; never called past a sane bound.
        let run = |fails: u32| {
            let mut calls = 0u32;
            let r = retry_eagain(|| {
                calls += 1;
                assert!(calls <= 1000, "retried without bound");
                if calls <= fails {
                    Err(Errno::AGAIN)
                } else {
                    Ok(7)
                }
            });
            (r, calls)
        };
        assert_eq!(run(0), (Ok(7), 1));
        assert_eq!(run(3), (Ok(7), 4));
        assert_eq!(run(EAGAIN_RETRIES), (Ok(7), EAGAIN_RETRIES + 1), "the last retry gets through");
        assert_eq!(run(u32::MAX), (Err(Errno::AGAIN), EAGAIN_RETRIES + 1), "then EAGAIN is the answer");
        // Any other error is returned at once.
        let mut calls = 0;
        let r: rustix::io::Result<()> = retry_eagain(|| {
            calls += 1;
            Err(Errno::NOENT)
        });
        assert_eq!((r, calls), (Err(Errno::NOENT), 1));
    }

    #[test]
    fn errors_in_this_layers_terms() {
        let e = resolve_error(Errno::NOSYS);
        assert!(matches!(&e, FsError::Io(io) if io.kind() == io::ErrorKind::Unsupported), "{e:?}");
        assert!(e.to_string().contains("Linux >= 5.6"), "{e}");
        assert!(matches!(resolve_error(Errno::NOENT), FsError::NotFound));
        assert!(matches!(resolve_error(Errno::XDEV), FsError::Escapes));
    }

    /// What `openat2` opens keeps its flags (a directory is required where asked) and is
    /// always close-on-exec.
    #[test]
    fn opens_are_close_on_exec_and_keep_their_flags() {
        let bed = Bed::new("resolve-open");
        let root = &bed.root;
        let dir = root.dir(&RelPath::parse("data").unwrap()).unwrap();
        assert!(cloexec(dir.as_fd()));
        let plain = OFlags::RDONLY;
        let file = root.open_in(&RelPath::parse("data/file.txt").unwrap(), plain).unwrap();
        assert!(cloexec(file.as_fd()), "CLOEXEC is added to flags without it");
        assert!(matches!(root.dir(&RelPath::parse("data/file.txt").unwrap()), Err(FsError::NotADirectory)));
        assert!(matches!(root.dir(&RelPath::parse("nope").unwrap()), Err(FsError::NotFound)));
        let deep = RelPath::parse("data/nested/deep.txt").unwrap();
        let (parent, name) = root.parent(&deep).unwrap();
        assert_eq!(name, "deep.txt");
        let st = rustix::fs::statat(&parent, "deep.txt", rustix::fs::AtFlags::empty()).unwrap();
        assert_eq!(st.st_size, 4, "the parent is data/nested");
        assert!(matches!(root.parent(&RelPath::root()), Err(FsError::Invalid(_))));
    }

    /// A handle is on the name itself (a symlink is not followed) and opens nothing for I/O;
    /// only a regular file is then opened for reading, close-on-exec.
    #[test]
    fn handles_stay_on_the_name_and_only_regular_files_open() {
        let bed = Bed::new("resolve-handle");
        let data = bed.root.dir(&RelPath::parse("data").unwrap()).unwrap();
        symlink("file.txt", bed.base.join("root/data/link")).unwrap();
        let link = handle(data.as_fd(), "link").unwrap();
        let st = rustix::fs::fstat(&link).unwrap();
        assert_eq!(FileType::from_raw_mode(st.st_mode), FileType::Symlink);
        assert!(cloexec(link.as_fd()));
        assert!(matches!(open_regular(link), Err(FsError::Invalid(_))), "a symlink is not a regular file");
        assert!(matches!(open_regular(handle(data.as_fd(), "nested").unwrap()), Err(FsError::IsADirectory)));
        let (mut file, st) = open_regular(handle(data.as_fd(), "file.txt").unwrap()).unwrap();
        assert_eq!(st.st_size, 5);
        assert!(cloexec(file.as_fd()));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "hello");
        assert_eq!(proc_path(file.as_fd()), format!("/proc/self/fd/{}", file.as_raw_fd()));
    }

    /// `place` never replaces a name unless told to, and says whether the name is new.
    #[test]
    fn place_replaces_only_when_asked() {
        let bed = Bed::new("resolve-place");
        let base = bed.base.join("root/data");
        let data = bed.root.dir(&RelPath::parse("data").unwrap()).unwrap();
        std::fs::write(base.join("a"), b"A").unwrap();
        assert!(place(data.as_fd(), "a", data.as_fd(), "b", false).unwrap(), "a new name");
        assert_eq!(std::fs::read(base.join("b")).unwrap(), b"A");
        std::fs::write(base.join("c"), b"C").unwrap();
        assert!(matches!(place(data.as_fd(), "c", data.as_fd(), "b", false), Err(FsError::Exists)));
        assert_eq!(
            (std::fs::read(base.join("b")).unwrap(), std::fs::read(base.join("c")).unwrap()),
            (b"A".to_vec(), b"C".to_vec())
        );
        assert!(!place(data.as_fd(), "c", data.as_fd(), "b", true).unwrap(), "replaced, not new");
        assert_eq!(std::fs::read(base.join("b")).unwrap(), b"C");
        assert!(!base.join("c").exists());
    }
}
