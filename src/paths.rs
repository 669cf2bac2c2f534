//! The places lightd writes, checked at start before anything is written: the state file's
//! directory, `storage.data_path`, `volumes.base_path` and `backups.path`. A directory this
//! process cannot create or write fails the start at once with a message naming the path, the
//! config key and the fix (the defaults under `/var/lib/lightd` need root), instead of a bare
//! "Permission denied" later, and before a generated token is written anywhere.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags};

use crate::config::Config;

/// What to do about a place lightd may not write.
pub const HINT: &str =
    "run lightd as root, or set storage.* / volumes.base_path / backups.path in the config to directories this user may write";

/// A place lightd needs and cannot use.
#[derive(Debug)]
pub struct Unusable {
    /// The config key that names it.
    pub key: &'static str,
    /// The path the key names.
    pub path: PathBuf,
    /// What is wrong, naming the path where it went wrong (the key's or an ancestor's).
    pub why: String,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot use {} ({}): {}; {HINT}", self.path.display(), self.key, self.why)
    }
}

/// Checks every place lightd writes; the first that cannot be used is the error.
pub fn check(config: &Config) -> Result<(), Unusable> {
    let state = &config.storage.state_file;
    let state_dir = state.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    check_dir("storage.state_file", state_dir)?;
    check_file("storage.state_file", state, Access::READ_OK | Access::WRITE_OK)?;
    if config.authorization.token.is_empty() {
        check_file("storage.state_file", &crate::secret::token_file(config), Access::READ_OK)?;
    }
    check_dir("storage.data_path", &config.storage.data_path)?;
    check_dir("volumes.base_path", &config.volumes.base_path)?;
    check_dir("backups.path", &config.backups.path)
}

/// `dir` exists as a directory this process may write and enter, or can be created: its
/// nearest existing ancestor is such a directory.
fn check_dir(key: &'static str, dir: &Path) -> Result<(), Unusable> {
    let unusable = |why: String| Unusable { key, path: dir.to_path_buf(), why };
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(meta) if meta.is_dir() => {
                return may(at, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| {
                    let made = if at == dir { "" } else { ", so it cannot be created" };
                    unusable(format!("{} is not writable by uid {}{made} ({e})", at.display(), euid()))
                });
            }
            Ok(_) => return Err(unusable(format!("{} is not a directory", at.display()))),
            // Absent, or under a file (ENOTDIR): the ancestors tell which.
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                match at.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                    // A relative path below the working directory: checked when it is made.
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(unusable(format!("cannot reach {} as uid {} ({e})", at.display(), euid()))),
        }
    }
}

/// `file`, when it exists, allows `access` (its directory is checked by `check_dir`).
fn check_file(key: &'static str, file: &Path, access: Access) -> Result<(), Unusable> {
    if !file.exists() {
        return Ok(());
    }
    may(file, access).map_err(|e| Unusable {
        key,
        path: file.to_path_buf(),
        why: format!("it is not {} by uid {} ({e})", describe(access), euid()),
    })
}

fn describe(access: Access) -> &'static str {
    if access.contains(Access::WRITE_OK) {
        "readable and writable"
    } else {
        "readable"
    }
}

/// Whether this process (its effective ids and capabilities) may `access` `path`.
fn may(path: &Path, access: Access) -> io::Result<()> {
    rustix::fs::accessat(rustix::fs::CWD, path, access, AtFlags::EACCESS).map_err(io::Error::from)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A directory removed when dropped.
    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config_in(dir: &Path) -> Config {
        let mut c = Config::default();
        c.storage.state_file = dir.join("state/state.json");
        c.storage.data_path = dir.join("data");
        c.volumes.base_path = dir.join("deep/er/volumes");
        c.backups.path = dir.join("backups");
        c
    }

    #[test]
    fn writable_or_creatable_places_pass() {
        let dir = TempDir(std::env::temp_dir().join(format!("lightd-paths-ok-{}", std::process::id())));
        std::fs::create_dir_all(dir.0.join("data")).unwrap();
        check(&config_in(&dir.0)).unwrap();
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let dir = TempDir(std::env::temp_dir().join(format!("lightd-paths-file-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.0.join("deep"), b"").unwrap();
        let e = check(&config_in(&dir.0)).unwrap_err();
        assert_eq!(e.key, "volumes.base_path");
        let msg = e.to_string();
        assert!(msg.contains(&format!("{} is not a directory", dir.0.join("deep").display())), "{msg}");
        assert!(msg.contains(HINT), "{msg}");
    }

    /// Mode bits bind only without CAP_DAC_OVERRIDE; as root this checks the read-only case.
    #[test]
    fn a_locked_directory_is_named_with_the_fix() {
        let dir = TempDir(std::env::temp_dir().join(format!("lightd-paths-locked-{}", std::process::id())));
        std::fs::create_dir_all(dir.0.join("backups")).unwrap();
        std::fs::set_permissions(dir.0.join("backups"), std::fs::Permissions::from_mode(0o500)).unwrap();
        let result = check(&config_in(&dir.0));
        std::fs::set_permissions(dir.0.join("backups"), std::fs::Permissions::from_mode(0o700)).unwrap();
        if euid() == 0 {
            // Root may write a 0500 directory; the unprivileged case is tests/permissions.rs.
            result.unwrap();
            return;
        }
        let e = result.unwrap_err();
        assert_eq!(e.key, "backups.path");
        assert!(e.to_string().contains("not writable"), "{e}");
    }
}
