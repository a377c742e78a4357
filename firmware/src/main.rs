//! The `ringcast` daemon: parses the command line and config file, allocates
//! every ring, table and worker once, and runs the single-threaded event loop
//! (the HAL's fixed executor on the Linux epoll reactor) until SIGTERM or
//! SIGINT.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use ringcast::alloc_count::CountingAllocator;
use ringcast::config::{self, Command, Config, ProgramSelect, SendMode, Source};
use ringcast::lan::ssdp::{self, Announcer};
use ringcast::node::portmap::PortmapShared;
use ringcast::node::ssdp::SsdpShared;
use ringcast::node::{self, ChannelSetup, Node, Settings, ZeroCopy};
use ringcast::portmap::{self, Mapper, PcpRecord};
use ringcast::state::{self, NodeState};
use ringcast::{limits, log_sink};
use ringcast_hal::exec::Executor;
use ringcast_hal::linux::{self, LinuxClock, LinuxNet, Reactor};
use ringcast_hal::store::{OpenReport, RecordStore};
use ringcast_hal::FlashGeometry;
use ringcast_hal::{MulticastInterface, Net as _};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Ring size of the demo channel.
const DEMO_RING_BYTES: usize = 8 * 1024 * 1024;
/// Kernel send buffer per reader.
const READER_SEND_BUFFER_BYTES: usize = 256 * 1024;

fn main() -> ExitCode {
    match config::parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", config::HELP);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("ringcast {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Run(config)) => run(*config),
        Err(error) => {
            eprintln!("ringcast: {error}\nTry 'ringcast --help'.");
            ExitCode::from(2)
        }
    }
}

/// Where the demo file may be: in the checkout the binary was built in
/// (`target/release/ringcast` or `target/<triple>/release/ringcast`, found
/// from the executable's own path), in the current directory, or where a
/// package installs it. No path of the build machine is compiled in.
fn find_demo() -> Option<PathBuf> {
    const DEMO: &str = "assets/demo.ts";
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    {
        candidates.push(exe_dir.join("../..").join(DEMO));
        candidates.push(exe_dir.join("../../..").join(DEMO));
    }
    candidates.push(PathBuf::from(DEMO));
    candidates.push(PathBuf::from("/usr/share/ringcast/demo.ts"));
    let found = candidates.into_iter().find(|path| path.is_file())?;
    Some(std::fs::canonicalize(&found).unwrap_or(found))
}

fn channel_setups(config: &Config) -> Result<Vec<ChannelSetup>, String> {
    if config.demo {
        let Some(path) = find_demo() else {
            if config.on_demand {
                // A router used as a udpxy replacement needs no channel list.
                log::warn!(
                    "no channel is configured and the demo file assets/demo.ts was not found; \
                     serving on-demand /udp/ and /rtp/ URLs only"
                );
                return Ok(Vec::new());
            }
            return Err(
                "no channel is configured, on-demand is off and the demo file \
                        assets/demo.ts was not found; add a channel with --channel NAME=URL \
                        (see --help)"
                    .into(),
            );
        };
        return Ok(vec![ChannelSetup {
            name: "demo".into(),
            source: Source::File {
                path,
                bitrate_bps: None,
            },
            ring_bytes: DEMO_RING_BYTES,
            program: ProgramSelect::All,
            output: None,
        }]);
    }
    Ok(config
        .channels
        .iter()
        .map(|channel| ChannelSetup {
            name: channel.name.clone(),
            source: channel.source.clone(),
            ring_bytes: channel.ring_bytes.unwrap_or(config.ring_bytes),
            program: channel.program.clone(),
            output: channel.output.clone(),
        })
        .collect())
}

fn settings(config: &Config, net: &LinuxNet) -> Settings {
    let multicast_interface = match &config.multicast_interface {
        None => MulticastInterface::Any,
        Some(name) => match net.interface_index(name) {
            Ok(index) => MulticastInterface::Index(index),
            Err(error) => {
                log::warn!("--multicast-if {name}: {error}; letting the kernel choose");
                MulticastInterface::Any
            }
        },
    };
    Settings {
        readers_max: config.readers_max,
        flush_ms: u64::from(config.flush_ms),
        stall_timeout_ms: u64::from(config.stall_timeout_s) * 1000,
        header_timeout_ms: u64::from(config.header_timeout_s) * 1000,
        gap_timeout_ms: u64::from(config.gap_timeout_s) * 1000,
        linger_ms: u64::from(config.linger_s) * 1000,
        rejoin_interval_ms: u64::from(config.rejoin_interval_s) * 1000,
        multicast_interface,
        on_demand_channels: if config.on_demand {
            limits::ON_DEMAND_CHANNELS_DEFAULT
        } else {
            0
        },
        on_demand_ring_bytes: config.on_demand_ring_bytes,
        instant_start: config.instant_start,
        zero_copy: match config.send_mode {
            SendMode::Auto => ZeroCopy::Remote,
            SendMode::Sendfile => ZeroCopy::Always,
            SendMode::Copy => ZeroCopy::Never,
        },
        reader_send_buffer_bytes: READER_SEND_BUFFER_BYTES,
        peer_port: config.peer_port,
        portmap_check_ms: u64::from(config.portmap_check_s) * 1000,
        dlna: config.dlna,
    }
}

/// The mapper of `internal_port`, with the PCP record a previous run kept.
fn mapper_for(
    config: &Config,
    internal_port: u16,
    external_port: u16,
    label: &str,
    stored: Option<&[u8]>,
) -> Mapper {
    let mut methods = heapless::Vec::new();
    for method in &config.portmap {
        let _ = methods.push(*method);
    }
    let mut label_text = heapless::String::new();
    let _ = label_text.push_str(label);
    let mut seed = [0u8; 8];
    fill_random(&mut seed);
    Mapper::new(
        portmap::Config {
            methods,
            internal_port,
            external_port,
            lease_s: config.portmap_lease_s,
            check_interval_ms: u64::from(config.portmap_check_s) * 1000,
            label: label_text,
        },
        stored.and_then(PcpRecord::decode),
        u64::from_le_bytes(seed),
    )
}

/// Sets up port mapping of the peer port (and the LAN HTTP port when the
/// config asks), or leaves it off.
fn port_mapping<N: ringcast_hal::Net + 'static, C: ringcast_hal::Clock + 'static>(
    config: &Config,
    node: &Node<N, C>,
) -> PortmapShared {
    if config.peer_port == 0 || config.portmap.is_empty() {
        if config.peer_port == 0 {
            log::info!("peer port: off (--peer-port 0); nothing is mapped on the router");
        } else {
            log::info!(
                "portmap: off; peers can reach this box only if its router forwards port {}",
                config.peer_port
            );
        }
        return PortmapShared::disabled();
    }
    let store = node.store.borrow();
    let load = |name: &str| store.as_ref().and_then(|s| s.load(name));
    let peer = mapper_for(
        config,
        config.peer_port,
        config.portmap_port,
        "ringcast peer",
        load(state::PORTMAP_PCP),
    );
    let lan_http = config.portmap_lan_http.then(|| {
        let port = node.listen_address.port();
        log::warn!(
            "portmap: the LAN HTTP port {port} is mapped on the router too \
             (--portmap-lan-http): every channel, the playlist and the status page \
             become reachable from the internet"
        );
        mapper_for(
            config,
            port,
            port,
            "ringcast http",
            load(state::PORTMAP_PCP_LAN_HTTP),
        )
    });
    let methods: Vec<&str> = config.portmap.iter().map(|m| m.name()).collect();
    log::info!(
        "portmap: opening peer port {} on the router ({}; lease {} s, check every {} s)",
        config.peer_port,
        methods.join(", "),
        config.portmap_lease_s,
        config.portmap_check_s
    );
    PortmapShared::new(peer, lan_http, config.portmap_interface.clone())
}

/// Sets up SSDP for the DLNA MediaServer, or leaves it off.
fn ssdp_setup<N: ringcast_hal::Net + 'static, C: ringcast_hal::Clock + 'static>(
    config: &Config,
    node: &Node<N, C>,
) -> SsdpShared {
    if !config.dlna {
        log::info!("dlna: off (--dlna off); TVs will not list this box by themselves");
        return SsdpShared::disabled();
    }
    if node.listen_address.ip().is_loopback() {
        log::info!(
            "dlna: off, as the HTTP port listens on {} only (use --listen 0.0.0.0:PORT for TVs)",
            node.listen_address.ip()
        );
        return SsdpShared::disabled();
    }
    let settings = ssdp::Config::new(
        node.state.dlna_uuid_text(),
        node.listen_address.port(),
        node.state.boots,
    );
    let mut seed = [0u8; 8];
    fill_random(&mut seed);
    let announcer = Announcer::new(settings, u64::from_le_bytes(seed));
    SsdpShared::new(announcer, config.lan_interfaces.clone())
}

/// Standard input as a non-blocking stream, if a channel reads it.
fn stdin_stream(reactor: &Reactor, wanted: bool) -> Result<Option<linux::Stream>, String> {
    if !wanted {
        return Ok(None);
    }
    // SAFETY: fd 0 is open for the life of the process; we duplicate it.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let fd =
        rustix::io::fcntl_dupfd_cloexec(stdin, 3).map_err(|e| format!("standard input: {e}"))?;
    rustix::io::ioctl_fionbio(&fd, true).map_err(|e| format!("standard input: {e}"))?;
    linux::Stream::from_fd(reactor, fd)
        .map(Some)
        .map_err(|e| format!("standard input: {e}"))
}

/// The first non-loopback IPv4 address of this box, for printing URLs.
fn lan_address() -> Option<std::net::Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/fib_trie").ok()?;
    let mut last = None;
    for line in table.lines() {
        if let Some(address) = line.trim().strip_prefix("|-- ") {
            last = address.parse::<std::net::Ipv4Addr>().ok();
        } else if line.contains("/32 host LOCAL") {
            if let Some(address) = last.filter(|a| !a.is_loopback()) {
                return Some(address);
            }
        }
    }
    None
}

fn announce<N: ringcast_hal::Net + 'static, C: ringcast_hal::Clock + 'static>(node: &Node<N, C>) {
    let listen = node.listen_address;
    log::info!("listening on http://{listen}/");
    let host = if listen.ip().is_unspecified() {
        lan_address().map_or_else(|| "127.0.0.1".to_string(), |a| a.to_string())
    } else {
        listen.ip().to_string()
    };
    for channel in node.channels[..node.static_channels].iter() {
        log::info!(
            "channel {} from {}: open http://{host}:{}/channel/{}.ts in VLC",
            channel.name.borrow(),
            channel.source.borrow(),
            listen.port(),
            channel.name.borrow()
        );
    }
    log::info!(
        "playlist: http://{host}:{}/playlist.m3u, status: http://{host}:{}/",
        listen.port(),
        listen.port()
    );
}

/// Makes SIGTERM and SIGINT write a byte to a pipe the loop watches.
fn signal_pipe(reactor: &Reactor) -> Result<linux::Registration, String> {
    let (read_end, write_end) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )
    .map_err(|e| format!("signal pipe: {e}"))?;
    let write_fd = write_end.as_raw_fd();
    std::mem::forget::<OwnedFd>(write_end);
    for signal in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        // SAFETY: the handler only calls write(2), which is async-signal-safe,
        // on an fd that stays open for the life of the process.
        let registered = unsafe {
            signal_hook_registry::register(signal.as_raw(), move || {
                let fd = BorrowedFd::borrow_raw(write_fd);
                let _ = rustix::io::write(fd, &[1]);
            })
        };
        registered.map_err(|e| format!("signal handler: {e}"))?;
    }
    reactor
        .register(read_end)
        .map_err(|e| format!("signal pipe: {e}"))
}

fn run(config: Config) -> ExitCode {
    log_sink::install(config.log_level);
    for adjustment in &config.adjustments {
        log::warn!("{adjustment}");
    }
    match start(&config) {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(message) => {
            log::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn start(config: &Config) -> Result<(), String> {
    let setups = channel_setups(config)?;
    let wants_stdin = setups.iter().any(|s| matches!(s.source, Source::Stdin));
    let io_max = node::CONTROL_WORKERS
        + config.readers_max
        + 4 * (setups.len() + limits::ON_DEMAND_CHANNELS_MAX)
        + 16;
    let reactor = Reactor::new(io_max, io_max).map_err(|e| format!("event loop: {e}"))?;
    // Streams start copying; stream workers turn zero-copy on per player.
    let net = LinuxNet::new(reactor.clone(), linux::SendMode::Copy);
    let stdin = stdin_stream(&reactor, wants_stdin)?;
    let settings = settings(config, &net);
    let clock = LinuxClock::new(reactor.clone());
    let seed = u64::from(std::process::id()) << 32 | reactor.now_ms();
    let mut node = Node::new(net, clock, settings, config.listen, setups, stdin, seed)
        .map_err(|e| format!("cannot start on {}: {e}", config.listen))?;
    let names = channel_names(&node);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut state, state_path, store, update_id) = open_state(config.state_dir.as_deref(), &names);
    if let Some(name) = &config.friendly_name {
        state.friendly_name.clear();
        let _ = state.friendly_name.push_str(name);
    }
    node.dlna_update_id.set(update_id);
    node.state = state;
    node.state_path = state_path;
    node.store = std::cell::RefCell::new(store);
    node.portmap = port_mapping(config, &node);
    node.ssdp = ssdp_setup(config, &node);
    let node = Rc::new(node);
    let signals = signal_pipe(&reactor)?;
    let stop = Rc::new(std::cell::Cell::new(false));
    let mut executor = Executor::new(node.task_count() + 1);
    node::spawn_all(&node, &mut executor);
    let spawned = executor.try_spawn(watch_signals(signals, stop.clone()));
    assert!(spawned.is_ok(), "executor sized for the signal task");
    announce(&node);
    event_loop(&reactor, &mut executor, &stop)?;
    finish_before_exit(&reactor, &mut executor, &node)
}

/// Deletes the mappings on the router and sends SSDP's byebye before exit,
/// within a bounded time.
fn finish_before_exit(
    reactor: &Reactor,
    executor: &mut Executor,
    node: &Node<LinuxNet, LinuxClock>,
) -> Result<(), String> {
    node.portmap.request_stop();
    node.ssdp.request_stop();
    let deadline = reactor.now_ms() + node::portmap::SHUTDOWN_MS + 500;
    loop {
        executor.run_ready();
        let finished = node.portmap.is_finished() && node.ssdp.is_finished();
        if finished || reactor.now_ms() >= deadline {
            return Ok(());
        }
        let timeout_ms = if executor.has_ready() {
            0
        } else {
            deadline.saturating_sub(reactor.now_ms())
        };
        reactor
            .wait(Some(timeout_ms))
            .map_err(|e| format!("event loop: {e}"))?;
    }
}

/// The state file inside the state directory.
const STATE_FILE: &str = "ringcast.state";

/// The state file's layout: two 64 KiB erase blocks (one per copy), written
/// in 4 KiB pages, as on a NOR flash partition.
const STATE_GEOMETRY: FlashGeometry = FlashGeometry {
    block_bytes: 64 * 1024,
    page_bytes: 4096,
    blocks: 2,
};

/// Fills `bytes` from the kernel's random source.
fn fill_random(bytes: &mut [u8]) {
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(count) => filled += count,
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => panic!("the kernel's random source failed: {error}"),
        }
    }
}

/// The open state store, for records written while running.
type Store = Option<Box<dyn state::Persist>>;

/// Loads (or creates) the node's identity from the state directory and
/// counts the boot. Any failure is logged and leaves an identity that lasts
/// until the process exits; a store from a newer ringcast is not touched.
/// The store stays open for the records written while running.
fn open_state(dir: Option<&Path>, channels: &[&str]) -> (NodeState, String, Store, u32) {
    let uname = rustix::system::uname();
    let hostname = uname.nodename().to_string_lossy();
    let ephemeral = || {
        (
            NodeState::ephemeral(&mut fill_random, &hostname),
            String::new(),
            None,
            1,
        )
    };
    let Some(dir) = dir else {
        log::info!("state: not kept (state_dir = off); a new identity each start");
        return ephemeral();
    };
    let path = dir.join(STATE_FILE);
    let shown = path.display().to_string();
    let opened =
        std::fs::create_dir_all(dir).and_then(|()| linux::FileFlash::open(&path, STATE_GEOMETRY));
    let flash = match opened {
        Ok(flash) => flash,
        Err(error) => {
            log::warn!(
                "state: cannot use {shown}: {error}; the identity and DLNA UUID will change at \
                 the next start (set --state-dir to a writable directory, or off)"
            );
            return ephemeral();
        }
    };
    let (mut store, report) = match RecordStore::open(flash, state::LIMITS) {
        Ok(opened) => opened,
        Err(error) => {
            log::error!("state: {shown}: {error}; left untouched, nothing is kept this run");
            return ephemeral();
        }
    };
    match report {
        OpenReport::Fresh => log::info!("state: new store {shown}"),
        OpenReport::Loaded { .. } => {}
        OpenReport::RecoveredOlder { sequence } => log::warn!(
            "state: {shown}: the newest copy was damaged (power cut or bad flash); using the \
             previous one (#{sequence})"
        ),
        OpenReport::Migrated { from_version } => {
            log::info!("state: {shown}: converted from format version {from_version}")
        }
        OpenReport::Damaged => {
            log::warn!("state: {shown}: no intact copy; starting with a new identity and DLNA UUID")
        }
    }
    let loaded = NodeState::load_or_create(&mut store, &mut fill_random, &hostname)
        .and_then(|state| Ok((state, state::content_update_id(&mut store, channels)?)))
        .and_then(|loaded| store.commit().map(|()| loaded));
    let (state, update_id) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            log::error!("state: {shown}: {error}; nothing is kept this run");
            return ephemeral();
        }
    };
    log::info!(
        "state: node {}, DLNA uuid:{}, \"{}\", boot {} (kept in {shown})",
        &state.node_id_hex()[..16],
        state.dlna_uuid_text(),
        state.friendly_name,
        state.boots
    );
    (state, shown, Some(Box::new(store)), update_id)
}

/// The static channels' names, for the DLNA SystemUpdateID.
fn channel_names<N: ringcast_hal::Net + 'static, C: ringcast_hal::Clock + 'static>(
    node: &Node<N, C>,
) -> Vec<String> {
    node.channels[..node.static_channels]
        .iter()
        .map(|channel| channel.name.borrow().clone())
        .collect()
}

/// Sets `stop` when SIGTERM or SIGINT arrives (through the signal pipe).
async fn watch_signals(signals: linux::Registration, stop: Rc<std::cell::Cell<bool>>) {
    let mut byte = [0u8; 1];
    loop {
        if signals.readable().await.is_err() {
            continue;
        }
        if let Ok(1) = signals.read(&mut byte) {
            stop.set(true);
            return;
        }
    }
}

fn event_loop(
    reactor: &Reactor,
    executor: &mut Executor,
    stop: &std::cell::Cell<bool>,
) -> Result<(), String> {
    loop {
        executor.run_ready();
        if stop.get() {
            log::info!("signal received; shutting down");
            return Ok(());
        }
        let timeout_ms = if executor.has_ready() { Some(0) } else { None };
        reactor
            .wait(timeout_ms)
            .map_err(|e| format!("event loop: {e}"))?;
    }
}
