//! Jobs: long file operations that run in the background after a `202` (extracting an
//! archive), watched with `GET /volumes/:v/jobs/:job` and cancelled with `DELETE`. Kept in
//! memory only, and bounded: at most [`MAX_RUNNING`] run on a volume at once, and a finished
//! one is shown for [`KEEP`] (only the last [`KEEP_FINISHED`] of a volume), then dropped. A
//! restart forgets them (an extraction cut short by one left nothing in its destination).

mod extract;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

pub use extract::{start as start_extract, Reach, Source};

use crate::console::Event;
use crate::error::{Error, Result};
use crate::model::now;
use crate::vfs::Dial;

/// Jobs running on one volume at most; past it a new one is a `429`.
pub const MAX_RUNNING: usize = 2;
/// How long a finished job stays to be read.
pub const KEEP: Duration = Duration::from_secs(600);
/// Finished jobs kept per volume at most (the newest).
pub const KEEP_FINISHED: usize = 20;

/// Every volume's jobs, oldest first.
#[derive(Default)]
pub struct Jobs {
    by_volume: Mutex<HashMap<String, VecDeque<Arc<Job>>>>,
}

/// One job: what it works on, its dial (progress, cancel, deadline) and, once over, its end.
pub struct Job {
    pub id: String,
    pub volume_id: String,
    pub kind: &'static str,
    /// The directory it works on, as the request gave it.
    pub path: String,
    pub dial: Dial,
    pub started_at: u64,
    end: Mutex<Option<End>>,
    /// Turns true when the job is over.
    over: watch::Sender<bool>,
}

/// How a job ended.
#[derive(Debug, Clone)]
struct End {
    state: State,
    error: Option<String>,
    at: Instant,
    finished_at: u64,
}

/// A job's state as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Done,
    Failed,
    Cancelled,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

/// A job as `GET /volumes/:v/jobs/:job` shows it.
#[derive(Debug, Serialize)]
pub struct JobView {
    pub job_id: String,
    pub kind: &'static str,
    pub volume_id: String,
    pub path: String,
    pub state: State,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries of the archive read and checked.
    pub entries: u64,
    /// Entries written.
    pub extracted: u64,
    pub error: Option<String>,
    pub started_at: u64,
    pub finished_at: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Jobs {
    /// Records a new running job of `kind` on `volume_id`, stopped by its dial at `deadline`;
    /// `429` when [`MAX_RUNNING`] already run there.
    pub fn begin(&self, volume_id: &str, kind: &'static str, path: &str, deadline: Instant) -> Result<Arc<Job>> {
        let id = crate::ids::new_uuid().map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
        let mut all = lock(&self.by_volume);
        prune(&mut all, Instant::now());
        let list = all.entry(volume_id.to_string()).or_default();
        if list.iter().filter(|j| j.state() == State::Running).count() >= MAX_RUNNING {
            return Err(Error::TooMany(format!(
                "{MAX_RUNNING} jobs already run on this volume; try again when one ends"
            )));
        }
        let job = Arc::new(Job {
            id,
            volume_id: volume_id.to_string(),
            kind,
            path: path.to_string(),
            dial: Dial::new(Some(deadline)),
            started_at: now(),
            end: Mutex::new(None),
            over: watch::Sender::new(false),
        });
        list.push_back(Arc::clone(&job));
        Ok(job)
    }

    /// Job `job_id` of `volume_id`, while it is kept.
    pub fn find(&self, volume_id: &str, job_id: &str) -> Option<Arc<Job>> {
        let mut all = lock(&self.by_volume);
        prune(&mut all, Instant::now());
        all.get(volume_id)?.iter().find(|j| j.id == job_id).cloned()
    }

    /// Forgets a job that was never announced (its request failed before the `202`).
    pub fn forget(&self, job: &Job) {
        let mut all = lock(&self.by_volume);
        if let Some(list) = all.get_mut(&job.volume_id) {
            list.retain(|j| j.id != job.id);
            if list.is_empty() {
                all.remove(&job.volume_id);
            }
        }
    }

    /// Whether a job runs on `volume_id` now.
    pub fn running_on(&self, volume_id: &str) -> bool {
        lock(&self.by_volume).get(volume_id).is_some_and(|l| l.iter().any(|j| j.state() == State::Running))
    }

    /// Jobs kept now, over all volumes (for tests and the bounds).
    pub fn len(&self) -> usize {
        lock(&self.by_volume).values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops finished jobs past [`KEEP`] and past the newest [`KEEP_FINISHED`] of each volume.
fn prune(all: &mut HashMap<String, VecDeque<Arc<Job>>>, now: Instant) {
    for list in all.values_mut() {
        list.retain(|j| j.ended_at().is_none_or(|at| now.duration_since(at) < KEEP));
        let mut finished = list.iter().filter(|j| j.state() != State::Running).count();
        list.retain(|j| {
            if finished > KEEP_FINISHED && j.state() != State::Running {
                finished -= 1;
                return false;
            }
            true
        });
    }
    all.retain(|_, list| !list.is_empty());
}

impl Job {
    pub fn state(&self) -> State {
        lock(&self.end).as_ref().map_or(State::Running, |e| e.state)
    }

    fn ended_at(&self) -> Option<Instant> {
        lock(&self.end).as_ref().map(|e| e.at)
    }

    /// Records how the job ended (the first call only) and wakes whoever waits for it.
    pub fn finish(&self, state: State, error: Option<String>) {
        let mut end = lock(&self.end);
        if end.is_none() {
            *end = Some(End { state, error, at: Instant::now(), finished_at: now() });
        }
        drop(end);
        self.over.send_replace(true);
    }

    /// Waits until the job is over, at most `limit`; whether it is.
    pub async fn wait(&self, limit: Duration) -> bool {
        let mut over = self.over.subscribe();
        tokio::time::timeout(limit, over.wait_for(|o| *o)).await.is_ok_and(|r| r.is_ok())
    }

    pub fn view(&self) -> JobView {
        let end = lock(&self.end).clone();
        let tally = self.dial.tally();
        JobView {
            job_id: self.id.clone(),
            kind: self.kind,
            volume_id: self.volume_id.clone(),
            path: self.path.clone(),
            state: end.as_ref().map_or(State::Running, |e| e.state),
            bytes: tally.bytes,
            entries: tally.entries,
            extracted: tally.extracted,
            error: end.as_ref().and_then(|e| e.error.clone()),
            started_at: self.started_at,
            finished_at: end.map(|e| e.finished_at),
        }
    }
}

/// Tells the viewers of every server using the volume: an `event` and a note.
fn tell(app: &Reach, volume_id: &str, event: &'static str, note: &str) {
    for id in app.store.read(|s| crate::volumes::used_by(s, volume_id)) {
        let hub = app.hubs.get(&id);
        hub.news().publish(Event::Named(event));
        hub.news().publish(Event::DaemonMessage(note.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn running_jobs_are_capped_and_finished_ones_pruned() {
        let jobs = Jobs::default();
        let a = jobs.begin("v", "extract", "/", later()).unwrap();
        let _b = jobs.begin("v", "extract", "/", later()).unwrap();
        assert!(matches!(jobs.begin("v", "extract", "/", later()), Err(Error::TooMany(_))));
        assert!(jobs.begin("w", "extract", "/", later()).is_ok(), "another volume has its own");
        a.finish(State::Done, None);
        a.finish(State::Failed, Some("late".into()));
        assert_eq!(a.view().state, State::Done, "the first end stands");
        let c = jobs.begin("v", "extract", "/", later()).unwrap();
        assert_eq!(jobs.find("v", &c.id).map(|j| j.id.clone()), Some(c.id.clone()));
        assert!(jobs.find("w", &c.id).is_none(), "a job is found through its own volume only");
        jobs.forget(&c);
        assert!(jobs.find("v", &c.id).is_none());
        for _ in 0..KEEP_FINISHED + 5 {
            jobs.begin("x", "extract", "/", later()).unwrap().finish(State::Failed, None);
        }
        jobs.begin("x", "extract", "/", later()).unwrap();
        let kept = lock(&jobs.by_volume)["x"].len();
        assert_eq!(kept, KEEP_FINISHED + 1, "the newest finished ones and the running one");
        // Past KEEP, a finished job goes.
        let mut all = lock(&jobs.by_volume);
        prune(&mut all, Instant::now() + KEEP + Duration::from_secs(1));
        assert_eq!(all.values().map(VecDeque::len).sum::<usize>(), 3, "only the running ones stay");
    }

    #[tokio::test]
    async fn waiting_ends_with_the_job() {
        let jobs = Jobs::default();
        let job = jobs.begin("v", "extract", "/", later()).unwrap();
        assert!(!job.wait(Duration::from_millis(20)).await);
        let (over, ()) = tokio::join!(job.wait(Duration::from_secs(5)), async {
            job.finish(State::Cancelled, Some("Cancelled".into()))
        });
        assert!(over);
        assert_eq!(job.view().error.as_deref(), Some("Cancelled"));
    }
}
