//! Isolation and steady state: a stalled reader does not slow the others
//! and is skipped or dropped per policy; bad input (garbage in a source,
//! huge request heads, a burst of 5,000 dropped connections, unknown
//! channels) neither hurts existing readers nor grows RSS; and relaying to 50
//! readers allocates nothing.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcast_tests::check::{check_capture, Source};
use ringcast_tests::daemon::{find_channel, json_u64};
use ringcast_tests::http::raw_request;
use ringcast_tests::reader::End;
use ringcast_tests::senders::{tcp_pusher, Garbage, SendPlan};
use ringcast_tests::ts::{self, Sent};
use ringcast_tests::*;

/// A 2 Mbit/s stream, so stalls and laps happen within seconds.
fn fast_media() -> (std::path::PathBuf, Arc<Vec<u8>>, f64) {
    let spec = TsSpec {
        video_kbps: 1500,
        mux_kbps: 2000,
        ..TsSpec::default()
    };
    let path = make_ts(spec);
    let data = Arc::new(std::fs::read(&path).unwrap());
    let rate = ts::pcr_bitrate_bps(&data).unwrap();
    (path, data, rate)
}

fn normal_media() -> (std::path::PathBuf, Arc<Vec<u8>>, f64) {
    let path = make_ts(TsSpec::default());
    let data = Arc::new(std::fs::read(&path).unwrap());
    let rate = ts::pcr_bitrate_bps(&data).unwrap();
    (path, data, rate)
}

/// Each reader's rate over [from, to] must be >= `fraction` of `rate`.
fn assert_rates(
    label: &str,
    results: &[ReaderResult],
    from: Instant,
    to: Instant,
    rate: f64,
    fraction: f64,
) {
    for (i, r) in results.iter().enumerate() {
        let got = r.rate_bps(from, to);
        println!(
            "{label} #{i}: {:.0} kbit/s over {:.1} s ({:.0}% of the source)",
            got / 1000.0,
            (to - from).as_secs_f64(),
            got / rate * 100.0
        );
        assert!(
            got >= rate * fraction,
            "{label} #{i}: {got:.0} bit/s over {:?} is below {:.0}% of the source's {rate:.0} bit/s",
            to - from,
            fraction * 100.0
        );
    }
}

fn stalled_options(
    path: &str,
    read_for: Duration,
    stall_after: Duration,
    stall_for: Duration,
) -> ReaderOptions {
    let mut o = ReaderOptions::new(path, read_for);
    o.stall = Some((stall_after, stall_for));
    o.small_socket = true;
    o
}

/// Policy 1: a reader that stops reading for 10 s is lapped by a 1 MiB ring
/// (4 s at 2 Mbit/s); it is skipped forward (counted in `skips`), keeps its
/// connection and goes on with whole packets of the stream, while five other
/// readers keep the source's rate throughout.
#[test]
fn stalled_reader_is_skipped_forward_and_others_keep_their_rate() {
    let (path, data, rate) = fast_media();
    let channel = format!("st=file:{}", path.display());
    let daemon = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--ring-size",
        "1M",
        "--stall-timeout",
        "60",
        "--channel",
        &channel,
    ]);
    let read_for = Duration::from_secs(20);
    let others = Reader::start_many(
        daemon.addr(),
        &ReaderOptions::new("/channel/st.ts", read_for),
        5,
        Duration::from_millis(25),
    );
    let stalled = Reader::start(
        daemon.addr(),
        stalled_options(
            "/channel/st.ts",
            read_for,
            Duration::from_secs(2),
            Duration::from_secs(10),
        ),
    );
    let stalled = stalled.join();
    let others: Vec<ReaderResult> = others.into_iter().map(Reader::join).collect();
    let (s0, s1) = stalled.stall_window.expect("the reader stalled");
    println!("stall lasted {:?}", s1 - s0);
    assert!(s1 - s0 >= Duration::from_secs(9));
    // From 1 s into the stall (the stalled socket is full by then) to its end.
    assert_rates(
        "other reader during the stall",
        &others,
        s0 + Duration::from_secs(1),
        s1,
        rate,
        0.9,
    );
    let dir = scratch_dir("isolation_skip_others");
    let source = Source {
        file: &data,
        rate_bps: rate,
        fps: 25.0,
    };
    for (i, r) in others.iter().enumerate() {
        println!(
            "{}",
            check_capture(&format!("other reader #{i}"), r, &source, read_for, &dir)
        );
    }

    let ch = daemon.channel_status("st");
    println!("/status: {ch}");
    assert_eq!(
        stalled.end,
        End::Duration,
        "the lapped reader should be skipped, not dropped (stall-timeout 60 s)"
    );
    assert!(
        json_u64(&ch, "/skips") >= 1,
        "the lapped reader was not counted in skips: {ch}"
    );
    assert_eq!(json_u64(&ch, "/drops"), 0, "{ch}");
    let dir = scratch_dir("isolation_skip");
    std::fs::write(dir.join("stalled.ts"), &stalled.body).unwrap();
    let segments = ts::segments(stalled.packets(), Sent::Cyclic(&data), 50).unwrap_or_else(|e| {
        panic!("stalled reader: capture is not whole packets of the source: {e}")
    });
    println!(
        "stalled reader: {} bytes in {} contiguous segments: {segments:?}",
        stalled.body.len(),
        segments.len()
    );
    assert!(
        segments.len() >= 2,
        "a reader lapped by the ring cannot have a gap-free capture"
    );
    assert!(
        segments.len() <= 1 + json_u64(&ch, "/skips") as usize,
        "more jumps in the capture than skips counted"
    );
    // After the skip it streams live again at the source's rate.
    let after = s1 + Duration::from_secs(2);
    assert_rates(
        "stalled reader after the skip",
        std::slice::from_ref(&stalled),
        after,
        stalled.ended_at,
        rate,
        0.8,
    );
    assert!(daemon.stop().success());
}

/// Policy 2: with --stall-timeout 4 and a ring that does not lap, a reader
/// that takes nothing for 10 s is disconnected (counted in `drops`), a reader
/// that pauses only 2 s is kept, and the others keep their rate.
#[test]
fn stalled_reader_is_dropped_after_the_stall_timeout() {
    let (path, data, rate) = fast_media();
    let channel = format!("dr=file:{}", path.display());
    let daemon = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--stall-timeout",
        "4",
        "--channel",
        &channel,
    ]);
    let read_for = Duration::from_secs(16);
    let others = Reader::start_many(
        daemon.addr(),
        &ReaderOptions::new("/channel/dr.ts", read_for),
        5,
        Duration::from_millis(25),
    );
    let brief = Reader::start(
        daemon.addr(),
        stalled_options(
            "/channel/dr.ts",
            read_for,
            Duration::from_secs(2),
            Duration::from_secs(2),
        ),
    );
    let stalled = Reader::start(
        daemon.addr(),
        stalled_options(
            "/channel/dr.ts",
            read_for,
            Duration::from_secs(2),
            Duration::from_secs(10),
        ),
    );
    let stalled = stalled.join();
    let brief = brief.join();
    let others: Vec<ReaderResult> = others.into_iter().map(Reader::join).collect();
    let (s0, s1) = stalled.stall_window.expect("stalled");
    assert_rates(
        "other reader during the stall",
        &others,
        s0 + Duration::from_secs(1),
        s1,
        rate,
        0.9,
    );
    let ch = daemon.channel_status("dr");
    println!("/status: {ch}");
    assert_eq!(
        stalled.end,
        End::Eof,
        "a reader stalled past --stall-timeout must be disconnected"
    );
    assert_eq!(
        json_u64(&ch, "/drops"),
        1,
        "exactly the stalled reader is dropped: {ch}"
    );
    assert_eq!(
        brief.end,
        End::Duration,
        "a 2 s pause is shorter than the 4 s stall timeout"
    );
    assert_eq!(
        json_u64(&ch, "/skips"),
        0,
        "a 16 MiB ring does not lap in 16 s: {ch}"
    );
    ts::assert_contiguous_run(
        "stalled reader (until dropped)",
        stalled.packets(),
        Sent::Cyclic(&data),
    );
    ts::assert_contiguous_run(
        "briefly paused reader",
        brief.packets(),
        Sent::Cyclic(&data),
    );
    for (i, r) in others.iter().enumerate() {
        assert_eq!(r.end, End::Duration);
        ts::assert_contiguous_run(
            &format!("other reader #{i}"),
            r.packets(),
            Sent::Cyclic(&data),
        );
    }
    assert!(
        daemon.wait_log("dropped", Duration::from_secs(1)).is_some(),
        "no log line about the dropped reader"
    );
    assert!(daemon.stop().success());
}

/// Opens and drops `total` connections from `threads` threads, bounded by
/// `limit` in time. Some send half a request first. Returns (opened, failed).
fn connection_burst(
    addr: SocketAddr,
    total: usize,
    threads: usize,
    limit: Duration,
) -> (usize, usize) {
    let deadline = Instant::now() + limit;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let (mut opened, mut failed) = (0, 0);
                for i in 0..total / threads {
                    if Instant::now() > deadline {
                        break;
                    }
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                        Ok(mut s) => {
                            opened += 1;
                            if (i + t) % 3 == 0 {
                                use std::io::Write;
                                let _ = s.write_all(b"GET /channel/go");
                            }
                        }
                        Err(_) => failed += 1,
                    }
                }
                (opened, failed)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Bad input: garbage inside a pushed source, 64 KiB request heads,
/// malformed requests, 5,000 connections opened and dropped, unknown
/// channels. Readers of a good channel keep their rate, readers of the bad
/// channel get only real packets, and RSS grows by less than 4 MiB.
#[test]
fn bad_input_does_not_hurt_readers_or_grow_memory() {
    let (good_path, good, good_rate) = normal_media();
    let (_, bad, bad_rate) = normal_media();
    let port = free_tcp_port();
    let daemon = Daemon::start(&[
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--channel".into(),
        format!("good=file:{}", good_path.display()),
        "--channel".into(),
        format!("bad=tcp://127.0.0.1:{port}"),
    ]);
    let mut plan = SendPlan::new(bad.clone(), bad_rate, Duration::from_secs(40));
    let garbage = Garbage {
        first_after: Duration::from_secs(6),
        every: Duration::from_millis(1500),
        bytes: 20_000,
        bursts_max: 6,
    };
    plan.garbage = Some(garbage);
    let pusher = tcp_pusher(format!("127.0.0.1:{port}").parse().unwrap(), plan);
    let read_for = Duration::from_secs(24);
    let good_readers = Reader::start_many(
        daemon.addr(),
        &ReaderOptions::new("/channel/good.ts", read_for),
        5,
        Duration::from_millis(25),
    );
    let bad_readers = Reader::start_many(
        daemon.addr(),
        &ReaderOptions::new("/channel/bad.ts", read_for),
        3,
        Duration::from_millis(25),
    );
    std::thread::sleep(Duration::from_secs(4));
    let rss_before = daemon.rss_kib();
    let abuse_start = Instant::now();

    // 64 KiB of headers, ten times.
    let mut huge = b"GET /channel/good.ts HTTP/1.1\r\nHost: x\r\n".to_vec();
    let mut n = 0;
    while huge.len() < 64 * 1024 {
        huge.extend_from_slice(format!("X-Padding-{n}: {}\r\n", "a".repeat(100)).as_bytes());
        n += 1;
    }
    huge.extend_from_slice(b"\r\n");
    for i in 0..10 {
        let r = raw_request(daemon.addr(), &huge, false, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("64 KiB request head #{i}: no response: {e}"));
        assert!(
            r.status == 431 || r.status == 400,
            "64 KiB request head answered {}",
            r.status
        );
    }
    // Malformed request lines.
    for bad_line in [
        "GARBAGE\r\n\r\n",
        "GET\r\n\r\n",
        "GET /channel/good.ts HTTP/9.9\r\n\r\n",
    ] {
        let r = raw_request(
            daemon.addr(),
            bad_line.as_bytes(),
            false,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{bad_line:?}: no response: {e}"));
        assert!(
            r.status == 400 || r.status == 505,
            "{bad_line:?} answered {}",
            r.status
        );
    }
    // 5,000 connections opened and dropped, bounded to 30 s.
    let burst_start = Instant::now();
    let (opened, failed) = connection_burst(daemon.addr(), 5000, 4, Duration::from_secs(30));
    println!(
        "burst: {opened} connections opened and dropped, {failed} failed, in {:?}",
        burst_start.elapsed()
    );
    assert!(
        opened >= 4000,
        "only {opened} of 5000 connections could be opened"
    );
    // New requests may be shed (503) while the daemon works off the burst,
    // but it must recover within seconds of the burst's end.
    let burst_end = Instant::now();
    let recovered = wait_for(Duration::from_secs(10), || {
        daemon
            .try_request("GET", "/channel/unknown.ts", &[])
            .ok()
            .filter(|r| r.status != 503)
            .map(|r| r.status)
    });
    println!(
        "answered again {:?} after the burst: {recovered:?}",
        burst_end.elapsed()
    );
    assert_eq!(
        recovered,
        Some(404),
        "daemon did not recover within 10 s of a 5,000 connection burst"
    );
    // Unknown channels.
    for i in 0..200 {
        let r = daemon.get(&format!("/channel/unknown{i}.ts"));
        assert_eq!(r.status, 404);
    }
    // Wait out the garbage bursts, then let things settle.
    let bursts_done = wait_for(Duration::from_secs(20), || {
        (pusher.stats().garbage_bursts >= garbage.bursts_max).then_some(())
    });
    assert!(
        bursts_done.is_some(),
        "pusher did not send its garbage: {:?}",
        pusher.stats()
    );
    let abuse_end = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = daemon.rss_kib();
    println!("RSS {rss_before} KiB -> {rss_after} KiB");

    let good_results: Vec<ReaderResult> = good_readers.into_iter().map(Reader::join).collect();
    let bad_results: Vec<ReaderResult> = bad_readers.into_iter().map(Reader::join).collect();
    let sent = pusher.finish();
    assert!(
        rss_after < rss_before + 4096,
        "RSS grew by {} KiB under bad input (limit 4096)",
        rss_after.saturating_sub(rss_before)
    );
    assert_rates(
        "good reader during the abuse",
        &good_results,
        abuse_start,
        abuse_end,
        good_rate,
        0.9,
    );
    let dir = scratch_dir("isolation_bad_input");
    let source = Source {
        file: &good,
        rate_bps: good_rate,
        fps: 25.0,
    };
    for (i, r) in good_results.iter().enumerate() {
        println!(
            "{}",
            check_capture(&format!("good reader #{i}"), r, &source, read_for, &dir)
        );
    }
    for (i, r) in bad_results.iter().enumerate() {
        r.assert_stream_head(&format!("bad-channel reader #{i}"));
        assert_eq!(
            r.end,
            End::Duration,
            "bad-channel reader #{i} was cut off by garbage in the source"
        );
        let segs = ts::segments(r.packets(), Sent::Cyclic(&bad), 100)
            .unwrap_or_else(|e| panic!("bad-channel reader #{i}: garbage reached a reader: {e}"));
        println!(
            "bad-channel reader #{i}: {} bytes in {} segments",
            r.body.len(),
            segs.len()
        );
        assert!(
            segs.len() <= 1 + garbage.bursts_max as usize,
            "bad-channel reader #{i}: {} pieces for {} garbage bursts",
            segs.len(),
            garbage.bursts_max
        );
    }
    let status = daemon.status_json();
    let bad_ch = find_channel(&status, "bad").unwrap();
    println!("bad channel: {bad_ch}\ntotals: {}", status["totals"]);
    let counted = json_u64(bad_ch, "/garbage_bytes");
    assert!(
        counted as f64 >= sent.garbage_bytes as f64 * 0.9
            && counted <= sent.garbage_bytes + 6 * 188 * 2,
        "garbage_bytes {counted}, but {} garbage bytes were sent",
        sent.garbage_bytes
    );
    assert!(json_u64(bad_ch, "/sync_losses") >= 1, "{bad_ch}");
    assert!(json_u64(&status, "/totals/http_not_found") >= 200);
    assert!(json_u64(&status, "/totals/http_bad_request") >= 11);
    let line = daemon
        .wait_log("sync", Duration::from_secs(1))
        .or_else(|| daemon.wait_log("garbage", Duration::ZERO));
    println!("log: {line:?}");
    assert!(line.is_some(), "no log line about lost sync / garbage");
    // Still serving new players.
    let fresh = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/good.ts", Duration::from_secs(1)),
    )
    .join();
    fresh.assert_stream_head("reader after the abuse");
    assert!(daemon.stop().success());
}

/// No allocation per relayed megabyte (sendfile forced; the default `auto`
/// copies for players on this host).
#[test]
fn relaying_to_fifty_readers_allocates_nothing() {
    allocation_audit("sendfile");
}

/// The same with `--send-mode copy`.
#[test]
fn relaying_to_fifty_readers_allocates_nothing_copy_mode() {
    allocation_audit("copy");
}

/// 1 source, 50 readers; after warm-up, `alloc.allocations` must not move
/// over 10 s of relaying while `bytes_out` grows by many MB.
fn allocation_audit(send_mode: &str) {
    let (path, data, rate) = fast_media();
    let channel = format!("al=file:{}", path.display());
    let daemon = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--send-mode",
        send_mode,
        "--channel",
        &channel,
    ]);
    let mut options = ReaderOptions::new("/channel/al.ts", Duration::from_secs(24));
    options.keep_bytes = 1024 * 1024;
    let readers = Reader::start_many(daemon.addr(), &options, 50, Duration::from_millis(20));
    let all = wait_for(Duration::from_secs(10), || {
        (json_u64(&daemon.channel_status("al"), "/readers") == 50).then_some(())
    });
    assert!(
        all.is_some(),
        "50 readers never connected: {}",
        daemon.channel_status("al")
    );
    std::thread::sleep(Duration::from_secs(5));
    let s0 = daemon.status_json();
    assert!(
        json_u64(&s0, "/alloc/allocations") > 0 && json_u64(&s0, "/alloc/bytes_live") > 0,
        "the allocation counter reads zero even for start-up: it is not counting"
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let s1 = daemon.status_json();
    let seconds = t0.elapsed().as_secs_f64();
    let allocations = json_u64(&s1, "/alloc/allocations") - json_u64(&s0, "/alloc/allocations");
    let bytes_out = json_u64(&s1, "/totals/bytes_out") - json_u64(&s0, "/totals/bytes_out");
    let live_delta =
        json_u64(&s1, "/alloc/bytes_live") as i64 - json_u64(&s0, "/alloc/bytes_live") as i64;
    let mb = bytes_out as f64 / 1e6;
    println!(
        "send mode {send_mode}: steady state over {seconds:.1} s: {allocations} allocations, {mb:.1} MB out, {:.3} allocations/MB, bytes_live {live_delta:+}",
        allocations as f64 / mb.max(1e-9)
    );
    // A probe of /status alone, to tell the two apart if this fails.
    let p0 = json_u64(&daemon.status_json(), "/alloc/allocations");
    let p1 = json_u64(&daemon.status_json(), "/alloc/allocations");
    println!("one /status request: {} allocations", p1 - p0);
    let results: Vec<ReaderResult> = readers.into_iter().map(Reader::join).collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.end, End::Duration, "reader #{i}");
        ts::assert_contiguous_run(
            &format!("reader #{i} (first MiB)"),
            r.packets(),
            Sent::Cyclic(&data),
        );
    }
    let want_bytes = 50.0 * rate / 8.0 * seconds * 0.8;
    assert!(
        bytes_out as f64 >= want_bytes,
        "bytes_out grew by {bytes_out}, want >= {want_bytes:.0} (50 readers at the source rate)"
    );
    assert_eq!(
        allocations,
        0,
        "{allocations} heap allocations while relaying {mb:.1} MB ({:.3}/MB); one /status costs {}",
        allocations as f64 / mb,
        p1 - p0
    );
    assert!(daemon.stop().success());
}
