//! MPEG-TS transport packets (ISO/IEC 13818-1 §2.4.3): a read-only view of
//! one 188-byte packet, and an [`Aligner`] that turns an unaligned byte stream
//! (TCP or HTTP bodies, pipes, datagrams with junk) into runs of whole packets.
//!
//! [`Packet::new_checked`] is the one door for untrusted bytes: it checks the
//! length, the sync byte and the adaptation field length, so every accessor
//! after it stays in bounds. The aligner never allocates; it keeps at most
//! [`CARRY_BYTES`] of a previous push and otherwise hands out slices borrowed
//! straight from the caller's input.
//!
//! Some sources do not send bare 188-byte packets: M2TS (Blu-ray BDAV, some
//! IPTV recorders) puts a 4-byte TP_extra_header before each packet, and DVB
//! front ends may keep the 16 Reed-Solomon parity bytes of RS(204,188) after
//! it (ETSI EN 300 421 §4.4.2). The aligner recognises both strides and
//! normalises them to 188-byte packets.

use core::fmt;

/// Bytes in one transport packet.
pub const PACKET_BYTES: usize = crate::limits::TS_PACKET_BYTES;

/// First byte of every transport packet.
pub const SYNC_BYTE: u8 = 0x47;

/// PID of the null packets used for stuffing.
pub const NULL_PID: u16 = 0x1FFF;

/// Bytes per packet of M2TS: a 4-byte TP_extra_header (copy permission and
/// arrival time stamp), then the 188-byte transport packet.
pub const M2TS_PACKET_BYTES: usize = PACKET_BYTES + 4;

/// Bytes per packet of DVB streams that keep the Reed-Solomon parity: the
/// 188-byte transport packet, then 16 parity bytes.
pub const RS_PACKET_BYTES: usize = PACKET_BYTES + 16;

/// The packet strides the aligner locks on, in order of preference.
const STRIDES: [usize; 3] = [PACKET_BYTES, M2TS_PACKET_BYTES, RS_PACKET_BYTES];

/// Bytes the aligner may keep between two pushes: enough to decide a lock at
/// the last candidate position of a push at the widest stride (its sync
/// bytes at +0, +204, +408).
pub const CARRY_BYTES: usize = 2 * RS_PACKET_BYTES;

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
/// Unlocked, a position is accepted when 0x47 appears there and one and two
/// strides further on, trying the strides 188, 192 and 204 in that order; a
/// candidate too close to the end of a push to decide is carried and decided
/// on the next push. Locked, every packet that starts with 0x47 is emitted
/// and the first one that does not counts a sync loss and starts a rescan
/// there. At stride 192 or 204 the bytes between packets (the next packet's
/// TP_extra_header, or this packet's parity) are dropped and counted as
/// stripped; the TP_extra_header of the first packet after a lock was
/// scanned over and counts as garbage.
///
/// Counters are cumulative; `garbage_bytes + stripped_bytes + 188 * packets
/// + carried_bytes` always equals the bytes pushed.
pub struct Aligner {
    carry: [u8; CARRY_BYTES],
    carry_len: usize,
    /// The packet stride while locked.
    stride: Option<usize>,
    /// Bytes between the last packet and the next one still to be dropped
    /// (stride minus 188 after each packet at stride 192 or 204).
    gap_pending: usize,
    garbage_bytes: u64,
    stripped_bytes: u64,
    sync_losses: u64,
    packets: u64,
}

/// What the bytes at a candidate position say about a packet grid there.
enum Grid {
    /// Sync bytes one and two strides on: lock at this stride.
    Locked(usize),
    /// No stride fits here.
    None,
    /// A stride that would be preferred runs past the bytes so far.
    Undecided,
}

impl Default for Aligner {
    fn default() -> Self {
        Self::new()
    }
}

impl Aligner {
    /// An unlocked aligner with nothing carried.
    pub const fn new() -> Self {
        Aligner {
            carry: [0; CARRY_BYTES],
            carry_len: 0,
            stride: None,
            gap_pending: 0,
            garbage_bytes: 0,
            stripped_bytes: 0,
            sync_losses: 0,
            packets: 0,
        }
    }

    /// Forgets the carried bytes and the lock, for a new connection. The
    /// carried bytes are counted as garbage; the counters are kept.
    pub fn reset(&mut self) {
        self.garbage_bytes += self.carry_len as u64;
        self.carry_len = 0;
        self.stride = None;
        self.gap_pending = 0;
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

    /// M2TS headers and Reed-Solomon parity dropped between packets locked
    /// at stride 192 or 204.
    pub fn stripped_bytes(&self) -> u64 {
        self.stripped_bytes
    }

    /// Bytes held back until the next push.
    pub fn carried_bytes(&self) -> usize {
        self.carry_len
    }

    /// True while the aligner follows a packet grid.
    pub fn is_locked(&self) -> bool {
        self.stride.is_some()
    }

    /// The source's packet stride while locked: 188, or 192 (M2TS) and 204
    /// (Reed-Solomon parity), which are normalised to 188-byte packets.
    pub fn stride(&self) -> Option<usize> {
        self.stride
    }

    /// Feeds `input` and calls `sink` with runs of whole 188-byte packets.
    /// Each run's length is a multiple of 188 and every packet in it starts
    /// with 0x47. At stride 188, runs inside `input` are passed on as one
    /// borrowed slice; at 192 and 204 each packet is passed on by itself.
    /// Only a packet that straddles two pushes is copied.
    pub fn push(&mut self, input: &[u8], sink: &mut impl FnMut(&[u8])) {
        let mut position = 0;
        let keep_from = loop {
            let step = match self.stride {
                None => self.scan(input, position),
                Some(PACKET_BYTES) => self.emit_locked(input, position, sink),
                Some(stride) => self.emit_strided(input, position, stride, sink),
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

    /// Unlocked: looks for a position with three sync bytes one stride apart.
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
                match self.grid_at(input, position) {
                    Grid::Locked(stride) => {
                        self.stride = Some(stride);
                        return Step::Continue(position);
                    }
                    Grid::Undecided => return Step::Keep(position),
                    Grid::None => {}
                }
            }
            self.garbage_bytes += 1;
            position += 1;
        }
        Step::Keep(end)
    }

    /// The preferred stride whose grid fits at `position`, which holds 0x47.
    fn grid_at(&self, input: &[u8], position: usize) -> Grid {
        for stride in STRIDES {
            match self.grid_fits(input, position, stride) {
                Some(true) if stride == M2TS_PACKET_BYTES => {
                    return self.m2ts_grid_at(input, position);
                }
                Some(true) => return Grid::Locked(stride),
                Some(false) => {}
                None => return Grid::Undecided,
            }
        }
        Grid::None
    }

    /// Settles a 192-byte grid at `position`. The high bytes of the
    /// TP_extra_header's arrival time stamp stay the same over many packets,
    /// so a 0x47 in its second byte makes a grid of its own, 3 bytes before
    /// the real one. A real grid never has a twin 3 bytes on: that would be
    /// header byte 3 = 0x47, whose adaptation_field_control 00 is reserved.
    fn m2ts_grid_at(&self, input: &[u8], position: usize) -> Grid {
        let twin = position + 3;
        let twin_fits = self
            .byte_at_or_none(input, twin)
            .map(|byte| byte == SYNC_BYTE);
        match twin_fits {
            Some(true) => match self.grid_fits(input, twin, M2TS_PACKET_BYTES) {
                Some(true) => Grid::None,
                Some(false) => Grid::Locked(M2TS_PACKET_BYTES),
                None => Grid::Undecided,
            },
            Some(false) => Grid::Locked(M2TS_PACKET_BYTES),
            None => Grid::Undecided,
        }
    }

    /// Whether sync bytes follow one and two `stride`s after `position`;
    /// `None` when the bytes so far end before that is known.
    fn grid_fits(&self, input: &[u8], position: usize, stride: usize) -> Option<bool> {
        for at in [position + stride, position + 2 * stride] {
            if self.byte_at_or_none(input, at)? != SYNC_BYTE {
                return Some(false);
            }
        }
        Some(true)
    }

    fn byte_at_or_none(&self, input: &[u8], position: usize) -> Option<u8> {
        (position < self.joined_len(input)).then(|| self.byte_at(input, position))
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
                self.stride = None;
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

    /// Locked at stride 192 or 204: drops the bytes between packets and
    /// emits each packet that starts with 0x47 by itself.
    fn emit_strided(
        &mut self,
        input: &[u8],
        mut position: usize,
        stride: usize,
        sink: &mut impl FnMut(&[u8]),
    ) -> Step {
        let end = self.joined_len(input);
        loop {
            let skipped = self.gap_pending.min(end - position);
            self.gap_pending -= skipped;
            self.stripped_bytes += skipped as u64;
            position += skipped;
            if position == end {
                return Step::Keep(end);
            }
            if self.byte_at(input, position) != SYNC_BYTE {
                self.sync_losses += 1;
                self.stride = None;
                return Step::Continue(position);
            }
            if position + PACKET_BYTES > end {
                return Step::Keep(position);
            }
            if position < self.carry_len {
                self.emit_straddling(input, position, sink);
            } else {
                let start = position - self.carry_len;
                sink(&input[start..start + PACKET_BYTES]);
                self.packets += 1;
            }
            position += PACKET_BYTES;
            self.gap_pending = stride - PACKET_BYTES;
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
        let total = aligner.garbage_bytes()
            + aligner.stripped_bytes()
            + aligner.packets() * PACKET_BYTES as u64;
        assert_eq!(total + aligner.carried_bytes() as u64, pushed as u64);
    }

    /// `packets` as an M2TS stream: each one behind a 4-byte
    /// TP_extra_header `prefix(i)`.
    fn m2ts(packets: &[u8], prefix: impl Fn(usize) -> [u8; 4]) -> Vec<u8> {
        packets
            .chunks(PACKET_BYTES)
            .enumerate()
            .flat_map(|(i, p)| prefix(i).into_iter().chain(p.iter().copied()))
            .collect()
    }

    /// An arrival time stamp that never holds 0x47.
    fn time_stamp(i: usize) -> [u8; 4] {
        [0x00, 0x12, (i * 3) as u8 & 0x3F, 0xA5]
    }

    /// `packets` with 16 parity bytes (never 0x47) after each one.
    fn with_parity(packets: &[u8]) -> Vec<u8> {
        packets
            .chunks(PACKET_BYTES)
            .flat_map(|p| p.iter().copied().chain([0xEE; 16]))
            .collect()
    }

    /// Aligns `stream` in pieces of every size from 1 to 450 bytes and of
    /// the whole, checks the accounting, and returns the output (the same
    /// for every split) and the aligner of the whole push.
    fn align_every_split(stream: &[u8]) -> (Vec<u8>, Aligner) {
        let mut whole = Aligner::new();
        let out = align(&mut whole, stream, stream.len());
        assert_accounted(&whole, stream.len());
        for step in 1..=450 {
            let mut aligner = Aligner::new();
            assert_eq!(align(&mut aligner, stream, step), out, "step {step}");
            assert_accounted(&aligner, stream.len());
            assert_eq!(
                aligner.garbage_bytes(),
                whole.garbage_bytes(),
                "step {step}"
            );
            assert_eq!(aligner.sync_losses(), whole.sync_losses(), "step {step}");
            assert_eq!(aligner.stride(), whole.stride(), "step {step}");
        }
        (out, whole)
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
    fn m2ts_stream_is_normalised_for_every_split() {
        let good = clean_stream(6);
        let stream = m2ts(&good, time_stamp);
        let (out, aligner) = align_every_split(&stream);
        assert_eq!(out, good);
        assert_eq!(aligner.stride(), Some(M2TS_PACKET_BYTES));
        // The first header was scanned over; the others were stripped.
        assert_eq!(aligner.garbage_bytes(), 4);
        assert_eq!(aligner.stripped_bytes(), 5 * 4);
        assert_eq!(aligner.packets(), 6);
        assert_eq!(aligner.sync_losses(), 0);
    }

    #[test]
    fn parity_stream_is_normalised_for_every_split() {
        let good = clean_stream(6);
        let stream = with_parity(&good);
        let (out, aligner) = align_every_split(&stream);
        assert_eq!(out, good);
        assert_eq!(aligner.stride(), Some(RS_PACKET_BYTES));
        assert_eq!(aligner.garbage_bytes(), 0);
        assert_eq!(aligner.stripped_bytes(), 6 * 16);
        assert_eq!(aligner.carried_bytes(), 0);
    }

    #[test]
    fn strided_packets_are_passed_one_at_a_time_and_borrowed() {
        let stream = with_parity(&clean_stream(5));
        let mut aligner = Aligner::new();
        let mut calls = 0;
        aligner.push(&stream, &mut |packet: &[u8]| {
            assert_eq!(packet.len(), PACKET_BYTES);
            let offset = packet.as_ptr() as usize - stream.as_ptr() as usize;
            assert_eq!(offset, calls * RS_PACKET_BYTES);
            calls += 1;
        });
        assert_eq!(calls, 5);
    }

    #[test]
    fn m2ts_time_stamp_holding_a_sync_byte_is_not_the_grid() {
        // The arrival time stamp's second byte is 0x47 for a while; its
        // grid lies 3 bytes before the real one.
        let good = clean_stream(6);
        let stream = m2ts(&good, |i| [0x00, SYNC_BYTE, i as u8, 0x10]);
        let (out, aligner) = align_every_split(&stream);
        assert_eq!(out, good);
        assert_eq!(aligner.garbage_bytes(), 4);
        // A 0x47 in its first byte (copy_permission_indicator 01) makes a
        // grid 4 bytes early, which looks like a real one with 0x47 as the
        // first payload byte of every packet: that grid is followed (a
        // known limit) until the time stamp moves on and the sync breaks.
        let stream = m2ts(&good, |i| [SYNC_BYTE, 0x00, i as u8, 0x10]);
        let (out, aligner) = align_every_split(&stream);
        assert_eq!(out.len(), good.len());
        assert_ne!(out, good);
        assert_eq!(aligner.stride(), Some(M2TS_PACKET_BYTES));
    }

    #[test]
    fn stride_188_is_preferred_when_several_fit() {
        // Bytes 4, 8, 16 and 32 of every packet are 0x47, so grids of 192
        // (0x47 at +192 and +384) and 204 (+204, +408) fit too.
        let mut good = clean_stream(6);
        for packet in good.chunks_mut(PACKET_BYTES) {
            for at in [4, 8, 16, 32] {
                packet[at] = SYNC_BYTE;
            }
        }
        let (out, aligner) = align_every_split(&good);
        assert_eq!(out, good);
        assert_eq!(aligner.stride(), Some(PACKET_BYTES));
        assert_eq!(aligner.stripped_bytes(), 0);
    }

    #[test]
    fn garbage_between_packets_at_each_stride() {
        let good = clean_stream(8);
        let junk = [0x01u8; 50];
        // Stride 204: the junk follows the parity of packet 3.
        let parity = with_parity(&good);
        let cut = 4 * RS_PACKET_BYTES;
        let stream = [&parity[..cut], &junk[..], &parity[cut..]].concat();
        let (out, aligner) = align_every_split(&stream);
        assert_eq!(out, good);
        assert_eq!(aligner.garbage_bytes(), 50);
        assert_eq!(aligner.stripped_bytes(), 8 * 16);
        assert_eq!(aligner.sync_losses(), 1);
        assert_eq!(aligner.stride(), Some(RS_PACKET_BYTES));

        // Stride 192: the junk comes before the header of packet 4. Its
        // first 4 bytes are stripped as that header would have been, and
        // the real header of packet 4 is scanned over after the resync.
        let stamped = m2ts(&good, time_stamp);
        let cut = 4 * M2TS_PACKET_BYTES;
        let stream = [&stamped[..cut], &junk[..], &stamped[cut..]].concat();
        let (out, aligner) = align_every_split(&stream);
        assert_eq!(out, good);
        assert_eq!(aligner.garbage_bytes(), 4 + 46 + 4);
        assert_eq!(aligner.stripped_bytes(), 7 * 4);
        assert_eq!(aligner.sync_losses(), 1);
        assert_eq!(aligner.stride(), Some(M2TS_PACKET_BYTES));
    }

    #[test]
    fn strides_switch_after_a_sync_loss() {
        let first = clean_stream(6);
        let second: Vec<u8> = (0..6)
            .flat_map(|i| packet(0x200 + i as u16, i as u8, 0x30 + i as u8))
            .collect();
        let third: Vec<u8> = (0..6)
            .flat_map(|i| packet(0x300 + i as u16, i as u8, 0x60 + i as u8))
            .collect();
        let stream = [
            with_parity(&first),
            second.clone(),
            m2ts(&third, time_stamp),
        ]
        .concat();
        let (out, aligner) = align_every_split(&stream);
        // Still at stride 204, the first 188-byte packet is emitted, and the
        // parity skip eats the start of the second: it is lost to the
        // resync. The change to 192 loses nothing: the 188 stream ends on a
        // packet boundary, where the first M2TS header breaks the sync.
        let at = |i: usize| i * PACKET_BYTES;
        let expected = [&first[..], &second[..at(1)], &second[at(2)..], &third[..]].concat();
        assert_eq!(out, expected);
        assert_eq!(aligner.sync_losses(), 2);
        assert_eq!(aligner.stride(), Some(M2TS_PACKET_BYTES));
        assert_eq!(aligner.stripped_bytes(), 6 * 16 + 16 + 5 * 4);
        assert_eq!(aligner.garbage_bytes(), (PACKET_BYTES - 16) as u64 + 4);
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
            let stride = STRIDES[round % STRIDES.len()];
            for i in (phase..len).step_by(stride) {
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
