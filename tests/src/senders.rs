//! Sources for the daemon, written here so the tests know exactly which
//! bytes were sent: a paced UDP/RTP datagram sender, an HTTP source server,
//! a TCP pusher and a paced pipe writer (stdin).
//!
//! Each one sends a file as a live stream: the file repeated without end
//! (so what was sent is [`crate::ts::Sent::Cyclic`]), paced at a given bit
//! rate, for a bounded duration, and stops by itself. Datagrams carry
//! 7 × 188 = 1316 bytes; RTP adds an RFC 3550 header (version 2, payload type
//! 33 = MP2T per RFC 3551, incrementing sequence number, 90 kHz timestamp).
//! Stream writes use uneven sizes that do not fall on packet boundaries, so
//! the daemon's re-framing is exercised.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ts::{cyclic_slice, PACKET};

/// Bytes of TS in one datagram.
pub const DATAGRAM_TS_BYTES: usize = 7 * PACKET;

/// Non-TS bytes injected into a stream source between packets.
#[derive(Clone, Copy, Debug)]
pub struct Garbage {
    /// When the first burst goes out (after the start).
    pub first_after: Duration,
    pub every: Duration,
    pub bytes: usize,
    /// Stop injecting after this many bursts.
    pub bursts_max: u32,
}

/// What to send, how fast and for how long.
#[derive(Clone, Debug)]
pub struct SendPlan {
    pub data: Arc<Vec<u8>>,
    pub rate_bps: f64,
    pub duration: Duration,
    /// (after, length): send nothing for a while.
    pub gap: Option<(Duration, Duration)>,
    pub garbage: Option<Garbage>,
    /// Enter this namespace first.
    pub netns: Option<String>,
    /// Interface index for IPv6 multicast (IPV6_MULTICAST_IF).
    pub multicast_if_v6: Option<u32>,
}

impl SendPlan {
    pub fn new(data: Arc<Vec<u8>>, rate_bps: f64, duration: Duration) -> SendPlan {
        assert!(
            !data.is_empty() && data.len().is_multiple_of(PACKET),
            "send whole TS packets"
        );
        SendPlan {
            data,
            rate_bps,
            duration,
            gap: None,
            garbage: None,
            netns: None,
            multicast_if_v6: None,
        }
    }

    pub fn netns(mut self, ns: Option<&str>) -> SendPlan {
        self.netns = ns.map(str::to_string);
        self
    }
}

/// Counters of a sender, readable while it runs.
#[derive(Clone, Debug, Default)]
pub struct SendStats {
    pub bytes: u64,
    pub datagrams: u64,
    pub garbage_bytes: u64,
    pub garbage_bursts: u32,
    pub connections: u32,
    pub errors: Vec<String>,
    /// Requests seen by the HTTP source (request lines).
    pub requests: Vec<String>,
}

/// A running sender; stops on drop.
pub struct Sender {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<SendStats>>,
    handle: Option<std::thread::JoinHandle<()>>,
    addr: Option<SocketAddr>,
}

impl Sender {
    fn spawn(
        name: &str,
        stats: Arc<Mutex<SendStats>>,
        stop: Arc<AtomicBool>,
        addr: Option<SocketAddr>,
        f: impl FnOnce() + Send + 'static,
    ) -> Sender {
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .expect("spawn sender");
        Sender {
            stop,
            stats,
            handle: Some(handle),
            addr,
        }
    }

    /// The listening address (HTTP source).
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("this sender has no listening address")
    }

    pub fn stats(&self) -> SendStats {
        self.stats.lock().unwrap().clone()
    }

    /// Stops and waits for the thread; returns the final counters.
    pub fn finish(mut self) -> SendStats {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.stats()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Paces a byte stream: byte `n` is due at `start + n * 8 / rate`, with any
/// gap added. Sleeps in small steps so a stop request is seen quickly.
struct Pacer {
    start: Instant,
    rate_bps: f64,
    end: Instant,
    gap: Option<(Instant, Duration)>,
}

impl Pacer {
    fn new(plan: &SendPlan) -> Pacer {
        let start = Instant::now();
        Pacer {
            start,
            rate_bps: plan.rate_bps,
            end: start + plan.duration,
            gap: plan.gap.map(|(after, len)| (start + after, len)),
        }
    }

    fn due(&self, offset: u64) -> Instant {
        let t = self.start + Duration::from_secs_f64(offset as f64 * 8.0 / self.rate_bps);
        match self.gap {
            Some((at, len)) if t >= at => t + len,
            _ => t,
        }
    }

    /// Waits until byte `offset` is due; false when time is up or stopped.
    fn wait(&self, offset: u64, stop: &AtomicBool) -> bool {
        let due = self.due(offset);
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) || now >= self.end {
                return false;
            }
            if now >= due {
                return true;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
        }
    }
}

fn enter(plan: &SendPlan) {
    if let Some(ns) = &plan.netns {
        crate::netns::enter_current_thread(ns);
    }
}

/// UDP (or RTP) datagrams of 1316 TS bytes to `dest` (unicast or multicast).
pub fn udp_sender(dest: SocketAddr, rtp: bool, plan: SendPlan) -> Sender {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(SendStats::default()));
    let (s2, st2) = (stop.clone(), stats.clone());
    Sender::spawn("udp sender", stats, stop, None, move || {
        enter(&plan);
        let bind: SocketAddr = if dest.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let socket = match UdpSocket::bind(bind) {
            Ok(s) => s,
            Err(e) => return st2.lock().unwrap().errors.push(format!("bind: {e}")),
        };
        if dest.ip().is_multicast() && dest.is_ipv4() {
            let _ = socket.set_multicast_ttl_v4(1);
            let _ = socket.set_multicast_loop_v4(true);
        }
        if let (Some(index), true) = (plan.multicast_if_v6, dest.is_ipv6()) {
            set_multicast_if_v6(&socket, index);
        }
        let pacer = Pacer::new(&plan);
        let ssrc: u32 = 0x5249_4e47 ^ std::process::id();
        let mut piece = Vec::with_capacity(DATAGRAM_TS_BYTES);
        let mut datagram = Vec::with_capacity(12 + DATAGRAM_TS_BYTES);
        let mut offset = 0u64;
        let mut seq: u16 = 0x1234;
        while pacer.wait(offset, &s2) {
            cyclic_slice(&plan.data, offset as usize, DATAGRAM_TS_BYTES, &mut piece);
            datagram.clear();
            if rtp {
                let ts90k = (offset as f64 * 8.0 / plan.rate_bps * 90_000.0) as u64 as u32;
                datagram.extend_from_slice(&[0x80, 33]);
                datagram.extend_from_slice(&seq.to_be_bytes());
                datagram.extend_from_slice(&ts90k.to_be_bytes());
                datagram.extend_from_slice(&ssrc.to_be_bytes());
                seq = seq.wrapping_add(1);
            }
            datagram.extend_from_slice(&piece);
            match socket.send_to(&datagram, dest) {
                Ok(_) => {
                    let mut s = st2.lock().unwrap();
                    s.datagrams += 1;
                    s.bytes += piece.len() as u64;
                }
                Err(e) => {
                    let mut s = st2.lock().unwrap();
                    if s.errors.len() < 10 {
                        s.errors.push(format!("send_to {dest}: {e}"));
                    }
                }
            }
            offset += DATAGRAM_TS_BYTES as u64;
        }
    })
}

fn set_multicast_if_v6(socket: &UdpSocket, index: u32) {
    use std::os::fd::AsRawFd;
    let value = index as libc::c_int;
    // SAFETY: setsockopt on an open socket with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_IF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "IPV6_MULTICAST_IF: {}",
        std::io::Error::last_os_error()
    );
}

/// Uneven write sizes (not multiples of 188) for stream sources.
const WRITE_SIZES: [usize; 6] = [1316, 1000, 4096, 3 * 188 + 77, 2048 + 5, 188];

fn garbage_bytes(n: usize, seed: &mut u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            // xorshift64: deterministic, no dependency.
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            let b = (*seed >> 24) as u8;
            // No 0x47 at all, so no garbage byte can look like a sync byte:
            // a correct resync then loses no real packet.
            if b == 0x47 {
                0x46
            } else {
                b
            }
        })
        .collect()
}

/// How a byte stream is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Plain,
    Chunked,
}

/// Writes the cyclic file from `start_offset`, paced, until time is up.
/// Garbage bursts go in at packet boundaries of the real stream.
fn stream_paced(
    w: &mut dyn Write,
    plan: &SendPlan,
    start_offset: u64,
    framing: Framing,
    stop: &AtomicBool,
    stats: &Mutex<SendStats>,
) {
    let pacer = Pacer::new(plan);
    let mut offset = start_offset;
    let mut sent = 0u64;
    let mut piece = Vec::new();
    let mut next_garbage = plan.garbage.map(|g| pacer.start + g.first_after);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut i = 0;
    let frame = |w: &mut dyn Write, data: &[u8]| -> std::io::Result<()> {
        match framing {
            Framing::Plain => w.write_all(data),
            Framing::Chunked => {
                w.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
                w.write_all(data)?;
                w.write_all(b"\r\n")
            }
        }
    };
    while pacer.wait(sent, stop) {
        let mut size = WRITE_SIZES[i % WRITE_SIZES.len()];
        i += 1;
        if let (Some(at), Some(g)) = (next_garbage, plan.garbage) {
            if Instant::now() >= at && offset.is_multiple_of(PACKET as u64) {
                let junk = garbage_bytes(g.bytes, &mut seed);
                if let Err(e) = frame(w, &junk) {
                    stats
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("write garbage: {e}"));
                    return;
                }
                let mut s = stats.lock().unwrap();
                s.garbage_bytes += junk.len() as u64;
                s.garbage_bursts += 1;
                next_garbage = (s.garbage_bursts < g.bursts_max).then(|| at + g.every);
            } else if Instant::now() >= at {
                // Finish the current packet first, then inject.
                size = PACKET - (offset % PACKET as u64) as usize;
            }
        }
        cyclic_slice(&plan.data, offset as usize, size, &mut piece);
        if let Err(e) = frame(w, &piece) {
            stats.lock().unwrap().errors.push(format!("write: {e}"));
            return;
        }
        offset += size as u64;
        sent += size as u64;
        stats.lock().unwrap().bytes += size as u64;
    }
    if framing == Framing::Chunked {
        let _ = w.write_all(b"0\r\n\r\n");
    }
}

/// Writes the file paced into any writer (the daemon's stdin).
pub fn pipe_writer(mut w: impl Write + Send + 'static, plan: SendPlan) -> Sender {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(SendStats::default()));
    let (s2, st2) = (stop.clone(), stats.clone());
    Sender::spawn("pipe writer", stats, stop, None, move || {
        stream_paced(&mut w, &plan, 0, Framing::Plain, &s2, &st2);
    })
}

/// Connects to `addr` (retrying up to 10 s while the daemon starts its
/// listener) and pushes the file paced.
pub fn tcp_pusher(addr: SocketAddr, plan: SendPlan) -> Sender {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(SendStats::default()));
    let (s2, st2) = (stop.clone(), stats.clone());
    Sender::spawn("tcp pusher", stats, stop, None, move || {
        enter(&plan);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline || s2.load(Ordering::Relaxed) => {
                    return st2
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("connect {addr}: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        st2.lock().unwrap().connections += 1;
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        stream_paced(&mut stream, &plan, 0, Framing::Plain, &s2, &st2);
    })
}

/// An HTTP/1.1 source on 127.0.0.1:0 (inside the plan's namespace, if any)
/// serving the file as a live stream to any GET. A connection starts at the
/// current live position (packet aligned), like a real live source; at most
/// 16 connections are served.
pub fn http_source(plan: SendPlan, chunked: bool) -> Sender {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(SendStats::default()));
    let (s2, st2) = (stop.clone(), stats.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let handle_plan = plan.clone();
    let mut sender = Sender::spawn("http source", stats, stop, None, move || {
        enter(&handle_plan);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind http source");
        listener.set_nonblocking(true).expect("nonblocking");
        let _ = tx.send(listener.local_addr().expect("addr"));
        let start = Instant::now();
        let end = start + handle_plan.duration;
        let mut workers = Vec::new();
        while !s2.load(Ordering::Relaxed) && Instant::now() < end && workers.len() < 16 {
            match listener.accept() {
                Ok((conn, _)) => {
                    st2.lock().unwrap().connections += 1;
                    let elapsed = start.elapsed().as_secs_f64();
                    let live = (elapsed * handle_plan.rate_bps / 8.0) as u64 / PACKET as u64
                        * PACKET as u64;
                    let mut plan = handle_plan.clone();
                    plan.duration = end.saturating_duration_since(Instant::now());
                    let (s3, st3) = (s2.clone(), st2.clone());
                    workers.push(std::thread::spawn(move || {
                        serve(conn, &plan, live, chunked, &s3, &st3)
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => st2.lock().unwrap().errors.push(format!("accept: {e}")),
            }
        }
        for w in workers {
            let _ = w.join();
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("http source listening");
    sender.addr = Some(addr);
    sender
}

fn serve(
    mut conn: TcpStream,
    plan: &SendPlan,
    offset: u64,
    chunked: bool,
    stop: &AtomicBool,
    stats: &Mutex<SendStats>,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while crate::http::find(&head, b"\r\n\r\n").is_none() && head.len() < 8192 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    stats.lock().unwrap().requests.push(line);
    let response: &[u8] = if chunked {
        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n"
    } else {
        b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\nCache-Control: no-cache\r\n\r\n"
    };
    if conn.write_all(response).is_err() {
        return;
    }
    let framing = if chunked {
        Framing::Chunked
    } else {
        Framing::Plain
    };
    stream_paced(&mut conn, plan, offset, framing, stop, stats);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_has_a_sync_byte() {
        let mut seed = 1;
        let g = garbage_bytes(100_000, &mut seed);
        assert!(!g.contains(&0x47));
        assert!(g.iter().any(|&b| b != g[0]));
    }
}
