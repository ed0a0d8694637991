//! Running one task on a worker: resolving its arguments, waiting for a
//! slot, calling the function, catching panics, storing and reporting the
//! result. Also serving fetches of stored objects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dfut_net::Link;
use dfut_net::wire::{Arg, Failure, FailureKind, Message, ObjectId, Outcome, TaskSpec};
use rand::{Rng, SeedableRng};

use super::Shared;
use super::store::Lookup;
use crate::object::Blob;
use crate::registry::{self, Invoke, TaskResult};

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

/// Takes a task from an owner and runs it in the background.
pub(crate) fn accept(shared: &Arc<Shared>, reply: Link, task: TaskSpec) {
    shared
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .expect(task.id);
    shared.queued.fetch_add(1, Ordering::Relaxed);
    let shared = shared.clone();
    tokio::spawn(async move {
        let id = task.id;
        let inline_max = task.inline_max as usize;
        let result = run(&shared, &reply, task).await;
        let outcome = match &result {
            Ok(blob) if blob.len() <= inline_max => Outcome::Inline(blob.to_vec()),
            Ok(blob) => Outcome::Stored(blob.len() as u64),
            Err(f) => Outcome::Failed(f.clone()),
        };
        let counter = if result.is_ok() { &shared.done } else { &shared.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        shared
            .store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .complete(id, result);
        let _ = reply.send(Message::Done { id, outcome });
    });
}

fn failure(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

async fn run(shared: &Arc<Shared>, reply: &Link, task: TaskSpec) -> Result<Blob, Failure> {
    let function = registry::lookup(&task.function);
    let args = resolve_args(shared, task.args).await;
    shared.queued.fetch_sub(1, Ordering::Relaxed);
    let Some(function) = function else {
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
    shared.running.fetch_add(1, Ordering::Relaxed);
    let _ = reply.send(Message::Started(task.id));
    if let Some(delay) = &shared.delay {
        tokio::time::sleep(delay.sample()).await;
    }
    let result = match function.invoke {
        Invoke::Sync(f) => {
            let slots = shared.slots.clone();
            let client = shared.client.clone();
            tokio::task::spawn_blocking(move || {
                let _current = crate::context::enter(client);
                crate::context::with_task_permit(permit, slots, || {
                    std::panic::catch_unwind(move || f(args))
                })
            })
            .await
            .map_err(|e| failure(FailureKind::Other, e.to_string()))
            .and_then(|r| r.map_err(|p| failure(FailureKind::Panicked, panic_message(p))))
        }
        Invoke::Async(f) => {
            let r = tokio::spawn(crate::context::WithClient::new(shared.client.clone(), f(args))).await;
            drop(permit);
            r.map_err(|e| match e.try_into_panic() {
                Ok(p) => failure(FailureKind::Panicked, panic_message(p)),
                Err(e) => failure(FailureKind::Other, e.to_string()),
            })
        }
    };
    shared.running.fetch_sub(1, Ordering::Relaxed);
    result.and_then(|r: TaskResult| r).map(Arc::new)
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
async fn resolve_args(shared: &Arc<Shared>, args: Vec<Arg>) -> Result<Vec<Blob>, Failure> {
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        out.push(match arg {
            Arg::Value(bytes) => Arc::new(bytes),
            Arg::Ref { id, holder } => resolve_ref(shared, id, &holder).await?,
        });
    }
    Ok(out)
}

async fn resolve_ref(shared: &Arc<Shared>, id: ObjectId, holder: &str) -> Result<Blob, Failure> {
    let holder: SocketAddr = holder
        .parse()
        .map_err(|_| failure(FailureKind::Decode, format!("bad holder address `{holder}`")))?;
    if holder == shared.addr {
        return local(shared, id).await;
    }
    shared.client.fetch(holder, id).await.map_err(|e| {
        let mut f = e.to_failure();
        if f.kind == FailureKind::NoSuchObject || matches!(e, crate::Error::Transport(_)) {
            // Whatever the holder's trouble, the owner should treat the
            // argument as lost (and may re-run the task).
            f.kind = FailureKind::WorkerLost;
        }
        f.message = format!("argument {id} from {holder}: {}", f.message);
        f
    })
}

async fn local(shared: &Arc<Shared>, id: ObjectId) -> Result<Blob, Failure> {
    let lookup = shared
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .lookup(id);
    match lookup {
        Lookup::Settled(r) => r,
        Lookup::Wait(rx) => rx
            .await
            .unwrap_or_else(|_| Err(failure(FailureKind::NoSuchObject, format!("object {id} dropped")))),
    }
}

/// Answers a fetch once the object is ready.
pub(crate) fn serve_fetch(shared: &Arc<Shared>, reply: Link, req: u64, id: ObjectId) {
    let lookup = shared
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .lookup(id);
    match lookup {
        Lookup::Settled(r) => {
            let _ = reply.send(Message::Fetched {
                req,
                result: r.map(|b| b.to_vec()),
            });
        }
        Lookup::Wait(rx) => {
            tokio::spawn(async move {
                let r = rx.await.unwrap_or_else(|_| {
                    Err(failure(FailureKind::NoSuchObject, format!("object {id} dropped")))
                });
                let _ = reply.send(Message::Fetched {
                    req,
                    result: r.map(|b| b.to_vec()),
                });
            });
        }
    }
}
