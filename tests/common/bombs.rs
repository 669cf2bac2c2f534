//! Hostile archives for the tests of every route that reads one (extract, backup upload), and
//! the daemon's peak memory to judge what they cost. Each bomb is small on the wire and
//! declares far more than it holds.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// A gzip (about 2 MB for 2 GiB) of one GNU long-name header (`L`) declaring a name of
/// `declared` bytes, then that many zeros. A reader that takes the header's word allocates
/// `declared` bytes before it can tell the name is absurd. `declared` is rounded up to MiB.
pub fn long_name_gz(declared: u64) -> Vec<u8> {
    let mib = declared.div_ceil(1 << 20);
    let header = long_name_header(mib);
    // Each deflate segment is fully flushed, so one MiB of zeros compresses to the same bytes
    // every time: compressed once, repeated.
    let mut deflate = Compress::new(Compression::best(), false);
    let head = segment(&mut deflate, &header, FlushCompress::Full);
    let zeros = vec![0u8; 1 << 20];
    let mib_of_zeros = segment(&mut deflate, &zeros, FlushCompress::Full);
    let end = segment(&mut deflate, &[], FlushCompress::Finish);
    let mut crc = Crc::new();
    crc.update(&header);
    let mut zero_crc = Crc::new();
    zero_crc.update(&zeros);
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    gz.extend_from_slice(&head);
    for _ in 0..mib {
        gz.extend_from_slice(&mib_of_zeros);
        crc.combine(&zero_crc);
    }
    gz.extend_from_slice(&end);
    gz.extend_from_slice(&crc.sum().to_le_bytes());
    gz.extend_from_slice(&crc.amount().to_le_bytes());
    gz
}

/// [`long_name_gz`] as zstd (about 64 KiB for 2 GiB: zstd stores a block of zeros as one byte
/// repeated). `declared` is rounded up to MiB.
pub fn long_name_zst(declared: u64) -> Vec<u8> {
    use std::io::Write;
    let mib = declared.div_ceil(1 << 20);
    let mut zst = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd encoder");
    zst.write_all(&long_name_header(mib)).expect("zstd");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..mib {
        zst.write_all(&zeros).expect("zstd");
    }
    zst.finish().expect("zstd")
}

/// A GNU long-name header (`L`) declaring a name of `mib` MiB.
fn long_name_header(mib: u64) -> [u8; 512] {
    let mut header = [0u8; 512];
    header[..13].copy_from_slice(b"././@LongLink");
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", mib << 20).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'L';
    header[257..265].copy_from_slice(b"ustar  \0");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    header
}

/// Raw deflate of `input` ending with `flush`.
fn segment(c: &mut Compress, input: &[u8], flush: FlushCompress) -> Vec<u8> {
    let (start_in, mut out) = (c.total_in(), Vec::with_capacity(64 * 1024));
    loop {
        let used = usize::try_from(c.total_in() - start_in).unwrap();
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let status = c.compress_vec(&input[used..], &mut out, flush).expect("deflate");
        let all_in = usize::try_from(c.total_in() - start_in).unwrap() == input.len();
        if status == Status::StreamEnd || (all_in && flush != FlushCompress::Finish && out.len() < out.capacity()) {
            return out;
        }
    }
}

/// A small, otherwise valid zip (one stored file, `a.txt`) whose ZIP64 end record claims
/// `entries` entries: a reader that reserves room for what the directory claims, or reads
/// that many records, is made to.
pub fn zip_claiming(entries: u64) -> Vec<u8> {
    let name = b"a.txt";
    let data = b"hi";
    let mut crc = Crc::new();
    crc.update(data);
    let crc = crc.sum().to_le_bytes();
    let mut z = Vec::new();
    // Local file header.
    z.extend_from_slice(b"PK\x03\x04");
    z.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
    z.extend_from_slice(&crc);
    z.extend_from_slice(&(data.len() as u32).to_le_bytes());
    z.extend_from_slice(&(data.len() as u32).to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&[0, 0]);
    z.extend_from_slice(name);
    z.extend_from_slice(data);
    // Central directory: the one entry.
    let cd_start = z.len() as u64;
    z.extend_from_slice(b"PK\x01\x02");
    z.extend_from_slice(&[0x1e, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]);
    z.extend_from_slice(&crc);
    z.extend_from_slice(&(data.len() as u32).to_le_bytes());
    z.extend_from_slice(&(data.len() as u32).to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    z.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
    z.extend_from_slice(&0u32.to_le_bytes());
    z.extend_from_slice(name);
    let cd_size = z.len() as u64 - cd_start;
    // ZIP64 end of central directory record, claiming `entries`.
    let record = z.len() as u64;
    z.extend_from_slice(b"PK\x06\x06");
    z.extend_from_slice(&44u64.to_le_bytes());
    z.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    z.extend_from_slice(&entries.to_le_bytes());
    z.extend_from_slice(&entries.to_le_bytes());
    z.extend_from_slice(&cd_size.to_le_bytes());
    z.extend_from_slice(&cd_start.to_le_bytes());
    // Its locator, then the classic end record deferring to it.
    z.extend_from_slice(b"PK\x06\x07");
    z.extend_from_slice(&0u32.to_le_bytes());
    z.extend_from_slice(&record.to_le_bytes());
    z.extend_from_slice(&1u32.to_le_bytes());
    z.extend_from_slice(b"PK\x05\x06");
    z.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
    z
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}
