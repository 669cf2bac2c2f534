//! Reading long-lived engine answers: body chunks as they arrive, split into lines.

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};

use super::frame::{Demuxer, Stream};
use super::DockerError;

/// A streaming body read chunk by chunk (hyper has already undone the chunked encoding).
pub struct Chunks(pub Incoming);

impl Chunks {
    /// The next data chunk; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Result<Bytes, DockerError>> {
        loop {
            match self.0.frame().await? {
                Err(e) => return Some(Err(DockerError::Unreachable(format!("stream broke: {e}")))),
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
            }
        }
    }
}

/// Splits a byte stream into text lines. `\r\n` and `\n` end a line; a lone `\r` (progress
/// bars) too. A line longer than `max` bytes is cut into pieces so memory stays bounded.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// The previous byte ended a line (`\r`, or a cut at `max`), so a `\n` now ends nothing new.
    skip_lf: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter { buf: Vec::new(), max: max.max(1), skip_lf: false }
    }

    /// Feeds `bytes`, calling `emit` for each complete line (without its terminator).
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(String)) {
        for &b in bytes {
            let skip_lf = std::mem::replace(&mut self.skip_lf, b == b'\r');
            match b {
                b'\n' if skip_lf => {}
                b'\n' | b'\r' => emit(self.take()),
                _ => {
                    self.buf.push(b);
                    if self.buf.len() >= self.max {
                        emit(self.take());
                        self.skip_lf = true;
                    }
                }
            }
        }
    }

    /// Whatever is left without a terminator (at the end of a stream).
    pub fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        line
    }
}

/// Multiplexed stdout/stderr frames as text lines, one splitter per stream so a partial
/// stdout line never merges with stderr.
pub struct OutputLines {
    demux: Demuxer,
    out: LineSplitter,
    err: LineSplitter,
}

impl OutputLines {
    pub fn new(max_line: usize) -> OutputLines {
        OutputLines { demux: Demuxer::default(), out: LineSplitter::new(max_line), err: LineSplitter::new(max_line) }
    }

    /// Feeds raw bytes from the engine, calling `emit` for each complete line.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(String)) {
        self.demux.push(bytes);
        while let Some((stream, payload)) = self.demux.next_frame() {
            let splitter = if stream == Stream::Stderr { &mut self.err } else { &mut self.out };
            splitter.push(&payload, &mut emit);
        }
    }

    /// The unterminated rest of each stream, at the end.
    pub fn finish(&mut self, emit: impl FnMut(String)) {
        self.out.finish().into_iter().chain(self.err.finish()).for_each(emit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn terminators_and_chunk_borders() {
        assert_eq!(split(&[b"a\nb\r\nc"], 100), vec!["a", "b", "c"]);
        assert_eq!(split(&[b"a\r", b"\nb\n"], 100), vec!["a", "b"]);
        assert_eq!(split(&[b"10%\r20%\r", b"done\n"], 100), vec!["10%", "20%", "done"]);
        assert_eq!(split(&[b"\n\n"], 100), vec!["", ""]);
        assert_eq!(split(&[b"hel", b"lo\n"], 100), vec!["hello"]);
    }

    #[test]
    fn long_lines_are_cut() {
        assert_eq!(split(&[b"abcdefg\n"], 3), vec!["abc", "def", "g"]);
        assert_eq!(split(&[b"abc\ndef"], 3), vec!["abc", "def"]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(split(&[b"a\xffb\n"], 100), vec!["a\u{fffd}b"]);
    }
}
