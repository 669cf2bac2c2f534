//! A request body read as a byte stream (`AsyncRead`), so rooms below `http/` take a reader
//! and never hyper's `Incoming`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper::body::{Body, Bytes, Incoming};
use tokio::io::{AsyncRead, ReadBuf};

/// Reads an `Incoming` body frame by frame: memory holds one frame at a time.
pub struct BodyReader {
    body: Incoming,
    /// What is left of the last data frame.
    left: Bytes,
}

impl BodyReader {
    pub fn new(body: Incoming) -> BodyReader {
        BodyReader { body, left: Bytes::new() }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.left.is_empty() {
                let n = self.left.len().min(out.remaining());
                let chunk = self.left.split_to(n);
                out.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.left = data;
                    }
                }
            }
        }
    }
}
