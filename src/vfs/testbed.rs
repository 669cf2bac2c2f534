//! Test bed for the confinement tests: a volume root full of traps beside an outside directory
//! that no operation may read, list, change or delete.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{FileType, Mode, CWD};

use super::Root;

/// The content of the files outside the volume.
pub(crate) const SECRET: &[u8] = b"outside secret";

/// Symlinks planted in every bed: absolute and relative ones out of the root, to the outside
/// marker file and directory, to `/etc`, a loop, and some inside a real directory.
pub(crate) const TRAPS: &[&str] =
    &["etc_abs", "out_abs", "out_rel", "up", "secret_abs", "secret_rel", "loop_a", "data/secret", "data/out"];

/// Names that exist only outside the volume (in the outside directory or /etc).
pub(crate) const OUTSIDE_NAMES: &[&str] = &["marker", "sub", "inner", "passwd", "hostname", "os-release"];

/// A temp directory holding `root/` (the volume, opened as [`Bed::root`]) and `outside/`, whose
/// snapshot at the start must still hold at the end. Removed on drop.
pub(crate) struct Bed {
    pub base: PathBuf,
    pub root: Root,
    before: Snapshot,
    etc: (u32, u32),
}

/// Everything observable about a tree: per relative path, kind, mode, owner, and content or
/// link target.
pub(crate) type Snapshot = BTreeMap<PathBuf, (&'static str, u32, u32, Vec<u8>)>;

impl Bed {
    pub fn new(tag: &str) -> Bed {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("lightd-vfs-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (root, outside) = (base.join("root"), base.join("outside"));
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("marker"), SECRET).unwrap();
        fs::set_permissions(outside.join("marker"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(outside.join("sub/inner"), SECRET).unwrap();
        fs::create_dir_all(root.join("data/nested")).unwrap();
        fs::write(root.join("data/file.txt"), b"hello").unwrap();
        fs::write(root.join("data/nested/deep.txt"), b"deep").unwrap();
        for (target, link) in [
            (PathBuf::from("/etc"), "etc_abs"),
            (outside.clone(), "out_abs"),
            (PathBuf::from("../outside"), "out_rel"),
            (PathBuf::from("../../../../../../../.."), "up"),
            (outside.join("marker"), "secret_abs"),
            (PathBuf::from("../outside/marker"), "secret_rel"),
            (PathBuf::from("loop_b"), "loop_a"),
            (PathBuf::from("loop_a"), "loop_b"),
            (PathBuf::from("../../outside/marker"), "data/secret"),
            (PathBuf::from("../../outside"), "data/out"),
        ] {
            symlink(target, root.join(link)).unwrap();
        }
        let fifo = Mode::from_raw_mode(0o644);
        rustix::fs::mknodat(CWD, root.join("fifo"), FileType::Fifo, fifo, 0).unwrap();
        let before = snapshot(&outside);
        Bed { root: Root::open(&root).unwrap(), base, before, etc: etc_facts() }
    }

    /// Host path of `rel` in the volume.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.base.join("root").join(rel)
    }

    pub fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }

    pub fn assert_outside_untouched(&self) {
        assert_eq!(snapshot(&self.outside()), self.before, "the directory outside the volume changed");
        assert_eq!(etc_facts(), self.etc, "/etc changed");
    }

    /// Mounts a small tmpfs at `rel` (a new directory) until the guard drops; `None`, said
    /// aloud, when this process may not mount (not root).
    pub fn mount_tmpfs(&self, rel: &str, size: &str) -> Option<Mount> {
        let at = self.path(rel);
        fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&at).status();
        if !ok.is_ok_and(|s| s.success()) {
            eprintln!("NOT TESTED: cannot mount a tmpfs at {} (these checks need root)", at.display());
            return None;
        }
        Some(Mount(at))
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// A mounted tmpfs, unmounted on drop (before the bed that holds it is removed).
pub(crate) struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Whether this process is root (chown tests need it to hand files to another user).
pub(crate) fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Owner and mode of `/etc`, which the `etc_abs` trap points at.
fn etc_facts() -> (u32, u32) {
    let etc = fs::symlink_metadata("/etc").unwrap();
    (etc.uid(), etc.mode())
}

/// Kind, mode, owner and content (or link target) of everything under `dir`, never following a
/// symlink.
pub(crate) fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(dir.join(&rel)).unwrap() {
            let rel = rel.join(entry.unwrap().file_name());
            let path = dir.join(&rel);
            let meta = fs::symlink_metadata(&path).unwrap();
            let (kind, content) = if meta.is_symlink() {
                ("symlink", fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes())
            } else if meta.is_dir() {
                stack.push(rel.clone());
                ("dir", Vec::new())
            } else if meta.is_file() {
                ("file", fs::read(&path).unwrap())
            } else {
                ("other", Vec::new())
            };
            out.insert(rel, (kind, meta.mode() & 0o7777, meta.uid(), content));
        }
    }
    out
}
