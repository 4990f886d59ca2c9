//! What the server answers: completion, hover, go to definition, the outline and
//! formatting. The language knowledge comes from the compiler (`grammar`, `ide`); this
//! file only turns it into LSP's types.

use super::document::{Document, LineIndex};
use super::project::{path_to_uri, File, Project};
use lsp_types::*;
use std::path::Path;
use vmform_compiler::grammar::{self, Value};
use vmform_compiler::ide::{self, At, Cursor, SymbolKind as Kind};
use vmform_compiler::values;

/// Snippets for the two things most often written from scratch. `\$` is a literal `$`
/// in LSP snippets; these have none.
const VM_SNIPPET: &str = "vm \"${1:name}\" {\n    cpu ${2:2}\n    memory \"${3:4Gi}\"\n    disk \"root\" {\n        image \"${4:quay.io/containerdisks/fedora:41}\"\n    }\n    network \"default\" masquerade=#true\n}";
const DISK_SNIPPET: &str = "disk \"${1:data}\" {\n    ${2|image,volume,pvc,empty-disk|} $0\n}";

pub fn completion(doc: &Document, project: Option<&Project>, pos: Position, snippets: bool) -> Vec<CompletionItem> {
    let offset = doc.offset(pos);
    let cursor = ide::at(&doc.text, offset);
    // The text already typed is replaced by the choice.
    let replace = |prefix: &str| Range::new(doc.lines.position(&doc.text, offset - prefix.len().min(offset)), pos_of(doc, offset));
    let item = |label: String, kind, detail: &str, prefix: &str, insert: String| CompletionItem {
        label,
        kind: Some(kind),
        detail: (!detail.is_empty()).then(|| detail.to_string()),
        text_edit: Some(CompletionTextEdit::Edit(TextEdit::new(replace(prefix), insert))),
        ..Default::default()
    };
    let mut out = vec![];
    match &cursor.at {
        At::NodeName { prefix } => {
            let Some(ctx) = cursor.context() else { return out };
            for n in ctx.nodes() {
                out.push(item(n.name.into(), CompletionItemKind::KEYWORD, n.doc, prefix, n.name.into()));
            }
            let snippet = match ctx {
                grammar::Context::Top => Some(("vm (new machine)", VM_SNIPPET)),
                grammar::Context::Body => Some(("disk (new disk)", DISK_SNIPPET)),
                _ => None,
            };
            if let Some((label, body)) = snippet.filter(|_| snippets) {
                let mut s = item(label.into(), CompletionItemKind::SNIPPET, "snippet", prefix, body.into());
                s.insert_text_format = Some(InsertTextFormat::SNIPPET);
                s.filter_text = label.split(' ').next().map(str::to_string);
                out.push(s);
            }
        }
        At::Entry { prefix, index, .. } => {
            let Some(spec) = cursor.node_spec() else { return out };
            for p in spec.props {
                out.push(item(format!("{}=", p.name), CompletionItemKind::PROPERTY, p.doc, prefix, format!("{}=", p.name)));
            }
            if *index == 0 {
                for (label, insert) in value_choices(spec.arg, project, true) {
                    out.push(item(label, CompletionItemKind::VALUE, spec.doc, prefix, insert));
                }
            }
        }
        At::Arg { index: 0, prefix, .. } => {
            if let Some(spec) = cursor.node_spec() {
                for (label, insert) in value_choices(spec.arg, project, false) {
                    out.push(item(label, CompletionItemKind::VALUE, spec.doc, prefix, insert));
                }
            }
        }
        At::PropValue { prop, prefix, quoted, .. } => {
            if let Some(p) = cursor.node_spec().and_then(|n| n.prop(prop)) {
                for (label, insert) in value_choices(Some(p.value), project, !quoted) {
                    out.push(item(label, CompletionItemKind::VALUE, p.doc, prefix, insert));
                }
            }
        }
        At::Interpolation { prefix, .. } => {
            for (_, s) in project.into_iter().flat_map(Project::symbols).filter(|(_, s)| s.kind == Kind::Param) {
                let detail = s.detail.as_deref().map(|d| format!("default \"{d}\"")).unwrap_or_default();
                out.push(item(s.name.clone(), CompletionItemKind::VARIABLE, &detail, prefix, s.name.clone()));
            }
            out.push(item("index".into(), CompletionItemKind::VARIABLE, "the machine's index under count=N", prefix, "index".into()));
        }
        At::Arg { .. } | At::Nothing => {}
    }
    out
}

/// The values a slot of this kind may take: (label, text to insert). `bare`: the cursor
/// is not inside quotes, so strings are inserted with theirs.
fn value_choices(value: Option<Value>, project: Option<&Project>, bare: bool) -> Vec<(String, String)> {
    let quote = |s: &str| if bare { format!("\"{s}\"") } else { s.to_string() };
    let names = |kind: Kind| -> Vec<String> {
        project.into_iter().flat_map(Project::symbols).filter(|(_, s)| s.kind == kind).map(|(_, s)| s.name.clone()).collect()
    };
    let strings: Vec<String> = match value {
        Some(Value::Bool) if bare => return ["#true", "#false"].iter().map(|b| (b.to_string(), b.to_string())).collect(),
        Some(Value::Choice(spellings)) => spellings.iter().map(|s| s.to_string()).collect(),
        Some(Value::Template) => names(Kind::Template),
        Some(Value::Instancetype) => names(Kind::Instancetype),
        _ => vec![],
    };
    strings.into_iter().map(|s| (s.clone(), quote(&s))).collect()
}

fn pos_of(doc: &Document, offset: usize) -> Position {
    doc.lines.position(&doc.text, offset)
}

/// The cursor for hover and definition: on the character under the position, so the
/// first character of a word counts as in it.
fn cursor_on(doc: &Document, pos: Position) -> Cursor {
    let offset = doc.offset(pos);
    let next = doc.text[offset..].chars().next().map_or(0, char::len_utf8);
    ide::at(&doc.text, offset + next)
}

pub fn hover(doc: &Document, project: Option<&Project>, pos: Position) -> Option<Hover> {
    let cursor = cursor_on(doc, pos);
    let token = cursor.token.clone()?;
    let word = doc.text.get(token.clone())?;
    let text = match &cursor.at {
        At::NodeName { .. } => {
            let n = cursor.context()?.node(word)?;
            format!("**{}**: {}", n.name, n.doc)
        }
        At::Entry { prop: true, .. } => {
            let p = cursor.node_spec()?.prop(word)?;
            format!("**{}=**: {}", p.name, p.doc)
        }
        At::Arg { index: 0, value, .. } => describe_value(cursor.node_spec()?.arg?, value, project)?,
        At::PropValue { prop, value, .. } => describe_value(cursor.node_spec()?.prop(prop)?.value, value, project)?,
        At::Interpolation { name, .. } if name == "index" => "`${index}`: the machine's index, 0 … count-1, in a vm with `count=N`".into(),
        At::Interpolation { name, .. } => {
            let (file, s) = find(project?, Kind::Param, name)?;
            let value = s.detail.as_deref().map_or("no default: set it with `--var`".to_string(), |d| format!("`\"{d}\"`"));
            format!("param **{name}** = {value}\n\nset at {}", place(file, s.name_span.range()))
        }
        _ => return None,
    };
    Some(Hover {
        contents: HoverContents::Markup(MarkupContent { kind: MarkupKind::Markdown, value: text }),
        range: Some(doc.lines.range(&doc.text, token)),
    })
}

fn describe_value(kind: Value, value: &str, project: Option<&Project>) -> Option<String> {
    Some(match kind {
        Value::Quantity => match values::parse_quantity(value) {
            Ok(q) => format!("`{}` = {} bytes", q.text, q.bytes),
            Err(e) => format!("not a quantity: {e}"),
        },
        Value::Duration => match values::parse_duration(value) {
            Ok(s) => format!("{s} seconds"),
            Err(e) => format!("not a duration: {e}"),
        },
        Value::Choice(spellings) => format!("one of: {}", spellings.join(", ")),
        Value::Template | Value::Instancetype => {
            let kind = if kind == Value::Template { Kind::Template } else { Kind::Instancetype };
            let (file, s) = find(project?, kind, value)?;
            format!("defined at {}", place(file, s.name_span.range()))
        }
        _ => return None,
    })
}

fn find<'p>(project: &'p Project, kind: Kind, name: &str) -> Option<(&'p File, &'p ide::Symbol)> {
    project.symbols().find(|(_, s)| s.kind == kind && s.name == name)
}

/// `file:line:column` of a span, as the CLI writes places.
fn place(file: &File, span: std::ops::Range<usize>) -> String {
    let p = LineIndex::new(&file.text).position(&file.text, span.start);
    format!("{}:{}:{}", file.path.display(), p.line + 1, p.character + 1)
}

pub fn definition(doc: &Document, path: &Path, project: Option<&Project>, pos: Position) -> Option<Location> {
    let cursor = cursor_on(doc, pos);
    let (file, span) = match (&cursor.at, cursor.node.as_deref()) {
        (At::PropValue { prop, value, .. }, Some("vm")) if prop == "template" || prop == "instancetype" => {
            let kind = if prop == "template" { Kind::Template } else { Kind::Instancetype };
            let (f, s) = find(project?, kind, value)?;
            (f, s.name_span.range())
        }
        (At::Interpolation { name, .. }, _) => {
            let (f, s) = find(project?, Kind::Param, name)?;
            (f, s.name_span.range())
        }
        (At::Arg { index: 0, value, .. }, Some("include")) => {
            let target = vmform_compiler::load::normalize(&path.parent()?.join(value));
            return Some(Location::new(path_to_uri(&target)?, Range::default()));
        }
        _ => return None,
    };
    let range = LineIndex::new(&file.text).range(&file.text, span);
    Some(Location::new(path_to_uri(&file.path)?, range))
}

#[allow(deprecated)] // DocumentSymbol::deprecated must be written; tags replace it.
pub fn symbols(project: Option<&Project>, path: &Path) -> Vec<DocumentSymbol> {
    let Some(file) = project.and_then(|p| p.file(path)) else { return vec![] };
    let lines = LineIndex::new(&file.text);
    file.symbols
        .iter()
        .map(|s| {
            let (kind, what) = match s.kind {
                Kind::Vm => (SymbolKind::OBJECT, "vm"),
                Kind::Template => (SymbolKind::CLASS, "template"),
                Kind::Instancetype => (SymbolKind::STRUCT, "instancetype"),
                Kind::Param => (SymbolKind::VARIABLE, "param"),
            };
            let selection = lines.range(&file.text, s.name_span.range());
            let whole = lines.range(&file.text, s.span.range().start.min(s.name_span.range().start)..s.span.range().end.max(s.name_span.end()));
            DocumentSymbol {
                name: s.name.clone(),
                detail: Some(s.detail.as_ref().map_or(what.to_string(), |d| format!("{what} = \"{d}\""))),
                kind,
                tags: None,
                deprecated: None,
                range: whole,
                selection_range: selection,
                children: None,
            }
        })
        .collect()
}

/// The whole document laid out as `vmform fmt` would; `None` when it does not parse (or
/// is already formatted).
pub fn format(doc: &Document, path: &Path) -> Option<Vec<TextEdit>> {
    let (original, formatted) = vmform_compiler::fmt::format_file(path, doc.text.clone().into_bytes()).ok()?;
    if original == formatted {
        return Some(vec![]);
    }
    Some(vec![TextEdit::new(doc.full_range(), formatted)])
}
