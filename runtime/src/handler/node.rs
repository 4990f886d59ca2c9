//! The handler's Node: registered with this machine's capacity, kept Ready, and a
//! heartbeat Lease in `kube-node-lease` renewed as the kubelet renews its own.

use crate::accel::{ACCEL_ANNOTATION, ACCEL_CHOICE_ANNOTATION, ACCEL_REASON_ANNOTATION};
use crate::kubevirt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use std::time::Duration;

pub(super) struct NodeInfo<'a> {
    pub name: &'a str,
    /// The node's accelerator and what it was asked for; `None`: it runs no guests.
    pub accel: Option<(&'a crate::accel::Verdict, crate::accel::AccelChoice)>,
    pub libvirt_uri: &'a str,
    /// The node's InternalIP (127.0.0.1 when `None`); with one, libvirt also answers on
    /// TCP there, for migrations.
    pub address: Option<std::net::IpAddr>,
    /// [`storage_id`]: nodes that agree see the same files.
    pub storage: &'a str,
    /// Labels given to the node (`--node-label`); a label set on the Node by hand stays too.
    pub labels: &'a [(String, String)],
}

/// Which files a node sees: this machine (its machine id, else its boot id) and the
/// volumes dir. The nodes `vmform up --nodes N` runs on one machine all agree, so a
/// migration between them needs no copy of shared disks and claims.
pub(super) fn storage_id(volumes_dir: &std::path::Path) -> String {
    let machine = ["/etc/machine-id", "/proc/sys/kernel/random/boot_id"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    format!("{machine}:{}", volumes_dir.display())
}

/// Create or update the Node and mark it Ready.
pub(super) async fn register(client: &Client, info: &NodeInfo<'_>) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = json!({});
    for (key, value) in info.labels {
        labels[key] = json!(value);
    }
    // Written after the given ones: these say what the node is.
    labels["kubernetes.io/hostname"] = json!(info.name);
    labels["kubernetes.io/os"] = json!("linux");
    labels["kubernetes.io/arch"] = json!(std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"));
    labels["kubevirt.io/schedulable"] = json!("true");
    let (accel, reason, choice) = match info.accel {
        Some((verdict, choice)) => (verdict.accel.as_str(), verdict.reason.as_str(), choice.as_str()),
        None => ("", "", ""),
    };
    let mut annotations = json!({
        ACCEL_ANNOTATION: accel, ACCEL_REASON_ANNOTATION: reason, ACCEL_CHOICE_ANNOTATION: choice,
        "vmform.io/libvirt-uri": info.libvirt_uri, kubevirt::STORAGE_ANNOTATION: info.storage,
    });
    if let Some(address) = info.address {
        annotations[kubevirt::MIGRATION_URI_ANNOTATION] = json!(migration_uri(&address.to_string()));
    }
    if nodes.get_opt(info.name).await?.is_none() {
        let node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": info.name, "labels": labels, "annotations": annotations },
            "spec": {},
        }))
        .expect("a Node deserialises");
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    } else {
        let patch = json!({ "metadata": { "labels": labels, "annotations": annotations } });
        nodes.patch(info.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let address = info.address.map_or("127.0.0.1".to_string(), |a| a.to_string());
    let addresses = json!({ "status": { "addresses": [{ "type": "Hostname", "address": info.name }, { "type": "InternalIP", "address": address }] } });
    nodes.patch_status(info.name, &PatchParams::default(), &Patch::Merge(&addresses)).await?;
    set_ready(client, info.name).await
}

/// The libvirt URI migrations to a node at `address` go to.
pub(super) fn migration_uri(address: &str) -> String {
    format!("qemu+tcp://{address}/system")
}

/// Record a node whose handler cannot run guests, with why (`reason`, a condition
/// reason such as `LibvirtUnavailable`): the scheduler places nothing on it, and
/// `kubectl get node -o yaml` tells the user.
pub(super) async fn register_unavailable(client: &Client, name: &str, reason: &str, message: &str) -> Result<(), kube::Error> {
    register(client, &NodeInfo { name, accel: None, libvirt_uri: "", address: None, storage: "", labels: &[] }).await?;
    set_condition(client, name, false, reason, message).await
}

async fn set_ready(client: &Client, name: &str) -> Result<(), kube::Error> {
    set_condition(client, name, true, "HandlerReady", "the vmform handler is posting ready status").await
}

/// Write the node's capacity and its Ready condition (its addresses are `register`'s).
async fn set_condition(client: &Client, name: &str, ready: bool, reason: &str, message: &str) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let (cpus, memory_kib) = capacity();
    let now = kubevirt::now();
    let resources = json!({ "cpu": cpus.to_string(), "memory": format!("{memory_kib}Ki"), "pods": "110" });
    let status = json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": if ready { "True" } else { "False" }, "reason": reason,
            "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "nodeInfo": {
            "architecture": std::env::consts::ARCH, "operatingSystem": "linux",
            "kubeletVersion": concat!("vmform-handler/", env!("CARGO_PKG_VERSION")),
            "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "osImage": "", "containerRuntimeVersion": "libvirt", "kubeProxyVersion": "",
            "machineID": "", "systemUUID": "", "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim(),
        },
    });
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({ "status": status }))).await?;
    Ok(())
}

/// This machine's CPUs and memory (KiB).
fn capacity() -> (usize, u64) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpus, memory)
}

/// Renew the node's Lease every quarter of its duration, forever; a node that was marked
/// NotReady while the handler was away is marked Ready again.
pub(super) async fn heartbeat(client: Client, name: String, duration: Duration) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), kubevirt::NODE_LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client.clone());
    let mut tick = tokio::time::interval((duration / 4).max(Duration::from_millis(250)));
    loop {
        tick.tick().await;
        let renew = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": name, "namespace": kubevirt::NODE_LEASE_NAMESPACE },
            "spec": { "holderIdentity": name, "leaseDurationSeconds": duration.as_secs().max(1), "renewTime": renew },
        });
        let result = leases.patch(&name, &PatchParams::apply("vmform-handler").force(), &Patch::Apply(&lease)).await;
        if let Err(e) = result {
            tracing::warn!("cannot renew the lease of node {name}: {e}");
            continue;
        }
        match nodes.get_opt(&name).await {
            Ok(Some(node)) if !crate::semantics::node_is_ready(&node) => {
                if let Err(e) = set_ready(&client, &name).await {
                    tracing::warn!("cannot mark node {name} Ready: {e}");
                }
            }
            _ => {}
        }
    }
}
