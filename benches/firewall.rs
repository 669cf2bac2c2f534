//! The firewall (issue 32), in one run: how long applying and removing one server's rule set
//! takes (the `PUT` and `DELETE` answered, the kernel's table changed) with 1 server and with
//! 100 servers holding rules, and a TCP stream from a test host (a network namespace on a veth
//! pair, so the traffic is forwarded as a remote client's) through a published port, with 100
//! servers' rules in the table against none, in alternating rounds.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use common::netns::Host;
use common::*;
use serde_json::{json, Value};
use support::*;

const SERVERS: usize = 100;
const CHANGES: usize = 40;
const ROUNDS: usize = 3;
const STREAM: Duration = Duration::from_secs(3);

/// A rule set of the size an operator might give: two lists of 16 networks (v4 and v6),
/// both limits.
fn rules(port: u64) -> Value {
    let deny: Vec<String> =
        (0..16).map(|i| format!("198.51.{i}.0/24")).chain((0..4).map(|i| format!("2001:db8:{i}::/48"))).collect();
    let allow: Vec<String> =
        (0..16).map(|i| format!("10.{}.0.0/16", 240 + i)).chain(["10.251.0.0/16".into(), "fd51::/16".into()]).collect();
    json!([{"port": port, "deny": deny, "allow": allow, "max_connections_per_ip": 10, "new_connections_per_second": 50}])
}

/// Seconds each of `CHANGES` PUTs and DELETEs of `id`'s rules took: (apply, remove).
fn changes(d: &Daemon, id: &str, port: u64) -> (Vec<f64>, Vec<f64>) {
    let (mut apply, mut remove) = (Vec::new(), Vec::new());
    let path = format!("/containers/{id}/firewall");
    for _ in 0..CHANGES {
        let t = Instant::now();
        let r = d.call("PUT", &path, Some(json!({ "rules": rules(port) })));
        apply.push(t.elapsed().as_secs_f64());
        assert_eq!(r.status, 200, "{}", r.body);
        let t = Instant::now();
        let r = d.call("DELETE", &path, None);
        remove.push(t.elapsed().as_secs_f64());
        assert_eq!(r.status, 200, "{}", r.body);
    }
    (sorted(apply), sorted(remove))
}

/// Bytes per second one connection from `host` pushes into the server at `port`.
fn stream(host: &Host, port: u16) -> f64 {
    let gw = host.gateway;
    let sock = wait_for(30, "the sink to listen", || host.connect(port, Duration::from_secs(2)).ok());
    let sent = host.within(move || {
        let mut s = sock;
        let buf = vec![0u8; 1 << 16];
        let (start, mut n) = (Instant::now(), 0u64);
        while start.elapsed() < STREAM {
            match s.write(&buf) {
                Ok(k) => n += k as u64,
                Err(e) => panic!("stream to {gw}:{port}: {e}"),
            }
        }
        n as f64 / start.elapsed().as_secs_f64()
    });
    // The sink (`nc -l`) ends with the connection and listens again.
    std::thread::sleep(Duration::from_millis(300));
    sent
}

fn ms(v: f64) -> String {
    format!("{:.1}", v * 1000.0)
}

fn main() {
    require_docker();
    let host = Host::new();
    let d = Daemon::start();
    // The server streamed to: a real one, `nc` to /dev/null, listening again after each.
    let p = port();
    d.add_port("0.0.0.0", p, "tcp");
    let sink = d.ready_container(
        "sink",
        "while true; do nc -l -p $SERVER_PORT > /dev/null; done",
        json!({"ports": [{"ip": "0.0.0.0", "port": p}]}),
    );
    assert_eq!(d.act(&sink, "start"), 202);
    d.wait_state(&sink, "running", 60);
    // 99 more servers with ports of their own (created, not started: rules need only ports).
    let (vol, _) = d.new_volume();
    let others: Vec<(String, u64)> = ports(SERVERS as u16 - 1)
        .into_iter()
        .enumerate()
        .map(|(i, q)| (d.id(&format!("fw{i}")), u64::from(q)))
        .collect();
    std::thread::scope(|s| {
        for chunk in others.chunks(10) {
            let (d, vol) = (&d, &vol);
            s.spawn(move || {
                for (id, q) in chunk {
                    d.add_port("0.0.0.0", *q as u16, "tcp");
                    let body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol, "startup_command": "true",
                                      "ports": [{"ip": "0.0.0.0", "port": q}]});
                    let r = d.call("POST", "/containers", Some(body));
                    assert_eq!(r.status, 202, "{}", r.body);
                }
            });
        }
    });
    for (id, _) in &others {
        d.wait_installed(id, 600);
    }
    let all_rules = |on: bool| {
        for (id, q) in others.iter().map(|(i, q)| (i.as_str(), *q)).chain([(sink.as_str(), u64::from(p))]) {
            let r = match on {
                true => d.call("PUT", &format!("/containers/{id}/firewall"), Some(json!({ "rules": rules(q) }))),
                false => d.call("DELETE", &format!("/containers/{id}/firewall"), None),
            };
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };

    println!("apply and remove at 1 server ...");
    let (apply1, remove1) = changes(&d, &sink, u64::from(p));
    println!("apply and remove at {SERVERS} servers ...");
    for (id, q) in &others {
        let r = d.call("PUT", &format!("/containers/{id}/firewall"), Some(json!({ "rules": rules(*q) })));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (apply100, remove100) = changes(&d, &sink, u64::from(p));

    println!("streams ...");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        all_rules(false);
        without.push(stream(&host, p));
        all_rules(true);
        with.push(stream(&host, p));
    }
    all_rules(false);
    let mbs = |v: &[f64]| format!("{:.0}", pct(&sorted(v.to_vec()), 50.0) / 1e6);
    let (w, wo) = (pct(&sorted(with.clone()), 50.0), pct(&sorted(without.clone()), 50.0));
    let body = format!(
        "One server's rule set (16 denied and 18 allowed networks, IPv4 and IPv6, both limits: 8 rules in its \
         chain, 4 sets) applied by `PUT /containers/:id/firewall` and removed by `DELETE`, {CHANGES} times each, \
         timed from the request to the answer (the `nft` transaction included); then one TCP connection from a \
         test host (a network namespace on a veth pair: forwarded like a remote client's) pushing into a server's \
         published port for {} s, with {SERVERS} servers' rule sets in the table (its own among them) and with no \
         table, {ROUNDS} alternating rounds each.\n\n\
         | servers with rules | apply p50 / p99 (ms) | remove p50 / p99 (ms) |\n|---|---|---|\n\
         | 1 | {} / {} | {} / {} |\n| {SERVERS} | {} / {} | {} / {} |\n\n\
         | stream through the published port | median MB/s | rounds (MB/s) |\n|---|---|---|\n\
         | no rules (no table) | {} | {:?} |\n| {SERVERS} servers' rules | {} | {:?} |\n\n\
         With the rules: {:.1}% of the stream without. This run: a {} build of the daemon (the daemon's share of \
         a change is small beside `nft`'s).\n",
        STREAM.as_secs(),
        ms(pct(&apply1, 50.0)),
        ms(pct(&apply1, 99.0)),
        ms(pct(&remove1, 50.0)),
        ms(pct(&remove1, 99.0)),
        ms(pct(&apply100, 50.0)),
        ms(pct(&apply100, 99.0)),
        ms(pct(&remove100, 50.0)),
        ms(pct(&remove100, 99.0)),
        mbs(&without),
        without.iter().map(|v| (v / 1e6).round() as u64).collect::<Vec<_>>(),
        mbs(&with),
        with.iter().map(|v| (v / 1e6).round() as u64).collect::<Vec<_>>(),
        w / wo * 100.0,
        if cfg!(debug_assertions) { "debug (`cargo bench --profile dev`)" } else { "release" },
    );
    println!("{body}");
    write_section("firewall", &body);
}
