//! A server's firewall rules as the API takes them and the record keeps them, and their
//! validation against the server's own ports.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{PortBinding, Protocol};

/// Most addresses or networks one `allow` or `deny` list may hold.
pub const MAX_LIST: usize = 1024;
/// Highest `new_connections_per_second`.
pub const MAX_RATE: u64 = 1_000_000;

/// One rule: who may reach one of the server's published ports, and how fast. Addresses are
/// kept in canonical CIDR form (`203.0.113.0/24`, `2001:db8::/32`, a host as `/32` or `/128`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub port: u16,
    pub protocol: Protocol,
    /// When set, only these sources reach the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// These sources never reach the port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Most connections (conntrack entries) one source address may hold open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<u32>,
    /// Most new connections one source address may open per second (burst of the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_connections_per_second: Option<u32>,
}

impl Rule {
    /// `27015/tcp`.
    pub fn port_name(&self) -> String {
        format!("{}/{}", self.port, self.protocol.as_str())
    }
}

/// A rule as a client sent it, before validation (wide types, so a bad value is named by us).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub port: u64,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    #[serde(default)]
    pub deny: Option<Vec<String>>,
    #[serde(default)]
    pub max_connections_per_ip: Option<u64>,
    #[serde(default)]
    pub new_connections_per_second: Option<u64>,
}

/// An address or network, its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub ip: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// `a.b.c.d`, `a.b.c.d/n`, `x::y`, `x::y/n`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => {
                if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (ip.parse::<IpAddr>().ok()?, Some(len.parse::<u8>().ok()?))
            }
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return None;
        }
        let ip = match ip {
            IpAddr::V4(v) => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                IpAddr::V4((u32::from(v) & mask).into())
            }
            IpAddr::V6(v) => {
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
                IpAddr::V6((u128::from(v) & mask).into())
            }
        };
        Some(Cidr { ip, len })
    }

    pub fn is_v4(&self) -> bool {
        self.ip.is_ipv4()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.len)
    }
}

/// Checks `raw` against the server's `ports`: each rule on a port the server publishes, once;
/// every address a CIDR; limits in range. The message names the rule and the bad value.
pub fn validate(raw: Vec<RawRule>, ports: &[PortBinding]) -> Result<Vec<Rule>, String> {
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let at = format!("rules[{i}]");
        let protocol = match r.protocol.as_deref() {
            None => Protocol::Tcp,
            Some(p) => Protocol::parse(p).ok_or_else(|| format!("{at}.protocol {p:?} must be tcp or udp"))?,
        };
        let port = u16::try_from(r.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{at}.port {} must be between 1 and 65535", r.port))?;
        let name = format!("{port}/{}", protocol.as_str());
        if !ports.iter().any(|b| b.port == port && b.protocol == protocol) {
            let own: Vec<String> = ports.iter().map(|b| format!("{}/{}", b.port, b.protocol.as_str())).collect();
            let own = if own.is_empty() { "none".to_string() } else { own.join(", ") };
            return Err(format!("{at}.port {name} is not one of this server's ports ({own})"));
        }
        if let Some(j) = rules.iter().position(|x| x.port == port && x.protocol == protocol) {
            return Err(format!("{at}: port {name} already has a rule (rules[{j}])"));
        }
        let allow = match r.allow {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(format!("{at}.allow is empty; leave it out to admit every address"));
            }
            Some(list) => Some(cidrs(&format!("{at}.allow"), list)?),
        };
        let deny = cidrs(&format!("{at}.deny"), r.deny.unwrap_or_default())?;
        let limit = |v: Option<u64>, field: &str, max: u64| -> Result<Option<u32>, String> {
            match v {
                None => Ok(None),
                Some(n) if (1..=max).contains(&n) => Ok(Some(n as u32)),
                Some(n) => Err(format!("{at}.{field} {n} must be between 1 and {max}")),
            }
        };
        rules.push(Rule {
            port,
            protocol,
            allow,
            deny,
            max_connections_per_ip: limit(r.max_connections_per_ip, "max_connections_per_ip", 65_535)?,
            new_connections_per_second: limit(r.new_connections_per_second, "new_connections_per_second", MAX_RATE)?,
        });
    }
    Ok(rules)
}

/// The list in canonical form, or the first entry that is not an address or network.
fn cidrs(field: &str, list: Vec<String>) -> Result<Vec<String>, String> {
    if list.len() > MAX_LIST {
        return Err(format!("{field} has {} entries; at most {MAX_LIST}", list.len()));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for s in list {
        let c = Cidr::parse(&s).ok_or_else(|| format!("{field}: {s:?} is not an IP address or CIDR network"))?;
        let c = c.to_string();
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// The rules after the server's ports changed from `old` to `new` (a rebind): a rule stays on
/// its port while the server still publishes it, else moves to the port that took its
/// binding's place (same position, same protocol); a rule whose binding is gone is dropped.
pub fn follow(rules: &[Rule], old: &[PortBinding], new: &[PortBinding]) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    for r in rules {
        let owned = |b: &PortBinding| b.port == r.port && b.protocol == r.protocol;
        let port = if new.iter().any(owned) {
            Some(r.port)
        } else {
            old.iter().position(owned).and_then(|k| new.get(k)).filter(|b| b.protocol == r.protocol).map(|b| b.port)
        };
        if let Some(port) = port.filter(|p| !out.iter().any(|x| x.port == *p && x.protocol == r.protocol)) {
            out.push(Rule { port, ..r.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(port: u16, protocol: Protocol) -> PortBinding {
        PortBinding { ip: "0.0.0.0".parse().unwrap(), port, protocol, container_port: None }
    }

    fn raw(v: serde_json::Value) -> Vec<RawRule> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn cidrs_parse_and_normalize() {
        let c = |s: &str| Cidr::parse(s).map(|c| c.to_string());
        assert_eq!(c("203.0.113.7"), Some("203.0.113.7/32".into()));
        assert_eq!(c("203.0.113.7/24"), Some("203.0.113.0/24".into()));
        assert_eq!(c("0.0.0.0/0"), Some("0.0.0.0/0".into()));
        assert_eq!(c("2001:db8::1/32"), Some("2001:db8::/32".into()));
        assert_eq!(c("::1"), Some("::1/128".into()));
        for bad in ["10.0.0.1/33", "10.0.0.300", "10.0.0.0/", "10.0.0.0/+8", "::/129", "x", "", "10.0.0.0/8/8"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let ports = [binding(27015, Protocol::Tcp), binding(27015, Protocol::Udp)];
        let ok = validate(
            raw(
                serde_json::json!([{"port": 27015, "deny": ["198.51.100.7"], "allow": ["2001:db8::/32", "10.1.2.3/8"]},
                                   {"port": 27015, "protocol": "udp", "new_connections_per_second": 50}]),
            ),
            &ports,
        )
        .unwrap();
        assert_eq!(ok[0].deny, ["198.51.100.7/32"]);
        assert_eq!(ok[0].allow.as_deref(), Some(&["2001:db8::/32".to_string(), "10.0.0.0/8".to_string()][..]));
        assert_eq!(ok[1].protocol, Protocol::Udp);
        let err = |v| validate(raw(v), &ports).unwrap_err();
        assert!(err(serde_json::json!([{"port": 27016}])).contains("27016/tcp is not one of this server's ports"));
        assert!(err(serde_json::json!([{"port": 27015, "deny": ["10.0.0.0/33"]}])).contains("\"10.0.0.0/33\""));
        assert!(err(serde_json::json!([{"port": 27015, "allow": []}])).contains("allow is empty"));
        assert!(err(serde_json::json!([{"port": 27015}, {"port": 27015}])).contains("already has a rule"));
        assert!(err(serde_json::json!([{"port": 27015, "max_connections_per_ip": 0}])).contains("between 1"));
        assert!(err(serde_json::json!([{"port": 0}])).contains("between 1 and 65535"));
        assert!(err(serde_json::json!([{"port": 27015, "protocol": "icmp"}])).contains("tcp or udp"));
    }

    #[test]
    fn rules_follow_a_rebind() {
        let rule = |port| Rule {
            port,
            protocol: Protocol::Tcp,
            allow: None,
            deny: vec!["10.0.0.0/8".into()],
            max_connections_per_ip: None,
            new_connections_per_second: None,
        };
        let old = [binding(100, Protocol::Tcp), binding(200, Protocol::Tcp)];
        let new = [binding(300, Protocol::Tcp), binding(200, Protocol::Tcp)];
        assert_eq!(follow(&[rule(100), rule(200)], &old, &new), [rule(300), rule(200)]);
        assert_eq!(follow(&[rule(100)], &old, &[binding(100, Protocol::Udp)]), []);
        assert_eq!(follow(&[rule(200)], &old, &[binding(400, Protocol::Tcp)]), [], "its binding is gone");
    }
}
