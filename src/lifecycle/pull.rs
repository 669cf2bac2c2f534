//! Step one of an install: the image, pulled when the engine lacks it, with the credentials
//! `docker.registry_auth` has for its registry, and its progress shown to viewers.

use std::time::{Duration, Instant};

use super::bounded;
use super::install::message;
use super::progress::{Progress, MIN_GAP};
use super::Supervisors;
use crate::config::DockerConfig;
use crate::console::{Event, Hub};
use crate::docker::auth::RegistryAuth;
use crate::docker::DockerError;

/// The image, pulled when the engine does not have it (with the registry's credentials from
/// `docker.registry_auth`); progress goes to the viewers, at most 4 lines a second.
pub(super) async fn pull(sups: &Supervisors, hub: &Hub, id: &str) -> std::result::Result<(), String> {
    let image = sups.store.read(|s| s.containers.get(id).map(|r| r.image.clone())).ok_or("the record is gone")?;
    if sups.docker.image_exists(&image).await.map_err(|e| e.to_string())? {
        return Ok(());
    }
    let registry = super::image::check(&image).unwrap_or_default();
    let auth = registry_auth(&sups.config.docker, &registry);
    hub.news().publish(Event::InstallOutput(format!("Pulling image {image}")));
    let progress = std::sync::Mutex::new(Progress::new(Instant::now()));
    let show = |line: Option<String>| line.into_iter().for_each(|l| hub.news().publish(Event::InstallOutput(l)));
    let lock = || progress.lock().unwrap_or_else(|p| p.into_inner());
    let pulling = sups.docker.pull(&image, auth.as_ref(), |m| {
        let mut p = lock();
        p.update(&m);
        show(p.line(Instant::now()));
    });
    let watched = async {
        tokio::pin!(pulling);
        // Changes that came too soon after a line go out when their time comes.
        let mut tick = tokio::time::interval(MIN_GAP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                done = &mut pulling => break done,
                _ = tick.tick() => show(lock().line(Instant::now())),
            }
        }
    };
    let limit = Duration::from_secs(sups.config.containers.install_timeout);
    bounded(limit, "pulling the image", watched)
        .await
        .map_err(|e| pull_error(&image, &registry, auth.is_some(), &e))?;
    // The last changes, then the closing line, each in its turn.
    let wait = lock().wait(Instant::now());
    tokio::time::sleep(wait).await;
    show(lock().line(Instant::now()));
    let wait = lock().wait(Instant::now());
    tokio::time::sleep(wait).await;
    show(lock().done(&image, Instant::now()));
    Ok(())
}

/// The credentials `docker.registry_auth` has for `registry`, as the engine takes them.
fn registry_auth(config: &DockerConfig, registry: &str) -> Option<RegistryAuth> {
    let c = config.credential_for(registry)?;
    let server = registry.to_string();
    match (&c.username, &c.password, &c.identity_token) {
        (Some(username), Some(password), _) => {
            Some(RegistryAuth::Password { username: username.clone(), password: password.clone(), server })
        }
        (_, _, Some(token)) => Some(RegistryAuth::IdentityToken { token: token.clone(), server }),
        _ => None,
    }
}

/// A failed pull in the engine's words, with what to do when the registry wants credentials.
fn pull_error(image: &str, registry: &str, sent_auth: bool, e: &DockerError) -> String {
    let why = message(e);
    let lower = why.to_ascii_lowercase();
    let refused = ["unauthorized", "authentication required", "no basic auth credentials", "denied"]
        .iter()
        .any(|w| lower.contains(w));
    let hint = match (refused, sent_auth) {
        (false, _) => String::new(),
        (true, false) => {
            format!(" (registry authentication failed: {registry} wants credentials; set docker.registry_auth for it)")
        }
        (true, true) => {
            format!(" (registry authentication failed: {registry} refused the credentials in docker.registry_auth)")
        }
    };
    format!("Image pull failed for {image}: {why}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistryCredential;

    #[test]
    fn credentials_by_registry_and_what_a_refusal_says() {
        let mut c = DockerConfig::default();
        let cred = |u: Option<&str>, p: Option<&str>, t: Option<&str>| RegistryCredential {
            username: u.map(Into::into),
            password: p.map(Into::into),
            identity_token: t.map(Into::into),
        };
        c.registry_auth.insert("127.0.0.1:5000".into(), cred(Some("u"), Some("p"), None));
        c.registry_auth.insert("ghcr.io".into(), cred(None, None, Some("t")));
        let server = "127.0.0.1:5000".to_string();
        let want = RegistryAuth::Password { username: "u".into(), password: "p".into(), server };
        assert_eq!(registry_auth(&c, "127.0.0.1:5000"), Some(want));
        let want = RegistryAuth::IdentityToken { token: "t".into(), server: "ghcr.io".into() };
        assert_eq!(registry_auth(&c, "ghcr.io"), Some(want));
        assert_eq!(registry_auth(&c, "docker.io"), None);

        let refused = DockerError::Api { status: 500, message: "unauthorized: authentication required".into() };
        let e = pull_error("r:1/a", "r:1", false, &refused);
        assert!(e.ends_with("(registry authentication failed: r:1 wants credentials; set docker.registry_auth for it)"));
        assert!(pull_error("r:1/a", "r:1", true, &refused).contains("refused the credentials in docker.registry_auth"));
        let missing = DockerError::Api { status: 404, message: "manifest unknown".into() };
        assert_eq!(pull_error("r:1/a", "r:1", true, &missing), "Image pull failed for r:1/a: manifest unknown");
    }
}
