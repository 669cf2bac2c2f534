//! Docker's image reference grammar (distribution/reference): `[domain/]path[:tag][@digest]`.
//! A reference that passes is safe to put into an Engine API URL; one that does not is
//! refused with the rule it breaks, before anything reaches the engine.

/// Longest repository name (domain and path) Docker accepts.
const MAX_NAME: usize = 255;

/// Checks `image` and returns the registry it comes from (`docker.io` when none is named).
pub fn check(image: &str) -> Result<String, String> {
    if image.is_empty() {
        return Err("must not be empty".into());
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        check_digest(d)?;
    }
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].find(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        check_tag(t)?;
    }
    if name.len() > MAX_NAME {
        return Err(format!("the repository name must be at most {MAX_NAME} characters"));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // The first part is a registry when it looks like a host: a '.', a ':' or "localhost".
    let registry = match parts.first() {
        Some(first) if parts.len() > 1 && (first.contains(['.', ':']) || *first == "localhost") => {
            let host = parts.remove(0);
            check_domain(host)?;
            host.to_ascii_lowercase()
        }
        _ => "docker.io".to_string(),
    };
    for p in &parts {
        check_component(p)?;
    }
    Ok(registry)
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn check_component(c: &str) -> Result<(), String> {
    let rule = || {
        format!(
            "path component {c:?} must be lowercase letters and digits, separated by '.', '_', '__' or '-' \
             (and not start or end with one)"
        )
    };
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err(rule());
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            x if x.is_ascii_lowercase() || x.is_ascii_digit() => i += 1,
            b'.' => {
                if !b[i + 1].is_ascii_alphanumeric() {
                    return Err(rule());
                }
                i += 1;
            }
            b'_' => {
                let n = if b.get(i + 1) == Some(&b'_') { 2 } else { 1 };
                if !b[i + n].is_ascii_alphanumeric() {
                    return Err(rule());
                }
                i += n;
            }
            b'-' => {
                while b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return Err(rule()),
        }
    }
    Ok(())
}

/// A registry host: DNS labels (letters, digits, inner `-`) joined by `.`, or `[ipv6]`,
/// with an optional port.
fn check_domain(d: &str) -> Result<(), String> {
    let rule = || format!("registry {d:?} must be a host name or IP address with an optional :port");
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(rule());
        }
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().map(drop).map_err(|_| rule());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(rule())
    }
}

/// A tag: up to 128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
fn check_tag(t: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&t.len())
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !t.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!("tag {t:?} must be 1-128 of A-Z a-z 0-9 _ . - and not start with . or -"))
    }
}

/// A digest: `algorithm:hex` with at least 32 hex digits.
fn check_digest(d: &str) -> Result<(), String> {
    let ok = d.split_once(':').is_some_and(|(alg, hex)| {
        !alg.is_empty()
            && alg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-_".contains(&b))
            && hex.len() >= 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if ok {
        Ok(())
    } else {
        Err(format!("digest {d:?} must be algorithm:hex like sha256:<64 hex digits>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_references_and_their_registry() {
        for (image, registry) in [
            ("ubuntu", "docker.io"),
            ("ubuntu:22.04", "docker.io"),
            ("lightd-test/busybox", "docker.io"),
            ("library/node:18-alpine", "docker.io"),
            ("ghcr.io/pterodactyl/yolks:java_17", "ghcr.io"),
            ("127.0.0.1:5000/lightd-test/busybox:1", "127.0.0.1:5000"),
            ("localhost/app", "localhost"),
            ("[::1]:5000/app:v1", "[::1]:5000"),
            ("a__b/c-d--e.f", "docker.io"),
            ("app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "docker.io"),
        ] {
            assert_eq!(check(image).as_deref(), Ok(registry), "{image}");
        }
    }

    #[test]
    fn invalid_references_name_the_rule() {
        for (image, rule) in [
            ("", "empty"),
            ("Ubuntu", "path component"),
            ("../etc", "registry"),
            ("a/../b", "path component"),
            ("a//b", "path component"),
            ("-rm", "path component"),
            ("a_", "path component"),
            ("a:", "tag"),
            ("a:.x", "tag"),
            ("a:b:c", "tag"),
            ("bad host.io:x/a", "registry"),
            ("reg.io:99999999/a", "registry"),
            ("a@sha256:xyz", "digest"),
            ("a b", "path component"),
            ("a%2e%2e", "path component"),
            ("a?x=1", "path component"),
        ] {
            let e = check(image).unwrap_err();
            assert!(e.contains(rule), "{image}: {e}");
        }
        assert!(check(&"a".repeat(256)).unwrap_err().contains("255"));
    }
}
