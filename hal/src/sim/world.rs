//! The simulated world: virtual time, the hosts and links between them, and
//! the queue of everything that will happen later.
//!
//! All simulation state lives in one [`State`] behind an `Rc<RefCell<..>>`;
//! [`SimWorld`] and every socket, clock and future hold a clone of that handle.
//! Nothing here reads real time, starts a thread or draws randomness other
//! than from the world's seed, so a run is a pure function of its seed and of
//! the order in which the test drives it.
//!
//! Time moves only when the test calls [`SimWorld::advance_to`] (or lets
//! [`SimWorld::block_on`] do it). Advancing delivers every packet and fires
//! every timer whose time has come, in time order, and wakes the futures that
//! wait for them; the woken tasks then run at the new time.

use core::cmp::{Ordering, Reverse};
use core::net::IpAddr;
use core::task::Waker;
use std::cell::RefCell;
use std::collections::{BTreeMap, BinaryHeap};
use std::rc::Rc;
use std::sync::Arc;

use super::clock::SimClock;
use super::error::{SimError, SimResult};
use super::net::SimNet;
use super::run::Flag;
use super::slab::{Key, Slab};
use super::tcp::{Connection, ListenerState, TcpEvent};
use super::udp::{InFlight, UdpEvent, UdpState};
use crate::{Rng, XorShift};

/// The first port handed out when a socket asks for port 0.
const EPHEMERAL_PORT_FIRST: u16 = 49_152;
/// One million: loss rates are in parts per million.
pub(super) const PARTS_PER_MILLION: u32 = 1_000_000;

/// How packets travel from one host to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// One-way delay added to every packet.
    pub latency_ms: u64,
    /// The chance that a UDP datagram is lost, in parts per million. TCP is
    /// reliable and ignores it.
    pub loss_parts_per_million: u32,
}

impl LinkConfig {
    /// A link with this latency and no loss.
    pub const fn with_latency_ms(latency_ms: u64) -> Self {
        Self {
            latency_ms,
            loss_parts_per_million: 0,
        }
    }
}

/// World-wide defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The link between two hosts unless [`SimWorld::set_link`] says otherwise.
    /// Traffic within one host has no delay and no loss.
    pub link: LinkConfig,
    /// Bytes a TCP stream may have written and its peer not yet read, per
    /// direction, until [`crate::TcpStream::set_send_buffer_bytes`] changes it.
    pub tcp_buffer_bytes: usize,
    /// Bytes of datagrams a UDP socket queues before it drops new ones.
    pub udp_receive_buffer_bytes: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            link: LinkConfig::with_latency_ms(1),
            tcp_buffer_bytes: 64 * 1024,
            udp_receive_buffer_bytes: 208 * 1024,
        }
    }
}

/// World-wide counters, for checkers and for debugging a seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Deliveries processed (packets, connection steps).
    pub events: u64,
    /// TCP connections started.
    pub tcp_connections: u64,
    /// TCP payload bytes that reached the receiving host.
    pub tcp_bytes_delivered: u64,
    /// Datagram copies sent (one per receiving socket).
    pub udp_sent: u64,
    /// Datagram copies queued at a receiving socket.
    pub udp_delivered: u64,
    /// Datagram copies lost on a link.
    pub udp_lost: u64,
    /// Datagram copies dropped at a full receive buffer.
    pub udp_dropped_full: u64,
}

/// One host's traffic, payload bytes only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// An index into the world's host list; hosts are never removed.
pub(super) type HostId = usize;

pub(super) struct Host {
    pub(super) ip: IpAddr,
    next_port: u16,
    upload_bytes_per_s: Option<u64>,
    uplink_free_at_us: u64,
    pub(super) stats: HostStats,
}

/// Futures waiting for one condition. A waker is stored once however often
/// its future is polled.
#[derive(Default)]
pub(super) struct WakerList(Vec<Waker>);

impl WakerList {
    pub(super) fn register(&mut self, waker: &Waker) {
        if !self.0.iter().any(|known| known.will_wake(waker)) {
            self.0.push(waker.clone());
        }
    }

    /// Moves every waiter to `woken`, to be woken once the state is released.
    pub(super) fn drain_into(&mut self, woken: &mut Vec<Waker>) {
        woken.append(&mut self.0);
    }
}

/// Something that happens at a later time.
pub(super) enum Event {
    Tcp(TcpEvent),
    Udp(UdpEvent),
}

struct Scheduled {
    at_ms: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at_ms, self.sequence).cmp(&(other.at_ms, other.sequence))
    }
}

struct TimerSlot {
    deadline_ms: u64,
    waker: Option<Waker>,
}

/// Sleeping futures. The heap may hold entries of timers already cancelled;
/// they are skipped when they reach the top, and swept out when they pile up.
#[derive(Default)]
pub(super) struct Timers {
    slots: Slab<TimerSlot>,
    /// Deadline, then arming order, so equal deadlines fire first come first served.
    heap: BinaryHeap<Reverse<(u64, u64, Key)>>,
    armed_total: u64,
}

impl Timers {
    pub(super) fn insert(&mut self, deadline_ms: u64, waker: &Waker) -> Key {
        let key = self.slots.insert(TimerSlot {
            deadline_ms,
            waker: Some(waker.clone()),
        });
        self.armed_total += 1;
        self.heap
            .push(Reverse((deadline_ms, self.armed_total, key)));
        key
    }

    pub(super) fn set_waker(&mut self, key: Key, waker: &Waker) {
        if let Some(slot) = self.slots.get_mut(key) {
            if !slot
                .waker
                .as_ref()
                .is_some_and(|known| known.will_wake(waker))
            {
                slot.waker = Some(waker.clone());
            }
        }
    }

    pub(super) fn cancel(&mut self, key: Key) {
        self.slots.remove(key);
        if self.heap.len() > 2 * self.slots.len() + 64 {
            let slots = &self.slots;
            self.heap
                .retain(|Reverse((_, _, key))| slots.contains(*key));
        }
    }

    fn next_deadline_ms(&mut self) -> Option<u64> {
        while let Some(Reverse((deadline_ms, _, key))) = self.heap.peek().copied() {
            match self.slots.get(key) {
                Some(slot) if slot.deadline_ms == deadline_ms => return Some(deadline_ms),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// Wakes the earliest timer; its future frees the slot when it completes.
    fn fire_next(&mut self, woken: &mut Vec<Waker>) {
        if let Some(Reverse((_, _, key))) = self.heap.pop() {
            if let Some(waker) = self.slots.get_mut(key).and_then(|slot| slot.waker.take()) {
                woken.push(waker);
            }
        }
    }
}

/// Everything in the world. Sibling modules add their own `impl State` blocks.
pub(super) struct State {
    pub(super) now_ms: u64,
    seed: u64,
    rng: XorShift,
    pub(super) config: SimConfig,
    pub(super) hosts: Vec<Host>,
    links: BTreeMap<(IpAddr, IpAddr), LinkConfig>,
    events: BinaryHeap<Reverse<Scheduled>>,
    event_sequence: u64,
    pub(super) timers: Timers,
    pub(super) connections: Slab<Connection>,
    pub(super) listeners: Slab<ListenerState>,
    pub(super) udp_sockets: Slab<UdpState>,
    pub(super) datagrams: Slab<InFlight>,
    pub(super) payload_pool: Vec<Vec<u8>>,
    /// Scratch list of the sockets one datagram goes to, kept for its capacity.
    pub(super) udp_receivers: Vec<(Key, HostId)>,
    pub(super) woken: Vec<Waker>,
    /// The waker flag of `block_on` and `run_until`, made once.
    pub(super) drive_flag: Arc<Flag>,
    pub(super) stats: SimStats,
}

impl State {
    fn new(seed: u64, config: SimConfig) -> Self {
        Self {
            now_ms: 0,
            seed,
            rng: XorShift::new(seed),
            config,
            hosts: Vec::new(),
            links: BTreeMap::new(),
            events: BinaryHeap::new(),
            event_sequence: 0,
            timers: Timers::default(),
            connections: Slab::default(),
            listeners: Slab::default(),
            udp_sockets: Slab::default(),
            datagrams: Slab::default(),
            payload_pool: Vec::new(),
            udp_receivers: Vec::new(),
            woken: Vec::new(),
            drive_flag: Flag::new(),
            stats: SimStats::default(),
        }
    }

    pub(super) fn schedule(&mut self, at_ms: u64, event: Event) {
        assert!(
            at_ms >= self.now_ms,
            "an event cannot be scheduled in the past"
        );
        self.event_sequence += 1;
        self.events.push(Reverse(Scheduled {
            at_ms,
            sequence: self.event_sequence,
            event,
        }));
    }

    pub(super) fn host_id(&self, ip: IpAddr) -> Option<HostId> {
        self.hosts.iter().position(|host| host.ip == ip)
    }

    /// Checks an address a socket of `host` binds to: the host's own, the
    /// unspecified one of its family, or (for UDP) a multicast group.
    pub(super) fn local_ip(
        &self,
        host: HostId,
        requested: IpAddr,
        allow_multicast: bool,
    ) -> SimResult<IpAddr> {
        let own = self.hosts[host].ip;
        let same_family = own.is_ipv4() == requested.is_ipv4();
        let wildcard = requested.is_unspecified() || (allow_multicast && requested.is_multicast());
        if requested == own || (same_family && wildcard) {
            Ok(requested)
        } else {
            Err(SimError::AddrNotAvailable)
        }
    }

    fn add_host(&mut self, ip: IpAddr) -> HostId {
        if let Some(id) = self.host_id(ip) {
            return id;
        }
        self.hosts.push(Host {
            ip,
            next_port: EPHEMERAL_PORT_FIRST,
            upload_bytes_per_s: None,
            uplink_free_at_us: 0,
            stats: HostStats::default(),
        });
        self.hosts.len() - 1
    }

    fn link(&self, from: HostId, to: HostId) -> LinkConfig {
        if from == to {
            return LinkConfig::with_latency_ms(0);
        }
        let key = (self.hosts[from].ip, self.hosts[to].ip);
        self.links.get(&key).copied().unwrap_or(self.config.link)
    }

    /// Counts `bytes` as sent by `from` and returns when they have left its
    /// uplink: now, unless an upload rate makes them queue.
    pub(super) fn departure_ms(&mut self, from: HostId, bytes: usize) -> u64 {
        let now_us = self.now_ms.saturating_mul(1000);
        let host = &mut self.hosts[from];
        host.stats.bytes_sent += bytes as u64;
        let Some(rate) = host.upload_bytes_per_s.filter(|rate| *rate > 0) else {
            return self.now_ms;
        };
        let start_us = host.uplink_free_at_us.max(now_us);
        let duration_us = (bytes as u64).saturating_mul(1_000_000).div_ceil(rate);
        host.uplink_free_at_us = start_us.saturating_add(duration_us);
        host.uplink_free_at_us.div_ceil(1000)
    }

    /// The one-way delay from `from` to `to`.
    pub(super) fn latency_ms(&self, from: HostId, to: HostId) -> u64 {
        self.link(from, to).latency_ms
    }

    /// When `bytes` sent now from `from` reach `to`; counts them as sent.
    /// Traffic within a host skips the uplink.
    pub(super) fn arrival_ms(&mut self, from: HostId, to: HostId, bytes: usize) -> u64 {
        if from == to {
            self.hosts[from].stats.bytes_sent += bytes as u64;
            return self.now_ms;
        }
        let departure_ms = self.departure_ms(from, bytes);
        departure_ms.saturating_add(self.latency_ms(from, to))
    }

    /// Draws whether one datagram from `from` to `to` is lost.
    pub(super) fn is_lost(&mut self, from: HostId, to: HostId) -> bool {
        let loss = self.link(from, to).loss_parts_per_million;
        loss > 0 && self.rng.next_u32() % PARTS_PER_MILLION < loss
    }

    /// Hands out the next ephemeral port of `host` that `taken` does not refuse.
    pub(super) fn ephemeral_port(
        &mut self,
        host: HostId,
        taken: impl Fn(&Self, u16) -> bool,
    ) -> Option<u16> {
        let range = u16::MAX - EPHEMERAL_PORT_FIRST + 1;
        for _ in 0..range {
            let port = self.hosts[host].next_port;
            self.hosts[host].next_port = port.checked_add(1).unwrap_or(EPHEMERAL_PORT_FIRST);
            if !taken(self, port) {
                return Some(port);
            }
        }
        None
    }

    fn next_event_ms(&mut self) -> Option<u64> {
        let event = self.events.peek().map(|Reverse(scheduled)| scheduled.at_ms);
        let timer = self.timers.next_deadline_ms();
        match (event, timer) {
            (Some(event), Some(timer)) => Some(event.min(timer)),
            (event, timer) => event.or(timer),
        }
    }

    /// Processes, in time order, everything due up to `target_ms`.
    fn advance_to(&mut self, target_ms: u64) {
        assert!(
            target_ms >= self.now_ms,
            "virtual time never goes backwards"
        );
        while let Some(at_ms) = self.next_event_ms().filter(|at_ms| *at_ms <= target_ms) {
            self.now_ms = at_ms;
            let event_due = self
                .events
                .peek()
                .is_some_and(|Reverse(scheduled)| scheduled.at_ms == at_ms);
            if event_due {
                if let Some(Reverse(scheduled)) = self.events.pop() {
                    self.stats.events += 1;
                    self.handle_event(scheduled.event);
                }
            } else {
                self.timers.fire_next(&mut self.woken);
            }
        }
        self.now_ms = target_ms;
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Tcp(event) => self.handle_tcp_event(event),
            Event::Udp(event) => self.handle_udp_event(event),
        }
    }
}

/// A handle on a simulated world. Clones share the world; it is
/// single-threaded (`!Send`) by design.
#[derive(Clone)]
pub struct SimWorld {
    state: Rc<RefCell<State>>,
}

impl core::fmt::Debug for SimWorld {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (seed, now_ms) = self.with(|state| (state.seed, state.now_ms));
        f.debug_struct("SimWorld")
            .field("seed", &seed)
            .field("now_ms", &now_ms)
            .finish_non_exhaustive()
    }
}

impl SimWorld {
    /// A world with default links and buffers, at time 0.
    pub fn new(seed: u64) -> Self {
        Self::with_config(seed, SimConfig::default())
    }

    pub fn with_config(seed: u64, config: SimConfig) -> Self {
        Self {
            state: Rc::new(RefCell::new(State::new(seed, config))),
        }
    }

    /// Runs `f` on the state, then wakes the futures it made ready. Wakers
    /// run after the borrow ends, so a waker that polls inline cannot find
    /// the state borrowed.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (result, mut woken) = {
            let mut state = self.state.borrow_mut();
            let result = f(&mut state);
            (result, core::mem::take(&mut state.woken))
        };
        for waker in woken.drain(..) {
            waker.wake();
        }
        let mut state = self.state.borrow_mut();
        if state.woken.is_empty() {
            // Hand the emptied vector back so its capacity is reused.
            state.woken = woken;
        }
        result
    }

    /// The seed the world was made with; print it when a check fails.
    pub fn seed(&self) -> u64 {
        self.with(|state| state.seed)
    }

    /// The network of the host with this address, added to the world if new.
    pub fn host(&self, ip: impl Into<IpAddr>) -> SimNet {
        let ip = ip.into();
        let host = self.with(|state| state.add_host(ip));
        SimNet::new(self.clone(), host, ip)
    }

    /// The world's clock.
    pub fn clock(&self) -> SimClock {
        SimClock::new(self.clone())
    }

    /// A new generator seeded from the world's; successive calls differ.
    pub fn rng(&self) -> XorShift {
        self.with(|state| {
            let high = u64::from(state.rng.next_u32());
            let low = u64::from(state.rng.next_u32());
            XorShift::new(high << 32 | low)
        })
    }

    /// Sets the link between two hosts, both ways.
    pub fn set_link(&self, a: impl Into<IpAddr>, b: impl Into<IpAddr>, link: LinkConfig) {
        let (a, b) = (a.into(), b.into());
        self.set_link_one_way(a, b, link);
        self.set_link_one_way(b, a, link);
    }

    /// Sets the link from one host to another, for asymmetric paths.
    pub fn set_link_one_way(
        &self,
        from: impl Into<IpAddr>,
        to: impl Into<IpAddr>,
        link: LinkConfig,
    ) {
        let key = (from.into(), to.into());
        self.with(|state| state.links.insert(key, link));
    }

    /// Limits a host's upload: what it sends queues on its uplink. `None`
    /// removes the limit. The host is added if new.
    pub fn set_upload_rate(&self, ip: impl Into<IpAddr>, bytes_per_s: Option<u64>) {
        let ip = ip.into();
        self.with(|state| {
            let host = state.add_host(ip);
            state.hosts[host].upload_bytes_per_s = bytes_per_s;
        });
    }

    /// Virtual time in milliseconds since the world was made.
    pub fn now_ms(&self) -> u64 {
        self.with(|state| state.now_ms)
    }

    /// Moves time to `target_ms`, delivering packets and firing timers on the
    /// way. The tasks this wakes run when the executor is next polled, at
    /// `target_ms`; step through [`SimWorld::next_event_ms`] to see each
    /// moment separately.
    pub fn advance_to(&self, target_ms: u64) {
        self.with(|state| state.advance_to(target_ms));
    }

    pub fn advance_by(&self, duration_ms: u64) {
        self.with(|state| state.advance_to(state.now_ms.saturating_add(duration_ms)));
    }

    /// When the next packet arrives or timer fires, if anything is pending.
    pub fn next_event_ms(&self) -> Option<u64> {
        self.with(|state| state.next_event_ms())
    }

    /// Advances to the next event, if any, and returns its time: one turn of
    /// a hand-written driver loop (`run the ready tasks; step; repeat`).
    pub fn step(&self) -> Option<u64> {
        self.with(|state| {
            let at_ms = state.next_event_ms()?;
            state.advance_to(at_ms);
            Some(at_ms)
        })
    }

    pub fn stats(&self) -> SimStats {
        self.with(|state| state.stats)
    }

    /// The traffic of the host with this address, if it exists.
    pub fn host_stats(&self, ip: impl Into<IpAddr>) -> Option<HostStats> {
        let ip = ip.into();
        self.with(|state| state.host_id(ip).map(|host| state.hosts[host].stats))
    }
}
