//! The scheduling experiment, on a real local cluster.
//!
//! Four worker processes of mixed hardware: two hardware
//! generations, one GPU-enabled worker, and one straggler with injected
//! random delays. The same mixed workload (many tiny tasks interleaved with
//! coarse matrix products, some of them GPU tasks) runs under every
//! placement policy. For each it prints makespan, throughput, p50/p99 task
//! latency, tasks per worker, and the ratio of the makespan to an offline
//! lower bound computed from the recorded task durations; it writes the
//! comparison as an SVG chart into the folder given with `--out`.
//!
//! `cargo run --release --example scheduling_experiment -- --out results/`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use dfut::{DistFuture, WorkerOptions};
#[path = "common/bars.rs"]
mod bars;

#[derive(Parser)]
struct Args {
    /// Folder for the chart (created if missing).
    #[arg(long, default_value = "scheduling-results")]
    out: PathBuf,
    /// Tiny tasks per run.
    #[arg(long, default_value_t = 3000)]
    tiny: usize,
    /// Coarse CPU matrix tasks per run.
    #[arg(long, default_value_t = 96)]
    coarse: usize,
    /// Coarse GPU matrix tasks per run.
    #[arg(long, default_value_t = 24)]
    gpu: usize,
    /// Matrix size of the coarse tasks.
    #[arg(long, default_value_t = 256)]
    n: u32,
    /// Admission window: tasks in flight per worker slot (the library
    /// default is 32; coarse work balances better with a small window).
    #[arg(long, default_value_t = 2)]
    window: u32,
    /// Re-execute stragglers speculatively.
    #[arg(long)]
    speculate: bool,
    /// Policies to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = dfut::scheduler::POLICY_NAMES)]
    policies: Vec<String>,
}

/// What each task reports: the worker's process id and the task's own run
/// time in nanoseconds (without queueing or injected delay).
type Report = (u32, u64);

/// A tiny task: a few microseconds of arithmetic.
#[dfut::remote]
fn tiny(i: u64) -> Report {
    let start = Instant::now();
    let mut x = i;
    for _ in 0..2_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    std::hint::black_box(x);
    (std::process::id(), start.elapsed().as_nanos() as u64)
}

/// `n x n` matrix product of two matrices generated from `seed`.
fn product(seed: u64, n: u32) -> f32 {
    let n = n as usize;
    let value = |k: usize| ((seed as usize + k * 2654435761) % 1000) as f32 / 1000.0;
    let a: Vec<f32> = (0..n * n).map(value).collect();
    let b: Vec<f32> = (0..n * n).map(|k| value(k + 7)).collect();
    let mut c = vec![0f32; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c.iter().sum()
}

/// A coarse CPU task.
#[dfut::remote]
fn coarse(seed: u64, n: u32) -> Report {
    let start = Instant::now();
    std::hint::black_box(product(seed, n));
    (std::process::id(), start.elapsed().as_nanos() as u64)
}

/// A coarse task that must run on a GPU worker (the same product; the
/// wgpu path replaces it once the matrix module lands).
#[dfut::remote(gpu)]
fn coarse_gpu(seed: u64, n: u32) -> Report {
    let start = Instant::now();
    std::hint::black_box(product(seed, n));
    (std::process::id(), start.elapsed().as_nanos() as u64)
}

struct Outcome {
    policy: String,
    makespan: Duration,
    p50: Duration,
    p99: Duration,
    per_worker: Vec<usize>,
    bound: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(rt: &dfut::Runtime, args: &Args, pids: &[u32], slots: u32) -> dfut::Result<Outcome> {
    let start = Instant::now();
    let mut futures: Vec<(Instant, DistFuture<Report>)> = Vec::new();
    let coarse_every = args.tiny / args.coarse.max(1);
    let gpu_every = args.tiny / args.gpu.max(1);
    for i in 0..args.tiny {
        futures.push((Instant::now(), tiny(i as u64)));
        if coarse_every > 0 && i % coarse_every == 0 {
            futures.push((Instant::now(), coarse(i as u64, args.n)));
        }
        if gpu_every > 0 && i % gpu_every == 0 {
            futures.push((Instant::now(), coarse_gpu(i as u64, args.n)));
        }
    }
    let done: Vec<(Instant, Instant, Report)> = rt.block_on(async {
        let waits: Vec<_> = futures
            .into_iter()
            .map(|(sent, f)| tokio::spawn(async move { (sent, f.await, Instant::now()) }))
            .collect();
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            let (sent, r, end) = w.await.map_err(|e| dfut::Error::Process(e.to_string()))?;
            out.push((sent, end, r?));
        }
        Ok::<_, dfut::Error>(out)
    })?;
    let end = done.iter().map(|(_, e, _)| *e).max().unwrap_or(start);
    let mut latencies: Vec<Duration> = done.iter().map(|(s, e, _)| *e - *s).collect();
    latencies.sort();
    let per_worker = pids
        .iter()
        .map(|p| done.iter().filter(|(_, _, (pid, _))| pid == p).count())
        .collect();
    let total_work: u64 = done.iter().map(|(_, _, (_, ns))| ns).sum();
    let longest = done.iter().map(|(_, _, (_, ns))| *ns).max().unwrap_or(0);
    let bound = Duration::from_nanos((total_work / u64::from(slots.max(1))).max(longest));
    Ok(Outcome {
        policy: rt.client().policy_name(),
        makespan: end - start,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        per_worker,
        bound,
    })
}

fn chart(outcomes: &[Outcome], path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let labels: Vec<String> = outcomes.iter().map(|o| o.policy.clone()).collect();
    let metric = |f: fn(&Outcome) -> f64| outcomes.iter().map(f).collect::<Vec<f64>>();
    bars::bar_panels(
        path,
        (1000, 420),
        &labels,
        &[
            ("makespan (ms)", metric(|o| o.makespan.as_secs_f64() * 1e3)),
            (
                "p99 task latency (ms)",
                metric(|o| o.p99.as_secs_f64() * 1e3),
            ),
        ],
    )
}

fn num_cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Tasks that can truly run at once: 4 slots, but no more than the cores.
fn parallelism() -> u32 {
    num_cores().min(4)
}

fn main() -> dfut::Result<()> {
    if std::env::var_os("DFUT_ROLE").is_some() {
        let _rt = dfut::init()?; // a worker: serves and never returns
    }
    let mut args = Args::parse();
    let gpu = match dfut::matrix::gpu::GpuContext::new() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("no GPU worker ({e}); running without GPU tasks");
            args.gpu = 0;
            false
        }
    };
    let cpu = |generation| {
        WorkerOptions::default()
            .max_concurrent(1)
            .hw_generation(generation)
    };
    let mut builder = dfut::Runtime::builder()
        .add_worker(cpu(1))
        .add_worker(cpu(2))
        .add_worker(cpu(2).gpu(gpu))
        .add_worker(cpu(1).add_delay(20, 42))
        .window_per_slot(args.window);
    if args.speculate {
        builder = builder.speculation(dfut::Speculation::default());
    }
    let rt = builder.start()?;
    let _guard = rt.enter();
    let pids = rt.worker_pids();
    let labels = ["gen1", "gen2", "gen2+gpu", "gen1+delay"];

    println!(
        "cluster: {} (1 slot each; delay uniform in [0, 20] ms, seed 42); window {}/slot{}",
        labels.join(", "),
        args.window,
        if args.speculate {
            ", speculation on"
        } else {
            ""
        }
    );
    println!(
        "workload: {} tiny + {} coarse CPU + {} coarse GPU tasks ({}x{} products), submitted at once",
        args.tiny, args.coarse, args.gpu, args.n, args.n
    );
    // Warm up: every worker measures its functions once.
    rt.client()
        .set_policy(dfut::scheduler::policy_by_name("round-robin")?);
    let parallel = parallelism();
    run(
        &rt,
        &Args {
            tiny: 200,
            coarse: 4,
            gpu: 2,
            ..Args::parse()
        },
        &pids,
        parallel,
    )?;

    let mut outcomes = Vec::new();
    for name in &args.policies {
        rt.client()
            .set_policy(dfut::scheduler::policy_by_name(name)?);
        outcomes.push(run(&rt, &args, &pids, parallel)?);
    }
    println!(
        "\n{:<13} {:>9} {:>9} {:>8} {:>8} {:>8}  tasks per worker ({})",
        "policy",
        "makespan",
        "tasks/s",
        "p50",
        "p99",
        "vs bound",
        labels.join(" / ")
    );
    let total = outcomes
        .first()
        .map_or(0, |o| o.per_worker.iter().sum::<usize>());
    for o in &outcomes {
        println!(
            "{:<13} {:>7.1}ms {:>9.0} {:>6.2}ms {:>6.2}ms {:>7.2}x  {}",
            o.policy,
            o.makespan.as_secs_f64() * 1e3,
            total as f64 / o.makespan.as_secs_f64(),
            o.p50.as_secs_f64() * 1e3,
            o.p99.as_secs_f64() * 1e3,
            o.makespan.as_secs_f64() / o.bound.as_secs_f64(),
            o.per_worker
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    if let Some(o) = outcomes.first() {
        println!(
            "\nlower bound: max(total task time / {parallel} (4 slots on {} cores), longest task) = {:.1} ms",
            num_cores(),
            o.bound.as_secs_f64() * 1e3
        );
    }
    std::fs::create_dir_all(&args.out).map_err(|e| dfut::Error::Config(dfut::Cause::new(e)))?;
    let path = args.out.join("scheduling.svg");
    chart(&outcomes, &path).map_err(|e| dfut::Error::Config(format!("chart: {e}").into()))?;
    println!("chart: {}", path.display());
    Ok(())
}
