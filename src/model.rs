//! Domain types kept in the state file: volumes, the network port pool, containers.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A short-lived console token (`POST /auth/tokens`), so a browser never holds the master token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TempToken {
    pub token: String,
    /// The only container it opens; `None` only for a token asked for as `"scope": "all"`.
    pub internal_id: Option<String>,
    pub expires_at: u64,
    pub remove_on_use: bool,
    /// Scope `transfer`: opens only the node-to-node transfer routes of `internal_id` (a
    /// server that does not exist here yet), never a console.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transfer: bool,
}

/// A host directory under `volumes.base_path`, bind-mounted at `/home/container`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    pub volume_id: String,
    /// An optional unique name, usable wherever a `volume_id` is.
    #[serde(default)]
    pub name: Option<String>,
    pub path: PathBuf,
    pub size_limit_bytes: u64,
    /// How the size limit is enforced (volumes from before quotas are `none`).
    #[serde(default)]
    pub quota: Quota,
    pub created_at: u64,
}

/// A backup of a volume: a `tar.gz` under `backups.path`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Backup {
    pub backup_id: String,
    pub volume_id: String,
    pub name: String,
    pub state: BackupState,
    /// How the archive is compressed (records from before formats existed are tar.gz).
    #[serde(default)]
    pub format: BackupFormat,
    pub size_bytes: u64,
    pub sha256: Option<String>,
    pub files: u64,
    pub created_at: u64,
    pub completed_at: Option<u64>,
    /// Why it failed, or why its last restore did.
    pub error: Option<String>,
    /// The latest restore from it, for those who poll.
    #[serde(default)]
    pub last_restore: Option<Restore>,
}

impl Backup {
    /// A backup of `volume_id` made now, in `state`, with nothing counted yet.
    pub fn new(backup_id: String, volume_id: &str, name: String, state: BackupState, created_at: u64) -> Backup {
        Backup {
            backup_id,
            volume_id: volume_id.to_string(),
            name,
            state,
            format: BackupFormat::TarGz,
            size_bytes: 0,
            sha256: None,
            files: 0,
            created_at,
            completed_at: None,
            error: None,
            last_restore: None,
        }
    }
}

/// One restore of a backup: when it began and ended (`completed_at` unset while it runs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Restore {
    pub started_at: u64,
    pub completed_at: Option<u64>,
    pub truncate: bool,
    pub error: Option<String>,
}

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackupState {
    Creating,
    Ready,
    Failed,
}

/// How a backup's archive is compressed.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum BackupFormat {
    #[default]
    #[serde(rename = "tar.gz")]
    TarGz,
    #[serde(rename = "tar.zst")]
    TarZst,
}

impl BackupFormat {
    /// The format a user names, or a message naming what was given.
    pub fn parse(name: &str) -> Result<BackupFormat, String> {
        match name {
            "tar.gz" => Ok(BackupFormat::TarGz),
            "tar.zst" => Ok(BackupFormat::TarZst),
            other => Err(format!("format must be \"tar.gz\" or \"tar.zst\", not {other:?}")),
        }
    }

    /// The archive's file name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            BackupFormat::TarGz => "tar.gz",
            BackupFormat::TarZst => "tar.zst",
        }
    }

    /// The archive's media type.
    pub fn content_type(self) -> &'static str {
        match self {
            BackupFormat::TarGz => "application/gzip",
            BackupFormat::TarZst => "application/zstd",
        }
    }

    pub fn codec(self) -> crate::vfs::Codec {
        match self {
            BackupFormat::TarGz => crate::vfs::Codec::Gz,
            BackupFormat::TarZst => crate::vfs::Codec::Zst,
        }
    }

    pub fn of(codec: crate::vfs::Codec) -> BackupFormat {
        match codec {
            crate::vfs::Codec::Gz => BackupFormat::TarGz,
            crate::vfs::Codec::Zst => BackupFormat::TarZst,
        }
    }
}

/// How a volume's size limit is enforced.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Quota {
    /// An ext4 image of the limit's size, loop-mounted at the directory: the kernel enforces it.
    Loop,
    /// Recorded, not enforced.
    #[default]
    None,
}

/// A port's protocol.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Identity of a pool entry: `(ip, port, protocol)` is unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}/{}", self.port, self.protocol.as_str()),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}/{}", self.port, self.protocol.as_str()),
        }
    }
}

/// One host port the daemon may hand to a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Port {
    pub ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub in_use: bool,
    pub used_by: Option<String>,
}

impl Port {
    pub fn free(key: PortKey) -> Port {
        Port { ip: key.ip, port: key.port, protocol: key.protocol, in_use: false, used_by: None }
    }

    pub fn key(&self) -> PortKey {
        PortKey { ip: self.ip, port: self.port, protocol: self.protocol }
    }
}

/// Seconds since the unix epoch.
/// An SFTP user of one volume (`POST /volumes/:v/sftp/users`); keyed in the state by its login
/// `<username>.<volume id>`. The password is kept only as an argon2id hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftpUser {
    pub username: String,
    pub volume_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// OpenSSH public keys (`ssh-ed25519 AAAA...`), comments dropped.
    #[serde(default)]
    pub public_keys: Vec<String>,
    #[serde(default)]
    pub read_only: bool,
    pub created_at: u64,
    /// Random, new for each user created: a user deleted and created again under the same name
    /// is another user, and the old one's sessions end (they remember the generation they
    /// logged in as). Records from before it have 0.
    #[serde(default)]
    pub generation: u64,
}

impl SftpUser {
    /// The name an SFTP client logs in with.
    pub fn login(&self) -> String {
        format!("{}.{}", self.username, self.volume_id)
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Where a container is in its install life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InstallState {
    Installing,
    Ready,
    Failed,
}

/// Whether the server process runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    Offline,
    Starting,
    Running,
    Stopping,
    Suspended,
}

impl PowerState {
    pub const ALL: [PowerState; 5] =
        [PowerState::Offline, PowerState::Starting, PowerState::Running, PowerState::Stopping, PowerState::Suspended];

    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Offline => "offline",
            PowerState::Starting => "starting",
            PowerState::Running => "running",
            PowerState::Stopping => "stopping",
            PowerState::Suspended => "suspended",
        }
    }
}

/// A host port published to the same port number inside the container, or, for a server
/// created in the seed's form (`"ports": {"80": "8080"}`), to `container_port`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct PortBinding {
    pub ip: IpAddr,
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: Protocol,
    /// The port inside the container when it is not `port`. Only the seed form sets it: the
    /// API form's bindings refuse it (`http::seed_form::refuse_container_ports`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
}

fn yes() -> bool {
    true
}

fn root() -> String {
    "0:0".into()
}

/// A `uid:gid` pair as numbers, when it is one.
pub fn parse_user(s: &str) -> Option<(u32, u32)> {
    let (u, g) = s.split_once(':')?;
    let num = |x: &str| {
        x.parse::<u32>().ok().filter(|n| *n < u32::MAX && !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
    };
    Some((num(u)?, num(g)?))
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

impl PortBinding {
    pub fn key(&self) -> PortKey {
        PortKey { ip: self.ip, port: self.port, protocol: self.protocol }
    }

    /// The port the server listens on inside its container.
    pub fn inner_port(&self) -> u16 {
        self.container_port.unwrap_or(self.port)
    }
}

/// A server's resource limits.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Limits {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Cores (1.0 = one core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
}

/// Both are read from a JSON object only: serde's derive also takes an array of the fields
/// (`"limits": [null, null]`), which no client means.
macro_rules! object_only {
    ($($t:ident),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $t::serialize(self, s)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                /// Reads the struct from a JSON object only.
                struct Object;
                impl<'de> serde::de::Visitor<'de> for Object {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        write!(f, "an object ({})", stringify!($t))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$t, A::Error> {
                        $t::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                d.deserialize_map(Object)
            }
        }
    )*};
}
object_only!(PortBinding, Limits);

/// How the server process last ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastExit {
    pub code: i64,
    pub oom_killed: bool,
    pub at: u64,
}

/// One managed server: what was asked for, and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    pub internal_id: String,
    /// Unique to this record (a label on its containers), so what a deleted record left can
    /// never be mistaken for what a new record of the same id makes.
    #[serde(default)]
    pub record_id: String,
    /// Docker's id of `lightd-<internal_id>`; `None` until created.
    pub container_id: Option<String>,
    pub volume_id: String,
    pub image: String,
    pub startup_command: String,
    pub start_pattern: Option<String>,
    pub install_state: InstallState,
    pub state: PowerState,
    pub ports: Vec<PortBinding>,
    pub limits: Limits,
    /// Container path -> host path.
    pub mount: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub install_script: Option<String>,
    /// Start the server again when it exits on its own (see `containers.crash_restart`).
    #[serde(default = "yes")]
    pub crash_restart: bool,
    /// A console command that stops the server gracefully (`quit`, `stop`), sent instead of
    /// SIGTERM; SIGKILL follows after `containers.cleanup_timeout` as with SIGTERM.
    #[serde(default)]
    pub stop_command: Option<String>,
    /// `uid:gid` the server runs as (the install script runs as root); records from before
    /// users existed ran as root.
    #[serde(default = "root")]
    pub user: String,
    pub last_exit: Option<LastExit>,
    /// Its firewall rules (`PUT /containers/:id/firewall`), on its own published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firewall: Vec<crate::firewall::Rule>,
    /// Why the install (or the last lifecycle operation) failed.
    pub error: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl ContainerRecord {
    /// Docker's name for it, under this daemon's `containers.name_prefix`.
    pub fn docker_name(&self, prefix: &str) -> String {
        docker_name(prefix, &self.internal_id)
    }
}

/// Docker's name for server `internal_id` of the daemon whose `containers.name_prefix` is
/// `prefix`: two daemons on one engine name the same server apart.
pub fn docker_name(prefix: &str, internal_id: &str) -> String {
    format!("{prefix}{internal_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_and_limits_are_objects_only() {
        let b: PortBinding = serde_json::from_str(r#"{"ip":"0.0.0.0","port":25565}"#).unwrap();
        assert_eq!(b.protocol, Protocol::Tcp);
        assert_eq!(serde_json::to_value(b).unwrap(), serde_json::json!({"ip":"0.0.0.0","port":25565,"protocol":"tcp"}));
        assert!(serde_json::from_str::<PortBinding>(r#"["0.0.0.0", 25565, "tcp"]"#).is_err());
        let e = serde_json::from_str::<PortBinding>(r#"{"ip":"0.0.0.0","port":1,"x":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
        let l: Limits = serde_json::from_str(r#"{"memory":null,"cpu":1.5}"#).unwrap();
        assert_eq!(l, Limits { memory: None, cpu: Some(1.5) });
        assert_eq!(serde_json::to_value(l).unwrap(), serde_json::json!({"cpu": 1.5}));
        assert!(serde_json::from_str::<Limits>("[null, null]").is_err());
        assert!(serde_json::from_str::<Limits>("null").is_err());
    }
}
