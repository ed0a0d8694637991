//! The owner side of dfut: submitting tasks, tracking their objects, and
//! fetching values.
//!
//! Every process that calls remote functions (the driver, and workers that
//! run nested calls) has one [`Client`]. It owns the objects it creates: it
//! places each task with its [`Scheduler`] on its view of the cluster, sends
//! it straight to the chosen worker, records the result's location, keeps the
//! lineage of tasks that may be retried, and tells the holder to free an
//! object once no handle to it remains. Connections and incoming messages are
//! in [`links`]; this module holds the object logic.

mod links;
mod loss;
mod view;
use loss::Loss;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dfut_net::Endpoint;
use dfut_net::wire::{Arg, Item, Message, ObjectId, TaskListing, TaskSpec, TaskState, WorkerState};
use tokio::sync::{oneshot, watch};

use crate::data::Data;
use crate::future::DistFuture;
use crate::lock;
use crate::object::{ArgSource, Blob, ObjectCell, ObjectRef, Phase, TaskRecord};
use crate::scheduler::{ArgPlacement, DefaultPolicy, Scheduler, TaskNeeds, WorkerView};
use crate::{Error, Result};
use view::{ClusterView, Placement};

/// How long a task that lost an argument waits before it is re-run, so the
/// loss of the argument's worker reaches this owner first.
const LOSS_PROPAGATION: std::time::Duration = std::time::Duration::from_millis(250);

/// After reconnecting to the scheduler, workers missing from its view are
/// kept this long: a restarted scheduler learns them as they register again.
const REJOIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a task waits at its owner while no worker is usable (none
/// registered, or every one suspect) before it fails with
/// [`Error::NoEligibleWorker`].
pub const PLACEMENT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Results up to this many bytes travel back with the completion message.
pub const DEFAULT_INLINE_MAX: u32 = 64 * 1024;

/// Speculative re-execution of stragglers: a task still unfinished after
/// `multiplier` times its function's mean completion time (and at least
/// `min_wait`) is started again on another worker; the first result wins
/// and the other copy is cancelled. Off unless set with
/// [`Builder::speculation`](crate::Builder::speculation).
///
/// ```
/// let s = dfut::Speculation::default();
/// assert_eq!((s.multiplier, s.min_wait), (3.0, std::time::Duration::from_millis(50)));
/// let eager = dfut::Speculation::new(2.0, std::time::Duration::from_millis(10));
/// assert_eq!(eager.multiplier, 2.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Speculation {
    /// How many mean completion times a task may take before a copy starts.
    pub multiplier: f64,
    /// Never start a copy before this.
    pub min_wait: std::time::Duration,
}

impl Speculation {
    /// Copies start after `multiplier` mean completion times, and never
    /// before `min_wait`.
    pub fn new(multiplier: f64, min_wait: std::time::Duration) -> Self {
        Self {
            multiplier,
            min_wait,
        }
    }
}

impl Default for Speculation {
    fn default() -> Self {
        Self {
            multiplier: 3.0,
            min_wait: std::time::Duration::from_millis(50),
        }
    }
}

/// How a remote function is called: its name and options, fixed at compile
/// time by `#[dfut::remote]`.
#[derive(Debug)]
pub struct FnSpec {
    /// The registered name.
    pub name: &'static str,
    /// The hash of its argument and result types
    /// ([`crate::__private::signature`]).
    pub signature: fn() -> u64,
    /// How often a task is re-run when its worker dies.
    pub retries: u32,
    /// CPUs (slots) it holds while running (`#[remote(cpus = ..)]`).
    pub cpus: u32,
    /// Whether it runs only on GPU workers (`#[remote(gpu)]`, sharing
    /// their GPU, or `gpus = N` with N > 0).
    pub gpu: bool,
    /// GPUs it holds while running, exclusively (`#[remote(gpus = ..)]`).
    pub gpus: u32,
    /// Memory it reserves while running, in MiB (`#[remote(memory_mb = ..)]`).
    pub memory_mb: u64,
    /// Custom resources it holds while running
    /// (`#[remote(resources(name = amount))]`).
    pub resources: &'static [(&'static str, u32)],
    /// Declared relative cost, if any (`#[remote(cost = ..)]`).
    pub cost: Option<f64>,
    /// Deadline in milliseconds (`#[remote(timeout_ms = ..)]`); 0 for none.
    pub timeout_ms: u32,
    /// Whether retries also cover panics, errors and timeouts
    /// (`#[remote(retry_on_error)]`).
    pub retry_on_error: bool,
}

/// A handle on this process's connection to the cluster.
///
/// Cheap to clone. Usually implicit: `dfut::init()` makes one the default
/// and remote calls use it.
///
/// ```
/// let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// let client = rt.client();
/// assert_eq!(client.workers().len(), 2);
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

struct Inner {
    node: u64,
    /// Shown with `node` on every connection: only this process knows it,
    /// so no other can act as this owner on a worker.
    secret: u128,
    endpoint: Endpoint,
    handle: tokio::runtime::Handle,
    seq: AtomicU64,
    inline_max: u32,
    objects: Mutex<HashMap<ObjectId, Arc<ObjectCell>>>,
    cluster: Mutex<ClusterView>,
    view_changed: watch::Sender<usize>,
    links: Mutex<HashMap<SocketAddr, links::LinkSlot>>,
    fetches: Mutex<HashMap<u64, PendingFetch>>,
    fetching: Mutex<Fetching>,
    /// This host's identity, when this process can map its shared memory.
    shm_host: Option<String>,
    /// Objects fetched once per host (with shared memory only); its
    /// directory also holds the large arguments sent to same-host workers.
    host_cache: Option<crate::host_cache::HostCache>,
    /// Same-host workers that could not map an argument file of this
    /// owner: sent bytes from then on. At most [`MAX_SHM_REFUSED`].
    shm_refused: Mutex<std::collections::HashSet<SocketAddr>>,
    shared_bytes: AtomicU64,
    shared_args_bytes: AtomicU64,
    fetch_seq: AtomicU64,
    /// Numbers of pushed arguments (see `Arg::Pushed`).
    push_seq: AtomicU64,
    /// Bytes of task records kept as lineage after their tasks finished
    /// (see `Client::keep_lineage`); at most [`MAX_LINEAGE_BYTES`].
    lineage_bytes: Arc<AtomicU64>,
    submitted: AtomicU64,
    fetched_bytes: AtomicU64,
    speculated: AtomicU64,
    /// Mean run time per function on its worker, in seconds (exponentially
    /// weighted), kept only while speculation is on.
    latency: Mutex<HashMap<&'static str, f64>>,
    speculating: std::sync::atomic::AtomicBool,
    /// Objects this owner gave up on a worker it took for lost (paused, cut
    /// off): freed there should that worker come back. At most
    /// `MAX_ORPHAN_WORKERS` workers are remembered; a worker that never
    /// comes back took its objects with it.
    orphans: Mutex<VecDeque<(SocketAddr, Vec<ObjectId>)>>,
    /// Set when the runtime that made this client is gone: nothing more is
    /// sent, and every wait ends at once.
    closed: std::sync::atomic::AtomicBool,
    /// The scheduler this client follows, once it does.
    scheduler: std::sync::OnceLock<SocketAddr>,
    /// Whether this client asks every worker for what it prints, and
    /// prints it (a driver, unless switched off; never a worker's own
    /// client, whose output is captured itself).
    worker_logs: std::sync::atomic::AtomicBool,
    /// Lines printed by workers that this client printed.
    log_lines: Arc<AtomicU64>,
    /// Batches of workers' lines on their way to the printing thread (at
    /// most [`PRINT_QUEUE`]; past it, lines are counted as not shown).
    printer: std::sync::OnceLock<std::sync::mpsc::SyncSender<LogBatch>>,
    /// Lines not shown because the printing thread was behind.
    print_dropped: Arc<AtomicU64>,
    /// When a connection opened with nothing to send last failed, by
    /// address (at most `links::MAX_IDLE_LINK_FAILURES`, each kept
    /// `links::RETRY_LINK`).
    idle_link_failures: Mutex<HashMap<SocketAddr, std::time::Instant>>,
}

/// Workers' lines waiting for the printing thread, in batches.
const PRINT_QUEUE: usize = 256;

/// One worker's lines: its address, process id, lines and the count of
/// lines it could not send.
type LogBatch = (SocketAddr, u32, Vec<dfut_net::wire::LogLine>, u64);

/// Counters of one client, for monitoring and tests.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// # #[dfut::remote] fn big() -> Vec<u8> { vec![1; 1 << 20] }
/// let before = rt.client().stats();
/// let v = big().get()?;
/// let after = rt.client().stats();
/// assert_eq!(after.submitted - before.submitted, 1);
/// // Over the network, or mapped from this host's shared memory.
/// let read = (after.fetched_bytes + after.shared_bytes)
///     - (before.fetched_bytes + before.shared_bytes);
/// assert!(read >= v.len() as u64);
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientStats {
    /// Tasks submitted (retries not counted).
    pub submitted: u64,
    /// Bytes of objects this client fetched from workers over the network.
    pub fetched_bytes: u64,
    /// Bytes of objects this client mapped from its host's shared memory
    /// instead (read in place, never copied).
    pub shared_bytes: u64,
    /// Speculative copies started for stragglers.
    pub speculated: u64,
    /// Bytes of large arguments this client handed to workers of its host
    /// as shared-memory files (mapped there, not sent).
    pub shared_args_bytes: u64,
    /// Lines printed by workers that this client printed (see
    /// [`Builder::worker_logs`](crate::Builder::worker_logs)).
    pub worker_log_lines: u64,
    /// Bytes of finished tasks' records kept to rebuild their results
    /// (argument values included), at most 256 MiB.
    pub lineage_bytes: u64,
}

struct PendingFetch {
    holder: SocketAddr,
    reply: oneshot::Sender<Result<Fetched>>,
}

/// A holder's answer to a fetch.
pub(crate) enum Fetched {
    /// The bytes themselves (inline, or from a bulk stream).
    Bytes(Blob),
    /// The object's file in this host's shared memory.
    Shared { path: String, len: u64 },
}

/// Readers of one object fetching now, beyond the first (which fetches for
/// all of them); bounded by the tasks and `get`s waiting on this client.
type Fetching = HashMap<(SocketAddr, ObjectId), Vec<oneshot::Sender<Result<Blob>>>>;

/// Ends a deduplicated fetch when its fetcher is dropped midway: the
/// other readers then fetch for themselves.
struct FetchTurn<'a> {
    fetching: &'a Mutex<Fetching>,
    key: (SocketAddr, ObjectId),
}

impl FetchTurn<'_> {
    fn finish(self, result: &Result<Blob>) {
        let waiters = lock(self.fetching).remove(&self.key).unwrap_or_default();
        std::mem::forget(self);
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

impl Drop for FetchTurn<'_> {
    fn drop(&mut self) {
        lock(self.fetching).remove(&self.key);
    }
}

impl Client {
    /// A client on `endpoint`, driven by the runtime behind `handle`.
    pub(crate) fn new(
        node: u64,
        endpoint: Endpoint,
        handle: tokio::runtime::Handle,
        policy: Option<Box<dyn Scheduler>>,
        shm_host: Option<String>,
    ) -> Self {
        let explicit_policy = policy.is_some();
        let policy = policy.unwrap_or_else(|| Box::new(DefaultPolicy::default()));
        let (view_changed, _) = watch::channel(0);
        let client = Self {
            inner: Arc::new(Inner {
                node,
                secret: rand::random(),
                endpoint,
                handle,
                seq: AtomicU64::new(1),
                inline_max: DEFAULT_INLINE_MAX,
                objects: Mutex::new(HashMap::new()),
                cluster: Mutex::new(ClusterView::new(policy, explicit_policy)),
                view_changed,
                links: Mutex::new(HashMap::new()),
                fetches: Mutex::new(HashMap::new()),
                fetching: Mutex::new(HashMap::new()),
                host_cache: shm_host
                    .as_ref()
                    .and_then(|_| crate::shm::root())
                    .and_then(|root| crate::host_cache::HostCache::open(&root)),
                shm_host,
                shm_refused: Mutex::new(std::collections::HashSet::new()),
                shared_bytes: AtomicU64::new(0),
                shared_args_bytes: AtomicU64::new(0),
                fetch_seq: AtomicU64::new(1),
                push_seq: AtomicU64::new(1),
                lineage_bytes: Arc::new(AtomicU64::new(0)),
                submitted: AtomicU64::new(0),
                fetched_bytes: AtomicU64::new(0),
                speculated: AtomicU64::new(0),
                latency: Mutex::new(HashMap::new()),
                speculating: std::sync::atomic::AtomicBool::new(false),
                orphans: Mutex::new(VecDeque::new()),
                closed: std::sync::atomic::AtomicBool::new(false),
                scheduler: std::sync::OnceLock::new(),
                worker_logs: std::sync::atomic::AtomicBool::new(false),
                log_lines: Arc::new(AtomicU64::new(0)),
                printer: std::sync::OnceLock::new(),
                print_dropped: Arc::new(AtomicU64::new(0)),
                idle_link_failures: Mutex::new(HashMap::new()),
            }),
        };
        client.start_stall_breaker();
        client
    }

    /// Guards against a backlog that can never drain (every task in flight
    /// is waiting on a task in the backlog, as deep nested calls can be):
    /// when nothing was sent or finished for a while, the oldest backlogged
    /// task is sent regardless of the window. The same tick expires the
    /// host cache's copies.
    fn start_stall_breaker(&self) {
        const STALL: std::time::Duration = std::time::Duration::from_millis(50);
        let weak = Arc::downgrade(&self.inner);
        self.inner.handle.spawn(async move {
            let mut tick = tokio::time::interval(STALL / 2);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let client = Client { inner };
                if let Some(cache) = &client.inner.host_cache {
                    cache.expire(std::time::Instant::now());
                }
                let (stalled, unusable) = {
                    let cluster = lock(&client.inner.cluster);
                    let waiting = !cluster.backlog.is_empty();
                    (
                        waiting && cluster.last_progress.elapsed() > STALL,
                        cluster.unusable_for(PLACEMENT_PATIENCE).filter(|_| waiting),
                    )
                };
                if let Some(reason) = unusable {
                    client.fail_backlog(&reason);
                } else if stalled {
                    client.pump(true);
                }
            }
        });
    }

    /// Fails every task waiting in the backlog: no worker can take them.
    fn fail_backlog(&self, reason: &str) {
        let waiting: Vec<_> = lock(&self.inner.cluster).backlog.drain(..).collect();
        tracing::warn!(tasks = waiting.len(), "{reason}");
        for cell in waiting {
            self.settle(
                &cell,
                Phase::Failed(Error::NoEligibleWorker(reason.to_owned())),
            );
        }
    }

    /// This process's node id; it is the owner id of every object it creates.
    pub fn node_id(&self) -> u64 {
        self.inner.node
    }

    /// The live workers as this client last heard from the scheduler.
    pub fn workers(&self) -> Vec<WorkerView> {
        lock(&self.inner.cluster).workers.clone()
    }

    /// This client's counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            submitted: self.inner.submitted.load(Ordering::Relaxed),
            fetched_bytes: self.inner.fetched_bytes.load(Ordering::Relaxed),
            shared_bytes: self.inner.shared_bytes.load(Ordering::Relaxed),
            speculated: self.inner.speculated.load(Ordering::Relaxed),
            shared_args_bytes: self.inner.shared_args_bytes.load(Ordering::Relaxed),
            worker_log_lines: self.inner.log_lines.load(Ordering::Relaxed),
            lineage_bytes: self.inner.lineage_bytes.load(Ordering::Relaxed),
        }
    }

    /// Asks every worker for what it prints from now on (`on`), and prints
    /// each line prefixed with its worker; or stops asking new workers.
    pub(crate) fn set_worker_logs(&self, on: bool) {
        self.inner.worker_logs.store(on, Ordering::Relaxed);
    }

    /// Hands lines worker `addr` (process `pid`) printed to this client's
    /// printing thread, which prints standard output to this process's,
    /// errors to its standard error, each prefixed with the worker. Never
    /// blocks: a connection's reader must not wait on a terminal (or on a
    /// program holding the stdout lock while it waits for a result).
    pub(crate) fn print_worker_lines(
        &self,
        addr: SocketAddr,
        pid: u32,
        lines: Vec<dfut_net::wire::LogLine>,
        dropped: u64,
    ) {
        if crate::worker::output_captured() {
            // A worker process: printing would capture and send them again.
            return;
        }
        let printer = self.inner.printer.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<LogBatch>(PRINT_QUEUE);
            let (printed, dropped) = (
                self.inner.log_lines.clone(),
                self.inner.print_dropped.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("dfut-worker-logs".into())
                .spawn(move || print_batches(&rx, &printed, &dropped));
            if let Err(e) = spawned {
                tracing::warn!("cannot print workers' output: {e}");
            }
            tx
        });
        let n = lines.len() as u64;
        if printer.try_send((addr, pid, lines, dropped)).is_err() {
            self.inner.print_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Places this client's next tasks with `policy`.
    ///
    /// ```
    /// let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
    /// rt.client().set_policy(dfut::scheduler::policy_by_name("round-robin")?);
    /// assert_eq!(rt.client().policy_name(), "round-robin");
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn set_policy(&self, policy: Box<dyn Scheduler>) {
        let mut cluster = lock(&self.inner.cluster);
        cluster.policy = policy;
        cluster.explicit_policy = true;
    }

    /// Sets admission control: tasks per slot in flight on a worker.
    pub(crate) fn set_window_per_slot(&self, n: u32) {
        lock(&self.inner.cluster).window_per_slot = n.max(1);
    }

    /// The placement policy in use.
    pub fn policy_name(&self) -> String {
        lock(&self.inner.cluster).policy.name().to_owned()
    }

    /// For `dfut objects`: the references this owner holds to each of
    /// `ids` (handles, and tasks that read it; 0 once released) and the
    /// function computing it.
    pub(crate) fn references(&self, ids: &[ObjectId]) -> Vec<(u32, String)> {
        // Cells are locked after the table's lock is let go (`release`
        // takes the table's lock under a cell's).
        let cells: Vec<Option<Arc<ObjectCell>>> = {
            let objects = lock(&self.inner.objects);
            ids.iter().map(|id| objects.get(id).cloned()).collect()
        };
        cells
            .into_iter()
            .map(|cell| match cell {
                Some(cell) => {
                    let refs = cell.lock().handle.strong_count();
                    (
                        u32::try_from(refs).unwrap_or(u32::MAX),
                        cell.function.to_owned(),
                    )
                }
                None => (0, String::new()),
            })
            .collect()
    }

    /// How many objects this client owns that are still referenced.
    pub fn owned_objects(&self) -> usize {
        lock(&self.inner.objects).len()
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.inner.handle
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Waits until at least `n` workers are in the view.
    pub(crate) async fn wait_for_workers(&self, n: usize) {
        let mut rx = self.inner.view_changed.subscribe();
        while lock(&self.inner.cluster).workers.len() < n {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs `fut` to completion from synchronous code. Inside a sync task
    /// the thread runs other queued tasks of its worker meanwhile.
    pub(crate) fn block_on<F: std::future::Future>(&self, fut: F) -> Result<F::Output> {
        let fut = {
            // Timers inside `fut` need this client's runtime.
            let _enter = self.inner.handle.enter();
            match crate::worker::wait_in_task(fut) {
                Ok(out) => return Ok(out),
                Err(fut) => fut,
            }
        };
        let handle = &self.inner.handle;
        self.blocking(|| handle.block_on(fut))
    }

    /// Waits until `cell` settles or `deadline` passes, from synchronous
    /// code.
    pub(crate) fn wait_settled(
        &self,
        cell: &ObjectCell,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<Phase>> {
        if crate::worker::in_task() {
            if let Some(p) = cell.spin_settled() {
                return Ok(Some(p));
            }
            return self.block_on(async {
                match deadline {
                    None => Some(cell.settled().await),
                    Some(d) => tokio::time::timeout_at(d.into(), cell.settled()).await.ok(),
                }
            });
        }
        self.blocking(|| cell.wait_settled(deadline))
    }

    /// Runs `f`, which blocks this thread, without starving anyone: a
    /// runtime thread hands its other work to another thread.
    fn blocking<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Err(_) => Ok(f()),
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                Ok(tokio::task::block_in_place(f))
            }
            Ok(_) => Err(Error::Config(
                "a blocking get() inside a current-thread tokio runtime would deadlock; \
                 use .await instead"
                    .into(),
            )),
        }
    }

    /// The cluster's tasks that pass `filter`, as
    /// [`query_tasks`](crate::scheduler::query_tasks) lists them, asked
    /// over this client's own endpoint: up to `limit` from each worker and
    /// from the owners' backlogs. See [`inspect`](crate::inspect) for an
    /// example.
    pub async fn tasks(
        &self,
        filter: &crate::inspect::TaskFilter,
        limit: u32,
    ) -> Result<crate::inspect::TaskReport> {
        let scheduler = self.scheduler()?;
        let endpoint = &self.inner.endpoint;
        crate::scheduler::service::tasks_via(endpoint, scheduler, filter, limit).await
    }

    /// The cluster's `limit` largest objects, as
    /// [`query_objects`](crate::scheduler::query_objects) lists them.
    ///
    /// ```
    /// # #[dfut::remote] fn zeros(n: u64) -> Vec<u8> { vec![0; n as usize] }
    /// let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
    /// let _ctx = rt.enter();
    /// let big = zeros(100_000);
    /// big.get()?;
    /// let objects = rt.block_on(rt.client().objects(10))?;
    /// assert_eq!(objects[0].id, big.id());
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub async fn objects(&self, limit: u32) -> Result<Vec<crate::inspect::ObjectListing>> {
        let scheduler = self.scheduler()?;
        crate::scheduler::service::objects_via(&self.inner.endpoint, scheduler, limit).await
    }

    fn scheduler(&self) -> Result<SocketAddr> {
        self.inner.scheduler.get().copied().ok_or_else(|| {
            Error::Config("this client follows no scheduler: it cannot list the cluster".into())
        })
    }

    /// Up to `limit` tasks waiting in this owner's backlog, oldest first.
    pub(crate) fn backlog_listing(&self, limit: u32) -> Vec<TaskListing> {
        // The cells only, under the lock every submission takes.
        let cells: Vec<Arc<ObjectCell>> = {
            let cluster = lock(&self.inner.cluster);
            cluster
                .backlog
                .iter()
                .take(limit as usize)
                .cloned()
                .collect()
        };
        cells
            .iter()
            .map(|cell| {
                let function = cell.function.to_owned();
                let mut t = TaskListing::new(cell.id, function, TaskState::Backlog);
                t.submitted_us = crate::clock::unix_us(cell.created);
                t
            })
            .collect()
    }

    /// Whether the runtime that made this client is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Closes this client when its runtime stops: every unsettled object
    /// and pending fetch fails with [`Error::NoRuntime`], so no wait on a
    /// surviving handle outlives the runtime.
    pub(crate) fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let cells: Vec<_> = lock(&self.inner.objects).values().cloned().collect();
        for cell in cells {
            if !cell.is_settled() {
                self.settle(&cell, Phase::Failed(Error::NoRuntime));
            }
        }
        let fetches: Vec<_> = lock(&self.inner.fetches).drain().collect();
        for (_, f) in fetches {
            let _ = f.reply.send(Err(Error::NoRuntime));
        }
    }

    /// Submits a call of `spec` with `args`; the handle returns at once.
    pub(crate) fn submit<T: Data>(
        &self,
        spec: &'static FnSpec,
        args: Vec<ArgSource>,
    ) -> DistFuture<T> {
        if self.is_closed() {
            return DistFuture::from_ref(Arc::new(ObjectRef::failed(spec.name, Error::NoRuntime)));
        }
        self.inner.submitted.fetch_add(1, Ordering::Relaxed);
        let id = ObjectId {
            owner: self.inner.node,
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed),
        };
        let options = crate::options::CallOptions::for_call(spec);
        let record = TaskRecord {
            spec,
            args,
            retries_left: options.retries,
            timeout_ms: options.timeout_ms,
            retry_on_error: options.retry_on_error,
            resources: options.resources,
            strategy: options.strategy,
            lost_runs: 0,
            attempts: AtomicU32::new(0),
            crashes: 0,
            charge: None,
        };
        let cell = Arc::new(ObjectCell::new(id, spec.name, Phase::Queued, Some(record)));
        cell.low.store(options.low, Ordering::Relaxed);
        let obj = Arc::new(ObjectRef {
            cell: cell.clone(),
            client: Some(self.clone()),
        });
        cell.lock().handle = Arc::downgrade(&obj);
        lock(&self.inner.objects).insert(id, cell.clone());
        self.dispatch(&cell);
        DistFuture::from_ref(obj)
    }

    /// Places the task of `cell` and sends it, or fails the cell.
    fn dispatch(&self, cell: &Arc<ObjectCell>) {
        if self.try_dispatch(cell, false) != Sent::Done {
            let mut cluster = lock(&self.inner.cluster);
            let backlog = &mut cluster.backlog;
            if cell.low.load(Ordering::Relaxed) {
                backlog.push_back(cell.clone());
            } else {
                // Ahead of the low-priority tasks, which wait at the back
                // (a scan of those only).
                let mut at = backlog.len();
                while at > 0 && backlog[at - 1].low.load(Ordering::Relaxed) {
                    at -= 1;
                }
                backlog.insert(at, cell.clone());
            }
        }
    }

    /// Sends backlogged tasks while workers have room (or, with `force`,
    /// the oldest one regardless).
    pub(crate) fn pump(&self, force: bool) {
        let mut force = force;
        // Tasks whose arguments are still queued wait behind them; they keep
        // their place at the front afterwards.
        let mut waiting = Vec::new();
        loop {
            let Some(cell) = lock(&self.inner.cluster).backlog.pop_front() else {
                break;
            };
            if cell.is_settled() {
                continue; // cancelled or failed while waiting
            }
            match self.try_dispatch(&cell, force) {
                Sent::Done => force = false,
                Sent::ArgQueued => waiting.push(cell),
                Sent::Full => {
                    waiting.push(cell);
                    break;
                }
            }
        }
        let mut cluster = lock(&self.inner.cluster);
        for cell in waiting.into_iter().rev() {
            cluster.backlog.push_front(cell);
        }
    }

    /// Places and sends the task of `cell`, or fails the cell.
    fn try_dispatch(&self, cell: &Arc<ObjectCell>, force: bool) -> Sent {
        let prepared = loop {
            let st = cell.lock();
            let Some(task) = &st.task else {
                return Sent::Done;
            };
            if task.has_lineage() {
                // A re-run of a finished task: its arguments are lineage.
                drop(st);
                match self.revive(cell) {
                    Ok(true) => continue,
                    Ok(false) => return Sent::ArgQueued,
                    Err(e) => {
                        self.settle(cell, Phase::Failed(e));
                        return Sent::Done;
                    }
                }
            }
            break prepare(cell, task, self.inner.inline_max, &self.inner.push_seq);
        };
        let Prepared {
            spec,
            placements: needs,
            fn_spec,
            strategy,
            pushes,
        } = match prepared {
            Ok(p) => p,
            Err(Unready::Failed(e)) => {
                self.settle(cell, Phase::Failed(e));
                return Sent::Done;
            }
            // An argument's task is itself still in the backlog.
            Err(Unready::ArgQueued) => return Sent::ArgQueued,
        };
        let needs = task_needs(cell.function, &spec, fn_spec, &needs, strategy);
        let target = lock(&self.inner.cluster).place(&needs, force);
        match target {
            Placement::Chosen(addr) => {
                {
                    let mut st = cell.lock();
                    st.dispatched = std::time::Instant::now();
                    st.backup = None;
                    st.blocked = None;
                    if let Some(task) = &st.task {
                        // One more run sent (prepared tasks that found no
                        // room are not runs).
                        task.attempts.fetch_add(1, Ordering::Relaxed);
                    }
                    for dep in st.task.iter().flat_map(TaskRecord::futures) {
                        dep.cell.readers.fetch_add(1, Ordering::Relaxed);
                    }
                }
                cell.set(Phase::Pending(addr));
                let (spec, pushes) = self.share_pushes(cell, addr, spec, pushes);
                self.send_task(addr, spec, pushes);
                if cell.released.load(Ordering::Acquire) {
                    // Detached before it was sent: it runs, and its result
                    // is freed when it finishes.
                    self.send(addr, Message::Free(vec![cell.id]));
                }
                Sent::Done
            }
            Placement::Full => Sent::Full,
            Placement::Refused(reason) => {
                self.settle(cell, Phase::Failed(Error::NoEligibleWorker(reason)));
                Sent::Done
            }
        }
    }

    /// Large arguments of a task for a worker on this host: sealed in this
    /// process's shared memory (once per value: the task's record keeps
    /// the sealed copy instead of the heap one) and sent as paths for the
    /// worker to map. Returns the task and the arguments still to push.
    fn share_pushes(
        &self,
        cell: &ObjectCell,
        addr: SocketAddr,
        mut spec: TaskSpec,
        pushes: Vec<(u64, Blob)>,
    ) -> (TaskSpec, Vec<(u64, Blob)>) {
        let Some(cache) = &self.inner.host_cache else {
            return (spec, pushes);
        };
        if pushes.is_empty() || !lock(&self.inner.cluster).shm_peers.contains(&addr) {
            return (spec, pushes);
        }
        let mut rest = Vec::new();
        for (req, blob) in pushes {
            let sealed = if blob.is_mapped() {
                Ok(blob.clone())
            } else {
                cache.seal(cell.id, &blob)
            };
            let path = sealed
                .as_ref()
                .ok()
                .and_then(|s| s.file())
                .and_then(std::path::Path::to_str)
                .map(str::to_owned);
            let (Ok(sealed), Some(path)) = (sealed, path) else {
                rest.push((req, blob));
                continue;
            };
            self.inner
                .shared_args_bytes
                .fetch_add(sealed.len() as u64, Ordering::Relaxed);
            for arg in &mut spec.args {
                if matches!(arg, Arg::Pushed { req: r, .. } if *r == req) {
                    *arg = Arg::Shared {
                        path: path.clone(),
                        len: sealed.len() as u64,
                    };
                }
            }
            if !Arc::ptr_eq(&sealed, &blob)
                && let Some(task) = cell.lock().task.as_mut()
            {
                for a in task.args_mut() {
                    if let ArgSource::Value(b) = a
                        && Arc::ptr_eq(b, &blob)
                    {
                        *b = sealed.clone();
                    }
                }
            }
        }
        (spec, rest)
    }

    /// The worker at `addr` could not map an argument file of this owner
    /// (another mount namespace, say): it gets bytes from now on.
    fn refuse_shm(&self, addr: SocketAddr) {
        {
            let mut refused = lock(&self.inner.shm_refused);
            if refused.len() >= MAX_SHM_REFUSED {
                refused.clear();
            }
            refused.insert(addr);
        }
        lock(&self.inner.cluster).shm_peers.retain(|a| *a != addr);
        tracing::warn!(worker = %addr, "a worker of this host cannot map this process's shared memory: sending it bytes");
    }

    /// Sends a task to `addr`, its large arguments first, each on a stream
    /// of its own.
    fn send_task(&self, addr: SocketAddr, spec: TaskSpec, pushes: Vec<(u64, Blob)>) {
        for (req, blob) in pushes {
            let payload = dfut_net::wire::Payload::new(blob);
            self.send(addr, Message::Bulk { req, payload });
        }
        self.send(addr, Message::Submit(vec![spec]));
    }

    /// Sets a final phase; drops the task's record unless a retry may need
    /// it (then it is kept as lineage, see [`Client::keep_lineage`]).
    fn settle(&self, cell: &ObjectCell, phase: Phase) {
        let dropped = {
            let mut st = cell.lock();
            let finished = matches!(phase, Phase::Finished { .. });
            match st.task.as_mut() {
                Some(task) if finished && task.retries_left > 0 => match self.keep_lineage(task) {
                    Some(handles) => (handles, None),
                    None => (Vec::new(), st.task.take()),
                },
                _ => (Vec::new(), st.task.take()),
            }
        };
        cell.set(phase);
        if cell.released.load(Ordering::Acquire) {
            // Released while it ran: it was kept only to settle like this
            // (no handle will read an inline copy).
            if let Phase::Finished { inline, .. } = &mut cell.lock().phase {
                *inline = None;
            }
            let removed = lock(&self.inner.objects).remove(&cell.id);
            drop(removed);
        }
        // Dropped outside the cell's lock: releasing arguments may free them.
        drop(dropped);
    }

    /// Keeps the record of a finished task that may run again (if its
    /// result is lost) as lineage: its arguments' handles become lineage
    /// references, which do not keep their values alive. Returns the
    /// handles, to drop outside every lock; `None` if the owner's lineage
    /// budget ([`MAX_LINEAGE_BYTES`]) is spent, and the record should go.
    fn keep_lineage(&self, task: &mut TaskRecord) -> Option<Vec<Arc<ObjectRef>>> {
        if task.charge.is_none() {
            let weight = task.weight();
            let budget = &self.inner.lineage_bytes;
            if budget.fetch_add(weight, Ordering::Relaxed) + weight > MAX_LINEAGE_BYTES {
                budget.fetch_sub(weight, Ordering::Relaxed);
                tracing::debug!(
                    function = task.spec.name,
                    "lineage budget spent: this result cannot be rebuilt if lost"
                );
                return None;
            }
            task.charge = Some((budget.clone(), weight));
        }
        let mut handles = Vec::new();
        for arg in task.args_mut() {
            if let ArgSource::Future(r) = arg {
                let cell = r.cell.clone();
                if let ArgSource::Future(r) = std::mem::replace(arg, ArgSource::Lineage(cell)) {
                    handles.push(r);
                }
            }
        }
        Some(handles)
    }

    /// Turns the lineage arguments of `cell`'s task back into handles
    /// before it runs again. An argument whose handles are all gone was
    /// freed: it is queued to be computed again from its own lineage,
    /// using one of its retries, and so on up the chain (iteratively);
    /// those rebuilt are dispatched oldest first. Returns `Ok(false)` if
    /// an argument's last handle is being dropped right now (try again
    /// later), and an error if a freed argument cannot be rebuilt.
    fn revive(&self, cell: &Arc<ObjectCell>) -> Result<bool> {
        let mut work = vec![cell.clone()];
        let mut rebuilt: Vec<Arc<ObjectCell>> = Vec::new();
        let mut done = true;
        let mut failed = None;
        'cells: while let Some(c) = work.pop() {
            let mut st = c.lock();
            let Some(task) = st.task.as_mut() else {
                continue;
            };
            for arg in task.args_mut() {
                let ArgSource::Lineage(a) = arg else {
                    continue;
                };
                let a = a.clone();
                let handle = match self.resurrect(&a, c.function) {
                    Ok(Revived::Held(r)) => r,
                    Ok(Revived::Rebuilt(r)) => {
                        work.push(a.clone());
                        rebuilt.push(a);
                        r
                    }
                    Ok(Revived::NotYet) => {
                        done = false;
                        continue;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break 'cells;
                    }
                };
                *arg = ArgSource::Future(handle);
            }
        }
        if let Some(e) = failed {
            // Those already queued again will not be needed: settled
            // (failed), they leave the table with their handles.
            for a in rebuilt {
                self.settle(&a, Phase::Failed(e.clone()));
            }
            return Err(e);
        }
        rebuilt.sort_by_key(|c| c.id.seq);
        for a in rebuilt {
            tracing::info!(object = %a.id, function = a.function, "rebuilding a freed argument from its lineage");
            self.dispatch(&a);
        }
        Ok(done)
    }

    /// A handle to `a`, an argument of a task of `reader` about to run
    /// again: its live handle, or a new one with `a` queued to be computed
    /// again if it was freed.
    fn resurrect(&self, a: &Arc<ObjectCell>, reader: &str) -> Result<Revived> {
        let handle = {
            let mut st = a.lock();
            if let Some(r) = st.handle.upgrade() {
                return Ok(Revived::Held(r));
            }
            // Its release is still telling workers to free it, or its
            // task (released while running) has not settled yet.
            if !a.freed.load(Ordering::Acquire) || !a.is_settled() {
                return Ok(Revived::NotYet);
            }
            if !take_retry(&mut st) {
                return Err(Error::ObjectUnavailable(format!(
                    "{} (a result of `{}`, read by `{reader}`) was freed, and it cannot be \
                     computed again: `{}` has no retries left (or its lineage was not kept: \
                     the owner keeps at most {} MiB of it)",
                    a.id,
                    a.function,
                    a.function,
                    MAX_LINEAGE_BYTES >> 20
                )));
            }
            a.rebuild(&mut st);
            let r = Arc::new(ObjectRef {
                cell: a.clone(),
                client: Some(self.clone()),
            });
            st.handle = Arc::downgrade(&r);
            r
        };
        lock(&self.inner.objects).insert(a.id, a.clone());
        Ok(Revived::Rebuilt(handle))
    }

    /// Called when the last reference to `cell` is dropped. A submitted
    /// task is not cancelled (it may run for its side effects, as in Ray):
    /// its worker frees the result when it finishes. Returns the lineage
    /// of a settled object, which nothing will re-run, for the caller to
    /// drop outside every lock.
    pub(crate) fn release(&self, obj: &ObjectRef) -> Option<crate::object::TaskRecord> {
        let cell = &obj.cell;
        let (copies, blocked, lineage) = {
            let mut st = cell.lock();
            // Under the lock: `resurrect` revives only a released object,
            // and `settle` sees either the flag or a settled phase here.
            cell.released.store(true, Ordering::Release);
            if cell.is_settled() {
                // A task still running stays in the table until it settles,
                // to leave its arguments' handles as a finished task does.
                let removed = lock(&self.inner.objects).remove(&cell.id);
                drop(removed);
            }
            // A record kept as lineage stays with the cell while a later
            // task's lineage refers to it; the value itself goes.
            let lineage = match &mut st.phase {
                Phase::Finished { inline, .. } => {
                    *inline = None;
                    if st.task.as_ref().is_some_and(|t| t.charge.is_some()) {
                        None
                    } else {
                        st.task.take()
                    }
                }
                Phase::Failed(_) => st.task.take(),
                _ => None,
            };
            let holder = match &st.phase {
                Phase::Pending(h) | Phase::Running(h) => Some(*h),
                Phase::Finished { holder, .. } => *holder,
                Phase::Queued | Phase::Failed(_) => None,
            };
            // Every worker that may keep something of it: the holder, a
            // speculative copy or loser, a failed run's record.
            let mut copies: Vec<SocketAddr> = [holder, st.backup, st.loser.take()]
                .into_iter()
                .flatten()
                .chain(std::mem::take(&mut st.failed_at))
                .collect();
            copies.sort_unstable();
            copies.dedup();
            (copies, std::mem::take(&mut st.blocked), lineage)
        };
        if let Some(h) = blocked {
            // Its completion will count it out of flight once more.
            self.count_in_flight(h, 1);
        }
        for h in copies {
            self.send(h, Message::Free(vec![cell.id]));
        }
        cell.freed.store(true, Ordering::Release);
        lineage
    }

    /// Cancels the task of `cell` (see [`DistFuture::cancel`]).
    pub(crate) fn cancel(&self, cell: &Arc<ObjectCell>) {
        let targets = {
            let st = cell.lock();
            match &st.phase {
                Phase::Finished { .. } | Phase::Failed(_) => return,
                Phase::Queued => Vec::new(),
                Phase::Pending(h) | Phase::Running(h) => {
                    [Some(*h), st.backup].into_iter().flatten().collect()
                }
            }
        };
        for h in targets {
            self.send(h, Message::Cancel(vec![cell.id]));
        }
        let e = Error::Cancelled {
            function: cell.function.to_owned(),
        };
        self.settle(cell, Phase::Failed(e));
    }

    /// Adds `delta` to this owner's count of tasks in flight at `addr`.
    fn count_in_flight(&self, addr: SocketAddr, delta: i32) {
        let mut cluster = lock(&self.inner.cluster);
        if let Some(w) = cluster.workers.iter_mut().find(|w| w.addr == addr) {
            w.inflight = w.inflight.saturating_add_signed(delta);
        }
    }

    /// A worker reports that a task of this owner blocked in a nested wait
    /// (holding no slot) or resumed: while blocked it does not count
    /// against the admission window, so the children it waits for can be
    /// sent.
    pub(crate) fn task_blocked(&self, from: SocketAddr, id: ObjectId, blocked: bool) {
        let Some(cell) = lock(&self.inner.objects).get(&id).cloned() else {
            return;
        };
        {
            let mut st = cell.lock();
            if current_holder(&st.phase) != Some(from) || st.blocked.is_some() == blocked {
                return;
            }
            st.blocked = blocked.then_some(from);
            // A task run inline sends no start notice; blocking shows it runs.
            st.phase = Phase::Running(from);
        }
        self.count_in_flight(from, if blocked { -1 } else { 1 });
        if blocked {
            self.pump(false);
        }
    }

    /// The encoded value of `obj`, fetched from its holder if need be.
    pub(crate) async fn resolve(self, obj: Arc<ObjectRef>) -> Result<Blob> {
        loop {
            if self.is_closed() {
                return Err(Error::NoRuntime);
            }
            let holder = match obj.cell.settled().await {
                Phase::Failed(e) => return Err(e),
                Phase::Finished {
                    inline: Some(blob), ..
                } => return Ok(blob),
                Phase::Finished {
                    holder: Some(h), ..
                } => h,
                _ => return Err(Error::ObjectUnavailable(obj.cell.id.to_string())),
            };
            match self.fetch(holder, obj.cell.id).await {
                Err(e @ (Error::WorkerLost { .. } | Error::Transport(_) | Error::Net(_))) => {
                    // The holder is gone: let the loss be handled (which may
                    // retry the task), then look again.
                    self.worker_lost(holder, &e.to_string());
                    let unchanged = matches!(
                        &obj.cell.lock().phase,
                        Phase::Finished { holder: Some(h), .. } if *h == holder
                    );
                    if unchanged {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// Asks the worker at `holder` for object `id`, waiting until it is
    /// ready. Concurrent fetches of one object share one transfer.
    pub(crate) async fn fetch(&self, holder: SocketAddr, id: ObjectId) -> Result<Blob> {
        let key = (holder, id);
        let waiting = {
            let mut fetching = lock(&self.inner.fetching);
            match fetching.get_mut(&key) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    fetching.insert(key, Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = waiting {
            return match rx.await {
                Ok(shared) => shared,
                // Its fetcher gave up midway.
                Err(_) => self.fetch_once(holder, id).await,
            };
        }
        let turn = FetchTurn {
            fetching: &self.inner.fetching,
            key,
        };
        let result = self.fetch_once(holder, id).await;
        turn.finish(&result);
        result
    }

    /// One fetch, through this host's index of fetched objects when there
    /// is shared memory: another process of the host may have fetched it.
    async fn fetch_once(&self, holder: SocketAddr, id: ObjectId) -> Result<Blob> {
        use crate::host_cache::Found;
        let Some(cache) = &self.inner.host_cache else {
            return self.fetch_from(holder, id).await;
        };
        if lock(&self.inner.cluster).shm_peers.contains(&holder) {
            // On this host: mapped from the holder's own file.
            return self.fetch_from(holder, id).await;
        }
        match cache.fetch(id, self.fetch_from(holder, id)).await? {
            Found::Host(blob) => {
                self.inner
                    .shared_bytes
                    .fetch_add(blob.len() as u64, Ordering::Relaxed);
                Ok(blob)
            }
            Found::Fetched(blob) => Ok(blob),
        }
    }

    /// One fetch from the holder: mapped from this host's shared memory
    /// when the holder offers it, else the bytes over the connection.
    async fn fetch_from(&self, holder: SocketAddr, id: ObjectId) -> Result<Blob> {
        let host = self.inner.shm_host.clone().unwrap_or_default();
        let mut reply = self.request(holder, id, host).await?;
        if let Fetched::Shared { path, len } = &reply {
            match crate::shm::map_offered(std::path::Path::new(path)) {
                Ok(b) if b.len() as u64 == *len => {
                    self.inner.shared_bytes.fetch_add(*len, Ordering::Relaxed);
                    return Ok(b);
                }
                // Freed meanwhile, not visible here (another mount
                // namespace or root), or not an object file: ask for the
                // bytes.
                _ => reply = self.request(holder, id, String::new()).await?,
            }
        }
        match reply {
            Fetched::Bytes(blob) => {
                self.inner
                    .fetched_bytes
                    .fetch_add(blob.len() as u64, Ordering::Relaxed);
                Ok(blob)
            }
            Fetched::Shared { .. } => Err(Error::ObjectUnavailable(format!(
                "{id}: offered through shared memory twice"
            ))),
        }
    }

    async fn request(&self, holder: SocketAddr, id: ObjectId, host: String) -> Result<Fetched> {
        let req = self.inner.fetch_seq.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        lock(&self.inner.fetches).insert(req, PendingFetch { holder, reply });
        self.send(holder, Message::Fetch { req, id, host });
        rx.await.unwrap_or_else(|_| {
            Err(Error::WorkerLost {
                worker: holder.to_string(),
                reason: "connection closed during a fetch".into(),
            })
        })
    }

    /// Handles the loss of the worker at `addr`: retries what may be retried
    /// and fails the rest. Idempotent.
    pub(crate) fn worker_lost(&self, addr: SocketAddr, reason: &str) {
        self.lose_worker(addr, reason, &std::collections::HashSet::new());
    }

    /// Like [`Client::worker_lost`] for a worker this client could not
    /// connect to: the tasks in `never_sent` (queued for a connection that
    /// was never made) never reached it, so each is placed again once
    /// without spending a retry.
    pub(crate) fn worker_unreached(
        &self,
        addr: SocketAddr,
        reason: &str,
        never_sent: &std::collections::HashSet<ObjectId>,
    ) {
        self.lose_worker(addr, reason, never_sent);
    }

    fn lose_worker(
        &self,
        addr: SocketAddr,
        reason: &str,
        never_sent: &std::collections::HashSet<ObjectId>,
    ) {
        // A closed client's runtime has stopped its workers itself: the
        // values they held are gone with the runtime (`NoRuntime`, as
        // `close` and every wait say), not lost with a worker.
        if self.is_closed() {
            return;
        }
        let known = {
            let mut cluster = lock(&self.inner.cluster);
            let before = cluster.workers.len();
            cluster.workers.retain(|w| w.addr != addr);
            before != cluster.workers.len()
        };
        if known {
            tracing::warn!(worker = %addr, "worker lost: {reason}");
            self.inner.view_changed.send_modify(|v| *v += 1);
        }
        let lost = || Error::WorkerLost {
            worker: addr.to_string(),
            reason: reason.to_owned(),
        };
        let failed: Vec<_> = {
            let mut fetches = lock(&self.inner.fetches);
            let reqs: Vec<u64> = fetches
                .iter()
                .filter(|(_, f)| f.holder == addr)
                .map(|(r, _)| *r)
                .collect();
            reqs.into_iter()
                .filter_map(|r| fetches.remove(&r))
                .collect()
        };
        for f in failed {
            let _ = f.reply.send(Err(lost()));
        }
        let cells: Vec<_> = lock(&self.inner.objects).values().cloned().collect();
        let mut rerun = Vec::new();
        let mut left_there = Vec::new();
        for cell in cells {
            // Decided and applied under the cell's lock: a completion
            // handled meanwhile cannot queue it a second time.
            let (what, left_copy) = {
                let mut st = cell.lock();
                let reached = !never_sent.contains(&cell.id);
                let (what, left_copy) = loss::on_worker_lost(&mut st, addr, reached);
                if what == Loss::Rerun {
                    // It may have been finished: waiters wait again.
                    cell.unsettle();
                }
                (what, left_copy)
            };
            if left_copy {
                left_there.push(cell.id);
            }
            // A task released while it ran is not run again for nobody.
            let what = if what == Loss::Rerun && cell.released.load(Ordering::Acquire) {
                Loss::Fail
            } else {
                what
            };
            match what {
                Loss::Untouched | Loss::Kept => {}
                Loss::Rerun => rerun.push(cell),
                Loss::Fail => self.settle(&cell, Phase::Failed(lost())),
                Loss::CrashLoop(deaths) => {
                    tracing::error!(object = %cell.id, function = cell.function, deaths, "this task's workers keep dying while it runs: not retrying it");
                    let e = Error::CrashLoop {
                        function: cell.function.to_owned(),
                        deaths,
                    };
                    self.settle(&cell, Phase::Failed(e));
                }
            }
        }
        if !left_there.is_empty() {
            let mut orphans = lock(&self.inner.orphans);
            if let Some((_, ids)) = orphans.iter_mut().find(|(a, _)| *a == addr) {
                ids.extend(left_there);
            } else {
                if orphans.len() >= MAX_ORPHAN_WORKERS {
                    orphans.pop_front();
                }
                orphans.push_back((addr, left_there));
            }
        }
        // Oldest first: an argument is always submitted before its consumers.
        rerun.sort_by_key(|c| c.id.seq);
        for cell in rerun {
            tracing::info!(object = %cell.id, function = cell.function, "re-running on another worker");
            self.dispatch(&cell);
        }
    }

    /// Handles a worker's report that task `id` ended.
    fn task_done(
        &self,
        from: SocketAddr,
        id: ObjectId,
        outcome: dfut_net::wire::Outcome,
        load: (u32, u32),
        exec_us: u64,
    ) {
        use dfut_net::wire::{FailureKind, Outcome};
        let cell = lock(&self.inner.objects).get(&id).cloned();
        // A blocked task was already counted out of flight.
        let was_blocked = cell.as_ref().is_some_and(|c| {
            let mut st = c.lock();
            if st.blocked == Some(from) {
                st.blocked = None;
                true
            } else {
                false
            }
        });
        {
            let mut cluster = lock(&self.inner.cluster);
            if let Some(w) = cluster.workers.iter_mut().find(|w| w.addr == from) {
                if !was_blocked {
                    w.inflight = w.inflight.saturating_sub(1);
                }
                (w.load.running, w.load.queued) = load;
            }
            cluster.last_progress = std::time::Instant::now();
        }
        self.pump(false);
        let Some(cell) = cell else {
            return; // released and settled: its worker was told to free it
        };
        {
            let mut st = cell.lock();
            let primary = matches!(st.phase, Phase::Pending(h) | Phase::Running(h) if h == from);
            let backup = st.backup == Some(from);
            if !primary && !backup {
                // A stale report from a worker this task was moved away
                // from: its copy there is not wanted, unless that worker
                // holds the object now (the task ran there twice), the
                // task waits to be placed (a new run replaces the copy), or
                // dependents read it there (see `CellState::loser`).
                let holds =
                    matches!(st.phase, Phase::Finished { holder: Some(h), .. } if h == from);
                let keep = holds || st.loser == Some(from) || matches!(st.phase, Phase::Queued);
                if !keep {
                    drop(st);
                    self.send(from, Message::Free(vec![id]));
                }
                return;
            }
            if let Some(other) = if primary {
                st.backup
            } else {
                current_holder(&st.phase)
            } {
                if matches!(outcome, Outcome::Failed(_)) {
                    // The other copy may still succeed: let it run alone.
                    note_failed_at(&mut st, from);
                    if primary {
                        st.phase = Phase::Running(other);
                    }
                    st.backup = None;
                    return;
                }
                // First result wins. The other copy is cancelled, unless it
                // is the first one and a dependent may be reading it there:
                // then it finishes and is freed with the object.
                st.backup = None;
                if !primary && st.read_while_running {
                    // An earlier loser's copy is read by nobody now.
                    let earlier = st
                        .loser
                        .replace(other)
                        .filter(|l| *l != other && *l != from);
                    drop(st);
                    if let Some(l) = earlier {
                        self.send(l, Message::Free(vec![id]));
                    }
                } else {
                    drop(st);
                    self.send(other, Message::Cancel(vec![id]));
                }
            }
        }
        if self.inner.speculating.load(Ordering::Relaxed) && !matches!(outcome, Outcome::Failed(_))
        {
            let took = exec_us as f64 / 1e6;
            let mut latency = lock(&self.inner.latency);
            let mean = latency.entry(cell.function).or_insert(took);
            *mean = 0.8 * *mean + 0.2 * took;
        }
        match &outcome {
            Outcome::Inline(bytes) => cell.set_size(bytes.len() as u64),
            Outcome::Stored(size) => cell.set_size(*size),
            // The worker keeps the failure until the object is freed.
            Outcome::Failed(_) => note_failed_at(&mut cell.lock(), from),
        }
        let phase = match outcome {
            Outcome::Inline(bytes) => Phase::Finished {
                holder: Some(from),
                inline: Some(crate::blob::blob(bytes)),
            },
            Outcome::Stored(_) => Phase::Finished {
                holder: Some(from),
                inline: None,
            },
            Outcome::Failed(f) => {
                // An argument file it could not map: sent again as bytes.
                if f.kind == FailureKind::SharedUnmappable && requeue_from(&cell, from, |_| true) {
                    self.refuse_shm(from);
                    self.dispatch(&cell);
                    return;
                }
                // The task itself failed: re-run if it retries on error.
                if matches!(
                    f.kind,
                    FailureKind::Panicked | FailureKind::Returned | FailureKind::TimedOut
                ) && requeue_from(&cell, from, retries_on_error)
                {
                    tracing::debug!(object = %cell.id, function = cell.function, "retrying after: {}", f.message);
                    self.dispatch(&cell);
                    return;
                }
                // A dependency lost with its worker: re-run if allowed.
                if f.kind == FailureKind::WorkerLost {
                    let retry = requeue_from(&cell, from, take_retry);
                    tracing::debug!(object = %cell.id, function = cell.function, retry, "an argument was lost: {}", f.message);
                    if retry {
                        // The news of the loss may reach this owner a moment
                        // after it reached the worker: re-run once the lost
                        // arguments have been re-placed.
                        let client = self.clone();
                        self.inner.handle.spawn(async move {
                            tokio::time::sleep(LOSS_PROPAGATION).await;
                            client.dispatch(&cell);
                        });
                        return;
                    }
                }
                let attempt = cell
                    .lock()
                    .task
                    .as_ref()
                    .map_or(1, |t| t.attempts.load(Ordering::Relaxed));
                if f.kind == FailureKind::ArgumentFailed {
                    // Report the failed argument's own error, once known
                    // here; if none failed for good (it was re-run, say with
                    // `retry_on_error`), run this task again on the new value.
                    let client = self.clone();
                    let fallback = Error::from_failure(cell.function, &from.to_string(), &f)
                        .at_attempt(attempt);
                    self.inner.handle.spawn(async move {
                        match client.failed_argument(&cell).await {
                            Some(e) => client.settle(&cell, Phase::Failed(e)),
                            None if requeue_from(&cell, from, |_| true) => client.dispatch(&cell),
                            None if !cell.is_settled() => {
                                client.settle(&cell, Phase::Failed(fallback));
                            }
                            None => {}
                        }
                    });
                    return;
                }
                Phase::Failed(
                    Error::from_failure(cell.function, &from.to_string(), &f).at_attempt(attempt),
                )
            }
        };
        self.settle(&cell, phase);
    }

    /// The error of the first failed argument of `cell`'s task, waiting a
    /// little for the arguments to settle here.
    async fn failed_argument(&self, cell: &ObjectCell) -> Option<Error> {
        let deps: Vec<Arc<ObjectRef>> = cell
            .lock()
            .task
            .iter()
            .flat_map(TaskRecord::futures)
            .cloned()
            .collect();
        let settle_all = async {
            for d in &deps {
                d.cell.settled().await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), settle_all).await;
        deps.iter().find_map(|d| match &d.cell.lock().phase {
            Phase::Failed(e) => Some(e.clone()),
            _ => None,
        })
    }

    /// Turns on speculative re-execution: run times are recorded from now
    /// on, and stragglers are looked for every 20 ms.
    pub(crate) fn start_speculation(&self, rule: Speculation) {
        self.inner.speculating.store(true, Ordering::Relaxed);
        let weak = Arc::downgrade(&self.inner);
        self.inner.handle.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Client { inner }.speculate(&rule);
            }
        });
    }

    /// Starts a copy of every straggling task on another worker.
    fn speculate(&self, rule: &Speculation) {
        let cells: Vec<_> = lock(&self.inner.objects).values().cloned().collect();
        let latency = lock(&self.inner.latency).clone();
        // At most one copy per slot of the cluster at a time.
        let slots: usize = lock(&self.inner.cluster)
            .workers
            .iter()
            .map(|w| w.max_concurrent as usize)
            .sum();
        let outstanding = cells.iter().filter(|c| c.lock().backup.is_some()).count();
        let mut budget = slots.saturating_sub(outstanding);
        for cell in cells {
            if budget == 0 {
                return;
            }
            let Some(mean) = latency.get(cell.function) else {
                continue;
            };
            let limit = rule
                .min_wait
                .max(std::time::Duration::from_secs_f64(mean * rule.multiplier));
            // Checked, prepared and marked under the cell's lock, so the
            // task cannot finish or move meanwhile.
            if cell.released.load(Ordering::Relaxed) {
                continue; // nobody waits for it
            }
            let mut st = cell.lock();
            let (Some(holder), None, Some(task)) = (current_holder(&st.phase), st.backup, &st.task)
            else {
                continue;
            };
            if st.dispatched.elapsed() < limit {
                continue;
            }
            let Ok(Prepared {
                spec,
                fn_spec,
                strategy,
                pushes,
                ..
            }) = prepare(&cell, task, self.inner.inline_max, &self.inner.push_seq)
            else {
                continue;
            };
            // A hard affinity keeps the copy off other workers.
            let needs = task_needs(cell.function, &spec, fn_spec, &[], strategy);
            let Placement::Chosen(backup) =
                lock(&self.inner.cluster).place_avoiding(&needs, holder)
            else {
                continue;
            };
            st.backup = Some(backup);
            if let Some(task) = &st.task {
                task.attempts.fetch_add(1, Ordering::Relaxed);
            }
            drop(st);
            tracing::info!(object = %cell.id, function = cell.function, straggler = %holder, copy = %backup, "speculating");
            self.inner.speculated.fetch_add(1, Ordering::Relaxed);
            budget -= 1;
            self.send_task(backup, spec, pushes);
        }
    }

    /// Replaces the view of the cluster with what the scheduler sent.
    fn set_view(&self, mode: String, workers: Vec<WorkerState>) {
        // A worker given up on is back: free what this owner left there
        // before it is in the view again, so no new task can be placed on
        // it ahead of the free.
        let back: VecDeque<(SocketAddr, Vec<ObjectId>)> = {
            let mut orphans = lock(&self.inner.orphans);
            if orphans.is_empty() {
                VecDeque::new()
            } else {
                let listed: Vec<SocketAddr> = workers
                    .iter()
                    .filter_map(|w| w.info.addr.parse().ok())
                    .collect();
                let (back, rest) = orphans.drain(..).partition(|(a, _)| listed.contains(a));
                *orphans = rest;
                back
            }
        };
        for (addr, ids) in back {
            tracing::debug!(worker = %addr, objects = ids.len(), "a worker given up on is back: freeing what was left there");
            self.send(addr, Message::Free(ids));
        }
        if self.inner.worker_logs.load(Ordering::Relaxed) {
            // Every worker, not only those given work: its output is
            // asked for as soon as the link opens.
            for w in &workers {
                if let Ok(addr) = w.info.addr.parse() {
                    self.open_link(addr);
                }
            }
        }
        let shm_peers: Vec<SocketAddr> = match &self.inner.shm_host {
            Some(host) if self.inner.host_cache.is_some() => {
                // One that could not map a file of ours stays out.
                let refused = lock(&self.inner.shm_refused);
                workers
                    .iter()
                    .filter(|w| w.info.host == *host)
                    .filter_map(|w| w.info.addr.parse().ok())
                    .filter(|a| !refused.contains(a))
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut cluster = lock(&self.inner.cluster);
        cluster.shm_peers = shm_peers;
        let old: Vec<WorkerView> = cluster.workers.clone();
        let inflight: HashMap<u64, u32> = old.iter().map(|w| (w.id, w.inflight)).collect();
        let old_addrs: Vec<SocketAddr> = old.iter().map(|w| w.addr).collect();
        let mut suspect = Vec::new();
        cluster.workers = workers
            .into_iter()
            .filter_map(|w| {
                let addr = w.info.addr.parse().ok()?;
                // Late heartbeats, or too many threads stuck past their
                // deadlines: place nothing there for now.
                if w.suspect || w.load.unhealthy {
                    suspect.push(w.info.id);
                }
                Some(WorkerView {
                    id: w.info.id,
                    addr,
                    max_concurrent: w.info.max_concurrent,
                    hw_generation: w.info.hw_generation,
                    speed: f64::from(w.info.speed),
                    gpu: w.info.gpu,
                    gpus: w.info.gpus.max(u32::from(w.info.gpu)),
                    memory_mb: w.info.memory_mb,
                    custom: Arc::from(w.info.resources),
                    inflight: inflight.get(&w.info.id).copied().unwrap_or(0),
                    load: w.load,
                })
            })
            .collect();
        if !cluster.explicit_policy && cluster.policy.name() != mode {
            match crate::scheduler::policy_by_name(&mode) {
                Ok(p) => cluster.policy = p,
                Err(e) => tracing::debug!("keeping policy `{}`: {e}", cluster.policy.name()),
            }
        }
        cluster.suspect = suspect;
        let mut gone: Vec<SocketAddr> = old_addrs
            .into_iter()
            .filter(|a| !cluster.workers.iter().any(|w| w.addr == *a))
            .collect();
        if cluster
            .keep_until
            .is_some_and(|t| std::time::Instant::now() < t)
        {
            // Just reconnected to a (maybe restarted) scheduler: the
            // missing workers are probably registering again.
            let kept: Vec<WorkerView> =
                old.into_iter().filter(|w| gone.contains(&w.addr)).collect();
            cluster.workers.extend(kept);
            gone.clear();
        }
        drop(cluster);
        self.inner.view_changed.send_modify(|v| *v += 1);
        for addr in gone {
            self.worker_lost(addr, "no longer in the scheduler's view");
        }
        self.pump(false);
    }

    /// Keeps workers missing from the scheduler's views for `grace`.
    fn keep_workers_for(&self, grace: std::time::Duration) {
        lock(&self.inner.cluster).keep_until = Some(std::time::Instant::now() + grace);
    }

    fn worker_addr(&self, id: u64) -> Option<SocketAddr> {
        lock(&self.inner.cluster)
            .workers
            .iter()
            .find(|w| w.id == id)
            .map(|w| w.addr)
    }
}

/// Why a task cannot be sent now.
enum Unready {
    /// An argument failed: so does the task.
    Failed(Error),
    /// An argument's task has not been sent yet.
    ArgQueued,
}

/// What `Client::resurrect` found.
enum Revived {
    /// The argument's value is alive: a handle to it.
    Held(Arc<ObjectRef>),
    /// It was freed and is queued to be computed again.
    Rebuilt(Arc<ObjectRef>),
    /// Not yet: its last handle is being dropped on another thread, or
    /// its task, released while running, has not settled.
    NotYet,
}

/// The most bytes of task records an owner keeps as lineage after their
/// tasks finished (see `TaskRecord::weight`). Past it, new results of
/// tasks with retries are not kept rebuildable: their tasks are still
/// retried while they run.
pub(crate) const MAX_LINEAGE_BYTES: u64 = 256 << 20;

/// What became of a dispatch.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// Sent, or settled (failed): nothing more to do.
    Done,
    /// Every eligible worker is full: the task must wait.
    Full,
    /// An argument's task is not sent yet: the task must wait for it.
    ArgQueued,
}

/// The worker running a task in this phase.
fn current_holder(phase: &Phase) -> Option<SocketAddr> {
    match phase {
        Phase::Pending(h) | Phase::Running(h) => Some(*h),
        _ => None,
    }
}

/// Queues `cell`'s task again if it is still sent to or running on `from`
/// and `allow` agrees, in one critical section: a worker loss handled
/// meanwhile cannot queue it a second time.
fn requeue_from(
    cell: &ObjectCell,
    from: SocketAddr,
    allow: impl FnOnce(&mut crate::object::CellState) -> bool,
) -> bool {
    let mut st = cell.lock();
    let held = matches!(st.phase, Phase::Pending(h) | Phase::Running(h) if h == from);
    if held && allow(&mut st) {
        // Not a settled phase: nobody waits on this change.
        st.phase = Phase::Queued;
        true
    } else {
        false
    }
}

/// About how many bytes `arg` takes in a message: its values, and a
/// reference's id and holder address.
fn wired_bytes(arg: &Arg) -> usize {
    const REF: usize = 64;
    match arg {
        Arg::Value(v) => v.len(),
        Arg::Ref { .. } | Arg::Pushed { .. } | Arg::Shared { .. } => REF,
        Arg::List(items) => items
            .iter()
            .map(|i| match i {
                Item::Value(v) => v.len(),
                Item::Ref { .. } => REF,
            })
            .sum(),
    }
}

/// Remembers that `from` keeps a failure record of this object.
fn note_failed_at(st: &mut crate::object::CellState, from: SocketAddr) {
    if !st.failed_at.contains(&from) {
        st.failed_at.push(from);
    }
}

/// Uses up one retry of a task that retries on error, if it has any left.
fn retries_on_error(st: &mut crate::object::CellState) -> bool {
    st.task.as_ref().is_some_and(|t| t.retry_on_error) && take_retry(st)
}

/// Same-host workers an owner remembers as unable to map its files.
const MAX_SHM_REFUSED: usize = 1024;

/// Workers given up on whose leftover objects an owner remembers.
const MAX_ORPHAN_WORKERS: usize = 64;

/// A task is given up once this many workers died while it was known to
/// be running on them: it is most likely what kills them. External kills
/// almost never hit one task three times while it runs (a task re-run
/// after a loss confirms its start with the owner, so the count is exact).
pub(crate) const CRASH_LIMIT: u32 = 3;

/// Uses up one retry of the task, if it has any left.
fn take_retry(st: &mut crate::object::CellState) -> bool {
    match st.task.as_mut() {
        Some(t) if t.retries_left > 0 => {
            t.retries_left -= 1;
            true
        }
        _ => false,
    }
}

/// The phase of an argument about to be sent; notes when the reader will
/// find it on the worker still computing it (see `CellState::loser`).
fn read_phase(cell: &ObjectCell) -> Phase {
    let mut st = cell.lock();
    if matches!(st.phase, Phase::Pending(_) | Phase::Running(_)) {
        st.read_while_running = true;
    }
    st.phase.clone()
}

/// One argument as sent: its value, or where the worker finds it.
enum Wired {
    Value(Vec<u8>),
    Ref { id: ObjectId, holder: SocketAddr },
}

/// How a single argument travels; records where referenced ones live.
fn wire_one(
    arg: &ArgSource,
    placements: &mut Vec<ArgPlacement>,
) -> std::result::Result<Wired, Unready> {
    match arg {
        ArgSource::Value(blob) => Ok(Wired::Value(blob.to_vec())),
        // Revived before `prepare`; should one remain, the task waits.
        ArgSource::Lineage(_) => Err(Unready::ArgQueued),
        ArgSource::List(_) => Err(Unready::Failed(Error::Encode(
            "a list argument cannot contain another list".into(),
        ))),
        ArgSource::Future(dep) => match read_phase(&dep.cell) {
            Phase::Failed(e) => Err(Unready::Failed(e)),
            Phase::Queued => Err(Unready::ArgQueued),
            Phase::Finished {
                inline: Some(blob), ..
            } => Ok(Wired::Value(blob.to_vec())),
            Phase::Finished {
                holder: Some(h), ..
            }
            | Phase::Pending(h)
            | Phase::Running(h) => {
                placements.push(ArgPlacement {
                    id: dep.cell.id,
                    holder: h,
                    bytes: dep.cell.size(),
                    readers: dep.cell.readers.load(Ordering::Relaxed),
                });
                Ok(Wired::Ref {
                    id: dep.cell.id,
                    holder: h,
                })
            }
            Phase::Finished {
                holder: None,
                inline: None,
            } => Err(Unready::Failed(Error::ObjectUnavailable(
                dep.cell.id.to_string(),
            ))),
        },
    }
}

/// A task ready to send.
struct Prepared {
    /// Its wire form.
    spec: TaskSpec,
    /// Where its referenced arguments live.
    placements: Vec<ArgPlacement>,
    /// The function's compile-time options.
    fn_spec: &'static FnSpec,
    /// Where the call may run.
    strategy: crate::options::Strategy,
    /// Large argument values to push beside it (`Arg::Pushed`).
    pushes: Vec<(u64, Blob)>,
}

/// What placement needs to know of a prepared task.
fn task_needs<'a>(
    function: &'a str,
    spec: &'a TaskSpec,
    fn_spec: &FnSpec,
    args: &'a [ArgPlacement],
    strategy: crate::options::Strategy,
) -> TaskNeeds<'a> {
    let r = &spec.resources;
    TaskNeeds {
        function,
        gpu: fn_spec.gpu || r.gpus > 0,
        cpus: r.cpus,
        gpus: r.gpus,
        memory_mb: r.memory_mb,
        custom: &r.custom,
        args,
        cost: fn_spec.cost,
        strategy,
    }
}

/// The wire form of a task and where its arguments live; fails if an
/// argument already failed.
fn prepare(
    cell: &ObjectCell,
    task: &TaskRecord,
    inline_max: u32,
    push_seq: &AtomicU64,
) -> std::result::Result<Prepared, Unready> {
    let mut args = Vec::with_capacity(task.args.len());
    let mut placements = Vec::new();
    let mut pushes = Vec::new();
    for arg in &task.args {
        args.push(match arg {
            // Large values go on streams of their own, beside the task.
            ArgSource::Value(blob) if blob.len() > crate::limits::LARGE => {
                let req = push_seq.fetch_add(1, Ordering::Relaxed);
                pushes.push((req, blob.clone()));
                Arg::Pushed {
                    req,
                    len: blob.len() as u64,
                }
            }
            ArgSource::List(items) => Arg::List(
                items
                    .iter()
                    .map(|i| {
                        wire_one(i, &mut placements).map(|w| match w {
                            Wired::Value(v) => Item::Value(v),
                            Wired::Ref { id, holder } => Item::Ref {
                                id,
                                holder: holder.to_string(),
                            },
                        })
                    })
                    .collect::<std::result::Result<_, _>>()?,
            ),
            one => match wire_one(one, &mut placements)? {
                Wired::Value(v) => Arg::Value(v),
                Wired::Ref { id, holder } => Arg::Ref {
                    id,
                    holder: holder.to_string(),
                },
            },
        });
    }
    // Everything it carries counts, results read inline too: a task that
    // would not fit in one message fails here, before it is sent.
    let wired: usize = args.iter().map(wired_bytes).sum();
    if wired > crate::limits::max_value() {
        return Err(Unready::Failed(Error::Encode(
            crate::limits::too_large(
                &format!("the arguments of `{}`, as sent", task.spec.name),
                wired,
            )
            .into(),
        )));
    }
    let spec = TaskSpec {
        id: cell.id,
        function: task.spec.name.to_owned(),
        signature: (task.spec.signature)(),
        args,
        inline_max,
        timeout_ms: task.timeout_ms,
        confirm_start: task.lost_runs > 0,
        low_priority: cell.low.load(Ordering::Relaxed),
        submitted_us: crate::clock::unix_us(cell.created),
        resources: task.resources.clone(),
    };
    Ok(Prepared {
        spec,
        placements,
        fn_spec: task.spec,
        strategy: task.strategy,
        pushes,
    })
}

/// The printing thread of workers' lines: until the client is gone.
fn print_batches(
    rx: &std::sync::mpsc::Receiver<LogBatch>,
    printed: &AtomicU64,
    not_shown: &AtomicU64,
) {
    use std::io::Write;
    while let Ok((addr, pid, lines, dropped)) = rx.recv() {
        for line in &lines {
            let text = &line.text;
            let _ = if line.stderr {
                writeln!(std::io::stderr(), "(pid={pid}, ip={addr}) {text}")
            } else {
                writeln!(std::io::stdout(), "(pid={pid}, ip={addr}) {text}")
            };
        }
        let behind = not_shown.swap(0, Ordering::Relaxed) + dropped;
        if behind > 0 {
            let _ = writeln!(
                std::io::stderr(),
                "(pid={pid}, ip={addr}) [dfut: {behind} lines not shown: printed faster than \
                 they could be sent or shown; all are in the worker's log file]"
            );
        }
        printed.fetch_add(lines.len() as u64, Ordering::Relaxed);
    }
}
