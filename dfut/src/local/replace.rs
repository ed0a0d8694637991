//! Replacing the worker processes of a local cluster that die.
//!
//! A thread of the runtime looks at each local worker process every
//! [`LOOK_EVERY`] and starts a new one, from the same [`Spec`], in the
//! place of one that has exited, as Ray's raylet starts a new worker
//! process for one that crashed. A worker that dies soon after it started
//! is replaced after a wait that doubles each time (up to [`MOST_WAIT`]),
//! so a program that cannot start, or a task that kills every worker it
//! runs on, costs at most one process start per [`MOST_WAIT`] per slot.
//! Tasks and objects lost with the dead process are reported and re-run as
//! before (`WorkerLost`, retries, lineage, `CrashLoop`); the replacement
//! is a new worker with a new identity.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{LocalWorker, Spec};

/// How often the thread looks for workers that have exited.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// A worker that lived at least this long is replaced at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// The first wait before replacing a worker that died young.
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest wait before a replacement.
const MOST_WAIT: Duration = Duration::from_secs(10);

/// The local workers, shared by the runtime and the replacing thread.
pub(crate) type Workers = Arc<Mutex<Vec<LocalWorker>>>;

/// The thread that replaces dead workers; stopped (and joined) on drop.
pub(crate) struct Replacer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One place in the cluster: how to start its worker, and when.
struct Slot {
    spec: Spec,
    started: Instant,
    /// The wait after the next early death.
    wait: Duration,
    /// When a dead worker is to be replaced.
    due: Option<Instant>,
}

impl Replacer {
    /// Starts the thread for `workers` (processes), the `i`-th started
    /// from `specs[i]`.
    pub(crate) fn start(workers: Workers, specs: Vec<Spec>) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let now = Instant::now();
        let slots = specs
            .into_iter()
            .map(|spec| Slot {
                spec,
                started: now,
                wait: Duration::ZERO,
                due: None,
            })
            .collect();
        let thread = std::thread::Builder::new()
            .name("dfut-replace".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || run(&workers, slots, &stop)
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Replacer {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        *crate::lock(flag) = true;
        wake.notify_all();
        // It finishes at most the start of one process first.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(workers: &Mutex<Vec<LocalWorker>>, mut slots: Vec<Slot>, stop: &(Mutex<bool>, Condvar)) {
    let (flag, wake) = stop;
    loop {
        {
            let stopped = crate::lock(flag);
            let (stopped, _) = wake
                .wait_timeout_while(stopped, LOOK_EVERY, |s| !*s)
                .unwrap_or_else(|p| p.into_inner());
            if *stopped {
                return;
            }
        }
        let dead = look(workers, &mut slots);
        // Dropped here, not under the lock: dropping reaps the process and
        // sweeps the shared memory it left.
        drop(dead);
    }
}

/// Notes workers that have exited (their places marked dead) and starts
/// new ones where due; returns the dead processes taken out.
fn look(workers: &Mutex<Vec<LocalWorker>>, slots: &mut [Slot]) -> Vec<LocalWorker> {
    let mut dead = Vec::new();
    let mut workers = crate::lock(workers);
    let now = Instant::now();
    for (worker, slot) in workers.iter_mut().zip(slots.iter_mut()) {
        if slot.due.is_none() {
            let Some(status) = worker.exited() else {
                continue;
            };
            slot.wait = if now.duration_since(slot.started) >= HEALTHY_AFTER {
                Duration::ZERO
            } else {
                (slot.wait * 2).clamp(FIRST_WAIT, MOST_WAIT)
            };
            slot.due = Some(now + slot.wait);
            tracing::warn!(
                pid = worker.pid(),
                "local worker exited ({status}); a new one starts in {:?}",
                slot.wait
            );
            // Reaped: its id may be reused, so it is no longer listed.
            dead.push(std::mem::replace(worker, LocalWorker::Dead));
        }
        if slot.due.is_some_and(|due| due <= now) {
            slot.started = now;
            match LocalWorker::spawn(&slot.spec) {
                Ok(new) => {
                    slot.due = None;
                    tracing::info!(
                        pid = new.pid(),
                        "started a local worker in place of a dead one"
                    );
                    *worker = new;
                }
                Err(e) => {
                    slot.wait = (slot.wait * 2).clamp(FIRST_WAIT, MOST_WAIT);
                    slot.due = Some(now + slot.wait);
                    tracing::warn!(
                        "cannot start a local worker: {e}; trying again in {:?}",
                        slot.wait
                    );
                }
            }
        }
    }
    dead
}
