//! The local control plane's data dir: where it is, and the files in it.
//!
//! | file | what |
//! |---|---|
//! | `vmform.db` (+ `-wal`, `-shm`) | the API server's store (SQLite, WAL) |
//! | `ca.crt`, `ca.key` | the certificate authority clients trust (key mode 0600) |
//! | `tokens.json` | digests of the bearer tokens, with their roles (0600) |
//! | `kubeconfig` | context `vmform-local` with the admin token (0600) |
//! | `lock` | held (flock) while a server runs on this data dir |
//! | `vmform.pid`, `server.json` | the running server's pid, address and version |
//! | `vmform.log` | the server's output with `vmform up --detach` |
//! | `runtime.json` | what the runtime of `vmform up` reported (its nodes' accelerators) |
//! | `nodes/` | one dir per node of the local runtime |
//! | `volumes/` | PVC and DataVolume files |

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::PathBuf;

/// The kubeconfig context (and cluster) name of the local control plane.
pub const CONTEXT: &str = "vmform-local";

/// `$VMFORM_HOME`, else the platform's data dir (`$XDG_DATA_HOME/vmform`,
/// `~/.local/share/vmform`).
pub fn default_data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("VMFORM_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("vmform");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/vmform")
}

/// The files of one data dir.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn database(&self) -> PathBuf {
        self.0.join("vmform.db")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.0.join("kubeconfig")
    }
    pub fn tokens(&self) -> PathBuf {
        self.0.join("tokens.json")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.0.join("vmform.pid")
    }
    pub fn log_file(&self) -> PathBuf {
        self.0.join("vmform.log")
    }
    pub fn server_info(&self) -> PathBuf {
        self.0.join("server.json")
    }
    /// Held (flock) while a server runs on this data dir.
    pub fn lock(&self) -> PathBuf {
        self.0.join("lock")
    }
    /// The local runtime's nodes, one dir each.
    pub fn nodes(&self) -> PathBuf {
        self.0.join("nodes")
    }
    /// PVC and DataVolume files.
    pub fn volumes(&self) -> PathBuf {
        self.0.join("volumes")
    }
    /// What `server.json` says, if a server wrote it.
    pub fn read_server_info(&self) -> Option<ServerInfo> {
        serde_json::from_slice(&std::fs::read(self.server_info()).ok()?).ok()
    }
    /// Whether a server holds this data dir now (its lock is taken).
    pub fn in_use(&self) -> bool {
        match File::open(self.lock()) {
            Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }
}

/// What a running server publishes about itself in `server.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub pid: u32,
    /// `https://127.0.0.1:7443`
    pub address: String,
    pub version: String,
    pub started: String,
}
