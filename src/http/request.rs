//! What a handler gets: the request head, its route parameters, and helpers that turn the
//! body and query string into typed values or a clear 4xx.

use std::collections::HashMap;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::StatusCode;
use serde::de::DeserializeOwned;

use super::reply::ApiError;
use super::router::percent_decode;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1 << 20;

/// One request as a handler sees it: the head, the body not read yet, the path parameters
/// and the connection's slot.
pub struct Ctx {
    pub head: Parts,
    pub body: Option<Incoming>,
    pub params: Vec<String>,
    /// The connection's slot under the caps (a console session keeps it taken).
    pub slot: Option<std::sync::Arc<super::conns::Slot>>,
}

impl Ctx {
    /// The `i`-th captured path parameter.
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map_or("", String::as_str)
    }

    /// The query string as a map; keys outside `allowed` or repeated are a 400.
    pub fn query(&self, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
        let mut map = HashMap::new();
        let Some(q) = self.head.uri.query() else {
            return Ok(map);
        };
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode(&s.replace('+', " "))
                    .ok_or_else(|| ApiError::bad_request("query string is not valid UTF-8"))
            };
            let (k, v) = (decode(k)?, decode(v)?);
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!("unknown query parameter {k:?}")));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::bad_request(format!("query parameter {k:?} given twice")));
            }
        }
        Ok(map)
    }

    /// The JSON body, which must be present.
    pub async fn json<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        self.json_opt().await?.ok_or_else(|| ApiError::bad_request("request body must be a JSON object"))
    }

    /// The JSON body, `None` when the request has none.
    pub async fn json_opt<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ApiError> {
        let too_large = || {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {} bytes", BODY_LIMIT))
        };
        let declared = self.head.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        if declared.and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(too_large());
        }
        let Some(body) = self.body.take() else {
            return Ok(None);
        };
        let bytes = match Limited::new(body, BODY_LIMIT).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Err(e) => return Err(ApiError::bad_request(format!("could not read request body: {e}"))),
        };
        // Only JSON's own whitespace makes an empty body (a form feed is not JSON at all).
        if bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            return Ok(None);
        }
        if !is_json(self.head.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request body must be JSON with Content-Type: application/json",
            ));
        }
        // serde reads a struct from an array of its fields too (`[null, null]`): only an object is a body.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("invalid JSON body: the body must be a JSON object"));
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
            || essence.eq_ignore_ascii_case("application/vnd.pkglatv1+json")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(uri: &str) -> Option<Ctx> {
        let (head, _) = hyper::Request::builder().uri(uri).body(()).ok()?.into_parts();
        Some(Ctx { head, body: None, params: Vec::new(), slot: None })
    }

    #[test]
    fn query_strings() {
        let c = ctx("/x?available=true&protocol=udp").unwrap();
        let q = c.query(&["available", "protocol"]).unwrap();
        assert_eq!(q.get("available").map(String::as_str), Some("true"));
        assert!(c.query(&["available"]).is_err(), "unknown key refused");
        assert!(ctx("/x?a=1&a=2").unwrap().query(&["a"]).is_err(), "repeated key refused");
        assert_eq!(ctx("/x?a=b%20c+d").unwrap().query(&["a"]).unwrap()["a"], "b c d");
        assert!(ctx("/x?a=%ff").unwrap().query(&["a"]).is_err());
    }

    /// Property test: random query strings never panic the parser.
    #[test]
    fn random_query_strings_never_panic() {
        let mut rnd = crate::testutil::xorshift(0x1234_5678_9abc_def1);
        let pieces =
            ["a", "token", "tail", "=", "&", "%", "%2", "%zz", "%00", "%C3%A9", "+", "==", "&&", "?", "é", "1"];
        for _ in 0..50_000 {
            let q: String = (0..rnd(10)).map(|_| pieces[rnd(pieces.len())]).collect();
            if let Some(c) = ctx(&format!("/p?{q}")) {
                if let Ok(map) = c.query(&["a", "token", "tail"]) {
                    assert!(map.keys().all(|k| ["a", "token", "tail"].contains(&k.as_str())));
                }
            }
        }
    }

    #[test]
    fn content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("Application/vnd.pkglatv1+json")));
        assert!(!is_json(Some("application/x-www-form-urlencoded")));
        assert!(!is_json(None));
    }
}
