//! The node's state across real restarts (issue 7): the daemon is killed
//! with SIGKILL 200 times, often while it is writing its state file at
//! start-up, and every start that gets as far as serving `/status` shows the
//! same identity and DLNA UUID, with the boot counter never going back. A
//! state file damaged in both copies is logged and replaced by a new
//! identity; the daemon still runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringcast_tests::daemon::{json_u64, signal};
use ringcast_tests::{ringcast_bin, scratch_dir, Daemon};

/// Kills in the whole test.
const KILLS: usize = 200;

fn args(dir: &std::path::Path) -> Vec<String> {
    vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--on-demand".into(),
        "off".into(),
        "--peer-port".into(),
        "0".into(),
        "--state-dir".into(),
        dir.display().to_string(),
    ]
}

/// A small deterministic generator for the kill delays.
struct Delays(u64);

impl Delays {
    fn next_ms(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % (max + 1)
    }
}

/// Identity, DLNA UUID and boot count from `/status`.
fn node_of(daemon: &Daemon) -> (String, String, u64) {
    let status = daemon.status_json();
    let text = |pointer: &str| {
        status
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("/status has no {pointer}: {status}"))
            .to_string()
    };
    (
        text("/node/id"),
        text("/node/dlna_uuid"),
        json_u64(&status, "/node/boots"),
    )
}

#[test]
fn identity_and_dlna_uuid_survive_two_hundred_sigkills() {
    let dir = scratch_dir("state_sigkill");
    let _ = std::fs::remove_dir_all(&dir);
    let args = args(&dir);
    let started = Instant::now();
    let first = Daemon::start(&args);
    let (id, uuid, mut boots) = node_of(&first);
    assert_eq!(id.len(), 64, "a 32-byte identity in hex: {id}");
    assert_eq!(uuid.len(), 36, "a UUID: {uuid}");
    assert!(
        first.logs().iter().any(|l| l.contains("state: new store")),
        "the first start creates the store"
    );
    drop(first);
    let mut delays = Delays(0x9E37_79B9_7F4A_7C15);
    let mut checked = 0;
    for kill in 0..KILLS {
        if kill % 2 == 0 {
            // Killed right after spawn: usually while it opens the store and
            // writes the boot counter.
            let mut child = Command::new(ringcast_bin())
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ringcast");
            std::thread::sleep(Duration::from_millis(delays.next_ms(12)));
            child.kill().expect("SIGKILL our own child");
            child.wait().expect("reap it");
            continue;
        }
        // Started, checked, then killed while it serves.
        let daemon = Daemon::start(&args);
        let (now_id, now_uuid, now_boots) = node_of(&daemon);
        assert_eq!(now_id, id, "identity changed after kill #{kill}");
        assert_eq!(now_uuid, uuid, "DLNA UUID changed after kill #{kill}");
        assert!(
            now_boots > boots,
            "boot counter went from {boots} to {now_boots} after kill #{kill}"
        );
        boots = now_boots;
        checked += 1;
        assert!(
            !daemon
                .logs()
                .iter()
                .any(|l| l.contains("no intact copy") || l.contains("nothing is kept")),
            "kill #{kill} left the store unusable:\n{}",
            daemon.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(delays.next_ms(20)));
        signal(daemon.pid(), libc::SIGKILL);
        drop(daemon);
    }
    let last = Daemon::start(&args);
    let (last_id, last_uuid, last_boots) = node_of(&last);
    assert_eq!((last_id, last_uuid), (id, uuid));
    println!(
        "{KILLS} SIGKILLs, {checked} checked starts, {last_boots} boots counted, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(last.stop().success());
}

#[test]
fn a_damaged_state_file_is_logged_and_replaced() {
    let dir = scratch_dir("state_damaged");
    let _ = std::fs::remove_dir_all(&dir);
    let args = args(&dir);
    let first = Daemon::start(&args);
    let (id, _, _) = node_of(&first);
    assert!(first.stop().success());
    let path = dir.join("ringcast.state");
    let mut bytes = std::fs::read(&path).expect("state file written");
    // Flip bits all over both copies.
    for index in (0..bytes.len()).step_by(97) {
        bytes[index] ^= 0x5A;
    }
    std::fs::write(&path, &bytes).unwrap();
    let second = Daemon::start(&args);
    let (second_id, _, boots) = node_of(&second);
    assert!(
        second
            .logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("no intact copy")),
        "the damage is logged:\n{}",
        second.logs().join("\n")
    );
    assert_ne!(second_id, id, "a new identity after the damage");
    assert_eq!(boots, 1, "counting starts again");
    assert!(second.stop().success());
    // A truncated file is damage too, never a crash.
    std::fs::write(&path, &bytes[..1000]).unwrap();
    let third = Daemon::start(&args);
    node_of(&third);
    assert!(third.stop().success());
}
