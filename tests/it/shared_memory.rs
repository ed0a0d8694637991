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

#[test]
fn an_object_from_another_host_is_fetched_once_per_host() {
    use crate::util::{Processes, free_port, start_scheduler};
    if gpu_or_skip("fetched once per host").is_none() {
        return;
    }
    let dir = tempdir("once-per-host");
    let pem = dir.join("cluster.pem");
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut procs = Processes::default();
    start_scheduler(&mut procs, port, &pem);
    assert!(eventually(LIMIT, || pem.is_file()));
    let credential = dfut::ClusterCredential::from_file(&pem).unwrap();
    // Two hosts on this machine: their own identities and shared memory.
    let worker = |host: &str, gpu: bool| {
        let shm = dir.join(host);
        std::fs::create_dir_all(&shm).unwrap();
        let mut cmd = crate::util::worker_command(addr, &pem);
        cmd.env("DFUT_HOST_ID", host)
            .env("DFUT_SHM_DIR", shm)
            .env("DFUT_GPU", if gpu { "true" } else { "false" });
        cmd
    };
    procs.start(&mut worker("host-a", false));
    let rt = dfut::Runtime::builder()
        .join(addr)
        .credential(credential)
        .start()
        .unwrap();
    let _g = rt.enter();
    assert!(eventually(LIMIT, || rt.client().workers().len() == 1));
    // Made on host A, the only worker yet.
    let size = 4 << 20;
    let made = bytes(size, 3);
    rt.block_on(made.settled());
    // Host B: three GPU workers, where every reader must run.
    for _ in 0..3 {
        procs.start(&mut worker("host-b", true));
    }
    assert!(eventually(LIMIT, || rt.client().workers().len() == 4));
    let sums: Vec<_> = (0..12).map(|_| gpu_host_sum(&made)).collect();
    for s in &sums {
        assert_eq!(s.get_timeout(LIMIT), Ok(3 * size));
    }
    let fetched_by_b = || -> u64 {
        rt.client()
            .workers()
            .iter()
            .filter(|w| w.gpu)
            .map(|w| w.load.fetched_bytes)
            .sum()
    };
    assert!(
        eventually(LIMIT, || fetched_by_b() >= size),
        "host B fetched it: {}",
        fetched_by_b()
    );
    // Heartbeats carry the counts; give the last ones time to arrive.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        fetched_by_b() < 2 * size,
        "three processes on host B fetched {} bytes of one {size}-byte object",
        fetched_by_b()
    );
}

#[test]
fn a_large_argument_reaches_a_worker_of_this_host_as_a_file_and_a_put_keeps_it() {
    use std::os::unix::fs::MetadataExt;
    // The driver's and the worker's files on one file system (this host's
    // default), so the worker can link the driver's file.
    let shm = Path::new("/dev/shm");
    let rt = crate::util::cluster(1);
    let _g = rt.enter();
    let pid = rt.worker_pids()[0];
    let before = rt.client().stats().shared_args_bytes;
    let value = vec![2u8; 1 << 20];
    assert_eq!(sum_bytes(value.clone()).get_timeout(LIMIT), Ok(2 << 20));
    let sent = rt.client().stats().shared_args_bytes - before;
    assert!(sent >= 1 << 20, "sent as a file: {sent} bytes");
    // A put's value stays in that file: the worker links it as its own
    // object (no copy), and every reader maps it. With a retry, the driver
    // keeps its own link to place it again: one file, two names.
    let put = dfut::Options::new().retries(1).call(|| dfut::put(value));
    assert_eq!(sum_bytes(&put).get_timeout(LIMIT), Ok(2 << 20));
    assert!(
        eventually(LIMIT, || files_of(shm, pid) == 1),
        "the put's value is one file of the worker's"
    );
    let held: Vec<_> = dirs_of(shm, pid)
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().flatten())
        .filter(|e| e.file_name() != "lock")
        .collect();
    let meta = held[0].metadata().unwrap();
    assert!(meta.len() >= 1 << 20, "{:?}", held[0].path());
    assert_eq!(meta.nlink(), 2, "the driver's file, linked, not copied");
    assert_eq!(put.get_timeout(LIMIT).map(|v| v.len()), Ok(1 << 20));
    drop(put);
    assert!(eventually(LIMIT, || files_of(shm, pid) == 0));
}
