//! The corpus: the Linux manual pages of Debian's `manpages` and
//! `manpages-dev` packages, read at run time, cut into chunks.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::roff;

/// Characters a chunk holds at most (its page prefix aside), about.
pub const CHUNK_CHARS: usize = 800;

/// One manual page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Its name, e.g. `pipe`.
    pub name: String,
    /// Its section, e.g. `2`.
    pub section: String,
    /// The NAME line, e.g. `pipe, pipe2 - create pipe`.
    pub summary: String,
    /// The pages it names in SEE ALSO, as (name, section).
    pub see_also: Vec<(String, String)>,
}

impl Page {
    /// `name(section)`, as citations read.
    pub fn cite(&self) -> String {
        format!("{}({})", self.name, self.section)
    }
}

/// One chunk of a page's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Index of its page in [`Corpus::pages`].
    pub page: u32,
    /// Its text, prefixed with its page (`pipe(2): ...`).
    pub text: String,
}

/// Every page and chunk.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// The pages, sorted by name and section.
    pub pages: Vec<Page>,
    /// The chunks, page by page.
    pub chunks: Vec<Chunk>,
}

impl Corpus {
    /// The index of page `name(section)`, if it is in the corpus.
    pub fn find(&self, name: &str, section: &str) -> Option<u32> {
        self.pages
            .binary_search_by(|p| (p.name.as_str(), p.section.as_str()).cmp(&(name, section)))
            .ok()
            .map(|i| i as u32)
    }
}

/// The packages whose pages make the corpus.
pub const PACKAGES: [&str; 2] = ["manpages", "manpages-dev"];

/// The gzipped pages of the corpus packages (`dpkg -L`), or why not.
pub fn page_files() -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("dpkg")
        .arg("-L")
        .args(PACKAGES)
        .output()
        .map_err(|e| {
            format!("cannot run dpkg: {e} (the corpus is Debian's manpages and manpages-dev)")
        })?;
    if !out.status.success() {
        return Err(format!(
            "dpkg -L {}: {} (install them: apt-get install manpages manpages-dev)",
            PACKAGES.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let files: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("/usr/share/man/man") && l.ends_with(".gz"))
        .map(PathBuf::from)
        // Links are other names of a page already listed.
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()))
        .collect();
    if files.is_empty() {
        return Err("the manpages packages list no pages (are they installed?)".into());
    }
    Ok(files)
}

/// Reads and parses every page of the corpus packages.
pub fn load() -> Result<Corpus, String> {
    let files = page_files()?;
    let mut parsed = Vec::new();
    for file in &files {
        let Some((name, section)) = page_name(file) else {
            continue;
        };
        let mut src = String::new();
        let mut gz = flate2::read::GzDecoder::new(
            std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?,
        );
        if gz.read_to_string(&mut src).is_err() {
            continue; // not UTF-8: skipped
        }
        if let Some(p) = roff::parse(&src) {
            parsed.push((name, section, p));
        }
    }
    parsed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    parsed.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let mut corpus = Corpus::default();
    for (name, section, p) in parsed {
        let page = corpus.pages.len() as u32;
        let prefix = format!("{name}({section}): ");
        for text in pack(&p.paragraphs, CHUNK_CHARS) {
            corpus.chunks.push(Chunk {
                page,
                text: format!("{prefix}{text}"),
            });
        }
        corpus.pages.push(Page {
            name,
            section,
            summary: p.summary,
            see_also: p.see_also,
        });
    }
    Ok(corpus)
}

/// `pipe.2.gz` → (`pipe`, `2`).
fn page_name(file: &Path) -> Option<(String, String)> {
    let stem = file.file_name()?.to_str()?.strip_suffix(".gz")?;
    let (name, section) = stem.rsplit_once('.')?;
    Some((name.to_owned(), section.to_owned()))
}

/// Paragraphs packed greedily into chunks of at most `max` characters; a
/// longer paragraph is cut at spaces.
pub fn pack(paragraphs: &[String], max: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let push = |current: &mut String, chunks: &mut Vec<String>| {
        if !current.is_empty() {
            chunks.push(std::mem::take(current));
        }
    };
    for para in paragraphs {
        for piece in cut(para, max) {
            if !current.is_empty() && current.len() + 1 + piece.len() > max {
                push(&mut current, &mut chunks);
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(piece);
        }
    }
    push(&mut current, &mut chunks);
    chunks
}

/// `text` in pieces of at most `max` bytes, cut at spaces where possible.
fn cut(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut end = max;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let at = rest[..end].rfind(' ').filter(|&i| i > 0).unwrap_or(end);
        pieces.push(rest[..at].trim_end());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_are_packed_greedily_and_long_ones_cut_at_spaces() {
        let paras: Vec<String> = ["aaa bbb", "ccc", "d".repeat(10).as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(pack(&paras, 11), vec!["aaa bbb ccc", "dddddddddd"]);
        let long = vec!["one two three four five".to_owned()];
        assert_eq!(pack(&long, 9), vec!["one two", "three", "four five"]);
        assert!(pack(&long, 9).iter().all(|c| c.len() <= 9));
    }
}
