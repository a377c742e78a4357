//! `/metrics`: the daemon's counters in the Prometheus text exposition
//! format (version 0.0.4), one metric family at a time so that any number
//! of channels fits the fixed response buffer: the HTTP side renders
//! [`FAMILIES`] in order and writes each piece as it is done.
//!
//! Names follow Prometheus conventions: a `ringcast_` prefix, `_total` on
//! counters, base units (`_seconds`, `_bytes`), and a `channel` label on
//! per-channel families. Every family has a `# HELP` and a `# TYPE` line.

use core::fmt::Write;

use super::{ChannelView, DaemonView};
use crate::portmap::State;
use crate::wire::SliceWriter;

/// The `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family's samples come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Daemon(DaemonMetric),
    Channel(ChannelMetric),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DaemonMetric {
    Info,
    Uptime,
    Readers,
    HttpRequests,
    HttpRejected,
    PeerConnections,
    Allocations,
    HeapBytes,
    PortmapState,
    PortmapReachable,
    PortmapRenewals,
    PortmapRemaps,
    SsdpSearches,
    SsdpAnswers,
    SsdpAnswersDropped,
    SsdpNotifies,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelMetric {
    Up,
    InputBitrate,
    BytesIn,
    BytesOut,
    Readers,
    Peers,
    Skips,
    Drops,
    Errors,
    Reconnects,
    CcErrors,
    PcrJumps,
    Discontinuities,
    GarbageBytes,
    OutputBytes,
    OutputDatagrams,
    OutputSkips,
    OutputDrops,
}

/// One metric family: name, type, help text and where its samples are.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    source: Source,
}

const fn daemon(
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    metric: DaemonMetric,
) -> Family {
    Family {
        name,
        kind,
        help,
        source: Source::Daemon(metric),
    }
}

const fn channel(
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    metric: ChannelMetric,
) -> Family {
    Family {
        name,
        kind,
        help,
        source: Source::Channel(metric),
    }
}

const GAUGE: &str = "gauge";
const COUNTER: &str = "counter";

/// Every family `/metrics` shows, in order.
pub const FAMILIES: [Family; 34] = [
    daemon(
        "ringcast_info",
        GAUGE,
        "Version of the running daemon (always 1).",
        DaemonMetric::Info,
    ),
    daemon(
        "ringcast_uptime_seconds",
        GAUGE,
        "Seconds since the daemon started.",
        DaemonMetric::Uptime,
    ),
    daemon(
        "ringcast_readers",
        GAUGE,
        "Players streaming now, all channels.",
        DaemonMetric::Readers,
    ),
    daemon(
        "ringcast_http_requests_total",
        COUNTER,
        "HTTP connections accepted.",
        DaemonMetric::HttpRequests,
    ),
    daemon(
        "ringcast_http_rejected_total",
        COUNTER,
        "Requests answered 503 at a limit.",
        DaemonMetric::HttpRejected,
    ),
    daemon(
        "ringcast_peer_connections_total",
        COUNTER,
        "Connections to the peer port.",
        DaemonMetric::PeerConnections,
    ),
    daemon(
        "ringcast_allocations_total",
        COUNTER,
        "Heap allocations since start (flat in steady state).",
        DaemonMetric::Allocations,
    ),
    daemon(
        "ringcast_heap_bytes",
        GAUGE,
        "Heap bytes in use.",
        DaemonMetric::HeapBytes,
    ),
    daemon(
        "ringcast_portmap_state",
        GAUGE,
        "Port mapping state of the peer port (1 for the current state).",
        DaemonMetric::PortmapState,
    ),
    daemon(
        "ringcast_portmap_reachable",
        GAUGE,
        "1 if peers on the internet can reach the peer port.",
        DaemonMetric::PortmapReachable,
    ),
    daemon(
        "ringcast_portmap_renewals_total",
        COUNTER,
        "Port mapping leases renewed.",
        DaemonMetric::PortmapRenewals,
    ),
    daemon(
        "ringcast_portmap_remaps_total",
        COUNTER,
        "Port mappings the router lost and that were made again.",
        DaemonMetric::PortmapRemaps,
    ),
    daemon(
        "ringcast_ssdp_searches_total",
        COUNTER,
        "SSDP M-SEARCH requests received.",
        DaemonMetric::SsdpSearches,
    ),
    daemon(
        "ringcast_ssdp_answers_total",
        COUNTER,
        "SSDP search answers sent.",
        DaemonMetric::SsdpAnswers,
    ),
    daemon(
        "ringcast_ssdp_answers_dropped_total",
        COUNTER,
        "SSDP search answers not sent (rate or queue limit).",
        DaemonMetric::SsdpAnswersDropped,
    ),
    daemon(
        "ringcast_ssdp_notifies_total",
        COUNTER,
        "SSDP NOTIFY messages sent.",
        DaemonMetric::SsdpNotifies,
    ),
    channel(
        "ringcast_channel_up",
        GAUGE,
        "1 while the channel's source delivers data.",
        ChannelMetric::Up,
    ),
    channel(
        "ringcast_channel_input_bits_per_second",
        GAUGE,
        "Input bitrate over the last second.",
        ChannelMetric::InputBitrate,
    ),
    channel(
        "ringcast_channel_bytes_in_total",
        COUNTER,
        "Bytes received from the source.",
        ChannelMetric::BytesIn,
    ),
    channel(
        "ringcast_channel_bytes_out_total",
        COUNTER,
        "Bytes sent to players over HTTP.",
        ChannelMetric::BytesOut,
    ),
    channel(
        "ringcast_channel_readers",
        GAUGE,
        "Players streaming the channel now.",
        ChannelMetric::Readers,
    ),
    channel(
        "ringcast_channel_peers",
        GAUGE,
        "Peers exchanging the channel (the swarm is not built yet: 0).",
        ChannelMetric::Peers,
    ),
    channel(
        "ringcast_channel_skips_total",
        COUNTER,
        "Lapped players skipped to the newest keyframe.",
        ChannelMetric::Skips,
    ),
    channel(
        "ringcast_channel_drops_total",
        COUNTER,
        "Players disconnected for taking nothing.",
        ChannelMetric::Drops,
    ),
    channel(
        "ringcast_channel_errors_total",
        COUNTER,
        "Source errors.",
        ChannelMetric::Errors,
    ),
    channel(
        "ringcast_channel_reconnects_total",
        COUNTER,
        "Source reconnects.",
        ChannelMetric::Reconnects,
    ),
    channel(
        "ringcast_channel_cc_errors_total",
        COUNTER,
        "MPEG-TS continuity counter errors in the source.",
        ChannelMetric::CcErrors,
    ),
    channel(
        "ringcast_channel_pcr_jumps_total",
        COUNTER,
        "Unannounced PCR jumps in the source.",
        ChannelMetric::PcrJumps,
    ),
    channel(
        "ringcast_channel_discontinuities_total",
        COUNTER,
        "Source restarts marked for players.",
        ChannelMetric::Discontinuities,
    ),
    channel(
        "ringcast_channel_garbage_bytes_total",
        COUNTER,
        "Source bytes that were not MPEG-TS.",
        ChannelMetric::GarbageBytes,
    ),
    channel(
        "ringcast_channel_output_bytes_total",
        COUNTER,
        "TS bytes sent to the RTP/UDP output.",
        ChannelMetric::OutputBytes,
    ),
    channel(
        "ringcast_channel_output_datagrams_total",
        COUNTER,
        "Datagrams sent to the RTP/UDP output.",
        ChannelMetric::OutputDatagrams,
    ),
    channel(
        "ringcast_channel_output_skips_total",
        COUNTER,
        "Times the RTP/UDP output jumped to the live edge.",
        ChannelMetric::OutputSkips,
    ),
    channel(
        "ringcast_channel_output_drops_total",
        COUNTER,
        "RTP/UDP output datagrams the socket did not take.",
        ChannelMetric::OutputDrops,
    ),
];

/// Every port-mapping state, for the one-hot `ringcast_portmap_state`.
const PORTMAP_STATES: [State; 7] = [
    State::Disabled,
    State::Searching,
    State::Mapped,
    State::DoubleNat,
    State::NoGateway,
    State::Refused,
    State::PublicAddress,
];

/// Writes a label value, escaped as the format asks (`\\`, `\"`, `\n`).
fn write_label_value(w: &mut SliceWriter<'_>, value: &str) -> core::fmt::Result {
    for character in value.chars() {
        match character {
            '\\' => w.write_str("\\\\")?,
            '"' => w.write_str("\\\"")?,
            '\n' => w.write_str("\\n")?,
            c => w.write_char(c)?,
        }
    }
    Ok(())
}

fn daemon_samples(
    w: &mut SliceWriter<'_>,
    name: &str,
    metric: DaemonMetric,
    daemon: &DaemonView<'_>,
) -> core::fmt::Result {
    let portmap = daemon.portmap;
    let ssdp = daemon.ssdp;
    let value = match metric {
        DaemonMetric::Info => {
            w.write_str(name)?;
            w.write_str("{version=\"")?;
            write_label_value(w, daemon.version)?;
            return w.write_str("\"} 1\n");
        }
        DaemonMetric::PortmapState => {
            for state in &PORTMAP_STATES {
                let current = u8::from(*state == portmap.state);
                writeln!(w, "{name}{{state=\"{}\"}} {current}", state.name())?;
            }
            return Ok(());
        }
        DaemonMetric::Uptime => daemon.uptime_s,
        DaemonMetric::Readers => daemon.totals.readers.get(),
        DaemonMetric::HttpRequests => daemon.totals.http_requests.get(),
        DaemonMetric::HttpRejected => daemon.totals.http_rejected.get(),
        DaemonMetric::PeerConnections => daemon.totals.peer_connections.get(),
        DaemonMetric::Allocations => daemon.alloc.allocations as u64,
        DaemonMetric::HeapBytes => daemon.alloc.bytes_live as u64,
        DaemonMetric::PortmapReachable => u64::from(portmap.reachable()),
        DaemonMetric::PortmapRenewals => portmap.renewals,
        DaemonMetric::PortmapRemaps => portmap.remaps,
        DaemonMetric::SsdpSearches => ssdp.searches,
        DaemonMetric::SsdpAnswers => ssdp.answers,
        DaemonMetric::SsdpAnswersDropped => ssdp.answers_dropped,
        DaemonMetric::SsdpNotifies => ssdp.notifies,
    };
    writeln!(w, "{name} {value}")
}

fn channel_value(metric: ChannelMetric, channel: &ChannelView<'_>) -> u64 {
    let stats = channel.stats;
    match metric {
        ChannelMetric::Up => u64::from(channel.state == super::ChannelState::Live),
        ChannelMetric::InputBitrate => channel.input_bps,
        ChannelMetric::BytesIn => stats.bytes_in.get(),
        ChannelMetric::BytesOut => stats.bytes_out.get(),
        ChannelMetric::Readers => stats.readers.get(),
        ChannelMetric::Peers => 0,
        ChannelMetric::Skips => stats.skips.get(),
        ChannelMetric::Drops => stats.drops.get(),
        ChannelMetric::Errors => stats.errors.get(),
        ChannelMetric::Reconnects => stats.reconnects.get(),
        ChannelMetric::CcErrors => stats.cc_errors.get(),
        ChannelMetric::PcrJumps => stats.pcr_jumps.get(),
        ChannelMetric::Discontinuities => stats.discontinuities.get(),
        ChannelMetric::GarbageBytes => stats.garbage_bytes.get(),
        ChannelMetric::OutputBytes => stats.output_bytes.get(),
        ChannelMetric::OutputDatagrams => stats.output_datagrams.get(),
        ChannelMetric::OutputSkips => stats.output_skips.get(),
        ChannelMetric::OutputDrops => stats.output_drops.get(),
    }
}

/// Renders family `family` (an index into [`FAMILIES`]); `None` past the
/// last. The samples of one family are at most one line per channel.
pub fn render_family<'a, I: Iterator<Item = ChannelView<'a>>>(
    w: &mut SliceWriter<'_>,
    family: usize,
    daemon: &DaemonView<'_>,
    channels: impl FnOnce() -> I,
) -> Option<core::fmt::Result> {
    let family = FAMILIES.get(family)?;
    Some(render(w, family, daemon, channels))
}

fn render<'a, I: Iterator<Item = ChannelView<'a>>>(
    w: &mut SliceWriter<'_>,
    family: &Family,
    daemon: &DaemonView<'_>,
    channels: impl FnOnce() -> I,
) -> core::fmt::Result {
    writeln!(w, "# HELP {} {}", family.name, family.help)?;
    writeln!(w, "# TYPE {} {}", family.name, family.kind)?;
    match family.source {
        Source::Daemon(metric) => daemon_samples(w, family.name, metric, daemon),
        Source::Channel(metric) => {
            for channel in channels() {
                w.write_str(family.name)?;
                w.write_str("{channel=\"")?;
                write_label_value(w, channel.name)?;
                writeln!(w, "\"}} {}", channel_value(metric, &channel))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_count::AllocSnapshot;
    use crate::lan::ChannelState;
    use crate::stats::{ChannelStats, Totals};

    fn render_all(channels: &[(&str, &ChannelStats)]) -> String {
        let totals = Totals::default();
        let portmap = crate::portmap::Report::disabled();
        let daemon = DaemonView {
            version: "0.1.0",
            uptime_s: 7,
            alloc: AllocSnapshot::default(),
            totals: &totals,
            bytes_in: 0,
            bytes_out: 0,
            node_id: "",
            dlna_uuid: "",
            friendly_name: "",
            boots: 1,
            state_path: "",
            peer_port: 0,
            portmap: &portmap,
            portmap_lan_http: None,
            now_ms: 0,
            ssdp: Default::default(),
        };
        let mut text = String::new();
        let mut buffer = vec![0u8; crate::limits::RESPONSE_BYTES_MAX];
        for family in 0.. {
            let mut w = SliceWriter::new(&mut buffer);
            let views = || {
                channels.iter().map(|(name, stats)| ChannelView {
                    name,
                    source: "stdin",
                    state: ChannelState::Live,
                    input_bps: 8_000_000,
                    ring_bytes: 0,
                    timeshift_s: 0,
                    stats,
                })
            };
            match render_family(&mut w, family, &daemon, views) {
                None => break,
                Some(result) => result.unwrap(),
            }
            text.push_str(core::str::from_utf8(w.written()).unwrap());
        }
        text
    }

    #[test]
    fn every_family_has_help_type_and_samples() {
        let stats = ChannelStats::default();
        stats.bytes_out.add(1234);
        let text = render_all(&[("tv", &stats), ("odd\"name", &stats)]);
        for family in FAMILIES {
            assert!(text.contains(&format!("# TYPE {} {}\n", family.name, family.kind)));
            assert!(
                text.contains(&format!("\n{}", family.name)),
                "{}",
                family.name
            );
        }
        assert!(text.contains("ringcast_channel_bytes_out_total{channel=\"tv\"} 1234\n"));
        assert!(text.contains("{channel=\"odd\\\"name\"}"));
        assert!(text.contains("ringcast_portmap_state{state=\"disabled\"} 1\n"));
        assert!(text.contains("ringcast_portmap_state{state=\"mapped\"} 0\n"));
        assert_eq!(text.matches("ringcast_portmap_state{").count(), 7);
        assert!(text.contains("ringcast_uptime_seconds 7\n"));
        for family in FAMILIES {
            if family.kind == COUNTER {
                assert!(family.name.ends_with("_total"), "{}", family.name);
            }
        }
    }

    #[test]
    fn one_family_of_many_channels_fits_a_piece() {
        let stats = ChannelStats::default();
        stats.cc_errors.add(u64::MAX);
        let names: Vec<String> = (0..48)
            .map(|i| format!("udp/239.255.255.{i}:65535"))
            .collect();
        let channels: Vec<(&str, &ChannelStats)> =
            names.iter().map(|n| (n.as_str(), &stats)).collect();
        let text = render_all(&channels);
        assert_eq!(
            text.matches("ringcast_channel_cc_errors_total{").count(),
            48
        );
    }
}
