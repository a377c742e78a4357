//! The Linux implementation of the HAL: rustix sockets on a small epoll
//! reactor, ring memory in a memfd so that fan-out can use `sendfile`, and a
//! monotonic clock whose timers live in the same reactor.
//!
//! The reactor is edge-triggered and fixed-size: a registration table and a
//! timer table sized once at start-up, a preallocated event buffer, and wakers
//! stored in place. Registering a socket, waiting, and waking never allocate,
//! which `async-io` cannot promise (it builds a `Vec` of wakers on every turn).
//! Each registration remembers whether its fd may be readable or writable; a
//! syscall that returns `EAGAIN` clears the flag and the next readiness future
//! waits for the kernel's edge.
//!
//! Flash for the record store lives in `flash`: [`FileFlash`] (a raw region
//! over a file or block device) and [`StateDirFlash`] (a file in a state
//! directory, replaced by rename).

use core::cell::RefCell;
use core::future::Future;
use core::net::{Ipv4Addr, SocketAddr};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{self as rnet, sockopt, AddressFamily, SocketFlags, SocketType};

use crate::{ErrorKind, Membership, MulticastInterface};

mod flash;
pub use flash::{FileFlash, StateDirFlash};

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
        Errno::ADDRNOTAVAIL | Errno::NETUNREACH | Errno::HOSTUNREACH => ErrorKind::AddrNotAvailable,
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

/// The epoll data of the cross-thread wake-up eventfd (no slot has it).
const WAKE_FD_DATA: u64 = u64::MAX;
/// Events taken from the kernel per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;
const READ: usize = 0;
const WRITE: usize = 1;

#[derive(Default)]
struct IoSlot {
    in_use: bool,
    ready: [bool; 2],
    wakers: [Option<Waker>; 2],
}

#[derive(Default)]
struct TimerSlot {
    in_use: bool,
    deadline_ms: u64,
    waker: Option<Waker>,
}

struct ReactorInner {
    epoll: OwnedFd,
    /// Written by other threads (the resolver) to end a wait early.
    wake_fd: Arc<OwnedFd>,
    io: RefCell<Box<[IoSlot]>>,
    timers: RefCell<Box<[TimerSlot]>>,
    events: RefCell<Vec<epoll::Event>>,
    start: Instant,
}

/// The epoll reactor. Cloning is cheap (a reference count) and never allocates.
#[derive(Clone)]
pub struct Reactor {
    inner: Rc<ReactorInner>,
}

/// Returned when the registration or timer table is full.
#[derive(Debug)]
pub struct TableFull;

impl Reactor {
    /// Makes a reactor for at most `io_max` registered fds and `timers_max`
    /// pending sleeps. Call once at start-up.
    pub fn new(io_max: usize, timers_max: usize) -> Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let flags = rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK;
        let wake_fd = Arc::new(rustix::event::eventfd(0, flags)?);
        let data = epoll::EventData::new_u64(WAKE_FD_DATA);
        epoll::add(&epoll, &*wake_fd, data, epoll::EventFlags::IN)?;
        Ok(Self {
            inner: Rc::new(ReactorInner {
                epoll,
                wake_fd,
                io: RefCell::new((0..io_max).map(|_| IoSlot::default()).collect()),
                timers: RefCell::new((0..timers_max).map(|_| TimerSlot::default()).collect()),
                events: RefCell::new(Vec::with_capacity(EVENTS_PER_WAIT)),
                start: Instant::now(),
            }),
        })
    }

    /// Milliseconds since the reactor was made.
    pub fn now_ms(&self) -> u64 {
        self.inner.start.elapsed().as_millis() as u64
    }

    /// Registers an fd for edge-triggered readiness. A regular file (which
    /// epoll refuses) is registered as always ready.
    pub fn register(&self, fd: OwnedFd) -> Result<Registration> {
        let slot = {
            let mut io = self.inner.io.borrow_mut();
            let slot = io
                .iter()
                .position(|s| !s.in_use)
                .ok_or(Error(Errno::MFILE))?;
            io[slot] = IoSlot {
                in_use: true,
                ready: [true, true],
                wakers: [None, None],
            };
            slot
        };
        let flags = epoll::EventFlags::IN
            | epoll::EventFlags::OUT
            | epoll::EventFlags::RDHUP
            | epoll::EventFlags::ET;
        let data = epoll::EventData::new_u64(slot as u64);
        let polled = match epoll::add(&self.inner.epoll, &fd, data, flags) {
            Ok(()) => true,
            Err(Errno::PERM) => false,
            Err(errno) => {
                self.inner.io.borrow_mut()[slot].in_use = false;
                return Err(errno.into());
            }
        };
        Ok(Registration {
            reactor: self.clone(),
            slot,
            polled,
            fd,
        })
    }

    fn poll_ready(&self, slot: usize, direction: usize, context: &mut Context<'_>) -> Poll<()> {
        let mut io = self.inner.io.borrow_mut();
        let entry = &mut io[slot];
        if entry.ready[direction] {
            return Poll::Ready(());
        }
        match &mut entry.wakers[direction] {
            Some(waker) if waker.will_wake(context.waker()) => {}
            stored => *stored = Some(context.waker().clone()),
        }
        Poll::Pending
    }

    fn clear_ready(&self, slot: usize, direction: usize) {
        self.inner.io.borrow_mut()[slot].ready[direction] = false;
    }

    fn claim_timer(&self, deadline_ms: u64) -> usize {
        let mut timers = self.inner.timers.borrow_mut();
        let slot = timers.iter().position(|t| !t.in_use);
        // A sleep per task at most: the table is sized to the task count.
        let slot = slot.expect("timer table sized below the number of sleeping tasks");
        timers[slot] = TimerSlot {
            in_use: true,
            deadline_ms,
            waker: None,
        };
        slot
    }

    fn release_timer(&self, slot: usize) {
        let mut timers = self.inner.timers.borrow_mut();
        timers[slot].in_use = false;
        timers[slot].waker = None;
    }

    /// The earliest pending timer deadline.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let timers = self.inner.timers.borrow();
        timers
            .iter()
            .filter(|t| t.in_use && t.waker.is_some())
            .map(|t| t.deadline_ms)
            .min()
    }

    /// Waits for I/O events or the next timer, at most `timeout_ms`, then wakes
    /// every task whose fd became ready or whose deadline passed.
    pub fn wait(&self, timeout_ms: Option<u64>) -> Result<()> {
        let now = self.now_ms();
        let timer_wait = self.next_deadline_ms().map(|d| d.saturating_sub(now));
        let wait_ms = match (timer_wait, timeout_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timespec = wait_ms.map(|ms| rustix::event::Timespec {
            tv_sec: (ms / 1000) as _,
            tv_nsec: ((ms % 1000) * 1_000_000) as _,
        });
        let mut events = self.inner.events.borrow_mut();
        events.clear();
        match epoll::wait(
            &self.inner.epoll,
            rustix::buffer::spare_capacity(&mut events),
            timespec.as_ref(),
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
        self.dispatch(&events);
        drop(events);
        self.fire_timers(self.now_ms());
        Ok(())
    }

    fn dispatch(&self, events: &[epoll::Event]) {
        let mut io = self.inner.io.borrow_mut();
        for event in events {
            if event.data.u64() == WAKE_FD_DATA {
                let mut count = [0u8; 8];
                let _ = rustix::io::read(&*self.inner.wake_fd, &mut count);
                continue;
            }
            let slot = event.data.u64() as usize;
            let Some(entry) = io.get_mut(slot).filter(|e| e.in_use) else {
                continue;
            };
            let flags = event.flags;
            let broken = flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP);
            if broken || flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::RDHUP) {
                entry.ready[READ] = true;
                if let Some(waker) = entry.wakers[READ].take() {
                    waker.wake();
                }
            }
            if broken || flags.contains(epoll::EventFlags::OUT) {
                entry.ready[WRITE] = true;
                if let Some(waker) = entry.wakers[WRITE].take() {
                    waker.wake();
                }
            }
        }
    }

    fn fire_timers(&self, now_ms: u64) {
        let mut timers = self.inner.timers.borrow_mut();
        for timer in timers
            .iter_mut()
            .filter(|t| t.in_use && t.deadline_ms <= now_ms)
        {
            if let Some(waker) = timer.waker.take() {
                waker.wake();
            }
        }
    }

    /// A future that resolves at `deadline_ms` on this reactor's clock.
    pub fn sleep_until(&self, deadline_ms: u64) -> Sleep {
        Sleep {
            reactor: self.clone(),
            deadline_ms,
            slot: None,
        }
    }
}

/// A pending sleep; holds a timer slot while it waits.
pub struct Sleep {
    reactor: Reactor,
    deadline_ms: u64,
    slot: Option<usize>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.reactor.now_ms() >= this.deadline_ms {
            if let Some(slot) = this.slot.take() {
                this.reactor.release_timer(slot);
            }
            return Poll::Ready(());
        }
        let slot = *this
            .slot
            .get_or_insert_with(|| this.reactor.claim_timer(this.deadline_ms));
        let mut timers = this.reactor.inner.timers.borrow_mut();
        match &mut timers[slot].waker {
            Some(waker) if waker.will_wake(context.waker()) => {}
            stored => *stored = Some(context.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.reactor.release_timer(slot);
        }
    }
}

/// An fd registered with the reactor.
pub struct Registration {
    reactor: Reactor,
    slot: usize,
    polled: bool,
    fd: OwnedFd,
}

impl Registration {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Runs a non-blocking syscall; on `EAGAIN` forgets the readiness so the
    /// next readiness future waits for the kernel.
    fn attempt<T>(
        &self,
        direction: usize,
        call: impl FnOnce(BorrowedFd<'_>) -> rustix::io::Result<T>,
    ) -> Result<T> {
        let result = call(self.fd.as_fd());
        if let Err(Errno::AGAIN) = result {
            if self.polled {
                self.reactor.clear_ready(self.slot, direction);
            }
        }
        Ok(result?)
    }

    /// Resolves when the fd may be readable.
    pub fn readable(&self) -> Ready<'_> {
        Ready {
            registration: self,
            direction: READ,
        }
    }

    /// Resolves when the fd may be writable.
    pub fn writable(&self) -> Ready<'_> {
        Ready {
            registration: self,
            direction: WRITE,
        }
    }

    /// Reads with the readiness bookkeeping.
    pub fn read(&self, buffer: &mut [u8]) -> Result<usize> {
        self.attempt(READ, |fd| rustix::io::read(fd, buffer))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.polled {
            let _ = epoll::delete(&self.reactor.inner.epoll, &self.fd);
        }
        let mut io = self.reactor.inner.io.borrow_mut();
        io[self.slot] = IoSlot::default();
    }
}

/// A readiness future of a [`Registration`].
pub struct Ready<'a> {
    registration: &'a Registration,
    direction: usize,
}

impl Future for Ready<'_> {
    type Output = Result<()>;
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Result<()>> {
        let registration = self.registration;
        registration
            .reactor
            .poll_ready(registration.slot, self.direction, context)
            .map(Ok)
    }
}

/// How fan-out hands ring bytes to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// `sendfile` from the memfd: the kernel references the ring pages.
    Sendfile,
    /// `send` from the mapping: the kernel copies the bytes.
    Copy,
}

/// A non-blocking TCP stream.
pub struct Stream {
    io: Registration,
    mode: SendMode,
}

fn socket_address(any: Option<rnet::SocketAddrAny>) -> Result<SocketAddr> {
    any.and_then(|a| SocketAddr::try_from(a).ok())
        .ok_or(Error(Errno::AFNOSUPPORT))
}

impl crate::TcpStream for Stream {
    type Error = Error;
    type Region = MemfdRegion;

    fn read(&mut self, buffer: &mut [u8]) -> Result<usize> {
        self.io.read(buffer)
    }

    fn write(&mut self, buffer: &[u8]) -> Result<usize> {
        self.io.attempt(WRITE, |fd| {
            rnet::send(fd, buffer, rnet::SendFlags::NOSIGNAL)
        })
    }

    fn write_vectored(&mut self, buffers: &[IoSlice<'_>]) -> Result<usize> {
        self.io.attempt(WRITE, |fd| rustix::io::writev(fd, buffers))
    }

    fn send_region(&mut self, region: &MemfdRegion, offset: usize, length: usize) -> Result<usize> {
        match self.mode {
            SendMode::Sendfile => self.io.attempt(WRITE, |fd| {
                let mut file_offset = offset as u64;
                rustix::fs::sendfile(fd, &region.fd, Some(&mut file_offset), length)
            }),
            SendMode::Copy => {
                let bytes = &crate::Region::as_slice(region)[offset..offset + length];
                self.io
                    .attempt(WRITE, |fd| rnet::send(fd, bytes, rnet::SendFlags::NOSIGNAL))
            }
        }
    }

    fn set_zero_copy(&mut self, enabled: bool) {
        self.mode = if enabled {
            SendMode::Sendfile
        } else {
            SendMode::Copy
        };
    }

    fn set_send_buffer_bytes(&mut self, bytes: usize) -> Result<()> {
        Ok(sockopt::set_socket_send_buffer_size(self.io.fd(), bytes)?)
    }

    fn peer_addr(&self) -> Result<SocketAddr> {
        socket_address(rnet::getpeername(self.io.fd())?)
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        socket_address(Some(rnet::getsockname(self.io.fd())?))
    }

    fn readable(&self) -> impl Future<Output = Result<()>> {
        self.io.readable()
    }

    fn writable(&self) -> impl Future<Output = Result<()>> {
        self.io.writable()
    }
}

/// A listening TCP socket.
pub struct Listener {
    io: Registration,
    mode: SendMode,
}

impl crate::TcpListener for Listener {
    type Error = Error;
    type Stream = Stream;

    fn accept(&self) -> Result<(Stream, SocketAddr)> {
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        let (fd, peer) = self
            .io
            .attempt(READ, |fd| rnet::acceptfrom_with(fd, flags))?;
        let peer = socket_address(peer)?;
        let io = self.io.reactor.register(fd)?;
        Ok((
            Stream {
                io,
                mode: self.mode,
            },
            peer,
        ))
    }

    fn readable(&self) -> impl Future<Output = Result<()>> {
        self.io.readable()
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        socket_address(Some(rnet::getsockname(self.io.fd())?))
    }
}

/// A non-blocking UDP socket.
pub struct Udp {
    io: Registration,
}

fn interface_v4(interface: MulticastInterface) -> (Ipv4Addr, u32) {
    match interface {
        MulticastInterface::Any => (Ipv4Addr::UNSPECIFIED, 0),
        MulticastInterface::Index(index) => (Ipv4Addr::UNSPECIFIED, index),
        MulticastInterface::Address(address) => (address, 0),
    }
}

fn change_membership(fd: BorrowedFd<'_>, membership: &Membership, join: bool) -> Result<()> {
    match (*membership, join) {
        (
            Membership::V4 {
                group,
                source: Some(source),
                interface,
            },
            true,
        ) => {
            let (address, _) = interface_v4(interface);
            Ok(sockopt::set_ip_add_source_membership(
                fd, &group, &address, &source,
            )?)
        }
        (
            Membership::V4 {
                group,
                source: Some(source),
                interface,
            },
            false,
        ) => {
            let (address, _) = interface_v4(interface);
            Ok(sockopt::set_ip_drop_source_membership(
                fd, &group, &address, &source,
            )?)
        }
        (
            Membership::V4 {
                group,
                source: None,
                interface,
            },
            true,
        ) => {
            let (address, index) = interface_v4(interface);
            Ok(sockopt::set_ip_add_membership_with_ifindex(
                fd, &group, &address, index,
            )?)
        }
        (
            Membership::V4 {
                group,
                source: None,
                interface,
            },
            false,
        ) => {
            let (address, index) = interface_v4(interface);
            Ok(sockopt::set_ip_drop_membership_with_ifindex(
                fd, &group, &address, index,
            )?)
        }
        (Membership::V6 { group, interface }, true) => {
            let (_, index) = interface_v4(interface);
            Ok(sockopt::set_ipv6_add_membership(fd, &group, index)?)
        }
        (Membership::V6 { group, interface }, false) => {
            let (_, index) = interface_v4(interface);
            Ok(sockopt::set_ipv6_drop_membership(fd, &group, index)?)
        }
    }
}

impl Udp {
    /// True for an IPv6 (dual-stack) socket.
    fn is_ipv6(&self) -> bool {
        matches!(
            rnet::getsockname(self.io.fd()).map(|a| a.address_family()),
            Ok(AddressFamily::INET6)
        )
    }
}

impl crate::UdpSocket for Udp {
    type Error = Error;

    fn recv_from(&self, buffer: &mut [u8]) -> Result<(usize, SocketAddr)> {
        let (length, _, from) = self.io.attempt(READ, |fd| {
            rnet::recvfrom(fd, &mut *buffer, rnet::RecvFlags::empty())
        })?;
        Ok((length, socket_address(from)?))
    }

    fn send_to(&self, buffer: &[u8], target: SocketAddr) -> Result<usize> {
        self.io.attempt(WRITE, |fd| {
            rnet::sendto(fd, buffer, rnet::SendFlags::NOSIGNAL, &target)
        })
    }

    fn join(&self, membership: &Membership) -> Result<()> {
        change_membership(self.io.fd(), membership, true)
    }

    fn leave(&self, membership: &Membership) -> Result<()> {
        change_membership(self.io.fd(), membership, false)
    }

    fn set_multicast_ttl(&self, ttl: u32) -> Result<()> {
        if self.is_ipv6() {
            // A dual-stack socket: the hop limit for IPv6 groups, and the
            // TTL for IPv4 ones (through mapped addresses) where allowed.
            sockopt::set_ipv6_multicast_hops(self.io.fd(), ttl)?;
            let _ = sockopt::set_ip_multicast_ttl(self.io.fd(), ttl);
            return Ok(());
        }
        Ok(sockopt::set_ip_multicast_ttl(self.io.fd(), ttl)?)
    }

    fn set_multicast_interface(&self, interface: MulticastInterface) -> Result<()> {
        let fd = self.io.fd();
        let any = Ipv4Addr::UNSPECIFIED;
        let v4 = || match interface {
            MulticastInterface::Any => Ok(sockopt::set_ip_multicast_if(fd, &any)?),
            MulticastInterface::Address(address) => Ok(sockopt::set_ip_multicast_if(fd, &address)?),
            MulticastInterface::Index(index) => Ok(sockopt::set_ip_multicast_if_with_ifindex(
                fd, &any, &any, index,
            )?),
        };
        if self.is_ipv6() {
            // IPv6 groups go out of the interface by index; IPv4 ones (on
            // this dual-stack socket) by the IPv4 option, where allowed.
            match interface {
                MulticastInterface::Index(index) => sockopt::set_ipv6_multicast_if(fd, index)?,
                MulticastInterface::Any => sockopt::set_ipv6_multicast_if(fd, 0)?,
                MulticastInterface::Address(_) => {}
            }
            let _ = v4();
            return Ok(());
        }
        v4()
    }

    fn set_receive_buffer_bytes(&self, bytes: usize) -> Result<()> {
        Ok(sockopt::set_socket_recv_buffer_size(self.io.fd(), bytes)?)
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        socket_address(Some(rnet::getsockname(self.io.fd())?))
    }

    fn readable(&self) -> impl Future<Output = Result<()>> {
        self.io.readable()
    }
}

/// The Linux network: sockets on the reactor, and memfd ring regions.
#[derive(Clone)]
pub struct LinuxNet {
    reactor: Reactor,
    /// How streams send ring bytes.
    pub send_mode: SendMode,
}

impl LinuxNet {
    pub fn new(reactor: Reactor, send_mode: SendMode) -> Self {
        Self { reactor, send_mode }
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
            io: self.reactor.register(fd)?,
            mode: self.send_mode,
        })
    }

    fn tcp_connect(&self, address: SocketAddr) -> Result<Stream> {
        let fd = new_socket(&address, SocketType::STREAM)?;
        match rnet::connect(&fd, &address) {
            Ok(()) | Err(Errno::INPROGRESS) => {}
            Err(errno) => return Err(errno.into()),
        }
        let io = self.reactor.register(fd)?;
        // Writability is the kernel's word that the connection finished.
        self.reactor.clear_ready(io.slot, WRITE);
        Ok(Stream {
            io,
            mode: self.send_mode,
        })
    }

    fn connect_result(&self, stream: &Stream) -> Result<()> {
        Ok(sockopt::socket_error(stream.io.fd())??)
    }

    fn udp_bind(&self, address: SocketAddr) -> Result<Udp> {
        let fd = new_socket(&address, SocketType::DGRAM)?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        sockopt::set_socket_reuseport(&fd, true)?;
        if address.is_ipv6() {
            let _ = sockopt::set_ipv6_v6only(&fd, false);
        }
        rnet::bind(&fd, &address)?;
        Ok(Udp {
            io: self.reactor.register(fd)?,
        })
    }

    fn resolve(&self, host: &str, port: u16) -> impl Future<Output = Result<SocketAddr>> {
        Resolve::start(&self.reactor, host, port)
    }

    fn interface_index(&self, name: &str) -> Result<u32> {
        let probe = probe_socket()?;
        Ok(rnet::netdevice::name_to_index(probe.as_fd(), name)?)
    }

    fn ipv4_interfaces(&self, out: &mut [crate::InterfaceAddress]) -> Result<usize> {
        let mut routes = [0u8; ROUTE_TABLE_BYTES_MAX];
        let len = read_file_prefix("/proc/net/route", &mut routes)?;
        let routes = core::str::from_utf8(&routes[..len]).unwrap_or("");
        let mut trie = [0u8; FIB_TRIE_BYTES_MAX];
        let len = read_file_prefix("/proc/net/fib_trie", &mut trie)?;
        let trie = core::str::from_utf8(&trie[..len]).unwrap_or("");
        let mut count = 0;
        for (name, address, prefix_len) in interface_addresses(routes, trie) {
            let Some(slot) = out.get_mut(count) else {
                break;
            };
            let Ok(index) = self.interface_index(name) else {
                continue;
            };
            *slot = crate::InterfaceAddress {
                index,
                address,
                prefix_len,
            };
            count += 1;
        }
        Ok(count)
    }

    fn default_route(&self, interface: Option<&str>) -> Result<Option<crate::Route>> {
        let mut table = [0u8; ROUTE_TABLE_BYTES_MAX];
        let len = read_file_prefix("/proc/net/route", &mut table)?;
        let text = core::str::from_utf8(&table[..len]).unwrap_or("");
        let Some(gateway) = parse_default_route(text, interface) else {
            return Ok(None);
        };
        // Our address towards the gateway: connect a UDP socket (which sends
        // nothing) and ask the kernel which source it chose.
        let probe = probe_socket()?;
        rnet::connect(&probe, &SocketAddr::from((gateway, 5351)))?;
        let local = rnet::getsockname(&probe)?;
        match SocketAddr::try_from(local) {
            Ok(SocketAddr::V4(local)) => Ok(Some(crate::Route {
                gateway,
                local: *local.ip(),
            })),
            _ => Ok(None),
        }
    }
}

/// An unbound IPv4 UDP socket, for questions to the kernel (interface
/// index, source address towards a host); it sends nothing.
fn probe_socket() -> Result<OwnedFd> {
    Ok(rnet::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Bytes of `/proc/net/route` read (a home box has a handful of routes;
/// a default route past this is not seen).
const ROUTE_TABLE_BYTES_MAX: usize = 16 * 1024;
/// Bytes of `/proc/net/fib_trie` read (its local addresses come first).
const FIB_TRIE_BYTES_MAX: usize = 32 * 1024;

/// Reads up to `buffer.len()` bytes of a file, without allocating.
fn read_file_prefix(path: &str, buffer: &mut [u8]) -> Result<usize> {
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut filled = 0;
    while filled < buffer.len() {
        match rustix::io::read(&fd, &mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(filled)
}

/// The host's own IPv4 addresses (`/32 host LOCAL` entries) in the text of
/// `/proc/net/fib_trie`, loopback left out.
fn local_addresses(trie: &str) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let mut last = None;
    trie.lines().filter_map(move |line| {
        if let Some(address) = line.trim().strip_prefix("|-- ") {
            last = address.parse::<Ipv4Addr>().ok();
            None
        } else if line.contains("/32 host LOCAL") {
            last.take().filter(|a| !a.is_loopback())
        } else {
            None
        }
    })
}

/// Each interface's address, from the connected-subnet routes of
/// `/proc/net/route` (no gateway) and the local addresses of
/// `/proc/net/fib_trie` inside them: (interface, address, prefix length).
/// Each (interface, address) pair comes once.
pub fn interface_addresses<'a>(
    routes: &'a str,
    trie: &'a str,
) -> impl Iterator<Item = (&'a str, Ipv4Addr, u8)> + 'a {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let subnets = routes.lines().skip(1).filter_map(|line| {
        let fields: heapless_fields::Fields<'_> = heapless_fields::split(line);
        let hex = |index: usize| {
            fields
                .get(index)
                .and_then(|t| u32::from_str_radix(t, 16).ok())
        };
        let (name, destination, flags, mask) = (fields.get(0)?, hex(1)?, hex(3)?, hex(7)?);
        let connected = flags & RTF_UP != 0 && flags & RTF_GATEWAY == 0 && mask != 0;
        connected.then(|| {
            let mask = Ipv4Addr::from(mask.to_ne_bytes());
            (name, Ipv4Addr::from(destination.to_ne_bytes()), mask)
        })
    });
    let mut seen: [Option<(u64, Ipv4Addr)>; 16] = [None; 16];
    subnets
        .flat_map(move |(name, network, mask)| {
            local_addresses(trie).filter_map(move |address| {
                let inside = u32::from(address) & u32::from(mask) == u32::from(network);
                inside.then_some((name, address, u32::from(mask).count_ones() as u8))
            })
        })
        .filter(move |(name, address, _)| {
            let key = (name_hash(name), *address);
            if seen.contains(&Some(key)) {
                return false;
            }
            if let Some(free) = seen.iter_mut().find(|slot| slot.is_none()) {
                *free = Some(key);
            }
            true
        })
}

/// A cheap hash of an interface name (for de-duplication only).
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Whitespace-separated fields of a line, without allocating.
mod heapless_fields {
    /// Fields a `/proc/net/route` line has.
    const FIELDS_MAX: usize = 11;

    pub struct Fields<'a>([Option<&'a str>; FIELDS_MAX]);

    impl<'a> Fields<'a> {
        pub fn get(&self, index: usize) -> Option<&'a str> {
            self.0.get(index).copied().flatten()
        }
    }

    pub fn split(line: &str) -> Fields<'_> {
        let mut fields = [None; FIELDS_MAX];
        for (slot, field) in fields.iter_mut().zip(line.split_whitespace()) {
            *slot = Some(field);
        }
        Fields(fields)
    }
}

/// The gateway of the best (lowest metric) IPv4 default route in the text
/// of `/proc/net/route`, through `interface` if given. Addresses there are
/// the raw network-order word printed in host order, hence `to_ne_bytes`.
pub fn parse_default_route(table: &str, interface: Option<&str>) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let mut best: Option<(u32, Ipv4Addr)> = None;
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(destination), Some(gateway), Some(flags)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let metric = fields.nth(2).and_then(|m| m.parse::<u32>().ok());
        let mask = fields.next();
        let hex = |text: &str| u32::from_str_radix(text, 16).ok();
        let (Some(destination), Some(gateway), Some(flags), Some(metric), Some(mask)) = (
            hex(destination),
            hex(gateway),
            hex(flags),
            metric,
            mask.and_then(hex),
        ) else {
            continue;
        };
        let wanted = interface.is_none_or(|wanted| wanted == name);
        let is_default = destination == 0 && mask == 0 && flags & (RTF_UP | RTF_GATEWAY) == 3;
        if wanted && is_default && best.is_none_or(|(m, _)| metric < m) {
            best = Some((metric, Ipv4Addr::from(gateway.to_ne_bytes())));
        }
    }
    best.map(|(_, gateway)| gateway)
}

/// The monotonic clock of the reactor.
#[derive(Clone)]
pub struct LinuxClock {
    reactor: Reactor,
}

impl LinuxClock {
    pub fn new(reactor: Reactor) -> Self {
        Self { reactor }
    }
}

impl crate::Clock for LinuxClock {
    fn now_ms(&self) -> u64 {
        self.reactor.now_ms()
    }

    fn sleep_until(&self, deadline_ms: u64) -> impl Future<Output = ()> {
        self.reactor.sleep_until(deadline_ms)
    }
}

impl Stream {
    /// Wraps an already open, non-blocking fd (standard input, a pipe).
    pub fn from_fd(reactor: &Reactor, fd: OwnedFd) -> Result<Self> {
        Ok(Self {
            io: reactor.register(fd)?,
            mode: SendMode::Copy,
        })
    }
}

/// A name resolution on a short-lived thread (`getaddrinfo` blocks, and a
/// router's DNS may hang for seconds; the event loop must not). The thread
/// stores the answer, wakes the task and ends the reactor's wait.
pub struct Resolve {
    shared: Arc<Resolution>,
    ready: Option<Result<SocketAddr>>,
}

#[derive(Default)]
struct Resolution {
    answer: Mutex<Option<Result<SocketAddr>>>,
    waker: Mutex<Option<Waker>>,
}

impl Resolve {
    fn start(reactor: &Reactor, host: &str, port: u16) -> Self {
        let shared = Arc::new(Resolution::default());
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<core::net::IpAddr>() {
            return Self {
                shared,
                ready: Some(Ok(SocketAddr::new(ip, port))),
            };
        }
        let (thread_shared, wake_fd, host) = (
            shared.clone(),
            reactor.inner.wake_fd.clone(),
            host.to_owned(),
        );
        let spawned = std::thread::Builder::new()
            .name("ringcast-resolve".into())
            .spawn(move || resolve_on_thread(&thread_shared, &wake_fd, &host, port));
        let ready = spawned.err().map(|_| Err(Error(Errno::AGAIN)));
        Self { shared, ready }
    }
}

fn resolve_on_thread(shared: &Resolution, wake_fd: &OwnedFd, host: &str, port: u16) {
    use std::net::ToSocketAddrs as _;
    let answer = match (host, port).to_socket_addrs() {
        Ok(mut addresses) => addresses.next().ok_or(Error(Errno::NOENT)),
        Err(_) => Err(Error(Errno::NOENT)),
    };
    if let Ok(mut slot) = shared.answer.lock() {
        *slot = Some(answer);
    }
    if let Some(waker) = shared.waker.lock().ok().and_then(|mut w| w.take()) {
        waker.wake();
    }
    let _ = rustix::io::write(wake_fd, &1u64.to_ne_bytes());
}

impl Future for Resolve {
    type Output = Result<SocketAddr>;
    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Result<SocketAddr>> {
        let this = self.get_mut();
        if let Some(ready) = this.ready.take() {
            return Poll::Ready(ready);
        }
        if let Ok(mut waker) = this.shared.waker.lock() {
            *waker = Some(context.waker().clone());
        }
        match this.shared.answer.lock().ok().and_then(|mut a| a.take()) {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route word as the kernel prints it on this host.
    fn word(address: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(address))
    }

    #[test]
    fn default_route_is_the_lowest_metric_gateway() {
        let table = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t{}\t{}\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             eth0\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n\
             wlan0\t00000000\t{}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
            word([0, 0, 0, 0]),
            word([192, 168, 1, 1]),
            word([192, 168, 1, 0]),
            word([255, 255, 255, 0]),
            word([10, 0, 0, 1]),
        );
        assert_eq!(
            parse_default_route(&table, None),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            parse_default_route(&table, Some("eth0")),
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
        assert_eq!(parse_default_route(&table, Some("br-lan")), None);
        assert_eq!(parse_default_route("garbage\nmore garbage", None), None);
    }

    #[test]
    fn interface_addresses_pair_subnets_with_local_addresses() {
        let routes = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             br-lan\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n\
             wan\t00000000\t{}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             wan\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n",
            word([192, 168, 1, 0]),
            word([255, 255, 255, 0]),
            word([100, 64, 0, 1]),
            word([100, 64, 0, 0]),
            word([255, 192, 0, 0]),
        );
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 100.64.3.4\n        /32 host LOCAL\n\
                    |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 192.168.1.1\n\
                    /32 host LOCAL\n     |-- 192.168.1.255\n        /32 link BROADCAST\n\
                    Local:\n     |-- 192.168.1.1\n        /32 host LOCAL\n";
        let found: Vec<_> = interface_addresses(&routes, trie).collect();
        assert_eq!(
            found,
            vec![
                ("br-lan", Ipv4Addr::new(192, 168, 1, 1), 24),
                ("wan", Ipv4Addr::new(100, 64, 3, 4), 10),
            ]
        );
    }
}
