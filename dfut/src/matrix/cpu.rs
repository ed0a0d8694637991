//! The CPU path: faer for products, plain loops for element-wise work.

use faer::{Accum, MatMut, MatRef, Par};

use super::{Elementwise, Matrix, MatrixRef};

/// Products of at least this many multiply-adds use every core.
const PARALLEL_FROM: usize = 192 * 192 * 192;

/// `a * b`, shapes checked by the caller (the result's size included); an
/// allocation the system refuses is an error, not an abort.
pub(super) fn matmul(a: &MatrixRef<'_>, b: &MatrixRef<'_>) -> crate::Result<Matrix> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let mut out = zeros(m * n).ok_or_else(|| {
        crate::Error::Config(format!("multiply: no memory for a {m}x{n} result").into())
    })?;
    if m > 0 && n > 0 && k > 0 {
        let lhs = MatRef::from_row_major_slice(a.as_slice(), m, k);
        let rhs = MatRef::from_row_major_slice(b.as_slice(), k, n);
        let dst = MatMut::from_row_major_slice_mut(&mut out, m, n);
        let par = if m * k * n >= PARALLEL_FROM {
            Par::rayon(0)
        } else {
            Par::Seq
        };
        faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, par);
    }
    Ok(Matrix {
        rows: a.rows,
        cols: b.cols,
        data: out,
    })
}

pub(super) fn elementwise(a: &MatrixRef<'_>, b: &MatrixRef<'_>, kind: Elementwise) -> Matrix {
    let f = match kind {
        Elementwise::Add => |x: f32, y: f32| x + y,
        Elementwise::Sub => |x: f32, y: f32| x - y,
        Elementwise::Mul => |x: f32, y: f32| x * y,
    };
    Matrix {
        rows: a.rows,
        cols: a.cols,
        data: a.data.iter().zip(b.data).map(|(x, y)| f(*x, *y)).collect(),
    }
}

pub(super) fn scale(a: &MatrixRef<'_>, factor: f32) -> Matrix {
    Matrix {
        rows: a.rows,
        cols: a.cols,
        data: a.data.iter().map(|x| x * factor).collect(),
    }
}

pub(super) fn transpose(a: &MatrixRef<'_>) -> Matrix {
    Matrix::from_fn(a.cols(), a.rows(), |r, c| a.data[c * a.cols() + r])
}

/// `n` zeros, or `None` if the allocator refuses: like `vec![0f32; n]`
/// (the zeroed pages come from the system, untouched until written), but
/// an allocation failure is an answer, not an abort.
fn zeros(n: usize) -> Option<Vec<f32>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(n).ok()?;
    // SAFETY: the layout's size is not zero (n > 0, f32 is 4 bytes).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of
    // `[f32; n]`, so capacity `n` matches it; its `n` elements are zeroed,
    // and all-zero bytes are a valid `f32` (0.0).
    Some(unsafe { Vec::from_raw_parts(ptr, n, n) })
}
