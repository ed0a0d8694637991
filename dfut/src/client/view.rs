//! The owner's view of the cluster and its admission control.
//!
//! The view holds the live workers (from the scheduler), this owner's
//! in-flight count per worker, and the placement policy. Admission control
//! keeps at most `window` tasks per slot in flight on a worker; tasks that
//! find every eligible worker full wait in the owner's backlog and are sent
//! as completions free room (late binding), so a slow worker is not handed
//! a fixed share of a burst. No I/O here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::object::ObjectCell;
use crate::scheduler::{Scheduler, TaskNeeds, WorkerView, eligible};

/// Default tasks in flight per slot before a worker counts as full.
pub const DEFAULT_WINDOW_PER_SLOT: u32 = 32;

/// Where a task goes.
pub(super) enum Placement {
    /// To this worker (counted in flight).
    Chosen(SocketAddr),
    /// Every eligible worker is full: wait in the backlog.
    Full,
    /// No worker can take it, ever (as things stand).
    Refused(String),
}

pub(super) struct ClusterView {
    pub workers: Vec<WorkerView>,
    /// Ids of workers that missed heartbeats: never chosen.
    pub suspect: Vec<u64>,
    pub mode: String,
    pub policy: Box<dyn Scheduler>,
    /// Set by the user (builder or `set_policy`): the scheduler's announced
    /// mode does not replace it.
    pub explicit_policy: bool,
    pub window_per_slot: u32,
    pub backlog: VecDeque<Arc<ObjectCell>>,
    /// Last time a task was sent or finished.
    pub last_progress: Instant,
}

impl ClusterView {
    pub fn new(policy: Box<dyn Scheduler>, explicit_policy: bool) -> Self {
        Self {
            workers: Vec::new(),
            suspect: Vec::new(),
            mode: String::new(),
            policy,
            explicit_policy,
            window_per_slot: DEFAULT_WINDOW_PER_SLOT,
            backlog: VecDeque::new(),
            last_progress: Instant::now(),
        }
    }

    fn has_room(&self, w: &WorkerView) -> bool {
        w.inflight < w.max_concurrent.max(1).saturating_mul(self.window_per_slot)
    }

    /// Chooses a worker for a task: among healthy workers with room, or,
    /// with `force`, among all healthy workers.
    pub fn place(&mut self, needs: &TaskNeeds<'_>, force: bool) -> Placement {
        self.place_where(needs, force, None)
    }

    /// Like `place`, never on `avoid` (for a speculative copy).
    pub fn place_avoiding(&mut self, needs: &TaskNeeds<'_>, avoid: SocketAddr) -> Placement {
        self.place_where(needs, false, Some(avoid))
    }

    fn place_where(
        &mut self,
        needs: &TaskNeeds<'_>,
        force: bool,
        avoid: Option<SocketAddr>,
    ) -> Placement {
        let usable = |v: &Self, w: &WorkerView| {
            !v.suspect.contains(&w.id) && Some(w.addr) != avoid && (force || v.has_room(w))
        };
        let chosen = if self.workers.iter().all(|w| usable(self, w)) {
            // The common case: no copy of the view needed.
            self.policy.place(needs, &self.workers)
        } else {
            let candidates: Vec<usize> = (0..self.workers.len())
                .filter(|&i| usable(self, &self.workers[i]))
                .collect();
            if !candidates
                .iter()
                .any(|&i| eligible(needs, &self.workers[i]))
            {
                let healthy_eligible = self.workers.iter().any(|w| {
                    !self.suspect.contains(&w.id) && Some(w.addr) != avoid && eligible(needs, w)
                });
                if healthy_eligible && !force {
                    return Placement::Full;
                }
            }
            let view: Vec<WorkerView> = candidates
                .iter()
                .map(|&i| self.workers[i].clone())
                .collect();
            self.policy.place(needs, &view).and_then(|j| {
                candidates
                    .get(j)
                    .copied()
                    .ok_or_else(|| format!("policy chose worker {j}"))
            })
        };
        match chosen {
            Ok(i) => match self.workers.get_mut(i) {
                Some(w) => {
                    w.inflight += 1;
                    self.last_progress = Instant::now();
                    Placement::Chosen(w.addr)
                }
                None => Placement::Refused(format!("policy chose worker {i}")),
            },
            Err(reason) => Placement::Refused(reason),
        }
    }
}
