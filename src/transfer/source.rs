//! The sending node's side: one job per server being moved, its status for
//! `GET /containers/:id/transfer`, and its rounds (see the module above).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::Method;
use serde::Serialize;
use tokio::sync::Notify;

use super::manifest::{self, digest, Entry, EntryKind, Scanner, CHUNK};
use super::peer::Peer;
use super::target::{ChunkRef, Finish, Need, Prepare, Written};
use super::{wire, Rooms, Spec, Transfers};
use crate::console::Event;
use crate::error::{Error, Result};
use crate::lifecycle::{self, action::Action};
use crate::model::{PortBinding, PowerState};
use crate::shutdown::Shutdown;
use crate::vfs::Root;

/// A round that leaves at most this much to send ends the live rounds.
const SMALL_ROUND: u64 = 8 << 20;
/// Live rounds at most, however busy the server keeps its files.
const MAX_ROUNDS: u32 = 8;
/// Raw bytes per chunk upload.
const BATCH_CHUNKS: usize = 24;
/// Times a chunk whose hash did not match at the target is sent again.
const RESENDS: usize = 3;

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Copying,
    Syncing,
    Stopping,
    Finalizing,
    Starting,
    Done,
    Failed,
    Cancelled,
}

impl Phase {
    fn event(self) -> &'static str {
        match self {
            Phase::Copying => "transfer copying",
            Phase::Syncing => "transfer syncing",
            Phase::Stopping => "transfer stopping",
            Phase::Finalizing => "transfer finalizing",
            Phase::Starting => "transfer starting",
            Phase::Done => "transfer done",
            Phase::Failed => "transfer failed",
            Phase::Cancelled => "transfer cancelled",
        }
    }

    fn over(self) -> bool {
        matches!(self, Phase::Done | Phase::Failed | Phase::Cancelled)
    }
}

/// `GET /containers/:id/transfer`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub state: Phase,
    pub target: String,
    pub round: u32,
    pub bytes_total: u64,
    pub bytes_sent: u64,
    pub bytes_reused: u64,
    pub files: u64,
    /// Chunks the target found corrupt and had sent again.
    pub chunks_resent: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One server's transfer.
struct Job {
    status: Mutex<Status>,
    cancel: Notify,
    cancel_asked: std::sync::atomic::AtomicBool,
}

/// The jobs of one node, running and lately over, by server id (held by [`super::Transfers`]).
#[derive(Default)]
pub struct Jobs(Mutex<HashMap<String, Arc<Job>>>);

impl Jobs {
    fn get(&self, id: &str) -> Option<Arc<Job>> {
        lock(&self.0).get(id).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `POST /containers/:id/transfer` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    pub target: String,
    pub token: String,
    #[serde(default)]
    pub ports: Option<Vec<PortBinding>>,
    #[serde(default)]
    pub with_backups: bool,
}

/// Starts moving server `id`; the job runs on (its status is read with [`status`]).
pub fn start(rooms: &Rooms, id: &str, req: Start) -> Result<Status> {
    let rec = lifecycle::record(&rooms.sups, id)?;
    let peer = Peer::new(&req.target, &req.token).map_err(Error::BadRequest)?;
    if rec.install_state != crate::model::InstallState::Ready {
        return Err(Error::Conflict(format!("Cannot transfer {id} while its install is not ready")));
    }
    let status = Status {
        state: Phase::Copying,
        target: req.target.clone(),
        round: 0,
        bytes_total: 0,
        bytes_sent: 0,
        bytes_reused: 0,
        files: 0,
        chunks_resent: 0,
        downtime_ms: None,
        error: None,
    };
    let job = Arc::new(Job { status: Mutex::new(status.clone()), cancel: Notify::new(), cancel_asked: false.into() });
    {
        let mut map = lock(&rooms.transfers.jobs.0);
        if map.get(id).is_some_and(|j| !lock(&j.status).state.over()) {
            return Err(Error::Conflict(format!("A transfer of {id} is already under way")));
        }
        map.insert(id.to_string(), Arc::clone(&job));
    }
    let (tasks, rooms, id) = (rooms.transfers.tasks.clone(), rooms.clone(), id.to_string());
    let signal = tasks.signal();
    tasks.spawn(run(rooms, id, peer, (req.ports, req.with_backups), job, signal));
    Ok(status)
}

/// The status of `id`'s last transfer.
pub fn status(transfers: &Transfers, id: &str) -> Result<Status> {
    lifecycle::check_id(id)?;
    let job = transfers.jobs.get(id);
    job.map(|j| lock(&j.status).clone()).ok_or_else(|| Error::NotFound(format!("No transfer of {id} on record")))
}

/// `DELETE /containers/:id/transfer`: cancels a transfer not yet past its point of no return
/// (the target creating the server); waits until the server runs here again.
pub async fn cancel(transfers: &Transfers, id: &str) -> Result<Status> {
    lifecycle::check_id(id)?;
    let job = transfers.jobs.get(id).ok_or_else(|| Error::NotFound(format!("No transfer of {id} on record")))?;
    if !job.stop_short() {
        let state = lock(&job.status).state;
        return Err(Error::Conflict(format!("The transfer of {id} is {state:?}: too late to cancel")));
    }
    job.cancel.notify_one();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lock(&job.status).state.over() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = lock(&job.status).clone();
    Ok(status)
}

/// What a job step failed with.
enum Stop {
    Failed(String),
    Cancelled,
    /// The daemon is stopping: the job ends before its point of no return.
    Shutdown,
}

impl From<String> for Stop {
    fn from(s: String) -> Stop {
        Stop::Failed(s)
    }
}

/// A job's working set.
struct Work {
    rooms: Rooms,
    id: String,
    peer: Peer,
    job: Arc<Job>,
    scanner: Arc<Mutex<Scanner>>,
    /// Whether the server was running when the transfer began (it runs at the target then).
    ran: bool,
    /// Whether this job stopped the server (it is started again on failure).
    stopped: bool,
    /// Whether the volume's backups go along (sent after the first round, the server running).
    with_backups: bool,
}

async fn run(
    rooms: Rooms,
    id: String,
    peer: Peer,
    (ports, with_backups): (Option<Vec<PortBinding>>, bool),
    job: Arc<Job>,
    mut shutdown: Shutdown,
) {
    let ran = lifecycle::record(&rooms.sups, &id).is_ok_and(|r| r.state != PowerState::Offline);
    let scanner = Arc::default();
    let mut w = Work { rooms, id, peer, job: Arc::clone(&job), scanner, ran, stopped: false, with_backups };
    w.phase(Phase::Copying);
    let outcome = {
        let body = rounds(&mut w, ports);
        tokio::pin!(body);
        tokio::select! {
            r = &mut body => r,
            _ = job.cancel.notified() => Err(Stop::Cancelled),
            () = shutdown.wait() => {
                if job.stop_short() {
                    Err(Stop::Shutdown)
                } else {
                    // Past the point of no return: the target makes the server; finish here.
                    body.await
                }
            }
        }
    };
    let (phase, error) = match outcome {
        Ok(()) => (Phase::Done, None),
        Err(Stop::Shutdown) => {
            // The staging at the target stays (the same request resumes from it, as after a
            // kill -9); the server runs here. The supervisors end with the daemon, so a server
            // this job stopped is started through the engine (the next start re-attaches it).
            if w.stopped {
                restart_directly(&w).await;
            }
            (Phase::Failed, Some("the daemon stopped during the transfer".to_string()))
        }
        Err(Stop::Cancelled) => {
            undo(&w).await;
            (Phase::Cancelled, None)
        }
        Err(Stop::Failed(e)) => {
            undo(&w).await;
            (Phase::Failed, Some(e))
        }
    };
    if let Some(e) = &error {
        crate::warn!("{}: transfer failed: {e}", w.id);
    }
    lock(&job.status).error = error;
    w.phase(phase);
}

/// After a cancel or a failure: nothing was created at the target (or what was is gone), and
/// the server runs here again.
async fn undo(w: &Work) {
    let path = format!("/transfers/{}", w.id);
    let _ = w.peer.call(Method::DELETE, &path, Bytes::new(), "application/json", Duration::from_secs(60)).await;
    if w.stopped {
        if let Err(e) = lifecycle::act(&w.rooms.sups, &w.id, Action::Start).await {
            crate::warn!("{}: could not start the server again after its transfer stopped: {e}", w.id);
        }
    }
}

/// Starts the container of a server this job stopped, through the engine (at shutdown).
async fn restart_directly(w: &Work) {
    let cid = lifecycle::record(&w.rooms.sups, &w.id).ok().and_then(|r| r.container_id);
    let Some(cid) = cid else { return };
    if let Err(e) = w.rooms.docker.start_container(&cid).await {
        crate::warn!("{}: could not start the server again as the daemon stopped mid-transfer: {e}", w.id);
    }
}

impl Job {
    /// Whether the job may end short (it is not past its point of no return); if so, it will
    /// not pass it from now on.
    fn stop_short(&self) -> bool {
        let st = lock(&self.status);
        if matches!(st.state, Phase::Finalizing | Phase::Starting) || st.state.over() {
            return false;
        }
        self.cancel_asked.store(true, std::sync::atomic::Ordering::SeqCst);
        true
    }
}

impl Work {
    /// The volume's ready backups the target lacks, sent (counted in `bytes_sent`).
    async fn send_backups(&mut self) -> std::result::Result<(), Stop> {
        let volume_id = lifecycle::record(&self.rooms.sups, &self.id)?.volume_id;
        let sent = super::archives::send(&self.rooms, &self.peer, &self.id, &volume_id).await?;
        let mut st = lock(&self.job.status);
        st.bytes_sent = st.bytes_sent.saturating_add(sent);
        Ok(())
    }

    fn phase(&self, phase: Phase) {
        lock(&self.job.status).state = phase;
        if let Some(hub) = self.rooms.hubs.peek(&self.id) {
            hub.news().publish(Event::Named(phase.event()));
        }
    }

    fn cancelled(&self) -> bool {
        self.job.cancel_asked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The volume's root, opened afresh (a round is long; the server may be recreated).
    fn root(&self) -> std::result::Result<(Root, Spec, u64), String> {
        let rec = lifecycle::record(&self.rooms.sups, &self.id).map_err(|e| e.to_string())?;
        let volume = crate::volumes::find(&self.rooms.volumes, &rec.volume_id).map_err(|e| e.to_string())?;
        let path = crate::volumes::mount_path(&self.rooms.volumes, &volume.volume_id)?;
        let root = Root::open(&path).map_err(|e| format!("cannot open the volume: {e}"))?;
        Ok((root, Spec::of(&rec), volume.size_limit_bytes))
    }

    /// One round: a manifest, the target's answer, the chunks it lacks (resent while the
    /// target finds them corrupt). Returns the entries sent and how much was lacking.
    async fn round(&mut self) -> std::result::Result<(Vec<Entry>, u64), Stop> {
        let (root, spec, size_limit) = self.root()?;
        let root = Arc::new(root);
        let scanner = Arc::clone(&self.scanner);
        let r = Arc::clone(&root);
        let entries = tokio::task::spawn_blocking(move || lock(&scanner).scan(&r))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read the volume: {e}"))?;
        {
            let mut st = lock(&self.job.status);
            st.round += 1;
            st.files = entries.iter().filter(|e| e.kind == EntryKind::File).count() as u64;
            st.bytes_total = entries.iter().fold(0u64, |sum, e| sum.saturating_add(e.size));
        }
        let prepare = Prepare { spec, size_limit_bytes: size_limit, entries };
        let need: Need = self.peer.json(&format!("/transfers/{}", self.id), &prepare, Duration::from_secs(900)).await?;
        {
            let mut st = lock(&self.job.status);
            if st.round == 1 {
                st.bytes_reused = need.bytes_reused;
            }
        }
        let mut todo: Vec<ChunkRef> = need
            .need
            .iter()
            .flat_map(|l| l.chunks.iter().map(move |i| ChunkRef { path: l.path.clone(), index: *i }))
            .collect();
        let mut tries = 0;
        while !todo.is_empty() {
            let mut bad = Vec::new();
            // Pipelined: the next batch is read and compressed while this one uploads.
            let mut batches = todo.chunks(BATCH_CHUNKS).map(<[ChunkRef]>::to_vec);
            let mut packing = batches.next().map(|b| pack_off(&root, b));
            while let Some(task) = packing.take() {
                if self.cancelled() {
                    return Err(Stop::Cancelled);
                }
                let body =
                    task.await.map_err(|e| e.to_string())?.map_err(|e| format!("cannot read the volume: {e}"))?;
                packing = batches.next().map(|b| pack_off(&root, b));
                bad.extend(self.upload(body).await?);
            }
            if bad.is_empty() {
                break;
            }
            tries += 1;
            if tries > RESENDS {
                return Err(Stop::Failed(format!("{} chunk(s) arrived corrupt {RESENDS} times over", bad.len())));
            }
            lock(&self.job.status).chunks_resent += bad.len() as u64;
            todo = bad;
        }
        Ok((prepare.entries, need.bytes_needed))
    }

    /// Uploads one batch of chunk frames; the chunks the target found corrupt.
    async fn upload(&self, body: Vec<u8>) -> std::result::Result<Vec<ChunkRef>, Stop> {
        let len = body.len() as u64;
        let answer = self
            .peer
            .call(
                Method::PUT,
                &format!("/transfers/{}/chunks", self.id),
                body.into(),
                "application/octet-stream",
                Duration::from_secs(300),
            )
            .await?;
        lock(&self.job.status).bytes_sent += len;
        pause_for_test().await;
        let written: Written = super::peer::answer_of(&answer)?;
        Ok(written.bad)
    }
}

/// [`pack`] off the async threads.
fn pack_off(
    root: &Arc<Root>,
    items: Vec<ChunkRef>,
) -> tokio::task::JoinHandle<std::result::Result<Vec<u8>, crate::vfs::FsError>> {
    let root = Arc::clone(root);
    tokio::task::spawn_blocking(move || pack(&root, &items))
}

/// The frames of `items`, each read now (a file changed since its manifest is sent as it is
/// now; the next round compares again).
fn pack(root: &Root, items: &[ChunkRef]) -> std::result::Result<Vec<u8>, crate::vfs::FsError> {
    let panicked = || crate::vfs::FsError::Invalid("a packing thread panicked".into());
    Ok(super::in_parallel(items, |run| pack_run(root, run), panicked)?.concat())
}

/// [`pack`] of one run of chunks.
fn pack_run(root: &Root, items: &[ChunkRef]) -> std::result::Result<Vec<u8>, crate::vfs::FsError> {
    let mut out = Vec::new();
    let mut files: HashMap<&str, File> = HashMap::new();
    let mut buf = vec![0u8; CHUNK as usize];
    for ChunkRef { path, index } in items {
        if !files.contains_key(path.as_str()) {
            match root.open_read(path) {
                Ok((f, _)) => files.insert(path, f),
                // Gone since the manifest: the next round says so.
                Err(crate::vfs::FsError::NotFound) => continue,
                Err(e) => return Err(e),
            };
        }
        let mut file = &files[path.as_str()];
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(u64::from(*index) * CHUNK))?;
        let got = manifest::read_full(&mut file, &mut buf)?;
        let raw = &mut buf[..got];
        let hash = manifest::hash(raw);
        flip_for_test(raw);
        let z = zstd::bulk::compress(raw, 1).map_err(crate::vfs::FsError::from)?;
        wire::put(&mut out, path, *index, got as u32, &hash, &z);
    }
    Ok(out)
}

/// Test hook, debug builds only: `LIGHTD_TEST_FLIP_CHUNK=N` flips a byte of the N-th chunk
/// this process sends, after it was hashed: corruption in transit, which the target must catch.
fn flip_for_test(raw: &mut [u8]) {
    #[cfg(debug_assertions)]
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SENT: AtomicU64 = AtomicU64::new(0);
        let n = SENT.fetch_add(1, Ordering::Relaxed) + 1;
        let want = std::env::var("LIGHTD_TEST_FLIP_CHUNK").ok().and_then(|v| v.parse::<u64>().ok());
        if want == Some(n) && !raw.is_empty() {
            raw[0] ^= 0x55;
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = raw;
}

/// Test hook, debug builds only: `LIGHTD_TEST_SEND_DELAY_MS` pauses after each chunk upload,
/// so a test can stop a daemon mid-copy.
async fn pause_for_test() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("LIGHTD_TEST_SEND_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Test hook, debug builds only: `LIGHTD_TEST_STOPPED_DELAY_MS` pauses once the server is
/// stopped for the last round, so a test can stop the daemon then.
async fn pause_stopped_for_test() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("LIGHTD_TEST_STOPPED_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// The rounds: live ones until one is small, then the server stopped, the last changes, the
/// digests compared and the server made at the target; then it goes here.
async fn rounds(w: &mut Work, ports: Option<Vec<PortBinding>>) -> std::result::Result<(), Stop> {
    for live in 1..=MAX_ROUNDS {
        if live > 1 {
            w.phase(Phase::Syncing);
        }
        let (_, lacking) = w.round().await?;
        if live == 1 && w.with_backups {
            w.send_backups().await?;
        }
        if !w.ran || lacking <= SMALL_ROUND {
            break;
        }
    }
    let mut down = None;
    if w.ran {
        w.phase(Phase::Stopping);
        stop_server(w).await?;
        down = Some(Instant::now());
        pause_stopped_for_test().await;
    }
    w.phase(Phase::Syncing);
    let mut last = None;
    for _ in 0..4 {
        let (entries, lacking) = w.round().await?;
        if lacking == 0 {
            last = Some(entries);
            break;
        }
    }
    let entries = last.ok_or_else(|| "the files kept changing with the server stopped".to_string())?;
    {
        // The point of no return: a cancel from now on is refused.
        let mut st = lock(&w.job.status);
        if w.cancelled() {
            return Err(Stop::Cancelled);
        }
        st.state = Phase::Finalizing;
    }
    w.phase(Phase::Finalizing);
    let finish = Finish { digest: digest(&entries), start: w.ran, ports };
    if w.ran {
        w.phase(Phase::Starting);
    }
    let _: serde_json::Value =
        w.peer.json(&format!("/transfers/{}/finish", w.id), &finish, Duration::from_secs(900)).await?;
    if let Some(t) = down {
        lock(&w.job.status).downtime_ms = Some(t.elapsed().as_millis() as u64);
    }
    // The server runs at the target: its container and record go here (the volume stays).
    w.stopped = false;
    if let Err(e) = lifecycle::act(&w.rooms.sups, &w.id, Action::Delete).await {
        crate::warn!("{}: moved, but its container here could not be removed: {e}", w.id);
    }
    Ok(())
}

/// Stops the server through its supervisor and waits until it is offline.
async fn stop_server(w: &mut Work) -> std::result::Result<(), Stop> {
    let state = lifecycle::record(&w.rooms.sups, &w.id).map_err(|e| e.to_string())?.state;
    if state == PowerState::Offline {
        return Ok(());
    }
    // Counted as stopped from the asking on: a cancel or failure from here starts it again.
    w.stopped = true;
    lifecycle::act(&w.rooms.sups, &w.id, Action::Stop).await.map_err(|e| format!("cannot stop the server: {e}"))?;
    let limit = Duration::from_secs(w.rooms.config.containers.cleanup_timeout + 60);
    let deadline = Instant::now() + limit;
    loop {
        let rec = lifecycle::record(&w.rooms.sups, &w.id).map_err(|e| e.to_string())?;
        if rec.state == PowerState::Offline {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Stop::Failed(format!("the server did not stop within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Failed(e.to_string())
    }
}
