//! The resources the local control plane serves, and their discovery documents.

use serde_json::{json, Value};

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// The URL segment: `virtualmachines`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether `status` is a subresource: writes to the main resource then leave status
    /// alone, and writes to `/status` touch nothing else.
    pub has_status: bool,
}

const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

pub const VIRTUAL_MACHINE: Resource = Resource {
    group: "kubevirt.io",
    version: "v1",
    plural: "virtualmachines",
    singular: "virtualmachine",
    kind: "VirtualMachine",
    namespaced: true,
    short_names: &["vm", "vms"],
    categories: &["all"],
    has_status: true,
};

pub const VIRTUAL_MACHINE_INSTANCE: Resource = Resource {
    group: "kubevirt.io",
    version: "v1",
    plural: "virtualmachineinstances",
    singular: "virtualmachineinstance",
    kind: "VirtualMachineInstance",
    namespaced: true,
    short_names: &["vmi", "vmis"],
    categories: &["all"],
    has_status: true,
};

pub const MIGRATION: Resource = Resource {
    group: "kubevirt.io",
    version: "v1",
    plural: "virtualmachineinstancemigrations",
    singular: "virtualmachineinstancemigration",
    kind: "VirtualMachineInstanceMigration",
    namespaced: true,
    short_names: &["vmim", "vmims"],
    categories: &["all"],
    has_status: true,
};

/// KubeVirt's MigrationPolicy: migration options for the VMIs (and namespaces) it selects.
pub const MIGRATION_POLICY: Resource = Resource {
    group: "migrations.kubevirt.io",
    version: "v1alpha1",
    plural: "migrationpolicies",
    singular: "migrationpolicy",
    kind: "MigrationPolicy",
    namespaced: false,
    short_names: &[],
    categories: &["all"],
    has_status: true,
};

pub const NAMESPACE: Resource = Resource {
    group: "",
    version: "v1",
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    has_status: true,
};

pub const NODE: Resource = Resource {
    group: "",
    version: "v1",
    plural: "nodes",
    singular: "node",
    kind: "Node",
    namespaced: false,
    short_names: &["no"],
    categories: &[],
    has_status: true,
};

pub const EVENT: Resource = Resource {
    group: "",
    version: "v1",
    plural: "events",
    singular: "event",
    kind: "Event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    has_status: false,
};

/// ConfigMap: the parent object of an ApplySet (`vmform apply`'s inventory), as kubectl
/// uses one.
pub const CONFIG_MAP: Resource = Resource {
    group: "",
    version: "v1",
    plural: "configmaps",
    singular: "configmap",
    kind: "ConfigMap",
    namespaced: true,
    short_names: &["cm"],
    categories: &[],
    has_status: false,
};

pub const LEASE: Resource = Resource {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    singular: "lease",
    kind: "Lease",
    namespaced: true,
    short_names: &[],
    categories: &[],
    has_status: false,
};

/// Every served resource, in discovery order.
pub const ALL: [&Resource; 9] =
    [&NAMESPACE, &NODE, &EVENT, &CONFIG_MAP, &LEASE, &VIRTUAL_MACHINE, &VIRTUAL_MACHINE_INSTANCE, &MIGRATION, &MIGRATION_POLICY];

/// The groups other than core, each with its one version.
pub const GROUPS: [(&str, &str); 3] = [("coordination.k8s.io", "v1"), ("kubevirt.io", "v1"), ("migrations.kubevirt.io", "v1alpha1")];

impl Resource {
    /// `kubevirt.io/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }
    /// `VirtualMachineList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    /// `virtualmachines.kubevirt.io`, as error messages name a resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
    /// The resource served at `group/version/plural`, if any.
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        ALL.into_iter().find(|r| r.group == group && r.version == version && r.plural == plural)
    }
    /// The resource of an object's `apiVersion` and `kind`.
    pub fn for_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
        ALL.into_iter().find(|r| r.api_version() == api_version && r.kind == kind)
    }
}

/// `APIResourceList` for one group version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if group == kubevirt_actions::GROUP {
        return kubevirt_actions::resource_list(version);
    }
    let served: Vec<&Resource> = ALL.into_iter().filter(|r| r.group == group && r.version == version).collect();
    if served.is_empty() {
        return None;
    }
    let mut resources = vec![];
    for r in served {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }))
}

/// `APIGroup` for one named group.
pub fn group(name: &str) -> Option<Value> {
    if name == kubevirt_actions::GROUP {
        return Some(kubevirt_actions::group());
    }
    let (_, version) = GROUPS.iter().find(|(g, _)| *g == name)?;
    let gv = json!({ "groupVersion": format!("{name}/{version}"), "version": version });
    Some(json!({ "kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": [gv], "preferredVersion": gv }))
}

/// `APIGroupList` of every named group, KubeVirt's subresource group last (virt-api is
/// an aggregated API server).
pub fn group_list() -> Value {
    let mut groups: Vec<Value> = GROUPS.iter().filter_map(|(g, _)| group(g)).collect();
    groups.push(kubevirt_actions::group());
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// KubeVirt's subresource API group (`subresources.kubevirt.io`, as virt-api serves it):
/// what discovery and routing know of it. The actions themselves are `subresources.rs`'s,
/// which sits above the handlers; discovery and routing sit below them.
pub mod kubevirt_actions {
    use serde_json::{json, Value};

    pub const GROUP: &str = "subresources.kubevirt.io";
    /// The versions virt-api serves; `v1` is preferred, `v1alpha3` answers the same.
    pub const VERSIONS: [&str; 2] = ["v1", "v1alpha3"];
    /// The VM actions served, in discovery order.
    pub const VM_ACTIONS: [&str; 4] = ["start", "stop", "restart", "migrate"];
    /// `APIResourceList` of `subresources.kubevirt.io/<version>`: like virt-api's, entries
    /// with only a name (every one a subresource, so `kubectl api-resources` lists none).
    pub fn resource_list(version: &str) -> Option<Value> {
        if !VERSIONS.contains(&version) {
            return None;
        }
        let resources: Vec<Value> = VM_ACTIONS
            .iter()
            .map(|a| json!({ "name": format!("virtualmachines/{a}"), "singularName": "", "namespaced": true, "kind": "", "verbs": ["update"] }))
            .collect();
        Some(json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{version}"), "resources": resources }))
    }

    /// `APIGroup` of `subresources.kubevirt.io`.
    pub fn group() -> Value {
        let versions: Vec<Value> = VERSIONS.iter().map(|v| json!({ "groupVersion": format!("{GROUP}/{v}"), "version": v })).collect();
        json!({ "kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": versions, "preferredVersion": versions[0] })
    }
}

/// `APIVersions` of the core group, with the address clients should use.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

/// The path of a group version in OpenAPI v3 discovery: `api/v1`, `apis/kubevirt.io/v1`.
fn openapi_v3_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// `/openapi/v3`: where each group version's document is.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut versions: Vec<(&str, &str)> = vec![("", "v1")];
    versions.extend(GROUPS);
    for (group, version) in versions {
        let path = openapi_v3_path(group, version);
        paths.insert(path.clone(), json!({ "serverRelativeURL": format!("/openapi/v3/{path}") }));
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/<group version>`: the operations of each served resource, enough for
/// kubectl to see that writes take `fieldValidation` (it then leaves validation to the
/// server instead of downloading schemas). The object schemas themselves are not
/// published: `kubectl explain` has nothing to show.
pub fn openapi_v3(path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let served: Vec<&Resource> = ALL.into_iter().filter(|r| r.group == group && r.version == version).collect();
    if served.is_empty() {
        return None;
    }
    let prefix = format!("/{}", openapi_v3_path(group, version));
    let field_validation = json!({ "name": "fieldValidation", "in": "query", "schema": { "type": "string", "uniqueItems": true } });
    let field_manager = json!({ "name": "fieldManager", "in": "query", "schema": { "type": "string", "uniqueItems": true } });
    let dry_run = json!({ "name": "dryRun", "in": "query", "schema": { "type": "string", "uniqueItems": true } });
    let mut paths = serde_json::Map::new();
    for r in served {
        let gvk = json!({ "group": r.group, "version": r.version, "kind": r.kind });
        let write = |action: &str| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [field_validation, field_manager, dry_run],
                "responses": { "200": { "description": "OK" } },
            })
        };
        let read = |action: &str| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": { "200": { "description": "OK" } },
            })
        };
        let scope = if r.namespaced { format!("{prefix}/namespaces/{{namespace}}/{}", r.plural) } else { format!("{prefix}/{}", r.plural) };
        paths.insert(scope.clone(), json!({ "get": read("list"), "post": write("post"), "delete": read("deletecollection") }));
        paths.insert(
            format!("{scope}/{{name}}"),
            json!({ "get": read("get"), "put": write("put"), "patch": write("patch"), "delete": read("delete") }),
        );
        if r.has_status {
            paths.insert(format!("{scope}/{{name}}/status"), json!({ "get": read("get"), "put": write("put"), "patch": write("patch") }));
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "vmform local control plane", "version": version },
        "paths": paths,
        "components": { "schemas": {} },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_found_by_url_and_by_kind() {
        for r in ALL {
            assert_eq!(Resource::find(r.group, r.version, r.plural), Some(r));
            assert_eq!(Resource::for_kind(&r.api_version(), r.kind), Some(r));
        }
        assert_eq!(Resource::find("kubevirt.io", "v1", "pods"), None);
    }

    #[test]
    fn discovery_lists_short_names_and_status_subresources() {
        let list = resource_list("kubevirt.io", "v1").unwrap();
        let names: Vec<&str> = list["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"virtualmachines/status"));
        let vm = &list["resources"][0];
        assert_eq!(vm["shortNames"][0], "vm");
        assert_eq!(resource_list("apps", "v1"), None);
    }

    #[test]
    fn openapi_v3_says_every_patch_takes_field_validation() {
        let root = openapi_v3_root();
        let url = root["paths"]["apis/kubevirt.io/v1"]["serverRelativeURL"].as_str().unwrap();
        let doc = openapi_v3(url.trim_start_matches("/openapi/v3/")).unwrap();
        let patch = &doc["paths"]["/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "VirtualMachine");
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
        assert!(openapi_v3("api/v1").unwrap()["paths"]["/api/v1/namespaces/{name}"].is_object());
        assert_eq!(openapi_v3("apis/apps/v1"), None);
    }
}
