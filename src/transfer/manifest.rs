//! The manifest a source sends: every name of a volume's tree with the SHA-256 of each
//! [`CHUNK`] of each file; and the one digest of a whole tree both sides compare at the end.

use std::collections::HashMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::vfs::{FsError, Kind, Node, Root};

/// Files are compared and sent in pieces of this many bytes (the last one shorter).
pub const CHUNK: u64 = 1 << 20;

pub type Hash = [u8; 32];

/// What a name is, as the wire says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One name of the source's tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub mode: u32,
    #[serde(default)]
    pub mtime: i64,
    #[serde(default)]
    pub mtime_ns: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// SHA-256 of each chunk, hex; `ceil(size / CHUNK)` of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
}

impl Entry {
    /// How many chunks a file of this size has.
    pub fn chunk_count(&self) -> u64 {
        self.size.div_ceil(CHUNK)
    }
}

/// How many bytes chunk `index` of a file of `size` bytes holds.
pub fn chunk_len(size: u64, index: u64) -> u64 {
    size.saturating_sub(index * CHUNK).min(CHUNK)
}

pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Hash> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

pub fn hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// Hashes every chunk of an open file, up to `size` bytes.
pub fn hash_file(file: &mut std::fs::File, size: u64) -> Result<Vec<Hash>, FsError> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut out = Vec::with_capacity(size.div_ceil(CHUNK) as usize);
    let mut buf = vec![0u8; CHUNK as usize];
    for i in 0..size.div_ceil(CHUNK) {
        let want = chunk_len(size, i) as usize;
        let got = read_full(file, &mut buf[..want])?;
        out.push(hash(&buf[..got]));
    }
    Ok(out)
}

/// Reads until `buf` is full or the file ends; how many bytes were read.
pub fn read_full(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The source's memory of the files it hashed: a file whose size, time, inode and change
/// time are unchanged since is not read again (each round rescans the tree).
#[derive(Default)]
pub struct Scanner {
    seen: HashMap<String, (Stamp, Vec<Hash>)>,
}

/// What a file's hashes were taken at: size, modification time, inode and change time.
type Stamp = (u64, (i64, u32), (u64, i64, i64));

impl Scanner {
    /// The manifest of the tree under `root` now.
    pub fn scan(&mut self, root: &Root) -> Result<Vec<Entry>, FsError> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for node in root.nodes()? {
            let kind = match node.kind {
                Kind::File => EntryKind::File,
                Kind::Dir => EntryKind::Dir,
                Kind::Symlink => EntryKind::Symlink,
                Kind::Other => continue,
            };
            let mut entry = entry_of(&node, kind);
            if kind == EntryKind::File {
                let key = (node.size, node.mtime, node.stamp);
                let hashes = match self.seen.remove(&node.path) {
                    Some((stamp, h)) if stamp == key => h,
                    _ => match root.open_read(&node.path) {
                        Ok((mut f, _)) => hash_file(&mut f, node.size)?,
                        // Gone since the walk: the next round sees what took its place.
                        Err(FsError::NotFound) => continue,
                        Err(e) => return Err(e),
                    },
                };
                entry.chunks = hashes.iter().map(hex).collect();
                seen.insert(node.path.clone(), (key, hashes));
            }
            out.push(entry);
        }
        self.seen = seen;
        Ok(out)
    }
}

fn entry_of(node: &Node, kind: EntryKind) -> Entry {
    Entry {
        path: node.path.clone(),
        kind,
        size: if kind == EntryKind::File { node.size } else { 0 },
        mode: node.mode,
        mtime: node.mtime.0,
        mtime_ns: node.mtime.1,
        target: node.target.clone(),
        chunks: Vec::new(),
    }
}

/// One digest of a whole tree: kind, path, size, permission bits, symlink target and chunk
/// hashes of every name, in path order (times are left out: writing a file changes its own).
pub fn digest(entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for e in sorted {
        let line = format!(
            "{:?}\0{}\0{}\0{:o}\0{}\0{}\n",
            e.kind,
            e.path,
            e.size,
            e.mode,
            e.target.as_deref().unwrap_or(""),
            e.chunks.join(",")
        );
        h.update(line.as_bytes());
    }
    hex(&h.finalize().into())
}

/// The entry of `node` with its chunk hashes, for the target's side of the digest.
pub fn entry_with(node: &Node, hashes: &[Hash]) -> Option<Entry> {
    let kind = match node.kind {
        Kind::File => EntryKind::File,
        Kind::Dir => EntryKind::Dir,
        Kind::Symlink => EntryKind::Symlink,
        Kind::Other => return None,
    };
    let mut e = entry_of(node, kind);
    e.chunks = hashes.iter().map(hex).collect();
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_chunks_split_sizes() {
        let h = hash(b"abc");
        assert_eq!(unhex(&hex(&h)), Some(h));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
        assert_eq!((chunk_len(0, 0), chunk_len(CHUNK + 5, 1), chunk_len(CHUNK + 5, 0)), (0, 5, CHUNK));
    }

    /// The digest changes with any content, mode, name or target, not with order or times.
    #[test]
    fn the_digest_sees_content_not_order_or_time() {
        let file = |path: &str, c: &str| Entry {
            path: path.into(),
            kind: EntryKind::File,
            size: 3,
            mode: 0o644,
            mtime: 1,
            mtime_ns: 0,
            target: None,
            chunks: vec![c.into()],
        };
        let a = vec![file("a", "1"), file("b", "2")];
        let base = digest(&a);
        assert_eq!(digest(&[a[1].clone(), a[0].clone()]), base);
        assert_eq!(digest(&[Entry { mtime: 9, ..a[0].clone() }, a[1].clone()]), base);
        assert_ne!(digest(&[file("a", "3"), a[1].clone()]), base);
        assert_ne!(digest(&[Entry { mode: 0o600, ..a[0].clone() }, a[1].clone()]), base);
        assert_ne!(digest(&a[..1]), base);
    }
}
