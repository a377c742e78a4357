//! Counters that `/status` reports: per channel and for the whole daemon.
//!
//! The driver is single-threaded, so counters are plain `Cell<u64>`s: cheap to
//! bump on the hot path, no atomics (some ARM targets have no 64-bit atomics).
//! Rates are derived by [`RateMeter`], a fixed one-second window.

use core::cell::Cell;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(Cell<u64>);

impl Counter {
    pub fn add(&self, amount: u64) {
        self.0.set(self.0.get().wrapping_add(amount));
    }
    pub fn increment(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down (readers connected, for example).
#[derive(Debug, Default)]
pub struct Gauge(Cell<u64>);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.set(value);
    }
    pub fn increment(&self) {
        self.0.set(self.0.get() + 1);
    }
    pub fn decrement(&self) {
        assert!(self.0.get() > 0, "gauge below zero");
        self.0.set(self.0.get() - 1);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Bytes per second over the last complete one-second window.
#[derive(Debug, Default)]
pub struct RateMeter {
    window_start_ms: Cell<u64>,
    window_bytes: Cell<u64>,
    last_rate_bps: Cell<u64>,
}

impl RateMeter {
    const WINDOW_MS: u64 = 1000;

    pub fn record(&self, now_ms: u64, bytes: u64) {
        self.roll(now_ms);
        self.window_bytes.set(self.window_bytes.get() + bytes);
    }

    fn roll(&self, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.window_start_ms.get());
        if elapsed_ms >= Self::WINDOW_MS {
            let rate = if elapsed_ms < 2 * Self::WINDOW_MS {
                self.window_bytes.get() * 8 * 1000 / elapsed_ms
            } else {
                0
            };
            self.last_rate_bps.set(rate);
            self.window_start_ms.set(now_ms);
            self.window_bytes.set(0);
        }
    }

    /// Bits per second of the last complete window (0 when idle for 2 s).
    pub fn bits_per_second(&self, now_ms: u64) -> u64 {
        self.roll(now_ms);
        self.last_rate_bps.get()
    }
}

/// Per-channel counters.
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub readers: Gauge,
    /// Readers that were lapped and skipped forward.
    pub skips: Counter,
    /// Readers disconnected because their socket took nothing for too long.
    pub drops: Counter,
    /// Source errors: refused connections, bad responses, read errors.
    pub errors: Counter,
    /// Bytes discarded because they were not part of a TS packet.
    pub garbage_bytes: Counter,
    /// Times a packet-aligned source lost its sync byte (each needs a resync).
    pub sync_losses: Counter,
    pub reconnects: Counter,
    pub input_rate: RateMeter,
    /// Packets whose continuity_counter skipped (lost or reordered packets).
    pub cc_errors: Counter,
    /// PCR steps backwards or beyond a second forward, not announced by a
    /// discontinuity_indicator.
    pub pcr_jumps: Counter,
    /// Source restarts and switches marked in-band for the players.
    pub discontinuities: Counter,
    /// Chunks that start at a keyframe.
    pub keyframes: Counter,
    /// Bytes not relayed after a source switch while waiting for the new
    /// source's PAT, PMT and first keyframe.
    pub withheld_bytes: Counter,
    /// Packets not relayed because they belong to programs not selected.
    pub filtered_packets: Counter,
    /// PSI sections dropped for a bad CRC or length.
    pub psi_errors: Counter,
    /// RTP/UDP output: datagrams and payload bytes sent, and times it was
    /// lapped by the ring and jumped to the live edge.
    pub output_datagrams: Counter,
    pub output_bytes: Counter,
    pub output_skips: Counter,
    /// Output datagrams the socket did not take (dropped, never waited for).
    pub output_drops: Counter,
}

/// Daemon-wide counters.
#[derive(Debug, Default)]
pub struct Totals {
    pub http_requests: Counter,
    /// Requests answered 503 (limits reached).
    pub http_rejected: Counter,
    pub http_bad_request: Counter,
    pub http_not_found: Counter,
    /// Connections closed before a full request arrived, or timed out.
    pub connections_dropped: Counter,
    pub readers: Gauge,
    /// Connections to the peer port (answered with the banner).
    pub peer_connections: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_meter_reports_last_window() {
        let meter = RateMeter::default();
        meter.record(0, 0);
        meter.record(500, 1000);
        meter.record(999, 250);
        assert_eq!(meter.bits_per_second(1000), 10_000);
        assert_eq!(meter.bits_per_second(1500), 10_000);
        assert_eq!(meter.bits_per_second(4000), 0);
    }

    #[test]
    fn gauge_counts_up_and_down() {
        let gauge = Gauge::default();
        gauge.increment();
        gauge.increment();
        gauge.decrement();
        assert_eq!(gauge.get(), 1);
    }
}
