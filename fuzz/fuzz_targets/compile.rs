//! Fuzz the whole compiler: the input is up to three spec files, split on the byte 0xFF
//! (which never occurs in UTF-8 text). `main.kdl` is the root; it may include the others
//! as `lib/a.kdl` and `lib/b.kdl`, and `lib/a.kdl` may include `b.kdl`.
//!
//! Checked: nothing panics (compile, locating and reporting diagnostics, emitting, fmt),
//! a compilation with errors has no objects, and formatting is idempotent (what fmt
//! writes parses, and formats to itself).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vmform_compiler::{compile, emit, fmt, Loader, Options};

const SEPARATOR: u8 = 0xFF;
const NAMES: [&str; 3] = ["main.kdl", "lib/a.kdl", "lib/b.kdl"];

struct MemLoader(BTreeMap<PathBuf, Vec<u8>>);

impl Loader for MemLoader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.0.get(path).cloned().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    }

    fn read_dir(&self, path: &Path) -> std::io::Result<Option<Vec<PathBuf>>> {
        if self.0.contains_key(path) {
            return Ok(None);
        }
        let entries: Vec<PathBuf> = self.0.keys().filter(|p| p.parent() == Some(path)).cloned().collect();
        Ok((!entries.is_empty()).then_some(entries))
    }
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.splitn(NAMES.len(), |b| *b == SEPARATOR).collect();
    let loader = MemLoader(NAMES.iter().zip(&parts).map(|(n, p)| (PathBuf::from(n), p.to_vec())).collect());

    let c = compile(&loader, &[PathBuf::from(NAMES[0])], &Options { vars: vec![("env".into(), "prod".into())], source_maps: true, ..Options::default() });
    assert!(
        !c.has_errors() || c.objects.is_empty(),
        "a compilation with errors has {} objects",
        c.objects.len()
    );
    for d in c.diagnostics.sorted() {
        let _ = d.locate(&c.sources);
        let _ = d.report(&c.sources);
    }
    let objects: Vec<_> = c.objects.iter().map(|o| &o.object).collect();
    let _ = emit::to_yaml(objects.iter().copied());
    let _ = emit::to_json(objects.iter().copied());

    for (name, bytes) in NAMES.iter().zip(&parts) {
        if let Ok(text) = std::str::from_utf8(bytes) {
            if let Ok(once) = fmt::format_source(text) {
                match fmt::format_source(&once) {
                    Ok(twice) => assert_eq!(twice, once, "fmt is not idempotent"),
                    Err(e) => panic!("fmt wrote text that does not parse: {e}\n{once}"),
                }
            }
        }
        let _ = fmt::format_file(Path::new(name), bytes.to_vec());
    }
});
