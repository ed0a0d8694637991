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
