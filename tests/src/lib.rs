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

/// A setting that is not a number, with the parse error as its source.
#[derive(Debug)]
pub struct SettingError {
    text: String,
    source: std::num::ParseIntError,
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "setting {:?} is not a number", self.text)
    }
}

impl std::error::Error for SettingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Parses `text` as a number; fails with a [`SettingError`] (which has a
/// source) otherwise.
#[dfut::remote]
pub fn parse_setting(text: String) -> Result<u64, SettingError> {
    text.parse().map_err(|source| SettingError { text, source })
}

/// Sums `inc(i)` for `i` in `0..n` by calling `inc` remotely and waiting.
#[dfut::remote]
pub fn nested_sum(n: u64) -> dfut::Result<u64> {
    let parts: Vec<DistFuture<u64>> = (0..n).map(inc).collect();
    parts.iter().map(|f| f.get()).sum()
}

/// Adds one to the count and appends this worker's host identity
/// (`DFUT_HOST_ID`) to the trail: a chain of these shows which hosts ran it.
#[dfut::remote]
pub fn hop(state: (u64, Vec<String>)) -> (u64, Vec<String>) {
    let (count, mut trail) = state;
    trail.push(std::env::var("DFUT_HOST_ID").unwrap_or_default());
    (count + 1, trail)
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

/// Recursive Fibonacci, each call two nested remote calls waited on with a
/// blocking `get()`: the classic nested-task deadlock test.
#[dfut::remote]
pub fn fib(n: u64) -> dfut::Result<u64> {
    if n < 2 {
        return Ok(n);
    }
    let a = fib(n - 1);
    let b = fib(n - 2);
    Ok(a.get()? + b.get()?)
}

/// An async parent awaiting `n` children.
#[dfut::remote]
pub async fn async_parent(n: u64) -> dfut::Result<u64> {
    let children: Vec<_> = (0..n).map(inc).collect();
    let mut sum = 0;
    for c in children {
        sum += c.await?;
    }
    Ok(sum)
}

/// A parent that waits on `n` children, each of which waits on one
/// grandchild of its own.
#[dfut::remote]
pub fn wide_parent(n: u64) -> dfut::Result<u64> {
    let children: Vec<_> = (0..n).map(nested_sum_one).collect();
    children.iter().map(|c| c.get()).sum()
}

/// Waits on one nested call of `inc(x)`.
#[dfut::remote]
pub fn nested_sum_one(x: u64) -> dfut::Result<u64> {
    inc(x).get()
}

/// Usually returns at once (and so runs inline on its worker's reader);
/// when `block_ms > 0` it first blocks that long in a nested wait on a
/// remote sleep.
#[dfut::remote]
pub fn mostly_quick(x: u64, block_ms: u64) -> dfut::Result<u64> {
    if block_ms > 0 {
        slow_echo(0, block_ms).get()?;
    }
    Ok(x)
}

/// Sleeps `ms` milliseconds (a plain blocking sleep, no nested call) unless
/// `ms` is 0.
#[dfut::remote]
pub fn sometimes_sleeps(x: u64, ms: u64) -> u64 {
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
    x
}

/// After `ms` milliseconds creates the file at `path` (a side effect to
/// observe a detached call by).
#[dfut::remote]
pub fn touch_after(path: String, ms: u64) -> bool {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(&path, b"done").is_ok()
}

/// Spins until cancelled (or `limit_ms` passes); returns whether it saw the
/// cancellation, and writes that to `path` (the owner discards results of
/// cancelled calls).
#[dfut::remote]
pub fn until_cancelled(path: String, limit_ms: u64) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(limit_ms) {
        if dfut::cancelled() {
            let _ = std::fs::write(&path, b"cancelled");
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = std::fs::write(&path, b"ran out");
    false
}

/// Waits until the file at `path` exists (or `limit_ms` passes); whether
/// it appeared. A gate a test opens by creating the file.
#[dfut::remote]
pub fn hold_until(path: String, limit_ms: u64) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(limit_ms) {
        if std::path::Path::new(&path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Prints a line to standard output and one to standard error, logs a
/// `tracing` warning, and returns its worker's process id.
#[dfut::remote]
pub fn chatty(n: u64) -> u32 {
    println!("chatty {n} says hello");
    eprintln!("chatty {n} complains");
    tracing::warn!("chatty {n} warns");
    std::process::id()
}

/// Logs a `tracing` warning from an async task.
#[dfut::remote]
pub async fn chatty_async(n: u64) -> u64 {
    tokio::task::yield_now().await;
    tracing::warn!("chatty async {n} warns");
    n
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

/// Waits (up to 20 s) until `n` calls with this `key` are running at once
/// on this worker; whether they met. Two calls meet only if two slots are
/// free for them at the same time.
#[dfut::remote]
pub fn meet(key: u64, n: u32) -> bool {
    static ARRIVED: std::sync::Mutex<Vec<(u64, u32)>> = std::sync::Mutex::new(Vec::new());
    let count = |add: u32| {
        let mut arrived = ARRIVED.lock().unwrap_or_else(|p| p.into_inner());
        let at = match arrived.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                arrived.push((key, 0));
                arrived.len() - 1
            }
        };
        arrived[at].1 += add;
        arrived[at].1
    };
    count(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(0) < n {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
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

/// When a task ran: its worker's process id, and its start and end in
/// microseconds since the Unix epoch.
pub type Span = (u32, u64, u64);

fn span_of(ms: u64) -> Span {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    };
    let start = now();
    std::thread::sleep(Duration::from_millis(ms));
    (std::process::id(), start, now())
}

/// Sleeps `ms` milliseconds holding one CPU: when and where it ran.
#[dfut::remote]
pub fn span(ms: u64) -> Span {
    span_of(ms)
}

/// Sleeps `ms` milliseconds holding one unit of the custom resource
/// `disk`.
#[dfut::remote(resources(disk = 1))]
pub fn disk_span(ms: u64) -> Span {
    span_of(ms)
}

/// Sleeps `ms` milliseconds holding two CPUs.
#[dfut::remote(cpus = 2)]
pub fn wide_span(ms: u64) -> Span {
    span_of(ms)
}

/// Holding two CPUs, waits for `children` two-CPU children: the slots it
/// lends while waiting let them run on its own worker too. Returns how
/// many finished.
#[dfut::remote(cpus = 2)]
pub fn two_cpu_parent(children: u32) -> Result<u32, String> {
    let spans: Vec<_> = (0..children).map(|_| wide_span(20)).collect();
    let mut done = 0;
    for s in spans {
        s.get().map_err(|e| e.to_string())?;
        done += 1;
    }
    Ok(done)
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

/// Sleeps `ms` milliseconds without looking at its deadline of 300 ms.
#[dfut::remote(timeout_ms = 300)]
pub fn naps(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x
}

/// An async sleep of `ms` milliseconds, with a deadline of 300 ms.
#[dfut::remote(timeout_ms = 300)]
pub async fn naps_async(x: u64, ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    x
}

/// Spins until `dfut::cancelled()` turns true (its 200 ms deadline passed)
/// or 30 s pass, then writes whether it saw it to `path`.
#[dfut::remote(timeout_ms = 200)]
pub fn watches_its_deadline(path: String) -> bool {
    let start = std::time::Instant::now();
    while !dfut::cancelled() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let saw = dfut::cancelled();
    let _ = std::fs::write(&path, if saw { "saw" } else { "missed" });
    saw
}

/// Counts its runs in the file at `path`; the first `failures` runs fail
/// (odd runs panic, even runs return `Err`), later ones return the run's
/// number. Retried on error up to 3 times.
#[dfut::remote(retries = 3, retry_on_error)]
pub fn flaky(path: String, failures: u64) -> Result<u64, String> {
    let runs = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    std::fs::write(&path, runs.to_string()).map_err(|e| e.to_string())?;
    if runs > failures {
        Ok(runs)
    } else if runs % 2 == 1 {
        panic!("run {runs} panics")
    } else {
        Err(format!("run {runs} fails"))
    }
}

/// Aborts the worker process that runs it; retried (up to 10 times) when
/// its worker dies.
#[dfut::remote(retries = 10)]
pub fn aborts_its_worker() -> u32 {
    std::process::abort()
}

/// Sleeps `ms` milliseconds, then returns `i * 3 + 1` (the fault suite's
/// independent task).
#[dfut::remote]
pub fn chaos_task(i: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    i * 3 + 1
}

/// The start of a chain of stored results: 10,000 numbers from `seed`
/// (80 KB: kept on the worker, not sent back inline).
#[dfut::remote]
pub fn chain_start(seed: u64) -> Vec<u64> {
    (0..10_000).map(|k| seed + k).collect()
}

/// One link of a chain: every number plus one.
#[dfut::remote]
pub fn chain_step(v: Vec<u64>) -> Vec<u64> {
    v.into_iter().map(|x| x + 1).collect()
}

/// The sum of a chain's numbers.
#[dfut::remote]
pub fn chain_sum(v: Vec<u64>) -> u64 {
    v.iter().sum()
}

/// The total length of its parts.
#[dfut::remote]
pub fn total_len(parts: dfut::Many<Vec<u8>>) -> u64 {
    parts.iter().map(|p| p.len() as u64).sum()
}

/// The start of a chain whose links say which worker made them: this
/// worker's process id and 10,000 numbers from `seed` (80 KB: kept on
/// the worker).
#[dfut::remote]
pub fn pid_chain_start(seed: u64) -> (u32, Vec<u64>) {
    (std::process::id(), (0..10_000).map(|k| seed + k).collect())
}

/// One link of such a chain: every number plus one, made here.
#[dfut::remote]
pub fn pid_chain_step(link: (u32, Vec<u64>)) -> (u32, Vec<u64>) {
    (
        std::process::id(),
        link.1.into_iter().map(|x| x + 1).collect(),
    )
}

/// The process id of the worker that made a link.
#[dfut::remote]
pub fn made_by(link: (u32, Vec<u64>)) -> u32 {
    link.0
}

/// Sums bytes read in place, on a GPU worker (a way to place readers on
/// chosen workers in tests).
#[dfut::remote(gpu)]
pub fn gpu_host_sum(v: dfut::Archived<Vec<u8>>) -> u64 {
    v.iter().map(|b| u64::from(*b)).sum()
}

/// Panics with `message` after an await.
#[dfut::remote]
pub async fn panics_async(message: String) -> u64 {
    tokio::task::yield_now().await;
    panic!("{message}")
}

/// The length of a byte vector, re-run once if its worker dies (so its
/// result is kept rebuildable: its record, argument included, is lineage).
#[dfut::remote(retries = 1)]
pub fn rebuildable_len(bytes: Vec<u8>) -> u64 {
    bytes.len() as u64
}
