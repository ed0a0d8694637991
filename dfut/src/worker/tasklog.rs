//! What a worker remembers of its tasks for `dfut tasks` and timelines:
//! the tasks it holds now (queued or running), the most recent ended ones
//! and the most recent objects it served to readers.
//!
//! Kept by the worker, so a listing or a timeline works after the driver
//! that submitted the tasks has exited. Times are monotonic instants,
//! turned into wall-clock microseconds only when listed (`crate::clock`),
//! so recording costs one lock and no clock read beyond those the task
//! path takes anyway.
//!
//! Bounds: at most [`MAX_LIVE`] tasks held now are recorded (past it, new
//! ones are not listed until some end; counted in `unlisted`); the last
//! [`ENDED_KEPT`] ended tasks and [`FETCHES_KEPT`] served fetches are kept,
//! older ones dropped first. A function name a peer sent that names no
//! registered function is cut to [`MAX_NAME`] bytes.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use dfut_net::wire::{
    Failure, FailureKind, FetchListing, FunctionMetrics, ObjectId, RUN_BUCKETS_US, RunKind,
    TaskListing, TaskState,
};
use rustc_hash::FxHashMap;

use crate::clock::{micros, unix_us};
use crate::lock;

/// Tasks held now (queued or running) that are recorded.
pub(crate) const MAX_LIVE: usize = 1 << 18;
/// Ended tasks kept.
pub(crate) const ENDED_KEPT: usize = 10_000;
/// Served fetches kept.
pub(crate) const FETCHES_KEPT: usize = 2_000;
/// Tasks (and fetches) in one listing.
pub(crate) const MAX_LISTED: u32 = crate::scheduler::MAX_LISTED_TASKS;
/// Longest unregistered function name or failure line kept.
const MAX_NAME: usize = 200;

/// A registered name, or one a peer sent (cut to [`MAX_NAME`]).
type Name = Cow<'static, str>;

/// The task log of one worker.
#[derive(Default)]
pub(crate) struct TaskLog {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    live: HashMap<ObjectId, Live>,
    ended: VecDeque<Ended>,
    fetches: VecDeque<Served>,
    /// Tasks not recorded because [`MAX_LIVE`] were held.
    unlisted: u64,
    /// Counts by function, at most [`MAX_FUNCTIONS`] names (then the
    /// rest under [`OTHER`]).
    functions: FxHashMap<Name, FunctionMetrics>,
}

/// Functions counted by name; the rest count under [`OTHER`].
pub(crate) const MAX_FUNCTIONS: usize = 4096;
/// The name the functions past [`MAX_FUNCTIONS`] are counted under.
const OTHER: &str = "(other)";

struct Live {
    function: Name,
    submitted_us: u64,
    received: Instant,
    started: Option<(Instant, RunKind)>,
}

struct Ended {
    id: ObjectId,
    task: Live,
    ended: Instant,
    /// The failure's first line; `None` for a value.
    error: Option<Box<str>>,
}

/// One object served to a reader.
#[derive(Clone, Copy)]
pub(crate) struct Served {
    pub id: ObjectId,
    pub reader: SocketAddr,
    /// Bytes served (0 when it failed).
    pub bytes: u64,
    /// Told a shared-memory file rather than sent the bytes.
    pub shared: bool,
    /// When the request arrived.
    pub started: Instant,
    /// When the answer was handed to the connection.
    pub ended: Instant,
}

/// `name` as kept: borrowed when registered, else cut to [`MAX_NAME`].
pub(crate) fn name_of(registered: Option<&'static str>, sent: &str) -> Name {
    match registered {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(first_line(sent).to_owned()),
    }
}

/// What a listing says of `failure`: its message's first line (at most
/// [`MAX_NAME`] bytes), or what its kind means when that says it better.
pub(crate) fn failure_line(failure: &Failure) -> Box<str> {
    let line = first_line(&failure.message);
    match failure.kind {
        FailureKind::TimedOut => format!("timed out after {line} ms").into(),
        FailureKind::UnknownFunction => "no function of that name on this worker".into(),
        _ if line.is_empty() => format!("{:?}", failure.kind).into(),
        _ => line.into(),
    }
}

/// The first line of `text`, at most [`MAX_NAME`] bytes.
fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("");
    let mut end = line.len().min(MAX_NAME);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

impl TaskLog {
    /// Task `id` arrived (it waits for its arguments or a slot).
    pub fn received(&self, id: ObjectId, function: Name, submitted_us: u64, at: Instant) {
        let mut log = lock(&self.inner);
        if log.live.len() >= MAX_LIVE {
            log.unlisted += 1;
            return;
        }
        log.live.insert(
            id,
            Live {
                function,
                submitted_us,
                received: at,
                started: None,
            },
        );
    }

    /// Task `id` started running, `kind` of run.
    pub fn started(&self, id: ObjectId, kind: RunKind, at: Instant) {
        if let Some(task) = lock(&self.inner).live.get_mut(&id) {
            task.started = Some((at, kind));
        }
    }

    /// Task `id` ended, with a value or `error`.
    pub fn ended(&self, id: ObjectId, error: Option<Box<str>>, at: Instant) {
        let mut log = lock(&self.inner);
        if let Some(task) = log.live.remove(&id) {
            log.push_ended(Ended {
                id,
                task,
                ended: at,
                error,
            });
        }
    }

    /// Task `id` ran start to end on the thread that received it, from
    /// `start` to `end` (never recorded as held).
    pub fn ran_inline(
        &self,
        id: ObjectId,
        function: &'static str,
        submitted_us: u64,
        start: Instant,
        end: Instant,
        error: Option<Box<str>>,
    ) {
        let ended = Ended {
            id,
            task: Live {
                function: Cow::Borrowed(function),
                submitted_us,
                received: start,
                started: Some((start, RunKind::Inline)),
            },
            ended: end,
            error,
        };
        lock(&self.inner).push_ended(ended);
    }

    /// An object was served.
    pub fn served(&self, fetch: Served) {
        let mut log = lock(&self.inner);
        if log.fetches.len() >= FETCHES_KEPT {
            log.fetches.pop_front();
        }
        log.fetches.push_back(fetch);
    }

    /// Up to `limit` tasks (only those in `state`, if given), held ones
    /// first, then the most recent ended ones; and up to `limit` fetches,
    /// the most recent ones. Listed as held by `worker`. Under the lock
    /// only the chosen records are copied (cheap: names are mostly
    /// borrowed); the listings are built after it is released.
    pub fn list(
        &self,
        worker: &str,
        limit: usize,
        state: Option<TaskState>,
    ) -> (Vec<TaskListing>, Vec<FetchListing>) {
        let wanted = |s: TaskState| state.is_none_or(|w| w == s);
        let (held, ended, fetches) = {
            let log = lock(&self.inner);
            let held: Vec<(ObjectId, Live)> =
                if wanted(TaskState::Queued) || wanted(TaskState::Running) {
                    log.live
                        .iter()
                        .filter(|(_, t)| wanted(live_state(t)))
                        .take(limit)
                        .map(|(id, t)| (*id, t.copy()))
                        .collect()
                } else {
                    Vec::new()
                };
            let room = limit - held.len();
            let ended: Vec<Ended> = if wanted(TaskState::Finished) || wanted(TaskState::Failed) {
                log.ended
                    .iter()
                    .rev()
                    .filter(|e| wanted(ended_state(e)))
                    .take(room)
                    .map(Ended::copy)
                    .collect()
            } else {
                Vec::new()
            };
            let fetches: Vec<Served> = log.fetches.iter().rev().take(limit).copied().collect();
            (held, ended, fetches)
        };
        let held = held
            .iter()
            .map(|(id, task)| listing(*id, task, live_state(task), worker));
        let ended = ended.iter().map(|e| {
            let mut t = listing(e.id, &e.task, ended_state(e), worker);
            t.ended_us = unix_us(e.ended);
            t.error = e.error.as_deref().unwrap_or_default().to_owned();
            t
        });
        let tasks = held.chain(ended).collect();
        let fetches = fetches
            .iter()
            .map(|f| {
                let mut l = FetchListing::new(f.id, worker.to_owned(), f.reader.to_string());
                l.bytes = f.bytes;
                l.shared = f.shared;
                l.started_us = unix_us(f.started);
                l.ended_us = unix_us(f.ended);
                l
            })
            .collect();
        (tasks, fetches)
    }

    /// What was counted of each function since the worker started.
    pub fn metrics(&self) -> Vec<FunctionMetrics> {
        lock(&self.inner).functions.values().cloned().collect()
    }

    /// Tasks held now that could not be recorded.
    #[cfg(test)]
    fn unlisted(&self) -> u64 {
        lock(&self.inner).unlisted
    }
}

impl Inner {
    fn push_ended(&mut self, ended: Ended) {
        self.count(&ended);
        if self.ended.len() >= ENDED_KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back(ended);
    }

    fn count(&mut self, ended: &Ended) {
        let name = &ended.task.function;
        let known = self.functions.len() < MAX_FUNCTIONS || self.functions.contains_key(name);
        let key = if known {
            name.clone()
        } else {
            Cow::Borrowed(OTHER)
        };
        let counts = self
            .functions
            .entry(key)
            .or_insert_with_key(|k| FunctionMetrics::new(k.clone().into_owned()));
        match ended.error {
            None => counts.finished += 1,
            Some(_) => counts.failed += 1,
        }
        if let Some((start, _)) = ended.task.started {
            let us = micros(ended.ended.saturating_duration_since(start));
            let bucket = RUN_BUCKETS_US.partition_point(|bound| *bound < us);
            if let Some(n) = counts.runs.get_mut(bucket) {
                *n += 1;
            }
            counts.run_us = counts.run_us.saturating_add(us);
        }
    }
}

fn live_state(task: &Live) -> TaskState {
    match task.started {
        Some(_) => TaskState::Running,
        None => TaskState::Queued,
    }
}

fn ended_state(e: &Ended) -> TaskState {
    match e.error {
        None => TaskState::Finished,
        Some(_) => TaskState::Failed,
    }
}

impl Live {
    fn copy(&self) -> Self {
        Self {
            function: self.function.clone(),
            submitted_us: self.submitted_us,
            received: self.received,
            started: self.started,
        }
    }
}

impl Ended {
    fn copy(&self) -> Self {
        Self {
            id: self.id,
            task: self.task.copy(),
            ended: self.ended,
            error: self.error.clone(),
        }
    }
}

fn listing(id: ObjectId, task: &Live, state: TaskState, worker: &str) -> TaskListing {
    let mut t = TaskListing::new(id, task.function.clone().into_owned(), state);
    t.worker = worker.to_owned();
    t.submitted_us = task.submitted_us;
    t.received_us = unix_us(task.received);
    if let Some((at, kind)) = task.started {
        t.started_us = unix_us(at);
        t.kind = kind;
    }
    t
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(seq: u64) -> ObjectId {
        ObjectId { owner: 1, seq }
    }

    #[test]
    fn a_task_is_queued_then_running_then_ended_and_listed_newest_first() {
        let log = TaskLog::default();
        let t0 = Instant::now();
        log.received(id(1), Cow::Borrowed("m::slow"), 7, t0);
        log.received(id(2), Cow::Borrowed("m::slow"), 7, t0);
        log.started(id(1), RunKind::Slot, t0 + Duration::from_millis(1));
        let (tasks, _) = log.list("w", 10, None);
        let state =
            |tasks: &[TaskListing], seq| tasks.iter().find(|t| t.id == id(seq)).map(|t| t.state);
        assert_eq!(state(&tasks, 1), Some(TaskState::Running));
        assert_eq!(state(&tasks, 2), Some(TaskState::Queued));
        log.ended(id(1), None, t0 + Duration::from_millis(3));
        log.ended(id(2), Some("boom".into()), t0 + Duration::from_millis(4));
        log.ran_inline(id(3), "m::fast", 9, t0, t0, None);
        let (tasks, _) = log.list("w", 10, None);
        let seqs: Vec<u64> = tasks.iter().map(|t| t.id.seq).collect();
        assert_eq!(seqs, [3, 2, 1], "newest first");
        let one = &tasks[2];
        assert_eq!(one.state, TaskState::Finished);
        assert_eq!((one.kind, one.submitted_us), (RunKind::Slot, 7));
        assert_eq!(one.ended_us - one.received_us, 3_000);
        assert_eq!(one.started_us - one.received_us, 1_000);
        assert_eq!(tasks[1].state, TaskState::Failed);
        assert_eq!(tasks[1].error, "boom");
        let timeout = Failure {
            kind: FailureKind::TimedOut,
            message: "500".into(),
            location: String::new(),
            causes: Vec::new(),
            backtrace: String::new(),
        };
        assert_eq!(&*failure_line(&timeout), "timed out after 500 ms");
        assert_eq!(tasks[1].kind, RunKind::None, "it never started");
        assert_eq!(tasks[0].kind, RunKind::Inline);
        assert_eq!(tasks[0].worker, "w");
        let (failed, _) = log.list("w", 10, Some(TaskState::Failed));
        assert_eq!(failed.iter().map(|t| t.id.seq).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn ended_tasks_are_counted_by_function_and_run_time() {
        let log = TaskLog::default();
        let t0 = Instant::now();
        log.ran_inline(id(1), "m::f", 0, t0, t0 + Duration::from_micros(30), None);
        log.ran_inline(
            id(2),
            "m::f",
            0,
            t0,
            t0 + Duration::from_millis(3),
            Some("x".into()),
        );
        log.received(id(3), Cow::Borrowed("m::g"), 0, t0);
        log.ended(id(3), Some("no such function".into()), t0);
        let mut m = log.metrics();
        m.sort_by(|a, b| a.function.cmp(&b.function));
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].finished, m[0].failed), (1, 1));
        assert_eq!(m[0].runs[0], 1, "30 µs: the first bucket");
        assert_eq!(m[0].runs[4], 1, "3 ms: at most 5 ms");
        assert_eq!(m[0].run_us, 3_030);
        assert_eq!(
            (m[1].failed, m[1].runs.iter().sum::<u64>()),
            (1, 0),
            "never ran"
        );
        for i in 0..MAX_FUNCTIONS as u64 + 2 {
            let name = format!("m::f{i}");
            log.received(id(i), Cow::Owned(name), 0, t0);
            log.ended(id(i), None, t0);
        }
        let m = log.metrics();
        assert_eq!(m.len(), MAX_FUNCTIONS + 1);
        let other = m.iter().find(|f| f.function == OTHER).unwrap();
        assert_eq!(other.finished, 4, "past the cap (m::f and m::g took two)");
    }

    #[test]
    fn the_log_keeps_its_bounds() {
        let log = TaskLog::default();
        let now = Instant::now();
        for seq in 0..ENDED_KEPT as u64 + 5 {
            log.ran_inline(id(seq), "m::f", 0, now, now, None);
        }
        let reader: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for seq in 0..FETCHES_KEPT as u64 + 5 {
            log.served(Served {
                id: id(seq),
                reader,
                bytes: 1,
                shared: false,
                started: now,
                ended: now,
            });
        }
        let (tasks, fetches) = log.list("w", usize::MAX, None);
        assert_eq!(tasks.len(), ENDED_KEPT);
        assert_eq!(tasks[0].id.seq, ENDED_KEPT as u64 + 4, "the newest kept");
        assert_eq!(fetches.len(), FETCHES_KEPT);
        for seq in 0..MAX_LIVE as u64 + 3 {
            log.received(id(seq), Cow::Borrowed("m::f"), 0, now);
        }
        assert_eq!(log.unlisted(), 3);
        let long = "x".repeat(1000);
        assert_eq!(name_of(None, &long).len(), MAX_NAME);
        assert_eq!(name_of(None, "é".repeat(150).as_str()).len(), MAX_NAME);
    }
}
