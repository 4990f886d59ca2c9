//! Local volumes: blank creation, http(s) imports of raw, qcow2 and compressed images from a
//! server started here on 127.0.0.1, errors that leave nothing behind, progress,
//! cancellation, deletion. Uses the real `qemu-img`, `gzip` and `xz` (Debian packages
//! qemu-utils, gzip, xz-utils).

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use vmform_runtime::volumes::{
    self, Compression, DataVolumeTemplate, ImageFormat, ImportPhase, Progress, Provisioned, Source, VolumeError,
};

const MIB: u64 = 1 << 20;

/// What the test server answers on a path.
#[derive(Clone)]
enum Reply {
    /// 200 with Content-Length.
    Body(Vec<u8>),
    /// 200 without Content-Length: the body ends when the connection closes.
    NoLength(Vec<u8>),
    /// 200 claiming `claimed` bytes, sending `body` and closing.
    Truncated { body: Vec<u8>, claimed: u64 },
}

/// A tiny HTTP/1.1 server: one thread per connection, `Connection: close`.
struct Server {
    addr: SocketAddr,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<AtomicUsize>,
    /// The request headers of the last request, lowercased names.
    last_headers: Arc<Mutex<Vec<(String, String)>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let last_headers: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (r, h, l) = (replies.clone(), hits.clone(), last_headers.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (r, h, l) = (r.clone(), h.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &r, &h, &l);
                });
            }
        });
        Server { addr, replies, hits, last_headers }
    }

    fn put(&self, path: &str, reply: Reply) -> String {
        self.replies.lock().unwrap().insert(path.to_string(), reply);
        self.url(path)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn serve(
    stream: TcpStream,
    replies: &Mutex<HashMap<String, Reply>>,
    hits: &AtomicUsize,
    last_headers: &Mutex<Vec<(String, String)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    *last_headers.lock().unwrap() = headers;
    hits.fetch_add(1, Ordering::SeqCst);
    let reply = replies.lock().unwrap().get(&path).cloned();
    let mut out = stream;
    match reply {
        None => {
            out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")?;
        }
        Some(Reply::Body(body)) => {
            write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
            out.write_all(&body)?;
        }
        Some(Reply::NoLength(body)) => {
            out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            out.write_all(&body)?;
        }
        Some(Reply::Truncated { body, claimed }) => {
            write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n")?;
            out.write_all(&body)?;
        }
    }
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (qemu-img is in Debian's qemu-utils)"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// An 8 MiB raw image with recognisable bytes at the start, in the middle and at the end,
/// zeros elsewhere.
fn raw_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; 8 * MIB as usize];
    bytes[..20].copy_from_slice(b"VMFORM-VOLUME-START\n");
    let mut x: u32 = 12345;
    for b in &mut bytes[3 * MIB as usize..3 * MIB as usize + 65536] {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    let end = bytes.len() - 18;
    bytes[end..].copy_from_slice(b"VMFORM-VOLUME-END\n");
    let path = dir.join("disk.raw");
    fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn qcow2_of(raw: &Path) -> Vec<u8> {
    let out = raw.with_extension("qcow2");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(raw).arg(&out));
    fs::read(out).unwrap()
}

fn compress(tool: &str, bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool)
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn http_template(name: &str, url: &str, size: Option<&str>) -> DataVolumeTemplate {
    let mut storage = json!({});
    if let Some(size) = size {
        storage = json!({"resources": {"requests": {"storage": size}}});
    }
    DataVolumeTemplate::parse(&json!({
        "metadata": {"name": name},
        "spec": {"source": {"http": {"url": url}}, "storage": storage}
    }))
    .unwrap()
}

fn blank_template(name: &str, size: &str) -> DataVolumeTemplate {
    DataVolumeTemplate::parse(&json!({
        "metadata": {"name": name},
        "spec": {"source": {"blank": {}}, "pvc": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}
    }))
    .unwrap()
}

/// Provision, collecting the progress reports.
fn provision(volumes: &Path, t: &DataVolumeTemplate) -> (Result<Provisioned, VolumeError>, Vec<Progress>) {
    let mut seen = Vec::new();
    let r = volumes::provision(volumes, "default", t, &mut |p| seen.push(p), &AtomicBool::new(false));
    (r, seen)
}

/// Every entry of the namespace's directory, hidden ones too.
fn entries(volumes: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(volumes.join("default")) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn assert_increasing_to_100(progress: &[Progress], phase: ImportPhase) {
    let of_phase: Vec<&Progress> = progress.iter().filter(|p| p.phase == phase).collect();
    assert!(of_phase.len() >= 2, "{phase:?}: {progress:?}");
    for w in of_phase.windows(2) {
        assert!(w[1].done >= w[0].done, "{phase:?} went back: {progress:?}");
        assert!(w[1].percent() >= w[0].percent(), "{phase:?} went back: {progress:?}");
    }
    assert_eq!(of_phase[0].done, 0);
    assert_eq!(of_phase.last().unwrap().percent(), Some(100.0), "{progress:?}");
}

#[test]
fn blank_volume_is_sparse_of_the_requested_size_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let volumes = tmp.path().join("volumes");
    let t = blank_template("web-0-data", "10Gi");
    let (r, progress) = provision(&volumes, &t);
    assert_eq!(r.unwrap(), Provisioned::Created);
    assert!(progress.is_empty());
    let path = volumes::claim_path(&volumes, "default", "web-0-data");
    assert_eq!(path, volumes.join("default/web-0-data.img"));
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 10 << 30);
    assert!(meta.blocks() * 512 < MIB, "a blank volume takes no space: {} blocks", meta.blocks());
    assert_eq!(meta.mode() & 0o777, 0o600, "a guest's disk is its owner's only");
    assert_eq!(entries(&volumes), ["web-0-data.img"]);

    // Kept as it is on the next start.
    fs::OpenOptions::new().write(true).open(&path).unwrap().write_all(b"guest data").unwrap();
    let (r, _) = provision(&volumes, &t);
    assert_eq!(r.unwrap(), Provisioned::Existing);
    let mut start = [0u8; 10];
    std::io::Read::read_exact(&mut fs::File::open(&path).unwrap(), &mut start).unwrap();
    assert_eq!(&start, b"guest data");
    assert_eq!(fs::metadata(&path).unwrap().len(), 10 << 30);
}

#[test]
fn raw_import_keeps_the_bytes_grows_to_the_size_and_stays_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, bytes) = raw_image(tmp.path());
    let server = Server::start();
    let url = server.put("/disk.img", Reply::Body(bytes.clone()));
    let volumes = tmp.path().join("volumes");
    let (r, progress) = provision(&volumes, &http_template("os", &url, Some("32Mi")));
    assert_eq!(r.unwrap(), Provisioned::Imported { format: ImageFormat::Raw, compression: None, downloaded: bytes.len() as u64 });
    let path = volumes::claim_path(&volumes, "default", "os");
    let got = fs::read(&path).unwrap();
    assert_eq!(got.len() as u64, 32 * MIB);
    assert!(got[..bytes.len()] == bytes[..], "the image's bytes survive");
    assert!(got[bytes.len()..].iter().all(|b| *b == 0));
    // Only the blocks with data take space (the zeros of the image are holes).
    assert!(fs::metadata(&path).unwrap().blocks() * 512 < MIB, "{} blocks", fs::metadata(&path).unwrap().blocks());
    assert_increasing_to_100(&progress, ImportPhase::Downloading);
    assert!(progress.iter().all(|p| p.phase == ImportPhase::Downloading && p.total == Some(bytes.len() as u64)));
    assert!(progress.len() > 10, "reported as it goes: {progress:?}");
    assert_eq!(progress.last().unwrap().to_string(), "importing: 100% (8.0 MiB of 8.0 MiB)");
    assert_eq!(entries(&volumes), ["os.img"], "no temporary file is left");
}

#[test]
fn qcow2_import_is_converted_to_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, bytes) = raw_image(tmp.path());
    let qcow2 = qcow2_of(&raw);
    assert_eq!(&qcow2[..4], b"QFI\xfb");
    let server = Server::start();
    let url = server.put("/images/disk.qcow2", Reply::Body(qcow2.clone()));
    let volumes = tmp.path().join("volumes");
    let (r, progress) = provision(&volumes, &http_template("os", &url, Some("16Mi")));
    assert_eq!(r.unwrap(), Provisioned::Imported { format: ImageFormat::Qcow2, compression: None, downloaded: qcow2.len() as u64 });
    let got = fs::read(volumes::claim_path(&volumes, "default", "os")).unwrap();
    assert_eq!(got.len() as u64, 16 * MIB);
    assert!(got[..bytes.len()] == bytes[..], "the bytes survive qcow2 → raw");
    assert!(got[bytes.len()..].iter().all(|b| *b == 0));
    assert_increasing_to_100(&progress, ImportPhase::Downloading);
    assert_increasing_to_100(&progress, ImportPhase::Converting);
    let first_converting = progress.iter().position(|p| p.phase == ImportPhase::Converting).unwrap();
    assert!(progress[first_converting..].iter().all(|p| p.phase == ImportPhase::Converting), "converting comes after downloading");
    assert!(progress[first_converting..].iter().all(|p| p.total == Some(bytes.len() as u64)), "in bytes of the virtual size");
    assert_eq!(progress.last().unwrap().to_string(), "converting: 100%");
    assert_eq!(entries(&volumes), ["os.img"]);
}

#[test]
fn an_import_without_a_size_gets_the_image_size() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, bytes) = raw_image(tmp.path());
    let server = Server::start();
    let url = server.put("/disk.qcow2", Reply::Body(qcow2_of(&raw)));
    let volumes = tmp.path().join("volumes");
    let (r, _) = provision(&volumes, &http_template("os", &url, None));
    assert!(matches!(r.unwrap(), Provisioned::Imported { format: ImageFormat::Qcow2, .. }));
    assert_eq!(fs::read(volumes::claim_path(&volumes, "default", "os")).unwrap(), bytes);
}

#[test]
fn compressed_images_are_decompressed() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, bytes) = raw_image(tmp.path());
    let server = Server::start();
    let gz = server.put("/disk.qcow2.gz", Reply::Body(compress("gzip", &qcow2_of(&raw))));
    let xz = server.put("/disk.img.xz", Reply::Body(compress("xz", &bytes)));
    let volumes = tmp.path().join("volumes");

    let (r, progress) = provision(&volumes, &http_template("from-gz", &gz, Some("8Mi")));
    assert!(
        matches!(r.as_ref().unwrap(), Provisioned::Imported { format: ImageFormat::Qcow2, compression: Some(Compression::Gzip), .. }),
        "{r:?}"
    );
    assert_increasing_to_100(&progress, ImportPhase::Downloading);
    assert_increasing_to_100(&progress, ImportPhase::Converting);
    assert_eq!(fs::read(volumes::claim_path(&volumes, "default", "from-gz")).unwrap(), bytes);

    let (r, _) = provision(&volumes, &http_template("from-xz", &xz, Some("8Mi")));
    assert!(
        matches!(r.as_ref().unwrap(), Provisioned::Imported { format: ImageFormat::Raw, compression: Some(Compression::Xz), .. }),
        "{r:?}"
    );
    let path = volumes::claim_path(&volumes, "default", "from-xz");
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert!(fs::metadata(&path).unwrap().blocks() * 512 < MIB, "decompressed sparse");
    assert_eq!(entries(&volumes), ["from-gz.img", "from-xz.img"]);
}

#[test]
fn a_corrupt_compressed_image_fails_with_the_tools_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, bytes) = raw_image(tmp.path());
    let mut gz = compress("gzip", &bytes);
    let mid = gz.len() / 2;
    gz.truncate(mid); // a complete response of an incomplete gzip stream
    let server = Server::start();
    let url = server.put("/disk.img.gz", Reply::Body(gz));
    let volumes = tmp.path().join("volumes");
    let (r, _) = provision(&volumes, &http_template("os", &url, Some("8Mi")));
    let e = r.unwrap_err();
    assert!(matches!(e, VolumeError::Decompress { tool: "gzip", .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("data volume `os`: the image at {url} is gzip-compressed, and decompressing it failed: ")), "{msg}");
    assert!(msg.contains("unexpected end of file"), "gzip's own words: {msg}");
    assert!(entries(&volumes).is_empty(), "{:?}", entries(&volumes));
}

#[test]
fn a_response_without_length_reports_its_bytes_and_ends_at_100() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, bytes) = raw_image(tmp.path());
    let server = Server::start();
    let url = server.put("/disk.img", Reply::NoLength(bytes.clone()));
    let volumes = tmp.path().join("volumes");
    let (r, progress) = provision(&volumes, &http_template("os", &url, Some("8Mi")));
    assert!(matches!(r.unwrap(), Provisioned::Imported { format: ImageFormat::Raw, .. }));
    assert_eq!(fs::read(volumes::claim_path(&volumes, "default", "os")).unwrap(), bytes);
    assert_eq!(progress[0], Progress { phase: ImportPhase::Downloading, done: 0, total: None });
    assert_eq!(progress[0].to_string(), "importing: 0 B");
    assert_eq!(*progress.last().unwrap(), Progress { phase: ImportPhase::Downloading, done: bytes.len() as u64, total: Some(bytes.len() as u64) });
}

#[test]
fn http_404_is_a_clear_error_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start();
    let url = server.url("/missing.qcow2");
    let volumes = tmp.path().join("volumes");
    let (r, _) = provision(&volumes, &http_template("os", &url, Some("1Gi")));
    let e = r.unwrap_err();
    assert!(matches!(e, VolumeError::HttpStatus { status: 404, .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("data volume `os`: {url} answered HTTP 404 Not Found"));
    assert!(entries(&volumes).is_empty(), "{:?}", entries(&volumes));
    assert!(!volumes::claim_path(&volumes, "default", "os").exists());
}

#[test]
fn a_truncated_download_is_an_error_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, bytes) = raw_image(tmp.path());
    let server = Server::start();
    let url = server.put("/disk.img", Reply::Truncated { body: bytes[..3 * MIB as usize].to_vec(), claimed: bytes.len() as u64 });
    let volumes = tmp.path().join("volumes");
    let (r, progress) = provision(&volumes, &http_template("os", &url, Some("8Mi")));
    let e = r.unwrap_err();
    let VolumeError::Truncated { received, expected, .. } = &e else { panic!("{e:?}") };
    assert_eq!((*received, *expected), (3 * MIB, 8 * MIB));
    assert_eq!(
        e.to_string(),
        format!("data volume `os`: the download of {url} stopped after 3145728 of 8388608 bytes (the server closed the connection early); nothing was kept, the next start tries again")
    );
    assert!(progress.iter().all(|p| p.percent() < Some(100.0)));
    assert!(entries(&volumes).is_empty(), "{:?}", entries(&volumes));

    // The next start, with the server fixed, imports it.
    server.put("/disk.img", Reply::Body(bytes.clone()));
    let (r, _) = provision(&volumes, &http_template("os", &url, Some("8Mi")));
    assert!(matches!(r.unwrap(), Provisioned::Imported { .. }));
    assert_eq!(fs::read(volumes::claim_path(&volumes, "default", "os")).unwrap(), bytes);
}

#[test]
fn an_unreachable_server_names_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nobody listens on: bind, note it, close.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/disk.img");
    let volumes = tmp.path().join("volumes");
    let (r, _) = provision(&volumes, &http_template("os", &url, Some("1Gi")));
    let e = r.unwrap_err();
    assert!(matches!(e, VolumeError::Download { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("data volume `os`: downloading {url} failed: Connection refused (os error 111)"));
    assert!(entries(&volumes).is_empty());
}

#[test]
fn an_existing_volume_is_not_touched_nor_downloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start();
    let url = server.put("/disk.img", Reply::Body(vec![1; 4096]));
    let volumes = tmp.path().join("volumes");
    let path = volumes::claim_path(&volumes, "default", "os");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, b"the guest's own data").unwrap();
    let before = fs::metadata(&path).unwrap().modified().unwrap();
    let (r, progress) = provision(&volumes, &http_template("os", &url, Some("1Gi")));
    assert_eq!(r.unwrap(), Provisioned::Existing);
    assert!(progress.is_empty());
    assert_eq!(server.hits(), 0);
    assert_eq!(fs::read(&path).unwrap(), b"the guest's own data");
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
}

#[test]
fn two_provisions_of_one_claim_import_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, bytes) = raw_image(tmp.path());
    let server = Server::start();
    let url = server.put("/disk.qcow2", Reply::Body(qcow2_of(&raw)));
    let volumes = tmp.path().join("volumes");
    let t = http_template("os", &url, Some("8Mi"));
    let results: Vec<Provisioned> = std::thread::scope(|s| {
        let a = s.spawn(|| provision(&volumes, &t).0.unwrap());
        let b = s.spawn(|| provision(&volumes, &t).0.unwrap());
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    assert_eq!(results.iter().filter(|r| **r == Provisioned::Existing).count(), 1, "{results:?}");
    assert_eq!(server.hits(), 1);
    assert_eq!(fs::read(volumes::claim_path(&volumes, "default", "os")).unwrap(), bytes);
    assert_eq!(entries(&volumes), ["os.img"]);
}

#[test]
fn leftovers_of_an_interrupted_import_are_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let volumes = tmp.path().join("volumes");
    let dir = volumes.join("default");
    fs::create_dir_all(&dir).unwrap();
    // What a killed process leaves: a partial download and conversion, and its lock file.
    for name in [".os.img.download", ".os.img.convert", ".os.lock"] {
        fs::write(dir.join(name), b"partial").unwrap();
    }
    let (r, _) = provision(&volumes, &blank_template("os", "1Mi"));
    assert_eq!(r.unwrap(), Provisioned::Created);
    assert_eq!(entries(&volumes), ["os.img"]);
    assert_eq!(fs::read(dir.join("os.img")).unwrap(), vec![0; MIB as usize]);
}

#[test]
fn cancelling_stops_the_download_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, _) = raw_image(tmp.path());
    let server = Server::start();
    let url = server.put("/disk.img", Reply::Body(fs::read(&raw).unwrap()));
    let volumes = tmp.path().join("volumes");
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let r = volumes::provision(
        &volumes,
        "default",
        &http_template("os", &url, Some("8Mi")),
        &mut |p| {
            seen.push(p);
            if p.done > 0 {
                cancel.store(true, Ordering::SeqCst);
            }
        },
        &cancel,
    );
    let e = r.unwrap_err();
    assert!(matches!(e, VolumeError::Cancelled { .. }), "{e:?}");
    assert_eq!(e.to_string(), "data volume `os`: the import was cancelled");
    assert!(seen.last().unwrap().percent() < Some(100.0), "{seen:?}");
    assert!(entries(&volumes).is_empty(), "{:?}", entries(&volumes));
}

#[test]
fn cancelling_stops_the_conversion_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, _) = raw_image(tmp.path());
    let server = Server::start();
    let url = server.put("/disk.qcow2", Reply::Body(qcow2_of(&raw)));
    let volumes = tmp.path().join("volumes");
    let cancel = AtomicBool::new(false);
    let r = volumes::provision(
        &volumes,
        "default",
        &http_template("os", &url, Some("8Mi")),
        &mut |p| {
            if p.phase == ImportPhase::Converting {
                cancel.store(true, Ordering::SeqCst);
            }
        },
        &cancel,
    );
    assert!(matches!(r, Err(VolumeError::Cancelled { .. })), "{r:?}");
    assert!(entries(&volumes).is_empty(), "{:?}", entries(&volumes));
}

#[test]
fn an_image_larger_than_the_request_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, _) = raw_image(tmp.path());
    let server = Server::start();
    let url = server.put("/disk.qcow2", Reply::Body(qcow2_of(&raw)));
    let volumes = tmp.path().join("volumes");
    let (r, _) = provision(&volumes, &http_template("os", &url, Some("4Mi")));
    let e = r.unwrap_err();
    assert!(matches!(e, VolumeError::TooLarge { image_size: 8388608, requested: 4194304, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("data volume `os`: the image at {url} has a virtual size of 8.0 MiB (8388608 bytes), larger than the 4.0 MiB requested; request at least that much storage")
    );
    assert!(entries(&volumes).is_empty(), "{:?}", entries(&volumes));
}

#[test]
fn a_qcow2_with_a_backing_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, _) = raw_image(tmp.path());
    let overlay = tmp.path().join("overlay.qcow2");
    run(Command::new("qemu-img").args(["create", "-f", "qcow2", "-F", "raw", "-b"]).arg(&raw).arg(&overlay));
    let server = Server::start();
    let url = server.put("/overlay.qcow2", Reply::Body(fs::read(&overlay).unwrap()));
    let volumes = tmp.path().join("volumes");
    let (r, _) = provision(&volumes, &http_template("os", &url, Some("8Mi")));
    let e = r.unwrap_err();
    assert!(matches!(e, VolumeError::UnsupportedImage { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("has a backing file ({})", raw.display())), "{e}");
    assert!(entries(&volumes).is_empty(), "{:?}", entries(&volumes));
}

#[test]
fn a_qcow2_with_an_external_data_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, _) = raw_image(tmp.path());
    let image = tmp.path().join("external.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "-o"])
        .arg(format!("data_file={},data_file_raw=on", raw.display()))
        .arg(&image)
        .arg("8M"));
    let server = Server::start();
    let url = server.put("/external.qcow2", Reply::Body(fs::read(&image).unwrap()));
    let volumes = tmp.path().join("volumes");
    let (r, _) = provision(&volumes, &http_template("os", &url, Some("8Mi")));
    let e = r.unwrap_err();
    assert!(matches!(e, VolumeError::UnsupportedImage { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("keeps its data in an external file ({})", raw.display())), "{e}");
    assert!(entries(&volumes).is_empty(), "{:?}", entries(&volumes));
}

#[test]
fn other_image_formats_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (raw, _) = raw_image(tmp.path());
    let vmdk = tmp.path().join("disk.vmdk");
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "vmdk"]).arg(&raw).arg(&vmdk));
    let server = Server::start();
    let url = server.put("/disk.vmdk", Reply::Body(fs::read(&vmdk).unwrap()));
    let volumes = tmp.path().join("volumes");
    let (r, _) = provision(&volumes, &http_template("os", &url, Some("8Mi")));
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("data volume `os`: the image at {url} cannot be imported: it is a vmdk image; the local runtime imports raw and qcow2 images (convert it with `qemu-img convert -O qcow2`)")
    );
    assert!(entries(&volumes).is_empty(), "{:?}", entries(&volumes));
}

#[test]
fn extra_headers_are_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start();
    let url = server.put("/disk.img", Reply::Body(vec![7; 4096]));
    let t = DataVolumeTemplate::parse(&json!({
        "metadata": {"name": "os"},
        "spec": {"source": {"http": {"url": url, "extraHeaders": ["X-Auth-Token: secret-token"]}}, "storage": {}}
    }))
    .unwrap();
    let (r, _) = provision(&tmp.path().join("volumes"), &t);
    r.unwrap();
    let headers = server.last_headers.lock().unwrap().clone();
    assert!(headers.contains(&("x-auth-token".into(), "secret-token".into())), "{headers:?}");
}

#[test]
fn sources_the_local_runtime_cannot_provide_are_refused() {
    let vm: Value = json!({"spec": {"dataVolumeTemplates": [
        {"metadata": {"name": "web-0-data"}, "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}},
        {"metadata": {"name": "web-0-os"}, "spec": {"source": {"registry": {"url": "docker://quay.io/containerdisks/debian:12", "secretRef": "pull"}}, "storage": {"resources": {"requests": {"storage": "10Gi"}}}}}
    ]}});
    let e = DataVolumeTemplate::parse_all(&vm).unwrap_err();
    assert_eq!(
        e.to_string(),
        "data volume `web-0-os`: the local runtime cannot provide a `registry.secretRef` source: the local runtime cannot use credentials from a Secret (it reads ~/.docker/config.json and $REGISTRY_AUTH_FILE); use a docker:// URL it can pull as it is"
    );
    let e = DataVolumeTemplate::parse(&json!({
        "metadata": {"name": "clone"},
        "spec": {"source": {"pvc": {"namespace": "default", "name": "golden"}}, "storage": {}}
    }))
    .unwrap_err();
    assert!(e.to_string().starts_with("data volume `clone`: the local runtime cannot provide a `pvc` source: cloning another claim"), "{e}");
    // What vmform's own language emits for `source="https://…"` parses.
    let t = DataVolumeTemplate::parse(&json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "web-0-os"},
        "spec": {"source": {"http": {"url": "https://example.invalid/debian.qcow2"}}, "storage": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}, "storageClassName": "fast"}}
    }))
    .unwrap();
    assert_eq!(t.source, Source::Http { url: "https://example.invalid/debian.qcow2".into(), extra_headers: vec![] });
    assert_eq!(t.size, Some(10 << 30));
}

#[test]
fn delete_removes_the_volume_and_leftovers_and_accepts_a_missing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let volumes = tmp.path().join("volumes");
    // Nothing at all yet.
    volumes::delete(&volumes, "default", "os").unwrap();
    let (r, _) = provision(&volumes, &blank_template("os", "1Gi"));
    r.unwrap();
    let (r, _) = provision(&volumes, &blank_template("other", "1Gi"));
    r.unwrap();
    fs::write(volumes.join("default/.os.img.download"), b"partial").unwrap();
    volumes::delete(&volumes, "default", "os").unwrap();
    assert_eq!(entries(&volumes), ["other.img"]);
    volumes::delete(&volumes, "default", "os").unwrap();
    // A deleted volume is made anew on the next provision.
    let (r, _) = provision(&volumes, &blank_template("os", "1Gi"));
    assert_eq!(r.unwrap(), Provisioned::Created);

    let e = volumes::delete(&volumes, "../etc", "os").unwrap_err();
    assert!(e.to_string().starts_with("`../etc` cannot name a local volume's namespace: "), "{e}");
    let e = volumes::delete(&volumes, "default", "../os").unwrap_err();
    assert!(e.to_string().starts_with("`../os` cannot name a local volume's claim: "), "{e}");
}
