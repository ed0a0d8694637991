//! The RAG workload: questions answered from the Linux manual pages, with
//! the retrieval index split into shards that live on the workers.
//!
//! The driver reads the corpus ([`corpus`]), keeps a small router (BM25
//! over page names and NAME lines) and the corpus-wide term statistics,
//! and builds each shard's BM25 index as a task ([`rag_build_shard`]);
//! the shard stays on its worker. A question is routed to a few shards,
//! searched there by tasks that read the shard in place
//! ([`rag_search`], `Archived<Shard>`), and the merged hits are answered
//! from ([`answer`]).

pub mod answer;
pub mod bm25;
pub mod corpus;
pub mod llm;
pub mod roff;
pub mod shards;
pub mod trace;

use dfut::Archived;

use bm25::{Query, Shard, Stats};
use corpus::Corpus;

/// Shards the corpus is split into, by default.
pub const SHARDS: usize = 32;
/// Shards a question is searched in, by default.
pub const SHARDS_PER_QUERY: usize = 4;
/// Retries of shard builds and searches: a worker that dies loses no
/// question (its shards are built again elsewhere, from their lineage).
pub const RETRIES: u32 = 2;
/// Pages the router ranks to choose them.
const ROUTED_PAGES: u32 = 12;

/// Builds a shard's index from its chunks: `(chunk id, text)`.
#[dfut::remote]
pub fn rag_build_shard(docs: Vec<(u32, String)>) -> Shard {
    Shard::build(&docs)
}

/// Searches a shard in place: the best `(chunk id, score)` hits.
#[dfut::remote]
pub fn rag_search(shard: Archived<Shard>, query: Archived<Query>) -> Vec<(u32, f32)> {
    bm25::search(&shard, &query)
}

/// Pages in the order of a breadth-first walk of the SEE ALSO graph (links
/// taken both ways), component after component: cut into contiguous
/// blocks, it puts pages that link to each other in the same shard, as a
/// user following links reads them.
pub fn link_order(corpus: &Corpus) -> Vec<u32> {
    let n = corpus.pages.len();
    let mut next: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (i, p) in corpus.pages.iter().enumerate() {
        for (name, section) in &p.see_also {
            if let Some(j) = corpus.find(name, section) {
                next[i].push(j);
                next[j as usize].push(i as u32);
            }
        }
    }
    let mut seen = vec![false; n];
    let mut order = Vec::with_capacity(n);
    for start in 0..n {
        if seen[start] {
            continue;
        }
        seen[start] = true;
        let mut queue = std::collections::VecDeque::from([start as u32]);
        while let Some(p) = queue.pop_front() {
            order.push(p);
            for &q in &next[p as usize] {
                if !seen[q as usize] {
                    seen[q as usize] = true;
                    queue.push_back(q);
                }
            }
        }
    }
    order
}

/// Searches a shard in place: the best hits with their texts.
#[dfut::remote]
pub fn rag_search_texts(shard: Archived<Shard>, query: Archived<Query>) -> Vec<(u32, f32, String)> {
    bm25::search_texts(&shard, &query)
}

/// Merges the hits of several shards into one retrieval result (it stays
/// on a worker, for many generation steps to read).
#[dfut::remote]
pub fn rag_context(parts: dfut::Many<Vec<(u32, f32, String)>>, k: u32) -> Vec<(u32, f32, String)> {
    let mut all: Vec<(u32, f32, String)> = parts.into_iter().flatten().collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k as usize);
    all
}

/// One generation step of an agent: an answer to `prompt` quoted from a
/// retrieval result read in place.
#[dfut::remote]
pub fn rag_generate(context: Archived<Vec<(u32, f32, String)>>, prompt: String) -> String {
    let chunks: Vec<&str> = context.iter().map(|h| h.2.as_str()).collect();
    answer::quote(&prompt, &chunks).0
}

/// The driver's side: the corpus, the router, and the shards' handles.
pub struct Rag {
    /// Pages and chunks.
    pub corpus: Corpus,
    stats: Stats,
    router: dfut::rkyv::util::AlignedVec,
    router_stats: Stats,
    /// The shard of each page (all its chunks are there).
    pub shard_of_page: Vec<u32>,
    /// The shards' indexes, kept on the workers by the shard manager.
    pub shards: shards::Shards,
    /// Shards searched per question.
    pub shards_per_query: usize,
}

impl Rag {
    /// Splits `corpus` into `shards` shards (see [`Rag::new`]), all kept
    /// resident, and submits their builds.
    pub fn build(corpus: Corpus, shards: usize) -> dfut::Result<Self> {
        let rag = Self::new(corpus, shards, shards)?;
        for s in 0..rag.shards.len() {
            let _kept = rag.shards.warm(s as u32);
        }
        Ok(rag)
    }

    /// Splits `corpus` into `shards` shards of linked pages (see
    /// [`link_order`]), at most `resident` of them kept in the cluster at
    /// once; none is built yet.
    pub fn new(corpus: Corpus, shards: usize, resident: usize) -> dfut::Result<Self> {
        let shards = shards.max(1);
        let stats = Stats::of(corpus.chunks.iter().map(|c| c.text.as_str()));
        let page_docs: Vec<(u32, String)> = corpus
            .pages
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32, format!("{} {} {}", p.name, p.name, p.summary)))
            .collect();
        let router_stats = Stats::of(page_docs.iter().map(|(_, t)| t.as_str()));
        let router = dfut::rkyv::to_bytes::<dfut::rkyv::rancor::Error>(&Shard::build(&page_docs))
            .map_err(|e| dfut::Error::Encode(dfut::Cause::new(e)))?;
        let mut shard_of_page = vec![0u32; corpus.pages.len()];
        let n = corpus.pages.len().max(1);
        for (rank, page) in link_order(&corpus).into_iter().enumerate() {
            shard_of_page[page as usize] = (rank * shards / n) as u32;
        }
        let mut docs: Vec<Vec<(u32, String)>> = vec![Vec::new(); shards];
        for (id, c) in corpus.chunks.iter().enumerate() {
            docs[shard_of_page[c.page as usize] as usize].push((id as u32, c.text.clone()));
        }
        let shards = shards::Shards::new(docs, resident);
        Ok(Self {
            corpus,
            stats,
            router,
            router_stats,
            shard_of_page,
            shards,
            shards_per_query: SHARDS_PER_QUERY,
        })
    }

    /// The shards to search for `question`: those of the router's best
    /// pages, best first.
    pub fn route(&self, question: &str) -> Vec<u32> {
        let query = self.router_stats.query(question, ROUTED_PAGES);
        let bytes = match dfut::rkyv::to_bytes::<dfut::rkyv::rancor::Error>(&query) {
            Ok(b) => b,
            Err(_) => return Vec::new(),
        };
        let (Ok(router), Ok(q)) = (
            dfut::rkyv::access::<bm25::ArchivedShard, dfut::rkyv::rancor::Error>(&self.router),
            dfut::rkyv::access::<bm25::ArchivedQuery, dfut::rkyv::rancor::Error>(&bytes),
        ) else {
            return Vec::new();
        };
        let mut shards = Vec::new();
        for (page, _) in bm25::search(router, q) {
            let s = self.shard_of_page[page as usize];
            if !shards.contains(&s) {
                shards.push(s);
            }
            if shards.len() == self.shards_per_query {
                break;
            }
        }
        shards
    }

    /// The `k` best chunks for `question`: routed, searched on the shards'
    /// workers, merged.
    pub fn retrieve(&self, question: &str, k: u32) -> dfut::Result<Vec<(u32, f32)>> {
        let query = self.stats.query(question, k);
        let searches: Vec<_> = dfut::Options::new().retries(RETRIES).call(|| {
            self.route(question)
                .into_iter()
                .map(|s| rag_search(self.shards.get(s), query.clone()))
                .collect()
        });
        let mut hits = Vec::new();
        for s in searches {
            hits.extend(s.get()?);
        }
        bm25::rank(&mut hits, k as usize);
        Ok(hits)
    }

    /// The retrieval for `question` as one future on a worker: the routed
    /// shards searched, their hits merged there, never sent here.
    pub fn context(&self, question: &str, k: u32) -> dfut::DistFuture<Vec<(u32, f32, String)>> {
        let query = self.stats.query(question, k);
        dfut::Options::new().retries(RETRIES).call(|| {
            let parts: Vec<_> = self
                .route(question)
                .into_iter()
                .map(|s| rag_search_texts(self.shards.get(s), query.clone()))
                .collect();
            rag_context(&parts[..], k)
        })
    }

    /// Answers `question` from its best chunks: extracted from them, or
    /// by `llm` given them.
    pub fn ask(&self, question: &str, llm: Option<&llm::Llm>) -> dfut::Result<answer::Answer> {
        let hits = self.retrieve(question, 10)?;
        let extracted = answer::extract(&self.corpus, question, &hits);
        let Some(llm) = llm else {
            return Ok(extracted);
        };
        let sources: Vec<(String, String)> = hits
            .iter()
            .filter_map(|(c, _)| self.corpus.chunks.get(*c as usize))
            .map(|c| {
                let text = c.text.split_once(": ").map_or(c.text.as_str(), |(_, t)| t);
                (self.corpus.pages[c.page as usize].cite(), text.to_owned())
            })
            .collect();
        llm.answer(question, &sources, extracted.follow_ups)
            .map_err(dfut::Error::Transport)
    }

    /// Recall@10 of the whole pipeline: each page's NAME line as a
    /// question whose right answer is that page, found if one of the 10
    /// best chunks is from it. Returns (found, asked).
    pub fn recall_at_10(&self) -> dfut::Result<(usize, usize)> {
        let mut found = 0;
        let asked = self.corpus.pages.len();
        for (i, page) in self.corpus.pages.iter().enumerate() {
            let hits = self.retrieve(&page.summary, 10)?;
            if hits
                .iter()
                .any(|(c, _)| self.corpus.chunks[*c as usize].page as usize == i)
            {
                found += 1;
            }
        }
        Ok((found, asked))
    }
}
