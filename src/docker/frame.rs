//! Docker's multiplexed stream format: each frame is an 8-byte header
//! `[stream, 0, 0, 0, size(u32 big-endian)]` followed by `size` bytes of payload.
//! Chunks from the socket split and join frames arbitrarily; [`Demuxer`] reassembles them.

/// Which output a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdin,
    Stdout,
    Stderr,
}

/// Incremental frame parser: push chunks in, take whole frames out.
#[derive(Debug, Default)]
pub struct Demuxer {
    buf: Vec<u8>,
    pos: usize,
}

impl Demuxer {
    pub fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, if one is buffered. Unknown stream types are read as stdout
    /// so a newer engine never stalls the console.
    pub fn next_frame(&mut self) -> Option<(Stream, Vec<u8>)> {
        let rest = &self.buf[self.pos..];
        if rest.len() < 8 {
            self.compact();
            return None;
        }
        let size = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        if rest.len() < 8 + size {
            self.compact();
            return None;
        }
        let stream = match rest[0] {
            0 => Stream::Stdin,
            2 => Stream::Stderr,
            _ => Stream::Stdout,
        };
        let payload = rest[8..8 + size].to_vec();
        self.pos += 8 + size;
        Some((stream, payload))
    }

    /// Bytes held for a frame not yet complete.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn all(d: &mut Demuxer) -> Vec<(Stream, Vec<u8>)> {
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    #[test]
    fn joined_frames_in_one_chunk() {
        let mut bytes = frame(1, b"hello\n");
        bytes.extend(frame(2, b"oops\n"));
        bytes.extend(frame(1, b""));
        let mut d = Demuxer::default();
        d.push(&bytes);
        assert_eq!(
            all(&mut d),
            vec![(Stream::Stdout, b"hello\n".to_vec()), (Stream::Stderr, b"oops\n".to_vec()), (Stream::Stdout, vec![]),]
        );
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn frames_split_at_every_byte() {
        let mut bytes = frame(1, b"first line\n");
        bytes.extend(frame(2, &[b'x'; 300]));
        for cut in 0..=bytes.len() {
            let mut d = Demuxer::default();
            d.push(&bytes[..cut]);
            let mut got = all(&mut d);
            d.push(&bytes[cut..]);
            got.extend(all(&mut d));
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0], (Stream::Stdout, b"first line\n".to_vec()));
            assert_eq!(got[1], (Stream::Stderr, vec![b'x'; 300]));
        }
    }

    #[test]
    fn byte_by_byte() {
        let bytes = [frame(1, b"a"), frame(2, b"bc"), frame(1, b"def")].concat();
        let mut d = Demuxer::default();
        let mut got = Vec::new();
        for b in &bytes {
            d.push(std::slice::from_ref(b));
            got.extend(all(&mut d));
        }
        let payloads: Vec<_> = got.into_iter().map(|(_, p)| p).collect();
        assert_eq!(payloads, vec![b"a".to_vec(), b"bc".to_vec(), b"def".to_vec()]);
    }
}
