//! Manual pages in roff, as plain text: the NAME line, the SEE ALSO
//! references and the paragraphs of every section.
//!
//! Only what man pages use is understood: `man(7)` macros (font macros'
//! arguments are kept as text, layout macros break paragraphs, the rest
//! is dropped) and the common escapes (`\fB`, `\-`, `\(em`, `\[..]`,
//! `\*(..`, ...). A page that only includes another (`.so`) is an alias.

/// One parsed page.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The NAME section's text, e.g. `pipe, pipe2 - create pipe`.
    pub summary: String,
    /// Pages named in SEE ALSO, as (name, section).
    pub see_also: Vec<(String, String)>,
    /// Paragraphs of text, in order, each prefixed by nothing.
    pub paragraphs: Vec<String>,
}

/// Parses a page's roff source; `None` for an alias (`.so` only).
pub fn parse(src: &str) -> Option<Parsed> {
    let mut p = Parser::default();
    for raw in src.lines() {
        if raw.starts_with(".so ") {
            return None;
        }
        p.line(raw);
    }
    p.flush();
    let summary = collapse(&p.name_text);
    let see_also = references(&p.see_also_text);
    Some(Parsed {
        summary,
        see_also,
        paragraphs: p.paragraphs,
    })
}

#[derive(Default)]
struct Parser {
    section: String,
    current: String,
    paragraphs: Vec<String>,
    name_text: String,
    see_also_text: String,
    /// Inside `.ig` or `.de` (ignored until `..`).
    skipping: bool,
}

impl Parser {
    fn flush(&mut self) {
        let text = collapse(&self.current);
        self.current.clear();
        if text.is_empty() {
            return;
        }
        match self.section.as_str() {
            "NAME" => {
                self.name_text.push(' ');
                self.name_text.push_str(&text);
            }
            "SEE ALSO" => {
                self.see_also_text.push(' ');
                self.see_also_text.push_str(&text);
            }
            _ => {}
        }
        self.paragraphs.push(text);
    }

    fn text(&mut self, s: &str) {
        self.current.push(' ');
        self.current.push_str(s);
    }

    fn line(&mut self, raw: &str) {
        if self.skipping {
            if raw.starts_with("..") {
                self.skipping = false;
            }
            return;
        }
        let is_request = raw.starts_with('.') || raw.starts_with('\'');
        if !is_request {
            if raw.trim().is_empty() {
                self.flush();
            } else {
                let t = unescape(raw);
                self.text(&t);
            }
            return;
        }
        let body = raw[1..].trim_start();
        if body.starts_with("\\\"") || body.is_empty() {
            return; // a comment, or an empty request
        }
        let (name, rest) = body
            .split_once(|c: char| c.is_whitespace())
            .unwrap_or((body, ""));
        let args = arguments(rest);
        match name {
            "SH" => {
                self.flush();
                self.section = unescape(&args.join(" ")).trim().to_uppercase();
            }
            "SS" => {
                self.flush();
                let title = unescape(&args.join(" "));
                self.text(&format!("{}:", title.trim()));
            }
            "PP" | "P" | "LP" | "TP" | "HP" | "sp" | "TQ" | "EX" | "EE" | "nf" | "fi" => {
                self.flush();
            }
            "IP" => {
                self.flush();
                if let Some(tag) = args.first() {
                    let tag = unescape(tag);
                    if tag.chars().any(char::is_alphanumeric) {
                        self.text(&tag);
                    }
                }
            }
            "B" | "I" | "SM" | "SB" => {
                let t = unescape(&args.join(" "));
                self.text(&t);
            }
            "BR" | "BI" | "IB" | "IR" | "RB" | "RI" => {
                let t = unescape(&args.concat());
                self.text(&t);
            }
            "UE" | "ME" => {
                // Trailing punctuation after a link.
                let t = unescape(&args.concat());
                if !t.is_empty() {
                    self.current.push_str(&t);
                }
            }
            "ig" | "de" | "am" => self.skipping = true,
            _ => {} // layout and definitions: no text
        }
    }
}

/// A request's arguments: words, or double-quoted strings (`""` inside a
/// quoted one is a quote).
fn arguments(rest: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        arg.push('"');
                    } else {
                        break;
                    }
                } else {
                    arg.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    args
}

/// Named characters (`\(xx`, `\[xx]`) as text.
fn named(name: &str) -> &'static str {
    match name {
        "em" | "en" | "hy" | "mi" => "-",
        "bu" => "*",
        "aq" | "oq" | "cq" => "'",
        "dq" | "lq" | "rq" | "Lq" | "Rq" => "\"",
        "co" => "(c)",
        "rg" => "(R)",
        "tm" => "(TM)",
        "<=" => "<=",
        ">=" => ">=",
        "!=" => "!=",
        "ti" | "ap" => "~",
        "ha" | "a^" => "^",
        "rs" => "\\",
        "ba" | "or" => "|",
        "mu" => "x",
        "->" => "->",
        "<-" => "<-",
        "de" => " degrees",
        "sl" => "/",
        _ => "",
    }
}

/// Roff escapes removed or turned into text.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else { break };
        match e {
            '"' => break, // a comment to the end of the line
            // A font (`\fB`, `\f(CW`, `\f[CR]`) or a string (`\*x`,
            // `\*(xx`, `\*[name]`): dropped.
            'f' | '*' => skip_name(&mut chars),
            '(' => {
                let name: String = [chars.next(), chars.next()].into_iter().flatten().collect();
                out.push_str(named(&name));
            }
            '[' => {
                let mut name = String::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    name.push(c);
                }
                out.push_str(named(&name));
            }
            's' => {
                if matches!(chars.peek(), Some('+' | '-')) {
                    chars.next();
                }
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
            }
            'e' | '\\' => out.push('\\'),
            '-' => out.push('-'),
            '~' | ' ' | '0' => out.push(' '),
            '&' | '%' | 'c' | '|' | '^' | ':' | ')' | ',' | '/' => {}
            other => out.push(other),
        }
    }
    out
}

/// Skips an escape's name: one character, `(xx`, or `[name]`.
fn skip_name(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('(') => {
            chars.next();
            chars.next();
        }
        Some('[') => {
            for c in chars.by_ref() {
                if c == ']' {
                    break;
                }
            }
        }
        _ => {}
    }
}

/// Whitespace collapsed to single spaces, trimmed.
fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `name(section)` references in a SEE ALSO text.
fn references(text: &str) -> Vec<(String, String)> {
    let mut refs = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == '(' {
            // The section: a digit and letters, then ')'.
            let mut j = i + 1;
            while j < bytes.len() && bytes[j].is_ascii_alphanumeric() {
                j += 1;
            }
            let section: String = bytes[i + 1..j].iter().collect();
            let ok = j < bytes.len()
                && bytes[j] == ')'
                && section.starts_with(|c: char| c.is_ascii_digit());
            // The name just before, perhaps after a space.
            let mut end = i;
            while end > 0 && bytes[end - 1] == ' ' {
                end -= 1;
            }
            let mut start = end;
            while start > 0
                && (bytes[start - 1].is_ascii_alphanumeric() || "_.:+-".contains(bytes[start - 1]))
            {
                start -= 1;
            }
            if ok && start < end {
                let name: String = bytes[start..end].iter().collect();
                let name = name.trim_matches(|c| c == '.' || c == '-').to_owned();
                if !name.is_empty() && !refs.iter().any(|(n, s)| *n == name && *s == section) {
                    refs.push((name, section));
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#".\" A comment
.TH pipe 2 2023-02-05 "Linux man-pages 6.03"
.SH NAME
pipe, pipe2 \- create pipe
.SH DESCRIPTION
.BR pipe ()
creates a pipe, a unidirectional data channel.
The array
.I pipefd
is used to return two file descriptors.
.PP
Second paragraph with \fBbold\fP and \(em dashes.
.SH SEE ALSO
.BR fork (2),
.BR read (2),
.BR pipe (7)
"#;

    #[test]
    fn a_page_gives_its_name_line_references_and_paragraphs() {
        let p = parse(PAGE).unwrap();
        assert_eq!(p.summary, "pipe, pipe2 - create pipe");
        assert_eq!(
            p.see_also,
            vec![
                ("fork".to_owned(), "2".to_owned()),
                ("read".to_owned(), "2".to_owned()),
                ("pipe".to_owned(), "7".to_owned())
            ]
        );
        assert!(p.paragraphs.contains(
            &"pipe() creates a pipe, a unidirectional data channel. The array pipefd is used to return two file descriptors.".to_owned()
        ));
        assert!(
            p.paragraphs
                .contains(&"Second paragraph with bold and - dashes.".to_owned())
        );
        assert!(parse(".so man2/pipe.2\n").is_none(), "an alias");
    }
}
