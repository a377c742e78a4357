//! Port mapping on the home router: ringcast opens its peer port with UPnP
//! IGD (v1 and v2), PCP (RFC 6887) or NAT-PMP (RFC 6886), keeps it open and
//! closes it on exit, and says honestly when that is impossible.
//!
//! Everything here is sans-IO. The codecs ([`xml`], [`desc`], [`soap`],
//! [`httpc`], [`natpmp`], [`pcp`], and `wire::ssdp`) turn bytes into values
//! and back. [`Mapper`] is the state machine for one mapping: it asks its
//! driver for I/O through [`Io`] (a datagram, one HTTP exchange, the default
//! route, a record to keep), is told the results, and keeps a [`Report`] that
//! `/status` and the log show. Time is passed in; nothing here reads a clock,
//! touches a socket or allocates after [`Mapper::new`].

pub mod desc;
pub mod httpc;
pub mod mapper;
pub mod natpmp;
pub mod pcp;
pub mod soap;
pub mod xml;

use core::fmt::{self, Write as _};
use core::net::{Ipv4Addr, SocketAddrV4};

pub use mapper::{Io, Mapper};

/// Bytes of a PCP mapping nonce (RFC 6887 §11.1).
pub const PCP_NONCE_BYTES: usize = 12;
/// Mapping methods a config may list.
pub const METHODS_MAX: usize = 3;
/// Bytes of the human-readable detail in a [`Report`].
pub const DETAIL_BYTES_MAX: usize = 160;
/// Bytes of the mapping's description on the router.
pub const LABEL_BYTES_MAX: usize = 32;

/// A way to ask the router for a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Upnp,
    Pcp,
    NatPmp,
}

impl Method {
    pub const fn name(self) -> &'static str {
        match self {
            Method::Upnp => "upnp",
            Method::Pcp => "pcp",
            Method::NatPmp => "natpmp",
        }
    }

    /// Parses `upnp`, `pcp` or `natpmp` (also `nat-pmp`, `igd`).
    pub fn parse(text: &str) -> Option<Method> {
        let text = text.trim();
        let is = |name: &str| text.eq_ignore_ascii_case(name);
        if is("upnp") || is("igd") {
            Some(Method::Upnp)
        } else if is("pcp") {
            Some(Method::Pcp)
        } else if is("natpmp") || is("nat-pmp") {
            Some(Method::NatPmp)
        } else {
            None
        }
    }
}

/// The protocol that made the mapping, as `/status` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Used {
    IgdV1,
    IgdV2,
    Pcp,
    NatPmp,
}

impl Used {
    pub const fn name(self) -> &'static str {
        match self {
            Used::IgdV1 => "upnp-igd1",
            Used::IgdV2 => "upnp-igd2",
            Used::Pcp => "pcp",
            Used::NatPmp => "natpmp",
        }
    }
}

/// Whether peers on the internet can reach the mapped port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Mapping is switched off in the config.
    Disabled,
    /// Looking for a gateway or asking it (the first attempt is running).
    Searching,
    /// The router forwards the external address:port to us.
    Mapped,
    /// The router's own external address is private or CGNAT: a mapping on
    /// it would not make us reachable.
    DoubleNat,
    /// No router answered any of the configured methods.
    NoGateway,
    /// A router answered and refused (see the error code).
    Refused,
    /// This box itself has a public address: there is no NAT to open.
    PublicAddress,
}

impl State {
    pub const fn name(self) -> &'static str {
        match self {
            State::Disabled => "disabled",
            State::Searching => "searching",
            State::Mapped => "mapped",
            State::DoubleNat => "double-nat",
            State::NoGateway => "no-gateway",
            State::Refused => "refused",
            State::PublicAddress => "public-address",
        }
    }
}

/// What one mapping should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Methods to try, in order.
    pub methods: heapless::Vec<Method, METHODS_MAX>,
    /// Our port (TCP).
    pub internal_port: u16,
    /// The external port wanted; the router may give another one.
    pub external_port: u16,
    /// Lease asked for, in seconds; renewed at half. 0 asks for a permanent
    /// mapping (UPnP only; PCP and NAT-PMP need a finite one).
    pub lease_s: u32,
    /// How often a live mapping is checked (and a failed search retried).
    pub check_interval_ms: u64,
    /// Description shown in the router's mapping list.
    pub label: heapless::String<LABEL_BYTES_MAX>,
}

/// The route to the gateway: its address and ours on that link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub gateway: Ipv4Addr,
    pub local: Ipv4Addr,
}

/// What is kept across restarts for a PCP mapping: the nonce is the only
/// way to renew or delete it later (RFC 6887 §11.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpRecord {
    pub nonce: [u8; PCP_NONCE_BYTES],
    pub gateway: Ipv4Addr,
    pub internal_port: u16,
    pub external_port: u16,
}

impl PcpRecord {
    /// Bytes of the encoded record.
    pub const BYTES: usize = 1 + PCP_NONCE_BYTES + 4 + 2 + 2;
    /// Format of the encoded record (its first byte).
    const FORMAT: u8 = 1;

    /// The record as bytes: format, nonce, gateway, ports (big-endian).
    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut bytes = [0u8; Self::BYTES];
        bytes[0] = Self::FORMAT;
        bytes[1..13].copy_from_slice(&self.nonce);
        bytes[13..17].copy_from_slice(&self.gateway.octets());
        bytes[17..19].copy_from_slice(&self.internal_port.to_be_bytes());
        bytes[19..21].copy_from_slice(&self.external_port.to_be_bytes());
        bytes
    }

    /// Reads [`PcpRecord::encode`]'s bytes; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::BYTES || bytes[0] != Self::FORMAT {
            return None;
        }
        let mut nonce = [0u8; PCP_NONCE_BYTES];
        nonce.copy_from_slice(&bytes[1..13]);
        Some(PcpRecord {
            nonce,
            gateway: Ipv4Addr::new(bytes[13], bytes[14], bytes[15], bytes[16]),
            internal_port: u16::from_be_bytes([bytes[17], bytes[18]]),
            external_port: u16::from_be_bytes([bytes[19], bytes[20]]),
        })
    }
}

/// The mapping as `/status` and the log show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub state: State,
    pub method: Option<Used>,
    pub internal: Option<SocketAddrV4>,
    pub external: Option<SocketAddrV4>,
    pub gateway: Option<Ipv4Addr>,
    /// Lease granted, in seconds (0 = permanent).
    pub lease_s: u32,
    /// When the granted lease runs out (clock of the caller), if finite.
    pub expires_ms: Option<u64>,
    /// The last error code a router answered with (UPnP, PCP or NAT-PMP).
    pub error: Option<u16>,
    pub detail: heapless::String<DETAIL_BYTES_MAX>,
    /// Mappings made (first or after a search).
    pub maps: u64,
    /// Leases renewed.
    pub renewals: u64,
    /// Periodic checks that found the mapping in place.
    pub checks: u64,
    /// Mappings found gone (router restart) and made again.
    pub remaps: u64,
}

impl Report {
    fn new(state: State) -> Self {
        Report {
            state,
            method: None,
            internal: None,
            external: None,
            gateway: None,
            lease_s: 0,
            expires_ms: None,
            error: None,
            detail: heapless::String::new(),
            maps: 0,
            renewals: 0,
            checks: 0,
            remaps: 0,
        }
    }

    /// A report for a mapping switched off.
    pub fn disabled() -> Self {
        let mut report = Report::new(State::Disabled);
        set_detail(&mut report.detail, format_args!("port mapping is off"));
        report
    }

    /// True only when the router forwards a public address:port to us.
    pub fn reachable(&self) -> bool {
        match self.state {
            State::Mapped => self.external.is_some_and(|a| is_public(*a.ip())),
            State::PublicAddress => true,
            _ => false,
        }
    }

    /// Seconds of lease left at `now_ms` (0 when permanent or unknown).
    pub fn lease_left_s(&self, now_ms: u64) -> u64 {
        self.expires_ms
            .map_or(0, |expires| expires.saturating_sub(now_ms) / 1000)
    }

    /// The part of the report a person cares about changing: the log shows
    /// a line when it does, and stays quiet when a retry ends the same way.
    pub fn headline(&self) -> (State, Option<Used>, Option<SocketAddrV4>, Option<u16>, &str) {
        (
            self.state,
            self.method,
            self.external,
            self.error,
            self.detail.as_str(),
        )
    }
}

/// Replaces `detail` with the formatted text, cut to fit.
pub(crate) fn set_detail(detail: &mut heapless::String<DETAIL_BYTES_MAX>, text: fmt::Arguments) {
    detail.clear();
    let mut cut = Cut(detail);
    let _ = cut.write_fmt(text);
}

/// A writer that keeps what fits and drops the rest (on a char boundary).
struct Cut<'a>(&'a mut heapless::String<DETAIL_BYTES_MAX>);

impl fmt::Write for Cut<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for character in text.chars() {
            if self.0.push(character).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// True for an address the internet can route to us: not private
/// (RFC 1918), not shared CGNAT space (RFC 6598, 100.64.0.0/10), not
/// loopback, link-local, multicast, reserved, benchmarking or unspecified.
pub fn is_public(address: Ipv4Addr) -> bool {
    let [a, b, _, _] = address.octets();
    let cgnat = a == 100 && (b & 0xC0) == 64;
    let benchmarking = a == 198 && (b & 0xFE) == 18;
    !(address.is_private()
        || address.is_loopback()
        || address.is_link_local()
        || address.is_multicast()
        || address.is_broadcast()
        || address.is_unspecified()
        || address.is_documentation()
        || cgnat
        || benchmarking
        || a == 0
        || a >= 240)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_exclude_private_and_cgnat() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "198.18.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "11.0.0.2",
            "100.63.255.255",
            "100.128.0.1",
            "8.8.8.8",
            "172.32.0.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn pcp_record_round_trips() {
        let record = PcpRecord {
            nonce: [7; PCP_NONCE_BYTES],
            gateway: Ipv4Addr::new(192, 168, 77, 1),
            internal_port: 7144,
            external_port: 40000,
        };
        assert_eq!(PcpRecord::decode(&record.encode()), Some(record));
        assert_eq!(PcpRecord::decode(&record.encode()[1..]), None);
    }

    #[test]
    fn methods_parse_by_name() {
        assert_eq!(Method::parse("UPnP"), Some(Method::Upnp));
        assert_eq!(Method::parse("nat-pmp"), Some(Method::NatPmp));
        assert_eq!(Method::parse(" pcp "), Some(Method::Pcp));
        assert_eq!(Method::parse("smtp"), None);
    }

    #[test]
    fn detail_is_cut_to_fit() {
        let mut detail = heapless::String::new();
        let long = "x".repeat(400);
        set_detail(&mut detail, format_args!("{long}"));
        assert_eq!(detail.len(), DETAIL_BYTES_MAX);
    }
}
