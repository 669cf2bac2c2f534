//! A connection's socket with a kill switch: once thrown, every read and write of it fails at
//! once, wherever russh's session loop is waiting on it. Ends a connection that has not logged
//! in by its deadline, before and during the SSH handshake too, with nothing asked of the
//! session loop.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The switch, shared between the socket and whoever may throw it.
#[derive(Default)]
pub(super) struct Kill {
    thrown: AtomicBool,
    /// The tasks last waiting to read and to write.
    wakers: Mutex<[Option<Waker>; 2]>,
}

impl Kill {
    pub(super) fn throw(&self) {
        self.thrown.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    pub(super) fn thrown(&self) -> bool {
        self.thrown.load(Ordering::Acquire)
    }

    /// The error to answer with once thrown; else remembers `cx`'s task in `slot` to wake.
    fn check(&self, cx: &Context<'_>, slot: usize) -> Option<io::Error> {
        if !self.thrown.load(Ordering::Acquire) {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            match &mut wakers[slot] {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            drop(wakers);
            // Thrown meanwhile: it may have taken the wakers before this one was stored.
            if !self.thrown.load(Ordering::Acquire) {
                return None;
            }
        }
        Some(io::Error::new(io::ErrorKind::ConnectionAborted, "connection ended by lightd"))
    }
}

pub(super) struct Killable {
    inner: TcpStream,
    kill: Arc<Kill>,
}

impl Killable {
    pub(super) fn new(inner: TcpStream, kill: Arc<Kill>) -> Killable {
        Killable { inner, kill }
    }
}

impl AsyncRead for Killable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.kill.check(cx, 0) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(e) = self.kill.check(cx, 1) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.kill.check(cx, 1) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
