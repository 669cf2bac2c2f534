//! The composition root's product: everything a request handler may reach.

use std::sync::{Arc, Mutex};

use hyper::body::Bytes;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use crate::config::Config;
use crate::console::Hubs;
use crate::docker::Docker;
use crate::lifecycle::Supervisors;
use crate::metrics::Metrics;
use crate::secret::{self, Master};
use crate::shutdown::Tasks;
use crate::store::Store;

/// Shared by every connection as `Arc<App>`.
pub struct App {
    pub config: Config,
    /// The config file it came from (reread for a replaced token).
    pub config_path: Option<PathBuf>,
    /// The master token; replaced while running by `lightd --token reset`.
    pub master: Master,
    pub store: Arc<Store>,
    pub docker: Docker,
    pub metrics: Metrics,
    pub hubs: Arc<Hubs>,
    /// Console history and crash records on disk.
    pub journals: crate::journal::Journals,
    /// The node report and every server's usage meters.
    pub node: crate::node::Node,
    /// The mailbox of every container's supervisor.
    pub sups: Supervisors,
    /// How volume size limits are enforced here (`volumes.quota` resolved at start).
    pub quota: crate::model::Quota,
    /// This daemon's identity on the engine (a label on every container it makes).
    pub instance: String,
    /// Backups and restores running now.
    pub backups: crate::backups::Backups,
    /// Console sessions per console token.
    pub console_sessions: crate::tokens::Sessions,
    /// Background tasks shutdown waits for.
    pub tasks: Tasks,
    /// The daemon's multi-threaded runtime: where work asked for on the console thread runs
    /// (a session's commands and power actions, a stats stream), so it stays the console's.
    pub runtime: tokio::runtime::Handle,
    pub started: Instant,
    /// `GET /containers` as serialized at a state version (see `http::containers::list`).
    pub list_cache: Mutex<Option<(u64, Bytes)>>,
}

impl App {
    /// `routes` are the labels of the request counter's rows (the router's table). Called on
    /// the daemon's runtime (it keeps its handle).
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        token: String,
        quota: crate::model::Quota,
        store: Arc<Store>,
        routes: Vec<(&'static str, &'static str)>,
    ) -> Arc<App> {
        let docker = Docker::new(&config.docker.socket_path);
        let hubs = Arc::new(Hubs::new(config.console.ring_lines, config.console.ring_bytes));
        let journals = crate::journal::Journals::new(config.storage.journal_dir(), config.console.journal_bytes);
        let instance = store.read(|s| s.instance.clone());
        let backups = crate::backups::Backups::new(config.backups.max_parallel);
        let node = crate::node::Node::new(crate::node::Settings::from_config(&config));
        Arc::new(App {
            config,
            config_path,
            master: Master::new(token),
            store,
            docker,
            metrics: Metrics::new(routes),
            hubs,
            journals,
            node,
            sups: Supervisors::default(),
            quota,
            instance,
            backups,
            console_sessions: Default::default(),
            tasks: Tasks::default(),
            runtime: tokio::runtime::Handle::current(),
            started: Instant::now(),
            list_cache: Mutex::new(None),
        })
    }

    /// Picks up a master token replaced by `lightd --token reset` (or an edited config) within
    /// a second, or at once on SIGHUP; every console token dies with the old master token.
    pub async fn watch_token(self: Arc<Self>) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = secret::stamp(&self.config, self.config_path.as_deref());
        // A revocation that could not be saved is tried again on every tick until it is.
        let mut owed = false;
        loop {
            let hup_now = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let forced = tokio::select! {
                _ = tokio::time::sleep(secret::POLL) => false,
                _ = hup_now => true,
            };
            if owed && crate::tokens::revoke_all(&self).await.is_ok() {
                owed = false;
                crate::info!("console tokens of the old master token revoked");
            }
            let now = secret::stamp(&self.config, self.config_path.as_deref());
            if !forced && now == seen {
                continue;
            }
            seen = now;
            match secret::reread(&self.config, self.config_path.as_deref()) {
                Ok(Some(token)) => match crate::tokens::replace_master(&self, token).await {
                    Ok(Some(revoked)) => {
                        crate::info!("the master token changed; {revoked} console token(s) revoked")
                    }
                    Ok(None) => {}
                    Err(e) => {
                        owed = true;
                        crate::warn!("the master token changed but console tokens could not be revoked yet: {e}")
                    }
                },
                Ok(None) => {}
                Err(e) => crate::warn!("cannot reread the token: {e}"),
            }
        }
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
                    true => crate::info!("Docker engine reachable at {sock}"),
                    false => crate::warn!("Docker engine unreachable at {sock}"),
                }
                was = Some(now);
            }
            tokio::time::sleep(if now { Duration::from_secs(5) } else { Duration::from_secs(1) }).await;
        }
    }
}
