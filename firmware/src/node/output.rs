//! RTP/UDP output of a channel: one task per channel with an `output`, sending
//! the ring's packets to a multicast group (or a unicast host) as they arrive.
//!
//! Policy:
//! - the task reads the ring like a reader that starts at the *live edge*
//!   (the head), never at a keyframe behind it: a set-top box joining the
//!   group expects the stream at its own rate, not a burst of backlog;
//! - a datagram carries [`PACKETS_PER_DATAGRAM`] TS packets and leaves as soon
//!   as they are in the ring ("paced by arrival"); fewer leave, whole packets
//!   only, when no more arrived for `flush_ms`;
//! - RTP (RFC 3551 payload type 33) adds a 12-byte header: the sequence number
//!   goes up by one per datagram from a random start, the 90 kHz timestamp is
//!   the sending time (RFC 2250 §2) from a random base, the SSRC is random;
//! - the output never waits for the network: a datagram the kernel does not
//!   take at once (`WouldBlock`, no route, ...) is dropped, and the task goes
//!   on with the next one;
//! - lapped by the ring (it could not keep up), it jumps to the live edge and
//!   counts `output_skips`; when the channel's readers are told to leave (a
//!   new epoch) it keeps running from the new live edge.
//!
//! Everything is sized when the task starts; nothing is allocated after.

use core::future::Future;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use core::task::Poll;
use std::rc::Rc;

use ringcast_hal::{
    Clock, Error as _, ErrorKind, MulticastInterface, Net, Rng as _, UdpSocket as _,
};

use super::{first_of, Channel, Node};
use crate::config::OutputConfig;
use crate::limits::TS_PACKET_BYTES;
use crate::ring::{Cursor, Readable, Ring};
use crate::wire::rtp;

/// TS packets per datagram: 1316 bytes, the IPTV norm (fits a 1500-byte MTU
/// with IP, UDP and RTP headers).
pub const PACKETS_PER_DATAGRAM: usize = 7;

/// Payload bytes of a full datagram.
pub const PAYLOAD_BYTES_MAX: usize = PACKETS_PER_DATAGRAM * TS_PACKET_BYTES;

/// Bytes of the largest datagram: an RTP header and a full payload.
pub const DATAGRAM_BYTES_MAX: usize = rtp::HEADER_BYTES + PAYLOAD_BYTES_MAX;

/// Datagrams sent in a row before the task lets other tasks run.
const DATAGRAMS_PER_TURN: u32 = 64;

/// Warnings of one kind are logged at most this often.
const LOG_INTERVAL_MS: u64 = 10_000;

/// What [`take_payload`] found at a cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Take {
    /// The cursor left the ring's readable window.
    Lapped,
    /// This many bytes (whole packets, 0 when none) were copied.
    Bytes(usize),
}

/// Copies the whole packets at `cursor`, at most `out.len()` bytes, into `out`.
fn take_payload<R: ringcast_hal::Region>(ring: &Ring<R>, cursor: Cursor, out: &mut [u8]) -> Take {
    let limit = out.len() - out.len() % TS_PACKET_BYTES;
    let (first, second) = match ring.readable(cursor, limit) {
        Readable::Empty => return Take::Bytes(0),
        Readable::Lapped => return Take::Lapped,
        Readable::Data { first, second } => (first, second),
    };
    let mut length = 0;
    for span in core::iter::once(first).chain(second) {
        out[length..length + span.length].copy_from_slice(ring.bytes(span));
        length += span.length;
    }
    assert!(
        length.is_multiple_of(TS_PACKET_BYTES),
        "the ring holds whole packets only"
    );
    Take::Bytes(length)
}

/// A once-per-interval log gate that counts what it held back.
struct LogGate {
    last_ms: Option<u64>,
    held: u64,
}

impl LogGate {
    const fn new() -> Self {
        Self {
            last_ms: None,
            held: 0,
        }
    }

    /// True if a line may be logged now; else the event is counted as held.
    /// Returns the events held back since the last line.
    fn open(&mut self, now_ms: u64) -> Option<u64> {
        let due = self
            .last_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= LOG_INTERVAL_MS);
        if due {
            self.last_ms = Some(now_ms);
            Some(core::mem::take(&mut self.held))
        } else {
            self.held += 1;
            None
        }
    }
}

/// The RTP header state of one output.
struct RtpState {
    sequence: u16,
    timestamp_base: u32,
    ssrc: u32,
}

/// Sends channel `index` to its configured output, for as long as the node runs.
pub async fn output_task<N: Net + 'static, C: Clock + 'static>(node: Rc<Node<N, C>>, index: usize) {
    let channel = node.channels[index].clone();
    let Some(config) = channel.output.as_ref() else {
        return;
    };
    let Some(socket) = open_socket(&node, &channel, config) else {
        return;
    };
    let mut rtp_state = config.rtp.then(|| {
        let mut rng = node.random();
        RtpState {
            sequence: rng.next_u32() as u16,
            timestamp_base: rng.next_u32(),
            ssrc: rng.next_u32(),
        }
    });
    let header_bytes = if config.rtp { rtp::HEADER_BYTES } else { 0 };
    let mut datagram = [0u8; DATAGRAM_BYTES_MAX];
    let waiter = channel.output_waiter();
    let flush_ms = node.settings.flush_ms;
    let mut epoch = channel.epoch.get();
    let mut cursor = channel.ring.borrow().head_cursor();
    // A short datagram waiting for more packets: the head seen, and when it
    // leaves anyway if the head has not moved.
    let mut short: Option<(u64, u64)> = None;
    let mut sent_in_turn = 0u32;
    let mut lap_log = LogGate::new();
    let mut error_log = LogGate::new();
    let mut dropped = 0u64;
    loop {
        if channel.epoch.get() != epoch {
            epoch = channel.epoch.get();
            cursor = channel.ring.borrow().head_cursor();
            short = None;
        }
        let now_ms = node.clock.now_ms();
        let (head, taken) = {
            let ring = channel.ring.borrow();
            let taken = take_payload(&ring, cursor, &mut datagram[header_bytes..]);
            (ring.head(), taken)
        };
        let payload_bytes = match taken {
            Take::Lapped => {
                channel.stats.output_skips.increment();
                let ring = channel.ring.borrow();
                let behind = ring.head() - cursor.position;
                cursor = ring.head_cursor();
                short = None;
                if let Some(held) = lap_log.open(now_ms) {
                    log::warn!(
                        "channel {}: output skipped {} KiB the ring no longer holds (lapped, or \
                         the source restarted) and went on from the live edge ({held} more \
                         skips since the last warning)",
                        channel.name.borrow(),
                        behind.div_ceil(1024),
                    );
                }
                continue;
            }
            Take::Bytes(0) => {
                short = None;
                sent_in_turn = 0;
                channel.wait_for_data(waiter, cursor.position, epoch).await;
                continue;
            }
            Take::Bytes(length) if length < PAYLOAD_BYTES_MAX => {
                let deadline_ms = match short {
                    Some((seen, deadline_ms)) if seen == head => deadline_ms,
                    _ => {
                        let deadline_ms = now_ms + flush_ms;
                        short = Some((head, deadline_ms));
                        deadline_ms
                    }
                };
                if now_ms < deadline_ms {
                    sent_in_turn = 0;
                    let more = channel.wait_for_data(waiter, head, epoch);
                    let _ = first_of(more, node.clock.sleep_until(deadline_ms)).await;
                    continue;
                }
                length
            }
            Take::Bytes(length) => length,
        };
        short = None;
        cursor.position += payload_bytes as u64;
        if let Some(state) = rtp_state.as_mut() {
            let timestamp = rtp::mp2t_timestamp(now_ms, state.timestamp_base);
            let written = rtp::write_header(&mut datagram, state.sequence, timestamp, state.ssrc);
            assert_eq!(written, Some(header_bytes), "datagram sized for the header");
            // Sequence numbers count datagrams sent or dropped alike, so a
            // receiver sees a drop as the loss it is.
            state.sequence = state.sequence.wrapping_add(1);
        }
        let length = header_bytes + payload_bytes;
        match socket.send_to(&datagram[..length], config.address) {
            Ok(_) => {
                channel.stats.output_datagrams.increment();
                channel.stats.output_bytes.add(payload_bytes as u64);
            }
            Err(error) => {
                dropped += 1;
                channel.stats.output_drops.increment();
                if let Some(held) = error_log.open(now_ms) {
                    log::warn!(
                        "channel {}: output to {} dropped a datagram: {} ({dropped} dropped \
                         so far, {held} since the last warning)",
                        channel.name.borrow(),
                        config.address,
                        send_failure(error.kind()),
                    );
                }
            }
        }
        sent_in_turn += 1;
        if sent_in_turn >= DATAGRAMS_PER_TURN {
            sent_in_turn = 0;
            yield_now().await;
        }
    }
}

/// Why a send failed, for the log. The OS's own message is not used: turning
/// an errno into text allocates, and this may be logged for as long as the
/// fault lasts.
fn send_failure(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::WouldBlock | ErrorKind::Interrupted => "the socket's send buffer is full",
        ErrorKind::AddrNotAvailable => "no route to it (network or host unreachable)",
        ErrorKind::PermissionDenied => "not permitted (a firewall rule?)",
        ErrorKind::OutOfMemory => "the kernel has no buffer space",
        ErrorKind::ConnectionRefused => "refused (ICMP port unreachable)",
        ErrorKind::InvalidInput => "the kernel rejects the address",
        _ => "a send error",
    }
}

/// Binds the sending socket and sets TTL and interface; logs what it sends.
fn open_socket<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    channel: &Channel<N::Region>,
    config: &OutputConfig,
) -> Option<N::Udp> {
    let name = channel.name.borrow();
    let bind = match config.address {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = match node.net.udp_bind(bind) {
        Ok(socket) => socket,
        Err(error) => {
            log::error!(
                "channel {name}: no output to {}: cannot open a UDP socket: {error}",
                config.address
            );
            return None;
        }
    };
    if let Err(error) = socket.set_multicast_ttl(u32::from(config.ttl)) {
        log::warn!(
            "channel {name}: output: cannot set the multicast TTL to {}: {error}",
            config.ttl
        );
    }
    let mut interface_shown = "default";
    if let Some(interface) = config.interface.as_deref() {
        let chosen = node
            .net
            .interface_index(interface)
            .and_then(|index| socket.set_multicast_interface(MulticastInterface::Index(index)));
        match chosen {
            Ok(()) => interface_shown = interface,
            Err(error) => log::warn!(
                "channel {name}: output: cannot send on interface {interface} ({error}); \
                 letting the routing table choose"
            ),
        }
    }
    log::info!(
        "channel {name}: sending {}://{} (ttl {}, iface {interface_shown})",
        if config.rtp { "rtp" } else { "udp" },
        config.address,
        config.ttl,
    );
    Some(socket)
}

/// Lets every other ready task run once before this one goes on.
fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    core::future::poll_fn(move |context| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            context.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::CHUNK_BYTES;
    use crate::ring::test_support::{numbered_packets as packets, vec_ring as ring};

    #[test]
    fn takes_at_most_a_datagram_of_whole_packets() {
        let mut ring = ring(4);
        let cursor = ring.head_cursor();
        let mut out = [0u8; DATAGRAM_BYTES_MAX];
        let payload = &mut out[rtp::HEADER_BYTES..];
        assert_eq!(take_payload(&ring, cursor, payload), Take::Bytes(0));
        ring.append(&packets(3, 0));
        assert_eq!(take_payload(&ring, cursor, payload), Take::Bytes(3 * 188));
        assert_eq!(&payload[..3 * 188], &packets(3, 0)[..]);
        ring.append(&packets(10, 3));
        assert_eq!(take_payload(&ring, cursor, payload), Take::Bytes(1316));
        assert_eq!(payload, &packets(7, 0)[..]);
        // A buffer that is not a whole number of packets takes whole ones.
        let mut odd = [0u8; 2 * 188 + 100];
        assert_eq!(take_payload(&ring, cursor, &mut odd), Take::Bytes(2 * 188));
    }

    #[test]
    fn a_datagram_across_the_end_of_the_region_is_contiguous() {
        let mut ring = ring(4);
        let capacity_packets = ring.capacity_bytes() as usize / TS_PACKET_BYTES;
        ring.append(&packets(capacity_packets - 3, 0));
        let cursor = ring.head_cursor();
        ring.append(&packets(7, 1000));
        let mut out = [0u8; PAYLOAD_BYTES_MAX];
        assert_eq!(take_payload(&ring, cursor, &mut out), Take::Bytes(1316));
        assert_eq!(&out[..], &packets(7, 1000)[..]);
    }

    #[test]
    fn a_lapped_cursor_is_reported() {
        let mut ring = ring(4);
        let cursor = ring.head_cursor();
        ring.append(&packets(4 * CHUNK_BYTES / TS_PACKET_BYTES, 0));
        let mut out = [0u8; PAYLOAD_BYTES_MAX];
        assert_eq!(take_payload(&ring, cursor, &mut out), Take::Lapped);
        assert_eq!(
            take_payload(&ring, ring.head_cursor(), &mut out),
            Take::Bytes(0)
        );
    }

    #[test]
    fn log_gate_opens_once_per_interval_and_counts_the_rest() {
        let mut gate = LogGate::new();
        assert_eq!(gate.open(5), Some(0));
        assert_eq!(gate.open(6), None);
        assert_eq!(gate.open(LOG_INTERVAL_MS), None);
        assert_eq!(gate.open(LOG_INTERVAL_MS + 5), Some(2));
    }
}
