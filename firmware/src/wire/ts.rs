//! MPEG-TS transport packets (ISO/IEC 13818-1 §2.4.3): a read-only view of
//! one 188-byte packet, and an [`Aligner`] that turns an unaligned byte stream
//! (TCP or HTTP bodies, pipes, datagrams with junk) into runs of whole packets.
//!
//! [`Packet::new_checked`] is the one door for untrusted bytes: it checks the
//! length, the sync byte and the adaptation field length, so every accessor
//! after it stays in bounds. The aligner never allocates; it keeps at most
//! [`CARRY_BYTES`] of a previous push and otherwise hands out slices borrowed
//! straight from the caller's input.

use core::fmt;

/// Bytes in one transport packet.
pub const PACKET_BYTES: usize = crate::limits::TS_PACKET_BYTES;

/// First byte of every transport packet.
pub const SYNC_BYTE: u8 = 0x47;

/// PID of the null packets used for stuffing.
pub const NULL_PID: u16 = 0x1FFF;

/// Bytes the aligner may keep between two pushes: enough to decide a lock at
/// the last candidate position of a push (its sync bytes at +0, +188, +376).
pub const CARRY_BYTES: usize = 2 * PACKET_BYTES;

/// PCR clock rate: the PCR counts in units of 1/27 MHz.
pub const PCR_HZ: u64 = 27_000_000;

const HEADER_BYTES: usize = 4;
/// Largest adaptation_field_length that still fits behind the 4-byte header
/// and its own length byte.
const ADAPTATION_LENGTH_MAX: usize = PACKET_BYTES - HEADER_BYTES - 1;

// Flags of the adaptation field (byte 5 of the packet).
const FLAG_DISCONTINUITY: u8 = 0x80;
const FLAG_RANDOM_ACCESS: u8 = 0x40;
const FLAG_PCR: u8 = 0x10;
/// adaptation_field_length needed to hold the flags byte and the 6-byte PCR.
const PCR_ADAPTATION_LENGTH_MIN: usize = 7;

/// Why bytes are not a transport packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsError {
    /// Fewer than 188 bytes.
    Truncated,
    /// The first byte is not 0x47.
    Sync,
    /// The adaptation field claims more bytes than the packet holds.
    AdaptationLength,
}

impl fmt::Display for TsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TsError::Truncated => "TS packet shorter than 188 bytes",
            TsError::Sync => "TS packet does not start with sync byte 0x47",
            TsError::AdaptationLength => "TS adaptation field longer than the packet",
        })
    }
}

/// A read-only view of one transport packet. Only the first
/// [`PACKET_BYTES`] of the buffer belong to the packet.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without any check; accessors may panic on bad bytes.
    /// For bytes that come from outside, use [`new_checked`](Self::new_checked).
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking length, sync byte and adaptation length.
    pub fn new_checked(buffer: T) -> Result<Self, TsError> {
        let packet = Packet { buffer };
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), TsError> {
        let bytes = self.buffer.as_ref();
        if bytes.len() < PACKET_BYTES {
            return Err(TsError::Truncated);
        }
        if bytes[0] != SYNC_BYTE {
            return Err(TsError::Sync);
        }
        if self.has_adaptation() && usize::from(bytes[4]) > ADAPTATION_LENGTH_MAX {
            return Err(TsError::AdaptationLength);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..PACKET_BYTES]
    }

    /// transport_error_indicator: a demodulator flagged the packet as damaged.
    pub fn transport_error(&self) -> bool {
        self.bytes()[1] & 0x80 != 0
    }

    /// payload_unit_start_indicator: a PES packet or section starts here.
    pub fn payload_unit_start(&self) -> bool {
        self.bytes()[1] & 0x40 != 0
    }

    /// The 13-bit packet identifier.
    pub fn pid(&self) -> u16 {
        u16::from_be_bytes([self.bytes()[1], self.bytes()[2]]) & 0x1FFF
    }

    /// transport_scrambling_control (0 = not scrambled).
    pub fn scrambling(&self) -> u8 {
        self.bytes()[3] >> 6
    }

    /// adaptation_field_control says an adaptation field follows the header.
    pub fn has_adaptation(&self) -> bool {
        self.bytes()[3] & 0x20 != 0
    }

    /// adaptation_field_control says the packet carries payload.
    pub fn has_payload(&self) -> bool {
        self.bytes()[3] & 0x10 != 0
    }

    /// The 4-bit continuity_counter.
    pub fn continuity_counter(&self) -> u8 {
        self.bytes()[3] & 0x0F
    }

    /// The adaptation field after its length byte (empty if absent).
    fn adaptation(&self) -> &[u8] {
        if !self.has_adaptation() {
            return &[];
        }
        let length = usize::from(self.bytes()[4]).min(ADAPTATION_LENGTH_MAX);
        &self.bytes()[HEADER_BYTES + 1..HEADER_BYTES + 1 + length]
    }

    fn adaptation_flags(&self) -> u8 {
        self.adaptation().first().copied().unwrap_or(0)
    }

    /// discontinuity_indicator: continuity counter or PCR restarts here.
    pub fn discontinuity(&self) -> bool {
        self.adaptation_flags() & FLAG_DISCONTINUITY != 0
    }

    /// random_access_indicator: a decoder can start here (usually a keyframe).
    pub fn random_access(&self) -> bool {
        self.adaptation_flags() & FLAG_RANDOM_ACCESS != 0
    }

    /// The program clock reference in 27 MHz ticks (`base * 300 + extension`),
    /// if this packet carries one.
    pub fn pcr(&self) -> Option<u64> {
        let field = self.adaptation();
        if field.len() < PCR_ADAPTATION_LENGTH_MIN || field[0] & FLAG_PCR == 0 {
            return None;
        }
        let b = &field[1..7];
        let base = (u64::from(b[0]) << 25)
            | (u64::from(b[1]) << 17)
            | (u64::from(b[2]) << 9)
            | (u64::from(b[3]) << 1)
            | (u64::from(b[4]) >> 7);
        let extension = (u64::from(b[4] & 0x01) << 8) | u64::from(b[5]);
        Some(base * 300 + extension)
    }

    /// The payload after the header and adaptation field (empty if none).
    pub fn payload(&self) -> &[u8] {
        if !self.has_payload() {
            return &[];
        }
        let start = if self.has_adaptation() {
            HEADER_BYTES + 1 + self.adaptation().len()
        } else {
            HEADER_BYTES
        };
        &self.bytes()[start..]
    }
}

/// Where the aligner stopped in the joined stream (carry, then input).
enum Step {
    /// Carry on from this position in the other mode.
    Continue(usize),
    /// Nothing more can be decided: keep the bytes from here for next push.
    Keep(usize),
}

/// Finds packet boundaries in a byte stream and hands out whole packets.
///
/// Unlocked, a position is accepted when 0x47 appears there and at +188 and
/// +376; a candidate too close to the end of a push is carried and decided on
/// the next push. Locked, every packet that starts with 0x47 is emitted and
/// the first one that does not counts a sync loss and starts a rescan there.
/// Counters are cumulative; `garbage_bytes + 188 * packets + carried_bytes`
/// always equals the bytes pushed.
pub struct Aligner {
    carry: [u8; CARRY_BYTES],
    carry_len: usize,
    locked: bool,
    garbage_bytes: u64,
    sync_losses: u64,
    packets: u64,
}

impl Default for Aligner {
    fn default() -> Self {
        Self::new()
    }
}

impl Aligner {
    pub const fn new() -> Self {
        Aligner {
            carry: [0; CARRY_BYTES],
            carry_len: 0,
            locked: false,
            garbage_bytes: 0,
            sync_losses: 0,
            packets: 0,
        }
    }

    /// Forgets the carried bytes and the lock, for a new connection. The
    /// carried bytes are counted as garbage; the counters are kept.
    pub fn reset(&mut self) {
        self.garbage_bytes += self.carry_len as u64;
        self.carry_len = 0;
        self.locked = false;
    }

    /// Bytes discarded because they were not part of an aligned packet.
    pub fn garbage_bytes(&self) -> u64 {
        self.garbage_bytes
    }

    /// Times a locked stream hit a packet without its sync byte.
    pub fn sync_losses(&self) -> u64 {
        self.sync_losses
    }

    /// Packets handed to the sink.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes held back until the next push.
    pub fn carried_bytes(&self) -> usize {
        self.carry_len
    }

    /// True while the aligner follows a packet grid.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Feeds `input` and calls `sink` with runs of whole packets. Each run's
    /// length is a multiple of 188 and every packet in it starts with 0x47.
    /// Runs inside `input` are passed on as one borrowed slice; only a packet
    /// that straddles two pushes is copied.
    pub fn push(&mut self, input: &[u8], sink: &mut impl FnMut(&[u8])) {
        let mut position = 0;
        let keep_from = loop {
            let step = if self.locked {
                self.emit_locked(input, position, sink)
            } else {
                self.scan(input, position)
            };
            match step {
                Step::Continue(next) => position = next,
                Step::Keep(from) => break from,
            }
        };
        self.keep(input, keep_from);
    }

    fn joined_len(&self, input: &[u8]) -> usize {
        self.carry_len + input.len()
    }

    /// The byte at `position` of the joined stream `carry ++ input`.
    fn byte_at(&self, input: &[u8], position: usize) -> u8 {
        if position < self.carry_len {
            self.carry[position]
        } else {
            input[position - self.carry_len]
        }
    }

    /// Unlocked: looks for a position with three sync bytes 188 apart.
    fn scan(&mut self, input: &[u8], mut position: usize) -> Step {
        let end = self.joined_len(input);
        while position < end {
            if position >= self.carry_len {
                // Fast skip to the next 0x47 inside the input.
                let offset = position - self.carry_len;
                let skipped = input[offset..]
                    .iter()
                    .position(|&byte| byte == SYNC_BYTE)
                    .unwrap_or(input.len() - offset);
                self.garbage_bytes += skipped as u64;
                position += skipped;
                if position == end {
                    break;
                }
            }
            if self.byte_at(input, position) == SYNC_BYTE {
                let second = position + PACKET_BYTES;
                let third = second + PACKET_BYTES;
                if second >= end {
                    return Step::Keep(position);
                }
                if self.byte_at(input, second) == SYNC_BYTE {
                    if third >= end {
                        return Step::Keep(position);
                    }
                    if self.byte_at(input, third) == SYNC_BYTE {
                        self.locked = true;
                        return Step::Continue(position);
                    }
                }
            }
            self.garbage_bytes += 1;
            position += 1;
        }
        Step::Keep(end)
    }

    /// Locked: emits packets from `position` while they start with 0x47.
    fn emit_locked(
        &mut self,
        input: &[u8],
        mut position: usize,
        sink: &mut impl FnMut(&[u8]),
    ) -> Step {
        let end = self.joined_len(input);
        loop {
            if position >= end {
                return Step::Keep(end);
            }
            if self.byte_at(input, position) != SYNC_BYTE {
                self.sync_losses += 1;
                self.locked = false;
                return Step::Continue(position);
            }
            if position + PACKET_BYTES > end {
                return Step::Keep(position);
            }
            if position < self.carry_len {
                self.emit_straddling(input, position, sink);
                position += PACKET_BYTES;
                continue;
            }
            let start = position - self.carry_len;
            let mut stop = start;
            while stop + PACKET_BYTES <= input.len() && input[stop] == SYNC_BYTE {
                stop += PACKET_BYTES;
            }
            // `input[start]` is a sync byte and a whole packet fits, so the
            // run holds at least one packet.
            sink(&input[start..stop]);
            self.packets += ((stop - start) / PACKET_BYTES) as u64;
            position = self.carry_len + stop;
        }
    }

    /// Emits the packet at `position` (< carry_len), which may continue into
    /// `input`, through a stack copy.
    fn emit_straddling(&mut self, input: &[u8], position: usize, sink: &mut impl FnMut(&[u8])) {
        let mut packet = [0u8; PACKET_BYTES];
        let from_carry = (self.carry_len - position).min(PACKET_BYTES);
        packet[..from_carry].copy_from_slice(&self.carry[position..position + from_carry]);
        let from_input = PACKET_BYTES - from_carry;
        packet[from_carry..].copy_from_slice(&input[..from_input]);
        sink(&packet);
        self.packets += 1;
    }

    /// Moves the joined stream's bytes from `keep_from` on into the carry.
    fn keep(&mut self, input: &[u8], keep_from: usize) {
        let end = self.joined_len(input);
        assert!(keep_from <= end && end - keep_from <= CARRY_BYTES);
        if keep_from < self.carry_len {
            let kept = self.carry_len - keep_from;
            self.carry.copy_within(keep_from..self.carry_len, 0);
            self.carry[kept..kept + input.len()].copy_from_slice(input);
            self.carry_len = kept + input.len();
        } else {
            let rest = &input[keep_from - self.carry_len..];
            self.carry[..rest.len()].copy_from_slice(rest);
            self.carry_len = rest.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// A packet with `pid`, `counter`, payload only, filled with `fill`
    /// (never 0x47, so the payload cannot fake a sync byte).
    fn packet(pid: u16, counter: u8, fill: u8) -> [u8; PACKET_BYTES] {
        assert_ne!(fill, SYNC_BYTE);
        let mut bytes = [fill; PACKET_BYTES];
        bytes[0] = SYNC_BYTE;
        bytes[1] = (pid >> 8) as u8 & 0x1F;
        bytes[2] = pid as u8;
        bytes[3] = 0x10 | (counter & 0x0F);
        bytes
    }

    fn clean_stream(count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|i| packet(0x100 + i as u16, i as u8, (i % 200) as u8 + 1))
            .collect()
    }

    /// Pushes `stream` in pieces of `step` bytes and collects the output.
    fn align(aligner: &mut Aligner, stream: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            aligner.push(piece, &mut |run: &[u8]| {
                assert_eq!(run.len() % PACKET_BYTES, 0);
                assert!(!run.is_empty());
                for p in run.chunks(PACKET_BYTES) {
                    assert_eq!(p[0], SYNC_BYTE);
                }
                out.extend_from_slice(run);
            });
        }
        out
    }

    fn assert_accounted(aligner: &Aligner, pushed: usize) {
        let total = aligner.garbage_bytes() + aligner.packets() * PACKET_BYTES as u64;
        assert_eq!(total + aligner.carried_bytes() as u64, pushed as u64);
    }

    /// Golden packet: PID 0x0100, PUSI, CC 7, adaptation with random access
    /// and PCR base 0x1_2345_6789, extension 0x155, then 4 payload bytes.
    fn golden_pcr_packet() -> [u8; PACKET_BYTES] {
        let mut bytes = [0xFFu8; PACKET_BYTES];
        let adaptation_length = PACKET_BYTES - 4 - 1 - 4;
        bytes[..12].copy_from_slice(&[
            0x47,
            0x41,
            0x00,
            0x37, // sync, PUSI + PID 0x100, AFC=11, CC=7
            adaptation_length as u8,
            0x50, // random access + PCR flag
            0x91,
            0xA2,
            0xB3,
            0xC4,
            0xFF,
            0x55, // PCR
        ]);
        bytes[PACKET_BYTES - 4..].copy_from_slice(&[1, 2, 3, 4]);
        bytes
    }

    #[test]
    fn parses_golden_header_fields() {
        let bytes = golden_pcr_packet();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.pid(), 0x100);
        assert!(p.payload_unit_start());
        assert!(!p.transport_error());
        assert_eq!(p.continuity_counter(), 7);
        assert_eq!(p.scrambling(), 0);
        assert!(p.has_adaptation());
        assert!(p.has_payload());
        assert!(p.random_access());
        assert!(!p.discontinuity());
        // base = 0x91A2B3C4 << 1 | 1 = 0x1_2345_6789, ext = 0x155.
        assert_eq!(p.pcr(), Some(0x1_2345_6789 * 300 + 0x155));
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn payload_only_and_adaptation_only() {
        let bytes = packet(NULL_PID, 15, 0xAA);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.pid(), NULL_PID);
        assert_eq!(p.continuity_counter(), 15);
        assert_eq!(p.payload().len(), 184);
        assert_eq!(p.pcr(), None);
        assert!(!p.random_access());

        let mut bytes = [0xFFu8; PACKET_BYTES];
        bytes[..6].copy_from_slice(&[0x47, 0x00, 0x11, 0xA0, 183, 0x80]);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.has_adaptation() && !p.has_payload());
        assert!(p.discontinuity());
        assert_eq!(p.scrambling(), 2);
        assert_eq!(p.payload(), &[] as &[u8]);
    }

    #[test]
    fn zero_length_adaptation_and_short_pcr() {
        let mut bytes = [0x11u8; PACKET_BYTES];
        bytes[..5].copy_from_slice(&[0x47, 0x00, 0x11, 0x30, 0]);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!p.random_access());
        assert_eq!(p.pcr(), None);
        assert_eq!(p.payload().len(), 183);

        // PCR flag set but the field is too short to hold it.
        bytes[4] = 3;
        bytes[5] = FLAG_PCR;
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.pcr(), None);
        assert_eq!(p.payload().len(), 180);
    }

    #[test]
    fn rejects_bad_packets() {
        let good = packet(1, 0, 0x22);
        assert_eq!(
            Packet::new_checked(&good[..187]).err(),
            Some(TsError::Truncated)
        );
        let mut bad = good;
        bad[0] = 0x48;
        assert_eq!(Packet::new_checked(&bad[..]).err(), Some(TsError::Sync));
        let mut bad = good;
        bad[3] = 0x30;
        bad[4] = 184;
        assert_eq!(
            Packet::new_checked(&bad[..]).err(),
            Some(TsError::AdaptationLength)
        );
        bad[4] = 183;
        let p = Packet::new_checked(&bad[..]).unwrap();
        assert_eq!(p.payload(), &[] as &[u8]);
    }

    #[test]
    fn clean_stream_survives_every_split() {
        let stream = clean_stream(6);
        for step in 1..=400 {
            let mut aligner = Aligner::new();
            let out = align(&mut aligner, &stream, step);
            // The last packet is emitted as soon as it is whole once locked;
            // locking needs three packets, so everything comes out.
            assert_eq!(out, stream, "step {step}");
            assert_eq!(aligner.garbage_bytes(), 0);
            assert_eq!(aligner.sync_losses(), 0);
            assert_eq!(aligner.packets(), 6);
            assert_accounted(&aligner, stream.len());
        }
    }

    #[test]
    fn long_runs_are_borrowed_in_one_call() {
        let stream = clean_stream(10);
        let mut aligner = Aligner::new();
        let mut calls = 0;
        aligner.push(&stream, &mut |run: &[u8]| {
            calls += 1;
            assert_eq!(run.len(), stream.len());
            assert_eq!(run.as_ptr(), stream.as_ptr());
        });
        assert_eq!(calls, 1);
    }

    #[test]
    fn garbage_before_and_between_packets() {
        let good = clean_stream(8);
        let mut stream = Vec::new();
        stream.extend_from_slice(&[0x47, 0x00, 0x12, 0x47, 0x99]); // 5 bytes junk
        stream.extend_from_slice(&good[..4 * PACKET_BYTES]);
        stream.extend_from_slice(&[0x01; 50]); // junk between
        stream.extend_from_slice(&good[4 * PACKET_BYTES..]);
        for step in [1, 7, 188, 189, 500, stream.len()] {
            let mut aligner = Aligner::new();
            let out = align(&mut aligner, &stream, step);
            assert_eq!(out, good, "step {step}");
            assert_eq!(aligner.garbage_bytes(), 55, "step {step}");
            assert_eq!(aligner.sync_losses(), 1, "step {step}");
            assert_accounted(&aligner, stream.len());
        }
    }

    #[test]
    fn cut_packet_then_good_stream() {
        let good = clean_stream(5);
        let cut = packet(0x42, 3, 0x33);
        let mut stream = Vec::new();
        stream.extend_from_slice(&cut[..94]);
        stream.extend_from_slice(&good);
        for step in 1..=400 {
            let mut aligner = Aligner::new();
            let out = align(&mut aligner, &stream, step);
            assert_eq!(out, good, "step {step}");
            assert_eq!(aligner.garbage_bytes(), 94);
            assert_accounted(&aligner, stream.len());
        }
    }

    #[test]
    fn cut_packet_inside_locked_stream_costs_a_resync() {
        let good = clean_stream(10);
        let mut stream = Vec::new();
        stream.extend_from_slice(&good[..3 * PACKET_BYTES]);
        stream.extend_from_slice(&good[3 * PACKET_BYTES..3 * PACKET_BYTES + 100]);
        stream.extend_from_slice(&good[4 * PACKET_BYTES..]);
        let mut aligner = Aligner::new();
        let out = align(&mut aligner, &stream, 1000);
        assert_eq!(aligner.sync_losses(), 1);
        // The cut packet glued to the next one goes out as one (damaged)
        // packet; alignment resumes on the grid of the good stream.
        assert_eq!(&out[..3 * PACKET_BYTES], &good[..3 * PACKET_BYTES]);
        assert_eq!(
            &out[out.len() - 4 * PACKET_BYTES..],
            &good[6 * PACKET_BYTES..]
        );
        assert_accounted(&aligner, stream.len());
    }

    #[test]
    fn all_garbage_emits_nothing_and_counts_every_byte() {
        let stream: Vec<u8> = (0..5000u32).map(|i| (i % 71) as u8).collect();
        assert!(!stream.contains(&SYNC_BYTE));
        for step in [1, 100, 5000] {
            let mut aligner = Aligner::new();
            let out = align(&mut aligner, &stream, step);
            assert!(out.is_empty());
            assert_eq!(aligner.garbage_bytes(), 5000);
            assert_eq!(aligner.carried_bytes(), 0);
        }
    }

    #[test]
    fn lone_sync_bytes_are_decided_later_and_counted() {
        let mut stream = [0x00u8; 1000];
        stream[10] = SYNC_BYTE;
        stream[198] = SYNC_BYTE; // two in a row, third missing
        stream[990] = SYNC_BYTE; // too close to the end to decide
        let mut aligner = Aligner::new();
        let out = align(&mut aligner, &stream, 1000);
        assert!(out.is_empty());
        assert_eq!(aligner.carried_bytes(), 10);
        assert_accounted(&aligner, 1000);
        aligner.reset();
        assert_eq!(aligner.garbage_bytes(), 1000);
        assert!(!aligner.is_locked());
    }

    #[test]
    fn random_data_never_emits_a_bad_packet() {
        // xorshift: deterministic, no dependency.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..50 {
            let len = 2000 + (next() % 4000) as usize;
            let mut stream: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Sprinkle sync bytes on a grid to provoke false locks.
            let phase = (next() % 188) as usize;
            for i in (phase..len).step_by(PACKET_BYTES) {
                if next() % 4 != 0 {
                    stream[i] = SYNC_BYTE;
                }
            }
            let step = 1 + (next() % 700) as usize;
            let mut aligner = Aligner::new();
            align(&mut aligner, &stream, step); // asserts sync on every packet
            assert_accounted(&aligner, len);
            assert!(aligner.carried_bytes() <= CARRY_BYTES, "round {round}");
        }
    }

    #[test]
    fn demo_asset_passes_through_with_pcr_and_keyframes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/demo.ts");
        let demo = std::fs::read(path).expect("assets/demo.ts is committed");
        let mut stream = Vec::from(&b"HTTP junk before the stream\r\n"[..]);
        stream.extend_from_slice(&demo);
        let mut aligner = Aligner::new();
        let out = align(&mut aligner, &stream, 1316 + 17);
        assert_eq!(out, demo);
        assert_eq!(aligner.garbage_bytes(), 29);

        let (mut random_access, mut last_pcr, mut pcrs) = (0, 0, 0);
        for bytes in out.chunks(PACKET_BYTES) {
            let p = Packet::new_checked(bytes).unwrap();
            random_access += usize::from(p.random_access());
            if let Some(pcr) = p.pcr() {
                assert!(pcr >= last_pcr, "PCR goes back");
                last_pcr = pcr;
                pcrs += 1;
            }
        }
        assert!(random_access >= 5, "a 10 s stream with 2 s GOPs");
        assert!(pcrs > 10);
        // 10 s of PCR, give or take a frame and the initial offset.
        assert!(last_pcr / PCR_HZ >= 9);
    }

    #[test]
    fn reset_drops_a_partial_packet() {
        let stream = clean_stream(4);
        let mut aligner = Aligner::new();
        let mut out = align(&mut aligner, &stream[..3 * PACKET_BYTES + 50], 10_000);
        assert_eq!(out.len(), 3 * PACKET_BYTES);
        aligner.reset();
        // A new connection starts mid-packet: the old partial is not glued on.
        out = align(&mut aligner, &stream[3 * PACKET_BYTES + 50..], 10_000);
        assert!(out.is_empty());
        assert_eq!(aligner.garbage_bytes(), 50 + 138);
    }
}
