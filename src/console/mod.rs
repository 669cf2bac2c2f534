//! Per-container fan-out: one [`Hub`] per container holds the console ring (fed by the one
//! attach stream), a broadcast of events (lifecycle, install output, power states, stats,
//! daemon notes), viewer counts and the Docker streams opened on their behalf.

pub mod line;
pub mod pump;
pub mod ring;
pub mod splice;
pub mod stats;
pub mod thread;
pub mod viewer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::WriteHalf;
use tokio::sync::{broadcast, watch, Notify};

use crate::model::PowerState;
use ring::{Ring, Writer};

/// How many events a slow subscriber may lag before it is told it skipped some. The channel
/// keeps this many past events alive (a stats sample a second per watched container), so it
/// stays small: memory per container is bounded by it.
const EVENT_BACKLOG: usize = 128;

/// The seed's install lifecycle, in the order an install goes through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Started,
    CreatingContainer,
    ContainerCreated,
    RunningInstallScript,
    InstallScriptComplete,
    SettingUpEntrypoint,
    Ready,
    Error,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Started => "Started",
            Lifecycle::CreatingContainer => "CreatingContainer",
            Lifecycle::ContainerCreated => "ContainerCreated",
            Lifecycle::RunningInstallScript => "RunningInstallScript",
            Lifecycle::InstallScriptComplete => "InstallScriptComplete",
            Lifecycle::SettingUpEntrypoint => "SettingUpEntrypoint",
            Lifecycle::Ready => "Ready",
            Lifecycle::Error => "Error",
        }
    }
}

/// Something that happened to a container, as viewers receive it. Console lines travel
/// through the ring instead, so they are never lost to a slow broadcast subscriber.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Lifecycle(Lifecycle),
    InstallOutput(String),
    Status(PowerState),
    DaemonMessage(String),
    /// A stats sample as JSON text.
    Stats(String),
    /// An `event` frame with this name (backups).
    Named(&'static str),
}

/// Which kind of viewer a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerKind {
    Ws,
    Attach,
}

/// The write half of the attach connection: the server's stdin.
pub type Stdin = WriteHalf<TokioIo<Upgraded>>;

/// One container's console and channel.
pub struct Hub {
    pub id: String,
    ring_size: (usize, usize),
    ring: OnceLock<Arc<Ring>>,
    /// The ring's single writer, held by the running pump (and returned when it ends).
    writer: Mutex<Option<Writer>>,
    /// Woken after new lines are in the ring.
    pub wake: Notify,
    events: broadcast::Sender<Event>,
    install_events: Mutex<Vec<Lifecycle>>,
    pub stdin: tokio::sync::Mutex<Option<Stdin>>,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub attach_open: AtomicBool,
    pub stats_open: AtomicBool,
    ws_viewers: AtomicUsize,
    attach_viewers: AtomicUsize,
    /// Woken when the number of viewers changes (the stats stream listens).
    pub viewers_changed: Notify,
    /// A REST stats request keeps the stats stream open until then.
    stats_lease: Mutex<Option<Instant>>,
    latest_stats: Mutex<Option<stats::Sample>>,
    /// Unix seconds of the last start (for `uptime_s`).
    pub started_at: AtomicU64,
    /// False from boot until a running server's console has been re-attached and its tail
    /// filled from Docker: tails wait for it (bounded) so nobody is served an empty one.
    filled: watch::Sender<bool>,
    /// Set by `detach`, delete and shutdown: every session of the container ends, and says why.
    closed: watch::Sender<Option<&'static str>>,
    /// The number of the last line before the ring's first (the journal's newest at boot), so
    /// numbering goes on across daemon restarts.
    line_base: AtomicU64,
    /// Install output not yet in the journal, oldest first (bounded: see [`INSTALL_BACKLOG`]).
    install_log: Mutex<std::collections::VecDeque<String>>,
    /// Set when the container is deleted: nothing more of it goes to the journal.
    gone: AtomicBool,
    /// The newest line the journal's writer has taken from the ring.
    journaled: AtomicU64,
}

/// Woken when some ring is half full of lines the journal has not taken yet: its writer
/// comes at once instead of at its next round, so a burst is not lapped away before it.
pub static JOURNAL_DUE: Notify = Notify::const_new();

/// Install lines held for the journal at most (a flood past it loses its oldest lines).
const INSTALL_BACKLOG: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bumped whenever any container's install events change: caches of container views check
/// it with one load instead of finding the container's hub.
static INSTALL_CHANGES: AtomicU64 = AtomicU64::new(0);

/// How many times install events changed, over all containers.
pub fn install_changes() -> u64 {
    INSTALL_CHANGES.load(Acquire)
}

impl Hub {
    fn new(id: &str, ring_size: (usize, usize)) -> Hub {
        Hub {
            id: id.to_string(),
            ring_size,
            ring: OnceLock::new(),
            writer: Mutex::new(None),
            wake: Notify::new(),
            events: broadcast::channel(EVENT_BACKLOG).0,
            install_events: Mutex::new(Vec::new()),
            stdin: tokio::sync::Mutex::new(None),
            pump: Mutex::new(None),
            attach_open: AtomicBool::new(false),
            stats_open: AtomicBool::new(false),
            ws_viewers: AtomicUsize::new(0),
            attach_viewers: AtomicUsize::new(0),
            viewers_changed: Notify::new(),
            stats_lease: Mutex::new(None),
            latest_stats: Mutex::new(None),
            started_at: AtomicU64::new(0),
            filled: watch::channel(true).0,
            closed: watch::channel(None).0,
            line_base: AtomicU64::new(0),
            install_log: Mutex::new(std::collections::VecDeque::new()),
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

    /// Install output waiting for the journal, taken.
    pub fn take_install_log(&self) -> Vec<String> {
        lock(&self.install_log).drain(..).collect()
    }

    /// Whether the container was deleted.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Acquire)
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

    pub fn return_writer(&self, w: Writer) {
        *lock(&self.writer) = Some(w);
    }

    /// Remembers the pump task so a new start can wait for the old one to finish.
    pub fn set_pump(&self, task: tokio::task::JoinHandle<()>) {
        *lock(&self.pump) = Some(task);
    }

    pub fn take_pump(&self) -> Option<tokio::task::JoinHandle<()>> {
        lock(&self.pump).take()
    }

    /// Publishes to whoever listens now; nobody listening is fine.
    pub fn publish(&self, event: Event) {
        if let Event::Lifecycle(l) = &event {
            INSTALL_CHANGES.fetch_add(1, AcqRel);
            let mut log = lock(&self.install_events);
            if *l == Lifecycle::Started {
                log.clear();
            }
            log.push(*l);
        }
        if let Event::InstallOutput(line) = &event {
            let mut log = lock(&self.install_log);
            if log.len() >= INSTALL_BACKLOG {
                log.pop_front();
            }
            log.push_back(line.clone());
        }
        let _ = self.events.send(event);
    }

    pub fn lifecycle(&self, l: Lifecycle) {
        self.publish(Event::Lifecycle(l));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn install_events(&self) -> Vec<&'static str> {
        lock(&self.install_events).iter().map(|l| l.as_str()).collect()
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

    /// Counts a viewer in until the guard drops.
    pub fn viewer(self: &Arc<Self>, kind: ViewerKind) -> ViewerGuard {
        self.counter(kind).fetch_add(1, AcqRel);
        self.viewers_changed.notify_waiters();
        ViewerGuard { hub: Arc::clone(self), kind }
    }

    fn counter(&self, kind: ViewerKind) -> &AtomicUsize {
        match kind {
            ViewerKind::Ws => &self.ws_viewers,
            ViewerKind::Attach => &self.attach_viewers,
        }
    }

    pub fn viewers(&self, kind: ViewerKind) -> usize {
        self.counter(kind).load(Acquire)
    }

    /// Whether a stats stream is wanted: someone watches, or a REST lease runs.
    pub fn wants_stats(&self) -> bool {
        self.viewers(ViewerKind::Ws) + self.viewers(ViewerKind::Attach) > 0
            || lock(&self.stats_lease).is_some_and(|until| Instant::now() < until)
    }

    pub fn lease_stats(&self, until: Instant) {
        *lock(&self.stats_lease) = Some(until);
    }

    pub fn latest_stats(&self) -> Option<stats::Sample> {
        lock(&self.latest_stats).clone()
    }

    pub fn set_stats(&self, s: stats::Sample) {
        *lock(&self.latest_stats) = Some(s);
    }

    /// Ends every session of this container with `reason`; returns how many there were.
    /// Sessions opened afterwards are not affected.
    pub fn close_sessions(&self, reason: &'static str) -> usize {
        let n = self.viewers(ViewerKind::Ws) + self.viewers(ViewerKind::Attach);
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

/// Keeps a viewer counted; dropping it counts the viewer out.
pub struct ViewerGuard {
    hub: Arc<Hub>,
    kind: ViewerKind,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.hub.counter(self.kind).fetch_sub(1, AcqRel);
        self.hub.viewers_changed.notify_waiters();
    }
}

/// All hubs, by internal id.
pub struct Hubs {
    ring_size: (usize, usize),
    map: Mutex<HashMap<String, Arc<Hub>>>,
}

impl Hubs {
    /// Rings of `lines` lines and about `bytes` bytes each.
    pub fn new(lines: usize, bytes: usize) -> Hubs {
        Hubs { ring_size: (lines, bytes), map: Mutex::new(HashMap::new()) }
    }

    /// The hub of `id`, made when there is none: only for an id on record, asked for by a
    /// caller who authenticated (a hub per made-up id would be memory anyone could make;
    /// anything else uses [`Hubs::peek`]).
    pub fn get(&self, id: &str) -> Arc<Hub> {
        let mut map = lock(&self.map);
        Arc::clone(map.entry(id.to_string()).or_insert_with(|| Arc::new(Hub::new(id, self.ring_size))))
    }

    /// The hub of `id` if it exists, without making one.
    pub fn peek(&self, id: &str) -> Option<Arc<Hub>> {
        lock(&self.map).get(id).cloned()
    }

    /// Forgets `id`'s hub and ends its sessions.
    pub fn remove(&self, id: &str) {
        if let Some(hub) = lock(&self.map).remove(id) {
            hub.gone.store(true, Release);
            hub.close_sessions("container deleted");
        }
    }

    /// Every hub now.
    pub fn all(&self) -> Vec<Arc<Hub>> {
        lock(&self.map).values().cloned().collect()
    }

    /// Publishes `event` on every hub (engine-wide news).
    pub fn broadcast(&self, event: Event) {
        for hub in lock(&self.map).values() {
            hub.publish(event.clone());
        }
    }

    /// Open console sessions over all containers.
    pub fn sessions(&self) -> usize {
        lock(&self.map).values().map(|h| h.viewers(ViewerKind::Ws) + h.viewers(ViewerKind::Attach)).sum()
    }

    /// Resolves once no console session is open on any container (at once if none is).
    pub async fn sessions_ended(&self) {
        loop {
            for hub in self.all() {
                loop {
                    // The viewer guards wake it whenever their count changes.
                    let changed = hub.viewers_changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if hub.viewers(ViewerKind::Ws) + hub.viewers(ViewerKind::Attach) == 0 {
                        break;
                    }
                    changed.await;
                }
            }
            // A session opened on a hub made meanwhile is waited for too.
            if self.sessions() == 0 {
                return;
            }
        }
    }

    /// Ends every session of every container (at shutdown).
    pub fn close_all(&self, reason: &'static str) {
        for hub in lock(&self.map).values() {
            hub.close_sessions(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_reach_subscribers_in_order_and_install_log_resets() {
        let hubs = Hubs::new(10, 4096);
        let hub = hubs.get("a");
        let mut rx = hubs.get("a").subscribe();
        hub.lifecycle(Lifecycle::Started);
        hub.publish(Event::InstallOutput("line".into()));
        hub.lifecycle(Lifecycle::Ready);
        assert_eq!(rx.recv().await.unwrap(), Event::Lifecycle(Lifecycle::Started));
        assert_eq!(rx.recv().await.unwrap(), Event::InstallOutput("line".into()));
        assert_eq!(rx.recv().await.unwrap(), Event::Lifecycle(Lifecycle::Ready));
        assert_eq!(hub.install_events(), vec!["Started", "Ready"]);
        hub.lifecycle(Lifecycle::Started);
        assert_eq!(hub.install_events(), vec!["Started"]);
    }

    #[test]
    fn viewers_are_counted_and_closing_is_seen() {
        let hubs = Hubs::new(10, 4096);
        let hub = hubs.get("a");
        let mut closed = hub.closed();
        assert!(!hub.wants_stats());
        let g = hub.viewer(ViewerKind::Ws);
        let g2 = hub.viewer(ViewerKind::Attach);
        assert!(hub.wants_stats());
        assert_eq!(hub.close_sessions("detached"), 2);
        assert_eq!(*closed.borrow_and_update(), Some("detached"));
        assert!(!hub.closed().has_changed().unwrap(), "a later session starts unchanged");
        drop((g, g2));
        assert!(!hub.wants_stats());
        assert!(hub.take_writer().is_some());
        assert!(hub.take_writer().is_none(), "one writer at a time");
    }
}
