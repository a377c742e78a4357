//! Every compile-time upper bound of the relay, in one place.
//!
//! Run-time sizes (ring bytes, readers) come from the config, but each of them
//! is clamped to a maximum defined here, so no input can make the daemon grow
//! past what was allocated at start-up. Test builds use small values so unit
//! tests reach the "full" paths.

/// Size of one MPEG-TS packet.
pub const TS_PACKET_BYTES: usize = 188;

/// Configured channels (static sources), including the demo channel.
pub const CHANNELS_MAX: usize = if cfg!(test) { 4 } else { 32 };

/// On-demand multicast channels (`/udp/...`, `/rtp/...`) open at once.
pub const ON_DEMAND_CHANNELS_MAX: usize = if cfg!(test) { 2 } else { 16 };

/// Concurrent HTTP connections of any kind (workers allocated at start-up).
pub const CONNECTIONS_MAX: usize = 1024;

/// Streaming readers across all channels.
pub const READERS_MAX: usize = 1000;

/// Bytes of an HTTP request head (request line and headers).
pub const HTTP_HEADER_BYTES_MAX: usize = 8 * 1024;

/// Headers in one HTTP request or response head.
pub const HTTP_HEADERS_MAX: usize = 32;

/// Bytes of a rendered small response (status JSON, HTML, playlist).
pub const RESPONSE_BYTES_MAX: usize = 32 * 1024;

/// Bytes of a channel name.
pub const CHANNEL_NAME_BYTES_MAX: usize = 32;

/// Bytes of a source URL.
pub const SOURCE_URL_BYTES_MAX: usize = 256;

/// Bytes of one config file line.
pub const CONFIG_LINE_BYTES_MAX: usize = 1024;

/// Bytes of a UDP datagram (largest IPv4 UDP payload).
pub const DATAGRAM_BYTES_MAX: usize = 65_507;

/// Bytes the ingest reads from a stream source at once.
pub const INGEST_READ_BYTES: usize = 64 * 1024;

/// Ring size bounds per channel.
pub const RING_BYTES_MIN: usize = 64 * TS_PACKET_BYTES * 16;
pub const RING_BYTES_MAX: usize = 1024 * 1024 * 1024;

/// Target chunk size in the ring: a whole number of TS packets, about 64 KiB.
pub const CHUNK_BYTES: usize = 348 * TS_PACKET_BYTES;

/// Chunk metadata slots per ring (bounds the index, independent of bytes).
pub const CHUNKS_MAX: usize = if cfg!(test) { 8 } else { 16 * 1024 };

/// Bytes of a log line; longer lines are cut.
pub const LOG_LINE_BYTES_MAX: usize = 512;

/// Bytes of one line in a chunked body: the chunk-size line with its
/// extensions, or one trailer field line (RFC 9112 §7.1).
pub const HTTP_CHUNK_LINE_BYTES_MAX: usize = 1024;

/// On-demand multicast channels allocated when on-demand is on (each holds a
/// ring of `on_demand_ring_size` bytes).
pub const ON_DEMAND_CHANNELS_DEFAULT: usize = if cfg!(test) { 2 } else { 4 };
