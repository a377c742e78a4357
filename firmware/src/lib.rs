//! `ringcast` is the relay runtime. The library is the sans-IO core: wire
//! formats, the ring, ingest and LAN session state machines, limits and
//! statistics. The binary (`main.rs`) allocates everything once and runs the
//! driver in [`node`] on the HAL's fixed-size executor and reactor.

pub mod alloc_count;
pub mod config;
pub mod ingest;
pub mod lan;
pub mod limits;
pub mod log_sink;
pub mod node;
pub mod portmap;
pub mod ring;
pub mod state;
pub mod stats;
pub mod wire;
