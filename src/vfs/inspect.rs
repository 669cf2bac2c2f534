//! Reading an archive through without writing anything, with the reader extraction uses (and
//! its limits): an uploaded backup is checked this way before it is kept.

use std::fs::File;
use std::io;

use super::formats::{unreadable, Format, ItemKind};
use super::FsError;

/// How many regular files the `tar.gz` `archive` holds, reading every entry to its end (so
/// that a truncated or corrupt stream is found now, not at the restore). Anything but a
/// readable tar.gz is an error saying why.
pub fn tar_gz_files(mut archive: File) -> Result<u64, FsError> {
    match Format::sniff(&mut archive)? {
        Format::TarGz => {}
        Format::Tar | Format::Zip => return Err(FsError::Invalid("Not a tar.gz (a tar or zip)".into())),
    }
    let mut files = 0;
    Format::TarGz.each(&mut archive, &super::Dial::new(None), &mut |item| {
        io::copy(item.data, &mut io::sink()).map_err(unreadable)?;
        files += u64::from(matches!(item.kind, ItemKind::File));
        Ok(())
    })?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::vfs::testbed::Bed;

    fn file(bed: &Bed, bytes: &[u8]) -> File {
        let path = bed.base.join("upload");
        std::fs::write(&path, bytes).unwrap();
        File::open(path).unwrap()
    }

    #[test]
    fn only_a_readable_tar_gz_counts() {
        let bed = Bed::new("inspect");
        let mut tar = tar::Builder::new(Vec::new());
        for name in ["a.txt", "d/b.txt"] {
            let mut header = tar::Header::new_gnu();
            header.set_size(3);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, &b"abc"[..]).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(tar_gz_files(file(&bed, &gz)).unwrap(), 2);
        let cut = &gz[..gz.len() - 30];
        assert!(matches!(tar_gz_files(file(&bed, cut)), Err(FsError::Invalid(m)) if m.contains("Unreadable")));
        assert!(matches!(tar_gz_files(file(&bed, &tar)), Err(FsError::Invalid(m)) if m.contains("Not a tar.gz")));
        assert!(matches!(tar_gz_files(file(&bed, b"")), Err(FsError::Invalid(_))));
    }
}
