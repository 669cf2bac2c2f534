//! A lock-free ring of numbered console lines: one writer, any number of readers.
//!
//! Line `n` (numbered from 1) has slot `n % slots`; its bytes live in a circular byte arena,
//! each line starting on an 8-byte word. Every shared word is an atomic, and two seqlocks
//! guard them: a slot holds `BUSY` while it is rewritten, and `claimed` announces how far the
//! writer is about to overwrite the arena. A reader copies a line out, then checks that
//! neither moved under it; if one did, the line is gone (lapped) and never returned torn.
//! The writer never waits for readers; readers never block the writer or each other.

use std::sync::atomic::{fence, AtomicU64, Ordering::*};
use std::sync::Arc;

const BUSY: u64 = u64::MAX;

struct Slot {
    seq: AtomicU64,
    start: AtomicU64,
    len: AtomicU64,
}

/// What reading line `n` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Line(String),
    /// Overwritten by newer lines (or by a write racing the read).
    Gone,
    /// Not written yet.
    NotYet,
}

pub struct Ring {
    slots: Box<[Slot]>,
    arena: Box<[AtomicU64]>,
    /// Absolute arena position (bytes) up to which the writer may be writing.
    claimed: AtomicU64,
    /// Number of the newest complete line; 0 before the first.
    head: AtomicU64,
    max_line: usize,
}

/// The single writer of a ring; not `Clone`, so one writer is a type-level fact.
pub struct Writer {
    ring: Arc<Ring>,
    pos: u64,
    seq: u64,
}

impl Ring {
    /// A ring of `lines` lines holding at most about `bytes` bytes of text. A longer line is
    /// cut to a quarter of the byte budget.
    pub fn new(lines: usize, bytes: usize) -> (Arc<Ring>, Writer) {
        let words = bytes.div_ceil(8).max(64);
        let slots = (0..lines.max(1))
            .map(|_| Slot { seq: AtomicU64::new(0), start: AtomicU64::new(0), len: AtomicU64::new(0) })
            .collect();
        let arena = (0..words).map(|_| AtomicU64::new(0)).collect();
        let ring = Arc::new(Ring {
            slots,
            arena,
            claimed: AtomicU64::new(0),
            head: AtomicU64::new(0),
            max_line: words * 8 / 4,
        });
        let writer = Writer { ring: Arc::clone(&ring), pos: 0, seq: 0 };
        (ring, writer)
    }

    /// Number of the newest line (0: none yet).
    pub fn head(&self) -> u64 {
        self.head.load(Acquire)
    }

    /// How many lines the ring can hold at most.
    pub fn capacity(&self) -> u64 {
        self.slots.len() as u64
    }

    fn arena_bytes(&self) -> u64 {
        self.arena.len() as u64 * 8
    }

    /// Copies line `n` out, or says why it cannot.
    pub fn read(&self, n: u64) -> Read {
        if n == 0 || n > self.head() {
            return Read::NotYet;
        }
        let slot = &self.slots[(n % self.capacity()) as usize];
        if slot.seq.load(Acquire) != n {
            return Read::Gone;
        }
        let start = slot.start.load(Relaxed);
        let len = slot.len.load(Relaxed) as usize;
        if len > self.max_line {
            return Read::Gone;
        }
        let mut bytes = Vec::with_capacity(len.next_multiple_of(8));
        let first = (start / 8) as usize;
        for i in 0..len.div_ceil(8) {
            let word = self.arena[(first + i) % self.arena.len()].load(Relaxed);
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.truncate(len);
        fence(Acquire);
        let unchanged = slot.seq.load(Relaxed) == n;
        let not_lapped = self.claimed.load(Relaxed) <= start + self.arena_bytes();
        if !(unchanged && not_lapped) {
            return Read::Gone;
        }
        // Only whole `&str`s are written, so a consistent copy is valid UTF-8.
        Read::Line(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
}

impl Writer {
    /// Appends one line and returns its number.
    pub fn push(&mut self, line: &str) -> u64 {
        let ring = &*self.ring;
        let line = truncate(line, ring.max_line);
        let n = self.seq + 1;
        let start = self.pos;
        let end = start + line.len().next_multiple_of(8) as u64;
        let slot = &ring.slots[(n % ring.capacity()) as usize];
        // Announce what is about to change before changing it (the seqlock "odd" step).
        ring.claimed.store(end, Relaxed);
        slot.seq.store(BUSY, Relaxed);
        fence(Release);
        let first = (start / 8) as usize;
        for (i, chunk) in line.as_bytes().chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            ring.arena[(first + i) % ring.arena.len()].store(u64::from_le_bytes(word), Relaxed);
        }
        slot.start.store(start, Relaxed);
        slot.len.store(line.len() as u64, Relaxed);
        slot.seq.store(n, Release);
        ring.head.store(n, Release);
        self.pos = end;
        self.seq = n;
        n
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_lines_and_wrap_by_count() {
        let (ring, mut w) = Ring::new(4, 4096);
        assert_eq!(ring.read(1), Read::NotYet);
        for i in 1..=6 {
            assert_eq!(w.push(&format!("line {i}")), i);
        }
        assert_eq!(ring.head(), 6);
        assert_eq!(ring.read(2), Read::Gone);
        assert_eq!(ring.read(3), Read::Line("line 3".into()));
        assert_eq!(ring.read(6), Read::Line("line 6".into()));
        assert_eq!(ring.read(7), Read::NotYet);
    }

    #[test]
    fn byte_bound_drops_old_lines_first() {
        // 512 bytes of arena, lines of 100 bytes (104 with padding): about 4 fit.
        let (ring, mut w) = Ring::new(100, 512);
        for i in 0..10u8 {
            w.push(&String::from_utf8(vec![b'a' + i; 100]).unwrap());
        }
        assert_eq!(ring.read(10), Read::Line("j".repeat(100)));
        assert_eq!(ring.read(7), Read::Line("g".repeat(100)));
        assert_eq!(ring.read(5), Read::Gone);
    }

    #[test]
    fn long_and_multibyte_lines_are_cut_cleanly() {
        let (ring, mut w) = Ring::new(4, 512);
        w.push(&"é".repeat(200));
        let Read::Line(l) = ring.read(1) else { panic!() };
        assert!(l.len() <= 128 && l.chars().all(|c| c == 'é'), "{l}");
        w.push("");
        assert_eq!(ring.read(2), Read::Line(String::new()));
    }

    /// One writer, 8 readers, 1M lines: every line a reader gets is whole and in order, and
    /// a line is only ever missed once the writer has really lapped it.
    #[test]
    fn stress_one_writer_eight_readers() {
        const LINES: u64 = 1_000_000;
        const CAP: u64 = 1024;
        // Room for every slot at the longest line, so only the slot count bounds the window.
        let (ring, mut w) = Ring::new(CAP as usize, CAP as usize * 64);
        let readers: Vec<_> = (0..8)
            .map(|r| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    let (mut next, mut got, mut missed) = (1u64, 0u64, 0u64);
                    let mut last = 0;
                    while next <= LINES {
                        match ring.read(next) {
                            Read::NotYet => std::hint::spin_loop(),
                            Read::Line(l) => {
                                assert_eq!(l, line(next), "reader {r}: torn line {next}");
                                assert!(next > last, "reader {r}: order");
                                last = next;
                                got += 1;
                                next += 1;
                            }
                            Read::Gone => {
                                // Gone only once the writer has at least begun line next + CAP,
                                // the one that reuses its slot.
                                let head = ring.head();
                                assert!(
                                    head + 1 >= next + CAP,
                                    "reader {r}: line {next} lost inside the window (head {head})"
                                );
                                missed += 1;
                                next += 1;
                            }
                        }
                    }
                    (got, missed)
                })
            })
            .collect();
        for i in 1..=LINES {
            w.push(&line(i));
        }
        for r in readers {
            let (got, missed) = r.join().unwrap();
            assert_eq!(got + missed, LINES);
            assert!(got > 0);
        }
    }

    fn line(i: u64) -> String {
        // Varying lengths so lines straddle words differently; content checks itself.
        format!("{i}:{}", "x".repeat((i % 40) as usize))
    }
}
