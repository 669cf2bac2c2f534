//! What the firewall tests share: a server echoing on a published port, and the daemon's
//! nftables table read back.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::netns::Host;
use super::{port, wait_for, Daemon};

/// How long a test host waits for a connection that should get through (generous: it only
/// catches a hang) and for one the firewall should stop (the 2 s).
pub const THROUGH: Duration = Duration::from_secs(10);
pub const BLOCKED: Duration = Duration::from_secs(2);

/// A running server `name` echoing on a port of its own published on every address; returns
/// (id, port) once `probe` gets an echo from it.
pub fn echo_server(d: &Daemon, name: &str, probe: &Host) -> (String, u16) {
    let p = port();
    d.add_port("0.0.0.0", p, "tcp");
    let id = d.ready_container(name, ECHO, json!({"ports": [{"ip": "0.0.0.0", "port": p}]}));
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 60);
    wait_for(30, "the server to echo", || probe.echoes(p, Duration::from_secs(2)).then_some(()));
    (id, p)
}

/// `nc` serving every connection with `cat` (busybox: `-ll` keeps listening), on the
/// server's port (`$SERVER_PORT`, so it follows a rebind).
pub const ECHO: &str = "nc -ll -p $SERVER_PORT -e /bin/cat";

/// `PUT /containers/:id/firewall`, asserting the 200; the answer.
pub fn put_rules(d: &Daemon, id: &str, rules: Value) -> Value {
    let r = d.call("PUT", &format!("/containers/{id}/firewall"), Some(json!({ "rules": rules })));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// The daemon's table name (from `GET .../firewall`).
pub fn table(d: &Daemon, id: &str) -> String {
    let r = d.get(&format!("/containers/{id}/firewall"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["table"].as_str().expect("table").to_string()
}

/// `nft list table inet <table>`, `None` when there is no such table.
pub fn listing(table: &str) -> Option<String> {
    let out =
        Command::new("nft").args(["list", "table", "inet", table]).output().expect("nft (apt-get install nftables)");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The chains of the table (base chains included).
pub fn chains(table: &str) -> Vec<String> {
    listing(table)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain ")?.strip_suffix(" {").map(String::from))
        .collect()
}

/// How many jump rules the `published` base chain holds.
pub fn jumps(table: &str) -> usize {
    let text = listing(table).unwrap_or_default();
    let Some(published) = text.split("chain published {").nth(1) else { return 0 };
    published.split('}').next().unwrap_or("").lines().filter(|l| l.contains(" jump ")).count()
}

/// What rule `i` of `id` dropped, as `GET .../firewall` says.
pub fn dropped(d: &Daemon, id: &str, i: usize) -> u64 {
    let v = d.get(&format!("/containers/{id}/firewall")).json();
    v["rules"][i]["dropped_packets"].as_u64().unwrap_or_else(|| panic!("no counter for rule {i}: {v}"))
}
