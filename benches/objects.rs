//! W6: large objects. Remote functions that make and sum 256 MiB vectors,
//! and a sum fast enough that the reader is bound by memory bandwidth, not
//! by the loop.

use dfut::Archived;
use dfut::rkyv::rend::u64_le;

/// Elements of W6's value: 32 Mi `u64`s, 256 MiB.
pub const W6_LEN: u64 = 32 << 20;

/// The sum of `0..n`, wrapping: what [`sum`] of [`w6_make`]'s value is.
pub fn expected_sum(n: u64) -> u64 {
    (0..n).fold(0u64, |a, x| a.wrapping_add(x))
}

/// Sums archived `u64`s with eight independent accumulators, so the loop
/// is limited by memory bandwidth rather than by one addition's latency.
pub fn sum(values: &[u64_le]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(v.to_native());
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0u64, |a, v| a.wrapping_add(v.to_native()));
    acc.iter().fold(tail, |a, v| a.wrapping_add(*v))
}

/// Makes W6's value on a worker: `0..n`.
#[dfut::remote]
pub fn w6_make(n: u64) -> Vec<u64> {
    (0..n).collect()
}

/// Sums a value in place on a worker.
#[dfut::remote]
pub fn w6_sum(values: Archived<Vec<u64>>) -> u64 {
    sum(values.as_slice())
}
