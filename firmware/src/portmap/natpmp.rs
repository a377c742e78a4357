//! NAT-PMP (RFC 6886) client messages: the two requests a relay needs
//! (external address and port map) written into caller buffers, and one
//! borrowing decoder for the gateway's answers. No I/O, no clock, no heap.
//!
//! The gateway listens on UDP [`PORT`] and answers from it. Requests carry
//! version 0 and an opcode; the answer repeats the opcode with the top bit
//! set (the "R bit" of PCP, which grew out of this format), a 16-bit result
//! code and the gateway's seconds since start of epoch (SSSoE).
//!
//! ```text
//! external address request  | 0 | 0 |                               2 bytes
//! map request               | 0 |op | 0 0 |int port|sug. ext|lifetime|   12 bytes
//! external address answer   | 0 |128|result|  SSSoE  | IPv4 addr |     12 bytes
//! map answer                | 0 |128+op|result|SSSoE|int|ext|lifetime| 16 bytes
//! ```
//!
//! Version mix-ups are expected on real networks, since NAT-PMP and PCP
//! share the port: a PCP-only server answers a NAT-PMP request with a
//! PCP-shaped (version 2) error, which [`parse_response`] reports as
//! [`NatPmpError::UnsupportedVersion`]; a NAT-PMP-only server answers a PCP
//! request with the 8-byte "Unsupported Version" answer (version 0, result
//! 1), which `pcp::parse_response` reports. [`is_version_mismatch`] folds
//! the first case into one test.
//!
//! miniupnpd 2.3.1 (observed in the netns test bed) grants NAT-PMP
//! lifetimes as asked (60 s and 100000 s alike: its 120..=86400 s clamp is
//! PCP-only), answers a deletion of nothing with success, lets a NAT-PMP
//! request take over a PCP mapping of the same internal port, and drops a
//! 2-byte request of version 1 without an answer.
//!
//! Server restarts are detected from the SSSoE with the same rule as PCP's
//! epoch: see [`super::pcp::epoch_is_consistent`].

use core::fmt;
use core::net::Ipv4Addr;

/// UDP port of the NAT-PMP (and PCP) server on the gateway.
pub const PORT: u16 = 5351;

/// UDP port the gateway multicasts address-change announcements to
/// (224.0.0.1), for reference; the relay does not listen there.
pub const CLIENT_PORT: u16 = 5350;

/// The only NAT-PMP version.
pub const VERSION: u8 = 0;

/// Bytes of an external address request.
pub const EXTERNAL_ADDRESS_REQUEST_BYTES: usize = 2;

/// Bytes of a map request.
pub const MAP_REQUEST_BYTES: usize = 12;

/// Bytes common to every answer: version, opcode, result code.
pub const RESPONSE_HEADER_BYTES: usize = 4;

/// Bytes of a complete external address answer.
pub const EXTERNAL_ADDRESS_RESPONSE_BYTES: usize = 12;

/// Bytes of a complete map answer.
pub const MAP_RESPONSE_BYTES: usize = 16;

/// Opcode of the external address request.
pub const OPCODE_EXTERNAL_ADDRESS: u8 = 0;

/// Opcode of a UDP map request.
pub const OPCODE_MAP_UDP: u8 = 1;

/// Opcode of a TCP map request.
pub const OPCODE_MAP_TCP: u8 = 2;

/// Set in the opcode of every answer.
pub const OPCODE_RESPONSE_BIT: u8 = 0x80;

/// Result code 0: success. Codes 1..=5 are named in [`result_name`].
pub const RESULT_SUCCESS: u16 = 0;

/// Result code 1: the gateway does not speak the request's version.
pub const RESULT_UNSUPPORTED_VERSION: u16 = 1;

/// Wait after the first transmission (RFC 6886 §3.1); it doubles after
/// every further one.
pub const RETRY_INITIAL_MS: u64 = 250;

/// Transmissions before a client gives up (RFC 6886 §3.1): the last wait is
/// 64 s, about 128 s in all.
pub const ATTEMPTS_MAX: u32 = 9;

/// Transport protocol of a mapping. PCP (`super::pcp`) uses it too, with
/// IANA protocol numbers instead of NAT-PMP opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapProtocol {
    Udp,
    Tcp,
}

impl MapProtocol {
    /// The NAT-PMP map opcode for this protocol.
    pub const fn natpmp_opcode(self) -> u8 {
        match self {
            MapProtocol::Udp => OPCODE_MAP_UDP,
            MapProtocol::Tcp => OPCODE_MAP_TCP,
        }
    }

    /// The protocol of a NAT-PMP map opcode (without the response bit).
    pub const fn from_natpmp_opcode(opcode: u8) -> Option<MapProtocol> {
        match opcode {
            OPCODE_MAP_UDP => Some(MapProtocol::Udp),
            OPCODE_MAP_TCP => Some(MapProtocol::Tcp),
            _ => None,
        }
    }
}

impl fmt::Display for MapProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MapProtocol::Udp => "UDP",
            MapProtocol::Tcp => "TCP",
        })
    }
}

/// A decoded successful answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    ExternalAddress {
        /// Gateway seconds since start of epoch.
        epoch_s: u32,
        address: Ipv4Addr,
    },
    /// A mapping was made, renewed or (lifetime 0) deleted.
    Map {
        epoch_s: u32,
        protocol: MapProtocol,
        internal_port: u16,
        /// The port the gateway chose; may differ from the suggestion.
        external_port: u16,
        /// Granted lifetime; may differ from the request.
        lifetime_s: u32,
    },
}

/// Why a datagram is not a usable NAT-PMP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatPmpError {
    /// Shorter than its header or than the answer its opcode announces.
    Short,
    /// A request (no response bit), e.g. our own datagram looped back.
    NotAResponse,
    /// The version is not 0: a PCP server answered. Switch to PCP.
    UnsupportedVersion,
    /// A response to an opcode this client never sends.
    UnknownOpcode,
    /// The gateway refused: the result code is not 0.
    Failure(u16),
}

impl fmt::Display for NatPmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatPmpError::Short => f.write_str("NAT-PMP answer is truncated"),
            NatPmpError::NotAResponse => f.write_str("NAT-PMP datagram is not a response"),
            NatPmpError::UnsupportedVersion => {
                f.write_str("gateway answered with another version than NAT-PMP (PCP?)")
            }
            NatPmpError::UnknownOpcode => f.write_str("NAT-PMP answer has an unknown opcode"),
            NatPmpError::Failure(code) => match result_name(*code) {
                Some(name) => write!(f, "NAT-PMP result {code}: {name}"),
                None => write!(f, "NAT-PMP result {code}: unknown result code"),
            },
        }
    }
}

/// The RFC 6886 §3.5 name of a non-zero result code.
pub const fn result_name(code: u16) -> Option<&'static str> {
    match code {
        1 => Some("unsupported version"),
        2 => Some("not authorized/refused"),
        3 => Some("network failure"),
        4 => Some("out of resources"),
        5 => Some("unsupported opcode"),
        _ => None,
    }
}

/// Writes the external address request (opcode 0); returns its length, or
/// `None` (nothing written) if `out` is shorter than
/// [`EXTERNAL_ADDRESS_REQUEST_BYTES`].
pub fn write_external_address_request(out: &mut [u8]) -> Option<usize> {
    let request = out.get_mut(..EXTERNAL_ADDRESS_REQUEST_BYTES)?;
    request.copy_from_slice(&[VERSION, OPCODE_EXTERNAL_ADDRESS]);
    Some(EXTERNAL_ADDRESS_REQUEST_BYTES)
}

/// Writes a map request; returns its length, or `None` (nothing written) if
/// `out` is shorter than [`MAP_REQUEST_BYTES`].
///
/// `suggested_external_port` 0 lets the gateway choose. Lifetime 0 with
/// suggested port 0 deletes the mapping of `internal_port` (§3.4); the
/// RFC suggests 7200 s for a new one.
pub fn write_map_request(
    out: &mut [u8],
    protocol: MapProtocol,
    internal_port: u16,
    suggested_external_port: u16,
    lifetime_s: u32,
) -> Option<usize> {
    let request = out.get_mut(..MAP_REQUEST_BYTES)?;
    request[0] = VERSION;
    request[1] = protocol.natpmp_opcode();
    request[2..4].fill(0); // reserved
    request[4..6].copy_from_slice(&internal_port.to_be_bytes());
    request[6..8].copy_from_slice(&suggested_external_port.to_be_bytes());
    request[8..12].copy_from_slice(&lifetime_s.to_be_bytes());
    Some(MAP_REQUEST_BYTES)
}

/// Decodes one datagram received from the gateway's [`PORT`].
///
/// Checks, in order: the version (any but 0 is
/// [`NatPmpError::UnsupportedVersion`]), the result code (any but 0 is
/// [`NatPmpError::Failure`], whatever the opcode, since error answers may
/// be cut short after the epoch and the RFC's "Unsupported Version" answer
/// carries opcode 0), the response bit, the opcode and the length of the
/// announced answer. Bytes after a complete answer are ignored.
pub fn parse_response(datagram: &[u8]) -> Result<Response, NatPmpError> {
    let (&version, rest) = datagram.split_first().ok_or(NatPmpError::Short)?;
    let &opcode = rest.first().ok_or(NatPmpError::Short)?;
    if version != VERSION {
        return Err(NatPmpError::UnsupportedVersion);
    }
    let result = be_u16(datagram, 2).ok_or(NatPmpError::Short)?;
    if result != RESULT_SUCCESS {
        return Err(NatPmpError::Failure(result));
    }
    if opcode & OPCODE_RESPONSE_BIT == 0 {
        return Err(NatPmpError::NotAResponse);
    }
    let epoch_s = be_u32(datagram, 4).ok_or(NatPmpError::Short)?;
    match opcode & !OPCODE_RESPONSE_BIT {
        OPCODE_EXTERNAL_ADDRESS => parse_external_address(datagram, epoch_s),
        op => match MapProtocol::from_natpmp_opcode(op) {
            Some(protocol) => parse_map(datagram, epoch_s, protocol),
            None => Err(NatPmpError::UnknownOpcode),
        },
    }
}

/// True if the answer to a NAT-PMP request says the gateway speaks another
/// version: a PCP server's version-2 error, or (never seen in practice) a
/// version-0 "unsupported version" result. The client should switch to PCP.
pub fn is_version_mismatch(datagram: &[u8]) -> bool {
    matches!(
        parse_response(datagram),
        Err(NatPmpError::UnsupportedVersion)
            | Err(NatPmpError::Failure(RESULT_UNSUPPORTED_VERSION))
    )
}

/// Milliseconds to wait for an answer after transmission number `attempt`
/// (0 for the first): 250 ms doubling, RFC 6886 §3.1. A client stops after
/// [`ATTEMPTS_MAX`] transmissions; later attempts keep the last delay.
pub const fn retry_delay_ms(attempt: u32) -> u64 {
    let doublings = if attempt < ATTEMPTS_MAX {
        attempt
    } else {
        ATTEMPTS_MAX - 1
    };
    RETRY_INITIAL_MS << doublings
}

fn parse_external_address(datagram: &[u8], epoch_s: u32) -> Result<Response, NatPmpError> {
    let address = be_u32(datagram, 8).ok_or(NatPmpError::Short)?;
    Ok(Response::ExternalAddress {
        epoch_s,
        address: Ipv4Addr::from(address),
    })
}

fn parse_map(
    datagram: &[u8],
    epoch_s: u32,
    protocol: MapProtocol,
) -> Result<Response, NatPmpError> {
    if datagram.len() < MAP_RESPONSE_BYTES {
        return Err(NatPmpError::Short);
    }
    let internal_port = be_u16(datagram, 8).ok_or(NatPmpError::Short)?;
    let external_port = be_u16(datagram, 10).ok_or(NatPmpError::Short)?;
    let lifetime_s = be_u32(datagram, 12).ok_or(NatPmpError::Short)?;
    Ok(Response::Map {
        epoch_s,
        protocol,
        internal_port,
        external_port,
        lifetime_s,
    })
}

/// The big-endian `u16` at `at`, if the bytes reach that far.
pub(super) fn be_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// The big-endian `u32` at `at`, if the bytes reach that far.
pub(super) fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// External address answer built from the RFC 6886 §3.2 layout: epoch
    /// 0x01020304, address 11.0.0.2.
    const EXTERNAL_ANSWER: [u8; 12] = [
        0x00, 0x80, 0x00, 0x00, // version 0, opcode 128, success
        0x01, 0x02, 0x03, 0x04, // SSSoE
        11, 0, 0, 2, // external address
    ];

    /// TCP map answer built from the §3.3 layout: epoch 100, internal 8080,
    /// external 18080, lifetime 7200.
    const MAP_ANSWER: [u8; 16] = [
        0x00, 0x82, 0x00, 0x00, // version 0, opcode 130, success
        0x00, 0x00, 0x00, 0x64, // SSSoE
        0x1F, 0x90, 0x46, 0xA0, // internal 8080, external 18080
        0x00, 0x00, 0x1C, 0x20, // lifetime 7200
    ];

    #[test]
    fn writes_golden_external_address_request() {
        let mut out = [0xFFu8; 4];
        assert_eq!(write_external_address_request(&mut out), Some(2));
        assert_eq!(out, [0x00, 0x00, 0xFF, 0xFF]);
        assert_eq!(write_external_address_request(&mut out[..1]), None);
    }

    #[test]
    fn writes_golden_map_requests() {
        let mut out = [0xFFu8; 13];
        assert_eq!(
            write_map_request(&mut out, MapProtocol::Tcp, 8080, 18080, 7200),
            Some(12)
        );
        assert_eq!(
            out,
            [0x00, 0x02, 0x00, 0x00, 0x1F, 0x90, 0x46, 0xA0, 0x00, 0x00, 0x1C, 0x20, 0xFF]
        );
        // Delete: lifetime 0 and suggested port 0.
        assert_eq!(
            write_map_request(&mut out, MapProtocol::Udp, 5004, 0, 0),
            Some(12)
        );
        assert_eq!(
            out[..12],
            [0x00, 0x01, 0x00, 0x00, 0x13, 0x8C, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]
        );
        let mut short = [0xFFu8; 11];
        assert_eq!(
            write_map_request(&mut short, MapProtocol::Udp, 1, 2, 3),
            None
        );
        assert_eq!(short, [0xFF; 11], "nothing written on failure");
    }

    #[test]
    fn parses_golden_answers() {
        assert_eq!(
            parse_response(&EXTERNAL_ANSWER),
            Ok(Response::ExternalAddress {
                epoch_s: 0x0102_0304,
                address: Ipv4Addr::new(11, 0, 0, 2),
            })
        );
        assert_eq!(
            parse_response(&MAP_ANSWER),
            Ok(Response::Map {
                epoch_s: 100,
                protocol: MapProtocol::Tcp,
                internal_port: 8080,
                external_port: 18080,
                lifetime_s: 7200,
            })
        );
        let mut udp = MAP_ANSWER;
        udp[1] = 0x81;
        assert!(matches!(
            parse_response(&udp),
            Ok(Response::Map {
                protocol: MapProtocol::Udp,
                ..
            })
        ));
    }

    // Answers captured from miniupnpd 2.3.1 in the test bed
    // (shared/testbed/igd-netns.sh, WAN address 11.0.0.2), 267 s after start.

    /// To the external address request.
    const MINIUPNPD_EXTERNAL: [u8; 12] = [
        0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0b, 0x0b, 0x00, 0x00, 0x02,
    ];

    /// To `write_map_request(Tcp, 8083, 18083, 60)`: NAT-PMP lifetimes are
    /// not clamped (only PCP's are, to 120..=86400 s).
    const MINIUPNPD_MAP_TCP: [u8; 16] = [
        0x00, 0x82, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0b, 0x1f, 0x93, 0x46, 0xa3, 0x00, 0x00, 0x00,
        0x3c,
    ];

    /// To the raw request `[0, 3, 0, 0]`: the 8-byte "unsupported opcode"
    /// answer, cut after the epoch.
    const MINIUPNPD_UNSUPPORTED_OPCODE: [u8; 8] = [0x00, 0x83, 0x00, 0x05, 0x00, 0x00, 0x01, 0x0d];

    #[test]
    fn parses_answers_captured_from_miniupnpd() {
        assert_eq!(
            parse_response(&MINIUPNPD_EXTERNAL),
            Ok(Response::ExternalAddress {
                epoch_s: 267,
                address: Ipv4Addr::new(11, 0, 0, 2),
            })
        );
        assert_eq!(
            parse_response(&MINIUPNPD_MAP_TCP),
            Ok(Response::Map {
                epoch_s: 267,
                protocol: MapProtocol::Tcp,
                internal_port: 8083,
                external_port: 18083,
                lifetime_s: 60,
            })
        );
        assert_eq!(
            parse_response(&MINIUPNPD_UNSUPPORTED_OPCODE),
            Err(NatPmpError::Failure(5))
        );
        assert!(!is_version_mismatch(&MINIUPNPD_UNSUPPORTED_OPCODE));
    }

    #[test]
    fn reports_failures_with_rfc_names() {
        let mut refused = MAP_ANSWER;
        refused[3] = 2;
        assert_eq!(parse_response(&refused), Err(NatPmpError::Failure(2)));
        // An error answer may stop after the epoch, or even after the code.
        assert_eq!(parse_response(&refused[..8]), Err(NatPmpError::Failure(2)));
        assert_eq!(parse_response(&refused[..4]), Err(NatPmpError::Failure(2)));
        assert_eq!(
            NatPmpError::Failure(2).to_string(),
            "NAT-PMP result 2: not authorized/refused"
        );
        assert_eq!(result_name(3), Some("network failure"));
        assert_eq!(result_name(4), Some("out of resources"));
        assert_eq!(result_name(5), Some("unsupported opcode"));
        assert_eq!(result_name(6), None);
        assert_eq!(
            NatPmpError::Failure(0x1234).to_string(),
            "NAT-PMP result 4660: unknown result code"
        );
    }

    #[test]
    fn detects_version_mismatches() {
        // A PCP server's UNSUPP_VERSION answer (version 2, R bit, result 1).
        let mut pcp = [0u8; 24];
        pcp[0] = 2;
        pcp[1] = 0x80;
        pcp[3] = 1;
        assert_eq!(parse_response(&pcp), Err(NatPmpError::UnsupportedVersion));
        assert!(is_version_mismatch(&pcp));
        assert!(is_version_mismatch(&[2, 0x80]));
        // The RFC 6886 "Unsupported Version" answer: opcode 0, result 1.
        let rfc = [0, 0, 0, 1, 0, 0, 0, 9];
        assert_eq!(parse_response(&rfc), Err(NatPmpError::Failure(1)));
        assert!(is_version_mismatch(&rfc));
        assert!(!is_version_mismatch(&MAP_ANSWER));
        assert!(!is_version_mismatch(&[]));
    }

    #[test]
    fn rejects_short_and_odd_datagrams() {
        assert_eq!(parse_response(&[]), Err(NatPmpError::Short));
        assert_eq!(parse_response(&[0]), Err(NatPmpError::Short));
        assert_eq!(parse_response(&[0, 0x80, 0]), Err(NatPmpError::Short));
        for cut in 4..EXTERNAL_ADDRESS_RESPONSE_BYTES {
            assert_eq!(
                parse_response(&EXTERNAL_ANSWER[..cut]),
                Err(NatPmpError::Short),
                "cut at {cut}"
            );
        }
        for cut in 4..MAP_RESPONSE_BYTES {
            assert_eq!(
                parse_response(&MAP_ANSWER[..cut]),
                Err(NatPmpError::Short),
                "cut at {cut}"
            );
        }
        // Our own requests are not answers.
        let mut out = [0u8; MAP_REQUEST_BYTES];
        write_map_request(&mut out, MapProtocol::Tcp, 1, 2, 3).unwrap();
        assert_eq!(parse_response(&out), Err(NatPmpError::NotAResponse));
        assert_eq!(
            parse_response(&[0, 0, 0, 0]),
            Err(NatPmpError::NotAResponse)
        );
        let mut unknown = MAP_ANSWER;
        unknown[1] = 0x83;
        assert_eq!(parse_response(&unknown), Err(NatPmpError::UnknownOpcode));
        unknown[1] = 0xFF;
        assert_eq!(parse_response(&unknown), Err(NatPmpError::UnknownOpcode));
    }

    #[test]
    fn ignores_bytes_after_a_complete_answer() {
        let mut long = [0xEEu8; 1100];
        long[..16].copy_from_slice(&MAP_ANSWER);
        assert_eq!(parse_response(&long), parse_response(&MAP_ANSWER));
    }

    #[test]
    fn never_panics_on_any_short_prefix_of_noise() {
        let mut noise = [0u8; 32];
        let mut x = 0x9E37_79B9u32;
        for round in 0..2000u32 {
            for byte in noise.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *byte = x as u8;
            }
            noise[0] = (round % 3) as u8; // mostly version 0
            let len = (round as usize) % noise.len();
            let _ = parse_response(&noise[..len]);
            let _ = is_version_mismatch(&noise[..len]);
        }
    }

    #[test]
    fn retry_delays_follow_rfc_6886() {
        assert_eq!(retry_delay_ms(0), 250);
        assert_eq!(retry_delay_ms(1), 500);
        assert_eq!(retry_delay_ms(8), 64_000);
        assert_eq!(retry_delay_ms(9), 64_000);
        assert_eq!(retry_delay_ms(u32::MAX), 64_000);
        let total: u64 = (0..ATTEMPTS_MAX).map(retry_delay_ms).sum();
        assert_eq!(total, 127_750);
    }

    #[test]
    fn protocol_opcodes_round_trip() {
        for p in [MapProtocol::Udp, MapProtocol::Tcp] {
            assert_eq!(MapProtocol::from_natpmp_opcode(p.natpmp_opcode()), Some(p));
        }
        assert_eq!(MapProtocol::from_natpmp_opcode(0), None);
    }
}
