//! Placement and membership.
//!
//! [`Scheduler`] is the placement policy trait: pure code, run by each
//! owner on its view of the cluster. Seven built-in policies are selectable
//! by name ([`policy_by_name`]). The scheduler *service* keeps membership and
//! load (heartbeats), pushes the view to every client, and answers status
//! requests; task arguments and results never pass through it.

mod dashboard;
mod http;
mod membership;
mod metrics;
mod policies;
mod policy;
pub(crate) mod service;

pub use dfut_net::wire::{
    ClusterStatus, ObjectId, ObjectListing, ObjectState, ResourceAmount, ResourceRequest,
    WorkerInfo, WorkerLoad, WorkerState,
};
pub use policies::{DefaultPolicy, GpuAware, LoadAware, Locality, PowerOfTwo, Random, RoundRobin};
pub use policy::{ArgPlacement, Scheduler, TaskNeeds, WorkerView, eligible, no_eligible_reason};
pub(crate) use policy::{amount_of, set_amount};
pub use service::{
    MAX_LISTED_TASKS, SchedulerConfig, SchedulerHandle, query_objects, query_status, query_tasks,
    serve,
};

/// The names [`policy_by_name`] accepts.
pub const POLICY_NAMES: &[&str] = policies::NAMES;

/// The built-in policy called `name`, as given to `dfut scheduler --mode`,
/// `DFUT_SCHEDULER_MODE` or [`Builder::policy_name`](crate::Builder::policy_name).
/// Randomised policies are seeded from `DFUT_SCHEDULER_SEED` if set.
///
/// ```
/// assert_eq!(dfut::scheduler::policy_by_name("power-of-two")?.name(), "power-of-two");
/// let Err(err) = dfut::scheduler::policy_by_name("fastest") else { panic!("accepted") };
/// assert!(err.to_string().contains("valid: random, round-robin, power-of-two"));
/// # Ok::<(), dfut::Error>(())
/// ```
pub fn policy_by_name(name: &str) -> crate::Result<Box<dyn Scheduler>> {
    let seed = std::env::var("DFUT_SCHEDULER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    policies::by_name(name, seed).ok_or_else(|| {
        crate::Error::Config(
            format!(
                "unknown scheduling policy `{name}` (valid: {})",
                POLICY_NAMES.join(", ")
            )
            .into(),
        )
    })
}

/// The built-in policy called `name`, its randomness seeded with `seed`
/// (for reproducible experiments and simulations); `None` for an unknown
/// name.
///
/// ```
/// let p = dfut::scheduler::policy_with_seed("random", 7).unwrap();
/// assert_eq!(p.name(), "random");
/// assert!(dfut::scheduler::policy_with_seed("fastest", 7).is_none());
/// ```
pub fn policy_with_seed(name: &str, seed: u64) -> Option<Box<dyn Scheduler>> {
    policies::by_name(name, seed)
}

/// What a worker declares beyond its slots, in words: `1 GPU, 16000 MiB,
/// disk=1`.
///
/// ```
/// let mut info = dfut::scheduler::WorkerInfo::default();
/// info.gpus = 1;
/// info.memory_mb = 16000;
/// info.resources = vec![dfut::scheduler::ResourceAmount { name: "disk".into(), amount: 1 }];
/// assert_eq!(dfut::scheduler::describe_resources(&info), "1 GPU, 16000 MiB, disk=1");
/// ```
pub fn describe_resources(info: &WorkerInfo) -> String {
    let gpus = info.gpus.max(u32::from(info.gpu));
    policy::beyond_cpus(gpus, info.memory_mb, &info.resources, "=").join(", ")
}
