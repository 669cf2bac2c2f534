//! A console line as the ring keeps it: encoded once, when it is read from Docker, as the
//! complete WebSocket frame every viewer sends (`{"event":"console output","args":["..."]}`
//! behind its frame header). A thousand viewers copy the same bytes; nobody escapes JSON per
//! viewer. Tails, REST logs and attach take the line back out of the frame.

use std::sync::OnceLock;
use std::time::Instant;

/// What comes before the line's JSON string in the frame's payload.
const PREFIX: &[u8] = br#"{"event":"console output","args":["#;
/// What comes after it.
const SUFFIX: &[u8] = b"]}";

/// The encoded frame of `text`.
pub fn encode(text: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(PREFIX.len() + text.len() + 8);
    payload.extend_from_slice(PREFIX);
    // Writing JSON of a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut payload, text);
    payload.extend_from_slice(SUFFIX);
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame_header(&mut frame, 0x1, payload.len());
    frame.extend_from_slice(&payload);
    frame
}

/// The encoded frame of a line whose JSON string literal (quotes included) is `literal`, as
/// a journal keeps it.
pub fn frame_of_literal(literal: &[u8]) -> Vec<u8> {
    let len = PREFIX.len() + literal.len() + SUFFIX.len();
    let mut frame = Vec::with_capacity(len + 10);
    frame_header(&mut frame, 0x1, len);
    frame.extend_from_slice(PREFIX);
    frame.extend_from_slice(literal);
    frame.extend_from_slice(SUFFIX);
    frame
}

/// The encoded frame of `text`, the text cut (on a character boundary) until the frame is at
/// most `max` bytes: a ring keeps frames whole only up to its `max_line`.
pub fn encode_within(text: &str, max: usize) -> Vec<u8> {
    let mut text = text;
    loop {
        let frame = encode(text);
        if frame.len() <= max || text.is_empty() {
            return frame;
        }
        // Every byte of text cut shortens the frame by at least one byte.
        text = super::pump::prefix(text, text.len().saturating_sub(frame.len() - max));
    }
}

/// Appends the header of a final (unfragmented) server frame of `opcode` and `len` bytes.
pub fn frame_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// The line's JSON string literal (quotes included) inside an encoded frame.
pub fn literal(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    let start = header + PREFIX.len();
    let end = frame.len().saturating_sub(SUFFIX.len());
    frame.get(start..end).unwrap_or(b"\"\"")
}

/// The line's text.
pub fn text(frame: &[u8]) -> String {
    serde_json::from_slice(literal(frame)).unwrap_or_default()
}

/// A JSON array of the lines of `frames` (`["a","b"]`), built from their literals.
pub fn json_array<'a>(frames: impl IntoIterator<Item = &'a Vec<u8>>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, f) in frames.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(literal(f));
    }
    out.push(b']');
}

/// Nanoseconds on a clock of this process: when a line was pushed, to time its delivery.
pub fn now_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for text in
            ["", "hello", "a \"quoted\" \\ line\twith\u{1} control", "é€😀", &"x".repeat(200), &"y".repeat(70_000)]
        {
            let frame = encode(text);
            assert_eq!(frame[0], 0x81);
            let header = match frame[1] {
                126 => 4,
                127 => 10,
                n => {
                    assert_eq!(n as usize, frame.len() - 2);
                    2
                }
            };
            let v: serde_json::Value = serde_json::from_slice(&frame[header..]).unwrap();
            assert_eq!(v, serde_json::json!({"event": "console output", "args": [text]}));
            assert_eq!(text, super::text(&frame));
        }
        for max in [40, 64, 200, 1000] {
            let frame = encode_within(&"\u{1}é".repeat(100), max);
            assert!(frame.len() <= max.max(encode("").len()), "{max}: {}", frame.len());
            assert!("\u{1}é".repeat(100).starts_with(&super::text(&frame)));
        }
        for text in ["", "a \"b\"", &"z".repeat(70_000)] {
            let frame = encode(text);
            assert_eq!(frame_of_literal(literal(&frame)), frame);
        }
        let mut out = Vec::new();
        json_array(&[encode("a"), encode("b\"")], &mut out);
        assert_eq!(out, br#"["a","b\""]"#);
    }
}
