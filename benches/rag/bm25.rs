//! BM25 over chunks: tokens, a shard's index in a flat rkyv layout that a
//! search task reads in place (`Archived<Shard>`), and the corpus-wide
//! statistics that make scores of different shards comparable.

use std::collections::HashMap;

use dfut::rkyv::{Archive, Deserialize, Serialize};

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalisation.
const B: f32 = 0.75;

/// English stop words: too common to tell documents apart.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Lowercase word tokens (letters, digits, `_`), stop words left out.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| STOP_WORDS.binary_search(&w.as_str()).is_err())
        .collect()
}

/// One shard's inverted index, flat: sorted terms, each with a run of
/// postings (document, term frequency) in `docs` / `tfs`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[rkyv(crate = dfut::rkyv)]
pub struct Shard {
    /// Distinct terms, sorted.
    pub terms: Vec<String>,
    /// Postings of `terms[i]` are `offsets[i]..offsets[i + 1]`.
    pub offsets: Vec<u32>,
    /// Posting documents (indexes into `chunk_ids`).
    pub docs: Vec<u32>,
    /// Posting term frequencies.
    pub tfs: Vec<u16>,
    /// Tokens per document.
    pub doc_len: Vec<u32>,
    /// Each document's chunk id in the corpus.
    pub chunk_ids: Vec<u32>,
    /// Each document's text (what an answer quotes).
    pub texts: Vec<String>,
}

impl Shard {
    /// Indexes `(chunk id, text)` documents.
    pub fn build(docs: &[(u32, String)]) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u16)>> = HashMap::new();
        let mut shard = Shard::default();
        for (local, (id, text)) in docs.iter().enumerate() {
            let toks = tokens(text);
            shard.doc_len.push(toks.len() as u32);
            shard.chunk_ids.push(*id);
            shard.texts.push(text.clone());
            let mut counts: HashMap<String, u16> = HashMap::new();
            for t in toks {
                let c = counts.entry(t).or_default();
                *c = c.saturating_add(1);
            }
            for (t, c) in counts {
                postings.entry(t).or_default().push((local as u32, c));
            }
        }
        let mut terms: Vec<(String, Vec<(u32, u16)>)> = postings.into_iter().collect();
        terms.sort_by(|a, b| a.0.cmp(&b.0));
        shard.offsets.push(0);
        for (term, mut list) in terms {
            list.sort_unstable();
            for (d, tf) in list {
                shard.docs.push(d);
                shard.tfs.push(tf);
            }
            shard.terms.push(term);
            shard.offsets.push(shard.docs.len() as u32);
        }
        shard
    }
}

/// A query's terms with their corpus-wide weights, and the corpus's mean
/// document length.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = dfut::rkyv)]
pub struct Query {
    /// (term, inverse document frequency), distinct terms.
    pub terms: Vec<(String, f32)>,
    /// Mean tokens per document over the corpus.
    pub avg_len: f32,
    /// Hits wanted.
    pub k: u32,
}

/// Document frequencies over the whole corpus.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    df: HashMap<String, u32>,
    docs: u32,
    tokens: u64,
}

impl Stats {
    /// Counts `texts`.
    pub fn of<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = Stats::default();
        for text in texts {
            let mut toks = tokens(text);
            s.docs += 1;
            s.tokens += toks.len() as u64;
            toks.sort_unstable();
            toks.dedup();
            for t in toks {
                *s.df.entry(t).or_default() += 1;
            }
        }
        s
    }

    /// BM25's inverse document frequency of `term`.
    pub fn idf(&self, term: &str) -> f32 {
        let n = self.docs as f32;
        let df = self.df.get(term).copied().unwrap_or(0) as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// The query for `text`, wanting `k` hits.
    pub fn query(&self, text: &str, k: u32) -> Query {
        let mut terms = tokens(text);
        terms.sort_unstable();
        terms.dedup();
        Query {
            terms: terms
                .into_iter()
                .map(|t| {
                    let w = self.idf(&t);
                    (t, w)
                })
                .collect(),
            avg_len: if self.docs == 0 {
                1.0
            } else {
                self.tokens as f32 / self.docs as f32
            },
            k,
        }
    }
}

/// The `query.k` best (chunk id, score) of a shard read in place, best
/// first (ties: lower chunk id first).
pub fn search(shard: &ArchivedShard, query: &ArchivedQuery) -> Vec<(u32, f32)> {
    let mut scores: HashMap<u32, f32> = HashMap::new();
    let avg = query.avg_len.to_native().max(1.0);
    for pair in query.terms.iter() {
        let (term, idf) = (&pair.0, pair.1.to_native());
        let Ok(i) = shard
            .terms
            .binary_search_by(|t| t.as_str().cmp(term.as_str()))
        else {
            continue;
        };
        let (from, to) = (
            shard.offsets[i].to_native() as usize,
            shard.offsets[i + 1].to_native() as usize,
        );
        for p in from..to {
            let doc = shard.docs[p].to_native();
            let tf = f32::from(shard.tfs[p].to_native());
            let len = shard.doc_len[doc as usize].to_native() as f32;
            let s = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg));
            *scores.entry(doc).or_default() += s;
        }
    }
    let mut hits: Vec<(u32, f32)> = scores
        .into_iter()
        .map(|(doc, s)| (shard.chunk_ids[doc as usize].to_native(), s))
        .collect();
    rank(&mut hits, query.k.to_native() as usize);
    hits
}

/// Like [`search`], each hit with its document's text.
pub fn search_texts(shard: &ArchivedShard, query: &ArchivedQuery) -> Vec<(u32, f32, String)> {
    let hits = search(shard, query);
    hits.into_iter()
        .map(|(id, score)| {
            let text = shard
                .chunk_ids
                .iter()
                .position(|c| c.to_native() == id)
                .map(|i| shard.texts[i].as_str().to_owned())
                .unwrap_or_default();
            (id, score, text)
        })
        .collect()
}

/// Sorts hits best first (ties: lower id first) and keeps `k`.
pub fn rank(hits: &mut Vec<(u32, f32)>, k: usize) {
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    hits.truncate(k);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_word_list_is_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_document_with_the_rare_term_ranks_first() {
        let docs = vec![
            (10, "the pipe is a channel for data".to_owned()),
            (11, "fork creates a child process".to_owned()),
            (12, "data data data channel".to_owned()),
        ];
        let shard = Shard::build(&docs);
        let stats = Stats::of(docs.iter().map(|(_, t)| t.as_str()));
        let query = stats.query("create a pipe", 2);
        let shard_bytes = dfut::rkyv::to_bytes::<dfut::rkyv::rancor::Error>(&shard).unwrap();
        let query_bytes = dfut::rkyv::to_bytes::<dfut::rkyv::rancor::Error>(&query).unwrap();
        let archived =
            dfut::rkyv::access::<ArchivedShard, dfut::rkyv::rancor::Error>(&shard_bytes).unwrap();
        let q =
            dfut::rkyv::access::<ArchivedQuery, dfut::rkyv::rancor::Error>(&query_bytes).unwrap();
        let hits = search(archived, q);
        assert_eq!(hits[0].0, 10, "{hits:?}");
        assert_eq!(tokens("The PIPE(2), pipe2!"), vec!["pipe", "2", "pipe2"]);
    }
}
