//! Per-call options: override a remote function's deadline, retries,
//! priority, resources and placement for the calls made inside one
//! closure.
//!
//! `#[remote(timeout_ms = .., retries = .., cpus = .., resources(..))]`
//! fixes a function's defaults at compile time; [`Options::call`]
//! overrides them for every remote call its closure makes on this thread.
//! The override is a thread-local, so it needs no change to the generated
//! functions and works the same for every one of them.

use std::cell::RefCell;
use std::time::Duration;

use dfut_net::wire::{ResourceAmount, ResourceRequest};

use crate::client::FnSpec;

/// Options for the remote calls made inside [`Options::call`]. Unset
/// fields keep the function's own defaults (from `#[dfut::remote(..)]`).
///
/// ```
/// use std::time::Duration;
///
/// #[dfut::remote]
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// let _ctx = rt.enter();
/// let sum = dfut::Options::new()
///     .timeout(Duration::from_secs(5))
///     .retries(3)
///     .retry_on_error(true)
///     .call(|| add(1, 2));
/// assert_eq!(sum.get()?, 3);
/// # Ok::<(), dfut::Error>(())
/// ```
///
/// Resources and placement work the same way: the calls below need two
/// CPUs and one unit of a custom resource `disk` (only workers declaring
/// one can run them, one at a time per unit), and spread over the workers:
///
/// ```
/// #[dfut::remote]
/// fn scan(part: u32) -> u32 {
///     part
/// }
///
/// let worker = dfut::WorkerOptions::default().max_concurrent(2).resource("disk", 1);
/// let rt = dfut::Runtime::builder()
///     .in_process_workers(0)
///     .add_worker(worker.clone())
///     .add_worker(worker)
///     .start()?;
/// let _ctx = rt.enter();
/// let parts: Vec<_> = dfut::Options::new()
///     .cpus(2)
///     .resource("disk", 1)
///     .strategy(dfut::Strategy::Spread)
///     .call(|| (0..4).map(scan).collect());
/// let values: Vec<u32> = parts.iter().map(|p| p.get()).collect::<dfut::Result<_>>()?;
/// assert_eq!(values, [0, 1, 2, 3]);
///
/// // Needs no worker has fail at once, saying what is missing.
/// let err = dfut::Options::new().resource("tpu", 1).call(|| scan(9)).get().unwrap_err();
/// assert!(err.to_string().contains("`tpu` = 1, which no worker declares"), "{err}");
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    timeout: Option<Duration>,
    retries: Option<u32>,
    retry_on_error: Option<bool>,
    priority: Option<Priority>,
    cpus: Option<u32>,
    gpus: Option<u32>,
    memory_mb: Option<u64>,
    /// Custom resources set here, by name (0: drop the function's own).
    custom: Vec<(String, u32)>,
    strategy: Option<Strategy>,
}

/// Where a call runs, beside what its resources allow (as Ray's
/// scheduling strategies).
///
/// A worker's node id is [`WorkerView::id`](crate::scheduler::WorkerView)
/// in [`Client::workers`](crate::Client::workers), as `dfut status` shows
/// it (in hexadecimal).
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// # let _guard = rt.enter();
/// # #[dfut::remote] fn warm(x: u64) -> u64 { x }
/// let node = rt.client().workers()[1].id;
/// let here = dfut::Options::new()
///     .strategy(dfut::Strategy::NodeAffinity { node, soft: false })
///     .call(|| warm(1));
/// assert_eq!(here.get()?, 1);
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// The cluster's placement policy chooses (the default).
    #[default]
    Default,
    /// Over the workers that have what the call needs: each call to the
    /// one with the fewest of this process's tasks in flight, in turn
    /// among equals, whatever the policy would prefer (locality
    /// included).
    Spread,
    /// On worker `node`. Hard (`soft: false`): only there; the call waits
    /// while that worker is busy or missing heartbeats, and fails with
    /// [`Error::NoEligibleWorker`](crate::Error::NoEligibleWorker) if it
    /// is not in the cluster or lacks what the call needs. Soft: there
    /// when it can take the call now, else where the policy chooses.
    NodeAffinity {
        /// The worker's node id.
        node: u64,
        /// Whether another worker may run it when this one cannot.
        soft: bool,
    },
}

/// How urgent a call is: background work (a prefetch, a warm-up) is
/// [`Priority::Low`] and never goes ahead of [`Priority::Normal`] work.
///
/// Low-priority tasks wait in their owner's backlog behind every normal
/// task waiting there. At a worker they never take a slot: they run on a
/// background lane of their own (as many at once as the worker's slots
/// less one, at least one), on Linux at the lowest priority (nice 19),
/// and start only while no normal task waits and a slot is idle. A normal
/// task arriving while background work runs takes a free slot at once,
/// and the kernel runs it ahead of the background thread. A running task
/// is never interrupted: a normal task waiting for the result of a
/// background task already running waits at that task's priority.
/// Threads a background task starts inherit its priority. `async` remote
/// functions hold no slot, so priority does not order them.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
/// # let _guard = rt.enter();
/// # #[dfut::remote] fn warm(x: u64) -> u64 { x }
/// let later = dfut::Options::new()
///     .priority(dfut::Priority::Low)
///     .call(|| warm(1));
/// assert_eq!(later.get()?, 1);
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Demand work (the default).
    #[default]
    Normal,
    /// Background work.
    Low,
}

impl Options {
    /// No overrides: every call keeps its function's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails a call that runs longer than `limit` with
    /// [`Error::Timeout`](crate::Error::Timeout); `Duration::ZERO` removes
    /// the function's deadline. Deadlines are whole milliseconds (rounded
    /// up), at most `u32::MAX` ms.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// How many times a call is re-run after its worker dies (and, with
    /// [`retry_on_error`](Self::retry_on_error), after it fails).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Whether a call that panics, returns `Err` or times out is re-run
    /// too, while retries are left (as Ray's `retry_exceptions`).
    pub fn retry_on_error(mut self, retry: bool) -> Self {
        self.retry_on_error = Some(retry);
        self
    }

    /// Sets the calls' priority (see [`Priority`]).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// CPUs (slots) each call holds while it runs (at least 1; 0 counts
    /// as 1). A worker's CPUs are its slots: only workers with at least
    /// this many run it. `async` functions hold no slot, so this only
    /// chooses their worker.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = Some(cpus.max(1));
        self
    }

    /// GPUs each call holds while it runs, exclusively (it runs only on
    /// workers declaring at least this many, and sees the GPU as a GPU
    /// task does; 0 drops the function's own `gpus`, not its `gpu`).
    pub fn gpus(mut self, gpus: u32) -> Self {
        self.gpus = Some(gpus);
        self
    }

    /// Memory each call reserves while it runs, in MiB: a worker starts it
    /// only while that much of its declared memory is not reserved by
    /// other running tasks. What the task really uses is not limited.
    pub fn memory_mb(mut self, memory_mb: u64) -> Self {
        self.memory_mb = Some(memory_mb);
        self
    }

    /// Units of the custom resource `name` each call holds while it runs
    /// (only workers declaring that many run it; 0 drops a need the
    /// function declares).
    pub fn resource(mut self, name: impl Into<String>, amount: u32) -> Self {
        crate::scheduler::set_amount(&mut self.custom, name.into(), amount);
        self
    }

    /// Sets where the calls run (see [`Strategy`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Clears this thread's options until the guard drops (a task run on a
    /// thread that another task's `call` is waiting on starts afresh).
    pub(crate) fn isolate() -> impl Drop {
        let previous = CURRENT.with(|c| c.replace(Options::new()));
        Restore(Some(previous))
    }

    /// Runs `calls`; every remote call it makes on this thread uses these
    /// options (one `Options` value can serve many `call`s). Nested `call`s override field by field, and the previous
    /// options come back when `calls` returns or panics.
    pub fn call<R>(&self, calls: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|c| c.borrow().clone());
        let mut custom = previous.custom.clone();
        for (name, amount) in &self.custom {
            crate::scheduler::set_amount(&mut custom, name.clone(), *amount);
        }
        let merged = Options {
            timeout: self.timeout.or(previous.timeout),
            retries: self.retries.or(previous.retries),
            retry_on_error: self.retry_on_error.or(previous.retry_on_error),
            priority: self.priority.or(previous.priority),
            cpus: self.cpus.or(previous.cpus),
            gpus: self.gpus.or(previous.gpus),
            memory_mb: self.memory_mb.or(previous.memory_mb),
            custom,
            strategy: self.strategy.or(previous.strategy),
        };
        CURRENT.with(|c| *c.borrow_mut() = merged);
        let _restore = Restore(Some(previous));
        calls()
    }
}

thread_local! {
    /// The options [`Options::call`] set on this thread.
    static CURRENT: RefCell<Options> = const {
        RefCell::new(Options {
            timeout: None,
            retries: None,
            retry_on_error: None,
            priority: None,
            cpus: None,
            gpus: None,
            memory_mb: None,
            custom: Vec::new(),
            strategy: None,
        })
    };
}

/// Puts the previous options back, even if the closure panics.
struct Restore(Option<Options>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
}

/// The options one call runs with: its function's defaults, overridden by
/// [`Options::call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallOptions {
    /// Deadline in milliseconds; 0 for none.
    pub timeout_ms: u32,
    pub retries: u32,
    pub retry_on_error: bool,
    pub low: bool,
    pub resources: ResourceRequest,
    pub strategy: Strategy,
}

impl CallOptions {
    /// The options for a call of `spec` made now on this thread.
    pub fn for_call(spec: &FnSpec) -> Self {
        CURRENT.with(|c| {
            let o = c.borrow();
            let mut custom: Vec<ResourceAmount> = spec
                .resources
                .iter()
                .filter(|(name, _)| !o.custom.iter().any(|(n, _)| n == name))
                .map(|&(name, amount)| ResourceAmount {
                    name: name.to_owned(),
                    amount,
                })
                .collect();
            custom.extend(o.custom.iter().map(|(name, amount)| ResourceAmount {
                name: name.clone(),
                amount: *amount,
            }));
            custom.retain(|r| r.amount > 0);
            Self {
                timeout_ms: o.timeout.map_or(spec.timeout_ms, millis),
                retries: o.retries.unwrap_or(spec.retries),
                retry_on_error: o.retry_on_error.unwrap_or(spec.retry_on_error),
                low: o.priority == Some(Priority::Low),
                resources: ResourceRequest {
                    cpus: o.cpus.unwrap_or(spec.cpus).max(1),
                    gpus: o.gpus.unwrap_or(spec.gpus),
                    memory_mb: o.memory_mb.unwrap_or(spec.memory_mb),
                    custom,
                },
                strategy: o.strategy.unwrap_or_default(),
            }
        })
    }
}

/// Whole milliseconds, rounded up, saturating at `u32::MAX`.
fn millis(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPEC: FnSpec = FnSpec {
        name: "t::f",
        signature: crate::__private::unchecked,
        retries: 2,
        cpus: 1,
        gpu: false,
        gpus: 0,
        memory_mb: 0,
        resources: &[("disk", 1)],
        cost: None,
        timeout_ms: 100,
        retry_on_error: false,
    };

    #[test]
    fn defaults_come_from_the_function() {
        let o = CallOptions::for_call(&SPEC);
        assert_eq!(
            o,
            CallOptions {
                timeout_ms: 100,
                retries: 2,
                retry_on_error: false,
                low: false,
                resources: ResourceRequest {
                    custom: vec![ResourceAmount {
                        name: "disk".into(),
                        amount: 1
                    }],
                    ..ResourceRequest::default()
                },
                strategy: Strategy::Default,
            }
        );
        let low = Options::new()
            .priority(Priority::Low)
            .call(|| CallOptions::for_call(&SPEC));
        assert!(low.low);
    }

    #[test]
    fn call_overrides_inside_and_restores_after() {
        let inner = Options::new().retries(5).call(|| {
            Options::new()
                .timeout(Duration::from_micros(1500))
                .call(|| CallOptions::for_call(&SPEC))
        });
        assert_eq!(inner.retries, 5, "the outer override stays in force");
        assert_eq!(inner.timeout_ms, 2, "rounded up to whole milliseconds");
        assert_eq!(CallOptions::for_call(&SPEC).retries, 2);
        let zero = Options::new()
            .timeout(Duration::ZERO)
            .call(|| CallOptions::for_call(&SPEC));
        assert_eq!(zero.timeout_ms, 0);
    }

    #[test]
    fn a_panicking_closure_still_restores() {
        let r = std::panic::catch_unwind(|| {
            Options::new().retry_on_error(true).call(|| panic!("boom"))
        });
        assert!(r.is_err());
        assert!(!CallOptions::for_call(&SPEC).retry_on_error);
    }

    #[test]
    fn resources_override_the_functions_field_by_field() {
        let o = Options::new().cpus(4).resource("gpu-mem", 2).call(|| {
            Options::new()
                .resource("disk", 0)
                .gpus(1)
                .strategy(Strategy::Spread)
                .call(|| CallOptions::for_call(&SPEC))
        });
        let r = &o.resources;
        assert_eq!((r.cpus, r.gpus, r.memory_mb), (4, 1, 0));
        let names: Vec<_> = r
            .custom
            .iter()
            .map(|c| (c.name.as_str(), c.amount))
            .collect();
        assert_eq!(names, [("gpu-mem", 2)], "disk dropped by amount 0");
        assert_eq!(o.strategy, Strategy::Spread);
        let zero = Options::new().cpus(0).call(|| CallOptions::for_call(&SPEC));
        assert_eq!(zero.resources.cpus, 1, "a task holds at least one CPU");
        assert_eq!(CallOptions::for_call(&SPEC).resources.custom.len(), 1);
    }
}
