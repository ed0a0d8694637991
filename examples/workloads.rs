//! The standard workloads of DESIGN.md on a local cluster, printed as one
//! JSON object on the last line of stdout so figures compare run to run.
//!
//! `cargo run --release --example workloads -- [w1 w2 w3 w4 w5]` (no names:
//! all that exist). The cluster has 2 worker processes unless `DFUT_WORKERS`
//! says otherwise. Each throughput figure is the median of several runs
//! after a warm-up.

use std::time::{Duration, Instant};

use dfut_benches::wordcount::{
    SYNTHETIC_SEED, count_synthetic, count_text, merge, merge_counts, synthetic_chunk, total,
};
use dfut_benches::{w1, w2, w3};
use serde_json::{Map, Value, json};

// Large objects are allocated and freed at a high rate (W4, W5): mimalloc
// reuses their pages instead of faulting fresh ones in each time. The
// direct faer baseline runs in the same process, with the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KNOWN: [&str; 6] = ["w1", "w2", "w3", "w4", "w5", "w6"];
const RUNS: usize = 5;

/// `x` rounded to `digits` decimals, for readable JSON.
fn rounded(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// W4: 32 small products (256) generated inside the tasks, and one
/// 2048 product of matrices already on the worker; each through dfut and
/// directly with faer in this process.
fn w4(rt: &dfut::Runtime, out: &mut Map<String, Value>) -> dfut::Result<()> {
    use dfut_benches::matmul::{
        direct_large, direct_small, flops, w4_multiply, w4_multiply_gpu, w4_product,
        w4_product_gpu, w4_random, w4_random_gpu,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let small = |gpu: bool| -> dfut::Result<f64> {
        let start = Instant::now();
        let fs: Vec<_> = (0..32u64)
            .map(|s| {
                if gpu {
                    w4_product_gpu(s, 256)
                } else {
                    w4_product(s, 256)
                }
            })
            .collect();
        let mut sums = Vec::with_capacity(fs.len());
        for f in &fs {
            sums.push(f.get()?);
        }
        let rate = 32.0 / start.elapsed().as_secs_f64();
        // Checked outside the timed region: two products against faer here.
        for s in [0u64, 31] {
            let want = dfut_benches::matmul::product_sum(&dfut::matrix::Backend::Cpu, s, 256)?;
            let got = sums[s as usize];
            if (got - want).abs() > 1e-3 * want.abs().max(1.0) {
                return Err(dfut::Error::Decode(
                    format!("w4 small product {s}: sum {got}, expected {want}").into(),
                ));
            }
        }
        Ok(rate)
    };
    small(false)?;
    let rates: Vec<f64> = (0..RUNS)
        .map(|_| small(false))
        .collect::<dfut::Result<_>>()?;
    let dfut_rate = median(rates);
    direct_small(32, 256, threads);
    let direct_rates: Vec<f64> = (0..RUNS)
        .map(|_| 32.0 / direct_small(32, 256, threads).as_secs_f64())
        .collect();
    let direct_rate = median(direct_rates);
    out.insert("w4_small_tasks_per_s".into(), json!(rounded(dfut_rate, 1)));
    out.insert(
        "w4_small_vs_direct".into(),
        json!(rounded(dfut_rate / direct_rate, 3)),
    );
    eprintln!("w4 small: dfut {dfut_rate:.1}/s, direct {direct_rate:.1}/s");

    let n = 2048u32;
    let large = |gpu: bool| -> dfut::Result<f64> {
        let pair = if gpu { w4_random_gpu(n) } else { w4_random(n) };
        // Wait until the operands exist on the worker, then time the product.
        rt.block_on(pair.settled());
        let start = Instant::now();
        let c = if gpu {
            w4_multiply_gpu(&pair)
        } else {
            w4_multiply(&pair)
        };
        rt.block_on(c.settled());
        let took = start.elapsed().as_secs_f64();
        if c.status() != dfut::Status::Finished {
            c.get()?;
        }
        Ok(flops(n as usize) / took / 1e9)
    };
    let dfut_gflops = median((0..3).map(|_| large(false)).collect::<dfut::Result<_>>()?);
    let direct_gflops = median(
        (0..3)
            .map(|_| direct_large(n as usize).map(|d| flops(n as usize) / d.as_secs_f64() / 1e9))
            .collect::<dfut::Result<_>>()?,
    );
    out.insert("w4_large_gflops".into(), json!(rounded(dfut_gflops, 1)));
    out.insert(
        "w4_large_vs_direct".into(),
        json!(rounded(dfut_gflops / direct_gflops, 3)),
    );
    eprintln!("w4 large: dfut {dfut_gflops:.1} GFLOP/s, direct {direct_gflops:.1} GFLOP/s");

    // End to end: the operands sent from here, the product fetched back.
    let a = dfut::matrix::Matrix::random(n as usize, n as usize, 1);
    let b = dfut::matrix::Matrix::random(n as usize, n as usize, 2);
    let reference = dfut::matrix::Backend::Cpu.matmul(&a, &b)?;
    let mut ratios = Vec::new();
    for _ in 0..RUNS {
        let (a2, b2) = (a.clone(), b.clone());
        let start = Instant::now();
        let c = dfut_benches::matmul::w4_multiply_sent(a2, b2).get()?;
        let e2e = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let direct = dfut::matrix::Backend::Cpu.matmul(&a, &b)?;
        let direct_s = start.elapsed().as_secs_f64();
        std::hint::black_box(direct);
        if c.max_abs_diff(&reference)? > 1e-2 {
            return Err(dfut::Error::Decode("w4 e2e: wrong product".into()));
        }
        ratios.push(direct_s / e2e);
    }
    eprintln!("w4 e2e vs direct: {ratios:?}");
    out.insert("w4_e2e_vs_direct".into(), json!(rounded(median(ratios), 3)));
    if rt.client().workers().iter().any(|w| w.gpu) {
        let gpu_gflops = median((0..3).map(|_| large(true)).collect::<dfut::Result<_>>()?);
        out.insert("w4_large_gpu_gflops".into(), json!(rounded(gpu_gflops, 1)));
        let gpu_small = small(true)?;
        out.insert(
            "w4_small_gpu_tasks_per_s".into(),
            json!(rounded(gpu_small, 1)),
        );
        eprintln!("w4 gpu: {gpu_gflops:.1} GFLOP/s large, {gpu_small:.1} small tasks/s");
    }
    Ok(())
}

/// Bytes per second made usable to a reader of `bytes` taking `secs`, in GB/s.
fn gb_per_s(bytes: u64, secs: f64) -> f64 {
    rounded(bytes as f64 / secs / 1e9, 2)
}

/// Seconds each of `RUNS` reads of a 256 MiB object made by a worker took
/// here: fetched or mapped, then summed and checked.
fn w6_read(rt: &dfut::Runtime, what: &str) -> dfut::Result<Vec<f64>> {
    use dfut_benches::objects::{W6_LEN, expected_sum, sum, w6_make};
    let made = w6_make(W6_LEN);
    rt.block_on(made.settled());
    let expected = expected_sum(W6_LEN);
    let mut secs = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let s = sum(made.get_archived()?.as_slice());
        secs.push(start.elapsed().as_secs_f64());
        if s != expected {
            return Err(dfut::Error::Decode(
                format!("w6 {what}: sum {s}, expected {expected}").into(),
            ));
        }
    }
    Ok(secs)
}

/// Seconds each of `RUNS` puts of 100 MB (12.5 million `u64`) from here
/// took, with a task on a worker of this host summing the value: Ray's
/// shared-memory put-and-sum, for comparison.
fn w6_put_sum(rt: &dfut::Runtime) -> dfut::Result<Vec<f64>> {
    use dfut_benches::objects::{expected_sum, w6_sum};
    const LEN: u64 = 100_000_000 / 8;
    let value: Vec<u64> = (0..LEN).collect();
    let expected = expected_sum(LEN);
    let before = rt.client().stats().shared_args_bytes;
    let mut secs = Vec::new();
    for _ in 0..RUNS {
        let v = value.clone();
        let start = Instant::now();
        let put = dfut::put(v);
        let s = w6_sum(&put).get()?;
        secs.push(start.elapsed().as_secs_f64());
        if s != expected {
            return Err(dfut::Error::Decode(
                format!("w6 put and sum: {s}, expected {expected}").into(),
            ));
        }
    }
    if rt.client().stats().shared_args_bytes == before {
        return Err(dfut::Error::Config(
            "w6: the put did not go through shared memory".into(),
        ));
    }
    Ok(secs)
}

/// W6 between processes without shared memory (run with `DFUT_SHM=0`):
/// a 256 MiB argument sent to a task that sums it (after one untimed
/// warm-up run per worker), and a 256 MiB result fetched here and summed.
fn w6_net(rt: &dfut::Runtime, out: &mut Map<String, Value>) -> dfut::Result<()> {
    use dfut_benches::objects::{W6_LEN, expected_sum, w6_sum};
    let bytes = W6_LEN * 8;
    let expected = expected_sum(W6_LEN);
    let value: Vec<u64> = (0..W6_LEN).collect();
    let mut arg = Vec::new();
    // One untimed warm-up run per worker: the first value of a type this
    // thread encodes, and the first one a process receives, land in fresh
    // pages that the kernel must fault in and zero (slow on a VM whose
    // host backs memory lazily). Their times are printed, not counted.
    let workers: Vec<u64> = rt.client().workers().iter().map(|w| w.id).collect();
    for run in 0..workers.len() + RUNS {
        let v = value.clone();
        let start = Instant::now();
        let s = match workers.get(run) {
            Some(&node) => dfut::Options::new()
                .strategy(dfut::Strategy::NodeAffinity { node, soft: false })
                .call(|| w6_sum(v)),
            None => w6_sum(v),
        }
        .get()?;
        arg.push(start.elapsed().as_secs_f64());
        if s != expected {
            return Err(dfut::Error::Decode(
                format!("w6 arg: sum {s}, expected {expected} (run {run})").into(),
            ));
        }
    }
    let warm_up: Vec<f64> = arg.drain(..workers.len()).collect();
    let fetch = w6_read(rt, "fetch")?;
    eprintln!("w6 over QUIC: arg {arg:?} s (warm-up {warm_up:?} s), fetch {fetch:?} s");
    out.insert(
        "w6_arg_gb_per_s".into(),
        json!(gb_per_s(bytes, median(arg))),
    );
    out.insert(
        "w6_fetch_gb_per_s".into(),
        json!(gb_per_s(bytes, median(fetch))),
    );
    Ok(())
}

/// W6 through shared memory: a 256 MiB object made by a worker, mapped
/// and summed here (a second process of the same host), and the same
/// figures over QUIC from a copy of this runner without shared memory.
fn w6(rt: &dfut::Runtime, out: &mut Map<String, Value>) -> dfut::Result<()> {
    use dfut_benches::objects::W6_LEN;
    let before = rt.client().stats().shared_bytes;
    let shm = w6_read(rt, "shm")?;
    if rt.client().stats().shared_bytes == before {
        return Err(dfut::Error::Config(
            "w6: the object was not read through shared memory (is /dev/shm there?)".into(),
        ));
    }
    eprintln!("w6 shared memory: {shm:?} s");
    out.insert(
        "w6_shm_gb_per_s".into(),
        json!(gb_per_s(W6_LEN * 8, median(shm))),
    );
    let put_sum = w6_put_sum(rt)?;
    eprintln!("w6 put and sum of 100 MB: {put_sum:?} s");
    out.insert(
        "w6_put_sum_100mb_s".into(),
        json!(rounded(median(put_sum), 3)),
    );
    // The network figures come from a cluster without shared memory.
    let exe = std::env::current_exe().map_err(|e| dfut::Error::Process(e.to_string()))?;
    let child = std::process::Command::new(exe)
        .arg("w6-net")
        .env("DFUT_SHM", "0")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| dfut::Error::Process(format!("w6-net: {e}")))?;
    let stdout = String::from_utf8_lossy(&child.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let Ok(Value::Object(net)) = serde_json::from_str::<Value>(last) else {
        return Err(dfut::Error::Process(format!("w6-net printed `{last}`")));
    };
    for (k, v) in net.into_iter().filter(|(k, _)| k.starts_with("w6_")) {
        out.insert(k, v);
    }
    Ok(())
}

fn main() -> dfut::Result<()> {
    if std::env::var_os("DFUT_ROLE").is_some() {
        let _rt = dfut::init()?; // a worker: serves and never returns
    }
    let count = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut builder = dfut::Runtime::builder();
    for _ in 0..count("DFUT_WORKERS", 2) {
        builder = builder.add_worker(dfut::WorkerOptions::default());
    }
    // DFUT_GPU_WORKERS=1 adds a GPU worker, for W4's GPU figures.
    for _ in 0..count("DFUT_GPU_WORKERS", 0) {
        builder = builder.add_worker(dfut::WorkerOptions::default().gpu(true));
    }
    let rt = builder.start()?;
    let _guard = rt.enter();
    let asked: Vec<String> = std::env::args().skip(1).collect();
    if asked == ["w6-net"] {
        let mut out = Map::new();
        w6_net(&rt, &mut out)?;
        println!("{}", Value::Object(out));
        return Ok(());
    }
    for name in &asked {
        if !KNOWN.contains(&name.as_str()) {
            eprintln!("unknown or not yet implemented workload `{name}`; known: {KNOWN:?}");
            std::process::exit(2);
        }
    }
    let wants = |w: &str| asked.is_empty() || asked.iter().any(|a| a == w);
    let mut out = Map::new();
    out.insert("workers".into(), json!(rt.client().workers().len()));
    // The machine the figures come from.
    let slots: Vec<u32> = rt
        .client()
        .workers()
        .iter()
        .map(|w| w.max_concurrent)
        .collect();
    out.insert("worker_slots".into(), json!(slots));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    out.insert("cores".into(), json!(cores));
    out.insert("cpu_model".into(), json!(cpu_model()));

    if wants("w1") {
        w1(10_000)?;
        let rates: Vec<f64> = (0..RUNS)
            .map(|_| w1(10_000).map(|d| 10_000.0 / d.as_secs_f64()))
            .collect::<dfut::Result<_>>()?;
        eprintln!(
            "w1: {:?} tasks/s",
            rates.iter().map(|r| *r as u64).collect::<Vec<_>>()
        );
        out.insert("w1_tasks_per_s".into(), json!(median(rates).round()));
    }
    if wants("w2") {
        w2(200)?;
        let mut lat = w2(1_000)?;
        lat.sort();
        let us = |d: Duration| rounded(d.as_secs_f64() * 1e6, 1);
        eprintln!(
            "w2: min {:?} median {:?} p99 {:?}",
            lat[0],
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        out.insert("w2_median_us".into(), json!(us(percentile(&lat, 0.5))));
        out.insert("w2_p99_us".into(), json!(us(percentile(&lat, 0.99))));
    }
    if wants("w3") {
        w3(1_000)?;
        let totals: Vec<f64> = (0..RUNS)
            .map(|_| w3(1_000).map(|d| d.as_secs_f64() * 1e3))
            .collect::<dfut::Result<_>>()?;
        eprintln!("w3: {totals:?} ms");
        let total = median(totals);
        out.insert("w3_total_ms".into(), json!(rounded(total, 2)));
        out.insert(
            "w3_us_per_task".into(),
            json!(rounded(total * 1e3 / 1_000.0, 1)),
        );
    }
    if wants("w4") {
        w4(&rt, &mut out)?;
    }
    if wants("w5") {
        // W5: 64 map tasks, each generating and counting its own 1 MiB of
        // the Zipf corpus; counts merged by a tree reduction of fan-in 4.
        let run_w5 = || {
            let start = Instant::now();
            let job = dfut::MapReduce::new().fan_in(4).progress(false).run(
                0..64u64,
                |i| count_synthetic(i, SYNTHETIC_SEED),
                merge_counts,
            );
            job.result.get().map(|counts| (start.elapsed(), counts))
        };
        run_w5()?;
        let runs: Vec<(Duration, _)> = (0..3).map(|_| run_w5()).collect::<dfut::Result<_>>()?;
        let secs: Vec<f64> = runs.iter().map(|(d, _)| d.as_secs_f64()).collect();
        eprintln!("w5: {secs:?} s");
        let counts = &runs[0].1;
        // The floor: the same job as a plain single-threaded loop here.
        let start = Instant::now();
        let floor = merge((0..64u64).map(|i| count_text(&synthetic_chunk(i, SYNTHETIC_SEED))));
        let floor_s = start.elapsed().as_secs_f64();
        if floor != *counts {
            return Err(dfut::Error::Decode(
                "w5: cluster and floor counts differ".into(),
            ));
        }
        out.insert("w5_s".into(), json!(rounded(median(secs), 3)));
        out.insert("w5_total_words".into(), json!(total(counts)));
        out.insert("w5_distinct_words".into(), json!(counts.len()));
        out.insert("w5_floor_s".into(), json!(rounded(floor_s, 3)));
    }
    if wants("w6") {
        w6(&rt, &mut out)?;
    }
    println!("{}", Value::Object(out));
    Ok(())
}

/// The CPU's model name as the kernel reports it (`model name` in
/// `/proc/cpuinfo`), or `unknown`.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
