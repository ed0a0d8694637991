//! The default answerer: extractive. Sentences of the retrieved chunks
//! are chosen by how many of the question's terms they hold, and each is
//! cited as `page(section)`.

use super::bm25::tokens;
use super::corpus::Corpus;

/// Sentences an answer holds at most.
const SENTENCES: usize = 3;
/// Longer "sentences" are not quoted.
const MAX_SENTENCE: usize = 300;

/// An answer with its sources.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The answer's text, each sentence followed by its citation.
    pub text: String,
    /// The pages cited, best first.
    pub citations: Vec<String>,
    /// Suggested follow-ups: the SEE ALSO pages of the first cited page.
    pub follow_ups: Vec<String>,
}

/// Chooses sentences of the chunks `hits` (best first) for `question`.
pub fn extract(corpus: &Corpus, question: &str, hits: &[(u32, f32)]) -> Answer {
    let chunks: Vec<&str> = hits
        .iter()
        .filter_map(|(c, _)| corpus.chunks.get(*c as usize))
        .map(|c| c.text.as_str())
        .collect();
    let (text, citations) = quote(question, &chunks);
    let follow_ups = citations
        .first()
        .and_then(|cite| {
            let (name, section) = cite.trim_end_matches(')').split_once('(')?;
            corpus.find(name, section)
        })
        .map(|p| {
            corpus.pages[p as usize]
                .see_also
                .iter()
                .map(|(n, s)| format!("{n}({s})"))
                .collect()
        })
        .unwrap_or_default();
    Answer {
        text,
        citations,
        follow_ups,
    }
}

/// The answer's text and its citations, from `chunks` (best first, each
/// prefixed with its page as `name(section): `).
pub fn quote(question: &str, chunks: &[&str]) -> (String, Vec<String>) {
    let mut wanted = tokens(question);
    wanted.sort_unstable();
    wanted.dedup();
    // (overlap, chunk rank, sentence, citation)
    let mut candidates: Vec<(usize, usize, &str, &str)> = Vec::new();
    for (rank, chunk) in chunks.iter().enumerate() {
        let (cite, text) = chunk.split_once(": ").unwrap_or(("", chunk));
        // Long runs without a full stop are code (a SYNOPSIS), not prose.
        for sentence in sentences(text).filter(|s| s.len() <= MAX_SENTENCE) {
            let mut have = tokens(sentence);
            have.sort_unstable();
            have.dedup();
            let overlap = have
                .iter()
                .filter(|t| wanted.binary_search(t).is_ok())
                .count();
            if overlap > 0 {
                candidates.push((overlap, rank, sentence, cite));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut picked: Vec<(&str, &str)> = Vec::new();
    let mut citations: Vec<String> = Vec::new();
    for (_, _, sentence, cite) in candidates {
        if picked.len() == SENTENCES {
            break;
        }
        if picked.iter().any(|(s, _)| *s == sentence) {
            continue;
        }
        if !citations.iter().any(|c| c == cite) {
            citations.push(cite.to_owned());
        }
        picked.push((sentence, cite));
    }
    let text = picked
        .iter()
        .map(|(s, c)| format!("{s} [{c}]"))
        .collect::<Vec<_>>()
        .join(" ");
    (text, citations)
}

/// Sentences of `text`: cut after `.`, `!` or `?` followed by a space.
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let rest_trim = rest.trim_start();
        if rest_trim.is_empty() {
            return None;
        }
        let end = rest_trim
            .char_indices()
            .find(|(i, c)| matches!(c, '.' | '!' | '?') && rest_trim[i + 1..].starts_with(' '))
            .map_or(rest_trim.len(), |(i, _)| i + 1);
        let (s, r) = rest_trim.split_at(end);
        rest = r;
        Some(s.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rag::corpus::{Chunk, Page};

    #[test]
    fn sentences_with_the_question_terms_are_chosen_and_cited() {
        let corpus = Corpus {
            pages: vec![Page {
                name: "pipe".into(),
                section: "2".into(),
                summary: "pipe - create pipe".into(),
                see_also: vec![("fork".into(), "2".into())],
            }],
            chunks: vec![Chunk {
                page: 0,
                text: "pipe(2): Unrelated words here. pipe() creates a pipe for data. Done!".into(),
            }],
        };
        let a = extract(&corpus, "how do I create a pipe", &[(0, 1.0)]);
        assert_eq!(a.text, "pipe() creates a pipe for data. [pipe(2)]");
        assert_eq!(a.citations, vec!["pipe(2)"]);
        assert_eq!(a.follow_ups, vec!["fork(2)"]);
    }
}
