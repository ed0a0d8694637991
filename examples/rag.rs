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
use dfut_benches::rag::{Rag, SHARDS, SHARDS_PER_QUERY, corpus};

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
    let _rt = dfut::init()?;
    let start = Instant::now();
    let corpus = corpus::load().map_err(dfut::Error::Config)?;
    eprintln!(
        "corpus: {} pages, {} chunks, read in {:.2} s",
        corpus.pages.len(),
        corpus.chunks.len(),
        start.elapsed().as_secs_f64()
    );
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
