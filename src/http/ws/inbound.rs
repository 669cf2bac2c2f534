//! The client side of a console session: a reader task that turns frames into messages (with
//! the size limit and the pongs and close echoes the protocol obliges), the two accepted
//! message shapes, and the per-connection rate limit.

use std::time::Instant;

use fastwebsockets::{Frame, OpCode, WebSocketError, WebSocketRead};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::ReadHalf;
use tokio::sync::mpsc;

use super::frames;

/// Largest inbound message (also across fragments).
pub const MAX_INBOUND: usize = 32 * 1024;
/// Largest frame read whole before refusing it, so a modestly oversized message still gets
/// a clean 1009 close instead of a reset; anything larger is cut off mid-frame.
pub const MAX_FRAME_READ: usize = 4 * MAX_INBOUND;
/// Inbound messages per second allowed, and the burst above it.
const RATE: f64 = 20.0;
const BURST: f64 = 40.0;

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
    /// The answer to a request handled in the background.
    Reply(Vec<u8>),
}

/// Reads frames until the peer leaves; reassembles fragments up to `MAX_INBOUND`.
pub async fn read_loop(mut rx: WebSocketRead<ReadHalf<TokioIo<Upgraded>>>, to_session: mpsc::Sender<Inbound>) {
    let mut partial: Option<Vec<u8>> = None;
    loop {
        let obligations = to_session.clone();
        let mut send = move |f: Frame<'_>| {
            let mut frame = Vec::with_capacity(f.payload.len() + 4);
            let opcode = match f.opcode {
                OpCode::Close => frames::CLOSE,
                _ => frames::PONG,
            };
            frames::push(&mut frame, opcode, &f.payload);
            let msg = Inbound::Send { frame, close: f.opcode == OpCode::Close };
            let tx = obligations.clone();
            async move { tx.send(msg).await.map_err(|_| WebSocketError::ConnectionClosed) }
        };
        let msg = match rx.read_frame(&mut send).await {
            Err(WebSocketError::FrameTooLarge) => Inbound::TooBig,
            Err(_) => return,
            Ok(f) => match f.opcode {
                OpCode::Close => return,
                OpCode::Ping | OpCode::Pong => Inbound::Alive,
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    let buf = partial.get_or_insert_with(Vec::new);
                    buf.extend_from_slice(&f.payload);
                    if buf.len() > MAX_INBOUND {
                        Inbound::TooBig
                    } else if !f.fin {
                        continue;
                    } else {
                        match String::from_utf8(partial.take().unwrap_or_default()) {
                            Ok(t) => Inbound::Text(t),
                            Err(_) => Inbound::NotUtf8,
                        }
                    }
                }
            },
        };
        let stop = matches!(msg, Inbound::TooBig);
        if to_session.send(msg).await.is_err() || stop {
            return;
        }
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

/// A token bucket: `RATE` per second, `BURST` at most.
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket { tokens: BURST, at: Instant::now() }
    }
}

impl Bucket {
    /// Takes one token; false when the message must be dropped.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * RATE).min(BURST);
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

    #[test]
    fn rate_limit_allows_a_burst_then_refuses() {
        let mut bucket = Bucket::default();
        let allowed = (0..100).filter(|_| bucket.take()).count();
        assert!((40..=42).contains(&allowed), "{allowed}");
    }
}
