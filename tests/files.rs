//! The files API against the real daemon and engine: every route, the confinement rule with
//! a server planting links and racing the daemon, archives refused entry by entry, and size
//! limits the kernel enforces.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// A raw request with a byte body (the JSON helper sends JSON only).
fn put(d: &Daemon, path: &str, body: &[u8], extra: &[(&str, &str)]) -> Resp {
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(d.port, &bytes).unwrap()
}

/// GET returning the raw body bytes (binary safe) and the headers.
fn get_bytes(d: &Daemon, path: &str, extra: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).collect();
    let mut body = buf[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = unchunk(&body);
    }
    (status, headers, body)
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let n = usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).expect("chunk size");
        b = &b[line_end + 2..];
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[..n]);
        assert_eq!(&b[n..n + 2], b"\r\n");
        b = &b[n + 2..];
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Every route of the files API, as a panel uses it.
#[test]
fn every_files_route() {
    let d = Daemon::start();
    let r = d.call("POST", "/volumes", Some(json!({"name": "world", "size_limit": "64MB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let v = |p: &str| format!("/volumes/world{p}");
    // Write: 201 new, 200 replaced; parents made; any content type; not bound by 1 MiB.
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let r = put(&d, &v("/files/content?path=maps/big.bin"), &big, &[]);
    assert_eq!((r.status, r.json()), (201, json!({"path": "maps/big.bin", "size": big.len()})));
    let r = put(&d, &v("/files/content?path=server.properties"), b"motd=hi\n", &[]);
    assert_eq!(r.status, 201);
    let r = put(&d, &v("/files/content?path=server.properties"), b"motd=hello\n", &[]);
    assert_eq!((r.status, r.json()["size"].clone()), (200, json!(11)));
    // Read, whole and by range, and as a download.
    let (status, h, body) = get_bytes(&d, &v("/files/content?path=maps/big.bin"), &[]);
    assert_eq!((status, body == big), (200, true));
    assert_eq!(header(&h, "content-type"), Some("application/octet-stream"));
    assert_eq!(header(&h, "accept-ranges"), Some("bytes"));
    let (status, h, body) = get_bytes(&d, &v("/files/content?path=maps/big.bin"), &[("Range", "bytes=100-199")]);
    assert_eq!((status, &body[..]), (206, &big[100..200]));
    assert_eq!(header(&h, "content-range"), Some(format!("bytes 100-199/{}", big.len()).as_str()));
    let (status, _, body) = get_bytes(&d, &v("/files/content?path=server.properties"), &[("Range", "bytes=-6")]);
    assert_eq!((status, &body[..]), (206, &b"hello\n"[..]));
    let (status, h, _) = get_bytes(&d, &v("/files/content?path=server.properties"), &[("Range", "bytes=99-")]);
    assert_eq!((status, header(&h, "content-range")), (416, Some("bytes */11")));
    let (_, h, _) = get_bytes(&d, &v("/files/content?path=server.properties&download=1"), &[]);
    assert_eq!(header(&h, "content-disposition"), Some("attachment; filename=\"server.properties\""));
    // List and stat.
    let l = d.get(&v("/files?path=/")).json();
    let names: Vec<&str> = l["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["maps", "server.properties"]);
    assert_eq!(l["entries"][0]["type"], "dir");
    let s = d.get(&v("/files/stat?path=maps/big.bin")).json();
    assert_eq!(
        (s["type"].clone(), s["size"].clone(), s["mode"].clone()),
        (json!("file"), json!(big.len()), json!("0644"))
    );
    assert!(s["modified"].as_u64().unwrap() > 1_700_000_000);
    // mkdir, rename, copy, chmod, delete.
    assert_eq!(d.call("POST", &v("/files/mkdir"), Some(json!({"path": "plugins/a/b"}))).status, 201);
    assert_eq!(d.call("POST", &v("/files/mkdir"), Some(json!({"path": "plugins/a/b"}))).status, 409);
    let r = d.call("POST", &v("/files/rename"), Some(json!({"from": "server.properties", "to": "maps"})));
    assert_eq!(r.status, 409, "{}", r.body);
    let r = d.call("POST", &v("/files/rename"), Some(json!({"from": "server.properties", "to": "plugins/s.props"})));
    assert_eq!((r.status, r.json()), (200, json!({"path": "plugins/s.props"})));
    assert_eq!(d.call("POST", &v("/files/mkdir"), Some(json!({"path": "backup"}))).status, 201);
    let r = d.call("POST", &v("/files/copy"), Some(json!({"from": "plugins", "to": "backup/plugins"})));
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, _, body) = get_bytes(&d, &v("/files/content?path=backup/plugins/s.props"), &[]);
    assert_eq!(body, b"motd=hello\n");
    let r = d.call("POST", &v("/files/chmod"), Some(json!({"path": "plugins/s.props", "mode": "0600"})));
    assert_eq!((r.status, r.json()), (200, json!({"path": "plugins/s.props", "mode": "0600"})));
    for mode in ["4755", "2755", "1777", "999", "rwx"] {
        let r = d.call("POST", &v("/files/chmod"), Some(json!({"path": "plugins/s.props", "mode": mode})));
        assert_eq!(r.status, 400, "{mode}: {}", r.body);
    }
    let r = d.call("POST", &v("/files/delete"), Some(json!({"paths": ["backup", "plugins/s.props"]})));
    assert_eq!((r.status, r.json()), (200, json!({"deleted": 2})));
    assert_eq!(d.get(&v("/files/stat?path=backup")).status, 404);
    // Archive a directory and extract it elsewhere: the same tree comes back.
    let (status, h, tgz) = get_bytes(&d, &v("/archive?path=maps"), &[]);
    assert_eq!((status, header(&h, "content-type")), (200, Some("application/gzip")));
    let end = jobs::extract(&d, "world", "path=restored", &tgz);
    assert_eq!((&end["state"], &end["extracted"]), (&json!("done"), &json!(1)), "{end}");
    let (_, _, body) = get_bytes(&d, &v("/files/content?path=restored/big.bin"), &[]);
    assert!(body == big);
    // Errors: missing, bad path, bad JSON, bad volume.
    assert_eq!(d.get(&v("/files/content?path=nope")).error(), "File not found");
    assert_eq!(d.get(&v("/files/content?path=maps")).status, 400, "a directory is not content");
    let r = d.get(&v("/files?path=../../etc"));
    assert_eq!((r.status, r.error().as_str()), (400, "Path escapes the volume"));
    assert_eq!(d.call("POST", &v("/files/mkdir"), Some(json!({"path": "x", "mode": 1}))).status, 400);
    assert_eq!(d.get("/volumes/nowhere/files").status, 404);
    assert_eq!(d.get("/volumes/not a name/files").status, 400);
}

/// A tar built by hand, so names the tar crate would refuse (`..`, absolute) can be made.
struct Tar(Vec<u8>);

impl Tar {
    fn new() -> Tar {
        Tar(Vec::new())
    }

    fn entry(mut self, name: &str, kind: u8, link: &str, data: &[u8]) -> Tar {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }

    fn done(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// An archive with an entry that escapes or cannot be made safely is refused whole (its job
/// fails naming the entry); nothing of it is extracted.
#[test]
fn hostile_archives_are_refused_entry_by_entry() {
    let d = Daemon::start();
    let (vol, path) = d.new_volume();
    std::os::unix::fs::symlink("/etc", path.join("etc-link")).unwrap();
    for (tar, needle) in [
        (Tar::new().entry("ok.txt", b'0', "", b"ok").entry("../escape.txt", b'0', "", b"x").done(), "../escape.txt"),
        (Tar::new().entry("/abs.txt", b'0', "", b"x").done(), "/abs.txt"),
        (Tar::new().entry("l", b'2', "/etc", b"").entry("l/passwd", b'0', "", b"x").done(), "l/passwd"),
        (Tar::new().entry("etc-link/cron.x", b'0', "", b"x").done(), "etc-link/cron.x"),
        (Tar::new().entry("disk", b'3', "", b"").done(), "disk"),
        (Tar::new().entry("fifo", b'6', "", b"").done(), "fifo"),
        (Tar::new().entry("a", b'0', "", b"x").entry("hard", b'1', "a", b"").done(), "hard"),
    ] {
        let before = snapshot(&path);
        let end = jobs::extract(&d, &vol, "", &tar);
        assert_eq!(end["state"], "failed", "{needle}: {end}");
        let error = end["error"].as_str().unwrap();
        assert!(error.contains(needle), "{needle}: {error}");
        assert_eq!(snapshot(&path), before, "{needle}: nothing of the archive was extracted");
    }
    assert!(!Path::new("/etc/cron.x").exists() && !path.parent().unwrap().join("escape.txt").exists());
    let before = snapshot(&path);
    let r = jobs::post_bytes(&d, &format!("/volumes/{vol}/extract"), b"not an archive at all");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(snapshot(&path), before, "not an archive: the volume is unchanged");
    let good = Tar::new().entry("dir/", b'5', "", b"").entry("dir/f.txt", b'0', "", b"fine").done();
    let end = jobs::extract(&d, &vol, "", &good);
    assert_eq!((&end["state"], &end["extracted"]), (&json!("done"), &json!(2)), "{end}");
    assert_eq!(std::fs::read(path.join("dir/f.txt")).unwrap(), b"fine");
}

/// Snapshot of a directory tree outside the volume: names, kinds, modes, contents.
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let content = if meta.is_file() { std::fs::read(e.path()).unwrap() } else { Vec::new() };
            out.insert(rel, (meta.permissions().mode(), content));
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// A server plants every kind of link (absolute, relative, to `/etc`, to another volume, to a
/// marker outside, a loop) and swaps a directory for a symlink to `/` in a tight loop, while
/// the test drives every route through those paths: nothing outside the volume is ever read,
/// changed or listed.
#[test]
fn a_hostile_server_cannot_reach_outside_its_volume() {
    require_docker();
    let outside = TempDir::new("outside");
    std::fs::write(outside.0.join("secret"), b"outside-secret\n").unwrap();
    std::fs::create_dir(outside.0.join("dir")).unwrap();
    std::fs::write(outside.0.join("dir").join("inner"), b"inner-secret\n").unwrap();
    std::fs::set_permissions(outside.0.join("secret"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = snapshot(&outside.0);
    let d = Daemon::start();
    let (other_vol, other_path) = d.new_volume();
    std::fs::write(other_path.join("theirs"), b"other-volume\n").unwrap();
    let out = outside.0.display().to_string();
    let plant = format!(
        "cd /home/container; ln -s /etc etc; ln -s ../../../../../../.. up; ln -s {out} out; \
         ln -s {out}/secret secret; ln -s {} other; ln -s loop2 loop1; ln -s loop1 loop2; \
         mkdir -p real/sub; echo mine > real/sub/f; mkdir swap; echo ok > swap/f; echo planted; \
         while true; do mv swap swap.d; ln -s / swap; rm swap; mv swap.d swap; done",
        other_path.display()
    );
    let id = d.ready_container("hostile", &plant, json!({}));
    let vol = d.record(&id)["volume_id"].as_str().unwrap().to_string();
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_line(&id, "planted");
    let v = |p: &str| format!("/volumes/{vol}{p}");
    let leaked =
        |text: &str| ["outside-secret", "inner-secret", "other-volume", "root:x:0:0"].iter().any(|s| text.contains(s));
    let targets =
        ["etc/passwd", "up/etc/passwd", "out/secret", "secret", "other/theirs", "loop1", "swap/f", "swap/etc/passwd"];
    // Where a write through `swap` (a link to `/` half the time), `etc` or `up/etc` would land
    // if it escaped; none may ever exist.
    let escaped = |round: u32| -> Vec<String> {
        let mut found: Vec<String> = ["/", "/etc/"]
            .iter()
            .flat_map(|dir| ["planted", "mk", "cp"].map(|what| format!("{dir}{what}-{round}")))
            .chain(["/x.txt".to_string()])
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .collect();
        found.sort();
        found
    };
    for round in 0..40 {
        // The control: the routes serve the volume's own files meanwhile (a daemon refusing
        // everything would pass every check below).
        let (status, _, body) = get_bytes(&d, &v("/files/content?path=real/sub/f"), &[]);
        assert_eq!((status, body.as_slice()), (200, &b"mine\n"[..]), "round {round}: the volume's own file");
        let listed = d.get(&v("/files?path=real"));
        assert_eq!(listed.status, 200, "{}", listed.body);
        assert_eq!(listed.json()["entries"][0]["name"], "sub", "{}", listed.body);
        for t in targets {
            let (status, _, body) = get_bytes(&d, &v(&format!("/files/content?path={t}")), &[]);
            assert!(status < 500, "{t}: {status}");
            assert!(!leaked(&String::from_utf8_lossy(&body)), "read through {t}: {}", String::from_utf8_lossy(&body));
            for route in ["/files?path=", "/files/stat?path="] {
                let r = d.get(&v(&format!("{route}{t}")));
                assert!(r.status < 500 && !leaked(&r.body), "{route}{t}: {} {}", r.status, r.body);
            }
            let dir = t.rsplit_once('/').map_or(t, |(d, _)| d);
            let r = put(&d, &v(&format!("/files/content?path={dir}/planted-{round}")), b"x", &[]);
            assert!(r.status < 500, "write under {dir}: {}", r.body);
            for (route, body) in [
                ("/files/chmod", json!({"path": t, "mode": "0777"})),
                ("/files/mkdir", json!({"path": format!("{dir}/mk-{round}")})),
                ("/files/copy", json!({"from": t, "to": format!("copied-{round}"), "overwrite": true})),
                ("/files/copy", json!({"from": "real", "to": format!("{dir}/cp-{round}"), "overwrite": true})),
                ("/files/rename", json!({"from": format!("{dir}/planted-{round}"), "to": format!("moved-{round}")})),
            ] {
                let r = d.call("POST", &v(route), Some(body.clone()));
                assert!(r.status < 500, "{route} {body}: {} {}", r.status, r.body);
            }
            // Before the delete below could remove what an escaped mkdir or copy made.
            assert_eq!(escaped(round), Vec::<String>::new(), "round {round}, {t}: written outside the volume");
            let body = json!({"paths": [format!("{dir}/mk-{round}"), format!("{dir}/cp-{round}"), "out/secret"]});
            let r = d.call("POST", &v("/files/delete"), Some(body.clone()));
            assert!(r.status < 500, "/files/delete {body}: {} {}", r.status, r.body);
        }
        let (status, _, tgz) = get_bytes(&d, &v("/archive?path=/"), &[]);
        assert!(status == 200 || status == 400, "archive: {status}");
        let mut text = Vec::new();
        let _ = flate2::read::GzDecoder::new(&tgz[..]).read_to_end(&mut text);
        assert!(!leaked(&String::from_utf8_lossy(&text)), "the archive held something from outside");
        let tar = Tar::new().entry("swap/x.txt", b'0', "", b"x").done();
        let end = jobs::extract(&d, &vol, "", &tar);
        assert!(end["state"] == "done" || end["state"] == "failed", "{end}");
        assert!(!end["error"].as_str().unwrap_or_default().starts_with("file system error"), "{end}");
        assert_eq!(escaped(round), Vec::<String>::new(), "round {round}: the extract through swap landed outside");
    }
    assert_eq!(snapshot(&outside.0), before, "nothing outside the volume changed");
    assert_eq!(std::fs::read(other_path.join("theirs")).unwrap(), b"other-volume\n");
    assert_eq!(d.get(&format!("/volumes/{other_vol}/files")).json()["entries"].as_array().unwrap().len(), 1);
    assert_eq!(d.act(&id, "kill"), 202);
    d.wait_state(&id, "offline", 30);
    // Nothing from outside was copied in either: every plain file in the volume is its own.
    let home = d.get(&format!("/volumes/{vol}")).json()["path"].as_str().unwrap().to_string();
    for (name, (_, content)) in snapshot(Path::new(&home)) {
        assert!(!leaked(&String::from_utf8_lossy(&content)), "{name} in the volume holds what was outside it");
    }
}

/// The extract's check-then-move, raced on purpose rather than by luck: the server waits for
/// the staging directory to appear at its volume root (the check pass is over then), and swaps
/// the directory an entry goes into for a symlink to a directory outside the volume, while a
/// large entry keeps the write pass busy. Moving the staged tree in must not follow that link:
/// the job fails naming it, and nothing lands outside. Plain directory volumes (`quota:
/// none`), where nothing but that rule keeps the move inside. (The loop in
/// `a_hostile_server_cannot_reach_outside_its_volume` swaps blindly, and a daemon that followed
/// the link there passed 40 rounds of it: the swap rarely fell between check and move.) An
/// attempt whose swap came after the move is tried again; one whose swap came in time is the
/// control that the race was run.
#[test]
fn a_directory_swapped_for_a_link_after_the_check_is_not_followed() {
    require_docker();
    let outside = TempDir::new("outside");
    let out = outside.0.display().to_string();
    // Plain directory volumes: the outside directory is then on the volume's file system (a
    // loop volume is a file system of its own, where a followed link ends in EXDEV anyway).
    let d = Daemon::start_with(|c| c["volumes"]["quota"] = json!("none"));
    let script = format!(
        "cd /home/container; mkdir swap; echo ready; \
         while true; do for f in .lightd-tmp-*; do if [ -d \"$f\" ]; then \
         mv swap swap.d; ln -s {out} swap; echo swapped; \
         while [ -e \"$f\" ]; do usleep 2000; done; rm swap; mv swap.d swap; echo restored; \
         fi; done; usleep 1000; done"
    );
    let id = d.ready_container("swapper", &script, json!({"start_pattern": "ready"}));
    let vol = d.record(&id)["volume_id"].as_str().unwrap().to_string();
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_state(&id, "running", 30);
    let big = vec![0u8; 64 << 20];
    let tar = Tar::new().entry("swap/x.txt", b'0', "", b"x").entry("big.bin", b'0', "", &big).done();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let tgz = gz.finish().unwrap();
    // How many times the server swapped and put the directory back.
    let swaps = || {
        let lines = d.get(&format!("/containers/{id}/logs?tail=200")).json()["lines"].clone();
        let count = |what: &str| lines.as_array().map_or(0, |l| l.iter().filter(|l| *l == what).count());
        (count("swapped"), count("restored"))
    };
    let mut raced = None;
    for attempt in 1..=10 {
        let end = jobs::extract(&d, &vol, "", &tgz);
        let landed: Vec<_> = std::fs::read_dir(&outside.0).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(landed.is_empty(), "attempt {attempt}: the extract wrote outside the volume: {landed:?} ({end})");
        // The staging directory is gone: a swap made for it is undone at once. (One made as it
        // went may still come, and make the next attempt's check refuse the link: that is a
        // refusal of the link all the same.)
        wait_for(30, "the server to put its directory back", || {
            let (swapped, restored) = swaps();
            (swapped == restored).then_some(())
        });
        match end["state"].as_str() {
            // The swap came after the move: the race was not run, try again.
            Some("done") => continue,
            Some("failed") => {
                let error = end["error"].as_str().unwrap_or_default();
                assert!(error.contains("\"swap\"") && error.contains("symlink"), "attempt {attempt}: {end}");
                raced = Some(attempt);
                break;
            }
            _ => panic!("attempt {attempt}: {end}"),
        }
    }
    let attempt = raced.expect("in 10 attempts the server never swapped before the move");
    eprintln!("the swap fell between check and move on attempt {attempt}");
    assert_eq!(std::fs::read_dir(&outside.0).unwrap().count(), 0);
}

/// With `quota: loop`, a server writing past its limit gets ENOSPC, the host disk is not
/// touched, and the files API answers 507; growing the limit makes room.
#[test]
fn size_limits_are_enforced_by_the_kernel() {
    require_docker();
    let d = Daemon::start_with(|c| c["volumes"]["quota"] = json!("loop"));
    // Whether the kernel lets a mounted volume grow: CAP_SYS_RESOURCE (bit 24), which the
    // daemon inherits from this process. Read here, not from the daemon, whose start line
    // must agree.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).expect("CapEff in /proc/self/status");
    let online = u64::from_str_radix(caps.trim(), 16).unwrap() & (1 << 24) != 0;
    assert_eq!(d.log().contains("no CAP_SYS_RESOURCE"), !online, "the daemon's start line: {}", d.log());
    let r = d.call("POST", "/volumes", Some(json!({"size_limit": "32MB"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(v["quota"], "loop");
    let (vol, path) = (v["volume_id"].as_str().unwrap().to_string(), v["path"].as_str().unwrap().to_string());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounts.lines().find(|l| l.split(' ').nth(4) == Some(path.as_str())).expect("the volume is a mount");
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
    let body = json!({"internal_id": d.id("filler"), "image": IMAGE, "volume_id": vol,
                      "startup_command": "dd if=/dev/zero of=/home/container/fill bs=1M count=64 2>&1; echo dd-done; sleep 1000"});
    assert_eq!(d.call("POST", "/containers", Some(body)).status, 202);
    let id = d.id("filler");
    d.wait_installed(&id, 120);
    assert_eq!(d.act(&id, "start"), 202);
    d.wait_line(&id, "dd-done");
    let logs = d.get(&format!("/containers/{id}/logs?tail=20")).json()["lines"].to_string();
    assert!(logs.contains("No space left on device"), "{logs}");
    let used = d.get(&format!("/volumes/{vol}")).json()["used_bytes"].as_u64().unwrap();
    assert!(used <= 32 << 20, "used {used} within the 32 MiB limit");
    // The host holds only the image, and the image never more than the limit: the 64 MiB the
    // server tried to write went nowhere on the host (measuring the host's free space instead
    // would count whatever else runs on the machine).
    let image = d.dir.0.join("volumes/.images").join(format!("{vol}.ext4"));
    let allocated = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert!(allocated <= 33 << 20, "the image holds {allocated} bytes of a 32 MiB limit");
    let r = put(&d, &format!("/volumes/{vol}/files/content?path=more"), &vec![1u8; 1 << 20], &[]);
    assert_eq!(r.status, 507, "{}", r.body);
    assert_eq!(r.error(), "Volume is full (limit 32.0 MiB)");
    // Grow: online where the kernel lets lightd (CAP_SYS_RESOURCE), else only while unused.
    let r = d.call("PATCH", &format!("/volumes/{vol}"), Some(json!({"size_limit": "64MB"})));
    let r = if online {
        r
    } else {
        assert_eq!(r.status, 409, "{}", r.body);
        assert!(r.error().contains("CAP_SYS_RESOURCE"), "{}", r.error());
        assert_eq!(d.act(&id, "kill"), 202);
        d.wait_state(&id, "offline", 20);
        d.call("PATCH", &format!("/volumes/{vol}"), Some(json!({"size_limit": "64MB"})))
    };
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["size_limit_bytes"], 64u64 << 20);
    let r = put(&d, &format!("/volumes/{vol}/files/content?path=more"), &vec![1u8; 8 << 20], &[]);
    assert_eq!(r.status, 201, "{}", r.body);
    let r = d.call("PATCH", &format!("/volumes/{vol}"), Some(json!({"size_limit": "8MB"})));
    assert_eq!(r.status, 409, "below what is used: {}", r.body);
    // Deleting the volume unmounts it and removes its image.
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).status, 200);
    assert_eq!(d.call("DELETE", &format!("/volumes/{vol}"), None).status, 200);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&path), "unmounted");
    assert!(!d.dir.0.join("volumes/.images").join(format!("{vol}.ext4")).exists(), "image removed");
}

/// Volumes made before quotas (plain directories) keep working, as `none`.
#[test]
fn plain_directory_volumes_keep_working() {
    let mut d = Daemon::start_with(|c| c["volumes"]["quota"] = json!("none"));
    let r = d.call("POST", "/volumes", Some(json!({"name": "old"})));
    assert_eq!((r.status, r.json()["quota"].clone()), (201, json!("none")));
    assert_eq!(put(&d, "/volumes/old/files/content?path=a", b"abc", &[]).status, 201);
    d.stop();
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&d.config).unwrap()).unwrap();
    cfg["volumes"]["quota"] = json!("auto");
    std::fs::write(&d.config, cfg.to_string()).unwrap();
    d.spawn();
    let v = d.get("/volumes/old").json();
    assert_eq!((v["quota"].clone(), v["used_bytes"].clone()), (json!("none"), json!(3)));
}
