//! Remote functions of the benchmarks, linked into the bench binaries and
//! into `dfut-bench-worker`, and the standard workloads of DESIGN.md as
//! plain functions shared by the criterion benches and the workloads runner.

pub mod matmul;
pub mod objects;
pub mod rag;
pub mod wordcount;

use std::time::{Duration, Instant};

use dfut::DistFuture;

/// The no-op task of W1, W2 and W3: returns its argument.
#[dfut::remote]
pub fn noop(x: u64) -> u64 {
    x
}

/// W1: submits `n` no-op tasks, then waits for all; returns the elapsed time.
pub fn w1(n: u64) -> dfut::Result<Duration> {
    let start = Instant::now();
    let futures: Vec<DistFuture<u64>> = (0..n).map(noop).collect();
    let mut got = Vec::with_capacity(futures.len());
    for f in &futures {
        got.push(f.get()?);
    }
    let took = start.elapsed();
    // Checked in every build, outside the timed region.
    if let Some((i, v)) = got.iter().enumerate().find(|(i, v)| **v != *i as u64) {
        return Err(dfut::Error::Decode(
            format!("noop({i}) returned {v}").into(),
        ));
    }
    Ok(took)
}

/// W2: `n` sequential submit-then-get of the no-op; returns each round trip.
pub fn w2(n: u64) -> dfut::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let start = Instant::now();
        let v = noop(i).get()?;
        out.push(start.elapsed());
        if v != i {
            return Err(dfut::Error::Decode(
                format!("noop({i}) returned {v}").into(),
            ));
        }
    }
    Ok(out)
}

/// W3: a chain of `n` no-op tasks, each taking the previous one's future;
/// submits all, then gets the last. Returns the elapsed time.
pub fn w3(n: u64) -> dfut::Result<Duration> {
    let start = Instant::now();
    let mut f = noop(0u64);
    for _ in 1..n {
        f = noop(f);
    }
    let v = f.get()?;
    if v != 0 {
        return Err(dfut::Error::Decode(format!("chain returned {v}").into()));
    }
    Ok(start.elapsed())
}
