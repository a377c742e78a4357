//! The sans-IO side of every source: what to do with bytes that arrived, when
//! to retry a lost upstream, and when a looped file's next packets are due.
//!
//! - [`Intake`] turns arbitrary source bytes into whole, aligned TS packets in
//!   the ring (through the TS aligner), counts garbage and sync losses, and
//!   tells the driver when readers should be woken.
//! - [`Backoff`] is the reconnection delay: exponential with full jitter, so
//!   that many boxes losing the same upstream do not return all at once.
//! - [`Pacer`] maps PCR values of a looped file onto wall-clock deadlines, so
//!   the file plays at its own bitrate.
//!
//! The driver in `node` performs the socket and file I/O and the sleeps.

use ringcast_hal::{Region, Rng};

use crate::limits::TS_PACKET_BYTES;
use crate::ring::{ChunkFlags, Ring};
use crate::stats::ChannelStats;
use crate::wire::ts::{Aligner, Packet};

/// The PID of the Program Association Table (ISO/IEC 13818-1 §2.4.4.3).
const PAT_PID: u16 = 0;

/// Bytes of new data after which readers are woken even before the flush tick.
pub const WAKE_BYTES: u64 = 64 * 1024;

/// Feeds source bytes into a channel's ring.
pub struct Intake {
    aligner: Aligner,
    garbage_seen: u64,
    sync_losses_seen: u64,
    unannounced_bytes: u64,
    last_wake_ms: u64,
    /// Set when the next packets follow a break in the source.
    pending_discontinuity: bool,
    /// The open chunk began with a PAT and has no keyframe yet.
    open_chunk_has_pat: bool,
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
}

impl Default for Intake {
    fn default() -> Self {
        Self::new()
    }
}

impl Intake {
    pub fn new() -> Self {
        Self {
            aligner: Aligner::default(),
            garbage_seen: 0,
            sync_losses_seen: 0,
            unannounced_bytes: 0,
            last_wake_ms: 0,
            pending_discontinuity: false,
            open_chunk_has_pat: false,
        }
    }

    /// Starts a new upstream session: partial packets of the old one are
    /// dropped, and the next chunk is marked as a discontinuity.
    pub fn handle_source_restart(&mut self) {
        self.aligner.reset();
        self.pending_discontinuity = true;
    }

    /// Marks the next packets as following a break (a looped file restarting)
    /// without dropping the partial packet in hand.
    pub fn mark_discontinuity(&mut self) {
        self.pending_discontinuity = true;
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
        let mut packet_bytes = 0u64;
        let pending_discontinuity = &mut self.pending_discontinuity;
        let open_chunk_has_pat = &mut self.open_chunk_has_pat;
        self.aligner.push(bytes, &mut |packets: &[u8]| {
            if core::mem::take(pending_discontinuity) {
                ring.close_chunk(ChunkFlags::DISCONTINUITY);
                *open_chunk_has_pat = false;
            }
            append_marking_keyframes(ring, packets, open_chunk_has_pat);
            packet_bytes += packets.len() as u64;
        });
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

    /// True if some appended bytes were not announced to readers yet.
    pub fn has_unannounced(&self) -> bool {
        self.unannounced_bytes > 0
    }
}

/// Appends packets, starting a new chunk at every PAT and flagging a chunk
/// as a keyframe when a random-access packet follows its PAT. A reader that
/// starts at such a chunk gets the PAT, the PMT and then a keyframe, so it
/// decodes from its first byte (encoders such as ffmpeg repeat PAT/PMT just
/// before each keyframe).
fn append_marking_keyframes<R: Region>(
    ring: &mut Ring<R>,
    packets: &[u8],
    open_chunk_has_pat: &mut bool,
) {
    let mut run_start = 0;
    for offset in (0..packets.len()).step_by(TS_PACKET_BYTES) {
        let Ok(packet) = Packet::new_checked(&packets[offset..offset + TS_PACKET_BYTES]) else {
            continue;
        };
        if packet.pid() == PAT_PID && packet.payload_unit_start() {
            ring.append(&packets[run_start..offset]);
            ring.close_chunk(ChunkFlags::NONE);
            run_start = offset;
            *open_chunk_has_pat = true;
        } else if *open_chunk_has_pat && packet.random_access() && starts_video_pes(&packet) {
            ring.mark_open(ChunkFlags::KEYFRAME);
            *open_chunk_has_pat = false;
        }
    }
    let seq_before = ring.open_seq();
    ring.append(&packets[run_start..]);
    if ring.open_seq() != seq_before {
        // A full chunk was sealed: the new open chunk does not start at a PAT.
        *open_chunk_has_pat = false;
    }
}

/// True if the packet starts a PES packet of a video stream (stream ids
/// 0xE0–0xEF, ISO/IEC 13818-1 table 2-22). Audio frames carry the
/// random-access flag too, but a player needs a video keyframe to start.
fn starts_video_pes(packet: &Packet<&[u8]>) -> bool {
    let payload = packet.payload();
    packet.payload_unit_start()
        && payload.len() >= 4
        && payload[..3] == [0, 0, 1]
        && payload[3] & 0xF0 == 0xE0
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
        let mut intake = Intake::new();
        intake.unannounced_bytes = 100;
        intake.last_wake_ms = 0;
        assert!(!intake.poll_wake(10, 50));
        assert!(intake.poll_wake(60, 50));
        assert!(!intake.poll_wake(200, 50));
        intake.unannounced_bytes = WAKE_BYTES;
        assert!(intake.poll_wake(201, 50));
    }
}
