//! Criterion benches of fine-grained tasks on a local cluster of 2 worker
//! processes: W1 (no-op throughput), W2 (round-trip latency) and W3
//! (dependency chain), W4 (32 small matrix products, next to faer called
//! directly) and W5 (map-reduce word count over 64 MiB), as the README's
//! "Benchmarks" section defines them.

#![allow(clippy::unwrap_used)] // a failed bench run should stop loudly

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dfut_benches::matmul::{direct_small, w4_product};
use dfut_benches::wordcount::{SYNTHETIC_SEED, count_synthetic, merge_counts};
use dfut_benches::{noop, w1, w3};

fn cluster() -> dfut::Runtime {
    dfut::Runtime::builder()
        .workers(2)
        .worker_program(env!("CARGO_BIN_EXE_dfut-bench-worker"))
        .start()
        .unwrap_or_else(|e| panic!("cluster did not start: {e}"))
}

fn tasks(c: &mut Criterion) {
    let rt = cluster();
    let _g = rt.enter();

    let mut g = c.benchmark_group("w1_noop_throughput");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(20);
    g.bench_function("10k_tasks", |b| b.iter(|| w1(10_000).unwrap()));
    g.finish();

    let mut g = c.benchmark_group("w2_round_trip");
    g.bench_function("submit_then_get", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            noop(i).get().unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("w3_dependency_chain");
    g.throughput(Throughput::Elements(1_000));
    g.sample_size(20);
    g.bench_function("chain_1000", |b| b.iter(|| w3(1_000).unwrap()));
    g.finish();

    let mut g = c.benchmark_group("w4_matmul_256x32");
    g.sample_size(10);
    g.throughput(Throughput::Elements(32));
    g.bench_function("dfut_cpu_workers", |b| {
        b.iter(|| {
            let fs: Vec<_> = (0..32u64).map(|s| w4_product(s, 256)).collect();
            fs.iter().map(|f| f.get().unwrap()).sum::<f64>()
        })
    });
    g.bench_function("direct_faer", |b| b.iter(|| direct_small(32, 256, 2)));
    g.finish();

    let mut g = c.benchmark_group("w5_wordcount");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(64 << 20));
    g.bench_function("64_maps_fan_in_4", |b| {
        b.iter(|| {
            let job = dfut::MapReduce::new().fan_in(4).progress(false).run(
                0..64u64,
                |i| count_synthetic(i, SYNTHETIC_SEED),
                merge_counts,
            );
            job.result.get().unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, tasks);
criterion_main!(benches);
