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
    }
}
