//! Directory listings a page at a time, in bounded memory whatever the directory holds: one
//! pass over its names keeps only the `limit` smallest after the cursor (a heap), and only
//! those are described. SFTP, which promises no order, reads a [`DirStream`] instead: each
//! name once in the kernel's order, however many batches the listing takes.

use std::collections::BinaryHeap;
use std::ffi::CString;

use rustix::fs::Dir;

use super::entry::Entry;
use super::ops::describe;
use super::path::RelPath;
use super::{FsError, Root};

/// Most entries one page may hold.
pub const MAX_PAGE: usize = 10_000;

/// One page of a directory: its entries sorted by name, and the name to ask `after` for the
/// next page (`None` when this page ends the directory).
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub next: Option<String>,
}

/// An open directory read a batch at a time in the kernel's order (SFTP's READDIR): the whole
/// listing reads each name once, where pages by name rescan the directory for every page.
pub struct DirStream {
    names: Dir,
    /// Names read from the kernel so far (`.` and `..` included).
    read: u64,
}

impl DirStream {
    /// Up to `limit` more entries (as [`Root::list_page`] describes them); none once the
    /// directory is exhausted. A name removed meanwhile is skipped.
    pub fn next_batch(&mut self, limit: usize) -> Result<Vec<Entry>, FsError> {
        let mut entries = Vec::new();
        while entries.len() < limit {
            let Some(entry) = self.names.read() else { break };
            let entry = entry?;
            self.read += 1;
            let raw = entry.file_name();
            if raw == c"." || raw == c".." {
                continue;
            }
            match describe(self.names.fd()?, raw, &raw.to_string_lossy()) {
                Err(FsError::NotFound) => {}
                found => entries.push(found?),
            }
        }
        Ok(entries)
    }

    /// Names read from the kernel so far.
    pub fn names_read(&self) -> u64 {
        self.read
    }
}

impl Root {
    /// Opens directory `rel` to be read as a [`DirStream`].
    pub fn dir_stream(&self, rel: &str) -> Result<DirStream, FsError> {
        Ok(DirStream { names: Dir::new(self.dir(&RelPath::parse(rel)?)?)?, read: 0 })
    }

    /// The first `limit` entries of directory `rel` (sorted by name) whose names sort after
    /// `after`. A symlink is listed as one, with its target text, and never followed. Names
    /// compare as shown (a name that is not UTF-8 is shown with replacement characters).
    pub fn list_page(&self, rel: &str, after: Option<&str>, limit: usize) -> Result<Page, FsError> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(FsError::Invalid(format!("limit must be between 1 and {MAX_PAGE}")));
        }
        let mut names = Dir::new(self.dir(&RelPath::parse(rel)?)?)?;
        // The `limit + 1` smallest names after the cursor; the greatest on top, to be pushed out.
        let mut smallest: BinaryHeap<(String, CString)> = BinaryHeap::with_capacity(limit + 1);
        while let Some(entry) = names.read() {
            let entry = entry?;
            let raw = entry.file_name();
            if raw == c"." || raw == c".." {
                continue;
            }
            let shown = raw.to_string_lossy();
            if after.is_some_and(|after| *shown <= *after) {
                continue;
            }
            if smallest.len() > limit {
                match smallest.peek() {
                    Some((top, _)) if *shown < **top => {
                        smallest.pop();
                    }
                    _ => continue,
                }
            }
            smallest.push((shown.into_owned(), raw.to_owned()));
        }
        let mut sorted = smallest.into_sorted_vec();
        let more = sorted.len() > limit;
        sorted.truncate(limit);
        let next = if more { sorted.last().map(|(shown, _)| shown.clone()) } else { None };
        let dir = names.fd()?;
        let mut entries = Vec::with_capacity(sorted.len());
        for (shown, raw) in &sorted {
            match describe(dir, raw.as_c_str(), shown) {
                Err(FsError::NotFound) => {}
                found => entries.push(found?),
            }
        }
        Ok(Page { entries, next })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::vfs::testbed::Bed;

    #[test]
    fn a_stream_lists_every_name_once_reading_each_once() {
        let bed = Bed::new("stream");
        fs::create_dir(bed.path("many")).unwrap();
        let mut want: Vec<String> = (0..1000).map(|i| format!("f{i:04}")).collect();
        for name in &want {
            fs::write(bed.path(&format!("many/{name}")), b"").unwrap();
        }
        let mut stream = bed.root.dir_stream("many").unwrap();
        let mut seen = Vec::new();
        loop {
            let batch = stream.next_batch(64).unwrap();
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= 64);
            seen.extend(batch.into_iter().map(|e| e.name));
        }
        seen.sort();
        want.sort();
        assert_eq!(seen, want);
        // 16 batches, and the kernel's names (with `.` and `..`) read once in all.
        assert_eq!(stream.names_read(), 1002);
    }

    #[test]
    fn pages_walk_a_directory_without_gaps_or_repeats() {
        let bed = Bed::new("pages");
        fs::create_dir(bed.path("many")).unwrap();
        let mut want: Vec<String> = (0..257).map(|i| format!("f{:03}-{}", (i * 37) % 257, i % 3)).collect();
        for name in &want {
            fs::write(bed.path(&format!("many/{name}")), b"").unwrap();
        }
        want.sort();
        for limit in [1, 10, 256, 257, 258, 10_000] {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = bed.root.list_page("many", after.as_deref(), limit).unwrap();
                assert!(page.entries.len() <= limit);
                seen.extend(page.entries.iter().map(|e| e.name.clone()));
                match page.next {
                    Some(next) => {
                        assert_eq!(Some(&next), seen.last());
                        after = Some(next);
                    }
                    None => break,
                }
            }
            assert_eq!(seen, want, "limit {limit}");
        }
        let all = bed.root.list("/").unwrap();
        let page = bed.root.list_page("/", None, 10_000).unwrap();
        assert_eq!(
            page.entries.iter().map(|e| &e.name).collect::<Vec<_>>(),
            all.iter().map(|e| &e.name).collect::<Vec<_>>()
        );
        assert!(page.next.is_none());
        for bad in [0, 10_001] {
            assert!(bed.root.list_page("/", None, bad).is_err());
        }
        bed.assert_outside_untouched();
    }
}
