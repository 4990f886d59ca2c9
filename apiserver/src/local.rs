//! The local control plane's API server on this machine: the startup that turns a data
//! dir (`vmform_cluster::local::DataDir`, whose layout lives there) into a running server
//! — lock, store, CA and serving certificate, admin token — and the files it leaves for
//! clients (kubeconfig, pid file, `server.json`).

use crate::auth::{self, Role, Tokens};
use crate::error::Error;
use crate::server::{self, Api, RunningServer};
use crate::store::Store;
use crate::tls;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vmform_cluster::files::{write_atomically, write_private};
pub use vmform_cluster::local::{default_data_dir, DataDir, ServerInfo, CONTEXT};

const ADMIN_USER: &str = "vmform-local-admin";
/// The default address: loopback only, next to (not on) the 6443 a local Kubernetes uses.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";

/// How to start the control plane.
pub struct UpConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
}

/// A running local control plane. It holds the data dir's lock until dropped.
pub struct LocalServer {
    pub server: RunningServer,
    pub data_dir: DataDir,
    /// `https://127.0.0.1:7443`
    pub address: String,
    pub store: Arc<Store>,
    _lock: File,
}

impl LocalServer {
    /// Stop serving, let the store finish its writes, and remove the pid file and
    /// `server.json`.
    pub async fn stop(self) {
        let LocalServer { server, data_dir, .. } = self;
        server.shutdown().await;
        remove_run_files(&data_dir);
    }
}

fn remove_run_files(dir: &DataDir) {
    let _ = std::fs::remove_file(dir.pid_file());
    let _ = std::fs::remove_file(dir.server_info());
}

/// Start the local control plane on `config.data_dir`: lock it, open the store, make
/// the CA and the admin token on first start, listen, and write the kubeconfig.
pub async fn up(config: UpConfig) -> Result<LocalServer, Error> {
    let dir = DataDir(config.data_dir.clone());
    let path = dir.0.display().to_string();
    let dir_error = |source| Error::DataDir { path: path.clone(), source };
    std::fs::create_dir_all(&dir.0).map_err(dir_error)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).map_err(dir_error)?;
    }
    let lock = File::options().create(true).truncate(false).write(true).open(dir.lock()).map_err(dir_error)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = dir.read_server_info().map(|i| format!(" (pid {})", i.pid)).unwrap_or_default();
            return Err(Error::Locked { path, pid });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(dir_error(e)),
    }
    let store = Arc::new(Store::open(&dir.database())?);
    let tokens = Tokens::load(&dir.tokens()).map_err(dir_error)?;
    let token = match existing_admin_token(&dir, &tokens) {
        Some(t) => t,
        None => auth::create_token(&dir.tokens(), "admin", Role::Admin).map_err(dir_error)?,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
    let local = listener.local_addr().map_err(|source| Error::Listen { addr: config.listen.to_string(), source })?;
    // Clients of an unspecified address (0.0.0.0) reach it on loopback from here.
    let client_ip = if local.ip().is_unspecified() { "127.0.0.1".parse().expect("an IP") } else { local.ip() };
    let address = format!("https://{}", SocketAddr::new(client_ip, local.port()));
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !local.ip().is_loopback() && !local.ip().is_unspecified() {
        hosts.push(local.ip().to_string());
    }
    let certificates = tls::load_or_create(&dir.0, &hosts)?;
    let api = Arc::new(Api { store: Arc::clone(&store), tokens, address: address.clone() });
    server::bootstrap(&store).await.map_err(Error::Bootstrap)?;
    let server = server::serve(api, listener, &certificates).map_err(|source| Error::Listen { addr: local.to_string(), source })?;
    write_private(&dir.kubeconfig(), kubeconfig(&address, &certificates.ca_pem, &token).as_bytes()).map_err(dir_error)?;
    let info = ServerInfo {
        pid: std::process::id(),
        address: address.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started: crate::handlers::now(),
    };
    write_atomically(&dir.server_info(), &serde_json::to_vec_pretty(&info).expect("serialises"), 0o644).map_err(dir_error)?;
    write_atomically(&dir.pid_file(), format!("{}\n", info.pid).as_bytes(), 0o644).map_err(dir_error)?;
    Ok(LocalServer { server, data_dir: dir, address, store, _lock: lock })
}

/// The admin token of the kubeconfig an earlier start wrote, if it still works: a
/// restart keeps clients' kubeconfigs valid.
fn existing_admin_token(dir: &DataDir, tokens: &Tokens) -> Option<String> {
    let text = std::fs::read_to_string(dir.kubeconfig()).ok()?;
    let config: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    let token = config["users"].as_sequence()?.iter().find(|u| u["name"].as_str() == Some(ADMIN_USER))?["user"]["token"].as_str()?.to_string();
    (tokens.authenticate(&token)?.role == Role::Admin).then_some(token)
}

/// A kubeconfig with one context, `vmform-local`.
pub fn kubeconfig(address: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": CONTEXT, "cluster": { "server": address, "certificate-authority-data": ca } }],
        "users": [{ "name": ADMIN_USER, "user": { "token": token } }],
        "contexts": [{ "name": CONTEXT, "context": { "cluster": CONTEXT, "user": ADMIN_USER } }],
        "current-context": CONTEXT,
        "preferences": {},
    });
    serde_yaml::to_string(&config).expect("kubeconfigs serialise")
}

/// Make a token for this data dir's server; `read_only` gives get/list/watch only.
pub fn create_token(data_dir: &Path, name: &str, read_only: bool) -> std::io::Result<String> {
    std::fs::create_dir_all(data_dir)?;
    let role = if read_only { Role::ReadOnly } else { Role::Admin };
    auth::create_token(&DataDir(data_dir.to_path_buf()).tokens(), name, role)
}
