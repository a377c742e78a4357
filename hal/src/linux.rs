//! The Linux implementation of the HAL: rustix sockets registered with smol's
//! reactor (`async-io`), ring memory in a memfd so that fan-out can use
//! `sendfile`, and the monotonic clock.
//!
//! Every socket is created non-blocking. Readiness comes from
//! `Async<OwnedFd>::readable`/`writable`; the calls themselves go straight to
//! rustix so that no `std::io` adapter sits on the hot path.

use core::future::Future;
use core::net::{Ipv4Addr, SocketAddr};
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use rustix::io::Errno;
use rustix::net::{self as rnet, sockopt, AddressFamily, SocketFlags, SocketType};

use crate::{ErrorKind, Membership, MulticastInterface};

/// A Linux error: the errno as rustix reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error(pub Errno);

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {}

impl From<Errno> for Error {
    fn from(errno: Errno) -> Self {
        Self(errno)
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Self(Errno::from_io_error(&error).unwrap_or(Errno::IO))
    }
}

impl crate::Error for Error {
    fn kind(&self) -> ErrorKind {
        kind_of(self.0)
    }
}

fn kind_of(errno: Errno) -> ErrorKind {
    match errno {
        Errno::AGAIN | Errno::INPROGRESS | Errno::ALREADY => ErrorKind::WouldBlock,
        Errno::INTR => ErrorKind::Interrupted,
        Errno::CONNREFUSED => ErrorKind::ConnectionRefused,
        Errno::CONNRESET | Errno::CONNABORTED => ErrorKind::ConnectionReset,
        Errno::PIPE => ErrorKind::BrokenPipe,
        Errno::NOTCONN => ErrorKind::NotConnected,
        Errno::ADDRINUSE => ErrorKind::AddrInUse,
        Errno::ADDRNOTAVAIL | Errno::NETUNREACH | Errno::HOSTUNREACH => {
            ErrorKind::AddrNotAvailable
        }
        Errno::TIMEDOUT => ErrorKind::TimedOut,
        Errno::NOENT | Errno::NODEV => ErrorKind::NotFound,
        Errno::ACCESS | Errno::PERM => ErrorKind::PermissionDenied,
        Errno::INVAL => ErrorKind::InvalidInput,
        Errno::NOMEM | Errno::NOBUFS => ErrorKind::OutOfMemory,
        Errno::NOSYS | Errno::OPNOTSUPP => ErrorKind::Unsupported,
        _ => ErrorKind::Other,
    }
}

type Result<T> = core::result::Result<T, Error>;

/// Ring memory: a memfd of fixed size, mapped once.
pub struct MemfdRegion {
    fd: OwnedFd,
    pointer: *mut u8,
    length: usize,
}

// SAFETY: the mapping is owned by this value and unmapped on drop; access goes
// through `&`/`&mut` like any owned buffer.
unsafe impl Send for MemfdRegion {}

impl MemfdRegion {
    pub fn new(bytes: usize) -> Result<Self> {
        assert!(bytes > 0, "ring region must not be empty");
        let fd = rustix::fs::memfd_create("ringcast-ring", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, bytes as u64)?;
        // SAFETY: a fresh shared mapping of a file we just sized; nothing else
        // aliases it until we hand out slices tied to `self`.
        let pointer = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                bytes,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED | rustix::mm::MapFlags::POPULATE,
                &fd,
                0,
            )?
        };
        Ok(Self {
            fd,
            pointer: pointer.cast(),
            length: bytes,
        })
    }
}

impl Drop for MemfdRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`.
        let _ = unsafe { rustix::mm::munmap(self.pointer.cast(), self.length) };
    }
}

impl crate::Region for MemfdRegion {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is valid for `length` bytes for the life of self.
        unsafe { core::slice::from_raw_parts_mut(self.pointer, self.length) }
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: as above.
        unsafe { core::slice::from_raw_parts(self.pointer, self.length) }
    }
}

/// How fan-out hands ring bytes to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// `sendfile` from the memfd: the kernel references the ring pages.
    Sendfile,
    /// `writev` from the mapping: the kernel copies the bytes.
    Copy,
}

/// A non-blocking TCP stream.
pub struct Stream {
    io: Async<OwnedFd>,
    region_fd: Option<i32>,
    mode: SendMode,
}

impl Stream {
    fn new(fd: OwnedFd, mode: SendMode) -> Result<Self> {
        Ok(Self {
            io: Async::new(fd)?,
            region_fd: None,
            mode,
        })
    }
}

fn socket_address(any: Option<rnet::SocketAddrAny>) -> Result<SocketAddr> {
    any.and_then(|a| SocketAddr::try_from(a).ok())
        .ok_or(Error(Errno::AFNOSUPPORT))
}

impl crate::TcpStream for Stream {
    type Error = Error;
    type Region = MemfdRegion;

    fn read(&mut self, buffer: &mut [u8]) -> Result<usize> {
        Ok(rustix::io::read(self.io.get_ref(), buffer)?)
    }

    fn write(&mut self, buffer: &[u8]) -> Result<usize> {
        Ok(rnet::send(self.io.get_ref(), buffer, rnet::SendFlags::NOSIGNAL)?)
    }

    fn write_vectored(&mut self, buffers: &[IoSlice<'_>]) -> Result<usize> {
        Ok(rustix::io::writev(self.io.get_ref(), buffers)?)
    }

    fn send_region(&mut self, region: &MemfdRegion, offset: usize, length: usize) -> Result<usize> {
        let _ = self.region_fd;
        match self.mode {
            SendMode::Sendfile => {
                let mut file_offset = offset as u64;
                Ok(rustix::fs::sendfile(
                    self.io.get_ref(),
                    &region.fd,
                    Some(&mut file_offset),
                    length,
                )?)
            }
            SendMode::Copy => {
                let bytes = &crate::Region::as_slice(region)[offset..offset + length];
                Ok(rnet::send(self.io.get_ref(), bytes, rnet::SendFlags::NOSIGNAL)?)
            }
        }
    }

    fn set_send_buffer_bytes(&mut self, bytes: usize) -> Result<()> {
        Ok(sockopt::set_socket_send_buffer_size(self.io.get_ref(), bytes)?)
    }

    fn peer_addr(&self) -> Result<SocketAddr> {
        socket_address(rnet::getpeername(self.io.get_ref())?)
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        socket_address(Some(rnet::getsockname(self.io.get_ref())?))
    }

    fn readable(&self) -> impl Future<Output = Result<()>> {
        let future = self.io.readable();
        async move { Ok(future.await?) }
    }

    fn writable(&self) -> impl Future<Output = Result<()>> {
        let future = self.io.writable();
        async move { Ok(future.await?) }
    }
}

/// A listening TCP socket.
pub struct Listener {
    io: Async<OwnedFd>,
    mode: SendMode,
}

impl crate::TcpListener for Listener {
    type Error = Error;
    type Stream = Stream;

    fn accept(&self) -> Result<(Stream, SocketAddr)> {
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        let (fd, peer) = rnet::acceptfrom_with(self.io.get_ref(), flags)?;
        let peer = socket_address(peer)?;
        Ok((Stream::new(fd, self.mode)?, peer))
    }

    fn readable(&self) -> impl Future<Output = Result<()>> {
        let future = self.io.readable();
        async move { Ok(future.await?) }
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        socket_address(Some(rnet::getsockname(self.io.get_ref())?))
    }
}

/// A non-blocking UDP socket.
pub struct Udp {
    io: Async<OwnedFd>,
}

fn interface_v4(interface: MulticastInterface) -> (Ipv4Addr, u32) {
    match interface {
        MulticastInterface::Any => (Ipv4Addr::UNSPECIFIED, 0),
        MulticastInterface::Index(index) => (Ipv4Addr::UNSPECIFIED, index),
        MulticastInterface::Address(address) => (address, 0),
    }
}

impl crate::UdpSocket for Udp {
    type Error = Error;

    fn recv_from(&self, buffer: &mut [u8]) -> Result<(usize, SocketAddr)> {
        let (length, _, from) = rnet::recvfrom(self.io.get_ref(), buffer, rnet::RecvFlags::empty())?;
        Ok((length, socket_address(from)?))
    }

    fn send_to(&self, buffer: &[u8], target: SocketAddr) -> Result<usize> {
        Ok(rnet::sendto(self.io.get_ref(), buffer, rnet::SendFlags::NOSIGNAL, &target)?)
    }

    fn join(&self, membership: &Membership) -> Result<()> {
        let fd = self.io.get_ref();
        match *membership {
            Membership::V4 { group, source: Some(source), interface } => {
                let (address, _) = interface_v4(interface);
                Ok(sockopt::set_ip_add_source_membership(fd, &group, &address, &source)?)
            }
            Membership::V4 { group, source: None, interface } => {
                let (address, index) = interface_v4(interface);
                Ok(sockopt::set_ip_add_membership_with_ifindex(fd, &group, &address, index)?)
            }
            Membership::V6 { group, interface } => {
                let (_, index) = interface_v4(interface);
                Ok(sockopt::set_ipv6_add_membership(fd, &group, index)?)
            }
        }
    }

    fn leave(&self, membership: &Membership) -> Result<()> {
        let fd = self.io.get_ref();
        match *membership {
            Membership::V4 { group, source: Some(source), interface } => {
                let (address, _) = interface_v4(interface);
                Ok(sockopt::set_ip_drop_source_membership(fd, &group, &address, &source)?)
            }
            Membership::V4 { group, source: None, interface } => {
                let (address, index) = interface_v4(interface);
                Ok(sockopt::set_ip_drop_membership_with_ifindex(fd, &group, &address, index)?)
            }
            Membership::V6 { group, interface } => {
                let (_, index) = interface_v4(interface);
                Ok(sockopt::set_ipv6_drop_membership(fd, &group, index)?)
            }
        }
    }

    fn set_multicast_ttl(&self, ttl: u32) -> Result<()> {
        Ok(sockopt::set_ip_multicast_ttl(self.io.get_ref(), ttl)?)
    }

    fn set_multicast_interface(&self, interface: MulticastInterface) -> Result<()> {
        let fd = self.io.get_ref();
        match interface {
            MulticastInterface::Any => Ok(sockopt::set_ip_multicast_if(fd, &Ipv4Addr::UNSPECIFIED)?),
            MulticastInterface::Address(address) => Ok(sockopt::set_ip_multicast_if(fd, &address)?),
            MulticastInterface::Index(index) => Ok(sockopt::set_ip_multicast_if_with_ifindex(
                fd,
                &Ipv4Addr::UNSPECIFIED,
                &Ipv4Addr::UNSPECIFIED,
                index,
            )?),
        }
    }

    fn set_receive_buffer_bytes(&self, bytes: usize) -> Result<()> {
        Ok(sockopt::set_socket_recv_buffer_size(self.io.get_ref(), bytes)?)
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        socket_address(Some(rnet::getsockname(self.io.get_ref())?))
    }

    fn readable(&self) -> impl Future<Output = Result<()>> {
        let future = self.io.readable();
        async move { Ok(future.await?) }
    }
}

/// The Linux network: sockets and memfd ring regions.
#[derive(Clone, Copy, Debug)]
pub struct LinuxNet {
    /// How streams send ring bytes.
    pub send_mode: SendMode,
}

impl Default for LinuxNet {
    fn default() -> Self {
        Self {
            send_mode: SendMode::Sendfile,
        }
    }
}

fn family_of(address: &SocketAddr) -> AddressFamily {
    match address {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    }
}

fn new_socket(address: &SocketAddr, kind: SocketType) -> Result<OwnedFd> {
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    Ok(rnet::socket_with(family_of(address), kind, flags, None)?)
}

impl crate::Net for LinuxNet {
    type Error = Error;
    type Region = MemfdRegion;
    type Stream = Stream;
    type Listener = Listener;
    type Udp = Udp;

    fn region(&self, bytes: usize) -> Result<MemfdRegion> {
        MemfdRegion::new(bytes)
    }

    fn tcp_listen(&self, address: SocketAddr, backlog: u32) -> Result<Listener> {
        let fd = new_socket(&address, SocketType::STREAM)?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        if address.is_ipv6() {
            let _ = sockopt::set_ipv6_v6only(&fd, false);
        }
        rnet::bind(&fd, &address)?;
        rnet::listen(&fd, backlog.min(i32::MAX as u32) as i32)?;
        Ok(Listener {
            io: Async::new(fd)?,
            mode: self.send_mode,
        })
    }

    fn tcp_connect(&self, address: SocketAddr) -> Result<Stream> {
        let fd = new_socket(&address, SocketType::STREAM)?;
        match rnet::connect(&fd, &address) {
            Ok(()) | Err(Errno::INPROGRESS) => {}
            Err(errno) => return Err(errno.into()),
        }
        Stream::new(fd, self.send_mode)
    }

    fn connect_result(&self, stream: &Stream) -> Result<()> {
        Ok(sockopt::socket_error(stream.io.get_ref())??)
    }

    fn udp_bind(&self, address: SocketAddr) -> Result<Udp> {
        let fd = new_socket(&address, SocketType::DGRAM)?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        sockopt::set_socket_reuseport(&fd, true)?;
        if address.is_ipv6() {
            let _ = sockopt::set_ipv6_v6only(&fd, false);
        }
        rnet::bind(&fd, &address)?;
        Ok(Udp { io: Async::new(fd)? })
    }

    fn interface_index(&self, name: &str) -> Result<u32> {
        let probe = rnet::socket_with(
            AddressFamily::INET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok(rnet::netdevice::name_to_index(probe.as_fd(), name)?)
    }
}

/// The monotonic clock, in milliseconds since the clock was made.
#[derive(Clone, Copy, Debug)]
pub struct LinuxClock {
    start: Instant,
}

impl Default for LinuxClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl crate::Clock for LinuxClock {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn sleep_until(&self, deadline_ms: u64) -> impl Future<Output = ()> {
        let at = self.start + Duration::from_millis(deadline_ms);
        async move {
            Timer::at(at).await;
        }
    }
}
