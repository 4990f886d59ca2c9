//! Local volumes of the bundled runtime: a `persistentVolumeClaim` or `dataVolume` of a
//! VM is a raw, sparse file `<data>/volumes/<namespace>/<claim>.img`
//! (specs/runtime-contract.md).
//!
//! The VM's `spec.dataVolumeTemplates` (CDI `cdi.kubevirt.io/v1beta1` DataVolume
//! templates) are provisioned before its first start: a `blank` one is created sparse with
//! the requested size; an `http`/`https` one is downloaded (gzip or xz compressed, through
//! the `gzip` and `xz` commands), its format told by `qemu-img info` (raw or qcow2; qcow2
//! is converted with `qemu-img convert`), and grown to the requested size. Every step
//! writes to hidden temporary files in the same directory, and only a complete volume is
//! renamed into place: a failed, cancelled or killed import never leaves a half-made
//! `<claim>.img` (its leftovers are removed by the next attempt). Other sources (registry,
//! pvc clone, s3, …) are refused when the template is parsed.
//!
//! Everything here is synchronous: callers run it on a blocking thread. A per-claim lock
//! file serialises provisioning and deletion of one claim between threads and processes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vmform_compiler::values::{check_dns_label, parse_quantity};

use crate::disk_files::{free_space, SparseWriter};

/// Longest claim name accepted: `.<claim>.img.download` must fit a file name (255 bytes).
/// Kubernetes allows 253 characters; names that long are refused with a clear message.
const MAX_CLAIM_LEN: usize = 240;
/// The download stalls if no byte arrives for this long.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Progress without a known total is reported at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// The file backing claim `claim` of namespace `namespace`.
pub fn claim_path(volumes_dir: &Path, namespace: &str, claim: &str) -> PathBuf {
    volumes_dir.join(namespace).join(format!("{claim}.img"))
}

/// `<claim>.json` beside `<claim>.img`: the claim's access modes, as its template asked
/// (the controller records them, the handler reads them for `LiveMigratable`).
pub fn access_modes_path(volumes_dir: &Path, namespace: &str, claim: &str) -> PathBuf {
    claim_path(volumes_dir, namespace, claim).with_extension("json")
}

/// One entry of a VM's `spec.dataVolumeTemplates`, as far as the local runtime uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataVolumeTemplate {
    /// `metadata.name`: the claim the VM's `dataVolume` volume names.
    pub name: String,
    /// `spec.storage.resources.requests.storage` (or `spec.pvc.…`) in bytes. Required for a
    /// blank volume; an imported one without it gets the image's virtual size.
    pub size: Option<u64>,
    /// `spec.storage.accessModes` (or `spec.pvc.…`): kept for callers; a local file
    /// serves them all.
    pub access_modes: Vec<String>,
    pub source: Source,
}

/// Where a data volume's content comes from. Only the sources the local runtime can
/// provide parse; the others are refused by [`DataVolumeTemplate::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `spec.source.blank: {}`: an empty (all-zero) disk.
    Blank,
    /// `spec.source.http`: a raw or qcow2 image, optionally gzip or xz compressed.
    Http {
        url: String,
        /// `extraHeaders` (`"Name: value"` strings), sent with the request.
        extra_headers: Vec<(String, String)>,
    },
    /// `spec.source.registry.url: docker://REF`: a containerDisk image's disk, pulled
    /// through the runtime's image cache (`crate::images`), as CDI imports it.
    Registry { url: String },
}

impl DataVolumeTemplate {
    /// Parse one entry of `spec.dataVolumeTemplates`.
    pub fn parse(v: &Value) -> Result<Self, VolumeError> {
        let name = match v.pointer("/metadata/name") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(template(None, "metadata.name is not a string")),
            None => return Err(template(None, "metadata.name is missing")),
        };
        check_claim_name(&name).map_err(|e| template(Some(&name), format!("metadata.name: {e}")))?;
        let bad = |message: String| template(Some(&name), message);
        let spec = v.get("spec").filter(|s| s.is_object()).ok_or_else(|| bad("spec is missing".into()))?;

        let mut size = None;
        let mut access_modes = Vec::new();
        for key in ["storage", "pvc"] {
            let Some(claim) = spec.get(key) else { continue };
            if let Some(q) = claim.pointer("/resources/requests/storage") {
                let bytes = parse_size(q).map_err(|e| bad(format!("spec.{key}.resources.requests.storage: {e}")))?;
                size.get_or_insert(bytes);
            }
            if let Some(modes) = claim.get("accessModes") {
                let modes = modes.as_array().ok_or_else(|| bad(format!("spec.{key}.accessModes is not a list")))?;
                for m in modes {
                    let m = m.as_str().ok_or_else(|| bad(format!("spec.{key}.accessModes holds a non-string")))?;
                    if !access_modes.iter().any(|x| x == m) {
                        access_modes.push(m.to_string());
                    }
                }
            }
        }

        if let Some(ct) = spec.get("contentType").and_then(Value::as_str)
            && ct != "kubevirt"
        {
            return Err(unsupported(&name, &format!("contentType: {ct}"), "only disk images (contentType kubevirt) can be imported; an archive is unpacked into a file system, which a local raw volume does not have"));
        }

        let source = match spec.get("source") {
            None | Some(Value::Null) if spec.get("sourceRef").is_some() => {
                return Err(unsupported(&name, "sourceRef", "a DataSource lives in the cluster's image catalogue, which the local runtime does not have; use spec.source.http with the image's URL"));
            }
            None | Some(Value::Null) => return Err(bad("spec.source is missing; use `blank: {}` or `http: {url: …}`".into())),
            Some(Value::Object(src)) => {
                let mut kinds = src.iter().filter(|(_, v)| !v.is_null());
                let Some((kind, body)) = kinds.next() else {
                    return Err(bad("spec.source is empty; use `blank: {}` or `http: {url: …}`".into()));
                };
                if let Some((other, _)) = kinds.next() {
                    return Err(bad(format!("spec.source names more than one source (`{kind}` and `{other}`)")));
                }
                parse_source(&name, kind, body)?
            }
            Some(_) => return Err(bad("spec.source is not an object".into())),
        };

        if size == Some(0) {
            return Err(bad("the requested storage is 0 bytes".into()));
        }
        if source == Source::Blank && size.is_none() {
            return Err(bad("a blank data volume needs a size: spec.storage.resources.requests.storage".into()));
        }
        Ok(DataVolumeTemplate { name, size, access_modes, source })
    }

    /// Parse every entry of a VirtualMachine's `spec.dataVolumeTemplates` (none: empty).
    pub fn parse_all(vm: &Value) -> Result<Vec<Self>, VolumeError> {
        match vm.pointer("/spec/dataVolumeTemplates") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(Self::parse).collect(),
            Some(_) => Err(template(None, "spec.dataVolumeTemplates is not a list")),
        }
    }
}

fn parse_source(volume: &str, kind: &str, body: &Value) -> Result<Source, VolumeError> {
    let bad = |message: String| template(Some(volume), message);
    match kind {
        "blank" => Ok(Source::Blank),
        "http" => {
            let url = body.get("url").and_then(Value::as_str).ok_or_else(|| bad("spec.source.http.url is missing".into()))?;
            let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if !matches!(scheme.as_deref(), Some("http" | "https")) {
                return Err(bad(format!("spec.source.http.url `{url}` is not an http:// or https:// URL")));
            }
            for (field, why) in [
                ("secretRef", "credentials from a Secret"),
                ("certConfigMap", "a CA certificate from a ConfigMap"),
                ("secretExtraHeaders", "headers from a Secret"),
            ] {
                if body.get(field).is_some_and(|v| !v.is_null()) {
                    return Err(unsupported(volume, &format!("http.{field}"), &format!("the local runtime cannot read {why}; use a URL that needs none")));
                }
            }
            let mut extra_headers = Vec::new();
            if let Some(hs) = body.get("extraHeaders").filter(|v| !v.is_null()) {
                let hs = hs.as_array().ok_or_else(|| bad("spec.source.http.extraHeaders is not a list".into()))?;
                for h in hs {
                    let (k, v) = h
                        .as_str()
                        .and_then(|h| h.split_once(':'))
                        .filter(|(k, _)| !k.trim().is_empty())
                        .ok_or_else(|| bad(format!("spec.source.http.extraHeaders: {h} is not a `Name: value` string")))?;
                    extra_headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            Ok(Source::Http { url: url.to_string(), extra_headers })
        }
        "registry" => {
            for (field, why) in [
                ("secretRef", "credentials from a Secret (it reads ~/.docker/config.json and $REGISTRY_AUTH_FILE)"),
                ("certConfigMap", "CA certificates from a ConfigMap"),
                ("imageStream", "OpenShift image streams"),
            ] {
                if body.get(field).is_some_and(|v| !v.is_null()) {
                    return Err(unsupported(volume, &format!("registry.{field}"), &format!("the local runtime cannot use {why}; use a docker:// URL it can pull as it is")));
                }
            }
            match body.get("url").and_then(Value::as_str) {
                Some(url) if url.strip_prefix("docker://").is_some_and(|r| !r.is_empty()) => Ok(Source::Registry { url: url.to_string() }),
                Some(url) => Err(bad(format!("spec.source.registry.url `{url}` is not a docker://REF URL"))),
                None => Err(bad("spec.source.registry.url is missing".into())),
            }
        }
        "pvc" => Err(unsupported(volume, "pvc", "cloning another claim is not supported by the local runtime; use an http(s) URL or a blank volume")),
        "snapshot" => Err(unsupported(volume, "snapshot", "volume snapshots are not supported by the local runtime")),
        "upload" => Err(unsupported(volume, "upload", "the local runtime has no upload proxy; serve the image over http(s) and use spec.source.http")),
        "s3" | "gcs" => Err(unsupported(volume, kind, "object-store sources need credentials and an object-store client the local runtime does not have; use an http(s) URL (a public or pre-signed object URL works)")),
        "imageio" | "vddk" => Err(unsupported(volume, kind, "importing from oVirt or VMware is not supported by the local runtime; export the disk and serve it over http(s)")),
        other => Err(unsupported(volume, other, "this source is unknown to the local runtime; it supports `blank` and `http`")),
    }
}

/// A quantity as Kubernetes writes it (`"10Gi"`), or a plain number of bytes.
fn parse_size(q: &Value) -> Result<u64, String> {
    let bytes = match q {
        Value::String(s) => parse_quantity(s)?.bytes,
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("`{n}` is not a whole number of bytes"))?.into(),
        other => return Err(format!("`{other}` is not a quantity")),
    };
    u64::try_from(bytes).map_err(|_| "the size is too large".to_string())
}

fn template(volume: Option<&str>, message: impl Into<String>) -> VolumeError {
    VolumeError::Template { volume: volume.map(str::to_string), message: message.into() }
}

fn unsupported(volume: &str, kind: &str, reason: &str) -> VolumeError {
    VolumeError::UnsupportedSource { volume: volume.into(), kind: kind.into(), reason: reason.into() }
}

/// A claim name: a DNS-1123 subdomain (so no `/`, no leading `.`), short enough for a
/// file name with our suffixes.
fn check_claim_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the name is empty".into());
    }
    if s.len() > MAX_CLAIM_LEN {
        return Err(format!("the name is {} characters long; local volumes allow at most {MAX_CLAIM_LEN}", s.len()));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')) {
        return Err(format!("`{c}` is not allowed; use lowercase letters, digits, `-` and `.`"));
    }
    for part in s.split('.') {
        if part.is_empty() {
            return Err("the name has an empty part between dots".into());
        }
        if part.starts_with('-') || part.ends_with('-') {
            return Err("each dot-separated part must start and end with a letter or digit".into());
        }
    }
    Ok(())
}

fn check_names(namespace: &str, claim: &str) -> Result<(), VolumeError> {
    check_dns_label(namespace).map_err(|reason| VolumeError::BadName { what: "namespace", name: namespace.into(), reason })?;
    check_claim_name(claim).map_err(|reason| VolumeError::BadName { what: "claim", name: claim.into(), reason })
}

/// What an import is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportPhase {
    /// Bytes of the (possibly compressed) image received from the server; the total is the
    /// response's Content-Length when it has one.
    Downloading,
    /// `qemu-img convert` from qcow2 to raw; in bytes of the image's virtual size.
    Converting,
}

/// Progress of an import, reported through the callback of [`provision`]: `Downloading`
/// from 0 up to 100% (with no total until the end when the server sends no length), then
/// `Converting` from 0 to 100% for a qcow2 image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: ImportPhase,
    pub done: u64,
    pub total: Option<u64>,
}

impl Progress {
    /// 0–100, when the total is known. KubeVirt's DataVolume `status.progress` is this
    /// as `format!("{:.2}%", p)`.
    pub fn percent(&self) -> Option<f64> {
        self.total.map(|t| if t == 0 { 100.0 } else { (self.done as f64 * 100.0 / t as f64).min(100.0) })
    }
}

impl std::fmt::Display for Progress {
    /// `importing: 42% (12.0 MiB of 28.6 MiB)`, `importing: 12.0 MiB`, `converting: 42%`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = match self.phase {
            ImportPhase::Downloading => "importing",
            ImportPhase::Converting => "converting",
        };
        match (self.percent(), self.total, self.phase) {
            (Some(p), Some(t), ImportPhase::Downloading) => write!(f, "{verb}: {}% ({} of {})", p.floor(), human(self.done), human(t)),
            (Some(p), _, _) => write!(f, "{verb}: {}%", p.floor()),
            (None, _, _) => write!(f, "{verb}: {}", human(self.done)),
        }
    }
}

/// A size for people: `512 B`, `12.0 MiB`, `2.0 GiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The format an imported image had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

/// The compression an imported image came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
}

impl Compression {
    fn detect(prefix: &[u8]) -> Option<Self> {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else {
            None
        }
    }

    fn tool(self) -> (&'static str, &'static str) {
        match self {
            Compression::Gzip => ("gzip", "gzip"),
            Compression::Xz => ("xz", "xz-utils"),
        }
    }
}

/// What [`provision`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioned {
    /// The volume's file was already there; it was not touched.
    Existing,
    /// A blank volume was created.
    Created,
    /// An image was downloaded and imported.
    Imported { format: ImageFormat, compression: Option<Compression>, downloaded: u64 },
}

/// Why a volume could not be provisioned or deleted. Each message names the volume and
/// says what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("data volume template{}: {message}", volume.as_ref().map(|v| format!(" `{v}`")).unwrap_or_default())]
    Template { volume: Option<String>, message: String },
    #[error("data volume `{volume}`: the local runtime cannot provide a `{kind}` source: {reason}")]
    UnsupportedSource { volume: String, kind: String, reason: String },
    #[error("`{name}` cannot name a local volume's {what}: {reason}")]
    BadName { what: &'static str, name: String, reason: String },
    #[error("data volume `{volume}`: downloading {url} failed: {message}")]
    Download { volume: String, url: String, message: String },
    #[error("data volume `{volume}`: {url} answered HTTP {status}{}{}", if reason.is_empty() { "" } else { " " }, reason)]
    HttpStatus { volume: String, url: String, status: u16, reason: String },
    #[error("data volume `{volume}`: the download of {url} stopped after {received} of {expected} bytes (the server closed the connection early); nothing was kept, the next start tries again")]
    Truncated { volume: String, url: String, received: u64, expected: u64 },
    #[error("data volume `{volume}`: no space left on the device holding {}{}; free some space and start the VM again", dir.display(), free.map(|f| format!(" ({} free)", human(f))).unwrap_or_default())]
    DiskFull { volume: String, dir: PathBuf, free: Option<u64> },
    #[error("data volume `{volume}`: `{tool}` is not installed (Debian package {package}); it is needed to {purpose}")]
    ToolMissing { volume: String, tool: &'static str, package: &'static str, purpose: &'static str },
    #[error("data volume `{volume}`: qemu-img {action} failed: {message}")]
    QemuImg { volume: String, action: &'static str, message: String },
    #[error("data volume `{volume}`: the image at {url} is {tool}-compressed, and decompressing it failed: {message}")]
    Decompress { volume: String, url: String, tool: &'static str, message: String },
    #[error("data volume `{volume}`: the image at {url} cannot be imported: {reason}")]
    UnsupportedImage { volume: String, url: String, reason: String },
    #[error("data volume `{volume}`: the image at {url} has a virtual size of {} ({image_size} bytes), larger than the {} requested; request at least that much storage", human(*image_size), human(*requested))]
    TooLarge { volume: String, url: String, image_size: u64, requested: u64 },
    #[error("data volume `{volume}`: the import was cancelled")]
    Cancelled { volume: String },
    #[error("data volume `{volume}`: cannot {action} {}: {source}", path.display())]
    Io { volume: String, action: &'static str, path: PathBuf, source: io::Error },
}

/// An I/O error, told apart when the disk is full.
fn io_error(volume: &str, action: &'static str, path: &Path, e: io::Error) -> VolumeError {
    if is_disk_full(&e) {
        disk_full(volume, path)
    } else {
        VolumeError::Io { volume: volume.into(), action, path: path.into(), source: e }
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

fn disk_full(volume: &str, path: &Path) -> VolumeError {
    let dir = if path.is_dir() { path } else { path.parent().unwrap_or(path) };
    VolumeError::DiskFull { volume: volume.into(), dir: dir.into(), free: free_space(dir) }
}

/// Make sure the volume of `template` exists in `volumes_dir/namespace`: nothing to do when
/// its file is there (`Existing`); else create it (blank) or download and import it.
///
/// `progress` is called during an import (see [`Progress`]); `cancel` is checked between
/// chunks of the download (a stalled server is given up after 60 s without a byte) and
/// while converting, and ends the import with [`VolumeError::Cancelled`]. Nothing is left
/// behind by a failed or cancelled import.
pub fn provision(
    volumes_dir: &Path,
    namespace: &str,
    template: &DataVolumeTemplate,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Provisioned, VolumeError> {
    let volume = template.name.as_str();
    check_names(namespace, volume)?;
    let dir = std::path::absolute(volumes_dir.join(namespace)).map_err(|e| io_error(volume, "find", volumes_dir, e))?;
    let target = claim_path(volumes_dir, namespace, volume);
    let target = dir.join(target.file_name().expect("claim_path ends in a file name"));
    if target.exists() {
        return Ok(Provisioned::Existing);
    }
    fs::create_dir_all(&dir).map_err(|e| io_error(volume, "create the directory", &dir, e))?;
    let _lock = ClaimLock::acquire(&dir, volume, Some(cancel))?;
    if target.exists() {
        // Another thread or process provisioned it while this one waited.
        return Ok(Provisioned::Existing);
    }
    let temps = Temps::new(&dir, volume);
    temps.remove();
    let result = match &template.source {
        Source::Blank => create_blank(volume, &temps, &target, template.size.expect("parse requires a size for blank")),
        Source::Http { url, extra_headers } => {
            import(volume, &dir, &temps, &target, template.size, url, extra_headers, progress, cancel)
        }
        Source::Registry { url } => import_registry(volume, volumes_dir, &temps, &target, template.size, url, progress, cancel),
    };
    temps.remove();
    result
}

/// Delete claim `claim`'s volume (and what a failed import left). A missing file is fine.
/// Waits for a provisioning of the same claim that is under way: cancel it first.
pub fn delete(volumes_dir: &Path, namespace: &str, claim: &str) -> Result<(), VolumeError> {
    check_names(namespace, claim)?;
    let dir = volumes_dir.join(namespace);
    if !dir.is_dir() {
        return Ok(());
    }
    let _lock = ClaimLock::acquire(&dir, claim, None)?;
    Temps::new(&dir, claim).remove();
    let path = claim_path(volumes_dir, namespace, claim);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(&dir).map_err(|e| io_error(claim, "sync", &dir, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(claim, "delete", &path, e)),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The temporary files of one claim's provisioning, all hidden in the claim's directory.
struct Temps {
    /// Blank volume being created; downloaded (decompressed) image.
    download: PathBuf,
    /// Output of `qemu-img convert`.
    convert: PathBuf,
}

impl Temps {
    fn new(dir: &Path, claim: &str) -> Self {
        Temps { download: dir.join(format!(".{claim}.img.download")), convert: dir.join(format!(".{claim}.img.convert")) }
    }

    fn remove(&self) {
        for p in [&self.download, &self.convert] {
            let _ = fs::remove_file(p);
        }
    }
}

/// An exclusive `flock` on `.<claim>.lock`, removed when released. After locking, the
/// file must still be the one at the path (a holder that released it may have removed it),
/// else the lock is taken again.
struct ClaimLock {
    path: PathBuf,
    _file: File,
}

impl ClaimLock {
    fn acquire(dir: &Path, claim: &str, cancel: Option<&AtomicBool>) -> Result<Self, VolumeError> {
        let path = dir.join(format!(".{claim}.lock"));
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io_error(claim, "create the lock file", &path, e))?;
            loop {
                // SAFETY: flock on a descriptor this function owns.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    break;
                }
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EWOULDBLOCK) && e.kind() != io::ErrorKind::Interrupted {
                    return Err(io_error(claim, "lock", &path, e));
                }
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(VolumeError::Cancelled { volume: claim.into() });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let held = file.metadata().map_err(|e| io_error(claim, "lock", &path, e))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(ClaimLock { path, _file: file }),
                _ => continue,
            }
        }
    }
}

impl Drop for ClaimLock {
    fn drop(&mut self) {
        // Removed while still held; the lock itself goes with the descriptor.
        let _ = fs::remove_file(&self.path);
    }
}

fn create_blank(volume: &str, temps: &Temps, target: &Path, size: u64) -> Result<Provisioned, VolumeError> {
    let tmp = &temps.download;
    let file = File::create(tmp).map_err(|e| io_error(volume, "create", tmp, e))?;
    file.set_len(size).map_err(|e| io_error(volume, "size", tmp, e))?;
    file.sync_all().map_err(|e| io_error(volume, "sync", tmp, e))?;
    commit(volume, tmp, target)?;
    Ok(Provisioned::Created)
}

/// Rename a complete volume into place, durably, readable by its owner only (a guest's
/// disk may hold anything).
fn commit(volume: &str, tmp: &Path, target: &Path) -> Result<(), VolumeError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o600)).map_err(|e| io_error(volume, "set the mode of", tmp, e))?;
    fs::rename(tmp, target).map_err(|e| io_error(volume, "rename into place", target, e))?;
    let dir = target.parent().expect("a claim file has a directory");
    sync_dir(dir).map_err(|e| io_error(volume, "sync", dir, e))
}

#[allow(clippy::too_many_arguments)]
fn import(
    volume: &str,
    dir: &Path,
    temps: &Temps,
    target: &Path,
    size: Option<u64>,
    url: &str,
    headers: &[(String, String)],
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Provisioned, VolumeError> {
    let dl = Download { volume, url, dir, cancel };
    let (downloaded, compression) = dl.fetch(headers, &temps.download, progress)?;
    dl.check_cancel()?;

    let info = qemu_img_info(volume, &temps.download)?;
    let unsupported = |reason: String| VolumeError::UnsupportedImage { volume: volume.into(), url: url.into(), reason };
    let format = match info.format.as_str() {
        "raw" => ImageFormat::Raw,
        "qcow2" => ImageFormat::Qcow2,
        other => return Err(unsupported(format!("it is a {other} image; the local runtime imports raw and qcow2 images (convert it with `qemu-img convert -O qcow2`)"))),
    };
    if let Some(backing) = &info.backing {
        return Err(unsupported(format!("it has a backing file ({backing}); flatten it with `qemu-img convert` first")));
    }
    if let Some(data_file) = &info.data_file {
        return Err(unsupported(format!("it keeps its data in an external file ({data_file})")));
    }
    if info.encrypted {
        return Err(unsupported("it is encrypted".into()));
    }
    if let Some(requested) = size
        && info.virtual_size > requested
    {
        return Err(VolumeError::TooLarge { volume: volume.into(), url: url.into(), image_size: info.virtual_size, requested });
    }

    let done = match format {
        ImageFormat::Raw => &temps.download,
        ImageFormat::Qcow2 => {
            convert(volume, &temps.download, &temps.convert, info.virtual_size, progress, cancel)?;
            let _ = fs::remove_file(&temps.download);
            &temps.convert
        }
    };
    grow_and_commit(volume, done, target, size.unwrap_or(info.virtual_size).max(info.virtual_size))?;
    Ok(Provisioned::Imported { format, compression, downloaded })
}

/// A raw image made to `size` (it grows by extending it: the new end reads as zeros and
/// takes no space), synced, and renamed into place.
fn grow_and_commit(volume: &str, done: &Path, target: &Path, size: u64) -> Result<(), VolumeError> {
    let file = OpenOptions::new().write(true).open(done).map_err(|e| io_error(volume, "open", done, e))?;
    let len = file.metadata().map_err(|e| io_error(volume, "inspect", done, e))?.len();
    if len < size {
        file.set_len(size).map_err(|e| io_error(volume, "grow", done, e))?;
    }
    file.sync_all().map_err(|e| io_error(volume, "sync", done, e))?;
    drop(file);
    commit(volume, done, target)
}

/// CDI's registry import: the image's disk from the node's image cache (pulled, verified,
/// kept by digest), copied (raw, sparse) or converted (qcow2) into the volume's file.
#[allow(clippy::too_many_arguments)]
fn import_registry(
    volume: &str,
    volumes_dir: &Path,
    temps: &Temps,
    target: &Path,
    size: Option<u64>,
    url: &str,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Provisioned, VolumeError> {
    let reference = url.strip_prefix("docker://").unwrap_or(url);
    let request = crate::images::PullRequest::new(reference, crate::images::cache_dir_of(volumes_dir));
    let pulled = crate::images::pull_blocking(&request).map_err(|e| VolumeError::Download { volume: volume.into(), url: url.into(), message: e.to_string() })?;
    progress(Progress { phase: ImportPhase::Downloading, done: pulled.downloaded, total: Some(pulled.downloaded) });
    if cancel.load(Ordering::Relaxed) {
        return Err(VolumeError::Cancelled { volume: volume.into() });
    }
    if let Some(requested) = size
        && pulled.size > requested
    {
        return Err(VolumeError::TooLarge { volume: volume.into(), url: url.into(), image_size: pulled.size, requested });
    }
    let (done, format) = match pulled.format {
        crate::images::DiskFormat::Raw => {
            // The cache keeps its copy: this one is the volume's own.
            let copied = (|| {
                let mut from = File::open(&pulled.disk)?;
                let mut to = SparseWriter::new(File::create(&temps.download)?);
                io::copy(&mut from, &mut to)?;
                to.finish()
            })();
            copied.map_err(|e| io_error(volume, "copy the image's disk to", &temps.download, e))?;
            (&temps.download, ImageFormat::Raw)
        }
        crate::images::DiskFormat::Qcow2 => {
            convert(volume, &pulled.disk, &temps.convert, pulled.size, progress, cancel)?;
            (&temps.convert, ImageFormat::Qcow2)
        }
    };
    grow_and_commit(volume, done, target, size.unwrap_or(pulled.size).max(pulled.size))?;
    Ok(Provisioned::Imported { format, compression: None, downloaded: pulled.downloaded })
}

/// One import's download.
struct Download<'a> {
    volume: &'a str,
    url: &'a str,
    dir: &'a Path,
    cancel: &'a AtomicBool,
}

/// Why copying the response body stopped.
enum PumpError {
    Cancelled,
    Read(io::Error),
    Write(io::Error),
}

impl Download<'_> {
    fn check_cancel(&self) -> Result<(), VolumeError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(VolumeError::Cancelled { volume: self.volume.into() })
        } else {
            Ok(())
        }
    }

    fn error(&self, message: impl std::fmt::Display) -> VolumeError {
        VolumeError::Download { volume: self.volume.into(), url: self.url.into(), message: message.to_string() }
    }

    /// Download the image into `dest`, decompressed, sparse. Returns the bytes received
    /// and the compression found.
    fn fetch(
        &self,
        headers: &[(String, String)],
        dest: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(u64, Option<Compression>), VolumeError> {
        self.check_cancel()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(READ_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .max_redirects(10)
            .user_agent(format!("vmform/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let mut request = agent.get(self.url);
        for (k, v) in headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let mut response = request.call().map_err(|e| match e {
            // Without ureq's `io: ` prefix: "Connection refused (os error 111)".
            ureq::Error::Io(e) => self.error(e),
            e => self.error(e),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(VolumeError::HttpStatus {
                volume: self.volume.into(),
                url: self.url.into(),
                status: status.as_u16(),
                reason: status.canonical_reason().unwrap_or("").into(),
            });
        }
        let total = response.body().content_length();
        if let (Some(total), Some(free)) = (total, free_space(self.dir))
            && total > free
        {
            return Err(VolumeError::DiskFull { volume: self.volume.into(), dir: self.dir.into(), free: Some(free) });
        }
        let mut body = response.body_mut().as_reader();
        let mut counter = Counter { done: 0, total, last_percent: None, last_report: Instant::now(), progress };
        counter.report(true);

        // The first bytes tell a compressed image.
        let mut first = vec![0u8; 6];
        let mut have = 0;
        while have < first.len() {
            match self.read(&mut body, &mut first[have..], &mut counter) {
                Ok(0) => break,
                Ok(n) => have += n,
                Err(e) => return Err(self.pump_error(e, &counter, dest)),
            }
        }
        first.truncate(have);
        let compression = Compression::detect(&first);
        match compression {
            None => {
                let file = File::create(dest).map_err(|e| io_error(self.volume, "create", dest, e))?;
                let mut out = SparseWriter::new(file);
                out.write_all(&first).map_err(|e| self.pump_error(PumpError::Write(e), &counter, dest))?;
                self.pump(&mut body, &mut out, &mut counter).map_err(|e| self.pump_error(e, &counter, dest))?;
                out.finish().map_err(|e| io_error(self.volume, "write", dest, e))?;
            }
            Some(c) => self.decompress(c, &first, &mut body, dest, &mut counter)?,
        }
        if let Some(total) = total
            && counter.done < total
        {
            return Err(VolumeError::Truncated { volume: self.volume.into(), url: self.url.into(), received: counter.done, expected: total });
        }
        counter.finish();
        Ok((counter.done, compression))
    }

    fn read(&self, body: &mut dyn Read, buf: &mut [u8], counter: &mut Counter) -> Result<usize, PumpError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(PumpError::Cancelled);
        }
        loop {
            match body.read(buf) {
                Ok(n) => {
                    counter.add(n as u64);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PumpError::Read(e)),
            }
        }
    }

    /// Copy the rest of the body into `out`.
    fn pump(&self, body: &mut dyn Read, out: &mut dyn Write, counter: &mut Counter) -> Result<(), PumpError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = self.read(body, &mut buf, counter)?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n]).map_err(PumpError::Write)?;
        }
    }

    fn pump_error(&self, e: PumpError, counter: &Counter, dest: &Path) -> VolumeError {
        match e {
            PumpError::Cancelled => VolumeError::Cancelled { volume: self.volume.into() },
            PumpError::Read(e) => match counter.total {
                Some(total) if counter.done < total && e.kind() == io::ErrorKind::UnexpectedEof => VolumeError::Truncated {
                    volume: self.volume.into(),
                    url: self.url.into(),
                    received: counter.done,
                    expected: total,
                },
                _ => self.error(e),
            },
            PumpError::Write(e) => io_error(self.volume, "write", dest, e),
        }
    }

    /// Stream the body through `gzip -dc` or `xz -dc` into `dest`.
    fn decompress(
        &self,
        c: Compression,
        first: &[u8],
        body: &mut dyn Read,
        dest: &Path,
        counter: &mut Counter,
    ) -> Result<(), VolumeError> {
        let (tool, package) = c.tool();
        let out = File::create(dest).map_err(|e| io_error(self.volume, "create", dest, e))?;
        let mut child = Command::new(tool)
            .arg("-dc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => VolumeError::ToolMissing {
                    volume: self.volume.into(),
                    tool,
                    package,
                    purpose: "import a compressed image",
                },
                _ => self.decompress_error(tool, format!("cannot run {tool}: {e}")),
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        std::thread::scope(|s| {
            // The decompressed stream is written by a thread of its own, so the pipes never
            // block each other; when it fails it closes the pipe, which stops the tool.
            let writer = s.spawn(move || -> io::Result<()> {
                let mut w = SparseWriter::new(out);
                io::copy(&mut stdout, &mut w)?;
                w.finish().map(drop)
            });
            let messages = s.spawn(move || read_all(stderr));
            let pumped = stdin.write_all(first).map_err(PumpError::Write).and_then(|()| self.pump(body, &mut stdin, counter));
            drop(stdin);
            if matches!(pumped, Err(PumpError::Cancelled | PumpError::Read(_))) {
                let _ = child.kill();
            }
            let status = child.wait();
            let written = writer.join().expect("the writer thread does not panic");
            let messages = messages.join().expect("the stderr thread does not panic");
            match pumped {
                Err(e @ (PumpError::Cancelled | PumpError::Read(_))) => return Err(self.pump_error(e, counter, dest)),
                _ if written.as_ref().is_err_and(is_disk_full) => return Err(disk_full(self.volume, dest)),
                _ => {}
            }
            let status = status.map_err(|e| self.decompress_error(tool, e))?;
            if !status.success() {
                let message = if messages.trim().is_empty() { format!("{tool} exited with {status}") } else { messages.trim().to_string() };
                return Err(self.decompress_error(tool, message));
            }
            written.map_err(|e| io_error(self.volume, "write", dest, e))?;
            if let Err(PumpError::Write(e)) = pumped {
                return Err(self.decompress_error(tool, format!("{tool} stopped reading: {e}")));
            }
            Ok(())
        })
    }

    fn decompress_error(&self, tool: &'static str, message: impl std::fmt::Display) -> VolumeError {
        VolumeError::Decompress { volume: self.volume.into(), url: self.url.into(), tool, message: message.to_string() }
    }
}

fn read_all(mut r: impl Read) -> String {
    let mut bytes = Vec::new();
    let _ = r.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Counts downloaded bytes and reports them: at each new whole percent, or every
/// [`PROGRESS_INTERVAL`] when the total is unknown.
struct Counter<'p> {
    done: u64,
    total: Option<u64>,
    last_percent: Option<u64>,
    last_report: Instant,
    progress: &'p mut dyn FnMut(Progress),
}

impl Counter<'_> {
    fn add(&mut self, n: u64) {
        self.done += n;
        self.report(false);
    }

    fn report(&mut self, force: bool) {
        let p = Progress { phase: ImportPhase::Downloading, done: self.done, total: self.total };
        let due = match p.percent() {
            Some(pct) => self.last_percent != Some(pct as u64),
            None => self.last_report.elapsed() >= PROGRESS_INTERVAL,
        };
        if force || due {
            self.last_percent = p.percent().map(|p| p as u64);
            self.last_report = Instant::now();
            (self.progress)(p);
        }
    }

    /// The last report: 100%, with the total now known.
    fn finish(&mut self) {
        if self.total.is_none() || self.last_percent != Some(100) {
            self.total = Some(self.done);
            self.last_percent = None;
            self.report(true);
        }
    }
}

/// What `qemu-img info` says of a downloaded image.
#[derive(Debug)]
struct ImageInfo {
    format: String,
    virtual_size: u64,
    backing: Option<String>,
    data_file: Option<String>,
    encrypted: bool,
}

fn qemu_img(action: &'static str) -> Command {
    let mut cmd = Command::new("qemu-img");
    cmd.arg(action);
    cmd
}

fn qemu_img_spawn_error(volume: &str, action: &'static str, e: io::Error) -> VolumeError {
    match e.kind() {
        io::ErrorKind::NotFound => VolumeError::ToolMissing {
            volume: volume.into(),
            tool: "qemu-img",
            package: "qemu-utils",
            purpose: "import disk images",
        },
        _ => VolumeError::QemuImg { volume: volume.into(), action, message: format!("cannot run qemu-img: {e}") },
    }
}

fn qemu_img_info(volume: &str, path: &Path) -> Result<ImageInfo, VolumeError> {
    let out = qemu_img("info")
        .arg("--output=json")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| qemu_img_spawn_error(volume, "info", e))?;
    let failed = |message: String| VolumeError::QemuImg { volume: volume.into(), action: "info", message };
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| failed(format!("unreadable output: {e}")))?;
    let string = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    Ok(ImageInfo {
        format: string("/format").ok_or_else(|| failed("no format in its output".into()))?,
        virtual_size: v.get("virtual-size").and_then(Value::as_u64).ok_or_else(|| failed("no virtual-size in its output".into()))?,
        backing: string("/backing-filename").or_else(|| string("/full-backing-filename")),
        data_file: string("/format-specific/data/data-file"),
        encrypted: v.get("encrypted").and_then(Value::as_bool).unwrap_or(false)
            || v.pointer("/format-specific/data/encrypt").is_some(),
    })
}

/// `qemu-img convert` a qcow2 image to raw (sparse), reporting its progress.
fn convert(
    volume: &str,
    src: &Path,
    dst: &Path,
    virtual_size: u64,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<(), VolumeError> {
    let report = |progress: &mut dyn FnMut(Progress), pct: f64| {
        let done = ((virtual_size as f64) * pct / 100.0).round() as u64;
        progress(Progress { phase: ImportPhase::Converting, done: done.min(virtual_size), total: Some(virtual_size) });
    };
    report(progress, 0.0);
    let mut child: Child = qemu_img("convert")
        .args(["-p", "-f", "qcow2", "-O", "raw"])
        .arg(src)
        .arg(dst)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| qemu_img_spawn_error(volume, "convert", e))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel::<f64>();
    // qemu-img -p writes `    (42.00/100%)\r` lines.
    let reader = std::thread::spawn(move || {
        let mut line = Vec::new();
        for b in io::BufReader::new(stdout).bytes() {
            let Ok(b) = b else { break };
            if b == b'\r' || b == b'\n' {
                let text = String::from_utf8_lossy(&line);
                if let Some(pct) = text.trim().strip_prefix('(').and_then(|t| t.split('/').next()).and_then(|p| p.parse().ok()) {
                    let _ = tx.send(pct);
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    });
    let messages = std::thread::spawn(move || read_all(stderr));
    let mut last = -1.0;
    let mut cancelled = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(pct) => {
                if pct > last && pct < 100.0 {
                    last = pct;
                    report(progress, pct);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !cancelled && cancel.load(Ordering::Relaxed) {
            cancelled = true;
            let _ = child.kill();
        }
    }
    let status = child.wait();
    let _ = reader.join();
    let messages = messages.join().unwrap_or_default();
    if cancelled {
        return Err(VolumeError::Cancelled { volume: volume.into() });
    }
    let status = status.map_err(|e| VolumeError::QemuImg { volume: volume.into(), action: "convert", message: e.to_string() })?;
    if !status.success() {
        if messages.contains("No space left on device") {
            return Err(disk_full(volume, dst));
        }
        let message = if messages.trim().is_empty() { format!("qemu-img exited with {status}") } else { messages.trim().to_string() };
        return Err(VolumeError::QemuImg { volume: volume.into(), action: "convert", message });
    }
    report(progress, 100.0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<DataVolumeTemplate, VolumeError> {
        DataVolumeTemplate::parse(&v)
    }

    #[test]
    fn blank_with_storage_size() {
        let t = parse(json!({
            "metadata": {"name": "web-0-data"},
            "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "10Gi"}}, "accessModes": ["ReadWriteOnce"]}}
        }))
        .unwrap();
        assert_eq!(t, DataVolumeTemplate { name: "web-0-data".into(), size: Some(10 << 30), access_modes: vec!["ReadWriteOnce".into()], source: Source::Blank });
    }

    #[test]
    fn http_with_pvc_size_and_headers() {
        let t = parse(json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": "os"},
            "spec": {
                "source": {"http": {"url": "https://example.invalid/disk.qcow2", "extraHeaders": ["X-Token: abc:def"]}},
                "pvc": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": 1073741824}}}
            }
        }))
        .unwrap();
        assert_eq!(t.size, Some(1 << 30));
        assert_eq!(t.access_modes, ["ReadWriteMany"]);
        assert_eq!(
            t.source,
            Source::Http { url: "https://example.invalid/disk.qcow2".into(), extra_headers: vec![("X-Token".into(), "abc:def".into())] }
        );
    }

    #[test]
    fn http_without_size_takes_the_image_size() {
        let t = parse(json!({"metadata": {"name": "os"}, "spec": {"source": {"http": {"url": "http://h/x.img"}}, "storage": {}}})).unwrap();
        assert_eq!(t.size, None);
    }

    #[test]
    fn template_errors_name_the_volume_and_the_field() {
        let err = |v: Value| parse(v).unwrap_err().to_string();
        assert_eq!(err(json!({"spec": {}})), "data volume template: metadata.name is missing");
        assert!(err(json!({"metadata": {"name": "Bad_Name"}, "spec": {}})).contains("`Bad_Name`: metadata.name: `B` is not allowed"));
        assert_eq!(
            err(json!({"metadata": {"name": "d"}, "spec": {"source": {"blank": {}}}})),
            "data volume template `d`: a blank data volume needs a size: spec.storage.resources.requests.storage"
        );
        assert_eq!(
            err(json!({"metadata": {"name": "d"}, "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1.5Gi"}}}}})),
            "data volume template `d`: spec.storage.resources.requests.storage: `.5Gi` is not a size unit"
        );
        assert!(err(json!({"metadata": {"name": "d"}, "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "0"}}}}})).contains("0 bytes"));
        assert!(err(json!({"metadata": {"name": "d"}, "spec": {"storage": {}}})).contains("spec.source is missing"));
        assert!(err(json!({"metadata": {"name": "d"}, "spec": {"source": {}}})).contains("spec.source is empty"));
        assert!(err(json!({"metadata": {"name": "d"}, "spec": {"source": {"blank": {}, "http": {"url": "http://h/"}}}})).contains("more than one source"));
        assert!(err(json!({"metadata": {"name": "d"}, "spec": {"source": {"http": {"url": "file:///etc/passwd"}}}})).contains("is not an http:// or https:// URL"));
        assert!(err(json!({"metadata": {"name": "d"}, "spec": {"source": {"http": {}}}})).contains("spec.source.http.url is missing"));
        assert!(err(json!({"metadata": {"name": "d"}, "spec": {"source": {"http": {"url": "http://h/", "extraHeaders": ["nocolon"]}}}})).contains("is not a `Name: value` string"));
        assert!(err(json!({"metadata": {"name": &"a".repeat(241)}, "spec": {}})).contains("at most 240"));
        assert!(err(json!({"metadata": {"name": "a..b"}, "spec": {}})).contains("empty part"));
        assert!(err(json!({"metadata": {"name": ".."}, "spec": {}})).contains("empty part"));
        assert!(err(json!({"metadata": {"name": "a/b"}, "spec": {}})).contains("`/` is not allowed"));
    }

    #[test]
    fn unsupported_sources_are_refused_with_the_reason() {
        let err = |source: Value| {
            parse(json!({"metadata": {"name": "vol"}, "spec": {"source": source, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}))
                .unwrap_err()
        };
        for (source, kind, words) in [
            (json!({"registry": {"url": "docker://quay.io/x", "secretRef": "creds"}}), "registry.secretRef", "credentials from a Secret"),
            (json!({"registry": {"url": "docker://quay.io/x", "certConfigMap": "ca"}}), "registry.certConfigMap", "CA certificates"),
            (json!({"pvc": {"name": "other", "namespace": "ns"}}), "pvc", "cloning another claim"),
            (json!({"s3": {"url": "s3://bucket/disk.img"}}), "s3", "object-store"),
            (json!({"gcs": {"url": "gs://bucket/disk.img"}}), "gcs", "object-store"),
            (json!({"imageio": {"url": "https://ovirt/api"}}), "imageio", "oVirt or VMware"),
            (json!({"vddk": {"url": "https://vcenter"}}), "vddk", "oVirt or VMware"),
            (json!({"upload": {}}), "upload", "upload proxy"),
            (json!({"snapshot": {"name": "s"}}), "snapshot", "snapshots"),
            (json!({"ftp": {}}), "ftp", "unknown"),
            (json!({"http": {"url": "https://h/x", "secretRef": "creds"}}), "http.secretRef", "credentials from a Secret"),
            (json!({"http": {"url": "https://h/x", "certConfigMap": "ca"}}), "http.certConfigMap", "CA certificate"),
        ] {
            let e = err(source);
            let VolumeError::UnsupportedSource { volume, kind: k, .. } = &e else { panic!("{e:?}") };
            assert_eq!((volume.as_str(), k.as_str()), ("vol", kind));
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("data volume `vol`: the local runtime cannot provide a `{kind}` source: ")), "{msg}");
            assert!(msg.contains(words), "{msg}");
        }
        // A registry import parses; a URL that is not docker:// is a mistake of the template.
        let ok = parse(json!({"metadata": {"name": "vol"}, "spec": {"source": {"registry": {"url": "docker://quay.io/containerdisks/fedora:41"}}, "storage": {}}})).unwrap();
        assert_eq!(ok.source, Source::Registry { url: "docker://quay.io/containerdisks/fedora:41".into() });
        let bad = parse(json!({"metadata": {"name": "vol"}, "spec": {"source": {"registry": {"url": "quay.io/x"}}, "storage": {}}})).unwrap_err();
        assert!(bad.to_string().contains("is not a docker://REF URL"), "{bad}");
        let e = parse(json!({"metadata": {"name": "vol"}, "spec": {"sourceRef": {"kind": "DataSource", "name": "fedora"}, "storage": {}}})).unwrap_err();
        assert!(e.to_string().contains("`sourceRef` source: a DataSource"), "{e}");
        let e = parse(json!({"metadata": {"name": "vol"}, "spec": {"contentType": "archive", "source": {"blank": {}}}})).unwrap_err();
        assert!(e.to_string().contains("an archive is unpacked"), "{e}");
    }

    #[test]
    fn parse_all_reads_a_vm() {
        let vm = json!({"spec": {"dataVolumeTemplates": [
            {"metadata": {"name": "a"}, "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Mi"}}}}},
            {"metadata": {"name": "b"}, "spec": {"source": {"http": {"url": "http://h/b.img"}}, "storage": {}}}
        ]}});
        let ts = DataVolumeTemplate::parse_all(&vm).unwrap();
        assert_eq!(ts.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(DataVolumeTemplate::parse_all(&json!({"spec": {}})).unwrap().is_empty());
        assert!(DataVolumeTemplate::parse_all(&json!({"spec": {"dataVolumeTemplates": {}}})).is_err());
    }

    #[test]
    fn progress_display_and_percent() {
        let p = Progress { phase: ImportPhase::Downloading, done: 42, total: Some(100) };
        assert_eq!(p.percent(), Some(42.0));
        assert_eq!(p.to_string(), "importing: 42% (42 B of 100 B)");
        assert_eq!(format!("{:.2}%", p.percent().unwrap()), "42.00%");
        let p = Progress { phase: ImportPhase::Downloading, done: 3 << 20, total: None };
        assert_eq!(p.percent(), None);
        assert_eq!(p.to_string(), "importing: 3.0 MiB");
        let p = Progress { phase: ImportPhase::Converting, done: 999, total: Some(1000) };
        assert_eq!(p.to_string(), "converting: 99%");
        assert_eq!(Progress { phase: ImportPhase::Converting, done: 0, total: Some(0) }.percent(), Some(100.0));
    }

    #[test]
    fn claim_paths() {
        assert_eq!(claim_path(Path::new("/d/volumes"), "default", "web-0-data"), Path::new("/d/volumes/default/web-0-data.img"));
        assert!(check_names("default", "a.b-c").is_ok());
        assert!(check_names("../x", "a").is_err());
        assert!(check_names("default", "../a").is_err());
    }

    #[test]
    fn compression_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Some(Compression::Gzip));
        assert_eq!(Compression::detect(b"\xfd7zXZ\x00"), Some(Compression::Xz));
        assert_eq!(Compression::detect(b"QFI\xfb"), None);
        assert_eq!(Compression::detect(b""), None);
    }
}
