//! The network of several nodes on one machine (`vmform up --nodes N`, N ≥ 2): per node a
//! network namespace with loopback up and a veth whose host end sits on a bridge in the
//! host namespace. The bridge carries the subnet's last address (`.254`), node `i` has
//! `.<i+1>`, so the host reaches every node and the nodes reach each other.
//!
//! Names derive from the data dir, so two clusters on one machine never clash:
//! namespaces `vmform-<h>-<i>`, bridge `vmf<h>`, host-side veths `vmf<h>v<i>` (`<h>`: 8
//! hex digits of the SHA-256 of the data dir's path). The subnet is `10.231.<k>.0/24`
//! with `k` from the same hash, moved to the next free `k` when another interface
//! already has an address in it, and kept in `<data>/nodes/network` so it stays the same
//! across restarts.
//!
//! Everything is idempotent: `ensure` reuses what a crashed `vmform up` left (an existing
//! namespace, veth or bridge of this data dir) and makes what is missing; `teardown`
//! removes whatever of it exists.
//!
//! Plain `ip` (iproute2) commands; it needs CAP_SYS_ADMIN and CAP_NET_ADMIN.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// One node's place in the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    pub netns: String,
    pub address: Ipv4Addr,
    /// The veth's end on the host, on the bridge.
    pub host_veth: String,
}

/// The network of one data dir's nodes.
#[derive(Debug, Clone)]
pub struct Network {
    pub bridge: String,
    pub bridge_address: Ipv4Addr,
    pub nodes: Vec<NodeNet>,
    /// The file that keeps the subnet.
    state: PathBuf,
}

/// The network's errors are [`Error::Network`]: what was being done, and what went wrong.
fn net_error(what: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Network { what: what.into(), detail: detail.into() }
}

/// 8 hex digits naming a data dir's network objects.
pub fn tag(data_dir: &Path) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data_dir.as_os_str().as_encoded_bytes());
    digest.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The namespace name of node `i` of a data dir.
pub fn netns_name(data_dir: &Path, i: usize) -> String {
    format!("vmform-{}-{i}", tag(data_dir))
}

impl Network {
    /// The network of `nodes` nodes of `data_dir` (names and addresses only; nothing is
    /// made). `state` is where the subnet is kept (`<data>/nodes/network`).
    pub fn plan(data_dir: &Path, state: &Path, nodes: usize) -> Network {
        let tag = tag(data_dir);
        let k = std::fs::read_to_string(state).ok().and_then(|s| s.trim().parse::<u8>().ok()).unwrap_or_else(|| free_subnet(&tag));
        Network {
            bridge: format!("vmf{tag}"),
            bridge_address: Ipv4Addr::new(10, 231, k, 254),
            nodes: (0..nodes)
                .map(|i| NodeNet {
                    netns: format!("vmform-{tag}-{i}"),
                    address: Ipv4Addr::new(10, 231, k, (i + 1) as u8),
                    host_veth: format!("vmf{tag}v{i}"),
                })
                .collect(),
            state: state.to_path_buf(),
        }
    }

    /// Make (or complete, or reuse) the bridge, the namespaces and the veths.
    pub fn ensure(&self) -> Result<(), Error> {
        if self.nodes.len() > 253 {
            return Err(net_error("too many nodes", format!("{} (at most 253)", self.nodes.len())));
        }
        let k = self.bridge_address.octets()[2];
        if let Some(parent) = self.state.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&self.state, format!("{k}\n"))
            .map_err(|e| net_error(format!("cannot write {}", self.state.display()), e.to_string()))?;
        if !link_exists(None, &self.bridge) {
            ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        }
        ip(&["addr", "replace", &format!("{}/24", self.bridge_address), "dev", &self.bridge])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        let existing = netns_list();
        for node in &self.nodes {
            if !existing.contains(&node.netns) {
                ip(&["netns", "add", &node.netns])?;
            }
            let ns = Some(node.netns.as_str());
            ip_in(ns, &["link", "set", "lo", "up"])?;
            if !link_exists(ns, "eth0") || !link_exists(None, &node.host_veth) {
                // Half a pair (or a stale one) is replaced whole.
                let _ = ip_in(ns, &["link", "del", "eth0"]);
                let _ = ip(&["link", "del", &node.host_veth]);
                ip(&["link", "add", &node.host_veth, "type", "veth", "peer", "name", "eth0", "netns", &node.netns])?;
            }
            ip(&["link", "set", &node.host_veth, "master", &self.bridge])?;
            ip(&["link", "set", &node.host_veth, "up"])?;
            ip_in(ns, &["addr", "replace", &format!("{}/24", node.address), "dev", "eth0"])?;
            ip_in(ns, &["link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Remove the namespaces (their veths go with them), any veth left on the host, and
    /// the bridge. Call once nothing runs in the namespaces any more.
    pub fn teardown(&self) -> Vec<Error> {
        teardown_tag(&self.bridge[3..])
    }
}

/// Remove every namespace, veth and bridge named after a data dir's tag, however many
/// nodes it had.
pub fn teardown_data_dir(data_dir: &Path) -> Vec<Error> {
    teardown_tag(&tag(data_dir))
}

fn teardown_tag(tag: &str) -> Vec<Error> {
    let mut errors = Vec::new();
    let prefix = format!("vmform-{tag}-");
    for ns in netns_list().into_iter().filter(|n| n.starts_with(&prefix)) {
        if let Err(e) = ip(&["netns", "del", &ns]) {
            errors.push(e);
        }
    }
    let links = host_links();
    let bridge = format!("vmf{tag}");
    let veth = format!("vmf{tag}v");
    for link in links.iter().filter(|l| l.starts_with(&veth)) {
        let _ = ip(&["link", "del", link]);
    }
    if links.contains(&bridge)
        && let Err(e) = ip(&["link", "del", &bridge])
    {
        errors.push(e);
    }
    errors
}

/// Whether network namespaces can be made here: `ip netns add` of a throwaway name.
pub fn probe() -> Result<(), Error> {
    let name = format!("vmform-probe-{}", std::process::id());
    ip(&["netns", "add", &name])?;
    let _ = ip(&["netns", "del", &name]);
    Ok(())
}

/// The first `k` from the hash whose 10.231.k.0/24 no interface uses.
fn free_subnet(tag: &str) -> u8 {
    let start = u8::from_str_radix(&tag[..2], 16).unwrap_or(0);
    let used = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    (0..=255u16)
        .map(|d| start.wrapping_add(d as u8))
        .find(|k| !used.contains(&format!(" 10.231.{k}.")))
        .unwrap_or(start)
}

fn netns_list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn host_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn link_exists(ns: Option<&str>, name: &str) -> bool {
    let mut args = vec![];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["link", "show", name]);
    Command::new("ip").args(&args).output().is_ok_and(|o| o.status.success())
}

fn ip(args: &[&str]) -> Result<(), Error> {
    ip_in(None, args)
}

fn ip_in(ns: Option<&str>, args: &[&str]) -> Result<(), Error> {
    let mut all = vec![];
    if let Some(ns) = ns {
        all.extend(["-n", ns]);
    }
    all.extend(args);
    let what = format!("ip {}", all.join(" "));
    let out = Command::new("ip").args(&all).output().map_err(|e| net_error(what.clone(), format!("cannot run ip (install iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(net_error(what, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_differ_per_data_dir() {
        let a = Network::plan(Path::new("/tmp/a"), Path::new("/nonexistent/a"), 3);
        let b = Network::plan(Path::new("/tmp/b"), Path::new("/nonexistent/b"), 3);
        assert_ne!(a.bridge, b.bridge);
        assert_ne!(a.nodes[0].netns, b.nodes[0].netns);
        for n in &a.nodes {
            assert!(n.host_veth.len() <= 15, "{}", n.host_veth);
        }
        assert!(a.bridge.len() <= 15);
        assert_eq!(a.nodes[2].address.octets()[3], 3);
        assert_eq!(a.nodes[0].netns, netns_name(Path::new("/tmp/a"), 0));
    }
}
