//! The system plumbing behind `quota`: running a tool with a deadline, reading
//! `/proc/self/mountinfo`, loop devices in sysfs, capabilities and `statvfs`.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Where tools are looked up: fixed, so the daemon's own `PATH` (often without `sbin`) does not matter.
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;

/// What a finished tool said.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub status: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// The tool's complaint and exit status, for an error message.
    pub fn describe(&self) -> String {
        if self.stderr.is_empty() {
            format!("({})", self.status)
        } else {
            format!("{} ({})", self.stderr, self.status)
        }
    }
}

/// Runs `program args..` directly (no shell) with `LC_ALL=C` and a fixed `PATH`; kills it at
/// the deadline. `Err` only when it could not be run or did not finish in time.
pub fn run(program: &str, args: &[&OsStr], timeout: Duration) -> Result<Output, String> {
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("LC_ALL", "C")
        .env("PATH", PATH_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // Drained on a thread so a chatty tool never blocks on a full pipe while we wait for it.
    let stderr = child.stderr.take().and_then(drain);
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            waited => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(match waited {
                    Err(e) => format!("waiting for {program}: {e}"),
                    _ => format!("{program} did not finish within {} s and was killed", timeout.as_secs()),
                });
            }
        }
    };
    // The pipe closes when the tool exits, unless something it started holds it: never wait past the deadline.
    let finished = |h: &JoinHandle<Vec<u8>>| {
        while !h.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        h.is_finished()
    };
    let stderr = stderr.filter(finished).and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Output {
        code: status.code(),
        status: status.to_string(),
        stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
    })
}

/// Reads a pipe to its end on a thread; `None` (the pipe closed) when no thread can be had.
fn drain(mut pipe: impl Read + Send + 'static) -> Option<JoinHandle<Vec<u8>>> {
    thread::Builder::new()
        .name("quota-pipe".into())
        .spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
        .ok()
}

/// Whether `program` is an executable file in the fixed `PATH`.
pub fn find_tool(program: &str) -> bool {
    let runnable = |m: fs::Metadata| m.is_file() && m.permissions().mode() & 0o111 != 0;
    PATH_ENV.split(':').any(|d| fs::metadata(Path::new(d).join(program)).is_ok_and(runnable))
}

/// Whether this process has capability `bit` in its effective set.
pub fn has_cap(bit: u32) -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim).unwrap_or("0");
    u64::from_str_radix(eff, 16).is_ok_and(|caps| caps >> bit & 1 == 1)
}

/// `path` with its parent resolved (symlinks, `..`), as the kernel names it in mountinfo and sysfs.
/// The last component is not resolved, so this works for a missing path and never touches a mount.
pub fn absolute(path: &Path) -> io::Result<PathBuf> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    Ok(fs::canonicalize(parent)?.join(name))
}

/// The topmost mount at `dir` (an absolute path): `(source, per-mount options)`.
pub fn mount_at(dir: &Path) -> Option<(PathBuf, String)> {
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Fields: id parent major:minor root mount-point options [optional..] - fstype source super-options
    table.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut left = left.split(' ').skip(4);
        let point = unescape(left.next()?);
        let options = left.next()?.to_string();
        let source = unescape(right.split(' ').nth(1)?);
        (point == dir).then_some((source, options))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space and such).
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The file behind loop device `dev` (`/dev/loopN`), from sysfs; `None` for anything else.
pub fn backing_file(dev: &Path) -> Option<PathBuf> {
    let name = dev.strip_prefix("/dev").ok()?.to_str()?;
    if !name.starts_with("loop") {
        return None;
    }
    let mut raw = fs::read(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    if raw.last() == Some(&b'\n') {
        raw.pop();
    }
    Some(PathBuf::from(OsString::from_vec(raw)))
}

/// `statvfs(2)`: std has no wrapper.
pub fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut out = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is NUL-terminated and `out` is writable memory of the type statvfs fills in.
    if unsafe { libc::statvfs(c.as_ptr(), out.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct (which started zeroed anyway).
    Ok(unsafe { out.assume_init() })
}
