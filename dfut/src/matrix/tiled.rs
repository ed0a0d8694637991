//! A matrix product tiled across the cluster.
//!
//! The operands live on workers ([`DistMatrix`]). Each tile of A and B is
//! cut out where the operand lives, each tile pair is multiplied as a task
//! wherever the scheduler places it (next to the tiles), the partial
//! products of a result tile are summed by a task, and one task assembles
//! the result. Tiles travel worker to worker; the driver holds futures only.

use crate::Archived;
use crate::future::DistFuture;
use crate::matrix::{Backend, Matrix};
use crate::{Error, Many, Result};

/// A matrix held by a worker, with its shape known to the owner.
#[derive(Debug, Clone)]
pub struct DistMatrix {
    /// The matrix.
    pub future: DistFuture<Matrix>,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl DistMatrix {
    /// Sends `m` to a worker (once) and keeps it there.
    pub fn put(m: Matrix) -> DistMatrix {
        let (rows, cols) = m.shape();
        DistMatrix {
            future: keep(m),
            rows,
            cols,
        }
    }

    /// A matrix of the given shape that a task is computing.
    pub fn from_future(future: DistFuture<Matrix>, rows: usize, cols: usize) -> DistMatrix {
        DistMatrix { future, rows, cols }
    }
}

/// Returns its argument: stores a matrix on a worker.
#[crate::remote]
fn keep(m: Matrix) -> Matrix {
    m
}

/// The `rows x cols` block of `m` at `(r0, c0)`, read in place.
#[crate::remote(retries = 2)]
fn cut(m: Archived<Matrix>, r0: u32, c0: u32, rows: u32, cols: u32) -> crate::Result<Matrix> {
    m.view()
        .block(r0 as usize, c0 as usize, rows as usize, cols as usize)
}

/// The product of two tiles, read in place.
#[crate::remote(retries = 2)]
fn multiply(a: Archived<Matrix>, b: Archived<Matrix>) -> crate::Result<Matrix> {
    Backend::current().matmul(&*a, &*b)
}

/// The sum of partial products.
#[crate::remote(retries = 2)]
fn sum(parts: Many<Matrix>) -> crate::Result<Matrix> {
    let mut parts = parts.into_inner().into_iter();
    let first = parts
        .next()
        .ok_or_else(|| Error::Config("nothing to sum".into()))?;
    parts.try_fold(first, |acc, p| acc.add(&p))
}

/// Assembles result tiles, given row by row, into one matrix.
#[crate::remote(retries = 2)]
fn assemble(
    tiles: Many<Matrix>,
    row_heights: Vec<u32>,
    col_widths: Vec<u32>,
) -> crate::Result<Matrix> {
    if tiles.len() != row_heights.len().saturating_mul(col_widths.len()) {
        return Err(Error::Config(
            format!(
                "{} tiles for a {}x{} grid",
                tiles.len(),
                row_heights.len(),
                col_widths.len()
            )
            .into(),
        ));
    }
    // Every tile has its declared shape before anything is allocated: the
    // result then holds exactly the elements received (the sum over the
    // grid of height times width).
    for (i, tile) in tiles.iter().enumerate() {
        let want = (
            row_heights[i / col_widths.len()] as usize,
            col_widths[i % col_widths.len()] as usize,
        );
        if tile.shape() != want {
            return Err(Error::Shape {
                op: "assemble".into(),
                left: tile.shape(),
                right: want,
            });
        }
    }
    let rows: usize = row_heights.iter().map(|h| *h as usize).sum();
    let cols: usize = col_widths.iter().map(|w| *w as usize).sum();
    super::check_elements("assemble", rows, cols)?;
    let mut data = vec![0f32; rows * cols];
    let mut r0 = 0;
    for (ti, h) in row_heights.iter().enumerate() {
        let mut c0 = 0;
        for (tj, w) in col_widths.iter().enumerate() {
            let tile = &tiles[ti * col_widths.len() + tj];
            for r in 0..*h as usize {
                let src = &tile.as_slice()[r * *w as usize..(r + 1) * *w as usize];
                let at = (r0 + r) * cols + c0;
                data[at..at + *w as usize].copy_from_slice(src);
            }
            c0 += *w as usize;
        }
        r0 += *h as usize;
    }
    Matrix::new(rows, cols, data)
}

/// Sizes of the tiles covering `n` with tiles of `tile`.
fn spans(n: usize, tile: usize) -> Vec<(usize, usize)> {
    (0..n).step_by(tile).map(|s| (s, tile.min(n - s))).collect()
}

/// `a * b`, tiled: `tile x tile` blocks multiplied as tasks across the
/// cluster. Shapes need not be multiples of `tile`.
///
/// ```
/// # let rt = dfut::Runtime::builder().in_process_workers(2).start()?;
/// # let _guard = rt.enter();
/// use dfut::matrix::{DistMatrix, Matrix, distributed_matmul};
///
/// let a = Matrix::random(50, 37, 1);
/// let b = Matrix::random(37, 29, 2);
/// let c = distributed_matmul(&DistMatrix::put(a.clone()), &DistMatrix::put(b.clone()), 16)?;
/// let tiled = c.future.get()?;
/// assert!(tiled.max_abs_diff(&a.matmul(&b)?)? < 1e-4);
/// # Ok::<(), dfut::Error>(())
/// ```
pub fn distributed_matmul(a: &DistMatrix, b: &DistMatrix, tile: usize) -> Result<DistMatrix> {
    if a.cols != b.rows {
        return Err(Error::Shape {
            op: "multiply".into(),
            left: (a.rows, a.cols),
            right: (b.rows, b.cols),
        });
    }
    let tile = tile.max(1);
    let (mi, ki, nj) = (
        spans(a.rows, tile),
        spans(a.cols, tile),
        spans(b.cols, tile),
    );
    let u = |x: usize| x as u32;
    // The grid of tiles of `m`, cut where `m` lives.
    let tiles = |m: &DistFuture<Matrix>, rows: &[(usize, usize)], cols: &[(usize, usize)]| {
        rows.iter()
            .map(|(r0, h)| {
                cols.iter()
                    .map(|(c0, w)| cut(m, u(*r0), u(*c0), u(*h), u(*w)))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let a_tiles = tiles(&a.future, &mi, &ki);
    let b_tiles = tiles(&b.future, &ki, &nj);
    let mut c_tiles = Vec::with_capacity(mi.len() * nj.len());
    for (i, _) in mi.iter().enumerate() {
        for (j, _) in nj.iter().enumerate() {
            let mut partials: Vec<DistFuture<Matrix>> = (0..ki.len())
                .map(|k| multiply(&a_tiles[i][k], &b_tiles[k][j]))
                .collect();
            c_tiles.push(if partials.len() == 1 {
                partials.swap_remove(0)
            } else {
                sum(partials)
            });
        }
    }
    let heights = mi.iter().map(|(_, h)| u(*h)).collect::<Vec<_>>();
    let widths = nj.iter().map(|(_, w)| u(*w)).collect::<Vec<_>>();
    Ok(DistMatrix {
        future: assemble(c_tiles, heights, widths),
        rows: a.rows,
        cols: b.cols,
    })
}

/// Keeps this module's remote functions linked into every binary that uses
/// dfut (registration is by static constructors in this object file).
#[inline(never)]
pub(crate) fn link() -> usize {
    std::hint::black_box(keep_local as fn(Matrix) -> Matrix as usize)
}
