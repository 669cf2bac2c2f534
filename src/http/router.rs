//! The hand-rolled router: a table of (method, path pattern) -> [`Route`].
//! Patterns are `/`-separated literals and `:name` captures; captured segments are
//! percent-decoded and must be valid UTF-8 without NUL.

/// Every endpoint lightd serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Ping,
    Metrics,
    OpenApi,
    System,
    VolumeList,
    VolumeCreate,
    VolumeGet,
    VolumePatch,
    VolumeDelete,
    FilesList,
    FileStat,
    FileRead,
    FileWrite,
    FileMkdir,
    FileRename,
    FileCopy,
    FileDelete,
    FileChmod,
    VolumeArchive,
    VolumeExtract,
    JobGet,
    JobCancel,
    BackupList,
    BackupCreate,
    BackupUpload,
    BackupGet,
    BackupDelete,
    BackupDownload,
    BackupRestore,
    BackupRestoreCancel,
    SftpUserList,
    SftpUserCreate,
    SftpUserDelete,
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
    /// A power action, by its name in the URL (`lifecycle::Action::power` parses it).
    ContainerPower(&'static str),
    ContainerCommand,
    ContainerLogs,
    ContainerCrashes,
    ContainerStats,
    ContainerUsage,
    ContainerAttach,
    ContainerDetach,
    FirewallGet,
    FirewallPut,
    FirewallDelete,
    Ws,
    TokenCreate,
    TokenRevoke,
    TransferStart,
    TransferGet,
    TransferCancel,
    TransferPrepare,
    TransferDiscard,
    TransferChunks,
    TransferFinish,
    TransferBackupOffer,
    TransferBackupPiece,
}

const TABLE: &[(&str, &str, Route)] = &[
    ("GET", "/health", Route::Health),
    ("GET", "/api/v1/public/ping", Route::Ping),
    ("GET", "/metrics", Route::Metrics),
    ("GET", "/openapi.json", Route::OpenApi),
    ("GET", "/system", Route::System),
    ("GET", "/volumes", Route::VolumeList),
    ("POST", "/volumes", Route::VolumeCreate),
    ("GET", "/volumes/:volume_id", Route::VolumeGet),
    ("PATCH", "/volumes/:volume_id", Route::VolumePatch),
    ("DELETE", "/volumes/:volume_id", Route::VolumeDelete),
    ("GET", "/volumes/:volume_id/files", Route::FilesList),
    ("GET", "/volumes/:volume_id/files/stat", Route::FileStat),
    ("GET", "/volumes/:volume_id/files/content", Route::FileRead),
    ("PUT", "/volumes/:volume_id/files/content", Route::FileWrite),
    ("POST", "/volumes/:volume_id/files/mkdir", Route::FileMkdir),
    ("POST", "/volumes/:volume_id/files/rename", Route::FileRename),
    ("POST", "/volumes/:volume_id/files/copy", Route::FileCopy),
    ("POST", "/volumes/:volume_id/files/delete", Route::FileDelete),
    ("POST", "/volumes/:volume_id/files/chmod", Route::FileChmod),
    ("GET", "/volumes/:volume_id/archive", Route::VolumeArchive),
    ("POST", "/volumes/:volume_id/extract", Route::VolumeExtract),
    ("GET", "/volumes/:volume_id/jobs/:job_id", Route::JobGet),
    ("DELETE", "/volumes/:volume_id/jobs/:job_id", Route::JobCancel),
    ("GET", "/volumes/:volume_id/backups", Route::BackupList),
    ("POST", "/volumes/:volume_id/backups", Route::BackupCreate),
    ("POST", "/volumes/:volume_id/backups/upload", Route::BackupUpload),
    ("GET", "/volumes/:volume_id/backups/:backup_id", Route::BackupGet),
    ("DELETE", "/volumes/:volume_id/backups/:backup_id", Route::BackupDelete),
    ("GET", "/volumes/:volume_id/backups/:backup_id/download", Route::BackupDownload),
    ("POST", "/volumes/:volume_id/backups/:backup_id/restore", Route::BackupRestore),
    ("DELETE", "/volumes/:volume_id/backups/:backup_id/restore", Route::BackupRestoreCancel),
    ("GET", "/volumes/:volume_id/sftp/users", Route::SftpUserList),
    ("POST", "/volumes/:volume_id/sftp/users", Route::SftpUserCreate),
    ("DELETE", "/volumes/:volume_id/sftp/users/:username", Route::SftpUserDelete),
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
    ("POST", "/containers/:id/start", Route::ContainerPower("start")),
    ("POST", "/containers/:id/stop", Route::ContainerPower("stop")),
    ("POST", "/containers/:id/kill", Route::ContainerPower("kill")),
    ("POST", "/containers/:id/restart", Route::ContainerPower("restart")),
    ("POST", "/containers/:id/suspend", Route::ContainerPower("suspend")),
    ("POST", "/containers/:id/resume", Route::ContainerPower("resume")),
    ("POST", "/containers/:id/command", Route::ContainerCommand),
    ("GET", "/containers/:id/logs", Route::ContainerLogs),
    ("GET", "/containers/:id/crashes", Route::ContainerCrashes),
    ("GET", "/containers/:id/stats", Route::ContainerStats),
    ("GET", "/containers/:id/usage", Route::ContainerUsage),
    ("POST", "/containers/:id/attach", Route::ContainerAttach),
    ("POST", "/containers/:id/detach", Route::ContainerDetach),
    ("GET", "/containers/:id/firewall", Route::FirewallGet),
    ("PUT", "/containers/:id/firewall", Route::FirewallPut),
    ("DELETE", "/containers/:id/firewall", Route::FirewallDelete),
    ("GET", "/ws/:internal_id", Route::Ws),
    ("POST", "/auth/tokens", Route::TokenCreate),
    ("DELETE", "/auth/tokens", Route::TokenRevoke),
    ("POST", "/containers/:id/transfer", Route::TransferStart),
    ("GET", "/containers/:id/transfer", Route::TransferGet),
    ("DELETE", "/containers/:id/transfer", Route::TransferCancel),
    ("POST", "/transfers/:id", Route::TransferPrepare),
    ("DELETE", "/transfers/:id", Route::TransferDiscard),
    ("PUT", "/transfers/:id/chunks", Route::TransferChunks),
    ("POST", "/transfers/:id/finish", Route::TransferFinish),
    ("POST", "/transfers/:id/backups", Route::TransferBackupOffer),
    ("PUT", "/transfers/:id/backups/:backup_id", Route::TransferBackupPiece),
];

impl Route {
    /// Reachable without a token.
    pub fn is_public(self) -> bool {
        matches!(self, Route::Health | Route::Ping | Route::OpenApi)
    }

    /// Opened with the master token or a temporary one (`?token=`).
    pub fn is_console(self) -> bool {
        matches!(self, Route::Ws | Route::ContainerAttach)
    }

    /// A node-to-node transfer route: opened with the master token or a transfer token
    /// for its server.
    pub fn is_transfer(self) -> bool {
        matches!(
            self,
            Route::TransferPrepare
                | Route::TransferDiscard
                | Route::TransferChunks
                | Route::TransferFinish
                | Route::TransferBackupOffer
                | Route::TransferBackupPiece
        )
    }

    /// The pattern (the `route` label of the request counter).
    #[cfg(test)]
    pub fn pattern(self) -> &'static str {
        TABLE.iter().find(|e| e.2 == self).map_or("", |e| e.1)
    }
}

/// Every route as `(method, pattern)`, in table order: the request counter's rows by table
/// position, and what the OpenAPI check and tests compare with.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    TABLE.iter().map(|e| (e.0, e.1)).collect()
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

/// Most `/`-separated segments any pattern has; a longer path matches nothing.
const MAX_SEGMENTS: usize = 8;

/// One segment of a pattern.
#[derive(Clone, Copy)]
enum Segment {
    Literal(&'static str),
    Capture,
}

/// A table entry split into segments once.
struct Pattern {
    method: &'static str,
    segments: Vec<Segment>,
    /// How many segments are literals (not `:name` captures).
    literals: usize,
    route: Route,
    /// Its row in the table.
    index: usize,
}

/// The patterns, by how many segments they have: a path is only compared with those of its
/// own length.
fn patterns(segments: usize) -> &'static [Pattern] {
    static BY_LEN: std::sync::OnceLock<Vec<Vec<Pattern>>> = std::sync::OnceLock::new();
    let by_len = BY_LEN.get_or_init(|| {
        let mut by_len: Vec<Vec<Pattern>> = (0..=MAX_SEGMENTS).map(|_| Vec::new()).collect();
        for (index, &(method, p, route)) in TABLE.iter().enumerate() {
            let segments: Vec<Segment> = p[1..]
                .split('/')
                .map(|s| if s.starts_with(':') { Segment::Capture } else { Segment::Literal(s) })
                .collect();
            let literals = segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
            assert!(segments.len() <= MAX_SEGMENTS, "{p} has more than {MAX_SEGMENTS} segments");
            by_len[segments.len()].push(Pattern { method, segments, literals, route, index });
        }
        by_len
    });
    by_len.get(segments).map_or(&[], Vec::as_slice)
}

/// Finds the route for `method path`: its position in the table (the request counter's row),
/// and its captured parameters in pattern order. The path is split once; allocates only for
/// the parameters.
pub fn resolve(method: &str, path: &str) -> Result<(usize, Route, Vec<String>), Miss> {
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    let rest = path.strip_prefix('/').ok_or(Miss::NotFound)?;
    // Split once, by hand: paths are short, and a byte loop beats a searcher set up per segment.
    let mut split = [""; MAX_SEGMENTS];
    let (mut count, mut from) = (0, 0);
    for (i, b) in rest.bytes().enumerate().chain([(rest.len(), b'/')]) {
        if b == b'/' {
            *split.get_mut(count).ok_or(Miss::NotFound)? = &rest[from..i];
            count += 1;
            from = i + 1;
        }
    }
    let got = &split[..count];
    // Only the matching patterns with the most literal segments count: `/volumes/x/backups/upload`
    // is the upload route (POST), never a backup named "upload".
    let mut best = 0;
    let mut found = None;
    let mut allowed = Vec::new();
    for p in patterns(count) {
        let matched = p.segments.iter().zip(got).all(|(want, got)| match want {
            Segment::Capture => !got.is_empty(),
            Segment::Literal(l) => l == got,
        });
        if !matched || p.literals < best {
            continue;
        }
        if p.literals > best {
            best = p.literals;
            found = None;
            allowed.clear();
        }
        if p.method != method {
            allowed.push(p.method);
        } else if found.is_none() {
            found = Some(p);
        }
    }
    match found {
        Some(p) => {
            let params = p.segments.iter().zip(got).filter(|(want, _)| matches!(want, Segment::Capture));
            let decoded = params.map(|(_, got)| percent_decode(got)).collect::<Option<Vec<_>>>();
            decoded.map(|d| (p.index, p.route, d)).ok_or(Miss::BadPath)
        }
        None if allowed.is_empty() => Err(Miss::NotFound),
        None => Err(Miss::MethodNotAllowed(allowed)),
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape, invalid UTF-8 or a NUL byte.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if !b.iter().any(|c| *c == b'%' || *c == 0) {
        // Nothing to decode: already UTF-8, and no NUL.
        return Some(s.to_owned());
    }
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
        let route = |m, p| resolve(m, p).map(|(_, r, params)| (r, params));
        assert_eq!(route("GET", "/health"), Ok((Route::Health, vec![])));
        assert_eq!(route("GET", "/health/"), Ok((Route::Health, vec![])));
        assert_eq!(route("GET", "/volumes/abc"), Ok((Route::VolumeGet, vec!["abc".into()])));
        assert_eq!(
            route("DELETE", "/network/ports/0.0.0.0/25565"),
            Ok((Route::PortDelete, vec!["0.0.0.0".into(), "25565".into()]))
        );
        // A literal wins over a capture listed after it.
        assert_eq!(route("GET", "/network/ports/random"), Ok((Route::PortRandom, vec![])));
        // ... and a literal path takes only its own methods.
        assert_eq!(route("POST", "/volumes/v/backups/upload"), Ok((Route::BackupUpload, vec!["v".into()])));
        assert_eq!(route("GET", "/volumes/v/backups/upload"), Err(Miss::MethodNotAllowed(vec!["POST"])));
        assert_eq!(route("GET", "/volumes/v/backups/b"), Ok((Route::BackupGet, vec!["v".into(), "b".into()])));
        let (index, _, _) = resolve("DELETE", "/auth/tokens").unwrap();
        assert_eq!(routes()[index], ("DELETE", "/auth/tokens"), "the index is the table row");
    }

    #[test]
    fn misses() {
        assert_eq!(resolve("GET", "/nope"), Err(Miss::NotFound));
        assert_eq!(resolve("GET", "/volumes//"), Err(Miss::NotFound));
        assert_eq!(resolve("GET", ""), Err(Miss::NotFound));
        assert_eq!(resolve("GET", "/volumes/a/b"), Err(Miss::NotFound));
        assert_eq!(resolve("GET", &"/volumes".repeat(MAX_SEGMENTS + 1)), Err(Miss::NotFound), "longer than any");
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

    /// Property test: random methods and paths (slashes, escapes, `..`, NUL, non-ASCII) never
    /// panic, and what matches has the shape of its pattern with clean parameters.
    #[test]
    fn random_paths_never_panic() {
        let mut rnd = crate::testutil::xorshift(0x9e37_79b9_7f4a_7c15);
        let pieces = [
            "/",
            "//",
            "volumes",
            "containers",
            "network",
            "ports",
            "random",
            "ws",
            "start",
            "logs",
            "..",
            ".",
            "%",
            "%2",
            "%2F",
            "%00",
            "%ff",
            "%C3%A9",
            "é",
            "\u{202e}",
            "a",
            "0.0.0.0",
            "::1",
            "25565",
            "?",
            "#",
            " ",
        ];
        let methods = ["GET", "POST", "DELETE", "PUT", "PATCH", "", "get", "OPTIONS"];
        for _ in 0..200_000 {
            let mut path = String::new();
            for _ in 0..rnd(8) {
                path.push_str(pieces[rnd(pieces.len())]);
            }
            let method = methods[rnd(methods.len())];
            match resolve(method, &path) {
                Ok((_, route, params)) => {
                    let pattern = route.pattern();
                    assert_eq!(params.len(), pattern.matches(':').count(), "{method} {path:?}");
                    assert!(params.iter().all(|p| !p.is_empty() && !p.contains('\0')), "{path:?}");
                }
                Err(Miss::MethodNotAllowed(allowed)) => assert!(!allowed.is_empty() && !allowed.contains(&method)),
                Err(_) => {}
            }
        }
    }

    /// Only health, ping and the OpenAPI document go without a token; only the WebSocket and
    /// attach consoles take a console token.
    #[test]
    fn public_and_console_routes() {
        let public: Vec<_> = TABLE.iter().filter(|e| e.2.is_public()).map(|e| e.1).collect();
        assert_eq!(public, ["/health", "/api/v1/public/ping", "/openapi.json"]);
        let console: Vec<_> = TABLE.iter().filter(|e| e.2.is_console()).map(|e| e.1).collect();
        assert_eq!(console, ["/containers/:id/attach", "/ws/:internal_id"]);
        let transfer: Vec<_> = TABLE.iter().filter(|e| e.2.is_transfer()).map(|e| (e.0, e.1)).collect();
        assert_eq!(
            transfer,
            [
                ("POST", "/transfers/:id"),
                ("DELETE", "/transfers/:id"),
                ("PUT", "/transfers/:id/chunks"),
                ("POST", "/transfers/:id/finish"),
                ("POST", "/transfers/:id/backups"),
                ("PUT", "/transfers/:id/backups/:backup_id"),
            ]
        );
    }

    /// Each row answers its own method and pattern, with its own position.
    #[test]
    fn every_row_resolves_to_itself() {
        assert_eq!(routes().len(), TABLE.len());
        for (i, &(method, pattern, route)) in TABLE.iter().enumerate() {
            let path = pattern.replace(":volume_id", "v").replace(":backup_id", "b").replace(':', "x");
            let (index, got, _) = resolve(method, &path).unwrap_or_else(|m| panic!("{method} {path}: {m:?}"));
            assert_eq!((index, got), (i, route), "{method} {path}");
            assert_eq!(routes()[i], (method, pattern));
        }
    }

    #[test]
    fn decoding_plain_and_raw_nul() {
        assert_eq!(percent_decode("plain"), Some("plain".into()));
        assert_eq!(percent_decode(""), Some(String::new()));
        assert_eq!(percent_decode("a\0b"), None);
        assert_eq!(percent_decode("\0"), None, "NUL alone, nothing else to decode");
        assert_eq!(percent_decode("\0\0"), None);
        assert_eq!(percent_decode("%41%42c"), Some("ABc".into()));
        assert_eq!(percent_decode("%C3%A9t%C3%A9"), Some("été".into()));
        assert_eq!(resolve("GET", "/volumes/a\0b"), Err(Miss::BadPath));
        assert_eq!(resolve("GET", "/volumes/\0"), Err(Miss::BadPath));
    }

    #[test]
    fn every_route_has_a_pattern() {
        for &(_, p, r) in TABLE {
            assert_eq!(r.pattern(), p);
        }
    }
}
