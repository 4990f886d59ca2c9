//! Server-side printing: `meta.k8s.io/v1` `Table`s, which `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! The columns are the ones the real API server would send: for KubeVirt's resources the
//! CRDs' `additionalPrinterColumns` (see `specs/kubevirt-semantics.md` §6), for the core
//! types kube-apiserver's built-in printers. Every column is always filled — kubectl hides
//! the priority-1 ones unless `-o wide`.

use super::error::ApiError;
use super::resources::{Resource, CONFIG_MAP, EVENT, LEASE, MIGRATION, NAMESPACE, NODE, VIRTUAL_MACHINE, VIRTUAL_MACHINE_INSTANCE};
use super::route::Query;
use bytes::Bytes;
use serde_json::{json, Value};

/// Whether an `Accept` header asks for a Table (kubectl sends `as=Table` for v1 and v1beta1,
/// then plain JSON as a fallback; v1 is what is answered).
pub fn wanted(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
        })
    })
}

/// What each row carries besides its cells: `includeObject`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Include {
    None,
    /// The default: a `PartialObjectMetadata` (kubectl reads labels from it).
    Metadata,
    Object,
}

impl Include {
    pub fn from_query(query: &Query) -> Result<Include, ApiError> {
        match query.get("includeObject") {
            None | Some("Metadata") => Ok(Include::Metadata),
            Some("None") => Ok(Include::None),
            Some("Object") => Ok(Include::Object),
            Some(other) => Err(ApiError::bad_request(format!("unrecognized includeObject value: {other:?}"))),
        }
    }
}

/// One column: its definition and how a cell is computed.
struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
    cell: fn(&Value) -> Value,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const fn col(name: &'static str, kind: &'static str, description: &'static str, priority: u8, cell: fn(&Value) -> Value) -> Column {
    Column { name, kind, format: "", description, priority, cell }
}

const NAME: Column = Column { name: "Name", kind: "string", format: "name", description: NAME_DESCRIPTION, priority: 0, cell: name_cell };
/// A CRD's Age column (type date); the core printers call theirs a string.
const CRD_AGE: Column = col("Age", "date", AGE_DESCRIPTION, 0, age_cell);
const AGE: Column = col("Age", "string", AGE_DESCRIPTION, 0, age_cell);

fn name_cell(o: &Value) -> Value {
    o.pointer("/metadata/name").cloned().unwrap_or(Value::Null)
}

fn age_cell(o: &Value) -> Value {
    json!(age(o.pointer("/metadata/creationTimestamp").and_then(Value::as_str)))
}

/// A CRD string column: the value, or null when the path finds nothing.
fn string_at(o: &Value, pointer: &str) -> Value {
    match o.pointer(pointer) {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => json!(s),
        Some(other) => json!(other.to_string()),
    }
}

/// `.status.conditions[?(@.type=='T')].status`
fn condition_status(o: &Value, kind: &str) -> Value {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)))
        .map_or(Value::Null, |c| string_at(c, "/status"))
}

fn columns(resource: &Resource) -> Vec<Column> {
    if resource == &VIRTUAL_MACHINE {
        vec![
            NAME,
            CRD_AGE,
            col("Status", "string", "Human Readable Status", 0, |o| string_at(o, "/status/printableStatus")),
            col("Ready", "string", "", 0, |o| condition_status(o, "Ready")),
        ]
    } else if resource == &VIRTUAL_MACHINE_INSTANCE {
        vec![
            NAME,
            CRD_AGE,
            col("Phase", "string", "", 0, |o| string_at(o, "/status/phase")),
            col("IP", "string", "", 0, |o| string_at(o, "/status/interfaces/0/ipAddress")),
            col("NodeName", "string", "", 0, |o| string_at(o, "/status/nodeName")),
            col("Ready", "string", "", 0, |o| condition_status(o, "Ready")),
            col("Live-Migratable", "string", "", 1, |o| condition_status(o, "LiveMigratable")),
            col("Paused", "string", "", 1, |o| condition_status(o, "Paused")),
        ]
    } else if resource == &MIGRATION {
        vec![
            NAME,
            col("Phase", "string", "The current phase of VM instance migration", 0, |o| string_at(o, "/status/phase")),
            col("VMI", "string", "The name of the VMI to perform the migration on", 0, |o| string_at(o, "/spec/vmiName")),
        ]
    } else if resource == &NAMESPACE {
        vec![NAME, col("Status", "string", "The status of the namespace", 0, |o| str_or(o, "/status/phase", "")), AGE]
    } else if resource == &NODE {
        vec![
            NAME,
            col("Status", "string", "The status of the node", 0, node_status),
            col("Roles", "string", "The roles of the node", 0, node_roles),
            AGE,
            col("Version", "string", "Kubelet Version reported by the node.", 0, |o| str_or(o, "/status/nodeInfo/kubeletVersion", "")),
            col("Internal-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available.", 1, |o| node_address(o, "InternalIP")),
            col("External-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available.", 1, |o| node_address(o, "ExternalIP")),
            col("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).", 1, |o| str_or(o, "/status/nodeInfo/osImage", "<unknown>")),
            col("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1, |o| str_or(o, "/status/nodeInfo/kernelVersion", "<unknown>")),
            col("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).", 1, |o| str_or(o, "/status/nodeInfo/containerRuntimeVersion", "<unknown>")),
        ]
    } else if resource == &CONFIG_MAP {
        vec![NAME, col("Data", "string", "Data contains the configuration data.", 0, config_map_data), AGE]
    } else if resource == &LEASE {
        vec![NAME, col("Holder", "string", "The holder of the lease.", 0, |o| str_or(o, "/spec/holderIdentity", "")), AGE]
    } else if resource == &EVENT {
        vec![
            col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded.", 0, event_last_seen),
            col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future", 0, |o| str_or(o, "/type", "")),
            col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", 0, |o| str_or(o, "/reason", "")),
            col("Object", "string", "The object that this event is about.", 0, event_object),
            col("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go-field access statement.", 1, |o| str_or(o, "/involvedObject/fieldPath", "")),
            col("Source", "string", "The component reporting this event. Should be a short machine understandable string.", 1, event_source),
            col("Message", "string", "A human-readable description of the status of this operation.", 0, |o| json!(o.get("message").and_then(Value::as_str).unwrap_or("").trim())),
            col("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)", 1, event_first_seen),
            col("Count", "string", "The number of times this event has occurred.", 1, event_count),
            Column { name: "Name", kind: "string", format: "name", description: NAME_DESCRIPTION, priority: 1, cell: name_cell },
        ]
    } else {
        vec![NAME, AGE]
    }
}

fn str_or(o: &Value, pointer: &str, default: &str) -> Value {
    json!(o.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or(default))
}

/// `Ready`, `NotReady`, `Unknown`, with `,SchedulingDisabled` for a cordoned node.
fn node_status(o: &Value) -> Value {
    let ready = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready")));
    let mut status = vec![match ready.and_then(|c| c.get("status")).and_then(Value::as_str) {
        Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    json!(status.join(","))
}

/// The roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role` labels.
fn node_roles(o: &Value) -> Value {
    let mut roles = std::collections::BTreeSet::new();
    for (key, value) in o.pointer("/metadata/labels").and_then(Value::as_object).into_iter().flatten() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/").filter(|r| !r.is_empty()) {
            roles.insert(role.to_string());
        } else if key == "kubernetes.io/role"
            && let Some(v) = value.as_str().filter(|v| !v.is_empty())
        {
            roles.insert(v.to_string());
        }
    }
    if roles.is_empty() { json!("<none>") } else { json!(roles.into_iter().collect::<Vec<_>>().join(",")) }
}

fn node_address(o: &Value, kind: &str) -> Value {
    o.pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x.get("type").and_then(Value::as_str) == Some(kind)))
        .and_then(|x| x.get("address").and_then(Value::as_str))
        .map_or(json!("<none>"), |a| json!(a))
}

fn config_map_data(o: &Value) -> Value {
    let count = |k: &str| o.get(k).and_then(Value::as_object).map_or(0, |m| m.len());
    json!(count("data") + count("binaryData"))
}

fn event_first_seen(o: &Value) -> Value {
    let first = o.get("firstTimestamp").and_then(Value::as_str).or_else(|| o.get("eventTime").and_then(Value::as_str));
    json!(age(first))
}

fn event_last_seen(o: &Value) -> Value {
    if let Some(t) = o.pointer("/series/lastObservedTime").and_then(Value::as_str) {
        return json!(age(Some(t)));
    }
    match o.get("lastTimestamp").and_then(Value::as_str) {
        Some(t) => json!(age(Some(t))),
        None => event_first_seen(o),
    }
}

fn event_count(o: &Value) -> Value {
    let count = o.pointer("/series/count").or_else(|| o.get("count")).and_then(Value::as_i64).unwrap_or(0);
    json!(if count == 0 { 1 } else { count })
}

fn event_object(o: &Value) -> Value {
    let kind = o.pointer("/involvedObject/kind").and_then(Value::as_str).unwrap_or("").to_lowercase();
    match o.pointer("/involvedObject/name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        Some(name) => json!(format!("{kind}/{name}")),
        None => json!(kind),
    }
}

fn event_source(o: &Value) -> Value {
    let component = o
        .pointer("/source/component")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .or_else(|| o.get("reportingComponent").and_then(Value::as_str))
        .unwrap_or("");
    let host = o
        .pointer("/source/host")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .or_else(|| o.get("reportingInstance").and_then(Value::as_str).filter(|h| !h.is_empty()));
    match host {
        Some(h) => json!(format!("{component}, {h}")),
        None => json!(component),
    }
}

/// How long ago an RFC 3339 timestamp was, as kubectl's AGE column reads
/// (apimachinery's `duration.HumanDuration`); `<unknown>` when there is none.
fn age(timestamp: Option<&str>) -> String {
    let Some(then) = timestamp.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return "<unknown>".to_string();
    };
    human_duration((chrono::Utc::now() - then.with_timezone(&chrono::Utc)).num_seconds())
}

/// apimachinery's `duration.HumanDuration`, on whole seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{d}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

fn column_definitions(columns: &[Column]) -> Value {
    Value::Array(
        columns
            .iter()
            .map(|c| json!({ "name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority }))
            .collect(),
    )
}

fn row(columns: &[Column], object: &Value, include: Include) -> Value {
    let cells: Vec<Value> = columns.iter().map(|c| (c.cell)(object)).collect();
    let mut row = json!({ "cells": cells });
    match include {
        Include::None => {}
        Include::Object => row["object"] = object.clone(),
        Include::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
            });
        }
    }
    row
}

fn table(resource: &Resource, objects: &[&Value], metadata: Value, include: Include) -> Value {
    let columns = columns(resource);
    let rows: Vec<Value> = objects.iter().map(|o| row(&columns, o, include)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(&columns),
        "rows": rows,
    })
}

/// A list (`…List` with `metadata.resourceVersion` and maybe `continue`) as a Table.
pub fn from_list(resource: &Resource, list: &Value, include: Include) -> Value {
    let items: Vec<&Value> = list.get("items").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let metadata = list.get("metadata").cloned().unwrap_or_else(|| json!({}));
    table(resource, &items, metadata, include)
}

/// One object as a one-row Table.
pub fn from_object(resource: &Resource, object: &Value, include: Include) -> Value {
    let rv = object.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
    let metadata = if rv.is_null() { json!({}) } else { json!({ "resourceVersion": rv }) };
    table(resource, &[object], metadata, include)
}

/// A watch line (`{"type": …, "object": …}\n`) with its object turned into a one-row
/// Table; bookmarks and errors pass unchanged.
pub fn watch_line(resource: &Resource, line: Bytes, include: Include) -> Bytes {
    let Ok(mut event) = serde_json::from_slice::<Value>(&line) else { return line };
    if !matches!(event.get("type").and_then(Value::as_str), Some("ADDED" | "MODIFIED" | "DELETED")) {
        return line;
    }
    event["object"] = from_object(resource, &event["object"], include);
    let mut bytes = serde_json::to_vec(&event).expect("JSON values serialise");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_that_ask_for_tables() {
        assert!(wanted(Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")));
        assert!(wanted(Some("application/json; as=Table; v=v1; g=meta.k8s.io")));
        assert!(!wanted(Some("application/json")));
        assert!(!wanted(Some("application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io")));
        assert!(!wanted(None));
    }

    #[test]
    fn human_durations_read_as_kubectl_prints_them() {
        for (s, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (8 * 86400, "8d"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn vm_rows_follow_kubevirts_printer_columns() {
        let vm = json!({
            "metadata": { "name": "web", "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z", "labels": {"a": "b"} },
            "status": { "printableStatus": "Running", "conditions": [{ "type": "Paused", "status": "False" }, { "type": "Ready", "status": "True" }] },
        });
        let t = from_object(&VIRTUAL_MACHINE, &vm, Include::Metadata);
        let names: Vec<&str> = t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Age", "Status", "Ready"]);
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert!(cells[1].as_str().unwrap().ends_with('y') || cells[1].as_str().unwrap().contains('y'));
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "True");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["a"], "b");
        // A VM the controller has not seen yet has empty cells, as the CRD printer leaves them.
        let bare = json!({ "metadata": { "name": "new" } });
        let t = from_object(&VIRTUAL_MACHINE, &bare, Include::None);
        assert_eq!(t["rows"][0]["cells"], json!(["new", "<unknown>", null, null]));
        assert!(t["rows"][0].get("object").is_none());
    }

    #[test]
    fn vmi_rows_have_wide_columns() {
        let vmi = json!({
            "metadata": { "name": "web" },
            "status": { "phase": "Running", "nodeName": "node-1", "interfaces": [{ "ipAddress": "10.0.0.5" }],
                        "conditions": [{ "type": "Ready", "status": "True" }, { "type": "LiveMigratable", "status": "False" }] },
        });
        let t = from_object(&VIRTUAL_MACHINE_INSTANCE, &vmi, Include::Object);
        assert_eq!(t["rows"][0]["cells"], json!(["web", "<unknown>", "Running", "10.0.0.5", "node-1", "True", "False", null]));
        assert_eq!(t["columnDefinitions"][6]["priority"], 1);
        assert_eq!(t["rows"][0]["object"], vmi);
    }

    #[test]
    fn core_printers() {
        let node = json!({
            "metadata": { "name": "n1", "labels": { "node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker" } },
            "spec": { "unschedulable": true },
            "status": { "conditions": [{ "type": "Ready", "status": "False" }], "nodeInfo": { "kubeletVersion": "v1.32.0" },
                        "addresses": [{ "type": "InternalIP", "address": "192.168.1.2" }] },
        });
        let t = from_object(&NODE, &node, Include::None);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["n1", "NotReady,SchedulingDisabled", "control-plane,worker", "<unknown>", "v1.32.0", "192.168.1.2", "<none>", "<unknown>", "<unknown>", "<unknown>"])
        );
        let cm = json!({ "metadata": { "name": "c" }, "data": { "a": "1", "b": "2" }, "binaryData": { "c": "AA==" } });
        assert_eq!(from_object(&CONFIG_MAP, &cm, Include::None)["rows"][0]["cells"][1], 3);
        let ns = json!({ "metadata": { "name": "default" }, "status": { "phase": "Active" } });
        assert_eq!(from_object(&NAMESPACE, &ns, Include::None)["rows"][0]["cells"][1], "Active");
        let ev = json!({ "metadata": { "name": "e1" }, "type": "Normal", "reason": "Started", "message": " hi ",
                         "involvedObject": { "kind": "VirtualMachine", "name": "web" }, "source": { "component": "virt-controller" } });
        let cells = &from_object(&EVENT, &ev, Include::None)["rows"][0]["cells"];
        assert_eq!(cells[3], "virtualmachine/web");
        assert_eq!(cells[5], "virt-controller");
        assert_eq!(cells[6], "hi");
        assert_eq!(cells[8], 1);
        assert_eq!(cells[9], "e1");
    }

    #[test]
    fn lists_keep_their_continue_token_and_watch_lines_become_tables() {
        let list = json!({ "metadata": { "resourceVersion": "7", "continue": "abc" }, "items": [{ "metadata": { "name": "a" } }] });
        let t = from_list(&LEASE, &list, Include::Metadata);
        assert_eq!(t["metadata"]["continue"], "abc");
        assert_eq!(t["rows"].as_array().unwrap().len(), 1);
        let line = Bytes::from("{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"9\"}}}\n");
        let out: Value = serde_json::from_slice(&watch_line(&LEASE, line, Include::Metadata)).unwrap();
        assert_eq!(out["type"], "MODIFIED");
        assert_eq!(out["object"]["kind"], "Table");
        assert_eq!(out["object"]["metadata"]["resourceVersion"], "9");
        let bookmark = Bytes::from("{\"type\":\"BOOKMARK\",\"object\":{}}\n");
        assert_eq!(watch_line(&LEASE, bookmark.clone(), Include::Metadata), bookmark);
    }
}
