//! Nested calls at any depth, async parents, cancellation, detaching and
//! the runtime's lifecycle: nothing here may deadlock or hang, and every
//! wait is bounded.

use std::time::Duration;

use dfut::{Error, Status};
use dfut_tests::*;

use crate::util::{LIMIT, cluster_with, eventually, tempdir};

/// A bound for the big recursive cases, which run thousands of tasks in a
/// debug build.
const LONG: Duration = Duration::from_secs(180);

fn single_slot_workers(n: usize) -> dfut::Runtime {
    cluster_with(n, |b| b.max_concurrent(1))
}

#[test]
fn recursive_fibonacci_on_two_single_slot_workers() {
    let rt = single_slot_workers(2);
    let _g = rt.enter();
    assert_eq!(fib(6).get_timeout(LIMIT), Ok(8));
    // 21,891 tasks, each waiting on two nested calls.
    assert_eq!(fib(20).get_timeout(LONG), Ok(6765));
}

#[test]
fn a_thousand_deep_chain_of_nested_calls() {
    let rt = single_slot_workers(2);
    let _g = rt.enter();
    assert_eq!(deep(1000).get_timeout(LONG), Ok(1000));
}

#[test]
fn wide_fan_out_of_waiting_parents() {
    let rt = single_slot_workers(2);
    let _g = rt.enter();
    // 40 parents, each waiting on 25 children that each wait on a grandchild.
    let parents: Vec<_> = (0..40).map(|_| wide_parent(25)).collect();
    for p in &parents {
        assert_eq!(p.get_timeout(LONG), Ok((1..=25).sum()));
    }
}

#[test]
fn two_hundred_async_parents_awaiting_children() {
    let rt = single_slot_workers(2);
    let _g = rt.enter();
    let parents: Vec<_> = (0..200).map(|_| async_parent(5)).collect();
    for p in &parents {
        assert_eq!(p.get_timeout(LONG), Ok(15));
    }
}

#[test]
fn an_inline_task_that_blocks_does_not_stall_its_connection() {
    let rt = cluster_with(1, |b| b.max_concurrent(2));
    let _g = rt.enter();
    let pids = rt.worker_pids();
    // Warm up: a quick function runs inline on the worker's reader.
    let warm: Vec<_> = (0..300).map(|i| mostly_quick(i, 0)).collect();
    for (i, f) in warm.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
    }
    // Then one call blocks in a nested wait for longer than any bound here.
    let stuck = mostly_quick(7, 120_000);
    assert!(eventually(LIMIT, || stuck.status() == Status::Running));
    // Messages on the same connection are still read and answered.
    let after: Vec<_> = (0..300).map(echo).collect();
    for (i, f) in after.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
    }
    assert_eq!(rt.client().workers().len(), 1, "the worker stays a member");
    assert_eq!(
        rt.worker_pids(),
        pids,
        "the same process, not a replacement"
    );
    stuck.cancel();
}

#[test]
fn dropping_every_handle_detaches_a_call_and_frees_its_result() {
    let rt = cluster_with(1, |b| b.max_concurrent(1));
    let _g = rt.enter();
    let dir = tempdir("detach");
    let marker = dir.join("done");
    // Queued behind a busy slot, then every handle dropped.
    let busy = slow_echo(1, 300);
    drop(touch_after(marker.display().to_string(), 0));
    assert_eq!(busy.get_timeout(LIMIT), Ok(1));
    drop(busy);
    assert!(
        eventually(LIMIT, || marker.exists()),
        "the detached call ran"
    );
    let objects = || {
        let status = rt.block_on(dfut::scheduler::query_status(
            rt.scheduler_addr(),
            rt.credential(),
        ));
        status.map(|s| s.workers.iter().map(|w| w.load.objects).sum::<u64>())
    };
    assert!(
        eventually(LIMIT, || objects() == Ok(0)),
        "its result was freed: {:?}",
        objects()
    );
}

#[test]
fn a_cancelled_queued_call_never_runs() {
    let rt = cluster_with(1, |b| b.max_concurrent(1));
    let _g = rt.enter();
    let dir = tempdir("cancel-queued");
    let marker = dir.join("ran");
    let busy = slow_echo(1, 500);
    let victim = touch_after(marker.display().to_string(), 0);
    victim.cancel();
    assert!(matches!(
        victim.get_timeout(LIMIT),
        Err(Error::Cancelled { function }) if function == "dfut_tests::touch_after"
    ));
    assert_eq!(busy.get_timeout(LIMIT), Ok(1));
    // One slot, first come first served: had the victim run, it would have
    // run before this.
    assert_eq!(echo(3).get_timeout(LIMIT), Ok(3));
    assert!(!marker.exists(), "the cancelled call ran");
}

#[test]
fn a_running_sync_call_sees_its_cancellation() {
    let rt = cluster_with(1, |b| b.max_concurrent(1));
    let _g = rt.enter();
    let dir = tempdir("cancel-running");
    let marker = dir.join("seen");
    let f = until_cancelled(marker.display().to_string(), 60_000);
    assert!(eventually(LIMIT, || f.status() == Status::Running));
    f.cancel();
    assert!(matches!(f.get_timeout(LIMIT), Err(Error::Cancelled { .. })));
    assert!(eventually(LIMIT, || {
        std::fs::read(&marker).is_ok_and(|b| b == b"cancelled")
    }));
    // The slot is free again.
    assert_eq!(echo(4).get_timeout(LIMIT), Ok(4));
}

#[test]
fn handles_that_outlive_their_runtime_fail_at_once() {
    let rt = cluster_with(1, |b| b.max_concurrent(2));
    let _g = rt.enter();
    let pending = slow_echo(1, 60_000);
    let stored = bytes(1 << 20, 1); // large: stays on the worker
    assert!(eventually(LIMIT, || stored.is_ready()));
    drop(_g);
    drop(rt);
    assert_eq!(pending.get_timeout(LIMIT), Err(Error::NoRuntime));
    let got = stored.get_timeout(LIMIT).map(|v| v.len());
    assert!(matches!(got, Err(Error::NoRuntime)), "got {got:?}");
    let late = dfut::Runtime::builder()
        .in_process_workers(1)
        .start()
        .unwrap();
    drop(late);
}

#[test]
fn block_on_inside_async_code_works() {
    let rt = cluster_with(1, |b| b);
    let outer = tokio::runtime::Runtime::new().unwrap();
    let got = outer.block_on(async { rt.block_on(echo(9)) });
    assert_eq!(got, Ok(9));
}

#[test]
fn init_is_idempotent_and_works_from_async_code() {
    for mode in ["--init-twice", "--init-async"] {
        let out = std::process::Command::new(crate::util::WORKER)
            .arg(mode)
            .env("DFUT_WORKERS", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("ok"), "{mode}: {stdout}");
    }
}
