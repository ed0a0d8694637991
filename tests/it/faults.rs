//! Workers dying: no hang, no wrong result, retries where asked.

use std::time::{Duration, Instant};

use dfut::Error;
use dfut_tests::*;

use crate::util::{LIMIT, cluster, cluster_with, eventually, worker_ids};

#[test]
fn a_killed_worker_fails_its_tasks_quickly_and_never_wrongly() {
    let rt = cluster(3);
    let _g = rt.enter();
    // Stored results (too large to come back inline) on every worker.
    let stored: Vec<_> = (0..6).map(|i| bytes(200_000, i)).collect();
    for f in &stored {
        assert!(f.get_timeout(LIMIT).is_ok());
    }
    let running: Vec<_> = (0..30).map(|i| slow_echo(i, 1000)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let members = worker_ids(&rt);
    let killed = rt.worker_pids()[0];
    let start = Instant::now();
    rt.kill_worker(0).unwrap();
    let mut lost = 0;
    for (i, f) in running.iter().enumerate() {
        match f.get_timeout(LIMIT) {
            Ok(v) => assert_eq!(v, i as u64),
            Err(Error::WorkerLost { .. }) => lost += 1,
            Err(e) => panic!("task {i}: unexpected error {e}"),
        }
    }
    assert!(lost > 0, "the killed worker had tasks");
    assert!(lost < 30, "the other workers finished theirs");
    let mut stored_lost = 0;
    for (i, f) in stored.iter().enumerate() {
        match f.get_timeout(LIMIT) {
            Ok(v) => assert!(v.len() == 200_000 && v.iter().all(|b| *b == i as u8)),
            Err(Error::WorkerLost { .. }) => stored_lost += 1,
            Err(e) => panic!("stored {i}: unexpected error {e}"),
        }
    }
    assert!(
        stored_lost > 0,
        "results held by the killed worker are reported lost"
    );
    assert!(start.elapsed() < LIMIT);
    // The survivors keep serving.
    assert_eq!(echo(5).get_timeout(LIMIT), Ok(5));
    // A new process takes the dead one's place, and serves too.
    assert!(
        eventually(LIMIT, || {
            let now = worker_ids(&rt);
            now.len() == 3 && members.iter().any(|id| !now.contains(id))
        }),
        "no replacement joined"
    );
    assert!(!rt.worker_pids().contains(&killed));
    let new = rt.worker_pids()[0];
    let runs_on_new = || {
        let on: Vec<_> = (0..40).map(|_| worker_pid()).collect();
        on.iter().any(|f| f.get_timeout(LIMIT) == Ok(new))
    };
    assert!(
        eventually(LIMIT, runs_on_new),
        "the replacement {new} runs tasks"
    );
}

#[test]
fn a_cluster_told_not_to_replace_workers_shrinks() {
    let rt = cluster_with(2, |b| b.replace_dead_workers(false));
    let _g = rt.enter();
    let killed = rt.worker_pids()[0];
    rt.kill_worker(0).unwrap();
    assert!(eventually(LIMIT, || rt.client().workers().len() == 1));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rt.client().workers().len(), 1, "nothing replaced it");
    assert_eq!(rt.worker_pids().len(), 1);
    assert!(
        !rt.worker_pids().contains(&killed),
        "the dead one is not listed"
    );
    assert_eq!(echo(5).get_timeout(LIMIT), Ok(5));
}

#[test]
fn tasks_with_retries_survive_a_killed_worker() {
    let rt = cluster(3);
    let _g = rt.enter();
    let tasks: Vec<_> = (0..30).map(|i| slow_echo_retried(i, 600)).collect();
    std::thread::sleep(Duration::from_millis(300));
    rt.kill_worker(1).unwrap();
    for (i, f) in tasks.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64), "task {i}");
    }
    // A dependent of a retried task also gets the right value.
    let chained = inc(slow_echo_retried(41, 10));
    assert_eq!(chained.get_timeout(LIMIT), Ok(42));
}

#[test]
fn a_worker_paused_past_its_heartbeat_timeout_rejoins() {
    let rt = cluster(2);
    let _g = rt.enter();
    let pid = rt.worker_pids()[0];
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let dropped = crate::util::eventually(LIMIT, || rt.client().workers().len() == 1);
    signal("-CONT");
    assert!(dropped, "the paused worker was dropped");
    assert!(
        crate::util::eventually(LIMIT, || rt.client().workers().len() == 2),
        "the worker came back"
    );
    // It takes tasks again.
    let ran_on = || {
        (0..40)
            .map(|_| worker_pid())
            .collect::<Vec<_>>()
            .iter()
            .map(|f| f.get_timeout(LIMIT).unwrap())
            .collect::<Vec<u32>>()
    };
    assert!(crate::util::eventually(LIMIT, || ran_on().contains(&pid)));
    // `dfut status` (the scheduler's view) lists it too.
    let status = rt
        .block_on(dfut::scheduler::query_status(
            rt.scheduler_addr(),
            rt.credential(),
        ))
        .unwrap();
    assert!(status.workers.iter().any(|w| w.info.pid == pid));
}
