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
    rt.kill_worker(0).unwrap();
    assert!(eventually(LIMIT, || rt.client().workers().len() == 1));
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
