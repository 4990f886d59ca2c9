//! `vmform fmt`: one canonical layout for spec files that keeps every comment.
//!
//! Layout: four-space indentation, one node per line, strings always in quotes (raw
//! and multi-line strings kept as written), numbers as written, at most one blank line
//! between nodes, a comment at the end of a line (after a node, a `;`, a `{` or a `}`) kept
//! there and aligned with those of the lines next to it. Formatting never changes
//! meaning: the tests compile every example before and after and compare the objects.

use kdl::{KdlDocument, KdlEntry, KdlIdentifier, KdlNode, KdlValue};
use crate::lex::{block_comment_len, line_end, string_len};

const INDENT: &str = "    ";

/// Format a parsed document; `source` is the text it was parsed from.
pub fn format_document(doc: &KdlDocument, source: &str) -> String {
    let mut w = Writer::default();
    write_nodes(doc, 0, source, 0, &mut w);
    let out = align_comments(&w.out, &w.comments);
    let trimmed = out.trim_end();
    let mut s = String::with_capacity(trimmed.len() + 1);
    s.push_str(trimmed);
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

/// Parse and format source text; `Err` carries the parse error for the caller to report.
pub fn format_source(text: &str) -> Result<String, kdl::KdlError> {
    if let Err((at, what)) = crate::load::check_nesting(text) {
        let input = std::sync::Arc::new(text.to_string());
        return Err(kdl::KdlError {
            input: input.clone(),
            diagnostics: vec![kdl::KdlDiagnostic {
                input,
                span: (at, 1).into(),
                message: Some(format!("{what} are nested more than {} levels deep", crate::load::MAX_NESTING)),
                label: Some("too deep".into()),
                help: None,
                severity: miette::Severity::Error,
            }],
        });
    }
    Ok(format_document(&text.parse::<KdlDocument>()?, text))
}

/// The text being written, and where each end-of-line comment in it starts.
#[derive(Default)]
struct Writer {
    out: String,
    comments: Vec<usize>,
}

impl Writer {
    /// End the line with what follows the node on it, as laid out by `lay_out`.
    fn end_line(&mut self, end: &str) {
        if !end.is_empty() {
            self.out.push(' ');
            if (end.starts_with("//") || end.starts_with("/*")) && !end.contains('\n') {
                self.comments.push(self.out.len());
            }
            self.out.push_str(end);
        }
        self.out.push('\n');
    }
}

/// Write a document's or block's nodes and the comments between them; the first `skip`
/// bytes of the text before the first node were already written (after the `{`).
fn write_nodes(doc: &KdlDocument, depth: usize, source: &str, skip: usize, w: &mut Writer) {
    let nodes = doc.nodes();
    let mut skip = skip;
    for i in 0..=nodes.len() {
        // Comments before the first node, or in a document or block with no node at all,
        // and after the last node.
        let before = gap(doc, i);
        write_comments(before.get(skip..).unwrap_or(""), depth, i == 0, &mut w.out);
        let Some(node) = nodes.get(i) else { break };
        let mut end = write_node(node, depth, source, w);
        // A comment after a `;` ends this node's line in the source; it stays there.
        skip = 0;
        if node.format().is_some_and(|f| f.terminator.starts_with(';'))
            && let Some((comments, len)) = line_comments(&gap(doc, i + 1), i + 1 == nodes.len())
        {
            end = if end.is_empty() { comments } else { format!("{end} {comments}") };
            skip = len;
        }
        w.end_line(&end);
    }
}

/// The text before node `i` of a document (after its last node for `i == len`).
fn gap(doc: &KdlDocument, i: usize) -> String {
    let nodes = doc.nodes();
    let fmt = doc.format();
    let leading = |n: &KdlNode| n.format().map_or(String::new(), |f| f.leading.clone());
    let mut text = String::new();
    if i == 0 {
        text.push_str(fmt.map_or("", |f| f.leading.as_str()));
    }
    match nodes.get(i) {
        Some(n) => text.push_str(&leading(n)),
        None => text.push_str(fmt.map_or("", |f| f.trailing.as_str())),
    }
    text
}

/// The comments that end the line `text` starts within, when nothing else is on it: laid
/// out, with the length of `text` they take, line break included. `last` says that `text`
/// comes after a block's or the file's last node, so its end ends the line too.
fn line_comments(text: &str, last: bool) -> Option<(String, usize)> {
    let mut i = 0;
    while let Some(r) = text.get(i..).filter(|r| !r.is_empty()) {
        let c = r.chars().next().unwrap_or(' ');
        if r.starts_with("//") {
            i += line_end(r);
        } else if r.starts_with("/*") {
            let n = block_comment_len(r);
            if line_end(&r[..n]) < n {
                return None;
            }
            i += n;
        } else if c.is_whitespace() && line_end(r) > 0 {
            i += c.len_utf8();
        } else {
            break;
        }
    }
    // The line ends here: a newline, or the `}` or the end of the file after the last node.
    let rest = &text[i..];
    let newline = match rest.chars().next() {
        None if last => 0,
        None => return None,
        Some(_) if rest.starts_with("\r\n") => 2,
        Some(c) if line_end(rest) == 0 => c.len_utf8(),
        Some(_) => return None,
    };
    let (comments, _) = lay_out(&text[..i]);
    (!comments.is_empty()).then_some((comments, i + newline))
}

/// Align the end-of-line comments of consecutive lines, as gofmt does: a run of lines that
/// each end with a comment has its comments one space after the run's longest line. A
/// comment on a line of its own is one space after its code.
fn align_comments(text: &str, comments: &[usize]) -> String {
    // (line number, code width in characters) of each comment.
    let mut at = Vec::with_capacity(comments.len());
    let (mut line, mut scanned) = (0, 0);
    for &c in comments {
        line += text[scanned..c].matches('\n').count();
        scanned = c;
        let start = text[..c].rfind('\n').map_or(0, |n| n + 1);
        at.push((line, text[start..c].chars().count()));
    }
    // Each run's column: its longest code.
    let mut column = vec![0; at.len()];
    let mut run_start = 0;
    for k in 0..=at.len() {
        if k == at.len() || (k > 0 && at[k].0 != at[k - 1].0 + 1) {
            let widest = at[run_start..k].iter().map(|a| a.1).max().unwrap_or(0);
            column[run_start..k].fill(widest);
            run_start = k;
        }
    }
    let mut out = String::with_capacity(text.len() + comments.len() * 8);
    let mut copied = 0;
    for (k, &c) in comments.iter().enumerate() {
        out.push_str(&text[copied..c]);
        out.extend(std::iter::repeat_n(' ', column[k] - at[k].1));
        copied = c;
    }
    out.push_str(&text[copied..]);
    out
}

/// Re-indent the comments (and slashdashed nodes) found between nodes; a run of blank
/// lines becomes one, and none is kept at the start of a block.
fn write_comments(text: &str, depth: usize, at_block_start: bool, out: &mut String) {
    let lines: Vec<&str> = text.split('\n').collect();
    // The last segment is the indentation before the node itself.
    let body = &lines[..lines.len().saturating_sub(1)];
    let last = lines.last().copied().unwrap_or("");
    let mut pending_blank = false;
    let mut wrote_any = false;
    let mut block: Vec<&str> = vec![];
    let flush = |block: &mut Vec<&str>, out: &mut String| {
        if block.is_empty() {
            return;
        }
        // A slashdashed node holding a multi-line string stays exactly as written: the
        // string's lines must keep the indentation of its closing quotes to parse.
        if block.iter().any(|l| l.contains("\"\"\"")) {
            for l in block.drain(..) {
                out.push_str(l);
                out.push('\n');
            }
            return;
        }
        // Keep the relative indentation inside a multi-line comment or slashdashed node.
        let min = block.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
        for l in block.drain(..) {
            let l = l.get(min..).unwrap_or(l.trim_start()).trim_end();
            push_indent(out, depth);
            out.push_str(l);
            out.push('\n');
        }
    };
    for (i, line) in body.iter().chain(std::iter::once(&last)).enumerate() {
        let is_last = i == body.len();
        if line.trim().is_empty() {
            if !is_last {
                flush(&mut block, out);
                pending_blank = true;
            }
            continue;
        }
        if pending_blank && (wrote_any || !at_block_start) && block.is_empty() {
            out.push('\n');
        }
        pending_blank = false;
        wrote_any = true;
        block.push(line);
    }
    flush(&mut block, out);
    if pending_blank && (wrote_any || !at_block_start) {
        out.push('\n');
    }
}

/// Write a node; returns what follows it on its last line, for `Writer::end_line`.
fn write_node(node: &KdlNode, depth: usize, source: &str, w: &mut Writer) -> String {
    let out = &mut w.out;
    push_indent(out, depth);
    if let Some(ty) = node.ty() {
        out.push('(');
        out.push_str(&ident(ty));
        out.push(')');
    }
    out.push_str(&ident(node.name()));
    for e in node.entries() {
        write_entry(e, out);
    }
    let fmt = node.format();
    if let Some(children) = node.children() {
        write_decor(fmt.map_or("", |f| f.before_children.as_str()), out);
        out.push('{');
        // A comment after the `{` stays there.
        let (comments, skip) = line_comments(&gap(children, 0), children.nodes().is_empty()).unwrap_or_default();
        w.end_line(&comments);
        write_nodes(children, depth + 1, source, skip, w);
        push_indent(&mut w.out, depth);
        w.out.push('}');
    }
    // What follows the node on its line (slashdashed entries or blocks, comments) is kept
    // there, on one line: the node ends at our newline, so a continuation or `;` here has
    // no work left.
    let end = match fmt {
        _ if node.children().is_some() => after_children(node, source),
        Some(f) => format!("{}{}{}", f.before_terminator, f.terminator.trim_start_matches(';'), f.trailing),
        None => String::new(),
    };
    lay_out(&end).0
}

fn write_entry(e: &KdlEntry, out: &mut String) {
    write_decor(e.format().map_or("", |f| f.leading.as_str()), out);
    if let Some(key) = e.name() {
        out.push_str(&ident(key));
        out.push('=');
    }
    if let Some(ty) = e.ty() {
        out.push('(');
        out.push_str(&ident(ty));
        out.push(')');
    }
    let repr = e.format().map(|f| f.value_repr.as_str()).unwrap_or("");
    out.push_str(&value(e.value(), repr));
}

/// The text after a children block's `}` to the end of its line, as written. The kdl crate
/// keeps only the slashdashed blocks there (`before_terminator`): it drops the comments
/// and continuations after them, though they are in the node's span, and a `//` comment
/// ending the line is its terminator only when nothing comes between it and the `}`. Both
/// are read back from the source, in their order.
fn after_children(node: &KdlNode, source: &str) -> String {
    let before_terminator = node.format().map_or("", |f| f.before_terminator.as_str());
    let start = node.span().offset();
    let end = (start + node.span().len()).min(source.len());
    let text = source.get(start..end).unwrap_or("");
    // The node's span ends with its last block (children or slashdashed), then the rest.
    let rest = after_last_block(text).map_or("", |i| &text[i..]);
    let rest = if is_node_space(rest) { rest } else { "" };
    let next = source.get(end..).unwrap_or("");
    let line_comment = if next.starts_with("//") { &next[..line_end(next)] } else { "" };
    format!("{before_terminator}{rest}{line_comment}")
}

/// What stands between the parts of one node: comments, slashdashed entries, line
/// continuations.
enum Decor {
    /// Needs no line break of its own: laid out by `lay_out`.
    Inline(String),
    /// Holds a `//` comment, which ends its line: kept exactly as written, continuation
    /// and all, or the comment would swallow what follows it.
    Raw(String),
}

fn decor(s: &str) -> Decor {
    match lay_out(s) {
        (_, true) => Decor::Raw(s.to_string()),
        (d, false) => Decor::Inline(d),
    }
}

/// Decor in its canonical layout: comments and strings exactly as written (a `//` comment
/// without its trailing whitespace, a block comment with its line breaks, CRLF as LF), the
/// whitespace and line continuations between them one space; also whether it holds a `//`
/// comment. Written at the end of a node, whatever follows a `//` comment there (after a
/// continuation) becomes part of it, and stays so.
fn lay_out(s: &str) -> (String, bool) {
    let (mut out, mut line_comment, mut space, mut i) = (String::with_capacity(s.len()), false, false, 0);
    while let Some(r) = s.get(i..).filter(|r| !r.is_empty()) {
        let c = r.chars().next().unwrap_or(' ');
        if c.is_whitespace() || c == '\\' {
            space = true;
            i += c.len_utf8();
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        if r.starts_with("//") {
            line_comment = true;
            let n = line_end(r);
            out.push_str(r[..n].trim_end());
            i += n;
        } else if r.starts_with("/*") {
            let n = block_comment_len(r);
            out.push_str(&r[..n].replace("\r\n", "\n"));
            i += n;
        } else if let Some(n) = string_len(r) {
            out.push_str(&r[..n]);
            i += n;
        } else {
            out.push(c);
            i += c.len_utf8();
        }
    }
    (out, line_comment)
}

/// Where the last block of a node's text ends: just after the last `}` at the node's own
/// level (outside strings and comments), the `}` of its children or of a slashdashed block.
fn after_last_block(text: &str) -> Option<usize> {
    let (mut depth, mut i, mut last) = (0usize, 0, None);
    while let Some(r) = text.get(i..).filter(|r| !r.is_empty()) {
        i += if r.starts_with("//") {
            line_end(r)
        } else if r.starts_with("/*") {
            block_comment_len(r)
        } else if let Some(n) = string_len(r) {
            n
        } else {
            match r.as_bytes()[0] {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        last = Some(i + 1);
                    }
                }
                _ => {}
            }
            r.chars().next().map_or(1, char::len_utf8)
        };
    }
    last
}

/// Whether `s` is only what may follow a node's last block before its terminator:
/// whitespace, comments, line continuations.
fn is_node_space(s: &str) -> bool {
    let mut i = 0;
    while let Some(r) = s.get(i..).filter(|r| !r.is_empty()) {
        let c = r.chars().next().unwrap_or(' ');
        i += if r.starts_with("/*") {
            block_comment_len(r)
        } else if r.starts_with("//") {
            line_end(r)
        } else if c.is_whitespace() || c == '\\' {
            c.len_utf8()
        } else {
            return false;
        };
    }
    true
}

/// Write decor between two parts of a node; `sep` is written when there is nothing else.
fn write_decor(s: &str, out: &mut String) {
    match decor(s) {
        Decor::Inline(d) if d.is_empty() => out.push(' '),
        Decor::Inline(d) => {
            out.push(' ');
            out.push_str(&d);
            out.push(' ');
        }
        Decor::Raw(raw) => {
            out.push_str(&raw);
            if !raw.ends_with(char::is_whitespace) {
                out.push(' ');
            }
        }
    }
}

fn value(v: &KdlValue, repr: &str) -> String {
    match v {
        KdlValue::String(s) => {
            // Raw and multi-line strings are kept as written: they exist for readability.
            if repr.starts_with('#') || repr.starts_with("\"\"\"") {
                repr.to_string()
            } else {
                quote(s)
            }
        }
        KdlValue::Integer(i) => if repr.is_empty() { i.to_string() } else { repr.to_string() },
        KdlValue::Float(f) => if repr.is_empty() { format!("{f:?}") } else { repr.to_string() },
        KdlValue::Bool(b) => if *b { "#true".into() } else { "#false".into() },
        KdlValue::Null => "#null".into(),
    }
}

/// A node name or property key: bare when KDL allows it, else quoted.
fn ident(id: &KdlIdentifier) -> String {
    let s = id.value();
    let bare = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !matches!(s, "true" | "false" | "null" | "inf" | "nan");
    if bare { s.to_string() } else { quote(s) }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn push_indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str(INDENT);
    }
}

/// Format one file's bytes the way `vmform fmt` does: `Ok((original, formatted))`, or the
/// diagnostics (not UTF-8, bad KDL, too large) with the sources they point into.
pub fn format_file(
    path: &std::path::Path,
    bytes: Vec<u8>,
) -> Result<(String, String), (crate::Diagnostics, crate::Sources)> {
    let parsed = crate::load::parse_bytes(path, bytes, crate::FileId(0));
    let mut sources = crate::Sources::default();
    sources.add(path.to_path_buf(), parsed.text.clone());
    // Only what stops parsing stops formatting: a file with an unknown node or a bad value
    // is still laid out (as gofmt and rustfmt do); `vmform validate` reports those.
    let syntax = |d: &crate::Diagnostic| matches!(d.code, crate::Code::KdlSyntax | crate::Code::NotUtf8 | crate::Code::FileTooLarge);
    match parsed.document {
        Some(doc) if !parsed.diags.errors().any(syntax) => Ok((parsed.text.to_string(), format_document(&doc, &parsed.text))),
        _ => Err((parsed.diags.errors().filter(|d| syntax(d)).cloned().collect(), sources)),
    }
}

#[cfg(test)]
mod tests {
    use super::format_source;

    #[test]
    fn canonical_layout_keeps_comments() {
        let src = "// top\n\n\nparam \"env\" /* c1 */ default=\"staging\"   // trailing\n\ndefaults { // after brace\n  namespace \"shop-${env}\"\n     labels team=web \\\n   x=1\n  // last comment\n}\n/- vm \"x\" {\n    a 1\n}\nvm \"é\" count=3 {\n  // inner\n  port \"http\" 80\n  memory \"2Gi\"; cpu 1\n}\n// end\n";
        let want = "// top\n\nparam \"env\" /* c1 */ default=\"staging\" // trailing\n\ndefaults { // after brace\n    namespace \"shop-${env}\"\n    labels team=\"web\" x=1\n    // last comment\n}\n/- vm \"x\" {\n    a 1\n}\nvm \"é\" count=3 {\n    // inner\n    port \"http\" 80\n    memory \"2Gi\"\n    cpu 1\n}\n// end\n";
        let got = format_source(src).unwrap();
        assert_eq!(got, want);
        assert_eq!(format_source(&got).unwrap(), got, "formatting is idempotent");
    }

    #[test]
    fn comments_after_a_brace_and_in_empty_documents_are_kept() {
        assert_eq!(format_source("// only a comment\n").unwrap(), "// only a comment\n");
        let src = "a {\n  b 1\n} // after\nc {\n  // alone\n}\nd { }; /* x */ e 1\n";
        let want = "a {\n    b 1\n} // after\nc {\n    // alone\n}\nd {\n}\n/* x */\ne 1\n";
        let got = format_source(src).unwrap();
        assert_eq!(got, want);
        assert_eq!(format_source(&got).unwrap(), got);
    }

    #[test]
    fn comments_after_a_brace_are_kept_as_written_in_their_order() {
        for src in [
            "a {\n    b 1\n} /-{ junk 1 } /* two  spaces */\n",
            "a {\n    b 1\n} /* two  spaces */ /-{ junk 1 }\n",
            "a {\n    b 1\n} /* has /* nested */ comment */\n",
            "a {\n    b 1\n} /* one */ /* two */\n",
            "a {\n    b 1\n} /* one */ /-{ junk \"}\" } /* two */ // three\n",
            "a {\n    b 1\n} /* block */ // line\n",
            "a #\"}\"# /-{ x \"}\" } {\n    b \"{\"\n} /-{ y /* } */ } /* after */\n",
            "a {\n    b 1\n} /* over\n   two lines */\n",
        ] {
            let got = format_source(src).unwrap();
            assert_eq!(got, src, "kept as written");
        }
        // A comment after a continuation ends the line; the continuation goes.
        let got = format_source("a {\n    b 1\n} \\ // after a continuation\n\nc 1\n").unwrap();
        assert_eq!(got, "a {\n    b 1\n} // after a continuation\nc 1\n");
        assert_eq!(format_source(&got).unwrap(), got);
        // Inside a node, and at its end, comment text is kept as written too.
        let src = "a 1 /* x  y\n   z */ 2 //  two  spaces \\\n";
        assert_eq!(format_source(src).unwrap(), src);
    }

    #[test]
    fn end_of_line_comments_stay_on_their_line() {
        // After a `{`, after a `;`, after a `}`; one on a line of its own stays there.
        let src = "a { // opens\n\n  // own line\n  b 1; /* one */ // two\n  c { /* x */\n    d 1\n  }; // closes\n}\ne 1;   // last\n";
        let want = "a { // opens\n    // own line\n    b 1 /* one */ // two\n    c { /* x */\n        d 1\n    } // closes\n}\ne 1 // last\n";
        let got = format_source(src).unwrap();
        assert_eq!(got, want);
        assert_eq!(format_source(&got).unwrap(), got);
        assert_eq!(format_source("a {\n    b 1\n}; // at the end of the file").unwrap(), "a {\n    b 1\n} // at the end of the file\n");
        assert_eq!(format_source("a { b 1; /* before the } */ }\n").unwrap(), "a {\n    b 1 /* before the } */\n}\n");
        // A comment before a node on its line, or over several lines, goes on lines of its own.
        assert_eq!(format_source("a { /* x */ b 1 }\n").unwrap(), "a {\n    /* x */\n    b 1\n}\n");
        assert_eq!(format_source("a { /* one\n   two */\n    b 1\n}\n").unwrap(), "a {\n    /* one\n      two */\n    b 1\n}\n");
    }

    #[test]
    fn end_of_line_comments_of_consecutive_lines_are_aligned() {
        let src = "\
param \"env\" default=\"staging\"  // one
param \"release\" default=\"1\" // two

vm \"web\" {                  // alone: one space
    cpu 1
    memory \"1Gi\"    // a run across depths
}                       // ends here
port 1
";
        let want = "\
param \"env\" default=\"staging\" // one
param \"release\" default=\"1\"   // two

vm \"web\" { // alone: one space
    cpu 1
    memory \"1Gi\" // a run across depths
}                // ends here
port 1
";
        let got = format_source(src).unwrap();
        assert_eq!(got, want);
        assert_eq!(format_source(&got).unwrap(), got, "idempotent");
    }

    #[test]
    fn slashdashed_multiline_strings_keep_their_indentation() {
        let src = "a {\n  /- b \"\"\"\n\t  x\n\t  \"\"\"\n  c 1\n}\n";
        let once = format_source(src).unwrap();
        assert!(once.contains("\t  x\n\t  \"\"\""), "kept as written:\n{once}");
        assert_eq!(format_source(&once).unwrap(), once);
    }

    #[test]
    fn strings_are_requoted_with_escapes() {
        let got = format_source("a \"x\\ty\" \"q\\\"\" #\"raw\\n\"#\n").unwrap();
        assert_eq!(got, "a \"x\\ty\" \"q\\\"\" #\"raw\\n\"#\n");
    }
}

