//! The LAN side's decisions, without I/O: which resource a request path names,
//! and the small documents the daemon serves (`/status` JSON, the `/` page and
//! the M3U playlist), rendered into fixed buffers.
//!
//! Paths served:
//! - `/channel/<name>.ts`: a channel's live stream (GET and HEAD);
//! - `/udp/<group>:<port>`, `/rtp/<group>:<port>`: udpxy/msd_lite-style
//!   on-demand multicast (see `wire::udpxy`);
//! - `/playlist.m3u`: every channel, as absolute URLs on the address the player
//!   reached us on;
//! - `/dlna/...`: the DLNA MediaServer's documents and SOAP control
//!   ([`dlna`]; announced over SSDP by [`ssdp`]);
//! - `/status`: JSON counters; `/metrics`: the same for Prometheus
//!   ([`metrics`]); `/`: a small HTML status page.

pub mod dlna;
pub mod metrics;
pub mod ssdp;

use core::fmt::Write;
use core::net::SocketAddr;

use crate::alloc_count::AllocSnapshot;
use crate::stats::{ChannelStats, Totals};
use crate::wire::udpxy::{self, OnDemand, UdpxyError};
use crate::wire::SliceWriter;

/// What a request path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Channel(&'a str),
    OnDemand(OnDemand),
    BadOnDemand(UdpxyError),
    Playlist,
    Status,
    Metrics,
    Index,
    /// A DLNA document: the device description or an SCPD.
    DlnaDocument(DlnaDocument),
    /// SOAP control of a DLNA service (POST).
    DlnaControl(dlna::Service),
    NotFound,
}

/// The DLNA documents served with GET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DlnaDocument {
    Description,
    ContentDirectoryScpd,
    ConnectionManagerScpd,
}

/// Maps a request path (without query) to a [`Route`].
pub fn route(path: &str) -> Route<'_> {
    match path {
        "/" | "/index.html" => return Route::Index,
        "/status" | "/status.json" => return Route::Status,
        "/playlist.m3u" | "/playlist.m3u8" => return Route::Playlist,
        "/metrics" => return Route::Metrics,
        dlna::DESCRIPTION_PATH => return Route::DlnaDocument(DlnaDocument::Description),
        dlna::CONTENT_DIRECTORY_SCPD_PATH => {
            return Route::DlnaDocument(DlnaDocument::ContentDirectoryScpd)
        }
        dlna::CONNECTION_MANAGER_SCPD_PATH => {
            return Route::DlnaDocument(DlnaDocument::ConnectionManagerScpd)
        }
        dlna::CONTENT_DIRECTORY_CONTROL_PATH => {
            return Route::DlnaControl(dlna::Service::ContentDirectory)
        }
        dlna::CONNECTION_MANAGER_CONTROL_PATH => {
            return Route::DlnaControl(dlna::Service::ConnectionManager)
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/channel/") {
        let name = rest.strip_suffix(".ts").unwrap_or(rest);
        if !name.is_empty() && !name.contains('/') {
            return Route::Channel(name);
        }
        return Route::NotFound;
    }
    match udpxy::parse_path(path) {
        Ok(Some(on_demand)) => Route::OnDemand(on_demand),
        Ok(None) => Route::NotFound,
        Err(error) => Route::BadOnDemand(error),
    }
}

/// Where a stream request wants to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The default: the newest keyframe (instant start) or the live edge.
    Live,
    /// Exactly this stream position (`?position=N`): a resumed reader.
    Position(u64),
    /// This many milliseconds in the past, on a keyframe (`?offset=-30s`).
    Offset { back_ms: u64 },
}

/// The longest time-shift a query may ask for (the ring is the real bound).
pub const OFFSET_S_MAX: u64 = 24 * 3600;

/// Reads `position=N` or `offset=-30s` (also `-30`, `-2m`, `30s`) from a
/// stream URL's query. Other parameters are ignored, as players add their own.
pub fn parse_stream_query(query: Option<&str>) -> Result<StartAt, &'static str> {
    let mut start = StartAt::Live;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        start = match key {
            "position" => StartAt::Position(
                value
                    .parse()
                    .map_err(|_| "position must be a byte count, like position=123456")?,
            ),
            "offset" => StartAt::Offset {
                back_ms: parse_offset_ms(value)?,
            },
            _ => continue,
        };
    }
    Ok(start)
}

/// `-30s`, `30`, `-2m`, `-1h` as milliseconds back in time.
fn parse_offset_ms(text: &str) -> Result<u64, &'static str> {
    const ERROR: &str = "offset must be a time back, like offset=-30s or offset=-2m";
    let text = text.strip_prefix('-').unwrap_or(text);
    let (digits, unit_s) = match text.as_bytes().last() {
        Some(b's') => (&text[..text.len() - 1], 1),
        Some(b'm') => (&text[..text.len() - 1], 60),
        Some(b'h') => (&text[..text.len() - 1], 3600),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ERROR);
    }
    let seconds = digits
        .parse::<u64>()
        .map_err(|_| ERROR)?
        .saturating_mul(unit_s)
        .min(OFFSET_S_MAX);
    Ok(seconds * 1000)
}

/// A channel's state as shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// Data arrived recently.
    Live,
    /// Connecting or reconnecting to the source.
    Connecting,
    /// Connected, but no data for a while.
    Waiting,
    /// An on-demand slot with no group, or a source that ended.
    Idle,
}

impl ChannelState {
    pub fn word(self) -> &'static str {
        match self {
            ChannelState::Live => "live",
            ChannelState::Connecting => "connecting",
            ChannelState::Waiting => "waiting",
            ChannelState::Idle => "idle",
        }
    }
}

/// One channel as the status documents see it.
pub struct ChannelView<'a> {
    pub name: &'a str,
    pub source: &'a str,
    pub state: ChannelState,
    pub input_bps: u64,
    pub ring_bytes: u64,
    /// Seconds of stream a reader can go back (`?offset=`).
    pub timeshift_s: u64,
    pub stats: &'a ChannelStats,
}

/// The daemon as the status documents see it.
pub struct DaemonView<'a> {
    pub version: &'a str,
    pub uptime_s: u64,
    pub alloc: AllocSnapshot,
    pub totals: &'a Totals,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub node_id: &'a str,
    pub dlna_uuid: &'a str,
    pub friendly_name: &'a str,
    /// Starts of this node (kept in the state store).
    pub boots: u64,
    /// The state file, or "" when nothing is kept across restarts.
    pub state_path: &'a str,
    /// The peer listener's port (0 = none).
    pub peer_port: u16,
    /// The peer port's mapping on the home router.
    pub portmap: &'a crate::portmap::Report,
    /// The LAN HTTP port's mapping, when the config asks for one.
    pub portmap_lan_http: Option<&'a crate::portmap::Report>,
    /// The clock the reports' lease times use.
    pub now_ms: u64,
    /// The SSDP announcer's counters (zero when DLNA is off).
    pub ssdp: ssdp::SsdpCounters,
}

/// Writes an address as a JSON string, or `null`.
fn write_json_address(
    w: &mut SliceWriter<'_>,
    address: Option<impl core::fmt::Display>,
) -> core::fmt::Result {
    match address {
        Some(address) => write!(w, "\"{address}\""),
        None => w.write_str("null"),
    }
}

/// Renders a port mapping report as a JSON object.
fn render_portmap_json(
    w: &mut SliceWriter<'_>,
    report: &crate::portmap::Report,
    now_ms: u64,
) -> core::fmt::Result {
    write!(w, "{{\"state\":\"{}\",\"method\":", report.state.name())?;
    match report.method {
        Some(method) => write!(w, "\"{}\"", method.name())?,
        None => w.write_str("null")?,
    }
    w.write_str(",\"internal\":")?;
    write_json_address(w, report.internal)?;
    w.write_str(",\"external\":")?;
    write_json_address(w, report.external)?;
    w.write_str(",\"gateway\":")?;
    write_json_address(w, report.gateway)?;
    write!(
        w,
        ",\"reachable\":{},\"lease_s\":{},\"lease_left_s\":{},\"error\":",
        report.reachable(),
        report.lease_s,
        report.lease_left_s(now_ms)
    )?;
    match report.error {
        Some(code) => write!(w, "{code}")?,
        None => w.write_str("null")?,
    }
    w.write_str(",\"detail\":\"")?;
    write_json_escaped(w, &report.detail)?;
    write!(
        w,
        "\",\"maps\":{},\"renewals\":{},\"checks\":{},\"remaps\":{}}}",
        report.maps, report.renewals, report.checks, report.remaps
    )
}

/// One line on the status page about how peers reach this box.
fn render_portmap_html(
    w: &mut SliceWriter<'_>,
    peer_port: u16,
    report: &crate::portmap::Report,
) -> core::fmt::Result {
    use crate::portmap::State;
    w.write_str("<p>Peers: ")?;
    match (report.state, report.external) {
        (State::Mapped, Some(external)) => write!(
            w,
            "reachable at {external} (port {peer_port} mapped with {})",
            report.method.map_or("?", |m| m.name())
        )?,
        (state, _) => {
            write!(w, "not reachable from the internet ({}", state.name())?;
            if !report.detail.is_empty() {
                w.write_str(": ")?;
                write_html_escaped(w, &report.detail)?;
            }
            w.write_str(")")?;
        }
    }
    w.write_str("</p>")
}

/// Writes `text` as a JSON string body (without quotes), escaping as needed.
fn write_json_escaped(w: &mut SliceWriter<'_>, text: &str) -> core::fmt::Result {
    for character in text.chars() {
        match character {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            c if (c as u32) < 0x20 => write!(w, "\\u{:04x}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    Ok(())
}

/// Writes `text` escaped for HTML.
fn write_html_escaped(w: &mut SliceWriter<'_>, text: &str) -> core::fmt::Result {
    for character in text.chars() {
        match character {
            '<' => w.write_str("&lt;")?,
            '>' => w.write_str("&gt;")?,
            '&' => w.write_str("&amp;")?,
            '"' => w.write_str("&quot;")?,
            c => w.write_char(c)?,
        }
    }
    Ok(())
}

fn render_channel_json(w: &mut SliceWriter<'_>, channel: &ChannelView<'_>) -> core::fmt::Result {
    let stats = channel.stats;
    w.write_str("{\"name\":\"")?;
    write_json_escaped(w, channel.name)?;
    w.write_str("\",\"source\":\"")?;
    write_json_escaped(w, channel.source)?;
    write!(
        w,
        "\",\"state\":\"{}\",\"input_bps\":{},\"bytes_in\":{},\"bytes_out\":{},\"readers\":{},\
         \"skips\":{},\"drops\":{},\"errors\":{},\"garbage_bytes\":{},\"sync_losses\":{},\
         \"resyncs\":{},\"cc_errors\":{},\"pcr_jumps\":{},\"discontinuities\":{},\
         \"keyframes\":{},\"withheld_bytes\":{},\"filtered_packets\":{},\"psi_errors\":{},\
         \"reconnects\":{},\"ring_bytes\":{},\"timeshift_s\":{},\"output_datagrams\":{},\
         \"output_bytes\":{},\"output_skips\":{},\"output_drops\":{}}}",
        channel.state.word(),
        channel.input_bps,
        stats.bytes_in.get(),
        stats.bytes_out.get(),
        stats.readers.get(),
        stats.skips.get(),
        stats.drops.get(),
        stats.errors.get(),
        stats.garbage_bytes.get(),
        stats.sync_losses.get(),
        stats.sync_losses.get(),
        stats.cc_errors.get(),
        stats.pcr_jumps.get(),
        stats.discontinuities.get(),
        stats.keyframes.get(),
        stats.withheld_bytes.get(),
        stats.filtered_packets.get(),
        stats.psi_errors.get(),
        stats.reconnects.get(),
        channel.ring_bytes,
        channel.timeshift_s,
        stats.output_datagrams.get(),
        stats.output_bytes.get(),
        stats.output_skips.get(),
        stats.output_drops.get(),
    )
}

/// Renders `/status` as JSON.
pub fn render_status_json<'a>(
    w: &mut SliceWriter<'_>,
    daemon: &DaemonView<'_>,
    channels: impl Iterator<Item = ChannelView<'a>>,
) -> core::fmt::Result {
    let totals = daemon.totals;
    let alloc = daemon.alloc;
    write!(
        w,
        "{{\"version\":\"{}\",\"uptime_s\":{},\"node\":{{\"id\":\"{}\",\"dlna_uuid\":\"{}\",\
         \"boots\":{},\"friendly_name\":\"",
        daemon.version, daemon.uptime_s, daemon.node_id, daemon.dlna_uuid, daemon.boots,
    )?;
    write_json_escaped(w, daemon.friendly_name)?;
    w.write_str("\",\"state_file\":\"")?;
    write_json_escaped(w, daemon.state_path)?;
    write!(
        w,
        "\"}},\"alloc\":{{\"allocations\":{},\"deallocations\":{},\
         \"bytes_allocated\":{},\"bytes_live\":{}}},\"totals\":{{\"readers\":{},\"bytes_in\":{},\
         \"bytes_out\":{},\"http_requests\":{},\"http_rejected\":{},\"http_bad_request\":{},\
         \"http_not_found\":{},\"connections_dropped\":{}}},",
        alloc.allocations,
        alloc.deallocations,
        alloc.bytes_allocated,
        alloc.bytes_live,
        totals.readers.get(),
        daemon.bytes_in,
        daemon.bytes_out,
        totals.http_requests.get(),
        totals.http_rejected.get(),
        totals.http_bad_request.get(),
        totals.http_not_found.get(),
        totals.connections_dropped.get(),
    )?;
    let ssdp = daemon.ssdp;
    write!(
        w,
        "\"ssdp\":{{\"searches\":{},\"answers\":{},\"answers_dropped\":{},\"notifies\":{},\
         \"malformed\":{},\"off_subnet\":{}}},",
        ssdp.searches,
        ssdp.answers,
        ssdp.answers_dropped,
        ssdp.notifies,
        ssdp.malformed,
        ssdp.off_subnet
    )?;
    write!(w, "\"peer_port\":{},\"portmap\":", daemon.peer_port)?;
    render_portmap_json(w, daemon.portmap, daemon.now_ms)?;
    if let Some(report) = daemon.portmap_lan_http {
        w.write_str(",\"portmap_lan_http\":")?;
        render_portmap_json(w, report, daemon.now_ms)?;
    }
    w.write_str(",\"channels\":[")?;
    for (index, channel) in channels.enumerate() {
        if index > 0 {
            w.write_str(",")?;
        }
        render_channel_json(w, &channel)?;
    }
    w.write_str("]}\n")
}

/// The URL base players should use: the address they reached us on.
pub struct UrlBase(pub SocketAddr);

impl core::fmt::Display for UrlBase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            SocketAddr::V4(address) => write!(f, "http://{}:{}", address.ip(), address.port()),
            SocketAddr::V6(address) => match address.ip().to_ipv4_mapped() {
                Some(v4) => write!(f, "http://{}:{}", v4, address.port()),
                None => write!(f, "http://[{}]:{}", address.ip(), address.port()),
            },
        }
    }
}

/// Renders the M3U playlist of `names`.
pub fn render_playlist<'a>(
    w: &mut SliceWriter<'_>,
    base: &UrlBase,
    names: impl Iterator<Item = &'a str>,
) -> core::fmt::Result {
    w.write_str("#EXTM3U\n")?;
    for name in names {
        write!(
            w,
            "#EXTINF:-1 tvg-name=\"{name}\" group-title=\"ringcast\",{name}\n{base}/channel/{name}.ts\n"
        )?;
    }
    Ok(())
}

/// Renders the `/` status page.
pub fn render_index_html<'a>(
    w: &mut SliceWriter<'_>,
    base: &UrlBase,
    daemon: &DaemonView<'_>,
    channels: impl Iterator<Item = ChannelView<'a>>,
) -> core::fmt::Result {
    write!(
        w,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ringcast</title>\
         <style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;text-align:left}}</style>\
         </head><body><h1>ringcast {}</h1><p>Up {} s. Readers: {}. \
         <a href=\"/playlist.m3u\">Playlist (M3U)</a> · <a href=\"/status\">Status (JSON)</a></p>",
        daemon.version,
        daemon.uptime_s,
        daemon.totals.readers.get()
    )?;
    render_portmap_html(w, daemon.peer_port, daemon.portmap)?;
    w.write_str("<p>TVs (DLNA): ")?;
    write_html_escaped(w, daemon.friendly_name)?;
    write!(
        w,
        " &middot; searches {} &middot; answers {} ({} held back by the rate limit) \
         &middot; announcements {}</p>",
        daemon.ssdp.searches,
        daemon.ssdp.answers,
        daemon.ssdp.answers_dropped,
        daemon.ssdp.notifies
    )?;
    w.write_str(
        "<table><tr><th>Channel</th><th>Source</th><th>State</th><th>Input kbit/s</th>\
         <th>Bytes in</th><th>Bytes out</th><th>Readers</th><th>Peers</th><th>Skips</th>\
         <th>Drops</th><th>Errors</th><th>CC errors</th><th>Garbage bytes</th>\
         <th>RTP/UDP out bytes</th></tr>",
    )?;
    for channel in channels {
        w.write_str("<tr><td><a href=\"")?;
        write!(w, "{base}/channel/")?;
        write_html_escaped(w, channel.name)?;
        w.write_str(".ts\">")?;
        write_html_escaped(w, channel.name)?;
        w.write_str("</a></td><td>")?;
        write_html_escaped(w, channel.source)?;
        let stats = channel.stats;
        write!(
            w,
            "</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>0</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            channel.state.word(),
            channel.input_bps / 1000,
            stats.bytes_in.get(),
            stats.bytes_out.get(),
            stats.readers.get(),
            stats.skips.get(),
            stats.drops.get(),
            stats.errors.get(),
            stats.cc_errors.get(),
            stats.garbage_bytes.get(),
            stats.output_bytes.get()
        )?;
    }
    w.write_str("</table></body></html>\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_queries_name_a_start() {
        assert_eq!(parse_stream_query(None), Ok(StartAt::Live));
        assert_eq!(parse_stream_query(Some("x=1")), Ok(StartAt::Live));
        assert_eq!(
            parse_stream_query(Some("position=376")),
            Ok(StartAt::Position(376))
        );
        for (text, back_ms) in [
            ("-30s", 30_000),
            ("30", 30_000),
            ("-2m", 120_000),
            ("-1h", 3_600_000),
        ] {
            let query = format!("a=b&offset={text}");
            assert_eq!(
                parse_stream_query(Some(&query)),
                Ok(StartAt::Offset { back_ms }),
                "{text}"
            );
        }
        assert!(parse_stream_query(Some("position=-1")).is_err());
        assert!(parse_stream_query(Some("offset=soon")).is_err());
        assert!(parse_stream_query(Some("offset=-s")).is_err());
        assert_eq!(
            parse_stream_query(Some("offset=-99999999h")),
            Ok(StartAt::Offset {
                back_ms: OFFSET_S_MAX * 1000
            })
        );
    }

    #[test]
    fn routes() {
        assert_eq!(route("/channel/news.ts"), Route::Channel("news"));
        assert_eq!(route("/channel/news"), Route::Channel("news"));
        assert_eq!(route("/channel/"), Route::NotFound);
        assert_eq!(route("/status"), Route::Status);
        assert_eq!(route("/"), Route::Index);
        assert_eq!(route("/playlist.m3u"), Route::Playlist);
        assert_eq!(route("/nothing"), Route::NotFound);
        assert!(matches!(route("/udp/239.0.0.1:1234"), Route::OnDemand(_)));
        assert!(matches!(route("/udp/10.0.0.1:1234"), Route::BadOnDemand(_)));
    }

    #[test]
    fn playlist_uses_absolute_urls() {
        let mut buffer = [0u8; 256];
        let mut w = SliceWriter::new(&mut buffer);
        let base = UrlBase("192.168.1.2:8090".parse().unwrap());
        render_playlist(&mut w, &base, ["a", "b"].into_iter()).unwrap();
        let text = core::str::from_utf8(w.written()).unwrap();
        assert_eq!(
            text,
            "#EXTM3U\n#EXTINF:-1 tvg-name=\"a\" group-title=\"ringcast\",a\n\
             http://192.168.1.2:8090/channel/a.ts\n\
             #EXTINF:-1 tvg-name=\"b\" group-title=\"ringcast\",b\n\
             http://192.168.1.2:8090/channel/b.ts\n"
        );
    }

    #[test]
    fn status_json_escapes_and_fails_when_full() {
        let stats = ChannelStats::default();
        stats.bytes_in.add(5);
        let totals = Totals::default();
        let portmap = crate::portmap::Report::disabled();
        let daemon = DaemonView {
            version: "0.1.0",
            uptime_s: 3,
            alloc: AllocSnapshot::default(),
            totals: &totals,
            bytes_in: 5,
            bytes_out: 0,
            node_id: "ab",
            dlna_uuid: "u",
            friendly_name: "ringcast on \"box\"",
            boots: 2,
            state_path: "",
            peer_port: 7144,
            portmap: &portmap,
            portmap_lan_http: None,
            now_ms: 0,
            ssdp: Default::default(),
        };
        let view = || ChannelView {
            name: "a",
            source: "file:/x\"y",
            state: ChannelState::Live,
            input_bps: 8,
            ring_bytes: 100,
            timeshift_s: 7,
            stats: &stats,
        };
        let mut buffer = [0u8; 2048];
        let mut w = SliceWriter::new(&mut buffer);
        render_status_json(&mut w, &daemon, core::iter::once(view())).unwrap();
        let text = core::str::from_utf8(w.written()).unwrap();
        assert!(text.contains("\"source\":\"file:/x\\\"y\""));
        assert!(text.contains("\"bytes_in\":5"));
        let mut small = [0u8; 64];
        let mut w = SliceWriter::new(&mut small);
        assert!(render_status_json(&mut w, &daemon, core::iter::once(view())).is_err());
    }
}
