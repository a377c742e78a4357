//! MPEG-TS helpers for checking what the relay sent out (ISO/IEC 13818-1).
//!
//! The central check is [`find_contiguous_run`]: a reader's capture must be
//! whole 188-byte packets, each starting with 0x47, and must appear byte for
//! byte as one contiguous run inside what the source sent, starting at a
//! packet boundary. Looped sources (file loop, demo, senders that repeat a
//! file) are [`Sent::Cyclic`]: the file repeated without end.

use std::fmt::Write as _;

pub const PACKET: usize = 188;
pub const SYNC: u8 = 0x47;

/// What a source sent: the bytes once, or a file repeated for ever.
#[derive(Clone, Copy, Debug)]
pub enum Sent<'a> {
    Linear(&'a [u8]),
    Cyclic(&'a [u8]),
}

impl<'a> Sent<'a> {
    fn bytes(&self) -> &'a [u8] {
        match self {
            Sent::Linear(b) | Sent::Cyclic(b) => b,
        }
    }

    fn is_cyclic(&self) -> bool {
        matches!(self, Sent::Cyclic(_))
    }

    /// The packet at byte `offset` (cyclic: modulo the length).
    fn packet_at(&self, offset: usize) -> Option<&'a [u8]> {
        let b = self.bytes();
        let offset = if self.is_cyclic() {
            offset % b.len()
        } else {
            offset
        };
        b.get(offset..offset + PACKET)
    }
}

pub fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

pub fn pusi(p: &[u8]) -> bool {
    p[1] & 0x40 != 0
}

pub fn continuity_counter(p: &[u8]) -> u8 {
    p[3] & 0x0f
}

/// The adaptation field (without its length byte), if present.
pub fn adaptation(p: &[u8]) -> Option<&[u8]> {
    if p[3] & 0x20 == 0 {
        return None;
    }
    let len = usize::from(p[4]);
    p.get(5..5 + len)
}

/// The payload, if present.
pub fn payload(p: &[u8]) -> Option<&[u8]> {
    if p[3] & 0x10 == 0 {
        return None;
    }
    let start = if p[3] & 0x20 != 0 {
        5 + usize::from(p[4])
    } else {
        4
    };
    p.get(start..)
}

/// random_access_indicator.
pub fn random_access(p: &[u8]) -> bool {
    adaptation(p).is_some_and(|a| !a.is_empty() && a[0] & 0x40 != 0)
}

/// PCR in 27 MHz units.
pub fn pcr(p: &[u8]) -> Option<u64> {
    let a = adaptation(p)?;
    if a.len() < 7 || a[0] & 0x10 == 0 {
        return None;
    }
    let base = (u64::from(a[1]) << 25)
        | (u64::from(a[2]) << 17)
        | (u64::from(a[3]) << 9)
        | (u64::from(a[4]) << 1)
        | (u64::from(a[5]) >> 7);
    let ext = (u64::from(a[5] & 1) << 8) | u64::from(a[6]);
    Some(base * 300 + ext)
}

/// Packets of `data` (ignoring a trailing partial packet).
pub fn packets(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.chunks_exact(PACKET)
}

/// Whole packets, each starting with 0x47.
pub fn check_aligned(data: &[u8]) -> Result<(), String> {
    if !data.len().is_multiple_of(PACKET) {
        return Err(format!("length {} is not a multiple of 188", data.len()));
    }
    if let Some(i) = packets(data).position(|p| p[0] != SYNC) {
        let at = i * PACKET;
        // Where do packets resume? The first offset after which 5 sync
        // bytes follow 188 apart: tells a partial packet from noise.
        let resync = (at.saturating_sub(PACKET - 1)..data.len())
            .find(|&j| (0..5).all(|k| data.get(j + k * PACKET) == Some(&SYNC)));
        let detail = match resync {
            Some(j) if j > at => format!("{} stray bytes, packets resume at byte {j}", j - at),
            Some(j) => format!(
                "the packet before it was cut short after {} bytes (packets resume at byte {j})",
                j - (at - PACKET)
            ),
            None => "no realignment after it".to_string(),
        };
        return Err(format!(
            "packet #{i} (byte {at}) starts with {:#04x}, not 0x47: {detail}",
            data[at]
        ));
    }
    Ok(())
}

/// PIDs of one program, from the first PAT and its PMT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    pub pmt_pid: u16,
    pub pcr_pid: u16,
    /// (stream_type, elementary PID)
    pub streams: Vec<(u8, u16)>,
}

impl Program {
    /// The first H.264/HEVC/MPEG-2 video PID.
    pub fn video_pid(&self) -> Option<u16> {
        self.streams
            .iter()
            .find(|(t, _)| matches!(t, 0x1b | 0x24 | 0x02 | 0x01))
            .map(|(_, p)| *p)
    }
}

fn section(p: &[u8]) -> Option<&[u8]> {
    let pl = payload(p)?;
    let pointer = usize::from(*pl.first()?);
    let s = pl.get(1 + pointer..)?;
    let len = ((usize::from(*s.get(1)?) & 0x0f) << 8) | usize::from(*s.get(2)?);
    s.get(..3 + len)
}

/// The first PAT packet and the PMT packet of its first program.
pub fn find_psi(data: &[u8]) -> Option<(&[u8], &[u8], Program)> {
    let (pat_pkt, pmt_pid) = packets(data).find_map(|p| {
        if p[0] != SYNC || pid(p) != 0 || !pusi(p) {
            return None;
        }
        let s = section(p)?;
        // table_id 0, then 5 bytes of header, entries of 4 bytes, CRC 4.
        if s[0] != 0 || s.len() < 12 {
            return None;
        }
        s[8..s.len() - 4].chunks_exact(4).find_map(|e| {
            let program = u16::from_be_bytes([e[0], e[1]]);
            let pmt = (u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]);
            (program != 0).then_some((p, pmt))
        })
    })?;
    let (pmt_pkt, program) = packets(data).find_map(|p| {
        if p[0] != SYNC || pid(p) != pmt_pid || !pusi(p) {
            return None;
        }
        let s = section(p)?;
        if s[0] != 2 || s.len() < 16 {
            return None;
        }
        let pcr_pid = (u16::from(s[8] & 0x1f) << 8) | u16::from(s[9]);
        let info_len = ((usize::from(s[10]) & 0x0f) << 8) | usize::from(s[11]);
        let mut rest = s.get(12 + info_len..s.len() - 4)?;
        let mut streams = Vec::new();
        while rest.len() >= 5 {
            let stream_type = rest[0];
            let es_pid = (u16::from(rest[1] & 0x1f) << 8) | u16::from(rest[2]);
            let es_info = ((usize::from(rest[3]) & 0x0f) << 8) | usize::from(rest[4]);
            streams.push((stream_type, es_pid));
            rest = rest.get(5 + es_info..)?;
        }
        Some((
            p,
            Program {
                pmt_pid,
                pcr_pid,
                streams,
            },
        ))
    })?;
    Some((pat_pkt, pmt_pkt, program))
}

/// Mux bitrate from the PCRs of the PCR PID: bytes between the first and the
/// last PCR over their time distance. `None` without two PCRs.
pub fn pcr_bitrate_bps(data: &[u8]) -> Option<f64> {
    let (_, _, program) = find_psi(data)?;
    let mut first: Option<(usize, u64)> = None;
    let mut last: Option<(usize, u64)> = None;
    for (i, p) in packets(data).enumerate() {
        if pid(p) != program.pcr_pid {
            continue;
        }
        if let Some(v) = pcr(p) {
            if first.is_none() {
                first = Some((i, v));
            }
            last = Some((i, v));
        }
    }
    let ((i0, v0), (i1, v1)) = (first?, last?);
    if v1 <= v0 {
        return None;
    }
    Some(((i1 - i0) * PACKET * 8) as f64 / ((v1 - v0) as f64 / 27_000_000.0))
}

/// How many whole packets of `capture`, from its start, equal `sent` from
/// byte `offset` on.
fn match_packets(capture: &[u8], sent: Sent, offset: usize) -> usize {
    packets(capture)
        .enumerate()
        .take_while(|(k, p)| sent.packet_at(offset + k * PACKET) == Some(*p))
        .count()
}

/// Offsets (packet boundaries) in `sent` whose packet equals `packet`.
fn candidates<'a>(packet: &'a [u8], sent: Sent<'a>) -> impl Iterator<Item = usize> + 'a {
    packets(sent.bytes())
        .enumerate()
        .filter(move |(_, p)| *p == packet)
        .map(|(i, _)| i * PACKET)
}

fn describe(p: Option<&[u8]>) -> String {
    match p {
        Some(p) if p.len() >= 4 => format!(
            "pid {:#x} cc {} pusi {} first bytes {:02x?}",
            pid(p),
            continuity_counter(p),
            pusi(p),
            &p[..8.min(p.len())]
        ),
        Some(p) => format!("{p:02x?}"),
        None => "past the end".into(),
    }
}

/// True for an adaptation-only packet whose only news is
/// discontinuity_indicator: what the relay inserts before the first packet
/// of a PID after a source restart (a file loop wrapping, a reconnect).
pub fn is_discontinuity_marker(p: &[u8]) -> bool {
    p.len() >= 6 && p[3] & 0x30 == 0x20 && p[4] == 183 && p[5] == 0x80
}

/// `capture` without the relay's discontinuity marks: inserted marker
/// packets dropped, and discontinuity_indicator cleared where the relay set
/// it in a packet's own adaptation field. What is left must be bytes the
/// source sent. (Sources used in these tests never set the flag themselves.)
pub fn without_discontinuity_marks(capture: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(capture.len());
    for p in capture.chunks(PACKET) {
        if p.len() < PACKET {
            out.extend_from_slice(p);
        } else if !is_discontinuity_marker(p) {
            let start = out.len();
            out.extend_from_slice(p);
            if p[3] & 0x20 != 0 && p[4] > 0 {
                out[start + 5] &= !0x80;
            }
        }
    }
    out
}

/// Checks that `capture` is one contiguous run of `sent` from a packet
/// boundary, once the relay's discontinuity marks are taken out (see
/// [`without_discontinuity_marks`]). Returns the byte offset in `sent` where
/// it starts.
pub fn find_contiguous_run(capture: &[u8], sent: Sent) -> Result<usize, String> {
    check_aligned(capture)?;
    let capture = &without_discontinuity_marks(capture)[..];
    if capture.is_empty() {
        return Err("empty capture".into());
    }
    if !sent.bytes().len().is_multiple_of(PACKET) || sent.bytes().is_empty() {
        return Err("sent data is not whole packets".into());
    }
    let total = capture.len() / PACKET;
    let mut best: Option<(usize, usize)> = None;
    for offset in candidates(&capture[..PACKET], sent) {
        let n = match_packets(capture, sent, offset);
        if n == total {
            return Ok(offset);
        }
        if best.is_none_or(|(b, _)| n > b) {
            best = Some((n, offset));
        }
    }
    let mut msg = format!(
        "capture of {} bytes ({total} packets) is not a contiguous run of the sent stream: ",
        capture.len()
    );
    match best {
        None => {
            let _ = write!(
                msg,
                "its first packet ({}) never occurs in what was sent",
                describe(Some(&capture[..PACKET]))
            );
        }
        Some((n, offset)) => {
            let _ = write!(
                msg,
                "best match starts at sent byte {offset} and holds for {n} packets; capture packet #{n} is [{}] but sent has [{}]",
                describe(capture.get(n * PACKET..(n + 1) * PACKET)),
                describe(sent.packet_at(offset + n * PACKET))
            );
        }
    }
    Err(msg)
}

/// Panicking form of [`find_contiguous_run`], with `who` in the message.
pub fn assert_contiguous_run(who: &str, capture: &[u8], sent: Sent) -> usize {
    find_contiguous_run(capture, sent).unwrap_or_else(|e| panic!("{who}: {e}"))
}

/// A piece of a capture that is a contiguous run of the sent stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub capture_offset: usize,
    pub sent_offset: usize,
    pub len: usize,
}

/// Splits `capture` greedily into the fewest contiguous runs of `sent` (each
/// the longest possible from where the previous ended). Fails if a packet of
/// the capture does not occur in `sent` at all (bytes the source never sent),
/// or after `max_segments`.
pub fn segments(capture: &[u8], sent: Sent, max_segments: usize) -> Result<Vec<Segment>, String> {
    check_aligned(capture)?;
    let capture = &without_discontinuity_marks(capture)[..];
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < capture.len() {
        if out.len() >= max_segments {
            return Err(format!(
                "more than {max_segments} segments; stopped at capture byte {pos}"
            ));
        }
        let rest = &capture[pos..];
        let best = candidates(&rest[..PACKET], sent)
            .map(|offset| (match_packets(rest, sent, offset), offset))
            .max_by_key(|(n, offset)| (*n, usize::MAX - offset));
        let Some((n, offset)) = best else {
            return Err(format!(
                "capture packet at byte {pos} ({}) was never sent by the source",
                describe(Some(&rest[..PACKET]))
            ));
        };
        out.push(Segment {
            capture_offset: pos,
            sent_offset: offset,
            len: n * PACKET,
        });
        pos += n * PACKET;
    }
    Ok(out)
}

/// True if this packet starts a video PES holding a keyframe: the
/// random_access_indicator, or an H.264 IDR/SPS NAL (HEVC IRAP/VPS) in it.
fn starts_keyframe(p: &[u8], video_pid: u16, stream_type: u8) -> bool {
    if pid(p) != video_pid || !pusi(p) {
        return false;
    }
    if random_access(p) {
        return true;
    }
    let Some(pl) = payload(p) else { return false };
    if pl.len() < 9 || pl[..3] != [0, 0, 1] {
        return false;
    }
    let es = pl.get(9 + usize::from(pl[8])..).unwrap_or_default();
    es.windows(4).any(|w| {
        w[..3] == [0, 0, 1]
            && if stream_type == 0x24 {
                matches!((w[3] >> 1) & 0x3f, 16..=21 | 32)
            } else {
                matches!(w[3] & 0x1f, 5 | 7)
            }
    })
}

/// Cuts a capture for a decode check: PAT + PMT (copied from the capture),
/// then from the first video keyframe PES up to (not including) the last
/// video PES start, which the end of the capture may have truncated. A
/// capture that starts mid-GOP is normal for a live stream; errors the
/// decoder reports on what is left are real.
pub fn trim_for_decode(capture: &[u8]) -> Result<Vec<u8>, String> {
    check_aligned(capture)?;
    let (pat, pmt, program) = find_psi(capture).ok_or("no PAT/PMT in capture")?;
    let video = program.video_pid().ok_or("no video stream in PMT")?;
    let stream_type = program
        .streams
        .iter()
        .find(|(_, p)| *p == video)
        .map_or(0, |(t, _)| *t);
    let all: Vec<&[u8]> = packets(capture).collect();
    let first = all
        .iter()
        .position(|p| starts_keyframe(p, video, stream_type))
        .ok_or("no video keyframe in capture")?;
    let last = all
        .iter()
        .rposition(|p| pid(p) == video && pusi(p))
        .ok_or("no video PES in capture")?;
    if last <= first {
        return Err("capture holds no complete video PES after its first keyframe".into());
    }
    let mut out = Vec::with_capacity((last - first + 2) * PACKET);
    out.extend_from_slice(pat);
    out.extend_from_slice(pmt);
    out.extend_from_slice(&capture[first * PACKET..last * PACKET]);
    Ok(out)
}

/// How many times a run of `len` bytes starting at `sent_offset` crosses the
/// end of a looped file of `file_len` bytes.
pub fn wraps(sent_offset: usize, len: usize, file_len: usize) -> usize {
    (sent_offset % file_len + len) / file_len
}

/// Datagram/segment helper: yields successive `size`-byte pieces of the
/// cyclic `data` starting at byte `from`.
pub fn cyclic_slice(data: &[u8], from: usize, size: usize, out: &mut Vec<u8>) {
    out.clear();
    let mut pos = from % data.len();
    while out.len() < size {
        let take = (size - out.len()).min(data.len() - pos);
        out.extend_from_slice(&data[pos..pos + take]);
        pos = (pos + take) % data.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A distinct packet: PID and a counter in the payload.
    fn packet(pid_value: u16, n: u32) -> Vec<u8> {
        let mut p = vec![0xffu8; PACKET];
        p[0] = SYNC;
        p[1] = (pid_value >> 8) as u8 & 0x1f;
        p[2] = pid_value as u8;
        p[3] = 0x10 | (n as u8 & 0x0f);
        p[4..8].copy_from_slice(&n.to_be_bytes());
        p
    }

    fn stream(n: u32) -> Vec<u8> {
        (0..n).flat_map(|i| packet(0x100, i)).collect()
    }

    #[test]
    fn contiguous_run_found_linear() {
        let sent = stream(100);
        let cap = sent[10 * PACKET..60 * PACKET].to_vec();
        assert_eq!(
            find_contiguous_run(&cap, Sent::Linear(&sent)),
            Ok(10 * PACKET)
        );
    }

    #[test]
    fn contiguous_run_rejects_gap_and_misalignment_and_foreign_bytes() {
        let sent = stream(100);
        let mut gap = sent[10 * PACKET..20 * PACKET].to_vec();
        gap.extend_from_slice(&sent[21 * PACKET..30 * PACKET]);
        let e = find_contiguous_run(&gap, Sent::Linear(&sent)).unwrap_err();
        assert!(e.contains("holds for 10 packets"), "{e}");
        let shifted = sent[10 * PACKET + 1..20 * PACKET + 1].to_vec();
        assert!(find_contiguous_run(&shifted, Sent::Linear(&sent))
            .unwrap_err()
            .contains("not 0x47"));
        let short = sent[0..PACKET * 3 - 5].to_vec();
        assert!(find_contiguous_run(&short, Sent::Linear(&sent)).is_err());
        let foreign = packet(0x200, 1);
        assert!(find_contiguous_run(&foreign, Sent::Linear(&sent))
            .unwrap_err()
            .contains("never occurs"));
        // Past the end of a linear source is not a match.
        let tail: Vec<u8> = sent[90 * PACKET..]
            .iter()
            .chain(sent[..PACKET].iter())
            .copied()
            .collect();
        assert!(find_contiguous_run(&tail, Sent::Linear(&sent)).is_err());
        assert!(find_contiguous_run(&[], Sent::Linear(&sent)).is_err());
    }

    #[test]
    fn contiguous_run_wraps_cyclic_and_longer_than_file() {
        let file = stream(20);
        let mut cap = Vec::new();
        cyclic_slice(&file, 15 * PACKET, 50 * PACKET, &mut cap);
        assert_eq!(
            find_contiguous_run(&cap, Sent::Cyclic(&file)),
            Ok(15 * PACKET)
        );
        assert!(find_contiguous_run(&cap, Sent::Linear(&file)).is_err());
    }

    #[test]
    fn repeated_packets_pick_the_matching_candidate() {
        // Null packets are all the same; the run must still be found.
        let null = packet(0x1fff, 0);
        let mut sent = Vec::new();
        for i in 0..30 {
            sent.extend_from_slice(&null);
            sent.extend_from_slice(&packet(0x100, i));
        }
        let cap = sent[20 * PACKET..41 * PACKET].to_vec();
        assert_eq!(
            find_contiguous_run(&cap, Sent::Linear(&sent)),
            Ok(20 * PACKET)
        );
    }

    #[test]
    fn segments_split_at_skips() {
        let file = stream(40);
        let mut cap = file[2 * PACKET..10 * PACKET].to_vec();
        cap.extend_from_slice(&file[25 * PACKET..30 * PACKET]);
        let segs = segments(&cap, Sent::Cyclic(&file), 10).unwrap();
        assert_eq!(
            segs,
            vec![
                Segment {
                    capture_offset: 0,
                    sent_offset: 2 * PACKET,
                    len: 8 * PACKET
                },
                Segment {
                    capture_offset: 8 * PACKET,
                    sent_offset: 25 * PACKET,
                    len: 5 * PACKET
                },
            ]
        );
        let mut bad = cap.clone();
        bad.extend_from_slice(&packet(0x300, 0));
        assert!(segments(&bad, Sent::Cyclic(&file), 10)
            .unwrap_err()
            .contains("never sent"));
    }

    #[test]
    fn pcr_decodes() {
        let mut p = vec![0u8; PACKET];
        p[0] = SYNC;
        p[3] = 0x20;
        p[4] = 7;
        p[5] = 0x10;
        // base = 1 (bit 0 of base is the top bit of byte 10), ext = 5.
        p[10] = 0x80;
        p[11] = 5;
        assert_eq!(pcr(&p), Some(300 + 5));
    }
}
