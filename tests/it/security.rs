//! Hostile input: garbage frames, raw UDP noise and peers without the
//! cluster credential. Each is refused without disturbing anyone else.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use dfut::{ClusterCredential, Error};
use dfut_net::{Endpoint, NetError};
use dfut_tests::*;

use crate::util::{LIMIT, cluster, rss};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn tasks_done(rt: &dfut::Runtime) -> u64 {
    rt.client()
        .workers()
        .iter()
        .map(|w| w.load.tasks_done)
        .sum()
}

/// Writes `bytes` on a fresh authenticated stream to `worker` and waits for
/// the worker to close the connection.
async fn send_raw(
    credential: &ClusterCredential,
    worker: SocketAddr,
    bytes: Vec<u8>,
    finish: bool,
) {
    let ep = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        credential,
        Default::default(),
    )
    .unwrap();
    let (conn, mut send, _recv) = ep.connect_raw(worker).await.unwrap();
    send.write_all(&bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    let closed = tokio::time::timeout(LIMIT, conn.closed()).await;
    assert!(
        closed.is_ok(),
        "the worker closes a connection that sent garbage"
    );
}

#[test]
fn garbage_at_a_live_worker_closes_only_that_connection() {
    let rt = cluster(1);
    let _g = rt.enter();
    let worker = rt.client().workers()[0].addr;
    assert_eq!(echo(1).get_timeout(LIMIT), Ok(1));
    let credential = rt.credential().clone();
    block_on(async {
        // Bytes that are not an archive.
        let mut garbage = 16u32.to_le_bytes().to_vec();
        garbage.extend((0..16u8).map(|i| i.wrapping_mul(37) ^ 0x5a));
        send_raw(&credential, worker, garbage, false).await;
        // A length far over the frame limit.
        send_raw(&credential, worker, u32::MAX.to_le_bytes().to_vec(), false).await;
    });
    // A frame cut short by the end of the stream: the worker just drops the
    // stream's connection when it ends.
    block_on(async {
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &credential,
            Default::default(),
        )
        .unwrap();
        let (_conn, mut send, _recv) = ep.connect_raw(worker).await.unwrap();
        send.write_all(&[100, 0, 0, 0, 1, 2]).await.unwrap();
        send.finish().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    // Raw UDP noise at the QUIC port.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        udp.send_to(&[i; 1200], worker).unwrap();
    }
    // The worker still serves its real clients.
    let after: Vec<_> = (0..100).map(echo).collect();
    for (i, f) in after.iter().enumerate() {
        assert_eq!(f.get_timeout(LIMIT), Ok(i as u64));
    }
}

#[test]
fn a_peer_without_the_credential_is_refused_and_nothing_runs() {
    let rt = cluster(1);
    let _g = rt.enter();
    assert_eq!(echo(1).get_timeout(LIMIT), Ok(1));
    assert!(crate::util::eventually(LIMIT, || tasks_done(&rt) == 1));
    let worker = rt.client().workers()[0].addr;
    let stranger = ClusterCredential::generate().unwrap();
    let refused = block_on(async {
        let ep = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            &stranger,
            Default::default(),
        )
        .unwrap();
        ep.connect(worker).await.map(|_| ())
    });
    assert!(matches!(refused, Err(NetError::Auth { .. })), "{refused:?}");

    // Joining the cluster with the wrong credential fails with Error::Auth.
    let joined = dfut::Runtime::builder()
        .join(rt.scheduler_addr())
        .credential(stranger)
        .start();
    assert!(matches!(joined, Err(Error::Auth(_))), "{joined:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(tasks_done(&rt), 1, "nothing the stranger sent was executed");
}

/// A CPU cap for processes (a cgroup, v2 or v1, made for one test and
/// removed after): they share `percent` of one CPU.
struct CpuCap {
    dir: std::path::PathBuf,
}

impl CpuCap {
    fn new(percent: u32) -> CpuCap {
        let name = format!("dfut-flood-{}", std::process::id());
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let quota = 100_000 * u64::from(percent) / 100;
        let (dir, file, value) = if v2 {
            // The cpu controller must be on for the root's children.
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
            (
                std::path::PathBuf::from("/sys/fs/cgroup").join(name),
                "cpu.max",
                format!("{quota} 100000"),
            )
        } else {
            (
                std::path::PathBuf::from("/sys/fs/cgroup/cpu").join(name),
                "cpu.cfs_quota_us",
                quota.to_string(),
            )
        };
        std::fs::create_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot make the cgroup {} that caps the flooders' CPU (run as root): {e}",
                dir.display()
            )
        });
        let cap = CpuCap { dir };
        std::fs::write(cap.dir.join(file), value)
            .unwrap_or_else(|e| panic!("{}: {e}", cap.dir.join(file).display()));
        cap
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // Empty once its processes have exited (they are killed first).
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Calls `echo` every millisecond for `how_long`, watching the scheduler's
/// view of the worker every 100 ms; returns the call latencies (µs),
/// sorted, and how often the worker was seen suspect. Panics on a failed
/// call.
fn probe(rt: &dfut::Runtime, how_long: Duration) -> (Vec<u64>, usize) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, addr, credential) = (stop.clone(), rt.scheduler_addr(), rt.credential().clone());
        std::thread::spawn(move || {
            let mut suspect = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = block_on(dfut::scheduler::query_status(addr, &credential))
                    .unwrap_or_else(|e| panic!("the scheduler did not answer: {e}"));
                suspect += status.workers.iter().filter(|w| w.suspect).count();
                assert!(!status.workers.is_empty(), "the worker left the cluster");
                std::thread::sleep(Duration::from_millis(100));
            }
            suspect
        })
    };
    let start = std::time::Instant::now();
    let mut latencies = Vec::new();
    let mut next = start;
    let mut i = 0u64;
    while start.elapsed() < how_long {
        let t = std::time::Instant::now();
        let got = echo(i).get_timeout(Duration::from_secs(5));
        assert_eq!(got, Ok(i), "probe {i} failed");
        latencies.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        i += 1;
        next += Duration::from_millis(1);
        if let Some(wait) = next.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let suspect = watcher
        .join()
        .unwrap_or_else(|_| panic!("the watcher failed"));
    latencies.sort_unstable();
    (latencies, suspect)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[test]
fn a_flood_of_wrong_credentials_neither_evicts_a_worker_nor_fails_a_probe() {
    let _heavy = crate::util::heavy();
    let rt = cluster(1);
    let _g = rt.enter();
    let worker = rt.client().workers()[0].addr;
    let pid = rt.worker_pids()[0];
    let (calm, calm_suspect) = probe(&rt, Duration::from_secs(5));
    assert_eq!(calm_suspect, 0);
    let before = rss(pid);
    // Four processes, 16 connection attempts each at any time, sharing
    // half of one CPU, for 20 s.
    let cap = CpuCap::new(50);
    let dir = crate::util::tempdir("flood");
    let mut flooders = crate::util::Processes::default();
    let outputs: Vec<_> = (0..4).map(|i| dir.join(format!("flood-{i}.out"))).collect();
    for out in &outputs {
        let file = std::fs::File::create(out).unwrap();
        let flooder = flooders.start_to(
            std::process::Command::new(env!("CARGO_BIN_EXE_dfut-test-flood")).args([
                &worker.to_string(),
                "16",
                "20",
            ]),
            file,
        );
        cap.add(flooder);
    }
    let (flooded, flooded_suspect) = probe(&rt, Duration::from_secs(20));
    let after = rss(pid);
    flooders.wait_all(LIMIT);
    let (mut attempts, mut refused, mut unanswered, mut accepted) = (0u64, 0u64, 0u64, 0u64);
    for out in &outputs {
        let text = std::fs::read_to_string(out).unwrap();
        let field = |name: &str| -> u64 {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {text:?}"))
        };
        attempts += field("attempts=");
        refused += field("refused=");
        unanswered += field("unanswered=");
        accepted += field("accepted=");
    }
    eprintln!(
        "probes every 1 ms: calm p50 {} µs p99 {} µs ({} probes); under a flood of {attempts} \
         wrong-credential attempts ({refused} refused, {unanswered} unanswered in 2 s) p50 {} µs p99 {} µs ({} probes); worker \
         memory {} MiB -> {} MiB",
        percentile(&calm, 0.5),
        percentile(&calm, 0.99),
        calm.len(),
        percentile(&flooded, 0.5),
        percentile(&flooded, 0.99),
        flooded.len(),
        before >> 20,
        after >> 20
    );
    assert!(attempts >= 1000, "a flood: {attempts} attempts");
    assert_eq!(accepted, 0, "a wrong credential was accepted");
    assert_eq!(flooded_suspect, 0, "the worker was seen suspect");
    assert!(
        after < before + (100 << 20),
        "worker memory grew from {before} to {after} bytes"
    );
}
