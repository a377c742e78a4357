//! A streaming HTTP reader on its own thread: `GET /channel/x.ts`, parse the
//! head, then capture the body into memory for a bounded time and size,
//! recording (time, total bytes) samples for rate measurements.
//!
//! A reader can "stall" (stop calling read() for a while) to play the slow
//! player; with `small_socket` its receive buffer and MSS are made small
//! before connect(), so the stall reaches the daemon's socket within a second
//! instead of disappearing into megabytes of loopback socket buffers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{find, parse_response_head, HttpResponse};

/// How a reader behaves.
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    pub path: String,
    pub method: String,
    /// Read for this long after the response head arrived.
    pub duration: Duration,
    /// Give up if the head (or, after it, the first body byte) takes longer.
    pub first_byte_timeout: Duration,
    /// Body bytes kept in memory (more are counted, not kept).
    pub keep_bytes: usize,
    /// Enter this network namespace before connecting.
    pub netns: Option<String>,
    /// (after the head, for how long) not to read at all.
    pub stall: Option<(Duration, Duration)>,
    /// Tiny SO_RCVBUF and TCP_MAXSEG, set before connect().
    pub small_socket: bool,
    /// Wait here after connect() and before sending the request, so a group
    /// of readers is connected at once before any request arrives.
    pub barrier: Option<Arc<std::sync::Barrier>>,
}

impl ReaderOptions {
    pub fn new(path: &str, duration: Duration) -> ReaderOptions {
        ReaderOptions {
            path: path.to_string(),
            method: "GET".into(),
            duration,
            first_byte_timeout: Duration::from_secs(15),
            keep_bytes: 64 * 1024 * 1024,
            netns: None,
            stall: None,
            small_socket: false,
            barrier: None,
        }
    }

    pub fn netns(mut self, ns: Option<&str>) -> ReaderOptions {
        self.netns = ns.map(str::to_string);
        self
    }
}

/// Why the reader stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Read for the whole duration.
    Duration,
    /// Asked to stop.
    Stopped,
    /// The server closed the connection.
    Eof,
    /// A socket error or a timeout before data.
    Error(String),
}

/// Everything a reader saw.
#[derive(Debug)]
pub struct ReaderResult {
    pub head: Option<HttpResponse>,
    /// Kept body bytes (at most `keep_bytes`).
    pub body: Vec<u8>,
    pub total_bytes: u64,
    pub started: Instant,
    pub head_at: Option<Instant>,
    pub first_byte_at: Option<Instant>,
    pub ended_at: Instant,
    /// (time, total body bytes so far) after every read.
    pub samples: Vec<(Instant, u64)>,
    /// When the reader stopped reading and when it went on.
    pub stall_window: Option<(Instant, Instant)>,
    pub end: End,
}

impl ReaderResult {
    /// Total bytes received by time `t`.
    pub fn bytes_at(&self, t: Instant) -> u64 {
        let i = self.samples.partition_point(|(at, _)| *at <= t);
        if i == 0 {
            0
        } else {
            self.samples[i - 1].1
        }
    }

    /// Body bytes received between `from` and `to`.
    pub fn bytes_between(&self, from: Instant, to: Instant) -> u64 {
        self.bytes_at(to).saturating_sub(self.bytes_at(from))
    }

    /// Average rate in bit/s between `from` and `to`.
    pub fn rate_bps(&self, from: Instant, to: Instant) -> f64 {
        self.bytes_between(from, to) as f64 * 8.0 / (to - from).as_secs_f64()
    }

    /// Bytes of PAT and PMT the relay sent before the stream proper
    /// (`X-Ringcast-Preamble`); 0 when the stream starts with its own PAT.
    pub fn preamble_len(&self) -> usize {
        self.head
            .as_ref()
            .and_then(|head| head.header("x-ringcast-preamble"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The whole captured body up to its last whole 188-byte packet,
    /// preamble included: what a player decodes.
    pub fn body_packets(&self) -> &[u8] {
        &self.body[..self.body.len() / crate::ts::PACKET * crate::ts::PACKET]
    }

    /// The relayed stream after the preamble, up to its last whole 188-byte
    /// packet: the bytes that must be a contiguous run of what the source
    /// sent. A reader stops (or is cut off) at an arbitrary byte, so the tail
    /// may be a partial packet; everything before it must be whole packets.
    pub fn packets(&self) -> &[u8] {
        let whole = self.body_packets();
        &whole[self.preamble_len().min(whole.len())..]
    }

    /// Panics unless the head is `200`, `Content-Type: video/mp2t`, and has
    /// no `Content-Length`.
    pub fn assert_stream_head(&self, who: &str) {
        let head = self
            .head
            .as_ref()
            .unwrap_or_else(|| panic!("{who}: no response head ({:?})", self.end));
        assert_eq!(
            head.status, 200,
            "{who}: status {} {}",
            head.status, head.reason
        );
        let ctype = head.header("content-type").unwrap_or_default();
        assert!(
            ctype.eq_ignore_ascii_case("video/mp2t"),
            "{who}: Content-Type {ctype:?}, want video/mp2t"
        );
        assert!(
            head.header("content-length").is_none(),
            "{who}: a live stream must not have Content-Length"
        );
    }
}

/// A running reader thread.
pub struct Reader {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<ReaderResult>>,
}

impl Reader {
    pub fn start(addr: SocketAddr, options: ReaderOptions) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("reader {}", options.path))
            .spawn(move || run(addr, options, flag))
            .expect("spawn reader");
        Reader {
            stop,
            handle: Some(handle),
        }
    }

    /// Starts `n` readers of the same options, `spacing` apart
    /// (they then read concurrently; a zero spacing is a simultaneous burst).
    pub fn start_many(
        addr: SocketAddr,
        options: &ReaderOptions,
        n: usize,
        spacing: Duration,
    ) -> Vec<Reader> {
        (0..n)
            .map(|i| {
                if i > 0 && !spacing.is_zero() {
                    std::thread::sleep(spacing);
                }
                Reader::start(addr, options.clone())
            })
            .collect()
    }

    /// Asks the reader to stop soon (within ~200 ms).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the reader to finish (it always does: its time is bounded).
    pub fn join(mut self) -> ReaderResult {
        self.handle
            .take()
            .expect("joined once")
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn connect(addr: SocketAddr, small: bool, timeout: Duration) -> std::io::Result<TcpStream> {
    if !small {
        return TcpStream::connect_timeout(&addr, timeout);
    }
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("small_socket readers support IPv4 only");
    };
    // SAFETY: plain socket(2)/setsockopt(2)/connect(2) on a fresh fd that is
    // handed to TcpStream (which closes it) right after.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let rcvbuf: libc::c_int = 4096;
        let mss: libc::c_int = 1200;
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&rcvbuf as *const libc::c_int).cast(),
            size,
        );
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mss as *const libc::c_int).cast(),
            size,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn run(addr: SocketAddr, o: ReaderOptions, stop: Arc<AtomicBool>) -> ReaderResult {
    if let Some(ns) = &o.netns {
        crate::netns::enter_current_thread(ns);
    }
    let started = Instant::now();
    let mut r = ReaderResult {
        head: None,
        body: Vec::new(),
        total_bytes: 0,
        started,
        head_at: None,
        first_byte_at: None,
        ended_at: started,
        samples: Vec::new(),
        stall_window: None,
        end: End::Duration,
    };
    r.end = match read_stream(addr, &o, &stop, &mut r) {
        Ok(end) => end,
        Err(e) => End::Error(e),
    };
    r.ended_at = Instant::now();
    r
}

fn read_stream(
    addr: SocketAddr,
    o: &ReaderOptions,
    stop: &AtomicBool,
    r: &mut ReaderResult,
) -> Result<End, String> {
    let connected = connect(addr, o.small_socket, Duration::from_secs(5));
    // Wait even if connect failed, or the others would wait for ever.
    if let Some(barrier) = &o.barrier {
        barrier.wait();
    }
    let mut stream = connected.map_err(|e| format!("connect {addr}: {e}"))?;
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringcast-tests\r\nAccept: */*\r\n\r\n",
        o.method, o.path
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write request: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let head_deadline = r.started + o.first_byte_timeout;
    // Head.
    let head_end = loop {
        if let Some(pos) = find(&pending, b"\r\n\r\n") {
            break pos + 4;
        }
        if pending.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(End::Stopped);
        }
        if Instant::now() > head_deadline {
            return Err(format!(
                "no response head within {:?}",
                o.first_byte_timeout
            ));
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "closed before the response head ({} bytes)",
                    pending.len()
                ))
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(format!("read head: {e}")),
        }
    };
    let now = Instant::now();
    r.head_at = Some(now);
    r.head = Some(parse_response_head(&pending[..head_end])?);
    let deadline = now + o.duration;
    let stall = o.stall.map(|(after, len)| (now + after, len));
    let body_start = pending[head_end..].to_vec();
    take(r, &body_start, o.keep_bytes);
    if o.method == "HEAD" {
        return Ok(End::Duration);
    }
    let mut stalled = false;
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) {
            return Ok(End::Stopped);
        }
        if now >= deadline {
            return Ok(End::Duration);
        }
        if let (Some((at, len)), false) = (stall, stalled) {
            if now >= at {
                stalled = true;
                let until = (now + len).min(deadline);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                r.stall_window = Some((now, Instant::now()));
                continue;
            }
        }
        if r.first_byte_at.is_none() && now > r.head_at.unwrap_or(now) + o.first_byte_timeout {
            return Err(format!(
                "no body byte within {:?} of the head",
                o.first_byte_timeout
            ));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok(End::Eof),
            Ok(n) => take(r, &buf[..n], o.keep_bytes),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Ok(End::Error(format!("read: {e}"))),
        }
    }
}

fn take(r: &mut ReaderResult, data: &[u8], keep: usize) {
    if data.is_empty() {
        return;
    }
    let now = Instant::now();
    if r.first_byte_at.is_none() {
        r.first_byte_at = Some(now);
    }
    let room = keep.saturating_sub(r.body.len());
    r.body.extend_from_slice(&data[..room.min(data.len())]);
    r.total_bytes += data.len() as u64;
    if r.samples.len() < 4_000_000 {
        r.samples.push((now, r.total_bytes));
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
