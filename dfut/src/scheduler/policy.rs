//! The placement policy trait and what a policy sees: a task's needs and a
//! view of the workers.
//!
//! A policy never does I/O and never reads the clock: the owner hands it a
//! snapshot ([`WorkerView`]s, suspect workers already left out) and it
//! returns an index or a reason why no worker fits. That keeps every policy
//! testable on crafted views and usable in the simulator. The built-in
//! policies are in `policies.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use dfut_net::wire::{ObjectId, ResourceAmount, WorkerLoad};

/// What a task needs from the worker that runs it.
///
/// Built with [`TaskNeeds::new`] outside dfut (a simulator, a policy's
/// tests); it gains fields as placement learns more.
///
/// ```
/// use dfut::scheduler::TaskNeeds;
///
/// let needs = TaskNeeds::new("matmul").gpu(true).cost(Some(4.0));
/// assert!(needs.gpu && needs.gpus == 1 && needs.args.is_empty());
/// assert_eq!(needs.cpus, 1);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskNeeds<'a> {
    /// The remote function's registered name.
    pub function: &'a str,
    /// Whether it must run on a GPU worker (`gpus > 0`).
    pub gpu: bool,
    /// CPUs (slots) it holds while running; a worker with fewer slots
    /// cannot run it.
    pub cpus: u32,
    /// GPUs it holds while running.
    pub gpus: u32,
    /// Memory it reserves while running, in MiB.
    pub memory_mb: u64,
    /// Custom resources it holds while running.
    pub custom: &'a [ResourceAmount],
    /// Where its arguments held by workers live (values sent with the task
    /// are not listed).
    pub args: &'a [ArgPlacement],
    /// The function's declared relative cost (`#[remote(cost = ..)]`), if
    /// any: 1.0 is a typical task.
    pub cost: Option<f64>,
    /// The call's placement strategy, applied by the owner before any
    /// policy is asked.
    pub(crate) strategy: crate::options::Strategy,
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
    /// Whether it runs GPU tasks (`gpus > 0`).
    pub gpu: bool,
    /// GPUs it declares.
    pub gpus: u32,
    /// Memory it declares, in MiB (`u64::MAX`: not said).
    pub memory_mb: u64,
    /// Custom resources it declares.
    pub custom: Arc<[ResourceAmount]>,
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
            cpus: 1,
            gpus: 0,
            memory_mb: 0,
            custom: &[],
            args: &[],
            cost: None,
            strategy: crate::options::Strategy::Default,
        }
    }

    /// Sets whether it must run on a GPU worker (one GPU, or none).
    pub fn gpu(mut self, gpu: bool) -> Self {
        self.gpus = u32::from(gpu);
        self.gpu = gpu;
        self
    }

    /// Sets the GPUs it needs.
    pub fn gpus(mut self, gpus: u32) -> Self {
        self.gpus = gpus;
        self.gpu = gpus > 0;
        self
    }

    /// Sets the CPUs it needs.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Sets the memory it needs, in MiB.
    pub fn memory_mb(mut self, memory_mb: u64) -> Self {
        self.memory_mb = memory_mb;
        self
    }

    /// Sets the custom resources it needs.
    pub fn custom(mut self, custom: &'a [ResourceAmount]) -> Self {
        self.custom = custom;
        self
    }

    /// Whether it needs one CPU and nothing else: every worker can run it.
    pub fn is_one_cpu(&self) -> bool {
        self.cpus <= 1
            && self.gpus == 0
            && !self.gpu
            && self.memory_mb == 0
            && self.custom.is_empty()
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
    /// speed 1.0, no GPU, memory not said, no custom resources, nothing in
    /// flight, an idle load.
    pub fn new(id: u64, addr: SocketAddr, max_concurrent: u32) -> Self {
        Self {
            id,
            addr,
            max_concurrent,
            hw_generation: 1,
            speed: 1.0,
            gpu: false,
            gpus: 0,
            memory_mb: u64::MAX,
            custom: Arc::from(Vec::new()),
            inflight: 0,
            load: WorkerLoad::default(),
        }
    }

    /// Sets the GPUs it declares.
    pub fn gpus(mut self, gpus: u32) -> Self {
        self.gpus = gpus;
        self.gpu = gpus > 0;
        self
    }

    /// Sets the memory it declares, in MiB.
    pub fn memory_mb(mut self, memory_mb: u64) -> Self {
        self.memory_mb = memory_mb;
        self
    }

    /// Sets the custom resources it declares.
    pub fn custom(mut self, custom: Vec<ResourceAmount>) -> Self {
        self.custom = Arc::from(custom);
        self
    }

    /// How much of the custom resource `name` it declares.
    pub fn custom_amount(&self, name: &str) -> u32 {
        amount_of(&self.custom, name)
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

    /// Sets whether it runs GPU tasks (with one GPU, or none).
    pub fn gpu(mut self, gpu: bool) -> Self {
        self.gpus = u32::from(gpu);
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

/// How much of `name` a list of amounts holds (0 if absent).
pub(crate) fn amount_of(list: &[ResourceAmount], name: &str) -> u32 {
    list.iter().find(|r| r.name == name).map_or(0, |r| r.amount)
}

/// Whether `w` may run `task`: it has the GPU kind the task needs and at
/// least the CPUs (slots), GPUs, memory and custom resources the task
/// holds while it runs.
pub fn eligible(task: &TaskNeeds<'_>, w: &WorkerView) -> bool {
    if task.is_one_cpu() {
        return true;
    }
    (!task.gpu || w.gpu)
        && task.cpus <= w.max_concurrent.max(1)
        && task.gpus <= w.gpus
        && task.memory_mb <= w.memory_mb
        && task
            .custom
            .iter()
            .all(|r| r.amount <= w.custom_amount(&r.name))
}

/// Why no worker is eligible for `task`: each need no worker meets, with
/// the most any worker has.
pub fn no_eligible_reason(task: &TaskNeeds<'_>, workers: &[WorkerView]) -> String {
    if workers.is_empty() {
        return "no worker is registered".to_owned();
    }
    let n = workers.len();
    let most = |f: &dyn Fn(&WorkerView) -> u64| workers.iter().map(f).max().unwrap_or(0);
    let mut missing = Vec::new();
    if (task.gpu || task.gpus > 0) && !workers.iter().any(|w| w.gpu) {
        missing.push(format!(
            "a GPU, and none of the {n} registered workers has one"
        ));
    } else if task.gpus > 1 && most(&|w| u64::from(w.gpus)) < u64::from(task.gpus) {
        missing.push(format!(
            "{} GPUs, and the most a worker has is {}",
            task.gpus,
            most(&|w| u64::from(w.gpus))
        ));
    }
    let cpus = most(&|w| u64::from(w.max_concurrent.max(1)));
    if u64::from(task.cpus) > cpus {
        missing.push(format!(
            "{} CPUs, and the most a worker has is {cpus}",
            task.cpus
        ));
    }
    let memory = most(&|w| w.memory_mb);
    if task.memory_mb > memory {
        missing.push(format!(
            "{} MiB of memory, and the most a worker has is {memory} MiB",
            task.memory_mb
        ));
    }
    for r in task.custom {
        let has = most(&|w| u64::from(w.custom_amount(&r.name)));
        if has == 0 {
            missing.push(format!(
                "resource `{}` = {}, which no worker declares",
                r.name, r.amount
            ));
        } else if u64::from(r.amount) > has {
            missing.push(format!(
                "resource `{}` = {}, and the most a worker has is {has}",
                r.name, r.amount
            ));
        }
    }
    if missing.is_empty() {
        format!(
            "no worker of the {n} registered has everything `{}` needs at once ({})",
            task.function,
            describe(task)
        )
    } else {
        format!("`{}` needs {}", task.function, missing.join("; "))
    }
}

/// What a task needs, in words: `2 CPUs, 1 GPU, 512 MiB, disk = 1`.
pub(crate) fn describe(task: &TaskNeeds<'_>) -> String {
    let mut parts = vec![count(task.cpus, "CPU")];
    parts.extend(beyond_cpus(task.gpus, task.memory_mb, task.custom, " = "));
    parts.join(", ")
}

/// `1 GPU`, `2 GPUs`.
fn count(n: u32, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// GPUs, memory and custom resources in words (each only if any), custom
/// ones as name, `sep`, amount.
pub(crate) fn beyond_cpus(
    gpus: u32,
    memory_mb: u64,
    custom: &[ResourceAmount],
    sep: &str,
) -> Vec<String> {
    let mut parts = Vec::new();
    if gpus > 0 {
        parts.push(count(gpus, "GPU"));
    }
    if memory_mb > 0 {
        parts.push(format!("{memory_mb} MiB"));
    }
    parts.extend(
        custom
            .iter()
            .map(|r| format!("{}{sep}{}", r.name, r.amount)),
    );
    parts
}

/// Sets `name` to `amount` in a list of named amounts, replacing an
/// earlier amount of it and keeping the others in order.
pub(crate) fn set_amount(list: &mut Vec<(String, u32)>, name: String, amount: u32) {
    list.retain(|(n, _)| *n != name);
    list.push((name, amount));
}
