//! Stopping cleanly: the signal that asks for it, and the tracker that spawns the daemon's
//! tasks, tells them all to stop through one signal, and counts them until they end.
//! Every task of the daemon's runtime is spawned here (the console thread has its own
//! spawner, `console::thread`).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

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

/// The tracker: spawns the daemon's tasks, counts those shutdown waits for, and holds the one
/// shutdown signal they hear. Cheap to clone.
#[derive(Clone)]
pub struct Tasks {
    running: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    stop: Arc<watch::Sender<bool>>,
}

impl Default for Tasks {
    fn default() -> Tasks {
        Tasks { running: Arc::default(), idle: Arc::default(), stop: Arc::new(watch::Sender::new(false)) }
    }
}

/// Spawns short work owned by its caller, not counted: a connection and its engine-side
/// driver, a request's helper, a bounded cleanup. The caller holds the handle (and aborts or
/// awaits it) or the work ends on its own within its bounds; the daemon's lifetime tasks go
/// through [`Tasks`] instead.
pub fn detach<T: Send + 'static>(task: impl Future<Output = T> + Send + 'static) -> JoinHandle<T> {
    tokio::spawn(task)
}

/// [`detach`] onto `runtime` (the daemon's, from the console thread).
pub fn detach_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    task: impl Future<Output = T> + Send + 'static,
) -> JoinHandle<T> {
    runtime.spawn(task)
}

/// One task's ear for the shutdown signal (see [`Tasks::signal`]).
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once the daemon is stopping (at once if it already is).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }
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
    /// The shutdown signal, for a task to hear.
    pub fn signal(&self) -> Shutdown {
        Shutdown(self.stop.subscribe())
    }

    /// Tells every task the daemon is stopping.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Spawns a daemon-lifetime loop, counted until it ends: it is dropped at the shutdown
    /// signal (at an await point), so it must hold nothing half done across one.
    pub fn spawn_loop(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut signal = self.signal();
        self.spawn(async move {
            tokio::select! {
                () = task => {}
                () = signal.wait() => {}
            }
        });
    }

    /// Spawns `task` and counts it until it ends (it hears shutdown through [`Tasks::signal`]
    /// or a message of its own, and ends in time).
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
