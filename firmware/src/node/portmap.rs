//! The peer-port tasks: the listener on the peer port, and the driver that
//! runs each [`Mapper`] on the HAL (one UDP socket, one HTTP exchange at a
//! time), publishes its report for `/status`, keeps the PCP record in the
//! state store, and logs when the reachability changes.
//!
//! Until the peer protocols exist, the peer listener answers every
//! connection with a one-line banner and closes it. It never serves the LAN
//! HTTP documents or streams, so mapping it exposes nothing else.

use core::cell::{Cell, RefCell};
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use core::task::{Poll, Waker};
use std::rc::Rc;

use ringcast_hal::{
    Clock, Error as _, ErrorKind, InterfaceAddress, MulticastInterface, Net, TcpListener as _,
    TcpStream as _, UdpSocket as _,
};

use super::{first_of, Either, Node};
use crate::portmap::httpc::{self, Parsed};
use crate::portmap::mapper::{HttpFailure, HttpOutcome};
use crate::portmap::{self, Io, Mapper, PcpRecord, Report, State};

/// The banner a peer-port connection gets.
pub const BANNER: &[u8] = concat!(
    "ringcast/",
    env!("CARGO_PKG_VERSION"),
    " peer port (peer protocol not enabled in this version)\r\n"
)
.as_bytes();
/// Longest time one HTTP exchange with the router may take.
pub const HTTP_EXCHANGE_MS: u64 = 5000;
/// Longest time the mappings may take to be deleted at exit.
pub const SHUTDOWN_MS: u64 = 2500;
/// Bytes of one datagram from the router.
const DATAGRAM_BYTES_MAX: usize = 1500;
/// TTL of our SSDP searches (DESIGN §5: 2, so a search never leaves home).
const SEARCH_TTL: u32 = 2;
/// Interface addresses looked at for searches.
const INTERFACES_MAX: usize = 16;
/// Datagrams handled per wake-up (the rest wait for the next turn).
const DATAGRAMS_PER_WAKE_MAX: usize = 32;

/// Which port a mapper maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    Peer,
    LanHttp,
}

impl Mapping {
    fn record_name(self) -> &'static str {
        match self {
            Mapping::Peer => crate::state::PORTMAP_PCP,
            Mapping::LanHttp => crate::state::PORTMAP_PCP_LAN_HTTP,
        }
    }

    /// Who can now reach the mapped port.
    fn reached_by(self) -> &'static str {
        match self {
            Mapping::Peer => "peers can reach this box",
            Mapping::LanHttp => "the channels and status page are reachable from the internet",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Mapping::Peer => "peer port",
            Mapping::LanHttp => "LAN HTTP port",
        }
    }
}

/// What the node shares with its port-mapping tasks.
pub struct PortmapShared {
    /// The peer port's mapping as `/status` shows it.
    pub peer: RefCell<Report>,
    /// The LAN HTTP port's mapping, when the config asks for one.
    pub lan_http: Option<RefCell<Report>>,
    /// Mappers waiting for [`super::spawn_all`].
    mappers: RefCell<Vec<(Mapper, Mapping)>>,
    /// Mapping tasks still running.
    running: Cell<usize>,
    stop: Cell<bool>,
    wakers: RefCell<[Option<Waker>; 2]>,
    /// The interface the router is looked for behind.
    pub interface: Option<String>,
}

impl PortmapShared {
    /// Nothing mapped (mapping off, or no peer port).
    pub fn disabled() -> Self {
        Self {
            peer: RefCell::new(Report::disabled()),
            lan_http: None,
            mappers: RefCell::new(Vec::new()),
            running: Cell::new(0),
            stop: Cell::new(false),
            wakers: RefCell::new([None, None]),
            interface: None,
        }
    }

    /// Mappers for the peer port and, if given, the LAN HTTP port.
    pub fn new(peer: Mapper, lan_http: Option<Mapper>, interface: Option<String>) -> Self {
        let mut shared = Self::disabled();
        *shared.peer.get_mut() = peer.report().clone();
        shared.lan_http = lan_http.as_ref().map(|m| RefCell::new(m.report().clone()));
        let mut mappers = vec![(peer, Mapping::Peer)];
        mappers.extend(lan_http.map(|m| (m, Mapping::LanHttp)));
        shared.mappers = RefCell::new(mappers);
        shared.interface = interface;
        shared
    }

    /// Tasks [`super::spawn_all`] starts for the mappers.
    pub fn task_count(&self) -> usize {
        self.mappers.borrow().len()
    }

    pub(super) fn take_mappers(&self) -> Vec<(Mapper, Mapping)> {
        let mappers = core::mem::take(&mut *self.mappers.borrow_mut());
        self.running.set(mappers.len());
        mappers
    }

    /// Asks every mapping to be deleted; [`PortmapShared::is_finished`]
    /// says when they are.
    pub fn request_stop(&self) {
        self.stop.set(true);
        for waker in self.wakers.borrow_mut().iter_mut() {
            if let Some(waker) = waker.take() {
                waker.wake();
            }
        }
    }

    /// True when no mapping task runs any more.
    pub fn is_finished(&self) -> bool {
        self.running.get() == 0
    }

    fn report_cell(&self, mapping: Mapping) -> Option<&RefCell<Report>> {
        match mapping {
            Mapping::Peer => Some(&self.peer),
            Mapping::LanHttp => self.lan_http.as_ref(),
        }
    }

    /// Resolves once a stop is requested.
    fn stopped(&self, slot: usize) -> impl core::future::Future<Output = ()> + '_ {
        core::future::poll_fn(move |context| {
            if self.stop.get() {
                return Poll::Ready(());
            }
            self.wakers.borrow_mut()[slot] = Some(context.waker().clone());
            Poll::Pending
        })
    }
}

/// Serves the peer port: a banner, then close.
pub async fn peer_listener<N: Net + 'static, C: Clock + 'static>(
    node: Rc<Node<N, C>>,
    listener: N::Listener,
) {
    let mut logged_error = false;
    loop {
        match listener.accept() {
            Ok((mut stream, _from)) => {
                // A fresh socket's buffer takes the banner whole; a peer
                // that cannot take it gets nothing more from us anyway.
                let _ = stream.write(BANNER);
                node.totals.peer_connections.increment();
            }
            Err(error) if error.is_would_block() => {
                let _ = listener.readable().await;
            }
            Err(error) => {
                if !logged_error {
                    log::warn!("peer port: accept failed: {error}");
                    logged_error = true;
                }
                let now = node.clock.now_ms();
                node.clock.sleep_until(now + 100).await;
            }
        }
    }
}

/// Runs one mapper until it is finished (mapping off, or deleted at exit).
pub async fn portmap_task<N: Net + 'static, C: Clock + 'static>(
    node: Rc<Node<N, C>>,
    mut mapper: Mapper,
    mapping: Mapping,
) {
    let slot = usize::from(mapping == Mapping::LanHttp);
    let udp = match node
        .net
        .udp_bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    {
        Ok(udp) => Some(udp),
        Err(error) => {
            log::error!("portmap: cannot open a UDP socket: {error}; port mapping is off");
            None
        }
    };
    if let Some(udp) = &udp {
        let _ = udp.set_multicast_ttl(SEARCH_TTL);
    }
    // Allocated once, when the task starts.
    let mut response = vec![0u8; httpc::RESPONSE_BYTES_MAX].into_boxed_slice();
    let mut datagram = [0u8; DATAGRAM_BYTES_MAX];
    let mut logged = mapper.report().clone();
    let mut stop_deadline = None;
    if udp.is_none() {
        mapper.shutdown(node.clock.now_ms());
    }
    loop {
        let now = node.clock.now_ms();
        if node.portmap.stop.get() && stop_deadline.is_none() {
            stop_deadline = Some(now + SHUTDOWN_MS);
            mapper.shutdown(now);
        }
        if stop_deadline.is_some_and(|deadline| now >= deadline) {
            log::warn!(
                "portmap: the router did not confirm removing the {} mapping in time",
                mapping.what()
            );
            break;
        }
        while let Some(io) = mapper.poll(node.clock.now_ms()) {
            match io {
                Io::Route => {
                    let interface = node.portmap.interface.as_deref();
                    let route = match node.net.default_route(interface) {
                        Ok(route) => route,
                        Err(error) => {
                            log::debug!("portmap: reading the routes failed: {error}");
                            None
                        }
                    };
                    let route = route.map(|r| portmap::Route {
                        gateway: r.gateway,
                        local: r.local,
                    });
                    let lan = lan_addresses(&*node, interface.is_some());
                    mapper.set_route(node.clock.now_ms(), route, &lan);
                }
                Io::Udp { to, via, bytes } => {
                    if let Some(udp) = &udp {
                        if to.ip().is_multicast() {
                            let _ = udp.set_multicast_interface(MulticastInterface::Address(via));
                        }
                        if let Err(error) = udp.send_to(bytes, SocketAddr::V4(to)) {
                            log::debug!("portmap: sending to {to} failed: {error}");
                        }
                    }
                }
                Io::Http { to, request } => {
                    let deadline = node.clock.now_ms() + HTTP_EXCHANGE_MS;
                    let outcome = exchange(&*node, to, request, &mut response, deadline).await;
                    mapper.handle_http(node.clock.now_ms(), outcome);
                }
                Io::Store(record) => store_record(&node, mapping, record),
            }
        }
        publish(&node, mapping, &mapper, &mut logged);
        if mapper.is_finished() {
            break;
        }
        let deadline = mapper.next_deadline().unwrap_or(u64::MAX);
        let deadline = stop_deadline.map_or(deadline, |stop| stop.min(deadline));
        let wait = async {
            match &udp {
                Some(udp) => {
                    let _ = udp.readable().await;
                }
                None => core::future::pending::<()>().await,
            }
        };
        let timer = node.clock.sleep_until(deadline);
        let stop = node.portmap.stopped(slot);
        let _ = first_of(wait, first_of(timer, stop)).await;
        if let Some(udp) = &udp {
            for _ in 0..DATAGRAMS_PER_WAKE_MAX {
                match udp.recv_from(&mut datagram) {
                    Ok((len, SocketAddr::V4(from))) => {
                        mapper.handle_udp(node.clock.now_ms(), from, &datagram[..len]);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }
    publish(&node, mapping, &mapper, &mut logged);
    node.portmap
        .running
        .set(node.portmap.running.get().saturating_sub(1));
}

/// Our addresses on the LAN interfaces (private, shared or link-local: not
/// public), for SSDP searches; none when the config names one interface.
fn lan_addresses<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    one_interface: bool,
) -> heapless::Vec<Ipv4Addr, { portmap::mapper::SEARCH_INTERFACES_MAX }> {
    let mut lan = heapless::Vec::new();
    if one_interface {
        return lan;
    }
    let mut found = [InterfaceAddress {
        index: 0,
        address: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
    }; INTERFACES_MAX];
    let count = node.net.ipv4_interfaces(&mut found).unwrap_or(0);
    for interface in &found[..count] {
        if !portmap::is_public(interface.address) && lan.push(interface.address).is_err() {
            break;
        }
    }
    lan
}

/// Keeps (or forgets) the PCP record in the state store.
fn store_record<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    mapping: Mapping,
    record: Option<PcpRecord>,
) {
    let mut store = node.store.borrow_mut();
    let Some(store) = store.as_mut() else {
        return;
    };
    let encoded = record.map(|r| r.encode());
    if let Err(error) = store.save(mapping.record_name(), encoded.as_ref().map(|e| &e[..])) {
        log::warn!(
            "portmap: {error}: after a restart the PCP mapping of the {} cannot be renewed \
             or removed until it expires",
            mapping.what()
        );
    }
}

/// Shows the mapper's report in `/status` and logs when it changed in a way
/// a person cares about.
fn publish<N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    mapping: Mapping,
    mapper: &Mapper,
    logged: &mut Report,
) {
    let report = mapper.report();
    if let Some(cell) = node.portmap.report_cell(mapping) {
        cell.borrow_mut().clone_from(report);
    }
    if report.headline() != logged.headline() {
        log_change(node.settings.portmap_check_ms, mapping, report);
    } else if report.renewals != logged.renewals {
        log::debug!(
            "portmap: {} lease renewed ({} s)",
            mapping.what(),
            report.lease_s
        );
    } else if report.remaps != logged.remaps {
        log::info!(
            "portmap: the router had lost the {} mapping (restart?); mapped again",
            mapping.what()
        );
    }
    logged.clone_from(report);
}

fn log_change(check_ms: u64, mapping: Mapping, report: &Report) {
    let what = mapping.what();
    let method = report.method.map_or("?", |m| m.name());
    let retry_s = check_ms / 1000;
    match (report.state, report.external, report.internal) {
        (State::Mapped, Some(external), Some(internal)) if report.lease_s == 0 => log::info!(
            "portmap: {what} mapped: {external} -> {internal} with {method} (permanent); {}",
            mapping.reached_by()
        ),
        (State::Mapped, Some(external), Some(internal)) => log::info!(
            "portmap: {what} mapped: {external} -> {internal} with {method} (lease {} s); {}",
            report.lease_s,
            mapping.reached_by()
        ),
        (State::DoubleNat, ..) => log::warn!(
            "portmap: {what}: {}; not announcing this box as reachable (retry in {retry_s} s)",
            report.detail
        ),
        (State::NoGateway, ..) => log::warn!(
            "portmap: {what}: no router to map on: {}; retry in {retry_s} s",
            report.detail
        ),
        (State::Refused, ..) => log::warn!(
            "portmap: {what}: the router refused: {}; retry in {retry_s} s",
            report.detail
        ),
        (State::PublicAddress, ..) => log::info!(
            "portmap: {what}: {}; peers can reach this box if no firewall blocks the port",
            report.detail
        ),
        (State::Searching, ..) if !report.detail.is_empty() => {
            log::warn!("portmap: {what}: {}; searching again", report.detail)
        }
        (State::Disabled, ..) if !report.detail.is_empty() => {
            log::info!("portmap: {what}: {}", report.detail)
        }
        _ => {}
    }
}

/// One HTTP exchange with the router: connect, send, read the whole
/// response into `buffer`, all before `deadline_ms`.
async fn exchange<'b, N: Net + 'static, C: Clock + 'static>(
    node: &Node<N, C>,
    to: SocketAddrV4,
    request: &[u8],
    buffer: &'b mut [u8],
    deadline_ms: u64,
) -> HttpOutcome<'b> {
    let mut stream = match node.net.tcp_connect(SocketAddr::V4(to)) {
        Ok(stream) => stream,
        Err(_) => return HttpOutcome::Failed(HttpFailure::Refused),
    };
    if !ready(node, stream.writable(), deadline_ms).await {
        return HttpOutcome::Failed(HttpFailure::TimedOut);
    }
    if node.net.connect_result(&stream).is_err() {
        return HttpOutcome::Failed(HttpFailure::Refused);
    }
    let local = match stream.local_addr() {
        Ok(SocketAddr::V4(local)) => *local.ip(),
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let mut written = 0;
    while written < request.len() {
        match stream.write(&request[written..]) {
            Ok(count) => written += count,
            Err(error) if error.is_would_block() => {
                if !ready(node, stream.writable(), deadline_ms).await {
                    return HttpOutcome::Failed(HttpFailure::TimedOut);
                }
            }
            Err(error) => return HttpOutcome::Failed(failure_of(error.kind())),
        }
    }
    let mut filled = 0;
    loop {
        let (eof, count) = if filled < buffer.len() {
            match stream.read(&mut buffer[filled..]) {
                Ok(0) => (true, 0),
                Ok(count) => (false, count),
                Err(error) if error.is_would_block() => {
                    if !ready(node, stream.readable(), deadline_ms).await {
                        return HttpOutcome::Failed(HttpFailure::TimedOut);
                    }
                    continue;
                }
                Err(error) => return HttpOutcome::Failed(failure_of(error.kind())),
            }
        } else {
            (false, 0)
        };
        filled += count;
        match httpc::parse_response(buffer, filled, eof) {
            Ok(Parsed::Complete { status, body }) => {
                return HttpOutcome::Response {
                    status,
                    body: &buffer[body],
                    local,
                };
            }
            Ok(Parsed::Incomplete) if eof => {
                return HttpOutcome::Failed(HttpFailure::Malformed(httpc::HttpcError::Truncated))
            }
            Ok(Parsed::Incomplete) => {}
            Err(error) => return HttpOutcome::Failed(HttpFailure::Malformed(error)),
        }
    }
}

fn failure_of(kind: ErrorKind) -> HttpFailure {
    match kind {
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => HttpFailure::Refused,
        ErrorKind::TimedOut => HttpFailure::TimedOut,
        _ => HttpFailure::Io,
    }
}

/// Waits for `readiness` until `deadline_ms`; false on timeout.
async fn ready<N: Net + 'static, C: Clock + 'static, E>(
    node: &Node<N, C>,
    readiness: impl core::future::Future<Output = Result<(), E>>,
    deadline_ms: u64,
) -> bool {
    if node.clock.now_ms() >= deadline_ms {
        return false;
    }
    matches!(
        first_of(readiness, node.clock.sleep_until(deadline_ms)).await,
        Either::Left(_)
    )
}
