//! Resources and per-call placement across real worker processes: what a
//! task needs decides where it may run, is held while it runs (never more
//! than a worker has at once), and a need nobody meets fails at once
//! naming what is missing; node affinity and spread steer calls.

use std::collections::HashMap;

use dfut::{Options, Strategy, WorkerOptions};
use dfut_tests::{Span, disk_span, made_here, span, wide_span};

use crate::util::{LIMIT, WORKER};

/// Worker A: 2 CPUs, 2 GiB, one `disk`. Worker B: 3 CPUs, 64 GiB.
fn two_kinds() -> dfut::Runtime {
    dfut::Runtime::builder()
        .worker_program(WORKER)
        .add_worker(
            WorkerOptions::default()
                .max_concurrent(2)
                .memory_mb(2048)
                .resource("disk", 1),
        )
        .add_worker(
            WorkerOptions::default()
                .max_concurrent(3)
                .memory_mb(64 << 10),
        )
        .start()
        .unwrap()
}

/// (node id, pid) of the worker declaring `disk`, and of the other.
fn ids(rt: &dfut::Runtime) -> ((u64, u32), (u64, u32)) {
    let status = rt
        .block_on(dfut::scheduler::query_status(
            rt.scheduler_addr(),
            rt.credential(),
        ))
        .unwrap();
    let find = |disk: bool| {
        let w = status
            .workers
            .iter()
            .find(|w| w.info.resources.iter().any(|r| r.name == "disk") == disk)
            .expect("both kinds registered");
        (w.info.id, w.info.pid)
    };
    (find(true), find(false))
}

fn spans(futures: Vec<dfut::DistFuture<Span>>) -> Vec<Span> {
    futures
        .iter()
        .map(|f| f.get_timeout(LIMIT).unwrap())
        .collect()
}

/// The most units in use at once on each worker, each span weighing
/// `weight` units.
fn peak(runs: &[(Span, u32)]) -> HashMap<u32, u32> {
    let mut events: Vec<(u32, u64, i64)> = Vec::new();
    for &((pid, start, end), w) in runs {
        events.push((pid, start, i64::from(w)));
        events.push((pid, end, -i64::from(w)));
    }
    // Ends before starts at the same instant.
    events.sort_by_key(|&(pid, t, d)| (pid, t, d));
    let mut peak = HashMap::new();
    let mut now: HashMap<u32, i64> = HashMap::new();
    for (pid, _, d) in events {
        let n = now.entry(pid).or_default();
        *n += d;
        let p = peak.entry(pid).or_insert(0u32);
        *p = (*p).max(u32::try_from(*n).unwrap_or(0));
    }
    peak
}

#[test]
fn tasks_run_only_where_their_resources_are_and_hold_them_while_running() {
    let rt = two_kinds();
    let _g = rt.enter();
    let ((_, a), (_, b)) = ids(&rt);

    // A custom resource: only A has the one `disk`, so its tasks run there
    // one at a time, although A has two slots.
    let disk = spans((0..6).map(|_| disk_span(40)).collect());
    assert!(
        disk.iter().all(|s| s.0 == a),
        "a disk task ran without a disk"
    );
    let disk_runs: Vec<_> = disk.iter().map(|s| (*s, 1)).collect();
    assert_eq!(
        peak(&disk_runs)[&a],
        1,
        "two tasks held the one disk at once"
    );

    // Two-CPU tasks beside one-CPU tasks: never more CPUs in use than a
    // worker has (2 on A, 3 on B).
    let wide: Vec<_> = (0..8).map(|_| wide_span(40)).collect();
    let narrow: Vec<_> = (0..12).map(|_| span(40)).collect();
    let mut runs: Vec<(Span, u32)> = spans(wide).into_iter().map(|s| (s, 2)).collect();
    runs.extend(spans(narrow).into_iter().map(|s| (s, 1)));
    let peaks = peak(&runs);
    assert!(
        peaks[&a] <= 2 && peaks.get(&b).is_none_or(|p| *p <= 3),
        "{peaks:?}"
    );
    assert!(peaks.values().any(|p| *p >= 2), "nothing ran side by side");

    // Two-CPU tasks waiting for two-CPU children, more parents than the
    // cluster has room for at once, all finish. (That a waiting parent
    // lends its slots to a child on its own worker is shown by the
    // runner's unit test `a_wide_task_waiting_for_a_child_lends_its_slots`.)
    let parents: Vec<_> = (0..4).map(|_| dfut_tests::two_cpu_parent(3)).collect();
    for p in parents {
        assert_eq!(p.get_timeout(LIMIT).unwrap(), 3);
    }

    // Per-call options override the function's needs.
    let three = Options::new()
        .cpus(3)
        .call(|| spans((0..4).map(|_| span(5)).collect()));
    assert!(three.iter().all(|s| s.0 == b), "3 CPUs: only B has them");
    let big = Options::new()
        .memory_mb(10_000)
        .call(|| spans((0..4).map(|_| span(5)).collect()));
    assert!(big.iter().all(|s| s.0 == b), "10,000 MiB: only B has them");
    // Memory is reserved while a task runs: A's 2048 MiB hold one 1500.
    let on_a = Strategy::NodeAffinity {
        node: ids(&rt).0.0,
        soft: false,
    };
    let reserved = Options::new()
        .memory_mb(1500)
        .strategy(on_a)
        .call(|| spans((0..4).map(|_| span(30)).collect()));
    let reserved: Vec<_> = reserved.iter().map(|s| (*s, 1)).collect();
    assert_eq!(
        peak(&reserved)[&a],
        1,
        "two 1500 MiB tasks at once in 2048 MiB"
    );

    // Needs nobody meets fail at once, saying what is missing.
    let refused = |o: Options, f: fn() -> dfut::DistFuture<Span>| match o.call(f).get_timeout(LIMIT)
    {
        Err(dfut::Error::NoEligibleWorker(why)) => why,
        other => panic!("expected NoEligibleWorker, got {other:?}"),
    };
    let why = refused(Options::new().cpus(8), || span(1));
    assert!(
        why.contains("8 CPUs, and the most a worker has is 3"),
        "{why}"
    );
    let why = refused(Options::new().resource("tpu", 2), || span(1));
    assert!(why.contains("`tpu` = 2, which no worker declares"), "{why}");
    let why = refused(Options::new().memory_mb(10_000), || disk_span(1));
    assert!(
        why.contains("at once (1 CPU, 10000 MiB, disk = 1)"),
        "{why}"
    );
    // An amount of 0 drops the function's own need.
    let anywhere = Options::new()
        .resource("disk", 0)
        .strategy(Strategy::NodeAffinity {
            node: ids(&rt).1.0,
            soft: false,
        })
        .call(|| disk_span(1));
    assert_eq!(anywhere.get_timeout(LIMIT).unwrap().0, b);
}

#[test]
fn node_affinity_pins_calls_and_spread_overrides_locality() {
    let rt = two_kinds();
    let _g = rt.enter();
    let ((a_id, a), (b_id, b)) = ids(&rt);
    let hard = |node| Strategy::NodeAffinity { node, soft: false };

    let pinned = Options::new()
        .strategy(hard(b_id))
        .call(|| spans((0..10).map(|_| span(1)).collect()));
    assert!(pinned.iter().all(|s| s.0 == b));

    let missing = Options::new()
        .strategy(hard(0xdead))
        .call(|| span(1))
        .get_timeout(LIMIT);
    match missing {
        Err(dfut::Error::NoEligibleWorker(why)) => {
            assert!(
                why.contains("dead") && why.contains("not in the cluster"),
                "{why}"
            );
        }
        other => panic!("a call bound to a missing worker: {other:?}"),
    }
    let soft = Options::new()
        .strategy(Strategy::NodeAffinity {
            node: 0xdead,
            soft: true,
        })
        .call(|| span(1));
    assert!(
        soft.get_timeout(LIMIT).is_ok(),
        "a soft affinity falls back"
    );

    // A 1 MiB value made on A: its readers follow it there by default
    // (locality); spread sends them to both workers.
    let value = Options::new()
        .strategy(hard(a_id))
        .call(|| made_here(1 << 20));
    assert_eq!(value.get_timeout(LIMIT).unwrap().0, a);
    let readers = Options::new().strategy(Strategy::Spread).call(|| {
        (0..8)
            .map(|_| dfut_tests::consumed_where(&value))
            .collect::<Vec<_>>()
    });
    let mut ran_on: Vec<u32> = readers
        .iter()
        .map(|f| f.get_timeout(LIMIT).unwrap().1)
        .collect();
    ran_on.sort_unstable();
    ran_on.dedup();
    assert_eq!(ran_on.len(), 2, "spread used one worker: {ran_on:?}");
}
