//! Every ingest kind, fed with a real ffmpeg-made H.264/AAC MPEG-TS: 20
//! concurrent HTTP readers each get a byte-for-byte contiguous run of the TS
//! packets the source sent, and ffmpeg decodes each capture without errors.
//!
//! Sources: HTTP pull (plain and chunked), UDP and RTP multicast (inside a
//! network namespace made by the test), UDP unicast on loopback, stdin, TCP
//! push and a looped file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringcast_tests::check::{check_all, Source};
use ringcast_tests::daemon::{find_channel, json_u64};
use ringcast_tests::senders::{http_source, pipe_writer, tcp_pusher, udp_sender, SendPlan};
use ringcast_tests::*;

const READERS: usize = 20;
const READ_FOR: Duration = Duration::from_secs(6);
/// Senders stop by themselves after this, whatever happens.
const SEND_FOR: Duration = Duration::from_secs(60);

struct Media {
    path: std::path::PathBuf,
    data: Arc<Vec<u8>>,
    rate: f64,
    fps: f64,
}

fn media() -> Media {
    let spec = TsSpec::default();
    let path = make_ts(spec);
    let data = Arc::new(std::fs::read(&path).expect("read media"));
    let rate = ts::pcr_bitrate_bps(&data).expect("PCR rate of test media");
    Media {
        path,
        data,
        rate,
        fps: f64::from(spec.fps),
    }
}

/// Waits until `/status` says the channel is live (up to 15 s).
fn wait_live(daemon: &Daemon, channel: &str) {
    let live = wait_for(Duration::from_secs(15), || {
        let status = daemon.status_json();
        let state = find_channel(&status, channel)?["state"]
            .as_str()?
            .to_string();
        (state == "live").then_some(())
    });
    assert!(
        live.is_some(),
        "channel {channel} never became live: {}",
        daemon.status_json()
    );
}

/// Starts 20 readers of `/channel/<channel>.ts`, checks every capture, then
/// checks the channel's counters and a clean SIGTERM exit.
fn read_and_check(daemon: Daemon, channel: &str, label: &str, m: &Media) {
    wait_live(&daemon, channel);
    let options =
        ReaderOptions::new(&format!("/channel/{channel}.ts"), READ_FOR).netns(daemon.netns());
    // Connects 25 ms apart, then all 20 read at once. (A same-millisecond
    // burst of connects is its own test in http_api.rs.)
    let readers = Reader::start_many(daemon.addr(), &options, READERS, Duration::from_millis(25));
    let results: Vec<ReaderResult> = readers.into_iter().map(Reader::join).collect();
    let dir = scratch_dir(&format!("ingest_{label}"));
    let source = Source {
        file: &m.data,
        rate_bps: m.rate,
        fps: m.fps,
    };
    check_all(label, &results, &source, READ_FOR, &dir);

    let captured: u64 = results.iter().map(|r| r.total_bytes).sum();
    let status = daemon.status_json();
    let ch = find_channel(&status, channel)
        .expect("channel in /status")
        .clone();
    println!("{label}: /status channel {ch}");
    assert!(json_u64(&ch, "/bytes_in") > 0);
    assert!(
        json_u64(&ch, "/bytes_out") >= captured,
        "{label}: bytes_out {} < bytes the readers got {captured}",
        json_u64(&ch, "/bytes_out")
    );
    assert!(json_u64(&status, "/totals/bytes_out") >= captured);
    assert_eq!(
        json_u64(&ch, "/garbage_bytes"),
        0,
        "{label}: clean source counted as garbage"
    );
    assert_eq!(
        json_u64(&ch, "/sync_losses"),
        0,
        "{label}: clean source lost sync"
    );
    let readers_gone = wait_for(Duration::from_secs(5), || {
        (json_u64(&daemon.channel_status(channel), "/readers") == 0).then_some(())
    });
    assert!(
        readers_gone.is_some(),
        "{label}: readers still counted after they left"
    );
    let exit = daemon.stop();
    assert!(exit.success(), "{label}: SIGTERM should exit 0, got {exit}");
}

fn base_args() -> Vec<String> {
    vec!["--listen".into(), "127.0.0.1:0".into()]
}

#[test]
fn http_pull_plain() {
    let m = media();
    let source = http_source(SendPlan::new(m.data.clone(), m.rate, SEND_FOR), false);
    let mut args = base_args();
    args.push("--channel".into());
    args.push(format!("hp=http://{}/live/stream.ts", source.addr()));
    let daemon = Daemon::start(&args);
    read_and_check(daemon, "hp", "http_plain", &m);
    let stats = source.finish();
    println!(
        "http source: {} connections, requests {:?}",
        stats.connections, stats.requests
    );
    assert!(
        stats
            .requests
            .iter()
            .all(|r| r.starts_with("GET /live/stream.ts HTTP/1.")),
        "{:?}",
        stats.requests
    );
}

#[test]
fn http_pull_chunked() {
    let m = media();
    let source = http_source(SendPlan::new(m.data.clone(), m.rate, SEND_FOR), true);
    let mut args = base_args();
    args.push("--channel".into());
    args.push(format!("hc=http://{}/chunked.ts", source.addr()));
    let daemon = Daemon::start(&args);
    read_and_check(daemon, "hc", "http_chunked", &m);
    let stats = source.finish();
    println!("http source: {} connections", stats.connections);
}

fn multicast_case(rtp: bool) {
    let m = media();
    let ns = Netns::new();
    let scheme = if rtp { "rtp" } else { "udp" };
    let group: SocketAddr = if rtp {
        "239.255.20.2:5020"
    } else {
        "239.255.20.1:5010"
    }
    .parse()
    .unwrap();
    let mut args = base_args();
    args.push("--channel".into());
    args.push(format!("mc={scheme}://{group}"));
    let daemon = Daemon::start_with(DaemonOptions::new(&args).netns(ns.name()));
    let plan = SendPlan::new(m.data.clone(), m.rate, SEND_FOR).netns(Some(ns.name()));
    let sender = udp_sender(group, rtp, plan);
    let joined = wait_for(Duration::from_secs(10), || {
        ns.maddr("lo")
            .contains(&group.ip().to_string())
            .then_some(())
    });
    assert!(
        joined.is_some(),
        "daemon did not join {group}: {}",
        ns.maddr("lo")
    );
    read_and_check(daemon, "mc", &format!("{scheme}_multicast"), &m);
    let stats = sender.finish();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    drop(ns);
}

#[test]
fn udp_multicast_in_netns() {
    multicast_case(false);
}

#[test]
fn rtp_multicast_in_netns() {
    multicast_case(true);
}

#[test]
fn udp_unicast_on_loopback() {
    let m = media();
    let port = free_udp_port();
    let mut args = base_args();
    args.push("--channel".into());
    args.push(format!("uu=udp://127.0.0.1:{port}"));
    let daemon = Daemon::start(&args);
    let dest: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sender = udp_sender(dest, false, SendPlan::new(m.data.clone(), m.rate, SEND_FOR));
    read_and_check(daemon, "uu", "udp_unicast", &m);
    drop(sender);
}

#[test]
fn stdin_push() {
    let m = media();
    let mut args = base_args();
    args.push("--channel".into());
    args.push("si=stdin".into());
    let mut daemon = Daemon::start_with(DaemonOptions::new(&args).stdin_piped());
    let writer = pipe_writer(
        daemon.take_stdin(),
        SendPlan::new(m.data.clone(), m.rate, SEND_FOR),
    );
    read_and_check(daemon, "si", "stdin", &m);
    drop(writer);
}

#[test]
fn tcp_push() {
    let m = media();
    let port = free_tcp_port();
    let mut args = base_args();
    args.push("--channel".into());
    args.push(format!("tp=tcp://127.0.0.1:{port}"));
    let daemon = Daemon::start(&args);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let pusher = tcp_pusher(addr, SendPlan::new(m.data.clone(), m.rate, SEND_FOR));
    read_and_check(daemon, "tp", "tcp_push", &m);
    let stats = pusher.finish();
    assert_eq!(stats.connections, 1);
}

#[test]
fn file_loop() {
    let m = media();
    let mut args = base_args();
    args.push("--channel".into());
    args.push(format!("fl=file:{}", m.path.display()));
    let daemon = Daemon::start(&args);
    read_and_check(daemon, "fl", "file_loop", &m);
}

/// The same bar with `--send-mode sendfile` forced. The default (`auto`)
/// copies for players on this host, so this is what covers the zero-copy path.
#[test]
fn file_loop_send_mode_sendfile() {
    let m = media();
    let mut args = base_args();
    args.extend(["--send-mode".into(), "sendfile".into(), "--channel".into()]);
    args.push(format!("fs=file:{}", m.path.display()));
    let daemon = Daemon::start(&args);
    read_and_check(daemon, "fs", "file_loop_sendfile", &m);
}

/// The same bar with `--send-mode copy` (plain writes, never sendfile).
#[test]
fn file_loop_send_mode_copy() {
    let m = media();
    let mut args = base_args();
    args.extend(["--send-mode".into(), "copy".into(), "--channel".into()]);
    args.push(format!("fc=file:{}", m.path.display()));
    let daemon = Daemon::start(&args);
    read_and_check(daemon, "fc", "file_loop_copy", &m);
}
