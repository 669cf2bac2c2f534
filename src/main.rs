//! The `lightd` binary: command line, runtime, wiring (the library does the rest).
//! This file is the composition root: command line, runtime, wiring.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use lightd::config::Config;
use lightd::{app, http, ids, lifecycle, shutdown, store};

const USAGE: &str = "usage: lightd [--config PATH] [--check-config | --token what|reset | --version]
  (no action)      serve the API (config default ./config.json; embedded defaults if absent)
  --check-config   validate the config and exit (exit code 2 when invalid)
  --token what     print the API token (generating one if the config has none)
  --token reset    replace the API token and print the new one
  --version        print the version";

enum Action {
    Serve,
    Check,
    TokenWhat,
    TokenReset,
    Version,
    Help,
}

fn parse_args(args: &[String]) -> Result<(PathBuf, Action), String> {
    let mut config = PathBuf::from("config.json");
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
    Ok((config, action))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, action) = match parse_args(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("lightd: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match action {
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
    let mut config = match Config::load(&path).and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lightd: {e}");
            return ExitCode::from(2);
        }
    };
    let token_result = match action {
        Action::Check => {
            let origin = if path.exists() { "" } else { " (absent: embedded defaults)" };
            println!("config {} is valid{origin}", path.display());
            return ExitCode::SUCCESS;
        }
        Action::TokenReset => set_token(&mut config, &path),
        _ if config.authorization.token.is_empty() => set_token(&mut config, &path),
        _ => Ok(()),
    };
    if let Err(e) = token_result {
        eprintln!("lightd: {e}");
        return ExitCode::FAILURE;
    }
    if matches!(action, Action::TokenWhat | Action::TokenReset) {
        println!("{}", config.authorization.token);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lightd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lightd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Generates a token and writes it back to the config file atomically.
fn set_token(config: &mut Config, path: &std::path::Path) -> Result<(), String> {
    config.authorization.token = ids::new_token().map_err(|e| format!("no randomness: {e}"))?;
    config.save(path).map_err(|e| e.to_string())?;
    eprintln!("lightd: wrote a new API token to {} (show it with --token what)", path.display());
    Ok(())
}

async fn serve(config: Config) -> Result<(), String> {
    let store = store::Store::open(&config.storage.state_file).map_err(|e| e.to_string())?;
    let writer = tokio::spawn(Arc::clone(&store).run_writer());
    let addr = (config.server.host.as_str(), config.server.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", addr.0, addr.1))?;
    let app = app::App::new(config, Arc::clone(&store), http::router::labels());
    lifecycle::boot(&app);
    // Learn the engine's state before answering /health; have the network ready meanwhile.
    if app.docker.ping().await.is_ok() {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let net = &app.config.containers.default_network;
            if let Err(e) = app.docker.ensure_network(net).await {
                eprintln!("lightd: cannot create network {net} yet: {e}");
            }
        });
    }
    tokio::spawn(Arc::clone(&app).watch_docker());
    tokio::spawn(lifecycle::events::watch(Arc::clone(&app)));
    eprintln!(
        "lightd {} listening on {} (state {}, docker {})",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        app.config.storage.state_file.display(),
        app.config.docker.socket_path.display(),
    );
    http::serve(Arc::clone(&app), listener, shutdown::signalled()).await;
    // Supervisors end (servers keep running), then the writer saves what is pending.
    app.sups.shutdown();
    if !app.tasks.wait(Duration::from_secs(5)).await {
        eprintln!("lightd: some supervisors did not end within 5 s");
    }
    store.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    eprintln!("lightd: stopped");
    Ok(())
}
