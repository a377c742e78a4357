//! On-demand multicast paths as IPTV playlists write them for udpxy and
//! msd_lite, so ringcast can replace either without editing a playlist:
//! `/udp/[source@]group[:port]` and `/rtp/...`, the group being IPv4 or a
//! bracketed IPv6 address.
//!
//! Accepted forms, learned from the originals (behaviour only, no code):
//! - udpxy (`chipmunk/rparse.c`, `parse_udprelay`, github.com/pcherenkov/udpxy)
//!   splits address and port at the first of `: % ~ + - ^` and takes an
//!   optional `source@` prefix for source-specific multicast;
//! - msd_lite (`msd_http_req_url_parse` in `src/msd_lite.c` and
//!   `sa_addr_port_from_str` in liblcb, github.com/rozhuk-im/msd_lite) allows
//!   `[v6]:port` and a missing port, which then defaults to 1234, and reads
//!   options such as `ifname` from the query string.
//!
//! The query string (msd_lite's `ifname`, `rejoin_time`, ...) is ignored
//! here. A percent-encoded colon (`%3A`) is read as `:`. Unlike udpxy, the
//! port must be all digits (an optional trailing `/` is allowed) and 65535
//! is valid. IPv6 groups must be bracketed: `ff15::1:1234` is ambiguous.
//! The group must be multicast; a source must be a unicast address of the
//! same family. [`parse_group_port`] is the same grammar without the path
//! prefix, for `udp://[source@]group:port` source URLs in the config.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr};

/// Port used when a path gives none (msd_lite's default, also VLC's).
pub const DEFAULT_PORT: u16 = 1234;

/// Characters udpxy accepts between group and port.
const PORT_SEPARATORS: [char; 6] = [':', '%', '~', '+', '-', '^'];

/// What the multicast datagrams carry, as the path prefix claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `/udp/`: TS packets straight in UDP (udpxy also strips RTP here when
    /// it finds it).
    Udp,
    /// `/rtp/`: TS packets in RTP (RFC 2250).
    Rtp,
}

/// A multicast channel named by a request path. Equal values name the same
/// channel, so the value itself is the key for sharing one join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OnDemand {
    pub protocol: Protocol,
    pub group: IpAddr,
    pub port: u16,
    /// Source for source-specific multicast (RFC 4607), if given.
    pub source: Option<IpAddr>,
}

/// Why an on-demand path cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpxyError {
    /// Nothing after the `/udp/` or `/rtp/` prefix.
    Empty,
    /// The group is not an IPv4 or bracketed IPv6 address.
    BadGroup,
    /// The group is not a multicast address.
    NotMulticast,
    /// The port is not a number in 1..=65535.
    BadPort,
    /// The port is 0.
    PortZero,
    /// The source is not a unicast address.
    BadSource,
    /// Source and group are of different address families.
    FamilyMismatch,
}

impl fmt::Display for UdpxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UdpxyError::Empty => "no multicast group given",
            UdpxyError::BadGroup => "group is not an IPv4 address or a bracketed IPv6 address",
            UdpxyError::NotMulticast => "group is not a multicast address",
            UdpxyError::BadPort => "port is not a number from 1 to 65535",
            UdpxyError::PortZero => "port 0 cannot be joined",
            UdpxyError::BadSource => "source is not a unicast IP address",
            UdpxyError::FamilyMismatch => "source and group are not both IPv4 or both IPv6",
        })
    }
}

/// Reads an on-demand path. `Ok(None)`: the path is not `/udp/...` or
/// `/rtp/...`; `Err`: it is, but cannot be served. A query or fragment is
/// ignored.
pub fn parse_path(path: &str) -> Result<Option<OnDemand>, UdpxyError> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let (protocol, rest) = if let Some(rest) = path.strip_prefix("/udp/") {
        (Protocol::Udp, rest)
    } else if let Some(rest) = path.strip_prefix("/rtp/") {
        (Protocol::Rtp, rest)
    } else {
        return Ok(None);
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (group, port, source) = parse_group_port(rest)?;
    Ok(Some(OnDemand {
        protocol,
        group,
        port,
        source,
    }))
}

/// Reads `[source@]group[<separator>port]` into group, port and source.
pub fn parse_group_port(text: &str) -> Result<(IpAddr, u16, Option<IpAddr>), UdpxyError> {
    if text.is_empty() {
        return Err(UdpxyError::Empty);
    }
    let (source, group_port) = match text.split_once('@') {
        Some((source, group_port)) => (Some(parse_source(source)?), group_port),
        None => (None, text),
    };
    let (group, port) = parse_address_port(group_port)?;
    if !group.is_multicast() {
        return Err(UdpxyError::NotMulticast);
    }
    if source.is_some_and(|source| source.is_ipv4() != group.is_ipv4()) {
        return Err(UdpxyError::FamilyMismatch);
    }
    Ok((group, port, source))
}

fn parse_source(text: &str) -> Result<IpAddr, UdpxyError> {
    let inner = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    let source: IpAddr = inner.parse().map_err(|_| UdpxyError::BadSource)?;
    let broadcast = source == IpAddr::V4(Ipv4Addr::BROADCAST);
    if source.is_multicast() || source.is_unspecified() || broadcast {
        return Err(UdpxyError::BadSource);
    }
    Ok(source)
}

/// `[v6]`, `[v6]:port`, `v4`, `v4<separator>port`.
fn parse_address_port(text: &str) -> Result<(IpAddr, u16), UdpxyError> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or(UdpxyError::BadGroup)?;
        let group = inner.parse().map_err(|_| UdpxyError::BadGroup)?;
        return Ok((group, parse_port_suffix(after)?));
    }
    let (address, after) = match text.find(PORT_SEPARATORS) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let group: Ipv4Addr = address.parse().map_err(|_| UdpxyError::BadGroup)?;
    Ok((IpAddr::V4(group), parse_port_suffix(after)?))
}

/// "" (default port) or a separator followed by the port digits.
fn parse_port_suffix(text: &str) -> Result<u16, UdpxyError> {
    if text.is_empty() {
        return Ok(DEFAULT_PORT);
    }
    let encoded_colon = text
        .get(..3)
        .is_some_and(|head| head.eq_ignore_ascii_case("%3a"));
    let digits = if encoded_colon {
        &text[3..]
    } else if text.starts_with(PORT_SEPARATORS) {
        &text[1..]
    } else {
        return Err(UdpxyError::BadPort);
    };
    parse_port(digits)
}

fn parse_port(digits: &str) -> Result<u16, UdpxyError> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(UdpxyError::BadPort);
    }
    let port: u32 = digits.parse().map_err(|_| UdpxyError::BadPort)?;
    match u16::try_from(port) {
        Ok(0) => Err(UdpxyError::PortZero),
        Ok(port) => Ok(port),
        Err(_) => Err(UdpxyError::BadPort),
    }
}

/// Writes an address, bracketing IPv6 so a port can follow.
fn write_address(f: &mut fmt::Formatter<'_>, address: IpAddr) -> fmt::Result {
    match address {
        IpAddr::V4(v4) => write!(f, "{v4}"),
        IpAddr::V6(v6) => write!(f, "[{v6}]"),
    }
}

/// The canonical path, e.g. `/udp/10.0.0.1@239.1.1.1:1234`, usable as a
/// channel name.
impl fmt::Display for OnDemand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.protocol {
            Protocol::Udp => "/udp/",
            Protocol::Rtp => "/rtp/",
        })?;
        if let Some(source) = self.source {
            write_address(f, source)?;
            f.write_str("@")?;
        }
        write_address(f, self.group)?;
        write!(f, ":{}", self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv6Addr;
    extern crate std;
    use std::string::ToString;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn v6(text: &str) -> IpAddr {
        IpAddr::V6(text.parse::<Ipv6Addr>().unwrap())
    }

    fn udp(group: IpAddr, port: u16, source: Option<IpAddr>) -> OnDemand {
        OnDemand {
            protocol: Protocol::Udp,
            group,
            port,
            source,
        }
    }

    #[test]
    fn udpxy_forms_and_separators() {
        let group = v4(239, 1, 2, 3);
        for path in [
            "/udp/239.1.2.3:5000",
            "/udp/239.1.2.3%5000",
            "/udp/239.1.2.3~5000",
            "/udp/239.1.2.3+5000",
            "/udp/239.1.2.3-5000",
            "/udp/239.1.2.3^5000",
            "/udp/239.1.2.3%3A5000",
            "/udp/239.1.2.3%3a5000",
            "/udp/239.1.2.3:5000/",
            "/udp/239.1.2.3:5000?ifname=eth1&rejoin_time=30",
            "/udp/[239.1.2.3]:5000",
        ] {
            assert_eq!(parse_path(path), Ok(Some(udp(group, 5000, None))), "{path}");
        }
        let rtp = parse_path("/rtp/239.1.2.3:65535").unwrap().unwrap();
        assert_eq!(rtp.protocol, Protocol::Rtp);
        assert_eq!(rtp.port, 65535);
    }

    #[test]
    fn msd_lite_default_port_and_ipv6() {
        assert_eq!(
            parse_path("/udp/239.1.2.3"),
            Ok(Some(udp(v4(239, 1, 2, 3), 1234, None)))
        );
        assert_eq!(
            parse_path("/udp/[ff15::1]:1234"),
            Ok(Some(udp(v6("ff15::1"), 1234, None)))
        );
        assert_eq!(
            parse_path("/udp/[ff15::1]"),
            Ok(Some(udp(v6("ff15::1"), DEFAULT_PORT, None)))
        );
    }

    #[test]
    fn source_specific_multicast() {
        let expected = udp(v4(232, 1, 1, 1), 1234, Some(v4(10, 0, 0, 1)));
        assert_eq!(
            parse_path("/udp/10.0.0.1@232.1.1.1:1234"),
            Ok(Some(expected))
        );
        let expected = udp(v6("ff3e::8000:1"), 5000, Some(v6("2001:db8::1")));
        assert_eq!(
            parse_path("/udp/[2001:db8::1]@[ff3e::8000:1]:5000"),
            Ok(Some(expected))
        );
        assert_eq!(
            parse_path("/udp/2001:db8::1@[ff3e::8000:1]:5000"),
            Ok(Some(expected))
        );
    }

    #[test]
    fn not_on_demand_paths() {
        for path in [
            "/",
            "/channel/x.ts",
            "/udp",
            "/udpx/239.1.1.1:1",
            "/UDP/239.1.1.1:1",
        ] {
            assert_eq!(parse_path(path), Ok(None), "{path}");
        }
    }

    #[test]
    fn malformed_on_demand_paths() {
        let cases = [
            ("/udp/", UdpxyError::Empty),
            ("/rtp/?x", UdpxyError::Empty),
            ("/udp/10.0.0.1:1234", UdpxyError::NotMulticast),
            ("/udp/[2001:db8::1]:1234", UdpxyError::NotMulticast),
            ("/udp/239.1.1.1:0", UdpxyError::PortZero),
            ("/udp/239.1.1.1:65536", UdpxyError::BadPort),
            ("/udp/239.1.1.1:123456", UdpxyError::BadPort),
            ("/udp/239.1.1.1:12a", UdpxyError::BadPort),
            ("/udp/239.1.1.1:", UdpxyError::BadPort),
            ("/udp/239.1.1.1:1234/x", UdpxyError::BadPort),
            ("/udp/[ff15::1]x1234", UdpxyError::BadPort),
            ("/udp/channel:1234", UdpxyError::BadGroup),
            ("/udp/239.1.1:1234", UdpxyError::BadGroup),
            ("/udp/ff15::1:1234", UdpxyError::BadGroup),
            ("/udp/[ff15::1:1234", UdpxyError::BadGroup),
            ("/udp/@239.1.1.1:1234", UdpxyError::BadSource),
            ("/udp/host@239.1.1.1:1234", UdpxyError::BadSource),
            ("/udp/239.9.9.9@239.1.1.1:1234", UdpxyError::BadSource),
            ("/udp/0.0.0.0@239.1.1.1:1234", UdpxyError::BadSource),
            ("/udp/255.255.255.255@239.1.1.1:1", UdpxyError::BadSource),
            ("/udp/10.0.0.1@10.0.0.1@239.1.1.1:1", UdpxyError::BadGroup),
            ("/udp/10.0.0.1@[ff3e::1]:1234", UdpxyError::FamilyMismatch),
        ];
        for (path, error) in cases {
            assert_eq!(parse_path(path), Err(error), "{path}");
        }
    }

    #[test]
    fn group_port_for_source_urls() {
        assert_eq!(
            parse_group_port("239.0.0.1:1234"),
            Ok((v4(239, 0, 0, 1), 1234, None))
        );
        let ssm = parse_group_port("192.168.1.1@232.0.0.1:1234");
        assert_eq!(ssm, Ok((v4(232, 0, 0, 1), 1234, Some(v4(192, 168, 1, 1)))));
        assert_eq!(parse_group_port(""), Err(UdpxyError::Empty));
    }

    #[test]
    fn canonical_display_round_trips() {
        for path in [
            "/udp/239.1.2.3:5000",
            "/rtp/10.0.0.1@232.1.1.1:1234",
            "/udp/[2001:db8::1]@[ff3e::8000:1]:5000",
        ] {
            let on_demand = parse_path(path).unwrap().unwrap();
            assert_eq!(on_demand.to_string(), path);
        }
        let loose = parse_path("/udp/239.1.2.3~5000/?a").unwrap().unwrap();
        assert_eq!(loose.to_string(), "/udp/239.1.2.3:5000");
        assert_eq!(UdpxyError::PortZero.to_string(), "port 0 cannot be joined");
    }
}
