//! Load a run's files through a [`Loader`]: read, parse and decode them, following
//! includes, with every file of one include level parsed in parallel.

use crate::ast;
use crate::decode::decode_file;
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::source::{FileId, Sources, Span};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the compiler's input comes from. The compiler's stages do no I/O of their own:
/// the caller passes [`FsLoader`] for the disk, [`MemoryLoader`] for text it holds, or
/// its own (`vmform diff --base` reads a git revision, `vmform lsp` unsaved buffers).
pub trait Loader: Sync {
    /// The whole content of a file.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// The entries of a directory, or `None` when `path` is not a directory.
    fn read_dir(&self, path: &Path) -> std::io::Result<Option<Vec<PathBuf>>>;
    /// A key naming the file behind `path`, so one file reached by two spellings
    /// (relative and absolute, through a symlink) is read once.
    fn identity(&self, path: &Path) -> PathBuf {
        normalize(path)
    }
}

/// The [`Loader`] over the local file system, as the CLI, the editor support and the tests
/// read specs. Only a caller that chooses it makes the compiler read the disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsLoader;

impl Loader for FsLoader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_dir(&self, path: &Path) -> std::io::Result<Option<Vec<PathBuf>>> {
        if !std::fs::metadata(path)?.is_dir() {
            return Ok(None);
        }
        let mut out = vec![];
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            // A symlink to a file counts as a file.
            if entry.file_type()?.is_file() || entry.path().is_file() {
                out.push(entry.path());
            }
        }
        Ok(Some(out))
    }

    fn identity(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| normalize(path))
    }
}

/// A [`Loader`] over files held in memory: for tests, benchmarks, fuzzing and tools that
/// have the specs already (an editor buffer, a request body). A directory is every file
/// whose path starts with it.
#[derive(Debug, Clone, Default)]
pub struct MemoryLoader {
    files: std::collections::BTreeMap<PathBuf, Vec<u8>>,
}

impl MemoryLoader {
    pub fn new() -> Self {
        MemoryLoader::default()
    }
    /// Add (or replace) a file.
    pub fn with(mut self, path: impl Into<PathBuf>, content: impl Into<Vec<u8>>) -> Self {
        self.files.insert(path.into(), content.into());
        self
    }
    /// Total size of the files, in bytes.
    pub fn size(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }
}

impl Loader for MemoryLoader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files.get(path).cloned().ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
    fn read_dir(&self, path: &Path) -> std::io::Result<Option<Vec<PathBuf>>> {
        if self.files.contains_key(path) {
            return Ok(None);
        }
        let entries: Vec<PathBuf> = self.files.keys().filter(|p| p.parent() == Some(path)).cloned().collect();
        if entries.is_empty() && !self.files.keys().any(|p| p.starts_with(path)) {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        Ok(Some(entries))
    }
}

/// Files larger than this are refused: no real spec is near it, and it bounds memory.
pub const MAX_FILE_BYTES: usize = 32 * 1024 * 1024;

/// Deepest nesting of `{ }` blocks (or of `/* */` comments) accepted. vmform's grammar
/// needs 3; the KDL parser recurses once per level, so a bound keeps it off the end of
/// its stack whatever the input.
pub const MAX_NESTING: usize = 32;

/// Stack of the parser threads: ample for [`MAX_NESTING`] levels even in debug builds.
const PARSER_STACK_BYTES: usize = 16 * 1024 * 1024;

/// Find the first place where blocks or block comments nest deeper than [`MAX_NESTING`].
/// Counts braces and comment markers as raw bytes: braces inside strings can only make
/// it stricter, and no real spec comes near the bound.
pub fn check_nesting(text: &str) -> Result<(), (usize, &'static str)> {
    let bytes = text.as_bytes();
    let (mut blocks, mut comments) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'{', _) => blocks += 1,
            (b'}', _) => blocks = blocks.saturating_sub(1),
            (b'/', Some(b'*')) => {
                comments += 1;
                i += 1;
            }
            (b'*', Some(b'/')) => {
                comments = comments.saturating_sub(1);
                i += 1;
            }
            _ => {}
        }
        if blocks > MAX_NESTING {
            return Err((i, "blocks"));
        }
        if comments > MAX_NESTING {
            return Err((i - 1, "block comments"));
        }
        i += 1;
    }
    Ok(())
}

pub struct Loaded {
    pub sources: Sources,
    pub files: Vec<ast::File>,
    /// CPU time spent in the KDL parser and in decoding, summed over all threads.
    pub parse_time: Duration,
    pub decode_time: Duration,
}

/// A file to load, and the `include` that asked for it (none for command-line paths).
struct Pending {
    path: PathBuf,
    included_from: Option<Span>,
}

/// Expand the command-line paths (a directory means its `*.kdl` files, sorted), then
/// load them and everything they include.
pub fn load(loader: &dyn Loader, roots: &[PathBuf], diags: &mut Diagnostics) -> Loaded {
    let mut pending = vec![];
    for root in roots {
        match loader.read_dir(root) {
            Ok(Some(entries)) => {
                let mut kdl: Vec<PathBuf> =
                    entries.into_iter().filter(|p| p.extension().is_some_and(|e| e == "kdl")).collect();
                kdl.sort();
                if kdl.is_empty() {
                    diags.push(
                        Diagnostic::new(Code::NoSpecFiles, format!("{} holds no .kdl file", root.display()))
                            .help("name a directory with spec files directly in it, or the files themselves"),
                    );
                }
                pending.extend(kdl.into_iter().map(|p| Pending { path: normalize(&p), included_from: None }));
            }
            Ok(None) => pending.push(Pending { path: normalize(root), included_from: None }),
            Err(e) => diags.push(Diagnostic::new(
                Code::InputUnreadable,
                format!("cannot read {}: {}", root.display(), io_reason(&e)),
            )),
        }
    }

    let mut loaded = Loaded {
        sources: Sources::default(),
        files: vec![],
        parse_time: Duration::ZERO,
        decode_time: Duration::ZERO,
    };
    let mut seen: Vec<PathBuf> = vec![];
    // (including file, included path, span of the include's path)
    let mut edges: Vec<(FileId, PathBuf, Span)> = vec![];
    while !pending.is_empty() {
        pending.retain(|p| {
            let id = loader.identity(&p.path);
            let new = !seen.contains(&id);
            if new {
                seen.push(id);
            }
            new
        });
        let first_id = loaded.files.len() as u32;
        let results = parse_level(loader, &pending, first_id);
        let mut next = vec![];
        for (p, r) in pending.iter().zip(results) {
            let id = loaded.sources.add(p.path.clone(), r.text);
            diags.extend(r.diags);
            if let Some(message) = r.read_error {
                let d = match p.included_from {
                    Some(span) => Diagnostic::new(Code::IncludeNotFound, format!("cannot include {}: {message}", p.path.display()))
                        .at(span, "included here")
                        .help("include paths are relative to the file that includes them"),
                    None => Diagnostic::new(Code::InputUnreadable, format!("cannot read {}: {message}", p.path.display())),
                };
                diags.push(d);
            }
            for item in &r.file.items {
                if let ast::Item::Include(inc) = item {
                    let base = p.path.parent().unwrap_or(Path::new(""));
                    let target = normalize(&base.join(&inc.path.value));
                    edges.push((id, target.clone(), inc.path.span));
                    next.push(Pending { path: target, included_from: Some(inc.path.span) });
                }
            }
            loaded.parse_time += r.parse_time;
            loaded.decode_time += r.decode_time;
            loaded.files.push(r.file);
        }
        pending = next;
    }
    report_cycles(&loaded.sources, &edges, diags);
    loaded
}

/// One file read, parsed and decoded.
pub struct Parsed {
    pub text: Arc<str>,
    pub file: ast::File,
    pub document: Option<kdl::KdlDocument>,
    pub diags: Diagnostics,
    read_error: Option<String>,
    parse_time: Duration,
    decode_time: Duration,
}

/// Read, parse and decode files on all cores.
///
/// Invariant: results come back in input order, so file ids, and so all output, never
/// depend on thread timing.
fn parse_level(loader: &dyn Loader, level: &[Pending], first_id: u32) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(level.len().max(1));
    let chunk = level.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = level
            .chunks(chunk)
            .enumerate()
            .map(|(c, files)| {
                std::thread::Builder::new().stack_size(PARSER_STACK_BYTES).spawn_scoped(s, move || {
                    files
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let mut parsed = parse_one(loader, &p.path, FileId(first_id + (c * chunk + i) as u32));
                            // The KDL tree keeps every byte of formatting; once decoded it is
                            // dead weight, and dropping it here bounds peak memory.
                            parsed.document = None;
                            parsed
                        })
                        .collect::<Vec<_>>()
                })
                .expect("spawn a parser thread")
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("parser thread panicked")).collect()
    })
}

fn parse_one(loader: &dyn Loader, path: &Path, id: FileId) -> Parsed {
    match loader.read(path) {
        Ok(bytes) => parse_bytes(path, bytes, id),
        Err(e) => Parsed {
            text: Arc::from(""),
            file: ast::File { id, items: vec![] },
            document: None,
            diags: Diagnostics::default(),
            read_error: Some(io_reason(&e)),
            parse_time: Duration::ZERO,
            decode_time: Duration::ZERO,
        },
    }
}

/// Check size and encoding, parse the KDL and decode it.
pub fn parse_bytes(path: &Path, bytes: Vec<u8>, id: FileId) -> Parsed {
    let mut diags = Diagnostics::default();
    let empty = |diags, read_error| Parsed {
        text: Arc::from(""),
        file: ast::File { id, items: vec![] },
        document: None,
        diags,
        read_error,
        parse_time: Duration::ZERO,
        decode_time: Duration::ZERO,
    };
    if bytes.len() > MAX_FILE_BYTES {
        diags.push(Diagnostic::new(
            Code::FileTooLarge,
            format!(
                "{} is {:.1} MiB; spec files may be at most {} MiB",
                path.display(),
                bytes.len() as f64 / (1024.0 * 1024.0),
                MAX_FILE_BYTES / (1024 * 1024)
            ),
        ).help("split the specs into several files with `include`"));
        return empty(diags, None);
    }

    let text: Arc<str> = match String::from_utf8(bytes) {
        Ok(s) => Arc::from(s),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
            let mut p = empty(diags, None);
            p.text = Arc::from(valid);
            p.diags.push(
                Diagnostic::new(Code::NotUtf8, format!("{} is not valid UTF-8 (first bad byte at offset {at})", path.display()))
                    .at(Span::new(id, at, 0), "invalid UTF-8 starts here")
                    .help("spec files are UTF-8 text; re-encode the file"),
            );
            return p;
        }
    };
    if let Err((at, what)) = check_nesting(&text) {
        diags.push(
            Diagnostic::new(Code::KdlSyntax, format!("{what} are nested more than {MAX_NESTING} levels deep"))
                .at(Span::new(id, at, 1), "too deep")
                .help("vmform specs nest three levels at most (vm, disk, volume); check for unclosed blocks"),
        );
        let mut p = empty(diags, None);
        p.text = text;
        return p;
    }
    let started = Instant::now();
    let parsed = text.parse::<kdl::KdlDocument>();
    let parse_time = started.elapsed();
    match parsed {
        Ok(doc) => {
            let started = Instant::now();
            let file = decode_file(id, &doc, &mut diags);
            let decode_time = started.elapsed();
            Parsed { text, file, document: Some(doc), diags, read_error: None, parse_time, decode_time }
        }
        Err(err) => {
            for d in err.diagnostics {
                let msg = d.message.clone().unwrap_or_else(|| "invalid KDL".into());
                let mut diag = Diagnostic::new(Code::KdlSyntax, msg)
                    .at(Span::from_miette(id, failure_span(&text, d.span)), d.label.clone().unwrap_or_else(|| "here".into()));
                diag = diag.help(d.help.clone().unwrap_or_else(|| {
                    "vmform files are KDL v2: strings in quotes, booleans as #true/#false, blocks in { }".into()
                }));
                diags.push(diag);
            }
            let mut p = empty(diags, None);
            p.text = text;
            p.parse_time = parse_time;
            p
        }
    }
}

/// Where a KDL syntax error is. The parser spans an error from the start of the construct
/// it was reading to where it stopped; an error no construct recovers from (a property
/// without a value, an unclosed comment) is spanned from the start of the document. Such a
/// span is narrowed to its last token: the one the parser stopped at or in, cut to that
/// token's first line.
fn failure_span(text: &str, span: miette::SourceSpan) -> miette::SourceSpan {
    use crate::lex::{block_comment_len, line_end, string_len};
    let end = (span.offset() + span.len()).min(text.len());
    if span.offset() != 0 || !text.is_char_boundary(end) {
        return span;
    }
    let (mut i, mut last) = (0, None);
    while let Some(r) = text.get(i..end).filter(|r| !r.is_empty()) {
        let c = r.chars().next().unwrap_or(' ');
        if c.is_whitespace() || c == '\u{feff}' {
            i += c.len_utf8();
        } else if r.starts_with("//") {
            i += line_end(r);
        } else {
            // A token: strings and block comments whole (to the end of the file when
            // unclosed), up to the next whitespace.
            let start = i;
            while let Some(r) = text.get(i..).filter(|r| !r.is_empty() && !r.starts_with(char::is_whitespace)) {
                i += if r.starts_with("/*") { block_comment_len(r) } else { string_len(r).unwrap_or(r.chars().next().map_or(1, char::len_utf8)) };
            }
            last = Some((start, i - start));
        }
    }
    match last {
        Some((start, len)) => (start, len.min(line_end(&text[start..]))).into(),
        None => span,
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Resolve `.` and `..` without touching the file system: `a/../b` is `b`, `../b`
/// stays `../b`, and `/..` is `/`.
pub fn normalize(path: &Path) -> PathBuf {
    let mut parts: Vec<Component> = vec![];
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match parts.last() {
                Some(Component::Normal(_)) => {
                    parts.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => parts.push(c),
            },
            c => parts.push(c),
        }
    }
    parts.iter().collect()
}

/// Report each include that closes a cycle, with the whole chain in the message.
fn report_cycles(sources: &Sources, edges: &[(FileId, PathBuf, Span)], diags: &mut Diagnostics) {
    let target = |p: &PathBuf| sources.find(p);
    let n = sources.iter().count();
    let mut state = vec![0u8; n]; // 0 unvisited, 1 on stack, 2 done
    let mut stack: Vec<FileId> = vec![];
    fn visit(
        f: FileId,
        sources: &Sources,
        edges: &[(FileId, PathBuf, Span)],
        target: &dyn Fn(&PathBuf) -> Option<FileId>,
        state: &mut [u8],
        stack: &mut Vec<FileId>,
        diags: &mut Diagnostics,
    ) {
        state[f.0 as usize] = 1;
        stack.push(f);
        for (_, to, span) in edges.iter().filter(|e| e.0 == f) {
            let Some(t) = target(to) else { continue };
            match state[t.0 as usize] {
                1 => {
                    let start = stack.iter().position(|x| *x == t).unwrap_or(0);
                    let chain: Vec<String> = stack[start..]
                        .iter()
                        .chain(std::iter::once(&t))
                        .map(|x| sources.get(*x).path.display().to_string())
                        .collect();
                    diags.push(
                        Diagnostic::new(Code::IncludeCycle, format!("include cycle: {}", chain.join(" → ")))
                            .at(*span, "this include closes the cycle")
                            .help("remove one of the includes; each file is read once per run"),
                    );
                }
                0 => visit(t, sources, edges, target, state, stack, diags),
                _ => {}
            }
        }
        stack.pop();
        state[f.0 as usize] = 2;
    }
    for (id, _) in sources.iter() {
        if state[id.0 as usize] == 0 {
            visit(id, sources, edges, &target, &mut state, &mut stack, diags);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use std::path::Path;

    #[test]
    fn normalize_resolves_dots_lexically() {
        assert_eq!(normalize(Path::new("vms/../shared/x.kdl")), Path::new("shared/x.kdl"));
        assert_eq!(normalize(Path::new("./a/./b.kdl")), Path::new("a/b.kdl"));
        assert_eq!(normalize(Path::new("../x.kdl")), Path::new("../x.kdl"));
        assert_eq!(normalize(Path::new("a/../../x.kdl")), Path::new("../x.kdl"));
        assert_eq!(normalize(Path::new("/a/../../x.kdl")), Path::new("/x.kdl"));
    }
}
