//! The dashboard: one self-contained page (no outside scripts or fonts)
//! that polls `/api/state` every second and draws the live workers with
//! their load, tasks by state, throughput over the last five minutes, the
//! largest objects and the most recent failures.

use std::time::{Duration, Instant};

use dfut_net::wire::{Message, TaskState, WorkerState};
use serde_json::{Value, json};

use super::http::Site;
use super::service::{ask_each, objects_of};
use crate::inspect::{object_state_name, task_state_name};

/// The page.
pub(crate) const PAGE: &str = include_str!("dashboard.html");

/// How long the largest objects and recent failures, asked of every
/// worker, are reused before being asked again.
const EXTRAS_KEPT: Duration = Duration::from_secs(2);
/// How long the page's questions wait for each worker (a worker's object
/// listing itself waits up to 2 s for owners).
const WORKER_PATIENCE: Duration = Duration::from_secs(3);
/// Objects and failures shown.
const SHOWN: usize = 10;

/// What the page shows, as JSON.
pub(crate) async fn state(site: &Site) -> Value {
    let (mode, workers) = site.cluster.view();
    let history = site.cluster.history();
    let throughput: Vec<Value> = history
        .windows(2)
        .map(|w| {
            let seconds = (w[1].unix_ms.saturating_sub(w[0].unix_ms)) as f64 / 1000.0;
            let total = |s: &super::service::Sample| s.finished.saturating_add(s.failed);
            let ended = total(&w[1]).saturating_sub(total(&w[0]));
            json!([w[1].unix_ms, ended as f64 / seconds.max(0.001)])
        })
        .collect();
    let sum = |f: fn(&WorkerState) -> u64| workers.iter().fold(0u64, |n, w| n.saturating_add(f(w)));
    let tasks = json!({
        "running": sum(|w| u64::from(w.load.running)),
        "queued": sum(|w| u64::from(w.load.queued)),
        "finished": sum(|w| w.load.tasks_done),
        "failed": sum(|w| w.load.tasks_failed),
    });
    let listed: Vec<Value> = workers.iter().map(worker).collect();
    let extras = extras(site, &workers).await;
    json!({
        "policy": mode,
        "now_ms": crate::clock::unix_us(Instant::now()) / 1000,
        "workers": listed,
        "tasks": tasks,
        "throughput": throughput,
        "largest_objects": extras["objects"],
        "failures": extras["failures"],
    })
}

fn worker(w: &WorkerState) -> Value {
    let (i, l) = (&w.info, &w.load);
    json!({
        "addr": i.addr,
        "host": i.host,
        "pid": i.pid,
        "slots": i.max_concurrent,
        "gpu": i.gpu,
        "gpus": i.gpus,
        "memory_mb": i.memory_mb,
        "resources": super::describe_resources(i),
        "running": l.running,
        "queued": l.queued,
        "objects": l.objects,
        "object_bytes": l.object_bytes,
        "finished": l.tasks_done,
        "failed": l.tasks_failed,
        "suspect": w.suspect,
    })
}

/// The largest objects and the most recent failures, asked of the workers
/// at most once per [`EXTRAS_KEPT`] (concurrent pages wait for one ask).
async fn extras(site: &Site, workers: &[WorkerState]) -> Value {
    let mut kept = site.extras.lock().await;
    if let Some((at, value)) = kept.as_ref()
        && at.elapsed() < EXTRAS_KEPT
    {
        return value.clone();
    }
    let endpoint = &site.cluster.endpoint;
    let objects = objects_of(endpoint, workers, SHOWN as u32, WORKER_PATIENCE);
    let request = Message::TasksRequest {
        req: 1,
        limit: SHOWN as u32,
        state: Some(TaskState::Failed),
    };
    let pick = |m| match m {
        Message::TasksReply { tasks, .. } => Some(tasks),
        _ => None,
    };
    let what = ("task listing", WORKER_PATIENCE);
    let tasks = ask_each(endpoint, workers, request, pick, what);
    let (objects, tasks) = tokio::join!(objects, tasks);
    let mut failures: Vec<_> = tasks
        .into_iter()
        .flatten()
        .filter(|t| t.state == TaskState::Failed)
        .collect();
    failures.sort_by_key(|t| std::cmp::Reverse(t.ended_us));
    failures.truncate(SHOWN);
    let value = json!({
        "objects": objects.iter().map(|o| json!({
            "id": o.id.to_string(),
            "bytes": o.bytes,
            "state": object_state_name(o.state),
            "holder": o.holder,
            "function": o.function,
        })).collect::<Vec<_>>(),
        "failures": failures.iter().map(|t| json!({
            "id": t.id.to_string(),
            "function": t.function,
            "worker": t.worker,
            "state": task_state_name(t.state),
            "error": t.error,
            "ended_ms": t.ended_us / 1000,
        })).collect::<Vec<_>>(),
    });
    *kept = Some((Instant::now(), value.clone()));
    value
}
