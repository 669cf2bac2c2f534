//! Extracting an uploaded tar, tar.gz or zip into a directory of a volume.
//!
//! Two passes over the archive. The first checks every entry and refuses the whole archive, with
//! nothing written, at the first entry that is absolute, has `..`, goes through a symlink (in the
//! volume, or made by an earlier entry), or is a device node, fifo, socket or hard link. The
//! second checks each entry again and writes it, resolving with [`STRICT`]: even a symlink the
//! server plants between the passes is never gone through.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::formats::{unreadable, Format, Item, ItemKind};
use super::path::RelPath;
use super::resolve::{openat2_raw, resolve_error, CONFINED, STRICT};
use super::upload::{Staged, Upload};
use super::{FsError, Root};

/// Extracts `archive` (tar, tar.gz or zip, told apart by its first bytes) into directory
/// `rel_dir`, made if missing; returns how many entries were written. File modes keep only
/// permission bits; symlinks are made as they are (they are only ever followed confined).
pub fn extract(root: &Root, rel_dir: &str, archive: File) -> Result<usize, FsError> {
    extract_until(root, rel_dir, archive, &|| Ok(()))
}

/// [`extract`], asking `stop` before each entry and as content is copied: its error ends the
/// extraction there. What was written before is whole (each file is renamed into place only
/// when complete); nothing is half-written.
pub fn extract_until(
    root: &Root,
    rel_dir: &str,
    mut archive: File,
    stop: &dyn Fn() -> Result<(), FsError>,
) -> Result<usize, FsError> {
    let format = Format::sniff(&mut archive)?;
    let dest_path = RelPath::parse(rel_dir)?;
    let dest = match root.dir(&dest_path) {
        Ok(dest) => Some(dest),
        Err(FsError::NotFound) => None,
        Err(e) => return Err(e),
    };
    let mut check = Pass::new(root, dest.as_ref().map(|d| d.as_fd()), false, stop);
    format.each(&mut archive, &mut |item| check.item(item))?;
    archive.rewind()?;
    let dest = root.make_dirs(root.fd(), &dest_path, CONFINED)?;
    let mut write = Pass::new(root, Some(dest.as_fd()), true, stop);
    format.each(&mut archive, &mut |item| write.item(item))?;
    Ok(write.count)
}

/// One pass over the entries: checks each, and writes it when `write`.
struct Pass<'a> {
    root: &'a Root,
    /// The directory to extract into; `None` while checking if it does not exist yet.
    dest: Option<BorrowedFd<'a>>,
    write: bool,
    /// Paths of the symlinks earlier entries make.
    links: HashSet<String>,
    count: usize,
    stop: &'a dyn Fn() -> Result<(), FsError>,
}

impl<'a> Pass<'a> {
    fn new(
        root: &'a Root,
        dest: Option<BorrowedFd<'a>>,
        write: bool,
        stop: &'a dyn Fn() -> Result<(), FsError>,
    ) -> Self {
        Pass { root, dest, write, links: HashSet::new(), count: 0, stop }
    }

    fn item(&mut self, item: Item<'_>) -> Result<(), FsError> {
        (self.stop)()?;
        let Item { name, kind, mode, data, .. } = item;
        let bad = |why: &str| FsError::BadEntry(format!("Archive entry {name:?} {why}"));
        match kind {
            ItemKind::Refused(why) => return Err(bad(why)),
            ItemKind::Skip => return Ok(()),
            _ => {}
        }
        if name.starts_with('/') {
            return Err(bad("has an absolute path"));
        }
        if name.split('/').any(|n| n == "..") {
            return Err(bad("contains `..`"));
        }
        let path = RelPath::parse(&name).map_err(|e| bad(&format!("is invalid: {e}")))?;
        let Some((parent, _)) = path.split_last() else {
            // `./` names the extraction directory itself.
            return if matches!(kind, ItemKind::Dir) { Ok(()) } else { Err(bad("has an empty name")) };
        };
        // The directory this entry needs: itself for a directory, else its parent.
        let needs = if matches!(kind, ItemKind::Dir) { &path } else { &parent };
        if let Some((link, _)) = needs.prefixes().find(|(p, _)| self.links.contains(*p)) {
            return Err(bad(&format!("goes through {link:?}, a symlink made by an earlier entry")));
        }
        if let Some(dest) = self.dest {
            match openat2_raw(dest, needs.as_str(), OFlags::PATH | OFlags::DIRECTORY, STRICT) {
                Ok(_) | Err(Errno::NOENT) => {}
                Err(Errno::LOOP) => return Err(bad("goes through a symlink in the volume")),
                Err(Errno::NOTDIR) => return Err(bad("needs a directory where the volume has a file")),
                Err(Errno::XDEV) => return Err(bad("leads onto another file system")),
                Err(e) => return Err(resolve_error(e)),
            }
        }
        if let ItemKind::Symlink(target) = &kind {
            if target.is_empty() || target.contains(&0) {
                return Err(bad("has an invalid link target"));
            }
            self.links.insert(path.as_str().to_owned());
        }
        if let (true, Some(dest)) = (self.write, self.dest) {
            self.apply(dest, &path, kind, mode, data)?;
            self.count += 1;
        }
        Ok(())
    }

    /// Writes a checked entry beneath `dest`, resolving strictly: no symlink is gone through.
    fn apply(
        &self,
        dest: BorrowedFd<'_>,
        path: &RelPath,
        kind: ItemKind,
        mode: u32,
        data: &mut dyn Read,
    ) -> Result<(), FsError> {
        let root = self.root;
        let mode = Mode::from_raw_mode(mode & 0o777);
        if let ItemKind::Dir = kind {
            return Ok(rustix::fs::fchmod(root.make_dirs(dest, path, STRICT)?, mode)?);
        }
        let Some((parent, name)) = path.split_last() else { return Ok(()) };
        let dir = root.make_dirs(dest, &parent, STRICT)?;
        match kind {
            ItemKind::File => {
                let mut upload = Upload::create(root, dir, name)?;
                io::copy(&mut Stoppable { data, stop: self.stop }, upload.file()).map_err(unreadable)?;
                rustix::fs::fchmod(&*upload.file(), mode)?;
                upload.commit()?;
            }
            ItemKind::Symlink(target) => {
                let staged = Staged::new(root, dir)?;
                rustix::fs::symlinkat(target, staged.dir(), staged.tmp())?;
                root.adopt(staged.dir(), staged.tmp())?;
                staged.publish(name, true)?;
            }
            ItemKind::Dir | ItemKind::Refused(_) | ItemKind::Skip => {}
        }
        Ok(())
    }
}

/// An entry's content that stops being read once `stop` says so.
struct Stoppable<'d, 's> {
    data: &'d mut dyn Read,
    stop: &'s dyn Fn() -> Result<(), FsError>,
}

impl Read for Stoppable<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (self.stop)().map_err(|e| io::Error::other(e.to_string()))?;
        self.data.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;

    use tar::{EntryType, Header};
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

    use super::*;
    use crate::vfs::testbed::{snapshot, Bed, SECRET};

    /// Name, type, link target and content of an entry.
    type RawEntry<'a> = (&'a str, EntryType, &'a str, &'a [u8]);

    /// A tar written header by header, so that it can hold what `tar::Builder` refuses to write.
    fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            let mut header = Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append(&header, *data).unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// Extracts `bytes` (as an uploaded file beside the volume) into `rel_dir`.
    fn extract_bytes(bed: &Bed, rel_dir: &str, bytes: &[u8]) -> Result<usize, FsError> {
        let upload = bed.base.join("upload");
        fs::write(&upload, bytes).unwrap();
        extract(&bed.root, rel_dir, File::open(upload).unwrap())
    }

    #[test]
    fn bad_entries_refuse_the_whole_archive() {
        let bed = Bed::new("badtar");
        let good: RawEntry = ("good.txt", EntryType::Regular, "", b"good");
        let cases: [(&[RawEntry], &str); 12] = [
            (&[("../x", EntryType::Regular, "", b"x")], "\"../x\" contains `..`"),
            (&[("a/../../x", EntryType::Regular, "", b"x")], "\"a/../../x\" contains `..`"),
            (&[("/abs", EntryType::Regular, "", b"x")], "\"/abs\" has an absolute path"),
            (
                &[("l", EntryType::Symlink, "/etc", b""), ("l/passwd", EntryType::Regular, "", b"x")],
                "\"l/passwd\" goes through \"l\", a symlink made by an earlier entry",
            ),
            (
                &[("d/l", EntryType::Symlink, "..", b""), ("d/l/x", EntryType::Directory, "", b"")],
                "\"d/l/x\" goes through \"d/l\"",
            ),
            (&[("dev", EntryType::Char, "", b"")], "\"dev\" is a device node"),
            (&[("blk", EntryType::Block, "", b"")], "\"blk\" is a device node"),
            (&[("h", EntryType::Link, "good.txt", b"")], "\"h\" is a hard link"),
            (&[("p", EntryType::Fifo, "", b"")], "\"p\" is a fifo"),
            (&[("out_abs/x", EntryType::Regular, "", b"x")], "\"out_abs/x\" goes through a symlink in the volume"),
            (&[("data/out/x", EntryType::Regular, "", b"x")], "\"data/out/x\" goes through a symlink in the volume"),
            (&[("data/out", EntryType::Directory, "", b"")], "\"data/out\" goes through a symlink in the volume"),
        ];
        for (entries, why) in cases {
            let mut all = vec![good];
            all.extend_from_slice(entries);
            for bytes in [raw_tar(&all), gz(&raw_tar(&all))] {
                match extract_bytes(&bed, "", &bytes) {
                    Err(FsError::BadEntry(m)) => assert!(m.contains(why), "{m:?} does not say {why:?}"),
                    other => panic!("{why}: {other:?}"),
                }
                assert!(!bed.path("good.txt").exists(), "{why}: something was extracted");
            }
        }
        // Not even the directory to extract into is made.
        let refused = raw_tar(&[good, ("p", EntryType::Fifo, "", b"")]);
        assert!(matches!(extract_bytes(&bed, "sub/dir", &refused), Err(FsError::BadEntry(_))));
        assert!(!bed.path("sub").exists());
        bed.assert_outside_untouched();
    }

    #[test]
    fn tar_and_tar_gz_extract_and_replace_links() {
        let bed = Bed::new("tar");
        let tar = raw_tar(&[
            ("./", EntryType::Directory, "", b""),
            ("./top.txt", EntryType::Regular, "", b"top"),
            ("a/b/c.txt", EntryType::Regular, "", b"abc"),
            ("a/link", EntryType::Symlink, "/etc/passwd", b""),
            ("secret_abs", EntryType::Regular, "", b"replaced"),
        ]);
        assert_eq!(extract_bytes(&bed, "", &tar).unwrap(), 4);
        assert_eq!(extract_bytes(&bed, "again/deeper", &gz(&tar)).unwrap(), 4);
        for dir in ["", "again/deeper/"] {
            assert_eq!(fs::read(bed.path(&format!("{dir}a/b/c.txt"))).unwrap(), b"abc");
            assert_eq!(fs::read_link(bed.path(&format!("{dir}a/link"))).unwrap(), std::path::Path::new("/etc/passwd"));
            assert_eq!(fs::read(bed.path(&format!("{dir}secret_abs"))).unwrap(), b"replaced");
        }
        let names: Vec<String> = bed.root.list("a/b").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["c.txt"], "a temp name was left behind");
        bed.assert_outside_untouched();
    }

    #[test]
    fn modes_keep_permission_bits_only() {
        let bed = Bed::new("tarmodes");
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o4755);
        tar.append_data(&mut header, "suid", &b"x"[..]).unwrap();
        extract_bytes(&bed, "", &tar.into_inner().unwrap()).unwrap();
        assert_eq!(bed.root.stat("suid").unwrap().mode, 0o755);
    }

    #[test]
    fn zip_extracts_and_is_checked_the_same() {
        let bed = Bed::new("zip");
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored).unix_permissions(0o600);
        zip.add_directory("dir/", deflated).unwrap();
        zip.start_file("dir/packed.txt", deflated).unwrap();
        zip.write_all(&b"squeeze ".repeat(1000)).unwrap();
        zip.start_file("plain.txt", stored).unwrap();
        zip.write_all(b"plain").unwrap();
        zip.add_symlink("dir/link", "../plain.txt", deflated).unwrap();
        let good = zip.finish().unwrap().into_inner();
        assert_eq!(extract_bytes(&bed, "z", &good).unwrap(), 4);
        assert_eq!(fs::read(bed.path("z/dir/packed.txt")).unwrap(), b"squeeze ".repeat(1000));
        assert_eq!(bed.root.stat("z/plain.txt").unwrap().mode, 0o600);
        assert_eq!(fs::read(bed.path("z/dir/link")).unwrap(), b"plain");

        for (name, why) in
            [("../evil", "contains `..`"), ("/evil", "absolute"), ("dir/link/x", "goes through \"dir/link\"")]
        {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            zip.start_file("first.txt", stored).unwrap();
            zip.add_symlink("dir/link", "/", stored).unwrap();
            zip.start_file(name, stored).unwrap();
            let bad = zip.finish().unwrap().into_inner();
            match extract_bytes(&bed, "bad", &bad) {
                Err(FsError::BadEntry(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{name}: {other:?}"),
            }
            assert!(!bed.path("bad").exists());
        }
        bed.assert_outside_untouched();
    }

    #[test]
    fn what_is_no_archive_is_said_so() {
        let bed = Bed::new("notarchive");
        for junk in [&b""[..], b"hello world", &[7u8; 2000]] {
            assert!(matches!(extract_bytes(&bed, "", junk), Err(FsError::Invalid(m)) if m.contains("Not a tar")));
        }
        let broken_gz = [&gz(&raw_tar(&[("f", EntryType::Regular, "", b"x")]))[..20], &[0u8; 50]].concat();
        assert!(matches!(extract_bytes(&bed, "", &broken_gz), Err(FsError::Invalid(m)) if m.contains("Unreadable")));
        assert_eq!(extract_bytes(&bed, "", &[0u8; 1024]).unwrap(), 0);
        assert!(snapshot(&bed.path("")).values().all(|(_, _, _, c)| c != SECRET));
    }

    #[test]
    fn a_full_volume_stops_extraction_with_no_space() {
        let bed = Bed::new("extractfull");
        let Some(_mount) = bed.mount_tmpfs("small", "64k") else { return };
        let tar = raw_tar(&[("big", EntryType::Regular, "", &[1u8; 200_000])]);
        let upload = bed.base.join("upload");
        fs::write(&upload, tar).unwrap();
        let small = Root::open(&bed.path("small")).unwrap();
        assert!(matches!(extract(&small, "", File::open(upload).unwrap()), Err(FsError::NoSpace)));
    }
}
