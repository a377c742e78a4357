//! Simulated UDP: sockets, multicast membership, and datagrams in flight.
//!
//! A datagram to a unicast address goes to one socket bound to that host and
//! port (the first bound, as every socket here shares its port the way
//! `SO_REUSEADDR` allows). A datagram to a multicast group goes to every
//! socket, on any host including the sender's, that is bound to the port
//! (on the wildcard address or the group) and is a member of the group, with
//! a matching source for a source-specific membership. Membership is checked
//! again on arrival, so leaving stops delivery at once. Each copy is delayed
//! by its link's latency, and may be lost with the link's loss rate, drawn
//! from the world's seed; a full receive buffer drops it. Multicast TTL 0
//! keeps a datagram on its host; other TTLs are not modelled.
//!
//! Payload buffers are recycled through a pool, so a steady flow of
//! datagrams allocates nothing once the pool has grown to its working size.

use core::future::Future;
use core::net::{IpAddr, SocketAddr};
use core::task::Waker;
use std::collections::VecDeque;

use super::error::{SimError, SimResult};
use super::net::interface_exists;
use super::ready::{Condition, Readiness};
use super::slab::Key;
use super::world::{Event, HostId, SimWorld, State, WakerList};
use crate::{Membership, MulticastInterface};

/// The largest UDP payload over IPv4.
pub const UDP_PAYLOAD_BYTES_MAX: usize = 65_507;
/// The largest multicast TTL.
const MULTICAST_TTL_MAX: u32 = 255;

pub(super) enum UdpEvent {
    /// A datagram copy reaches a socket.
    Arrive { socket: Key, datagram: Key },
}

/// A datagram copy on its way to one socket.
pub(super) struct InFlight {
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

struct Datagram {
    from: SocketAddr,
    payload: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Joined {
    group: IpAddr,
    source: Option<IpAddr>,
}

pub(super) struct UdpState {
    host: HostId,
    local: SocketAddr,
    memberships: Vec<Joined>,
    queue: VecDeque<Datagram>,
    queued_bytes: usize,
    receive_buffer_bytes: usize,
    multicast_ttl: u32,
    waiters: WakerList,
}

impl UdpState {
    fn is_member(&self, group: IpAddr, source: IpAddr) -> bool {
        self.memberships.iter().any(|joined| {
            joined.group == group && joined.source.is_none_or(|wanted| wanted == source)
        })
    }

    /// Whether a datagram sent to `to` from `from` is for this socket.
    fn accepts(&self, to: SocketAddr, from: IpAddr) -> bool {
        let bound = self.local.ip();
        let address_fits = bound.is_unspecified() || bound == to.ip();
        let port_fits = self.local.port() == to.port();
        let group_fits = !to.ip().is_multicast() || self.is_member(to.ip(), from);
        address_fits && port_fits && group_fits
    }
}

fn membership_parts(membership: &Membership) -> (Joined, MulticastInterface) {
    match *membership {
        Membership::V4 {
            group,
            source,
            interface,
        } => {
            let source = source.map(IpAddr::V4);
            (
                Joined {
                    group: group.into(),
                    source,
                },
                interface,
            )
        }
        Membership::V6 { group, interface } => (
            Joined {
                group: group.into(),
                source: None,
            },
            interface,
        ),
    }
}

impl State {
    fn udp(&mut self, socket: Key) -> SimResult<&mut UdpState> {
        self.udp_sockets
            .get_mut(socket)
            .ok_or(SimError::NotConnected)
    }

    fn udp_port_taken(&self, host: HostId, port: u16) -> bool {
        self.udp_sockets
            .iter()
            .any(|(_, socket)| socket.host == host && socket.local.port() == port)
    }

    pub(super) fn udp_bind(&mut self, host: HostId, address: SocketAddr) -> SimResult<Key> {
        let ip = self.local_ip(host, address.ip(), true)?;
        let port = match address.port() {
            0 => self
                .ephemeral_port(host, |state, port| state.udp_port_taken(host, port))
                .ok_or(SimError::AddrInUse)?,
            port => port,
        };
        let receive_buffer_bytes = self.config.udp_receive_buffer_bytes;
        Ok(self.udp_sockets.insert(UdpState {
            host,
            local: SocketAddr::new(ip, port),
            memberships: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            receive_buffer_bytes,
            multicast_ttl: 1,
            waiters: WakerList::default(),
        }))
    }

    pub(super) fn udp_close(&mut self, socket: Key) {
        if let Some(mut state) = self.udp_sockets.remove(socket) {
            while let Some(datagram) = state.queue.pop_front() {
                self.recycle(datagram.payload);
            }
        }
    }

    pub(super) fn udp_local_address(&self, socket: Key) -> SimResult<SocketAddr> {
        let socket = self.udp_sockets.get(socket).ok_or(SimError::NotConnected)?;
        Ok(socket.local)
    }

    fn check_interface(&self, host: HostId, interface: MulticastInterface) -> SimResult<()> {
        match interface {
            MulticastInterface::Any => Ok(()),
            MulticastInterface::Index(index) if interface_exists(index) => Ok(()),
            MulticastInterface::Index(_) => Err(SimError::NotFound),
            MulticastInterface::Address(address) if self.hosts[host].ip == address => Ok(()),
            MulticastInterface::Address(_) => Err(SimError::AddrNotAvailable),
        }
    }

    pub(super) fn udp_join(&mut self, socket: Key, membership: &Membership) -> SimResult<()> {
        let (joined, interface) = membership_parts(membership);
        let state = self.udp_sockets.get(socket).ok_or(SimError::NotConnected)?;
        let family_fits = joined.group.is_ipv4() == state.local.is_ipv4();
        if !joined.group.is_multicast() || !family_fits {
            return Err(SimError::InvalidInput);
        }
        self.check_interface(state.host, interface)?;
        let state = self.udp(socket)?;
        if state.memberships.contains(&joined) {
            return Err(SimError::AddrInUse);
        }
        state.memberships.push(joined);
        Ok(())
    }

    pub(super) fn udp_leave(&mut self, socket: Key, membership: &Membership) -> SimResult<()> {
        let (joined, _) = membership_parts(membership);
        let state = self.udp(socket)?;
        let position = state.memberships.iter().position(|known| *known == joined);
        let position = position.ok_or(SimError::AddrNotAvailable)?;
        state.memberships.remove(position);
        Ok(())
    }

    pub(super) fn udp_set_ttl(&mut self, socket: Key, ttl: u32) -> SimResult<()> {
        if ttl > MULTICAST_TTL_MAX {
            return Err(SimError::InvalidInput);
        }
        self.udp(socket)?.multicast_ttl = ttl;
        Ok(())
    }

    pub(super) fn udp_set_interface(
        &mut self,
        socket: Key,
        interface: MulticastInterface,
    ) -> SimResult<()> {
        let host = self.udp(socket)?.host;
        self.check_interface(host, interface)
    }

    pub(super) fn udp_set_receive_buffer(&mut self, socket: Key, bytes: usize) -> SimResult<()> {
        self.udp(socket)?.receive_buffer_bytes = bytes;
        Ok(())
    }

    pub(super) fn udp_receive(
        &mut self,
        socket: Key,
        buffer: &mut [u8],
    ) -> SimResult<(usize, SocketAddr)> {
        let state = self.udp(socket)?;
        let datagram = state.queue.pop_front().ok_or(SimError::WouldBlock)?;
        state.queued_bytes -= datagram.payload.len();
        // Like recvfrom(2), a datagram longer than the buffer is truncated.
        let count = datagram.payload.len().min(buffer.len());
        buffer[..count].copy_from_slice(&datagram.payload[..count]);
        let from = datagram.from;
        self.recycle(datagram.payload);
        Ok((count, from))
    }

    pub(super) fn udp_poll_readable(&mut self, socket: Key, waker: &Waker) -> bool {
        let Some(state) = self.udp_sockets.get_mut(socket) else {
            return true;
        };
        let ready = !state.queue.is_empty();
        if !ready {
            state.waiters.register(waker);
        }
        ready
    }

    fn recycle(&mut self, mut payload: Vec<u8>) {
        payload.clear();
        self.payload_pool.push(payload);
    }

    fn payload_copy(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut payload = self.payload_pool.pop().unwrap_or_default();
        payload.extend_from_slice(bytes);
        payload
    }

    /// The sockets a datagram from `sender` to `to` reaches, into `receivers`.
    fn collect_receivers(
        &self,
        sender: &UdpState,
        to: SocketAddr,
        receivers: &mut Vec<(Key, HostId)>,
    ) {
        let from_ip = self.hosts[sender.host].ip;
        let local_only = sender.multicast_ttl == 0;
        let target_host = self.host_id(to.ip());
        for (key, socket) in self.udp_sockets.iter() {
            let host_fits = if to.ip().is_multicast() {
                !local_only || socket.host == sender.host
            } else {
                Some(socket.host) == target_host
            };
            if host_fits && socket.accepts(to, from_ip) {
                receivers.push((key, socket.host));
                if !to.ip().is_multicast() {
                    return;
                }
            }
        }
    }

    pub(super) fn udp_send(
        &mut self,
        socket: Key,
        buffer: &[u8],
        to: SocketAddr,
    ) -> SimResult<usize> {
        let sender = self.udp_sockets.get(socket).ok_or(SimError::NotConnected)?;
        if buffer.len() > UDP_PAYLOAD_BYTES_MAX {
            return Err(SimError::InvalidInput);
        }
        if sender.local.is_ipv4() != to.is_ipv4() {
            return Err(SimError::AddrNotAvailable);
        }
        let host = sender.host;
        let bound = sender.local.ip();
        let source_ip = if bound.is_unspecified() || bound.is_multicast() {
            self.hosts[host].ip
        } else {
            bound
        };
        let from = SocketAddr::new(source_ip, sender.local.port());
        let mut receivers = core::mem::take(&mut self.udp_receivers);
        receivers.clear();
        self.collect_receivers(sender, to, &mut receivers);
        let departure_ms = self.departure_ms(host, buffer.len());
        for &(receiver, receiver_host) in &receivers {
            self.send_copy(
                host,
                receiver,
                receiver_host,
                departure_ms,
                (from, to),
                buffer,
            );
        }
        self.udp_receivers = receivers;
        Ok(buffer.len())
    }

    fn send_copy(
        &mut self,
        host: HostId,
        receiver: Key,
        receiver_host: HostId,
        departure_ms: u64,
        (from, to): (SocketAddr, SocketAddr),
        bytes: &[u8],
    ) {
        self.stats.udp_sent += 1;
        if self.is_lost(host, receiver_host) {
            self.stats.udp_lost += 1;
            return;
        }
        let at_ms = if host == receiver_host {
            self.now_ms
        } else {
            departure_ms.saturating_add(self.latency_ms(host, receiver_host))
        };
        let payload = self.payload_copy(bytes);
        let datagram = self.datagrams.insert(InFlight { from, to, payload });
        let event = UdpEvent::Arrive {
            socket: receiver,
            datagram,
        };
        self.schedule(at_ms, Event::Udp(event));
    }

    pub(super) fn handle_udp_event(&mut self, event: UdpEvent) {
        let UdpEvent::Arrive { socket, datagram } = event;
        let datagram = self.datagrams.remove(datagram);
        let datagram = datagram.expect("one arrival per datagram in flight");
        let length = datagram.payload.len();
        let Some(state) = self.udp_sockets.get_mut(socket) else {
            return self.recycle(datagram.payload);
        };
        if !state.accepts(datagram.to, datagram.from.ip()) {
            return self.recycle(datagram.payload);
        }
        if state.queued_bytes + length > state.receive_buffer_bytes {
            self.stats.udp_dropped_full += 1;
            return self.recycle(datagram.payload);
        }
        state.queued_bytes += length;
        state.queue.push_back(Datagram {
            from: datagram.from,
            payload: datagram.payload,
        });
        state.waiters.drain_into(&mut self.woken);
        self.stats.udp_delivered += 1;
        self.hosts[state.host].stats.bytes_received += length as u64;
    }
}

/// A simulated UDP socket. Dropping it discards what it had queued.
#[derive(Debug)]
pub struct SimUdp {
    world: SimWorld,
    socket: Key,
}

impl SimUdp {
    pub(super) fn new(world: SimWorld, socket: Key) -> Self {
        Self { world, socket }
    }
}

impl Drop for SimUdp {
    fn drop(&mut self) {
        let socket = self.socket;
        self.world.with(|state| state.udp_close(socket));
    }
}

impl crate::UdpSocket for SimUdp {
    type Error = SimError;

    fn recv_from(&self, buffer: &mut [u8]) -> SimResult<(usize, SocketAddr)> {
        self.world
            .with(|state| state.udp_receive(self.socket, buffer))
    }

    fn send_to(&self, buffer: &[u8], target: SocketAddr) -> SimResult<usize> {
        self.world
            .with(|state| state.udp_send(self.socket, buffer, target))
    }

    fn join(&self, membership: &Membership) -> SimResult<()> {
        self.world
            .with(|state| state.udp_join(self.socket, membership))
    }

    fn leave(&self, membership: &Membership) -> SimResult<()> {
        self.world
            .with(|state| state.udp_leave(self.socket, membership))
    }

    fn set_multicast_ttl(&self, ttl: u32) -> SimResult<()> {
        self.world.with(|state| state.udp_set_ttl(self.socket, ttl))
    }

    fn set_multicast_interface(&self, interface: MulticastInterface) -> SimResult<()> {
        self.world
            .with(|state| state.udp_set_interface(self.socket, interface))
    }

    fn set_receive_buffer_bytes(&self, bytes: usize) -> SimResult<()> {
        self.world
            .with(|state| state.udp_set_receive_buffer(self.socket, bytes))
    }

    fn local_addr(&self) -> SimResult<SocketAddr> {
        self.world
            .with(|state| state.udp_local_address(self.socket))
    }

    fn readable(&self) -> impl Future<Output = SimResult<()>> {
        let condition = Condition::Datagram {
            socket: self.socket,
        };
        Readiness::new(self.world.clone(), condition)
    }
}
