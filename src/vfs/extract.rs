//! Extracting an uploaded tar, tar.gz or zip into a directory of a volume.
//!
//! Two passes over the archive, then a move. The first checks every entry against the
//! destination and refuses the whole archive, with nothing written, at the first entry that is
//! absolute, has `..`, goes through a symlink (in the volume, or made by an earlier entry), is
//! a device node, fifo, socket or hard link, would replace a directory with something else,
//! or passes a cap of [`super::limits`]. The second checks each entry again and writes it into
//! a [`Staging`] directory, resolving with [`STRICT`]: even a symlink the server plants between
//! the passes is never gone through. Only then is the staged tree moved into the destination,
//! rename by rename. Whatever stops the passes (a bad entry, a full volume, the [`Dial`]'s
//! cancel or deadline) removes the staging directory: the destination never holds a
//! half-written file.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::dial::{Dial, Watched};
use super::entry::Kind;
use super::formats::{unreadable, Format, Item, ItemKind};
use super::limits::{bytes, MAX_ENTRY_DEPTH, MAX_LINK_PATHS};
use super::path::RelPath;
use super::resolve::{openat2_raw, resolve_error, CONFINED, STRICT};
use super::staging::{Staging, LISTED};
use super::upload::{Staged, Upload};
use super::{FsError, Root};

/// Extracts `archive` (tar, tar.gz or zip, told apart by its first bytes) into directory
/// `rel_dir`, made if missing; returns how many entries were written. File modes keep only
/// permission bits; symlinks are made as they are (they are only ever followed confined).
pub fn extract(root: &Root, rel_dir: &str, archive: File) -> Result<usize, FsError> {
    extract_with(root, rel_dir, archive, &Dial::new(None))
}

/// [`extract`] watched by `dial`: progress counted there, and stopped by its cancel or
/// deadline (an `Io` error then; ask the dial why) until the staged tree starts moving in.
pub fn extract_with(root: &Root, rel_dir: &str, mut archive: File, dial: &Dial) -> Result<usize, FsError> {
    let format = Format::sniff(&mut archive)?;
    let dest_path = RelPath::parse(rel_dir)?;
    let dest = match root.dir(&dest_path) {
        Ok(dest) => Some(dest),
        Err(FsError::NotFound) => None,
        Err(e) => return Err(e),
    };
    let mut check = Pass::new(root, dest.as_ref().map(|d| d.as_fd()), false, dial);
    format.each(&mut archive, dial, &mut |item| check.item(item))?;
    archive.rewind()?;
    let staging = Staging::new(root)?;
    let mut write = Pass::new(root, Some(staging.fd()), true, dial);
    format.each(&mut archive, dial, &mut |item| write.item(item))?;
    let count = write.count;
    drop(write);
    dial.check()?;
    let dest = root.make_dirs(root.fd(), &dest_path, CONFINED)?;
    staging.move_into(root, dest)?;
    Ok(count)
}

/// [`extract_with`] of an archive already in the volume (`from`, a regular file; symlinks
/// followed confined), copied first to an unnamed spool on the volume (counted by its limit),
/// so that the server cannot change it between the passes.
pub fn extract_from(root: &Root, rel_dir: &str, from: &str, dial: &Dial) -> Result<usize, FsError> {
    let (mut file, _) = root.open_read(from)?;
    let mut spool = root.spool()?;
    io::copy(&mut Watched::new(&mut file, dial), &mut spool)?;
    spool.rewind()?;
    extract_with(root, rel_dir, spool, dial)
}

/// One pass over the entries: checks each, and writes it when `write`.
struct Pass<'a> {
    root: &'a Root,
    /// The directory to check against or write into; `None` while checking if it does not
    /// exist yet.
    dest: Option<BorrowedFd<'a>>,
    write: bool,
    dial: &'a Dial,
    /// Paths of the symlinks earlier entries make, and their bytes in all.
    links: HashSet<String>,
    link_bytes: u64,
    count: usize,
}

impl<'a> Pass<'a> {
    fn new(root: &'a Root, dest: Option<BorrowedFd<'a>>, write: bool, dial: &'a Dial) -> Self {
        Pass { root, dest, write, dial, links: HashSet::new(), link_bytes: 0, count: 0 }
    }

    fn item(&mut self, item: Item<'_>) -> Result<(), FsError> {
        self.dial.check()?;
        if !self.write {
            self.dial.add_entry();
        }
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
        let Some((parent, last)) = path.split_last() else {
            // `./` names the extraction directory itself.
            return if matches!(kind, ItemKind::Dir) { Ok(()) } else { Err(bad("has an empty name")) };
        };
        if path.prefixes().count() > MAX_ENTRY_DEPTH {
            return Err(bad(&format!("is nested deeper than {MAX_ENTRY_DEPTH} directories")));
        }
        let is_dir = matches!(kind, ItemKind::Dir);
        // The directory this entry needs: itself for a directory, else its parent.
        let needs = if is_dir { &path } else { &parent };
        if let Some((link, _)) = needs.prefixes().find(|(p, _)| self.links.contains(*p)) {
            return Err(bad(&format!("goes through {link:?}, a symlink made by an earlier entry")));
        }
        if let Some(dest) = self.dest {
            match openat2_raw(dest, needs.as_str(), OFlags::PATH | OFlags::DIRECTORY, STRICT) {
                // What a file or link would replace must not be a directory.
                Ok(dir) if !is_dir => match rustix::fs::statat(&dir, last, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) if Kind::of(&stat) == Kind::Dir => {
                        return Err(bad("would replace a directory in the volume"))
                    }
                    _ => {}
                },
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
            if self.links.insert(path.as_str().to_owned()) {
                self.link_bytes += path.as_str().len() as u64;
                if self.link_bytes > MAX_LINK_PATHS {
                    return Err(FsError::BadEntry(format!(
                        "Archive makes more than {} of symlink paths",
                        bytes(MAX_LINK_PATHS)
                    )));
                }
            }
        }
        if let (true, Some(dest)) = (self.write, self.dest) {
            self.apply(dest, &path, kind, mode, data)?;
            self.count += 1;
            self.dial.add_extracted();
        }
        Ok(())
    }

    /// Writes a checked entry beneath `dest`, resolving strictly: no symlink is gone through.
    /// A directory the archive lists is marked [`LISTED`], so that its mode is applied when
    /// it is moved in (and not that of one made only to hold entries).
    fn apply(
        &self,
        dest: BorrowedFd<'_>,
        path: &RelPath,
        kind: ItemKind,
        mode: u32,
        data: &mut dyn Read,
    ) -> Result<(), FsError> {
        let root = self.root;
        if let ItemKind::Dir = kind {
            let listed = Mode::from_raw_mode((mode & 0o777) | LISTED);
            return Ok(rustix::fs::fchmod(root.make_dirs(dest, path, STRICT)?, listed)?);
        }
        let mode = Mode::from_raw_mode(mode & 0o777);
        let Some((parent, name)) = path.split_last() else { return Ok(()) };
        let dir = root.make_dirs(dest, &parent, STRICT)?;
        match kind {
            ItemKind::File => {
                let mut upload = Upload::create(root, dir, name)?;
                io::copy(&mut Watched::counting(data, self.dial), upload.file()).map_err(unreadable)?;
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;

    use tar::{EntryType, Header};
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

    use super::*;
    use crate::vfs::limits::MAX_ENTRY_DEPTH;
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

    /// Names at the volume root that extraction's staging left behind.
    fn leftovers(bed: &Bed) -> Vec<String> {
        let names = fs::read_dir(bed.path("")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
        names.filter(|n| n.starts_with(crate::vfs::upload::TEMP_PREFIX)).collect()
    }

    #[test]
    fn a_stop_mid_write_leaves_the_destination_as_it_was() {
        let bed = Bed::new("extractstop");
        fs::create_dir(bed.path("dest")).unwrap();
        fs::write(bed.path("dest/old.txt"), b"old").unwrap();
        let big = vec![0u8; 8 << 20];
        let tar = gz(&raw_tar(&[
            ("first.txt", EntryType::Regular, "", b"first"),
            ("old.txt", EntryType::Regular, "", b"new"),
            ("big.bin", EntryType::Regular, "", &big),
        ]));
        let upload = bed.base.join("upload");
        fs::write(&upload, tar).unwrap();
        let dial = Dial::new(None);
        let over = std::sync::atomic::AtomicBool::new(false);
        let stopped = std::thread::scope(|s| {
            s.spawn(|| {
                while dial.tally().extracted < 2 && !over.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::yield_now();
                }
                dial.cancel();
            });
            let result = extract_with(&bed.root, "dest", File::open(&upload).unwrap(), &dial);
            over.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        });
        assert!(matches!(&stopped, Err(FsError::Io(e)) if e.to_string() == "cancelled"), "{stopped:?}");
        assert!(dial.tally().bytes < 8 << 20, "stopped inside the big file");
        let names: Vec<String> = bed.root.list("dest").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["old.txt"]);
        assert_eq!(fs::read(bed.path("dest/old.txt")).unwrap(), b"old");
        assert!(leftovers(&bed).is_empty(), "{:?}", leftovers(&bed));
        // Past its deadline, the same: nothing of it anywhere.
        let late = Dial::new(Some(std::time::Instant::now()));
        assert!(extract_with(&bed.root, "dest", File::open(&upload).unwrap(), &late).is_err());
        assert!(late.expired() && leftovers(&bed).is_empty() && !bed.path("dest/first.txt").exists());
        // Let be, it all lands, staging gone.
        assert_eq!(extract_with(&bed.root, "dest", File::open(&upload).unwrap(), &Dial::new(None)).unwrap(), 3);
        assert_eq!(fs::read(bed.path("dest/old.txt")).unwrap(), b"new");
        assert!(leftovers(&bed).is_empty());
    }

    #[test]
    fn a_zstd_frame_asking_for_a_window_past_the_cap_is_refused() {
        let bed = Bed::new("zstdwindow");
        let tar = raw_tar(&[("big.txt", EntryType::Regular, "", b"hello")]);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.window_log(crate::vfs::limits::MAX_ZSTD_WINDOW_LOG + 1).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.include_contentsize(false).unwrap();
        enc.write_all(&tar).unwrap();
        let wide = enc.finish().unwrap();
        assert!(matches!(extract_bytes(&bed, "", &wide), Err(FsError::Invalid(m)) if m.contains("Unreadable")));
        assert!(!bed.path("big.txt").exists() && leftovers(&bed).is_empty());
        // Positive control: the same tar in an ordinary frame extracts.
        assert_eq!(extract_bytes(&bed, "", &zstd::encode_all(&tar[..], 3).unwrap()).unwrap(), 1);
        assert_eq!(fs::read(bed.path("big.txt")).unwrap(), b"hello");
    }

    #[test]
    fn headers_past_the_caps_are_refused_naming_the_cap() {
        let bed = Bed::new("extractcaps");
        let mut long = Header::new_gnu();
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(EntryType::GNULongName);
        long.set_size(2 << 30);
        long.set_cksum();
        let mut bomb = long.as_bytes().to_vec();
        bomb.extend_from_slice(&[0u8; 1 << 20]);
        for packed in [gz(&bomb), zstd::encode_all(&bomb[..], 3).unwrap()] {
            match extract_bytes(&bed, "", &packed) {
                Err(FsError::BadEntry(m)) => assert!(m.contains("name longer than 4096 bytes"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(leftovers(&bed).is_empty());
        let deep = "d/".repeat(MAX_ENTRY_DEPTH) + "f";
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        tar.append_data(&mut h, &deep, &b"x"[..]).unwrap();
        match extract_bytes(&bed, "", &tar.into_inner().unwrap()) {
            Err(FsError::BadEntry(m)) => assert!(m.contains("nested deeper than"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(leftovers(&bed).is_empty());
    }

    #[test]
    fn listed_directory_modes_apply_and_directories_are_not_replaced() {
        let bed = Bed::new("extractdirs");
        fs::create_dir_all(bed.path("d/implied")).unwrap();
        fs::create_dir_all(bed.path("d/listed")).unwrap();
        let tar = raw_tar(&[
            ("implied/f", EntryType::Regular, "", b"x"),
            ("listed/", EntryType::Directory, "", b""),
            ("fresh/", EntryType::Directory, "", b""),
            ("fresh/sub/g", EntryType::Regular, "", b"y"),
        ]);
        let mut tar = tar;
        // raw_tar writes 0644 everywhere: the listed directories get 0644, the implied keep theirs.
        extract_bytes(&bed, "d", &tar).unwrap();
        assert_eq!(bed.root.stat("d/implied").unwrap().mode, 0o755);
        assert_eq!(bed.root.stat("d/listed").unwrap().mode, 0o644);
        assert_eq!(bed.root.stat("d/fresh").unwrap().mode, 0o644);
        assert_eq!(bed.root.stat("d/fresh/sub").unwrap().mode, 0o755);
        tar = raw_tar(&[("first", EntryType::Regular, "", b"1"), ("implied", EntryType::Regular, "", b"file")]);
        match extract_bytes(&bed, "d", &tar) {
            Err(FsError::BadEntry(m)) => assert!(m.contains("\"implied\" would replace a directory"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!bed.path("d/first").exists() && leftovers(&bed).is_empty());
    }
}
