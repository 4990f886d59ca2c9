//! Node lifecycle: a node whose handler stopped renewing its heartbeat Lease goes
//! NotReady (Ready=Unknown, as the Kubernetes node controller writes it). The scheduler
//! then fails the VMIs on it, and their run strategies decide what happens next.

use crate::semantics::node_is_ready as is_ready;
use crate::kubevirt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector;
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::Duration;

pub(super) async fn watch_leases(client: Client, nodes: reflector::Store<Node>, interval: Duration) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), kubevirt::NODE_LEASE_NAMESPACE);
    let node_api: Api<Node> = Api::all(client);
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let Ok(list) = leases.list(&Default::default()).await else { continue };
        let now = k8s_openapi::jiff::Timestamp::now();
        for node in nodes.state().iter().filter(|n| is_ready(n)) {
            let lease = list.items.iter().find(|l| l.name_any() == node.name_any());
            let expired = match lease.and_then(|l| l.spec.as_ref()) {
                Some(spec) => {
                    let renewed = spec.renew_time.as_ref().map(|t| t.0.as_millisecond());
                    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(40));
                    renewed.is_none_or(|t| t + duration * 1000 < now.as_millisecond())
                }
                None => true,
            };
            if expired {
                tracing::warn!("node {} stopped renewing its lease: marking it NotReady", node.name_any());
                let mut conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
                let stamp = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
                for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("The node's handler stopped renewing its lease.".into());
                    c.last_transition_time = Some(stamp.clone());
                }
                let patch = json!({ "metadata": { "resourceVersion": node.resource_version() }, "status": { "conditions": conditions } });
                if let Err(e) = node_api.patch_status(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                    tracing::warn!("cannot mark node {} NotReady: {e}", node.name_any());
                }
            }
        }
    }
}
