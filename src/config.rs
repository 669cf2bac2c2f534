//! `config.json` <-> [`Config`]: embedded defaults, validation, sizes like `"10GB"`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Why a configuration could not be used; printed as is before exiting with code 2.
#[derive(Debug)]
pub enum ConfigError {
    Read(PathBuf, std::io::Error),
    Parse(PathBuf, String),
    Invalid(String),
    Write(PathBuf, std::io::Error),
}

impl ConfigError {
    /// Whether reading or writing failed for lack of permission (run as another user).
    pub fn permission_denied(&self) -> bool {
        matches!(self, ConfigError::Read(_, e) | ConfigError::Write(_, e) if e.kind() == std::io::ErrorKind::PermissionDenied)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read(p, e) => write!(f, "cannot read config {}: {e}", p.display()),
            ConfigError::Parse(p, e) => write!(f, "config {} is not valid: {e}", p.display()),
            ConfigError::Invalid(e) => write!(f, "invalid config: {e}"),
            ConfigError::Write(p, e) => write!(f, "cannot write {}: {e}", p.display()),
        }
    }
}

/// The whole daemon configuration. Every section and key has a default, so an absent file,
/// an empty object or a partial file all work; unknown keys are rejected to catch typos.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub docker: DockerConfig,
    pub volumes: VolumesConfig,
    pub containers: ContainersConfig,
    pub authorization: AuthConfig,
    pub storage: StorageConfig,
    pub console: ConsoleConfig,
    pub backups: BackupsConfig,
    pub files: FilesConfig,
    pub log: LogConfig,
    pub node: NodeConfig,
    pub sftp: SftpConfig,
}

/// `sftp.*`: the SFTP server into volumes (see docs/sftp.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftpConfig {
    /// Whether the SFTP server runs (it also needs the `sftp` cargo feature).
    pub enabled: bool,
    pub host: String,
    /// 0: any free port (the bound one is logged).
    pub port: u16,
    /// The ed25519 host key (made on first start, 0600); empty: `sftp_host_ed25519_key` beside
    /// the state file.
    pub host_key: PathBuf,
    /// Most SFTP sessions one user may have open at once.
    pub max_sessions_per_user: usize,
    /// Most SFTP connections from one source address at once.
    pub max_sessions_per_ip: usize,
    /// Failed logins one source address (an IPv6 address by its /64) may make per minute; past
    /// it every login from that address is refused until the minute is over.
    pub max_failed_logins_per_minute: u32,
    /// Failed logins one login name may take per minute from all addresses together; past it
    /// every login as that name is refused until the minute is over.
    pub max_failed_logins_per_user_per_minute: u32,
    /// Seconds a connection has to log in (the SSH handshake included); past them it is closed.
    pub login_timeout: u64,
    /// Most connections not yet logged in, from every address together; past it a new one is
    /// closed at once.
    pub max_unauthenticated: usize,
}

impl Default for SftpConfig {
    fn default() -> Self {
        SftpConfig {
            enabled: true,
            host: "0.0.0.0".into(),
            port: 2022,
            host_key: PathBuf::new(),
            max_sessions_per_user: 64,
            max_sessions_per_ip: 128,
            max_failed_logins_per_minute: 10,
            max_failed_logins_per_user_per_minute: 20,
            login_timeout: 30,
            max_unauthenticated: 64,
        }
    }
}

impl Config {
    /// Where the SFTP host key is kept.
    pub fn sftp_host_key(&self) -> PathBuf {
        if self.sftp.host_key.as_os_str().is_empty() {
            self.storage.state_dir().join("sftp_host_ed25519_key")
        } else {
            self.sftp.host_key.clone()
        }
    }
}

/// What the node offers new servers (`GET /system`'s `free`) and how often usage is metered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Memory kept for the host (the OS, dockerd, lightd): never offered to servers (`"0"`: none).
    pub reserved_memory: String,
    /// How far the sums of servers' limits may go past what the node has.
    pub overcommit: Overcommit,
    /// Seconds between two readings of the usage meters (and their save to disk): what a kill -9
    /// or a server's stop may lose at most.
    pub meter_interval: u64,
}

/// Ratios of what may be committed to what the node has (1.0: no overcommit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overcommit {
    pub memory: f64,
    pub cpu: f64,
    pub disk: f64,
}

impl Default for Overcommit {
    fn default() -> Self {
        Overcommit { memory: 1.0, cpu: 1.0, disk: 1.0 }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { reserved_memory: "512MB".into(), overcommit: Overcommit::default(), meter_interval: 10 }
    }
}

impl NodeConfig {
    /// `node.reserved_memory` in bytes (validated at load).
    pub fn reserved_memory_bytes(&self) -> u64 {
        parse_size_or_zero(&self.reserved_memory).unwrap_or(0)
    }
}

/// The files API's long operations: extract jobs and archive downloads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// How long an extract job (receiving its body included) or an archive download may
    /// take, as `"90s"`, `"10m"` or `"1h"`.
    pub job_timeout: String,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig { job_timeout: "10m".into() }
    }
}

impl FilesConfig {
    /// `files.job_timeout` (validated at load).
    pub fn job_timeout(&self) -> std::time::Duration {
        parse_duration(&self.job_timeout).unwrap_or(std::time::Duration::from_secs(600))
    }
}

/// What the daemon writes to stderr (the journal under systemd), see `log.rs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info` or `debug` (one line per HTTP request).
    pub level: String,
    /// `text` (`2026-11-30T01:02:03.456Z INFO message`) or `json` (one object per line).
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: "text".into() }
    }
}

impl LogConfig {
    /// `log.level` (validated at load).
    pub fn level(&self) -> crate::log::Level {
        crate::log::Level::parse(&self.level).unwrap_or(crate::log::Level::Info)
    }

    /// `log.format` (validated at load).
    pub fn format(&self) -> crate::log::Format {
        crate::log::Format::parse(&self.format).unwrap_or(crate::log::Format::Text)
    }
}

/// `backups.*`: where archives go and how many jobs run, how fast and for how long.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupsConfig {
    /// Where backups are kept, one `tar.gz` each.
    pub path: PathBuf,
    /// Ready backups kept per volume; past it the oldest ready one is removed.
    pub max_per_volume: usize,
    /// Backups and restores running at once over all volumes (more wait their turn).
    pub max_parallel: usize,
    /// MiB per second a backup may write (0: no limit).
    pub write_limit: u64,
    /// Seconds a backup or restore may run once it has a slot; past it, it fails.
    pub timeout: u64,
}

impl Default for BackupsConfig {
    fn default() -> Self {
        BackupsConfig {
            path: "/var/lib/lightd/backups".into(),
            max_per_volume: 10,
            max_parallel: 2,
            write_limit: 0,
            timeout: 3600,
        }
    }
}

/// `server.*`: the API's address and its connection limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Most open client connections; past it new ones get a 503 and are closed.
    pub max_connections: usize,
    /// Most anonymous connections (no master token yet) from one client address.
    pub max_connections_per_ip: usize,
    /// Most anonymous connections; past it the oldest is closed to make room.
    pub max_anonymous_connections: usize,
    /// Most WebSockets waiting for their `auth` frame; past it the oldest is closed.
    pub max_pending_sockets: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 8080,
            max_connections: 8192,
            max_connections_per_ip: 2048,
            max_anonymous_connections: 4096,
            max_pending_sockets: 256,
        }
    }
}

/// `docker.*`: the engine's socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    pub socket_path: PathBuf,
    /// Registries images may come from (`docker.io`, `127.0.0.1:5000`); empty: any.
    pub allowed_registries: Vec<String>,
    /// Credentials by registry host (`registry.example.com`, `127.0.0.1:5000`), sent with
    /// pulls from it. Secret: never logged, and hidden from `Debug`.
    pub registry_auth: BTreeMap<String, RegistryCredential>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            socket_path: "/var/run/docker.sock".into(),
            allowed_registries: Vec::new(),
            registry_auth: BTreeMap::new(),
        }
    }
}

/// One registry's credentials: `username` and `password`, or an `identity_token`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryCredential {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_token: Option<String>,
}

/// Shows who, never the secret.
impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("RegistryCredential")
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("identity_token", &hidden(&self.identity_token))
            .finish()
    }
}

impl DockerConfig {
    /// The credentials for `registry` (a host as image references name it), if any.
    pub fn credential_for(&self, registry: &str) -> Option<&RegistryCredential> {
        self.registry_auth.iter().find(|(host, _)| host.eq_ignore_ascii_case(registry)).map(|(_, c)| c)
    }
}

/// `volumes.*`: where volumes live, their default size and how it is enforced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumesConfig {
    pub base_path: PathBuf,
    pub default_size_limit: String,
    /// How size limits are enforced: `auto` (loop when the daemon can mount loop devices,
    /// else none), `loop` (an ext4 image per volume), `none` (recorded only).
    pub quota: QuotaSetting,
    /// Whether loop volumes may promise more than the host's disk holds (`false`: a create or
    /// grow whose images could not all fill up is refused with a 409).
    pub overcommit: bool,
}

/// `volumes.quota` as configured (resolved at start to a `model::Quota`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaSetting {
    #[default]
    Auto,
    Loop,
    None,
}

impl Default for VolumesConfig {
    fn default() -> Self {
        VolumesConfig {
            base_path: "/var/lib/lightd/volumes".into(),
            default_size_limit: "10GB".into(),
            quota: QuotaSetting::Auto,
            overcommit: false,
        }
    }
}

/// `containers.*`: how servers are made (user, network, mounts, timeouts).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainersConfig {
    pub default_network: String,
    /// What every Docker container name this daemon makes starts with; two daemons sharing
    /// one engine need different ones (each also labels its containers with its instance id).
    pub name_prefix: String,
    /// Seconds between SIGTERM and SIGKILL on `stop`.
    pub cleanup_timeout: u64,
    pub max_containers: usize,
    /// Host directories under which custom `mount` sources may lie; empty: no host path at all.
    /// A plain path allows read-only mounts; `{"path": .., "rw": true}` read-write ones too.
    pub allowed_mounts: Vec<AllowedMount>,
    /// Limits for a create that gives none (`limits.memory` bytes, `limits.cpu` cores).
    pub default_limits: crate::model::Limits,
    /// Most processes (and threads) one container may run.
    pub pids_limit: i64,
    /// Seconds an install (image pull and install script) may take before it fails.
    pub install_timeout: u64,
    /// `uid:gid` servers run as unless a create names another (`"0:0"` runs them as root).
    pub user: String,
    /// Whether a server that exits on its own is started again (a create may say otherwise).
    pub crash_restart: bool,
    /// A server that crashes again within this many seconds of its last crash stays down.
    pub crash_window: u64,
    /// Size of the tmpfs at `/tmp` in a server's (otherwise read-only) root file system.
    pub tmpfs_size: String,
}

impl Default for ContainersConfig {
    fn default() -> Self {
        ContainersConfig {
            default_network: "lightd-network".into(),
            name_prefix: "lightd-".into(),
            cleanup_timeout: 30,
            max_containers: 100,
            allowed_mounts: Vec::new(),
            default_limits: crate::model::Limits { memory: Some(2 << 30), cpu: Some(1.0) },
            pids_limit: 1024,
            install_timeout: 3600,
            user: "1000:1000".into(),
            crash_restart: true,
            crash_window: 60,
            tmpfs_size: "100MB".into(),
        }
    }
}

/// One `containers.allowed_mounts` entry: a directory, and whether mounts under it may be
/// read-write (a plain path string means read-only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AllowedMount {
    ReadOnly(PathBuf),
    Entry {
        path: PathBuf,
        #[serde(default)]
        rw: bool,
    },
}

impl AllowedMount {
    pub fn path(&self) -> &Path {
        match self {
            AllowedMount::ReadOnly(p) | AllowedMount::Entry { path: p, .. } => p,
        }
    }

    pub fn writable(&self) -> bool {
        matches!(self, AllowedMount::Entry { rw: true, .. })
    }
}

/// `authorization.*`: the master token and the console token table's bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The master token, `lightd_` + secret; empty means "generate one on first start".
    pub token: String,
    /// Most console tokens (`POST /auth/tokens`) alive at once.
    pub max_console_tokens: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { token: String::new(), max_console_tokens: 1000 }
    }
}

/// `storage.*`: the state file and the data and journal directories.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub state_file: PathBuf,
    /// Per-container data directories (`install.sh`, `entrypoint.sh`), mounted at `/app/data`.
    pub data_path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { state_file: "/var/lib/lightd/state.json".into(), data_path: "/var/lib/lightd/data".into() }
    }
}

/// `console.*`: ring sizes, tails, journals and session limits of the consoles.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Lines kept per container for tails and slow viewers.
    pub ring_lines: usize,
    /// Bytes of console text kept per container (the other bound of the ring).
    pub ring_bytes: usize,
    /// Lines a new viewer gets at once.
    pub tail_lines: usize,
    /// Most console sessions (WebSocket and attach) open on one container.
    pub max_sessions_per_container: usize,
    /// Most console sessions open with one console token.
    pub max_sessions_per_token: usize,
    /// Bytes of console history kept on disk per server (and as much again of its install
    /// output); 0 keeps none.
    pub journal_bytes: u64,
    /// Seconds between the journal's appends: a kill -9 loses at most this much output.
    pub journal_flush: u64,
}

impl StorageConfig {
    /// The state file's directory: lightd's own (the token file and the journals live there).
    pub fn state_dir(&self) -> &Path {
        self.state_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }

    /// Where console journals and crash records are kept.
    pub fn journal_dir(&self) -> PathBuf {
        self.state_dir().join("journal")
    }
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            ring_lines: 1000,
            ring_bytes: 256 * 1024,
            tail_lines: 100,
            max_sessions_per_container: 2000,
            max_sessions_per_token: 20,
            journal_bytes: 4 << 20,
            journal_flush: 1,
        }
    }
}

const SECTIONS: &[&str] = &[
    "server",
    "docker",
    "volumes",
    "containers",
    "authorization",
    "storage",
    "console",
    "backups",
    "files",
    "log",
    "node",
    "sftp",
];

/// Prefix of every lightd token, so a leaked one is easy to recognise and grep for.
pub const TOKEN_PREFIX: &str = "lightd_";

impl Config {
    /// Reads `path`; an absent file gives the embedded defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(ConfigError::Read(path.into(), e)),
        };
        let parse_err = |e: String| ConfigError::Parse(path.into(), e);
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
        let obj = value.as_object().ok_or_else(|| parse_err("the top level must be an object".into()))?;
        // Section by section, so a type error names the section it is in.
        for (name, section) in obj {
            if !SECTIONS.contains(&name.as_str()) {
                return Err(parse_err(format!("unknown section {name:?} (known: {})", SECTIONS.join(", "))));
            }
            let mut probe = serde_json::Map::new();
            probe.insert(name.clone(), section.clone());
            serde_json::from_value::<Config>(probe.into()).map_err(|e| parse_err(format!("{name}: {e}")))?;
        }
        serde_json::from_value(value).map_err(|e| parse_err(e.to_string()))
    }

    /// Writes the config back atomically (mode 0600: it holds the token).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("config serializes");
        bytes.push(b'\n');
        fsutil::write_atomic(path, &bytes, 0o600).map_err(|e| ConfigError::Write(path.into(), e))
    }

    /// Checks every value a user can get wrong, with a message naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.server.host.parse::<IpAddr>().is_err() {
            return bad(format!("server.host {:?} is not an IP address", self.server.host));
        }
        if self.sftp.host.parse::<IpAddr>().is_err() {
            return bad(format!("sftp.host {:?} is not an IP address", self.sftp.host));
        }
        if self.sftp.max_sessions_per_user == 0 || self.sftp.max_sessions_per_ip == 0 {
            return bad("sftp.max_sessions_per_user and sftp.max_sessions_per_ip must be at least 1".into());
        }
        if self.sftp.login_timeout == 0 || self.sftp.max_unauthenticated == 0 {
            return bad("sftp.login_timeout and sftp.max_unauthenticated must be at least 1".into());
        }
        if self.docker.socket_path.as_os_str().is_empty() {
            return bad("docker.socket_path is empty".into());
        }
        if !self.volumes.base_path.is_absolute() {
            return bad("volumes.base_path must be an absolute path".into());
        }
        if let Err(e) = parse_size(&self.volumes.default_size_limit) {
            return bad(format!("volumes.default_size_limit: {e}"));
        }
        if !valid_network_name(&self.containers.default_network) {
            return bad("containers.default_network must be 1-64 chars of [A-Za-z0-9_.-]".into());
        }
        if !valid_name_prefix(&self.containers.name_prefix) {
            return bad(
                "containers.name_prefix must be 1-32 chars of [A-Za-z0-9_.-], starting with a letter or digit".into()
            );
        }
        if self.containers.cleanup_timeout > 3600 {
            return bad("containers.cleanup_timeout must be at most 3600 seconds".into());
        }
        if self.containers.max_containers == 0 {
            return bad("containers.max_containers must be at least 1".into());
        }
        if crate::model::parse_user(&self.containers.user).is_none() {
            return bad(format!("containers.user {:?} must be uid:gid like 1000:1000", self.containers.user));
        }
        if !(10..=7 * 24 * 3600).contains(&self.containers.install_timeout) {
            return bad("containers.install_timeout must be between 10 and 604800 seconds".into());
        }
        if !parse_size(&self.containers.tmpfs_size).is_ok_and(|b| b >= MIN_TMPFS) {
            return bad("containers.tmpfs_size must be a size of at least 1MB, like \"100MB\"".into());
        }
        if self.containers.crash_window > 24 * 3600 {
            return bad("containers.crash_window must be at most 86400 seconds".into());
        }
        if !(1..=1_000_000).contains(&self.authorization.max_console_tokens) {
            return bad("authorization.max_console_tokens must be between 1 and 1000000".into());
        }
        if !(16..=1_000_000).contains(&self.containers.pids_limit) {
            return bad("containers.pids_limit must be between 16 and 1000000".into());
        }
        for m in self.containers.allowed_mounts.iter().map(AllowedMount::path) {
            if !m.is_absolute() || m.components().any(|c| c.as_os_str() == "..") {
                return bad(format!(
                    "containers.allowed_mounts entry {} must be an absolute path without ..",
                    m.display()
                ));
            }
        }
        let limits = &self.containers.default_limits;
        if limits.memory.is_some_and(|m| m < 6 << 20) || limits.cpu.is_some_and(|c| !(c.is_finite() && c >= 0.01)) {
            return bad("containers.default_limits: memory must be at least 6 MiB and cpu at least 0.01".into());
        }
        if self.server.max_connections < 16 || self.server.max_connections_per_ip == 0 {
            return bad(
                "server.max_connections must be at least 16 and server.max_connections_per_ip at least 1".into()
            );
        }
        if self.server.max_anonymous_connections == 0 || self.server.max_pending_sockets == 0 {
            return bad("server.max_anonymous_connections and server.max_pending_sockets must be at least 1".into());
        }
        if self.console.max_sessions_per_container == 0 || self.console.max_sessions_per_token == 0 {
            return bad(
                "console.max_sessions_per_container and console.max_sessions_per_token must be at least 1".into()
            );
        }
        for r in &self.docker.allowed_registries {
            if !registry_host(r) {
                return bad(format!(
                    "docker.allowed_registries entry {r:?} must be a registry host like 127.0.0.1:5000"
                ));
            }
        }
        for (host, c) in &self.docker.registry_auth {
            if !registry_host(host) {
                return bad(format!("docker.registry_auth key {host:?} must be a registry host like 127.0.0.1:5000"));
            }
            let filled = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
            let password = filled(&c.username) && filled(&c.password);
            if password == filled(&c.identity_token) || (!password && (c.username.is_some() || c.password.is_some())) {
                return bad(format!(
                    "docker.registry_auth.{host} needs either \"username\" and \"password\" or \"identity_token\""
                ));
            }
        }
        if self.storage.state_file.as_os_str().is_empty() || self.storage.state_file.is_dir() {
            return bad("storage.state_file must name a file".into());
        }
        if !self.backups.path.is_absolute() {
            return bad("backups.path must be an absolute path".into());
        }
        if self.backups.max_per_volume == 0 || self.backups.max_parallel == 0 {
            return bad("backups.max_per_volume and backups.max_parallel must be at least 1".into());
        }
        if !(1..=7 * 24 * 3600).contains(&self.backups.timeout) {
            return bad("backups.timeout must be between 1 and 604800 seconds".into());
        }
        if !self.storage.data_path.is_absolute() {
            return bad("storage.data_path must be an absolute path".into());
        }
        if !(1..=100_000).contains(&self.console.ring_lines) {
            return bad("console.ring_lines must be between 1 and 100000".into());
        }
        if !(4096..=64 << 20).contains(&self.console.ring_bytes) {
            return bad("console.ring_bytes must be between 4096 and 67108864".into());
        }
        if self.console.journal_bytes != 0 && !(64 << 10..=1 << 30).contains(&self.console.journal_bytes) {
            return bad("console.journal_bytes must be 0 (no journal) or between 65536 and 1073741824".into());
        }
        if !(1..=60).contains(&self.console.journal_flush) {
            return bad("console.journal_flush must be between 1 and 60 seconds".into());
        }
        if self.console.tail_lines > self.console.ring_lines {
            return bad("console.tail_lines must not exceed console.ring_lines".into());
        }
        match parse_duration(&self.files.job_timeout) {
            Ok(d) if (1..=24 * 3600).contains(&d.as_secs()) => {}
            Ok(_) => return bad("files.job_timeout must be between 1s and 24h".into()),
            Err(e) => return bad(format!("files.job_timeout: {e}")),
        }
        if crate::log::Level::parse(&self.log.level).is_none() {
            return bad(format!(
                "log.level {:?} must be one of {}",
                self.log.level,
                crate::log::Level::NAMES.join(", ")
            ));
        }
        if crate::log::Format::parse(&self.log.format).is_none() {
            return bad(format!("log.format {:?} must be text or json", self.log.format));
        }
        if let Err(e) = parse_size_or_zero(&self.node.reserved_memory) {
            return bad(format!("node.reserved_memory: {e}"));
        }
        let o = self.node.overcommit;
        if [o.memory, o.cpu, o.disk].iter().any(|r| !(r.is_finite() && (0.1..=100.0).contains(r))) {
            return bad("node.overcommit.memory, .cpu and .disk must be ratios between 0.1 and 100".into());
        }
        if !(1..=3600).contains(&self.node.meter_interval) {
            return bad("node.meter_interval must be between 1 and 3600 seconds".into());
        }
        let token = &self.authorization.token;
        if !token.is_empty() && !valid_token(token) {
            return bad(format!(
                "authorization.token must be {TOKEN_PREFIX} followed by at least 16 characters \
                 of [A-Za-z0-9] (leave it empty to generate one)"
            ));
        }
        Ok(())
    }

    /// Size limit for volumes created without one, in bytes (validated at load).
    pub fn default_size_limit(&self) -> u64 {
        parse_size(&self.volumes.default_size_limit).unwrap_or(10 << 30)
    }

    /// `containers.tmpfs_size` in bytes (validated at load).
    pub fn tmpfs_size(&self) -> u64 {
        parse_size(&self.containers.tmpfs_size).unwrap_or(100 << 20)
    }
}

/// The smallest `containers.tmpfs_size`.
const MIN_TMPFS: u64 = 1 << 20;

/// A registry host as image references name it: no scheme, path or spaces (`reg.io`,
/// `127.0.0.1:5000`, `[::1]:5000`).
fn registry_host(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && !s.contains(['/', ' ', '@']) && !s.bytes().any(|b| b.is_ascii_control())
}

fn valid_network_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A Docker name starts with a letter or digit; the internal id (up to 64 chars) follows.
fn valid_name_prefix(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_token(t: &str) -> bool {
    t.strip_prefix(TOKEN_PREFIX).is_some_and(|s| s.len() >= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Like [`parse_size`], but `"0"` (nothing) is a size too.
pub fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    match s.trim() {
        "0" => Ok(0),
        _ => parse_size(s),
    }
}

/// Parses `"10GB"`, `"512MiB"`, `"1024"`; units are binary (1 KB = 1024 bytes), as
/// game panels and Docker's `--memory` use them. Zero is refused.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like \"10GB\""))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{s:?} has an unknown unit (use B, KB, MB, GB or TB)")),
    };
    match n.checked_mul(1u64 << shift) {
        Some(0) => Err(format!("{s:?} must be greater than zero")),
        Some(v) => Ok(v),
        None => Err(format!("{s:?} is too large")),
    }
}

/// Parses `"90s"`, `"10m"`, `"1h"` (a whole number and one unit: s, m or h).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like \"10m\""))?;
    let secs = match unit.trim() {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => return Err(format!("{s:?} has an unknown unit (use s, m or h)")),
    };
    secs.map(std::time::Duration::from_secs).ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sftp_is_on_by_default_and_its_keys_are_checked() {
        let c = Config::default();
        assert!(c.sftp.enabled);
        assert_eq!((c.sftp.host.as_str(), c.sftp.port), ("0.0.0.0", 2022));
        assert_eq!(c.sftp_host_key(), c.storage.state_dir().join("sftp_host_ed25519_key"));
        assert!(c.validate().is_ok());
        let mut bad = c.clone();
        bad.sftp.host = "everywhere".into();
        assert!(bad.validate().unwrap_err().to_string().contains("sftp.host"));
        let mut bad = c.clone();
        bad.sftp.max_sessions_per_user = 0;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.sftp.login_timeout = 0;
        assert!(bad.validate().unwrap_err().to_string().contains("sftp.login_timeout"));
        let mut set = c;
        set.sftp.host_key = "/etc/lightd/key".into();
        assert_eq!(set.sftp_host_key(), Path::new("/etc/lightd/key"));
    }

    /// Two daemons on one engine tell their containers apart by this prefix: it must make a
    /// valid Docker name with the internal id after it.
    #[test]
    fn the_name_prefix_is_checked() {
        let c = Config::default();
        assert_eq!(c.containers.name_prefix, "lightd-");
        assert_eq!(crate::model::docker_name(&c.containers.name_prefix, "srv"), "lightd-srv");
        for good in ["node2-", "a", "lightd.b_2-"] {
            let mut ok = c.clone();
            ok.containers.name_prefix = good.into();
            assert!(ok.validate().is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(33)] {
            let mut no = c.clone();
            no.containers.name_prefix = bad.into();
            assert!(no.validate().unwrap_err().to_string().contains("containers.name_prefix"), "{bad:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(std::time::Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse_duration(" 2h "), Ok(std::time::Duration::from_secs(7200)));
        for bad in ["", "10", "m", "1.5m", "-1s", "10 minutes", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let mut c = Config::default();
        c.files.job_timeout = "0s".into();
        assert!(c.validate().is_err());
        c.files.job_timeout = "25h".into();
        assert!(c.validate().is_err());
        c.files.job_timeout = "1s".into();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GB"), Ok(10 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert!(parse_size("0GB").is_err());
        assert!(parse_size("GB").is_err());
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("-1GB").is_err());
        assert!(parse_size("99999999999999TB").is_err());
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn partial_file_and_unknown_key() {
        let c: Config = serde_json::from_str(r#"{"server":{"port":9000}}"#).unwrap();
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.server.host, "0.0.0.0");
        let e = serde_json::from_str::<Config>(r#"{"server":{"prot":9000}}"#).unwrap_err();
        assert!(e.to_string().contains("prot"));
    }

    #[test]
    fn allowed_mounts_plain_or_with_rw() {
        let c: Config =
            serde_json::from_str(r#"{"containers":{"allowed_mounts":["/srv/maps",{"path":"/srv/rw","rw":true}]}}"#)
                .unwrap();
        let m = &c.containers.allowed_mounts;
        assert_eq!((m[0].path(), m[0].writable()), (Path::new("/srv/maps"), false));
        assert_eq!((m[1].path(), m[1].writable()), (Path::new("/srv/rw"), true));
        c.validate().unwrap();
    }

    #[test]
    fn registry_auth_shapes_and_secrecy() {
        let c: Config = serde_json::from_str(
            r#"{"docker":{"allowed_registries":["127.0.0.1:5000"],"registry_auth":{
                "127.0.0.1:5000":{"username":"u","password":"hunter2"},
                "Ghcr.io":{"identity_token":"tok-secret"}}}}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.docker.credential_for("127.0.0.1:5000").unwrap().password.as_deref(), Some("hunter2"));
        assert_eq!(c.docker.credential_for("ghcr.io").unwrap().identity_token.as_deref(), Some("tok-secret"));
        assert!(c.docker.credential_for("docker.io").is_none());
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("tok-secret"), "{shown}");
        assert!(shown.contains("\"u\""), "who is shown: {shown}");
        // Saved back (a token reset rewrites the file) with the credentials intact.
        let again: Config = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(again.docker.registry_auth, c.docker.registry_auth);
        for bad in [
            r#"{"r.io":{"username":"u"}}"#,
            r#"{"r.io":{"password":"p"}}"#,
            r#"{"r.io":{}}"#,
            r#"{"r.io":{"username":"u","password":"p","identity_token":"t"}}"#,
            r#"{"r.io":{"username":"","password":"p"}}"#,
            r#"{"https://r.io/v2":{"identity_token":"t"}}"#,
        ] {
            let c: Config = serde_json::from_str(&format!(r#"{{"docker":{{"registry_auth":{bad}}}}}"#)).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("docker.registry_auth"), "{bad}: {e}");
            assert!(!e.contains("\"p\""), "{e}");
        }
        let e = serde_json::from_str::<Config>(r#"{"docker":{"registry_auth":{"r":{"user":"u"}}}}"#).unwrap_err();
        assert!(e.to_string().contains("user"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = Config::default();
        c.console.tail_lines = 5000;
        assert!(c.validate().unwrap_err().to_string().contains("tail_lines"));
        let mut c = Config::default();
        c.authorization.token = "lightd_short".into();
        assert!(c.validate().unwrap_err().to_string().contains("authorization.token"));
        let mut c = Config::default();
        c.containers.allowed_mounts = vec![AllowedMount::ReadOnly("relative/dir".into())];
        assert!(c.validate().unwrap_err().to_string().contains("allowed_mounts"));
        for size in ["100KB", "lots", "0"] {
            let mut c = Config::default();
            c.containers.tmpfs_size = size.into();
            assert!(c.validate().unwrap_err().to_string().contains("containers.tmpfs_size"), "{size}");
        }
        let c: Config = serde_json::from_str(r#"{"containers":{"tmpfs_size":"1MB"}}"#).unwrap();
        assert_eq!((c.tmpfs_size(), Config::default().tmpfs_size()), (1 << 20, 100 << 20));
    }

    #[test]
    fn node_section() {
        let c = Config::default();
        assert_eq!(c.node.reserved_memory_bytes(), 512 << 20);
        assert_eq!((c.node.overcommit, c.node.meter_interval), (Overcommit::default(), 10));
        let c: Config =
            serde_json::from_str(r#"{"node":{"reserved_memory":"0","overcommit":{"cpu":4},"meter_interval":1}}"#)
                .unwrap();
        c.validate().unwrap();
        assert_eq!((c.node.reserved_memory_bytes(), c.node.overcommit.cpu, c.node.overcommit.memory), (0, 4.0, 1.0));
        for (bad, key) in [
            (r#"{"reserved_memory":"lots"}"#, "node.reserved_memory"),
            (r#"{"overcommit":{"memory":0}}"#, "node.overcommit"),
            (r#"{"overcommit":{"disk":1000}}"#, "node.overcommit"),
            (r#"{"meter_interval":0}"#, "node.meter_interval"),
        ] {
            let c: Config = match serde_json::from_str(&format!(r#"{{"node":{bad}}}"#)) {
                Ok(c) => c,
                Err(e) => panic!("{bad}: {e}"),
            };
            assert!(c.validate().unwrap_err().to_string().contains(key), "{bad}");
        }
        assert!(serde_json::from_str::<Config>(r#"{"node":{"overcommit":{"ram":2}}}"#).is_err());
    }

    #[test]
    fn log_section() {
        let c = Config::default();
        assert_eq!((c.log.level(), c.log.format()), (crate::log::Level::Info, crate::log::Format::Text));
        let c: Config = serde_json::from_str(r#"{"log":{"level":"debug","format":"json"}}"#).unwrap();
        c.validate().unwrap();
        assert_eq!((c.log.level(), c.log.format()), (crate::log::Level::Debug, crate::log::Format::Json));
        let c: Config = serde_json::from_str(r#"{"log":{"level":"verbose"}}"#).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("log.level") && e.contains("verbose") && e.contains("debug"), "{e}");
        let c: Config = serde_json::from_str(r#"{"log":{"format":"xml"}}"#).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("log.format"));
        assert!(serde_json::from_str::<Config>(r#"{"log":{"levle":"info"}}"#).is_err());
    }
}
