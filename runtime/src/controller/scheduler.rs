//! The VirtualMachineInstance reconciler: refuses what the runtime cannot serve, places a
//! pending VMI on a Ready node with room for it (KubeVirt leaves this to the pod
//! scheduler; vmform has no pods), and fails VMIs whose node stopped answering.

use super::Context;
use crate::Error;
use crate::kubevirt::{self, Demand, Phase};
use crate::semantics::node_is_ready as is_ready;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn reconcile(vmi: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = vmi.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.vmi_resource);
    let Some(vmi) = api.get_opt(&vmi.name_any()).await? else { return Ok(Action::await_change()) };
    let node_name = vmi.data.pointer("/status/nodeName").and_then(Value::as_str).map(str::to_string);
    let node = node_name.as_deref().and_then(|n| ctx.nodes.get(&kube::runtime::reflector::ObjectRef::new(n)));
    let node_ready = node.as_deref().is_some_and(is_ready);

    if kubevirt::is_deleting(&vmi.metadata) {
        // Only a live handler can confirm its guest is gone; with no node (never
        // scheduled) or a node that stopped answering, nobody else will.
        if kubevirt::has_finalizer(&vmi.metadata, kubevirt::HANDLER_FINALIZER) && !node_ready {
            let vmi = if Phase::of(&vmi).is_final() {
                vmi
            } else {
                let message = match &node_name {
                    None => "deleted before it was scheduled".to_string(),
                    Some(n) => format!("deleted while its node {n} was not ready"),
                };
                set_status(&api, &vmi, Phase::Failed, None, vec![condition(&vmi, "Ready", false, "PodTerminating", &message)]).await?
            };
            remove_finalizer(&api, &vmi).await?;
        }
        return Ok(Action::await_change());
    }
    let phase = Phase::of(&vmi);
    if phase.is_final() {
        return Ok(Action::await_change());
    }
    if let Some(node) = node_name {
        if !node_ready {
            let reason = match ctx.nodes.get(&kube::runtime::reflector::ObjectRef::new(&node)) {
                None => format!("node {node} does not exist any more"),
                Some(_) => format!("node {node} is not ready: its handler stopped renewing its lease"),
            };
            set_status(&api, &vmi, Phase::Failed, None, vec![condition(&vmi, "Ready", false, "NodeUnresponsive", &reason)]).await?;
        }
        return Ok(Action::await_change());
    }

    let problems = ctx.unsupported(&vmi.data["spec"]);
    if !problems.is_empty() {
        let message = problems.join("; ");
        set_status(&api, &vmi, Phase::Failed, None, vec![condition(&vmi, "Synchronized", false, "Unsupported", &message)]).await?;
        return Ok(Action::await_change());
    }
    // KubeVirt waits for a missing claim (ErrorPvcNotFound) rather than failing.
    let missing = ctx.volumes.missing_claims(&namespace, &vmi.data["spec"]);
    if !missing.is_empty() {
        let message = format!("PersistentVolumeClaim {} not found: the local runtime keeps each claim as a file there", missing.join(", "));
        let c = condition(&vmi, "Synchronized", false, "FailedPvcNotFound", &message);
        if kubevirt::condition(&vmi, "Synchronized") != Some(&c) {
            set_status(&api, &vmi, Phase::Pending, None, vec![c]).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let demand = kubevirt::demand(&vmi.data["spec"]);
    let selector: BTreeMap<String, String> = vmi.data.pointer("/spec/nodeSelector").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    let mut placements = ctx.placements.lock().await;
    let nodes = ctx.nodes.state();
    let vmis = ctx.vmis.state();
    // What each node has taken: the VMIs the cache shows on it, plus placements made
    // since that the cache may not show yet.
    let uid = vmi.metadata.uid.clone().unwrap_or_default();
    placements.retain(|p_uid, _| vmis.iter().any(|v| v.metadata.uid.as_deref() == Some(p_uid) && !Phase::of(v).is_final() && v.data.pointer("/status/nodeName").is_none()));
    let mut used = used_by_node(&vmis, &uid);
    for (p_uid, (n, d)) in placements.iter() {
        if *p_uid != uid {
            add(used.entry(n.clone()).or_default(), *d);
        }
    }
    let node = match choose_node(nodes.iter().map(|n| n.as_ref()), &used, demand, &selector, None) {
        Ok(node) => node,
        Err(message) => {
            let c = condition(&vmi, "PodScheduled", false, "Unschedulable", &message);
            if kubevirt::condition(&vmi, "PodScheduled") != Some(&c) {
                set_status(&api, &vmi, Phase::Pending, None, vec![c]).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    placements.insert(uid, (node.clone(), demand));
    drop(placements);
    let mut finalizers = vmi.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == kubevirt::HANDLER_FINALIZER) {
        finalizers.push(kubevirt::HANDLER_FINALIZER.to_string());
    }
    let patch = json!({
        "metadata": { "labels": { kubevirt::NODE_NAME_LABEL: node }, "finalizers": finalizers, "resourceVersion": vmi.resource_version() },
    });
    let vmi = api.patch(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let mut conditions = vec![condition(&vmi, "PodScheduled", true, "", "")];
    if kubevirt::condition(&vmi, "Synchronized").is_some() {
        conditions.push(condition(&vmi, "Synchronized", true, "", ""));
    }
    set_status(&api, &vmi, Phase::Scheduled, Some(&node), conditions).await?;
    Ok(Action::await_change())
}

/// What each node has taken: every VMI that is not final on its node, and a migrating one
/// on its target too (the target holds its room from the hand-over on). `except`: the uid
/// of the VMI being placed.
pub(super) fn used_by_node(vmis: &[Arc<DynamicObject>], except: &str) -> BTreeMap<String, Demand> {
    let mut used: BTreeMap<String, Demand> = BTreeMap::new();
    for v in vmis.iter().filter(|v| !Phase::of(v).is_final() && v.metadata.uid.as_deref() != Some(except)) {
        let demand = kubevirt::demand(&v.data["spec"]);
        if let Some(n) = v.data.pointer("/status/nodeName").and_then(Value::as_str) {
            add(used.entry(n.to_string()).or_default(), demand);
        }
        if let Some(ms) = kubevirt::MigrationState::of(v).filter(kubevirt::MigrationState::in_flight) {
            add(used.entry(ms.target_node).or_default(), demand);
        }
    }
    used
}

/// The node for a VMI: Ready, schedulable, matching its node selector, not `source` (a
/// migration's), with room for its demand beside what `used` says each node has taken;
/// of those, the one with the most memory left. Else the Kubernetes scheduler's message,
/// e.g. `0/1 nodes are available: 1 Insufficient memory.`
pub(super) fn choose_node<'a>(
    nodes: impl ExactSizeIterator<Item = &'a Node>,
    used: &BTreeMap<String, Demand>,
    demand: Demand,
    selector: &BTreeMap<String, String>,
    source: Option<&str>,
) -> Result<String, String> {
    let total = nodes.len();
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut best: Option<(String, u64)> = None;
    for node in nodes {
        let reason = if source == Some(node.name_any().as_str()) {
            // KubeVirt's target pod has anti-affinity to the source's.
            Some("node(s) didn't match pod anti-affinity rules")
        } else if !is_ready(node) {
            Some("node(s) were not ready")
        } else if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
            Some("node(s) were unschedulable")
        } else if !selector.iter().all(|(k, v)| node.labels().get(k) == Some(v)) {
            Some("node(s) didn't match Pod's node affinity/selector")
        } else {
            let (cpu, memory) = allocatable(node);
            let taken = used.get(&node.name_any()).copied().unwrap_or_default();
            if taken.memory_bytes + demand.memory_bytes > memory {
                Some("Insufficient memory")
            } else if taken.cpu_millis + demand.cpu_millis > cpu {
                Some("Insufficient cpu")
            } else {
                let free = memory - taken.memory_bytes - demand.memory_bytes;
                if best.as_ref().is_none_or(|(_, f)| free > *f) {
                    best = Some((node.name_any(), free));
                }
                None
            }
        };
        if let Some(r) = reason {
            *reasons.entry(r).or_default() += 1;
        }
    }
    match best {
        Some((node, _)) => Ok(node),
        None if total == 0 => Err("0/0 nodes are available: no node is registered (is a handler running?).".to_string()),
        None => {
            let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            Err(format!("0/{total} nodes are available: {}.", detail.join(", ")))
        }
    }
}

fn add(total: &mut Demand, more: Demand) {
    total.cpu_millis += more.cpu_millis;
    total.memory_bytes += more.memory_bytes;
}

/// A node's allocatable CPU (millicores) and memory (bytes).
fn allocatable(node: &Node) -> (u64, u64) {
    let status = node.status.as_ref();
    let get = |key: &str| {
        status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .and_then(|m| m.get(key))
            .and_then(|q| kubevirt::quantity(&Value::String(q.0.clone())))
    };
    (get("cpu").map(|c| (c * 1000.0) as u64).unwrap_or(0), get("memory").map(|m| m as u64).unwrap_or(0))
}

fn condition(vmi: &DynamicObject, kind: &str, status: bool, reason: &str, message: &str) -> Value {
    kubevirt::make_condition(kind, status, reason, message, kubevirt::condition(vmi, kind), &kubevirt::now())
}

/// Write the VMI's phase (and node) with the given conditions replacing those of the
/// same type; guarded by the resourceVersion read.
async fn set_status(api: &Api<DynamicObject>, vmi: &DynamicObject, phase: Phase, node: Option<&str>, conditions: Vec<Value>) -> Result<DynamicObject, Error> {
    let mut patch = kubevirt::phase_patch(vmi, phase, conditions);
    if let Some(node) = node {
        patch["status"]["nodeName"] = json!(node);
    }
    Ok(api.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

async fn remove_finalizer(api: &Api<DynamicObject>, vmi: &DynamicObject) -> Result<(), Error> {
    super::vm::remove_finalizer(api, vmi, kubevirt::HANDLER_FINALIZER).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, cpu: &str, memory: &str, labels: serde_json::Value, unschedulable: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": name, "labels": labels },
            "spec": { "unschedulable": unschedulable },
            "status": {
                "allocatable": { "cpu": cpu, "memory": memory },
                "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "Unknown" } }],
            },
        }))
        .unwrap()
    }

    const SMALL: Demand = Demand { cpu_millis: 100, memory_bytes: 128 << 20 };

    #[test]
    fn picks_the_ready_matching_node_with_the_most_memory_left() {
        let nodes = [
            node("a", true, "2", "1Gi", json!({ "zone": "x" }), false),
            node("b", true, "2", "4Gi", json!({ "zone": "x" }), false),
            node("c", true, "2", "8Gi", json!({ "zone": "y" }), false),
            node("d", false, "2", "64Gi", json!({ "zone": "x" }), false),
            node("e", true, "2", "64Gi", json!({ "zone": "x" }), true),
        ];
        let none = BTreeMap::new();
        assert_eq!(choose_node(nodes.iter(), &none, SMALL, &BTreeMap::new(), None), Ok("c".into()));
        let zone_x = BTreeMap::from([("zone".to_string(), "x".to_string())]);
        assert_eq!(choose_node(nodes.iter(), &none, SMALL, &zone_x, None), Ok("b".into()));
        // What is already placed counts.
        let used = BTreeMap::from([("b".to_string(), Demand { cpu_millis: 0, memory_bytes: 3900 << 20 })]);
        assert_eq!(choose_node(nodes.iter(), &used, SMALL, &zone_x, None), Ok("a".into()));
        // A migration never targets its source.
        assert_eq!(choose_node(nodes.iter(), &none, SMALL, &BTreeMap::new(), Some("c")), Ok("b".into()));
    }

    #[test]
    fn says_why_nothing_fits_as_the_kubernetes_scheduler_does() {
        let nodes = [node("local", true, "2", "1Gi", json!({}), false)];
        let none = BTreeMap::new();
        let huge = Demand { cpu_millis: 100, memory_bytes: 4 << 30 };
        assert_eq!(choose_node(nodes.iter(), &none, huge, &BTreeMap::new(), None), Err("0/1 nodes are available: 1 Insufficient memory.".into()));
        // 20 one-vCPU guests fill two cores at KubeVirt's 100m per vCPU; the 21st does not fit.
        let full = BTreeMap::from([("local".to_string(), Demand { cpu_millis: 2000, memory_bytes: 0 })]);
        assert_eq!(choose_node(nodes.iter(), &full, SMALL, &BTreeMap::new(), None), Err("0/1 nodes are available: 1 Insufficient cpu.".into()));
        let elsewhere = BTreeMap::from([("zone".to_string(), "z".to_string())]);
        assert_eq!(
            choose_node(nodes.iter(), &none, SMALL, &elsewhere, None),
            Err("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.".into())
        );
        assert!(choose_node(std::iter::empty(), &none, SMALL, &BTreeMap::new(), None).unwrap_err().contains("no node is registered"));
        let two = [node("local-0", true, "2", "1Gi", json!({}), false), node("local-1", true, "2", "1Gi", json!({}), true)];
        assert_eq!(
            choose_node(two.iter(), &none, SMALL, &BTreeMap::new(), Some("local-0")),
            Err("0/2 nodes are available: 1 node(s) didn't match pod anti-affinity rules, 1 node(s) were unschedulable.".into())
        );
    }
}
