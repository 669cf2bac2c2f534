//! A console's last lines wherever they are: the ring first (what the daemon holds in memory),
//! then the journal for what is older. The REST logs, a viewer's tail on connect and
//! `request_logs` all read here, so a stopped server's console is never empty after a restart.

use std::sync::Arc;

use super::{Journals, Stream};
use crate::console::line;
use crate::console::viewer::Cursor;
use crate::console::Hub;

/// Lines one request may ask for at most.
pub const MAX_LINES: usize = 10_000;

/// Up to `n` of the newest console lines of `hub` numbered below `before`, oldest first, as
/// (number, encoded frame), and a cursor just after the ring's newest line for a viewer that
/// goes on live from there (no line lost or doubled between the two).
pub async fn console(journals: &Journals, hub: &Arc<Hub>, n: usize, before: u64) -> (Cursor, Vec<(u64, Vec<u8>)>) {
    let (cursor, mut lines) = Cursor::tail_numbered(hub.tty().ring(), n, before);
    let older_than = lines.first().map_or(before.min(hub.tty().ring().head() + 1), |l| l.0);
    // Line 1 held in the ring: there is nothing older anywhere.
    if lines.len() < n && older_than > 1 && journals.enabled() {
        let more = read(journals, &hub.id, Stream::Console, n - lines.len(), older_than).await;
        lines.splice(0..0, more.into_iter().map(|(num, lit)| (num, line::frame_of_literal(&lit))));
    }
    (cursor, lines)
}

/// Up to `n` of the newest install lines of `id` below `before` (from the journal only), as
/// (number, JSON string literal).
pub async fn install(journals: &Journals, id: &str, n: usize, before: u64) -> Vec<(u64, Vec<u8>)> {
    read(journals, id, Stream::Install, n, before).await
}

async fn read(journals: &Journals, id: &str, stream: Stream, n: usize, before: u64) -> Vec<(u64, Vec<u8>)> {
    let (journals, id) = (journals.clone(), id.to_string());
    let read = tokio::task::spawn_blocking(move || journals.read(&id, stream, before, n)).await;
    match read {
        Ok(Ok(lines)) => lines,
        Ok(Err(e)) => {
            crate::warn!("cannot read a console journal: {e}");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}
