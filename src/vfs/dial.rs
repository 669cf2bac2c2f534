//! The dial of a long archive operation: progress counters its watcher reads without a lock,
//! and a cancel switch and deadline it obeys between reads, so a job can be watched, cancelled
//! and cut off while a blocking thread does the work.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Progress and stop switch shared by the thread doing the work and whoever watches it.
#[derive(Debug, Default)]
pub struct Dial {
    bytes: AtomicU64,
    entries: AtomicU64,
    extracted: AtomicU64,
    cancelled: AtomicBool,
    deadline: Option<Instant>,
}

/// A dial's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Bytes of file content written so far.
    pub bytes: u64,
    /// Entries of the archive read and checked so far.
    pub entries: u64,
    /// Entries written so far.
    pub extracted: u64,
}

/// Why the work stopped, carried inside the `io::Error` that unwinds it.
#[derive(Debug)]
pub(crate) struct Stopped(&'static str);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Stopped {}

impl Dial {
    /// A dial whose work stops at `deadline` (never when `None`).
    pub fn new(deadline: Option<Instant>) -> Dial {
        Dial { deadline, ..Dial::default() }
    }

    /// Asks the work to stop at its next read or entry.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    pub fn tally(&self) -> Tally {
        Tally {
            bytes: self.bytes.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            extracted: self.extracted.load(Ordering::Relaxed),
        }
    }

    /// An error to stop with when cancelled or past the deadline.
    pub(crate) fn check(&self) -> io::Result<()> {
        if self.cancelled() {
            // Not `Interrupted`: `io::copy` and `read_to_end` retry that one forever.
            return Err(io::Error::other(Stopped("cancelled")));
        }
        if self.expired() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, Stopped("past its deadline")));
        }
        Ok(())
    }

    pub(crate) fn add_entry(&self) {
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_extracted(&self) {
        self.extracted.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether `e` is a dial's stop (not a fault of the archive or the disk).
pub(crate) fn is_stop(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stopped>())
}

/// A reader that checks the dial before every read, and counts what it reads as content
/// bytes when `counting`.
pub(crate) struct Watched<'d, R> {
    inner: R,
    dial: &'d Dial,
    counting: bool,
}

impl<'d, R> Watched<'d, R> {
    pub(crate) fn new(inner: R, dial: &'d Dial) -> Self {
        Watched { inner, dial, counting: false }
    }

    pub(crate) fn counting(inner: R, dial: &'d Dial) -> Self {
        Watched { inner, dial, counting: true }
    }
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.dial.check()?;
        let n = self.inner.read(buf)?;
        if self.counting {
            self.dial.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for Watched<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.dial.check()?;
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_cancelled_or_expired_dial_stops_reads() {
        let dial = Dial::new(None);
        let mut r = Watched::counting(&b"hello"[..], &dial);
        let mut buf = [0u8; 3];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(dial.tally().bytes, 3);
        dial.cancel();
        let e = r.read(&mut buf).unwrap_err();
        assert!(is_stop(&e) && e.to_string() == "cancelled", "{e}");
        let late = Dial::new(Some(Instant::now() - Duration::from_millis(1)));
        let e = Watched::new(&b"x"[..], &late).read(&mut buf).unwrap_err();
        assert!(is_stop(&e) && late.expired() && !late.cancelled());
        assert!(!is_stop(&io::Error::other("disk")));
    }
}
