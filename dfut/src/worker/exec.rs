//! Running one task on a worker: resolving its arguments, waiting for a
//! slot, calling the function, catching panics, storing and reporting the
//! result. Also serving fetches of stored objects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dfut_net::Link;
use dfut_net::wire::{Arg, Failure, FailureKind, Item, Message, ObjectId, Outcome, TaskSpec};
use rand::{Rng, SeedableRng};

use super::Shared;
use super::store::Lookup;
use crate::object::Blob;
use tokio::sync::OwnedSemaphorePermit;

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
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        Duration::from_millis(rng.random_range(0..=self.max_ms))
    }
}

/// Sync functions whose measured mean run time is below this run on the
/// thread that received the task instead of being handed to the blocking
/// pool: the hand-off (a thread wake-up) costs more than such a task.
const INLINE_BELOW: Duration = Duration::from_micros(50);

fn runs_inline(entry: &Entry) -> bool {
    matches!(entry.function.invoke, Invoke::Sync(_))
        && entry.mean().is_some_and(|m| m < INLINE_BELOW)
}

/// Takes a task from an owner. A short task whose arguments are all here
/// runs at once on this thread; anything else runs in the background.
pub(crate) fn accept(shared: &Arc<Shared>, reply: Link, task: TaskSpec) {
    shared
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .expect(task.id);
    let entry = registry::lookup(&task.function);
    let fast = entry.filter(|e| {
        shared.delay.is_none()
            && runs_inline(e)
            && task.args.iter().all(|a| matches!(a, Arg::Value(_)))
    });
    if let Some(entry) = fast
        && let Ok(permit) = shared.slots.clone().try_acquire_owned()
    {
        let args = task
            .args
            .into_iter()
            .map(|a| match a {
                Arg::Value(bytes) => ArgBytes::One(Arc::new(bytes)),
                // Excluded by `fast` above.
                Arg::Ref { .. } | Arg::List(_) => ArgBytes::One(Arc::new(Vec::new())),
            })
            .collect();
        shared.running.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let result = call_sync(shared, entry, args, permit);
        shared.running.fetch_sub(1, Ordering::Relaxed);
        finish(
            shared,
            &reply,
            task.id,
            task.inline_max,
            result,
            start.elapsed(),
        );
        return;
    }
    shared.queued.fetch_add(1, Ordering::Relaxed);
    let shared = shared.clone();
    tokio::spawn(async move {
        let (id, inline_max) = (task.id, task.inline_max);
        let (result, exec) = run(&shared, &reply, task, entry).await;
        finish(&shared, &reply, id, inline_max, result, exec);
    });
}

/// Stores a task's result and reports it to its owner.
fn finish(
    shared: &Shared,
    reply: &Link,
    id: ObjectId,
    inline_max: u32,
    result: Result<Blob, Failure>,
    exec: Duration,
) {
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
    shared
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .complete(id, result);
    let _ = reply.send(Message::Done {
        id,
        outcome,
        running: shared.running.load(Ordering::Relaxed),
        queued: shared.queued.load(Ordering::Relaxed),
        exec_us: u64::try_from(exec.as_micros()).unwrap_or(u64::MAX),
    });
}

fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

/// Calls a sync function on this thread, holding `permit`, and measures it.
fn call_sync(
    shared: &Shared,
    entry: &Entry,
    args: Args,
    permit: OwnedSemaphorePermit,
) -> Result<Blob, Failure> {
    let Invoke::Sync(f) = entry.function.invoke else {
        return Err(failure(FailureKind::Other, "not a sync function"));
    };
    let _current = crate::context::enter(shared.client.clone());
    let start = Instant::now();
    let gpu = entry.function.gpu;
    let result = crate::context::with_task_permit(permit, shared.slots.clone(), || {
        crate::context::as_gpu_task(gpu, || std::panic::catch_unwind(move || f(args)))
    });
    entry.record(start.elapsed());
    match result {
        Ok(r) => r.map(Arc::new),
        Err(p) => Err(failure(FailureKind::Panicked, panic_message(p))),
    }
}

/// Runs a task; also returns how long it held a slot.
async fn run(
    shared: &Arc<Shared>,
    reply: &Link,
    task: TaskSpec,
    entry: Option<&'static Entry>,
) -> (Result<Blob, Failure>, Duration) {
    let mut held = Duration::ZERO;
    let result = run_holding(shared, reply, task, entry, &mut held).await;
    (result, held)
}

async fn run_holding(
    shared: &Arc<Shared>,
    reply: &Link,
    task: TaskSpec,
    entry: Option<&'static Entry>,
    held: &mut Duration,
) -> Result<Blob, Failure> {
    let args = resolve_args(shared, task.args).await;
    shared.queued.fetch_sub(1, Ordering::Relaxed);
    let Some(entry) = entry else {
        return Err(failure(
            FailureKind::UnknownFunction,
            format!("no remote function `{}` in this worker", task.function),
        ));
    };
    let args = args?;
    let permit = shared
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| failure(FailureKind::Other, "worker shutting down"))?;
    if !shared
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(task.id)
    {
        // Freed while queued: its owner no longer wants it (a speculative
        // copy that lost, or a dropped handle).
        return Err(failure(FailureKind::Other, "cancelled"));
    }
    shared.running.fetch_add(1, Ordering::Relaxed);
    let slot_taken = Instant::now();
    if let Some(delay) = &shared.delay {
        tokio::time::sleep(delay.sample()).await;
    }
    let result = match entry.function.invoke {
        Invoke::Sync(_) if runs_inline(entry) => call_sync(shared, entry, args, permit),
        Invoke::Sync(_) => {
            let _ = reply.send(Message::Started(task.id));
            let worker = shared.clone();
            tokio::task::spawn_blocking(move || call_sync(&worker, entry, args, permit))
                .await
                .unwrap_or_else(|e| Err(failure(FailureKind::Other, e.to_string())))
        }
        Invoke::Async(f) => {
            let _ = reply.send(Message::Started(task.id));
            let start = Instant::now();
            let fut = crate::context::WithClient::new(shared.client.clone(), f(args));
            let r = tokio::spawn(fut).await;
            entry.record(start.elapsed());
            drop(permit);
            match r {
                Ok(r) => r.map(Arc::new),
                Err(e) => Err(match e.try_into_panic() {
                    Ok(p) => failure(FailureKind::Panicked, panic_message(p)),
                    Err(e) => failure(FailureKind::Other, e.to_string()),
                }),
            }
        }
    };
    shared.running.fetch_sub(1, Ordering::Relaxed);
    *held = slot_taken.elapsed();
    result
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
async fn resolve_args(shared: &Arc<Shared>, args: Vec<Arg>) -> Result<Args, Failure> {
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        out.push(match arg {
            Arg::Value(bytes) => ArgBytes::One(Arc::new(bytes)),
            Arg::Ref { id, holder } => ArgBytes::One(resolve_ref(shared, id, &holder).await?),
            Arg::List(items) => {
                // Fetched concurrently: a reduction's inputs live on many workers.
                let items = items.into_iter().map(|item| async move {
                    match item {
                        Item::Value(bytes) => Ok(Arc::new(bytes)),
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
            if matches!(e, crate::Error::Transport(_)) {
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

/// Waits for object `id` in this worker's store.
async fn local(shared: &Shared, id: ObjectId) -> Result<Blob, Failure> {
    let lookup = shared
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .lookup(id, Instant::now());
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

/// Answers a fetch once the object is ready.
pub(crate) fn serve_fetch(shared: &Arc<Shared>, reply: Link, req: u64, id: ObjectId) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let result = local(&shared, id).await.map(|b| b.to_vec());
        let _ = reply.send(Message::Fetched { req, result });
    });
}
