//! What losing a worker means for one of the owner's objects: the pure
//! core of `Client::worker_lost`, where worker deaths, retries, lineage,
//! speculation and crash loops meet.
//!
//! [`on_worker_lost`] takes the object's state and the lost worker and
//! returns what to do (no I/O, no clock, no locks); the caller settles,
//! re-dispatches and frees. It is tested below with randomized sequences
//! of dispatches, starts, speculative copies, completions and losses
//! against the invariants the rest of the owner relies on.

use std::net::SocketAddr;

use super::CRASH_LIMIT;
use crate::object::{CellState, Phase};

/// What the loss of a worker means for one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// It had nothing there.
    Untouched,
    /// It lost a copy there, but another lives on (the owner's inline
    /// value, or a speculative copy that now runs alone).
    Kept,
    /// Its only copy was there: queued to run again (a retry was used,
    /// unless it was never sent to a worker never reached).
    Rerun,
    /// Its only copy was there and no retry is left: fail with
    /// `WorkerLost`.
    Fail,
    /// Workers died this many times while it ran on them: fail with
    /// `CrashLoop` rather than kill another.
    CrashLoop(u32),
}

/// Applies the loss of the worker at `addr` to `st`. Returns what the
/// caller must do, and whether the object may have left a copy there (to
/// free should that worker come back). Afterwards no field of `st` names
/// `addr`, except the phase of an object to fail (`Fail`, `CrashLoop`),
/// which the caller settles; a `Rerun` leaves the phase `Queued`; calling
/// it again for the same worker changes nothing else. `reached`: whether
/// the owner ever connected to it (a task sent to a worker never reached
/// never ran there, and is placed again without spending a retry).
pub(crate) fn on_worker_lost(st: &mut CellState, addr: SocketAddr, reached: bool) -> (Loss, bool) {
    let held_there = match &st.phase {
        Phase::Pending(h) | Phase::Running(h) => *h == addr,
        Phase::Finished { holder, .. } => *holder == Some(addr),
        Phase::Queued | Phase::Failed(_) => false,
    };
    let failed_there = st.failed_at.contains(&addr);
    st.failed_at.retain(|a| *a != addr);
    let left_copy = held_there || failed_there || st.loser == Some(addr) || st.backup == Some(addr);
    if st.backup == Some(addr) {
        st.backup = None;
    }
    if st.loser == Some(addr) {
        st.loser = None;
    }
    if st.blocked == Some(addr) {
        st.blocked = None;
    }
    if !held_there {
        return (
            if left_copy {
                Loss::Kept
            } else {
                Loss::Untouched
            },
            left_copy,
        );
    }
    let first_loss = st.task.as_ref().is_some_and(|t| t.lost_runs == 0);
    if !reached && matches!(st.phase, Phase::Pending(_)) && st.backup.is_none() && first_loss {
        // Never sent to a worker that was never reached: it never ran, so
        // it is placed again, once, no retry spent (an unreachable worker
        // costs its tasks a connection timeout, not a failure; a second
        // time, it spends a retry as any loss does).
        if let Some(t) = st.task.as_mut() {
            t.lost_runs += 1;
        }
        st.phase = Phase::Queued;
        return (Loss::Rerun, false);
    }
    let lost_only_copy = match &mut st.phase {
        Phase::Pending(_) | Phase::Running(_) => {
            let running = matches!(st.phase, Phase::Running(_));
            if let Some(t) = st.task.as_mut() {
                t.lost_runs += 1;
                t.crashes += u32::from(running);
            }
            match st.backup.take() {
                // A speculative copy carries on alone.
                Some(b) => {
                    st.phase = Phase::Running(b);
                    false
                }
                None => true,
            }
        }
        Phase::Finished { holder, inline } => {
            if inline.is_some() {
                // The owner has the value itself.
                *holder = None;
                false
            } else {
                true
            }
        }
        Phase::Queued | Phase::Failed(_) => false,
    };
    if !lost_only_copy {
        return (Loss::Kept, left_copy);
    }
    let crashes = st.task.as_ref().map_or(0, |t| t.crashes);
    let loss = if crashes >= CRASH_LIMIT {
        Loss::CrashLoop(crashes)
    } else if super::take_retry(st) {
        st.phase = Phase::Queued;
        Loss::Rerun
    } else {
        Loss::Fail
    };
    (loss, left_copy)
}

#[cfg(test)]
mod tests {

    /// A loss of a worker that was reached (a connection was made).
    fn on_worker_lost_at(st: &mut CellState, addr: SocketAddr) -> (Loss, bool) {
        on_worker_lost(st, addr, true)
    }

    use dfut_net::wire::ObjectId;

    use super::*;
    use crate::TestRng as Rng;
    use crate::client::FnSpec;
    use crate::object::{ObjectCell, TaskRecord};

    static SPEC: FnSpec = FnSpec {
        name: "t::f",
        signature: crate::__private::unchecked,
        retries: 0,
        cpus: 1,
        gpu: false,
        gpus: 0,
        memory_mb: 0,
        resources: &[],
        cost: None,
        timeout_ms: 0,
        retry_on_error: false,
    };

    fn addr(i: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16))
    }

    fn cell(retries: u32) -> ObjectCell {
        let record = TaskRecord {
            spec: &SPEC,
            args: Vec::new(),
            retries_left: retries,
            timeout_ms: 0,
            retry_on_error: false,
            resources: Default::default(),
            strategy: Default::default(),
            lost_runs: 0,
            attempts: std::sync::atomic::AtomicU32::new(0),
            crashes: 0,
            charge: None,
        };
        ObjectCell::new(
            ObjectId { owner: 1, seq: 1 },
            "t::f",
            Phase::Queued,
            Some(record),
        )
    }

    fn names(st: &CellState, a: SocketAddr) -> bool {
        let in_phase = match &st.phase {
            Phase::Pending(h) | Phase::Running(h) => *h == a,
            Phase::Finished { holder, .. } => *holder == Some(a),
            _ => false,
        };
        in_phase
            || st.backup == Some(a)
            || st.loser == Some(a)
            || st.blocked == Some(a)
            || st.failed_at.contains(&a)
    }

    #[test]
    fn a_running_task_is_rerun_until_it_crashes_three_workers() {
        let c = cell(10);
        let mut st = c.lock();
        for (i, want) in [Loss::Rerun, Loss::Rerun, Loss::CrashLoop(3)]
            .into_iter()
            .enumerate()
        {
            st.phase = Phase::Running(addr(i as u64));
            assert_eq!(on_worker_lost_at(&mut st, addr(i as u64)), (want, true));
        }
    }

    #[test]
    fn a_task_only_sent_never_counts_as_a_crash() {
        let c = cell(10);
        let mut st = c.lock();
        for i in 0..10 {
            st.phase = Phase::Pending(addr(i));
            assert_eq!(on_worker_lost_at(&mut st, addr(i)), (Loss::Rerun, true));
        }
        st.phase = Phase::Pending(addr(11));
        assert_eq!(on_worker_lost_at(&mut st, addr(11)), (Loss::Fail, true));
    }

    /// Random sequences of what happens to an object (dispatch, start,
    /// speculative copy, completion, dependents reading it, losses) keep
    /// the invariants, checked against a model of retries and crashes.
    #[test]
    fn random_histories_keep_the_invariants() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let retries = rng.below(4) as u32;
            let c = cell(retries);
            let mut st = c.lock();
            // The model: retries left, crashes seen, whether it settled.
            let (mut left, mut crashes, mut settled) = (retries, 0u32, false);
            for _ in 0..30 {
                if settled {
                    break;
                }
                let w = addr(rng.below(4));
                match rng.below(7) {
                    0 if matches!(st.phase, Phase::Queued) => st.phase = Phase::Pending(w),
                    1 => {
                        if let Phase::Pending(h) = st.phase {
                            st.phase = Phase::Running(h);
                        }
                    }
                    2 if st.backup.is_none() && matches!(st.phase, Phase::Running(h) if h != w) => {
                        st.backup = Some(w);
                    }
                    3 => {
                        if let Phase::Pending(h) | Phase::Running(h) = st.phase {
                            let inline = (rng.below(2) == 0).then(|| crate::blob::blob(vec![1u8]));
                            st.phase = Phase::Finished {
                                holder: Some(h),
                                inline,
                            };
                            st.backup = None;
                        }
                    }
                    4 if matches!(st.phase, Phase::Running(_)) => st.read_while_running = true,
                    _ => {
                        let running_there = matches!(st.phase, Phase::Running(h) if h == w);
                        let only_copy = match &st.phase {
                            Phase::Pending(h) | Phase::Running(h) => *h == w && st.backup.is_none(),
                            Phase::Finished { holder, inline } => {
                                *holder == Some(w) && inline.is_none()
                            }
                            _ => false,
                        };
                        let before_left = st.task.as_ref().map_or(0, |t| t.retries_left);
                        let (loss, _) = on_worker_lost_at(&mut st, w);
                        let to_settle = matches!(loss, Loss::Fail | Loss::CrashLoop(_));
                        if to_settle {
                            // What the caller does: settle it.
                            st.phase = Phase::Failed(crate::Error::NoRuntime);
                        }
                        assert!(!names(&st, w), "{loss:?}: the lost worker is forgotten");
                        assert_eq!(
                            on_worker_lost_at(&mut st, w),
                            (Loss::Untouched, false),
                            "a second report of the same loss changes nothing"
                        );
                        crashes += u32::from(running_there);
                        match loss {
                            Loss::Rerun => {
                                assert!(only_copy && left > 0 && crashes < CRASH_LIMIT);
                                left -= 1;
                                assert_eq!(st.task.as_ref().map(|t| t.retries_left), Some(left));
                                assert!(matches!(st.phase, Phase::Queued));
                            }
                            Loss::Fail => {
                                assert!(only_copy && before_left == 0);
                                settled = true;
                            }
                            Loss::CrashLoop(n) => {
                                assert!(only_copy && n >= CRASH_LIMIT && n == crashes);
                                settled = true;
                            }
                            Loss::Kept | Loss::Untouched => assert!(!only_copy),
                        }
                        assert_eq!(st.task.as_ref().map(|t| t.crashes), Some(crashes));
                    }
                }
            }
        }
    }

    #[test]
    fn a_task_sent_to_a_worker_never_reached_is_placed_again_for_free() {
        let c = cell(0);
        let mut st = c.lock();
        st.phase = Phase::Pending(addr(1));
        assert_eq!(
            on_worker_lost(&mut st, addr(1), false),
            (Loss::Rerun, false)
        );
        assert!(matches!(st.phase, Phase::Queued));
        assert_eq!(st.task.as_ref().map(|t| t.retries_left), Some(0));
        // Only once: unreached again, it is a loss like any other (and,
        // with no retry left, it fails).
        st.phase = Phase::Pending(addr(2));
        assert_eq!(on_worker_lost(&mut st, addr(2), false), (Loss::Fail, true));
    }
}
