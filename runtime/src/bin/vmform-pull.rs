//! `vmform-pull REF CACHE_DIR [--auth-file PATH]`: pull one container-disk image into an
//! image cache, as the runtime does, and print one line:
//! `PULLED <manifest digest> <bytes downloaded> <peak memory KiB>`, or `FAILED <why>` and
//! exit 3. A tool for trying a registry by hand, and the process the image tests kill
//! halfway or run twice at once.

use std::path::PathBuf;
use vmform_runtime::images::{self, PullRequest};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (reference, cache, auth_file) = match args.as_slice() {
        [reference, cache] => (reference, cache, None),
        [reference, cache, flag, file] if flag == "--auth-file" => (reference, cache, Some(PathBuf::from(file))),
        _ => {
            eprintln!("usage: vmform-pull REF CACHE_DIR [--auth-file PATH]");
            std::process::exit(2);
        }
    };
    let mut request = PullRequest::new(reference, std::path::Path::new(cache));
    if auth_file.is_some() {
        request.auth_file = auth_file;
    }
    match images::pull_blocking(&request) {
        Ok(p) => println!("PULLED {} {} {}", p.manifest_digest, p.downloaded, peak_memory_kib()),
        Err(e) => {
            println!("FAILED {e}");
            std::process::exit(3);
        }
    }
}

/// This process's peak resident memory (VmHWM), in KiB.
fn peak_memory_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}
