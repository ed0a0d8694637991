//! Shared helpers: starting clusters of the test worker program.

use std::time::{Duration, Instant};

/// The worker program built with these tests.
pub const WORKER: &str = env!("CARGO_BIN_EXE_dfut-test-worker");

/// A local cluster of `n` worker processes running the test functions.
pub fn cluster(n: usize) -> dfut::Runtime {
    cluster_with(n, |b| b)
}

/// Like [`cluster`], with the builder adjusted by `f`.
pub fn cluster_with(n: usize, f: impl FnOnce(dfut::Builder) -> dfut::Builder) -> dfut::Runtime {
    let b = dfut::Runtime::builder()
        .workers(n)
        .max_concurrent(2)
        .worker_program(WORKER)
        .heartbeat_timeout(Duration::from_millis(1500));
    f(b).start()
        .unwrap_or_else(|e| panic!("cluster did not start: {e}"))
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A generous bound for any single wait in these tests.
pub const LIMIT: Duration = Duration::from_secs(30);
