//! Bearer tokens. The data dir's `tokens.json` holds a SHA-256 of each token, never the
//! token itself, with its name and role; the server re-reads the file when it meets a
//! token it does not know, so `vmform token create` works on a running server.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Every verb.
    Admin,
    /// get, list and watch only.
    ReadOnly,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenEntry {
    name: String,
    sha256: String,
    role: Role,
}

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
}

pub struct Tokens {
    path: PathBuf,
    known: RwLock<HashMap<String, User>>,
}

fn digest(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn read_entries(path: &Path) -> std::io::Result<Vec<TokenEntry>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e),
    }
}

impl Tokens {
    pub fn load(path: &Path) -> std::io::Result<Tokens> {
        let tokens = Tokens { path: path.to_path_buf(), known: RwLock::new(HashMap::new()) };
        tokens.reload()?;
        Ok(tokens)
    }

    fn reload(&self) -> std::io::Result<()> {
        let entries = read_entries(&self.path)?;
        let map = entries.into_iter().map(|e| (e.sha256, User { name: e.name, role: e.role })).collect();
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    /// The user a token belongs to, if any.
    pub fn authenticate(&self, token: &str) -> Option<User> {
        let hash = digest(token);
        if let Some(user) = self.known.read().unwrap_or_else(|p| p.into_inner()).get(&hash) {
            return Some(user.clone());
        }
        // A token made since the last read: look again. A file that cannot be read
        // keeps the tokens already known.
        self.reload().ok()?;
        self.known.read().unwrap_or_else(|p| p.into_inner()).get(&hash).cloned()
    }
}

/// Make a new token, record its digest in `path`, and return it. The token is shown
/// once; only its digest is kept.
pub fn create_token(path: &Path, name: &str, role: Role) -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    use base64::Engine;
    let token = format!("vmform-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let mut entries = read_entries(path)?;
    entries.push(TokenEntry { name: name.to_string(), sha256: digest(&token), role });
    let json = serde_json::to_vec_pretty(&entries).expect("token entries serialise");
    vmform_cluster::files::write_private(path, &json)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_by_digest_and_new_ones_are_seen_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let admin = create_token(&path, "admin", Role::Admin).unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(tokens.authenticate(&admin).unwrap().role, Role::Admin);
        assert_eq!(tokens.authenticate("vmform-wrong"), None);
        let viewer = create_token(&path, "viewer", Role::ReadOnly).unwrap();
        assert_eq!(tokens.authenticate(&viewer), Some(User { name: "viewer".into(), role: Role::ReadOnly }));
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(!stored.contains(&admin) && !stored.contains(&viewer), "only digests are stored");
    }
}
