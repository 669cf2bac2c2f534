//! Custom host mounts of a server (`mount` in a create): what may be mounted, judged on paths
//! with every symlink resolved (sources, `containers.allowed_mounts` roots and lightd's own
//! places alike), on a blocking thread, never on the runtime's.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::error::Failure;
use super::spec::{DATA, HOME};
use super::Supervisors;
use crate::config::Config;
use crate::error::{bad, Result};
use crate::model::ContainerRecord;

/// One custom bind mount as it goes into a container spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Where it appears inside the container.
    pub target: String,
    /// The host directory, resolved (what the record keeps).
    pub source: String,
    /// Read-write: its allowed root says `"rw": true`.
    pub rw: bool,
}

/// The config's paths as they resolve on disk now: the allowed roots, and the places that are
/// lightd's own (a server mounting one could read the backups or another tenant's volume, or
/// write the entrypoint every server runs).
pub struct Places {
    /// `containers.allowed_mounts` entries that exist, resolved, with whether they allow rw.
    allowed: Vec<(PathBuf, bool)>,
    /// lightd's own places by the config key that names them, resolved (one that does not
    /// exist yet: its nearest existing ancestor resolved, the rest appended).
    own: Vec<(&'static str, PathBuf)>,
}

impl Places {
    /// Resolves every path of `config` (blocking: run it off the runtime's threads).
    pub fn resolve(config: &Config) -> Places {
        let allowed = config
            .containers
            .allowed_mounts
            .iter()
            .filter_map(|a| a.path().canonicalize().ok().map(|root| (root, a.writable())))
            .collect();
        let state_dir = match config.storage.state_file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let own = [
            ("volumes.base_path", config.volumes.base_path.as_path()),
            ("storage.data_path", config.storage.data_path.as_path()),
            ("storage.state_file", state_dir),
            ("backups.path", config.backups.path.as_path()),
            ("docker.socket_path", config.docker.socket_path.as_path()),
        ];
        Places { allowed, own: own.into_iter().map(|(key, p)| (key, resolve_lenient(p))).collect() }
    }

    /// Whether a resolved source lies under an allowed root, and if so whether one of the
    /// roots it lies under allows read-write.
    fn allowed(&self, source: &Path) -> Option<bool> {
        let roots = self.allowed.iter().filter(|(root, _)| source.starts_with(root));
        roots.fold(None, |rw, (_, w)| Some(rw.unwrap_or(false) || *w))
    }

    /// The first of lightd's own places a resolved source is, contains or lies inside.
    fn own_overlap(&self, source: &Path) -> Option<(&'static str, &Path)> {
        self.own.iter().find(|(_, p)| overlaps(source, p)).map(|(key, p)| (*key, p.as_path()))
    }
}

/// `path` with symlinks resolved; for a path that does not exist (yet), its nearest existing
/// ancestor resolved and the rest appended as written (`..` never appears: config paths are
/// checked for it at load).
fn resolve_lenient(path: &Path) -> PathBuf {
    let mut rest: Vec<OsString> = Vec::new();
    let mut at = path;
    loop {
        if let Ok(mut resolved) = at.canonicalize() {
            resolved.extend(rest.iter().rev());
            return resolved;
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// A clean absolute path: no `..`, no `.`, no NUL.
fn clean_absolute(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    let ok = path.is_absolute()
        && !p.contains('\0')
        && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    ok.then(|| path.to_path_buf())
}

/// One path is the other or lies inside it.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// What needs no disk: targets are clean absolute paths clear of lightd's own, sources clean
/// absolute paths. (Where the sources lead is [`resolve`]'s to judge.)
pub fn check_syntax(mount: &BTreeMap<String, String>) -> Result<()> {
    for (target, source) in mount {
        let t = clean_absolute(target)
            .ok_or_else(|| bad(format!("mount target {target:?} must be an absolute path without ..")))?;
        if t == Path::new("/")
            || t.starts_with(HOME)
            || t.starts_with(DATA)
            || Path::new(HOME).starts_with(&t)
            || Path::new(DATA).starts_with(&t)
        {
            return Err(bad(format!("mount target {target} overlaps {HOME} or {DATA}")));
        }
        clean_absolute(source)
            .ok_or_else(|| bad(format!("mount source {source:?} must be an absolute path without ..")))?;
    }
    Ok(())
}

/// Resolves every source (blocking): it exists, lies under an allowed root (none by default)
/// with symlinks resolved, is clear of lightd's own places, and no two overlap. Returns the map
/// with resolved sources, so what is recorded is what gets mounted.
pub fn resolve_blocking(mount: &BTreeMap<String, String>, places: &Places) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (target, source) in mount {
        let resolved =
            Path::new(source).canonicalize().ok().filter(|r| places.allowed(r).is_some()).ok_or_else(|| {
                bad(format!("Mount source not allowed: {source} (allowed under containers.allowed_mounts)"))
            })?;
        if let Some((key, own)) = places.own_overlap(&resolved) {
            return Err(bad(format!(
                "Mount source {source} (resolved: {}) overlaps lightd's own {} ({key})",
                resolved.display(),
                own.display()
            )));
        }
        out.insert(target.clone(), resolved.to_string_lossy().into_owned());
    }
    let sources: Vec<&String> = out.values().collect();
    for (i, a) in sources.iter().enumerate() {
        if let Some(b) = sources[i + 1..].iter().find(|b| overlaps(Path::new(a), Path::new(b))) {
            return Err(bad(format!("Mount sources {a} and {b} overlap: one lies inside the other")));
        }
    }
    Ok(out)
}

/// [`resolve_blocking`] with the config's places, on a blocking thread.
pub async fn resolve(sups: &Supervisors, mount: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    if mount.is_empty() {
        return Ok(BTreeMap::new());
    }
    let (sups, mount) = (sups.clone(), mount.clone());
    tokio::task::spawn_blocking(move || resolve_blocking(&mount, &Places::resolve(&sups.config)))
        .await
        .unwrap_or_else(|e| Err(Failure::MountCheck(e.to_string()).into()))
}

/// A (resolved) mount source must not contain or lie inside another container's (a server
/// that can write above another's source could swap that source for a symlink to `/`).
pub fn check_isolation(rec: &ContainerRecord, others: &[&ContainerRecord]) -> Result<()> {
    for source in rec.mount.values().map(Path::new) {
        for other in others.iter().filter(|o| o.internal_id != rec.internal_id) {
            if let Some(o) = other.mount.values().find(|o| overlaps(source, Path::new(o))) {
                return Err(bad(format!(
                    "Mount source {} overlaps {o}, a mount source of {}",
                    source.display(),
                    other.internal_id
                )));
            }
        }
    }
    Ok(())
}

/// Before each container is made or started (blocking): every source still resolves to
/// itself (nobody swapped a part of it for a symlink since it was checked), is still allowed
/// and is still clear of lightd's own places (the config may have changed since).
pub fn verify_blocking(mount: &BTreeMap<String, String>, places: &Places) -> std::result::Result<Vec<Bind>, String> {
    let mut binds = Vec::with_capacity(mount.len());
    for (target, source) in mount {
        let now = Path::new(source).canonicalize().map_err(|e| format!("mount source {source}: {e}"))?;
        if now != Path::new(source) {
            return Err(format!(
                "mount source {source} changed since it was checked (it now resolves to {}); refusing to use it",
                now.display()
            ));
        }
        let rw = places
            .allowed(&now)
            .ok_or_else(|| format!("mount source {source} is no longer allowed by containers.allowed_mounts"))?;
        if let Some((key, own)) = places.own_overlap(&now) {
            return Err(format!("mount source {source} overlaps lightd's own {} ({key})", own.display()));
        }
        binds.push(Bind { target: target.clone(), source: source.clone(), rw });
    }
    Ok(binds)
}

/// [`verify_blocking`] for a record, on a blocking thread.
pub async fn verify(sups: &Supervisors, rec: &ContainerRecord) -> std::result::Result<Vec<Bind>, String> {
    if rec.mount.is_empty() {
        return Ok(Vec::new());
    }
    let (sups, mount) = (sups.clone(), rec.mount.clone());
    tokio::task::spawn_blocking(move || verify_blocking(&mount, &Places::resolve(&sups.config)))
        .await
        .unwrap_or_else(|e| Err(format!("mount check failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AllowedMount;

    /// A scratch tree: `allowed/` (the allowed root) with `maps/`, lightd's `backups/` inside
    /// it, `escape` (a link to `/etc`) and `to-backups` (a link to the backups), and `alias`,
    /// a link to `allowed/` through which the config names the volumes' base.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let root = std::env::temp_dir().join(format!("lightd-mounts-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let allowed = root.join("allowed");
            for d in ["maps", "backups", "volumes"] {
                std::fs::create_dir_all(allowed.join(d)).unwrap();
            }
            std::os::unix::fs::symlink("/etc", allowed.join("escape")).unwrap();
            std::os::unix::fs::symlink(allowed.join("backups"), allowed.join("to-backups")).unwrap();
            std::os::unix::fs::symlink(&allowed, root.join("alias")).unwrap();
            Tree(root)
        }

        fn config(&self) -> Config {
            let mut c = Config::default();
            c.containers.allowed_mounts = vec![AllowedMount::ReadOnly(self.0.join("allowed"))];
            c.backups.path = self.0.join("allowed/backups");
            c.volumes.base_path = self.0.join("alias/volumes");
            c.storage.data_path = self.0.join("data");
            c.storage.state_file = self.0.join("state/state.json");
            c
        }

        fn map(&self, source: &str) -> BTreeMap<String, String> {
            BTreeMap::from([("/x".to_string(), self.0.join(source).to_string_lossy().into_owned())])
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn only_under_allowed_roots_after_resolving_links() {
        let t = Tree::new("allowed");
        let places = Places::resolve(&t.config());
        let ok = resolve_blocking(&t.map("allowed/maps"), &places).unwrap();
        assert_eq!(ok["/x"], t.0.join("allowed/maps").canonicalize().unwrap().to_string_lossy());
        let e = resolve_blocking(&t.map("allowed/escape"), &places).unwrap_err().to_string();
        assert!(e.contains("not allowed"), "{e}");
        let e = resolve_blocking(&t.map("allowed/missing"), &places).unwrap_err().to_string();
        assert!(e.contains("not allowed"), "{e}");
        assert!(resolve_blocking(&t.map("allowed/maps"), &Places::resolve(&Config::default())).is_err());
    }

    #[test]
    fn lightds_own_places_are_refused_however_they_are_named() {
        let t = Tree::new("own");
        let places = Places::resolve(&t.config());
        for (source, key) in [
            ("allowed/backups", "backups.path"),
            ("allowed/to-backups", "backups.path"),
            ("allowed", "volumes.base_path"),
            ("allowed/volumes", "volumes.base_path"),
        ] {
            let e = resolve_blocking(&t.map(source), &places).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("overlaps lightd's own"), "{source}: {e}");
            // And at a start, should the config have changed since the create.
            let resolved = t.0.join(source).canonicalize().unwrap().to_string_lossy().into_owned();
            let e = verify_blocking(&BTreeMap::from([("/x".into(), resolved)]), &places).unwrap_err();
            assert!(e.contains(key), "{source}: {e}");
        }
    }

    #[test]
    fn a_missing_place_resolves_through_its_existing_ancestors() {
        let t = Tree::new("lenient");
        let resolved = resolve_lenient(&t.0.join("alias/not/yet"));
        assert_eq!(resolved, t.0.join("allowed").canonicalize().unwrap().join("not/yet"));
    }

    #[test]
    fn targets_and_source_syntax() {
        let one = |t: &str, s: &str| check_syntax(&BTreeMap::from([(t.to_string(), s.to_string())]));
        assert!(one("/maps", "/srv/maps").is_ok());
        assert!(one("rel", "/srv").unwrap_err().to_string().contains("mount target"));
        assert!(one("/home/container/x", "/srv").unwrap_err().to_string().contains("overlaps"));
        assert!(one("/home", "/srv").unwrap_err().to_string().contains("overlaps"));
        assert!(one("/", "/srv").unwrap_err().to_string().contains("overlaps"));
        assert!(one("/maps", "/srv/../etc").unwrap_err().to_string().contains("mount source"));
        assert!(one("/maps", "srv").unwrap_err().to_string().contains("mount source"));
    }

    #[test]
    fn verify_sees_a_swapped_source_and_reads_rw_from_the_root() {
        let t = Tree::new("verify");
        let mut config = t.config();
        config.containers.allowed_mounts = vec![AllowedMount::Entry { path: t.0.join("allowed"), rw: true }];
        let places = Places::resolve(&config);
        let recorded = resolve_blocking(&t.map("allowed/maps"), &places).unwrap();
        let binds = verify_blocking(&recorded, &places).unwrap();
        assert_eq!(binds, vec![Bind { target: "/x".into(), source: recorded["/x"].clone(), rw: true }]);
        std::fs::remove_dir(t.0.join("allowed/maps")).unwrap();
        std::os::unix::fs::symlink("/", t.0.join("allowed/maps")).unwrap();
        assert!(verify_blocking(&recorded, &places).unwrap_err().contains("changed since it was checked"));
    }
}
