//! The firewall's rules hold across a Docker engine restart: the engine rewrites its own
//! chains when it starts, lightd's table is its own and stays, and the server started again
//! is filtered as before.
//! Alone in its file: it stops the engine, so nothing else may run beside it (run it under
//! `flock -x /work/engine.lock` beside others' tests).

mod common;

use common::firewall::*;
use common::netns::Host;
use common::*;
use serde_json::json;

#[test]
fn rules_hold_across_an_engine_restart() {
    require_docker();
    let (a, b) = (Host::new(), Host::new());
    let d = Daemon::start();
    let (id, p) = echo_server(&d, "engine", &b);
    put_rules(&d, &id, json!([{"port": p, "deny": [a.addr.to_string()]}]));
    assert!(!a.echoes(p, BLOCKED), "the deny holds before");
    let t = table(&d, &id);
    let before = listing(&t).expect("the table");

    let mut engine = engine::Engine::stop();
    engine.start();
    drop(engine);
    assert!(engine::up(), "the engine is running again");
    // The engine stopped the server with itself; it is started again by hand.
    wait_for(60, "the daemon to see the engine", || (d.get(&format!("/containers/{id}")).status == 200).then_some(()));
    wait_for(90, "the server started again", || {
        let _ = d.act(&id, "start");
        (d.record(&id)["state"] == "running").then_some(())
    });
    wait_for(30, "the other host to reach it again", || b.echoes(p, std::time::Duration::from_secs(2)).then_some(()));
    assert!(!a.echoes(p, BLOCKED), "the deny holds after the engine restart");
    let strip = |s: &str| s.lines().filter(|l| !l.contains("packets")).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&listing(&t).expect("the table")), strip(&before), "the table is as it was");
}
