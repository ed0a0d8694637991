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
use crate::options::Strategy;
use crate::scheduler::{Scheduler, TaskNeeds, WorkerView, eligible, no_eligible_reason};

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
    /// Where the next spread placement starts looking.
    pub spread_next: usize,
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
            spread_next: 0,
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
        let usable = self.workers.iter().any(|w| !self.suspect.contains(&w.id));
        if usable {
            self.unusable_since = None;
        } else {
            // No worker is usable right now (none registered, or every one
            // suspect): wait for one, up to the owner's patience (a
            // speculative copy is simply not placed).
            self.unusable_since.get_or_insert_with(Instant::now);
            if avoid.is_none() {
                return Placement::Full;
            }
        }
        match needs.strategy {
            Strategy::Default => {}
            Strategy::NodeAffinity { node, soft } => {
                // `None`: soft, and the node cannot take it now.
                if let Some(placement) = self.by_affinity(needs, node, soft, force, avoid) {
                    return placement;
                }
            }
            Strategy::Spread => {
                if let Some(placement) = self.spread(needs, force, avoid) {
                    return placement;
                }
            }
        }
        // Only workers with what the task needs are shown to the policy, so
        // every policy, a user's too, honours resources (a one-CPU task fits
        // every worker).
        let fits = |w: &WorkerView| eligible(needs, w);
        // First the policy's free choice among healthy workers.
        let first = if needs.is_one_cpu() && self.workers.iter().all(|w| healthy(self, w)) {
            self.policy.place(needs, &self.workers)
        } else {
            self.place_among(needs, |v, w| healthy(v, w) && fits(w))
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
                match self.place_among(needs, |v, w| healthy(v, w) && fits(w) && v.has_room(w)) {
                    Ok(j) => Ok(j),
                    Err(_) => return Placement::Full,
                }
            }
            // A worker with the resources is only suspect (paused, say):
            // wait for it, forced or not (it may come back; the owner's
            // patience bounds the wait).
            Err(_)
                if !needs.is_one_cpu()
                    && self
                        .workers
                        .iter()
                        .any(|w| fits(w) && Some(w.addr) != avoid) =>
            {
                return Placement::Full;
            }
            Err(_) if !needs.is_one_cpu() => Err(no_eligible_reason(needs, &self.workers)),
            Err(reason) => Err(reason),
        };
        match chosen {
            Ok(i) => self.count_in(i),
            Err(reason) => Placement::Refused(reason),
        }
    }

    /// Sends to worker `i`: one more in flight there.
    fn count_in(&mut self, i: usize) -> Placement {
        match self.workers.get_mut(i) {
            Some(w) => {
                w.inflight += 1;
                self.last_progress = Instant::now();
                Placement::Chosen(w.addr)
            }
            None => Placement::Refused(format!("policy chose worker {i}")),
        }
    }

    /// Node affinity: the named worker if it can take the task. A hard
    /// affinity waits for it while it is full or suspect, and refuses the
    /// task if it is gone or lacks what the task needs; a soft one (`None`)
    /// leaves those cases to the policy.
    fn by_affinity(
        &mut self,
        needs: &TaskNeeds<'_>,
        node: u64,
        soft: bool,
        force: bool,
        avoid: Option<SocketAddr>,
    ) -> Option<Placement> {
        let Some(i) = self.workers.iter().position(|w| w.id == node) else {
            return (!soft).then(|| {
                Placement::Refused(format!(
                    "`{}` must run on worker {node:x} (hard node affinity), which is not in the \
                     cluster",
                    needs.function
                ))
            });
        };
        let w = &self.workers[i];
        if !eligible(needs, w) {
            return (!soft).then(|| {
                Placement::Refused(format!(
                    "`{}` must run on worker {node:x} (hard node affinity): {}",
                    needs.function,
                    no_eligible_reason(needs, std::slice::from_ref(w))
                ))
            });
        }
        let usable = !self.suspect.contains(&node) && Some(w.addr) != avoid;
        if usable && (force || self.has_room(w)) {
            return Some(self.count_in(i));
        }
        (!soft).then_some(Placement::Full)
    }

    /// Spread: the healthy worker with what the task needs and room that
    /// has the fewest of this owner's tasks in flight, in turn among equals
    /// (`None`: no worker fits at all; the policy says why).
    fn spread(
        &mut self,
        needs: &TaskNeeds<'_>,
        force: bool,
        avoid: Option<SocketAddr>,
    ) -> Option<Placement> {
        let n = self.workers.len();
        let start = self.spread_next;
        let mut any = false;
        let mut pick: Option<usize> = None;
        // In turn from `start`, so the first of equals is the next one.
        for i in (0..n).map(|k| (start + k) % n) {
            let w = &self.workers[i];
            if self.suspect.contains(&w.id) || Some(w.addr) == avoid || !eligible(needs, w) {
                continue;
            }
            any = true;
            let fewer = pick.is_none_or(|p| w.inflight < self.workers[p].inflight);
            if (force || self.has_room(w)) && fewer {
                pick = Some(i);
            }
        }
        if !any {
            return None;
        }
        Some(match pick {
            Some(i) => {
                self.spread_next = i + 1;
                self.count_in(i)
            }
            None => Placement::Full,
        })
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

    use dfut_net::wire::{ObjectId, ResourceAmount};

    use super::*;
    use crate::TestRng as Rng;
    use crate::scheduler::{ArgPlacement, DefaultPolicy, RoundRobin};

    fn worker(id: u64, inflight: u32) -> WorkerView {
        WorkerView::new(id, SocketAddr::from(([127, 0, 0, 1], 2000 + id as u16)), 1)
            .inflight(inflight)
    }

    fn needs(args: &[ArgPlacement]) -> TaskNeeds<'_> {
        TaskNeeds::new("m::f").args(args)
    }

    /// A policy that ignores what tasks need: always worker 0.
    struct First;

    impl Scheduler for First {
        fn name(&self) -> &str {
            "first"
        }
        fn place(&mut self, _: &TaskNeeds<'_>, _: &[WorkerView]) -> Result<usize, String> {
            Ok(0)
        }
    }

    #[test]
    fn even_a_policy_that_ignores_resources_only_sees_workers_that_have_them() {
        let mut v = view(Box::new(First), &[0, 0, 0]);
        v.workers[2] = v.workers[2].clone().custom(vec![ResourceAmount {
            name: "disk".into(),
            amount: 1,
        }]);
        let disk = [ResourceAmount {
            name: "disk".into(),
            amount: 1,
        }];
        let task = TaskNeeds::new("m::io").custom(&disk);
        assert_eq!(chosen(v.place(&task, false)), Some(2));
        assert_eq!(chosen(v.place(&needs(&[]), false)), Some(0));
        // Worker 2 suspect: wait for it, the others lack the disk.
        v.suspect = vec![2];
        assert!(matches!(v.place(&task, false), Placement::Full));
        assert!(
            matches!(v.place(&task, true), Placement::Full),
            "forced (the owner's stall breaker): still waits"
        );
        v.workers.pop();
        match v.place(&task, false) {
            Placement::Refused(why) => {
                assert!(why.contains("`disk` = 1, which no worker"), "{why}")
            }
            _ => panic!("placed a task needing a disk nobody has"),
        }
    }

    #[test]
    fn node_affinity_and_spread_override_the_policy() {
        let mut v = view(Box::new(First), &[0, 0, 0]);
        v.window_per_slot = 100;
        let hard = |node| TaskNeeds {
            strategy: Strategy::NodeAffinity { node, soft: false },
            ..needs(&[])
        };
        let soft = |node| TaskNeeds {
            strategy: Strategy::NodeAffinity { node, soft: true },
            ..needs(&[])
        };
        assert_eq!(chosen(v.place(&hard(2), false)), Some(2));
        assert_eq!(chosen(v.place(&soft(1), false)), Some(1));
        // Gone: a soft affinity falls back to the policy, a hard one fails.
        assert_eq!(chosen(v.place(&soft(9), false)), Some(0));
        match v.place(&hard(9), false) {
            Placement::Refused(why) => assert!(why.contains("not in the cluster"), "{why}"),
            _ => panic!("placed a task bound to a missing worker"),
        }
        // Suspect or full: hard waits, soft goes elsewhere.
        v.suspect = vec![2];
        assert!(matches!(v.place(&hard(2), false), Placement::Full));
        assert_eq!(chosen(v.place(&soft(2), false)), Some(0));
        v.suspect.clear();
        v.window_per_slot = 1;
        for w in &mut v.workers {
            w.inflight = 0;
        }
        v.workers[1].inflight = 1;
        assert!(matches!(v.place(&hard(1), false), Placement::Full));
        // Lacking what the task needs: a hard affinity fails.
        let hard_wide = TaskNeeds {
            strategy: Strategy::NodeAffinity {
                node: 1,
                soft: false,
            },
            ..needs(&[]).cpus(4)
        };
        assert!(matches!(v.place(&hard_wide, false), Placement::Refused(_)));
        // Spread: every worker in turn, though the policy says worker 0.
        v.window_per_slot = 100;
        for w in &mut v.workers {
            w.inflight = 0;
        }
        let spread = TaskNeeds {
            strategy: Strategy::Spread,
            ..needs(&[])
        };
        let picks: Vec<_> = (0..6).map(|_| chosen(v.place(&spread, false))).collect();
        assert_eq!(
            picks.iter().filter(|p| **p == Some(0)).count(),
            2,
            "{picks:?}"
        );
        assert_eq!(
            picks.iter().filter(|p| **p == Some(1)).count(),
            2,
            "{picks:?}"
        );
        assert_eq!(
            picks.iter().filter(|p| **p == Some(2)).count(),
            2,
            "{picks:?}"
        );
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
    fn by_default_a_worker_takes_32_tasks_per_slot_then_counts_as_full() {
        let mut v = ClusterView::new(Box::new(RoundRobin::default()), true);
        assert_eq!(v.window_per_slot, 32);
        v.workers = vec![worker(0, 0)];
        v.workers[0].max_concurrent = 2;
        for _ in 0..64 {
            assert_eq!(chosen(v.place(&needs(&[]), false)), Some(0));
        }
        assert!(matches!(v.place(&needs(&[]), false), Placement::Full));
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

    /// A task the model has in flight: where, and whether it was forced
    /// past the window.
    struct Sent {
        addr: SocketAddr,
        forced: bool,
    }

    /// The tasks `w` may have in flight before it counts as full.
    fn window(per_slot: u32, w: &WorkerView) -> u32 {
        w.max_concurrent.max(1).saturating_mul(per_slot)
    }

    /// How often each outcome came up, to show the sequences reach them.
    #[derive(Default, Debug)]
    struct Seen {
        chosen: u32,
        full: u32,
        refused: u32,
        over_window: u32,
        none_usable: u32,
    }

    /// Runs random sequences of placements (free, forced, avoiding a
    /// worker), completions, suspicions and workers leaving and coming
    /// back, under every built-in policy, checking the view against a model
    /// of the tasks in flight after every operation. With
    /// `check_avoiding_clock`, also checks that a speculative placement
    /// leaves the "no worker usable since" clock running.
    fn random_view_sequences(check_avoiding_clock: bool) -> Seen {
        let mut seen = Seen::default();
        for seed in 1..=4u64 {
            for (p, name) in crate::scheduler::POLICY_NAMES.iter().enumerate() {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15
                    ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
                    ^ (p as u64 + 1).wrapping_mul(0x1000_0000_01b3));
                let policy =
                    crate::scheduler::policy_with_seed(name, seed).expect("a built-in policy");
                let mut v = ClusterView::new(policy, true);
                v.window_per_slot = 1 + rng.below(3) as u32;
                // Every worker that may be in the view; some start out.
                let pool: Vec<WorkerView> = (0..6)
                    .map(|id| WorkerView {
                        max_concurrent: 1 + rng.below(3) as u32,
                        speed: 0.5 + rng.below(4) as f64 / 2.0,
                        ..worker(id, 0).gpu(rng.below(3) == 0)
                    })
                    .collect();
                let n = 2 + rng.below(4) as usize;
                v.workers = pool[..n].to_vec();
                let mut tasks: Vec<Sent> = Vec::new();
                for step in 0..1_500u64 {
                    let at = format!("{name}, seed {seed}, step {step}");
                    match rng.below(20) {
                        0..=9 => {
                            let avoiding = rng.below(5) == 0;
                            let force = !avoiding && rng.below(6) == 0;
                            let avoid =
                                avoiding.then(|| pool[rng.below(pool.len() as u64) as usize].addr);
                            let gpu = rng.below(5) == 0;
                            let args: Vec<ArgPlacement> = if rng.below(3) == 0 {
                                vec![ArgPlacement {
                                    id: ObjectId {
                                        owner: 1,
                                        seq: step,
                                    },
                                    holder: pool[rng.below(pool.len() as u64) as usize].addr,
                                    bytes: Some(1 << 20),
                                    readers: 0,
                                }]
                            } else {
                                Vec::new()
                            };
                            let task = TaskNeeds::new("m::f").gpu(gpu).args(&args);
                            let before = v.workers.clone();
                            let healthy = |w: &WorkerView| {
                                !v.suspect.contains(&w.id) && Some(w.addr) != avoid
                            };
                            let fits = |w: &WorkerView| healthy(w) && (!gpu || w.gpu);
                            let per_slot = v.window_per_slot;
                            let room = |w: &WorkerView| w.inflight < window(per_slot, w);
                            let none_usable = !before.iter().any(|w| !v.suspect.contains(&w.id));
                            let could_fit = before.iter().any(fits);
                            // Only suspect workers have what it needs: it
                            // waits for them.
                            // (One-CPU tasks fit every worker: they wait
                            // only while no worker is usable.)
                            let fits_a_suspect =
                                gpu && before.iter().any(|w| w.gpu && Some(w.addr) != avoid);
                            let could_take = before.iter().any(|w| fits(w) && room(w));
                            let waits_for_args = before.iter().any(|w| {
                                healthy(w) && !room(w) && args.iter().any(|a| a.holder == w.addr)
                            });
                            let placed = match avoid {
                                Some(a) => v.place_avoiding(&task, a),
                                None => v.place(&task, force),
                            };
                            let mut want: Vec<u32> = before.iter().map(|w| w.inflight).collect();
                            match placed {
                                Placement::Chosen(a) => {
                                    seen.chosen += 1;
                                    let i = before.iter().position(|w| w.addr == a).unwrap_or_else(
                                        || panic!("{at}: chose {a}, not in the view"),
                                    );
                                    let w = &before[i];
                                    assert!(!v.suspect.contains(&w.id), "{at}: chose suspect {a}");
                                    assert_ne!(Some(a), avoid, "{at}: chose the avoided worker");
                                    assert!(!gpu || w.gpu, "{at}: a GPU task on a CPU worker");
                                    assert!(force || room(w), "{at}: sent to full {a} unforced");
                                    seen.over_window += u32::from(!room(w));
                                    want[i] += 1;
                                    tasks.push(Sent {
                                        addr: a,
                                        forced: force,
                                    });
                                }
                                Placement::Full => {
                                    seen.full += 1;
                                    if force {
                                        assert!(
                                            none_usable || (!could_fit && fits_a_suspect),
                                            "{at}: a forced task waits"
                                        );
                                    } else {
                                        assert!(
                                            !could_take || waits_for_args,
                                            "{at}: waits while a worker has room"
                                        );
                                    }
                                }
                                Placement::Refused(why) => {
                                    seen.refused += 1;
                                    assert!(
                                        !could_fit && !fits_a_suspect,
                                        "{at}: refused ({why}) though a worker fits"
                                    );
                                }
                            }
                            let got: Vec<u32> = v.workers.iter().map(|w| w.inflight).collect();
                            assert_eq!(got, want, "{at}: only the chosen worker counts one more");
                            if avoid.is_none() {
                                assert_eq!(
                                    v.unusable_since.is_some(),
                                    none_usable,
                                    "{at}: the unusable clock runs iff no worker is usable"
                                );
                                seen.none_usable += u32::from(none_usable);
                            } else if check_avoiding_clock && none_usable {
                                assert!(
                                    v.unusable_since.is_some(),
                                    "{at}: a speculative placement stopped the unusable clock"
                                );
                            }
                        }
                        10..=14 => {
                            // A task finishes; the owner counts it out as
                            // `worker_done` does.
                            if tasks.is_empty() {
                                continue;
                            }
                            let t = tasks.swap_remove(rng.below(tasks.len() as u64) as usize);
                            let w = v
                                .workers
                                .iter_mut()
                                .find(|w| w.addr == t.addr)
                                .unwrap_or_else(|| {
                                    panic!("{at}: a task in flight on a gone worker")
                                });
                            assert!(w.inflight > 0, "{at}: in flight would go negative");
                            w.inflight = w.inflight.saturating_sub(1);
                        }
                        15..=16 => {
                            // A new scheduler view: some workers suspect
                            // (now and then all of them).
                            let all = rng.below(6) == 0;
                            v.suspect = pool
                                .iter()
                                .map(|w| w.id)
                                .filter(|_| all || rng.below(3) == 0)
                                .collect();
                        }
                        17..=18 => {
                            // A worker leaves the view: its tasks are lost
                            // (and sent again as new placements).
                            if v.workers.len() > 1 {
                                let gone =
                                    v.workers.remove(rng.below(v.workers.len() as u64) as usize);
                                tasks.retain(|t| t.addr != gone.addr);
                            }
                        }
                        _ => {
                            // A worker (re)joins, with nothing in flight.
                            let absent: Vec<&WorkerView> = pool
                                .iter()
                                .filter(|p| !v.workers.iter().any(|w| w.id == p.id))
                                .collect();
                            if !absent.is_empty() {
                                let w = absent[rng.below(absent.len() as u64) as usize].clone();
                                v.workers.push(w);
                            }
                        }
                    }
                    for w in &v.workers {
                        let mine: Vec<&Sent> = tasks.iter().filter(|t| t.addr == w.addr).collect();
                        assert_eq!(
                            w.inflight as usize,
                            mine.len(),
                            "{at}: in flight on {}",
                            w.addr
                        );
                        let forced = mine.iter().filter(|t| t.forced).count() as u32;
                        assert!(
                            w.inflight <= window(v.window_per_slot, w) + forced,
                            "{at}: {} over its window unforced",
                            w.addr
                        );
                    }
                }
                // Everything completes: every count is back to zero.
                for t in tasks.drain(..) {
                    if let Some(w) = v.workers.iter_mut().find(|w| w.addr == t.addr) {
                        w.inflight -= 1;
                    }
                }
                assert!(
                    v.workers.iter().all(|w| w.inflight == 0),
                    "{name}, seed {seed}: all completed, yet {:?}",
                    v.workers.iter().map(|w| w.inflight).collect::<Vec<_>>()
                );
            }
        }
        seen
    }

    /// Random sequences of placements, completions, suspicions and workers
    /// leaving or joining, under every built-in policy: each worker's
    /// in-flight count equals the tasks the model has on it (never below
    /// zero, never over its window except by forced tasks), only the
    /// chosen worker's count moves, a suspect, avoided or ineligible
    /// worker is never chosen, a task waits only when no usable worker has
    /// room (or a full one holds its argument) and is refused only when no
    /// usable worker could ever run it, the "no worker usable" clock runs
    /// exactly when none is, and once everything completes every count is
    /// back to zero.
    #[test]
    fn random_operation_sequences_keep_the_admission_counts_exact() {
        let seen = random_view_sequences(false);
        assert!(
            seen.chosen > 1_000
                && seen.full > 100
                && seen.refused > 50
                && seen.over_window > 50
                && seen.none_usable > 50,
            "the sequences reach every outcome: {seen:?}"
        );
    }

    /// The same sequences, also checking the field's promise ("since when no
    /// worker has been usable") after speculative placements. Regression: a
    /// `place_avoiding` while every worker was suspect cleared the clock, so a
    /// speculation tick every 20 ms kept the backlog from ever failing with
    /// "all workers have been suspect".
    #[test]
    fn a_speculative_placement_leaves_the_unusable_clock_running() {
        random_view_sequences(true);
    }

    /// The smallest case of that regression: every worker suspect, the
    /// backlog's placement starts the clock, a speculative placement leaves it
    /// running.
    #[test]
    fn with_every_worker_suspect_a_speculative_placement_keeps_the_clock() {
        let mut v = view(Box::new(RoundRobin::default()), &[0, 0]);
        v.suspect = vec![0, 1];
        assert!(matches!(v.place(&needs(&[]), false), Placement::Full));
        assert!(v.unusable_since.is_some());
        let avoid = v.workers[0].addr;
        assert!(matches!(
            v.place_avoiding(&needs(&[]), avoid),
            Placement::Refused(_)
        ));
        assert!(v.unusable_since.is_some(), "no worker became usable");
    }
}
