//! Writing files safely, and sparsely; the space left for them.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Write a file so that a reader sees the old content or the new, never a part: a
/// temporary file in the same directory, synced, then renamed over the target.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // A bare file name's parent is "": the current directory.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The rename is durable once the directory is synced.
    File::open(dir)?.sync_all()
}

/// Write a secret (key, token digests, kubeconfig): mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically(path, bytes, 0o600)
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Writes a file sequentially, leaving holes for 4 KiB blocks of zeros, so a raw image
/// takes only the space its data needs. Buffered in whole blocks, so holes stay aligned.
pub struct SparseWriter {
    file: File,
    buf: Vec<u8>,
    pos: u64,
}

const BLOCK: usize = 4096;
const SPARSE_BUF: usize = 1 << 20;

impl SparseWriter {
    pub fn new(file: File) -> Self {
        SparseWriter { file, buf: Vec::with_capacity(SPARSE_BUF), pos: 0 }
    }

    fn flush_blocks(&mut self) -> io::Result<()> {
        for block in self.buf.chunks(BLOCK) {
            if !is_zero(block) {
                self.file.write_all_at(block, self.pos)?;
            }
            self.pos += block.len() as u64;
        }
        self.buf.clear();
        Ok(())
    }

    /// Write what is buffered, set the length (a trailing hole), sync. Returns the length.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush_blocks()?;
        self.file.set_len(self.pos)?;
        self.file.sync_all()?;
        Ok(self.pos)
    }
}

fn is_zero(block: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u64.
    let (head, words, tail) = unsafe { block.align_to::<u64>() };
    head.iter().all(|b| *b == 0) && words.iter().all(|w| *w == 0) && tail.iter().all(|b| *b == 0)
}

impl Write for SparseWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(SPARSE_BUF - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == SPARSE_BUF {
            self.flush_blocks()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks() {
        assert!(is_zero(&[0; 4096]));
        let mut b = [0u8; 4096];
        b[4095] = 1;
        assert!(!is_zero(&b));
        assert!(!is_zero(&b[1..]));
    }
}
