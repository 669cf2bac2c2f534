//! Short-lived tokens for the WebSocket and attach consoles (`POST /auth/tokens`), so a
//! browser never holds the master token. Kept in the state file; expired ones are purged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::app::App;
use crate::error::{bad, Error, Result};
use crate::ids::{self, constant_time_eq};
use crate::model::{now, TempToken};

/// Longest lifetime a temporary token may ask for.
pub const MAX_TTL: u64 = 7 * 24 * 3600;
pub const DEFAULT_TTL: u64 = 600;

/// How many console sessions each console token has open (bounded per token).
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, usize>>,
}

/// Counts one session of a token until dropped.
pub struct SessionGuard {
    app: Arc<App>,
    token: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut open = self.app.console_sessions.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.token);
            }
        }
    }
}

/// Counts a session of `token` in, or refuses past `console.max_sessions_per_token` (429).
pub fn enter(app: &Arc<App>, token: &str) -> Result<SessionGuard> {
    let max = app.config.console.max_sessions_per_token;
    let mut open = app.console_sessions.open.lock().unwrap_or_else(|p| p.into_inner());
    let n = open.entry(token.to_string()).or_insert(0);
    if *n >= max {
        return Err(Error::TooMany(format!(
            "this console token already has {max} sessions open (console.max_sessions_per_token)"
        )));
    }
    *n += 1;
    Ok(SessionGuard { app: Arc::clone(app), token: token.to_string() })
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

/// Issues a token; a bound container must exist. The table is bounded
/// (`authorization.max_console_tokens`): expired tokens are purged first, then a full table
/// refuses.
///
/// `headers` are the request's: the master token it was let in with must still be the master
/// token when the token is recorded, so a token minted with the old master token while it
/// is being replaced never outlives it.
pub async fn issue(
    app: &App,
    headers: &hyper::HeaderMap,
    ttl: u64,
    internal_id: Option<String>,
    remove_on_use: bool,
) -> Result<TempToken> {
    if let Some(id) = &internal_id {
        if !ids::valid_internal_id(id) {
            return Err(bad("internal_id must be 1-64 characters of A-Z a-z 0-9 _ . - and not start with ."));
        }
    }
    let token = ids::new_token().map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    // Whole seconds, rounded up (`now()` drops the fraction of this one): a token lasts at
    // least its ttl, a 1 s token issued late in a second included.
    let t = TempToken { token, internal_id, expires_at: now() + ttl + 1, remove_on_use };
    let record = t.clone();
    let max = app.config.authorization.max_console_tokens;
    app.store
        .update(|s| {
            if !crate::http::bearer_matches(headers, &app.master.get()) {
                return Err(Error::Unauthorized("the master token changed while the token was being issued".into()));
            }
            if let Some(id) = &record.internal_id {
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
pub async fn redeem(app: &App, presented: &str, id: &str) -> std::result::Result<TempToken, Denied> {
    // One keyed-hash lookup, then a constant-time compare of the whole token.
    // The latest state: a revocation counts from the moment it is made (`replace_master`
    // sets the new master token at that moment too), not from when it is on disk.
    let found = app.store.read_latest(|s| s.tokens.get(presented).cloned());
    let t = found.filter(|t| constant_time_eq(t.token.as_bytes(), presented.as_bytes()));
    let t = t.ok_or(Denied::Invalid("Invalid token"))?;
    if t.expires_at <= now() {
        return Err(Denied::Invalid("Token expired"));
    }
    if t.internal_id.as_deref().is_some_and(|bound| bound != id) {
        return Err(Denied::OtherContainer);
    }
    if t.remove_on_use {
        let used = app.store.update(|s| Ok::<_, Error>(s.tokens.remove(&t.token).is_some())).await;
        // Two racing uses: only the one that removed it gets in.
        if !matches!(used, Ok(true)) {
            return Err(Denied::Invalid("Invalid token"));
        }
    }
    Ok(t)
}

/// Why a token that opened a session no longer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Its container was deleted, and its tokens with it.
    ContainerDeleted,
    /// `DELETE /auth/tokens` or a new master token.
    Revoked,
}

impl Revoked {
    pub fn reason(self) -> &'static str {
        match self {
            Revoked::ContainerDeleted => "container deleted",
            Revoked::Revoked => "token revoked",
        }
    }
}

/// Whether a token that opened a session on container `id` was revoked since. Sessions
/// check this while they run; expiry they check themselves.
pub fn revoked(app: &App, token: &str, id: &str) -> Option<Revoked> {
    app.store.read_latest(|s| match s.tokens.get(token) {
        Some(t) if t.expires_at > now() => None,
        _ if !s.containers.contains_key(id) => Some(Revoked::ContainerDeleted),
        _ => Some(Revoked::Revoked),
    })
}

/// `DELETE /auth/tokens`: every console token goes; returns how many there were.
pub async fn revoke_all(app: &App) -> Result<usize> {
    app.store.update(|s| Ok(std::mem::take(&mut s.tokens).len())).await
}

/// Makes `token` the master token and revokes every console token in one step (under the
/// store's lock): no request sees the new master token beside an old console token, and
/// none mints a console token with the old one after it (see [`issue`]). Returns how many
/// were revoked, or `None` when the token did not change.
pub async fn replace_master(app: &App, token: String) -> Result<Option<usize>> {
    app.store
        .update(|s| {
            if !app.master.set(token) {
                return Ok(None);
            }
            Ok(Some(std::mem::take(&mut s.tokens).len()))
        })
        .await
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
        // The bounds are inclusive, and the unit is the last character only.
        assert_eq!(parse_ttl("1s").unwrap(), 1);
        assert_eq!(parse_ttl("7d").unwrap(), MAX_TTL);
        assert_eq!(parse_ttl(&MAX_TTL.to_string()).unwrap(), MAX_TTL);
        assert!(parse_ttl(&(MAX_TTL + 1).to_string()).is_err());
        assert_eq!(parse_ttl(" 5m ").unwrap(), 300);
        for bad in ["m", "5x", "5mm", "-5", "1.5h", "5 m"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    /// An app with a fresh store (and its writer) in a temp directory; no engine is asked.
    async fn app(name: &str, max_tokens: usize, max_sessions: usize) -> Arc<App> {
        let dir = std::env::temp_dir().join(format!("lightd-tokens-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::store::Store::open(&dir.join("state.json")).unwrap();
        tokio::spawn(Arc::clone(&store).run_writer());
        let mut config = crate::config::Config::default();
        config.authorization.max_console_tokens = max_tokens;
        config.console.max_sessions_per_token = max_sessions;
        let routes = crate::http::router::routes();
        App::new(config, None, "master".into(), Default::default(), store, routes)
    }

    fn cleanup(app: &App, name: &str) {
        app.store.close();
        let dir = std::env::temp_dir().join(format!("lightd-tokens-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn bearer(token: &str) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        h.insert(hyper::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    /// Puts a container record `id` in the state.
    async fn add_container(app: &App, id: &str) {
        let rec: crate::model::ContainerRecord = serde_json::from_value(serde_json::json!({
            "internal_id": id, "volume_id": "v", "image": "i", "startup_command": "c",
            "install_state": "ready", "state": "offline", "ports": [], "limits": {},
            "mount": {}, "env": {}, "created_at": 0, "updated_at": 0
        }))
        .unwrap();
        app.store.update(|s| Ok::<_, Error>(s.containers.insert(id.into(), rec))).await.unwrap();
    }

    /// Puts a token in the state as it is, expired or not.
    async fn plant(app: &App, token: &str, internal_id: Option<&str>, expires_at: u64, remove_on_use: bool) {
        let t = TempToken { token: token.into(), internal_id: internal_id.map(Into::into), expires_at, remove_on_use };
        app.store.update(|s| Ok::<_, Error>(s.tokens.insert(token.into(), t))).await.unwrap();
    }

    fn live(app: &App) -> Vec<String> {
        let mut v: Vec<String> = app.store.read_latest(|s| s.tokens.keys().cloned().collect());
        v.sort();
        v
    }

    #[tokio::test]
    async fn sessions_are_counted_per_token_and_given_back() {
        let app = app("sessions", 10, 2).await;
        let a1 = enter(&app, "a").unwrap();
        let a2 = enter(&app, "a").unwrap();
        assert!(matches!(enter(&app, "a"), Err(Error::TooMany(_))), "a third session of one token");
        let b = enter(&app, "b").unwrap();
        drop(a1);
        let a3 = enter(&app, "a").expect("a closed session gives its place back");
        assert!(matches!(enter(&app, "a"), Err(Error::TooMany(_))));
        drop((a2, a3, b));
        assert!(app.console_sessions.open.lock().unwrap().is_empty(), "no entry outlives its sessions");
        let _again: Vec<_> = (0..2).map(|_| enter(&app, "a").unwrap()).collect();
        cleanup(&app, "sessions");
    }

    #[tokio::test]
    async fn issue_checks_the_master_token_the_id_and_the_container() {
        let app = app("issue", 10, 2).await;
        add_container(&app, "srv").await;
        let before = now();
        let t = issue(&app, &bearer("master"), 600, Some("srv".into()), true).await.unwrap();
        let after = now();
        assert!((before + 601..=after + 601).contains(&t.expires_at), "ttl + 1 from now: {}", t.expires_at);
        assert_eq!((t.internal_id.as_deref(), t.remove_on_use), (Some("srv"), true));
        assert_eq!(live(&app), std::slice::from_ref(&t.token), "recorded");
        let wrong = issue(&app, &bearer("not-master"), 600, None, false).await;
        assert!(matches!(wrong, Err(Error::Unauthorized(_))), "{wrong:?}");
        let none = issue(&app, &hyper::HeaderMap::new(), 600, None, false).await;
        assert!(matches!(none, Err(Error::Unauthorized(_))), "{none:?}");
        let gone = issue(&app, &bearer("master"), 600, Some("nope".into()), false).await;
        assert!(matches!(gone, Err(Error::NotFound(_))), "{gone:?}");
        let bad_id = issue(&app, &bearer("master"), 600, Some(".x".into()), false).await;
        assert!(matches!(bad_id, Err(Error::BadRequest(_))), "{bad_id:?}");
        assert_eq!(live(&app), [t.token], "no refusal recorded anything");
        cleanup(&app, "issue");
    }

    #[tokio::test]
    async fn a_full_table_purges_expired_tokens_then_refuses() {
        let app = app("full", 2, 2).await;
        let t = now();
        plant(&app, "old", None, t - 5, false).await;
        plant(&app, "just-expired", None, t, false).await;
        // Two expired tokens make room for two live ones.
        let a = issue(&app, &bearer("master"), 60, None, false).await.unwrap();
        let b = issue(&app, &bearer("master"), 60, None, false).await.unwrap();
        let mut want = vec![a.token, b.token];
        want.sort();
        assert_eq!(live(&app), want);
        let full = issue(&app, &bearer("master"), 60, None, false).await;
        assert!(matches!(full, Err(Error::TooMany(_))), "{full:?}");
        assert_eq!(live(&app), want, "the refusal changed nothing");
        cleanup(&app, "full");
    }

    #[tokio::test]
    async fn redeem_checks_expiry_binding_and_single_use() {
        let app = app("redeem", 10, 2).await;
        let far = now() + 600;
        plant(&app, "open", None, far, false).await;
        plant(&app, "bound", Some("srv"), far, false).await;
        plant(&app, "once", Some("srv"), far, true).await;
        plant(&app, "expired", None, now() - 1, false).await;
        plant(&app, "expiring", None, now(), false).await;
        assert_eq!(redeem(&app, "nope", "srv").await.err(), Some(Denied::Invalid("Invalid token")));
        assert_eq!(redeem(&app, "expired", "srv").await.err(), Some(Denied::Invalid("Token expired")));
        assert_eq!(redeem(&app, "expiring", "srv").await.err(), Some(Denied::Invalid("Token expired")));
        assert_eq!(redeem(&app, "bound", "other").await.err(), Some(Denied::OtherContainer));
        assert_eq!(redeem(&app, "bound", "srv").await.unwrap().token, "bound");
        for id in ["srv", "other"] {
            assert_eq!(redeem(&app, "open", id).await.unwrap().token, "open", "an unbound token opens {id}");
        }
        assert_eq!(redeem(&app, "once", "other").await.err(), Some(Denied::OtherContainer), "not used up by a miss");
        assert_eq!(redeem(&app, "once", "srv").await.unwrap().token, "once");
        assert_eq!(redeem(&app, "once", "srv").await.err(), Some(Denied::Invalid("Invalid token")), "used up");
        assert_eq!(live(&app), ["bound", "expired", "expiring", "open"], "only the single-use token went");
        cleanup(&app, "redeem");
    }

    #[tokio::test]
    async fn revocation_and_a_new_master_token() {
        let app = app("revoke", 10, 2).await;
        add_container(&app, "srv").await;
        plant(&app, "live", Some("srv"), now() + 600, false).await;
        plant(&app, "stale", Some("srv"), now(), false).await;
        assert_eq!(revoked(&app, "live", "srv"), None);
        assert_eq!(revoked(&app, "stale", "srv"), Some(Revoked::Revoked), "expired counts as revoked");
        assert_eq!(revoked(&app, "unknown", "srv"), Some(Revoked::Revoked));
        assert_eq!(revoked(&app, "unknown", "deleted"), Some(Revoked::ContainerDeleted));
        assert_eq!(Revoked::Revoked.reason(), "token revoked");
        assert_eq!(Revoked::ContainerDeleted.reason(), "container deleted");
        assert_eq!(revoke_all(&app).await.unwrap(), 2);
        assert!(live(&app).is_empty());
        assert_eq!(revoked(&app, "live", "srv"), Some(Revoked::Revoked));
        plant(&app, "a", None, now() + 600, false).await;
        plant(&app, "b", None, now() + 600, false).await;
        assert_eq!(replace_master(&app, "master".into()).await.unwrap(), None, "the same token changes nothing");
        assert_eq!(live(&app), ["a", "b"]);
        assert_eq!(replace_master(&app, "new".into()).await.unwrap(), Some(2));
        assert!(live(&app).is_empty());
        assert_eq!(&*app.master.get(), "new");
        assert_eq!(revoke_all(&app).await.unwrap(), 0);
        cleanup(&app, "revoke");
    }
}
