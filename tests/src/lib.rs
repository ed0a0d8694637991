//! Remote functions used by the integration tests, linked into both the
//! test binary (the driver) and `dfut-test-worker` (the workers).

use std::time::Duration;

use dfut::DistFuture;

/// Returns its argument.
#[dfut::remote]
pub fn echo(x: u64) -> u64 {
    x
}

/// Adds one.
#[dfut::remote]
pub fn inc(x: u64) -> u64 {
    x + 1
}

/// Adds two numbers.
#[dfut::remote]
pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Panics with `message`.
#[dfut::remote]
pub fn explode(message: String) -> u64 {
    panic!("{message}")
}

/// Fails with an error unless `x` is even.
#[dfut::remote]
pub fn even_only(x: u64) -> Result<u64, String> {
    if x.is_multiple_of(2) {
        Ok(x)
    } else {
        Err(format!("{x} is odd"))
    }
}

/// Sums `inc(i)` for `i` in `0..n` by calling `inc` remotely and waiting.
#[dfut::remote]
pub fn nested_sum(n: u64) -> dfut::Result<u64> {
    let parts: Vec<DistFuture<u64>> = (0..n).map(inc).collect();
    parts.iter().map(|f| f.get()).sum()
}

/// Nests `depth` levels of remote calls, each waiting on the next.
#[dfut::remote]
pub fn deep(depth: u64) -> dfut::Result<u64> {
    if depth == 0 {
        Ok(0)
    } else {
        Ok(deep(depth - 1).get()? + 1)
    }
}

/// Doubles, asynchronously, after awaiting a nested call.
#[dfut::remote]
pub async fn async_double(x: u64) -> dfut::Result<u64> {
    let y = echo(x).await?;
    tokio_free_sleep().await;
    Ok(2 * y)
}

async fn tokio_free_sleep() {
    std::future::ready(()).await
}

/// A vector of `n` bytes, each `fill`: large ones stay on the worker.
#[dfut::remote]
pub fn bytes(n: u64, fill: u8) -> Vec<u8> {
    vec![fill; n as usize]
}

/// Sums a vector of bytes.
#[dfut::remote]
pub fn sum_bytes(v: Vec<u8>) -> u64 {
    v.iter().map(|b| u64::from(*b)).sum()
}

/// Sleeps `ms` milliseconds, then returns `x`.
#[dfut::remote]
pub fn slow_echo(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x
}

/// Like `slow_echo`, re-run up to 3 times if its worker dies.
#[dfut::remote(retries = 3)]
pub fn slow_echo_retried(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x
}

/// The process id of the worker that ran it.
#[dfut::remote]
pub fn worker_pid() -> u32 {
    std::process::id()
}

/// Two remote functions with the same name in different modules.
pub mod first {
    /// Returns 1.
    #[dfut::remote]
    pub fn which() -> u32 {
        1
    }
}

/// See [`first`].
pub mod second {
    /// Returns 2.
    #[dfut::remote]
    pub fn which() -> u32 {
        2
    }
}

/// The process id of the GPU worker that ran it.
#[dfut::remote(gpu)]
pub fn gpu_worker_pid() -> u32 {
    std::process::id()
}

/// `n` bytes made by this worker, with its process id.
#[dfut::remote]
pub fn made_here(n: u64) -> (u32, Vec<u8>) {
    (std::process::id(), vec![7; n as usize])
}

/// The producer's process id and this worker's.
#[dfut::remote]
pub fn consumed_where(made: (u32, Vec<u8>)) -> (u32, u32) {
    (made.0, std::process::id())
}

/// Sleeps `ms` milliseconds, then returns the process id of its worker.
#[dfut::remote]
pub fn slow_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Sums a list of numbers (a reduce step).
#[dfut::remote(retries = 2)]
pub fn sum_many(parts: dfut::Many<u64>) -> u64 {
    parts.iter().sum()
}

/// Multiplies on whatever backend the task gets; says which.
#[dfut::remote(gpu)]
pub fn gpu_matmul(
    a: dfut::matrix::Matrix,
    b: dfut::matrix::Matrix,
) -> dfut::Result<(String, dfut::matrix::Matrix)> {
    let backend = dfut::matrix::Backend::current();
    Ok((backend.name(), backend.matmul(&a, &b)?))
}

/// The GPU context of this process, if one can be opened; a test that
/// needs it skips without one, except where `DFUT_REQUIRE_GPU=1` (CI) makes
/// a missing adapter a failure.
pub fn gpu_or_skip(test: &str) -> Option<dfut::matrix::gpu::GpuContext> {
    match dfut::matrix::gpu::GpuContext::new() {
        Ok(ctx) => Some(ctx),
        Err(e) if std::env::var("DFUT_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("{test}: DFUT_REQUIRE_GPU=1 but {e}")
        }
        Err(e) => {
            eprintln!("{test}: skipped, {e}");
            None
        }
    }
}
