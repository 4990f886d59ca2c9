//! Container disk pulls against a real registry: Debian's `docker-registry` (the CNCF
//! distribution registry) started here on 127.0.0.1, images written as OCI layouts by the
//! test and pushed with `skopeo`, an independent client (Debian packages docker-registry
//! and skopeo; qemu-img for the qcow2 disk). A small HTTP proxy written here counts blob
//! downloads, slows them, or cuts or stalls them halfway.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use vmform_runtime::images::{self, Auth, DiskFormat, ImageError, PullPhase, Progress, PullPolicy, PullRequest};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn tools_present() -> bool {
    let have = |tool: &str| Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    vmform_schema_check::precondition(
        Path::new("/usr/bin/docker-registry").exists() && have("skopeo") && have("qemu-img"),
        "docker-registry, skopeo and qemu-img (Debian packages docker-registry, skopeo, qemu-utils)",
    )
}

fn sha256(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    format!("sha256:{}", d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Bytes that do not compress (so a gzip layer is as large as its disk).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A raw disk: data, a run of zeros (a hole once extracted), more data.
fn raw_disk(seed: u64) -> Vec<u8> {
    let mut d = noise(256 * 1024, seed);
    d.extend(vec![0u8; 512 * 1024]);
    d.extend(noise(256 * 1024, seed + 1));
    d
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `docker-registry serve` on 127.0.0.1, storage in a temporary directory.
struct Registry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        Registry::start_with(htpasswd, None)
    }

    /// With `tls`: serve HTTPS with this certificate and key (PEM).
    fn start_with(htpasswd: Option<(&str, &str)>, tls: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if let Some((cert, key)) = tls {
            fs::write(dir.path().join("tls.crt"), cert).unwrap();
            fs::write(dir.path().join("tls.key"), key).unwrap();
            config += &format!("  tls:\n    certificate: {}\n    key: {}\n", dir.path().join("tls.crt").display(), dir.path().join("tls.key").display());
        }
        if let Some((user, password)) = htpasswd {
            // The lowest bcrypt cost: the registry checks it on every request.
            let line = format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap());
            fs::write(dir.path().join("htpasswd"), line).unwrap();
            config += &format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", dir.path().join("htpasswd").display());
        }
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let r = Registry { child: Some(child), port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_status(port, "/v2/").is_none() {
            assert!(Instant::now() < deadline, "the registry did not start: {}", fs::read_to_string(r.dir.path().join("registry.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The file the registry serves blob `digest` from.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join(format!("storage/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    /// The layer digests of `repo:tag`'s manifest, as the registry serves it.
    fn layers(&self, repo: &str, tag: &str) -> Vec<String> {
        let link = self.dir.path().join(format!("storage/docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link"));
        let digest = fs::read_to_string(link).unwrap();
        let manifest: Value = serde_json::from_slice(&fs::read(self.blob_file(digest.trim())).unwrap()).unwrap();
        manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

/// A tar layer entry.
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
}

fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        match e {
            E::File(path, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, path, *data).unwrap();
            }
            E::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// An OCI image layout directory, written by hand: what `skopeo copy oci:DIR:v1` reads.
struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    fn new() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir }
    }

    fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha256(bytes);
        fs::write(self.dir.path().join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap()), bytes).unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    /// An image of uncompressed layers; returns its manifest's descriptor.
    fn image(&self, layers: &[Vec<u8>], arch: &str) -> Value {
        let config = json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>()},
        });
        let config = self.blob("application/vnd.oci.image.config.v1+json", config.to_string().as_bytes());
        let layers: Vec<Value> = layers.iter().map(|l| self.blob("application/vnd.oci.image.layer.v1.tar", l)).collect();
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers});
        self.blob(OCI_MANIFEST, manifest.to_string().as_bytes())
    }

    fn index(&self, manifests: &[(Value, &str)]) -> Value {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(d, arch)| {
                let mut d = d.clone();
                d["platform"] = json!({"os": "linux", "architecture": arch});
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        self.blob(OCI_INDEX, index.to_string().as_bytes())
    }

    /// Name `top` `v1` in the layout's index.json.
    fn tag(&self, top: &Value) {
        let mut top = top.clone();
        top["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
        fs::write(self.dir.path().join("index.json"), json!({"schemaVersion": 2, "manifests": [top]}).to_string()).unwrap();
    }

    /// `skopeo copy oci:DIR:v1 docker://DEST` with extra flags.
    fn push(&self, dest: &str, flags: &[&str]) {
        let out = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
            .args(flags)
            .arg(format!("oci:{}:v1", self.dir.path().display()))
            .arg(format!("docker://{dest}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy to {dest}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Push a one-image layout of `layers` to `dest`.
fn push_image(dest: &str, layers: &[Vec<u8>], flags: &[&str]) {
    let layout = Layout::new();
    let m = layout.image(layers, "amd64");
    layout.tag(&m);
    layout.push(dest, flags);
}

/// A request isolated from the machine's docker config files.
fn request(reference: &str, cache: &Path) -> PullRequest {
    let mut r = PullRequest::new(reference, cache);
    r.auth_file = Some(cache.with_extension("no-auth-file.json"));
    r
}

async fn pull(reference: &str, cache: &Path) -> Result<images::PulledImage, ImageError> {
    images::pull(&request(reference, cache)).await
}

fn files_in(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(es) => {
            let mut v: Vec<String> = es.flatten().map(|e| e.file_name().into_string().unwrap()).collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

#[tokio::test]
async fn raw_disk_pulled_verified_cached_and_pruned() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(None);
    let disk = raw_disk(1);
    push_image(&format!("{}/disks/raw:1.0", reg.addr()), &[tar(&[E::Dir("disk/"), E::File("disk/disk.img", &disk)])], &[]);
    let cache = tempfile::tempdir().unwrap();
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let s = seen.clone();
    let mut req = request(&format!("{}/disks/raw:1.0", reg.addr()), cache.path());
    req.progress = Some(Arc::new(move |p| s.lock().unwrap().push(p)));
    let t = Instant::now();
    let pulled = images::pull(&req).await.unwrap();
    eprintln!("first pull of a {} KiB disk: {:?}", disk.len() / 1024, t.elapsed());
    assert_eq!(pulled.format, DiskFormat::Raw);
    assert_eq!(pulled.size, disk.len() as u64);
    assert_eq!(fs::read(&pulled.disk).unwrap(), disk);
    assert!(pulled.disk.starts_with(cache.path().join("disks/sha256")), "{}", pulled.disk.display());
    assert!(pulled.downloaded > 0 && !pulled.from_cache);
    // The zero run became a hole: the file takes less than its length.
    use std::os::unix::fs::MetadataExt;
    assert!(fs::metadata(&pulled.disk).unwrap().blocks() * 512 < disk.len() as u64);
    let seen = seen.lock().unwrap().clone();
    let last_download = seen.iter().rev().find(|p| p.phase == PullPhase::Downloading).unwrap();
    assert!(last_download.total > 0 && last_download.done == last_download.total, "{seen:?}");
    assert!(seen.iter().any(|p| p.phase == PullPhase::Extracting && p.done == p.total));
    // The layer blob is kept by its digest, verified.
    for layer in reg.layers("disks/raw", "1.0") {
        assert_eq!(sha256(&fs::read(cache.path().join("blobs/sha256").join(hex(&layer))).unwrap()), layer);
    }
    assert!(files_in(&cache.path().join("tmp")).is_empty());

    // A second pull with IfNotPresent asks no registry; Always asks, and finds the same digest.
    let again = pull(&format!("{}/disks/raw:1.0", reg.addr()), cache.path()).await.unwrap();
    assert!(again.from_cache && again.downloaded == 0 && again.disk == pulled.disk);
    let mut always = request(&format!("{}/disks/raw:1.0", reg.addr()), cache.path());
    always.policy = Some(PullPolicy::Always);
    let always = images::pull(&always).await.unwrap();
    assert!(!always.from_cache && always.downloaded == 0 && always.manifest_digest == pulled.manifest_digest);
    // By digest, too.
    let by_digest = pull(&format!("{}/disks/raw@{}", reg.addr(), pulled.manifest_digest), cache.path()).await.unwrap();
    assert!(by_digest.from_cache && by_digest.disk == pulled.disk);

    let listed = images::list(cache.path()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].references, [format!("{}/disks/raw:1.0", reg.addr())]);
    assert_eq!(images::prune(cache.path(), &[&pulled.manifest_digest]).unwrap(), Vec::<String>::new());
    assert_eq!(images::prune(cache.path(), &[]).unwrap(), vec![pulled.manifest_digest.clone()]);
    assert!(images::list(cache.path()).unwrap().is_empty());
    assert!(files_in(&cache.path().join("blobs/sha256")).is_empty());
    assert!(!pulled.disk.exists());
}

#[tokio::test]
async fn qcow2_disk_in_a_docker_v2_manifest() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let q = work.path().join("d.qcow2");
    let out = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&q).arg("16M").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let qcow2 = fs::read(&q).unwrap();
    // `-f v2s2`: skopeo converts to a Docker v2 schema 2 manifest with gzip layers.
    push_image(&format!("{}/disks/q:1", reg.addr()), &[tar(&[E::File("disk/fedora.qcow2", &qcow2)])], &["-f", "v2s2"]);
    let cache = tempfile::tempdir().unwrap();
    let pulled = pull(&format!("{}/disks/q:1", reg.addr()), cache.path()).await.unwrap();
    assert_eq!((pulled.format, pulled.size), (DiskFormat::Qcow2, 16 << 20));
    assert_eq!(fs::read(&pulled.disk).unwrap(), qcow2);
    let manifest: Value = serde_json::from_slice(&fs::read(cache.path().join("blobs/sha256").join(hex(&pulled.manifest_digest))).unwrap()).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    // qemu-img agrees with the format found.
    let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(&pulled.disk).output().unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!((info["format"].as_str(), info["virtual-size"].as_u64()), (Some("qcow2"), Some(16 << 20)));
}

#[tokio::test]
async fn whiteouts_and_opaque_directories_decide_the_disk() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(None);
    let cache = tempfile::tempdir().unwrap();
    // A decoy disk below, whited out above next to the real one: with the decoy still
    // there, /disk/ would hold two files and the pull would fail.
    let decoy = noise(64 * 1024, 7);
    let real = raw_disk(8);
    push_image(
        &format!("{}/disks/wh:1", reg.addr()),
        &[
            tar(&[E::Dir("disk/"), E::File("disk/decoy.img", &decoy), E::File("etc/os-release", b"x")]),
            tar(&[E::File("disk/.wh.decoy.img", b""), E::File("disk/real.img", &real)]),
        ],
        &[],
    );
    let pulled = pull(&format!("{}/disks/wh:1", reg.addr()), cache.path()).await.unwrap();
    assert_eq!(fs::read(&pulled.disk).unwrap(), real);

    // An opaque /disk in the upper layer hides both lower files but keeps its own.
    let upper = raw_disk(9);
    push_image(
        &format!("{}/disks/opq:1", reg.addr()),
        &[
            tar(&[E::File("disk/a.img", &decoy), E::File("disk/b.img", &decoy)]),
            tar(&[E::Dir("disk/"), E::File("disk/.wh..wh..opq", b""), E::File("disk/c.img", &upper)]),
        ],
        &[],
    );
    let pulled = pull(&format!("{}/disks/opq:1", reg.addr()), cache.path()).await.unwrap();
    assert_eq!(fs::read(&pulled.disk).unwrap(), upper);
    // No candidate file is left behind anywhere in the cache.
    assert!(files_in(&cache.path().join("tmp")).is_empty());
    for img in images::list(cache.path()).unwrap() {
        assert_eq!(files_in(img.disk.parent().unwrap()), ["disk.img", "image.json", "last-used"]);
    }
}

#[tokio::test]
async fn an_index_resolves_to_linux_amd64() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(None);
    let cache = tempfile::tempdir().unwrap();
    let arm = noise(4096, 11);
    let amd = noise(4096, 12);
    let layout = Layout::new();
    // arm64 first: the amd64 entry must be chosen, not the first.
    let a = layout.image(&[tar(&[E::File("disk/d.img", &arm)])], "arm64");
    let b = layout.image(&[tar(&[E::File("disk/d.img", &amd)])], "amd64");
    let index = layout.index(&[(a.clone(), "arm64"), (b, "amd64")]);
    layout.tag(&index);
    layout.push(&format!("{}/multi/oci:1", reg.addr()), &["--all"]);
    let pulled = pull(&format!("{}/multi/oci:1", reg.addr()), cache.path()).await.unwrap();
    assert_eq!(fs::read(&pulled.disk).unwrap(), amd);
    let meta: Value = serde_json::from_slice(&fs::read(pulled.disk.with_file_name("image.json")).unwrap()).unwrap();
    assert!(meta["index_digest"].is_string(), "{meta}");

    // The same as a Docker manifest list.
    layout.push(&format!("{}/multi/docker:1", reg.addr()), &["--all", "-f", "v2s2"]);
    let pulled = pull(&format!("{}/multi/docker:1", reg.addr()), cache.path()).await.unwrap();
    assert_eq!(fs::read(&pulled.disk).unwrap(), amd);
    let index: Value = serde_json::from_slice(&fs::read(cache.path().join("blobs/sha256").join(hex(meta["index_digest"].as_str().unwrap()))).unwrap()).unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);

    // No amd64: a clear error naming what there is.
    let arm_only = layout.index(&[(a, "arm64")]);
    layout.tag(&arm_only);
    layout.push(&format!("{}/multi/arm:1", reg.addr()), &["--all"]);
    let e = pull(&format!("{}/multi/arm:1", reg.addr()), cache.path()).await.unwrap_err();
    assert!(matches!(e, ImageError::NoPlatform { .. }), "{e}");
    assert_eq!(e.to_string(), format!("image {}/multi/arm:1 has no linux/amd64 variant; its index lists linux/arm64", reg.addr()));
}

#[tokio::test]
async fn zstd_and_gzip_layers() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(None);
    let cache = tempfile::tempdir().unwrap();
    // Different disks: skopeo would reuse a blob it pushed already, whatever its compression.
    for (repo, format, magic, seed) in [("c/zstd", "zstd", &[0x28u8, 0xb5, 0x2f, 0xfd][..], 21), ("c/gzip", "gzip", &[0x1f, 0x8b][..], 22)] {
        let disk = raw_disk(seed);
        let layers = [tar(&[E::File("disk/a.img", &disk)]), tar(&[E::File("etc/hostname", format.as_bytes())])];
        push_image(&format!("{}/{repo}:1", reg.addr()), &layers, &["--dest-compress-format", format]);
        for layer in reg.layers(repo, "1") {
            assert!(fs::read(reg.blob_file(&layer)).unwrap().starts_with(magic), "{repo} was not pushed with the compression asked");
        }
        let pulled = pull(&format!("{}/{repo}:1", reg.addr()), cache.path()).await.unwrap();
        assert_eq!(fs::read(&pulled.disk).unwrap(), disk, "{repo}");
    }
}

#[tokio::test]
async fn missing_tags_and_disks_are_clear_errors() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(None);
    let cache = tempfile::tempdir().unwrap();
    push_image(&format!("{}/d/ok:1", reg.addr()), &[tar(&[E::File("disk/a.img", b"a")])], &[]);
    let e = pull(&format!("{}/d/ok:nope", reg.addr()), cache.path()).await.unwrap_err();
    assert!(matches!(e, ImageError::NotFound { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("image {0}/d/ok:nope was not found: registry {0} answered manifest unknown (for its manifest)", reg.addr()));
    let e = pull(&format!("{}/d/never-pushed:1", reg.addr()), cache.path()).await.unwrap_err();
    assert!(matches!(e, ImageError::NotFound { .. }), "{e:?}");

    push_image(&format!("{}/d/two:1", reg.addr()), &[tar(&[E::File("disk/a.img", b"a"), E::File("disk/b.qcow2", b"b")])], &[]);
    let e = pull(&format!("{}/d/two:1", reg.addr()), cache.path()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("image {}/d/two:1 has more than one file in /disk/ (/disk/a.img, /disk/b.qcow2); KubeVirt boots only one: keep one, or give containerDisk.path", reg.addr())
    );
    // containerDisk.path chooses.
    let mut req = request(&format!("{}/d/two:1", reg.addr()), cache.path());
    req.disk_path = Some("/disk/b.qcow2".into());
    assert_eq!(fs::read(images::pull(&req).await.unwrap().disk).unwrap(), b"b");

    push_image(&format!("{}/d/none:1", reg.addr()), &[tar(&[E::File("usr/share/x", b"x")])], &[]);
    let e = pull(&format!("{}/d/none:1", reg.addr()), cache.path()).await.unwrap_err();
    assert!(matches!(e, ImageError::NoDisk { .. }), "{e:?}");
    assert!(e.to_string().contains("has no disk: it has no /disk/ directory"), "{e}");
    // Only the one good image was kept; nothing half-made.
    assert_eq!(images::list(cache.path()).unwrap().len(), 1);
    assert!(files_in(&cache.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn credentials_basic_auth_from_files_and_secrets() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(Some(("alice", "s3cret:x")));
    push_image(&format!("{}/private/img:1", reg.addr()), &[tar(&[E::File("disk/a.img", b"private disk")])], &["--dest-creds", "alice:s3cret:x"]);
    let reference = format!("{}/private/img:1", reg.addr());
    let work = tempfile::tempdir().unwrap();
    let fresh = |name: &str| work.path().join(name);

    let e = pull(&reference, &fresh("c1")).await.unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("registry {} refused access to {reference} with no credentials (none for {} in ", reg.addr(), reg.addr())), "{e}");

    let mut req = request(&reference, &fresh("c2"));
    req.auth = Auth::Basic { username: "alice".into(), password: "wrong".into() };
    let e = images::pull(&req).await.unwrap_err();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("with user `alice` from the request"), "{e}");

    // A docker config file, as $REGISTRY_AUTH_FILE names it.
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
    let file = work.path().join("auth.json");
    fs::write(&file, json!({"auths": {reg.addr(): {"auth": auth}}}).to_string()).unwrap();
    let mut req = request(&reference, &fresh("c3"));
    req.auth_file = Some(file.clone());
    assert_eq!(fs::read(images::pull(&req).await.unwrap().disk).unwrap(), b"private disk");

    // A kubernetes.io/dockerconfigjson Secret's .dockerconfigjson.
    let mut req = request(&reference, &fresh("c4"));
    req.auth = Auth::DockerConfigJson(json!({"auths": {format!("http://{}", reg.addr()): {"username": "alice", "password": "s3cret:x"}}}).to_string().into_bytes());
    assert_eq!(fs::read(images::pull(&req).await.unwrap().disk).unwrap(), b"private disk");
    let mut req = request(&reference, &fresh("c5"));
    req.auth = Auth::Basic { username: "alice".into(), password: "s3cret:x".into() };
    assert!(images::pull(&req).await.is_ok());
}

#[tokio::test]
async fn a_corrupt_blob_is_refused_and_not_kept() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(None);
    push_image(&format!("{}/bad/img:1", reg.addr()), &[tar(&[E::File("disk/a.img", &raw_disk(31))])], &[]);
    let layer = reg.layers("bad/img", "1").remove(0);
    // Flip one byte in the middle of the registry's copy: same length, other content.
    let path = reg.blob_file(&layer);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = pull(&format!("{}/bad/img:1", reg.addr()), cache.path()).await.unwrap_err();
    let ImageError::DigestMismatch { expected, actual, what, .. } = &e else { panic!("{e:?}") };
    assert_eq!((expected.as_str(), *what), (layer.as_str(), "layer"));
    assert_ne!(actual, expected);
    assert!(e.to_string().contains("nothing of it was kept"), "{e}");
    assert!(!cache.path().join("blobs/sha256").join(hex(&layer)).exists());
    assert!(files_in(&cache.path().join("tmp")).is_empty());
    assert!(files_in(&cache.path().join("disks/sha256")).is_empty());
}

#[tokio::test]
async fn a_stopped_registry_serves_from_cache_unless_always() {
    if !tools_present() {
        return;
    }
    let mut reg = Registry::start(None);
    let reference = format!("{}/off/img:1", reg.addr());
    push_image(&reference, &[tar(&[E::File("disk/a.img", b"cached")])], &[]);
    let cache = tempfile::tempdir().unwrap();
    let first = pull(&reference, cache.path()).await.unwrap();
    reg.stop();
    let again = pull(&reference, cache.path()).await.unwrap();
    assert!(again.from_cache);
    assert_eq!(again.disk, first.disk);
    let mut req = request(&reference, cache.path());
    req.policy = Some(PullPolicy::Never);
    assert!(images::pull(&req).await.unwrap().from_cache);
    req.policy = Some(PullPolicy::Always);
    let e = images::pull(&req).await.unwrap_err();
    assert!(matches!(e, ImageError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("cannot reach registry {} for image {reference}: over HTTPS: ", reg.addr())), "{e}");
    assert!(e.to_string().contains("Connection refused"), "{e}");
    // Never, for an image the cache does not have.
    let mut req = request(&format!("{}/off/other:1", reg.addr()), cache.path());
    req.policy = Some(PullPolicy::Never);
    let e = images::pull(&req).await.unwrap_err();
    assert!(matches!(e, ImageError::NotPresent { .. }), "{e:?}");
    assert!(e.to_string().contains("its imagePullPolicy is Never"), "{e}");
}

/// What the proxy does to blob downloads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Pass,
    /// 16 KiB every 5 ms.
    Slow,
    /// Send half of each blob, then close the connection.
    CutHalfway,
    /// Send half of each blob, then hold the connection until the mode changes.
    StallHalfway,
}

/// An HTTP proxy in front of the registry (one request per connection): counts blob GETs
/// and does to their bodies what its mode says. Anything not HTTP (a TLS handshake) is
/// dropped, as a plain-HTTP registry would.
struct Proxy {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    blob_gets: Arc<Mutex<Vec<String>>>,
    stalled: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Proxy { port, mode: Arc::new(Mutex::new(Mode::Pass)), blob_gets: Arc::default(), stalled: Arc::default() };
        let (mode, gets, stalled) = (p.mode.clone(), p.blob_gets.clone(), p.stalled.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (mode, gets, stalled) = (mode.clone(), gets.clone(), stalled.clone());
                std::thread::spawn(move || {
                    let _ = relay(client, upstream, &mode, &gets, &stalled);
                });
            }
        });
        p
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    fn gets_of(&self, digest: &str) -> usize {
        self.blob_gets.lock().unwrap().iter().filter(|d| *d == digest).count()
    }
}

/// Read up to the end of an HTTP head; returns the head and what was read past it.
fn read_head(s: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((buf, rest));
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("head too long"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn relay(mut client: TcpStream, upstream: u16, mode: &Mutex<Mode>, gets: &Mutex<Vec<String>>, stalled: &AtomicBool) -> std::io::Result<()> {
    let mut first = [0u8; 4];
    client.peek(&mut first)?;
    if !(first.starts_with(b"GET ") || first.starts_with(b"HEAD")) {
        return Ok(());
    }
    let (head, _) = read_head(&mut client)?;
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or_default().to_string();
    let path = line.split(' ').nth(1).unwrap_or_default().to_string();
    let blob = line.starts_with("GET ") && path.contains("/blobs/sha256:");
    if blob {
        gets.lock().unwrap().push(path.rsplit('/').next().unwrap().to_string());
    }
    let mut request = String::new();
    for l in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            request += l;
            request += "\r\n";
        }
    }
    request += "Connection: close\r\n\r\n";
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(request.as_bytes())?;
    let (resp_head, mut pending) = read_head(&mut up)?;
    client.write_all(&resp_head)?;
    let length: Option<usize> = String::from_utf8_lossy(&resp_head)
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok());
    let half = length.unwrap_or(usize::MAX) / 2;
    let mut sent = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let chunk: Vec<u8> = if pending.is_empty() {
            let n = up.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            buf[..n].to_vec()
        } else {
            std::mem::take(&mut pending)
        };
        let m = *mode.lock().unwrap();
        if blob && matches!(m, Mode::CutHalfway | Mode::StallHalfway) && sent + chunk.len() >= half {
            client.write_all(&chunk[..half - sent])?;
            client.flush()?;
            if m == Mode::StallHalfway {
                stalled.store(true, Ordering::SeqCst);
                while *mode.lock().unwrap() == Mode::StallHalfway {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            return Ok(());
        }
        if blob && m == Mode::Slow {
            std::thread::sleep(Duration::from_millis(5));
        }
        client.write_all(&chunk)?;
        sent += chunk.len();
    }
}

/// A registry with one image of a 3 MiB layer (half of it more than the puller buffers),
/// and a proxy in front of it.
fn registry_and_proxy(repo: &str) -> (Registry, Proxy, Vec<u8>, String) {
    let reg = Registry::start(None);
    let disk = noise(3 << 20, 41);
    push_image(&format!("{}/{repo}:1", reg.addr()), &[tar(&[E::File("disk/a.img", &disk)])], &[]);
    let layer = reg.layers(repo, "1").remove(0);
    let proxy = Proxy::start(reg.port);
    (reg, proxy, disk, layer)
}

#[tokio::test]
async fn a_download_cut_halfway_keeps_nothing_and_the_next_pull_succeeds() {
    if !tools_present() {
        return;
    }
    let (_reg, proxy, disk, layer) = registry_and_proxy("cut/img");
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("{}/cut/img:1", proxy.addr());
    proxy.set(Mode::CutHalfway);
    let e = pull(&reference, cache.path()).await.unwrap_err();
    assert!(matches!(e, ImageError::Interrupted { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("the download of layer {layer}")) && e.to_string().contains("nothing of it was kept"), "{e}");
    assert!(!cache.path().join("blobs/sha256").join(hex(&layer)).exists());
    assert!(files_in(&cache.path().join("tmp")).is_empty());
    proxy.set(Mode::Pass);
    assert_eq!(fs::read(pull(&reference, cache.path()).await.unwrap().disk).unwrap(), disk);
    assert_eq!(proxy.gets_of(&layer), 2);
}

/// One pull in a process of its own: `vmform-pull`, the runtime's puller as a command.
fn spawn_child_pull(reference: &str, cache: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vmform-pull"))
        .arg(reference)
        .arg(cache)
        .arg("--auth-file")
        .arg(request(reference, cache).auth_file.unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn child_output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && text.contains("PULLED "), "child pull failed: {text}");
    text
}

#[tokio::test]
async fn a_pull_killed_mid_download_leaves_nothing_trusted() {
    if !tools_present() {
        return;
    }
    let (_reg, proxy, disk, layer) = registry_and_proxy("kill/img");
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("{}/kill/img:1", proxy.addr());
    proxy.set(Mode::StallHalfway);
    let mut child = spawn_child_pull(&reference, cache.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy.stalled.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the child never reached the layer");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Half the layer is sent; let the child write what it got, then SIGKILL it.
    let key = format!("blob-{}.", hex(&layer));
    let partial = || files_in(&cache.path().join("tmp")).into_iter().filter(|f| f.starts_with(&key)).collect::<Vec<_>>();
    let deadline = Instant::now() + Duration::from_secs(10);
    while partial().iter().all(|f| fs::metadata(cache.path().join("tmp").join(f)).map_or(0, |m| m.len()) == 0) {
        assert!(Instant::now() < deadline, "no partial download appeared: {:?}", files_in(&cache.path().join("tmp")));
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.set(Mode::Pass);
    // The half-written layer is only a temporary file, which nothing reads as a blob.
    assert_eq!(partial().len(), 1);
    assert!(!cache.path().join("blobs/sha256").join(hex(&layer)).exists());
    assert!(files_in(&cache.path().join("disks/sha256")).is_empty());
    let mut never = request(&reference, cache.path());
    never.policy = Some(PullPolicy::Never);
    assert!(matches!(images::pull(&never).await, Err(ImageError::NotPresent { .. })));
    // The next pull downloads it again (the dead puller's lock is free), and removes the leftover.
    let pulled = pull(&reference, cache.path()).await.unwrap();
    assert_eq!(fs::read(&pulled.disk).unwrap(), disk);
    assert!(partial().is_empty(), "{:?}", partial());
    assert_eq!(proxy.gets_of(&layer), 2);
}

#[tokio::test]
async fn concurrent_pulls_download_each_blob_once() {
    if !tools_present() {
        return;
    }
    let (_reg, proxy, disk, layer) = registry_and_proxy("dup/img");
    let reference = format!("{}/dup/img:1", proxy.addr());
    proxy.set(Mode::Slow);

    // Two tasks of one process.
    let cache = tempfile::tempdir().unwrap();
    let (a, b) = tokio::join!(pull(&reference, cache.path()), pull(&reference, cache.path()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.disk, b.disk);
    assert_eq!(fs::read(&a.disk).unwrap(), disk);
    assert_eq!(proxy.gets_of(&layer), 1, "blob GETs: {:?}", proxy.blob_gets.lock().unwrap());
    assert_eq!(a.downloaded + b.downloaded, a.downloaded.max(b.downloaded), "both downloaded");

    // Two processes.
    let cache = tempfile::tempdir().unwrap();
    let children = [spawn_child_pull(&reference, cache.path()), spawn_child_pull(&reference, cache.path())];
    let outs: Vec<String> = children.into_iter().map(child_output).collect();
    assert_eq!(proxy.gets_of(&layer), 2, "blob GETs: {:?}", proxy.blob_gets.lock().unwrap());
    let downloaded: Vec<u64> = outs.iter().map(|o| o.split_whitespace().skip_while(|w| *w != "PULLED").nth(2).unwrap().parse().unwrap()).collect();
    assert!(downloaded.contains(&0), "{outs:?}");
    assert_eq!(images::list(cache.path()).unwrap().len(), 1);
    assert_eq!(fs::read(&images::list(cache.path()).unwrap()[0].disk).unwrap(), disk);
}

#[tokio::test]
async fn peak_memory_does_not_grow_with_the_image() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start(None);
    let mut peaks = Vec::new();
    for (repo, mib) in [("mem/small", 4usize), ("mem/large", 64)] {
        // Noise: the gzip layer is as large as the disk, so the download is too.
        let disk = noise(mib << 20, mib as u64);
        push_image(&format!("{}/{repo}:1", reg.addr()), &[tar(&[E::File("disk/a.img", &disk)])], &[]);
        drop(disk);
        let cache = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let out = child_output(spawn_child_pull(&format!("{}/{repo}:1", reg.addr()), cache.path()));
        let elapsed = t.elapsed();
        let peak: u64 = out.split_whitespace().skip_while(|w| *w != "PULLED").nth(3).unwrap().parse().unwrap();
        eprintln!("{repo}: {mib} MiB layer pulled in {elapsed:?} (debug build), peak RSS {} MiB", peak / 1024);
        peaks.push(peak);
    }
    // Sixteen times the image, not sixteen times the memory: a whole-blob buffer anywhere
    // would add 60 MiB.
    assert!(peaks[1] < peaks[0] + 24 * 1024, "peak RSS {} KiB for 4 MiB, {} KiB for 64 MiB", peaks[0], peaks[1]);
}

#[tokio::test]
async fn tls_registries_with_a_given_ca_or_listed_insecure() {
    if !tools_present() {
        return;
    }
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.clone().self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    // Credentials over TLS, as a real private registry has them.
    let reg = Registry::start_with(Some(("bob", "pw")), Some((&cert.pem(), &key.serialize_pem())));
    let reference = format!("{}/tls/img:1", reg.addr());
    push_image(&reference, &[tar(&[E::File("disk/a.img", b"over tls")])], &["--dest-creds", "bob:pw"]);
    let work = tempfile::tempdir().unwrap();
    let with = |cache: &str| {
        let mut r = request(&reference, &work.path().join(cache));
        r.auth = Auth::Basic { username: "bob".into(), password: "pw".into() };
        r
    };

    let mut req = with("a");
    req.ca_certs = vec![ca.pem().into_bytes()];
    assert_eq!(fs::read(images::pull(&req).await.unwrap().disk).unwrap(), b"over tls");

    // Without the CA: HTTPS fails on the certificate; plain HTTP (allowed on loopback) gets
    // the TLS server's 400. The error says both.
    let e = images::pull(&with("b")).await.unwrap_err();
    let text = e.to_string();
    eprintln!("without the CA: {text}");
    assert!(text.contains("after HTTPS failed") && text.to_lowercase().contains("certificate"), "{text}");

    // Listed insecure: the certificate is not checked.
    let mut req = with("c");
    req.insecure = vec![reg.addr()];
    assert_eq!(fs::read(images::pull(&req).await.unwrap().disk).unwrap(), b"over tls");
}
