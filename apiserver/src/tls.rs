//! TLS: a certificate authority made at first start and kept in the data dir, and a
//! serving certificate signed by it at every start (so a changed listen address is
//! covered). The kubeconfig carries the CA, so clients verify the server as they would a
//! real cluster.

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use crate::error::Error;
use std::path::Path;
use std::sync::Arc;

/// What the server needs to serve TLS, and what clients need to trust it.
pub struct Certificates {
    /// The CA certificate, PEM: goes into the kubeconfig.
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// The CA's parameters. They are rebuilt identically at every start: with the stored key
/// they sign exactly as the stored CA certificate does.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "vmform-local-ca");
    dn.push(DnType::OrganizationName, "vmform");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    params
}

/// Load the CA from `dir` (making it on first start) and sign a serving certificate for
/// `hosts` (names and IP addresses).
pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Certificates, Error> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::TlsFile { path, source }
    };
    let cert_path = dir.join("ca.crt");
    let key_path = dir.join("ca.key");
    let (ca_pem, ca_key) = if cert_path.exists() && key_path.exists() {
        let pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io(&key_path))?)?;
        (pem, key)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        vmform_cluster::files::write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
        vmform_cluster::files::write_atomically(&cert_path, cert.pem().as_bytes(), 0o644).map_err(io(&cert_path))?;
        (cert.pem(), key)
    };
    let issuer = Issuer::new(ca_params(), ca_key);
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, "vmform-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &issuer)?;
    let chain = vec![CertificateDer::from(server_cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // kubectl speaks HTTP/2 when offered, kube-rs HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Certificates { ca_pem, server_config: Arc::new(config) })
}
