//! What the lifecycle's own steps fail with, apart from the engine's and the store's errors
//! (those stay [`crate::error::Error::Docker`] and [`crate::error::Error::Store`]). It becomes
//! [`crate::error::Error::Lifecycle`], which `http::reply` maps to a status with every other
//! error, in one place.

use std::fmt;
use std::path::PathBuf;

/// A lifecycle step that failed on the host's side; each is a `500`.
#[derive(Debug)]
pub enum Failure {
    /// The server could not be stopped, so what was to follow it (a delete) does not happen.
    NotStopped(String),
    /// The server did not take a command on its stdin within the time given.
    StdinTimeout,
    /// The server's stdin could not be written.
    Stdin(std::io::Error),
    /// The server's data directory could not be removed.
    RemoveData(PathBuf, std::io::Error),
    /// The check of a create's custom mounts could not run.
    MountCheck(String),
    /// The host gave no randomness for a new record's id.
    NoRandomness(std::io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotStopped(why) => write!(f, "the server could not be stopped: {why}"),
            Failure::StdinTimeout => f.write_str("the server did not take the command within 5 s"),
            Failure::Stdin(e) => write!(f, "cannot write to the server's stdin: {e}"),
            Failure::RemoveData(dir, e) => write!(f, "cannot remove {}: {e}", dir.display()),
            Failure::MountCheck(e) => write!(f, "mount check failed: {e}"),
            Failure::NoRandomness(e) => write!(f, "no randomness: {e}"),
        }
    }
}

impl From<Failure> for crate::error::Error {
    fn from(f: Failure) -> Self {
        crate::error::Error::Lifecycle(f)
    }
}
