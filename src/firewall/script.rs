//! What lightd's nftables table should hold, and the one script that takes the table there.
//!
//! The table has two base chains, `published` (hook forward: Docker's published ports, after
//! its DNAT) and `proxied` (hook input: connections Docker's userland proxy accepts, loopback
//! left alone), both at priority `filter - 10` with policy accept, holding only jumps. Each
//! server with rules has one chain of its own, named for the server and a digest of its rules
//! (`s_<id>_h<digest>`), so a change makes a new chain and one server's rules never touch
//! another's chain, counters or sets. Each rule of the API has one named counter
//! (`<chain>_n<i>`), shared by the nft rules it is made of; the jumps' digest names an empty
//! marker set (`jumps_<digest>`), so what the table holds is read from the names of its chains,
//! sets and counters alone (cheap), never from a listing of its rules (slow with many).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use super::rule::{Cidr, Rule};
use crate::model::{PortBinding, Protocol};

/// The base chain on the forward hook.
pub const PUBLISHED: &str = "published";
/// The base chain on the input hook.
pub const PROXIED: &str = "proxied";

/// One server's chain as it should be.
#[derive(Debug, Clone)]
pub struct ServerChain {
    pub id: String,
    pub name: String,
    /// `add set` lines (without the `add set inet <table>` head): name, then declaration.
    pub sets: Vec<(String, String)>,
    /// Its named counters, one per rule of the API, in order.
    pub counters: Vec<String>,
    /// Rule bodies, in order.
    pub rules: Vec<String>,
    /// Jump rule bodies for the base chains.
    pub jumps: Vec<String>,
    /// The rules it was made from (counters are reported per rule).
    pub source: Vec<Rule>,
}

/// The table as it should be: one chain per server with rules.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub chains: Vec<ServerChain>,
}

impl Plan {
    /// From every server's `(id, ports, rules)`; servers without rules have no chain.
    pub fn new<'a>(servers: impl IntoIterator<Item = (&'a str, &'a [PortBinding], &'a [Rule])>) -> Plan {
        let chains = servers
            .into_iter()
            .filter(|(_, _, rules)| !rules.is_empty())
            .map(|(id, ports, rules)| server_chain(id, ports, rules))
            .collect();
        Plan { chains }
    }

    /// The marker set naming the digest of every jump, in order (what the base chains hold).
    pub fn marker(&self) -> String {
        let all: Vec<&str> = self.chains.iter().flat_map(|c| c.jumps.iter().map(String::as_str)).collect();
        format!("jumps_{}", &hex(&Sha256::digest(all.join("\n").as_bytes()))[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A server id as an nftables identifier: letters and digits kept, `_` doubled, `-` and `.`
/// escaped, so two ids never share a name.
fn ident(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 4);
    for c in id.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => out.push(c),
            '_' => out.push_str("__"),
            '-' => out.push_str("_d"),
            '.' => out.push_str("_p"),
            other => {
                let _ = write!(out, "_x{:x}", other as u32);
            }
        }
    }
    out
}

/// The chain-name prefix of server `id`.
pub fn chain_prefix(id: &str) -> String {
    format!("s_{}_h", ident(id))
}

fn proto(p: Protocol) -> &'static str {
    p.as_str()
}

fn set_list(items: &[&Cidr]) -> String {
    let parts: Vec<String> = items.iter().map(|c| c.to_string()).collect();
    format!("{{ {} }}", parts.join(", "))
}

fn server_chain(id: &str, ports: &[PortBinding], rules: &[Rule]) -> ServerChain {
    // The rules first, with set names relative to the chain (`@~c0_4`), then the digest of
    // that text names the chain, and the sets are named after it.
    let mut body: Vec<String> = Vec::new();
    let mut sets: Vec<(String, String)> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let m = format!("meta l4proto {} ct original proto-dst {}", proto(r.protocol), r.port);
        let parsed = |list: &[String]| -> Vec<Cidr> { list.iter().filter_map(|s| Cidr::parse(s)).collect() };
        let deny = parsed(&r.deny);
        let (d4, d6): (Vec<&Cidr>, Vec<&Cidr>) = deny.iter().partition(|c| c.is_v4());
        if !d4.is_empty() {
            body.push(format!("{m} ip saddr {} counter ~n{i} drop comment \"r{i} deny\"", set_list(&d4)));
        }
        if !d6.is_empty() {
            body.push(format!("{m} ip6 saddr {} counter ~n{i} drop comment \"r{i} deny\"", set_list(&d6)));
        }
        if let Some(allow) = &r.allow {
            let allow = parsed(allow);
            let (a4, a6): (Vec<&Cidr>, Vec<&Cidr>) = allow.iter().partition(|c| c.is_v4());
            for (family, addr, list) in [("ipv4", "ip", a4), ("ipv6", "ip6", a6)] {
                let only = match list.is_empty() {
                    true => String::new(),
                    false => format!(" {addr} saddr != {}", set_list(&list)),
                };
                body.push(format!("{m} meta nfproto {family}{only} counter ~n{i} drop comment \"r{i} allow\""));
            }
        }
        if let Some(n) = r.max_connections_per_ip {
            for (v, addr, ty) in [("4", "ip", "ipv4_addr"), ("6", "ip6", "ipv6_addr")] {
                let set = format!("c{i}_{v}");
                sets.push((set.clone(), format!("{{ type {ty}; size 65535; flags dynamic; }}")));
                body.push(format!(
                    "{m} ct state new add @~{set} {{ {addr} saddr ct count over {n} }} counter ~n{i} drop comment \"r{i} max_connections_per_ip\""
                ));
            }
        }
        if let Some(n) = r.new_connections_per_second {
            for (v, addr, ty) in [("4", "ip", "ipv4_addr"), ("6", "ip6", "ipv6_addr")] {
                let set = format!("r{i}_{v}");
                sets.push((set.clone(), format!("{{ type {ty}; size 65535; flags dynamic,timeout; timeout 60s; }}")));
                body.push(format!(
                    "{m} ct state new update @~{set} {{ {addr} saddr limit rate over {n}/second burst {n} packets }} counter ~n{i} drop comment \"r{i} new_connections_per_second\""
                ));
            }
        }
    }
    let digest = hex(&Sha256::digest(body.join("\n").as_bytes()));
    // The rule count ends the name: the chain's counters are known from its name alone.
    let name = format!("{}{}x{}", chain_prefix(id), &digest[..12], rules.len());
    let rules_text = body
        .into_iter()
        .map(|l| l.replace("@~", &format!("@{name}_")).replace("counter ~n", &format!("counter name {name}_n")))
        .collect();
    let counters = (0..rules.len()).map(|i| format!("{name}_n{i}")).collect();
    let sets = sets.into_iter().map(|(s, decl)| (format!("{name}_{s}"), decl)).collect();
    // One jump per published binding a rule is about (a port may be bound on several IPs).
    let mut jumps = Vec::new();
    let mut seen = BTreeSet::new();
    for b in ports.iter().filter(|b| rules.iter().any(|r| r.port == b.port && r.protocol == b.protocol)) {
        let daddr = match b.ip {
            ip if ip.is_unspecified() => String::new(),
            IpAddr::V4(ip) => format!(" ct original ip daddr {ip}"),
            IpAddr::V6(ip) => format!(" ct original ip6 daddr {ip}"),
        };
        // Only the client's direction: replies come from the server, never from a listed address.
        let jump = format!(
            "ct direction original meta l4proto {} ct original proto-dst {}{daddr} jump {name}",
            proto(b.protocol),
            b.port
        );
        if seen.insert(jump.clone()) {
            jumps.push(jump);
        }
    }
    ServerChain { id: id.to_string(), name, sets, counters, rules: rules_text, jumps, source: rules.to_vec() }
}

/// What the table holds now, by name (from `nft -j list chains` and `list -t sets`; a
/// server chain's counters follow from its name, see [`counters_of`]).
#[derive(Debug, Default, Clone)]
pub struct Current {
    pub chains: BTreeSet<String>,
    /// The marker of the jumps included.
    pub sets: BTreeSet<String>,
}

impl Current {
    /// Whether the table holds anything.
    pub fn exists(&self) -> bool {
        !(self.chains.is_empty() && self.sets.is_empty())
    }
}

/// The named counters of server chain `chain` (`..._h<digest>x<rules>`: one per rule).
pub fn counters_of(chain: &str) -> Vec<String> {
    let n = chain.rsplit_once('x').and_then(|(_, n)| n.parse::<usize>().ok()).unwrap_or(0);
    (0..n).map(|i| format!("{chain}_n{i}")).collect()
}

/// The script that takes the table from `current` (`None`: absent) to `plan`, as one
/// transaction; `None` when there is nothing to change.
pub fn script(table: &str, current: Option<&Current>, plan: &Plan) -> Option<String> {
    let t = format!("inet {table}");
    let empty = Current::default();
    let now = current.filter(|c| c.exists()).unwrap_or(&empty);
    if plan.chains.is_empty() {
        return now.exists().then(|| format!("delete table {t}\n"));
    }
    let marker = plan.marker();
    let wanted: BTreeSet<&str> = plan.chains.iter().map(|c| c.name.as_str()).collect();
    let stale: Vec<&String> = now
        .chains
        .iter()
        .filter(|c| c.as_str() != PUBLISHED && c.as_str() != PROXIED && !wanted.contains(c.as_str()))
        .collect();
    let new: Vec<&ServerChain> = plan.chains.iter().filter(|c| !now.chains.contains(&c.name)).collect();
    let mut wanted_sets: BTreeSet<&str> =
        plan.chains.iter().flat_map(|c| c.sets.iter().map(|s| s.0.as_str())).collect();
    wanted_sets.insert(&marker);
    let stale_sets: Vec<&String> = now.sets.iter().filter(|s| !wanted_sets.contains(s.as_str())).collect();
    let stale_counters: Vec<String> = stale.iter().flat_map(|c| counters_of(c)).collect();
    let base_ok = now.chains.contains(PUBLISHED) && now.chains.contains(PROXIED) && now.sets.contains(&marker);
    let tidy = stale.is_empty() && new.is_empty() && stale_sets.is_empty() && stale_counters.is_empty();
    if base_ok && tidy {
        return None;
    }
    let mut s = String::new();
    let _ = writeln!(s, "add table {t}");
    // The jumps are written again whenever anything changes: a chain's name is its content.
    for (chain, hook) in [(PUBLISHED, "forward"), (PROXIED, "input")] {
        let _ = writeln!(s, "add chain {t} {chain} {{ type filter hook {hook} priority filter - 10; policy accept; }}");
        let _ = writeln!(s, "flush chain {t} {chain}");
    }
    for c in &stale {
        let _ = writeln!(s, "flush chain {t} {c}");
        let _ = writeln!(s, "delete chain {t} {c}");
    }
    for set in &stale_sets {
        let _ = writeln!(s, "delete set {t} {set}");
    }
    for counter in &stale_counters {
        let _ = writeln!(s, "delete counter {t} {counter}");
    }
    if !now.sets.contains(&marker) {
        let _ = writeln!(s, "add set {t} {marker} {{ type ipv4_addr; }}");
    }
    for c in &new {
        let _ = writeln!(s, "add chain {t} {}", c.name);
        for (name, decl) in &c.sets {
            let _ = writeln!(s, "add set {t} {name} {decl}");
        }
        for counter in &c.counters {
            let _ = writeln!(s, "add counter {t} {counter}");
        }
        for r in &c.rules {
            let _ = writeln!(s, "add rule {t} {} {r}", c.name);
        }
    }
    // Loopback (the host's own clients) is never filtered by the input hook.
    let _ = writeln!(s, "add rule {t} {PROXIED} iif \"lo\" return");
    for c in &plan.chains {
        for j in &c.jumps {
            let _ = writeln!(s, "add rule {t} {PUBLISHED} {j}");
            let _ = writeln!(s, "add rule {t} {PROXIED} {j}");
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(port: u16) -> Rule {
        Rule {
            port,
            protocol: Protocol::Tcp,
            allow: Some(vec!["10.0.0.0/8".into(), "2001:db8::/32".into()]),
            deny: vec!["10.1.0.0/16".into()],
            max_connections_per_ip: Some(2),
            new_connections_per_second: Some(5),
        }
    }

    fn ports(port: u16) -> Vec<PortBinding> {
        vec![PortBinding { ip: "0.0.0.0".parse().unwrap(), port, protocol: Protocol::Tcp, container_port: None }]
    }

    #[test]
    fn ids_make_distinct_identifiers() {
        assert_ne!(ident("a-b"), ident("a_b"));
        assert_ne!(ident("a.b"), ident("a_b"));
        assert_ne!(ident("a_d"), ident("a-"));
        assert!(ident("A.b-c_9").bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }

    #[test]
    fn a_plan_applies_once_and_then_is_a_no_op() {
        let (p1, r1) = (ports(100), vec![rule(100)]);
        let plan = Plan::new([("srv-1", &p1[..], &r1[..])]);
        let s = script("t", None, &plan).unwrap();
        let chain = &plan.chains[0].name;
        assert!(chain.starts_with("s_srv_d1_h"), "{chain}");
        assert!(s.contains(&format!("add set inet t {chain}_c0_4 {{ type ipv4_addr;")), "{s}");
        assert!(
            s.contains(&format!("ip saddr {{ 10.1.0.0/16 }} counter name {chain}_n0 drop comment \"r0 deny\"")),
            "{s}"
        );
        assert!(s.contains("meta nfproto ipv4 ip saddr != { 10.0.0.0/8 } counter name"), "{s}");
        assert!(s.contains(&format!("add counter inet t {chain}_n0\n")), "{s}");
        assert!(s.contains(&format!("jump {chain}\n")), "{s}");
        assert!(s.contains(&format!("add set inet t {} ", plan.marker())), "{s}");
        let mut sets: BTreeSet<String> = plan.chains[0].sets.iter().map(|s| s.0.clone()).collect();
        sets.insert(plan.marker());
        let now = Current { chains: [PUBLISHED.to_string(), PROXIED.to_string(), chain.clone()].into(), sets };
        assert_eq!(counters_of(chain), plan.chains[0].counters, "its counters follow from its name");
        assert_eq!(script("t", Some(&now), &plan), None, "nothing to change");
        // Another rule set: a new chain, the old one and its sets go, in the same script.
        let r2 = [Rule { deny: vec![], ..rule(100) }];
        let next = Plan::new([("srv-1", &p1[..], &r2[..])]);
        let s = script("t", Some(&now), &next).unwrap();
        assert!(s.contains(&format!("delete chain inet t {chain}\n")), "{s}");
        assert!(s.contains(&format!("delete set inet t {chain}_c0_4\n")), "{s}");
        assert!(s.contains(&format!("delete counter inet t {chain}_n0\n")), "{s}");
        assert!(s.contains(&format!("delete set inet t {}\n", plan.marker())), "the old jumps' marker: {s}");
        assert!(s.contains(&format!("add chain inet t {}\n", next.chains[0].name)), "{s}");
        // No rules at all: the table goes.
        assert_eq!(script("t", Some(&now), &Plan::default()).as_deref(), Some("delete table inet t\n"));
        assert_eq!(script("t", None, &Plan::default()), None);
    }
}
