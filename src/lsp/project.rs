//! Which project a document belongs to, and a project compiled from the open documents
//! (their unsaved text wins) and the disk.
//!
//! A project is what `vmform validate DIR` reads: the `*.kdl` files of one directory and
//! everything they include. A document belongs to the project of its own directory,
//! unless a project already known includes it (a shared file reached by `include`).

use super::document::Document;
use vmform_compiler::FsLoader;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vmform_compiler::ide::{self, Symbol};
use vmform_compiler::{compile, load, Diagnostics, Loader, Options, Sources};

/// The compiler's [`Loader`] over the open documents, falling back to the disk.
pub struct Overlay<'a> {
    pub docs: &'a HashMap<PathBuf, Document>,
}

impl Loader for Overlay<'_> {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        match self.docs.get(&load::normalize(path)) {
            Some(d) => Ok(d.text.clone().into_bytes()),
            None => FsLoader.read(path),
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

/// One file of a project as the compiler read it, with what it declares.
pub struct File {
    pub path: PathBuf,
    pub text: Arc<str>,
    pub symbols: Vec<Symbol>,
}

/// A project compiled: its diagnostics (as `vmform validate` reports them) and what its
/// files declare.
pub struct Project {
    pub root: PathBuf,
    pub diagnostics: Diagnostics,
    pub sources: Sources,
    pub files: Vec<File>,
}

impl Project {
    pub fn compile(root: &Path, docs: &HashMap<PathBuf, Document>) -> Project {
        let loader = Overlay { docs };
        let roots = [root.to_path_buf()];
        let c = compile(&loader, &roots, &Options::default());
        // Load again for the syntax trees (compile consumes its own): names and spans of
        // what each file declares, for completion, definitions and the outline.
        let loaded = load::load(&loader, &roots, &mut Diagnostics::default());
        let files = loaded
            .files
            .iter()
            .map(|f| {
                let source = loaded.sources.get(f.id);
                File { path: source.path.clone(), text: source.text.clone(), symbols: ide::outline(f) }
            })
            .collect();
        Project { root: root.to_path_buf(), diagnostics: c.diagnostics, sources: c.sources, files }
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.sources.find(path).is_some()
    }

    pub fn file(&self, path: &Path) -> Option<&File> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Every declaration of the project, with the file it is in.
    pub fn symbols(&self) -> impl Iterator<Item = (&File, &Symbol)> {
        self.files.iter().flat_map(|f| f.symbols.iter().map(move |s| (f, s)))
    }
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
    fn uris_and_paths_round_trip() {
        let p = Path::new("/tmp/my specs/é.kdl");
        let uri = path_to_uri(p).unwrap();
        assert_eq!(uri.as_str(), "file:///tmp/my%20specs/%C3%A9.kdl");
        assert_eq!(uri_to_path(&uri).as_deref(), Some(p));
        let other: lsp_types::Uri = "untitled:Untitled-1".parse().unwrap();
        assert_eq!(uri_to_path(&other), None);
    }
}
