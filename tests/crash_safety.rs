//! `kill -9` in the middle of concurrent writes leaves a valid state.json that holds every
//! acknowledged write.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// What became of one write.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// Answered with this status.
    Answered(u16),
    /// Sent in full, then the connection ended without an answer: the kill caught it.
    Unanswered,
    /// Never reached the daemon (refused, or cut before it was sent in full).
    NotSent,
}

/// Sends one write (counting it in `sent` once it is out, or failed) and reads its answer.
fn add_port(port: u16, ip_port: u16, sent: &AtomicUsize) -> Outcome {
    let body = json!({"ip": "127.0.0.1", "port": ip_port}).to_string();
    let req = format!(
        "POST /network/ports HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let stream = TcpStream::connect(("127.0.0.1", port));
    let sent_ok = stream.as_ref().ok().is_some_and(|mut s| s.write_all(req.as_bytes()).is_ok());
    sent.fetch_add(1, Ordering::SeqCst);
    let (Ok(mut s), true) = (stream, sent_ok) else { return Outcome::NotSent };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = Vec::new();
    let read = s.read_to_end(&mut buf);
    if let Err(e) = &read {
        assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "port {ip_port}: no answer within 60 s and the connection still open"
        );
    }
    match parse_response(&buf) {
        Ok(r) => Outcome::Answered(r.status),
        Err(_) => Outcome::Unanswered,
    }
}

/// One run: 200 writes let go at once, `kill -9` `delay` later.
/// Checks the state on disk against what was acknowledged; returns (acknowledged, unanswered).
fn run(delay: Duration) -> (usize, usize) {
    let mut d = Daemon::start();
    let port = d.port;
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let go = Arc::new(Barrier::new(201));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for i in 0..200u16 {
        let (outcomes, go, sent) = (Arc::clone(&outcomes), Arc::clone(&go), Arc::clone(&sent));
        threads.push(std::thread::spawn(move || {
            go.wait();
            let o = add_port(port, 20000 + i, &sent);
            outcomes.lock().unwrap().push((20000 + i, o));
        }));
    }
    go.wait();
    std::thread::sleep(delay);
    d.kill9();
    for t in threads {
        t.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let acked: Vec<u16> = outcomes.iter().filter(|(_, o)| *o == Outcome::Answered(201)).map(|(p, _)| *p).collect();
    let unanswered = outcomes.iter().filter(|(_, o)| *o == Outcome::Unanswered).count();
    let others: Vec<_> = outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Answered(s) if *s != 201)).collect();
    assert!(others.is_empty(), "every answer is 201: {others:?}");

    // state.json is valid and holds every acknowledged write, and nothing never asked for.
    let state = d.state();
    let stored: Vec<u64> = state["ports"].as_array().unwrap().iter().map(|p| p["port"].as_u64().unwrap()).collect();
    for p in &acked {
        assert!(stored.contains(&u64::from(*p)), "acknowledged port {p} lost");
    }
    for p in &stored {
        assert!((20000..20200).contains(p), "port {p} was never asked for");
    }
    // The daemon loads that state after the kill, and leaves no stray temp file behind: the
    // kill may or may not have caught one mid-write, so one is planted too (temp files are
    // `state.json.tmp-<hex>`), and every sibling of that form must be gone after the start.
    let temps = |d: &Daemon| -> Vec<String> {
        std::fs::read_dir(&d.dir.0)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("state.json.tmp"))
            .collect()
    };
    std::fs::write(d.dir.0.join("state.json.tmp-00112233deadbeef"), b"{\"half\": ").unwrap();
    let left = temps(&d);
    d.spawn();
    assert_eq!(temps(&d), Vec::<String>::new(), "temp files left by the kill ({left:?}) are removed at start");
    let listed = d.get("/network/ports").json()["ports"].as_array().unwrap().len();
    assert_eq!(listed, stored.len());
    d.stop();
    eprintln!(
        "kill {delay:?} after the start: {} acknowledged, {unanswered} unanswered, {} not sent, {} on disk",
        acked.len(),
        outcomes.iter().filter(|(_, o)| *o == Outcome::NotSent).count(),
        stored.len()
    );
    (acked.len(), unanswered)
}

#[test]
fn kill9_during_200_concurrent_writes() {
    // A run proves something only when the kill caught writes in flight (sent, never
    // answered: at least ENOUGH) while others had been acknowledged (at least ENOUGH). Too
    // early: the next kill comes later; too late: sooner, halfway between.
    const ENOUGH: usize = 10;
    let (mut early, mut late) = (Duration::ZERO, None::<Duration>);
    let mut delay = Duration::ZERO;
    for attempt in 0..12 {
        let (acked, unanswered) = run(delay);
        if acked >= ENOUGH && unanswered >= ENOUGH {
            return;
        }
        if acked < ENOUGH {
            eprintln!("attempt {attempt}: killed before {ENOUGH} writes were acknowledged; trying later");
            early = delay;
        } else {
            eprintln!("attempt {attempt}: fewer than {ENOUGH} writes in flight at the kill; trying sooner");
            late = Some(delay);
        }
        delay = match late {
            Some(late) => (early + late) / 2,
            None => early * 2 + Duration::from_millis(1),
        };
    }
    panic!("in 12 runs the kill never caught {ENOUGH} writes in flight after {ENOUGH} were acknowledged");
}

#[test]
fn corrupt_state_file_is_a_clear_startup_error() {
    let dir = TempDir::new("corrupt");
    let cfg = dir.0.join("config.json");
    std::fs::write(&cfg, config_for(&dir.0).to_string()).unwrap();
    std::fs::write(dir.0.join("state.json"), b"{\"volumes\": {").unwrap();
    let mut child = std::process::Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lightd did not refuse the corrupt state file within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(1), "a clean error exit, not a crash: {err}");
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(std::fs::read(dir.0.join("state.json")).unwrap(), b"{\"volumes\": {", "never replaced");
}
