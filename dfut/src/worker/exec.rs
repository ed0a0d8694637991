//! Running one task on a worker: resolving its arguments, queueing a sync
//! task for a slot (or running a short one inline) or spawning an async one,
//! calling the function, catching panics, storing and reporting the result.
//! Also cancelling tasks and serving fetches of stored objects.

use crate::error::{MAX_BACKTRACE, clip};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dfut_net::Link;
use dfut_net::wire::{
    Arg, Failure, FailureKind, Item, Message, ObjectId, Outcome, RunKind, TaskSpec,
};
use rand::{Rng, SeedableRng};

use super::Shared;
use super::deadline::{self, Deadline, DeadlineWatch};
use super::monitor;
use super::store::Lookup;
use super::tasklog;
use crate::blob::{Blob, blob};
use crate::lock;

use crate::registry::{self, ArgBytes, Args, Entry, Invoke};

/// Injected random delays (straggler simulation).
pub(crate) struct Delay {
    max_ms: u64,
    rng: std::sync::Mutex<rand::rngs::StdRng>,
}

impl Delay {
    pub fn from_config(config: &super::WorkerConfig) -> Option<Self> {
        (config.add_delay_ms > 0).then(|| Self {
            max_ms: config.add_delay_ms,
            rng: std::sync::Mutex::new(match config.delay_seed {
                Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
                None => rand::rngs::StdRng::from_os_rng(),
            }),
        })
    }

    fn sample(&self) -> Duration {
        let mut rng = lock(&self.rng);
        Duration::from_millis(rng.random_range(0..=self.max_ms))
    }
}

/// Sync functions whose measured mean run time is below this run on the
/// thread that received the task instead of being handed to a slot thread:
/// the hand-off (a thread wake-up) costs more than such a task.
const INLINE_BELOW: Duration = Duration::from_micros(50);

fn runs_inline(entry: &Entry) -> bool {
    matches!(entry.function.invoke, Invoke::Sync(_))
        && !entry.blocks()
        && entry.mean().is_some_and(|m| m < INLINE_BELOW)
}

/// Hands the connection a task arrived on to another reader, so that a
/// task running inline on its reader may block without stalling it.
pub(crate) type Handoff = Arc<dyn Fn() + Send + Sync>;

/// What a connection's reader tells [`accept`] about the batch it serves.
pub(crate) struct Reader<'a> {
    /// Moves the connection to a new reader (and sends `replies` first).
    pub handoff: &'a Handoff,
    /// Whether this thread's LIFO slot may hold a task woken or spawned
    /// earlier in the reader's current poll: cleared before an inline run
    /// only then (see [`InlinePermit`]).
    pub lifo_dirty: bool,
    /// Where inline tasks leave their replies (see `worker::Replies`).
    pub replies: &'a super::Replies,
}

/// Takes a task from an owner. A short sync task whose arguments are all
/// here runs at once on this thread if a slot is free; a sync task goes to
/// the slots once its arguments are resolved; an async task is spawned.
pub(crate) fn accept(shared: &Arc<Shared>, reply: Link, task: TaskSpec, reader: &mut Reader<'_>) {
    lock(&shared.store).expect(task.id);
    let entry = registry::lookup(&task.function, task.signature);
    let meta = Meta::of(&task);
    let fast = entry.as_ref().ok().copied().filter(|e| {
        shared.delay.is_none()
            && meta.plain()
            && runs_inline(e)
            && task.args.iter().all(|a| matches!(a, Arg::Value(_)))
    });
    if let Some(entry) = fast
        && let Some(permit) = InlinePermit::take(shared)
        && shared.runner.try_take_slot()
    {
        if reader.lifo_dirty {
            permit.clear_lifo();
        }
        let handoff = reader.handoff;
        let args = task
            .args
            .into_iter()
            .map(|a| match a {
                Arg::Value(bytes) => ArgBytes::One(blob(bytes)),
                // Excluded by `fast` above.
                Arg::Ref { .. } | Arg::List(_) | Arg::Pushed { .. } | Arg::Shared { .. } => {
                    ArgBytes::One(blob(Vec::new()))
                }
            })
            .collect();
        shared.running.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let scope = TaskScope {
            shared: shared.clone(),
            reply: reply.clone(),
            id: task.id,
            entry,
            handoff: Some(handoff.clone()),
            deadline: None,
            gpu: entry.function.gpu,
        };
        // Should it run long, the watchdog moves this reader away.
        let watch = monitor::inline_run(start);
        let result = call_sync(scope, args);
        drop(watch);
        let took = start.elapsed();
        if took > monitor::SLOW_INLINE {
            // It held up this connection's reader: never inline again.
            entry.mark_blocking();
        }
        shared.runner.give_back_slot();
        shared.running.fetch_sub(1, Ordering::Relaxed);
        let logged = Logged::Inline {
            function: entry.function.name,
            submitted_us: task.submitted_us,
            start,
        };
        let (done, woke) = settle(shared, task.id, task.inline_max, result, took, logged);
        lock(reader.replies).push(done);
        // A task woken by the result waits in this thread's LIFO slot.
        reader.lifo_dirty |= woke;
        return;
    }
    shared.queued.fetch_add(1, Ordering::Relaxed);
    let registered = entry.as_ref().ok().map(|e| e.function.name);
    let name = tasklog::name_of(registered, &task.function);
    let now = Instant::now();
    shared.tasks.received(task.id, name, task.submitted_us, now);
    let shared = shared.clone();
    // The spawned task goes to this thread's LIFO slot.
    reader.lifo_dirty = true;
    tokio::spawn(async move {
        let (id, inline_max) = (meta.id, meta.inline_max);
        let args = resolve_args(&shared, task.id.owner, task.args).await;
        let prepared = entry.and_then(|entry| args.map(|args| (entry, args)));
        let (entry, args) = match prepared {
            Ok(p) => p,
            Err(f) => {
                shared.queued.fetch_sub(1, Ordering::Relaxed);
                finish(&shared, &reply, id, inline_max, Err(f), Duration::ZERO);
                return;
            }
        };
        // Resources beyond one CPU: a task this worker could never run
        // fails now; the others wait here until theirs are free.
        let mut grant = None;
        let mut resources = task.resources;
        if !resources.is_one_cpu() {
            merge_duplicates(&mut resources.custom);
            let lacks = if resources.custom.len() > MAX_CUSTOM_RESOURCES {
                Some(format!(
                    "it names {} custom resources, more than the {MAX_CUSTOM_RESOURCES} a task may",
                    resources.custom.len()
                ))
            } else {
                shared.ledger.lacks(&resources, shared.slots)
            };
            if let Some(lacks) = lacks {
                shared.queued.fetch_sub(1, Ordering::Relaxed);
                let f = failure(
                    FailureKind::Other,
                    format!("`{}`: {lacks}", entry.function.name),
                );
                finish(&shared, &reply, id, inline_max, Err(f), Duration::ZERO);
                return;
            }
            // Background work takes its resources when the lane starts
            // it, so it holds none while it waits behind normal work.
            let sync_low = meta.low && matches!(entry.function.invoke, Invoke::Sync(_));
            if meta.ledger && !sync_low {
                grant = Some(shared.ledger.acquire(&resources).await);
            }
        }
        match entry.function.invoke {
            Invoke::Sync(_) => {
                // A short one runs here, on this runtime thread, if a slot
                // is free: a chain of short tasks then costs no thread
                // wake-up. This task's poll began with an empty LIFO slot
                // and has woken nothing yet: no need to clear it.
                let short = shared.delay.is_none() && meta.plain() && runs_inline(entry);
                let permit = short.then(|| InlinePermit::take(&shared)).flatten();
                if permit.is_some() && shared.runner.try_take_slot() {
                    run_sync(&shared, reply, meta, entry, args, false);
                    shared.runner.give_back_slot();
                } else {
                    drop(permit);
                    let runner = shared.runner.clone();
                    let low = meta.low;
                    let rt = tokio::runtime::Handle::current();
                    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
                        let grant = match grant {
                            // On a lane thread, outside the runtime.
                            None if low && meta.ledger => {
                                Some(rt.block_on(shared.ledger.acquire(&resources)))
                            }
                            grant => grant,
                        };
                        run_sync(&shared, reply, meta, entry, args, true);
                        // Resources go back as the task ends.
                        drop(grant);
                    });
                    if low {
                        // Background work takes no slot: its CPUs are not
                        // held, its other resources are (from its start).
                        runner.submit_low(job);
                    } else {
                        runner.submit_wide(meta.cpus, job);
                    }
                }
            }
            Invoke::Async(f) => {
                run_async(&shared, reply, meta, entry, f, args).await;
                drop(grant);
            }
        }
    });
}

/// Leave to run a task on a runtime thread (inline). At most
/// `Shared::inline_limit` (the runtime's threads less one) are out at once,
/// so a thread is always free for messages whatever inline tasks do.
///
/// An inline run on a reader whose poll already woke or spawned a task
/// first spawns an empty task: it takes this thread's LIFO slot, which
/// other threads cannot steal from, so whatever the runtime had put there
/// (say the writer of a reply just sent) moves to the queue they do steal
/// from, and a task that blocks here cannot hold it up. A poll almost
/// always starts with an empty slot (tokio empties it to poll a task from
/// its local queues; only a task taken from the shared queue may find it
/// occupied), so the first inline run of a poll, the common case for a
/// single call, skips this: the empty task costs a wake-up of another
/// thread once the slot is taken again (W2 measured it).
struct InlinePermit<'a>(&'a Shared);

impl<'a> InlinePermit<'a> {
    fn take(shared: &'a Shared) -> Option<Self> {
        shared
            .inline_active
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < shared.inline_limit).then_some(n + 1)
            })
            .ok()?;
        Some(Self(shared))
    }

    /// Empties this runtime thread's LIFO slot (see above) just before an
    /// inline run.
    fn clear_lifo(&self) {
        tokio::spawn(async {});
    }
}

impl Drop for InlinePermit<'_> {
    fn drop(&mut self) {
        self.0.inline_active.fetch_sub(1, Ordering::Release);
    }
}

/// What a worker keeps of a task besides its function and arguments.
#[derive(Debug, Clone, Copy)]
struct Meta {
    id: ObjectId,
    inline_max: u32,
    timeout_ms: u32,
    /// Wait for the owner to confirm the start notice before running.
    confirm_start: bool,
    /// Background work: queued behind normal tasks, never run inline.
    low: bool,
    /// Slots it holds while running (its CPUs).
    cpus: u32,
    /// It sees the GPU as a GPU task (its function's or its call's).
    gpu: bool,
    /// It takes resources from the ledger (GPUs, memory, custom).
    ledger: bool,
}

impl Meta {
    fn of(task: &TaskSpec) -> Self {
        let r = &task.resources;
        Self {
            id: task.id,
            inline_max: task.inline_max,
            timeout_ms: task.timeout_ms,
            confirm_start: task.confirm_start,
            low: task.low_priority,
            cpus: r.cpus.max(1),
            gpu: r.gpus > 0,
            ledger: r.gpus > 0 || r.memory_mb > 0 || !r.custom.is_empty(),
        }
    }

    /// No deadline, no confirmed start, normal priority, one CPU and
    /// nothing else: may run inline.
    fn plain(&self) -> bool {
        self.timeout_ms == 0 && !self.confirm_start && !self.low && self.cpus == 1 && !self.ledger
    }
}

/// How long a task that must confirm its start waits for the owner before
/// running anyway.
const CONFIRM_PATIENCE: Duration = Duration::from_secs(2);

/// Tells the owner task `id` starts; for a task re-run after its worker
/// died (`confirm_start`), waits until the owner has the notice, so a
/// worker that dies in the task is known to have died running it (see
/// the owner's crash-loop check).
fn announce_start(shared: &Shared, reply: &Link, meta: Meta) -> Option<Confirmation> {
    if !meta.confirm_start {
        let _ = reply.send(Message::Started(meta.id));
        return None;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let nonce = rand::random::<u64>();
    lock(&shared.confirms).insert(meta.id, (nonce, tx));
    let _ = reply.send(Message::Started(meta.id));
    Some(Confirmation { nonce, rx })
}

/// A task's wait for its start confirmation, as kept in `Shared::confirms`:
/// the wait's nonce and where to send the confirmation.
pub(crate) type ConfirmSlot = (u64, std::sync::mpsc::SyncSender<()>);

/// A start notice waiting for its owner's confirmation.
struct Confirmation {
    /// Tells this wait from another run of the same task here.
    nonce: u64,
    rx: std::sync::mpsc::Receiver<()>,
}

/// The owner confirmed it knows task `id` started.
pub(crate) fn confirmed(shared: &Shared, id: ObjectId) {
    if let Some((_, tx)) = lock(&shared.confirms).remove(&id) {
        let _ = tx.try_send(());
    }
}

/// Waits (bounded) for a start confirmation on a thread that may block.
fn await_confirmation(shared: &Shared, id: ObjectId, c: Confirmation) {
    if c.rx.recv_timeout(CONFIRM_PATIENCE).is_err() {
        tracing::debug!("no start confirmation for {id}; running it anyway");
    }
    let mut confirms = lock(&shared.confirms);
    if confirms.get(&id).is_some_and(|(n, _)| *n == c.nonce) {
        confirms.remove(&id);
    }
}

/// Whether a queued task was cancelled before it started; if so it is
/// reported and skipped.
fn skip_cancelled(shared: &Arc<Shared>, reply: &Link, id: ObjectId, inline_max: u32) -> bool {
    shared.queued.fetch_sub(1, Ordering::Relaxed);
    let cancelled = lock(&shared.store).take_cancelled(id);
    if cancelled {
        let f = failure(FailureKind::Other, "cancelled before it started");
        finish(shared, reply, id, inline_max, Err(f), Duration::ZERO);
    }
    cancelled
}

/// Runs a sync task in a slot this thread holds (a slot thread, a helping
/// one, or a runtime thread for a short task), or on the background lane
/// (a low-priority task, which holds no slot); `announce` sends the owner
/// a start notice first.
fn run_sync(
    shared: &Arc<Shared>,
    reply: Link,
    meta: Meta,
    entry: &'static Entry,
    args: Args,
    announce: bool,
) {
    let (id, inline_max) = (meta.id, meta.inline_max);
    if skip_cancelled(shared, &reply, id, inline_max) {
        return;
    }
    shared.running.fetch_add(1, Ordering::Relaxed);
    if announce && let Some(rx) = announce_start(shared, &reply, meta) {
        await_confirmation(shared, id, rx);
    }
    let start = Instant::now();
    let kind = match (announce, meta.low) {
        (false, _) => RunKind::Inline,
        (true, false) => RunKind::Slot,
        (true, true) => RunKind::Background,
    };
    shared.tasks.started(id, kind, start);
    if let Some(delay) = &shared.delay {
        std::thread::sleep(delay.sample());
    }
    let deadline = Deadline::arm(shared, &reply, id, inline_max, meta.timeout_ms, !meta.low);
    let scope = TaskScope {
        shared: shared.clone(),
        reply: reply.clone(),
        id,
        entry,
        handoff: None,
        deadline: deadline.as_ref().map(Deadline::watch),
        gpu: entry.function.gpu || meta.gpu,
    };
    let result = call_sync(scope, args);
    let took = start.elapsed();
    if !announce && took > monitor::SLOW_INLINE {
        // It held up a runtime thread: never inline again.
        entry.mark_blocking();
    }
    shared.running.fetch_sub(1, Ordering::Relaxed);
    if let Some(d) = deadline
        && !d.disarm(shared)
    {
        return; // reported as timed out; this result is discarded
    }
    finish(shared, &reply, id, inline_max, result, took);
}

/// Runs an async task on the worker's runtime. Async tasks take no slot:
/// they yield at every await, so they cannot hold a thread while waiting.
async fn run_async(
    shared: &Arc<Shared>,
    reply: Link,
    meta: Meta,
    entry: &'static Entry,
    f: fn(Args) -> registry::BoxTask,
    args: Args,
) {
    let (id, inline_max) = (meta.id, meta.inline_max);
    if skip_cancelled(shared, &reply, id, inline_max) {
        return;
    }
    shared.running.fetch_add(1, Ordering::Relaxed);
    if let Some(rx) = announce_start(shared, &reply, meta) {
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || await_confirmation(&s, id, rx)).await;
    }
    let start = Instant::now();
    shared.tasks.started(id, RunKind::Async, start);
    if let Some(delay) = &shared.delay {
        tokio::time::sleep(delay.sample()).await;
    }
    let name = entry.function.name;
    let fut = crate::context::WithClient::for_task(shared.client.clone(), id, name, f(args));
    // A panic is caught on the thread it happened on, where its location
    // was recorded.
    let fut = async move {
        use futures_util::FutureExt;
        match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
            Ok(r) => r,
            Err(p) => Err(panicked(p)),
        }
    };
    let mut task = tokio::spawn(fut);
    lock(&shared.aborts).insert(id, task.abort_handle());
    // `None`: past its deadline.
    let ended = if meta.timeout_ms == 0 {
        Some((&mut task).await)
    } else {
        let limit = Duration::from_millis(u64::from(meta.timeout_ms));
        tokio::time::timeout(limit, &mut task).await.ok()
    };
    lock(&shared.aborts).remove(&id);
    let took = start.elapsed();
    shared.running.fetch_sub(1, Ordering::Relaxed);
    let result = match ended {
        None => {
            // Dropped at its next await.
            task.abort();
            Err(deadline::timed_out(meta.timeout_ms))
        }
        Some(r) => {
            entry.record(took);
            match r {
                Ok(r) => r,
                Err(e) if e.is_cancelled() => Err(failure(FailureKind::Other, "cancelled")),
                Err(e) => Err(match e.try_into_panic() {
                    Ok(p) => panicked(p),
                    Err(e) => failure(FailureKind::Other, e.to_string()),
                }),
            }
        }
    };
    finish(shared, &reply, id, inline_max, result, took);
}

/// Cancels tasks at their owner's request: a queued one never runs, a
/// running async one is dropped at its next await, a running sync one has
/// its result discarded (and sees [`cancelled`] return true).
pub(crate) fn cancel(shared: &Shared, ids: Vec<ObjectId>) {
    for id in ids {
        lock(&shared.store).cancel(id);
        if let Some(task) = lock(&shared.aborts).remove(&id) {
            task.abort();
        }
    }
}

/// Stores a task's result and reports it to its owner.
pub(super) fn finish(
    shared: &Arc<Shared>,
    reply: &Link,
    id: ObjectId,
    inline_max: u32,
    result: Result<Blob, Failure>,
    exec: Duration,
) {
    let (done, _) = settle(shared, id, inline_max, result, exec, Logged::Held);
    let _ = reply.send(done);
}

/// Longest failure message sent (a panic or error text can be any size).
const MAX_FAILURE_MESSAGE: usize = 64 << 10;

/// Stores a task's result; returns the report for its owner and whether a
/// task waiting for the result was woken.
/// How the task log knows a task being settled.
enum Logged {
    /// Recorded when it arrived.
    Held,
    /// Run inline from `start`, never recorded before.
    Inline {
        function: &'static str,
        submitted_us: u64,
        start: Instant,
    },
}

fn settle(
    shared: &Arc<Shared>,
    id: ObjectId,
    inline_max: u32,
    result: Result<Blob, Failure>,
    exec: Duration,
    logged: Logged,
) -> (Message, bool) {
    let result = match result {
        Ok(blob) => keep(shared, id, blob),
        Err(mut f) if f.message.len() > MAX_FAILURE_MESSAGE => {
            let mut end = MAX_FAILURE_MESSAGE;
            while !f.message.is_char_boundary(end) {
                end -= 1;
            }
            f.message.truncate(end);
            f.message.push_str(" [truncated]");
            Err(f)
        }
        r => r,
    };
    let outcome = match &result {
        Ok(blob) if blob.len() <= inline_max as usize => Outcome::Inline(blob.to_vec()),
        Ok(blob) => Outcome::Stored(blob.len() as u64),
        Err(f) => Outcome::Failed(f.clone()),
    };
    let counter = if result.is_ok() {
        &shared.done
    } else {
        &shared.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let (woke, spill) = {
        let mut store = lock(&shared.store);
        let woke = store.has_waiters(id);
        store.complete(id, result);
        (woke, store.take_spill_work())
    };
    // Logged as the owner will hear it (a value the store refused is a
    // failure), before the owner is told.
    let error = match &outcome {
        Outcome::Failed(f) => Some(tasklog::failure_line(f)),
        _ => None,
    };
    match logged {
        Logged::Held => shared.tasks.ended(id, error, Instant::now()),
        Logged::Inline {
            function,
            submitted_us,
            start,
        } => {
            let end = start + exec;
            let log = &shared.tasks;
            log.ran_inline(id, function, submitted_us, start, end, error);
        }
    }
    if !spill.is_empty() {
        let shared = shared.clone();
        let rt = tokio::runtime::Handle::current();
        super::runner::spawn_blocking(&rt, move || spill_to_disk(&shared, spill));
    }
    let done = Message::Done {
        id,
        outcome,
        running: shared.running.load(Ordering::Relaxed),
        queued: shared.queued.load(Ordering::Relaxed),
        exec_us: u64::try_from(exec.as_micros()).unwrap_or(u64::MAX),
    };
    (done, woke)
}

/// Where a result is kept: sealed in this host's shared memory when it is
/// large and the worker has some, else on the heap; refused with
/// `StoreFull` when the store can neither hold nor spill it.
fn keep(shared: &Shared, id: ObjectId, blob: Blob) -> Result<Blob, Failure> {
    // Only a store that cannot spill ever refuses (one lock fewer per task
    // otherwise).
    if shared.spill.is_none()
        && shared.store_limit > 0
        && !lock(&shared.store).admits(blob.len() as u64)
    {
        return Err(failure(
            FailureKind::StoreFull,
            format!(
                "the result ({} bytes) does not fit in this worker's object store \
                 (limit {} bytes, spilling off); free objects, raise \
                 --object-store-bytes, or set --spill-dir",
                blob.len(),
                shared.store_limit
            ),
        ));
    }
    match &shared.shm {
        // Mapped from another process's file (a put sealed by its owner):
        // linked into this worker's directory, so it lives with this store.
        Some(region)
            if blob.is_mapped() && blob.file().is_some_and(|f| !f.starts_with(region.dir())) =>
        {
            Ok(region.adopt(id, &blob).unwrap_or(blob))
        }
        Some(region) if blob.len() > crate::limits::LARGE && !blob.is_mapped() => {
            match region.seal(id, &blob) {
                Ok(sealed) => Ok(sealed),
                Err(e) => {
                    tracing::warn!(%id, "shared memory full or unusable, kept on the heap: {e}");
                    Ok(blob)
                }
            }
        }
        _ => Ok(blob),
    }
}

/// Writes objects to the spill directory and swaps them in the store;
/// what cannot be written stays in memory.
fn spill_to_disk(shared: &Shared, objects: Vec<(ObjectId, Blob)>) {
    let Some(region) = &shared.spill else {
        return;
    };
    for (id, blob) in objects {
        let copy = region
            .seal(id, &blob)
            .map_err(|e| tracing::warn!(%id, "cannot spill to {}: {e}", region.dir().display()))
            .ok();
        lock(&shared.store).spilled(id, &blob, copy);
    }
}

fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
        location: String::new(),
        causes: Vec::new(),
        backtrace: String::new(),
    }
}

/// What a thread running a sync task knows about it, for its nested waits.
struct TaskScope {
    shared: Arc<Shared>,
    reply: Link,
    id: ObjectId,
    entry: &'static Entry,
    /// Set for a task running inline on its connection's reader: its first
    /// block hands the connection to another reader.
    handoff: Option<Handoff>,
    /// Set for a task with a deadline.
    deadline: Option<DeadlineWatch>,
    /// It sees the GPU as a GPU task.
    gpu: bool,
}

impl TaskScope {
    /// The task's wait blocked (`true`) or ended (`false`): tell the owner,
    /// so the task does not count against its admission window meanwhile.
    fn on_wait(&mut self, blocked: bool) {
        if self.deadline.as_ref().is_some_and(DeadlineWatch::passed) {
            // Reported as timed out: the owner may already run it again
            // under the same id, and must not take this for that run.
            return;
        }
        if blocked {
            self.entry.mark_blocking();
            if let Some(handoff) = self.handoff.take() {
                handoff();
            }
        }
        let _ = self.reply.send(if blocked {
            Message::Blocked(self.id)
        } else {
            Message::Resumed(self.id)
        });
    }
}

thread_local! {
    static TASK: std::cell::RefCell<Option<TaskScope>> = const { std::cell::RefCell::new(None) };
}

/// Whether the task running on this thread was cancelled by its owner
/// (with [`DistFuture::cancel`](crate::DistFuture::cancel)) or has run past
/// its deadline (`timeout_ms`). A long sync task can check it and return
/// early; its result is discarded anyway.
/// Outside a task it is always `false`.
///
/// ```
/// #[dfut::remote]
/// fn crunch(steps: u64) -> u64 {
///     let mut done = 0;
///     while done < steps && !dfut::cancelled() {
///         done += 1;
///     }
///     done
/// }
/// assert!(!dfut::cancelled());
/// assert_eq!(crunch_local(10), 10);
/// ```
pub fn cancelled() -> bool {
    TASK.with(|t| {
        t.borrow().as_ref().is_some_and(|s| {
            s.deadline.as_ref().is_some_and(DeadlineWatch::passed)
                || lock(&s.shared.store).is_cancelled(s.id)
        })
    })
}

/// The task running on this thread, if any: its id and function (for
/// log lines). A sync task's, else an async task's being polled.
pub(crate) fn current_task() -> Option<(ObjectId, &'static str)> {
    let sync = TASK.try_with(|t| {
        let scope = t.try_borrow().ok()?;
        scope.as_ref().map(|s| (s.id, s.entry.function.name))
    });
    sync.ok()
        .flatten()
        .or_else(crate::context::current_async_task)
}

/// Whether this thread is running a sync task.
pub(crate) fn in_task() -> bool {
    TASK.with(|t| t.borrow().is_some())
}

/// Waits for `fut` inside a sync task, running queued tasks of this worker
/// meanwhile (normal ones on a slot's thread, background ones on a
/// background thread; see `runner`); gives `fut` back outside a task.
pub(crate) fn wait_in_task<F: std::future::Future>(fut: F) -> Result<F::Output, F> {
    let Some(mut scope) = TASK.with(|t| t.borrow_mut().take()) else {
        return Err(fut);
    };
    let runner = scope.shared.runner.clone();
    let wait = || runner.wait_helping(fut, |blocked| scope.on_wait(blocked));
    let out = match tokio::runtime::Handle::try_current() {
        // On a runtime thread (an inline task): let the runtime move its
        // other work to another thread meanwhile.
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    };
    TASK.with(|t| *t.borrow_mut() = Some(scope));
    Ok(out)
}

/// Calls a sync function on this thread (which holds a slot, or is a
/// background-lane thread), and measures
/// it.
fn call_sync(scope: TaskScope, args: Args) -> Result<Blob, Failure> {
    let entry = scope.entry;
    let Invoke::Sync(f) = entry.function.invoke else {
        return Err(failure(FailureKind::Other, "not a sync function"));
    };
    let _current = crate::context::enter(scope.shared.client.clone());
    // A helping thread runs this on top of another task: that task's
    // `Options::call` must not apply to this one's calls.
    let _options = crate::options::Options::isolate();
    let gpu = scope.gpu;
    let previous = TASK.with(|t| t.replace(Some(scope)));
    let start = Instant::now();
    let result = crate::context::as_gpu_task(gpu, || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(args)))
    });
    entry.record(start.elapsed());
    TASK.with(|t| *t.borrow_mut() = previous);
    match result {
        Ok(r) => r,
        Err(p) => Err(panicked(p)),
    }
}

thread_local! {
    /// Where the last panic on this thread happened, and its backtrace if
    /// one was captured, as recorded by the hook [`record_panic_locations`]
    /// installs.
    static PANIC_AT: std::cell::RefCell<Option<(String, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// What ends a backtrace cut to fit `MAX_BACKTRACE` (which the receiver
/// also enforces, so the note is kept within it).
const CUT: &str = "\n[cut at 16 KiB]";

/// Installs (once per process) a panic hook that records each panic's
/// location, and its backtrace when backtraces are on (`RUST_BACKTRACE` or
/// `RUST_LIB_BACKTRACE`; capped at 16 KiB), for the task that caught it,
/// then runs the previous hook (so panics print as before).
pub(crate) fn record_panic_locations() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let trace = std::backtrace::Backtrace::capture();
            let mut trace = match trace.status() {
                std::backtrace::BacktraceStatus::Captured => trace.to_string(),
                _ => String::new(),
            };
            if trace.len() > MAX_BACKTRACE {
                let kept = clip(&trace, MAX_BACKTRACE - CUT.len()).len();
                trace.truncate(kept);
                trace.push_str(CUT);
            }
            let _ = PANIC_AT.try_with(|p| *p.borrow_mut() = Some((at, trace)));
            previous(info);
        }));
    });
}

/// The failure of a task that panicked with `payload` on this thread.
fn panicked(payload: Box<dyn std::any::Any + Send>) -> Failure {
    let mut f = failure(FailureKind::Panicked, panic_message(payload));
    let (location, backtrace) = PANIC_AT
        .try_with(|p| p.borrow_mut().take())
        .ok()
        .flatten()
        .unwrap_or_default();
    f.location = location;
    f.backtrace = backtrace;
    f
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// The bytes of every argument, from the task itself, this worker's store,
/// or the worker holding them.
async fn resolve_args(shared: &Arc<Shared>, owner: u64, args: Vec<Arg>) -> Result<Args, Failure> {
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        out.push(match arg {
            Arg::Value(bytes) => ArgBytes::One(blob(bytes)),
            Arg::Pushed { req, len } => ArgBytes::One(pushed(shared, owner, req, len).await?),
            Arg::Shared { path, len } => ArgBytes::One(shared_arg(path, len)?),
            Arg::Ref { id, holder } => ArgBytes::One(resolve_ref(shared, id, &holder).await?),
            Arg::List(items) => {
                // Fetched concurrently: a reduction's inputs live on many workers.
                let items = items.into_iter().map(|item| async move {
                    match item {
                        Item::Value(bytes) => Ok(blob(bytes)),
                        Item::Ref { id, holder } => resolve_ref(shared, id, &holder).await,
                    }
                });
                ArgBytes::Many(futures_util::future::try_join_all(items).await?)
            }
        });
    }
    Ok(out)
}

async fn resolve_ref(shared: &Arc<Shared>, id: ObjectId, holder: &str) -> Result<Blob, Failure> {
    let holder: SocketAddr = holder.parse().map_err(|_| {
        failure(
            FailureKind::Decode,
            format!("bad holder address `{holder}`"),
        )
    })?;
    let fetched = if holder == shared.addr {
        local(shared, id).await
    } else {
        shared.client.fetch(holder, id).await.map_err(|e| {
            let mut f = e.to_failure();
            if matches!(e, crate::Error::Transport(_) | crate::Error::Net(_)) {
                f.kind = FailureKind::WorkerLost;
            }
            f
        })
    };
    fetched.map_err(|mut f| {
        f.kind = match f.kind {
            // Whatever the holder's trouble, the owner should treat the
            // argument as lost (and may re-run the task).
            FailureKind::WorkerLost | FailureKind::NoSuchObject => FailureKind::WorkerLost,
            // The argument's task failed: the owner reports its error.
            _ => FailureKind::ArgumentFailed,
        };
        f.message = format!("argument {id} from {holder}: {}", f.message);
        f
    })
}

/// Waits for the argument its owner pushes on a bulk stream.
async fn pushed(shared: &Shared, owner: u64, req: u64, len: u64) -> Result<Blob, Failure> {
    let lost = || {
        failure(
            FailureKind::WorkerLost,
            format!("pushed argument {req} of owner {owner:x} never arrived"),
        )
    };
    let claimed = lock(&shared.pushed).claim((owner, req), Instant::now());
    let blob = match claimed {
        Ok(blob) => blob,
        Err(rx) => rx.await.map_err(|_| lost())?,
    };
    if blob.len() as u64 != len {
        return Err(failure(
            FailureKind::Decode,
            format!("pushed argument of {} bytes, {len} announced", blob.len()),
        ));
    }
    Ok(blob)
}

/// Maps an argument its owner sealed in this host's shared memory.
fn shared_arg(path: String, len: u64) -> Result<Blob, Failure> {
    let path = std::path::PathBuf::from(path);
    match crate::shm::map_offered(&path) {
        Ok(b) if b.len() as u64 == len => Ok(b),
        Ok(b) => Err(failure(
            FailureKind::Decode,
            format!("shared argument of {} bytes, {len} announced", b.len()),
        )),
        Err(e) => Err(failure(
            FailureKind::SharedUnmappable,
            format!("cannot map the shared argument {}: {e}", path.display()),
        )),
    }
}

/// Waits for object `id` in this worker's store.
async fn local(shared: &Shared, id: ObjectId) -> Result<Blob, Failure> {
    let lookup = lock(&shared.store).lookup(id, Instant::now());
    match lookup {
        Lookup::Settled(r) => r,
        Lookup::Wait(rx) => rx.await.unwrap_or_else(|_| {
            Err(failure(
                FailureKind::NoSuchObject,
                format!("object {id} dropped"),
            ))
        }),
    }
}

/// Fetches a worker serves at once (each a task, most waiting for an object
/// still being computed): what fetches of ids never computed, or of one id
/// many times over, can cost.
pub(crate) const MAX_FETCHES: u32 = 65_536;

/// Answers a fetch once the object is ready: with the path of its file to
/// a fetcher on this host, on a bulk stream when large, else inline.
pub(crate) fn serve_fetch(shared: &Arc<Shared>, reply: Link, req: u64, id: ObjectId, host: String) {
    let serving = shared.fetches.fetch_add(1, Ordering::Relaxed);
    if serving >= MAX_FETCHES {
        shared.fetches.fetch_sub(1, Ordering::Relaxed);
        let busy = failure(
            FailureKind::NoSuchObject,
            format!("object {id}: this worker serves {MAX_FETCHES} fetches already"),
        );
        let _ = reply.send(Message::Fetched {
            req,
            result: Err(busy),
        });
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        /// Counts the fetch out however its task ends.
        struct Served(Arc<Shared>);
        impl Drop for Served {
            fn drop(&mut self) {
                self.0.fetches.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _served = Served(shared.clone());
        let started = Instant::now();
        let msg = match local(&shared, id).await {
            Ok(blob) => match blob.file() {
                Some(path) if !host.is_empty() && host == shared.host => Message::FetchedShared {
                    req,
                    path: path.to_string_lossy().into_owned(),
                    len: blob.len() as u64,
                },
                _ if blob.len() > crate::limits::LARGE => Message::Bulk {
                    req,
                    payload: dfut_net::wire::Payload::new(blob),
                },
                _ => Message::Fetched {
                    req,
                    result: Ok(blob.to_vec()),
                },
            },
            Err(f) => Message::Fetched {
                req,
                result: Err(f),
            },
        };
        let (bytes, shared_file) = match &msg {
            Message::FetchedShared { len, .. } => (*len, true),
            Message::Bulk { payload, .. } => (payload.as_slice().len() as u64, false),
            Message::Fetched { result: Ok(v), .. } => (v.len() as u64, false),
            _ => (0, false),
        };
        let _ = reply.send(msg);
        shared.tasks.served(tasklog::Served {
            id,
            reader: reply.peer(),
            bytes,
            shared: shared_file,
            started,
            ended: Instant::now(),
        });
    });
}

/// The most custom resources one task may name (past it, the task fails:
/// checking it costs time per name).
const MAX_CUSTOM_RESOURCES: usize = 64;

/// Merges amounts of one resource named twice (a task from a careless or
/// hostile peer), so what is checked is what is taken.
fn merge_duplicates(custom: &mut Vec<dfut_net::wire::ResourceAmount>) {
    if custom.len() > MAX_CUSTOM_RESOURCES {
        return; // refused by the caller
    }
    let mut merged: Vec<dfut_net::wire::ResourceAmount> = Vec::with_capacity(custom.len());
    for r in custom.drain(..) {
        match merged.iter_mut().find(|m| m.name == r.name) {
            Some(m) => m.amount = m.amount.saturating_add(r.amount),
            None => merged.push(r),
        }
    }
    *custom = merged;
}
