//! The VirtualMachineInstance reconciler: refuses what the runtime cannot serve, places a
//! pending VMI on a Ready node with room for it (KubeVirt leaves this to the pod
//! scheduler; vmform has no pods), and fails VMIs whose node stopped answering.

use super::{Context, ControllerError};
use crate::kubevirt::{self, Demand, Phase};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn reconcile(vmi: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
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
    let demand = kubevirt::demand(&vmi.data["spec"]);
    let selector: BTreeMap<String, String> = vmi.data.pointer("/spec/nodeSelector").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    let mut placements = ctx.placements.lock().await;
    let nodes = ctx.nodes.state();
    let vmis = ctx.vmis.state();
    // What each node has taken: the VMIs the cache shows on it, plus placements made
    // since that the cache may not show yet.
    let mut used: BTreeMap<String, Demand> = BTreeMap::new();
    let uid = vmi.metadata.uid.clone().unwrap_or_default();
    placements.retain(|p_uid, _| vmis.iter().any(|v| v.metadata.uid.as_deref() == Some(p_uid) && !Phase::of(v).is_final() && v.data.pointer("/status/nodeName").is_none()));
    for v in vmis.iter().filter(|v| !Phase::of(v).is_final() && v.metadata.uid.as_deref() != Some(&uid)) {
        if let Some(n) = v.data.pointer("/status/nodeName").and_then(Value::as_str) {
            add(used.entry(n.to_string()).or_default(), kubevirt::demand(&v.data["spec"]));
        }
    }
    for (p_uid, (n, d)) in placements.iter() {
        if *p_uid != uid {
            add(used.entry(n.clone()).or_default(), *d);
        }
    }
    let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut best: Option<(String, u64)> = None;
    for node in nodes.iter() {
        let reason = if !is_ready(node) {
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
    let Some((node, _)) = best else {
        // The scheduler's own wording: "0/1 nodes are available: 1 Insufficient memory."
        let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        let message = if nodes.is_empty() {
            "0/0 nodes are available: no node is registered (is a handler running?).".to_string()
        } else {
            format!("0/{} nodes are available: {}.", nodes.len(), detail.join(", "))
        };
        let c = condition(&vmi, "PodScheduled", false, "Unschedulable", &message);
        if kubevirt::condition(&vmi, "PodScheduled") != Some(&c) {
            set_status(&api, &vmi, Phase::Pending, None, vec![c]).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(5)));
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
    set_status(&api, &vmi, Phase::Scheduled, Some(&node), vec![condition(&vmi, "PodScheduled", true, "", "")]).await?;
    Ok(Action::await_change())
}

fn add(total: &mut Demand, more: Demand) {
    total.cpu_millis += more.cpu_millis;
    total.memory_bytes += more.memory_bytes;
}

pub(super) fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
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
async fn set_status(api: &Api<DynamicObject>, vmi: &DynamicObject, phase: Phase, node: Option<&str>, conditions: Vec<Value>) -> Result<DynamicObject, ControllerError> {
    let mut patch = kubevirt::phase_patch(vmi, phase, conditions);
    if let Some(node) = node {
        patch["status"]["nodeName"] = json!(node);
    }
    Ok(api.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

async fn remove_finalizer(api: &Api<DynamicObject>, vmi: &DynamicObject) -> Result<(), ControllerError> {
    super::vm::remove_finalizer(api, vmi, kubevirt::HANDLER_FINALIZER).await
}
