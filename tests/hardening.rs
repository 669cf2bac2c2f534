//! A server cannot write outside its volume, and nothing a tenant leaves in a volume or a
//! mount reaches past it: a read-only root file system with a sized tmpfs `/tmp`, volumes
//! refused past the host disk's free space, an install script whose `HOME` is not the volume,
//! mount sources judged on resolved paths (lightd's own places refused), and lightd's scripts
//! readable only by whom they are for.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// A file of a volume, by the files API.
fn read_file(d: &Daemon, vol: &str, path: &str) -> String {
    let r = d.get(&format!("/volumes/{vol}/files/content?path={path}"));
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

/// The console lines of `id` (the last 100).
fn console(d: &Daemon, id: &str) -> Vec<String> {
    let lines = d.get(&format!("/containers/{id}/logs?tail=100")).json()["lines"].clone();
    lines.as_array().unwrap().iter().filter_map(Value::as_str).map(String::from).collect()
}

/// The host's free space under `dir`, from `statvfs`.
fn free_bytes(dir: &Path) -> u64 {
    let s = rustix::fs::statvfs(dir).unwrap_or_else(|e| panic!("statvfs {}: {e}", dir.display()));
    s.f_bavail * s.f_frsize
}

/// The server writes nothing but its volume and a `/tmp` of `containers.tmpfs_size`: `touch /x`
/// fails (even as root), `/tmp` is a tmpfs of 100 MiB by default, and one of 1 MiB takes 1 MiB and then
/// ENOSPC. The install container keeps a writable root (install scripts apt-get).
#[test]
fn a_servers_root_is_read_only_and_its_tmp_stops_at_its_size() {
    require_docker();
    // As root, so only a read-only file system (not a permission) can stop `touch /x`.
    let probe = "if touch /x 2>/dev/null; then echo 'root: writable'; \
                 else echo \"root: $(touch /x 2>&1 | grep -o 'Read-only file system')\"; fi; \
                 echo \"volume: $(touch /home/container/v && echo writable)\"; \
                 echo \"tmp: $(df -k /tmp | awk 'NR == 2 { print $1, $2 }') $(stat -c %a /tmp)\"; \
                 echo \"tmp fill: $(dd if=/dev/zero of=/tmp/fill bs=65536 count=64 2>&1 >/dev/null \
                     | grep -o 'No space left on device' | head -n 1)\"; \
                 echo \"tmp size: $(wc -c < /tmp/fill)\"; echo probed; sleep 1000";
    let install = "touch /usr/lightd-install-was-here && echo yes > /home/container/install-root-writable";
    // What it printed, by the start of each line, once it has run.
    let run = |d: &Daemon| {
        let id =
            d.ready_container("rofs", probe, json!({"install_script": install, "user": "0:0", "crash_restart": false}));
        let vol = d.record(&id)["volume_id"].as_str().unwrap().to_string();
        assert_eq!(read_file(d, &vol, "install-root-writable"), "yes\n", "the install container writes its root");
        assert_eq!(d.act(&id, "start"), 202);
        d.wait_line(&id, "probed");
        let lines = console(d, &id);
        assert_eq!(d.act(&id, "kill"), 202);
        d.wait_state(&id, "offline", 30);
        move |prefix: &str| lines.iter().find(|l| l.starts_with(prefix)).cloned().unwrap_or_default()
    };

    let d = Daemon::start();
    let said = run(&d);
    assert_eq!(said("root:"), "root: Read-only file system");
    assert_eq!(said("volume:"), "volume: writable");
    assert_eq!(said("tmp:"), "tmp: tmpfs 102400 1777", "100 MiB by default, for everyone, sticky");
    assert!(inspect(&format!("lightd-{}", d.id("rofs"))).unwrap()["HostConfig"]["ReadonlyRootfs"] == true);
    drop(d);

    let d = Daemon::start_with(|c| c["containers"]["tmpfs_size"] = json!("1MB"));
    let said = run(&d);
    assert_eq!(said("tmp:"), "tmp: tmpfs 1024 1777");
    assert_eq!(said("tmp fill:"), "tmp fill: No space left on device", "4 MiB into a 1 MiB /tmp");
    let size: u64 = said("tmp size:").trim_start_matches("tmp size: ").trim().parse().unwrap_or(u64::MAX);
    assert!(size <= 1 << 20, "/tmp held {size} bytes");
}

/// The install script runs as root with `HOME` outside the volume: a `.wgetrc` a tenant
/// planted in the volume is not in its `HOME` (nor is anything else of theirs). The server
/// itself keeps the volume as its `HOME`.
#[test]
fn the_install_scripts_home_is_not_the_volume() {
    require_docker();
    let d = Daemon::start();
    let (vol, _) = d.new_volume();
    d.put_file(&vol, ".wgetrc", b"http_proxy = http://tenant.example:3128/\nuse_proxy = on\n");
    let install = "echo \"$HOME\" > /home/container/install-home; \
                   if [ -e \"$HOME/.wgetrc\" ]; then echo steered; else echo clean; fi > /home/container/install-dotfiles";
    let id = d.id("home");
    let body = json!({"internal_id": id, "image": IMAGE, "volume_id": vol, "install_script": install,
                      "startup_command": "echo \"server home: $HOME\"; sleep 1000", "crash_restart": false});
    let r = d.call("POST", "/containers", Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(d.wait_installed(&id, 120)["install_state"], "ready");
    assert_eq!(read_file(&d, &vol, "install-home"), "/root\n");
    assert_eq!(read_file(&d, &vol, "install-dotfiles"), "clean\n", "the planted .wgetrc is not the script's");
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_line(&id, "server home: /home/container");
    assert_eq!(d.act(&id, "kill"), 202);
    d.wait_state(&id, "offline", 30);
}

/// Mount sources are judged with every path resolved: a link under an allowed root that leads
/// out of it, or to lightd's backups, is refused; so is the volumes' base when the config
/// names it through a symlink, and the backups directory when it lies under an allowed root.
#[test]
fn mount_isolation_compares_resolved_paths_and_keeps_lightds_own() {
    require_docker();
    // Outside the daemon's directory, which holds its state file (everything there is its own);
    // made first, so it outlives the daemon.
    let outside = TempDir::new("shared");
    let mut d = Daemon::prepare(|_| {});
    let dir = d.dir.0.clone();
    let shared = outside.0.join("shared");
    for sub in ["maps", "backups", "volumes"] {
        std::fs::create_dir_all(shared.join(sub)).unwrap();
    }
    std::os::unix::fs::symlink(&shared, outside.0.join("alias")).unwrap();
    std::os::unix::fs::symlink(shared.join("backups"), shared.join("to-backups")).unwrap();
    std::os::unix::fs::symlink(dir.join("data"), shared.join("to-data")).unwrap();
    let mut config: Value = serde_json::from_slice(&std::fs::read(&d.config).unwrap()).unwrap();
    config["containers"]["allowed_mounts"] = json!([{"path": shared, "rw": true}]);
    config["backups"]["path"] = json!(shared.join("backups"));
    // The volumes' base named through a link into the allowed root.
    config["volumes"]["base_path"] = json!(outside.0.join("alias/volumes"));
    std::fs::write(&d.config, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    d.spawn();

    let (vol, _) = d.new_volume();
    let create = |name: &str, source: PathBuf| {
        let body = json!({"internal_id": d.id(name), "image": IMAGE, "volume_id": vol,
                          "startup_command": "true", "mount": {"/data": source}});
        d.call("POST", "/containers", Some(body))
    };
    let cases: [(&str, PathBuf, &str); 5] = [
        ("backups", shared.join("backups"), "backups.path"),
        ("link-to-backups", shared.join("to-backups"), "backups.path"),
        ("volumes-by-alias", shared.join("volumes"), "volumes.base_path"),
        ("whole-root", shared.clone(), "overlaps lightd's own"),
        ("link-out", shared.join("to-data"), "Mount source not allowed"),
    ];
    for (name, source, needle) in cases {
        let r = create(name, source.clone());
        assert_eq!(r.status, 400, "{name} ({}): {}", source.display(), r.body);
        assert!(r.error().contains(needle), "{name}: {}", r.error());
        assert_eq!(d.get(&format!("/containers/{}", d.id(name))).status, 404, "{name} left no record");
    }
    let r = create("maps", shared.join("maps"));
    assert_eq!(r.status, 202, "an ordinary source under the allowed root: {}", r.body);
    assert_eq!(d.wait_installed(&d.id("maps"), 120)["install_state"], "ready");
}

/// With `volumes.overcommit` false (the default) a loop volume that the host's disk could not
/// hold is refused with a 409, at create and at a grow; nothing is made. With it true, the
/// same create is made (a sparse image).
#[test]
fn a_volume_past_the_disks_free_space_is_refused() {
    require_docker();
    let d = Daemon::start_with(|c| {
        c["volumes"]["quota"] = json!("loop");
        c["volumes"]["overcommit"] = json!(false);
    });
    let free = free_bytes(&d.dir.0);
    let past = format!("{}GB", (free >> 30) + 10);
    let r = d.call("POST", "/volumes", Some(json!({"size_limit": past})));
    assert_eq!(r.status, 409, "{past} with {free} bytes free: {}", r.body);
    let e = r.error();
    assert!(e.contains("does not fit") && e.contains("volumes.overcommit"), "{e}");
    assert_eq!(d.get("/volumes").json()["volumes"], json!([]), "nothing was made");
    let images = std::fs::read_dir(d.dir.0.join("volumes/.images")).map(|it| it.count()).unwrap_or(0);
    assert_eq!(images, 0, "no image was left");

    let r = d.call("POST", "/volumes", Some(json!({"size_limit": "16MB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let vol = r.json()["volume_id"].as_str().unwrap().to_string();
    let r = d.call("PATCH", &format!("/volumes/{vol}"), Some(json!({"size_limit": past})));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(d.get(&format!("/volumes/{vol}")).json()["size_limit_bytes"], 16 << 20);
    let r = d.call("PATCH", &format!("/volumes/{vol}"), Some(json!({"size_limit": "32MB"})));
    assert_eq!(r.status, 200, "a grow that fits: {}", r.body);

    let over = Daemon::start_with(|c| {
        c["volumes"]["quota"] = json!("loop");
        c["volumes"]["overcommit"] = json!(true);
    });
    let r = over.call("POST", "/volumes", Some(json!({"size_limit": past})));
    assert_eq!(r.status, 201, "overcommit lets a sparse image promise more: {}", r.body);
    let vol = r.json()["volume_id"].as_str().unwrap().to_string();
    assert_eq!(over.call("DELETE", &format!("/volumes/{vol}"), None).status, 200);
}

/// What lightd writes for a server is readable only by whom it is for, whatever the umask:
/// `install.sh` (run by root, may hold the operator's secrets) is root's alone; `entrypoint.sh`
/// is root's and readable by the server's group; their directory lets only that group in.
#[test]
fn lightds_scripts_are_readable_only_by_whom_they_are_for() {
    require_docker();
    let d = Daemon::start();
    let id = d.ready_container(
        "modes",
        "echo \"entrypoint readable: $(head -c 2 /app/data/entrypoint.sh)\"; sleep 1000",
        json!({"install_script": "echo installed", "user": "1000:1001", "crash_restart": false}),
    );
    let data = d.dir.0.join("data").join(&id);
    let mode = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    assert_eq!(mode(&data), (0o750, 0, 1001), "the data directory");
    assert_eq!(mode(&data.join("install.sh")), (0o700, 0, 0), "install.sh");
    assert_eq!(mode(&data.join("entrypoint.sh")), (0o640, 0, 1001), "entrypoint.sh");
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_line(&id, "entrypoint readable: #!");
    assert_eq!(d.act(&id, "kill"), 202);
    d.wait_state(&id, "offline", 30);
}
