//! Layers call downward only: no module of any crate of the workspace imports, directly or
//! through others, a module that imports it back (ARCHITECTURE.md, "Invariants").
//!
//! Modules are files (a directory's `mod.rs` is the directory's module). An edge A → B is a
//! path in A's code that names B or an item in B: `use crate::b::…`, `super::b`, `self::b`,
//! grouped `use` trees, or a path written inline. A module may use its ancestors' items
//! (a child reads its parent's types); every other cycle is a layering error.

mod common;
use common::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside its crate: `["handler", "accel"]`; the crate root is `[]`.
type ModPath = Vec<String>;

/// Each module of the crate whose root file is `root_file`, and its file's text.
fn modules(root_file: &Path) -> BTreeMap<ModPath, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(Vec::new(), root_file.to_path_buf())];
    while let Some((path, file)) = todo.pop() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // Where this module's children live: next to lib.rs/main.rs/mod.rs, else in a
        // directory named after the file.
        let name = file.file_name().unwrap().to_string_lossy();
        let dir = if path.is_empty() || name == "mod.rs" { file.parent().unwrap().to_path_buf() } else { file.with_extension("") };
        for child in declared_modules(&text) {
            let (a, b) = (dir.join(format!("{child}.rs")), dir.join(&child).join("mod.rs"));
            let child_file = if a.is_file() { a } else if b.is_file() { b } else { continue };
            let mut child_path = path.clone();
            child_path.push(child);
            todo.push((child_path, child_file));
        }
        out.insert(path, strip_tests_and_comments(&text));
    }
    out
}

/// `mod x;` declarations (not inline `mod x { … }` blocks, which stay part of their file).
fn declared_modules(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").or_else(|| l.strip_prefix("pub(crate) ")).unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(|m| m.trim().to_string())
        })
        .collect()
}

/// The text without `//` comments and without `#[cfg(test)]` modules (tests may reach anywhere).
fn strip_tests_and_comments(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" && lines.peek().is_some_and(|l| l.trim_start().starts_with("mod ") && l.trim_end().ends_with('{')) {
            // Skip to the matching closing brace.
            let mut depth = 0i32;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                if depth <= 0 && l.contains('}') {
                    break;
                }
            }
            continue;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every path the text names from `crate`, `super` or `self`, use trees expanded.
fn paths_named(text: &str) -> Vec<Vec<String>> {
    let mut out = vec![];
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        if starts_word {
            for head in ["crate::", "super::", "self::"] {
                if text_at(&bytes, i, head) {
                    let (paths, end) = use_tree(&bytes, i);
                    out.extend(paths);
                    i = end;
                    break;
                }
            }
        }
        i += 1;
    }
    out
}

fn text_at(chars: &[char], i: usize, s: &str) -> bool {
    s.chars().enumerate().all(|(k, c)| chars.get(i + k) == Some(&c))
}

/// Parse a path or use tree starting at `i`: `a::b::{c, d::e}`; returns the expanded
/// paths and where it ended.
fn use_tree(chars: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = vec![];
    loop {
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if i > start {
            prefix.push(chars[start..i].iter().collect::<String>());
        }
        if text_at(chars, i, "::") {
            i += 2;
            if chars.get(i) == Some(&'{') {
                i += 1;
                let mut out = vec![];
                loop {
                    while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                        i += 1;
                    }
                    if i >= chars.len() || chars[i] == '}' {
                        return (if out.is_empty() { vec![prefix] } else { out }, i + 1);
                    }
                    let (inner, end) = use_tree(chars, i);
                    for p in inner {
                        let mut full = prefix.clone();
                        full.extend(p);
                        out.push(full);
                    }
                    // Skip an `as name` and anything else up to the next item.
                    i = end;
                    while i < chars.len() && chars[i] != ',' && chars[i] != '}' {
                        i += 1;
                    }
                }
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The module `path` (written in module `from`) names: its longest prefix that is a module.
fn resolve(from: &ModPath, path: &[String], known: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut base: ModPath = from.clone();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let mut best = base.clone();
    let mut candidate = base;
    for seg in rest {
        candidate.push(seg.clone());
        if known.contains(&candidate) {
            best = candidate.clone();
        } else {
            break;
        }
    }
    Some(best)
}

/// Strongly connected components with more than one module, after dropping the edges from a
/// module to its own ancestors.
fn cycles(root_file: &Path) -> Vec<Vec<String>> {
    let modules = modules(root_file);
    let known: BTreeSet<ModPath> = modules.keys().cloned().collect();
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (m, text) in &modules {
        for p in paths_named(text) {
            if let Some(target) = resolve(m, &p, &known) {
                let ancestor = m.starts_with(&target);
                if !ancestor {
                    edges.entry(m.clone()).or_default().insert(target);
                }
            }
        }
    }
    strongly_connected(&known, &edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.iter().map(|m| if m.is_empty() { "crate".to_string() } else { m.join("::") }).collect())
        .collect()
}

/// Tarjan's algorithm.
fn strongly_connected(nodes: &BTreeSet<ModPath>, edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit(s: &mut State, v: &ModPath) {
        let n = s.index.len();
        s.index.insert(v.clone(), n);
        s.low.insert(v.clone(), n);
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        for w in s.edges.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let low = s.low[v].min(s.low[&w]);
                s.low.insert(v.clone(), low);
            } else if s.on_stack.contains(&w) {
                let low = s.low[v].min(s.index[&w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = vec![];
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut s = State { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], on_stack: BTreeSet::new(), out: vec![] };
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The root files of the workspace's crates (binaries under `src/bin` are crates of their
/// own, with a single file).
fn crate_roots() -> Vec<PathBuf> {
    let mut roots = vec![root().join("src/main.rs")];
    for entry in std::fs::read_dir(root()).unwrap().flatten() {
        let lib = entry.path().join("src/lib.rs");
        if lib.is_file() {
            roots.push(lib);
        }
    }
    roots.sort();
    roots
}

#[test]
fn no_module_of_any_crate_imports_a_module_that_imports_it_back() {
    let roots = crate_roots();
    assert!(roots.len() >= 4, "found the workspace's crates: {roots:?}");
    let mut found = vec![];
    for root_file in &roots {
        for cycle in cycles(root_file) {
            found.push(format!("{}: {}", root_file.display(), cycle.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "import cycles (layers must call downward only):\n{}", found.join("\n"));
}

/// The checker itself finds a cycle, through a grouped `use` and a `super` path, and
/// ignores a child's use of its parent.
#[test]
fn the_cycle_check_finds_a_cycle_through_use_trees_and_super() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\npub struct Root;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::{b::Thing, Root};\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct Thing;\nfn f() -> super::c::C { todo!() }\n").unwrap();
    std::fs::write(src.join("c.rs"), "// crate::b is only in a comment\npub struct C(crate::a::A);\n").unwrap();
    assert_eq!(cycles(&src.join("lib.rs")), vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]);
    // Break it: c no longer uses a; and a child using its parent is no cycle.
    std::fs::write(src.join("c.rs"), "mod inner;\npub struct C;\n").unwrap();
    std::fs::create_dir(src.join("c")).unwrap();
    std::fs::write(src.join("c/inner.rs"), "use super::C;\nuse crate::Root;\n").unwrap();
    assert!(cycles(&src.join("lib.rs")).is_empty());
}
