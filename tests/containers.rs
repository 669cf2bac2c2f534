//! Containers against the real engine: install flow, validation, rebind, reinstall, delete.

mod common;

use common::*;
use serde_json::{json, Value};

fn create_body(id: &str, volume: &str) -> Value {
    json!({
        "internal_id": id,
        "image": IMAGE,
        "volume_id": volume,
        "startup_command": "bash -c 'while true; do echo Hello; sleep 1; done'",
        "start_pattern": "Hello",
    })
}

fn inspect(name: &str) -> Value {
    common::inspect(name).unwrap_or_else(|| panic!("no container {name}"))
}

#[test]
fn create_installs_then_ready_with_what_was_asked() {
    require_docker();
    let d = Daemon::start();
    let (vol, vol_path) = d.new_volume();
    let [tcp, udp] = ports(2)[..] else { unreachable!() };
    d.add_port("127.0.0.1", tcp, "tcp");
    d.add_port("127.0.0.1", udp, "udp");
    let id = d.id("srv");
    let mut body = create_body(&id, &vol);
    body["ports"] = json!([{"ip": "127.0.0.1", "port": tcp, "protocol": "tcp"}, {"ip": "127.0.0.1", "port": udp, "protocol": "udp"}]);
    body["limits"] = json!({"memory": 268435456u64, "cpu": 0.5});
    body["env"] = json!({"GAME_MODE": "survival"});
    body["install_script"] =
        json!("#!/bin/bash\nsleep 2\necho installed by $GAME_MODE > /home/container/installed.txt\necho done\n");
    let r = d.call("POST", "/containers", Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json(), json!({"message": "Container creation started", "internal_id": id, "state": "installing"}));

    // While installing: visible as such, and every action is refused.
    let g = d.get(&format!("/containers/{id}")).json();
    assert_eq!(g["install_state"], "installing");
    let r = d.call("POST", &format!("/containers/{id}/rebind-network"), Some(json!({"ports": []})));
    assert_eq!((r.status, r.error().as_str()), (409, "Cannot rebind network while container is installing"));
    assert_eq!(d.call("POST", &format!("/containers/{id}/reinstall"), None).status, 409);
    assert_eq!(d.call("DELETE", &format!("/volumes/{vol}"), None).status, 409, "volume in use");

    let rec = d.wait_installed(&id, 120);
    assert_eq!(rec["install_state"], "ready", "{rec}");
    assert_eq!(rec["state"], "offline");
    assert_eq!(rec["error"], Value::Null);
    assert_eq!(rec["last_exit"], Value::Null);
    assert_eq!(rec["env"], json!({"GAME_MODE": "survival"}));
    assert_eq!(rec["limits"], json!({"memory": 268435456u64, "cpu": 0.5}));
    assert_eq!(
        rec["install_events"],
        json!([
            "Started",
            "CreatingContainer",
            "ContainerCreated",
            "RunningInstallScript",
            "InstallScriptComplete",
            "SettingUpEntrypoint",
            "Ready"
        ])
    );
    assert_eq!(std::fs::read_to_string(vol_path.join("installed.txt")).unwrap(), "installed by survival\n");

    let cid = rec["container_id"].as_str().unwrap();
    let info = inspect(&format!("lightd-{id}"));
    assert_eq!(info["Id"], cid);
    let host = &info["HostConfig"];
    assert_eq!(host["Memory"], 268435456u64);
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(
        host["PortBindings"][format!("{tcp}/tcp")],
        json!([{"HostIp": "127.0.0.1", "HostPort": tcp.to_string()}])
    );
    assert_eq!(
        host["PortBindings"][format!("{udp}/udp")],
        json!([{"HostIp": "127.0.0.1", "HostPort": udp.to_string()}])
    );
    let net_id = docker(&["network", "inspect", "lightd-test-net", "--format", "{{.Id}}"]);
    assert_eq!(host["NetworkMode"], net_id.trim(), "joined by id: never ambiguous");
    assert!(host["SecurityOpt"].as_array().unwrap().contains(&json!("no-new-privileges")));
    assert!(host["PidsLimit"].as_i64().unwrap() > 0);
    assert_eq!(host["Init"], true, "an init reaps zombies and passes signals on: {host}");
    assert_eq!(info["Config"]["Labels"]["lightd.managed"], "true");
    assert_eq!(info["Config"]["OpenStdin"], true);
    let env: Vec<&str> = info["Config"]["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(env.contains(&"GAME_MODE=survival"));
    assert!(env.contains(&format!("SERVER_PORT={tcp}").as_str()));
    assert!(env.contains(&"SERVER_MEMORY=256"));
    assert!(env.contains(&"SERVER_IP=127.0.0.1"));
    let mounts = info["Mounts"].as_array().unwrap();
    let home = mounts.iter().find(|m| m["Destination"] == "/home/container").expect("volume mount");
    assert_eq!(home["Source"], vol_path.to_str().unwrap());
    assert_eq!(home["RW"], true);
    let data = mounts.iter().find(|m| m["Destination"] == "/app/data").expect("data mount");
    assert_eq!(data["RW"], false);
    assert!(std::path::Path::new(data["Source"].as_str().unwrap()).join("entrypoint.sh").exists());
    wait_for(20, "the install container removed", || (d.containers().len() == 1).then_some(()));
    assert_eq!(d.containers()[0].0, cid, "only the server's container is left");

    // The pool and the volume know who uses them; list and metrics agree.
    let ports = d.get("/network/ports?available=false").json()["ports"].clone();
    assert_eq!(ports.as_array().unwrap().len(), 2);
    assert!(ports.as_array().unwrap().iter().all(|p| p["used_by"] == id.as_str()));
    assert_eq!(d.get(&format!("/volumes/{vol}")).json()["used_by"], json!([id]));
    let list = d.get("/containers").json();
    assert_eq!(
        list["containers"],
        json!([{"internal_id": id, "container_id": cid, "install_state": "ready", "state": "offline", "image": IMAGE}])
    );
    assert!(d.get("/metrics").body.contains("lightd_containers{state=\"offline\"} 1\n"));
}

#[test]
fn failing_install_and_missing_image_end_failed() {
    require_docker();
    let d = Daemon::start();
    let (vol, _) = d.new_volume();
    let bad_script = d.id("badscript");
    let mut body = create_body(&bad_script, &vol);
    body["install_script"] = json!("echo step one\necho broken >&2\nexit 3\n");
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    let no_image = d.id("noimage");
    let mut body = create_body(&no_image, &vol);
    body["image"] = json!("lightd-test/does-not-exist:1.0");
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);

    let rec = d.wait_installed(&bad_script, 120);
    assert_eq!(rec["install_state"], "failed");
    let err = rec["error"].as_str().unwrap();
    assert!(err.contains("exited with code 3"), "{err}");
    assert!(err.contains("broken"), "last lines quoted: {err}");
    assert_eq!(rec["install_events"].as_array().unwrap().last().unwrap(), "Error");

    let rec = d.wait_installed(&no_image, 120);
    assert_eq!(rec["install_state"], "failed");
    let err = rec["error"].as_str().unwrap();
    assert!(err.contains("Image pull failed"), "{err}");
    assert!(err.contains("lightd-test/does-not-exist:1.0"), "{err}");

    // A failed container can be deleted, and reinstalled into success.
    let r =
        d.call("POST", &format!("/containers/{bad_script}/reinstall"), Some(json!({"install_script": "echo fixed"})));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(d.wait_installed(&bad_script, 120)["install_state"], "ready");
    assert_eq!(d.call("DELETE", &format!("/containers/{no_image}"), None).status, 200);
}

#[test]
fn every_bad_field_is_refused_and_nothing_is_created() {
    require_docker();
    let allowed = TempDir::new("allowed");
    std::fs::create_dir_all(allowed.0.join("maps")).unwrap();
    let allowed_root = allowed.0.clone();
    let d = Daemon::start_with(|c| c["containers"]["allowed_mounts"] = json!([allowed_root]));
    let (vol, _) = d.new_volume();
    let [taken, free] = ports(2)[..] else { unreachable!() };
    d.add_port("127.0.0.1", taken, "tcp");
    d.add_port("127.0.0.1", free, "tcp");
    let owner = d.id("owner");
    let mut body = create_body(&owner, &vol);
    body["ports"] = json!([{"ip": "127.0.0.1", "port": taken}]);
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);

    let id = d.id("bad");
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("internal_id", json!("../etc"), 400, "internal_id"),
        ("internal_id", json!(".hidden"), 400, "internal_id"),
        ("internal_id", json!(owner), 409, "already exists"),
        ("image", json!("bad image!"), 400, "image"),
        ("image", json!(""), 400, "image"),
        ("volume_id", json!("no pe!"), 400, "volume_id"),
        ("volume_id", json!("nope"), 404, "Volume not found"),
        ("volume_id", json!("d6764075-c5f1-4045-9fb3-85315b85cb0f"), 404, "Volume not found"),
        ("startup_command", json!(""), 400, "startup_command"),
        ("startup_command", json!(5), 400, "invalid"),
        ("start_pattern", json!("(unclosed"), 400, "start_pattern"),
        ("ports", json!([{"ip": "127.0.0.1", "port": 1}]), 400, "Port not found in network pool"),
        ("ports", json!([{"ip": "127.0.0.1", "port": taken}]), 409, "Port already in use"),
        ("ports", json!([{"ip": "127.0.0.1", "port": free}, {"ip": "127.0.0.1", "port": free}]), 400, "twice"),
        ("ports", json!([{"ip": "nowhere", "port": free}]), 400, "invalid"),
        ("ports", json!([{"ip": "127.0.0.1", "port": free, "protocol": "sctp"}]), 400, "invalid"),
        ("limits", json!({"memory": 0}), 400, "limits.memory"),
        ("limits", json!({"memory": -5}), 400, "invalid"),
        ("limits", json!({"cpu": 0}), 400, "limits.cpu"),
        ("limits", json!({"cpu": 1000}), 400, "limits.cpu"),
        ("limits", json!({"disk": 1}), 400, "disk"),
        ("mount", json!({"/data": "/etc"}), 400, "Mount source not allowed"),
        ("mount", json!({"/data": format!("{}/maps/../../..", allowed.0.display())}), 400, "mount source"),
        ("mount", json!({"/data": "/nonexistent/dir"}), 400, "Mount source not allowed"),
        ("mount", json!({"/home/container": allowed.0.join("maps")}), 400, "overlaps"),
        ("env", json!({"BAD-NAME": "1"}), 400, "env"),
        ("env", json!({"A": 1}), 400, "invalid"),
        ("colour", json!("red"), 400, "colour"),
    ];
    for (field, value, status, needle) in cases {
        let mut body = create_body(&id, &vol);
        body[field] = value.clone();
        let r = d.call("POST", "/containers", Some(body));
        assert_eq!(r.status, status, "{field}={value}: {}", r.body);
        assert!(r.error().contains(needle), "{field}={value}: {}", r.error());
    }
    // Required fields.
    for field in ["internal_id", "image", "volume_id", "startup_command"] {
        let mut body = create_body(&id, &vol);
        body.as_object_mut().unwrap().remove(field);
        let r = d.call("POST", "/containers", Some(body));
        assert_eq!(r.status, 400, "{field}");
        assert!(r.error().contains(field), "{}", r.error());
    }
    assert_eq!(d.get(&format!("/containers/{id}")).status, 404);
    assert_eq!(d.get(&format!("/containers/{id}")).error(), "Container not found");
    let free_entry = d.get("/network/ports?available=true").json()["ports"].clone();
    assert_eq!(free_entry.as_array().unwrap().len(), 1, "the free port stayed free");

    // An allowed mount works.
    let ok = d.id("mounted");
    let mut body = create_body(&ok, &vol);
    body["mount"] = json!({"/maps": allowed.0.join("maps")});
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    assert_eq!(d.wait_installed(&ok, 120)["install_state"], "ready");
    let info = inspect(&format!("lightd-{ok}"));
    let maps = info["Mounts"].as_array().unwrap().iter().find(|m| m["Destination"] == "/maps").cloned().unwrap();
    assert_eq!(maps["Source"], allowed.0.join("maps").to_str().unwrap());
    d.wait_installed(&owner, 120);
    let names = d.docker_names();
    assert!(!names.iter().any(|n| n.contains("-bad")), "nothing created for refused requests: {names:?}");
}

#[test]
fn container_limit_is_enforced() {
    require_docker();
    let d = Daemon::start_with(|c| c["containers"]["max_containers"] = json!(1));
    let (vol, _) = d.new_volume();
    assert_eq!(d.call("POST", "/containers", Some(create_body(&d.id("one"), &vol))).status, 202);
    d.wait_installed(&d.id("one"), 120);
    let before = d.state();
    let r = d.call("POST", "/containers", Some(create_body(&d.id("two"), &vol)));
    assert_eq!(r.status, 409);
    assert!(r.error().contains("max_containers"), "{}", r.error());
    // Refused, so nothing of it exists: no record, no Docker container, the state as it was.
    assert_eq!(d.get(&format!("/containers/{}", d.id("two"))).status, 404);
    let listed: Vec<Value> = d.get("/containers").json()["containers"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(common::inspect(&format!("lightd-{}", d.id("two"))).is_none(), "a Docker container for the refused create");
    assert_eq!(d.docker_names(), [format!("lightd-{}", d.id("one"))]);
    let after = d.state();
    assert_eq!((&after["containers"], &after["ports"]), (&before["containers"], &before["ports"]));
    // Nor is it waiting to be saved with the next write: make one.
    d.new_volume();
    let r = d.get(&format!("/containers/{}", d.id("two")));
    assert_eq!(r.status, 404, "the refused create was saved with the next write: {}", r.body);
    assert_eq!(d.state()["containers"], before["containers"], "the refused create was saved with the next write");
}

#[test]
fn rebind_moves_ports_and_delete_cleans_up() {
    require_docker();
    let d = Daemon::start();
    let (vol, vol_path) = d.new_volume();
    let [old, new, other] = ports(3)[..] else { unreachable!() };
    for p in [old, new, other] {
        d.add_port("127.0.0.1", p, "tcp");
    }
    let id = d.id("rebind");
    let mut body = create_body(&id, &vol);
    body["ports"] = json!([{"ip": "127.0.0.1", "port": old}]);
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    let blocker = d.id("blocker");
    let mut body = create_body(&blocker, &vol);
    body["ports"] = json!([{"ip": "127.0.0.1", "port": other}]);
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    let before = d.wait_installed(&id, 120);
    d.wait_installed(&blocker, 120);

    let path = format!("/containers/{id}/rebind-network");
    let r = d.call("POST", &path, Some(json!({"ports": [{"ip": "127.0.0.1", "port": 9}]})));
    assert_eq!((r.status, r.error().contains("Port not found in network pool")), (400, true), "{}", r.body);
    let r = d.call("POST", &path, Some(json!({"ports": [{"ip": "127.0.0.1", "port": other}]})));
    assert_eq!((r.status, r.error().contains("Port already in use")), (409, true), "{}", r.body);
    assert_eq!(d.call("POST", "/containers/nobody/rebind-network", Some(json!({"ports": []}))).status, 404);

    let r = d.call("POST", &path, Some(json!({"ports": [{"ip": "127.0.0.1", "port": new}]})));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json(), json!({"message": "Network rebinding started", "internal_id": id}));
    let rec = wait_for(60, "rebind to finish", || {
        let v = d.get(&format!("/containers/{id}")).json();
        (v["ports"][0]["port"] == new).then_some(v)
    });
    assert_ne!(rec["container_id"], before["container_id"], "a new container");
    let port_state = |p: u16| {
        let all = d.get("/network/ports").json()["ports"].clone();
        all.as_array().unwrap().iter().find(|e| e["port"] == p).cloned().unwrap()
    };
    wait_for(10, "old port freed", || (port_state(old)["in_use"] == false).then_some(()));
    assert_eq!(port_state(new)["used_by"], id.as_str());
    let info = inspect(&format!("lightd-{id}"));
    assert_eq!(info["Id"], rec["container_id"]);
    let bindings = info["HostConfig"]["PortBindings"].clone();
    assert_eq!(bindings[format!("{new}/tcp")][0]["HostPort"], new.to_string());
    assert!(bindings.get(format!("{old}/tcp")).is_none());
    assert_eq!(d.docker_names().iter().filter(|n| n.starts_with(&format!("lightd-{id}"))).count(), 1);

    // Delete: the Docker container and the record go, the port is freed, the volume stays.
    std::fs::write(vol_path.join("world.dat"), b"keep me").unwrap();
    let r = d.call("DELETE", &format!("/containers/{id}"), None);
    assert_eq!((r.status, r.json()), (200, json!({"message": "Container deleted successfully"})));
    assert!(!d.docker_names().contains(&format!("lightd-{id}")));
    assert_eq!(d.get(&format!("/containers/{id}")).status, 404);
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).status, 404);
    assert_eq!(port_state(new)["in_use"], false);
    assert_eq!(std::fs::read(vol_path.join("world.dat")).unwrap(), b"keep me");
    assert_eq!(d.get(&format!("/volumes/{vol}")).json()["used_by"], json!([blocker]));
}

#[test]
fn reinstall_keeps_volume_data() {
    require_docker();
    let mut d = Daemon::start();
    let (vol, vol_path) = d.new_volume();
    let id = d.id("re");
    let mut body = create_body(&id, &vol);
    body["install_script"] = json!("echo one > /home/container/first.txt");
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    let first = d.wait_installed(&id, 120);
    std::fs::write(vol_path.join("player.dat"), b"progress").unwrap();

    let r = d.call(
        "POST",
        &format!("/containers/{id}/reinstall"),
        Some(json!({"install_script": "echo two > /home/container/second.txt"})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json(), json!({"message": "Container reinstall started", "internal_id": id}));
    let second = d.wait_installed(&id, 120);
    assert_eq!(second["install_state"], "ready");
    assert_ne!(second["container_id"], first["container_id"]);
    assert_eq!(std::fs::read(vol_path.join("player.dat")).unwrap(), b"progress");
    assert!(vol_path.join("first.txt").exists() && vol_path.join("second.txt").exists());
    let r = d.call("POST", &format!("/containers/{id}/reinstall"), Some(json!({"image": "no good"})));
    assert_eq!(r.status, 400);
    assert_eq!(d.call("POST", "/containers/ghost/reinstall", None).status, 404);

    // State survives a restart, and the old container is gone from Docker.
    d.restart();
    assert_eq!(d.get(&format!("/containers/{id}")).json()["container_id"], second["container_id"]);
    assert_eq!(d.docker_names().iter().filter(|n| n.starts_with(&format!("lightd-{id}"))).count(), 1);
}

#[test]
fn install_cut_by_a_restart_is_failed_not_stuck() {
    require_docker();
    let mut d = Daemon::start();
    let (vol, _) = d.new_volume();
    let id = d.id("cut");
    let mut body = create_body(&id, &vol);
    body["install_script"] = json!("sleep 30");
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    let helper = wait_for(60, "install script running", || {
        d.containers().into_iter().find(|c| c.2 && !c.1.starts_with("lightd-")).map(|c| c.0)
    });
    assert_eq!(inspect(&helper)["Config"]["Labels"]["lightd.role"], "install");
    d.kill9();
    d.spawn();
    let rec = d.record(&id);
    assert_eq!(rec["install_state"], "failed");
    assert_eq!(rec["error"], "interrupted by daemon restart");
    // The reconcile removes the install container the cut install left behind.
    wait_for(30, "the install container removed", || common::inspect(&helper).is_none().then_some(()));
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).status, 200);
    assert!(d.containers().is_empty(), "{:?}", d.containers());
}

#[test]
fn twenty_concurrent_creates_all_reach_ready() {
    require_docker();
    let d = Daemon::start();
    let (vol, _) = d.new_volume();
    let ids: Vec<String> = (0..20).map(|i| d.id(&format!("many{i}"))).collect();
    std::thread::scope(|s| {
        for id in &ids {
            let d = &d;
            let vol = &vol;
            s.spawn(move || {
                let mut body = create_body(id, vol);
                body["install_script"] = json!(format!("echo {id} > /home/container/{id}.txt"));
                let r = d.call("POST", "/containers", Some(body));
                assert_eq!(r.status, 202, "{}", r.body);
            });
            // Whoever sees the record can act on it at once: the action reaches its
            // supervisor (409 while installing), never a 404.
            s.spawn(move || {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while d.get(&format!("/containers/{id}")).status != 200 {
                    assert!(std::time::Instant::now() < deadline, "{id} never appeared");
                }
                let r = d.call("POST", &format!("/containers/{id}/kill"), None);
                assert_eq!(r.status, 409, "kill right after the record appeared: {}", r.body);
            });
        }
    });
    for id in &ids {
        let rec = d.wait_installed(id, 300);
        assert_eq!(rec["install_state"], "ready", "{id}: {rec}");
    }
    assert_eq!(d.get("/containers").json()["containers"].as_array().unwrap().len(), 20);
    let names = d.docker_names();
    for id in &ids {
        assert!(names.contains(&format!("lightd-{id}")), "{id} missing in {names:?}");
    }
}
