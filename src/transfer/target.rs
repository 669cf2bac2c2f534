//! The receiving node's side: a staging volume per incoming server, brought to the source's
//! manifest (what it lacks answered, chunks verified and written in place), then, when both
//! trees' digests agree, the server created on it with the source's spec.
//!
//! What a kill -9 leaves is what makes a transfer resumable: the staging volume (in the state
//! file) and a small file naming it under `<state dir>/transfers/`; the next manifest rehashes
//! what the volume holds and asks only for the rest.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::manifest::{self, chunk_len, digest, Entry, EntryKind, Hash, CHUNK};
use super::{wire, Rooms, Spec};
use crate::error::{Error, Result};
use crate::lifecycle::{self, action::Action};
use crate::model::{InstallState, PortBinding};
use crate::vfs::{FsError, Kind, Root};

/// `POST /transfers/:id`: the manifest of one round.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Prepare {
    pub spec: Spec,
    pub size_limit_bytes: u64,
    pub entries: Vec<Entry>,
}

/// What the target lacks: chunk indexes per path, and how many bytes it already held.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Need {
    pub need: Vec<Lacking>,
    pub bytes_reused: u64,
    pub bytes_needed: u64,
}

/// The chunks one file lacks.
#[derive(Debug, Deserialize, Serialize)]
pub struct Lacking {
    pub path: String,
    pub chunks: Vec<u32>,
}

/// One chunk of one file.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChunkRef {
    pub path: String,
    pub index: u32,
}

/// `POST /transfers/:id/finish`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Finish {
    pub digest: String,
    pub start: bool,
    #[serde(default)]
    pub ports: Option<Vec<PortBinding>>,
}

/// One incoming server's staging: its volume and what this process knows it holds.
pub(super) struct Session {
    pub(super) volume_id: String,
    spec: Option<Spec>,
    /// Chunk hashes of each file as written and verified here (or hashed from disk once).
    held: Held,
    /// The last manifest (its times are set at the end).
    last: Vec<Entry>,
    /// Backups offered to come along, by id, as they are recorded here.
    pub(super) backups: HashMap<String, crate::model::Backup>,
}

/// A session's lock: one request at a time per incoming server.
pub(super) type Slot = Arc<tokio::sync::Mutex<Option<Session>>>;

/// The incoming servers' sessions of one node, by server id (held by [`super::Transfers`]).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Slot>>);

/// The lock of `id`'s session.
pub(super) fn slot(rooms: &Rooms, id: &str) -> Slot {
    let mut map = rooms.transfers.sessions.0.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(map.entry(id.to_string()).or_default())
}

/// Where the staging volume of `id` is named across restarts.
fn marker(rooms: &Rooms, id: &str) -> PathBuf {
    rooms.config.storage.state_dir().join("transfers").join(format!("{id}.json"))
}

#[derive(Serialize, Deserialize)]
struct Marker {
    volume_id: String,
}

/// The staging volume of `id`: the one named by its marker if it still exists, else a new
/// one (after checking the node has room for `bytes`).
async fn staging(rooms: &Rooms, id: &str, size_limit: u64, bytes: u64) -> Result<String> {
    let path = marker(rooms, id);
    if let Some(m) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Marker>(&b).ok()) {
        if rooms.store.read(|s| s.volumes.contains_key(&m.volume_id)) {
            return Ok(m.volume_id);
        }
    }
    let base = rooms.config.volumes.base_path.clone();
    let free = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&base).ok();
        rustix::fs::statvfs(&base).map(|s| s.f_bavail.saturating_mul(s.f_frsize))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::Internal(format!("cannot read free space: {e}")))?;
    let free = free_for_test().unwrap_or(free);
    if free < bytes {
        return Err(Error::Full(format!(
            "the target node has {} free where the volumes are, the server's files need {}",
            crate::volumes::human(free),
            crate::volumes::human(bytes)
        )));
    }
    let size = (size_limit > 0).then(|| size_limit.to_string());
    let volume = crate::volumes::create(&rooms.volumes, size.as_deref(), None).await?;
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let body = serde_json::to_vec(&Marker { volume_id: volume.volume_id.clone() }).unwrap_or_default();
    let saved = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        crate::fsutil::write_atomic(&path, &body, 0o600)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    if let Err(e) = saved {
        let _ = crate::volumes::delete(&rooms.volumes, &rooms.backups, &volume.volume_id).await;
        return Err(Error::Internal(format!("cannot record the staging volume: {e}")));
    }
    Ok(volume.volume_id)
}

/// Test hook, debug builds only: `LIGHTD_TEST_FREE_BYTES` stands for the free space where the
/// volumes are (a full node without filling the test machine's disk).
fn free_for_test() -> Option<u64> {
    #[cfg(debug_assertions)]
    return std::env::var("LIGHTD_TEST_FREE_BYTES").ok().and_then(|v| v.parse().ok());
    #[cfg(not(debug_assertions))]
    None
}

/// The staging volume's root, writing as the server's user.
fn open(rooms: &Rooms, volume_id: &str, user: &str) -> Result<Root> {
    let path = crate::volumes::mount_path(&rooms.volumes, volume_id).map_err(Error::Conflict)?;
    let (uid, gid) = crate::model::parse_user(user).unwrap_or((1000, 1000));
    Root::open(&path).and_then(|r| r.owned_by(uid, gid)).map_err(fs)
}

fn fs(e: FsError) -> Error {
    match e {
        FsError::NoSpace => Error::Full("the staging volume is full".into()),
        FsError::Escapes | FsError::Invalid(_) | FsError::BadEntry(_) => Error::BadRequest(e.to_string()),
        // The staged tree does not have the shape a request assumes (a name that is a
        // directory, a path through a file): the manifest comes first.
        FsError::NotFound | FsError::Exists | FsError::NotADirectory | FsError::IsADirectory => {
            Error::Conflict(format!("{e} in the staged tree: send the manifest again"))
        }
        FsError::Io(e) if e.raw_os_error() == Some(libc::EFBIG) => Error::BadRequest("a file is too large".into()),
        e => Error::Internal(e.to_string()),
    }
}

/// Largest file a manifest may name (16 TiB, ext4's limit).
const MAX_FILE: u64 = 1 << 44;

/// Checks a manifest's names and hashes before anything is touched.
fn check(p: &Prepare) -> Result<()> {
    let mut seen = HashSet::new();
    for e in &p.entries {
        if e.size > MAX_FILE || e.mode > 0o7777 || e.mtime_ns >= 1_000_000_000 {
            return Err(Error::BadRequest(format!("entry {:?}: size, mode or mtime_ns out of range", e.path)));
        }
        crate::vfs::check_path(&e.path).map_err(|err| Error::BadRequest(format!("{:?}: {err}", e.path)))?;
        if e.path.is_empty() || e.path.starts_with('/') || !seen.insert(e.path.as_str()) {
            return Err(Error::BadRequest(format!("entry path {:?} is empty, absolute or listed twice", e.path)));
        }
        let good = match e.kind {
            EntryKind::File => {
                e.chunks.len() as u64 == e.chunk_count() && e.chunks.iter().all(|c| manifest::unhex(c).is_some())
            }
            EntryKind::Dir => e.chunks.is_empty(),
            EntryKind::Symlink => e.target.as_deref().is_some_and(|t| !t.is_empty() && !t.contains('\0')),
        };
        if !good {
            return Err(Error::BadRequest(format!(
                "entry {:?}: chunks or target do not fit its kind and size",
                e.path
            )));
        }
    }
    Ok(())
}

/// `POST /transfers/:id`: brings the staging volume to the manifest's names and sizes and
/// answers which chunks it lacks.
pub async fn prepare(rooms: &Rooms, id: &str, p: Prepare) -> Result<Need> {
    lifecycle::check_id(id)?;
    check(&p)?;
    if rooms.store.read(|s| s.containers.contains_key(id)) {
        return Err(Error::Conflict(format!("Server {id} already exists on this node")));
    }
    let slot = slot(rooms, id);
    let mut guard = slot.lock().await;
    if guard.as_ref().is_none_or(|s| s.spec.as_ref() != Some(&p.spec)) {
        check_spec(rooms, &p.spec).await?;
    }
    let bytes = p.entries.iter().fold(0u64, |sum, e| sum.saturating_add(e.size));
    let volume_id = match guard.as_ref() {
        Some(s) if rooms.store.read(|st| st.volumes.contains_key(&s.volume_id)) => s.volume_id.clone(),
        _ => staging(rooms, id, p.size_limit_bytes, bytes).await?,
    };
    let root = open(rooms, &volume_id, &p.spec.user)?;
    let mut session = match guard.take() {
        Some(s) if s.volume_id == volume_id => s,
        _ => Session { volume_id, spec: None, held: HashMap::new(), last: Vec::new(), backups: HashMap::new() },
    };
    session.spec = Some(p.spec);
    let entries = p.entries;
    let (need, entries) = off_thread(&mut session, move |held| (apply(&root, &entries, held), entries)).await;
    session.last = entries.unwrap_or_default();
    *guard = Some(session);
    need.map_err(fs)
}

/// What this node knows each staged file holds: chunk hashes by path.
type Held = HashMap<String, Vec<Option<Hash>>>;

/// Runs `f` off the async threads with the session's chunk hashes, and puts them back (lost,
/// and so hashed from disk again, only if `f` panicked).
async fn off_thread<T: Send + 'static, U: Default + Send + 'static>(
    session: &mut Session,
    f: impl FnOnce(&mut Held) -> (std::result::Result<T, FsError>, U) + Send + 'static,
) -> (std::result::Result<T, FsError>, Option<U>) {
    let mut held = std::mem::take(&mut session.held);
    let done = tokio::task::spawn_blocking(move || {
        let out = f(&mut held);
        (out, held)
    })
    .await;
    match done {
        Ok(((out, extra), held)) => {
            session.held = held;
            (out, Some(extra))
        }
        Err(e) => (Err(FsError::Invalid(format!("the transfer's worker failed: {e}"))), None),
    }
}

/// How long a manifest waits for a missing image's pull.
const PULL_WAIT: Duration = Duration::from_secs(20);

/// The image must be allowed here and present (pulled when missing).
async fn check_spec(rooms: &Rooms, spec: &Spec) -> Result<()> {
    lifecycle::request::check_image(&spec.image, &rooms.config.docker.allowed_registries)?;
    match rooms.docker.image_exists(&spec.image).await {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e) => return Err(Error::Unavailable(format!("cannot ask the engine for image {}: {e}", spec.image))),
    }
    let pulled = tokio::time::timeout(PULL_WAIT, rooms.docker.pull(&spec.image, None, |_| {})).await;
    match pulled {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            Err(Error::Conflict(format!("image {} is not on the target node and cannot be pulled: {e}", spec.image)))
        }
        Err(_) => Err(Error::Conflict(format!(
            "image {} is not on the target node: its pull took over 10 minutes",
            spec.image
        ))),
    }
}

/// Removes what the manifest does not hold, makes what it names, and compares chunk hashes.
fn apply(
    root: &Root,
    entries: &[Entry],
    held: &mut HashMap<String, Vec<Option<Hash>>>,
) -> std::result::Result<Need, FsError> {
    let want: HashMap<&str, &Entry> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut stale = Vec::new();
    let mut have = HashMap::new();
    for node in root.nodes()? {
        let keep = want.get(node.path.as_str()).is_some_and(|e| match (e.kind, node.kind) {
            (EntryKind::File, Kind::File) | (EntryKind::Dir, Kind::Dir) => true,
            (EntryKind::Symlink, Kind::Symlink) => e.target == node.target,
            _ => false,
        });
        if keep {
            have.insert(node.path.clone(), node);
        } else {
            held.remove(&node.path);
            stale.push(node.path);
        }
    }
    // Parents before children: a removed directory takes its children with it.
    for path in &stale {
        match root.delete(&[path]) {
            Ok(_) | Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    let mut need = Need::default();
    for e in entries {
        match e.kind {
            EntryKind::Dir => {
                if !have.contains_key(&e.path) {
                    root.make_dir_all(&e.path)?;
                }
                root.set_meta(&e.path, Some(e.mode), (e.mtime, e.mtime_ns))?;
            }
            EntryKind::Symlink => {
                if !have.contains_key(&e.path) {
                    root.place_symlink(&e.path, e.target.as_deref().unwrap_or_default())?;
                }
            }
            EntryKind::File => {
                let mut file = root.open_in_place(&e.path)?;
                let len = file.metadata()?.len();
                let len_before = len;
                let mut hashes = match held.remove(&e.path) {
                    Some(h) if h.len() as u64 == len.div_ceil(CHUNK) => h,
                    _ => manifest::hash_file(&mut file, len)?.into_iter().map(Some).collect(),
                };
                if len != e.size {
                    file.set_len(e.size)?;
                    // Whole chunks below the shorter length stand; the rest changed.
                    let whole = (len.min(e.size) / CHUNK) as usize;
                    hashes.truncate(whole);
                }
                hashes.resize(e.chunk_count() as usize, None);
                let mut missing = Vec::new();
                for (i, want) in e.chunks.iter().enumerate() {
                    let len = chunk_len(e.size, i as u64);
                    if hashes[i].is_none() {
                        // Past the old end the file reads as zeros; the boundary chunk is read.
                        let mut buf = vec![0u8; len as usize];
                        if (i as u64) * CHUNK < len_before {
                            file.read_at(&mut buf, i as u64 * CHUNK)?;
                        }
                        hashes[i] = Some(manifest::hash(&buf));
                    }
                    if hashes[i].map(|h| manifest::hex(&h)).as_deref() == Some(want.as_str()) {
                        need.bytes_reused += len;
                    } else {
                        need.bytes_needed += len;
                        missing.push(i as u32);
                    }
                }
                file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(e.mode & 0o7777))?;
                held.insert(e.path.clone(), hashes);
                if !missing.is_empty() {
                    need.need.push(Lacking { path: e.path.clone(), chunks: missing });
                }
            }
        }
    }
    Ok(need)
}

/// What a chunk upload did.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Written {
    pub written: u64,
    /// Chunks whose bytes did not match their hash (or did not decompress): to send again.
    pub bad: Vec<ChunkRef>,
}

/// `PUT /transfers/:id/chunks`: verifies and writes each chunk of the body.
pub async fn chunks(rooms: &Rooms, id: &str, body: hyper::body::Bytes) -> Result<Written> {
    lifecycle::check_id(id)?;
    let slot = slot(rooms, id);
    let mut guard = slot.lock().await;
    let Some(mut session) = guard.take() else {
        return Err(Error::Conflict(format!("no transfer of {id} is under way here: send its manifest first")));
    };
    let user = session.spec.as_ref().map_or_else(|| rooms.config.containers.user.clone(), |s| s.user.clone());
    let root = match open(rooms, &session.volume_id, &user) {
        Ok(r) => r,
        Err(e) => {
            *guard = Some(session);
            return Err(e);
        }
    };
    let (out, _) = off_thread(&mut session, move |held| (write(&root, &body, held), ())).await;
    *guard = Some(session);
    out.map_err(|e| match e {
        FsError::BadEntry(why) => Error::BadRequest(why),
        e => fs(e),
    })
}

fn write(root: &Root, body: &[u8], held: &mut Held) -> std::result::Result<Written, FsError> {
    let frames = wire::frames(body).map_err(FsError::BadEntry)?;
    let panicked = || FsError::Invalid("a chunk-writing thread panicked".into());
    let runs = super::in_parallel(&frames, |run| write_run(root, run), panicked)?;
    let mut out = Written::default();
    for (f, ok) in runs.into_iter().flatten() {
        if !ok {
            out.bad.push(ChunkRef { path: f.path.to_string(), index: f.index });
            continue;
        }
        let hashes = held.entry(f.path.to_string()).or_default();
        if hashes.len() <= f.index as usize {
            hashes.resize(f.index as usize + 1, None);
        }
        hashes[f.index as usize] = Some(f.hash);
        out.written += u64::from(f.raw_len);
    }
    Ok(out)
}

/// Verifies and writes one run of frames (in place, each at its own offset); each frame with
/// whether it was good.
fn write_run<'a>(
    root: &Root,
    frames: &[wire::Frame<'a>],
) -> std::result::Result<Vec<(wire::Frame<'a>, bool)>, FsError> {
    let mut files: HashMap<&str, std::fs::File> = HashMap::new();
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        let good = wire::unpack(f).filter(|raw| manifest::hash(raw) == f.hash);
        if let Some(raw) = &good {
            if !files.contains_key(f.path) {
                files.insert(f.path, root.open_in_place(f.path)?);
            }
            files[f.path].write_all_at(raw, u64::from(f.index) * CHUNK)?;
        }
        out.push((f.clone(), good.is_some()));
    }
    Ok(out)
}

/// `POST /transfers/:id/finish`: the staging tree's digest must be the source's; then the
/// server is created on it with the source's spec and started if it ran there.
pub async fn finish(rooms: &Rooms, id: &str, f: Finish) -> Result<serde_json::Value> {
    lifecycle::check_id(id)?;
    let slot = slot(rooms, id);
    let mut guard = slot.lock().await;
    let Some(session) = guard.as_mut() else {
        return Err(Error::Conflict(format!("no transfer of {id} is under way here: send its manifest first")));
    };
    let spec = session.spec.clone().ok_or_else(|| Error::Conflict("no manifest received yet".into()))?;
    let root = open(rooms, &session.volume_id, &spec.user)?;
    let last = session.last.clone();
    let (ours, _) = off_thread(session, move |held| (tree_digest(&root, &last, held), ())).await;
    let ours = ours.map_err(fs)?;
    if ours != f.digest {
        return Err(Error::Conflict(format!(
            "the tree digest here ({ours}) differs from the source's ({}): send the last changes again",
            f.digest
        )));
    }
    let volume_id = session.volume_id.clone();
    let req = spec.request(id, &volume_id, f.ports.unwrap_or_else(|| spec.ports.clone()));
    lifecycle::create(&rooms.sups, req).await?;
    let installed = wait_installed(rooms, id).await;
    if let Err(e) = installed {
        let _ = lifecycle::act(&rooms.sups, id, Action::Delete).await;
        return Err(e);
    }
    if f.start {
        if let Err(e) = lifecycle::act(&rooms.sups, id, Action::Start).await {
            let _ = lifecycle::act(&rooms.sups, id, Action::Delete).await;
            return Err(e);
        }
    }
    // The volume is the server's now: no longer staging.
    *guard = None;
    let _ = std::fs::remove_file(marker(rooms, id));
    Ok(serde_json::json!({"internal_id": id, "volume_id": volume_id, "started": f.start}))
}

/// Sets the last manifest's times, then digests the tree as it is here.
fn tree_digest(root: &Root, last: &[Entry], held: &mut Held) -> std::result::Result<String, FsError> {
    // Children first: setting a name's time does not change its directory's.
    for e in last.iter().rev() {
        match root.set_meta(&e.path, None, (e.mtime, e.mtime_ns)) {
            Ok(()) | Err(FsError::NotFound) => {}
            Err(err) => return Err(err),
        }
    }
    let mut entries = Vec::new();
    for node in root.nodes()? {
        let hashes: Vec<Hash> = match node.kind {
            Kind::File => match held.get(&node.path) {
                Some(h) if h.len() as u64 == node.size.div_ceil(CHUNK) && h.iter().all(Option::is_some) => {
                    h.iter().flatten().copied().collect()
                }
                _ => {
                    let (mut file, _) = root.open_read(&node.path)?;
                    let h = manifest::hash_file(&mut file, node.size)?;
                    held.insert(node.path.clone(), h.iter().copied().map(Some).collect());
                    h
                }
            },
            _ => Vec::new(),
        };
        entries.extend(manifest::entry_with(&node, &hashes));
    }
    Ok(digest(&entries))
}

/// Waits until the new server's install (image, container) is over.
async fn wait_installed(rooms: &Rooms, id: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(rooms.config.containers.install_timeout.max(60));
    loop {
        let rec = lifecycle::record(&rooms.sups, id)?;
        match rec.install_state {
            InstallState::Ready => return Ok(()),
            InstallState::Failed => {
                return Err(Error::Conflict(format!(
                    "the server could not be created on the target: {}",
                    rec.error.unwrap_or_default()
                )))
            }
            _ if tokio::time::Instant::now() > deadline => {
                return Err(Error::Unavailable("the server's container took too long to create".into()))
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `DELETE /transfers/:id`: the staging volume and all knowledge of it go (a server already
/// made from it stays).
pub async fn discard(rooms: &Rooms, id: &str) -> Result<bool> {
    lifecycle::check_id(id)?;
    let slot = slot(rooms, id);
    let mut guard = slot.lock().await;
    let from_marker = std::fs::read(marker(rooms, id)).ok().and_then(|b| serde_json::from_slice::<Marker>(&b).ok());
    let volume = guard.take().map(|s| s.volume_id).or(from_marker.map(|m| m.volume_id));
    let Some(volume_id) = volume else { return Ok(false) };
    if rooms.store.read(|s| s.volumes.contains_key(&volume_id) && crate::volumes::used_by(s, &volume_id).is_empty()) {
        crate::volumes::delete(&rooms.volumes, &rooms.backups, &volume_id).await?;
        super::archives::forget(rooms, &volume_id);
    }
    let _ = std::fs::remove_file(marker(rooms, id));
    Ok(true)
}
