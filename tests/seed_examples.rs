//! The seed's own create form (`{"image","name","ports":{..},"env":{..}}`), and docs/compatibility.md's
//! "The seed's examples" run as printed: every curl command between the `seed-examples`
//! markers is run with the real `curl` against a real daemon and Docker Engine, and its
//! answer compared with the one that page shows, so the page cannot rot.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const README: &str = include_str!("../docs/compatibility.md");
/// Keys whose values differ from run to run (ids, paths, timestamps, what the host decides):
/// the README's value only shows their type.
const VARIES: [&str; 8] =
    ["record_id", "container_id", "volume_id", "path", "created_at", "updated_at", "used_bytes", "quota"];
/// How long a `GET` example may be repeated until its answer is the one shown (an install, a
/// start, a server binding its port); what it answered last is reported past it.
const SETTLE_SECS: u64 = 90;

/// One example: a command, the status it answers, and the answer's body.
#[derive(Debug)]
struct Example {
    command: String,
    status: u16,
    /// `json` or `text`.
    lang: String,
    answer: String,
}

/// The examples between `<!-- seed-examples -->` and `<!-- /seed-examples -->`: each an `sh`
/// block with one command, a `→ \`NNN ...\`` line, then a `json` or `text` block.
fn examples(readme: &str) -> Vec<Example> {
    let start = readme.find("<!-- seed-examples -->").expect("the README has a <!-- seed-examples --> marker");
    let end = readme.find("<!-- /seed-examples -->").expect("the README has a <!-- /seed-examples --> marker");
    assert!(start < end, "the seed-examples markers are in order");
    let mut lines = readme[start..end].lines();
    let (mut out, mut command, mut status) = (Vec::new(), None::<String>, None::<u16>);
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let block: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            let block = block.join("\n");
            match lang.trim() {
                "sh" => {
                    assert!(command.is_none(), "an sh block without its answer before: {command:?}");
                    command = Some(block);
                }
                lang @ ("json" | "text") => {
                    let command =
                        command.take().unwrap_or_else(|| panic!("a {lang} answer without a command: {block}"));
                    let status = status.take().unwrap_or_else(|| panic!("no → `status` line for: {command}"));
                    out.push(Example { command, status, lang: lang.to_string(), answer: block });
                }
                other => panic!("a ```{other} block between the seed-examples markers"),
            }
        } else if let Some(rest) = line.trim().strip_prefix("→ `") {
            assert!(command.is_some(), "a status line without a command: {line}");
            status =
                Some(rest.get(..3).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {line}")));
        }
    }
    assert!(command.is_none(), "the last command has no answer: {command:?}");
    out
}

/// `text` with `from` replaced where it stands alone (not inside a longer word or number).
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + from.len()..].chars().next();
        let alone = !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric);
        out.push_str(&rest[..i]);
        out.push_str(if alone { to } else { from });
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

/// The method and path a command asks for.
fn method_and_path(command: &str) -> (String, String) {
    let words: Vec<&str> = command.split_whitespace().collect();
    let method = words.iter().position(|w| *w == "-X").and_then(|i| words.get(i + 1)).unwrap_or(&"GET");
    let url = words.iter().find(|w| w.starts_with("http://")).expect("a URL in the command");
    let path = url.trim_start_matches("http://").split_once('/').map_or("/".to_string(), |(_, p)| format!("/{p}"));
    (method.to_string(), path)
}

/// The `-d '...'` body of a command.
fn body_of(command: &str) -> Option<Value> {
    let start = command.find("-d '")? + 4;
    let end = start + command[start..].find('\'')?;
    serde_json::from_str(&command[start..end]).ok()
}

/// `actual` is `expected` but for [`VARIES`] keys, whose values need only be of the same kind.
fn same(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let (mut ek, mut ak): (Vec<&String>, Vec<&String>) = (e.keys().collect(), a.keys().collect());
            ek.sort();
            ak.sort();
            if ek != ak {
                return Err(format!("{at}: keys {ak:?}, the README shows {ek:?}"));
            }
            for (k, ev) in e {
                let path = format!("{at}.{k}");
                if VARIES.contains(&k.as_str()) {
                    let kind = |v: &Value| std::mem::discriminant(v);
                    if kind(ev) != kind(&a[k]) {
                        return Err(format!("{path}: {} is not of the kind of {ev}", a[k]));
                    }
                } else {
                    same(ev, &a[k], &path)?;
                }
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            e.iter().zip(a).enumerate().try_for_each(|(i, (ev, av))| same(ev, av, &format!("{at}[{i}]")))
        }
        _ if expected == actual => Ok(()),
        _ => Err(format!("{at}: {actual}, the README shows {expected}")),
    }
}

/// Runs `command` with curl (silent, its status appended) and returns (status, body).
fn run(command: &str) -> (u16, String) {
    let command = command.replacen("curl ", "curl -sS --max-time 60 -w '\\n%{http_code}' ", 1);
    let out = Command::new("sh").arg("-c").arg(&command).env("TOKEN", TOKEN).output().expect("run sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let status = code.trim().parse().unwrap_or(0);
    if status == 0 {
        return (0, format!("curl failed: {}{}", String::from_utf8_lossy(&out.stderr), stdout));
    }
    (status, body.to_string())
}

/// Whether an answer is the one an example shows.
fn matches(ex: &Example, status: u16, body: &str) -> Result<(), String> {
    if status != ex.status {
        return Err(format!("status {status}, the README shows {}; body {body}", ex.status));
    }
    if ex.lang == "text" {
        return if body.trim() == ex.answer.trim() {
            Ok(())
        } else {
            Err(format!("{body:?}, the README shows {:?}", ex.answer))
        };
    }
    let expected: Value =
        serde_json::from_str(&ex.answer).map_err(|e| format!("the README's answer is not JSON: {e}"))?;
    let actual: Value = serde_json::from_str(body).map_err(|e| format!("answer {body:?} is not JSON: {e}"))?;
    same(&expected, &actual, "answer")
}

#[test]
fn the_readme_seed_examples_run_as_printed() {
    require_docker();
    let curl = Command::new("curl").arg("--version").output();
    assert!(curl.is_ok_and(|o| o.status.success()), "curl is missing: run `bash scripts/setup.sh`");
    let d = Daemon::start();
    let host_port = port();
    let name = d.id("my-nginx");
    let fill = |s: &str| {
        let s = s.replace("http://localhost:8080", &format!("http://127.0.0.1:{}", d.port));
        replace_word(&s, "8081", &host_port.to_string()).replace("my-nginx", &name)
    };
    let examples = examples(README);

    // The seed's three curl examples are there, its create body as the seed has it but for
    // the image and the host port.
    let asked: Vec<(String, String)> = examples.iter().map(|e| method_and_path(&e.command)).collect();
    for want in [("POST", "/containers"), ("POST", "/containers/my-nginx/start"), ("GET", "/containers")] {
        assert!(asked.contains(&(want.0.into(), want.1.into())), "the README shows no {want:?}: {asked:?}");
    }
    let seed_body = json!({"image": IMAGE, "name": "my-nginx", "ports": {"80": "8081"}, "env": {"ENV": "production"}});
    assert!(
        examples.iter().any(|e| body_of(&e.command) == Some(seed_body.clone())),
        "no example creates {seed_body} as the seed does"
    );
    assert!(asked.contains(&("DELETE".into(), "/volumes/my-nginx".into())), "the seed's DELETE /volumes/:name");

    for ex in &examples {
        let ex =
            Example { command: fill(&ex.command), answer: fill(&ex.answer), lang: ex.lang.clone(), status: ex.status };
        let (method, _) = method_and_path(&ex.command);
        let (mut status, mut body) = run(&ex.command);
        // A GET is asked again until it settles (an install, a start); anything else runs once.
        if method == "GET" {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(SETTLE_SECS);
            while matches(&ex, status, &body).is_err() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(200));
                (status, body) = run(&ex.command);
            }
        }
        if let Err(why) = matches(&ex, status, &body) {
            panic!("README example\n{}\n answered differently: {why}\n daemon log:\n{}", ex.command, d.log());
        }
    }
    // The last examples deleted the server and its volume: nothing is left.
    assert_eq!(d.get("/volumes").json(), json!({"volumes": []}));
    assert_eq!(d.get("/containers").json(), json!({"containers": []}));
    assert!(d.containers().is_empty(), "no Docker container left: {:?}", d.containers());
}

/// The README-reading helpers themselves: a broken README must not pass unnoticed.
#[test]
fn the_example_reader_catches_what_differs() {
    let readme = "x\n<!-- seed-examples -->\n```sh\ncurl -X POST http://localhost:8080/a \\\n  -d '{\"k\": 1}'\n```\n\n→ `202 Accepted`\n\n```json\n{\"id\": \"x\", \"created_at\": 5, \"n\": 1}\n```\n<!-- /seed-examples -->\n";
    let ex = examples(readme);
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].status, ex[0].lang.as_str()), (202, "json"));
    assert_eq!(method_and_path(&ex[0].command), ("POST".to_string(), "/a".to_string()));
    assert_eq!(body_of(&ex[0].command), Some(json!({"k": 1})));
    assert!(matches(&ex[0], 202, r#"{"id":"x","created_at":99,"n":1}"#).is_ok(), "created_at varies");
    assert!(matches(&ex[0], 202, r#"{"id":"x","created_at":"99","n":1}"#).is_err(), "but keeps its kind");
    assert!(matches(&ex[0], 202, r#"{"id":"x","created_at":5,"n":2}"#).is_err());
    assert!(matches(&ex[0], 202, r#"{"id":"x","created_at":5}"#).is_err());
    assert!(matches(&ex[0], 200, r#"{"id":"x","created_at":5,"n":1}"#).is_err());
    assert_eq!(replace_word("8081 18081 80810 :8081/", "8081", "9"), "9 18081 80810 :9/");
    assert!(std::panic::catch_unwind(|| examples("```sh\ncurl x\n```")).is_err(), "no markers");
}

#[test]
fn seed_form_maps_ports_env_and_its_volume() {
    require_docker();
    let d = Daemon::start();
    let [inner_host, same_host] = ports(2)[..] else { unreachable!() };
    d.add_port("127.0.0.1", inner_host, "tcp");
    d.add_port("127.0.0.1", same_host, "udp");
    let name = d.id("seedmap");
    // A volume of the server's name that no server uses is the one it gets.
    let r = d.call("POST", "/volumes", Some(json!({"name": name, "size_limit": "1GB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let volume = r.json()["volume_id"].as_str().unwrap().to_string();
    let body = json!({
        "image": IMAGE, "name": name, "env": {"ENV": "test"}, "crash_restart": false,
        "ports": {"80": inner_host, format!("{same_host}/udp"): format!("127.0.0.1:{same_host}")},
    });
    let r = d.call("POST", "/containers", Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json(), json!({"message": "Container creation started", "internal_id": name, "state": "installing"}));
    let rec = d.wait_installed(&name, 120);
    assert_eq!(rec["install_state"], "ready", "{rec}");
    assert_eq!(rec["volume_id"], volume.as_str());
    assert_eq!((rec["startup_command"].as_str(), rec["crash_restart"].as_bool()), (Some(""), Some(false)));
    assert_eq!(
        rec["ports"],
        json!([{"ip": "127.0.0.1", "port": inner_host, "protocol": "tcp", "container_port": 80},
               {"ip": "127.0.0.1", "port": same_host, "protocol": "udp"}])
    );
    let info = inspect(&format!("lightd-{name}")).expect("the server's container");
    let bindings = &info["HostConfig"]["PortBindings"];
    assert_eq!(bindings["80/tcp"], json!([{"HostIp": "127.0.0.1", "HostPort": inner_host.to_string()}]));
    assert_eq!(
        bindings[format!("{same_host}/udp")],
        json!([{"HostIp": "127.0.0.1", "HostPort": same_host.to_string()}])
    );
    let env: Vec<&str> = info["Config"]["Env"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(env.contains(&"ENV=test") && env.contains(&"SERVER_PORT=80"), "{env:?}");
    // The image's own command (`/bin/sh`) runs: a shell reading the console.
    let entrypoint = d.dir.0.join("data").join(&name).join("entrypoint.sh");
    assert!(std::fs::read_to_string(&entrypoint).unwrap().ends_with("HUP\n'\\''/bin/sh'\\'''\n"));
    assert_eq!(d.act(&name, "start"), 202);
    d.wait_state(&name, "running", 30);
    let r = d.call("POST", &format!("/containers/{name}/command"), Some(json!({"command": "echo \"env is $ENV\""})));
    assert_eq!(r.status, 202, "{}", r.body);
    d.wait_line(&name, "env is test");

    // The API form's bindings never take a container port, in a create or a rebind.
    let r = d.call(
        "POST",
        &format!("/containers/{name}/rebind-network"),
        Some(json!({"ports": [{"ip": "127.0.0.1", "port": inner_host, "container_port": 80}]})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("unknown field `container_port`"), "{}", r.error());

    assert_eq!(d.call("DELETE", &format!("/volumes/{name}"), None).status, 409, "in use");
    assert_eq!(d.call("DELETE", &format!("/containers/{name}"), None).status, 200);
    let r = d.call("DELETE", &format!("/volumes/{name}"), None);
    assert_eq!((r.status, r.json()), (200, json!({"message": "Volume deleted successfully"})));
    assert_eq!(d.get("/network/ports?available=true").json()["ports"].as_array().unwrap().len(), 2, "ports freed");
}

#[test]
fn seed_form_refusals_are_clear_and_leave_nothing_behind() {
    require_docker();
    let d = Daemon::start_with(|c| c["containers"]["max_containers"] = json!(2));
    let [free, taken] = ports(2)[..] else { unreachable!() };
    d.add_port("0.0.0.0", free, "tcp");
    d.add_port("0.0.0.0", taken, "tcp");
    let holder = d.create_container("holder", "sleep 1000", json!({"ports": [{"ip": "0.0.0.0", "port": taken}]}));
    let name = d.id("refused");
    let seed = |extra: Value| {
        let mut body = json!({"image": IMAGE, "name": name, "ports": {"80": free.to_string()}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        body
    };
    let cases: Vec<(Value, u16, String)> = vec![
        (seed(json!({"internal_id": name})), 400, "name and internal_id cannot both be given".into()),
        (
            seed(json!({"volume_id": "d6764075-c5f1-4045-9fb3-85315b85cb0f"})),
            400,
            "volume_id is not part of the seed form".into(),
        ),
        (seed(json!({"ports": [{"ip": "0.0.0.0", "port": free}]})), 400, "ports must be a map".into()),
        (json!({"internal_id": name, "image": IMAGE, "ports": {"80": "1"}}), 400, "use name".into()),
        (seed(json!({"restart": true})), 400, "unknown field `restart`".into()),
        (seed(json!({"name": "has space"})), 400, "name \"has space\" must be".into()),
        (seed(json!({"env": {"A-B": "1"}})), 400, "env name \"A-B\"".into()),
        (seed(json!({"ports": {"80": "65536"}})), 400, "maps to \"65536\"".into()),
        (seed(json!({"ports": {"80": "1"}})), 400, "Port not found in network pool: host port 1/tcp".into()),
        (seed(json!({"ports": {"80": taken}})), 409, format!("Port already in use: 0.0.0.0:{taken}/tcp by {holder}")),
        (seed(json!({"image": "Bad Image"})), 400, "image \"Bad Image\"".into()),
        (seed(json!({"name": holder})), 409, format!("Container {holder} already exists")),
    ];
    for (body, status, needle) in cases {
        let r = d.call("POST", "/containers", Some(body.clone()));
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(r.error().contains(&needle), "{body}: {:?} lacks {needle:?}", r.error());
    }

    // A volume of its name that another server uses is not taken over.
    let r = d.call("POST", "/volumes", Some(json!({"name": name})));
    assert_eq!(r.status, 201, "{}", r.body);
    let other = d.id("other");
    let body = json!({"internal_id": other, "image": IMAGE, "volume_id": name, "startup_command": "sleep 1000"});
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    let r = d.call("POST", "/containers", Some(seed(json!({}))));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().contains(&format!("Volume {name} is used by {other}")), "{}", r.error());
    assert_eq!(d.call("DELETE", &format!("/containers/{other}"), None).status, 200);
    assert_eq!(d.call("DELETE", &format!("/volumes/{name}"), None).status, 200);

    // A create refused after its volume was made (the container limit) removes that volume.
    let third = d.create_container("third", "sleep 1000", json!({}));
    let before = d.get("/volumes").json()["volumes"].as_array().unwrap().len();
    let r = d.call("POST", "/containers", Some(seed(json!({}))));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().contains("max_containers"), "{}", r.error());
    let volumes = d.get("/volumes").json()["volumes"].clone();
    assert_eq!(volumes.as_array().unwrap().len(), before, "no volume left by the refused create: {volumes}");
    assert!(volumes.as_array().unwrap().iter().all(|v| v["name"] != name.as_str()));
    assert_eq!(d.get(&format!("/containers/{name}")).status, 404);
    let pool = d.get("/network/ports?available=true").json()["ports"].clone();
    assert_eq!(pool[0]["port"], free, "the free port stayed free: {pool}");
    for id in [holder, third] {
        assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).status, 200);
    }
}
