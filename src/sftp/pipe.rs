//! The bytes between an SSH channel and its SFTP request loop, wired so that no wait can close
//! a cycle through russh's session loop.
//!
//! russh's session loop is the only task that reads the socket and the only one that writes
//! it. It hands a channel's incoming data to a bounded queue and *waits* there when the queue
//! is full (russh `server/encrypted.rs`, `chan.send(ChannelMsg::Data).await`), and while it
//! waits it neither reads the socket nor takes the channel's outgoing data from its own bounded
//! queue. russh grants the client more window as soon as data arrives, not as it is consumed,
//! so that wait is the only brake on a client. Given the channel as one stream, russh-sftp's
//! loop reads a request, answers it, and only then reads the next: once the answers filled the
//! outgoing queue (or the client's window) the loop stopped reading, the incoming queue filled,
//! the session loop waited on it, and nothing ever ran again (a paramiko upload's pipelined
//! writes, or its download's prefetch, did it within a few MiB).
//!
//! Here three parts never wait on each other in a ring:
//! - the reader drains the channel into the inbound buffer. It stops (which stops the session
//!   loop: the brake) only while the inbound buffer is over [`IN_SOFT`] *and* the SFTP loop is
//!   working through it, which depends on nothing but the disk. When the SFTP loop is instead
//!   held up by its answers (the client grants no window for them), the reader goes on
//!   draining, so the session loop stays free to take the client's window adjustments and our
//!   answers; a client that sends more than [`IN_HARD`] of requests it does not let us answer
//!   is cut off.
//! - the SFTP loop (russh-sftp, over [`Stream`]) reads the inbound buffer and appends its
//!   answers to the outbound buffer; it waits only while more than [`OUT_SOFT`] of answers
//!   are unsent.
//! - the writer sends the outbound buffer into the channel, waiting on the session loop and the
//!   client's window as it must.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;

/// Inbound bytes past which the reader waits for the SFTP loop (when that loop is working).
pub(super) const IN_SOFT: usize = 4 << 20;
/// Inbound bytes past which a client that lets none of its answers through is cut off.
pub(super) const IN_HARD: usize = 16 << 20;
/// Unsent answers past which the SFTP loop waits for the writer.
pub(super) const OUT_SOFT: usize = 4 << 20;
/// Inbound bytes a channel may send before it is given the SFTP subsystem; past them it is
/// closed (nothing would ever read them, and the session loop would wait on them for good).
pub(super) const BEFORE_SFTP: usize = 64 << 10;
/// Most bytes the writer hands the channel at once (small answers go out together).
const BATCH: usize = 256 << 10;

#[derive(Default)]
struct State {
    /// The SFTP loop runs on it (set by [`Stream::attach`]).
    attached: bool,
    inbound: VecDeque<Vec<u8>>,
    /// Bytes of `inbound[0]` already read.
    front: usize,
    in_len: usize,
    /// The client sent EOF or closed the channel: the SFTP loop ends once it has read it all.
    eof: bool,
    /// The channel is closed (by the client, or the connection ended): nothing more can be sent.
    closed: bool,
    outbound: VecDeque<Vec<u8>>,
    out_len: usize,
    /// The SFTP loop waits for room among the unsent answers.
    blocked_on_out: bool,
    /// The SFTP loop is gone (its stream dropped).
    done: bool,
    /// Cut off (an abusive client, or the channel failed): everything stops.
    broken: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the reader (room inbound, or the SFTP loop blocked on its answers, or done).
    reader: Notify,
    /// Wakes the writer (answers to send, or done).
    writer: Notify,
    /// Wakes the writer out of a send the closed channel will never take (it waits for window).
    closed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_loop(st: &mut State) {
        for w in [st.read_waker.take(), st.write_waker.take()].into_iter().flatten() {
            w.wake();
        }
    }

    fn break_off(&self) {
        let mut st = self.lock();
        st.broken = true;
        Self::wake_loop(&mut st);
        drop(st);
        self.reader.notify_one();
        self.writer.notify_one();
    }
}

/// The SFTP loop's side: reads requests, writes answers, never touching the channel itself.
pub(super) struct Stream {
    shared: Arc<Shared>,
}

impl Stream {
    /// The SFTP loop is about to run on this stream.
    pub(super) fn attach(&self) {
        self.shared.lock().attached = true;
    }
}

/// Splits `channel` into a reader and a writer task as soon as it opens (so its data is drained
/// from the start) and returns the stream an SFTP loop will run on once attached. `who` names
/// the session in the log. Dropping the stream closes the channel.
pub(super) fn start(channel: Channel<Msg>, who: String) -> Stream {
    let shared = Arc::new(Shared {
        state: Mutex::default(),
        reader: Notify::new(),
        writer: Notify::new(),
        closed: Notify::new(),
    });
    let (read_half, write_half) = channel.split();
    crate::shutdown::detach(read(read_half, Arc::clone(&shared), who));
    crate::shutdown::detach(write(write_half, Arc::clone(&shared)));
    Stream { shared }
}

/// What the reader may do with the inbound buffer as it stands.
enum Room {
    Take,
    Wait,
    CutOff,
}

fn room(st: &State) -> Room {
    if !st.attached {
        return if st.in_len <= BEFORE_SFTP { Room::Take } else { Room::CutOff };
    }
    if st.in_len <= IN_SOFT {
        Room::Take
    } else if !st.blocked_on_out {
        Room::Wait
    } else if st.in_len <= IN_HARD {
        Room::Take
    } else {
        Room::CutOff
    }
}

async fn read(mut channel: russh::ChannelReadHalf, shared: Arc<Shared>, who: String) {
    loop {
        // Wait for room (see the module's comment: this wait depends only on the disk). Once
        // the SFTP loop is gone nothing is kept, but the channel is still read to its close.
        loop {
            let woken = shared.reader.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let verdict = {
                let st = shared.lock();
                if st.broken {
                    return;
                }
                if st.done {
                    break;
                }
                room(&st)
            };
            match verdict {
                Room::Take => break,
                Room::Wait => woken.await,
                Room::CutOff => {
                    if shared.lock().attached {
                        crate::warn!(
                            "sftp: {who}: more than {} MiB of requests sent while their answers were not taken; session closed",
                            IN_HARD >> 20
                        );
                    } else {
                        crate::warn!("sftp: {who}: data sent on a channel before its subsystem; channel closed");
                    }
                    shared.break_off();
                    return;
                }
            }
        }
        let msg = tokio::select! {
            msg = channel.wait() => msg,
            // Done or broken meanwhile.
            () = shared.reader.notified() => continue,
        };
        let mut st = shared.lock();
        match msg {
            Some(ChannelMsg::Close) | None => {
                st.eof = true;
                st.closed = true;
                Shared::wake_loop(&mut st);
                drop(st);
                // The writer may wait for window this channel will never grant.
                shared.closed.notify_waiters();
                return;
            }
            _ if st.done => {}
            Some(ChannelMsg::Data { data }) if !data.is_empty() => {
                st.in_len += data.len();
                st.inbound.push_back(data.to_vec());
                if let Some(w) = st.read_waker.take() {
                    w.wake();
                }
            }
            Some(ChannelMsg::Eof) => {
                st.eof = true;
                Shared::wake_loop(&mut st);
            }
            Some(_) => {}
        }
    }
}

async fn write(channel: ChannelWriteHalf<Msg>, shared: Arc<Shared>) {
    let mut tx = channel.make_writer();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let woken = shared.writer.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        {
            let mut st = shared.lock();
            if st.broken {
                break;
            }
            while let Some(front) = st.outbound.front() {
                if !batch.is_empty() && batch.len() + front.len() > BATCH {
                    break;
                }
                let chunk = st.outbound.pop_front().unwrap_or_default();
                batch.extend_from_slice(&chunk);
            }
            if batch.is_empty() && st.done {
                break;
            }
        }
        if batch.is_empty() {
            woken.await;
            continue;
        }
        let closed = shared.closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if shared.lock().closed {
            break;
        }
        tokio::select! {
            sent = tx.write_all(&batch) => if sent.is_err() {
                shared.break_off();
                break;
            },
            // Nothing more can be sent; the SFTP loop finishes what it has read (answers dropped).
            () = closed => break,
        }
        let mut st = shared.lock();
        st.out_len -= batch.len();
        batch.clear();
        if st.out_len < OUT_SOFT {
            st.blocked_on_out = false;
            if let Some(w) = st.write_waker.take() {
                w.wake();
            }
        }
    }
    // The SFTP loop has ended (or the session was cut off): the channel closes.
    if !shared.lock().closed {
        let _ = channel.eof().await;
        let _ = channel.close().await;
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let shared = Arc::clone(&self.shared);
        let mut st = shared.lock();
        if st.broken {
            return Poll::Ready(Ok(()));
        }
        let mut took = 0;
        while buf.remaining() > 0 {
            let front = st.front;
            let Some(chunk) = st.inbound.front() else { break };
            let n = buf.remaining().min(chunk.len() - front);
            buf.put_slice(&chunk[front..front + n]);
            let whole = front + n == chunk.len();
            st.front = if whole { 0 } else { front + n };
            if whole {
                st.inbound.pop_front();
            }
            took += n;
        }
        if took > 0 {
            let was_over = st.in_len > IN_SOFT;
            st.in_len -= took;
            if was_over && st.in_len <= IN_SOFT {
                drop(st);
                shared.reader.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if st.eof {
            return Poll::Ready(Ok(()));
        }
        st.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let shared = Arc::clone(&self.shared);
        let mut st = shared.lock();
        if st.broken {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the SFTP channel was closed")));
        }
        if st.closed {
            // The client closed the channel: what it asked for before is still done, unanswered.
            return Poll::Ready(Ok(buf.len()));
        }
        if st.out_len >= OUT_SOFT {
            st.write_waker = Some(cx.waker().clone());
            if !st.blocked_on_out {
                st.blocked_on_out = true;
                drop(st);
                // The reader may have been waiting for this loop; now it must drain instead.
                shared.reader.notify_one();
            }
            return Poll::Pending;
        }
        st.out_len += buf.len();
        st.outbound.push_back(buf.to_vec());
        drop(st);
        shared.writer.notify_one();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.lock().done = true;
        self.shared.reader.notify_one();
        self.shared.writer.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(attached: bool, in_len: usize, blocked_on_out: bool) -> State {
        State { attached, in_len, blocked_on_out, ..State::default() }
    }

    /// The reader may stop draining the channel (and so stop russh's session loop) only while
    /// the SFTP loop is working through its requests; never while that loop waits for the
    /// session loop to take its answers, and never before any SFTP loop runs.
    #[test]
    fn the_reader_waits_only_on_a_working_sftp_loop() {
        assert!(matches!(room(&state(true, 0, false)), Room::Take));
        assert!(matches!(room(&state(true, IN_SOFT, false)), Room::Take));
        assert!(matches!(room(&state(true, IN_SOFT + 1, false)), Room::Wait));
        assert!(matches!(room(&state(true, IN_SOFT + 1, true)), Room::Take));
        assert!(matches!(room(&state(true, IN_HARD, true)), Room::Take));
        assert!(matches!(room(&state(true, IN_HARD + 1, true)), Room::CutOff));
        assert!(matches!(room(&state(false, BEFORE_SFTP, false)), Room::Take));
        assert!(matches!(room(&state(false, BEFORE_SFTP + 1, false)), Room::CutOff));
    }
}
