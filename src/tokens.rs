//! Short-lived tokens for the WebSocket and attach consoles (`POST /auth/tokens`), so a
//! browser never holds the master token. Kept in the state file; expired ones are purged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::error::{bad, Error, Result};
use crate::ids::{self, constant_time_eq};
use crate::model::{now, TempToken};
use crate::secret::{self, Master};
use crate::store::Store;

/// Longest lifetime a temporary token may ask for.
pub const MAX_TTL: u64 = 7 * 24 * 3600;
pub const DEFAULT_TTL: u64 = 600;

/// The tokens room's handle: the master token, the console token table (in the store) and the
/// console sessions open per token. Cheap to clone; its fields are reached only through this
/// room's functions.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<Store>,
    master: Arc<Master>,
    sessions: Arc<Sessions>,
    config: Arc<Config>,
    /// The config file the master token came from (reread for a replaced token).
    config_path: Option<Arc<PathBuf>>,
}

impl Tokens {
    pub fn new(config: Arc<Config>, config_path: Option<PathBuf>, master: String, store: Arc<Store>) -> Tokens {
        Tokens {
            store,
            master: Arc::new(Master::new(master)),
            sessions: Arc::default(),
            config,
            config_path: config_path.map(Arc::new),
        }
    }

    /// Whether `given` is the master token (constant time; one atomic load per call while the
    /// token is unchanged).
    pub fn is_master(&self, given: &[u8]) -> bool {
        self.master.with(|t| constant_time_eq(given, t.as_bytes()))
    }
}

/// How many console sessions each console token has open (bounded per token).
#[derive(Default)]
struct Sessions {
    open: Mutex<HashMap<String, usize>>,
}

/// Counts one session of a token until dropped.
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    token: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut open = self.sessions.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.token);
            }
        }
    }
}

/// Counts a session of `token` in, or refuses past `console.max_sessions_per_token` (429).
pub fn enter(tokens: &Tokens, token: &str) -> Result<SessionGuard> {
    let max = tokens.config.console.max_sessions_per_token;
    let mut open = tokens.sessions.open.lock().unwrap_or_else(|p| p.into_inner());
    let n = open.entry(token.to_string()).or_insert(0);
    if *n >= max {
        return Err(Error::TooMany(format!(
            "this console token already has {max} sessions open (console.max_sessions_per_token)"
        )));
    }
    *n += 1;
    Ok(SessionGuard { sessions: Arc::clone(&tokens.sessions), token: token.to_string() })
}

/// Why a presented token does not open a console.
#[derive(Debug, PartialEq)]
pub enum Denied {
    /// Unknown or expired (401).
    Invalid(&'static str),
    /// Valid, but for another container (403).
    OtherContainer,
}

/// Parses `"90"`, `"30s"`, `"10m"`, `"2h"`, `"1d"` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3600),
        Some((i, 'd')) => (&t[..i], 86400),
        _ => (t, 1),
    };
    let secs = num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult));
    match secs {
        Some(n) if (1..=MAX_TTL).contains(&n) => Ok(n),
        _ => Err(bad(format!("ttl {s:?} must be a duration like \"10m\" between 1s and 7d"))),
    }
}

/// Issues a token; a bound container must exist, except for a transfer token (the server it
/// names is on the source node until the transfer is done). The table is bounded
/// (`authorization.max_console_tokens`): expired tokens are purged first, then a full table
/// refuses.
///
/// `let_in_with` is the master token the request was let in with: it must still be the master
/// token when the token is recorded, so a token minted with the old master token while it
/// is being replaced never outlives it.
pub async fn issue(
    tokens: &Tokens,
    let_in_with: &[u8],
    ttl: u64,
    internal_id: Option<String>,
    remove_on_use: bool,
    transfer: bool,
) -> Result<TempToken> {
    if let Some(id) = &internal_id {
        if !ids::valid_internal_id(id) {
            return Err(bad("internal_id must be 1-64 characters of A-Z a-z 0-9 _ . - and not start with ."));
        }
    }
    let token = ids::new_token().map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    // Whole seconds, rounded up (`now()` drops the fraction of this one): a token lasts at
    // least its ttl, a 1 s token issued late in a second included.
    let t = TempToken { token, internal_id, expires_at: now() + ttl + 1, remove_on_use, transfer };
    let record = t.clone();
    let max = tokens.config.authorization.max_console_tokens;
    tokens
        .store
        .update(|s| {
            if !constant_time_eq(let_in_with, tokens.master.get().as_bytes()) {
                return Err(Error::Unauthorized("the master token changed while the token was being issued".into()));
            }
            if let Some(id) = record.internal_id.as_ref().filter(|_| !record.transfer) {
                if !s.containers.contains_key(id) {
                    return Err(Error::NotFound("Container not found".into()));
                }
            }
            let t = now();
            s.tokens.retain(|_, x| x.expires_at > t);
            if s.tokens.len() >= max {
                return Err(Error::TooMany(format!(
                    "{max} console tokens are live (authorization.max_console_tokens); revoke them with \
                     DELETE /auth/tokens or wait for some to expire"
                )));
            }
            s.tokens.insert(record.token.clone(), record);
            Ok(())
        })
        .await?;
    Ok(t)
}

/// Checks a temporary token for container `id`, consuming it when it is single-use.
pub async fn redeem(tokens: &Tokens, presented: &str, id: &str) -> std::result::Result<TempToken, Denied> {
    // One keyed-hash lookup, then a constant-time compare of the whole token.
    // The latest state: a revocation counts from the moment it is made (`replace_master`
    // sets the new master token at that moment too), not from when it is on disk.
    let found = tokens.store.read_latest(|s| s.tokens.get(presented).cloned());
    let t = found.filter(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()));
    // A transfer token opens no console.
    let t = t.filter(|t| !t.transfer).ok_or(Denied::Invalid("Invalid token"))?;
    if t.expires_at <= now() {
        return Err(Denied::Invalid("Token expired"));
    }
    if t.internal_id.as_deref().is_some_and(|bound| bound != id) {
        return Err(Denied::OtherContainer);
    }
    if t.remove_on_use {
        let used = tokens.store.update(|s| Ok::<_, Error>(s.tokens.remove(&t.token).is_some())).await;
        // Two racing uses: only the one that removed it gets in.
        if !matches!(used, Ok(true)) {
            return Err(Denied::Invalid("Invalid token"));
        }
    }
    Ok(t)
}

/// Checks a transfer token (scope `transfer`) for the transfer of server `id`: the only
/// token the node-to-node transfer routes take besides the master token.
pub fn redeem_transfer(tokens: &Tokens, presented: &str, id: &str) -> std::result::Result<TempToken, Denied> {
    let found = tokens.store.read_latest(|s| s.tokens.get(presented).cloned());
    let t = found.filter(|t| t.transfer && constant_time_eq(t.token.as_bytes(), presented.as_bytes()));
    let t = t.ok_or(Denied::Invalid("Invalid transfer token"))?;
    if t.expires_at <= now() {
        return Err(Denied::Invalid("Transfer token expired"));
    }
    if t.internal_id.as_deref() != Some(id) {
        return Err(Denied::OtherContainer);
    }
    Ok(t)
}

/// Why a token that opened a session no longer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Past its expiry.
    Expired,
    /// Its container was deleted, and its tokens with it.
    ContainerDeleted,
    /// `DELETE /auth/tokens` or a new master token.
    Revoked,
}

impl Revoked {
    pub fn reason(self) -> &'static str {
        match self {
            Revoked::Expired => "token expired",
            Revoked::ContainerDeleted => "container deleted",
            Revoked::Revoked => "token revoked",
        }
    }
}

/// Whether a token that opened a session on container `id` was revoked since. Sessions
/// check this while they run; expiry they check themselves.
pub fn revoked(tokens: &Tokens, token: &str, id: &str) -> Option<Revoked> {
    tokens.store.read_latest(|s| match s.tokens.get(token) {
        Some(t) if t.expires_at > now() => None,
        _ if !s.containers.contains_key(id) => Some(Revoked::ContainerDeleted),
        _ => Some(Revoked::Revoked),
    })
}

/// Whether console token `t` still holds a session on container `id` open (`None`) or why
/// not: the one check of the WebSocket and attach consoles. A single-use token was consumed
/// when the session opened: only its expiry ends it.
pub fn gone(tokens: &Tokens, t: &TempToken, id: &str) -> Option<Revoked> {
    if t.expires_at <= now() {
        return Some(Revoked::Expired);
    }
    if t.remove_on_use {
        return None;
    }
    revoked(tokens, &t.token, id)
}

/// `DELETE /auth/tokens`: every console token goes; returns how many there were.
pub async fn revoke_all(tokens: &Tokens) -> Result<usize> {
    tokens.store.update(|s| Ok(std::mem::take(&mut s.tokens).len())).await
}

/// Makes `token` the master token and revokes every console token in one step (under the
/// store's lock): no request sees the new master token beside an old console token, and
/// none mints a console token with the old one after it (see [`issue`]). Returns how many
/// were revoked, or `None` when the token did not change.
pub async fn replace_master(tokens: &Tokens, token: String) -> Result<Option<usize>> {
    tokens
        .store
        .update(|s| {
            if !tokens.master.set(token) {
                return Ok(None);
            }
            Ok(Some(std::mem::take(&mut s.tokens).len()))
        })
        .await
}

/// Picks up a master token replaced by `lightd --token reset` (or an edited config) within
/// a second, or at once on SIGHUP; every console token dies with the old master token.
/// Runs for the daemon's lifetime.
pub async fn watch_master(tokens: Tokens) {
    let path = tokens.config_path.as_deref().map(|p| p.as_path());
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = secret::stamp(&tokens.config, path);
    // A revocation that could not be saved is tried again on every tick until it is.
    let mut owed = false;
    loop {
        let hup_now = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let forced = tokio::select! {
            _ = tokio::time::sleep(secret::POLL) => false,
            _ = hup_now => true,
        };
        if owed && revoke_all(&tokens).await.is_ok() {
            owed = false;
            crate::info!("console tokens of the old master token revoked");
        }
        let now = secret::stamp(&tokens.config, path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match secret::reread(&tokens.config, path) {
            Ok(Some(token)) => match replace_master(&tokens, token).await {
                Ok(Some(revoked)) => {
                    crate::info!("the master token changed; {revoked} console token(s) revoked")
                }
                Ok(None) => {}
                Err(e) => {
                    owed = true;
                    crate::warn!("the master token changed but console tokens could not be revoked yet: {e}")
                }
            },
            Ok(None) => {}
            Err(e) => crate::warn!("cannot reread the token: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("10m").unwrap(), 600);
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("2h").unwrap(), 7200);
        assert_eq!(parse_ttl("1d").unwrap(), 86400);
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("8d").is_err());
        assert!(parse_ttl("ten").is_err());
        assert!(parse_ttl("").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
        assert_eq!(parse_ttl(" 30s ").unwrap(), 30);
        assert_eq!(parse_ttl("1s").unwrap(), 1, "the shortest");
        assert_eq!(parse_ttl("7d").unwrap(), MAX_TTL, "the longest");
        assert_eq!(MAX_TTL, 604_800);
        assert!(parse_ttl("604801").is_err());
    }

    use crate::model::{InstallState, PowerState};
    use crate::testutil::TempDir;

    /// A store (with its writer) holding container `srv`, and the tokens handle over it with
    /// master token `master`, at most 3 console tokens and 2 sessions per token.
    async fn bed() -> (Tokens, TempDir) {
        let dir = TempDir::new("tokens");
        let store = Store::open(&dir.path().join("state.json")).unwrap();
        tokio::spawn(Arc::clone(&store).run_writer());
        let srv = crate::testutil::record(PowerState::Offline, InstallState::Ready);
        store.update(|s| Ok::<_, Error>(s.containers.insert("srv".into(), srv))).await.unwrap();
        let mut config = Config::default();
        config.authorization.max_console_tokens = 3;
        config.console.max_sessions_per_token = 2;
        (Tokens::new(Arc::new(config), None, "master".into(), store), dir)
    }

    /// Puts a console token in the table as it is, bypassing `issue`.
    async fn put(tokens: &Tokens, token: &str, id: Option<&str>, expires_at: u64, remove_on_use: bool) -> TempToken {
        let t = TempToken {
            token: token.into(),
            internal_id: id.map(Into::into),
            expires_at,
            remove_on_use,
            transfer: false,
        };
        let record = t.clone();
        tokens.store.update(|s| Ok::<_, Error>(s.tokens.insert(t.token.clone(), record))).await.unwrap();
        t
    }

    fn live(tokens: &Tokens) -> usize {
        tokens.store.read_latest(|s| s.tokens.len())
    }

    /// The master token compares whole: no prefix, no longer token, no other one.
    #[tokio::test]
    async fn the_master_token_is_compared_whole() {
        let (tokens, _dir) = bed().await;
        assert!(tokens.is_master(b"master"));
        for other in [&b""[..], b"maste", b"masterr", b"Master", b"xaster"] {
            assert!(!tokens.is_master(other), "{:?}", String::from_utf8_lossy(other));
        }
    }

    /// A token lasts its ttl (rounded up to a whole second), names an existing container
    /// when it names one, and is only minted with the current master token.
    #[tokio::test]
    async fn issue_checks_the_container_and_the_master_token() {
        let (tokens, _dir) = bed().await;
        let before = now();
        let t = issue(&tokens, b"master", 600, Some("srv".into()), false, false).await.unwrap();
        let after = now();
        assert!((before + 601..=after + 601).contains(&t.expires_at), "{} for ttl 600 at {before}", t.expires_at);
        assert_eq!(t.internal_id.as_deref(), Some("srv"));
        assert_eq!(tokens.store.read(|s| s.tokens.get(&t.token).cloned()), Some(t.clone()), "saved");
        let all = issue(&tokens, b"master", 60, None, true, false).await.unwrap();
        assert_eq!((all.internal_id, all.remove_on_use), (None, true));
        assert_ne!(all.token, t.token);
        let missing = issue(&tokens, b"master", 60, Some("nope".into()), false, false).await;
        assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
        let bad_id = issue(&tokens, b"master", 60, Some(".hidden".into()), false, false).await;
        assert!(matches!(bad_id, Err(Error::BadRequest(_))), "{bad_id:?}");
        let old = issue(&tokens, b"old master", 60, Some("srv".into()), false, false).await;
        assert!(matches!(old, Err(Error::Unauthorized(_))), "{old:?}");
        assert_eq!(live(&tokens), 2, "refused ones are not recorded");
    }

    /// The table is bounded: expired tokens are purged first (one expiring this very second
    /// included), then a full table refuses.
    #[tokio::test]
    async fn the_table_is_bounded_and_purged_of_expired_tokens() {
        let (tokens, _dir) = bed().await;
        put(&tokens, "old", None, now().saturating_sub(5), false).await;
        put(&tokens, "ending", None, now(), false).await;
        put(&tokens, "live", None, now() + 100, false).await;
        assert_eq!(live(&tokens), 3);
        issue(&tokens, b"master", 60, None, false, false).await.unwrap();
        assert_eq!(live(&tokens), 2, "the two expired ones went");
        issue(&tokens, b"master", 60, None, false, false).await.unwrap();
        let full = issue(&tokens, b"master", 60, None, false, false).await;
        assert!(matches!(full, Err(Error::TooMany(_))), "{full:?}");
        assert_eq!(live(&tokens), 3);
    }

    /// A token opens its own container's console only, until it expires; a token of scope
    /// "all" opens any; a single-use token opens one session.
    #[tokio::test]
    async fn redeem_checks_token_expiry_container_and_single_use() {
        let (tokens, _dir) = bed().await;
        let t = issue(&tokens, b"master", 60, Some("srv".into()), false, false).await.unwrap();
        assert_eq!(redeem(&tokens, &t.token, "srv").await, Ok(t.clone()));
        assert_eq!(redeem(&tokens, &t.token, "srv").await, Ok(t.clone()), "reusable");
        assert_eq!(redeem(&tokens, &t.token, "other").await, Err(Denied::OtherContainer));
        assert_eq!(redeem(&tokens, "lt_nope", "srv").await, Err(Denied::Invalid("Invalid token")));
        let all = put(&tokens, "all", None, now() + 60, false).await;
        assert_eq!(redeem(&tokens, "all", "anything").await, Ok(all));
        put(&tokens, "expired", Some("srv"), now(), false).await;
        assert_eq!(redeem(&tokens, "expired", "srv").await, Err(Denied::Invalid("Token expired")));
        let once = put(&tokens, "once", Some("srv"), now() + 60, true).await;
        assert_eq!(redeem(&tokens, "once", "other").await, Err(Denied::OtherContainer), "not used up by a refusal");
        assert_eq!(redeem(&tokens, "once", "srv").await, Ok(once));
        assert_eq!(redeem(&tokens, "once", "srv").await, Err(Denied::Invalid("Invalid token")), "used up");
        assert!(tokens.store.read_latest(|s| !s.tokens.contains_key("once")));
    }

    /// What ends a running session: expiry, its container deleted, revocation; a single-use
    /// token (consumed when the session opened) only by expiry.
    #[tokio::test]
    async fn gone_says_why_a_session_ends() {
        let (tokens, _dir) = bed().await;
        let t = issue(&tokens, b"master", 60, Some("srv".into()), false, false).await.unwrap();
        assert_eq!(gone(&tokens, &t, "srv"), None);
        assert_eq!(revoked(&tokens, &t.token, "srv"), None);
        let expired = TempToken { expires_at: now(), ..t.clone() };
        assert_eq!(gone(&tokens, &expired, "srv"), Some(Revoked::Expired));
        let once = TempToken { token: "consumed".into(), remove_on_use: true, ..t.clone() };
        assert_eq!(gone(&tokens, &once, "srv"), None, "not in the table, and still standing");
        assert_eq!(gone(&tokens, &TempToken { expires_at: now(), ..once }, "srv"), Some(Revoked::Expired));
        // In the table but expiring this second: no longer standing.
        put(&tokens, "ending", Some("srv"), now(), false).await;
        assert_eq!(revoked(&tokens, "ending", "srv"), Some(Revoked::Revoked));
        // Its container deleted (and its tokens with it).
        tokens
            .store
            .update(|s| {
                s.containers.remove("srv");
                s.tokens.retain(|_, x| x.internal_id.as_deref() != Some("srv"));
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
        assert_eq!(gone(&tokens, &t, "srv"), Some(Revoked::ContainerDeleted));
        assert_eq!(Revoked::ContainerDeleted.reason(), "container deleted");
        assert_eq!(Revoked::Expired.reason(), "token expired");
        assert_eq!(Revoked::Revoked.reason(), "token revoked");
    }

    /// `DELETE /auth/tokens` and a new master token revoke every console token at once.
    #[tokio::test]
    async fn revocation_and_a_new_master_token() {
        let (tokens, _dir) = bed().await;
        let t = issue(&tokens, b"master", 60, Some("srv".into()), false, false).await.unwrap();
        issue(&tokens, b"master", 60, None, false, false).await.unwrap();
        assert_eq!(revoke_all(&tokens).await.unwrap(), 2);
        assert_eq!(live(&tokens), 0);
        assert_eq!(gone(&tokens, &t, "srv"), Some(Revoked::Revoked));
        assert_eq!(revoke_all(&tokens).await.unwrap(), 0);
        issue(&tokens, b"master", 60, None, false, false).await.unwrap();
        assert_eq!(replace_master(&tokens, "master".into()).await.unwrap(), None, "unchanged");
        assert_eq!(live(&tokens), 1, "an unchanged token revokes nothing");
        assert_eq!(replace_master(&tokens, "fresh".into()).await.unwrap(), Some(1));
        assert_eq!(live(&tokens), 0);
        assert!(tokens.is_master(b"fresh") && !tokens.is_master(b"master"));
        let old = issue(&tokens, b"master", 60, None, false, false).await;
        assert!(matches!(old, Err(Error::Unauthorized(_))), "{old:?}");
        issue(&tokens, b"fresh", 60, None, false, false).await.unwrap();
    }

    /// A transfer token names a server that is not here yet, opens its transfer routes only,
    /// and never a console; a console token never opens the transfer routes.
    #[tokio::test]
    async fn a_transfer_token_opens_its_transfer_only() {
        let (tokens, _dir) = bed().await;
        let t = issue(&tokens, b"master", 60, Some("elsewhere".into()), false, true).await.unwrap();
        assert!(t.transfer);
        assert_eq!(redeem_transfer(&tokens, &t.token, "elsewhere"), Ok(t.clone()));
        assert_eq!(redeem_transfer(&tokens, &t.token, "srv"), Err(Denied::OtherContainer));
        assert_eq!(redeem(&tokens, &t.token, "elsewhere").await, Err(Denied::Invalid("Invalid token")));
        let console = issue(&tokens, b"master", 60, Some("srv".into()), false, false).await.unwrap();
        assert_eq!(redeem_transfer(&tokens, &console.token, "srv"), Err(Denied::Invalid("Invalid transfer token")));
        put(&tokens, "old", Some("elsewhere"), now(), false).await;
        tokens.store.update(|s| Ok::<_, Error>(s.tokens.get_mut("old").map(|t| t.transfer = true))).await.unwrap();
        assert_eq!(redeem_transfer(&tokens, "old", "elsewhere"), Err(Denied::Invalid("Transfer token expired")));
    }

    /// Sessions per token are bounded, each counted until its guard drops; tokens count apart.
    #[tokio::test]
    async fn sessions_per_token_are_bounded() {
        let (tokens, _dir) = bed().await;
        let open = |t: &str| tokens.sessions.open.lock().unwrap().get(t).copied();
        let a1 = enter(&tokens, "a").unwrap();
        let a2 = enter(&tokens, "a").unwrap();
        assert_eq!(open("a"), Some(2));
        assert!(matches!(enter(&tokens, "a"), Err(Error::TooMany(_))));
        let b = enter(&tokens, "b").unwrap();
        drop(a1);
        assert_eq!(open("a"), Some(1));
        let a3 = enter(&tokens, "a").unwrap();
        drop((a2, a3, b));
        assert!(tokens.sessions.open.lock().unwrap().is_empty(), "no count stays behind");
    }
}
