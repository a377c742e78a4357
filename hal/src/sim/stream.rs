//! The TCP handles the relay holds: [`SimStream`] and [`SimListener`]. They
//! are thin: each call borrows the world and runs the matching `tcp_*` method
//! of the state (see the `tcp` module for the model).

use core::future::Future;
use core::net::SocketAddr;
use std::io::IoSlice;

use super::error::{SimError, SimResult};
use super::net::SimRegion;
use super::ready::{Condition, Readiness};
use super::slab::Key;
use super::tcp::{CLIENT, SERVER};
use super::world::SimWorld;
use crate::Region;

/// One side of a simulated TCP connection. Dropping it closes that side.
#[derive(Debug)]
pub struct SimStream {
    world: SimWorld,
    connection: Key,
    side: usize,
    open: bool,
}

impl SimStream {
    pub(super) fn new_client(world: SimWorld, connection: Key) -> Self {
        Self::new(world, connection, CLIENT)
    }

    fn new(world: SimWorld, connection: Key, side: usize) -> Self {
        Self {
            world,
            connection,
            side,
            open: true,
        }
    }

    pub(super) fn connection(&self) -> Key {
        self.connection
    }

    /// Closes with a reset instead of a FIN, like `SO_LINGER` 0: the peer's
    /// next read or write fails with `ConnectionReset`.
    pub fn abort(mut self) {
        self.open = false;
        let (connection, side) = (self.connection, self.side);
        self.world
            .with(|state| state.tcp_close(connection, side, true));
    }

    fn write_buffers(&mut self, buffers: &[IoSlice<'_>]) -> SimResult<usize> {
        let (connection, side) = (self.connection, self.side);
        self.world
            .with(|state| state.tcp_write(connection, side, buffers))
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        if self.open {
            let (connection, side) = (self.connection, self.side);
            self.world
                .with(|state| state.tcp_close(connection, side, false));
        }
    }
}

impl crate::TcpStream for SimStream {
    type Error = SimError;
    type Region = SimRegion;

    fn read(&mut self, buffer: &mut [u8]) -> SimResult<usize> {
        let (connection, side) = (self.connection, self.side);
        self.world
            .with(|state| state.tcp_read(connection, side, buffer))
    }

    fn write(&mut self, buffer: &[u8]) -> SimResult<usize> {
        self.write_buffers(&[IoSlice::new(buffer)])
    }

    fn write_vectored(&mut self, buffers: &[IoSlice<'_>]) -> SimResult<usize> {
        self.write_buffers(buffers)
    }

    fn send_region(
        &mut self,
        region: &SimRegion,
        offset: usize,
        length: usize,
    ) -> SimResult<usize> {
        let end = offset.checked_add(length).ok_or(SimError::InvalidInput)?;
        let bytes = region
            .as_slice()
            .get(offset..end)
            .ok_or(SimError::InvalidInput)?;
        self.write_buffers(&[IoSlice::new(bytes)])
    }

    fn set_send_buffer_bytes(&mut self, bytes: usize) -> SimResult<()> {
        let (connection, side) = (self.connection, self.side);
        self.world
            .with(|state| state.tcp_set_buffer_bytes(connection, side, bytes))
    }

    fn peer_addr(&self) -> SimResult<SocketAddr> {
        let (connection, side) = (self.connection, self.side);
        self.world
            .with(|state| state.tcp_peer_address(connection, side))
    }

    fn local_addr(&self) -> SimResult<SocketAddr> {
        let (connection, side) = (self.connection, self.side);
        self.world
            .with(|state| state.tcp_local_address(connection, side))
    }

    fn readable(&self) -> impl Future<Output = SimResult<()>> {
        let condition = Condition::StreamReadable {
            connection: self.connection,
            side: self.side,
        };
        Readiness::new(self.world.clone(), condition)
    }

    fn writable(&self) -> impl Future<Output = SimResult<()>> {
        let condition = Condition::StreamWritable {
            connection: self.connection,
            side: self.side,
        };
        Readiness::new(self.world.clone(), condition)
    }
}

/// A simulated listening socket. Dropping it resets the connections that
/// were never accepted.
#[derive(Debug)]
pub struct SimListener {
    world: SimWorld,
    listener: Key,
}

impl SimListener {
    pub(super) fn new(world: SimWorld, listener: Key) -> Self {
        Self { world, listener }
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let listener = self.listener;
        self.world.with(|state| state.tcp_close_listener(listener));
    }
}

impl crate::TcpListener for SimListener {
    type Error = SimError;
    type Stream = SimStream;

    fn accept(&self) -> SimResult<(SimStream, SocketAddr)> {
        let listener = self.listener;
        let (connection, peer) = self.world.with(|state| state.tcp_accept(listener))?;
        Ok((SimStream::new(self.world.clone(), connection, SERVER), peer))
    }

    fn readable(&self) -> impl Future<Output = SimResult<()>> {
        let condition = Condition::Accept {
            listener: self.listener,
        };
        Readiness::new(self.world.clone(), condition)
    }

    fn local_addr(&self) -> SimResult<SocketAddr> {
        let listener = self.listener;
        self.world
            .with(|state| state.tcp_listener_address(listener))
    }
}
