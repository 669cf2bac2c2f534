//! Reading an archive through without writing anything, with the reader extraction uses (and
//! its limits): an uploaded backup is checked this way before it is kept.

use std::fs::File;
use std::io;

use super::archive::Codec;
use super::formats::{unreadable, Format, ItemKind};
use super::FsError;

/// How the `tar.gz` or `tar.zst` `archive` is compressed (told by its first bytes) and how
/// many regular files it holds, reading every entry to its end (so that a truncated or corrupt
/// stream is found now, not at the restore). Anything else is an error saying why.
pub fn backup_files(mut archive: File) -> Result<(Codec, u64), FsError> {
    let format = Format::sniff(&mut archive)?;
    let codec = match format {
        Format::TarGz => Codec::Gz,
        Format::TarZst => Codec::Zst,
        Format::Tar | Format::Zip => return Err(FsError::Invalid("Not a tar.gz or tar.zst (a tar or zip)".into())),
    };
    let mut files = 0;
    format.each(&mut archive, &super::Dial::new(None), &mut |item| {
        io::copy(item.data, &mut io::sink()).map_err(unreadable)?;
        files += u64::from(matches!(item.kind, ItemKind::File));
        Ok(())
    })?;
    Ok((codec, files))
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
    fn only_a_readable_tar_gz_or_tar_zst_counts() {
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
        assert_eq!(backup_files(file(&bed, &gz)).unwrap(), (Codec::Gz, 2));
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        assert_eq!(backup_files(file(&bed, &zst)).unwrap(), (Codec::Zst, 2));
        for cut in [&gz[..gz.len() - 30], &zst[..zst.len() - 30]] {
            assert!(matches!(backup_files(file(&bed, cut)), Err(FsError::Invalid(m)) if m.contains("Unreadable")));
        }
        assert!(matches!(backup_files(file(&bed, &tar)), Err(FsError::Invalid(m)) if m.contains("Not a tar.gz")));
        assert!(matches!(backup_files(file(&bed, b"")), Err(FsError::Invalid(_))));
    }
}
