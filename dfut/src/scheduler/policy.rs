//! The placement policy trait and what a policy sees: a task's needs and a
//! view of the workers.
//!
//! A policy never does I/O and never reads the clock: the owner hands it a
//! snapshot ([`WorkerView`]s, suspect workers already left out) and it
//! returns an index or a reason why no worker fits. That keeps every policy
//! testable on crafted views and usable in the simulator. The built-in
//! policies are in `policies.rs`.

use std::net::SocketAddr;

use dfut_net::wire::{ObjectId, WorkerLoad};

/// What a task needs from the worker that runs it.
///
/// Built with [`TaskNeeds::new`] outside dfut (a simulator, a policy's
/// tests); it gains fields as placement learns more.
///
/// ```
/// use dfut::scheduler::TaskNeeds;
///
/// let needs = TaskNeeds::new("matmul").gpu(true).cost(Some(4.0));
/// assert!(needs.gpu && needs.args.is_empty());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskNeeds<'a> {
    /// The remote function's registered name.
    pub function: &'a str,
    /// Whether it must run on a GPU worker.
    pub gpu: bool,
    /// Where its arguments held by workers live (values sent with the task
    /// are not listed).
    pub args: &'a [ArgPlacement],
    /// The function's declared relative cost (`#[remote(cost = ..)]`), if
    /// any: 1.0 is a typical task.
    pub cost: Option<f64>,
}

/// Where one argument of a task lives.
///
/// ```
/// use dfut::scheduler::ArgPlacement;
/// use dfut::scheduler::ObjectId;
///
/// let arg = ArgPlacement::new(ObjectId { owner: 1, seq: 7 }, "127.0.0.1:4000".parse().unwrap())
///     .bytes(Some(1 << 20));
/// assert_eq!((arg.bytes, arg.readers), (Some(1 << 20), 0));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArgPlacement {
    /// The object.
    pub id: ObjectId,
    /// The worker holding (or computing) it.
    pub holder: SocketAddr,
    /// Its size in bytes, once known (`None` while it is being computed).
    pub bytes: Option<u64>,
    /// Tasks already sent that read it. The first reader of a value still
    /// being computed is usually the next link of a chain.
    pub readers: u32,
}

/// One worker as a policy sees it.
///
/// ```
/// use dfut::scheduler::WorkerView;
///
/// let w = WorkerView::new(1, "127.0.0.1:4000".parse().unwrap(), 4).inflight(3);
/// assert_eq!(w.free_slots(), 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkerView {
    /// The worker's node id.
    pub id: u64,
    /// Its address.
    pub addr: SocketAddr,
    /// Tasks it runs at once.
    pub max_concurrent: u32,
    /// Hardware generation, as set by flag (higher is faster).
    pub hw_generation: u32,
    /// Speed measured at start, relative to a reference machine (1.0).
    pub speed: f64,
    /// Whether it runs GPU tasks.
    pub gpu: bool,
    /// Tasks this owner has sent it that have not finished (exact, live).
    pub inflight: u32,
    /// Its last reported load (heartbeat or completion).
    pub load: WorkerLoad,
}

impl<'a> TaskNeeds<'a> {
    /// A CPU task of `function` with no arguments held by workers and no
    /// declared cost.
    pub fn new(function: &'a str) -> Self {
        Self {
            function,
            gpu: false,
            args: &[],
            cost: None,
        }
    }

    /// Sets whether it must run on a GPU worker.
    pub fn gpu(mut self, gpu: bool) -> Self {
        self.gpu = gpu;
        self
    }

    /// Sets where its arguments live.
    pub fn args(mut self, args: &'a [ArgPlacement]) -> Self {
        self.args = args;
        self
    }

    /// Sets its declared relative cost.
    pub fn cost(mut self, cost: Option<f64>) -> Self {
        self.cost = cost;
        self
    }
}

impl ArgPlacement {
    /// Object `id`, held by `holder`, size unknown, no readers yet.
    pub fn new(id: ObjectId, holder: SocketAddr) -> Self {
        Self {
            id,
            holder,
            bytes: None,
            readers: 0,
        }
    }

    /// Sets its size in bytes.
    pub fn bytes(mut self, bytes: Option<u64>) -> Self {
        self.bytes = bytes;
        self
    }

    /// Sets how many sent tasks read it.
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers;
        self
    }
}

impl WorkerView {
    /// Worker `id` at `addr` with `max_concurrent` slots: generation 1,
    /// speed 1.0, no GPU, nothing in flight, an idle load.
    pub fn new(id: u64, addr: SocketAddr, max_concurrent: u32) -> Self {
        Self {
            id,
            addr,
            max_concurrent,
            hw_generation: 1,
            speed: 1.0,
            gpu: false,
            inflight: 0,
            load: WorkerLoad::default(),
        }
    }

    /// Sets its hardware generation.
    pub fn hw_generation(mut self, generation: u32) -> Self {
        self.hw_generation = generation;
        self
    }

    /// Sets its measured speed.
    pub fn speed(mut self, speed: f64) -> Self {
        self.speed = speed;
        self
    }

    /// Sets whether it runs GPU tasks.
    pub fn gpu(mut self, gpu: bool) -> Self {
        self.gpu = gpu;
        self
    }

    /// Sets this owner's tasks in flight on it.
    pub fn inflight(mut self, inflight: u32) -> Self {
        self.inflight = inflight;
        self
    }

    /// Sets its last reported load.
    pub fn load(mut self, load: WorkerLoad) -> Self {
        self.load = load;
        self
    }

    /// Tasks waiting for or using its slots: this owner's in-flight tasks,
    /// or the reported load if other owners keep it busier.
    pub fn queue(&self) -> u32 {
        self.inflight
            .max(self.load.running.saturating_add(self.load.queued))
    }

    /// Free slots, as far as the owner knows.
    pub fn free_slots(&self) -> u32 {
        self.max_concurrent.saturating_sub(self.queue())
    }

    /// Queue length relative to capacity: 0 idle, 1 every slot busy.
    pub fn pressure(&self) -> f64 {
        f64::from(self.queue()) / f64::from(self.max_concurrent.max(1))
    }
}

/// Chooses a worker for each task.
///
/// Implement it to plug in a policy of your own; see
/// [`Builder::policy`](crate::Builder::policy) and the `custom_policy`
/// example.
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

    /// Places a batch of tasks submitted together. The default places them
    /// one by one, counting each choice as one more task in flight.
    fn place_batch(
        &mut self,
        tasks: &[TaskNeeds<'_>],
        workers: &[WorkerView],
    ) -> Vec<Result<usize, String>> {
        let mut view = workers.to_vec();
        tasks
            .iter()
            .map(|t| {
                let r = self.place(t, &view);
                if let Ok(i) = r
                    && let Some(w) = view.get_mut(i)
                {
                    w.inflight += 1;
                }
                r
            })
            .collect()
    }
}

/// Whether `w` may run `task`.
pub fn eligible(task: &TaskNeeds<'_>, w: &WorkerView) -> bool {
    !task.gpu || w.gpu
}

/// Why no worker is eligible for `task`.
pub fn no_eligible_reason(task: &TaskNeeds<'_>, workers: &[WorkerView]) -> String {
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
