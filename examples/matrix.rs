//! Matrix products on a local cluster: a batch of products on CPU workers
//! (faer) and on a GPU worker (wgpu compute shaders), and a product tiled
//! across the cluster, each timed, in GFLOP/s, and checked.
//!
//! `cargo run --release --example matrix -- [--n 512] [--batch 8] [--tiled 1024] [--tile 256]`
//!
//! The GPU worker needs a Vulkan driver (a real GPU's, or Mesa's software
//! `mesa-vulkan-drivers`); `--no-gpu` leaves it out.

use std::time::Instant;

use clap::Parser;
use dfut::WorkerOptions;
use dfut::matrix::{Backend, DistMatrix, Matrix, distributed_matmul};
use dfut_benches::matmul::{flops, product_sum, w4_product, w4_product_gpu};

#[derive(Parser)]
struct Args {
    /// Size of the batched products.
    #[arg(long, default_value_t = 512)]
    n: u32,
    /// Products per batch.
    #[arg(long, default_value_t = 8)]
    batch: u64,
    /// Size of the tiled product.
    #[arg(long, default_value_t = 1024)]
    tiled: usize,
    /// Tile size of the tiled product.
    #[arg(long, default_value_t = 256)]
    tile: usize,
    /// Start no GPU worker.
    #[arg(long)]
    no_gpu: bool,
}

fn main() -> dfut::Result<()> {
    if std::env::var_os("DFUT_ROLE").is_some() {
        let _rt = dfut::init()?; // a worker: serves and never returns
    }
    let args = Args::parse();
    let mut builder = dfut::Runtime::builder()
        .add_worker(WorkerOptions::default().max_concurrent(1))
        .add_worker(WorkerOptions::default().max_concurrent(1));
    if !args.no_gpu {
        builder = builder.add_worker(WorkerOptions::default().max_concurrent(1).gpu(true));
    }
    let rt = builder.start()?;
    let _guard = rt.enter();
    if !args.no_gpu {
        let adapter = dfut::matrix::gpu::GpuContext::new()?;
        println!("gpu adapter: {}", adapter.adapter_name());
    }
    let n = args.n;
    let expected: Vec<f64> = (0..args.batch)
        .map(|s| product_sum(&Backend::Cpu, s, n))
        .collect::<dfut::Result<_>>()?;
    let mut paths = vec![("cpu workers (faer)", false)];
    if !args.no_gpu {
        paths.push(("gpu worker (wgpu)", true));
    }
    for (label, gpu) in paths {
        let start = Instant::now();
        let sums: Vec<_> = (0..args.batch)
            .map(|s| {
                if gpu {
                    w4_product_gpu(s, n)
                } else {
                    w4_product(s, n)
                }
            })
            .collect();
        let sums: Vec<f64> = sums.iter().map(|f| f.get()).collect::<dfut::Result<_>>()?;
        let secs = start.elapsed().as_secs_f64();
        let worst = sums
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0, f64::max);
        println!(
            "{label:<20} {} products of {n}x{n}: {secs:.3} s, {:.1} GFLOP/s, worst relative error of the sums {worst:.1e}",
            args.batch,
            args.batch as f64 * flops(n as usize) / secs / 1e9
        );
    }
    let m = args.tiled;
    let a = Matrix::random(m, m, 7);
    let b = Matrix::random(m, m, 8);
    let start = Instant::now();
    let c = distributed_matmul(
        &DistMatrix::put(a.clone()),
        &DistMatrix::put(b.clone()),
        args.tile,
    )?;
    let tiled = c.future.get()?;
    let secs = start.elapsed().as_secs_f64();
    let diff = tiled.max_abs_diff(&a.matmul(&b)?)?;
    println!(
        "tiled {m}x{m} (tiles of {}): {secs:.3} s, {:.1} GFLOP/s including moving the operands, max difference to a single product {diff:.1e}",
        args.tile,
        flops(m) / secs / 1e9
    );
    Ok(())
}
