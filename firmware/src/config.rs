//! Start-up configuration: the command line and the config file.
//!
//! This module turns the arguments and the optional config file into one
//! [`Config`] value. Every default, every range and every error message lives
//! here. It runs once, before anything is allocated for relaying, so it uses
//! plain `String` and `Vec`. The config file is read first and the
//! command-line options are applied on top of it, whatever their order, so the
//! command line always wins. A bad value is refused with an error that names
//! the file line and key, or the option. Ring sizes and the reader count are
//! clamped into range instead; each clamp leaves a message in
//! [`Config::adjustments`] for `main` to log once logging runs. The file
//! format is documented in README.md ("Configuration reference").

use std::fmt;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use log::LevelFilter;

use crate::limits;

/// The version printed by `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Bytes of a config file. A larger file (or `/dev/zero` by mistake) is
/// refused rather than read whole.
const CONFIG_FILE_BYTES_MAX: usize = 256 * 1024;

/// Largest value of any timeout or interval, in seconds (one day). Other
/// modules may turn seconds into `u32` milliseconds; this keeps that safe.
const SECONDS_MAX: u32 = 24 * 60 * 60;
/// The peer port (PeerCast's well-known port, for the PCP work to come).
const PEER_PORT_DEFAULT: u16 = 7144;
/// Lease asked of the router: an hour, renewed every half hour.
const PORTMAP_LEASE_S_DEFAULT: u32 = 3600;
/// Mapping checks every five minutes.
const PORTMAP_CHECK_S_DEFAULT: u32 = 300;

/// Bytes of a network interface name (Linux `IFNAMSIZ` less the final NUL).
const INTERFACE_NAME_BYTES_MAX: usize = 15;

/// Bytes of a host name in an `http://` source (RFC 1035).
const HOST_NAME_BYTES_MAX: usize = 253;

/// Range of `flush_ms`.
const FLUSH_MS_MIN: u32 = 1;
const FLUSH_MS_MAX: u32 = 1000;

const LISTEN_DEFAULT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8090);
const READERS_MAX_DEFAULT: usize = 64;
const RING_BYTES_DEFAULT: usize = 16 * 1024 * 1024;
const ON_DEMAND_RING_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
const GAP_TIMEOUT_S_DEFAULT: u32 = 15;
const LINGER_S_DEFAULT: u32 = 5;
const STALL_TIMEOUT_S_DEFAULT: u32 = 20;
const HEADER_TIMEOUT_S_DEFAULT: u32 = 5;
const FLUSH_MS_DEFAULT: u32 = 50;

/// The full `--help` text.
pub const HELP: &str = "\
Usage: ringcast [OPTIONS]

ringcast relays live TV (MPEG-TS) to the players on your network. It takes
each channel from one source (HTTP, UDP or RTP multicast, a TCP push from an
encoder, standard input or a file), keeps it in a fixed ring buffer so that a
new viewer starts at once on a keyframe, and serves it over HTTP to VLC, mpv,
Kodi and TVs. It also joins multicast groups on demand, as udpxy does. With no
channel configured it serves a built-in demo channel.

Options:
  -c, --config FILE            read settings from FILE; the options below
                               override it, whatever their order
  -l, --listen ADDR:PORT       HTTP address to serve on [default: 0.0.0.0:8090]
      --channel NAME=URL       add a channel, served at /channel/NAME.ts; repeat
                               for more (at most 32); NAME is 1 to 32 of
                               A-Z a-z 0-9 _ - .
      --ring-size SIZE         ring buffer of each channel, like 512K, 16M or 1G
                               (1024-based; plain bytes allowed) [default: 16M]
      --readers-max N          viewers streaming at once, all channels
                               together, 1 to 1000 [default: 64]
      --on-demand on|off       serve /udp/... and /rtp/... by joining the
                               multicast group on request [default: on]
      --on-demand-ring-size SIZE
                               ring buffer of each on-demand channel
                               [default: 4M]
      --multicast-if NAME      network interface for multicast joins, like eth1
                               [default: chosen by the routing table]
      --rejoin-interval SECONDS
                               leave and join multicast groups again this often,
                               for switches that forget members; 0 = never
                               [default: 0]
      --gap-timeout SECONDS    keep viewers through a source gap this long; then
                               disconnect them and reconnect an HTTP source,
                               at least 1 [default: 15]
      --linger SECONDS         keep an on-demand channel open this long after
                               its last viewer leaves [default: 5]
      --stall-timeout SECONDS  disconnect a viewer that took no bytes for this
                               long, at least 1 [default: 20]
      --header-timeout SECONDS
                               close a connection that sent no complete request
                               head within this time, at least 1 [default: 5]
      --send-mode auto|sendfile|copy
                               send stream bytes with sendfile (no copy) or
                               with plain writes; auto uses sendfile for
                               players on other hosts only [default: auto]
      --flush-ms MS            hand a partly filled chunk to viewers after at
                               most this long, 1 to 1000 [default: 50]
      --instant-start on|off   start new viewers with the newest keyframe in
                               the ring, so the picture appears at once; off
                               starts them at the live edge [default: on]
      --state-dir DIR          keep the node identity and DLNA UUID in DIR, in a
                               power-safe file; off keeps nothing
                               [default: /var/lib/ringcast]
      --peer-port PORT         TCP port for other ringcast peers; the only port
                               opened on the router; 0 = none [default: 7144]
      --portmap off|METHODS    open the peer port on the home router with these
                               methods, tried in order: upnp, pcp, natpmp
                               [default: upnp,pcp,natpmp]
      --portmap-port PORT      external port to ask the router for; it may give
                               another [default: the peer port]
      --portmap-lease SECONDS  lease to ask for, renewed at half; 0 asks UPnP
                               for a permanent mapping [default: 3600]
      --portmap-check SECONDS  check that the router still has the mapping, and
                               retry a failed search, this often [default: 300]
      --portmap-if NAME        look for the router behind this interface only
                               [default: the interface of the default route]
      --portmap-lan-http on|off
                               also open the LAN HTTP port on the router: every
                               channel becomes reachable from the internet
                               [default: off]
      --dlna on|off            announce a DLNA media server (SSDP) so TVs list
                               the channels by themselves [default: on]
      --lan-if NAMES           interfaces to announce on, like br-lan or
                               eth0,wlan0 [default: every LAN interface]
      --friendly-name TEXT     name TVs show [default: ringcast on HOSTNAME]
      --output NAME=URL        also send channel NAME to rtp://GROUP:PORT or
                               udp://GROUP:PORT (?ttl=N&iface=NAME), 7 TS
                               packets per datagram, for IPTV set-top boxes
      --log-level LEVEL        error, warn, info, debug or trace [default: info]
  -h, --help                   print this help and exit
  -V, --version                print the version and exit

Each option can also be written --option=value.

Sources (for --channel NAME=URL and 'source = URL'):
  http://HOST[:PORT]/PATH      pull over HTTP, port 80 by default (no https)
  udp://[SRC@]GROUP:PORT[?iface=NAME]
                               receive UDP: join multicast GROUP (only from SRC
                               if given), or listen on a unicast address such
                               as udp://0.0.0.0:1234; iface picks the interface
  rtp://[SRC@]GROUP:PORT[?iface=NAME]
                               the same, with RTP headers removed
  tcp://ADDR:PORT              listen for one encoder that pushes MPEG-TS
  stdin or -                   read MPEG-TS from standard input
  file:PATH[?bitrate=RATE]     play a .ts file at the pace of its clock (PCR);
                               RATE in bit/s, like 8M (1000-based), is used
                               when the file has no PCR
  IPv6 addresses go in brackets: udp://[ff15::1]:1234
  URL#program=N                serve only program N of a multi-program stream
  URL#service=NAME             serve only the program with this service name

Stream URL options:
  /channel/NAME.ts?offset=-30s start up to the ring's depth in the past, on a
                               keyframe (s, m or plain seconds)
  /channel/NAME.ts?position=N  resume at byte N of the stream, as given by the
                               X-Ringcast-Position header plus bytes received

Served URLs:
  /channel/NAME.ts             the channel's MPEG-TS stream
  /playlist.m3u                M3U playlist of all channels
  /status                      status as JSON
  /                            status page
  /udp/GROUP:PORT              join a UDP multicast group on demand (udpxy)
  /rtp/GROUP:PORT              the same for RTP

Examples:
  ffmpeg -re -i input.mp4 -c copy -f mpegts - | ringcast --channel tv=stdin
  ringcast --multicast-if eth1 --channel news=udp://239.1.1.1:1234
  Then open http://BOX:8090/channel/tv.ts in VLC, or
  http://BOX:8090/playlist.m3u for all channels.

Config file: see README.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the relay with this configuration.
    Run(Box<Config>),
    /// Print [`HELP`] and exit.
    Help,
    /// Print [`VERSION`] and exit.
    Version,
}

/// The whole start-up configuration, with defaults from [`Config::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// HTTP address to serve on.
    pub listen: SocketAddr,
    /// Static channels, in the order they were configured.
    pub channels: Vec<ChannelConfig>,
    /// Streaming readers across all channels, within `1..=limits::READERS_MAX`.
    pub readers_max: usize,
    /// Ring bytes of each channel without its own size: a multiple of 188
    /// within `limits::RING_BYTES_MIN..=limits::RING_BYTES_MAX`.
    pub ring_bytes: usize,
    /// Whether `/udp/...` and `/rtp/...` URLs join multicast groups on demand.
    pub on_demand: bool,
    /// Ring bytes of each on-demand channel, normalised like `ring_bytes`.
    pub on_demand_ring_bytes: usize,
    /// Interface for multicast joins; `None` lets the routing table choose.
    pub multicast_interface: Option<String>,
    /// Seconds between leaving and joining multicast groups again; 0 = never.
    pub rejoin_interval_s: u32,
    /// Seconds without data after which a source counts as lost; at least 1.
    pub gap_timeout_s: u32,
    /// Seconds an on-demand channel stays open after its last viewer leaves.
    pub linger_s: u32,
    /// Seconds a viewer may take no bytes before it is disconnected; at least 1.
    pub stall_timeout_s: u32,
    /// Seconds a connection has to send its request head; at least 1.
    pub header_timeout_s: u32,
    /// How stream bytes are written to viewers.
    pub send_mode: SendMode,
    /// Milliseconds after which a partly filled chunk goes to viewers, 1..=1000.
    pub flush_ms: u32,
    /// Most detailed log level printed.
    pub log_level: LevelFilter,
    /// New viewers start with PAT, PMT and the newest keyframe in the ring
    /// (on) or at the live edge (off).
    pub instant_start: bool,
    /// Directory of the power-safe state file; `None` keeps nothing.
    pub state_dir: Option<PathBuf>,
    /// TCP port of the peer listener; 0 = none (and nothing is mapped).
    pub peer_port: u16,
    /// Port-mapping methods in order; empty = mapping off.
    pub portmap: Vec<crate::portmap::Method>,
    /// External port asked for; 0 = the peer port.
    pub portmap_port: u16,
    /// Lease asked of the router, in seconds (0 = permanent, UPnP only).
    pub portmap_lease_s: u32,
    /// Seconds between checks of a mapping (and retries of a failed search).
    pub portmap_check_s: u32,
    /// Interface behind which the router is looked for; `None` = default route.
    pub portmap_interface: Option<String>,
    /// Also map the LAN HTTP port (streams become reachable from the internet).
    pub portmap_lan_http: bool,
    /// Announce a DLNA MediaServer over SSDP and answer its control.
    pub dlna: bool,
    /// Interfaces SSDP announces on; empty = every LAN (non-public) one.
    pub lan_interfaces: Vec<String>,
    /// Name TVs show; `None` = the one kept in the state store.
    pub friendly_name: Option<String>,
    /// True when no channel was configured: `main` then adds the demo channel.
    pub demo: bool,
    /// Values that were out of range and were clamped, one message each (with
    /// the file line or option), for `main` to log as warnings.
    pub adjustments: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: LISTEN_DEFAULT,
            channels: Vec::new(),
            readers_max: READERS_MAX_DEFAULT,
            ring_bytes: round_down_to_packets(RING_BYTES_DEFAULT),
            on_demand: true,
            on_demand_ring_bytes: round_down_to_packets(ON_DEMAND_RING_BYTES_DEFAULT),
            multicast_interface: None,
            rejoin_interval_s: 0,
            gap_timeout_s: GAP_TIMEOUT_S_DEFAULT,
            linger_s: LINGER_S_DEFAULT,
            stall_timeout_s: STALL_TIMEOUT_S_DEFAULT,
            header_timeout_s: HEADER_TIMEOUT_S_DEFAULT,
            send_mode: SendMode::Auto,
            flush_ms: FLUSH_MS_DEFAULT,
            log_level: LevelFilter::Info,
            instant_start: true,
            state_dir: Some(default_state_dir()),
            peer_port: PEER_PORT_DEFAULT,
            portmap: vec![
                crate::portmap::Method::Upnp,
                crate::portmap::Method::Pcp,
                crate::portmap::Method::NatPmp,
            ],
            portmap_port: 0,
            portmap_lease_s: PORTMAP_LEASE_S_DEFAULT,
            portmap_check_s: PORTMAP_CHECK_S_DEFAULT,
            portmap_interface: None,
            portmap_lan_http: false,
            dlna: true,
            lan_interfaces: Vec::new(),
            friendly_name: None,
            demo: true,
            adjustments: Vec::new(),
        }
    }
}

/// How stream bytes go from the ring to a viewer's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// `sendfile` for players on other hosts, copies for players on this
    /// host (whose kernel keeps sent pages referenced until they read them).
    Auto,
    /// `sendfile` from the ring's file: no copy through user space.
    Sendfile,
    /// Plain writes from the mapped ring, for systems where sendfile fails.
    Copy,
}

/// One static channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Name in `/channel/<name>.ts`; checked by [`check_channel_name`].
    pub name: String,
    /// Where the channel comes from.
    pub source: Source,
    /// Own ring size (normalised like [`Config::ring_bytes`]); `None` uses
    /// the global one.
    pub ring_bytes: Option<usize>,
    /// Which program of a multi-program stream the channel serves.
    pub program: ProgramSelect,
    /// Where the channel is also sent as RTP or UDP (multicast), if anywhere.
    pub output: Option<OutputConfig>,
}

/// A channel's copy sent to a UDP address (a multicast group for IPTV set-top
/// boxes): `rtp://GROUP:PORT` (RFC 3551 payload type 33) or `udp://`, seven
/// TS packets per datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputConfig {
    /// RTP headers (true) or raw TS in UDP.
    pub rtp: bool,
    /// Where datagrams go: a multicast group (or a unicast host) and port.
    pub address: SocketAddr,
    /// Multicast TTL (hops); 1 keeps the stream on the LAN segment.
    pub ttl: u8,
    /// Interface to send multicast out of; `None` lets the routing table
    /// choose.
    pub interface: Option<String>,
}

impl fmt::Display for OutputConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.rtp { "rtp" } else { "udp" };
        write!(f, "{scheme}://{}?ttl={}", self.address, self.ttl)?;
        if let Some(interface) = &self.interface {
            write!(f, "&iface={interface}")?;
        }
        Ok(())
    }
}

/// The program a channel takes from a multi-program transport stream (MPTS).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProgramSelect {
    /// The stream as it comes.
    #[default]
    All,
    /// The program with this program_number (from the PAT).
    Number(u16),
    /// The program whose DVB service name (from the SDT) is this.
    Service(String),
}

impl fmt::Display for ProgramSelect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgramSelect::All => Ok(()),
            ProgramSelect::Number(number) => write!(f, "#program={number}"),
            ProgramSelect::Service(name) => write!(f, "#service={name}"),
        }
    }
}

/// Longest service name accepted (DVB names are at most 255 bytes).
pub const SERVICE_NAME_BYTES_MAX: usize = 255;

/// Parses `program=N` or `service=NAME` (the part after `#` in a channel URL,
/// or the value of a `program`/`service` key).
pub fn parse_program_select(text: &str) -> Result<ProgramSelect, String> {
    if let Some(number) = text.strip_prefix("program=") {
        return parse_program_number(number).map(ProgramSelect::Number);
    }
    if let Some(name) = text.strip_prefix("service=") {
        return parse_service_name(name).map(ProgramSelect::Service);
    }
    Err(format!(
        "expected #program=N or #service=NAME after the URL, got '#{text}'"
    ))
}

fn parse_program_number(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(number) if number > 0 => Ok(number),
        _ => Err(format!(
            "expected a program number from 1 to 65535, got '{text}'"
        )),
    }
}

fn parse_service_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > SERVICE_NAME_BYTES_MAX {
        return Err(format!(
            "expected a service name of 1 to {SERVICE_NAME_BYTES_MAX} bytes, got '{text}'"
        ));
    }
    Ok(text.to_string())
}

/// Splits `URL#program=N` / `URL#service=NAME` into the URL and the choice.
/// Any other `#fragment` stays part of the URL.
pub fn split_program_select(text: &str) -> Result<(&str, ProgramSelect), String> {
    match text.rsplit_once('#') {
        Some((url, choice)) if choice.starts_with("program=") || choice.starts_with("service=") => {
            Ok((url, parse_program_select(choice)?))
        }
        _ => Ok((text, ProgramSelect::All)),
    }
}

/// Where a channel's stream comes from. [`parse_source`] reads one from its
/// URL form and `Display` prints it back in that form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Pull over HTTP.
    Http {
        /// The URL as written, for display and logs.
        url: String,
        /// Host name or IP address, without the brackets of an IPv6 address
        /// (add them back for the `Host` header).
        host: String,
        port: u16,
        /// Path and query for the request line; starts with `/`.
        path: String,
    },
    /// UDP datagrams of MPEG-TS, multicast or unicast.
    Udp {
        /// Multicast group to join, or a local unicast address to bind.
        group: IpAddr,
        port: u16,
        /// Sender for source-specific multicast.
        source: Option<IpAddr>,
        /// Interface for the join; overrides [`Config::multicast_interface`].
        interface: Option<String>,
    },
    /// Like `Udp`, with an RTP header in front of the MPEG-TS payload.
    Rtp {
        group: IpAddr,
        port: u16,
        source: Option<IpAddr>,
        interface: Option<String>,
    },
    /// Listen on this address for one encoder that pushes MPEG-TS.
    TcpListen { address: SocketAddr },
    /// MPEG-TS on standard input.
    Stdin,
    /// A recorded MPEG-TS file, played at the pace of its PCR.
    File {
        path: PathBuf,
        /// Pace in bits per second when the file carries no PCR.
        bitrate_bps: Option<u64>,
    },
}

/// Where a configuration error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorPlace {
    /// A command-line option, as written (`--ring-size`, `-l`).
    CommandOption(String),
    /// The command line as a whole (a stray argument).
    CommandLine,
    /// A config file. `line` counts from 1 and is `None` when the error
    /// concerns the whole file; `key` is the key on that line, if known.
    File {
        path: String,
        line: Option<usize>,
        key: Option<String>,
    },
}

/// A refused argument, option value or config line.
///
/// Displays as `ringcast.conf:12: key 'ring_size': expected a size like 16M,
/// got 'lots'` or `--ring-size: expected a size like 16M, got 'x'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the error is.
    pub place: ErrorPlace,
    /// What is wrong, without the place.
    pub message: String,
}

impl ConfigError {
    fn option(written: &str, message: impl Into<String>) -> Self {
        ConfigError {
            place: ErrorPlace::CommandOption(written.to_string()),
            message: message.into(),
        }
    }

    fn file(
        path: &str,
        line: Option<usize>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            place: ErrorPlace::File {
                path: path.to_string(),
                line,
                key: key.map(str::to_string),
            },
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            ErrorPlace::CommandOption(written) => write!(f, "{written}: ")?,
            ErrorPlace::CommandLine => {}
            ErrorPlace::File { path, line, key } => {
                write!(f, "{path}:")?;
                if let Some(line) = line {
                    write!(f, "{line}:")?;
                }
                if let Some(key) = key {
                    write!(f, " key '{key}':")?;
                }
                write!(f, " ")?;
            }
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// Settings shared by the command line and the file
// ---------------------------------------------------------------------------

/// A global setting. The file key is its name in [`SETTINGS`]; the long
/// option is the same with `-` for `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    Listen,
    RingSize,
    ReadersMax,
    OnDemand,
    OnDemandRingSize,
    MulticastInterface,
    RejoinInterval,
    GapTimeout,
    Linger,
    StallTimeout,
    HeaderTimeout,
    SendMode,
    FlushMs,
    LogLevel,
    InstantStart,
    StateDir,
    PeerPort,
    Portmap,
    PortmapPort,
    PortmapLease,
    PortmapCheck,
    PortmapInterface,
    PortmapLanHttp,
    Dlna,
    LanInterfaces,
    FriendlyName,
}

const SETTINGS: [(Setting, &str); 26] = [
    (Setting::Listen, "listen"),
    (Setting::RingSize, "ring_size"),
    (Setting::ReadersMax, "readers_max"),
    (Setting::OnDemand, "on_demand"),
    (Setting::OnDemandRingSize, "on_demand_ring_size"),
    (Setting::MulticastInterface, "multicast_if"),
    (Setting::RejoinInterval, "rejoin_interval"),
    (Setting::GapTimeout, "gap_timeout"),
    (Setting::Linger, "linger"),
    (Setting::StallTimeout, "stall_timeout"),
    (Setting::HeaderTimeout, "header_timeout"),
    (Setting::SendMode, "send_mode"),
    (Setting::FlushMs, "flush_ms"),
    (Setting::LogLevel, "log_level"),
    (Setting::InstantStart, "instant_start"),
    (Setting::StateDir, "state_dir"),
    (Setting::PeerPort, "peer_port"),
    (Setting::Portmap, "portmap"),
    (Setting::PortmapPort, "portmap_port"),
    (Setting::PortmapLease, "portmap_lease"),
    (Setting::PortmapCheck, "portmap_check"),
    (Setting::PortmapInterface, "portmap_if"),
    (Setting::PortmapLanHttp, "portmap_lan_http"),
    (Setting::Dlna, "dlna"),
    (Setting::LanInterfaces, "lan_if"),
    (Setting::FriendlyName, "friendly_name"),
];

/// Position of a file key in [`SETTINGS`].
fn setting_index(key: &str) -> Option<usize> {
    SETTINGS.iter().position(|(_, name)| *name == key)
}

/// Parses `value` into the field of `setting`. Returns a note when the value
/// was clamped into range.
fn apply_setting(
    config: &mut Config,
    setting: Setting,
    value: &str,
) -> Result<Option<String>, String> {
    match setting {
        Setting::Listen => config.listen = parse_listen(value)?,
        Setting::RingSize => {
            let (bytes, note) = parse_ring_bytes(value)?;
            config.ring_bytes = bytes;
            return Ok(note);
        }
        Setting::ReadersMax => {
            let (readers, note) = parse_readers_max(value)?;
            config.readers_max = readers;
            return Ok(note);
        }
        Setting::OnDemand => config.on_demand = parse_switch(value)?,
        Setting::OnDemandRingSize => {
            let (bytes, note) = parse_ring_bytes(value)?;
            config.on_demand_ring_bytes = bytes;
            return Ok(note);
        }
        Setting::MulticastInterface => {
            config.multicast_interface = parse_interface_setting(value)?;
        }
        Setting::RejoinInterval => config.rejoin_interval_s = parse_seconds(value, 0)?,
        Setting::GapTimeout => config.gap_timeout_s = parse_seconds(value, 1)?,
        Setting::Linger => config.linger_s = parse_seconds(value, 0)?,
        Setting::StallTimeout => config.stall_timeout_s = parse_seconds(value, 1)?,
        Setting::HeaderTimeout => config.header_timeout_s = parse_seconds(value, 1)?,
        Setting::SendMode => config.send_mode = parse_send_mode(value)?,
        Setting::FlushMs => config.flush_ms = parse_flush_ms(value)?,
        Setting::LogLevel => config.log_level = parse_log_level(value)?,
        Setting::InstantStart => config.instant_start = parse_switch(value)?,
        Setting::StateDir => config.state_dir = parse_state_dir(value)?,
        Setting::PeerPort => config.peer_port = parse_port_or_zero(value)?,
        Setting::Portmap => config.portmap = parse_portmap_methods(value)?,
        Setting::PortmapPort => config.portmap_port = parse_port_or_zero(value)?,
        Setting::PortmapLease => config.portmap_lease_s = parse_seconds(value, 0)?,
        Setting::PortmapCheck => config.portmap_check_s = parse_seconds(value, 1)?,
        Setting::PortmapInterface => config.portmap_interface = parse_interface_setting(value)?,
        Setting::PortmapLanHttp => config.portmap_lan_http = parse_switch(value)?,
        Setting::Dlna => config.dlna = parse_switch(value)?,
        Setting::LanInterfaces => config.lan_interfaces = parse_interface_list(value)?,
        Setting::FriendlyName => config.friendly_name = parse_friendly_name(value)?,
    }
    Ok(None)
}

/// Parses a byte size: digits with an optional `K`, `M` or `G` (1024-based,
/// either case).
fn parse_size_bytes(text: &str) -> Result<u64, String> {
    let invalid = || format!("expected a size like 16M, got '{text}'");
    let (digits, multiplier) = match text.char_indices().last() {
        Some((index, 'k' | 'K')) => (&text[..index], 1u64 << 10),
        Some((index, 'm' | 'M')) => (&text[..index], 1u64 << 20),
        Some((index, 'g' | 'G')) => (&text[..index], 1u64 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .ok_or_else(|| format!("the size '{text}' is too large"))
}

/// Largest multiple of the TS packet size not above `bytes`.
fn round_down_to_packets(bytes: usize) -> usize {
    bytes - bytes % limits::TS_PACKET_BYTES
}

/// Parses a ring size, clamps it into the ring bounds and rounds it down to
/// whole TS packets. Returns a note when it was clamped.
fn parse_ring_bytes(text: &str) -> Result<(usize, Option<String>), String> {
    let bytes = parse_size_bytes(text)?;
    let minimum = limits::RING_BYTES_MIN as u64;
    let maximum = limits::RING_BYTES_MAX as u64;
    let clamped = bytes.clamp(minimum, maximum);
    // `clamped` is at most RING_BYTES_MAX, which is a usize.
    let normalised = round_down_to_packets(clamped as usize);
    let note = if bytes < minimum {
        Some(format!(
            "'{text}' is below the minimum ring size; using {normalised} bytes"
        ))
    } else if bytes > maximum {
        Some(format!(
            "'{text}' is above the maximum ring size; using {normalised} bytes"
        ))
    } else {
        None
    };
    Ok((normalised, note))
}

fn parse_readers_max(text: &str) -> Result<(usize, Option<String>), String> {
    let readers = parse_whole_number(text)?;
    let maximum = limits::READERS_MAX as u64;
    if readers < 1 {
        Ok((1, Some(format!("'{text}' is below 1; using 1"))))
    } else if readers > maximum {
        let note = format!("'{text}' is above the maximum of {maximum}; using {maximum}");
        Ok((limits::READERS_MAX, Some(note)))
    } else {
        // At most READERS_MAX here, so it fits.
        Ok((readers as usize, None))
    }
}

/// Parses a whole number; a number too large for `u64` counts as huge, not
/// as an error, so it is clamped like any other large value.
fn parse_whole_number(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a whole number like 64, got '{text}'"));
    }
    Ok(text.parse::<u64>().unwrap_or(u64::MAX))
}

/// Parses seconds (digits, optionally followed by `s`) within
/// `minimum..=SECONDS_MAX`.
fn parse_seconds(text: &str, minimum: u32) -> Result<u32, String> {
    let digits = text.strip_suffix('s').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a number of seconds, got '{text}'"));
    }
    let seconds = digits.parse::<u64>().unwrap_or(u64::MAX);
    if seconds < u64::from(minimum) {
        return Err(format!("must be at least {minimum} second, got '{text}'"));
    }
    if seconds > u64::from(SECONDS_MAX) {
        return Err(format!(
            "must be at most {SECONDS_MAX} seconds (one day), got '{text}'"
        ));
    }
    // At most SECONDS_MAX here, so it fits.
    Ok(seconds as u32)
}

/// Parses milliseconds (digits, optionally followed by `ms`) within
/// `FLUSH_MS_MIN..=FLUSH_MS_MAX`.
fn parse_flush_ms(text: &str) -> Result<u32, String> {
    let digits = text.strip_suffix("ms").unwrap_or(text);
    let valid = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    match digits.parse::<u32>() {
        Ok(milliseconds) if valid && (FLUSH_MS_MIN..=FLUSH_MS_MAX).contains(&milliseconds) => {
            Ok(milliseconds)
        }
        _ => Err(format!(
            "expected milliseconds from {FLUSH_MS_MIN} to {FLUSH_MS_MAX}, got '{text}'"
        )),
    }
}

/// Parses `on`/`off`, also accepting `yes`/`no`, `true`/`false` and `1`/`0`
/// (the form OpenWrt UCI uses for booleans).
/// Parses a comma list of interface names (empty: none given).
fn parse_interface_list(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if let Some(name) = parse_interface_setting(name)? {
            names.push(name);
        }
    }
    Ok(names)
}

/// Parses the name TVs show (1 to 64 bytes, no control characters; empty
/// keeps the stored default).
fn parse_friendly_name(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > crate::state::FRIENDLY_NAME_BYTES_MAX || text.chars().any(char::is_control) {
        return Err(format!(
            "a friendly name is 1 to {} bytes of text without control characters",
            crate::state::FRIENDLY_NAME_BYTES_MAX
        ));
    }
    Ok(Some(text.to_string()))
}

/// Parses a TCP port number, 0 to 65535 (0: none, or "the default").
fn parse_port_or_zero(text: &str) -> Result<u16, String> {
    let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(port) if valid => Ok(port),
        _ => Err(format!("expected a port number 0 to 65535, got '{text}'")),
    }
}

/// Parses `off` or a comma list of port-mapping methods (no repeats).
fn parse_portmap_methods(text: &str) -> Result<Vec<crate::portmap::Method>, String> {
    if matches!(text, "off" | "no" | "none" | "0" | "false") {
        return Ok(Vec::new());
    }
    let mut methods = Vec::new();
    for name in text.split(',') {
        let Some(method) = crate::portmap::Method::parse(name) else {
            return Err(format!(
                "unknown port-mapping method '{}' (use upnp, pcp, natpmp, or off)",
                name.trim()
            ));
        };
        if methods.contains(&method) {
            return Err(format!("'{}' is listed twice", name.trim()));
        }
        methods.push(method);
    }
    Ok(methods)
}

fn parse_switch(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!("expected on or off, got '{text}'")),
    }
}

fn parse_send_mode(text: &str) -> Result<SendMode, String> {
    match text.to_ascii_lowercase().as_str() {
        "auto" => Ok(SendMode::Auto),
        "sendfile" => Ok(SendMode::Sendfile),
        "copy" => Ok(SendMode::Copy),
        _ => Err(format!("expected auto, sendfile or copy, got '{text}'")),
    }
}

fn parse_log_level(text: &str) -> Result<LevelFilter, String> {
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(format!(
            "expected error, warn, info, debug or trace, got '{text}'"
        )),
    }
}

/// Parses `ADDR:PORT` (IPv6 in brackets) or a bare port, which listens on
/// every IPv4 address.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    let port = text.strip_prefix(':').unwrap_or(text);
    let digits_only = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(port) if digits_only => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
        _ => Err(format!(
            "expected ADDR:PORT like 0.0.0.0:8090, got '{text}'"
        )),
    }
}

/// Parses the global interface setting; an empty value means "none", so a
/// generated file may always write the key.
/// A state directory, or `off`/`none` to keep nothing across restarts.
fn parse_state_dir(text: &str) -> Result<Option<PathBuf>, String> {
    match text {
        "" => Err("expected a directory, or off".into()),
        "off" | "none" => Ok(None),
        _ if text.len() > STATE_DIR_BYTES_MAX => Err(format!(
            "a state directory of at most {STATE_DIR_BYTES_MAX} bytes, got {} bytes",
            text.len()
        )),
        _ => Ok(Some(PathBuf::from(text))),
    }
}

/// Longest state directory path accepted.
const STATE_DIR_BYTES_MAX: usize = 256;

/// Where state is kept unless configured: systemd's `StateDirectory=` if
/// set, else /var/lib/ringcast.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/ringcast"))
}

fn parse_interface_setting(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    check_interface_name(text)?;
    Ok(Some(text.to_string()))
}

fn check_interface_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= INTERFACE_NAME_BYTES_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "expected an interface name like eth0 (at most \
             {INTERFACE_NAME_BYTES_MAX} bytes, no spaces, '/' or ':'), got '{name}'"
        ))
    }
}

/// Checks a channel name: 1 to `limits::CHANNEL_NAME_BYTES_MAX` bytes of
/// `A-Z a-z 0-9 _ - .`, so it can stand in a URL path as it is.
pub fn check_channel_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= limits::CHANNEL_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "channel name '{name}' must be 1 to {} of the characters A-Z a-z 0-9 _ - .",
            limits::CHANNEL_NAME_BYTES_MAX
        ))
    }
}

// ---------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------

/// Parses a source URL (the forms are listed in [`HELP`]).
pub fn parse_source(text: &str) -> Result<Source, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the source is empty; expected a URL like udp://239.1.1.1:1234".into());
    }
    if text.len() > limits::SOURCE_URL_BYTES_MAX {
        return Err(format!(
            "the source is longer than {} bytes",
            limits::SOURCE_URL_BYTES_MAX
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("the source contains a control character".into());
    }
    if text == "stdin" || text == "-" {
        return Ok(Source::Stdin);
    }
    if let Some(rest) = strip_prefix_ignoring_case(text, "file:") {
        return parse_file_source(rest);
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(unknown_source_message(text));
    };
    if rest.contains(char::is_whitespace) {
        return Err(format!("the source '{text}' contains a space"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "http" => parse_http_source(text, rest),
        "https" => Err("https is not supported; use an http:// source".into()),
        "udp" => parse_datagram_source(rest).map(|d| Source::Udp {
            group: d.group,
            port: d.port,
            source: d.source,
            interface: d.interface,
        }),
        "rtp" => parse_datagram_source(rest).map(|d| Source::Rtp {
            group: d.group,
            port: d.port,
            source: d.source,
            interface: d.interface,
        }),
        "tcp" => parse_tcp_source(rest),
        _ => Err(unknown_source_message(text)),
    }
}

fn unknown_source_message(text: &str) -> String {
    format!(
        "unknown source '{text}'; expected http://, udp://, rtp://, tcp://, \
         file:, stdin or -"
    )
}

fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// `host[:port]` split apart; `bracketed` when the host was in `[...]`.
struct HostPort<'a> {
    host: &'a str,
    bracketed: bool,
    port: Option<&'a str>,
}

fn split_host_port(text: &str) -> Result<HostPort<'_>, String> {
    if let Some(after_bracket) = text.strip_prefix('[') {
        let Some((host, after)) = after_bracket.split_once(']') else {
            return Err(format!("'{text}' has '[' but no ']'"));
        };
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("expected ':' and a port after ']' in '{text}'"))?,
            ),
        };
        return Ok(HostPort {
            host,
            bracketed: true,
            port,
        });
    }
    match text.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Err(format!(
            "write IPv6 addresses in brackets, like [ff15::1]:1234; got '{text}'"
        )),
        Some((host, port)) => Ok(HostPort {
            host,
            bracketed: false,
            port: Some(port),
        }),
        None => Ok(HostPort {
            host: text,
            bracketed: false,
            port: None,
        }),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(format!("expected a port from 1 to 65535, got '{text}'")),
    }
}

/// Parses an IP address: IPv6 only in brackets (`bracketed`), IPv4 otherwise.
/// An empty host means every IPv4 address.
fn parse_ip(host: &str, bracketed: bool) -> Result<IpAddr, String> {
    if bracketed {
        return host
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| format!("expected an IPv6 address in brackets, got '[{host}]'"));
    }
    if host.is_empty() {
        return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    host.parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| format!("expected an IP address like 239.1.1.1, got '{host}'"))
}

fn parse_http_source(url: &str, rest: &str) -> Result<Source, String> {
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(path_start);
    if authority.contains('@') {
        return Err("user names and passwords in source URLs are not supported".into());
    }
    let parts = split_host_port(authority)?;
    let host = if parts.bracketed {
        parse_ip(parts.host, true)?;
        parts.host
    } else {
        check_host_name(parts.host)?
    };
    let port = match parts.port {
        Some(port) => parse_port(port)?,
        None => 80,
    };
    // A fragment is never sent to the server.
    let path = path.split_once('#').map_or(path, |(before, _)| before);
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(Source::Http {
        url: url.to_string(),
        host: host.to_string(),
        port,
        path,
    })
}

fn check_host_name(host: &str) -> Result<&str, String> {
    let valid = !host.is_empty()
        && host.len() <= HOST_NAME_BYTES_MAX
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if valid {
        Ok(host)
    } else {
        Err(format!("expected a host name or IP address, got '{host}'"))
    }
}

/// The fields of a `udp://` or `rtp://` source.
struct DatagramSource {
    group: IpAddr,
    port: u16,
    source: Option<IpAddr>,
    interface: Option<String>,
}

fn parse_datagram_source(rest: &str) -> Result<DatagramSource, String> {
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    let interface = match query {
        Some(query) => parse_datagram_query(query)?,
        None => None,
    };
    let (source_text, group_text) = match address.split_once('@') {
        Some((source, group)) => (Some(source).filter(|s| !s.is_empty()), group),
        None => (None, address),
    };
    let parts = split_host_port(group_text)?;
    let Some(port) = parts.port else {
        return Err(format!(
            "'{group_text}' has no port; expected GROUP:PORT like 239.1.1.1:1234"
        ));
    };
    let port = parse_port(port)?;
    let group = parse_ip(parts.host, parts.bracketed)?;
    let source = match source_text {
        Some(text) => Some(parse_source_address(text, group)?),
        None => None,
    };
    Ok(DatagramSource {
        group,
        port,
        source,
        interface,
    })
}

/// Parses the `SRC` of `SRC@GROUP`, with or without brackets for IPv6, and
/// checks it fits the group.
fn parse_source_address(text: &str, group: IpAddr) -> Result<IpAddr, String> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let source = inner
        .parse::<IpAddr>()
        .map_err(|_| format!("expected a source IP address before '@', got '{text}'"))?;
    if !group.is_multicast() {
        return Err(format!(
            "a source address (SRC@) needs a multicast group; {group} is not one"
        ));
    }
    if source.is_ipv4() != group.is_ipv4() {
        return Err(format!(
            "the source address {source} and the group {group} are not both IPv4 or both IPv6"
        ));
    }
    Ok(source)
}

fn parse_datagram_query(query: &str) -> Result<Option<String>, String> {
    let mut interface = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("iface", name)) => {
                check_interface_name(name)?;
                interface = Some(name.to_string());
            }
            _ => {
                return Err(format!(
                    "unknown option '{pair}' in the source; only ?iface=NAME is known"
                ))
            }
        }
    }
    Ok(interface)
}

fn parse_tcp_source(rest: &str) -> Result<Source, String> {
    let parts = split_host_port(rest)?;
    let Some(port) = parts.port else {
        return Err(format!(
            "'{rest}' has no port; expected ADDR:PORT like 0.0.0.0:9000"
        ));
    };
    let port = parse_port(port)?;
    let ip = parse_ip(parts.host, parts.bracketed)?;
    Ok(Source::TcpListen {
        address: SocketAddr::new(ip, port),
    })
}

fn parse_file_source(rest: &str) -> Result<Source, String> {
    // `file:///media/a.ts` is the URL spelling of `file:/media/a.ts`.
    let rest = match rest.strip_prefix("//") {
        Some(path) if path.starts_with('/') => path,
        _ => rest,
    };
    let (path, bitrate_bps) = match rest.rsplit_once('?') {
        Some((path, query)) if query.starts_with("bitrate=") => {
            (path, Some(parse_bitrate_bps(&query["bitrate=".len()..])?))
        }
        _ => (rest, None),
    };
    if path.is_empty() {
        return Err("a file source needs a path, like file:/media/demo.ts".into());
    }
    Ok(Source::File {
        path: PathBuf::from(path),
        bitrate_bps,
    })
}

/// Parses a bit rate: digits with an optional `K`, `M` or `G`, 1000-based as
/// bit rates always are.
fn parse_bitrate_bps(text: &str) -> Result<u64, String> {
    let (digits, multiplier) = match text.char_indices().last() {
        Some((index, 'k' | 'K')) => (&text[..index], 1_000),
        Some((index, 'm' | 'M')) => (&text[..index], 1_000_000),
        Some((index, 'g' | 'G')) => (&text[..index], 1_000_000_000),
        _ => (text, 1u64),
    };
    let bitrate = if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        None
    } else {
        digits
            .parse::<u64>()
            .ok()
            .and_then(|number| number.checked_mul(multiplier))
    };
    match bitrate {
        Some(bitrate) if bitrate > 0 => Ok(bitrate),
        _ => Err(format!(
            "expected a bit rate like 8M (bits per second), got '{text}'"
        )),
    }
}

/// Writes an IP address, with brackets around IPv6.
fn write_ip(f: &mut fmt::Formatter<'_>, ip: &IpAddr) -> fmt::Result {
    match ip {
        IpAddr::V4(ip) => write!(f, "{ip}"),
        IpAddr::V6(ip) => write!(f, "[{ip}]"),
    }
}

fn write_datagram(
    f: &mut fmt::Formatter<'_>,
    scheme: &str,
    group: &IpAddr,
    port: u16,
    source: &Option<IpAddr>,
    interface: &Option<String>,
) -> fmt::Result {
    write!(f, "{scheme}://")?;
    if let Some(source) = source {
        write_ip(f, source)?;
        write!(f, "@")?;
    }
    write_ip(f, group)?;
    write!(f, ":{port}")?;
    if let Some(interface) = interface {
        write!(f, "?iface={interface}")?;
    }
    Ok(())
}

fn write_bitrate(f: &mut fmt::Formatter<'_>, bitrate_bps: u64) -> fmt::Result {
    match bitrate_bps {
        b if b % 1_000_000_000 == 0 => write!(f, "{}G", b / 1_000_000_000),
        b if b % 1_000_000 == 0 => write!(f, "{}M", b / 1_000_000),
        b if b % 1_000 == 0 => write!(f, "{}K", b / 1_000),
        b => write!(f, "{b}"),
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Http { url, .. } => f.write_str(url),
            Source::Udp {
                group,
                port,
                source,
                interface,
            } => write_datagram(f, "udp", group, *port, source, interface),
            Source::Rtp {
                group,
                port,
                source,
                interface,
            } => write_datagram(f, "rtp", group, *port, source, interface),
            Source::TcpListen { address } => write!(f, "tcp://{address}"),
            Source::Stdin => f.write_str("stdin"),
            Source::File { path, bitrate_bps } => {
                write!(f, "file:{}", path.display())?;
                if let Some(bitrate_bps) = bitrate_bps {
                    write!(f, "?bitrate=")?;
                    write_bitrate(f, *bitrate_bps)?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Config file
// ---------------------------------------------------------------------------

/// A line of a config file, for error messages.
#[derive(Clone, Copy)]
struct Spot<'a> {
    path: &'a str,
    line: usize,
}

impl Spot<'_> {
    fn error(self, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        ConfigError::file(self.path, Some(self.line), key, message)
    }
}

/// A `[channel NAME]` section not yet closed.
struct OpenChannel {
    name: String,
    line: usize,
    source: Option<Source>,
    source_line: Option<usize>,
    ring_bytes: Option<usize>,
    ring_line: Option<usize>,
    program: ProgramSelect,
    program_line: Option<usize>,
    output: Option<OutputConfig>,
    output_line: Option<usize>,
}

/// State while reading one config file.
struct FileParser<'a> {
    path: &'a str,
    /// Line where each of [`SETTINGS`] was given, to refuse repeats.
    setting_lines: [Option<usize>; SETTINGS.len()],
    /// Channels of this file with the line of their section.
    channel_lines: Vec<(String, usize)>,
    channel: Option<OpenChannel>,
}

/// Parses config file text into `into`, on top of what it holds already.
/// `path_for_errors` only names the file in error messages.
pub fn parse_config_text(
    path_for_errors: &str,
    text: &str,
    into: &mut Config,
) -> Result<(), ConfigError> {
    let mut parser = FileParser {
        path: path_for_errors,
        setting_lines: [None; SETTINGS.len()],
        channel_lines: Vec::new(),
        channel: None,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, line) in text.lines().enumerate() {
        let spot = Spot {
            path: path_for_errors,
            line: index + 1,
        };
        parser.handle_line(spot, line, into)?;
    }
    parser.finish_channel(into)?;
    into.demo = into.channels.is_empty();
    Ok(())
}

impl FileParser<'_> {
    fn handle_line(
        &mut self,
        spot: Spot,
        raw: &str,
        config: &mut Config,
    ) -> Result<(), ConfigError> {
        if raw.len() > limits::CONFIG_LINE_BYTES_MAX {
            return Err(spot.error(
                None,
                format!(
                    "the line is longer than {} bytes",
                    limits::CONFIG_LINE_BYTES_MAX
                ),
            ));
        }
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            return Ok(());
        }
        if line.starts_with('[') {
            return self.handle_section(spot, line, config);
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(spot.error(
                None,
                format!("expected 'key = value' or '[channel NAME]', got '{line}'"),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(spot.error(None, "expected a key before '='"));
        }
        let value = unquote(value.trim()).map_err(|message| spot.error(Some(key), message))?;
        match self.channel.as_mut() {
            Some(channel) => Self::handle_channel_key(channel, spot, key, value, config),
            None => self.handle_global_key(spot, key, value, config),
        }
    }

    fn handle_global_key(
        &mut self,
        spot: Spot,
        key: &str,
        value: &str,
        config: &mut Config,
    ) -> Result<(), ConfigError> {
        let Some(index) = setting_index(key) else {
            return Err(spot.error(None, unknown_global_key_message(key)));
        };
        if let Some(first) = self.setting_lines[index] {
            return Err(spot.error(Some(key), format!("given twice (first on line {first})")));
        }
        self.setting_lines[index] = Some(spot.line);
        let note = apply_setting(config, SETTINGS[index].0, value)
            .map_err(|message| spot.error(Some(key), message))?;
        if let Some(note) = note {
            config
                .adjustments
                .push(spot.error(Some(key), note).to_string());
        }
        Ok(())
    }

    fn handle_channel_key(
        channel: &mut OpenChannel,
        spot: Spot,
        key: &str,
        value: &str,
        config: &mut Config,
    ) -> Result<(), ConfigError> {
        let twice = |first: usize| {
            let message = format!(
                "given twice in channel '{}' (first on line {first})",
                channel.name
            );
            spot.error(Some(key), message)
        };
        match key {
            "source" => {
                if let Some(first) = channel.source_line {
                    return Err(twice(first));
                }
                let (url, program) = split_program_select(value)
                    .map_err(|message| spot.error(Some(key), message))?;
                let source = parse_source(url).map_err(|message| spot.error(Some(key), message))?;
                channel.source = Some(source);
                channel.source_line = Some(spot.line);
                if program != ProgramSelect::All {
                    if let Some(first) = channel.program_line {
                        return Err(twice(first));
                    }
                    channel.program = program;
                    channel.program_line = Some(spot.line);
                }
            }
            "program" | "service" => {
                if let Some(first) = channel.program_line {
                    return Err(twice(first));
                }
                let program = parse_program_select(&format!("{key}={value}"))
                    .map_err(|message| spot.error(Some(key), message))?;
                channel.program = program;
                channel.program_line = Some(spot.line);
            }
            "ring_size" => {
                if let Some(first) = channel.ring_line {
                    return Err(twice(first));
                }
                let (bytes, note) =
                    parse_ring_bytes(value).map_err(|message| spot.error(Some(key), message))?;
                channel.ring_bytes = Some(bytes);
                channel.ring_line = Some(spot.line);
                if let Some(note) = note {
                    config
                        .adjustments
                        .push(spot.error(Some(key), note).to_string());
                }
            }
            "output" => {
                if let Some(first) = channel.output_line {
                    return Err(twice(first));
                }
                let output =
                    parse_output(value).map_err(|message| spot.error(Some(key), message))?;
                channel.output = Some(output);
                channel.output_line = Some(spot.line);
            }
            _ if setting_index(key).is_some() => {
                let message = format!(
                    "key '{key}' is a global key; put it before the first [channel NAME] section"
                );
                return Err(spot.error(None, message));
            }
            _ => {
                let message = format!(
                    "unknown key '{key}' in a channel section; expected source, ring_size, \
                     program, service or output"
                );
                return Err(spot.error(None, message));
            }
        }
        Ok(())
    }

    fn handle_section(
        &mut self,
        spot: Spot,
        line: &str,
        config: &mut Config,
    ) -> Result<(), ConfigError> {
        self.finish_channel(config)?;
        let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
            return Err(spot.error(None, format!("expected '[channel NAME]', got '{line}'")));
        };
        let inner = inner.trim();
        let (kind, name) = inner.split_once(char::is_whitespace).unwrap_or((inner, ""));
        if kind != "channel" {
            let message = format!("unknown section '[{inner}]'; expected [channel NAME]");
            return Err(spot.error(None, message));
        }
        let name = unquote(name.trim()).map_err(|message| spot.error(None, message))?;
        if name.is_empty() {
            return Err(spot.error(None, "a channel section needs a name, like [channel tv]"));
        }
        check_channel_name(name).map_err(|message| spot.error(None, message))?;
        if config.channels.iter().any(|channel| channel.name == name) {
            let first = self.channel_lines.iter().find(|(other, _)| other == name);
            let message = match first {
                Some((_, line)) => {
                    format!("duplicate channel name '{name}' (first on line {line})")
                }
                None => format!("duplicate channel name '{name}'"),
            };
            return Err(spot.error(None, message));
        }
        if config.channels.len() >= limits::CHANNELS_MAX {
            let message = format!("too many channels; at most {}", limits::CHANNELS_MAX);
            return Err(spot.error(None, message));
        }
        self.channel = Some(OpenChannel {
            name: name.to_string(),
            line: spot.line,
            source: None,
            source_line: None,
            ring_bytes: None,
            ring_line: None,
            program: ProgramSelect::All,
            program_line: None,
            output: None,
            output_line: None,
        });
        Ok(())
    }

    /// Closes the open channel section, if any, and adds the channel.
    fn finish_channel(&mut self, config: &mut Config) -> Result<(), ConfigError> {
        let Some(channel) = self.channel.take() else {
            return Ok(());
        };
        let Some(source) = channel.source else {
            let message = format!("channel '{}' has no 'source = URL' line", channel.name);
            return Err(ConfigError::file(
                self.path,
                Some(channel.line),
                None,
                message,
            ));
        };
        self.channel_lines
            .push((channel.name.clone(), channel.line));
        config.channels.push(ChannelConfig {
            name: channel.name,
            source,
            ring_bytes: channel.ring_bytes,
            program: channel.program,
            output: channel.output,
        });
        Ok(())
    }
}

fn unknown_global_key_message(key: &str) -> String {
    match key {
        "source" => "key 'source' belongs in a [channel NAME] section".into(),
        "channel" => "channels are sections: write '[channel NAME]' and then 'source = URL' \
                      on the next line"
            .into(),
        "config" => "key 'config' is a command-line option only".into(),
        _ if key.contains('-') && setting_index(&key.replace('-', "_")).is_some() => {
            format!(
                "unknown key '{key}'; keys use '_': '{}'",
                key.replace('-', "_")
            )
        }
        _ => format!("unknown key '{key}'"),
    }
}

/// Cuts a `#` comment: at the start of the line or after white space, and not
/// inside double quotes (so URLs keep a `#` inside a word).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    let mut after_space = true;
    for (index, c) in line.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == '#' && after_space && !quoted {
            return &line[..index];
        }
        after_space = c.is_whitespace();
    }
    line
}

/// Removes one pair of double quotes around a value.
fn unquote(value: &str) -> Result<&str, String> {
    match value.strip_prefix('"') {
        None => Ok(value),
        Some(rest) => rest
            .strip_suffix('"')
            .ok_or_else(|| "the value opens a '\"' but does not close it".to_string()),
    }
}

/// Reads and parses the config file at `path` into `config`.
fn load_config_file(path: &str, config: &mut Config) -> Result<(), ConfigError> {
    let whole_file_error = |message: String| ConfigError::file(path, None, None, message);
    let file = std::fs::File::open(path)
        .map_err(|error| whole_file_error(format!("cannot open the config file: {error}")))?;
    let mut text = String::new();
    file.take(CONFIG_FILE_BYTES_MAX as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|error| whole_file_error(format!("cannot read the config file: {error}")))?;
    if text.len() > CONFIG_FILE_BYTES_MAX {
        return Err(whole_file_error(format!(
            "the config file is larger than {CONFIG_FILE_BYTES_MAX} bytes"
        )));
    }
    parse_config_text(path, &text, config)
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// What an option does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Config,
    Channel,
    Output,
    Help,
    Version,
    Set(Setting),
}

/// An option with its value, as given.
struct GivenOption {
    flag: Flag,
    written: String,
    value: String,
}

/// The options of the command line, or the command that stops reading them.
enum ReadArguments {
    Options(Vec<GivenOption>),
    Stop(Command),
}

fn flag_for(name: &str) -> Option<Flag> {
    match name {
        "-c" | "--config" => Some(Flag::Config),
        "-l" => Some(Flag::Set(Setting::Listen)),
        "--channel" => Some(Flag::Channel),
        "--output" => Some(Flag::Output),
        "-h" | "--help" => Some(Flag::Help),
        "-V" | "--version" => Some(Flag::Version),
        _ => {
            let long = name.strip_prefix("--")?;
            if long.contains('_') {
                return None;
            }
            let index = setting_index(&long.replace('-', "_"))?;
            Some(Flag::Set(SETTINGS[index].0))
        }
    }
}

/// Splits `--name=value`, `--name`, `-xVALUE` or `-x` into the name and the
/// value attached to it.
fn split_argument(argument: &str) -> Result<(&str, Option<&str>), ConfigError> {
    if argument.starts_with("--") {
        return Ok(match argument.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (argument, None),
        });
    }
    if argument.starts_with('-') && argument.len() > 1 {
        let end = argument
            .char_indices()
            .nth(2)
            .map_or(argument.len(), |(index, _)| index);
        let (name, rest) = argument.split_at(end);
        return Ok((name, Some(rest).filter(|rest| !rest.is_empty())));
    }
    Err(ConfigError {
        place: ErrorPlace::CommandLine,
        message: format!("unexpected argument '{argument}'; options start with - (see --help)"),
    })
}

fn read_arguments<I: IntoIterator<Item = String>>(
    arguments: I,
) -> Result<ReadArguments, ConfigError> {
    let mut arguments = arguments.into_iter();
    let mut options = Vec::new();
    while let Some(argument) = arguments.next() {
        let (name, attached) = split_argument(&argument)?;
        let flag = flag_for(name)
            .ok_or_else(|| ConfigError::option(name, "unknown option (see --help)"))?;
        if matches!(flag, Flag::Help | Flag::Version) {
            if attached.is_some() {
                return Err(ConfigError::option(name, "takes no value"));
            }
            let command = match flag {
                Flag::Help => Command::Help,
                _ => Command::Version,
            };
            return Ok(ReadArguments::Stop(command));
        }
        let value = match attached {
            Some(value) => value.to_string(),
            None => arguments
                .next()
                .ok_or_else(|| ConfigError::option(name, "needs a value (see --help)"))?,
        };
        options.push(GivenOption {
            flag,
            written: name.to_string(),
            value,
        });
    }
    Ok(ReadArguments::Options(options))
}

/// Parses the command line (without the program name). Reads the `--config`
/// file, then applies the other options on top of it.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
    let options = match read_arguments(args)? {
        ReadArguments::Options(options) => options,
        ReadArguments::Stop(command) => return Ok(command),
    };
    let mut config = Config::default();
    let config_path = options.iter().rfind(|option| option.flag == Flag::Config);
    if let Some(option) = config_path {
        load_config_file(&option.value, &mut config)?;
    }
    apply_options(&options, &mut config)?;
    config.demo = config.channels.is_empty();
    Ok(Command::Run(Box::new(config)))
}

/// Applies command-line options over `config`.
fn apply_options(options: &[GivenOption], config: &mut Config) -> Result<(), ConfigError> {
    let mut channels: Vec<ChannelConfig> = Vec::new();
    for option in options {
        let error = |message: String| ConfigError::option(&option.written, message);
        match option.flag {
            Flag::Config | Flag::Help | Flag::Version => {}
            Flag::Channel => {
                let channel = parse_channel_option(&option.value).map_err(error)?;
                if channels.iter().any(|other| other.name == channel.name) {
                    return Err(error(format!("duplicate channel name '{}'", channel.name)));
                }
                channels.push(channel);
            }
            Flag::Set(setting) => {
                if let Some(note) = apply_setting(config, setting, &option.value).map_err(error)? {
                    config.adjustments.push(error(note).to_string());
                }
            }
            Flag::Output => {}
        }
    }
    merge_channels(config, channels)?;
    for option in options.iter().filter(|o| o.flag == Flag::Output) {
        let error = |message: String| ConfigError::option(&option.written, message);
        let Some((name, url)) = option.value.split_once('=') else {
            return Err(error(format!(
                "expected NAME=URL like tv=rtp://239.10.0.1:5000, got '{}'",
                option.value
            )));
        };
        let output = parse_output(url).map_err(error)?;
        let Some(channel) = config.channels.iter_mut().find(|c| c.name == name) else {
            return Err(error(format!(
                "no channel '{name}' (add it with --channel or in the file first)"
            )));
        };
        channel.output = Some(output);
    }
    Ok(())
}

/// Parses `rtp://GROUP:PORT` or `udp://GROUP:PORT`, with optional
/// `?ttl=N` (1 to 255, default 1) and `iface=NAME` query keys.
fn parse_output(text: &str) -> Result<OutputConfig, String> {
    let (rtp, rest) = if let Some(rest) = text.strip_prefix("rtp://") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("udp://") {
        (false, rest)
    } else {
        return Err(format!(
            "an output is rtp://GROUP:PORT or udp://GROUP:PORT, got '{text}'"
        ));
    };
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    let host_port = split_host_port(address)?;
    let Some(port) = host_port.port else {
        return Err(format!("the output '{text}' needs a port, like :5000"));
    };
    let ip = parse_ip(host_port.host, host_port.bracketed)?;
    if ip.is_unspecified() {
        return Err(format!("the output '{text}' needs a group or host address"));
    }
    let mut output = OutputConfig {
        rtp,
        address: SocketAddr::new(ip, parse_port(port)?),
        ttl: 1,
        interface: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("ttl", value)) => {
                output.ttl = value
                    .parse::<u8>()
                    .ok()
                    .filter(|ttl| *ttl >= 1)
                    .ok_or_else(|| format!("ttl must be 1 to 255, got '{value}'"))?;
            }
            Some(("iface", value)) if !value.is_empty() => {
                output.interface = Some(value.to_string());
            }
            _ => {
                return Err(format!(
                    "unknown output option '{pair}'; expected ttl=N or iface=NAME"
                ))
            }
        }
    }
    Ok(output)
}

/// Parses the value of `--channel NAME=URL`.
fn parse_channel_option(value: &str) -> Result<ChannelConfig, String> {
    let Some((name, url)) = value.split_once('=') else {
        return Err(format!(
            "expected NAME=URL like tv=udp://239.1.1.1:1234, got '{value}'"
        ));
    };
    check_channel_name(name)?;
    let (url, program) =
        split_program_select(url).map_err(|message| format!("channel '{name}': {message}"))?;
    let source = parse_source(url).map_err(|message| format!("channel '{name}': {message}"))?;
    Ok(ChannelConfig {
        name: name.to_string(),
        source,
        ring_bytes: None,
        program,
        output: None,
    })
}

/// Adds the command-line channels to those of the file. A command-line
/// channel with the name of a file channel replaces it, as options override
/// the file.
fn merge_channels(config: &mut Config, channels: Vec<ChannelConfig>) -> Result<(), ConfigError> {
    for channel in channels {
        match config
            .channels
            .iter_mut()
            .find(|other| other.name == channel.name)
        {
            Some(existing) => *existing = channel,
            None => config.channels.push(channel),
        }
    }
    if config.channels.len() > limits::CHANNELS_MAX {
        let message = format!(
            "too many channels; at most {}, counting those of the config file",
            limits::CHANNELS_MAX
        );
        return Err(ConfigError::option("--channel", message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run(list: &[&str]) -> Config {
        match parse_args(args(list)) {
            Ok(Command::Run(config)) => *config,
            other => panic!("expected a config from {list:?}, got {other:?}"),
        }
    }

    fn run_error(list: &[&str]) -> String {
        match parse_args(args(list)) {
            Err(error) => error.to_string(),
            other => panic!("expected an error from {list:?}, got {other:?}"),
        }
    }

    fn file(text: &str) -> Result<Config, String> {
        let mut config = Config::default();
        parse_config_text("ringcast.conf", text, &mut config).map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn file_error(text: &str) -> String {
        match file(text) {
            Err(message) => message,
            Ok(config) => panic!("expected an error from {text:?}, got {config:?}"),
        }
    }

    /// Writes `text` to a fresh temporary file and returns its path.
    fn temporary_file(text: &str) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let number = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "ringcast-config-test-{}-{number}.conf",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write temporary config file");
        path.to_string_lossy().into_owned()
    }

    fn source(text: &str) -> Source {
        parse_source(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn source_error(text: &str) -> String {
        match parse_source(text) {
            Err(message) => message,
            Ok(source) => panic!("expected an error from {text:?}, got {source:?}"),
        }
    }

    const MIB: usize = 1024 * 1024;

    #[test]
    fn defaults() {
        let config = run(&[]);
        assert_eq!(config, Config::default());
        assert_eq!(config.listen, "0.0.0.0:8090".parse().unwrap());
        assert!(config.channels.is_empty());
        assert_eq!(config.readers_max, 64);
        assert_eq!(config.ring_bytes, 16 * MIB / 188 * 188);
        assert_eq!(config.ring_bytes % 188, 0);
        assert!(config.on_demand);
        assert_eq!(config.on_demand_ring_bytes, 4 * MIB / 188 * 188);
        assert_eq!(config.multicast_interface, None);
        assert_eq!(config.rejoin_interval_s, 0);
        assert_eq!(config.gap_timeout_s, 15);
        assert_eq!(config.linger_s, 5);
        assert_eq!(config.stall_timeout_s, 20);
        assert_eq!(config.header_timeout_s, 5);
        assert_eq!(config.send_mode, SendMode::Auto);
        assert_eq!(config.flush_ms, 50);
        assert_eq!(config.log_level, LevelFilter::Info);
        assert!(config.demo);
        assert!(config.adjustments.is_empty());
    }

    #[test]
    fn help_and_version() {
        for list in [&["-h"][..], &["--help"], &["--ring-size", "x", "--help"]] {
            assert_eq!(parse_args(args(list)), Ok(Command::Help));
        }
        for list in [&["-V"][..], &["--version"]] {
            assert_eq!(parse_args(args(list)), Ok(Command::Version));
        }
        assert_eq!(run_error(&["--help=yes"]), "--help: takes no value");
    }

    #[test]
    fn every_option_separate_and_with_equals() {
        let pairs: [(&str, &str); 15] = [
            ("--listen", "127.0.0.1:9000"),
            ("--channel", "tv=udp://239.1.1.1:1234"),
            ("--ring-size", "32M"),
            ("--readers-max", "10"),
            ("--on-demand", "off"),
            ("--on-demand-ring-size", "1M"),
            ("--multicast-if", "eth1"),
            ("--rejoin-interval", "60"),
            ("--gap-timeout", "3"),
            ("--linger", "0"),
            ("--stall-timeout", "7"),
            ("--header-timeout", "2"),
            ("--send-mode", "copy"),
            ("--flush-ms", "20"),
            ("--log-level", "debug"),
        ];
        let separate: Vec<&str> = pairs.iter().flat_map(|(o, v)| [*o, *v]).collect();
        let joined: Vec<String> = pairs.iter().map(|(o, v)| format!("{o}={v}")).collect();
        let joined: Vec<&str> = joined.iter().map(String::as_str).collect();
        for list in [separate, joined] {
            let config = run(&list);
            assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
            assert_eq!(config.channels.len(), 1);
            assert_eq!(config.channels[0].name, "tv");
            assert_eq!(
                config.channels[0].source.to_string(),
                "udp://239.1.1.1:1234"
            );
            assert_eq!(config.channels[0].ring_bytes, None);
            assert_eq!(config.ring_bytes, 32 * MIB / 188 * 188);
            assert_eq!(config.readers_max, 10);
            assert!(!config.on_demand);
            assert_eq!(config.on_demand_ring_bytes, MIB / 188 * 188);
            assert_eq!(config.multicast_interface.as_deref(), Some("eth1"));
            assert_eq!(config.rejoin_interval_s, 60);
            assert_eq!(config.gap_timeout_s, 3);
            assert_eq!(config.linger_s, 0);
            assert_eq!(config.stall_timeout_s, 7);
            assert_eq!(config.header_timeout_s, 2);
            assert_eq!(config.send_mode, SendMode::Copy);
            assert_eq!(config.flush_ms, 20);
            assert_eq!(config.log_level, LevelFilter::Debug);
            assert!(!config.demo);
        }
    }

    #[test]
    fn short_options() {
        let path = temporary_file("listen = 10.0.0.1:1\n");
        assert_eq!(run(&["-c", &path]).listen, "10.0.0.1:1".parse().unwrap());
        assert_eq!(
            run(&[&format!("-c{path}")]).listen,
            "10.0.0.1:1".parse().unwrap()
        );
        assert_eq!(
            run(&["--config", &path]).listen,
            "10.0.0.1:1".parse().unwrap()
        );
        assert_eq!(
            run(&[&format!("--config={path}")]).listen,
            "10.0.0.1:1".parse().unwrap()
        );
        assert_eq!(run(&["-l", "[::1]:80"]).listen, "[::1]:80".parse().unwrap());
        assert_eq!(run(&["-l:81"]).listen, "0.0.0.0:81".parse().unwrap());
        assert_eq!(run(&["-l", "8080"]).listen, "0.0.0.0:8080".parse().unwrap());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn command_line_errors() {
        assert_eq!(
            run_error(&["--bogus"]),
            "--bogus: unknown option (see --help)"
        );
        assert_eq!(
            run_error(&["--ring_size", "1M"]),
            "--ring_size: unknown option (see --help)"
        );
        assert_eq!(run_error(&["-x"]), "-x: unknown option (see --help)");
        assert_eq!(
            run_error(&["--ring-size"]),
            "--ring-size: needs a value (see --help)"
        );
        assert_eq!(
            run_error(&["stray"]),
            "unexpected argument 'stray'; options start with - (see --help)"
        );
        assert_eq!(
            run_error(&["--ring-size", "x"]),
            "--ring-size: expected a size like 16M, got 'x'"
        );
        assert_eq!(
            run_error(&["--ring-size=lots"]),
            "--ring-size: expected a size like 16M, got 'lots'"
        );
        assert_eq!(
            run_error(&["-l", "nowhere"]),
            "-l: expected ADDR:PORT like 0.0.0.0:8090, got 'nowhere'"
        );
        assert_eq!(
            run_error(&["--on-demand", "maybe"]),
            "--on-demand: expected on or off, got 'maybe'"
        );
        assert_eq!(
            run_error(&["--send-mode", "splice"]),
            "--send-mode: expected auto, sendfile or copy, got 'splice'"
        );
        assert_eq!(
            run_error(&["--log-level", "loud"]),
            "--log-level: expected error, warn, info, debug or trace, got 'loud'"
        );
        assert_eq!(
            run_error(&["--readers-max", "-1"]),
            "--readers-max: expected a whole number like 64, got '-1'"
        );
        assert_eq!(
            run_error(&["--config", "/nonexistent/ringcast.conf"]),
            "/nonexistent/ringcast.conf: cannot open the config file: \
             No such file or directory (os error 2)"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_bytes("1024"), Ok(1024));
        assert_eq!(parse_size_bytes("512K"), Ok(512 * 1024));
        assert_eq!(parse_size_bytes("512k"), Ok(512 * 1024));
        assert_eq!(parse_size_bytes("16M"), Ok(16 << 20));
        assert_eq!(parse_size_bytes("16m"), Ok(16 << 20));
        assert_eq!(parse_size_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_size_bytes("0"), Ok(0));
        for bad in ["", "M", "16X", "16 M", "1.5M", "-1", "16MB", "+5"] {
            assert_eq!(
                parse_size_bytes(bad),
                Err(format!("expected a size like 16M, got '{bad}'")),
                "{bad}"
            );
        }
        assert_eq!(
            parse_size_bytes("99999999999999G"),
            Err("the size '99999999999999G' is too large".into())
        );
        assert_eq!(
            parse_size_bytes("99999999999999999999999"),
            Err("the size '99999999999999999999999' is too large".into())
        );
    }

    #[test]
    fn ring_sizes_are_rounded_and_clamped() {
        let config = run(&["--ring-size", "1000000"]);
        assert_eq!(config.ring_bytes, 1_000_000 / 188 * 188);
        assert!(config.adjustments.is_empty());

        let config = run(&["--ring-size", "1K"]);
        assert_eq!(config.ring_bytes, limits::RING_BYTES_MIN);
        assert_eq!(
            config.adjustments,
            [format!(
                "--ring-size: '1K' is below the minimum ring size; using {} bytes",
                limits::RING_BYTES_MIN
            )]
        );

        let config = run(&["--on-demand-ring-size", "64G"]);
        let maximum = limits::RING_BYTES_MAX / 188 * 188;
        assert_eq!(config.on_demand_ring_bytes, maximum);
        assert_eq!(
            config.adjustments,
            [format!(
                "--on-demand-ring-size: '64G' is above the maximum ring size; using {maximum} bytes"
            )]
        );
        assert_eq!(limits::RING_BYTES_MIN % 188, 0);
    }

    #[test]
    fn readers_are_clamped() {
        let config = run(&["--readers-max", "0"]);
        assert_eq!(config.readers_max, 1);
        assert_eq!(
            config.adjustments,
            ["--readers-max: '0' is below 1; using 1"]
        );
        let config = run(&["--readers-max", "1000000000000000000000"]);
        assert_eq!(config.readers_max, limits::READERS_MAX);
        assert_eq!(
            config.adjustments,
            [format!(
                "--readers-max: '1000000000000000000000' is above the maximum of {0}; using {0}",
                limits::READERS_MAX
            )]
        );
        assert_eq!(run(&["--readers-max", "1000"]).readers_max, 1000);
    }

    #[test]
    fn seconds_and_milliseconds() {
        assert_eq!(run(&["--gap-timeout", "15s"]).gap_timeout_s, 15);
        assert_eq!(run(&["--rejoin-interval", "0"]).rejoin_interval_s, 0);
        assert_eq!(run(&["--linger", "86400"]).linger_s, 86400);
        assert_eq!(
            run_error(&["--gap-timeout", "0"]),
            "--gap-timeout: must be at least 1 second, got '0'"
        );
        assert_eq!(
            run_error(&["--stall-timeout", "0"]),
            "--stall-timeout: must be at least 1 second, got '0'"
        );
        assert_eq!(
            run_error(&["--header-timeout", "0s"]),
            "--header-timeout: must be at least 1 second, got '0s'"
        );
        assert_eq!(
            run_error(&["--linger", "86401"]),
            "--linger: must be at most 86400 seconds (one day), got '86401'"
        );
        assert_eq!(
            run_error(&["--linger", "soon"]),
            "--linger: expected a number of seconds, got 'soon'"
        );
        assert_eq!(run(&["--flush-ms", "1"]).flush_ms, 1);
        assert_eq!(run(&["--flush-ms", "1000ms"]).flush_ms, 1000);
        for bad in ["0", "1001", "", "x", "-5"] {
            assert_eq!(
                run_error(&["--flush-ms", bad]),
                format!("--flush-ms: expected milliseconds from 1 to 1000, got '{bad}'")
            );
        }
    }

    #[test]
    fn switches_levels_and_modes() {
        for on in ["on", "ON", "yes", "true", "1"] {
            assert!(run(&["--on-demand", on]).on_demand, "{on}");
        }
        for off in ["off", "no", "false", "0"] {
            assert!(!run(&["--on-demand", off]).on_demand, "{off}");
        }
        let levels = [
            ("error", LevelFilter::Error),
            ("warn", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("TRACE", LevelFilter::Trace),
        ];
        for (text, level) in levels {
            assert_eq!(run(&["--log-level", text]).log_level, level);
        }
        assert_eq!(
            run(&["--send-mode", "sendfile"]).send_mode,
            SendMode::Sendfile
        );
    }

    #[test]
    fn multicast_interface() {
        assert_eq!(run(&["--multicast-if", ""]).multicast_interface, None);
        assert_eq!(
            run(&["--multicast-if=br-lan"])
                .multicast_interface
                .as_deref(),
            Some("br-lan")
        );
        assert_eq!(
            run_error(&["--multicast-if", "a-very-long-interface"]),
            "--multicast-if: expected an interface name like eth0 (at most 15 bytes, \
             no spaces, '/' or ':'), got 'a-very-long-interface'"
        );
        assert!(run_error(&["--multicast-if", "eth 0"]).starts_with("--multicast-if: expected"));
    }

    #[test]
    fn channel_option() {
        let config = run(&[
            "--channel",
            "tv=stdin",
            "--channel=news.hd=http://example.com/live.ts",
        ]);
        let names: Vec<&str> = config.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["tv", "news.hd"]);
        assert_eq!(config.channels[0].source, Source::Stdin);
        assert!(!config.demo);

        assert_eq!(
            run_error(&["--channel", "tv"]),
            "--channel: expected NAME=URL like tv=udp://239.1.1.1:1234, got 'tv'"
        );
        assert_eq!(
            run_error(&["--channel", "t v=stdin"]),
            "--channel: channel name 't v' must be 1 to 32 of the characters A-Z a-z 0-9 _ - ."
        );
        assert!(run_error(&["--channel", "=stdin"]).starts_with("--channel: channel name ''"));
        let long_name = format!("{}=stdin", "a".repeat(33));
        assert!(run_error(&["--channel", &long_name]).contains("must be 1 to 32"));
        assert_eq!(
            run_error(&["--channel", "tv=https://example.com/"]),
            "--channel: channel 'tv': https is not supported; use an http:// source"
        );
        assert_eq!(
            run_error(&["--channel", "tv=stdin", "--channel", "tv=-"]),
            "--channel: duplicate channel name 'tv'"
        );
    }

    #[test]
    fn too_many_channels_on_the_command_line() {
        let mut list = Vec::new();
        let values: Vec<String> = (0..=limits::CHANNELS_MAX)
            .map(|n| format!("c{n}=udp://239.0.0.{n}:1234"))
            .collect();
        for value in &values {
            list.push("--channel");
            list.push(value);
        }
        assert_eq!(
            run_error(&list),
            format!(
                "--channel: too many channels; at most {}, counting those of the config file",
                limits::CHANNELS_MAX
            )
        );
        assert_eq!(run(&list[2..]).channels.len(), limits::CHANNELS_MAX);
    }

    #[test]
    fn command_line_overrides_file_whatever_the_order() {
        let path = temporary_file(
            "ring_size = 8M\nlisten = 10.0.0.1:1\nlog_level = warn\n\
             [channel tv]\nsource = udp://239.1.1.1:1234\nring_size = 1M\n\
             [channel radio]\nsource = stdin\n",
        );
        for list in [
            vec![
                "--ring-size",
                "2M",
                "-c",
                &path,
                "--channel",
                "tv=tcp://0.0.0.0:9000",
            ],
            vec![
                "-c",
                &path,
                "--ring-size",
                "2M",
                "--channel",
                "tv=tcp://0.0.0.0:9000",
            ],
        ] {
            let config = run(&list);
            assert_eq!(config.ring_bytes, 2 * MIB / 188 * 188);
            assert_eq!(config.listen, "10.0.0.1:1".parse().unwrap());
            assert_eq!(config.log_level, LevelFilter::Warn);
            // The command-line channel replaces the file's channel of that name.
            assert_eq!(config.channels.len(), 2);
            assert_eq!(config.channels[0].name, "tv");
            assert_eq!(config.channels[0].source.to_string(), "tcp://0.0.0.0:9000");
            assert_eq!(config.channels[0].ring_bytes, None);
            assert_eq!(config.channels[1].name, "radio");
        }
        let config = run(&["-c", &path, "--channel", "extra=-"]);
        assert_eq!(config.channels.len(), 3);
        assert_eq!(config.channels[0].ring_bytes, Some(MIB / 188 * 188));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn file_errors_name_the_file_on_the_command_line() {
        let path = temporary_file("# header\nring_size = lots\n");
        assert_eq!(
            run_error(&["-c", &path]),
            format!("{path}:2: key 'ring_size': expected a size like 16M, got 'lots'")
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn program_selection_after_the_url_or_as_keys() {
        let config = run(&[
            "--channel",
            "one=udp://239.1.1.1:1234#program=3",
            "--channel",
            "two=file:/x.ts#service=BBC One",
            "--channel",
            "all=http://host/path#frag",
        ]);
        assert_eq!(config.channels[0].program, ProgramSelect::Number(3));
        assert_eq!(
            config.channels[1].program,
            ProgramSelect::Service("BBC One".into())
        );
        assert_eq!(config.channels[2].program, ProgramSelect::All);
        assert!(
            run_error(&["--channel", "x=udp://239.1.1.1:1234#program=0"])
                .contains("expected a program number from 1 to 65535")
        );
        assert!(run_error(&["--channel", "x=stdin#service="]).contains("service name"));
        let config = file(
            "[channel a]\nsource = udp://239.1.1.1:1234\nprogram = 7\n\
             [channel b]\nsource = stdin\nservice = Das Erste HD\n",
        )
        .unwrap();
        assert_eq!(config.channels[0].program, ProgramSelect::Number(7));
        assert_eq!(
            config.channels[1].program,
            ProgramSelect::Service("Das Erste HD".into())
        );
        let twice = file_error("[channel a]\nsource = stdin#program=2\nservice = x\n");
        assert!(twice.contains("given twice"), "{twice}");
        assert!(run(&[]).instant_start);
        assert!(!run(&["--instant-start", "off"]).instant_start);
    }

    #[test]
    fn lan_options_and_outputs() {
        let default = run(&[]);
        assert!(default.dlna);
        assert!(default.lan_interfaces.is_empty());
        assert_eq!(default.friendly_name, None);
        let custom = run(&[
            "--dlna",
            "off",
            "--lan-if",
            "br-lan, eth1",
            "--friendly-name",
            "Living room",
            "--channel",
            "tv=stdin",
            "--output",
            "tv=rtp://239.10.0.1:5000?ttl=4&iface=br-lan",
        ]);
        assert!(!custom.dlna);
        assert_eq!(custom.lan_interfaces, vec!["br-lan", "eth1"]);
        assert_eq!(custom.friendly_name.as_deref(), Some("Living room"));
        let output = custom.channels[0].output.clone().unwrap();
        assert!(output.rtp);
        assert_eq!(output.address, "239.10.0.1:5000".parse().unwrap());
        assert_eq!(output.ttl, 4);
        assert_eq!(output.interface.as_deref(), Some("br-lan"));
        assert_eq!(
            output.to_string(),
            "rtp://239.10.0.1:5000?ttl=4&iface=br-lan"
        );
        let file = file("[channel tv]\nsource = -\noutput = udp://[ff15::1]:1234\n").unwrap();
        let output = file.channels[0].output.clone().unwrap();
        assert!(!output.rtp);
        assert_eq!(output.ttl, 1);
        assert!(
            run_error(&["--output", "radio=rtp://239.1.1.1:5000"]).contains("no channel 'radio'")
        );
        assert!(run_error(&["--channel", "tv=-", "--output", "tv=http://x/"]).contains("rtp://"));
        assert!(
            run_error(&["--channel", "tv=-", "--output", "tv=rtp://239.1.1.1"]).contains("port")
        );
        assert!(run_error(&[
            "--channel",
            "tv=-",
            "--output",
            "tv=rtp://239.1.1.1:1?ttl=0"
        ])
        .contains("ttl"));
        assert!(run_error(&["--friendly-name", &"x".repeat(65)]).contains("1 to 64 bytes"));
    }

    #[test]
    fn port_mapping_options() {
        use crate::portmap::Method;
        let default = run(&[]);
        assert_eq!(default.peer_port, 7144);
        assert_eq!(
            default.portmap,
            vec![Method::Upnp, Method::Pcp, Method::NatPmp]
        );
        assert!(!default.portmap_lan_http);
        let custom = run(&[
            "--peer-port",
            "7200",
            "--portmap",
            "pcp,natpmp",
            "--portmap-port=40000",
            "--portmap-lease",
            "600",
            "--portmap-check",
            "5",
            "--portmap-if",
            "br-lan",
            "--portmap-lan-http",
            "on",
        ]);
        assert_eq!(custom.peer_port, 7200);
        assert_eq!(custom.portmap, vec![Method::Pcp, Method::NatPmp]);
        assert_eq!(custom.portmap_port, 40000);
        assert_eq!(custom.portmap_lease_s, 600);
        assert_eq!(custom.portmap_check_s, 5);
        assert_eq!(custom.portmap_interface.as_deref(), Some("br-lan"));
        assert!(custom.portmap_lan_http);
        assert!(run(&["--portmap", "off"]).portmap.is_empty());
        let unknown = run_error(&["--portmap", "upnp,smtp"]);
        assert!(unknown.contains("'smtp'"), "{unknown}");
        let twice = run_error(&["--portmap", "pcp,pcp"]);
        assert!(twice.contains("twice"), "{twice}");
        let port = run_error(&["--peer-port", "70000"]);
        assert!(port.contains("0 to 65535"), "{port}");
        assert!(run_error(&["--portmap-check", "0"]).contains("at least 1"));
    }

    #[test]
    fn config_file_format() {
        let text = "\u{feff}# ringcast configuration\r\n\
                    \r\n\
                    listen = \"192.168.1.1:8090\"   # LAN only\r\n\
                    \treaders_max=100\r\n\
                    on_demand = 0\n\
                    multicast_if = \"\"\n\
                    send_mode = copy\n\
                    \n\
                    [channel first]\n\
                    source = \"http://example.com:8000/stream?a=1#frag\"\n\
                    ring_size = 2M\n\
                    [ channel \"second\" ]\n\
                    source = udp://239.1.1.1:1234 # multicast\n";
        let config = file(text).unwrap();
        assert_eq!(config.listen, "192.168.1.1:8090".parse().unwrap());
        assert_eq!(config.readers_max, 100);
        assert!(!config.on_demand);
        assert_eq!(config.multicast_interface, None);
        assert_eq!(config.send_mode, SendMode::Copy);
        assert_eq!(config.channels.len(), 2);
        assert_eq!(config.channels[0].name, "first");
        assert_eq!(config.channels[0].ring_bytes, Some(2 * MIB / 188 * 188));
        assert_eq!(
            config.channels[0].source,
            Source::Http {
                url: "http://example.com:8000/stream?a=1#frag".into(),
                host: "example.com".into(),
                port: 8000,
                path: "/stream?a=1".into(),
            }
        );
        assert_eq!(config.channels[1].name, "second");
        assert_eq!(config.channels[1].ring_bytes, None);
        assert!(!config.demo);
    }

    #[test]
    fn every_global_key_in_a_file() {
        let text = "listen = 127.0.0.1:9000\nring_size = 32M\nreaders_max = 10\n\
                    on_demand = off\non_demand_ring_size = 1M\nmulticast_if = eth1\n\
                    rejoin_interval = 60\ngap_timeout = 3\nlinger = 0\nstall_timeout = 7\n\
                    header_timeout = 2\nsend_mode = copy\nflush_ms = 20\nlog_level = debug\n";
        let from_file = file(text).unwrap();
        let from_options = run(&[
            "--listen=127.0.0.1:9000",
            "--ring-size=32M",
            "--readers-max=10",
            "--on-demand=off",
            "--on-demand-ring-size=1M",
            "--multicast-if=eth1",
            "--rejoin-interval=60",
            "--gap-timeout=3",
            "--linger=0",
            "--stall-timeout=7",
            "--header-timeout=2",
            "--send-mode=copy",
            "--flush-ms=20",
            "--log-level=debug",
        ]);
        assert_eq!(from_file, from_options);
        assert_ne!(from_file, Config::default());
        assert!(from_file.demo);
    }

    #[test]
    fn config_file_errors() {
        let cases: &[(&str, &str)] = &[
            ("ring_size = lots", "ringcast.conf:1: key 'ring_size': expected a size like 16M, got 'lots'"),
            ("\n\ngap_timeout = 0", "ringcast.conf:3: key 'gap_timeout': must be at least 1 second, got '0'"),
            ("ring_sise = 1M", "ringcast.conf:1: unknown key 'ring_sise'"),
            ("ring-size = 1M", "ringcast.conf:1: unknown key 'ring-size'; keys use '_': 'ring_size'"),
            ("just words", "ringcast.conf:1: expected 'key = value' or '[channel NAME]', got 'just words'"),
            ("= 5", "ringcast.conf:1: expected a key before '='"),
            ("listen = \"1.2.3.4:5", "ringcast.conf:1: key 'listen': the value opens a '\"' but does not close it"),
            ("linger = 1\nlinger = 2", "ringcast.conf:2: key 'linger': given twice (first on line 1)"),
            ("source = stdin", "ringcast.conf:1: key 'source' belongs in a [channel NAME] section"),
            ("config = x", "ringcast.conf:1: key 'config' is a command-line option only"),
            ("[station tv]", "ringcast.conf:1: unknown section '[station tv]'; expected [channel NAME]"),
            ("[channel]", "ringcast.conf:1: a channel section needs a name, like [channel tv]"),
            ("[channel tv", "ringcast.conf:1: expected '[channel NAME]', got '[channel tv'"),
            ("[channel a/b]\nsource = -", "ringcast.conf:1: channel name 'a/b' must be 1 to 32 of the characters A-Z a-z 0-9 _ - ."),
            ("[channel tv]\nring_size = 1M", "ringcast.conf:1: channel 'tv' has no 'source = URL' line"),
            ("[channel tv]\n[channel radio]\nsource = -", "ringcast.conf:1: channel 'tv' has no 'source = URL' line"),
            ("[channel tv]\nsource = -\n\n[channel tv]\nsource = -", "ringcast.conf:4: duplicate channel name 'tv' (first on line 1)"),
            ("[channel tv]\nsource = -\nsource = stdin", "ringcast.conf:3: key 'source': given twice in channel 'tv' (first on line 2)"),
            ("[channel tv]\nsource = -\nring_size = 1M\nring_size = 2M", "ringcast.conf:4: key 'ring_size': given twice in channel 'tv' (first on line 3)"),
            ("[channel tv]\nsource = -\nlisten = :80", "ringcast.conf:3: key 'listen' is a global key; put it before the first [channel NAME] section"),
            ("[channel tv]\nsorce = -", "ringcast.conf:2: unknown key 'sorce' in a channel section; expected source, ring_size, program, service or output"),
            ("[channel tv]\nsource = https://example.com/", "ringcast.conf:2: key 'source': https is not supported; use an http:// source"),
            ("[channel tv]\nsource = -\nring_size = big", "ringcast.conf:3: key 'ring_size': expected a size like 16M, got 'big'"),
        ];
        for (text, expected) in cases {
            assert_eq!(file_error(text), *expected, "{text:?}");
        }
        assert!(
            file_error("channel = tv=stdin").starts_with("ringcast.conf:1: channels are sections")
        );
    }

    #[test]
    fn config_line_length_limit() {
        let fits = format!("# {}", "x".repeat(limits::CONFIG_LINE_BYTES_MAX - 2));
        assert!(file(&fits).is_ok());
        let too_long = format!("\n# {}", "x".repeat(limits::CONFIG_LINE_BYTES_MAX - 1));
        assert_eq!(
            file_error(&too_long),
            format!(
                "ringcast.conf:2: the line is longer than {} bytes",
                limits::CONFIG_LINE_BYTES_MAX
            )
        );
    }

    #[test]
    fn too_many_channels_in_a_file() {
        let mut text = String::new();
        for n in 0..=limits::CHANNELS_MAX {
            text.push_str(&format!(
                "[channel c{n}]\nsource = udp://239.0.0.{n}:1234\n"
            ));
        }
        assert_eq!(
            file_error(&text),
            format!(
                "ringcast.conf:{}: too many channels; at most {}",
                2 * limits::CHANNELS_MAX + 1,
                limits::CHANNELS_MAX
            )
        );
    }

    #[test]
    fn ring_size_clamp_in_a_file_is_noted_with_its_line() {
        let config = file("[channel tv]\nsource = -\nring_size = 0").unwrap();
        assert_eq!(config.channels[0].ring_bytes, Some(limits::RING_BYTES_MIN));
        assert_eq!(
            config.adjustments,
            [format!(
                "ringcast.conf:3: key 'ring_size': '0' is below the minimum ring size; using {} bytes",
                limits::RING_BYTES_MIN
            )]
        );
    }

    #[test]
    fn demo_only_without_channels() {
        assert!(file("# nothing\n").unwrap().demo);
        assert!(!file("[channel tv]\nsource = -").unwrap().demo);
        assert!(run(&["--ring-size", "1M"]).demo);
        assert!(!run(&["--channel", "tv=-"]).demo);
    }

    #[test]
    fn comments() {
        assert_eq!(strip_comment("# all"), "");
        assert_eq!(strip_comment("a = b # c"), "a = b ");
        assert_eq!(strip_comment("a = b#c"), "a = b#c");
        assert_eq!(strip_comment("a = \"b # c\" # d"), "a = \"b # c\" ");
    }

    #[test]
    fn sources_round_trip_through_display() {
        let forms = [
            "http://example.com/live.ts",
            "http://192.168.1.10:8001/1:0:1:2:3:4:0:0:0:0:",
            "http://[2001:db8::1]:8080/a?b=c",
            "udp://239.1.1.1:1234",
            "udp://0.0.0.0:1234",
            "udp://127.0.0.1:5000",
            "udp://10.0.0.1@232.1.1.1:5000?iface=eth1",
            "udp://[ff15::1]:1234",
            "udp://[2001:db8::2]@[ff3e::1]:1234?iface=br-lan",
            "rtp://239.2.2.2:5004",
            "rtp://10.0.0.1@232.1.1.1:5000",
            "tcp://0.0.0.0:9000",
            "tcp://[::]:9000",
            "stdin",
            "file:/media/demo.ts",
            "file:relative dir/a.ts",
            "file:/media/demo.ts?bitrate=8M",
            "file:/media/demo.ts?bitrate=1500K",
            "file:/media/demo.ts?bitrate=1234567",
            "file:/media/demo.ts?bitrate=2G",
        ];
        for form in forms {
            let parsed = source(form);
            assert_eq!(parsed.to_string(), form);
            assert_eq!(source(&parsed.to_string()), parsed);
        }
    }

    #[test]
    fn source_spellings() {
        assert_eq!(source("-"), Source::Stdin);
        assert_eq!(source("  stdin "), Source::Stdin);
        assert_eq!(
            source("udp://@239.1.1.1:1234").to_string(),
            "udp://239.1.1.1:1234"
        );
        assert_eq!(source("udp://@:1234").to_string(), "udp://0.0.0.0:1234");
        assert_eq!(
            source("UDP://239.1.1.1:1234").to_string(),
            "udp://239.1.1.1:1234"
        );
        assert_eq!(
            source("udp://2001:db8::2@[ff3e::1]:1234").to_string(),
            "udp://[2001:db8::2]@[ff3e::1]:1234"
        );
        assert_eq!(source("tcp://:9000").to_string(), "tcp://0.0.0.0:9000");
        assert_eq!(source("file:///media/a.ts").to_string(), "file:/media/a.ts");
        assert_eq!(
            source("file:/a.ts?bitrate=8000k").to_string(),
            "file:/a.ts?bitrate=8M"
        );
        assert_eq!(
            source("file:/a.ts?bitrate=8M"),
            Source::File {
                path: "/a.ts".into(),
                bitrate_bps: Some(8_000_000)
            }
        );
    }

    #[test]
    fn source_fields() {
        assert_eq!(
            source("http://example.com"),
            Source::Http {
                url: "http://example.com".into(),
                host: "example.com".into(),
                port: 80,
                path: "/".into(),
            }
        );
        assert_eq!(
            source("http://[::1]:81?x"),
            Source::Http {
                url: "http://[::1]:81?x".into(),
                host: "::1".into(),
                port: 81,
                path: "/?x".into(),
            }
        );
        assert_eq!(
            source("rtp://10.0.0.1@232.1.1.1:5000?iface=eth0"),
            Source::Rtp {
                group: "232.1.1.1".parse().unwrap(),
                port: 5000,
                source: Some("10.0.0.1".parse().unwrap()),
                interface: Some("eth0".into()),
            }
        );
        assert_eq!(
            source("udp://[ff15::1]:1234"),
            Source::Udp {
                group: "ff15::1".parse().unwrap(),
                port: 1234,
                source: None,
                interface: None,
            }
        );
        assert_eq!(
            source("tcp://127.0.0.1:9000"),
            Source::TcpListen {
                address: "127.0.0.1:9000".parse().unwrap()
            }
        );
    }

    #[test]
    fn source_errors() {
        let cases: &[(&str, &str)] = &[
            ("https://example.com/x", "https is not supported; use an http:// source"),
            ("", "the source is empty; expected a URL like udp://239.1.1.1:1234"),
            ("ftp://x/y", "unknown source 'ftp://x/y'; expected http://, udp://, rtp://, tcp://, file:, stdin or -"),
            ("239.1.1.1:1234", "unknown source '239.1.1.1:1234'; expected http://, udp://, rtp://, tcp://, file:, stdin or -"),
            ("http://user:pw@example.com/", "user names and passwords in source URLs are not supported"),
            ("http:///path", "expected a host name or IP address, got ''"),
            ("http://exa mple.com/", "the source 'http://exa mple.com/' contains a space"),
            ("http://example.com:0/", "expected a port from 1 to 65535, got '0'"),
            ("http://example.com:99999/", "expected a port from 1 to 65535, got '99999'"),
            ("http://[example.com]/", "expected an IPv6 address in brackets, got '[example.com]'"),
            ("udp://239.1.1.1", "'239.1.1.1' has no port; expected GROUP:PORT like 239.1.1.1:1234"),
            ("udp://239.1.1.1:", "expected a port from 1 to 65535, got ''"),
            ("udp://239.1.1.1:+5", "expected a port from 1 to 65535, got '+5'"),
            ("udp://tv.example:1234", "expected an IP address like 239.1.1.1, got 'tv.example'"),
            ("udp://ff15::1:1234", "write IPv6 addresses in brackets, like [ff15::1]:1234; got 'ff15::1:1234'"),
            ("udp://[ff15::1:1234", "'[ff15::1:1234' has '[' but no ']'"),
            ("udp://[ff15::1]1234", "expected ':' and a port after ']' in '[ff15::1]1234'"),
            ("udp://x@239.1.1.1:1234", "expected a source IP address before '@', got 'x'"),
            ("udp://10.0.0.1@10.0.0.2:1234", "a source address (SRC@) needs a multicast group; 10.0.0.2 is not one"),
            ("udp://[2001:db8::1]@232.1.1.1:1234", "the source address 2001:db8::1 and the group 232.1.1.1 are not both IPv4 or both IPv6"),
            ("udp://239.1.1.1:1234?ttl=4", "unknown option 'ttl=4' in the source; only ?iface=NAME is known"),
            ("rtp://239.1.1.1:1234?iface=", "expected an interface name like eth0 (at most 15 bytes, no spaces, '/' or ':'), got ''"),
            ("tcp://0.0.0.0", "'0.0.0.0' has no port; expected ADDR:PORT like 0.0.0.0:9000"),
            ("file:", "a file source needs a path, like file:/media/demo.ts"),
            ("file:/a.ts?bitrate=fast", "expected a bit rate like 8M (bits per second), got 'fast'"),
            ("file:/a.ts?bitrate=0", "expected a bit rate like 8M (bits per second), got '0'"),
            ("file:/a\u{1}.ts", "the source contains a control character"),
        ];
        for (text, expected) in cases {
            assert_eq!(source_error(text), *expected, "{text:?}");
        }
        let long = format!(
            "http://example.com/{}",
            "a".repeat(limits::SOURCE_URL_BYTES_MAX)
        );
        assert_eq!(
            source_error(&long),
            format!(
                "the source is longer than {} bytes",
                limits::SOURCE_URL_BYTES_MAX
            )
        );
    }

    #[test]
    fn channel_names() {
        assert!(check_channel_name("Tv_1-hd.x").is_ok());
        assert!(check_channel_name(&"a".repeat(limits::CHANNEL_NAME_BYTES_MAX)).is_ok());
        for bad in ["", "a b", "a/b", "é", "a?b", "a%20"] {
            assert!(check_channel_name(bad).is_err(), "{bad}");
        }
        assert!(check_channel_name(&"a".repeat(limits::CHANNEL_NAME_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn error_display_forms() {
        let error = ConfigError::file("f.conf", None, None, "cannot open");
        assert_eq!(error.to_string(), "f.conf: cannot open");
        let error = ConfigError::file("f.conf", Some(3), Some("linger"), "bad");
        assert_eq!(error.to_string(), "f.conf:3: key 'linger': bad");
        let error = ConfigError::option("--linger", "bad");
        assert_eq!(error.to_string(), "--linger: bad");
    }

    #[test]
    fn help_lists_every_option_and_default() {
        for (_, key) in SETTINGS {
            let option = format!("--{}", key.replace('_', "-"));
            assert!(HELP.contains(&option), "{option} missing from HELP");
        }
        for text in [
            "-c, --config",
            "-l, --listen",
            "--channel NAME=URL",
            "-h, --help",
            "-V, --version",
            "[default: 0.0.0.0:8090]",
            "[default: 16M]",
            "[default: 64]",
            "[default: on]",
            "[default: 4M]",
            "[default: 0]",
            "[default: 15]",
            "[default: 5]",
            "[default: 20]",
            "[default: auto]",
            "[default: 50]",
            "[default: info]",
            "/channel/NAME.ts",
            "/playlist.m3u",
            "/status",
            "/udp/GROUP:PORT",
            "/rtp/GROUP:PORT",
            "http://HOST[:PORT]/PATH",
            "udp://[SRC@]GROUP:PORT",
            "rtp://",
            "tcp://ADDR:PORT",
            "stdin or -",
            "file:PATH",
            "ringcast --channel tv=stdin",
            "Config file: see README",
        ] {
            assert!(HELP.contains(text), "{text} missing from HELP");
        }
        assert_eq!(READERS_MAX_DEFAULT, 64);
        assert_eq!(limits::READERS_MAX, 1000);
        assert_eq!(limits::CHANNEL_NAME_BYTES_MAX, 32);
        assert_eq!(FLUSH_MS_DEFAULT, 50);
        for line in HELP.lines() {
            assert!(line.len() <= 80, "HELP line too long: {line}");
        }
    }
}
