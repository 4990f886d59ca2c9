//! The error corpus: every bad spec under `tests/errors/` and the diagnostics it must give.
//!
//! A case is a file `NAME.kdl`, or a directory `NAME/` whose `*.kdl` files (directly in
//! it) are compiled together as one run, exactly as `vmform validate NAME/` does. Other
//! files of a directory case (includes in subdirectories, cloud-init data) are only read
//! when a spec names them.
//!
//! The comment lines at the top of the case file (for a directory case, of `main.kdl`)
//! say what the run must report:
//!
//! ```text
//! // expect: E0102 at main.kdl:3:5        a diagnostic: code, file, 1-based line and column
//! // expect: W0003                        a diagnostic with no place in a file
//! // expect-also: E0305 at other.kdl:2:4  a secondary label of a diagnostic with that code
//! // expect-help: E0102 did you mean `masquerade`   a substring of that diagnostic's help
//! // var: env=prod                        a `--var` for the run
//! ```
//!
//! Files are named relative to the case directory (for a single-file case, just its
//! name); columns count characters. The reported (code, file, line, column) set must equal
//! the expected one, for primary and for secondary labels alike.
//!
//! `VMFORM_CORPUS_PRINT=1 cargo test -p vmform-compiler --test error_corpus -- --nocapture`
//! prints what every case reports, messages and help included, to review their wording.
//!
//! Codes that no spec file on disk can produce (a file over the size limit, command-line
//! paths that do not exist or hold no spec) are tested through the API with an
//! in-memory [`Loader`] further down; `every_code_is_covered` keeps both lists complete.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vmform_compiler::load::MAX_FILE_BYTES;
use vmform_compiler::{Code, Compilation, FsLoader, Loader, Options, Sources, compile};


/// Input held in memory: files by path, and the directories that list them.
#[derive(Default)]
struct MemLoader {
    files: BTreeMap<PathBuf, Vec<u8>>,
    dirs: BTreeMap<PathBuf, Vec<PathBuf>>,
}

impl MemLoader {
    fn file(mut self, path: &str, bytes: impl Into<Vec<u8>>) -> Self {
        let path = PathBuf::from(path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dirs.entry(parent.to_path_buf()).or_default().push(path.clone());
        }
        self.files.insert(path, bytes.into());
        self
    }
    fn dir(mut self, path: &str) -> Self {
        self.dirs.entry(PathBuf::from(path)).or_default();
        self
    }
}

impl Loader for MemLoader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files.get(path).cloned().ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
    fn read_dir(&self, path: &Path) -> std::io::Result<Option<Vec<PathBuf>>> {
        match self.dirs.get(path) {
            Some(entries) => Ok(Some(entries.clone())),
            None if self.files.contains_key(path) => Ok(None),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }
}

/// Where a label points: code, file relative to the case, line, column.
type Place = (String, Option<String>, Option<usize>, Option<usize>);

fn show(p: &Place) -> String {
    match (&p.1, p.2, p.3) {
        (Some(f), Some(l), Some(c)) => format!("{} at {f}:{l}:{c}", p.0),
        _ => p.0.clone(),
    }
}

#[derive(Default, Debug)]
struct Expected {
    primary: BTreeSet<Place>,
    secondary: BTreeSet<Place>,
    /// (code, substring of its help)
    help: Vec<(String, String)>,
    vars: Vec<(String, String)>,
}

/// Read the `// expect…` header of a case file.
fn parse_header(file: &Path) -> Expected {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let text = String::from_utf8_lossy(&bytes);
    let mut exp = Expected::default();
    for line in text.lines() {
        let line = line.trim();
        let Some(comment) = line.strip_prefix("//") else { break };
        let comment = comment.trim();
        let Some((key, rest)) = comment.split_once(':') else { continue };
        let rest = rest.trim();
        match key {
            "expect" | "expect-also" => {
                let place = parse_place(rest).unwrap_or_else(|| panic!("{}: bad `{key}` line: {line}", file.display()));
                if key == "expect" { &mut exp.primary } else { &mut exp.secondary }.insert(place);
            }
            "expect-help" => {
                let (code, sub) = rest.split_once(' ').unwrap_or_else(|| panic!("{}: bad expect-help: {line}", file.display()));
                exp.help.push((code.to_string(), sub.trim().to_string()));
            }
            "var" => {
                let (k, v) = rest.split_once('=').unwrap_or_else(|| panic!("{}: bad var: {line}", file.display()));
                exp.vars.push((k.to_string(), v.to_string()));
            }
            _ => {}
        }
    }
    exp
}

/// `E0101 at main.kdl:3:5` or a bare `W0003`.
fn parse_place(s: &str) -> Option<Place> {
    let (code, at) = match s.split_once(" at ") {
        Some((c, at)) => (c.trim(), Some(at.trim())),
        None => (s.trim(), None),
    };
    if !Code::ALL.iter().any(|c| c.as_str() == code) {
        return None;
    }
    let Some(at) = at else { return Some((code.to_string(), None, None, None)) };
    let mut parts = at.rsplitn(3, ':');
    let col = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let file = parts.next()?.to_string();
    Some((code.to_string(), Some(file), Some(line), Some(col)))
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/errors")
}

/// A case: its name, the path given to the compiler, the file holding the header, and
/// the directory file names are relative to.
struct Case {
    name: String,
    input: PathBuf,
    header: PathBuf,
    root: PathBuf,
}

fn cases() -> Vec<Case> {
    let dir = corpus_dir();
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("tests/errors exists").map(|e| e.expect("readable entry").path()).collect();
    entries.sort();
    let mut out = vec![];
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let header = path.join("main.kdl");
            assert!(header.is_file(), "directory case {name} has no main.kdl");
            out.push(Case { name, input: path.clone(), header, root: path });
        } else if path.extension().is_some_and(|e| e == "kdl") {
            out.push(Case { name, input: path.clone(), header: path.clone(), root: dir.clone() });
        }
    }
    out
}

/// A file name relative to the case root, with `/` separators.
fn relative(sources: &Sources, file: vmform_compiler::FileId, root: &Path) -> String {
    let path = &sources.get(file).path;
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

fn place(code: Code, sources: &Sources, span: Option<vmform_compiler::Span>, root: &Path) -> Place {
    match span {
        Some(span) => {
            let (line, col) = sources.get(span.file).line_col(span.start as usize);
            (code.as_str().to_string(), Some(relative(sources, span.file, root)), Some(line), Some(col))
        }
        None => (code.as_str().to_string(), None, None, None),
    }
}

/// Compile one case and describe every way it differs from its header (empty if none).
fn check_case(case: &Case) -> Vec<String> {
    let exp = parse_header(&case.header);
    let options = Options { vars: exp.vars.clone(), ..Options::default() };
    let input = case.input.clone();
    let result = std::panic::catch_unwind(move || compile(&FsLoader, &[input], &options));
    let c: Compilation = match result {
        Ok(c) => c,
        Err(e) => {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            return vec![format!("the compiler panicked: {}", msg.unwrap_or_default())];
        }
    };
    let mut problems = vec![];
    let diags = c.diagnostics.sorted();

    let mut primary = BTreeSet::new();
    let mut secondary = BTreeSet::new();
    for d in &diags {
        // `locate` is what the CLI prints; check it agrees with the span.
        let located = d.locate(&c.sources);
        let p = place(d.code, &c.sources, d.primary.as_ref().map(|l| l.span), &case.root);
        if (located.line, located.column, located.code) != (p.2, p.3, p.0.as_str()) {
            problems.push(format!("{}: `locate` says {:?}:{:?}, the span {}", located.code, located.line, located.column, show(&p)));
        }
        primary.insert(p);
        for l in &d.secondary {
            secondary.insert(place(d.code, &c.sources, Some(l.span), &case.root));
        }
    }

    let diff = |what: &str, got: &BTreeSet<Place>, want: &BTreeSet<Place>, problems: &mut Vec<String>| {
        if got != want {
            let mut s = format!("{what} labels differ\n");
            for p in want.difference(got) {
                let _ = writeln!(s, "    missing:    {}", show(p));
            }
            for p in got.difference(want) {
                let _ = writeln!(s, "    unexpected: {}", show(p));
            }
            let _ = writeln!(s, "    expected: [{}]", want.iter().map(show).collect::<Vec<_>>().join(", "));
            let _ = write!(s, "    reported: [{}]", got.iter().map(show).collect::<Vec<_>>().join(", "));
            problems.push(s);
        }
    };
    diff("primary", &primary, &exp.primary, &mut problems);
    diff("secondary", &secondary, &exp.secondary, &mut problems);

    for (code, sub) in &exp.help {
        let helps: Vec<&str> =
            diags.iter().filter(|d| d.code.as_str() == code).filter_map(|d| d.help.as_deref()).collect();
        if !helps.iter().any(|h| h.contains(sub.as_str())) {
            problems.push(format!("no {code} has help containing {sub:?}; helps: {helps:?}"));
        }
    }

    // Every diagnostic of a spec carries help text, and a label unless it has no place in
    // a file.
    for d in &diags {
        if d.help.as_deref().is_none_or(str::is_empty) && !MISSING_HELP.contains(&d.code) {
            problems.push(format!("{} `{}` has no help", d.code.as_str(), d.message));
        }
        if d.primary.is_none() && !UNPLACED.contains(&d.code) {
            problems.push(format!("{} `{}` has no location", d.code.as_str(), d.message));
        }
    }

    if c.has_errors() && !c.objects.is_empty() {
        problems.push(format!("the run has errors but emitted {} objects", c.objects.len()));
    }
    if !problems.is_empty() || std::env::var_os("VMFORM_CORPUS_PRINT").is_some() {
        let mut all = String::from("    diagnostics:\n");
        for d in &diags {
            let l = d.locate(&c.sources);
            let _ = writeln!(
                all,
                "      {} {}:{}:{} {} [{}] help: {}",
                l.code,
                d.primary.as_ref().map(|p| relative(&c.sources, p.span.file, &case.root)).unwrap_or_default(),
                l.line.unwrap_or(0),
                l.column.unwrap_or(0),
                l.message,
                l.label.unwrap_or_default(),
                l.help.unwrap_or_default()
            );
        }
        if problems.is_empty() {
            println!("case {}:\n{all}", case.name);
        } else {
            problems.push(all);
        }
    }
    problems
}

/// Diagnostics about the run rather than a place in a file.
const UNPLACED: &[Code] = &[Code::UnknownVar, Code::EmptyRun, Code::InputUnreadable, Code::NoSpecFiles];

/// Codes that, in some place, are still reported without help text (a compiler bug:
/// `unexpected_argument_*` cases). Remove them here once fixed.
const MISSING_HELP: &[Code] = &[];

#[test]
fn corpus() {
    let cases = cases();
    assert!(cases.len() >= 50, "the corpus has only {} cases", cases.len());
    let mut failures = String::new();
    for case in &cases {
        let problems = check_case(case);
        if !problems.is_empty() {
            let _ = writeln!(failures, "case {}:", case.name);
            for p in problems {
                let _ = writeln!(failures, "  {p}");
            }
        }
    }
    assert!(failures.is_empty(), "error corpus failures:\n{failures}");
}

#[test]
fn every_case_states_its_expectations() {
    for case in cases() {
        let exp = parse_header(&case.header);
        assert!(!exp.primary.is_empty(), "case {} expects no diagnostic", case.name);
        for (code, _) in &exp.help {
            assert!(exp.primary.iter().any(|p| &p.0 == code), "case {}: expect-help for {code}, not expected", case.name);
        }
        for p in &exp.secondary {
            assert!(exp.primary.iter().any(|q| q.0 == p.0), "case {}: expect-also for {}, not expected", case.name, p.0);
        }
    }
}

/// Codes tested below through the API rather than by a file in the corpus.
const API_TESTED: &[Code] = &[Code::FileTooLarge, Code::InputUnreadable, Code::NoSpecFiles, POLICY_CODES[0], POLICY_CODES[1], POLICY_CODES[2]];

/// Codes of policy files, not specs: tested in compiler/tests/policy.rs.
const POLICY_CODES: [Code; 3] = [Code::BadPolicy, Code::BadCel, Code::UnknownPolicyRule];

#[test]
fn every_code_is_covered() {
    let mut covered: BTreeSet<&str> = API_TESTED.iter().map(|c| c.as_str()).collect();
    for case in cases() {
        for p in parse_header(&case.header).primary {
            if let Some(code) = Code::ALL.iter().find(|c| c.as_str() == p.0) {
                covered.insert(code.as_str());
            }
        }
    }
    let missing: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).filter(|c| !covered.contains(c)).collect();
    assert!(missing.is_empty(), "codes with no case in tests/errors and no API test: {missing:?}");
}

fn codes(c: &Compilation) -> Vec<Code> {
    c.diagnostics.sorted().iter().map(|d| d.code).collect()
}

const VM: &str = "vm \"web\" {\n    memory \"1Gi\"\n}\n";

#[test]
fn api_file_too_large() {
    let mut big = VM.as_bytes().to_vec();
    big.resize(MAX_FILE_BYTES + 1, b'\n');
    let loader = MemLoader::default().file("specs/big.kdl", big).file("specs/ok.kdl", VM.replace("web", "db"));
    let c = compile(&loader, &[PathBuf::from("specs")], &Options::default());
    assert_eq!(codes(&c), vec![Code::FileTooLarge]);
    let d = c.diagnostics.sorted()[0];
    assert!(d.message.contains("specs/big.kdl"), "{}", d.message);
    assert!(d.help.is_some());
    assert!(c.objects.is_empty());
    // (A file of exactly MAX_FILE_BYTES is accepted, but parsing 32 MiB takes minutes in
    // a debug build, so that side of the limit is left to the CLI tests.)
}

#[test]
fn api_input_unreadable() {
    let loader = MemLoader::default().file("web.kdl", VM);
    let c = compile(&loader, &[PathBuf::from("web.kdl"), PathBuf::from("wbe.kdl")], &Options::default());
    assert_eq!(codes(&c), vec![Code::InputUnreadable]);
    let d = c.diagnostics.sorted()[0];
    assert!(d.is_input_error());
    assert!(d.message.contains("wbe.kdl"), "{}", d.message);
    assert!(d.primary.is_none(), "a command-line path has no place in a file");
    assert!(c.objects.is_empty());

    // The same through the file system.
    let missing = corpus_dir().join("no-such-case.kdl");
    let c = compile(&FsLoader, &[missing], &Options::default());
    assert_eq!(codes(&c), vec![Code::InputUnreadable]);
}

#[test]
fn api_no_spec_files() {
    let loader = MemLoader::default().dir("specs").file("specs/README.md", "# specs\n").file("web.kdl", VM);
    let c = compile(&loader, &[PathBuf::from("specs"), PathBuf::from("web.kdl")], &Options::default());
    assert_eq!(codes(&c), vec![Code::NoSpecFiles]);
    let d = c.diagnostics.sorted()[0];
    assert!(d.is_input_error());
    assert!(d.message.contains("specs"), "{}", d.message);
    assert!(d.help.is_some());
    assert!(c.objects.is_empty());

    let c = compile(&MemLoader::default().dir("empty"), &[PathBuf::from("empty")], &Options::default());
    assert_eq!(codes(&c), vec![Code::NoSpecFiles]);
}

#[test]
fn api_not_utf8() {
    // Also a corpus case (not_utf8.kdl); here the offset in the message is checked too.
    let loader = MemLoader::default().file("web.kdl", b"vm \"web\" {\n    labels owner=\"Jos\xe9\"\n}\n".to_vec());
    let c = compile(&loader, &[PathBuf::from("web.kdl")], &Options::default());
    assert_eq!(codes(&c), vec![Code::NotUtf8]);
    let d = c.diagnostics.sorted()[0];
    assert!(d.message.contains("offset 32"), "{}", d.message);
    let l = d.locate(&c.sources);
    assert_eq!((l.line, l.column), (Some(2), Some(22)));
}

/// Regression test for a reported bug: a few dozen nested blocks overflow the stack of
/// the compiler's parser threads, and the process aborts (no panic to catch, so this
/// cannot be a corpus case). Run with `-- --ignored` once fixed.
#[test]
fn deeply_nested_blocks_do_not_crash() {
    let deep = "a {".repeat(200) + &"}".repeat(200) + "\n";
    let c = compile(&MemLoader::default().file("deep.kdl", deep), &[PathBuf::from("deep.kdl")], &Options::default());
    assert_eq!(codes(&c), vec![Code::KdlSyntax], "refused before the parser recurses");
    let comments = "/* ".repeat(5000) + &"*/ ".repeat(5000) + "vm \"a\" { memory \"1Gi\" }\n";
    let c = compile(&MemLoader::default().file("c.kdl", comments), &[PathBuf::from("c.kdl")], &Options::default());
    assert_eq!(codes(&c), vec![Code::KdlSyntax]);
    let ok = "vm \"a\" { memory \"1Gi\"; disk \"d\" { volume size=\"1Gi\" } }\n".to_string();
    let c = compile(&MemLoader::default().file("ok.kdl", ok), &[PathBuf::from("ok.kdl")], &Options::default());
    assert!(!c.has_errors(), "ordinary nesting is fine");
}
