//! RTP data packets (RFC 3550 §5.1): a read-only view that finds the payload
//! behind the fixed header, the CSRC list, a header extension (§5.3.1) and
//! padding, and a [`Repr`] that emits the plain 12-byte header the relay
//! sends. MPEG-TS over RTP uses static payload type 33, "MP2T", with a
//! 90 kHz timestamp (RFC 3551 §6, RFC 2250 §2).
//!
//! IPTV multicast often arrives RTP-wrapped; the relay strips the header and
//! keeps the TS payload. [`Packet::new_checked`] is the one door for those
//! untrusted datagrams: after it, every accessor is in bounds.

use core::fmt;

use crate::wire::Full;

/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 12;

/// The only RTP version in use.
pub const VERSION: u8 = 2;

/// Static payload type of MPEG-2 transport streams (RFC 3551 table 5).
pub const PAYLOAD_TYPE_MP2T: u8 = 33;

/// Clock rate of the MP2T timestamp.
pub const MP2T_CLOCK_HZ: u32 = 90_000;

const CSRC_BYTES: usize = 4;
const EXTENSION_HEADER_BYTES: usize = 4;

/// Why a datagram is not an RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the fixed header plus its CSRC list.
    Truncated,
    /// The version field is not 2.
    Version,
    /// The padding count is zero or larger than the payload.
    Padding,
    /// The header extension runs past the end of the packet.
    ExtensionTruncated,
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RtpError::Truncated => "RTP packet shorter than its header",
            RtpError::Version => "RTP version is not 2",
            RtpError::Padding => "RTP padding count is zero or too large",
            RtpError::ExtensionTruncated => "RTP header extension runs past the packet",
        })
    }
}

/// A read-only view of one RTP packet.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks; accessors may panic on bad bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking version, lengths and padding.
    pub fn new_checked(buffer: T) -> Result<Self, RtpError> {
        let packet = Packet { buffer };
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), RtpError> {
        let bytes = self.buffer.as_ref();
        if bytes.is_empty() {
            return Err(RtpError::Truncated);
        }
        if self.version() != VERSION {
            return Err(RtpError::Version);
        }
        let csrc_end = HEADER_BYTES + CSRC_BYTES * usize::from(self.csrc_count());
        if bytes.len() < csrc_end {
            return Err(RtpError::Truncated);
        }
        if self.extension() {
            let words = bytes.get(csrc_end + 2..csrc_end + 4);
            let words = words.ok_or(RtpError::ExtensionTruncated)?;
            let length =
                EXTENSION_HEADER_BYTES + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
            if bytes.len() < csrc_end + length {
                return Err(RtpError::ExtensionTruncated);
            }
        }
        if self.padding() {
            let count = usize::from(bytes[bytes.len() - 1]);
            if count == 0 || count > bytes.len() - self.header_len() {
                return Err(RtpError::Padding);
            }
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.bytes()[0] >> 6
    }

    /// The packet ends with padding whose length is its last byte.
    pub fn padding(&self) -> bool {
        self.bytes()[0] & 0x20 != 0
    }

    /// A header extension follows the CSRC list.
    pub fn extension(&self) -> bool {
        self.bytes()[0] & 0x10 != 0
    }

    /// Number of contributing sources listed after the fixed header.
    pub fn csrc_count(&self) -> u8 {
        self.bytes()[0] & 0x0F
    }

    pub fn marker(&self) -> bool {
        self.bytes()[1] & 0x80 != 0
    }

    pub fn payload_type(&self) -> u8 {
        self.bytes()[1] & 0x7F
    }

    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.bytes()[2], self.bytes()[3]])
    }

    pub fn timestamp(&self) -> u32 {
        let b = self.bytes();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    pub fn ssrc(&self) -> u32 {
        let b = self.bytes();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }

    /// The CSRC at `index` (< `csrc_count()`).
    pub fn csrc(&self, index: usize) -> u32 {
        assert!(index < usize::from(self.csrc_count()));
        let at = HEADER_BYTES + CSRC_BYTES * index;
        let b = &self.bytes()[at..at + CSRC_BYTES];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Bytes before the payload: fixed header, CSRCs and extension.
    pub fn header_len(&self) -> usize {
        let csrc_end = HEADER_BYTES + CSRC_BYTES * usize::from(self.csrc_count());
        if !self.extension() {
            return csrc_end;
        }
        let b = self.bytes();
        let words = u16::from_be_bytes([b[csrc_end + 2], b[csrc_end + 3]]);
        csrc_end + EXTENSION_HEADER_BYTES + 4 * usize::from(words)
    }

    /// Bytes of padding at the end of the packet.
    pub fn padding_len(&self) -> usize {
        if self.padding() {
            usize::from(self.bytes()[self.bytes().len() - 1])
        } else {
            0
        }
    }

    /// The payload, without header, extension or padding.
    pub fn payload(&self) -> &[u8] {
        let bytes = self.bytes();
        &bytes[self.header_len()..bytes.len() - self.padding_len()]
    }
}

/// The fields of a plain RTP header (no CSRCs, extension or padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub marker: bool,
    /// 7-bit payload type, e.g. [`PAYLOAD_TYPE_MP2T`].
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl Repr {
    /// The header fields of a checked packet (CSRCs and extension dropped).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Repr {
        Repr {
            marker: packet.marker(),
            payload_type: packet.payload_type(),
            sequence_number: packet.sequence_number(),
            timestamp: packet.timestamp(),
            ssrc: packet.ssrc(),
        }
    }

    /// Bytes this header takes.
    pub const fn header_len(&self) -> usize {
        HEADER_BYTES
    }

    /// Writes the header and `payload` to the start of `buffer`; returns the
    /// packet length, or `Err(Full)` (nothing written) if it does not fit.
    pub fn emit(&self, buffer: &mut [u8], payload: &[u8]) -> Result<usize, Full> {
        assert!(self.payload_type < 0x80, "RTP payload type is 7 bits");
        let length = HEADER_BYTES.checked_add(payload.len()).ok_or(Full)?;
        let packet = buffer.get_mut(..length).ok_or(Full)?;
        packet[0] = VERSION << 6;
        packet[1] = (u8::from(self.marker) << 7) | self.payload_type;
        packet[2..4].copy_from_slice(&self.sequence_number.to_be_bytes());
        packet[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        packet[HEADER_BYTES..].copy_from_slice(payload);
        Ok(length)
    }
}

/// Writes the plain 12-byte header of an MPEG-TS packet (version 2, payload
/// type [`PAYLOAD_TYPE_MP2T`], marker 0, no padding, extension or CSRCs) to
/// the start of `out`, for a payload the caller puts right behind it. Returns
/// the header length, or `None` (nothing written) if `out` is too short.
pub fn write_header(out: &mut [u8], sequence: u16, timestamp: u32, ssrc: u32) -> Option<usize> {
    let header = out.get_mut(..HEADER_BYTES)?;
    header[0] = VERSION << 6;
    header[1] = PAYLOAD_TYPE_MP2T;
    header[2..4].copy_from_slice(&sequence.to_be_bytes());
    header[4..8].copy_from_slice(&timestamp.to_be_bytes());
    header[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Some(HEADER_BYTES)
}

/// The 90 kHz MP2T timestamp for a clock in milliseconds, offset by `base`
/// (a random start, RFC 3550 §5.1); it wraps as RTP timestamps do.
pub fn mp2t_timestamp(now_ms: u64, base: u32) -> u32 {
    let ticks = now_ms.wrapping_mul(u64::from(MP2T_CLOCK_HZ / 1000));
    (ticks as u32).wrapping_add(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: [u8; 16] = [
        0x80, 0x21, 0x12, 0x34, // V=2, PT=33, seq 0x1234
        0x00, 0x01, 0xE2, 0x40, // timestamp 123456
        0xDE, 0xAD, 0xBE, 0xEF, // SSRC
        0x47, 0x00, 0x11, 0x10, // payload
    ];

    /// V=2, P, X, CC=2, M, PT=33; two CSRCs; a one-word extension; payload
    /// "abc"; three bytes of padding.
    const FULL: [u8; 34] = [
        0xB2, 0xA1, 0x00, 0x07, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x0A, //
        0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22, // CSRCs
        0xBE, 0xDE, 0x00, 0x01, 0x10, 0xFF, 0x00, 0x00, // extension
        b'a', b'b', b'c', // payload
        0x00, 0x00, 0x03, // padding (the count includes itself)
    ];

    #[test]
    fn parses_plain_golden_packet() {
        let p = Packet::new_checked(&PLAIN[..]).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.marker() && !p.padding() && !p.extension());
        assert_eq!(p.payload_type(), PAYLOAD_TYPE_MP2T);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 123_456);
        assert_eq!(p.ssrc(), 0xDEAD_BEEF);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.payload(), &[0x47, 0x00, 0x11, 0x10]);
    }

    #[test]
    fn parses_csrcs_extension_and_padding() {
        let p = Packet::new_checked(&FULL[..]).unwrap();
        assert!(p.marker() && p.padding() && p.extension());
        assert_eq!(p.payload_type(), PAYLOAD_TYPE_MP2T);
        assert_eq!(p.csrc_count(), 2);
        assert_eq!(p.csrc(0), 0x1111_1111);
        assert_eq!(p.csrc(1), 0x2222_2222);
        assert_eq!(p.sequence_number(), 7);
        assert_eq!(p.timestamp(), 9);
        assert_eq!(p.ssrc(), 10);
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.padding_len(), 3);
        assert_eq!(p.payload(), b"abc");
    }

    #[test]
    fn padding_may_take_the_whole_payload() {
        let mut bytes = [0u8; 14];
        bytes[..12].copy_from_slice(&PLAIN[..12]);
        bytes[0] |= 0x20;
        bytes[13] = 2;
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.payload(), &[] as &[u8]);
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(
            Packet::new_checked(&[][..]).err(),
            Some(RtpError::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&PLAIN[..11]).err(),
            Some(RtpError::Truncated)
        );
        let mut bytes = PLAIN;
        bytes[0] = 0x40;
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(RtpError::Version)
        );
        // A TS packet is not RTP: 0x47 has version 1.
        assert_eq!(
            Packet::new_checked(&[0x47u8; 188][..]).err(),
            Some(RtpError::Version)
        );
        let mut bytes = PLAIN;
        bytes[0] = 0x81; // one CSRC, only 4 bytes after the header: fits
        assert!(Packet::new_checked(&bytes[..]).is_ok());
        bytes[0] = 0x82; // two CSRCs do not fit
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(RtpError::Truncated)
        );
        let mut bytes = PLAIN;
        bytes[0] = 0x90; // extension header of 4 bytes: fits with length 0
        bytes[14] = 0;
        bytes[15] = 0;
        assert!(Packet::new_checked(&bytes[..]).is_ok());
        bytes[15] = 1; // one more word does not fit
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(RtpError::ExtensionTruncated)
        );
        assert_eq!(
            Packet::new_checked(&bytes[..14]).err(),
            Some(RtpError::ExtensionTruncated)
        );
        let mut bytes = PLAIN;
        bytes[0] = 0xA0;
        bytes[15] = 0;
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(RtpError::Padding)
        );
        bytes[15] = 5;
        assert_eq!(
            Packet::new_checked(&bytes[..]).err(),
            Some(RtpError::Padding)
        );
    }

    #[test]
    fn emits_golden_header() {
        let repr = Repr {
            marker: false,
            payload_type: PAYLOAD_TYPE_MP2T,
            sequence_number: 0x1234,
            timestamp: 123_456,
            ssrc: 0xDEAD_BEEF,
        };
        let mut buffer = [0xFFu8; 20];
        assert_eq!(repr.emit(&mut buffer, &PLAIN[12..]), Ok(16));
        assert_eq!(&buffer[..16], &PLAIN[..]);
        assert_eq!(buffer[16], 0xFF);
        let p = Packet::new_checked(&buffer[..16]).unwrap();
        assert_eq!(Repr::parse(&p), repr);

        let marked = Repr {
            marker: true,
            ..repr
        };
        assert_eq!(marked.emit(&mut buffer, &[]), Ok(12));
        assert_eq!(buffer[1], 0xA1);
        assert_eq!(repr.emit(&mut buffer[..15], &PLAIN[12..]), Err(Full));
    }

    #[test]
    fn written_header_matches_the_golden_packet_and_parses_back() {
        let mut buffer = [0xFFu8; 16];
        assert_eq!(
            write_header(&mut buffer, 0x1234, 123_456, 0xDEAD_BEEF),
            Some(12)
        );
        assert_eq!(&buffer[..12], &PLAIN[..12]);
        assert_eq!(&buffer[12..], &[0xFF; 4]);
        buffer[12..].copy_from_slice(&PLAIN[12..]);
        let p = Packet::new_checked(&buffer[..]).unwrap();
        assert_eq!(
            Repr::parse(&p),
            Repr {
                marker: false,
                payload_type: PAYLOAD_TYPE_MP2T,
                sequence_number: 0x1234,
                timestamp: 123_456,
                ssrc: 0xDEAD_BEEF,
            }
        );
        assert_eq!(p.csrc_count(), 0);
        assert!(!p.padding() && !p.extension());
        assert_eq!(p.payload(), &PLAIN[12..]);
    }

    #[test]
    fn written_header_round_trips_extreme_values() {
        for (sequence, timestamp, ssrc) in [(0, 0, 0), (u16::MAX, u32::MAX, u32::MAX)] {
            let mut datagram = [0u8; HEADER_BYTES + 188];
            assert_eq!(
                write_header(&mut datagram, sequence, timestamp, ssrc),
                Some(12)
            );
            datagram[12] = 0x47;
            let p = Packet::new_checked(&datagram[..]).unwrap();
            assert_eq!(p.version(), VERSION);
            assert!(!p.marker());
            assert_eq!(p.payload_type(), PAYLOAD_TYPE_MP2T);
            assert_eq!(p.sequence_number(), sequence);
            assert_eq!(p.timestamp(), timestamp);
            assert_eq!(p.ssrc(), ssrc);
            assert_eq!(p.payload().len(), 188);
            assert_eq!(p.payload()[0], 0x47);
        }
    }

    #[test]
    fn short_buffer_gets_no_header() {
        let mut buffer = [0xFFu8; 11];
        assert_eq!(write_header(&mut buffer, 1, 2, 3), None);
        assert_eq!(buffer, [0xFF; 11]);
    }

    #[test]
    fn timestamp_counts_90_khz_from_a_random_base_and_wraps() {
        assert_eq!(mp2t_timestamp(0, 7), 7);
        assert_eq!(mp2t_timestamp(1000, 7), 90_007);
        assert_eq!(mp2t_timestamp(1, u32::MAX), 89);
        // 2^32 ms are 90 * 2^32 ticks: whole wraps, back where it started.
        let period_ms = 1u64 << 32;
        assert_eq!(mp2t_timestamp(period_ms + 5, 3), mp2t_timestamp(5, 3));
    }
}
