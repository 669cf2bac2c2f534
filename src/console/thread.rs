//! The console's own thread. Every pump (a server's Docker attach stream) and every WebSocket
//! session runs on one current-thread runtime, so a line's way from the attach stream to its
//! viewers' sockets stays on one thread: the pump's wake-up of ten viewers is ten polls in a
//! row here. On the multi-threaded runtime the same wake-up unparks the other worker, which
//! steals half of them (a futex wake and a context switch per line, and the ring's cache
//! lines moving between cores). The REST API keeps the multi-threaded runtime.
//!
//! Nothing on this thread blocks: work that may take long (matching a `start_pattern`) goes to
//! the blocking pool.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// The console runtime, started on first use; it runs as long as the process.
fn handle() -> &'static Handle {
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let started = std::thread::Builder::new().name("lightd-console".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => {
                    let _ = tx.send(Some(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    crate::error!("cannot start the console runtime: {e}");
                    let _ = tx.send(None);
                }
            }
        });
        match started.ok().and_then(|_| rx.recv().ok().flatten()) {
            Some(h) => h,
            // Without its own thread the console runs where it is asked from.
            None => Handle::current(),
        }
    })
}

/// Starts `task` on the console thread.
pub fn spawn<T: Send + 'static>(task: impl Future<Output = T> + Send + 'static) -> JoinHandle<T> {
    handle().spawn(task)
}

/// Runs `task` on the console thread and waits for it; dropping the wait cancels the task, as
/// dropping the future itself would.
pub async fn run<T: Send + 'static>(task: impl Future<Output = T> + Send + 'static) -> T {
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
        // Only an abort cancels it, and only `Cancel` aborts, once nobody waits.
        Err(e) => unreachable!("console task cancelled while awaited: {e}"),
    }
}
