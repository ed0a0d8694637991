//! The quickstart: an embedded local cluster running independent tasks, a
//! dependency chain, a nested call, recursive nested calls (Fibonacci) and a
//! sum of many futures.
//!
//! Run it with `cargo run --release --example quickstart`.

use std::time::Instant;

use dfut::DistFuture;

/// Squares a number.
#[dfut::remote]
fn square(x: u64) -> u64 {
    x * x
}

/// Adds one.
#[dfut::remote]
fn inc(x: u64) -> u64 {
    x + 1
}

/// Adds two numbers.
#[dfut::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Sums the squares of `0..n` by calling `square` remotely: a nested call.
#[dfut::remote]
fn sum_of_squares(n: u64) -> dfut::Result<u64> {
    let parts: Vec<DistFuture<u64>> = (0..n).map(square).collect();
    parts.iter().map(|f| f.get()).sum()
}

/// Recursive Fibonacci: every call makes two nested calls and waits on
/// both, so the cluster must never run out of slots or threads.
#[dfut::remote]
fn fib(n: u64) -> dfut::Result<u64> {
    if n < 2 {
        return Ok(n);
    }
    let (a, b) = (fib(n - 1), fib(n - 2));
    Ok(a.get()? + b.get()?)
}

fn main() -> dfut::Result<()> {
    // In a worker process this serves tasks and never returns.
    let rt = dfut::init()?;
    println!(
        "cluster: scheduler {} with {} workers",
        rt.scheduler_addr(),
        rt.client().workers().len()
    );

    let t = Instant::now();
    let squares: Vec<_> = (0..500).map(square).collect();
    let values = squares
        .iter()
        .map(|f| f.get())
        .collect::<dfut::Result<Vec<_>>>()?;
    assert!(values.iter().enumerate().all(|(i, v)| *v == (i * i) as u64));
    println!(
        "500 independent tasks: last = {}, in {:?}",
        values[499],
        t.elapsed()
    );

    let t = Instant::now();
    let mut x = inc(0);
    for _ in 1..1000 {
        x = inc(x);
    }
    println!(
        "1000-long dependency chain: {} in {:?}",
        x.get()?,
        t.elapsed()
    );

    let t = Instant::now();
    let nested = sum_of_squares(100);
    println!(
        "nested call (100 inner tasks): {} in {:?}",
        nested.get()?,
        t.elapsed()
    );

    let t = Instant::now();
    let f = fib(20);
    println!(
        "recursive fib(20) (21,891 nested tasks): {} in {:?}",
        f.get()?,
        t.elapsed()
    );

    let t = Instant::now();
    let mut level: Vec<DistFuture<u64>> = (1..=1000).map(|i| inc(i - 1)).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => add(a, b),
                [a] => add(a, 0),
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
    }
    println!(
        "sum of 1..=1000 over a tree of futures: {} in {:?}",
        level[0].get()?,
        t.elapsed()
    );
    Ok(())
}
