//! The `lightd` binary: command line, runtime, wiring (the library does the rest).
//! This file is the composition root: command line, runtime, wiring.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use lightd::backups::Backups;
use lightd::config::{Config, QuotaSetting};
use lightd::console::Hubs;
use lightd::docker::Docker;
use lightd::journal::Journals;
use lightd::lifecycle::Supervisors;
use lightd::metrics::Metrics;
use lightd::model::Quota;
use lightd::tokens::Tokens;
use lightd::volumes::Volumes;
use lightd::{http, lifecycle, notify, paths, secret, shutdown, store, volumes};

const USAGE: &str = "usage: lightd [--config PATH] [--check-config | --token what|reset | --version]
  (no action)      serve the API (config default ./config.json; embedded defaults if absent)
  --check-config   validate the config and exit
  --token what     print the API token (generating one if the config has none)
  --token reset    replace the API token and print the new one
  --version        print the version
exit codes: 0 done, 1 failed while running, 2 bad command line or config, or a path in the
  config this user cannot use (run as root or change storage.*, volumes.base_path, backups.path)";

/// What the command line asks lightd to do.
enum Action {
    Serve,
    Check,
    TokenWhat,
    TokenReset,
    Version,
    Help,
}

/// What the command line asks for.
struct Args {
    config: PathBuf,
    /// `--config` was given (then the file must exist).
    explicit: bool,
    action: Action,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut config = PathBuf::from("config.json");
    let mut explicit = false;
    let mut action = Action::Serve;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value =
            |name: &str| inline.clone().or_else(|| it.next().cloned()).ok_or(format!("{name} needs a value"));
        action = match flag {
            "--config" | "-c" => {
                config = PathBuf::from(value("--config")?);
                explicit = true;
                continue;
            }
            "--check-config" => Action::Check,
            "--version" | "-V" => Action::Version,
            "--help" | "-h" => Action::Help,
            "--token" => match value("--token")?.as_str() {
                "what" => Action::TokenWhat,
                "reset" => Action::TokenReset,
                other => return Err(format!("--token takes what or reset, not {other:?}")),
            },
            other => return Err(format!("unknown argument {other:?}")),
        };
    }
    Ok(Args { config, explicit, action })
}

/// Exit code of a bad command line or config, or of a path in it this user cannot use: fix the
/// config (or run as root) before trying again (dist/lightd.service does not restart on it).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    log_panics();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(v) => v,
        Err(e) => {
            lightd::error!("{e} (lightd --help shows the usage)");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match args.action {
        Action::Version => {
            println!("lightd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Action::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let Args { config: path, explicit, action } = args;
    if explicit && !path.exists() {
        lightd::error!(
            "config {} does not exist (without --config, ./config.json or the embedded defaults are used)",
            path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let config = match Config::load(&path).and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            lightd::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    lightd::log::init(config.log.level(), config.log.format());
    // Every place the daemon writes, before anything (a generated token) is written.
    if matches!(action, Action::Serve) {
        if let Err(e) = paths::check(&config) {
            lightd::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let token = match action {
        Action::Check => {
            let origin = if path.exists() { "" } else { " (absent: embedded defaults)" };
            println!("config {} is valid{origin}", path.display());
            return ExitCode::SUCCESS;
        }
        Action::TokenReset => secret::reset(&config, &path),
        _ => secret::ensure(&config),
    };
    let token = match token {
        Ok(t) => t,
        Err(e) if e.permission_denied() => {
            lightd::error!("{e}; {}", paths::HINT);
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            lightd::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(action, Action::TokenWhat | Action::TokenReset) {
        println!("{token}");
        return ExitCode::SUCCESS;
    }
    let mut config = config;
    fit_connections(&mut config, raise_nofile());
    lightd::memory::tune();
    // Blocking threads (file and store work) go 2 s after their last job instead of 10 s:
    // their stacks are memory an idle daemon should give back.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            lightd::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = lightd::console::thread::start() {
        lightd::error!("cannot start the console thread: {e}");
        return ExitCode::FAILURE;
    }
    let config_path = path.exists().then_some(path);
    match runtime.block_on(serve(config, config_path, token)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            lightd::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Panics go to the log as error records (one line, in the configured format), with a
/// backtrace when `RUST_BACKTRACE` asks for one.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let trace = std::backtrace::Backtrace::capture();
        match trace.status() {
            std::backtrace::BacktraceStatus::Captured => lightd::error!("thread {name:?} {info}\n{trace}"),
            _ => lightd::error!("thread {name:?} {info}"),
        }
    }));
}

/// `volumes.quota` as it applies on this machine, said once in the log.
fn quota_mode(config: &Config) -> Result<Quota, String> {
    let base = &config.volumes.base_path;
    let (detected, why) = match config.volumes.quota {
        QuotaSetting::None => return Ok(Quota::None),
        _ => lightd::quota::detect(base),
    };
    match (config.volumes.quota, detected) {
        (QuotaSetting::Loop, lightd::quota::Mode::None) => Err(format!("volumes.quota is loop, but {why}")),
        (_, lightd::quota::Mode::Loop) => {
            lightd::info!("{why}");
            Ok(Quota::Loop)
        }
        _ => {
            lightd::info!("{why}");
            Ok(Quota::None)
        }
    }
}

/// Raises the open-files soft limit to the hard limit: connections, console sessions and
/// Docker streams are all file descriptors. Returns the limit in force.
fn raise_nofile() -> u64 {
    lightd::rlimit::raise_nofile().unwrap_or_else(|e| {
        lightd::warn!("cannot raise the open-files limit: {e}");
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct it is given.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        lim.rlim_cur
    })
}

/// Keeps room under the open-files limit for Docker streams, volumes and the state file:
/// connections beyond it would fail to accept rather than get a clear 503.
fn fit_connections(config: &mut Config, nofile: u64) {
    let room = usize::try_from(nofile.saturating_sub(512)).unwrap_or(usize::MAX).max(16);
    if config.server.max_connections > room {
        lightd::warn!(
            "server.max_connections lowered from {} to {room} to fit the open-files limit {nofile}",
            config.server.max_connections
        );
        config.server.max_connections = room;
        config.server.max_connections_per_ip = config.server.max_connections_per_ip.min(room);
    }
}

/// Opens every server's journal once, at start (off the async workers), so each console
/// numbers its lines on from its journal's newest; journals of servers deleted while lightd
/// was down go.
async fn open_journals(store: &store::Store, journals: &Journals, hubs: &Hubs) {
    let ids: Vec<String> = store.read(|s| s.containers.keys().cloned().collect());
    let journals = journals.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let on_record = |id: &str| ids.iter().any(|k| k == id);
        if let Err(e) = journals.retain(&on_record) {
            lightd::warn!("cannot remove the journals of deleted servers: {e}");
        }
        ids.iter()
            .map(|id| {
                let last = journals.last(id, lightd::journal::Stream::Console).unwrap_or_else(|e| {
                    lightd::warn!("{id}: cannot open the console journal: {e}");
                    0
                });
                (id.clone(), last)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (id, last) in opened {
        hubs.get(&id).tty().set_line_base(last);
    }
}

/// Every room's handle, built once. Called on the daemon's runtime.
struct Rooms {
    config: Arc<Config>,
    store: Arc<store::Store>,
    docker: Arc<Docker>,
    hubs: Arc<Hubs>,
    journals: Journals,
    metrics: Arc<Metrics>,
    tasks: shutdown::Tasks,
    volumes: Volumes,
    backups: Backups,
    sups: Supervisors,
    tokens: Tokens,
    extracts: Arc<lightd::jobs::Jobs>,
    node: lightd::node::Node,
    transfers: lightd::transfer::Transfers,
    #[cfg(feature = "sftp")]
    sftp_sessions: lightd::sftp::Sessions,
}

/// The composition function: each room gets the handles it uses, nothing more.
fn compose(
    config: Config,
    config_path: Option<PathBuf>,
    token: String,
    quota: Quota,
    store: Arc<store::Store>,
) -> Rooms {
    let config = Arc::new(config);
    let docker = Arc::new(Docker::new(&config.docker.socket_path));
    let hubs = Arc::new(Hubs::new(config.console.ring_lines, config.console.ring_bytes));
    let journals = Journals::new(config.storage.journal_dir(), config.console.journal_bytes);
    let metrics = Arc::new(Metrics::new(http::router::routes()));
    let tasks = shutdown::Tasks::default();
    let volumes = Volumes::new(Arc::clone(&config), quota, Arc::clone(&store));
    let extracts = Arc::new(lightd::jobs::Jobs::default());
    let node = lightd::node::Node::new(lightd::node::Settings::from_config(&config));
    let backups = Backups::new(
        Arc::clone(&config),
        Arc::clone(&store),
        Arc::clone(&hubs),
        volumes.clone(),
        tasks.clone(),
        Arc::clone(&extracts),
    );
    let sups = Supervisors::new(lifecycle::Parts {
        config: Arc::clone(&config),
        store: Arc::clone(&store),
        docker: Arc::clone(&docker),
        hubs: Arc::clone(&hubs),
        journals: journals.clone(),
        backups: backups.clone(),
        volumes: volumes.clone(),
        metrics: Arc::clone(&metrics),
        tasks: tasks.clone(),
        node: node.clone(),
    });
    let tokens = Tokens::new(Arc::clone(&config), config_path, token, Arc::clone(&store));
    let transfers = lightd::transfer::Transfers::new(tasks.clone());
    Rooms {
        config,
        store,
        docker,
        hubs,
        journals,
        metrics,
        tasks,
        volumes,
        backups,
        sups,
        tokens,
        extracts,
        node,
        transfers,
        #[cfg(feature = "sftp")]
        sftp_sessions: lightd::sftp::Sessions::default(),
    }
}

impl Rooms {
    /// The bundle the HTTP handlers hold.
    fn handles(&self) -> http::Handles {
        http::Handles::new(http::Parts {
            config: Arc::clone(&self.config),
            store: Arc::clone(&self.store),
            docker: Arc::clone(&self.docker),
            metrics: Arc::clone(&self.metrics),
            hubs: Arc::clone(&self.hubs),
            journals: self.journals.clone(),
            sups: self.sups.clone(),
            tokens: self.tokens.clone(),
            backups: self.backups.clone(),
            volumes: self.volumes.clone(),
            jobs: Arc::clone(&self.extracts),
            node: self.node.clone(),
            transfers: self.transfers.clone(),
            tasks: self.tasks.clone(),
            #[cfg(feature = "sftp")]
            sftp_sessions: self.sftp_sessions.clone(),
        })
    }
}

/// Connections the kernel may queue before lightd accepts them. The usual default (128) is
/// too few for a burst (a thousand viewers coming back after a restart): past it, handshakes
/// are dropped and clients wait a second or more to retry. The kernel caps it at somaxconn.
const BACKLOG: u32 = 4096;

/// Binds the API's listening socket (the first address `host` resolves to).
async fn listen(addr: (&str, u16)) -> std::io::Result<tokio::net::TcpListener> {
    let resolved = tokio::net::lookup_host(addr).await?.next();
    let addr = resolved.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Binds the SFTP server (logging its address and host key) and runs it as a task, when
/// `sftp.enabled` and built with the `sftp` feature.
#[cfg(feature = "sftp")]
async fn start_sftp(rooms: &Rooms, config: &Arc<Config>) -> Result<(), String> {
    if !config.sftp.enabled {
        return Ok(());
    }
    let (listener, key) = lightd::sftp::bind(config).await?;
    let parts = lightd::sftp::Parts {
        config: Arc::clone(config),
        store: Arc::clone(&rooms.store),
        volumes: rooms.volumes.clone(),
        hubs: Arc::clone(&rooms.hubs),
        sessions: rooms.sftp_sessions.clone(),
    };
    let server = lightd::sftp::spawn(listener, key, parts, rooms.tasks.signal())
        .map_err(|e| format!("sftp: cannot start its thread: {e}"))?;
    rooms.tasks.spawn(server);
    Ok(())
}

#[cfg(not(feature = "sftp"))]
async fn start_sftp(_: &Rooms, config: &Arc<Config>) -> Result<(), String> {
    if config.sftp.enabled {
        lightd::warn!("sftp.enabled is true but this lightd was built without the sftp feature");
    }
    Ok(())
}

async fn serve(config: Config, config_path: Option<PathBuf>, token: String) -> Result<(), String> {
    let store = store::Store::open(&config.storage.state_file).map_err(|e| e.to_string())?;
    // Owned here: awaited last, once everything that writes the state has ended.
    let writer = shutdown::detach(Arc::clone(&store).run_writer());
    let addr = (config.server.host.as_str(), config.server.port);
    let listener = listen(addr).await.map_err(|e| format!("cannot listen on {}:{}: {e}", addr.0, addr.1))?;
    let quota = quota_mode(&config)?;
    let rooms = compose(config, config_path, token, quota, Arc::clone(&store));
    let config = Arc::clone(&rooms.config);
    volumes::mount_all(&rooms.volumes).await;
    open_journals(&store, &rooms.journals, &rooms.hubs).await;
    let journal_progress = Arc::new(std::sync::Mutex::new(lightd::journal::writer::Progress::default()));
    let tasks = rooms.tasks.clone();
    tasks.spawn(lightd::journal::writer::run(
        rooms.journals.clone(),
        Arc::clone(&rooms.hubs),
        Duration::from_secs(config.console.journal_flush),
        Arc::clone(&journal_progress),
        tasks.signal(),
    ));
    lightd::backups::recover(&rooms.backups).await;
    tasks.spawn_loop(lightd::tokens::watch_master(rooms.tokens.clone()));
    lifecycle::boot(&rooms.sups).await;
    // Learn the engine's state before answering /health; have the network ready meanwhile.
    if rooms.docker.ping().await.is_ok() {
        let (docker, config) = (Arc::clone(&rooms.docker), Arc::clone(&config));
        tasks.spawn_loop(async move {
            let net = &config.containers.default_network;
            match docker.ensure_network(net, &lifecycle::network::network_options()).await {
                Err(e) => lightd::warn!("cannot create network {net} yet: {e}"),
                Ok(id) => lifecycle::network::warn_if_open(&docker, net, &id).await,
            }
        });
    }
    tasks.spawn_loop(lightd::docker::watch(Arc::clone(&rooms.docker)));
    tasks.spawn_loop(lifecycle::events::watch(rooms.sups.clone()));
    tasks.spawn_loop(volumes::watch_fullness(rooms.volumes.clone(), Arc::clone(&rooms.hubs)));
    {
        let (node, store, docker) = (rooms.node.clone(), Arc::clone(&rooms.store), Arc::clone(&rooms.docker));
        tasks.spawn_loop(async move { lightd::node::run(node, store, &docker).await });
    }
    start_sftp(&rooms, &config).await?;
    // Before the daemon says it listens: from then on a SIGTERM must mean a clean stop.
    let signalled = shutdown::signalled();
    lightd::info!(
        "lightd {} listening on {} (state {}, docker {})",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        config.storage.state_file.display(),
        config.docker.socket_path.display(),
    );
    // The listener is bound and its backlog takes connections from now on: ready.
    notify::ready();
    let stop = async {
        let signal = signalled.await;
        notify::stopping();
        lightd::info!("{signal}: stopping (servers keep running)");
    };
    // The one place shutdown is waited for, in order. 1-2: stop accepting, drain the
    // connections (`http::serve` returns once they are closed or out of time).
    http::serve(rooms.handles(), listener, stop).await;
    // 3: every task hears the one signal (loops end, supervisors, backup and extract jobs
    // stop); servers keep running.
    tasks.stop();
    if !tasks.wait(Duration::from_secs(5)).await {
        lightd::warn!("some supervisors or jobs did not end within 5 s");
    }
    // 4: flush the journals, then the store.
    // What the consoles printed last goes to the journals, and to disk.
    lightd::journal::writer::final_flush(&rooms.journals, &rooms.hubs, &journal_progress).await;
    // The meters as they stand (starts and crashes told since the last reading included).
    if let Err(e) = rooms.node.save() {
        lightd::warn!("cannot save the usage meters: {e}");
    }
    store.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    lightd::info!("stopped");
    Ok(())
}
