//! Word count on a local cluster: over files (each map task reads its own
//! byte range of a file: paths travel, not bytes) or over the synthetic
//! Zipf corpus of W5, generated inside the map tasks. Counts are merged by
//! a tree reduction next to the data; a progress bar shows on a terminal.
//!
//! ```sh
//! cargo run --release --example wordcount -- --input README.md --input docs/ --top 5
//! cargo run --release --example wordcount -- --synthetic 64
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use dfut_benches::wordcount::{
    SYNTHETIC_SEED, count_file_chunk, count_synthetic, merge_counts, plan_chunks, top, total,
};

#[derive(Parser)]
#[command(about = "Count words over files or a synthetic corpus on a dfut cluster")]
struct Args {
    /// A file or directory to count (repeatable).
    #[arg(long = "input")]
    inputs: Vec<PathBuf>,
    /// Count a synthetic Zipf corpus of this many MiB instead (W5).
    #[arg(long)]
    synthetic: Option<u64>,
    /// How many of the most frequent words to print.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Size of a map task's chunk of a file, in MiB.
    #[arg(long, default_value_t = 4)]
    chunk_mb: u64,
    /// Inputs per reduce task.
    #[arg(long, default_value_t = 4)]
    fan_in: usize,
    /// Do not draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn main() {
    if std::env::var_os("DFUT_ROLE").is_some() {
        // A worker of the local cluster: serves and never returns.
        if let Err(e) = dfut::init() {
            eprintln!("worker: {e}");
        }
        std::process::exit(1);
    }
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("wordcount: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.inputs.is_empty() == args.synthetic.is_none() {
        return Err("give --input PATH (one or more) or --synthetic SIZE_MB".into());
    }
    let rt = dfut::init().map_err(|e| e.to_string())?;
    let _guard = rt.enter();
    let job = dfut::MapReduce::new()
        .fan_in(args.fan_in)
        .progress(!args.no_progress)
        .label("wordcount");
    let start = Instant::now();
    let result = match args.synthetic {
        Some(mb) => job.run(0..mb, |i| count_synthetic(i, SYNTHETIC_SEED), merge_counts),
        None => {
            let chunks =
                plan_chunks(&args.inputs, args.chunk_mb.max(1) << 20).map_err(|e| e.to_string())?;
            if chunks.is_empty() {
                return Err("the inputs hold no files".into());
            }
            job.run(
                chunks,
                |(path, s, e)| count_file_chunk(path, s, e),
                merge_counts,
            )
        }
    };
    let counts = result.result.get().map_err(|e| e.to_string())?;
    let took = start.elapsed();
    println!("total words: {}", total(&counts));
    println!("distinct words: {}", counts.len());
    for (word, count) in top(&counts, args.top) {
        println!("{word}\t{count}");
    }
    eprintln!(
        "{} tasks in {:.3} s on {} workers",
        result.progress.total(),
        took.as_secs_f64(),
        rt.client().workers().len()
    );
    Ok(())
}
