//! The record of a server's crashes: each exit the daemon did not ask for, with the console
//! lines that came before it. Kept beside the server's journal in `crashes.json` (written
//! whole and atomically), newest first, the last [`KEEP`].

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Crashes kept per server.
pub const KEEP: usize = 20;
/// Console lines kept with each crash.
pub const LINES: usize = 50;

/// One exit the daemon did not ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crash {
    /// Unix seconds.
    pub at: u64,
    pub exit_code: i64,
    /// The signal that ended it (`SIGKILL`), when its exit code says it died of one.
    pub signal: Option<String>,
    pub oom_killed: bool,
    /// Whether the crash policy started it again.
    pub restarted: bool,
    /// The last console lines before the exit, oldest first.
    pub lines: Vec<String>,
}

impl Crash {
    /// The signal a shell-style exit code (128 + n) names, as `SIGKILL`.
    pub fn signal_of(exit_code: i64) -> Option<String> {
        const NAMES: [&str; 31] = [
            "SIGHUP",
            "SIGINT",
            "SIGQUIT",
            "SIGILL",
            "SIGTRAP",
            "SIGABRT",
            "SIGBUS",
            "SIGFPE",
            "SIGKILL",
            "SIGUSR1",
            "SIGSEGV",
            "SIGUSR2",
            "SIGPIPE",
            "SIGALRM",
            "SIGTERM",
            "SIGSTKFLT",
            "SIGCHLD",
            "SIGCONT",
            "SIGSTOP",
            "SIGTSTP",
            "SIGTTIN",
            "SIGTTOU",
            "SIGURG",
            "SIGXCPU",
            "SIGXFSZ",
            "SIGVTALRM",
            "SIGPROF",
            "SIGWINCH",
            "SIGIO",
            "SIGPWR",
            "SIGSYS",
        ];
        let n = usize::try_from(exit_code.checked_sub(128)?).ok()?;
        NAMES.get(n.checked_sub(1)?).map(|s| s.to_string())
    }
}

/// The crashes on record in `file`, newest first (none when it is missing or unreadable: a
/// lost record must not stop a server).
pub fn read(file: &Path) -> Vec<Crash> {
    std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Puts `crash` first in `file`, keeping the last [`KEEP`].
pub fn add(file: &Path, crash: Crash) -> io::Result<()> {
    let mut all = read(file);
    all.insert(0, crash);
    all.truncate(KEEP);
    let bytes = serde_json::to_vec(&all).map_err(io::Error::other)?;
    fsutil::write_atomic(file, &bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn signals_from_exit_codes() {
        assert_eq!(Crash::signal_of(137).as_deref(), Some("SIGKILL"));
        assert_eq!(Crash::signal_of(143).as_deref(), Some("SIGTERM"));
        assert_eq!(Crash::signal_of(139).as_deref(), Some("SIGSEGV"));
        for plain in [0, 1, 3, 127, 128, 200, -1] {
            assert_eq!(Crash::signal_of(plain), None, "{plain}");
        }
    }

    #[test]
    fn newest_first_and_only_the_last_twenty() {
        let dir = TempDir::new("crashes");
        let file = dir.path().join("crashes.json");
        assert!(read(&file).is_empty());
        for i in 0..25 {
            let c = Crash {
                at: i,
                exit_code: 3,
                signal: None,
                oom_killed: false,
                restarted: i % 2 == 0,
                lines: vec![format!("line {i}")],
            };
            add(&file, c).unwrap();
        }
        let all = read(&file);
        assert_eq!(all.len(), KEEP);
        assert_eq!(all.iter().map(|c| c.at).collect::<Vec<_>>(), (5..25).rev().collect::<Vec<_>>());
        std::fs::write(&file, b"{torn").unwrap();
        assert!(read(&file).is_empty(), "an unreadable record reads as none");
    }
}
