//! Streamed response bodies: a bounded channel that a task (or a blocking writer) fills, so a
//! download of any size holds only a few chunks in memory, and a failure mid-way aborts the
//! response instead of ending it short.

use std::io::{self, Write};

use hyper::body::Bytes;
use tokio::sync::mpsc;

use super::reply::Body;

/// A body and the sender that feeds it, holding at most `chunks` chunks.
pub fn channel_body(chunks: usize) -> (mpsc::Sender<io::Result<Bytes>>, Body) {
    let (tx, rx) = mpsc::channel(chunks);
    (tx, Body::Channel(rx))
}

/// A blocking `Write` into a channel body, in chunks of [`ChannelWriter::CHUNK`]; for code
/// that writes a stream (an archive) on a blocking thread.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    pub const CHUNK: usize = 64 * 1024;

    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter { tx, buf: Vec::with_capacity(Self::CHUNK) }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client left"))
    }

    /// Aborts the response: the client sees a broken transfer, never a short one.
    pub fn fail(mut self, e: io::Error) {
        self.buf.clear();
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
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

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}
