//! The bundle of room handles the HTTP handlers use, built once by the composition root.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hyper::body::Bytes;

use crate::backups::Backups;
use crate::config::Config;
use crate::console::Hubs;
use crate::docker::Docker;
use crate::jobs::{Jobs, Reach};
use crate::journal::Journals;
use crate::lifecycle::Supervisors;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tokens::Tokens;
use crate::volumes::Volumes;

/// What a request handler may reach: one handle per room, each cheap to clone. Only `http/`
/// holds it; its fields are private, read through the methods below.
pub struct Handles {
    config: Arc<Config>,
    store: Arc<Store>,
    docker: Arc<Docker>,
    metrics: Arc<Metrics>,
    hubs: Arc<Hubs>,
    journals: Journals,
    sups: Supervisors,
    tokens: Tokens,
    backups: Backups,
    volumes: Volumes,
    /// Extract jobs, running and lately finished.
    jobs: Arc<Jobs>,
    /// The node report and the usage meters.
    node: crate::node::Node,
    /// Servers moving to or from this node.
    transfers: crate::transfer::Transfers,
    /// The SFTP server's live sessions (a deleted user's are ended at once).
    #[cfg(feature = "sftp")]
    sftp_sessions: crate::sftp::Sessions,
    /// What an extract job reaches.
    reach: Reach,
    /// The daemon's multi-threaded runtime: where work asked for on the console thread runs
    /// (a session's commands and power actions), so it stays the console's.
    runtime: tokio::runtime::Handle,
    started: Instant,
    /// `GET /containers` as serialized at a state version (see `containers::list`).
    list_cache: Mutex<Option<(u64, Bytes)>>,
}

/// The handles a [`Handles`] bundle is made of (see [`Handles::new`]).
pub struct Parts {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub docker: Arc<Docker>,
    pub metrics: Arc<Metrics>,
    pub hubs: Arc<Hubs>,
    pub journals: Journals,
    pub sups: Supervisors,
    pub tokens: Tokens,
    pub backups: Backups,
    pub volumes: Volumes,
    pub jobs: Arc<Jobs>,
    pub node: crate::node::Node,
    pub transfers: crate::transfer::Transfers,
    /// The tracker extract jobs run under.
    pub tasks: crate::shutdown::Tasks,
    #[cfg(feature = "sftp")]
    pub sftp_sessions: crate::sftp::Sessions,
}

impl Handles {
    /// Called on the daemon's runtime (it keeps its handle).
    pub fn new(p: Parts) -> Handles {
        let reach = Reach {
            config: Arc::clone(&p.config),
            store: Arc::clone(&p.store),
            hubs: Arc::clone(&p.hubs),
            volumes: p.volumes.clone(),
            tasks: p.tasks,
        };
        Handles {
            config: p.config,
            store: p.store,
            docker: p.docker,
            metrics: p.metrics,
            hubs: p.hubs,
            journals: p.journals,
            sups: p.sups,
            tokens: p.tokens,
            backups: p.backups,
            reach,
            volumes: p.volumes,
            jobs: p.jobs,
            node: p.node,
            transfers: p.transfers,
            #[cfg(feature = "sftp")]
            sftp_sessions: p.sftp_sessions,
            runtime: tokio::runtime::Handle::current(),
            started: Instant::now(),
            list_cache: Mutex::new(None),
        }
    }

    /// The config as a shared handle (for rooms that keep it, such as a transfer's).
    pub fn config_arc(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn docker(&self) -> &Arc<Docker> {
        &self.docker
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn hubs(&self) -> &Arc<Hubs> {
        &self.hubs
    }

    pub fn journals(&self) -> &Journals {
        &self.journals
    }

    pub fn sups(&self) -> &Supervisors {
        &self.sups
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    pub fn backups(&self) -> &Backups {
        &self.backups
    }

    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    pub fn node(&self) -> &crate::node::Node {
        &self.node
    }

    pub fn transfers(&self) -> &crate::transfer::Transfers {
        &self.transfers
    }

    #[cfg(feature = "sftp")]
    pub fn sftp_sessions(&self) -> &crate::sftp::Sessions {
        &self.sftp_sessions
    }

    /// What an extract job reaches (`jobs::start_extract`).
    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn list_cache(&self) -> &Mutex<Option<(u64, Bytes)>> {
        &self.list_cache
    }
}
