//! Workload W4: matrix products through dfut (CPU path with faer, GPU path
//! with wgpu) and the same products called directly, for comparison.

use std::time::{Duration, Instant};

use dfut::Archived;
use dfut::matrix::{Backend, Matrix};

/// Flops of an `n x n` product.
pub fn flops(n: usize) -> f64 {
    2.0 * (n as f64).powi(3)
}

/// Generates two `n x n` matrices from `seed`, multiplies them on
/// `backend`, returns the sum of the product.
pub fn product_sum(backend: &Backend, seed: u64, n: u32) -> dfut::Result<f64> {
    let n = n as usize;
    let a = Matrix::random(n, n, seed);
    let b = Matrix::random(n, n, seed ^ 0x5eed);
    Ok(backend.matmul(&a, &b)?.sum())
}

/// W4 small task on a CPU worker.
#[dfut::remote]
pub fn w4_product(seed: u64, n: u32) -> dfut::Result<f64> {
    product_sum(&Backend::current(), seed, n)
}

/// W4 small task on a GPU worker.
#[dfut::remote(gpu)]
pub fn w4_product_gpu(seed: u64, n: u32) -> dfut::Result<f64> {
    product_sum(&Backend::current(), seed, n)
}

/// Two `n x n` random matrices, made on the worker (they stay there).
#[dfut::remote]
pub fn w4_random(n: u32) -> (Matrix, Matrix) {
    let n = n as usize;
    (Matrix::random(n, n, 1), Matrix::random(n, n, 2))
}

/// Two `n x n` random matrices, made on a GPU worker (they stay there).
#[dfut::remote(gpu)]
pub fn w4_random_gpu(n: u32) -> (Matrix, Matrix) {
    let n = n as usize;
    (Matrix::random(n, n, 1), Matrix::random(n, n, 2))
}

/// The product of a pair of matrices, read in place from the worker's
/// store; the product stays on the worker.
#[dfut::remote]
pub fn w4_multiply(pair: Archived<(Matrix, Matrix)>) -> dfut::Result<Matrix> {
    Backend::current().matmul(&pair.0, &pair.1)
}

/// The product of a pair of matrices on a GPU worker, kept there.
#[dfut::remote(gpu)]
pub fn w4_multiply_gpu(pair: Archived<(Matrix, Matrix)>) -> dfut::Result<Matrix> {
    Backend::current().matmul(&pair.0, &pair.1)
}

/// The product of two matrices sent by the driver, read in place.
#[dfut::remote]
pub fn w4_multiply_sent(a: Archived<Matrix>, b: Archived<Matrix>) -> dfut::Result<Matrix> {
    Backend::current().matmul(&*a, &*b)
}

/// Runs `count` small products directly on `threads` threads of this
/// process (no dfut); returns the elapsed time.
pub fn direct_small(count: u64, n: u32, threads: usize) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            s.spawn(move || {
                for seed in (t..count).step_by(threads) {
                    let _ = std::hint::black_box(product_sum(&Backend::Cpu, seed, n));
                }
            });
        }
    });
    start.elapsed()
}

/// One large product directly in this process; returns the product time.
pub fn direct_large(n: usize) -> dfut::Result<Duration> {
    let a = Matrix::random(n, n, 1);
    let b = Matrix::random(n, n, 2);
    let start = Instant::now();
    let c = Backend::Cpu.matmul(&a, &b)?;
    let took = start.elapsed();
    std::hint::black_box(c);
    Ok(took)
}
