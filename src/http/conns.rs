//! Caps on open connections, so nobody who can connect can use up the daemon's file
//! descriptors or memory, and the operator always gets in.
//!
//! Admission is by first request. Every connection starts *anonymous*: it holds one of
//! `server.max_anonymous_connections` slots, at most `server.max_connections_per_ip` of them
//! from one address. When an address has its share, its own oldest anonymous connection is
//! closed to make room for its newest; when the anonymous slots, or all
//! `server.max_connections`, are taken, the oldest anonymous connection of all is. So a flood of
//! idle connections only ever pushes out its own, and a client that just connected (the
//! operator behind the same proxy as the flood included) gets to send its request; a short
//! `503` comes only when every slot is held by an admitted connection. A connection that presents the master token
//! (or opens a console session with a console token) is *admitted*: it leaves the anonymous
//! pool and is never pushed out. A WebSocket upgraded without credentials waits for its `auth`
//! frame in a pool of its own, `server.max_pending_sockets`, also pushed out oldest first.
//! A slot stays taken while its connection, or the console session it became, is open.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The caps, in all and per client address, and who holds what.
pub struct Conns {
    state: Mutex<State>,
    /// Connections open now, shed ones still closing included.
    open: AtomicUsize,
    /// Connections closed so far (the memory trimmer watches it).
    closed: AtomicUsize,
    /// Woken when the last open connection closes (shutdown waits for it).
    emptied: tokio::sync::Notify,
    limits: Limits,
}

/// The configured caps (`server.*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at most (anonymous and admitted).
    pub max: usize,
    /// Anonymous connections held at most.
    pub anonymous: usize,
    /// WebSockets waiting for their `auth` frame at most.
    pub pending: usize,
    /// Anonymous connections from one address at most.
    pub per_ip: usize,
}

/// Who holds the slots, under one lock.
#[derive(Default)]
struct State {
    /// Anonymous connections by address, oldest first.
    per_ip: HashMap<IpAddr, BTreeSet<u64>>,
    /// Anonymous connections (pending sockets included) by admission order, oldest first.
    anonymous: BTreeMap<u64, Arc<Mark>>,
    /// Sockets waiting for their `auth` frame, oldest first (also in `anonymous`).
    pending: BTreeMap<u64, Arc<Mark>>,
    /// Admitted connections (the master token, or a console token's session).
    admitted: usize,
    next: u64,
}

/// Where a slot stands; changed only under the state's lock, read without it.
const ANONYMOUS: u8 = 0;
const PENDING: u8 = 1;
const ADMITTED: u8 = 2;
const SHED: u8 = 3;

/// What the pools know of one slot: its address, where it stands, and who to wake when it
/// is pushed out.
struct Mark {
    ip: IpAddr,
    class: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

/// One connection's slot; dropping it frees the slot.
pub struct Slot {
    conns: Arc<Conns>,
    seq: u64,
    mark: Arc<Mark>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    /// Takes `seq` out of the anonymous pools and gives its address's count back.
    fn leave(&mut self, seq: u64, ip: IpAddr) {
        self.anonymous.remove(&seq);
        self.pending.remove(&seq);
        if let Some(seqs) = self.per_ip.get_mut(&ip) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Pushes out anonymous connection `seq`.
    fn shed(&mut self, seq: u64) {
        let Some(mark) = self.anonymous.get(&seq).map(Arc::clone) else { return };
        self.leave(seq, mark.ip);
        mark.class.store(SHED, Ordering::Release);
        let waker = lock(&mark.waker).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Pushes out the oldest anonymous connection (the oldest pending socket with
    /// `pending_only`); false when there is none.
    fn shed_oldest(&mut self, pending_only: bool) -> bool {
        let oldest = match pending_only {
            true => self.pending.first_key_value(),
            false => self.anonymous.first_key_value(),
        };
        let Some((&seq, _)) = oldest else { return false };
        self.shed(seq);
        true
    }
}

impl Conns {
    pub fn new(limits: Limits) -> Arc<Conns> {
        // The pools fit inside the whole.
        let anonymous = limits.anonymous.clamp(1, limits.max.max(1));
        let limits = Limits { anonymous, pending: limits.pending.clamp(1, anonymous), ..limits };
        Arc::new(Conns {
            state: Mutex::new(State::default()),
            open: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            emptied: tokio::sync::Notify::new(),
            limits,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Resolves once no connection is open (at once if none is).
    pub async fn drained(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            emptied.await;
        }
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

    /// An anonymous slot for a connection from `ip` (pushing out that address's oldest
    /// anonymous one when it has its share, else the oldest of all when the pool or the whole
    /// is full), or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut state = lock(&self.state);
        let own =
            state.per_ip.get(&ip).filter(|seqs| seqs.len() >= self.limits.per_ip).and_then(|s| s.first().copied());
        if let Some(oldest) = own {
            state.shed(oldest);
        }
        let full =
            |s: &State| s.anonymous.len() >= self.limits.anonymous || s.anonymous.len() + s.admitted >= self.limits.max;
        if full(&state) && !state.shed_oldest(false) {
            return Err("too many open connections (server.max_connections)");
        }
        let seq = state.next;
        state.next += 1;
        let mark = Arc::new(Mark { ip, class: AtomicU8::new(ANONYMOUS), waker: Mutex::new(None) });
        state.anonymous.insert(seq, Arc::clone(&mark));
        state.per_ip.entry(ip).or_default().insert(seq);
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { conns: Arc::clone(self), seq, mark })
    }
}

impl Slot {
    /// Connections open now (for `/metrics`).
    pub fn open_connections(&self) -> usize {
        self.conns.open()
    }

    fn class(&self) -> u8 {
        self.mark.class.load(Ordering::Acquire)
    }

    /// The connection presented the master token (or opened a console session with a
    /// console token): it leaves the anonymous pools and is never pushed out. One load once
    /// it is done.
    pub fn promote(&self) {
        if matches!(self.class(), ADMITTED | SHED) {
            return;
        }
        let mut state = lock(&self.conns.state);
        if matches!(self.class(), ANONYMOUS | PENDING) {
            state.leave(self.seq, self.mark.ip);
            state.admitted += 1;
            self.mark.class.store(ADMITTED, Ordering::Release);
        }
    }

    /// The connection became a WebSocket that authenticates with its first frame: it waits in
    /// the pending pool (pushing out the oldest waiting socket when it is full).
    pub fn wait_for_auth(&self) {
        let mut state = lock(&self.conns.state);
        if self.class() != ANONYMOUS {
            return;
        }
        if state.pending.len() >= self.conns.limits.pending {
            state.shed_oldest(true);
        }
        state.pending.insert(self.seq, Arc::clone(&self.mark));
        self.mark.class.store(PENDING, Ordering::Release);
    }

    /// Ready once the connection was pushed out of its pool (never for an admitted one).
    pub fn poll_shed(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.class() {
            SHED => return Poll::Ready(()),
            ADMITTED => return Poll::Pending,
            _ => {}
        }
        {
            let mut waker = lock(&self.mark.waker);
            match &mut *waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                other => *other = Some(cx.waker().clone()),
            }
        }
        // Shed between the first look and the waker being in place: seen now.
        match self.class() {
            SHED => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }

    /// Resolves once the connection was pushed out of its pool.
    pub async fn shed(&self) {
        std::future::poll_fn(|cx| self.poll_shed(cx)).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = lock(&self.conns.state);
        match self.class() {
            ANONYMOUS | PENDING => state.leave(self.seq, self.mark.ip),
            ADMITTED => state.admitted -= 1,
            _ => {}
        }
        drop(state);
        let was = self.conns.open.fetch_sub(1, Ordering::AcqRel);
        self.conns.closed.fetch_add(1, Ordering::Relaxed);
        if was == 1 {
            self.conns.emptied.notify_waiters();
        }
    }
}

/// Tells a refused client why, briefly, and closes.
pub fn refuse(mut stream: TcpStream, why: &'static str) {
    crate::shutdown::detach(async move {
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
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    fn limits(max: usize, anonymous: usize, pending: usize, per_ip: usize) -> Limits {
        Limits { max, anonymous, pending, per_ip }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// Whether `slot` was pushed out (polled once, as its connection would be).
    fn is_shed(slot: &Slot) -> bool {
        /// Counts wake-ups.
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        slot.poll_shed(&mut Context::from_waker(&waker)).is_ready()
    }

    #[test]
    fn an_address_past_its_share_pushes_out_its_own_oldest() {
        let conns = Conns::new(limits(100, 100, 10, 2));
        let s1 = conns.admit(ip(1)).unwrap();
        let s2 = conns.admit(ip(1)).unwrap();
        let other = conns.admit(ip(2)).unwrap();
        let s3 = conns.admit(ip(1)).unwrap();
        assert_eq!([is_shed(&s1), is_shed(&s2), is_shed(&s3), is_shed(&other)], [true, false, false, false]);
        drop(s1);
        let s4 = conns.admit(ip(1)).unwrap();
        assert!(is_shed(&s2) && !is_shed(&s3) && !is_shed(&s4), "a shed one no longer counts");
        // An admitted connection no longer counts for its address, and is never pushed out.
        s3.promote();
        let _a = conns.admit(ip(1)).unwrap();
        assert!(!is_shed(&s3) && !is_shed(&s4));
        let _b = conns.admit(ip(1)).unwrap();
        assert!(!is_shed(&s3) && is_shed(&s4));
        assert!(!is_shed(&other), "another address is never touched");
    }

    #[test]
    fn a_full_pool_pushes_out_its_oldest_and_never_an_admitted_one() {
        let conns = Conns::new(limits(100, 3, 1, 100));
        let operator = conns.admit(ip(1)).unwrap();
        operator.promote();
        let flood: Vec<Slot> = (0..3).map(|_| conns.admit(ip(2)).unwrap()).collect();
        assert!(flood.iter().all(|s| !is_shed(s)));
        let newest = conns.admit(ip(2)).unwrap();
        assert_eq!(flood.iter().map(is_shed).collect::<Vec<_>>(), [true, false, false], "oldest first");
        assert!(!is_shed(&newest) && !is_shed(&operator));
        for _ in 0..10 {
            let _ = conns.admit(ip(2)).unwrap();
        }
        assert!(!is_shed(&operator), "an admitted connection stays");
        assert_eq!(conns.open(), 5, "the operator, the flood's 3 (shed, still closing) and the newest");
        drop((flood, newest));
        assert_eq!(conns.open(), 1);
    }

    #[test]
    fn the_whole_cap_pushes_out_anonymous_ones_for_newcomers() {
        let conns = Conns::new(limits(4, 4, 1, 100));
        let admitted: Vec<Slot> = (0..3).map(|_| conns.admit(ip(1)).unwrap()).collect();
        admitted.iter().for_each(Slot::promote);
        let anonymous = conns.admit(ip(2)).unwrap();
        let operator = conns.admit(ip(1)).unwrap();
        assert!(is_shed(&anonymous), "room made for the newcomer");
        operator.promote();
        assert!(conns.admit(ip(2)).err().unwrap().contains("server.max_connections"), "every slot admitted");
        drop(admitted);
        assert!(conns.admit(ip(2)).is_ok());
    }

    #[test]
    fn pending_sockets_have_a_pool_of_their_own() {
        let conns = Conns::new(limits(100, 100, 2, 100));
        let idle = conns.admit(ip(1)).unwrap();
        let sockets: Vec<Slot> = (0..3).map(|_| conns.admit(ip(1)).unwrap()).collect();
        sockets.iter().for_each(Slot::wait_for_auth);
        assert_eq!(sockets.iter().map(is_shed).collect::<Vec<_>>(), [true, false, false]);
        assert!(!is_shed(&idle), "only waiting sockets make room for waiting sockets");
        sockets[1].promote();
        let more = conns.admit(ip(1)).unwrap();
        more.wait_for_auth();
        assert!(!is_shed(&sockets[1]) && !is_shed(&sockets[2]), "an authenticated socket left the pool");
        // A waiting socket is anonymous too: the main pool pushes it out in its turn.
        let conns = Conns::new(limits(100, 2, 2, 100));
        let waiting = conns.admit(ip(1)).unwrap();
        waiting.wait_for_auth();
        let _a = conns.admit(ip(1)).unwrap();
        let _b = conns.admit(ip(1)).unwrap();
        assert!(is_shed(&waiting));
    }

    #[test]
    fn a_shed_connection_is_woken() {
        /// Counts wake-ups.
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let conns = Conns::new(limits(100, 1, 1, 100));
        let old = conns.admit(ip(1)).unwrap();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(old.poll_shed(&mut Context::from_waker(&waker)).is_pending());
        let _new = conns.admit(ip(1)).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(old.poll_shed(&mut Context::from_waker(&waker)).is_ready());
    }
}
