//! The console's own thread. Every pump (a server's Docker attach stream) and the live phase
//! of every WebSocket session run on one current-thread runtime, so a line's way from the
//! attach stream to its viewers' sockets stays on one thread: the pump's wake-up of ten
//! viewers is ten polls in a row here. On the multi-threaded runtime the same wake-up unparks
//! the other worker, which steals half of them (a futex wake and a context switch per line,
//! and the ring's cache lines moving between cores). The REST API keeps the multi-threaded
//! runtime.
//!
//! What may take long goes elsewhere: matching a `start_pattern` to the blocking pool; a
//! session's handshake and tail (a thousand panels reconnecting at once), a backfill from
//! Docker's log, a stats stream, a session's commands and power actions to the daemon's
//! runtime (the handle the supervisors and the HTTP room keep).

use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Starts the console thread (the daemon calls it before serving; later calls return the
/// same runtime).
pub fn start() -> std::io::Result<&'static Handle> {
    static STARTING: Mutex<()> = Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    // Its blocking threads go 2 s after their last job, as the daemon's do.
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().thread_keep_alive(Duration::from_secs(2)).build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("lightd-console".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(HANDLE.get_or_init(|| handle))
}

fn handle() -> &'static Handle {
    match HANDLE.get() {
        Some(h) => h,
        // Not started by the daemon (a unit test): started on first use.
        None => start().unwrap_or_else(|e| panic!("cannot start the console thread: {e}")),
    }
}

/// Starts `task` on the console thread.
pub fn spawn<T: Send + 'static>(task: impl Future<Output = T> + Send + 'static) -> JoinHandle<T> {
    handle().spawn(task)
}

/// Runs `task` on the console thread and waits for it; dropping the wait cancels the task, as
/// dropping the future itself would.
pub async fn run<T: Send + 'static>(task: impl Future<Output = T> + Send + 'static) -> T {
    /// Aborts the task when the wait for it is dropped.
    struct Cancel<T>(JoinHandle<T>);
    impl<T> Drop for Cancel<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut job = Cancel(spawn(task));
    match (&mut job.0).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only `Cancel` aborts it, once nobody waits; the runtime runs as long as the process.
        Err(e) => unreachable!("console task cancelled while awaited: {e}"),
    }
}
