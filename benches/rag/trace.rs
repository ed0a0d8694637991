//! The benchmark's trace: seeded sessions of a user who asks, reads the
//! answer, then with probability α follows a link (a SEE ALSO page of the
//! page asked about, chosen uniformly) or asks a fresh question.
//!
//! A question is a page's NAME line, so each has a right answer (that
//! page), and recall is measured on the trace itself.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::corpus::Corpus;

/// One question of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The page whose NAME line is asked.
    pub page: u32,
    /// Whether it follows a suggested link of the previous answer.
    pub followed: bool,
    /// The user's think time after reading the answer, in milliseconds.
    pub think_ms: u32,
}

/// `sessions` sessions of `steps` questions each, with link-following
/// probability `alpha` and mean think time `think_ms` (exponential),
/// from `seed`: the same trace for every mode.
pub fn sessions(
    corpus: &Corpus,
    sessions: usize,
    steps: usize,
    alpha: f64,
    think_ms: f64,
    seed: u64,
) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = corpus.pages.len() as u32;
    let mut trace = Vec::with_capacity(sessions * steps);
    if n == 0 {
        return trace;
    }
    for _ in 0..sessions {
        let mut page = rng.random_range(0..n);
        let mut followed = false;
        for _ in 0..steps {
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            let think = (-u.ln() * think_ms).min(10.0 * think_ms) as u32;
            trace.push(Step {
                page,
                followed,
                think_ms: think,
            });
            let links: Vec<u32> = corpus.pages[page as usize]
                .see_also
                .iter()
                .filter_map(|(name, section)| corpus.find(name, section))
                .collect();
            if !links.is_empty() && rng.random_bool(alpha.clamp(0.0, 1.0)) {
                page = links[rng.random_range(0..links.len())];
                followed = true;
            } else {
                page = rng.random_range(0..n);
                followed = false;
            }
        }
    }
    trace
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rag::corpus::Page;

    fn page(name: &str, links: &[&str]) -> Page {
        Page {
            name: name.into(),
            section: "2".into(),
            summary: format!("{name} - does {name}"),
            see_also: links.iter().map(|l| (l.to_string(), "2".into())).collect(),
        }
    }

    #[test]
    fn with_alpha_one_every_step_after_the_first_follows_a_link() {
        let corpus = Corpus {
            pages: vec![page("a", &["b"]), page("b", &["a"]), page("c", &["a"])],
            chunks: Vec::new(),
        };
        let t = sessions(&corpus, 3, 5, 1.0, 100.0, 7);
        assert_eq!(t.len(), 15);
        for s in t.chunks(5) {
            assert!(!s[0].followed);
            assert!(s[1..].iter().all(|x| x.followed));
        }
        assert_eq!(t, sessions(&corpus, 3, 5, 1.0, 100.0, 7), "seeded");
        let never = sessions(&corpus, 3, 5, 0.0, 100.0, 7);
        assert!(never.iter().all(|x| !x.followed));
    }
}
