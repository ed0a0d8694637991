//! The messages dfut processes exchange, as rkyv archives.
//!
//! Every frame on a link carries one [`Message`]. Received bytes are
//! validated with `rkyv::access` before anything reads them, so a peer can
//! make a frame fail but cannot make a reader trust bad bytes. Task arguments
//! and results travel as opaque byte vectors: their types are the business of
//! `dfut`, not of the transport.

use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

/// The bytes of a [`Message::Bulk`]: shared, never copied to be sent.
///
/// A payload never travels inside a frame. The link writes it on a QUIC
/// stream of its own, in chunks under the stream's flow control, so a value
/// of any size moves without a whole-object frame and without holding up
/// the small messages behind it.
///
/// ```
/// use std::sync::Arc;
/// use dfut_net::wire::Payload;
///
/// let p = Payload::new(Arc::new(vec![1u8, 2, 3]));
/// assert_eq!(p.as_slice(), &[1, 2, 3]);
/// assert!(Payload::default().as_slice().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Payload(Option<Arc<dyn AsRef<[u8]> + Send + Sync>>);

impl Payload {
    /// Wraps shared bytes.
    pub fn new(bytes: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Self {
        Self(Some(bytes))
    }

    /// The bytes (empty for a default payload).
    pub fn as_slice(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |b| (**b).as_ref())
    }

    /// The shared bytes themselves, without a copy.
    pub fn into_shared(self) -> Option<Arc<dyn AsRef<[u8]> + Send + Sync>> {
        self.0
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.as_slice().len())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

/// Identifies one object (a task's result) cluster-wide: the node that owns
/// it and a sequence number unique within that owner.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct ObjectId {
    /// The id of the owner node (the process that submitted the task).
    pub owner: u64,
    /// The owner's sequence number for this object.
    pub seq: u64,
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}:{}", self.owner, self.seq)
    }
}

/// What a worker is and what it can do, sent once when it registers.
///
/// It gains fields as workers describe more of themselves: outside this
/// crate, start from `WorkerInfo::default()` and set fields.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's node id.
    pub id: u64,
    /// The address other processes connect to.
    pub addr: String,
    /// How many tasks it runs at once.
    pub max_concurrent: u32,
    /// Hardware generation as set by flag (higher is faster).
    pub hw_generation: u32,
    /// Whether it runs GPU tasks.
    pub gpu: bool,
    /// Its operating-system process id.
    pub pid: u32,
    /// Speed measured by a calibration run at start, relative to a
    /// reference machine (1.0); higher is faster.
    pub speed: f32,
    /// Its host identity: processes with the same one share a machine
    /// (and anything host-local, such as shared memory).
    pub host: String,
    /// GPUs it declares (0 unless it runs GPU tasks).
    pub gpus: u32,
    /// Memory it declares, in MiB (a placement constraint).
    pub memory_mb: u64,
    /// Custom resources it declares (`--resources name=amount`), each name
    /// once.
    pub resources: Vec<ResourceAmount>,
}

/// An amount of a named resource (declared by a worker, or needed by a
/// task).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResourceAmount {
    /// The resource's name.
    pub name: String,
    /// How many units.
    pub amount: u32,
}

/// What a task takes from its worker while it runs: CPUs (slots), GPUs,
/// memory and custom resources. The default is one CPU and nothing else.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    /// Slots it holds while running (at least 1).
    pub cpus: u32,
    /// GPUs it holds while running.
    pub gpus: u32,
    /// Memory it reserves while running, in MiB (not enforced).
    pub memory_mb: u64,
    /// Custom resources it holds while running, each name once.
    pub custom: Vec<ResourceAmount>,
}

impl Default for ResourceRequest {
    fn default() -> Self {
        Self {
            cpus: 1,
            gpus: 0,
            memory_mb: 0,
            custom: Vec::new(),
        }
    }
}

impl ResourceRequest {
    /// Whether it asks for one CPU and nothing else (what most tasks ask).
    pub fn is_one_cpu(&self) -> bool {
        self.cpus <= 1 && self.gpus == 0 && self.memory_mb == 0 && self.custom.is_empty()
    }
}

/// A worker's load, sent with every heartbeat.
///
/// It gains counters over time: outside this crate, start from
/// `WorkerLoad::default()` and set fields.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct WorkerLoad {
    /// Tasks executing now.
    pub running: u32,
    /// Tasks received and not yet executing (waiting for arguments or a slot).
    pub queued: u32,
    /// Objects held in its store.
    pub objects: u64,
    /// Bytes held in its store, wherever they are.
    pub object_bytes: u64,
    /// Of those, bytes in this host's shared memory.
    pub shared_bytes: u64,
    /// Of those, bytes spilled to disk.
    pub spilled_bytes: u64,
    /// Objects spilled to disk.
    pub spilled_objects: u64,
    /// Bytes of objects this worker fetched from other hosts over the
    /// network, since start (not those mapped from this host's shared
    /// memory).
    pub fetched_bytes: u64,
    /// Bytes of other processes' objects this worker mapped from this
    /// host's shared memory instead, since start.
    pub mapped_bytes: u64,
    /// Tasks finished successfully since start.
    pub tasks_done: u64,
    /// Tasks failed since start.
    pub tasks_failed: u64,
    /// Sync tasks still running after their deadline failed them (their
    /// threads come back when they return).
    pub abandoned: u32,
    /// Too many abandoned threads: owners place nothing here until some
    /// return.
    pub unhealthy: bool,
}

/// One worker as the scheduler sees it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkerState {
    /// What it is.
    pub info: WorkerInfo,
    /// Its last reported load.
    pub load: WorkerLoad,
    /// It missed its last heartbeats: still a member, but not to be chosen.
    pub suspect: bool,
}

impl WorkerState {
    /// A worker with its load, not suspect.
    pub fn new(info: WorkerInfo, load: WorkerLoad) -> Self {
        Self {
            info,
            load,
            suspect: false,
        }
    }
}

/// A task argument: either its encoded value, or a reference to an object
/// held by a worker, which the executing worker fetches itself.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Arg {
    /// The encoded value.
    Value(Vec<u8>),
    /// An object held elsewhere.
    Ref {
        /// The object.
        id: ObjectId,
        /// Address of the worker that holds (or is computing) it.
        holder: String,
    },
    /// A list of values and references, for a `dfut::Many<T>` parameter.
    List(Vec<Item>),
    /// A large value the owner sends on a stream of its own as a
    /// [`Message::Bulk`] with this `req`, on the same connection.
    Pushed {
        /// The bulk message's number, unique per owner.
        req: u64,
        /// The value's length in bytes.
        len: u64,
    },
    /// A large value the owner sealed in this host's shared memory: the
    /// worker (on the same host) maps the file, which stays while the
    /// owner keeps the task.
    Shared {
        /// The file's path.
        path: String,
        /// The value's length in bytes.
        len: u64,
    },
}

/// One element of an [`Arg::List`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Item {
    /// The encoded value.
    Value(Vec<u8>),
    /// An object held elsewhere.
    Ref {
        /// The object.
        id: ObjectId,
        /// Address of the worker that holds (or is computing) it.
        holder: String,
    },
}

/// A task to execute.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The id its result will have.
    pub id: ObjectId,
    /// The registered name of the remote function.
    pub function: String,
    /// A hash of the function's argument and result types as the caller
    /// was compiled with them; a worker whose function of that name has
    /// another refuses the task ([`FailureKind::SignatureMismatch`]). 0:
    /// not checked.
    pub signature: u64,
    /// Its arguments, in order.
    pub args: Vec<Arg>,
    /// Results up to this size are sent back inline with the completion.
    pub inline_max: u32,
    /// The task fails with [`FailureKind::TimedOut`] if it runs longer than
    /// this many milliseconds; 0 means no deadline.
    pub timeout_ms: u32,
    /// The task is re-run after a worker died while it may have run: the
    /// worker waits for [`Message::Confirmed`] after its start notice, so
    /// the owner knows for sure whether it was running should this worker
    /// die too.
    pub confirm_start: bool,
    /// Background work (a prefetch): it waits behind every normal task,
    /// and leaves one slot of a multi-slot worker to normal tasks.
    pub low_priority: bool,
    /// When the owner created the task, in microseconds since the Unix
    /// epoch by the owner's clock (0: not said); shown in task listings
    /// and timelines.
    pub submitted_us: u64,
    /// What it takes from the worker while it runs.
    pub resources: ResourceRequest,
}

/// Why a task or a fetch failed, as sent between processes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The function panicked.
    Panicked,
    /// The function returned an error.
    Returned,
    /// The worker has no function of that name.
    UnknownFunction,
    /// An argument could not be decoded as the declared type.
    Decode,
    /// The result could not be encoded.
    Encode,
    /// The object is not (or no longer) held there.
    NoSuchObject,
    /// A worker needed for the task was lost.
    WorkerLost,
    /// An argument of the task failed (its own error is at its owner).
    ArgumentFailed,
    /// The task ran past its deadline; the message is the deadline in
    /// milliseconds.
    TimedOut,
    /// The worker cannot keep the object: its store is full and the
    /// object could not be spilled to disk.
    StoreFull,
    /// An argument sealed in shared memory ([`Arg::Shared`]) cannot be
    /// mapped there: the owner sends it again as bytes.
    SharedUnmappable,
    /// The worker's function of that name takes or returns other types
    /// than the caller's (they were built from different sources).
    SignatureMismatch,
    /// Some other failure.
    Other,
}

/// A failure with its message.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The message, e.g. the panic message.
    pub message: String,
    /// Where it happened in the remote code (a panic's
    /// `file:line:column`); empty if unknown.
    pub location: String,
    /// The messages of the error's sources, outermost first (an `Err`
    /// whose type implements `std::error::Error`); empty if none.
    pub causes: Vec<String>,
    /// The panic's backtrace, when the worker captured one
    /// (`RUST_BACKTRACE=1`); empty otherwise.
    pub backtrace: String,
}

/// How a task ended.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished; the encoded result is small enough to travel inline. The
    /// worker keeps a copy too.
    Inline(Vec<u8>),
    /// Finished; the result is held by the worker, this many bytes.
    Stored(u64),
    /// Failed.
    Failed(Failure),
}

/// A cluster-wide summary printed by `dfut status`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// The scheduler's placement policy.
    pub mode: String,
    /// Live workers.
    pub workers: Vec<WorkerState>,
}

impl ClusterStatus {
    /// The summary of a cluster placing with `mode`.
    pub fn new(mode: String, workers: Vec<WorkerState>) -> Self {
        Self { mode, workers }
    }
}

/// How far along an object held by a worker is, and where its bytes are.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectState {
    /// Computed; in the worker's memory.
    Heap,
    /// Computed; sealed in the host's shared memory.
    Shared,
    /// Computed; spilled to the worker's local disk.
    Spilled,
    /// Being computed there (or awaited by a reader there).
    Computing,
    /// Its task failed; the failure is kept for dependents.
    Failed,
}

/// One object a worker holds, as `dfut objects` lists it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ObjectListing {
    /// The object.
    pub id: ObjectId,
    /// Its encoded size in bytes (0 unless computed).
    pub bytes: u64,
    /// Where it stands.
    pub state: ObjectState,
    /// The worker holding it.
    pub holder: String,
    /// References its owner holds (handles, and tasks that read it); `None`
    /// when the owner did not answer (gone, or too slow).
    pub refs: Option<u32>,
    /// The function that computes it, as its owner knows it (empty when
    /// the owner did not answer).
    pub function: String,
}

impl ObjectListing {
    /// Object `id` in `state` at `holder`: no size, references or function
    /// known yet.
    pub fn new(id: ObjectId, state: ObjectState, holder: String) -> Self {
        Self {
            id,
            bytes: 0,
            state,
            holder,
            refs: None,
            function: String::new(),
        }
    }
}

/// Where a task stands, as `dfut tasks` lists it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskState {
    /// Waiting in its owner's backlog: not yet sent to any worker.
    Backlog,
    /// At a worker, waiting for its arguments or a slot.
    Queued,
    /// Running at a worker.
    Running,
    /// Finished with a value.
    Finished,
    /// Ended with a failure (panic, error, timeout, cancellation).
    Failed,
}

/// Where a task ran on its worker.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunKind {
    /// Not started (or refused before it started).
    None,
    /// On the thread that received it (a short sync task).
    Inline,
    /// In one of the worker's slots.
    Slot,
    /// On the background lane (a low-priority task; it holds no slot).
    Background,
    /// On the worker's runtime (an async task).
    Async,
}

/// One task, as a worker, or an owner for its backlog, lists it.
/// Times are microseconds since the Unix epoch, each by the clock of the
/// process that saw the moment (the owner for `submitted_us`, the worker
/// for the others); 0 where the moment has not come (or is unknown).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskListing {
    /// The task's result id (its owner is `id.owner`).
    pub id: ObjectId,
    /// The function's registered name.
    pub function: String,
    /// Where it stands.
    pub state: TaskState,
    /// The worker it was sent to (empty while in its owner's backlog).
    pub worker: String,
    /// How it ran there.
    pub kind: RunKind,
    /// When its owner created it.
    pub submitted_us: u64,
    /// When the worker received it.
    pub received_us: u64,
    /// When it started running.
    pub started_us: u64,
    /// When it ended.
    pub ended_us: u64,
    /// Why it failed (the first line, at most 200 bytes); empty otherwise.
    pub error: String,
}

impl TaskListing {
    /// Task `id` of `function` in `state`, nothing else known yet.
    pub fn new(id: ObjectId, function: String, state: TaskState) -> Self {
        Self {
            id,
            function,
            state,
            worker: String::new(),
            kind: RunKind::None,
            submitted_us: 0,
            received_us: 0,
            started_us: 0,
            ended_us: 0,
            error: String::new(),
        }
    }
}

/// One object a worker served to a reader, as timelines draw it. Times as
/// in [`TaskListing`], by the worker's clock.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FetchListing {
    /// The object.
    pub id: ObjectId,
    /// The worker that served it.
    pub worker: String,
    /// The reader's address.
    pub reader: String,
    /// Bytes served (0 when it failed).
    pub bytes: u64,
    /// Whether the reader was told a shared-memory file rather than sent
    /// the bytes.
    pub shared: bool,
    /// When the request arrived.
    pub started_us: u64,
    /// When the answer was handed to the connection.
    pub ended_us: u64,
}

impl FetchListing {
    /// Object `id` served by `worker` to `reader`; no size or times yet.
    pub fn new(id: ObjectId, worker: String, reader: String) -> Self {
        Self {
            id,
            worker,
            reader,
            bytes: 0,
            shared: false,
            started_us: 0,
            ended_us: 0,
        }
    }
}

/// Upper bounds, in microseconds, of the buckets of the run-time
/// histograms a worker keeps per function (the last bucket, past them all,
/// is unbounded).
pub const RUN_BUCKETS_US: [u64; 12] = [
    50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000,
];

/// What a worker counted of one function's tasks since it started.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct FunctionMetrics {
    /// The function's registered name.
    pub function: String,
    /// Tasks that ended with a value.
    pub finished: u64,
    /// Tasks that ended with a failure.
    pub failed: u64,
    /// Tasks that ran, by run time: `runs[i]` ran at most
    /// `RUN_BUCKETS_US[i]` µs (and more than the bound before); the last
    /// entry counts those longer than every bound.
    pub runs: Vec<u64>,
    /// Their run times added up, in microseconds.
    pub run_us: u64,
}

impl FunctionMetrics {
    /// No task of `function` counted yet.
    pub fn new(function: String) -> Self {
        Self {
            function,
            runs: vec![0; RUN_BUCKETS_US.len() + 1],
            ..Self::default()
        }
    }
}

/// One line a worker process printed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Printed to standard error (else standard output).
    pub stderr: bool,
    /// The line, without its end.
    pub text: String,
}

/// The role a connecting peer declares in its first message.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A driver or any process submitting tasks.
    Client,
    /// A worker.
    Worker,
    /// A command-line tool asking for status.
    Tool,
}

/// Every message on a dfut link.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Message {
    /// First message of a link: who is speaking.
    Hello {
        /// The speaker's node id.
        node: u64,
        /// The speaker's role.
        role: Role,
        /// A random secret of the speaker's process, the same on all its
        /// connections: a worker lets only connections showing the secret
        /// that first came with `node` act for that owner.
        secret: u128,
    },
    /// Worker → scheduler: join the cluster.
    Register(WorkerInfo),
    /// Worker → scheduler: I am alive, with this load.
    Heartbeat(WorkerLoad),
    /// Client → scheduler: send me the membership view and its changes.
    Subscribe,
    /// Scheduler → client: the live workers and the placement policy.
    View {
        /// The placement policy clients should use.
        mode: String,
        /// Live workers.
        workers: Vec<WorkerState>,
        /// Milliseconds between views: a client that hears nothing for
        /// many of them takes the scheduler for dead.
        tick_ms: u32,
    },
    /// Scheduler → client: this worker is gone.
    WorkerLost {
        /// Its node id.
        id: u64,
    },
    /// Tool → scheduler: send the cluster status.
    StatusRequest,
    /// Scheduler → tool: the cluster status.
    StatusReply(ClusterStatus),
    /// Owner → worker: run these tasks.
    Submit(Vec<TaskSpec>),
    /// Worker → owner: this task started executing.
    Started(ObjectId),
    /// Worker → owner: this task ended.
    Done {
        /// The task's result id.
        id: ObjectId,
        /// How it ended.
        outcome: Outcome,
        /// Tasks running on the worker after this one ended.
        running: u32,
        /// Tasks queued on the worker after this one ended.
        queued: u32,
        /// Microseconds the task held its slot (injected delay included).
        exec_us: u64,
    },
    /// Any → worker: send me this object when it is ready.
    Fetch {
        /// Request number, echoed in the reply.
        req: u64,
        /// The object wanted.
        id: ObjectId,
        /// The fetcher's host identity when it can map this host's shared
        /// memory (empty otherwise): a holder on the same host answers
        /// with [`Message::FetchedShared`] instead of the bytes.
        host: String,
    },
    /// Worker → fetcher on the same host: the object is sealed in this
    /// shared-memory file; map it read-only.
    FetchedShared {
        /// The request number.
        req: u64,
        /// The file's path.
        path: String,
        /// Its length in bytes.
        len: u64,
    },
    /// Bytes sent on a stream of their own, never inside a frame: the
    /// value of a fetch (`req` is its request number) or an argument
    /// pushed ahead of its task (`req` names it in [`Arg::Pushed`]).
    /// Arriving as a frame, its payload is empty.
    Bulk {
        /// What the bytes answer or carry.
        req: u64,
        /// The bytes.
        #[rkyv(with = rkyv::with::Skip)]
        payload: Payload,
    },
    /// Worker → fetcher: the object, or why not.
    Fetched {
        /// The request number.
        req: u64,
        /// The encoded object or a failure.
        result: Result<Vec<u8>, Failure>,
    },
    /// Owner → worker: no reference to these objects remains; free them.
    Free(Vec<ObjectId>),
    /// Worker → peer: stop talking, I am shutting down.
    Goodbye,
    /// Worker → owner: this task is blocked in a nested wait and holds no
    /// slot (it no longer counts against the owner's admission window).
    Blocked(ObjectId),
    /// Worker → owner: this task's nested wait ended; it runs again.
    Resumed(ObjectId),
    /// Scheduler → worker: your heartbeat arrived (a worker that hears
    /// nothing for many heartbeats takes the scheduler for dead).
    HeartbeatAck,
    /// Scheduler → worker: your heartbeat names no member (you were
    /// dropped while alive, or the scheduler restarted): register again.
    RegisterAgain,
    /// Owner → worker: the start notice of this task arrived (sent for
    /// tasks with `confirm_start`).
    Confirmed(ObjectId),
    /// Owner → worker: cancel these tasks (a queued one never runs, a
    /// running one's result is discarded) and free their results.
    Cancel(Vec<ObjectId>),
    /// Tool → worker: list your largest objects (at most `limit`).
    ObjectsRequest {
        /// Request number, echoed in the reply.
        req: u64,
        /// The most objects to list.
        limit: u32,
    },
    /// Worker → tool: its largest objects, largest first.
    ObjectsReply {
        /// The request number.
        req: u64,
        /// The objects.
        objects: Vec<ObjectListing>,
    },
    /// Tool → worker or scheduler, scheduler → owner: list your tasks (a
    /// worker: queued, running and the most recent ended ones, at most
    /// `limit`; an owner: those in its backlog; the scheduler gathers the
    /// owners' answers).
    TasksRequest {
        /// Request number, echoed in the reply.
        req: u64,
        /// The most tasks (and fetches) to list.
        limit: u32,
        /// Only tasks in this state (`None`: all).
        state: Option<TaskState>,
    },
    /// The answer to [`Message::TasksRequest`].
    TasksReply {
        /// The request number.
        req: u64,
        /// The tasks.
        tasks: Vec<TaskListing>,
        /// Objects served to readers (from workers only).
        fetches: Vec<FetchListing>,
    },
    /// Owner → worker: send me what you print ([`Message::Logs`]).
    WantLogs,
    /// Worker → owner: lines it printed since the last batch.
    Logs {
        /// The worker's process id.
        pid: u32,
        /// The lines, in order.
        lines: Vec<LogLine>,
        /// Lines dropped since the last batch (too many waiting).
        dropped: u64,
    },
    /// Scheduler → worker: what have you counted of each function?
    MetricsRequest {
        /// Request number, echoed in the reply.
        req: u64,
    },
    /// Worker → scheduler: its counts, one entry per function that ran.
    MetricsReply {
        /// The request number.
        req: u64,
        /// The counts.
        functions: Vec<FunctionMetrics>,
    },
    /// Worker → owner: how many references do you hold to these objects?
    RefQuery {
        /// Request number, echoed in the reply.
        req: u64,
        /// The objects, all of this owner.
        ids: Vec<ObjectId>,
    },
    /// Owner → worker: the references to each object asked about (0 for
    /// one it no longer references), and its function's name.
    RefReply {
        /// The request number.
        req: u64,
        /// One entry per object, in the order asked.
        refs: Vec<(u32, String)>,
    },
}
