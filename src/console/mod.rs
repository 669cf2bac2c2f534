//! Per-container fan-out: one [`Hub`] per container, found by id in [`Hubs`]. A hub holds
//! the container's terminal ([`tty::Tty`]: the console ring fed by the one attach stream, its
//! stdin, its viewers), its news ([`news::News`]: lifecycle, install output, power states,
//! daemon notes) and its stats ([`stats::Stats`]), each behind its own accessor.

pub mod line;
pub mod news;
pub mod pump;
pub mod ring;
pub mod splice;
pub mod stats;
pub mod thread;
pub mod tty;
pub mod viewer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use news::{install_changes, Event, Lifecycle};
pub use tty::{Stdin, ViewerKind, JOURNAL_DUE};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One container's console and channel: its terminal, its news and its stats.
pub struct Hub {
    /// The container's internal id.
    pub id: String,
    tty: tty::Tty,
    news: news::News,
    stats: stats::Stats,
}

impl Hub {
    fn new(id: &str, ring_size: (usize, usize)) -> Hub {
        Hub {
            id: id.to_string(),
            tty: tty::Tty::new(ring_size),
            news: news::News::default(),
            stats: stats::Stats::default(),
        }
    }

    /// The terminal: console ring, pump, stdin, viewers, sessions' end.
    pub fn tty(&self) -> &tty::Tty {
        &self.tty
    }

    /// The events viewers hear besides console lines, and the install's lifecycle.
    pub fn news(&self) -> &news::News {
        &self.news
    }

    /// The stats stream's state and latest sample.
    pub fn stats(&self) -> &stats::Stats {
        &self.stats
    }

    /// Counts a viewer in until the guard drops.
    pub fn viewer(self: &Arc<Self>, kind: ViewerKind) -> ViewerGuard {
        self.tty.count(kind, true);
        ViewerGuard { hub: Arc::clone(self), kind }
    }

    /// Whether a stats stream is wanted: someone watches, or a REST lease runs.
    pub fn wants_stats(&self) -> bool {
        self.tty.sessions() > 0 || self.stats.leased()
    }
}

/// Keeps a viewer counted; dropping it counts the viewer out.
pub struct ViewerGuard {
    hub: Arc<Hub>,
    kind: ViewerKind,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.hub.tty.count(self.kind, false);
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
            hub.tty.set_gone();
            hub.tty.close_sessions("container deleted");
        }
    }

    /// Every hub now.
    pub fn all(&self) -> Vec<Arc<Hub>> {
        lock(&self.map).values().cloned().collect()
    }

    /// Publishes `event` on every hub (engine-wide news).
    pub fn broadcast(&self, event: Event) {
        for hub in lock(&self.map).values() {
            hub.news.publish(event.clone());
        }
    }

    /// Open console sessions over all containers.
    pub fn sessions(&self) -> usize {
        lock(&self.map).values().map(|h| h.tty.sessions()).sum()
    }

    /// Resolves once no console session is open on any container (at once if none is).
    pub async fn sessions_ended(&self) {
        loop {
            for hub in self.all() {
                hub.tty.unwatched().await;
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
            hub.tty.close_sessions(reason);
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
        let mut rx = hubs.get("a").news().subscribe();
        hub.news().lifecycle(Lifecycle::Started);
        hub.news().publish(Event::InstallOutput("line".into()));
        hub.news().lifecycle(Lifecycle::Ready);
        assert_eq!(rx.recv().await.unwrap(), Event::Lifecycle(Lifecycle::Started));
        assert_eq!(rx.recv().await.unwrap(), Event::InstallOutput("line".into()));
        assert_eq!(rx.recv().await.unwrap(), Event::Lifecycle(Lifecycle::Ready));
        assert_eq!(hub.news().install_events(), vec!["Started", "Ready"]);
        hub.news().lifecycle(Lifecycle::Started);
        assert_eq!(hub.news().install_events(), vec!["Started"]);
    }

    #[test]
    fn viewers_are_counted_and_closing_is_seen() {
        let hubs = Hubs::new(10, 4096);
        let hub = hubs.get("a");
        let mut closed = hub.tty().closed();
        assert!(!hub.wants_stats());
        let g = hub.viewer(ViewerKind::Ws);
        let g2 = hub.viewer(ViewerKind::Attach);
        assert!(hub.wants_stats());
        assert_eq!(hub.tty().close_sessions("detached"), 2);
        assert_eq!(*closed.borrow_and_update(), Some("detached"));
        assert!(!hub.tty().closed().has_changed().unwrap(), "a later session starts unchanged");
        drop((g, g2));
        assert!(!hub.wants_stats());
        assert!(hub.tty().take_writer().is_some());
        assert!(hub.tty().take_writer().is_none(), "one writer at a time");
    }
}
