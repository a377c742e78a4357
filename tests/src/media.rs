//! Real media for the tests, made and checked by ffmpeg/ffprobe.
//!
//! [`make_ts`] encodes H.264 (libx264) + AAC into a constant-rate MPEG-TS
//! (`-muxrate`, so pacing and rate measurements are simple) and caches it
//! under `target/ringcast-tests/media/`, keyed by every parameter, so the
//! suite encodes each variant once. [`ffmpeg_decode_check`] is the truth test
//! for relayed bytes: it decodes a capture (from its first keyframe on) and
//! returns every error line ffmpeg printed plus the decoded frame counts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Parameters of a test stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TsSpec {
    pub seconds: u32,
    pub fps: u32,
    /// Keyframe interval in frames (scene-cut keyframes are off).
    pub gop_frames: u32,
    pub width: u32,
    pub height: u32,
    pub video_kbps: u32,
    pub audio_kbps: u32,
    /// Constant mux rate (null-packet padded); above video + audio.
    pub mux_kbps: u32,
}

impl Default for TsSpec {
    /// 12 s of 320x240 at 25 fps, 1 s GOP, 1 Mbit/s total.
    fn default() -> TsSpec {
        TsSpec {
            seconds: 12,
            fps: 25,
            gop_frames: 25,
            width: 320,
            height: 240,
            video_kbps: 650,
            audio_kbps: 64,
            mux_kbps: 1000,
        }
    }
}

impl TsSpec {
    fn file_name(&self) -> String {
        format!(
            "t{}s_{}fps_g{}_{}x{}_v{}_a{}_m{}.ts",
            self.seconds,
            self.fps,
            self.gop_frames,
            self.width,
            self.height,
            self.video_kbps,
            self.audio_kbps,
            self.mux_kbps
        )
    }

    /// The nominal mux rate in bits per second.
    pub fn bitrate_bps(&self) -> f64 {
        f64::from(self.mux_kbps) * 1000.0
    }
}

static MAKE_LOCK: Mutex<()> = Mutex::new(());

/// The directory with cached test media.
pub fn media_dir() -> PathBuf {
    crate::workspace_root().join("target/ringcast-tests/media")
}

/// Makes (or reuses) an H.264/AAC MPEG-TS file as `spec` says.
pub fn make_ts(spec: TsSpec) -> PathBuf {
    let _guard = MAKE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = media_dir();
    std::fs::create_dir_all(&dir).expect("create media dir");
    let path = dir.join(spec.file_name());
    if path.exists() {
        return path;
    }
    let tmp = dir.join(format!("{}.{}.tmp", spec.file_name(), std::process::id()));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc=size={}x{}:rate={}",
            spec.width, spec.height, spec.fps
        ))
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args([
            "-t",
            &spec.seconds.to_string(),
            "-map",
            "0:v",
            "-map",
            "1:a",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-g",
            &spec.gop_frames.to_string(),
            "-keyint_min",
            &spec.gop_frames.to_string(),
        ])
        .args(["-sc_threshold", "0"])
        .args(["-b:v", &format!("{}k", spec.video_kbps)])
        .args(["-maxrate", &format!("{}k", spec.video_kbps)])
        .args(["-bufsize", &format!("{}k", spec.video_kbps)])
        .args([
            "-c:a",
            "aac",
            "-b:a",
            &format!("{}k", spec.audio_kbps),
            "-ac",
            "2",
        ])
        .args(["-f", "mpegts", "-muxrate", &format!("{}k", spec.mux_kbps)])
        .arg(&tmp);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120))
        .expect("run ffmpeg to make test media");
    assert!(
        out.status.success() && tmp.exists(),
        "ffmpeg failed to make {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &path).expect("rename media");
    path
}

/// Runs a command with stdout/stderr captured, killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} ran longer than {timeout:?}; killed"));
            }
            Err(e) => return Err(format!("wait {cmd:?}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    })
}

/// One stream as ffprobe sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub codec_type: String,
    pub codec_name: String,
}

/// `ffprobe` on a file path or URL (extra args go before `-i`).
pub fn ffprobe_streams(
    input: &str,
    extra_args: &[&str],
    timeout: Duration,
) -> Result<Vec<StreamInfo>, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-hide_banner", "-v", "error"])
        .args(extra_args)
        .args([
            "-show_entries",
            "stream=codec_type,codec_name",
            "-of",
            "json",
        ])
        .arg(input);
    let out = run_with_timeout(&mut cmd, timeout)?;
    if !out.status.success() {
        return Err(format!(
            "ffprobe {input} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "ffprobe output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok(doc["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| StreamInfo {
                    codec_type: s["codec_type"].as_str().unwrap_or_default().to_string(),
                    codec_name: s["codec_name"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// What decoding a capture gave.
#[derive(Clone, Debug, Default)]
pub struct DecodeReport {
    /// Error lines (level `error` or worse) from ffmpeg; must be empty.
    pub errors: Vec<String>,
    /// "Packet corrupt" warnings: PES packets the demuxer saw a continuity
    /// counter jump in. A looped file has one per stream at each wrap; bytes
    /// lost in the relay add more.
    pub corrupt_packets: usize,
    pub video_frames: usize,
    pub audio_frames: usize,
    /// Bytes decoded after trimming to the first keyframe.
    pub trimmed_bytes: usize,
}

impl DecodeReport {
    /// Panics unless the decode was clean, held at least the given frames,
    /// and saw at most `max_corrupt` continuity jumps.
    pub fn assert_clean(
        &self,
        who: &str,
        min_video_frames: usize,
        min_audio_frames: usize,
        max_corrupt: usize,
    ) {
        assert!(
            self.corrupt_packets <= max_corrupt,
            "{who}: ffmpeg flagged {} corrupt packets (continuity jumps), at most {max_corrupt} expected",
            self.corrupt_packets
        );
        assert!(
            self.errors.is_empty(),
            "{who}: ffmpeg reported decode errors after the first keyframe:\n{}",
            self.errors
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            self.video_frames >= min_video_frames && self.audio_frames >= min_audio_frames,
            "{who}: decoded only {} video / {} audio frames (want >= {min_video_frames} / {min_audio_frames})",
            self.video_frames,
            self.audio_frames
        );
    }
}

/// Decodes a relayed capture with ffmpeg. The capture is saved as
/// `dir/name.ts`, trimmed ([`crate::ts::trim_for_decode`]) into
/// `dir/name.trim.ts` and decoded to `framecrc` (every frame really decoded).
/// A capture that cannot be trimmed (no PAT/PMT or keyframe) is reported as
/// an error. Warnings (timestamp jumps at loop points and the like) are not
/// errors; "Packet corrupt" warnings are counted.
pub fn ffmpeg_decode_check(capture: &[u8], dir: &Path, name: &str) -> DecodeReport {
    let raw = dir.join(format!("{name}.ts"));
    std::fs::write(&raw, capture).expect("write capture");
    let trimmed = match crate::ts::trim_for_decode(capture) {
        Ok(t) => t,
        Err(e) => {
            return DecodeReport {
                errors: vec![format!("cannot cut capture for decoding: {e}")],
                ..Default::default()
            }
        }
    };
    let path = dir.join(format!("{name}.trim.ts"));
    std::fs::write(&path, &trimmed).expect("write trimmed capture");
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "level+warning",
        "-i",
    ])
    .arg(&path)
    .args(["-map", "0:v:0", "-map", "0:a:0", "-f", "framecrc", "-"]);
    let out = match run_with_timeout(&mut cmd, Duration::from_secs(120)) {
        Ok(o) => o,
        Err(e) => {
            return DecodeReport {
                errors: vec![e],
                ..Default::default()
            }
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut report = DecodeReport {
        trimmed_bytes: trimmed.len(),
        ..Default::default()
    };
    for line in stdout.lines() {
        if line.starts_with("0,") {
            report.video_frames += 1;
        } else if line.starts_with("1,") {
            report.audio_frames += 1;
        }
    }
    let mut corrupt = std::collections::BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if line.contains("[error]") || line.contains("[fatal]") || line.contains("[panic]") {
            report.errors.push(line.to_string());
        } else if let Some(at) = line.find("Packet corrupt") {
            // ffmpeg may repeat the warning for one packet: count distinct
            // "(stream = S, dts = D)".
            corrupt.insert(line[at..].to_string());
        }
    }
    report.corrupt_packets = corrupt.len();
    if !out.status.success() {
        report
            .errors
            .push(format!("ffmpeg exited with {}", out.status));
    }
    report
}
