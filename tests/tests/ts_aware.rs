//! Acceptance tests for MPEG-TS awareness: the relay reads the streams it
//! carries, not only their bytes. Every stream here is made by ffmpeg, and
//! every check of relayed bytes ends in a real decoder (ffprobe/ffmpeg).
//!
//! - instant start: a new reader gets the latest PAT + PMT and then the
//!   stream from the newest keyframe, for H.264/AAC, HEVC/AC-3 and
//!   MPEG-2/MP2, with tables placed away from keyframes as broadcasters do;
//!   with `--instant-start off` it starts at the live edge;
//! - program selection from a 3-program MPTS by number and by SDT name;
//! - faults in a pushed source (garbage, a cut packet, a continuity jump, an
//!   encoder restart with new PIDs) stay local, are counted, and a restart
//!   is relayed as a clean switch;
//! - resume by `?position=N` is byte exact; an evicted position gets 416;
//! - time shift by `?offset=-30s` starts 30 s back on a keyframe;
//! - TS parsing adds no heap allocation per relayed megabyte;
//! - 192-byte (M2TS) and 204-byte packets come out as 188-byte packets.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ringcast_tests::daemon::json_u64;
use ringcast_tests::http::{find, parse_response_head};
use ringcast_tests::media::run_with_timeout;
use ringcast_tests::reader::End;
use ringcast_tests::ts::{self, continuity_counter, payload, pid, pusi, Sent, PACKET};
use ringcast_tests::tsgen::{self, Fault, FaultPlan, FaultSender, Pmt, WireSize};
use ringcast_tests::*;

/// Frame rate of every test stream.
const FPS: u32 = 25;
/// Keyframe interval: 2 s.
const GOP_FRAMES: u32 = 50;
const GOP: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Media

/// A test stream on disk and in memory.
struct Media {
    path: PathBuf,
    data: Arc<Vec<u8>>,
}

impl Media {
    fn load(path: PathBuf) -> Media {
        let data = Arc::new(std::fs::read(&path).expect("read media"));
        assert!(
            !data.is_empty() && data.len().is_multiple_of(PACKET),
            "{} is not whole TS packets",
            path.display()
        );
        Media { path, data }
    }

    /// Mux rate from the PCRs, bit/s.
    fn rate_bps(&self) -> f64 {
        ts::pcr_bitrate_bps(&self.data).expect("PCR rate of test media")
    }

    fn program(&self) -> (u16, Pmt) {
        let (_, _, pmt_pid, table) = tsgen::first_program(&self.data).expect("PAT/PMT");
        (pmt_pid, table)
    }
}

/// ffmpeg arguments: `video_src` (a lavfi video source) at 320x180/25 fps and
/// a sine at `freq` Hz, `seconds` long, 2 s closed keyframe interval (no
/// scene-cut keyframes), then `codec` (codecs, rates, muxer options).
fn av_args(seconds: u32, video_src: &str, freq: u32, codec: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("{video_src}=size=320x180:rate={FPS}"),
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("sine=frequency={freq}:sample_rate=48000"),
        "-t".into(),
        seconds.to_string(),
        "-map".into(),
        "0:v".into(),
        "-map".into(),
        "1:a".into(),
        "-pix_fmt".into(),
        "yuv420p".into(),
        "-g".into(),
        GOP_FRAMES.to_string(),
        "-keyint_min".into(),
        GOP_FRAMES.to_string(),
        "-sc_threshold".into(),
        "0".into(),
        "-ac".into(),
        "2".into(),
    ];
    args.extend(codec.iter().map(|s| s.to_string()));
    args
}

const H264_AAC: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-b:v",
    "300k",
    "-maxrate",
    "300k",
    "-bufsize",
    "300k",
    "-c:a",
    "aac",
    "-b:a",
    "64k",
];

/// Extension of the [`tsgen::broadcast_psi`] rewrite of a cached file; bump
/// it when that rewrite changes, so stale copies are not reused.
const BROADCAST_PSI_EXT: &str = "bcast2.ts";

/// Writes `f(src)` next to `src` with extension `ext`, once.
fn derived(src: &Path, ext: &str, f: impl FnOnce(&[u8]) -> Vec<u8>) -> PathBuf {
    let path = src.with_extension(ext);
    if path.exists() {
        return path;
    }
    let data = std::fs::read(src).expect("read media");
    let tmp = src.with_extension(format!(
        "{ext}.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, f(&data)).expect("write derived media");
    std::fs::rename(&tmp, &path).expect("rename derived media");
    path
}

/// One codec pair of the instant-start test.
struct CodecCase {
    channel: &'static str,
    video: &'static str,
    audio: &'static str,
    args: &'static [&'static str],
}

const CODECS: [CodecCase; 3] = [
    CodecCase {
        channel: "h264",
        video: "h264",
        audio: "aac",
        args: H264_AAC,
    },
    CodecCase {
        channel: "hevc",
        video: "hevc",
        audio: "ac3",
        args: &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "keyint=50:min-keyint=50:scenecut=0:log-level=error",
            "-b:v",
            "300k",
            "-c:a",
            "ac3",
            "-b:a",
            "96k",
        ],
    },
    CodecCase {
        channel: "mpeg2",
        video: "mpeg2video",
        audio: "mp2",
        args: &[
            "-c:v",
            "mpeg2video",
            "-b:v",
            "600k",
            "-c:a",
            "mp2",
            "-b:a",
            "128k",
        ],
    },
];

/// 10 s of the codec pair, with tables placed broadcast-style.
fn codec_media(case: &CodecCase) -> Media {
    let src = tsgen::ffmpeg_ts(
        &format!("tsaware_{}", case.channel),
        &av_args(10, "testsrc", 1000, case.args),
    );
    Media::load(derived(&src, BROADCAST_PSI_EXT, tsgen::broadcast_psi))
}

/// 10 s of H.264/AAC exactly as ffmpeg wrote it (PAT/PMT before keyframes).
fn h264_plain() -> &'static Media {
    static M: OnceLock<Media> = OnceLock::new();
    M.get_or_init(|| {
        Media::load(tsgen::ffmpeg_ts(
            "tsaware_h264",
            &av_args(10, "testsrc", 1000, H264_AAC),
        ))
    })
}

/// Three programs (testsrc, smptebars, rgbtestsrc with their own tones),
/// numbered 1-3 and named One, Two, Three in the SDT.
fn mpts() -> &'static Media {
    static M: OnceLock<Media> = OnceLock::new();
    M.get_or_init(|| {
        let mut args: Vec<String> = Vec::new();
        for (src, freq) in [("testsrc", 500), ("smptebars", 1000), ("rgbtestsrc", 2000)] {
            args.extend([
                "-f".to_string(),
                "lavfi".into(),
                "-i".into(),
                format!("{src}=size=320x180:rate={FPS}"),
                "-f".into(),
                "lavfi".into(),
                "-i".into(),
                format!("sine=frequency={freq}:sample_rate=48000"),
            ]);
        }
        args.extend(["-t".to_string(), "8".into()]);
        for i in 0..6 {
            args.extend(["-map".to_string(), format!("{i}:0")]);
        }
        for s in [
            "-pix_fmt",
            "yuv420p",
            "-g",
            "50",
            "-keyint_min",
            "50",
            "-sc_threshold",
            "0",
            "-ac",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "200k",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-program",
            "program_num=1:title=One:st=0:st=1",
            "-program",
            "program_num=2:title=Two:st=2:st=3",
            "-program",
            "program_num=3:title=Three:st=4:st=5",
        ] {
            args.push(s.to_string());
        }
        Media::load(tsgen::ffmpeg_ts("tsaware_mpts", &args))
    })
}

/// The fault test's first stream: 20 s of H.264/AAC, broadcast-style tables.
fn fault_media_a() -> &'static Media {
    static M: OnceLock<Media> = OnceLock::new();
    M.get_or_init(|| {
        let src = tsgen::ffmpeg_ts("tsaware_fault_a", &av_args(20, "testsrc", 1000, H264_AAC));
        Media::load(derived(&src, BROADCAST_PSI_EXT, tsgen::broadcast_psi))
    })
}

/// The restarted encoder: other pictures and PIDs (ES from 0x300, PMT 0x1200).
fn fault_media_b() -> &'static Media {
    static M: OnceLock<Media> = OnceLock::new();
    M.get_or_init(|| {
        let mut codec: Vec<&str> = H264_AAC.to_vec();
        codec.extend([
            "-mpegts_start_pid",
            "0x300",
            "-mpegts_pmt_start_pid",
            "0x1200",
        ]);
        let src = tsgen::ffmpeg_ts("tsaware_fault_b", &av_args(12, "testsrc2", 700, &codec));
        Media::load(derived(&src, BROADCAST_PSI_EXT, tsgen::broadcast_psi))
    })
}

/// 90 s at a constant 600 kbit/s mux rate, for the time-shift test.
fn long_media() -> &'static Media {
    static M: OnceLock<Media> = OnceLock::new();
    M.get_or_init(|| {
        let mut codec: Vec<&str> = H264_AAC.to_vec();
        codec.extend(["-muxrate", "600k"]);
        Media::load(tsgen::ffmpeg_ts(
            "tsaware_long",
            &av_args(90, "testsrc", 1000, &codec),
        ))
    })
}

// ---------------------------------------------------------------------------
// Helpers

fn start_daemon(extra: &[String]) -> Daemon {
    let mut args: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
    args.extend(extra.iter().cloned());
    Daemon::start(&args)
}

/// Waits until `/status` says the channel is live (up to 15 s).
fn wait_live(daemon: &Daemon, channel: &str) {
    let live = wait_for(Duration::from_secs(15), || {
        let ch = daemon.channel_status(channel);
        (ch["state"].as_str() == Some("live")).then_some(())
    });
    assert!(
        live.is_some(),
        "channel {channel} never became live: {}",
        daemon.channel_status(channel)
    );
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// A reader of `path` for `read_for`, joined.
fn read(daemon: &Daemon, path: &str, read_for: Duration) -> ReaderResult {
    Reader::start(daemon.addr(), ReaderOptions::new(path, read_for)).join()
}

/// `X-Ringcast-Position` of a stream response.
fn position_header(who: &str, head: &HttpResponse) -> u64 {
    let value = head
        .header("x-ringcast-position")
        .unwrap_or_else(|| panic!("{who}: no X-Ringcast-Position header in {:?}", head.headers));
    value
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{who}: X-Ringcast-Position {value:?} is not a number"))
}

fn reader_position(who: &str, r: &ReaderResult) -> u64 {
    position_header(who, r.head.as_ref().expect("response head"))
}

/// `X-Ringcast-Preamble` of a stream response: bytes of PAT/PMT sent before
/// the stream at `X-Ringcast-Position` (0 when absent).
fn preamble_header(who: &str, head: &HttpResponse) -> usize {
    head.header("x-ringcast-preamble").map_or(0, |v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{who}: X-Ringcast-Preamble {v:?} is not a number"))
    })
}

/// Panics unless the first `preamble` body bytes are whole PAT/PMT packets.
fn assert_preamble(who: &str, body: &[u8], preamble: usize, pmt_pid: u16) {
    assert!(
        preamble.is_multiple_of(PACKET) && preamble <= body.len(),
        "{who}: a preamble of {preamble} bytes is not whole packets of the body"
    );
    for p in ts::packets(&body[..preamble]) {
        assert!(
            p[0] == ts::SYNC && (pid(p) == tsgen::PAT_PID || pid(p) == pmt_pid),
            "{who}: the preamble holds a packet that is not a PAT or PMT: {}",
            describe(p)
        );
    }
}

/// Panics unless the reader kept its connection for its whole time.
fn assert_full_read(who: &str, r: &ReaderResult) {
    r.assert_stream_head(who);
    assert_eq!(
        r.end,
        End::Duration,
        "{who}: the stream ended early after {:?} with {} bytes",
        r.ended_at - r.started,
        r.total_bytes
    );
}

fn describe(p: &[u8]) -> String {
    format!(
        "pid {:#x} pusi {} cc {} bytes {:02x?}",
        pid(p),
        pusi(p),
        continuity_counter(p),
        &p[..12.min(p.len())]
    )
}

/// The start a new reader must get: packet 0 a PAT, packet 1 the PMT of its
/// (first) program, and the first packet of the video PID starting a
/// keyframe PES (judged from the elementary stream). Returns the PMT PID
/// and the PMT.
fn assert_psi_then_keyframe(who: &str, capture: &[u8]) -> (u16, Pmt) {
    ts::check_aligned(capture).unwrap_or_else(|e| panic!("{who}: {e}"));
    assert!(
        capture.len() >= 3 * PACKET,
        "{who}: only {} bytes",
        capture.len()
    );
    let first = &capture[..PACKET];
    let entries = tsgen::pat_entries(first)
        .unwrap_or_else(|| panic!("{who}: the first packet is not a PAT: {}", describe(first)));
    let (_, pmt_pid) = entries
        .iter()
        .copied()
        .find(|(n, _)| *n != 0)
        .unwrap_or_else(|| panic!("{who}: the first PAT lists no program: {entries:?}"));
    let second = &capture[PACKET..2 * PACKET];
    let table = (pid(second) == pmt_pid)
        .then(|| tsgen::pmt(second))
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "{who}: the second packet is not the PMT on PID {pmt_pid:#x} that the PAT names: {}",
                describe(second)
            )
        });
    let (stream_type, video) = table
        .video()
        .unwrap_or_else(|| panic!("{who}: no video stream in the PMT {table:?}"));
    let (i, p) = ts::packets(capture)
        .enumerate()
        .find(|(_, p)| pid(p) == video)
        .unwrap_or_else(|| panic!("{who}: no packet of the video PID {video:#x}"));
    assert!(
        tsgen::pes_is_keyframe(capture, i, stream_type),
        "{who}: the first video packet (#{i}) does not start a keyframe PES: {}",
        describe(p)
    );
    (pmt_pid, table)
}

/// Asserts that a reader started at the newest keyframe: the stream it got
/// at once on connecting (the video PTS span of its capture minus the time
/// it spent reading) is at most one GOP. Returns that backlog in seconds.
fn assert_newest_keyframe(who: &str, r: &ReaderResult, video: u16) -> f64 {
    let pts: Vec<u64> = ts::packets(r.body_packets())
        .filter(|p| pid(p) == video)
        .filter_map(tsgen::pes_pts)
        .collect();
    assert!(pts.len() >= 2, "{who}: fewer than two video PES with a PTS");
    let last = *pts.iter().max().unwrap();
    assert!(
        last > pts[0] && last - pts[0] < 60 * 90_000,
        "{who}: video PTS do not run forward ({} .. {last})",
        pts[0]
    );
    let span = (last - pts[0]) as f64 / 90_000.0;
    let reading = (r.ended_at - r.first_byte_at.expect("body bytes")).as_secs_f64();
    let backlog = span - reading;
    assert!(
        backlog <= GOP.as_secs_f64() + 0.5,
        "{who}: started {backlog:.2} s behind live ({span:.2} s of video in {reading:.2} s of reading): not the newest keyframe (GOP {GOP:?})"
    );
    backlog
}

/// Asserts that the channel plays at the pace of its clock: after the
/// reader's first second (the instant-start burst), the video PTS advanced
/// as fast as the wall clock (within 25%).
fn assert_paced(who: &str, r: &ReaderResult, video: u16) {
    let from = r.first_byte_at.expect("body bytes") + Duration::from_secs(1);
    let wall = (r.ended_at - from).as_secs_f64();
    let skip = (r.bytes_at(from) as usize / PACKET).min(r.body_packets().len() / PACKET);
    let pts: Vec<u64> = ts::packets(r.body_packets())
        .skip(skip)
        .filter(|p| pid(p) == video)
        .filter_map(tsgen::pes_pts)
        .collect();
    assert!(
        pts.len() >= 2,
        "{who}: fewer than two video frames after the first second"
    );
    let span = pts.iter().max().unwrap().saturating_sub(pts[0]) as f64 / 90_000.0;
    let ratio = span / wall;
    assert!(
        (0.75..=1.25).contains(&ratio),
        "{who}: {span:.2} s of video arrived in {wall:.2} s ({ratio:.2}x): the source is not played at the pace of its PCR"
    );
}

/// The first decoded video frame: (key_frame, pict_type, pts).
fn first_video_frame(path: &Path) -> (i64, String, Option<i64>) {
    let doc = tsgen::ffprobe_json(
        path,
        &[
            "-select_streams",
            "v:0",
            "-show_frames",
            "-show_entries",
            "frame=key_frame,pict_type,pts,best_effort_timestamp",
        ],
    );
    let frame = doc["frames"]
        .as_array()
        .and_then(|f| f.first())
        .unwrap_or_else(|| panic!("ffprobe decoded no video frame from {}", path.display()));
    (
        frame["key_frame"].as_i64().unwrap_or(-1),
        frame["pict_type"].as_str().unwrap_or_default().to_string(),
        frame["pts"]
            .as_i64()
            .or_else(|| frame["best_effort_timestamp"].as_i64()),
    )
}

/// Flags (like `K_`) of the first video packet ffprobe demuxes.
fn first_video_packet_flags(path: &Path) -> String {
    let doc = tsgen::ffprobe_json(
        path,
        &[
            "-select_streams",
            "v:0",
            "-show_packets",
            "-show_entries",
            "packet=flags",
            "-read_intervals",
            "%+#1",
        ],
    );
    doc["packets"][0]["flags"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Writes the capture, then asserts that ffprobe decodes a key (I) frame
/// first and demuxes a key packet first. Returns the file.
fn assert_decodes_from_keyframe(who: &str, capture: &[u8], dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.ts"));
    std::fs::write(&path, capture).expect("write capture");
    let flags = first_video_packet_flags(&path);
    assert!(
        flags.contains('K'),
        "{who}: the first video packet ffprobe reads is not a key packet (flags {flags:?})"
    );
    let (key, pict, _) = first_video_frame(&path);
    assert!(
        key == 1 && pict == "I",
        "{who}: the first decoded video frame is key_frame={key} pict_type={pict:?}, want a key I frame"
    );
    path
}

/// (video codec_name, audio codec_name) as ffprobe names them.
fn codec_names(path: &Path) -> (String, String) {
    let streams = ffprobe_streams(path.to_str().unwrap(), &[], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let name = |kind: &str| {
        streams
            .iter()
            .find(|s| s.codec_type == kind)
            .map(|s| s.codec_name.clone())
            .unwrap_or_default()
    };
    (name("video"), name("audio"))
}

/// The capture up to (not including) its last video PES start: a reader
/// stops in the middle of a frame, which is not the relay's doing.
fn cut_at_last_video_pes(capture: &[u8], video: u16) -> &[u8] {
    let last = ts::packets(capture)
        .enumerate()
        .filter(|(_, p)| pid(p) == video && pusi(p))
        .map(|(i, _)| i)
        .last()
        .expect("a video PES in the capture");
    &capture[..last * PACKET]
}

/// Everything `ffmpeg -v error` prints while decoding `path` (plus a note if
/// it fails): empty for a clean stream.
fn ffmpeg_error_output(path: &Path) -> String {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-nostats", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"]);
    let out =
        run_with_timeout(&mut cmd, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        text.push_str(&format!("\n(ffmpeg exited with {})", out.status));
    }
    text
}

/// Packets that occur exactly once in `data`, with their index.
fn unique_packets(data: &[u8]) -> HashMap<&[u8], usize> {
    let mut seen: HashMap<&[u8], Option<usize>> = HashMap::new();
    for (i, p) in ts::packets(data).enumerate() {
        seen.entry(p).and_modify(|v| *v = None).or_insert(Some(i));
    }
    seen.into_iter()
        .filter_map(|(p, i)| Some((p, i?)))
        .collect()
}

/// Number of entries of the sorted `indexes` in `[from, to)`.
fn count_in(indexes: &[usize], from: usize, to: usize) -> usize {
    indexes.partition_point(|&i| i < to) - indexes.partition_point(|&i| i < from)
}

// ---------------------------------------------------------------------------
// 1. Instant start for three codec pairs

/// A reader that connects 3 s into a channel gets a PAT, then the PMT, then
/// the newest keyframe; ffprobe decodes a key frame first and names the
/// right codecs. The files carry their PAT/PMT every ~100 ms but never right
/// before a keyframe (as broadcast muxers do), so the relay has to send the
/// tables it keeps, not whatever precedes the keyframe in the ring.
#[test]
fn instant_start_sends_tables_then_newest_keyframe_for_three_codecs() {
    let media: Vec<Media> = CODECS.iter().map(codec_media).collect();
    let mut args = Vec::new();
    for (case, m) in CODECS.iter().zip(&media) {
        args.push("--channel".to_string());
        args.push(format!("{}=file:{}", case.channel, m.path.display()));
    }
    let daemon = start_daemon(&args);
    let live_at = Instant::now();
    for case in &CODECS {
        wait_live(&daemon, case.channel);
    }
    sleep_until(live_at + Duration::from_secs(3));
    let read_for = Duration::from_secs(2);
    let readers: Vec<Reader> = CODECS
        .iter()
        .map(|c| {
            Reader::start(
                daemon.addr(),
                ReaderOptions::new(&format!("/channel/{}.ts", c.channel), read_for),
            )
        })
        .collect();
    let results: Vec<ReaderResult> = readers.into_iter().map(Reader::join).collect();
    let dir = scratch_dir("ts_aware_codecs");
    for (case, r) in CODECS.iter().zip(&results) {
        let who = format!("{} reader", case.channel);
        assert_full_read(&who, r);
        let capture = r.body_packets();
        let (_, table) = assert_psi_then_keyframe(&who, capture);
        let (_, video) = table.video().unwrap();
        let frames = tsgen::pes_starts(capture, video).len();
        let backlog = assert_newest_keyframe(&who, r, video);
        let path = assert_decodes_from_keyframe(&who, capture, &dir, case.channel);
        let (video_codec, audio_codec) = codec_names(&path);
        assert_eq!(
            (video_codec.as_str(), audio_codec.as_str()),
            (case.video, case.audio),
            "{who}: ffprobe names the codecs"
        );
        println!(
            "{who}: {} bytes, PAT+PMT then a keyframe {backlog:.2} s behind live, {frames} video frames, {video_codec}/{audio_codec}",
            capture.len()
        );
    }
    assert!(daemon.stop().success());
}

/// With `--instant-start off` a reader starts at the live edge, as udpxy
/// does: connecting 1 s into a 2 s GOP its first video PES is not a
/// keyframe, and the video it gets at once is under half a second (with
/// instant start it would be the second since the keyframe). A PAT/PMT
/// preamble ahead of the live edge is allowed.
#[test]
fn instant_start_off_starts_at_the_live_edge() {
    let m = codec_media(&CODECS[0]);
    let daemon = start_daemon(&[
        "--instant-start".into(),
        "off".into(),
        "--channel".into(),
        format!("le=file:{}", m.path.display()),
    ]);
    let live_at = Instant::now();
    wait_live(&daemon, "le");
    // Keyframes are at 0, 2, 4 s of the file: 3 s in, the newest is 1 s old.
    sleep_until(live_at + Duration::from_secs(3));
    let r = read(&daemon, "/channel/le.ts", Duration::from_secs(2));
    assert_full_read("live-edge reader", &r);
    let head = r.head.as_ref().unwrap();
    position_header("live-edge reader", head);
    let capture = r.body_packets();
    ts::check_aligned(capture).unwrap_or_else(|e| panic!("live-edge reader: {e}"));
    let (pmt_pid, table) = m.program();
    // Tables ahead of the live edge are allowed, if they are just that.
    let preamble = preamble_header("live-edge reader", head);
    assert_preamble("live-edge reader", capture, preamble, pmt_pid);
    let (stream_type, video) = table.video().unwrap();
    let first = ts::packets(capture)
        .position(|p| pid(p) == video && pusi(p))
        .expect("a video PES");
    assert!(
        !tsgen::pes_is_keyframe(capture, first, stream_type),
        "live-edge reader: the first video PES is a keyframe, 1 s into a GOP"
    );
    let pts: Vec<u64> = ts::packets(capture)
        .filter(|p| pid(p) == video)
        .filter_map(tsgen::pes_pts)
        .collect();
    let span = (pts.iter().max().unwrap() - pts[0]) as f64 / 90_000.0;
    let reading = (r.ended_at - r.first_byte_at.unwrap()).as_secs_f64();
    println!("live-edge reader: {span:.2} s of video in {reading:.2} s");
    assert!(
        span - reading <= 0.5,
        "live-edge reader: started {:.2} s behind live, not at the live edge",
        span - reading
    );
    let dir = scratch_dir("ts_aware_live_edge");
    ffmpeg_decode_check(capture, &dir, "live_edge").assert_clean("live-edge reader", 10, 1, 0);
    assert!(daemon.stop().success());
}

// ---------------------------------------------------------------------------
// 2. Program selection from an MPTS

/// One program of a 3-program MPTS, chosen by `#program=N` or by the service
/// name in the SDT (`#service=NAME`), is served alone: every PAT lists only
/// it, no packet of another program's PIDs passes, and ffprobe sees exactly
/// that one program with its two streams and decodes it cleanly.
#[test]
fn mpts_program_is_selected_by_number_and_by_service_name() {
    let m = mpts();
    // What ffmpeg wrote, as ffprobe reports it.
    let doc = tsgen::ffprobe_json(
        &m.path,
        &[
            "-show_programs",
            "-show_entries",
            "program=program_num:program_tags=service_name",
        ],
    );
    let names: Vec<(i64, String)> = doc["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .map(|p| {
            (
                p["program_num"].as_i64().unwrap_or(-1),
                p["tags"]["service_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![(1, "One".into()), (2, "Two".into()), (3, "Three".into())],
        "the test MPTS as ffprobe reads it"
    );
    let table = tsgen::program_table(&m.data);
    assert_eq!(
        table.len(),
        3,
        "three programs in the source PAT: {table:?}"
    );
    let pids_of = |number: u16| -> HashSet<u16> {
        let (_, pmt_pid, t) = table.iter().find(|(n, _, _)| *n == number).unwrap();
        let mut s: HashSet<u16> = t.es_pids().into_iter().collect();
        s.insert(*pmt_pid);
        s
    };

    let cases = [
        ("p2", "#program=2", 2u16),
        ("s3", "#service=Three", 3),
        ("s1", "#service=One", 1),
    ];
    let mut args = Vec::new();
    for (channel, selector, _) in &cases {
        args.push("--channel".to_string());
        args.push(format!("{channel}=file:{}{selector}", m.path.display()));
    }
    let daemon = start_daemon(&args);
    for (channel, _, _) in &cases {
        wait_live(&daemon, channel);
    }
    std::thread::sleep(Duration::from_secs(1));
    let readers: Vec<Reader> = cases
        .iter()
        .map(|(channel, _, _)| {
            Reader::start(
                daemon.addr(),
                ReaderOptions::new(&format!("/channel/{channel}.ts"), Duration::from_secs(3)),
            )
        })
        .collect();
    let results: Vec<ReaderResult> = readers.into_iter().map(Reader::join).collect();
    let dir = scratch_dir("ts_aware_mpts");
    for ((channel, selector, number), r) in cases.iter().zip(&results) {
        let who = format!("channel {channel} ({selector})");
        assert_full_read(&who, r);
        let capture = r.body_packets();
        let (_, source_pmt_pid, source_pmt) =
            table.iter().find(|(n, _, _)| n == number).unwrap().clone();
        // Every PAT lists this program only.
        let pats = tsgen::all_pats(capture);
        assert!(!pats.is_empty(), "{who}: no PAT in the output");
        for (i, entries) in &pats {
            let programs: Vec<(u16, u16)> =
                entries.iter().copied().filter(|(n, _)| *n != 0).collect();
            assert_eq!(
                programs,
                vec![(*number, source_pmt_pid)],
                "{who}: PAT at packet #{i} must list only program {number}"
            );
        }
        let (pmt_pid, out_pmt) = assert_psi_then_keyframe(&who, capture);
        assert_eq!(pmt_pid, source_pmt_pid, "{who}: PMT PID");
        assert_eq!(out_pmt.program_number, *number, "{who}: PMT program_number");
        assert_eq!(
            out_pmt.streams, source_pmt.streams,
            "{who}: the PMT must be the source program's"
        );
        // No packet of another program.
        let own = pids_of(*number);
        let others: HashSet<u16> = (1..=3u16)
            .filter(|n| n != number)
            .flat_map(pids_of)
            .collect();
        let mut seen: HashMap<u16, usize> = HashMap::new();
        for p in ts::packets(capture) {
            *seen.entry(pid(p)).or_default() += 1;
        }
        let foreign: Vec<(u16, usize)> = seen
            .iter()
            .filter(|(p, _)| others.contains(p))
            .map(|(p, n)| (*p, *n))
            .collect();
        assert!(
            foreign.is_empty(),
            "{who}: packets of other programs' PIDs passed: {foreign:?}"
        );
        let unknown: Vec<u16> = seen
            .keys()
            .copied()
            .filter(|p| {
                !own.contains(p) && ![tsgen::PAT_PID, tsgen::SDT_PID, tsgen::NULL_PID].contains(p)
            })
            .collect();
        assert!(unknown.is_empty(), "{who}: unexpected PIDs {unknown:?}");
        for p in &own {
            assert!(
                seen.contains_key(p),
                "{who}: no packet of its own PID {p:#x}"
            );
        }
        // ffprobe: exactly one program, two streams, the right codecs.
        let path = assert_decodes_from_keyframe(&who, capture, &dir, channel);
        let probe = tsgen::ffprobe_json(
            &path,
            &[
                "-show_programs",
                "-show_streams",
                "-show_entries",
                "program=program_num,nb_streams:program_tags=service_name:stream=codec_name,codec_type",
            ],
        );
        let programs = probe["programs"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            programs.len(),
            1,
            "{who}: ffprobe must see exactly one program: {probe}"
        );
        assert_eq!(
            programs[0]["program_num"].as_i64(),
            Some(i64::from(*number))
        );
        assert_eq!(
            programs[0]["nb_streams"].as_i64(),
            Some(2),
            "{who}: {probe}"
        );
        if let Some(name) = programs[0]["tags"]["service_name"].as_str() {
            let want = &names
                .iter()
                .find(|(n, _)| *n == i64::from(*number))
                .unwrap()
                .1;
            assert_eq!(name, want, "{who}: service name in the output SDT");
        }
        let streams = probe["streams"].as_array().cloned().unwrap_or_default();
        let mut codecs: Vec<String> = streams
            .iter()
            .map(|s| s["codec_name"].as_str().unwrap_or_default().to_string())
            .collect();
        codecs.sort();
        assert_eq!(codecs, vec!["aac", "h264"], "{who}: streams ffprobe finds");
        let report = ffmpeg_decode_check(capture, &dir, &format!("{channel}_decode"));
        let seconds = 3.0 - GOP.as_secs_f64() - 0.5;
        report.assert_clean(&who, (seconds * f64::from(FPS) * 0.8) as usize, 1, 0);
        println!(
            "{who}: {} bytes, PIDs {:?}, {} video frames decoded",
            capture.len(),
            {
                let mut v: Vec<_> = seen.keys().map(|p| format!("{p:#x}")).collect();
                v.sort();
                v
            },
            report.video_frames
        );
    }
    assert!(daemon.stop().success());
}

// ---------------------------------------------------------------------------
// 3. Faults in a pushed source

/// A real H.264/AAC stream pushed to `tcp://` in real time, with faults
/// several seconds apart: 4000 garbage bytes between packets, a packet cut in
/// half, six video packets dropped (a continuity jump), and an encoder
/// restart with new PIDs that resumes mid-GOP. One reader records it all;
/// between faults (from the first keyframe after each) ffmpeg decodes the
/// recording without a single error or continuity warning, frames come after
/// every fault, and no more is lost than lies between a fault and the next
/// keyframe. At the restart the relay sends the new PAT and PMT and a
/// discontinuity flag, then the new source from its first keyframe only.
/// Readers that join after the restart (one while the switch keyframe is
/// the newest, one a GOP later) get a PAT, the PMT and a keyframe of the new
/// source, nothing of the old one, and ffmpeg decodes them without any error
/// output. `/status` counts every kind of fault.
#[test]
fn pushed_source_faults_stay_local_and_a_restart_switches_cleanly() {
    let a = fault_media_a();
    let b = fault_media_b();
    let (a_pmt_pid, a_pmt) = a.program();
    let (b_pmt_pid, b_pmt) = b.program();
    let (a_type, a_video) = a_pmt.video().unwrap();
    let (b_type, b_video) = b_pmt.video().unwrap();
    assert_eq!(b_pmt_pid, 0x1200, "ffmpeg honoured -mpegts_pmt_start_pid");
    assert_eq!(b_video, 0x300, "ffmpeg honoured -mpegts_start_pid");
    let a_pids: HashSet<u16> = a_pmt.es_pids().into_iter().chain([a_pmt_pid]).collect();
    let b_es: HashSet<u16> = b_pmt.es_pids().into_iter().collect();
    assert!(a_pids.is_disjoint(&b_es));

    // The restarted encoder resumes 0.9 s into B: mid-GOP.
    let b_times = tsgen::packet_times(&b.data);
    let b_from = b_times.iter().position(|&t| t >= 0.9).unwrap();
    let b_keys = tsgen::keyframe_indexes(&b.data, b_video, b_type);
    let b_key = *b_keys
        .iter()
        .find(|&&k| k > b_from)
        .expect("a keyframe after the resume point");
    assert!(b_keys[0] < b_from, "B must resume mid-GOP");
    let b_pre_keyframe: Vec<&[u8]> = (b_from..b_key)
        .map(|i| &b.data[i * PACKET..(i + 1) * PACKET])
        .filter(|p| b_es.contains(&pid(p)))
        .collect();
    assert!(
        b_pre_keyframe.len() > 10,
        "B sends ES packets before its first keyframe"
    );

    let port = free_tcp_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = start_daemon(&["--channel".into(), format!("ft=tcp://127.0.0.1:{port}")]);
    let mut plan = FaultPlan::new(addr, a.data.clone(), Duration::from_secs(32));
    plan.faults = vec![
        (Duration::from_secs(5), Fault::Garbage(4000)),
        (Duration::from_secs(9), Fault::CutPacket),
        (Duration::from_secs(13), Fault::DropVideo(6)),
        (
            Duration::from_secs(17),
            Fault::Restart {
                data: b.data.clone(),
                from_packet: b_from,
            },
        ),
    ];
    let t0 = Instant::now();
    let sender = FaultSender::start(plan);
    wait_live(&daemon, "ft");
    sleep_until(t0 + Duration::from_millis(2500));
    let mut options = ReaderOptions::new(
        "/channel/ft.ts",
        (t0 + Duration::from_secs(26)) - Instant::now(),
    );
    options.keep_bytes = 32 * 1024 * 1024;
    let recorder = Reader::start(daemon.addr(), options);
    // The restarted source reaches its first keyframe `to_key` after it
    // reconnects, and its next one `to_next` after it.
    let restart_at = Duration::from_secs(17) + Duration::from_millis(300);
    let b_next = *b_keys.iter().find(|&&k| k > b_key).unwrap();
    let to_key = Duration::from_secs_f64(b_times[b_key] - b_times[b_from]);
    let to_next = Duration::from_secs_f64(b_times[b_next] - b_times[b_from]);
    assert!(to_next - to_key > Duration::from_secs(1));
    sleep_until(t0 + restart_at + (to_key + to_next) / 2);
    let early = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/ft.ts", Duration::from_secs(2)),
    );
    sleep_until(t0 + restart_at + to_next + Duration::from_millis(800));
    let late = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/ft.ts", Duration::from_secs(3)),
    );
    let (early, late) = (early.join(), late.join());
    let rec = recorder.join();
    let status = daemon.channel_status("ft");
    let stats = sender.finish();
    println!("/status channel: {status}");
    println!(
        "sender: {} bytes, {} connections, sessions {:?}, errors {:?}",
        stats.bytes, stats.connections, stats.sessions, stats.errors
    );
    assert!(stats.errors.is_empty(), "fault sender: {:?}", stats.errors);
    let names: Vec<&str> = stats.events.iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            "garbage",
            "cut packet",
            "dropped video packets",
            "source restart"
        ],
        "the sender injected every fault"
    );
    for e in &stats.events {
        println!("fault {:?} at {:?}, packet #{}", e.name, e.at, e.packet);
    }

    // The relay counted each kind of fault.
    assert!(
        json_u64(&status, "/garbage_bytes") > 0,
        "garbage not counted: {status}"
    );
    assert!(
        json_u64(&status, "/resyncs") + json_u64(&status, "/sync_losses") > 0,
        "the cut packet caused no resync or sync loss: {status}"
    );
    assert!(
        json_u64(&status, "/cc_errors") > 0,
        "continuity jumps not counted: {status}"
    );
    assert!(
        json_u64(&status, "/discontinuities") >= 1,
        "the source restart was not counted as a discontinuity: {status}"
    );

    // The recorder stayed connected across every fault.
    assert_full_read("recorder", &rec);
    let dir = scratch_dir("ts_aware_faults");
    std::fs::write(dir.join("recording.ts"), &rec.body).unwrap();
    let cap = rec.body_packets();
    ts::check_aligned(cap).unwrap_or_else(|e| panic!("recorder: {e}"));
    let cap_packets: Vec<&[u8]> = ts::packets(cap).collect();
    let mut cap_index: HashMap<&[u8], usize> = HashMap::new();
    for (i, p) in cap_packets.iter().enumerate() {
        cap_index.entry(*p).or_insert(i);
    }
    let a_unique = unique_packets(&a.data);
    let b_unique = unique_packets(&b.data);

    // Where each of the first three faults lies in the recording: the first
    // packet sent after it that the relay passed.
    let mut bounds = vec![0usize];
    for e in &stats.events[..3] {
        let at = e
            .after
            .iter()
            .filter(|p| a_unique.contains_key(p.as_slice()))
            .find_map(|p| cap_index.get(p.as_slice()).copied())
            .unwrap_or_else(|| {
                panic!(
                    "none of the 64 packets sent after the {} fault reached the recorder",
                    e.name
                )
            });
        assert!(
            at > *bounds.last().unwrap(),
            "faults out of order in the recording"
        );
        bounds.push(at);
    }
    // The restart: the first packet that belongs to the new source.
    let restart_at = cap_packets
        .iter()
        .position(|p| {
            b_es.contains(&pid(p))
                || pid(p) == b_pmt_pid
                || tsgen::pat_entries(p).is_some_and(|e| e.iter().any(|(_, m)| *m == b_pmt_pid))
        })
        .expect("the new source reached the recorder");
    assert!(restart_at > *bounds.last().unwrap());
    bounds.push(restart_at);
    bounds.push(cap_packets.len());
    println!(
        "recording: {} packets, fault boundaries {bounds:?}",
        cap_packets.len()
    );

    // The switch: new PAT and PMT, then the new source's first keyframe;
    // nothing of the new source before it; a discontinuity flag.
    let first_b_video = (restart_at..cap_packets.len())
        .find(|&i| pid(cap_packets[i]) == b_video)
        .expect("new video in the recording");
    let kp = cap_packets[first_b_video];
    assert!(
        tsgen::pes_is_keyframe(cap, first_b_video, b_type),
        "after the restart the first video packet (#{first_b_video}) is not a keyframe PES start: {}",
        describe(kp)
    );
    assert_eq!(
        tsgen::pes_pts(kp),
        tsgen::pes_pts(&b.data[b_key * PACKET..(b_key + 1) * PACKET]),
        "after the restart the relay must start at the new source's first keyframe"
    );
    let between = &cap_packets[restart_at..first_b_video];
    assert!(
        between
            .iter()
            .any(|p| tsgen::pat_entries(p).is_some_and(|e| e
                .iter()
                .filter(|(n, _)| *n != 0)
                .all(|(_, m)| *m == b_pmt_pid))),
        "no PAT of the new source before its first keyframe"
    );
    assert!(
        between
            .iter()
            .any(|p| pid(p) == b_pmt_pid && tsgen::pmt(p).is_some()),
        "no PMT of the new source before its first keyframe"
    );
    if let Some(i) = (0..first_b_video).find(|&i| b_es.contains(&pid(cap_packets[i]))) {
        panic!(
            "packet #{i} of the new source ({}) was relayed before its first keyframe (#{first_b_video})",
            describe(cap_packets[i])
        );
    }
    let leaked = b_pre_keyframe
        .iter()
        .filter(|p| cap_index.contains_key(**p))
        .count();
    assert_eq!(
        leaked, 0,
        "{leaked} packets of the new source from before its first keyframe were relayed"
    );
    assert!(
        cap_packets[restart_at.saturating_sub(8)..=first_b_video]
            .iter()
            .any(|p| tsgen::discontinuity(p)),
        "no discontinuity_indicator around the source switch (packets #{}..=#{first_b_video})",
        restart_at.saturating_sub(8)
    );

    // Between faults, from the first keyframe after each: a clean decode.
    let mut decoded = 0;
    for (k, w) in bounds.windows(2).enumerate() {
        let segment = &cap[w[0] * PACKET..w[1] * PACKET];
        let report = ffmpeg_decode_check(segment, &dir, &format!("segment{k}"));
        let who = format!("recording segment {k} (packets #{}..#{})", w[0], w[1]);
        println!(
            "{who}: {} video / {} audio frames, {} errors, {} corrupt",
            report.video_frames,
            report.audio_frames,
            report.errors.len(),
            report.corrupt_packets
        );
        report.assert_clean(&who, 1, 1, 0);
        decoded += report.video_frames;
    }

    // How many frames the sender sent within the recording, and what each
    // fault may cost: from the frame it hit to the next keyframe.
    let a_pes = tsgen::pes_starts(&a.data, a_video);
    let b_pes = tsgen::pes_starts(&b.data, b_video);
    let a_keys = tsgen::keyframe_indexes(&a.data, a_video, a_type);
    let a_first = cap_packets
        .iter()
        .find_map(|p| a_unique.get(p).copied())
        .expect("recording starts with packets of A");
    let a_end = stats.events[3].packet;
    let b_last = cap_packets
        .iter()
        .rev()
        .find_map(|p| b_unique.get(p).copied())
        .expect("recording ends with packets of B");
    let expected = count_in(&a_pes, a_first, a_end) + count_in(&b_pes, b_key, b_last + 1);
    // Each decoded segment ends before its last (cut) frame; 3 frames of
    // slack for frames the encoder's reordering puts across a boundary.
    let mut allowance = bounds.len() + 3;
    for e in &stats.events[..3] {
        let hit = a_pes[..a_pes.partition_point(|&i| i <= e.packet)]
            .last()
            .copied()
            .unwrap_or(0);
        let next_key = a_keys
            .iter()
            .copied()
            .find(|&k| k > e.packet)
            .unwrap_or(a.data.len() / PACKET);
        let cost = count_in(&a_pes, hit, next_key);
        println!(
            "fault {:?}: up to {cost} frames to the next keyframe",
            e.name
        );
        assert!(
            cost <= GOP_FRAMES as usize + 1,
            "test media: GOP longer than 2 s"
        );
        allowance += cost;
    }
    println!("decoded {decoded} video frames; sent {expected} within the recording; allowance {allowance}");
    assert!(
        decoded + allowance >= expected,
        "decoded {decoded} video frames of the {expected} sent: more lost than the {allowance} between each fault and the next keyframe"
    );

    // Readers that join after the restart: the new source only, from a
    // keyframe, and not one line of error output from ffmpeg. The early one
    // joins while the switch keyframe is still the newest (as players that
    // reconnect together with the upstream do), the late one a GOP later.
    for (who, r, name) in [
        ("early reader after the restart", &early, "early"),
        ("late reader after the restart", &late, "late"),
    ] {
        std::fs::write(dir.join(format!("{name}.raw.ts")), &r.body).unwrap();
        assert_full_read(who, r);
        let fcap = r.body_packets();
        let (pmt_pid, _) = assert_psi_then_keyframe(who, fcap);
        assert_eq!(pmt_pid, b_pmt_pid, "{who}: PMT of the new source");
        assert_newest_keyframe(who, r, b_video);
        let old = ts::packets(fcap)
            .filter(|p| a_pids.contains(&pid(p)) && payload(p).is_some())
            .count();
        assert_eq!(old, 0, "{who} got {old} packets of the old source");
        assert_decodes_from_keyframe(who, fcap, &dir, name);
        let cut = dir.join(format!("{name}.cut.ts"));
        std::fs::write(&cut, cut_at_last_video_pes(fcap, b_video)).unwrap();
        let errors = ffmpeg_error_output(&cut);
        assert!(
            errors.is_empty(),
            "{who}: ffmpeg -v error printed:\n{errors}"
        );
    }
    assert!(daemon.stop().success());
}

// ---------------------------------------------------------------------------
// 4. Resume by position

/// Reads exactly `n` body bytes of `path`, then closes the connection.
fn read_exact_then_close(addr: SocketAddr, path: &str, n: usize) -> (HttpResponse, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringcast-tests\r\n\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(at) = find(&pending, b"\r\n\r\n") {
            break at + 4;
        }
        assert!(Instant::now() < deadline, "no response head for {path}");
        // Small reads, so the head read takes few body bytes.
        match stream.read(&mut buf[..1024]) {
            Ok(0) => panic!("{path}: closed before the head"),
            Ok(k) => pending.extend_from_slice(&buf[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{path}: {e}"),
        }
    };
    let head = parse_response_head(&pending[..head_end]).expect("response head");
    let mut body = pending[head_end..].to_vec();
    assert!(
        body.len() <= n,
        "the head read took more than {n} body bytes"
    );
    while body.len() < n {
        assert!(
            Instant::now() < deadline,
            "{path}: only {} of {n} bytes in time",
            body.len()
        );
        let room = (n - body.len()).min(buf.len());
        match stream.read(&mut buf[..room]) {
            Ok(0) => panic!("{path}: closed after {} bytes", body.len()),
            Ok(k) => body.extend_from_slice(&buf[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{path}: {e}"),
        }
    }
    drop(stream);
    (head, body)
}

/// Reader A reads ~3 s, disconnects after a byte count that is not a whole
/// number of packets, waits 2 s and resumes with `?position=`; reader B
/// records throughout. A's two sessions together are byte for byte the same
/// run of the channel as B's bytes at those positions: no gap, no duplicate,
/// continuity counters continuous across the seam. A position the ring no
/// longer holds answers 416.
///
/// The contract: `X-Ringcast-Position` is the stream position of the first
/// body byte after an optional preamble of `X-Ringcast-Preamble` bytes (the
/// PAT and PMT an instant start sends ahead of the keyframe; without the
/// header, or 0, the first body byte is at the position). A client cut off
/// after `n` body bytes resumes at `position + n - preamble`. The source has
/// broadcast-style tables, so instant starts really carry a preamble; the
/// test checks it is exactly whole PAT/PMT packets, and that a `?position=`
/// answer has none (it continues a stream, it does not start one).
#[test]
fn resume_by_position_continues_byte_exact() {
    let spec = TsSpec {
        video_kbps: 1500,
        mux_kbps: 2000,
        ..TsSpec::default()
    };
    let path = derived(&make_ts(spec), BROADCAST_PSI_EXT, tsgen::broadcast_psi);
    let data = std::fs::read(&path).unwrap();
    let rate = ts::pcr_bitrate_bps(&data).unwrap();
    let (_, _, pmt_pid, _) = tsgen::first_program(&data).unwrap();
    let ring: u64 = 2 * 1024 * 1024;
    let daemon = start_daemon(&[
        "--ring-size".into(),
        ring.to_string(),
        "--channel".into(),
        format!("rs=file:{}", path.display()),
    ]);
    wait_live(&daemon, "rs");
    let b = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/rs.ts", Duration::from_secs(12)),
    );
    std::thread::sleep(Duration::from_secs(1));
    let n1 = ((rate / 8.0 * 3.0) as usize / PACKET) * PACKET + 101;
    assert_ne!(n1 % PACKET, 0);
    let (head1, a1) = read_exact_then_close(daemon.addr(), "/channel/rs.ts", n1);
    assert_eq!(head1.status, 200, "first session of A");
    let pos1 = position_header("A, first session", &head1);
    let pre1 = preamble_header("A, first session", &head1);
    assert_preamble("A, first session", &a1, pre1, pmt_pid);
    std::thread::sleep(Duration::from_secs(2));
    let resume_at = pos1 + n1 as u64 - pre1 as u64;
    let a2 = read(
        &daemon,
        &format!("/channel/rs.ts?position={resume_at}"),
        Duration::from_secs(3),
    );
    assert_full_read("A, resumed session", &a2);
    let a2_head = a2.head.as_ref().unwrap();
    assert_eq!(
        position_header("A, resumed session", a2_head),
        resume_at,
        "the resumed session must start exactly at the requested position"
    );
    assert_eq!(
        preamble_header("A, resumed session", a2_head),
        0,
        "a resumed session must continue the stream, with no preamble"
    );
    let b = b.join();
    assert_full_read("B", &b);
    let b_head = b.head.as_ref().unwrap();
    let pos_b = position_header("B", b_head);
    let pre_b = preamble_header("B", b_head);
    assert_preamble("B", &b.body, pre_b, pmt_pid);
    println!(
        "B from {pos_b} (preamble {pre_b}, {} bytes); A from {pos1} (preamble {pre1}): {n1} bytes, resumed at {resume_at}: {} bytes",
        b.body.len(),
        a2.body.len()
    );
    // The stream bytes of each, at their positions.
    let b_stream = &b.body[pre_b..];
    let mut a_stream = a1[pre1..].to_vec();
    a_stream.extend_from_slice(&a2.body);
    assert!(
        pos1 >= pos_b && pos1 + a_stream.len() as u64 <= pos_b + b_stream.len() as u64,
        "B's recording [{pos_b}, {}) must cover A's [{pos1}, {})",
        pos_b + b_stream.len() as u64,
        pos1 + a_stream.len() as u64
    );
    assert_eq!(
        (pos1 - pos_b) % PACKET as u64,
        0,
        "A and B start on packet boundaries"
    );
    let at = (pos1 - pos_b) as usize;
    let want = &b_stream[at..at + a_stream.len()];
    if a_stream != want {
        let i = a_stream.iter().zip(want).position(|(x, y)| x != y).unwrap();
        panic!(
            "A's sessions differ from B's recording at position {} (A's first session ended at position {resume_at})",
            pos1 + i as u64
        );
    }
    // The seam as the client saw it, packet by packet: no duplicate, no
    // continuity gap.
    let mut a = a1.clone();
    a.extend_from_slice(&a2.body);
    let whole = &a[..a.len() / PACKET * PACKET];
    ts::check_aligned(whole).unwrap_or_else(|e| panic!("A's sessions together: {e}"));
    let seam = n1 / PACKET;
    let window: Vec<&[u8]> = ts::packets(whole)
        .skip(seam.saturating_sub(40))
        .take(80)
        .collect();
    let mut last: HashMap<u16, &[u8]> = HashMap::new();
    for p in &window {
        let id = pid(p);
        if id == tsgen::NULL_PID || payload(p).is_none() {
            continue;
        }
        if let Some(prev) = last.get(&id) {
            assert!(prev != p, "a duplicate packet at the seam: {}", describe(p));
            if !tsgen::discontinuity(p) {
                assert_eq!(
                    continuity_counter(p),
                    (continuity_counter(prev) + 1) & 0x0f,
                    "a continuity gap at the seam on PID {id:#x}"
                );
            }
        }
        last.insert(id, p);
    }
    // A position the ring dropped long ago.
    let status = daemon.channel_status("rs");
    assert!(
        json_u64(&status, "/bytes_in") > ring + ring / 4,
        "the channel has not wrapped its ring yet: {status}"
    );
    let old = daemon.get("/channel/rs.ts?position=0");
    assert_eq!(
        old.status, 416,
        "position 0 is no longer in the ring: want 416, got {} {}",
        old.status, old.reason
    );
    assert!(daemon.stop().success());
}

// ---------------------------------------------------------------------------
// 5. Time shift

/// With a ring of ~60 s, after ~37 s (mid-GOP) of a channel,
/// `?offset=-30s` starts on the newest keyframe at least 30 s back: 30 s
/// (±2.5 s) behind a live reader opened at the same moment, and 30 s to
/// 30 s + one GOP behind the live edge, by PTS as ffprobe decodes them, and
/// by byte position;
/// `?offset=-300s` clamps to the oldest keyframe (the channel's first).
/// `timeshift_s` in `/status` covers at least 30 s.
#[test]
fn offset_starts_thirty_seconds_back_on_a_keyframe() {
    let m = long_media();
    let rate = m.rate_bps();
    let ring = (rate / 8.0 * 60.0) as u64;
    let daemon = start_daemon(&[
        "--ring-size".into(),
        ring.to_string(),
        "--channel".into(),
        format!("tv=file:{}", m.path.display()),
    ]);
    wait_live(&daemon, "tv");
    let live_at = Instant::now();
    sleep_until(live_at + Duration::from_secs(37));
    let status = daemon.channel_status("tv");
    println!("/status channel after 37 s: {status}");
    let timeshift = status["timeshift_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("no timeshift_s in {status}"));
    assert!(
        timeshift >= 30.0,
        "timeshift_s {timeshift} < 30 after 37 s with a 60 s ring"
    );
    let read_for = Duration::from_secs(3);
    let shifted = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/tv.ts?offset=-30s", read_for),
    );
    let live = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/tv.ts", read_for),
    );
    let oldest = Reader::start(
        daemon.addr(),
        ReaderOptions::new("/channel/tv.ts?offset=-300s", read_for),
    );
    let (shifted, live, oldest) = (shifted.join(), live.join(), oldest.join());
    let dir = scratch_dir("ts_aware_timeshift");
    let mut pts = Vec::new();
    for (who, r) in [
        ("offset -30s", &shifted),
        ("live", &live),
        ("offset -300s", &oldest),
    ] {
        assert_full_read(who, r);
        assert_psi_then_keyframe(who, r.body_packets());
        let path =
            assert_decodes_from_keyframe(who, r.body_packets(), &dir, &who.replace(' ', "_"));
        let (_, _, first) = first_video_frame(&path);
        pts.push(first.unwrap_or_else(|| panic!("{who}: first frame has no PTS")));
    }
    let behind = (pts[1] - pts[0]) as f64 / 90_000.0;
    // The live edge when the requests came: the live reader's keyframe plus
    // the backlog it got at once.
    let (_, table) = m.program();
    let (_, video) = table.video().unwrap();
    let live_backlog = assert_newest_keyframe("live", &live, video);
    let age = behind + live_backlog;
    println!(
        "offset -30s starts {behind:.2} s behind the live reader's keyframe, {age:.2} s behind the live edge"
    );
    assert!(
        (behind - 30.0).abs() <= 2.5,
        "offset -30s starts {behind:.2} s behind live, want 30 ± 2.5 s"
    );
    assert!(
        (29.5..=30.0 + GOP.as_secs_f64() + 0.5).contains(&age),
        "offset -30s must start at the newest keyframe at least 30 s back: it starts {age:.2} s behind the live edge"
    );
    let by_bytes = (reader_position("live", &live) as f64
        - reader_position("offset -30s", &shifted) as f64)
        / (rate / 8.0);
    assert!(
        (by_bytes - behind).abs() <= 1.0,
        "X-Ringcast-Position says {by_bytes:.2} s between the two starts, the PTS say {behind:.2} s"
    );
    // The channel's first video PTS: the oldest keyframe, nothing evicted yet.
    let file_first = ts::packets(&m.data)
        .filter(|p| pid(p) == video)
        .find_map(tsgen::pes_pts)
        .unwrap() as i64;
    let from_first = (pts[2] - file_first) as f64 / 90_000.0;
    println!("offset -300s starts {from_first:.2} s after the channel's first frame");
    assert!(
        (0.0..=2.5).contains(&from_first),
        "offset -300s must clamp to the oldest keyframe, the channel's first (starts {from_first:.2} s after it)"
    );
    assert!(daemon.stop().success());
}

// ---------------------------------------------------------------------------
// 6. Allocation audit with TS parsing

/// Relaying a real H.264/AAC file to three readers, with the TS parsing that
/// counts keyframes and continuity, makes no heap allocation over 10 s.
#[test]
fn ts_parsing_allocates_nothing_while_relaying() {
    let m = h264_plain();
    let rate = m.rate_bps();
    let daemon = start_daemon(&["--channel".into(), format!("al=file:{}", m.path.display())]);
    wait_live(&daemon, "al");
    let mut options = ReaderOptions::new("/channel/al.ts", Duration::from_secs(18));
    options.keep_bytes = 4 * 1024 * 1024;
    let readers = Reader::start_many(daemon.addr(), &options, 3, Duration::from_millis(50));
    let all = wait_for(Duration::from_secs(10), || {
        (json_u64(&daemon.channel_status("al"), "/readers") == 3).then_some(())
    });
    assert!(all.is_some(), "3 readers never connected");
    std::thread::sleep(Duration::from_secs(4));
    let s0 = daemon.status_json();
    assert!(
        json_u64(&s0, "/alloc/allocations") > 0,
        "the allocation counter reads zero even for start-up: it is not counting"
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let s1 = daemon.status_json();
    let seconds = t0.elapsed().as_secs_f64();
    let ch0 = daemon::find_channel(&s0, "al").unwrap().clone();
    let ch1 = daemon::find_channel(&s1, "al").unwrap().clone();
    let allocations = json_u64(&s1, "/alloc/allocations") - json_u64(&s0, "/alloc/allocations");
    let bytes_out = json_u64(&s1, "/totals/bytes_out") - json_u64(&s0, "/totals/bytes_out");
    let keyframes = json_u64(&ch1, "/keyframes") - json_u64(&ch0, "/keyframes");
    let mb = bytes_out as f64 / 1e6;
    println!(
        "{seconds:.1} s: {allocations} allocations, {mb:.2} MB out ({:.3}/MB), {keyframes} keyframes indexed, cc_errors {}",
        allocations as f64 / mb.max(1e-9),
        json_u64(&ch1, "/cc_errors")
    );
    let results: Vec<ReaderResult> = readers.into_iter().map(Reader::join).collect();
    for (i, r) in results.iter().enumerate() {
        assert_full_read(&format!("reader #{i}"), r);
    }
    let dir = scratch_dir("ts_aware_alloc");
    ffmpeg_decode_check(results[0].body_packets(), &dir, "reader0").assert_clean(
        "reader #0",
        (10.0 * f64::from(FPS)) as usize,
        1,
        2,
    );
    assert!(
        keyframes >= 4,
        "only {keyframes} keyframes indexed in {seconds:.1} s of a 2 s GOP stream: is the TS parsed?"
    );
    let want = 3.0 * rate / 8.0 * seconds * 0.8;
    assert!(
        bytes_out as f64 >= want,
        "bytes_out grew by {bytes_out}, want >= {want:.0}"
    );
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations while relaying {mb:.2} MB with TS parsing"
    );
    assert!(daemon.stop().success());
}

// ---------------------------------------------------------------------------
// 7. 192- and 204-byte packets

/// An M2TS file (192-byte packets) played by a `file:` source, and 204-byte
/// packets pushed to a `tcp://` source in real time, come out as 188-byte
/// packets, byte for byte those of the stream, at the pace of the stream's
/// clock, decodable, and the extra bytes are not counted as garbage or sync
/// losses.
#[test]
fn m2ts_and_204_byte_packets_come_out_as_188() {
    let m = h264_plain();
    let m2ts = derived(&m.path, "m2ts", |d| {
        tsgen::to_wire_size(d, WireSize::M2ts192)
    });
    let port = free_tcp_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = start_daemon(&[
        "--channel".into(),
        format!("m2=file:{}", m2ts.display()),
        "--channel".into(),
        format!("dv=tcp://127.0.0.1:{port}"),
    ]);
    let mut plan = FaultPlan::new(addr, m.data.clone(), Duration::from_secs(9));
    plan.wire = WireSize::Dvb204;
    let sender = FaultSender::start(plan);
    wait_live(&daemon, "m2");
    wait_live(&daemon, "dv");
    std::thread::sleep(Duration::from_millis(1500));
    let readers: Vec<Reader> = ["m2", "dv"]
        .iter()
        .map(|c| {
            Reader::start(
                daemon.addr(),
                ReaderOptions::new(&format!("/channel/{c}.ts"), Duration::from_secs(3)),
            )
        })
        .collect();
    let results: Vec<ReaderResult> = readers.into_iter().map(Reader::join).collect();
    let stats = sender.finish();
    assert!(
        stats.errors.is_empty(),
        "204-byte sender: {:?}",
        stats.errors
    );
    let dir = scratch_dir("ts_aware_wire_sizes");
    let (pmt_pid, table) = m.program();
    let (_, video) = table.video().unwrap();
    for ((channel, sent, extra), r) in [
        (
            "m2",
            Sent::Cyclic(&m.data[..]),
            WireSize::M2ts192.bytes() - PACKET,
        ),
        (
            "dv",
            Sent::Linear(&m.data[..]),
            WireSize::Dvb204.bytes() - PACKET,
        ),
    ]
    .into_iter()
    .zip(&results)
    {
        let who = format!("channel {channel}");
        std::fs::write(dir.join(format!("{channel}.raw.ts")), &r.body).unwrap();
        assert_full_read(&who, r);
        let capture = r.body_packets();
        assert_paced(&who, r, video);
        assert_psi_then_keyframe(&who, capture);
        // After the preamble (if any): the source's packets as sent.
        let preamble = preamble_header(&who, r.head.as_ref().unwrap());
        assert_preamble(&who, capture, preamble, pmt_pid);
        let offset = ts::assert_contiguous_run(&who, &capture[preamble..], sent);
        let report = ffmpeg_decode_check(capture, &dir, channel);
        report.assert_clean(&who, 25, 1, 0);
        let status = daemon.channel_status(channel);
        println!(
            "{who}: {} bytes from source offset {offset}, {} video frames; /status {status}",
            capture.len(),
            report.video_frames
        );
        // Before it has seen the packet size, a receiver can only call the
        // first packet's extra bytes garbage; never more than that.
        assert!(
            json_u64(&status, "/garbage_bytes") <= extra as u64,
            "{who}: the packets' extra bytes were counted as garbage"
        );
        assert_eq!(json_u64(&status, "/sync_losses"), 0, "{who}: sync losses");
    }
    assert!(daemon.stop().success());
}
