//! Writing disk images: sparsely (blocks of zeros become holes), and the space left for them.
//! Below both the image cache and the volumes, which write disks the same way.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

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
