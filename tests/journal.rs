//! The console journal against the real daemon and engine: a server's console outlives the
//! server, a daemon kill -9, a reinstall; pages back without gaps or repeats; a journal past
//! its size drops whole old segments; crashes are recorded with their last lines.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Prints `line 1` .. `line N`, then waits to be killed.
fn numbered(n: u32) -> String {
    format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo \"line $i\"; done; sleep 100000")
}

/// Prints `line 1` .. `line N` in bursts of `burst` lines, 50 ms apart (faster than the
/// journal's one-second round empties a 1000-line ring), then waits to be killed.
fn bursts(n: u32, burst: u32, suffix: &str) -> String {
    format!(
        "i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo \"line $i{suffix}\"; \
         [ $((i % {burst})) -eq 0 ] && sleep 0.05; done; sleep 100000"
    )
}

/// Compares line lists without printing thousands of them.
fn same(got: &[String], want: &[String], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {} lines, {} wanted; first difference at {at}: {:?} vs {:?}",
            got.len(),
            want.len(),
            got.get(at),
            want.get(at)
        );
    }
}

fn journal_dir(d: &Daemon, id: &str) -> PathBuf {
    d.dir.0.join("journal").join(id).join("console")
}

/// The segment files' text, oldest first. While the server prints, the oldest segment may
/// be dropped between the listing and its reading: it is left out, as it is from the journal.
fn on_disk(d: &Daemon, id: &str) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(journal_dir(d, id))
        .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|p| match std::fs::read_to_string(p) {
            Ok(text) => Some((p.file_name().unwrap().to_string_lossy().into_owned(), text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{}: {e}", p.display()),
        })
        .collect()
}

/// Waits until the journal on disk holds `text` as a whole line.
fn wait_journaled(d: &Daemon, id: &str, text: &str) {
    let want = format!(" {}\n", json!(text));
    wait_for(30, &format!("{text:?} in the journal"), || {
        on_disk(d, id).iter().any(|(_, body)| body.contains(&want)).then_some(())
    });
}

fn logs(d: &Daemon, id: &str, query: &str) -> Value {
    let r = d.get(&format!("/containers/{id}/logs?{query}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn texts(v: &Value) -> Vec<String> {
    v["lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect()
}

fn range(from: u32, to: u32) -> Vec<String> {
    (from..=to).map(|i| format!("line {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_outlives_the_server_a_kill_9_and_a_reinstall() {
    require_docker();
    let mut d = Daemon::start_with(|c| {
        c["console"] = json!({"ring_lines": 1000, "tail_lines": 1000});
    });
    let install = json!({"install_script": "#!/bin/sh\necho install says hi"});
    let id = d.ready_container("jr", &bursts(5000, 100, ""), install);
    assert_eq!(d.act(&id, "start"), 202);
    wait_journaled(&d, &id, "line 5000");
    assert_eq!(d.act(&id, "kill"), 202);
    d.wait_state(&id, "offline", 30);
    d.kill9();
    d.spawn();
    // The ring is empty after the restart: everything comes from the journal.
    let v = logs(&d, &id, "tail=1000");
    same(&texts(&v), &range(4001, 5000), "tail=1000 after a kill -9");
    let (first, last) = (v["first"].as_u64().unwrap(), v["last"].as_u64().unwrap());
    assert_eq!(last - first, 999);
    // The install's output was journaled too, on its own.
    let install = texts(&logs(&d, &id, "source=install&tail=100"));
    assert!(install.iter().any(|l| l == "install says hi"), "{install:?}");
    assert!(!texts(&logs(&d, &id, "tail=10000")).iter().any(|l| l == "install says hi"));
    // A viewer's tail on connect is the same lines.
    let mut ws = ws::open(&d, &id).await;
    let tail = ws::next_event(&mut ws, "logs").await;
    let args: Vec<String> = serde_json::from_value(tail["args"].clone()).unwrap();
    same(&args, &range(4001, 5000), "a viewer's tail on connect");
    drop(ws);
    // Paging back with `before` covers every line once, in order.
    let mut seen = Vec::new();
    let mut before = u64::MAX;
    loop {
        let q = if before == u64::MAX { "tail=777".to_string() } else { format!("tail=777&before={before}") };
        let page = logs(&d, &id, &q);
        let lines = texts(&page);
        if lines.is_empty() {
            assert_eq!(page["first"], Value::Null);
            break;
        }
        before = page["first"].as_u64().unwrap();
        seen.splice(0..0, lines);
    }
    let printed: Vec<String> = seen.iter().filter(|l| l.starts_with("line ")).cloned().collect();
    same(&printed, &range(1, 5000), "every line paged back once, in order");
    // A reinstall recreates the container: the old lines stay, the new run's come after them.
    let r = d.call("POST", &format!("/containers/{id}/reinstall"), Some(json!({})));
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for(120, "the reinstall", || (d.record(&id)["install_state"] == "ready").then_some(()));
    let rec = d.call("GET", &format!("/containers/{id}"), None).json();
    assert_eq!(rec["state"], "offline", "{rec}");
    assert_eq!(d.act(&id, "start"), 202);
    wait_for(30, "the new run's lines", || {
        let v = logs(&d, &id, "tail=10000");
        let t = texts(&v);
        (t.iter().filter(|l| *l == "line 5000").count() == 2).then_some(())
    });
    let v = logs(&d, &id, "tail=10000");
    let t = texts(&v);
    let old_end = t.iter().position(|l| l == "line 5000").unwrap();
    same(&t[old_end + 1..], &range(1, 5000), "the new run follows the old one");
    assert_eq!(t[..=old_end].iter().filter(|l| l.starts_with("line ")).count(), 5000);
    // `tail` is bounded; a bad `before` or `source` is a clear 400.
    for q in ["tail=10001", "before=0", "before=x", "source=disk"] {
        let r = d.get(&format!("/containers/{id}/logs?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
    }
    // Deleting the server removes its journal.
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).status, 200);
    assert!(!d.dir.0.join("journal").join(&id).exists(), "the journal went with its server");
}

#[test]
fn past_its_size_whole_old_segments_go() {
    require_docker();
    let d = Daemon::start_with(|c| {
        c["console"] = json!({"journal_bytes": 65536});
    });
    // About 500 KB of output: eight times the journal.
    let id = d.ready_container("js", &bursts(20000, 200, " padding-padding"), json!({}));
    assert_eq!(d.act(&id, "start"), 202);
    wait_journaled(&d, &id, "line 20000 padding-padding");
    let files = on_disk(&d, &id);
    let bytes: usize = files.iter().map(|f| f.1.len()).sum();
    assert!(bytes <= 65536 + 20_000, "{bytes} bytes in {} segments", files.len());
    assert!(files.len() >= 2, "{files:?}");
    // Every segment holds whole lines, numbered on from its name, and the lines kept are the
    // newest ones, one after the other.
    let mut all = Vec::new();
    for (name, body) in &files {
        assert!(body.ends_with('\n'), "{name} ends with a whole line");
        let first: u64 = name.trim_end_matches(".seg").parse().unwrap();
        for (k, line) in body.lines().enumerate() {
            let (n, lit) = line.split_once(' ').unwrap();
            let n: u64 = n.parse().unwrap();
            if k == 0 {
                assert_eq!(n, first, "{name} starts with its own first line");
            }
            let text: String = serde_json::from_str(lit).unwrap();
            all.push((n, text));
        }
    }
    assert!(all.windows(2).all(|w| w[1].0 == w[0].0 + 1), "numbers rise one by one");
    let last = all.last().unwrap();
    assert_eq!(last.1, "line 20000 padding-padding");
    let k: u32 = all[0].1.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(k > 1000, "old lines went: the oldest kept is line {k}");
    let want: Vec<String> = (k..=20000).map(|i| format!("line {i} padding-padding")).collect();
    same(&all.iter().map(|a| a.1.clone()).collect::<Vec<_>>(), &want, "the newest lines, whole");
    // The API serves the same lines.
    let v = logs(&d, &id, "tail=10000");
    assert_eq!(texts(&v).last().unwrap(), "line 20000 padding-padding");
}

#[test]
fn crashes_are_recorded_with_their_last_lines() {
    require_docker();
    let d = Daemon::start_with(|c| c["containers"]["crash_window"] = json!(3600));
    // An outside `docker kill`: SIGKILL, restarted by the crash policy.
    let killed = d.ready_container("jk", &numbered(80), json!({}));
    assert_eq!(d.act(&killed, "start"), 202);
    wait_for(30, "the lines", || (texts(&logs(&d, &killed, "tail=1")) == ["line 80"]).then_some(()));
    docker(&["kill", &format!("lightd-{killed}")]);
    let crash = wait_for(30, "a crash record", || {
        d.get(&format!("/containers/{killed}/crashes")).json()["crashes"].as_array().and_then(|c| c.first().cloned())
    });
    assert_eq!(crash["exit_code"], 137, "{crash}");
    assert_eq!(crash["signal"], "SIGKILL");
    assert_eq!(crash["oom_killed"], false);
    assert_eq!(crash["restarted"], true);
    assert_eq!(crash["lines"], json!(range(31, 80)), "the last 50 lines before the exit");
    // Out of memory: a server that grows past its limit.
    let hog = "echo before the fall; x=a; while true; do x=$x$x; done";
    let oom = d.ready_container("jo", hog, json!({"limits": {"memory": 33554432, "cpu": 1.0}, "crash_restart": false}));
    assert_eq!(d.act(&oom, "start"), 202);
    let crash = wait_for(60, "an OOM crash record", || {
        d.get(&format!("/containers/{oom}/crashes")).json()["crashes"].as_array().and_then(|c| c.first().cloned())
    });
    assert_eq!(crash["oom_killed"], true, "{crash}");
    assert_eq!(crash["exit_code"], 137);
    assert_eq!(crash["restarted"], false);
    assert_eq!(crash["lines"], json!(["before the fall"]));
    // An asked-for stop is no crash; the records outlive a daemon restart.
    assert_eq!(d.act(&killed, "stop"), 202);
    d.wait_state(&killed, "offline", 30);
    std::thread::sleep(Duration::from_millis(500));
    let mut d = d;
    d.kill9();
    d.spawn();
    let all = d.get(&format!("/containers/{killed}/crashes")).json();
    assert_eq!(all["crashes"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(d.get("/containers/nobody/crashes").status, 404);
}
