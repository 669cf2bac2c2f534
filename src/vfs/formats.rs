//! Reading tar, tar.gz, tar.zst and zip archives entry by entry, all alike, in bounded memory:
//! every header passes the caps of [`super::limits`] before the format's crate allocates for
//! it (tar through [`TarGuard`], zip through `zip_guard`), and every read checks the [`Dial`].

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read, Seek};

use flate2::read::GzDecoder;
use rustix::fs::FileType;
use tar::EntryType;
use zip::result::ZipError;

use super::dial::{is_stop, Dial, Watched};
use super::limits::{MAX_NAME, MAX_ZSTD_WINDOW_LOG};
use super::tar_guard::{refusal, TarGuard};
use super::{zip_guard, FsError};

/// One archive entry, whatever the format, so that checking and writing are written once.
pub(crate) struct Item<'a> {
    pub name: String,
    pub kind: ItemKind,
    pub mode: u32,
    /// Seconds since the epoch, when the archive says (restores set it back).
    pub mtime: Option<u64>,
    pub data: &'a mut dyn Read,
}

/// What an entry would make; anything the volume must never get is `Refused` here, by type.
pub(crate) enum ItemKind {
    Dir,
    File,
    Symlink(Vec<u8>),
    /// Never extracted; the reason completes "Archive entry "x" ...".
    Refused(&'static str),
    /// Metadata without a name of its own (a pax global header).
    Skip,
}

/// The archive formats we take, told apart by their first bytes (a name or type says nothing).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Format {
    Tar,
    TarGz,
    TarZst,
    Zip,
}

/// The first bytes of a zstd frame.
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Format {
    pub(crate) fn sniff(file: &mut File) -> Result<Format, FsError> {
        let mut head = Vec::with_capacity(512);
        (&mut *file).take(512).read_to_end(&mut head)?;
        file.rewind()?;
        let tar_block =
            head.len() == 512 && (head.get(257..262) == Some(&b"ustar"[..]) || head.iter().all(|&b| b == 0));
        if head.starts_with(&[0x1f, 0x8b]) {
            Ok(Format::TarGz)
        } else if head.starts_with(&ZSTD_MAGIC) {
            Ok(Format::TarZst)
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Ok(Format::Zip)
        } else if tar_block {
            Ok(Format::Tar)
        } else {
            Err(FsError::Invalid("Not a tar, tar.gz, tar.zst or zip archive".into()))
        }
    }

    /// Calls `f` with each entry in archive order; stops with the dial.
    pub(crate) fn each(
        self,
        file: &mut File,
        dial: &Dial,
        f: &mut dyn FnMut(Item<'_>) -> Result<(), FsError>,
    ) -> Result<(), FsError> {
        match self {
            Format::Tar => each_tar(TarGuard::new(Watched::new(&mut *file, dial)), f),
            Format::TarGz => each_tar(TarGuard::new(Watched::new(GzDecoder::new(&mut *file), dial)), f),
            Format::TarZst => each_tar(TarGuard::new(Watched::new(zstd_reader(file)?, dial)), f),
            Format::Zip => each_zip(file, dial, f),
        }
    }
}

/// A zstd decoder of `file` that refuses a frame asking for a window past
/// [`MAX_ZSTD_WINDOW_LOG`] (the decoder allocates the window the frame declares).
fn zstd_reader(file: &mut File) -> Result<impl Read + '_, FsError> {
    let mut decoder = zstd::stream::read::Decoder::new(&mut *file)?;
    decoder.window_log_max(MAX_ZSTD_WINDOW_LOG)?;
    Ok(decoder)
}

/// What [`scan`] found in an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every entry (directories, links and metadata-only entries too).
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// Reads a whole tar, tar.gz, tar.zst or zip (told apart by its first bytes) from its start, through the
/// caps of [`super::limits`], every entry's content read through, nothing written: a check of
/// an upload before it is kept (a truncated or corrupt archive fails here). Names are not
/// judged (extraction does that); `dial` is checked between reads, so a deadline bounds it.
pub fn scan(file: &mut File, dial: &Dial) -> Result<Scan, FsError> {
    file.rewind()?;
    let format = Format::sniff(file)?;
    let mut found = Scan::default();
    format.each(file, dial, &mut |item| {
        found.entries += 1;
        if matches!(item.kind, ItemKind::File) {
            found.files += 1;
            found.bytes += io::copy(item.data, &mut io::sink()).map_err(unreadable)?;
        }
        Ok(())
    })?;
    Ok(found)
}

fn each_tar<R: Read>(reader: R, f: &mut dyn FnMut(Item<'_>) -> Result<(), FsError>) -> Result<(), FsError> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let mode = entry.header().mode().map_err(unreadable)?;
        let kind = match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => ItemKind::File,
            EntryType::Directory => ItemKind::Dir,
            EntryType::Symlink => match entry.link_name_bytes().map(Cow::into_owned).unwrap_or_default() {
                target if target.len() as u64 > MAX_NAME => ItemKind::Refused(LINK_TOO_LONG),
                target => ItemKind::Symlink(target),
            },
            EntryType::Link => ItemKind::Refused("is a hard link"),
            EntryType::Char | EntryType::Block => ItemKind::Refused("is a device node"),
            EntryType::Fifo => ItemKind::Refused("is a fifo"),
            EntryType::XGlobalHeader => ItemKind::Skip,
            _ => ItemKind::Refused("has an unsupported entry type"),
        };
        let (name, kind) = match String::from_utf8(entry.path_bytes().into_owned()) {
            Ok(name) if name.len() as u64 > MAX_NAME => (shorten(&name), ItemKind::Refused(NAME_TOO_LONG)),
            // An old-style tar marks a directory by a trailing slash on a regular entry.
            Ok(name) if name.ends_with('/') && matches!(kind, ItemKind::File) => (name, ItemKind::Dir),
            Ok(name) => (name, kind),
            Err(e) => {
                (String::from_utf8_lossy(e.as_bytes()).into_owned(), ItemKind::Refused("has a name that is not UTF-8"))
            }
        };
        let mtime = entry.header().mtime().ok();
        f(Item { name, kind, mode, mtime, data: &mut entry })?;
    }
    Ok(())
}

fn each_zip(file: &mut File, dial: &Dial, f: &mut dyn FnMut(Item<'_>) -> Result<(), FsError>) -> Result<(), FsError> {
    zip_guard::check(file, dial)?;
    file.rewind()?;
    let (reader, budget) = zip_guard::Capped::new(Watched::new(&mut *file, dial));
    let mut archive = zip::ZipArchive::new(reader).map_err(bad_zip)?;
    budget.set(None);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(bad_zip)?;
        let unix_mode = entry.unix_mode();
        let kind = match unix_mode.map(FileType::from_raw_mode) {
            Some(FileType::Symlink) => {
                let mut target = Vec::new();
                (&mut entry).take(MAX_NAME + 1).read_to_end(&mut target).map_err(unreadable)?;
                match target.len() as u64 > MAX_NAME {
                    true => ItemKind::Refused(LINK_TOO_LONG),
                    false => ItemKind::Symlink(target),
                }
            }
            Some(FileType::Fifo) => ItemKind::Refused("is a fifo"),
            Some(FileType::CharacterDevice | FileType::BlockDevice) => ItemKind::Refused("is a device node"),
            Some(FileType::Socket) => ItemKind::Refused("is a socket"),
            Some(FileType::Directory) => ItemKind::Dir,
            _ if entry.is_dir() => ItemKind::Dir,
            _ => ItemKind::File,
        };
        let mode = unix_mode.unwrap_or(if matches!(kind, ItemKind::Dir) { 0o755 } else { 0o644 });
        let (name, kind) = match entry.name() {
            name if name.len() as u64 > MAX_NAME => (shorten(name), ItemKind::Refused(NAME_TOO_LONG)),
            name => (name.to_owned(), kind),
        };
        f(Item { name, kind, mode, mtime: None, data: &mut entry })?;
    }
    Ok(())
}

const NAME_TOO_LONG: &str = "has a name longer than 4096 bytes";
const LINK_TOO_LONG: &str = "has a link target longer than 4096 bytes";

/// The start of an overlong name, for the refusal that names it.
fn shorten(name: &str) -> String {
    let end = (0..=64).rev().find(|&i| name.is_char_boundary(i)).unwrap_or(0);
    format!("{}...", &name[..end])
}

/// An error reading the archive: a cap's refusal as such, a dial's stop and the kernel's own
/// errors as they are, the format's as bad input.
pub(crate) fn unreadable(e: io::Error) -> FsError {
    if let Some(why) = refusal(&e) {
        return FsError::BadEntry(why.to_string());
    }
    if is_stop(&e) {
        return FsError::Io(e);
    }
    match e.raw_os_error() {
        Some(_) => e.into(),
        None => FsError::Invalid(format!("Unreadable archive: {e}")),
    }
}

fn bad_zip(e: ZipError) -> FsError {
    match e {
        ZipError::Io(e) => unreadable(e),
        e => FsError::Invalid(format!("Unreadable zip archive: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::limits::bytes;
    use super::*;

    #[test]
    fn caps_name_themselves() {
        assert_eq!(NAME_TOO_LONG, format!("has a name longer than {}", bytes(MAX_NAME)));
        assert_eq!(LINK_TOO_LONG, format!("has a link target longer than {}", bytes(MAX_NAME)));
        assert_eq!(shorten(&"é".repeat(100)).chars().count(), 32 + 3);
    }
}
