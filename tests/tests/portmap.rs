//! Port mapping against a real home router: ringcast in a LAN namespace asks
//! miniupnpd (UPnP IGD v1/v2, NAT-PMP, PCP) in a router namespace to forward
//! its peer port, and a host on the router's WAN side connects through it.
//! Also: a conflict with another LAN host's mapping, a carrier-grade NAT, a
//! router reboot, a clean exit, and hostile gateways (broken, huge, short,
//! dripping, silent answers) that must not hurt the LAN service.
//!
//! Every test builds its own [`Testbed`] (four namespaces, deleted on drop)
//! and needs root. The reference clients `upnpc` and `natpmpc` and the
//! router's nftables rules and lease file are the truth for what is mapped.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::time::{Duration, Instant};

use ringcast_tests::daemon::json_u64;
use ringcast_tests::igd::{
    portmap_status, wait_portmap, Node, Testbed, TestbedOptions, Wan, LAN_HTTP_PORT, PEER_PORT,
};
use ringcast_tests::*;

/// How soon after the daemon listens the mapping must be in place.
const MAP_WITHIN: Duration = Duration::from_secs(2);

fn is_state(p: &serde_json::Value, state: &str) -> bool {
    p["state"].as_str() == Some(state)
}

/// Waits for `state == "mapped"`; panics with the last status and the
/// router's log otherwise.
fn wait_mapped(tb: &Testbed, daemon: &Daemon, within: Duration) -> serde_json::Value {
    match wait_portmap(daemon, within, |p| is_state(p, "mapped")) {
        Ok(p) => p,
        Err(last) => panic!(
            "not mapped within {within:?}; last portmap status: {last}\n--- daemon portmap lines ---\n{}\n--- miniupnpd log tail ---\n{}",
            portmap_lines(daemon).join("\n"),
            tail(&tb.router_log(), 30)
        ),
    }
}

fn portmap_lines(daemon: &Daemon) -> Vec<String> {
    daemon
        .logs()
        .into_iter()
        .filter(|l| l.contains("portmap:"))
        .collect()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `"ip:port"` of a status field.
fn addr_field(p: &serde_json::Value, key: &str) -> SocketAddrV4 {
    p[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("portmap.{key} is not ip:port: {p}"))
}

fn is_banner(bytes: &Option<Vec<u8>>) -> bool {
    bytes.as_ref().is_some_and(|b| b.starts_with(b"ringcast/"))
}

fn show(bytes: &Option<Vec<u8>>) -> String {
    match bytes {
        None => "no connection".into(),
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
    }
}

/// What the internet sees on the LAN HTTP port of the router's WAN address:
/// must be nothing (refused or timeout, and no bytes either way).
fn assert_lan_http_not_reachable(tb: &Testbed) {
    let got = tb.connect_from_internet(tb.wan_ip(), LAN_HTTP_PORT);
    assert!(
        got.as_ref().is_none_or(|b| b.is_empty()),
        "the LAN HTTP port {LAN_HTTP_PORT} answers from the internet: {}",
        show(&got)
    );
    assert!(
        !tb.dnat_rules()
            .iter()
            .any(|d| d.to.port() == LAN_HTTP_PORT || d.external_port == LAN_HTTP_PORT),
        "a forwarding rule for the LAN HTTP port exists:\n{}",
        tb.nft_rules()
    );
}

/// The shared part of the two UPnP tests: maps within 2 s, upnpc sees it,
/// the banner comes through, nothing else does; returns the portmap status.
fn upnp_maps_peer_port(tb: &Testbed, method: &str) -> (Daemon, serde_json::Value) {
    let daemon = tb.start_daemon(&["--portmap", "upnp,pcp,natpmp", "--portmap-check", "3"]);
    let p = wait_mapped(tb, &daemon, MAP_WITHIN);
    println!("portmap: {p}");
    assert_eq!(p["method"].as_str(), Some(method), "{p}");
    let external = addr_field(&p, "external");
    let internal = addr_field(&p, "internal");
    assert_eq!(*external.ip(), tb.wan_ip(), "{p}");
    assert_eq!(
        internal,
        SocketAddrV4::new(tb.cli_ip(), PEER_PORT),
        "internal must be the LAN address and peer port: {p}"
    );
    assert_eq!(
        p["gateway"].as_str(),
        Some(tb.router_lan_ip().to_string().as_str()),
        "{p}"
    );
    assert_eq!(p["reachable"].as_bool(), Some(true), "{p}");
    assert!(json_u64(&p, "/maps") >= 1, "{p}");
    let status = daemon.status_json();
    assert_eq!(
        status["peer_port"].as_u64(),
        Some(PEER_PORT as u64),
        "{status}"
    );

    let listed = tb.upnpc_list();
    println!("upnpc -l: {listed:?}");
    let ours: Vec<_> = listed.iter().filter(|m| m.internal == internal).collect();
    assert_eq!(
        ours.len(),
        1,
        "upnpc -l must list exactly one mapping to {internal}:\n{}",
        tb.upnpc_list_raw()
    );
    assert_eq!(ours[0].external_port, external.port());
    assert_eq!(ours[0].protocol, "TCP");
    assert!(
        !ours[0].description.is_empty(),
        "the mapping has no description"
    );

    let got = tb.connect_from_internet(tb.wan_ip(), external.port());
    assert!(
        is_banner(&got),
        "from the internet, {external} should give the ringcast/ banner, got {}",
        show(&got)
    );
    assert_lan_http_not_reachable(tb);
    (daemon, p)
}

/// Reference clients against the test bed alone (no ringcast): upnpc maps
/// and lists, the DNAT rule carries a WAN connection to a LAN listener,
/// natpmpc maps and deletes, a restart with empty leases and flushed chains
/// forgets everything, and upnpc gives up on every fake-IGD mode within its
/// own timeout. If this fails, the other tests here prove nothing.
#[test]
fn testbed_reference_clients_work() {
    require_root();
    let mut tb = Testbed::default_igd();
    let tv = tb.tv_ip();

    // A one-line banner server in the TV namespace, for one connection.
    let tv_ns = tb.ns(Node::Tv);
    let server = std::thread::spawn(move || {
        ringcast_tests::netns::enter_current_thread(&tv_ns);
        let listener = TcpListener::bind((tv, 17144)).expect("bind in tv");
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok((mut s, _)) = listener.accept() {
                use std::io::Write;
                let _ = s.write_all(b"ringcast/test-bed\n");
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    tb.upnpc_add_from_tv(17144, 27144, 600)
        .expect("upnpc -a from the TV");
    let listed = tb.upnpc_list();
    assert!(
        listed
            .iter()
            .any(|m| m.external_port == 27144 && m.internal == SocketAddrV4::new(tv, 17144)),
        "{}",
        tb.upnpc_list_raw()
    );
    assert!(
        tb.dnat_rules().iter().any(|d| d.external_port == 27144),
        "{}",
        tb.nft_rules()
    );
    assert!(tb.lease_file().iter().any(|l| l.external_port == 27144));
    let got = tb.connect_from_internet(tb.wan_ip(), 27144);
    assert_eq!(got.as_deref(), Some(&b"ringcast/test-bed\n"[..]));
    assert!(server.join().unwrap());
    assert_eq!(tb.connect_from_internet(tb.wan_ip(), 27145), None);

    // NAT-PMP from the client: map with a 30 s lease, renew, delete.
    let gw = tb.router_lan_ip().to_string();
    let map = |life: &str| {
        tb.exec(
            Node::Client,
            &["timeout", "10", "natpmpc", "-g", &gw, "-a", "7300", "7300", "tcp", life],
        )
    };
    let out = map("30");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Mapped public port 7300"),
        "{out:?}"
    );
    let first = tb.lease_file();
    let e1 = first.iter().find(|l| l.external_port == 7300).unwrap().expires;
    assert!(first
        .iter()
        .any(|l| l.external_port == 7300 && l.description == "NAT-PMP 7300 tcp"));
    std::thread::sleep(Duration::from_millis(1100));
    map("30");
    let e2 = tb
        .lease_file()
        .iter()
        .find(|l| l.external_port == 7300)
        .unwrap()
        .expires;
    assert!(e2 > e1, "a NAT-PMP renewal moves the lease expiry ({e1} -> {e2})");
    map("0");
    assert!(!tb.dnat_rules().iter().any(|d| d.external_port == 7300));

    // Reboot: no mapping survives.
    let old_pid = tb.miniupnpd_pid().expect("miniupnpd pid");
    tb.restart_router(true);
    assert_ne!(tb.miniupnpd_pid(), Some(old_pid));
    assert!(tb.upnpc_list().is_empty(), "{}", tb.upnpc_list_raw());
    assert!(tb.nft_rule_lines().is_empty(), "{}", tb.nft_rules());
    drop(tb);

    // Each fake mode: upnpc (through its own timeouts) finds no valid IGD,
    // and the fake saw the description request.
    let modes = ["malformed", "huge", "badlength", "drip", "silent"];
    let results: Vec<(String, Result<(), String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = modes
            .iter()
            .map(|mode| {
                s.spawn(move || {
                    let tb = Testbed::new(TestbedOptions {
                        miniupnpd: false,
                        ..TestbedOptions::default()
                    });
                    let fake = tb.start_fake_igd(mode, Duration::from_secs(30));
                    let started = Instant::now();
                    let out = tb.exec(Node::Client, &["timeout", "10", "upnpc", "-l"]);
                    let took = started.elapsed();
                    let text = String::from_utf8_lossy(&out.stdout).into_owned()
                        + &String::from_utf8_lossy(&out.stderr);
                    let events = fake.events();
                    let r = if !events.iter().any(|e| e.starts_with("ssdp ")) {
                        Err(format!("no M-SEARCH reached the fake: {events:?}"))
                    } else if !events.iter().any(|e| e.contains("GET /rootDesc.xml")) {
                        Err(format!("upnpc did not fetch the description: {events:?}\n{text}"))
                    } else if text.contains("Found valid IGD") {
                        Err(format!("upnpc accepted the fake: {text}"))
                    } else {
                        println!("fake {mode}: upnpc gave up after {took:?}");
                        Ok(())
                    };
                    (mode.to_string(), r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (mode, r) in &results {
        if let Err(e) = r {
            panic!("fake IGD mode {mode}: {e}");
        }
    }
}
