//! Server-to-client WebSocket frames, written by hand: an unmasked server frame is a two to ten
//! byte header and the payload, so a batch of console lines becomes one buffer and one write.
//! And the JSON of API.md's frames, `{"event": name, "args": [strings]}`.

use crate::console::line;

/// Opcodes lightd sends.
pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Appends one final (unfragmented) frame of `opcode` carrying `payload`.
pub fn push(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    line::frame_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// A close frame with `code` and a reason (cut to fit a control frame).
pub fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    let mut out = Vec::with_capacity(payload.len() + 2);
    push(&mut out, CLOSE, &payload);
    out
}

/// Appends a JSON string (quoted and escaped).
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing JSON of a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The JSON text `{"event": name, "args": [..]}`.
pub fn event_json<S: AsRef<str>>(name: &str, args: &[S]) -> Vec<u8> {
    let mut json = Vec::with_capacity(32 + args.iter().map(|a| a.as_ref().len() + 3).sum::<usize>());
    json.extend_from_slice(b"{\"event\":");
    string(&mut json, name);
    json.extend_from_slice(b",\"args\":[");
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        string(&mut json, a.as_ref());
    }
    json.extend_from_slice(b"]}");
    json
}

/// Appends the `logs` frame of console lines kept as encoded frames (their JSON strings are
/// copied, not escaped again).
pub fn logs(out: &mut Vec<u8>, lines: &[Vec<u8>]) {
    let mut json = Vec::with_capacity(32 + lines.iter().map(Vec::len).sum::<usize>());
    json.extend_from_slice(br#"{"event":"logs","args":"#);
    line::json_array(lines, &mut json);
    json.push(b'}');
    push(out, TEXT, &json);
}

/// Appends a text frame holding the event.
pub fn event<S: AsRef<str>>(out: &mut Vec<u8>, name: &str, args: &[S]) {
    push(out, TEXT, &event_json(name, args));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_for_every_length_class() {
        for (len, header) in [(0usize, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            push(&mut out, TEXT, &vec![b'a'; len]);
            assert_eq!(out.len(), header + len, "{len}");
            assert_eq!(out[0], 0x81);
        }
        let c = close(1000, &"é".repeat(100));
        assert!(c.len() <= 127 && c[0] == 0x88);
        assert!(std::str::from_utf8(&c[4..]).is_ok(), "cut on a character boundary");
    }

    #[test]
    fn logs_frame_copies_the_lines() {
        let mut out = Vec::new();
        logs(&mut out, &[line::encode("a\"b"), line::encode("")]);
        let v: serde_json::Value = serde_json::from_slice(&out[2..]).unwrap();
        assert_eq!(v, serde_json::json!({"event": "logs", "args": ["a\"b", ""]}));
    }

    #[test]
    fn event_json_is_the_api_shape() {
        let v: serde_json::Value = serde_json::from_slice(&event_json("console output", &["a \"q\"", "b\n"])).unwrap();
        assert_eq!(v, serde_json::json!({"event": "console output", "args": ["a \"q\"", "b\n"]}));
        let empty: &[&str] = &[];
        assert_eq!(event_json("auth success", empty), br#"{"event":"auth success","args":[]}"#);
    }
}
