//! Kernel-enforced volume size limits: each volume is a sparse ext4 image of `size_limit` bytes,
//! mounted `loop,nosuid,nodev` at the volume directory, so a write past the limit fails with
//! ENOSPC inside the server instead of filling the host disk.
//!
//! Every function blocks (it runs `mkfs.ext4`, `mount`, ...): call it from `spawn_blocking`.
//! Tools run without a shell, with `LC_ALL=C`, a fixed `PATH`, paths as separate arguments and a
//! deadline, so a hung tool fails the call instead of hanging the daemon.

mod room;
mod sys;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use sys::{CAP_SYS_ADMIN, CAP_SYS_RESOURCE};

/// The smallest volume: ext4 needs room for its metadata and a 4 MiB journal, so an 8 MiB
/// volume holds about 3 MiB of files (a 1 GiB one about 970 MiB, 10 GiB about 9.75 GiB).
pub const MIN_BYTES: u64 = 8 << 20;

/// Deadline of quick tools (mkfs with lazy init, mount, losetup).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of tools whose work grows with the file system, and that are unsafe to kill early.
const LONG_TIMEOUT: Duration = Duration::from_secs(600);
const MOUNT_OPTIONS: &str = "loop,nosuid,nodev,errors=remount-ro";
const TOOLS: [&str; 6] = ["mkfs.ext4", "mount", "umount", "losetup", "resize2fs", "e2fsck"];

/// How size limits are enforced on this host: the resolved value of config `volumes.quota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each volume is an ext4 image mounted at its directory: the kernel enforces the limit.
    Loop,
    /// Limits are recorded, not enforced.
    None,
}

impl Mode {
    /// The name the API and the config use (`"quota": "loop" | "none"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Loop => "loop",
            Mode::None => "none",
        }
    }
}

/// Which kind of failure, so the caller can pick a status code without parsing text
/// (`TooSmall`, `TooLarge` 400; `Shrink`, `Exists`, `Busy`, `NoRoom` 409; the rest 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The size is below [`MIN_BYTES`].
    TooSmall,
    /// The size is more than the host's file system holds in one file (EFBIG).
    TooLarge,
    /// A grow to less than the current size (the caller's 409 "below what is used").
    Shrink,
    /// The image already exists, or the directory is already a mount point of something else.
    Exists,
    /// The volume is in use and the step needs it idle.
    Busy,
    /// The directory has no volume mounted.
    NotMounted,
    /// The host's disk has no room for the promise (`volumes.overcommit: false`).
    NoRoom,
    /// A tool or a system call failed.
    Failed,
}

/// The one error of this module: which step failed, on which path, and why (a tool's stderr
/// or the OS error).
#[derive(Debug)]
pub struct QuotaError {
    pub kind: Kind,
    /// What was being done: `create`, `mkfs.ext4`, `mount`, `umount`, `resize2fs`...
    pub step: &'static str,
    pub path: PathBuf,
    /// The tool's stderr and exit status, or the OS error.
    pub cause: String,
}

impl QuotaError {
    fn new(kind: Kind, step: &'static str, path: &Path, cause: impl fmt::Display) -> Self {
        QuotaError { kind, step, path: path.to_path_buf(), cause: cause.to_string() }
    }
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "volume {} {}: {}", self.step, self.path.display(), self.cause)
    }
}

impl std::error::Error for QuotaError {}

fn failed(step: &'static str, path: &Path, cause: impl fmt::Display) -> QuotaError {
    QuotaError::new(Kind::Failed, step, path, cause)
}

/// Space of a mounted volume, from `statfs` (O(1), no walk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Taken by files and directories (an empty volume: a few KiB; the journal is not counted).
    pub used_bytes: u64,
    /// Capacity for files: the image size less the file system's own metadata.
    pub total_bytes: u64,
    /// What can still be written.
    pub avail_bytes: u64,
}

/// Whether a new or grown image must fit on the host's disk beside the others
/// (`volumes.overcommit`; see `room.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// Refused ([`Kind::NoRoom`]) unless every image could then fill up with what is free.
    Reserve,
    /// Sparse images may promise more than the disk holds.
    Overcommit,
}

/// How [`unmount`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Nothing was mounted there.
    NotMounted,
    /// Unmounted, loop device detached.
    Done,
    /// The volume was busy: it is detached from the tree, but the file system and its loop device
    /// live on until the last user lets go. Worth a warning in the log.
    Lazy,
}

/// Where the image of volume `volume_id` lives: a hidden directory beside the volume
/// directories, so containers (which see only `<base>/<uuid>`) never see an image.
pub fn image_path(base: &Path, volume_id: &str) -> PathBuf {
    base.join(".images").join(format!("{volume_id}.ext4"))
}

/// Resolves `volumes.quota: "auto"`: `Loop` when this process can make, mount and drop a real
/// ext4 image in `base_path` (a trial of a few tens of ms), else `None`. The text is the
/// start-up log line saying which and why.
pub fn detect(base_path: &Path) -> (Mode, String) {
    match probe(base_path) {
        Ok(()) if sys::has_cap(CAP_SYS_RESOURCE) => (Mode::Loop, "quota: loop (ext4 images, kernel-enforced)".into()),
        Ok(()) => (
            Mode::Loop,
            "quota: loop (ext4 images, kernel-enforced; no CAP_SYS_RESOURCE, so volumes grow only while unused)".into(),
        ),
        Err(why) => (Mode::None, format!("quota: none (cannot mount loop devices: {why})")),
    }
}

fn probe(base: &Path) -> Result<(), String> {
    if !sys::has_cap(CAP_SYS_ADMIN) {
        return Err("not running as root (no CAP_SYS_ADMIN)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("/dev/loop-control is missing".into());
    }
    if let Some(tool) = TOOLS.iter().find(|t| !sys::find_tool(t)) {
        return Err(format!("{tool} not found (it comes with e2fsprogs or util-linux)"));
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(base)
        .map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    let (image, dir) = (base.join(".quota-probe.ext4"), base.join(".quota-probe"));
    remove(&image, &dir).map_err(|e| e.to_string())?; // left by a probe that crashed
    let tried = create(&image, &dir, MIN_BYTES, Disk::Overcommit);
    let removed = remove(&image, &dir);
    tried.and(removed).map_err(|e| e.to_string())
}

/// Makes a volume: a sparse image of exactly `bytes` at `image` (which must not exist), formatted
/// ext4 and mounted at `dir` (made with mode 0700 when missing). The file system's root takes the
/// owner and mode of `dir`. With [`Disk::Reserve`], refused when it would not fit on the disk
/// beside the other images of its directory. On failure nothing is left behind.
pub fn create(image: &Path, dir: &Path, bytes: u64, disk: Disk) -> Result<(), QuotaError> {
    if bytes < MIN_BYTES {
        let why = format!("{bytes} bytes is below the minimum of {MIN_BYTES} (ext4 needs room for its metadata)");
        return Err(QuotaError::new(Kind::TooSmall, "create", image, why));
    }
    if let Some(parent) = image.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(|e| failed("create", parent, e))?;
    }
    let (image, dir) = (absolute("create", image)?, absolute("create", dir)?);
    if let Some((source, _)) = sys::mount_at(&dir) {
        let why = format!("already mounted from {}", source.display());
        return Err(QuotaError::new(Kind::Exists, "create", &dir, why));
    }
    let made_dir = make_dir(&dir)?;
    if !made_dir && fs::read_dir(&dir).map_err(|e| failed("create", &dir, e))?.next().is_some() {
        return Err(QuotaError::new(Kind::Exists, "create", &dir, "is not empty (mounting would hide its files)"));
    }
    let result = new_image(&image, bytes, disk).and_then(|()| {
        format(&image, &dir).inspect_err(|_| {
            let _ = unmount(&dir);
            let _ = fs::remove_file(&image);
        })
    });
    if result.is_err() && made_dir {
        let _ = fs::remove_dir(&dir);
    }
    result
}

fn new_image(image: &Path, bytes: u64, disk: Disk) -> Result<(), QuotaError> {
    let _room = room::lock();
    let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(image).map_err(|e| {
        let kind = if e.kind() == io::ErrorKind::AlreadyExists { Kind::Exists } else { Kind::Failed };
        QuotaError::new(kind, "create image", image, e)
    })?;
    let sized = file.set_len(bytes).map_err(|e| QuotaError::new(size_kind(&e), "create image", image, e));
    let fits = match disk {
        Disk::Reserve => sized.and_then(|()| room::check(parent(image))),
        Disk::Overcommit => sized,
    };
    if fits.is_err() {
        let _ = fs::remove_file(image);
    }
    fits
}

/// mkfs, mount, then make the fresh root look like the directory it covers.
fn format(image: &Path, dir: &Path) -> Result<(), QuotaError> {
    // -m 0: no blocks reserved for root. -b 4096 also for small volumes, which may grow a lot.
    // meta_bg instead of resize_inode: the reserved group descriptor blocks of resize_inode only
    // last to about 1024 times the first size (resize2fs fails past them, an 8 MiB volume
    // grown to 16 GiB), meta_bg places new descriptors as groups are added, online and offline.
    // Lazy init is safe on a fresh sparse file: it reads as zeros already.
    let args = [
        "-q",
        "-F",
        "-m",
        "0",
        "-b",
        "4096",
        "-O",
        "^resize_inode,meta_bg",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1",
    ];
    let mut args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    args.push(image.as_os_str());
    tool("mkfs.ext4", image, "mkfs.ext4", &args, TIMEOUT)?;
    let plain = fs::metadata(dir).map_err(|e| failed("create", dir, e))?;
    mount(image, dir)?;
    let lost = dir.join("lost+found");
    fs::remove_dir(&lost).map_err(|e| failed("create", &lost, e))?;
    std::os::unix::fs::chown(dir, Some(plain.uid()), Some(plain.gid())).map_err(|e| failed("create", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(plain.mode() & 0o7777)).map_err(|e| failed("create", dir, e))
}

/// Mounts the volume `image` at `dir` (made with mode 0700 when missing), as at daemon start.
/// Ok at once when `dir` already has that image mounted; an error when it has something else.
pub fn mount(image: &Path, dir: &Path) -> Result<(), QuotaError> {
    let (image, dir) = (absolute("mount", image)?, absolute("mount", dir)?);
    if let Some((source, _)) = sys::mount_at(&dir) {
        let why = format!("already mounted from {}", source.display());
        return match sys::backing_file(&source) {
            Some(file) if file == image => Ok(()),
            _ => Err(QuotaError::new(Kind::Exists, "mount", &dir, why)),
        };
    }
    if !image.is_file() {
        return Err(failed("mount", &image, "the image is missing"));
    }
    make_dir(&dir)?;
    let args = [OsStr::new("-t"), OsStr::new("ext4"), OsStr::new("-o"), OsStr::new(MOUNT_OPTIONS)];
    tool("mount", &dir, "mount", &[&args[..], &[image.as_os_str(), dir.as_os_str()]].concat(), TIMEOUT)
}

/// Whether anything is mounted at `dir` (per /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    sys::absolute(dir).is_ok_and(|dir| sys::mount_at(&dir).is_some())
}

/// Unmounts the volume at `dir` and detaches its loop device; Ok when nothing is mounted. A busy
/// volume is unmounted lazily as a last resort ([`Unmounted::Lazy`]). Stop the containers first:
/// a running container keeps its own mount, so the unmount here would not even notice it.
pub fn unmount(dir: &Path) -> Result<Unmounted, QuotaError> {
    let Ok(dir) = sys::absolute(dir) else {
        return Ok(Unmounted::NotMounted);
    };
    match unmount_strict(&dir) {
        Ok(true) => Ok(Unmounted::Done),
        Ok(false) => Ok(Unmounted::NotMounted),
        Err(e) if e.kind == Kind::Busy => {
            tool("umount -l", &dir, "umount", &[OsStr::new("-l"), dir.as_os_str()], TIMEOUT)?;
            Ok(Unmounted::Lazy)
        }
        Err(e) => Err(e),
    }
}

/// Unmounts (never lazily) and waits for the loop device to go. Ok(false): nothing was mounted.
fn unmount_strict(dir: &Path) -> Result<bool, QuotaError> {
    let Some((source, _)) = sys::mount_at(dir) else {
        return Ok(false);
    };
    let attempt = || sys::run("umount", &[dir.as_os_str()], TIMEOUT).map_err(|e| failed("umount", dir, e));
    let busy = |out: &sys::Output| out.stderr.contains("busy");
    let mut out = attempt()?;
    if busy(&out) {
        thread::sleep(Duration::from_millis(200)); // a moment for a closing file to let go
        out = attempt()?;
    }
    if !out.ok() {
        let kind = if busy(&out) { Kind::Busy } else { Kind::Failed };
        return Err(QuotaError::new(kind, "umount", dir, out.describe()));
    }
    let Some(image) = sys::backing_file(&source) else {
        return Ok(true);
    };
    // `mount -o loop` sets autoclear: the kernel detaches the device itself, a moment later.
    for _ in 0..100 {
        if sys::backing_file(&source).as_deref() != Some(&image) {
            return Ok(true);
        }
        thread::sleep(Duration::from_millis(10));
    }
    tool("losetup -d", &image, "losetup", &[OsStr::new("-d"), source.as_os_str()], TIMEOUT)?;
    Ok(true)
}

/// Deletes a volume: unmounts it, then removes the image and the (then empty) directory.
/// Ok when already gone. A directory that is not empty once unmounted is left, with an error.
pub fn remove(image: &Path, dir: &Path) -> Result<(), QuotaError> {
    unmount(dir)?;
    gone(fs::remove_file(image)).map_err(|e| failed("remove image", image, e))?;
    gone(fs::remove_dir(dir)).map_err(|e| failed("remove directory", dir, e))
}

fn gone(removed: io::Result<()>) -> io::Result<()> {
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether this process may grow a mounted volume in place (the kernel wants CAP_SYS_RESOURCE);
/// without it a volume grows only while no server has it mounted.
pub fn grows_online() -> bool {
    sys::has_cap(CAP_SYS_RESOURCE)
}

/// Raises the limit of the volume at `dir` to `new_bytes`, online: the server keeps running and
/// its open files stay open (mounting the volume first if it was not). Shrinking is refused
/// ([`Kind::Shrink`]); the same size redoes the resize, finishing a grow that was cut short.
/// Without CAP_SYS_RESOURCE the kernel refuses online resizing, so the volume is unmounted,
/// grown and mounted again, which works only while nothing uses it ([`Kind::Busy`] otherwise).
/// With [`Disk::Reserve`], refused (the image left at its size) when the larger image would not
/// fit on the disk beside the others.
pub fn grow(image: &Path, dir: &Path, new_bytes: u64, disk: Disk) -> Result<(), QuotaError> {
    let (image, dir) = (absolute("grow", image)?, absolute("grow", dir)?);
    let current = fs::metadata(&image).map_err(|e| failed("grow", &image, e))?.len();
    if new_bytes < current {
        let why = format!("cannot shrink from {current} to {new_bytes} bytes");
        return Err(QuotaError::new(Kind::Shrink, "grow", &image, why));
    }
    mount(&image, &dir)?;
    let (dev, _) = sys::mount_at(&dir).ok_or_else(|| QuotaError::new(Kind::NotMounted, "grow", &dir, "not mounted"))?;
    if sys::has_cap(CAP_SYS_RESOURCE) {
        extend(&image, new_bytes, disk)?;
        tool("losetup -c", &image, "losetup", &[OsStr::new("-c"), dev.as_os_str()], TIMEOUT)?;
        return tool("resize2fs", &image, "resize2fs", &[dev.as_os_str()], LONG_TIMEOUT);
    }
    unmount_strict(&dir).map_err(|mut e| {
        if e.kind == Kind::Busy {
            e.cause += "; growing a volume in use needs CAP_SYS_RESOURCE, which lightd lacks: stop its servers first";
        }
        e
    })?;
    let grown = extend(&image, new_bytes, disk)
        .and_then(|()| fsck(&image))
        .and_then(|()| tool("resize2fs", &image, "resize2fs", &[image.as_os_str()], LONG_TIMEOUT));
    let mounted = mount(&image, &dir);
    grown.and(mounted)
}

/// Sets the image's size to `bytes`; with [`Disk::Reserve`], a growth the disk could not
/// hold beside the other images is put back and refused (checked under the lock of
/// `room.rs`, so no create takes the room meanwhile; the file system inside has not grown yet).
fn extend(image: &Path, bytes: u64, disk: Disk) -> Result<(), QuotaError> {
    let _room = room::lock();
    let file = OpenOptions::new().write(true).open(image).map_err(|e| failed("grow", image, e))?;
    let current = file.metadata().map_err(|e| failed("grow", image, e))?.len();
    file.set_len(bytes).map_err(|e| QuotaError::new(size_kind(&e), "grow", image, e))?;
    if disk == Disk::Reserve && bytes > current {
        if let Err(e) = room::check(parent(image)) {
            file.set_len(current).map_err(|undo| failed("grow", image, format!("{e}; and putting it back: {undo}")))?;
            return Err(e);
        }
    }
    Ok(())
}

/// A size the host's file system cannot hold in one file is the caller's mistake, not a failure
/// (EFBIG; `set_len` past `i64::MAX` is refused before any system call, as invalid input).
fn size_kind(e: &io::Error) -> Kind {
    if e.raw_os_error() == Some(libc::EFBIG) || e.kind() == io::ErrorKind::InvalidInput {
        Kind::TooLarge
    } else {
        Kind::Failed
    }
}

/// `e2fsck -f -p`: resize2fs wants a freshly checked file system. Exit 1 means fixed, fine.
fn fsck(image: &Path) -> Result<(), QuotaError> {
    let args = [OsStr::new("-f"), OsStr::new("-p"), image.as_os_str()];
    let out = sys::run("e2fsck", &args, LONG_TIMEOUT).map_err(|e| failed("e2fsck", image, e))?;
    match out.code {
        Some(0 | 1) => Ok(()),
        _ => Err(failed("e2fsck", image, out.describe())),
    }
}

/// Space of the volume mounted at `dir`; [`Kind::NotMounted`] for a plain directory (whose
/// numbers would be the host disk's).
pub fn usage(dir: &Path) -> Result<Usage, QuotaError> {
    let here = fs::metadata(dir).map_err(|e| failed("usage", dir, e))?;
    let above = fs::metadata(dir.join("..")).map_err(|e| failed("usage", dir, e))?;
    if here.dev() == above.dev() {
        return Err(QuotaError::new(Kind::NotMounted, "usage", dir, "no volume is mounted here"));
    }
    let s = sys::statvfs(dir).map_err(|e| failed("usage", dir, e))?;
    let (unit, blocks, free, avail) = (s.f_frsize as u64, s.f_blocks as u64, s.f_bfree as u64, s.f_bavail as u64);
    Ok(Usage { used_bytes: blocks.saturating_sub(free) * unit, total_bytes: blocks * unit, avail_bytes: avail * unit })
}

/// Runs a tool that must exit 0.
fn tool(step: &'static str, path: &Path, program: &str, args: &[&OsStr], timeout: Duration) -> Result<(), QuotaError> {
    let out = sys::run(program, args, timeout).map_err(|e| failed(step, path, e))?;
    if out.ok() {
        Ok(())
    } else {
        Err(failed(step, path, out.describe()))
    }
}

/// The directory `path` is in (the images' directory, for an image).
fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn absolute(step: &'static str, path: &Path) -> Result<PathBuf, QuotaError> {
    sys::absolute(path).map_err(|e| failed(step, path, e))
}

/// Makes `dir` (mode 0700) if missing; true when it did. Refuses anything but a plain directory:
/// mount would follow a symlink and mount its target instead.
fn make_dir(dir: &Path) -> Result<bool, QuotaError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => Ok(false),
            _ => Err(failed("create", dir, "exists and is not a plain directory")),
        },
        Err(e) => Err(failed("create", dir, e)),
    }
}
