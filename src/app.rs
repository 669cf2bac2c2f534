//! The composition root's product: everything a request handler may reach.

use std::sync::{Arc, Mutex};

use hyper::body::Bytes;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::console::Hubs;
use crate::docker::Docker;
use crate::lifecycle::Supervisors;
use crate::metrics::Metrics;
use crate::shutdown::Tasks;
use crate::store::Store;

/// Shared by every connection as `Arc<App>`.
pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    pub docker: Docker,
    pub metrics: Metrics,
    pub hubs: Hubs,
    /// The mailbox of every container's supervisor.
    pub sups: Supervisors,
    /// This daemon's identity on the engine (a label on every container it makes).
    pub instance: String,
    /// Background tasks shutdown waits for.
    pub tasks: Tasks,
    pub started: Instant,
    /// `GET /containers` as serialized at a state version (see `http::containers::list`).
    pub list_cache: Mutex<Option<(u64, Bytes)>>,
}

impl App {
    /// `routes` are the labels of the request counter's rows (the router's table).
    pub fn new(config: Config, store: Arc<Store>, routes: Vec<&'static str>) -> Arc<App> {
        let docker = Docker::new(&config.docker.socket_path);
        let hubs = Hubs::new(config.console.ring_lines, config.console.ring_bytes);
        let instance = store.read(|s| s.instance.clone());
        Arc::new(App {
            config,
            store,
            docker,
            metrics: Metrics::new(routes),
            hubs,
            sups: Supervisors::default(),
            instance,
            tasks: Tasks::default(),
            started: Instant::now(),
            list_cache: Mutex::new(None),
        })
    }

    /// Keeps `docker.reachable()` fresh for `/health`: a ping every few seconds, more often
    /// while the engine is away so recovery is noticed quickly.
    pub async fn watch_docker(self: Arc<Self>) {
        let mut was = None;
        loop {
            let now = self.docker.ping().await.is_ok();
            if was != Some(now) {
                let sock = self.docker.socket().display();
                match now {
                    true => eprintln!("lightd: Docker engine reachable at {sock}"),
                    false => eprintln!("lightd: Docker engine unreachable at {sock}"),
                }
                was = Some(now);
            }
            tokio::time::sleep(if now { Duration::from_secs(5) } else { Duration::from_secs(1) }).await;
        }
    }
}
