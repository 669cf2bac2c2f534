//! Test hosts: network namespaces made by the test, each joined to this host by a veth pair
//! on a private /24 of its own (`10.251.N.0/24`: the host side `.1`, the namespace `.2`). A
//! client in one reaches a published port at the host side's address, so its traffic is
//! DNATed and forwarded by Docker like a remote client's. Only these addresses are used.
//! Everything is removed on drop, whatever the test's outcome.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// One test host.
pub struct Host {
    /// The namespace's name (`lfw<N>`), also the veth pair's prefix.
    pub ns: String,
    /// Its address (the namespace side).
    pub addr: Ipv4Addr,
    /// The host side's address: where the test host reaches this machine's published ports.
    pub gateway: Ipv4Addr,
    /// Its IPv6 address (`fd51:0:0:N::2`, a unique local address of the test's own).
    pub addr6: Ipv6Addr,
    /// The host side's IPv6 address (`fd51:0:0:N::1`).
    pub gateway6: Ipv6Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out =
        Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e} (apt-get install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Host {
    /// A new test host on the first free `N` from a start of this process's own (a namespace
    /// name taken by `ip netns add` is the lock: it fails when another test holds it).
    pub fn new() -> Host {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let start = std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed) * 13;
        for k in 0..250 {
            let n = (start + k) % 250 + 1;
            let ns = format!("lfw{n}");
            if ip(&["netns", "add", &ns]).is_err() {
                continue;
            }
            let host = Host {
                ns: ns.clone(),
                addr: Ipv4Addr::new(10, 251, n as u8, 2),
                gateway: Ipv4Addr::new(10, 251, n as u8, 1),
                addr6: Ipv6Addr::new(0xfd51, 0, 0, n as u16, 0, 0, 0, 2),
                gateway6: Ipv6Addr::new(0xfd51, 0, 0, n as u16, 0, 0, 0, 1),
            };
            // From here on, drop removes the namespace (and with it both ends of the pair).
            let (outside, inside) = (format!("{ns}h"), format!("{ns}n"));
            let gw = format!("{}/24", host.gateway);
            let me = format!("{}/24", host.addr);
            let (gw6, me6) = (format!("{}/64", host.gateway6), format!("{}/64", host.addr6));
            let steps: [&[&str]; 9] = [
                &["link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &ns],
                &["addr", "add", &gw, "dev", &outside],
                &["link", "set", &outside, "up"],
                &["-n", &ns, "addr", "add", &me, "dev", &inside],
                &["-n", &ns, "link", "set", &inside, "up"],
                &["-n", &ns, "link", "set", "lo", "up"],
                &["-n", &ns, "route", "add", "default", "via", &host.gateway.to_string()],
                &["-6", "addr", "add", &gw6, "dev", &outside, "nodad"],
                &["-n", &ns, "-6", "addr", "add", &me6, "dev", &inside, "nodad"],
            ];
            for step in steps {
                if let Err(e) = ip(step) {
                    panic!("setting up test host {ns}: {e}");
                }
            }
            return host;
        }
        panic!("no free test host name lfw1..lfw250 (leftovers? `ip netns list`)");
    }

    /// Runs `f` on a thread inside the namespace: sockets it makes are the test host's.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a namespace file this thread owns; it changes this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the test host's thread")
    }

    /// A TCP connection from this host to `port` on this machine, or why not within `wait`.
    pub fn connect(&self, port: u16, wait: Duration) -> std::io::Result<TcpStream> {
        self.connect_to(IpAddr::V4(self.gateway), port, wait)
    }

    /// The same to the host side's address `to` (`gateway6` for IPv6).
    pub fn connect_to(&self, to: IpAddr, port: u16, wait: Duration) -> std::io::Result<TcpStream> {
        let to = SocketAddr::from((to, port));
        self.within(move || TcpStream::connect_timeout(&to, wait))
    }

    /// Whether a connection to `port` gets an echo of what it sends (the test servers run
    /// `nc -ll -e /bin/cat`) within `wait`.
    pub fn echoes(&self, port: u16, wait: Duration) -> bool {
        self.echoes_at(IpAddr::V4(self.gateway), port, wait)
    }

    /// The same at the host side's address `to`.
    pub fn echoes_at(&self, to: IpAddr, port: u16, wait: Duration) -> bool {
        let Ok(mut s) = self.connect_to(to, port, wait) else { return false };
        let _ = s.set_read_timeout(Some(wait));
        let mut got = [0u8; 5];
        s.write_all(b"ping\n").is_ok() && s.read_exact(&mut got).is_ok() && &got == b"ping\n"
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &format!("{}h", self.ns)]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
