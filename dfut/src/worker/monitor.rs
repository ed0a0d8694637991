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

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::exec::Handoff;
use crate::registry::Entry;
use crate::{Error, Result};

/// An inline task running longer than this is moved off its reader, and
/// its function never runs inline again.
pub(crate) const SLOW_INLINE: Duration = Duration::from_millis(2);

/// How often the watchdog looks at the inline runs.
const WATCH_EVERY: Duration = Duration::from_millis(2);

/// The monitor's runtime, started on first use.
pub(crate) fn handle() -> Result<tokio::runtime::Handle> {
    static HANDLE: OnceLock<std::result::Result<tokio::runtime::Handle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(start)
        .clone()
        .map_err(|e| Error::Process(format!("cannot start the monitor thread: {e}")))
}

fn start() -> std::result::Result<tokio::runtime::Handle, String> {
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
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("it did not start: {e}"))?
}

/// What one thread is running inline right now.
struct InlineRun {
    since: Instant,
    entry: &'static Entry,
    /// Moves the reader the task arrived on to a new task; taken once.
    handoff: Option<Handoff>,
}

/// One thread's current inline run, shared with the watchdog.
type RunSlot = Mutex<Option<InlineRun>>;

/// Every thread's slot; dead ones are pruned by the watchdog.
static SLOTS: Mutex<Vec<Weak<RunSlot>>> = Mutex::new(Vec::new());

thread_local! {
    static MINE: Arc<RunSlot> = {
        let slot = Arc::new(Mutex::new(None));
        lock(&SLOTS).push(Arc::downgrade(&slot));
        slot
    };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves its data consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks this thread as running a task of `entry` inline until the guard
/// drops; should it run past [`SLOW_INLINE`], the watchdog calls
/// `handoff` and marks the function as never to run inline again.
pub(crate) fn inline_run(entry: &'static Entry, handoff: Option<&Handoff>) -> InlineGuard {
    MINE.with(|slot| {
        *lock(slot) = Some(InlineRun {
            since: Instant::now(),
            entry,
            handoff: handoff.cloned(),
        });
    });
    InlineGuard(())
}

/// Ends an inline run when dropped.
pub(crate) struct InlineGuard(());

impl Drop for InlineGuard {
    fn drop(&mut self) {
        MINE.with(|slot| *lock(slot) = None);
    }
}

/// The watchdog: every [`WATCH_EVERY`], hands off the reader of any inline
/// run older than [`SLOW_INLINE`].
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
        for slot in slots {
            let handoff = {
                let mut run = lock(&slot);
                match run.as_mut() {
                    Some(r) if r.since.elapsed() > SLOW_INLINE => {
                        r.entry.mark_blocking();
                        r.handoff.take()
                    }
                    _ => None,
                }
            };
            if let Some(handoff) = handoff {
                tracing::debug!("an inline task runs long: moving its connection to a new reader");
                handoff();
            }
        }
    }
}
