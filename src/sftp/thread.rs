//! The SFTP server's own thread. Every SSH connection, its channel's reader and writer and its
//! SFTP loop run on one current-thread runtime: a request's way from russh's session loop to
//! the SFTP loop and its answer's way back are polls in a row on this thread. On the
//! multi-threaded runtime each of those hand-offs woke the other worker (a futex wake and a
//! context switch per packet, most of a download's CPU went to the kernel's scheduler). The
//! REST API and the consoles keep their own runtimes; file calls that may block still go to
//! this runtime's blocking pool.
//!
//! The thread also runs without locked memory. russh locks every SSH packet buffer it makes
//! (`mlock` as it allocates one, `munlock` as it frees it, several per packet): as root, with
//! CAP_IPC_LOCK, each call pins or unpins the pages, and those calls took about a third of an
//! upload's CPU. Here they fail at once instead: this thread (and the blocking threads it
//! starts, which inherit its credentials) drops CAP_IPC_LOCK, and the daemon's soft
//! RLIMIT_MEMLOCK is 0. What those buffers hold is file data, on the disk anyway; a node
//! that must keep SSH session keys out of swap runs with no swap or an encrypted one (the
//! advice for any host with secrets in memory).

use std::future::Future;
use std::time::Duration;

use russh::keys::PrivateKey;

use super::server::{run, Parts};
use crate::shutdown::Shutdown;

/// Starts the server on its thread, accepting on `listener`; the future resolves once the
/// server has ended (after `stop`, its sessions ended) and its runtime is gone.
pub fn spawn(
    listener: tokio::net::TcpListener,
    key: PrivateKey,
    parts: Parts,
    stop: Shutdown,
) -> std::io::Result<impl Future<Output = ()>> {
    // The socket moves to the new runtime's reactor.
    let listener = listener.into_std()?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().thread_keep_alive(Duration::from_secs(2)).build()?;
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new().name("lightd-sftp".into()).spawn(move || {
        if let Err(e) = without_memory_locks() {
            crate::warn!("sftp: packet buffers stay locked in memory (slower): {e}");
        }
        runtime.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => run(listener, key, parts, stop).await,
                Err(e) => crate::error!("sftp: cannot take over the listening socket: {e}"),
            }
        });
        // Whatever a connection left running ends with the runtime; a file call stuck in the
        // kernel is not waited for past a few seconds.
        runtime.shutdown_timeout(Duration::from_secs(5));
        let _ = done.send(());
    })?;
    Ok(async move {
        let _ = finished.await;
    })
}

/// Drops CAP_IPC_LOCK from this thread and sets the soft RLIMIT_MEMLOCK to 0, so an `mlock`
/// here fails at once (see the module's comment).
fn without_memory_locks() -> std::io::Result<()> {
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    crate::rlimit::no_locked_memory()?;
    let mut caps = capabilities(None)?;
    caps.effective.remove(CapabilitySet::IPC_LOCK);
    caps.permitted.remove(CapabilitySet::IPC_LOCK);
    caps.inheritable.remove(CapabilitySet::IPC_LOCK);
    set_capabilities(None, caps)?;
    Ok(())
}
