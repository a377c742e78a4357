//! A home-router test bed for the port-mapping tests: four network
//! namespaces that this process creates and deletes, and a real IGD
//! (miniupnpd with its nftables backend) in the router, or a hostile fake.
//!
//! ```text
//!  inet [inet0 WAN.1] ── [wan0 WAN.2] rtr [br-lan 192.168.77.1] ─┬─ [eth0 .10] cli  (ringcast)
//!                                                                └─ [eth0 .20] tv   (another LAN host)
//! ```
//!
//! WAN is 11.0.0.0/24 (a public-looking address; miniupnpd 2.3.1 refuses to
//! map on a reserved one) or 100.64.0.0/24 (a carrier-grade NAT address: a
//! double NAT). Nothing is attached to the host's own namespace, so no packet
//! can leave the test bed. Names are `rcigd-<pid>-<n>-<role>`, unique per
//! test bed, so tests run in parallel; [`Testbed`] deletes them on drop (also
//! when the test panics), after stopping the router's miniupnpd.
//!
//! miniupnpd runs in the foreground (`-d`, log to a file) under `timeout`, so
//! it dies by itself even if this process is killed before cleaning up.
//! Facts about miniupnpd 2.3.1 that these helpers rely on (measured here):
//! - its nftables backend creates no chains: the test bed makes the filter
//!   and NAT base chains and the three empty chains it fills
//!   (`miniupnpd`, `prerouting_miniupnpd`, `postrouting_miniupnpd`);
//! - a DNAT rule reads `iif "wan0" @nh,72,8 0x6 th dport 7144 dnat ip to
//!   192.168.77.10:7144`;
//! - the lease file has one line per mapping,
//!   `TCP:<ext>:<int ip>:<int port>:<expiry, unix time>:<description>`,
//!   rewritten on every renewal; PCP descriptions are `PCP MAP <nonce hex>`
//!   and NAT-PMP ones `NAT-PMP <port> tcp`;
//! - stopping miniupnpd leaves its rules and lease file in place, so a router
//!   "reboot" is simulated by also flushing the chains (and emptying the
//!   lease file, as a router without persistent storage would).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::daemon::{signal, Daemon, DaemonOptions};

/// The LAN prefix (router .1, ringcast .10, the other host .20).
pub const LAN_PREFIX: &str = "192.168.77";
/// The port ringcast's LAN HTTP listener uses in the client namespace.
pub const LAN_HTTP_PORT: u16 = 8090;
/// ringcast's default peer port.
pub const PEER_PORT: u16 = 7144;
/// miniupnpd's HTTP port (description and SOAP control).
pub const IGD_HTTP_PORT: u16 = 5000;
/// The three chains miniupnpd fills.
pub const MINIUPNPD_CHAINS: [&str; 3] =
    ["prerouting_miniupnpd", "miniupnpd", "postrouting_miniupnpd"];
/// How long miniupnpd and the fake IGD may live at most (they are stopped
/// much earlier by the guards; this bounds them if the test process dies).
const ROUTER_TTL_S: u32 = 180;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// The WAN side of the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wan {
    /// 11.0.0.0/24: the router's WAN address counts as public.
    Public,
    /// 100.64.0.0/24 (RFC 6598 shared space): a provider's NAT is in front.
    Cgnat,
}

impl Wan {
    pub fn prefix(self) -> &'static str {
        match self {
            Wan::Public => "11.0.0",
            Wan::Cgnat => "100.64.0",
        }
    }
}

/// The four hosts of the test bed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// "The internet": one host on the router's WAN link.
    Inet,
    /// The home router (bridge, NAT, miniupnpd or the fake IGD).
    Router,
    /// The LAN host ringcast runs on.
    Client,
    /// Another LAN host (a TV, or a second mapping client).
    Tv,
}

impl Node {
    const ALL: [Node; 4] = [Node::Inet, Node::Router, Node::Client, Node::Tv];

    fn role(self) -> &'static str {
        match self {
            Node::Inet => "inet",
            Node::Router => "rtr",
            Node::Client => "cli",
            Node::Tv => "tv",
        }
    }
}

/// How to build the test bed.
#[derive(Clone, Debug)]
pub struct TestbedOptions {
    /// Serve the IGDv1 description (`force_igd_desc_v1=yes`).
    pub igd_v1: bool,
    /// UPnP IGD on (SSDP + HTTP/SOAP); off means no SSDP and no HTTP at all.
    pub upnp: bool,
    /// NAT-PMP and PCP on (miniupnpd has one switch for both).
    pub natpmp_pcp: bool,
    pub wan: Wan,
    /// Start miniupnpd; false leaves the router bare (for the fake IGD).
    pub miniupnpd: bool,
    /// miniupnpd's `min_lifetime` (applies to PCP only; 2.3.1 accepts >= 1).
    pub min_lifetime: u32,
}

impl Default for TestbedOptions {
    fn default() -> TestbedOptions {
        TestbedOptions {
            igd_v1: false,
            upnp: true,
            natpmp_pcp: true,
            wan: Wan::Public,
            miniupnpd: true,
            min_lifetime: 2,
        }
    }
}

/// One mapping as `upnpc -l` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpnpMapping {
    pub protocol: String,
    pub external_port: u16,
    pub internal: SocketAddrV4,
    pub description: String,
    pub lease_s: u64,
}

/// One line of miniupnpd's lease file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub protocol: String,
    pub external_port: u16,
    pub internal: SocketAddrV4,
    /// Unix time the mapping expires (0: permanent).
    pub expires: u64,
    pub description: String,
}

/// One DNAT rule in `prerouting_miniupnpd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dnat {
    pub external_port: u16,
    pub to: SocketAddrV4,
}

/// The running miniupnpd: the `timeout` process we spawned (through
/// `ip netns exec`, which execs it) and the miniupnpd it forked.
struct Router {
    timeout: Child,
}

/// The test bed; everything is torn down on drop.
pub struct Testbed {
    prefix: String,
    options: TestbedOptions,
    dir: PathBuf,
    /// Namespaces created so far (deleted on drop).
    created: Vec<String>,
    router: Option<Router>,
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run `{program} {}`: {e}", args.join(" ")))?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("write to `{program}`: {e}"))?;
    }
    child
        .wait_with_output()
        .map_err(|e| format!("wait for `{program}`: {e}"))
}

fn run_ok(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(program, args, stdin).unwrap_or_else(|e| panic!("{e}"));
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

/// `/usr/bin/python3` when present (not a version-manager shim), else `python3`.
pub fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

impl Testbed {
    /// Builds the namespaces, links, addresses, routes and nftables chains,
    /// and starts miniupnpd unless `options.miniupnpd` is false.
    pub fn new(options: TestbedOptions) -> Testbed {
        crate::require_root();
        remove_stale();
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("rcigd-{}-{}", std::process::id(), n);
        let dir = std::env::temp_dir().join("ringcast-igd").join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test bed dir");
        let mut bed = Testbed {
            prefix,
            options,
            dir,
            created: Vec::new(),
            router: None,
        };
        bed.build();
        if bed.options.miniupnpd {
            bed.write_config();
            std::fs::write(bed.lease_path(), "").expect("create lease file");
            bed.start_router();
        }
        bed
    }

    /// A test bed with miniupnpd as `TestbedOptions::default()` describes.
    pub fn default_igd() -> Testbed {
        Testbed::new(TestbedOptions::default())
    }

    fn build(&mut self) {
        for node in Node::ALL {
            let name = self.ns(node);
            run_ok("ip", &["netns", "add", &name], None);
            self.created.push(name);
            self.ip(node, &["link", "set", "lo", "up"]);
        }
        let wan = self.options.wan.prefix();
        let inet = self.ns(Node::Inet);
        self.ip(
            Node::Router,
            &[
                "link", "add", "wan0", "type", "veth", "peer", "name", "inet0", "netns", &inet,
            ],
        );
        self.ip(
            Node::Inet,
            &["addr", "add", &format!("{wan}.1/24"), "dev", "inet0"],
        );
        self.ip(Node::Inet, &["link", "set", "inet0", "up"]);
        self.ip(
            Node::Router,
            &["addr", "add", &format!("{wan}.2/24"), "dev", "wan0"],
        );
        self.ip(Node::Router, &["link", "set", "wan0", "up"]);
        self.ip(
            Node::Router,
            &["route", "add", "default", "via", &format!("{wan}.1")],
        );
        // No IGMP snooping: SSDP multicast must reach every port.
        self.ip(
            Node::Router,
            &[
                "link",
                "add",
                "br-lan",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        );
        self.ip(
            Node::Router,
            &[
                "addr",
                "add",
                &format!("{LAN_PREFIX}.1/24"),
                "dev",
                "br-lan",
            ],
        );
        self.ip(Node::Router, &["link", "set", "br-lan", "up"]);
        for (node, host) in [(Node::Client, 10), (Node::Tv, 20)] {
            let port = format!("lan-{}", node.role());
            let peer_ns = self.ns(node);
            self.ip(
                Node::Router,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &peer_ns,
                ],
            );
            self.ip(
                Node::Router,
                &["link", "set", &port, "master", "br-lan", "up"],
            );
            self.ip(
                node,
                &[
                    "addr",
                    "add",
                    &format!("{LAN_PREFIX}.{host}/24"),
                    "dev",
                    "eth0",
                ],
            );
            self.ip(node, &["link", "set", "eth0", "up"]);
            self.ip(
                node,
                &["route", "add", "default", "via", &format!("{LAN_PREFIX}.1")],
            );
        }
        // /proc/sys/net belongs to the namespace of whoever opens it, so write
        // it from a shell inside. br_netfilter (if loaded on the host) would
        // send bridged LAN frames, SSDP included, through the forward hook.
        self.exec_ok(
            Node::Router,
            &[
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward; \
                 f=/proc/sys/net/bridge/bridge-nf-call-iptables; \
                 if [ -e $f ]; then echo 0 > $f; fi",
            ],
        );
        let ruleset = r#"table inet filter {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "br-lan" oifname "wan0" accept
    iifname "br-lan" oifname "br-lan" accept
    jump miniupnpd
  }
  chain miniupnpd { }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "wan0" masquerade
  }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
"#;
        let rtr = self.ns(Node::Router);
        run_ok(
            "ip",
            &["netns", "exec", &rtr, "nft", "-f", "-"],
            Some(ruleset),
        );
    }

    fn write_config(&self) {
        let o = &self.options;
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let config = format!(
            "ext_ifname=wan0\n\
             listening_ip=br-lan\n\
             http_port={IGD_HTTP_PORT}\n\
             ipv6_disable=yes\n\
             enable_upnp={upnp}\n\
             enable_natpmp={natpmp}\n\
             secure_mode=yes\n\
             system_uptime=no\n\
             notify_interval=30\n\
             min_lifetime={min}\n\
             max_lifetime=86400\n\
             force_igd_desc_v1={v1}\n\
             lease_file={leases}\n\
             uuid=5a1c9e2e-7d41-4c3b-9f0e-{tail:012x}\n\
             friendly_name=ringcast test router\n\
             allow 1024-65535 {LAN_PREFIX}.0/24 1024-65535\n\
             deny 0-65535 0.0.0.0/0 0-65535\n",
            upnp = yes_no(o.upnp),
            natpmp = yes_no(o.natpmp_pcp),
            min = o.min_lifetime,
            v1 = yes_no(o.igd_v1),
            leases = self.lease_path().display(),
            tail = NEXT_ID.load(Ordering::Relaxed) as u64 + ((std::process::id() as u64) << 16),
        );
        std::fs::write(self.dir.join("miniupnpd.conf"), config).expect("write miniupnpd.conf");
    }

    fn start_router(&mut self) {
        assert!(self.router.is_none(), "miniupnpd already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("miniupnpd.log"))
            .expect("open miniupnpd.log");
        let log_before = self.router_log().len();
        let conf = self.dir.join("miniupnpd.conf");
        let pid_file = self.dir.join("miniupnpd.pid");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(Node::Router), "timeout"])
            .arg(ROUTER_TTL_S.to_string())
            .arg("/usr/sbin/miniupnpd")
            .arg("-d")
            .arg("-f")
            .arg(&conf)
            .arg("-P")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn miniupnpd (package miniupnpd-nftables)");
        self.router = Some(Router { timeout: child });
        // The last line miniupnpd prints once all its sockets are open.
        let needle = if self.options.natpmp_pcp {
            "Listening for NAT-PMP/PCP traffic"
        } else {
            "HTTP listening on port"
        };
        let ready = crate::wait_for(Duration::from_secs(10), || {
            self.router_log()[log_before..]
                .contains(needle)
                .then_some(())
        });
        if ready.is_none() {
            panic!(
                "miniupnpd did not get ready within 10 s\n--- its log ---\n{}",
                self.router_log()
            );
        }
    }

    /// Stops miniupnpd: SIGTERM to its own PID (then SIGKILL after 3 s).
    fn stop_router(&mut self) {
        let Some(mut router) = self.router.take() else {
            return;
        };
        let timeout_pid = router.timeout.id();
        let target = child_pid_of(timeout_pid).unwrap_or(timeout_pid);
        signal(target, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match router.timeout.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        eprintln!("miniupnpd (pid {target}) ignored SIGTERM for 3 s: SIGKILL");
        if target != timeout_pid {
            signal(target, libc::SIGKILL);
        }
        let _ = router.timeout.kill();
        let _ = router.timeout.wait();
    }

    /// Simulates a router reboot: stops miniupnpd, flushes its three chains
    /// (a rebooted router has an empty ruleset), empties the lease file when
    /// `empty_leases` (no persistent storage) and starts miniupnpd again.
    pub fn restart_router(&mut self, empty_leases: bool) {
        assert!(self.options.miniupnpd, "this test bed has no miniupnpd");
        self.stop_router();
        let rtr = self.ns(Node::Router);
        for chain in MINIUPNPD_CHAINS {
            run_ok(
                "ip",
                &[
                    "netns", "exec", &rtr, "nft", "flush", "chain", "inet", "filter", chain,
                ],
                None,
            );
        }
        if empty_leases {
            std::fs::write(self.lease_path(), "").expect("empty the lease file");
        }
        self.start_router();
    }

    /// The PID of the running miniupnpd, if any.
    pub fn miniupnpd_pid(&self) -> Option<u32> {
        self.router
            .as_ref()
            .and_then(|r| child_pid_of(r.timeout.id()))
    }

    /// The namespace name of `node`.
    pub fn ns(&self, node: Node) -> String {
        format!("{}-{}", self.prefix, node.role())
    }

    /// The test bed's scratch directory (config, logs, lease file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &TestbedOptions {
        &self.options
    }

    /// The router's WAN address (`WAN.2`): what the internet connects to.
    pub fn wan_ip(&self) -> Ipv4Addr {
        format!("{}.2", self.options.wan.prefix()).parse().unwrap()
    }

    /// The router's LAN address.
    pub fn router_lan_ip(&self) -> Ipv4Addr {
        format!("{LAN_PREFIX}.1").parse().unwrap()
    }

    /// The LAN address of the client namespace (where ringcast runs).
    pub fn cli_ip(&self) -> Ipv4Addr {
        format!("{LAN_PREFIX}.10").parse().unwrap()
    }

    /// The LAN address of the TV namespace.
    pub fn tv_ip(&self) -> Ipv4Addr {
        format!("{LAN_PREFIX}.20").parse().unwrap()
    }

    /// miniupnpd's root description URL.
    pub fn desc_url(&self) -> String {
        format!(
            "http://{}:{IGD_HTTP_PORT}/rootDesc.xml",
            self.router_lan_ip()
        )
    }

    fn ip(&self, node: Node, args: &[&str]) -> String {
        let ns = self.ns(node);
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        run_ok("ip", &all, None)
    }

    /// Runs `args` inside `node` (`ip netns exec`), whatever its exit status.
    pub fn exec(&self, node: Node, args: &[&str]) -> Output {
        let ns = self.ns(node);
        let mut all = vec!["netns", "exec", ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Testbed::exec`]; panics unless it exits 0; returns stdout.
    pub fn exec_ok(&self, node: Node, args: &[&str]) -> String {
        let out = self.exec(node, args);
        assert!(
            out.status.success(),
            "`{}` in {} failed ({}): {}{}",
            args.join(" "),
            self.ns(node),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `upnpc -u <desc> -l` run from the TV namespace, as text.
    pub fn upnpc_list_raw(&self) -> String {
        let url = self.desc_url();
        let out = self.exec(Node::Tv, &["timeout", "10", "upnpc", "-u", &url, "-l"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The mappings `upnpc -l` lists (from the TV namespace).
    pub fn upnpc_list(&self) -> Vec<UpnpMapping> {
        parse_upnpc_list(&self.upnpc_list_raw())
    }

    /// Maps `external_port` to the TV's `internal_port` with `upnpc -a`
    /// (AddPortMapping) from the TV namespace. Ok(upnpc's output) when
    /// upnpc says the port is redirected.
    pub fn upnpc_add_from_tv(
        &self,
        internal_port: u16,
        external_port: u16,
        lease_s: u32,
    ) -> Result<String, String> {
        let url = self.desc_url();
        let tv = self.tv_ip().to_string();
        let (i, e, l) = (
            internal_port.to_string(),
            external_port.to_string(),
            lease_s.to_string(),
        );
        let out = self.exec(
            Node::Tv,
            &[
                "timeout",
                "10",
                "upnpc",
                "-u",
                &url,
                "-e",
                "tv-mapping",
                "-a",
                &tv,
                &i,
                &e,
                "TCP",
                &l,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() && text.contains("is redirected to internal") {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// The three chains miniupnpd fills, as `nft list chain` prints them.
    pub fn nft_rules(&self) -> String {
        let mut text = String::new();
        for chain in MINIUPNPD_CHAINS {
            text += &self.exec_ok(
                Node::Router,
                &["nft", "list", "chain", "inet", "filter", chain],
            );
        }
        text
    }

    /// The rules (not chain headers) in miniupnpd's chains.
    pub fn nft_rule_lines(&self) -> Vec<String> {
        nft_rule_lines(&self.nft_rules())
    }

    /// The DNAT rules in `prerouting_miniupnpd`.
    pub fn dnat_rules(&self) -> Vec<Dnat> {
        parse_dnat(&self.nft_rules())
    }

    fn lease_path(&self) -> PathBuf {
        self.dir.join("upnp.leases")
    }

    /// miniupnpd's lease file as text ("" when it removed the file).
    pub fn lease_file_raw(&self) -> String {
        std::fs::read_to_string(self.lease_path()).unwrap_or_default()
    }

    /// The lease file's entries.
    pub fn lease_file(&self) -> Vec<Lease> {
        parse_leases(&self.lease_file_raw())
    }

    /// miniupnpd's log so far (all runs of this test bed).
    pub fn router_log(&self) -> String {
        let bytes = std::fs::read(self.dir.join("miniupnpd.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// TCP connect from the internet namespace to `ip:port` (2 s timeout),
    /// then read what the server sends until it closes (at most 4 KiB, 2 s).
    /// None when the connection fails (refused, unreachable, timeout).
    pub fn connect_from_internet(&self, ip: Ipv4Addr, port: u16) -> Option<Vec<u8>> {
        let ns = self.ns(Node::Inet);
        std::thread::spawn(move || {
            crate::netns::enter_current_thread(&ns);
            let addr = SocketAddr::from((ip, port));
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while got.len() < 4096 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            Some(got)
        })
        .join()
        .expect("connect thread")
    }

    /// Options to run ringcast in the client namespace with its LAN HTTP
    /// listener on `0.0.0.0:LAN_HTTP_PORT`, followed by `args`. Unless
    /// `args` say otherwise, the peer port is [`PEER_PORT`] and the methods
    /// are the documented default `upnp,pcp,natpmp`, both passed explicitly:
    /// the [`Daemon`] guard turns mapping off and the peer port to 0 for
    /// daemons that do not name them.
    pub fn daemon_options<S: AsRef<str>>(&self, args: &[S]) -> DaemonOptions {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        let names = |option: &str| {
            args.iter()
                .any(|a| a == option || a.starts_with(&format!("{option}=")))
        };
        let mut all = vec!["--listen".to_string(), format!("0.0.0.0:{LAN_HTTP_PORT}")];
        if !names("--peer-port") {
            all.extend(["--peer-port".to_string(), PEER_PORT.to_string()]);
        }
        if !names("--portmap") {
            all.extend(["--portmap".to_string(), "upnp,pcp,natpmp".to_string()]);
        }
        all.extend(args);
        DaemonOptions::new(&all).netns(&self.ns(Node::Client))
    }

    /// Starts ringcast in the client namespace (see [`Testbed::daemon_options`]).
    pub fn start_daemon<S: AsRef<str>>(&self, args: &[S]) -> Daemon {
        Daemon::start_with(self.daemon_options(args))
    }

    /// Starts `tests/fixtures/fake_igd.py` in the router (needs a test bed
    /// built with `miniupnpd: false`); it lives at most `life`.
    pub fn start_fake_igd(&self, mode: &str, life: Duration) -> FakeIgd {
        assert!(
            self.router.is_none(),
            "the fake IGD needs the router's ports: build the test bed without miniupnpd"
        );
        let script = crate::workspace_root().join("tests/fixtures/fake_igd.py");
        let out_path = self.dir.join(format!("fake_igd-{mode}.log"));
        let out = File::create(&out_path).expect("create fake IGD log");
        let life_s = life.as_secs().max(1);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(Node::Router), "timeout"])
            .arg((life_s + 5).to_string())
            .arg(python3())
            .arg(&script)
            .args(["--mode", mode, "--iface", "br-lan"])
            .args(["--lan-ip", &self.router_lan_ip().to_string()])
            .args(["--http-port", &IGD_HTTP_PORT.to_string()])
            .args(["--life", &life_s.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup fd"))
            .stderr(out)
            .spawn()
            .expect("spawn the fake IGD");
        let fake = FakeIgd {
            child: Some(child),
            log: out_path,
        };
        if crate::wait_for(Duration::from_secs(10), || {
            fake.events()
                .iter()
                .any(|l| l.starts_with("ready"))
                .then_some(())
        })
        .is_none()
        {
            panic!("the fake IGD did not start:\n{}", fake.events().join("\n"));
        }
        fake
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop_router();
        // Anything still running inside our namespaces was started by this
        // test (a guard that was leaked, say): stop it by PID before the
        // namespaces go.
        for name in &self.created {
            if let Ok(out) = run("ip", &["netns", "pids", name], None) {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<u32>() {
                        eprintln!("test bed {name}: stopping leftover pid {pid}");
                        signal(pid, libc::SIGKILL);
                    }
                }
            }
        }
        for name in self.created.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", name], None) {
                eprintln!("warning: ip netns del {name}: {e}");
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- test bed {} kept in {} ---\n--- miniupnpd log (last 40 lines) ---\n{}",
                self.prefix,
                self.dir.display(),
                tail_lines(&self.router_log(), 40)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The fake IGD process; stopped (by PID) on drop.
pub struct FakeIgd {
    child: Option<Child>,
    log: PathBuf,
}

impl FakeIgd {
    /// Its event lines so far (`ssdp …`, `conn …`, `request …`, `closed …`).
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How long each finished HTTP connection lasted, and who closed it.
    pub fn closed_connections(&self) -> Vec<(f64, String)> {
        self.events()
            .iter()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.first() == Some(&"closed") && w.len() >= 8)
                    .then(|| (w[3].parse().unwrap_or(f64::NAN), w[7].to_string()))
            })
            .collect()
    }
}

impl Drop for FakeIgd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `timeout` passes SIGTERM on to python.
            signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The first child of `pid` (from `/proc/PID/task/PID/children`).
fn child_pid_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Parses `upnpc -l` rows like ` 0 TCP  7144->192.168.77.10:7144  'ringcast' '' 3600`.
pub fn parse_upnpc_list(text: &str) -> Vec<UpnpMapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(index), Some(protocol), Some(ports)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if index.parse::<u32>().is_err() || !(protocol == "TCP" || protocol == "UDP") {
            continue;
        }
        let Some((ext, internal)) = ports.split_once("->") else {
            continue;
        };
        let (Ok(external_port), Ok(internal)) = (ext.parse(), internal.parse()) else {
            continue;
        };
        // The quoted description may hold spaces: it is between the first
        // pair of single quotes; the lease is the last word.
        let description = line
            .split_once('\'')
            .and_then(|(_, rest)| rest.split_once('\''))
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        let lease_s = line
            .split_whitespace()
            .last()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        out.push(UpnpMapping {
            protocol: protocol.to_string(),
            external_port,
            internal,
            description,
            lease_s,
        });
    }
    out
}

/// Parses miniupnpd lease lines `TCP:7144:192.168.77.10:7144:1795326931:desc`.
pub fn parse_leases(text: &str) -> Vec<Lease> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(6, ':');
            let protocol = f.next()?.to_string();
            let external_port = f.next()?.parse().ok()?;
            let ip: Ipv4Addr = f.next()?.parse().ok()?;
            let port: u16 = f.next()?.parse().ok()?;
            let expires = f.next()?.parse().ok()?;
            let description = f.next().unwrap_or("").to_string();
            Some(Lease {
                protocol,
                external_port,
                internal: SocketAddrV4::new(ip, port),
                expires,
                description,
            })
        })
        .collect()
}

/// The rule lines of `nft list chain` output (no table/chain/type/brace lines).
pub fn nft_rule_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("table ")
                && !l.starts_with("chain ")
                && !l.starts_with("type ")
                && *l != "}"
        })
        .map(str::to_string)
        .collect()
}

/// Parses `… th dport 7144 dnat ip to 192.168.77.10:7144` rules.
pub fn parse_dnat(text: &str) -> Vec<Dnat> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let dport = words.iter().position(|w| *w == "dport")?;
            let to = words.iter().position(|w| *w == "to")?;
            if !words.contains(&"dnat") {
                return None;
            }
            Some(Dnat {
                external_port: words.get(dport + 1)?.parse().ok()?,
                to: words.get(to + 1)?.parse().ok()?,
            })
        })
        .collect()
}

/// The `portmap` object of the daemon's `/status`.
pub fn portmap_status(daemon: &Daemon) -> serde_json::Value {
    daemon.status_json()["portmap"].clone()
}

/// Polls `/status` every 100 ms until `accept(portmap)` holds; returns that
/// `portmap` object, or Err(the last one seen) after `timeout`.
pub fn wait_portmap(
    daemon: &Daemon,
    timeout: Duration,
    mut accept: impl FnMut(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match daemon.try_request("GET", "/status", &[]) {
            Ok(r) if r.status == 200 => serde_json::from_slice::<serde_json::Value>(&r.body)
                .map(|v| v["portmap"].clone())
                .unwrap_or(serde_json::Value::Null),
            _ => serde_json::Value::Null,
        };
        if accept(&last) {
            return Ok(last);
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes test-bed namespaces `rcigd-<pid>-<n>-<role>` whose creating
/// process no longer exists (a killed earlier run). Their miniupnpd dies by
/// its own `timeout`.
fn remove_stale() {
    let Ok(out) = run("ip", &["netns", "list"], None) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let parts: Vec<&str> = name.split('-').collect();
        if parts.len() != 4 || parts[0] != "rcigd" || parts[2].parse::<u32>().is_err() {
            continue;
        }
        let Ok(pid) = parts[1].parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name], None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upnpc_rows() {
        let text = " i protocol exPort->inAddr:inPort description remoteHost leaseTime\n \
                    0 TCP  7145->192.168.77.20:7144  't2 x' '' 600\n \
                    1 TCP  7144->192.168.77.10:7144  'ringcast' '' 0\n\
                    GetGenericPortMappingEntry() returned 713 (SpecifiedArrayIndexInvalid)\n";
        let rows = parse_upnpc_list(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].external_port, 7145);
        assert_eq!(rows[0].internal, "192.168.77.20:7144".parse().unwrap());
        assert_eq!(rows[0].description, "t2 x");
        assert_eq!(rows[0].lease_s, 600);
        assert_eq!(rows[1].description, "ringcast");
    }

    #[test]
    fn parses_leases_and_rules() {
        let leases = parse_leases(
            "TCP:7144:192.168.77.10:7144:1795326931:PCP MAP 0a0b\nTCP:7200:192.168.77.10:7200:0:NAT-PMP 7200 tcp\n",
        );
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[0].expires, 1795326931);
        assert_eq!(leases[0].description, "PCP MAP 0a0b");
        let nft = "table inet filter {\n\tchain prerouting_miniupnpd {\n\t\tiif \"wan0\" @nh,72,8 0x6 th dport 7144 dnat ip to 192.168.77.10:7144\n\t}\n}\n";
        assert_eq!(
            parse_dnat(nft),
            vec![Dnat {
                external_port: 7144,
                to: "192.168.77.10:7144".parse().unwrap()
            }]
        );
        assert_eq!(nft_rule_lines(nft).len(), 1);
    }
}
