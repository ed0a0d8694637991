//! The standard workloads of DESIGN.md on a local cluster, printed as one
//! JSON object on the last line of stdout so figures compare run to run.
//!
//! `cargo run --release --example workloads -- [w1 w2 w3 w5]` (no names:
//! all that exist). The cluster has 2 worker processes unless `DFUT_WORKERS`
//! says otherwise. Each throughput figure is the median of several runs
//! after a warm-up.

use std::time::{Duration, Instant};

use dfut_benches::wordcount::{
    SYNTHETIC_SEED, count_synthetic, count_text, merge, merge_counts, synthetic_chunk, total,
};
use dfut_benches::{w1, w2, w3};
use serde_json::{Map, Value, json};

const KNOWN: [&str; 4] = ["w1", "w2", "w3", "w5"];
const RUNS: usize = 5;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> dfut::Result<()> {
    if std::env::var_os("DFUT_WORKERS").is_none() && std::env::var_os("DFUT_ROLE").is_none() {
        // SAFETY: single-threaded here, before any other thread exists.
        unsafe { std::env::set_var("DFUT_WORKERS", "2") };
    }
    let rt = dfut::init()?;
    let asked: Vec<String> = std::env::args().skip(1).collect();
    for name in &asked {
        if !KNOWN.contains(&name.as_str()) {
            eprintln!("unknown or not yet implemented workload `{name}`; known: {KNOWN:?}");
            std::process::exit(2);
        }
    }
    let wants = |w: &str| asked.is_empty() || asked.iter().any(|a| a == w);
    let mut out = Map::new();
    out.insert("workers".into(), json!(rt.client().workers().len()));

    if wants("w1") {
        w1(10_000)?;
        let rates: Vec<f64> = (0..RUNS)
            .map(|_| w1(10_000).map(|d| 10_000.0 / d.as_secs_f64()))
            .collect::<dfut::Result<_>>()?;
        eprintln!(
            "w1: {:?} tasks/s",
            rates.iter().map(|r| *r as u64).collect::<Vec<_>>()
        );
        out.insert("w1_tasks_per_s".into(), json!(median(rates).round()));
    }
    if wants("w2") {
        w2(200)?;
        let mut lat = w2(1_000)?;
        lat.sort();
        let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
        eprintln!(
            "w2: min {:?} median {:?} p99 {:?}",
            lat[0],
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        out.insert("w2_median_us".into(), json!(us(percentile(&lat, 0.5))));
        out.insert("w2_p99_us".into(), json!(us(percentile(&lat, 0.99))));
    }
    if wants("w3") {
        w3(1_000)?;
        let totals: Vec<f64> = (0..RUNS)
            .map(|_| w3(1_000).map(|d| d.as_secs_f64() * 1e3))
            .collect::<dfut::Result<_>>()?;
        eprintln!("w3: {totals:?} ms");
        let total = median(totals);
        out.insert("w3_total_ms".into(), json!((total * 100.0).round() / 100.0));
        out.insert(
            "w3_us_per_task".into(),
            json!((total * 1e3 / 1_000.0 * 10.0).round() / 10.0),
        );
    }
    if wants("w5") {
        // W5: 64 map tasks, each generating and counting its own 1 MiB of
        // the Zipf corpus; counts merged by a tree reduction of fan-in 4.
        let run_w5 = || {
            let start = Instant::now();
            let job = dfut::MapReduce::new().fan_in(4).progress(false).run(
                0..64u64,
                |i| count_synthetic(i, SYNTHETIC_SEED),
                merge_counts,
            );
            job.result.get().map(|counts| (start.elapsed(), counts))
        };
        run_w5()?;
        let runs: Vec<(Duration, _)> = (0..3).map(|_| run_w5()).collect::<dfut::Result<_>>()?;
        let secs: Vec<f64> = runs.iter().map(|(d, _)| d.as_secs_f64()).collect();
        eprintln!("w5: {secs:?} s");
        let counts = &runs[0].1;
        // The floor: the same job as a plain single-threaded loop here.
        let start = Instant::now();
        let floor = merge((0..64u64).map(|i| count_text(&synthetic_chunk(i, SYNTHETIC_SEED))));
        let floor_s = start.elapsed().as_secs_f64();
        if floor != *counts {
            return Err(dfut::Error::Decode(
                "w5: cluster and floor counts differ".into(),
            ));
        }
        out.insert(
            "w5_s".into(),
            json!((median(secs) * 1000.0).round() / 1000.0),
        );
        out.insert("w5_total_words".into(), json!(total(counts)));
        out.insert("w5_distinct_words".into(), json!(counts.len()));
        out.insert(
            "w5_floor_s".into(),
            json!((floor_s * 1000.0).round() / 1000.0),
        );
    }
    println!("{}", Value::Object(out));
    Ok(())
}
