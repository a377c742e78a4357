//! Checks of the test harness itself, without the daemon: the media it
//! makes, the decode check, the senders (into receivers written here) and the
//! network-namespace guard. If these fail, the daemon tests mean nothing.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcast_tests::senders::{http_source, pipe_writer, tcp_pusher, udp_sender, SendPlan};
use ringcast_tests::ts::{self, Sent, PACKET};
use ringcast_tests::*;

fn test_media() -> (Arc<Vec<u8>>, f64) {
    let path = make_ts(TsSpec::default());
    let data = std::fs::read(&path).expect("read media");
    let rate = ts::pcr_bitrate_bps(&data).expect("PCR bitrate");
    (Arc::new(data), rate)
}

#[test]
fn made_media_is_h264_aac_at_the_mux_rate() {
    let spec = TsSpec::default();
    let path = make_ts(spec);
    let streams = ffprobe_streams(path.to_str().unwrap(), &[], Duration::from_secs(30)).unwrap();
    let kinds: Vec<(&str, &str)> = streams
        .iter()
        .map(|s| (s.codec_type.as_str(), s.codec_name.as_str()))
        .collect();
    assert_eq!(kinds, vec![("video", "h264"), ("audio", "aac")]);
    let data = std::fs::read(&path).unwrap();
    ts::check_aligned(&data).unwrap();
    let rate = ts::pcr_bitrate_bps(&data).unwrap();
    assert!(
        (rate / spec.bitrate_bps() - 1.0).abs() < 0.03,
        "PCR rate {rate} vs mux {}",
        spec.bitrate_bps()
    );
}

#[test]
fn demo_asset_is_real_h264_aac() {
    let path = workspace_root().join("assets/demo.ts");
    let size = std::fs::metadata(&path)
        .expect("assets/demo.ts exists")
        .len();
    assert!(size <= 2 * 1024 * 1024, "demo.ts is {size} bytes");
    let streams = ffprobe_streams(path.to_str().unwrap(), &[], Duration::from_secs(30)).unwrap();
    let kinds: Vec<&str> = streams.iter().map(|s| s.codec_name.as_str()).collect();
    assert_eq!(kinds, vec!["h264", "aac"]);
    let data = std::fs::read(&path).unwrap();
    let dir = scratch_dir("harness_demo_asset");
    ffmpeg_decode_check(&data, &dir, "demo").assert_clean("demo.ts", 200, 300, 0);
}

/// A capture that starts mid-GOP and crosses the loop point of a looped file
/// decodes cleanly after trimming; one with packets missing does not.
#[test]
fn decode_check_accepts_live_cuts_and_rejects_holes() {
    let (data, _) = test_media();
    let dir = scratch_dir("harness_decode_check");
    let mut cut = Vec::new();
    // Start 3.3 s into the 12 s file, run 14 s: mid-GOP start, crosses the loop.
    let per_second = (data.len() / 12 / PACKET) * PACKET;
    ts::cyclic_slice(
        &data,
        33 * per_second / 10 / PACKET * PACKET,
        14 * per_second,
        &mut cut,
    );
    assert_eq!(
        ts::find_contiguous_run(&cut, Sent::Cyclic(&data)).map(|o| o % PACKET),
        Ok(0)
    );
    let report = ffmpeg_decode_check(&cut, &dir, "cut");
    // One wrap of the file: at most one continuity jump per stream.
    report.assert_clean("looped cut", 250, 400, 2);

    // Remove 40 packets of video in the middle: contiguity fails, and ffmpeg
    // sees it too (so the decode check is not blind).
    let (_, _, program) = ts::find_psi(&data).unwrap();
    let video = program.video_pid().unwrap();
    let mut holed = Vec::new();
    let mut dropped = 0;
    for (i, p) in cut.chunks_exact(PACKET).enumerate() {
        if i > cut.len() / PACKET / 2 && ts::pid(p) == video && dropped < 40 {
            dropped += 1;
            continue;
        }
        holed.extend_from_slice(p);
    }
    assert!(ts::find_contiguous_run(&holed, Sent::Cyclic(&data)).is_err());
    let holed_report = ffmpeg_decode_check(&holed, &dir, "holed");
    assert!(
        !holed_report.errors.is_empty() || holed_report.corrupt_packets > report.corrupt_packets,
        "ffmpeg did not notice 40 missing video packets: {holed_report:?}"
    );
}

#[test]
fn udp_and_rtp_senders_send_paced_1316_byte_datagrams() {
    let (data, rate) = test_media();
    for rtp in [false, true] {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let plan = SendPlan::new(data.clone(), rate, Duration::from_secs(3));
        let sender = udp_sender(rx.local_addr().unwrap(), rtp, plan);
        let mut got = Vec::new();
        let mut last_seq: Option<u16> = None;
        let mut buf = [0u8; 2048];
        let start = Instant::now();
        while let Ok(n) = rx.recv(&mut buf) {
            let payload = if rtp {
                assert_eq!(buf[0], 0x80, "RTP v2, no padding/extension/CSRC");
                assert_eq!(buf[1] & 0x7f, 33, "payload type MP2T");
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                if let Some(prev) = last_seq {
                    assert_eq!(seq, prev.wrapping_add(1));
                }
                last_seq = Some(seq);
                &buf[12..n]
            } else {
                &buf[..n]
            };
            assert_eq!(payload.len(), 1316);
            got.extend_from_slice(payload);
        }
        let elapsed = start.elapsed().as_secs_f64() - 2.0; // minus the final timeout
        let stats = sender.finish();
        assert!(stats.errors.is_empty(), "{:?}", stats.errors);
        assert_eq!(got.len() as u64, stats.bytes, "loopback UDP lost nothing");
        ts::assert_contiguous_run("udp receiver", &got, Sent::Cyclic(&data));
        let measured = got.len() as f64 * 8.0 / elapsed;
        assert!(
            (measured / rate - 1.0).abs() < 0.1,
            "paced at {measured} bit/s, want {rate}"
        );
    }
}

#[test]
fn stream_senders_deliver_the_file_in_order() {
    let (data, rate) = test_media();
    // TCP pusher into our own listener.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let plan = SendPlan::new(data.clone(), rate, Duration::from_secs(2));
    let pusher = tcp_pusher(listener.local_addr().unwrap(), plan.clone());
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    assert!(pusher.finish().errors.is_empty());
    assert!(got.len() > 150_000, "got {}", got.len());
    let whole = got.len() / PACKET * PACKET;
    ts::assert_contiguous_run("tcp push", &got[..whole], Sent::Cyclic(&data));

    // Pipe writer.
    let (mut r, w) = std::io::pipe().unwrap();
    let writer = pipe_writer(w, plan.clone());
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    writer.finish();
    let whole = got.len() / PACKET * PACKET;
    ts::assert_contiguous_run("pipe", &got[..whole], Sent::Cyclic(&data));

    // HTTP source, plain and chunked, read with our client.
    for chunked in [false, true] {
        let source = http_source(plan.clone(), chunked);
        let r = http_get(source.addr(), "/live.ts").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("video/mp2t"));
        let whole = r.body.len() / PACKET * PACKET;
        assert!(whole > 100_000, "{} bytes", r.body.len());
        ts::assert_contiguous_run("http source", &r.body[..whole], Sent::Cyclic(&data));
        let stats = source.finish();
        assert_eq!(stats.connections, 1);
        assert_eq!(stats.requests, vec!["GET /live.ts HTTP/1.1".to_string()]);
    }
}

/// Garbage goes in between packets and contains no sync byte; removing it
/// gives back the stream.
#[test]
fn garbage_injection_is_between_packets() {
    let (data, rate) = test_media();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut plan = SendPlan::new(data.clone(), rate, Duration::from_millis(1500));
    plan.garbage = Some(senders::Garbage {
        first_after: Duration::from_millis(200),
        every: Duration::from_millis(300),
        bytes: 5000,
        bursts_max: 3,
    });
    let pusher = tcp_pusher(listener.local_addr().unwrap(), plan);
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    let stats = pusher.finish();
    assert_eq!(stats.garbage_bursts, 3);
    assert_eq!(stats.garbage_bytes, 15_000);
    // Strip runs that are not 0x47-led packets of the source.
    let mut clean = Vec::new();
    let mut i = 0;
    while i + PACKET <= got.len() {
        if got[i] == 0x47 {
            clean.extend_from_slice(&got[i..i + PACKET]);
            i += PACKET;
        } else {
            i += 1;
        }
    }
    assert_eq!(got.len() - clean.len() - (got.len() - i), 15_000);
    ts::assert_contiguous_run("de-garbaged", &clean, Sent::Cyclic(&data));
}

/// The namespace guard: multicast on its loopback reaches a joined socket,
/// the join shows in `ip maddr`, and the namespace is gone after drop.
#[test]
fn netns_guard_multicast_and_cleanup() {
    let (data, rate) = test_media();
    let ns = Netns::new();
    let name = ns.name().to_string();
    assert!(std::fs::metadata(format!("/run/netns/{name}")).is_ok());
    let group = Ipv4Addr::new(239, 255, 77, 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let name2 = name.clone();
    let receiver = std::thread::spawn(move || {
        ringcast_tests::netns::enter_current_thread(&name2);
        let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 5077))).unwrap();
        s.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        tx.send(()).unwrap();
        let mut total = 0;
        let mut buf = [0u8; 2048];
        while let Ok(n) = s.recv(&mut buf) {
            total += n;
        }
        total
    });
    rx.recv().unwrap();
    assert!(
        ns.maddr("lo").contains("239.255.77.1"),
        "{}",
        ns.maddr("lo")
    );
    let plan = SendPlan::new(data, rate, Duration::from_secs(1)).netns(Some(&name));
    let sender = udp_sender(SocketAddr::from((group, 5077)), false, plan);
    let total = receiver.join().unwrap();
    let stats = sender.finish();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(total as u64, stats.bytes);
    assert!(total > 100_000);
    // Nothing of this reached the host's loopback: a host socket on the same
    // port and group would have needed a join on the host, which we never do.
    drop(ns);
    assert!(
        std::fs::metadata(format!("/run/netns/{name}")).is_err(),
        "namespace not deleted"
    );
}
