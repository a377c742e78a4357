//! What the benchmarks (`tests/benches/*.rs`) share: building the daemon,
//! their environment knobs, a scratch directory, the 8 Mbit/s constant-rate
//! input they stream, and readings of a process's CPU time and memory from
//! `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace_root;

/// Builds the daemon in release mode, as the benches measure it.
pub fn build_release() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "ringcast"])
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --release -p ringcast failed");
}

/// The environment variable `name`, or `default`.
pub fn env_or(name: &str, default: String) -> String {
    std::env::var(name).unwrap_or(default)
}

/// A comma list from the environment variable `name` (or `default`), each
/// item parsed by `parse`; a bad item stops the bench with its name.
pub fn env_list<T>(name: &str, default: &str, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    env_or(name, default.to_string())
        .split(',')
        .map(|item| parse(item.trim()).unwrap_or_else(|| panic!("{name}: bad item {item:?}")))
        .collect()
}

/// A temp dir for a bench's input and outputs, removed on drop.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// `ringcast-<what>-<pid>` in the temp dir, made empty.
    pub fn new(what: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("ringcast-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How long ffmpeg may take to make a bench input.
const ENCODE_TIMEOUT: Duration = Duration::from_secs(120);

/// Encodes 20 s of 1280x720 H.264 (CBR with filler, a keyframe every 2 s)
/// and AAC into a constant 8 Mbit/s MPEG-TS at `path`, the input of the
/// fan-out and multicast benches.
pub fn encode_cbr_8m(path: &Path) {
    let started = Instant::now();
    let mut encode = Command::new("ffmpeg");
    encode
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-t", "20", "-map", "0:v", "-map", "1:a"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-b:v", "7500k", "-minrate", "7500k", "-maxrate", "7500k"])
        .args(["-bufsize", "2M", "-g", "50", "-keyint_min", "50"])
        .args(["-sc_threshold", "0", "-x264-params", "nal-hrd=cbr"])
        .args(["-c:a", "aac", "-b:a", "128k"])
        .args(["-f", "mpegts", "-muxrate", "8000k"])
        .arg(path);
    let output = crate::media::run_with_timeout(&mut encode, ENCODE_TIMEOUT)
        .unwrap_or_else(|e| panic!("ffmpeg could not make the input (is it installed?): {e}"));
    assert!(
        output.status.success(),
        "ffmpeg failed to make the input: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "input: {} made in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
}

/// user + nice + system time of all CPUs (`/proc/stat`), in clock ticks;
/// interrupt time is left out, as it is from processes' utime and stime.
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    line.split_whitespace()
        .skip(1)
        .take(3)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// A process's name and its `/proc/PID/stat` fields after the name
/// (`fields[0]` is field 3 of proc(5)).
pub fn split_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let fields = stat[close + 1..].split_whitespace().collect();
    Some((&stat[open + 1..close], fields))
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = split_stat(&stat)?;
    // Fields 14 and 15 of proc(5).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`_SC_CLK_TCK`).
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(ticks > 0, "sysconf(_SC_CLK_TCK)");
    ticks as f64
}

/// A process's memory, in MiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_mib: f64,
    /// Shared memory in the RSS (the daemon's memfd rings).
    pub shmem_mib: f64,
    /// Proportional set size: shared pages split among their users.
    pub pss_mib: f64,
}

/// Reads [`Memory`] from `/proc/PID/status` and `smaps_rollup` (0 if gone).
pub fn memory_mib(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field_mib = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0.0, |kib| kib as f64 / 1024.0)
    };
    Memory {
        rss_mib: field_mib(&status, "VmRSS:"),
        shmem_mib: field_mib(&status, "RssShmem:"),
        pss_mib: field_mib(&rollup, "Pss:"),
    }
}

/// The 1, 5 and 15 minute load averages, as text.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
