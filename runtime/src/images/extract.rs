//! The disk of a containerDisk: layers read in order with OCI whiteouts, only the files
//! that can be the disk written out (see the module's doc). Blocking.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::{DiskFormat, ImageError, io_error};
use crate::disk_files::SparseWriter;

/// Entries (over all layers) tracked before a layer is called a tar bomb.
const MAX_ENTRIES: usize = 500_000;
/// KubeVirt's fallback directory for the disk.
const DISK_DIR: &str = "disk";

/// One layer blob to read.
pub(crate) struct Layer {
    pub digest: String,
    pub path: PathBuf,
}

/// The extracted disk.
#[derive(Debug)]
pub(crate) struct Disk {
    /// `/disk/fedora.qcow2`.
    pub path_in_image: String,
    pub format: DiskFormat,
    /// Virtual size.
    pub size: u64,
}

#[derive(Debug)]
enum Kind {
    Dir,
    /// A regular file; `temp` holds its content when it may be the disk.
    File { temp: Option<PathBuf> },
    /// Links, devices, fifos: never a disk.
    Other(&'static str),
}

struct Node {
    layer: usize,
    kind: Kind,
}

/// The file tree of the layers applied so far, keyed by cleaned path (`disk/x.img`).
struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    fn drop_node(node: Node) {
        if let Kind::File { temp: Some(t) } = node.kind {
            let _ = fs::remove_file(t);
        }
    }

    /// Remove `path` and everything under it that `pred` accepts.
    fn remove_tree(&mut self, path: &str, pred: impl Fn(&Node) -> bool) {
        if self.nodes.get(path).is_some_and(&pred) {
            Self::drop_node(self.nodes.remove(path).expect("present"));
        }
        self.remove_under(path, pred);
    }

    /// Remove everything strictly under `dir` ("" is the root) that `pred` accepts.
    fn remove_under(&mut self, dir: &str, pred: impl Fn(&Node) -> bool) {
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, n)| pred(n))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            Self::drop_node(self.nodes.remove(&k).expect("present"));
        }
    }

    fn insert(&mut self, path: String, node: Node) {
        if let Some(old) = self.nodes.insert(path, node) {
            Self::drop_node(old);
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // Candidates not taken as the disk are temporary files.
        for (_, n) in std::mem::take(&mut self.nodes) {
            Self::drop_node(n);
        }
    }
}

/// A tar path made relative and clean: `./a//b/../c` → `a/c`; `..` stops at the root,
/// as containerd's securejoin does.
pub(crate) fn clean_path(raw: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in raw.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn parent_and_name(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Counts the compressed bytes read, for progress.
struct Counting<R> {
    inner: R,
    count: u64,
    report: Box<dyn FnMut(u64) + Send>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        (self.report)(n as u64);
        Ok(n)
    }
}

/// A layer's decompressed stream, its compression told by its first bytes.
fn open_layer(layer: &Layer, report: Box<dyn FnMut(u64) + Send>) -> io::Result<(Box<dyn Read + Send>, &'static str)> {
    let file = File::open(&layer.path)?;
    let mut reader = BufReader::with_capacity(256 * 1024, Counting { inner: file, count: 0, report });
    let magic = {
        use std::io::BufRead;
        let buf = reader.fill_buf()?;
        [buf.first().copied(), buf.get(1).copied(), buf.get(2).copied(), buf.get(3).copied()]
    };
    Ok(match magic {
        [Some(0x1f), Some(0x8b), ..] => (Box::new(flate2::bufread::MultiGzDecoder::new(reader)), "gzip"),
        [Some(0x28), Some(0xb5), Some(0x2f), Some(0xfd)] => (Box::new(zstd::stream::read::Decoder::with_buffer(reader)?), "zstd"),
        _ => (Box::new(reader), "tar"),
    })
}

/// Read the layers in order into `out_dir/disk.img`. `target` is KubeVirt's
/// `containerDisk.path`. `max_disk` caps the disk; the layers may unpack to twice that.
pub(crate) fn extract(
    image: &str,
    layers: &[Layer],
    target: Option<&str>,
    max_disk: u64,
    out_dir: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Disk, ImageError> {
    let target = target.map(clean_path);
    let mut tree = unpack_layers(image, layers, target.as_deref(), max_disk, out_dir, progress)?;
    let chosen = choose_disk(image, &tree, target.as_deref())?;
    let shown = format!("/{chosen}");
    let Some(node) = tree.nodes.remove(&chosen) else {
        return Err(ImageError::NoDisk { image: image.into(), found: format!("{shown} vanished (a bug in vmform)") });
    };
    let temp = match node.kind {
        Kind::File { temp: Some(t) } => t,
        Kind::File { temp: None } => {
            return Err(ImageError::UnsupportedDisk { image: image.into(), path: shown, reason: "it was not written out (a bug in vmform)".into() });
        }
        Kind::Dir => return Err(ImageError::UnsupportedDisk { image: image.into(), path: shown, reason: "it is a directory".into() }),
        Kind::Other(what) => {
            return Err(ImageError::UnsupportedDisk { image: image.into(), path: shown, reason: format!("it is {what}; the disk must be a regular file") });
        }
    };
    let disk = out_dir.join("disk.img");
    fs::rename(&temp, &disk).map_err(|e| io_error("rename into place", &disk, e))?;
    let (format, size) = inspect(&disk).map_err(|reason| match reason {
        Inspect::Io(e) => io_error("read", &disk, e),
        Inspect::Refused(reason) => ImageError::UnsupportedDisk { image: image.into(), path: shown.clone(), reason },
    })?;
    Ok(Disk { path_in_image: shown, format, size })
}

/// The layers read in order into the final file tree (whiteouts applied); the disk
/// candidates (files in /disk, or `target`) written out under `out_dir` as they come.
fn unpack_layers(
    image: &str,
    layers: &[Layer],
    target: Option<&str>,
    max_disk: u64,
    out_dir: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Tree, ImageError> {
    let max_unpacked = max_disk.saturating_mul(2);
    let mut tree = Tree { nodes: BTreeMap::new() };
    let mut unpacked: u64 = 0;
    let mut candidates = 0u64;
    // The progress callback is called from inside the decompressor's reads.
    let (tx, rx) = std::sync::mpsc::channel::<u64>();

    for (i, layer) in layers.iter().enumerate() {
        let bad = |message: String| ImageError::BadLayer { image: image.to_string(), layer: layer.digest.clone(), message };
        let tx = tx.clone();
        let (stream, compression) = open_layer(layer, Box::new(move |n| {
            let _ = tx.send(n);
        }))
        .map_err(|e| io_error("read", &layer.path, e))?;
        let mut archive = tar::Archive::new(stream);
        let entries = archive.entries().map_err(|e| bad(format!("not a {compression} tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("not a {compression} tar archive: {e}")))?;
            while let Ok(n) = rx.try_recv() {
                progress(n);
            }
            if tree.nodes.len() >= MAX_ENTRIES {
                return Err(bad(format!("the layers hold more than {MAX_ENTRIES} files; a containerDisk holds a disk image")));
            }
            let size = entry.header().entry_size().map_err(|e| bad(format!("bad tar header: {e}")))?;
            unpacked = unpacked.saturating_add(size);
            if unpacked > max_unpacked {
                return Err(ImageError::TooLarge { image: image.into(), what: "the layers' unpacked content".into(), size: unpacked, max: max_unpacked });
            }
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = clean_path(&raw);
            if path.is_empty() {
                continue; // the root itself
            }
            let (dir, name) = parent_and_name(&path);
            let lower = |n: &Node| n.layer < i;
            if name == ".wh..wh..opq" {
                tree.remove_under(dir, lower);
                continue;
            }
            if name.starts_with(".wh..wh.") {
                continue; // aufs bookkeeping, no file
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let victim = if dir.is_empty() { hidden.to_string() } else { format!("{dir}/{hidden}") };
                tree.remove_tree(&victim, lower);
                continue;
            }
            let entry_type = entry.header().entry_type();
            let kind = if entry_type.is_dir() {
                Kind::Dir
            } else if entry_type.is_file() || entry_type == tar::EntryType::Continuous || entry_type.is_gnu_sparse() {
                let is_candidate = match target {
                    Some(t) => t == path,
                    None => dir == DISK_DIR,
                };
                let temp = if is_candidate {
                    if size > max_disk {
                        return Err(ImageError::TooLarge { image: image.into(), what: format!("/{path}"), size, max: max_disk });
                    }
                    candidates += 1;
                    let temp = out_dir.join(format!(".candidate-{candidates}"));
                    let copied = copy_sparse(&mut entry, &temp, max_disk).map_err(|e| match e {
                        CopyError::Read(e) => bad(format!("reading /{path}: {e}")),
                        CopyError::Write(e) => io_error("write", &temp, e),
                        CopyError::TooLarge(n) => ImageError::TooLarge { image: image.into(), what: format!("/{path}"), size: n, max: max_disk },
                    });
                    if copied.is_err() {
                        let _ = fs::remove_file(&temp);
                    }
                    copied?;
                    Some(temp)
                } else {
                    None
                };
                Kind::File { temp }
            } else if entry_type.is_symlink() {
                Kind::Other("a symbolic link")
            } else if entry_type.is_hard_link() {
                Kind::Other("a hard link")
            } else {
                Kind::Other("not a regular file")
            };
            // A directory keeps what is under it; anything else replaces a directory.
            if !matches!(kind, Kind::Dir) {
                tree.remove_under(&path, |_| true);
            }
            tree.insert(path, Node { layer: i, kind });
        }
        while let Ok(n) = rx.try_recv() {
            progress(n);
        }
    }

    Ok(tree)
}

/// Which file of the final tree is the disk: `target`, or the one file in /disk.
fn choose_disk(image: &str, tree: &Tree, target: Option<&str>) -> Result<String, ImageError> {
    Ok(match target {
        Some(t) => match tree.nodes.get(t) {
            Some(_) => t.to_string(),
            None => {
                let (dir, _) = parent_and_name(t);
                let near = listing(tree, dir);
                return Err(ImageError::NoDisk {
                    image: image.into(),
                    found: format!("containerDisk.path /{t} is not in it ({})", if near.is_empty() { format!("nothing in /{dir}") } else { format!("/{dir} holds {}", near.join(", ")) }),
                });
            }
        },
        None => {
            let mut found = children(tree, DISK_DIR);
            match found.len() {
                0 if tree.nodes.contains_key(DISK_DIR) => return Err(ImageError::NoDisk { image: image.into(), found: "/disk/ is empty".into() }),
                0 => return Err(ImageError::NoDisk { image: image.into(), found: "it has no /disk/ directory".into() }),
                1 => found.remove(0).0,
                _ => return Err(ImageError::TooManyDisks { image: image.into(), found: found.into_iter().map(|(_, shown)| shown).collect() }),
            }
        }
    })
}

/// What is directly in `dir` of the final tree: keys, and `/dir/name` to show
/// (directories end in `/`).
fn children(tree: &Tree, dir: &str) -> Vec<(String, String)> {
    let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    tree.nodes
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(k, _)| !k[prefix.len()..].contains('/'))
        .map(|(k, n)| (k.clone(), format!("/{k}{}", if matches!(n.kind, Kind::Dir) { "/" } else { "" })))
        .collect()
}

fn listing(tree: &Tree, dir: &str) -> Vec<String> {
    children(tree, dir).into_iter().map(|(_, shown)| shown).collect()
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    /// More than the limit (a GNU sparse entry can expand past its stored size).
    TooLarge(u64),
}

/// Copy an entry's content into a new sparse file (zero blocks become holes), at most
/// `limit` bytes.
fn copy_sparse(src: &mut dyn Read, dest: &Path, limit: u64) -> Result<(), CopyError> {
    use std::io::Write;
    let file = File::create(dest).map_err(CopyError::Write)?;
    let mut out = SparseWriter::new(file);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        total += n as u64;
        if total > limit {
            return Err(CopyError::TooLarge(total));
        }
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
    out.finish().map(drop).map_err(CopyError::Write)
}

enum Inspect {
    Io(io::Error),
    Refused(String),
}

/// Raw or qcow2, and the virtual size. A qcow2 that would read other files (a backing
/// file, an external data file) or that is encrypted is refused.
fn inspect(path: &Path) -> Result<(DiskFormat, u64), Inspect> {
    let mut f = File::open(path).map_err(Inspect::Io)?;
    let len = f.metadata().map_err(Inspect::Io)?.len();
    let mut header = [0u8; 104];
    let mut have = 0;
    while have < header.len() {
        match f.read(&mut header[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Inspect::Io(e)),
        }
    }
    let h = &header[..have];
    if h.starts_with(b"KDMV") || h.starts_with(b"vhdxfile") || h.starts_with(b"conectix") {
        return Err(Inspect::Refused("it is a VMDK, VHDX or VHD image; KubeVirt's containerDisk takes raw or qcow2 (convert it with `qemu-img convert -O qcow2`)".into()));
    }
    if !h.starts_with(b"QFI\xfb") {
        return Ok((DiskFormat::Raw, len));
    }
    if h.len() < 72 {
        return Err(Inspect::Refused("its qcow2 header is truncated".into()));
    }
    let be32 = |o: usize| u32::from_be_bytes(h[o..o + 4].try_into().expect("4 bytes"));
    let be64 = |o: usize| u64::from_be_bytes(h[o..o + 8].try_into().expect("8 bytes"));
    let version = be32(4);
    if !(2..=3).contains(&version) {
        return Err(Inspect::Refused(format!("it is qcow2 version {version}; qemu reads versions 2 and 3")));
    }
    if be64(8) != 0 {
        return Err(Inspect::Refused("it is a qcow2 with a backing file, which would read a file of the host; flatten it with `qemu-img convert -O qcow2`".into()));
    }
    if be32(32) != 0 {
        return Err(Inspect::Refused("it is an encrypted qcow2".into()));
    }
    if version == 3 && h.len() >= 80 && be64(72) & 0b100 != 0 {
        return Err(Inspect::Refused("it is a qcow2 with an external data file, which would read a file of the host".into()));
    }
    Ok((DiskFormat::Qcow2, be64(24)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar layer of (path, content or None for a directory) entries.
    fn layer(dir: &Path, name: &str, entries: &[(&str, Option<&[u8]>)]) -> Layer {
        let path = dir.join(name);
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        for (p, content) in entries {
            let mut h = tar::Header::new_gnu();
            match content {
                Some(c) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(c.len() as u64);
                    h.set_mode(0o644);
                    // Set the raw name so `..` and the like reach the reader unchanged.
                    h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
                    h.set_cksum();
                    b.append(&h, *c).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
                    h.set_cksum();
                    b.append(&h, io::empty()).unwrap();
                }
            }
        }
        b.finish().unwrap();
        Layer { digest: format!("sha256:{name}"), path }
    }

    fn run(layers: &[Layer], target: Option<&str>, out: &Path) -> Result<Disk, ImageError> {
        extract("test/img:1", layers, target, 1 << 30, out, &mut |_| {})
    }

    fn leftovers(out: &Path) -> Vec<String> {
        fs::read_dir(out).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).filter(|n| n != "disk.img").collect()
    }

    #[test]
    fn paths_are_cleaned_and_stay_below_the_root() {
        assert_eq!(clean_path("./disk/x.img"), "disk/x.img");
        assert_eq!(clean_path("/disk//x.img"), "disk/x.img");
        assert_eq!(clean_path("../../disk/x.img"), "disk/x.img");
        assert_eq!(clean_path("disk/../../etc/x"), "etc/x");
        assert_eq!(clean_path("./"), "");
    }

    #[test]
    fn whiteouts_opaque_dirs_and_replacements() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let l0 = layer(d.path(), "l0", &[("disk/", None), ("disk/decoy.img", Some(b"decoy")), ("etc/a", Some(b"a"))]);
        // Whiteout of the decoy, and the real disk, in one layer.
        let l1 = layer(d.path(), "l1", &[("disk/.wh.decoy.img", Some(b"")), ("disk/real.img", Some(b"real"))]);
        let disk = run(&[l0, l1], None, out.path()).unwrap();
        assert_eq!((disk.path_in_image.as_str(), disk.format, disk.size), ("/disk/real.img", DiskFormat::Raw, 4));
        assert_eq!(fs::read(out.path().join("disk.img")).unwrap(), b"real");
        assert!(leftovers(out.path()).is_empty(), "{:?}", leftovers(out.path()));

        // An opaque /disk hides the layers below but not its own layer's files.
        let out = tempfile::tempdir().unwrap();
        let l0 = layer(d.path(), "m0", &[("disk/old.img", Some(b"old"))]);
        let l1 = layer(d.path(), "m1", &[("disk/new.img", Some(b"new")), ("disk/.wh..wh..opq", Some(b""))]);
        let disk = run(&[l0, l1], None, out.path()).unwrap();
        assert_eq!(disk.path_in_image, "/disk/new.img");
        assert!(leftovers(out.path()).is_empty());

        // A whiteout of the whole /disk removes everything under it below.
        let out = tempfile::tempdir().unwrap();
        let l0 = layer(d.path(), "n0", &[("disk/a.img", Some(b"a"))]);
        let l1 = layer(d.path(), "n1", &[(".wh.disk", Some(b""))]);
        let e = run(&[l0, l1], None, out.path()).unwrap_err();
        assert!(e.to_string().contains("has no /disk/ directory"), "{e}");
        assert!(leftovers(out.path()).is_empty());

        // A later file replaces an earlier one of the same name; `..` cannot escape.
        let out = tempfile::tempdir().unwrap();
        let l0 = layer(d.path(), "o0", &[("disk/d.img", Some(b"first"))]);
        let l1 = layer(d.path(), "o1", &[("../../disk/d.img", Some(b"second"))]);
        run(&[l0, l1], None, out.path()).unwrap();
        assert_eq!(fs::read(out.path().join("disk.img")).unwrap(), b"second");
        assert!(leftovers(out.path()).is_empty());
    }

    #[test]
    fn none_or_two_disks_and_containerdisk_path() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let two = layer(d.path(), "two", &[("disk/a.img", Some(b"a")), ("disk/b.qcow2", Some(b"b"))]);
        let e = run(std::slice::from_ref(&two), None, out.path()).unwrap_err();
        assert!(matches!(&e, ImageError::TooManyDisks { found, .. } if found == &["/disk/a.img", "/disk/b.qcow2"]), "{e}");
        assert!(e.to_string().contains("/disk/a.img, /disk/b.qcow2"), "{e}");
        assert!(leftovers(out.path()).is_empty());
        // containerDisk.path picks one.
        let disk = run(std::slice::from_ref(&two), Some("/disk/b.qcow2"), out.path()).unwrap();
        assert_eq!(disk.path_in_image, "/disk/b.qcow2");
        let e = run(std::slice::from_ref(&two), Some("/disk/c.img"), out.path()).unwrap_err();
        assert!(e.to_string().contains("containerDisk.path /disk/c.img is not in it (/disk holds /disk/a.img, /disk/b.qcow2)"), "{e}");
        let empty = layer(d.path(), "empty", &[("disk/", None), ("etc/x", Some(b"x"))]);
        let e = run(&[empty], None, out.path()).unwrap_err();
        assert!(e.to_string().contains("/disk/ is empty"), "{e}");
        let sub = layer(d.path(), "sub", &[("disk/sub/", None)]);
        let e = run(&[sub], None, out.path()).unwrap_err();
        assert!(e.to_string().contains("the disk /disk/sub cannot be used: it is a directory"), "{e}");
    }

    #[test]
    fn caps_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let big = layer(d.path(), "big", &[("disk/a.img", Some(&[7u8; 1500]))]);
        let e = extract("i", std::slice::from_ref(&big), None, 1000, out.path(), &mut |_| {}).unwrap_err();
        assert_eq!(e.to_string(), "image i: /disk/a.img is 1500 bytes, more than the 1000 allowed");
        // Other files count toward the layers' unpacked size, capped at twice the disk's.
        let bomb = layer(d.path(), "bomb", &[("etc/a", Some(&[0u8; 1500])), ("disk/a.img", Some(&[7u8; 600]))]);
        let e = extract("i", std::slice::from_ref(&bomb), None, 1000, out.path(), &mut |_| {}).unwrap_err();
        assert_eq!(e.to_string(), "image i: the layers' unpacked content is 2100 bytes, more than the 2000 allowed");
        assert!(leftovers(out.path()).is_empty(), "{:?}", leftovers(out.path()));
        let junk = d.path().join("junk");
        fs::write(&junk, vec![0x1f, 0x8b, 1, 2, 3, 4, 5]).unwrap();
        let e = run(&[Layer { digest: "sha256:junk".into(), path: junk }], None, out.path()).unwrap_err();
        assert!(matches!(e, ImageError::BadLayer { .. }), "{e}");
        let text = d.path().join("text");
        fs::write(&text, b"this is not a tar archive, it is far too short to be one").unwrap();
        assert!(run(&[Layer { digest: "sha256:t".into(), path: text }], None, out.path()).is_err());
    }

    #[test]
    fn qcow2_headers() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q");
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        fs::write(&p, &h).unwrap();
        assert!(matches!(inspect(&p), Ok((DiskFormat::Qcow2, s)) if s == 1 << 30));
        let mut b = h.clone();
        b[8..16].copy_from_slice(&512u64.to_be_bytes());
        fs::write(&p, &b).unwrap();
        assert!(matches!(inspect(&p), Err(Inspect::Refused(r)) if r.contains("backing file")));
        let mut b = h.clone();
        b[79] = 0b100;
        fs::write(&p, &b).unwrap();
        assert!(matches!(inspect(&p), Err(Inspect::Refused(r)) if r.contains("external data file")));
        fs::write(&p, b"QFI\xfb").unwrap();
        assert!(matches!(inspect(&p), Err(Inspect::Refused(r)) if r.contains("truncated")));
        fs::write(&p, b"plain").unwrap();
        assert!(matches!(inspect(&p), Ok((DiskFormat::Raw, 5))));
    }
}
