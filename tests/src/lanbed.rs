//! A home LAN test bed for the DLNA, SSDP and multicast-output tests: three
//! network namespaces that this process creates and deletes.
//!
//! ```text
//!  srv [eth0 192.168.60.10] ── [p-srv] br [br0] [p-cli] ── [eth0 192.168.60.20] cli
//!       (ringcast)                 (a switch)                 (TV, players, control points)
//!
//!  with a second LAN ([`Lanbed::with_second_lan`]):
//!  srv [eth1 192.168.61.10] ── [p-srv1] br [br1] [p-tv] ── [eth0 192.168.61.20] tv
//! ```
//!
//! The switch namespace holds a bridge without IGMP snooping, so SSDP and RTP
//! multicast reach every port, as on a cheap home switch. Both hosts route
//! `224.0.0.0/4` out of their `eth0` (a LAN host without a default route
//! still sends and joins multicast there) and have the MULTICAST flag on.
//! Nothing is attached to the host's own namespace, so no packet leaves the
//! test bed. Names are `rclan-<pid>-<n>-<role>`, unique per test bed, so
//! tests run in parallel; [`Lanbed`] stops what still runs inside and
//! deletes the namespaces on drop (also when the test panics).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::{signal, Daemon, DaemonOptions};
use crate::media::run_with_timeout;

/// The LAN prefix (ringcast's host .10, the client .20).
pub const LAN_PREFIX: &str = "192.168.60";
/// The second LAN's prefix (ringcast's host .10 on eth1, the TV .20).
pub const LAN2_PREFIX: &str = "192.168.61";
/// The HTTP port ringcast listens on in the server namespace.
pub const HTTP_PORT: u16 = 8090;
/// The LAN interface name in both hosts.
pub const LAN_IF: &str = "eth0";
/// The SSDP multicast group and port (UPnP Device Architecture 1.1 §1).
pub const SSDP_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
pub const SSDP_PORT: u16 = 1900;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// The three namespaces of the test bed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// The switch (a bridge namespace; no address on the LAN).
    Switch,
    /// The host ringcast runs on.
    Server,
    /// A LAN client: the TV, players and control points.
    Client,
    /// A client on the second LAN (only with [`Lanbed::with_second_lan`]).
    Tv,
}

impl Host {
    const ALL: [Host; 3] = [Host::Switch, Host::Server, Host::Client];

    fn role(self) -> &'static str {
        match self {
            Host::Switch => "br",
            Host::Server => "srv",
            Host::Client => "cli",
            Host::Tv => "tv",
        }
    }
}

/// The test bed; everything is torn down on drop.
pub struct Lanbed {
    prefix: String,
    /// Namespaces created so far (deleted on drop, in reverse).
    created: Vec<String>,
}

fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{program} {}`: {e}", args.join(" ")))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[allow(clippy::new_without_default)] // creating namespaces is a side effect, not a default value
impl Lanbed {
    /// Builds the namespaces, the bridge, the links, addresses and routes.
    pub fn new() -> Lanbed {
        crate::require_root();
        remove_stale();
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut bed = Lanbed {
            prefix: format!("rclan-{}-{}", std::process::id(), n),
            created: Vec::new(),
        };
        bed.build();
        bed
    }

    /// The test bed plus a second LAN: the server's `eth1` and a TV host on
    /// their own bridge (`br1`) in the switch namespace.
    pub fn with_second_lan() -> Lanbed {
        let mut bed = Lanbed::new();
        let tv = bed.ns(Host::Tv);
        run_ok("ip", &["netns", "add", &tv]);
        bed.created.push(tv.clone());
        bed.ip(Host::Tv, &["link", "set", "lo", "up"]);
        bed.ip(
            Host::Switch,
            &[
                "link",
                "add",
                "br1",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        );
        bed.ip(Host::Switch, &["link", "set", "br1", "up"]);
        let server = bed.ns(Host::Server);
        for (port, ns, dev, host, last) in [
            ("p-srv1", &server, "eth1", Host::Server, 10),
            ("p-tv", &tv, LAN_IF, Host::Tv, 20),
        ] {
            bed.ip(
                Host::Switch,
                &[
                    "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns,
                ],
            );
            bed.ip(Host::Switch, &["link", "set", port, "master", "br1", "up"]);
            let cidr = format!("{LAN2_PREFIX}.{last}/24");
            bed.ip(host, &["addr", "add", &cidr, "dev", dev]);
            bed.ip(host, &["link", "set", dev, "multicast", "on"]);
            bed.ip(host, &["link", "set", dev, "up"]);
        }
        // The TV's multicast goes out of its only interface; the server keeps
        // its multicast route on eth0 (the daemon picks the interface for
        // each datagram itself).
        let src = format!("{LAN2_PREFIX}.20");
        bed.ip(
            Host::Tv,
            &["route", "add", "224.0.0.0/4", "dev", LAN_IF, "src", &src],
        );
        let up = crate::wait_for(Duration::from_secs(5), || {
            let out = bed.ip(Host::Switch, &["-o", "link", "show", "master", "br1"]);
            (out.lines().count() == 2 && out.lines().all(|l| l.contains("state UP"))).then_some(())
        });
        assert!(up.is_some(), "second bridge's ports did not come up");
        bed.wait_connected_route(Host::Server, "eth1", LAN2_PREFIX);
        bed.wait_connected_route(Host::Tv, LAN_IF, LAN2_PREFIX);
        bed
    }

    /// Waits until `host` has its connected route `PREFIX.0/24` on `dev`
    /// (without `linkdown`): a daemon reads its interfaces from the routing
    /// table at start, and would miss a LAN whose carrier is not up yet.
    fn wait_connected_route(&self, host: Host, dev: &str, prefix: &str) {
        let want = format!("{prefix}.0/24");
        let ready = crate::wait_for(Duration::from_secs(5), || {
            let out = self.ip(host, &["-4", "route", "show", "dev", dev]);
            out.lines()
                .any(|l| l.starts_with(&want) && !l.contains("linkdown"))
                .then_some(())
        });
        assert!(
            ready.is_some(),
            "{}: no connected route {want} on {dev}:\n{}",
            self.ns(host),
            self.ip(host, &["-4", "route"])
        );
    }

    fn build(&mut self) {
        for host in Host::ALL {
            let name = self.ns(host);
            run_ok("ip", &["netns", "add", &name]);
            self.created.push(name);
            self.ip(host, &["link", "set", "lo", "up"]);
        }
        self.ip(
            Host::Switch,
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        );
        self.ip(Host::Switch, &["link", "set", "br0", "up"]);
        // br_netfilter (if loaded on the host) must not filter bridged frames.
        self.exec_ok(
            Host::Switch,
            &[
                "sh",
                "-c",
                "f=/proc/sys/net/bridge/bridge-nf-call-iptables; \
                 if [ -e $f ]; then echo 0 > $f; fi",
            ],
        );
        for (host, last) in [(Host::Server, 10), (Host::Client, 20)] {
            let port = format!("p-{}", host.role());
            let peer_ns = self.ns(host);
            self.ip(
                Host::Switch,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", LAN_IF, "netns", &peer_ns,
                ],
            );
            self.ip(Host::Switch, &["link", "set", &port, "master", "br0", "up"]);
            let cidr = format!("{LAN_PREFIX}.{last}/24");
            self.ip(host, &["addr", "add", &cidr, "dev", LAN_IF]);
            self.ip(host, &["link", "set", LAN_IF, "multicast", "on"]);
            self.ip(host, &["link", "set", LAN_IF, "up"]);
            let src = format!("{LAN_PREFIX}.{last}");
            self.ip(
                host,
                &["route", "add", "224.0.0.0/4", "dev", LAN_IF, "src", &src],
            );
        }
        // The bridge forwards only once its ports leave the listening state
        // (no STP: at once, but the carrier of a fresh veth takes a moment).
        let up = crate::wait_for(Duration::from_secs(5), || {
            let out = self.ip(Host::Switch, &["-o", "link", "show", "master", "br0"]);
            (out.lines().count() == 2 && out.lines().all(|l| l.contains("state UP"))).then_some(())
        });
        assert!(up.is_some(), "bridge ports did not come up");
        self.wait_connected_route(Host::Server, LAN_IF, LAN_PREFIX);
        self.wait_connected_route(Host::Client, LAN_IF, LAN_PREFIX);
    }

    /// The namespace name of `host`.
    pub fn ns(&self, host: Host) -> String {
        format!("{}-{}", self.prefix, host.role())
    }

    pub fn server_ip(&self) -> Ipv4Addr {
        format!("{LAN_PREFIX}.10").parse().unwrap()
    }

    pub fn client_ip(&self) -> Ipv4Addr {
        format!("{LAN_PREFIX}.20").parse().unwrap()
    }

    /// The server's address on the second LAN.
    pub fn server_ip2(&self) -> Ipv4Addr {
        format!("{LAN2_PREFIX}.10").parse().unwrap()
    }

    /// The TV's address on the second LAN.
    pub fn tv_ip(&self) -> Ipv4Addr {
        format!("{LAN2_PREFIX}.20").parse().unwrap()
    }

    /// ringcast's HTTP address as LAN clients reach it.
    pub fn server_http(&self) -> SocketAddr {
        SocketAddr::from((self.server_ip(), HTTP_PORT))
    }

    /// `http://192.168.60.10:8090` + `path`.
    pub fn server_url(&self, path: &str) -> String {
        format!("http://{}{}", self.server_http(), path)
    }

    /// `ip -n <ns> ARGS`; panics on failure.
    pub fn ip(&self, host: Host, args: &[&str]) -> String {
        let ns = self.ns(host);
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        run_ok("ip", &all)
    }

    /// Runs `argv` inside `host` and waits (no time bound: for quick tools).
    pub fn exec_ok(&self, host: Host, argv: &[&str]) -> String {
        let ns = self.ns(host);
        let mut all = vec!["netns", "exec", ns.as_str()];
        all.extend_from_slice(argv);
        run_ok("ip", &all)
    }

    /// A command that runs `program ARGS` inside `host` under coreutils
    /// `timeout` (so it dies by itself even if this process is killed).
    pub fn command(&self, host: Host, limit: Duration, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host), "timeout", "-s", "KILL"])
            .arg(format!("{}", limit.as_secs().max(1) + 2))
            .arg(program);
        c
    }

    /// Runs `program ARGS` in `host`, captures its output, kills it after
    /// `limit`.
    pub fn run_in(
        &self,
        host: Host,
        limit: Duration,
        program: &str,
        args: &[&str],
    ) -> Result<Output, String> {
        let mut c = self.command(host, limit, program);
        c.args(args);
        run_with_timeout(&mut c, limit + Duration::from_secs(3))
    }

    /// Options to run ringcast on the server with its HTTP listener on
    /// `0.0.0.0:HTTP_PORT`, followed by `args`.
    pub fn daemon_options<S: AsRef<str>>(&self, args: &[S]) -> DaemonOptions {
        let mut all = vec!["--listen".to_string(), format!("0.0.0.0:{HTTP_PORT}")];
        all.extend(args.iter().map(|a| a.as_ref().to_string()));
        DaemonOptions::new(&all).netns(&self.ns(Host::Server))
    }

    /// Starts ringcast on the server (see [`Lanbed::daemon_options`]).
    pub fn start_daemon<S: AsRef<str>>(&self, args: &[S]) -> Daemon {
        Daemon::start_with(self.daemon_options(args))
    }

    /// Runs `f` on a fresh thread inside `host`'s namespace.
    pub fn run_on<T: Send + 'static>(
        &self,
        host: Host,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        self.spawn_on(host, f)
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Spawns `f` on a thread inside `host`'s namespace.
    pub fn spawn_on<T: Send + 'static>(
        &self,
        host: Host,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = self.ns(host);
        std::thread::spawn(move || {
            crate::netns::enter_current_thread(&ns);
            f()
        })
    }
}

impl Drop for Lanbed {
    fn drop(&mut self) {
        // Anything still running inside our namespaces was started by this
        // test: stop it by PID before the namespaces go.
        for name in &self.created {
            if let Ok(out) = run("ip", &["netns", "pids", name]) {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<u32>() {
                        eprintln!("test bed {name}: stopping leftover pid {pid}");
                        signal(pid, libc::SIGKILL);
                    }
                }
            }
        }
        for name in self.created.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", name]) {
                eprintln!("warning: ip netns del {name}: {e}");
            }
        }
    }
}

/// Deletes test-bed namespaces `rclan-<pid>-<n>-<role>` whose creating
/// process no longer exists (a killed earlier run).
fn remove_stale() {
    let Ok(out) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let parts: Vec<&str> = name.split('-').collect();
        if parts.len() != 4 || parts[0] != "rclan" || parts[2].parse::<u32>().is_err() {
            continue;
        }
        let Ok(pid) = parts[1].parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A UDP socket with SO_REUSEADDR set before bind (std has no way to), so a
/// listener on 1900 can share the port with control points on the same host.
pub fn udp_socket_reuse(addr: SocketAddrV4) -> std::io::Result<UdpSocket> {
    // SAFETY: socket(2)/setsockopt(2)/bind(2) on a fresh fd that is handed
    // to UdpSocket (which closes it) right after creation.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let socket = UdpSocket::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::bind(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(socket)
    }
}

/// One datagram a listener caught.
#[derive(Clone, Debug)]
pub struct Datagram {
    pub at: Instant,
    pub from: SocketAddr,
    pub text: String,
}

impl Datagram {
    /// The first line (`NOTIFY * HTTP/1.1`, `HTTP/1.1 200 OK`, ...).
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("").trim()
    }

    /// The first header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        ssdp_header(&self.text, name)
    }
}

/// The first header `name` of an SSDP/HTTP message (case-insensitive).
pub fn ssdp_header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A thread inside a namespace that joins the SSDP group on `iface_ip` and
/// keeps every datagram that arrives on port 1900, until stopped or `life`
/// is over (at most 100,000 datagrams).
pub struct SsdpListener {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Datagram>>>,
    handle: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl SsdpListener {
    /// Starts listening; returns once the socket is bound and joined.
    pub fn start(bed: &Lanbed, host: Host, iface_ip: Ipv4Addr, life: Duration) -> SsdpListener {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = {
            let (stop, seen) = (stop.clone(), seen.clone());
            bed.spawn_on(host, move || {
                let socket = udp_socket_reuse(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SSDP_PORT))
                    .and_then(|s| s.join_multicast_v4(&SSDP_GROUP, &iface_ip).map(|_| s))
                    .map_err(|e| format!("SSDP listener socket: {e}"));
                let socket = match socket {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                socket
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .map_err(|e| e.to_string())?;
                let deadline = Instant::now() + life;
                let mut buf = vec![0u8; 9000];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let mut seen = seen.lock().unwrap();
                            if seen.len() < 100_000 {
                                seen.push(Datagram {
                                    at: Instant::now(),
                                    from,
                                    text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                                });
                            }
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(e) => return Err(format!("recv: {e}")),
                    }
                }
                Ok(())
            })
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("SSDP listener did not start within 5 s"),
        }
        SsdpListener {
            stop,
            seen,
            handle: Some(handle),
        }
    }

    /// A copy of what arrived so far.
    pub fn seen(&self) -> Vec<Datagram> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits up to `timeout` until `accept(all datagrams so far)` holds.
    pub fn wait(&self, timeout: Duration, mut accept: impl FnMut(&[Datagram]) -> bool) -> bool {
        crate::wait_for(timeout, || accept(&self.seen.lock().unwrap()).then_some(())).is_some()
    }

    /// Stops the thread and returns everything it caught.
    pub fn finish(mut self) -> Vec<Datagram> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("SSDP listener: {e}"),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        self.seen()
    }
}

impl Drop for SsdpListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An M-SEARCH request as a control point sends it (UDA 1.1 §1.3.2).
pub fn m_search(st: &str, mx_s: u32) -> String {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n\
         MX: {mx_s}\r\nST: {st}\r\nUSER-AGENT: Linux/6 UPnP/1.1 ringcast-tests/1\r\n\r\n"
    )
}
