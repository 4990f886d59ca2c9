//! Which project a document belongs to, and a project compiled from the open documents
//! (their unsaved text wins) and the disk.
//!
//! A project is what `vmform validate DIR` reads: the `*.kdl` files of one directory and
//! everything they include. A document belongs to the project of its own directory,
//! unless a project already known includes it (a shared file reached by `include`).

use super::document::{Document, LineIndex};
use vmform_compiler::FsLoader;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vmform_compiler::ide::{self, Reference, Symbol};
use vmform_compiler::policy::Finding;
use vmform_compiler::{compile, load, Code, Diagnostic, Diagnostics, Loader, Options, Sources};

/// The compiler's [`Loader`] over the open documents, falling back to the disk.
pub struct Overlay<'a> {
    pub docs: &'a HashMap<PathBuf, Document>,
    /// Open documents that do not parse, read as their nodes that do (see [`recover`]).
    pub recovered: HashMap<PathBuf, String>,
}

impl Loader for Overlay<'_> {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let path = load::normalize(path);
        if let Some(text) = self.recovered.get(&path) {
            return Ok(text.clone().into_bytes());
        }
        match self.docs.get(&path) {
            Some(d) => Ok(d.text.clone().into_bytes()),
            None => FsLoader.read(&path),
        }
    }
    fn read_dir(&self, path: &Path) -> std::io::Result<Option<Vec<PathBuf>>> {
        if self.docs.contains_key(&load::normalize(path)) {
            return Ok(None);
        }
        // A new document not saved yet is part of its directory already.
        let mut entries = FsLoader.read_dir(path)?;
        if let Some(entries) = &mut entries {
            for open in self.docs.keys().filter(|p| p.parent() == Some(path)) {
                if !entries.contains(open) {
                    entries.push(open.clone());
                }
            }
        }
        Ok(entries)
    }
    // Paths as given (normalised, not canonicalised), so they match the documents' paths.
}

/// One file of a project as the compiler read it, with what it declares and names.
pub struct File {
    pub path: PathBuf,
    pub text: Arc<str>,
    pub lines: LineIndex,
    pub symbols: Vec<Symbol>,
    pub references: Vec<Reference>,
}

/// A project compiled: its diagnostics (as `vmform validate` reports them, and, with
/// policies, the findings of `vmform check`) and what its files declare.
pub struct Project {
    pub root: PathBuf,
    pub diagnostics: Diagnostics,
    pub sources: Sources,
    pub files: Vec<Arc<File>>,
    /// Policy findings not waived by an exception (none without policies).
    pub findings: Vec<Finding>,
}

impl Project {
    /// Compile the project at `root`. A file whose text is the same as in `previous` keeps
    /// its outline and references from there (only edited files are read again); with
    /// `policies`, a project without errors is checked against them as `vmform check` does.
    pub fn compile(root: &Path, docs: &HashMap<PathBuf, Document>, previous: Option<&Project>, policies: &[PathBuf]) -> Project {
        let mut loader = Overlay { docs, recovered: HashMap::new() };
        let roots = [root.to_path_buf()];
        let options = Options { vars: vec![], source_maps: !policies.is_empty() };
        let mut c = compile(&loader, &roots, &options);
        // An open document that does not parse is compiled again without the nodes that do
        // not parse alone, so the rest of it (and what other files take from it) is still
        // checked; its syntax errors are kept from the first run.
        let syntax = |d: &Diagnostic| d.code == Code::KdlSyntax;
        let broken: Vec<PathBuf> = c
            .diagnostics
            .errors()
            .filter(|d| syntax(d))
            .filter_map(|d| Some(c.sources.get(d.primary.as_ref()?.span.file).path.clone()))
            .filter(|p| docs.contains_key(p))
            .collect();
        for path in broken {
            if let Some(text) = recover(&docs[&path].text) {
                loader.recovered.insert(path, text);
            }
        }
        if !loader.recovered.is_empty() {
            let mut again = compile(&loader, &roots, &options);
            for d in c.diagnostics.errors().filter(|d| syntax(d)) {
                let Some(l) = &d.primary else { continue };
                let path = &c.sources.get(l.span.file).path;
                if let (true, Some(id)) = (loader.recovered.contains_key(path), again.sources.find(path)) {
                    let mut d = d.clone();
                    d.primary = Some(vmform_compiler::diagnostic::Label { span: vmform_compiler::Span { file: id, ..l.span }, text: l.text.clone() });
                    d.secondary.clear();
                    again.diagnostics.push(d);
                }
            }
            c = again;
        }
        let files = c
            .sources
            .iter()
            .map(|(id, source)| {
                // A recovered document keeps its own text (the offsets are the same).
                let text: Arc<str> = match loader.recovered.contains_key(&source.path) {
                    true => Arc::from(docs[&source.path].text.as_str()),
                    false => source.text.clone(),
                };
                let same = previous.and_then(|p| p.file(&source.path)).filter(|f| f.text == text);
                match same {
                    Some(f) => f.clone(),
                    None => {
                        // Declarations come from the syntax tree (the compiler consumed its own).
                        let parsed = load::parse_bytes(&source.path, source.text.as_bytes().to_vec(), id);
                        Arc::new(File {
                            path: source.path.clone(),
                            lines: LineIndex::new(&text),
                            symbols: ide::outline(&parsed.file),
                            references: ide::references(&text),
                            text,
                        })
                    }
                }
            })
            .collect();
        let mut findings = vec![];
        if !policies.is_empty() && !c.has_errors() {
            match crate::check::run_policies(&mut c.sources, &c.objects, policies, None) {
                Ok((_, f, diags)) => {
                    findings = f.into_iter().filter(|f| f.waived_by.is_none()).collect();
                    c.diagnostics.extend(diags);
                }
                Err(e) => c.diagnostics.push(Diagnostic::new(Code::BadPolicy, e.to_string()).help("vmform lsp --policy (or the `policy` initialization option) names it")),
            }
        }
        Project { root: root.to_path_buf(), diagnostics: c.diagnostics, sources: c.sources, files, findings }
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.sources.find(path).is_some()
    }

    pub fn file(&self, path: &Path) -> Option<&Arc<File>> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Every declaration of the project, with the file it is in.
    pub fn symbols(&self) -> impl Iterator<Item = (&File, &Symbol)> {
        self.files.iter().flat_map(|f| f.symbols.iter().map(move |s| (&**f, s)))
    }

    /// Every declaration of and reference to a template, instancetype or param.
    pub fn references(&self) -> impl Iterator<Item = (&File, &Reference)> {
        self.files.iter().flat_map(|f| f.references.iter().map(move |r| (&**f, r)))
    }
}

/// A text that does not parse, with each top-level node that does not parse alone blanked
/// out (its characters made spaces, byte for byte, its line breaks kept, so every offset
/// and line stays); `None` when the rest does not parse either.
pub fn recover(text: &str) -> Option<String> {
    let mut out = text.as_bytes().to_vec();
    for node in ide::top_level_nodes(text) {
        if vmform_compiler::fmt::format_source(&text[node.clone()]).is_err() {
            for b in &mut out[node] {
                if *b != b'\n' && *b != b'\r' {
                    *b = b' ';
                }
            }
        }
    }
    let out = String::from_utf8(out).ok()?;
    vmform_compiler::fmt::format_source(&out).is_ok().then_some(out)
}

/// The directory whose project a document belongs to: its own directory's, unless only
/// another known project reads it (a shared file reached by `include`).
pub fn root_for<'p>(path: &Path, known: impl IntoIterator<Item = &'p Project>) -> PathBuf {
    let own = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut other = None;
    for p in known.into_iter().filter(|p| p.contains(path)) {
        if p.root == own {
            return own;
        }
        other.get_or_insert_with(|| p.root.clone());
    }
    other.unwrap_or(own)
}

/// A document's path from its `file:` URI; `None` for other schemes.
pub fn uri_to_path(uri: &lsp_types::Uri) -> Option<PathBuf> {
    let rest = uri.as_str().strip_prefix("file://")?;
    // `file://host/path` is not a local file; `file:///path` is.
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    Some(load::normalize(Path::new(&std::ffi::OsString::from_vec(out))))
}

/// The `file:` URI of a path, with every byte outside the unreserved set and `/` escaped.
pub fn path_to_uri(path: &Path) -> Option<lsp_types::Uri> {
    use std::os::unix::ffi::OsStrExt;
    let mut s = String::from("file://");
    for b in path.as_os_str().as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => s.push(*b as char),
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_recovered_without_the_nodes_that_do_not_parse() {
        let text = "template \"t\" {\n}\nvm \"é\" {\n    cpu 2 =\n}\nvm \"b\" template=\"t\" {\n}\n";
        let out = recover(text).unwrap();
        assert_eq!(out.len(), text.len(), "every offset stays");
        assert_eq!(out.lines().count(), text.lines().count());
        assert!(out.starts_with("template \"t\" {\n}\n") && out.contains("vm \"b\" template=\"t\""));
        assert!(!out.contains("cpu 2"));
        assert!(recover("vm \"x\" {\n").is_some_and(|t| t.trim().is_empty()), "an unclosed block is all of the node");
    }

    #[test]
    fn uris_and_paths_round_trip() {
        let p = Path::new("/tmp/my specs/é.kdl");
        let uri = path_to_uri(p).unwrap();
        assert_eq!(uri.as_str(), "file:///tmp/my%20specs/%C3%A9.kdl");
        assert_eq!(uri_to_path(&uri).as_deref(), Some(p));
        let other: lsp_types::Uri = "untitled:Untitled-1".parse().unwrap();
        assert_eq!(uri_to_path(&other), None);
    }
}
