//! MPEG-TS generation, inspection and fault injection for the TS-aware
//! acceptance tests (`tests/tests/ts_aware.rs`).
//!
//! - [`ffmpeg_ts`] runs an ffmpeg command line that writes an MPEG-TS file and
//!   caches the result under `target/ringcast-tests/media/`, keyed by a hash of
//!   the whole command line, so a test binary encodes each variant once.
//! - Parsers for what the tests assert on: every PAT in a capture, PMTs,
//!   PES timestamps, discontinuity and keyframe flags (H.264, HEVC, MPEG-2).
//! - Stream rewrites: [`broadcast_psi`] moves a file's PSI away from its
//!   keyframes (as broadcast muxers do), [`to_wire_size`] turns 188-byte
//!   packets into 192-byte (M2TS) or 204-byte (DVB with parity) ones.
//! - [`FaultSender`] pushes a real TS file to a `tcp://` source in real time,
//!   paced by the file's PCR, and injects faults at given moments: garbage
//!   between packets, a packet cut in half, dropped video packets (a
//!   continuity-counter jump) and a source restart with another file. It
//!   logs where each fault went so a test can find it in the relay's output.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::media::{media_dir, run_with_timeout};
use crate::ts::{adaptation, continuity_counter, packets, payload, pcr, pid, pusi, PACKET, SYNC};

/// The PID of the PAT.
pub const PAT_PID: u16 = 0;
/// The PID of the SDT (and BAT).
pub const SDT_PID: u16 = 0x11;
/// The PID of null (stuffing) packets.
pub const NULL_PID: u16 = 0x1fff;

static ENCODE_LOCK: Mutex<()> = Mutex::new(());

/// FNV-1a over the command line: a cache key that is the same in every run.
fn fnv1a(parts: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes().iter().chain([0u8].iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Runs `ffmpeg -hide_banner -nostdin -loglevel error -y ARGS... -f mpegts OUT`
/// once and returns OUT, a cached file named after `label` and a hash of
/// `args`. Encodes run one at a time (the test machine is small).
pub fn ffmpeg_ts(label: &str, args: &[String]) -> PathBuf {
    let _guard = ENCODE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = media_dir();
    std::fs::create_dir_all(&dir).expect("create media dir");
    let name = format!("{label}_{:016x}.ts", fnv1a(args));
    let path = dir.join(&name);
    if path.exists() {
        return path;
    }
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .args(["-f", "mpegts"])
        .arg(&tmp);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("ffmpeg for {label}: {e}"));
    assert!(
        out.status.success() && tmp.exists(),
        "ffmpeg failed to make {label} with {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &path).expect("rename media");
    path
}

/// Runs ffprobe with `args` (then the input) and parses its JSON output.
pub fn ffprobe_json(input: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-hide_banner", "-v", "error", "-of", "json"])
        .args(args)
        .arg(input);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("ffprobe {}: {e}", input.display()));
    assert!(
        out.status.success(),
        "ffprobe {args:?} {} failed: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ffprobe output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The first PSI section that starts in this packet (pointer field honoured),
/// cut to its `section_length`.
pub fn section(p: &[u8]) -> Option<&[u8]> {
    if !pusi(p) {
        return None;
    }
    let pl = payload(p)?;
    let pointer = usize::from(*pl.first()?);
    let s = pl.get(1 + pointer..)?;
    let len = ((usize::from(*s.get(1)?) & 0x0f) << 8) | usize::from(*s.get(2)?);
    s.get(..3 + len)
}

/// The CRC-32/MPEG-2 of `data` (a whole section including its CRC gives 0).
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// (program_number, PMT PID) entries of a PAT packet (program 0, the NIT,
/// included), or `None` if `p` does not start a valid PAT section.
pub fn pat_entries(p: &[u8]) -> Option<Vec<(u16, u16)>> {
    if pid(p) != PAT_PID {
        return None;
    }
    let s = section(p)?;
    if s[0] != 0 || s.len() < 12 || crc32_mpeg2(s) != 0 {
        return None;
    }
    Some(
        s[8..s.len() - 4]
            .chunks_exact(4)
            .map(|e| {
                (
                    u16::from_be_bytes([e[0], e[1]]),
                    (u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]),
                )
            })
            .collect(),
    )
}

/// One program map table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pmt {
    pub program_number: u16,
    pub pcr_pid: u16,
    /// (stream_type, elementary PID)
    pub streams: Vec<(u8, u16)>,
}

impl Pmt {
    /// The first video stream: (stream_type, PID).
    pub fn video(&self) -> Option<(u8, u16)> {
        self.streams
            .iter()
            .copied()
            .find(|(t, _)| is_video_stream_type(*t))
    }

    /// Every PID this program uses besides its PMT.
    pub fn es_pids(&self) -> Vec<u16> {
        self.streams.iter().map(|(_, p)| *p).collect()
    }
}

/// MPEG-1/2 video, H.264, HEVC.
pub fn is_video_stream_type(t: u8) -> bool {
    matches!(t, 0x01 | 0x02 | 0x1b | 0x24)
}

/// Parses a PMT section starting in `p`, or `None`.
pub fn pmt(p: &[u8]) -> Option<Pmt> {
    let s = section(p)?;
    if s[0] != 2 || s.len() < 16 || crc32_mpeg2(s) != 0 {
        return None;
    }
    let program_number = u16::from_be_bytes([s[3], s[4]]);
    let pcr_pid = (u16::from(s[8] & 0x1f) << 8) | u16::from(s[9]);
    let info_len = ((usize::from(s[10]) & 0x0f) << 8) | usize::from(s[11]);
    let mut rest = s.get(12 + info_len..s.len() - 4)?;
    let mut streams = Vec::new();
    while rest.len() >= 5 {
        let es_pid = (u16::from(rest[1] & 0x1f) << 8) | u16::from(rest[2]);
        let es_info = ((usize::from(rest[3]) & 0x0f) << 8) | usize::from(rest[4]);
        streams.push((rest[0], es_pid));
        rest = rest.get(5 + es_info..)?;
    }
    Some(Pmt {
        program_number,
        pcr_pid,
        streams,
    })
}

/// Every PAT section in `data`: (packet index, entries).
pub fn all_pats(data: &[u8]) -> Vec<(usize, Vec<(u16, u16)>)> {
    packets(data)
        .enumerate()
        .filter_map(|(i, p)| Some((i, pat_entries(p)?)))
        .collect()
}

/// The program map of the first PAT in `data` that lists a program, and
/// the first PMT of that program after it: (PAT index, PMT index, PMT PID,
/// PMT).
pub fn first_program(data: &[u8]) -> Option<(usize, usize, u16, Pmt)> {
    let (pat_at, pmt_pid) = all_pats(data).into_iter().find_map(|(i, entries)| {
        entries
            .into_iter()
            .find(|(n, _)| *n != 0)
            .map(|(_, pmt_pid)| (i, pmt_pid))
    })?;
    let (pmt_at, table) = packets(data)
        .enumerate()
        .skip(pat_at)
        .find_map(|(i, p)| (pid(p) == pmt_pid).then(|| pmt(p).map(|t| (i, t)))?)?;
    Some((pat_at, pmt_at, pmt_pid, table))
}

/// Every PMT PID → PMT of a (multi-program) stream, from its first PAT.
pub fn program_table(data: &[u8]) -> Vec<(u16, u16, Pmt)> {
    let Some((_, entries)) = all_pats(data).into_iter().next() else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter(|(n, _)| *n != 0)
        .filter_map(|(number, pmt_pid)| {
            let table = packets(data).filter(|p| pid(p) == pmt_pid).find_map(pmt)?;
            Some((number, pmt_pid, table))
        })
        .collect()
}

/// discontinuity_indicator of the adaptation field.
pub fn discontinuity(p: &[u8]) -> bool {
    adaptation(p).is_some_and(|a| !a.is_empty() && a[0] & 0x80 != 0)
}

/// random_access_indicator of the adaptation field.
pub fn random_access(p: &[u8]) -> bool {
    adaptation(p).is_some_and(|a| !a.is_empty() && a[0] & 0x40 != 0)
}

/// The PTS of a PES that starts in this packet, in 90 kHz units.
pub fn pes_pts(p: &[u8]) -> Option<u64> {
    if !pusi(p) {
        return None;
    }
    let pl = payload(p)?;
    if pl.len() < 14 || pl[..3] != [0, 0, 1] || pl[7] & 0x80 == 0 {
        return None;
    }
    let b = &pl[9..14];
    Some(
        (u64::from(b[0] >> 1) & 0x07) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1),
    )
}

/// The elementary-stream bytes of the PES that starts at packet `start` of
/// `data`: the payloads of that PID up to its next PES start (at most
/// `limit` bytes), without the PES header. Empty if no PES starts there.
pub fn pes_es(data: &[u8], start: usize, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(first) = data.get(start * PACKET..(start + 1) * PACKET) else {
        return out;
    };
    let Some(pl) = payload(first).filter(|_| pusi(first)) else {
        return out;
    };
    if pl.len() < 9 || pl[..3] != [0, 0, 1] {
        return out;
    }
    let id = pid(first);
    out.extend_from_slice(pl.get(9 + usize::from(pl[8])..).unwrap_or_default());
    for p in packets(data).skip(start + 1) {
        if out.len() >= limit {
            break;
        }
        if pid(p) != id {
            continue;
        }
        if pusi(p) {
            break;
        }
        out.extend_from_slice(payload(p).unwrap_or_default());
    }
    out.truncate(limit);
    out
}

/// Judges a picture from its elementary-stream bytes: `Some(true)` for an
/// H.264 IDR slice, an HEVC IRAP picture or an MPEG-2 I picture,
/// `Some(false)` for another picture, `None` if no picture is in `es`.
pub fn es_is_keyframe(es: &[u8], stream_type: u8) -> Option<bool> {
    for (i, w) in es.windows(4).enumerate() {
        if w[..3] != [0, 0, 1] {
            continue;
        }
        match stream_type {
            0x1b => match w[3] & 0x1f {
                5 => return Some(true),
                1 => return Some(false),
                _ => {}
            },
            0x24 => match (w[3] >> 1) & 0x3f {
                16..=21 => return Some(true),
                0..=9 => return Some(false),
                _ => {}
            },
            0x01 | 0x02 if w[3] == 0x00 => {
                // picture_start_code; picture_coding_type follows the 10-bit
                // temporal_reference.
                let b = *es.get(i + 5)?;
                return Some((b >> 3) & 0x07 == 1);
            }
            _ => {}
        }
    }
    None
}

/// True if packet `index` of `data` starts a video PES whose picture is a
/// keyframe, read from the elementary stream itself (over as many packets
/// as the PES spans): an H.264 IDR slice, an HEVC IRAP picture, an MPEG-2 I
/// picture. The random_access_indicator alone is not trusted: a relay might
/// copy it blindly.
pub fn pes_is_keyframe(data: &[u8], index: usize, stream_type: u8) -> bool {
    es_is_keyframe(&pes_es(data, index, 256 * 1024), stream_type) == Some(true)
}

/// Packet indexes of video keyframe PES starts on `video_pid`.
pub fn keyframe_indexes(data: &[u8], video_pid: u16, stream_type: u8) -> Vec<usize> {
    packets(data)
        .enumerate()
        .filter(|(i, p)| pid(p) == video_pid && pusi(p) && pes_is_keyframe(data, *i, stream_type))
        .map(|(i, _)| i)
        .collect()
}

/// Packet indexes of every PES start on `pid_value`.
pub fn pes_starts(data: &[u8], pid_value: u16) -> Vec<usize> {
    packets(data)
        .enumerate()
        .filter(|(_, p)| pid(p) == pid_value && pusi(p))
        .map(|(i, _)| i)
        .collect()
}

/// A null packet.
pub fn null_packet() -> [u8; PACKET] {
    let mut p = [0xffu8; PACKET];
    p[..4].copy_from_slice(&[SYNC, 0x1f, 0xff, 0x10]);
    p
}

/// Rewrites an ffmpeg-made single-program TS the way broadcast muxers
/// place tables: ffmpeg writes a PAT and a PMT right before every video
/// keyframe; here those two (except the ones at the very start) become null
/// packets, so the remaining PAT/PMT (every ~100 ms) fall anywhere in a GOP.
/// The continuity counters of the PAT and PMT PIDs are renumbered so they
/// stay continuous. Timing and every other packet are unchanged.
pub fn broadcast_psi(data: &[u8]) -> Vec<u8> {
    let (_, _, pmt_pid, table) = first_program(data).expect("PAT/PMT in the file");
    let (stream_type, video) = table.video().expect("a video stream");
    let mut out = data.to_vec();
    let keys = keyframe_indexes(data, video, stream_type);
    for &k in keys.iter().skip(1) {
        let mut j = k;
        // Only the packets right before the keyframe that are PAT/PMT.
        while j > 0 {
            let prev = &data[(j - 1) * PACKET..j * PACKET];
            if pid(prev) == PAT_PID || pid(prev) == pmt_pid {
                out[(j - 1) * PACKET..j * PACKET].copy_from_slice(&null_packet());
                j -= 1;
            } else {
                break;
            }
        }
    }
    let mut next_cc: HashMap<u16, u8> = HashMap::new();
    for p in out.chunks_exact_mut(PACKET) {
        let id = pid(p);
        if id == PAT_PID || id == pmt_pid {
            let cc = next_cc.entry(id).or_insert(continuity_counter(p));
            p[3] = (p[3] & 0xf0) | *cc;
            *cc = (*cc + 1) & 0x0f;
        }
    }
    out
}

/// Packet framings a source may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireSize {
    /// Plain 188-byte packets.
    Ts188,
    /// M2TS / BDAV: a 4-byte TP_extra_header (copy permission + 30-bit
    /// arrival time stamp, 27 MHz) before each packet.
    M2ts192,
    /// DVB with 16 bytes of Reed-Solomon parity after each packet (here
    /// pseudo-random bytes: receivers do not check them).
    Dvb204,
}

impl WireSize {
    pub fn bytes(self) -> usize {
        match self {
            WireSize::Ts188 => 188,
            WireSize::M2ts192 => 192,
            WireSize::Dvb204 => 204,
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64), any value allowed.
fn noise(n: usize, seed: &mut u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 24) as u8
        })
        .collect()
}

/// Converts whole 188-byte packets to the given wire size.
pub fn to_wire_size(data: &[u8], size: WireSize) -> Vec<u8> {
    let times = packet_times(data);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(data.len() / PACKET * size.bytes());
    for (i, p) in packets(data).enumerate() {
        match size {
            WireSize::Ts188 => out.extend_from_slice(p),
            WireSize::M2ts192 => {
                let ats = ((times[i] * 27_000_000.0) as u64 & 0x3fff_ffff) as u32;
                out.extend_from_slice(&ats.to_be_bytes());
                out.extend_from_slice(p);
            }
            WireSize::Dvb204 => {
                out.extend_from_slice(p);
                out.extend_from_slice(&noise(16, &mut seed));
            }
        }
    }
    out
}

/// Send time of every packet, in seconds after the first one, from the PCRs
/// of the first program's PCR PID (linear between PCRs, the last rate
/// extrapolated past the last PCR, the first PCR's time before it).
pub fn packet_times(data: &[u8]) -> Vec<f64> {
    let (_, _, _, table) = first_program(data).expect("PAT/PMT in the stream");
    let pcrs: Vec<(usize, f64)> = packets(data)
        .enumerate()
        .filter(|(_, p)| pid(p) == table.pcr_pid)
        .filter_map(|(i, p)| Some((i, pcr(p)? as f64 / 27_000_000.0)))
        .collect();
    assert!(pcrs.len() >= 2, "the stream needs at least two PCRs");
    let n = data.len() / PACKET;
    let mut times = vec![0.0; n];
    let mut k = 0;
    for (i, t) in times.iter_mut().enumerate() {
        while k + 2 < pcrs.len() && pcrs[k + 1].0 <= i {
            k += 1;
        }
        let (i0, t0) = pcrs[k];
        let (i1, t1) = pcrs[k + 1];
        let rate = (t1 - t0) / (i1 - i0) as f64;
        *t = (t0 + (i as f64 - i0 as f64) * rate).max(pcrs[0].1);
    }
    let first = times[0];
    for t in &mut times {
        *t -= first;
    }
    times
}

/// What to inject into a stream.
#[derive(Clone, Debug)]
pub enum Fault {
    /// This many bytes with no 0x47 in them, between two packets.
    Garbage(usize),
    /// Only the first half of the next video packet that does not start a
    /// PES; the stream goes on with the packet after it.
    CutPacket,
    /// The next this-many video packets that do not start a PES are not sent
    /// (a continuity-counter jump on the video PID).
    DropVideo(usize),
    /// Close the connection, wait, connect again and go on with `data` from
    /// its packet `from_packet` (a restarted encoder with other PIDs).
    Restart {
        data: Arc<Vec<u8>>,
        from_packet: usize,
    },
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Fault::Garbage(_) => "garbage",
            Fault::CutPacket => "cut packet",
            Fault::DropVideo(_) => "dropped video packets",
            Fault::Restart { .. } => "source restart",
        }
    }
}

/// A fault sender's script.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// The relay's `tcp://` source address (loopback).
    pub addr: SocketAddr,
    /// The stream sent first, from its first packet.
    pub data: Arc<Vec<u8>>,
    /// (time after the start, fault), in time order.
    pub faults: Vec<(Duration, Fault)>,
    /// Stop after this long in any case.
    pub duration: Duration,
    /// How long a restart leaves the source silent.
    pub restart_pause: Duration,
    /// Packet framing on the wire.
    pub wire: WireSize,
}

impl FaultPlan {
    pub fn new(addr: SocketAddr, data: Arc<Vec<u8>>, duration: Duration) -> FaultPlan {
        assert!(
            !data.is_empty() && data.len().is_multiple_of(PACKET),
            "send whole TS packets"
        );
        FaultPlan {
            addr,
            data,
            faults: Vec::new(),
            duration,
            restart_pause: Duration::from_millis(300),
            wire: WireSize::Ts188,
        }
    }
}

/// Where a fault went.
#[derive(Clone, Debug)]
pub struct FaultEvent {
    pub name: &'static str,
    /// When it happened, after the sender's start.
    pub at: Duration,
    /// Index (in the stream being sent when the fault hit) of the first
    /// packet the fault touched or of the packet after the garbage. For a
    /// restart: the index reached in the old stream.
    pub packet: usize,
    /// Copies of the (up to 64) whole packets sent right after the fault, to
    /// find it in a relay's output.
    pub after: Vec<Vec<u8>>,
    /// Packets the fault removed or cut.
    pub lost: Vec<Vec<u8>>,
}

/// Counters of a fault sender.
#[derive(Clone, Debug, Default)]
pub struct FaultStats {
    pub bytes: u64,
    pub packets: u64,
    pub garbage_bytes: u64,
    pub connections: u32,
    pub events: Vec<FaultEvent>,
    /// Per connection: (stream number, first packet index, packets sent).
    pub sessions: Vec<(usize, usize, usize)>,
    pub errors: Vec<String>,
}

/// A running fault sender; stops on drop.
pub struct FaultSender {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<FaultStats>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl FaultSender {
    pub fn start(plan: FaultPlan) -> FaultSender {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(FaultStats::default()));
        let (s2, st2) = (stop.clone(), stats.clone());
        let handle = std::thread::Builder::new()
            .name("fault sender".into())
            .spawn(move || {
                if let Err(e) = run_faults(&plan, &s2, &st2) {
                    st2.lock().unwrap().errors.push(e);
                }
            })
            .expect("spawn fault sender");
        FaultSender {
            stop,
            stats,
            handle: Some(handle),
        }
    }

    pub fn stats(&self) -> FaultStats {
        self.stats.lock().unwrap().clone()
    }

    /// True once the script (or its time) ran out.
    pub fn is_done(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops, waits for the thread and returns the counters.
    pub fn finish(mut self) -> FaultStats {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.stats()
    }
}

impl Drop for FaultSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn connect_retrying(addr: SocketAddr, stop: &AtomicBool) -> Result<TcpStream, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => {
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if Instant::now() >= deadline || stop.load(Ordering::Relaxed) => {
                return Err(format!("connect {addr}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The stream being sent: its packets, their due times and the video PID.
struct Current {
    data: Arc<Vec<u8>>,
    times: Vec<f64>,
    video_pid: u16,
    /// Index of the next packet to send.
    next: usize,
    /// Wall time at which packet `base` is due.
    start: Instant,
    base: usize,
    number: usize,
}

impl Current {
    fn new(data: Arc<Vec<u8>>, from: usize, number: usize) -> Current {
        let times = packet_times(&data);
        let (_, _, _, table) = first_program(&data).expect("PAT/PMT");
        let video_pid = table.video().expect("video stream").1;
        Current {
            data,
            times,
            video_pid,
            next: from,
            start: Instant::now(),
            base: from,
            number,
        }
    }

    fn len(&self) -> usize {
        self.data.len() / PACKET
    }

    fn packet(&self, i: usize) -> &[u8] {
        &self.data[i * PACKET..(i + 1) * PACKET]
    }

    fn due(&self, i: usize) -> Instant {
        self.start + Duration::from_secs_f64((self.times[i] - self.times[self.base]).max(0.0))
    }

    /// Index of the first video packet at or after `from` that does not
    /// start a PES.
    fn next_plain_video(&self, from: usize) -> Option<usize> {
        (from..self.len()).find(|&i| {
            let p = self.packet(i);
            pid(p) == self.video_pid && !pusi(p)
        })
    }

    fn after(&self, from: usize) -> Vec<Vec<u8>> {
        (from..self.len().min(from + 64))
            .map(|i| self.packet(i).to_vec())
            .collect()
    }
}

/// Writes one packet in the plan's wire size.
fn wire_packet(plan: &FaultPlan, p: &[u8], due: f64, seed: &mut u64, out: &mut Vec<u8>) {
    match plan.wire {
        WireSize::Ts188 => out.extend_from_slice(p),
        WireSize::M2ts192 => {
            let ats = ((due * 27_000_000.0) as u64 & 0x3fff_ffff) as u32;
            out.extend_from_slice(&ats.to_be_bytes());
            out.extend_from_slice(p);
        }
        WireSize::Dvb204 => {
            out.extend_from_slice(p);
            out.extend_from_slice(&noise(16, seed));
        }
    }
}

fn run_faults(
    plan: &FaultPlan,
    stop: &AtomicBool,
    stats: &Mutex<FaultStats>,
) -> Result<(), String> {
    let begin = Instant::now();
    let end = begin + plan.duration;
    let mut stream = connect_retrying(plan.addr, stop)?;
    stats.lock().unwrap().connections += 1;
    let mut cur = Current::new(plan.data.clone(), 0, 0);
    stats.lock().unwrap().sessions.push((0, 0, 0));
    let mut faults = plan.faults.iter();
    let mut pending = faults.next();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = Vec::with_capacity(64 * 1024);
    let send = |stream: &mut TcpStream, buf: &mut Vec<u8>, packets: usize| {
        let r = stream.write_all(buf).map_err(|e| format!("write: {e}"));
        let mut s = stats.lock().unwrap();
        s.bytes += buf.len() as u64;
        s.packets += packets as u64;
        if let Some(last) = s.sessions.last_mut() {
            last.2 += packets;
        }
        buf.clear();
        r
    };
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) || now >= end || cur.next >= cur.len() {
            return Ok(());
        }
        if let Some((at, fault)) = pending {
            if now >= begin + *at {
                let mut event = FaultEvent {
                    name: fault.name(),
                    at: now - begin,
                    packet: cur.next,
                    after: Vec::new(),
                    lost: Vec::new(),
                };
                match fault {
                    Fault::Garbage(n) => {
                        let mut g = noise(*n, &mut seed);
                        for b in &mut g {
                            if *b == SYNC {
                                *b = 0x46;
                            }
                        }
                        buf.extend_from_slice(&g);
                        stats.lock().unwrap().garbage_bytes += *n as u64;
                        send(&mut stream, &mut buf, 0)?;
                        event.after = cur.after(cur.next);
                    }
                    Fault::CutPacket => {
                        let k = cur.next_plain_video(cur.next).ok_or("no video packet")?;
                        for i in cur.next..k {
                            let due = cur.times[i];
                            wire_packet(plan, cur.packet(i), due, &mut seed, &mut buf);
                        }
                        let sent = k - cur.next;
                        let p = cur.packet(k).to_vec();
                        let mut whole = Vec::new();
                        wire_packet(plan, &p, cur.times[k], &mut seed, &mut whole);
                        buf.extend_from_slice(&whole[..whole.len() / 2]);
                        send(&mut stream, &mut buf, sent)?;
                        event.packet = k;
                        event.lost.push(p);
                        cur.next = k + 1;
                        event.after = cur.after(cur.next);
                    }
                    Fault::DropVideo(n) => {
                        let first = cur.next_plain_video(cur.next).ok_or("no video packet")?;
                        let mut i = cur.next;
                        let mut dropped = 0;
                        let mut sent = 0;
                        while dropped < *n && i < cur.len() {
                            let p = cur.packet(i).to_vec();
                            if i >= first && pid(&p) == cur.video_pid && !pusi(&p) {
                                event.lost.push(p);
                                dropped += 1;
                            } else {
                                wire_packet(plan, &p, cur.times[i], &mut seed, &mut buf);
                                sent += 1;
                            }
                            i += 1;
                        }
                        send(&mut stream, &mut buf, sent)?;
                        event.packet = first;
                        cur.next = i;
                        event.after = cur.after(cur.next);
                    }
                    Fault::Restart { data, from_packet } => {
                        let _ = stream.flush();
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                        drop(stream);
                        std::thread::sleep(plan.restart_pause);
                        stream = connect_retrying(plan.addr, stop)?;
                        let number = cur.number + 1;
                        cur = Current::new(data.clone(), *from_packet, number);
                        let mut s = stats.lock().unwrap();
                        s.connections += 1;
                        s.sessions.push((number, *from_packet, 0));
                        drop(s);
                        event.after = cur.after(cur.next);
                    }
                }
                stats.lock().unwrap().events.push(event);
                pending = faults.next();
                continue;
            }
        }
        // Send every packet that is due (at most 64 at once), else sleep.
        let mut count = 0;
        while cur.next < cur.len() && count < 64 && cur.due(cur.next) <= now {
            let i = cur.next;
            let due = cur.times[i];
            wire_packet(plan, cur.packet(i), due, &mut seed, &mut buf);
            cur.next += 1;
            count += 1;
        }
        if count > 0 {
            send(&mut stream, &mut buf, count)?;
            continue;
        }
        let wait = cur
            .due(cur.next)
            .saturating_duration_since(now)
            .min(Duration::from_millis(20));
        std::thread::sleep(wait.max(Duration::from_millis(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psi_packet(pid_value: u16, section_body: &[u8]) -> Vec<u8> {
        let mut p = vec![0xffu8; PACKET];
        p[0] = SYNC;
        p[1] = 0x40 | (pid_value >> 8) as u8;
        p[2] = pid_value as u8;
        p[3] = 0x10;
        p[4] = 0;
        let mut s = section_body.to_vec();
        let crc = crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        p[5..5 + s.len()].copy_from_slice(&s);
        p
    }

    #[test]
    fn parses_a_pat_and_a_pmt() {
        // PAT: table 0, length 13, tsid 1, version/current, sections 0/0,
        // program 2 -> PMT 0x1001.
        let pat = psi_packet(0, &[0x00, 0xb0, 0x0d, 0, 1, 0xc1, 0, 0, 0, 2, 0xf0, 0x01]);
        assert_eq!(pat_entries(&pat), Some(vec![(2, 0x1001)]));
        let mut bad = pat.clone();
        bad[14] ^= 1;
        assert_eq!(pat_entries(&bad), None, "a CRC error is not a PAT");
        // PMT: program 2, PCR 0x102, H.264 on 0x102 and AAC on 0x103.
        let pmt_packet = psi_packet(
            0x1001,
            &[
                0x02, 0xb0, 0x17, 0, 2, 0xc1, 0, 0, 0xe1, 0x02, 0xf0, 0, 0x1b, 0xe1, 0x02, 0xf0, 0,
                0x0f, 0xe1, 0x03, 0xf0, 0,
            ],
        );
        let table = pmt(&pmt_packet).expect("PMT");
        assert_eq!(table.program_number, 2);
        assert_eq!(table.pcr_pid, 0x102);
        assert_eq!(table.streams, vec![(0x1b, 0x102), (0x0f, 0x103)]);
        assert_eq!(table.video(), Some((0x1b, 0x102)));
    }

    #[test]
    fn crc_of_a_known_section() {
        // CRC-32/MPEG-2 check value.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn reads_pts_and_keyframes() {
        let mut p = vec![0xffu8; PACKET];
        p[..4].copy_from_slice(&[SYNC, 0x41, 0x00, 0x10]);
        // PES header with PTS = 0x1_2345_6789 & 33 bits, then an IDR NAL.
        let pts: u64 = 0x1_2345_6789;
        let pes = [
            0,
            0,
            1,
            0xe0,
            0,
            0,
            0x80,
            0x80,
            5,
            0x21 | ((pts >> 29) as u8 & 0x0e),
            (pts >> 22) as u8,
            ((pts >> 14) as u8) | 1,
            (pts >> 7) as u8,
            ((pts << 1) as u8) | 1,
            0,
            0,
            0,
            1,
            0x65,
            0x88,
        ];
        p[4..4 + pes.len()].copy_from_slice(&pes);
        assert_eq!(pes_pts(&p), Some(pts));
        assert!(pes_is_keyframe(&p, 0, 0x1b));
        p[4 + 18] = 0x41;
        assert!(!pes_is_keyframe(&p, 0, 0x1b));
    }

    #[test]
    fn a_keyframe_is_found_past_the_first_packet_of_its_pes() {
        // PES start with a long SEI (type 6), the IDR slice in the next
        // packet of the PID, an audio packet in between.
        let mut first = vec![0u8; PACKET];
        first[..4].copy_from_slice(&[SYNC, 0x41, 0x00, 0x10]);
        first[4..17].copy_from_slice(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0, 0, 0, 0, 1, 0x06]);
        first[17..].fill(0x55);
        let mut audio = vec![0x11u8; PACKET];
        audio[..4].copy_from_slice(&[SYNC, 0x01, 0x01, 0x10]);
        let mut second = vec![0x66u8; PACKET];
        second[..4].copy_from_slice(&[SYNC, 0x01, 0x00, 0x11]);
        second[10..14].copy_from_slice(&[0, 0, 1, 0x65]);
        let mut next = first.clone();
        next[16] = 0x01; // a non-IDR slice right away
        let data = [first, audio, second, next].concat();
        assert!(pes_is_keyframe(&data, 0, 0x1b));
        assert_eq!(
            pes_es(&data, 0, 1 << 20).len(),
            (PACKET - 13) + (PACKET - 4)
        );
        assert!(!pes_is_keyframe(&data, 3, 0x1b));
        assert!(!pes_is_keyframe(&data, 1, 0x1b), "not a PES start");
        assert_eq!(keyframe_indexes(&data, 0x100, 0x1b), vec![0]);
        // MPEG-2: picture_start_code, temporal_reference 0, coding type I.
        assert_eq!(
            es_is_keyframe(&[0, 0, 1, 0, 0x00, 0x08, 0xff], 0x02),
            Some(true)
        );
        assert_eq!(
            es_is_keyframe(&[0, 0, 1, 0, 0x00, 0x10, 0xff], 0x02),
            Some(false)
        );
        // HEVC: a CRA (21) after VPS (32) is a keyframe, TRAIL_R (1) is not.
        assert_eq!(
            es_is_keyframe(&[0, 0, 1, 0x40, 1, 0, 0, 1, 0x2a, 1], 0x24),
            Some(true)
        );
        assert_eq!(es_is_keyframe(&[0, 0, 1, 0x02, 1], 0x24), Some(false));
    }

    #[test]
    fn wire_sizes_hold_the_packets() {
        let n = noise(1000, &mut 7);
        assert!(n.iter().any(|&b| b != n[0]));
        assert_eq!(WireSize::M2ts192.bytes() - PACKET, 4);
        assert_eq!(WireSize::Dvb204.bytes() - PACKET, 16);
        assert_eq!(null_packet()[..4], [SYNC, 0x1f, 0xff, 0x10]);
    }
}
