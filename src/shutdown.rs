//! Resolves when the process is asked to stop (SIGINT or SIGTERM).

use tokio::signal::unix::{signal, SignalKind};

pub async fn signalled() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            eprintln!("lightd: cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}
