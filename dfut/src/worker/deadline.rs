//! Task deadlines (`#[remote(timeout_ms = ..)]`, `Options::timeout`).
//!
//! An async task past its deadline is dropped at its next await. A sync
//! task cannot be stopped from outside: at its deadline the monitor thread
//! reports `TimedOut` to the owner, marks the task cancelled (so
//! [`cancelled`](super::cancelled) turns true for it), and lends the runner
//! a slot so the worker keeps its full capacity while the abandoned thread
//! runs on. When the task returns, its result is discarded and the lent
//! slot is taken back.
//!
//! A low-priority task holds no slot (it runs on the background lane) and
//! is lent none; it counts as abandoned all the same.
//!
//! Bound: at most [`MAX_ABANDONED`] abandoned threads get a lent slot;
//! past that the worker reports itself unhealthy (owners place nothing
//! there) until some return.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dfut_net::Link;
use dfut_net::wire::{Failure, FailureKind, ObjectId};

use super::Shared;
use crate::lock;

/// Abandoned sync threads a worker lends slots for; past this it is
/// unhealthy.
pub(crate) const MAX_ABANDONED: u32 = 16;

/// The failure a task past its deadline reports.
pub(crate) fn timed_out(timeout_ms: u32) -> Failure {
    Failure {
        kind: FailureKind::TimedOut,
        message: timeout_ms.to_string(),
        location: String::new(),
        causes: Vec::new(),
        backtrace: String::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// Failed at its deadline; `lent`: a slot was lent for its thread.
    TimedOut {
        lent: bool,
    },
    Returned,
}

/// The deadline of one running sync task.
pub(crate) struct Deadline {
    state: Arc<Mutex<State>>,
    timer: tokio::task::AbortHandle,
}

impl Deadline {
    /// Starts the clock of sync task `id`, or `None` without a deadline
    /// (or, should the monitor thread be unavailable, with a warning).
    /// A task that `holds_slot` has a slot lent in its place once
    /// abandoned; a background task holds none, and is lent none.
    pub fn arm(
        shared: &Arc<Shared>,
        reply: &Link,
        id: ObjectId,
        inline_max: u32,
        timeout_ms: u32,
        holds_slot: bool,
    ) -> Option<Self> {
        if timeout_ms == 0 {
            return None;
        }
        let monitor = match super::monitor::handle() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("task {id} runs without its deadline: {e}");
                return None;
            }
        };
        let state = Arc::new(Mutex::new(State::Running));
        let (shared, reply, st) = (shared.clone(), reply.clone(), state.clone());
        let start = Instant::now();
        let timer = monitor.spawn(async move {
            tokio::time::sleep(Duration::from_millis(u64::from(timeout_ms))).await;
            let (lent, abandoned) = {
                let mut s = lock(&st);
                if *s != State::Running {
                    return;
                }
                let abandoned = shared.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
                let lent = holds_slot && abandoned <= MAX_ABANDONED;
                *s = State::TimedOut { lent };
                (lent, abandoned)
            };
            if lent {
                shared.runner.lend_slot();
            } else if abandoned > MAX_ABANDONED {
                tracing::warn!(
                    "{MAX_ABANDONED} tasks run past their deadlines: this worker is unhealthy \
                     until they return"
                );
            }
            let f = timed_out(timeout_ms);
            super::exec::finish(&shared, &reply, id, inline_max, Err(f), start.elapsed());
        });
        Some(Self {
            state,
            timer: timer.abort_handle(),
        })
    }

    /// A handle for the task itself to see whether it timed out.
    pub fn watch(&self) -> DeadlineWatch {
        DeadlineWatch(self.state.clone())
    }

    /// The task returned: whether its result is still wanted (`false`: it
    /// was reported as timed out; its lent slot is taken back now).
    pub fn disarm(self, shared: &Shared) -> bool {
        self.timer.abort();
        let before = std::mem::replace(&mut *lock(&self.state), State::Returned);
        match before {
            State::Running | State::Returned => true,
            State::TimedOut { lent } => {
                shared.abandoned.fetch_sub(1, Ordering::Relaxed);
                if lent {
                    shared.runner.reclaim_slot();
                }
                false
            }
        }
    }
}

/// Whether a running task's deadline has passed.
#[derive(Clone)]
pub(crate) struct DeadlineWatch(Arc<Mutex<State>>);

impl DeadlineWatch {
    pub fn passed(&self) -> bool {
        matches!(*lock(&self.0), State::TimedOut { .. })
    }
}
