//! A viewer's position in the ring: the tail on connect, then every newer line once, in
//! order; when the writer laps it, it skips ahead and says how many lines it missed.

use super::ring::{Read, Ring};

/// What one poll found.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    pub lines: Vec<String>,
    /// Lines lost to lapping since the last poll.
    pub skipped: u64,
}

#[derive(Debug)]
pub struct Cursor {
    next: u64,
}

impl Cursor {
    /// The newest `n` lines still held, and a cursor just after them: taking both from one
    /// reading of the head means no line is lost or doubled between tail and live.
    pub fn tail(ring: &Ring, n: usize) -> (Cursor, Vec<String>) {
        let head = ring.head();
        let from = head.saturating_sub(n as u64) + 1;
        let lines = (from..=head)
            .filter_map(|seq| match ring.read(seq) {
                Read::Line(l) => Some(l),
                _ => None,
            })
            .collect();
        (Cursor { next: head + 1 }, lines)
    }

    /// Up to `max` lines newer than the last ones returned.
    pub fn poll(&mut self, ring: &Ring, max: usize) -> Batch {
        let head = ring.head();
        let mut batch = Batch::default();
        let oldest = (head + 1).saturating_sub(ring.capacity()).max(1);
        if self.next < oldest {
            batch.skipped = oldest - self.next;
            self.next = oldest;
        }
        while self.next <= head && batch.lines.len() < max {
            match ring.read(self.next) {
                Read::Line(l) => batch.lines.push(l),
                Read::Gone => batch.skipped += 1,
                Read::NotYet => break,
            }
            self.next += 1;
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_then_live_exactly_once() {
        let (ring, mut w) = Ring::new(100, 64 * 1024);
        for i in 1..=10 {
            w.push(&format!("l{i}"));
        }
        let (mut c, tail) = Cursor::tail(&ring, 3);
        assert_eq!(tail, vec!["l8", "l9", "l10"]);
        assert_eq!(c.poll(&ring, 10), Batch::default());
        w.push("l11");
        w.push("l12");
        assert_eq!(c.poll(&ring, 1).lines, vec!["l11"]);
        assert_eq!(c.poll(&ring, 10).lines, vec!["l12"]);
        let (_, all) = Cursor::tail(&ring, 1000);
        assert_eq!(all.len(), 12);
        let (_, none) = Cursor::tail(&ring, 0);
        assert!(none.is_empty());
    }

    #[test]
    fn lapped_viewer_skips_ahead_and_counts() {
        let (ring, mut w) = Ring::new(10, 64 * 1024);
        let (mut c, _) = Cursor::tail(&ring, 0);
        for i in 1..=25 {
            w.push(&format!("l{i}"));
        }
        let b = c.poll(&ring, 100);
        assert_eq!(b.skipped, 15);
        assert_eq!(b.lines.first().map(String::as_str), Some("l16"));
        assert_eq!(b.lines.len(), 10);
    }
}
