//! The driver: it owns the channels, the worker tasks and the HAL handles,
//! moves bytes between sockets and the state machines, and decides nothing
//! itself (routing, policies and documents live in `lan`, `ingest`, `ring`).
//!
//! Everything is allocated in [`Node::new`] and [`spawn_all`]: one ring per
//! channel, a fixed pool of control workers (requests, status pages) and a
//! fixed pool of stream workers (one per allowed reader). The acceptor hands a
//! new connection to an idle control worker; a stream request is handed on to
//! an idle stream worker; when a pool is empty the answer is `503` with
//! `Retry-After`. Nothing grows after start-up.

mod http;
mod ingest;
pub mod output;
pub mod portmap;
pub mod ssdp;
mod stream;

use core::cell::{Cell, RefCell};
use core::future::Future;
use core::net::SocketAddr;
use core::pin::pin;
use core::task::{Poll, Waker};
use std::rc::Rc;

use ringcast_hal::exec::Executor;
use ringcast_hal::{Clock, MulticastInterface, Net, Rng as _, XorShift};

use crate::config::{ProgramSelect, Source};
use crate::lan::ChannelState;
use crate::ring::{guard_bytes_for, Ring};
use crate::state::NodeState;
use crate::stats::{ChannelStats, Totals};
use crate::wire::udpxy::OnDemand;

/// Control workers: request parsing, documents, hand-off. Bounds the number of
/// connections being read at once (a slow-loris costs one of these for at
/// most the header timeout).
pub const CONTROL_WORKERS: usize = 16;

/// Control workers one LAN host may hold at once (half the pool): a host
/// that opens idle connections cannot take them all, so other players and
/// TVs still get their requests read. The box itself (loopback) is exempt.
pub const CONTROL_WORKERS_PER_HOST: usize = CONTROL_WORKERS / 2;

/// When stream workers let the kernel send ring pages without copying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Always copy.
    Never,
    /// Only for players on other hosts, and only when the ring's guard covers
    /// the bytes a socket can hold unacknowledged. A player on this host keeps
    /// sent pages referenced until it reads them, however far behind it is.
    Remote,
    /// For every player (the hazard above is accepted).
    Always,
}

/// Run-time settings of the driver, in the units it uses.
#[derive(Clone, Debug)]
pub struct Settings {
    pub readers_max: usize,
    pub flush_ms: u64,
    pub stall_timeout_ms: u64,
    pub header_timeout_ms: u64,
    pub gap_timeout_ms: u64,
    pub linger_ms: u64,
    pub rejoin_interval_ms: u64,
    pub multicast_interface: MulticastInterface,
    pub on_demand_channels: usize,
    pub on_demand_ring_bytes: usize,
    pub zero_copy: ZeroCopy,
    /// New readers start at the newest keyframe (true) or the live edge.
    pub instant_start: bool,
    /// Kernel send buffer per reader: bounds bytes in flight (and so the ring
    /// guard needed for `sendfile`).
    pub reader_send_buffer_bytes: usize,
    /// TCP port of the peer listener; 0 = none.
    pub peer_port: u16,
    /// How often port mappings are checked (for the log's wording).
    pub portmap_check_ms: u64,
    /// Serve the DLNA MediaServer (documents and SOAP control).
    pub dlna: bool,
}

/// A channel definition for [`Node::new`].
pub struct ChannelSetup {
    pub name: String,
    pub source: Source,
    pub ring_bytes: usize,
    /// The program served from a multi-program stream.
    pub program: ProgramSelect,
    /// Where the channel is also sent as RTP/UDP, if anywhere.
    pub output: Option<crate::config::OutputConfig>,
}

/// Per-slot state of an on-demand (udpxy-style) channel.
#[derive(Default)]
pub struct OnDemandSlot {
    pub key: Cell<Option<OnDemand>>,
    /// Readers handed to a worker but not yet counted in `readers`.
    pub pending: Cell<u32>,
    pub last_reader_left_ms: Cell<u64>,
    activation: RefCell<Option<Waker>>,
}

/// One channel: its ring, counters and the readers waiting for data.
pub struct Channel<R: ringcast_hal::Region> {
    pub name: RefCell<String>,
    pub source: RefCell<String>,
    pub config_source: Option<Source>,
    pub program: ProgramSelect,
    /// Where the channel is also sent as RTP/UDP (its task is in `output`).
    pub output: Option<crate::config::OutputConfig>,
    pub ring: RefCell<Ring<R>>,
    pub stats: ChannelStats,
    pub state: Cell<ChannelState>,
    /// Bumped to tell every reader to leave (source lost for too long).
    pub epoch: Cell<u64>,
    pub last_data_ms: Cell<u64>,
    pub on_demand: Option<OnDemandSlot>,
    waiters: RefCell<Box<[Option<Waker>]>>,
}

impl<R: ringcast_hal::Region> Channel<R> {
    /// Wakes every reader waiting for data or for the epoch to change.
    pub fn wake_readers(&self) {
        let mut waiters = self.waiters.borrow_mut();
        for waiter in waiters.iter_mut() {
            if let Some(waker) = waiter.take() {
                waker.wake();
            }
        }
    }

    /// Tells every reader to leave.
    pub fn close_readers(&self) {
        self.epoch.set(self.epoch.get() + 1);
        self.wake_readers();
    }

    /// The waiter slot of the channel's RTP/UDP output task.
    pub fn output_waiter(&self) -> usize {
        self.waiters.borrow().len() - 1
    }

    /// Resolves when data past `position` exists or the epoch moved on.
    /// `worker` is a stream worker's index, or [`Channel::output_waiter`].
    pub fn wait_for_data(
        &self,
        worker: usize,
        position: u64,
        epoch: u64,
    ) -> impl Future<Output = ()> + '_ {
        core::future::poll_fn(move |context| {
            if self.ring.borrow().head() > position || self.epoch.get() != epoch {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            match &mut waiters[worker] {
                Some(waker) if waker.will_wake(context.waker()) => {}
                slot => *slot = Some(context.waker().clone()),
            }
            Poll::Pending
        })
    }

    /// True if this is an on-demand slot with no group assigned.
    pub fn is_free_slot(&self) -> bool {
        self.on_demand
            .as_ref()
            .is_some_and(|slot| slot.key.get().is_none())
    }

    /// Readers counted or on their way.
    pub fn demand(&self) -> u64 {
        let pending = self.on_demand.as_ref().map_or(0, |slot| slot.pending.get());
        self.stats.readers.get() + u64::from(pending)
    }
}

/// A fixed set of idle workers, each waiting for one item.
pub struct Handoff<T> {
    slots: Box<[HandoffSlot<T>]>,
    /// Woken when a worker becomes idle (the acceptor waits on it).
    idle_waiter: RefCell<Option<Waker>>,
}

struct HandoffSlot<T> {
    idle: Cell<bool>,
    item: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Handoff<T> {
    pub fn new(workers: usize) -> Self {
        let slots = (0..workers)
            .map(|_| HandoffSlot {
                idle: Cell::new(false),
                item: RefCell::new(None),
                waker: RefCell::new(None),
            })
            .collect();
        Self {
            slots,
            idle_waiter: RefCell::new(None),
        }
    }

    /// Gives `item` to an idle worker, or hands it back if none is idle.
    /// Returns the worker's index.
    pub fn try_give(&self, item: T) -> Result<usize, T> {
        let Some((index, slot)) = self
            .slots
            .iter()
            .enumerate()
            .find(|(_, s)| s.idle.get() && s.item.borrow().is_none())
        else {
            return Err(item);
        };
        *slot.item.borrow_mut() = Some(item);
        slot.idle.set(false);
        if let Some(waker) = slot.waker.borrow_mut().take() {
            waker.wake();
        }
        Ok(index)
    }

    /// Waits, as worker `index`, for the next item.
    pub fn take(&self, index: usize) -> impl Future<Output = T> + '_ {
        let slot = &self.slots[index];
        slot.idle.set(true);
        if let Some(waker) = self.idle_waiter.borrow_mut().take() {
            waker.wake();
        }
        core::future::poll_fn(move |context| {
            if let Some(item) = slot.item.borrow_mut().take() {
                slot.idle.set(false);
                return Poll::Ready(item);
            }
            *slot.waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
    }

    /// Resolves once some worker is idle.
    pub fn wait_idle(&self) -> impl Future<Output = ()> + '_ {
        core::future::poll_fn(move |context| {
            if self.idle_count() > 0 {
                return Poll::Ready(());
            }
            *self.idle_waiter.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
    }

    /// Idle workers right now.
    pub fn idle_count(&self) -> usize {
        self.slots.iter().filter(|s| s.idle.get()).count()
    }
}

/// A stream request on its way to a stream worker.
pub struct StreamJob<S> {
    pub stream: S,
    pub channel: usize,
    pub start: crate::lan::StartAt,
    /// The player's User-Agent, cut to fit (for the log).
    pub agent: Agent,
}

/// Bytes of a player's User-Agent kept for the log.
pub const AGENT_BYTES_MAX: usize = 64;

/// A player's User-Agent, printable ASCII only, cut to fit.
pub type Agent = heapless::String<AGENT_BYTES_MAX>;

/// The printable part of a User-Agent header value.
pub fn agent_from(value: Option<&[u8]>) -> Agent {
    let mut agent = Agent::new();
    for &byte in value.unwrap_or(b"-") {
        let printable = if (0x20..0x7f).contains(&byte) {
            byte
        } else {
            b'?'
        };
        if agent.push(char::from(printable)).is_err() {
            break;
        }
    }
    agent
}

/// The whole relay.
pub struct Node<N: Net + 'static, C: Clock + 'static> {
    pub net: N,
    pub clock: C,
    pub settings: Settings,
    pub channels: Box<[Rc<Channel<N::Region>>]>,
    pub static_channels: usize,
    pub totals: Totals,
    pub listener: N::Listener,
    pub listen_address: SocketAddr,
    control: Handoff<N::Stream>,
    /// The host each control worker is serving (for the per-host limit).
    control_hosts: RefCell<[Option<core::net::IpAddr>; CONTROL_WORKERS]>,
    streams: Handoff<StreamJob<N::Stream>>,
    rng: RefCell<XorShift>,
    stdin: RefCell<Option<N::Stream>>,
    /// Identity and names; `main` replaces the ephemeral default with what
    /// the state store holds.
    pub state: NodeState,
    /// Where the state is kept, for `/status` ("" when it is not kept).
    pub state_path: String,
    /// The DLNA content's SystemUpdateID (moves when the channel list does).
    pub dlna_update_id: Cell<u32>,
    /// The state store, kept open for records written while running.
    pub store: RefCell<Option<Box<dyn crate::state::Persist>>>,
    /// The peer port's listener, until [`spawn_all`] starts its task.
    peer_listener: RefCell<Option<N::Listener>>,
    /// Port mapping: the mappers until they start, and their reports.
    pub portmap: portmap::PortmapShared,
    /// SSDP of the DLNA MediaServer: the announcer until it starts, counters.
    pub ssdp: ssdp::SsdpShared,
}

fn make_channel<N: Net>(
    net: &N,
    setup: ChannelSetup,
    readers_max: usize,
    on_demand: bool,
) -> Result<Channel<N::Region>, N::Error> {
    let region = net.region(setup.ring_bytes)?;
    let guard = guard_bytes_for(setup.ring_bytes);
    // Room for any on-demand name or source, so tuning a slot never allocates.
    let mut name = String::with_capacity(crate::limits::SOURCE_URL_BYTES_MAX);
    name.push_str(&setup.name);
    let mut source = String::with_capacity(crate::limits::SOURCE_URL_BYTES_MAX);
    source.push_str(&setup.source.to_string());
    Ok(Channel {
        source: RefCell::new(source),
        name: RefCell::new(name),
        config_source: (!on_demand).then_some(setup.source),
        program: setup.program,
        output: setup.output,
        ring: RefCell::new(Ring::new(region, guard)),
        stats: ChannelStats::default(),
        state: Cell::new(if on_demand {
            ChannelState::Idle
        } else {
            ChannelState::Connecting
        }),
        epoch: Cell::new(0),
        last_data_ms: Cell::new(0),
        on_demand: on_demand.then(OnDemandSlot::default),
        // One waiter per stream worker, and one for the RTP/UDP output.
        waiters: RefCell::new((0..=readers_max).map(|_| None).collect()),
    })
}

/// Bytes from a generator seeded with `seed` (for ephemeral identities).
fn seeded_bytes(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut rng = XorShift::new(seed ^ 0x005E_ED1D);
    move |bytes: &mut [u8]| {
        for byte in bytes {
            *byte = rng.next_u32() as u8;
        }
    }
}

impl<N: Net + 'static, C: Clock + 'static> Node<N, C> {
    /// Allocates every channel ring and worker slot, and binds the listener.
    pub fn new(
        net: N,
        clock: C,
        settings: Settings,
        listen: SocketAddr,
        channels: Vec<ChannelSetup>,
        stdin: Option<N::Stream>,
        seed: u64,
    ) -> Result<Self, N::Error> {
        use ringcast_hal::TcpListener as _;
        assert!(
            channels.len() <= crate::limits::CHANNELS_MAX,
            "config allowed too many channels"
        );
        assert!(settings.on_demand_channels <= crate::limits::ON_DEMAND_CHANNELS_MAX);
        assert!(settings.readers_max >= 1 && settings.readers_max <= crate::limits::READERS_MAX);
        let listener = net.tcp_listen(listen, 1024)?;
        let listen_address = listener.local_addr()?;
        let peer_listener = match settings.peer_port {
            0 => None,
            port => Some(net.tcp_listen(SocketAddr::new(listen.ip(), port), 64)?),
        };
        let static_channels = channels.len();
        let mut table = Vec::with_capacity(static_channels + settings.on_demand_channels);
        for setup in channels {
            table.push(Rc::new(make_channel(
                &net,
                setup,
                settings.readers_max,
                false,
            )?));
        }
        for _ in 0..settings.on_demand_channels {
            let setup = ChannelSetup {
                name: String::new(),
                source: Source::Stdin,
                ring_bytes: settings.on_demand_ring_bytes,
                program: ProgramSelect::All,
                output: None,
            };
            table.push(Rc::new(make_channel(
                &net,
                setup,
                settings.readers_max,
                true,
            )?));
        }
        Ok(Self {
            control: Handoff::new(CONTROL_WORKERS),
            control_hosts: RefCell::new([None; CONTROL_WORKERS]),
            streams: Handoff::new(settings.readers_max),
            net,
            clock,
            settings,
            channels: table.into_boxed_slice(),
            static_channels,
            totals: Totals::default(),
            listener,
            listen_address,
            rng: RefCell::new(XorShift::new(seed)),
            stdin: RefCell::new(stdin),
            state: NodeState::ephemeral(&mut seeded_bytes(seed), "ringcast"),
            state_path: String::new(),
            dlna_update_id: Cell::new(1),
            store: RefCell::new(None),
            peer_listener: RefCell::new(peer_listener),
            portmap: portmap::PortmapShared::disabled(),
            ssdp: ssdp::SsdpShared::disabled(),
        })
    }

    /// Tasks [`spawn_all`] will start: size executors and timer tables with it.
    pub fn task_count(&self) -> usize {
        1 + CONTROL_WORKERS
            + self.settings.readers_max
            + self.channels.len()
            + usize::from(self.peer_listener.borrow().is_some())
            + self.channels.iter().filter(|c| c.output.is_some()).count()
            + self.portmap.task_count()
            + self.ssdp.task_count()
    }

    /// The index of a static channel by name.
    pub fn channel_by_name(&self, name: &str) -> Option<usize> {
        self.channels[..self.static_channels]
            .iter()
            .position(|channel| channel.name.borrow().as_str() == name)
    }

    pub fn bytes_totals(&self) -> (u64, u64) {
        self.channels
            .iter()
            .fold((0, 0), |(bytes_in, bytes_out), channel| {
                (
                    bytes_in + channel.stats.bytes_in.get(),
                    bytes_out + channel.stats.bytes_out.get(),
                )
            })
    }

    fn random(&self) -> XorShift {
        let mut rng = self.rng.borrow_mut();
        XorShift::new(
            u64::from(ringcast_hal::Rng::next_u32(&mut *rng)) << 32
                | u64::from(ringcast_hal::Rng::next_u32(&mut *rng)),
        )
    }
}

/// Spawns every task of the node on `executor`. Call once at start-up.
pub fn spawn_all<N: Net + 'static, C: Clock + 'static>(
    node: &Rc<Node<N, C>>,
    executor: &mut Executor,
) {
    let spawned = executor.try_spawn(http::accept_loop(node.clone()));
    assert!(spawned.is_ok(), "executor sized below the task count");
    for worker in 0..CONTROL_WORKERS {
        let spawned = executor.try_spawn(http::control_worker(node.clone(), worker));
        assert!(spawned.is_ok(), "executor sized below the task count");
    }
    for worker in 0..node.settings.readers_max {
        let spawned = executor.try_spawn(stream::stream_worker(node.clone(), worker));
        assert!(spawned.is_ok(), "executor sized below the task count");
    }
    for index in 0..node.channels.len() {
        let spawned = executor.try_spawn(ingest::ingest_task(node.clone(), index));
        assert!(spawned.is_ok(), "executor sized below the task count");
    }
    for index in 0..node.channels.len() {
        if node.channels[index].output.is_some() {
            let spawned = executor.try_spawn(output::output_task(node.clone(), index));
            assert!(spawned.is_ok(), "executor sized below the task count");
        }
    }
    if let Some(listener) = node.peer_listener.borrow_mut().take() {
        let spawned = executor.try_spawn(portmap::peer_listener(node.clone(), listener));
        assert!(spawned.is_ok(), "executor sized below the task count");
    }
    for (mapper, mapping) in node.portmap.take_mappers() {
        let spawned = executor.try_spawn(portmap::portmap_task(node.clone(), mapper, mapping));
        assert!(spawned.is_ok(), "executor sized below the task count");
    }
    if let Some(announcer) = node.ssdp.take_announcer() {
        let spawned = executor.try_spawn(ssdp::ssdp_task(node.clone(), announcer));
        assert!(spawned.is_ok(), "executor sized below the task count");
    }
}

/// The first of two futures to finish.
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures; returns the first result (left wins a tie).
pub async fn first_of<A: Future, B: Future>(left: A, right: B) -> Either<A::Output, B::Output> {
    let mut left = pin!(left);
    let mut right = pin!(right);
    core::future::poll_fn(move |context| {
        if let Poll::Ready(value) = left.as_mut().poll(context) {
            return Poll::Ready(Either::Left(value));
        }
        if let Poll::Ready(value) = right.as_mut().poll(context) {
            return Poll::Ready(Either::Right(value));
        }
        Poll::Pending
    })
    .await
}
