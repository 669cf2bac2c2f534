//! The SSH side: the listener, the host key, logins (password or key, rate-limited per
//! address), session limits, only the `sftp` subsystem, and the watch that ends the sessions
//! of a user who is gone (deleted, or its volume deleted) within a fraction of a second.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey, PublicKey};
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, Disconnect, MethodKind, MethodSet};
use tokio::net::TcpListener;

use super::kill::{Kill, Killable};
use super::session::Sftp;
use super::users;
use crate::config::Config;
use crate::console::{Event, Hubs};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::volumes::{self, Volumes};

/// How often live sessions are checked against the users on record.
const WATCH: Duration = Duration::from_millis(200);
/// Most password checks (argon2, 7 MiB each) running at once.
const HASHERS: usize = 4;
/// Longest a login waits for a free password check before it is refused.
const HASH_WAIT: Duration = Duration::from_secs(10);

/// What the SFTP server shares between its connections.
pub struct Shared {
    config: Arc<Config>,
    /// The consoles: viewers of the servers on a volume hear of its SFTP logins and uploads.
    hubs: Arc<Hubs>,
    store: Arc<Store>,
    volumes: Volumes,
    sessions: Sessions,
    /// Failed logins this minute, per source and per login name.
    failures: Mutex<HashMap<Tally, (Instant, u32)>>,
    hashers: tokio::sync::Semaphore,
    next: AtomicU64,
}

/// What failed logins are counted against.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Tally {
    /// A source address; an IPv6 address by its /64 (one host commonly holds all of one).
    Source(IpAddr),
    /// A login name, from every address together.
    Login(String),
}

/// The source `ip` is counted as: an IPv4 address as itself (also when written as an
/// IPv4-mapped IPv6 address), an IPv6 address as its /64.
fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// One login attempt, counted as failed when it began; forgiven if it succeeds.
struct Attempt(Vec<(Tally, Instant)>);

/// How long a failed login counts.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// One connection: where from, since when, who once logged in, and how to end it.
struct Live {
    ip: IpAddr,
    since: Instant,
    login: Option<String>,
    /// The generation of the user it logged in as (see `SftpUser::generation`).
    generation: u64,
    handle: Option<russh::server::Handle>,
    /// Closes its socket at once, whatever the session loop is doing.
    kill: Arc<Kill>,
    /// Being ended (its user is gone).
    ending: bool,
}

/// The live connections, shared by the SFTP server and the API (which ends a deleted user's
/// sessions itself, and says how many).
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<u64, Live>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the sessions of user `login` (`<username>.<volume id>`) at `generation` (so not
    /// those of a later user of the same name); how many it had, counting those the watch may
    /// have begun to end already. Each is gone within twice [`GOODBYE`].
    pub fn end_user(&self, login: &str, generation: u64) -> usize {
        let mut sessions = self.lock();
        let theirs = sessions.values_mut().filter(|l| l.generation == generation && l.login.as_deref() == Some(login));
        let mut count = 0;
        for l in theirs {
            count += 1;
            if !l.ending {
                l.ending = true;
                end(l.handle.clone(), Arc::clone(&l.kill), "SFTP user removed");
            }
        }
        count
    }
}

/// Loads the host key at `path`, or makes one (ed25519, 0600) if there is none.
pub fn host_key(path: &Path) -> Result<PrivateKey, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(&text).map_err(|e| format!("host key {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = crate::fsutil::random_bytes().map_err(|e| format!("no randomness: {e}"))?;
            let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
            let text = key.to_openssh(LineEnding::LF).map_err(|e| e.to_string())?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            crate::fsutil::write_atomic(path, text.as_bytes(), 0o600)
                .map_err(|e| format!("cannot write host key {}: {e}", path.display()))?;
            crate::info!("sftp: made a new host key at {}", path.display());
            Ok(key)
        }
        Err(e) => Err(format!("cannot read host key {}: {e}", path.display())),
    }
}

/// Binds `sftp.host:sftp.port` and loads (or makes) the host key; logs the bound address and
/// the key's fingerprint. The accept loop is [`run`].
pub async fn bind(config: &Config) -> Result<(TcpListener, PrivateKey), String> {
    let path = config.sftp_host_key();
    let key = tokio::task::spawn_blocking(move || host_key(&path)).await.map_err(|e| e.to_string())??;
    let addr = (config.sftp.host.as_str(), config.sftp.port);
    let listener =
        TcpListener::bind(addr).await.map_err(|e| format!("sftp: cannot listen on {}:{}: {e}", addr.0, addr.1))?;
    crate::info!(
        "sftp serving on {} (host key {})",
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        key.public_key().fingerprint(HashAlg::Sha256)
    );
    Ok((listener, key))
}

/// What the SFTP server is given to reach.
pub struct Parts {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub volumes: Volumes,
    pub hubs: Arc<Hubs>,
    pub sessions: Sessions,
}

/// Accepts SFTP connections until shutdown.
pub async fn run(listener: TcpListener, key: PrivateKey, parts: Parts, mut stop: Shutdown) {
    let Parts { config, store, volumes, hubs, sessions } = parts;
    let ssh = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-lightd".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        keys: vec![key],
        max_auth_attempts: 6,
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        window_size: 8 * 1024 * 1024,
        ..Default::default()
    });
    let shared = Arc::new(Shared {
        config,
        hubs,
        store,
        volumes,
        sessions,
        failures: Mutex::new(HashMap::new()),
        hashers: tokio::sync::Semaphore::new(HASHERS),
        next: AtomicU64::new(1),
    });
    crate::shutdown::detach(watch(Arc::downgrade(&shared)));
    loop {
        let (socket, peer) = tokio::select! {
            _ = stop.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    crate::warn!("sftp: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (id, kill) = match shared.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(why) => {
                crate::warn!("sftp: refused a connection from {}: {why}", peer.ip());
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let socket = Killable::new(socket, kill);
        let (ssh, shared) = (Arc::clone(&ssh), Arc::clone(&shared));
        crate::shutdown::detach(async move {
            let handler = Conn {
                shared: Arc::clone(&shared),
                id,
                peer,
                login: None,
                generation: 0,
                channels: HashMap::new(),
                running: Arc::default(),
            };
            match russh::server::run_stream(ssh, socket, handler).await {
                Ok(running) => {
                    if let Some(live) = shared.sessions.lock().get_mut(&id) {
                        live.handle = Some(running.handle());
                    }
                    let _ = running.await;
                }
                Err(e) => crate::debug!("sftp: handshake with {peer} failed: {e}"),
            }
            shared.sessions.lock().remove(&id);
        });
    }
    // Shutdown: every session ends.
    let ending: Vec<_> = shared
        .sessions
        .lock()
        .values()
        .map(|l| end(l.handle.clone(), Arc::clone(&l.kill), "lightd is stopping"))
        .collect();
    for e in ending {
        let _ = e.await;
    }
}

/// How long a connection told to end has to say goodbye before its socket is closed.
const GOODBYE: Duration = Duration::from_millis(300);

/// Ends a connection: asks its session loop to disconnect with `why`, and closes its socket
/// [`GOODBYE`] later whatever happened (a session loop that waits on a client cannot take the
/// request, and none may hold up the caller).
fn end(handle: Option<russh::server::Handle>, kill: Arc<Kill>, why: &'static str) -> tokio::task::JoinHandle<()> {
    crate::shutdown::detach(async move {
        if let Some(h) = handle {
            let asked = h.disconnect(Disconnect::ByApplication, why.into(), "en".into());
            let _ = tokio::time::timeout(GOODBYE, asked).await;
        }
        tokio::time::sleep(GOODBYE).await;
        kill.throw();
    })
}

/// Ends the sessions whose user is no longer on record, and the connections that did not log
/// in by their deadline. Detached: it ends by itself once the accept loop and every
/// connection are gone (the `Weak` no longer upgrades).
async fn watch(shared: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(WATCH).await;
        let Some(shared) = shared.upgrade() else { return };
        let deadline = Duration::from_secs(shared.config.sftp.login_timeout);
        let late: Vec<(IpAddr, Arc<Kill>)> = shared
            .sessions
            .lock()
            .values()
            .filter(|l| l.login.is_none() && l.since.elapsed() > deadline && !l.kill.thrown())
            .map(|l| (l.ip, Arc::clone(&l.kill)))
            .collect();
        for (ip, kill) in late {
            crate::info!("sftp: closed a connection from {ip}: not logged in within {}s", deadline.as_secs());
            kill.throw();
        }
        let mut sessions = shared.sessions.lock();
        shared.store.read(|s| {
            for l in sessions.values_mut() {
                let gone = l
                    .login
                    .as_ref()
                    .is_some_and(|login| s.sftp_users.get(login).is_none_or(|user| user.generation != l.generation));
                if gone && !l.ending {
                    l.ending = true;
                    end(l.handle.clone(), Arc::clone(&l.kill), "SFTP user removed");
                }
            }
        });
    }
}

impl Shared {
    /// Registers a connection from `ip`, unless that address has too many already or too many
    /// connections have not logged in yet.
    fn admit(&self, ip: IpAddr) -> Result<(u64, Arc<Kill>), &'static str> {
        let mut sessions = self.sessions.lock();
        if sessions.values().filter(|l| l.ip == ip).count() >= self.config.sftp.max_sessions_per_ip {
            return Err("too many sessions from that address");
        }
        if sessions.values().filter(|l| l.login.is_none()).count() >= self.config.sftp.max_unauthenticated {
            return Err("too many connections not logged in yet");
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let kill = Arc::new(Kill::default());
        sessions.insert(
            id,
            Live {
                ip,
                since: Instant::now(),
                login: None,
                generation: 0,
                handle: None,
                kill: Arc::clone(&kill),
                ending: false,
            },
        );
        Ok((id, kill))
    }

    /// The limit on failed logins counted against `tally` per minute.
    fn limit(&self, tally: &Tally) -> u32 {
        match tally {
            Tally::Source(_) => self.config.sftp.max_failed_logins_per_minute,
            Tally::Login(_) => self.config.sftp.max_failed_logins_per_user_per_minute,
        }
    }

    fn tallies(ip: IpAddr, login: &str) -> [Tally; 2] {
        [Tally::Source(source(ip)), Tally::Login(login.to_string())]
    }

    /// Which of `ip` and `login` has used up its failed logins for this minute, if either.
    fn limited(&self, ip: IpAddr, login: &str) -> Option<&'static str> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        Self::tallies(ip, login).iter().find_map(|t| {
            let used =
                failures.get(t).is_some_and(|(since, n)| since.elapsed() < FAILURE_WINDOW && *n >= self.limit(t));
            used.then_some(match t {
                Tally::Source(_) => "too many failed logins from this address",
                Tally::Login(_) => "too many failed logins for this user",
            })
        })
    }

    /// Starts a login attempt by `ip` as `login`, counted as failed from now on (so attempts
    /// made in parallel all count before any costly check), or the reason it is refused
    /// unchecked: the address or the login name has used up its failed logins this minute.
    fn attempt(&self, ip: IpAddr, login: &str) -> Result<Attempt, &'static str> {
        if let Some(why) = self.limited(ip, login) {
            return Err(why);
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
        }
        let mut counted = Vec::with_capacity(2);
        for tally in Self::tallies(ip, login) {
            let entry = failures.entry(tally.clone()).or_insert((Instant::now(), 0));
            if entry.0.elapsed() >= FAILURE_WINDOW {
                *entry = (Instant::now(), 0);
            }
            entry.1 += 1;
            counted.push((tally, entry.0));
        }
        Ok(Attempt(counted))
    }

    /// An attempt that succeeded no longer counts as failed.
    fn forgive(&self, attempt: Attempt) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (tally, since) in attempt.0 {
            if let Some(entry) = failures.get_mut(&tally).filter(|e| e.0 == since) {
                entry.1 = entry.1.saturating_sub(1);
            }
        }
    }

    /// Marks connection `id` logged in as `login`, unless that user has too many sessions.
    fn log_in(&self, id: u64, login: &str, generation: u64) -> bool {
        let mut sessions = self.sessions.lock();
        let open = sessions.values().filter(|l| l.login.as_deref() == Some(login)).count();
        if open >= self.config.sftp.max_sessions_per_user {
            return false;
        }
        if let Some(live) = sessions.get_mut(&id) {
            live.login = Some(login.to_string());
            live.generation = generation;
        }
        true
    }

    /// The user on record for a login name `<username>.<volume id or name>`.
    fn user(&self, login: &str) -> Option<crate::model::SftpUser> {
        let (username, volume) = login.split_once('.')?;
        let key = volumes::parse_key(volume).ok()?;
        self.store.read(|s| {
            let id = volumes::resolve(s, &key)?;
            s.sftp_users.get(&format!("{username}.{id}")).cloned()
        })
    }

    /// Tells the viewers of every server on `volume_id` (an `event` frame, a note on attach).
    /// Tells the viewers of the servers using `volume_id` what happened over SFTP. The text
    /// holds a client's path: control characters (a newline, a terminal escape) are shown as
    /// escapes, so no client can forge a console line or reach an admin's terminal.
    pub(super) fn tell(&self, volume_id: &str, text: String) {
        let text = printable(&text);
        for c in self.store.read(|s| volumes::used_by(s, volume_id)) {
            self.hubs.get(&c).news().publish(Event::Activity(text.clone()));
        }
    }

    pub(super) fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

/// One SSH connection.
struct Conn {
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    /// The canonical login (`<username>.<volume id>`) once authenticated.
    login: Option<String>,
    /// The generation of that user.
    generation: u64,
    /// Session channels opened and not yet given a subsystem (drained from the start).
    channels: HashMap<ChannelId, super::pipe::Stream>,
    /// SFTP sessions running on this connection (each holds handles and descriptors).
    running: Arc<AtomicUsize>,
}

/// SFTP sessions one connection may run at once, and channels it may hold open before
/// asking for the subsystem. Without the first, one login could start sessions without bound,
/// each holding up to its own handle budget, and run the daemon out of file descriptors.
pub(super) const MAX_CHANNELS: usize = 4;

/// One running SFTP session's place on its connection, given back when the session ends.
pub(super) struct Running(Arc<AtomicUsize>);

impl Running {
    fn take(count: &Arc<AtomicUsize>) -> Option<Running> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_CHANNELS).then_some(n + 1))
            .ok()
            .map(|_| Running(Arc::clone(count)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conn {
    fn accept(&mut self, user: &crate::model::SftpUser) -> Auth {
        let login = user.login();
        if !self.shared.log_in(self.id, &login, user.generation) {
            crate::warn!("sftp: {login} from {} refused: too many sessions for that user", self.peer.ip());
            return Auth::reject();
        }
        crate::info!("sftp login {} from {}", login, self.peer.ip());
        self.shared.tell(&user.volume_id, format!("sftp login {}", user.username));
        self.login = Some(login);
        self.generation = user.generation;
        Auth::Accept
    }

    fn refuse(&self, why: &str, user: &str) -> Auth {
        crate::info!("sftp: failed login {user:?} from {}: {why}", self.peer.ip());
        Auth::reject()
    }

    /// The name failed logins as `user` are counted against: its canonical login when there is
    /// such a user (`alice.<volume name>` and `alice.<volume id>` are one), else as given.
    fn tally_name(&self, user: &str) -> String {
        self.shared.user(user).map_or_else(|| user.to_string(), |r| r.login())
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let attempt = match self.shared.attempt(self.peer.ip(), &self.tally_name(user)) {
            Ok(attempt) => attempt,
            Err(why) => return Ok(self.refuse(why, user)),
        };
        let Some(record) = self.shared.user(user) else { return Ok(self.refuse("unknown login", user)) };
        let Some(hash) = record.password_hash.clone() else { return Ok(self.refuse("no password set", user)) };
        let permit = match tokio::time::timeout(HASH_WAIT, self.shared.hashers.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(russh::Error::Disconnect),
            Err(_) => return Ok(self.refuse("no password check free in time (too many logins at once)", user)),
        };
        let password = password.to_string();
        let good = tokio::task::spawn_blocking(move || users::verify_password(&hash, &password)).await.unwrap_or(false);
        drop(permit);
        if !good {
            return Ok(self.refuse("wrong password", user));
        }
        self.shared.forgive(attempt);
        Ok(self.accept(&record))
    }

    async fn auth_publickey_offered(&mut self, user: &str, key: &PublicKey) -> Result<Auth, Self::Error> {
        // Offering keys is cheap and guesses nothing: only refused once a limit is reached.
        Ok(match self.key_of(user, key) {
            Some(_) if self.shared.limited(self.peer.ip(), &self.tally_name(user)).is_none() => Auth::Accept,
            _ => Auth::reject(),
        })
    }

    async fn auth_publickey(&mut self, user: &str, key: &PublicKey) -> Result<Auth, Self::Error> {
        let attempt = match self.shared.attempt(self.peer.ip(), &self.tally_name(user)) {
            Ok(attempt) => attempt,
            Err(why) => return Ok(self.refuse(why, user)),
        };
        Ok(match self.key_of(user, key) {
            Some(record) => {
                self.shared.forgive(attempt);
                self.accept(&record)
            }
            None => self.refuse("unknown key", user),
        })
    }

    async fn channel_open_session(&mut self, channel: Channel<Msg>, _: &mut Session) -> Result<bool, Self::Error> {
        if self.login.is_none() || self.channels.len() + self.running.load(Ordering::Acquire) >= MAX_CHANNELS {
            return Ok(false);
        }
        let who = format!("{} from {}", self.login.as_deref().unwrap_or_default(), self.peer.ip());
        self.channels.insert(channel.id(), super::pipe::start(channel, who));
        Ok(true)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        session.close(channel)
    }

    async fn exec_request(&mut self, channel: ChannelId, _: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        session.close(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(login) = self.login.clone().filter(|_| name == "sftp") else {
            return session.channel_failure(channel);
        };
        let Some(stream) = self.channels.remove(&channel) else { return session.channel_failure(channel) };
        let Some(place) = Running::take(&self.running) else { return session.channel_failure(channel) };
        let shared = Arc::clone(&self.shared);
        let (volumes, key) = (shared.volumes.clone(), login.split_once('.').map(|(_, v)| v.to_string()));
        let opened =
            tokio::task::spawn_blocking(move || volumes::open_root(&volumes, key.as_deref().unwrap_or_default())).await;
        match opened {
            Ok(Ok((volume, root))) => {
                session.channel_success(channel)?;
                stream.attach();
                let limit = (volume.quota != crate::model::Quota::Loop).then_some(volume.size_limit_bytes);
                let sftp = Sftp::new(shared, login, self.generation, root, limit, place);
                russh_sftp::server::run(stream, sftp).await;
                Ok(())
            }
            Ok(Err(e)) => {
                crate::warn!("sftp: {login}: cannot open its volume: {e}");
                session.channel_failure(channel)
            }
            Err(_) => session.channel_failure(channel),
        }
    }
}

impl Conn {
    /// The user `login` names when `key` is one of its keys.
    fn key_of(&self, login: &str, key: &PublicKey) -> Option<crate::model::SftpUser> {
        let record = self.shared.user(login)?;
        let offered = users::openssh(key).ok()?;
        record.public_keys.contains(&offered).then_some(record)
    }
}

/// `text` with every control character as its Rust escape (`\n`, `\u{1b}`).
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod source_tests {
    use std::net::IpAddr;

    #[test]
    fn an_ipv6_address_counts_as_its_64_and_ipv4_as_itself() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(super::source(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
        assert_eq!(super::source(ip("2001:db8:1:2::1")), super::source(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(super::source(ip("2001:db8:1:2::1")), super::source(ip("2001:db8:1:3::1")));
        assert_eq!(super::source(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(super::source(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            super::printable("sftp upload a\n[lightd] fake\u{1b}[2J.txt"),
            "sftp upload a\\n[lightd] fake\\u{1b}[2J.txt"
        );
        assert_eq!(super::printable("sftp upload wörld/level.dat"), "sftp upload wörld/level.dat");
    }
}
