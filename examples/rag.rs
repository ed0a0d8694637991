//! Answers questions from the Linux manual pages (Debian's `manpages` and
//! `manpages-dev`), with the retrieval index split into shards that are
//! built by tasks and stay in the workers' memory.
//!
//! ```sh
//! cargo run --release --example rag -- ask "how do I create a pipe"
//! cargo run --release --example rag -- recall     # recall@10 over every page's NAME line
//! ```

use std::time::Instant;

use clap::{Parser, Subcommand};
use dfut_benches::rag::{Rag, SHARDS, SHARDS_PER_QUERY, answer, corpus, trace};
use rand::{Rng, SeedableRng};

#[path = "common/bars.rs"]
mod bars;

#[derive(Parser)]
#[command(about = "Retrieval-augmented answers from the Linux manual pages, on a dfut cluster")]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Shards the index is split into.
    #[arg(long, default_value_t = SHARDS)]
    shards: usize,
    /// Shards searched per question.
    #[arg(long, default_value_t = SHARDS_PER_QUERY)]
    shards_per_query: usize,
    /// An OpenAI-compatible chat endpoint to answer with (llama.cpp, vLLM,
    /// Ollama; also `DFUT_LLM_URL`); without one, answers are extracted.
    #[arg(long)]
    llm_url: Option<String>,
    /// The model to ask for (also `DFUT_LLM_MODEL`).
    #[arg(long)]
    llm_model: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Answer one question, with citations and suggested follow-ups.
    Ask {
        /// The question.
        question: String,
    },
    /// Measure recall@10 of the pipeline: each page's NAME line is a
    /// question whose right answer is that page.
    Recall,
    /// Replay one seeded trace of sessions through every reuse mode and
    /// print a table, then one JSON object; draw `DIR/rag.svg`.
    Bench {
        /// Where the chart goes.
        #[arg(long, default_value = "target/rag")]
        out: std::path::PathBuf,
        /// Sessions in the trace.
        #[arg(long, default_value_t = 30)]
        sessions: usize,
        /// Questions per session.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Probability of following a suggested link.
        #[arg(long, default_value_t = 0.8)]
        alpha: f64,
        /// Shards kept resident by the `lru` modes.
        #[arg(long, default_value_t = 16)]
        capacity: usize,
        /// More `lru` runs, one per capacity listed (as `lru_cN`): how
        /// reuse pays as more shards stay resident.
        #[arg(long, value_delimiter = ',')]
        sweep: Vec<usize>,
        /// The trace's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Mean think time between questions (exponential), in ms: when
        /// the prefetch modes warm shards.
        #[arg(long, default_value_t = 40.0)]
        think_ms: f64,
    },
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
    if let Err(e) = run(args) {
        eprintln!("rag: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> dfut::Result<()> {
    let rt = dfut::init()?;
    let start = Instant::now();
    let corpus = corpus::load().map_err(|e| dfut::Error::Config(e.into()))?;
    eprintln!(
        "corpus: {} pages, {} chunks, read in {:.2} s",
        corpus.pages.len(),
        corpus.chunks.len(),
        start.elapsed().as_secs_f64()
    );
    if let Command::Bench {
        out,
        sessions,
        steps,
        alpha,
        capacity,
        sweep,
        seed,
        think_ms,
    } = &args.command
    {
        let trace = trace::sessions(&corpus, *sessions, *steps, *alpha, *think_ms, *seed);
        let mut rag = Rag::new(corpus, args.shards, args.shards)?;
        rag.shards_per_query = args.shards_per_query.max(1);
        return bench(&rt, &rag, &trace, *capacity, sweep, out);
    }
    let start = Instant::now();
    let mut rag = Rag::build(corpus, args.shards)?;
    rag.shards_per_query = args.shards_per_query.max(1);
    for s in 0..rag.shards.len() {
        rag.shards.warm(s as u32).get_archived()?;
    }
    eprintln!(
        "{} shards built on the workers in {:.2} s",
        rag.shards.len(),
        start.elapsed().as_secs_f64()
    );
    match args.command {
        Command::Ask { question } => {
            let start = Instant::now();
            let llm = dfut_benches::rag::llm::Llm::configured(args.llm_url, args.llm_model);
            let answer = rag.ask(&question, llm.as_ref())?;
            println!("{}", answer.text);
            println!("sources: {}", answer.citations.join(", "));
            if !answer.follow_ups.is_empty() {
                println!("see also: {}", answer.follow_ups.join(", "));
            }
            eprintln!("answered in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
        }
        Command::Bench { .. } => {}
        Command::Recall => {
            let start = Instant::now();
            let (found, asked) = rag.recall_at_10()?;
            let took = start.elapsed().as_secs_f64();
            println!(
                "recall@10: {:.3} ({found} of {asked} pages; {} of {} shards per question; {:.0} questions/s)",
                found as f64 / asked as f64,
                rag.shards_per_query,
                rag.shards.len(),
                asked as f64 / took
            );
        }
    }
    Ok(())
}

/// What a mode warms while the user reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefetch {
    /// Nothing.
    No,
    /// The shards of the answer's suggested follow-ups.
    Links,
    /// As many random shards as `Links` warms at most.
    Random,
    /// The shards of the question actually asked next.
    Oracle,
}

/// Follow-ups whose shards are warmed after each answer.
const PREFETCH_LINKS: usize = 3;
/// Shards warmed after each answer at most.
const PREFETCH_SHARDS: usize = 4;

/// What one mode measured.
struct Outcome {
    mode: String,
    latencies_ms: Vec<f64>,
    seconds: f64,
    hit_rate: f64,
    recall10: f64,
    bytes_moved: u64,
    bytes_mapped: u64,
    /// Demand shard uses that found a prefetch build unfinished and built
    /// the shard at normal priority rather than wait for it.
    promoted: u64,
    /// Shard builds demand questions started (misses, shard by shard).
    builds: u64,
}

impl Outcome {
    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Bytes the workers fetched over the network and mapped from shared
/// memory, as their heartbeats last reported.
fn worker_counts(rt: &dfut::Runtime) -> [u64; 2] {
    // A few heartbeats' worth of time for the counts to arrive.
    std::thread::sleep(std::time::Duration::from_millis(600));
    rt.client().workers().iter().fold([0; 2], |[f, m], x| {
        [f + x.load.fetched_bytes, m + x.load.mapped_bytes]
    })
}

/// Replays `trace` through each mode.
fn bench(
    rt: &dfut::Runtime,
    rag: &Rag,
    trace: &[trace::Step],
    capacity: usize,
    sweep: &[usize],
    out: &std::path::Path,
) -> dfut::Result<()> {
    use Prefetch::{Links, No, Oracle, Random};
    use std::sync::atomic::Ordering;
    let mut modes: Vec<(String, usize, &str, Prefetch)> = [
        ("noreuse", 0, "default", No),
        ("warm", rag.shards.len(), "default", No),
        ("lru", capacity, "default", No),
        ("lru_random_placement", capacity, "random", No),
        ("prefetch", capacity, "default", Links),
        ("prefetch_random", capacity, "default", Random),
        ("oracle", capacity, "default", Oracle),
    ]
    .into_iter()
    .map(|(m, c, p, f)| (m.to_owned(), c, p, f))
    .collect();
    modes.extend(
        sweep
            .iter()
            .map(|&c| (format!("lru_c{c}"), c, "default", No)),
    );
    let mut outcomes = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut prefetched, mut useful) = (0u64, 0u64);
    let mut think_total = std::time::Duration::ZERO;
    for (mode, resident, policy, prefetch) in modes {
        rt.client()
            .set_policy(dfut::scheduler::policy_by_name(policy)?);
        rag.shards.clear();
        rag.shards.set_capacity(resident);
        if mode == "warm" {
            let built: Vec<_> = (0..rag.shards.len())
                .map(|s| rag.shards.warm(s as u32))
                .collect();
            for b in &built {
                rt.block_on(b.settled());
            }
        }
        let before = worker_counts(rt);
        let mut latencies_ms = Vec::with_capacity(trace.len());
        let (mut hits, mut found) = (0usize, 0usize);
        // Shards warmed ahead and not used yet (prefetch modes).
        let mut ahead: Vec<u32> = Vec::new();
        let mut thought = std::time::Duration::ZERO;
        let start = Instant::now();
        for (i, step) in trace.iter().enumerate() {
            let page = &rag.corpus.pages[step.page as usize];
            let misses = rag.shards.misses.load(Ordering::Relaxed);
            let t = Instant::now();
            let chunks = rag.retrieve(&page.summary, 10)?;
            let answer = answer::extract(&rag.corpus, &page.summary, &chunks);
            latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if rag.shards.misses.load(Ordering::Relaxed) == misses {
                hits += 1;
            }
            if prefetch != No {
                // What was warmed for this question and used by it; the
                // rest was wasted.
                let used = rag.route(&page.summary);
                if prefetch == Links {
                    let hit = ahead.iter().filter(|s| used.contains(s)).count() as u64;
                    useful += hit;
                    prefetched += ahead.len() as u64;
                }
                ahead.clear();
                // While the user reads: warm what the next question may
                // need, as background work.
                let wanted: Vec<u32> = match prefetch {
                    Links => answer
                        .follow_ups
                        .iter()
                        .filter_map(|f| {
                            let (name, section) = f.trim_end_matches(')').split_once('(')?;
                            rag.corpus.find(name, section)
                        })
                        .take(PREFETCH_LINKS)
                        .flat_map(|p| rag.route(&rag.corpus.pages[p as usize].summary))
                        .collect(),
                    Random => (0..PREFETCH_SHARDS)
                        .map(|_| rng.random_range(0..rag.shards.len() as u32))
                        .collect(),
                    Oracle => trace
                        .get(i + 1)
                        .map(|next| rag.route(&rag.corpus.pages[next.page as usize].summary))
                        .unwrap_or_default(),
                    No => Vec::new(),
                };
                let mut warming = Vec::new();
                for s in wanted {
                    if ahead.contains(&s)
                        || rag.shards.is_resident(s)
                        || warming.len() >= PREFETCH_SHARDS
                    {
                        continue;
                    }
                    warming.push(rag.shards.warm_low(s));
                    ahead.push(s);
                }
                let think = std::time::Duration::from_millis(u64::from(step.think_ms));
                thought += think;
                std::thread::sleep(think);
            }
            std::hint::black_box(answer);
            if chunks
                .iter()
                .any(|(c, _)| rag.corpus.chunks[*c as usize].page == step.page)
            {
                found += 1;
            }
        }
        // Throughput counts the time spent answering, not reading.
        let seconds = start.elapsed().saturating_sub(thought).as_secs_f64();
        think_total += thought;
        let after = worker_counts(rt);
        let n = trace.len().max(1) as f64;
        outcomes.push(Outcome {
            mode,
            latencies_ms,
            seconds,
            hit_rate: hits as f64 / n,
            recall10: found as f64 / n,
            bytes_moved: after[0].saturating_sub(before[0]),
            bytes_mapped: after[1].saturating_sub(before[1]),
            promoted: rag.shards.promoted.load(Ordering::Relaxed),
            builds: rag.shards.misses.load(Ordering::Relaxed),
        });
    }
    rag.shards.clear();
    let seed = seed_mode(rt, rag, trace)?;
    eprintln!(
        "prefetch (links): {prefetched} shards warmed ahead, {useful} used by the next question; \
         {:.1} s of simulated reading over the prefetch modes",
        think_total.as_secs_f64()
    );
    println!(
        "{:<22} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12} {:>8}",
        "mode",
        "p50 ms",
        "p99 ms",
        "q/s",
        "hits",
        "builds/q",
        "recall",
        "net bytes",
        "shm bytes",
        "promoted"
    );
    let mut json = serde_json::Map::new();
    for o in &outcomes {
        let qps = o.latencies_ms.len() as f64 / o.seconds;
        println!(
            "{:<22} {:>9.2} {:>9.2} {:>8.0} {:>8.2} {:>8.2} {:>8.3} {:>12} {:>12} {:>8}",
            o.mode,
            o.percentile(0.5),
            o.percentile(0.99),
            qps,
            o.hit_rate,
            o.builds as f64 / o.latencies_ms.len().max(1) as f64,
            o.recall10,
            o.bytes_moved,
            o.bytes_mapped,
            o.promoted
        );
        let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
        let m = &o.mode;
        json.insert(
            format!("rag_{m}_p50_ms"),
            round(o.percentile(0.5), 3).into(),
        );
        json.insert(
            format!("rag_{m}_p99_ms"),
            round(o.percentile(0.99), 3).into(),
        );
        json.insert(format!("rag_{m}_qps"), round(qps, 1).into());
        json.insert(format!("rag_{m}_hit_rate"), round(o.hit_rate, 3).into());
        json.insert(format!("rag_{m}_recall10"), round(o.recall10, 3).into());
        json.insert(format!("rag_{m}_bytes_moved"), o.bytes_moved.into());
        json.insert(format!("rag_{m}_bytes_mapped"), o.bytes_mapped.into());
        json.insert(format!("rag_{m}_builds"), o.builds.into());
        json.insert(format!("rag_{m}_promoted"), o.promoted.into());
    }
    json.insert(
        "rag_prefetch_precision".into(),
        (if prefetched == 0 {
            0.0
        } else {
            ((useful as f64 / prefetched as f64) * 1000.0).round() / 1000.0
        })
        .into(),
    );
    json.insert(
        "rag_prefetch_wasted".into(),
        prefetched.saturating_sub(useful).into(),
    );
    for (every, steps_per_s) in &seed {
        println!("seed mode, retrieving every {every} steps: {steps_per_s:.0} steps/s");
        json.insert(
            format!("rag_seed_r{every}_steps_per_s"),
            ((steps_per_s * 10.0).round() / 10.0).into(),
        );
    }
    std::fs::create_dir_all(out).map_err(|e| dfut::Error::Process(e.to_string()))?;
    let svg = out.join("rag.svg");
    chart(&outcomes, &svg).map_err(|e| dfut::Error::Process(format!("{}: {e}", svg.display())))?;
    eprintln!("chart: {}", svg.display());
    println!("{}", serde_json::Value::Object(json));
    Ok(())
}

/// The agent pattern ("seed mode"): it generates at every step
/// and retrieves every R steps, every generation step reading the one
/// retrieval future in place on a worker. Steps per second for R = 1 and
/// R = 10, all shards resident.
fn seed_mode(
    rt: &dfut::Runtime,
    rag: &Rag,
    trace: &[trace::Step],
) -> dfut::Result<Vec<(usize, f64)>> {
    const AGENTS: usize = 10;
    const STEPS: usize = 20;
    rag.shards.set_capacity(rag.shards.len());
    let built: Vec<_> = (0..rag.shards.len())
        .map(|s| rag.shards.warm(s as u32))
        .collect();
    for b in &built {
        rt.block_on(b.settled());
    }
    let topics: Vec<&str> = trace
        .iter()
        .take(AGENTS)
        .map(|s| rag.corpus.pages[s.page as usize].summary.as_str())
        .collect();
    let mut out = Vec::new();
    for every in [1usize, 10] {
        let start = Instant::now();
        for topic in &topics {
            let mut context = rag.context(topic, 10);
            for step in 0..STEPS {
                if step > 0 && step % every == 0 {
                    context = rag.context(topic, 10);
                }
                let said =
                    dfut_benches::rag::rag_generate(&context, format!("{topic} ({step})")).get()?;
                std::hint::black_box(said);
            }
        }
        let steps = (topics.len() * STEPS) as f64;
        out.push((every, steps / start.elapsed().as_secs_f64()));
    }
    rag.shards.clear();
    Ok(out)
}

/// Latency (p50 and p99) and hit rate per mode, as bars.
fn chart(outcomes: &[Outcome], path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let labels: Vec<String> = outcomes.iter().map(|o| o.mode.clone()).collect();
    let metric = |f: fn(&Outcome) -> f64| outcomes.iter().map(f).collect::<Vec<f64>>();
    bars::bar_panels(
        path,
        (1200, 380),
        &labels,
        &[
            ("p50 latency (ms)", metric(|o| o.percentile(0.5))),
            ("p99 latency (ms)", metric(|o| o.percentile(0.99))),
            ("hit rate", metric(|o| o.hit_rate)),
        ],
    )
}
