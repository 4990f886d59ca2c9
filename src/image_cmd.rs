//! `vmform image pull|list|prune`: the local runtime's image cache (`<data>/images`, shared
//! by every node), through the runtime's own puller.

use crate::cli::ImageCommand;
use crate::error::{Done, Error, Outcome};
use crate::say;
use std::path::{Path, PathBuf};
use vmform_runtime::images::{self, PullPolicy, PullRequest};

pub fn run(command: ImageCommand) -> Outcome {
    match command {
        ImageCommand::Pull { data_dir, reference, pull_policy } => pull(&data_dir.resolve(), &reference, pull_policy.as_deref()),
        ImageCommand::List { data_dir } => list(&data_dir.resolve()),
        ImageCommand::Prune { data_dir } => prune(&data_dir.resolve()),
    }
}

fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

fn pull(data_dir: &Path, reference: &str, policy: Option<&str>) -> Outcome {
    let mut request = PullRequest::new(reference, cache_dir(data_dir));
    if let Some(p) = policy {
        match PullPolicy::parse(p) {
            Some(p) => request.policy = Some(p),
            None => {
                return Err(Error::usage(format!("--pull-policy `{p}` is not Always, IfNotPresent or Never")));
            }
        }
    }
    match images::pull_blocking(&request) {
        Ok(p) => {
            let how = if p.from_cache { "from the cache" } else { "pulled" };
            say!("{reference}: {} ({how}; {} disk of {}, {} downloaded)", p.manifest_digest, p.format.as_str(), mib(p.size), mib(p.downloaded));
            Ok(Done::Ok)
        }
        Err(e) => {
            Err(Error::failed(format!("{e}")))
        }
    }
}

fn list(data_dir: &Path) -> Outcome {
    match images::list(&cache_dir(data_dir)) {
        Ok(cached) => {
            let in_use = in_use(data_dir);
            for image in &cached {
                let used = if in_use.contains(&image.disk) { "  (in use)" } else { "" };
                let last = ago(image.last_used);
                say!("{}  {}  {} disk of {}, {} on disk, last used {last}{used}", image.references.join(", "), image.manifest_digest, image.format.as_str(), mib(image.size), mib(image.bytes));
            }
            say!("{}", vmform_compiler::plural(cached.len(), "image"));
            Ok(Done::Ok)
        }
        Err(e) => {
            Err(Error::usage(format!("{e}")))
        }
    }
}

/// Removes what no guest boots from: a guest boots from an overlay whose backing file is a
/// cached disk, and the overlay exists while its launcher runs.
fn prune(data_dir: &Path) -> Outcome {
    let cache = cache_dir(data_dir);
    let in_use = in_use(data_dir);
    let keep: Vec<String> = match images::list(&cache) {
        Ok(cached) => cached.into_iter().filter(|i| in_use.contains(&i.disk)).map(|i| i.manifest_digest).collect(),
        Err(e) => {
            return Err(Error::usage(format!("{e}")));
        }
    };
    match images::prune(&cache, &keep.iter().map(String::as_str).collect::<Vec<_>>()) {
        Ok(removed) => {
            for digest in &removed {
                say!("removed {digest}");
            }
            say!("{} removed, {} kept (in use)", vmform_compiler::plural(removed.len(), "image"), keep.len());
            Ok(Done::Ok)
        }
        Err(e) => {
            Err(Error::usage(format!("{e}")))
        }
    }
}

/// The cached disks guests boot from now: the backing files of the overlays in the
/// nodes' VMI dirs (`<data>/nodes/*/vmis/*/disks/*.qcow2`).
fn in_use(data_dir: &Path) -> Vec<PathBuf> {
    let entries = |dir: PathBuf| std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path());
    entries(data_dir.join("nodes"))
        .flat_map(|node| entries(node.join("vmis")))
        .flat_map(|vmi| entries(vmi.join("disks")))
        .filter(|f| f.extension().is_some_and(|e| e == "qcow2"))
        .filter_map(|overlay| images::qcow2_backing_file(&overlay))
        .collect()
}

fn ago(time: std::time::SystemTime) -> String {
    match time.elapsed().map(|d| d.as_secs()).unwrap_or(0) {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
