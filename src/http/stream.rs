//! Streamed response bodies: a bounded channel that a task (or a blocking writer) fills, so a
//! download of any size holds only a few chunks in memory, and a failure mid-way aborts the
//! response instead of ending it short.

use std::io::{self, Write};
use std::time::Instant;

use hyper::body::Bytes;
use tokio::sync::mpsc::{self, error::SendTimeoutError};

use super::reply::Body;

/// A body and the sender that feeds it, holding at most `chunks` chunks.
pub fn channel_body(chunks: usize) -> (mpsc::Sender<io::Result<Bytes>>, Body) {
    let (tx, rx) = mpsc::channel(chunks);
    (tx, Body::Channel(rx))
}

/// A blocking `Write` into a channel body, in chunks of [`ChannelWriter::CHUNK`], for code
/// that writes a stream (an archive) on a blocking thread. It has a deadline: a write after
/// it, or one that would wait past it for a client that does not read, fails (`TimedOut`);
/// a client gone fails the next send at once (`BrokenPipe`).
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    deadline: Instant,
    /// The error's text once the deadline passed.
    late: String,
    runtime: tokio::runtime::Handle,
}

impl ChannelWriter {
    pub const CHUNK: usize = 64 * 1024;

    /// Call on the runtime (it keeps its handle to wait for room in the channel).
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>, deadline: Instant, late: String) -> ChannelWriter {
        let runtime = tokio::runtime::Handle::current();
        ChannelWriter { tx, buf: Vec::with_capacity(Self::CHUNK), deadline, late, runtime }
    }

    fn late(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, self.late.clone())
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let left = self.deadline.checked_duration_since(Instant::now()).ok_or_else(|| self.late())?;
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK)));
        match self.runtime.block_on(self.tx.send_timeout(Ok(chunk), left)) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => Err(self.late()),
            Err(SendTimeoutError::Closed(_)) => Err(io::Error::new(io::ErrorKind::BrokenPipe, "the client left")),
        }
    }

    /// Sends what is buffered: the stream is complete.
    pub fn finish(mut self) -> io::Result<()> {
        self.send()
    }

    /// Aborts the response: the client sees a broken transfer, never a short one. The error
    /// waits for room in the channel on a task of its own, so this thread never waits for a
    /// client that stopped reading. The task is not the tracker's to count: it is bounded by
    /// its connection, ending when the error is taken or the response dropped (the client
    /// left, or the connection was closed by the drain at shutdown).
    pub fn fail(self, e: io::Error) {
        let tx = self.tx;
        crate::shutdown::detach_on(&self.runtime, async move {
            let _ = tx.send(Err(e)).await;
        });
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(self.late());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
