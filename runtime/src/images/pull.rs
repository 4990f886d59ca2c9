//! Talking to the registry (through oci-client): the connection and its scheme, manifests
//! and the platform choice, verified blob downloads; and [`pull`], which puts it together
//! with the cache and the extraction.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::auth::{self, Resolved};
use super::cache::{Cache, ImageMeta, hex, hex_of};
use super::extract::{self, Layer};
use super::reference::{ImageRef, PullPolicy};
use super::{ImageError, PullPhase, Progress, ProgressFn, PullRequest, PulledImage, io_error};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The download stalls if no byte arrives for this long.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A manifest larger than this is not a container image's.
const MAX_MANIFEST: usize = 4 << 20;
/// Progress is reported at each whole percent, and at most this often otherwise.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Pull `request.reference` into the cache (or find it there, as the pull policy says) and
/// return its disk. See the module's doc for what is verified, cached and deduplicated.
pub async fn pull(request: &PullRequest) -> Result<PulledImage, ImageError> {
    let image = ImageRef::parse(&request.reference)?;
    let name = image.to_string();
    let policy = request.policy.unwrap_or_else(|| PullPolicy::default_for(&image));
    let cache = Cache::open(&request.cache_dir)?;
    let _shared = cache.lock_shared().await?;

    if policy != PullPolicy::Always {
        if let Some(meta) = cache.lookup(&image) {
            cache.touch(&meta.manifest_digest);
            return Ok(pulled(&cache, name, &meta, 0, true));
        }
        if policy == PullPolicy::Never {
            return Err(ImageError::NotPresent { image: name, cache: cache.root().to_path_buf() });
        }
    }

    let registry = Registry::connect(&image, request).await?;
    let resolved = registry.resolve().await?;
    let digest = resolved.digest.clone();
    if let Some(meta) = cache.image(&digest) {
        cache.record_ref(&image, &digest)?;
        cache.touch(&digest);
        return Ok(pulled(&cache, name, &meta, 0, false));
    }
    for (bytes, d) in resolved.index.iter().chain(std::iter::once(&(resolved.bytes.clone(), digest.clone()))) {
        store_small_blob(&cache, d, bytes)?;
    }

    let total: u64 = resolved.layers.iter().map(|l| l.size).sum();
    let missing: u64 = resolved.layers.iter().filter(|l| !cache.blob_path(&l.hex).exists()).map(|l| l.size).sum();
    if let Some(free) = crate::disk_files::free_space(cache.root())
        && missing > free
    {
        return Err(ImageError::DiskFull { dir: cache.root().to_path_buf(), free: Some(free) });
    }
    let mut tracker = Tracker::new(request.progress.clone(), PullPhase::Downloading, total);
    let mut downloaded = 0;
    for layer in &resolved.layers {
        downloaded += registry.fetch_blob(&cache, layer, &mut tracker).await?;
    }
    tracker.finish();

    let hex = hex_of(&digest).expect("resolve checks digests").to_string();
    let key = format!("disk-{hex}");
    let lock = cache.lock(&key).await?;
    if cache.image(&digest).is_none() {
        cache.clean_temps(&key);
        let tmp_dir = cache.temp_path(&key);
        std::fs::create_dir(&tmp_dir).map_err(|e| io_error("create", &tmp_dir, e))?;
        let meta_base = ImageMeta {
            manifest_digest: digest.clone(),
            index_digest: resolved.index.as_ref().map(|(_, d)| d.clone()),
            format: super::DiskFormat::Raw,
            size: 0,
            disk_path: String::new(),
            blobs: resolved
                .index
                .iter()
                .map(|(_, d)| d.clone())
                .chain(std::iter::once(digest.clone()))
                .chain(resolved.layers.iter().map(|l| l.digest.clone()))
                .collect(),
        };
        let layers: Vec<Layer> =
            resolved.layers.iter().map(|l| Layer { digest: l.digest.clone(), path: cache.blob_path(&l.hex) }).collect();
        let (image_name, target, max, dir) = (name.clone(), request.disk_path.clone(), request.max_disk_size, tmp_dir.clone());
        let progress = request.progress.clone();
        let made = tokio::task::spawn_blocking(move || -> Result<ImageMeta, ImageError> {
            let mut tracker = Tracker::new(progress, PullPhase::Extracting, total);
            let disk = extract::extract(&image_name, &layers, target.as_deref(), max, &dir, &mut |n| tracker.add(n))?;
            tracker.finish();
            let disk_file = dir.join("disk.img");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&disk_file, std::fs::Permissions::from_mode(0o444)).map_err(|e| io_error("set the mode of", &disk_file, e))?;
            let meta = ImageMeta { format: disk.format, size: disk.size, disk_path: disk.path_in_image, ..meta_base };
            let meta_file = dir.join("image.json");
            crate::files::write_atomically(&meta_file, &serde_json::to_vec_pretty(&meta).expect("image.json serialises"), 0o644)
                .map_err(|e| io_error("write", &meta_file, e))?;
            Ok(meta)
        })
        .await
        .unwrap_or_else(|e| Err(ImageError::UnsupportedImage { image: name.clone(), reason: format!("the extraction failed: {e}") }));
        match made {
            Ok(_) => cache.commit_disk(&tmp_dir, &hex)?,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp_dir);
                return Err(e);
            }
        }
    }
    drop(lock);
    cache.record_ref(&image, &digest)?;
    cache.touch(&digest);
    let meta = cache.image(&digest).ok_or_else(|| ImageError::Io {
        action: "find the image just made in",
        path: cache.root().to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    Ok(pulled(&cache, name, &meta, downloaded, false))
}

fn pulled(cache: &Cache, reference: String, meta: &ImageMeta, downloaded: u64, from_cache: bool) -> PulledImage {
    let hex = hex_of(&meta.manifest_digest).expect("cached images have sha256 digests");
    PulledImage {
        reference,
        manifest_digest: meta.manifest_digest.clone(),
        disk: cache.disk_dir(hex).join("disk.img"),
        format: meta.format,
        size: meta.size,
        downloaded,
        from_cache,
    }
}

/// Keep a manifest (already verified against its digest) as a blob.
fn store_small_blob(cache: &Cache, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let hex = hex_of(digest).expect("resolve checks digests");
    if cache.blob_path(hex).exists() {
        return Ok(());
    }
    // Writers of one digest write the same bytes, each through its own temporary file.
    let tmp = cache.temp_path(&format!("manifest-{hex}"));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::File::open(&tmp)?.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error("write", &tmp, e));
    }
    cache.commit_blob(&tmp, hex)
}

/// Reports bytes done of a total to the caller's callback, not too often.
struct Tracker {
    progress: Option<ProgressFn>,
    phase: PullPhase,
    done: u64,
    total: u64,
    last_percent: u64,
    last: Instant,
}

impl Tracker {
    fn new(progress: Option<ProgressFn>, phase: PullPhase, total: u64) -> Self {
        let t = Tracker { progress, phase, done: 0, total, last_percent: 0, last: Instant::now() };
        t.report();
        t
    }

    fn report(&self) {
        if let Some(p) = &self.progress {
            p(Progress { phase: self.phase, done: self.done.min(self.total), total: self.total });
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        let percent = self.done.min(self.total).saturating_mul(100).checked_div(self.total).unwrap_or(100);
        if percent != self.last_percent || self.last.elapsed() >= PROGRESS_INTERVAL {
            self.last_percent = percent;
            self.last = Instant::now();
            self.report();
        }
    }

    fn finish(&mut self) {
        self.done = self.total;
        self.report();
    }
}

/// A layer of the chosen manifest.
#[derive(Debug, Clone)]
struct LayerDesc {
    digest: String,
    hex: String,
    size: u64,
}

/// What a reference resolved to.
struct Chosen {
    /// The image manifest's bytes and digest.
    bytes: bytes::Bytes,
    digest: String,
    /// The index it was chosen from, if any: bytes and digest.
    index: Option<(bytes::Bytes, String)>,
    layers: Vec<LayerDesc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<Vec<RawDescriptor>>,
    layers: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

enum Parsed {
    Index(Vec<RawDescriptor>),
    Image(Vec<RawDescriptor>),
}

/// A manifest or index, as far as a pull needs it; anything else is a clear error.
fn parse_manifest(image: &str, bytes: &[u8]) -> Result<Parsed, ImageError> {
    let unsupported = |reason: String| ImageError::UnsupportedImage { image: image.to_string(), reason };
    if bytes.len() > MAX_MANIFEST {
        return Err(unsupported(format!("its manifest is {} bytes, more than the {MAX_MANIFEST} a container image's takes", bytes.len())));
    }
    let m: RawManifest = serde_json::from_slice(bytes).map_err(|e| unsupported(format!("its manifest is not a valid OCI or Docker manifest: {e}")))?;
    match m.schema_version {
        Some(2) => {}
        Some(1) => return Err(unsupported("it has a Docker schema 1 manifest, a format registries no longer serve; push it again with a current tool".into())),
        Some(v) => return Err(unsupported(format!("its manifest has schemaVersion {v}; only 2 is known"))),
        None => return Err(unsupported("its manifest has no schemaVersion".into())),
    }
    let media_type = m.media_type.as_deref().unwrap_or("");
    match (m.manifests, m.layers) {
        (Some(list), None) if matches!(media_type, "" | OCI_INDEX | DOCKER_LIST) => Ok(Parsed::Index(list)),
        (None, Some(layers)) if matches!(media_type, "" | OCI_MANIFEST | DOCKER_MANIFEST) => {
            if layers.is_empty() {
                return Err(unsupported("its manifest lists no layers".into()));
            }
            for l in &layers {
                let t = l.media_type.as_str();
                let filesystem = t.is_empty()
                    || t.starts_with("application/vnd.oci.image.layer.")
                    || t.starts_with("application/vnd.docker.image.rootfs.");
                if !filesystem {
                    return Err(unsupported(format!("layer {} has media type {t}, not a file system layer: is it an OCI artifact rather than a container image?", l.digest)));
                }
            }
            Ok(Parsed::Image(layers))
        }
        _ => Err(unsupported(format!("its manifest is neither an image manifest nor an index (media type `{media_type}`)"))),
    }
}

fn descriptor_digest(image: &str, d: &RawDescriptor) -> Result<(String, u64), ImageError> {
    let size = u64::try_from(d.size).map_err(|_| ImageError::UnsupportedImage { image: image.into(), reason: format!("its manifest gives {} a negative size", d.digest) })?;
    hex_of(&d.digest).ok_or_else(|| ImageError::UnsupportedImage {
        image: image.into(),
        reason: format!("its manifest names `{}`, not a sha256 digest", d.digest),
    })?;
    Ok((d.digest.clone(), size))
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()))
}

/// One registry, connected for one image.
struct Registry {
    client: Client,
    auth: RegistryAuth,
    credentials: Resolved,
    image: ImageRef,
    name: String,
    reference: Reference,
    /// Why HTTPS failed, when plain HTTP is used in its place: told with HTTP's errors,
    /// which may only be a symptom (a TLS registry answers plain HTTP with 400).
    https_failure: Option<String>,
}

impl Registry {
    /// Credentials, TLS and scheme for the image's registry, checked with a request to
    /// `/v2/` (which also fetches a bearer token when the registry wants one).
    async fn connect(image: &ImageRef, request: &PullRequest) -> Result<Self, ImageError> {
        // reqwest is built without a crypto provider of its own: use ring, as the rest of
        // the runtime does. Fails harmlessly when one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let credentials = auth::resolve(&request.auth, request.auth_file.as_deref(), image)?;
        let listed = request.insecure.iter().any(|i| i == &image.registry || (!i.contains(':') && i == image.host()));
        let plain_ok = listed || image.is_loopback();
        let reference = image.to_oci();
        let https = Registry::client(image, request, &reference, false, listed)?;
        let mut registry = Registry { client: https, auth: credentials.to_oci(), credentials, image: image.clone(), name: image.to_string(), reference, https_failure: None };
        match registry.client.auth(&registry.reference, &registry.auth, RegistryOperation::Pull).await {
            Ok(_) => Ok(registry),
            Err(OciDistributionError::RequestError(tls)) if plain_ok => {
                // Docker's rule for insecure and loopback registries: HTTPS first, then HTTP.
                registry.client = Registry::client(image, request, &registry.reference, true, listed)?;
                registry.https_failure = Some(chain(&tls));
                match registry.client.auth(&registry.reference, &registry.auth, RegistryOperation::Pull).await {
                    Ok(_) => Ok(registry),
                    Err(e) => Err(registry.map_error(e, "manifest")),
                }
            }
            Err(e) => Err(registry.map_error(e, "manifest")),
        }
    }

    fn client(image: &ImageRef, request: &PullRequest, reference: &Reference, plain: bool, listed: bool) -> Result<Client, ImageError> {
        let config = ClientConfig {
            protocol: if plain { ClientProtocol::HttpsExcept(vec![reference.resolve_registry().to_string()]) } else { ClientProtocol::Https },
            accept_invalid_certificates: listed,
            extra_root_certificates: request.ca_certs.iter().map(|pem| Certificate { encoding: CertificateEncoding::Pem, data: pem.clone() }).collect(),
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: concat!("vmform/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        Client::try_from(config).map_err(|e| ImageError::Unreachable {
            image: image.to_string(),
            registry: image.registry.clone(),
            message: format!("cannot set up the HTTP client (are the CA certificates PEM?): {e}"),
        })
    }

    /// The image's linux/amd64 manifest, its digest checked, and its layers.
    async fn resolve(&self) -> Result<Chosen, ImageError> {
        let (bytes, digest) = self.manifest(&self.reference).await?;
        match parse_manifest(&self.name, &bytes)? {
            Parsed::Image(layers) => Ok(Chosen { layers: self.layers(&layers)?, bytes, digest, index: None }),
            Parsed::Index(entries) => {
                let chosen = entries.iter().find(|e| e.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"));
                let Some(chosen) = chosen else {
                    let available: Vec<String> = entries
                        .iter()
                        .filter_map(|e| e.platform.as_ref())
                        .map(|p| format!("{}/{}{}", p.os, p.architecture, p.variant.as_deref().map(|v| format!("/{v}")).unwrap_or_default()))
                        .collect();
                    return Err(ImageError::NoPlatform {
                        image: self.name.clone(),
                        available: if available.is_empty() { "no platforms".into() } else { available.join(", ") },
                    });
                };
                let (entry_digest, _) = descriptor_digest(&self.name, chosen)?;
                let (m_bytes, m_digest) = self.manifest(&self.reference.clone_with_digest(entry_digest)).await?;
                match parse_manifest(&self.name, &m_bytes)? {
                    Parsed::Image(layers) => Ok(Chosen { layers: self.layers(&layers)?, bytes: m_bytes, digest: m_digest, index: Some((bytes, digest)) }),
                    Parsed::Index(_) => Err(ImageError::UnsupportedImage { image: self.name.clone(), reason: "its linux/amd64 entry is another index, not an image manifest".into() }),
                }
            }
        }
    }

    fn layers(&self, raw: &[RawDescriptor]) -> Result<Vec<LayerDesc>, ImageError> {
        raw.iter()
            .map(|d| {
                let (digest, size) = descriptor_digest(&self.name, d)?;
                let hex = hex_of(&digest).expect("checked").to_string();
                Ok(LayerDesc { digest, hex, size })
            })
            .collect()
    }

    /// A manifest's bytes and their digest, which must be the one asked for.
    async fn manifest(&self, reference: &Reference) -> Result<(bytes::Bytes, String), ImageError> {
        let (bytes, _) = self.client.pull_manifest_raw(reference, &self.auth, ACCEPT).await.map_err(|e| self.map_error(e, "manifest"))?;
        let digest = sha256(&bytes);
        if let Some(want) = reference.digest()
            && want != digest
        {
            return Err(ImageError::DigestMismatch {
                image: self.name.clone(),
                registry: self.image.registry.clone(),
                what: "manifest",
                expected: want.to_string(),
                actual: digest,
            });
        }
        Ok((bytes, digest))
    }

    /// Make sure the layer is in the cache: downloaded once (under its lock), verified
    /// while it streams to a temporary file, renamed into place only when it matches.
    /// Returns the bytes downloaded (0 when it was cached).
    async fn fetch_blob(&self, cache: &Cache, layer: &LayerDesc, tracker: &mut Tracker) -> Result<u64, ImageError> {
        if cache.blob_path(&layer.hex).exists() {
            tracker.add(layer.size);
            return Ok(0);
        }
        let key = format!("blob-{}", layer.hex);
        let _lock = cache.lock(&key).await?;
        if cache.blob_path(&layer.hex).exists() {
            // Another pull downloaded it while this one waited.
            tracker.add(layer.size);
            return Ok(0);
        }
        cache.clean_temps(&key);
        let tmp = cache.temp_path(&key);
        let result = self.download(layer, &tmp, tracker).await;
        match result {
            Ok(n) => {
                cache.commit_blob(&tmp, &layer.hex)?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    async fn download(&self, layer: &LayerDesc, tmp: &Path, tracker: &mut Tracker) -> Result<u64, ImageError> {
        let mut stream = self.client.pull_blob_stream(&self.reference, layer.digest.as_str()).await.map_err(|e| self.map_error(e, "layer"))?;
        let file = tokio::fs::File::create(tmp).await.map_err(|e| io_error("create", tmp, e))?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut received: u64 = 0;
        let interrupted = |received: u64, message: String| ImageError::Interrupted {
            image: self.name.clone(),
            registry: self.image.registry.clone(),
            digest: layer.digest.clone(),
            received,
            expected: layer.size,
            message,
        };
        let mismatch = |actual: String| ImageError::DigestMismatch {
            image: self.name.clone(),
            registry: self.image.registry.clone(),
            what: "layer",
            expected: layer.digest.clone(),
            actual,
        };
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // oci-client checks the digest too, at the end of the stream.
                Err(e) if e.get_ref().is_some_and(|i| i.is::<oci_client::errors::DigestError>()) => {
                    return Err(mismatch(format!("sha256:{}", hex(hasher.finish().as_ref()))));
                }
                Err(e) => return Err(interrupted(received, chain(&e))),
            };
            received += chunk.len() as u64;
            if received > layer.size {
                // Its digest cannot match: stop a registry that sends more than it should.
                return Err(mismatch(format!("more than the {} bytes the manifest says", layer.size)));
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(|e| io_error("write", tmp, e))?;
            tracker.add(chunk.len() as u64);
        }
        if received < layer.size {
            return Err(interrupted(received, "the registry closed the connection early".into()));
        }
        let actual = format!("sha256:{}", hex(hasher.finish().as_ref()));
        if actual != layer.digest {
            return Err(mismatch(actual));
        }
        out.flush().await.map_err(|e| io_error("write", tmp, e))?;
        out.into_inner().sync_all().await.map_err(|e| io_error("sync", tmp, e))?;
        Ok(received)
    }

    /// oci-client's errors as a user reads them: not found, refused, unreachable, …
    fn map_error(&self, e: OciDistributionError, what: &str) -> ImageError {
        match (self.classify(e, what), &self.https_failure) {
            (ImageError::Unreachable { image, registry, message }, Some(tls)) => {
                ImageError::Unreachable { image, registry, message: format!("over HTTPS: {tls}; over HTTP: {message}") }
            }
            (ImageError::Registry { image, registry, answer }, Some(tls)) => {
                ImageError::Registry { image, registry, answer: format!("{answer} (over plain HTTP, after HTTPS failed: {tls})") }
            }
            (other, _) => other,
        }
    }

    fn classify(&self, e: OciDistributionError, what: &str) -> ImageError {
        use OciDistributionError as E;
        let image = self.name.clone();
        let registry = self.image.registry.clone();
        let unauthorized = |answer: String| ImageError::Unauthorized { image: image.clone(), registry: registry.clone(), credentials: self.credentials.describe(), answer };
        match e {
            E::RegistryError { envelope, .. } => {
                let answer = envelope
                    .errors
                    .iter()
                    .map(|e| if e.message.is_empty() { format!("{:?}", e.code) } else { e.message.clone() })
                    .collect::<Vec<_>>()
                    .join("; ");
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                    unauthorized(answer)
                } else if codes.iter().any(|c| {
                    matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown | OciErrorCode::NotFound | OciErrorCode::ManifestBlobUnknown)
                }) {
                    ImageError::NotFound { image, registry, answer: format!("{answer} (for its {what})") }
                } else {
                    ImageError::Registry { image, registry, answer }
                }
            }
            E::UnauthorizedError { .. } => unauthorized("HTTP 401 Unauthorized".into()),
            E::AuthenticationFailure(reason) => unauthorized(format!("its token service refused: {}", short(&reason))),
            E::ServerError { code: 404, message, .. } => ImageError::NotFound { image, registry, answer: format!("HTTP 404 {} (for its {what})", short(&message)) },
            E::ServerError { code: code @ (401 | 403), message, .. } => unauthorized(format!("HTTP {code} {}", short(&message))),
            E::ServerError { code, message, .. } => ImageError::Registry { image, registry, answer: format!("HTTP {code} {}", short(&message)) },
            E::RequestError(e) => ImageError::Unreachable { image, registry, message: chain(&e) },
            E::DigestError(oci_client::errors::DigestError::VerificationError { expected, actual }) => {
                ImageError::DigestMismatch { image, registry, what: "manifest", expected, actual }
            }
            E::ManifestParsingError(m) | E::VersionedParsingError(m) | E::UnsupportedMediaTypeError(m) => {
                ImageError::UnsupportedImage { image, reason: format!("its manifest cannot be read: {m}") }
            }
            other => ImageError::Registry { image, registry, answer: other.to_string() },
        }
    }
}

/// An error and its causes: `error sending request: … : Connection refused (os error 111)`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// An answer's body, cut for a message.
fn short(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_read_or_refused_clearly() {
        let err = |b: &str| match parse_manifest("r.io/x:1", b.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{b} parsed"),
        };
        assert!(err("{").contains("not a valid OCI or Docker manifest"));
        assert!(err(r#"{"schemaVersion": 1, "fsLayers": []}"#).contains("schema 1"));
        assert!(err(r#"{"schemaVersion": 2}"#).contains("neither an image manifest nor an index"));
        assert!(err(r#"{"schemaVersion": 2, "layers": []}"#).contains("lists no layers"));
        assert!(err(r#"{"schemaVersion": 2, "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": "sha256:x", "size": 1}]}"#)
            .contains("not a file system layer"));
        assert!(err(r#"{"schemaVersion": 2, "layers": [{"digest": 5, "size": 1}]}"#).contains("not a valid"));
        assert!(matches!(
            parse_manifest("i", br#"{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json", "manifests": []}"#),
            Ok(Parsed::Index(_))
        ));
        let d = format!("sha256:{}", "a".repeat(64));
        let m = format!(r#"{{"schemaVersion": 2, "layers": [{{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": "{d}", "size": 3}}]}}"#);
        assert!(matches!(parse_manifest("i", m.as_bytes()), Ok(Parsed::Image(l)) if l.len() == 1));
        let bad = RawDescriptor { media_type: String::new(), digest: "sha256:../../x".into(), size: 1, platform: None };
        assert!(descriptor_digest("i", &bad).unwrap_err().to_string().contains("not a sha256 digest"));
        let neg = RawDescriptor { media_type: String::new(), digest: d, size: -1, platform: None };
        assert!(descriptor_digest("i", &neg).unwrap_err().to_string().contains("negative size"));
    }

    #[test]
    fn sha256_of_bytes() {
        assert_eq!(sha256(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn progress_reports_whole_percents() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let f: ProgressFn = std::sync::Arc::new(move |p: Progress| s.lock().unwrap().push(p.done));
        let mut t = Tracker::new(Some(f), PullPhase::Downloading, 1000);
        for _ in 0..1000 {
            t.add(1);
        }
        t.finish();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.first(), Some(&0));
        assert_eq!(seen.last(), Some(&1000));
        assert!(seen.len() <= 103, "{}", seen.len());
    }
}
