//! A small blocking HTTP/1.1 client for tests: one request per connection
//! (`Connection: close`), read and write timeouts, bounded body size.
//!
//! Not for stream endpoints with GET (use [`crate::reader::Reader`]); for a
//! HEAD the head is returned and any body bytes that still arrive within
//! 300 ms are kept in `body`, so a test can assert there are none.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response head this client accepts.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Largest body this client keeps.
const BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// A parsed response.
#[derive(Clone, Debug, Default)]
pub struct HttpResponse {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with a 10 s timeout.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse, String> {
    http_request(addr, "GET", path, &[], Duration::from_secs(10))
}

/// One request; `timeout` bounds the whole exchange.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringcast-tests\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    raw_request(addr, head.as_bytes(), method == "HEAD", timeout)
}

/// Sends `request` as is (any bytes) and parses the response. The write runs
/// on its own thread so a server that answers early (431, 400) and closes is
/// still heard.
pub fn raw_request(
    addr: SocketAddr,
    request: &[u8],
    head_only: bool,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let deadline = Instant::now() + timeout;
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_write_timeout(Some(timeout)).ok();
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let request = request.to_vec();
    let write_thread = std::thread::spawn(move || writer.write_all(&request));
    let result = read_response(stream, head_only, deadline);
    // A write error after the server answered is expected for oversized
    // requests; it only matters when there is no response.
    let write_result = write_thread.join().unwrap_or(Ok(()));
    match (result, write_result) {
        (Ok(r), _) => Ok(r),
        (Err(e), Err(w)) => Err(format!("{e} (write: {w})")),
        (Err(e), Ok(())) => Err(e),
    }
}

fn read_response(
    mut stream: TcpStream,
    head_only: bool,
    deadline: Instant,
) -> Result<HttpResponse, String> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > HEAD_BYTES_MAX {
            return Err("response head over 64 KiB".into());
        }
        if read_some(&mut stream, &mut buf, deadline)? == 0 {
            return Err(format!(
                "connection closed before the end of the response head (got {} bytes: {:?})",
                buf.len(),
                String::from_utf8_lossy(&buf)
            ));
        }
    };
    let mut response = parse_head(&buf[..head_end])?;
    let mut body = buf[head_end..].to_vec();
    if head_only {
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until && body.len() < BODY_BYTES_MAX {
            match read_some(&mut stream, &mut body, until) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        response.body = body;
        return Ok(response);
    }
    let length = response
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    loop {
        if length.is_some_and(|n| body.len() >= n) || body.len() >= BODY_BYTES_MAX {
            break;
        }
        if chunked && find(&body, b"\r\n0\r\n\r\n").is_some() || body.starts_with(b"0\r\n\r\n") {
            break;
        }
        match read_some(&mut stream, &mut body, deadline) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if body.is_empty() && length.is_some_and(|n| n > 0) => return Err(e),
            Err(_) => break,
        }
    }
    if let Some(n) = length {
        body.truncate(n);
    }
    response.body = if chunked { dechunk(&body)? } else { body };
    Ok(response)
}

fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<usize, String> {
    let now = Instant::now();
    if now >= deadline {
        return Err("timed out".into());
    }
    stream
        .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
        .ok();
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

fn parse_head(head: &[u8]) -> Result<HttpResponse, String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(HttpResponse {
        status,
        reason,
        headers,
        body: Vec::new(),
    })
}

/// Decodes a complete `Transfer-Encoding: chunked` body.
pub fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("chunk size line not terminated")?;
        let size_text =
            std::str::from_utf8(&data[..line_end]).map_err(|_| "chunk size not UTF-8")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a response head from a byte prefix (used by the stream reader).
pub fn parse_response_head(head: &[u8]) -> Result<HttpResponse, String> {
    parse_head(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_err());
    }

    #[test]
    fn parses_heads() {
        let r = parse_head(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\nRetry-After: 5\r\nX: a:b\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 431);
        assert_eq!(r.header("retry-after"), Some("5"));
        assert_eq!(r.header("x"), Some("a:b"));
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
