//! PSI reassembly and the PAT, PMT and SDT parsers on arbitrary bytes: the
//! input is cut into 188-byte packets whose payloads feed a section
//! assembler (a real TS header is used when there is one, otherwise the
//! header bytes pick unit start and continuity), and every parser runs on
//! every section that comes out and on the raw input. Nothing may panic,
//! sections must be whole and CRC-checked, iterators must stay within what
//! their bytes can hold, and the PAT emitter must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::wire::psi::{
    crc32_mpeg2, descriptors, parse_pmt, pat_entries, sdt_services, section_header,
    write_single_program_pat, SectionAssembler, SECTION_BYTES_MAX,
};
use ringcast::wire::ts::{Packet, PACKET_BYTES};

/// Runs every parser on `bytes` and checks the iterators' bounds.
fn parse_all(bytes: &[u8]) {
    let _ = section_header(bytes);
    assert!(pat_entries(bytes).count() <= bytes.len() / 4);
    if let Some(pmt) = parse_pmt(bytes) {
        assert!(pmt.program_descriptors.len() <= bytes.len());
        assert!(descriptors(pmt.program_descriptors).count() <= bytes.len() / 2);
        let mut streams = 0;
        for stream in pmt.streams() {
            streams += 1;
            assert!(descriptors(stream.descriptors).count() <= bytes.len() / 2);
        }
        assert!(streams <= bytes.len() / 5);
    }
    let mut services = 0;
    for (_, name) in sdt_services(bytes) {
        services += 1;
        assert!(name.len() <= bytes.len());
    }
    assert!(services <= bytes.len() / 5);
    assert!(descriptors(bytes).count() <= bytes.len() / 2);
}

fn check_section(section: &[u8]) {
    assert!(section.len() >= 3 && section.len() <= SECTION_BYTES_MAX);
    let length = usize::from(u16::from_be_bytes([section[1], section[2]]) & 0x0FFF);
    assert_eq!(section.len(), 3 + length);
    if section[1] & 0x80 != 0 {
        assert_eq!(crc32_mpeg2(section), 0);
        assert!(section_header(section).is_some());
    }
    parse_all(section);
}

fuzz_target!(|data: &[u8]| {
    parse_all(data);

    let mut assembler = SectionAssembler::new();
    let mut last_counter: Option<u8> = None;
    let mut sections = 0u64;
    for chunk in data.chunks(PACKET_BYTES) {
        let (unit_start, continuity_ok, payload) = match Packet::new_checked(chunk) {
            Ok(packet) => {
                let counter = packet.continuity_counter();
                let ok = last_counter.is_none_or(|last| (last + 1) & 0x0F == counter);
                last_counter = Some(counter);
                // The payload is the end of the packet; borrow it from the chunk.
                let payload = &chunk[PACKET_BYTES - packet.payload().len()..];
                (packet.payload_unit_start(), ok, payload)
            }
            Err(_) => {
                let flags = chunk[0];
                let payload = chunk.get(1..).unwrap_or(&[]);
                (flags & 0x01 != 0, flags & 0x02 != 0, payload)
            }
        };
        assembler.push(
            unit_start,
            continuity_ok,
            payload,
            &mut |section: &[u8]| {
                sections += 1;
                check_section(section);
            },
        );
    }
    let _ = (
        sections,
        assembler.crc_errors(),
        assembler.partials_dropped(),
    );

    // The emitter, with parameters from the input, reads back whole.
    if let [a, b, c, d, e, f, g, h, ..] = *data {
        let mut packet = [0u8; PACKET_BYTES];
        let tsid = u16::from_be_bytes([a, b]);
        let program = u16::from_be_bytes([d, e]);
        let pid = u16::from_be_bytes([f, g]) & 0x1FFF;
        write_single_program_pat(&mut packet, tsid, c, program, pid, h);
        let view = Packet::new_checked(&packet[..]).expect("emitted packet is valid");
        let mut found = 0;
        SectionAssembler::new().push(true, true, view.payload(), &mut |section: &[u8]| {
            found += 1;
            let header = section_header(section).expect("emitted header");
            assert_eq!(header.table_id_extension, tsid);
            assert_eq!(header.version, c & 0x1F);
            assert!(pat_entries(section).eq([(program, pid)]));
        });
        assert_eq!(found, 1);
    }
});
