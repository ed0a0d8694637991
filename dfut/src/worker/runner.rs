//! A worker's task slots: sync tasks whose arguments are ready wait here for
//! a slot, and a task blocked in a nested wait runs queued tasks itself
//! instead of holding a thread idle (helping, as work-stealing schedulers
//! do).
//!
//! **Invariant:** a slot is held only by a thread that is running a task.
//! A thread blocked in a nested `get()` either runs other queued tasks on
//! its own stack, at most [`HELP_DEPTH`] deep, or gives its slot back and
//! parks. So a queued task always finds a slot or a helping thread, and
//! nested calls cannot deadlock a worker at any depth: every wait is for a
//! task created after the waiter (a descendant), so the tasks stacked on a
//! helping thread finish before the one beneath them needs to resume.
//!
//! Two priorities: low-priority tasks (background work) never take a slot.
//! They wait in a queue of their own and run on a background lane: threads
//! of their own, lowered (on Linux) to the operating system's lowest
//! scheduling priority, nice 19, for their whole life. The lane starts a
//! task only while no normal task waits, a slot is idle, and fewer than
//! its width (the slots less one, at least one) run. A normal task
//! arriving while background work runs takes a free slot at once, and the
//! kernel gives its thread the CPU ahead of the background thread. A
//! background task blocked in a nested wait runs queued background tasks
//! on its own stack (never normal ones: they would run at the lowest
//! priority), up to [`HELP_DEPTH`] deep, then parks out of the lane's
//! count, so its own children can run; on waking it counts again, past
//! the width for a moment if need be. Threads a background task starts
//! inherit its priority: the worker starts its own thread pools from
//! normal threads (see [`on_lane`]).
//!
//! Bounds: the ready queues hold what owners sent (each owner keeps at most
//! its admission window in flight here, beyond which tasks wait at the
//! owner); threads are the slots plus one per [`HELP_DEPTH`] blocked tasks
//! (a thread only parks without helping at that depth), under the
//! runtime's cap on blocking threads, plus the background lane's threads:
//! its width plus one per [`HELP_DEPTH`] parked background tasks, at most
//! [`MAX_LANE_THREADS`] (past that, background work waits for a lane
//! thread to end). This module runs closures; it knows
//! nothing of tasks, links or the store.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

/// How many tasks a blocked thread stacks on itself before it only waits.
/// Each level costs one task's stack frames; worker threads get
/// [`STACK_BYTES`] of stack.
pub(crate) const HELP_DEPTH: u32 = 16;

/// Stack size of worker threads, room for [`HELP_DEPTH`] nested tasks.
pub(crate) const STACK_BYTES: usize = 32 << 20;

/// The most background-lane threads alive at once, parked ones included
/// (the cap tokio puts on its blocking pool).
pub(crate) const MAX_LANE_THREADS: u32 = 512;

/// A task ready to run, as a closure.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Starts a thread (from the runtime's blocking pool) running a closure.
type Spawn = Box<dyn Fn(Job) + Send + Sync>;

/// The slots of one worker and the tasks waiting for them.
pub(crate) struct Runner {
    state: Mutex<State>,
    spawn: Spawn,
    /// Starts a background-lane thread (see [`Runner::new`]).
    spawn_low: SpawnLow,
}

/// Starts a background-lane thread running a closure, or says why not.
type SpawnLow = Box<dyn Fn(Job) -> std::io::Result<()> + Send + Sync>;

struct State {
    /// Tasks waiting for a slot, oldest first.
    ready: VecDeque<Job>,
    /// Low-priority tasks waiting for the background lane, oldest first.
    low: VecDeque<Job>,
    /// Tasks needing several slots, oldest first, with how many. While one
    /// waits, freed slots go to it before any single-slot task.
    wide: VecDeque<(u32, Job)>,
    /// Background-lane threads running a task (not parked in a wait).
    low_running: u32,
    /// Background-lane threads alive, parked ones included.
    low_threads: u32,
    /// The background lane's width: at most this many run at once.
    low_slots: u32,
    /// Slots no thread holds.
    free: u32,
    /// Slots lent for tasks abandoned at their deadline that have since
    /// returned: the next slots given back are retired instead of freed.
    owed: u32,
    /// Parked threads that will run a queued task if handed one.
    helpers: Vec<Arc<Waiter>>,
    /// Threads whose wait ended, waiting for a slot to resume: served
    /// before any queued task, since they are older work.
    resuming: VecDeque<Arc<Waiter>>,
}

impl State {
    /// Whether the background lane may start a low-priority task now: none
    /// waits, no normal task waits, a slot is idle, the lane has room.
    fn low_may_start(&self) -> bool {
        !self.low.is_empty()
            && self.ready.is_empty()
            && self.resuming.is_empty()
            && self.wide.is_empty()
            && self.free > 0
            && self.low_running < self.low_slots
    }

    /// Whether a new background-lane thread may start.
    fn lane_has_room(&self) -> bool {
        self.low_may_start() && self.low_threads < MAX_LANE_THREADS
    }

    /// A slot comes back: freed, or retired if one is owed.
    fn release(&mut self) {
        if self.owed > 0 {
            self.owed -= 1;
        } else {
            self.free += 1;
        }
    }
}

/// A parked thread and what it was handed.
struct Waiter {
    thread: Thread,
    notified: AtomicBool,
    gift: Mutex<Option<Gift>>,
}

enum Gift {
    /// A slot, and a task to run in it.
    Job(Job),
    /// A slot to resume in.
    Slot,
}

impl Wake for Waiter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notified.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl Waiter {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            thread: std::thread::current(),
            notified: AtomicBool::new(false),
            gift: Mutex::new(None),
        })
    }

    fn give(&self, gift: Gift) {
        *self.gift.lock().unwrap_or_else(|p| p.into_inner()) = Some(gift);
        self.notified.store(true, Ordering::Release);
        self.thread.unpark();
    }

    fn take_gift(&self) -> Option<Gift> {
        self.gift.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Parks until woken or handed something.
    fn park(&self) {
        while !self.notified.swap(false, Ordering::AcqRel) {
            std::thread::park();
        }
    }
}

thread_local! {
    /// How many tasks are stacked on this thread (0 outside tasks).
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Whether this thread is a background-lane thread.
    static LOW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Slots held by the task running on top of this thread's stack.
    static WIDTH: std::cell::Cell<u32> = const { std::cell::Cell::new(1) };
}

impl Runner {
    /// A runner with `slots` slots whose threads are started by `spawn`
    /// (the runtime's blocking pool), and whose background lane's threads
    /// are started by `spawn_low` (threads of their own, since a lowered
    /// priority cannot be raised again without privilege; see
    /// [`background_thread`]).
    pub fn new(
        slots: u32,
        spawn: impl Fn(Job) + Send + Sync + 'static,
        spawn_low: impl Fn(Job) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                low: VecDeque::new(),
                wide: VecDeque::new(),
                low_running: 0,
                low_threads: 0,
                low_slots: if slots > 1 { slots - 1 } else { 1 },
                free: slots.max(1),
                owed: 0,
                helpers: Vec::new(),
                resuming: VecDeque::new(),
            }),
            spawn: Box::new(spawn),
            spawn_low: Box::new(spawn_low),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the counts consistent before
        // anything that could panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a task; it runs as soon as a slot or a helper takes it.
    pub fn submit(self: &Arc<Self>, job: Job) {
        let mut st = self.lock();
        st.ready.push_back(job);
        self.dispatch(st);
    }

    /// Queues a task that holds `slots` slots while it runs (several CPUs).
    /// Freed slots are kept for it, ahead of single-slot tasks, until it
    /// has them all; it then runs on a thread of its own. `slots` must not
    /// exceed this runner's slots (the caller checks), or it never runs.
    pub fn submit_wide(self: &Arc<Self>, slots: u32, job: Job) {
        if slots <= 1 {
            return self.submit(job);
        }
        let mut st = self.lock();
        st.wide.push_back((slots, job));
        self.dispatch(st);
    }

    /// Queues a low-priority task: it runs on the background lane once no
    /// normal task waits and a slot is idle, and never takes a slot.
    pub fn submit_low(self: &Arc<Self>, job: Job) {
        let mut st = self.lock();
        st.low.push_back(job);
        self.dispatch(st);
    }

    /// Takes a free slot now, if one is free and nothing is queued for it.
    pub fn try_take_slot(&self) -> bool {
        let mut st = self.lock();
        if st.free > 0 && st.ready.is_empty() && st.resuming.is_empty() && st.wide.is_empty() {
            st.free -= 1;
            true
        } else {
            false
        }
    }

    /// Gives back a slot taken with [`Runner::try_take_slot`].
    pub fn give_back_slot(self: &Arc<Self>) {
        let mut st = self.lock();
        st.release();
        self.dispatch(st);
    }

    /// Adds a slot while a task abandoned at its deadline still runs on
    /// the slot it holds: the others can go on at once.
    pub fn lend_slot(self: &Arc<Self>) {
        let mut st = self.lock();
        st.free += 1;
        self.dispatch(st);
    }

    /// The abandoned task of a [`lend_slot`](Self::lend_slot) returned:
    /// takes the lent slot back (now if free, else when one is given back).
    pub fn reclaim_slot(&self) {
        let mut st = self.lock();
        if st.free > 0 {
            st.free -= 1;
        } else {
            st.owed += 1;
        }
    }

    /// Tasks waiting for a slot.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.lock().ready.len()
    }

    /// Hands free slots to resuming threads, then queued tasks to helpers,
    /// then to new threads; then starts background work if a slot is still
    /// idle.
    fn dispatch(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        while st.free > 0 {
            if let Some(w) = st.resuming.pop_front() {
                st.free -= 1;
                w.give(Gift::Slot);
                continue;
            }
            if let Some(&(slots, _)) = st.wide.front() {
                if st.free < slots {
                    // Keep the free slots for it.
                    break;
                }
                if let Some((slots, job)) = st.wide.pop_front() {
                    st.free -= slots;
                    let runner = self.clone();
                    (self.spawn)(Box::new(move || runner.run_wide(slots, job)));
                }
                continue;
            }
            let Some(job) = st.ready.pop_front() else {
                break;
            };
            st.free -= 1;
            match st.helpers.pop() {
                Some(helper) => helper.give(Gift::Job(job)),
                None => {
                    let runner = self.clone();
                    (self.spawn)(Box::new(move || runner.run_from(job)));
                }
            }
        }
        // Background threads are started outside the lock.
        let mut start = Vec::new();
        while st.lane_has_room() {
            let Some(job) = st.low.pop_front() else {
                break;
            };
            st.low_running += 1;
            st.low_threads += 1;
            start.push(job);
        }
        drop(st);
        for job in start {
            self.start_lane_thread(job);
        }
    }

    /// Starts a background-lane thread with `job` (counted by the caller).
    /// Should no thread start, the job runs on a thread of the normal pool
    /// instead, as background work still (no slot, lane counts), at the
    /// pool's priority: late and louder, never lost.
    fn start_lane_thread(self: &Arc<Self>, job: Job) {
        // Kept here, so a thread that cannot start does not take it.
        let slot = Arc::new(Mutex::new(Some(job)));
        let (runner, taken) = (self.clone(), slot.clone());
        let started = (self.spawn_low)(Box::new(move || {
            let job = taken.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(job) = job {
                runner.run_low_from(job);
            }
        }));
        if let Err(e) = started {
            let job = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(job) = job {
                tracing::warn!(
                    "no background thread ({e}): background task runs at normal priority"
                );
                let runner = self.clone();
                (self.spawn)(Box::new(move || runner.run_low_from(job)));
            }
        }
    }

    /// The body of a thread holding a slot: runs `first`, then queued tasks
    /// until none is left, then gives the slot back.
    fn run_from(self: Arc<Self>, first: Job) {
        let mut job = first;
        loop {
            run_job(job);
            let mut st = self.lock();
            if st.resuming.is_empty()
                && st.wide.is_empty()
                && let Some(next) = st.ready.pop_front()
            {
                job = next;
                continue;
            }
            st.release();
            self.dispatch(st);
            return;
        }
    }

    /// The body of a thread holding `slots` slots for one task: runs it,
    /// then gives them all back. While the task waits in a nested call it
    /// lends all its slots (see [`Runner::wait_helping`]).
    fn run_wide(self: Arc<Self>, slots: u32, job: Job) {
        run_job_as(slots, job);
        let mut st = self.lock();
        for _ in 0..slots {
            st.release();
        }
        self.dispatch(st);
    }

    /// The body of a background-lane thread: runs `first`, then queued
    /// low-priority tasks while the lane may go on, then leaves it.
    fn run_low_from(self: Arc<Self>, first: Job) {
        LOW.with(|l| l.set(true));
        let mut job = first;
        loop {
            run_job(job);
            let mut st = self.lock();
            debug_assert!(st.low_running > 0, "a lane thread ran uncounted");
            st.low_running = st.low_running.saturating_sub(1);
            if st.low_may_start()
                && let Some(next) = st.low.pop_front()
            {
                st.low_running += 1;
                job = next;
                continue;
            }
            st.low_threads = st.low_threads.saturating_sub(1);
            // (A fallback run on a pool thread leaves it a normal thread.)
            LOW.with(|l| l.set(false));
            self.dispatch(st);
            return;
        }
    }

    /// Waits for `fut` on a thread that holds a slot (inside a task),
    /// running queued tasks meanwhile. `blocked(true)` is called when the
    /// wait does not end at once, `blocked(false)` when it ends. On a
    /// background-lane thread it only waits, out of the lane's count.
    pub fn wait_helping<F: Future>(
        self: &Arc<Self>,
        fut: F,
        mut blocked: impl FnMut(bool),
    ) -> F::Output {
        let waiter = Waiter::new();
        let waker = Waker::from(waiter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        if LOW.with(std::cell::Cell::get) {
            return self.wait_in_lane(&waiter, &mut cx, fut, blocked);
        }
        let depth = DEPTH.with(std::cell::Cell::get);
        let mut holding = true;
        let mut announced = false;
        // A task holding several slots lends all but one while it waits,
        // so its children (or another wide task) can run, and takes them
        // back when the wait ends, even if that briefly puts more tasks
        // than slots to work (as Ray does for a task blocked in a get).
        let mut lent = LentSlots {
            runner: self,
            extra: 0,
        };
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                self.resume(&waiter, holding);
                drop(lent);
                if announced {
                    blocked(false);
                }
                return out;
            }
            if !announced {
                announced = true;
                blocked(true);
                let extra = WIDTH.with(std::cell::Cell::get).saturating_sub(1);
                if extra > 0 {
                    let mut st = self.lock();
                    for _ in 0..extra {
                        st.release();
                    }
                    lent.extra = extra;
                    self.dispatch(st);
                }
            }
            let mut st = self.lock();
            if depth < HELP_DEPTH {
                if !holding
                    && st.free > 0
                    && st.resuming.is_empty()
                    && st.wide.is_empty()
                    && !st.ready.is_empty()
                {
                    st.free -= 1;
                    holding = true;
                }
                if holding && let Some(job) = st.ready.pop_back() {
                    // Newest first: most likely a child of the waiting task.
                    drop(st);
                    run_job(job);
                    continue;
                }
                // Not listed now: a waiter is a helper only while parked.
                st.helpers.push(waiter.clone());
            }
            if holding {
                holding = false;
                st.release();
            }
            self.dispatch(st);
            waiter.park();
            // Leave the helpers and take any gift under the lock: gifts are
            // handed only under it, to listed helpers, so none can follow.
            let gift = {
                let mut st = self.lock();
                st.helpers.retain(|w| !Arc::ptr_eq(w, &waiter));
                waiter.take_gift()
            };
            if let Some(gift) = gift {
                holding = true;
                if let Gift::Job(job) = gift {
                    run_job(job);
                }
            }
        }
    }

    /// [`Runner::wait_helping`] on a background-lane thread: runs queued
    /// background tasks on this stack while `fut` is pending (up to
    /// [`HELP_DEPTH`] deep), else parks out of the lane's count (so the
    /// lane can run this task's children) and counts again on waking, even
    /// past the lane's width for a moment (the thread exists already).
    fn wait_in_lane<F: Future>(
        self: &Arc<Self>,
        waiter: &Waiter,
        cx: &mut Context<'_>,
        mut fut: std::pin::Pin<&mut F>,
        mut blocked: impl FnMut(bool),
    ) -> F::Output {
        /// Counts a parked lane thread back in however its wait ends (a
        /// poll may panic; the task's own code catches that).
        struct CountedOut<'a>(&'a Runner);
        impl Drop for CountedOut<'_> {
            fn drop(&mut self) {
                self.0.lock().low_running += 1;
            }
        }
        let depth = DEPTH.with(std::cell::Cell::get);
        let mut announced = false;
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                if announced {
                    blocked(false);
                }
                return out;
            }
            if !announced {
                announced = true;
                blocked(true);
            }
            let mut st = self.lock();
            if depth < HELP_DEPTH
                && st.ready.is_empty()
                && let Some(job) = st.low.pop_front()
            {
                // Still counted as running: it runs a child on this stack.
                drop(st);
                run_job(job);
                continue;
            }
            st.low_running = st.low_running.saturating_sub(1);
            self.dispatch(st);
            let _back = CountedOut(self);
            waiter.park();
        }
    }

    /// Ends a wait: leaves the helpers and holds a slot again.
    fn resume(self: &Arc<Self>, waiter: &Arc<Waiter>, holding: bool) {
        let mut st = self.lock();
        st.helpers.retain(|w| !Arc::ptr_eq(w, waiter));
        let mut holding = holding;
        match waiter.take_gift() {
            // Handed a task as we finished: put it back, keep its slot.
            Some(Gift::Job(job)) => {
                st.ready.push_front(job);
                if holding {
                    st.release();
                }
                holding = true;
            }
            Some(Gift::Slot) => holding = true,
            None => {}
        }
        if holding {
            self.dispatch(st);
            return;
        }
        if st.free > 0 {
            st.free -= 1;
            return;
        }
        st.resuming.push_back(waiter.clone());
        drop(st);
        loop {
            waiter.park();
            if waiter.take_gift().is_some() {
                return;
            }
        }
    }
}

/// Starts a background-lane thread running `job`: [`STACK_BYTES`] of
/// stack, inside the runtime of `rt` (as the blocking pool's threads are),
/// at the lowest scheduling priority for its whole life.
pub(crate) fn background_thread(rt: tokio::runtime::Handle, job: Job) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("dfut-background".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            lower_priority();
            let _rt = rt.enter();
            job();
        })
        .map(drop)
}

/// Whether this thread is a background-lane thread: threads it starts
/// inherit its lowest priority, so the worker starts its own threads
/// (blocking-pool threads, say) from elsewhere when this is true.
pub(crate) fn on_lane() -> bool {
    LOW.with(std::cell::Cell::get)
}

/// Runs `f` on `rt`'s blocking pool. From a background-lane thread it is
/// handed to the runtime first: a pool thread started from here would
/// keep its lowest priority.
pub(crate) fn spawn_blocking(rt: &tokio::runtime::Handle, f: impl FnOnce() + Send + 'static) {
    if on_lane() {
        let pool = rt.clone();
        rt.spawn(async move { drop(pool.spawn_blocking(f)) });
    } else {
        rt.spawn_blocking(f);
    }
}

/// Lowers the calling thread to nice 19, the lowest priority the kernel's
/// fair scheduler gives (a nice-0 thread gets about 70 times its share of
/// a contended CPU). Elsewhere than Linux, where nice is per process, it
/// does nothing: background threads there run at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority reads its
        // arguments only. On Linux the nice value belongs to the thread
        // named by its id, so this thread alone is lowered.
        let done = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
        };
        if done != 0 {
            tracing::debug!(
                "background thread keeps its priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Runs one task one level deeper on this thread. A panic is contained:
/// the task's own code catches its panics; anything else must not unbalance
/// the slot counts.
fn run_job(job: Job) {
    run_job_as(1, job);
}

/// Runs `job` as a task holding `width` slots.
fn run_job_as(width: u32, job: Job) {
    let depth = DEPTH.with(|d| d.replace(d.get() + 1));
    let outer = WIDTH.with(|w| w.replace(width));
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    WIDTH.with(|w| w.set(outer));
    DEPTH.with(|d| d.set(depth));
}

/// Slots a wide task lent while it waits: taken back when dropped (now if
/// free, else from the next ones given back), however the wait ends.
struct LentSlots<'a> {
    runner: &'a Runner,
    extra: u32,
}

impl Drop for LentSlots<'_> {
    fn drop(&mut self) {
        if self.extra == 0 {
            return;
        }
        let mut st = self.runner.lock();
        for _ in 0..self.extra {
            if st.free > 0 {
                st.free -= 1;
            } else {
                st.owed += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn runner(slots: u32) -> Arc<Runner> {
        Runner::new(
            slots,
            |f| {
                std::thread::Builder::new()
                    .stack_size(STACK_BYTES)
                    .spawn(f)
                    .unwrap();
            },
            |f| {
                std::thread::Builder::new()
                    .stack_size(STACK_BYTES)
                    .spawn(move || {
                        lower_priority();
                        f();
                    })
                    .map(drop)
            },
        )
    }

    /// A future that is ready once `flag` is set, waking through a channel
    /// of wakers (a stand-in for a remote result).
    struct Flag(Arc<(AtomicBool, Mutex<Vec<Waker>>)>);

    impl Flag {
        fn set(&self) {
            self.0.0.store(true, Ordering::Release);
            for w in self.0.1.lock().unwrap().drain(..) {
                w.wake();
            }
        }
    }

    impl Future for Flag {
        type Output = ();
        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0.0.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.0.1.lock().unwrap().push(cx.waker().clone());
            if self.0.0.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    fn flag() -> Flag {
        Flag(Arc::new((AtomicBool::new(false), Mutex::new(Vec::new()))))
    }

    /// Recursive fan-out where each task waits for its children: with one
    /// slot this only finishes if blocked tasks help or give their slot back.
    fn tree(r: Arc<Runner>, depth: u32, done: mpsc::Sender<u32>) {
        if depth == 0 {
            done.send(1).unwrap();
            return;
        }
        let (tx, rx) = mpsc::channel();
        let flags: Vec<Flag> = (0..2).map(|_| flag()).collect();
        for f in &flags {
            let f = Flag(f.0.clone());
            let (r2, tx) = (r.clone(), tx.clone());
            r.submit(Box::new(move || {
                tree(r2, depth - 1, tx);
                f.set();
            }));
        }
        for f in flags {
            r.wait_helping(f, |_| {});
        }
        drop(tx);
        done.send(rx.iter().sum()).unwrap();
    }

    #[test]
    fn nested_waits_on_one_slot_finish() {
        let r = runner(1);
        let (tx, rx) = mpsc::channel();
        let r2 = r.clone();
        r.submit(Box::new(move || tree(r2, 10, tx)));
        let leaves = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(leaves, 1 << 10);
        assert_eq!(r.queued(), 0);
        // Every slot is free again once the root task has returned (it
        // reports its count just before it returns, so allow it a moment).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !r.try_take_slot() {
            assert!(
                std::time::Instant::now() < deadline,
                "the slot never came back"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!r.try_take_slot());
    }

    #[test]
    fn a_wide_task_holds_its_slots_and_is_not_starved() {
        // Three slots; a stream of one-slot tasks, and a task needing all
        // three: it runs alone, and before the one-slot tasks queued
        // after it.
        let r = runner(3);
        let running = Arc::new(AtomicU32::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let job = |label: &'static str, width: u32| {
            let (running, log, tx) = (running.clone(), log.clone(), tx.clone());
            Box::new(move || {
                let now = running.fetch_add(width, Ordering::SeqCst) + width;
                assert!(now <= 3, "{now} slots in use");
                log.lock().unwrap().push((label, now));
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(width, Ordering::SeqCst);
                tx.send(label).unwrap();
            }) as Job
        };
        for _ in 0..6 {
            r.submit(job("one", 1));
        }
        r.submit_wide(3, job("wide", 3));
        for _ in 0..6 {
            r.submit(job("late", 1));
        }
        let order: Vec<&str> = (0..13)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        let wide_at = order.iter().position(|l| *l == "wide").unwrap();
        assert!(
            order[..wide_at].iter().all(|l| *l == "one"),
            "a later task went first: {order:?}"
        );
        let log = log.lock().unwrap();
        let wide = log.iter().find(|(l, _)| *l == "wide").unwrap();
        assert_eq!(wide.1, 3, "alone, holding all three slots");
        assert!(log.iter().all(|(_, n)| *n <= 3), "over the slots: {log:?}");
        // All slots are free again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut taken = 0;
        while taken < 3 {
            if r.try_take_slot() {
                taken += 1;
            }
            assert!(std::time::Instant::now() < deadline, "slots lost");
        }
        assert!(!r.try_take_slot());
    }

    #[test]
    fn a_wide_task_waiting_for_a_child_lends_its_slots() {
        // Two slots, two tasks needing both, each waiting for a child that
        // arrives later (from the network, say): the first must lend both
        // slots while it waits, or the second (first in line for slots)
        // and the child wait for ever.
        let r = runner(2);
        let (tx, rx) = mpsc::channel();
        for k in 0..2 {
            let (r2, tx) = (r.clone(), tx.clone());
            r.submit_wide(
                2,
                Box::new(move || {
                    let f = flag();
                    let (done, r3) = (Flag(f.0.clone()), r2.clone());
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(50));
                        r3.submit(Box::new(move || done.set()));
                    });
                    r2.wait_helping(f, |_| {});
                    tx.send(k).unwrap();
                }),
            );
        }
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a wide task never finished");
        }
        // Both slots come back, no more.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut taken = 0;
        while taken < 2 {
            if r.try_take_slot() {
                taken += 1;
            }
            assert!(std::time::Instant::now() < deadline, "slots lost");
        }
        assert!(!r.try_take_slot(), "a slot too many");
    }

    #[test]
    fn slots_bound_how_many_tasks_run_at_once() {
        let r = runner(2);
        let running = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let (tx, rx) = mpsc::channel();
        for _ in 0..20 {
            let (running, peak, tx) = (running.clone(), peak.clone(), tx.clone());
            r.submit(Box::new(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                running.fetch_sub(1, Ordering::SeqCst);
                tx.send(()).unwrap();
            }));
        }
        for _ in 0..20 {
            rx.recv_timeout(Duration::from_secs(30)).unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn a_lent_slot_is_retired_when_its_task_returns() {
        let r = runner(1);
        assert!(r.try_take_slot());
        // The task holding the slot is abandoned: one more slot meanwhile.
        r.lend_slot();
        assert!(r.try_take_slot());
        assert!(!r.try_take_slot());
        // It returns while both slots are busy: the next one given back is
        // retired, and the runner is back to one slot.
        r.reclaim_slot();
        r.give_back_slot();
        assert!(!r.try_take_slot());
        r.give_back_slot();
        assert!(r.try_take_slot());
        assert!(!r.try_take_slot());
    }

    #[test]
    fn a_blocked_task_announces_its_wait_and_resumes() {
        let r = runner(1);
        assert!(r.try_take_slot());
        let f = flag();
        let setter = Flag(f.0.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            setter.set();
        });
        let mut notices = Vec::new();
        r.wait_helping(f, |b| notices.push(b));
        assert_eq!(notices, [true, false]);
        // Still holding the one slot.
        assert!(!r.try_take_slot());
        r.give_back_slot();
        assert!(r.try_take_slot());
    }

    /// A gate tasks wait at until it is opened.
    type Gate = Arc<(Mutex<bool>, std::sync::Condvar)>;

    fn pass(g: &Gate) {
        let mut open = g.0.lock().unwrap();
        while !*open {
            open = g.1.wait(open).unwrap();
        }
    }

    fn open(g: &Gate) {
        *g.0.lock().unwrap() = true;
        g.1.notify_all();
    }

    #[test]
    fn low_priority_tasks_take_no_slot_and_start_only_behind_normal_ones() {
        let r = runner(2);
        let (tx, rx) = mpsc::channel();
        let gate: Gate = Arc::default();
        for i in 0..3 {
            let (tx, g) = (tx.clone(), gate.clone());
            r.submit_low(Box::new(move || {
                tx.send(format!("low {i}")).unwrap();
                pass(&g);
            }));
        }
        let second = Duration::from_secs(5);
        assert_eq!(rx.recv_timeout(second).unwrap(), "low 0");
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the lane of a two-slot runner is one wide"
        );
        // Both slots are still free for normal work, and two normal tasks
        // that need each other to run at once both start.
        let both = Arc::new(std::sync::Barrier::new(2));
        for name in ["normal a", "normal b"] {
            let (t, both) = (tx.clone(), both.clone());
            r.submit(Box::new(move || {
                both.wait();
                t.send(name.into()).unwrap();
            }));
        }
        let mut normal: Vec<String> = (0..2).map(|_| rx.recv_timeout(second).unwrap()).collect();
        normal.sort();
        assert_eq!(normal, ["normal a", "normal b"]);
        // Their threads give the slots back just after reporting.
        let deadline = std::time::Instant::now() + second;
        let mut taken = 0;
        while taken < 2 {
            if r.try_take_slot() {
                taken += 1;
            } else {
                assert!(std::time::Instant::now() < deadline, "slots not back");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Background work waits while every slot is busy, even once the
        // lane is free.
        open(&gate);
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "no background work with every slot busy"
        );
        r.give_back_slot();
        let mut rest: Vec<String> = (0..2).map(|_| rx.recv_timeout(second).unwrap()).collect();
        rest.sort();
        assert_eq!(rest, ["low 1", "low 2"]);
        r.give_back_slot();
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn background_threads_run_at_the_lowest_priority() {
        let r = runner(1);
        let (tx, rx) = mpsc::channel();
        let nice = |tx: mpsc::Sender<i32>| -> Job {
            Box::new(move || {
                // SAFETY: getpriority reads its arguments only; 0 names the
                // calling thread on Linux.
                let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
                tx.send(n).unwrap();
            })
        };
        r.submit_low(nice(tx.clone()));
        r.submit(nice(tx.clone()));
        let mut seen: Vec<i32> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        seen.sort();
        // This process's own priority, and 19 on the background lane.
        // SAFETY: as above.
        let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert!(own < 19, "the test itself runs at the lowest priority");
        assert_eq!(seen, [own, 19]);
    }

    #[test]
    fn a_low_priority_task_waiting_on_a_low_priority_child_finishes() {
        // One slot for low-priority work: the parent waits for its child.
        let r = runner(2);
        let (tx, rx) = mpsc::channel();
        let parent = r.clone();
        r.submit_low(Box::new(move || {
            let done = flag();
            let inner = done.0.clone();
            let t = tx.clone();
            parent.submit_low(Box::new(move || {
                t.send("child").unwrap();
                Flag(inner).set();
            }));
            parent.wait_helping(done, |_| {});
            tx.send("parent").unwrap();
        }));
        let second = Duration::from_secs(5);
        assert_eq!(rx.recv_timeout(second).unwrap(), "child");
        assert_eq!(rx.recv_timeout(second).unwrap(), "parent");
    }

    #[test]
    fn a_panic_in_a_background_wait_leaves_the_lane_counted_right() {
        // Ready on its first poll after a wake-up, then panics.
        struct PanicsLater(bool);
        impl Future for PanicsLater {
            type Output = ();
            fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                assert!(!self.0, "a poll that panics");
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
        let r = runner(1);
        let (tx, rx) = mpsc::channel();
        let (r2, t) = (r.clone(), tx.clone());
        r.submit_low(Box::new(move || {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                r2.wait_helping(PanicsLater(false), |_| {})
            }));
            t.send(format!("panicked {}", caught.is_err())).unwrap();
        }));
        let second = Duration::from_secs(5);
        assert_eq!(rx.recv_timeout(second).unwrap(), "panicked true");
        // The lane is still one wide: the second task waits for the first.
        let gate: Gate = Arc::default();
        for name in ["a", "b"] {
            let (t, g) = (tx.clone(), gate.clone());
            r.submit_low(Box::new(move || {
                t.send(name.into()).unwrap();
                pass(&g);
            }));
        }
        assert_eq!(rx.recv_timeout(second).unwrap(), "a");
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "one at a time"
        );
        open(&gate);
        assert_eq!(rx.recv_timeout(second).unwrap(), "b");
    }
}
