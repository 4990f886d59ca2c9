//! What a project owns, recorded as a Kubernetes ApplySet (KEP-3659), so `kubectl`
//! understands it too: a parent ConfigMap carries the ApplySet id and the group-kinds
//! and namespaces of its members; each member carries the `applyset.kubernetes.io/part-of`
//! label with that id.

use base64::Engine;
use serde_json::{json, Value};

pub const PART_OF: &str = "applyset.kubernetes.io/part-of";
pub const ID: &str = "applyset.kubernetes.io/id";
pub const TOOLING: &str = "applyset.kubernetes.io/tooling";
pub const CONTAINS_GROUP_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";
pub const ADDITIONAL_NAMESPACES: &str = "applyset.kubernetes.io/additional-namespaces";
/// Where the parents live: every cluster has it.
pub const PARENT_NAMESPACE: &str = "default";
/// Kept on applied VMs so a later plan knows, from the cluster alone, that removing the
/// VM (pruning it) is forbidden.
pub const PREVENT_DESTROY: &str = "vmform.io/prevent-destroy";
/// The run strategy the specs had at the last apply: a live run strategy that differs
/// from it was changed by a VM action; one that differs from the specs only because the
/// specs changed is a change to make.
pub const APPLIED_RUN_STRATEGY: &str = "vmform.io/applied-run-strategy";
/// The field manager of every vmform write.
pub const FIELD_MANAGER: &str = "vmform";
/// On the ApplySet parent: the namespaces vmform created for the project (comma-separated).
/// Only these are removed again, once empty; namespaces that existed before never are.
pub const CREATED_NAMESPACES: &str = "vmform.io/created-namespaces";

/// One project's ApplySet.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplySet {
    pub project: String,
    /// The parent ConfigMap's name.
    pub parent: String,
    pub id: String,
}

/// A project name as a DNS-1123 label fragment: lowercase, other characters as `-`.
fn sanitise(project: &str) -> String {
    let s: String = project.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "project".into() } else { s.chars().take(50).collect() }
}

impl ApplySet {
    pub fn new(project: &str) -> ApplySet {
        let parent = format!("vmform-{}", sanitise(project));
        // The id is fixed by the ApplySet specification: base64url(sha256("<name>.<namespace>.<kind>.<group>")).
        let digest = ring::digest::digest(&ring::digest::SHA256, format!("{parent}.{PARENT_NAMESPACE}.ConfigMap.").as_bytes());
        let id = format!("applyset-{}-v1", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()));
        ApplySet { project: project.to_string(), parent, id }
    }

    /// The label selector of the members.
    pub fn selector(&self) -> String {
        format!("{PART_OF}={}", self.id)
    }

    /// The parent object, naming the namespaces its members live in.
    pub fn parent_object(&self, namespaces: &[String], group_kinds: &[&str], created: &[String]) -> Value {
        let additional: Vec<&str> = namespaces.iter().map(String::as_str).filter(|n| *n != PARENT_NAMESPACE).collect();
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.parent,
                "namespace": PARENT_NAMESPACE,
                "labels": { ID: self.id, "app.kubernetes.io/managed-by": "vmform" },
                "annotations": {
                    TOOLING: format!("vmform/v{}", env!("CARGO_PKG_VERSION")),
                    CONTAINS_GROUP_KINDS: group_kinds.join(","),
                    ADDITIONAL_NAMESPACES: additional.join(","),
                    CREATED_NAMESPACES: created.join(","),
                    "vmform.io/project": self.project,
                },
            },
            "data": { "project": self.project },
        })
    }
}

/// Whether `object` belongs to this ApplySet.
pub fn is_member(object: &Value, set: &ApplySet) -> bool {
    object.pointer("/metadata/labels").and_then(|l| l.get(PART_OF)).and_then(Value::as_str) == Some(set.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_follows_the_applyset_specification() {
        let set = ApplySet::new("Shop Prod");
        assert_eq!(set.parent, "vmform-shop-prod");
        assert!(set.id.starts_with("applyset-") && set.id.ends_with("-v1"));
        // 32 bytes of SHA-256 in unpadded base64url: 43 characters.
        assert_eq!(set.id.len(), "applyset-".len() + 43 + "-v1".len());
        assert_ne!(ApplySet::new("shop").id, ApplySet::new("shop2").id);
        let parent = set.parent_object(&["default".into(), "shop".into()], &["VirtualMachine.kubevirt.io"], &[]);
        assert_eq!(parent["metadata"]["annotations"][ADDITIONAL_NAMESPACES], "shop");
    }
}
