//! Word count: the map and reduce functions of the word-count job and of
//! workload W5, and the plain code they share with the single-threaded
//! floor.
//!
//! A word is a maximal run of alphanumeric characters
//! (`char::is_alphanumeric`), lowercased. Counts travel as
//! [`Counts`]: `(word, count)` pairs sorted by word.
//!
//! File chunks are byte ranges that the map tasks read themselves (paths
//! travel, not bytes). Each range is moved to the first ASCII byte that is
//! not alphanumeric at or after its nominal start and end (or the end of
//! the file), so chunks partition the file exactly, never split a word or
//! a UTF-8 sequence, and every word is counted once.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dfut::Many;
use rustc_hash::FxHashMap;

/// `(word, count)` pairs, sorted by word.
pub type Counts = Vec<(String, u64)>;

/// Bytes of one synthetic chunk (W5).
pub const SYNTHETIC_CHUNK: usize = 1 << 20;
/// Distinct words of the synthetic corpus: `w0` .. `w9999`.
pub const SYNTHETIC_WORDS: usize = 10_000;
/// The seed of W5.
pub const SYNTHETIC_SEED: u64 = 42;

/// Counts the words of `text` into `counts`.
pub fn count_words<'a>(text: &'a str, counts: &mut FxHashMap<Cow<'a, str>, u64>) {
    let mut start: Option<usize> = None;
    let mut needs_lowering = false;
    let mut add = |word: &'a str, lower: bool| {
        let key = if lower {
            Cow::Owned(word.to_lowercase())
        } else {
            Cow::Borrowed(word)
        };
        *counts.entry(key).or_insert(0) += 1;
    };
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            if start.is_none() {
                start = Some(i);
            }
            if !(c.is_ascii_lowercase() || c.is_ascii_digit()) {
                needs_lowering = true;
            }
        } else if let Some(s) = start.take() {
            add(&text[s..i], needs_lowering);
            needs_lowering = false;
        }
    }
    if let Some(s) = start {
        add(&text[s..], needs_lowering);
    }
}

/// The counts of `text`, sorted by word.
pub fn count_text(text: &str) -> Counts {
    let mut counts = FxHashMap::default();
    count_words(text, &mut counts);
    sorted(counts)
}

fn sorted(counts: FxHashMap<Cow<'_, str>, u64>) -> Counts {
    let mut v: Counts = counts
        .into_iter()
        .map(|(w, c)| (w.into_owned(), c))
        .collect();
    v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Merges sorted counts, summing the counts of equal words.
pub fn merge(parts: impl IntoIterator<Item = Counts>) -> Counts {
    let mut all: Counts = parts.into_iter().flatten().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Counts = Vec::with_capacity(all.len());
    for (word, count) in all {
        match out.last_mut() {
            Some((w, c)) if *w == word => *c += count,
            _ => out.push((word, count)),
        }
    }
    out
}

/// The `n` most frequent words, most frequent first, ties by word.
pub fn top(counts: &Counts, n: usize) -> Vec<(&str, u64)> {
    let mut v: Vec<(&str, u64)> = counts.iter().map(|(w, c)| (w.as_str(), *c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.truncate(n);
    v
}

/// Total words in `counts`.
pub fn total(counts: &Counts) -> u64 {
    counts.iter().map(|(_, c)| c).sum()
}

/// Map task over a file chunk: counts the words of `path` in the byte range
/// starting at `start` and ending at `end`, moved to word boundaries.
#[dfut::remote(retries = 3)]
pub fn count_file_chunk(path: String, start: u64, end: u64) -> Result<Counts, String> {
    let text = read_chunk(Path::new(&path), start, end)?;
    Ok(count_text(&text))
}

/// Map task of W5: generates synthetic chunk `index` and counts it.
#[dfut::remote(retries = 3)]
pub fn count_synthetic(index: u64, seed: u64) -> Counts {
    count_text(&synthetic_chunk(index, seed))
}

/// Reduce task: merges counts.
#[dfut::remote(retries = 3)]
pub fn merge_counts(parts: Many<Counts>) -> Counts {
    merge(parts)
}

fn is_separator(b: u8) -> bool {
    b < 0x80 && !b.is_ascii_alphanumeric()
}

/// The first position at or after `pos` holding a separator, or `len`.
fn boundary(file: &mut File, pos: u64, len: u64) -> std::io::Result<u64> {
    if pos == 0 || pos >= len {
        return Ok(pos.min(len));
    }
    file.seek(SeekFrom::Start(pos))?;
    let mut block = [0u8; 4096];
    let mut at = pos;
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            return Ok(len);
        }
        if let Some(i) = block[..n].iter().position(|b| is_separator(*b)) {
            return Ok(at + i as u64);
        }
        at += n as u64;
    }
}

/// Reads the part of `path` that the chunk `[start, end)` owns: from the
/// first separator at or after `start` (or the file's start) to the first
/// separator at or after `end` (or the file's end).
pub fn read_chunk(path: &Path, start: u64, end: u64) -> Result<String, String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = File::open(path).map_err(err)?;
    let len = file.metadata().map_err(err)?.len();
    let from = boundary(&mut file, start, len).map_err(err)?;
    let to = boundary(&mut file, end, len).map_err(err)?;
    if from >= to {
        return Ok(String::new());
    }
    file.seek(SeekFrom::Start(from)).map_err(err)?;
    let mut buf = vec![0u8; (to - from) as usize];
    file.read_exact(&mut buf).map_err(err)?;
    String::from_utf8(buf).map_err(|e| {
        let offset = from + e.utf8_error().valid_up_to() as u64;
        format!("{}: invalid UTF-8 at byte offset {offset}", path.display())
    })
}

/// Splits `paths` (files, or directories walked recursively in name order)
/// into `(path, start, end)` chunks of about `chunk_bytes`.
pub fn plan_chunks(
    paths: &[PathBuf],
    chunk_bytes: u64,
) -> std::io::Result<Vec<(String, u64, u64)>> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let mut chunks = Vec::new();
    for f in files {
        let len = std::fs::metadata(&f)?.len();
        let name = f.to_string_lossy().into_owned();
        let mut start = 0;
        while start < len {
            let end = (start + chunk_bytes.max(1)).min(len);
            chunks.push((name.clone(), start, end));
            start = end;
        }
    }
    Ok(chunks)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for e in entries {
            collect_files(&e, out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// SplitMix64: a small, fast, well-known generator, so the corpus is the
/// same in every implementation that follows this definition.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Cumulative Zipf(s = 1) probabilities of ranks 1..=10,000, scaled to u64.
fn zipf_cdf() -> &'static [u64] {
    static CDF: OnceLock<Vec<u64>> = OnceLock::new();
    CDF.get_or_init(|| {
        let weights: Vec<f64> = (1..=SYNTHETIC_WORDS).map(|r| 1.0 / r as f64).collect();
        let sum: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cdf: Vec<u64> = weights
            .iter()
            .map(|w| {
                acc += w / sum;
                (acc * u64::MAX as f64) as u64
            })
            .collect();
        if let Some(last) = cdf.last_mut() {
            *last = u64::MAX;
        }
        cdf
    })
}

/// Synthetic chunk `index` of W5: words `w0`..`w9999` drawn with
/// probability proportional to 1/rank (rank = number + 1) from SplitMix64
/// seeded with `seed * 2^32 + index`, joined by single spaces, cut at the
/// last space at or before 1 MiB.
pub fn synthetic_chunk(index: u64, seed: u64) -> String {
    let cdf = zipf_cdf();
    let mut rng = SplitMix64((seed << 32).wrapping_add(index));
    let mut out = Vec::with_capacity(SYNTHETIC_CHUNK + 16);
    let mut digits = [0u8; 8];
    while out.len() <= SYNTHETIC_CHUNK {
        let r = rng.next();
        let mut rank = cdf.partition_point(|&c| c < r);
        out.push(b'w');
        let mut n = 0;
        loop {
            digits[n] = b'0' + (rank % 10) as u8;
            n += 1;
            rank /= 10;
            if rank == 0 {
                break;
            }
        }
        out.extend(digits[..n].iter().rev());
        out.push(b' ');
    }
    let cut = out[..=SYNTHETIC_CHUNK]
        .iter()
        .rposition(|b| *b == b' ')
        .unwrap_or(0);
    out.truncate(cut);
    // Only ASCII letters, digits and spaces were written.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_alphanumeric_runs_lowercased() {
        let counts = count_text("Hello, hello! Straße STRASSE naïve 42x 42x_y; ÉCOLE école");
        let get = |w: &str| counts.iter().find(|(k, _)| k == w).map(|(_, c)| *c);
        assert_eq!(get("hello"), Some(2));
        assert_eq!(get("straße"), Some(1));
        assert_eq!(get("strasse"), Some(1));
        assert_eq!(get("naïve"), Some(1));
        assert_eq!(get("42x"), Some(2));
        assert_eq!(get("y"), Some(1));
        assert_eq!(get("école"), Some(2));
        assert_eq!(total(&counts), 10);
    }

    #[test]
    fn merge_sums_equal_words_and_top_breaks_ties_by_word() {
        let a = count_text("b a a");
        let b = count_text("a b c");
        let m = merge([a, b]);
        assert_eq!(m, vec![("a".into(), 3), ("b".into(), 2), ("c".into(), 1)]);
        let m = merge([count_text("x y z y x")]);
        assert_eq!(top(&m, 2), vec![("x", 2), ("y", 2)]);
    }

    #[test]
    fn the_synthetic_chunk_has_the_defined_shape() {
        let text = synthetic_chunk(3, SYNTHETIC_SEED);
        assert!(text.len() <= SYNTHETIC_CHUNK && text.len() > SYNTHETIC_CHUNK - 8);
        assert!(!text.ends_with(' ') && !text.contains("  "));
        assert_eq!(text, synthetic_chunk(3, SYNTHETIC_SEED));
        assert_ne!(text, synthetic_chunk(4, SYNTHETIC_SEED));
        let counts = count_text(&text);
        let top = top(&counts, 2);
        // Zipf: w0 about twice as frequent as w1.
        assert_eq!((top[0].0, top[1].0), ("w0", "w1"));
        let ratio = top[0].1 as f64 / top[1].1 as f64;
        assert!((1.8..2.2).contains(&ratio), "{ratio}");
        assert!(
            counts
                .iter()
                .all(|(w, _)| w[1..].parse::<usize>().is_ok_and(|n| n < SYNTHETIC_WORDS))
        );
    }

    #[test]
    fn chunks_partition_a_file_exactly_whatever_the_chunk_size() {
        let dir = std::env::temp_dir().join(format!("dfut-wc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.txt");
        let text = "Ünïcode wörds, split ánywhere: αβγ δεζ — 123abc end.\nSecond line!! x";
        std::fs::write(&path, text).unwrap();
        let whole = count_text(text);
        for size in 1..=text.len() as u64 {
            let chunks = plan_chunks(std::slice::from_ref(&path), size).unwrap();
            let parts: Vec<Counts> = chunks
                .iter()
                .map(|(p, s, e)| count_text(&read_chunk(Path::new(p), *s, *e).unwrap()))
                .collect();
            assert_eq!(merge(parts), whole, "chunk size {size}");
        }
    }

    #[test]
    fn invalid_utf8_names_the_file_and_offset() {
        let dir = std::env::temp_dir().join(format!("dfut-wc-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.txt");
        std::fs::write(&path, b"good words \xff\xfe more").unwrap();
        let err = read_chunk(&path, 0, 100).unwrap_err();
        assert!(
            err.contains("bad.txt") && err.contains("byte offset 11"),
            "{err}"
        );
    }
}
