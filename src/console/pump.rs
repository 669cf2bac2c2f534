//! The one Docker attach stream per running container: output frames are split into lines
//! and pushed into the ring (waking viewers once per chunk), `start_pattern` is matched until
//! it first matches, and the write half is kept as the server's stdin. The pump is plain I/O:
//! what it sees (the pattern matched, the stream ended) it reports through a callback to
//! whoever owns the container's lifecycle.

use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use regex_lite::Regex;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::line;
use super::ring::Writer;
use super::splice::Splice;
use super::Hub;
use crate::docker::stream::OutputLines;
use crate::docker::Docker;
use crate::docker::DockerError;
use crate::journal::Journals;

/// Longest console line kept whole; longer output is cut into pieces of this size.
pub const MAX_LINE: usize = 16 * 1024;
/// Only this much of a line is matched against `start_pattern`.
pub const MATCH_PREFIX: usize = 4096;
/// After a backfill, stream lines that may repeat the tail are held at most this long.
const SPLICE_QUIET: Duration = Duration::from_millis(300);

/// What a pump reports, tagged with the run it was opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    PatternMatched {
        run: u64,
    },
    /// The attach stream ended: the server stopped (or the engine went away).
    Ended {
        run: u64,
    },
}

/// Where a pump's signals go.
pub type Report = Arc<dyn Fn(Signal) + Send + Sync>;

/// Opens the attach stream of `container_id` (before it starts, so no output is missed) and
/// runs the pump for `run`; the stream is opened and pumped on the console thread (see
/// [`super::thread`]). With `backfill` > 0 (a re-attach to a server that ran while nobody
/// listened), that many lines of Docker's log are read into the ring right after the attach
/// (here, not on the console thread), and the seam between the two is spliced so no line is
/// lost or doubled. A pump left from the previous run is given a moment to drain first.
#[allow(clippy::too_many_arguments)]
pub async fn open(
    docker: &Arc<Docker>,
    journals: &Journals,
    hub: &Arc<Hub>,
    container_id: &str,
    run: u64,
    pattern: Option<Regex>,
    backfill: usize,
    report: Report,
) -> Result<(), DockerError> {
    close(hub).await;
    let upgraded = {
        let (docker, id) = (Arc::clone(docker), container_id.to_string());
        super::thread::run(async move { docker.attach(&id).await }).await?
    };
    let (rd, wr) = tokio::io::split(TokioIo::new(upgraded));
    let mut writer =
        hub.tty().take_writer().ok_or_else(|| DockerError::Protocol("console is already attached".into()))?;
    let mut splice = Splice::default();
    let mut matcher = Matcher { pattern };
    let mut matched_before = false;
    if backfill > 0 {
        let tail = read_back(docker, &hub.id, container_id, backfill).await;
        let max = hub.tty().ring().max_line();
        // What the journal already holds of the tail is not pushed again: it would be
        // journaled twice, under new numbers.
        let fresh = journaled(journals, &hub.id, &tail, max).await;
        crate::info!("{}: {} lines read back from Docker's log, {fresh} already journaled", hub.id, tail.len());
        // A server that was starting when lightd went away may have printed its start
        // pattern meanwhile: the lines lightd never saw are matched too.
        let mut unseen = tail[fresh..].to_vec();
        matched_before = matcher.check(&mut unseen).await;
        for line in &unseen {
            writer.push(&line::encode_within(line, max), line::now_nanos());
        }
        splice = Splice::new(&tail);
    }
    *hub.tty().stdin.lock().await = Some(wr);
    hub.tty().attach_open.store(true, Release);
    let lease = Lease { hub: Arc::clone(hub), writer: Some(writer) };
    if matched_before {
        report(Signal::PatternMatched { run });
    }
    hub.tty().set_pump(super::thread::spawn(pump(lease, rd, run, matcher, splice, report)));
    Ok(())
}

/// The last `n` lines of Docker's log of `container_id`, for a backfill. The engine may be
/// busy (starting, or going down): a failed read is tried twice more, then given up, said in
/// the daemon's log, since the lines the server printed while nobody listened are then
/// missing from its console.
async fn read_back(docker: &Docker, id: &str, container_id: &str, n: usize) -> Vec<String> {
    let mut tries = 0;
    loop {
        match docker.log_tail(container_id, n, MAX_LINE).await {
            Ok(lines) => return lines,
            Err(e) if tries == 2 => {
                crate::warn!("{id}: cannot read its console back from Docker's log ({e}): what it printed while lightd was away is missing");
                return Vec::new();
            }
            Err(_) => tries += 1,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many of the first lines of a backfill the journal of `id` already ends with.
async fn journaled(journals: &Journals, id: &str, tail: &[String], max: usize) -> usize {
    let journals = journals.clone();
    let (id, literals): (String, Vec<Vec<u8>>) =
        (id.to_string(), tail.iter().map(|l| line::literal(&line::encode_within(l, max)).to_vec()).collect());
    let n = literals.len();
    tokio::task::spawn_blocking(move || {
        let seen = journals.read(&id, crate::journal::Stream::Console, u64::MAX, n).unwrap_or_default();
        let seen: Vec<Vec<u8>> = seen.into_iter().map(|(_, l)| l).collect();
        crate::journal::unseen(&seen, &literals)
    })
    .await
    .unwrap_or(0)
}

/// Ends the pump of `hub` (if any): it gets two seconds to drain a stream that is ending,
/// then it is cut off.
pub async fn close(hub: &Hub) {
    if let Some(mut old) = hub.tty().take_pump() {
        if tokio::time::timeout(Duration::from_secs(2), &mut old).await.is_err() {
            old.abort();
            let _ = old.await;
        }
    }
}

/// Holds the ring's writer for a pump and gives it back however the pump ends (even aborted).
struct Lease {
    hub: Arc<Hub>,
    writer: Option<Writer>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            self.hub.tty().return_writer(w);
        }
        self.hub.tty().attach_open.store(false, Release);
        self.hub.tty().wake.notify_waiters();
    }
}

async fn pump(
    mut lease: Lease,
    mut rd: impl AsyncRead + Unpin,
    run: u64,
    mut matcher: Matcher,
    mut splice: Splice,
    report: Report,
) {
    let hub = Arc::clone(&lease.hub);
    let Some(writer) = lease.writer.as_mut() else { return };
    let mut buf = vec![0u8; 32 * 1024];
    let mut output = OutputLines::new(MAX_LINE);
    let max = hub.tty().ring().max_line();
    // The lines of one read (only gathered while a pattern is pending: they are matched
    // before they go into the ring).
    let mut lines = Vec::new();
    let mut push = |line: String| {
        writer.push(&line::encode_within(&line, max), line::now_nanos());
    };
    loop {
        let read = match splice.undecided() {
            true => tokio::time::timeout(SPLICE_QUIET, rd.read(&mut buf)).await,
            false => Ok(rd.read(&mut buf).await),
        };
        match read {
            Err(_) => lines.extend(splice.flush()),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) if matcher.pending() => output.push(&buf[..n], |line| lines.extend(splice.feed(line))),
            Ok(Ok(n)) => output.push(&buf[..n], |line| splice.feed(line).into_iter().for_each(&mut push)),
        }
        let matched = matcher.check(&mut lines).await;
        lines.drain(..).for_each(&mut push);
        hub.tty().wake.notify_waiters();
        hub.tty().journal_if_due();
        if matched {
            report(Signal::PatternMatched { run });
        }
    }
    output.finish(|line| lines.extend(splice.feed(line)));
    lines.extend(splice.flush());
    let matched = matcher.check(&mut lines).await;
    lines.drain(..).for_each(&mut push);
    if matched {
        report(Signal::PatternMatched { run });
    }
    drop(lease);
    *hub.tty().stdin.lock().await = None;
    report(Signal::Ended { run });
}

/// A `start_pattern` not matched yet. Matching a line may take a while (a pattern and the
/// matched prefix are bounded, but this thread is every console's): it runs on the blocking
/// pool, a read's lines at a time, until the pattern first matches.
struct Matcher {
    pattern: Option<Regex>,
}

impl Matcher {
    fn pending(&self) -> bool {
        self.pattern.is_some()
    }

    /// Whether one of `lines` matches (then the pattern is done with). The lines come back
    /// into `lines` whatever happens.
    async fn check(&mut self, lines: &mut Vec<String>) -> bool {
        let Some(pattern) = self.pattern.take() else { return false };
        if lines.is_empty() {
            self.pattern = Some(pattern);
            return false;
        }
        let batch = std::mem::take(lines);
        let matching = tokio::task::spawn_blocking(move || {
            let any = |p: &Regex| batch.iter().any(|l| p.is_match(prefix(l, MATCH_PREFIX)));
            let hit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| any(&pattern)));
            (hit, pattern, batch)
        });
        match matching.await {
            Ok((Ok(hit), pattern, batch)) => {
                *lines = batch;
                if !hit {
                    self.pattern = Some(pattern);
                }
                hit
            }
            Ok((Err(_), _, batch)) => {
                // A matcher that panics (it does not) must not leave the server starting for
                // good: the pattern is given up as if it matched.
                crate::error!("start_pattern matching failed; the server counts as started");
                *lines = batch;
                true
            }
            // The blocking pool is gone: the daemon is ending.
            Err(_) => false,
        }
    }
}

/// The first `max` bytes of `s`, cut on a character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
