//! Responses: JSON bodies, and [`ApiError`], the single place where errors become statuses.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Bytes, Frame, SizeHint};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::docker::DockerError;
use crate::error::Error;

/// Every response body: a whole buffer, or a stream fed through a bounded channel (whose
/// error aborts the response). An enum rather than a boxed trait object: no allocation per
/// reply on the hot path.
pub enum Body {
    Full(Option<Bytes>),
    Channel(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
}

/// Every handler's answer: a response with a [`Body`].
pub type Reply = Response<Body>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Full(Some(bytes.into()))
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            Body::Channel(rx) => rx.poll_recv(cx).map(|m| m.map(|chunk| chunk.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None)) || matches!(self, Body::Full(Some(b)) if b.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Channel(_) => SizeHint::default(),
        }
    }
}

/// A JSON reply with `status`.
pub fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    json_bytes(status, serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()).into())
}

/// A reply of JSON already serialized.
pub fn json_bytes(status: StatusCode, bytes: Bytes) -> Reply {
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn ok(value: &impl Serialize) -> Reply {
    json(StatusCode::OK, value)
}

pub fn message(status: StatusCode, msg: &str) -> Reply {
    json(status, &json!({ "message": msg }))
}

/// An error as the client sees it: a status and a human sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// For 405: the methods the path accepts.
    pub allow: Option<String>,
    /// For 416: the size of what was asked for (`bytes */N`).
    pub content_range: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), allow: None, content_range: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn into_reply(self) -> Reply {
        let mut resp = json(self.status, &json!({ "error": self.message }));
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            resp.headers_mut().insert(ALLOW, allow);
        }
        if let Some(range) = self.content_range.and_then(|r| HeaderValue::from_str(&r).ok()) {
            resp.headers_mut().insert(hyper::header::CONTENT_RANGE, range);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Docker(DockerError::Unreachable(_) | DockerError::Timeout(_)) => StatusCode::SERVICE_UNAVAILABLE,
            // The engine's own conflict (its container is being removed from outside, say):
            // the action met a state it cannot take, as lightd's own 409s say.
            Error::Docker(DockerError::Api { status: 409, .. }) => StatusCode::CONFLICT,
            Error::Docker(_) | Error::Store(_) | Error::Internal(_) | Error::Lifecycle(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<DockerError> for ApiError {
    fn from(e: DockerError) -> ApiError {
        Error::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(e: Error) -> StatusCode {
        ApiError::from(e).status
    }

    #[test]
    fn engine_errors_map_to_what_the_caller_can_do() {
        let api = |status| Error::Docker(DockerError::Api { status, message: "x".into() });
        assert_eq!(status_of(api(409)), StatusCode::CONFLICT, "a container being removed from outside");
        assert_eq!(status_of(api(500)), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_of(Error::Docker(DockerError::Unreachable("x".into()))), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of(Error::Docker(DockerError::Timeout("x".into()))), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of(Error::Conflict("x".into())), StatusCode::CONFLICT);
    }
}
