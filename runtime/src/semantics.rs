//! KubeVirt semantics the controller and the handler both follow, beyond the reading of
//! objects in [`crate::kubevirt`]: when a Node counts as Ready. The controller and the
//! handler are peers; what both need lives here (or in [`crate::volumes`] for the claims'
//! files), below both, so neither reaches into the other.

use k8s_openapi::api::core::v1::Node;

/// Whether a Node's Ready condition is True.
pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
