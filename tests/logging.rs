//! The daemon's log as an operator reads it: `log.format` text or JSON, `log.level` filtering,
//! and a config error for a level or format that does not exist.

mod common;

use std::process::Command;

use common::service::output_within;
use common::*;
use serde_json::{json, Value};

const TS: &str = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z";

/// The UTC hour now as the log writes it (`2026-11-30T01`), from `date`, not our own code.
fn utc_hour() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%dT%H"]).output().expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Text records: `<ts> <LEVEL> <message>`; returns (level, message) of each line.
fn text_records(log: &str) -> Vec<(String, String)> {
    let re = regex_lite::Regex::new(&format!(r"^({TS}) (ERROR|WARN|INFO|DEBUG) (\S.*)$")).unwrap();
    log.lines()
        .map(|l| {
            let c = re.captures(l).unwrap_or_else(|| panic!("not a text record: {l:?}\n{log}"));
            (c[2].to_string(), c[3].to_string())
        })
        .collect()
}

#[test]
fn json_format_writes_one_object_per_line() {
    let before = utc_hour();
    let mut d = Daemon::start_with(|c| c["log"] = json!({"format": "json", "level": "debug"}));
    assert_eq!(d.get("/volumes").status, 200);
    assert_eq!(d.call_with("GET", "/containers", None, &[]).status, 401);
    d.stop();
    let after = utc_hour();
    let log = d.log();
    let ts = regex_lite::Regex::new(&format!("^{TS}$")).unwrap();
    let mut records = Vec::new();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{log}"));
        let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
        let stamp = obj["ts"].as_str().unwrap_or_else(|| panic!("no ts string: {line}"));
        assert!(ts.is_match(stamp), "ts {stamp:?} is not RFC 3339 UTC with millis");
        assert!(stamp.starts_with(&before) || stamp.starts_with(&after), "ts {stamp:?} is not now ({before}..{after})");
        let level = obj["level"].as_str().unwrap_or_else(|| panic!("no level string: {line}"));
        assert!(["error", "warn", "info", "debug"].contains(&level), "{line}");
        let msg = obj["msg"].as_str().unwrap_or_else(|| panic!("no msg string: {line}"));
        records.push((level.to_string(), msg.to_string()));
    }
    let has = |level: &str, f: &dyn Fn(&str) -> bool| records.iter().any(|(l, m)| l == level && f(m));
    assert!(has("info", &|m| m.contains(" listening on 127.0.0.1:")), "{log}");
    assert!(has("debug", &|m| m.starts_with("GET /volumes 200 (")), "{log}");
    assert!(has("debug", &|m| m.starts_with("GET /containers 401 (")), "{log}");
    assert!(has("info", &|m| m.starts_with("SIGTERM: stopping")), "{log}");
    assert!(has("info", &|m| m == "stopped"), "{log}");
}

#[test]
fn text_format_by_default_without_debug_records() {
    let before = utc_hour();
    let mut d = Daemon::start();
    assert_eq!(d.get("/volumes").status, 200);
    d.stop();
    let after = utc_hour();
    let log = d.log();
    let records = text_records(&log);
    assert!(log.lines().all(|l| l.starts_with(&before) || l.starts_with(&after)), "{log}");
    assert!(records.iter().any(|(l, m)| l == "INFO" && m.contains(" listening on 127.0.0.1:")), "{log}");
    assert!(records.iter().any(|(l, m)| l == "INFO" && m == "stopped"), "{log}");
    // Requests are logged at debug only.
    assert!(!records.iter().any(|(l, _)| l == "DEBUG"), "{log}");
    assert!(!log.contains("GET /volumes"), "{log}");
}

#[test]
fn level_warn_keeps_warnings_and_drops_info() {
    // An unreachable engine is a warning; the listening line and the rest are info.
    let port = port();
    let mut d = Daemon::start_with(|c| {
        c["log"] = json!({"level": "warn"});
        c["server"]["port"] = json!(port);
        c["docker"] = json!({"socket_path": "/nonexistent/docker.sock"});
    });
    assert_eq!(d.port, port);
    assert_eq!(d.get("/volumes").status, 200);
    wait_for(20, "the engine warning", || d.log().contains("unreachable").then_some(()));
    d.stop();
    let log = d.log();
    let records = text_records(&log);
    assert!(records.iter().any(|(l, m)| l == "WARN" && m.contains("unreachable at /nonexistent/docker.sock")), "{log}");
    assert!(records.iter().all(|(l, _)| l == "WARN" || l == "ERROR"), "{log}");
    assert!(!log.contains("listening on") && !log.contains("stopped"), "{log}");
}

#[test]
fn unknown_level_or_format_is_a_config_error_naming_the_key() {
    let dir = TempDir::new("logcfg");
    let cfg = dir.0.join("config.json");
    for (log, key) in [
        (json!({"level": "verbose"}), "log.level"),
        (json!({"level": "INFO"}), "log.level"),
        (json!({"format": "xml"}), "log.format"),
        (json!({"colour": true}), "colour"),
    ] {
        let mut c = config_for(&dir.0);
        c["log"] = log.clone();
        std::fs::write(&cfg, c.to_string()).unwrap();
        for serve in [false, true] {
            let mut cmd = Command::new(bin());
            if !serve {
                cmd.arg("--check-config");
            }
            let out = output_within(cmd.arg("--config").arg(&cfg), 20);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{log} (serve: {serve}): {err}");
            assert!(err.contains(key), "{log}: {err}");
        }
    }
    let mut c = config_for(&dir.0);
    c["log"] = json!({"level": "error", "format": "json"});
    std::fs::write(&cfg, c.to_string()).unwrap();
    let out = output_within(Command::new(bin()).arg("--check-config").arg("--config").arg(&cfg), 20);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
