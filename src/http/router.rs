//! The hand-rolled router: a table of (method, path pattern) -> [`Route`].
//! Patterns are `/`-separated literals and `:name` captures; captured segments are
//! percent-decoded and must be valid UTF-8 without NUL.

use super::power::Action;

/// Every endpoint lightd serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Ping,
    Metrics,
    VolumeList,
    VolumeCreate,
    VolumeGet,
    VolumeDelete,
    PortList,
    PortAdd,
    PortRandom,
    PortDelete,
    ContainerList,
    ContainerCreate,
    ContainerGet,
    ContainerDelete,
    ContainerReinstall,
    ContainerRebind,
    ContainerPower(Action),
    ContainerCommand,
    ContainerLogs,
    ContainerStats,
    ContainerAttach,
    ContainerDetach,
    Ws,
    TokenCreate,
}

const TABLE: &[(&str, &str, Route)] = &[
    ("GET", "/health", Route::Health),
    ("GET", "/api/v1/public/ping", Route::Ping),
    ("GET", "/metrics", Route::Metrics),
    ("GET", "/volumes", Route::VolumeList),
    ("POST", "/volumes", Route::VolumeCreate),
    ("GET", "/volumes/:volume_id", Route::VolumeGet),
    ("DELETE", "/volumes/:volume_id", Route::VolumeDelete),
    ("GET", "/network/ports", Route::PortList),
    ("POST", "/network/ports", Route::PortAdd),
    ("GET", "/network/ports/random", Route::PortRandom),
    ("DELETE", "/network/ports/:ip/:port", Route::PortDelete),
    ("GET", "/containers", Route::ContainerList),
    ("POST", "/containers", Route::ContainerCreate),
    ("GET", "/containers/:id", Route::ContainerGet),
    ("DELETE", "/containers/:id", Route::ContainerDelete),
    ("POST", "/containers/:id/reinstall", Route::ContainerReinstall),
    ("POST", "/containers/:id/rebind-network", Route::ContainerRebind),
    ("POST", "/containers/:id/start", Route::ContainerPower(Action::Start)),
    ("POST", "/containers/:id/stop", Route::ContainerPower(Action::Stop)),
    ("POST", "/containers/:id/kill", Route::ContainerPower(Action::Kill)),
    ("POST", "/containers/:id/restart", Route::ContainerPower(Action::Restart)),
    ("POST", "/containers/:id/suspend", Route::ContainerPower(Action::Suspend)),
    ("POST", "/containers/:id/resume", Route::ContainerPower(Action::Resume)),
    ("POST", "/containers/:id/command", Route::ContainerCommand),
    ("GET", "/containers/:id/logs", Route::ContainerLogs),
    ("GET", "/containers/:id/stats", Route::ContainerStats),
    ("POST", "/containers/:id/attach", Route::ContainerAttach),
    ("POST", "/containers/:id/detach", Route::ContainerDetach),
    ("GET", "/ws/:internal_id", Route::Ws),
    ("POST", "/auth/tokens", Route::TokenCreate),
];

impl Route {
    /// Reachable without a token.
    pub fn is_public(self) -> bool {
        matches!(self, Route::Health | Route::Ping)
    }

    /// Opened with the master token or a temporary one (`?token=`).
    pub fn is_console(self) -> bool {
        matches!(self, Route::Ws | Route::ContainerAttach)
    }

    /// The pattern, used as the `route` label of the request counter.
    pub fn pattern(self) -> &'static str {
        TABLE.iter().find(|e| e.2 == self).map_or("?", |e| e.1)
    }
}

/// Why a request matched no route.
#[derive(Debug, PartialEq)]
pub enum Miss {
    NotFound,
    /// The path exists for these methods only.
    MethodNotAllowed(Vec<&'static str>),
    /// A segment is not valid percent-encoded UTF-8, or holds NUL.
    BadPath,
}

/// Finds the route for `method path`, with its captured parameters in pattern order.
pub fn resolve(method: &str, path: &str) -> Result<(Route, Vec<String>), Miss> {
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    let segments: Vec<&str> = path.strip_prefix('/').ok_or(Miss::NotFound)?.split('/').collect();
    let mut allowed = Vec::new();
    for &(m, pattern, route) in TABLE {
        let parts = pattern[1..].split('/');
        if parts.clone().count() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let matched = parts.zip(&segments).all(|(p, s)| {
            if p.starts_with(':') {
                params.push(*s);
                !s.is_empty()
            } else {
                p == *s
            }
        });
        if !matched {
            continue;
        }
        if m != method {
            allowed.push(m);
            continue;
        }
        let decoded = params.into_iter().map(percent_decode).collect::<Option<Vec<_>>>();
        return decoded.map(|d| (route, d)).ok_or(Miss::BadPath);
    }
    if allowed.is_empty() {
        Err(Miss::NotFound)
    } else {
        Err(Miss::MethodNotAllowed(allowed))
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape, invalid UTF-8 or a NUL byte.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    (!text.contains('\0')).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_captures() {
        assert_eq!(resolve("GET", "/health"), Ok((Route::Health, vec![])));
        assert_eq!(resolve("GET", "/health/"), Ok((Route::Health, vec![])));
        assert_eq!(resolve("GET", "/volumes/abc"), Ok((Route::VolumeGet, vec!["abc".into()])));
        assert_eq!(
            resolve("DELETE", "/network/ports/0.0.0.0/25565"),
            Ok((Route::PortDelete, vec!["0.0.0.0".into(), "25565".into()]))
        );
        // A literal wins over a capture listed after it.
        assert_eq!(resolve("GET", "/network/ports/random"), Ok((Route::PortRandom, vec![])));
    }

    #[test]
    fn misses() {
        assert_eq!(resolve("GET", "/nope"), Err(Miss::NotFound));
        assert_eq!(resolve("GET", "/volumes//"), Err(Miss::NotFound));
        assert_eq!(resolve("GET", ""), Err(Miss::NotFound));
        assert_eq!(resolve("GET", "/volumes/a/b"), Err(Miss::NotFound));
        assert_eq!(resolve("PUT", "/volumes"), Err(Miss::MethodNotAllowed(vec!["GET", "POST"])));
        assert_eq!(resolve("POST", "/health"), Err(Miss::MethodNotAllowed(vec!["GET"])));
        assert_eq!(resolve("GET", "/volumes/%zz"), Err(Miss::BadPath));
        assert_eq!(resolve("GET", "/volumes/a%00b"), Err(Miss::BadPath));
        assert_eq!(resolve("GET", "/volumes/%ff"), Err(Miss::BadPath));
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb"), Some("a/b".into()));
        assert_eq!(percent_decode("%3A%3A1"), Some("::1".into()));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%é1"), None);
    }

    #[test]
    fn every_route_has_a_pattern() {
        for &(_, p, r) in TABLE {
            assert_eq!(r.pattern(), p);
        }
    }
}
