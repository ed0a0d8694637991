//! Placement and membership.
//!
//! [`Scheduler`] is the placement policy trait, pure code run by each owner
//! on its view of the cluster. The scheduler *service* keeps membership and
//! load (heartbeats), pushes the view to every client, and answers status
//! requests; task arguments and results never pass through it.

mod membership;
mod policy;
pub(crate) mod service;

pub use dfut_net::wire::{ClusterStatus, WorkerInfo, WorkerLoad, WorkerState};
pub use policy::{ArgPlacement, LocalityLeastLoaded, Scheduler, TaskNeeds, WorkerView};
pub use service::{SchedulerConfig, SchedulerHandle, query_status, serve};

/// The names `policy_by_name` accepts.
pub const POLICY_NAMES: &[&str] = &["default"];

/// The built-in policy called `name`, as given to `dfut scheduler --mode`.
///
/// ```
/// assert_eq!(dfut::scheduler::policy_by_name("default")?.name(), "default");
/// let Err(err) = dfut::scheduler::policy_by_name("fastest") else { panic!("accepted") };
/// assert!(err.to_string().contains("valid: default"));
/// # Ok::<(), dfut::Error>(())
/// ```
pub fn policy_by_name(name: &str) -> crate::Result<Box<dyn Scheduler>> {
    match name {
        "default" => Ok(Box::new(LocalityLeastLoaded::new())),
        other => Err(crate::Error::Config(format!(
            "unknown scheduling policy `{other}` (valid: {})",
            POLICY_NAMES.join(", ")
        ))),
    }
}
