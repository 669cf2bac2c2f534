//! The client side of a console session: a reader task that turns the client's frames into
//! messages (RFC 6455 framing read by hand into a buffer that stays small while the viewer
//! only watches: a thousand viewers should not each hold 8 KiB for the few commands they
//! type), with the size limit and the pongs and close echoes the protocol obliges; the two
//! accepted message shapes; and the per-connection rate limit.

use std::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::frames;

/// Largest inbound message (also across fragments).
pub const MAX_INBOUND: usize = 32 * 1024;
/// Largest frame read whole before refusing it, so a modestly oversized message still gets
/// a clean 1009 close instead of a reset; anything larger is cut off mid-frame.
pub const MAX_FRAME_READ: usize = 4 * MAX_INBOUND;
/// What the read buffer grows by, and shrinks back to after a big frame.
const READ_CHUNK: usize = 256;
/// Inbound messages per second allowed, and the burst above it.
const RATE: f64 = 20.0;
const BURST: f64 = 40.0;
/// Frames of any kind per second (pings, pongs and fragments included), and the burst: a
/// ping or fragment flood would otherwise cost a pong or a wake-up each, past the message limit.
pub const FRAME_RATE: f64 = 100.0;
const FRAME_BURST: f64 = 200.0;

/// What the reader task reports.
pub enum Inbound {
    Text(String),
    /// A frame the protocol obliges us to send (pong, close echo), already encoded.
    Send {
        frame: Vec<u8>,
        close: bool,
    },
    /// Any sign of life (pong, ping).
    Alive,
    TooBig,
    NotUtf8,
    /// The client broke the framing rules: the session closes with 1002.
    Protocol(&'static str),
    /// Data that is not what its frame says (a close reason that is not UTF-8): 1007.
    Invalid(&'static str),
    /// The client sent frames faster than `FRAME_RATE`: the session closes with 1008.
    Flood,
    /// The answer to a request handled in the background.
    Reply(Vec<u8>),
}

/// One client frame's header.
#[derive(Debug, PartialEq)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes, then payload bytes.
    size: usize,
    len: usize,
}

/// What a header says about the frame: `Ok(None)` while more bytes are needed.
fn header(buf: &[u8]) -> Result<Option<Header>, Inbound> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(Inbound::Protocol("reserved bits set (no extension was agreed)"));
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    let control = opcode & 0x8 != 0;
    if !matches!(opcode, 0x0..=0x2 | frames::CLOSE | frames::PING | frames::PONG) {
        return Err(Inbound::Protocol("unknown opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(Inbound::Protocol("client frames must be masked"));
    }
    let (extra, short) = match b1 & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(n as usize)),
    };
    let size = 2 + extra + 4;
    if buf.len() < size {
        return Ok(None);
    }
    let len = match short {
        Some(n) => n,
        None => buf[2..2 + extra].iter().fold(0u64, |n, b| n << 8 | u64::from(*b)).try_into().unwrap_or(usize::MAX),
    };
    if control && (!fin || len > 125) {
        return Err(Inbound::Protocol("control frames must be whole and at most 125 bytes"));
    }
    if len >= MAX_FRAME_READ {
        return Err(Inbound::TooBig);
    }
    let mut mask = [0; 4];
    mask.copy_from_slice(&buf[size - 4..size]);
    Ok(Some(Header { fin, opcode, mask, size, len }))
}

/// Reads one whole frame into `buf`: its header and where its payload ends (`Err`: the
/// message that ends the session; `None` in it: the peer left).
async fn next_frame<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut Vec<u8>) -> Result<Header, Option<Inbound>> {
    loop {
        if let Some(h) = header(buf).map_err(Some)? {
            if buf.len() >= h.size + h.len {
                return Ok(h);
            }
            buf.reserve(h.size + h.len - buf.len());
        } else {
            buf.reserve(READ_CHUNK);
        }
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
}

/// Reads frames until the peer leaves; reassembles fragments up to `MAX_INBOUND`.
pub async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, to_session: mpsc::Sender<Inbound>) {
    let mut buf = Vec::new();
    let mut partial: Option<Vec<u8>> = None;
    let mut frames_left = Bucket::new(FRAME_RATE, FRAME_BURST);
    loop {
        let h = match next_frame(&mut rd, &mut buf).await {
            Ok(h) if frames_left.take() => h,
            Ok(_) => {
                let _ = to_session.send(Inbound::Flood).await;
                // Take what else comes while the close goes out (the session stops this within
                // a second): closing on unread bytes would reset the socket and lose the close.
                let mut sink = [0u8; 1024];
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Err(None) => return,
            Err(Some(end)) => {
                let _ = to_session.send(end).await;
                return;
            }
        };
        let payload = &mut buf[h.size..h.size + h.len];
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= h.mask[i % 4];
        }
        let payload = &buf[h.size..h.size + h.len];
        let msg = match (h.opcode, &mut partial) {
            (frames::PING, _) => {
                let mut frame = Vec::with_capacity(payload.len() + 2);
                frames::push(&mut frame, frames::PONG, payload);
                Inbound::Send { frame, close: false }
            }
            // A valid close is echoed with its status code.
            (frames::CLOSE, _) => match check_close(payload) {
                Err(end) => end,
                Ok(()) => {
                    let mut frame = Vec::with_capacity(4);
                    frames::push(&mut frame, frames::CLOSE, &payload[..payload.len().min(2)]);
                    Inbound::Send { frame, close: true }
                }
            },
            (frames::PONG, _) => Inbound::Alive,
            (0x0, None) => Inbound::Protocol("a continuation frame with no message to continue"),
            (0x1 | 0x2, Some(_)) => Inbound::Protocol("a new message before the last one ended"),
            (_, acc) => {
                let whole = acc.get_or_insert_with(Vec::new);
                whole.extend_from_slice(payload);
                if whole.len() > MAX_INBOUND {
                    Inbound::TooBig
                } else if !h.fin {
                    Inbound::Alive
                } else {
                    match String::from_utf8(partial.take().unwrap_or_default()) {
                        Ok(t) => Inbound::Text(t),
                        Err(_) => Inbound::NotUtf8,
                    }
                }
            }
        };
        buf.drain(..h.size + h.len);
        // A big frame's buffer is let go once it is read.
        if buf.capacity() > 4 * READ_CHUNK && buf.len() <= READ_CHUNK {
            buf.shrink_to(READ_CHUNK);
        }
        let stop = matches!(
            msg,
            Inbound::TooBig | Inbound::Protocol(_) | Inbound::Invalid(_) | Inbound::Send { close: true, .. }
        );
        if to_session.send(msg).await.is_err() || stop {
            return;
        }
    }
}

/// Whether a client's close frame is one the protocol allows (RFC 6455 5.5.1, 7.4): no
/// payload, or a two-byte code a peer may send and a UTF-8 reason.
fn check_close(payload: &[u8]) -> Result<(), Inbound> {
    let [hi, lo, reason @ ..] = payload else {
        return match payload.is_empty() {
            true => Ok(()),
            false => Err(Inbound::Protocol("a close frame's code is two bytes")),
        };
    };
    if !close_code_allowed(u16::from_be_bytes([*hi, *lo])) {
        return Err(Inbound::Protocol("close code not allowed on the wire"));
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(Inbound::Invalid("a close reason must be UTF-8"));
    }
    Ok(())
}

/// The close codes a peer may send: RFC 6455's (1004-1006 and 1015 are reserved, never sent),
/// those IANA registered since (1012-1014), and the ranges for libraries and applications.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The close a session ends with for a message that ends it (`None` for any other).
pub fn ending(msg: &Inbound) -> Option<(u16, String)> {
    match msg {
        Inbound::TooBig => Some((1009, "message too big".into())),
        Inbound::Protocol(why) => Some((1002, (*why).into())),
        Inbound::Invalid(why) => Some((1007, (*why).into())),
        Inbound::Flood => Some((1008, format!("too many frames: at most {FRAME_RATE} a second"))),
        _ => None,
    }
}

/// An inbound message in either accepted shape: `{"event": name, "args": [..]}` or the
/// shorthand `{name: [..]}`.
pub fn parse(text: &str) -> Result<(String, Vec<String>), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("a message must be a JSON object")?;
    let (name, args) = match (obj.get("event"), obj.len()) {
        (Some(Value::String(name)), _) => (name.clone(), obj.get("args").cloned().unwrap_or(Value::Array(vec![]))),
        (Some(_), _) => return Err("event must be a string".into()),
        (None, 1) => {
            let (k, v) = obj.iter().next().ok_or("empty message")?;
            (k.clone(), v.clone())
        }
        (None, _) => return Err("a message needs \"event\" and \"args\"".into()),
    };
    let args = match args {
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err("every arg must be a string"),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("args must be an array of strings".into()),
    };
    Ok((name, args))
}

/// A token bucket: `rate` per second, `burst` at most (by default the message limit, `RATE`
/// and `BURST`).
pub struct Bucket {
    tokens: f64,
    at: Instant,
    rate: f64,
    burst: f64,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket::new(RATE, BURST)
    }
}

impl Bucket {
    pub fn new(rate: f64, burst: f64) -> Bucket {
        Bucket { tokens: burst, at: Instant::now(), rate, burst }
    }

    /// Takes one token; false when the message must be dropped.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let mut b = Bucket::new(0.0, 3.0);
        assert_eq!([b.take(), b.take(), b.take(), b.take()], [true, true, true, false]);
        let mut b = Bucket::new(1e9, 1.0);
        assert!(b.take());
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(b.take(), "refilled at its rate");
    }

    #[test]
    fn both_message_shapes() {
        assert_eq!(
            parse(r#"{"event":"send_command","args":["say hi"]}"#).unwrap(),
            ("send_command".into(), vec!["say hi".into()])
        );
        assert_eq!(parse(r#"{"power":["start"]}"#).unwrap(), ("power".into(), vec!["start".into()]));
        assert_eq!(parse(r#"{"event":"request_logs"}"#).unwrap(), ("request_logs".into(), vec![]));
        assert!(parse("not json").unwrap_err().contains("invalid JSON"));
        assert!(parse("[1]").is_err());
        assert!(parse(r#"{"event":5}"#).is_err());
        assert!(parse(r#"{"event":"power","args":[1]}"#).is_err());
        assert!(parse(r#"{"a":[],"b":[]}"#).is_err());
        assert!(parse(r#"{"power":"start"}"#).is_err());
    }

    /// A masked client frame of `opcode` carrying `payload`.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn a_ping_flood_gets_the_burst_of_pongs_then_ends() {
        // 300 masked empty pings at once: 200 answered, then the session is told.
        let got = read_all([0x89, 0x80, 0, 0, 0, 0].repeat(300));
        assert_eq!(got.len(), 201, "{got:?}");
        assert!(got[..200].iter().all(|g| g == "send [8a, 00] close=false"), "{:?}", &got[..3]);
        assert_eq!(got[200], "flood");
    }

    /// What the reader reports for `bytes` sent by a client that then leaves.
    fn read_all(bytes: Vec<u8>) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (tx, mut rx) = mpsc::channel(1024);
            read_loop(&bytes[..], tx).await;
            let mut got = Vec::new();
            while let Ok(m) = rx.try_recv() {
                got.push(match m {
                    Inbound::Text(t) => format!("text {t}"),
                    Inbound::Send { frame, close } => format!("send {:02x?} close={close}", &frame[..2]),
                    Inbound::Alive => "alive".into(),
                    Inbound::TooBig => "too big".into(),
                    Inbound::NotUtf8 => "not utf-8".into(),
                    Inbound::Protocol(why) => format!("protocol: {why}"),
                    Inbound::Invalid(why) => format!("invalid: {why}"),
                    Inbound::Flood => "flood".into(),
                    Inbound::Reply(_) => "reply".into(),
                });
            }
            got
        })
    }

    #[test]
    fn frames_are_unmasked_and_fragments_joined() {
        let mut bytes = client_frame(true, 0x1, b"hello");
        bytes.extend(client_frame(false, 0x1, b"a "));
        bytes.extend(client_frame(true, frames::PING, b"p"));
        bytes.extend(client_frame(true, 0x0, &vec![b'b'; 300]));
        bytes.extend(client_frame(true, frames::PONG, b""));
        bytes.extend(client_frame(true, 0x1, &[0xff]));
        bytes.extend(client_frame(true, frames::CLOSE, &1000u16.to_be_bytes()));
        bytes.extend(client_frame(true, 0x1, b"after close"));
        let got = read_all(bytes);
        assert_eq!(got[0], "text hello");
        assert_eq!(got[1], "alive", "a fragment is a sign of life");
        assert_eq!(got[2], "send [8a, 01] close=false", "a ping is answered with its payload");
        assert_eq!(got[3], format!("text a {}", "b".repeat(300)));
        assert_eq!(got[4..], ["alive", "not utf-8", "send [88, 02] close=true"], "nothing is read after a close");
    }

    #[test]
    fn close_codes_and_reasons_are_checked() {
        let close = |payload: &[u8]| read_all(client_frame(true, frames::CLOSE, payload));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert_eq!(close(&code.to_be_bytes()), ["protocol: close code not allowed on the wire"], "{code}");
        }
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4001, 4999] {
            assert_eq!(close(&code.to_be_bytes()), ["send [88, 02] close=true"], "{code}");
        }
        assert_eq!(close(&[]), ["send [88, 00] close=true"], "no code at all is allowed");
        assert_eq!(close(&[0x03]), ["protocol: a close frame's code is two bytes"]);
        assert_eq!(close(&[0x03, 0xe8, 0xc3, 0xa9]), ["send [88, 02] close=true"], "a UTF-8 reason");
        assert_eq!(close(&[0x03, 0xe8, b'a', 0xc3]), ["invalid: a close reason must be UTF-8"]);
        assert_eq!(ending(&Inbound::Invalid("x")), Some((1007, "x".into())));
        assert_eq!(ending(&Inbound::Protocol("y")), Some((1002, "y".into())));
        assert_eq!(ending(&Inbound::Alive), None);
    }

    #[test]
    fn broken_framing_ends_the_session() {
        let unmasked = vec![0x81, 0x01, b'x'];
        assert_eq!(read_all(unmasked), ["protocol: client frames must be masked"]);
        assert_eq!(read_all(client_frame(true, 0x3, b"")), ["protocol: unknown opcode"]);
        assert_eq!(read_all(vec![0xc1, 0x80, 0, 0, 0, 0]), ["protocol: reserved bits set (no extension was agreed)"]);
        let long_ping = client_frame(true, frames::PING, &[0; 126]);
        assert_eq!(read_all(long_ping), ["protocol: control frames must be whole and at most 125 bytes"]);
        assert_eq!(
            read_all(client_frame(true, 0x0, b"x")),
            ["protocol: a continuation frame with no message to continue"]
        );
        let mut interleaved = client_frame(false, 0x1, b"a");
        interleaved.extend(client_frame(true, 0x1, b"b"));
        assert_eq!(read_all(interleaved), ["alive", "protocol: a new message before the last one ended"]);
    }

    #[test]
    fn oversized_frames_and_messages_are_refused() {
        // Refused from the header alone: nothing of the payload needs to arrive.
        let huge = client_frame(true, 0x1, &vec![b'x'; MAX_FRAME_READ]);
        assert_eq!(read_all(huge[..14].to_vec()), ["too big"]);
        assert_eq!(read_all(client_frame(true, 0x1, &vec![b'x'; MAX_INBOUND + 1])), ["too big"]);
        let mut split = client_frame(false, 0x1, &vec![b'x'; MAX_INBOUND]);
        split.extend(client_frame(true, 0x0, b"y"));
        assert_eq!(read_all(split), ["alive", "too big"]);
        // A frame cut short is a peer that left.
        let whole = client_frame(true, 0x1, b"abc");
        assert!(read_all(whole[..whole.len() - 1].to_vec()).is_empty());
    }

    #[test]
    fn rate_limit_allows_a_burst_then_refuses() {
        let mut bucket = Bucket::default();
        let allowed = (0..100).filter(|_| bucket.take()).count();
        assert!((40..=42).contains(&allowed), "{allowed}");
    }
}
