//! The one Docker attach stream per running container: output frames are split into lines
//! and pushed into the ring (waking viewers once per chunk), `start_pattern` is matched while
//! the server is `starting`, and the write half is kept as the server's stdin.

use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use regex_lite::Regex;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::ring::Writer;
use super::Hub;
use crate::app::App;
use crate::docker::stream::OutputLines;
use crate::docker::DockerError;
use crate::lifecycle::power;

/// Longest console line kept whole; longer output is cut into pieces of this size.
pub const MAX_LINE: usize = 16 * 1024;

/// Opens the attach stream of `container_id` (before it starts, so no output is missed) and
/// runs the pump; `backfill` lines go into the ring first (a re-attach after a restart).
/// A pump left from the previous run is given a moment to drain first.
pub async fn open(
    app: &Arc<App>,
    hub: &Arc<Hub>,
    container_id: &str,
    pattern: Option<Regex>,
    backfill: Vec<String>,
) -> Result<(), DockerError> {
    if let Some(mut old) = hub.take_pump() {
        if tokio::time::timeout(Duration::from_secs(2), &mut old).await.is_err() {
            old.abort();
            let _ = old.await;
        }
    }
    let upgraded = app.docker.attach(container_id).await?;
    let (rd, wr) = tokio::io::split(TokioIo::new(upgraded));
    let mut writer = hub.take_writer().ok_or_else(|| DockerError::Protocol("console is already attached".into()))?;
    for line in &backfill {
        writer.push(line);
    }
    *hub.stdin.lock().await = Some(wr);
    hub.attach_open.store(true, Release);
    let lease = Lease { hub: Arc::clone(hub), writer: Some(writer) };
    hub.set_pump(tokio::spawn(run(Arc::clone(app), lease, rd, pattern)));
    Ok(())
}

/// Holds the ring's writer for a pump and gives it back however the pump ends (even aborted).
struct Lease {
    hub: Arc<Hub>,
    writer: Option<Writer>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            self.hub.return_writer(w);
        }
        self.hub.attach_open.store(false, Release);
        self.hub.wake.notify_waiters();
    }
}

async fn run(app: Arc<App>, mut lease: Lease, mut rd: impl AsyncRead + Unpin, pattern: Option<Regex>) {
    let hub = Arc::clone(&lease.hub);
    let Some(writer) = lease.writer.as_mut() else { return };
    let mut buf = vec![0u8; 32 * 1024];
    let mut output = OutputLines::new(MAX_LINE);
    let matched = std::sync::atomic::AtomicBool::new(false);
    let mut push = |line: String| {
        if hub.awaiting_pattern.load(Acquire)
            && pattern.as_ref().is_some_and(|p| p.is_match(&line))
            && hub.awaiting_pattern.swap(false, AcqRel)
        {
            matched.store(true, Relaxed);
        }
        writer.push(&line);
    };
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        output.push(&buf[..n], &mut push);
        hub.wake.notify_waiters();
        if matched.swap(false, Relaxed) {
            tokio::spawn(power::pattern_matched(Arc::clone(&app), hub.id.clone()));
        }
    }
    output.finish(&mut push);
    drop(lease);
    *hub.stdin.lock().await = None;
    power::on_exit(&app, &hub.id).await;
}
