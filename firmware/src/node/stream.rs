//! Stream workers: each serves one reader at a time from a channel's ring.
//!
//! Slow-reader policy (documented in README):
//! - a reader is never waited for: the ingest writes on regardless;
//! - a reader that is *lapped* (its position left the ring's readable window)
//!   is skipped forward to the start of the newest chunk and counted in
//!   `skips`; it loses data but keeps playing;
//! - a reader whose socket takes no bytes for the stall timeout is
//!   disconnected and counted in `drops`;
//! - when the source has sent nothing for the gap timeout, every reader of the
//!   channel is disconnected so players can retry.

use std::rc::Rc;

use ringcast_hal::{Clock, Error as _, Net, TcpStream as _};

use super::http::{write_all, write_all_until};
use super::{first_of, Channel, Either, Node, StreamJob, ZeroCopy};
use core::net::{IpAddr, SocketAddr};

use crate::lan::StartAt;
use crate::limits::{CHUNK_BYTES, TS_PACKET_BYTES};
use crate::ring::{Cursor, Readable, Ring, PSI_BYTES_MAX};
use crate::wire::http;
use crate::wire::SliceWriter;

/// Bytes sent per call at most: keeps one reader from holding the loop.
const SEND_BYTES_MAX: usize = 1024 * 1024;

/// Serves readers handed over by control workers, one at a time.
pub async fn stream_worker<N: Net + 'static, C: Clock + 'static>(
    node: Rc<Node<N, C>>,
    worker: usize,
) {
    let mut head = [0u8; 512];
    let mut preamble = [0u8; PSI_BYTES_MAX];
    loop {
        let StreamJob {
            mut stream,
            channel,
            start,
            agent,
        } = node.streams.take(worker).await;
        let channel_ref = node.channels[channel].clone();
        if let Some(slot) = channel_ref.on_demand.as_ref() {
            slot.pending.set(slot.pending.get().saturating_sub(1));
        }
        channel_ref.stats.readers.increment();
        node.totals.readers.increment();
        let peer = stream.peer_addr().ok();
        let started_ms = node.clock.now_ms();
        let mut sent = 0;
        log::info!(
            "channel {}: reader {} started ({agent})",
            channel_ref.name.borrow(),
            Peer(peer)
        );
        let cursor = start_cursor(&node, &channel_ref, start);
        let preamble_length = match start {
            StartAt::Position(_) => 0,
            _ => build_preamble(&channel_ref.ring.borrow(), cursor.position, &mut preamble),
        };
        let mut w = SliceWriter::new(&mut head);
        let position = Some((cursor.position, preamble_length));
        let _ = http::emit_stream_head(&mut w, "video/mp2t", position);
        let length = w.len();
        let _ = stream.set_send_buffer_bytes(node.settings.reader_send_buffer_bytes);
        stream.set_zero_copy(zero_copy_for(&node, &channel_ref, &stream));
        if write_all(&node, &mut stream, &head[..length]).await
            && write_all(&node, &mut stream, &preamble[..preamble_length]).await
        {
            channel_ref.stats.bytes_out.add(preamble_length as u64);
            sent = preamble_length as u64;
            sent += relay(
                &node,
                &channel_ref,
                &mut stream,
                worker,
                cursor,
                &mut preamble,
            )
            .await;
        }
        channel_ref.stats.readers.decrement();
        node.totals.readers.decrement();
        log::info!(
            "channel {}: reader {} left after {} s ({} bytes)",
            channel_ref.name.borrow(),
            Peer(peer),
            (node.clock.now_ms() - started_ms) / 1000,
            sent
        );
        if let Some(slot) = channel_ref.on_demand.as_ref() {
            slot.last_reader_left_ms.set(node.clock.now_ms());
        }
    }
}

/// A reader's address in the log (`-` when the socket no longer knows it).
struct Peer(Option<SocketAddr>);

impl core::fmt::Display for Peer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(address) => write!(f, "{address}"),
            None => f.write_str("-"),
        }
    }
}

/// Where a new reader starts in the ring. A position that left the ring since
/// the request was checked falls back to the live start (the reader then sees
/// a jump, as a lapped reader does).
fn start_cursor<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    channel: &Channel<N::Region>,
    start: StartAt,
) -> Cursor {
    let ring = channel.ring.borrow();
    let live = || {
        if node.settings.instant_start {
            ring.live_start()
        } else {
            ring.head_cursor()
        }
    };
    match start {
        StartAt::Live => live(),
        StartAt::Position(position) if ring.holds(position) => Cursor { position },
        StartAt::Position(_) => live(),
        StartAt::Offset { back_ms } => {
            let time_ms = node.clock.now_ms().saturating_sub(back_ms);
            match ring.keyframe_at_or_before(time_ms) {
                Some(chunk) => Cursor {
                    position: chunk.start,
                },
                None => live(),
            }
        }
    }
}

/// How far past a reader's start the next packet of a PSI PID is looked for.
const PREAMBLE_SCAN_BYTES: u64 = 512 * 1024;

/// Fills `out` with the PAT and PMT a reader starting at `start` is sent
/// first, and returns their length: nothing when the ring has a PAT right
/// there. Each packet's continuity_counter is set one before the next packet
/// of its PID in the ring, so the stream after it is continuous.
fn build_preamble<R: ringcast_hal::Region>(
    ring: &Ring<R>,
    start: u64,
    out: &mut [u8; PSI_BYTES_MAX],
) -> usize {
    let psi = ring.psi();
    let starts_with_pat = ring
        .packet_at(start)
        .is_some_and(|packet| packet[1] & 0x1F == 0 && packet[2] == 0);
    if psi.is_empty() || starts_with_pat {
        return 0;
    }
    out[..psi.len()].copy_from_slice(psi);
    let mut following: heapless::Vec<(u16, u8), { PSI_BYTES_MAX / TS_PACKET_BYTES }> =
        heapless::Vec::new();
    for packet in out[..psi.len()].chunks_exact_mut(TS_PACKET_BYTES).rev() {
        let pid = u16::from_be_bytes([packet[1], packet[2]]) & 0x1FFF;
        let next = match following.iter().position(|&(p, _)| p == pid) {
            Some(index) => Some(following[index].1),
            None => ring.next_counter(start, pid, PREAMBLE_SCAN_BYTES),
        };
        let Some(next) = next else {
            continue;
        };
        let counter = next.wrapping_sub(1) & 0x0F;
        packet[3] = (packet[3] & 0xF0) | counter;
        following.retain(|&(p, _)| p != pid);
        // Room for every packet of the preamble, so this always fits.
        let _ = following.push((pid, counter));
    }
    psi.len()
}

/// Whether this player may be sent ring pages without a copy.
fn zero_copy_for<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    channel: &Channel<N::Region>,
    stream: &N::Stream,
) -> bool {
    match node.settings.zero_copy {
        ZeroCopy::Never => false,
        ZeroCopy::Always => true,
        ZeroCopy::Remote => {
            // The kernel doubles the requested send buffer; a chunk more for
            // the send in progress.
            let in_flight_max = 2 * node.settings.reader_send_buffer_bytes + CHUNK_BYTES;
            let guarded = channel.ring.borrow().guard_bytes() >= in_flight_max as u64;
            guarded && is_remote(stream.local_addr().ok(), stream.peer_addr().ok())
        }
    }
}

/// True if the peer is another host: not loopback, not one of our addresses.
fn is_remote(local: Option<SocketAddr>, peer: Option<SocketAddr>) -> bool {
    let (Some(local), Some(peer)) = (local, peer) else {
        return false;
    };
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let (local, peer) = (canonical(local.ip()), canonical(peer.ip()));
    !peer.is_loopback() && peer != local
}

/// How one send attempt went.
enum Sent {
    Bytes(usize),
    Lapped,
    Nothing,
    Blocked,
    Gone,
}

fn send_some<S: ringcast_hal::TcpStream<Region = R>, R: ringcast_hal::Region>(
    channel: &Channel<R>,
    stream: &mut S,
    cursor: Cursor,
) -> Sent {
    let ring = channel.ring.borrow();
    let (first, second) = match ring.readable(cursor, SEND_BYTES_MAX) {
        Readable::Empty => return Sent::Nothing,
        Readable::Lapped => return Sent::Lapped,
        Readable::Data { first, second } => (first, second),
    };
    let mut sent = 0;
    for span in core::iter::once(first).chain(second) {
        match stream.send_region(ring.region(), span.offset, span.length) {
            Ok(count) => {
                sent += count;
                if count < span.length {
                    break;
                }
            }
            Err(error) if error.is_would_block() => break,
            Err(_) if sent > 0 => break,
            Err(_) => return Sent::Gone,
        }
    }
    if sent == 0 {
        Sent::Blocked
    } else {
        Sent::Bytes(sent)
    }
}

/// The rest of a packet the socket took only part of, kept so that a reader
/// who is lapped mid-packet can still be given a whole packet before it is
/// moved forward: players must only ever see whole, aligned packets.
struct PacketTail {
    bytes: [u8; TS_PACKET_BYTES],
    length: usize,
}

impl PacketTail {
    /// Copies the rest of the packet at `cursor` out of the ring (called right
    /// after a send, while those bytes are certainly still there).
    fn capture<R: ringcast_hal::Region>(&mut self, channel: &Channel<R>, cursor: Cursor) {
        let missing = (TS_PACKET_BYTES - (cursor.position % TS_PACKET_BYTES as u64) as usize)
            % TS_PACKET_BYTES;
        self.length = 0;
        if missing == 0 {
            return;
        }
        let ring = channel.ring.borrow();
        if let Readable::Data { first, second } = ring.readable(cursor, missing) {
            for span in core::iter::once(first).chain(second) {
                let bytes = ring.bytes(span);
                self.bytes[self.length..self.length + bytes.len()].copy_from_slice(bytes);
                self.length += bytes.len();
            }
        }
        assert_eq!(self.length, missing, "the ring holds whole packets only");
    }
}

async fn relay<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    channel: &Channel<N::Region>,
    stream: &mut N::Stream,
    worker: usize,
    mut cursor: Cursor,
    preamble: &mut [u8; PSI_BYTES_MAX],
) -> u64 {
    let mut sent = 0u64;
    let epoch = channel.epoch.get();
    let mut psi_generation = channel.ring.borrow().psi_generation();
    let mut progress_ms = node.clock.now_ms();
    let mut tail = PacketTail {
        bytes: [0; TS_PACKET_BYTES],
        length: 0,
    };
    loop {
        if channel.epoch.get() != epoch {
            return sent;
        }
        match send_some(channel, stream, cursor) {
            Sent::Bytes(count) => {
                cursor.position += count as u64;
                channel.stats.bytes_out.add(count as u64);
                sent += count as u64;
                progress_ms = node.clock.now_ms();
                tail.capture(channel, cursor);
            }
            Sent::Lapped => {
                channel.stats.skips.increment();
                // Finish the packet in flight from the copy, then move on.
                let deadline_ms = progress_ms + node.settings.stall_timeout_ms;
                if !write_all_until(node, stream, &tail.bytes[..tail.length], deadline_ms).await {
                    channel.stats.drops.increment();
                    return sent;
                }
                channel.stats.bytes_out.add(tail.length as u64);
                sent += tail.length as u64;
                tail.length = 0;
                cursor = channel.ring.borrow().live_start();
                // The player knows the tables unless they changed meanwhile.
                let length = {
                    let ring = channel.ring.borrow();
                    if ring.psi_generation() == psi_generation {
                        0
                    } else {
                        psi_generation = ring.psi_generation();
                        build_preamble(&ring, cursor.position, preamble)
                    }
                };
                if !write_all_until(node, stream, &preamble[..length], deadline_ms).await {
                    channel.stats.drops.increment();
                    return sent;
                }
                channel.stats.bytes_out.add(length as u64);
                sent += length as u64;
            }
            Sent::Nothing => channel.wait_for_data(worker, cursor.position, epoch).await,
            Sent::Blocked => {
                let deadline_ms = progress_ms + node.settings.stall_timeout_ms;
                let ready = first_of(stream.writable(), node.clock.sleep_until(deadline_ms)).await;
                if let Either::Right(()) = ready {
                    channel.stats.drops.increment();
                    log::info!(
                        "channel {}: dropped a reader that took nothing for {} s",
                        channel.name.borrow(),
                        node.settings.stall_timeout_ms / 1000
                    );
                    return sent;
                }
            }
            Sent::Gone => return sent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_hosts_are_remote() {
        let local: SocketAddr = "192.168.1.1:8090".parse().unwrap();
        let remote = |peer: &str| is_remote(Some(local), Some(peer.parse().unwrap()));
        assert!(remote("192.168.1.20:50000"));
        assert!(!remote("192.168.1.1:50000"));
        assert!(!remote("127.0.0.1:50000"));
        assert!(!remote("[::1]:50000"));
        assert!(!remote("[::ffff:127.0.0.1]:50000"));
        assert!(!is_remote(None, Some(local)));
    }
}
