//! The sans-IO side of every source: what to do with bytes that arrived, when
//! to retry a lost upstream, and when a looped file's next packets are due.
//!
//! - [`Intake`] turns arbitrary source bytes into whole, aligned TS packets in
//!   the ring (through the TS aligner), reads the stream's tables and faults
//!   (through [`demux::Demux`]), cuts the ring into chunks that start at
//!   keyframes, and tells the driver when readers should be woken.
//! - [`Backoff`] is the reconnection delay: exponential with full jitter, so
//!   that many boxes losing the same upstream do not return all at once.
//! - [`Pacer`] maps PCR values of a looped file onto wall-clock deadlines, so
//!   the file plays at its own bitrate.
//!
//! The driver in `node` performs the socket and file I/O and the sleeps.
//!
//! What the ring holds, and why:
//! - the source's packets, unchanged: peers relaying the channel on must be
//!   able to check them against the origin's signatures;
//! - a chunk boundary at every keyframe: at the PAT and PMT right before it
//!   when the source put them there (ffmpeg often does), else at the first
//!   packet of the keyframe's PES. The latest PAT and PMT are kept beside the
//!   ring ([`Ring::psi`]); a reader starting at a chunk that does not begin
//!   with a PAT is sent them first, so it decodes its first picture at once;
//! - after a source restart or switch, nothing until the new source's PAT,
//!   PMT and first keyframe (at most [`HOLD_MS_MAX`]), which are then written
//!   together; the first packet of every PID after the switch carries
//!   `discontinuity_indicator` (set in its adaptation field, or in an
//!   adaptation-only packet inserted before it), so players accept the new
//!   continuity counters and the new clock;
//! - with a program selected from an MPTS, only that program's packets, with
//!   a PAT rewritten to list only it.

pub mod demux;

use ringcast_hal::{Region, Rng};

use crate::config::ProgramSelect;
use crate::ring::{ChunkFlags, Ring};
use crate::stats::ChannelStats;
use crate::wire::es::{KeyframeScan, Verdict};
use crate::wire::psi::PAT_PID;
use crate::wire::ts::{Aligner, Packet, NULL_PID, PACKET_BYTES};
use demux::{starts_video_pes, Demux, Role};

/// Bytes of new data after which readers are woken even before the flush tick.
pub const WAKE_BYTES: u64 = 64 * 1024;
/// Longest wait for a new source's PAT, PMT and keyframe after a switch.
pub const HOLD_MS_MAX: u64 = 5_000;
/// Pictures after a keyframe that must have started (so the ones before
/// them arrived whole) before new readers are started at that keyframe. A
/// decoder outputs its first picture after a few more (ffmpeg with x264's
/// B-frames and two frame threads: 3 to 4); the zap-time bench measured a
/// tail of 100 to 300 ms for readers started with fewer.
pub const PICTURES_TO_DECODE: u32 = 6;

/// Packets held back while deciding whether a video PES starts a keyframe.
pub const STAGE_PACKETS_MAX: usize = 32;

/// Packets after a video PES start, held until the keyframe scan decides.
struct Staging {
    bytes: [u8; STAGE_PACKETS_MAX * PACKET_BYTES],
    count: usize,
    video_pid: u16,
    scan: Option<KeyframeScan>,
    /// The PES start had random_access_indicator (the fallback verdict).
    random_access: bool,
}

impl Staging {
    fn is_active(&self) -> bool {
        self.count > 0
    }

    fn push(&mut self, packet: &[u8]) {
        let at = self.count * PACKET_BYTES;
        self.bytes[at..at + PACKET_BYTES].copy_from_slice(&packet[..PACKET_BYTES]);
        self.count += 1;
    }

    fn is_full(&self) -> bool {
        self.count == STAGE_PACKETS_MAX
    }
}

/// Where the output stands: chunk boundaries, continuity of PSI copies,
/// discontinuity marking after a switch.
struct Output {
    /// The next packet written follows a break in the source.
    break_pending: bool,
    /// Since when packets are withheld after a break (waiting for a keyframe).
    hold_since_ms: Option<u64>,
    /// A PAT (and maybe the PMT) were just written from this ring position,
    /// with only PSI after them.
    psi_run: Option<PsiRun>,
    /// PIDs whose first packet after a break still needs the
    /// discontinuity_indicator.
    discontinuity_pending: [u64; 8192 / 64],
    /// Whether a break should set `discontinuity_pending`: true once some
    /// packet was written.
    wrote_any: bool,
    /// The chunk of the last keyframe and the pictures started after it,
    /// until [`PICTURES_TO_DECODE`].
    keyframe_incomplete: Option<(u64, u32)>,
    /// Set when a held-back switch went on air, until reported.
    switched: Option<Switch>,
}

/// What a packet starts, for chunk boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    Plain,
    /// The first packet of a picture that is not a keyframe.
    Picture,
    /// The first packet of a keyframe.
    Keyframe,
}

impl Mark {
    fn picture(keyframe: bool) -> Self {
        if keyframe {
            Mark::Keyframe
        } else {
            Mark::Picture
        }
    }
}

#[derive(Clone, Copy)]
struct PsiRun {
    start: u64,
    has_pmt: bool,
}

/// Feeds source bytes into a channel's ring.
pub struct Intake {
    aligner: Aligner,
    demux: Demux,
    staging: Staging,
    output: Output,
    garbage_seen: u64,
    sync_losses_seen: u64,
    unannounced_bytes: u64,
    last_wake_ms: u64,
    /// The PSI generation last copied to the ring.
    psi_published: u64,
    /// A break in the source, to apply before the next bytes.
    break_at: Option<Break>,
}

/// A break in the source noted by the driver.
#[derive(Clone, Copy, Debug)]
struct Break {
    at_ms: u64,
    /// Withhold the new source until its tables and first keyframe.
    hold: bool,
}

/// What the driver should do after [`Intake::handle_bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntakeResult {
    /// Bytes of whole packets that entered the ring.
    pub packet_bytes: u64,
    /// Garbage bytes discarded by this call.
    pub garbage_bytes: u64,
    /// Readers should be woken now.
    pub wake_readers: bool,
    /// The program's PAT or PMT changed (a new source, a new version).
    pub tables_changed: bool,
    /// A source switch went on air in this call.
    pub switched: Option<Switch>,
}

/// How a source switch went on air.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    /// Milliseconds the new source was withheld, waiting for its keyframe.
    pub waited_ms: u64,
    /// It started on a keyframe (else the hold expired, or it has no video).
    pub on_keyframe: bool,
}

impl Default for Intake {
    fn default() -> Self {
        Self::new(ProgramSelect::All)
    }
}

impl Intake {
    pub fn new(select: ProgramSelect) -> Self {
        Self {
            aligner: Aligner::default(),
            demux: Demux::new(select),
            staging: Staging {
                bytes: [0; STAGE_PACKETS_MAX * PACKET_BYTES],
                count: 0,
                video_pid: NULL_PID,
                scan: None,
                random_access: false,
            },
            output: Output {
                break_pending: false,
                hold_since_ms: None,
                psi_run: None,
                discontinuity_pending: [0; 8192 / 64],
                wrote_any: false,
                keyframe_incomplete: None,
                switched: None,
            },
            garbage_seen: 0,
            sync_losses_seen: 0,
            unannounced_bytes: 0,
            last_wake_ms: 0,
            psi_published: 0,
            break_at: None,
        }
    }

    /// The packet size the source uses (188, 192 or 204), once locked.
    pub fn source_stride(&self) -> Option<usize> {
        self.aligner.stride()
    }

    /// Starts a new upstream session (a reconnect, another source): partial
    /// packets of the old one are dropped, tables are learned again, and if
    /// the old source had tables, nothing is relayed until the new source's
    /// PAT, PMT and first keyframe, which then go out marked as a
    /// discontinuity.
    pub fn handle_source_restart(&mut self, now_ms: u64) {
        self.aligner.reset();
        self.break_at = Some(Break {
            at_ms: now_ms,
            hold: true,
        });
    }

    /// Marks the next packets as following a break in the same source (a
    /// looped file starting over): tables are learned again and the packets
    /// are marked as a discontinuity, but nothing is held back, since the
    /// file starts where it started the first time.
    pub fn mark_discontinuity(&mut self, now_ms: u64) {
        self.break_at = Some(Break {
            at_ms: now_ms,
            hold: false,
        });
    }

    /// Applies a break noted by [`Intake::mark_discontinuity`]: the packets
    /// of the old source still staged go out first.
    fn apply_break<R: Region>(&mut self, noted: Break, ring: &mut Ring<R>, stats: &ChannelStats) {
        let now_ms = noted.at_ms;
        let (demux, staging, output) = (&self.demux, &mut self.staging, &mut self.output);
        if staging.is_active() {
            flush_staging(
                demux,
                staging,
                output,
                ring,
                Verdict::Unknown,
                now_ms,
                stats,
            );
        }
        let had_psi = self.demux.has_psi();
        self.demux.handle_restart();
        let output = &mut self.output;
        if output.wrote_any {
            output.break_pending = true;
            output.discontinuity_pending = [u64::MAX; 8192 / 64];
        }
        output.hold_since_ms = (had_psi && noted.hold).then_some(now_ms);
        output.psi_run = None;
    }

    /// Aligns `bytes` to TS packets and appends them to the ring.
    pub fn handle_bytes<R: Region>(
        &mut self,
        now_ms: u64,
        flush_ms: u64,
        bytes: &[u8],
        ring: &mut Ring<R>,
        stats: &ChannelStats,
    ) -> IntakeResult {
        ring.set_now_ms(now_ms);
        let head_before = ring.head();
        if let Some(noted) = self.break_at.take() {
            self.apply_break(noted, ring, stats);
        }
        let Self {
            aligner,
            demux,
            staging,
            output,
            ..
        } = self;
        aligner.push(bytes, &mut |packets: &[u8]| {
            for packet in packets.chunks_exact(PACKET_BYTES) {
                handle_packet(demux, staging, output, ring, packet, now_ms, stats);
            }
        });
        let mut tables_changed = false;
        if self.demux.psi_generation() != self.psi_published && self.demux.has_psi() {
            self.psi_published = self.demux.psi_generation();
            let (pat, pmt) = self.demux.psi_packets();
            let before = ring.psi_generation();
            ring.set_psi(pat.iter().chain(pmt));
            // Tables read again after a restart, but unchanged, are no news.
            tables_changed = ring.psi_generation() != before;
        }
        let packet_bytes = ring.head() - head_before;
        let garbage_total = self.aligner.garbage_bytes();
        let garbage_bytes = garbage_total - self.garbage_seen;
        self.garbage_seen = garbage_total;
        let sync_total = self.aligner.sync_losses();
        stats.sync_losses.add(sync_total - self.sync_losses_seen);
        self.sync_losses_seen = sync_total;
        stats.garbage_bytes.add(garbage_bytes);
        stats.bytes_in.add(bytes.len() as u64);
        stats.input_rate.record(now_ms, bytes.len() as u64);
        self.unannounced_bytes += packet_bytes;
        let wake_readers = self.poll_wake(now_ms, flush_ms);
        IntakeResult {
            packet_bytes,
            garbage_bytes,
            wake_readers,
            tables_changed,
            switched: self.output.switched.take(),
        }
    }

    /// True when readers should be woken: enough new bytes, or the flush
    /// interval passed with some bytes not yet announced.
    pub fn poll_wake(&mut self, now_ms: u64, flush_ms: u64) -> bool {
        let due = self.unannounced_bytes >= WAKE_BYTES
            || (self.unannounced_bytes > 0 && now_ms.saturating_sub(self.last_wake_ms) >= flush_ms);
        if due {
            self.unannounced_bytes = 0;
            self.last_wake_ms = now_ms;
        }
        due
    }

    /// The last PCR the source carried since the previous call, with its PID:
    /// what a looped file is paced by.
    pub fn take_latest_pcr(&mut self) -> Option<(u16, u64)> {
        self.demux.take_latest_pcr()
    }

    /// The served program as read from its tables.
    pub fn program(&self) -> Option<demux::ProgramInfo> {
        self.demux.program()
    }

    /// True if some appended bytes were not announced to readers yet.
    pub fn has_unannounced(&self) -> bool {
        self.unannounced_bytes > 0
    }
}

/// One aligned packet from the source: read it, then relay, hold, stage or
/// drop it.
fn handle_packet<R: Region>(
    demux: &mut Demux,
    staging: &mut Staging,
    output: &mut Output,
    ring: &mut Ring<R>,
    bytes: &[u8],
    now_ms: u64,
    stats: &ChannelStats,
) {
    let Ok(packet) = Packet::new_checked(bytes) else {
        // A bad adaptation length: nothing can be read from it; relay it.
        output.write(demux, ring, bytes, Mark::Plain, now_ms, stats);
        return;
    };
    let role = demux.observe(&packet, stats);
    let bytes: &[u8] = match role {
        Role::Filtered => {
            stats.filtered_packets.increment();
            return;
        }
        Role::RewrittenPat { complete: false } => return,
        Role::RewrittenPat { complete: true } => match demux.psi_packets().0.first() {
            Some(pat) => pat,
            None => return,
        },
        Role::Pass | Role::Psi | Role::VideoStart(_) => bytes,
    };
    if staging.is_active() {
        if matches!(role, Role::VideoStart(_)) {
            // A new picture before the last one was decided.
            flush_staging(
                demux,
                staging,
                output,
                ring,
                Verdict::Unknown,
                now_ms,
                stats,
            );
        } else {
            staging.push(bytes);
            let mut verdict = Verdict::NeedMore;
            if packet.pid() == staging.video_pid {
                if let Some(scan) = staging.scan.as_mut() {
                    verdict = scan.push(packet.payload());
                }
            }
            if verdict != Verdict::NeedMore || staging.is_full() {
                flush_staging(demux, staging, output, ring, verdict, now_ms, stats);
            }
            return;
        }
    }
    let Role::VideoStart(codec) = role else {
        output.write(demux, ring, bytes, Mark::Plain, now_ms, stats);
        return;
    };
    let random_access = packet.random_access() && starts_video_pes(&packet);
    let Some(codec) = codec else {
        output.write(
            demux,
            ring,
            bytes,
            Mark::picture(random_access),
            now_ms,
            stats,
        );
        return;
    };
    let mut scan = KeyframeScan::new(codec);
    let keyframe = match scan.push(packet.payload()) {
        Verdict::Keyframe => true,
        Verdict::NotKeyframe => false,
        Verdict::Unknown => random_access,
        Verdict::NeedMore => {
            staging.video_pid = packet.pid();
            staging.scan = Some(scan);
            staging.random_access = random_access;
            staging.push(bytes);
            return;
        }
    };
    output.write(demux, ring, bytes, Mark::picture(keyframe), now_ms, stats);
}

/// Relays the staged packets, the first one as a keyframe if `verdict` (or,
/// undecided, its random_access_indicator) says so.
fn flush_staging<R: Region>(
    demux: &Demux,
    staging: &mut Staging,
    output: &mut Output,
    ring: &mut Ring<R>,
    verdict: Verdict,
    now_ms: u64,
    stats: &ChannelStats,
) {
    let keyframe = match verdict {
        Verdict::Keyframe => true,
        Verdict::NotKeyframe => false,
        Verdict::Unknown | Verdict::NeedMore => staging.random_access,
    };
    let count = core::mem::take(&mut staging.count);
    staging.scan = None;
    for (index, packet) in staging.bytes[..count * PACKET_BYTES]
        .chunks_exact(PACKET_BYTES)
        .enumerate()
    {
        let mark = match index {
            0 => Mark::picture(keyframe),
            _ => Mark::Plain,
        };
        output.write(demux, ring, packet, mark, now_ms, stats);
    }
}

impl Output {
    /// Writes one packet that is to be relayed, cutting a chunk before it if
    /// it starts a keyframe, and applying the hold after a break.
    fn write<R: Region>(
        &mut self,
        demux: &Demux,
        ring: &mut Ring<R>,
        packet: &[u8],
        mark: Mark,
        now_ms: u64,
        stats: &ChannelStats,
    ) {
        let keyframe = mark == Mark::Keyframe;
        if let Some(since_ms) = self.hold_since_ms {
            let ready = demux.has_psi() && (keyframe || demux.is_without_video());
            let expired = now_ms.saturating_sub(since_ms) >= HOLD_MS_MAX;
            if !ready && !expired {
                if matches!(packet_pid(packet), 0x10..=0x1F) {
                    // DVB SI (service names, EPG) is no picture: keep it.
                    self.write_packet(demux, ring, packet);
                } else {
                    stats.withheld_bytes.add(PACKET_BYTES as u64);
                }
                return;
            }
            self.hold_since_ms = None;
            self.switched = Some(Switch {
                waited_ms: now_ms.saturating_sub(since_ms),
                on_keyframe: keyframe,
            });
        }
        if core::mem::take(&mut self.break_pending) {
            stats.discontinuities.increment();
            let flags = if keyframe {
                stats.keyframes.increment();
                ChunkFlags::DISCONTINUITY.union(ChunkFlags::KEYFRAME)
            } else {
                ChunkFlags::DISCONTINUITY
            };
            // The tables' own discontinuity marks go before the boundary, so
            // that a reader starting at the new chunk gets the PAT first.
            self.write_psi_marks(demux, ring);
            ring.close_chunk(flags);
            self.write_psi_copies(demux, ring);
        } else if keyframe {
            stats.keyframes.increment();
            // Start at the PAT right before the keyframe if the PMT came
            // with it (or if the stream has no PMT that could be read).
            let split = self
                .psi_run
                .filter(|run| run.has_pmt || !demux.has_psi())
                .is_some_and(|run| ring.split_open_at(run.start, ChunkFlags::KEYFRAME));
            if !split {
                // Readers starting here get the PAT and PMT from the ring's
                // copy first (see `Ring::psi`).
                ring.close_chunk(ChunkFlags::KEYFRAME);
            }
        }
        if mark != Mark::Plain {
            // A decoder shows its first picture only once the keyframe and a
            // few pictures after it are in (B-frame reordering, frame
            // threads): until then, new readers start a GOP earlier.
            if let Some((seq, pictures)) = self.keyframe_incomplete.take() {
                if keyframe || pictures + 1 >= PICTURES_TO_DECODE {
                    ring.mark_chunk(seq, ChunkFlags::DECODABLE);
                } else {
                    self.keyframe_incomplete = Some((seq, pictures + 1));
                }
            }
        }
        if keyframe {
            self.keyframe_incomplete = Some((ring.open_seq(), 0));
        }
        self.write_packet(demux, ring, packet);
    }

    /// Writes the discontinuity marks of the PAT and PMT PIDs that
    /// [`Output::write_psi_copies`] is about to write.
    fn write_psi_marks<R: Region>(&mut self, demux: &Demux, ring: &mut Ring<R>) {
        if !demux.has_psi() {
            return;
        }
        let (pat, pmt) = demux.psi_packets();
        for packet in pat.iter().chain(pmt) {
            if self.take_pending(packet_pid(packet)) {
                ring.append(&discontinuity_packet(packet));
            }
        }
    }

    /// Writes the new source's latest PAT and PMT (withheld while waiting for
    /// its keyframe) right before that keyframe.
    fn write_psi_copies<R: Region>(&mut self, demux: &Demux, ring: &mut Ring<R>) {
        if !demux.has_psi() {
            return;
        }
        let (pat, pmt) = demux.psi_packets();
        for packet in pat.iter().chain(pmt) {
            self.write_packet(demux, ring, packet);
        }
    }

    /// Appends one packet, with the discontinuity mark after a break.
    fn write_packet<R: Region>(&mut self, demux: &Demux, ring: &mut Ring<R>, packet: &[u8]) {
        self.wrote_any = true;
        let pid = packet_pid(packet);
        if pid != NULL_PID && self.take_pending(pid) {
            write_marked(ring, packet);
        } else {
            ring.append(&packet[..PACKET_BYTES]);
        }
        // Where this packet itself starts (after a mark written before it).
        let position = ring.head() - PACKET_BYTES as u64;
        let unit_start = packet[1] & 0x40 != 0;
        self.psi_run = if pid == PAT_PID && unit_start {
            Some(PsiRun {
                start: position,
                has_pmt: false,
            })
        } else if Some(pid) == demux.pmt_pid() {
            self.psi_run.map(|run| PsiRun {
                has_pmt: true,
                ..run
            })
        } else if matches!(pid, PAT_PID | NULL_PID | 0x10..=0x1F) {
            // Continued PAT, null packets, DVB SI: still only tables.
            self.psi_run
        } else {
            None
        };
    }

    fn take_pending(&mut self, pid: u16) -> bool {
        let (word, bit) = (usize::from(pid) / 64, pid % 64);
        let pending = self.discontinuity_pending[word] & (1 << bit) != 0;
        self.discontinuity_pending[word] &= !(1 << bit);
        pending
    }
}

fn packet_pid(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[1], packet[2]]) & 0x1FFF
}

/// Writes `packet` with discontinuity_indicator set: in its own adaptation
/// field if it has one, else in an adaptation-only packet written first.
fn write_marked<R: Region>(ring: &mut Ring<R>, packet: &[u8]) {
    let has_adaptation = packet[3] & 0x20 != 0;
    if has_adaptation && packet[4] > 0 {
        let mut copy = [0u8; PACKET_BYTES];
        copy.copy_from_slice(&packet[..PACKET_BYTES]);
        copy[5] |= 0x80;
        ring.append(&copy);
        return;
    }
    ring.append(&discontinuity_packet(packet));
    ring.append(&packet[..PACKET_BYTES]);
}

/// An adaptation-only packet (no payload) on `packet`'s PID that announces a
/// discontinuity, with the continuity counter `packet` continues from.
fn discontinuity_packet(packet: &[u8]) -> [u8; PACKET_BYTES] {
    let has_payload = packet[3] & 0x10 != 0;
    let counter = packet[3] & 0x0F;
    let previous = if has_payload {
        counter.wrapping_sub(1) & 0x0F
    } else {
        counter
    };
    let mut marker = [0xFFu8; PACKET_BYTES];
    marker[0] = crate::wire::ts::SYNC_BYTE;
    marker[1] = packet[1] & 0x1F;
    marker[2] = packet[2];
    marker[3] = 0x20 | previous;
    marker[4] = (PACKET_BYTES - 5) as u8;
    marker[5] = 0x80;
    marker
}

/// Reconnection delays: exponential from `base_ms` to `max_ms`, with full
/// jitter (a uniform delay between half the step and the step).
#[derive(Clone, Debug)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
    attempt: u32,
}

impl Backoff {
    pub const BASE_MS: u64 = 250;
    pub const MAX_MS: u64 = 10_000;

    pub fn new(base_ms: u64, max_ms: u64) -> Self {
        assert!(base_ms > 0 && base_ms <= max_ms);
        Self {
            base_ms,
            max_ms,
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay_ms(&mut self, rng: &mut impl Rng) -> u64 {
        let step = self
            .base_ms
            .saturating_mul(1u64 << self.attempt.min(20))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        half + u64::from(rng.next_u32()) % (step - half + 1)
    }

    /// Call when a session delivered data: the next failure starts small again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Self::BASE_MS, Self::MAX_MS)
    }
}

/// PCR ticks per millisecond (PCR runs at 27 MHz).
const PCR_TICKS_PER_MS: u64 = 27_000;
/// PCR wraps at 2^33 * 300.
const PCR_MODULUS: u64 = (1u64 << 33) * 300;
/// A PCR step larger than this (either way) is a discontinuity, not time.
const PCR_JUMP_MAX_MS: u64 = 2_000;

/// Ticks from `earlier` to `later` on the wrapping PCR clock.
fn pcr_ticks_between(earlier: u64, later: u64) -> u64 {
    (later % PCR_MODULUS + PCR_MODULUS - earlier % PCR_MODULUS) % PCR_MODULUS
}

/// Paces a looped file by its PCR.
#[derive(Clone, Debug, Default)]
pub struct Pacer {
    pcr_pid: Option<u16>,
    base: Option<(u64, u64)>,
    last_pcr: u64,
}

impl Pacer {
    /// Called at each loop restart: the next PCR starts a new timeline.
    pub fn handle_restart(&mut self) {
        self.base = None;
    }

    /// The wall-clock deadline (ms) for a packet carrying `pcr` on `pid`, or
    /// `None` if this packet does not set the pace.
    pub fn deadline_ms(&mut self, now_ms: u64, pid: u16, pcr: u64) -> Option<u64> {
        let pcr_pid = *self.pcr_pid.get_or_insert(pid);
        if pid != pcr_pid {
            return None;
        }
        let Some((base_pcr, base_ms)) = self.base else {
            self.rebase(now_ms, pcr);
            return Some(now_ms);
        };
        let forward = pcr_ticks_between(self.last_pcr, pcr);
        if forward / PCR_TICKS_PER_MS > PCR_JUMP_MAX_MS {
            // A jump (backwards, or far forwards): start a new timeline here.
            self.rebase(now_ms, pcr);
            return Some(now_ms);
        }
        self.last_pcr = pcr;
        let elapsed_ticks = pcr_ticks_between(base_pcr, pcr);
        Some(base_ms + elapsed_ticks / PCR_TICKS_PER_MS)
    }

    fn rebase(&mut self, now_ms: u64, pcr: u64) {
        self.base = Some((pcr, now_ms));
        self.last_pcr = pcr;
    }
}

/// The deadline for `bytes` at `bits_per_second`, for files without PCR.
pub fn byte_rate_deadline_ms(start_ms: u64, bytes_sent: u64, bits_per_second: u64) -> u64 {
    assert!(bits_per_second > 0);
    start_ms + bytes_sent.saturating_mul(8000) / bits_per_second
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringcast_hal::XorShift;

    use crate::ring::test_support::VecRegion;
    use crate::ring::{Cursor, Readable};
    use crate::wire::psi;

    const PMT_PID: u16 = 0x1000;
    const VIDEO: u16 = 0x100;
    const AUDIO: u16 = 0x101;

    fn test_ring() -> Ring<VecRegion> {
        let bytes = 8 * crate::limits::CHUNK_BYTES;
        Ring::new(VecRegion(vec![0; bytes]), crate::limits::CHUNK_BYTES)
    }

    /// A packet on `pid` with `payload` after an optional adaptation field
    /// of `adaptation` bytes (flags first), stuffed to 188 bytes.
    fn packet(pid: u16, start: bool, cc: u8, adaptation: &[u8], payload: &[u8]) -> Vec<u8> {
        let flags = if start { 0x40 } else { 0 };
        let mut bytes = vec![0x47, (pid >> 8) as u8 | flags, pid as u8];
        if adaptation.is_empty() && payload.len() == 184 {
            bytes.push(0x10 | cc);
        } else {
            bytes.push(0x30 | cc);
            let length = 183 - payload.len();
            bytes.push(length as u8);
            let mut field = adaptation.to_vec();
            if field.is_empty() && length > 0 {
                field.push(0);
            }
            field.resize(length, 0xFF);
            bytes.extend(field);
        }
        bytes.extend_from_slice(payload);
        assert_eq!(bytes.len(), 188);
        bytes
    }

    fn section_packet(pid: u16, cc: u8, section: &[u8]) -> Vec<u8> {
        let mut payload = vec![0u8];
        payload.extend_from_slice(section);
        payload.resize(184, 0xFF);
        packet(pid, true, cc, &[], &payload)
    }

    fn with_crc(mut section: Vec<u8>) -> Vec<u8> {
        let length = section.len() + 4 - 3;
        section[1] = 0xB0 | (length >> 8) as u8;
        section[2] = length as u8;
        let crc = psi::crc32_mpeg2(&section);
        section.extend_from_slice(&crc.to_be_bytes());
        section
    }

    fn pat(cc: u8, programs: &[(u16, u16)]) -> Vec<u8> {
        let mut section = vec![0x00, 0, 0, 0x00, 0x01, 0xC1, 0, 0];
        for &(number, pid) in programs {
            section.extend_from_slice(&number.to_be_bytes());
            section.extend_from_slice(&(0xE000 | pid).to_be_bytes());
        }
        section_packet(0, cc, &with_crc(section))
    }

    fn pmt(pid: u16, cc: u8, number: u16, video: u16, audio: u16) -> Vec<u8> {
        let mut section = vec![0x02, 0, 0];
        section.extend_from_slice(&number.to_be_bytes());
        section.extend_from_slice(&[0xC1, 0, 0]);
        section.extend_from_slice(&(0xE000 | video).to_be_bytes());
        section.extend_from_slice(&[0xF0, 0]);
        section.push(0x1B);
        section.extend_from_slice(&(0xE000 | video).to_be_bytes());
        section.extend_from_slice(&[0xF0, 0]);
        section.push(0x0F);
        section.extend_from_slice(&(0xE000 | audio).to_be_bytes());
        section.extend_from_slice(&[0xF0, 0]);
        section_packet(pid, cc, &with_crc(section))
    }

    /// The first packet of an H.264 PES whose first slice is `nal_type`.
    fn video_start(pid: u16, cc: u8, nal_type: u8, pcr: Option<u64>) -> Vec<u8> {
        let mut payload = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
        payload.extend_from_slice(&[0, 0, 0, 1, 0x09, 0xF0]);
        payload.extend_from_slice(&[0, 0, 0, 1, 0x60 | nal_type, 0x88, 0x84]);
        payload.resize(150, 0x11);
        let adaptation = match pcr {
            Some(pcr) => {
                let base = pcr / 300;
                vec![
                    if nal_type == 5 { 0x50 } else { 0x10 },
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    ((base & 1) << 7) as u8 | 0x7E,
                    0,
                ]
            }
            None => vec![if nal_type == 5 { 0x40 } else { 0 }],
        };
        packet(pid, true, cc, &adaptation, &payload)
    }

    /// Enough pictures after a keyframe for readers to start at it.
    fn more_pictures(pid: u16, first_cc: u8) -> Vec<u8> {
        (0..PICTURES_TO_DECODE as u8)
            .flat_map(|i| video_start(pid, (first_cc + i) & 15, 1, None))
            .collect()
    }

    fn data(pid: u16, cc: u8) -> Vec<u8> {
        packet(pid, false, cc, &[], &[0x22; 184])
    }

    fn read_all(ring: &Ring<VecRegion>, cursor: Cursor) -> Vec<u8> {
        match ring.readable(cursor, usize::MAX) {
            Readable::Data { first, second } => {
                let mut out = ring.bytes(first).to_vec();
                if let Some(second) = second {
                    out.extend_from_slice(ring.bytes(second));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    fn pids(bytes: &[u8]) -> Vec<u16> {
        bytes.chunks(188).map(packet_pid).collect()
    }

    fn feed(intake: &mut Intake, ring: &mut Ring<VecRegion>, stats: &ChannelStats, bytes: &[u8]) {
        intake.handle_bytes(0, 50, bytes, ring, stats);
    }

    /// PAT, PMT, IDR, audio, P, audio: the layout ffmpeg writes.
    fn gop(round: u8) -> Vec<u8> {
        let cc = (round * 2) & 15;
        [
            pat(round & 15, &[(1, PMT_PID)]),
            pmt(PMT_PID, round & 15, 1, VIDEO, AUDIO),
            video_start(VIDEO, cc, 5, Some(27_000_000 * u64::from(round))),
            data(AUDIO, cc),
            video_start(VIDEO, (cc + 1) & 15, 1, None),
            data(AUDIO, (cc + 1) & 15),
        ]
        .concat()
    }

    #[test]
    fn keyframe_chunks_start_at_the_pat_before_the_keyframe() {
        let (mut intake, mut ring, stats) =
            (Intake::default(), test_ring(), ChannelStats::default());
        let mut input = Vec::new();
        for round in 0..3u8 {
            input.extend(gop(round));
        }
        feed(&mut intake, &mut ring, &stats, &input);
        // Nothing was changed or inserted.
        assert!(read_all(&ring, Cursor { position: 0 }) == input);
        assert_eq!(stats.keyframes.get(), 3);
        // Only one picture followed the newest keyframe: a reader starting
        // there would wait for the decoder's next pictures, so new readers
        // start a GOP earlier.
        let tail = read_all(&ring, ring.live_start());
        assert_eq!(pids(&tail)[..3], [0, PMT_PID, VIDEO]);
        assert_eq!(tail.len(), 12 * 188);
        let more = more_pictures(VIDEO, 6);
        feed(&mut intake, &mut ring, &stats, &more);
        let tail = read_all(&ring, ring.live_start());
        assert_eq!(pids(&tail)[..3], [0, PMT_PID, VIDEO]);
        assert_eq!(tail.len(), 6 * 188 + more.len());
        assert_eq!(stats.cc_errors.get(), 0);
    }

    #[test]
    fn keyframes_without_psi_before_them_start_chunks_unchanged() {
        let (mut intake, mut ring, stats) =
            (Intake::default(), test_ring(), ChannelStats::default());
        let mut input = gop(0);
        input.extend(data(AUDIO, 2));
        input.extend(video_start(VIDEO, 2, 5, None));
        input.extend(data(VIDEO, 3));
        input.extend(more_pictures(VIDEO, 4));
        feed(&mut intake, &mut ring, &stats, &input);
        let tail = read_all(&ring, ring.live_start());
        assert_eq!(pids(&tail)[..2], [VIDEO, VIDEO]);
        assert_eq!(tail.len(), (2 + PICTURES_TO_DECODE as usize) * 188);
        assert!(read_all(&ring, Cursor { position: 0 }) == input);
        // The tables a reader starting there is sent first.
        assert!(ring.psi() == [pat(0, &[(1, PMT_PID)]), pmt(PMT_PID, 0, 1, VIDEO, AUDIO)].concat());
        assert_eq!(stats.keyframes.get(), 2);
    }

    #[test]
    fn idr_found_behind_a_large_sei_spanning_packets() {
        let (mut intake, mut ring, stats) =
            (Intake::default(), test_ring(), ChannelStats::default());
        feed(&mut intake, &mut ring, &stats, &gop(0));
        let mut first = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
        first.extend_from_slice(&[0, 0, 0, 1, 0x06, 0x05]);
        first.resize(184, 0x33);
        let mut input = packet(VIDEO, true, 2, &[], &first);
        input.extend(data(AUDIO, 2));
        input.extend(packet(VIDEO, false, 3, &[], &[0x33; 184]));
        let mut last = vec![0x33; 100];
        last.extend_from_slice(&[0, 0, 1, 0x65, 0x88]);
        last.resize(184, 0x44);
        input.extend(packet(VIDEO, false, 4, &[], &last));
        input.extend(data(VIDEO, 5));
        input.extend(more_pictures(VIDEO, 6));
        feed(&mut intake, &mut ring, &stats, &input);
        assert_eq!(stats.keyframes.get(), 2);
        let tail = read_all(&ring, ring.live_start());
        assert_eq!(pids(&tail)[..5], [VIDEO, AUDIO, VIDEO, VIDEO, VIDEO]);
        assert!(tail == input);
    }

    #[test]
    fn a_switch_withholds_until_the_new_keyframe_and_marks_every_pid() {
        let (mut intake, mut ring, stats) =
            (Intake::default(), test_ring(), ChannelStats::default());
        feed(&mut intake, &mut ring, &stats, &gop(0));
        intake.handle_source_restart(1000);
        let (video, audio, pmt_pid) = (0x200, 0x201, 0x1200);
        let mut input = data(audio, 7);
        input.extend(video_start(video, 3, 1, None));
        let withheld = input.len() as u64;
        input.extend(pat(9, &[(1, pmt_pid)]));
        input.extend(pmt(pmt_pid, 4, 1, video, audio));
        let keyframe = video_start(video, 4, 5, Some(0));
        input.extend(&keyframe);
        input.extend(data(audio, 8));
        let next_picture = more_pictures(video, 5);
        input.extend(&next_picture);
        feed(&mut intake, &mut ring, &stats, &input);
        assert_eq!(stats.withheld_bytes.get(), withheld + 2 * 188);
        assert_eq!(stats.discontinuities.get(), 1);
        let start = ring.live_start();
        let chunk = ring.newest_keyframe().expect("keyframe chunk");
        assert!(chunk.flags.contains(ChunkFlags::DISCONTINUITY));
        let tail = read_all(&ring, start);
        // A reader starting at the switch gets the new PAT and PMT first.
        assert_eq!(pids(&tail)[..5], [0, pmt_pid, video, audio, audio]);
        assert!(tail[..188] == pat(9, &[(1, pmt_pid)])[..]);
        let is_marker = |packet: &[u8], counter: u8| {
            packet[3] == 0x20 | counter && packet[4] == 183 && packet[5] == 0x80
        };
        // Their discontinuity marks (adaptation-only packets: the tables
        // have no adaptation field) end the chunk before, for readers that
        // stream across the switch.
        let before = read_all(
            &ring,
            Cursor {
                position: start.position - 2 * 188,
            },
        );
        assert!(is_marker(&before[..188], 8));
        assert!(is_marker(&before[188..376], 3));
        // The keyframe's own adaptation field carries the flag.
        assert_eq!(tail[2 * 188 + 5] & 0x80, 0x80);
        // Audio had no adaptation field: an adaptation-only packet comes first.
        assert!(is_marker(&tail[3 * 188..4 * 188], 7));
        assert!(tail[4 * 188..] == [data(audio, 8), next_picture].concat()[..]);
    }

    #[test]
    fn a_selected_program_is_served_alone_with_its_own_pat() {
        let stats = ChannelStats::default();
        let mut ring = test_ring();
        let mut intake = Intake::new(ProgramSelect::Number(2));
        let mut input = pat(0, &[(1, 0x1000), (2, 0x1100)]);
        input.extend(pmt(0x1000, 0, 1, 0x100, 0x101));
        input.extend(pmt(0x1100, 0, 2, 0x110, 0x111));
        for cc in 0..3 {
            input.extend(video_start(0x100, cc, 5, None));
            input.extend(video_start(0x110, cc, 5, None));
            input.extend(data(0x101, cc));
            input.extend(data(0x111, cc));
        }
        feed(&mut intake, &mut ring, &stats, &input);
        let out = read_all(&ring, Cursor { position: 0 });
        let out_pids = pids(&out);
        assert!(
            out_pids
                .iter()
                .all(|pid| [0, 0x1100, 0x110, 0x111].contains(pid)),
            "{out_pids:x?}"
        );
        assert!(out_pids.contains(&0x110) && out_pids.contains(&0x111));
        let pat_section = &out[5..];
        let entries: Vec<_> = psi::pat_entries(pat_section).collect();
        assert_eq!(entries, [(2, 0x1100)]);
        assert!(stats.filtered_packets.get() >= 7);
    }

    #[test]
    fn counter_gaps_and_pcr_jumps_are_counted() {
        let (mut intake, mut ring, stats) =
            (Intake::default(), test_ring(), ChannelStats::default());
        let mut input = gop(0);
        input.extend(data(AUDIO, 5));
        input.extend(video_start(VIDEO, 2, 1, Some(27_000_000 * 30)));
        feed(&mut intake, &mut ring, &stats, &input);
        assert_eq!(stats.cc_errors.get(), 1);
        assert_eq!(stats.pcr_jumps.get(), 1);
    }
    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut rng = XorShift::new(7);
        let mut backoff = Backoff::new(100, 1000);
        let delays: Vec<u64> = (0..6).map(|_| backoff.next_delay_ms(&mut rng)).collect();
        assert!((50..=100).contains(&delays[0]));
        assert!((100..=200).contains(&delays[1]));
        assert!(delays[4..].iter().all(|d| (500..=1000).contains(d)));
        backoff.reset();
        assert!(backoff.next_delay_ms(&mut rng) <= 100);
    }

    #[test]
    fn pacer_follows_pcr_and_rebases_on_jumps() {
        let mut pacer = Pacer::default();
        assert_eq!(pacer.deadline_ms(1000, 256, 27_000_000), Some(1000));
        assert_eq!(pacer.deadline_ms(1000, 257, 0), None);
        assert_eq!(
            pacer.deadline_ms(1001, 256, 27_000_000 + 27_000 * 40),
            Some(1040)
        );
        // Backwards (the file looped): a new timeline starting now.
        assert_eq!(pacer.deadline_ms(5000, 256, 0), Some(5000));
        assert_eq!(pacer.deadline_ms(5000, 256, 27_000 * 100), Some(5100));
    }

    #[test]
    fn pacer_handles_pcr_wrap() {
        let mut pacer = Pacer::default();
        let near_end = PCR_MODULUS - 27_000 * 10;
        assert_eq!(pacer.deadline_ms(0, 100, near_end), Some(0));
        assert_eq!(pacer.deadline_ms(0, 100, 27_000 * 10), Some(20));
    }

    #[test]
    fn byte_rate_deadline() {
        assert_eq!(byte_rate_deadline_ms(10, 1_000_000, 8_000_000), 1010);
    }

    #[test]
    fn wake_after_bytes_or_flush_interval() {
        let mut intake = Intake {
            unannounced_bytes: 100,
            last_wake_ms: 0,
            ..Intake::default()
        };
        assert!(!intake.poll_wake(10, 50));
        assert!(intake.poll_wake(60, 50));
        assert!(!intake.poll_wake(200, 50));
        intake.unannounced_bytes = WAKE_BYTES;
        assert!(intake.poll_wake(201, 50));
    }
}
