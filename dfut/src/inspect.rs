//! Looking into a running cluster: its tasks and objects, filtered, and a
//! timeline of what ran where.
//!
//! The same as the `dfut tasks`, `dfut objects` and `dfut timeline`
//! commands, from Rust: ask with [`Client::tasks`](crate::Client::tasks)
//! and [`Client::objects`](crate::Client::objects) (or
//! [`query_tasks`](crate::scheduler::query_tasks) and
//! [`query_objects`](crate::scheduler::query_objects) from any process
//! holding the credential), narrow with a [`TaskFilter`] or an
//! [`ObjectFilter`], and draw a [`TaskReport`] with
//! [`timeline::chrome_trace`] or [`timeline::svg`].
//!
//! ```
//! use dfut::inspect::{TaskFilter, TaskState};
//!
//! #[dfut::remote]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
//! let _ctx = rt.enter();
//! let nine = square(3);
//! nine.get()?;
//! let finished = TaskFilter::new().state(TaskState::Finished).function("square");
//! let report = rt.block_on(rt.client().tasks(&finished, 1000))?;
//! assert!(report.tasks.iter().any(|t| t.id == nine.id()));
//! let failed = TaskFilter::new().state(TaskState::Failed);
//! assert!(failed.apply(&report.tasks).is_empty());
//! let trace = dfut::inspect::timeline::chrome_trace(&report);
//! assert!(trace.contains("traceEvents"));
//! # Ok::<(), dfut::Error>(())
//! ```

pub mod timeline;

pub use dfut_net::wire::{
    FetchListing, ObjectListing, ObjectState, RunKind, TaskListing, TaskState,
};

/// The tasks of a cluster and the objects its workers served, as
/// [`query_tasks`](crate::scheduler::query_tasks) gathers them.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TaskReport {
    /// Tasks: running, then queued at workers, then waiting in owners'
    /// backlogs (each oldest first), then ended ones, newest first.
    pub tasks: Vec<TaskListing>,
    /// Objects served to readers, newest first.
    pub fetches: Vec<FetchListing>,
    /// The live workers asked.
    pub workers: Vec<String>,
}

impl TaskReport {
    /// Puts tasks and fetches in the documented order.
    pub(crate) fn sort(&mut self) {
        fn rank(state: TaskState) -> u8 {
            match state {
                TaskState::Running => 0,
                TaskState::Queued => 1,
                TaskState::Backlog => 2,
                _ => 3,
            }
        }
        self.tasks.sort_by_key(|t| {
            let live = rank(t.state) < 3;
            let since = if live {
                t.started_us.max(t.received_us).max(t.submitted_us)
            } else {
                u64::MAX - t.ended_us
            };
            (rank(t.state), since)
        });
        self.fetches
            .sort_by_key(|f| std::cmp::Reverse(f.started_us));
    }
}

/// Which tasks to keep from a listing; every condition set must hold.
///
/// ```
/// use dfut::inspect::{TaskFilter, TaskListing, TaskState};
/// use dfut::scheduler::ObjectId;
///
/// let id = ObjectId { owner: 0xab, seq: 1 };
/// let failed = TaskListing::new(id, "app::parse".into(), TaskState::Failed);
/// assert!(TaskFilter::new().state(TaskState::Failed).function("parse").matches(&failed));
/// assert!(!TaskFilter::new().owner(0xcd).matches(&failed));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TaskFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks whose function name contains this.
    pub function: Option<String>,
    /// Only tasks sent to this worker (its address as listed).
    pub worker: Option<String>,
    /// Only tasks of this owner (its node id).
    pub owner: Option<u64>,
}

impl TaskFilter {
    /// Keeps every task.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only tasks in `state`.
    pub fn state(mut self, state: TaskState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only tasks whose function name contains `part`.
    pub fn function(mut self, part: impl Into<String>) -> Self {
        self.function = Some(part.into());
        self
    }

    /// Only tasks sent to `worker`.
    pub fn worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    /// Only tasks of `owner`.
    pub fn owner(mut self, owner: u64) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Whether `task` passes.
    pub fn matches(&self, task: &TaskListing) -> bool {
        self.state.is_none_or(|s| s == task.state)
            && self
                .function
                .as_ref()
                .is_none_or(|f| task.function.contains(f.as_str()))
            && self.worker.as_ref().is_none_or(|w| *w == task.worker)
            && self.owner.is_none_or(|o| o == task.id.owner)
    }

    /// The tasks of `tasks` that pass, in order.
    pub fn apply<'a>(&self, tasks: &'a [TaskListing]) -> Vec<&'a TaskListing> {
        tasks.iter().filter(|t| self.matches(t)).collect()
    }
}

/// Which objects to keep from a listing; every condition set must hold.
///
/// ```
/// use dfut::inspect::{ObjectFilter, ObjectListing, ObjectState};
/// use dfut::scheduler::ObjectId;
///
/// let id = ObjectId { owner: 0xab, seq: 1 };
/// let mut big = ObjectListing::new(id, ObjectState::Heap, "10.0.0.2:4000".into());
/// big.bytes = 1 << 20;
/// assert!(ObjectFilter::new().min_bytes(1000).holder("10.0.0.2:4000").matches(&big));
/// assert!(!ObjectFilter::new().state(ObjectState::Spilled).matches(&big));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ObjectFilter {
    /// Only objects in this state.
    pub state: Option<ObjectState>,
    /// Only objects whose function name contains this.
    pub function: Option<String>,
    /// Only objects held by this worker (its address as listed).
    pub holder: Option<String>,
    /// Only objects of this owner (its node id).
    pub owner: Option<u64>,
    /// Only objects of at least this many bytes.
    pub min_bytes: u64,
}

impl ObjectFilter {
    /// Keeps every object.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only objects in `state`.
    pub fn state(mut self, state: ObjectState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only objects whose function name contains `part`.
    pub fn function(mut self, part: impl Into<String>) -> Self {
        self.function = Some(part.into());
        self
    }

    /// Only objects held by `holder`.
    pub fn holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = Some(holder.into());
        self
    }

    /// Only objects of `owner`.
    pub fn owner(mut self, owner: u64) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Only objects of at least `bytes`.
    pub fn min_bytes(mut self, bytes: u64) -> Self {
        self.min_bytes = bytes;
        self
    }

    /// Whether `object` passes.
    pub fn matches(&self, object: &ObjectListing) -> bool {
        self.state.is_none_or(|s| s == object.state)
            && self
                .function
                .as_ref()
                .is_none_or(|f| object.function.contains(f.as_str()))
            && self.holder.as_ref().is_none_or(|h| *h == object.holder)
            && self.owner.is_none_or(|o| o == object.id.owner)
            && object.bytes >= self.min_bytes
    }

    /// The objects of `objects` that pass, in order.
    pub fn apply<'a>(&self, objects: &'a [ObjectListing]) -> Vec<&'a ObjectListing> {
        objects.iter().filter(|o| self.matches(o)).collect()
    }
}

/// Whether a listing of tasks in `state` (all, for `None`) includes the
/// tasks waiting in owners' backlogs.
pub(crate) fn lists_backlogs(state: Option<TaskState>) -> bool {
    matches!(state, None | Some(TaskState::Backlog))
}

/// The name `dfut tasks` prints for `state` (and accepts in `--state`).
///
/// ```
/// use dfut::inspect::{TaskState, task_state_name, task_state_named};
/// assert_eq!(task_state_name(TaskState::Backlog), "backlog");
/// assert_eq!(task_state_named("failed"), Some(TaskState::Failed));
/// ```
pub fn task_state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Backlog => "backlog",
        TaskState::Queued => "queued",
        TaskState::Running => "running",
        TaskState::Finished => "finished",
        TaskState::Failed => "failed",
        _ => "other",
    }
}

/// The state `dfut tasks --state` names `name`, if any.
pub fn task_state_named(name: &str) -> Option<TaskState> {
    const ALL: [TaskState; 5] = [
        TaskState::Backlog,
        TaskState::Queued,
        TaskState::Running,
        TaskState::Finished,
        TaskState::Failed,
    ];
    ALL.into_iter().find(|s| task_state_name(*s) == name)
}

/// The name `dfut objects` prints for `state` (and accepts in `--state`).
///
/// ```
/// use dfut::inspect::{ObjectState, object_state_name, object_state_named};
/// assert_eq!(object_state_name(ObjectState::Shared), "shm");
/// assert_eq!(object_state_named("spilled"), Some(ObjectState::Spilled));
/// ```
pub fn object_state_name(state: ObjectState) -> &'static str {
    match state {
        ObjectState::Heap => "heap",
        ObjectState::Shared => "shm",
        ObjectState::Spilled => "spilled",
        ObjectState::Computing => "computing",
        ObjectState::Failed => "failed",
        _ => "other",
    }
}

/// The state `dfut objects --state` names `name`, if any.
pub fn object_state_named(name: &str) -> Option<ObjectState> {
    const ALL: [ObjectState; 5] = [
        ObjectState::Heap,
        ObjectState::Shared,
        ObjectState::Spilled,
        ObjectState::Computing,
        ObjectState::Failed,
    ];
    ALL.into_iter().find(|s| object_state_name(*s) == name)
}

/// The name listings print for `kind`.
///
/// ```
/// assert_eq!(dfut::inspect::run_kind_name(dfut::inspect::RunKind::Background), "background");
/// ```
pub fn run_kind_name(kind: RunKind) -> &'static str {
    match kind {
        RunKind::None => "-",
        RunKind::Inline => "inline",
        RunKind::Slot => "slot",
        RunKind::Background => "background",
        RunKind::Async => "async",
        _ => "other",
    }
}
