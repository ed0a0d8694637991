//! The matrix path: every operation on the CPU (faer) and on the GPU (the
//! real WGSL shaders through wgpu; software Vulkan where there is no GPU),
//! odd shapes, shape errors, and the product tiled across workers.
//!
//! Tolerance: an f32 dot product of length k accumulates a rounding error
//! of at most about k * 2^-24 times the sum of |a_i * b_i| (<= k here, as
//! inputs are in [-1, 1)); the two paths sum in different orders, so they
//! may differ by twice that. `tol(k) = 2 * k * k * 2^-24`, at least 1e-5,
//! is that bound; in practice differences are far smaller.

use dfut::matrix::{Backend, DistMatrix, Matrix, distributed_matmul};
use dfut::{Error, WorkerOptions};
use dfut_tests::{gpu_matmul, gpu_or_skip};

use crate::util::{LIMIT, WORKER, cluster, eventually};

fn tol(k: usize) -> f32 {
    (2.0 * (k * k) as f32 * f32::EPSILON / 2.0).max(1e-5)
}

/// A plain triple loop in f64: the reference the fast paths are checked
/// against.
fn reference_matmul(a: &Matrix, b: &Matrix) -> Matrix {
    Matrix::from_fn(a.rows(), b.cols(), |r, c| {
        (0..a.cols())
            .map(|i| f64::from(a.get(r, i).unwrap()) * f64::from(b.get(i, c).unwrap()))
            .sum::<f64>() as f32
    })
}

const SHAPES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (1, 7, 1),
    (1, 1, 33),
    (257, 131, 97),
    (64, 64, 64),
];

fn check_all_ops(backend: &Backend) {
    for (i, (m, k, n)) in SHAPES.into_iter().enumerate() {
        let a = Matrix::random(m, k, 10 + i as u64);
        let b = Matrix::random(k, n, 20 + i as u64);
        let c = backend.matmul(&a, &b).unwrap();
        assert_eq!(c.shape(), (m, n));
        let err = c.max_abs_diff(&reference_matmul(&a, &b)).unwrap();
        assert!(
            err <= tol(k),
            "{} {m}x{k}x{n}: error {err} > {}",
            backend.name(),
            tol(k)
        );

        let x = Matrix::random(m, k, 30 + i as u64);
        let exact = |f: fn(f32, f32) -> f32| {
            Matrix::from_fn(m, k, |r, c| f(a.get(r, c).unwrap(), x.get(r, c).unwrap()))
        };
        // Element-wise results are exact in f32: one rounding, same order.
        assert_eq!(backend.add(&a, &x).unwrap(), exact(|p, q| p + q));
        assert_eq!(backend.sub(&a, &x).unwrap(), exact(|p, q| p - q));
        assert_eq!(backend.hadamard(&a, &x).unwrap(), exact(|p, q| p * q));
        assert_eq!(
            backend.scale(&a, -2.5).unwrap(),
            Matrix::from_fn(m, k, |r, c| -2.5 * a.get(r, c).unwrap())
        );
        let t = backend.transpose(&a).unwrap();
        assert_eq!(t.shape(), (k, m));
        assert!((0..m).all(|r| (0..k).all(|c| t.get(c, r) == a.get(r, c))));
    }
}

fn check_shape_errors(backend: &Backend) {
    let a = Matrix::random(2, 3, 1);
    let b = Matrix::random(4, 5, 2);
    let err = backend.matmul(&a, &b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot multiply a 2x3 matrix and a 4x5 matrix"
    );
    assert!(matches!(
        backend.add(&a, &b),
        Err(Error::Shape {
            left: (2, 3),
            right: (4, 5),
            ..
        })
    ));
    assert!(matches!(backend.sub(&a, &b), Err(Error::Shape { .. })));
    assert!(matches!(backend.hadamard(&a, &b), Err(Error::Shape { .. })));
    assert!(matches!(
        Matrix::new(2, 2, vec![1.0; 3]),
        Err(Error::Config(_))
    ));
}

#[test]
fn cpu_operations_match_the_reference_and_refuse_bad_shapes() {
    check_all_ops(&Backend::Cpu);
    check_shape_errors(&Backend::Cpu);
}

#[test]
fn gpu_shaders_match_the_reference_and_refuse_bad_shapes() {
    let Some(ctx) = gpu_or_skip("gpu_shaders") else {
        return;
    };
    let gpu = Backend::Gpu(std::sync::Arc::new(ctx));
    assert!(gpu.name().starts_with("gpu ("), "{}", gpu.name());
    check_all_ops(&gpu);
    check_shape_errors(&gpu);
    // The GPU and faer agree on a larger product too.
    let a = Matrix::random(300, 200, 5);
    let b = Matrix::random(200, 150, 6);
    let diff = gpu
        .matmul(&a, &b)
        .unwrap()
        .max_abs_diff(&Backend::Cpu.matmul(&a, &b).unwrap())
        .unwrap();
    assert!(diff <= tol(200), "{diff}");
}

#[test]
fn gpu_tasks_run_their_shaders_on_the_gpu_worker() {
    if gpu_or_skip("gpu_tasks").is_none() {
        return;
    }
    let rt = dfut::Runtime::builder()
        .worker_program(WORKER)
        .add_worker(WorkerOptions::default().max_concurrent(2))
        .add_worker(WorkerOptions::default().max_concurrent(2).gpu(true))
        .start()
        .unwrap();
    let _g = rt.enter();
    let a = Matrix::random(33, 17, 1);
    let b = Matrix::random(17, 9, 2);
    let (backend, c) = gpu_matmul(a.clone(), b.clone()).get_timeout(LIMIT).unwrap();
    assert!(backend.starts_with("gpu ("), "{backend}");
    assert!(c.max_abs_diff(&reference_matmul(&a, &b)).unwrap() <= tol(17));
}

#[test]
fn no_tile_of_a_tiled_product_comes_through_the_driver() {
    let rt = cluster(3);
    let _g = rt.enter();
    // 192x192 tiles of f32: 144 KiB each, over the 64 KiB sent inline.
    let (a, b) = (Matrix::random(384, 256, 1), Matrix::random(256, 384, 2));
    let before = rt.client().stats();
    let c = distributed_matmul(
        &DistMatrix::put(a.clone()),
        &DistMatrix::put(b.clone()),
        192,
    )
    .unwrap();
    assert!(eventually(LIMIT, || c.future.is_ready()));
    let after = rt.client().stats();
    assert_eq!(
        (after.fetched_bytes, after.shared_bytes),
        (before.fetched_bytes, before.shared_bytes),
        "tile bytes reached the driver before it asked for the product"
    );
    let product = c.future.get_timeout(LIMIT).unwrap();
    assert!(product.max_abs_diff(&a.matmul(&b).unwrap()).unwrap() <= tol(256));
    let fetched = rt.client().stats();
    assert!(
        fetched.fetched_bytes + fetched.shared_bytes >= 384 * 384 * 4,
        "the product itself is counted: {fetched:?}"
    );
}

#[test]
fn the_tiled_product_equals_the_single_product_for_odd_shapes() {
    let rt = cluster(3);
    let _g = rt.enter();
    for (m, k, n, tile) in [
        (257, 131, 97, 64),
        (64, 64, 64, 64),
        (5, 3, 7, 2),
        (1, 1, 1, 16),
        (100, 1, 100, 33),
    ] {
        let a = Matrix::random(m, k, m as u64);
        let b = Matrix::random(k, n, n as u64);
        let c = distributed_matmul(
            &DistMatrix::put(a.clone()),
            &DistMatrix::put(b.clone()),
            tile,
        )
        .unwrap();
        assert_eq!((c.rows, c.cols), (m, n));
        let tiled = c.future.get_timeout(LIMIT).unwrap();
        let single = a.matmul(&b).unwrap();
        assert!(
            tiled.max_abs_diff(&single).unwrap() <= tol(k),
            "{m}x{k}x{n} tile {tile}"
        );
    }
    let bad = distributed_matmul(
        &DistMatrix::put(Matrix::random(3, 4, 1)),
        &DistMatrix::put(Matrix::random(5, 6, 2)),
        2,
    );
    assert!(matches!(
        bad,
        Err(Error::Shape {
            left: (3, 4),
            right: (5, 6),
            ..
        })
    ));
}

#[test]
fn a_gpu_matrix_task_without_gpu_workers_has_no_eligible_worker() {
    let rt = cluster(2);
    let _g = rt.enter();
    let r = gpu_matmul(Matrix::random(2, 2, 1), Matrix::random(2, 2, 2)).get_timeout(LIMIT);
    assert!(
        matches!(r, Err(Error::NoEligibleWorker(ref m)) if m.contains("needs a GPU")),
        "{r:?}"
    );
}

#[test]
fn a_gpu_worker_without_a_usable_adapter_fails_at_start() {
    // Point the Vulkan loader at no driver at all.
    let started = dfut::Runtime::builder()
        .worker_program(WORKER)
        .add_worker(WorkerOptions::default().gpu(true))
        .worker_env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .worker_env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .start();
    match started {
        Err(Error::Process(m)) => assert!(m.contains("exited before registering"), "{m}"),
        other => panic!("expected the GPU worker to fail at start, got {other:?}"),
    }
}
