//! The master token: where it lives, how it is made and replaced, and how a running daemon
//! notices a replacement. A token named in the config (`authorization.token`) is the
//! operator's; otherwise lightd generates one into a file of its own beside the state file
//! (mode 0600), so a checkout's tracked `config.json` never receives a secret.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::config::{Config, ConfigError};
use crate::{fsutil, ids};

/// The file a generated token is kept in: `token` beside the state file.
pub fn token_file(config: &Config) -> PathBuf {
    config.storage.state_dir().join("token")
}

/// The master token: the config's, else the token file's (`None` when neither has one).
pub fn load(config: &Config) -> Result<Option<String>, ConfigError> {
    if !config.authorization.token.is_empty() {
        return Ok(Some(config.authorization.token.clone()));
    }
    let path = token_file(config);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::Read(path, e)),
    }
}

/// The master token, generated into the token file on first use.
pub fn ensure(config: &Config) -> Result<String, ConfigError> {
    match load(config)? {
        Some(t) => Ok(t),
        None => write_new(config, None),
    }
}

/// Replaces the master token (in the config file when the config names one, else in the
/// token file) and returns the new one. A running daemon picks it up within a second.
pub fn reset(config: &Config, config_path: &Path) -> Result<String, ConfigError> {
    write_new(config, (!config.authorization.token.is_empty()).then_some(config_path))
}

fn write_new(config: &Config, config_path: Option<&Path>) -> Result<String, ConfigError> {
    let token = ids::new_token().map_err(|e| ConfigError::Invalid(format!("no randomness: {e}")))?;
    match config_path {
        Some(path) => {
            let mut updated = config.clone();
            updated.authorization.token = token.clone();
            updated.save(path)?;
        }
        None => {
            let path = token_file(config);
            fsutil::write_atomic(&path, format!("{token}\n").as_bytes(), 0o600)
                .map_err(|e| ConfigError::Write(path.clone(), e))?;
            crate::info!("wrote a new API token to {} (show it with {} --token what)", path.display(), this_binary());
        }
    }
    Ok(token)
}

/// How to run this binary again, for hints in the log: its real path (after `cargo run` no
/// `lightd` is on `PATH`), or `lightd` when it cannot be known.
fn this_binary() -> String {
    std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "lightd".into())
}

/// The master token of a running daemon, replaced when its source changes.
///
/// Every request checks it, so reading it must not write shared memory: each thread keeps
/// its own copy, tagged with the generation it was read at, and only rereads the shared one
/// after a change (one plain atomic load per check otherwise).
pub struct Master {
    token: RwLock<Arc<str>>,
    generation: AtomicU64,
}

thread_local! {
    /// (which `Master`, its generation, its token) as this thread last read it.
    static SEEN: RefCell<Option<(usize, u64, Arc<str>)>> = const { RefCell::new(None) };
}

impl Master {
    pub fn new(token: String) -> Master {
        Master { token: RwLock::new(token.into()), generation: AtomicU64::new(0) }
    }

    pub fn get(&self) -> Arc<str> {
        Arc::clone(&self.token.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Calls `f` with the current token, from this thread's copy while it is current.
    pub fn with<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        let me = self as *const Master as usize;
        let generation = self.generation.load(Acquire);
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            match &*seen {
                Some((m, g, token)) if *m == me && *g == generation => f(token),
                _ => {
                    let token = self.get();
                    let out = f(&token);
                    *seen = Some((me, generation, token));
                    out
                }
            }
        })
    }

    /// Sets `token`; returns whether it changed.
    pub fn set(&self, token: String) -> bool {
        let mut t = self.token.write().unwrap_or_else(|p| p.into_inner());
        if *t.as_ref() == *token {
            return false;
        }
        *t = token.into();
        // After the token: a reader that sees the new generation reads the new token.
        self.generation.fetch_add(1, Release);
        true
    }
}

/// When the files the token comes from last changed, to reread them only then.
pub fn stamp(config: &Config, config_path: Option<&Path>) -> Vec<Option<(SystemTime, u64)>> {
    let files = config_path.into_iter().map(Path::to_path_buf).chain([token_file(config)]);
    files.map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

/// How often a running daemon looks for a replaced token.
pub const POLL: Duration = Duration::from_millis(500);

/// The master token as the config file (reread) and the token file say now.
pub fn reread(config: &Config, config_path: Option<&Path>) -> Result<Option<String>, ConfigError> {
    match config_path {
        Some(p) if p.exists() => {
            let mut now = Config::load(p)?;
            // Only the token is taken from a reread config; the rest needs a restart.
            now.storage = config.storage.clone();
            load(&now)
        }
        _ => load(config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_sees_a_new_master_token_at_once() {
        let (a, b) = (Master::new("lightd_aaaaaaaaaaaaaaaa".into()), Master::new("lightd_bbbbbbbbbbbbbbbb".into()));
        // Two masters on one thread: each its own token, never the other's cached copy.
        assert_eq!(a.with(str::to_string), "lightd_aaaaaaaaaaaaaaaa");
        assert_eq!(b.with(str::to_string), "lightd_bbbbbbbbbbbbbbbb");
        assert!(!a.set("lightd_aaaaaaaaaaaaaaaa".into()), "the same token is no change");
        assert!(a.set("lightd_cccccccccccccccc".into()));
        assert_eq!(a.with(str::to_string), "lightd_cccccccccccccccc");
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(a.with(str::to_string), "lightd_cccccccccccccccc"));
        });
    }

    #[test]
    fn generated_into_the_token_file_and_reset_there() {
        let dir = std::env::temp_dir().join(format!("lightd-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Config::default();
        c.storage.state_file = dir.join("state.json");
        assert_eq!(load(&c).unwrap(), None);
        let first = ensure(&c).unwrap();
        assert_eq!(ensure(&c).unwrap(), first, "made once");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(token_file(&c)).unwrap().permissions().mode() & 0o777, 0o600);
        let second = reset(&c, &dir.join("config.json")).unwrap();
        assert_ne!(second, first);
        assert_eq!(load(&c).unwrap(), Some(second));
        assert!(!dir.join("config.json").exists(), "the config is never written for a generated token");
        c.authorization.token = "lightd_0123456789abcdef0123".into();
        assert_eq!(load(&c).unwrap().as_deref(), Some("lightd_0123456789abcdef0123"), "the config's wins");
        let m = Master::new("a".into());
        assert!(!m.set("a".into()));
        assert!(m.set("b".into()));
        assert_eq!(&*m.get(), "b");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
