//! SFTP users of a volume: checked, their passwords hashed (argon2id), kept in the state file
//! by login (`<username>.<volume id>`), and the checks a login makes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use russh::keys::PublicKey;
use serde::Serialize;

use super::Sessions;
use crate::error::{bad, conflict, Error, Result};
use crate::model::{now, SftpUser};
use crate::store::Store;
use crate::volumes::{self, Volumes};

/// Most public keys one user may have.
pub const MAX_KEYS: usize = 32;
/// Password length bounds (characters).
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;

/// A user as the API shows it: never a secret.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub username: String,
    pub login: String,
    pub volume_id: String,
    pub read_only: bool,
    pub password: bool,
    /// How many public keys it has (the keys themselves are by `key_fingerprints`).
    pub public_keys: usize,
    /// Each key's SHA-256 fingerprint, as `ssh-keygen -l` and clients show it.
    pub key_fingerprints: Vec<String>,
    pub created_at: u64,
}

impl From<&SftpUser> for UserView {
    fn from(u: &SftpUser) -> Self {
        UserView {
            username: u.username.clone(),
            login: u.login(),
            volume_id: u.volume_id.clone(),
            read_only: u.read_only,
            password: u.password_hash.is_some(),
            public_keys: u.public_keys.len(),
            key_fingerprints: u.public_keys.iter().map(|k| fingerprint(k)).collect(),
            created_at: u.created_at,
        }
    }
}

/// 1-32 of `a-z 0-9 _ -`, starting with a letter or digit (no `.`: it separates the volume).
pub fn valid_username(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// An OpenSSH public key line, checked and kept without its comment.
pub fn normalize_key(line: &str) -> std::result::Result<String, String> {
    let key = PublicKey::from_openssh(line.trim()).map_err(|e| format!("not an OpenSSH public key ({e})"))?;
    openssh(&key)
}

/// The SHA-256 fingerprint (`SHA256:...`) of a key kept as [`openssh`] wrote it.
pub fn fingerprint(line: &str) -> String {
    PublicKey::from_openssh(line)
        .map(|k| k.fingerprint(russh::keys::HashAlg::Sha256).to_string())
        .unwrap_or_else(|_| "unreadable key".into())
}

/// `algorithm base64` of a key (no comment).
pub fn openssh(key: &PublicKey) -> std::result::Result<String, String> {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh().map(|s| s.trim().to_string()).map_err(|e| e.to_string())
}

/// The slow salted hash of a password: argon2id, 7 MiB, 5 passes (an OWASP-listed setting that
/// keeps 50 logins at once within a few hundred MiB).
pub fn hash_password(password: &str) -> Result<String> {
    let salt: [u8; 16] = crate::fsutil::random_bytes().map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
    let params = Params::new(7 * 1024, 5, 1, None).map_err(|e| Error::Internal(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches a stored hash (its own parameters are used).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// What `POST /volumes/:v/sftp/users` takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    /// Absent or a string (a `null` is refused, as the schema says).
    #[serde(default, deserialize_with = "present")]
    pub password: Option<String>,
    #[serde(default)]
    pub public_keys: Vec<String>,
    #[serde(default)]
    pub read_only: bool,
}

/// A field that, when present, must be a string.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    <String as serde::Deserialize>::deserialize(d).map(Some)
}

/// Adds a user to the volume `key` names.
pub async fn create(volumes: &Volumes, store: &Store, key: &str, new: NewUser) -> Result<UserView> {
    let volume = volumes::find(volumes, key)?;
    if !valid_username(&new.username) {
        return Err(bad("username must be 1-32 characters of a-z 0-9 _ -, starting with a letter or digit"));
    }
    let keys = new.public_keys;
    if new.password.is_none() && keys.is_empty() {
        return Err(bad("give a password or at least one public key"));
    }
    if keys.len() > MAX_KEYS {
        return Err(bad(format!("at most {MAX_KEYS} public keys")));
    }
    let mut public_keys = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        public_keys.push(normalize_key(k).map_err(|e| bad(format!("public_keys[{i}]: {e}")))?);
    }
    let password_hash = match new.password {
        None => None,
        Some(p) if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&p.chars().count()) => {
            return Err(bad(format!("password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")));
        }
        Some(p) => Some(
            tokio::task::spawn_blocking(move || hash_password(&p))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??,
        ),
    };
    let user = SftpUser {
        username: new.username,
        volume_id: volume.volume_id.clone(),
        password_hash,
        public_keys,
        read_only: new.read_only,
        created_at: now(),
        generation: u64::from_le_bytes(
            crate::fsutil::random_bytes().map_err(|e| Error::Internal(format!("no randomness: {e}")))?,
        ),
    };
    let login = user.login();
    let record = user.clone();
    store
        .update(move |s| {
            if !s.volumes.contains_key(&record.volume_id) {
                return Err(Error::NotFound("Volume not found".into()));
            }
            if s.sftp_users.contains_key(&login) {
                return Err(conflict(format!("SFTP user {} already exists on this volume", record.username)));
            }
            s.sftp_users.insert(login, record);
            Ok(())
        })
        .await?;
    Ok(UserView::from(&user))
}

/// The users of the volume `key` names, by username.
pub fn list(volumes: &Volumes, store: &Store, key: &str) -> Result<Vec<UserView>> {
    let volume = volumes::find(volumes, key)?;
    let mut users: Vec<UserView> =
        store.read(|s| s.sftp_users.values().filter(|u| u.volume_id == volume.volume_id).map(UserView::from).collect());
    users.sort_by(|a, b| a.username.cmp(&b.username));
    Ok(users)
}

/// Removes a user and ends its live sessions; how many there were. (The server's watch would
/// end them too, within a fraction of a second; this also counts them.)
pub async fn delete(volumes: &Volumes, store: &Store, sessions: &Sessions, key: &str, username: &str) -> Result<usize> {
    let volume = volumes::find(volumes, key)?;
    let login = format!("{username}.{}", volume.volume_id);
    let gone = login.clone();
    let user = store
        .update(move |s| s.sftp_users.remove(&gone).ok_or_else(|| Error::NotFound("SFTP user not found".into())))
        .await?;
    Ok(sessions.end_user(&login, user.generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_keys_are_checked() {
        for good in ["alice", "a", "bob_2", "9-x"] {
            assert!(valid_username(good), "{good}");
        }
        for bad in ["", "Alice", "a.b", "-a", "_a", "a b", &"a".repeat(33)] {
            assert!(!valid_username(bad), "{bad}");
        }
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb5P0zvKk5xq0a1pB2hC9b8T0q2ZbZ3cq4m3d3Y6m9F me@host";
        assert_eq!(
            normalize_key(line).unwrap(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb5P0zvKk5xq0a1pB2hC9b8T0q2ZbZ3cq4m3d3Y6m9F"
        );
        assert_eq!(fingerprint(&normalize_key(line).unwrap()), "SHA256:peG3d/MZfmm4Sd+I7SldMDmoVFlWDkUNWXSC9yyVbWs");
        assert!(normalize_key("ssh-ed25519 AAAA").is_err());
        assert!(normalize_key("hello").is_err());
    }

    #[test]
    fn a_null_secret_is_refused_not_taken_for_none() {
        let parse = |v: serde_json::Value| serde_json::from_value::<NewUser>(v);
        assert!(parse(serde_json::json!({"username": "a", "password": null})).is_err());
        assert!(parse(serde_json::json!({"username": "a", "public_keys": null})).is_err());
        assert!(parse(serde_json::json!({"username": "a", "shell": "bash"})).is_err());
        let ok = parse(serde_json::json!({"username": "a"})).unwrap();
        assert!(ok.password.is_none() && ok.public_keys.is_empty() && !ok.read_only);
    }

    #[test]
    fn passwords_are_hashed_and_verified() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horsE"));
        assert!(!verify_password("garbage", "correct horse"));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
    }
}
