//! Zip's central directory held to the caps before and while the zip crate reads it.
//!
//! `ZipArchive::new` reads the whole central directory into memory, one record per entry, and
//! reserves room for as many entries as the end-of-central-directory record claims. So before
//! it runs: the record it will use first (the last one in the file) may claim at most
//! [`MAX_ZIP_ENTRIES`] entries and a directory of at most [`MAX_ZIP_DIRECTORY`] bytes, and no
//! ZIP64 record anywhere in the file (the crate falls back to earlier candidates when one does
//! not parse) may claim more. While it runs, it may read at most the directory's cap and a
//! little more ([`Capped`]), whatever the records say.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use super::dial::Dial;
use super::limits::{bytes, MAX_ZIP_DIRECTORY, MAX_ZIP_ENTRIES};
use super::tar_guard::Refused;
use super::FsError;

const EOCD: &[u8; 4] = b"PK\x05\x06";
const EOCD64: &[u8; 4] = b"PK\x06\x06";
const LOCATOR64: &[u8; 4] = b"PK\x06\x07";
/// An end record is 22 bytes and may be followed by a comment of up to 65535.
const TAIL: u64 = 22 + 65_535;
/// What `ZipArchive::new` may read beyond the directory: the end records and its searches.
const SLACK: u64 = 1 << 20;

/// Refuses `file` (a zip) when its end records claim more than the caps. Reads the tail, then
/// the whole file once looking for ZIP64 locators; checks `dial` as it goes.
pub(crate) fn check(file: &File, dial: &Dial) -> Result<(), FsError> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL);
    let mut tail = vec![0u8; usize::try_from(len - start).unwrap_or(0)];
    file.read_exact_at(&mut tail, start)?;
    // The crate tries the last end record first.
    if let Some(i) = tail.windows(4).rposition(|w| w == EOCD).filter(|i| i + 22 <= tail.len()) {
        let eocd = &tail[i..i + 22];
        let at = start + i as u64;
        let (entries, size) = match at.checked_sub(20).map(|l| zip64(file, l)).transpose()?.flatten() {
            Some(counts) => counts,
            None => (u64::from(le16(&eocd[10..])), u64::from(le32(&eocd[12..]))),
        };
        within(entries, size)?;
    }
    // Any ZIP64 record a fallback could reach.
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        dial.check()?;
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        for i in buf[..n].windows(4).enumerate().filter(|(_, w)| w == LOCATOR64).map(|(i, _)| i) {
            if let Some((entries, size)) = zip64(file, pos + i as u64)? {
                within(entries, size)?;
            }
        }
        // Three bytes again, so a signature across two reads is seen.
        pos += n.saturating_sub(3).max(1) as u64;
    }
    Ok(())
}

/// The entry count and directory size of the ZIP64 end record the locator at `at` points to,
/// if there is a locator there and a record where it points.
fn zip64(file: &File, at: u64) -> io::Result<Option<(u64, u64)>> {
    let mut locator = [0u8; 20];
    if !read_at(file, &mut locator, at)? || &locator[..4] != LOCATOR64 {
        return Ok(None);
    }
    let mut record = [0u8; 56];
    if !read_at(file, &mut record, le64(&locator[8..]))? || &record[..4] != EOCD64 {
        return Ok(None);
    }
    let entries = le64(&record[24..]).max(le64(&record[32..]));
    Ok(Some((entries, le64(&record[40..]))))
}

fn within(entries: u64, size: u64) -> Result<(), FsError> {
    if entries > MAX_ZIP_ENTRIES {
        return Err(FsError::BadEntry(format!(
            "Zip archive lists more than {MAX_ZIP_ENTRIES} entries (its directory claims {entries})"
        )));
    }
    if size > MAX_ZIP_DIRECTORY {
        return Err(FsError::BadEntry(format!(
            "Zip central directory larger than {} (it claims {size} bytes)",
            bytes(MAX_ZIP_DIRECTORY)
        )));
    }
    Ok(())
}

/// Fills `buf` from `at`; false when the file ends first.
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, at) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The reader handed to the zip crate: while armed, it reads at most the directory cap and
/// [`SLACK`] in all, then fails with a refusal naming the cap. Disarmed once the archive is open.
pub(crate) struct Capped<R> {
    inner: R,
    budget: Rc<Cell<Option<u64>>>,
}

impl<R> Capped<R> {
    /// The reader and the switch that disarms it (`set(None)`).
    pub(crate) fn new(inner: R) -> (Capped<R>, Rc<Cell<Option<u64>>>) {
        let budget = Rc::new(Cell::new(Some(MAX_ZIP_DIRECTORY + SLACK)));
        (Capped { inner, budget: Rc::clone(&budget) }, budget)
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(left) = self.budget.get() {
            match left.checked_sub(n as u64) {
                Some(left) => self.budget.set(Some(left)),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        Refused(format!("Zip central directory larger than {}", bytes(MAX_ZIP_DIRECTORY))),
                    ))
                }
            }
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for Capped<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn file_of(bytes: &[u8]) -> File {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lightd-zipguard-{}-{n}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(path).unwrap();
        f
    }

    /// An end record claiming `entries` entries and a `size`-byte directory at `offset`.
    fn eocd(entries: u16, size: u32, offset: u32) -> Vec<u8> {
        let mut e = EOCD.to_vec();
        e.extend_from_slice(&[0, 0, 0, 0]);
        e.extend_from_slice(&entries.to_le_bytes());
        e.extend_from_slice(&entries.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&offset.to_le_bytes());
        e.extend_from_slice(&[0, 0]);
        e
    }

    /// A ZIP64 end record claiming `entries`, its locator, and a ZIP32 end record deferring to it.
    fn zip64_tail(at: u64, entries: u64) -> Vec<u8> {
        let mut r = EOCD64.to_vec();
        r.extend_from_slice(&44u64.to_le_bytes());
        r.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        r.extend_from_slice(&entries.to_le_bytes());
        r.extend_from_slice(&entries.to_le_bytes());
        r.extend_from_slice(&46u64.to_le_bytes());
        r.extend_from_slice(&0u64.to_le_bytes());
        r.extend_from_slice(LOCATOR64);
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&at.to_le_bytes());
        r.extend_from_slice(&1u32.to_le_bytes());
        r.extend_from_slice(&eocd(0xffff, 0xffff_ffff, 0xffff_ffff));
        r
    }

    #[test]
    fn end_records_past_the_caps_are_refused() {
        let dial = Dial::new(None);
        let ok = check(&file_of(&eocd(3, 200, 0)), &dial);
        assert!(ok.is_ok(), "{ok:?}");
        let big_dir = check(&file_of(&eocd(3, 17 << 20, 0)), &dial);
        assert!(matches!(big_dir, Err(FsError::BadEntry(m)) if m.contains("larger than 16 MiB")));
        let claims = check(&file_of(&zip64_tail(0, 10_000_000)), &dial);
        assert!(matches!(claims, Err(FsError::BadEntry(m)) if m.contains("more than 100000 entries")));
        // A ZIP64 record in the middle (a fallback the crate could reach), behind a valid end.
        let mut hidden = vec![7u8; 3 << 20];
        let at = hidden.len() as u64 - 1000;
        let tail = zip64_tail(at, 10_000_000);
        hidden.splice(at as usize..at as usize + tail.len(), tail);
        hidden.extend_from_slice(&eocd(0, 0, 0));
        assert!(matches!(check(&file_of(&hidden), &dial), Err(FsError::BadEntry(_))));
    }

    #[test]
    fn the_crate_may_not_read_more_than_the_cap() {
        let (mut capped, switch) = Capped::new(io::repeat(0));
        let mut sink = Vec::new();
        let e = io::copy(&mut (&mut capped).take(MAX_ZIP_DIRECTORY + SLACK + 1), &mut sink).unwrap_err();
        assert!(super::super::tar_guard::refusal(&e).is_some_and(|m| m.contains("16 MiB")), "{e}");
        switch.set(None);
        let mut buf = [0u8; 10];
        assert_eq!(capped.read(&mut buf).unwrap(), 10);
    }
}
