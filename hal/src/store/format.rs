//! The store's bytes on flash, as pure functions: the CRC, the copy header,
//! page framing, the postcard encoding of one record, and the older format 1
//! that is only read (to migrate it). The layout itself is described in the
//! `store` module's documentation; nothing here touches a flash.

use core::ops::Range;

use serde::{Serialize, Serializer};

/// The first four bytes of every copy, in every format version.
pub(crate) const MAGIC: [u8; 4] = *b"rcST";
/// Magic, version and the version's complement: the part of a header every
/// format version keeps, so an older ringcast can recognise a newer store.
pub(crate) const PREAMBLE_BYTES: usize = 8;
/// Bytes of a format-2 copy header.
pub(crate) const HEADER_BYTES: usize = 32;
/// First byte of every page of a copy after its first: never the first byte
/// of [`MAGIC`], so record bytes can never pass for a copy header.
pub(crate) const PAGE_MARK: u8 = 0x00;
/// What an erased flash byte reads as.
pub(crate) const ERASED: u8 = 0xFF;
/// Longest postcard varint of a `u64`.
const VARINT_U64_BYTES_MAX: usize = 10;
/// Bytes of the CRC that follows each record.
const RECORD_CRC_BYTES: usize = 4;

/// Field ranges of a format-2 header (little-endian integers).
mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: Range<usize> = 4..6;
    pub const VERSION_CHECK: Range<usize> = 6..8;
    pub const SEQUENCE: Range<usize> = 8..16;
    pub const PAYLOAD_BYTES: Range<usize> = 16..20;
    pub const RECORDS: Range<usize> = 20..22;
    pub const RESERVED: Range<usize> = 22..24;
    pub const PAYLOAD_CRC: Range<usize> = 24..28;
    pub const HEADER_CRC: Range<usize> = 28..32;
}

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut register = index as u32;
        let mut bit = 0;
        while bit < 8 {
            let mask = (register & 1).wrapping_neg();
            register = (register >> 1) ^ (0xEDB8_8320 & mask);
            bit += 1;
        }
        table[index] = register;
        index += 1;
    }
    table
}

const CRC32_TABLE: [u32; 256] = crc32_table();

/// The CRC-32 of `bytes` (IEEE 802.3, reflected, as zlib and Ethernet use).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_update(0xFFFF_FFFF, bytes) ^ 0xFFFF_FFFF
}

/// Feeds `bytes` into a running CRC-32 register (before the final inversion).
pub(crate) fn crc32_update(mut register: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        let index = usize::from((register as u8) ^ byte);
        register = (register >> 8) ^ CRC32_TABLE[index];
    }
    register
}

fn u16_at(bytes: &[u8], range: Range<usize>) -> u16 {
    let mut raw = [0u8; 2];
    raw.copy_from_slice(&bytes[range]);
    u16::from_le_bytes(raw)
}

fn u32_at(bytes: &[u8], range: Range<usize>) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[range]);
    u32::from_le_bytes(raw)
}

fn u64_at(bytes: &[u8], range: Range<usize>) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[range]);
    u64::from_le_bytes(raw)
}

/// The format version of the copy starting at `bytes`, if they start with an
/// intact preamble (magic, version, and the version's bitwise complement).
pub(crate) fn preamble_version(bytes: &[u8]) -> Option<u16> {
    let preamble = bytes.get(..PREAMBLE_BYTES)?;
    if preamble[field::MAGIC] != MAGIC {
        return None;
    }
    let version = u16_at(preamble, field::VERSION);
    let check = u16_at(preamble, field::VERSION_CHECK);
    (check == !version).then_some(version)
}

/// A format-2 copy header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Which commit wrote the copy; the highest valid one wins. Never 0.
    pub sequence: u64,
    /// Bytes of the records, page marks not counted.
    pub payload_bytes: u32,
    /// Records in the payload.
    pub records: u16,
    /// CRC-32 of the payload.
    pub payload_crc: u32,
}

impl Header {
    /// The header's bytes, its own CRC last.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[field::MAGIC].copy_from_slice(&MAGIC);
        bytes[field::VERSION].copy_from_slice(&super::FORMAT_VERSION.to_le_bytes());
        bytes[field::VERSION_CHECK].copy_from_slice(&(!super::FORMAT_VERSION).to_le_bytes());
        bytes[field::SEQUENCE].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[field::PAYLOAD_BYTES].copy_from_slice(&self.payload_bytes.to_le_bytes());
        bytes[field::RECORDS].copy_from_slice(&self.records.to_le_bytes());
        bytes[field::PAYLOAD_CRC].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32(&bytes[..field::HEADER_CRC.start]);
        bytes[field::HEADER_CRC].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Reads a format-2 header: preamble, header CRC, reserved bytes zero,
    /// sequence non-zero. Anything else is not a header.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes = bytes.get(..HEADER_BYTES)?;
        if preamble_version(bytes)? != super::FORMAT_VERSION {
            return None;
        }
        let crc = u32_at(bytes, field::HEADER_CRC);
        if crc != crc32(&bytes[..field::HEADER_CRC.start]) || u16_at(bytes, field::RESERVED) != 0 {
            return None;
        }
        let header = Self {
            sequence: u64_at(bytes, field::SEQUENCE),
            payload_bytes: u32_at(bytes, field::PAYLOAD_BYTES),
            records: u16_at(bytes, field::RECORDS),
            payload_crc: u32_at(bytes, field::PAYLOAD_CRC),
        };
        (header.sequence != 0).then_some(header)
    }
}

/// Payload bytes the first page of a copy carries, after the header.
fn first_page_payload_bytes(page_bytes: usize) -> usize {
    page_bytes - HEADER_BYTES
}

/// Logical offset (header included, page marks not) of the payload that
/// page `page` (1 or more) of a copy carries.
fn page_payload_start(page: usize, page_bytes: usize) -> usize {
    page_bytes + (page - 1) * (page_bytes - 1)
}

/// Pages a copy with `payload_bytes` of records takes, header included.
/// `page_bytes` must exceed [`HEADER_BYTES`].
pub(crate) fn pages_for_payload(payload_bytes: usize, page_bytes: usize) -> usize {
    match payload_bytes.checked_sub(first_page_payload_bytes(page_bytes)) {
        None | Some(0) => 1,
        Some(rest) => 1 + rest.div_ceil(page_bytes - 1),
    }
}

/// Spreads the payload at `image[HEADER_BYTES..][..payload_bytes]` over
/// pages: every page after the first starts with [`PAGE_MARK`]. Fills the
/// rest of the last page with [`ERASED`] and returns the number of pages.
/// The header bytes are left alone.
pub(crate) fn frame(image: &mut [u8], payload_bytes: usize, page_bytes: usize) -> usize {
    let pages = pages_for_payload(payload_bytes, page_bytes);
    assert!(
        image.len() >= pages * page_bytes,
        "the image buffer holds a whole copy"
    );
    let end = HEADER_BYTES + payload_bytes;
    let mut framed_end = end;
    // Last page first: each page's bytes move right by its index, past the
    // bytes of every page before it.
    for page in (1..pages).rev() {
        let source = page_payload_start(page, page_bytes);
        let length = (end - source).min(page_bytes - 1);
        let target = page * page_bytes + 1;
        image.copy_within(source..source + length, target);
        image[target - 1] = PAGE_MARK;
        if page == pages - 1 {
            framed_end = target + length;
        }
    }
    image[framed_end..pages * page_bytes].fill(ERASED);
    pages
}

/// Undoes [`frame`] on a copy of `pages` pages read from flash: afterwards
/// the payload is at `image[HEADER_BYTES..][..payload_bytes]`. False if a
/// page mark is missing.
pub(crate) fn unframe(image: &mut [u8], payload_bytes: usize, page_bytes: usize) -> bool {
    let pages = pages_for_payload(payload_bytes, page_bytes);
    assert!(
        image.len() >= pages * page_bytes,
        "the image buffer holds a whole copy"
    );
    let end = HEADER_BYTES + payload_bytes;
    // First page first: each page's bytes move left by its index, over
    // bytes already moved.
    for page in 1..pages {
        let source = page * page_bytes + 1;
        if image[source - 1] != PAGE_MARK {
            return false;
        }
        let target = page_payload_start(page, page_bytes);
        let length = (end - target).min(page_bytes - 1);
        image.copy_within(source..source + length, target);
    }
    true
}

/// True for a valid record name: 1 to `NAME_BYTES_MAX` printable ASCII
/// characters, no space.
pub(crate) fn is_valid_name(name: &[u8]) -> bool {
    (1..=super::NAME_BYTES_MAX).contains(&name.len())
        && name.iter().all(|byte| (0x21..=0x7E).contains(byte))
}

/// Bytes of the postcard varint of `value`.
fn varint_bytes(value: usize) -> usize {
    let bits = (usize::BITS - value.leading_zeros()).max(1);
    bits.div_ceil(7) as usize
}

/// The most bytes one encoded record takes, its CRC included.
pub(crate) fn record_bytes_max(value_bytes_max: usize) -> usize {
    varint_bytes(super::NAME_BYTES_MAX)
        + super::NAME_BYTES_MAX
        + VARINT_U64_BYTES_MAX
        + varint_bytes(value_bytes_max)
        + value_bytes_max
        + RECORD_CRC_BYTES
}

/// Serialises a byte slice as postcard bytes (length, then the bytes).
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// One record as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    pub name: &'a str,
    /// Sequence of the commit that last changed the value.
    pub changed: u64,
    pub value: &'a [u8],
}

/// Encodes `record` at the start of `out`: postcard of `(name, changed,
/// value)`, then the CRC-32 of those bytes (LE). Returns the bytes used, or
/// None if `out` is too short.
pub(crate) fn encode_record(out: &mut [u8], record: RecordRef<'_>) -> Option<usize> {
    let fields = (record.name, record.changed, Bytes(record.value));
    let used = postcard::to_slice(&fields, out).ok()?.len();
    let crc = crc32(&out[..used]);
    out.get_mut(used..used + RECORD_CRC_BYTES)?
        .copy_from_slice(&crc.to_le_bytes());
    Some(used + RECORD_CRC_BYTES)
}

/// Decodes the record at the start of `input`, checking its CRC. Returns it
/// and the bytes it took. Limits are the caller's to check.
pub(crate) fn decode_record(input: &[u8]) -> Option<(RecordRef<'_>, usize)> {
    let (fields, rest) = postcard::take_from_bytes::<(&str, u64, &[u8])>(input).ok()?;
    let used = input.len() - rest.len();
    let stored = rest.get(..RECORD_CRC_BYTES)?;
    if u32_at(stored, 0..RECORD_CRC_BYTES) != crc32(&input[..used]) {
        return None;
    }
    let (name, changed, value) = fields;
    let record = RecordRef {
        name,
        changed,
        value,
    };
    Some((record, used + RECORD_CRC_BYTES))
}

/// Format version 1, which ringcast only reads, to migrate it. See the
/// `store` module's documentation for its layout.
pub(crate) mod v1 {
    use super::{crc32_update, preamble_version, u16_at, u32_at};
    use crate::FlashGeometry;

    pub const VERSION: u16 = 1;
    /// Preamble, sequence (u32), payload length (u32), CRC (u32).
    pub const HEADER_BYTES: usize = 20;
    const CRC_AT: usize = 16;

    /// A format-1 bank header.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Header {
        pub sequence: u32,
        pub payload_bytes: u32,
        crc: u32,
    }

    /// Reads a format-1 header (its CRC covers the payload too; see [`check`]).
    pub fn decode_header(bytes: &[u8]) -> Option<Header> {
        let bytes = bytes.get(..HEADER_BYTES)?;
        if preamble_version(bytes)? != VERSION {
            return None;
        }
        Some(Header {
            sequence: u32_at(bytes, 8..12),
            payload_bytes: u32_at(bytes, 12..16),
            crc: u32_at(bytes, CRC_AT..HEADER_BYTES),
        })
    }

    /// True if `copy` (header then payload) carries a matching CRC.
    pub fn check(copy: &[u8], header: &Header) -> bool {
        let Some(payload) = copy.get(HEADER_BYTES..HEADER_BYTES + header.payload_bytes as usize)
        else {
            return false;
        };
        let register = crc32_update(crc32_update(0xFFFF_FFFF, &copy[..CRC_AT]), payload);
        register ^ 0xFFFF_FFFF == header.crc
    }

    /// Bytes of one bank: half the region's blocks.
    pub fn bank_bytes(geometry: FlashGeometry) -> u32 {
        (geometry.blocks / 2).saturating_mul(geometry.block_bytes)
    }

    /// Where banks A and B start.
    pub fn bank_offsets(geometry: FlashGeometry) -> [u32; 2] {
        [0, bank_bytes(geometry)]
    }

    /// Walks the records of a format-1 payload, handing each name and value
    /// to `each` (which returns false to reject it). False if the payload is
    /// malformed, has bytes left over, or a record was rejected.
    pub fn decode_records(payload: &[u8], mut each: impl FnMut(&[u8], &[u8]) -> bool) -> bool {
        let Some((&count, mut rest)) = payload.split_first() else {
            return false;
        };
        for _ in 0..count {
            let Some((&name_bytes, after)) = rest.split_first() else {
                return false;
            };
            let Some((name, after)) = after.split_at_checked(usize::from(name_bytes)) else {
                return false;
            };
            let Some((length, after)) = after.split_at_checked(2) else {
                return false;
            };
            let value_bytes = usize::from(u16_at(length, 0..2));
            let Some((value, after)) = after.split_at_checked(value_bytes) else {
                return false;
            };
            if !each(name, value) {
                return false;
            }
            rest = after;
        }
        rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = Header {
            sequence: 7,
            payload_bytes: 1000,
            records: 3,
            payload_crc: 0xDEAD_BEEF,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[..4], b"rcST");
        assert_eq!(preamble_version(&bytes), Some(super::super::FORMAT_VERSION));
        assert_eq!(Header::decode(&bytes), Some(header));
        for bit in 0..HEADER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Header::decode(&flipped), None, "bit {bit}");
        }
        let zero = Header {
            sequence: 0,
            ..header
        };
        assert_eq!(Header::decode(&zero.encode()), None);
    }

    #[test]
    fn framing_round_trips_for_every_length() {
        let page_bytes = 64;
        let mut image = [0u8; 64 * 8];
        for payload_bytes in 0..300 {
            let pages = pages_for_payload(payload_bytes, page_bytes);
            if pages * page_bytes > image.len() {
                break;
            }
            for (index, byte) in image[HEADER_BYTES..][..payload_bytes]
                .iter_mut()
                .enumerate()
            {
                *byte = (index % 251) as u8 + 1;
            }
            assert_eq!(frame(&mut image, payload_bytes, page_bytes), pages);
            for page in 1..pages {
                assert_eq!(image[page * page_bytes], PAGE_MARK);
            }
            assert!(unframe(&mut image, payload_bytes, page_bytes));
            for (index, &byte) in image[HEADER_BYTES..][..payload_bytes].iter().enumerate() {
                assert_eq!(byte, (index % 251) as u8 + 1, "length {payload_bytes}");
            }
        }
        assert_eq!(pages_for_payload(32, 64), 1);
        assert_eq!(pages_for_payload(33, 64), 2);
        assert_eq!(pages_for_payload(32 + 63, 64), 2);
        assert_eq!(pages_for_payload(32 + 64, 64), 3);
    }

    #[test]
    fn record_round_trips_and_its_crc_is_checked() {
        let record = RecordRef {
            name: "node_id",
            changed: 300,
            value: &[1, 2, 3, 0xFF],
        };
        let mut out = [0u8; 64];
        let used = encode_record(&mut out, record).expect("fits");
        assert_eq!(&out[..8], b"\x07node_id");
        assert_eq!(decode_record(&out[..used]), Some((record, used)));
        out[9] ^= 0x40;
        assert_eq!(decode_record(&out[..used]), None);
        assert_eq!(encode_record(&mut out[..used - 1], record), None);
    }

    #[test]
    fn record_bytes_max_bounds_the_largest_record() {
        let value = [0xAB; 300];
        let mut out = [0u8; 400];
        let record = RecordRef {
            name: "sixteen_chars_ab",
            changed: u64::MAX,
            value: &value,
        };
        assert_eq!(encode_record(&mut out, record), Some(record_bytes_max(300)));
        assert_eq!(varint_bytes(0), 1);
        assert_eq!(varint_bytes(127), 1);
        assert_eq!(varint_bytes(128), 2);
    }

    #[test]
    fn names_are_short_printable_ascii() {
        assert!(is_valid_name(b"peer_cache"));
        assert!(is_valid_name(b"sixteen_chars_ab"));
        assert!(!is_valid_name(b"seventeen_chars_a"));
        assert!(!is_valid_name(b""));
        assert!(!is_valid_name(b"with space"));
        assert!(!is_valid_name("née".as_bytes()));
    }
}
