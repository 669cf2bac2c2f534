//! The journal's one writer: every `console.journal_flush` it takes what each hub's ring
//! took since the last round (and its install output) and appends it to that server's
//! journal, on the blocking pool, never on the console thread or an async worker. The ring is
//! its source, as for any viewer: the pump never waits for the disk. A pump that finds half
//! its ring not yet journaled calls the writer at once; a flood faster than the disk still
//! loses lines from the journal (never from live viewers), and the numbering keeps the gap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Journals, Stream};
use crate::console::ring::Read;
use crate::console::{line, Hub, Hubs};

/// How often appended lines are made durable (fsync): what a power cut may lose at most.
pub const SYNC_EVERY: Duration = Duration::from_secs(10);
/// Lines taken from one ring in one round at most (the ring holds no more anyway).
const MAX_ROUND: u64 = 100_000;

/// What the writer keeps between rounds: when it last made the journals durable. (Where it is
/// in each ring is the hub's own: a server deleted and made again under the same id starts
/// from its first line on a new hub, never where the old one's writer stopped.)
#[derive(Default)]
pub struct Progress {
    synced: Option<Instant>,
}

/// Appends what is new in `hubs` to `journals` (blocking: file I/O).
pub fn flush(journals: &Journals, hubs: &[Arc<Hub>], progress: &mut Progress) {
    for hub in hubs {
        let install = hub.news().take_install_log();
        if hub.tty().is_gone() || !journals.enabled() {
            continue;
        }
        if let Err(e) = flush_one(journals, hub, &install) {
            crate::warn!("{}: cannot append to the console journal: {e}", hub.id);
        }
    }
    if progress.synced.is_none_or(|t| t.elapsed() >= SYNC_EVERY) {
        journals.sync_all();
        progress.synced = Some(Instant::now());
    }
}

fn flush_one(journals: &Journals, hub: &Hub, install: &[String]) -> std::io::Result<()> {
    if !install.is_empty() {
        let last = journals.last(&hub.id, Stream::Install)?;
        let literals: Vec<Vec<u8>> = install.iter().map(|l| serde_json::to_vec(l).unwrap_or_default()).collect();
        journals.append(&hub.id, Stream::Install, (last + 1..).zip(literals.iter().map(Vec::as_slice)))?;
    }
    let ring = hub.tty().ring();
    let head = ring.head();
    let next = hub.tty().journaled().max(hub.tty().line_base()) + 1;
    let oldest = (head + 1).saturating_sub(ring.capacity()).max(next);
    let from = oldest.max(head.saturating_sub(MAX_ROUND) + 1);
    let mut frames = Vec::new();
    for n in from..=head {
        if let Read::Line(frame, _) = ring.read(n) {
            frames.push((n, frame));
        }
    }
    hub.tty().set_journaled(head);
    journals.append(&hub.id, Stream::Console, frames.iter().map(|(n, f)| (*n, line::literal(f))))
}

/// Runs [`flush`] every `every` until the process ends; [`final_flush`] does the last round.
pub async fn run(
    journals: Journals,
    hubs: Arc<Hubs>,
    every: Duration,
    progress: Arc<Mutex<Progress>>,
    mut shutdown: crate::shutdown::Shutdown,
) {
    loop {
        // A round runs to its end; the shutdown signal is heard between rounds (the last
        // one is `final_flush`'s).
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = crate::console::JOURNAL_DUE.notified() => {}
            () = shutdown.wait() => return,
        }
        round(&journals, &hubs, &progress).await;
    }
}

async fn round(journals: &Journals, hubs: &Arc<Hubs>, progress: &Arc<Mutex<Progress>>) {
    let (journals, all, progress) = (journals.clone(), hubs.all(), Arc::clone(progress));
    let _ = tokio::task::spawn_blocking(move || {
        let mut p = progress.lock().unwrap_or_else(|p| p.into_inner());
        flush(&journals, &all, &mut p);
    })
    .await;
}

/// The last round at shutdown, made durable.
pub async fn final_flush(journals: &Journals, hubs: &Arc<Hubs>, progress: &Arc<Mutex<Progress>>) {
    round(journals, hubs, progress).await;
    let journals = journals.clone();
    let _ = tokio::task::spawn_blocking(move || journals.sync_all()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn print(hub: &Hub, lines: &[&str]) {
        let mut w = hub.tty().take_writer().unwrap();
        for l in lines {
            w.push(&line::encode_within(l, 1024), 1);
        }
        hub.tty().return_writer(w);
    }

    fn journaled(journals: &Journals, id: &str) -> Vec<(u64, String)> {
        let lines = journals.read(id, Stream::Console, u64::MAX, 100).unwrap();
        lines.into_iter().map(|(n, l)| (n, serde_json::from_slice(&l).unwrap())).collect()
    }

    /// A server deleted and made again under its id between two rounds: the new one's lines
    /// are journaled from its first (the writer's place was once kept by id, and the new
    /// server's first lines were skipped as if already written).
    #[test]
    fn a_server_made_again_under_its_id_is_journaled_from_its_first_line() {
        let dir = TempDir::new("writer");
        let journals = Journals::new(dir.path().to_path_buf(), 1 << 20);
        let hubs = Hubs::new(64, 64 * 1024);
        let mut progress = Progress::default();
        print(&hubs.get("srv"), &["old 1", "old 2", "old 3"]);
        flush(&journals, &hubs.all(), &mut progress);
        assert_eq!(journaled(&journals, "srv").len(), 3);
        hubs.remove("srv");
        journals.remove("srv").unwrap();
        journals.revive("srv");
        print(&hubs.get("srv"), &["new 1", "new 2"]);
        flush(&journals, &hubs.all(), &mut progress);
        assert_eq!(journaled(&journals, "srv"), vec![(1, "new 1".into()), (2, "new 2".into())]);
        // And a round with nothing new writes nothing twice.
        flush(&journals, &hubs.all(), &mut progress);
        assert_eq!(journaled(&journals, "srv").len(), 2);
    }
}
