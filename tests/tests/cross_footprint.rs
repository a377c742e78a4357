//! Memory footprint of the daemon: resident set size at idle and while it
//! relays one channel to 10 players, as README's footprint table reports it.
//!
//! cross/test runs this against the static x86_64-musl binary
//! (`RINGCAST_BIN`) and keeps the table in `$RINGCAST_CROSS_OUT/footprint.txt`;
//! under plain `cargo test` it measures the native release build. The
//! channel is the demo file (assets/demo.ts, about 1.3 Mbit/s) in a 4 MiB
//! ring, the size a router would give it, with on-demand multicast off. The
//! daemon touches every ring page at start-up (nothing grows later), so the
//! rings show up at once as shared memfd pages (`RssShmem`); the default
//! settings (16 MiB ring, plus 4 on-demand rings of 4 MiB) are measured at
//! idle too. What is checked: the anonymous memory does not grow with
//! players, and RSS stays within the rings plus 8 MiB.

use std::time::{Duration, Instant};

use ringcast_tests::*;

const PLAYERS: usize = 10;

/// (VmRSS, RssAnon, RssShmem) in KiB of process `pid`.
fn rss_kib(pid: u32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssShmem:"))
}

fn demo_channel() -> String {
    format!(
        "demo=file:{}",
        workspace_root().join("assets/demo.ts").display()
    )
}

/// RSS (VmRSS, RssAnon, RssShmem) of the daemon with default settings.
fn idle_with_defaults() -> (u64, u64, u64) {
    let daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--channel", &demo_channel()]);
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(daemon.pid());
    assert!(daemon.stop().success());
    let rings_kib = (16 + 4 * 4) * 1024;
    assert!(
        rss.0 < rings_kib + 8 * 1024,
        "RSS {} KiB with default settings",
        rss.0
    );
    rss
}

#[test]
fn rss_at_idle_and_while_relaying_to_ten_players() {
    let defaults = idle_with_defaults();
    let channel = demo_channel();
    let daemon = Daemon::start(&[
        "--listen",
        "127.0.0.1:0",
        "--ring-size",
        "4M",
        "--on-demand",
        "off",
        "--channel",
        &channel,
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kib(daemon.pid());

    let options = ReaderOptions::new("/channel/demo.ts", Duration::from_secs(15));
    let readers = Reader::start_many(daemon.addr(), &options, PLAYERS, Duration::ZERO);
    let mut relaying = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss_kib(daemon.pid());
        if now.0 > relaying.0 {
            relaying = now;
        }
    }
    let status = daemon.status_json();
    let serving = daemon::json_u64(&status, "/totals/readers");
    for reader in readers {
        reader.stop();
        let result = reader.join();
        assert!(result.total_bytes > 500_000, "a player got too little");
    }
    assert!(daemon.stop().success());
    assert_eq!(serving, PLAYERS as u64, "players served while measuring");

    let bin = ringcast_bin();
    let table = format!(
        "binary: {}\n\
         | state | VmRSS | anonymous | rings (shared) |\n\
         |---|---|---|---|\n\
         | idle, default settings (16 MiB ring + 4 x 4 MiB on-demand) | {} KiB | {} KiB | {} KiB |\n\
         | idle, one channel, 4 MiB ring, on-demand off | {} KiB | {} KiB | {} KiB |\n\
         | the same, relaying to {PLAYERS} players (peak) | {} KiB | {} KiB | {} KiB |\n",
        bin.display(),
        defaults.0,
        defaults.1,
        defaults.2,
        idle.0,
        idle.1,
        idle.2,
        relaying.0,
        relaying.1,
        relaying.2
    );
    println!("{table}");
    if let Some(out) = std::env::var_os("RINGCAST_CROSS_OUT").filter(|v| !v.is_empty()) {
        std::fs::write(std::path::Path::new(&out).join("footprint.txt"), &table)
            .expect("write footprint.txt");
    }
    // Players cost fixed, preallocated state: the anonymous memory must not
    // grow by more than 1 MiB with 10 of them.
    assert!(
        relaying.1 <= idle.1 + 1024,
        "anonymous memory grew from {} KiB to {} KiB with {PLAYERS} players",
        idle.1,
        relaying.1
    );
    assert!(relaying.0 < (4 + 8) * 1024, "RSS {} KiB", relaying.0);
}
