//! The virtual clock: [`SimClock`] reads the world's time, and [`Sleep`]
//! resolves once the test has advanced the world to its deadline.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::slab::Key;
use super::world::SimWorld;

/// The world's clock, as the relay sees it.
#[derive(Clone, Debug)]
pub struct SimClock {
    world: SimWorld,
}

impl SimClock {
    pub(super) fn new(world: SimWorld) -> Self {
        Self { world }
    }

    /// Resolves `duration_ms` after now.
    pub fn sleep_ms(&self, duration_ms: u64) -> Sleep {
        let deadline_ms = self.world.now_ms().saturating_add(duration_ms);
        Sleep::new(self.world.clone(), deadline_ms)
    }
}

impl crate::Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.world.now_ms()
    }

    fn sleep_until(&self, deadline_ms: u64) -> impl Future<Output = ()> {
        Sleep::new(self.world.clone(), deadline_ms)
    }
}

/// A future that resolves when virtual time reaches its deadline. Sleeps
/// with the same deadline wake in the order they were first polled.
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    world: SimWorld,
    deadline_ms: u64,
    timer: Option<Key>,
}

impl Sleep {
    fn new(world: SimWorld, deadline_ms: u64) -> Self {
        Self {
            world,
            deadline_ms,
            timer: None,
        }
    }

    /// The virtual time this sleep resolves at.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let deadline_ms = this.deadline_ms;
        let timer = &mut this.timer;
        this.world.with(|state| {
            if state.now_ms >= deadline_ms {
                if let Some(key) = timer.take() {
                    state.timers.cancel(key);
                }
                return Poll::Ready(());
            }
            match *timer {
                Some(key) => state.timers.set_waker(key, context.waker()),
                None => *timer = Some(state.timers.insert(deadline_ms, context.waker())),
            }
            Poll::Pending
        })
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.timer.take() {
            self.world.with(|state| state.timers.cancel(key));
        }
    }
}
