//! The image cache on disk (layout in the module's doc): locks, verified blobs, extracted
//! disks, references, and listing, pruning and LRU eviction.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{DiskFormat, ImageError, ImageRef, io_error};

/// How often a waiting lock is tried again.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// What `image.json` records of an extracted image. Written once, before the image's
/// directory is renamed into place.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ImageMeta {
    pub manifest_digest: String,
    /// The index (manifest list) it was chosen from, if any.
    pub index_digest: Option<String>,
    pub format: DiskFormat,
    pub size: u64,
    /// Where the disk was in the image (`/disk/fedora.qcow2`).
    pub disk_path: String,
    /// Every blob it was made from: manifests and layers.
    pub blobs: Vec<String>,
}

/// One `refs/*.json`.
#[derive(Debug, Serialize, Deserialize)]
struct RefRecord {
    reference: String,
    manifest_digest: String,
}

/// An image in the cache, as [`list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    pub manifest_digest: String,
    /// The references that last resolved to it (normalised).
    pub references: Vec<String>,
    pub disk: PathBuf,
    pub format: DiskFormat,
    /// The disk's virtual size.
    pub size: u64,
    /// Space it takes: its disk and its blobs (a blob shared with other images is counted
    /// for each).
    pub bytes: u64,
    pub last_used: SystemTime,
}

/// What [`evict_to`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// Manifest digests of the images removed, least recently used first.
    pub removed: Vec<String>,
    /// The cache's size after (bytes allocated).
    pub bytes: u64,
}

pub(crate) struct Cache {
    root: PathBuf,
}

/// `sha256:<hex>` → `<hex>`, checked (it becomes a file name).
pub(crate) fn hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

impl Cache {
    /// The cache at `root`, its directories made.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let root = std::path::absolute(root).map_err(|e| io_error("find", root, e))?;
        for d in ["blobs/sha256", "disks/sha256", "refs", "tmp", "locks"] {
            let dir = root.join(d);
            fs::create_dir_all(&dir).map_err(|e| io_error("create the directory", &dir, e))?;
        }
        Ok(Cache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    pub fn disk_dir(&self, hex: &str) -> PathBuf {
        self.root.join("disks/sha256").join(hex)
    }

    /// A fresh temporary path for `key` (`blob-<hex>`, `disk-<hex>`) in `tmp/`.
    pub fn temp_path(&self, key: &str) -> PathBuf {
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        self.root.join("tmp").join(format!("{key}.{}-{:016x}", std::process::id(), u64::from_le_bytes(r)))
    }

    /// Remove what killed or failed makers of `key` left in `tmp/`. Only called with
    /// `key`'s lock held, so no live maker's files are among them.
    pub fn clean_temps(&self, key: &str) {
        let prefix = format!("{key}.");
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else { return };
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                remove_any(&e.path());
            }
        }
    }

    /// Every pull holds this shared; prune and eviction hold it exclusive.
    pub async fn lock_shared(&self) -> Result<Lock, ImageError> {
        Lock::acquire(self.root.join("locks/cache.lock"), libc::LOCK_SH, false).await
    }

    /// The lock of one blob or disk.
    pub async fn lock(&self, key: &str) -> Result<Lock, ImageError> {
        Lock::acquire(self.root.join("locks").join(format!("{key}.lock")), libc::LOCK_EX, true).await
    }

    /// The finished image with manifest `digest`, if the cache has it.
    pub fn image(&self, digest: &str) -> Option<ImageMeta> {
        let hex = hex_of(digest)?;
        let dir = self.disk_dir(hex);
        let meta: ImageMeta = serde_json::from_slice(&fs::read(dir.join("image.json")).ok()?).ok()?;
        (meta.manifest_digest == digest && dir.join("disk.img").is_file()).then_some(meta)
    }

    /// What `image` resolved to last time, if that image is still cached.
    pub fn lookup(&self, image: &ImageRef) -> Option<ImageMeta> {
        if let Some(meta) = image.digest.as_deref().and_then(|d| self.image(d)) {
            return Some(meta);
        }
        let bytes = fs::read(self.ref_path(&image.to_string())).ok()?;
        let record: RefRecord = serde_json::from_slice(&bytes).ok()?;
        (record.reference == image.to_string()).then_some(())?;
        self.image(&record.manifest_digest)
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let d = ring::digest::digest(&ring::digest::SHA256, reference.as_bytes());
        self.root.join("refs").join(format!("{}.json", hex(d.as_ref())))
    }

    pub fn record_ref(&self, image: &ImageRef, digest: &str) -> Result<(), ImageError> {
        let record = RefRecord { reference: image.to_string(), manifest_digest: digest.to_string() };
        let bytes = serde_json::to_vec_pretty(&record).expect("a ref record serialises");
        self.write_atomically(&self.ref_path(&record.reference), &bytes)
    }

    /// The image was used now (for LRU eviction).
    pub fn touch(&self, digest: &str) {
        let Some(hex) = hex_of(digest) else { return };
        let path = self.disk_dir(hex).join("last-used");
        if let Ok(f) = OpenOptions::new().create(true).truncate(false).write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Write `bytes` to `path` through a unique temporary file, so concurrent writers
    /// never mix their content.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let tmp = self.temp_path("file");
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| io_error("write", path, e))
    }

    /// Move a verified blob into place.
    pub fn commit_blob(&self, tmp: &Path, hex: &str) -> Result<(), ImageError> {
        let target = self.blob_path(hex);
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o444)).map_err(|e| io_error("set the mode of", tmp, e))?;
        fs::rename(tmp, &target).map_err(|e| io_error("rename into place", &target, e))?;
        sync_dir(target.parent().expect("a blob has a directory"))
    }

    /// Move a finished image directory (`disk.img`, `image.json`) into place.
    pub fn commit_disk(&self, tmp_dir: &Path, hex: &str) -> Result<(), ImageError> {
        let target = self.disk_dir(hex);
        fs::rename(tmp_dir, &target).map_err(|e| io_error("rename into place", &target, e))?;
        sync_dir(target.parent().expect("a disk dir has a parent"))
    }
}

fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("sync", dir, e))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// A `flock` on a lock file. A per-key lock file is removed when released; after locking,
/// the file must still be the one at the path (a holder that released it may have removed
/// it), else the lock is taken again.
pub(crate) struct Lock {
    path: PathBuf,
    remove: bool,
    _file: File,
}

impl Lock {
    async fn acquire(path: PathBuf, mode: libc::c_int, remove: bool) -> Result<Self, ImageError> {
        loop {
            let file = open_lock_file(&path)?;
            while !try_flock(&file, mode, &path)? {
                tokio::time::sleep(LOCK_POLL).await;
            }
            if same_file(&file, &path) {
                return Ok(Lock { path, remove, _file: file });
            }
        }
    }

    /// The blocking form, for prune and eviction.
    fn acquire_blocking(path: PathBuf, mode: libc::c_int) -> Result<Self, ImageError> {
        let file = open_lock_file(&path)?;
        while !try_flock(&file, mode, &path)? {
            std::thread::sleep(LOCK_POLL);
        }
        Ok(Lock { path, remove: false, _file: file })
    }
}

fn open_lock_file(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o644).open(path).map_err(|e| io_error("create the lock file", path, e))
}

fn try_flock(file: &File, mode: libc::c_int, path: &Path) -> Result<bool, ImageError> {
    // SAFETY: flock on a descriptor the caller owns.
    if unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) || e.kind() == io::ErrorKind::Interrupted {
        return Ok(false);
    }
    Err(io_error("lock", path, e))
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.remove {
            // Removed while still held; the lock itself goes with the descriptor.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Bytes a file or tree takes on disk (allocated blocks: a sparse disk counts its data).
fn allocated(path: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(path) else { return 0 };
    if !m.is_dir() {
        return m.blocks() * 512;
    }
    fs::read_dir(path).map(|es| es.flatten().map(|e| allocated(&e.path())).sum()).unwrap_or(0)
}

/// Every finished image in the cache, with its directory's hex name.
fn images(cache: &Cache) -> Vec<(String, ImageMeta)> {
    let Ok(entries) = fs::read_dir(cache.root.join("disks/sha256")) else { return Vec::new() };
    let mut out: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = cache.image(&format!("sha256:{name}"))?;
            Some((name, meta))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn last_used(cache: &Cache, hex: &str) -> SystemTime {
    let dir = cache.disk_dir(hex);
    fs::metadata(dir.join("last-used"))
        .or_else(|_| fs::metadata(&dir))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn references(cache: &Cache) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(entries) = fs::read_dir(cache.root.join("refs")) else { return out };
    for e in entries.flatten() {
        let Ok(bytes) = fs::read(e.path()) else { continue };
        let Ok(r) = serde_json::from_slice::<RefRecord>(&bytes) else { continue };
        out.entry(r.manifest_digest).or_default().push(r.reference);
    }
    for refs in out.values_mut() {
        refs.sort();
    }
    out
}

/// The images in the cache at `cache_dir`, least recently used first.
pub fn list(cache_dir: &Path) -> Result<Vec<CachedImage>, ImageError> {
    if !cache_dir.is_dir() {
        return Ok(Vec::new());
    }
    let cache = Cache::open(cache_dir)?;
    let refs = references(&cache);
    let mut out: Vec<CachedImage> = images(&cache)
        .into_iter()
        .map(|(hex, meta)| {
            let dir = cache.disk_dir(&hex);
            let blobs: u64 = meta.blobs.iter().filter_map(|d| hex_of(d)).map(|h| allocated(&cache.blob_path(h))).sum();
            CachedImage {
                references: refs.get(&meta.manifest_digest).cloned().unwrap_or_default(),
                disk: dir.join("disk.img"),
                format: meta.format,
                size: meta.size,
                bytes: allocated(&dir) + blobs,
                last_used: last_used(&cache, &hex),
                manifest_digest: meta.manifest_digest,
            }
        })
        .collect();
    out.sort_by(|a, b| a.last_used.cmp(&b.last_used).then_with(|| a.manifest_digest.cmp(&b.manifest_digest)));
    Ok(out)
}

/// Remove every image whose manifest digest is not in `keep`, the blobs no kept image
/// needs, references to removed images, and everything unfinished. Waits for pulls under
/// way to finish first.
pub fn prune(cache_dir: &Path, keep: &[&str]) -> Result<Vec<String>, ImageError> {
    if !cache_dir.is_dir() {
        return Ok(Vec::new());
    }
    let cache = Cache::open(cache_dir)?;
    let _lock = Lock::acquire_blocking(cache.root.join("locks/cache.lock"), libc::LOCK_EX)?;
    let keep: HashSet<&str> = keep.iter().copied().collect();
    let mut removed = Vec::new();
    for (hex, meta) in images(&cache) {
        if !keep.contains(meta.manifest_digest.as_str()) {
            remove_image(&cache, &hex)?;
            removed.push(meta.manifest_digest);
        }
    }
    collect_garbage(&cache, true)?;
    Ok(removed)
}

/// Remove least recently used images until the cache takes at most `max_bytes`, never one
/// whose manifest digest is in `in_use`. Stops short (without error) when only images in
/// use are left. Waits for pulls under way to finish first.
pub fn evict_to(cache_dir: &Path, max_bytes: u64, in_use: &[&str]) -> Result<Evicted, ImageError> {
    if !cache_dir.is_dir() {
        return Ok(Evicted { removed: Vec::new(), bytes: 0 });
    }
    let cache = Cache::open(cache_dir)?;
    let _lock = Lock::acquire_blocking(cache.root.join("locks/cache.lock"), libc::LOCK_EX)?;
    let in_use: HashSet<&str> = in_use.iter().copied().collect();
    collect_garbage(&cache, true)?;
    let mut candidates: Vec<(SystemTime, String, String)> = images(&cache)
        .into_iter()
        .filter(|(_, m)| !in_use.contains(m.manifest_digest.as_str()))
        .map(|(hex, m)| (last_used(&cache, &hex), hex, m.manifest_digest))
        .collect();
    candidates.sort();
    let mut removed = Vec::new();
    let mut bytes = cache_bytes(&cache);
    for (_, hex, digest) in candidates {
        if bytes <= max_bytes {
            break;
        }
        remove_image(&cache, &hex)?;
        collect_garbage(&cache, false)?;
        removed.push(digest);
        bytes = cache_bytes(&cache);
    }
    Ok(Evicted { removed, bytes })
}

fn cache_bytes(cache: &Cache) -> u64 {
    allocated(&cache.root.join("blobs")) + allocated(&cache.root.join("disks"))
}

/// Take an image's directory out of `disks/` in one rename, then delete it: a half-deleted
/// image is never seen as finished.
fn remove_image(cache: &Cache, hex: &str) -> Result<(), ImageError> {
    let dir = cache.disk_dir(hex);
    let doomed = cache.temp_path(&format!("gone-{hex}"));
    fs::rename(&dir, &doomed).map_err(|e| io_error("remove", &dir, e))?;
    fs::remove_dir_all(&doomed).map_err(|e| io_error("remove", &doomed, e))
}

/// Remove blobs no finished image lists and references to images not cached; with `all`,
/// also `tmp/` and the lock files (only called with the cache lock held exclusive, when no
/// pull is under way).
fn collect_garbage(cache: &Cache, all: bool) -> Result<(), ImageError> {
    let images = images(cache);
    let live: BTreeSet<String> = images.iter().flat_map(|(_, m)| m.blobs.iter().filter_map(|d| hex_of(d).map(str::to_string))).collect();
    let digests: BTreeSet<&str> = images.iter().map(|(_, m)| m.manifest_digest.as_str()).collect();
    let blobs = cache.root.join("blobs/sha256");
    for e in fs::read_dir(&blobs).map_err(|e| io_error("read", &blobs, e))?.flatten() {
        if !e.file_name().to_str().is_some_and(|n| live.contains(n)) {
            remove_any(&e.path());
        }
    }
    let refs = cache.root.join("refs");
    for e in fs::read_dir(&refs).map_err(|e| io_error("read", &refs, e))?.flatten() {
        let keep = fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<RefRecord>(&b).ok())
            .is_some_and(|r| digests.contains(r.manifest_digest.as_str()));
        if !keep {
            remove_any(&e.path());
        }
    }
    if all {
        for dir in ["tmp", "locks"] {
            let dir = cache.root.join(dir);
            for e in fs::read_dir(&dir).map_err(|e| io_error("read", &dir, e))?.flatten() {
                if e.file_name() != "cache.lock" {
                    remove_any(&e.path());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_image(cache: &Cache, n: u8, blobs: &[&str], used: SystemTime) -> String {
        let hex = format!("{n:02x}").repeat(32);
        let digest = format!("sha256:{hex}");
        let dir = cache.disk_dir(&hex);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("disk.img"), vec![1u8; 64 * 1024]).unwrap();
        let meta = ImageMeta {
            manifest_digest: digest.clone(),
            index_digest: None,
            format: DiskFormat::Raw,
            size: 64 * 1024,
            disk_path: "/disk/d.img".into(),
            blobs: blobs.iter().map(|b| format!("sha256:{b}")).collect(),
        };
        fs::write(dir.join("image.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
        File::create(dir.join("last-used")).unwrap().set_modified(used).unwrap();
        for b in blobs {
            fs::write(cache.blob_path(b), vec![2u8; 32 * 1024]).unwrap();
        }
        digest
    }

    #[test]
    fn hex_of_refuses_what_is_no_file_name() {
        assert_eq!(hex_of(&format!("sha256:{}", "a".repeat(64))), Some("a".repeat(64).as_str()));
        assert_eq!(hex_of("sha256:../../etc"), None);
        assert_eq!(hex_of(&format!("sha512:{}", "a".repeat(64))), None);
    }

    #[test]
    fn prune_keeps_what_is_kept_and_the_blobs_it_shares() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let shared = "c".repeat(64);
        let only_a = "d".repeat(64);
        let only_b = "e".repeat(64);
        let now = SystemTime::now();
        let a = fake_image(&cache, 1, &[&shared, &only_a], now);
        let b = fake_image(&cache, 2, &[&shared, &only_b], now);
        let img = ImageRef::parse("r.io/a:1").unwrap();
        cache.record_ref(&img, &a).unwrap();
        cache.record_ref(&ImageRef::parse("r.io/b:1").unwrap(), &b).unwrap();
        fs::write(cache.root().join("tmp/blob-x.1-2"), b"partial").unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 2);

        let removed = prune(dir.path(), &[&a]).unwrap();
        assert_eq!(removed, vec![b.clone()]);
        assert!(cache.image(&a).is_some() && cache.image(&b).is_none());
        assert!(cache.blob_path(&shared).exists() && cache.blob_path(&only_a).exists());
        assert!(!cache.blob_path(&only_b).exists());
        assert_eq!(fs::read_dir(cache.root().join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(cache.root().join("refs")).unwrap().count(), 1);
        assert_eq!(cache.lookup(&img).map(|m| m.manifest_digest), Some(a.clone()));
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed[0].references, ["r.io/a:1"]);
        assert!(listed[0].bytes >= 64 * 1024 + 2 * 32 * 1024, "{}", listed[0].bytes);
    }

    #[test]
    fn eviction_goes_by_last_use_and_spares_images_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let t = SystemTime::now();
        let oldest = fake_image(&cache, 1, &[&"a".repeat(64)], t - Duration::from_secs(300));
        let old = fake_image(&cache, 2, &[&"b".repeat(64)], t - Duration::from_secs(200));
        let new = fake_image(&cache, 3, &[&"c".repeat(64)], t - Duration::from_secs(100));
        let one = cache_bytes(&cache) / 3;
        // Room for one image: the oldest is in use, so the two others go, newest last.
        let ev = evict_to(dir.path(), one, &[&oldest]).unwrap();
        assert_eq!(ev.removed, vec![old.clone(), new.clone()]);
        assert!(cache.image(&oldest).is_some());
        assert_eq!(ev.bytes, cache_bytes(&cache));
        // Nothing left that may go: no error, the cache stays over the limit.
        let ev = evict_to(dir.path(), 0, &[&oldest]).unwrap();
        assert!(ev.removed.is_empty() && ev.bytes > 0);
        // Touching changes the order.
        let a = fake_image(&cache, 4, &[], t - Duration::from_secs(50));
        cache.touch(&oldest);
        let ev = evict_to(dir.path(), cache_bytes(&cache) - 1, &[]).unwrap();
        assert_eq!(ev.removed, vec![a]);
    }

    #[tokio::test]
    async fn a_key_lock_excludes_a_second_holder_in_the_same_process() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let first = cache.lock("blob-x").await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(300), cache.lock("blob-x")).await;
        assert!(second.is_err(), "the second lock was granted while the first was held");
        drop(first);
        let _second = tokio::time::timeout(Duration::from_secs(5), cache.lock("blob-x")).await.expect("granted once released").unwrap();
    }
}
