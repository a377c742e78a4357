//! The acceptance checks applied to every relayed capture, in one place so
//! each ingest test applies exactly the same bar:
//! 1. the response head is a live TS stream (200, video/mp2t, no length);
//! 2. the bytes are whole TS packets and one contiguous run of what the
//!    source sent, byte for byte;
//! 3. ffmpeg decodes it (from the first keyframe) without errors, with no
//!    continuity jumps beyond the loop points of the source file;
//! 4. it came at close to the source's rate.

use std::path::Path;
use std::time::Duration;

use crate::media::ffmpeg_decode_check;
use crate::reader::{End, ReaderResult};
use crate::ts::{self, Sent};

/// What the source was.
pub struct Source<'a> {
    /// The file the source repeats.
    pub file: &'a [u8],
    pub rate_bps: f64,
    /// Frames per second of the file's video.
    pub fps: f64,
}

/// Checks one reader's capture; returns a one-line summary.
pub fn check_capture(
    who: &str,
    r: &ReaderResult,
    source: &Source,
    read_for: Duration,
    dir: &Path,
) -> String {
    r.assert_stream_head(who);
    assert!(
        matches!(r.end, End::Duration | End::Stopped),
        "{who}: the stream ended early: {:?} after {:?} with {} bytes",
        r.end,
        r.ended_at - r.started,
        r.total_bytes
    );
    assert_eq!(
        r.total_bytes as usize,
        r.body.len(),
        "{who}: capture exceeded keep_bytes"
    );
    let capture = r.packets();
    let offset = ts::assert_contiguous_run(who, capture, Sent::Cyclic(source.file));
    let seconds = capture.len() as f64 * 8.0 / source.rate_bps;
    let want = source.rate_bps / 8.0 * (read_for.as_secs_f64() - 1.5) * 0.8;
    assert!(
        r.body.len() as f64 >= want,
        "{who}: got {} bytes in {read_for:?}, want >= {want:.0} (80% of the source rate, minus start-up)",
        r.body.len()
    );
    let wraps = ts::wraps(offset, capture.len(), source.file.len());
    // The player decodes the whole body, preamble included.
    let report = ffmpeg_decode_check(r.body_packets(), dir, &who.replace([' ', '/', '#'], "_"));
    // From the first keyframe (at most a GOP in, 1-2 s) to the end; audio
    // frames are 1024 samples at 48 kHz (~47/s).
    let decodable = (seconds - 2.5).max(0.5);
    let min_video = (decodable * source.fps * 0.8) as usize;
    let min_audio = (decodable * 46.875 * 0.8) as usize;
    report.assert_clean(who, min_video, min_audio, 2 * wraps);
    format!(
        "{who}: {} bytes ({seconds:.1} s of stream) from sent offset {offset}, {} video / {} audio frames decoded, {} loop wraps",
        capture.len(),
        report.video_frames,
        report.audio_frames,
        wraps
    )
}

/// [`check_capture`] for every reader; prints the summaries.
pub fn check_all(
    label: &str,
    results: &[ReaderResult],
    source: &Source,
    read_for: Duration,
    dir: &Path,
) {
    for (i, r) in results.iter().enumerate() {
        let line = check_capture(&format!("{label} reader #{i}"), r, source, read_for, dir);
        println!("{line}");
    }
}
