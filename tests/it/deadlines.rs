//! Deadlines, retries on error, per-call options, tasks that crash their
//! worker, and slow calls that must not stall a worker's messages.

use std::time::Duration;

use dfut::{Error, Options, Status};
use dfut_tests::*;

use crate::util::{LIMIT, cluster_with, eventually, tempdir};

#[test]
fn a_sync_task_past_its_deadline_fails_and_gives_its_slot_back() {
    let rt = cluster_with(1, |b| b.max_concurrent(1));
    let _g = rt.enter();
    let pids = rt.worker_pids();
    // Far longer than any bound here: only a lent slot lets the next call run.
    let sleeper = naps(1, 600_000);
    assert_eq!(
        sleeper.get_timeout(LIMIT),
        Err(Error::Timeout(Duration::from_millis(300)))
    );
    assert_eq!(
        echo(5).get_timeout(LIMIT),
        Ok(5),
        "the worker keeps serving"
    );
    assert_eq!(naps(2, 0).get_timeout(LIMIT), Ok(2), "in time is fine");
    assert_eq!(rt.client().workers().len(), 1);
    assert_eq!(
        rt.worker_pids(),
        pids,
        "the same process, not a replacement"
    );
}

#[test]
fn an_async_task_past_its_deadline_is_dropped() {
    let rt = cluster_with(1, |b| b.max_concurrent(1));
    let _g = rt.enter();
    assert_eq!(
        naps_async(1, 600_000).get_timeout(LIMIT),
        Err(Error::Timeout(Duration::from_millis(300)))
    );
    assert_eq!(naps_async(2, 0).get_timeout(LIMIT), Ok(2));
}

#[test]
fn a_task_sees_its_deadline_pass() {
    let rt = cluster_with(1, |b| b.max_concurrent(1));
    let _g = rt.enter();
    let dir = tempdir("watch");
    let marker = dir.join("saw");
    let call = watches_its_deadline(marker.display().to_string());
    assert_eq!(
        call.get_timeout(LIMIT),
        Err(Error::Timeout(Duration::from_millis(200)))
    );
    assert!(eventually(LIMIT, || marker.exists()));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "saw");
}

#[test]
fn per_call_options_override_the_deadline() {
    let rt = cluster_with(1, |b| b.max_concurrent(2));
    let _g = rt.enter();
    // A deadline for a function that has none.
    let short = Options::new()
        .timeout(Duration::from_millis(150))
        .call(|| sometimes_sleeps(1, 600_000));
    assert_eq!(
        short.get_timeout(LIMIT),
        Err(Error::Timeout(Duration::from_millis(150)))
    );
    // No deadline for a function that has one.
    let long = Options::new().timeout(Duration::ZERO).call(|| naps(3, 600));
    assert_eq!(long.get_timeout(LIMIT), Ok(3));
    // Calls outside `call` keep the function's own.
    assert_eq!(
        naps(4, 600_000).get_timeout(LIMIT),
        Err(Error::Timeout(Duration::from_millis(300)))
    );
}

#[test]
fn too_many_abandoned_threads_make_a_worker_unhealthy() {
    let rt = cluster_with(1, |b| b.max_concurrent(1));
    let _g = rt.enter();
    // 17 tasks that outlive their deadline by far: 16 get a lent slot, the
    // 17th finds the worker at its cap.
    for i in 0..17 {
        assert_eq!(
            naps(i, 600_000).get_timeout(LIMIT),
            Err(Error::Timeout(Duration::from_millis(300)))
        );
    }
    let unhealthy = || {
        rt.block_on(dfut::scheduler::query_status(
            rt.scheduler_addr(),
            rt.credential(),
        ))
        .is_ok_and(|s| {
            s.workers
                .iter()
                .any(|w| w.load.unhealthy && w.load.abandoned == 17)
        })
    };
    assert!(
        eventually(LIMIT, unhealthy),
        "the worker reports itself unhealthy"
    );
}

#[test]
fn retry_on_error_reruns_panics_and_errors() {
    let rt = cluster_with(2, |b| b.max_concurrent(1));
    let _g = rt.enter();
    let dir = tempdir("flaky");
    let runs = |name: &str| dir.join(name).display().to_string();
    // Run 1 panics, run 2 returns Err, run 3 succeeds.
    assert_eq!(flaky(runs("a"), 2).get_timeout(LIMIT), Ok(3));
    // A dependent sent while its argument was failing gets the retried value.
    let chained = inc(flaky(runs("d"), 2));
    assert_eq!(chained.get_timeout(LIMIT), Ok(4));
    // Retries used up (1 run + 3 retries): the last error is reported.
    assert!(matches!(
        flaky(runs("b"), 10).get_timeout(LIMIT),
        Err(Error::TaskFailed { message, attempt: 4, .. }) if message == "run 4 fails"
    ));
    // Retrying on error switched off for one call.
    let once = Options::new()
        .retry_on_error(false)
        .call(|| flaky(runs("c"), 1));
    assert!(matches!(
        once.get_timeout(LIMIT),
        Err(Error::TaskPanicked { message, attempt: 1, .. })
            if message == "run 1 panics"
    ));
    assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "1");
}

#[test]
fn a_task_that_kills_its_workers_is_given_up() {
    // Two workers, three deaths: the local cluster replaces each dead one.
    let rt = cluster_with(2, |b| b.max_concurrent(1));
    let _g = rt.enter();
    let first = rt.worker_pids();
    let e = aborts_its_worker().get_timeout(Duration::from_secs(120));
    assert!(
        matches!(&e, Err(Error::CrashLoop { deaths: 3, .. })),
        "got {e:?}"
    );
    assert!(
        eventually(LIMIT, || rt.client().workers().len() == 2),
        "the dead workers were replaced"
    );
    let now = rt.worker_pids();
    assert!(
        first.iter().filter(|p| now.contains(p)).count() <= 1,
        "new processes: {first:?} then {now:?}"
    );
    assert_eq!(echo(9).get_timeout(LIMIT), Ok(9), "the cluster still works");
}

#[test]
fn a_usually_quick_task_that_sleeps_does_not_stall_its_connection() {
    let rt = cluster_with(1, |b| b.max_concurrent(2));
    let _g = rt.enter();
    let pids = rt.worker_pids();
    // Warm up: the function runs inline on the worker's reader.
    let warm: Vec<_> = (0..300).map(|i| sometimes_sleeps(i, 0)).collect();
    for (i, f) in warm.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
    }
    // One call sleeps (a plain blocking sleep) far longer than any bound here.
    let stuck = sometimes_sleeps(7, 600_000);
    // Messages sent after it on the same connection are read and answered
    // while it sleeps.
    let after: Vec<_> = (0..300).map(echo).collect();
    for (i, f) in after.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
    }
    assert_ne!(stuck.status(), Status::Finished);
    // Past the heartbeat timeout (1.5 s here) the worker is still a member.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rt.client().workers().len(), 1, "the worker stays a member");
    assert_eq!(
        rt.worker_pids(),
        pids,
        "the same process, not a replacement"
    );
    assert_eq!(sometimes_sleeps(8, 0).get_timeout(LIMIT), Ok(8));
    stuck.cancel();
}
