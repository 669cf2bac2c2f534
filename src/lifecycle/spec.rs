//! From a checked [`ContainerRecord`] to the Docker Engine's container spec (and the
//! entrypoint script it runs). Pure: the request is checked in `request.rs`, where mount
//! sources lead is `mounts.rs`'s to judge, the network is `network.rs`'s.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::mounts::Bind;
use crate::config::Config;
use crate::model::ContainerRecord;

/// Where the volume and the data directory appear inside the container.
pub const HOME: &str = "/home/container";
pub const DATA: &str = "/app/data";
/// The only capabilities a server keeps: what game servers and their install scripts need to
/// own files, switch users and signal their children. No MKNOD (device nodes), no NET_RAW
/// (raw sockets), no SYS_* of any kind.
pub const CAPABILITIES: [&str; 7] = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL", "NET_BIND_SERVICE"];
/// Which of a server's two containers a spec is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server itself: its user, its ports, a read-only root file system.
    Server,
    /// The one-shot install container: root, no ports, a writable root (installers apt-get).
    Install,
}

impl Role {
    /// The `lightd.role` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Install => "install",
        }
    }
}

/// What one Docker container of a server runs.
pub struct RunSpec<'a> {
    pub cmd: Vec<String>,
    /// `uid:gid` it runs as: the server's user, or root for the install script.
    pub user: &'a str,
    pub volume_path: &'a Path,
    pub data_dir: &'a Path,
    /// The record's custom mounts, verified just before (`mounts::verify`).
    pub mounts: &'a [Bind],
    pub role: Role,
    /// Id of the network to join (`containers.default_network`, resolved).
    pub network: &'a str,
    /// The daemon's instance id (a label, so daemons sharing an engine never mix).
    pub instance: &'a str,
}

impl<'a> RunSpec<'a> {
    /// The server container: runs `entrypoint.sh`, publishes the record's ports.
    pub fn server(
        rec: &'a ContainerRecord,
        volume_path: &'a Path,
        data_dir: &'a Path,
        mounts: &'a [Bind],
        network: &'a str,
        instance: &'a str,
    ) -> RunSpec<'a> {
        let cmd = vec!["/bin/sh".into(), format!("{DATA}/entrypoint.sh")];
        RunSpec { cmd, user: &rec.user, volume_path, data_dir, mounts, role: Role::Server, network, instance }
    }

    /// The one-shot install container: runs `install.sh` from the volume as root (game
    /// installers need to), publishes nothing.
    pub fn install(
        volume_path: &'a Path,
        data_dir: &'a Path,
        mounts: &'a [Bind],
        network: &'a str,
        instance: &'a str,
    ) -> RunSpec<'a> {
        let cmd = vec!["/bin/sh".into(), "-c".into(), format!("cd {HOME} && exec {DATA}/install.sh")];
        RunSpec { cmd, user: "0:0", volume_path, data_dir, mounts, role: Role::Install, network, instance }
    }
}

/// Where the install script's `HOME` is: root's own, in the install container's throwaway
/// root file system, never the volume (dotfiles a tenant planted there, `.curlrc`, `.wgetrc`,
/// `.npmrc`, would steer the operator's script, which runs as root).
pub const INSTALL_HOME: &str = "/root";

/// The env a container sees: `env`, plus `SERVER_IP`, `SERVER_PORT` (the first port, as the
/// server sees it inside its container), `SERVER_MEMORY` (MiB) unless `env` sets them; `HOME`
/// is the volume for the server (unless `env` says otherwise) and [`INSTALL_HOME`] for the
/// install script whatever `env` says. `TINI_KILL_PROCESS_GROUP` is always set: the init
/// process then forwards a stop signal to the whole process group of the command it runs
/// (see [`entrypoint_script`]).
pub fn server_env(rec: &ContainerRecord, role: Role) -> Vec<String> {
    let mut env = rec.env.clone();
    match role {
        // A uid without a passwd entry in the image would get `/` as its home.
        Role::Server => {
            env.entry("HOME".into()).or_insert_with(|| HOME.into());
        }
        Role::Install => {
            env.insert("HOME".into(), INSTALL_HOME.into());
        }
    }
    if let Some(p) = rec.ports.first() {
        env.entry("SERVER_IP".into()).or_insert_with(|| p.ip.to_string());
        env.entry("SERVER_PORT".into()).or_insert_with(|| p.inner_port().to_string());
    }
    if let Some(m) = rec.limits.memory {
        env.entry("SERVER_MEMORY".into()).or_insert_with(|| (m >> 20).to_string());
    }
    // tini reads only whether it is set; a value from `env` cannot turn it off.
    env.insert("TINI_KILL_PROCESS_GROUP".into(), "1".into());
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The Engine API body of `POST /containers/create` for `rec`.
pub fn container_spec(rec: &ContainerRecord, config: &Config, run: &RunSpec) -> Value {
    let mut mounts = vec![
        json!({"Type": "bind", "Source": run.volume_path, "Target": HOME, "ReadOnly": false}),
        json!({"Type": "bind", "Source": run.data_dir, "Target": DATA, "ReadOnly": true}),
    ];
    for Bind { target, source, rw } in run.mounts {
        mounts.push(json!({"Type": "bind", "Source": source, "Target": target, "ReadOnly": !rw,
                           "BindOptions": {"Propagation": "rprivate"}}));
    }
    let mut exposed = Map::new();
    let mut bindings: Map<String, Value> = Map::new();
    if run.role == Role::Server {
        for p in &rec.ports {
            let key = format!("{}/{}", p.inner_port(), p.protocol.as_str());
            exposed.insert(key.clone(), json!({}));
            let host = json!({"HostIp": p.ip.to_string(), "HostPort": p.port.to_string()});
            match bindings.get_mut(&key).and_then(Value::as_array_mut) {
                Some(list) => list.push(host),
                None => {
                    bindings.insert(key, json!([host]));
                }
            }
        }
    }
    let mut host = json!({
        "Mounts": mounts,
        "PortBindings": bindings,
        "PidsLimit": config.containers.pids_limit,
        "SecurityOpt": ["no-new-privileges"],
        "CapDrop": ["ALL"],
        "CapAdd": CAPABILITIES,
        "NetworkMode": run.network,
        "Init": true,
        "RestartPolicy": {"Name": "no"},
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
    });
    if run.role == Role::Server {
        // Nothing but the volume (quota-bound) and a sized tmpfs is writable, so a server
        // cannot fill the host's disk through its container's layer. `exec`: servers (the
        // JVM's native libraries) load code they unpack into /tmp.
        host["ReadonlyRootfs"] = json!(true);
        let tmp = format!("rw,exec,nosuid,nodev,size={},mode=1777", config.tmpfs_size());
        host["Tmpfs"] = json!({"/tmp": tmp});
    }
    if let Some(m) = rec.limits.memory {
        host["Memory"] = json!(m);
        host["MemorySwap"] = json!(m);
    }
    if let Some(c) = rec.limits.cpu {
        host["NanoCpus"] = json!((c * 1e9).round() as i64);
    }
    json!({
        "Image": rec.image,
        "Cmd": run.cmd,
        "User": run.user,
        "WorkingDir": HOME,
        "Env": server_env(rec, run.role),
        "OpenStdin": true,
        "StdinOnce": false,
        "AttachStdin": true,
        "AttachStdout": true,
        "AttachStderr": true,
        "Tty": false,
        "ExposedPorts": exposed,
        "Labels": {"lightd.managed": "true", "lightd.internal_id": rec.internal_id, "lightd.role": run.role.as_str(),
                   "lightd.instance": run.instance, "lightd.record": rec.record_id},
        "HostConfig": host,
    })
}

/// Quotes `s` for a POSIX shell: `'...'` with each `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The startup command of a server whose record has none (the seed form without one): the
/// image's own `Cmd`, each word quoted. Docker still puts the image's `Entrypoint` in front
/// of the container's command, as it does for `docker run`.
pub fn image_command(cmd: &[String]) -> std::result::Result<String, String> {
    if cmd.is_empty() {
        return Err("the image has no command (Cmd) of its own; give startup_command".into());
    }
    Ok(cmd.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" "))
}

/// The signals a stop may send (SIGTERM; SIGINT or SIGHUP where an image's `StopSignal` says
/// so) that the shell running the startup command waits out (see [`entrypoint_script`]).
pub const STOP_SIGNALS: &str = "TERM INT HUP";

/// `/app/data/entrypoint.sh`: runs the startup command from the volume, in a shell that is
/// the child of the container's init (`docker-init`, which is tini), so that a stop signal
/// reaches the server process itself however the command is written (one command, a
/// pipeline, a wrapper script like `sh run.sh`) and whichever shell `/bin/sh` is:
///
/// - tini runs its child in a process group of its own and, with `TINI_KILL_PROCESS_GROUP`
///   set (see [`server_env`]), forwards a signal to that whole group: the shell, the server,
///   a wrapper script and what it runs, every command of a pipeline, as Ctrl-C in a terminal
///   does. (A process that moves to a group of its own, `setsid`, is out of its reach.)
/// - The shell traps the stop signals with `exit $?`. A shell runs a trap only once its
///   foreground command has ended, so it neither dies at once (dash does not exec a `-c`
///   command it still has a trap for, nor `sh run.sh` at all: without the trap the shell died
///   with 143, tini and the whole PID namespace with it, and the server was SIGKILLed
///   unsaved) nor outlives the server (a no-op trap would let `while :; do ./srv; done` run
///   on): it exits with the status of the command the signal ended, the server's own for one
///   command or a wrapper script (0 for one that saved and exited 0), the last command's for
///   a pipeline (so `srv | tee log` reports tee's 143), as any shell does.
/// - A trap that catches a signal is reset to the default in every command the shell starts,
///   so the server (or its wrapper script) can trap TERM itself and save.
pub fn entrypoint_script(startup_command: &str) -> String {
    let script = format!("trap 'exit $?' {STOP_SIGNALS}\n{startup_command}");
    format!(
        "#!/bin/sh\n# Written by lightd: runs the startup command from the volume. A stop signal reaches its\n\
         # whole process group (TINI_KILL_PROCESS_GROUP); this shell waits for the command and exits\n\
         # with its status.\ncd {HOME} || exit 1\nexec /bin/sh -c {}\n",
        shell_quote(&script)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::request::*;
    use crate::model::InstallState;

    fn req() -> CreateRequest {
        serde_json::from_value(json!({
            "internal_id": "srv-1", "image": "lightd-test/busybox", "volume_id": "d6764075-c5f1-4045-9fb3-85315b85cb0f",
            "startup_command": "echo hi", "ports": [{"ip": "0.0.0.0", "port": 25565}],
            "limits": {"memory": 536870912u64, "cpu": 0.5}, "env": {"A": "1"}
        }))
        .unwrap()
    }

    #[test]
    fn record_and_spec() {
        let config = Config::default();
        let rec = check_create(req(), &config).unwrap();
        assert_eq!(rec.install_state, InstallState::Installing);
        let run = RunSpec::server(&rec, Path::new("/v"), Path::new("/d"), &[], "n1", "i1");
        let spec = container_spec(&rec, &config, &run);
        assert_eq!(spec["HostConfig"]["PortBindings"]["25565/tcp"][0]["HostPort"], "25565");
        assert_eq!(spec["HostConfig"]["NanoCpus"], 500_000_000);
        assert_eq!(spec["HostConfig"]["Memory"], 536870912u64);
        assert_eq!(spec["HostConfig"]["Mounts"][1]["ReadOnly"], true);
        assert_eq!(spec["Labels"]["lightd.managed"], "true");
        let env: Vec<&str> = spec["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(
            env,
            vec![
                "A=1",
                "HOME=/home/container",
                "SERVER_IP=0.0.0.0",
                "SERVER_MEMORY=512",
                "SERVER_PORT=25565",
                "TINI_KILL_PROCESS_GROUP=1"
            ]
        );
        assert_eq!(spec["User"], "1000:1000");
        assert_eq!(spec["HostConfig"]["ReadonlyRootfs"], true);
        assert_eq!(spec["HostConfig"]["Tmpfs"], json!({"/tmp": "rw,exec,nosuid,nodev,size=104857600,mode=1777"}));
        let run = RunSpec::install(Path::new("/v"), Path::new("/d"), &[], "n1", "i1");
        let install = container_spec(&rec, &config, &run);
        assert_eq!(install["HostConfig"]["PortBindings"], json!({}));
        assert_eq!(install["HostConfig"]["ReadonlyRootfs"], Value::Null, "installers write their root");
        assert_eq!(install["User"], "0:0");
    }

    #[test]
    fn the_install_scripts_home_is_never_the_volume() {
        let mut rec = check_create(req(), &Config::default()).unwrap();
        rec.env.insert("HOME".into(), HOME.into());
        assert!(server_env(&rec, Role::Install).contains(&format!("HOME={INSTALL_HOME}")));
        assert!(server_env(&rec, Role::Server).contains(&format!("HOME={HOME}")));
        rec.env.insert("TINI_KILL_PROCESS_GROUP".into(), String::new());
        assert!(server_env(&rec, Role::Server).contains(&"TINI_KILL_PROCESS_GROUP=1".to_string()));
    }

    #[test]
    fn custom_mounts_go_in_as_verified() {
        let config = Config::default();
        let rec = check_create(req(), &config).unwrap();
        let binds = [
            Bind { target: "/maps".into(), source: "/srv/maps".into(), rw: false },
            Bind { target: "/rw".into(), source: "/srv/rw".into(), rw: true },
        ];
        let run = RunSpec::server(&rec, Path::new("/v"), Path::new("/d"), &binds, "n1", "i1");
        let mounts = container_spec(&rec, &config, &run)["HostConfig"]["Mounts"].clone();
        assert_eq!(mounts[2]["Source"], "/srv/maps");
        assert_eq!(mounts[2]["ReadOnly"], true);
        assert_eq!(mounts[3]["Target"], "/rw");
        assert_eq!(mounts[3]["ReadOnly"], false);
    }

    #[test]
    fn a_mapped_port_is_published_to_its_container_port() {
        let config = Config::default();
        let mut rec = check_create(req(), &config).unwrap();
        rec.ports[0].container_port = Some(80);
        let run = RunSpec::server(&rec, Path::new("/v"), Path::new("/d"), &[], "n1", "i1");
        let spec = container_spec(&rec, &config, &run);
        assert_eq!(spec["HostConfig"]["PortBindings"], json!({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "25565"}]}));
        assert_eq!(spec["ExposedPorts"], json!({"80/tcp": {}}));
        assert!(
            server_env(&rec, Role::Server).contains(&"SERVER_PORT=80".to_string()),
            "the port the server listens on"
        );
    }

    #[test]
    fn an_empty_startup_command_only_where_the_image_gives_one() {
        let config = Config::default();
        let mut r = req();
        r.startup_command = String::new();
        assert!(check_create(r, &config).unwrap_err().to_string().contains("startup_command"));
        let mut r = req();
        (r.startup_command, r.image_command) = (String::new(), true);
        assert_eq!(check_create(r, &config).unwrap().startup_command, "");
        let cmd = ["nginx".to_string(), "-g".to_string(), "daemon off;".to_string()];
        assert_eq!(image_command(&cmd).unwrap(), "'nginx' '-g' 'daemon off;'");
        assert!(image_command(&[]).unwrap_err().contains("give startup_command"));
    }

    #[test]
    fn bad_fields() {
        let config = Config::default();
        type Edit = Box<dyn Fn(&mut CreateRequest)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|r| r.internal_id = ".x".into()), "internal_id"),
            (Box::new(|r| r.image = "bad image".into()), "image"),
            (Box::new(|r| r.volume_id = "not a name!".into()), "volume_id"),
            (Box::new(|r| r.startup_command = " ".into()), "startup_command"),
            (Box::new(|r| r.start_pattern = Some("(".into())), "start_pattern"),
            (Box::new(|r| r.limits.memory = Some(0)), "limits.memory"),
            (Box::new(|r| r.limits.cpu = Some(-1.0)), "limits.cpu"),
            (Box::new(|r| r.limits.cpu = Some(f64::NAN)), "limits.cpu"),
            (Box::new(|r| r.ports.push(r.ports[0])), "twice"),
            (
                Box::new(|r| {
                    r.mount.insert("/data".into(), "/etc/../root".into());
                }),
                "mount source",
            ),
            (
                Box::new(|r| {
                    r.mount.insert("rel".into(), "/etc".into());
                }),
                "mount target",
            ),
            (
                Box::new(|r| {
                    r.mount.insert("/home/container/x".into(), "/etc".into());
                }),
                "overlaps",
            ),
            (
                Box::new(|r| {
                    r.env.insert("A=B".into(), "1".into());
                }),
                "env",
            ),
        ];
        for (edit, needle) in cases {
            let mut r = req();
            edit(&mut r);
            let e = check_create(r, &config).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let script = entrypoint_script("bash -c 'echo hi'");
        assert!(script.contains(r"exec /bin/sh -c 'trap '\''exit $?'\'' TERM INT HUP"), "{script}");
        assert!(script.ends_with("HUP\nbash -c '\\''echo hi'\\'''\n"), "{script}");
        assert!(check_image("ubuntu:22.04", &[]).is_ok());
        assert!(check_image("127.0.0.1:5000/a/b:1", &["127.0.0.1:5000".into()]).is_ok());
        assert!(check_image("ubuntu:22.04", &["127.0.0.1:5000".into()]).unwrap_err().to_string().contains("docker.io"));
        assert!(check_image("-rm", &[]).is_err());
    }
}
