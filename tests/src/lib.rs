//! Shared helpers for the process tests: start the daemon, make media with
//! ffmpeg, read HTTP streams, feed sources, and check what came out.
//!
//! The rules every helper keeps (see DESIGN.md §6 "Network rule"):
//! - traffic goes only to loopback, or inside a network namespace that a
//!   [`netns::Netns`] guard created and deletes on drop;
//! - every load is bounded in count and time (senders and readers stop by
//!   themselves after their duration even if a test forgets them);
//! - only processes started here are signalled, by PID, from Drop guards.
//!
//! Modules:
//! - [`check`]: the per-capture acceptance checks (contiguity, decode, rate).
//! - [`daemon`]: spawn `ringcast`, collect its log, `/status`, RSS, SIGTERM.
//! - [`http`]: a tiny blocking HTTP/1.1 client with timeouts.
//! - [`reader`]: a streaming reader thread that captures `/channel/x.ts`.
//! - [`media`]: ffmpeg-made test streams (cached), ffprobe and decode checks.
//! - [`ts`]: MPEG-TS helpers: alignment, PAT/PMT, PCR bitrate, contiguity.
//! - [`senders`]: paced UDP/RTP, HTTP source server, TCP pusher, pipe writer.
//! - [`netns`]: network-namespace guard and per-thread `setns`.
//! - [`lanbed`]: a switch, a server and a client namespace for the LAN
//!   (SSDP, DLNA, multicast output) tests, and an SSDP listener.
//! - [`pyenv`]: the Python venv tools (upnp-client, prometheus-client).

pub mod bench;
pub mod check;
pub mod daemon;
pub mod http;
pub mod igd;
pub mod lanbed;
pub mod media;
pub mod netns;
pub mod pyenv;
pub mod reader;
pub mod senders;
pub mod ts;
pub mod tsgen;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use daemon::{Daemon, DaemonOptions};
pub use http::{http_get, http_request, HttpResponse};
pub use media::{ffmpeg_decode_check, ffprobe_streams, make_ts, DecodeReport, TsSpec};
pub use netns::Netns;
pub use reader::{Reader, ReaderOptions, ReaderResult};
pub use ts::{assert_contiguous_run, find_contiguous_run, segments, Sent};

/// The workspace root (the directory holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("tests crate lives inside the workspace")
        .to_path_buf()
}

/// The daemon binary: `$RINGCAST_BIN`, else `<workspace>/target/release/ringcast`.
pub fn ringcast_bin() -> PathBuf {
    match std::env::var_os("RINGCAST_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => workspace_root().join("target/release/ringcast"),
    }
}

/// A scratch directory for one test, under the workspace target dir, emptied
/// first. Kept after the test so a failure can be inspected.
pub fn scratch_dir(test_name: &str) -> PathBuf {
    let dir = workspace_root()
        .join("target/ringcast-tests/scratch")
        .join(test_name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Polls `f` every 50 ms until it returns `Some`, or gives up after `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 (bind to port 0, read it, release it). There is
/// a small race with other programs; tests use it only for listeners that the
/// daemon itself must open (`tcp://` push sources).
pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A free UDP port on 127.0.0.1, same caveat as [`free_tcp_port`].
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    s.local_addr().expect("local addr").port()
}

/// Fails the test (not skip) when not root: namespaces and joins need it.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces); run it as root like CI does"
    );
}
