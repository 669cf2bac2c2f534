//! The SFTP server into volumes (cargo feature `sftp`): SSH and the SFTP wire protocol come
//! from russh and russh-sftp; every file operation goes through `crate::vfs`, confined to the
//! volume's root. Users are per volume, managed over REST (`users.rs`), kept in the state.
//! See docs/sftp.md.

mod kill;
mod pipe;
mod server;
mod session;
mod thread;
pub mod users;

pub use server::{bind, host_key, run, Parts, Sessions};
pub use thread::spawn;
