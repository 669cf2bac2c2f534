//! The console hub: one attach stream whatever the viewers, stats only while watched, and
//! every session gets the tail then every live line exactly once, in order.

mod common;

use common::*;
use serde_json::json;

fn running(d: &Daemon, name: &str, command: &str) -> String {
    let id = d.ready_container(name, command, json!({}));
    assert_eq!(d.act(&id, "start"), 202);
    id
}

const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo \"line $i\"; sleep 0.02; done";

/// 150 numbered lines, then one more numbered line for each line read from stdin.
const QUIET: &str = "i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo \"line $i\"; done; \
                     while read x; do i=$((i+1)); echo \"line $i\"; done";

fn number(line: &str) -> u64 {
    line.strip_prefix("line ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected line {line:?}"))
}

/// Checks that `line` follows line `prev` of a session: the next number, a
/// `[lightd] N lines skipped` note (the N lines are then counted as seen), another
/// `[lightd] ` note (status, deletion), or the shell's `Terminated`. Returns the new position.
fn follow(who: &str, prev: u64, line: &str) -> u64 {
    if line == "Terminated" {
        return prev; // the server's shell reporting the command the stop signal ended
    }
    if let Some(note) = line.strip_prefix("[lightd] ") {
        return match note.strip_suffix(" lines skipped") {
            Some(n) => prev + n.parse::<u64>().unwrap_or_else(|_| panic!("{who}: {line:?}")),
            None => prev,
        };
    }
    let n = number(line);
    assert_eq!(n, prev + 1, "{who}: after line {prev} came line {n}");
    n
}

/// The number of the newest line in the console of `id` (from a thread without the daemon).
fn newest(port: u16, id: &str) -> u64 {
    let req = format!(
        "GET /containers/{id}/logs?tail=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let r = raw(port, req.as_bytes()).unwrap();
    number(r.json()["lines"][0].as_str().unwrap())
}

fn logs(d: &Daemon, id: &str, tail: &str) -> Vec<String> {
    let r = d.get(&format!("/containers/{id}/logs{tail}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect()
}

#[test]
fn fifty_sessions_share_one_attach_stream() {
    require_docker();
    let d = Daemon::start();
    let id = running(&d, "fan", COUNTER);
    let viewers = || d.metric(&format!("lightd_viewers{{container=\"{id}\",kind=\"attach\"}}"));
    wait_for(10, "lines", || (logs(&d, &id, "").len() > 5).then_some(()));
    assert_eq!(d.streams(&id, "attach"), 1);
    wait_for(10, "no stats stream without viewers", || (d.streams(&id, "stats") == 0).then_some(()));

    let mut sessions: Vec<AttachSession> = (0..50).map(|_| AttachSession::open(d.port, &id)).collect();
    let mut at: Vec<u64> = sessions.iter_mut().map(|s| number(&s.text())).collect();
    assert_eq!(viewers(), Some(50));
    assert_eq!(d.streams(&id, "attach"), 1);
    assert!(d.streams(&id, "stats") <= 1);
    wait_for(10, "the stats stream opens for viewers", || (d.streams(&id, "stats") == 1).then_some(()));

    let r = d.call("POST", &format!("/containers/{id}/detach"), None);
    assert_eq!(r.json(), json!({"message": "Detached", "sessions": 50}));
    // The newest line once detach has answered: a session still fed live lines would soon go
    // past it (the counter prints 50 a second), so a detach that leaves sessions open fails
    // here at once instead of draining forever.
    let last = number(&logs(&d, &id, "?tail=1")[0]);
    for (i, s) in sessions.iter_mut().enumerate() {
        // Whatever was in flight drains, still in order, then the stream ends.
        while let Line::Text(t) = s.next_line() {
            at[i] = follow(&format!("session {i}"), at[i], &t);
            assert!(at[i] <= last + 25, "session {i} got line {} after the detach (line {last}) ended it", at[i]);
        }
    }
    wait_for(10, "viewers gone", || (viewers() == Some(0)).then_some(()));
    wait_for(10, "the stats stream closes with the last viewer", || (d.streams(&id, "stats") == 0).then_some(()));
    assert_eq!(d.streams(&id, "attach"), 1);
    assert_eq!(d.metric("lightd_docker_streams{kind=\"events\",container=\"\"}"), Some(1));
}

#[test]
fn every_session_gets_tail_then_each_live_line_once_in_order() {
    require_docker();
    let d = Daemon::start();
    let id = running(&d, "order", COUNTER);
    // More lines than a tail holds (console.tail_lines, 100), so every tail is a full one.
    wait_for(30, "more than a tail of lines", || (logs(&d, &id, "?tail=1000").len() > 150).then_some(()));
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let (port, id) = (d.port, id.clone());
            std::thread::spawn(move || {
                // Sessions join while the counter runs, each at its own moment.
                std::thread::sleep(std::time::Duration::from_millis(i * 150));
                let before = newest(port, &id);
                let mut s = AttachSession::open(port, &id);
                let first = number(&s.text());
                let after = newest(port, &id);
                let mut prev = first;
                for _ in 0..150 {
                    let n = number(&s.text());
                    assert_eq!(n, prev + 1, "session {i}: after line {prev} came line {n}");
                    prev = n;
                }
                (before, first, after)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        // The session began with the tail: the 100 lines up to the newest one when it joined
        // (somewhere between the newest line before it connected and after its tail came).
        let (before, first, after) = h.join().unwrap();
        assert!(
            (before..=after).contains(&(first + 99)),
            "session {i}: tail from line {first}, newest {before}..{after}"
        );
    }
    // Deleting the container ends the session.
    let mut s = AttachSession::open(d.port, &id);
    let mut prev = number(&s.text());
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).status, 200);
    loop {
        match s.next_line() {
            Line::End => break,
            Line::Text(t) => prev = follow("deleted", prev, &t),
        }
    }
}

#[test]
fn attach_starts_with_exactly_the_tail() {
    require_docker();
    let d = Daemon::start();
    let id = running(&d, "tail", QUIET);
    wait_for(20, "150 lines", || (logs(&d, &id, "?tail=1") == ["line 150"]).then_some(()));
    let want = |from: u64, to: u64| (from..=to).map(|n| format!("line {n}")).collect::<Vec<_>>();
    assert_eq!(logs(&d, &id, "?tail=50"), want(101, 150));
    // A fresh session gets the newest console.tail_lines (100) lines, numbered, in order...
    let mut s = AttachSession::open(d.port, &id);
    for line in want(51, 150) {
        assert_eq!(s.text(), line, "the tail is lines 51 to 150");
    }
    // ...and nothing else before the next live line: the tail was all of it.
    assert_eq!(d.call("POST", &format!("/containers/{id}/command"), Some(json!({"command": "go"}))).status, 202);
    assert_eq!(s.text(), "line 151");
    assert!(s.lines.is_empty(), "nothing after line 151: {:?}", s.lines);
    // Every session gets the same tail, now ending one later.
    let mut s2 = AttachSession::open(d.port, &id);
    for line in want(52, 151) {
        assert_eq!(s2.text(), line, "the tail is lines 52 to 151");
    }
    assert_eq!(d.call("POST", &format!("/containers/{id}/command"), Some(json!({"command": "go"}))).status, 202);
    assert_eq!(s.text(), "line 152");
    assert_eq!(s2.text(), "line 152");
}

/// The engine reports an exit before the attach stream has delivered what the server printed
/// just before it: a server is recorded offline only once that output is in its log.
#[test]
fn the_last_lines_are_in_the_log_once_the_server_is_offline() {
    require_docker();
    let d = Daemon::start();
    for round in 0..3 {
        let id = d.ready_container(&format!("last{round}"), "seq 1 50000", json!({"crash_restart": false}));
        assert_eq!(d.act(&id, "start"), 202);
        wait_for(60, "the exit recorded", || {
            Some(d.record(&id)).filter(|r| r["state"] == "offline" && r["last_exit"].is_object())
        });
        let lines = d.get(&format!("/containers/{id}/logs?tail=1")).json()["lines"].clone();
        assert_eq!(lines, json!(["50000"]), "round {round}: the log's last line when the record said offline");
    }
}
