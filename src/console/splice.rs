//! Joining a console tail read from Docker's log with a live attach stream opened just before
//! it, so that no line is lost or doubled at the seam. Lines printed between the attach and
//! the log read arrive twice: at the end of the tail and at the start of the stream. The
//! splice holds the stream's first lines until they either turn out to be the tail's last
//! lines (dropped) or cannot be (passed on).

/// How many of the tail's last lines the stream's first lines are compared with.
pub const WINDOW: usize = 64;

/// The seam between a backfilled log tail and the live stream (see the module doc).
#[derive(Debug, Default)]
pub struct Splice {
    /// The tail's last lines; empty once decided.
    recent: Vec<String>,
    /// Stream lines held back while they may still repeat the tail.
    held: Vec<String>,
}

impl Splice {
    /// A splice against the end of `tail`.
    pub fn new(tail: &[String]) -> Splice {
        let from = tail.len().saturating_sub(WINDOW);
        Splice { recent: tail[from..].to_vec(), held: Vec::new() }
    }

    /// Whether lines are still held back (the caller flushes after a quiet moment).
    pub fn undecided(&self) -> bool {
        !self.recent.is_empty()
    }

    /// Feeds a line of the stream; returns the lines to pass on now, in order.
    pub fn feed(&mut self, line: String) -> Vec<String> {
        if self.recent.is_empty() {
            return vec![line];
        }
        self.held.push(line);
        let n = self.held.len();
        let starts: Vec<usize> =
            (0..=self.recent.len().saturating_sub(n)).filter(|&j| self.recent[j..j + n] == self.held[..]).collect();
        if starts.is_empty() {
            // Not a repeat of the tail: everything held is new.
            return self.decide(false);
        }
        if starts.contains(&(self.recent.len() - n)) {
            // The held lines are exactly the tail's end: they were read twice.
            return self.decide(true);
        }
        Vec::new()
    }

    /// Nothing more came for a while: what is held was not a repeat after all.
    pub fn flush(&mut self) -> Vec<String> {
        self.decide(false)
    }

    fn decide(&mut self, repeated: bool) -> Vec<String> {
        self.recent.clear();
        let held = std::mem::take(&mut self.held);
        if repeated {
            Vec::new()
        } else {
            held
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(r: std::ops::RangeInclusive<u32>) -> Vec<String> {
        r.map(|i| format!("line {i}")).collect()
    }

    /// Tail 1..=t, stream from s (s <= t + 1): the joined console is 1..=end, exactly once.
    fn join(t: u32, s: u32, end: u32, quiet_after: Option<usize>) -> Vec<String> {
        let tail = lines(1..=t);
        let mut splice = Splice::new(&tail);
        let mut out = tail.clone();
        for (i, l) in lines(s..=end).into_iter().enumerate() {
            if quiet_after == Some(i) {
                out.extend(splice.flush());
            }
            out.extend(splice.feed(l));
        }
        out.extend(splice.flush());
        out
    }

    #[test]
    fn overlaps_of_every_size_are_joined_exactly_once() {
        for t in [0, 1, 5, 64, 200] {
            for overlap in 0..=t.min(64) {
                let s = t + 1 - overlap;
                assert_eq!(join(t, s, t + 10, None), lines(1..=t + 10), "tail {t}, overlap {overlap}");
            }
        }
    }

    #[test]
    fn a_quiet_stream_is_not_held_forever() {
        // The stream starts after the tail and its first line pauses: flushed, not lost.
        assert_eq!(join(10, 11, 11, Some(1)), lines(1..=11));
        let tail = lines(1..=3);
        let mut s = Splice::new(&tail);
        assert_eq!(s.feed("line 4".into()), vec!["line 4"]);
        assert!(!s.undecided());
    }

    #[test]
    fn a_partial_match_that_breaks_off_passes_everything_on() {
        let tail = vec!["a".to_string(), "b".into(), "c".into()];
        let mut s = Splice::new(&tail);
        assert!(s.feed("b".into()).is_empty(), "may be the repeat of b, c");
        assert_eq!(s.feed("x".into()), vec!["b", "x"]);
        assert_eq!(s.feed("y".into()), vec!["y"]);
    }
}
