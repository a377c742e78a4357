//! The HTTP face of the daemon: the default demo channel, HEAD, the
//! playlist, /status, /, 404, the reader limit (503 + Retry-After), a burst
//! of simultaneous players, the CLI and signals.

use std::time::Duration;

use ringcast_tests::check::{check_capture, Source};
use ringcast_tests::daemon::{find_channel, json_u64};
use ringcast_tests::media::run_with_timeout;
use ringcast_tests::reader::End;
use ringcast_tests::*;

const LISTEN: [&str; 2] = ["--listen", "127.0.0.1:0"];

fn file_channel(name: &str) -> (String, std::path::PathBuf) {
    let path = make_ts(TsSpec::default());
    (format!("{name}=file:{}", path.display()), path)
}

/// README's default command: no channel at all serves `demo` from
/// assets/demo.ts; ffprobe on the live URL sees one H.264 video and one AAC
/// audio stream, and a capture is a contiguous, decodable run of the file.
#[test]
fn default_command_serves_the_demo_channel() {
    let daemon = Daemon::start(&LISTEN);
    let status = daemon.status_json();
    let demo = find_channel(&status, "demo").unwrap_or_else(|| panic!("no demo channel: {status}"));
    println!("demo: {demo}");
    let url = daemon.url("/channel/demo.ts");
    let streams = ffprobe_streams(
        &url,
        &["-rw_timeout", "15000000", "-analyzeduration", "3000000"],
        Duration::from_secs(40),
    )
    .unwrap_or_else(|e| panic!("ffprobe {url}: {e}"));
    let kinds: Vec<(&str, &str)> = streams
        .iter()
        .map(|s| (s.codec_type.as_str(), s.codec_name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![("video", "h264"), ("audio", "aac")],
        "ffprobe {url}"
    );

    let file = std::fs::read(workspace_root().join("assets/demo.ts")).expect("assets/demo.ts");
    let rate = ts::pcr_bitrate_bps(&file).expect("demo PCR rate");
    let read_for = Duration::from_secs(6);
    let r = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/demo.ts", read_for),
    )
    .join();
    let source = Source {
        file: &file,
        rate_bps: rate,
        fps: 25.0,
    };
    let dir = scratch_dir("http_api_demo");
    println!(
        "{}",
        check_capture("demo reader", &r, &source, read_for, &dir)
    );
    assert!(daemon.stop().success());
}

/// The first request right after the `listening on` line is served: a
/// player started by the same script as the daemon must not get a 503.
#[test]
fn first_request_after_listening_line_is_served() {
    for round in 0..3 {
        let daemon = Daemon::start(&LISTEN);
        assert_eq!(
            daemon.first_status(),
            Ok(200),
            "round {round}: GET /status right after `listening on` was not answered 200"
        );
    }
}

/// 20 players connecting in the same instant (fewer than --readers-max) are
/// all served: none gets a 503 while the reader limit is not reached.
#[test]
fn burst_of_twenty_simultaneous_players_is_served() {
    let (channel, path) = file_channel("burst");
    let daemon = Daemon::start(&[LISTEN[0], LISTEN[1], "--channel", &channel]);
    let mut options = ReaderOptions::new("/channel/burst.ts", Duration::from_secs(3));
    // All 20 connect first, then all send their request: 20 players that
    // start together, as after a power cut, and fewer than --readers-max.
    options.barrier = Some(std::sync::Arc::new(std::sync::Barrier::new(20)));
    let readers = Reader::start_many(daemon.addr(), &options, 20, Duration::ZERO);
    let results: Vec<_> = readers.into_iter().map(Reader::join).collect();
    let file = std::fs::read(path).unwrap();
    let refused: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.head {
            Some(h) if h.status == 200 => None,
            Some(h) => Some(format!("#{i}: {} {}", h.status, h.reason)),
            None => Some(format!("#{i}: {:?}", r.end)),
        })
        .collect();
    assert!(
        refused.is_empty(),
        "{} of 20 simultaneous players were refused (readers-max is 64): {refused:?}; totals {}",
        refused.len(),
        daemon.status_json()["totals"]
    );
    for (i, r) in results.iter().enumerate() {
        r.assert_stream_head(&format!("burst #{i}"));
        // 3 s at 1 Mbit/s is 375 kB; ask for 60% of it.
        let head_at = r.head_at.expect("head");
        let last = r.samples.last().map(|(t, _)| *t - head_at);
        assert!(
            r.total_bytes > 225_000,
            "burst #{i} got only {} bytes in 3 s (first byte {:?} after the head, last byte at {last:?}, end {:?}; \
             per-second totals {:?})",
            r.total_bytes,
            r.first_byte_at.map(|t| t - head_at),
            r.end,
            (1..=3)
                .map(|s| r.bytes_at(head_at + Duration::from_secs(s)))
                .collect::<Vec<_>>()
        );
        ts::assert_contiguous_run(&format!("burst #{i}"), r.packets(), ts::Sent::Cyclic(&file));
    }
}

/// Over --readers-max: 503 with Retry-After; a freed slot is reusable.
#[test]
fn reader_limit_answers_503_with_retry_after() {
    let (channel, _) = file_channel("lim");
    let daemon = Daemon::start(&[
        LISTEN[0],
        LISTEN[1],
        "--readers-max",
        "2",
        "--channel",
        &channel,
    ]);
    let long = ReaderOptions::new("/channel/lim.ts", Duration::from_secs(8));
    let a = Reader::start(daemon.addr(), long.clone());
    std::thread::sleep(Duration::from_millis(300));
    let b = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/lim.ts", Duration::from_secs(2)),
    );
    let both = wait_for(Duration::from_secs(5), || {
        (json_u64(&daemon.channel_status("lim"), "/readers") == 2).then_some(())
    });
    assert!(
        both.is_some(),
        "two readers never counted: {}",
        daemon.status_json()
    );
    let over = daemon.get("/channel/lim.ts");
    assert_eq!(
        over.status,
        503,
        "third reader with --readers-max 2: {} {}",
        over.status,
        over.body_text()
    );
    let retry = over
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {:?}", over.headers));
    assert!(retry.trim().parse::<u32>().is_ok(), "Retry-After {retry:?}");
    let totals = daemon.status_json()["totals"].clone();
    assert!(json_u64(&totals, "/http_rejected") >= 1, "{totals}");
    // b leaves after 2 s; then a new reader fits again.
    let rb = b.join();
    assert_eq!(rb.end, End::Duration);
    let freed = wait_for(Duration::from_secs(5), || {
        (json_u64(&daemon.channel_status("lim"), "/readers") == 1).then_some(())
    });
    assert!(
        freed.is_some(),
        "reader slot not freed: {}",
        daemon.status_json()
    );
    let c = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/lim.ts", Duration::from_secs(1)),
    )
    .join();
    c.assert_stream_head("reader after a slot was freed");
    assert!(c.total_bytes > 0);
    let ra = a.join();
    assert_eq!(ra.end, End::Duration, "first reader was cut off");
}

/// HEAD on a channel, the playlist with absolute URLs, /, /status shape, 404.
#[test]
fn head_playlist_status_page_and_404() {
    let (a, _) = file_channel("alpha");
    let (b, _) = file_channel("beta");
    let daemon = Daemon::start(&[LISTEN[0], LISTEN[1], "--channel", &a, "--channel", &b]);

    let head = daemon.request("HEAD", "/channel/alpha.ts", &[]);
    assert_eq!(head.status, 200, "HEAD /channel/alpha.ts");
    assert_eq!(
        head.header("content-type")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("video/mp2t")
    );
    assert!(
        head.header("content-length").is_none(),
        "HEAD of a live stream has no Content-Length"
    );
    assert!(
        head.body.is_empty(),
        "HEAD answered with {} body bytes",
        head.body.len()
    );

    let playlist = daemon.get("/playlist.m3u");
    assert_eq!(playlist.status, 200);
    let text = playlist.body_text();
    println!("playlist:\n{text}");
    assert!(
        text.starts_with("#EXTM3U"),
        "playlist must start with #EXTM3U"
    );
    let urls: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    for name in ["alpha", "beta"] {
        let want = daemon.url(&format!("/channel/{name}.ts"));
        assert!(
            urls.iter().any(|u| u.trim() == want),
            "playlist lacks absolute URL {want}: {urls:?}"
        );
    }
    // A player that reached us under another name gets URLs it can open:
    // with that name (Host header) or with the address it connected to.
    let host = format!("tv-box.test:{}", daemon.port());
    let other = daemon.request("GET", "/playlist.m3u", &[("Host", &host)]);
    let other_text = other.body_text();
    assert!(
        other_text.contains(&format!("http://{host}/channel/alpha.ts"))
            || other_text.contains(&daemon.url("/channel/alpha.ts")),
        "playlist with Host {host} has no usable absolute URL: {other_text}"
    );
    let head_playlist = daemon.request("HEAD", "/playlist.m3u", &[]);
    assert_eq!(head_playlist.status, 200);
    assert!(head_playlist.body.is_empty());

    let page = daemon.get("/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/html"));
    assert!(page.body_text().contains("alpha") && page.body_text().contains("beta"));

    let mut not_found = 0;
    for missing in ["/channel/nope.ts", "/nothing-here", "/channel/", "/udp/"] {
        let r = daemon.get(missing);
        if r.status == 404 {
            not_found += 2;
        }
        assert!(
            r.status == 404 || (missing == "/udp/" && r.status == 400),
            "GET {missing}: {}",
            r.status
        );
        assert_eq!(
            daemon.request("HEAD", missing, &[]).status,
            r.status,
            "HEAD {missing}"
        );
    }

    let status = daemon.status_json();
    println!("{status:#}");
    assert!(status["version"].is_string());
    assert!(status["uptime_s"].is_u64());
    for key in [
        "allocations",
        "deallocations",
        "bytes_allocated",
        "bytes_live",
    ] {
        json_u64(&status, &format!("/alloc/{key}"));
    }
    for key in [
        "readers",
        "bytes_in",
        "bytes_out",
        "http_requests",
        "http_rejected",
        "http_bad_request",
        "http_not_found",
        "connections_dropped",
    ] {
        json_u64(&status, &format!("/totals/{key}"));
    }
    assert!(
        json_u64(&status, "/totals/http_not_found") >= not_found,
        "{not_found} answers were 404 but totals say {}",
        status["totals"]
    );
    let alpha = find_channel(&status, "alpha").expect("alpha in /status");
    assert!(alpha["source"]
        .as_str()
        .unwrap_or_default()
        .contains("file:"));
    assert!(["live", "connecting", "waiting", "idle"]
        .contains(&alpha["state"].as_str().unwrap_or_default()));
    for key in [
        "input_bps",
        "bytes_in",
        "bytes_out",
        "readers",
        "skips",
        "drops",
        "errors",
        "garbage_bytes",
        "sync_losses",
        "reconnects",
        "ring_bytes",
    ] {
        json_u64(alpha, &format!("/{key}"));
    }
    assert!(daemon.stop().success());
}

#[test]
fn cli_help_version_and_bad_option() {
    let bin = ringcast_bin();
    for flag in ["-h", "--help"] {
        let out = run_with_timeout(
            std::process::Command::new(&bin).arg(flag),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(out.status.success(), "{flag}: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("--channel") && text.contains("--listen"),
            "{flag} output: {text}"
        );
    }
    let out = run_with_timeout(
        std::process::Command::new(&bin).arg("-V"),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "-V printed {text:?}"
    );
    let out = run_with_timeout(
        std::process::Command::new(&bin).args(["--no-such-option", "--listen", "127.0.0.1:0"]),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(!out.status.success(), "an unknown option must fail");
}

/// SIGINT, like SIGTERM (checked by every other test), exits 0 promptly,
/// also while a reader is connected.
#[test]
fn sigint_exits_cleanly_with_a_reader_connected() {
    let (channel, _) = file_channel("sig");
    let daemon = Daemon::start(&[LISTEN[0], LISTEN[1], "--channel", &channel]);
    let reader = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/sig.ts", Duration::from_secs(10)),
    );
    let got = wait_for(Duration::from_secs(5), || {
        (json_u64(&daemon.channel_status("sig"), "/readers") == 1).then_some(())
    });
    assert!(got.is_some());
    let started = std::time::Instant::now();
    ringcast_tests::daemon::signal(daemon.pid(), libc::SIGINT);
    let mut daemon = daemon;
    let exited = wait_for(Duration::from_secs(5), || {
        (!daemon.is_running()).then_some(())
    });
    assert!(exited.is_some(), "SIGINT: still running after 5 s");
    println!("exited {:?} after SIGINT", started.elapsed());
    let status = daemon.stop();
    assert!(status.success(), "SIGINT exit status {status}");
    let r = reader.join();
    assert_eq!(r.end, End::Eof, "the reader sees the connection close");
}
