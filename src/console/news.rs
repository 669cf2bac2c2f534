//! A container's news, apart from its console lines: one broadcast of events (lifecycle and
//! install output, power states, stats samples, daemon notes) for its viewers, the lifecycle
//! of its latest install, and the install output waiting for the journal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Mutex;

use tokio::sync::broadcast;

use super::lock;
use crate::model::PowerState;

/// How many events a slow subscriber may lag before it is told it skipped some. The channel
/// keeps this many past events alive (a stats sample a second per watched container), so it
/// stays small: memory per container is bounded by it.
const EVENT_BACKLOG: usize = 128;

/// Install lines held for the journal at most (a flood past it loses its oldest lines).
const INSTALL_BACKLOG: usize = 10_000;

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
    /// The name viewers and `install_events` see.
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
    /// An `event` frame with text made at run time: SFTP activity on the server's volume
    /// (`sftp login alice`, `sftp upload world/level.dat`).
    Activity(String),
}

/// Bumped whenever any container's install events change: caches of container views check
/// it with one load instead of finding the container's hub.
static INSTALL_CHANGES: AtomicU64 = AtomicU64::new(0);

/// How many times install events changed, over all containers.
pub fn install_changes() -> u64 {
    INSTALL_CHANGES.load(Acquire)
}

/// One container's events: the broadcast, the latest install's lifecycle and its output
/// waiting for the journal.
pub struct News {
    events: broadcast::Sender<Event>,
    install_events: Mutex<Vec<Lifecycle>>,
    /// Install output not yet in the journal, oldest first (bounded: see [`INSTALL_BACKLOG`]).
    install_log: Mutex<VecDeque<String>>,
}

impl Default for News {
    fn default() -> News {
        News {
            events: broadcast::channel(EVENT_BACKLOG).0,
            install_events: Mutex::new(Vec::new()),
            install_log: Mutex::new(VecDeque::new()),
        }
    }
}

impl News {
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

    /// Publishes an install lifecycle step.
    pub fn lifecycle(&self, l: Lifecycle) {
        self.publish(Event::Lifecycle(l));
    }

    /// Every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The lifecycle of the latest install, in order.
    pub fn install_events(&self) -> Vec<&'static str> {
        lock(&self.install_events).iter().map(|l| l.as_str()).collect()
    }

    /// Install output waiting for the journal, taken.
    pub fn take_install_log(&self) -> Vec<String> {
        lock(&self.install_log).drain(..).collect()
    }
}
