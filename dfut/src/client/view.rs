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
use crate::scheduler::{Scheduler, TaskNeeds, WorkerView};

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
    pub policy: Box<dyn Scheduler>,
    /// Set by the user (builder or `set_policy`): the scheduler's announced
    /// mode does not replace it.
    pub explicit_policy: bool,
    pub window_per_slot: u32,
    pub backlog: VecDeque<Arc<ObjectCell>>,
    /// Last time a task was sent or finished.
    pub last_progress: Instant,
    /// Until then, workers missing from the scheduler's view are kept (it
    /// just restarted and they are registering again).
    pub keep_until: Option<Instant>,
    /// Since when no worker has been usable (none, or all suspect).
    pub unusable_since: Option<Instant>,
    /// Workers on this owner's host that can map its shared memory: large
    /// arguments reach them as files (`Arg::Shared`), not bytes. Bounded
    /// by the workers in the view.
    pub shm_peers: Vec<SocketAddr>,
}

impl ClusterView {
    pub fn new(policy: Box<dyn Scheduler>, explicit_policy: bool) -> Self {
        Self {
            workers: Vec::new(),
            suspect: Vec::new(),
            policy,
            explicit_policy,
            window_per_slot: DEFAULT_WINDOW_PER_SLOT,
            backlog: VecDeque::new(),
            last_progress: Instant::now(),
            keep_until: None,
            unusable_since: None,
            shm_peers: Vec::new(),
        }
    }

    fn has_room(&self, w: &WorkerView) -> bool {
        w.inflight < w.max_concurrent.max(1).saturating_mul(self.window_per_slot)
    }

    /// Why no worker is usable, once that has lasted `patience`.
    pub fn unusable_for(&self, patience: std::time::Duration) -> Option<String> {
        let since = self.unusable_since?;
        (since.elapsed() >= patience).then(|| {
            if self.workers.is_empty() {
                format!("no worker has been registered for {patience:?}")
            } else {
                format!(
                    "all {} workers have been suspect (missing heartbeats) for {patience:?}",
                    self.workers.len()
                )
            }
        })
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
        let healthy =
            |v: &Self, w: &WorkerView| !v.suspect.contains(&w.id) && Some(w.addr) != avoid;
        if avoid.is_none() && !self.workers.iter().any(|w| healthy(self, w)) {
            // No worker is usable right now (none registered, or every one
            // suspect): wait for one, up to the owner's patience.
            self.unusable_since.get_or_insert_with(Instant::now);
            return Placement::Full;
        }
        self.unusable_since = None;
        // First the policy's free choice among healthy workers.
        let first = if self.workers.iter().all(|w| healthy(self, w)) {
            self.policy.place(needs, &self.workers)
        } else {
            self.place_among(needs, |v, w| healthy(v, w))
        };
        let chosen = match first {
            Ok(i) if force || self.workers.get(i).is_some_and(|w| self.has_room(w)) => Ok(i),
            Ok(i) => {
                // The chosen worker is full. If it holds the task's
                // arguments, wait for it (moving the task would move the
                // data); otherwise choose among the workers with room.
                let holds_args = needs.args.iter().any(|a| a.holder == self.workers[i].addr);
                if holds_args {
                    return Placement::Full;
                }
                match self.place_among(needs, |v, w| healthy(v, w) && v.has_room(w)) {
                    Ok(j) => Ok(j),
                    Err(_) => return Placement::Full,
                }
            }
            Err(reason) => Err(reason),
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

    /// Runs the policy on the workers passing `keep`; returns an index into
    /// all workers.
    fn place_among(
        &mut self,
        needs: &TaskNeeds<'_>,
        keep: impl Fn(&Self, &WorkerView) -> bool,
    ) -> Result<usize, String> {
        let candidates: Vec<usize> = (0..self.workers.len())
            .filter(|&i| keep(self, &self.workers[i]))
            .collect();
        let view: Vec<WorkerView> = candidates
            .iter()
            .map(|&i| self.workers[i].clone())
            .collect();
        let j = self.policy.place(needs, &view)?;
        candidates
            .get(j)
            .copied()
            .ok_or_else(|| format!("policy chose worker {j}"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use dfut_net::wire::{ObjectId, WorkerLoad};

    use super::*;
    use crate::scheduler::{ArgPlacement, DefaultPolicy, RoundRobin};

    fn worker(id: u64, inflight: u32) -> WorkerView {
        WorkerView {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], 2000 + id as u16)),
            max_concurrent: 1,
            hw_generation: 1,
            speed: 1.0,
            gpu: false,
            inflight,
            load: WorkerLoad::default(),
        }
    }

    fn needs(args: &[ArgPlacement]) -> TaskNeeds<'_> {
        TaskNeeds {
            function: "m::f",
            gpu: false,
            args,
            cost: None,
        }
    }

    fn view(policy: Box<dyn Scheduler>, inflight: &[u32]) -> ClusterView {
        let mut v = ClusterView::new(policy, true);
        v.window_per_slot = 2;
        v.workers = inflight
            .iter()
            .enumerate()
            .map(|(i, n)| worker(i as u64, *n))
            .collect();
        v
    }

    fn chosen(p: Placement) -> Option<u16> {
        match p {
            Placement::Chosen(a) => Some(a.port() - 2000),
            _ => None,
        }
    }

    #[test]
    fn a_full_worker_is_passed_over_for_independent_tasks() {
        let mut v = view(Box::new(RoundRobin::default()), &[2, 0]);
        // Round-robin would pick worker 0 first; it is full.
        assert_eq!(chosen(v.place(&needs(&[]), false)), Some(1));
        assert_eq!(v.workers[1].inflight, 1);
    }

    #[test]
    fn everyone_full_means_wait_unless_forced() {
        let mut v = view(Box::new(RoundRobin::default()), &[2, 2]);
        assert!(matches!(v.place(&needs(&[]), false), Placement::Full));
        assert!(chosen(v.place(&needs(&[]), true)).is_some());
    }

    #[test]
    fn a_task_waits_for_the_full_worker_holding_its_argument() {
        let mut v = view(Box::new(DefaultPolicy::default()), &[2, 0]);
        let arg = [ArgPlacement {
            id: ObjectId { owner: 1, seq: 1 },
            holder: v.workers[0].addr,
            bytes: Some(1 << 20),
            readers: 0,
        }];
        assert!(matches!(v.place(&needs(&arg), false), Placement::Full));
        v.workers[0].inflight = 1;
        assert_eq!(chosen(v.place(&needs(&arg), false)), Some(0));
    }

    #[test]
    fn suspect_and_avoided_workers_are_never_chosen() {
        let mut v = view(Box::new(RoundRobin::default()), &[0, 0, 0]);
        v.suspect = vec![0];
        for _ in 0..4 {
            assert_ne!(chosen(v.place(&needs(&[]), false)), Some(0));
        }
        let avoid = v.workers[1].addr;
        v.workers[2].inflight = 0;
        for _ in 0..4 {
            assert_eq!(chosen(v.place_avoiding(&needs(&[]), avoid)), Some(2));
            v.workers[2].inflight = 0;
        }
    }
}
