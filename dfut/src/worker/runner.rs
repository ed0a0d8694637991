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
//! Two priorities: low-priority tasks (background work) wait in a queue of
//! their own, taken only when no normal task waits, and run on at most all
//! but one of the slots (all of a single-slot worker's), so normal work
//! always has a slot of its own. Helping threads run normal tasks only; a
//! low-priority task parked in a nested wait is not counted against the
//! low-priority slots, so its own low-priority children can run.
//!
//! Bounds: the ready queues hold what owners sent (each owner keeps at most
//! its admission window in flight here, beyond which tasks wait at the
//! owner); threads are the slots plus one per [`HELP_DEPTH`] blocked tasks
//! (a thread only parks without helping at that depth), under the
//! runtime's cap on blocking threads. This module runs closures; it knows
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

/// A task ready to run, as a closure.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Starts a thread (from the runtime's blocking pool) running a closure.
type Spawn = Box<dyn Fn(Job) + Send + Sync>;

/// The slots of one worker and the tasks waiting for them.
pub(crate) struct Runner {
    state: Mutex<State>,
    spawn: Spawn,
    /// Normal tasks that waited for a slot while a low-priority task held
    /// one.
    waits_behind_low: std::sync::atomic::AtomicU64,
}

struct State {
    /// Tasks waiting for a slot, oldest first.
    ready: VecDeque<Job>,
    /// Low-priority tasks waiting for a slot, oldest first.
    low: VecDeque<Job>,
    /// Low-priority tasks running.
    low_running: u32,
    /// The slots low-priority tasks may use at once.
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
    /// The next task for a slot: a normal one, else a low-priority one
    /// while fewer than `low_slots` run (then `true`).
    fn next(&mut self) -> Option<(Job, bool)> {
        if let Some(job) = self.ready.pop_front() {
            return Some((job, false));
        }
        if self.low_running < self.low_slots {
            let job = self.low.pop_front()?;
            self.low_running += 1;
            return Some((job, true));
        }
        None
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
    /// Whether the task on top of this thread's stack is low-priority.
    static LOW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Runner {
    /// A runner with `slots` slots whose threads are started by `spawn`
    /// (the runtime's blocking pool).
    pub fn new(slots: u32, spawn: impl Fn(Job) + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                low: VecDeque::new(),
                low_running: 0,
                low_slots: if slots > 1 { slots - 1 } else { 1 },
                free: slots.max(1),
                owed: 0,
                helpers: Vec::new(),
                resuming: VecDeque::new(),
            }),
            spawn: Box::new(spawn),
            waits_behind_low: std::sync::atomic::AtomicU64::new(0),
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
        if st.free == 0 && st.low_running > 0 {
            self.waits_behind_low.fetch_add(1, Ordering::Relaxed);
        }
        st.ready.push_back(job);
        self.dispatch(st);
    }

    /// Queues a low-priority task: it runs once no normal task waits, on
    /// one of the slots low-priority tasks may use.
    pub fn submit_low(self: &Arc<Self>, job: Job) {
        let runner = self.clone();
        let job: Job = Box::new(move || {
            // Counted out however the task ends (its panics are caught
            // beneath).
            struct Done(Arc<Runner>, bool);
            impl Drop for Done {
                fn drop(&mut self) {
                    LOW.with(|l| l.set(self.1));
                    let mut st = self.0.lock();
                    st.low_running = st.low_running.saturating_sub(1);
                }
            }
            let _done = Done(runner, LOW.with(|l| l.replace(true)));
            job();
        });
        let mut st = self.lock();
        st.low.push_back(job);
        self.dispatch(st);
    }

    /// Normal tasks that had to wait for a slot while a low-priority task
    /// held one, since start.
    pub fn waits_behind_low(&self) -> u64 {
        self.waits_behind_low.load(Ordering::Relaxed)
    }

    /// Takes a free slot now, if one is free and nothing is queued for it.
    pub fn try_take_slot(&self) -> bool {
        let mut st = self.lock();
        if st.free > 0 && st.ready.is_empty() && st.resuming.is_empty() {
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
    /// then to new threads.
    fn dispatch(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        while st.free > 0 {
            if let Some(w) = st.resuming.pop_front() {
                st.free -= 1;
                w.give(Gift::Slot);
                continue;
            }
            let Some((job, low)) = st.next() else {
                return;
            };
            st.free -= 1;
            // Helpers (threads blocked in a nested wait) take normal tasks
            // only.
            let helper = if low { None } else { st.helpers.pop() };
            match helper {
                Some(helper) => helper.give(Gift::Job(job)),
                None => {
                    let runner = self.clone();
                    (self.spawn)(Box::new(move || runner.run_from(job)));
                }
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
                && let Some((next, _)) = st.next()
            {
                job = next;
                continue;
            }
            st.release();
            self.dispatch(st);
            return;
        }
    }

    /// Waits for `fut` on a thread that holds a slot (inside a task),
    /// running queued tasks meanwhile. `blocked(true)` is called when the
    /// wait does not end at once, `blocked(false)` when it ends.
    pub fn wait_helping<F: Future>(
        self: &Arc<Self>,
        fut: F,
        mut blocked: impl FnMut(bool),
    ) -> F::Output {
        let waiter = Waiter::new();
        let waker = Waker::from(waiter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        let depth = DEPTH.with(std::cell::Cell::get);
        let low = LOW.with(std::cell::Cell::get);
        let mut holding = true;
        let mut announced = false;
        // A low-priority task parked in its wait is not counted against
        // the low-priority slots: its low-priority children can run.
        let mut counted_out = false;
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                self.resume(&waiter, holding);
                if counted_out {
                    self.lock().low_running += 1;
                }
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
            if depth < HELP_DEPTH {
                if !holding && st.free > 0 && st.resuming.is_empty() && !st.ready.is_empty() {
                    st.free -= 1;
                    holding = true;
                }
                if holding && let Some(job) = st.ready.pop_back() {
                    // Newest first: most likely a child of the waiting task.
                    drop(st);
                    LOW.with(|l| l.set(false));
                    run_job(job);
                    LOW.with(|l| l.set(low));
                    continue;
                }
                // Not listed now: a waiter is a helper only while parked.
                st.helpers.push(waiter.clone());
            }
            if holding {
                holding = false;
                st.release();
            }
            if low && !counted_out {
                counted_out = true;
                st.low_running = st.low_running.saturating_sub(1);
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
                    LOW.with(|l| l.set(false));
                    run_job(job);
                    LOW.with(|l| l.set(low));
                }
            }
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

/// Runs one task one level deeper on this thread. A panic is contained:
/// the task's own code catches its panics; anything else must not unbalance
/// the slot counts.
fn run_job(job: Job) {
    let depth = DEPTH.with(|d| d.replace(d.get() + 1));
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    DEPTH.with(|d| d.set(depth));
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    fn runner(slots: u32) -> Arc<Runner> {
        Runner::new(slots, |f| {
            std::thread::Builder::new()
                .stack_size(STACK_BYTES)
                .spawn(f)
                .unwrap();
        })
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

    #[test]
    fn low_priority_tasks_leave_a_slot_to_normal_ones_and_wait_behind_them() {
        let r = runner(2);
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let wait = |g: &Arc<(Mutex<bool>, std::sync::Condvar)>| {
            let mut open = g.0.lock().unwrap();
            while !*open {
                open = g.1.wait(open).unwrap();
            }
        };
        for i in 0..3 {
            let (tx, g) = (tx.clone(), gate.clone());
            r.submit_low(Box::new(move || {
                tx.send(format!("low {i}")).unwrap();
                wait(&g);
            }));
        }
        let second = Duration::from_secs(5);
        assert_eq!(rx.recv_timeout(second).unwrap(), "low 0");
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "one of two slots for low-priority tasks"
        );
        let t = tx.clone();
        r.submit(Box::new(move || t.send("normal".into()).unwrap()));
        assert_eq!(rx.recv_timeout(second).unwrap(), "normal", "at once");
        assert_eq!(r.waits_behind_low(), 0);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let mut rest: Vec<String> = (0..2).map(|_| rx.recv_timeout(second).unwrap()).collect();
        rest.sort();
        assert_eq!(rest, vec!["low 1", "low 2"]);
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
}
