//! Submitting tasks: independent, chained, nested, async, failing.

use std::collections::HashSet;

use dfut::{Error, Status};
use dfut_tests::*;

use crate::util::{LIMIT, cluster, cluster_with};

#[test]
fn a_thousand_independent_tasks_on_three_workers() {
    let rt = cluster(3);
    let _g = rt.enter();
    let futures: Vec<_> = (0..1000).map(echo).collect();
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
        assert_eq!(f.status(), Status::Finished);
    }
    // Rounds of 60 quick tasks until every worker has run one (a round on
    // a loaded machine can finish on two before the third gets any).
    let mut pids = HashSet::new();
    let spread = crate::util::eventually(LIMIT, || {
        let round: Vec<_> = (0..60).map(|_| worker_pid()).collect();
        pids.extend(round.iter().map(|f| f.get_timeout(LIMIT).unwrap()));
        pids.len() == 3
    });
    assert!(spread, "work spreads over every worker: {pids:?}");
    assert_eq!(pids, rt.worker_pids().into_iter().collect::<HashSet<u32>>());
}

#[test]
fn a_thousand_long_dependency_chain() {
    let rt = cluster(3);
    let _g = rt.enter();
    let mut x = inc(0);
    for _ in 1..1000 {
        x = inc(x);
    }
    assert_eq!(x.get_timeout(LIMIT), Ok(1000));
}

#[test]
fn futures_combine_as_arguments() {
    let rt = cluster(3);
    let _g = rt.enter();
    let a = echo(20);
    let b = inc(&a);
    let c = add(&a, b);
    assert_eq!(c.get_timeout(LIMIT), Ok(41));
    // Large values move between workers, not through the driver.
    let before = rt.client().stats().fetched_bytes;
    let big = bytes(1 << 20, 3);
    let sums: Vec<_> = (0..6).map(|_| sum_bytes(&big)).collect();
    for s in &sums {
        assert_eq!(s.get_timeout(LIMIT), Ok(3 << 20));
    }
    assert_eq!(
        rt.client().stats().fetched_bytes,
        before,
        "the driver fetched nothing"
    );
    assert_eq!(big.get_timeout(LIMIT).map(|v| v.len()), Ok(1 << 20));
    // Fetched here, over the network or mapped from this host's memory.
    let stats = rt.client().stats();
    assert!(stats.fetched_bytes + stats.shared_bytes >= before + (1 << 20));
}

#[test]
fn nested_calls_and_async_functions() {
    let rt = cluster(3);
    let _g = rt.enter();
    assert_eq!(nested_sum(50).get_timeout(LIMIT), Ok((1..=50).sum()));
    // Deeper than all slots together (3 workers x 2): waiting gives slots back.
    assert_eq!(deep(10).get_timeout(LIMIT), Ok(10));
    assert_eq!(async_double(21).get_timeout(LIMIT), Ok(42));
    let awaited = rt.block_on(async { async_double(echo(5)).await });
    assert_eq!(awaited, Ok(10));
}

#[test]
fn a_panicking_task_reports_its_message_and_the_worker_keeps_serving() {
    let rt = cluster(3);
    let _g = rt.enter();
    let workers: Vec<String> = rt
        .client()
        .workers()
        .iter()
        .map(|w| w.addr.to_string())
        .collect();
    let boom: Vec<_> = (0..6).map(|i| explode(format!("boom {i}"))).collect();
    for (i, f) in boom.iter().enumerate() {
        match f.get_timeout(LIMIT) {
            Err(e @ Error::TaskPanicked { .. }) => {
                let shown = e.to_string();
                let Error::TaskPanicked {
                    function,
                    message,
                    worker,
                    location,
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(function, "dfut_tests::explode");
                assert_eq!(message, format!("boom {i}"));
                assert!(workers.contains(&worker), "{worker} among {workers:?}");
                // `explode`'s `panic!` in tests/src/lib.rs.
                assert!(location.starts_with("tests/src/lib.rs:"), "{location}");
                assert!(
                    shown.contains(&worker) && shown.contains(&location),
                    "{shown}"
                );
            }
            other => panic!("expected a panic error, got {other:?}"),
        }
        assert_eq!(f.status(), Status::Failed);
    }
    // An async task's panic says where too.
    match panics_async("late").get_timeout(LIMIT) {
        Err(Error::TaskPanicked { location, .. }) => {
            assert!(location.starts_with("tests/src/lib.rs:"), "{location}");
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    let after: Vec<_> = (0..30).map(echo).collect();
    for (i, f) in after.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
    }
    // A task depending on a failed one fails with the same error.
    let dependent = inc(explode("first".to_string()));
    assert!(
        matches!(dependent.get_timeout(LIMIT), Err(Error::TaskPanicked { message, .. }) if message == "first")
    );
}

#[test]
fn a_returned_error_is_a_task_failure() {
    let rt = cluster(3);
    let _g = rt.enter();
    assert_eq!(even_only(4).get_timeout(LIMIT), Ok(4));
    match even_only(5).get_timeout(LIMIT) {
        Err(Error::TaskFailed {
            function,
            message,
            worker,
            ..
        }) => {
            assert_eq!(function, "dfut_tests::even_only");
            assert_eq!(message, "5 is odd");
            assert!(
                rt.client()
                    .workers()
                    .iter()
                    .any(|w| w.addr.to_string() == worker),
                "{worker}"
            );
        }
        other => panic!("expected a task failure, got {other:?}"),
    }
}

#[test]
fn a_returned_error_keeps_its_sources_and_says_which_attempt_failed() {
    use std::error::Error as _;
    let rt = cluster(1);
    let _g = rt.enter();
    assert_eq!(parse_setting("42").get_timeout(LIMIT), Ok(42));
    let e = parse_setting("4x2").get_timeout(LIMIT).unwrap_err();
    assert!(
        matches!(&e, Error::TaskFailed { message, attempt: 1, .. }
            if message == "setting \"4x2\" is not a number"),
        "{e:?}"
    );
    // The ParseIntError's text, one level down, as it was on the worker.
    let below = e.source().map(|s| s.to_string());
    assert_eq!(below.as_deref(), Some("invalid digit found in string"));
    assert!(e.to_string().contains("(attempt 1)"), "{e}");
    // An error type that is only Display has no sources.
    let plain = even_only(5).get_timeout(LIMIT).unwrap_err();
    assert!(plain.source().is_none(), "{plain:?}");
    // A burst larger than the worker takes at once waits at the owner
    // (placement says full, again and again): each still ran once.
    let burst: Vec<_> = (0..400).map(|i| even_only(2 * i + 1)).collect();
    for f in &burst {
        let e = f.get_timeout(LIMIT).unwrap_err();
        assert!(matches!(e, Error::TaskFailed { attempt: 1, .. }), "{e:?}");
    }
}

#[test]
fn a_panic_carries_its_backtrace_when_the_worker_captures_them() {
    let rt = cluster_with(1, |b| b.worker_env("RUST_BACKTRACE", "1"));
    let _g = rt.enter();
    match explode("traced".to_string()).get_timeout(LIMIT) {
        Err(Error::TaskPanicked {
            backtrace: Some(trace),
            ..
        }) => {
            assert!(trace.contains("explode"), "{trace}");
        }
        other => panic!("expected a panic with a backtrace, got {other:?}"),
    }
}

/// Defined in the test binary only: the workers do not have it.
#[dfut::remote]
fn only_in_the_driver(x: u64) -> u64 {
    x
}

#[test]
fn an_unknown_function_is_an_error_not_a_hang() {
    let rt = cluster(3);
    let _g = rt.enter();
    let f = only_in_the_driver(1);
    assert_eq!(
        f.get_timeout(LIMIT),
        Err(Error::UnknownFunction {
            name: "it::tasks::only_in_the_driver".into()
        })
    );
    assert_eq!(
        only_in_the_driver_local(3),
        3,
        "the plain function still runs locally"
    );
}

#[test]
fn same_names_in_different_modules_do_not_collide() {
    let rt = cluster(3);
    let _g = rt.enter();
    assert_eq!(first::which().get_timeout(LIMIT), Ok(1));
    assert_eq!(second::which().get_timeout(LIMIT), Ok(2));
    let names = dfut::registered_functions();
    assert!(names.contains(&"dfut_tests::first::which"));
    assert!(names.contains(&"dfut_tests::second::which"));
}

#[test]
fn timeouts_and_status_while_running() {
    let rt = cluster(3);
    let _g = rt.enter();
    let f = slow_echo(7, 1500);
    assert!(matches!(
        f.get_timeout(std::time::Duration::from_millis(50)),
        Err(Error::Timeout(_))
    ));
    assert!(!f.is_ready());
    assert!(crate::util::eventually(LIMIT, || f.status() == Status::Running));
    assert_eq!(f.get_timeout(LIMIT), Ok(7));
    assert!(f.is_ready());
}

#[test]
fn a_blocking_get_in_a_current_thread_runtime_says_to_await_instead() {
    let rt = crate::util::cluster(1);
    let f = dfut_tests::slow_pid(1);
    let _g = rt.enter();
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = single.block_on(async { f.get() }).unwrap_err();
    assert!(err.to_string().contains("use .await instead"), "{err}");
    // The same handle awaited there is fine.
    assert!(single.block_on(f).is_ok());
}

#[test]
fn with_no_worker_a_task_waits_30_seconds_then_fails_saying_why() {
    let rt = dfut::Runtime::builder()
        .in_process_workers(0)
        .start()
        .unwrap();
    let _g = rt.enter();
    let started = std::time::Instant::now();
    let err = dfut_tests::slow_pid(1)
        .get_timeout(std::time::Duration::from_secs(90))
        .unwrap_err();
    let waited = started.elapsed();
    match err {
        dfut::Error::NoEligibleWorker(why) => {
            assert!(
                why.contains("no worker has been registered for 30s"),
                "{why}"
            );
        }
        other => panic!("expected NoEligibleWorker, got {other:?}"),
    }
    assert!(waited >= std::time::Duration::from_secs(30), "{waited:?}");
}
