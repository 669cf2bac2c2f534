//! The domain error: what an operation can fail with, independent of HTTP.
//! `http::reply` maps it to a status code in one place.

use std::fmt;

use crate::docker::DockerError;
use crate::store::StoreError;

/// An error a handler answers with: each variant is one HTTP status (mapped in `http::reply`).
#[derive(Debug)]
pub enum Error {
    /// The request itself is wrong (400).
    BadRequest(String),
    /// The named thing does not exist (404).
    NotFound(String),
    /// The request clashes with the current state (409).
    Conflict(String),
    /// The credentials no longer hold (401).
    Unauthorized(String),
    /// A limit on how many of something may exist or run was reached (429).
    TooMany(String),
    /// The daemon cannot do it now (shutting down, overloaded) (503).
    Unavailable(String),
    /// A volume has no room left (507).
    Full(String),
    Docker(DockerError),
    Store(StoreError),
    /// A host-side failure (file system and such) the user cannot fix by asking again.
    Internal(String),
    /// A lifecycle step failed on the host's side (see [`crate::lifecycle::error::Failure`]).
    Lifecycle(crate::lifecycle::error::Failure),
}

/// A result whose error is the domain [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(m)
            | Error::NotFound(m)
            | Error::Conflict(m)
            | Error::TooMany(m)
            | Error::Unauthorized(m)
            | Error::Unavailable(m)
            | Error::Full(m)
            | Error::Internal(m) => f.write_str(m),
            Error::Docker(e) => e.fmt(f),
            Error::Store(e) => e.fmt(f),
            Error::Lifecycle(e) => e.fmt(f),
        }
    }
}

impl From<DockerError> for Error {
    fn from(e: DockerError) -> Self {
        Error::Docker(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

pub fn bad(msg: impl Into<String>) -> Error {
    Error::BadRequest(msg.into())
}

pub fn conflict(msg: impl Into<String>) -> Error {
    Error::Conflict(msg.into())
}
