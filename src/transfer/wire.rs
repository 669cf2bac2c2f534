//! The body of a chunk upload: frames of
//! `u16 path length, path, u32 chunk index, u32 raw length, 32-byte SHA-256 of the raw bytes,
//! u32 compressed length, zstd frame`, all integers big-endian.

use super::manifest::{Hash, CHUNK};

/// Most bytes one chunk upload may hold (a source sends batches below it).
pub const MAX_BATCH: usize = 48 << 20;

/// One chunk as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    pub path: &'a str,
    pub index: u32,
    pub raw_len: u32,
    pub hash: Hash,
    pub zstd: &'a [u8],
}

/// Appends one frame to `out`.
pub fn put(out: &mut Vec<u8>, path: &str, index: u32, raw_len: u32, hash: &Hash, zstd: &[u8]) {
    out.extend_from_slice(&(path.len() as u16).to_be_bytes());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&raw_len.to_be_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(&(zstd.len() as u32).to_be_bytes());
    out.extend_from_slice(zstd);
}

/// Splits a body into frames; `Err` names the first malformed one.
pub fn frames(mut body: &[u8]) -> Result<Vec<Frame<'_>>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let bad = |what: &str| format!("chunk frame {}: {what}", out.len());
        let (len, rest) = take(body, 2).ok_or_else(|| bad("cut short"))?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let (path, rest) = take(rest, len).ok_or_else(|| bad("cut short"))?;
        let path = std::str::from_utf8(path).map_err(|_| bad("path is not UTF-8"))?;
        let (head, rest) = take(rest, 4 + 4 + 32 + 4).ok_or_else(|| bad("cut short"))?;
        let int = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let (index, raw_len, zlen) = (int(0), int(4), int(40) as usize);
        if u64::from(raw_len) > CHUNK {
            return Err(bad("raw length past the chunk size"));
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&head[8..40]);
        let (zstd, rest) = take(rest, zlen).ok_or_else(|| bad("cut short"))?;
        out.push(Frame { path, index, raw_len, hash, zstd });
        body = rest;
    }
    Ok(out)
}

fn take(b: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (b.len() >= n).then(|| b.split_at(n))
}

/// Decompresses a frame's data, bounded by its declared raw length; `None` when the data is
/// not a zstd frame of exactly that length.
pub fn unpack(f: &Frame<'_>) -> Option<Vec<u8>> {
    let raw = zstd::bulk::decompress(f.zstd, f.raw_len as usize).ok()?;
    (raw.len() == f.raw_len as usize).then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let raw = b"hello hello hello".to_vec();
        let z = zstd::bulk::compress(&raw, 3).unwrap();
        let h = super::super::manifest::hash(&raw);
        let mut body = Vec::new();
        put(&mut body, "a/b", 7, raw.len() as u32, &h, &z);
        put(&mut body, "c", 0, raw.len() as u32, &h, &z);
        let got = frames(&body).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].path, got[0].index, got[0].hash), ("a/b", 7, h));
        assert_eq!(unpack(&got[1]).unwrap(), raw);
        assert!(frames(&body[..body.len() - 1]).unwrap_err().contains("cut short"));
        assert!(frames(&[0, 1]).is_err());
        let lying = Frame { raw_len: 3, ..frames(&body).unwrap().remove(0) };
        assert_eq!(unpack(&lying), None, "more data than declared is refused");
    }
}
