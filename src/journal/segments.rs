//! One server's console journal on disk: numbered lines in a few segment files, the oldest
//! dropped whole when the journal passes its size.
//!
//! A segment is `<number of its first line, 20 digits>.seg`; each line in it is
//! `<number> <JSON string literal>\n` (the literal is the one the ring's frame holds, so a
//! line is never escaped twice and never holds a newline). Numbers rise, with gaps where
//! lines were lost before they reached the disk. An append is one `write`, so a kill -9 can
//! tear at most the last line of the newest segment; opening the journal cuts such a torn
//! line off, so no reader ever sees one.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Segments a journal is cut into: dropping the oldest frees a quarter of it.
const SEGMENTS: u64 = 4;
/// The smallest segment, whatever the journal's size.
const MIN_SEGMENT: u64 = 16 * 1024;

/// The journal of one server (one stream of lines: its console, or its installs).
pub struct Segments {
    dir: PathBuf,
    /// Bytes the journal may hold at most (its newest segment may pass it by one batch).
    limit: u64,
    /// Segments on disk, oldest first: (first line number, bytes).
    files: VecDeque<(u64, u64)>,
    /// The newest segment, open for appending.
    current: Option<File>,
    /// The number of the newest line on disk (0: none).
    last: u64,
}

impl Segments {
    /// Opens (making it when missing) the journal in `dir`, of at most `limit` bytes.
    pub fn open(dir: &Path, limit: u64) -> io::Result<Segments> {
        fs::create_dir_all(dir)?;
        let mut files: Vec<(u64, u64)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(first) = name.to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| n.parse().ok()) else {
                continue;
            };
            files.push((first, entry.metadata()?.len()));
        }
        files.sort_unstable();
        let mut s = Segments { dir: dir.to_path_buf(), limit, files: files.into(), current: None, last: 0 };
        s.repair_tail()?;
        Ok(s)
    }

    fn path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.seg"))
    }

    /// Cuts a torn last line off the newest segment (a write cut short by a crash), drops
    /// empty segments, and finds the newest line's number.
    fn repair_tail(&mut self) -> io::Result<()> {
        while let Some(&(first, _)) = self.files.back() {
            let path = self.path(first);
            let bytes = fs::read(&path)?;
            let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if whole < bytes.len() {
                OpenOptions::new().write(true).open(&path)?.set_len(whole as u64)?;
            }
            match parse(&bytes[..whole]).last() {
                Some((n, _)) => {
                    self.last = n;
                    if let Some(back) = self.files.back_mut() {
                        back.1 = whole as u64;
                    }
                    return Ok(());
                }
                None => {
                    fs::remove_file(&path)?;
                    self.files.pop_back();
                }
            }
        }
        Ok(())
    }

    /// The number of the newest line on disk (0 when there is none).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.1).sum()
    }

    fn segment_limit(&self) -> u64 {
        (self.limit / SEGMENTS).max(MIN_SEGMENT)
    }

    /// Appends `lines` (number, JSON string literal), numbers rising past [`Self::last`];
    /// lines at or below it are skipped (already on disk). One write per segment touched.
    pub fn append<'a>(&mut self, lines: impl IntoIterator<Item = (u64, &'a [u8])>) -> io::Result<()> {
        let mut buf = Vec::new();
        for (n, literal) in lines {
            if n <= self.last {
                continue;
            }
            let full = self.files.back().is_none_or(|f| f.1 + buf.len() as u64 >= self.segment_limit());
            if full {
                self.write_out(&mut buf)?;
                self.start_segment(n)?;
            }
            buf.extend_from_slice(n.to_string().as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(literal);
            buf.push(b'\n');
            self.last = n;
        }
        self.write_out(&mut buf)?;
        self.trim()
    }

    fn write_out(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some(back) = self.files.back_mut() else { return Ok(()) };
        let first = back.0;
        if self.current.is_none() {
            let path = self.dir.join(format!("{first:020}.seg"));
            self.current = Some(OpenOptions::new().append(true).create(true).mode(0o600).open(path)?);
        }
        if let Some(f) = self.current.as_mut() {
            f.write_all(buf)?;
        }
        back.1 += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    fn start_segment(&mut self, first: u64) -> io::Result<()> {
        if let Some(f) = self.current.take() {
            f.sync_data()?;
        }
        self.files.push_back((first, 0));
        Ok(())
    }

    /// Drops the oldest segments while the journal is over its size (never the newest).
    fn trim(&mut self) -> io::Result<()> {
        while self.files.len() > 1 && self.bytes() > self.limit {
            if let Some((first, _)) = self.files.pop_front() {
                match fs::remove_file(self.path(first)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Makes what was appended durable (a power cut loses nothing before this).
    pub fn sync(&mut self) -> io::Result<()> {
        match &self.current {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    /// Up to `n` of the newest lines numbered below `before`, oldest first.
    pub fn read(&self, before: u64, n: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut out: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        for &(first, _) in self.files.iter().rev() {
            if out.len() >= n {
                break;
            }
            if first >= before {
                continue;
            }
            let bytes = match fs::read(self.path(first)) {
                Ok(b) => b,
                // Dropped by a trim since the list was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let lines: Vec<_> = parse(&bytes).filter(|(num, _)| *num < before).collect();
            for (num, lit) in lines.into_iter().rev() {
                if out.len() >= n {
                    break;
                }
                out.push_front((num, lit.to_vec()));
            }
        }
        Ok(out.into())
    }
}

/// The whole lines of a segment's bytes: (number, JSON string literal). A line that does not
/// parse (it cannot be written so) is skipped.
fn parse(bytes: &[u8]) -> impl DoubleEndedIterator<Item = (u64, &[u8])> {
    bytes.split(|&b| b == b'\n').filter_map(|line| {
        let sp = line.iter().position(|&b| b == b' ')?;
        let n = std::str::from_utf8(&line[..sp]).ok()?.parse().ok()?;
        let lit = &line[sp + 1..];
        (lit.len() >= 2 && lit[0] == b'"' && lit[lit.len() - 1] == b'"').then_some((n, lit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn lit(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).unwrap()
    }

    fn texts(v: &[(u64, Vec<u8>)]) -> Vec<(u64, String)> {
        v.iter().map(|(n, l)| (*n, serde_json::from_slice(l).unwrap())).collect()
    }

    #[test]
    fn lines_come_back_numbered_and_in_order_across_reopen() {
        let dir = TempDir::new("journal");
        let mut j = Segments::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(j.last(), 0);
        let lines: Vec<(u64, Vec<u8>)> = (1..=10).map(|i| (i, lit(&format!("line {i}\n\"x\"")))).collect();
        j.append(lines.iter().map(|(n, l)| (*n, l.as_slice()))).unwrap();
        // Lines already on disk are not written twice.
        j.append(lines.iter().map(|(n, l)| (*n, l.as_slice()))).unwrap();
        let j = Segments::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(j.last(), 10);
        let got = j.read(u64::MAX, 3).unwrap();
        assert_eq!(
            texts(&got),
            vec![(8, "line 8\n\"x\"".into()), (9, "line 9\n\"x\"".into()), (10, "line 10\n\"x\"".into())]
        );
        assert_eq!(texts(&j.read(3, 100).unwrap()), vec![(1, "line 1\n\"x\"".into()), (2, "line 2\n\"x\"".into())]);
        assert!(j.read(1, 5).unwrap().is_empty());
    }

    #[test]
    fn gaps_are_kept_and_paging_back_has_no_holes_or_repeats() {
        let dir = TempDir::new("journal");
        let mut j = Segments::open(dir.path(), 1 << 20).unwrap();
        let nums: Vec<u64> = (1..=50).chain(80..=100).collect();
        let lines: Vec<(u64, Vec<u8>)> = nums.iter().map(|&i| (i, lit(&i.to_string()))).collect();
        j.append(lines.iter().map(|(n, l)| (*n, l.as_slice()))).unwrap();
        let mut seen = Vec::new();
        let mut before = u64::MAX;
        loop {
            let page = j.read(before, 7).unwrap();
            let Some(first) = page.first() else { break };
            before = first.0;
            seen.splice(0..0, page.iter().map(|p| p.0));
        }
        assert_eq!(seen, nums);
    }

    #[test]
    fn past_its_size_whole_old_segments_go() {
        let dir = TempDir::new("journal");
        let limit = 64 * 1024;
        let mut j = Segments::open(dir.path(), limit).unwrap();
        let line = "y".repeat(100);
        for batch in 0..100u64 {
            let lines: Vec<(u64, Vec<u8>)> = (1..=20).map(|i| (batch * 20 + i, lit(&line))).collect();
            j.append(lines.iter().map(|(n, l)| (*n, l.as_slice()))).unwrap();
            assert!(j.bytes() <= limit + segment_bytes(&lines), "{} bytes", j.bytes());
        }
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert!((2..=5).contains(&files), "{files} segments");
        // What is left is whole: the oldest kept line starts a segment, and the rest follow.
        let all = Segments::open(dir.path(), limit).unwrap().read(u64::MAX, usize::MAX).unwrap();
        assert_eq!(all.last().unwrap().0, 2000);
        assert!(all.windows(2).all(|w| w[1].0 == w[0].0 + 1));
        assert!(all.iter().all(|(_, l)| l == &lit(&line)));
        assert!(all.len() < 2000);
    }

    fn segment_bytes(lines: &[(u64, Vec<u8>)]) -> u64 {
        lines.iter().map(|(n, l)| n.to_string().len() as u64 + l.len() as u64 + 2).sum::<u64>() + MIN_SEGMENT
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_its_number_reused() {
        let dir = TempDir::new("journal");
        let mut j = Segments::open(dir.path(), 1 << 20).unwrap();
        let lines: Vec<(u64, Vec<u8>)> = (1..=3).map(|i| (i, lit(&format!("l{i}")))).collect();
        j.append(lines.iter().map(|(n, l)| (*n, l.as_slice()))).unwrap();
        drop(j);
        let seg = fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"4 \"half a li").unwrap();
        let mut j = Segments::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(j.last(), 3);
        assert!(fs::read(&seg).unwrap().ends_with(b"3 \"l3\"\n"));
        j.append([(4, lit("l4").as_slice())]).unwrap();
        assert_eq!(texts(&j.read(u64::MAX, 2).unwrap()), vec![(3, "l3".into()), (4, "l4".into())]);
        // A segment holding only a torn line goes entirely.
        drop(j);
        fs::write(dir.path().join(format!("{:020}.seg", 5)), b"5 \"tor").unwrap();
        let j = Segments::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(j.last(), 4);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
