//! Placement on real worker processes: GPU tasks on GPU workers only,
//! locality, suspect workers avoided, and policy selection errors.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use dfut::{Error, WorkerOptions};
use dfut_tests::*;

use crate::util::{LIMIT, WORKER, eventually};

/// The scheduler's status of the cluster, as `dfut status` shows it.
fn status(rt: &dfut::Runtime) -> dfut::scheduler::ClusterStatus {
    rt.block_on(dfut::scheduler::query_status(
        rt.scheduler_addr(),
        rt.credential(),
    ))
    .unwrap()
}

fn pids_by_gpu(rt: &dfut::Runtime, gpu: bool) -> HashSet<u32> {
    status(rt)
        .workers
        .iter()
        .filter(|w| w.info.gpu == gpu)
        .map(|w| w.info.pid)
        .collect()
}

fn mixed_cluster() -> dfut::Runtime {
    dfut::Runtime::builder()
        .worker_program(WORKER)
        .add_worker(WorkerOptions::default().max_concurrent(2))
        .add_worker(WorkerOptions::default().max_concurrent(2).hw_generation(2))
        .add_worker(WorkerOptions::default().max_concurrent(2).gpu(true))
        .start()
        .unwrap()
}

#[test]
fn gpu_tasks_only_ever_run_on_gpu_workers_under_every_policy() {
    if dfut_tests::gpu_or_skip("gpu placement").is_none() {
        return;
    }
    let rt = mixed_cluster();
    let _g = rt.enter();
    let gpu_pids = pids_by_gpu(&rt, true);
    assert_eq!(gpu_pids.len(), 1);
    for name in dfut::scheduler::POLICY_NAMES {
        rt.client()
            .set_policy(dfut::scheduler::policy_by_name(name).unwrap());
        let pids: Vec<_> = (0..40).map(|_| gpu_worker_pid()).collect();
        // CPU tasks keep flowing meanwhile.
        let cpu: Vec<_> = (0..40).map(|_| worker_pid()).collect();
        for f in &pids {
            let pid = f.get_timeout(LIMIT).unwrap();
            assert!(gpu_pids.contains(&pid), "{name}: GPU task ran on {pid}");
        }
        for f in &cpu {
            f.get_timeout(LIMIT).unwrap();
        }
    }
}

#[test]
fn a_gpu_task_without_gpu_workers_has_no_eligible_worker() {
    let rt = crate::util::cluster(2);
    let _g = rt.enter();
    match gpu_worker_pid().get_timeout(LIMIT) {
        Err(Error::NoEligibleWorker(reason)) => {
            assert!(reason.contains("needs a GPU"), "{reason}");
            assert!(reason.contains("gpu_worker_pid"), "{reason}");
        }
        other => panic!("expected NoEligibleWorker, got {other:?}"),
    }
}

#[test]
fn locality_runs_a_task_where_its_large_argument_lives() {
    let rt = crate::util::cluster_with(3, |b| b.policy_name("locality"));
    let _g = rt.enter();
    let mut producers = HashSet::new();
    for _ in 0..12 {
        let big = made_here(4 << 20);
        let (made_by, ran_on) = consumed_where(&big).get_timeout(LIMIT).unwrap();
        assert_eq!(
            made_by, ran_on,
            "the consumer ran where the 4 MiB argument lives"
        );
        producers.insert(made_by);
    }
    assert!(
        producers.len() > 1,
        "producers spread over workers: {producers:?}"
    );
}

#[test]
fn an_unknown_policy_name_is_a_clear_error() {
    let err = dfut::Runtime::builder()
        .in_process_workers(1)
        .policy_name("fastest")
        .start()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown scheduling policy `fastest` (valid: random"),
        "{err}"
    );
}

#[test]
fn a_worker_that_misses_heartbeats_is_suspect_and_not_chosen() {
    let rt = crate::util::cluster_with(2, |b| b.heartbeat_timeout(Duration::from_secs(20)));
    let _g = rt.enter();
    let paused = rt.worker_pids()[0];
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &paused.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {paused}");
    };
    signal("-STOP");
    let suspect = eventually(LIMIT, || {
        status(&rt)
            .workers
            .iter()
            .any(|w| w.info.pid == paused && w.suspect)
    });
    // Give the view with the suspect mark time to reach the driver.
    std::thread::sleep(Duration::from_millis(300));
    let pids: Vec<_> = (0..20).map(|_| worker_pid()).collect();
    let ran: Vec<u32> = pids
        .iter()
        .map(|f| f.get_timeout(LIMIT))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    signal("-CONT");
    assert!(suspect, "the paused worker was never marked suspect");
    assert_eq!(
        ran.len(),
        20,
        "tasks avoided the paused worker and finished"
    );
    assert!(
        ran.iter().all(|p| *p != paused),
        "a task ran on the paused worker"
    );
    // Once it beats again it is chosen again.
    assert!(eventually(LIMIT, || {
        let more: Vec<_> = (0..10).map(|_| worker_pid()).collect();
        more.iter().any(|f| f.get_timeout(LIMIT) == Ok(paused))
    }));
}

/// Two 4-slot workers, round-robin, speculation on; the first (started
/// first) delays each task by up to `delay_ms` (seeded).
fn straggler_and_healthy(delay_ms: u64, seed: u64) -> dfut::Runtime {
    dfut::Runtime::builder()
        .worker_program(WORKER)
        .add_worker(
            WorkerOptions::default()
                .max_concurrent(4)
                .add_delay(delay_ms, seed),
        )
        .add_worker(WorkerOptions::default().max_concurrent(4))
        .policy_name("round-robin")
        .speculation(dfut::Speculation::default())
        .start()
        .unwrap()
}

#[test]
fn a_speculation_loser_that_dependents_read_is_not_freed_under_them() {
    let rt = straggler_and_healthy(3000, 11);
    let _g = rt.enter();
    // Each consumer is sent while its producer still runs, so it reads the
    // producer's first copy, wherever a speculative copy then wins.
    let made: Vec<_> = (0..16).map(|_| made_here(100_000)).collect();
    let used: Vec<_> = made.iter().map(consumed_where).collect();
    let pids = rt.worker_pids();
    for u in &used {
        let (producer, consumer) = u.get_timeout(Duration::from_secs(90)).unwrap();
        assert!(pids.contains(&producer) && pids.contains(&consumer));
    }
    assert!(rt.client().stats().speculated > 0, "no copy was started");
}

#[test]
fn stragglers_are_speculatively_re_executed_and_the_first_result_wins() {
    let rt = straggler_and_healthy(4000, 7);
    let _g = rt.enter();
    // Workers start in the order added: the first one has the delay.
    let (straggler, healthy) = (rt.worker_pids()[0], rt.worker_pids()[1]);
    let tasks: Vec<_> = (0..16).map(|_| slow_pid(20)).collect();
    let pids: Vec<u32> = tasks
        .iter()
        .map(|f| f.get_timeout(LIMIT).unwrap())
        .collect();
    let from_healthy = pids.iter().filter(|p| **p == healthy).count();
    let from_straggler = pids.iter().filter(|p| **p == straggler).count();
    assert_eq!(from_healthy + from_straggler, 16);
    assert!(rt.client().stats().speculated > 0, "no copy was started");
    assert!(
        from_healthy > from_straggler,
        "copies on the healthy worker won: {from_healthy} vs {from_straggler}"
    );
}

#[test]
fn low_priority_work_never_holds_up_normal_work() {
    let rt = crate::util::cluster(1);
    let _g = rt.enter();
    // Four slow background tasks on a two-slot worker: one at a time.
    let background: Vec<_> = dfut::Options::new()
        .priority(dfut::Priority::Low)
        .call(|| (0..4).map(|i| slow_echo(i, 800)).collect());
    assert!(eventually(LIMIT, || background
        .iter()
        .any(|f| f.status() == dfut::Status::Running)));
    // Demand work runs at once, ahead of them all: both slots are free
    // for it (two calls that must run at the same time to return meet),
    // while a background task runs on the worker's background lane.
    for key in 0..3 {
        let pair = [meet(key, 2), meet(key, 2)];
        for m in &pair {
            assert_eq!(m.get_timeout(LIMIT), Ok(true), "two demand calls met");
        }
    }
    let finished = background.iter().filter(|f| f.is_ready()).count();
    assert!(finished <= 1, "{finished} background tasks ran first");
    for (i, f) in background.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
    }
}
