//! A container's terminal: its console ring (fed by the one attach stream) and the ring's
//! writer, the pump task holding it, the server's stdin, the viewers watching it and the
//! signal that closes their sessions, and where the journal stands in the ring.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::WriteHalf;
use tokio::sync::{watch, Notify};

use super::lock;
use super::ring::{Ring, Writer};

/// Woken when some ring is half full of lines the journal has not taken yet: its writer
/// comes at once instead of at its next round, so a burst is not lapped away before it.
pub static JOURNAL_DUE: Notify = Notify::const_new();

/// Which kind of viewer a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerKind {
    Ws,
    Attach,
}

/// The write half of the attach connection: the server's stdin.
pub type Stdin = WriteHalf<TokioIo<Upgraded>>;

/// One container's terminal (see the module's note).
pub struct Tty {
    ring_size: (usize, usize),
    ring: OnceLock<Arc<Ring>>,
    /// The ring's single writer, held by the running pump (and returned when it ends).
    writer: Mutex<Option<Writer>>,
    /// Woken after new lines are in the ring.
    pub wake: Notify,
    /// The server's stdin while the attach stream is open.
    pub stdin: tokio::sync::Mutex<Option<Stdin>>,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Whether the attach stream is open.
    pub attach_open: AtomicBool,
    ws_viewers: AtomicUsize,
    attach_viewers: AtomicUsize,
    /// Woken when the number of viewers changes (the stats stream listens).
    pub viewers_changed: Notify,
    /// False from boot until a running server's console has been re-attached and its tail
    /// filled from Docker: tails wait for it (bounded) so nobody is served an empty one.
    filled: watch::Sender<bool>,
    /// Set by `detach`, delete and shutdown: every session of the container ends, and says why.
    closed: watch::Sender<Option<&'static str>>,
    /// The number of the last line before the ring's first (the journal's newest at boot), so
    /// numbering goes on across daemon restarts.
    line_base: AtomicU64,
    /// Set when the container is deleted: nothing more of it goes to the journal.
    gone: AtomicBool,
    /// The newest line the journal's writer has taken from the ring.
    journaled: AtomicU64,
}

impl Tty {
    /// A terminal whose ring, made on first use, holds `ring_size` (lines, bytes).
    pub(super) fn new(ring_size: (usize, usize)) -> Tty {
        Tty {
            ring_size,
            ring: OnceLock::new(),
            writer: Mutex::new(None),
            wake: Notify::new(),
            stdin: tokio::sync::Mutex::new(None),
            pump: Mutex::new(None),
            attach_open: AtomicBool::new(false),
            ws_viewers: AtomicUsize::new(0),
            attach_viewers: AtomicUsize::new(0),
            viewers_changed: Notify::new(),
            filled: watch::channel(true).0,
            closed: watch::channel(None).0,
            line_base: AtomicU64::new(0),
            gone: AtomicBool::new(false),
            journaled: AtomicU64::new(0),
        }
    }

    /// The newest line the journal's writer has taken from the ring (0: none yet).
    pub fn journaled(&self) -> u64 {
        self.journaled.load(Acquire)
    }

    /// The journal's writer took the ring's lines up to `n`.
    pub fn set_journaled(&self, n: u64) {
        self.journaled.store(n, Release);
    }

    /// Calls the journal's writer early when half the ring waits for it (the pump, after
    /// each chunk).
    pub fn journal_if_due(&self) {
        if let Some(ring) = self.ring.get() {
            let taken = self.journaled.load(Acquire).max(self.line_base());
            if ring.head().saturating_sub(taken) >= ring.capacity().div_ceil(2) {
                JOURNAL_DUE.notify_one();
            }
        }
    }

    /// Numbers the ring's lines from `last + 1` (the journal's newest line); only before the
    /// ring is first used, at boot.
    pub fn set_line_base(&self, last: u64) {
        if self.ring.get().is_none() {
            self.line_base.store(last, Release);
        }
    }

    /// The number of the last line before the ring's first.
    pub fn line_base(&self) -> u64 {
        self.line_base.load(Acquire)
    }

    /// Whether the container was deleted.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Acquire)
    }

    /// Marks the container deleted: nothing more of it goes to the journal.
    pub(super) fn set_gone(&self) {
        self.gone.store(true, Release);
    }

    /// The console ring, made on first use (a container never started costs no ring).
    pub fn ring(&self) -> &Arc<Ring> {
        self.ring.get_or_init(|| {
            let (ring, writer) = Ring::starting_after(self.ring_size.0, self.ring_size.1, self.line_base());
            *lock(&self.writer) = Some(writer);
            ring
        })
    }

    /// Console lines read since the daemon started (0 before the first start).
    pub fn lines_total(&self) -> u64 {
        self.ring.get().map_or(0, |r| r.head() - self.line_base())
    }

    /// Takes the ring's writer (for a pump); `None` while another pump holds it.
    pub fn take_writer(&self) -> Option<Writer> {
        self.ring();
        lock(&self.writer).take()
    }

    /// Gives the ring's writer back (the pump ended).
    pub fn return_writer(&self, w: Writer) {
        *lock(&self.writer) = Some(w);
    }

    /// Remembers the pump task so a new start can wait for the old one to finish.
    pub fn set_pump(&self, task: tokio::task::JoinHandle<()>) {
        *lock(&self.pump) = Some(task);
    }

    /// The pump task, taken (to wait for it or end it).
    pub fn take_pump(&self) -> Option<tokio::task::JoinHandle<()>> {
        lock(&self.pump).take()
    }

    /// Marks the tail as filled (or not yet, at boot for a server that was running).
    pub fn set_filled(&self, filled: bool) {
        self.filled.send_replace(filled);
    }

    /// Waits until the tail is filled, at most `limit`.
    pub async fn wait_filled(&self, limit: std::time::Duration) {
        let mut rx = self.filled.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|f| *f)).await;
    }

    /// Waits, at most `limit`, until the pump has pushed the last of its attach stream: the
    /// engine reports an exit before the stream has delivered the output printed just before
    /// it, and a server is recorded offline only once that output is in the ring.
    pub async fn wait_drained(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // The pump wakes `wake` for every batch it pushes and once more when it ends.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if !self.attach_open.load(Acquire) || tokio::time::timeout_at(deadline, woken).await.is_err() {
                return;
            }
        }
    }

    fn counter(&self, kind: ViewerKind) -> &AtomicUsize {
        match kind {
            ViewerKind::Ws => &self.ws_viewers,
            ViewerKind::Attach => &self.attach_viewers,
        }
    }

    /// Viewers of `kind` watching now.
    pub fn viewers(&self, kind: ViewerKind) -> usize {
        self.counter(kind).load(Acquire)
    }

    /// Viewers of both kinds watching now.
    pub fn sessions(&self) -> usize {
        self.viewers(ViewerKind::Ws) + self.viewers(ViewerKind::Attach)
    }

    /// Counts a viewer of `kind` in (see [`super::Hub::viewer`]) or out.
    pub(super) fn count(&self, kind: ViewerKind, joins: bool) {
        match joins {
            true => self.counter(kind).fetch_add(1, AcqRel),
            false => self.counter(kind).fetch_sub(1, AcqRel),
        };
        self.viewers_changed.notify_waiters();
    }

    /// Resolves once no viewer watches (at once if none does).
    pub async fn unwatched(&self) {
        loop {
            let changed = self.viewers_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.sessions() == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Ends every session of this container with `reason`; returns how many there were.
    /// Sessions opened afterwards are not affected.
    pub fn close_sessions(&self, reason: &'static str) -> usize {
        let n = self.sessions();
        self.closed.send_replace(Some(reason));
        n
    }

    /// Changes when `close_sessions` is called after this point; holds the reason.
    pub fn closed(&self) -> watch::Receiver<Option<&'static str>> {
        let mut rx = self.closed.subscribe();
        rx.mark_unchanged();
        rx
    }
}
