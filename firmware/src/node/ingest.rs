//! Ingest tasks: one per channel. Each runs the I/O of its source kind (HTTP
//! pull, UDP/RTP, TCP push, stdin, a looped file, or an on-demand multicast
//! slot), feeds the bytes to `ingest::Intake`, and on a regular tick flushes
//! readers and enforces the source-gap policy. Lost upstreams are retried
//! after `ingest::Backoff` delays.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::io::{Read as _, Seek as _};
use std::path::Path;
use std::rc::Rc;

use ringcast_hal::{
    Clock, Error as _, Membership, MulticastInterface, Net, TcpListener as _, TcpStream as _,
    UdpSocket as _,
};

use super::{first_of, Channel, Either, Node};
use crate::config::Source;
use crate::ingest::{byte_rate_deadline_ms, Backoff, Intake, Pacer};
use crate::lan::ChannelState;
use crate::limits::{
    DATAGRAM_BYTES_MAX, HTTP_HEADERS_MAX, HTTP_HEADER_BYTES_MAX, INGEST_READ_BYTES, TS_PACKET_BYTES,
};
use crate::wire::http::{self, ChunkedDecoder};
use crate::wire::udpxy::OnDemand;
use crate::wire::{rtp, ts, SliceWriter};

/// Idle tick: how often the gap policy is checked when nothing arrives.
const TICK_MS: u64 = 1000;
/// Time allowed to connect to an HTTP source and receive its response head.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Bitrate assumed for a file with no PCR and no configured bitrate.
const FILE_BITRATE_DEFAULT_BPS: u64 = 4_000_000;
/// Garbage is logged at most this often per channel.
const GARBAGE_LOG_INTERVAL_MS: u64 = 10_000;

/// The state one ingest task keeps besides the channel itself.
struct Feed<'a, N: Net + 'static, C: Clock + 'static> {
    node: &'a Node<N, C>,
    channel: &'a Channel<N::Region>,
    intake: Intake,
    gap_reported: bool,
    garbage_logged_ms: Option<u64>,
    /// The packet size last reported in the log.
    stride_logged: Option<usize>,
}

impl<'a, N: Net + 'static, C: Clock + 'static> Feed<'a, N, C> {
    fn new(node: &'a Node<N, C>, channel: &'a Channel<N::Region>) -> Self {
        Self {
            node,
            channel,
            intake: Intake::new(channel.program.clone()),
            gap_reported: false,
            garbage_logged_ms: None,
            stride_logged: None,
        }
    }

    /// Feeds source bytes to the ring.
    fn deliver(&mut self, bytes: &[u8]) {
        let now_ms = self.node.clock.now_ms();
        let flush_ms = self.node.settings.flush_ms;
        let result = {
            let mut ring = self.channel.ring.borrow_mut();
            self.intake
                .handle_bytes(now_ms, flush_ms, bytes, &mut ring, &self.channel.stats)
        };
        if result.packet_bytes > 0 {
            self.channel.last_data_ms.set(now_ms);
            self.channel.state.set(ChannelState::Live);
            self.gap_reported = false;
        }
        if result.garbage_bytes > 0 {
            self.log_garbage(now_ms);
        }
        if result.tables_changed {
            self.log_program();
        }
        if let Some(switch) = result.switched {
            let name = self.channel.name.borrow();
            if switch.on_keyframe {
                log::info!(
                    "channel {name}: new source on air at its first keyframe, after {} ms \
                     (PAT and PMT sent again, discontinuity marked)",
                    switch.waited_ms
                );
            } else {
                log::warn!(
                    "channel {name}: new source on air after {} ms without a keyframe \
                     (none found, or it has no video)",
                    switch.waited_ms
                );
            }
        }
        let stride = self.intake.source_stride();
        if stride.is_some() && stride != self.stride_logged {
            self.stride_logged = stride;
            if let Some(bytes @ (192 | 204)) = stride {
                log::info!(
                    "channel {}: source sends {bytes}-byte packets ({}); relaying them as 188",
                    self.channel.name.borrow(),
                    if bytes == 192 {
                        "M2TS"
                    } else {
                        "with Reed-Solomon parity"
                    }
                );
            }
        }
        if result.wake_readers {
            self.channel.wake_readers();
        }
    }

    fn log_program(&self) {
        let Some(program) = self.intake.program() else {
            return;
        };
        let (number, pmt_pid, video) = (program.number, program.pmt_pid, program.video);
        let name = self.channel.name.borrow();
        match video {
            Some((pid, Some(codec))) => log::info!(
                "channel {name}: program {number} (PMT PID {pmt_pid}), {codec:?} video on PID \
                 {pid}; new viewers start at its keyframes"
            ),
            Some((pid, None)) => log::info!(
                "channel {name}: program {number} (PMT PID {pmt_pid}), video on PID {pid} in a \
                 codec ringcast does not scan; keyframes are taken from the random-access flag"
            ),
            None => log::info!(
                "channel {name}: program {number} (PMT PID {pmt_pid}) has no video stream"
            ),
        }
    }

    fn log_garbage(&mut self, now_ms: u64) {
        let due = self
            .garbage_logged_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= GARBAGE_LOG_INTERVAL_MS);
        if due {
            self.garbage_logged_ms = Some(now_ms);
            log::warn!(
                "channel {}: source sends bytes that are not MPEG-TS ({} discarded so far, {} sync losses)",
                self.channel.name.borrow(),
                self.channel.stats.garbage_bytes.get(),
                self.channel.stats.sync_losses.get()
            );
        }
    }

    /// Flushes readers and applies the gap policy. Call on every wake-up.
    fn tick(&mut self) {
        let now_ms = self.node.clock.now_ms();
        if self.intake.poll_wake(now_ms, self.node.settings.flush_ms) {
            self.channel.wake_readers();
        }
        let silent_ms = now_ms.saturating_sub(self.channel.last_data_ms.get());
        if silent_ms >= self.node.settings.gap_timeout_ms && !self.gap_reported {
            self.gap_reported = true;
            if self.channel.state.get() == ChannelState::Live {
                self.channel.state.set(ChannelState::Waiting);
            }
            if self.channel.stats.readers.get() > 0 {
                log::warn!(
                    "channel {}: no data for {} s; disconnecting its readers",
                    self.channel.name.borrow(),
                    silent_ms / 1000
                );
                self.channel.close_readers();
            }
        }
    }

    /// The next time [`Feed::tick`] must run.
    fn tick_deadline_ms(&self) -> u64 {
        let now_ms = self.node.clock.now_ms();
        if self.intake.has_unannounced() {
            now_ms + self.node.settings.flush_ms
        } else {
            now_ms + TICK_MS
        }
    }

    /// Sleeps until `deadline_ms`, ticking on the way.
    async fn sleep_until(&mut self, deadline_ms: u64) {
        loop {
            let now_ms = self.node.clock.now_ms();
            if now_ms >= deadline_ms {
                return;
            }
            let wake_ms = deadline_ms.min(self.tick_deadline_ms());
            self.node.clock.sleep_until(wake_ms).await;
            self.tick();
        }
    }

    /// Marks a new upstream session.
    fn restart(&mut self) {
        self.intake.handle_source_restart(self.node.clock.now_ms());
    }
}

/// Runs the ingest of channel `index` for the life of the process.
pub async fn ingest_task<N: Net + 'static, C: Clock + 'static>(node: Rc<Node<N, C>>, index: usize) {
    let channel = node.channels[index].clone();
    if channel.on_demand.is_some() {
        return on_demand_loop(&node, &channel).await;
    }
    let Some(source) = channel.config_source.clone() else {
        return;
    };
    let mut feed = Feed::new(&node, &channel);
    match source {
        Source::Http {
            host, port, path, ..
        } => http_pull_loop(&mut feed, &host, port, &path).await,
        // RTP headers are recognised per datagram (see `datagram_payload`),
        // so both kinds share one receive loop.
        Source::Udp {
            group,
            port,
            source,
            interface,
        }
        | Source::Rtp {
            group,
            port,
            source,
            interface,
        } => {
            let interface = resolve_interface(&node, interface.as_deref());
            let target = UdpTarget {
                group,
                port,
                source,
                interface,
                on_demand: false,
            };
            udp_loop(&mut feed, target).await;
        }
        Source::TcpListen { address } => tcp_push_loop(&mut feed, address).await,
        Source::Stdin => stdin_loop(&mut feed).await,
        Source::File { path, bitrate_bps } => file_loop(&mut feed, &path, bitrate_bps).await,
    }
}

fn resolve_interface<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    name: Option<&str>,
) -> MulticastInterface {
    let Some(name) = name else {
        return node.settings.multicast_interface;
    };
    match node.net.interface_index(name) {
        Ok(index) => MulticastInterface::Index(index),
        Err(error) => {
            log::warn!("interface {name}: {error}; letting the kernel choose");
            MulticastInterface::Any
        }
    }
}

/// Sleeps for a backoff delay after a lost session, ticking meanwhile.
async fn back_off<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    backoff: &mut Backoff,
    rng: &mut ringcast_hal::XorShift,
) {
    feed.channel.stats.reconnects.increment();
    feed.channel.state.set(ChannelState::Connecting);
    feed.restart();
    let delay_ms = backoff.next_delay_ms(rng);
    let deadline_ms = feed.node.clock.now_ms() + delay_ms;
    feed.sleep_until(deadline_ms).await;
}

async fn http_pull_loop<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    host: &str,
    port: u16,
    path: &str,
) {
    let mut buffer = vec![0u8; INGEST_READ_BYTES].into_boxed_slice();
    let mut backoff = Backoff::default();
    let mut rng = feed.node.random();
    loop {
        feed.channel.state.set(ChannelState::Connecting);
        let delivered_before = feed.channel.stats.bytes_in.get();
        if let Err(reason) = http_session(feed, host, port, path, &mut buffer).await {
            feed.channel.stats.errors.increment();
            log::warn!(
                "channel {}: http://{host}:{port}{path}: {reason}; retrying",
                feed.channel.name.borrow()
            );
        }
        if feed.channel.stats.bytes_in.get() > delivered_before {
            backoff.reset();
        }
        back_off(feed, &mut backoff, &mut rng).await;
    }
}

/// Connects to `address` and waits until the connection is up.
async fn connect<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    address: SocketAddr,
) -> Result<N::Stream, &'static str> {
    let node = feed.node;
    let stream = node
        .net
        .tcp_connect(address)
        .map_err(|_| "cannot start a connection")?;
    let deadline_ms = node.clock.now_ms() + CONNECT_TIMEOUT_MS;
    match first_of(stream.writable(), node.clock.sleep_until(deadline_ms)).await {
        Either::Left(_) => {}
        Either::Right(()) => return Err("connection timed out"),
    }
    node.net
        .connect_result(&stream)
        .map_err(|_| "connection refused")?;
    Ok(stream)
}

async fn http_session<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    host: &str,
    port: u16,
    path: &str,
    buffer: &mut [u8],
) -> Result<(), &'static str> {
    let deadline_ms = feed.node.clock.now_ms() + CONNECT_TIMEOUT_MS;
    let resolved = first_of(
        feed.node.net.resolve(host, port),
        feed.node.clock.sleep_until(deadline_ms),
    )
    .await;
    let address = match resolved {
        Either::Left(Ok(address)) => address,
        Either::Left(Err(_)) => return Err("cannot resolve the host name"),
        Either::Right(()) => return Err("name resolution timed out"),
    };
    let mut stream = connect(feed, address).await?;
    let mut w = SliceWriter::new(buffer);
    let host_header = HostHeader { host, port };
    let mut host_text = [0u8; 300];
    let host_text = format_into(&mut host_text, &host_header).ok_or("host name too long")?;
    http::emit_get_request(&mut w, host_text, path).map_err(|_| "cannot form the request")?;
    let length = w.len();
    if !super::http::write_all(feed.node, &mut stream, &buffer[..length]).await {
        return Err("cannot send the request");
    }
    let (head_length, filled, chunked) = read_response_head(feed, &mut stream, buffer).await?;
    log::info!(
        "channel {}: connected to http://{host}:{port}{path}",
        feed.channel.name.borrow()
    );
    let mut decoder = chunked.then(ChunkedDecoder::default);
    deliver_body(feed, &mut decoder, &buffer[head_length..filled])?;
    read_body(feed, &mut stream, &mut decoder, buffer).await
}

struct HostHeader<'a> {
    host: &'a str,
    port: u16,
}

impl core::fmt::Display for HostHeader<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let bracket = self.host.contains(':');
        match (bracket, self.port) {
            (false, 80) => write!(f, "{}", self.host),
            (false, port) => write!(f, "{}:{port}", self.host),
            (true, 80) => write!(f, "[{}]", self.host),
            (true, port) => write!(f, "[{}]:{port}", self.host),
        }
    }
}

fn format_into<'b>(buffer: &'b mut [u8], value: &dyn core::fmt::Display) -> Option<&'b str> {
    use core::fmt::Write as _;
    let mut w = SliceWriter::new(buffer);
    write!(w, "{value}").ok()?;
    let length = w.len();
    core::str::from_utf8(&buffer[..length]).ok()
}

/// Reads the response head; returns (head length, bytes in buffer, chunked).
async fn read_response_head<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    stream: &mut N::Stream,
    buffer: &mut [u8],
) -> Result<(usize, usize, bool), &'static str> {
    let node = feed.node;
    let deadline_ms = node.clock.now_ms() + CONNECT_TIMEOUT_MS;
    let mut filled = 0;
    loop {
        let limit = filled.min(HTTP_HEADER_BYTES_MAX);
        let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
        match http::parse_response(&buffer[..limit], &mut headers) {
            Ok(Some((head, length))) if head.code == 200 => {
                return Ok((length, filled, head.chunked))
            }
            Ok(Some((head, _))) if (300..400).contains(&head.code) => {
                return Err("redirected (redirects are not followed; use the final URL)")
            }
            Ok(Some((head, _))) if head.code == 404 => return Err("not found (404)"),
            Ok(Some(_)) => return Err("the server refused (status is not 200)"),
            Ok(None) => {}
            Err(_) => return Err("malformed HTTP response"),
        }
        match stream.read(&mut buffer[filled..]) {
            Ok(0) => return Err("connection closed before the response"),
            Ok(count) => filled += count,
            Err(error) if error.is_would_block() => {
                if let Either::Right(()) =
                    first_of(stream.readable(), node.clock.sleep_until(deadline_ms)).await
                {
                    return Err("no response in time");
                }
            }
            Err(_) => return Err("read failed"),
        }
    }
}

fn deliver_body<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    decoder: &mut Option<ChunkedDecoder>,
    bytes: &[u8],
) -> Result<(), &'static str> {
    match decoder {
        None => {
            feed.deliver(bytes);
            Ok(())
        }
        Some(decoder) => {
            let mut consumed = 0;
            while consumed < bytes.len() && !decoder.is_done() {
                let used = decoder
                    .decode(&bytes[consumed..], &mut |body: &[u8]| feed.deliver(body))
                    .map_err(|_| "malformed chunked body")?;
                if used == 0 {
                    break;
                }
                consumed += used;
            }
            Ok(())
        }
    }
}

async fn read_body<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    stream: &mut N::Stream,
    decoder: &mut Option<ChunkedDecoder>,
    buffer: &mut [u8],
) -> Result<(), &'static str> {
    loop {
        match stream.read(buffer) {
            Ok(0) => return Err("the server closed the stream"),
            Ok(count) => deliver_body(feed, decoder, &buffer[..count])?,
            Err(error) if error.is_would_block() => {
                let deadline_ms = feed.tick_deadline_ms();
                let ready =
                    first_of(stream.readable(), feed.node.clock.sleep_until(deadline_ms)).await;
                feed.tick();
                if matches!(ready, Either::Right(())) && feed.gap_reported {
                    return Err("no data for the gap timeout");
                }
            }
            Err(_) => return Err("read failed"),
        }
        if decoder.as_ref().is_some_and(ChunkedDecoder::is_done) {
            return Err("the server ended the stream");
        }
    }
}

/// The payload of a datagram: RTP is stripped when the datagram carries it
/// (udpxy does the same on its `/udp/` paths), raw TS is passed as is.
fn datagram_payload(datagram: &[u8]) -> &[u8] {
    if datagram.first() == Some(&ts::SYNC_BYTE) {
        return datagram;
    }
    match rtp::Packet::new_checked(datagram) {
        Ok(packet) => {
            let (start, end) = (packet.header_len(), datagram.len() - packet.padding_len());
            &datagram[start..end]
        }
        Err(_) => datagram,
    }
}

fn membership(
    group: IpAddr,
    source: Option<IpAddr>,
    interface: MulticastInterface,
) -> Option<Membership> {
    match (group, source) {
        (IpAddr::V4(group), source) if group.is_multicast() => Some(Membership::V4 {
            group,
            source: match source {
                Some(IpAddr::V4(source)) => Some(source),
                _ => None,
            },
            interface,
        }),
        (IpAddr::V6(group), _) if group.is_multicast() => Some(Membership::V6 { group, interface }),
        _ => None,
    }
}

/// What a UDP/RTP receive loop listens to.
#[derive(Clone, Copy, Debug)]
struct UdpTarget {
    /// A multicast group to join, or a local unicast address to bind.
    group: IpAddr,
    port: u16,
    /// The sender for source-specific multicast.
    source: Option<IpAddr>,
    interface: MulticastInterface,
    /// An on-demand slot: stop when no reader wants it any more.
    on_demand: bool,
}

/// Receives UDP or RTP until the channel is no longer wanted (on-demand) or
/// for ever (static channels). Returns only for on-demand slots.
async fn udp_loop<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    target: UdpTarget,
) {
    let UdpTarget {
        group,
        port,
        on_demand,
        ..
    } = target;
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX].into_boxed_slice();
    let mut backoff = Backoff::default();
    let mut rng = feed.node.random();
    loop {
        match udp_session(feed, target, &mut buffer).await {
            Ok(()) => return,
            Err(reason) => {
                feed.channel.stats.errors.increment();
                log::warn!(
                    "channel {}: {group} port {port}: {reason}",
                    feed.channel.name.borrow()
                );
                if on_demand {
                    feed.channel.close_readers();
                    return;
                }
            }
        }
        back_off(feed, &mut backoff, &mut rng).await;
    }
}

fn bind_address(group: IpAddr, port: u16) -> SocketAddr {
    // Binding to the group keeps other groups on the same port out.
    let address = match group {
        IpAddr::V4(address) if address.is_multicast() || !address.is_unspecified() => {
            IpAddr::V4(address)
        }
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(address) if address.is_multicast() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(address) => IpAddr::V6(address),
    };
    SocketAddr::new(address, port)
}

async fn udp_session<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    target: UdpTarget,
    buffer: &mut [u8],
) -> Result<(), &'static str> {
    let UdpTarget {
        group,
        port,
        source,
        interface,
        on_demand,
    } = target;
    let node = feed.node;
    let socket = node
        .net
        .udp_bind(bind_address(group, port))
        .map_err(|_| "cannot bind the port")?;
    let _ = socket.set_receive_buffer_bytes(4 * 1024 * 1024);
    let member = membership(group, source, interface);
    if let Some(member) = &member {
        socket
            .join(member)
            .map_err(|_| "cannot join the multicast group")?;
        log::info!(
            "channel {}: joined {group} port {port}",
            feed.channel.name.borrow()
        );
    }
    feed.channel.state.set(ChannelState::Waiting);
    feed.channel.last_data_ms.set(node.clock.now_ms());
    let mut next_rejoin_ms = rejoin_deadline(node);
    let outcome = loop {
        if on_demand && !wanted(node, feed.channel) {
            break Ok(());
        }
        match socket.recv_from(buffer) {
            Ok((count, _)) => {
                let payload = datagram_payload(&buffer[..count]);
                feed.deliver(payload);
                continue;
            }
            Err(error) if error.is_would_block() => {}
            Err(_) => break Err("receive failed"),
        }
        let deadline_ms = feed.tick_deadline_ms().min(next_rejoin_ms);
        let _ = first_of(socket.readable(), node.clock.sleep_until(deadline_ms)).await;
        feed.tick();
        if let (Some(member), true) = (&member, node.clock.now_ms() >= next_rejoin_ms) {
            let _ = socket.leave(member);
            let _ = socket.join(member);
            next_rejoin_ms = rejoin_deadline(node);
        }
    };
    if let Some(member) = &member {
        let _ = socket.leave(member);
        log::info!(
            "channel {}: left {group} port {port}",
            feed.channel.name.borrow()
        );
    }
    outcome
}

fn rejoin_deadline<N: Net + 'static, C: Clock + 'static>(node: &Node<N, C>) -> u64 {
    match node.settings.rejoin_interval_ms {
        0 => u64::MAX,
        interval_ms => node.clock.now_ms() + interval_ms,
    }
}

/// An on-demand channel is wanted while it has readers, or within the linger
/// time after the last one left.
fn wanted<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    channel: &Channel<N::Region>,
) -> bool {
    let Some(slot) = channel.on_demand.as_ref() else {
        return true;
    };
    if channel.demand() > 0 {
        return true;
    }
    node.clock
        .now_ms()
        .saturating_sub(slot.last_reader_left_ms.get())
        < node.settings.linger_ms
}

async fn on_demand_loop<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    channel: &Channel<N::Region>,
) {
    let Some(slot) = channel.on_demand.as_ref() else {
        return;
    };
    loop {
        let target: OnDemand = core::future::poll_fn(|context| match slot.key.get() {
            Some(target) => core::task::Poll::Ready(target),
            None => {
                *slot.activation.borrow_mut() = Some(context.waker().clone());
                core::task::Poll::Pending
            }
        })
        .await;
        let mut feed = Feed::new(node, channel);
        feed.restart();
        let udp = UdpTarget {
            group: target.group,
            port: target.port,
            source: target.source,
            interface: node.settings.multicast_interface,
            on_demand: true,
        };
        udp_loop(&mut feed, udp).await;
        channel.close_readers();
        channel.state.set(ChannelState::Idle);
        slot.key.set(None);
    }
}

async fn tcp_push_loop<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    address: SocketAddr,
) {
    let node = feed.node;
    let listener = match node.net.tcp_listen(address, 4) {
        Ok(listener) => listener,
        Err(error) => {
            feed.channel.stats.errors.increment();
            log::error!(
                "channel {}: cannot listen on {address}: {error}",
                feed.channel.name.borrow()
            );
            return idle_forever(feed).await;
        }
    };
    log::info!(
        "channel {}: waiting for an encoder on tcp://{address}",
        feed.channel.name.borrow()
    );
    let mut buffer = vec![0u8; INGEST_READ_BYTES].into_boxed_slice();
    loop {
        feed.channel.state.set(ChannelState::Connecting);
        let mut stream = match listener.accept() {
            Ok((stream, peer)) => {
                log::info!(
                    "channel {}: encoder connected from {peer}",
                    feed.channel.name.borrow()
                );
                stream
            }
            Err(error) if error.is_would_block() => {
                let deadline_ms = feed.tick_deadline_ms();
                let _ = first_of(listener.readable(), node.clock.sleep_until(deadline_ms)).await;
                feed.tick();
                continue;
            }
            Err(_) => {
                feed.sleep_until(node.clock.now_ms() + 100).await;
                continue;
            }
        };
        let reason = read_pushed(feed, &listener, &mut stream, &mut buffer).await;
        log::info!("channel {}: encoder {reason}", feed.channel.name.borrow());
        feed.channel.stats.reconnects.increment();
        feed.restart();
    }
}

/// Reads an encoder's push until it ends; refuses extra encoders meanwhile.
async fn read_pushed<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    listener: &N::Listener,
    stream: &mut N::Stream,
    buffer: &mut [u8],
) -> &'static str {
    let node = feed.node;
    loop {
        match stream.read(buffer) {
            Ok(0) => return "disconnected",
            Ok(count) => {
                feed.deliver(&buffer[..count]);
                continue;
            }
            Err(error) if error.is_would_block() => {}
            Err(_) => return "connection failed",
        }
        while let Ok((extra, peer)) = listener.accept() {
            log::warn!(
                "channel {}: refused a second encoder from {peer}",
                feed.channel.name.borrow()
            );
            drop(extra);
        }
        let deadline_ms = feed.tick_deadline_ms();
        let ready = first_of(
            stream.readable(),
            first_of(listener.readable(), node.clock.sleep_until(deadline_ms)),
        )
        .await;
        let _ = ready;
        feed.tick();
    }
}

async fn idle_forever<N: Net + 'static, C: Clock + 'static>(feed: &mut Feed<'_, N, C>) {
    feed.channel.state.set(ChannelState::Idle);
    loop {
        let deadline_ms = feed.node.clock.now_ms() + TICK_MS;
        feed.sleep_until(deadline_ms).await;
    }
}

async fn stdin_loop<N: Net + 'static, C: Clock + 'static>(feed: &mut Feed<'_, N, C>) {
    let Some(mut stream) = feed.node.stdin.borrow_mut().take() else {
        log::error!(
            "channel {}: standard input is not available",
            feed.channel.name.borrow()
        );
        return idle_forever(feed).await;
    };
    let mut buffer = vec![0u8; INGEST_READ_BYTES].into_boxed_slice();
    feed.channel.state.set(ChannelState::Waiting);
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => feed.deliver(&buffer[..count]),
            Err(error) if error.is_would_block() => {
                let deadline_ms = feed.tick_deadline_ms();
                let _ = first_of(stream.readable(), feed.node.clock.sleep_until(deadline_ms)).await;
                feed.tick();
            }
            Err(error) => {
                log::error!(
                    "channel {}: reading standard input: {error}",
                    feed.channel.name.borrow()
                );
                break;
            }
        }
    }
    log::info!(
        "channel {}: standard input ended",
        feed.channel.name.borrow()
    );
    idle_forever(feed).await
}

async fn file_loop<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    path: &Path,
    bitrate_bps: Option<u64>,
) {
    let mut buffer = vec![0u8; INGEST_READ_BYTES].into_boxed_slice();
    let mut backoff = Backoff::default();
    let mut rng = feed.node.random();
    loop {
        let reason = play_file(feed, path, bitrate_bps, &mut buffer).await;
        feed.channel.stats.errors.increment();
        log::warn!(
            "channel {}: {}: {reason}",
            feed.channel.name.borrow(),
            path.display()
        );
        back_off(feed, &mut backoff, &mut rng).await;
    }
}

/// Bytes of a looped file delivered between two pacing decisions: small
/// enough that bytes after the last PCR of a piece are early by only a few
/// milliseconds.
const FILE_PIECE_BYTES: usize = 16 * TS_PACKET_BYTES;

/// Plays a file in a loop, paced by the PCR the intake reads from it (so
/// 192- and 204-byte packet files are paced too), or by a byte rate when the
/// file has no PCR. Returns only on an error.
async fn play_file<N: Net + 'static, C: Clock + 'static>(
    feed: &mut Feed<'_, N, C>,
    path: &Path,
    bitrate_bps: Option<u64>,
    buffer: &mut [u8],
) -> &'static str {
    let Ok(mut file) = std::fs::File::open(path) else {
        return "cannot open the file";
    };
    let mut pacer = Pacer::default();
    let mut pass_bytes = 0u64;
    let mut pass_start_ms = feed.node.clock.now_ms();
    let mut pcr_seen = false;
    feed.channel.state.set(ChannelState::Live);
    loop {
        let count = match file.read(buffer) {
            Ok(count) => count,
            Err(_) => return "read failed",
        };
        if count == 0 {
            if pass_bytes == 0 {
                return "the file is empty";
            }
            if file.rewind().is_err() {
                return "cannot rewind";
            }
            pacer.handle_restart();
            feed.intake.mark_discontinuity(feed.node.clock.now_ms());
            (pass_bytes, pass_start_ms) = (0, feed.node.clock.now_ms());
            continue;
        }
        for piece in buffer[..count].chunks(FILE_PIECE_BYTES) {
            feed.deliver(piece);
            pass_bytes += piece.len() as u64;
            let now_ms = feed.node.clock.now_ms();
            let paced = feed
                .intake
                .take_latest_pcr()
                .and_then(|(pid, pcr)| pacer.deadline_ms(now_ms, pid, pcr));
            pcr_seen |= paced.is_some();
            let deadline_ms = match paced {
                Some(deadline_ms) => deadline_ms,
                None if pcr_seen => continue,
                None => {
                    let rate = bitrate_bps.unwrap_or(FILE_BITRATE_DEFAULT_BPS);
                    byte_rate_deadline_ms(pass_start_ms, pass_bytes, rate)
                }
            };
            feed.sleep_until(deadline_ms).await;
        }
    }
}
