//! Request paths and query parameters, as the Kubernetes API lays them out.

use super::error::ApiError;
use super::resources::{Resource, NAMESPACE};
use super::resources::kubevirt_actions;
use std::collections::HashMap;

/// What a request path names.
#[derive(Debug, PartialEq)]
pub enum Route {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/<api/v1 | apis/group/version>`
    OpenApi(String),
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    ResourceList { group: String, version: String },
    /// A collection: list, watch, create, deletecollection.
    Collection { resource: &'static Resource, namespace: Option<String> },
    /// One object, or one of its subresources.
    Object { resource: &'static Resource, namespace: Option<String>, name: String, subresource: Option<String> },
    /// `/apis/subresources.kubevirt.io/<version>/namespaces/<ns>/<plural>/<name>/<action>`:
    /// KubeVirt's VM and VMI actions.
    KubeVirtAction(ActionRequest),
}

/// One request to KubeVirt's subresource group (`subresources.kubevirt.io`), routed.
#[derive(Debug, PartialEq)]
pub struct ActionRequest {
    /// `virtualmachines` or `virtualmachineinstances`.
    pub plural: String,
    pub namespace: String,
    pub name: String,
    /// `start`, `stop`, …; `vnc/screenshot` for the nested ones.
    pub action: String,
}

impl ActionRequest {
    /// The resource name RBAC and errors use: `virtualmachines/start`.
    pub fn resource(&self) -> String {
        format!("{}/{}", self.plural, self.action)
    }
}

impl Route {
    pub fn parse(path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let not_found = || ApiError::not_found("the server could not find the requested resource");
        match segments.as_slice() {
            ["version"] => Ok(Route::Version),
            ["healthz"] | ["livez"] | ["readyz"] => Ok(Route::Health),
            ["api"] => Ok(Route::CoreVersions),
            ["openapi", "v3"] => Ok(Route::OpenApiRoot),
            ["openapi", "v3", rest @ ..] => Ok(Route::OpenApi(rest.join("/"))),
            ["apis"] => Ok(Route::Groups),
            ["apis", group] => Ok(Route::Group(group.to_string())),
            ["api", version] => Ok(Route::ResourceList { group: String::new(), version: version.to_string() }),
            ["apis", group, version] => Ok(Route::ResourceList { group: group.to_string(), version: version.to_string() }),
            ["apis", kubevirt_actions::GROUP, version, rest @ ..] => {
                match rest {
                    ["namespaces", ns, plural, name, action @ ..] if kubevirt_actions::VERSIONS.contains(version) && !action.is_empty() => {
                        Ok(Route::KubeVirtAction(ActionRequest {
                            plural: plural.to_string(),
                            namespace: ns.to_string(),
                            name: name.to_string(),
                            action: action.join("/"),
                        }))
                    }
                    _ => Err(not_found()),
                }
            }
            ["api", version, rest @ ..] => resource_route("", version, rest).ok_or_else(not_found),
            ["apis", group, version, rest @ ..] => resource_route(group, version, rest).ok_or_else(not_found),
            _ => Err(not_found()),
        }
    }
}

/// The part after `/api/v1` or `/apis/<group>/<version>`.
fn resource_route(group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    let find = |plural: &str| Resource::find(group, version, plural);
    let namespaces_served = group.is_empty();
    let route = match rest {
        // `/api/v1/namespaces/<ns>/<plural>…` names a namespaced collection, but
        // `/api/v1/namespaces/<name>[/status]` is the namespace object itself.
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            object_or_collection(find(plural)?, Some(ns), tail)?
        }
        ["namespaces", name] if namespaces_served => {
            Route::Object { resource: &NAMESPACE, namespace: None, name: name.to_string(), subresource: None }
        }
        ["namespaces", name, sub] if namespaces_served && find(sub).is_none() => {
            Route::Object { resource: &NAMESPACE, namespace: None, name: name.to_string(), subresource: Some(sub.to_string()) }
        }
        [plural, tail @ ..] => {
            let resource = find(plural)?;
            if resource.namespaced && !tail.is_empty() {
                return None;
            }
            object_or_collection(resource, None, tail)?
        }
        [] => return None,
    };
    if let Route::Object { resource, subresource: Some(sub), .. } = &route
        && !(sub == "status" && resource.has_status) {
            return None;
        }
    Some(route)
}

fn object_or_collection(resource: &'static Resource, namespace: Option<&str>, tail: &[&str]) -> Option<Route> {
    let namespace = namespace.map(str::to_string);
    match tail {
        [] => Some(Route::Collection { resource, namespace }),
        [name] => Some(Route::Object { resource, namespace, name: name.to_string(), subresource: None }),
        [name, sub] => Some(Route::Object { resource, namespace, name: name.to_string(), subresource: Some(sub.to_string()) }),
        _ => None,
    }
}

/// The query string, decoded.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Query(map)
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
    pub fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| v.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid {key} {v:?}: not a non-negative integer"))))
            .transpose()
    }
    /// `dryRun=All`; any other value is refused, as the API server does.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!("Invalid dry run value: {other:?}; supported values: All"))),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{LEASE, NODE, VIRTUAL_MACHINE};

    #[test]
    fn paths_name_collections_objects_and_subresources() {
        assert_eq!(
            Route::parse("/apis/kubevirt.io/v1/namespaces/default/virtualmachines").unwrap(),
            Route::Collection { resource: &VIRTUAL_MACHINE, namespace: Some("default".into()) }
        );
        assert_eq!(
            Route::parse("/apis/kubevirt.io/v1/virtualmachines").unwrap(),
            Route::Collection { resource: &VIRTUAL_MACHINE, namespace: None }
        );
        assert_eq!(
            Route::parse("/apis/kubevirt.io/v1/namespaces/default/virtualmachines/web/status").unwrap(),
            Route::Object { resource: &VIRTUAL_MACHINE, namespace: Some("default".into()), name: "web".into(), subresource: Some("status".into()) }
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/shop").unwrap(),
            Route::Object { resource: &NAMESPACE, namespace: None, name: "shop".into(), subresource: None }
        );
        assert_eq!(Route::parse("/api/v1/nodes/n1").unwrap(), Route::Object { resource: &NODE, namespace: None, name: "n1".into(), subresource: None });
        assert_eq!(
            Route::parse("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases").unwrap(),
            Route::Collection { resource: &LEASE, namespace: Some("kube-system".into()) }
        );
    }

    #[test]
    fn unknown_resources_and_subresources_are_not_found() {
        for path in [
            "/apis/kubevirt.io/v1/namespaces/default/pods",
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/web/console",
            "/api/v1/namespaces/default/leases",
            "/apis/coordination.k8s.io/v1/namespaces/x/leases/l/status",
            "/api/v1/nodes/n1/extra/more",
            "/metrics",
        ] {
            assert_eq!(Route::parse(path).unwrap_err().code, 404, "{path}");
        }
    }

    #[test]
    fn kubevirt_actions_have_their_own_route() {
        assert_eq!(
            Route::parse("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/web/start").unwrap(),
            Route::KubeVirtAction(ActionRequest {
                plural: "virtualmachines".into(),
                namespace: "default".into(),
                name: "web".into(),
                action: "start".into()
            })
        );
        let Route::KubeVirtAction(r) = Route::parse("/apis/subresources.kubevirt.io/v1alpha3/namespaces/x/virtualmachineinstances/w/vnc/screenshot").unwrap() else {
            panic!("a nested action")
        };
        assert_eq!(r.resource(), "virtualmachineinstances/vnc/screenshot");
        assert_eq!(Route::parse("/apis/subresources.kubevirt.io/v1").unwrap(), Route::ResourceList { group: "subresources.kubevirt.io".into(), version: "v1".into() });
        for path in ["/apis/subresources.kubevirt.io/v2/namespaces/x/virtualmachines/w/start", "/apis/subresources.kubevirt.io/v1/namespaces/x/virtualmachines/w"] {
            assert_eq!(Route::parse(path).unwrap_err().code, 404, "{path}");
        }
    }

    #[test]
    fn queries_are_percent_decoded() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true&limit=5&x="));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.number("limit").unwrap(), Some(5));
        assert_eq!(q.get("x"), None);
        assert_eq!(Query::parse(Some("limit=-1")).number("limit").unwrap_err().code, 400);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
