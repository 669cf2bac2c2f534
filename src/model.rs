//! Domain types kept in the state file: volumes and the network port pool.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A host directory under `volumes.base_path`, bind-mounted at `/home/container`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    pub volume_id: String,
    pub path: PathBuf,
    pub size_limit_bytes: u64,
    pub created_at: u64,
}

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
        Port {
            ip: key.ip,
            port: key.port,
            protocol: key.protocol,
            in_use: false,
            used_by: None,
        }
    }

    pub fn key(&self) -> PortKey {
        PortKey {
            ip: self.ip,
            port: self.port,
            protocol: self.protocol,
        }
    }
}

/// Seconds since the unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
