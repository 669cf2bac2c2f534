//! Identifiers: validation of user-given ids, generation of UUIDs and tokens.

use crate::config::TOKEN_PREFIX;
use crate::fsutil::random_bytes;

/// `internal_id`: 1-64 chars of `[A-Za-z0-9_.-]`, not starting with `.` (safe as a path part
/// and inside a Docker container name).
pub fn valid_internal_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A UUID in its canonical 8-4-4-4-12 hex form (any version, either case).
pub fn valid_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A random (version 4) UUID, lower case.
pub fn new_uuid() -> std::io::Result<String> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// A fresh master or temporary token: `lightd_` + 48 hex chars (192 random bits).
pub fn new_token() -> std::io::Result<String> {
    Ok(format!("{TOKEN_PREFIX}{}", hex(&random_bytes::<24>()?)))
}

/// Compares in time that depends only on the lengths, never on where the first difference is.
/// Words at a time: the whole of both is always read.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut diff = wa.remainder().iter().zip(wb.remainder()).fold(0u64, |d, (x, y)| d | u64::from(x ^ y));
    for (x, y) in wa.zip(wb) {
        diff |= word(x) ^ word(y);
    }
    std::hint::black_box(diff) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ids() {
        assert!(valid_internal_id("my-server-001"));
        assert!(valid_internal_id("a.b_c"));
        assert!(!valid_internal_id(""));
        assert!(!valid_internal_id(".hidden"));
        assert!(!valid_internal_id("../etc"));
        assert!(!valid_internal_id("a/b"));
        assert!(!valid_internal_id("a\0b"));
        assert!(!valid_internal_id(&"x".repeat(65)));
        assert!(valid_internal_id(&"x".repeat(64)));
    }

    #[test]
    fn uuids() {
        let u = new_uuid().unwrap();
        assert!(valid_uuid(&u), "{u}");
        assert_eq!(&u[14..15], "4");
        assert!(valid_uuid("D6764075-C5F1-4045-9FB3-85315B85CB0F"));
        assert!(!valid_uuid("d6764075c5f140459fb385315b85cb0f"));
        assert!(!valid_uuid("../../../../etc/passwd-0000000000000"));
        assert!(!valid_uuid("g6764075-c5f1-4045-9fb3-85315b85cb0f"));
        assert_ne!(new_uuid().unwrap(), u);
    }

    #[test]
    fn constant_time_compare() {
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        let t = b"lightd_0123456789abcdef0123456789abcdef0123456789ab";
        for i in 0..t.len() {
            let mut u = *t;
            u[i] ^= 1;
            assert!(!constant_time_eq(t, &u), "a difference at byte {i}");
        }
        assert!(constant_time_eq(t, &t.clone()));
    }

    #[test]
    fn tokens() {
        let t = new_token().unwrap();
        assert!(t.starts_with("lightd_") && t.len() == 7 + 48);
    }
}
