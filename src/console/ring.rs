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

/// One line's place in the ring: its sequence number and where its bytes lie in the arena.
struct Slot {
    seq: AtomicU64,
    start: AtomicU64,
    len: AtomicU64,
    /// When the line was pushed (`line::now_nanos`).
    at: AtomicU64,
}

/// What reading line `n` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// The line's bytes, and when it was pushed.
    Line(Vec<u8>, u64),
    /// Overwritten by newer lines (or by a write racing the read).
    Gone,
    /// Not written yet.
    NotYet,
}

/// A server's recent console lines: one writer, many lock-free readers, old lines overwritten
/// (bounded in lines and bytes).
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
        Ring::starting_after(lines, bytes, 0)
    }

    /// A ring whose first line is numbered `last + 1`: numbering goes on from a journal's.
    pub fn starting_after(lines: usize, bytes: usize, last: u64) -> (Arc<Ring>, Writer) {
        let words = bytes.div_ceil(8).max(64);
        let slots = (0..lines.max(1))
            .map(|_| Slot {
                seq: AtomicU64::new(0),
                start: AtomicU64::new(0),
                len: AtomicU64::new(0),
                at: AtomicU64::new(0),
            })
            .collect();
        let arena = (0..words).map(|_| AtomicU64::new(0)).collect();
        let ring = Arc::new(Ring {
            slots,
            arena,
            claimed: AtomicU64::new(0),
            head: AtomicU64::new(last),
            max_line: words * 8 / 4,
        });
        let writer = Writer { ring: Arc::clone(&ring), pos: 0, seq: last };
        (ring, writer)
    }

    /// Number of the newest line (0: none yet).
    pub fn head(&self) -> u64 {
        self.head.load(Acquire)
    }

    /// Longest line the ring keeps whole (a quarter of its bytes).
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// How many lines the ring can hold at most.
    pub fn capacity(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Bytes of the arena written so far (it is reused in place once full).
    pub fn bytes_held(&self) -> u64 {
        self.claimed.load(Relaxed).min(self.arena_bytes())
    }

    /// Bytes the ring may come to hold: its arena (untouched pages cost no memory until used).
    pub fn bytes_reserved(&self) -> u64 {
        self.arena_bytes()
    }

    fn arena_bytes(&self) -> u64 {
        self.arena.len() as u64 * 8
    }

    /// Makes line `n` read as gone, as if a lap had overwritten it (tests of readers).
    #[cfg(test)]
    pub fn lose(&self, n: u64) {
        self.slots[(n % self.capacity()) as usize].seq.store(BUSY, Relaxed);
    }

    /// Copies line `n` out, or says why it cannot.
    pub fn read(&self, n: u64) -> Read {
        let mut bytes = Vec::new();
        match self.read_into(n, &mut bytes) {
            Ok(at) => Read::Line(bytes, at),
            Err(r) => r,
        }
    }

    /// Appends line `n` to `out` and returns when it was pushed; on failure `out` is as it was.
    pub fn read_into(&self, n: u64, out: &mut Vec<u8>) -> Result<u64, Read> {
        if n == 0 || n > self.head() {
            return Err(Read::NotYet);
        }
        let slot = &self.slots[(n % self.capacity()) as usize];
        if slot.seq.load(Acquire) != n {
            return Err(Read::Gone);
        }
        let start = slot.start.load(Relaxed);
        let len = slot.len.load(Relaxed) as usize;
        let at = slot.at.load(Relaxed);
        if len > self.max_line {
            return Err(Read::Gone);
        }
        let from = out.len();
        out.reserve(len.next_multiple_of(8));
        let first = (start / 8) as usize;
        for i in 0..len.div_ceil(8) {
            let word = self.arena[(first + i) % self.arena.len()].load(Relaxed);
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.truncate(from + len);
        fence(Acquire);
        let unchanged = slot.seq.load(Relaxed) == n;
        let not_lapped = self.claimed.load(Relaxed) <= start + self.arena_bytes();
        if !(unchanged && not_lapped) {
            out.truncate(from);
            return Err(Read::Gone);
        }
        Ok(at)
    }
}

impl Writer {
    /// Appends one line (at most a quarter of the byte budget; longer input is cut) pushed at
    /// `at`, and returns its number.
    pub fn push(&mut self, line: &[u8], at: u64) -> u64 {
        let ring = &*self.ring;
        let line = &line[..line.len().min(ring.max_line)];
        let n = self.seq + 1;
        let start = self.pos;
        let end = start + line.len().next_multiple_of(8) as u64;
        let slot = &ring.slots[(n % ring.capacity()) as usize];
        // Announce what is about to change before changing it (the seqlock "odd" step).
        ring.claimed.store(end, Relaxed);
        slot.seq.store(BUSY, Relaxed);
        fence(Release);
        let first = (start / 8) as usize;
        for (i, chunk) in line.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            ring.arena[(first + i) % ring.arena.len()].store(u64::from_le_bytes(word), Relaxed);
        }
        slot.start.store(start, Relaxed);
        slot.len.store(line.len() as u64, Relaxed);
        slot.at.store(at, Relaxed);
        slot.seq.store(n, Release);
        ring.head.store(n, Release);
        self.pos = end;
        self.seq = n;
        n
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[test]
    fn numbered_lines_and_wrap_by_count() {
        let (ring, mut w) = Ring::new(4, 4096);
        assert_eq!(ring.read(1), Read::NotYet);
        for i in 1..=6 {
            assert_eq!(w.push(format!("line {i}").as_bytes(), i * 10), i);
        }
        assert_eq!(ring.head(), 6);
        assert_eq!(ring.read(2), Read::Gone);
        assert_eq!(ring.read(3), Read::Line(b"line 3".to_vec(), 30));
        assert_eq!(ring.read(6), Read::Line(b"line 6".to_vec(), 60));
        assert_eq!(ring.read(7), Read::NotYet);
    }

    #[test]
    fn numbering_can_go_on_from_a_journal() {
        let (ring, mut w) = Ring::starting_after(4, 4096, 5000);
        assert_eq!(ring.head(), 5000);
        assert_eq!(ring.read(5000), Read::Gone, "older lines are not the ring's");
        assert_eq!(ring.read(5001), Read::NotYet);
        assert_eq!(w.push(b"next", 1), 5001);
        assert_eq!(ring.read(5001), Read::Line(b"next".to_vec(), 1));
        for i in 0..5 {
            w.push(format!("l{i}").as_bytes(), 2);
        }
        assert_eq!(ring.read(5002), Read::Gone);
        assert_eq!(ring.read(5006), Read::Line(b"l4".to_vec(), 2));
    }

    #[test]
    fn byte_bound_drops_old_lines_first() {
        // 512 bytes of arena, lines of 100 bytes (104 with padding): about 4 fit.
        let (ring, mut w) = Ring::new(100, 512);
        for i in 0..10u8 {
            w.push(&[b'a' + i; 100], 0);
        }
        assert_eq!(ring.read(10), Read::Line(vec![b'j'; 100], 0));
        assert_eq!(ring.read(7), Read::Line(vec![b'g'; 100], 0));
        assert_eq!(ring.read(5), Read::Gone);
    }

    #[test]
    fn long_lines_are_cut_and_empty_ones_kept() {
        let (ring, mut w) = Ring::new(4, 512);
        w.push(&[7u8; 400], 1);
        let Read::Line(l, _) = ring.read(1) else { panic!() };
        assert_eq!(l, vec![7u8; 128]);
        w.push(b"", 2);
        assert_eq!(ring.read(2), Read::Line(Vec::new(), 2));
        let mut out = b"kept".to_vec();
        assert_eq!(ring.read_into(9, &mut out), Err(Read::NotYet));
        assert_eq!(out, b"kept", "nothing appended on failure");
    }

    #[test]
    fn sizes_and_accounting() {
        // 1000 bytes: 125 words, a quarter of them the longest line.
        let (ring, mut w) = Ring::new(4, 1000);
        assert_eq!((ring.capacity(), ring.max_line(), ring.bytes_reserved()), (4, 250, 1000));
        assert_eq!(ring.bytes_held(), 0);
        w.push(b"0123456789", 0);
        assert_eq!(ring.bytes_held(), 16, "lines start on a word");
        w.push(b"", 0);
        assert_eq!(ring.bytes_held(), 16, "an empty line takes no bytes");
        for _ in 0..10 {
            w.push(&[1; 200], 0);
        }
        assert_eq!(ring.bytes_held(), 1000, "held never counts past the arena");
        // At least 64 words and one slot, whatever is asked.
        let (tiny, _) = Ring::new(0, 0);
        assert_eq!((tiny.capacity(), tiny.max_line(), tiny.bytes_reserved()), (1, 128, 512));
    }

    #[test]
    fn reads_below_one_and_above_the_head_are_not_yet() {
        let (ring, mut w) = Ring::new(4, 4096);
        for i in 1..=5 {
            w.push(b"x", i);
        }
        assert_eq!(ring.read(0), Read::NotYet, "there is no line 0");
        assert_eq!(ring.read(5), Read::Line(b"x".to_vec(), 5), "the head itself is readable");
        assert_eq!(ring.read(6), Read::NotYet);
    }

    /// A line survives until the writer has claimed the arena bytes it starts on: one that
    /// ends exactly an arena after its start leaves it whole; one byte more laps it.
    #[test]
    fn a_line_is_lapped_exactly_when_its_bytes_are_claimed_again() {
        let (ring, mut w) = Ring::new(1000, 512);
        w.push(b"first!!!", 1);
        for i in 0..63 {
            w.push(b"8 bytes.", 2 + i);
        }
        assert_eq!(ring.bytes_held(), 512);
        assert_eq!(ring.read(1), Read::Line(b"first!!!".to_vec(), 1), "the arena is full, not lapped");
        w.push(b"x", 99);
        assert_eq!(ring.read(1), Read::Gone);
        assert_eq!(ring.read(2), Read::Line(b"8 bytes.".to_vec(), 2));
    }

    /// A line that runs past the end of the arena continues at its start, and reads back whole.
    #[test]
    fn a_line_wraps_around_the_arena() {
        let (ring, mut w) = Ring::new(1000, 512);
        for i in 1..=63 {
            w.push(b"padding!", i);
        }
        let long: Vec<u8> = (0..100).collect();
        assert_eq!(w.push(&long, 64), 64);
        assert_eq!(ring.read(64), Read::Line(long.clone(), 64));
        // And the lines it overwrote at the start are gone, the rest are not.
        assert_eq!(ring.read(1), Read::Gone);
        assert_eq!(ring.read(60), Read::Line(b"padding!".to_vec(), 60));
        let mut out = b"ab".to_vec();
        assert_eq!(ring.read_into(64, &mut out), Ok(64));
        assert_eq!((&out[..2], &out[2..]), (&b"ab"[..], &long[..]), "appended after what was there");
    }

    /// One writer, 8 readers, 1M lines: every line a reader gets is whole and in order, and
    /// a line is only ever missed once the writer has really lapped it.
    #[test]
    fn stress_one_writer_eight_readers() {
        const LINES: u64 = 1_000_000;
        const CAP: u64 = 1024;
        // Room for every slot at the longest line, so only the slot count bounds the window.
        let (ring, mut w) = Ring::new(CAP as usize, CAP as usize * 64);
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..8)
            .map(|r| {
                let (ring, done) = (Arc::clone(&ring), Arc::clone(&done));
                std::thread::spawn(move || {
                    let (mut next, mut got, mut missed) = (1u64, 0u64, 0u64);
                    let mut last = 0;
                    while next <= LINES {
                        // Once the writer is done every line is written: not yet is then a
                        // failure, not a reason to wait forever.
                        let finished = done.load(Acquire);
                        match ring.read(next) {
                            Read::NotYet if finished => panic!("reader {r}: line {next} never came"),
                            Read::NotYet => std::hint::spin_loop(),
                            Read::Line(l, at) => {
                                assert_eq!(l, line(next).into_bytes(), "reader {r}: torn line {next}");
                                assert_eq!(at, next, "reader {r}: the time of another line");
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
            w.push(line(i).as_bytes(), i);
        }
        done.store(true, Release);
        for r in readers {
            let (got, missed) = r.join().unwrap();
            assert_eq!(got + missed, LINES);
            assert!(got > 0);
        }
    }

    /// The same with a small arena, so the writer laps lines by bytes long before their slots
    /// are reused: a reader copying a line while it is overwritten must get `Gone`, never the
    /// bytes of a line from an earlier lap.
    #[test]
    fn stress_byte_laps_never_return_stale_bytes() {
        const LINES: u64 = 1_000_000;
        let (ring, mut w) = Ring::new(1024, 2048);
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..8)
            .map(|r| {
                let (ring, done) = (Arc::clone(&ring), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut got = 0u64;
                    // Until the writer is done (not until the head says so: a head that never
                    // gets there would keep the readers forever), then once more.
                    let mut finished = false;
                    while !finished {
                        finished = done.load(Acquire);
                        // The newest line, as a tail of one reads it.
                        let head = ring.head();
                        if let Read::Line(l, at) = ring.read(head) {
                            assert_eq!(l, line(head).into_bytes(), "reader {r}: line {head} has other bytes");
                            assert_eq!(at, head, "reader {r}: the time of another line");
                            got += 1;
                        }
                        // And one a few lines back, which the writer is about to lap.
                        let back = head.saturating_sub(40).max(1);
                        if let Read::Line(l, _) = ring.read(back) {
                            assert_eq!(l, line(back).into_bytes(), "reader {r}: line {back} has other bytes");
                        }
                    }
                    assert_eq!(ring.head(), LINES, "reader {r}: the head once the writer is done");
                    got
                })
            })
            .collect();
        for i in 1..=LINES {
            w.push(line(i).as_bytes(), i);
        }
        done.store(true, Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }

    fn line(i: u64) -> String {
        // Varying lengths so lines straddle words differently; content checks itself.
        format!("{i}:{}", "x".repeat((i % 40) as usize))
    }
}
