//! The extract job: an archive (the spooled request body, or a file already in the volume)
//! extracted into a directory of the volume by `vfs::extract_with`, watched through the job's
//! dial, and the viewers of the volume's servers told when it starts and ends.

use std::fs::File;
use std::sync::Arc;

use super::{tell, Job, State};
use crate::config::Config;
use crate::console::Hubs;
use crate::model::Volume;
use crate::shutdown::{Shutdown, Tasks};
use crate::store::Store;
use crate::vfs::{self, FsError};
use crate::volumes::Volumes;

/// Where the archive comes from.
pub enum Source {
    /// The request body, spooled to an unnamed file on the volume.
    Spooled(File),
    /// A file in the volume (`?from=`): copied to a spool first, so that the server cannot
    /// change it between the passes.
    InVolume(String),
}

/// What an extract job reaches: the volumes it writes, and the consoles (found through the
/// store) it reports to. Cheap to clone.
#[derive(Clone)]
pub struct Reach {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub hubs: Arc<Hubs>,
    pub volumes: Volumes,
    /// The tracker the jobs run under: they hear its shutdown signal.
    pub tasks: Tasks,
}

/// Runs `job` in the background, through the tracker: extracts `source` into the job's path
/// of `volume`. The job is bounded by its dial (`files.job_timeout`, or a cancel); the
/// shutdown signal cancels it too, so it records why and ends promptly.
pub fn start(reach: &Reach, job: Arc<Job>, volume: Volume, source: Source) {
    let (mut signal, stopping) = (reach.tasks.signal(), reach.tasks.signal());
    let dial = Arc::clone(&job);
    let body = run(reach.clone(), job, volume, source, stopping);
    reach.tasks.spawn(async move {
        tokio::pin!(body);
        tokio::select! {
            () = &mut body => return,
            () = signal.wait() => dial.dial.cancel(),
        }
        body.await
    });
}

async fn run(app: Reach, job: Arc<Job>, volume: Volume, source: Source, stopping: Shutdown) {
    let into = format!("/{}", job.path.trim_start_matches('/'));
    tell(&app, &volume.volume_id, "extract started", &format!("Extracting an archive into {into}"));
    let (a, j, key) = (app.volumes.clone(), Arc::clone(&job), volume.volume_id.clone());
    let outcome = tokio::task::spawn_blocking(move || work(&a, &j, &key, source))
        .await
        .unwrap_or_else(|e| Err(FsError::Io(std::io::Error::other(format!("extract task failed: {e}")))));
    let (state, error) = match outcome {
        Ok(_) => (State::Done, None),
        Err(_) if stopping.is_stopping() => {
            (State::Failed, Some("The daemon stopped during the extraction; nothing was extracted".to_string()))
        }
        Err(_) if job.dial.cancelled() => (State::Cancelled, Some("Cancelled; nothing was extracted".to_string())),
        Err(_) if job.dial.expired() => (
            State::Failed,
            Some(format!(
                "The extraction took longer than files.job_timeout ({}); nothing was extracted",
                app.config.files.job_timeout
            )),
        ),
        Err(e) => (State::Failed, Some(crate::volumes::fs_error(e, &volume).to_string())),
    };
    job.finish(state, error.clone());
    let tally = job.dial.tally();
    match state {
        State::Done => tell(
            &app,
            &volume.volume_id,
            "extract completed",
            &format!("Extracted {} entries into {into}", tally.extracted),
        ),
        State::Cancelled => tell(&app, &volume.volume_id, "extract cancelled", "Extraction cancelled"),
        _ => tell(
            &app,
            &volume.volume_id,
            "extract failed",
            &format!("Extraction failed: {}", error.unwrap_or_default()),
        ),
    }
}

fn work(volumes: &Volumes, job: &Job, volume_key: &str, source: Source) -> Result<usize, FsError> {
    let (_, root) = crate::volumes::open_root(volumes, volume_key).map_err(|e| FsError::Invalid(e.to_string()))?;
    match source {
        Source::Spooled(file) => vfs::extract_with(&root, &job.path, file, &job.dial),
        Source::InVolume(from) => vfs::extract_from(&root, &job.path, &from, &job.dial),
    }
}
