//! The journal's one writer: every `console.journal_flush` it takes what each hub's ring
//! took since the last round (and its install output) and appends it to that server's
//! journal, on the blocking pool, never on the console thread or an async worker. The ring is
//! its source, as for any viewer: the pump never waits for the disk. A pump that finds half
//! its ring not yet journaled calls the writer at once; a flood faster than the disk still
//! loses lines from the journal (never from live viewers), and the numbering keeps the gap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Journals, Stream};
use crate::console::ring::Read;
use crate::console::{line, Hub, Hubs};

/// How often appended lines are made durable (fsync): what a power cut may lose at most.
pub const SYNC_EVERY: Duration = Duration::from_secs(10);
/// Lines taken from one ring in one round at most (the ring holds no more anyway).
const MAX_ROUND: u64 = 100_000;

/// Where the writer is in each ring, by server.
#[derive(Default)]
pub struct Cursors {
    next: HashMap<String, u64>,
    synced: Option<Instant>,
}

/// Appends what is new in `hubs` to `journals` (blocking: file I/O).
pub fn flush(journals: &Journals, hubs: &[Arc<Hub>], cursors: &mut Cursors) {
    cursors.next.retain(|id, _| hubs.iter().any(|h| h.id == *id));
    for hub in hubs {
        let install = hub.take_install_log();
        if hub.is_gone() || !journals.enabled() {
            continue;
        }
        if let Err(e) = flush_one(journals, hub, &install, cursors) {
            crate::warn!("{}: cannot append to the console journal: {e}", hub.id);
        }
    }
    if cursors.synced.is_none_or(|t| t.elapsed() >= SYNC_EVERY) {
        journals.sync_all();
        cursors.synced = Some(Instant::now());
    }
}

fn flush_one(journals: &Journals, hub: &Hub, install: &[String], cursors: &mut Cursors) -> std::io::Result<()> {
    if !install.is_empty() {
        let last = journals.last(&hub.id, Stream::Install)?;
        let literals: Vec<Vec<u8>> = install.iter().map(|l| serde_json::to_vec(l).unwrap_or_default()).collect();
        journals.append(&hub.id, Stream::Install, (last + 1..).zip(literals.iter().map(Vec::as_slice)))?;
    }
    let ring = hub.ring();
    let head = ring.head();
    let next = cursors.next.entry(hub.id.clone()).or_insert(hub.line_base() + 1);
    let oldest = (head + 1).saturating_sub(ring.capacity()).max(*next);
    let from = oldest.max(head.saturating_sub(MAX_ROUND) + 1);
    let mut frames = Vec::new();
    for n in from..=head {
        if let Read::Line(frame, _) = ring.read(n) {
            frames.push((n, frame));
        }
    }
    *next = head + 1;
    hub.set_journaled(head);
    journals.append(&hub.id, Stream::Console, frames.iter().map(|(n, f)| (*n, line::literal(f))))
}

/// Runs [`flush`] every `every` until the process ends; [`final_flush`] does the last round.
pub async fn run(
    journals: Journals,
    hubs: Arc<Hubs>,
    every: Duration,
    cursors: Arc<Mutex<Cursors>>,
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
        round(&journals, &hubs, &cursors).await;
    }
}

async fn round(journals: &Journals, hubs: &Arc<Hubs>, cursors: &Arc<Mutex<Cursors>>) {
    let (journals, all, cursors) = (journals.clone(), hubs.all(), Arc::clone(cursors));
    let _ = tokio::task::spawn_blocking(move || {
        let mut c = cursors.lock().unwrap_or_else(|p| p.into_inner());
        flush(&journals, &all, &mut c);
    })
    .await;
}

/// The last round at shutdown, made durable.
pub async fn final_flush(journals: &Journals, hubs: &Arc<Hubs>, cursors: &Arc<Mutex<Cursors>>) {
    round(journals, hubs, cursors).await;
    let journals = journals.clone();
    let _ = tokio::task::spawn_blocking(move || journals.sync_all()).await;
}
