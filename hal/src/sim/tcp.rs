//! Simulated TCP: connections, listeners and the events that carry their
//! bytes, as `impl State` methods that the stream handles call.
//!
//! A connection has two pipes, one per direction. A pipe holds every byte its
//! writer has written and its reader has not yet read, whether still in
//! flight or already arrived, and never more than its capacity: so a reader
//! that stops reading makes its peer's `write` return `WouldBlock`, as a full
//! socket buffer does on Linux. Each write becomes one segment that arrives
//! after the link's latency, never before an earlier segment of its pipe.
//!
//! Set-up takes a round trip: the SYN reaches the listener after one latency
//! (the connection is then ready to accept) and the SYN-ACK reaches the client
//! one latency later (the client is then writable). Closing with unread data,
//! or data arriving at a closed side, resets the connection as Linux does; a
//! reset is reported once as `ConnectionReset`, after which writes fail with
//! `BrokenPipe` and reads see end of stream.

use core::net::SocketAddr;
use core::task::Waker;
use std::collections::VecDeque;
use std::io::IoSlice;

use super::error::{SimError, SimResult};
use super::slab::Key;
use super::world::{Event, HostId, State, WakerList};

/// The side that connected.
pub(super) const CLIENT: usize = 0;
/// The side that accepted.
pub(super) const SERVER: usize = 1;

fn peer_of(side: usize) -> usize {
    assert!(
        side == CLIENT || side == SERVER,
        "a connection has two sides"
    );
    1 - side
}

pub(super) enum TcpEvent {
    /// The client's SYN reaches the server host.
    Syn { connection: Key },
    /// The server's SYN-ACK reaches the client.
    SynAck { connection: Key },
    /// The connection attempt failed.
    Refused { connection: Key, error: SimError },
    /// Bytes of pipe `from` up to `end` have arrived (and the FIN, if `fin`).
    Data {
        connection: Key,
        from: usize,
        end: u64,
        fin: bool,
    },
    /// A reset reaches side `to`.
    Reset { connection: Key, to: usize },
}

/// One direction of a connection.
struct Pipe {
    /// Written and not yet read: arrived bytes first, then bytes in flight.
    bytes: VecDeque<u8>,
    written_total: u64,
    arrived_total: u64,
    read_total: u64,
    capacity_bytes: usize,
    last_arrival_ms: u64,
    fin_arrived: bool,
    /// The receiving side, waiting to read.
    readers: WakerList,
    /// The sending side, waiting for room.
    writers: WakerList,
}

impl Pipe {
    fn new(capacity_bytes: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            written_total: 0,
            arrived_total: 0,
            read_total: 0,
            capacity_bytes,
            last_arrival_ms: 0,
            fin_arrived: false,
            readers: WakerList::default(),
            writers: WakerList::default(),
        }
    }

    fn readable_bytes(&self) -> usize {
        (self.arrived_total - self.read_total) as usize
    }

    fn space_bytes(&self) -> usize {
        self.capacity_bytes.saturating_sub(self.bytes.len())
    }

    /// Drops the arrived bytes nobody will read.
    fn discard_arrived(&mut self) {
        let count = self.readable_bytes();
        self.bytes.drain(..count);
        self.read_total = self.arrived_total;
    }

    fn copy_out(&mut self, buffer: &mut [u8]) -> usize {
        let count = self.readable_bytes().min(buffer.len());
        let (front, back) = self.bytes.as_slices();
        let from_front = count.min(front.len());
        buffer[..from_front].copy_from_slice(&front[..from_front]);
        buffer[from_front..count].copy_from_slice(&back[..count - from_front]);
        self.bytes.drain(..count);
        self.read_total += count as u64;
        count
    }

    fn copy_in(&mut self, buffers: &[IoSlice<'_>]) -> usize {
        let mut room = self.space_bytes();
        let mut written = 0;
        for buffer in buffers {
            let count = buffer.len().min(room);
            self.bytes.extend(&buffer[..count]);
            room -= count;
            written += count;
        }
        self.written_total += written as u64;
        written
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Established,
    Failed(SimError),
}

pub(super) struct Connection {
    hosts: [HostId; 2],
    addresses: [SocketAddr; 2],
    /// `pipes[side]` carries the bytes `side` writes.
    pipes: [Pipe; 2],
    phase: Phase,
    /// A handle (or a listener's queue) still holds the side.
    open: [bool; 2],
    /// An error the side's next read or write reports, like `SO_ERROR`.
    error: [Option<SimError>; 2],
    /// The side has received a reset.
    reset: [bool; 2],
    reset_sent: [bool; 2],
}

impl Connection {
    fn is_established(&self, side: usize) -> bool {
        side == SERVER || self.phase == Phase::Established
    }

    /// Errors a read or write reports before touching the pipes.
    fn check_phase(&self, side: usize) -> SimResult<()> {
        match (side, self.phase) {
            (CLIENT, Phase::Connecting) => Err(SimError::WouldBlock),
            (CLIENT, Phase::Failed(_)) => Err(SimError::NotConnected),
            _ => Ok(()),
        }
    }

    fn is_readable(&self, side: usize) -> bool {
        let incoming = &self.pipes[peer_of(side)];
        self.error[side].is_some()
            || self.reset[side]
            || matches!((side, self.phase), (CLIENT, Phase::Failed(_)))
            || incoming.readable_bytes() > 0
            || incoming.fin_arrived
    }

    fn is_writable(&self, side: usize) -> bool {
        self.error[side].is_some()
            || self.reset[side]
            || matches!((side, self.phase), (CLIENT, Phase::Failed(_)))
            || (self.is_established(side) && self.pipes[side].space_bytes() > 0)
    }

    /// Moves every waiter of `side`, reading or writing, to `woken`.
    fn wake_side(&mut self, side: usize, woken: &mut Vec<Waker>) {
        self.pipes[peer_of(side)].readers.drain_into(woken);
        self.pipes[side].writers.drain_into(woken);
    }
}

pub(super) struct ListenerState {
    host: HostId,
    local: SocketAddr,
    backlog: usize,
    /// Connections whose SYN has arrived, not yet accepted.
    queue: VecDeque<Key>,
    waiters: WakerList,
}

impl State {
    fn connection(&self, key: Key) -> SimResult<&Connection> {
        self.connections.get(key).ok_or(SimError::NotConnected)
    }

    fn connection_mut(&mut self, key: Key) -> SimResult<&mut Connection> {
        self.connections.get_mut(key).ok_or(SimError::NotConnected)
    }

    fn listener_port_taken(&self, host: HostId, port: u16) -> bool {
        self.listeners
            .iter()
            .any(|(_, listener)| listener.host == host && listener.local.port() == port)
    }

    pub(super) fn tcp_listen(
        &mut self,
        host: HostId,
        address: SocketAddr,
        backlog: u32,
    ) -> SimResult<Key> {
        let ip = self.local_ip(host, address.ip(), false)?;
        let port = match address.port() {
            0 => self
                .ephemeral_port(host, |state, port| state.listener_port_taken(host, port))
                .ok_or(SimError::AddrInUse)?,
            port if self.listener_port_taken(host, port) => return Err(SimError::AddrInUse),
            port => port,
        };
        Ok(self.listeners.insert(ListenerState {
            host,
            local: SocketAddr::new(ip, port),
            backlog: backlog.max(1) as usize,
            queue: VecDeque::new(),
            waiters: WakerList::default(),
        }))
    }

    pub(super) fn tcp_connect(&mut self, host: HostId, address: SocketAddr) -> SimResult<Key> {
        let local_ip = self.hosts[host].ip;
        let target_ip = address.ip();
        if local_ip.is_ipv4() != target_ip.is_ipv4() || target_ip.is_multicast() {
            return Err(SimError::AddrNotAvailable);
        }
        let port = self
            .ephemeral_port(host, |_, _| false)
            .ok_or(SimError::AddrInUse)?;
        let target = self.host_id(target_ip);
        let capacity_bytes = self.config.tcp_buffer_bytes;
        let key = self.connections.insert(Connection {
            hosts: [host, target.unwrap_or(host)],
            addresses: [SocketAddr::new(local_ip, port), address],
            pipes: [Pipe::new(capacity_bytes), Pipe::new(capacity_bytes)],
            phase: Phase::Connecting,
            open: [true, false],
            error: [None, None],
            reset: [false, false],
            reset_sent: [false, false],
        });
        self.stats.tcp_connections += 1;
        let event = match target {
            Some(target) => {
                let at_ms = self.arrival_ms(host, target, 0);
                (at_ms, TcpEvent::Syn { connection: key })
            }
            None => {
                let at_ms = self.now_ms.saturating_add(self.config.link.latency_ms);
                let error = SimError::HostUnreachable;
                (
                    at_ms,
                    TcpEvent::Refused {
                        connection: key,
                        error,
                    },
                )
            }
        };
        self.schedule(event.0, Event::Tcp(event.1));
        Ok(key)
    }

    pub(super) fn tcp_connect_result(&self, key: Key) -> SimResult<()> {
        match self.connection(key)?.phase {
            Phase::Connecting => Err(SimError::WouldBlock),
            Phase::Established => Ok(()),
            Phase::Failed(error) => Err(error),
        }
    }

    pub(super) fn tcp_accept(&mut self, listener: Key) -> SimResult<(Key, SocketAddr)> {
        let listener = self
            .listeners
            .get_mut(listener)
            .ok_or(SimError::NotConnected)?;
        let key = listener.queue.pop_front().ok_or(SimError::WouldBlock)?;
        let connection = self.connections.get(key);
        let connection = connection.expect("a queued connection stays until accepted");
        Ok((key, connection.addresses[CLIENT]))
    }

    pub(super) fn tcp_listener_address(&self, listener: Key) -> SimResult<SocketAddr> {
        let listener = self.listeners.get(listener).ok_or(SimError::NotConnected)?;
        Ok(listener.local)
    }

    pub(super) fn tcp_local_address(&self, key: Key, side: usize) -> SimResult<SocketAddr> {
        Ok(self.connection(key)?.addresses[side])
    }

    pub(super) fn tcp_peer_address(&self, key: Key, side: usize) -> SimResult<SocketAddr> {
        let connection = self.connection(key)?;
        if !connection.is_established(side) {
            return Err(SimError::NotConnected);
        }
        Ok(connection.addresses[peer_of(side)])
    }

    pub(super) fn tcp_read(
        &mut self,
        key: Key,
        side: usize,
        buffer: &mut [u8],
    ) -> SimResult<usize> {
        let connection = self
            .connections
            .get_mut(key)
            .ok_or(SimError::NotConnected)?;
        if let Some(error) = connection.error[side].take() {
            return Err(error);
        }
        if connection.reset[side] {
            return Ok(0);
        }
        connection.check_phase(side)?;
        let incoming = &mut connection.pipes[peer_of(side)];
        if incoming.readable_bytes() == 0 {
            return if incoming.fin_arrived {
                Ok(0)
            } else {
                Err(SimError::WouldBlock)
            };
        }
        let count = incoming.copy_out(buffer);
        incoming.writers.drain_into(&mut self.woken);
        Ok(count)
    }

    pub(super) fn tcp_write(
        &mut self,
        key: Key,
        side: usize,
        buffers: &[IoSlice<'_>],
    ) -> SimResult<usize> {
        let connection = self.connection_mut(key)?;
        if let Some(error) = connection.error[side].take() {
            return Err(error);
        }
        if connection.reset[side] {
            return Err(SimError::BrokenPipe);
        }
        connection.check_phase(side)?;
        let requested: usize = buffers.iter().map(|buffer| buffer.len()).sum();
        if requested == 0 {
            return Ok(0);
        }
        let outgoing = &mut connection.pipes[side];
        if outgoing.space_bytes() == 0 {
            return Err(SimError::WouldBlock);
        }
        let written = outgoing.copy_in(buffers);
        let end = outgoing.written_total;
        self.send_segment(key, side, end, false, written);
        Ok(written)
    }

    pub(super) fn tcp_set_buffer_bytes(
        &mut self,
        key: Key,
        side: usize,
        bytes: usize,
    ) -> SimResult<()> {
        let connection = self
            .connections
            .get_mut(key)
            .ok_or(SimError::NotConnected)?;
        connection.pipes[side].capacity_bytes = bytes.max(1);
        connection.pipes[side].writers.drain_into(&mut self.woken);
        Ok(())
    }

    /// Schedules the arrival of pipe `from` up to `end`, after its earlier segments.
    fn send_segment(&mut self, key: Key, from: usize, end: u64, fin: bool, bytes: usize) {
        let Some(connection) = self.connections.get(key) else {
            return;
        };
        let hosts = connection.hosts;
        let at_ms = self.arrival_ms(hosts[from], hosts[peer_of(from)], bytes);
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        let pipe = &mut connection.pipes[from];
        let at_ms = at_ms.max(pipe.last_arrival_ms);
        pipe.last_arrival_ms = at_ms;
        let event = TcpEvent::Data {
            connection: key,
            from,
            end,
            fin,
        };
        self.schedule(at_ms, Event::Tcp(event));
    }

    /// Sends one reset from side `from` to its peer, behind its data.
    fn send_reset(&mut self, key: Key, from: usize) {
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        if connection.reset_sent[from] {
            return;
        }
        connection.reset_sent[from] = true;
        let hosts = connection.hosts;
        let at_ms = self.arrival_ms(hosts[from], hosts[peer_of(from)], 0);
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        let pipe = &mut connection.pipes[from];
        let at_ms = at_ms.max(pipe.last_arrival_ms);
        pipe.last_arrival_ms = at_ms;
        let to = peer_of(from);
        self.schedule(
            at_ms,
            Event::Tcp(TcpEvent::Reset {
                connection: key,
                to,
            }),
        );
    }

    /// Releases `side`: a FIN after its data, or a reset when it leaves data
    /// unread or `abort` asks for one (`SO_LINGER` 0).
    pub(super) fn tcp_close(&mut self, key: Key, side: usize, abort: bool) {
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        assert!(connection.open[side], "a side is closed once");
        connection.open[side] = false;
        let incoming = &mut connection.pipes[peer_of(side)];
        let unread = incoming.readable_bytes() > 0;
        incoming.discard_arrived();
        let speaks = connection.is_established(side) && !connection.reset[side];
        let end = connection.pipes[side].written_total;
        if speaks && (abort || unread) {
            self.send_reset(key, side);
        } else if speaks {
            self.send_segment(key, side, end, true, 0);
        }
        self.release_if_closed(key);
    }

    fn release_if_closed(&mut self, key: Key) {
        if self
            .connections
            .get(key)
            .is_some_and(|c| !c.open[CLIENT] && !c.open[SERVER])
        {
            self.connections.remove(key);
        }
    }

    /// Resets the connections no one accepted, then forgets the listener.
    pub(super) fn tcp_close_listener(&mut self, listener: Key) {
        let Some(mut state) = self.listeners.remove(listener) else {
            return;
        };
        while let Some(key) = state.queue.pop_front() {
            self.tcp_close(key, SERVER, true);
        }
    }

    pub(super) fn tcp_poll_readable(&mut self, key: Key, side: usize, waker: &Waker) -> bool {
        let Some(connection) = self.connections.get_mut(key) else {
            return true;
        };
        let ready = connection.is_readable(side);
        if !ready {
            connection.pipes[peer_of(side)].readers.register(waker);
        }
        ready
    }

    pub(super) fn tcp_poll_writable(&mut self, key: Key, side: usize, waker: &Waker) -> bool {
        let Some(connection) = self.connections.get_mut(key) else {
            return true;
        };
        let ready = connection.is_writable(side);
        if !ready {
            connection.pipes[side].writers.register(waker);
        }
        ready
    }

    pub(super) fn tcp_poll_accept(&mut self, listener: Key, waker: &Waker) -> bool {
        let Some(listener) = self.listeners.get_mut(listener) else {
            return true;
        };
        let ready = !listener.queue.is_empty();
        if !ready {
            listener.waiters.register(waker);
        }
        ready
    }

    pub(super) fn handle_tcp_event(&mut self, event: TcpEvent) {
        match event {
            TcpEvent::Syn { connection } => self.on_syn(connection),
            TcpEvent::SynAck { connection } => self.on_syn_ack(connection),
            TcpEvent::Refused { connection, error } => self.on_refused(connection, error),
            TcpEvent::Data {
                connection,
                from,
                end,
                fin,
            } => self.on_data(connection, from, end, fin),
            TcpEvent::Reset { connection, to } => self.on_reset(connection, to),
        }
    }

    /// Queues the connection at the listener, or refuses it.
    fn try_enqueue(&mut self, key: Key, host: HostId, address: SocketAddr) -> bool {
        let found = self
            .listeners
            .iter()
            .find(|(_, listener)| listener.host == host && listener.local.port() == address.port());
        let Some((listener, _)) = found else {
            return false;
        };
        let Some(listener) = self.listeners.get_mut(listener) else {
            return false;
        };
        if listener.queue.len() >= listener.backlog {
            return false;
        }
        listener.queue.push_back(key);
        listener.waiters.drain_into(&mut self.woken);
        true
    }

    fn on_syn(&mut self, key: Key) {
        let Some(connection) = self.connections.get(key) else {
            return;
        };
        let (hosts, server) = (connection.hosts, connection.addresses[SERVER]);
        let queued = self.try_enqueue(key, hosts[SERVER], server);
        let at_ms = self.arrival_ms(hosts[SERVER], hosts[CLIENT], 0);
        let event = if queued {
            let Ok(connection) = self.connection_mut(key) else {
                return;
            };
            connection.open[SERVER] = true;
            connection.pipes[SERVER].last_arrival_ms = at_ms;
            TcpEvent::SynAck { connection: key }
        } else {
            let error = SimError::ConnectionRefused;
            TcpEvent::Refused {
                connection: key,
                error,
            }
        };
        self.schedule(at_ms, Event::Tcp(event));
    }

    fn on_syn_ack(&mut self, key: Key) {
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        if !connection.open[CLIENT] {
            // The client gave up while its SYN was in flight.
            self.send_reset(key, CLIENT);
            return;
        }
        connection.phase = Phase::Established;
        connection.wake_side(CLIENT, &mut self.woken);
    }

    fn on_refused(&mut self, key: Key, error: SimError) {
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        if connection.phase != Phase::Connecting {
            return;
        }
        connection.phase = Phase::Failed(error);
        connection.error[CLIENT] = Some(error);
        connection.wake_side(CLIENT, &mut self.woken);
    }

    fn on_data(&mut self, key: Key, from: usize, end: u64, fin: bool) {
        let to = peer_of(from);
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        let receiver = connection.hosts[to];
        let pipe = &mut connection.pipes[from];
        let delivered = end.saturating_sub(pipe.arrived_total);
        pipe.arrived_total = pipe.arrived_total.max(end);
        pipe.fin_arrived |= fin;
        self.stats.tcp_bytes_delivered += delivered;
        self.hosts[receiver].stats.bytes_received += delivered;
        if connection.open[to] && !connection.reset[to] {
            pipe.readers.drain_into(&mut self.woken);
            return;
        }
        // Nobody will read these bytes: free the room, answer with a reset.
        pipe.discard_arrived();
        pipe.writers.drain_into(&mut self.woken);
        if delivered > 0 {
            self.send_reset(key, to);
        }
    }

    fn on_reset(&mut self, key: Key, to: usize) {
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        if !connection.open[to] || connection.reset[to] {
            return;
        }
        if to == CLIENT && connection.phase == Phase::Connecting {
            connection.phase = Phase::Failed(SimError::ConnectionRefused);
        }
        connection.reset[to] = true;
        connection.error[to] = Some(SimError::ConnectionReset);
        connection.pipes[peer_of(to)].discard_arrived();
        connection.wake_side(to, &mut self.woken);
    }
}
