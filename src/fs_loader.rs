//! The compiler's [`Loader`] over the local file system.

use std::path::{Path, PathBuf};
use vmform_compiler::Loader;

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
            if entry.file_type()?.is_file() || entry.path().is_file() {
                out.push(entry.path());
            }
        }
        Ok(Some(out))
    }

    fn identity(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| vmform_compiler::load::normalize(path))
    }
}
