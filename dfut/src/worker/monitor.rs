//! The monitor thread: one OS thread per process, with its own small
//! runtime, for what must keep time whatever the tasks do.
//!
//! It carries each worker's heartbeats (on a connection and endpoint of
//! their own), task deadlines, and the inline watchdog. Tasks run on the
//! worker's runtime and slot threads; a task that blocks one of those,
//! however long, never delays a heartbeat, and the watchdog moves a
//! connection's reader away from a task that runs long inline.
//!
//! Bounds: one thread per process; the watched inline runs are one per
//! thread that ever ran a task inline (a runtime thread), pruned when the
//! thread exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::exec::Handoff;
use crate::{Cause, Error, Result, lock};

/// An inline task running longer than this is moved off its reader, and
/// its function never runs inline again.
pub(crate) const SLOW_INLINE: Duration = Duration::from_millis(2);

/// How often the watchdog looks at the inline runs. Each look wakes the
/// monitor thread: at 2 ms that cost W1 a measurable share of its
/// throughput on two cores, so a slow inline task holds its connection
/// for at most about 12 ms.
const WATCH_EVERY: Duration = Duration::from_millis(10);

/// The monitor's runtime, started on first use.
pub(crate) fn handle() -> Result<tokio::runtime::Handle> {
    static HANDLE: OnceLock<std::result::Result<tokio::runtime::Handle, Cause>> = OnceLock::new();
    HANDLE
        .get_or_init(start)
        .clone()
        .map_err(|source| Error::Io {
            context: "cannot start the monitor thread".into(),
            source,
        })
}

fn start() -> std::result::Result<tokio::runtime::Handle, Cause> {
    // The runtime is built (and, on failure, dropped) on its own thread:
    // dropping a runtime inside async code would panic.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("dfut-monitor".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let _ = tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(watch_inline_runs());
                }
                Err(e) => {
                    let _ = tx.send(Err(Cause::new(e)));
                }
            }
        })
        .map_err(Cause::new)?;
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|e| Cause::context("it did not start", e))?
}

/// One runtime thread's inline state, shared with the watchdog.
struct RunSlot {
    /// When the current inline run started, in nanoseconds since [`epoch`]
    /// (never 0); 0 while none runs.
    since: AtomicU64,
    /// The hand-off of the connection whose batch this thread serves.
    handoff: Mutex<Option<Handoff>>,
}

/// Every thread's slot; dead ones are pruned by the watchdog.
static SLOTS: Mutex<Vec<Weak<RunSlot>>> = Mutex::new(Vec::new());

thread_local! {
    static MINE: Arc<RunSlot> = {
        let slot = Arc::new(RunSlot {
            since: AtomicU64::new(0),
            handoff: Mutex::new(None),
        });
        lock(&SLOTS).push(Arc::downgrade(&slot));
        slot
    };
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// This thread serves a batch of the connection that `handoff` moves,
/// until the guard drops.
pub(crate) fn serving(handoff: &Handoff) -> ServingGuard {
    MINE.with(|slot| *lock(&slot.handoff) = Some(handoff.clone()));
    ServingGuard(())
}

/// Ends [`serving`] when dropped.
pub(crate) struct ServingGuard(());

impl Drop for ServingGuard {
    fn drop(&mut self) {
        MINE.with(|slot| *lock(&slot.handoff) = None);
    }
}

/// Marks this thread as running a task inline since `start`, until the
/// guard drops: should it run past [`SLOW_INLINE`], the watchdog calls the
/// hand-off of the batch being served (see [`serving`]). Two atomic
/// stores: this is on every inline task's path.
pub(crate) fn inline_run(start: Instant) -> InlineGuard {
    MINE.with(|slot| slot.since.store(nanos(start), Ordering::Release));
    InlineGuard(())
}

/// Ends an inline run when dropped.
pub(crate) struct InlineGuard(());

impl Drop for InlineGuard {
    fn drop(&mut self) {
        MINE.with(|slot| slot.since.store(0, Ordering::Release));
    }
}

/// The watchdog: every [`WATCH_EVERY`], hands off the connection of any
/// inline run older than [`SLOW_INLINE`].
async fn watch_inline_runs() {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let slots: Vec<Arc<RunSlot>> = {
            let mut all = lock(&SLOTS);
            all.retain(|w| w.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        let now = nanos(Instant::now());
        let slow = u64::try_from(SLOW_INLINE.as_nanos()).unwrap_or(u64::MAX);
        for slot in slots {
            let since = slot.since.load(Ordering::Acquire);
            if since == 0 || now.saturating_sub(since) <= slow {
                continue;
            }
            let handoff = {
                let mut h = lock(&slot.handoff);
                // Still the same run (it started at a unique instant): the
                // batch it belongs to cannot have changed, since ending a
                // batch takes this lock.
                if slot.since.load(Ordering::Acquire) == since {
                    h.take()
                } else {
                    None
                }
            };
            if let Some(handoff) = handoff {
                tracing::debug!("an inline task runs long: moving its connection to a new reader");
                handoff();
            }
        }
    }
}
