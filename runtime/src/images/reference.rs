//! Image references as Docker and KubeVirt read them, and `imagePullPolicy`.

use std::fmt;

use super::ImageError;

/// The registry short names (`fedora:41`, `user/img`) resolve to.
pub const DOCKER_HUB: &str = "docker.io";
/// Longest `registry/repository` Docker accepts.
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]`, `docker.io` for Docker Hub.
    pub registry: String,
    /// `library/fedora`, `containerdisks/fedora`.
    pub repository: String,
    /// `None` only when a digest is given without a tag.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parse a reference as `docker pull` does: `fedora:41` is `docker.io/library/fedora:41`,
    /// `user/img` is `docker.io/user/img:latest`; the first part names a registry when it
    /// has a `.` or a `:` or is `localhost`. A `docker://` prefix (CDI's spelling) is dropped.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let bad = |reason: &str| ImageError::BadReference { reference: input.to_string(), reason: reason.to_string() };
        let s = input.strip_prefix("docker://").unwrap_or(input);
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(check_digest(d).map_err(|r| bad(&r))?)),
            None => (s, None),
        };
        // A tag follows the last `:` after the last `/` (a `:` before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(|r| bad(&r))?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                check_registry(first).map_err(|r| bad(&r))?;
                let registry = if first == "index.docker.io" { DOCKER_HUB } else { first };
                (registry.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') { format!("library/{repository}") } else { repository };
        check_repository(&repository).map_err(|r| bad(&r))?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad(&format!("the name is longer than {MAX_NAME_LEN} characters")));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageRef { registry, repository, tag, digest })
    }

    /// The registry's host without a port (brackets of an IPv6 address removed).
    pub fn host(&self) -> &str {
        host_of(&self.registry)
    }

    /// Whether the registry is on this machine (127.0.0.0/8, ::1, localhost): Docker talks
    /// plain HTTP to those when HTTPS fails, and so does the puller.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }

    /// `registry/repository`, the name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => oci_client::Reference::with_tag_and_digest(self.registry.clone(), self.repository.clone(), t.clone(), d.clone()),
            (_, Some(d)) => oci_client::Reference::with_digest(self.registry.clone(), self.repository.clone(), d.clone()),
            (t, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check_digest(d: &str) -> Result<String, String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!("`{d}` is not a digest (`sha256:` and 64 hex digits)"));
    };
    if alg != "sha256" {
        return Err(format!("`{alg}` digests are not supported; use the image's sha256 digest"));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("`{d}` is not a sha256 digest (64 lowercase hex digits)"));
    }
    Ok(d.to_string())
}

fn check_tag(t: &str) -> Result<(), String> {
    let ok_first = t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_first || t.len() > 128 || !t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(format!("`{t}` is not a valid tag (letters, digits, `_`, `.`, `-`, at most 128, not starting with `.` or `-`)"));
    }
    Ok(())
}

fn check_registry(r: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| format!("`{r}` has an unclosed `[`"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{h}` is not an IPv6 address"));
        }
        (None, after.strip_prefix(':').map(Some).unwrap_or(if after.is_empty() { None } else { Some(after) }))
    } else {
        match r.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    if let Some(h) = host
        && (h.is_empty() || h.starts_with(['-', '.']) || !h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')))
    {
        return Err(format!("`{r}` is not a registry host"));
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err(format!("`{p}` is not a port"));
    }
    Ok(())
}

/// Components of lowercase letters and digits, joined by `.`, `_`, `__` or dashes.
fn check_repository(repo: &str) -> Result<(), String> {
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository names must be lowercase".into());
    }
    for part in repo.split('/') {
        let ok = !part.is_empty()
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part.ends_with(|c: char| c.is_ascii_alphanumeric())
            && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
            && !part.contains("..")
            && !part.contains("___")
            && !part.contains("._")
            && !part.contains("_.");
        if !ok {
            return Err(format!("`{part}` is not a valid repository name part (lowercase letters and digits, separated by `.`, `_`, `__` or `-`)"));
        }
    }
    Ok(())
}

/// KubeVirt's `containerDisk.imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Ask the registry what the reference names on every pull; reuse the cached image only
    /// when the registry names the same digest.
    Always,
    /// Use the cached image the reference named last time; pull only when there is none.
    IfNotPresent,
    /// Use the cache only; an image not in it is an error.
    Never,
}

impl PullPolicy {
    /// KubeVirt's (and Kubernetes') default: `Always` for `:latest` or no tag, else
    /// `IfNotPresent`.
    pub fn default_for(image: &ImageRef) -> Self {
        match image.tag.as_deref() {
            Some("latest") => PullPolicy::Always,
            None if image.digest.is_none() => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }

    /// KubeVirt's spelling: `Always`, `IfNotPresent`, `Never`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_short_names() {
        assert_eq!(parsed("fedora:41").to_string(), "docker.io/library/fedora:41");
        assert_eq!(parsed("fedora").to_string(), "docker.io/library/fedora:latest");
        assert_eq!(parsed("user/img").to_string(), "docker.io/user/img:latest");
        assert_eq!(parsed("docker.io/fedora").to_string(), "docker.io/library/fedora:latest");
        assert_eq!(parsed("index.docker.io/user/img:1").to_string(), "docker.io/user/img:1");
        assert_eq!(parsed("docker://quay.io/containerdisks/fedora:41").to_string(), "quay.io/containerdisks/fedora:41");
    }

    #[test]
    fn registries_ports_and_digests() {
        let r = parsed("127.0.0.1:5000/disks/cirros:0.6");
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", "disks/cirros", Some("0.6")));
        assert!(r.is_loopback());
        assert_eq!(r.host(), "127.0.0.1");
        let r = parsed(&format!("localhost/x@{D}"));
        assert_eq!((r.registry.as_str(), r.tag.as_deref(), r.digest.as_deref()), ("localhost", None, Some(D)));
        assert!(r.is_loopback());
        let r = parsed(&format!("quay.io/a/b:v1@{D}"));
        assert_eq!((r.tag.as_deref(), r.digest.as_deref()), (Some("v1"), Some(D)));
        assert!(!r.is_loopback());
        assert!(parsed("[::1]:5000/x:1").is_loopback());
        assert_eq!(parsed("[::1]:5000/x:1").host(), "::1");
        assert!(parsed("127.3.4.5:80/x").is_loopback());
        assert!(!parsed("128.0.0.1:80/x").is_loopback());
        // `localhost:5000` alone is a Docker Hub repository with a tag, as Docker reads it.
        assert_eq!(parsed("localhost:5000").to_string(), "docker.io/library/localhost:5000");
        assert_eq!(parsed("registry.example:443/a/b/c").name(), "registry.example:443/a/b/c");
    }

    #[test]
    fn bad_references_say_why() {
        let err = |s: &str| ImageRef::parse(s).unwrap_err().to_string();
        assert!(err("").contains("it is empty"));
        assert!(err("Fedora").contains("lowercase"), "{}", err("Fedora"));
        assert!(err("fedora:").contains("not a valid tag"));
        assert!(err("fedora:-x").contains("not a valid tag"));
        assert!(err("fedora@sha256:abc").contains("64 lowercase hex"));
        assert!(err("fedora@md5:abc").contains("`md5` digests are not supported"));
        assert!(err("a b").contains("whitespace"));
        assert!(err("quay.io/").contains("not a valid repository name part"));
        assert!(err("quay.io/a//b").contains("not a valid repository name part"));
        assert!(err("quay.io/../etc").contains("not a valid repository name part"));
        assert!(err("quay.io:99999/a").contains("not a port"));
        assert!(err("-bad.io/a").contains("not a registry host"));
        assert!(err(&format!("quay.io/{}", "a".repeat(260))).contains("longer than 255"));
    }

    #[test]
    fn kubevirt_pull_policy_defaults() {
        assert_eq!(PullPolicy::default_for(&parsed("fedora")), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for(&parsed("fedora:latest")), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for(&parsed("fedora:41")), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::default_for(&parsed(&format!("fedora@{D}"))), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::parse("Never"), Some(PullPolicy::Never));
        assert_eq!(PullPolicy::parse("never"), None);
        assert_eq!(PullPolicy::IfNotPresent.to_string(), "IfNotPresent");
    }
}
