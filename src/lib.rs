//! lightd as a library: everything the daemon is made of, so the binary (`main.rs`), the
//! tests and the benches use the same code.

pub mod backups;
pub mod config;
pub mod console;
pub mod docker;
pub mod error;
pub mod firewall;
pub mod fsutil;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod journal;
pub mod lifecycle;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod node;
pub mod notify;
pub mod paths;
pub mod ports;
pub mod quota;
pub mod rlimit;
pub mod secret;
#[cfg(feature = "sftp")]
pub mod sftp;
pub mod shutdown;
pub mod store;
#[cfg(test)]
mod testutil;
pub mod tokens;
pub mod transfer;
pub mod vfs;
pub mod volumes;
