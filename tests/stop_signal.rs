//! The default stop (SIGTERM, no `stop_command`) reaches the server process itself however
//! the startup command is written (a wrapper script, a pipeline) and whichever shell the
//! image's `/bin/sh` is: dash (the Debian freeciv image), busybox (the test image) and bash.
//! The server is a script that saves on TERM (writes a file) and exits 0, as game wrappers do;
//! if the signal stops at a shell, the server is SIGKILLed after `cleanup_timeout` unsaved.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::{json, Value};

const FREECIV: &str = "lightd-test/freeciv";

/// A server that saves on TERM and exits 0; "ready" once its trap is set.
const RUN_SH: &str =
    "trap 'echo saved > /home/container/saved; exit 0' TERM\necho ready\nwhile true; do sleep 1; done\n";

fn require_image(image: &str) {
    let ok = docker_cli().args(["image", "inspect", image]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        matches!(ok, Ok(s) if s.success()),
        "image {image} missing: run `bash scripts/setup.sh` (the test command does)"
    );
}

/// A server of `image` running `command` (with `run.sh` in its volume) is started, then gets a
/// default stop. Returns its record once offline, and what its `saved` file holds.
fn stop_it(d: &Daemon, image: &str, name: &str, command: &str) -> (Value, Option<String>) {
    let (vol, _) = d.new_volume();
    d.put_file(&vol, "run.sh", RUN_SH.as_bytes());
    let id = d.id(name);
    let body = json!({"internal_id": id, "image": image, "volume_id": vol, "startup_command": command,
                      "start_pattern": "^ready$", "crash_restart": false});
    let r = d.call("POST", "/containers", Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(d.wait_installed(&id, 120)["install_state"], "ready");
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 30);
    assert_eq!(d.act(&id, "stop"), 202);
    let rec = wait_for(30, &format!("{id} to stop"), || {
        Some(d.record(&id)).filter(|v| v["state"] == "offline" && v["last_exit"].is_object())
    });
    let saved = d.get(&format!("/volumes/{vol}/files/content?path=saved"));
    (rec, (saved.status == 200).then_some(saved.body))
}

/// Checks one image: `sh /home/container/run.sh` saves and exits 0; in a pipeline it saves
/// too, and the exit is the pipeline's (its last command's: `cat`, ended by the same signal).
fn saves_on_stop(image: &str, tag: &str) {
    let d = Daemon::start();
    let (rec, saved) = stop_it(&d, image, &format!("{tag}-script"), "sh /home/container/run.sh");
    assert_eq!(saved.as_deref(), Some("saved\n"), "{image}: the wrapper script got the signal and saved: {rec}");
    assert_eq!(rec["last_exit"]["code"], 0, "{image}: the script's own exit status: {rec}");

    let (rec, saved) = stop_it(&d, image, &format!("{tag}-pipe"), "sh run.sh | cat");
    assert_eq!(saved.as_deref(), Some("saved\n"), "{image}: the script in a pipeline saved: {rec}");
    assert_eq!(rec["last_exit"]["code"], 143, "{image}: a pipeline's status is its last command's: {rec}");
}

#[test]
fn a_wrapper_script_saves_on_a_default_stop_under_dash() {
    require_docker();
    require_image(FREECIV);
    saves_on_stop(FREECIV, "dash");
}

#[test]
fn a_wrapper_script_saves_on_a_default_stop_under_busybox() {
    require_docker();
    saves_on_stop(IMAGE, "busybox");
}

/// An image of this test's own: the freeciv image with `/bin/sh` pointing at bash, removed
/// (with the container it was made from) when dropped.
struct BashImage(String);

impl BashImage {
    fn make() -> BashImage {
        let name = format!("lightd-test/bash-sh:{}", std::process::id());
        let maker = format!("lightd-test-bash-sh-{}", std::process::id());
        docker(&["run", "--name", &maker, FREECIV, "ln", "-sf", "bash", "/bin/sh"]);
        let committed = docker_cli()
            .args(["commit", "--change", r#"CMD ["/bin/sh"]"#, &maker, &name])
            .output()
            .expect("run docker");
        let _ = docker_cli().args(["rm", "-f", &maker]).output();
        assert!(committed.status.success(), "docker commit: {}", String::from_utf8_lossy(&committed.stderr));
        let image = BashImage(name);
        let sh = docker(&["run", "--rm", &image.0, "readlink", "/bin/sh"]);
        assert_eq!(sh.trim(), "bash", "the image's /bin/sh is bash");
        image
    }
}

impl Drop for BashImage {
    fn drop(&mut self) {
        let _ = docker_cli().args(["rmi", "-f", &self.0]).output();
    }
}

#[test]
fn a_wrapper_script_saves_on_a_default_stop_under_bash() {
    require_docker();
    require_image(FREECIV);
    let image = BashImage::make();
    saves_on_stop(&image.0, "bash");
}
