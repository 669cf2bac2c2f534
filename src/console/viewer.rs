//! A viewer's position in the ring: the tail on connect, then every newer line once, in
//! order; when the writer laps it, it skips ahead and says how many lines it missed.

use super::ring::{Read, Ring};

/// What one poll found.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// The lines' encoded frames (see `line.rs`).
    pub lines: Vec<Vec<u8>>,
    /// When each was pushed.
    pub times: Vec<u64>,
    /// Lines lost to lapping since the last poll.
    pub skipped: u64,
}

/// A viewer's place in a ring: the number of the next line it reads.
#[derive(Debug)]
pub struct Cursor {
    next: u64,
}

impl Cursor {
    /// The newest `n` lines still held, and a cursor just after them: taking both from one
    /// reading of the head means no line is lost or doubled between tail and live.
    pub fn tail(ring: &Ring, n: usize) -> (Cursor, Vec<Vec<u8>>) {
        let head = ring.head();
        let from = head.saturating_sub(n as u64) + 1;
        let lines = (from..=head)
            .filter_map(|seq| match ring.read(seq) {
                Read::Line(l, _) => Some(l),
                _ => None,
            })
            .collect();
        (Cursor { next: head + 1 }, lines)
    }

    /// Like [`Cursor::tail`], with each line's number, and only lines numbered below `before`
    /// (the cursor is still just after the newest line).
    pub fn tail_numbered(ring: &Ring, n: usize, before: u64) -> (Cursor, Vec<(u64, Vec<u8>)>) {
        let head = ring.head();
        let top = head.min(before.saturating_sub(1));
        let from = top.saturating_sub(n as u64) + 1;
        let lines = (from..=top)
            .filter_map(|seq| match ring.read(seq) {
                Read::Line(l, _) => Some((seq, l)),
                _ => None,
            })
            .collect();
        (Cursor { next: head + 1 }, lines)
    }

    /// Up to `max` lines newer than the last ones returned.
    pub fn poll(&mut self, ring: &Ring, max: usize) -> Batch {
        let mut batch = Batch::default();
        let mut buf = Vec::new();
        batch.skipped = self.poll_into(ring, max, &mut buf, &mut batch.times, |buf, from| {
            batch.lines.push(buf[from..].to_vec());
        });
        batch
    }

    /// Up to `max` lines newer than the last ones returned, appended to `out` one after the
    /// other (their push times to `times`; `each` hears where each line starts); returns how
    /// many lines were lost to lapping.
    pub fn poll_into(
        &mut self,
        ring: &Ring,
        max: usize,
        out: &mut Vec<u8>,
        times: &mut Vec<u64>,
        mut each: impl FnMut(&Vec<u8>, usize),
    ) -> u64 {
        let head = ring.head();
        let mut skipped = 0;
        let oldest = (head + 1).saturating_sub(ring.capacity()).max(1);
        if self.next < oldest {
            skipped = oldest - self.next;
            self.next = oldest;
        }
        let mut taken = 0;
        while self.next <= head && taken < max {
            let from = out.len();
            match ring.read_into(self.next, out) {
                Ok(at) => {
                    times.push(at);
                    each(out, from);
                    taken += 1;
                }
                // Lapped while reading: lines lost after some were taken are counted by the
                // next poll, so a batch's skip always comes before its lines, where the gap is.
                Err(Read::Gone) if taken > 0 => break,
                Err(Read::Gone) => skipped += 1,
                Err(_) => break,
            }
            self.next += 1;
        }
        skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_then_live_exactly_once() {
        let (ring, mut w) = Ring::new(100, 64 * 1024);
        for i in 1..=10 {
            w.push(format!("l{i}").as_bytes(), i);
        }
        let (mut c, tail) = Cursor::tail(&ring, 3);
        assert_eq!(tail, vec![b"l8".to_vec(), b"l9".to_vec(), b"l10".to_vec()]);
        assert_eq!(c.poll(&ring, 10), Batch::default());
        w.push(b"l11", 11);
        w.push(b"l12", 12);
        let b = c.poll(&ring, 1);
        assert_eq!((b.lines, b.times), (vec![b"l11".to_vec()], vec![11]));
        assert_eq!(c.poll(&ring, 10).lines, vec![b"l12".to_vec()]);
        let (_, all) = Cursor::tail(&ring, 1000);
        assert_eq!(all.len(), 12);
        let (_, none) = Cursor::tail(&ring, 0);
        assert!(none.is_empty());
    }

    /// A writer on another thread lapping the reader while it reads: every batch is a run of
    /// consecutive lines, and the lines it says it skipped are exactly the gap before it.
    #[test]
    fn skips_are_reported_where_the_gap_is() {
        let (ring, mut w) = Ring::new(64, 4096);
        let last = 200_000u64;
        // The cursor is placed before the writer starts: it waits for line 1, as `prev` says.
        let (mut c, _) = Cursor::tail(&ring, 0);
        let writer = std::thread::spawn(move || {
            for i in 1..=last {
                w.push(i.to_string().as_bytes(), i);
            }
        });
        let mut writer = Some(writer);
        let (mut prev, mut skipped_total, mut read) = (0u64, 0u64, 0u64);
        while prev < last {
            // Once the writer is done (joined: every line it wrote is seen), a poll that finds
            // nothing is a failure, not a reason to wait forever; so is a writer that died.
            let finished = match writer.take_if(|w| w.is_finished()) {
                Some(w) => {
                    w.join().expect("the writer died");
                    true
                }
                None => writer.is_none(),
            };
            let b = c.poll(&ring, 16);
            assert!(!(finished && b == Batch::default()), "nothing after line {prev} though all {last} are written");
            skipped_total += b.skipped;
            let mut expect = prev + b.skipped + 1;
            for l in &b.lines {
                let n: u64 = std::str::from_utf8(l).unwrap().parse().unwrap();
                assert_eq!(n, expect, "after line {prev} and {} skipped", b.skipped);
                expect += 1;
                read += 1;
            }
            if !b.lines.is_empty() || b.skipped > 0 {
                prev = expect - 1;
            }
        }
        if let Some(w) = writer {
            w.join().unwrap();
        }
        assert_eq!(read + skipped_total, last);
    }

    /// Lines lapped by bytes (their slots not yet reused) are counted as skipped, once.
    #[test]
    fn lines_lapped_by_bytes_are_skipped_and_counted() {
        // 512 bytes, lines of 100 (104 with padding), slots for 100: after ten lines the
        // writer has claimed 1040 bytes, so only lines starting at 528 or later are whole.
        let (ring, mut w) = Ring::new(100, 512);
        let (mut c, _) = Cursor::tail(&ring, 0);
        for i in 0..10u8 {
            w.push(&[b'a' + i; 100], u64::from(i) + 1);
        }
        let b = c.poll(&ring, 100);
        assert_eq!(b.skipped, 6);
        assert_eq!(b.times, [7, 8, 9, 10]);
        assert_eq!(b.lines[0], [b'g'; 100]);
        assert_eq!(c.poll(&ring, 100), Batch::default(), "nothing twice, no skip twice");
    }

    /// `poll_into` appends the lines back to back and tells where each starts.
    #[test]
    fn poll_into_appends_and_tells_each_start() {
        let (ring, mut w) = Ring::new(8, 4096);
        let (mut c, _) = Cursor::tail(&ring, 0);
        for l in ["one", "three", "fifteen"] {
            w.push(l.as_bytes(), l.len() as u64);
        }
        let (mut out, mut times, mut starts) = (b"head:".to_vec(), Vec::new(), Vec::new());
        let skipped = c.poll_into(&ring, 2, &mut out, &mut times, |buf, from| starts.push((from, buf.len())));
        assert_eq!((skipped, out.as_slice(), times.as_slice()), (0, &b"head:onethree"[..], &[3, 5][..]));
        assert_eq!(starts, [(5, 8), (8, 13)], "each line's start, and the buffer once it is in");
        let skipped = c.poll_into(&ring, 2, &mut out, &mut times, |_, _| {});
        assert_eq!((skipped, out.as_slice()), (0, &b"head:onethreefifteen"[..]));
    }

    /// A cursor exactly at the oldest line held has skipped nothing; one before it, one line.
    #[test]
    fn skips_count_from_the_oldest_line_held() {
        let (ring, mut w) = Ring::new(4, 4096);
        let (mut behind, _) = Cursor::tail(&ring, 0);
        w.push(b"1", 1);
        let (mut at_oldest, _) = Cursor::tail(&ring, 0);
        for i in 2..=5 {
            w.push(i.to_string().as_bytes(), i);
        }
        // Lines 2-5 are held; `at_oldest` waits for line 2, `behind` for line 1.
        let b = at_oldest.poll(&ring, 10);
        assert_eq!((b.skipped, b.times), (0, vec![2, 3, 4, 5]));
        let b = behind.poll(&ring, 10);
        assert_eq!((b.skipped, b.times), (1, vec![2, 3, 4, 5]));
    }

    /// The numbered tail stops below `before`, keeps each line's number, and leaves the
    /// cursor just after the newest line all the same.
    #[test]
    fn numbered_tail_below_a_line_and_live_after_the_newest() {
        let (ring, mut w) = Ring::new(100, 64 * 1024);
        for i in 1..=10 {
            w.push(format!("l{i}").as_bytes(), i);
        }
        let numbered = |n, before| Cursor::tail_numbered(&ring, n, before).1;
        let want = |from: u64, to: u64| (from..=to).map(|i| (i, format!("l{i}").into_bytes())).collect::<Vec<_>>();
        assert_eq!(numbered(3, 8), want(5, 7), "the 3 lines below line 8");
        assert_eq!(numbered(3, 100), want(8, 10), "`before` past the head: the newest");
        assert_eq!(numbered(100, 4), want(1, 3));
        assert_eq!(numbered(0, 100), want(1, 0));
        assert_eq!(numbered(3, 1), want(1, 0), "nothing below line 1");
        let (mut c, _) = Cursor::tail_numbered(&ring, 3, 5);
        assert_eq!(c.poll(&ring, 10), Batch::default(), "the cursor is after the newest line");
        w.push(b"l11", 11);
        assert_eq!(c.poll(&ring, 10).lines, vec![b"l11".to_vec()]);
        // Lines no longer held are left out, not returned empty.
        let (small, mut w) = Ring::new(4, 4096);
        for i in 1..=10 {
            w.push(format!("l{i}").as_bytes(), i);
        }
        assert_eq!(Cursor::tail_numbered(&small, 6, 100).1, want(7, 10));
        assert_eq!(Cursor::tail(&small, 6).1, vec![b"l7".to_vec(), b"l8".to_vec(), b"l9".to_vec(), b"l10".to_vec()]);
    }

    /// A line lost in the middle of a batch (lapped while the batch was read) ends the batch
    /// there; the next poll counts it as skipped before the lines after it, where the gap is.
    #[test]
    fn a_line_lost_mid_batch_is_skipped_by_the_next_poll() {
        let (ring, mut w) = Ring::new(100, 64 * 1024);
        let (mut c, _) = Cursor::tail(&ring, 0);
        for i in 1..=5 {
            w.push(format!("l{i}").as_bytes(), i);
        }
        ring.lose(3);
        let b = c.poll(&ring, 10);
        assert_eq!((b.skipped, b.times), (0, vec![1, 2]));
        let b = c.poll(&ring, 10);
        assert_eq!((b.skipped, b.times), (1, vec![4, 5]));
        assert_eq!(c.poll(&ring, 10), Batch::default());
    }

    /// A cursor far behind (here 2^40 lines) jumps to the oldest line held at once, not one
    /// lost line at a time, and counts them all.
    #[test]
    fn a_cursor_far_behind_catches_up_at_once() {
        let (ring, mut w) = Ring::starting_after(4, 4096, 1 << 40);
        for i in 1..=6 {
            w.push(format!("l{i}").as_bytes(), i);
        }
        let mut c = Cursor { next: 1 };
        let b = c.poll(&ring, 10);
        assert_eq!((b.skipped, b.times), ((1 << 40) + 2, vec![3, 4, 5, 6]));
    }

    /// The lines lost are counted by the poll that finds them, even one with no room for lines.
    #[test]
    fn a_poll_for_no_lines_still_counts_the_lost_ones() {
        let (ring, mut w) = Ring::new(4, 4096);
        let (mut c, _) = Cursor::tail(&ring, 0);
        for i in 1..=10 {
            w.push(format!("l{i}").as_bytes(), i);
        }
        assert_eq!(c.poll(&ring, 0), Batch { skipped: 6, ..Batch::default() });
        let b = c.poll(&ring, 10);
        assert_eq!((b.skipped, b.times), (0, vec![7, 8, 9, 10]));
    }

    #[test]
    fn lapped_viewer_skips_ahead_and_counts() {
        let (ring, mut w) = Ring::new(10, 64 * 1024);
        let (mut c, _) = Cursor::tail(&ring, 0);
        for i in 1..=25 {
            w.push(format!("l{i}").as_bytes(), i);
        }
        let b = c.poll(&ring, 100);
        assert_eq!(b.skipped, 15);
        assert_eq!(b.lines.first().map(Vec::as_slice), Some(&b"l16"[..]));
        assert_eq!(b.lines.len(), 10);
    }
}
