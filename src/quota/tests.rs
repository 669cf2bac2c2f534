//! Real loop-device tests. They need root and loop devices (as on CI) and fail, never skip,
//! without them. Each works in its own scratch directory and cleans up even when it fails.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Instant;

use super::*;

const MIB: u64 = 1 << 20;

/// A scratch base directory with room for volumes; Drop unmounts whatever is mounted below it
/// and removes it, so a failed assertion leaves no mount or loop device behind.
struct Scratch {
    base: PathBuf,
    image: PathBuf,
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let base = std::env::temp_dir().join(format!("lightd-quota-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).expect("scratch directory");
        let scratch = Scratch { image: image_path(&base, "vol"), dir: base.join("vol"), base };
        let (mode, why) = detect(&scratch.base);
        assert_eq!(mode, Mode::Loop, "these tests need root and loop devices (CI has both): {why}");
        scratch
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for dir in mounts_under(&self.base) {
            if unmount(&dir).is_err() {
                let _ = Command::new("umount").arg("-l").arg(&dir).status();
            }
        }
        if mounts_under(&self.base).is_empty() {
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}

/// Mount points at or below `base` (no escaping needed: scratch paths have no spaces).
fn mounts_under(base: &Path) -> Vec<PathBuf> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table.lines().filter_map(|l| l.split(' ').nth(4)).map(PathBuf::from).filter(|p| p.starts_with(base)).collect()
}

/// The per-mount options of the mount at `dir`, if any.
fn mount_options(dir: &Path) -> Option<String> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == dir.to_str().as_ref())
        .map(|f| f[5].into())
}

fn losetup(args: &[&str]) -> String {
    let out = Command::new("losetup").args(args).output().expect("losetup runs");
    assert!(out.status.success(), "losetup {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Appends to `file` until a write fails; panics past `cap` (the limit is not enforced then,
/// and the host disk must not be filled).
fn fill(file: &mut File, cap: u64) -> (u64, io::Error) {
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => return (written, e),
        }
        assert!(written <= cap, "wrote {written} bytes into a smaller volume: the limit is not enforced");
    }
}

fn host_avail() -> u64 {
    let s = sys::statvfs(&std::env::temp_dir()).expect("statvfs of the temp dir");
    s.f_bavail as u64 * s.f_frsize as u64
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).expect("image exists").len()
}

#[test]
fn limit_is_enforced_and_usage_follows() {
    let s = Scratch::new("limit");
    let host_before = host_avail();
    create(&s.image, &s.dir, 16 * MIB, Disk::Overcommit).unwrap();
    assert_eq!(len(&s.image), 16 * MIB);
    let options = mount_options(&s.dir).expect("volume is mounted");
    let options: Vec<&str> = options.split(',').collect();
    assert!(options.contains(&"nosuid") && options.contains(&"nodev"), "options {options:?}");
    assert!(!options.contains(&"noexec"), "servers run binaries from their volume: {options:?}");
    assert!(fs::read_dir(&s.dir).unwrap().next().is_none(), "a fresh volume is empty (no lost+found)");
    assert_eq!(fs::metadata(&s.dir).unwrap().permissions().mode() & 0o7777, 0o700);

    let fresh = usage(&s.dir).unwrap();
    assert!(fresh.used_bytes < 64 * 1024, "fresh volume uses {} bytes", fresh.used_bytes);
    assert!(fresh.total_bytes > 8 * MIB && fresh.total_bytes <= 16 * MIB, "{fresh:?}");

    let mut file = File::create(s.dir.join("big")).unwrap();
    let (written, err) = fill(&mut file, 64 * MIB);
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(written + MIB >= fresh.avail_bytes && written <= 16 * MIB, "ENOSPC after {written} bytes; {fresh:?}");
    drop(file);

    let full = usage(&s.dir).unwrap();
    assert!(full.used_bytes >= written && full.used_bytes <= written + MIB, "wrote {written}, {full:?}");
    assert!(full.avail_bytes < MIB, "{full:?}");
    // What the host gave: the image's own blocks (exact), and the free space (others are
    // compiling on this machine, hence the slack; an unenforced limit would have hit the cap).
    let allocated = fs::metadata(&s.image).unwrap().blocks() * 512;
    assert!(allocated <= 16 * MIB, "the image takes {allocated} bytes of the host");
    let host_drop = host_before.saturating_sub(host_avail());
    assert!(host_drop <= 16 * MIB + 256 * MIB, "host free space dropped by {host_drop}");
}

#[test]
fn grows_while_in_use_and_refuses_shrinking() {
    let s = Scratch::new("grow");
    create(&s.image, &s.dir, 16 * MIB, Disk::Overcommit).unwrap();
    let path = s.dir.join("world.dat");
    let mut file = File::create(&path).unwrap();
    let (first, err) = fill(&mut file, 64 * MIB);
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let before = usage(&s.dir).unwrap();

    let e = grow(&s.image, &s.dir, 8 * MIB, Disk::Overcommit).unwrap_err();
    assert_eq!(e.kind, Kind::Shrink, "{e}");
    assert_eq!(len(&s.image), 16 * MIB);

    if sys::has_cap(CAP_SYS_RESOURCE) {
        grow(&s.image, &s.dir, 32 * MIB, Disk::Overcommit).unwrap();
    } else {
        // The kernel refuses online resizing without CAP_SYS_RESOURCE: an in-use volume is
        // refused untouched, an unused one is grown offline.
        let e = grow(&s.image, &s.dir, 32 * MIB, Disk::Overcommit).unwrap_err();
        assert_eq!(e.kind, Kind::Busy, "{e}");
        assert!(e.to_string().contains("CAP_SYS_RESOURCE"), "{e}");
        assert!(is_mounted(&s.dir));
        assert_eq!(len(&s.image), 16 * MIB);
        eprintln!("no CAP_SYS_RESOURCE: checked the refusal while in use, then an offline grow");
        drop(file);
        grow(&s.image, &s.dir, 32 * MIB, Disk::Overcommit).unwrap();
        file = OpenOptions::new().append(true).open(&path).unwrap();
        assert_eq!(file.metadata().unwrap().len(), first);
    }
    assert_eq!(len(&s.image), 32 * MIB);
    let after = usage(&s.dir).unwrap();
    assert!(after.total_bytes >= before.total_bytes + 15 * MIB, "{before:?} -> {after:?}");
    let (more, err) = fill(&mut file, 64 * MIB);
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(more >= 14 * MIB, "only {more} more bytes after growing by 16 MiB");
    let options = mount_options(&s.dir).expect("still mounted");
    assert!(options.contains("nosuid") && options.contains("nodev"), "{options}");
}

/// A volume grows far past its first size (resize_inode's reserved descriptors would end at
/// about 1024 times it).
#[test]
fn small_volume_grows_a_thousandfold() {
    let s = Scratch::new("grow-far");
    create(&s.image, &s.dir, 8 * MIB, Disk::Overcommit).unwrap();
    fs::write(s.dir.join("keep.txt"), b"kept").unwrap();
    grow(&s.image, &s.dir, 16 << 30, Disk::Overcommit).unwrap();
    assert_eq!(len(&s.image), 16 << 30);
    assert!(usage(&s.dir).unwrap().total_bytes > 15 << 30);
    assert_eq!(fs::read(s.dir.join("keep.txt")).unwrap(), b"kept");
}

#[test]
fn unmount_and_mount_keep_the_data() {
    let s = Scratch::new("remount");
    create(&s.image, &s.dir, 16 * MIB, Disk::Overcommit).unwrap();
    fs::write(s.dir.join("world.dat"), b"hello").unwrap();
    mount(&s.image, &s.dir).unwrap(); // already mounted: fine

    assert_eq!(unmount(&s.dir).unwrap(), Unmounted::Done);
    assert!(!is_mounted(&s.dir) && mount_options(&s.dir).is_none());
    assert!(!s.dir.join("world.dat").exists());
    assert_eq!(losetup(&["-j", s.image.to_str().unwrap()]), "", "the loop device is detached");
    assert_eq!(usage(&s.dir).unwrap_err().kind, Kind::NotMounted);
    assert_eq!(unmount(&s.dir).unwrap(), Unmounted::NotMounted);

    mount(&s.image, &s.dir).unwrap();
    assert_eq!(fs::read(s.dir.join("world.dat")).unwrap(), b"hello");
    assert!(mount_options(&s.dir).is_some_and(|o| o.contains("nosuid") && o.contains("nodev")));

    // Another image is not mounted over a mounted volume, nor a new volume created there.
    let (image2, dir2) = (image_path(&s.base, "other"), s.base.join("other"));
    create(&image2, &dir2, MIN_BYTES, Disk::Overcommit).unwrap();
    unmount(&dir2).unwrap();
    assert_eq!(mount(&image2, &s.dir).unwrap_err().kind, Kind::Exists);
    let image3 = image_path(&s.base, "third");
    assert_eq!(create(&image3, &s.dir, 16 * MIB, Disk::Overcommit).unwrap_err().kind, Kind::Exists);
    assert!(!image3.exists());
    assert_eq!(fs::read(s.dir.join("world.dat")).unwrap(), b"hello");
}

#[test]
fn busy_volume_is_unmounted_lazily() {
    let s = Scratch::new("busy");
    create(&s.image, &s.dir, 16 * MIB, Disk::Overcommit).unwrap();
    let file = File::create(s.dir.join("open")).unwrap();
    assert_eq!(unmount(&s.dir).unwrap(), Unmounted::Lazy);
    assert!(!is_mounted(&s.dir));
    let image = s.image.to_str().unwrap();
    assert_ne!(losetup(&["-j", image]), "", "the file system lives on while a file is open");
    drop(file);
    // The kernel lets the device go asynchronously: waited for, not timed.
    let started = Instant::now();
    while !losetup(&["-j", image]).is_empty() {
        assert!(started.elapsed().as_secs() < 120, "the loop device stays after the last file closed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn remove_leaves_nothing_behind() {
    let s = Scratch::new("remove");
    create(&s.image, &s.dir, 16 * MIB, Disk::Overcommit).unwrap();
    fs::write(s.dir.join("world.dat"), b"hello").unwrap();
    remove(&s.image, &s.dir).unwrap();
    assert!(!s.image.exists() && !s.dir.exists());
    assert!(mount_options(&s.dir).is_none());
    let image = s.image.to_str().unwrap();
    assert!(!losetup(&["-l", "-n", "-O", "BACK-FILE"]).contains(image), "a loop device still backs {image}");
    remove(&s.image, &s.dir).unwrap(); // already gone: fine
}

#[test]
fn refusals_and_failures_leave_nothing_behind() {
    let s = Scratch::new("refuse");
    let e = create(&s.image, &s.dir, 4 * MIB, Disk::Overcommit).unwrap_err();
    assert_eq!(e.kind, Kind::TooSmall);
    assert!(e.to_string().contains("create") && e.to_string().contains(s.image.to_str().unwrap()), "{e}");
    assert!(!s.image.exists() && !s.dir.exists());

    // An existing image is never overwritten.
    fs::create_dir_all(s.image.parent().unwrap()).unwrap();
    fs::write(&s.image, b"precious").unwrap();
    assert_eq!(create(&s.image, &s.dir, 16 * MIB, Disk::Overcommit).unwrap_err().kind, Kind::Exists);
    assert_eq!(fs::read(&s.image).unwrap(), b"precious");
    assert!(!s.dir.exists());

    // A tool's failure names the step, the path and what the tool said.
    let e = mount(&s.image, &s.dir).unwrap_err();
    assert_eq!(e.kind, Kind::Failed);
    assert!(e.to_string().starts_with(&format!("volume mount {}: ", s.dir.display())), "{e}");
    assert!(e.cause.contains("exit status"), "{e}");
    assert!(!is_mounted(&s.dir));
    fs::remove_file(&s.image).unwrap();

    // Files in the directory are not hidden under a new volume.
    fs::write(s.dir.join("keep"), b"mine").unwrap();
    assert_eq!(create(&s.image, &s.dir, 16 * MIB, Disk::Overcommit).unwrap_err().kind, Kind::Exists);
    assert_eq!(fs::read(s.dir.join("keep")).unwrap(), b"mine");
    assert!(!s.image.exists());
}

/// The probe's time is a measurement (`timings`), not a check: a loaded machine took 2 s.
#[test]
fn detect_is_tidy() {
    let s = Scratch::new("detect");
    let (mode, why) = detect(&s.base);
    assert_eq!(mode, Mode::Loop, "{why}");
    assert!(why.starts_with("quota: loop (ext4 images, kernel-enforced"), "{why}");
    assert_eq!(fs::read_dir(&s.base).unwrap().count(), 0, "the probe leaves nothing in the base directory");
    assert!(mounts_under(&s.base).is_empty());
}

#[test]
fn images_live_in_a_hidden_directory() {
    assert_eq!(image_path(Path::new("/v"), "d6764075"), Path::new("/v/.images/d6764075.ext4"));
    assert_eq!((Mode::Loop.as_str(), Mode::None.as_str()), ("loop", "none"));
}

#[test]
fn tools_run_with_a_fixed_env_and_a_deadline() {
    let out =
        sys::run("sh", &[OsStr::new("-c"), OsStr::new("echo \"$LC_ALL $HOME\" >&2; exit 3")], Duration::from_secs(5));
    let out = out.unwrap();
    assert_eq!((out.code, out.stderr.as_str()), (Some(3), "C"));
    // The deadline ends the tool: `sleep 3600` is cut off, whatever the machine's load.
    let started = Instant::now();
    let late = sys::run("sleep", &[OsStr::new("3600")], Duration::from_millis(200)).unwrap_err();
    assert!(late.contains("did not finish") && started.elapsed().as_secs() < 600, "{late}");
    assert!(sys::run("no-such-tool", &[], Duration::from_secs(5)).unwrap_err().contains("cannot run no-such-tool"));
}

/// Timings for the report: `cargo test --lib quota::tests::timings -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn timings() {
    let s = Scratch::new("timings");
    let t = Instant::now();
    let (_, why) = detect(&s.base);
    eprintln!("detect {:?}: {why}", t.elapsed());
    for gib in [1u64, 10] {
        let (image, dir) = (image_path(&s.base, &format!("{gib}g")), s.base.join(format!("{gib}g")));
        let t = Instant::now();
        create(&image, &dir, gib << 30, Disk::Overcommit).unwrap();
        let created = t.elapsed();
        let t = Instant::now();
        grow(&image, &dir, gib << 31, Disk::Overcommit).unwrap();
        let grown = t.elapsed();
        let t = Instant::now();
        let used = usage(&dir).unwrap();
        let measured = t.elapsed();
        let allocated = fs::metadata(&image).unwrap().blocks() * 512;
        eprintln!(
            "{gib} GiB: create {created:?}, grow to {} GiB {grown:?}, usage {measured:?} ({used:?}), image takes {} KiB",
            gib * 2,
            allocated >> 10
        );
        let t = Instant::now();
        unmount(&dir).unwrap();
        let unmounted = t.elapsed();
        let t = Instant::now();
        mount(&image, &dir).unwrap();
        let mounted = t.elapsed();
        let t = Instant::now();
        remove(&image, &dir).unwrap();
        eprintln!("{gib} GiB: unmount {unmounted:?}, mount {mounted:?}, remove {:?}", t.elapsed());
    }
}

#[test]
fn a_volume_the_disk_could_not_hold_is_refused_and_leaves_nothing() {
    let s = Scratch::new("room");
    let past = host_avail() + (1 << 30);
    let e = create(&s.image, &s.dir, past, Disk::Reserve).unwrap_err();
    assert_eq!(e.kind, Kind::NoRoom, "{e}");
    assert!(!s.image.exists() && !s.dir.exists(), "nothing is left of a refused create");
    create(&s.image, &s.dir, 16 * MIB, Disk::Reserve).unwrap();
    let e = grow(&s.image, &s.dir, past, Disk::Reserve).unwrap_err();
    assert_eq!(e.kind, Kind::NoRoom, "{e}");
    assert_eq!(len(&s.image), 16 * MIB, "a refused grow changes nothing");
    assert!(is_mounted(&s.dir));
    grow(&s.image, &s.dir, 32 * MIB, Disk::Reserve).unwrap();
    assert_eq!(len(&s.image), 32 * MIB);
}
