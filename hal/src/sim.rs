//! The simulated implementation of the HAL: a whole network of hosts, a
//! virtual clock and power-cuttable flash in one process, deterministic from a
//! seed, so tests can drive the relay's state machines and its async driver
//! with no real sockets and replay any failure.
//!
//! A test builds one [`SimWorld`], takes a [`SimNet`] per host address from
//! it, and runs its futures with [`SimWorld::block_on`] or
//! [`SimWorld::run_until`], or the daemon's tasks with
//! [`SimWorld::run_executor`]; these jump virtual time from event to event
//! whenever every task waits. A test can also step by hand with
//! [`SimWorld::next_event_ms`], [`SimWorld::advance_to`] and
//! [`SimWorld::step`].
//!
//! ```
//! use ringcast_hal::sim::SimWorld;
//! use ringcast_hal::{Clock, Net, TcpListener, TcpStream};
//!
//! let world = SimWorld::new(42);
//! let server = world.host([10, 0, 0, 1]);
//! let client = world.host([10, 0, 0, 2]);
//! let listener = server.tcp_listen("10.0.0.1:8000".parse().unwrap(), 8).unwrap();
//! let stream = client.tcp_connect("10.0.0.1:8000".parse().unwrap()).unwrap();
//! world.block_on(async {
//!     stream.writable().await.unwrap();
//!     assert!(client.connect_result(&stream).is_ok());
//!     listener.readable().await.unwrap();
//!     let (_accepted, peer) = listener.accept().unwrap();
//!     assert_eq!(peer, stream.local_addr().unwrap());
//! });
//! // SYN and SYN-ACK each took the default one-way latency of 1 ms.
//! assert_eq!(world.clock().now_ms(), 2);
//! ```
//!
//! Modules: `world` (time, hosts, links, the event queue), `run` (driving
//! futures), `tcp` and `stream` (connections and their handles), `udp`
//! (datagrams and multicast), `ready` (readiness futures), `clock`, `net`
//! (the per-host `Net` and ring regions), `flash` (raw flash with power cuts
//! and erase counters, under the record store), `slab`, `error`.

mod clock;
mod error;
mod flash;
mod net;
mod ready;
mod run;
mod slab;
mod stream;
mod tcp;
mod udp;
mod world;

pub use crate::store::crc32;
pub use clock::{SimClock, Sleep};
pub use error::{SimError, SimResult};
pub use flash::SimFlash;
pub use net::{SimNet, SimRegion, SIM_INTERFACES};
pub use run::SimStop;
pub use stream::{SimListener, SimStream};
pub use udp::{SimUdp, UDP_PAYLOAD_BYTES_MAX};
pub use world::{HostStats, LinkConfig, SimConfig, SimStats, SimWorld};
