//! A running backup or restore: which backup it is, its deadline (`backups.timeout`, counted
//! from when it gets one of the `backups.max_parallel` slots), how it is cancelled, and how a
//! canceller waits for it to end. Blocking work asks [`Job::check`] between steps; async waits
//! race [`Job::interrupted`].

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::vfs::FsError;

/// What a job does with its volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Restore,
    /// A moment's hold while a backup or the volume is deleted; never cancelled.
    Delete,
}

/// One backup, restore or delete of a volume (one at a time per volume).
pub struct Job {
    pub kind: Kind,
    pub backup_id: String,
    timeout: Duration,
    /// Set when the job gets its slot: waiting for one does not count.
    deadline: OnceLock<Instant>,
    /// Set once, by a cancel or the daemon stopping.
    cancelled: watch::Sender<Option<Stopped>>,
    done: watch::Sender<bool>,
    /// What file work (a restore's extraction) watches: cancelled with the job, and bound
    /// by its deadline once the clock runs.
    dial: OnceLock<crate::vfs::Dial>,
}

/// Why a job ended before its work was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Cancelled,
    /// The daemon stops: the job ends as a restart would have left it.
    Shutdown,
    TimedOut(Duration),
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopped::Cancelled => f.write_str("cancelled"),
            Stopped::Shutdown => f.write_str("interrupted by daemon restart"),
            Stopped::TimedOut(t) => write!(f, "stopped after backups.timeout ({} s)", t.as_secs()),
        }
    }
}

impl Job {
    pub fn new(kind: Kind, backup_id: &str, timeout: Duration) -> Job {
        Job {
            kind,
            backup_id: backup_id.to_string(),
            timeout,
            deadline: OnceLock::new(),
            cancelled: watch::Sender::new(None),
            done: watch::Sender::new(false),
            dial: OnceLock::new(),
        }
    }

    /// The dial file work of this job runs under (made with the deadline, once it runs).
    pub fn dial(&self) -> &crate::vfs::Dial {
        let dial = self.dial.get_or_init(|| crate::vfs::Dial::new(self.deadline.get().copied()));
        if self.cancelled.borrow().is_some() {
            dial.cancel();
        }
        dial
    }

    /// The job got its slot: its deadline starts now.
    pub fn start_clock(&self) {
        let _ = self.deadline.set(Instant::now() + self.timeout);
    }

    pub fn cancel(&self) {
        self.stop(Stopped::Cancelled);
    }

    /// Ends the job because the daemon stops.
    pub fn shut_down(&self) {
        self.stop(Stopped::Shutdown);
    }

    /// The first reason given wins; file work under the job's dial stops too.
    fn stop(&self, why: Stopped) {
        self.cancelled.send_if_modified(|c| c.is_none() && c.replace(why).is_none());
        if let Some(dial) = self.dial.get() {
            dial.cancel();
        }
    }

    /// Whether the job must end now, and why.
    pub fn stopped(&self) -> Option<Stopped> {
        if let Some(why) = *self.cancelled.borrow() {
            return Some(why);
        }
        let late = self.deadline.get().is_some_and(|d| Instant::now() >= *d);
        late.then_some(Stopped::TimedOut(self.timeout))
    }

    /// [`Job::stopped`] as the file layer's error, for blocking work to return between steps.
    pub fn check(&self) -> Result<(), FsError> {
        match self.stopped() {
            Some(why) => Err(FsError::Invalid(format!("Backup job {why}"))),
            None => Ok(()),
        }
    }

    /// Resolves when the job is cancelled or past its deadline (only a cancel counts while
    /// the clock has not started: waiting for a slot is not the job's time).
    pub async fn interrupted(&self) -> Stopped {
        let mut cancelled = self.cancelled.subscribe();
        let deadline = async {
            match self.deadline.get() {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(*d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            c = cancelled.wait_for(|c| c.is_some()) => c.ok().and_then(|c| *c).unwrap_or(Stopped::Cancelled),
            () = deadline => Stopped::TimedOut(self.timeout),
        }
    }

    /// The job no longer touches the volume or the archive.
    pub fn finish(&self) {
        self.done.send_replace(true);
    }

    /// Waits until [`Job::finish`], at most `limit`; tells whether it came.
    pub async fn finished(&self, limit: Duration) -> bool {
        let mut done = self.done.subscribe();
        tokio::time::timeout(limit, done.wait_for(|d| *d)).await.is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancel_and_deadline_stop_a_job() {
        let job = Job::new(Kind::Create, "b", Duration::from_secs(3600));
        assert!(job.check().is_ok() && job.stopped().is_none());
        job.start_clock();
        assert!(job.stopped().is_none(), "an hour is far");
        job.cancel();
        assert_eq!(job.stopped(), Some(Stopped::Cancelled));
        assert_eq!(job.interrupted().await, Stopped::Cancelled);
        assert!(matches!(job.check(), Err(FsError::Invalid(m)) if m == "Backup job cancelled"));

        let late = Job::new(Kind::Restore, "b", Duration::ZERO);
        assert!(late.stopped().is_none(), "no deadline before the slot");
        late.start_clock();
        assert_eq!(late.stopped(), Some(Stopped::TimedOut(Duration::ZERO)));
        assert_eq!(late.interrupted().await, Stopped::TimedOut(Duration::ZERO));
        assert_eq!(late.stopped().map(|s| s.to_string()).as_deref(), Some("stopped after backups.timeout (0 s)"));

        assert!(!late.finished(Duration::from_millis(10)).await);
        late.finish();
        assert!(late.finished(Duration::from_millis(10)).await);
    }
}
