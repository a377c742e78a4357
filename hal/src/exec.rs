//! A fixed-capacity, single-threaded task executor that never allocates after
//! its tasks are spawned.
//!
//! General-purpose executors queue woken tasks in growable queues; smol's
//! `async-executor` uses an unbounded `ConcurrentQueue` that allocates a block
//! every 31 wake-ups, and `async-io`'s reactor builds a fresh `Vec` of wakers
//! on every turn. Both break the relay's rule of zero allocations in steady
//! state, so the daemon runs on this instead: tasks live in a table sized at
//! start-up, a woken task sets one bit in a ready set, and a waker is a pointer
//! to a per-task record that lives as long as the process (cloning it is a
//! copy, waking it is one atomic OR).
//!
//! The executor only polls. Waiting for I/O or time is the job of the
//! platform's reactor (`linux::Reactor`, or the simulation's virtual clock),
//! which the driver calls when [`Executor::has_ready`] is false.

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

const BITS: usize = usize::BITS as usize;

/// The set of tasks that were woken, shared with their wakers.
struct ReadySet {
    words: Box<[AtomicUsize]>,
    any: AtomicBool,
}

/// What a waker points at: the ready set and the task's index.
struct WakerRecord {
    ready: &'static ReadySet,
    index: usize,
}

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// The task table.
pub struct Executor {
    tasks: Box<[Option<Task>]>,
    records: &'static [WakerRecord],
    ready: &'static ReadySet,
}

/// Returned by [`Executor::try_spawn`] when every slot is taken.
#[derive(Debug, PartialEq, Eq)]
pub struct TasksFull;

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_raw, wake_raw, wake_raw, drop_raw);

fn clone_raw(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake_raw(data: *const ()) {
    // SAFETY: `data` always points into the leaked, never-freed record table.
    let record = unsafe { &*(data as *const WakerRecord) };
    let word = &record.ready.words[record.index / BITS];
    word.fetch_or(1 << (record.index % BITS), Ordering::Release);
    record.ready.any.store(true, Ordering::Release);
}

fn drop_raw(_: *const ()) {}

impl Executor {
    /// Makes an executor for at most `capacity` tasks. The ready set and the
    /// waker records are leaked on purpose: wakers may be stored anywhere and
    /// must stay valid for the life of the process. Call once at start-up.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "an executor needs at least one slot");
        let words = (0..capacity.div_ceil(BITS)).map(|_| AtomicUsize::new(0));
        let ready: &'static ReadySet = Box::leak(Box::new(ReadySet {
            words: words.collect(),
            any: AtomicBool::new(false),
        }));
        let records: Vec<WakerRecord> = (0..capacity)
            .map(|index| WakerRecord { ready, index })
            .collect();
        Self {
            tasks: (0..capacity).map(|_| None).collect(),
            records: Box::leak(records.into_boxed_slice()),
            ready,
        }
    }

    /// Adds a task (allocates its box; start-up only) and marks it ready.
    pub fn try_spawn(
        &mut self,
        future: impl Future<Output = ()> + 'static,
    ) -> Result<usize, TasksFull> {
        let index = self
            .tasks
            .iter()
            .position(Option::is_none)
            .ok_or(TasksFull)?;
        self.tasks[index] = Some(Box::pin(future));
        self.waker(index).wake();
        Ok(index)
    }

    fn waker(&self, index: usize) -> Waker {
        let data = &self.records[index] as *const WakerRecord as *const ();
        // SAFETY: the vtable functions uphold the RawWaker contract; the data
        // pointer is 'static.
        unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
    }

    /// True if some task was woken since the last [`Executor::run_ready`].
    pub fn has_ready(&self) -> bool {
        self.ready.any.load(Ordering::Acquire)
    }

    /// Number of tasks still running.
    pub fn task_count(&self) -> usize {
        self.tasks.iter().filter(|task| task.is_some()).count()
    }

    /// Polls every woken task once, in index order. Tasks woken during the
    /// sweep are polled in the next call, so I/O gets a turn in between.
    /// Returns the number of polls.
    pub fn run_ready(&mut self) -> usize {
        if !self.ready.any.swap(false, Ordering::AcqRel) {
            return 0;
        }
        let mut polls = 0;
        for word_index in 0..self.ready.words.len() {
            let mut bits = self.ready.words[word_index].swap(0, Ordering::AcqRel);
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                self.poll_task(word_index * BITS + bit);
                polls += 1;
            }
        }
        polls
    }

    fn poll_task(&mut self, index: usize) {
        let waker = self.waker(index);
        let Some(task) = self.tasks[index].as_mut() else {
            return;
        };
        let mut context = Context::from_waker(&waker);
        if let Poll::Ready(()) = task.as_mut().poll(&mut context) {
            self.tasks[index] = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::rc::Rc;

    #[test]
    fn runs_tasks_to_completion() {
        let mut executor = Executor::new(3);
        let total = Rc::new(Cell::new(0));
        for step in 1..=3 {
            let total = total.clone();
            executor
                .try_spawn(async move { total.set(total.get() + step) })
                .unwrap();
        }
        assert_eq!(executor.try_spawn(async {}), Err(TasksFull));
        assert_eq!(executor.run_ready(), 3);
        assert_eq!(total.get(), 6);
        assert_eq!(executor.task_count(), 0);
        assert!(!executor.has_ready());
    }

    #[test]
    fn a_pending_task_runs_again_only_when_woken() {
        let mut executor = Executor::new(2);
        let stored: Rc<RefCell<Option<Waker>>> = Rc::default();
        let polls = Rc::new(Cell::new(0));
        let (stored_in, polls_in) = (stored.clone(), polls.clone());
        executor
            .try_spawn(core::future::poll_fn(move |context| {
                polls_in.set(polls_in.get() + 1);
                if polls_in.get() == 2 {
                    return Poll::Ready(());
                }
                *stored_in.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            }))
            .unwrap();
        executor.run_ready();
        assert_eq!(executor.run_ready(), 0);
        assert_eq!(polls.get(), 1);
        stored.borrow_mut().take().unwrap().wake();
        assert!(executor.has_ready());
        executor.run_ready();
        assert_eq!(polls.get(), 2);
        assert_eq!(executor.task_count(), 0);
    }
}
