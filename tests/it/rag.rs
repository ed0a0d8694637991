//! The RAG workload on real worker processes: the manual-page corpus, the
//! sharded BM25 index built by tasks, and the quality of the pipeline.

use dfut_benches::rag::{Rag, corpus};

use crate::util::cluster;

#[test]
fn the_manual_pages_are_answered_from_with_recall_above_ninety_percent() {
    let corpus = corpus::load().unwrap_or_else(|e| panic!("the corpus: {e}"));
    let (pages, chunks) = (corpus.pages.len(), corpus.chunks.len());
    assert!((1_000..1_300).contains(&pages), "{pages} pages");
    assert!((7_000..11_000).contains(&chunks), "{chunks} chunks");
    let longest = corpus
        .chunks
        .iter()
        .map(|c| c.text.split_once(": ").map_or(0, |(_, t)| t.len()))
        .max();
    assert!(longest <= Some(corpus::CHUNK_CHARS), "{longest:?}");
    let pipe = corpus
        .pages
        .iter()
        .find(|p| p.name == "pipe" && p.section == "2")
        .expect("pipe(2) is in the corpus");
    assert_eq!(pipe.summary, "pipe, pipe2 - create pipe");
    assert!(pipe.see_also.contains(&("fork".to_owned(), "2".to_owned())));

    let rt = cluster(2);
    let _g = rt.enter();
    let rag = Rag::build(corpus, 32).unwrap();
    let (found, asked) = rag.recall_at_10().unwrap();
    let recall = found as f64 / asked as f64;
    assert!(recall >= 0.90, "recall@10 {recall:.3} ({found} of {asked})");
    let answer = rag.ask("how do I create a pipe").unwrap();
    assert!(
        answer.citations.iter().any(|c| c.starts_with("pipe(")),
        "{answer:?}"
    );
    assert!(!answer.follow_ups.is_empty(), "{answer:?}");
}
