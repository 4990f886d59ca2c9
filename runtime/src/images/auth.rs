//! Registry credentials: given, from a `kubernetes.io/dockerconfigjson` Secret, or from the
//! docker config files podman, skopeo and docker read.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use super::reference::{DOCKER_HUB, ImageRef};
use super::ImageError;

/// Where a pull's credentials come from.
#[derive(Clone, Default)]
pub enum Auth {
    /// The docker config files: [`PullRequest::auth_file`](super::PullRequest::auth_file)
    /// when given, else `$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`. Anonymous when none names the registry.
    #[default]
    Default,
    /// No credentials, whatever the files say.
    Anonymous,
    /// A user name and password (HTTP basic, or exchanged for a bearer token when the
    /// registry asks for one).
    Basic { username: String, password: String },
    /// The `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` Secret (KubeVirt's
    /// `containerDisk.imagePullSecret`), as bytes. A registry it does not name falls back
    /// to [`Auth::Default`], as the kubelet falls back to the node's credentials.
    DockerConfigJson(Vec<u8>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Default => f.write_str("Default"),
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Auth::DockerConfigJson(_) => f.write_str("DockerConfigJson(<redacted>)"),
        }
    }
}

/// Credentials chosen for one registry, and where they came from (for error messages).
#[derive(Clone)]
pub(crate) struct Resolved {
    pub credentials: Option<(String, String)>,
    /// `the pull secret`, `/root/.docker/config.json`, `the request`, or what was searched.
    pub source: String,
}

impl Resolved {
    pub fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        match &self.credentials {
            Some((u, p)) => oci_client::secrets::RegistryAuth::Basic(u.clone(), p.clone()),
            None => oci_client::secrets::RegistryAuth::Anonymous,
        }
    }

    /// `user alice from /tmp/auth.json`, `no credentials (searched …)`.
    pub fn describe(&self) -> String {
        match &self.credentials {
            Some((u, _)) => format!("user `{u}` from {}", self.source),
            None => format!("no credentials ({})", self.source),
        }
    }
}

/// The docker config files to search, first match wins.
pub(crate) fn default_files(auth_file: Option<&Path>) -> Vec<PathBuf> {
    if let Some(f) = auth_file {
        return vec![f.to_path_buf()];
    }
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        files.push(PathBuf::from(f));
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        files.push(PathBuf::from(dir).join("config.json"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        files.push(PathBuf::from(home).join(".docker/config.json"));
    }
    files
}

pub(crate) fn resolve(auth: &Auth, auth_file: Option<&Path>, image: &ImageRef) -> Result<Resolved, ImageError> {
    match auth {
        Auth::Anonymous => Ok(Resolved { credentials: None, source: "anonymous pull requested".into() }),
        Auth::Basic { username, password } => {
            Ok(Resolved { credentials: Some((username.clone(), password.clone())), source: "the request".into() })
        }
        Auth::DockerConfigJson(bytes) => {
            let config: Value = serde_json::from_slice(bytes)
                .map_err(|e| ImageError::AuthConfig { source_name: "the image pull secret's .dockerconfigjson".into(), reason: format!("it is not JSON: {e}") })?;
            match lookup(&config, image).map_err(|reason| ImageError::AuthConfig { source_name: "the image pull secret's .dockerconfigjson".into(), reason })? {
                Some(c) => Ok(Resolved { credentials: Some(c), source: "the image pull secret".into() }),
                None => {
                    let mut r = from_files(&default_files(auth_file), image)?;
                    if r.credentials.is_none() {
                        r.source = format!("the image pull secret names no entry for {}; {}", image.registry, r.source);
                    }
                    Ok(r)
                }
            }
        }
        Auth::Default => from_files(&default_files(auth_file), image),
    }
}

fn from_files(files: &[PathBuf], image: &ImageRef) -> Result<Resolved, ImageError> {
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ImageError::AuthConfig { source_name: file.display().to_string(), reason: format!("cannot read it: {e}") }),
        };
        let config: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::AuthConfig { source_name: file.display().to_string(), reason: format!("it is not JSON: {e}") })?;
        let found = lookup(&config, image).map_err(|reason| ImageError::AuthConfig { source_name: file.display().to_string(), reason })?;
        if let Some(c) = found {
            return Ok(Resolved { credentials: Some(c), source: file.display().to_string() });
        }
    }
    let searched = if files.is_empty() {
        "no docker config file to search".to_string()
    } else {
        format!("none for {} in {}", image.registry, files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))
    };
    Ok(Resolved { credentials: None, source: searched })
}

/// The entry of `auths` for the image: the most specific of `host/repo/…`, …, `host`
/// (podman's namespaced keys), keys with or without a scheme and path
/// (`https://index.docker.io/v1/`). Err when the matching entry is malformed.
fn lookup(config: &Value, image: &ImageRef) -> Result<Option<(String, String)>, String> {
    let Some(auths) = config.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    let normalised: Vec<(String, &Value)> = auths.iter().map(|(k, v)| (normalise_key(k), v)).collect();
    let hosts: Vec<&str> = if image.registry == DOCKER_HUB { vec![DOCKER_HUB, "index.docker.io", "registry-1.docker.io"] } else { vec![&image.registry] };
    let parts: Vec<&str> = image.repository.split('/').collect();
    for n in (0..=parts.len()).rev() {
        for host in &hosts {
            let key = if n == 0 { host.to_string() } else { format!("{host}/{}", parts[..n].join("/")) };
            if let Some((_, entry)) = normalised.iter().find(|(k, _)| *k == key) {
                return entry_credentials(entry).map_err(|e| format!("auths.{key}: {e}"));
            }
        }
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `quay.io/org/` → `quay.io/org`.
fn normalise_key(key: &str) -> String {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let k = k.trim_end_matches('/');
    let k = k.strip_suffix("/v1").or_else(|| k.strip_suffix("/v2")).unwrap_or(k);
    k.to_ascii_lowercase()
}

fn entry_credentials(entry: &Value) -> Result<Option<(String, String)>, String> {
    if let Some(auth) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth.trim().trim_end_matches('=')))
            .map_err(|_| "`auth` is not base64".to_string())?;
        let text = String::from_utf8(decoded).map_err(|_| "`auth` does not decode to text".to_string())?;
        let (user, pass) = text.split_once(':').ok_or("`auth` does not decode to `user:password`")?;
        return Ok(Some((user.to_string(), pass.to_string())));
    }
    match (entry.get("username").and_then(Value::as_str), entry.get("password").and_then(Value::as_str)) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some((u.to_string(), p.to_string()))),
        _ if entry.get("identitytoken").is_some() => Err("only `auth` or `username`/`password` entries are supported, not `identitytoken`; log in with a password or token as password".into()),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn lookup_matches_hosts_namespaces_and_docker_hub_spellings() {
        let config = json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
            "quay.io": {"auth": b64("q:a:b")},
            "quay.io/team": {"username": "team", "password": "tpw"},
            "127.0.0.1:5000": {"auth": b64("local:x")},
        }});
        assert_eq!(lookup(&config, &img("fedora:41")).unwrap(), Some(("hub".into(), "pw".into())));
        // The password may hold `:`; the user name ends at the first.
        assert_eq!(lookup(&config, &img("quay.io/other/x")).unwrap(), Some(("q".into(), "a:b".into())));
        assert_eq!(lookup(&config, &img("quay.io/team/x")).unwrap(), Some(("team".into(), "tpw".into())));
        assert_eq!(lookup(&config, &img("127.0.0.1:5000/x")).unwrap(), Some(("local".into(), "x".into())));
        assert_eq!(lookup(&config, &img("127.0.0.1:5001/x")).unwrap(), None);
        assert_eq!(lookup(&json!({}), &img("fedora")).unwrap(), None);
    }

    #[test]
    fn malformed_entries_are_errors_naming_the_key() {
        let e = lookup(&json!({"auths": {"quay.io": {"auth": "%%%"}}}), &img("quay.io/a")).unwrap_err();
        assert!(e.contains("auths.quay.io: `auth` is not base64"), "{e}");
        let e = lookup(&json!({"auths": {"quay.io": {"auth": b64("nocolon")}}}), &img("quay.io/a")).unwrap_err();
        assert!(e.contains("user:password"), "{e}");
        let e = lookup(&json!({"auths": {"quay.io": {"identitytoken": "t"}}}), &img("quay.io/a")).unwrap_err();
        assert!(e.contains("identitytoken"), "{e}");
    }

    #[test]
    fn files_in_order_and_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        std::fs::write(&b, json!({"auths": {"r.io": {"auth": b64("u:p")}}}).to_string()).unwrap();
        let r = from_files(&[a.clone(), b.clone()], &img("r.io/x")).unwrap();
        assert_eq!(r.credentials, Some(("u".into(), "p".into())));
        assert_eq!(r.describe(), format!("user `u` from {}", b.display()));
        let r = from_files(&[a.clone(), b.clone()], &img("s.io/x")).unwrap();
        assert!(r.credentials.is_none());
        assert!(r.describe().contains("none for s.io in"), "{}", r.describe());
        std::fs::write(&a, "not json").unwrap();
        let e = from_files(std::slice::from_ref(&a), &img("r.io/x")).err().unwrap().to_string();
        assert!(e.contains("a.json") && e.contains("not JSON"), "{e}");

        let secret = json!({"auths": {"r.io": {"auth": b64("s:q")}}}).to_string().into_bytes();
        let r = resolve(&Auth::DockerConfigJson(secret.clone()), Some(&b), &img("r.io/x")).unwrap();
        assert_eq!((r.credentials, r.source.as_str()), (Some(("s".into(), "q".into())), "the image pull secret"));
        // Not named by the secret: the files decide.
        let r = resolve(&Auth::DockerConfigJson(secret), Some(&b), &img("s.io/x")).unwrap();
        assert!(r.credentials.is_none() && r.source.contains("pull secret names no entry for s.io"), "{}", r.source);
        let e = resolve(&Auth::DockerConfigJson(b"{".to_vec()), None, &img("r.io/x")).err().unwrap().to_string();
        assert!(e.contains("image pull secret") && e.contains("not JSON"), "{e}");
        assert!(format!("{:?}", Auth::Basic { username: "u".into(), password: "secret".into() }).contains("redacted"));
    }
}
