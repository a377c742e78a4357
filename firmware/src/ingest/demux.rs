//! What ingest knows about a channel's transport stream: the program it
//! serves (from the PAT, or chosen by number or DVB service name from an MPTS),
//! that program's PMT (its PIDs, PCR PID and video codec), the latest PAT and
//! PMT packets to resend to players, and the source's faults (continuity
//! counter gaps, PCR jumps, damaged PSI).
//!
//! [`Demux::observe`] looks at each packet once, in arrival order, and says
//! what the packet is for the output ([`Role`]); it never writes to the ring.
//! Every table here is fixed in size: PSI is reassembled in 1 KiB buffers, at
//! most [`ES_PIDS_MAX`] elementary streams of one program are tracked, and the
//! continuity counters of all 8192 PIDs live in one byte each.

use heapless::Vec as FixedVec;

use crate::config::ProgramSelect;
use crate::stats::ChannelStats;
use crate::wire::es::{self, VideoCodec};
use crate::wire::psi::{self, SectionAssembler, PAT_PID, SDT_PID};
use crate::wire::ts::{Packet, NULL_PID, PACKET_BYTES};

/// Elementary streams of the served program that are tracked.
pub const ES_PIDS_MAX: usize = 16;
/// Packets kept of one PSI table (PAT or PMT) for resending. Tables that
/// need more packets are not resent (players then wait for the source's).
pub const PSI_PACKETS_MAX: usize = 4;
/// PIDs in a transport stream.
const PIDS: usize = 8192;
/// `continuity` entry of a PID not seen since the last restart.
const CC_UNKNOWN: u8 = 0xFF;
/// PCR ticks (27 MHz) per second.
const PCR_HZ: u64 = 27_000_000;
/// A forward PCR step above this is a jump (PCRs come at least every 100 ms).
const PCR_JUMP_TICKS: u64 = PCR_HZ;
/// PCR wraps at 2^33 * 300.
const PCR_MODULUS: u64 = (1u64 << 33) * 300;

/// The packets of the latest complete PSI table of one PID.
#[derive(Clone)]
pub struct PsiPackets {
    packets: [[u8; PACKET_BYTES]; PSI_PACKETS_MAX],
    count: usize,
    /// More packets belonged to the table than fit.
    overflow: bool,
}

impl PsiPackets {
    const fn new() -> Self {
        Self {
            packets: [[0; PACKET_BYTES]; PSI_PACKETS_MAX],
            count: 0,
            overflow: false,
        }
    }

    fn clear(&mut self) {
        self.count = 0;
        self.overflow = false;
    }

    fn push(&mut self, packet: &[u8]) {
        match self.packets.get_mut(self.count) {
            Some(slot) => {
                slot.copy_from_slice(&packet[..PACKET_BYTES]);
                self.count += 1;
            }
            None => self.overflow = true,
        }
    }

    /// The packets, or none if the table did not fit.
    pub fn packets(&self) -> &[[u8; PACKET_BYTES]] {
        if self.overflow {
            &[]
        } else {
            &self.packets[..self.count]
        }
    }

    pub fn is_empty(&self) -> bool {
        self.packets().is_empty()
    }
}

/// The served program as its tables describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramInfo {
    pub number: u16,
    pub pmt_pid: u16,
    /// The video PID and its codec (`None` if ringcast does not scan it).
    pub video: Option<(u16, Option<VideoCodec>)>,
}

/// What a packet is for the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Relay it as it is.
    Pass,
    /// Relay it; it is a PSI packet of the served program (PAT or PMT), whose
    /// continuity counter the output keeps continuous.
    Psi,
    /// A PAT packet of a stream whose program is selected: relay the
    /// rewritten single-program PAT instead (when `complete`), else nothing.
    RewrittenPat { complete: bool },
    /// Not part of the served program: drop it.
    Filtered,
    /// The first packet of a PES of the program's video stream.
    VideoStart(Option<VideoCodec>),
}

/// The program being served, as learned from the PAT and its PMT.
#[derive(Clone, Debug, Default)]
struct Program {
    number: u16,
    pmt_pid: u16,
    /// Set once the PMT of this program was read.
    pmt_version: Option<u8>,
    pcr_pid: Option<u16>,
    video: Option<(u16, Option<VideoCodec>)>,
    es_pids: FixedVec<u16, ES_PIDS_MAX>,
}

/// Tables and counters that section handlers update (kept apart from the
/// section assemblers so both can be borrowed at once).
struct Tables {
    select: ProgramSelect,
    program: Option<Program>,
    transport_stream_id: u16,
    pat_version: u8,
    /// Service id of the selected service name, from the SDT.
    service_id: Option<u16>,
    /// Bumped whenever the PAT or PMT of the served program changes; kept
    /// across restarts.
    psi_generation: u64,
    /// continuity_counter of the last rewritten PAT.
    rewritten_pat_counter: u8,
    /// Set by a handler when this packet completed a table of its PID.
    completed: bool,
    pat_packets: PsiPackets,
    pmt_packets: PsiPackets,
    pat_collect: PsiPackets,
    pmt_collect: PsiPackets,
}

/// Per-channel transport stream state.
pub struct Demux {
    tables: Tables,
    pat: SectionAssembler,
    pmt: SectionAssembler,
    sdt: SectionAssembler,
    continuity: [u8; PIDS],
    last_pcr: Option<u64>,
    /// The latest PCR of any PID, until taken.
    latest_pcr: Option<(u16, u64)>,
    psi_errors_seen: u64,
}

impl Demux {
    pub fn new(select: ProgramSelect) -> Self {
        Self {
            tables: Tables {
                select,
                program: None,
                transport_stream_id: 1,
                pat_version: 0,
                service_id: None,
                psi_generation: 0,
                rewritten_pat_counter: 0x0F,
                completed: false,
                pat_packets: PsiPackets::new(),
                pmt_packets: PsiPackets::new(),
                pat_collect: PsiPackets::new(),
                pmt_collect: PsiPackets::new(),
            },
            pat: SectionAssembler::new(),
            pmt: SectionAssembler::new(),
            sdt: SectionAssembler::new(),
            continuity: [CC_UNKNOWN; PIDS],
            last_pcr: None,
            latest_pcr: None,
            psi_errors_seen: 0,
        }
    }

    /// A new source (or a restart of the old one): every table and counter
    /// is learned again. The last PAT/PMT packets are forgotten.
    pub fn handle_restart(&mut self) {
        let select = core::mem::take(&mut self.tables.select);
        let generation = self.tables.psi_generation;
        *self = Self::new(select);
        // Generations only grow, so the new source's tables count as new.
        self.tables.psi_generation = generation;
    }

    /// True once the served program's PAT and PMT were read.
    pub fn has_psi(&self) -> bool {
        self.tables
            .program
            .as_ref()
            .is_some_and(|program| program.pmt_version.is_some())
            && !self.tables.pat_packets.is_empty()
            && !self.tables.pmt_packets.is_empty()
    }

    /// Changes whenever the served program's PAT or PMT changes.
    pub fn psi_generation(&self) -> u64 {
        self.tables.psi_generation
    }

    /// The latest PAT packets to resend (rewritten when a program is
    /// selected) and the PMT packets of the served program.
    pub fn psi_packets(&self) -> (&[[u8; PACKET_BYTES]], &[[u8; PACKET_BYTES]]) {
        (
            self.tables.pat_packets.packets(),
            self.tables.pmt_packets.packets(),
        )
    }

    /// The served program, once its PMT was read.
    pub fn program(&self) -> Option<ProgramInfo> {
        let program = self.tables.program.as_ref()?;
        program.pmt_version?;
        Some(ProgramInfo {
            number: program.number,
            pmt_pid: program.pmt_pid,
            video: program.video,
        })
    }

    /// PID of the served program's PMT, once known.
    pub fn pmt_pid(&self) -> Option<u16> {
        self.tables.program.as_ref().map(|program| program.pmt_pid)
    }

    /// The PID and codec of the served program's video, once known.
    pub fn video(&self) -> Option<(u16, Option<VideoCodec>)> {
        self.tables.program.as_ref().and_then(|p| p.video)
    }

    /// The latest PCR seen (PID, 27 MHz ticks), once.
    pub fn take_latest_pcr(&mut self) -> Option<(u16, u64)> {
        self.latest_pcr.take()
    }

    /// True if the PMT is known and names no video stream.
    pub fn is_without_video(&self) -> bool {
        self.has_psi() && self.video().is_none()
    }

    /// Looks at one packet: counts its faults, reads PSI, and says what it is
    /// for the output.
    pub fn observe(&mut self, packet: &Packet<&[u8]>, stats: &ChannelStats) -> Role {
        let pid = packet.pid();
        let fresh = self.check_continuity(packet, stats);
        self.check_pcr(packet, stats);
        self.tables.completed = false;
        let role = if pid == PAT_PID {
            self.read_pat(packet, fresh);
            if self.tables.select == ProgramSelect::All {
                Role::Psi
            } else {
                Role::RewrittenPat {
                    complete: self.tables.completed && !self.tables.pat_packets.is_empty(),
                }
            }
        } else if Some(pid) == self.pmt_pid() {
            self.read_pmt(packet, fresh);
            Role::Psi
        } else {
            if pid == SDT_PID && matches!(self.tables.select, ProgramSelect::Service(_)) {
                let tables = &mut self.tables;
                self.sdt.push(
                    packet.payload_unit_start(),
                    fresh,
                    packet.payload(),
                    &mut |section| tables.handle_sdt(section),
                );
            }
            self.role_of_other(packet)
        };
        self.count_psi_errors(stats);
        role
    }

    fn role_of_other(&self, packet: &Packet<&[u8]>) -> Role {
        let pid = packet.pid();
        let program = self.tables.program.as_ref();
        if let Some((video_pid, codec)) = program.and_then(|p| p.video) {
            if pid == video_pid && packet.payload_unit_start() {
                return Role::VideoStart(codec);
            }
        }
        if self.tables.select == ProgramSelect::All {
            if program.is_none_or(|p| p.video.is_none())
                && packet.payload_unit_start()
                && starts_video_pes(packet)
            {
                // No PMT (yet): any video PES start may be a keyframe.
                return Role::VideoStart(None);
            }
            return Role::Pass;
        }
        match program {
            Some(p) if p.es_pids.contains(&pid) || p.pcr_pid == Some(pid) => Role::Pass,
            _ => Role::Filtered,
        }
    }

    /// Counts continuity errors; returns false when the packet does not
    /// continue its PID's sequence (a duplicate, or after a gap).
    fn check_continuity(&mut self, packet: &Packet<&[u8]>, stats: &ChannelStats) -> bool {
        let pid = packet.pid();
        if pid == NULL_PID {
            return true;
        }
        let slot = &mut self.continuity[usize::from(pid)];
        let counter = packet.continuity_counter();
        let previous = core::mem::replace(slot, counter);
        if previous == CC_UNKNOWN || packet.discontinuity() {
            return true;
        }
        let expected = if packet.has_payload() {
            (previous + 1) & 0x0F
        } else {
            previous
        };
        if counter == expected {
            return true;
        }
        if packet.has_payload() && counter == previous {
            // A duplicate packet (allowed once by ISO/IEC 13818-1 §2.4.3.3).
            return false;
        }
        stats.cc_errors.increment();
        false
    }

    fn check_pcr(&mut self, packet: &Packet<&[u8]>, stats: &ChannelStats) {
        let Some(pcr) = packet.pcr() else {
            return;
        };
        let pcr_pid = self.tables.program.as_ref().and_then(|p| p.pcr_pid);
        if pcr_pid.is_some_and(|pid| pid != packet.pid()) {
            return;
        }
        self.latest_pcr = Some((packet.pid(), pcr));
        if let Some(last) = self.last_pcr {
            let forward = (pcr % PCR_MODULUS + PCR_MODULUS - last % PCR_MODULUS) % PCR_MODULUS;
            if forward > PCR_JUMP_TICKS && !packet.discontinuity() {
                stats.pcr_jumps.increment();
            }
        }
        self.last_pcr = Some(pcr);
    }

    fn read_pat(&mut self, packet: &Packet<&[u8]>, fresh: bool) {
        collect(&mut self.tables.pat_collect, packet);
        let tables = &mut self.tables;
        self.pat.push(
            packet.payload_unit_start(),
            fresh,
            packet.payload(),
            &mut |section| tables.handle_pat(section),
        );
        if self.tables.completed && self.tables.select == ProgramSelect::All {
            self.tables.pat_packets = self.tables.pat_collect.clone();
        }
        if self.tables.program.is_none() {
            self.pmt.reset();
        }
    }

    fn read_pmt(&mut self, packet: &Packet<&[u8]>, fresh: bool) {
        collect(&mut self.tables.pmt_collect, packet);
        let tables = &mut self.tables;
        self.pmt.push(
            packet.payload_unit_start(),
            fresh,
            packet.payload(),
            &mut |section| tables.handle_pmt(section),
        );
        if self.tables.completed {
            self.tables.pmt_packets = self.tables.pmt_collect.clone();
        }
    }

    fn count_psi_errors(&mut self, stats: &ChannelStats) {
        let total = self.pat.crc_errors() + self.pmt.crc_errors() + self.sdt.crc_errors();
        if total > self.psi_errors_seen {
            stats.psi_errors.add(total - self.psi_errors_seen);
            self.psi_errors_seen = total;
        }
    }
}

/// Keeps the packets of the PSI section being received on one PID.
fn collect(into: &mut PsiPackets, packet: &Packet<&[u8]>) {
    if packet.payload_unit_start() {
        into.clear();
    }
    into.push(packet.into_inner());
}

impl Tables {
    fn handle_pat(&mut self, section: &[u8]) {
        let Some(header) = psi::section_header(section) else {
            return;
        };
        if header.table_id != psi::TABLE_PAT || !header.current_next {
            return;
        }
        let wanted = match &self.select {
            ProgramSelect::All => psi::pat_entries(section).find(|&(number, _)| number != 0),
            ProgramSelect::Number(wanted) => {
                psi::pat_entries(section).find(|&(number, _)| number == *wanted)
            }
            ProgramSelect::Service(_) => self
                .service_id
                .and_then(|id| psi::pat_entries(section).find(|&(number, _)| number == id)),
        };
        self.completed = true;
        let changed = header.table_id_extension != self.transport_stream_id
            || header.version != self.pat_version;
        self.transport_stream_id = header.table_id_extension;
        self.pat_version = header.version;
        match (wanted, self.program.as_ref()) {
            (None, _) => {
                self.program = None;
                self.pat_packets.clear();
                self.pmt_packets.clear();
            }
            (Some((number, pmt_pid)), current) => {
                if current.is_none_or(|p| p.number != number || p.pmt_pid != pmt_pid) {
                    self.program = Some(Program {
                        number,
                        pmt_pid,
                        ..Program::default()
                    });
                    self.pmt_packets.clear();
                    self.psi_generation += 1;
                } else if changed {
                    self.psi_generation += 1;
                }
                if self.select != ProgramSelect::All {
                    self.write_rewritten_pat(number, pmt_pid);
                }
            }
        }
    }

    /// The PAT a selected program is served with: only that program.
    fn write_rewritten_pat(&mut self, number: u16, pmt_pid: u16) {
        self.rewritten_pat_counter = (self.rewritten_pat_counter + 1) & 0x0F;
        let mut packet = [0u8; PACKET_BYTES];
        psi::write_single_program_pat(
            &mut packet,
            self.transport_stream_id,
            self.pat_version,
            number,
            pmt_pid,
            self.rewritten_pat_counter,
        );
        self.pat_packets.clear();
        self.pat_packets.push(&packet);
    }

    fn handle_pmt(&mut self, section: &[u8]) {
        let Some(pmt) = psi::parse_pmt(section) else {
            return;
        };
        let Some(program) = self.program.as_mut() else {
            return;
        };
        if pmt.program_number != program.number {
            return;
        }
        self.completed = true;
        if program.pmt_version == Some(pmt.version) {
            return;
        }
        program.pmt_version = Some(pmt.version);
        program.pcr_pid = (pmt.pcr_pid != NULL_PID).then_some(pmt.pcr_pid);
        program.video = None;
        program.es_pids.clear();
        for stream in pmt.streams() {
            let codec = es::video_codec(stream.stream_type, stream.descriptors);
            if program.video.is_none() && (codec.is_some() || is_video_type(stream.stream_type)) {
                program.video = Some((stream.pid, codec));
            }
            // Streams beyond the table are dropped from a selected program.
            let _ = program.es_pids.push(stream.pid);
        }
        self.psi_generation += 1;
    }

    fn handle_sdt(&mut self, section: &[u8]) {
        let ProgramSelect::Service(name) = &self.select else {
            return;
        };
        let Some(header) = psi::section_header(section) else {
            return;
        };
        if header.table_id != psi::TABLE_SDT_ACTUAL {
            return;
        }
        if let Some((id, _)) =
            psi::sdt_services(section).find(|(_, service)| *service == name.as_bytes())
        {
            self.service_id = Some(id);
        }
    }
}

/// Video stream types without a keyframe scanner (MPEG-4 part 2, VC-1, AVS),
/// still the program's picture.
fn is_video_type(stream_type: u8) -> bool {
    matches!(stream_type, 0x10 | 0xEA | 0x42 | 0xD2)
}

/// True if the packet starts a PES packet of a video stream (stream ids
/// 0xE0–0xEF, ISO/IEC 13818-1 table 2-22).
pub fn starts_video_pes(packet: &Packet<&[u8]>) -> bool {
    let payload = packet.payload();
    packet.payload_unit_start()
        && payload.len() >= 4
        && payload[..3] == [0, 0, 1]
        && payload[3] & 0xF0 == 0xE0
}
