//! Language knowledge for editors, as plain functions with no I/O: what is at a byte
//! offset of a file being edited, and the outline of a decoded file.
//!
//! [`at`] reads the text lexically, not through the KDL parser: a file being typed rarely
//! parses, and completion is asked for exactly then.

use crate::ast;
use crate::lex::{block_comment_len, line_end, string_len};
use crate::grammar::{self, Context};
use crate::source::Span;
use std::ops::Range;

/// What the offset is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Names of the nodes whose blocks enclose the offset, outermost first.
    pub path: Vec<String>,
    /// The node whose line the offset is on, once its name is written.
    pub node: Option<String>,
    pub at: At,
    /// The token under the offset (a word, or a whole string with its quotes).
    pub token: Option<Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// Writing a node's name; the prefix typed so far.
    NodeName { prefix: String },
    /// After the node's name, where a property name or an argument goes: a bare word (or
    /// nothing yet). `prop` when the word is followed by `=`; `index` counts the node's
    /// arguments before it.
    Entry { prefix: String, index: usize, prop: bool },
    /// A property's value (`prop=…`).
    PropValue { prop: String, prefix: String, value: String, quoted: bool },
    /// A quoted argument, the `index`-th of its node.
    Arg { index: usize, prefix: String, value: String },
    /// Inside `${…}` in a string: the param name so far and whole.
    Interpolation { prefix: String, name: String },
    /// In a comment, or where nothing is written.
    Nothing,
}

impl Cursor {
    /// The grammar context of the node the offset is in (the enclosing block's).
    pub fn context(&self) -> Option<Context> {
        let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        grammar::context_of(&path)
    }
    /// The grammar entry of the node the offset is in.
    pub fn node_spec(&self) -> Option<&'static grammar::Node> {
        self.context()?.node(self.node.as_deref()?)
    }
}

/// The node line being read: its name and what of it came so far.
#[derive(Default)]
struct Line {
    name: Option<String>,
    args: usize,
    /// A property name just read, waiting for its value after `=`.
    prop: Option<String>,
}

/// What is at `offset` (a byte offset; clamped to the text and to a char boundary).
/// An offset between two tokens is "before" the next one, as where text is typed.
pub fn at(text: &str, offset: usize) -> Cursor {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let mut path: Vec<String> = vec![];
    let mut line = Line::default();
    let mut i = 0;
    let done = |path: Vec<String>, line: Line, at: At, token: Option<Range<usize>>| Cursor { path, node: line.name, at, token };
    while i < offset {
        let rest = &text[i..];
        let Some(c) = rest.chars().next() else { break };
        if rest.starts_with("//") {
            let len = line_end(rest);
            if offset <= i + len {
                return done(path, line, At::Nothing, None);
            }
            i += len;
        } else if rest.starts_with("/*") {
            let len = block_comment_len(rest);
            if offset < i + len {
                return done(path, line, At::Nothing, None);
            }
            i += len;
        } else if rest.starts_with("/-") {
            i += 2;
        } else if c == '\n' || c == ';' || c == '\r' {
            line = Line::default();
            i += 1;
        } else if c == '\\' {
            // A line continuation: the node goes on after the newline.
            let len = line_end(rest);
            i += len + rest[len..].chars().next().map_or(0, char::len_utf8);
        } else if c.is_whitespace() || c == '\u{feff}' {
            i += c.len_utf8();
        } else if c == '{' {
            path.push(line.name.take().unwrap_or_default());
            line = Line::default();
            i += 1;
        } else if c == '}' {
            path.pop();
            line = Line::default();
            i += 1;
        } else if c == '(' {
            // A type annotation, `(u8)`.
            i += rest.find(')').map_or(rest.len(), |e| e + 1);
        } else if let Some(mut len) = string_len(rest) {
            let hashes = rest.len() - rest.trim_start_matches('#').len();
            let quotes = if rest[hashes..].starts_with("\"\"\"") { 3 } else { 1 };
            // A single-line string left open ends with its line, as it does for the parser.
            if quotes == 1 {
                len = len.min(line_end(rest));
            }
            let open = hashes + quotes;
            let closed = len >= 2 * open && rest[..len].ends_with(&format!("{}{}", &rest[hashes..open], "#".repeat(hashes)));
            let inner_end = if closed { i + len - open } else { i + len };
            if offset > inner_end && offset < i + len {
                // Inside the closing quote: nothing is written there.
                return done(path, line, At::Nothing, Some(i..i + len));
            }
            if offset < i + len || (!closed && offset == i + len) {
                let content_start = (i + open).min(inner_end);
                let prefix = text.get(content_start..offset.clamp(content_start, inner_end)).unwrap_or("").to_string();
                let value = text[content_start..inner_end].to_string();
                let token = Some(i..i + len);
                let at = if let Some(start) = open_interpolation(&prefix) {
                    let name_from = content_start + start;
                    let name_len = text[name_from..inner_end].find(['}', '"']).unwrap_or(inner_end - name_from);
                    At::Interpolation {
                        prefix: prefix[start..].to_string(),
                        name: text[name_from..name_from + name_len].to_string(),
                    }
                } else if line.name.is_none() {
                    At::NodeName { prefix }
                } else if let Some(prop) = line.prop.take() {
                    At::PropValue { prop, prefix, value, quoted: true }
                } else {
                    At::Arg { index: line.args, prefix, value }
                };
                return done(path, line, at, token);
            }
            if line.name.is_none() {
                line.name = Some(text[i + open..inner_end].to_string());
            } else if line.prop.take().is_none() {
                line.args += 1;
            }
            i += len;
        } else {
            let len = rest
                .find(|c: char| c.is_whitespace() || "{}();=\"\\".contains(c) || c == '\u{feff}')
                .unwrap_or(rest.len())
                .max(c.len_utf8());
            let word = &rest[..len];
            let is_prop = rest[len..].starts_with('=');
            if offset <= i + len {
                let prefix = text[i..offset].to_string();
                let token = Some(i..i + len);
                let at = if line.name.is_none() {
                    At::NodeName { prefix }
                } else if let Some(prop) = line.prop.take() {
                    At::PropValue { prop, prefix, value: word.to_string(), quoted: false }
                } else {
                    At::Entry { prefix, index: line.args, prop: is_prop }
                };
                return done(path, line, at, token);
            }
            if line.name.is_none() {
                line.name = Some(word.to_string());
            } else if is_prop {
                line.prop = Some(word.to_string());
                i += 1; // the `=`
            } else if line.prop.take().is_none() {
                line.args += 1;
            }
            i += len;
        }
    }
    let at = match (&line.name, line.prop.take()) {
        (None, _) => At::NodeName { prefix: String::new() },
        (Some(_), Some(prop)) => At::PropValue { prop, prefix: String::new(), value: String::new(), quoted: false },
        (Some(_), None) => At::Entry { prefix: String::new(), index: line.args, prop: false },
    };
    done(path, line, at, None)
}

/// Where the name of an unclosed `${` in `s` starts (after the `${`), if there is one;
/// `$${` is a literal `${`, not an interpolation.
fn open_interpolation(s: &str) -> Option<usize> {
    let start = s.rfind("${")?;
    let escaped = start > 0 && s[..start].ends_with('$');
    (!escaped && !s[start..].contains('}')).then_some(start + 2)
}

/// What a file declares, for an outline and for go-to-definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub kind: SymbolKind,
    pub name: String,
    /// The declared name.
    pub name_span: Span,
    /// The whole declaration, where the syntax tree keeps it (else the name).
    pub span: Span,
    /// A param's default value.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    Vm,
    Template,
    Instancetype,
    Param,
}

/// The vms, templates, instancetypes and params a decoded file declares, in file order.
pub fn outline(file: &ast::File) -> Vec<Symbol> {
    let mut out = vec![];
    for item in &file.items {
        let (kind, name, span, detail) = match item {
            ast::Item::Vm(vm) => (SymbolKind::Vm, &vm.name, vm.span, None),
            ast::Item::Template(t) => (SymbolKind::Template, &t.name, t.span, None),
            ast::Item::Instancetype(it) => (SymbolKind::Instancetype, &it.name, it.name.span, None),
            ast::Item::Param(p) => (SymbolKind::Param, &p.name, p.name.span, p.default.as_ref().map(|d| d.value.clone())),
            ast::Item::Defaults(_) | ast::Item::Include(_) => continue,
        };
        out.push(Symbol { kind, name: name.value.clone(), name_span: name.span, span, detail });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cursor at the `|` of `marked`.
    fn cursor(marked: &str) -> Cursor {
        let offset = marked.find('|').expect("a | marks the cursor");
        at(&marked.replacen('|', "", 1), offset)
    }

    #[test]
    fn node_names_in_nested_blocks() {
        let c = cursor("vm \"web\" {\n    disk \"root\" {\n        im|\n    }\n}\n");
        assert_eq!(c.path, ["vm", "disk"]);
        assert_eq!(c.at, At::NodeName { prefix: "im".into() });
        assert_eq!(c.context(), Some(Context::Disk));
        let c = cursor("vm \"web\" {\n    cpu 2; |\n}\n");
        assert_eq!((c.path.as_slice(), &c.at), (&["vm".to_string()][..], &At::NodeName { prefix: String::new() }));
        assert_eq!(cursor("|").at, At::NodeName { prefix: String::new() });
        // A closed block is left: the cursor is back at the top level.
        assert_eq!(cursor("vm \"a\" { cpu 1 }\n|").path, Vec::<String>::new());
    }

    #[test]
    fn property_values_and_arguments() {
        let c = cursor("vm \"web\" template=\"li|\" {\n}");
        assert_eq!(c.node.as_deref(), Some("vm"));
        assert_eq!(c.at, At::PropValue { prop: "template".into(), prefix: "li".into(), value: "li".into(), quoted: true });
        let c = cursor("vm \"w\" {\n    run-strategy \"|\n}");
        assert_eq!(c.at, At::Arg { index: 0, prefix: String::new(), value: String::new() }, "an open string ends with its line");
        assert_eq!(cursor("vm \"w\" {\n    run-strategy \"\n    disk \"d\" {\n        |").path, ["vm", "disk"]);
        assert_eq!(c.node_spec().map(|n| n.name), Some("run-strategy"));
        let c = cursor("vm \"w\" {\n    network \"n\" masquerade=|\n}");
        assert_eq!(c.at, At::PropValue { prop: "masquerade".into(), prefix: String::new(), value: String::new(), quoted: false });
        let c = cursor("vm \"w\" {\n    network \"n\" mas|\n}");
        assert_eq!(c.at, At::Entry { prefix: "mas".into(), index: 1, prop: false });
        let c = cursor("vm \"w\" {\n    firmware \"efi\" secure-bo|ot=#true\n}");
        assert_eq!(c.at, At::Entry { prefix: "secure-bo".into(), index: 1, prop: true });
        assert_eq!(c.token, Some(28..39), "the whole word");
    }

    #[test]
    fn interpolations_comments_and_escapes() {
        let c = cursor("vm \"w\" {\n    namespace \"shop-${en|v}\"\n}");
        assert_eq!(c.at, At::Interpolation { prefix: "en".into(), name: "env".into() });
        assert_eq!(cursor("vm \"w\" { namespace \"$${en|\" }").at, At::Arg { index: 0, prefix: "$${en".into(), value: "$${en".into() });
        assert_eq!(cursor("// vm \"w\" {|\n").at, At::Nothing);
        assert_eq!(cursor("/* { */ vm \"w\" { c|").path, ["vm"]);
        assert_eq!(cursor("vm \"{\" #\"}\"# {\n  |").path, ["vm"], "braces in strings are not blocks");
    }

    /// The prefix a variant reports is the text just before the offset, so an editor can
    /// replace it.
    fn prefix_of(at: &At) -> Option<&str> {
        match at {
            At::NodeName { prefix } | At::Entry { prefix, .. } | At::Arg { prefix, .. } => Some(prefix),
            At::PropValue { prefix, .. } | At::Interpolation { prefix, .. } => Some(prefix),
            At::Nothing => None,
        }
    }

    #[test]
    fn random_texts_and_offsets_are_answered_with_true_prefixes() {
        let pieces = ["vm", " ", "\"", "#\"", "\"#", "{", "}", "${", "$${", "=", "é", "😀", "\r\n", "\n", "/*", "*/", "//", "\\", ";", "(", ")", "disk", "x"];
        let mut seed: u64 = 19;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..300 {
            let text: String = (0..next(30)).map(|_| pieces[next(pieces.len())]).collect();
            for offset in 0..=text.len() + 1 {
                let c = at(&text, offset);
                if let (Some(prefix), true) = (prefix_of(&c.at), text.is_char_boundary(offset.min(text.len()))) {
                    let end = offset.min(text.len());
                    assert!(text[..end].ends_with(prefix), "{text:?} at {offset}: prefix {prefix:?}");
                }
                if let Some(t) = c.token {
                    assert!(t.end <= text.len() && text.is_char_boundary(t.start) && text.is_char_boundary(t.end));
                }
            }
        }
    }

    #[test]
    fn any_offset_in_any_text_is_answered() {
        let texts = ["vm \"é😀\" {\r\n  memory \"4Gi\"\r\n}", "\"", "#\"", "/*", "a=(", "\\", "}}}{", "x ${ \"${", "\u{feff}vm"];
        for t in texts {
            for o in 0..=t.len() + 2 {
                let _ = at(t, o);
            }
        }
    }
}
