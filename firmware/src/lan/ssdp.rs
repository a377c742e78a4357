//! The SSDP announcer and responder of the DLNA MediaServer (UPnP Device
//! Architecture 1.1 §1.2 advertisement, §1.3 search), without I/O.
//!
//! [`Announcer`] decides every datagram: `NOTIFY ssdp:alive` for each of the
//! five notification types on each LAN interface at start (sent twice, for
//! loss) and again before `max-age` runs out, `ssdp:byebye` for all of them
//! at [`Announcer::shutdown`], and one unicast `200 OK` per matching search
//! target after a random delay within the search's `MX`. The driver feeds it
//! datagrams ([`Announcer::handle_datagram`]) and the interface list
//! ([`Announcer::set_interfaces`]), sends what [`Announcer::poll_transmit`]
//! renders, and sleeps until [`Announcer::next_deadline`] or a datagram.
//!
//! Every answer's `LOCATION` names our address on the subnet the searcher is
//! on; a searcher on no subnet of ours gets nothing. A flood costs one parse
//! per datagram: answers are admitted through a global token bucket and a
//! per-searcher one, into a queue of [`ANSWERS_QUEUED_MAX`]. Nothing here
//! allocates.

use core::fmt::{self, Write};
use core::net::{Ipv4Addr, SocketAddrV4};

use ringcast_hal::{InterfaceAddress, Rng as _, XorShift};

use crate::wire::ssdp::{self, SSDP_GROUP};
use crate::wire::{Full, SliceWriter};

/// `SERVER` product tokens (UDA 1.1 §1.2.2: `OS/version UPnP/1.1 product/version`).
pub const SERVER: &str = ssdp::USER_AGENT;
/// Where the device description is served on the LAN HTTP port.
pub const DESCRIPTION_PATH: &str = super::dlna::DESCRIPTION_PATH;
/// How long control points may keep an announcement (UDA asks for >= 1800 s).
pub const MAX_AGE_S: u32 = 1800;
/// `CONFIGID.UPNP.ORG`: changes only when the description documents change.
pub const CONFIG_ID: u32 = 1;
/// Multicast TTL of announcements (UDA 1.1 §1.1.2 recommends 2).
pub const NOTIFY_TTL: u32 = 2;
/// LAN interface addresses announced on.
pub const INTERFACES_MAX: usize = 8;
/// Answers waiting for their random delay; more are dropped and counted.
pub const ANSWERS_QUEUED_MAX: usize = 32;
/// Answers per second to all searchers, and the burst allowed at once.
pub const ANSWERS_PER_S: u32 = 50;
pub const ANSWERS_BURST: u32 = 50;
/// Answers per second to one searcher's address (also its burst).
pub const SEARCHER_ANSWERS_PER_S: u32 = 10;
/// Searcher addresses whose rate is tracked (the oldest is forgotten).
pub const SEARCHERS_TRACKED_MAX: usize = 16;
/// Bytes of a datagram worth reading; a longer one is malformed. The driver
/// reads into one byte more than this so that it can tell.
pub const DATAGRAM_BYTES_MAX: usize = 1500;
/// Bytes of the longest datagram we send (checked by a test).
pub const TRANSMIT_BYTES_MAX: usize = 512;
/// Alive sets sent when an interface is first announced on, and the time
/// between them (multicast may be lost).
pub const ANNOUNCE_SETS: u8 = 2;
pub const ANNOUNCE_REPEAT_MS: u64 = 1000;

/// The notification types we announce and answer (UDA 1.1 §1.2.2 for a
/// root device with two services: 3 + 2d + k = 5 per interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    RootDevice,
    Uuid,
    MediaServer,
    ContentDirectory,
    ConnectionManager,
}

/// Every [`Target`], in announcement order.
pub const TARGETS: [Target; 5] = [
    Target::RootDevice,
    Target::Uuid,
    Target::MediaServer,
    Target::ContentDirectory,
    Target::ConnectionManager,
];

impl Target {
    /// A device or service type's text without its version, and our version.
    fn typed(self) -> Option<(&'static str, u8)> {
        match self {
            Target::MediaServer => Some(("urn:schemas-upnp-org:device:MediaServer:", 1)),
            Target::ContentDirectory => Some(("urn:schemas-upnp-org:service:ContentDirectory:", 1)),
            Target::ConnectionManager => {
                Some(("urn:schemas-upnp-org:service:ConnectionManager:", 1))
            }
            Target::RootDevice | Target::Uuid => None,
        }
    }

    /// Our version of a type (0 for the others).
    fn version(self) -> u8 {
        self.typed().map_or(0, |(_, version)| version)
    }
}

/// Writes a target as `NT`/`ST` text; a type carries `version`.
fn write_target(w: &mut SliceWriter<'_>, target: Target, version: u8, uuid: &str) -> fmt::Result {
    match (target, target.typed()) {
        (Target::RootDevice, _) => w.write_str("upnp:rootdevice"),
        (Target::Uuid, _) => write!(w, "uuid:{uuid}"),
        (_, Some((base, _))) => write!(w, "{base}{version}"),
        (_, None) => Ok(()),
    }
}

/// Writes a target's `USN`: `uuid:<uuid>`, or `uuid:<uuid>::<NT>`.
fn write_usn(w: &mut SliceWriter<'_>, target: Target, version: u8, uuid: &str) -> fmt::Result {
    write!(w, "uuid:{uuid}")?;
    if target == Target::Uuid {
        return Ok(());
    }
    w.write_str("::")?;
    write_target(w, target, version, uuid)
}

/// What a search target asks of us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    /// `ssdp:all`: every target.
    All,
    /// One target, answered with `version` (a type's requested version).
    One(Target, u8),
}

/// Which of our targets a search's `ST` names, if any. A device or service
/// type matches any version from 1 to ours, and the answer repeats the
/// version asked for (UDA 1.1 §1.3.2).
pub fn match_search_target(st: &str, uuid: &str) -> Option<Matched> {
    if st.eq_ignore_ascii_case("ssdp:all") {
        return Some(Matched::All);
    }
    if st.eq_ignore_ascii_case("upnp:rootdevice") {
        return Some(Matched::One(Target::RootDevice, 0));
    }
    if let Some(asked) = strip_prefix_ignore_case(st, "uuid:") {
        return asked
            .eq_ignore_ascii_case(uuid)
            .then_some(Matched::One(Target::Uuid, 0));
    }
    TARGETS.iter().find_map(|&target| {
        let (base, ours) = target.typed()?;
        let version = strip_prefix_ignore_case(st, base)?;
        // Digits only, no sign or leading zero: "1", not "+1" or "01".
        if version.is_empty() || version.starts_with('0') || version.len() > 3 {
            return None;
        }
        if !version.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let version: u16 = version.parse().ok()?;
        (version <= u16::from(ours)).then_some(Matched::One(target, version as u8))
    })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Whether SSDP runs on an interface address: on the interfaces named in the
/// config (`wanted`, by kernel index), or when none are named, on every
/// address that is neither public nor loopback.
pub fn is_lan_interface(interface: &InterfaceAddress, wanted: Option<&[u32]>) -> bool {
    match wanted {
        Some(indexes) => indexes.contains(&interface.index),
        None => !interface.address.is_loopback() && !crate::portmap::is_public(interface.address),
    }
}

/// The same address on the same interface (its prefix may have changed).
fn same_place(a: &InterfaceAddress, b: &InterfaceAddress) -> bool {
    a.address == b.address && a.index == b.index
}

/// True if `address` is inside `interface`'s subnet.
fn in_subnet(interface: &InterfaceAddress, address: Ipv4Addr) -> bool {
    let prefix_len = u32::from(interface.prefix_len.min(32));
    let mask = u32::MAX.checked_shl(32 - prefix_len).unwrap_or(0);
    u32::from(interface.address) & mask == u32::from(address) & mask
}

/// The description URL on one of our addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptionUrl {
    pub address: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for DescriptionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{DESCRIPTION_PATH}", self.address, self.port)
    }
}

/// What the announcer says about the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The device UUID, 36 characters (the UDN is `uuid:<it>`).
    pub uuid: heapless::String<36>,
    /// The LAN HTTP port that serves [`DESCRIPTION_PATH`].
    pub http_port: u16,
    /// `BOOTID.UPNP.ORG`: grows at each start of the device (31 bits).
    pub boot_id: u32,
    /// `CONFIGID.UPNP.ORG` (24 bits for UPnP; we use [`CONFIG_ID`]).
    pub config_id: u32,
    pub max_age_s: u32,
}

impl Config {
    /// The usual settings for a device with this UUID, port and boot count.
    pub fn new(uuid: heapless::String<36>, http_port: u16, boots: u64) -> Self {
        Self {
            uuid,
            http_port,
            // UDA 1.1 §1.2.2: a non-negative 31-bit integer.
            boot_id: (boots & 0x7FFF_FFFF) as u32,
            config_id: CONFIG_ID,
            max_age_s: MAX_AGE_S,
        }
    }
}

/// One datagram to send, rendered into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The group (announcements) or the searcher (answers).
    pub to: SocketAddrV4,
    /// Our address on the interface to send a multicast datagram out of.
    pub via: Ipv4Addr,
    pub len: usize,
}

/// Counters for `/status` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SsdpCounters {
    /// Well-formed `M-SEARCH` requests, for any target.
    pub searches: u64,
    /// Answers sent.
    pub answers: u64,
    /// Answers not sent: over a rate limit, the queue was full, or the same
    /// answer to the same searcher was already waiting.
    pub answers_dropped: u64,
    /// `NOTIFY` datagrams sent (alive and byebye).
    pub notifies: u64,
    /// Datagrams that were neither a search nor someone's announcement or
    /// answer, searches without `MAN: "ssdp:discover"`, oversized datagrams.
    pub malformed: u64,
    /// Searches for us from an address on none of our LAN subnets.
    pub off_subnet: u64,
}

/// What [`Announcer::set_interfaces`] changed, for the driver's group
/// memberships and log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InterfaceChanges {
    pub added: heapless::Vec<InterfaceAddress, INTERFACES_MAX>,
    pub removed: heapless::Vec<InterfaceAddress, INTERFACES_MAX>,
}

/// A token bucket counted in thousandths of a token.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli_tokens: u64,
    updated_ms: u64,
}

impl Bucket {
    fn full(burst: u32, now_ms: u64) -> Self {
        Self {
            milli_tokens: u64::from(burst) * 1000,
            updated_ms: now_ms,
        }
    }

    /// Refills for the time since the last call; true if a token is there.
    fn refill(&mut self, now_ms: u64, per_s: u32, burst: u32) -> bool {
        let elapsed_ms = now_ms.saturating_sub(self.updated_ms);
        self.updated_ms = self.updated_ms.max(now_ms);
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(elapsed_ms.saturating_mul(u64::from(per_s)))
            .min(u64::from(burst) * 1000);
        self.milli_tokens >= 1000
    }

    fn take(&mut self) {
        self.milli_tokens -= 1000;
    }
}

#[derive(Clone, Copy, Debug)]
struct Searcher {
    address: Ipv4Addr,
    bucket: Bucket,
}

/// An answer waiting for its moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Answer {
    at_ms: u64,
    to: SocketAddrV4,
    /// Our address on the searcher's subnet (the `LOCATION` host).
    via: Ipv4Addr,
    target: Target,
    version: u8,
}

/// A LAN interface address and its announcement schedule.
#[derive(Clone, Copy, Debug)]
struct Lan {
    interface: InterfaceAddress,
    /// When the next alive set starts (or goes on).
    notify_at_ms: u64,
    /// The next target of the set being sent (of the byebye set when leaving).
    next_target: usize,
    /// Alive sets still to send before the long wait.
    sets_left: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Leaving,
}

/// The state machine. See the module documentation.
pub struct Announcer {
    config: Config,
    rng: XorShift,
    phase: Phase,
    lans: heapless::Vec<Lan, INTERFACES_MAX>,
    answers: heapless::Vec<Answer, ANSWERS_QUEUED_MAX>,
    bucket: Bucket,
    searchers: heapless::Vec<Searcher, SEARCHERS_TRACKED_MAX>,
    counters: SsdpCounters,
}

impl Announcer {
    /// An announcer with no interface yet; `seed` feeds the random delays.
    pub fn new(config: Config, seed: u64) -> Self {
        assert!(
            config.max_age_s >= 60,
            "max-age too short to re-announce in"
        );
        Self {
            config,
            rng: XorShift::new(seed),
            phase: Phase::Running,
            lans: heapless::Vec::new(),
            answers: heapless::Vec::new(),
            bucket: Bucket::full(ANSWERS_BURST, 0),
            searchers: heapless::Vec::new(),
            counters: SsdpCounters::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn counters(&self) -> SsdpCounters {
        self.counters
    }

    /// The interface addresses announced on.
    pub fn interfaces(&self) -> impl Iterator<Item = InterfaceAddress> + '_ {
        self.lans.iter().map(|lan| lan.interface)
    }

    /// The description URL on our address `address`.
    pub fn description_url(&self, address: Ipv4Addr) -> DescriptionUrl {
        DescriptionUrl {
            address,
            port: self.config.http_port,
        }
    }

    /// True once every byebye is out (after [`Announcer::shutdown`]).
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Leaving && self.lans.iter().all(|lan| lan.next_target >= TARGETS.len())
    }

    /// The LAN interface addresses to announce on, as they are now (the first
    /// [`INTERFACES_MAX`] distinct addresses). New ones are announced on at
    /// once; answers through vanished ones are dropped.
    pub fn set_interfaces(&mut self, now_ms: u64, list: &[InterfaceAddress]) -> InterfaceChanges {
        let mut changes = InterfaceChanges::default();
        if self.phase != Phase::Running {
            return changes;
        }
        let mut lans = heapless::Vec::<Lan, INTERFACES_MAX>::new();
        for interface in list {
            if lans
                .iter()
                .any(|l| l.interface.address == interface.address)
            {
                continue;
            }
            if lans.is_full() {
                break;
            }
            let kept = self
                .lans
                .iter()
                .find(|l| same_place(&l.interface, interface));
            let lan = match kept {
                Some(kept) => Lan {
                    interface: *interface,
                    ..*kept
                },
                None => {
                    let _ = changes.added.push(*interface);
                    Lan {
                        interface: *interface,
                        notify_at_ms: now_ms,
                        next_target: 0,
                        sets_left: ANNOUNCE_SETS,
                    }
                }
            };
            let _ = lans.push(lan);
        }
        for old in &self.lans {
            if !lans
                .iter()
                .any(|l| same_place(&l.interface, &old.interface))
            {
                let _ = changes.removed.push(old.interface);
            }
        }
        self.lans = lans;
        let lans = &self.lans;
        let queued = self.answers.len();
        self.answers
            .retain(|answer| lans.iter().any(|l| l.interface.address == answer.via));
        self.counters.answers_dropped += (queued - self.answers.len()) as u64;
        changes
    }

    /// A datagram arrived on port 1900 from `from`.
    pub fn handle_datagram(&mut self, now_ms: u64, from: SocketAddrV4, datagram: &[u8]) {
        if datagram.len() > DATAGRAM_BYTES_MAX {
            self.counters.malformed += 1;
            return;
        }
        if self.phase != Phase::Running {
            return;
        }
        // Other devices' announcements and answers share the port.
        if datagram.starts_with(b"NOTIFY ") || datagram.starts_with(b"HTTP/") {
            return;
        }
        let Some(request) = ssdp::parse_search_request(datagram) else {
            self.counters.malformed += 1;
            return;
        };
        let searcher = *from.ip();
        if !request.man_discover
            || from.port() == 0
            || searcher.is_unspecified()
            || searcher.is_multicast()
            || searcher.is_broadcast()
        {
            self.counters.malformed += 1;
            return;
        }
        self.counters.searches += 1;
        let Some(matched) = match_search_target(request.st, &self.config.uuid) else {
            return;
        };
        let Some(via) = self.address_for(searcher) else {
            self.counters.off_subnet += 1;
            return;
        };
        let window_ms = u64::from(request.mx) * 1000;
        match matched {
            Matched::One(target, version) => {
                self.try_queue(now_ms, from, via, target, version, window_ms)
            }
            Matched::All => {
                for target in TARGETS {
                    self.try_queue(now_ms, from, via, target, target.version(), window_ms);
                }
            }
        }
    }

    /// The next datagram to send now, rendered into `buffer` (at least
    /// [`TRANSMIT_BYTES_MAX`] bytes), or `None` until a deadline or input.
    pub fn poll_transmit(&mut self, now_ms: u64, buffer: &mut [u8]) -> Option<Transmit> {
        assert!(
            buffer.len() >= TRANSMIT_BYTES_MAX,
            "transmit buffer too small"
        );
        if self.phase == Phase::Leaving {
            return self.poll_byebye(buffer);
        }
        if let Some(transmit) = self.poll_alive(now_ms, buffer) {
            return Some(transmit);
        }
        let index = self
            .answers
            .iter()
            .enumerate()
            .filter(|(_, answer)| answer.at_ms <= now_ms)
            .min_by_key(|(_, answer)| answer.at_ms)
            .map(|(index, _)| index)?;
        let answer = self.answers.swap_remove(index);
        let len = self
            .write_answer(buffer, &answer)
            .expect("TRANSMIT_BYTES_MAX holds every answer");
        self.counters.answers += 1;
        Some(Transmit {
            to: answer.to,
            via: answer.via,
            len,
        })
    }

    /// When [`Announcer::poll_transmit`] next has something to send.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.phase == Phase::Leaving {
            return (!self.is_finished()).then_some(0);
        }
        let notify = self.lans.iter().map(|lan| lan.notify_at_ms);
        let answers = self.answers.iter().map(|answer| answer.at_ms);
        notify.chain(answers).min()
    }

    /// Stops answering and announcing; the byebye set for every interface
    /// follows from [`Announcer::poll_transmit`].
    pub fn shutdown(&mut self, _now_ms: u64) {
        if self.phase == Phase::Leaving {
            return;
        }
        self.phase = Phase::Leaving;
        self.answers.clear();
        for lan in &mut self.lans {
            lan.next_target = 0;
        }
    }

    // ----- internals -----

    /// Our address for answering `searcher`: the longest prefix of ours
    /// containing it (our own addresses are in their own subnets); a search
    /// from loopback is from this host, and any LAN address of ours will do.
    fn address_for(&self, searcher: Ipv4Addr) -> Option<Ipv4Addr> {
        if let Some(own) = self.lans.iter().find(|l| l.interface.address == searcher) {
            return Some(own.interface.address);
        }
        if searcher.is_loopback() {
            return self.lans.first().map(|l| l.interface.address);
        }
        self.lans
            .iter()
            .filter(|l| in_subnet(&l.interface, searcher))
            .max_by_key(|l| l.interface.prefix_len)
            .map(|l| l.interface.address)
    }

    /// Queues one answer unless a rate limit or the queue refuses it.
    fn try_queue(
        &mut self,
        now_ms: u64,
        to: SocketAddrV4,
        via: Ipv4Addr,
        target: Target,
        version: u8,
        window_ms: u64,
    ) {
        let duplicate = self
            .answers
            .iter()
            .any(|a| a.to == to && a.via == via && a.target == target && a.version == version);
        if duplicate {
            // Already on its way: a resent search needs no second copy.
            self.counters.answers_dropped += 1;
            return;
        }
        if self.answers.is_full() || !self.bucket.refill(now_ms, ANSWERS_PER_S, ANSWERS_BURST) {
            self.counters.answers_dropped += 1;
            return;
        }
        let searcher = self.searcher(now_ms, *to.ip());
        if !searcher.refill(now_ms, SEARCHER_ANSWERS_PER_S, SEARCHER_ANSWERS_PER_S) {
            self.counters.answers_dropped += 1;
            return;
        }
        searcher.take();
        self.bucket.take();
        let delay_ms = u64::from(self.rng.next_u32()) % window_ms.max(1);
        let answer = Answer {
            at_ms: now_ms + delay_ms,
            to,
            via,
            target,
            version,
        };
        let pushed = self.answers.push(answer);
        assert!(pushed.is_ok(), "queue checked for room above");
    }

    /// The rate bucket of a searcher's address (the least recently used
    /// one is reused for a new address when the table is full).
    fn searcher(&mut self, now_ms: u64, address: Ipv4Addr) -> &mut Bucket {
        let index = match self.searchers.iter().position(|s| s.address == address) {
            Some(index) => index,
            None => {
                let fresh = Searcher {
                    address,
                    bucket: Bucket::full(SEARCHER_ANSWERS_PER_S, now_ms),
                };
                if self.searchers.push(fresh).is_ok() {
                    self.searchers.len() - 1
                } else {
                    let (oldest, _) = self
                        .searchers
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.bucket.updated_ms)
                        .expect("the table is full, so not empty");
                    self.searchers[oldest] = fresh;
                    oldest
                }
            }
        };
        &mut self.searchers[index].bucket
    }

    fn poll_alive(&mut self, now_ms: u64, buffer: &mut [u8]) -> Option<Transmit> {
        let index = self.lans.iter().position(|l| l.notify_at_ms <= now_ms)?;
        let max_age_ms = u64::from(self.config.max_age_s) * 1000;
        // Re-announce before half of max-age, less a random part, so that one
        // lost set still leaves time for the next before expiry.
        let reannounce_ms = max_age_ms / 2 - u64::from(self.rng.next_u32()) % (max_age_ms / 4);
        let lan = &mut self.lans[index];
        let target = TARGETS[lan.next_target];
        let via = lan.interface.address;
        lan.next_target += 1;
        if lan.next_target == TARGETS.len() {
            lan.next_target = 0;
            lan.sets_left = lan.sets_left.saturating_sub(1);
            lan.notify_at_ms = if lan.sets_left > 0 {
                now_ms + ANNOUNCE_REPEAT_MS
            } else {
                lan.sets_left = 1;
                now_ms + reannounce_ms
            };
        }
        let len = self
            .write_alive(buffer, via, target)
            .expect("TRANSMIT_BYTES_MAX holds every announcement");
        self.counters.notifies += 1;
        Some(Transmit {
            to: SSDP_GROUP,
            via,
            len,
        })
    }

    fn poll_byebye(&mut self, buffer: &mut [u8]) -> Option<Transmit> {
        let lan = self
            .lans
            .iter_mut()
            .find(|l| l.next_target < TARGETS.len())?;
        let target = TARGETS[lan.next_target];
        let via = lan.interface.address;
        lan.next_target += 1;
        let len = self
            .write_byebye(buffer, target)
            .expect("TRANSMIT_BYTES_MAX holds every announcement");
        self.counters.notifies += 1;
        Some(Transmit {
            to: SSDP_GROUP,
            via,
            len,
        })
    }

    fn write_alive(&self, buffer: &mut [u8], via: Ipv4Addr, target: Target) -> Result<usize, Full> {
        let config = &self.config;
        let uuid = config.uuid.as_str();
        let version = target.version();
        let mut w = SliceWriter::new(buffer);
        write!(
            w,
            "NOTIFY * HTTP/1.1\r\nHOST: {SSDP_GROUP}\r\nCACHE-CONTROL: max-age={}\r\n\
             LOCATION: {}\r\nNT: ",
            config.max_age_s,
            self.description_url(via)
        )?;
        write_target(&mut w, target, version, uuid)?;
        write!(w, "\r\nNTS: ssdp:alive\r\nSERVER: {SERVER}\r\nUSN: ")?;
        write_usn(&mut w, target, version, uuid)?;
        self.write_ids(&mut w)?;
        Ok(w.len())
    }

    fn write_byebye(&self, buffer: &mut [u8], target: Target) -> Result<usize, Full> {
        let uuid = self.config.uuid.as_str();
        let version = target.version();
        let mut w = SliceWriter::new(buffer);
        write!(w, "NOTIFY * HTTP/1.1\r\nHOST: {SSDP_GROUP}\r\nNT: ")?;
        write_target(&mut w, target, version, uuid)?;
        w.write_str("\r\nNTS: ssdp:byebye\r\nUSN: ")?;
        write_usn(&mut w, target, version, uuid)?;
        self.write_ids(&mut w)?;
        Ok(w.len())
    }

    fn write_answer(&self, buffer: &mut [u8], answer: &Answer) -> Result<usize, Full> {
        let config = &self.config;
        let uuid = config.uuid.as_str();
        let mut w = SliceWriter::new(buffer);
        // No DATE: the box may have no wall clock, and a wrong date is worse
        // than none (UDA 1.1 §1.3.3 makes it recommended, not required).
        write!(
            w,
            "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age={}\r\nEXT:\r\nLOCATION: {}\r\n\
             SERVER: {SERVER}\r\nST: ",
            config.max_age_s,
            self.description_url(answer.via)
        )?;
        write_target(&mut w, answer.target, answer.version, uuid)?;
        w.write_str("\r\nUSN: ")?;
        write_usn(&mut w, answer.target, answer.version, uuid)?;
        self.write_ids(&mut w)?;
        Ok(w.len())
    }

    /// The `BOOTID`/`CONFIGID` fields and the blank line ending the head.
    fn write_ids(&self, w: &mut SliceWriter<'_>) -> fmt::Result {
        write!(
            w,
            "\r\nBOOTID.UPNP.ORG: {}\r\nCONFIGID.UPNP.ORG: {}\r\n\r\n",
            self.config.boot_id, self.config.config_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ssdp::{parse_notify, parse_search_response};

    const UUID: &str = "4d696e69-444c-4e41-9d6c-0123456789ab";
    const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
    const WIFI: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);
    const TV: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 23), 50_123);
    const PHONE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 7, 0, 99), 40_000);

    fn config() -> Config {
        Config::new(heapless::String::try_from(UUID).unwrap(), 8090, 7)
    }

    fn interface(index: u32, address: Ipv4Addr, prefix_len: u8) -> InterfaceAddress {
        InterfaceAddress {
            index,
            address,
            prefix_len,
        }
    }

    fn two_lans() -> [InterfaceAddress; 2] {
        [interface(3, LAN, 24), interface(4, WIFI, 16)]
    }

    /// An announcer on both LANs whose start-up announcements are all sent.
    fn announced() -> Announcer {
        let mut announcer = Announcer::new(config(), 42);
        announcer.set_interfaces(0, &two_lans());
        drain(&mut announcer, 0);
        drain(&mut announcer, ANNOUNCE_REPEAT_MS);
        assert_eq!(announcer.counters().notifies, 20);
        announcer
    }

    /// Everything sent at `now`, as (transmit, text).
    fn drain(announcer: &mut Announcer, now: u64) -> Vec<(Transmit, String)> {
        let mut sent = Vec::new();
        let mut buffer = [0u8; TRANSMIT_BYTES_MAX];
        while let Some(transmit) = announcer.poll_transmit(now, &mut buffer) {
            let text = String::from_utf8(buffer[..transmit.len].to_vec()).unwrap();
            sent.push((transmit, text));
            assert!(sent.len() <= 1000, "poll_transmit never ends");
        }
        sent
    }

    fn search(st: &str, mx: u8) -> Vec<u8> {
        format!(
            "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n\
             MX: {mx}\r\nST: {st}\r\n\r\n"
        )
        .into_bytes()
    }

    /// Every answer to searches made so far, sending until all are out
    /// (announcements sent meanwhile are left out).
    fn answers(announcer: &mut Announcer, from_ms: u64) -> Vec<(u64, Transmit, String)> {
        let mut out = Vec::new();
        let mut now = from_ms;
        while let Some(deadline) = announcer.next_deadline() {
            if deadline > from_ms + 10_000 {
                break;
            }
            now = now.max(deadline);
            for (transmit, text) in drain(announcer, now) {
                if transmit.to != SSDP_GROUP {
                    out.push((now, transmit, text));
                }
            }
        }
        out
    }

    fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    const NTS: [&str; 5] = [
        "upnp:rootdevice",
        "uuid:4d696e69-444c-4e41-9d6c-0123456789ab",
        "urn:schemas-upnp-org:device:MediaServer:1",
        "urn:schemas-upnp-org:service:ContentDirectory:1",
        "urn:schemas-upnp-org:service:ConnectionManager:1",
    ];

    fn usn_of(nt: &str) -> String {
        if nt.starts_with("uuid:") {
            nt.to_string()
        } else {
            format!("uuid:{UUID}::{nt}")
        }
    }

    #[test]
    fn golden_alive_byebye_and_answer() {
        let mut announcer = Announcer::new(config(), 1);
        announcer.set_interfaces(0, &[interface(3, LAN, 24)]);
        let sent = drain(&mut announcer, 0);
        let expected_alive = concat!(
            "NOTIFY * HTTP/1.1\r\n",
            "HOST: 239.255.255.250:1900\r\n",
            "CACHE-CONTROL: max-age=1800\r\n",
            "LOCATION: http://192.168.50.1:8090/dlna/description.xml\r\n",
            "NT: urn:schemas-upnp-org:device:MediaServer:1\r\n",
            "NTS: ssdp:alive\r\n",
            "SERVER: Linux/1 UPnP/1.1 ringcast/",
            env!("CARGO_PKG_VERSION"),
            "\r\n",
            "USN: uuid:4d696e69-444c-4e41-9d6c-0123456789ab::urn:schemas-upnp-org:device:MediaServer:1\r\n",
            "BOOTID.UPNP.ORG: 7\r\n",
            "CONFIGID.UPNP.ORG: 1\r\n",
            "\r\n"
        );
        assert_eq!(sent[2].1, expected_alive);

        announcer.handle_datagram(
            0,
            TV,
            &search("urn:schemas-upnp-org:device:MediaServer:1", 1),
        );
        let answered = answers(&mut announcer, 0);
        let expected_answer = concat!(
            "HTTP/1.1 200 OK\r\n",
            "CACHE-CONTROL: max-age=1800\r\n",
            "EXT:\r\n",
            "LOCATION: http://192.168.50.1:8090/dlna/description.xml\r\n",
            "SERVER: Linux/1 UPnP/1.1 ringcast/",
            env!("CARGO_PKG_VERSION"),
            "\r\n",
            "ST: urn:schemas-upnp-org:device:MediaServer:1\r\n",
            "USN: uuid:4d696e69-444c-4e41-9d6c-0123456789ab::urn:schemas-upnp-org:device:MediaServer:1\r\n",
            "BOOTID.UPNP.ORG: 7\r\n",
            "CONFIGID.UPNP.ORG: 1\r\n",
            "\r\n"
        );
        assert_eq!(answered.len(), 1);
        assert_eq!(answered[0].2, expected_answer);
        assert_eq!(answered[0].1.to, TV);

        announcer.shutdown(5000);
        let bye = drain(&mut announcer, 5000);
        let expected_byebye = concat!(
            "NOTIFY * HTTP/1.1\r\n",
            "HOST: 239.255.255.250:1900\r\n",
            "NT: uuid:4d696e69-444c-4e41-9d6c-0123456789ab\r\n",
            "NTS: ssdp:byebye\r\n",
            "USN: uuid:4d696e69-444c-4e41-9d6c-0123456789ab\r\n",
            "BOOTID.UPNP.ORG: 7\r\n",
            "CONFIGID.UPNP.ORG: 1\r\n",
            "\r\n"
        );
        assert_eq!(bye[1].1, expected_byebye);
    }

    #[test]
    fn every_type_is_announced_twice_on_every_interface_then_before_max_age() {
        let mut announcer = Announcer::new(config(), 9);
        let changes = announcer.set_interfaces(0, &two_lans());
        assert_eq!(&changes.added[..], &two_lans()[..]);
        assert!(changes.removed.is_empty());
        for set_at in [0, ANNOUNCE_REPEAT_MS] {
            assert_eq!(announcer.next_deadline(), Some(set_at));
            let sent = drain(&mut announcer, set_at);
            assert_eq!(sent.len(), 10);
            for lan in [LAN, WIFI] {
                let mut nts: Vec<&str> = Vec::new();
                for (transmit, text) in sent.iter().filter(|(t, _)| t.via == lan) {
                    assert_eq!(transmit.to, SSDP_GROUP);
                    let notify = parse_notify(text.as_bytes()).unwrap();
                    assert_eq!(notify.nts, "ssdp:alive");
                    assert_eq!(notify.usn, usn_of(notify.nt));
                    assert_eq!(notify.max_age_s, Some(MAX_AGE_S));
                    let location = format!("http://{lan}:8090/dlna/description.xml");
                    assert_eq!(notify.location, Some(location.as_str()));
                    nts.push(notify.nt);
                }
                assert_eq!(nts, NTS);
            }
        }
        // Next: between max-age/4 and max-age/2 later, once.
        let next = announcer.next_deadline().unwrap();
        let max_age_ms = u64::from(MAX_AGE_S) * 1000;
        assert!(next >= ANNOUNCE_REPEAT_MS + max_age_ms / 4, "{next}");
        assert!(next <= ANNOUNCE_REPEAT_MS + max_age_ms / 2, "{next}");
        assert!(drain(&mut announcer, next - 1).is_empty());
        let mut now = next;
        let mut sets = 0;
        // Over a day, sets keep coming well within max-age of each other.
        while now < 86_400_000 {
            let sent = drain(&mut announcer, now);
            assert!(sent.len() == 5 || sent.len() == 10, "{}", sent.len());
            sets += 1;
            let following = announcer.next_deadline().unwrap();
            assert!(following - now <= max_age_ms / 2);
            now = following;
        }
        assert!(sets >= 96);
    }

    #[test]
    fn byebye_for_every_type_on_every_interface_then_finished() {
        let mut announcer = announced();
        announcer.handle_datagram(10, TV, &search("ssdp:all", 5));
        assert!(!announcer.is_finished());
        announcer.shutdown(20);
        let sent = drain(&mut announcer, 20);
        assert_eq!(sent.len(), 10);
        for lan in [LAN, WIFI] {
            let nts: Vec<String> = sent
                .iter()
                .filter(|(t, _)| t.via == lan && t.to == SSDP_GROUP)
                .map(|(_, text)| {
                    let notify = parse_notify(text.as_bytes()).unwrap();
                    assert_eq!(notify.nts, "ssdp:byebye");
                    assert_eq!(notify.location, None);
                    assert_eq!(notify.usn, usn_of(notify.nt));
                    notify.nt.to_string()
                })
                .collect();
            assert_eq!(nts, NTS);
        }
        assert!(announcer.is_finished());
        assert_eq!(announcer.next_deadline(), None);
        // Nothing more: no pending answer, no search answered.
        announcer.handle_datagram(30, TV, &search("ssdp:all", 1));
        assert!(answers(&mut announcer, 30).is_empty());
        assert_eq!(announcer.counters().notifies, 30);
    }

    #[test]
    fn shutdown_without_interfaces_is_finished_at_once() {
        let mut announcer = Announcer::new(config(), 1);
        assert!(!announcer.is_finished());
        announcer.shutdown(0);
        assert!(announcer.is_finished());
        assert!(drain(&mut announcer, 0).is_empty());
    }

    #[test]
    fn ssdp_all_is_answered_with_all_five() {
        let mut announcer = announced();
        announcer.handle_datagram(2000, TV, &search("ssdp:all", 3));
        let answered = answers(&mut announcer, 2000);
        let mut sts: Vec<&str> = answered
            .iter()
            .map(|(_, transmit, text)| {
                assert_eq!(transmit.to, TV);
                let response = parse_search_response(text.as_bytes()).unwrap();
                assert_eq!(response.usn, usn_of(response.st));
                assert_eq!(
                    response.location,
                    "http://192.168.50.1:8090/dlna/description.xml"
                );
                assert_eq!(field(text, "EXT"), Some(""));
                assert_eq!(field(text, "BOOTID.UPNP.ORG"), Some("7"));
                assert_eq!(field(text, "CONFIGID.UPNP.ORG"), Some("1"));
                assert_eq!(field(text, "DATE"), None);
                response.st
            })
            .collect();
        sts.sort();
        let mut expected = NTS.to_vec();
        expected.sort();
        assert_eq!(sts, expected);
        let counters = announcer.counters();
        assert_eq!((counters.searches, counters.answers), (1, 5));
    }

    #[test]
    fn specific_targets_get_one_answer_each_and_others_none() {
        let cases: [(&str, Option<&str>); 12] = [
            ("upnp:rootdevice", Some("upnp:rootdevice")),
            (NTS[1], Some(NTS[1])),
            ("uuid:4D696E69-444C-4E41-9D6C-0123456789AB", Some(NTS[1])),
            (NTS[2], Some(NTS[2])),
            (NTS[3], Some(NTS[3])),
            (NTS[4], Some(NTS[4])),
            ("urn:schemas-upnp-org:device:MediaServer:2", None),
            ("urn:schemas-upnp-org:device:MediaServer:0", None),
            ("urn:schemas-upnp-org:device:MediaServer:01", None),
            ("urn:schemas-upnp-org:device:MediaRenderer:1", None),
            ("uuid:00000000-0000-4000-8000-000000000000", None),
            ("urn:schemas-upnp-org:device:InternetGatewayDevice:1", None),
        ];
        for (st, expected) in cases {
            let mut announcer = announced();
            announcer.handle_datagram(2000, TV, &search(st, 2));
            let answered = answers(&mut announcer, 2000);
            let got: Vec<String> = answered
                .iter()
                .map(|(_, _, text)| field(text, "ST").unwrap().to_string())
                .collect();
            assert_eq!(
                got,
                expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{st}"
            );
            if let Some(expected) = expected {
                assert_eq!(field(&answered[0].2, "USN").unwrap(), usn_of(expected));
            }
            assert_eq!(announcer.counters().searches, 1);
        }
    }

    #[test]
    fn answers_come_within_mx_and_spread_over_it() {
        for mx in [1u8, 3, 5] {
            let mut announcer = announced();
            let mut delays = Vec::new();
            for round in 0..40u64 {
                let now = 10_000 + round * 20_000;
                let from = SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 100 + round as u8), 1234);
                announcer.handle_datagram(now, from, &search(NTS[2], mx));
                let answered = answers(&mut announcer, now);
                assert_eq!(answered.len(), 1);
                delays.push(answered[0].0 - now);
            }
            let window = u64::from(mx) * 1000;
            assert!(delays.iter().all(|&d| d < window), "{delays:?}");
            // Random, not all at once: some in each half of the window.
            assert!(delays.iter().any(|&d| d < window / 2), "{delays:?}");
            assert!(delays.iter().any(|&d| d >= window / 2), "{delays:?}");
        }
        // MX above 5 is clamped to 5, a missing MX is 1.
        let mut announcer = announced();
        announcer.handle_datagram(10_000, TV, &search(NTS[2], 120));
        let answered = answers(&mut announcer, 10_000);
        assert!(answered[0].0 < 10_000 + 5000);
        let no_mx = b"M-SEARCH * HTTP/1.1\r\nMAN: \"ssdp:discover\"\r\nST: upnp:rootdevice\r\n\r\n";
        announcer.handle_datagram(20_000, TV, no_mx);
        let answered = answers(&mut announcer, 20_000);
        assert!(answered[0].0 < 21_000);
    }

    #[test]
    fn location_names_our_address_on_the_searchers_subnet() {
        let mut announcer = announced();
        let location = |announcer: &mut Announcer, from: SocketAddrV4| {
            announcer.handle_datagram(5000, from, &search("upnp:rootdevice", 1));
            let answered = answers(announcer, 5000);
            answered
                .first()
                .map(|(_, _, text)| field(text, "LOCATION").unwrap().to_string())
        };
        let on_lan = "http://192.168.50.1:8090/dlna/description.xml";
        let on_wifi = "http://10.7.0.1:8090/dlna/description.xml";
        assert_eq!(location(&mut announcer, TV).as_deref(), Some(on_lan));
        assert_eq!(location(&mut announcer, PHONE).as_deref(), Some(on_wifi));
        // A /16: 10.7.200.3 is still on the wifi.
        let far = SocketAddrV4::new(Ipv4Addr::new(10, 7, 200, 3), 1900);
        assert_eq!(location(&mut announcer, far).as_deref(), Some(on_wifi));
        // Our own addresses: a control point on this host.
        let own = SocketAddrV4::new(LAN, 45_000);
        assert_eq!(location(&mut announcer, own).as_deref(), Some(on_lan));
        let own = SocketAddrV4::new(WIFI, 45_000);
        assert_eq!(location(&mut announcer, own).as_deref(), Some(on_wifi));
        let loopback = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 45_000);
        assert_eq!(location(&mut announcer, loopback).as_deref(), Some(on_lan));
        // On no subnet of ours: not answered, counted.
        let stranger = SocketAddrV4::new(Ipv4Addr::new(192, 168, 51, 5), 1900);
        assert_eq!(location(&mut announcer, stranger), None);
        assert_eq!(announcer.counters().off_subnet, 1);
    }

    #[test]
    fn the_longest_matching_prefix_wins() {
        let mut announcer = Announcer::new(config(), 3);
        let wide = interface(5, Ipv4Addr::new(10, 0, 0, 1), 8);
        let narrow = interface(6, Ipv4Addr::new(10, 9, 9, 1), 24);
        announcer.set_interfaces(0, &[wide, narrow]);
        drain(&mut announcer, 0);
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 200), 1000);
        announcer.handle_datagram(2000, from, &search("upnp:rootdevice", 1));
        let answered = answers(&mut announcer, 2000);
        let location = field(&answered.last().unwrap().2, "LOCATION").unwrap();
        assert_eq!(location, "http://10.9.9.1:8090/dlna/description.xml");
    }

    #[test]
    fn a_flood_of_searches_is_bounded_by_the_rates_and_the_queue() {
        let mut announcer = announced();
        let before = announcer.counters();
        // 10,000 ssdp:all searches from one host (a new port each) over
        // 10 s: at most 10 answers a second (and one burst) reach it.
        let all = search("ssdp:all", 5);
        let mut sent = 0;
        for index in 0..10_000u64 {
            let now = 10_000 + index;
            let from = SocketAddrV4::new(*TV.ip(), 10_000 + index as u16);
            announcer.handle_datagram(now, from, &all);
            assert!(announcer.answers.len() <= ANSWERS_QUEUED_MAX);
            sent += drain(&mut announcer, now).len();
        }
        sent += answers(&mut announcer, 20_000).len();
        let counters = announcer.counters();
        assert_eq!(counters.searches - before.searches, 10_000);
        let per_searcher_max = SEARCHER_ANSWERS_PER_S as usize * 11;
        assert!(sent <= per_searcher_max, "{sent}");
        assert!(sent >= SEARCHER_ANSWERS_PER_S as usize * 10, "{sent}");
        assert_eq!(counters.answers - before.answers, sent as u64);
        assert_eq!(counters.answers + counters.answers_dropped, 50_000);

        // Spoofed searchers, one address each: the global bucket and the
        // queue hold.
        let mut announcer = announced();
        let mut sent = 0;
        for index in 0..10_000u64 {
            let now = 10_000 + index;
            let octets = (index as u16).to_be_bytes();
            let from = SocketAddrV4::new(Ipv4Addr::new(10, 7, octets[0], octets[1]), 1900);
            announcer.handle_datagram(now, from, &all);
            assert!(announcer.answers.len() <= ANSWERS_QUEUED_MAX);
            sent += drain(&mut announcer, now).len();
        }
        sent += answers(&mut announcer, 20_000).len();
        let global_max = (ANSWERS_PER_S as usize) * 10 + ANSWERS_BURST as usize;
        assert!(sent <= global_max, "{sent}");
        assert!(sent >= ANSWERS_QUEUED_MAX, "{sent}");
        let counters = announcer.counters();
        assert_eq!(counters.answers + counters.answers_dropped, 50_000);
        assert_eq!(counters.searches, 10_000);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut announcer = announced();
        // Within one millisecond, distinct searchers, long MX: only the queue
        // and the burst bound what waits.
        for index in 0..100u8 {
            let from = SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, index), 1900);
            announcer.handle_datagram(5000, from, &search("upnp:rootdevice", 5));
        }
        assert_eq!(announcer.answers.len(), ANSWERS_QUEUED_MAX);
        assert_eq!(
            announcer.counters().answers_dropped,
            100 - ANSWERS_QUEUED_MAX as u64
        );
        assert_eq!(answers(&mut announcer, 5000).len(), ANSWERS_QUEUED_MAX);
    }

    #[test]
    fn a_repeated_search_is_not_answered_twice_while_pending() {
        let mut announcer = announced();
        announcer.handle_datagram(5000, TV, &search("ssdp:all", 5));
        announcer.handle_datagram(5001, TV, &search("ssdp:all", 5));
        announcer.handle_datagram(5002, TV, &search(NTS[2], 5));
        assert_eq!(answers(&mut announcer, 5000).len(), 5);
        assert_eq!(announcer.counters().answers_dropped, 6);
        // Once answered, the next search is answered again.
        announcer.handle_datagram(20_000, TV, &search(NTS[2], 1));
        assert_eq!(answers(&mut announcer, 20_000).len(), 1);
    }

    #[test]
    fn malformed_and_foreign_datagrams_are_ignored() {
        let mut announcer = announced();
        let garbage: [&[u8]; 7] = [
            b"",
            b"\x00\xff\xfe garbage",
            b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\n",
            b"M-SEARCH * HTTP/1.1\r\nMAN: ssdp:discover\r\nST: ssdp:all\r\n\r\n",
            b"M-SEARCH * HTTP/1.1\r\nMAN: \"ssdp:discover\"\r\nMX: soon\r\nST: ssdp:all\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"M-SEARCH * HTTP/1.1\r\nMAN: \"ssdp:discover\"\r\nST: \xff\xfe\r\n\r\n",
        ];
        for datagram in garbage {
            announcer.handle_datagram(5000, TV, datagram);
        }
        let mut oversized = search("ssdp:all", 1);
        oversized.resize(DATAGRAM_BYTES_MAX + 1, b' ');
        announcer.handle_datagram(5000, TV, &oversized);
        // Bad source addresses.
        for from in [
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 9), 0),
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 1900),
            SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900),
        ] {
            announcer.handle_datagram(5000, from, &search("ssdp:all", 1));
        }
        // Others' announcements and answers (and our own, looped back).
        let mut buffer = [0u8; TRANSMIT_BYTES_MAX];
        let mut other = Announcer::new(config(), 5);
        other.set_interfaces(0, &two_lans());
        let transmit = other.poll_transmit(0, &mut buffer).unwrap();
        announcer.handle_datagram(5000, TV, &buffer[..transmit.len]);
        let response =
            b"HTTP/1.1 200 OK\r\nLOCATION: http://192.168.50.7/\r\nST: upnp:rootdevice\r\n\r\n";
        announcer.handle_datagram(5000, TV, response);
        let counters = announcer.counters();
        assert_eq!(counters.malformed, 11);
        assert_eq!((counters.searches, counters.answers), (0, 0));
        assert!(answers(&mut announcer, 5000).is_empty());
    }

    #[test]
    fn interfaces_coming_and_going() {
        let mut announcer = Announcer::new(config(), 11);
        // No LAN yet: nothing to say, searches are off-subnet.
        assert_eq!(announcer.next_deadline(), None);
        announcer.handle_datagram(0, TV, &search("ssdp:all", 1));
        assert_eq!(announcer.counters().off_subnet, 1);
        // The LAN comes up late: announced on at once.
        let changes = announcer.set_interfaces(60_000, &[interface(3, LAN, 24)]);
        assert_eq!(&changes.added[..], &[interface(3, LAN, 24)]);
        assert_eq!(drain(&mut announcer, 60_000).len(), 5);
        // The same list again changes nothing and announces nothing.
        let changes = announcer.set_interfaces(61_000, &[interface(3, LAN, 24)]);
        assert_eq!(changes, InterfaceChanges::default());
        assert_eq!(drain(&mut announcer, 61_000).len(), 5); // the repeat set
        assert!(drain(&mut announcer, 62_000).is_empty());
        // The wifi joins; only it is announced on now.
        let changes = announcer.set_interfaces(70_000, &two_lans());
        assert_eq!(&changes.added[..], &[interface(4, WIFI, 16)]);
        let sent = drain(&mut announcer, 70_000);
        assert_eq!(sent.len(), 5);
        assert!(sent.iter().all(|(t, _)| t.via == WIFI));
        // A pending answer through the LAN is dropped when the LAN goes.
        announcer.handle_datagram(80_000, TV, &search("ssdp:all", 5));
        let changes = announcer.set_interfaces(80_001, &[interface(4, WIFI, 16)]);
        assert_eq!(&changes.removed[..], &[interface(3, LAN, 24)]);
        assert!(changes.added.is_empty());
        assert_eq!(announcer.counters().answers_dropped, 5);
        let late: Vec<_> = answers(&mut announcer, 80_001)
            .into_iter()
            .filter(|(_, t, _)| t.to == TV)
            .collect();
        assert!(late.is_empty());
        // An address change on the same interface is a removal and an addition.
        let moved = interface(4, Ipv4Addr::new(10, 7, 0, 2), 16);
        let changes = announcer.set_interfaces(90_000, &[moved]);
        assert_eq!(&changes.added[..], &[moved]);
        assert_eq!(&changes.removed[..], &[interface(4, WIFI, 16)]);
        // At most INTERFACES_MAX, duplicates once.
        let many: Vec<InterfaceAddress> = (0..20u8)
            .map(|i| interface(10 + u32::from(i), Ipv4Addr::new(172, 16, i, 1), 24))
            .chain([interface(10, Ipv4Addr::new(172, 16, 0, 1), 24)])
            .collect();
        let changes = announcer.set_interfaces(100_000, &many);
        assert_eq!(changes.added.len(), INTERFACES_MAX);
        assert_eq!(announcer.interfaces().count(), INTERFACES_MAX);
    }

    #[test]
    fn lan_interface_choice() {
        let private = interface(2, Ipv4Addr::new(192, 168, 1, 2), 24);
        let cgnat = interface(3, Ipv4Addr::new(100, 64, 1, 2), 10);
        let public = interface(4, Ipv4Addr::new(81, 2, 3, 4), 24);
        let loopback = interface(1, Ipv4Addr::LOCALHOST, 8);
        assert!(is_lan_interface(&private, None));
        assert!(is_lan_interface(&cgnat, None));
        assert!(!is_lan_interface(&public, None));
        assert!(!is_lan_interface(&loopback, None));
        // Named interfaces are used whatever their address.
        assert!(is_lan_interface(&public, Some(&[4])));
        assert!(!is_lan_interface(&private, Some(&[4])));
        assert!(!is_lan_interface(&private, Some(&[])));
    }

    #[test]
    fn the_longest_message_fits_the_transmit_buffer() {
        let mut announcer = Announcer::new(config(), 1);
        let widest = interface(1, Ipv4Addr::new(255, 255, 255, 254), 1);
        announcer.config.http_port = 65_535;
        announcer.config.boot_id = 0x7FFF_FFFF;
        announcer.config.config_id = u32::MAX;
        announcer.config.max_age_s = u32::MAX;
        announcer.set_interfaces(0, &[widest]);
        let mut longest = 0;
        for (transmit, _) in drain(&mut announcer, 0) {
            longest = longest.max(transmit.len);
        }
        let from = SocketAddrV4::new(Ipv4Addr::new(255, 255, 255, 253), 1);
        announcer.handle_datagram(1, from, &search("ssdp:all", 1));
        for (_, transmit, _) in answers(&mut announcer, 1) {
            longest = longest.max(transmit.len);
        }
        assert!(longest > 300 && longest <= TRANSMIT_BYTES_MAX, "{longest}");
    }

    #[test]
    fn boot_id_is_31_bits() {
        let uuid = heapless::String::try_from(UUID).unwrap();
        assert_eq!(Config::new(uuid.clone(), 1, 5).boot_id, 5);
        assert_eq!(Config::new(uuid, 1, 1 << 31 | 3).boot_id, 3);
    }
}
