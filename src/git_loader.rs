//! The compiler's [`Loader`] over a git revision, for `vmform diff --base REV`: files are
//! read with `git show REV:./PATH` and directories listed with `git ls-tree`, so the old
//! side of a pull request compiles exactly as it was committed, includes and all.

use std::path::{Path, PathBuf};
use std::process::Command;
use vmform_compiler::Loader;

pub struct GitLoader {
    rev: String,
}

impl GitLoader {
    /// Check that `rev` names a commit here before anything is read from it.
    pub fn new(rev: &str) -> Result<Self, String> {
        let out = Command::new("git")
            .args(["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")])
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if !out.status.success() {
            return Err(format!("`{rev}` is not a git revision of this repository"));
        }
        Ok(GitLoader { rev: rev.to_string() })
    }

    fn object(&self, path: &Path) -> String {
        // `./` makes git resolve the path from the current directory, as the work tree is.
        format!("{}:./{}", self.rev, path.display())
    }

    fn git(&self, args: &[&str]) -> std::io::Result<Vec<u8>> {
        let out = Command::new("git").args(args).output()?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("not in {}", self.rev)))
        }
    }
}

impl Loader for GitLoader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.git(&["show", &self.object(path)])
    }

    fn read_dir(&self, path: &Path) -> std::io::Result<Option<Vec<PathBuf>>> {
        let kind = self.git(&["cat-file", "-t", &self.object(path)])?;
        if kind.trim_ascii() != b"tree" {
            return Ok(None);
        }
        let listing = self.git(&["ls-tree", "--name-only", &self.object(path)])?;
        Ok(Some(String::from_utf8_lossy(&listing).lines().filter(|l| !l.is_empty()).map(|l| path.join(l)).collect()))
    }
}
