//! HTTP/1.1 message heads and chunked bodies (RFC 9112, semantics RFC 9110),
//! as far as a live-stream relay needs them: parsing the requests of LAN
//! players, parsing the response of an upstream HTTP source, decoding its
//! chunked body, and rendering our own response and request heads.
//!
//! Heads are tokenised by `httparse` into caller-provided header slots and
//! borrowed, never copied. A head longer than
//! [`HTTP_HEADER_BYTES_MAX`](crate::limits::HTTP_HEADER_BYTES_MAX) or a chunk
//! line longer than
//! [`HTTP_CHUNK_LINE_BYTES_MAX`](crate::limits::HTTP_CHUNK_LINE_BYTES_MAX) is
//! an error, so a peer cannot make us wait for ever on one line. Every
//! response we send says `Connection: close`: one stream per connection keeps
//! the session state machine simple.

use core::fmt::{self, Write};

use crate::limits::{HTTP_CHUNK_LINE_BYTES_MAX, HTTP_HEADER_BYTES_MAX};
use crate::wire::{Full, SliceWriter};

pub use httparse::{Header, EMPTY_HEADER};

/// The product token sent in `Server` and `User-Agent`.
pub const PRODUCT: &str = concat!("ringcast/", env!("CARGO_PKG_VERSION"));

/// Why bytes are not an acceptable HTTP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The head does not follow the HTTP/1.x syntax.
    Malformed(httparse::Error),
    /// More header fields than slots were given.
    TooManyHeaders,
    /// The head is longer than `HTTP_HEADER_BYTES_MAX`.
    HeadTooLarge,
    /// The request target is neither origin-form, absolute-form nor `*`.
    BadTarget,
    /// A Content-Length value is not a number, or two of them disagree.
    BadContentLength,
    /// A chunk size is not hexadecimal or does not fit 64 bits.
    BadChunkSize,
    /// A chunk-size or trailer line is longer than `HTTP_CHUNK_LINE_BYTES_MAX`.
    ChunkLineTooLong,
    /// Chunk data is not followed by CRLF, or a line ends with a bare CR.
    BadChunkFraming,
}

impl HttpError {
    /// The status to answer a client whose request failed this way.
    pub fn status(&self) -> Status {
        match self {
            HttpError::TooManyHeaders | HttpError::HeadTooLarge => Status::HeaderFieldsTooLarge,
            _ => Status::BadRequest,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(inner) => write!(f, "malformed HTTP head: {inner}"),
            HttpError::TooManyHeaders => f.write_str("too many HTTP header fields"),
            HttpError::HeadTooLarge => f.write_str("HTTP head too large"),
            HttpError::BadTarget => f.write_str("bad HTTP request target"),
            HttpError::BadContentLength => f.write_str("bad Content-Length"),
            HttpError::BadChunkSize => f.write_str("bad chunk size"),
            HttpError::ChunkLineTooLong => f.write_str("chunk-size or trailer line too long"),
            HttpError::BadChunkFraming => f.write_str("bad chunk framing (missing CRLF)"),
        }
    }
}

impl From<httparse::Error> for HttpError {
    fn from(error: httparse::Error) -> Self {
        match error {
            httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
            other => HttpError::Malformed(other),
        }
    }
}

/// Request methods the relay distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// SOAP control of the DLNA media server.
    Post,
    /// Anything else; answered with 405.
    Other,
}

/// A parsed request line and header section, borrowed from the input.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'h, 'b> {
    pub method: Method,
    /// The path, without query (`*` for the asterisk-form).
    pub path: &'b str,
    /// The text after `?`, if any.
    pub query: Option<&'b str>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    headers: &'h [Header<'b>],
}

impl<'h, 'b> RequestHead<'h, 'b> {
    /// The value of the first header field called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        find_header(self.headers, name)
    }

    /// All header fields, in order.
    pub fn headers(&self) -> &'h [Header<'b>] {
        self.headers
    }
}

fn find_header<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value)
}

/// Parses a request head from the start of `buffer`.
///
/// `Ok(None)`: the head is not complete yet; read more and call again with
/// the whole buffer. `Ok(Some((head, length)))`: the head took `length` bytes.
/// A buffer of `HTTP_HEADER_BYTES_MAX` bytes without a complete head is
/// `Err(HeadTooLarge)`.
pub fn parse_request<'h, 'b>(
    buffer: &'b [u8],
    headers: &'h mut [Header<'b>],
) -> Result<Option<(RequestHead<'h, 'b>, usize)>, HttpError> {
    let mut request = httparse::Request::new(headers);
    let length = match request.parse(buffer)? {
        httparse::Status::Complete(length) => length,
        httparse::Status::Partial if buffer.len() >= HTTP_HEADER_BYTES_MAX => {
            return Err(HttpError::HeadTooLarge)
        }
        httparse::Status::Partial => return Ok(None),
    };
    if length > HTTP_HEADER_BYTES_MAX {
        return Err(HttpError::HeadTooLarge);
    }
    // A complete parse fills all three; treat a miss as bad syntax anyway.
    let (Some(method), Some(target), Some(version_minor)) =
        (request.method, request.path, request.version)
    else {
        return Err(HttpError::Malformed(httparse::Error::Token));
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let (path, query) = split_target(target)?;
    let head = RequestHead {
        method,
        path,
        query,
        version_minor,
        headers: request.headers,
    };
    Ok(Some((head, length)))
}

/// Splits a request target into path and query (RFC 9112 §3.2). The
/// absolute-form (`http://host/path`, sent by some proxies and players) is
/// reduced to its path.
fn split_target(target: &str) -> Result<(&str, Option<&str>), HttpError> {
    if target == "*" {
        return Ok(("*", None));
    }
    let origin_form = if target.starts_with('/') {
        target
    } else {
        let scheme_end = target.find("://").ok_or(HttpError::BadTarget)?;
        let scheme = &target[..scheme_end];
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(HttpError::BadTarget);
        }
        let after_authority = &target[scheme_end + 3..];
        match after_authority.find(['/', '?']) {
            Some(start) => &after_authority[start..],
            None => "/",
        }
    };
    let (path, query) = match origin_form.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (origin_form, None),
    };
    // Fragments are never sent, but do not let one reach a path match.
    let path = path.split('#').next().unwrap_or(path);
    Ok((if path.is_empty() { "/" } else { path }, query))
}

/// The fields of a response head the HTTP source needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead<'b> {
    pub code: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// The final transfer coding is `chunked`: decode with [`ChunkedDecoder`].
    pub chunked: bool,
    /// The body length, if given and not overridden by chunked coding.
    pub content_length: Option<u64>,
    /// The redirect target, if present and valid UTF-8.
    pub location: Option<&'b str>,
    /// The media type, if present and valid UTF-8.
    pub content_type: Option<&'b str>,
}

/// Parses a response head from the start of `buffer`; `Ok(None)` while
/// incomplete, like [`parse_request`].
pub fn parse_response<'b>(
    buffer: &'b [u8],
    headers: &mut [Header<'b>],
) -> Result<Option<(ResponseHead<'b>, usize)>, HttpError> {
    let mut response = httparse::Response::new(headers);
    let length = match response.parse(buffer)? {
        httparse::Status::Complete(length) => length,
        httparse::Status::Partial if buffer.len() >= HTTP_HEADER_BYTES_MAX => {
            return Err(HttpError::HeadTooLarge)
        }
        httparse::Status::Partial => return Ok(None),
    };
    if length > HTTP_HEADER_BYTES_MAX {
        return Err(HttpError::HeadTooLarge);
    }
    let (Some(code), Some(version_minor)) = (response.code, response.version) else {
        return Err(HttpError::Malformed(httparse::Error::Status));
    };
    let fields = response.headers;
    let chunked = is_chunked(fields);
    let content_length = if chunked {
        None
    } else {
        content_length(fields)?
    };
    let text = |name| find_header(fields, name).and_then(|value| core::str::from_utf8(value).ok());
    let head = ResponseHead {
        code,
        version_minor,
        chunked,
        content_length,
        location: text("location").map(trim_whitespace),
        content_type: text("content-type").map(trim_whitespace),
    };
    Ok(Some((head, length)))
}

fn trim_whitespace(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

fn trim_bytes(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// True when the last coding of the last Transfer-Encoding field is chunked
/// (RFC 9112 §6.1: chunked, if present, is always the final coding).
fn is_chunked(headers: &[Header<'_>]) -> bool {
    let last = headers
        .iter()
        .rev()
        .find(|header| header.name.eq_ignore_ascii_case("transfer-encoding"));
    last.and_then(|header| header.value.rsplit(|&byte| byte == b',').next())
        .is_some_and(|coding| trim_bytes(coding).eq_ignore_ascii_case(b"chunked"))
}

/// The Content-Length, if any; every copy of the field must agree.
fn content_length(headers: &[Header<'_>]) -> Result<Option<u64>, HttpError> {
    let mut found = None;
    for header in headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("content-length"))
    {
        let digits = trim_bytes(header.value);
        if digits.is_empty() {
            return Err(HttpError::BadContentLength);
        }
        let mut value = 0u64;
        for &byte in digits {
            if !byte.is_ascii_digit() {
                return Err(HttpError::BadContentLength);
            }
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(byte - b'0')))
                .ok_or(HttpError::BadContentLength)?;
        }
        if found.is_some_and(|previous| previous != value) {
            return Err(HttpError::BadContentLength);
        }
        found = Some(value);
    }
    Ok(found)
}

/// Where the chunked decoder is in the body (RFC 9112 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hexadecimal chunk size.
    Size,
    /// Skipping whitespace and chunk extensions up to the end of the line.
    Extension,
    /// Saw CR at the end of the size line.
    SizeLineFeed,
    /// Inside chunk data.
    Data,
    /// Chunk data ended; CRLF must follow.
    DataCarriageReturn,
    DataLineFeed,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line, which is ignored.
    TrailerLine,
    /// Saw CR on the final empty line.
    EndLineFeed,
    /// The last chunk and the trailer section are through.
    Done,
}

/// Removes chunked transfer coding from a body, one input buffer at a time.
///
/// Chunk extensions and trailer fields are skipped. A bare LF is accepted as
/// a line end (RFC 9112 §2.2); a CR must be followed by LF. After an error the
/// decoder's state is meaningless; drop the connection.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Size being read, then the data bytes left in the current chunk.
    size: u64,
    size_digits: u8,
    line_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub const fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            size: 0,
            size_digits: 0,
            line_bytes: 0,
        }
    }

    /// True once the last chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Starts over for a new body.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Decodes `input`, calling `sink` with body runs borrowed from it.
    /// Returns the bytes consumed: all of `input`, unless the body ends
    /// inside it, in which case the bytes after the body are not consumed.
    pub fn decode(
        &mut self,
        input: &[u8],
        sink: &mut impl FnMut(&[u8]),
    ) -> Result<usize, HttpError> {
        let mut position = 0;
        while position < input.len() && self.state != ChunkState::Done {
            if self.state == ChunkState::Data {
                let available = input.len() - position;
                let take = usize::try_from(self.size).map_or(available, |size| size.min(available));
                sink(&input[position..position + take]);
                position += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = ChunkState::DataCarriageReturn;
                }
                continue;
            }
            self.step(input[position])?;
            position += 1;
        }
        Ok(position)
    }

    /// Consumes one byte outside chunk data.
    fn step(&mut self, byte: u8) -> Result<(), HttpError> {
        match self.state {
            ChunkState::Size | ChunkState::Extension | ChunkState::SizeLineFeed => {
                self.count_line_byte()?;
                self.size_line_byte(byte)
            }
            ChunkState::DataCarriageReturn => match byte {
                b'\r' => self.enter(ChunkState::DataLineFeed),
                b'\n' => self.start_line(ChunkState::Size),
                _ => Err(HttpError::BadChunkFraming),
            },
            ChunkState::DataLineFeed => match byte {
                b'\n' => self.start_line(ChunkState::Size),
                _ => Err(HttpError::BadChunkFraming),
            },
            ChunkState::TrailerStart => match byte {
                b'\r' => self.enter(ChunkState::EndLineFeed),
                b'\n' => self.enter(ChunkState::Done),
                _ => {
                    self.enter(ChunkState::TrailerLine)?;
                    self.count_line_byte()
                }
            },
            ChunkState::TrailerLine => match byte {
                b'\n' => self.start_line(ChunkState::TrailerStart),
                _ => self.count_line_byte(),
            },
            ChunkState::EndLineFeed => match byte {
                b'\n' => self.enter(ChunkState::Done),
                _ => Err(HttpError::BadChunkFraming),
            },
            ChunkState::Data | ChunkState::Done => Ok(()),
        }
    }

    /// Consumes one byte of the chunk-size line.
    fn size_line_byte(&mut self, byte: u8) -> Result<(), HttpError> {
        match (self.state, byte) {
            (ChunkState::Size, _) if byte.is_ascii_hexdigit() => {
                // to_digit cannot fail on a hex digit.
                let digit = u64::from(char::from(byte).to_digit(16).unwrap_or(0));
                self.size = self
                    .size
                    .checked_mul(16)
                    .map(|size| size + digit)
                    .ok_or(HttpError::BadChunkSize)?;
                self.size_digits = self.size_digits.saturating_add(1);
                Ok(())
            }
            (ChunkState::Size, _) if self.size_digits == 0 => Err(HttpError::BadChunkSize),
            (ChunkState::Size, b' ' | b'\t' | b';') => self.enter(ChunkState::Extension),
            (ChunkState::Size | ChunkState::Extension, b'\r') => {
                self.enter(ChunkState::SizeLineFeed)
            }
            (ChunkState::Size | ChunkState::Extension | ChunkState::SizeLineFeed, b'\n') => {
                self.end_size_line()
            }
            (ChunkState::Size, _) => Err(HttpError::BadChunkSize),
            (ChunkState::Extension, _) => Ok(()),
            _ => Err(HttpError::BadChunkFraming),
        }
    }

    fn end_size_line(&mut self) -> Result<(), HttpError> {
        let next = if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        };
        self.size_digits = 0;
        self.start_line(next)
    }

    /// Moves to `state` within the current line.
    fn enter(&mut self, state: ChunkState) -> Result<(), HttpError> {
        self.state = state;
        Ok(())
    }

    /// Moves to `state` at the start of a new line.
    fn start_line(&mut self, state: ChunkState) -> Result<(), HttpError> {
        self.line_bytes = 0;
        self.enter(state)
    }

    fn count_line_byte(&mut self) -> Result<(), HttpError> {
        self.line_bytes += 1;
        if self.line_bytes > HTTP_CHUNK_LINE_BYTES_MAX {
            return Err(HttpError::ChunkLineTooLong);
        }
        Ok(())
    }
}

/// Response status codes the relay sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    RangeNotSatisfiable,
    /// A request body larger than the resource takes.
    PayloadTooLarge,
    /// A body without Content-Length.
    LengthRequired,
    HeaderFieldsTooLarge,
    InternalServerError,
    ServiceUnavailable,
}

impl Status {
    pub fn code(&self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::RangeNotSatisfiable => 416,
            Status::PayloadTooLarge => 413,
            Status::LengthRequired => 411,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
        }
    }

    /// The reason phrase of RFC 9110 §15 (RFC 6585 §5 for 431).
    pub fn reason(&self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::RangeNotSatisfiable => "Range Not Satisfiable",
            Status::PayloadTooLarge => "Content Too Large",
            Status::LengthRequired => "Length Required",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// Why a head could not be rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitError {
    /// The output buffer is too small.
    Full,
    /// A caller-given field contains a control byte, a line break or (in a
    /// request target or host) a space, which would break the message.
    ForbiddenByte,
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmitError::Full => "output buffer too small for HTTP head",
            EmitError::ForbiddenByte => "forbidden byte in HTTP field",
        })
    }
}

impl From<Full> for EmitError {
    fn from(_: Full) -> Self {
        EmitError::Full
    }
}

impl From<fmt::Error> for EmitError {
    fn from(_: fmt::Error) -> Self {
        EmitError::Full
    }
}

/// Field values may hold visible ASCII and spaces (no CR, LF or controls).
fn check_field_value(text: &str) -> Result<(), EmitError> {
    let visible = |byte: &u8| byte.is_ascii_graphic() || *byte == b' ';
    if text.bytes().all(|byte| visible(&byte)) {
        Ok(())
    } else {
        Err(EmitError::ForbiddenByte)
    }
}

/// Tokens (request target, host) may hold visible ASCII only.
fn check_token(text: &str) -> Result<(), EmitError> {
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(EmitError::ForbiddenByte)
    }
}

/// The response header that tells a stream's position (see
/// [`emit_stream_head`]).
pub const POSITION_HEADER: &str = "X-Ringcast-Position";

/// The response header that tells how many bytes of PAT and PMT come before
/// the stream at [`POSITION_HEADER`].
pub const PREAMBLE_HEADER: &str = "X-Ringcast-Preamble";

/// Renders the head of a live stream response: 200, no Content-Length, the
/// body runs until the connection closes. `position`, when known, is the
/// stream position where the body continues after a preamble of `preamble`
/// bytes (the PAT and PMT); a client that is cut off after receiving `n`
/// body bytes can resume at `position + n - preamble`.
pub fn emit_stream_head(
    w: &mut SliceWriter<'_>,
    content_type: &str,
    position: Option<(u64, usize)>,
) -> Result<(), EmitError> {
    check_field_value(content_type)?;
    write!(
        w,
        "HTTP/1.1 200 OK\r\n\
         Content-Type: {content_type}\r\n\
         Cache-Control: no-cache\r\n\
         Connection: close\r\n\
         Server: {PRODUCT}\r\n\
         transferMode.dlna.org: Streaming\r\n\
         contentFeatures.dlna.org: {DLNA_CONTENT_FEATURES}\r\n"
    )?;
    if let Some((position, preamble)) = position {
        write!(
            w,
            "{POSITION_HEADER}: {position}\r\n{PREAMBLE_HEADER}: {preamble}\r\n"
        )?;
    }
    w.write_str("\r\n")?;
    Ok(())
}

/// The DLNA 4th field of a live MPEG-TS stream (DLNA guidelines 7.4.1.3):
/// no profile name (`DLNA.ORG_PN` only when the codec is known for sure),
/// no seeking (`OP=00`), not transcoded (`CI=0`), and the flags streaming
/// transfer mode (bit 24), background transfer (22), connection stall (21)
/// and DLNA 1.5 (20). TVs compare it with the `protocolInfo` of the item.
pub const DLNA_CONTENT_FEATURES: &str =
    "DLNA.ORG_OP=00;DLNA.ORG_CI=0;DLNA.ORG_FLAGS=01700000000000000000000000000000";

/// Renders the head of a `200` whose body ends when the connection closes
/// (a document written in pieces).
pub fn emit_open_ended_head(w: &mut SliceWriter<'_>, content_type: &str) -> Result<(), EmitError> {
    check_field_value(content_type)?;
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\n\
         Connection: close\r\nServer: {PRODUCT}\r\n\r\n"
    )?;
    Ok(())
}

/// Renders the head of a response with a body of `content_length` bytes.
/// A 405 also lists the allowed methods, as RFC 9110 §15.5.6 requires.
pub fn emit_response_head(
    w: &mut SliceWriter<'_>,
    status: Status,
    content_type: &str,
    content_length: usize,
    retry_after_s: Option<u32>,
) -> Result<(), EmitError> {
    check_field_value(content_type)?;
    write!(
        w,
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {content_length}\r\n",
        status.code(),
        status.reason()
    )?;
    if let Some(seconds) = retry_after_s {
        write!(w, "Retry-After: {seconds}\r\n")?;
    }
    if status == Status::MethodNotAllowed {
        w.write_bytes(b"Allow: GET, HEAD\r\n")?;
    }
    write!(w, "Connection: close\r\nServer: {PRODUCT}\r\n\r\n")?;
    Ok(())
}

/// Renders a GET request for pulling a source. `host_header` is the Host
/// field value (`host` or `host:port`); `path` is the origin-form target,
/// query included.
pub fn emit_get_request(
    w: &mut SliceWriter<'_>,
    host_header: &str,
    path: &str,
) -> Result<(), EmitError> {
    check_token(host_header)?;
    check_token(path)?;
    if !path.starts_with('/') {
        return Err(EmitError::ForbiddenByte);
    }
    write!(
        w,
        "GET {path} HTTP/1.1\r\n\
         Host: {host_header}\r\n\
         User-Agent: {PRODUCT}\r\n\
         Accept: */*\r\n\
         Connection: close\r\n\
         \r\n"
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    const LIMIT: usize = crate::limits::HTTP_HEADERS_MAX;

    #[test]
    fn parses_a_player_request() {
        let bytes = b"GET /udp/239.1.1.1:1234?ifname=eth1 HTTP/1.1\r\nHost: box\r\nUser-Agent: VLC/3.0\r\nicy-metadata: 1\r\n\r\nextra";
        let mut headers = [EMPTY_HEADER; LIMIT];
        let (head, length) = parse_request(bytes, &mut headers).unwrap().unwrap();
        assert_eq!(length, bytes.len() - 5);
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path, "/udp/239.1.1.1:1234");
        assert_eq!(head.query, Some("ifname=eth1"));
        assert_eq!(head.version_minor, 1);
        assert_eq!(head.header("user-agent"), Some(&b"VLC/3.0"[..]));
        assert_eq!(head.header("ICY-METADATA"), Some(&b"1"[..]));
        assert_eq!(head.header("accept"), None);
        assert_eq!(head.headers().len(), 3);
    }

    #[test]
    fn request_methods_and_targets() {
        let cases: [(&[u8], Method, &str, Option<&str>); 6] = [
            (b"HEAD / HTTP/1.0\r\n\r\n", Method::Head, "/", None),
            (b"POST /x? HTTP/1.1\r\n\r\n", Method::Post, "/x", Some("")),
            (
                b"GET http://box:8080/ch/1?a=b HTTP/1.1\r\n\r\n",
                Method::Get,
                "/ch/1",
                Some("a=b"),
            ),
            (b"GET HTTP://box HTTP/1.1\r\n\r\n", Method::Get, "/", None),
            (
                b"GET http://box?q HTTP/1.1\r\n\r\n",
                Method::Get,
                "/",
                Some("q"),
            ),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", Method::Other, "*", None),
        ];
        for (bytes, method, path, query) in cases {
            let mut headers = [EMPTY_HEADER; LIMIT];
            let (head, _) = parse_request(bytes, &mut headers).unwrap().unwrap();
            assert_eq!((head.method, head.path, head.query), (method, path, query));
        }
        let mut headers = [EMPTY_HEADER; LIMIT];
        let bad = parse_request(b"GET ftp://x/ HTTP/1.1\r\n\r\n", &mut headers);
        assert_eq!(bad.err(), Some(HttpError::BadTarget));
        let mut headers = [EMPTY_HEADER; LIMIT];
        let bad = parse_request(b"GET index.html HTTP/1.1\r\n\r\n", &mut headers);
        assert_eq!(bad.err(), Some(HttpError::BadTarget));
    }

    #[test]
    fn request_incomplete_at_every_cut() {
        let bytes = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..bytes.len() {
            let mut headers = [EMPTY_HEADER; LIMIT];
            assert!(
                matches!(parse_request(&bytes[..cut], &mut headers), Ok(None)),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn request_errors() {
        let mut headers = [EMPTY_HEADER; 2];
        let bytes = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let error = parse_request(bytes, &mut headers).err();
        assert_eq!(error, Some(HttpError::TooManyHeaders));
        assert_eq!(
            HttpError::TooManyHeaders.status(),
            Status::HeaderFieldsTooLarge
        );

        let mut headers = [EMPTY_HEADER; LIMIT];
        let error = parse_request(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", &mut headers).err();
        assert!(matches!(error, Some(HttpError::Malformed(_))));
        assert_eq!(error.map(|e| e.status()), Some(Status::BadRequest));

        let mut long = Vec::from(&b"GET / HTTP/1.1\r\nX: "[..]);
        long.resize(HTTP_HEADER_BYTES_MAX, b'a');
        let mut headers = [EMPTY_HEADER; LIMIT];
        let error = parse_request(&long, &mut headers).err();
        assert_eq!(error, Some(HttpError::HeadTooLarge));
        long.extend_from_slice(b"\r\n\r\n");
        let mut headers = [EMPTY_HEADER; LIMIT];
        let error = parse_request(&long, &mut headers).err();
        assert_eq!(error, Some(HttpError::HeadTooLarge));
    }

    #[test]
    fn parses_source_responses() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: gzip , Chunked\r\nContent-Length: 5\r\n\r\n";
        let mut headers = [EMPTY_HEADER; LIMIT];
        let (head, length) = parse_response(bytes, &mut headers).unwrap().unwrap();
        assert_eq!(length, bytes.len());
        assert_eq!(head.code, 200);
        assert!(head.chunked);
        assert_eq!(head.content_length, None);
        assert_eq!(head.content_type, Some("video/mp2t"));

        let bytes = b"HTTP/1.0 302 Found\r\nLocation: http://cdn/x.ts \r\nContent-Length: 0\r\ncontent-length: 0\r\n\r\n";
        let mut headers = [EMPTY_HEADER; LIMIT];
        let (head, _) = parse_response(bytes, &mut headers).unwrap().unwrap();
        assert_eq!(head.code, 302);
        assert_eq!(head.version_minor, 0);
        assert!(!head.chunked);
        assert_eq!(head.content_length, Some(0));
        assert_eq!(head.location, Some("http://cdn/x.ts"));
    }

    #[test]
    fn response_framing_errors() {
        let cases: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ];
        for bytes in cases {
            let mut headers = [EMPTY_HEADER; LIMIT];
            assert_eq!(
                parse_response(bytes, &mut headers).err(),
                Some(HttpError::BadContentLength)
            );
        }
        let mut headers = [EMPTY_HEADER; LIMIT];
        let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n";
        let (head, _) = parse_response(bytes, &mut headers).unwrap().unwrap();
        assert!(!head.chunked);
        let mut headers = [EMPTY_HEADER; LIMIT];
        assert!(matches!(
            parse_response(b"HTTP/1.1 200", &mut headers),
            Ok(None)
        ));
        let mut headers = [EMPTY_HEADER; LIMIT];
        let error = parse_response(b"ICY 200 OK\r\n\r\n", &mut headers).err();
        assert!(matches!(error, Some(HttpError::Malformed(_))));
    }

    /// Decodes `input` cut at `cut`, feeding unconsumed bytes again.
    fn decode_split(input: &[u8], cut: usize) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut sink = |run: &[u8]| body.extend_from_slice(run);
        let first = decoder.decode(&input[..cut], &mut sink)?;
        let mut consumed = first;
        if first == cut {
            consumed += decoder.decode(&input[cut..], &mut sink)?;
        }
        let done = decoder.is_done();
        Ok((body, consumed, done))
    }

    #[test]
    fn chunked_body_at_every_split() {
        let input = b"5\r\nhello\r\n1A;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let body = b"helloabcdefghijklmnopqrstuvwxyz";
        for cut in 0..=input.len() {
            let (decoded, consumed, done) = decode_split(input, cut).unwrap();
            assert_eq!(decoded, body, "cut {cut}");
            assert_eq!(consumed, input.len() - 4, "cut {cut}");
            assert!(done);
        }
    }

    #[test]
    fn chunked_body_byte_by_byte_with_bare_line_feeds() {
        let input = b"3 ; ext\nabc\n0\n\n";
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        for byte in input.iter() {
            let consumed = decoder
                .decode(core::slice::from_ref(byte), &mut |run: &[u8]| {
                    body.extend_from_slice(run)
                })
                .unwrap();
            assert_eq!(consumed, 1);
        }
        assert_eq!(body, b"abc");
        assert!(decoder.is_done());
        assert_eq!(
            decoder.decode(b"more", &mut |_: &[u8]| panic!()).unwrap(),
            0
        );
        decoder.reset();
        assert!(!decoder.is_done());
    }

    #[test]
    fn chunked_errors() {
        let cases: [(&[u8], HttpError); 7] = [
            (b"\r\n", HttpError::BadChunkSize),
            (b"zz\r\n", HttpError::BadChunkSize),
            (b"1x\r\n", HttpError::BadChunkSize),
            (b"10000000000000000\r\n", HttpError::BadChunkSize),
            (b"1\r\nab\r\n", HttpError::BadChunkFraming),
            (b"1\rx", HttpError::BadChunkFraming),
            (b"0\r\n\rx", HttpError::BadChunkFraming),
        ];
        for (input, error) in cases {
            let mut decoder = ChunkedDecoder::new();
            assert_eq!(decoder.decode(input, &mut |_: &[u8]| {}), Err(error));
        }
        let mut long = Vec::from(&b"1;"[..]);
        long.resize(HTTP_CHUNK_LINE_BYTES_MAX, b'x');
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(decoder.decode(&long, &mut |_: &[u8]| {}), Ok(long.len()));
        assert_eq!(
            decoder.decode(b"x", &mut |_: &[u8]| {}),
            Err(HttpError::ChunkLineTooLong)
        );

        let mut trailer = Vec::from(&b"0\r\n"[..]);
        trailer.resize(3 + HTTP_CHUNK_LINE_BYTES_MAX + 1, b't');
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.decode(&trailer, &mut |_: &[u8]| {}),
            Err(HttpError::ChunkLineTooLong)
        );
    }

    #[test]
    fn large_chunk_is_passed_through_borrowed() {
        let mut input = Vec::from(&b"FFFFFFFF\r\n"[..]);
        input.extend_from_slice(&[7u8; 1000]);
        let mut decoder = ChunkedDecoder::new();
        let mut runs = 0;
        let consumed = decoder
            .decode(&input, &mut |run: &[u8]| {
                runs += 1;
                assert_eq!(run.len(), 1000);
            })
            .unwrap();
        assert_eq!((consumed, runs), (input.len(), 1));
        assert!(!decoder.is_done());
    }

    fn render(emit: impl FnOnce(&mut SliceWriter<'_>) -> Result<(), EmitError>) -> Vec<u8> {
        let mut buffer = [0u8; 512];
        let mut w = SliceWriter::new(&mut buffer);
        emit(&mut w).unwrap();
        w.written().to_vec()
    }

    #[test]
    fn golden_stream_head() {
        let bytes = render(|w| emit_stream_head(w, "video/mp2t", None));
        let expected = concat!(
            "HTTP/1.1 200 OK\r\n",
            "Content-Type: video/mp2t\r\n",
            "Cache-Control: no-cache\r\n",
            "Connection: close\r\n",
            "Server: ringcast/",
            env!("CARGO_PKG_VERSION"),
            "\r\n",
            "transferMode.dlna.org: Streaming\r\n",
            "contentFeatures.dlna.org: DLNA.ORG_OP=00;DLNA.ORG_CI=0;",
            "DLNA.ORG_FLAGS=01700000000000000000000000000000\r\n",
            "\r\n"
        );
        assert_eq!(bytes, expected.as_bytes());
    }

    #[test]
    fn golden_response_heads() {
        let bytes = render(|w| {
            emit_response_head(w, Status::ServiceUnavailable, "text/plain", 12, Some(5))
        });
        let expected = concat!(
            "HTTP/1.1 503 Service Unavailable\r\n",
            "Content-Type: text/plain\r\n",
            "Content-Length: 12\r\n",
            "Retry-After: 5\r\n",
            "Connection: close\r\n",
            "Server: ringcast/",
            env!("CARGO_PKG_VERSION"),
            "\r\n\r\n"
        );
        assert_eq!(bytes, expected.as_bytes());

        let bytes = render(|w| {
            emit_response_head(
                w,
                Status::MethodNotAllowed,
                "text/plain; charset=utf-8",
                0,
                None,
            )
        });
        let expected = concat!(
            "HTTP/1.1 405 Method Not Allowed\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Content-Length: 0\r\n",
            "Allow: GET, HEAD\r\n",
            "Connection: close\r\n",
            "Server: ringcast/",
            env!("CARGO_PKG_VERSION"),
            "\r\n\r\n"
        );
        assert_eq!(bytes, expected.as_bytes());
    }

    #[test]
    fn golden_get_request() {
        let bytes = render(|w| emit_get_request(w, "cdn.example:8080", "/live/ch1.ts?token=a"));
        let expected = concat!(
            "GET /live/ch1.ts?token=a HTTP/1.1\r\n",
            "Host: cdn.example:8080\r\n",
            "User-Agent: ringcast/",
            env!("CARGO_PKG_VERSION"),
            "\r\n",
            "Accept: */*\r\n",
            "Connection: close\r\n",
            "\r\n"
        );
        assert_eq!(bytes, expected.as_bytes());
    }

    #[test]
    fn emitters_refuse_injection_and_small_buffers() {
        let mut buffer = [0u8; 512];
        let mut w = SliceWriter::new(&mut buffer);
        assert_eq!(
            emit_stream_head(&mut w, "video/mp2t\r\nX: y", None),
            Err(EmitError::ForbiddenByte)
        );
        assert_eq!(
            emit_get_request(&mut w, "h", "/a b"),
            Err(EmitError::ForbiddenByte)
        );
        assert_eq!(
            emit_get_request(&mut w, "h\r\n", "/"),
            Err(EmitError::ForbiddenByte)
        );
        assert_eq!(
            emit_get_request(&mut w, "h", "a"),
            Err(EmitError::ForbiddenByte)
        );
        assert_eq!(
            emit_get_request(&mut w, "", "/"),
            Err(EmitError::ForbiddenByte)
        );
        assert!(w.is_empty());

        let mut buffer = [0u8; 40];
        let mut w = SliceWriter::new(&mut buffer);
        assert_eq!(
            emit_stream_head(&mut w, "video/mp2t", None),
            Err(EmitError::Full)
        );
        let mut w = SliceWriter::new(&mut buffer);
        let result = emit_response_head(&mut w, Status::Ok, "text/html", 10, None);
        assert_eq!(result, Err(EmitError::Full));
    }

    #[test]
    fn status_codes_and_reasons() {
        assert_eq!((Status::Ok.code(), Status::Ok.reason()), (200, "OK"));
        assert_eq!(Status::BadRequest.code(), 400);
        assert_eq!(Status::NotFound.code(), 404);
        assert_eq!(Status::RequestTimeout.code(), 408);
        assert_eq!(
            Status::HeaderFieldsTooLarge.reason(),
            "Request Header Fields Too Large"
        );
        assert_eq!(Status::InternalServerError.code(), 500);
    }
}
