//! [`Mapper`] owns the life of one port mapping: find the gateway, ask it in
//! the configured order (UPnP IGD, PCP, NAT-PMP), keep the lease alive,
//! notice a router that forgot it, and delete it on exit.
//!
//! It is sans-IO in the quinn-proto style. The driver calls
//! [`Mapper::poll`] until it returns `None`, performing each [`Io`] it is
//! given and reporting the outcome ([`Mapper::set_route`],
//! [`Mapper::handle_http`], [`Mapper::handle_udp`]); then it sleeps until
//! [`Mapper::next_deadline`] or a datagram. One HTTP exchange or one UDP
//! request is outstanding at a time, which keeps the machine small and the
//! router unbothered. Every buffer is inside the mapper; nothing allocates.
//!
//! Failures end a *round* (all methods tried once) with the most telling
//! state: `double-nat` over `refused` over `no-gateway`. The next round
//! starts one check interval later.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use ringcast_hal::{Rng as _, XorShift};

use super::desc::{self, Service};
use super::httpc::{self, HttpUrl};
use super::natpmp::{self, MapProtocol};
use super::pcp::{self, MapRequest};
use super::soap::{self, Action, Protocol, Reply};
use super::{is_public, set_detail, Config, Method, PcpRecord, Report, Route, State, Used};
use crate::wire::ssdp;

/// What an M-SEARCH asks for, one datagram each (DESIGN §5 checklist).
/// An IGDv2 device answers the v1 search targets too (UPnP DA 1.1 §1.3.2).
pub const SEARCH_TARGETS: [&str; 4] = [
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
    "upnp:rootdevice",
];
/// MX of our searches: devices answer within this many seconds.
const SEARCH_MX: u8 = 1;
/// Search rounds (multicast may be lost) and the time between them.
const SEARCH_ROUNDS: u8 = 2;
const SEARCH_ROUND_MS: u64 = 1000;
/// How long answers to a search are waited for.
const SEARCH_MS: u64 = 3000;
/// Distinct description URLs kept from one search.
const LOCATIONS_MAX: usize = 4;
/// LAN interfaces a search goes out of.
pub const SEARCH_INTERFACES_MAX: usize = 4;
/// Tries of one NAT-PMP/PCP request (250 ms doubling: 3.75 s in all).
const UDP_ATTEMPTS: u32 = 4;
/// Tries of a delete on exit (the driver bounds the whole exit anyway).
const DELETE_ATTEMPTS: u32 = 2;
/// Add attempts on one IGD (conflicts, lease and port fallbacks).
const ADD_ATTEMPTS_MAX: u8 = 8;
/// Failed checks in a row before the gateway is searched for again.
const CHECK_FAILURES_MAX: u8 = 3;
/// Lifetime asked of PCP/NAT-PMP when the config asks for a permanent
/// lease (they have none), in seconds.
const NAT_PERMANENT_LEASE_S: u32 = 86_400;
/// Bytes of the request being sent.
const TX_BYTES: usize = 2048;
/// The ports below this are not picked when the router wants another one.
const EPHEMERAL_PORT_MIN: u16 = 1024;

/// One piece of I/O the driver must do for the mapper.
#[derive(Debug, PartialEq, Eq)]
pub enum Io<'a> {
    /// Find the default route (on the configured interface) and answer
    /// with [`Mapper::set_route`].
    Route,
    /// Send one datagram. For a multicast `to`, send it out of the
    /// interface that has address `via`, with TTL 2.
    Udp {
        to: SocketAddrV4,
        via: Ipv4Addr,
        bytes: &'a [u8],
    },
    /// Connect to `to`, write `request`, read the response until
    /// [`httpc::parse_response`] completes or fails, within the driver's
    /// exchange timeout, and answer with [`Mapper::handle_http`].
    Http { to: SocketAddrV4, request: &'a [u8] },
    /// Keep this PCP record across restarts, or forget it (`None`).
    Store(Option<PcpRecord>),
}

/// How an HTTP exchange with the router ended, when it did not end with a
/// response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpFailure {
    /// The connection was refused or reset.
    Refused,
    /// No complete answer within the exchange timeout.
    TimedOut,
    /// The answer could not be read as HTTP.
    Malformed(httpc::HttpcError),
    /// A socket error.
    Io,
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpFailure::Refused => f.write_str("connection refused"),
            HttpFailure::TimedOut => f.write_str("no complete answer in time"),
            HttpFailure::Malformed(error) => write!(f, "{error}"),
            HttpFailure::Io => f.write_str("socket error"),
        }
    }
}

/// The outcome of an [`Io::Http`].
#[derive(Debug)]
pub enum HttpOutcome<'a> {
    /// A complete response; `local` is our address on that connection.
    Response {
        status: u16,
        body: &'a [u8],
        local: Ipv4Addr,
    },
    Failed(HttpFailure),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HttpStep {
    Describe,
    StatusInfo,
    ExternalIp,
    Add,
    Renew,
    Check,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UdpStep {
    PcpMap { renew: bool },
    NatPmpAddress,
    NatPmpMap { renew: bool },
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting until `at` to start a round.
    Wait { at: u64 },
    /// Asked the driver for the route.
    Route,
    /// UPnP search running; descriptions are fetched as answers come.
    Search,
    /// An HTTP exchange is out.
    Http(HttpStep),
    /// A NAT-PMP/PCP request is out; resent at `retry_at`.
    Udp {
        step: UdpStep,
        attempt: u32,
        retry_at: u64,
    },
    /// The mapping stands; renew or check at the mapper's timers.
    Mapped,
    /// Stopped for good.
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Route,
    Udp { to: SocketAddrV4, via: Ipv4Addr },
    Http { to: SocketAddrV4 },
}

/// The state machine of one port mapping. See the module documentation.
pub struct Mapper {
    config: Config,
    report: Report,
    rng: XorShift,
    route: Option<Route>,
    /// Our addresses on the LAN interfaces searches go out of.
    search_from: heapless::Vec<Ipv4Addr, SEARCH_INTERFACES_MAX>,
    phase: Phase,
    pending: Option<Pending>,
    store_request: Option<Option<PcpRecord>>,
    tx: [u8; TX_BYTES],
    tx_len: usize,
    /// Index of the method being tried in this round.
    method_index: usize,
    /// Priority of the most telling failure of this round (0: none yet).
    round_failure: u8,
    /// That failure, shown when the round ends (the report keeps its last
    /// state until then, so `/status` never shows a method's failure that
    /// the next method overrules).
    round_state: State,
    round_error: Option<u16>,
    round_detail: heapless::String<{ super::DETAIL_BYTES_MAX }>,
    // UPnP.
    locations: heapless::Vec<HttpUrl, LOCATIONS_MAX>,
    location_index: usize,
    search_round: u8,
    search_sends_left: u8,
    search_next_round_ms: u64,
    search_deadline_ms: u64,
    services: heapless::Vec<Service, { desc::SERVICES_MAX }>,
    service_index: usize,
    /// Our LAN address as the IGD sees it.
    internal_client: Ipv4Addr,
    /// The IGD's external address.
    igd_external: Ipv4Addr,
    /// The IGD said its WAN is connected (GetStatusInfo).
    igd_connected: bool,
    /// A connected IGD reported no external address: miniupnpd does this
    /// when its WAN address is private or CGNAT ("port forwarding is
    /// impossible").
    igd_no_external: bool,
    add_attempts: u8,
    use_add_any: bool,
    /// What went wrong last during this UPnP attempt (for the report).
    problem: heapless::String<{ super::DETAIL_BYTES_MAX }>,
    // The mapping asked for or held.
    external_port: u16,
    lease_s: u32,
    renew_at_ms: u64,
    check_at_ms: u64,
    check_failures: u8,
    // PCP / NAT-PMP.
    nonce: [u8; pcp::NONCE_BYTES],
    stored: Option<PcpRecord>,
    epoch: Option<(u32, u64)>,
    nat_external: Ipv4Addr,
}

impl Mapper {
    /// A mapper for `config`, with the PCP record a previous run kept.
    /// `seed` feeds the nonce and port choices.
    pub fn new(config: Config, stored: Option<PcpRecord>, seed: u64) -> Self {
        let external_port = if config.external_port == 0 {
            config.internal_port
        } else {
            config.external_port
        };
        let lease_s = config.lease_s;
        let mut report = Report::new(if config.methods.is_empty() {
            State::Disabled
        } else {
            State::Searching
        });
        if config.methods.is_empty() {
            set_detail(&mut report.detail, format_args!("port mapping is off"));
        }
        Mapper {
            phase: if config.methods.is_empty() {
                Phase::Stopped
            } else {
                Phase::Wait { at: 0 }
            },
            config,
            report,
            rng: XorShift::new(seed),
            route: None,
            search_from: heapless::Vec::new(),
            pending: None,
            store_request: None,
            tx: [0; TX_BYTES],
            tx_len: 0,
            method_index: 0,
            round_failure: 0,
            round_state: State::NoGateway,
            round_error: None,
            round_detail: heapless::String::new(),
            locations: heapless::Vec::new(),
            location_index: 0,
            search_round: 0,
            search_sends_left: 0,
            search_next_round_ms: 0,
            search_deadline_ms: 0,
            services: heapless::Vec::new(),
            service_index: 0,
            internal_client: Ipv4Addr::UNSPECIFIED,
            igd_external: Ipv4Addr::UNSPECIFIED,
            igd_connected: false,
            igd_no_external: false,
            add_attempts: 0,
            use_add_any: false,
            problem: heapless::String::new(),
            external_port,
            lease_s,
            renew_at_ms: u64::MAX,
            check_at_ms: u64::MAX,
            check_failures: 0,
            nonce: [0; pcp::NONCE_BYTES],
            stored,
            epoch: None,
            nat_external: Ipv4Addr::UNSPECIFIED,
        }
    }

    /// The mapping as it stands.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// True once [`Mapper::shutdown`] has run its course (or mapping is off)
    /// and nothing is left for the driver to do.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Stopped && self.pending.is_none() && self.store_request.is_none()
    }

    /// The next I/O to do, or `None` until a deadline or an answer.
    pub fn poll(&mut self, now_ms: u64) -> Option<Io<'_>> {
        if self.pending.is_none() && self.store_request.is_none() {
            self.on_time(now_ms);
        }
        if let Some(record) = self.store_request.take() {
            return Some(Io::Store(record));
        }
        match self.pending.take()? {
            Pending::Route => Some(Io::Route),
            Pending::Udp { to, via } => Some(Io::Udp {
                to,
                via,
                bytes: &self.tx[..self.tx_len],
            }),
            Pending::Http { to } => Some(Io::Http {
                to,
                request: &self.tx[..self.tx_len],
            }),
        }
    }

    /// When the mapper next needs [`Mapper::poll`] without any answer.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.pending.is_some() || self.store_request.is_some() {
            return Some(0);
        }
        match self.phase {
            Phase::Wait { at } => Some(at),
            Phase::Search => {
                let round =
                    (self.search_round < SEARCH_ROUNDS).then_some(self.search_next_round_ms);
                Some(round.map_or(self.search_deadline_ms, |r| r.min(self.search_deadline_ms)))
            }
            Phase::Udp { retry_at, .. } => Some(retry_at),
            Phase::Mapped => Some(self.renew_at_ms.min(self.check_at_ms)),
            Phase::Route | Phase::Http(_) | Phase::Stopped => None,
        }
    }

    /// Begins deleting the mapping; [`Mapper::is_finished`] says when done.
    pub fn shutdown(&mut self, now_ms: u64) {
        if self.phase == Phase::Stopped {
            return;
        }
        let mapped = self.report.state == State::Mapped;
        self.pending = None;
        match (mapped, self.report.method) {
            (true, Some(Used::IgdV1 | Used::IgdV2)) => {
                let port = self.external_port;
                self.soap(Action::DeletePortMapping {
                    external_port: port,
                    protocol: Protocol::Tcp,
                });
                self.phase = Phase::Http(HttpStep::Delete);
            }
            (true, Some(Used::Pcp)) => {
                self.write_pcp_map(0);
                self.send_udp(now_ms, UdpStep::Delete, 0);
            }
            (true, Some(Used::NatPmp)) => {
                self.write_natpmp_map(0);
                self.send_udp(now_ms, UdpStep::Delete, 0);
            }
            _ => self.finish(),
        }
    }

    /// The driver's answer to [`Io::Route`]: the default route, and our
    /// addresses on the LAN interfaces to search from (the route's own
    /// address is always searched from; at most
    /// [`SEARCH_INTERFACES_MAX`] are used).
    pub fn set_route(&mut self, now_ms: u64, route: Option<Route>, lan: &[Ipv4Addr]) {
        if self.phase != Phase::Route {
            return;
        }
        self.route = route;
        self.search_from.clear();
        let own = route.map(|r| r.local);
        for address in own.iter().chain(lan) {
            if !self.search_from.contains(address) && self.search_from.push(*address).is_err() {
                break;
            }
        }
        self.report.gateway = route.map(|r| r.gateway);
        self.start_method(now_ms);
    }

    /// The driver's answer to [`Io::Http`].
    pub fn handle_http(&mut self, now_ms: u64, outcome: HttpOutcome<'_>) {
        let Phase::Http(step) = self.phase else {
            return;
        };
        match step {
            HttpStep::Describe => self.on_description(now_ms, outcome),
            HttpStep::Delete => self.finish(),
            _ => {
                let reply = match outcome {
                    HttpOutcome::Response { status, body, .. } => {
                        match soap::parse_response(&self.last_action(), status, body) {
                            Ok(reply) => Ok(reply),
                            Err(_) => Err(Problem::Soap(status)),
                        }
                    }
                    HttpOutcome::Failed(failure) => Err(Problem::Http(failure)),
                };
                self.on_soap(now_ms, step, reply);
            }
        }
    }

    /// A datagram arrived on the mapper's socket.
    pub fn handle_udp(&mut self, now_ms: u64, from: SocketAddrV4, datagram: &[u8]) {
        if from.port() == natpmp::PORT {
            if self.route.is_some_and(|r| r.gateway == *from.ip()) {
                self.on_gateway_datagram(now_ms, datagram);
            }
            return;
        }
        if self.current_method() == Some(Method::Upnp)
            && matches!(
                self.phase,
                Phase::Search | Phase::Http(HttpStep::Describe | HttpStep::StatusInfo)
            )
        {
            self.on_search_response(now_ms, datagram);
        }
    }

    // ----- rounds and methods -----

    fn current_method(&self) -> Option<Method> {
        self.config.methods.get(self.method_index).copied()
    }

    fn on_time(&mut self, now_ms: u64) {
        match self.phase {
            Phase::Wait { at } if now_ms >= at => {
                self.method_index = 0;
                self.round_failure = 0;
                self.phase = Phase::Route;
                self.pending = Some(Pending::Route);
            }
            Phase::Search => self.on_search_time(now_ms),
            Phase::Udp {
                step,
                attempt,
                retry_at,
            } if now_ms >= retry_at => {
                let attempts = if step == UdpStep::Delete {
                    DELETE_ATTEMPTS
                } else {
                    UDP_ATTEMPTS
                };
                if attempt + 1 < attempts {
                    self.rewrite_udp(step);
                    self.send_udp(now_ms, step, attempt + 1);
                } else {
                    self.on_udp_timeout(now_ms, step);
                }
            }
            Phase::Mapped if now_ms >= self.renew_at_ms.min(self.check_at_ms) => {
                self.refresh(now_ms);
            }
            _ => {}
        }
    }

    fn start_method(&mut self, now_ms: u64) {
        let Some(method) = self.current_method() else {
            self.end_round(now_ms);
            return;
        };
        let Some(route) = self.route else {
            self.fail(
                now_ms,
                State::NoGateway,
                None,
                format_args!("no default route to a gateway"),
            );
            return;
        };
        if is_public(route.local) {
            // Nothing to map, and no search goes out of a WAN interface.
            self.report.state = State::PublicAddress;
            self.report.external = Some(SocketAddrV4::new(route.local, self.config.internal_port));
            self.report.internal = self.report.external;
            set_detail(
                &mut self.report.detail,
                format_args!(
                    "this box has the public address {}: no NAT to open",
                    route.local
                ),
            );
            self.end_round(now_ms);
            return;
        }
        match method {
            Method::Upnp => self.start_search(now_ms),
            Method::Pcp => {
                self.nonce = match self.stored {
                    Some(record)
                        if record.gateway == route.gateway
                            && record.internal_port == self.config.internal_port =>
                    {
                        self.external_port = record.external_port;
                        record.nonce
                    }
                    _ => self.random_nonce(),
                };
                self.epoch = None;
                self.write_pcp_map(self.nat_lease_s());
                self.send_udp(now_ms, UdpStep::PcpMap { renew: false }, 0);
            }
            Method::NatPmp => {
                self.epoch = None;
                self.tx_len = natpmp::write_external_address_request(&mut self.tx).unwrap_or(0);
                self.send_udp(now_ms, UdpStep::NatPmpAddress, 0);
            }
        }
    }

    /// Records a failed method (keeping the most telling failure of the
    /// round) and moves to the next method.
    fn fail(&mut self, now_ms: u64, state: State, error: Option<u16>, detail: fmt::Arguments) {
        let priority = match state {
            State::DoubleNat => 3,
            State::Refused => 2,
            _ => 1,
        };
        if priority >= self.round_failure {
            self.round_failure = priority;
            self.round_state = state;
            self.round_error = error;
            set_detail(&mut self.round_detail, detail);
        }
        if state == State::DoubleNat {
            // Every method would meet the same outer NAT.
            self.end_round(now_ms);
            return;
        }
        self.method_index += 1;
        self.start_method(now_ms);
    }

    fn end_round(&mut self, now_ms: u64) {
        if self.round_failure > 0 {
            self.clear_mapping();
            self.report.state = self.round_state;
            self.report.error = self.round_error;
            self.report.detail.clone_from(&self.round_detail);
        }
        self.phase = Phase::Wait {
            at: now_ms.saturating_add(self.config.check_interval_ms),
        };
    }

    fn clear_mapping(&mut self) {
        self.report.method = None;
        self.report.external = None;
        self.report.internal = None;
        self.report.lease_s = 0;
        self.report.expires_ms = None;
    }

    fn finish(&mut self) {
        self.pending = None;
        if self.report.method == Some(Used::Pcp) || self.stored.is_some() {
            self.store_request = Some(None);
            self.stored = None;
        }
        if self.report.state == State::Mapped {
            set_detail(&mut self.report.detail, format_args!("mapping removed"));
        } else {
            self.report.detail.clear();
        }
        self.clear_mapping();
        self.report.state = State::Disabled;
        self.phase = Phase::Stopped;
    }

    /// The mapping was made (or made again): report it and set the timers.
    fn mapped(&mut self, now_ms: u64, used: Used, external: SocketAddrV4, lease_s: u32) {
        let internal = match used {
            Used::IgdV1 | Used::IgdV2 => self.internal_client,
            Used::Pcp | Used::NatPmp => self.route.map_or(Ipv4Addr::UNSPECIFIED, |r| r.local),
        };
        self.report.state = State::Mapped;
        self.report.method = Some(used);
        self.report.internal = Some(SocketAddrV4::new(internal, self.config.internal_port));
        self.report.external = Some(external);
        self.report.lease_s = lease_s;
        self.report.expires_ms =
            (lease_s > 0).then(|| now_ms.saturating_add(u64::from(lease_s) * 1000));
        self.report.error = None;
        self.report.detail.clear();
        self.external_port = external.port();
        self.check_failures = 0;
        self.phase = Phase::Mapped;
        let half_lease = (lease_s > 0).then(|| now_ms.saturating_add(u64::from(lease_s) * 500));
        let check = now_ms.saturating_add(self.config.check_interval_ms);
        match used {
            Used::IgdV1 | Used::IgdV2 => {
                self.renew_at_ms = half_lease.unwrap_or(u64::MAX);
                self.check_at_ms = check;
            }
            // For PCP and NAT-PMP the renewal is the check.
            Used::Pcp | Used::NatPmp => {
                self.renew_at_ms = half_lease.unwrap_or(u64::MAX).min(check);
                self.check_at_ms = u64::MAX;
            }
        }
    }

    /// A renewal or check failed to reach the router.
    fn refresh_failed(&mut self, now_ms: u64, detail: fmt::Arguments) {
        self.check_failures += 1;
        if self.check_failures >= CHECK_FAILURES_MAX {
            self.report.state = State::Searching;
            set_detail(&mut self.report.detail, detail);
            self.clear_mapping();
            self.phase = Phase::Wait { at: now_ms };
            return;
        }
        self.phase = Phase::Mapped;
        let next = now_ms.saturating_add(self.config.check_interval_ms);
        self.check_at_ms = self.check_at_ms.min(next);
        self.renew_at_ms = self.renew_at_ms.min(next);
        if matches!(self.report.method, Some(Used::Pcp | Used::NatPmp)) {
            self.check_at_ms = u64::MAX;
        }
    }

    /// Renews or checks a standing mapping, whichever is due.
    fn refresh(&mut self, now_ms: u64) {
        match self.report.method {
            Some(Used::IgdV1 | Used::IgdV2) => {
                if now_ms >= self.renew_at_ms {
                    self.add(HttpStep::Renew);
                } else {
                    let port = self.external_port;
                    self.soap(Action::GetSpecificPortMappingEntry {
                        external_port: port,
                        protocol: Protocol::Tcp,
                    });
                    self.phase = Phase::Http(HttpStep::Check);
                }
            }
            Some(Used::Pcp) => {
                self.write_pcp_map(self.nat_lease_s());
                self.send_udp(now_ms, UdpStep::PcpMap { renew: true }, 0);
            }
            Some(Used::NatPmp) => {
                self.write_natpmp_map(self.nat_lease_s());
                self.send_udp(now_ms, UdpStep::NatPmpMap { renew: true }, 0);
            }
            None => self.phase = Phase::Wait { at: now_ms },
        }
    }

    // ----- UPnP IGD -----

    fn start_search(&mut self, now_ms: u64) {
        self.locations.clear();
        self.location_index = 0;
        self.services.clear();
        self.problem.clear();
        self.search_round = 1;
        self.search_sends_left = self.search_sends();
        self.search_next_round_ms = now_ms.saturating_add(SEARCH_ROUND_MS);
        self.search_deadline_ms = now_ms.saturating_add(SEARCH_MS);
        self.add_attempts = 0;
        self.use_add_any = false;
        self.igd_no_external = false;
        self.igd_external = Ipv4Addr::UNSPECIFIED;
        self.lease_s = self.config.lease_s;
        self.phase = Phase::Search;
        self.on_search_time(now_ms);
    }

    fn on_search_time(&mut self, now_ms: u64) {
        if self.search_round < SEARCH_ROUNDS && now_ms >= self.search_next_round_ms {
            self.search_round += 1;
            self.search_sends_left = self.search_sends();
            self.search_next_round_ms = now_ms.saturating_add(SEARCH_ROUND_MS);
        }
        if self.search_sends_left > 0 {
            let index = usize::from(self.search_sends() - self.search_sends_left);
            self.search_sends_left -= 1;
            let target = SEARCH_TARGETS[index % SEARCH_TARGETS.len()];
            let via = self.search_from.get(index / SEARCH_TARGETS.len()).copied();
            if let (Ok(len), Some(via)) =
                (ssdp::write_msearch(&mut self.tx, target, SEARCH_MX), via)
            {
                self.tx_len = len;
                self.pending = Some(Pending::Udp {
                    to: ssdp::SSDP_GROUP,
                    via,
                });
            }
            return;
        }
        if now_ms >= self.search_deadline_ms {
            self.describe_next(now_ms);
        }
    }

    /// Datagrams of one search round: each target out of each interface.
    fn search_sends(&self) -> u8 {
        (SEARCH_TARGETS.len() * self.search_from.len().max(1)) as u8
    }

    /// True if `url` is on our gateway: an IGD that carries our traffic.
    fn on_gateway(&self, url: &HttpUrl) -> bool {
        self.route.is_some_and(|r| r.gateway == *url.addr.ip())
    }

    fn on_search_response(&mut self, now_ms: u64, datagram: &[u8]) {
        let Some(response) = ssdp::parse_search_response(datagram) else {
            return;
        };
        if !SEARCH_TARGETS.contains(&response.st) && !response.st.contains(":WAN") {
            return;
        }
        let Some(url) = httpc::parse_http_url(response.location) else {
            return;
        };
        let own = self.search_from.contains(url.addr.ip());
        if own || self.locations.contains(&url) || self.locations.is_full() {
            return;
        }
        // The gateway's IGD goes before any other device that answered.
        let at = if self.on_gateway(&url) {
            self.location_index
        } else {
            self.locations.len()
        };
        if self.locations.insert(at, url).is_ok() && self.phase == Phase::Search {
            self.describe_next(now_ms);
        }
    }

    /// Fetches the next description found, or waits for more answers, or
    /// gives UPnP up.
    fn describe_next(&mut self, now_ms: u64) {
        let searching = now_ms < self.search_deadline_ms && self.services.is_empty();
        // Another device than the gateway is tried only when the gateway's
        // IGD did not answer the whole search.
        let next = self.locations.get(self.location_index);
        if searching && next.is_some_and(|url| !self.on_gateway(url)) {
            self.phase = Phase::Search;
            return;
        }
        if let Some(url) = self.locations.get(self.location_index) {
            self.location_index += 1;
            let to = url.addr;
            self.tx_len = httpc::write_get(&mut self.tx, url).unwrap_or(0);
            self.pending = Some(Pending::Http { to });
            self.phase = Phase::Http(HttpStep::Describe);
            return;
        }
        // Wait for more answers unless an IGD has already answered.
        if searching {
            self.phase = Phase::Search;
            return;
        }
        if !self.igd_external.is_unspecified() && !is_public(self.igd_external) {
            let external = self.igd_external;
            self.fail(
                now_ms,
                State::DoubleNat,
                None,
                format_args!(
                    "the router's external address {external} is private or CGNAT: \
                     another NAT is in front of it, so peers cannot reach us"
                ),
            );
            return;
        }
        if self.igd_no_external {
            self.fail(
                now_ms,
                State::DoubleNat,
                None,
                format_args!(
                    "the router is connected but has no public external address (its WAN \
                     address is private or CGNAT): another NAT is in front of it, so peers \
                     cannot reach us"
                ),
            );
            return;
        }
        let mut problem: heapless::String<{ super::DETAIL_BYTES_MAX }> = heapless::String::new();
        core::mem::swap(&mut problem, &mut self.problem);
        if problem.is_empty() {
            self.fail(
                now_ms,
                State::NoGateway,
                None,
                format_args!("UPnP: no Internet gateway device answered the search"),
            );
        } else {
            self.fail(
                now_ms,
                State::NoGateway,
                None,
                format_args!("UPnP: {problem}"),
            );
        }
    }

    fn note_problem(&mut self, text: fmt::Arguments) {
        set_detail(&mut self.problem, text);
    }

    fn on_description(&mut self, now_ms: u64, outcome: HttpOutcome<'_>) {
        let location = self.locations[self.location_index - 1].addr;
        match outcome {
            HttpOutcome::Response {
                status: 200,
                body,
                local,
            } => {
                let url = &self.locations[self.location_index - 1];
                match desc::parse_description(body, url) {
                    Ok(description) => {
                        self.services = description.services;
                        self.service_index = 0;
                        self.internal_client = local;
                        self.query_service();
                        return;
                    }
                    Err(error) => {
                        self.note_problem(format_args!("description at {location}: {error}"))
                    }
                }
            }
            HttpOutcome::Response { status, .. } => {
                self.note_problem(format_args!("description at {location}: HTTP {status}"))
            }
            HttpOutcome::Failed(failure) => {
                self.note_problem(format_args!("description at {location}: {failure}"))
            }
        }
        self.describe_next(now_ms);
    }

    fn service(&self) -> &Service {
        &self.services[self.service_index]
    }

    fn query_service(&mut self) {
        self.igd_connected = false;
        self.soap(Action::GetStatusInfo);
        self.phase = Phase::Http(HttpStep::StatusInfo);
    }

    fn next_service(&mut self, now_ms: u64) {
        self.service_index += 1;
        if self.service_index < self.services.len() {
            self.query_service();
        } else {
            self.describe_next(now_ms);
        }
    }

    /// The SOAP action the outstanding request carries, rebuilt from state
    /// (so the reply can be parsed for it).
    fn last_action(&self) -> Action<'static> {
        let external_port = self.external_port;
        let mapping = |any: bool| {
            let fields = (
                external_port,
                Protocol::Tcp,
                self.config.internal_port,
                self.internal_client,
                self.lease_s,
            );
            if any {
                Action::AddAnyPortMapping {
                    external_port: fields.0,
                    protocol: fields.1,
                    internal_port: fields.2,
                    internal_client: fields.3,
                    description: "",
                    lease_s: fields.4,
                }
            } else {
                Action::AddPortMapping {
                    external_port: fields.0,
                    protocol: fields.1,
                    internal_port: fields.2,
                    internal_client: fields.3,
                    description: "",
                    lease_s: fields.4,
                }
            }
        };
        match self.phase {
            Phase::Http(HttpStep::StatusInfo) => Action::GetStatusInfo,
            Phase::Http(HttpStep::ExternalIp) => Action::GetExternalIPAddress,
            Phase::Http(HttpStep::Add | HttpStep::Renew) => mapping(self.use_add_any),
            Phase::Http(HttpStep::Check) => Action::GetSpecificPortMappingEntry {
                external_port,
                protocol: Protocol::Tcp,
            },
            _ => Action::DeletePortMapping {
                external_port,
                protocol: Protocol::Tcp,
            },
        }
    }

    /// Writes a SOAP request for `action` to the chosen service.
    fn soap(&mut self, action: Action<'_>) {
        let Some(service) = self.services.get(self.service_index) else {
            self.tx_len = 0;
            return;
        };
        let to = service.control.addr;
        self.tx_len = soap::write_request(
            &mut self.tx,
            &service.control,
            &service.service_type,
            &action,
        )
        .unwrap_or(0);
        self.pending = Some(Pending::Http { to });
    }

    fn used_igd(&self) -> Used {
        if self.service().version >= 2 {
            Used::IgdV2
        } else {
            Used::IgdV1
        }
    }

    /// Asks for the mapping (AddPortMapping, or AddAnyPortMapping after a
    /// conflict on IGDv2).
    fn add(&mut self, step: HttpStep) {
        let fields = (
            self.external_port,
            self.config.internal_port,
            self.internal_client,
            self.lease_s,
        );
        let label = self.config.label.clone();
        let action = if self.use_add_any {
            Action::AddAnyPortMapping {
                external_port: fields.0,
                protocol: Protocol::Tcp,
                internal_port: fields.1,
                internal_client: fields.2,
                description: &label,
                lease_s: fields.3,
            }
        } else {
            Action::AddPortMapping {
                external_port: fields.0,
                protocol: Protocol::Tcp,
                internal_port: fields.1,
                internal_client: fields.2,
                description: &label,
                lease_s: fields.3,
            }
        };
        self.soap(action);
        self.phase = Phase::Http(step);
    }

    fn on_soap(&mut self, now_ms: u64, step: HttpStep, reply: Result<Reply, Problem>) {
        match step {
            HttpStep::StatusInfo => match reply {
                Ok(Reply::StatusInfo { connected: false }) => {
                    self.note_problem(format_args!("the router's WAN connection is down"));
                    self.next_service(now_ms);
                }
                // Connected, or the router does not implement it: go on.
                Ok(reply) => {
                    self.igd_connected = reply == Reply::StatusInfo { connected: true };
                    self.soap(Action::GetExternalIPAddress);
                    self.phase = Phase::Http(HttpStep::ExternalIp);
                }
                Err(Problem::Soap(_)) => {
                    self.soap(Action::GetExternalIPAddress);
                    self.phase = Phase::Http(HttpStep::ExternalIp);
                }
                Err(problem) => {
                    self.note_problem(format_args!("GetStatusInfo: {problem}"));
                    self.next_service(now_ms);
                }
            },
            HttpStep::ExternalIp => match reply {
                Ok(Reply::ExternalIp(Some(address))) if is_public(address) => {
                    self.igd_external = address;
                    self.add_attempts = 0;
                    self.add(HttpStep::Add);
                }
                Ok(Reply::ExternalIp(Some(address))) => {
                    self.igd_external = address;
                    self.next_service(now_ms);
                }
                Ok(_) => {
                    self.igd_no_external |= self.igd_connected;
                    self.note_problem(format_args!("the router has no external address"));
                    self.next_service(now_ms);
                }
                Err(problem) => {
                    self.note_problem(format_args!("GetExternalIPAddress: {problem}"));
                    self.next_service(now_ms);
                }
            },
            HttpStep::Add | HttpStep::Renew => self.on_add_reply(now_ms, step, reply),
            HttpStep::Check => match reply {
                Ok(Reply::Entry {
                    internal_client,
                    internal_port,
                    ..
                }) if internal_client == Some(self.internal_client)
                    && internal_port == self.config.internal_port =>
                {
                    self.report.checks += 1;
                    self.check_failures = 0;
                    self.phase = Phase::Mapped;
                    self.check_at_ms = now_ms.saturating_add(self.config.check_interval_ms);
                }
                // Gone (714), or now someone else's: the router forgot us.
                Ok(Reply::Entry { .. }) | Ok(Reply::Fault { code: 714 }) => {
                    self.report.remaps += 1;
                    self.add_attempts = 0;
                    self.add(HttpStep::Add);
                }
                // A router without the query: renewing is the check.
                Ok(_) | Err(Problem::Soap(_)) => self.add(HttpStep::Renew),
                Err(problem) => self.refresh_failed(
                    now_ms,
                    format_args!("the router stopped answering UPnP: {problem}"),
                ),
            },
            HttpStep::Describe | HttpStep::Delete => {}
        }
    }

    fn on_add_reply(&mut self, now_ms: u64, step: HttpStep, reply: Result<Reply, Problem>) {
        let external = self.igd_external;
        match reply {
            Ok(Reply::Added) | Ok(Reply::AddedAny { .. }) => {
                let port = match reply {
                    Ok(Reply::AddedAny { external_port }) if external_port != 0 => external_port,
                    _ => self.external_port,
                };
                let used = self.used_igd();
                if step == HttpStep::Renew {
                    self.report.renewals += 1;
                } else {
                    self.report.maps += 1;
                }
                self.mapped(
                    now_ms,
                    used,
                    SocketAddrV4::new(external, port),
                    self.lease_s,
                );
            }
            Ok(Reply::Fault { code }) => self.on_add_fault(now_ms, step, code),
            Ok(_) | Err(Problem::Soap(_)) => self.add_failed(
                now_ms,
                step,
                None,
                format_args!("unreadable answer to AddPortMapping"),
            ),
            Err(problem) => {
                if step == HttpStep::Renew {
                    self.refresh_failed(
                        now_ms,
                        format_args!("the router stopped answering UPnP: {problem}"),
                    );
                } else {
                    self.add_failed(
                        now_ms,
                        step,
                        None,
                        format_args!("AddPortMapping: {problem}"),
                    );
                }
            }
        }
    }

    /// The IGD error codes of DESIGN §5 and what each one makes us do.
    fn on_add_fault(&mut self, now_ms: u64, step: HttpStep, code: u16) {
        self.add_attempts += 1;
        if self.add_attempts >= ADD_ATTEMPTS_MAX {
            self.add_failed(
                now_ms,
                step,
                Some(code),
                format_args!("UPnP error {code} ({})", soap::error_meaning(code)),
            );
            return;
        }
        match code {
            // Conflict: another host holds the port. IGDv2 picks one for us.
            718 if self.used_igd() == Used::IgdV2 && !self.use_add_any => {
                self.use_add_any = true;
                self.add(HttpStep::Add);
            }
            718 | 727 | 729 => {
                self.external_port = self.random_port();
                self.add(HttpStep::Add);
            }
            // No AddAnyPortMapping after all (an IGDv1 action set).
            401 if self.use_add_any => {
                self.use_add_any = false;
                self.external_port = self.random_port();
                self.add(HttpStep::Add);
            }
            // Only permanent leases (725), or a lease refused as invalid.
            725 | 402 if self.lease_s != 0 => {
                self.lease_s = 0;
                self.add(step);
            }
            724 if self.external_port != self.config.internal_port => {
                self.external_port = self.config.internal_port;
                self.add(step);
            }
            _ => self.add_failed(
                now_ms,
                step,
                Some(code),
                format_args!("UPnP error {code} ({})", soap::error_meaning(code)),
            ),
        }
    }

    fn add_failed(
        &mut self,
        now_ms: u64,
        step: HttpStep,
        code: Option<u16>,
        detail: fmt::Arguments,
    ) {
        if step == HttpStep::Renew {
            self.refresh_failed(now_ms, detail);
        } else {
            self.fail(now_ms, State::Refused, code, detail);
        }
    }

    // ----- PCP and NAT-PMP -----

    fn nat_lease_s(&self) -> u32 {
        if self.config.lease_s == 0 {
            NAT_PERMANENT_LEASE_S
        } else {
            self.config.lease_s
        }
    }

    fn write_pcp_map(&mut self, lifetime_s: u32) {
        let client = self.route.map_or(Ipv4Addr::UNSPECIFIED, |r| r.local);
        let request = MapRequest {
            nonce: self.nonce,
            protocol: MapProtocol::Tcp,
            internal_port: self.config.internal_port,
            suggested_external_port: self.external_port,
            suggested_external_address: None,
            lifetime_s,
            client: IpAddr::V4(client),
            prefer_failure: false,
        };
        self.tx_len = pcp::write_map(&mut self.tx, &request).unwrap_or(0);
    }

    fn write_natpmp_map(&mut self, lifetime_s: u32) {
        let external = if lifetime_s == 0 {
            0
        } else {
            self.external_port
        };
        self.tx_len = natpmp::write_map_request(
            &mut self.tx,
            MapProtocol::Tcp,
            self.config.internal_port,
            external,
            lifetime_s,
        )
        .unwrap_or(0);
    }

    fn rewrite_udp(&mut self, step: UdpStep) {
        match step {
            UdpStep::PcpMap { .. } => self.write_pcp_map(self.nat_lease_s()),
            UdpStep::NatPmpAddress => {
                self.tx_len = natpmp::write_external_address_request(&mut self.tx).unwrap_or(0)
            }
            UdpStep::NatPmpMap { .. } => self.write_natpmp_map(self.nat_lease_s()),
            UdpStep::Delete => match self.report.method {
                Some(Used::Pcp) => self.write_pcp_map(0),
                _ => self.write_natpmp_map(0),
            },
        }
    }

    fn send_udp(&mut self, now_ms: u64, step: UdpStep, attempt: u32) {
        let Some(route) = self.route else {
            self.phase = Phase::Wait { at: now_ms };
            return;
        };
        self.pending = Some(Pending::Udp {
            to: SocketAddrV4::new(route.gateway, natpmp::PORT),
            via: route.local,
        });
        self.phase = Phase::Udp {
            step,
            attempt,
            retry_at: now_ms.saturating_add(natpmp::retry_delay_ms(attempt)),
        };
    }

    fn on_udp_timeout(&mut self, now_ms: u64, step: UdpStep) {
        let gateway = self.route.map_or(Ipv4Addr::UNSPECIFIED, |r| r.gateway);
        match step {
            UdpStep::Delete => self.finish(),
            UdpStep::PcpMap { renew: true } | UdpStep::NatPmpMap { renew: true } => self
                .refresh_failed(
                    now_ms,
                    format_args!("the gateway {gateway} stopped answering on port 5351"),
                ),
            UdpStep::PcpMap { renew: false } => self.fail(
                now_ms,
                State::NoGateway,
                None,
                format_args!("PCP: no answer from {gateway}:5351"),
            ),
            UdpStep::NatPmpAddress | UdpStep::NatPmpMap { renew: false } => self.fail(
                now_ms,
                State::NoGateway,
                None,
                format_args!("NAT-PMP: no answer from {gateway}:5351"),
            ),
        }
    }

    /// Notes the server's epoch; true if it went backwards (a restart that
    /// lost our mapping, RFC 6887 §8.5 / RFC 6886 §3.6).
    fn epoch_restarted(&mut self, now_ms: u64, epoch_s: u32) -> bool {
        let restarted = self
            .epoch
            .is_some_and(|(previous, at)| !pcp::epoch_is_consistent(previous, at, epoch_s, now_ms));
        self.epoch = Some((epoch_s, now_ms));
        restarted
    }

    fn on_gateway_datagram(&mut self, now_ms: u64, datagram: &[u8]) {
        let Phase::Udp { step, .. } = self.phase else {
            return;
        };
        match step {
            UdpStep::Delete => {
                let ours = match self.report.method {
                    Some(Used::Pcp) => pcp::parse_response(datagram)
                        .is_ok_and(|r| r.map.is_some_and(|m| m.nonce == self.nonce)),
                    _ => natpmp::parse_response(datagram).is_ok(),
                };
                if ours {
                    self.finish();
                }
            }
            UdpStep::PcpMap { renew } => self.on_pcp(now_ms, renew, datagram),
            UdpStep::NatPmpAddress => self.on_natpmp_address(now_ms, datagram),
            UdpStep::NatPmpMap { renew } => self.on_natpmp_map(now_ms, renew, datagram),
        }
    }

    fn on_pcp(&mut self, now_ms: u64, renew: bool, datagram: &[u8]) {
        let response = match pcp::parse_response(datagram) {
            Ok(response) => response,
            Err(pcp::PcpError::UnsupportedVersion { server_version }) if !renew => {
                let gateway = self.route.map_or(Ipv4Addr::UNSPECIFIED, |r| r.gateway);
                self.fail(
                    now_ms,
                    State::NoGateway,
                    None,
                    format_args!(
                        "PCP: the gateway {gateway} speaks version {server_version} only \
                         (NAT-PMP)"
                    ),
                );
                return;
            }
            Err(_) => return,
        };
        let Some(map) = response.map.filter(|m| m.nonce == self.nonce) else {
            return;
        };
        if response.result != 0 {
            // A refusal that still names a private or CGNAT external
            // address (miniupnpd on such a WAN) is a double NAT.
            if let IpAddr::V4(external) = map.external_address {
                if !external.is_unspecified() && !is_public(external) && !renew {
                    self.nat_double(now_ms, external);
                    return;
                }
            }
            let code = u16::from(response.result);
            let name =
                pcp::ResultCode::from_u8(response.result).map_or("unknown result", |r| r.name());
            self.nat_refused(
                now_ms,
                renew,
                code,
                format_args!("PCP: the gateway refused the mapping: result {code} {name}"),
            );
            return;
        }
        let IpAddr::V4(external) = map.external_address else {
            return;
        };
        if self.epoch_restarted(now_ms, response.epoch_s) {
            self.report.remaps += 1;
        }
        if !is_public(external) {
            self.nat_double(now_ms, external);
            return;
        }
        if renew {
            self.report.renewals += 1;
        } else {
            self.report.maps += 1;
        }
        let gateway = self.route.map_or(Ipv4Addr::UNSPECIFIED, |r| r.gateway);
        let record = PcpRecord {
            nonce: self.nonce,
            gateway,
            internal_port: self.config.internal_port,
            external_port: map.external_port,
        };
        if self.stored != Some(record) {
            self.stored = Some(record);
            self.store_request = Some(Some(record));
        }
        self.mapped(
            now_ms,
            Used::Pcp,
            SocketAddrV4::new(external, map.external_port),
            response.lifetime_s,
        );
    }

    /// The gateway refused a PCP or NAT-PMP request: a failed method, or
    /// for a renewal a failed check.
    fn nat_refused(&mut self, now_ms: u64, renew: bool, code: u16, detail: fmt::Arguments) {
        if renew {
            self.refresh_failed(now_ms, detail);
        } else {
            self.fail(now_ms, State::Refused, Some(code), detail);
        }
    }

    /// PCP or NAT-PMP mapped us on a private or CGNAT address: give the
    /// mapping back and report the double NAT.
    fn nat_double(&mut self, now_ms: u64, external: Ipv4Addr) {
        self.fail(
            now_ms,
            State::DoubleNat,
            None,
            format_args!(
                "the router's external address {external} is private or CGNAT: another NAT \
                 is in front of it, so peers cannot reach us"
            ),
        );
    }

    fn on_natpmp_address(&mut self, now_ms: u64, datagram: &[u8]) {
        match natpmp::parse_response(datagram) {
            Ok(natpmp::Response::ExternalAddress { epoch_s, address }) => {
                self.epoch_restarted(now_ms, epoch_s);
                if !is_public(address) {
                    self.nat_double(now_ms, address);
                    return;
                }
                self.nat_external = address;
                self.write_natpmp_map(self.nat_lease_s());
                self.send_udp(now_ms, UdpStep::NatPmpMap { renew: false }, 0);
            }
            Err(error @ natpmp::NatPmpError::Failure(code)) => self.fail(
                now_ms,
                State::Refused,
                Some(code),
                format_args!("the gateway refused: {error}"),
            ),
            _ => {}
        }
    }

    fn on_natpmp_map(&mut self, now_ms: u64, renew: bool, datagram: &[u8]) {
        match natpmp::parse_response(datagram) {
            Ok(natpmp::Response::Map {
                epoch_s,
                protocol: MapProtocol::Tcp,
                internal_port,
                external_port,
                lifetime_s,
            }) if internal_port == self.config.internal_port => {
                if self.epoch_restarted(now_ms, epoch_s) {
                    self.report.remaps += 1;
                }
                if renew {
                    self.report.renewals += 1;
                } else {
                    self.report.maps += 1;
                }
                let external = SocketAddrV4::new(self.nat_external, external_port);
                self.mapped(now_ms, Used::NatPmp, external, lifetime_s);
            }
            Err(error @ natpmp::NatPmpError::Failure(code)) => self.nat_refused(
                now_ms,
                renew,
                code,
                format_args!("the gateway refused the mapping: {error}"),
            ),
            _ => {}
        }
    }

    // ----- randomness -----

    fn random_nonce(&mut self) -> [u8; pcp::NONCE_BYTES] {
        let mut nonce = [0u8; pcp::NONCE_BYTES];
        for chunk in nonce.chunks_mut(4) {
            let word = self.rng.next_u32().to_be_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        nonce
    }

    fn random_port(&mut self) -> u16 {
        let span = u32::from(u16::MAX - EPHEMERAL_PORT_MIN) + 1;
        EPHEMERAL_PORT_MIN + (self.rng.next_u32() % span) as u16
    }
}

/// Why a SOAP exchange gave no reply.
#[derive(Clone, Copy, Debug)]
enum Problem {
    Http(HttpFailure),
    /// An answer that is not a SOAP reply (HTTP status given).
    Soap(u16),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Http(failure) => write!(f, "{failure}"),
            Problem::Soap(status) => write!(f, "unreadable SOAP answer (HTTP {status})"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The mapper against a scripted router: every answer below is what
    //! miniupnpd 2.3.1 sends in the same situation (see tests/tests/portmap.rs
    //! for the real thing).

    use super::*;

    const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
    const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);
    const WAN: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 2);
    const CHECK_MS: u64 = 2000;

    fn config(methods: &[Method]) -> Config {
        let mut list = heapless::Vec::new();
        for method in methods {
            list.push(*method).unwrap();
        }
        Config {
            methods: list,
            internal_port: 7144,
            external_port: 0,
            lease_s: 3600,
            check_interval_ms: CHECK_MS,
            label: heapless::String::try_from("ringcast peer").unwrap(),
        }
    }

    /// What the mapper asked for, owned.
    #[derive(Debug, PartialEq, Eq)]
    enum Asked {
        Route,
        Udp(SocketAddrV4, Vec<u8>),
        Http(SocketAddrV4, String),
        Store(Option<PcpRecord>),
    }

    fn drain(mapper: &mut Mapper, now: u64) -> Vec<Asked> {
        let mut asked = Vec::new();
        while let Some(io) = mapper.poll(now) {
            asked.push(match io {
                Io::Route => Asked::Route,
                Io::Udp { to, bytes, .. } => Asked::Udp(to, bytes.to_vec()),
                Io::Http { to, request } => {
                    Asked::Http(to, String::from_utf8_lossy(request).into_owned())
                }
                Io::Store(record) => Asked::Store(record),
            });
            if asked.len() > 16 {
                break;
            }
        }
        asked
    }

    /// Polls until the mapper asks for HTTP, answering a route request.
    fn next_http(mapper: &mut Mapper, now: u64) -> String {
        for asked in drain(mapper, now) {
            if let Asked::Http(_, request) = asked {
                return request;
            }
        }
        panic!("no HTTP request at {now} ms (phase {:?})", mapper.phase);
    }

    fn respond(mapper: &mut Mapper, now: u64, status: u16, body: &str) {
        mapper.handle_http(
            now,
            HttpOutcome::Response {
                status,
                body: body.as_bytes(),
                local: LOCAL,
            },
        );
    }

    fn soap_ok(action: &str, fields: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">\
             <s:Body><u:{action}Response xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\">\
             {fields}</u:{action}Response></s:Body></s:Envelope>"
        )
    }

    fn soap_fault(code: u16) -> String {
        format!(
            "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">\
             <s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring>\
             <detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}\
             </errorCode><errorDescription>x</errorDescription></UPnPError></detail></s:Fault>\
             </s:Body></s:Envelope>"
        )
    }

    fn description(version: u8) -> String {
        format!(
            "<?xml version=\"1.0\"?><root xmlns=\"urn:schemas-upnp-org:device-1-0\"><device>\
             <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:{version}</deviceType>\
             <deviceList><device><deviceList><device><serviceList><service>\
             <serviceType>urn:schemas-upnp-org:service:WANIPConnection:{version}</serviceType>\
             <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>\
             <controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL>\
             <SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList></device></deviceList>\
             </device></deviceList></device></root>"
        )
    }

    fn search_answer() -> Vec<u8> {
        b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n\
          ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
          USN: uuid:3f1e0c3a-1b2c-4d5e-8f90-0123456789ab::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
          EXT:\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\n\
          LOCATION: http://192.168.77.1:5000/rootDesc.xml\r\n\r\n"
            .to_vec()
    }

    fn route() -> Option<Route> {
        Some(Route {
            gateway: GATEWAY,
            local: LOCAL,
        })
    }

    /// Starts a UPnP mapper up to the description request.
    fn upnp_until_description(version: u8) -> Mapper {
        let mut mapper = Mapper::new(config(&[Method::Upnp, Method::Pcp]), None, 1);
        assert_eq!(drain(&mut mapper, 0), vec![Asked::Route]);
        mapper.set_route(0, route(), &[]);
        let searches = drain(&mut mapper, 0);
        assert_eq!(
            searches.len(),
            SEARCH_TARGETS.len(),
            "one M-SEARCH per target"
        );
        for (asked, target) in searches.iter().zip(SEARCH_TARGETS) {
            let Asked::Udp(to, bytes) = asked else {
                panic!("{asked:?}")
            };
            assert_eq!(*to, ssdp::SSDP_GROUP);
            let text = String::from_utf8_lossy(bytes);
            assert!(text.starts_with("M-SEARCH * HTTP/1.1\r\n"), "{text}");
            assert!(text.contains(&format!("ST: {target}\r\n")), "{text}");
        }
        mapper.handle_udp(20, SocketAddrV4::new(GATEWAY, 1900), &search_answer());
        // The same answer again (another search target) is not fetched twice.
        mapper.handle_udp(21, SocketAddrV4::new(GATEWAY, 1900), &search_answer());
        let get = next_http(&mut mapper, 21);
        assert!(get.starts_with("GET /rootDesc.xml HTTP/1.1\r\n"), "{get}");
        respond(&mut mapper, 30, 200, &description(version));
        let status = next_http(&mut mapper, 30);
        assert!(status.contains("#GetStatusInfo\""), "{status}");
        respond(
            &mut mapper,
            31,
            200,
            &soap_ok(
                "GetStatusInfo",
                "<NewConnectionStatus>Connected</NewConnectionStatus>\
                 <NewLastConnectionError>ERROR_NONE</NewLastConnectionError><NewUptime>5</NewUptime>",
            ),
        );
        mapper
    }

    fn answer_external(mapper: &mut Mapper, now: u64, address: &str) -> String {
        let request = next_http(mapper, now);
        assert!(request.contains("#GetExternalIPAddress\""), "{request}");
        respond(
            mapper,
            now,
            200,
            &soap_ok(
                "GetExternalIPAddress",
                &format!("<NewExternalIPAddress>{address}</NewExternalIPAddress>"),
            ),
        );
        next_http(mapper, now)
    }

    #[test]
    fn igd2_maps_checks_remaps_after_router_restart_and_deletes() {
        let mut mapper = upnp_until_description(2);
        let add = answer_external(&mut mapper, 32, "11.0.0.2");
        assert!(add.contains("#AddPortMapping\""), "{add}");
        assert!(
            add.contains("<NewInternalClient>192.168.77.10</NewInternalClient>"),
            "{add}"
        );
        assert!(
            add.contains("<NewLeaseDuration>3600</NewLeaseDuration>"),
            "{add}"
        );
        respond(&mut mapper, 40, 200, &soap_ok("AddPortMapping", ""));
        let report = mapper.report().clone();
        assert_eq!(report.state, State::Mapped);
        assert_eq!(report.method, Some(Used::IgdV2));
        assert_eq!(report.external, Some(SocketAddrV4::new(WAN, 7144)));
        assert_eq!(report.internal, Some(SocketAddrV4::new(LOCAL, 7144)));
        assert!(report.reachable());
        assert_eq!(mapper.next_deadline(), Some(40 + CHECK_MS));
        // The check finds it in place.
        let check = next_http(&mut mapper, 40 + CHECK_MS);
        assert!(check.contains("#GetSpecificPortMappingEntry\""), "{check}");
        respond(
            &mut mapper,
            40 + CHECK_MS,
            200,
            &soap_ok(
                "GetSpecificPortMappingEntry",
                "<NewInternalPort>7144</NewInternalPort><NewInternalClient>192.168.77.10\
                 </NewInternalClient><NewEnabled>1</NewEnabled><NewPortMappingDescription>x\
                 </NewPortMappingDescription><NewLeaseDuration>3590</NewLeaseDuration>",
            ),
        );
        assert_eq!(mapper.report().checks, 1);
        // The router restarted and forgot it: 714, and it is made again.
        let now = 40 + 2 * CHECK_MS;
        let _ = next_http(&mut mapper, now);
        respond(&mut mapper, now, 500, &soap_fault(714));
        let again = next_http(&mut mapper, now);
        assert!(again.contains("#AddPortMapping\""), "{again}");
        respond(&mut mapper, now, 200, &soap_ok("AddPortMapping", ""));
        assert_eq!(mapper.report().remaps, 1);
        assert_eq!(mapper.report().state, State::Mapped);
        // Renewal at half the lease (counted from the last add).
        let half = now + 1_800_000;
        let mut renewed = false;
        let mut now = now;
        while now <= half + CHECK_MS {
            now = mapper.next_deadline().unwrap();
            let request = next_http(&mut mapper, now);
            if request.contains("#AddPortMapping\"") {
                respond(&mut mapper, now, 200, &soap_ok("AddPortMapping", ""));
                renewed = true;
                break;
            }
            respond(
                &mut mapper,
                now,
                200,
                &soap_ok(
                    "GetSpecificPortMappingEntry",
                    "<NewInternalPort>7144</NewInternalPort><NewInternalClient>192.168.77.10\
                     </NewInternalClient><NewEnabled>1</NewEnabled>",
                ),
            );
        }
        assert!(renewed && now >= half, "renewed at {now}");
        assert_eq!(mapper.report().renewals, 1);
        // Exit: delete.
        mapper.shutdown(now);
        let delete = next_http(&mut mapper, now);
        assert!(delete.contains("#DeletePortMapping\""), "{delete}");
        assert!(
            delete.contains("<NewExternalPort>7144</NewExternalPort>"),
            "{delete}"
        );
        respond(&mut mapper, now, 200, &soap_ok("DeletePortMapping", ""));
        assert!(drain(&mut mapper, now).is_empty());
        assert!(mapper.is_finished());
    }

    #[test]
    fn conflict_on_igd2_uses_add_any_and_reports_the_given_port() {
        let mut mapper = upnp_until_description(2);
        let _ = answer_external(&mut mapper, 32, "11.0.0.2");
        respond(&mut mapper, 33, 500, &soap_fault(718));
        let any = next_http(&mut mapper, 33);
        assert!(any.contains("#AddAnyPortMapping\""), "{any}");
        respond(
            &mut mapper,
            34,
            200,
            &soap_ok(
                "AddAnyPortMapping",
                "<NewReservedPort>7145</NewReservedPort>",
            ),
        );
        assert_eq!(mapper.report().external, Some(SocketAddrV4::new(WAN, 7145)));
    }

    #[test]
    fn conflict_on_igd1_tries_another_port_with_add_port_mapping() {
        let mut mapper = upnp_until_description(1);
        let _ = answer_external(&mut mapper, 32, "11.0.0.2");
        respond(&mut mapper, 33, 500, &soap_fault(718));
        let retry = next_http(&mut mapper, 33);
        assert!(retry.contains("#AddPortMapping\""), "{retry}");
        assert!(!retry.contains("<NewExternalPort>7144<"), "{retry}");
        respond(&mut mapper, 34, 200, &soap_ok("AddPortMapping", ""));
        let report = mapper.report();
        assert_eq!(report.method, Some(Used::IgdV1));
        let port = report.external.unwrap().port();
        assert!(port != 7144 && port >= EPHEMERAL_PORT_MIN, "{port}");
    }

    #[test]
    fn only_permanent_leases_falls_back_to_lease_zero() {
        let mut mapper = upnp_until_description(2);
        let _ = answer_external(&mut mapper, 32, "11.0.0.2");
        respond(&mut mapper, 33, 500, &soap_fault(725));
        let retry = next_http(&mut mapper, 33);
        assert!(
            retry.contains("<NewLeaseDuration>0</NewLeaseDuration>"),
            "{retry}"
        );
        respond(&mut mapper, 34, 200, &soap_ok("AddPortMapping", ""));
        assert_eq!(mapper.report().lease_s, 0);
        assert_eq!(mapper.report().lease_left_s(1_000_000), 0);
        assert_eq!(
            mapper.renew_at_ms,
            u64::MAX,
            "a permanent mapping is only checked"
        );
    }

    #[test]
    fn cgnat_router_is_double_nat_and_nothing_is_added() {
        // miniupnpd answers an empty external address on a 100.64/10 WAN.
        let mut mapper = upnp_until_description(2);
        let request = next_http(&mut mapper, 32);
        assert!(request.contains("#GetExternalIPAddress\""));
        respond(
            &mut mapper,
            32,
            200,
            &soap_ok(
                "GetExternalIPAddress",
                "<NewExternalIPAddress></NewExternalIPAddress>",
            ),
        );
        let asked = drain(&mut mapper, 33);
        assert!(
            !asked.iter().any(|a| matches!(a, Asked::Http(..))),
            "{asked:?}"
        );
        assert_eq!(mapper.report().state, State::DoubleNat);
        assert!(!mapper.report().reachable());
        // A private address named outright is a double NAT too.
        let mut mapper = upnp_until_description(2);
        let asked = answer_external_then_drain(&mut mapper, "100.64.0.2");
        assert!(asked.is_empty(), "{asked:?}");
        assert_eq!(mapper.report().state, State::DoubleNat);
        assert!(mapper.report().detail.contains("100.64.0.2"));
        // The next round waits one check interval.
        assert_eq!(mapper.next_deadline(), Some(32 + CHECK_MS));
    }

    fn answer_external_then_drain(mapper: &mut Mapper, address: &str) -> Vec<Asked> {
        let _ = next_http(mapper, 32);
        respond(
            mapper,
            32,
            200,
            &soap_ok(
                "GetExternalIPAddress",
                &format!("<NewExternalIPAddress>{address}</NewExternalIPAddress>"),
            ),
        );
        drain(mapper, 32)
    }

    /// A PCP MAP answer (RFC 6887 §7.2, §11.1) as a router would send it.
    fn pcp_answer(nonce: [u8; 12], result: u8, lifetime: u32, epoch: u32, port: u16) -> Vec<u8> {
        let mut bytes = vec![2, 0x81, 0, result];
        bytes.extend_from_slice(&lifetime.to_be_bytes());
        bytes.extend_from_slice(&epoch.to_be_bytes());
        bytes.extend_from_slice(&[0; 12]);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&[6, 0, 0, 0]);
        bytes.extend_from_slice(&7144u16.to_be_bytes());
        bytes.extend_from_slice(&port.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        bytes.extend_from_slice(&WAN.octets());
        bytes
    }

    fn sent_nonce(asked: &[Asked]) -> [u8; 12] {
        let Some(Asked::Udp(to, bytes)) = asked.iter().find(|a| matches!(a, Asked::Udp(..))) else {
            panic!("no datagram in {asked:?}")
        };
        assert_eq!(*to, SocketAddrV4::new(GATEWAY, natpmp::PORT));
        bytes[24..36].try_into().unwrap()
    }

    #[test]
    fn pcp_keeps_its_nonce_renews_and_deletes_with_it_after_a_restart() {
        let mut mapper = Mapper::new(config(&[Method::Pcp]), None, 7);
        assert_eq!(drain(&mut mapper, 0), vec![Asked::Route]);
        mapper.set_route(0, route(), &[]);
        let nonce = sent_nonce(&drain(&mut mapper, 0));
        let from = SocketAddrV4::new(GATEWAY, natpmp::PORT);
        // An answer from elsewhere or with another nonce is ignored.
        mapper.handle_udp(
            5,
            SocketAddrV4::new(LOCAL, 5351),
            &pcp_answer(nonce, 0, 3600, 10, 7144),
        );
        mapper.handle_udp(5, from, &pcp_answer([9; 12], 0, 3600, 10, 7144));
        assert_eq!(mapper.report().state, State::Searching);
        mapper.handle_udp(5, from, &pcp_answer(nonce, 0, 3600, 10, 7144));
        assert_eq!(mapper.report().method, Some(Used::Pcp));
        let record = PcpRecord {
            nonce,
            gateway: GATEWAY,
            internal_port: 7144,
            external_port: 7144,
        };
        assert_eq!(drain(&mut mapper, 5), vec![Asked::Store(Some(record))]);
        // Renewal (every check interval for PCP) with the same nonce.
        let renewal = drain(&mut mapper, 5 + CHECK_MS);
        assert_eq!(sent_nonce(&renewal), nonce);
        // The router restarted: its epoch went back. Counted as a remap.
        mapper.handle_udp(5 + CHECK_MS, from, &pcp_answer(nonce, 0, 3600, 0, 7144));
        assert_eq!(mapper.report().remaps, 1);
        assert_eq!(mapper.report().renewals, 1);

        // A new run with the kept record uses the same nonce, and deletes
        // with it.
        let mut next = Mapper::new(config(&[Method::Pcp]), Some(record), 99);
        let _ = drain(&mut next, 0);
        next.set_route(0, route(), &[]);
        assert_eq!(sent_nonce(&drain(&mut next, 0)), nonce);
        next.handle_udp(5, from, &pcp_answer(nonce, 0, 3600, 20, 7144));
        assert!(
            drain(&mut next, 5).is_empty(),
            "record unchanged: not written again"
        );
        next.shutdown(10);
        let delete = drain(&mut next, 10);
        assert_eq!(sent_nonce(&delete), nonce);
        let Asked::Udp(_, bytes) = &delete[0] else {
            panic!()
        };
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "lifetime 0 deletes");
        next.handle_udp(12, from, &pcp_answer(nonce, 0, 0, 20, 0));
        assert_eq!(drain(&mut next, 12), vec![Asked::Store(None)]);
        assert!(next.is_finished());
    }

    #[test]
    fn pcp_refusal_naming_a_cgnat_address_is_double_nat() {
        let mut mapper = Mapper::new(config(&[Method::Pcp, Method::NatPmp]), None, 7);
        let _ = drain(&mut mapper, 0);
        mapper.set_route(0, route(), &[]);
        let nonce = sent_nonce(&drain(&mut mapper, 0));
        let mut answer = pcp_answer(nonce, 8, 30, 10, 7144);
        let end = answer.len();
        answer[end - 4..].copy_from_slice(&[100, 64, 0, 2]);
        mapper.handle_udp(5, SocketAddrV4::new(GATEWAY, natpmp::PORT), &answer);
        assert_eq!(mapper.report().state, State::DoubleNat);
        assert!(
            drain(&mut mapper, 6).is_empty(),
            "no NAT-PMP after a double NAT"
        );
    }

    #[test]
    fn silent_network_is_no_gateway_after_bounded_tries_and_retried_later() {
        let mut mapper = Mapper::new(
            config(&[Method::Upnp, Method::Pcp, Method::NatPmp]),
            None,
            3,
        );
        let mut now = 0;
        let mut datagrams = 0;
        let mut route_requests = 0;
        while now < 20_000 {
            for asked in drain(&mut mapper, now) {
                match asked {
                    Asked::Route => {
                        route_requests += 1;
                        mapper.set_route(now, route(), &[]);
                    }
                    Asked::Udp(..) => datagrams += 1,
                    other => panic!("{other:?}"),
                }
            }
            if route_requests > 1 {
                break;
            }
            now = mapper.next_deadline().expect("a deadline while waiting");
        }
        // 2 search rounds of 4, then 4 PCP and 4 NAT-PMP tries.
        assert_eq!(datagrams, 8 + 4 + 4);
        assert_eq!(mapper.report().state, State::NoGateway);
        assert!(
            mapper.report().detail.contains("NAT-PMP"),
            "{}",
            mapper.report().detail
        );
        // 3 s of search, 3.75 s per UDP method, then one check interval.
        assert_eq!(now, 3000 + 3750 + 3750 + CHECK_MS);
    }

    #[test]
    fn searches_every_lan_interface_and_prefers_the_gateways_igd() {
        let mut mapper = Mapper::new(config(&[Method::Upnp]), None, 1);
        let _ = drain(&mut mapper, 0);
        let other_lan = Ipv4Addr::new(10, 9, 0, 5);
        mapper.set_route(0, route(), &[other_lan, LOCAL]);
        let searches = drain(&mut mapper, 0);
        assert_eq!(searches.len(), 2 * SEARCH_TARGETS.len());
        // Another LAN's device answers first: it waits for the gateway.
        let other = String::from_utf8(search_answer())
            .unwrap()
            .replace("192.168.77.1:5000", "10.9.0.1:80");
        mapper.handle_udp(
            10,
            SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 1900),
            other.as_bytes(),
        );
        assert!(drain(&mut mapper, 10).is_empty());
        mapper.handle_udp(20, SocketAddrV4::new(GATEWAY, 1900), &search_answer());
        let get = drain(&mut mapper, 20);
        assert!(
            matches!(&get[..], [Asked::Http(to, _)] if *to == SocketAddrV4::new(GATEWAY, 5000)),
            "{get:?}"
        );
        // The gateway's description fails: the other device is tried when
        // the search is over.
        mapper.handle_http(30, HttpOutcome::Failed(HttpFailure::Refused));
        assert!(drain(&mut mapper, 30).is_empty());
        let _second_round = drain(&mut mapper, SEARCH_ROUND_MS);
        let get = drain(&mut mapper, SEARCH_MS);
        assert!(
            matches!(&get[..], [Asked::Http(to, _)] if *to.ip() == Ipv4Addr::new(10, 9, 0, 1)),
            "{get:?}"
        );
    }

    #[test]
    fn a_public_address_needs_no_mapping_and_sends_nothing() {
        let mut mapper = Mapper::new(config(&[Method::Upnp, Method::Pcp]), None, 3);
        let _ = drain(&mut mapper, 0);
        let public = Route {
            gateway: Ipv4Addr::new(11, 0, 0, 1),
            local: WAN,
        };
        mapper.set_route(0, Some(public), &[]);
        assert!(drain(&mut mapper, 0).is_empty());
        assert_eq!(mapper.report().state, State::PublicAddress);
        assert!(mapper.report().reachable());
    }

    #[test]
    fn no_route_is_no_gateway() {
        let mut mapper = Mapper::new(config(&[Method::Upnp]), None, 3);
        let _ = drain(&mut mapper, 0);
        mapper.set_route(0, None, &[]);
        assert_eq!(mapper.report().state, State::NoGateway);
        assert_eq!(mapper.next_deadline(), Some(CHECK_MS));
    }

    #[test]
    fn hostile_descriptions_end_upnp_and_the_report_names_the_failure() {
        let mut mapper = Mapper::new(config(&[Method::Upnp]), None, 1);
        let _ = drain(&mut mapper, 0);
        mapper.set_route(0, route(), &[]);
        let _ = drain(&mut mapper, 0);
        mapper.handle_udp(20, SocketAddrV4::new(GATEWAY, 1900), &search_answer());
        let _ = next_http(&mut mapper, 20);
        mapper.handle_http(5020, HttpOutcome::Failed(HttpFailure::TimedOut));
        assert_eq!(mapper.report().state, State::NoGateway);
        assert!(
            mapper
                .report()
                .detail
                .contains("no complete answer in time"),
            "{}",
            mapper.report().detail
        );
        // Garbage instead of XML.
        let mut mapper = Mapper::new(config(&[Method::Upnp]), None, 1);
        let _ = drain(&mut mapper, 0);
        mapper.set_route(0, route(), &[]);
        let _ = drain(&mut mapper, 0);
        mapper.handle_udp(20, SocketAddrV4::new(GATEWAY, 1900), &search_answer());
        let _ = next_http(&mut mapper, 20);
        respond(&mut mapper, 3001, 200, "<root><device><<<>>");
        assert_eq!(mapper.report().state, State::NoGateway);
        assert!(mapper.report().detail.contains("description"));
    }
}
