//! The per-server firewall (issue 32) against the kernel: test hosts in network namespaces of
//! the test's own reach a real server through its published port, as remote clients do.

mod common;

use std::time::Duration;

use common::firewall::*;
use common::netns::Host;
use common::*;
use serde_json::json;

#[test]
fn without_rules_both_hosts_connect() {
    require_docker();
    let (a, b) = (Host::new(), Host::new());
    let d = Daemon::start();
    let (id, p) = echo_server(&d, "open", &a);
    assert!(a.echoes(p, THROUGH) && b.echoes(p, THROUGH));
    let v = d.get(&format!("/containers/{id}/firewall")).json();
    assert_eq!(v["rules"], json!([]), "{v}");
    assert_eq!(listing(v["table"].as_str().unwrap()), None, "no rules, no table");
}

#[test]
fn a_deny_blocks_its_host_and_not_the_other() {
    require_docker();
    let (a, b) = (Host::new(), Host::new());
    let d = Daemon::start();
    let (id, p) = echo_server(&d, "deny", &a);
    assert!(b.echoes(p, THROUGH), "positive control: both reach it before");
    let v = put_rules(&d, &id, json!([{"port": p, "deny": [a.addr.to_string()]}]));
    assert_eq!(v["rules"][0]["deny"], json!([format!("{}/32", a.addr)]), "{v}");
    assert!(!a.echoes(p, BLOCKED), "the denied host is stopped at once");
    assert!(b.echoes(p, THROUGH), "the other host still gets through");
    assert!(dropped(&d, &id, 0) > 0, "the rule counted what it dropped");
    let metric = format!("lightd_firewall_dropped_packets_total{{container=\"{id}\",rule=\"0\",port=\"{p}/tcp\"}}");
    wait_for(10, "the drop in /metrics", || d.metric(&metric).filter(|n| *n > 0));
    // The record holds the rules.
    assert_eq!(d.state()["containers"][&id]["firewall"][0]["port"], p);
}

#[test]
fn an_allow_list_admits_only_its_members() {
    require_docker();
    let (a, b) = (Host::new(), Host::new());
    let d = Daemon::start();
    let (id, p) = echo_server(&d, "allow", &b);
    put_rules(&d, &id, json!([{"port": p, "protocol": "tcp", "allow": [format!("{}/32", a.addr), "2001:db8::/32"]}]));
    assert!(a.echoes(p, THROUGH), "the member gets through");
    assert!(!b.echoes(p, BLOCKED), "a host outside the list does not");
    assert!(dropped(&d, &id, 0) > 0);
}

/// An IPv6 client: a server published on `::` is reached over IPv6 through Docker's userland
/// proxy (Docker 20.10 does not NAT IPv6 by default), which the table's input chain filters.
#[test]
fn an_ipv6_deny_blocks_its_host_and_not_the_other() {
    require_docker();
    let (a, b) = (Host::new(), Host::new());
    let d = Daemon::start();
    let p = port();
    d.add_port("::", p, "tcp");
    let id = d.ready_container("six", ECHO, json!({"ports": [{"ip": "::", "port": p}]}));
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 60);
    let (to_a, to_b) = (a.gateway6.into(), b.gateway6.into());
    wait_for(30, "the server to echo over IPv6", || b.echoes_at(to_b, p, Duration::from_secs(2)).then_some(()));
    assert!(a.echoes_at(to_a, p, THROUGH), "positive control: both reach it before");
    put_rules(&d, &id, json!([{"port": p, "deny": [format!("{}/128", a.addr6)]}]));
    assert!(!a.echoes_at(to_a, p, BLOCKED), "the denied IPv6 host is stopped");
    assert!(b.echoes_at(to_b, p, THROUGH), "the other IPv6 host still gets through");
    assert!(dropped(&d, &id, 0) > 0);
}

#[test]
fn max_connections_per_ip_refuses_a_third() {
    require_docker();
    let (a, b) = (Host::new(), Host::new());
    let d = Daemon::start();
    let (id, p) = echo_server(&d, "conns", &a);
    put_rules(&d, &id, json!([{"port": p, "max_connections_per_ip": 2}]));
    let first = a.connect(p, THROUGH).expect("first connection");
    let _second = a.connect(p, THROUGH).expect("second connection");
    assert!(a.connect(p, BLOCKED).is_err(), "a third concurrent connection from one host is refused");
    assert!(b.echoes(p, THROUGH), "another host is counted apart");
    assert!(dropped(&d, &id, 0) > 0);
    drop(first);
    wait_for(20, "a connection again once one closed", || a.connect(p, BLOCKED).ok());
}

#[test]
fn new_connections_per_second_holds_a_flood_from_one_host() {
    require_docker();
    let (a, b) = (Host::new(), Host::new());
    let d = Daemon::start();
    let (id, p) = echo_server(&d, "flood", &b);
    put_rules(&d, &id, json!([{"port": p, "new_connections_per_second": 2}]));
    // 60 attempts as fast as one host makes them; each waits 250 ms (a dropped SYN is not
    // sent again that soon), so a refused attempt is one dropped packet.
    let attempts = 60;
    let gw = a.gateway;
    let through = a.within(move || {
        (0..attempts)
            .filter(|_| std::net::TcpStream::connect_timeout(&(gw, p).into(), Duration::from_millis(250)).is_ok())
            .count()
    });
    let refused = (attempts - through) as u64;
    assert!(refused > 0 && through >= 1, "{through} of {attempts} got through");
    // Each attempt the rule stopped is one dropped SYN; an attempt may also fail on nc's
    // short listen queue, never the other way round (a rule that counts without dropping
    // counts attempts that got through).
    let stopped = dropped(&d, &id, 0);
    assert!(stopped > 0 && stopped <= refused, "the rule dropped {stopped}; {refused} attempts were refused");
    assert!(b.echoes(p, THROUGH), "another host still connects during the flood");
}

#[test]
fn rules_hold_across_restart_rebind_and_daemon_kill() {
    require_docker();
    let (a, b) = (Host::new(), Host::new());
    let mut d = Daemon::start();
    let (id, p) = echo_server(&d, "hold", &b);
    put_rules(&d, &id, json!([{"port": p, "deny": [a.addr.to_string()]}]));
    let t = table(&d, &id);
    let held = |p: u16, when: &str| {
        wait_for(30, &format!("the server to echo after {when}"), || b.echoes(p, Duration::from_secs(2)).then_some(()));
        assert!(!a.echoes(p, BLOCKED), "the deny holds after {when}");
    };
    held(p, "the PUT");

    assert_eq!(d.act(&id, "restart"), 202);
    d.wait_state(&id, "running", 60);
    held(p, "a server restart");

    let q = port();
    d.add_port("0.0.0.0", q, "tcp");
    let r = d.call(
        "POST",
        &format!("/containers/{id}/rebind-network"),
        Some(json!({"ports": [{"ip": "0.0.0.0", "port": q}]})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for(60, "the rebind", || (d.record(&id)["ports"][0]["port"] == q).then_some(()));
    d.wait_state(&id, "running", 60);
    let v = d.get(&format!("/containers/{id}/firewall")).json();
    assert_eq!(v["rules"][0]["port"], q, "the rule moved with its port: {v}");
    held(q, "a rebind");
    assert_eq!((chains(&t).len(), jumps(&t)), (3, 1), "one server chain, one jump:\n{:?}", listing(&t));

    let before = listing(&t);
    d.kill9();
    d.spawn();
    held(q, "a daemon kill -9");
    let after = listing(&t);
    let strip = |s: Option<String>| {
        s.unwrap_or_default().lines().filter(|l| !l.contains("packets")).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(strip(after), strip(before), "the restarted daemon kept the table as it was (no duplicate)");
}

#[test]
fn clearing_or_deleting_leaves_no_rule_behind() {
    require_docker();
    let a = Host::new();
    let d = Daemon::start();
    let (one, p1) = echo_server(&d, "one", &a);
    let (two, p2) = echo_server(&d, "two", &a);
    let t = table(&d, &one);
    let ruleset = || {
        String::from_utf8_lossy(&std::process::Command::new("nft").args(["list", "ruleset"]).output().unwrap().stdout)
            .into_owned()
    };
    assert!(!ruleset().contains(&t), "no table of ours before");
    put_rules(&d, &one, json!([{"port": p1, "deny": ["192.0.2.0/24"], "max_connections_per_ip": 5}]));
    let one_chain = chains(&t).into_iter().find(|c| c.starts_with("s_")).expect("a chain for the server");
    assert!(listing(&t).unwrap().contains(&format!("set {one_chain}_c0_4")), "{:?}", listing(&t));
    put_rules(&d, &two, json!([{"port": p2, "new_connections_per_second": 100}]));
    let both = chains(&t);
    assert_eq!(both.len(), 4, "{both:?}");
    let two_chain = both.iter().find(|c| c.starts_with("s_") && **c != one_chain).expect("its own chain").clone();

    // Clearing one server's rules leaves the other's chain as it was.
    let r = d.call("DELETE", &format!("/containers/{one}/firewall"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let left = chains(&t);
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&two_chain), "the other server's chain untouched: {left:?}");
    assert!(!listing(&t).unwrap().contains(&one_chain), "the cleared server's chain and sets went");
    assert_eq!(d.get(&format!("/containers/{one}/firewall")).json()["rules"], json!([]));
    assert_eq!(d.state()["containers"][&one].get("firewall"), None);

    // Deleting the last server with rules removes the whole table.
    assert_eq!(d.call("DELETE", &format!("/containers/{two}"), None).status, 200);
    wait_for(30, "the table to go", || listing(&t).is_none().then_some(()));
    assert!(!ruleset().contains(&t), "nothing of ours left in the ruleset");
    assert!(a.echoes(p1, THROUGH), "the cleared server is open again");
}

#[test]
fn a_bad_cidr_or_a_foreign_port_is_a_400_naming_it() {
    require_docker();
    let a = Host::new();
    let d = Daemon::start();
    let (id, p) = echo_server(&d, "bad", &a);
    let (_other, foreign) = echo_server(&d, "other", &a);
    let path = format!("/containers/{id}/firewall");
    let state_before = d.state()["containers"][&id].clone();
    for (rules, named) in [
        (json!([{"port": p, "deny": ["10.0.0.0/33"]}]), "10.0.0.0/33".to_string()),
        (json!([{"port": p, "allow": ["198.51.100.7", "not-an-ip"]}]), "not-an-ip".to_string()),
        (json!([{"port": foreign, "deny": ["10.0.0.0/8"]}]), format!("{foreign}/tcp")),
        (json!([{"port": p, "protocol": "udp"}]), format!("{p}/udp")),
    ] {
        let r = d.call("PUT", &path, Some(json!({ "rules": rules })));
        assert_eq!(r.status, 400, "{rules}: {}", r.body);
        assert!(r.error().contains(&named), "{rules}: {}", r.error());
    }
    assert_eq!(d.state()["containers"][&id], state_before, "the record is as it was");
    let t = table(&d, &id);
    assert_eq!(listing(&t), None, "nothing applied");
    // Positive control: the same server takes a valid rule set.
    put_rules(&d, &id, json!([{"port": p, "deny": ["192.0.2.0/24"]}]));
    assert!(listing(&t).is_some());
    assert!(a.echoes(p, THROUGH));
    assert_eq!(d.call("PUT", "/containers/nobody/firewall", Some(json!({"rules": []}))).status, 404);
}
