//! Stopping cleanly: the signal that asks for it, and the tracker of background tasks that
//! shutdown waits for.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// Resolves when the process is asked to stop (SIGINT or SIGTERM), naming the signal. The
/// handlers are installed by this call, not when the future is first polled: call it before
/// telling anyone the daemon is ready, or a stop asked for at once would kill it outright.
pub fn signalled() -> impl Future<Output = &'static str> {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            }
            _ => {
                crate::error!("cannot install signal handlers; stop with SIGKILL");
                std::future::pending().await
            }
        }
    }
}

/// Counts the background tasks that must end before the daemon exits (supervisors).
#[derive(Default, Clone)]
pub struct Tasks {
    running: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

/// Counts a task out however it ends (returned, panicked, aborted).
struct Running {
    running: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Tasks {
    /// Spawns `task` and counts it until it ends.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.running.fetch_add(1, Ordering::AcqRel);
        let guard = Running { running: Arc::clone(&self.running), idle: Arc::clone(&self.idle) };
        tokio::spawn(async move {
            let _guard = guard;
            task.await;
        });
    }

    /// Waits until every counted task ended, at most `limit`; false if some did not.
    pub async fn wait(&self, limit: Duration) -> bool {
        let all_done = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(limit, all_done).await.is_ok()
    }
}
