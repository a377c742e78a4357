//! PCP (RFC 6887) client messages: MAP and ANNOUNCE requests written into
//! caller buffers, one borrowing decoder for the server's answers, the
//! result codes, the retransmission schedule and the epoch check that
//! detects a server restart. No I/O, no clock, no heap.
//!
//! PCP is NAT-PMP's successor on the same UDP port ([`super::natpmp::PORT`]).
//! Every message is a 24-byte common header, an opcode-specific body and
//! options, in all at most [`MESSAGE_BYTES_MAX`] and a multiple of 4:
//!
//! ```text
//! request header  | ver 2 |R=0 op| reserved 16 | lifetime 32 | client address 128 |
//! response header | ver 2 |R=1 op| rsvd | result | lifetime 32 | epoch 32 | reserved 96 |
//! MAP body        | nonce 96 | protocol | rsvd 24 | int port | ext port | ext address 128 |
//! option          | code | rsvd | length 16 | data, zero-padded to 4 |
//! ```
//!
//! Addresses are 16 bytes; IPv4 travels IPv4-mapped (`::ffff:a.b.c.d`). A
//! mapping is owned by its nonce: renewing or deleting (lifetime 0) it
//! needs the same nonce, so the caller stores it ([`MapRequest::deletion`]).
//!
//! A NAT-PMP-only gateway answers a PCP request with the 8-byte NAT-PMP
//! "Unsupported Version" answer; [`parse_response`] reports it as
//! [`PcpError::UnsupportedVersion`] with `server_version` 0, the cue to fall
//! back to [`super::natpmp`].
//!
//! What miniupnpd 2.3.1 does (observed in the netns test bed): it clamps
//! lifetimes to its `min_lifetime..=max_lifetime` (120..=86400 s) and
//! reports the granted value; a MAP from the same client and internal port
//! with a new nonce succeeds and takes the mapping over; deleting with a
//! nonce that owns nothing gives NOT_AUTHORIZED, deleting a mapping that is
//! gone gives NO_RESOURCES (lifetime 30 s), so treat that as done; a
//! deletion answer echoes the request's suggested port, not the mapped
//! one; PREFER_FAILURE is echoed but ignored (another port is mapped);
//! error answers carry lifetime 0 except NO_RESOURCES; a request outside
//! its permission rules is refused (NOT_AUTHORIZED) only after about 20 s.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use super::natpmp::MapProtocol;

/// The PCP version of RFC 6887.
pub const VERSION: u8 = 2;

/// Bytes of a mapping nonce.
pub const NONCE_BYTES: usize = 12;

/// A mapping nonce: random, chosen by the client, kept for the mapping's
/// life.
pub type Nonce = [u8; NONCE_BYTES];

/// Bytes of the common request and response header.
pub const HEADER_BYTES: usize = 24;

/// Bytes of the MAP opcode body, in requests and responses alike.
pub const MAP_BODY_BYTES: usize = 36;

/// Bytes of the PEER opcode body (skipped when decoding).
pub const PEER_BODY_BYTES: usize = 56;

/// Bytes of an option's header: code, reserved, length.
pub const OPTION_HEADER_BYTES: usize = 4;

/// Bytes of an address field (IPv6, or IPv4-mapped IPv6).
pub const ADDRESS_BYTES: usize = 16;

/// Largest PCP message (RFC 6887 §7).
pub const MESSAGE_BYTES_MAX: usize = 1100;

/// Every PCP message and option is padded to a multiple of this.
pub const ALIGN_BYTES: usize = 4;

/// Bytes of a MAP request without options.
pub const MAP_REQUEST_BYTES: usize = HEADER_BYTES + MAP_BODY_BYTES;

/// Bytes of a MAP request carrying the PREFER_FAILURE option.
pub const MAP_REQUEST_PREFER_FAILURE_BYTES: usize = MAP_REQUEST_BYTES + OPTION_HEADER_BYTES;

/// Bytes of an ANNOUNCE request (header only).
pub const ANNOUNCE_REQUEST_BYTES: usize = HEADER_BYTES;

/// Opcode ANNOUNCE: "are you there, and did you restart?".
pub const OPCODE_ANNOUNCE: u8 = 0;

/// Opcode MAP: create, renew or delete an inbound mapping.
pub const OPCODE_MAP: u8 = 1;

/// Opcode PEER: create or learn an outbound mapping (not sent here).
pub const OPCODE_PEER: u8 = 2;

/// The R bit, set in the opcode byte of every response.
pub const RESPONSE_BIT: u8 = 0x80;

/// Option THIRD_PARTY (not sent here).
pub const OPTION_THIRD_PARTY: u8 = 1;

/// Option PREFER_FAILURE: fail rather than map another external port.
pub const OPTION_PREFER_FAILURE: u8 = 2;

/// Option FILTER (not sent here).
pub const OPTION_FILTER: u8 = 3;

/// IANA protocol number of TCP.
pub const PROTOCOL_TCP: u8 = 6;

/// IANA protocol number of UDP.
pub const PROTOCOL_UDP: u8 = 17;

/// Initial retransmission timeout, RFC 6887 §8.1.1 (IRT).
pub const RETRY_INITIAL_MS: u64 = 3_000;

/// Largest retransmission timeout, RFC 6887 §8.1.1 (MRT).
pub const RETRY_MAX_MS: u64 = 1_024_000;

/// Doublings after which [`RETRY_INITIAL_MS`] has passed [`RETRY_MAX_MS`]
/// (3 s << 9 = 1536 s).
const RETRY_DOUBLINGS_MAX: u32 = 9;

/// Largest jitter of a retransmission timeout, in thousandths (RAND is
/// ±0.1).
pub const RETRY_JITTER_PERMILLE_MAX: i16 = 100;

/// Slack of the epoch check, RFC 6887 §8.5 (two seconds).
pub const EPOCH_SLACK_MS: i128 = 2_000;

/// How far the server's epoch may run backwards (reordering), §8.5.
pub const EPOCH_BACKSTEP_MS: i128 = 1_000;

const MS_PER_S: i128 = 1_000;

/// Drift allowed by the epoch check: a sixteenth of the elapsed time.
const EPOCH_DRIFT_DIVISOR: i128 = 16;

/// The IANA protocol number PCP carries for `protocol`.
pub const fn protocol_number(protocol: MapProtocol) -> u8 {
    match protocol {
        MapProtocol::Tcp => PROTOCOL_TCP,
        MapProtocol::Udp => PROTOCOL_UDP,
    }
}

/// The protocol of an IANA protocol number, if it is TCP or UDP.
pub const fn protocol_from_number(number: u8) -> Option<MapProtocol> {
    match number {
        PROTOCOL_TCP => Some(MapProtocol::Tcp),
        PROTOCOL_UDP => Some(MapProtocol::Udp),
        _ => None,
    }
}

/// One MAP request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRequest {
    pub nonce: Nonce,
    pub protocol: MapProtocol,
    pub internal_port: u16,
    /// 0: no preference.
    pub suggested_external_port: u16,
    /// `None`: no preference (sent as `::ffff:0.0.0.0`).
    pub suggested_external_address: Option<Ipv4Addr>,
    /// Requested lifetime; 0 deletes the mapping owned by `nonce`.
    pub lifetime_s: u32,
    /// The client's own address, as the server will see it as the source.
    pub client: IpAddr,
    /// Ask for the PREFER_FAILURE option: fail with
    /// `CANNOT_PROVIDE_EXTERNAL` rather than map another port.
    pub prefer_failure: bool,
}

impl MapRequest {
    /// The request that deletes this mapping: same nonce, protocol and
    /// internal port, lifetime 0, no options.
    pub const fn deletion(&self) -> MapRequest {
        MapRequest {
            lifetime_s: 0,
            prefer_failure: false,
            ..*self
        }
    }

    /// Bytes [`write_map`] writes for this request.
    pub const fn encoded_len(&self) -> usize {
        if self.prefer_failure {
            MAP_REQUEST_PREFER_FAILURE_BYTES
        } else {
            MAP_REQUEST_BYTES
        }
    }
}

/// PCP result codes 0..=13 (RFC 6887 §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ResultCode {
    Success = 0,
    UnsuppVersion = 1,
    NotAuthorized = 2,
    MalformedRequest = 3,
    UnsuppOpcode = 4,
    UnsuppOption = 5,
    MalformedOption = 6,
    NetworkFailure = 7,
    NoResources = 8,
    UnsuppProtocol = 9,
    UserExQuota = 10,
    CannotProvideExternal = 11,
    AddressMismatch = 12,
    ExcessiveRemotePeers = 13,
}

impl ResultCode {
    /// The code for a result byte, or `None` if RFC 6887 defines none.
    pub const fn from_u8(code: u8) -> Option<ResultCode> {
        Some(match code {
            0 => ResultCode::Success,
            1 => ResultCode::UnsuppVersion,
            2 => ResultCode::NotAuthorized,
            3 => ResultCode::MalformedRequest,
            4 => ResultCode::UnsuppOpcode,
            5 => ResultCode::UnsuppOption,
            6 => ResultCode::MalformedOption,
            7 => ResultCode::NetworkFailure,
            8 => ResultCode::NoResources,
            9 => ResultCode::UnsuppProtocol,
            10 => ResultCode::UserExQuota,
            11 => ResultCode::CannotProvideExternal,
            12 => ResultCode::AddressMismatch,
            13 => ResultCode::ExcessiveRemotePeers,
            _ => return None,
        })
    }

    /// The RFC 6887 name, e.g. `NOT_AUTHORIZED`.
    pub const fn name(self) -> &'static str {
        match self {
            ResultCode::Success => "SUCCESS",
            ResultCode::UnsuppVersion => "UNSUPP_VERSION",
            ResultCode::NotAuthorized => "NOT_AUTHORIZED",
            ResultCode::MalformedRequest => "MALFORMED_REQUEST",
            ResultCode::UnsuppOpcode => "UNSUPP_OPCODE",
            ResultCode::UnsuppOption => "UNSUPP_OPTION",
            ResultCode::MalformedOption => "MALFORMED_OPTION",
            ResultCode::NetworkFailure => "NETWORK_FAILURE",
            ResultCode::NoResources => "NO_RESOURCES",
            ResultCode::UnsuppProtocol => "UNSUPP_PROTOCOL",
            ResultCode::UserExQuota => "USER_EX_QUOTA",
            ResultCode::CannotProvideExternal => "CANNOT_PROVIDE_EXTERNAL",
            ResultCode::AddressMismatch => "ADDRESS_MISMATCH",
            ResultCode::ExcessiveRemotePeers => "EXCESSIVE_REMOTE_PEERS",
        }
    }

    /// True for the errors RFC 6887 §7.4 calls "long lifetime": the
    /// condition will not go away by itself, so do not retry before the
    /// answer's lifetime (typically 30 minutes) runs out. Short lifetime
    /// errors (NETWORK_FAILURE, NO_RESOURCES, USER_EX_QUOTA) may clear in
    /// seconds. CANNOT_PROVIDE_EXTERNAL "depends on the reason" and counts
    /// as short here; trust its lifetime field. SUCCESS is not an error.
    pub const fn is_long_lived(self) -> bool {
        matches!(
            self,
            ResultCode::UnsuppVersion
                | ResultCode::NotAuthorized
                | ResultCode::MalformedRequest
                | ResultCode::UnsuppOpcode
                | ResultCode::UnsuppOption
                | ResultCode::MalformedOption
                | ResultCode::UnsuppProtocol
                | ResultCode::AddressMismatch
                | ResultCode::ExcessiveRemotePeers
        )
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The MAP body of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapResponse {
    pub nonce: Nonce,
    pub protocol: MapProtocol,
    pub internal_port: u16,
    /// The port the server assigned (0 in a deletion answer).
    pub external_port: u16,
    /// An IPv4-mapped address is converted to [`IpAddr::V4`].
    pub external_address: IpAddr,
}

impl MapResponse {
    /// True if this answers `request` (RFC 6887 §11.4 / §11.3: same nonce,
    /// protocol and internal port). Anything else is stale or forged.
    pub fn answers(&self, request: &MapRequest) -> bool {
        self.nonce == request.nonce
            && self.protocol == request.protocol
            && self.internal_port == request.internal_port
    }
}

/// A decoded PCP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// Opcode without the R bit, e.g. [`OPCODE_MAP`].
    pub opcode: u8,
    /// Raw result code; see [`Response::result_code`].
    pub result: u8,
    /// On success the granted lifetime; on error how long the error holds.
    pub lifetime_s: u32,
    /// Server seconds since its state began; see [`epoch_is_consistent`].
    pub epoch_s: u32,
    /// The MAP body, for opcode MAP when present (error answers may omit
    /// it or carry an unknown protocol, then `None`).
    pub map: Option<MapResponse>,
}

impl Response {
    /// The result as a known code, or `None` for codes RFC 6887 lacks.
    pub const fn result_code(&self) -> Option<ResultCode> {
        ResultCode::from_u8(self.result)
    }

    /// True if the result is SUCCESS.
    pub const fn is_success(&self) -> bool {
        self.result == ResultCode::Success as u8
    }
}

/// Why a datagram is not a usable PCP answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcpError {
    /// Shorter than a header, or than the MAP body a success needs.
    Short,
    /// A request (R bit clear), or NAT-PMP traffic that is not a version
    /// refusal.
    NotAResponse,
    /// The server speaks another version; 0 means a NAT-PMP-only gateway.
    UnsupportedVersion { server_version: u8 },
    /// Over [`MESSAGE_BYTES_MAX`], not a multiple of 4, an option running
    /// past the end, or a successful MAP answer for an unknown protocol.
    Malformed,
}

impl fmt::Display for PcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcpError::Short => f.write_str("PCP answer is truncated"),
            PcpError::NotAResponse => f.write_str("datagram is not a PCP response"),
            PcpError::UnsupportedVersion { server_version: 0 } => {
                f.write_str("gateway speaks NAT-PMP (version 0), not PCP")
            }
            PcpError::UnsupportedVersion { server_version } => {
                write!(f, "gateway speaks PCP version {server_version}, not 2")
            }
            PcpError::Malformed => f.write_str("PCP answer is malformed"),
        }
    }
}

/// Writes a MAP request (header, MAP body, and PREFER_FAILURE when asked);
/// returns its length ([`MapRequest::encoded_len`]), or `None` (nothing written) if
/// `out` is too short.
pub fn write_map(out: &mut [u8], request: &MapRequest) -> Option<usize> {
    let message = out.get_mut(..request.encoded_len())?;
    let (header, rest) = message.split_at_mut(HEADER_BYTES);
    write_request_header(header, OPCODE_MAP, request.lifetime_s, request.client);
    let (body, options) = rest.split_at_mut(MAP_BODY_BYTES);
    write_map_body(body, request);
    if request.prefer_failure {
        write_option_header(options, OPTION_PREFER_FAILURE, 0);
    }
    Some(message.len())
}

/// Writes an ANNOUNCE request (RFC 6887 §14.1: lifetime 0, no body); returns
/// its length, or `None` (nothing written) if `out` is too short.
pub fn write_announce(out: &mut [u8], client: IpAddr) -> Option<usize> {
    let header = out.get_mut(..ANNOUNCE_REQUEST_BYTES)?;
    write_request_header(header, OPCODE_ANNOUNCE, 0, client);
    Some(ANNOUNCE_REQUEST_BYTES)
}

/// Decodes one datagram received from the server's port.
///
/// A version-0 datagram is NAT-PMP: its "Unsupported Version" answer
/// (result 1) becomes `UnsupportedVersion { server_version: 0 }`, anything
/// else `NotAResponse`. Another version with the R bit set is that server's
/// refusal of version 2. A version-2 answer must be 24..=1100 bytes and a
/// multiple of 4; its options are walked (not returned) and must fit. The
/// MAP body is decoded for opcode MAP only.
pub fn parse_response(datagram: &[u8]) -> Result<Response, PcpError> {
    let version = *datagram.first().ok_or(PcpError::Short)?;
    if version != VERSION {
        return Err(foreign_version(datagram, version));
    }
    let opcode_byte = *datagram.get(1).ok_or(PcpError::Short)?;
    if opcode_byte & RESPONSE_BIT == 0 {
        return Err(PcpError::NotAResponse);
    }
    check_length(datagram)?;
    let opcode = opcode_byte & !RESPONSE_BIT;
    let result = datagram[3];
    let body = &datagram[HEADER_BYTES..];
    let (map, options) = match opcode {
        OPCODE_MAP => split_map_body(body, result)?,
        OPCODE_ANNOUNCE => (None, body),
        OPCODE_PEER => (None, body.get(PEER_BODY_BYTES..).unwrap_or(&[])),
        _ => (None, &[][..]), // unknown body size: options unreachable
    };
    check_options(options)?;
    Ok(Response {
        opcode,
        result,
        lifetime_s: be_u32(datagram, 4).ok_or(PcpError::Short)?,
        epoch_s: be_u32(datagram, 8).ok_or(PcpError::Short)?,
        map,
    })
}

/// True if the answer to a PCP request says the server speaks another
/// version: a NAT-PMP gateway (fall back to NAT-PMP), another PCP version,
/// or a version-2 UNSUPP_VERSION result.
pub fn is_version_mismatch(datagram: &[u8]) -> bool {
    match parse_response(datagram) {
        Err(PcpError::UnsupportedVersion { .. }) => true,
        Ok(response) => response.result == ResultCode::UnsuppVersion as u8,
        Err(_) => false,
    }
}

/// The RFC 6887 §8.5 check that a server kept its state between two
/// answers; false means it restarted (or lost its mappings or external
/// address), so every mapping must be requested again at once.
///
/// `previous_*` are the server epoch and the client's monotonic clock at
/// the previous answer, `new_*` at this one; the first answer from a server
/// is always consistent and is not checked. The epoch must not run back by
/// more than one second, and the two elapsed times must agree within two
/// seconds plus a sixteenth of the larger one (here computed in
/// milliseconds). The caller then keeps `new_*` as the next `previous_*`.
///
/// NAT-PMP's seconds since start of epoch are checked with this same rule
/// (RFC 6886 §3.6 states a one-sided and looser variant: the gateway's
/// clock must not lag 7/8 of the client's elapsed time by more than two
/// seconds); the stricter rule can only cause an extra, harmless renewal.
pub fn epoch_is_consistent(
    previous_epoch_s: u32,
    previous_client_ms: u64,
    new_epoch_s: u32,
    new_client_ms: u64,
) -> bool {
    let server_ms = (i128::from(new_epoch_s) - i128::from(previous_epoch_s)) * MS_PER_S;
    let client_ms = i128::from(new_client_ms) - i128::from(previous_client_ms);
    if server_ms < -EPOCH_BACKSTEP_MS {
        return false;
    }
    let client_lags = client_ms + EPOCH_SLACK_MS < server_ms - server_ms / EPOCH_DRIFT_DIVISOR;
    let server_lags = server_ms + EPOCH_SLACK_MS < client_ms - client_ms / EPOCH_DRIFT_DIVISOR;
    !client_lags && !server_lags
}

/// Milliseconds to wait after transmission number `attempt` (0 for the
/// first) before sending again, RFC 6887 §8.1.1: 3 s doubling up to
/// 1024 s, scaled by `1 + jitter_permille / 1000` with the jitter a fresh
/// random value in ±[`RETRY_JITTER_PERMILLE_MAX`] (clamped). PCP never
/// gives up by itself; the caller decides when to stop.
pub const fn retry_delay_ms(attempt: u32, jitter_permille: i16) -> u64 {
    let base = if attempt >= RETRY_DOUBLINGS_MAX {
        RETRY_MAX_MS
    } else {
        let doubled = RETRY_INITIAL_MS << attempt;
        if doubled < RETRY_MAX_MS {
            doubled
        } else {
            RETRY_MAX_MS
        }
    };
    let jitter = if jitter_permille > RETRY_JITTER_PERMILLE_MAX {
        RETRY_JITTER_PERMILLE_MAX
    } else if jitter_permille < -RETRY_JITTER_PERMILLE_MAX {
        -RETRY_JITTER_PERMILLE_MAX
    } else {
        jitter_permille
    };
    let scale = (1000 + jitter as i64) as u64; // 900..=1100
    base * scale / 1000
}

/// An address as the 16-byte PCP field (IPv4 goes IPv4-mapped).
pub const fn address_field(address: IpAddr) -> [u8; ADDRESS_BYTES] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A 16-byte PCP address field; IPv4-mapped addresses become
/// [`IpAddr::V4`].
pub const fn address_from_field(field: [u8; ADDRESS_BYTES]) -> IpAddr {
    let v6 = Ipv6Addr::from_bits(u128::from_be_bytes(field));
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn write_request_header(header: &mut [u8], opcode: u8, lifetime_s: u32, client: IpAddr) {
    header[0] = VERSION;
    header[1] = opcode;
    header[2..4].fill(0); // reserved
    header[4..8].copy_from_slice(&lifetime_s.to_be_bytes());
    header[8..HEADER_BYTES].copy_from_slice(&address_field(client));
}

fn write_map_body(body: &mut [u8], request: &MapRequest) {
    let external = request
        .suggested_external_address
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    body[..NONCE_BYTES].copy_from_slice(&request.nonce);
    body[12] = protocol_number(request.protocol);
    body[13..16].fill(0); // reserved
    body[16..18].copy_from_slice(&request.internal_port.to_be_bytes());
    body[18..20].copy_from_slice(&request.suggested_external_port.to_be_bytes());
    body[20..MAP_BODY_BYTES].copy_from_slice(&address_field(IpAddr::V4(external)));
}

fn write_option_header(option: &mut [u8], code: u8, data_len: u16) {
    option[0] = code;
    option[1] = 0; // reserved
    option[2..OPTION_HEADER_BYTES].copy_from_slice(&data_len.to_be_bytes());
}

/// The error for a datagram whose version is not 2.
fn foreign_version(datagram: &[u8], version: u8) -> PcpError {
    if version == super::natpmp::VERSION {
        let refused = be_u16(datagram, 2) == Some(super::natpmp::RESULT_UNSUPPORTED_VERSION);
        return if refused {
            PcpError::UnsupportedVersion { server_version: 0 }
        } else if datagram.len() < super::natpmp::RESPONSE_HEADER_BYTES {
            PcpError::Short
        } else {
            PcpError::NotAResponse
        };
    }
    match datagram.get(1) {
        None => PcpError::Short,
        Some(opcode) if opcode & RESPONSE_BIT != 0 => PcpError::UnsupportedVersion {
            server_version: version,
        },
        Some(_) => PcpError::NotAResponse,
    }
}

fn check_length(datagram: &[u8]) -> Result<(), PcpError> {
    if datagram.len() < HEADER_BYTES {
        return Err(PcpError::Short);
    }
    if datagram.len() > MESSAGE_BYTES_MAX || !datagram.len().is_multiple_of(ALIGN_BYTES) {
        return Err(PcpError::Malformed);
    }
    Ok(())
}

/// Splits a MAP answer's bytes after the header into the decoded body and
/// the options behind it. A success must carry a body for TCP or UDP; an
/// error answer may lack one.
fn split_map_body(body: &[u8], result: u8) -> Result<(Option<MapResponse>, &[u8]), PcpError> {
    let success = result == ResultCode::Success as u8;
    let Some((fields, options)) = body.split_first_chunk::<MAP_BODY_BYTES>() else {
        return if success {
            Err(PcpError::Short)
        } else {
            Ok((None, &[]))
        };
    };
    match parse_map_body(fields) {
        Some(map) => Ok((Some(map), options)),
        None if success => Err(PcpError::Malformed),
        None => Ok((None, options)),
    }
}

fn parse_map_body(body: &[u8; MAP_BODY_BYTES]) -> Option<MapResponse> {
    let (nonce, rest) = body.split_first_chunk::<NONCE_BYTES>()?;
    let protocol = protocol_from_number(rest[0])?;
    let (address, _) = body[20..].split_first_chunk::<ADDRESS_BYTES>()?;
    Some(MapResponse {
        nonce: *nonce,
        protocol,
        internal_port: be_u16(body, 16)?,
        external_port: be_u16(body, 18)?,
        external_address: address_from_field(*address),
    })
}

/// Walks options: each must fit with its padding. Their content is not
/// interpreted (the relay sends none that the server must echo).
fn check_options(mut options: &[u8]) -> Result<(), PcpError> {
    while !options.is_empty() {
        let data_len = be_u16(options, 2).ok_or(PcpError::Malformed)?;
        let padded = usize::from(data_len).next_multiple_of(ALIGN_BYTES);
        let whole = OPTION_HEADER_BYTES + padded;
        options = options.get(whole..).ok_or(PcpError::Malformed)?;
    }
    Ok(())
}

use super::natpmp::{be_u16, be_u32};

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);
    const NONCE: Nonce = *b"ringcast-A01";

    fn request() -> MapRequest {
        MapRequest {
            nonce: NONCE,
            protocol: MapProtocol::Tcp,
            internal_port: 9000,
            suggested_external_port: 19000,
            suggested_external_address: None,
            lifetime_s: 60,
            client: IpAddr::V4(CLIENT),
            prefer_failure: false,
        }
    }

    /// The MAP request of [`request`], laid out by hand from RFC 6887
    /// §7.1 and §11.1.
    const MAP_REQUEST: [u8; 60] = [
        0x02, 0x01, 0x00, 0x00, // version 2, R=0 opcode MAP, reserved
        0x00, 0x00, 0x00, 0x3C, // requested lifetime 60
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 168, 77,
        10, // client ::ffff:192.168.77.10
        b'r', b'i', b'n', b'g', b'c', b'a', b's', b't', b'-', b'A', b'0', b'1', // nonce
        0x06, 0x00, 0x00, 0x00, // protocol TCP, reserved
        0x23, 0x28, 0x4A, 0x38, // internal 9000, suggested external 19000
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0, // ::ffff:0.0.0.0
    ];

    // Answers captured from miniupnpd 2.3.1 in the test bed
    // (shared/testbed/igd-netns.sh, WAN address 11.0.0.2), all to requests
    // written by `write_map` with the nonce "ringcast-A01".

    /// To `MAP_REQUEST`: the lifetime 60 is raised to miniupnpd's minimum
    /// of 120 s; epoch 269.
    const MINIUPNPD_MAP: [u8; 60] = [
        0x02, 0x81, 0x00, 0x00, 0x00, 0x00, 0x00, 0x78, 0x00, 0x00, 0x01, 0x0d, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x72, 0x69, 0x6e, 0x67, 0x63, 0x61,
        0x73, 0x74, 0x2d, 0x41, 0x30, 0x31, 0x06, 0x00, 0x00, 0x00, 0x23, 0x28, 0x4a, 0x38, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x0b, 0x00, 0x00, 0x02,
    ];

    /// To the deletion of a mapping that no longer exists: NO_RESOURCES
    /// with a 30 s error lifetime, body echoed.
    const MINIUPNPD_DELETE_NOT_FOUND: [u8; 60] = [
        0x02, 0x81, 0x00, 0x08, 0x00, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x01, 0x0d, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x72, 0x69, 0x6e, 0x67, 0x63, 0x61,
        0x73, 0x74, 0x2d, 0x41, 0x30, 0x31, 0x06, 0x00, 0x00, 0x00, 0x23, 0x28, 0x4a, 0x38, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x0b, 0x00, 0x00, 0x02,
    ];

    /// To a MAP with PREFER_FAILURE (nonce "ringcast-D04", internal 9002)
    /// whose suggested port 19000 was taken: miniupnpd 2.3.1 ignores the
    /// option, maps 19002 and echoes the option.
    const MINIUPNPD_PREFER_FAILURE_IGNORED: [u8; 64] = [
        0x02, 0x81, 0x00, 0x00, 0x00, 0x00, 0x00, 0x78, 0x00, 0x00, 0x01, 0x0d, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x72, 0x69, 0x6e, 0x67, 0x63, 0x61,
        0x73, 0x74, 0x2d, 0x44, 0x30, 0x34, 0x06, 0x00, 0x00, 0x00, 0x23, 0x2a, 0x4a, 0x3a, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x0b, 0x00, 0x00, 0x02,
        0x02, 0x00, 0x00, 0x00,
    ];

    /// To a MAP sent with version 3: a version-2 UNSUPP_VERSION answer.
    const MINIUPNPD_UNSUPP_VERSION: [u8; 24] = [
        0x02, 0x81, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0d, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// A successful answer to [`request`] built from the RFC layout:
    /// lifetime 7200, epoch 1000, external 198.51.100.7:19000.
    fn answer() -> [u8; 60] {
        let mut a = MAP_REQUEST;
        a[1] = RESPONSE_BIT | OPCODE_MAP;
        a[4..8].copy_from_slice(&7200u32.to_be_bytes());
        a[8..12].copy_from_slice(&1000u32.to_be_bytes());
        a[12..24].fill(0);
        a[56..60].copy_from_slice(&[198, 51, 100, 7]);
        a
    }

    #[test]
    fn writes_golden_map_request() {
        let mut out = [0xEEu8; 80];
        assert_eq!(write_map(&mut out, &request()), Some(MAP_REQUEST_BYTES));
        assert_eq!(out[..60], MAP_REQUEST);
        assert_eq!(out[60], 0xEE);
        assert_eq!(request().encoded_len(), 60);
    }

    #[test]
    fn writes_prefer_failure_and_suggested_address() {
        let asked = MapRequest {
            prefer_failure: true,
            suggested_external_address: Some(Ipv4Addr::new(198, 51, 100, 7)),
            ..request()
        };
        let mut out = [0xEEu8; 80];
        assert_eq!(write_map(&mut out, &asked), Some(64));
        assert_eq!(out[..56], MAP_REQUEST[..56]);
        assert_eq!(out[56..60], [198, 51, 100, 7]);
        assert_eq!(out[60..64], [OPTION_PREFER_FAILURE, 0, 0, 0]);
        assert_eq!(out[64], 0xEE);
    }

    #[test]
    fn writes_ipv6_client_as_is() {
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let asked = MapRequest {
            client: IpAddr::V6(v6),
            protocol: MapProtocol::Udp,
            ..request()
        };
        let mut out = [0u8; 60];
        write_map(&mut out, &asked).unwrap();
        assert_eq!(out[8..24], v6.octets());
        assert_eq!(out[36], PROTOCOL_UDP);
    }

    #[test]
    fn deletion_keeps_the_nonce() {
        let mut out = [0u8; 64];
        let asked = MapRequest {
            prefer_failure: true,
            ..request()
        };
        assert_eq!(write_map(&mut out, &asked.deletion()), Some(60));
        let mut expected = MAP_REQUEST;
        expected[4..8].fill(0);
        assert_eq!(out[..60], expected);
    }

    #[test]
    fn refuses_short_buffers_without_writing() {
        let mut out = [0xEEu8; 63];
        assert_eq!(write_map(&mut out[..59], &request()), None);
        let asked = MapRequest {
            prefer_failure: true,
            ..request()
        };
        assert_eq!(write_map(&mut out, &asked), None);
        assert_eq!(write_announce(&mut out[..23], IpAddr::V4(CLIENT)), None);
        assert_eq!(out, [0xEE; 63]);
    }

    #[test]
    fn writes_golden_announce() {
        let mut out = [0xEEu8; 24];
        assert_eq!(write_announce(&mut out, IpAddr::V4(CLIENT)), Some(24));
        let mut expected = [0u8; 24];
        expected[0] = VERSION;
        expected[18..24].copy_from_slice(&[0xFF, 0xFF, 192, 168, 77, 10]);
        assert_eq!(out, expected);
    }

    #[test]
    fn parses_golden_answer() {
        let response = parse_response(&answer()).unwrap();
        assert_eq!(
            response,
            Response {
                opcode: OPCODE_MAP,
                result: 0,
                lifetime_s: 7200,
                epoch_s: 1000,
                map: Some(MapResponse {
                    nonce: NONCE,
                    protocol: MapProtocol::Tcp,
                    internal_port: 9000,
                    external_port: 19000,
                    external_address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
                }),
            }
        );
        assert!(response.is_success());
        assert!(response.map.unwrap().answers(&request()));
        let other = MapRequest {
            nonce: *b"ringcast-B02",
            ..request()
        };
        assert!(!response.map.unwrap().answers(&other));
    }

    #[test]
    fn parses_answers_captured_from_miniupnpd() {
        let map = parse_response(&MINIUPNPD_MAP).unwrap();
        assert_eq!(map.result_code(), Some(ResultCode::Success));
        assert_eq!((map.lifetime_s, map.epoch_s), (120, 269));
        let body = map.map.unwrap();
        assert!(body.answers(&request()));
        assert_eq!(body.external_port, 19000);
        assert_eq!(
            body.external_address,
            IpAddr::V4(Ipv4Addr::new(11, 0, 0, 2))
        );

        let gone = parse_response(&MINIUPNPD_DELETE_NOT_FOUND).unwrap();
        assert_eq!(gone.result_code(), Some(ResultCode::NoResources));
        assert_eq!(gone.lifetime_s, 30);
        assert!(gone.map.unwrap().answers(&request()));

        let ignored = parse_response(&MINIUPNPD_PREFER_FAILURE_IGNORED).unwrap();
        assert!(ignored.is_success());
        assert_eq!(ignored.map.unwrap().external_port, 19002);

        let refused = parse_response(&MINIUPNPD_UNSUPP_VERSION).unwrap();
        assert_eq!(refused.result_code(), Some(ResultCode::UnsuppVersion));
        assert_eq!(refused.map, None, "error answers may lack the body");
        assert!(is_version_mismatch(&MINIUPNPD_UNSUPP_VERSION));
        assert!(!is_version_mismatch(&MINIUPNPD_MAP));
    }

    #[test]
    fn detects_natpmp_and_other_versions() {
        // RFC 6886 §3.5: NAT-PMP's answer to any version but 0.
        let natpmp = [0, 0, 0, 1, 0, 0, 0, 42];
        assert_eq!(
            parse_response(&natpmp),
            Err(PcpError::UnsupportedVersion { server_version: 0 })
        );
        assert!(is_version_mismatch(&natpmp));
        // Same with the response bit, and cut after the result code.
        assert_eq!(
            parse_response(&[0, 0x81, 0, 1]),
            Err(PcpError::UnsupportedVersion { server_version: 0 })
        );
        // Other NAT-PMP traffic is not a version refusal.
        let mut out = [0u8; 16];
        let n = super::super::natpmp::write_external_address_request(&mut out).unwrap();
        assert_eq!(parse_response(&out[..n]), Err(PcpError::Short));
        assert_eq!(
            parse_response(&[0, 0x80, 0, 0, 0, 0, 0, 1, 11, 0, 0, 2]),
            Err(PcpError::NotAResponse)
        );
        // A PCP-shaped answer of another version (miniupnpd answers a
        // version-1 request in version 1).
        let mut v1 = MINIUPNPD_UNSUPP_VERSION;
        v1[0] = 1;
        assert_eq!(
            parse_response(&v1),
            Err(PcpError::UnsupportedVersion { server_version: 1 })
        );
        v1[1] = OPCODE_MAP;
        assert_eq!(parse_response(&v1), Err(PcpError::NotAResponse));
        assert_eq!(parse_response(&[1]), Err(PcpError::Short));
        assert_eq!(
            PcpError::UnsupportedVersion { server_version: 0 }.to_string(),
            "gateway speaks NAT-PMP (version 0), not PCP"
        );
    }

    #[test]
    fn rejects_requests_and_bad_lengths() {
        assert_eq!(parse_response(&[]), Err(PcpError::Short));
        assert_eq!(parse_response(&[2]), Err(PcpError::Short));
        assert_eq!(parse_response(&MAP_REQUEST), Err(PcpError::NotAResponse));
        let a = answer();
        for cut in [2, 4, 20] {
            assert_eq!(parse_response(&a[..cut]), Err(PcpError::Short), "cut {cut}");
        }
        // A success needs its body; the header alone is short.
        assert_eq!(parse_response(&a[..24]), Err(PcpError::Short));
        assert_eq!(parse_response(&a[..56]), Err(PcpError::Short));
        assert_eq!(parse_response(&a[..59]), Err(PcpError::Malformed));
        let mut big = [0u8; MESSAGE_BYTES_MAX + ALIGN_BYTES];
        big[..60].copy_from_slice(&a);
        big[60] = 0x80; // one optional option padding the rest
        let fill = (MESSAGE_BYTES_MAX - 64) as u16;
        big[62..64].copy_from_slice(&fill.to_be_bytes());
        assert!(parse_response(&big[..MESSAGE_BYTES_MAX]).is_ok());
        assert_eq!(parse_response(&big), Err(PcpError::Malformed));
    }

    #[test]
    fn walks_options_safely() {
        let mut buf = [0u8; 80];
        buf[..60].copy_from_slice(&answer());
        // A 5-byte option takes 4 + 8 bytes; then a bare PREFER_FAILURE.
        buf[60..64].copy_from_slice(&[0x80, 0, 0, 5]);
        buf[72..76].copy_from_slice(&[OPTION_PREFER_FAILURE, 0, 0, 0]);
        assert!(parse_response(&buf[..76]).is_ok());
        assert_eq!(parse_response(&buf[..68]), Err(PcpError::Malformed));
        buf[62..64].copy_from_slice(&[0xFF, 0xFF]);
        assert_eq!(parse_response(&buf[..76]), Err(PcpError::Malformed));
    }

    #[test]
    fn map_body_rules() {
        let mut a = answer();
        a[36] = 132; // SCTP: not a protocol this client maps
        assert_eq!(parse_response(&a), Err(PcpError::Malformed));
        a[3] = ResultCode::UnsuppProtocol as u8;
        assert_eq!(parse_response(&a).unwrap().map, None);
        // Error answers may stop after the header.
        let mut header = [0u8; 24];
        header.copy_from_slice(&answer()[..24]);
        header[3] = ResultCode::NotAuthorized as u8;
        let refused = parse_response(&header).unwrap();
        assert_eq!((refused.result, refused.map), (2, None));
        // Non-MAP opcodes carry no MAP body.
        let mut announce = [0u8; 24];
        announce[..2].copy_from_slice(&[VERSION, RESPONSE_BIT]);
        let response = parse_response(&announce).unwrap();
        assert_eq!((response.opcode, response.map), (OPCODE_ANNOUNCE, None));
        let mut peer = [0u8; 84];
        peer[..2].copy_from_slice(&[VERSION, RESPONSE_BIT | OPCODE_PEER]);
        peer[80..84].copy_from_slice(&[0x80, 0, 0, 0]);
        assert!(parse_response(&peer).is_ok());
        peer[83] = 4; // that option now runs past the end
        assert_eq!(parse_response(&peer), Err(PcpError::Malformed));
        // An IPv6 external address stays IPv6.
        let mut v6 = answer();
        v6[44..60].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let map = parse_response(&v6).unwrap().map.unwrap();
        assert_eq!(map.external_address, IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn result_codes_and_lifetimes() {
        for code in 0..=13u8 {
            let known = ResultCode::from_u8(code).unwrap();
            assert_eq!(known as u8, code);
        }
        assert_eq!(ResultCode::from_u8(14), None);
        assert_eq!(ResultCode::from_u8(255), None);
        let long: [u8; 9] = [1, 2, 3, 4, 5, 6, 9, 12, 13];
        for code in 0..=13u8 {
            let known = ResultCode::from_u8(code).unwrap();
            assert_eq!(known.is_long_lived(), long.contains(&code), "{known}");
        }
        assert_eq!(ResultCode::NotAuthorized.to_string(), "NOT_AUTHORIZED");
        assert_eq!(
            ResultCode::CannotProvideExternal.to_string(),
            "CANNOT_PROVIDE_EXTERNAL"
        );
        assert_eq!(
            ResultCode::ExcessiveRemotePeers.name(),
            "EXCESSIVE_REMOTE_PEERS"
        );
    }

    #[test]
    fn epoch_check_follows_rfc_6887() {
        // Steady: 100 s on both clocks.
        assert!(epoch_is_consistent(1000, 5_000, 1100, 105_000));
        // Reordering: one second backwards is tolerated, two are not.
        assert!(epoch_is_consistent(1000, 5_000, 999, 5_500));
        assert!(!epoch_is_consistent(1000, 5_000, 998, 5_500));
        // Restart: the epoch starts again near 0 (miniupnpd: 388 -> 1).
        assert!(!epoch_is_consistent(388, 0, 1, 1_400));
        // Server lags: C = 100 s, S must be >= 100 - 100/16 - 2 = 91.75 s.
        assert!(epoch_is_consistent(0, 0, 92, 100_000));
        assert!(!epoch_is_consistent(0, 0, 91, 100_000));
        // Server runs ahead: S = 100 s, C must be >= 91.75 s.
        assert!(epoch_is_consistent(0, 0, 100, 91_750));
        assert!(!epoch_is_consistent(0, 0, 100, 91_000));
        // Extremes do not overflow.
        assert!(!epoch_is_consistent(0, 0, u32::MAX, 0));
        assert!(!epoch_is_consistent(0, 0, 0, u64::MAX));
        assert!(!epoch_is_consistent(u32::MAX, u64::MAX, 0, 0));
        // A client clock that went backwards (caller bug) is inconsistent
        // only if the difference is large.
        assert!(epoch_is_consistent(10, 10_000, 10, 9_000));
    }

    #[test]
    fn retry_delays_follow_rfc_6887() {
        assert_eq!(retry_delay_ms(0, 0), 3_000);
        assert_eq!(retry_delay_ms(1, 0), 6_000);
        assert_eq!(retry_delay_ms(8, 0), 768_000);
        assert_eq!(retry_delay_ms(9, 0), RETRY_MAX_MS);
        assert_eq!(retry_delay_ms(u32::MAX, 0), RETRY_MAX_MS);
        assert_eq!(retry_delay_ms(0, 100), 3_300);
        assert_eq!(retry_delay_ms(0, -100), 2_700);
        assert_eq!(retry_delay_ms(0, i16::MAX), 3_300);
        assert_eq!(retry_delay_ms(0, i16::MIN), 2_700);
    }

    #[test]
    fn address_fields_round_trip() {
        let v4 = IpAddr::V4(CLIENT);
        assert_eq!(address_from_field(address_field(v4)), v4);
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6));
        assert_eq!(address_from_field(address_field(v6)), v6);
        assert_eq!(
            address_field(IpAddr::V4(Ipv4Addr::UNSPECIFIED))[10..],
            [0xFF, 0xFF, 0, 0, 0, 0]
        );
        for p in [MapProtocol::Tcp, MapProtocol::Udp] {
            assert_eq!(protocol_from_number(protocol_number(p)), Some(p));
        }
        assert_eq!(protocol_from_number(0), None);
    }

    #[test]
    fn never_panics_on_noise() {
        let mut noise = [0u8; 128];
        let mut x = 0x2545_F491u32;
        for round in 0..4000u32 {
            for byte in noise.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *byte = x as u8;
            }
            noise[0] = [0, 1, 2, 2, 2][(round % 5) as usize];
            if round % 2 == 0 {
                noise[1] |= RESPONSE_BIT;
                noise[1] &= RESPONSE_BIT | 3;
            }
            let len = (round as usize * 4 + round as usize % 4) % noise.len();
            let _ = parse_response(&noise[..len]);
            let _ = is_version_mismatch(&noise[..len]);
        }
    }
}
