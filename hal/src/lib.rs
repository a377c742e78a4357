//! `ringcast-hal` owns the boundary between the relay and the machine it runs on.
//!
//! The relay core never touches a socket, a file or a clock directly. It talks to
//! the small traits defined here, in the style of embedded-hal: each
//! implementation picks its own error type and maps it onto the shared
//! [`ErrorKind`], so the core can react to
//! "would block" or "connection reset" without knowing whether it runs on Linux
//! or inside a deterministic simulation.
//!
//! Two implementations exist:
//! - [`linux`]: rustix sockets driven by smol's reactor (`async-io`), a memfd
//!   backed ring region that can be `sendfile`d, and a file-backed record store.
//! - [`sim`]: an in-memory network with a virtual clock and seeded randomness,
//!   used by tests to drive the state machines without real sockets.
//!
//! What the node keeps across restarts goes through [`Flash`], raw erase
//! blocks and program pages, with the power-cut-safe [`store::RecordStore`]
//! on top; both implementations provide a flash (`linux::FileFlash`,
//! `linux::StateDirFlash`, [`sim::SimFlash`]).
//!
//! All I/O calls are non-blocking: they return [`ErrorKind::WouldBlock`] when
//! the operation cannot make progress, and the caller awaits the matching
//! readiness future (`readable`/`writable`) before trying again.

#![forbid(unsafe_op_in_unsafe_fn)]

use core::future::Future;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::io::IoSlice;

/// The portable kinds of HAL error. `embedded-io`'s kind has no "would block"
/// (its traits are blocking by contract), so the HAL keeps its own list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operation would block; await readiness and retry.
    WouldBlock,
    /// Interrupted by a signal; retry.
    Interrupted,
    ConnectionRefused,
    ConnectionReset,
    BrokenPipe,
    NotConnected,
    AddrInUse,
    AddrNotAvailable,
    TimedOut,
    NotFound,
    PermissionDenied,
    InvalidInput,
    OutOfMemory,
    Unsupported,
    Other,
}

pub mod exec;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod sim;
pub mod store;

/// An error from a HAL implementation, mapped onto the shared [`ErrorKind`].
pub trait Error: core::fmt::Debug + core::fmt::Display {
    /// The portable kind of this error.
    fn kind(&self) -> ErrorKind;

    /// True when the operation should simply be retried after readiness.
    fn is_would_block(&self) -> bool {
        matches!(self.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
    }
}

/// Which interface a multicast group is joined or sent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MulticastInterface {
    /// Let the kernel choose (the interface of the default route).
    Any,
    /// An interface by its kernel index (see [`Net::interface_index`]).
    Index(u32),
    /// An IPv4 interface by one of its addresses.
    Address(Ipv4Addr),
}

/// A multicast membership: any-source, or source-specific (SSM, RFC 4607).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    V4 {
        group: Ipv4Addr,
        source: Option<Ipv4Addr>,
        interface: MulticastInterface,
    },
    V6 {
        group: Ipv6Addr,
        interface: MulticastInterface,
    },
}

/// A region of memory that the ring lives in.
///
/// It is allocated once at start-up. On Linux it is a memfd mapped into the
/// process, so a [`TcpStream::send_region`] can hand pages to the kernel
/// without copying (`sendfile`).
pub trait Region {
    /// The whole region, for the single writer.
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// The whole region, for readers.
    fn as_slice(&self) -> &[u8];
    /// The region's size in bytes. It never changes.
    fn len_bytes(&self) -> usize {
        self.as_slice().len()
    }
}

/// A connected, non-blocking TCP stream.
pub trait TcpStream {
    type Error: Error;
    type Region: Region;

    /// Reads what is available; `Ok(0)` is end of stream.
    fn read(&mut self, buffer: &mut [u8]) -> Result<usize, Self::Error>;
    /// Writes what fits in the socket buffer.
    fn write(&mut self, buffer: &[u8]) -> Result<usize, Self::Error>;
    /// Writes several buffers in one call (`writev`).
    fn write_vectored(&mut self, buffers: &[IoSlice<'_>]) -> Result<usize, Self::Error>;
    /// Sends `length` bytes starting at `offset` of a region, without copying
    /// where the platform allows it. Returns the number of bytes sent.
    fn send_region(
        &mut self,
        region: &Self::Region,
        offset: usize,
        length: usize,
    ) -> Result<usize, Self::Error>;
    /// Chooses whether [`TcpStream::send_region`] may hand pages to the kernel
    /// without copying (where the platform can). Off by default.
    fn set_zero_copy(&mut self, enabled: bool) {
        let _ = enabled;
    }
    /// Limits the kernel send buffer, which bounds data in flight per reader.
    fn set_send_buffer_bytes(&mut self, bytes: usize) -> Result<(), Self::Error>;
    /// The peer's address.
    fn peer_addr(&self) -> Result<SocketAddr, Self::Error>;
    /// Our address on this connection: the LAN address a player reached us on.
    fn local_addr(&self) -> Result<SocketAddr, Self::Error>;
    /// Resolves once the stream may be readable.
    fn readable(&self) -> impl Future<Output = Result<(), Self::Error>>;
    /// Resolves once the stream may be writable.
    fn writable(&self) -> impl Future<Output = Result<(), Self::Error>>;
}

/// A listening TCP socket.
pub trait TcpListener {
    type Error: Error;
    type Stream: TcpStream<Error = Self::Error>;

    /// Accepts one pending connection, or `WouldBlock`.
    fn accept(&self) -> Result<(Self::Stream, SocketAddr), Self::Error>;
    /// Resolves once a connection may be pending.
    fn readable(&self) -> impl Future<Output = Result<(), Self::Error>>;
    /// The bound address (useful when port 0 was asked for).
    fn local_addr(&self) -> Result<SocketAddr, Self::Error>;
}

/// A non-blocking UDP socket.
pub trait UdpSocket {
    type Error: Error;

    fn recv_from(&self, buffer: &mut [u8]) -> Result<(usize, SocketAddr), Self::Error>;
    fn send_to(&self, buffer: &[u8], target: SocketAddr) -> Result<usize, Self::Error>;
    fn join(&self, membership: &Membership) -> Result<(), Self::Error>;
    fn leave(&self, membership: &Membership) -> Result<(), Self::Error>;
    fn set_multicast_ttl(&self, ttl: u32) -> Result<(), Self::Error>;
    fn set_multicast_interface(&self, interface: MulticastInterface) -> Result<(), Self::Error>;
    fn set_receive_buffer_bytes(&self, bytes: usize) -> Result<(), Self::Error>;
    fn local_addr(&self) -> Result<SocketAddr, Self::Error>;
    fn readable(&self) -> impl Future<Output = Result<(), Self::Error>>;
}

/// Sockets and ring memory.
pub trait Net {
    type Error: Error;
    type Region: Region;
    type Stream: TcpStream<Error = Self::Error, Region = Self::Region>;
    type Listener: TcpListener<Error = Self::Error, Stream = Self::Stream>;
    type Udp: UdpSocket<Error = Self::Error>;

    /// Allocates ring memory. Called only at start-up.
    fn region(&self, bytes: usize) -> Result<Self::Region, Self::Error>;
    fn tcp_listen(&self, address: SocketAddr, backlog: u32) -> Result<Self::Listener, Self::Error>;
    /// Starts a connection; await [`TcpStream::writable`] and then check
    /// [`Net::connect_result`] to learn whether it succeeded.
    fn tcp_connect(&self, address: SocketAddr) -> Result<Self::Stream, Self::Error>;
    /// The outcome of a connection started by [`Net::tcp_connect`].
    fn connect_result(&self, stream: &Self::Stream) -> Result<(), Self::Error>;
    /// Binds a UDP socket, with address reuse so several channels may share a port.
    fn udp_bind(&self, address: SocketAddr) -> Result<Self::Udp, Self::Error>;
    /// The kernel index of a named interface.
    fn interface_index(&self, name: &str) -> Result<u32, Self::Error>;
    /// The IPv4 default route (through the interface named `interface`, if
    /// given): the gateway, and our own address on the way to it. `None`
    /// when there is no such route. Called when port mapping (re)starts.
    fn default_route(&self, interface: Option<&str>) -> Result<Option<Route>, Self::Error>;
    /// The IPv4 addresses of this host's interfaces (not loopback), with the
    /// kernel index of each interface, written into `out`; returns how many.
    /// Used to send SSDP on each LAN interface.
    fn ipv4_interfaces(&self, out: &mut [InterfaceAddress]) -> Result<usize, Self::Error>;
    /// Resolves a host name (or an IP literal) to an address, without blocking
    /// the event loop. Called when a source (re)connects, never per packet.
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<SocketAddr, Self::Error>>;
}

/// An IPv4 default route, as [`Net::default_route`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The next hop (the home router).
    pub gateway: Ipv4Addr,
    /// Our address on the link to it.
    pub local: Ipv4Addr,
}

/// An IPv4 address of an interface, as [`Net::ipv4_interfaces`] lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The interface's kernel index.
    pub index: u32,
    pub address: Ipv4Addr,
    /// Length of the subnet prefix (24 for a /24).
    pub prefix_len: u8,
}

/// A monotonic clock.
pub trait Clock {
    /// Milliseconds since an arbitrary start; never goes backwards.
    fn now_ms(&self) -> u64;
    /// Resolves at `deadline_ms` on this clock.
    fn sleep_until(&self, deadline_ms: u64) -> impl Future<Output = ()>;
}

/// A seedable random number generator (not for cryptography).
pub trait Rng {
    fn next_u32(&mut self) -> u32;
}

/// The shape of a flash region: `blocks` erase blocks of `block_bytes`, each
/// made of program pages of `page_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashGeometry {
    /// Bytes of one erase block (the unit [`Flash::erase`] works on).
    pub block_bytes: u32,
    /// Bytes of one program page (the unit [`Flash::program`] works on).
    pub page_bytes: u32,
    /// Erase blocks in the region.
    pub blocks: u32,
}

impl FlashGeometry {
    /// True if the sizes are non-zero, a block is a whole number of pages,
    /// and the region's size fits in a `u32`.
    pub fn is_valid(&self) -> bool {
        self.page_bytes > 0
            && self.block_bytes > 0
            && self.blocks > 0
            && self.block_bytes.is_multiple_of(self.page_bytes)
            && self.block_bytes.checked_mul(self.blocks).is_some()
    }

    /// The region's size in bytes (see [`FlashGeometry::is_valid`] for when
    /// it fits).
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.block_bytes) * u64::from(self.blocks)
    }

    /// Program pages in one erase block (0 if the page size is 0).
    pub fn pages_per_block(&self) -> u32 {
        self.block_bytes.checked_div(self.page_bytes).unwrap_or(0)
    }

    /// Program pages in the region.
    pub fn pages(&self) -> u64 {
        u64::from(self.pages_per_block()) * u64::from(self.blocks)
    }
}

/// Low-level flash: erase whole blocks to `0xFF`, program pages
/// (page-aligned, whole pages), read anywhere.
///
/// Programming a page that is not erased is not allowed (NAND forbids it and
/// NOR can only clear bits); the record store never does it. Until
/// [`Flash::sync`] returns, a power cut may leave any part of the erases and
/// programs since the last sync undone, or a page half-programmed.
pub trait Flash {
    type Error: Error;

    /// The region's shape. It never changes.
    fn geometry(&self) -> FlashGeometry;
    /// Reads `buffer.len()` bytes at `offset`.
    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> Result<(), Self::Error>;
    /// Programs whole pages starting at the page-aligned `offset`. The pages
    /// must be erased.
    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error>;
    /// Erases block number `block` to `0xFF`.
    fn erase(&mut self, block: u32) -> Result<(), Self::Error>;
    /// Makes everything programmed so far durable (`fdatasync` on Linux).
    fn sync(&mut self) -> Result<(), Self::Error>;
}

impl<T: Flash + ?Sized> Flash for &mut T {
    type Error = T::Error;

    fn geometry(&self) -> FlashGeometry {
        (**self).geometry()
    }
    fn read(&mut self, offset: u32, buffer: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read(offset, buffer)
    }
    fn program(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        (**self).program(offset, data)
    }
    fn erase(&mut self, block: u32) -> Result<(), Self::Error> {
        (**self).erase(block)
    }
    fn sync(&mut self) -> Result<(), Self::Error> {
        (**self).sync()
    }
}

/// A small xorshift generator: deterministic from its seed, used by both
/// implementations and by the simulation.
#[derive(Clone, Debug)]
pub struct XorShift {
    state: u64,
}

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self { state: seed | 1 }
    }
}

impl Rng for XorShift {
    fn next_u32(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        (x >> 32) as u32
    }
}
