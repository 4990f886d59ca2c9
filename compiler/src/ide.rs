//! Language knowledge for editors, as plain functions with no I/O: what is at a byte
//! offset of a file being edited, and the outline of a decoded file.
//!
//! [`at`] reads the text lexically, not through the KDL parser: a file being typed rarely
//! parses, and completion is asked for exactly then.

use crate::ast;
use crate::lex::{block_comment_len, line_end, string_len, string_token, StringToken};
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
        } else if let Some(StringToken { len, open, closed, .. }) = string_token(rest) {
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

/// A place in a file that declares or names a template, an instancetype or a param, for
/// find references and rename. Read lexically, like [`at`], so a file that does not parse
/// still has its references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub kind: SymbolKind,
    pub name: String,
    /// The name alone: inside the quotes of a string, inside the braces of `${name}`.
    pub span: Range<usize>,
    /// The `template`, `instancetype` or `param` node that defines the name.
    pub declaration: bool,
    /// The name is written inside quotes (else a bare identifier, `template=linux`).
    pub quoted: bool,
}

/// Every declaration of and reference to a template, instancetype or param in `text`, in
/// text order. `${index}` is not a param; a string written with escapes is skipped where
/// the written name would differ from its value.
pub fn references(text: &str) -> Vec<Reference> {
    let mut out = vec![];
    let mut depth = 0usize;
    let mut line = Line::default();
    let mut i = 0;
    // A declaration's or reference's name, by where the token stands on its node line.
    let named = |depth: usize, line: &Line| -> Option<(SymbolKind, bool)> {
        if depth != 0 {
            return None;
        }
        match (line.name.as_deref()?, line.prop.as_deref()) {
            ("template", None) if line.args == 0 => Some((SymbolKind::Template, true)),
            ("instancetype", None) if line.args == 0 => Some((SymbolKind::Instancetype, true)),
            ("param", None) if line.args == 0 => Some((SymbolKind::Param, true)),
            ("vm", Some("template")) => Some((SymbolKind::Template, false)),
            ("vm", Some("instancetype")) => Some((SymbolKind::Instancetype, false)),
            _ => None,
        }
    };
    while i < text.len() {
        let rest = &text[i..];
        let Some(c) = rest.chars().next() else { break };
        if rest.starts_with("//") {
            i += line_end(rest);
        } else if rest.starts_with("/*") {
            i += block_comment_len(rest).max(2);
        } else if rest.starts_with("/-") {
            i += 2;
        } else if c == '\n' || c == ';' || c == '\r' {
            line = Line::default();
            i += 1;
        } else if c == '\\' {
            let len = line_end(rest);
            i += len + rest[len..].chars().next().map_or(0, char::len_utf8);
        } else if c.is_whitespace() || c == '\u{feff}' {
            i += c.len_utf8();
        } else if c == '{' {
            depth += 1;
            line = Line::default();
            i += 1;
        } else if c == '}' {
            depth = depth.saturating_sub(1);
            line = Line::default();
            i += 1;
        } else if c == '(' {
            i += rest.find(')').map_or(rest.len(), |e| e + 1);
        } else if let Some(StringToken { len, open, closed, raw, multi_line }) = string_token(rest) {
            let start = (i + open).min(i + len);
            let end = if closed { i + len - open } else { i + len };
            let content = &text[start..end.max(start)];
            let plain = raw || !content.contains('\\');
            if line.name.is_none() {
                line.name = Some(content.to_string());
            } else {
                if let (Some((kind, declaration)), true, false) = (named(depth, &line), plain, multi_line) {
                    out.push(Reference { kind, name: content.to_string(), span: start..end.max(start), declaration, quoted: true });
                } else if multi_line || plain {
                    interpolations(content, start, &mut out);
                }
                if line.prop.take().is_none() {
                    line.args += 1;
                }
            }
            i += len.max(1);
        } else {
            let len = rest
                .find(|c: char| c.is_whitespace() || "{}();=\"\\".contains(c) || c == '\u{feff}')
                .unwrap_or(rest.len())
                .max(c.len_utf8());
            let word = &rest[..len];
            let is_prop = rest[len..].starts_with('=');
            if line.name.is_none() {
                line.name = Some(word.to_string());
            } else if is_prop {
                line.prop = Some(word.to_string());
                i += 1;
            } else {
                // A bare identifier string, `template=linux`; not `#true` or a number.
                let identifier = !word.starts_with(['#', '-', '+', '.']) && !word.starts_with(|c: char| c.is_ascii_digit());
                if let (Some((kind, declaration)), true) = (named(depth, &line), identifier) {
                    out.push(Reference { kind, name: word.to_string(), span: i..i + len, declaration, quoted: false });
                }
                if line.prop.take().is_none() {
                    line.args += 1;
                }
            }
            i += len;
        }
    }
    out
}

/// The `${name}` param references in a string's content (which starts at `base`), read as
/// the compiler reads them: `$${` is a literal `${`.
fn interpolations(content: &str, base: usize, out: &mut Vec<Reference>) {
    let mut i = 0;
    while let Some(rel) = content[i..].find('$') {
        let at = i + rel;
        let rest = &content[at..];
        if rest.starts_with("$${") {
            i = at + 3;
        } else if rest.starts_with("${") {
            let Some(close) = rest.find('}') else { return };
            let name = &rest[2..close];
            if !name.is_empty() && name != "index" && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                let start = base + at + 2;
                out.push(Reference { kind: SymbolKind::Param, name: name.to_string(), span: start..start + name.len(), declaration: false, quoted: true });
            }
            i = at + close + 1;
        } else {
            i = at + 1;
        }
    }
}

/// The byte ranges of the top-level nodes of `text`, read lexically: a node runs to the
/// newline or `;` that ends it outside any block, string or comment (its children
/// included). Comments and blank lines between nodes belong to no range. For an editor
/// to set aside the one node of a file that does not parse and read the rest.
pub fn top_level_nodes(text: &str) -> Vec<Range<usize>> {
    let mut out = vec![];
    let (mut depth, mut start, mut i) = (0usize, None::<usize>, 0);
    while i < text.len() {
        let rest = &text[i..];
        let Some(c) = rest.chars().next() else { break };
        let len = if rest.starts_with("//") {
            line_end(rest)
        } else if rest.starts_with("/*") {
            block_comment_len(rest).max(2)
        } else if let Some(len) = string_len(rest) {
            start.get_or_insert(i);
            len.max(1)
        } else {
            match c {
                '\n' | '\r' | ';' if depth == 0 => {
                    if let Some(s) = start.take() {
                        out.push(s..i);
                    }
                }
                '{' => {
                    start.get_or_insert(i);
                    depth += 1;
                }
                '}' => depth = depth.saturating_sub(1),
                c if c.is_whitespace() || c == '\u{feff}' => {}
                _ => {
                    start.get_or_insert(i);
                }
            }
            c.len_utf8()
        };
        i += len;
    }
    if let Some(s) = start {
        out.push(s..text.len());
    }
    out
}

/// Why `name` cannot be the new name of a `kind`, if it cannot: a param's name must be a
/// word that `${name}` can reference; a template's or instancetype's any string that can
/// be written without escapes.
pub fn invalid_name(kind: SymbolKind, name: &str) -> Option<String> {
    match kind {
        _ if name.is_empty() => Some("a name cannot be empty".into()),
        SymbolKind::Param if name == "index" => Some("`${index}` always means the machine's index, so a param named `index` could never be used".into()),
        SymbolKind::Param if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
            Some(format!("`{name}` is not a param name: use letters, digits, `-` and `_`, so `${{{name}}}` can reference it"))
        }
        _ if name.chars().any(|c| c.is_control() || c.is_whitespace() || c == '"' || c == '\\') => {
            Some(format!("{name:?} holds a space, quote, backslash or control character; vmform names are single words"))
        }
        _ => None,
    }
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

    #[test]
    fn references_are_found_lexically() {
        let text = "param \"env\" default=\"a\"\ntemplate \"linux\" {\n    namespace \"x-${env}-$${env}-${index}\"\n}\nvm \"w-${env}\" template=\"linux\" instancetype=small {\n    disk \"d\" { image #\"r/${env}\"# }\n}\n// vm \"c\" template=\"linux\"\n";
        let refs: Vec<(SymbolKind, &str, bool, bool)> = references(text).iter().map(|r| (r.kind, &text[r.span.clone()], r.declaration, r.quoted)).collect();
        use SymbolKind::*;
        assert_eq!(
            refs,
            [
                (Param, "env", true, true),
                (Template, "linux", true, true),
                (Param, "env", false, true),
                (Param, "env", false, true),
                (Template, "linux", false, true),
                (Instancetype, "small", false, false),
                (Param, "env", false, true),
            ]
        );
        // Templates inside blocks and escaped strings are not references.
        assert!(references("vm \"a\" {\n  template \"x\"\n}\nvm \"b\" template=\"a\\u{62}\"\n").is_empty());
    }

    #[test]
    fn invalid_new_names() {
        assert!(invalid_name(SymbolKind::Param, "index").is_some());
        assert!(invalid_name(SymbolKind::Param, "a.b").is_some());
        assert!(invalid_name(SymbolKind::Param, "zone_1").is_none());
        assert!(invalid_name(SymbolKind::Template, "").is_some());
        assert!(invalid_name(SymbolKind::Template, "a b").is_some());
        assert!(invalid_name(SymbolKind::Template, "linux.v2").is_none());
    }

    #[test]
    fn references_in_random_texts_lie_inside_them() {
        let pieces = ["vm", "template", "param", " ", "\"", "#\"", "\"#", "{", "}", "${", "$${", "=", "é", "😀", "\r\n", "\n", "/*", "*/", "//", "\\", ";", "(", ")", "x", "\"\"\""];
        let mut seed: u64 = 7;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..2000 {
            let text: String = (0..next(30)).map(|_| pieces[next(pieces.len())]).collect();
            for r in references(&text) {
                assert!(r.span.start <= r.span.end && r.span.end <= text.len(), "{text:?}");
                assert_eq!(&text[r.span.clone()], r.name, "{text:?}");
            }
        }
    }

    #[test]
    fn top_level_nodes_split_a_file() {
        let text = "// c\nparam \"a\"; vm \"w\" {\n  cpu 1 // }\n  labels x=\"}\"\n}\nvm \"b\"";
        let nodes: Vec<&str> = top_level_nodes(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(nodes, ["param \"a\"", "vm \"w\" {\n  cpu 1 // }\n  labels x=\"}\"\n}", "vm \"b\""]);
    }
}
