//! The files API's operations on one volume: list, stat, read, write, mkdir, rename, delete and
//! chmod.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, Dir, Mode, OFlags};
use rustix::io::Errno;

use super::entry::{parse_mode, Entry, Kind};
use super::path::RelPath;
use super::resolve::{handle, open_regular, place, proc_path, CONFINED};
use super::upload::Upload;
use super::walk::remove;
use super::{FsError, Root};

/// The name [`Entry`] shows for the volume root.
const ROOT_NAME: &str = "/";

impl Root {
    /// The entries of directory `rel`, sorted by name. A symlink is listed as one, with its
    /// target text, and never followed.
    pub fn list(&self, rel: &str) -> Result<Vec<Entry>, FsError> {
        let mut names = Dir::new(self.dir(&RelPath::parse(rel)?)?)?;
        let mut entries = Vec::new();
        while let Some(entry) = names.read() {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            match describe(names.fd()?, name, &name.to_string_lossy()) {
                Err(FsError::NotFound) => {}
                found => entries.push(found?),
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// One entry, lstat style: a final symlink is described, not followed.
    pub fn stat(&self, rel: &str) -> Result<Entry, FsError> {
        let path = RelPath::parse(rel)?;
        if path.is_root() {
            return Ok(Entry::new(ROOT_NAME, &rustix::fs::fstat(&self.fd)?, None));
        }
        let (dir, name) = self.parent(&path)?;
        describe(dir.as_fd(), name, name)
    }

    /// Opens regular file `rel` for reading (symlinks followed inside the volume only). A fifo,
    /// socket or device node is refused without being opened.
    pub fn open_read(&self, rel: &str) -> Result<(File, Entry), FsError> {
        let path = RelPath::parse(rel)?;
        let (file, stat) = open_regular(self.open_in(&path, OFlags::PATH)?)?;
        let name = path.split_last().map_or(ROOT_NAME, |(_, name)| name);
        Ok((file, Entry::new(name, &stat, None)))
    }

    /// [`Root::open_read`] resolved the same way, but only if every step of the lookup is in
    /// the kernel's cache (`RESOLVE_CACHED`): it never waits for the disk, so it may run on an
    /// async thread. `None` when that cannot be known (a step not cached, an older kernel, any
    /// error): then `open_read` says what is there.
    pub fn open_read_cached(&self, rel: &str) -> Option<(File, Entry)> {
        let path = RelPath::parse(rel).ok()?;
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        let how = CONFINED.union(rustix::fs::ResolveFlags::CACHED);
        let handle = rustix::fs::openat2(self.fd(), path.as_str(), flags, Mode::empty(), how).ok()?;
        let (file, stat) = open_regular(handle).ok()?;
        let name = path.split_last().map_or(ROOT_NAME, |(_, name)| name);
        Some((file, Entry::new(name, &stat, None)))
    }

    /// Starts writing file `rel`, its missing parent directories made. The content goes to a temp
    /// file until [`Upload::commit`] renames it over `rel` (a symlink there is replaced).
    pub fn create_temp(&self, rel: &str) -> Result<Upload, FsError> {
        let path = RelPath::parse(rel)?;
        let (parent, name) = path.split_last().ok_or(FsError::IsADirectory)?;
        let dir = self.make_dirs(self.fd(), &parent, CONFINED)?;
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if Kind::of(&stat) == Kind::Dir => return Err(FsError::IsADirectory),
            _ => {}
        }
        Upload::create(self, dir, name)
    }

    /// An unnamed file on the volume's file system (`O_TMPFILE`), for an upload that must be
    /// read twice (an archive to extract): it counts against the volume's limit, has no name a
    /// server could reach, and is gone when closed.
    pub fn spool(&self) -> Result<File, FsError> {
        let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(self.fd(), ".", flags, rustix::fs::Mode::from_raw_mode(0o600))?;
        Ok(File::from(fd))
    }

    /// Makes directory `rel` and its missing parents; `Exists` when `rel` itself exists.
    pub fn mkdir(&self, rel: &str) -> Result<(), FsError> {
        let path = RelPath::parse(rel)?;
        let (parent, name) = path.split_last().ok_or(FsError::Exists)?;
        let dir = self.make_dirs(self.fd(), &parent, CONFINED)?;
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755))?;
        self.adopt(dir.as_fd(), name)
    }

    /// Renames `from` to `to` (the names themselves, never a symlink's target); `Exists` when
    /// `to` exists and `!overwrite`.
    pub fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<(), FsError> {
        let (from, to) = (RelPath::parse(from)?, RelPath::parse(to)?);
        let (from_dir, from_name) = self.parent(&from)?;
        let (to_dir, to_name) = self.parent(&to)?;
        match place(from_dir.as_fd(), from_name, to_dir.as_fd(), to_name, overwrite) {
            Err(FsError::Io(e)) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                Err(FsError::Invalid("A directory cannot be moved into itself".into()))
            }
            done => done.map(drop),
        }
    }

    /// Deletes each path in order (a tree recursively; a symlink itself, never its target) and
    /// tells how many. All paths are parsed, and the root refused, before the first is deleted;
    /// a path found missing stops the list there with `NotFound`.
    pub fn delete<S: AsRef<str>>(&self, paths: &[S]) -> Result<usize, FsError> {
        let paths = paths.iter().map(|p| RelPath::parse(p.as_ref())).collect::<Result<Vec<_>, _>>()?;
        if paths.iter().any(RelPath::is_root) {
            return Err(FsError::Invalid("The volume root cannot be deleted".into()));
        }
        for path in &paths {
            let (dir, name) = self.parent(path)?;
            remove(self.dev, dir.as_fd(), name)?;
        }
        Ok(paths.len())
    }

    /// Sets the permission bits of `rel` (`mode` as `"0644"`; setuid, setgid and sticky are
    /// refused) and returns the entry after. A final symlink is refused, not followed, and the
    /// target is never opened for I/O (it could be a fifo): the mode is set through an `O_PATH`
    /// handle reopened by /proc.
    pub fn chmod(&self, rel: &str, mode: &str) -> Result<Entry, FsError> {
        let mode = parse_mode(mode)?;
        let path = RelPath::parse(rel)?;
        let (target, name) = match path.split_last() {
            None => (self.open_in(&path, OFlags::PATH)?, ROOT_NAME),
            Some(_) => {
                let (dir, name) = self.parent(&path)?;
                (handle(dir.as_fd(), name)?, name)
            }
        };
        if Kind::of(&rustix::fs::fstat(&target)?) == Kind::Symlink {
            return Err(FsError::Invalid("A symlink has no mode of its own".into()));
        }
        rustix::fs::chmod(proc_path(target.as_fd()), Mode::from_raw_mode(mode))?;
        Ok(Entry::new(name, &rustix::fs::fstat(&target)?, None))
    }
}

/// The entry for `name` in `dir` (lstat, and readlink for a symlink), shown as `shown`.
pub(super) fn describe<P: rustix::path::Arg + Copy>(
    dir: BorrowedFd<'_>,
    name: P,
    shown: &str,
) -> Result<Entry, FsError> {
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let target = match Kind::of(&stat) {
        // A link replaced between the two calls shows without a target rather than failing.
        Kind::Symlink => rustix::fs::readlinkat(dir, name, Vec::new()).ok(),
        _ => None,
    };
    Ok(Entry::new(shown, &stat, target.as_deref()))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::vfs::testbed::{is_root, Bed, OUTSIDE_NAMES, SECRET, TRAPS};
    use crate::vfs::Written;

    /// Every trap, and every way through one to a name that exists only outside.
    fn trap_paths() -> Vec<String> {
        let mut paths: Vec<String> = TRAPS.iter().map(|t| t.to_string()).collect();
        for trap in TRAPS {
            paths.extend(["marker", "sub/inner", "passwd", "outside/marker", "x/y"].map(|n| format!("{trap}/{n}")));
        }
        paths
    }

    #[test]
    fn list_and_stat_show_links_as_links() {
        let bed = Bed::new("list");
        let root = bed.root.list("/").unwrap();
        let names: Vec<&str> = root.iter().map(|e| e.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let secret = root.iter().find(|e| e.name == "secret_abs").unwrap();
        assert_eq!(secret.kind, Kind::Symlink);
        assert_eq!(secret.target.as_deref(), Some(bed.outside().join("marker").to_str().unwrap()));
        assert_eq!(root.iter().find(|e| e.name == "fifo").unwrap().kind, Kind::Other);
        assert_eq!(bed.root.stat("data/secret").unwrap().target.as_deref(), Some("../../outside/marker"));
        assert_eq!(bed.root.stat("loop_a").unwrap().kind, Kind::Symlink);
        assert_eq!(bed.root.stat("data/file.txt").unwrap().size, 5);
        assert_eq!(bed.root.stat("").unwrap().kind, Kind::Dir);
        for path in trap_paths() {
            if let Ok(entries) = bed.root.list(&path) {
                assert!(!entries.iter().any(|e| OUTSIDE_NAMES.contains(&e.name.as_str())), "{path} listed outside");
            }
            if let Ok(entry) = bed.root.stat(&path) {
                assert!(entry.kind == Kind::Symlink, "{path} described something outside: {entry:?}");
            }
        }
        assert!(matches!(bed.root.list("../outside"), Err(FsError::Escapes)));
        assert!(matches!(bed.root.list("data/file.txt"), Err(FsError::NotADirectory)));
        bed.assert_outside_untouched();
    }

    #[test]
    fn reads_never_leave_the_volume_nor_open_special_files() {
        let bed = Bed::new("read");
        for path in trap_paths() {
            if let Ok((mut file, _)) = bed.root.open_read(&path) {
                let mut content = Vec::new();
                file.read_to_end(&mut content).unwrap();
                assert_ne!(content, SECRET, "{path} read a file outside");
            }
        }
        let (mut file, entry) = bed.root.open_read("/data/./nested/../file.txt").unwrap();
        let mut content = String::new();
        file.read_to_string(&mut content).unwrap();
        assert_eq!((content.as_str(), entry.name.as_str(), entry.size), ("hello", "file.txt", 5));
        // A symlink that stays inside is followed; one absolute link is taken from the root.
        std::os::unix::fs::symlink("/data/file.txt", bed.path("inside")).unwrap();
        assert_eq!(bed.root.open_read("inside").unwrap().1.size, 5);
        // A fifo would block an open for reading forever; it is refused without being opened.
        assert!(matches!(bed.root.open_read("fifo"), Err(FsError::Invalid(_))));
        assert!(matches!(bed.root.open_read("data"), Err(FsError::IsADirectory)));
        if is_root() {
            // A character device (like /dev/null, 1:3) planted by a root server is never opened.
            let mode = Mode::from_raw_mode(0o666);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                bed.path("dev"),
                rustix::fs::FileType::CharacterDevice,
                mode,
                rustix::fs::makedev(1, 3),
            )
            .unwrap();
            assert!(matches!(bed.root.open_read("dev"), Err(FsError::Invalid(_))));
        }
        bed.assert_outside_untouched();
    }

    #[test]
    fn writes_replace_links_and_never_write_through_them() {
        let bed = Bed::new("write");
        for path in trap_paths().iter().filter(|p| p.contains('/')) {
            if let Ok(mut upload) = bed.root.create_temp(path) {
                upload.file().write_all(b"written").unwrap();
                upload.commit().unwrap();
            }
        }
        bed.assert_outside_untouched();
        for link in ["secret_abs", "secret_rel", "data/secret"] {
            let mut upload = bed.root.create_temp(link).unwrap();
            upload.file().write_all(b"new").unwrap();
            assert_eq!(upload.commit().unwrap(), Written { bytes: 3, created: false });
            assert_eq!(bed.root.stat(link).unwrap().kind, Kind::File);
        }
        bed.assert_outside_untouched();
        let mut upload = bed.root.create_temp("a/b/c.txt").unwrap();
        upload.file().write_all(b"abc").unwrap();
        assert_eq!(upload.commit().unwrap(), Written { bytes: 3, created: true });
        assert_eq!(fs::read(bed.path("a/b/c.txt")).unwrap(), b"abc");
        assert_eq!(fs::metadata(bed.path("a/b/c.txt")).unwrap().mode() & 0o777, 0o644);
        // Dropped before commit: the old content stays and no temp file is left.
        let mut upload = bed.root.create_temp("a/b/c.txt").unwrap();
        upload.file().write_all(b"half").unwrap();
        drop(upload);
        assert_eq!(fs::read(bed.path("a/b/c.txt")).unwrap(), b"abc");
        assert_eq!(fs::read_dir(bed.path("a/b")).unwrap().count(), 1);
        assert!(matches!(bed.root.create_temp("data"), Err(FsError::IsADirectory)));
        assert!(matches!(bed.root.create_temp("/"), Err(FsError::IsADirectory)));
        assert!(matches!(bed.root.create_temp("../x"), Err(FsError::Escapes)));
    }

    #[test]
    fn mkdir_and_rename_stay_inside() {
        let bed = Bed::new("mkdir");
        for path in trap_paths().iter().filter(|p| p.contains('/')) {
            let _ = bed.root.mkdir(path);
            let _ = bed.root.rename("data/file.txt", path, false);
            let _ = bed.root.rename(path, "moved", false);
        }
        bed.assert_outside_untouched();
        bed.root.mkdir("new/a/b").unwrap();
        assert!(bed.path("new/a/b").is_dir());
        assert!(matches!(bed.root.mkdir("new"), Err(FsError::Exists)));
        assert!(matches!(bed.root.mkdir("secret_abs"), Err(FsError::Exists)));
        // Renaming a link moves the link itself.
        bed.root.rename("secret_abs", "new/link", false).unwrap();
        assert_eq!(fs::read_link(bed.path("new/link")).unwrap(), bed.outside().join("marker"));
        assert!(matches!(bed.root.rename("new/link", "data/file.txt", false), Err(FsError::Exists)));
        bed.root.rename("new/link", "data/file.txt", true).unwrap();
        assert!(fs::symlink_metadata(bed.path("data/file.txt")).unwrap().is_symlink());
        assert!(matches!(bed.root.rename("data", "data/nested/data", false), Err(FsError::Invalid(_))));
        assert!(matches!(bed.root.rename("", "x", false), Err(FsError::Invalid(_))));
        bed.assert_outside_untouched();
    }

    #[test]
    fn delete_removes_links_never_their_targets() {
        let bed = Bed::new("delete");
        assert!(matches!(bed.root.delete(&["/"]), Err(FsError::Invalid(_))));
        assert!(matches!(bed.root.delete(&["data/../.."]), Err(FsError::Escapes)));
        assert!(matches!(bed.root.delete(&["data", "../x"]), Err(FsError::Escapes)));
        assert!(bed.path("data").exists(), "a bad path in the list deleted the others first");
        for path in trap_paths().iter().filter(|p| p.contains('/')) {
            let _ = bed.root.delete(&[path]);
        }
        bed.assert_outside_untouched();
        let mut all: Vec<&str> = TRAPS.iter().copied().filter(|t| !t.starts_with("data/")).collect();
        all.extend(["loop_b", "data", "fifo"]);
        assert_eq!(bed.root.delete(&all).unwrap(), all.len());
        assert_eq!(fs::read_dir(bed.path("")).unwrap().count(), 0);
        assert!(matches!(bed.root.delete(&["data"]), Err(FsError::NotFound)));
        bed.assert_outside_untouched();
    }

    #[test]
    fn chmod_never_follows_nor_opens() {
        let bed = Bed::new("chmod");
        for path in trap_paths() {
            let _ = bed.root.chmod(&path, "0777");
        }
        bed.assert_outside_untouched();
        assert!(matches!(bed.root.chmod("secret_abs", "0777"), Err(FsError::Invalid(_))));
        assert!(matches!(bed.root.chmod("data/file.txt", "4755"), Err(FsError::Invalid(_))));
        assert!(matches!(bed.root.chmod("data/file.txt", "rwx"), Err(FsError::Invalid(_))));
        let entry = bed.root.chmod("data/file.txt", "600").unwrap();
        assert_eq!((entry.mode, entry.name.as_str()), (0o600, "file.txt"));
        assert_eq!(fs::metadata(bed.path("data/file.txt")).unwrap().permissions().mode() & 0o7777, 0o600);
        // A fifo is changed without being opened (an open would block).
        assert_eq!(bed.root.chmod("fifo", "0600").unwrap().mode, 0o600);
        assert_eq!(bed.root.chmod("data", "0700").unwrap().kind, Kind::Dir);
        assert_eq!(bed.root.chmod("/", "0755").unwrap().name, "/");
        bed.assert_outside_untouched();
    }

    #[test]
    fn created_names_go_to_the_owner() {
        if !is_root() {
            eprintln!("NOT TESTED: handing files to another user needs root");
            return;
        }
        let bed = Bed::new("owner");
        let root = Root::open(&bed.path("")).unwrap().owned_by(1000, 1001).unwrap();
        root.mkdir("m/n").unwrap();
        let mut upload = root.create_temp("u/v.txt").unwrap();
        upload.file().write_all(b"v").unwrap();
        upload.commit().unwrap();
        root.copy("data", "copied", false).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        tar.append_data(&mut header, "x/y/z.txt", &b"z"[..]).unwrap();
        fs::write(bed.base.join("upload.tar"), tar.into_inner().unwrap()).unwrap();
        crate::vfs::extract(&root, "e", fs::File::open(bed.base.join("upload.tar")).unwrap()).unwrap();
        let made =
            ["m", "m/n", "u", "u/v.txt", "copied", "copied/secret", "copied/nested/deep.txt", "e", "e/x/y/z.txt"];
        for made in made {
            let meta = fs::symlink_metadata(bed.path(made)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (1000, 1001), "{made}");
        }
        assert_eq!(fs::metadata(bed.path("data")).unwrap().uid(), 0);
    }

    #[test]
    fn a_full_volume_says_so() {
        let bed = Bed::new("full");
        let Some(_mount) = bed.mount_tmpfs("small", "64k") else { return };
        let root = Root::open(&bed.path("small")).unwrap();
        let mut upload = root.create_temp("big").unwrap();
        let written = upload.file().write_all(&vec![1u8; 1 << 20]);
        assert!(matches!(written.map_err(FsError::from), Err(FsError::NoSpace)));
        drop(upload);
        assert_eq!(root.usage().unwrap(), 0, "the temp file was left behind");
        assert_eq!(FsError::NoSpace.to_string(), "Volume is full");
    }
}
