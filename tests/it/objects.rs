//! Object lifetime: results are freed on their workers once every handle
//! to them is gone.

use dfut_tests::*;

use crate::util::{LIMIT, cluster, eventually};

fn objects_held(rt: &dfut::Runtime) -> u64 {
    rt.client().workers().iter().map(|w| w.load.objects).sum()
}

#[test]
fn results_are_freed_when_their_handles_drop() {
    let rt = cluster(2);
    let _g = rt.enter();
    let large: Vec<_> = (0..20).map(|i| bytes(100_000, i)).collect();
    let small: Vec<_> = (0..20).map(echo).collect();
    let mut chain = inc(0);
    for _ in 0..20 {
        chain = inc(chain);
    }
    for f in &large {
        assert_eq!(f.get_timeout(LIMIT).map(|v| v.len()), Ok(100_000));
    }
    for f in &small {
        assert!(f.get_timeout(LIMIT).is_ok());
    }
    assert_eq!(chain.get_timeout(LIMIT), Ok(21));
    assert!(
        eventually(LIMIT, || objects_held(&rt) == 41),
        "workers report the objects they hold: {}",
        objects_held(&rt)
    );
    let clone = large[0].clone();
    drop(large);
    drop(small);
    drop(chain);
    assert!(
        eventually(LIMIT, || objects_held(&rt) == 1),
        "only the object with a live clone remains: {}",
        objects_held(&rt)
    );
    assert_eq!(clone.get_timeout(LIMIT).map(|v| v[0]), Ok(0));
    drop(clone);
    assert!(eventually(LIMIT, || objects_held(&rt) == 0));
    assert_eq!(rt.client().owned_objects(), 0);
}

#[test]
fn failed_results_are_freed_like_successful_ones() {
    let rt = cluster(2);
    let _g = rt.enter();
    let failed: Vec<_> = (0..20).map(|i| explode(format!("boom {i}"))).collect();
    for f in &failed {
        assert!(matches!(
            f.get_timeout(LIMIT),
            Err(dfut::Error::TaskPanicked { .. })
        ));
    }
    assert!(
        eventually(LIMIT, || objects_held(&rt) == 20),
        "workers keep each failure for dependents: {}",
        objects_held(&rt)
    );
    drop(failed);
    assert!(
        eventually(LIMIT, || objects_held(&rt) == 0),
        "freed with their handles: {}",
        objects_held(&rt)
    );
}

#[test]
fn a_put_value_is_stored_once_and_read_by_many_tasks() {
    let rt = cluster(2);
    let _g = rt.enter();
    let table = dfut::put(vec![3u8; 200_000]);
    let sums: Vec<_> = (0..20).map(|_| sum_bytes(&table)).collect();
    for s in &sums {
        assert_eq!(s.get_timeout(LIMIT), Ok(600_000));
    }
    assert_eq!(table.get_timeout(LIMIT).map(|v| v.len()), Ok(200_000));
    // With a retry, the driver keeps the bytes and places it again if its
    // worker dies.
    let kept = dfut::Options::new()
        .retries(1)
        .call(|| dfut::put(vec![5u8; 200_000]));
    assert!(kept.get_timeout(LIMIT).is_ok());
    let members = crate::util::worker_ids(&rt);
    rt.kill_worker(0).unwrap();
    assert!(crate::util::one_left(&rt, &members));
    // Wherever it was, it is readable: re-placed from the driver's bytes if
    // it was on the killed worker.
    assert_eq!(sum_bytes(&kept).get_timeout(LIMIT), Ok(1_000_000));
}

#[test]
fn dropping_the_end_of_a_long_chain_does_not_recurse() {
    // A test thread has a small stack: dropping 20,000 links one inside
    // the other would overflow it.
    let rt = cluster(1);
    let _g = rt.enter();
    let mut x = inc(0);
    dfut::Options::new().retries(1).call(|| {
        for _ in 0..20_000 {
            x = inc(&x);
        }
    });
    assert_eq!(
        x.get_timeout(std::time::Duration::from_secs(300)),
        Ok(20_001)
    );
    drop(x);
    assert!(
        eventually(LIMIT, || objects_held(&rt) == 0),
        "every link freed: {}",
        objects_held(&rt)
    );
}

#[test]
fn values_larger_than_a_message_stream_and_only_lists_that_do_not_fit_fail() {
    // A driver process (and its local workers) with a 1 MiB message limit,
    // with this host's shared memory and without (as between hosts).
    for shm in ["1", "0"] {
        let out = std::process::Command::new(crate::util::WORKER)
            .arg("--too-large")
            .env("DFUT_MAX_MESSAGE_BYTES", "1048576")
            .env("DFUT_WORKERS", "2")
            .env("DFUT_SHM", shm)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim() == "ok",
            "DFUT_SHM={shm}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_loop_with_retries_keeps_only_its_last_value() {
    // `x = step(&x)`: each finished step keeps its lineage (to be rebuilt
    // if lost), which does not keep the previous value alive.
    let rt = cluster(2);
    let _g = rt.enter();
    let mut x = chain_start(0);
    dfut::Options::new().retries(1).call(|| {
        for _ in 0..30 {
            x = chain_step(&x);
        }
    });
    assert_eq!(
        chain_sum(&x).get_timeout(LIMIT),
        Ok((0..10_000u64).map(|k| k + 30).sum())
    );
    assert!(
        eventually(LIMIT, || objects_held(&rt) == 1),
        "only the last value is held: {} (owner has {})",
        objects_held(&rt),
        rt.client().owned_objects()
    );
}

/// A chain of three links a, b, c with these retries, whose first two
/// handles are dropped (so their values are freed), and whose last link's
/// worker is then killed. Checks that everything is freed once `c` is
/// dropped too.
fn lose_the_end_of_a_chain([ra, rb, rc]: [u32; 3]) -> dfut::Result<(u32, Vec<u64>)> {
    let rt = cluster(2);
    let _g = rt.enter();
    let retries = |n| dfut::Options::new().retries(n);
    let a = retries(ra).call(|| pid_chain_start(5));
    let b = retries(rb).call(|| pid_chain_step(&a));
    let c = retries(rc).call(|| pid_chain_step(&b));
    let holder = made_by(&c).get_timeout(LIMIT).unwrap();
    drop((a, b));
    assert!(
        eventually(LIMIT, || objects_held(&rt) == 1),
        "the freed links are gone from the workers: {}",
        objects_held(&rt)
    );
    let members = crate::util::worker_ids(&rt);
    crate::util::signal(holder, "-KILL");
    assert!(crate::util::one_left(&rt, &members));
    let got = c.get_timeout(LIMIT);
    if let Ok((maker, _)) = &got {
        assert_ne!(*maker, holder, "made again elsewhere");
    }
    drop(c);
    assert!(
        eventually(LIMIT, || rt.client().owned_objects() == 0
            && objects_held(&rt) == 0),
        "all freed afterwards: {} owned, {} held",
        rt.client().owned_objects(),
        objects_held(&rt)
    );
    got
}

#[test]
fn a_lost_result_is_rebuilt_from_the_lineage_of_freed_arguments() {
    let (_, numbers) = lose_the_end_of_a_chain([1, 1, 1]).expect("rebuilt");
    assert_eq!(
        numbers,
        (0..10_000).map(|k| 5 + k + 2).collect::<Vec<u64>>()
    );
}

#[test]
fn without_retries_nothing_is_rebuilt_and_the_error_says_why() {
    // The default: the lost result fails with the worker's loss.
    let lost = lose_the_end_of_a_chain([0, 0, 0]);
    assert!(
        matches!(lost, Err(dfut::Error::WorkerLost { .. })),
        "{lost:?}"
    );
    // The lost result may run again, but an argument it needs was freed
    // and has no retries to be computed again: directly, or further up
    // the chain (then the link rebuilt on the way is given up too).
    for retries in [[0, 0, 1], [0, 1, 1]] {
        match lose_the_end_of_a_chain(retries) {
            Err(dfut::Error::ObjectUnavailable(why)) => {
                assert!(why.contains("no retries left"), "{retries:?}: {why}");
            }
            other => panic!("{retries:?}: {other:?}"),
        }
    }
}

#[test]
fn memory_stays_flat_over_many_tasks() {
    // 50,000 tasks here; `scripts/memory-flat.sh` runs a million.
    let out = std::process::Command::new(crate::util::WORKER)
        .args(["--memory-flat", "50000"])
        .env("DFUT_WORKERS", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().last() == Some("ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dfut_objects_lists_the_largest_objects_with_their_references() {
    let rt = cluster(2);
    let _g = rt.enter();
    let dir = crate::util::tempdir("objects-tool");
    let credential = dir.join("cluster.pem");
    rt.credential().save(&credential, false).unwrap();
    let big = bytes(300_000, 1);
    let again = big.clone();
    let smaller = bytes(100_000, 2);
    let failed = explode("on purpose");
    assert!(big.get_timeout(LIMIT).is_ok() && smaller.get_timeout(LIMIT).is_ok());
    assert!(failed.get_timeout(LIMIT).is_err());
    let listed = crate::util::json_output(
        std::process::Command::new(crate::util::dfut_tool())
            .args(["objects", "--json", "--limit", "5", "--scheduler"])
            .arg(rt.scheduler_addr().to_string())
            .arg("--credential-file")
            .arg(&credential),
    );
    let listed = listed.as_array().unwrap();
    let field = |i: usize, k: &str| listed[i][k].clone();
    assert_eq!(field(0, "id"), big.id().to_string());
    assert!(field(0, "bytes").as_u64().unwrap() >= 300_000);
    assert_eq!(field(0, "refs"), 2, "`big` and its clone");
    assert_eq!(field(0, "function"), "dfut_tests::bytes");
    assert_eq!(field(0, "owner"), format!("{:x}", rt.client().node_id()));
    assert!(["heap", "shm"].contains(&field(0, "state").as_str().unwrap()));
    let holders: Vec<String> = rt
        .client()
        .workers()
        .iter()
        .map(|w| w.addr.to_string())
        .collect();
    assert!(holders.contains(&field(0, "holder").as_str().unwrap().to_owned()));
    assert_eq!(field(1, "id"), smaller.id().to_string());
    assert_eq!(field(1, "refs"), 1);
    let failure = listed
        .iter()
        .find(|o| o["id"] == failed.id().to_string())
        .expect("the failure is listed");
    assert_eq!(failure["state"], "failed");
    drop(again);
    let table = std::process::Command::new(crate::util::dfut_tool())
        .args(["objects", "--scheduler"])
        .arg(rt.scheduler_addr().to_string())
        .arg("--credential-file")
        .arg(&credential)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().nth(1).is_some_and(
            |l| l.starts_with(&big.id().to_string()) && l.contains(" 1  dfut_tests::bytes")
        ),
        "{table}"
    );
}

#[test]
fn lineage_kept_for_rebuilds_stays_within_its_budget_and_is_given_back() {
    let rt = crate::util::cluster(2);
    let _g = rt.enter();
    // 300 results with retries, each kept rebuildable with its 1 MiB
    // argument: more than the 256 MiB budget.
    let held: Vec<_> = (0..300u32)
        .map(|i| dfut_tests::rebuildable_len(vec![i as u8; 1 << 20]))
        .collect();
    for f in &held {
        assert_eq!(f.get_timeout(crate::util::LIMIT).unwrap(), 1 << 20);
    }
    let kept = rt.client().stats().lineage_bytes;
    assert!(kept <= 256 << 20, "lineage over its budget: {kept} bytes");
    assert!(kept >= 200 << 20, "the budget was not used: {kept} bytes");
    drop(held);
    assert!(
        crate::util::eventually(crate::util::LIMIT, || rt.client().stats().lineage_bytes
            == 0),
        "lineage not given back: {} bytes",
        rt.client().stats().lineage_bytes
    );
}
