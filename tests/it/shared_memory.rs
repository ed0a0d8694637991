//! Objects at scale: this host's shared memory, spilling past a worker's
//! store limit, and no files left behind by processes that die.

use std::path::{Path, PathBuf};

use dfut_tests::*;

use crate::util::{LIMIT, cluster_with, eventually, signal, tempdir};

/// The object directories of the process `pid` under `root`.
fn dirs_of(root: &Path, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("dfut-store-{pid}-");
    std::fs::read_dir(root)
        .map(|es| {
            es.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Object files (everything but the lock) in the directories of `pid`.
fn files_of(root: &Path, pid: u32) -> usize {
    dirs_of(root, pid)
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_name() != "lock")
        .count()
}

#[test]
fn a_large_result_is_read_in_place_from_shared_memory_and_freed_with_its_handle() {
    let shm = tempdir("shm-read");
    let rt = cluster_with(1, |b| b.worker_env("DFUT_SHM_DIR", shm.to_str().unwrap()));
    let _g = rt.enter();
    let pid = rt.worker_pids()[0];
    let before = rt.client().stats();
    let f = bytes(1 << 20, 9);
    let v = f.get_archived().unwrap();
    assert!(v.len() == 1 << 20 && v.iter().all(|b| *b == 9));
    let after = rt.client().stats();
    assert!(
        after.shared_bytes >= before.shared_bytes + (1 << 20),
        "mapped"
    );
    assert_eq!(
        after.fetched_bytes, before.fetched_bytes,
        "nothing copied over the network"
    );
    assert_eq!(files_of(&shm, pid), 1, "one sealed file for the one object");
    // A task reads it too, from the store.
    assert_eq!(sum_bytes(&f).get_timeout(LIMIT), Ok(9 << 20));
    drop(v);
    drop(f);
    assert!(
        eventually(LIMIT, || files_of(&shm, pid) == 0),
        "freed with its last handle"
    );
    drop(_g);
    drop(rt);
    assert!(
        dirs_of(&shm, pid).is_empty(),
        "the local cluster removed its directories"
    );
    let _ = std::fs::remove_dir_all(&shm);
}

#[test]
fn a_killed_worker_leaves_no_shared_memory_behind() {
    let shm = tempdir("shm-kill");
    let rt = cluster_with(2, |b| b.worker_env("DFUT_SHM_DIR", shm.to_str().unwrap()));
    let _g = rt.enter();
    let pids = rt.worker_pids();
    let held: Vec<_> = (0..8).map(|i| bytes(200_000, i)).collect();
    for h in &held {
        assert!(h.get_timeout(LIMIT).is_ok());
    }
    let victim = *pids
        .iter()
        .find(|p| files_of(&shm, **p) > 0)
        .expect("some worker holds objects in shared memory");
    signal(victim, "-KILL");
    // The surviving worker sweeps what dead processes left (every 5 s).
    assert!(
        eventually(LIMIT, || dirs_of(&shm, victim).is_empty()),
        "the dead worker's objects are removed: {:?}",
        dirs_of(&shm, victim)
    );
    drop(held);
    drop(_g);
    drop(rt);
    for pid in pids {
        assert!(dirs_of(&shm, pid).is_empty());
    }
    let _ = std::fs::remove_dir_all(&shm);
}

#[test]
fn a_store_past_its_limit_spills_to_disk_and_reads_everything_back() {
    let spill = tempdir("spill");
    let rt = cluster_with(1, |b| {
        b.worker_env("DFUT_OBJECT_STORE_BYTES", (2u64 << 20).to_string())
            .worker_env("DFUT_SPILL_DIR", spill.to_str().unwrap())
    });
    let _g = rt.enter();
    let pid = rt.worker_pids()[0];
    // Ten 1 MiB objects in a store that keeps 2 MiB in memory.
    let held: Vec<_> = (0..10u8).map(|i| bytes(1 << 20, i)).collect();
    for h in &held {
        assert!(h.get_timeout(LIMIT).is_ok());
    }
    let spilled = || {
        rt.client()
            .workers()
            .iter()
            .map(|w| w.load.spilled_objects)
            .sum::<u64>()
    };
    assert!(
        eventually(LIMIT, || spilled() >= 8 && files_of(&spill, pid) >= 8),
        "most objects went to disk: {} reported, {} files",
        spilled(),
        files_of(&spill, pid)
    );
    // Every one reads back, by the driver and by tasks.
    for (i, h) in held.iter().enumerate() {
        let v = h.get_archived().unwrap();
        assert!(
            v.len() == 1 << 20 && v.iter().all(|b| *b == i as u8),
            "object {i}"
        );
        assert_eq!(sum_bytes(h).get_timeout(LIMIT), Ok((i as u64) << 20));
    }
    drop(held);
    assert!(
        eventually(LIMIT, || files_of(&spill, pid) == 0 && spilled() == 0),
        "spilled files go with their objects"
    );
    drop(_g);
    drop(rt);
    let _ = std::fs::remove_dir_all(&spill);
}

#[test]
fn a_full_store_that_cannot_spill_fails_the_result_not_the_worker() {
    let rt = cluster_with(1, |b| {
        // Room for two 1 MiB results and their archives' few bytes more.
        b.worker_env("DFUT_OBJECT_STORE_BYTES", (5u64 << 19).to_string())
            .worker_env("DFUT_SPILL_DIR", "off")
    });
    let _g = rt.enter();
    let kept: Vec<_> = (0..2u8).map(|i| bytes(1 << 20, i)).collect();
    for k in &kept {
        assert!(k.get_timeout(LIMIT).is_ok());
    }
    let refused = bytes(1 << 20, 7).get_timeout(LIMIT);
    assert!(
        matches!(&refused, Err(dfut::Error::StoreFull(m)) if m.contains("--spill-dir")),
        "{refused:?}"
    );
    assert_eq!(
        kept[1].get_timeout(LIMIT).map(|v| v[0]),
        Ok(1),
        "the rest is intact"
    );
    drop(kept);
    assert_eq!(
        bytes(1 << 20, 8).get_timeout(LIMIT).map(|v| v[0]),
        Ok(8),
        "room again"
    );
}
