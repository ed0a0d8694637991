//! Dense `f32` matrices and their operations, on the CPU (faer) or on a GPU
//! worker's device (wgpu compute shaders, with the `gpu` feature), and a
//! matrix product tiled across the cluster.
//!
//! User code reads the same on both paths: `a.matmul(&b)` runs on the GPU
//! when called inside a `#[remote(gpu)]` task on a GPU worker, and with
//! faer everywhere else ([`Backend::current`]). Shapes that do not fit are
//! an [`Error::Shape`] naming both shapes, never a panic.

mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
mod tiled;

use rkyv::{Archive, Deserialize, Serialize};

pub(crate) use tiled::link;
pub use tiled::{DistMatrix, distributed_matmul};

use crate::{Error, Result};

/// A dense row-major `f32` matrix. Archived with rkyv, so it travels as one
/// contiguous buffer.
///
/// ```
/// use dfut::matrix::Matrix;
///
/// let a = Matrix::new(2, 3, vec![1., 2., 3., 4., 5., 6.])?;
/// let b = a.transpose()?;                       // 3 x 2
/// let c = a.matmul(&b)?;                        // 2 x 2
/// assert_eq!(c.as_slice(), &[14., 32., 32., 77.]);
/// assert!(a.matmul(&a).is_err());               // 2x3 times 2x3 does not fit
/// # Ok::<(), dfut::Error>(())
/// ```
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[rkyv(crate = rkyv, bytecheck(verify))]
pub struct Matrix {
    rows: u32,
    cols: u32,
    data: Vec<f32>,
}

fn dim(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Config(format!("matrix dimension {n} is too large").into()))
}

impl Matrix {
    /// A `rows x cols` matrix from row-major data.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::Config(
                format!(
                    "a {rows}x{cols} matrix needs {} values, got {}",
                    rows.saturating_mul(cols),
                    data.len()
                )
                .into(),
            ));
        }
        Ok(Self {
            rows: dim(rows)?,
            cols: dim(cols)?,
            data,
        })
    }

    /// A matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self::from_fn(rows, cols, |_, _| 0.0)
    }

    /// A matrix whose element `(r, c)` is `f(r, c)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f32) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        // Row by row; a matrix with no columns has no element to visit
        // however many rows it has (no time spent on empty rows).
        if cols > 0 {
            for r in 0..rows {
                for c in 0..cols {
                    data.push(f(r, c));
                }
            }
        }
        Self {
            rows: rows as u32,
            cols: cols as u32,
            data,
        }
    }

    /// A matrix of values uniform in [-1, 1) drawn from `seed` (SplitMix64),
    /// the same on every machine.
    pub fn random(rows: usize, cols: usize, seed: u64) -> Self {
        let mut state = seed;
        Self::from_fn(rows, cols, |_, _| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.view().rows()
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.view().cols()
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        self.view().shape()
    }

    /// The elements, row by row.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The elements, row by row.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Element `(r, c)`, if inside.
    pub fn get(&self, r: usize, c: usize) -> Option<f32> {
        (r < self.rows() && c < self.cols()).then(|| self.data[r * self.cols() + c])
    }

    /// Sum of all elements, in f64.
    pub fn sum(&self) -> f64 {
        self.data.iter().map(|x| f64::from(*x)).sum()
    }

    /// Largest absolute difference to `other`, element by element.
    pub fn max_abs_diff(&self, other: &Matrix) -> Result<f32> {
        check_same("compare", &self.view(), &other.view())?;
        Ok(self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max))
    }

    /// The sub-matrix of `rows x cols` starting at `(r0, c0)`.
    pub fn block(&self, r0: usize, c0: usize, rows: usize, cols: usize) -> Result<Matrix> {
        self.view().block(r0, c0, rows, cols)
    }

    /// `self * rhs`, on the current backend.
    pub fn matmul(&self, rhs: &Matrix) -> Result<Matrix> {
        Backend::current().matmul(self, rhs)
    }

    /// `self + rhs`, element-wise.
    pub fn add(&self, rhs: &Matrix) -> Result<Matrix> {
        Backend::current().add(self, rhs)
    }

    /// `self - rhs`, element-wise.
    pub fn sub(&self, rhs: &Matrix) -> Result<Matrix> {
        Backend::current().sub(self, rhs)
    }

    /// `self * rhs`, element-wise (Hadamard product).
    pub fn hadamard(&self, rhs: &Matrix) -> Result<Matrix> {
        Backend::current().hadamard(self, rhs)
    }

    /// `factor * self`.
    pub fn scale(&self, factor: f32) -> Result<Matrix> {
        Backend::current().scale(self, factor)
    }

    /// The transpose.
    pub fn transpose(&self) -> Result<Matrix> {
        Backend::current().transpose(self)
    }
}

// Archived `f32`s are read in place as `f32`s (see `ArchivedMatrix::view`).
#[cfg(not(target_endian = "little"))]
compile_error!("dfut's matrices are read in place and need a little-endian target");

/// A borrowed matrix: a shape and row-major elements, from a [`Matrix`] or,
/// without a copy, from an archived one ([`crate::Archived<Matrix>`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatrixRef<'a> {
    rows: u32,
    cols: u32,
    data: &'a [f32],
}

impl<'a> MatrixRef<'a> {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows as usize
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols as usize
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows(), self.cols())
    }

    /// The elements, row by row.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// The sub-matrix of `rows x cols` starting at `(r0, c0)`, copied out.
    pub fn block(&self, r0: usize, c0: usize, rows: usize, cols: usize) -> Result<Matrix> {
        let end = |at: usize, n: usize, within: usize| at.checked_add(n).filter(|e| *e <= within);
        let (Some(_), Some(_)) = (end(r0, rows, self.rows()), end(c0, cols, self.cols())) else {
            return Err(Error::Shape {
                op: "cut a block from".into(),
                left: self.shape(),
                right: (r0.saturating_add(rows), c0.saturating_add(cols)),
            });
        };
        let mut data = Vec::with_capacity(rows * cols);
        // (No columns: no element, whatever the rows; no time spent on them.)
        if cols > 0 {
            for r in r0..r0 + rows {
                let start = r * self.cols() + c0;
                data.extend_from_slice(&self.data[start..start + cols]);
            }
        }
        Matrix::new(rows, cols, data)
    }

    /// An owned copy.
    pub fn to_matrix(&self) -> Matrix {
        Matrix {
            rows: self.rows,
            cols: self.cols,
            data: self.data.to_vec(),
        }
    }
}

/// Anything that can be seen as a [`MatrixRef`]: `Matrix`, `MatrixRef`,
/// and the archived `Matrix` a `dfut::Archived<Matrix>` parameter holds.
pub trait AsMatrixRef {
    /// The borrowed view.
    fn as_matrix_ref(&self) -> MatrixRef<'_>;
}

impl AsMatrixRef for Matrix {
    fn as_matrix_ref(&self) -> MatrixRef<'_> {
        MatrixRef {
            rows: self.rows,
            cols: self.cols,
            data: &self.data,
        }
    }
}

impl AsMatrixRef for MatrixRef<'_> {
    fn as_matrix_ref(&self) -> MatrixRef<'_> {
        *self
    }
}

impl AsMatrixRef for ArchivedMatrix {
    fn as_matrix_ref(&self) -> MatrixRef<'_> {
        self.view()
    }
}

impl<T: AsMatrixRef + ?Sized> AsMatrixRef for &T {
    fn as_matrix_ref(&self) -> MatrixRef<'_> {
        (**self).as_matrix_ref()
    }
}

impl ArchivedMatrix {
    /// The archived matrix as a [`MatrixRef`], read in place.
    ///
    /// ```
    /// # let rt = dfut::Runtime::builder().in_process_workers(1).start()?;
    /// # let _guard = rt.enter();
    /// use dfut::Archived;
    /// use dfut::matrix::Matrix;
    ///
    /// #[dfut::remote]
    /// fn trace(m: Archived<Matrix>) -> f32 {
    ///     let v = m.view();                      // no copy of the elements
    ///     (0..v.rows().min(v.cols())).map(|i| v.as_slice()[i * v.cols() + i]).sum()
    /// }
    ///
    /// let m = Matrix::from_fn(3, 3, |r, c| if r == c { 2.0 } else { 9.0 });
    /// assert_eq!(trace(m).get()?, 6.0);
    /// # Ok::<(), dfut::Error>(())
    /// ```
    pub fn view(&self) -> MatrixRef<'_> {
        let data = self.data.as_slice();
        // SAFETY: `f32_le` is a transparent wrapper of the four bytes of an
        // `f32` in little-endian order, with the alignment of `f32` or less
        // (checked below at compile time), and this target is little-endian
        // (the `compile_error!` above), so its bytes are those of an `f32`.
        let data = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<f32>(), data.len()) };
        MatrixRef {
            rows: self.rows.to_native(),
            cols: self.cols.to_native(),
            data,
        }
    }
}

const _: () = {
    assert!(std::mem::size_of::<rkyv::rend::f32_le>() == std::mem::size_of::<f32>());
    // The cast in `view` reads `f32`s where `f32_le`s are: the archive's
    // elements must be at least as aligned as `f32` needs.
    assert!(std::mem::align_of::<rkyv::rend::f32_le>() >= std::mem::align_of::<f32>());
};

/// A matrix whose shape disagrees with its number of elements.
#[derive(Debug, thiserror::Error)]
#[error("a {rows}x{cols} matrix cannot hold {len} elements")]
struct ShapeMismatch {
    rows: u32,
    cols: u32,
    len: usize,
}

// SAFETY: `verify` only reads fields that bytecheck has already checked and
// fails unless the shape matches the data, the invariant `view` and every
// operation rely on; it makes no other claim.
unsafe impl<C> rkyv::bytecheck::Verify<C> for ArchivedMatrix
where
    C: rkyv::rancor::Fallible + ?Sized,
    C::Error: rkyv::rancor::Source,
{
    fn verify(&self, _: &mut C) -> std::result::Result<(), C::Error> {
        let (rows, cols) = (self.rows.to_native(), self.cols.to_native());
        let len = self.data.len();
        if u64::from(rows) * u64::from(cols) == len as u64 {
            Ok(())
        } else {
            Err(<C::Error as rkyv::rancor::Source>::new(ShapeMismatch {
                rows,
                cols,
                len,
            }))
        }
    }
}

impl Matrix {
    /// This matrix as a [`MatrixRef`].
    pub fn view(&self) -> MatrixRef<'_> {
        self.as_matrix_ref()
    }
}

fn check_same(op: &str, a: &MatrixRef<'_>, b: &MatrixRef<'_>) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(Error::Shape {
            op: op.into(),
            left: a.shape(),
            right: b.shape(),
        })
    }
}

fn check_matmul(a: &MatrixRef<'_>, b: &MatrixRef<'_>) -> Result<()> {
    if a.cols() != b.rows() {
        return Err(Error::Shape {
            op: "multiply".into(),
            left: a.shape(),
            right: b.shape(),
        });
    }
    // An `m x 0` times a `0 x n` is `m x n` whatever the data sent: the
    // result's size is checked, not trusted.
    check_elements("multiply", a.rows(), b.cols())
}

/// Starts the thread pool large products run on (rayon's global pool) if
/// it is not running yet: its threads take the priority of the thread
/// that starts them, so a worker starts it from a normal thread.
pub(crate) fn start_thread_pool() {
    let _ = rayon::current_num_threads();
}

/// The most elements a matrix operation makes: 2^28 (1 GiB of `f32`, a
/// 16,384 x 16,384 matrix). A larger result is an error, never an
/// allocation that aborts the process, for `distributed_matmul` too (its
/// result is assembled as one matrix): a product's size is not bounded by
/// its inputs (an `m x 0` times a `0 x n` sends no data).
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Refuses a `rows x cols` result larger than [`MAX_ELEMENTS`].
pub(crate) fn check_elements(op: &str, rows: usize, cols: usize) -> Result<()> {
    match rows.checked_mul(cols) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(Error::Config(
            format!("{op}: a {rows}x{cols} result exceeds the limit of {MAX_ELEMENTS} elements")
                .into(),
        )),
    }
}

/// Where matrix operations run.
#[derive(Clone)]
pub enum Backend {
    /// On the CPU, with faer.
    Cpu,
    /// On this worker's GPU, with wgpu compute shaders.
    #[cfg(feature = "gpu")]
    Gpu(std::sync::Arc<gpu::GpuContext>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Backend {
    /// The GPU of this worker inside a `#[remote(gpu)]` task on a GPU
    /// worker; the CPU everywhere else.
    ///
    /// ```
    /// assert_eq!(dfut::matrix::Backend::current().name(), "cpu (faer)");
    /// ```
    pub fn current() -> Backend {
        #[cfg(feature = "gpu")]
        if let Some(ctx) = gpu::GpuContext::current() {
            return Backend::Gpu(ctx);
        }
        Backend::Cpu
    }

    /// A readable name: `cpu (faer)` or `gpu (<adapter>)`.
    pub fn name(&self) -> String {
        match self {
            Backend::Cpu => "cpu (faer)".into(),
            #[cfg(feature = "gpu")]
            Backend::Gpu(ctx) => format!("gpu ({})", ctx.adapter_name()),
        }
    }

    /// `a * b`.
    pub fn matmul(&self, a: &impl AsMatrixRef, b: &impl AsMatrixRef) -> Result<Matrix> {
        let (a, b) = (a.as_matrix_ref(), b.as_matrix_ref());
        check_matmul(&a, &b)?;
        match self {
            Backend::Cpu => cpu::matmul(&a, &b),
            #[cfg(feature = "gpu")]
            Backend::Gpu(ctx) => ctx.matmul(&a, &b),
        }
    }

    /// `a + b`.
    pub fn add(&self, a: &impl AsMatrixRef, b: &impl AsMatrixRef) -> Result<Matrix> {
        self.elementwise("add", a, b, Elementwise::Add)
    }

    /// `a - b`.
    pub fn sub(&self, a: &impl AsMatrixRef, b: &impl AsMatrixRef) -> Result<Matrix> {
        self.elementwise("subtract", a, b, Elementwise::Sub)
    }

    /// `a * b` element-wise.
    pub fn hadamard(&self, a: &impl AsMatrixRef, b: &impl AsMatrixRef) -> Result<Matrix> {
        self.elementwise("element-wise multiply", a, b, Elementwise::Mul)
    }

    fn elementwise(
        &self,
        op: &str,
        a: &impl AsMatrixRef,
        b: &impl AsMatrixRef,
        kind: Elementwise,
    ) -> Result<Matrix> {
        let (a, b) = (a.as_matrix_ref(), b.as_matrix_ref());
        check_same(op, &a, &b)?;
        match self {
            Backend::Cpu => Ok(cpu::elementwise(&a, &b, kind)),
            #[cfg(feature = "gpu")]
            Backend::Gpu(ctx) => ctx.elementwise(&a, &b, kind),
        }
    }

    /// `factor * a`.
    pub fn scale(&self, a: &impl AsMatrixRef, factor: f32) -> Result<Matrix> {
        let a = a.as_matrix_ref();
        match self {
            Backend::Cpu => Ok(cpu::scale(&a, factor)),
            #[cfg(feature = "gpu")]
            Backend::Gpu(ctx) => ctx.scale(&a, factor),
        }
    }

    /// The transpose of `a`.
    pub fn transpose(&self, a: &impl AsMatrixRef) -> Result<Matrix> {
        let a = a.as_matrix_ref();
        match self {
            Backend::Cpu => Ok(cpu::transpose(&a)),
            #[cfg(feature = "gpu")]
            Backend::Gpu(ctx) => ctx.transpose(&a),
        }
    }
}

/// An element-wise operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elementwise {
    Add,
    Sub,
    Mul,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Data;

    /// The same layout as `Matrix`, without its invariant.
    #[derive(Archive, Serialize)]
    #[rkyv(crate = rkyv)]
    struct Unchecked {
        rows: u32,
        cols: u32,
        data: Vec<f32>,
    }

    fn bytes_of(rows: u32, cols: u32, len: usize) -> Vec<u8> {
        let m = Unchecked {
            rows,
            cols,
            data: vec![1.0; len],
        };
        rkyv::to_bytes::<rkyv::rancor::Error>(&m).unwrap().to_vec()
    }

    #[test]
    fn a_shape_that_disagrees_with_the_data_is_refused_on_decoding() {
        let good = bytes_of(2, 3, 6);
        assert_eq!(Matrix::decode(&good).unwrap().shape(), (2, 3));
        for (rows, cols, len) in [(2, 3, 5), (1 << 20, 1 << 20, 4), (0, 7, 1)] {
            let bad = bytes_of(rows, cols, len);
            assert!(Matrix::decode(&bad).is_err(), "{rows}x{cols} with {len}");
            assert!(
                crate::Archived::<Matrix>::new(crate::blob::blob(bad)).is_err(),
                "read in place too"
            );
        }
    }

    #[test]
    fn a_product_larger_than_the_limit_is_refused_before_allocating() {
        // Valid matrices of no elements whose product would be huge.
        let tall = Matrix::decode(&bytes_of(u32::MAX, 0, 0)).unwrap();
        let wide = Matrix::decode(&bytes_of(0, u32::MAX, 0)).unwrap();
        let err = Backend::Cpu.matmul(&tall, &wide).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        // Within the limit, the same shapes multiply.
        let product = Backend::Cpu
            .matmul(&Matrix::zeros(3, 0), &Matrix::zeros(0, 2))
            .unwrap();
        assert_eq!(product.shape(), (3, 2));
    }

    #[test]
    fn empty_matrices_of_any_height_cost_no_time() {
        // 4 billion rows of nothing: found by fuzzing (it took seconds).
        let tall = Matrix::decode(&bytes_of(u32::MAX, 0, 0)).unwrap();
        assert_eq!(tall.block(1, 0, 1 << 31, 0).unwrap().shape(), (1 << 31, 0));
        assert_eq!(tall.transpose().unwrap().shape(), (0, u32::MAX as usize));
        let wide = Matrix::decode(&bytes_of(0, u32::MAX, 0)).unwrap();
        assert_eq!(wide.transpose().unwrap().shape(), (u32::MAX as usize, 0));
    }

    #[test]
    fn a_block_past_the_end_is_refused_whatever_its_numbers() {
        let m = Matrix::zeros(4, 4);
        assert_eq!(m.block(1, 1, 3, 3).unwrap().shape(), (3, 3));
        for (r0, c0, rows, cols) in [(1, 1, 4, 3), (usize::MAX, 0, 2, 1), (0, 2, 1, usize::MAX)] {
            assert!(
                m.block(r0, c0, rows, cols).is_err(),
                "{r0},{c0} {rows}x{cols}"
            );
        }
    }
}
