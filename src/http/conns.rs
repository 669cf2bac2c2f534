//! Caps on open connections, in all and per client address, so nobody who can connect can
//! use up the daemon's file descriptors. A connection past a cap gets a short `503` and is
//! closed; the accept loop never stops. A slot stays taken while its connection, or the
//! console session it was upgraded to, is open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The counts behind the caps.
pub struct Conns {
    open: AtomicUsize,
    /// Connections closed so far (the memory trimmer watches it).
    closed: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
    max_per_ip: usize,
}

/// One admitted connection; dropping it frees the slot.
pub struct Slot {
    conns: Arc<Conns>,
    ip: IpAddr,
}

impl Conns {
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Conns> {
        Arc::new(Conns {
            open: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            max,
            max_per_ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Gives memory back to the system after connections went away: the allocator keeps freed
    /// pages otherwise, and a burst of connections would leave the daemon's RSS high for good.
    pub async fn trim_after_bursts(self: Arc<Self>) {
        let mut seen = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let closed = self.closed.load(Ordering::Relaxed);
            if closed != seen {
                seen = closed;
                crate::memory::trim();
            }
        }
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.open.load(Ordering::Relaxed) >= self.max {
            return Err("too many open connections (server.max_connections)");
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err("too many open connections from this address (server.max_connections_per_ip)");
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { conns: Arc::clone(self), ip })
    }
}

impl Slot {
    /// Connections open now (for `/metrics`).
    pub fn open_connections(&self) -> usize {
        self.conns.open()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self.conns.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.conns.open.fetch_sub(1, Ordering::Relaxed);
        self.conns.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Tells a refused client why, briefly, and closes.
pub fn refuse(mut stream: TcpStream, why: &'static str) {
    tokio::spawn(async move {
        let body = format!("{{\"error\":\"{why}\"}}");
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\nretry-after: 1\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(reply.as_bytes()).await?;
            stream.shutdown().await?;
            // Take what the client sent before closing, or the close would reset the
            // connection and lose the answer; briefly, and a bounded amount.
            let mut sink = [0u8; 4096];
            let mut left: usize = 64 * 1024;
            while left > 0 {
                match stream.read(&mut sink).await? {
                    0 => break,
                    n => left = left.saturating_sub(n),
                }
            }
            Ok::<_, io::Error>(())
        })
        .await;
    });
}

/// A connection's socket with a write deadline: a client that takes no bytes for
/// [`WRITE_STALL`] gets its connection (or console session) closed, whatever writes to it.
pub struct Timed<T> {
    inner: T,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a write may wait for the client to take bytes.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

impl<T> Timed<T> {
    pub fn new(inner: T) -> Timed<T> {
        Timed { inner, stalled: None }
    }

    /// Turns a pending write into a timeout once the client stalled too long.
    fn deadline<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Timed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Timed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.deadline(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.deadline(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.deadline(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address() {
        let conns = Conns::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = conns.admit(a).unwrap();
        let _s2 = conns.admit(a).unwrap();
        assert!(conns.admit(a).err().unwrap().contains("per_ip"));
        let _s3 = conns.admit(b).unwrap();
        assert!(conns.admit(b).err().unwrap().contains("max_connections"));
        drop(s1);
        assert_eq!(conns.open(), 2);
        assert!(conns.admit(a).is_ok());
    }
}
