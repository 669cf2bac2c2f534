//! A reader beneath the tar crate that looks at every tar header as it streams past and
//! refuses one whose declared size passes a cap, before the crate reads (and allocates) it.
//!
//! The tar crate reads a GNU long name (`L`), long link (`K`) or PAX header (`x`) whole into a
//! `Vec`, as large as the header declares: a 2 MB gzip of one `L` header declaring 2 GiB, then
//! zeros, would cost 2 GiB. The guard follows the stream's framing exactly as the crate does
//! (a PAX `size` overrides the next entry's, GNU sparse extension headers follow their entry)
//! and fails the read that completes an oversized header; the crate hands that error on.

use std::io::{self, Read};

use tar::{EntryType, Header, PaxExtensions};

use super::limits::{bytes, MAX_NAME, MAX_PAX, MAX_SPARSE_EXTENSIONS};

const BLOCK: usize = 512;

/// A header past a cap, carried inside the `io::Error` that fails the read.
#[derive(Debug)]
pub(crate) struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The refusal `e` carries, if it is one.
pub(crate) fn refusal(e: &io::Error) -> Option<&str> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Refused>()).map(|r| r.0.as_str())
}

/// What the guard gathers next, at offset `TarGuard::at` of the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// A header block.
    Header,
    /// The data of a PAX header (this many bytes), then the next header at this offset.
    Pax(usize, u64),
    /// A GNU sparse extension block, then (when it is the last) this many bytes of data.
    Extension(u64),
    /// The end of the archive (or a header the crate will refuse itself): nothing more to see.
    Done,
}

/// Wraps the uncompressed tar stream handed to `tar::Archive::new`; every header the crate
/// reads has passed through [`TarGuard::see`] first.
pub struct TarGuard<R> {
    inner: R,
    /// Stream offset of the next byte returned.
    pos: u64,
    /// Offset where what is wanted next begins; the bytes before it pass unseen.
    at: u64,
    want: Want,
    /// What is wanted, gathered across reads.
    buf: Vec<u8>,
    /// The `size` of a PAX header still to apply to the next entry (the crate's override).
    pax_size: Option<u64>,
    /// Sparse extension blocks seen after the current entry.
    extensions: u64,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> TarGuard<R> {
        TarGuard { inner, pos: 0, at: 0, want: Want::Header, buf: Vec::new(), pax_size: None, extensions: 0 }
    }

    /// Looks at `data`, the next bytes of the stream.
    fn see(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() && self.want != Want::Done {
            if self.pos < self.at {
                let skip = usize::try_from(self.at - self.pos).unwrap_or(usize::MAX).min(data.len());
                self.pos += skip as u64;
                data = &data[skip..];
                continue;
            }
            let need = match self.want {
                Want::Pax(n, _) => n,
                _ => BLOCK,
            };
            let take = (need - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.pos += take as u64;
            self.at = self.pos;
            data = &data[take..];
            if self.buf.len() == need {
                let got = std::mem::take(&mut self.buf);
                self.step(&got)?;
            }
        }
        Ok(())
    }

    /// Acts on a complete header, PAX data or extension block.
    fn step(&mut self, got: &[u8]) -> io::Result<()> {
        match self.want {
            Want::Header => self.header(got),
            Want::Pax(_, next) => {
                self.pax_size = pax_size(got);
                self.skip_to(Some(next));
                Ok(())
            }
            Want::Extension(data) => {
                self.extensions += 1;
                if self.extensions > MAX_SPARSE_EXTENSIONS {
                    return refuse(format!(
                        "Archive entry has more than {MAX_SPARSE_EXTENSIONS} GNU sparse extension headers"
                    ));
                }
                // The crate's `GnuExtSparseHeader::is_extended`: byte 504 is exactly 1.
                if got[504] != 1 {
                    self.skip_to(self.pos.checked_add(data));
                }
                Ok(())
            }
            Want::Done => Ok(()),
        }
    }

    fn header(&mut self, block: &[u8]) -> io::Result<()> {
        if block.iter().all(|&b| b == 0) {
            // The crate ends the archive at the first zero block.
            self.want = Want::Done;
            return Ok(());
        }
        let mut header = Header::new_old();
        header.as_mut_bytes().copy_from_slice(block);
        let kind = header.entry_type();
        let Ok(declared) = header.entry_size() else {
            self.want = Want::Done;
            return Ok(());
        };
        let extension = is_extension(kind);
        let size = match (extension, self.pax_size) {
            (false, Some(size)) => size,
            _ => declared,
        };
        match kind {
            EntryType::GNULongName if size > MAX_NAME + 1 => {
                return refuse(format!(
                    "Archive entry name longer than {} (a GNU long name header declares {size} bytes)",
                    bytes(MAX_NAME)
                ));
            }
            EntryType::GNULongLink if size > MAX_NAME + 1 => {
                return refuse(format!(
                    "Archive link target longer than {} (a GNU long link header declares {size} bytes)",
                    bytes(MAX_NAME)
                ));
            }
            EntryType::XHeader | EntryType::XGlobalHeader if size > MAX_PAX => {
                return refuse(format!(
                    "Archive PAX header larger than {} (one declares {size} bytes)",
                    bytes(MAX_PAX)
                ));
            }
            _ => {}
        }
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let captured =
            recognized && matches!(kind, EntryType::GNULongName | EntryType::GNULongLink | EntryType::XHeader);
        if !captured {
            // The crate hands this one out as an entry: a pending PAX header was its own.
            self.pax_size = None;
        }
        let padded = size.checked_add(BLOCK as u64 - 1).map(|s| s & !(BLOCK as u64 - 1));
        if recognized && kind == EntryType::XHeader {
            match (usize::try_from(size), padded.and_then(|p| self.pos.checked_add(p))) {
                (Ok(n), Some(next)) if n > 0 => self.want = Want::Pax(n, next),
                (Ok(0), Some(next)) => self.skip_to(Some(next)),
                _ => self.want = Want::Done,
            }
        } else if kind == EntryType::GNUSparse && header.as_gnu().is_some_and(|g| g.is_extended()) {
            self.extensions = 0;
            self.want = padded.map_or(Want::Done, Want::Extension);
        } else {
            self.skip_to(padded.and_then(|p| self.pos.checked_add(p)));
        }
        Ok(())
    }

    /// The next header is at `next` (`None`: an overflow the crate refuses itself).
    fn skip_to(&mut self, next: Option<u64>) {
        match next {
            Some(next) => {
                self.at = next;
                self.want = Want::Header;
            }
            None => self.want = Want::Done,
        }
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.see(&buf[..n])?;
        Ok(n)
    }
}

fn is_extension(kind: EntryType) -> bool {
    matches!(kind, EntryType::GNULongName | EntryType::GNULongLink | EntryType::XHeader | EntryType::XGlobalHeader)
}

fn refuse(message: String) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::InvalidData, Refused(message)))
}

/// The `size` record of PAX data, as the tar crate reads it (the first `size` key; nothing
/// when a record before it is malformed or its value is not a number).
fn pax_size(data: &[u8]) -> Option<u64> {
    for record in PaxExtensions::new(data) {
        let record = record.ok()?;
        if record.key() == Ok("size") {
            return record.value().ok()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use tar::Builder;

    use super::*;

    /// A header of `kind` declaring `size` bytes (a GNU one unless `ustar`).
    fn header(kind: EntryType, size: u64, name: &str) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        h
    }

    /// Reads `tar` through the guard with the tar crate, reading every entry's data.
    fn read_all(tar: &[u8], chunk: usize) -> Result<Vec<(String, Vec<u8>)>, io::Error> {
        let mut archive = tar::Archive::new(TarGuard::new(Chunked(Cursor::new(tar), chunk)));
        let mut out = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            out.push((String::from_utf8_lossy(&entry.path_bytes()).into_owned(), data));
        }
        Ok(out)
    }

    /// A reader handing out at most `n` bytes per read, so headers straddle reads.
    struct Chunked<R>(R, usize);

    impl<R: Read> Read for Chunked<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn oversized_extension_headers_are_refused_before_their_data() {
        for (kind, size, says) in [
            (EntryType::GNULongName, 2 << 30, "Archive entry name longer than 4096 bytes"),
            (EntryType::GNULongLink, 4098, "Archive link target longer than 4096 bytes"),
            (EntryType::XHeader, 64 * 1024 + 1, "Archive PAX header larger than 64 KiB"),
            (EntryType::XGlobalHeader, 1 << 40, "Archive PAX header larger than 64 KiB"),
        ] {
            // Only the header: had the crate been let through, it would wait for its data.
            let mut tar = header(kind, size, "././@LongLink").as_bytes().to_vec();
            tar.extend_from_slice(&[0u8; 4096]);
            for chunk in [1, 100, 512, 8192] {
                let e = read_all(&tar, chunk).unwrap_err();
                let said = refusal(&e).unwrap_or_else(|| panic!("{kind:?}: not a refusal: {e}"));
                assert!(said.starts_with(says), "{said}");
            }
        }
    }

    #[test]
    fn archives_within_the_caps_read_as_without_the_guard() {
        let mut b = Builder::new(Vec::new());
        let long = format!("{}/{}", "d".repeat(200), "f".repeat(300));
        let mut h = Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let mut link = Header::new_gnu();
        link.set_entry_type(EntryType::Symlink);
        link.set_size(0);
        b.append_link(&mut link, "l", "t".repeat(1000)).unwrap();
        // A PAX header whose `size` overrides the next header's (declared 0 there, 5 here).
        let records = b"10 size=5\n21 path=pax-name.txt\n";
        b.append(&header(EntryType::XHeader, records.len() as u64, "pax"), &records[..]).unwrap();
        let mut lying = header(EntryType::Regular, 0, "ignored");
        lying.set_cksum();
        let mut pax_entry = lying.as_bytes().to_vec();
        pax_entry.extend_from_slice(b"hello");
        pax_entry.resize(1024, 0);
        let mut tar = b.into_inner().unwrap();
        tar.truncate(tar.len() - 1024);
        tar.extend_from_slice(&pax_entry);
        let mut tail = Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(2);
        tail.append_data(&mut h, "last", &b"ok"[..]).unwrap();
        tar.extend_from_slice(&tail.into_inner().unwrap());
        for chunk in [1, 7, 512, 1 << 20] {
            let got = read_all(&tar, chunk).unwrap();
            let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, [long.as_str(), "l", "pax-name.txt", "last"], "chunk {chunk}");
            assert_eq!(got[2].1, b"hello");
            assert_eq!(got[3].1, b"ok");
        }
        // The guard followed the PAX size: a long name right after the PAX entry is still seen.
        let mut tar2 = tar[..tar.len() - 1024 - 1024].to_vec();
        tar2.extend_from_slice(header(EntryType::GNULongName, 1 << 30, "././@LongLink").as_bytes());
        tar2.extend_from_slice(&[0u8; 1024]);
        assert!(refusal(&read_all(&tar2, 4096).unwrap_err()).is_some());
    }

    #[test]
    fn sparse_extension_headers_are_counted() {
        let mut tar = header(EntryType::GNUSparse, 0, "sparse").as_bytes().to_vec();
        tar[482] = 1;
        let sum: u32 = tar[..148].iter().chain(&tar[156..]).map(|&b| u32::from(b)).sum::<u32>() + 8 * 32;
        tar[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut ext = [0u8; 512];
        ext[504] = 1;
        for _ in 0..=MAX_SPARSE_EXTENSIONS {
            tar.extend_from_slice(&ext);
        }
        let e = read_all(&tar, 512).unwrap_err();
        assert!(refusal(&e).is_some_and(|m| m.contains("sparse extension headers")), "{e}");
    }
}
