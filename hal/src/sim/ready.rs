//! Readiness futures: what `readable`/`writable` return for every simulated
//! socket. Each poll checks the condition in the world and, if it does not
//! hold, leaves its waker where the event that makes it hold will find it.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use super::error::SimResult;
use super::slab::Key;
use super::world::{SimWorld, State};

/// What a readiness future waits for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Condition {
    /// A stream side has bytes, end of stream, or an error to report.
    StreamReadable { connection: Key, side: usize },
    /// A stream side has room, or an error to report.
    StreamWritable { connection: Key, side: usize },
    /// A listener has a connection to accept.
    Accept { listener: Key },
    /// A UDP socket has a datagram.
    Datagram { socket: Key },
}

impl State {
    fn poll_condition(&mut self, condition: Condition, waker: &Waker) -> bool {
        match condition {
            Condition::StreamReadable { connection, side } => {
                self.tcp_poll_readable(connection, side, waker)
            }
            Condition::StreamWritable { connection, side } => {
                self.tcp_poll_writable(connection, side, waker)
            }
            Condition::Accept { listener } => self.tcp_poll_accept(listener, waker),
            Condition::Datagram { socket } => self.udp_poll_readable(socket, waker),
        }
    }
}

/// Resolves once its condition holds. The simulation never fails a wait:
/// errors are reported by the read or write that follows.
#[derive(Debug)]
#[must_use = "readiness does nothing unless awaited"]
pub(super) struct Readiness {
    world: SimWorld,
    condition: Condition,
}

impl Readiness {
    pub(super) fn new(world: SimWorld, condition: Condition) -> Self {
        Self { world, condition }
    }
}

impl Future for Readiness {
    type Output = SimResult<()>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<SimResult<()>> {
        let condition = self.condition;
        let ready = self
            .world
            .with(|state| state.poll_condition(condition, context.waker()));
        if ready {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}
