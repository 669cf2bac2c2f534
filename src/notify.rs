//! Service-manager readiness notification (the sd_notify protocol) without libsystemd.
//!
//! Under systemd with `Type=notify` (dist/lightd.service), `$NOTIFY_SOCKET` names a Unix datagram
//! socket: a path, or an abstract-namespace name written with a leading `@`. One datagram per
//! state change: `READY=1` once the daemon serves, `STOPPING=1` when a graceful stop begins.
//! Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent. A failure is logged as a
//! warning and otherwise ignored: a daemon must not stop over a notification, and these
//! functions never panic.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Tells the service manager the daemon is up and serving.
pub fn ready() {
    notify("READY=1");
}

/// Tells the service manager the daemon has begun to stop.
pub fn stopping() {
    notify("STOPPING=1");
}

/// Sends `msg` (newline-separated `KEY=VALUE` assignments) to `$NOTIFY_SOCKET`, if set.
pub fn notify(msg: &str) {
    let addr = std::env::var_os("NOTIFY_SOCKET");
    if let Err(e) = notify_to(addr.as_deref(), msg) {
        let addr = addr.unwrap_or_default();
        crate::warn!("cannot tell the service manager {msg} at NOTIFY_SOCKET={}: {e}", addr.to_string_lossy());
    }
}

/// Sends `msg` as one datagram to the socket `addr` names (`/path` or `@abstract-name`).
/// `Ok(false)` when there is no address (`None` or empty): nothing to notify.
pub fn notify_to(addr: Option<&OsStr>, msg: &str) -> io::Result<bool> {
    let Some(addr) = addr.filter(|a| !a.is_empty()) else {
        return Ok(false);
    };
    let bytes = addr.as_bytes();
    let socket = UnixDatagram::unbound()?;
    let sent = match bytes.first() {
        Some(b'/') => socket.send_to(msg.as_bytes(), Path::new(addr))?,
        Some(b'@') => send_abstract(&socket, &bytes[1..], msg.as_bytes())?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an @abstract name",
            ))
        }
    };
    if sent != msg.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "notification datagram truncated"));
    }
    Ok(true)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &[u8], msg: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(msg, &addr)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract socket names are Linux-only"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// A name no other test (or concurrent test run) uses.
    fn unique(tag: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        format!("lightd-notify-{tag}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
    }

    /// A directory removed when dropped.
    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn receive(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = TempDir(std::env::temp_dir().join(unique("dir")));
        std::fs::create_dir(&dir.0).unwrap();
        let path = dir.0.join("notify.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(Some(path.as_os_str()), "READY=1").unwrap());
        assert_eq!(receive(&manager), "READY=1");
        assert!(notify_to(Some(path.as_os_str()), "STOPPING=1").unwrap());
        assert_eq!(receive(&manager), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = unique("abstract");
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        let at = format!("@{name}");
        assert!(notify_to(Some(OsStr::new(&at)), "READY=1").unwrap());
        assert_eq!(receive(&manager), "READY=1");
    }

    #[test]
    fn no_address_is_nothing_to_do() {
        assert!(!notify_to(None, "READY=1").unwrap());
        assert!(!notify_to(Some(OsStr::new("")), "READY=1").unwrap());
    }

    #[test]
    fn bad_addresses_are_errors_not_panics() {
        assert_eq!(
            notify_to(Some(OsStr::new("relative/sock")), "READY=1").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let missing = std::env::temp_dir().join(unique("missing")).join("notify.sock");
        assert!(notify_to(Some(missing.as_os_str()), "READY=1").is_err());
        let too_long = format!("/{}", "x".repeat(200));
        assert!(notify_to(Some(OsStr::new(&too_long)), "READY=1").is_err());
        assert!(notify_to(Some(OsStr::new(&format!("@{}", "x".repeat(200)))), "READY=1").is_err());
    }
}
