//! The scheduler restarts mid-job, and every worker is suspect for a
//! moment: membership heals and no task fails because of either.

use std::net::SocketAddr;
use std::time::Duration;

use dfut::{ClusterCredential, Status};
use dfut_tests::*;

use crate::util::{LIMIT, Processes, cluster, eventually, free_port, signal, start_scheduler};

fn workers_seen(addr: SocketAddr, credential: &ClusterCredential) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(dfut::scheduler::query_status(addr, credential))
        .map(|s| s.workers.len())
        .unwrap_or(0)
}

#[test]
fn a_restarted_scheduler_rebuilds_membership_and_no_task_fails() {
    let dir = crate::util::tempdir("restart");
    let pem = dir.join("cluster.pem");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut procs = Processes::default();
    let first = start_scheduler(&mut procs, port, &pem);
    assert!(
        eventually(LIMIT, || pem.is_file()),
        "the scheduler wrote a credential"
    );
    let credential = ClusterCredential::from_file(&pem).unwrap();
    for _ in 0..2 {
        procs.start(&mut crate::util::worker_command(addr, &pem));
    }
    assert!(eventually(LIMIT, || workers_seen(addr, &credential) == 2));
    let rt = dfut::Runtime::builder()
        .join(addr)
        .credential(credential.clone())
        .start()
        .unwrap();
    let _g = rt.enter();
    assert!(eventually(LIMIT, || rt.client().workers().len() == 2));
    // A job that outlasts the restart: 400 tasks of 20 ms on 4 slots.
    let job: Vec<_> = (0..400).map(|i| slow_echo(i, 20)).collect();
    assert!(eventually(LIMIT, || job
        .iter()
        .any(|f| f.status() == Status::Finished)));
    procs.kill(first);
    // The old scheduler's port is free again once it is reaped.
    let restarted = start_scheduler(&mut procs, port, &pem);
    for (i, f) in job.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64), "task {i}");
    }
    assert!(
        eventually(LIMIT, || workers_seen(addr, &credential) == 2),
        "both workers registered with the new scheduler"
    );
    // The driver that lived through it still places work on both.
    assert!(eventually(LIMIT, || rt.client().workers().len() == 2));
    assert_eq!(echo(7).get_timeout(LIMIT), Ok(7));
    drop(_g);
    drop(rt);
    // A new driver joins the restarted scheduler.
    let late = dfut::Runtime::builder()
        .join(addr)
        .credential(credential)
        .start()
        .unwrap();
    let _g = late.enter();
    assert_eq!(echo(8).get_timeout(LIMIT), Ok(8));
    drop(_g);
    drop(late);
    procs.kill(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_task_placed_while_every_worker_is_suspect_waits_for_one() {
    let rt = cluster(2);
    let _g = rt.enter();
    let pids = rt.worker_pids();
    let all_suspect = || {
        rt.block_on(dfut::scheduler::query_status(
            rt.scheduler_addr(),
            rt.credential(),
        ))
        .is_ok_and(|s| s.workers.iter().all(|w| w.suspect))
    };
    for pid in &pids {
        signal(*pid, "-STOP");
    }
    // Every worker suspect (or dropped): placement waits instead of failing.
    let stalled = eventually(LIMIT, all_suspect);
    let task = echo(5);
    std::thread::sleep(Duration::from_millis(200));
    let failed_at_once = task.status() == Status::Failed;
    for pid in &pids {
        signal(*pid, "-CONT");
    }
    assert!(stalled, "the paused workers became suspect");
    assert!(!failed_at_once, "the task did not fail at once");
    assert_eq!(task.get_timeout(LIMIT), Ok(5));
}
