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
use vmform_compiler::Code;

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

/// The declaration or reference under the cursor: its kind and name.
fn reference_at(doc: &Document, pos: Position) -> Option<ide::Reference> {
    let offset = doc.offset(pos);
    // The end of a name counts as on it, so a cursor just after `linux` finds it.
    ide::references(&doc.text).into_iter().find(|r| r.span.start <= offset && offset <= r.span.end)
}

fn location(file: &File, span: std::ops::Range<usize>) -> Option<Location> {
    Some(Location::new(path_to_uri(&file.path)?, file.lines.range(&file.text, span)))
}

/// Every place in the project that declares or names the template, instancetype or param
/// under the cursor; declarations only with `declaration`.
pub fn references(doc: &Document, project: Option<&Project>, pos: Position, declaration: bool) -> Option<Vec<Location>> {
    let target = reference_at(doc, pos)?;
    Some(
        project?
            .references()
            .filter(|(_, r)| r.kind == target.kind && r.name == target.name && (declaration || !r.declaration))
            .filter_map(|(f, r)| location(f, r.span.clone()))
            .collect(),
    )
}

/// Case-insensitive: each character of the query appears in the name, in order.
fn fuzzy(query: &str, name: &str) -> bool {
    let mut chars = name.chars().flat_map(char::to_lowercase);
    query.chars().flat_map(char::to_lowercase).all(|q| chars.any(|c| c == q))
}

#[allow(deprecated)] // SymbolInformation::deprecated must be written; tags replace it.
pub fn workspace_symbols<'p>(projects: impl Iterator<Item = &'p Project>, query: &str) -> Vec<SymbolInformation> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = vec![];
    for project in projects {
        for (file, s) in project.symbols() {
            // A shared file read by two projects is listed once.
            if !fuzzy(query, &s.name) || !seen.insert((file.path.clone(), s.name_span.start)) {
                continue;
            }
            let (kind, what) = symbol_kind(s.kind);
            let Some(location) = location(file, s.name_span.range()) else { continue };
            out.push(SymbolInformation { name: s.name.clone(), kind, tags: None, deprecated: None, location, container_name: Some(what.into()) });
        }
    }
    out
}

fn symbol_kind(kind: Kind) -> (SymbolKind, &'static str) {
    match kind {
        Kind::Vm => (SymbolKind::OBJECT, "vm"),
        Kind::Template => (SymbolKind::CLASS, "template"),
        Kind::Instancetype => (SymbolKind::STRUCT, "instancetype"),
        Kind::Param => (SymbolKind::VARIABLE, "param"),
    }
}

fn kind_name(kind: Kind) -> &'static str {
    symbol_kind(kind).1
}

/// The name under the cursor that rename would change, with its range.
pub fn prepare_rename(doc: &Document, pos: Position) -> Option<PrepareRenameResponse> {
    let r = reference_at(doc, pos)?;
    Some(PrepareRenameResponse::RangeWithPlaceholder { range: doc.lines.range(&doc.text, r.span.clone()), placeholder: r.name })
}

/// Rename a template, instancetype or param in every file of the project: its
/// declarations and every reference. `Err` says why not: the cursor is on no such name,
/// the new name is not one, or the project already has something of that name.
pub fn rename(doc: &Document, project: Option<&Project>, pos: Position, new_name: &str) -> Result<WorkspaceEdit, String> {
    let target = reference_at(doc, pos).ok_or("rename works on the name of a template, instancetype or param, where it is defined or used")?;
    let what = kind_name(target.kind);
    if let Some(why) = ide::invalid_name(target.kind, new_name) {
        return Err(format!("cannot rename {what} `{}` to {new_name:?}: {why}", target.name));
    }
    let project = project.ok_or("the document belongs to no project yet")?;
    if new_name != target.name {
        if let Some((file, s)) = find(project, target.kind, new_name) {
            return Err(format!("cannot rename {what} `{}` to `{new_name}`: a {what} of that name is defined at {}", target.name, place(file, s.name_span.range())));
        }
    }
    let mut changes: std::collections::HashMap<Uri, Vec<TextEdit>> = Default::default();
    for (file, r) in project.references().filter(|(_, r)| r.kind == target.kind && r.name == target.name) {
        // A bare identifier stays bare when the new name can be one.
        let bare_ok = new_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !new_name.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.');
        let text = if r.quoted || bare_ok { new_name.to_string() } else { format!("\"{new_name}\"") };
        let Some(loc) = location(file, r.span.clone()) else { continue };
        changes.entry(loc.uri).or_default().push(TextEdit::new(loc.range, text));
    }
    Ok(WorkspaceEdit { changes: Some(changes), ..Default::default() })
}

/// Lay out the lines of `range` as `vmform fmt` lays them out in the whole document: the
/// edits of the formatted document that touch those lines, and no others.
pub fn format_range(doc: &Document, path: &Path, range: Range) -> Option<Vec<TextEdit>> {
    let (_, formatted) = vmform_compiler::fmt::format_file(path, doc.text.clone().into_bytes()).ok()?;
    let old_lines: Vec<&str> = doc.text.split_inclusive('\n').collect();
    let new_lines: Vec<&str> = formatted.split_inclusive('\n').collect();
    let starts: Vec<usize> = std::iter::once(0).chain(old_lines.iter().scan(0, |at, l| { *at += l.len(); Some(*at) })).collect();
    let (first, last) = (doc.offset(range.start), doc.offset(range.end));
    let mut edits = vec![];
    for op in similar::capture_diff_slices(similar::Algorithm::Myers, &old_lines, &new_lines) {
        if op.tag() == similar::DiffTag::Equal {
            continue;
        }
        let (old, new) = (op.old_range(), op.new_range());
        let (start, end) = (starts[old.start], starts[old.end]);
        // Lines the range touches; an insertion counts where it goes.
        if end < first || start > last || (end == first && old.start != old.end) {
            continue;
        }
        edits.push(TextEdit::new(doc.lines.range(&doc.text, start..end), new_lines[new].concat()));
    }
    Some(edits)
}

/// Quick fixes for the diagnostics in `range` that have exactly one fix: the "did you
/// mean" of an unknown name, property or value; a masquerade network for a port that needs
/// one; a fresh name for the second of two things of one name.
pub fn code_actions(doc: &Document, path: &Path, project: Option<&Project>, range: Range) -> Vec<CodeActionOrCommand> {
    let Some(project) = project else { return vec![] };
    // The diagnostics' spans are into the text the project was compiled from.
    let Some(file) = project.file(path).filter(|f| *f.text == *doc.text) else { return vec![] };
    let (from, to) = (doc.offset(range.start), doc.offset(range.end));
    let mut out = vec![];
    for d in project.diagnostics.sorted() {
        let Some(primary) = &d.primary else { continue };
        let span = primary.span.range();
        if project.sources.get(primary.span.file).path != path || span.end < from || span.start > to {
            continue;
        }
        let Some(written) = file.text.get(span.clone()) else { continue };
        let fix = match d.code {
            Code::PortWithoutMasquerade => {
                let line_start = file.text[..span.start].rfind(['\n', '\r']).map_or(0, |i| i + 1);
                let before = &file.text[line_start..span.start];
                let network = "network \"default\" masquerade=#true";
                // On a line of its own before the port, or before it on its line (`;` ends a node).
                let (at, text) = if before.trim().is_empty() { (line_start, format!("{before}{network}\n")) } else { (span.start, format!("{network}; ")) };
                Some(("Add a masquerade network (`network \"default\" masquerade=#true`)".to_string(), at..at, text))
            }
            Code::DuplicateDefinition | Code::DuplicateChild | Code::DuplicateMachine => {
                let name = written.strip_prefix('"').and_then(|w| w.strip_suffix('"')).filter(|n| !n.contains(['\\', '"']));
                name.and_then(|name| {
                    let kind = d.message.split(' ').next().unwrap_or_default();
                    let taken = |n: &str| {
                        let sym = |k: Kind| kind_name(k) == kind && find(project, k, n).is_some();
                        [Kind::Param, Kind::Template, Kind::Instancetype].into_iter().any(sym) || file.text.contains(&format!("\"{n}\""))
                    };
                    let fresh = (2..1000).map(|i| format!("{name}-{i}")).find(|n| !taken(n))?;
                    Some((format!("Rename to `{fresh}`"), span.clone(), format!("\"{fresh}\"")))
                })
            }
            _ => d.help.as_deref().and_then(did_you_mean).and_then(|x| {
                let text = if written.starts_with("${") {
                    format!("${{{x}}}")
                } else if written.starts_with(['"', '#']) {
                    format!("\"{x}\"")
                } else {
                    x.to_string()
                };
                // An unknown param in a string with escapes is located at the whole string.
                (d.code != Code::UnknownParam || written.starts_with("${")).then(|| (format!("Replace with `{x}`"), span.clone(), text))
            }),
        };
        let Some((title, at, text)) = fix else { continue };
        let Some(uri) = path_to_uri(path) else { continue };
        let edit = TextEdit::new(file.lines.range(&file.text, at), text);
        out.push(CodeActionOrCommand::CodeAction(CodeAction {
            title,
            kind: Some(CodeActionKind::QUICKFIX),
            diagnostics: Some(vec![super::lsp_diagnostic(project, d).1]),
            edit: Some(WorkspaceEdit { changes: Some([(uri, vec![edit])].into_iter().collect()), ..Default::default() }),
            is_preferred: Some(true),
            ..Default::default()
        }));
    }
    out
}

/// The name a "did you mean `x`?" (or `"x"`) help suggests.
fn did_you_mean(help: &str) -> Option<&str> {
    let rest = help.strip_prefix("did you mean ")?;
    let quote = rest.chars().next().filter(|c| *c == '`' || *c == '"')?;
    let rest = &rest[1..];
    let end = rest.find(quote)?;
    (rest[end + 1..] == *"?").then(|| &rest[..end])
}
