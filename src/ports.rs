//! The network port pool: host `(ip, port, protocol)` triples the daemon may hand out.

use std::net::IpAddr;

use crate::error::{bad, Error, Result};
use crate::fsutil::random_bytes;
use crate::model::{Port, PortKey, Protocol};
use crate::store::Store;

/// Most ports one `port_start..=port_end` request may add.
pub const MAX_RANGE: u32 = 1000;

pub fn parse_ip(s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| bad(format!("ip {s:?} is not an IP address")))
}

pub fn parse_protocol(s: Option<&str>) -> Result<Protocol> {
    match s {
        None => Ok(Protocol::Tcp),
        Some(p) => Protocol::parse(p).ok_or_else(|| bad(format!("protocol {p:?} must be tcp or udp"))),
    }
}

pub fn parse_port(n: u64, field: &str) -> Result<u16> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(format!("{field} must be between 1 and 65535"))),
    }
}

/// Adds every port of `first..=last`, all or none; a port already in the pool is a 409.
pub async fn add(store: &Store, ip: IpAddr, first: u16, last: u16, protocol: Protocol) -> Result<Vec<Port>> {
    if first > last {
        return Err(bad("port_start must not be greater than port_end"));
    }
    if u32::from(last - first) + 1 > MAX_RANGE {
        return Err(bad(format!("a range may add at most {MAX_RANGE} ports")));
    }
    let keys: Vec<PortKey> = (first..=last).map(|port| PortKey { ip, port, protocol }).collect();
    store
        .update(|s| {
            if let Some(k) = keys.iter().find(|k| s.ports.contains_key(k)) {
                return Err(Error::Conflict(format!("Port {k} is already in the pool")));
            }
            Ok(keys.iter().map(|&k| s.ports.entry(k).or_insert(Port::free(k)).clone()).collect())
        })
        .await
}

/// Which ports a listing shows.
#[derive(Debug, Default)]
pub struct Filter {
    pub available: Option<bool>,
    pub protocol: Option<Protocol>,
    pub ip: Option<IpAddr>,
}

impl Filter {
    fn keeps(&self, p: &Port) -> bool {
        self.available.is_none_or(|a| a != p.in_use)
            && self.protocol.is_none_or(|x| x == p.protocol)
            && self.ip.is_none_or(|x| x == p.ip)
    }
}

pub fn list(store: &Store, filter: &Filter) -> Vec<Port> {
    store.read(|s| s.ports.values().filter(|p| filter.keeps(p)).cloned().collect())
}

/// One free port chosen at random; it is not reserved.
pub fn random(store: &Store, protocol: Option<Protocol>) -> Result<Port> {
    let filter = Filter { available: Some(true), protocol, ip: None };
    let free = list(store, &filter);
    if free.is_empty() {
        return Err(Error::NotFound("No available ports".into()));
    }
    let r = random_bytes::<8>().map(u64::from_le_bytes).unwrap_or_else(|_| crate::model::now());
    Ok(free[(r % free.len() as u64) as usize].clone())
}

pub async fn remove(store: &Store, key: PortKey) -> Result<()> {
    store
        .update(|s| match s.ports.get(&key) {
            None => Err(Error::NotFound("Port not found in network pool".into())),
            Some(Port { in_use: true, used_by, .. }) => {
                Err(Error::Conflict(format!("Port {key} is in use by {}", used_by.as_deref().unwrap_or("a container"))))
            }
            Some(_) => {
                s.ports.remove(&key);
                Ok(())
            }
        })
        .await
}
