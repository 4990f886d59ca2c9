//! KDL's lexical shapes, read without parsing: where a line, a block comment and a string
//! end. The loader (syntax-error spans), the formatter and the editor support share them.

/// The length of the line `s` starts, without its newline (any of KDL's).
pub(crate) fn line_end(s: &str) -> usize {
    s.find(['\n', '\r', '\u{85}', '\u{b}', '\u{c}', '\u{2028}', '\u{2029}']).unwrap_or(s.len())
}

/// The length of the block comment `s` starts with (`/*`), nested ones included.
pub(crate) fn block_comment_len(s: &str) -> usize {
    let (mut depth, mut i) = (0usize, 0);
    while let Some(r) = s.get(i..).filter(|r| !r.is_empty()) {
        if r.starts_with("/*") {
            depth += 1;
            i += 2;
        } else if r.starts_with("*/") {
            depth = depth.saturating_sub(1);
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += r.chars().next().map_or(1, char::len_utf8);
        }
    }
    s.len()
}

/// The length of the string `s` starts with, if it starts with one: quoted (escapes
/// skipped), raw (`#"…"#`, any number of `#`) or multi-line (`"""…"""`, raw or not).
pub(crate) fn string_len(s: &str) -> Option<usize> {
    let hashes = s.len() - s.trim_start_matches('#').len();
    let body = &s[hashes..];
    if !body.starts_with('"') {
        return None;
    }
    let quotes = if body.starts_with("\"\"\"") { "\"\"\"" } else { "\"" };
    let close = format!("{quotes}{}", "#".repeat(hashes));
    let mut i = hashes + quotes.len();
    while let Some(r) = s.get(i..).filter(|r| !r.is_empty()) {
        if r.starts_with(&close) {
            return Some(i + close.len());
        }
        let mut chars = r.chars();
        let c = chars.next().map_or(1, char::len_utf8);
        i += if hashes == 0 && r.starts_with('\\') { c + chars.next().map_or(0, char::len_utf8) } else { c };
    }
    Some(s.len())
}

/// A string token at the start of `s`, as the editor support reads it.
pub(crate) struct StringToken {
    /// Its length; a single-line string left open ends with its line, as it does for the
    /// parser.
    pub len: usize,
    /// The length of its opening delimiter (`#`s and quotes).
    pub open: usize,
    pub closed: bool,
    /// A raw string (`#"…"#`): backslashes are not escapes.
    pub raw: bool,
    /// A multi-line string (`"""…"""`).
    pub multi_line: bool,
}

pub(crate) fn string_token(s: &str) -> Option<StringToken> {
    let mut len = string_len(s)?;
    let hashes = s.len() - s.trim_start_matches('#').len();
    let quotes = if s[hashes..].starts_with("\"\"\"") { 3 } else { 1 };
    if quotes == 1 {
        len = len.min(line_end(s));
    }
    let open = hashes + quotes;
    let closed = len >= 2 * open && s[..len].ends_with(&format!("{}{}", &s[hashes..open], "#".repeat(hashes)));
    Some(StringToken { len, open, closed, raw: hashes > 0, multi_line: quotes == 3 })
}
