//! Video elementary streams at the start of a PES packet: which codec a PMT
//! stream_type names, and a [`KeyframeScan`] that decides whether the access
//! unit a PES packet starts is a random-access picture, so a new reader can be
//! started on it (DESIGN.md §5, "the most recent keyframe").
//!
//! The PES header is ISO/IEC 13818-1 §2.4.3.6. The codecs are read only as
//! far as their start codes and a few header bits: H.264 NAL unit types and
//! slice_type (ITU-T H.264 §7.3.1, §7.3.3, §7.4.1.2.3 on emulation
//! prevention), HEVC NAL unit types (ITU-T H.265 §7.3.1.2, table 7-1), and
//! MPEG-2 sequence and picture headers (ISO/IEC 13818-2 §6.2.2, §6.2.3).
//!
//! The scan is fed the payloads of consecutive transport packets of the video
//! PID as they arrive, so start codes and headers may straddle pushes. It
//! keeps a few bytes of fixed state, never allocates, and gives up with
//! [`Verdict::Unknown`] on a malformed PES header or after
//! [`SCAN_BYTES_MAX`] elementary stream bytes without a decision.

use crate::wire::psi;

/// Elementary stream bytes the scan reads before it answers
/// [`Verdict::Unknown`]; enough for the parameter sets and SEI that precede
/// the first slice in broadcast streams.
pub const SCAN_BYTES_MAX: usize = 4096;

/// Video codecs whose keyframes the relay can find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// MPEG-1 or MPEG-2 video (ISO/IEC 11172-2, 13818-2).
    Mpeg2,
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    Hevc,
}

/// What a [`KeyframeScan`] found out about an access unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A picture a decoder can start from (IDR, IRAP, or an I picture after
    /// parameter sets).
    Keyframe,
    /// A picture that depends on earlier ones.
    NotKeyframe,
    /// No decision yet: push the next payload of this PES packet.
    NeedMore,
    /// The bytes do not tell (malformed PES header, nothing decisive within
    /// [`SCAN_BYTES_MAX`]); callers fall back on the random_access_indicator.
    Unknown,
}

/// Registration descriptor (§2.6.8), which may name HEVC on a private
/// stream_type.
const DESCRIPTOR_REGISTRATION: u8 = 0x05;

/// The video codec a PMT stream entry carries, from its stream_type (table
/// 2-34) or, for other types, a registration descriptor saying "HEVC".
/// `None` for audio, data and video the relay does not parse.
pub fn video_codec(stream_type: u8, descriptors: &[u8]) -> Option<VideoCodec> {
    match stream_type {
        0x01 | 0x02 => Some(VideoCodec::Mpeg2),
        0x1B => Some(VideoCodec::H264),
        0x24 => Some(VideoCodec::Hevc),
        _ => psi::descriptors(descriptors)
            .any(|(tag, body)| tag == DESCRIPTOR_REGISTRATION && body.starts_with(b"HEVC"))
            .then_some(VideoCodec::Hevc),
    }
}

/// Bytes of the PES header up to and including PES_header_data_length.
const PES_FIXED_HEADER_BYTES: usize = 9;

/// RBSP bytes of an H.264 slice header kept to read first_mb_in_slice and
/// slice_type: two Exp-Golomb codes of at most 35 and 7 bits.
const SLICE_HEADER_BYTES: usize = 8;

/// Bytes after the MPEG-2 picture start code that hold picture_coding_type.
const PICTURE_HEADER_BYTES: usize = 2;

/// Room for the longest of the byte runs collected above.
const FIELD_BYTES_MAX: usize = PES_FIXED_HEADER_BYTES;
const _: () = assert!(SLICE_HEADER_BYTES <= FIELD_BYTES_MAX);
const _: () = assert!(PICTURE_HEADER_BYTES <= FIELD_BYTES_MAX);

/// Where the scan is within the PES packet.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// Collecting the fixed part of the PES header.
    PesHeader,
    /// Skipping this many bytes of optional PES header fields.
    SkipHeader(usize),
    /// Reading elementary stream bytes.
    Elementary,
    /// Decided; later pushes return the same verdict.
    Done(Verdict),
}

/// What the bytes after the last start code are being collected for.
#[derive(Clone, Copy, Debug)]
enum Field {
    /// Nothing: looking for the next start code.
    Idle,
    /// The next byte is the NAL unit header or the MPEG-2 start code value.
    StartCodeValue,
    /// The start of an H.264 non-IDR slice header (RBSP bytes).
    SliceHeader,
    /// The start of an MPEG-2 picture header.
    PictureHeader,
}

/// Decides whether one PES packet starts a keyframe, from the payloads of the
/// transport packets that carry its beginning.
#[derive(Clone, Debug)]
pub struct KeyframeScan {
    codec: VideoCodec,
    stage: Stage,
    /// The fixed PES header while in [`Stage::PesHeader`], then the header
    /// bytes being collected for a [`Field`].
    bytes: [u8; FIELD_BYTES_MAX],
    bytes_len: usize,
    field: Field,
    /// Consecutive 0x00 bytes just read (capped), to find start codes and
    /// emulation prevention bytes across pushes.
    zeros: u8,
    /// An H.264 SPS or an MPEG-2 sequence header came earlier in this PES.
    sequence_seen: bool,
    scanned_bytes: usize,
}

impl KeyframeScan {
    /// A scan for `codec` that expects the PES header next.
    pub const fn new(codec: VideoCodec) -> Self {
        KeyframeScan {
            codec,
            stage: Stage::PesHeader,
            bytes: [0; FIELD_BYTES_MAX],
            bytes_len: 0,
            field: Field::Idle,
            zeros: 0,
            sequence_seen: false,
            scanned_bytes: 0,
        }
    }

    /// Starts over for the next PES packet of the same stream.
    pub fn reset(&mut self) {
        *self = Self::new(self.codec);
    }

    /// The codec this scan reads.
    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Feeds the payload of the next transport packet of this PES packet; the
    /// first one (payload_unit_start set) begins with the PES header. Returns
    /// [`Verdict::NeedMore`] until a decision, then that decision on every
    /// later push.
    pub fn push(&mut self, payload: &[u8]) -> Verdict {
        let mut rest = payload;
        loop {
            match self.stage {
                Stage::Done(verdict) => return verdict,
                Stage::PesHeader => rest = self.read_pes_header(rest),
                Stage::SkipHeader(remaining) => {
                    let skipped = remaining.min(rest.len());
                    rest = &rest[skipped..];
                    self.stage = match remaining - skipped {
                        0 => Stage::Elementary,
                        left => Stage::SkipHeader(left),
                    };
                }
                Stage::Elementary => {
                    let verdict = self.scan_elementary(rest);
                    if verdict != Verdict::NeedMore {
                        self.stage = Stage::Done(verdict);
                    }
                    return verdict;
                }
            }
            if rest.is_empty() {
                if let Stage::Done(verdict) = self.stage {
                    return verdict;
                }
                return Verdict::NeedMore;
            }
        }
    }

    /// Collects the fixed PES header; once whole, checks it and moves on to
    /// skipping the optional fields. Returns the bytes not consumed.
    fn read_pes_header<'p>(&mut self, payload: &'p [u8]) -> &'p [u8] {
        let taken = (PES_FIXED_HEADER_BYTES - self.bytes_len).min(payload.len());
        self.bytes[self.bytes_len..self.bytes_len + taken].copy_from_slice(&payload[..taken]);
        self.bytes_len += taken;
        if self.bytes_len == PES_FIXED_HEADER_BYTES {
            let header = &self.bytes[..PES_FIXED_HEADER_BYTES];
            self.stage = match pes_header_data_length(header) {
                Some(0) => Stage::Elementary,
                Some(length) => Stage::SkipHeader(length),
                None => Stage::Done(Verdict::Unknown),
            };
            self.bytes_len = 0;
        }
        &payload[taken..]
    }

    /// Reads elementary stream bytes until a decision or the scan limit.
    fn scan_elementary(&mut self, bytes: &[u8]) -> Verdict {
        for &byte in bytes {
            if self.scanned_bytes == SCAN_BYTES_MAX {
                return Verdict::Unknown;
            }
            self.scanned_bytes += 1;
            if let Some(verdict) = self.step(byte) {
                return verdict;
            }
        }
        if self.scanned_bytes == SCAN_BYTES_MAX {
            return Verdict::Unknown;
        }
        Verdict::NeedMore
    }

    /// One elementary stream byte: start code detection first, then whatever
    /// the bytes after the last start code are collected for.
    fn step(&mut self, byte: u8) -> Option<Verdict> {
        let zeros_before = self.zeros;
        self.zeros = if byte == 0 {
            (self.zeros + 1).min(3)
        } else {
            0
        };
        if zeros_before >= 2 && byte == 0x01 {
            // A start code: a header being collected ended too early.
            let verdict = match self.field {
                Field::SliceHeader | Field::PictureHeader => Some(Verdict::Unknown),
                Field::Idle | Field::StartCodeValue => None,
            };
            self.field = Field::StartCodeValue;
            return verdict;
        }
        match self.field {
            Field::Idle => None,
            Field::StartCodeValue => self.start_code_value(byte),
            Field::SliceHeader => {
                if zeros_before >= 2 && byte == 0x03 {
                    // emulation_prevention_three_byte: not part of the RBSP.
                    return None;
                }
                self.collect(byte);
                match self.read_slice_type() {
                    Some(slice_type) => Some(self.decide_slice(slice_type)),
                    None if self.bytes_len == SLICE_HEADER_BYTES => Some(Verdict::Unknown),
                    None => None,
                }
            }
            Field::PictureHeader => {
                self.collect(byte);
                (self.bytes_len == PICTURE_HEADER_BYTES).then(|| self.decide_picture())
            }
        }
    }

    fn collect(&mut self, byte: u8) {
        self.bytes[self.bytes_len] = byte;
        self.bytes_len += 1;
    }

    /// Starts collecting bytes for `field`.
    fn begin(&mut self, field: Field) -> Option<Verdict> {
        self.field = field;
        self.bytes_len = 0;
        None
    }

    /// The byte after a start code: a NAL unit header or an MPEG-2 start code
    /// value.
    fn start_code_value(&mut self, byte: u8) -> Option<Verdict> {
        match self.codec {
            VideoCodec::H264 => self.h264_nal(byte & 0x1F),
            VideoCodec::Hevc => hevc_nal((byte >> 1) & 0x3F).or_else(|| self.begin(Field::Idle)),
            VideoCodec::Mpeg2 => self.mpeg2_start_code(byte),
        }
    }

    fn h264_nal(&mut self, nal_unit_type: u8) -> Option<Verdict> {
        match nal_unit_type {
            // Coded slice of an IDR picture.
            5 => Some(Verdict::Keyframe),
            // Coded slice of a non-IDR picture: an I slice may still start a
            // stream that uses recovery points instead of IDRs.
            1 => self.begin(Field::SliceHeader),
            // Slice data partitions A, B, C: never intra-only pictures here.
            2..=4 => Some(Verdict::NotKeyframe),
            7 => {
                self.sequence_seen = true;
                self.begin(Field::Idle)
            }
            _ => self.begin(Field::Idle),
        }
    }

    fn mpeg2_start_code(&mut self, value: u8) -> Option<Verdict> {
        match value {
            0xB3 => {
                self.sequence_seen = true;
                self.begin(Field::Idle)
            }
            0x00 => self.begin(Field::PictureHeader),
            // A slice before any picture header: the PES starts mid-picture.
            0x01..=0xAF => Some(Verdict::NotKeyframe),
            _ => self.begin(Field::Idle),
        }
    }

    /// slice_type from the slice header RBSP collected so far, or `None`
    /// while the bytes do not yet hold it. Both fields before it are
    /// Exp-Golomb codes, so a code read whole from a prefix stays the same
    /// when more bytes arrive.
    fn read_slice_type(&self) -> Option<u32> {
        let mut reader = BitReader::new(&self.bytes[..self.bytes_len]);
        reader.read_ue()?; // first_mb_in_slice
        reader.read_ue()
    }

    /// An I or SI slice (slice_type 2, 4, 7 or 9) after an SPS is a place to
    /// start; other slices are not; larger values are not slice types.
    fn decide_slice(&self, slice_type: u32) -> Verdict {
        match slice_type {
            0..=9 if self.sequence_seen && matches!(slice_type % 5, 2 | 4) => Verdict::Keyframe,
            0..=9 => Verdict::NotKeyframe,
            _ => Verdict::Unknown,
        }
    }

    /// Reads picture_coding_type from the collected picture header.
    fn decide_picture(&self) -> Verdict {
        match (self.bytes[1] >> 3) & 0x07 {
            1 if self.sequence_seen => Verdict::Keyframe,
            1..=4 => Verdict::NotKeyframe,
            // Forbidden or reserved coding types.
            _ => Verdict::Unknown,
        }
    }
}

/// The HEVC verdict for a NAL unit type, or `None` to read on (parameter
/// sets, SEI, access unit delimiters and reserved types).
fn hevc_nal(nal_unit_type: u8) -> Option<Verdict> {
    match nal_unit_type {
        // BLA, IDR, CRA and the reserved IRAP types.
        16..=23 => Some(Verdict::Keyframe),
        // Trailing, leading, TSA and STSA pictures and reserved non-IRAP VCL.
        0..=15 => Some(Verdict::NotKeyframe),
        _ => None,
    }
}

/// PES_header_data_length of a fixed PES header, or `None` when the bytes
/// are not a PES header with the optional fields of a video stream.
fn pes_header_data_length(header: &[u8]) -> Option<usize> {
    if header[..3] != [0x00, 0x00, 0x01] {
        return None;
    }
    let stream_id = header[3];
    // program_stream_map, padding, private_stream_2, ECM, EMM, DSMCC,
    // H.222.1 type E and the directory carry no optional header (§2.4.3.7).
    if matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    ) {
        return None;
    }
    // The optional header starts with the bits '10'.
    if header[6] & 0xC0 != 0x80 {
        return None;
    }
    Some(usize::from(header[8]))
}

/// Reads bits most significant first from a few bytes.
struct BitReader<'a> {
    bytes: &'a [u8],
    position_bits: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            position_bits: 0,
        }
    }

    fn read_bit(&mut self) -> Option<u32> {
        let byte = *self.bytes.get(self.position_bits / 8)?;
        let bit = (byte >> (7 - self.position_bits % 8)) & 1;
        self.position_bits += 1;
        Some(u32::from(bit))
    }

    /// An unsigned Exp-Golomb code, ue(v) (H.264 §9.1); `None` when the bytes
    /// run out or the code is longer than 32 bits.
    fn read_ue(&mut self) -> Option<u32> {
        let mut leading_zeros = 0;
        while self.read_bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return None;
            }
        }
        let mut suffix = 0u32;
        for _ in 0..leading_zeros {
            suffix = (suffix << 1) | self.read_bit()?;
        }
        Some((1u32 << leading_zeros) - 1 + suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    /// A PES header for video stream 0xE0 with a PTS (5 bytes of optional
    /// fields), then `es`.
    fn pes(es: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::from([0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1]);
        bytes.extend_from_slice(es);
        bytes
    }

    /// Pushes `bytes` in pieces of `step` and returns the verdicts.
    fn scan(codec: VideoCodec, bytes: &[u8], step: usize) -> Vec<Verdict> {
        let mut scan = KeyframeScan::new(codec);
        bytes.chunks(step).map(|piece| scan.push(piece)).collect()
    }

    /// The verdict for `bytes` pushed whole, after checking that every split
    /// into pieces ends with the same one and never changes a decision.
    fn verdict(codec: VideoCodec, bytes: &[u8]) -> Verdict {
        let whole = *scan(codec, bytes, bytes.len()).last().unwrap();
        for step in 1..=bytes.len().min(200) {
            let verdicts = scan(codec, bytes, step);
            assert_eq!(*verdicts.last().unwrap(), whole, "step {step}");
            // Once decided, a verdict never changes.
            let first = verdicts.iter().position(|&v| v != Verdict::NeedMore);
            if let Some(first) = first {
                assert!(verdicts[first..].iter().all(|&v| v == whole), "step {step}");
            }
        }
        whole
    }

    const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];
    const SPS: [u8; 9] = [0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1F, 0xAC];
    const PPS: [u8; 7] = [0, 0, 1, 0x68, 0xEE, 0x3C, 0x80];

    /// An H.264 non-IDR slice NAL with first_mb_in_slice 0 and `slice_type`
    /// (both ue(v)), then filler bits.
    fn h264_slice(slice_type: u8) -> Vec<u8> {
        // '1' for first_mb 0, then ue(slice_type) written by hand below 15.
        let code = u32::from(slice_type) + 1;
        let bits = 32 - code.leading_zeros();
        let length = 2 * bits - 1; // leading zeros + code
        let value = (1u32 << 31) | (code << (31 - length)) | (1 << (31 - length - 1));
        let mut nal = Vec::from([0, 0, 1, 0x21]);
        nal.extend_from_slice(&value.to_be_bytes());
        nal.extend_from_slice(&[0x9A, 0x55]);
        nal
    }

    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn codec_from_stream_type_and_registration() {
        assert_eq!(video_codec(0x02, &[]), Some(VideoCodec::Mpeg2));
        assert_eq!(video_codec(0x01, &[]), Some(VideoCodec::Mpeg2));
        assert_eq!(video_codec(0x1B, &[]), Some(VideoCodec::H264));
        assert_eq!(video_codec(0x24, &[]), Some(VideoCodec::Hevc));
        assert_eq!(video_codec(0x0F, &[]), None);
        assert_eq!(
            video_codec(
                0x06,
                &[0x0A, 0x01, 0x00, 0x05, 0x04, b'H', b'E', b'V', b'C']
            ),
            Some(VideoCodec::Hevc)
        );
        assert_eq!(
            video_codec(0x06, &[0x05, 0x04, b'A', b'C', b'-', b'3']),
            None
        );
        assert_eq!(video_codec(0x06, &[0x05, 0x09, b'H', b'E']), None);
    }

    #[test]
    fn h264_idr_after_parameter_sets() {
        let idr = [0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33];
        let bytes = pes(&concat(&[&AUD, &SPS, &PPS, &idr]));
        assert_eq!(verdict(VideoCodec::H264, &bytes), Verdict::Keyframe);
    }

    #[test]
    fn h264_slice_types() {
        for slice_type in 0..=9u8 {
            let slice = h264_slice(slice_type);
            let intra = matches!(slice_type % 5, 2 | 4);
            let with_sps = pes(&concat(&[&AUD, &SPS, &PPS, &slice]));
            let expected = if intra {
                Verdict::Keyframe
            } else {
                Verdict::NotKeyframe
            };
            assert_eq!(
                verdict(VideoCodec::H264, &with_sps),
                expected,
                "{slice_type}"
            );
            // An I slice without an SPS before it is no place to start.
            let without_sps = pes(&concat(&[&AUD, &slice]));
            assert_eq!(
                verdict(VideoCodec::H264, &without_sps),
                Verdict::NotKeyframe,
                "{slice_type}"
            );
        }
        // Data partition A.
        let partition = pes(&concat(&[&AUD, &[0, 0, 1, 0x02, 0xFF]]));
        assert_eq!(verdict(VideoCodec::H264, &partition), Verdict::NotKeyframe);
    }

    #[test]
    fn h264_slice_header_through_emulation_prevention() {
        // first_mb_in_slice with 23 leading zero bits and a zero suffix
        // (2^23 - 1), then slice_type 2 ('011') and a stop bit. The RBSP
        // 00 00 01 00 00 00 E0 is escaped twice on the wire.
        let rbsp = [0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xE0];
        let escaped = [0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x00, 0xE0];
        let mut reader = BitReader::new(&rbsp);
        assert_eq!(reader.read_ue(), Some((1 << 23) - 1));
        assert_eq!(reader.read_ue(), Some(2));
        let slice = concat(&[&[0, 0, 1, 0x41], &escaped]);
        let bytes = pes(&concat(&[&SPS, &PPS, &slice]));
        assert_eq!(verdict(VideoCodec::H264, &bytes), Verdict::Keyframe);
        // Read with the escapes left in, the same bytes say nonsense.
        let mut reader = BitReader::new(&escaped);
        assert_eq!(
            reader.read_ue(),
            Some((1 << 22) - 1 + (1 << 21) + (1 << 13))
        );
        assert_eq!(reader.read_ue(), Some(767));
    }

    #[test]
    fn h264_large_sei_before_the_idr() {
        // An SEI NAL of 600 bytes with no zero pairs, then the IDR.
        let mut sei = Vec::from([0, 0, 1, 0x06, 0x05]);
        sei.extend((0..600).map(|i| (i % 250) as u8 + 2));
        let idr = [0, 0, 1, 0x65, 0x88];
        let bytes = pes(&concat(&[&AUD, &SPS, &PPS, &sei, &idr]));
        // Pushed as transport packet payloads of 184 bytes.
        let verdicts = scan(VideoCodec::H264, &bytes, 184);
        assert!(verdicts.len() >= 4);
        assert!(verdicts[..verdicts.len() - 1]
            .iter()
            .all(|&v| v == Verdict::NeedMore));
        assert_eq!(*verdicts.last().unwrap(), Verdict::Keyframe);
        assert_eq!(verdict(VideoCodec::H264, &bytes), Verdict::Keyframe);
    }

    #[test]
    fn start_code_straddling_two_pushes() {
        let es = concat(&[&AUD, &[0, 0, 1, 0x65, 0x88]]);
        let bytes = pes(&es);
        let idr_at = bytes.len() - 5;
        for cut in idr_at..=idr_at + 3 {
            let mut scan = KeyframeScan::new(VideoCodec::H264);
            assert_eq!(scan.push(&bytes[..cut]), Verdict::NeedMore, "cut {cut}");
            assert_eq!(scan.push(&bytes[cut..]), Verdict::Keyframe, "cut {cut}");
        }
    }

    #[test]
    fn slice_type_read_from_the_first_bytes_or_not_at_all() {
        // One RBSP byte is enough: '1' (first_mb 0) '011' (slice_type 2).
        let bytes = pes(&concat(&[&SPS, &[0, 0, 1, 0x01, 0xB0, 0, 0, 0, 1, 0x09]]));
        assert_eq!(verdict(VideoCodec::H264, &bytes), Verdict::Keyframe);
        // Cut so short that slice_type cannot be read.
        let bytes = pes(&concat(&[&SPS, &[0, 0, 1, 0x01, 0x80, 0, 0, 1, 0x09]]));
        assert_eq!(verdict(VideoCodec::H264, &bytes), Verdict::Unknown);
    }

    #[test]
    fn hevc_nal_types() {
        let vps = [0, 0, 0, 1, 0x40, 0x01, 0x0C];
        let sps = [0, 0, 1, 0x42, 0x01, 0x01];
        let pps = [0, 0, 1, 0x44, 0x01, 0xC1];
        let sei = [0, 0, 1, 0x4E, 0x01, 0x05, 0x10];
        let aud = [0, 0, 1, 0x46, 0x01, 0x50];
        for (header, expected) in [
            (0x26u8, Verdict::Keyframe),  // IDR_W_RADL (19)
            (0x28, Verdict::Keyframe),    // IDR_N_LP (20)
            (0x2A, Verdict::Keyframe),    // CRA (21)
            (0x20, Verdict::Keyframe),    // BLA_W_LP (16)
            (0x02, Verdict::NotKeyframe), // TRAIL_R (1)
            (0x00, Verdict::NotKeyframe), // TRAIL_N (0)
            (0x12, Verdict::NotKeyframe), // RASL_R (9)
        ] {
            let nal = [0, 0, 1, header, 0x01, 0xAF];
            let bytes = pes(&concat(&[&aud, &vps, &sps, &pps, &sei, &nal]));
            assert_eq!(verdict(VideoCodec::Hevc, &bytes), expected, "{header:#x}");
        }
    }

    #[test]
    fn mpeg2_pictures() {
        let sequence = [0, 0, 1, 0xB3, 0x0A, 0x00, 0x78, 0x13];
        let gop = [0, 0, 1, 0xB8, 0x00, 0x08, 0x00, 0x40];
        // temporal_reference 0, picture_coding_type in bits 5..3 of byte 2.
        let picture = |coding_type: u8| [0, 0, 1, 0x00, 0x00, (coding_type << 3) | 0x07, 0xFF];
        let with_sequence = pes(&concat(&[&sequence, &gop, &picture(1)]));
        assert_eq!(
            verdict(VideoCodec::Mpeg2, &with_sequence),
            Verdict::Keyframe
        );
        let without = pes(&concat(&[&gop, &picture(1)]));
        assert_eq!(verdict(VideoCodec::Mpeg2, &without), Verdict::NotKeyframe);
        for coding_type in [2, 3] {
            let bytes = pes(&concat(&[&sequence, &picture(coding_type)]));
            assert_eq!(verdict(VideoCodec::Mpeg2, &bytes), Verdict::NotKeyframe);
        }
        let forbidden = pes(&concat(&[&sequence, &picture(0)]));
        assert_eq!(verdict(VideoCodec::Mpeg2, &forbidden), Verdict::Unknown);
        // A slice start code before any picture header.
        let slice = pes(&[0, 0, 1, 0x01, 0x12, 0x34]);
        assert_eq!(verdict(VideoCodec::Mpeg2, &slice), Verdict::NotKeyframe);
    }

    #[test]
    fn pes_header_straddling_and_malformed() {
        let bytes = pes(&[0, 0, 1, 0x65, 0x88]);
        // Every split before the NAL header, including inside the header.
        for cut in 1..bytes.len() - 1 {
            let mut scan = KeyframeScan::new(VideoCodec::H264);
            assert_eq!(scan.push(&bytes[..cut]), Verdict::NeedMore, "cut {cut}");
            assert_eq!(scan.push(&bytes[cut..]), Verdict::Keyframe, "cut {cut}");
            assert_eq!(scan.push(&[0x00]), Verdict::Keyframe);
        }
        let mut not_pes = bytes.clone();
        not_pes[2] = 0x02;
        assert_eq!(verdict(VideoCodec::H264, &not_pes), Verdict::Unknown);
        let mut padding = bytes.clone();
        padding[3] = 0xBE;
        assert_eq!(verdict(VideoCodec::H264, &padding), Verdict::Unknown);
        let mut mpeg1_syntax = bytes.clone();
        mpeg1_syntax[6] = 0x0F;
        assert_eq!(verdict(VideoCodec::H264, &mpeg1_syntax), Verdict::Unknown);
        // A header_data_length that swallows everything: more is needed.
        let mut long = bytes;
        long[8] = 0xFF;
        assert_eq!(verdict(VideoCodec::H264, &long), Verdict::NeedMore);
    }

    #[test]
    fn gives_up_after_the_scan_limit() {
        let mut filler = Vec::from(SPS);
        filler.resize(SCAN_BYTES_MAX, 0x55);
        let bytes = pes(&filler);
        let mut scan = KeyframeScan::new(VideoCodec::H264);
        assert_eq!(scan.push(&bytes[..bytes.len() - 1]), Verdict::NeedMore);
        assert_eq!(scan.push(&bytes[bytes.len() - 1..]), Verdict::Unknown);
        assert_eq!(scan.push(&[0, 0, 1, 0x65]), Verdict::Unknown);
        // The same bytes just below the limit, then an IDR past it.
        let mut scan = KeyframeScan::new(VideoCodec::H264);
        assert_eq!(scan.push(&bytes[..bytes.len() - 3]), Verdict::NeedMore);
        assert_eq!(scan.push(&[0, 0, 1, 0x65, 0x88]), Verdict::Unknown);
        // One byte earlier the IDR's NAL header is the last byte read.
        let mut scan = KeyframeScan::new(VideoCodec::H264);
        assert_eq!(scan.push(&bytes[..bytes.len() - 4]), Verdict::NeedMore);
        assert_eq!(scan.push(&[0, 0, 1, 0x65, 0x88]), Verdict::Keyframe);
        scan.reset();
        assert_eq!(scan.codec(), VideoCodec::H264);
        assert_eq!(scan.push(&pes(&[0, 0, 1, 0x65])), Verdict::Keyframe);
    }
}
