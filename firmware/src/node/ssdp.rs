//! The SSDP task of the DLNA MediaServer: runs the [`Announcer`] on one UDP
//! socket bound to `0.0.0.0:1900` (address and port reuse, so another SSDP
//! daemon on the box can share it), joined to `239.255.255.250` on each LAN
//! interface, announcing with TTL 2.
//!
//! The interface list is read again every [`INTERFACE_REFRESH_MS`], so a box
//! whose LAN comes up after the daemon still announces; new interfaces are
//! joined and announced on at once. At exit, [`SsdpShared::request_stop`]
//! makes the task send the byebye set and end; `main` waits for
//! [`SsdpShared::is_finished`] within its bounded exit time.
//!
//! A flood of searches costs one parse per datagram, at most
//! [`DATAGRAMS_PER_WAKE_MAX`] per turn of the executor, and no allocation:
//! the buffers are on the task's stack and the announcer is fixed-size.

use core::cell::{Cell, RefCell};
use core::fmt;
use core::future::Future;
use core::net::{Ipv4Addr, SocketAddr};
use core::task::{Poll, Waker};
use std::rc::Rc;

use ringcast_hal::{Clock, InterfaceAddress, Membership, MulticastInterface, Net, UdpSocket as _};

use super::{first_of, Node};
use crate::lan::ssdp::{
    self, Announcer, InterfaceChanges, DATAGRAM_BYTES_MAX, INTERFACES_MAX, TRANSMIT_BYTES_MAX,
};
use crate::wire::ssdp::SSDP_GROUP;

pub use crate::lan::ssdp::SsdpCounters;

/// How often the interface list is read again.
pub const INTERFACE_REFRESH_MS: u64 = 10_000;
/// Datagrams handled per wake-up; then the other tasks get a turn.
pub const DATAGRAMS_PER_WAKE_MAX: usize = 32;
/// Interface addresses read from the system at once.
const SYSTEM_INTERFACES_MAX: usize = 32;

/// What the node shares with its SSDP task.
pub struct SsdpShared {
    /// The announcer, until [`super::spawn_all`] starts the task.
    announcer: RefCell<Option<Announcer>>,
    /// Interface names from the config; empty = every LAN interface.
    lan_interfaces: Vec<String>,
    running: Cell<bool>,
    stop: Cell<bool>,
    waker: RefCell<Option<Waker>>,
    counters: Cell<SsdpCounters>,
}

impl SsdpShared {
    /// No SSDP (DLNA off).
    pub fn disabled() -> Self {
        Self {
            announcer: RefCell::new(None),
            lan_interfaces: Vec::new(),
            running: Cell::new(false),
            stop: Cell::new(false),
            waker: RefCell::new(None),
            counters: Cell::new(SsdpCounters::default()),
        }
    }

    /// SSDP with `announcer`, on the interfaces named (or every LAN one).
    pub fn new(announcer: Announcer, lan_interfaces: Vec<String>) -> Self {
        let shared = Self::disabled();
        *shared.announcer.borrow_mut() = Some(announcer);
        Self {
            lan_interfaces,
            ..shared
        }
    }

    /// True when SSDP was configured (the task may still have failed to
    /// bind its port; see the log).
    pub fn is_enabled(&self) -> bool {
        self.running.get() || self.announcer.borrow().is_some()
    }

    /// Tasks [`super::spawn_all`] starts for SSDP.
    pub fn task_count(&self) -> usize {
        usize::from(self.announcer.borrow().is_some())
    }

    pub(super) fn take_announcer(&self) -> Option<Announcer> {
        let announcer = self.announcer.borrow_mut().take();
        self.running.set(announcer.is_some());
        announcer
    }

    /// The counters for `/status` and `/metrics`.
    pub fn counters(&self) -> SsdpCounters {
        self.counters.get()
    }

    /// Asks the task to send its byebye set and end.
    pub fn request_stop(&self) {
        self.stop.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// True when no SSDP task runs (never started, or byebye sent).
    pub fn is_finished(&self) -> bool {
        !self.running.get()
    }

    /// Resolves once a stop is requested.
    fn stopped(&self) -> impl Future<Output = ()> + '_ {
        core::future::poll_fn(move |context| {
            if self.stop.get() {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
    }
}

/// Runs SSDP until the byebye set is out at exit.
pub async fn ssdp_task<N: Net + 'static, C: Clock + 'static>(
    node: Rc<Node<N, C>>,
    mut announcer: Announcer,
) {
    let shared = &node.ssdp;
    let port = SSDP_GROUP.port();
    let udp = match node
        .net
        .udp_bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
    {
        Ok(udp) => udp,
        Err(error) => {
            log::warn!(
                "dlna: cannot bind UDP port {port}: {error}; SSDP is off, so TVs will not list \
                 this box by themselves (the playlist and streams still work)"
            );
            shared.running.set(false);
            return;
        }
    };
    if let Err(error) = udp.set_multicast_ttl(ssdp::NOTIFY_TTL) {
        log::debug!("dlna: setting the SSDP multicast TTL failed: {error}");
    }
    // Allocated once, on the task's stack: one byte more than a datagram
    // worth reading, so that a longer one is seen as such.
    let mut datagram = [0u8; DATAGRAM_BYTES_MAX + 1];
    let mut transmit = [0u8; TRANSMIT_BYTES_MAX];
    let mut refresh_at_ms = 0;
    let mut start_log = StartLog::Nothing;
    let mut leaving = false;
    loop {
        let now = node.clock.now_ms();
        if shared.stop.get() && !leaving {
            announcer.shutdown(now);
            leaving = true;
        }
        if !leaving && now >= refresh_at_ms {
            refresh_interfaces(&node, &udp, &mut announcer, now, &mut start_log);
            refresh_at_ms = now + INTERFACE_REFRESH_MS;
        }
        send_due(&udp, &mut announcer, now, &mut transmit);
        shared.counters.set(announcer.counters());
        if announcer.is_finished() {
            break;
        }
        let deadline = announcer
            .next_deadline()
            .unwrap_or(u64::MAX)
            .min(refresh_at_ms);
        let readable = async {
            let _ = udp.readable().await;
        };
        let timer = node.clock.sleep_until(deadline);
        let _ = first_of(readable, first_of(timer, shared.stopped())).await;
        let mut handled = 0;
        while handled < DATAGRAMS_PER_WAKE_MAX {
            match udp.recv_from(&mut datagram) {
                Ok((len, SocketAddr::V4(from))) => {
                    announcer.handle_datagram(node.clock.now_ms(), from, &datagram[..len]);
                }
                Ok(_) => {}
                Err(_) => break,
            }
            handled += 1;
        }
        if handled == DATAGRAMS_PER_WAKE_MAX {
            // More may be waiting; the socket stays readable, so without
            // this a flood would keep the other tasks from running.
            yield_now().await;
        }
    }
    log::debug!("dlna: SSDP byebye sent");
    shared.counters.set(announcer.counters());
    shared.running.set(false);
}

/// Sends every datagram the announcer has due.
fn send_due<U: ringcast_hal::UdpSocket>(
    udp: &U,
    announcer: &mut Announcer,
    now_ms: u64,
    buffer: &mut [u8],
) {
    let mut failures = 0u32;
    let mut via_set = None;
    while let Some(transmit) = announcer.poll_transmit(now_ms, buffer) {
        if transmit.to.ip().is_multicast() && via_set != Some(transmit.via) {
            let _ = udp.set_multicast_interface(MulticastInterface::Address(transmit.via));
            via_set = Some(transmit.via);
        }
        let bytes = &buffer[..transmit.len];
        if udp.send_to(bytes, SocketAddr::V4(transmit.to)).is_err() {
            failures += 1;
        }
    }
    if failures > 0 {
        log::debug!("dlna: {failures} SSDP datagrams could not be sent");
    }
}

/// Reads the interface list, gives the LAN ones to the announcer and joins
/// or leaves the SSDP group on the ones that came or went.
fn refresh_interfaces<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    udp: &N::Udp,
    announcer: &mut Announcer,
    now_ms: u64,
    start_log: &mut StartLog,
) {
    let mut found = [InterfaceAddress {
        index: 0,
        address: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
    }; SYSTEM_INTERFACES_MAX];
    let count = match node.net.ipv4_interfaces(&mut found) {
        Ok(count) => count,
        Err(error) => {
            log::debug!("dlna: reading the interface list failed: {error}");
            return;
        }
    };
    let names = &node.ssdp.lan_interfaces;
    let mut wanted = heapless::Vec::<u32, INTERFACES_MAX>::new();
    for name in names {
        match node.net.interface_index(name) {
            Ok(index) => {
                let _ = wanted.push(index);
            }
            Err(_) if *start_log == StartLog::Nothing => log::info!(
                "dlna: no interface named {name} (yet); looking again every {} s",
                INTERFACE_REFRESH_MS / 1000
            ),
            Err(_) => {}
        }
    }
    let wanted = (!names.is_empty()).then_some(&wanted[..]);
    let mut lans = heapless::Vec::<InterfaceAddress, INTERFACES_MAX>::new();
    for interface in &found[..count] {
        if ssdp::is_lan_interface(interface, wanted) && lans.push(*interface).is_err() {
            break;
        }
    }
    let changes = announcer.set_interfaces(now_ms, &lans);
    change_memberships(udp, &changes, &lans);
    let list = Listed {
        interfaces: &lans,
        port: announcer.config().http_port,
    };
    match (*start_log, lans.is_empty()) {
        (StartLog::Nothing, true) => {
            log::info!(
                "dlna: no LAN interface to announce on yet; looking again every {} s",
                INTERFACE_REFRESH_MS / 1000
            );
            *start_log = StartLog::NoneYet;
        }
        (StartLog::Nothing | StartLog::NoneYet, false) => {
            log::info!(
                "dlna: announcing MediaServer uuid:{} on {list}",
                announcer.config().uuid
            );
            *start_log = StartLog::Announced;
        }
        (StartLog::Announced, _) if changes != InterfaceChanges::default() => {
            log::debug!("dlna: LAN interfaces changed; announcing on {list}");
        }
        _ => {}
    }
}

/// What the log said so far about where SSDP runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StartLog {
    Nothing,
    /// That there is no LAN interface yet.
    NoneYet,
    /// The interfaces and description URLs (the start line).
    Announced,
}

/// Joins the SSDP group on new interfaces, leaves it on vanished ones.
fn change_memberships<U: ringcast_hal::UdpSocket>(
    udp: &U,
    changes: &InterfaceChanges,
    lans: &[InterfaceAddress],
) {
    let group = *SSDP_GROUP.ip();
    for added in &changes.added {
        let membership = Membership::V4 {
            group,
            source: None,
            interface: MulticastInterface::Address(added.address),
        };
        // Fails harmlessly when another address of the same interface
        // joined already (the membership is per interface).
        if let Err(error) = udp.join(&membership) {
            log::debug!("dlna: joining {group} on {}: {error}", added.address);
        }
    }
    for removed in &changes.removed {
        if lans.iter().any(|lan| lan.index == removed.index) {
            // Still joined through another address of that interface.
            continue;
        }
        // By index: the address may be gone already.
        let membership = Membership::V4 {
            group,
            source: None,
            interface: MulticastInterface::Index(removed.index),
        };
        let _ = udp.leave(&membership);
    }
}

/// Interface addresses with their description URLs, for the log.
struct Listed<'a> {
    interfaces: &'a [InterfaceAddress],
    port: u16,
}

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.interfaces.is_empty() {
            return f.write_str("no interface");
        }
        for (position, interface) in self.interfaces.iter().enumerate() {
            if position > 0 {
                f.write_str(", ")?;
            }
            let url = ssdp::DescriptionUrl {
                address: interface.address,
                port: self.port,
            };
            write!(
                f,
                "{}/{} (interface {}, {url})",
                interface.address, interface.prefix_len, interface.index
            )?;
        }
        Ok(())
    }
}

/// Lets every other ready task run once before this one goes on.
async fn yield_now() {
    let mut yielded = false;
    core::future::poll_fn(move |context| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        context.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
