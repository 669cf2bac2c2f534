//! Who may call: the bearer token (compared in constant time) and what the client accepts.

use hyper::header::{ACCEPT, AUTHORIZATION};
use hyper::HeaderMap;

/// Media types lightd answers with, compared case-insensitively.
const ACCEPTED: &[&str] = &["application/vnd.pkglatv1+json", "application/json", "application/*", "*/*"];

/// The token of an `Authorization: Bearer <token>` header, if there is one (read as bytes: a
/// header that is not text still compares, and cannot match).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let given = value.strip_prefix(b"Bearer ").or_else(|| value.strip_prefix(b"bearer "));
    given.map(|g| g.trim_ascii())
}

/// No `Accept`, or one naming a type we can answer with (`extra` adds route-specific ones,
/// such as `text/plain` for metrics and the attach stream).
pub fn accept_ok(headers: &HeaderMap, extra: &[&str]) -> bool {
    let Some(accept) = headers.get(ACCEPT) else {
        return true;
    };
    let Ok(accept) = accept.to_str() else {
        return false;
    };
    if accept.trim().is_empty() {
        return true;
    }
    accept.split(',').any(|item| {
        let essence = item.split(';').next().unwrap_or("").trim();
        ACCEPTED.iter().chain(extra).any(|t| t.eq_ignore_ascii_case(essence))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::constant_time_eq;
    use hyper::header::HeaderValue;

    fn headers(name: hyper::header::HeaderName, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
        bearer(headers).is_some_and(|g| constant_time_eq(g, token.as_bytes()))
    }

    #[test]
    fn bearer_token() {
        let t = "lightd_abcdefabcdefabcdef";
        assert!(bearer_matches(&headers(AUTHORIZATION, &format!("Bearer {t}")), t));
        assert!(!bearer_matches(&headers(AUTHORIZATION, "Bearer lightd_abcdefabcdefabcdeg"), t));
        assert!(!bearer_matches(&headers(AUTHORIZATION, "Bearer lightd_abc"), t));
        assert!(!bearer_matches(&headers(AUTHORIZATION, t), t));
        assert!(!bearer_matches(&HeaderMap::new(), t));
    }

    #[test]
    fn accept() {
        assert!(accept_ok(&HeaderMap::new(), &[]));
        assert!(accept_ok(&headers(ACCEPT, "Application/vnd.pkglatv1+json"), &[]));
        assert!(accept_ok(&headers(ACCEPT, "application/JSON;q=0.9"), &[]));
        assert!(accept_ok(&headers(ACCEPT, "text/html, */*;q=0.1"), &[]));
        assert!(!accept_ok(&headers(ACCEPT, "text/html"), &[]));
        assert!(accept_ok(&headers(ACCEPT, "text/plain"), &["text/plain"]));
    }
}
