//! A WebSocket console client (tokio-tungstenite) with deadlines on every read.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Daemon, TOKEN};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(port: u16, path: &str, bearer: Option<&str>) -> Result<Ws, WsError> {
    let mut req = format!("ws://127.0.0.1:{port}{path}").into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut().insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

/// A console session on `id` with the master token.
pub async fn open(d: &Daemon, id: &str) -> Ws {
    connect(d.port, &format!("/ws/{id}"), Some(TOKEN)).await.expect("websocket opens")
}

/// The HTTP status a refused upgrade got.
pub fn refused_status(r: Result<Ws, WsError>) -> u16 {
    match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connection was accepted"),
    }
}

/// The next JSON frame within 30 s (pings are answered by the client library).
pub async fn next(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("a frame within 30 s");
        match msg.expect("stream open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// The next frame whose event is `event`, within 30 s.
pub async fn next_event(ws: &mut Ws, event: &str) -> Value {
    let wanted = async {
        loop {
            let f = next(ws).await;
            if f["event"] == event {
                return f;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wanted)
        .await
        .unwrap_or_else(|_| panic!("no {event} frame within 30 s"))
}

/// The next `daemon_message` containing `needle`, within 30 s.
pub async fn next_note(ws: &mut Ws, needle: &str) -> String {
    loop {
        let f = next_event(ws, "daemon_message").await;
        let text = f["args"][0].as_str().unwrap_or_default().to_string();
        if text.contains(needle) {
            return text;
        }
    }
}

/// Reads until the server closes the socket (within `secs`); returns its close frame.
pub async fn closed(ws: &mut Ws, secs: u64) -> Option<CloseFrame<'static>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the socket was not closed within {secs} s"),
            Ok(Some(Ok(Message::Close(c)))) => return c,
            Ok(Some(Ok(_))) => continue,
            Ok(None) | Ok(Some(Err(_))) => return None,
        }
    }
}
