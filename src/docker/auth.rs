//! Registry credentials as the engine takes them: the `X-Registry-Auth` header, base64url
//! (URL-safe alphabet, padded, as Docker 20.10's decoder requires) of a JSON auth config.
//! The secret never leaves this type except in that header: its `Debug` hides it, and
//! nothing here formats it into an error.

use serde_json::json;

/// Credentials for one registry, sent with a pull from it.
#[derive(Clone, PartialEq)]
pub enum RegistryAuth {
    /// A user name and password (or a personal access token used as one).
    Password { username: String, password: String, server: String },
    /// An identity (refresh) token, as `docker login` against an OAuth registry keeps.
    IdentityToken { token: String, server: String },
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::Password { username, server, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"<redacted>")
                .field("server", server)
                .finish(),
            RegistryAuth::IdentityToken { server, .. } => {
                f.debug_struct("IdentityToken").field("token", &"<redacted>").field("server", server).finish()
            }
        }
    }
}

impl RegistryAuth {
    /// The value of the `X-Registry-Auth` header.
    pub fn header(&self) -> String {
        let config = match self {
            RegistryAuth::Password { username, password, server } => {
                json!({"username": username, "password": password, "serveraddress": server})
            }
            RegistryAuth::IdentityToken { token, server } => json!({"identitytoken": token, "serveraddress": server}),
        };
        base64url(config.to_string().as_bytes())
    }
}

/// RFC 4648 section 5 (URL- and filename-safe alphabet), with `=` padding.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_and_url_alphabet() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(plain.as_bytes()), coded);
        }
        // 0xfb 0xff: '+' and '/' in the standard alphabet, '-' and '_' here.
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8=");
    }

    /// Decodes what `base64url` made (test only), to read the header back.
    fn decode(s: &str) -> Vec<u8> {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let vals: Vec<u32> =
            s.bytes().filter(|b| *b != b'=').map(|b| alphabet.iter().position(|a| *a == b).unwrap() as u32).collect();
        let mut out = Vec::new();
        for c in vals.chunks(4) {
            let n = c.iter().enumerate().fold(0u32, |n, (i, v)| n | v << (18 - 6 * i));
            out.extend_from_slice(&n.to_be_bytes()[1..c.len()]);
        }
        out
    }

    #[test]
    fn header_carries_the_engines_auth_config() {
        let a = RegistryAuth::Password { username: "u".into(), password: "p?>".into(), server: "reg:5000".into() };
        let v: serde_json::Value = serde_json::from_slice(&decode(&a.header())).unwrap();
        assert_eq!(v, json!({"username": "u", "password": "p?>", "serveraddress": "reg:5000"}));
        let t = RegistryAuth::IdentityToken { token: "tok".into(), server: "reg".into() };
        let v: serde_json::Value = serde_json::from_slice(&decode(&t.header())).unwrap();
        assert_eq!(v, json!({"identitytoken": "tok", "serveraddress": "reg"}));
        assert!(!t.header().contains(['+', '/']));
    }

    #[test]
    fn debug_hides_the_secret() {
        let a = RegistryAuth::Password { username: "u".into(), password: "hunter2".into(), server: "r".into() };
        let t = RegistryAuth::IdentityToken { token: "tok-secret".into(), server: "r".into() };
        let shown = format!("{a:?} {t:?} {a:#?}");
        assert!(!shown.contains("hunter2") && !shown.contains("tok-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
