//! SSDP, the discovery part of UPnP Device Architecture 1.1 (§1): rendering
//! an `M-SEARCH` for the IGD client, and parsing the three datagrams a control
//! point or a device meets: search responses (`HTTP/1.1 200 OK`), search
//! requests (`M-SEARCH * HTTP/1.1`) and announcements (`NOTIFY * HTTP/1.1`).
//!
//! Heads are tokenised by `httparse` into at most [`SSDP_HEADERS_MAX`] slots
//! and every result borrows from the datagram. Header names match in any
//! case, values are trimmed, and a datagram whose head does not end with the
//! blank line is refused (a datagram is never "incomplete"). Nothing here
//! does I/O or allocates.

use core::fmt::Write;
use core::net::{Ipv4Addr, SocketAddrV4};

use httparse::{Header, EMPTY_HEADER};

use crate::wire::{Full, SliceWriter};

/// The SSDP multicast group and port (UDA 1.1 §1.1.2).
pub const SSDP_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);

/// Header fields in one SSDP datagram (miniupnpd sends 10).
pub const SSDP_HEADERS_MAX: usize = 24;

/// The smallest and largest `MX` (seconds) UDA 1.1 §1.3.2 allows.
pub const MX_MIN_S: u8 = 1;
pub const MX_MAX_S: u8 = 5;

/// The `USER-AGENT` / `SERVER` product tokens UDA 1.1 asks for:
/// `OS/version UPnP/1.1 product/version`.
pub const USER_AGENT: &str = concat!("Linux/1 UPnP/1.1 ringcast/", env!("CARGO_PKG_VERSION"));

/// The `MAN` value of a search request, quotes included.
const MAN_DISCOVER: &str = "\"ssdp:discover\"";

/// A unicast answer to our `M-SEARCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchResponse<'a> {
    /// URL of the root device description.
    pub location: &'a str,
    /// The search target answered; empty if the device left it out.
    pub st: &'a str,
    /// Unique service name; empty if the device left it out.
    pub usn: &'a str,
    /// `CACHE-CONTROL: max-age`, if present and valid.
    pub max_age_s: Option<u32>,
}

/// A multicast or unicast `M-SEARCH` from a control point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchRequest<'a> {
    pub st: &'a str,
    /// `MX` clamped to `MX_MIN_S..=MX_MAX_S`; `MX_MIN_S` when absent (a
    /// unicast search has none).
    pub mx: u8,
    /// `MAN` is exactly `"ssdp:discover"` with the quotes. A responder
    /// ignores requests where this is false.
    pub man_discover: bool,
    pub user_agent: Option<&'a str>,
}

/// A `NOTIFY` announcement (`ssdp:alive`, `ssdp:byebye`, `ssdp:update`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notify<'a> {
    pub nt: &'a str,
    pub nts: &'a str,
    pub usn: &'a str,
    /// Absent in `ssdp:byebye`.
    pub location: Option<&'a str>,
    /// `CACHE-CONTROL: max-age`, if present and valid.
    pub max_age_s: Option<u32>,
}

/// Renders an `M-SEARCH` for `st` into `out`; returns its length. `mx` is
/// clamped to `MX_MIN_S..=MX_MAX_S`. An `st` holding anything but visible
/// ASCII would break the message and is refused like a full buffer.
pub fn write_msearch(out: &mut [u8], st: &str, mx: u8) -> Result<usize, Full> {
    if st.is_empty() || !st.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(Full);
    }
    let mx = mx.clamp(MX_MIN_S, MX_MAX_S);
    let mut w = SliceWriter::new(out);
    write!(
        w,
        "M-SEARCH * HTTP/1.1\r\n\
         HOST: {SSDP_GROUP}\r\n\
         MAN: {MAN_DISCOVER}\r\n\
         MX: {mx}\r\n\
         ST: {st}\r\n\
         USER-AGENT: {USER_AGENT}\r\n\
         \r\n"
    )?;
    Ok(w.len())
}

/// Parses a search response; `None` unless it is `HTTP/1.x 200` with a
/// `LOCATION`.
pub fn parse_search_response(datagram: &[u8]) -> Option<SearchResponse<'_>> {
    let mut slots = [EMPTY_HEADER; SSDP_HEADERS_MAX];
    let mut response = httparse::Response::new(&mut slots);
    if !response.parse(datagram).ok()?.is_complete() || response.code? != 200 {
        return None;
    }
    let headers: &[Header<'_>] = response.headers;
    Some(SearchResponse {
        location: non_empty(field(headers, "location")?)?,
        st: field(headers, "st").unwrap_or(""),
        usn: field(headers, "usn").unwrap_or(""),
        max_age_s: field(headers, "cache-control").and_then(max_age_s),
    })
}

/// Parses an `M-SEARCH * HTTP/1.x`; `None` if it is not one, has no `ST`,
/// or has a non-numeric `MX`.
pub fn parse_search_request(datagram: &[u8]) -> Option<SearchRequest<'_>> {
    let mut slots = [EMPTY_HEADER; SSDP_HEADERS_MAX];
    let headers = parse_star_request(datagram, "M-SEARCH", &mut slots)?;
    let mx = match field(headers, "mx") {
        None => MX_MIN_S,
        Some(text) => parse_mx(text)?,
    };
    Some(SearchRequest {
        st: non_empty(field(headers, "st")?)?,
        mx,
        man_discover: field(headers, "man") == Some(MAN_DISCOVER),
        user_agent: field(headers, "user-agent"),
    })
}

/// Parses a `NOTIFY * HTTP/1.x`; `None` if it is not one or lacks `NT`,
/// `NTS` or `USN`.
pub fn parse_notify(datagram: &[u8]) -> Option<Notify<'_>> {
    let mut slots = [EMPTY_HEADER; SSDP_HEADERS_MAX];
    let headers = parse_star_request(datagram, "NOTIFY", &mut slots)?;
    Some(Notify {
        nt: non_empty(field(headers, "nt")?)?,
        nts: non_empty(field(headers, "nts")?)?,
        usn: non_empty(field(headers, "usn")?)?,
        location: field(headers, "location").and_then(non_empty),
        max_age_s: field(headers, "cache-control").and_then(max_age_s),
    })
}

/// Parses a request head `<method> * HTTP/1.x` and returns its fields.
fn parse_star_request<'h, 'b>(
    datagram: &'b [u8],
    method: &str,
    slots: &'h mut [Header<'b>],
) -> Option<&'h [Header<'b>]> {
    let mut request = httparse::Request::new(slots);
    if !request.parse(datagram).ok()?.is_complete() {
        return None;
    }
    if request.method? != method || request.path? != "*" {
        return None;
    }
    Some(request.headers)
}

/// The trimmed UTF-8 value of the first field called `name` (any case).
fn field<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b str> {
    let header = headers.iter().find(|h| h.name.eq_ignore_ascii_case(name))?;
    let text = core::str::from_utf8(header.value).ok()?;
    Some(text.trim_matches([' ', '\t']))
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// `MX` seconds, clamped; `None` unless it is all digits.
fn parse_mx(text: &str) -> Option<u8> {
    let seconds = parse_decimal(text)?;
    let clamped = seconds.clamp(u32::from(MX_MIN_S), u32::from(MX_MAX_S));
    u8::try_from(clamped).ok()
}

/// The `max-age` directive of a `CACHE-CONTROL` value such as
/// `max-age=1800` or `no-cache="Ext", max-age = 120`.
fn max_age_s(value: &str) -> Option<u32> {
    value.split(',').find_map(|directive| {
        let (name, seconds) = directive.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        parse_decimal(seconds.trim().trim_matches('"'))
    })
}

/// A decimal number of at most 9 digits, saturating to `u32::MAX` beyond
/// (a huge value is still "large", not an error).
fn parse_decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let significant = text.trim_start_matches('0');
    if significant.len() > 9 {
        return Some(u32::MAX);
    }
    significant.bytes().try_fold(0u32, |value, digit| {
        value.checked_mul(10)?.checked_add(u32::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from miniupnpd 2.3.1 (Debian) answering an IGD:1 search;
    /// it runs IGDv2 but answers searches for lower versions too.
    const MINIUPNPD_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
CACHE-CONTROL: max-age=120\r\n\
ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
USN: uuid:3f1e0c3a-1b2c-4d5e-8f90-0123456789ab::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
EXT:\r\n\
SERVER: Debian/6.18.44-fc-v595 UPnP/1.1 MiniUPnPd/2.3.1\r\n\
LOCATION: http://192.168.77.1:5000/rootDesc.xml\r\n\
OPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n\
01-NLS: 1795326290\r\n\
BOOTID.UPNP.ORG: 1795326290\r\n\
CONFIGID.UPNP.ORG: 1337\r\n\
\r\n";

    /// Captured from the same miniupnpd's periodic announcements.
    const MINIUPNPD_NOTIFY: &[u8] = b"NOTIFY * HTTP/1.1\r\n\
HOST: 239.255.255.250:1900\r\n\
CACHE-CONTROL: max-age=60\r\n\
LOCATION: http://192.168.77.1:5000/rootDesc.xml\r\n\
SERVER: Debian/6.18.44-fc-v595 UPnP/1.1 MiniUPnPd/2.3.1\r\n\
NT: urn:schemas-upnp-org:service:WANIPConnection:2\r\n\
USN: uuid:3f1e0c3a-1b2c-4d5e-8f90-0123456789ad::urn:schemas-upnp-org:service:WANIPConnection:2\r\n\
NTS: ssdp:alive\r\n\
OPT: \"http://schemas.upnp.org/upnp/1/0/\"; ns=01\r\n\
01-NLS: 1795326290\r\n\
BOOTID.UPNP.ORG: 1795326290\r\n\
CONFIGID.UPNP.ORG: 1337\r\n\
\r\n";

    #[test]
    fn golden_msearch() {
        let mut out = [0u8; 256];
        let length = write_msearch(
            &mut out,
            "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
            2,
        )
        .unwrap();
        let expected = concat!(
            "M-SEARCH * HTTP/1.1\r\n",
            "HOST: 239.255.255.250:1900\r\n",
            "MAN: \"ssdp:discover\"\r\n",
            "MX: 2\r\n",
            "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n",
            "USER-AGENT: Linux/1 UPnP/1.1 ringcast/",
            env!("CARGO_PKG_VERSION"),
            "\r\n\r\n"
        );
        assert_eq!(&out[..length], expected.as_bytes());
    }

    #[test]
    fn msearch_round_trips_and_clamps() {
        let mut out = [0u8; 256];
        let length = write_msearch(&mut out, "upnp:rootdevice", 0).unwrap();
        let request = parse_search_request(&out[..length]).unwrap();
        assert_eq!(request.st, "upnp:rootdevice");
        assert_eq!(request.mx, 1);
        assert!(request.man_discover);
        assert_eq!(request.user_agent, Some(USER_AGENT));
        let length = write_msearch(&mut out, "ssdp:all", 120).unwrap();
        assert_eq!(parse_search_request(&out[..length]).unwrap().mx, 5);
    }

    #[test]
    fn msearch_refuses_bad_targets_and_small_buffers() {
        let mut out = [0u8; 256];
        assert_eq!(write_msearch(&mut out, "a\r\nX: y", 2), Err(Full));
        assert_eq!(write_msearch(&mut out, "", 2), Err(Full));
        assert_eq!(write_msearch(&mut out, "a b", 2), Err(Full));
        let mut small = [0u8; 60];
        assert_eq!(write_msearch(&mut small, "upnp:rootdevice", 2), Err(Full));
    }

    #[test]
    fn parses_miniupnpd_search_response() {
        let response = parse_search_response(MINIUPNPD_RESPONSE).unwrap();
        assert_eq!(response.location, "http://192.168.77.1:5000/rootDesc.xml");
        assert_eq!(
            response.st,
            "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
        );
        assert!(response.usn.starts_with("uuid:3f1e0c3a-"));
        assert_eq!(response.max_age_s, Some(120));
    }

    #[test]
    fn search_response_tolerance() {
        // Lower-case names, LF line ends, no USN, odd CACHE-CONTROL.
        let datagram = b"HTTP/1.1 200 OK\ncache-control: no-cache=\"Ext\", max-age = 1800\nlocation:  http://10.0.0.138:49152/gatedesc.xml \nst: upnp:rootdevice\n\n";
        let response = parse_search_response(datagram).unwrap();
        assert_eq!(response.location, "http://10.0.0.138:49152/gatedesc.xml");
        assert_eq!(response.usn, "");
        assert_eq!(response.max_age_s, Some(1800));

        let no_location = b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\n\r\n";
        assert_eq!(parse_search_response(no_location), None);
        let empty_location = b"HTTP/1.1 200 OK\r\nLOCATION: \r\n\r\n";
        assert_eq!(parse_search_response(empty_location), None);
        let not_ok = b"HTTP/1.1 404 Not Found\r\nLOCATION: http://1.2.3.4/\r\n\r\n";
        assert_eq!(parse_search_response(not_ok), None);
        let unfinished = b"HTTP/1.1 200 OK\r\nLOCATION: http://1.2.3.4/\r\n";
        assert_eq!(parse_search_response(unfinished), None);
        assert_eq!(parse_search_response(MINIUPNPD_NOTIFY), None);
        let bad_age = b"HTTP/1.1 200 OK\r\nLOCATION: x\r\nCACHE-CONTROL: max-age=soon\r\n\r\n";
        assert_eq!(parse_search_response(bad_age).unwrap().max_age_s, None);
    }

    #[test]
    fn parses_search_requests() {
        // Shape of a Samsung TV's search (unquoted MAN is refused by flag).
        let datagram = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 3\r\nST: urn:schemas-upnp-org:device:MediaServer:1\r\nUSER-AGENT: Tizen/6.0 UPnP/1.1 SmartTV/1\r\n\r\n";
        let request = parse_search_request(datagram).unwrap();
        assert_eq!(
            request,
            SearchRequest {
                st: "urn:schemas-upnp-org:device:MediaServer:1",
                mx: 3,
                man_discover: true,
                user_agent: Some("Tizen/6.0 UPnP/1.1 SmartTV/1"),
            }
        );
        let unquoted = b"M-SEARCH * HTTP/1.1\r\nMAN: ssdp:discover\r\nST: ssdp:all\r\n\r\n";
        let request = parse_search_request(unquoted).unwrap();
        assert!(!request.man_discover);
        assert_eq!(request.mx, MX_MIN_S);
        let huge_mx = b"M-SEARCH * HTTP/1.1\r\nMX: 99999999999999\r\nST: a\r\n\r\n";
        assert_eq!(parse_search_request(huge_mx).unwrap().mx, MX_MAX_S);

        let rejected: [&[u8]; 5] = [
            b"M-SEARCH * HTTP/1.1\r\nMX: two\r\nST: a\r\n\r\n",
            b"M-SEARCH * HTTP/1.1\r\nMX: 2\r\n\r\n",
            b"M-SEARCH / HTTP/1.1\r\nST: a\r\n\r\n",
            b"GET * HTTP/1.1\r\nST: a\r\n\r\n",
            MINIUPNPD_NOTIFY,
        ];
        for datagram in rejected {
            assert_eq!(parse_search_request(datagram), None);
        }
    }

    #[test]
    fn parses_notify_alive_and_byebye() {
        let notify = parse_notify(MINIUPNPD_NOTIFY).unwrap();
        assert_eq!(notify.nt, "urn:schemas-upnp-org:service:WANIPConnection:2");
        assert_eq!(notify.nts, "ssdp:alive");
        assert!(notify
            .usn
            .ends_with("::urn:schemas-upnp-org:service:WANIPConnection:2"));
        assert_eq!(
            notify.location,
            Some("http://192.168.77.1:5000/rootDesc.xml")
        );
        assert_eq!(notify.max_age_s, Some(60));

        let byebye = b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nUSN: uuid:1::upnp:rootdevice\r\nNTS: ssdp:byebye\r\n\r\n";
        let notify = parse_notify(byebye).unwrap();
        assert_eq!((notify.nts, notify.location), ("ssdp:byebye", None));
        let no_usn = b"NOTIFY * HTTP/1.1\r\nNT: a\r\nNTS: ssdp:alive\r\n\r\n";
        assert_eq!(parse_notify(no_usn), None);
        assert_eq!(parse_notify(MINIUPNPD_RESPONSE), None);
    }

    #[test]
    fn too_many_headers_is_refused() {
        let mut datagram = [0u8; 1024];
        let mut w = SliceWriter::new(&mut datagram);
        w.write_bytes(b"HTTP/1.1 200 OK\r\nLOCATION: http://1.2.3.4/\r\n")
            .unwrap();
        for _ in 0..SSDP_HEADERS_MAX {
            w.write_bytes(b"X: 1\r\n").unwrap();
        }
        w.write_bytes(b"\r\n").unwrap();
        let length = w.len();
        assert_eq!(parse_search_response(&datagram[..length]), None);
    }
}
