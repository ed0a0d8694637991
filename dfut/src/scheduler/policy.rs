//! Placement policies: pure functions of a task's needs and a view of the
//! workers.
//!
//! A policy never does I/O and never reads the clock: the owner hands it a
//! snapshot ([`WorkerView`]s) and it returns an index or a reason why no
//! worker fits. That keeps every policy testable on crafted views.

use std::net::SocketAddr;

use dfut_net::wire::WorkerLoad;

/// What a task needs from the worker that runs it.
#[derive(Debug, Clone)]
pub struct TaskNeeds<'a> {
    /// The remote function's registered name.
    pub function: &'a str,
    /// Whether it must run on a GPU worker.
    pub gpu: bool,
    /// Where its arguments live (only those held by workers).
    pub args: &'a [ArgPlacement],
}

/// Where one argument of a task lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgPlacement {
    /// The worker holding (or computing) it.
    pub holder: SocketAddr,
    /// Its size in bytes, when known.
    pub bytes: Option<u64>,
}

/// One worker as a policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    /// The worker's node id.
    pub id: u64,
    /// Its address.
    pub addr: SocketAddr,
    /// Tasks it runs at once.
    pub max_concurrent: u32,
    /// Hardware generation (higher is faster).
    pub hw_generation: u32,
    /// Whether it runs GPU tasks.
    pub gpu: bool,
    /// Tasks this owner has sent it that have not finished.
    pub inflight: u32,
    /// Its last reported load.
    pub load: WorkerLoad,
}

/// Chooses a worker for each task.
///
/// Implement it to plug in a policy of your own; see
/// [`Builder::policy`](crate::Builder::policy).
///
/// ```
/// use dfut::scheduler::{Scheduler, TaskNeeds, WorkerView};
///
/// /// Always the first eligible worker.
/// struct First;
///
/// impl Scheduler for First {
///     fn name(&self) -> &str { "first" }
///     fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String> {
///         workers.iter().position(|w| w.gpu || !task.gpu).ok_or_else(|| "no GPU worker".into())
///     }
/// }
/// ```
pub trait Scheduler: Send + 'static {
    /// The policy's name, as shown by `dfut status`.
    fn name(&self) -> &str;
    /// The index in `workers` of the worker to run `task`, or why none fits.
    fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String>;
}

/// The default policy: the least-loaded eligible worker, except that a task
/// goes to the worker holding its arguments while that worker is not much
/// busier than the least-loaded one (locality keeps dependency chains and
/// large arguments from travelling). Ties rotate.
#[derive(Debug, Default, Clone)]
pub struct LocalityLeastLoaded {
    next: usize,
}

impl LocalityLeastLoaded {
    /// A fresh policy.
    pub fn new() -> Self {
        Self::default()
    }
}

fn eligible(task: &TaskNeeds<'_>, w: &WorkerView) -> bool {
    !task.gpu || w.gpu
}

/// Queue length relative to capacity.
fn pressure(w: &WorkerView) -> f64 {
    f64::from(w.inflight) / f64::from(w.max_concurrent.max(1))
}

/// Why no worker is eligible for `task`.
pub(crate) fn no_eligible_reason(task: &TaskNeeds<'_>, workers: &[WorkerView]) -> String {
    if workers.is_empty() {
        "no worker is registered".to_owned()
    } else if task.gpu {
        format!(
            "`{}` needs a GPU and none of the {} registered workers has one",
            task.function,
            workers.len()
        )
    } else {
        format!("no worker can run `{}`", task.function)
    }
}

impl Scheduler for LocalityLeastLoaded {
    fn name(&self) -> &str {
        "default"
    }

    fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String> {
        let n = workers.len();
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (self.next + k) % n;
            if !eligible(task, &workers[i]) {
                continue;
            }
            if best.is_none_or(|b| pressure(&workers[i]) < pressure(&workers[b])) {
                best = Some(i);
            }
        }
        let least = best.ok_or_else(|| no_eligible_reason(task, workers))?;
        self.next = (least + 1) % n;
        // Locality: the eligible worker holding the most argument bytes
        // (unknown sizes count as one byte), unless it is two full rounds of
        // work behind the least-loaded worker.
        let mut holder: Option<(usize, u64)> = None;
        for arg in task.args {
            if let Some(i) = workers
                .iter()
                .position(|w| w.addr == arg.holder && eligible(task, w))
            {
                let bytes = arg.bytes.unwrap_or(1);
                let total = holder.filter(|(h, _)| *h == i).map_or(0, |(_, b)| b) + bytes;
                if holder.is_none_or(|(_, b)| total > b) {
                    holder = Some((i, total));
                }
            }
        }
        if let Some((i, _)) = holder
            && pressure(&workers[i]) <= pressure(&workers[least]) + 2.0
        {
            return Ok(i);
        }
        Ok(least)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: u64, inflight: u32, gpu: bool) -> WorkerView {
        WorkerView {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16)),
            max_concurrent: 2,
            hw_generation: 1,
            gpu,
            inflight,
            load: WorkerLoad::default(),
        }
    }

    fn needs<'a>(gpu: bool, args: &'a [ArgPlacement]) -> TaskNeeds<'a> {
        TaskNeeds {
            function: "m::f",
            gpu,
            args,
        }
    }

    #[test]
    fn picks_the_least_loaded() {
        let mut p = LocalityLeastLoaded::new();
        let ws = [
            worker(0, 5, false),
            worker(1, 1, false),
            worker(2, 3, false),
        ];
        assert_eq!(p.place(&needs(false, &[]), &ws), Ok(1));
    }

    #[test]
    fn ties_rotate() {
        let mut p = LocalityLeastLoaded::new();
        let ws = [
            worker(0, 0, false),
            worker(1, 0, false),
            worker(2, 0, false),
        ];
        let picks: Vec<_> = (0..6)
            .map(|_| p.place(&needs(false, &[]), &ws).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn follows_arguments_unless_overloaded() {
        let mut p = LocalityLeastLoaded::new();
        let ws = [worker(0, 0, false), worker(1, 3, false)];
        let arg = [ArgPlacement {
            holder: ws[1].addr,
            bytes: Some(1 << 20),
        }];
        assert_eq!(p.place(&needs(false, &arg), &ws), Ok(1));
        let busy = [worker(0, 0, false), worker(1, 9, false)];
        assert_eq!(p.place(&needs(false, &arg), &busy), Ok(0));
    }

    #[test]
    fn gpu_tasks_only_on_gpu_workers() {
        let mut p = LocalityLeastLoaded::new();
        let ws = [worker(0, 0, false), worker(1, 7, true)];
        assert_eq!(p.place(&needs(true, &[]), &ws), Ok(1));
        let cpu_only = [worker(0, 0, false)];
        let err = p.place(&needs(true, &[]), &cpu_only).unwrap_err();
        assert!(err.contains("needs a GPU"), "{err}");
        assert_eq!(
            p.place(&needs(false, &[]), &[]),
            Err("no worker is registered".to_owned())
        );
    }
}
