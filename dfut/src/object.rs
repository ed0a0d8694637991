//! The owner's record of one object: where it is, whether it is ready, and
//! the lineage needed to compute it again.
//!
//! An [`ObjectCell`] is shared by the owner's object table and every handle
//! to the object. The owning client moves it between phases as messages
//! arrive; handles wait on it. Reference counting is the handles'
//! [`std::sync::Arc`] count: when the last [`ObjectRef`] goes, the owner is
//! told to free the object. This module does no I/O itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;

use dfut_net::wire::ObjectId;

use crate::Error;
use crate::client::Client;

/// How long a blocking wait polls before it sleeps.
const SPIN_BEFORE_SLEEP: std::time::Duration = std::time::Duration::from_micros(150);

pub use crate::blob::Blob;

/// Where a task stands, as seen by the owner.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// # #[dfut::remote] fn one() -> u8 { 1 }
/// let f = one();
/// f.get()?;
/// assert_eq!(f.status(), dfut::Status::Finished);
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Submitted; waiting for its arguments or a free slot.
    Pending,
    /// Executing on a worker.
    Running,
    /// Finished; the value is available.
    Finished,
    /// Failed; getting it returns the error.
    Failed,
}

/// An argument of a task as the owner keeps it.
pub(crate) enum ArgSource {
    /// An encoded value.
    Value(Blob),
    /// The result of another task.
    Future(Arc<ObjectRef>),
    /// A list of values and results, for a `Many<T>` parameter.
    List(Vec<ArgSource>),
    /// The result of another task, kept only as lineage once this task
    /// finished: it does not keep the value alive (its worker frees it
    /// with its last handle), only the record needed to compute it again
    /// (see `Client::revive`).
    Lineage(Arc<ObjectCell>),
}

/// What is needed to run (or re-run) a task.
pub(crate) struct TaskRecord {
    pub spec: &'static crate::client::FnSpec,
    pub args: Vec<ArgSource>,
    pub retries_left: u32,
    /// Deadline sent with the task, in milliseconds; 0 for none.
    pub timeout_ms: u32,
    /// Whether a failure of the task itself is retried too.
    pub retry_on_error: bool,
    /// What it takes from its worker while it runs.
    pub resources: dfut_net::wire::ResourceRequest,
    /// Where it may run.
    pub strategy: crate::options::Strategy,
    /// Times a worker died while holding the task (sent or running).
    pub lost_runs: u32,
    /// Times the task was sent to a worker (retries, re-runs and
    /// speculative copies included); counted once a worker is chosen.
    pub attempts: AtomicU32,
    /// Times a worker died while the task was known to be running on it.
    pub crashes: u32,
    /// The owner's lineage budget and this record's charge on it, while
    /// the record is kept after the task finished (see
    /// `Client::keep_lineage`); given back when the record drops.
    pub charge: Option<(Arc<AtomicU64>, u64)>,
}

impl Drop for TaskRecord {
    fn drop(&mut self) {
        if let Some((budget, bytes)) = self.charge.take() {
            budget.fetch_sub(bytes, Ordering::Relaxed);
        }
        // A record's arguments may hold the last reference to an older
        // record, and so on down a chain of any length: they are dropped
        // by one loop rather than one nested drop per link.
        let args = std::mem::take(&mut self.args);
        if !args.is_empty() {
            drop_iteratively(args);
        }
    }
}

impl TaskRecord {
    /// The arguments, list elements included (not the lists themselves).
    pub fn args_mut(&mut self) -> impl Iterator<Item = &mut ArgSource> {
        self.args.iter_mut().flat_map(|arg| match arg {
            ArgSource::List(items) => items.iter_mut(),
            one => std::slice::from_mut(one).iter_mut(),
        })
    }

    /// Whether an argument is kept as lineage only (the task finished and
    /// may run again).
    pub fn has_lineage(&self) -> bool {
        self.args.iter().any(|arg| match arg {
            ArgSource::Lineage(_) => true,
            ArgSource::List(items) => items.iter().any(|i| matches!(i, ArgSource::Lineage(_))),
            _ => false,
        })
    }

    /// What keeping this record after its task finished costs: its
    /// argument values (kept to send again), the cells of the arguments
    /// it refers to, and a fixed overhead.
    pub fn weight(&self) -> u64 {
        const RECORD: u64 = 256;
        // A reference keeps the argument's cell alive (a few hundred bytes).
        const CELL: u64 = 512;
        fn value_bytes(arg: &ArgSource) -> u64 {
            match arg {
                ArgSource::Value(blob) => blob.len() as u64,
                ArgSource::List(items) => items.iter().map(value_bytes).sum(),
                ArgSource::Future(_) | ArgSource::Lineage(_) => CELL,
            }
        }
        RECORD + self.args.iter().map(value_bytes).sum::<u64>()
    }

    /// The results of other tasks this task reads, list elements included.
    pub fn futures(&self) -> impl Iterator<Item = &Arc<ObjectRef>> {
        self.args.iter().flat_map(|arg| {
            let items = match arg {
                ArgSource::List(items) => items.as_slice(),
                one => std::slice::from_ref(one),
            };
            items.iter().filter_map(|i| match i {
                ArgSource::Future(d) => Some(d),
                _ => None,
            })
        })
    }
}

/// The phase of an object.
#[derive(Clone)]
pub(crate) enum Phase {
    /// Not sent yet: waiting in the owner's backlog for a worker with room.
    Queued,
    /// Sent to the worker at this address, not yet running.
    Pending(SocketAddr),
    /// Running on the worker at this address.
    Running(SocketAddr),
    /// Computed. `holder` is the worker keeping it (`None` once that worker
    /// is gone but the owner has the value); `inline` is the owner's copy.
    Finished {
        holder: Option<SocketAddr>,
        inline: Option<Blob>,
    },
    /// Failed for good.
    Failed(Error),
}

pub(crate) struct CellState {
    pub phase: Phase,
    pub task: Option<TaskRecord>,
    /// A second worker running a speculative copy of the task.
    pub backup: Option<SocketAddr>,
    /// The worker that reported it blocked in a nested wait (holding no
    /// slot): it is not counted in flight there meanwhile.
    pub blocked: Option<SocketAddr>,
    /// A task was sent that reads this object from the worker computing
    /// it, before it finished there.
    pub read_while_running: bool,
    /// The worker whose copy lost a speculation race while a dependent may
    /// read it there: freed with the object, not cancelled.
    pub loser: Option<SocketAddr>,
    /// Workers that reported a run of the task failed (each keeps the
    /// failure for dependents there): freed with the object, like a
    /// result. At most one entry per worker; bounded by the retries.
    pub failed_at: Vec<SocketAddr>,
    /// When the task was last dispatched.
    pub dispatched: std::time::Instant,
    /// The handle whose last reference frees the object; dead once the
    /// object was released (a lineage reference then revives it, see
    /// `Client::revive`).
    pub handle: std::sync::Weak<ObjectRef>,
    wakers: Vec<Waker>,
}

/// The owner's record of one object.
pub(crate) struct ObjectCell {
    pub id: ObjectId,
    pub function: &'static str,
    /// When it was made: its task's submission, for listings.
    pub created: std::time::Instant,
    /// Encoded size in bytes once finished; 0 while unknown.
    size: AtomicU64,
    /// Tasks sent that read this object.
    pub readers: std::sync::atomic::AtomicU32,
    /// Set when the last handle is dropped: the task still runs (it was
    /// submitted), and its result is freed when it finishes.
    pub released: std::sync::atomic::AtomicBool,
    /// Set once the release has told every worker keeping a copy to free
    /// it: only then may the object be computed again (a rebuild's task
    /// must not overtake that `Free`).
    pub freed: std::sync::atomic::AtomicBool,
    /// Its task is background work: it waits in the backlog behind every
    /// normal task. Set before the cell is shared.
    pub low: std::sync::atomic::AtomicBool,
    /// Set when the phase becomes final, for lock-free polling.
    settled_flag: std::sync::atomic::AtomicBool,
    state: Mutex<CellState>,
    settled: Condvar,
}

impl ObjectCell {
    pub fn new(
        id: ObjectId,
        function: &'static str,
        phase: Phase,
        task: Option<TaskRecord>,
    ) -> Self {
        let created = std::time::Instant::now();
        Self {
            id,
            function,
            created,
            size: AtomicU64::new(0),
            settled_flag: std::sync::atomic::AtomicBool::new(false),
            readers: std::sync::atomic::AtomicU32::new(0),
            released: std::sync::atomic::AtomicBool::new(false),
            freed: std::sync::atomic::AtomicBool::new(false),
            low: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(CellState {
                phase,
                task,
                backup: None,
                blocked: None,
                read_while_running: false,
                loser: None,
                failed_at: Vec::new(),
                dispatched: created,
                handle: std::sync::Weak::new(),
                wakers: Vec::new(),
            }),
            settled: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, CellState> {
        // A poisoned lock means a panic while updating a phase; the phase
        // itself is always a valid value, so carry on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The encoded size, once known.
    pub fn size(&self) -> Option<u64> {
        match self.size.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    pub fn set_size(&self, bytes: u64) {
        self.size.store(bytes, Ordering::Relaxed);
    }

    pub fn status(&self) -> Status {
        match self.lock().phase {
            Phase::Queued | Phase::Pending(_) => Status::Pending,
            Phase::Running(_) => Status::Running,
            Phase::Finished { .. } => Status::Finished,
            Phase::Failed(_) => Status::Failed,
        }
    }

    /// Whether the phase is final.
    pub fn is_settled(&self) -> bool {
        self.settled_flag.load(Ordering::Acquire)
    }

    /// Makes a released object, whose value was freed, an object to
    /// compute again: queued, unreleased, with nothing known of old runs.
    pub fn rebuild(&self, st: &mut CellState) {
        st.phase = Phase::Queued;
        st.backup = None;
        st.blocked = None;
        st.loser = None;
        st.read_while_running = false;
        st.failed_at.clear();
        self.size.store(0, Ordering::Relaxed);
        self.settled_flag.store(false, Ordering::Release);
        self.released.store(false, Ordering::Release);
        self.freed.store(false, Ordering::Release);
    }

    /// Marks the phase not final: for a finished object lost with its
    /// worker and queued to run again (called under the cell's lock, with
    /// the phase just set to `Queued`).
    pub fn unsettle(&self) {
        self.settled_flag.store(false, Ordering::Release);
    }

    /// Sets the phase and wakes every waiter if it is final.
    pub fn set(&self, phase: Phase) {
        let mut st = self.lock();
        let settled = matches!(phase, Phase::Finished { .. } | Phase::Failed(_));
        st.phase = phase;
        self.settled_flag.store(settled, Ordering::Release);
        if settled {
            for w in st.wakers.drain(..) {
                w.wake();
            }
            drop(st);
            self.settled.notify_all();
        }
    }

    /// The phase if final; otherwise registers `waker` and returns `None`.
    pub fn poll_settled(&self, waker: &Waker) -> Option<Phase> {
        let mut st = self.lock();
        match &st.phase {
            p @ (Phase::Finished { .. } | Phase::Failed(_)) => Some(p.clone()),
            _ => {
                if !st.wakers.iter().any(|w| w.will_wake(waker)) {
                    st.wakers.push(waker.clone());
                }
                None
            }
        }
    }

    /// Waits for the phase to become final.
    pub async fn settled(&self) -> Phase {
        std::future::poll_fn(|cx| match self.poll_settled(cx.waker()) {
            Some(p) => std::task::Poll::Ready(p),
            None => std::task::Poll::Pending,
        })
        .await
    }

    /// Polls briefly (yielding the core) for the phase to become final: a
    /// fine-grained task often settles within a round trip, sooner than a
    /// sleep and a wake-up.
    pub fn spin_settled(&self) -> Option<Phase> {
        let spin_until = std::time::Instant::now() + SPIN_BEFORE_SLEEP;
        while std::time::Instant::now() < spin_until {
            if self.settled_flag.load(Ordering::Acquire) {
                break;
            }
            std::thread::yield_now();
        }
        match &self.lock().phase {
            p @ (Phase::Finished { .. } | Phase::Failed(_)) => Some(p.clone()),
            _ => None,
        }
    }

    /// Blocks the thread until the phase is final or `deadline` passes.
    pub fn wait_settled(&self, deadline: Option<std::time::Instant>) -> Option<Phase> {
        if let Some(p) = self.spin_settled() {
            return Some(p);
        }
        let mut st = self.lock();
        loop {
            if let p @ (Phase::Finished { .. } | Phase::Failed(_)) = &st.phase {
                return Some(p.clone());
            }
            st = match deadline {
                None => self.settled.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.settled
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// A counted reference to an object. Dropping the last one frees it.
pub(crate) struct ObjectRef {
    pub cell: Arc<ObjectCell>,
    pub client: Option<Client>,
}

impl ObjectRef {
    /// A reference to an object that failed before it was ever submitted.
    pub fn failed(function: &'static str, error: Error) -> Self {
        let id = ObjectId { owner: 0, seq: 0 };
        Self {
            cell: Arc::new(ObjectCell::new(id, function, Phase::Failed(error), None)),
            client: None,
        }
    }
}

impl Drop for ObjectRef {
    fn drop(&mut self) {
        if let Some(client) = &self.client {
            // Dropped here, outside every lock (the record's arguments may
            // release more objects); its own drop keeps the stack flat.
            drop(client.release(self));
        }
    }
}

thread_local! {
    /// Argument lists waiting to be dropped by the outermost drop on this
    /// thread: at most those of the records being dropped (its capacity is
    /// given back past 1,024).
    static DEFERRED: std::cell::RefCell<Vec<Vec<ArgSource>>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Whether a drop further up this thread's stack is draining them.
    static DRAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Drops `args`; the records they release in turn queue their own
/// arguments here, and the same loop drops them, so the stack stays flat.
fn drop_iteratively(args: Vec<ArgSource>) {
    let mut args = Some(args);
    let _ = DEFERRED.try_with(|d| {
        if let Some(a) = args.take() {
            d.borrow_mut().push(a);
        }
    });
    if let Some(a) = args {
        // This thread's locals are being destroyed: drop them directly.
        drop(a);
        return;
    }
    if DRAINING.try_with(|f| f.replace(true)).unwrap_or(true) {
        return;
    }
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            let _ = DRAINING.try_with(|f| f.set(false));
        }
    }
    let _done = Done;
    while let Some(next) = DEFERRED.try_with(|d| d.borrow_mut().pop()).ok().flatten() {
        drop(next);
    }
    // A wide record (a reduction over many results) grew the queue.
    let _ = DEFERRED.try_with(|d| {
        let mut d = d.borrow_mut();
        if d.capacity() > 1024 {
            *d = Vec::new();
        }
    });
}
