//! Per-container fan-out of everything a viewer may watch: lifecycle events, install output,
//! power states and daemon notes. One [`Hub`] per container, made on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::model::PowerState;

/// How many events a slow subscriber may lag before it is told it skipped some.
const EVENT_BACKLOG: usize = 1024;

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

/// Something that happened to a container, as viewers receive it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Lifecycle(Lifecycle),
    InstallOutput(String),
    Status(PowerState),
    DaemonMessage(String),
}

/// One container's channel.
pub struct Hub {
    events: broadcast::Sender<Event>,
    /// Lifecycle events of the latest install, in order (also shown by `GET /containers/:id`).
    install_events: Mutex<Vec<Lifecycle>>,
}

impl Hub {
    fn new() -> Hub {
        Hub { events: broadcast::channel(EVENT_BACKLOG).0, install_events: Mutex::new(Vec::new()) }
    }

    /// Publishes to whoever listens now; nobody listening is fine.
    pub fn publish(&self, event: Event) {
        if let Event::Lifecycle(l) = &event {
            let mut log = self.install_events.lock().unwrap_or_else(|p| p.into_inner());
            if *l == Lifecycle::Started {
                log.clear();
            }
            log.push(*l);
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
        let log = self.install_events.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().map(|l| l.as_str()).collect()
    }
}

/// All hubs, by internal id.
#[derive(Default)]
pub struct Hubs {
    map: Mutex<HashMap<String, Arc<Hub>>>,
}

impl Hubs {
    pub fn get(&self, id: &str) -> Arc<Hub> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(id.to_string()).or_insert_with(|| Arc::new(Hub::new())))
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_reach_subscribers_in_order_and_install_log_resets() {
        let hubs = Hubs::default();
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
}
