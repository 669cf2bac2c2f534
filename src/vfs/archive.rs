//! Packing a directory of a volume into a streamed tar.gz or tar.zst (the archive route and
//! backups).

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use flate2::write::GzEncoder;
use flate2::Compression;
use rustix::fs::Stat;
use tar::{Builder, EntryType, Header};

use super::entry::Kind;
use super::ignore::Ignore;
use super::path::RelPath;
use super::resolve::{handle, open_regular};
use super::walk::{walk, Visitor};
use super::{FsError, Root};

/// What a pack wrote: bytes of file content (before compression) and the number of files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackStats {
    pub bytes: u64,
    pub files: u64,
}

/// How a packed tar is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip at its default level.
    Gz,
    /// zstd at its default level (3), compressed on one worker thread per core (as `zstd -T0`),
    /// at most [`MAX_ZSTD_WORKERS`], while the caller walks and writes.
    Zst,
}

/// Most zstd worker threads one pack uses: each holds a job of input and its output (about
/// 20 MiB at level 3), and several backups may run at once.
pub const MAX_ZSTD_WORKERS: usize = 4;

/// Streams directory `rel_dir` as a tar.gz into `out`, paths relative to it. Directories are
/// included, symlinks stored as symlinks, fifos, sockets and devices left out; what `ignore`
/// matches is left out with its subtree. Memory stays bounded whatever the file sizes: content
/// is streamed through an fd opened fd-relative. `progress` hears the running totals after each
/// file. A write error on `out` is an `Io` error, never `NoSpace` (which is the volume's).
pub fn pack<W: Write>(
    root: &Root,
    rel_dir: &str,
    ignore: &Ignore,
    out: W,
    progress: impl FnMut(u64, u64),
) -> Result<PackStats, FsError> {
    pack_until(root, rel_dir, ignore, out, Codec::Gz, progress, &|| Ok(()))
}

/// [`pack`] compressed by `codec`, asking `stop` before each name: its error ends the pack
/// there (a deadline, a cancel; a large file's content is for `out` to stop).
pub fn pack_until<W: Write>(
    root: &Root,
    rel_dir: &str,
    ignore: &Ignore,
    out: W,
    codec: Codec,
    progress: impl FnMut(u64, u64),
    stop: &dyn Fn() -> Result<(), FsError>,
) -> Result<PackStats, FsError> {
    let dir = root.dir(&RelPath::parse(rel_dir)?)?;
    let encoder = Encoder::new(Sink(out), codec)?;
    let mut packer = Packer {
        tar: Builder::new(encoder),
        path: PathBuf::new(),
        ignore,
        stats: PackStats::default(),
        progress,
        stop,
    };
    walk(root.dev, dir, &mut packer)?;
    packer.tar.into_inner()?.finish()?;
    Ok(packer.stats)
}

/// The compressor between the tar builder and the archive's destination.
enum Encoder<W: Write> {
    Gz(GzEncoder<W>),
    Zst(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn new(out: W, codec: Codec) -> io::Result<Encoder<W>> {
        Ok(match codec {
            Codec::Gz => Encoder::Gz(GzEncoder::new(out, Compression::default())),
            Codec::Zst => {
                let mut zst = zstd::stream::write::Encoder::new(out, zstd::DEFAULT_COMPRESSION_LEVEL)?;
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                zst.multithread(u32::try_from(cores.min(MAX_ZSTD_WORKERS)).unwrap_or(1))?;
                // A frame checksum, as gzip has its CRC: a corrupt archive fails its restore.
                zst.include_checksum(true)?;
                Encoder::Zst(zst)
            }
        })
    }

    /// Writes the stream's end (and, for zstd, waits for its workers).
    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gz(gz) => gz.finish(),
            Encoder::Zst(zst) => zst.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gz(gz) => gz.write(buf),
            Encoder::Zst(zst) => zst.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gz(gz) => gz.flush(),
            Encoder::Zst(zst) => zst.flush(),
        }
    }
}

/// The walk's visitor: appends each name under the path of the directories entered.
struct Packer<'i, W: Write, P> {
    tar: Builder<Encoder<Sink<W>>>,
    path: PathBuf,
    ignore: &'i Ignore,
    stats: PackStats,
    progress: P,
    stop: &'i dyn Fn() -> Result<(), FsError>,
}

impl<W: Write, P: FnMut(u64, u64)> Packer<'_, W, P> {
    /// The archive path of `name` in the current directory, unless ignored.
    fn path_of(&self, name: &CStr, is_dir: bool) -> Option<PathBuf> {
        let path = self.path.join(OsStr::from_bytes(name.to_bytes()));
        (!self.ignore.is_ignored(&path.to_string_lossy(), is_dir)).then_some(path)
    }

    fn append_file(&mut self, dir: BorrowedFd<'_>, name: &CStr, path: PathBuf) -> Result<(), FsError> {
        let (file, stat) = match handle(dir, name).and_then(open_regular) {
            Ok(opened) => opened,
            // Gone or no longer a regular file since the walk saw it: left out.
            Err(FsError::NotFound | FsError::IsADirectory | FsError::Invalid(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        self.tar.append_data(&mut header(&stat, EntryType::Regular, size), path, Exact { file, left: size })?;
        self.stats.bytes += size;
        self.stats.files += 1;
        (self.progress)(self.stats.bytes, self.stats.files);
        Ok(())
    }
}

impl<W: Write, P: FnMut(u64, u64)> Visitor for Packer<'_, W, P> {
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> Result<(), FsError> {
        (self.stop)()?;
        let Some(path) = self.path_of(name, false) else { return Ok(()) };
        match Kind::of(stat) {
            Kind::File => self.append_file(dir, name, path)?,
            Kind::Symlink => {
                let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
                let target = OsStr::from_bytes(target.to_bytes());
                self.tar.append_link(&mut header(stat, EntryType::Symlink, 0), path, target)?;
            }
            Kind::Dir | Kind::Other => {}
        }
        Ok(())
    }

    fn enter(&mut self, _: BorrowedFd<'_>, name: &CStr, stat: &Stat) -> Result<bool, FsError> {
        (self.stop)()?;
        let Some(path) = self.path_of(name, true) else { return Ok(false) };
        self.tar.append_data(&mut header(stat, EntryType::Directory, 0), &path, io::empty())?;
        self.path = path;
        Ok(true)
    }

    fn leave(&mut self, _: BorrowedFd<'_>, _: &CStr) -> Result<(), FsError> {
        self.path.pop();
        Ok(())
    }
}

/// A GNU header (long names and link targets supported) with `stat`'s facts. Only permission
/// bits are kept: a setuid bit planted in a volume does not travel in its archives.
fn header(stat: &Stat, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(stat.st_mode & 0o777);
    header.set_uid(stat.st_uid.into());
    header.set_gid(stat.st_gid.into());
    header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    header.set_size(size);
    header
}

/// A file's content cut or zero-padded to the size its header announced: the server may grow
/// or shrink the file while we read it, and a tar entry must hold exactly what it says.
struct Exact {
    file: File,
    left: u64,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = match self.file.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// The archive's destination: its write errors keep their kind but lose their errno, so that a
/// full backup disk is not taken for a full volume.
struct Sink<W>(W);

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(sink_error)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(sink_error)
    }
}

fn sink_error(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("writing the archive failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use flate2::read::GzDecoder;

    use super::*;
    use crate::vfs::testbed::{snapshot, Bed, SECRET};

    /// Each archive path with its type and its content or link target.
    fn entries(archive: &[u8]) -> BTreeMap<String, (EntryType, Vec<u8>)> {
        let mut out = BTreeMap::new();
        for entry in tar::Archive::new(GzDecoder::new(archive)).entries().unwrap() {
            let mut entry = entry.unwrap();
            let kind = entry.header().entry_type();
            let mut data = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
            entry.read_to_end(&mut data).unwrap();
            out.insert(String::from_utf8(entry.path_bytes().into_owned()).unwrap(), (kind, data));
        }
        out
    }

    fn pack_to_vec(bed: &Bed, rel: &str, ignore: &Ignore) -> (Vec<u8>, PackStats) {
        let mut out = Vec::new();
        let stats = pack(&bed.root, rel, ignore, &mut out, |_, _| {}).unwrap();
        (out, stats)
    }

    #[test]
    fn links_are_stored_as_links_and_specials_left_out() {
        let bed = Bed::new("pack");
        let (archive, stats) = pack_to_vec(&bed, "/", &Ignore::default());
        let got = entries(&archive);
        assert_eq!(stats, PackStats { bytes: 9, files: 2 });
        assert_eq!(
            got["secret_abs"],
            (EntryType::Symlink, bed.outside().join("marker").into_os_string().into_encoded_bytes())
        );
        assert_eq!(got["data/out"], (EntryType::Symlink, b"../../outside".to_vec()));
        assert_eq!(got["data/nested"].0, EntryType::Directory);
        assert_eq!(got["data/nested/deep.txt"], (EntryType::Regular, b"deep".to_vec()));
        assert!(!got.contains_key("fifo"));
        assert!(got.values().all(|(_, data)| data != SECRET));
        assert_eq!(got.len(), 14, "{:?}", got.keys());
        bed.assert_outside_untouched();
    }

    #[test]
    fn round_trip_keeps_names_contents_modes_and_targets() {
        let bed = Bed::new("roundtrip");
        let long = format!("data/{}/{}", "d".repeat(120), "f".repeat(150));
        fs::create_dir_all(bed.path(&long).parent().unwrap()).unwrap();
        fs::write(bed.path(&long), vec![42u8; 300_000]).unwrap();
        fs::write(bed.path("data/private"), b"p").unwrap();
        fs::set_permissions(bed.path("data/private"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(bed.path("data/nested"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir(bed.path("data/empty")).unwrap();
        symlink(format!("/{}", "t".repeat(200)), bed.path("data/long_link")).unwrap();
        let (archive, stats) = pack_to_vec(&bed, "data", &Ignore::default());
        assert_eq!(stats.files, 4);
        let upload = bed.base.join("upload.tgz");
        fs::write(&upload, archive).unwrap();
        let count = crate::vfs::extract(&bed.root, "restored", fs::File::open(upload).unwrap()).unwrap();
        assert_eq!(count, snapshot(&bed.path("data")).len());
        assert_eq!(snapshot(&bed.path("restored")), snapshot(&bed.path("data")));
        bed.assert_outside_untouched();
    }

    #[test]
    fn a_tar_zst_holds_what_the_tar_gz_holds() {
        let bed = Bed::new("packzst");
        fs::write(bed.path("data/big"), vec![7u8; 3 << 20]).unwrap();
        let (gz, gz_stats) = pack_to_vec(&bed, "/", &Ignore::default());
        let mut zst = Vec::new();
        let stats =
            pack_until(&bed.root, "/", &Ignore::default(), &mut zst, Codec::Zst, |_, _| {}, &|| Ok(())).unwrap();
        assert_eq!(stats, gz_stats);
        assert!(zst.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) && zst.len() < 64 << 10, "{} bytes", zst.len());
        let mut tar = Vec::new();
        zstd::stream::read::Decoder::new(&zst[..]).unwrap().read_to_end(&mut tar).unwrap();
        let mut from_gz = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut from_gz).unwrap();
        assert_eq!(tar, from_gz, "the same tar, compressed otherwise");
    }

    #[test]
    fn ignored_paths_and_subtrees_are_left_out() {
        let bed = Bed::new("packignore");
        let lines = "# backups skip these\nnested/\n";
        fs::write(bed.path(Ignore::FILE), lines).unwrap();
        let size = lines.len() as u64;
        let ignore = Ignore::load(&bed.root, &["*.txt"]).unwrap();
        let mut seen = Vec::new();
        let stats = pack(&bed.root, "", &ignore, std::io::sink(), |bytes, files| seen.push((bytes, files))).unwrap();
        assert_eq!(stats, PackStats { bytes: size, files: 1 }, "only .lightdignore itself is a file left");
        assert_eq!(seen, [(size, 1)]);
        let (archive, _) = pack_to_vec(&bed, "", &ignore);
        let got = entries(&archive);
        assert!(got.contains_key("data") && !got.keys().any(|k| k.contains("nested") || k.ends_with(".txt")));
    }

    #[test]
    fn content_is_exactly_the_announced_size() {
        let bed = Bed::new("exact");
        let file = |size| {
            let path = bed.base.join("ten");
            fs::write(&path, b"0123456789").unwrap();
            Exact { file: File::open(path).unwrap(), left: size }
        };
        let mut out = Vec::new();
        file(4).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"0123");
        out.clear();
        file(13).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"0123456789\0\0\0");
    }
}
