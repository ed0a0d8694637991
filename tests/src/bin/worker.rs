//! The worker program of the integration tests: it links the remote
//! functions of `dfut_tests` and serves them. With an argument it is a
//! driver instead:
//!
//! - `--driver` / `--driver-panic`: starts a local cluster of 2 workers,
//!   prints their process ids and waits (or panics), for the orphan tests;
//! - `--init-twice`: checks that `dfut::init()` is idempotent and that
//!   handles fail once the runtime is gone; prints `ok`;
//! - `--init-async`: starts with `dfut::init_async()` inside a tokio
//!   runtime and awaits calls there; prints `ok`;
//! - `--multi-host`: joins the cluster named by `DFUT_SCHEDULER` (workers on
//!   other hosts) and runs independent tasks, a chain of `hop`s that must
//!   cross between the hosts `host-w1` and `host-w2`, and a nested call;
//!   prints the chain's trail, then `ok`.
//! - `--too-large`: with `DFUT_MAX_MESSAGE_BYTES=1048576`, sends an
//!   argument and makes a result larger than a message may carry, checks
//!   both arrive whole (they stream), that a list of inline values too
//!   large for one message fails its own call, and that the cluster still
//!   works; prints `ok`;
//! - `--memory-flat N`: runs `N` small tasks on a local cluster in
//!   batches of 10,000 (half of them failing, a quarter with retries that
//!   re-run the failures, and a 100-link chain with retries per batch,
//!   whose lineage is kept until it drops), then checks that every store
//!   is empty and that the resident memory of the driver and of each
//!   worker is within 10 % + 20 MiB of what it was after the first tenth
//!   of the batches; prints the figures, then `ok` or `not flat`
//!   (`scripts/memory-flat.sh` runs it with a million);
//! - `--worker-logs`: starts a local cluster and calls `chatty`, which
//!   prints to standard output and error and logs a `tracing` warning,
//!   and `chatty_async`, which logs one from an async task;
//!   waits until the driver printed its lines (unless
//!   `DFUT_WORKER_LOGS=0`); prints `worker <pid>`, then `ok`;
//! - `--owner N`: joins the cluster named by `DFUT_SCHEDULER`, makes `N`
//!   results of 100 KiB that stay on the workers, prints `ready`, and
//!   waits to be killed (the ownership tests).
//!
//! It also defines two functions under names the `it` test binary defines
//! too (`signatures.rs`): one with the same types, one with others.

use std::time::Duration;

use dfut_benches as _;
use dfut_tests::{echo, hop, nested_sum};

/// Same name and types as the test binary's `same_types`.
#[dfut::remote(name = "dfut_tests::signature::same")]
fn same_types(x: u64) -> u64 {
    x + 1
}

/// Same name as the test binary's `other_types`, other argument type.
#[dfut::remote(name = "dfut_tests::signature::other")]
fn other_types(x: u64) -> u64 {
    x + 1
}

fn main() -> dfut::Result<()> {
    match std::env::args().nth(1).as_deref() {
        None => {
            // A worker started by a test's local cluster: serves and never returns.
            let _rt = dfut::init()?;
            Ok(())
        }
        Some("--init-twice") => init_twice(),
        Some("--init-async") => init_async(),
        Some("--multi-host") => multi_host(),
        Some("--too-large") => too_large(),
        Some("--memory-flat") => memory_flat(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(100_000),
        ),
        Some("--worker-logs") => worker_logs(),
        Some("--owner") => owner(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
        ),
        Some(mode) => orphan_driver(mode == "--driver-panic"),
    }
}

/// Starts a local cluster (`DFUT_WORKERS`), calls `chatty(7)`, and with
/// worker logs on (the default) waits until its three lines were printed
/// here; prints `worker <pid>` and `ok`.
fn worker_logs() -> dfut::Result<()> {
    let rt = dfut::init()?;
    let pid = dfut_tests::chatty(7).get_timeout(Duration::from_secs(30))?;
    dfut_tests::chatty_async(8).get_timeout(Duration::from_secs(30))?;
    let on = std::env::var("DFUT_WORKER_LOGS").as_deref() != Ok("0");
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while on && rt.client().stats().worker_log_lines < 4 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !on {
        // Time for the worker to write its file; nothing is forwarded.
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("worker {pid}");
    println!("ok");
    Ok(())
}

fn too_large() -> dfut::Result<()> {
    let limit = Duration::from_secs(30);
    let _rt = dfut::init()?;
    // Twice the message limit, each way: values stream on their own
    // streams, whatever the limit on messages.
    let big = 2 << 20;
    let arg = dfut_tests::sum_bytes(vec![1u8; big]).get_timeout(limit)?;
    assert_eq!(arg, big as u64, "a large argument arrives whole");
    let result = dfut_tests::bytes(big as u64, 7).get_timeout(limit)?;
    assert!(
        result.len() == big && result.iter().all(|b| *b == 7),
        "a large result comes back whole"
    );
    let made = dfut_tests::bytes(big as u64, 5);
    assert_eq!(
        dfut_tests::sum_bytes(&made).get_timeout(limit)?,
        5 * big as u64,
        "and moves between workers"
    );
    // Results that come back inline count once a task reads them: twenty
    // of 60 KB do not fit in one 1 MiB message together.
    let parts: Vec<_> = (0..20).map(|i| dfut_tests::bytes(60_000, i)).collect();
    for p in &parts {
        p.get_timeout(limit)?;
    }
    let together = dfut_tests::total_len(&parts[..]).get_timeout(limit);
    assert!(
        matches!(&together, Err(dfut::Error::Encode(m)) if m.to_string().contains("as sent")),
        "inline results that do not fit fail the call that reads them: {together:?}"
    );
    assert_eq!(
        dfut_tests::total_len(&parts[..10]).get_timeout(limit)?,
        600_000
    );
    // Nothing else was disturbed: the same links carry values that fit.
    let fits = dfut_tests::bytes(500_000, 2);
    assert_eq!(dfut_tests::sum_bytes(&fits).get_timeout(limit)?, 1_000_000);
    assert_eq!(
        dfut_tests::sum_bytes(vec![3u8; 500_000]).get_timeout(limit)?,
        1_500_000
    );
    println!("ok");
    Ok(())
}

/// Resident memory of process `pid`, in bytes (0 if unknown).
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb << 10)
}

fn memory_flat(total: u64) -> dfut::Result<()> {
    const BATCH: u64 = 10_000;
    const CHAIN: u64 = 100;
    let limit = Duration::from_secs(120);
    let rt = dfut::init()?;
    let mut pids = vec![std::process::id()];
    pids.extend(rt.worker_pids());
    let batches = total.div_ceil(BATCH).max(2);
    let warm = (batches / 10).max(1);
    let retried = dfut::Options::new().retries(1).retry_on_error(true);
    let mut baseline = Vec::new();
    let started = std::time::Instant::now();
    for b in 0..batches {
        let base = b * BATCH;
        // Even numbers succeed, odd ones fail; every fourth call retries
        // its failure once.
        let calls: Vec<_> = (base..base + BATCH)
            .map(|x| {
                if x % 4 == 3 {
                    retried.call(|| dfut_tests::even_only(x))
                } else {
                    dfut_tests::even_only(x)
                }
            })
            .collect();
        let mut link = dfut_tests::inc(base);
        dfut::Options::new().retries(1).call(|| {
            for _ in 1..CHAIN {
                link = dfut_tests::inc(&link);
            }
        });
        let (mut ok, mut failed) = (0u64, 0u64);
        for (x, call) in (base..).zip(&calls) {
            match call.get_timeout(limit) {
                Ok(v) if v == x && x % 2 == 0 => ok += 1,
                Err(dfut::Error::TaskFailed { .. }) if x % 2 == 1 => failed += 1,
                other => panic!("even_only({x}): {other:?}"),
            }
        }
        assert_eq!((ok, failed), (BATCH / 2, BATCH / 2), "batch {b}");
        assert_eq!(link.get_timeout(limit)?, base + CHAIN, "chain of batch {b}");
        drop((calls, link));
        if b + 1 == warm {
            baseline = pids.iter().map(|p| resident(*p)).collect();
        }
    }
    let took = started.elapsed();
    let stores_empty = || {
        rt.client().owned_objects() == 0
            && rt.client().workers().iter().all(|w| w.load.objects == 0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !stores_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let held: u64 = rt.client().workers().iter().map(|w| w.load.objects).sum();
    let end: Vec<u64> = pids.iter().map(|p| resident(*p)).collect();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "{} tasks in {:.1} s ({:.0} tasks/s); objects held at the end: {} by the owner, {held} by the workers",
        batches * (BATCH + CHAIN),
        took.as_secs_f64(),
        (batches * (BATCH + CHAIN)) as f64 / took.as_secs_f64(),
        rt.client().owned_objects(),
    );
    let mut flat = stores_empty();
    for (i, (before, after)) in baseline.iter().zip(&end).enumerate() {
        let who = if i == 0 {
            "driver".to_owned()
        } else {
            format!("worker {i}")
        };
        let bound = before + before / 10 + (20 << 20);
        let within = *after <= bound;
        flat &= within;
        println!(
            "{who} (pid {}): {:.1} MiB after batch {warm}, {:.1} MiB at the end (bound {:.1} MiB){}",
            pids[i],
            mib(*before),
            mib(*after),
            mib(bound),
            if within { "" } else { ": GREW" }
        );
    }
    println!("{}", if flat { "ok" } else { "not flat" });
    Ok(())
}

fn owner(n: u64) -> dfut::Result<()> {
    let _rt = dfut::init()?;
    let held: Vec<_> = (0..n)
        .map(|i| dfut_tests::bytes(100 << 10, i as u8))
        .collect();
    for h in &held {
        h.get_timeout(Duration::from_secs(30))?;
    }
    println!("ready");
    // Killed by the test; bounded all the same.
    std::thread::sleep(Duration::from_secs(600));
    Ok(())
}

fn init_twice() -> dfut::Result<()> {
    let limit = Duration::from_secs(30);
    let a = dfut::init()?;
    let b = dfut::init()?;
    assert_eq!(a.client().node_id(), b.client().node_id(), "one cluster");
    assert_eq!(a.worker_pids(), b.worker_pids());
    drop(a);
    assert_eq!(
        echo(5).get_timeout(limit),
        Ok(5),
        "the second handle still works"
    );
    let pending = dfut_tests::slow_echo(1, 60_000);
    drop(b);
    assert_eq!(pending.get_timeout(limit), Err(dfut::Error::NoRuntime));
    assert_eq!(echo(5).get_timeout(limit), Err(dfut::Error::NoRuntime));
    println!("ok");
    Ok(())
}

fn init_async() -> dfut::Result<()> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| dfut::Error::Process(e.to_string()))?;
    tokio.block_on(async {
        let rt = dfut::init_async().await?;
        let x = echo(20).await?;
        let y = dfut_tests::inc(x).await?;
        assert_eq!(y, 21);
        // A blocking get() on a multi-thread runtime's thread also works.
        assert_eq!(echo(3).get()?, 3);
        drop(rt);
        println!("ok");
        Ok(())
    })
}

fn multi_host() -> dfut::Result<()> {
    let limit = Duration::from_secs(30);
    let rt = dfut::init()?;
    let tasks: Vec<_> = (0..200u64).map(echo).collect();
    for (i, task) in (0..200u64).zip(&tasks) {
        assert_eq!(task.get_timeout(limit)?, i, "echo({i})");
    }
    let mut link = hop((0u64, Vec::<String>::new()));
    for _ in 1..20 {
        link = hop(link);
    }
    let (count, trail) = link.get_timeout(limit)?;
    println!("trail {}", trail.join(" "));
    assert_eq!(count, 20, "hops in the chain");
    for host in ["host-w1", "host-w2"] {
        assert!(
            trail.iter().any(|h| h == host),
            "no link of the chain ran on {host}: {trail:?}"
        );
    }
    assert_eq!(nested_sum(10).get_timeout(limit)?, 55, "nested_sum(10)");
    drop(rt);
    println!("ok");
    Ok(())
}

fn orphan_driver(panic: bool) -> dfut::Result<()> {
    let rt = dfut::Runtime::builder().workers(2).start()?;
    let pids: Vec<String> = rt.worker_pids().iter().map(u32::to_string).collect();
    println!("workers {}", pids.join(" "));
    if panic {
        std::thread::sleep(Duration::from_millis(200));
        panic!("driver panics on purpose");
    }
    std::thread::sleep(Duration::from_secs(120));
    Ok(())
}
