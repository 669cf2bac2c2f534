//! `DELETE /containers/:id`: the Docker container, the data directory, the ports and the
//! record go; the volume stays.

use super::{begin, bounded, install::data_dir, record, release_ports, REMOVE_TIMEOUT};
use crate::app::App;
use crate::error::{Error, Result};

/// Removes Docker's side first: if the engine is down (503) or slow (past 30 s) nothing
/// else is touched, so the record never points at a half-deleted server.
pub async fn delete(app: &App, id: &str) -> Result<()> {
    let _guard = begin(app, id, "delete").await?;
    let rec = record(app, id)?;
    let docker = &app.docker;
    let mut names =
        vec![rec.docker_name(), format!("{}-install", rec.docker_name()), format!("{}-rebind", rec.docker_name())];
    names.extend(rec.container_id.clone());
    for name in &names {
        bounded(REMOVE_TIMEOUT, "removing the container", docker.remove_container(name)).await?;
    }
    let dir = data_dir(app, id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::Internal(format!("cannot remove {}: {e}", dir.display())));
        }
        _ => {}
    }
    app.store
        .update(|s| {
            release_ports(s, id, &[]);
            s.containers.remove(id);
            Ok::<_, Error>(())
        })
        .await?;
    app.hubs.remove(id);
    app.ops.forget(id);
    Ok(())
}
