//! Program-specific information (ISO/IEC 13818-1 §2.4.4): a
//! [`SectionAssembler`] that rebuilds PSI sections of one PID from the
//! payloads of its transport packets, borrowed parsers for the PAT (§2.4.4.3),
//! the PMT (§2.4.4.8) and the DVB SDT (ETSI EN 300 468 §5.2.3), and an emitter
//! for the single-program PAT the relay puts in front of a new reader.
//!
//! The assembler owns one fixed [`SECTION_BYTES_MAX`] buffer and checks the
//! CRC_32 of every long-form section before handing it on, so the parsers see
//! only sections that arrived whole. The parsers still trust nothing: each one
//! checks `section_length` against the slice and every inner length against
//! what is left, and answers `None` or an iterator that ends early rather than
//! panicking. Nothing here allocates.

use crate::wire::ts::{PACKET_BYTES, SYNC_BYTE};

/// PID of the program association table.
pub const PAT_PID: u16 = 0x0000;

/// PID of the DVB service description table.
pub const SDT_PID: u16 = 0x0011;

/// Largest PSI section: the 3 bytes up to `section_length`, plus the 1021
/// bytes that field may announce for PAT, PMT and SDT sections.
pub const SECTION_BYTES_MAX: usize = 1024;

/// table_id of a program association section.
pub const TABLE_PAT: u8 = 0x00;

/// table_id of a TS program map section.
pub const TABLE_PMT: u8 = 0x02;

/// table_id of a service description section of the actual transport stream.
pub const TABLE_SDT_ACTUAL: u8 = 0x42;

/// Descriptor tag of the DVB service_descriptor (EN 300 468 §6.2.33).
pub const DESCRIPTOR_SERVICE: u8 = 0x48;

/// Bytes up to and including `section_length`.
const SECTION_PREFIX_BYTES: usize = 3;
/// Largest `section_length` accepted (§2.4.4.3: at most 0x3FD).
const SECTION_LENGTH_MAX: usize = SECTION_BYTES_MAX - SECTION_PREFIX_BYTES;
/// Bytes of the long-form header: table_id through last_section_number.
const LONG_HEADER_BYTES: usize = 8;
const CRC_BYTES: usize = 4;
/// Smallest `section_length` of a long-form section: 5 header bytes after
/// `section_length`, and the CRC.
const LONG_SECTION_LENGTH_MIN: usize = LONG_HEADER_BYTES - SECTION_PREFIX_BYTES + CRC_BYTES;
/// Value of a stuffing byte after the last section in a packet.
const STUFFING_BYTE: u8 = 0xFF;

const CRC32_POLYNOMIAL: u32 = 0x04C1_1DB7;
const CRC32_TABLE: [u32; 256] = crc32_table();

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut value = (index as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 0x8000_0000 != 0 {
                (value << 1) ^ CRC32_POLYNOMIAL
            } else {
                value << 1
            };
            bit += 1;
        }
        table[index] = value;
        index += 1;
    }
    table
}

/// The CRC_32 of PSI sections (§2.4.4.3, annex A): polynomial 0x04C11DB7,
/// initial value 0xFFFFFFFF, most significant bit first, no final XOR.
///
/// Over a whole section including its CRC_32 field the result is 0, which is
/// how a section is checked.
pub fn crc32_mpeg2(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0xFFFF_FFFF, |crc, &byte| {
        let index = usize::from((crc >> 24) as u8 ^ byte);
        (crc << 8) ^ CRC32_TABLE[index]
    })
}

/// Rebuilds the PSI sections carried on one PID.
///
/// A section starts in a packet with payload_unit_start_indicator set, at the
/// offset given by its pointer_field; the bytes before that offset finish the
/// previous section. A section may span packets, several may share one packet,
/// and 0xFF after a section means stuffing up to the end of the packet. A
/// continuity gap drops the partial section, and the assembler waits for the
/// next unit start. Sections longer than [`SECTION_BYTES_MAX`] are dropped and
/// counted with the CRC errors.
pub struct SectionAssembler {
    buffer: [u8; SECTION_BYTES_MAX],
    /// Bytes of the current section collected so far.
    len: usize,
    /// False until a unit start gives a section boundary to begin from.
    collecting: bool,
    crc_errors: u64,
    partials_dropped: u64,
}

impl Default for SectionAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl SectionAssembler {
    /// An assembler that waits for the first unit start.
    pub const fn new() -> Self {
        SectionAssembler {
            buffer: [0; SECTION_BYTES_MAX],
            len: 0,
            collecting: false,
            crc_errors: 0,
            partials_dropped: 0,
        }
    }

    /// Forgets a partial section and waits for the next unit start, for a new
    /// source. The counters are kept.
    pub fn reset(&mut self) {
        self.len = 0;
        self.collecting = false;
    }

    /// Sections dropped because their CRC_32 was wrong, their
    /// `section_length` was larger than [`SECTION_BYTES_MAX`] allows, or too
    /// small for a long-form header.
    pub fn crc_errors(&self) -> u64 {
        self.crc_errors
    }

    /// Partial sections dropped because of a continuity gap or because the
    /// next section started before they were complete.
    pub fn partials_dropped(&self) -> u64 {
        self.partials_dropped
    }

    /// Feeds the payload of one transport packet of this PID.
    ///
    /// `payload` is the packet's payload (after any adaptation field),
    /// `unit_start` its payload_unit_start_indicator, and `continuity_ok`
    /// false when the caller saw a continuity counter gap before this packet.
    /// `sink` gets every complete section, from table_id through CRC_32,
    /// whose CRC is valid; sections with section_syntax_indicator 0 carry no
    /// CRC and are passed on unchecked.
    pub fn push(
        &mut self,
        unit_start: bool,
        continuity_ok: bool,
        payload: &[u8],
        sink: &mut impl FnMut(&[u8]),
    ) {
        if !continuity_ok {
            self.drop_partial();
            self.collecting = false;
        }
        if !unit_start {
            if self.collecting {
                self.feed(payload, sink);
            }
            return;
        }
        let Some((&pointer, rest)) = payload.split_first() else {
            self.drop_partial();
            self.collecting = false;
            return;
        };
        let pointer = usize::from(pointer);
        if pointer > rest.len() {
            // The pointer leads out of the packet: no boundary to trust.
            self.drop_partial();
            self.collecting = false;
            return;
        }
        let (tail, starts) = rest.split_at(pointer);
        if self.collecting && self.len > 0 {
            self.feed(tail, sink);
        }
        self.drop_partial();
        self.collecting = true;
        self.feed(starts, sink);
    }

    fn drop_partial(&mut self) {
        if self.len > 0 {
            self.partials_dropped += 1;
            self.len = 0;
        }
    }

    /// Appends `bytes` to the current section, emitting each one completed.
    /// Stops at stuffing or at a section too long to hold.
    fn feed(&mut self, mut bytes: &[u8], sink: &mut impl FnMut(&[u8])) {
        while let Some(&first) = bytes.first() {
            if self.len == 0 && first == STUFFING_BYTE {
                // Stuffing runs to the end of the packet; the next section
                // starts with the next unit start.
                self.collecting = false;
                return;
            }
            let wanted = match self.total_len() {
                Some(total) => total - self.len,
                None => SECTION_PREFIX_BYTES - self.len,
            };
            let taken = wanted.min(bytes.len());
            self.buffer[self.len..self.len + taken].copy_from_slice(&bytes[..taken]);
            self.len += taken;
            bytes = &bytes[taken..];
            match self.total_len() {
                None if self.len < SECTION_PREFIX_BYTES => {}
                None => {
                    // A length no PSI section may have: resynchronise on the
                    // next unit start.
                    self.crc_errors += 1;
                    self.len = 0;
                    self.collecting = false;
                    return;
                }
                Some(total) if self.len == total => {
                    self.finish(sink);
                }
                Some(_) => {}
            }
        }
    }

    /// The whole section's length once its first three bytes are in, or
    /// `None` before that or when `section_length` is out of range.
    fn total_len(&self) -> Option<usize> {
        if self.len < SECTION_PREFIX_BYTES {
            return None;
        }
        let length = section_length(&self.buffer);
        (length <= SECTION_LENGTH_MAX).then_some(SECTION_PREFIX_BYTES + length)
    }

    /// Checks and hands on the complete section in the buffer.
    fn finish(&mut self, sink: &mut impl FnMut(&[u8])) {
        let section = &self.buffer[..self.len];
        self.len = 0;
        if section[1] & SYNTAX_INDICATOR == 0 {
            sink(section);
            return;
        }
        let length = section.len() - SECTION_PREFIX_BYTES;
        if length < LONG_SECTION_LENGTH_MIN || crc32_mpeg2(section) != 0 {
            self.crc_errors += 1;
            return;
        }
        sink(section);
    }
}

/// section_syntax_indicator: a long-form header and a CRC_32 follow.
const SYNTAX_INDICATOR: u8 = 0x80;

/// The 12-bit `section_length` of a slice that holds at least 3 bytes.
fn section_length(bytes: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([bytes[1], bytes[2]]) & 0x0FFF)
}

/// The fields of a long-form section header (§2.4.4.10 and its siblings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionHeader {
    /// Which table the section belongs to ([`TABLE_PAT`], ...).
    pub table_id: u8,
    /// transport_stream_id (PAT, SDT) or program_number (PMT).
    pub table_id_extension: u16,
    /// The 5-bit version_number.
    pub version: u8,
    /// current_next_indicator: true when the table applies now.
    pub current_next: bool,
    /// Number of this section within the table.
    pub section_number: u8,
    /// Number of the table's last section.
    pub last_section_number: u8,
}

/// The bytes of a long-form section between its 8-byte header and its
/// CRC_32, after checking the syntax indicator and `section_length` against
/// the slice. Bytes after the section in `section` are ignored.
fn long_section_body(section: &[u8]) -> Option<&[u8]> {
    if section.len() < SECTION_PREFIX_BYTES || section[1] & SYNTAX_INDICATOR == 0 {
        return None;
    }
    let length = section_length(section);
    if !(LONG_SECTION_LENGTH_MIN..=SECTION_LENGTH_MAX).contains(&length) {
        return None;
    }
    let end = SECTION_PREFIX_BYTES + length;
    if section.len() < end {
        return None;
    }
    Some(&section[LONG_HEADER_BYTES..end - CRC_BYTES])
}

/// The body of a long-form section with table_id `table_id`.
fn table_body(section: &[u8], table_id: u8) -> Option<&[u8]> {
    let body = long_section_body(section)?;
    (section[0] == table_id).then_some(body)
}

/// Reads the long-form header of `section`; `None` if it is shorter than its
/// `section_length` says, too short for the header, or a short-form section.
pub fn section_header(section: &[u8]) -> Option<SectionHeader> {
    long_section_body(section)?;
    Some(SectionHeader {
        table_id: section[0],
        table_id_extension: u16::from_be_bytes([section[3], section[4]]),
        version: (section[5] >> 1) & 0x1F,
        current_next: section[5] & 0x01 != 0,
        section_number: section[6],
        last_section_number: section[7],
    })
}

/// A 13-bit PID from two bytes whose top three bits are reserved.
fn pid_from(high: u8, low: u8) -> u16 {
    u16::from_be_bytes([high, low]) & 0x1FFF
}

/// A 12-bit length from two bytes whose top four bits are reserved.
fn length_from(high: u8, low: u8) -> usize {
    usize::from(u16::from_be_bytes([high, low]) & 0x0FFF)
}

fn pat_entry(entry: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([entry[0], entry[1]]),
        pid_from(entry[2], entry[3]),
    )
}

/// The `(program_number, PID)` pairs of a PAT section. Program 0 is the
/// network PID (NIT), not a program; callers filter it. The iterator is empty
/// when `section` is not a well-formed PAT section.
pub fn pat_entries(section: &[u8]) -> impl Iterator<Item = (u16, u16)> + '_ {
    table_body(section, TABLE_PAT)
        .unwrap_or(&[])
        .chunks_exact(4)
        .map(pat_entry)
}

/// A program map section, borrowed from its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Pmt<'a> {
    /// The program this map describes.
    pub program_number: u16,
    /// PID of the packets carrying this program's PCR (0x1FFF: none).
    pub pcr_pid: u16,
    /// The 5-bit version_number.
    pub version: u8,
    /// current_next_indicator: true when the map applies now.
    pub current_next: bool,
    /// The program_info descriptors, raw (see [`descriptors`]).
    pub program_descriptors: &'a [u8],
    /// The elementary stream loop, raw.
    streams: &'a [u8],
}

/// One elementary stream of a PMT.
#[derive(Clone, Copy, Debug)]
pub struct EsInfo<'a> {
    /// stream_type (Table 2-34): 0x1B H.264, 0x24 HEVC, 0x0F AAC, ...
    pub stream_type: u8,
    /// elementary_PID.
    pub pid: u16,
    /// The ES_info descriptors, raw (see [`descriptors`]).
    pub descriptors: &'a [u8],
}

/// Bytes before an elementary stream's descriptors in the PMT loop.
const ES_ENTRY_HEADER_BYTES: usize = 5;
/// Bytes before the program descriptors in a PMT body.
const PMT_BODY_HEADER_BYTES: usize = 4;

/// Parses a TS program map section; `None` if it is not one or if a length
/// inside runs past the section.
pub fn parse_pmt(section: &[u8]) -> Option<Pmt<'_>> {
    let body = table_body(section, TABLE_PMT)?;
    let header = section_header(section)?;
    if body.len() < PMT_BODY_HEADER_BYTES {
        return None;
    }
    let program_info_length = length_from(body[2], body[3]);
    let rest = &body[PMT_BODY_HEADER_BYTES..];
    if program_info_length > rest.len() {
        return None;
    }
    let (program_descriptors, streams) = rest.split_at(program_info_length);
    Some(Pmt {
        program_number: header.table_id_extension,
        pcr_pid: pid_from(body[0], body[1]),
        version: header.version,
        current_next: header.current_next,
        program_descriptors,
        streams,
    })
}

impl<'a> Pmt<'a> {
    /// The elementary streams in the order the map lists them. Stops at the
    /// first entry whose ES_info_length runs past the section.
    pub fn streams(&self) -> impl Iterator<Item = EsInfo<'a>> {
        EsEntries { rest: self.streams }
    }
}

struct EsEntries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for EsEntries<'a> {
    type Item = EsInfo<'a>;

    fn next(&mut self) -> Option<EsInfo<'a>> {
        let rest = self.rest;
        self.rest = &[];
        if rest.len() < ES_ENTRY_HEADER_BYTES {
            return None;
        }
        let info_length = length_from(rest[3], rest[4]);
        let descriptors = rest.get(ES_ENTRY_HEADER_BYTES..ES_ENTRY_HEADER_BYTES + info_length)?;
        self.rest = &rest[ES_ENTRY_HEADER_BYTES + info_length..];
        Some(EsInfo {
            stream_type: rest[0],
            pid: pid_from(rest[1], rest[2]),
            descriptors,
        })
    }
}

/// The `(tag, body)` pairs of a descriptor loop (§2.6). Stops at a
/// descriptor whose length runs past the loop.
pub fn descriptors(bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> + '_ {
    Descriptors { rest: bytes }
}

struct Descriptors<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Descriptors<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let rest = self.rest;
        self.rest = &[];
        let (&tag, rest) = rest.split_first()?;
        let (&length, rest) = rest.split_first()?;
        let body = rest.get(..usize::from(length))?;
        self.rest = &rest[usize::from(length)..];
        Some((tag, body))
    }
}

/// Bytes before the service loop in an SDT body: original_network_id and a
/// reserved byte.
const SDT_BODY_HEADER_BYTES: usize = 3;
/// Bytes before a service's descriptors: service_id, EIT flags, running
/// status and descriptors_loop_length.
const SDT_SERVICE_HEADER_BYTES: usize = 5;

/// The `(service_id, service_name)` pairs of an SDT-actual section, from the
/// first service_descriptor of each service; services without one are
/// skipped. The name is raw DVB text (EN 300 468 annex A) with a leading
/// character-table selector removed, so callers compare bytes. The iterator
/// is empty when `section` is not a well-formed SDT-actual section and stops
/// at the first service whose lengths run past it.
pub fn sdt_services(section: &[u8]) -> impl Iterator<Item = (u16, &[u8])> + '_ {
    let services = table_body(section, TABLE_SDT_ACTUAL)
        .and_then(|body| body.get(SDT_BODY_HEADER_BYTES..))
        .unwrap_or(&[]);
    SdtServices { rest: services }
}

struct SdtServices<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdtServices<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        loop {
            let rest = self.rest;
            self.rest = &[];
            if rest.len() < SDT_SERVICE_HEADER_BYTES {
                return None;
            }
            let loop_length = length_from(rest[3], rest[4]);
            let end = SDT_SERVICE_HEADER_BYTES + loop_length;
            let loop_bytes = rest.get(SDT_SERVICE_HEADER_BYTES..end)?;
            self.rest = &rest[end..];
            let service_id = u16::from_be_bytes([rest[0], rest[1]]);
            let name = descriptors(loop_bytes)
                .filter(|&(tag, _)| tag == DESCRIPTOR_SERVICE)
                .find_map(|(_, body)| service_name(body));
            if let Some(name) = name {
                return Some((service_id, name));
            }
        }
    }
}

/// The service_name of a service_descriptor body, without its character
/// table selector; `None` if the lengths run past the body.
fn service_name(body: &[u8]) -> Option<&[u8]> {
    // service_type, provider_name_length, provider name, service_name_length.
    let provider_length = usize::from(*body.get(1)?);
    let name_at = 2 + provider_length;
    let name_length = usize::from(*body.get(name_at)?);
    let name = body.get(name_at + 1..name_at + 1 + name_length)?;
    Some(strip_character_table(name))
}

/// Removes the character-table selector at the start of DVB text (EN 300 468
/// annex A.2): one byte 0x01..=0x1F, three for 0x10 and two for 0x1F.
fn strip_character_table(text: &[u8]) -> &[u8] {
    let selector_bytes = match text.first() {
        Some(0x10) => 3,
        Some(0x1F) => 2,
        Some(&byte) if byte < 0x20 => 1,
        _ => 0,
    };
    text.get(selector_bytes..).unwrap_or(&[])
}

/// section_length of the PAT [`write_single_program_pat`] emits: 5 header
/// bytes after the length, one 4-byte program entry, and the CRC.
const SINGLE_PAT_SECTION_LENGTH: usize = 5 + 4 + CRC_BYTES;

/// Writes one complete transport packet on [`PAT_PID`] carrying a PAT
/// (version `version`, current) that lists only `program_number` with its
/// PMT on `pmt_pid`. The packet has payload_unit_start set, pointer_field 0,
/// and is stuffed with 0xFF after the section.
pub fn write_single_program_pat(
    out: &mut [u8; PACKET_BYTES],
    transport_stream_id: u16,
    version: u8,
    program_number: u16,
    pmt_pid: u16,
    continuity_counter: u8,
) {
    out.fill(STUFFING_BYTE);
    // Header: sync, PUSI + PID 0, payload only + counter; then pointer_field.
    out[..5].copy_from_slice(&[SYNC_BYTE, 0x40, 0x00, 0x10 | (continuity_counter & 0x0F), 0]);
    let section = &mut out[5..5 + SECTION_PREFIX_BYTES + SINGLE_PAT_SECTION_LENGTH];
    let [tsid_high, tsid_low] = transport_stream_id.to_be_bytes();
    let [program_high, program_low] = program_number.to_be_bytes();
    let [pid_high, pid_low] = (pmt_pid & 0x1FFF).to_be_bytes();
    let crc_at = section.len() - CRC_BYTES;
    section[..crc_at].copy_from_slice(&[
        TABLE_PAT,
        // Syntax indicator, '0', reserved bits, then the length's top bits.
        0xB0,
        SINGLE_PAT_SECTION_LENGTH as u8,
        tsid_high,
        tsid_low,
        // Reserved bits, version, current_next_indicator.
        0xC0 | ((version & 0x1F) << 1) | 0x01,
        0, // section_number
        0, // last_section_number
        program_high,
        program_low,
        0xE0 | pid_high,
        pid_low,
    ]);
    let crc = crc32_mpeg2(&section[..crc_at]);
    section[crc_at..].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ts::Packet;
    extern crate std;
    use std::vec::Vec;

    /// Builds a long-form section: header fields, `body`, then the CRC.
    fn section(table_id: u8, extension: u16, version: u8, body: &[u8]) -> Vec<u8> {
        let length = 5 + body.len() + CRC_BYTES;
        let mut bytes = Vec::from([
            table_id,
            0xB0 | (length >> 8) as u8,
            length as u8,
            (extension >> 8) as u8,
            extension as u8,
            0xC1 | (version << 1),
            0,
            0,
        ]);
        bytes.extend_from_slice(body);
        let crc = crc32_mpeg2(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn pat(programs: &[(u16, u16)]) -> Vec<u8> {
        let body: Vec<u8> = programs
            .iter()
            .flat_map(|&(program, pid)| {
                let [a, b] = program.to_be_bytes();
                let [c, d] = pid.to_be_bytes();
                [a, b, 0xE0 | c, d]
            })
            .collect();
        section(TABLE_PAT, 0x0001, 3, &body)
    }

    /// PMT of program 1: PCR on 0x100, H.264 on 0x100 with one descriptor,
    /// AAC on 0x101 with a language descriptor.
    fn pmt() -> Vec<u8> {
        let body = [
            0xE1, 0x00, // PCR PID
            0xF0, 0x03, 0x05, 0x01, 0xAB, // program_info: one descriptor
            0x1B, 0xE1, 0x00, 0xF0, 0x00, // H.264, no descriptors
            0x0F, 0xE1, 0x01, 0xF0, 0x06, // AAC, 6 bytes of descriptors
            0x0A, 0x04, b'e', b'n', b'g', 0x00,
        ];
        section(TABLE_PMT, 1, 7, &body)
    }

    fn sdt(services: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::from([0x00, 0x01, 0xFF]); // original_network_id
        for &(service_id, name) in services {
            let provider = b"ringcast";
            let descriptor_length = 3 + provider.len() + name.len();
            let loop_length = 2 + descriptor_length;
            body.extend_from_slice(&service_id.to_be_bytes());
            body.push(0xFC);
            body.extend_from_slice(&[0x80 | (loop_length >> 8) as u8, loop_length as u8]);
            body.extend_from_slice(&[DESCRIPTOR_SERVICE, descriptor_length as u8, 0x01]);
            body.push(provider.len() as u8);
            body.extend_from_slice(provider);
            body.push(name.len() as u8);
            body.extend_from_slice(name);
        }
        section(TABLE_SDT_ACTUAL, 0x0001, 0, &body)
    }

    /// Splits the section bytes `data` (pointer fields included by the
    /// caller) into packet payloads of at most 184 bytes.
    fn payloads(data: &[u8]) -> Vec<Vec<u8>> {
        data.chunks(184).map(Vec::from).collect()
    }

    fn collect(
        assembler: &mut SectionAssembler,
        packets: &[(bool, bool, Vec<u8>)],
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (unit_start, continuity_ok, payload) in packets {
            assembler.push(*unit_start, *continuity_ok, payload, &mut |s: &[u8]| {
                out.push(Vec::from(s))
            });
        }
        out
    }

    #[test]
    fn crc_known_vectors() {
        // The CRC-32/MPEG-2 check value.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        assert_eq!(crc32_mpeg2(&[]), 0xFFFF_FFFF);
        // A real PAT section (ffmpeg, program 1 on PID 0x1000), CRC included.
        let pat = [
            0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00, 0x2A, 0xB1,
            0x04, 0xB2,
        ];
        assert_eq!(crc32_mpeg2(&pat), 0);
        assert_eq!(crc32_mpeg2(&pat[..12]), 0x2AB1_04B2);
    }

    #[test]
    fn single_program_pat_round_trips() {
        let mut packet = [0u8; PACKET_BYTES];
        write_single_program_pat(&mut packet, 1, 0, 1, 0x1000, 5);
        let view = Packet::new_checked(&packet[..]).unwrap();
        assert_eq!(view.pid(), PAT_PID);
        assert!(view.payload_unit_start());
        assert_eq!(view.continuity_counter(), 5);
        // The same bytes as ffmpeg's PAT for program 1 on PID 0x1000.
        assert_eq!(
            &packet[5..21],
            &[
                0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00, 0x2A, 0xB1,
                0x04, 0xB2
            ]
        );
        assert!(packet[21..].iter().all(|&b| b == 0xFF));

        let mut assembler = SectionAssembler::new();
        let mut sections = 0;
        write_single_program_pat(&mut packet, 0x1234, 9, 0x0042, 0x0200, 0);
        let view = Packet::new_checked(&packet[..]).unwrap();
        assembler.push(true, true, view.payload(), &mut |s: &[u8]| {
            sections += 1;
            let header = section_header(s).unwrap();
            assert_eq!(header.table_id, TABLE_PAT);
            assert_eq!(header.table_id_extension, 0x1234);
            assert_eq!(header.version, 9);
            assert!(header.current_next);
            assert_eq!((header.section_number, header.last_section_number), (0, 0));
            assert!(pat_entries(s).eq([(0x0042, 0x0200)]));
        });
        assert_eq!(sections, 1);
        assert_eq!(assembler.crc_errors(), 0);
    }

    #[test]
    fn pat_lists_every_program_including_the_network_pid() {
        let bytes = pat(&[(0, 0x0010), (1, 0x1000), (2, 0x1001)]);
        assert!(pat_entries(&bytes).eq([(0, 0x10), (1, 0x1000), (2, 0x1001)]));
        // Not a PAT, cut short, or short-form: nothing.
        assert_eq!(pat_entries(&pmt()).count(), 0);
        assert_eq!(pat_entries(&bytes[..bytes.len() - 1]).count(), 0);
        let mut short_form = bytes.clone();
        short_form[1] &= 0x7F;
        assert_eq!(pat_entries(&short_form).count(), 0);
        assert_eq!(section_header(&short_form), None);
    }

    #[test]
    fn pmt_round_trip() {
        let bytes = pmt();
        let pmt = parse_pmt(&bytes).unwrap();
        assert_eq!(pmt.program_number, 1);
        assert_eq!(pmt.pcr_pid, 0x100);
        assert_eq!(pmt.version, 7);
        assert!(pmt.current_next);
        assert!(descriptors(pmt.program_descriptors).eq([(0x05, &[0xAB][..])]));
        let streams: Vec<_> = pmt.streams().collect();
        assert_eq!(streams.len(), 2);
        assert_eq!((streams[0].stream_type, streams[0].pid), (0x1B, 0x100));
        assert!(streams[0].descriptors.is_empty());
        assert_eq!((streams[1].stream_type, streams[1].pid), (0x0F, 0x101));
        assert!(descriptors(streams[1].descriptors).eq([(0x0A, &b"eng\0"[..])]));
        assert!(parse_pmt(&pat(&[(1, 0x100)])).is_none());
    }

    #[test]
    fn pmt_with_lengths_past_the_section() {
        // program_info_length larger than the body.
        let bad = section(TABLE_PMT, 1, 0, &[0xE1, 0x00, 0xF0, 0x09, 0x05, 0x00]);
        assert!(parse_pmt(&bad).is_none());
        // The second ES entry claims more descriptor bytes than remain.
        let body = [
            0xE1, 0x00, 0xF0, 0x00, 0x02, 0xE1, 0x00, 0xF0, 0x00, 0x03, 0xE1, 0x01, 0xF0, 0x10,
            0x0A,
        ];
        let cut = section(TABLE_PMT, 1, 0, &body);
        let pmt = parse_pmt(&cut).unwrap();
        assert_eq!(pmt.streams().count(), 1);
        // A descriptor loop that runs out mid-descriptor.
        assert_eq!(
            descriptors(&[0x0A, 0x02, 0x01, 0x48, 0x48, 0x09, 0x00]).count(),
            1
        );
    }

    #[test]
    fn sdt_names_with_and_without_character_table() {
        let bytes = sdt(&[
            (1, b"Plain"),
            (2, b"\x15UTF-8 \xC3\xA9"),
            (3, b"\x10\x00\x05Latin"),
            (4, b"\x1F\x01x"),
            (5, b""),
        ]);
        let services: Vec<_> = sdt_services(&bytes).collect();
        assert_eq!(
            services,
            [
                (1, &b"Plain"[..]),
                (2, &b"UTF-8 \xC3\xA9"[..]),
                (3, &b"Latin"[..]),
                (4, &b"x"[..]),
                (5, &b""[..]),
            ]
        );
        assert_eq!(sdt_services(&pat(&[])).count(), 0);
    }

    #[test]
    fn sdt_skips_services_without_a_service_descriptor() {
        let mut body = Vec::from([0x00, 0x01, 0xFF]);
        // Service 7: only a private descriptor.
        body.extend_from_slice(&[0x00, 0x07, 0xFC, 0x80, 0x03, 0x5F, 0x01, 0x00]);
        // Service 8: a service descriptor after another one.
        body.extend_from_slice(&[0x00, 0x08, 0xFC, 0x80, 0x0A, 0x5F, 0x01, 0x00]);
        body.extend_from_slice(&[DESCRIPTOR_SERVICE, 0x05, 0x01, 0x00, 0x02, b'O', b'K']);
        // Service 9: its loop runs past the section.
        body.extend_from_slice(&[0x00, 0x09, 0xFC, 0x80, 0x40, 0x48]);
        let bytes = section(TABLE_SDT_ACTUAL, 1, 0, &body);
        assert!(sdt_services(&bytes).eq([(8, &b"OK"[..])]));
    }

    #[test]
    fn section_spanning_two_packets() {
        // A PMT with enough streams to need two packets.
        let mut body = Vec::from([0xE1, 0x00, 0xF0, 0x00]);
        for i in 0..40u8 {
            body.extend_from_slice(&[0x06, 0xE1, i, 0xF0, 0x00]);
        }
        let bytes = section(TABLE_PMT, 1, 0, &body);
        assert!(bytes.len() > 184 && bytes.len() < 2 * 184);
        let mut data = Vec::from([0]);
        data.extend_from_slice(&bytes);
        data.resize(2 * 184, 0xFF);
        let packets: Vec<_> = payloads(&data)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (i == 0, true, p))
            .collect();
        let mut assembler = SectionAssembler::new();
        let out = collect(&mut assembler, &packets);
        assert_eq!(out, [bytes]);
        assert_eq!(parse_pmt(&out[0]).unwrap().streams().count(), 40);
    }

    #[test]
    fn two_sections_in_one_packet_then_stuffing() {
        let first = pat(&[(1, 0x100)]);
        let second = sdt(&[(1, b"A")]);
        let mut data = Vec::from([0]);
        data.extend_from_slice(&first);
        data.extend_from_slice(&second);
        data.resize(184, 0xFF);
        let mut assembler = SectionAssembler::new();
        let out = collect(&mut assembler, &[(true, true, data)]);
        assert_eq!(out, [first, second]);
        // Stuffing stops collection until the next unit start.
        let out = collect(&mut assembler, &[(false, true, pat(&[(2, 0x200)]))]);
        assert!(out.is_empty());
    }

    #[test]
    fn pointer_field_skips_the_tail_of_a_section_joined_late() {
        let old = sdt(&[(1, b"Old service name, long enough")]);
        let new = pat(&[(1, 0x100)]);
        let tail = &old[old.len() - 20..];
        let mut data = Vec::from([tail.len() as u8]);
        data.extend_from_slice(tail);
        data.extend_from_slice(&new);
        data.resize(184, 0xFF);
        // Joined mid-table: the tail before the pointer is not a section.
        let mut assembler = SectionAssembler::new();
        let out = collect(&mut assembler, &[(true, true, data.clone())]);
        assert_eq!(out, core::slice::from_ref(&new));
        assert_eq!(assembler.crc_errors(), 0);

        // Having seen the start, the tail completes the old section first.
        let mut start = Vec::from([0]);
        start.extend_from_slice(&old[..old.len() - 20]);
        let mut assembler = SectionAssembler::new();
        let out = collect(&mut assembler, &[(true, true, start), (true, true, data)]);
        assert_eq!(out, [old, new]);
    }

    #[test]
    fn lost_packet_drops_the_partial_section() {
        let mut body = Vec::from([0xE1, 0x00, 0xF0, 0x00]);
        for i in 0..70u8 {
            body.extend_from_slice(&[0x06, 0xE1, i, 0xF0, 0x00]);
        }
        let big = section(TABLE_PMT, 1, 0, &body);
        let mut data = Vec::from([0]);
        data.extend_from_slice(&big);
        data.resize(2 * 184 + 100, 0xFF);
        let parts = payloads(&data);
        assert_eq!(parts.len(), 3);
        let next = pat(&[(1, 0x100)]);
        let mut next_data = Vec::from([0]);
        next_data.extend_from_slice(&next);

        // The middle packet is lost: the third is flagged by the caller.
        let mut assembler = SectionAssembler::new();
        let out = collect(
            &mut assembler,
            &[
                (true, true, parts[0].clone()),
                (false, false, parts[2].clone()),
                (true, true, next_data.clone()),
            ],
        );
        assert_eq!(out, core::slice::from_ref(&next));
        assert_eq!(assembler.partials_dropped(), 1);
        assert_eq!(assembler.crc_errors(), 0);

        // A gap reported on a unit start still lets the new section in.
        let mut assembler = SectionAssembler::new();
        let out = collect(
            &mut assembler,
            &[(true, true, parts[0].clone()), (true, false, next_data)],
        );
        assert_eq!(out, [next]);
        assert_eq!(assembler.partials_dropped(), 1);
    }

    #[test]
    fn bad_crc_and_bad_lengths_are_counted() {
        let mut bytes = pat(&[(1, 0x100)]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let mut data = Vec::from([0]);
        data.extend_from_slice(&bytes);
        let mut assembler = SectionAssembler::new();
        assert!(collect(&mut assembler, &[(true, true, data)]).is_empty());
        assert_eq!(assembler.crc_errors(), 1);

        // section_length 0xFFF: more than any PSI section may hold.
        let huge = Vec::from([0, 0x02, 0xBF, 0xFF, 0x00, 0x01]);
        assert!(collect(&mut assembler, &[(true, true, huge)]).is_empty());
        assert_eq!(assembler.crc_errors(), 2);

        // Long form with a section_length too small for its header.
        let tiny = Vec::from([0, 0x02, 0xB0, 0x02, 0x00, 0x01]);
        assert!(collect(&mut assembler, &[(true, true, tiny)]).is_empty());
        assert_eq!(assembler.crc_errors(), 3);
    }

    #[test]
    fn short_form_sections_pass_without_a_crc() {
        // A stuffing-table-like private section: syntax indicator 0.
        let short = Vec::from([0x72, 0x70, 0x03, 1, 2, 3]);
        let mut data = Vec::from([0]);
        data.extend_from_slice(&short);
        let mut assembler = SectionAssembler::new();
        assert_eq!(collect(&mut assembler, &[(true, true, data)]), [short]);
    }

    #[test]
    fn continuation_without_a_start_and_bad_pointers_are_ignored() {
        let bytes = pat(&[(1, 0x100)]);
        let mut assembler = SectionAssembler::new();
        assert!(collect(&mut assembler, &[(false, true, bytes.clone())]).is_empty());
        assert!(collect(&mut assembler, &[(true, true, Vec::new())]).is_empty());
        let mut data = Vec::from([200]);
        data.extend_from_slice(&bytes);
        assert!(collect(&mut assembler, &[(true, true, data)]).is_empty());
        assert_eq!(assembler.crc_errors(), 0);
        // Still in working order afterwards.
        let mut data = Vec::from([0]);
        data.extend_from_slice(&bytes);
        assert_eq!(collect(&mut assembler, &[(true, true, data)]), [bytes]);
    }

    #[test]
    fn largest_section_fits_and_one_more_byte_does_not() {
        for (length, fits) in [(SECTION_LENGTH_MAX, true), (SECTION_LENGTH_MAX + 1, false)] {
            // A private long-form section of exactly `length`.
            let body = std::vec![0x5Au8; length - 9];
            let bytes = section(0x80, 1, 0, &body);
            assert_eq!(bytes.len(), 3 + length);
            let mut data = Vec::from([0]);
            data.extend_from_slice(&bytes);
            let packets: Vec<_> = payloads(&data)
                .into_iter()
                .enumerate()
                .map(|(i, p)| (i == 0, true, p))
                .collect();
            let mut assembler = SectionAssembler::new();
            let out = collect(&mut assembler, &packets);
            assert_eq!(out.len(), usize::from(fits), "length {length}");
            assert_eq!(assembler.crc_errors(), u64::from(!fits));
        }
    }
}
