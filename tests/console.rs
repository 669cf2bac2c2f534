//! The console hub: one attach stream whatever the viewers, stats only while watched, and
//! every session gets the tail then every live line exactly once, in order.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn running(d: &Daemon, name: &str, command: &str) -> String {
    let id = d.ready_container(name, command, json!({}));
    assert_eq!(d.call("POST", &format!("/containers/{id}/start"), None).status, 202);
    id
}

const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.02; done";

fn number(line: &str) -> u64 {
    line.strip_prefix("line ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected line {line:?}"))
}

#[test]
fn fifty_sessions_share_one_attach_stream() {
    require_docker();
    let d = Daemon::start();
    let id = running(&d, "fan", COUNTER);
    let streams = |kind: &str| {
        metric(&d.get("/metrics").body, &format!("lightd_docker_streams{{kind=\"{kind}\",container=\"{id}\"}}"))
            .unwrap()
    };
    wait_for(10, "lines", || {
        (d.get(&format!("/containers/{id}/logs")).json()["lines"].as_array()?.len() > 5).then_some(())
    });
    assert_eq!(streams("attach"), 1);
    wait_for(10, "no stats stream without viewers", || (streams("stats") == 0).then_some(()));

    let mut sessions: Vec<AttachSession> = (0..50).map(|_| AttachSession::open(d.port, &id)).collect();
    for s in &mut sessions {
        assert!(s.next_line().is_some());
    }
    let m = d.get("/metrics").body;
    assert_eq!(metric(&m, &format!("lightd_viewers{{container=\"{id}\",kind=\"attach\"}}")), Some(50));
    assert_eq!(streams("attach"), 1);
    assert!(streams("stats") <= 1);
    wait_for(10, "the stats stream opens for viewers", || (streams("stats") == 1).then_some(()));

    let r = d.call("POST", &format!("/containers/{id}/detach"), None);
    assert_eq!(r.json(), json!({"message": "Detached", "sessions": 50}));
    for s in &mut sessions {
        // Whatever was in flight drains, then the stream ends.
        while s.next_line().is_some() {}
    }
    wait_for(10, "viewers gone", || {
        let m = d.get("/metrics").body;
        (metric(&m, &format!("lightd_viewers{{container=\"{id}\",kind=\"attach\"}}")) == Some(0)).then_some(())
    });
    wait_for(10, "the stats stream closes with the last viewer", || (streams("stats") == 0).then_some(()));
    assert_eq!(streams("attach"), 1);
    assert_eq!(metric(&d.get("/metrics").body, "lightd_docker_streams{kind=\"events\",container=\"\"}"), Some(1));
}

#[test]
fn every_session_gets_tail_then_each_live_line_once_in_order() {
    require_docker();
    let d = Daemon::start();
    let id = running(&d, "order", COUNTER);
    wait_for(10, "some lines", || {
        (d.get(&format!("/containers/{id}/logs")).json()["lines"].as_array()?.len() > 20).then_some(())
    });
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let (port, id) = (d.port, id.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 150));
                let mut s = AttachSession::open(port, &id);
                let first = number(&s.next_line().unwrap());
                let mut prev = first;
                for _ in 0..150 {
                    let n = number(&s.next_line().expect("stream goes on"));
                    assert_eq!(n, prev + 1, "session {i}: after line {prev} came line {n}");
                    prev = n;
                }
                (first, prev)
            })
        })
        .collect();
    for h in handles {
        let (first, last) = h.join().unwrap();
        assert!(first >= 1 && last == first + 150);
    }
    // The tail: a fresh session starts with the newest tail_lines (100) lines.
    let head = d.get(&format!("/containers/{id}/logs?tail=1")).json()["lines"][0].as_str().map(number).unwrap();
    let mut s = AttachSession::open(d.port, &id);
    let first = number(&s.next_line().unwrap());
    // It reaches back before what `logs` showed a moment ago, and at most 100 lines back.
    assert!(first + 100 >= head && first <= head, "tail starts 100 back: first {first}, head {head}");
    let logs = d.get(&format!("/containers/{id}/logs?tail=50")).json()["lines"].as_array().unwrap().len();
    assert_eq!(logs, 50);
    // Deleting the container ends the session.
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).status, 200);
    while s.next_line().is_some() {}
}
