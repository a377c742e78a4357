//! Driving futures in virtual time. [`SimWorld::block_on`] and
//! [`SimWorld::run_until`] poll one future (a test body, or `zip`s of several)
//! and [`SimWorld::run_executor`] runs the tasks of the daemon's own
//! [`Executor`]; whenever nothing is ready they jump the clock to the next
//! event. So a test that waits 30 virtual seconds takes microseconds, and
//! replays exactly.

use core::future::Future;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use std::sync::Arc;
use std::task::Wake;

use super::world::SimWorld;
use crate::exec::Executor;

/// Records that the driven future was woken. The world keeps one, so that
/// driving allocates nothing.
pub(super) struct Flag(AtomicBool);

impl Flag {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self(AtomicBool::new(true)))
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimStop {
    /// Every task finished.
    Finished,
    /// Virtual time reached the deadline; time stands at the deadline.
    DeadlineReached,
    /// Tasks wait but no packet is in flight and no timer is set, so they
    /// would wait for ever.
    Deadlock,
}

impl SimWorld {
    /// Runs `future` to completion, advancing virtual time whenever it waits.
    ///
    /// # Panics
    /// On a deadlock (see [`SimStop::Deadlock`]); the message names the seed.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        match self.drive(future, u64::MAX) {
            Ok(output) => output,
            Err(_) => panic!(
                "simulation deadlocked at {} ms (seed {})",
                self.now_ms(),
                self.seed()
            ),
        }
    }

    /// Runs `future` until it completes or virtual time would pass
    /// `deadline_ms`; then time stands at `deadline_ms` and `None` is returned.
    /// Use it for a relay that runs for ever: run it for a while, then check.
    pub fn run_until<F: Future>(&self, future: F, deadline_ms: u64) -> Option<F::Output> {
        self.drive(future, deadline_ms).ok()
    }

    /// Runs the executor's tasks until they all finish or virtual time would
    /// pass `deadline_ms` (`u64::MAX` for no deadline).
    pub fn run_executor(&self, executor: &mut Executor, deadline_ms: u64) -> SimStop {
        loop {
            executor.run_ready();
            if executor.task_count() == 0 {
                return SimStop::Finished;
            }
            if executor.has_ready() {
                continue;
            }
            if let Err(stop) = self.advance_within(deadline_ms) {
                return stop;
            }
        }
    }

    /// Advances to the next event if it is due by `deadline_ms`; otherwise
    /// moves to the deadline (if it is finite) and says why it stopped.
    fn advance_within(&self, deadline_ms: u64) -> Result<(), SimStop> {
        match self.next_event_ms() {
            Some(at_ms) if at_ms <= deadline_ms => {
                self.advance_to(at_ms);
                Ok(())
            }
            next => {
                if deadline_ms != u64::MAX {
                    self.advance_to(deadline_ms.max(self.now_ms()));
                }
                Err(match next {
                    Some(_) => SimStop::DeadlineReached,
                    None if deadline_ms == u64::MAX => SimStop::Deadlock,
                    None => SimStop::DeadlineReached,
                })
            }
        }
    }

    fn drive<F: Future>(&self, future: F, deadline_ms: u64) -> Result<F::Output, SimStop> {
        let mut future = pin!(future);
        let flag = self.with(|state| state.drive_flag.clone());
        flag.0.store(true, Ordering::Relaxed);
        let waker = Waker::from(flag.clone());
        let mut context = Context::from_waker(&waker);
        let outcome = loop {
            if flag.0.swap(false, Ordering::Relaxed) {
                if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
                    break Ok(output);
                }
                continue;
            }
            if let Err(stop) = self.advance_within(deadline_ms) {
                break Err(stop);
            }
        };
        // A drive nested in another may have taken the outer one's wake-up:
        // give it back, as a spurious poll is harmless and a lost one is not.
        flag.0.store(true, Ordering::Relaxed);
        outcome
    }
}
