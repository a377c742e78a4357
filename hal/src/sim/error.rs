//! The simulation's error type, and how each error maps onto the shared
//! [`ErrorKind`](crate::ErrorKind).
//!
//! The variants follow what Linux reports in the same situation, so code that
//! reacts to the kind behaves the same under simulation and on a box.

use crate::ErrorKind;

/// An error from the simulated network or flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// Nothing to read, no room to write, no pending connection, or a
    /// connection that is still being set up.
    WouldBlock,
    /// Nothing listens at the address that was connected to.
    ConnectionRefused,
    /// The peer reset the connection (or closed it with data unread).
    ConnectionReset,
    /// A write after the connection was reset and the reset was reported.
    BrokenPipe,
    /// The stream is not connected: its connection attempt failed.
    NotConnected,
    /// The address (or the multicast membership) is already taken.
    AddrInUse,
    /// The address is not one of this host's, or the membership is unknown.
    AddrNotAvailable,
    /// No host in the world has the address that was connected to.
    HostUnreachable,
    /// No interface by that name.
    NotFound,
    /// An argument is out of range (an empty region, a range past its end, a
    /// datagram that is too large...).
    InvalidInput,
    /// Power was cut during a flash operation (see
    /// `SimFlash::cut_power_after_ops` and `SimFlash::cut_power_mid_page`).
    PowerLost,
}

impl crate::Error for SimError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::WouldBlock => ErrorKind::WouldBlock,
            Self::ConnectionRefused => ErrorKind::ConnectionRefused,
            Self::ConnectionReset => ErrorKind::ConnectionReset,
            Self::BrokenPipe => ErrorKind::BrokenPipe,
            Self::NotConnected => ErrorKind::NotConnected,
            Self::AddrInUse => ErrorKind::AddrInUse,
            Self::AddrNotAvailable | Self::HostUnreachable => ErrorKind::AddrNotAvailable,
            Self::NotFound => ErrorKind::NotFound,
            Self::InvalidInput => ErrorKind::InvalidInput,
            Self::PowerLost => ErrorKind::Other,
        }
    }
}

impl core::fmt::Display for SimError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let text = match self {
            Self::WouldBlock => "operation would block",
            Self::ConnectionRefused => "connection refused",
            Self::ConnectionReset => "connection reset by peer",
            Self::BrokenPipe => "broken pipe",
            Self::NotConnected => "not connected",
            Self::AddrInUse => "address in use",
            Self::AddrNotAvailable => "address not available",
            Self::HostUnreachable => "no route to host",
            Self::NotFound => "no such interface",
            Self::InvalidInput => "invalid argument",
            Self::PowerLost => "power lost during a flash write",
        };
        f.write_str(text)
    }
}

impl std::error::Error for SimError {}

/// The simulation's result type.
pub type SimResult<T> = core::result::Result<T, SimError>;
