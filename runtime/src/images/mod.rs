//! Container disk images of the bundled runtime: KubeVirt's `containerDisk` (and, later,
//! CDI's `registry` source) pulled from an OCI registry into a cache shared by all nodes of
//! a local cluster, `<data>/images/` (specs/runtime-contract.md).
//!
//! [`pull`] parses the reference as Docker does ([`ImageRef`]), applies KubeVirt's
//! `imagePullPolicy` ([`PullPolicy`]), talks to the registry through `oci-client` (bearer
//! tokens, basic auth, rustls; plain HTTP only for loopback registries and those the caller
//! calls insecure, after HTTPS failed, as Docker does), resolves an image index or Docker
//! manifest list to linux/amd64, downloads the layers and extracts the one disk file.
//!
//! Cache layout (`cache_dir`, the data dir's `images/`):
//!
//! ```text
//! blobs/sha256/<hex>               verified blobs: manifests and layers, kept once by digest
//! disks/sha256/<hex>/disk.img      the disk of the image whose (platform) manifest is sha256:<hex>, read-only
//! disks/sha256/<hex>/image.json    what it is: digests, format, virtual size, the blobs it came from
//! disks/sha256/<hex>/last-used     empty; its mtime is the last pull that used the image (LRU)
//! refs/<sha256 of the reference>.json   what a reference (`host/repo:tag`) resolved to last
//! tmp/                             downloads and extractions under way, never read as results
//! locks/                           flock files: cache.lock, blob-<hex>.lock, disk-<hex>.lock
//! ```
//!
//! Verification: every blob is hashed (sha256) while it streams into a temporary file in
//! `tmp/`, and renamed into `blobs/` only when its digest (and size) match the manifest;
//! a mismatch deletes the temporary file and is an error. Manifests are hashed too and must
//! match the digest they were asked by (an index entry, or a digest reference). The disk is
//! extracted into a temporary directory renamed into `disks/` whole. So a pull killed at any
//! point (SIGKILL included) leaves only files under `tmp/`, which nothing trusts; the next
//! pull of the same blob or disk removes them while it holds that digest's lock, and
//! [`prune`] removes them all.
//!
//! Deduplication: each blob and each disk is made under an exclusive `flock` on its own
//! lock file, taken by threads, tasks and processes alike (flock locks belong to open
//! files, so two opens in one process exclude each other too). Whoever gets the lock second
//! finds the finished blob or disk and reuses it. Every pull holds `locks/cache.lock`
//! shared; [`prune`] and [`evict_to`] take it exclusive, so they never delete what a pull
//! under way is about to use.
//!
//! Extraction (KubeVirt's containerDisk): the layers are read in order, each once, as a
//! stream (gzip, zstd or plain tar, told by their magic bytes, not their media type), and
//! the final file tree is computed from the tar headers with the OCI whiteout rules: a
//! `.wh.NAME` entry removes NAME (and all under it) of the layers below, `.wh..wh..opq`
//! empties its directory of the layers below, a file replaces a directory. Only the files
//! that could be the disk (`containerDisk.path`, or a regular file directly under `/disk/`)
//! are written out while reading, each to a temporary file deleted as soon as a later
//! layer removes it, so a whited-out decoy never becomes the disk. Paths are cleaned (`..`
//! cannot climb above the root), no file is created from a path in a layer, and the disk's
//! size and the layers' total unpacked size are capped. The disk is raw or qcow2 (told by
//! the qcow2 magic `QFI\xfb`); a qcow2 with a backing file, an external data file or
//! encryption is refused, since it would read other host files or could not boot.
//!
//! [`pull`] is async (run it on the tokio runtime; extraction runs on a blocking thread);
//! [`pull_blocking`] wraps it for blocking callers. [`list`], [`prune`] and [`evict_to`]
//! are blocking.

mod auth;
mod cache;
mod extract;
mod pull;
mod reference;

use std::path::PathBuf;
use std::sync::Arc;

pub use auth::Auth;
pub use cache::{CachedImage, Evicted, evict_to, list, prune};
pub use pull::pull;
pub use reference::{ImageRef, PullPolicy};

/// Largest disk extracted unless the caller says otherwise.
pub const DEFAULT_MAX_DISK_SIZE: u64 = 64 << 30;

/// What a pull is doing, reported through [`PullRequest::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPhase {
    /// Layers from the registry: `total` is the sum of the layers' sizes, and layers
    /// already in the cache count as done.
    Downloading,
    /// Reading the layers for the disk: in bytes of the (compressed) layers read.
    Extracting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: PullPhase,
    pub done: u64,
    pub total: u64,
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// One pull. [`PullRequest::new`] fills in the defaults.
#[derive(Clone)]
pub struct PullRequest {
    /// `host[:port]/repo[:tag|@digest]`, or a Docker Hub short name.
    pub reference: String,
    /// `None`: KubeVirt's default for the reference ([`PullPolicy::default_for`]).
    pub policy: Option<PullPolicy>,
    pub auth: Auth,
    /// The docker config file to read credentials from, in place of `$REGISTRY_AUTH_FILE`
    /// and `~/.docker/config.json` (for [`Auth::Default`] and a secret's fallback).
    pub auth_file: Option<PathBuf>,
    /// Registries (`host:port`, or `host` for any port) reached over plain HTTP when HTTPS
    /// fails, and whose TLS certificates are not verified: Docker's `--insecure-registry`.
    /// Loopback registries get plain HTTP without being listed (but keep TLS verification).
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM) trusted for the registry's TLS.
    pub ca_certs: Vec<Vec<u8>>,
    /// The image cache: the data dir's `images/`.
    pub cache_dir: PathBuf,
    /// KubeVirt's `containerDisk.path`; `None`: the one file under `/disk/`.
    pub disk_path: Option<String>,
    /// The largest disk accepted (the layers may unpack to at most twice that).
    pub max_disk_size: u64,
    pub progress: Option<ProgressFn>,
}

impl PullRequest {
    pub fn new(reference: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        PullRequest {
            reference: reference.into(),
            policy: None,
            auth: Auth::Default,
            auth_file: None,
            insecure: Vec::new(),
            ca_certs: Vec::new(),
            cache_dir: cache_dir.into(),
            disk_path: None,
            max_disk_size: DEFAULT_MAX_DISK_SIZE,
            progress: None,
        }
    }
}

impl std::fmt::Debug for PullRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullRequest")
            .field("reference", &self.reference)
            .field("policy", &self.policy)
            .field("auth", &self.auth)
            .field("auth_file", &self.auth_file)
            .field("insecure", &self.insecure)
            .field("cache_dir", &self.cache_dir)
            .field("disk_path", &self.disk_path)
            .finish_non_exhaustive()
    }
}

/// A disk image's format, as KubeVirt's containerDisk accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    /// libvirt's and qemu-img's name: `raw`, `qcow2`.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// The result of [`pull`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The reference, normalised (`docker.io/library/fedora:41`).
    pub reference: String,
    /// The digest of the image's (linux/amd64) manifest: the cache's key for it.
    pub manifest_digest: String,
    /// `<cache>/disks/sha256/<hex>/disk.img`, read-only: use it as a backing file.
    pub disk: PathBuf,
    pub format: DiskFormat,
    /// The disk's virtual size in bytes (a raw file's length, a qcow2's header size).
    pub size: u64,
    /// Bytes downloaded from the registry by this pull (0 when all came from the cache).
    pub downloaded: u64,
    /// Whether the registry was not asked at all (IfNotPresent or Never with a cached image).
    pub from_cache: bool,
}

/// Why an image could not be pulled or its disk used. Each message names the image and
/// what the registry answered, and says what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("`{reference}` is not an image reference: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("image {image} was not found: registry {registry} answered {answer}")]
    NotFound { image: String, registry: String, answer: String },
    #[error("registry {registry} refused access to {image} with {credentials}: {answer}; check the credentials (the imagePullSecret, $REGISTRY_AUTH_FILE or ~/.docker/config.json), and that the image exists (some registries answer so for a missing one)")]
    Unauthorized { image: String, registry: String, credentials: String, answer: String },
    #[error("cannot reach registry {registry} for image {image}: {message}")]
    Unreachable { image: String, registry: String, message: String },
    #[error("registry {registry} failed to serve image {image}: {answer}")]
    Registry { image: String, registry: String, answer: String },
    #[error("image {image}: the download of layer {digest} from {registry} stopped after {received} of {expected} bytes ({message}); nothing of it was kept, the next pull starts it again")]
    Interrupted { image: String, registry: String, digest: String, received: u64, expected: u64, message: String },
    #[error("image {image}: {what} {expected} from registry {registry} has digest {actual}: it is corrupt (in the registry or in transit); nothing of it was kept")]
    DigestMismatch { image: String, registry: String, what: &'static str, expected: String, actual: String },
    #[error("image {image} cannot be used: {reason}")]
    UnsupportedImage { image: String, reason: String },
    #[error("image {image} has no linux/amd64 variant; its index lists {available}")]
    NoPlatform { image: String, available: String },
    #[error("image {image}: layer {layer} cannot be read: {message}")]
    BadLayer { image: String, layer: String, message: String },
    #[error("image {image} has no disk: {found}; a containerDisk keeps one disk image file in /disk/ (or give containerDisk.path)")]
    NoDisk { image: String, found: String },
    #[error("image {image} has more than one file in /disk/ ({}); KubeVirt boots only one: keep one, or give containerDisk.path", found.join(", "))]
    TooManyDisks { image: String, found: Vec<String> },
    #[error("image {image}: {what} is {size} bytes, more than the {max} allowed")]
    TooLarge { image: String, what: String, size: u64, max: u64 },
    #[error("image {image}: the disk {path} cannot be used: {reason}")]
    UnsupportedDisk { image: String, path: String, reason: String },
    #[error("image {image} is not in the image cache {} and its imagePullPolicy is Never; pull it first, or use IfNotPresent", cache.display())]
    NotPresent { image: String, cache: PathBuf },
    #[error("cannot read registry credentials from {source_name}: {reason}")]
    AuthConfig { source_name: String, reason: String },
    #[error("no space left on the device holding {}{}; free some space (or prune the image cache) and pull again", dir.display(), free.map(|f| format!(" ({f} bytes free)")).unwrap_or_default())]
    DiskFull { dir: PathBuf, free: Option<u64> },
    #[error("image cache: cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

/// An I/O error, told apart when the disk is full.
pub(crate) fn io_error(action: &'static str, path: &std::path::Path, e: std::io::Error) -> ImageError {
    if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
        let dir = if path.is_dir() { path } else { path.parent().unwrap_or(path) };
        return ImageError::DiskFull { dir: dir.to_path_buf(), free: crate::disk_files::free_space(dir) };
    }
    ImageError::Io { action, path: path.to_path_buf(), source: e }
}

/// [`pull`] for blocking callers: on a runtime of its own (not from inside an async task;
/// use `spawn_blocking`).
/// The image cache all nodes of a local cluster share: `<data>/images`, beside
/// `<data>/volumes` (`volumes_dir`).
pub fn cache_dir_of(volumes_dir: &std::path::Path) -> PathBuf {
    volumes_dir.parent().unwrap_or(volumes_dir).join("images")
}

/// The backing file a qcow2 image names in its header (a container disk's overlay names
/// the cached disk it was made on); `None` for another format, no backing file, or an
/// unreadable file.
pub fn qcow2_backing_file(path: &std::path::Path) -> Option<PathBuf> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 20];
    file.read_exact(&mut header).ok()?;
    if header[..4] != *b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().ok()?);
    let len = u32::from_be_bytes(header[16..20].try_into().ok()?);
    // QEMU caps a backing file name at 1023 bytes.
    if offset == 0 || len == 0 || len > 1023 {
        return None;
    }
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut name = vec![0u8; len as usize];
    file.read_exact(&mut name).ok()?;
    use std::os::unix::ffi::OsStringExt;
    Some(PathBuf::from(std::ffi::OsString::from_vec(name)))
}

pub fn pull_blocking(request: &PullRequest) -> Result<PulledImage, ImageError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ImageError::Io { action: "start a runtime for", path: request.cache_dir.clone(), source: e })?;
    rt.block_on(pull(request))
}
