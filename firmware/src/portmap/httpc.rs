//! The minimal HTTP/1.1 client codec the IGD client needs (RFC 9112, and
//! RFC 3986 §5 for references): `http://` URLs with an IPv4 literal host,
//! reference resolution against a description's location, a `GET` request
//! head, and framing one response (head plus body by `Content-Length`,
//! chunked coding, or until EOF) inside a single caller-owned buffer of at
//! most [`RESPONSE_BYTES_MAX`] bytes.
//!
//! Routers announce their description by IP literal, so host names are
//! refused rather than resolved: no DNS, and nothing here does I/O, reads a
//! clock or allocates. Requests say `Connection: close`; the driver reads
//! until [`parse_response`] says `Complete` or the peer closes.

use core::fmt::{self, Write};
use core::net::{Ipv4Addr, SocketAddrV4};
use core::ops::Range;

use heapless::String;
use httparse::EMPTY_HEADER;

use crate::limits::{HTTP_HEADERS_MAX, HTTP_HEADER_BYTES_MAX};
use crate::wire::http::{self, ChunkedDecoder, HttpError};
use crate::wire::ssdp::USER_AGENT;
use crate::wire::{Full, SliceWriter};

/// Bytes of a URL path with its query.
pub const URL_PATH_BYTES_MAX: usize = 256;

/// Bytes of a whole response (head and body) from the IGD; miniupnpd's
/// description is about 3 KiB, the largest seen about 10 KiB.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024;

/// Bytes of a response head.
pub const HEAD_BYTES_MAX: usize = HTTP_HEADER_BYTES_MAX;

/// The port of an `http` URL without one.
const HTTP_PORT: u16 = 80;

/// An `http://` URL whose host is an IPv4 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub addr: SocketAddrV4,
    /// Origin-form request target: starts with `/`, may hold `?query`,
    /// visible ASCII only, no fragment.
    pub path: String<URL_PATH_BYTES_MAX>,
}

/// Parses an absolute `http://` URL with an IPv4 literal host; `None` for
/// other schemes, host names, userinfo, bad ports and paths that are too
/// long or hold spaces, controls or non-ASCII bytes.
pub fn parse_http_url(url: &str) -> Option<HttpUrl> {
    parse_after_scheme(strip_prefix_ignore_case(url, "http://")?)
}

/// Resolves `reference` (absolute `http` URL, `//authority/path`, `/path`,
/// `?query`, relative path or empty) against `base`; fragments are dropped,
/// queries kept, `.` and `..` segments removed.
pub fn resolve(base: &HttpUrl, reference: &str) -> Option<HttpUrl> {
    let reference = strip_fragment(reference.trim());
    if reference.is_empty() {
        return Some(base.clone());
    }
    if has_scheme(reference) {
        return parse_http_url(reference);
    }
    if let Some(network_path) = reference.strip_prefix("//") {
        return parse_after_scheme(network_path);
    }
    let mut merged: String<URL_PATH_BYTES_MAX> = String::new();
    if reference.starts_with('/') {
        // Absolute path: nothing of the base path is kept.
    } else if reference.starts_with('?') {
        merged.push_str(without_query(&base.path)).ok()?;
    } else {
        merged.push_str(directory(&base.path)).ok()?;
    }
    merged.push_str(reference).ok()?;
    with_path(base.addr, &merged)
}

fn parse_after_scheme(rest: &str) -> Option<HttpUrl> {
    let rest = strip_fragment(rest);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let addr = parse_authority(authority)?;
    let mut full: String<URL_PATH_BYTES_MAX> = String::new();
    if !path.starts_with('/') {
        full.push('/').ok()?;
    }
    full.push_str(path).ok()?;
    with_path(addr, &full)
}

/// `host[:port]` with an IPv4 literal host.
fn parse_authority(authority: &str) -> Option<SocketAddrV4> {
    if authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, "")) => (host, HTTP_PORT),
        Some((host, digits)) => (host, parse_port(digits)?),
        None => (authority, HTTP_PORT),
    };
    let ip: Ipv4Addr = host.parse().ok()?;
    Some(SocketAddrV4::new(ip, port))
}

fn parse_port(digits: &str) -> Option<u16> {
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u16>().ok().filter(|&port| port != 0)
}

/// Builds the URL with `path` (starting with `/`) after removing dot
/// segments and checking its bytes.
fn with_path(addr: SocketAddrV4, path: &str) -> Option<HttpUrl> {
    if !is_request_target(path) {
        return None;
    }
    Some(HttpUrl {
        addr,
        path: remove_dot_segments(path)?,
    })
}

/// RFC 3986 §5.2.4 on the path part; the query is copied unchanged.
fn remove_dot_segments(target: &str) -> Option<String<URL_PATH_BYTES_MAX>> {
    let (path, query) = match target.find('?') {
        Some(start) => target.split_at(start),
        None => (target, ""),
    };
    let mut out: String<URL_PATH_BYTES_MAX> = String::new();
    // At most one segment per byte of a path of bounded length.
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
            }
            _ => {
                out.push('/').ok()?;
                out.push_str(segment).ok()?;
                continue;
            }
        }
        if last {
            out.push('/').ok()?;
        }
    }
    if out.is_empty() {
        out.push('/').ok()?;
    }
    out.push_str(query).ok()?;
    Some(out)
}

/// A path starting with `/`, visible ASCII only.
fn is_request_target(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|byte| byte.is_ascii_graphic())
}

/// True when `reference` starts with `scheme:` (RFC 3986 §3.1).
fn has_scheme(reference: &str) -> bool {
    let Some(colon) = reference.find(':') else {
        return false;
    };
    let scheme = &reference[..colon];
    let mut bytes = scheme.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn strip_fragment(text: &str) -> &str {
    text.split('#').next().unwrap_or(text)
}

fn without_query(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// The path up to and including its last `/`.
fn directory(path: &str) -> &str {
    let path = without_query(path);
    match path.rfind('/') {
        Some(slash) => &path[..=slash],
        None => "/",
    }
}

/// Renders a `GET` for `url` into `out`; returns its length. A path that is
/// not a valid request target (possible only if the caller built the
/// `HttpUrl` by hand) is refused like a full buffer.
pub fn write_get(out: &mut [u8], url: &HttpUrl) -> Result<usize, Full> {
    if !is_request_target(&url.path) {
        return Err(Full);
    }
    let mut w = SliceWriter::new(out);
    write!(
        w,
        "GET {} HTTP/1.1\r\n\
         Host: {}\r\n\
         User-Agent: {USER_AGENT}\r\n\
         Connection: close\r\n\
         \r\n",
        url.path, url.addr
    )?;
    Ok(w.len())
}

/// Progress of a response in the read buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Read more and call again.
    Incomplete,
    /// The whole response is in the buffer; `body` indexes it (for a chunked
    /// body, the decoded bytes, moved down in place).
    Complete { status: u16, body: Range<usize> },
}

/// Why a response cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpcError {
    /// Not an HTTP/1.x response head, or a bad Content-Length.
    Malformed,
    /// The head or the whole response does not fit the limits or buffer.
    TooLarge,
    /// The peer closed before the announced end of the body.
    Truncated,
    /// The chunked coding is broken.
    BadChunk,
}

impl fmt::Display for HttpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpcError::Malformed => "malformed HTTP response",
            HttpcError::TooLarge => "HTTP response too large",
            HttpcError::Truncated => "HTTP response cut short",
            HttpcError::BadChunk => "bad chunked coding in HTTP response",
        })
    }
}

/// How the body of a response ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilEof,
}

/// Frames the response in `buf[..filled]`; `eof` says the peer has closed.
/// Call after every read (the bytes are only moved once the response is
/// complete) and once more at EOF. After `Complete` or an error, stop.
pub fn parse_response(buf: &mut [u8], filled: usize, eof: bool) -> Result<Parsed, HttpcError> {
    assert!(filled <= buf.len(), "filled {filled} beyond buffer");
    let room_left = filled < buf.len();
    let Some((status, head_length, framing)) = parse_head(&buf[..filled])? else {
        return more_or(eof, room_left, HttpcError::Truncated);
    };
    let body_start = head_length;
    let received = filled - body_start;
    match framing {
        Framing::Length(length) => {
            if length > buf.len() - body_start {
                return Err(HttpcError::TooLarge);
            }
            if received >= length {
                let body = body_start..body_start + length;
                return Ok(Parsed::Complete { status, body });
            }
            more_or(eof, room_left, HttpcError::Truncated)
        }
        Framing::UntilEof if eof => Ok(Parsed::Complete {
            status,
            body: body_start..filled,
        }),
        Framing::UntilEof => more_or(false, room_left, HttpcError::Truncated),
        Framing::Chunked => {
            if !chunked_body_complete(&buf[body_start..filled])? {
                return more_or(eof, room_left, HttpcError::Truncated);
            }
            let decoded = decode_chunked_in_place(&mut buf[body_start..filled])?;
            Ok(Parsed::Complete {
                status,
                body: body_start..body_start + decoded,
            })
        }
    }
}

/// What to say when the response is not complete yet.
fn more_or(eof: bool, room_left: bool, at_eof: HttpcError) -> Result<Parsed, HttpcError> {
    if eof {
        Err(at_eof)
    } else if !room_left {
        Err(HttpcError::TooLarge)
    } else {
        Ok(Parsed::Incomplete)
    }
}

/// Status, head length and body framing, or `None` while the head is
/// incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<(u16, usize, Framing)>, HttpcError> {
    let mut slots = [EMPTY_HEADER; HTTP_HEADERS_MAX];
    let (head, length) = match http::parse_response(bytes, &mut slots) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
        Err(HttpError::HeadTooLarge | HttpError::TooManyHeaders) => {
            return Err(HttpcError::TooLarge)
        }
        Err(_) => return Err(HttpcError::Malformed),
    };
    // We never send `Expect`, so an interim 1xx head is not expected here.
    if !(200..=999).contains(&head.code) {
        return Err(HttpcError::Malformed);
    }
    let framing = if head.code == 204 || head.code == 304 {
        Framing::Length(0)
    } else if head.chunked {
        Framing::Chunked
    } else if let Some(length) = head.content_length {
        Framing::Length(usize::try_from(length).map_err(|_| HttpcError::TooLarge)?)
    } else {
        Framing::UntilEof
    };
    Ok(Some((head.code, length, framing)))
}

/// True when `body` holds a whole chunked body (trailers included).
fn chunked_body_complete(body: &[u8]) -> Result<bool, HttpcError> {
    let mut decoder = ChunkedDecoder::new();
    decoder
        .decode(body, &mut |_: &[u8]| {})
        .map_err(|_| HttpcError::BadChunk)?;
    Ok(decoder.is_done())
}

/// Removes the chunk framing from a complete chunked `body`, moving the data
/// to its start; returns the data length. The decoder is fed one byte at a
/// time so that each data byte it reports sits at the read position, which
/// is never behind the write position.
fn decode_chunked_in_place(body: &mut [u8]) -> Result<usize, HttpcError> {
    let mut decoder = ChunkedDecoder::new();
    let mut written = 0;
    // One iteration per body byte.
    for read in 0..body.len() {
        if decoder.is_done() {
            break;
        }
        let mut is_data = false;
        decoder
            .decode(&body[read..read + 1], &mut |run: &[u8]| {
                is_data = !run.is_empty()
            })
            .map_err(|_| HttpcError::BadChunk)?;
        if is_data {
            body[written] = body[read];
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn url(text: &str) -> HttpUrl {
        parse_http_url(text).unwrap()
    }

    fn show(url: &HttpUrl) -> std::string::String {
        std::format!("{}{}", url.addr, url.path)
    }

    #[test]
    fn parses_http_urls() {
        let cases = [
            (
                "http://192.168.1.1:5000/rootDesc.xml",
                "192.168.1.1:5000/rootDesc.xml",
            ),
            ("HTTP://10.0.0.138", "10.0.0.138:80/"),
            ("http://10.0.0.138:/x?y=1#frag", "10.0.0.138:80/x?y=1"),
            ("http://192.168.178.1:49000?q", "192.168.178.1:49000/?q"),
            ("http://1.2.3.4:65535/a/./b/../c", "1.2.3.4:65535/a/c"),
        ];
        for (text, expected) in cases {
            assert_eq!(show(&url(text)), expected, "{text}");
        }
    }

    #[test]
    fn refuses_other_urls() {
        let long = std::format!("http://1.2.3.4/{}", "a".repeat(URL_PATH_BYTES_MAX));
        let cases = [
            "https://192.168.1.1/",
            "ftp://1.2.3.4/",
            "http://fritz.box:49000/igddesc.xml",
            "http://user:pw@1.2.3.4/",
            "http://[fe80::1]:5000/",
            "http://1.2.3.4:0/",
            "http://1.2.3.4:70000/",
            "http://1.2.3.4:+80/",
            "http://1.2.3.4/a b",
            "http://1.2.3.4/caf\u{e9}",
            "http://1.2.3.4/\r\nX: y",
            "192.168.1.1/rootDesc.xml",
            "",
            long.as_str(),
        ];
        for text in cases {
            assert_eq!(parse_http_url(text), None, "{text}");
        }
        let fits = std::format!("http://1.2.3.4/{}", "a".repeat(URL_PATH_BYTES_MAX - 1));
        assert!(parse_http_url(&fits).is_some());
    }

    #[test]
    fn resolves_references() {
        let base = url("http://192.168.1.1:5000/dev/sub/rootDesc.xml?x=1");
        let cases = [
            ("/ctl/IPConn", "192.168.1.1:5000/ctl/IPConn"),
            ("ctl/IPConn", "192.168.1.1:5000/dev/sub/ctl/IPConn"),
            ("./ctl", "192.168.1.1:5000/dev/sub/ctl"),
            ("../ctl?a=b#f", "192.168.1.1:5000/dev/ctl?a=b"),
            ("../../../../x", "192.168.1.1:5000/x"),
            ("", "192.168.1.1:5000/dev/sub/rootDesc.xml?x=1"),
            ("#only", "192.168.1.1:5000/dev/sub/rootDesc.xml?x=1"),
            ("?y=2", "192.168.1.1:5000/dev/sub/rootDesc.xml?y=2"),
            (
                "http://192.168.1.254:49000/upnp/control/WANIPConn1",
                "192.168.1.254:49000/upnp/control/WANIPConn1",
            ),
            ("//10.0.0.1:1900/a", "10.0.0.1:1900/a"),
            (" /padded \n", "192.168.1.1:5000/padded"),
            ("..", "192.168.1.1:5000/dev/"),
        ];
        for (reference, expected) in cases {
            let resolved = resolve(&base, reference).unwrap();
            assert_eq!(show(&resolved), expected, "{reference}");
        }
        for bad in [
            "http://router.lan/ctl",
            "https://1.2.3.4/",
            "urn:x:y",
            "/a b",
        ] {
            assert_eq!(resolve(&base, bad), None, "{bad}");
        }
        let root = url("http://10.0.0.1");
        assert_eq!(show(&resolve(&root, "ctl").unwrap()), "10.0.0.1:80/ctl");
    }

    #[test]
    fn golden_get() {
        let mut out = [0u8; 256];
        let length = write_get(&mut out, &url("http://192.168.77.1:5000/rootDesc.xml")).unwrap();
        let expected = concat!(
            "GET /rootDesc.xml HTTP/1.1\r\n",
            "Host: 192.168.77.1:5000\r\n",
            "User-Agent: Linux/1 UPnP/1.1 ringcast/",
            env!("CARGO_PKG_VERSION"),
            "\r\n",
            "Connection: close\r\n",
            "\r\n"
        );
        assert_eq!(&out[..length], expected.as_bytes());
        let mut small = [0u8; 40];
        assert_eq!(write_get(&mut small, &url("http://1.2.3.4/")), Err(Full));
        let mut forged = url("http://1.2.3.4/");
        forged.path = String::try_from("/a\r\nX: 1").unwrap();
        assert_eq!(write_get(&mut out, &forged), Err(Full));
    }

    /// Feeds `response` in pieces of `step` bytes like the driver does;
    /// returns the final result and the body bytes.
    fn drive(
        response: &[u8],
        step: usize,
        capacity: usize,
    ) -> (Result<Parsed, HttpcError>, Vec<u8>) {
        let mut buf = std::vec![0u8; capacity];
        let mut filled = 0;
        loop {
            let take = step.min(response.len() - filled).min(capacity - filled);
            buf[filled..filled + take].copy_from_slice(&response[filled..filled + take]);
            filled += take;
            let eof = filled == response.len();
            match parse_response(&mut buf, filled, eof) {
                Ok(Parsed::Incomplete) if !eof => continue,
                Ok(Parsed::Complete { status, body }) => {
                    let bytes = buf[body.clone()].to_vec();
                    return (Ok(Parsed::Complete { status, body }), bytes);
                }
                other => return (other, Vec::new()),
            }
        }
    }

    const MINIUPNPD_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nConnection: close\r\nContent-Length: 12\r\nServer: Debian/6.18.44-fc-v595 UPnP/1.1 MiniUPnPd/2.3.1\r\nExt:\r\n\r\n";

    #[test]
    fn content_length_body_in_any_pieces() {
        let mut response = Vec::from(MINIUPNPD_HEAD.as_bytes());
        response.extend_from_slice(b"<root/>\r\n   trailing junk");
        for step in [1, 7, 64, 4096] {
            let (result, body) = drive(&response, step, 1024);
            assert!(
                matches!(result, Ok(Parsed::Complete { status: 200, .. })),
                "{step}"
            );
            assert_eq!(body, b"<root/>\r\n   ", "{step}");
        }
        let cut = &response[..MINIUPNPD_HEAD.len() + 5];
        assert_eq!(drive(cut, 3, 1024).0, Err(HttpcError::Truncated));
        assert_eq!(
            drive(&response, 1, MINIUPNPD_HEAD.len() + 11).0,
            Err(HttpcError::TooLarge)
        );
    }

    #[test]
    fn chunked_body_is_decoded_in_place() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/xml\r\n\r\n7\r\n<root>x\r\n1;ext=1\r\n<\r\n7\r\n/root>\n\r\n0\r\nX-T: 1\r\n\r\nafter";
        for step in [1, 5, 1000] {
            let (result, body) = drive(response, step, 512);
            assert!(matches!(result, Ok(Parsed::Complete { status: 200, .. })));
            assert_eq!(body, b"<root>x</root>\n", "{step}");
        }
        let unfinished = &response[..response.len() - 20];
        assert_eq!(drive(unfinished, 9, 512).0, Err(HttpcError::Truncated));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(drive(bad, 100, 512).0, Err(HttpcError::BadChunk));
    }

    #[test]
    fn body_until_eof_and_status_codes() {
        let response =
            b"HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/xml\r\n\r\n<s:Envelope/>";
        let (result, body) = drive(response, 10, 512);
        assert!(matches!(result, Ok(Parsed::Complete { status: 500, .. })));
        assert_eq!(body, b"<s:Envelope/>");
        let (result, body) = drive(b"HTTP/1.1 204 No Content\r\n\r\n", 100, 512);
        assert!(matches!(result, Ok(Parsed::Complete { status: 204, .. })));
        assert!(body.is_empty());
        let mut buf = [0u8; 64];
        let head = b"HTTP/1.1 200 OK\r\n\r\nabc";
        buf[..head.len()].copy_from_slice(head);
        assert_eq!(
            parse_response(&mut buf, head.len(), false),
            Ok(Parsed::Incomplete)
        );
        assert_eq!(drive(&[b'x'; 64], 64, 64).0, Err(HttpcError::Malformed));
    }

    #[test]
    fn refuses_bad_heads() {
        let cases: [(&[u8], HttpcError); 5] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                HttpcError::Malformed,
            ),
            (b"ICY 200 OK\r\n\r\n", HttpcError::Malformed),
            (b"HTTP/1.1 100 Continue\r\n\r\n", HttpcError::Malformed),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n",
                HttpcError::TooLarge,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-", HttpcError::Truncated),
        ];
        for (response, error) in cases {
            assert_eq!(drive(response, 1000, 512).0, Err(error));
        }
        let mut long = Vec::from(&b"HTTP/1.1 200 OK\r\nX: "[..]);
        long.resize(HEAD_BYTES_MAX + 10, b'a');
        assert_eq!(
            drive(&long, 4096, RESPONSE_BYTES_MAX).0,
            Err(HttpcError::TooLarge)
        );
        assert_eq!(drive(b"", 1, 64).0, Err(HttpcError::Truncated));
    }
}
