//! Object validation: what a real cluster refuses with 422 Invalid before it stores an
//! object, for the fields vmform knows. Each problem is a [`Cause`] with the field path,
//! reason and message the real server gives.
//!
//! Checked, in the order a real cluster checks:
//!
//! 1. **Metadata**, every kind, as apimachinery's `ValidateObjectMeta`: `metadata.name` is
//!    required and a DNS-1123 subdomain (a DNS-1123 label for a Namespace);
//!    `metadata.namespace` is a DNS-1123 label; label keys are qualified names and label
//!    values label values; annotation keys are qualified names and all annotations together
//!    at most 256 KiB; labels and annotations are maps of strings.
//! 2. **The structural schema**: the type of every field in a hand-written table (`VM_SPEC`
//!    and friends below, listed by [`schema_table`]) and which fields are required, as in
//!    KubeVirt's OpenAPI (`apiserver/tests/validation_schema.rs` holds the table to it).
//!    Quantities (`memory.guest`, `resources.requests.*`, …) are an integer or a string that
//!    must also match the quantity pattern, as KubeVirt's CRDs declare them. Fields not in the
//!    table pass unchecked: KubeVirt's examples use many fields vmform does not model, and
//!    they must be accepted and kept. `null` counts as absent, as the API server prunes it.
//! 3. **Admission rules**, only when 1 and 2 found nothing, since a real cluster runs
//!    KubeVirt's webhooks only on objects its schema accepted: `running` and `runStrategy`
//!    exclusive, one of them required, `runStrategy` one of KubeVirt's; every disk has a
//!    volume of its name, every interface a network and every network an interface, port
//!    protocols TCP or UDP; every DataVolume template named, with storage, a source, and
//!    used by a volume; a migration names its VMI. For the core kinds, an Event's
//!    `involvedObject.namespace` matches its own and a Lease's durations are positive.
//!
//! Not checked: enums other than `runStrategy`; integer formats and ranges; the rest of
//! KubeVirt's webhooks (CPU topology, boot orders, feature gates, instance types and
//! preferences, hotplug, …); anything that needs other objects (the VMI a migration
//! names, the storage class of a DataVolume); what may change on update; `status`. On a real
//! cluster a wrong JSON type in a core kind (Namespace, Node, Event, Lease) is a 400
//! decoding error; here it is a cause like the structural schema's.

use super::error::Cause;
use super::resources::{Resource, CONFIG_MAP, EVENT, LEASE, MIGRATION, MIGRATION_POLICY, NAMESPACE, NODE, VIRTUAL_MACHINE, VIRTUAL_MACHINE_INSTANCE};
use serde_json::{Map, Value};
use std::collections::HashSet;

const INVALID: &str = "FieldValueInvalid";
/// What kube-apiserver's structural schema reports a wrong JSON type as.
const TYPE_INVALID: &str = "FieldValueTypeInvalid";
const REQUIRED: &str = "FieldValueRequired";
const TOO_LONG: &str = "FieldValueTooLong";

/// Check an object about to be created or updated. `resource` is the resource of the URL.
/// Returns every problem found (not just the first) as causes; the caller turns them into
/// `ApiError::invalid`. Admission rules run only on an object whose metadata and schema are
/// clean, as on a real cluster, so fixing those can bring the next round of causes.
pub fn validate(resource: &Resource, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(fields) = object.as_object() else {
        let actual = json_type(object);
        causes.push(Cause::new(TYPE_INVALID, "", format!("Invalid value: \"{actual}\": body must be of type object: \"{actual}\"")));
        return causes;
    };
    check_metadata(fields.get("metadata"), *resource == NAMESPACE, &mut causes);
    if let Some(kind) = KINDS.iter().find(|k| k.resource == resource) {
        check_fields(kind.schema, fields, "", &mut causes);
        if causes.is_empty() {
            (kind.admission)(object, &mut causes);
        }
    }
    causes
}

// The DNS-1123 patterns are the compiler's, the one definition the specs' checks share.
pub use vmform_compiler::values::{is_dns1123_label, is_dns1123_subdomain};
use vmform_compiler::values::{matches_dns1123_label, matches_dns1123_subdomain};

/// One field of the schema table, for tools and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaEntry {
    /// `VirtualMachine`, `Lease`, …
    pub kind: &'static str,
    /// From the object's root: `spec.template.spec.domain.cpu.cores`. `[]` stands for the
    /// items of a list (`…devices.disks[].name`), `*` for the values of a map
    /// (`…nodeSelector.*`).
    pub path: String,
    /// `string`, `integer`, `boolean`, `int-or-string` (a quantity), `object`, `array` or
    /// `map` (an object with free keys).
    pub type_name: &'static str,
    /// Whether the field must be present when its parent is. Always false for list items
    /// and map values.
    pub required: bool,
}

/// Every field the structural check knows, kind by kind, parents before children.
pub fn schema_table() -> impl Iterator<Item = SchemaEntry> {
    let mut entries = Vec::new();
    for kind in KINDS {
        flatten_fields(kind.resource.kind, kind.schema, "", &mut entries);
    }
    entries.into_iter()
}

// ---- the schema table ----

/// The JSON a field takes.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Str,
    Int,
    Bool,
    /// `resource.Quantity`: an integer, or a string matching the quantity pattern.
    Quantity,
    /// An object with these known fields; others pass unchecked.
    Object(&'static [Field]),
    List(&'static Shape),
    /// An object with free keys and values of one shape (labels, `nodeSelector`).
    Map(&'static Shape),
}

impl Shape {
    fn type_name(self) -> &'static str {
        match self {
            Shape::Str => "string",
            Shape::Int => "integer",
            Shape::Bool => "boolean",
            Shape::Quantity => "int-or-string",
            Shape::Object(_) => "object",
            Shape::List(_) => "array",
            Shape::Map(_) => "map",
        }
    }

    /// The type as the structural schema's message names it.
    fn expected(self) -> &'static str {
        match self {
            Shape::Quantity => "integer,string",
            Shape::Map(_) => "object",
            other => other.type_name(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    shape: Shape,
    required: bool,
}

const fn opt(name: &'static str, shape: Shape) -> Field {
    Field { name, shape, required: false }
}

const fn req(name: &'static str, shape: Shape) -> Field {
    Field { name, shape, required: true }
}

const STR: Shape = Shape::Str;
const INT: Shape = Shape::Int;
const BOOL: Shape = Shape::Bool;
const QUANTITY: Shape = Shape::Quantity;
/// KubeVirt marks many choices (`masquerade`, `pod`, `blank`) by an empty object.
const EMPTY: Shape = Shape::Object(&[]);
const STR_MAP: Shape = Shape::Map(&Shape::Str);
const QUANTITY_MAP: Shape = Shape::Map(&Shape::Quantity);
const STR_LIST: Shape = Shape::List(&Shape::Str);

const OBJECT_META: &[Field] =
    &[opt("name", STR), opt("generateName", STR), opt("namespace", STR), opt("labels", STR_MAP), opt("annotations", STR_MAP)];
const LOCAL_OBJECT_REFERENCE: &[Field] = &[opt("name", STR)];

// v1.DomainSpec and what it holds.
const CPU: &[Field] = &[
    opt("cores", INT),
    opt("sockets", INT),
    opt("threads", INT),
    opt("maxSockets", INT),
    opt("model", STR),
    opt("dedicatedCpuPlacement", BOOL),
    opt("isolateEmulatorThread", BOOL),
];
const MEMORY: &[Field] = &[opt("guest", QUANTITY), opt("maxGuest", QUANTITY), opt("hugepages", Shape::Object(&[opt("pageSize", STR)]))];
const RESOURCES: &[Field] = &[opt("requests", QUANTITY_MAP), opt("limits", QUANTITY_MAP), opt("overcommitGuestOverhead", BOOL)];
const FIRMWARE: &[Field] = &[
    opt(
        "bootloader",
        Shape::Object(&[
            opt("bios", Shape::Object(&[opt("useSerial", BOOL)])),
            opt("efi", Shape::Object(&[opt("secureBoot", BOOL), opt("persistent", BOOL)])),
        ]),
    ),
    opt("serial", STR),
    opt("uuid", STR),
];
const FEATURE_STATE: Shape = Shape::Object(&[opt("enabled", BOOL)]);
const FEATURES: &[Field] = &[opt("acpi", FEATURE_STATE), opt("smm", FEATURE_STATE), opt("pvspinlock", FEATURE_STATE)];
const DISK: &[Field] = &[
    req("name", STR),
    opt("disk", Shape::Object(&[opt("bus", STR), opt("readonly", BOOL), opt("pciAddress", STR)])),
    opt("cdrom", Shape::Object(&[opt("bus", STR), opt("readonly", BOOL), opt("tray", STR)])),
    opt("lun", Shape::Object(&[opt("bus", STR), opt("readonly", BOOL), opt("reservation", BOOL)])),
    opt("bootOrder", INT),
    opt("serial", STR),
    opt("cache", STR),
    opt("io", STR),
    opt("dedicatedIOThread", BOOL),
    opt("shareable", BOOL),
    opt("tag", STR),
];
// KubeVirt's Port requires only `port`; vmform always writes a protocol, KubeVirt does not need one.
const PORT: &[Field] = &[opt("name", STR), req("port", INT), opt("protocol", STR)];
const INTERFACE: &[Field] = &[
    req("name", STR),
    opt("masquerade", EMPTY),
    opt("bridge", EMPTY),
    opt("sriov", EMPTY),
    opt("ports", Shape::List(&Shape::Object(PORT))),
    opt("macAddress", STR),
    opt("model", STR),
    opt("bootOrder", INT),
    opt("pciAddress", STR),
    opt("tag", STR),
];
const DEVICES: &[Field] = &[
    opt("disks", Shape::List(&Shape::Object(DISK))),
    opt("interfaces", Shape::List(&Shape::Object(INTERFACE))),
    opt("autoattachPodInterface", BOOL),
    opt("autoattachGraphicsDevice", BOOL),
    opt("autoattachSerialConsole", BOOL),
    opt("autoattachMemBalloon", BOOL),
    opt("networkInterfaceMultiqueue", BOOL),
    opt("blockMultiQueue", BOOL),
    opt("useVirtioTransitional", BOOL),
    opt("rng", EMPTY),
];
const DOMAIN: &[Field] = &[
    opt("cpu", Shape::Object(CPU)),
    opt("memory", Shape::Object(MEMORY)),
    opt("resources", Shape::Object(RESOURCES)),
    opt("machine", Shape::Object(&[opt("type", STR)])),
    opt("firmware", Shape::Object(FIRMWARE)),
    opt("features", Shape::Object(FEATURES)),
    req("devices", Shape::Object(DEVICES)),
    opt("ioThreadsPolicy", STR),
];

// Networks and volumes of v1.VirtualMachineInstanceSpec.
const NETWORK: &[Field] = &[
    req("name", STR),
    opt("pod", Shape::Object(&[opt("vmNetworkCIDR", STR), opt("vmIPv6NetworkCIDR", STR)])),
    opt("multus", Shape::Object(&[req("networkName", STR), opt("default", BOOL)])),
];
const CLOUD_INIT: &[Field] = &[
    opt("userData", STR),
    opt("userDataBase64", STR),
    opt("networkData", STR),
    opt("networkDataBase64", STR),
    opt("secretRef", Shape::Object(LOCAL_OBJECT_REFERENCE)),
    opt("networkDataSecretRef", Shape::Object(LOCAL_OBJECT_REFERENCE)),
];
const VOLUME: &[Field] = &[
    req("name", STR),
    opt("containerDisk", Shape::Object(&[req("image", STR), opt("imagePullPolicy", STR), opt("imagePullSecret", STR), opt("path", STR)])),
    opt("dataVolume", Shape::Object(&[req("name", STR), opt("hotpluggable", BOOL)])),
    opt("persistentVolumeClaim", Shape::Object(&[req("claimName", STR), opt("readOnly", BOOL), opt("hotpluggable", BOOL)])),
    opt("hostDisk", Shape::Object(&[req("path", STR), req("type", STR), opt("capacity", QUANTITY), opt("shared", BOOL)])),
    opt("emptyDisk", Shape::Object(&[req("capacity", QUANTITY)])),
    opt("cloudInitNoCloud", Shape::Object(CLOUD_INIT)),
    opt("cloudInitConfigDrive", Shape::Object(CLOUD_INIT)),
    opt("configMap", Shape::Object(&[opt("name", STR), opt("optional", BOOL), opt("volumeLabel", STR)])),
    opt("secret", Shape::Object(&[opt("secretName", STR), opt("optional", BOOL), opt("volumeLabel", STR)])),
    opt("serviceAccount", Shape::Object(&[opt("serviceAccountName", STR)])),
];
const TOLERATION: &[Field] = &[opt("key", STR), opt("operator", STR), opt("value", STR), opt("effect", STR), opt("tolerationSeconds", INT)];
const INSTANCE_SPEC: &[Field] = &[
    req("domain", Shape::Object(DOMAIN)),
    opt("networks", Shape::List(&Shape::Object(NETWORK))),
    opt("volumes", Shape::List(&Shape::Object(VOLUME))),
    opt("nodeSelector", STR_MAP),
    opt("tolerations", Shape::List(&Shape::Object(TOLERATION))),
    opt("evictionStrategy", STR),
    opt("terminationGracePeriodSeconds", INT),
    opt("hostname", STR),
    opt("subdomain", STR),
    opt("priorityClassName", STR),
    opt("schedulerName", STR),
    opt("architecture", STR),
];

// CDI's DataVolume, as VirtualMachineSpec.dataVolumeTemplates embeds it.
const VOLUME_RESOURCES: &[Field] = &[opt("requests", QUANTITY_MAP), opt("limits", QUANTITY_MAP)];
const STORAGE: &[Field] = &[
    opt("accessModes", STR_LIST),
    opt("resources", Shape::Object(VOLUME_RESOURCES)),
    opt("storageClassName", STR),
    opt("volumeMode", STR),
    opt("volumeName", STR),
];
const DATA_VOLUME_SOURCE: &[Field] = &[
    opt("blank", EMPTY),
    opt(
        "http",
        Shape::Object(&[
            req("url", STR),
            opt("secretRef", STR),
            opt("certConfigMap", STR),
            opt("extraHeaders", STR_LIST),
            opt("secretExtraHeaders", STR_LIST),
        ]),
    ),
    opt(
        "registry",
        Shape::Object(&[
            opt("url", STR),
            opt("secretRef", STR),
            opt("certConfigMap", STR),
            opt("pullMethod", STR),
            opt("imageStream", STR),
        ]),
    ),
    opt("pvc", Shape::Object(&[req("namespace", STR), req("name", STR)])),
];
/// Every source a DataVolume can have (CDI's `DataVolumeSource`), for the one-source rule.
const DATA_VOLUME_SOURCE_KINDS: [&str; 10] = ["blank", "gcs", "http", "imageio", "pvc", "registry", "s3", "snapshot", "upload", "vddk"];
const DATA_VOLUME_SPEC: &[Field] = &[
    opt("source", Shape::Object(DATA_VOLUME_SOURCE)),
    opt("sourceRef", Shape::Object(&[req("kind", STR), req("name", STR), opt("namespace", STR)])),
    opt("storage", Shape::Object(STORAGE)),
    opt("pvc", Shape::Object(STORAGE)),
    opt("contentType", STR),
    opt("priorityClassName", STR),
    opt("preallocation", BOOL),
];

// The kubevirt.io/v1 kinds.
const VM_SPEC: &[Field] = &[
    opt("runStrategy", STR),
    opt("running", BOOL),
    opt(
        "dataVolumeTemplates",
        Shape::List(&Shape::Object(&[opt("metadata", Shape::Object(OBJECT_META)), req("spec", Shape::Object(DATA_VOLUME_SPEC))])),
    ),
    req("template", Shape::Object(&[opt("metadata", Shape::Object(OBJECT_META)), opt("spec", Shape::Object(INSTANCE_SPEC))])),
];
const VIRTUAL_MACHINE_ROOT: &[Field] = &[opt("apiVersion", STR), opt("kind", STR), req("spec", Shape::Object(VM_SPEC))];
const VIRTUAL_MACHINE_INSTANCE_ROOT: &[Field] = &[opt("apiVersion", STR), opt("kind", STR), req("spec", Shape::Object(INSTANCE_SPEC))];
// KubeVirt's schema leaves vmiName optional (a migration can also receive or send); its webhook requires it.
const MIGRATION_ROOT: &[Field] =
    &[opt("apiVersion", STR), opt("kind", STR), req("spec", Shape::Object(&[opt("vmiName", STR), opt("addedNodeSelector", STR_MAP)]))];
// migrations.kubevirt.io/v1alpha1: the options vmform's runtime reads, and the selectors.
const MIGRATION_POLICY_ROOT: &[Field] = &[
    opt("apiVersion", STR),
    opt("kind", STR),
    req(
        "spec",
        Shape::Object(&[
            opt("allowAutoConverge", BOOL),
            opt("allowPostCopy", BOOL),
            opt("allowWorkloadDisruption", BOOL),
            opt("bandwidthPerMigration", QUANTITY),
            opt("completionTimeoutPerGiB", INT),
            opt("maxDowntimeMs", INT),
            req("selectors", Shape::Object(&[opt("namespaceSelector", STR_MAP), opt("virtualMachineInstanceSelector", STR_MAP)])),
        ]),
    ),
];

// The core kinds, lightly.
const NAMESPACE_ROOT: &[Field] =
    &[opt("spec", Shape::Object(&[opt("finalizers", STR_LIST)])), opt("status", Shape::Object(&[opt("phase", STR)]))];
const NODE_ROOT: &[Field] = &[
    opt(
        "spec",
        Shape::Object(&[
            opt("unschedulable", BOOL),
            opt("podCIDR", STR),
            opt("podCIDRs", STR_LIST),
            opt("providerID", STR),
            opt("taints", Shape::List(&Shape::Object(&[req("key", STR), opt("value", STR), req("effect", STR), opt("timeAdded", STR)]))),
        ]),
    ),
    opt(
        "status",
        Shape::Object(&[
            opt("capacity", QUANTITY_MAP),
            opt("allocatable", QUANTITY_MAP),
            opt("addresses", Shape::List(&Shape::Object(&[req("type", STR), req("address", STR)]))),
            opt(
                "conditions",
                Shape::List(&Shape::Object(&[
                    req("type", STR),
                    req("status", STR),
                    opt("reason", STR),
                    opt("message", STR),
                    opt("lastHeartbeatTime", STR),
                    opt("lastTransitionTime", STR),
                ])),
            ),
        ]),
    ),
];
const OBJECT_REFERENCE: &[Field] = &[
    opt("apiVersion", STR),
    opt("kind", STR),
    opt("namespace", STR),
    opt("name", STR),
    opt("uid", STR),
    opt("resourceVersion", STR),
    opt("fieldPath", STR),
];
const EVENT_ROOT: &[Field] = &[
    req("involvedObject", Shape::Object(OBJECT_REFERENCE)),
    opt("reason", STR),
    opt("message", STR),
    opt("type", STR),
    opt("count", INT),
    opt("firstTimestamp", STR),
    opt("lastTimestamp", STR),
    opt("eventTime", STR),
    opt("source", Shape::Object(&[opt("component", STR), opt("host", STR)])),
    opt("reportingComponent", STR),
    opt("reportingInstance", STR),
    opt("action", STR),
];
const LEASE_ROOT: &[Field] = &[opt(
    "spec",
    Shape::Object(&[
        opt("holderIdentity", STR),
        opt("leaseDurationSeconds", INT),
        opt("acquireTime", STR),
        opt("renewTime", STR),
        opt("leaseTransitions", INT),
    ]),
)];

/// `binaryData` values are bytes, base64 in JSON: anything else is undecodable for every
/// typed client that reads the ConfigMap later.
fn config_map_rules(object: &Value, causes: &mut Vec<Cause>) {
    use base64::Engine;
    let Some(binary) = object.get("binaryData").and_then(Value::as_object) else { return };
    for (key, value) in binary {
        let valid = value.as_str().is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
        if !valid {
            causes.push(Cause::new("FieldValueInvalid", format!("binaryData[{key}]"), "Invalid value: not base64-encoded bytes"));
        }
    }
}

const CONFIG_MAP_ROOT: &[Field] = &[opt("data", STR_MAP), opt("binaryData", STR_MAP), opt("immutable", BOOL)];

/// What is checked of one kind beyond its metadata.
struct KindRules {
    resource: &'static Resource,
    /// The fields other than `metadata`.
    schema: &'static [Field],
    /// Rules run once metadata and schema are clean.
    admission: fn(&Value, &mut Vec<Cause>),
}

const KINDS: &[KindRules] = &[
    KindRules { resource: &VIRTUAL_MACHINE, schema: VIRTUAL_MACHINE_ROOT, admission: virtual_machine_rules },
    KindRules { resource: &VIRTUAL_MACHINE_INSTANCE, schema: VIRTUAL_MACHINE_INSTANCE_ROOT, admission: instance_rules },
    KindRules { resource: &MIGRATION, schema: MIGRATION_ROOT, admission: migration_rules },
    KindRules { resource: &MIGRATION_POLICY, schema: MIGRATION_POLICY_ROOT, admission: no_rules },
    KindRules { resource: &NAMESPACE, schema: NAMESPACE_ROOT, admission: no_rules },
    KindRules { resource: &NODE, schema: NODE_ROOT, admission: no_rules },
    KindRules { resource: &EVENT, schema: EVENT_ROOT, admission: event_rules },
    KindRules { resource: &LEASE, schema: LEASE_ROOT, admission: lease_rules },
    KindRules { resource: &CONFIG_MAP, schema: CONFIG_MAP_ROOT, admission: config_map_rules },
];

fn flatten_fields(kind: &'static str, fields: &[Field], prefix: &str, out: &mut Vec<SchemaEntry>) {
    for field in fields {
        let path = join(prefix, field.name);
        out.push(SchemaEntry { kind, path: path.clone(), type_name: field.shape.type_name(), required: field.required });
        flatten_children(kind, field.shape, &path, out);
    }
}

fn flatten_children(kind: &'static str, shape: Shape, path: &str, out: &mut Vec<SchemaEntry>) {
    let (inner, path) = match shape {
        Shape::Object(fields) => return flatten_fields(kind, fields, path, out),
        Shape::List(item) => (*item, format!("{path}[]")),
        Shape::Map(value) => (*value, format!("{path}.*")),
        _ => return,
    };
    out.push(SchemaEntry { kind, path: path.clone(), type_name: inner.type_name(), required: false });
    flatten_children(kind, inner, &path, out);
}

// ---- the structural check ----

fn check_fields(fields: &[Field], object: &Map<String, Value>, prefix: &str, causes: &mut Vec<Cause>) {
    for field in fields {
        let path = join(prefix, field.name);
        match object.get(field.name) {
            None | Some(Value::Null) => {
                if field.required {
                    causes.push(Cause::new(REQUIRED, path, "Required value"));
                }
            }
            Some(value) => check_value(field.shape, value, &path, causes),
        }
    }
}

fn check_value(shape: Shape, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    let well_typed = match (shape, value) {
        (Shape::Str, Value::String(_)) | (Shape::Bool, Value::Bool(_)) => true,
        (Shape::Int, v) => is_integer(v),
        (Shape::Quantity, Value::String(s)) => {
            if !is_quantity(s) {
                causes.push(Cause::new(
                    INVALID,
                    path,
                    format!("Invalid value: {}: {path} in body should match '{QUANTITY_PATTERN}'", go_quote(s)),
                ));
            }
            true
        }
        (Shape::Quantity, v) => is_integer(v),
        (Shape::Object(fields), Value::Object(object)) => {
            check_fields(fields, object, path, causes);
            true
        }
        (Shape::List(item), Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                // A null list item is not pruned, unlike a null field.
                check_value(*item, v, &format!("{path}[{i}]"), causes);
            }
            true
        }
        (Shape::Map(item), Value::Object(entries)) => {
            for (key, v) in entries.iter().filter(|(_, v)| !v.is_null()) {
                check_value(*item, v, &format!("{path}.{key}"), causes);
            }
            true
        }
        _ => false,
    };
    if !well_typed {
        causes.push(type_invalid(path, shape.expected(), value));
    }
}

/// The structural schema's type error: the value's JSON type is both the "value" and the detail.
fn type_invalid(path: &str, expected: &str, value: &Value) -> Cause {
    let actual = json_type(value);
    Cause::new(TYPE_INVALID, path, format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""))
}

/// The JSON type names of the OpenAPI validator; a number with no fraction is an integer.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(value) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.is_finite() && f.fract() == 0.0),
        _ => false,
    }
}

/// The pattern KubeVirt's CRDs give every `resource.Quantity`.
const QUANTITY_PATTERN: &str =
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Whether `s` matches [`QUANTITY_PATTERN`]: a signed decimal, then a binary suffix
/// (`Ki`…`Ei`), a decimal one (`n u m k M G T P E`) or an exponent.
fn is_quantity(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let Some(suffix) = strip_decimal(unsigned) else {
        return false;
    };
    match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        _ => suffix.strip_prefix(['e', 'E']).map(|e| e.strip_prefix(['+', '-']).unwrap_or(e)).and_then(strip_decimal) == Some(""),
    }
}

/// Strip `[0-9]+(\.[0-9]*)?` or `\.[0-9]+` from the start of `s`; what is left, or `None`
/// when `s` does not start with a number.
fn strip_decimal(s: &str) -> Option<&str> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let rest = &s[digits..];
    if digits > 0 {
        return Some(rest.strip_prefix('.').map_or(rest, |fraction| fraction.trim_start_matches(|c: char| c.is_ascii_digit())));
    }
    let fraction = rest.strip_prefix('.')?;
    let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0).then(|| &fraction[digits..])
}

// ---- metadata ----

fn check_metadata(metadata: Option<&Value>, name_is_label: bool, causes: &mut Vec<Cause>) {
    let empty = Map::new();
    let metadata = match metadata {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(other) => {
            causes.push(type_invalid("metadata", "object", other));
            return;
        }
    };
    check_fields(OBJECT_META, metadata, "metadata", causes);
    match metadata.get("name") {
        Some(Value::String(name)) if !name.is_empty() => {
            let problems = if name_is_label { dns1123_label_problems(name) } else { dns1123_subdomain_problems(name) };
            causes.extend(problems.iter().map(|p| invalid("metadata.name", name, p)));
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            causes.push(Cause::new(REQUIRED, "metadata.name", "Required value: name or generateName is required"));
        }
        Some(_) => {} // a type error, reported above
    }
    if let Some(Value::String(namespace)) = metadata.get("namespace").filter(|n| n.as_str().is_some_and(|n| !n.is_empty())) {
        causes.extend(dns1123_label_problems(namespace).iter().map(|p| invalid("metadata.namespace", namespace, p)));
    }
    if let Some(Value::Object(labels)) = metadata.get("labels") {
        for (key, value) in labels {
            causes.extend(label_key_problems(key).iter().map(|p| invalid("metadata.labels", key, p)));
            if let Value::String(value) = value {
                causes.extend(label_value_problems(value).iter().map(|p| invalid("metadata.labels", value, p)));
            }
        }
    }
    if let Some(Value::Object(annotations)) = metadata.get("annotations") {
        // Annotation keys are qualified names in any case.
        for key in annotations.keys() {
            causes.extend(label_key_problems(&key.to_lowercase()).iter().map(|p| invalid("metadata.annotations", key, p)));
        }
        let size: usize = annotations.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
        if size > ANNOTATIONS_MAX_BYTES {
            causes.push(Cause::new(
                TOO_LONG,
                "metadata.annotations",
                format!("Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes"),
            ));
        }
    }
}

const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// `Invalid value: "<value>": <detail>`, as a Go `field.Invalid` with a string value.
fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    Cause::new(INVALID, field, format!("Invalid value: {}: {detail}", go_quote(value)))
}

// ---- names, label keys and values: apimachinery's `validation` messages ----

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str =
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str =
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// Go's `validation.RegexError`, double blanks between examples included.
fn regex_error(message: &str, pattern: &str, examples: &[&str]) -> String {
    let examples: String = examples.iter().enumerate().map(|(i, e)| format!("{}'{e}', ", if i > 0 { " or " } else { "" })).collect();
    let examples = if examples.is_empty() { String::new() } else { format!("e.g. {examples}") };
    format!("{message} ({examples}regex used for validation is '{pattern}')")
}

fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// apimachinery's `IsDNS1123Label`.
fn dns1123_label_problems(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.len() > 63 {
        problems.push(max_len_error(63));
    }
    if !matches_dns1123_label(s) {
        if matches_dns1123_subdomain(s) {
            problems.push("must not contain dots".to_string());
        } else {
            problems.push(regex_error(DNS1123_LABEL_ERR, DNS1123_LABEL_FMT, &["my-name", "123-abc"]));
        }
    }
    problems
}

/// apimachinery's `IsDNS1123Subdomain`.
fn dns1123_subdomain_problems(s: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if s.len() > 253 {
        problems.push(max_len_error(253));
    }
    if !matches_dns1123_subdomain(s) {
        problems.push(regex_error(DNS1123_SUBDOMAIN_ERR, DNS1123_SUBDOMAIN_FMT, &["example.com"]));
    }
    problems
}

/// What is wrong with a label key (apimachinery's `IsQualifiedName`): an optional DNS
/// subdomain prefix and '/', then a name of at most 63 characters. Empty when it is valid.
pub(crate) fn label_key_problems(key: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                problems.push("prefix part must be non-empty".to_string());
            } else {
                problems.extend(dns1123_subdomain_problems(prefix).into_iter().map(|p| format!("prefix part {p}")));
            }
            name
        }
        _ => {
            let shape = regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"]);
            return vec![format!("a qualified name {shape} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")];
        }
    };
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        problems.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_name_part(name) {
        problems.push(format!("name part {}", regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])));
    }
    problems
}

/// What is wrong with a label value (apimachinery's `IsValidLabelValue`): empty, or at most
/// 63 characters shaped like a qualified name. Empty when it is valid.
pub(crate) fn label_value_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 63 {
        problems.push(max_len_error(63));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        problems.push(regex_error(LABEL_VALUE_ERR, LABEL_VALUE_FMT, &["MyValue", "my_value", "12345"]));
    }
    problems
}

/// A string quoted as Go's `%q` does, as the real messages quote bad values.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

// ---- admission rules: KubeVirt's webhooks and the core kinds' own validation ----
//
// They run on objects whose schema is clean, but read defensively all the same: a wrong
// type reads as absent, never as a panic.

fn no_rules(_: &Value, _: &mut Vec<Cause>) {}

fn present(value: &Value) -> bool {
    !value.is_null()
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn names(items: &[Value]) -> HashSet<&str> {
    items.iter().map(|item| text(&item["name"])).collect()
}

/// The strategies KubeVirt's VM admitter accepts (`WaitAsReceiver` needs a feature gate).
const RUN_STRATEGIES: [&str; 5] = ["Halted", "Manual", "Always", "RerunOnFailure", "Once"];

/// KubeVirt's `ValidateVirtualMachineSpec`, in its order: the template's instance spec,
/// the DataVolume templates, the run strategy.
fn virtual_machine_rules(vm: &Value, causes: &mut Vec<Cause>) {
    let spec = &vm["spec"];
    instance_spec_rules(&spec["template"]["spec"], "spec.template.spec", causes);
    data_volume_template_rules(spec, causes);

    let running = present(&spec["running"]);
    let strategy = &spec["runStrategy"];
    if running && present(strategy) {
        causes.push(Cause::new(
            INVALID,
            "spec.running",
            "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead",
        ));
    }
    if !running && !present(strategy) {
        causes.push(Cause::new(INVALID, "spec.running", "RunStrategy must be specified"));
    }
    if let Some(strategy) = strategy.as_str() {
        if strategy == "WaitAsReceiver" {
            causes.push(Cause::new(
                INVALID,
                "spec.runStrategy",
                "Invalid RunStrategy (WaitAsReceiver), DecentralizedLiveMigration feature gate is not enabled in kubevirt resource",
            ));
        } else if !RUN_STRATEGIES.contains(&strategy) {
            causes.push(Cause::new(INVALID, "spec.runStrategy", format!("Invalid RunStrategy ({strategy})")));
        }
    }
}

fn instance_rules(vmi: &Value, causes: &mut Vec<Cause>) {
    instance_spec_rules(&vmi["spec"], "spec", causes);
}

/// The rules of KubeVirt's `ValidateVirtualMachineInstanceSpec` and network admitter that
/// vmform's objects can break; `prefix` is where the spec sits in the object.
fn instance_spec_rules(spec: &Value, prefix: &str, causes: &mut Vec<Cause>) {
    let devices = &spec["domain"]["devices"];
    let volumes = names(list(&spec["volumes"]));
    for (i, disk) in list(&devices["disks"]).iter().enumerate() {
        let name = text(&disk["name"]);
        if volumes.contains(name) {
            continue;
        }
        let message = if present(&disk["cdrom"]) {
            "DeclarativeHotplugVolumes feature gate not enabled, cannot define an empty CD-ROM disk".to_string()
        } else {
            // KubeVirt capitalises `Name` in the message, not in the field.
            format!("{prefix}.domain.devices.disks[{i}].Name '{name}' not found.")
        };
        causes.push(Cause::new(INVALID, format!("{prefix}.domain.devices.disks[{i}].name"), message));
    }

    let networks = list(&spec["networks"]);
    let interfaces = list(&devices["interfaces"]);
    let (network_names, interface_names) = (names(networks), names(interfaces));
    for (i, network) in networks.iter().enumerate() {
        let name = text(&network["name"]);
        if !interface_names.contains(name) {
            let field = format!("{prefix}.networks[{i}].name");
            causes.push(Cause::new(REQUIRED, field.clone(), format!("{field} '{name}' not found.")));
        }
    }
    for (i, interface) in interfaces.iter().enumerate() {
        let name = text(&interface["name"]);
        let field = format!("{prefix}.domain.devices.interfaces[{i}]");
        if !network_names.contains(name) {
            causes.push(Cause::new(INVALID, format!("{field}.name"), format!("{field}.name '{name}' not found.")));
        }
        // Ports are forwarded only from the pod network, so only there are they checked.
        let on_pod_network = networks.iter().any(|n| text(&n["name"]) == name && present(&n["pod"]));
        for (j, port) in list(&interface["ports"]).iter().enumerate().filter(|_| on_pod_network) {
            let protocol = text(&port["protocol"]);
            if !protocol.is_empty() && protocol != "TCP" && protocol != "UDP" {
                causes.push(Cause::new(INVALID, format!("{field}.ports[{j}].protocol"), "Unknown protocol, only TCP or UDP allowed"));
            }
        }
    }
}

/// KubeVirt's `ValidateDataVolumeTemplate`. Its field paths say `dataVolumeTemplate`, singular.
fn data_volume_template_rules(spec: &Value, causes: &mut Vec<Cause>) {
    let volumes = list(&spec["template"]["spec"]["volumes"]);
    for (i, template) in list(&spec["dataVolumeTemplates"]).iter().enumerate() {
        let entry = format!("spec.dataVolumeTemplate[{i}]");
        let name = text(&template["metadata"]["name"]);
        if name.is_empty() {
            let field = format!("{entry}.name");
            causes.push(Cause::new(
                REQUIRED,
                field.clone(),
                format!("'name' field must not be empty for DataVolumeTemplate entry {field}."),
            ));
            continue;
        }
        let dv = &template["spec"];
        let (pvc, storage) = (&dv["pvc"], &dv["storage"]);
        let target = match (present(pvc), present(storage)) {
            (false, false) => {
                causes.push(Cause::new(INVALID, format!("{entry}.PVC.Storage"), "Missing Data volume PVC or Storage"));
                continue;
            }
            (true, true) => {
                causes.push(Cause::new(
                    INVALID,
                    format!("{entry}.PVC.Storage"),
                    "Duplicate storage definition, both target storage and target pvc defined",
                ));
                continue;
            }
            (true, false) => pvc,
            (false, true) => storage,
        };
        let (source, source_ref) = (&dv["source"], &dv["sourceRef"]);
        let externally_populated = present(&target["dataSource"]) || present(&target["dataSourceRef"]);
        if externally_populated && (present(source) || present(source_ref)) {
            causes.push(Cause::new(INVALID, format!("{entry}.source"), "External population is incompatible with Source and SourceRef"));
            continue;
        }
        if !externally_populated && !present(source) && !present(source_ref) {
            causes.push(Cause::new(
                INVALID,
                format!("{entry}.source.sourceRef"),
                "Data volume should have either Source, SourceRef, or be externally populated",
            ));
            continue;
        }
        if present(source) {
            let sources = DATA_VOLUME_SOURCE_KINDS.iter().filter(|kind| present(&source[**kind])).count();
            if sources != 1 {
                let message = if sources == 0 { "Missing dataVolume valid source" } else { "Multiple dataVolume sources" };
                causes.push(Cause::new(INVALID, format!("{entry}.source"), message));
                continue;
            }
        }
        let used = volumes.iter().any(|v| text(&v["persistentVolumeClaim"]["claimName"]) == name || text(&v["dataVolume"]["name"]) == name);
        if !used {
            causes.push(Cause::new(
                REQUIRED,
                entry.clone(),
                format!("DataVolumeTemplate entry {entry} must be referenced in the VMI template's 'volumes' list"),
            ));
        }
    }
}

/// KubeVirt's migration admitter.
fn migration_rules(migration: &Value, causes: &mut Vec<Cause>) {
    if text(&migration["spec"]["vmiName"]).is_empty() {
        causes.push(Cause::new(REQUIRED, "spec.vmiName", "vmiName is missing"));
    }
}

/// Kubernetes' core/v1 event validation: an event lives in the namespace of what it is
/// about (or `default`, for cluster-scoped objects). Expects `metadata.namespace` filled.
fn event_rules(event: &Value, causes: &mut Vec<Cause>) {
    let namespace = text(&event["metadata"]["namespace"]);
    let involved = text(&event["involvedObject"]["namespace"]);
    let matches = if involved.is_empty() { namespace.is_empty() || namespace == "default" } else { namespace == involved };
    if !matches {
        causes.push(invalid("involvedObject.namespace", involved, "does not match event.namespace"));
    }
}

/// Kubernetes' lease validation.
fn lease_rules(lease: &Value, causes: &mut Vec<Cause>) {
    let spec = &lease["spec"];
    let duration = &spec["leaseDurationSeconds"];
    if duration.as_f64().is_some_and(|d| d <= 0.0) {
        causes.push(Cause::new(INVALID, "spec.leaseDurationSeconds", format!("Invalid value: {duration}: must be greater than 0")));
    }
    let transitions = &spec["leaseTransitions"];
    if transitions.as_f64().is_some_and(|t| t < 0.0) {
        causes.push(Cause::new(
            INVALID,
            "spec.leaseTransitions",
            format!("Invalid value: {transitions}: must be greater than or equal to 0"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A small VM KubeVirt accepts, with one of each list vmform emits.
    fn vm() -> Value {
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}, "annotations": {"vmform.io/source": "web.kdl:3"}},
            "spec": {
                "runStrategy": "Always",
                "dataVolumeTemplates": [{
                    "metadata": {"name": "web-0-data"},
                    "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "10Gi"}}}}
                }],
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "domain": {
                            "cpu": {"cores": 2},
                            "memory": {"guest": "2Gi"},
                            "devices": {
                                "disks": [{"name": "root", "disk": {"bus": "virtio"}}, {"name": "data", "disk": {}}],
                                "interfaces": [{"name": "default", "masquerade": {}, "ports": [{"port": 80, "protocol": "TCP"}]}]
                            }
                        },
                        "networks": [{"name": "default", "pod": {}}],
                        "volumes": [
                            {"name": "root", "containerDisk": {"image": "quay.io/containerdisks/fedora:40"}},
                            {"name": "data", "dataVolume": {"name": "web-0-data"}}
                        ]
                    }
                }
            }
        })
    }

    /// Set the field at a dotted path (`a.b[0].c`), creating objects and list items on the way.
    fn set(object: &mut Value, path: &str, value: Value) {
        let mut here = object;
        let segments: Vec<&str> = path.split('.').collect();
        for (n, segment) in segments.iter().enumerate() {
            let (key, index) = match segment.split_once('[') {
                Some((key, rest)) => (key, Some(rest.trim_end_matches(']').parse::<usize>().unwrap_or(0))),
                None => (*segment, None),
            };
            if !here.is_object() {
                *here = json!({});
            }
            let last = n + 1 == segments.len();
            let slot = here.as_object_mut().unwrap().entry(key).or_insert(Value::Null);
            here = match index {
                None if last => {
                    *slot = value;
                    return;
                }
                None => slot,
                Some(i) => {
                    if !slot.is_array() {
                        *slot = json!([]);
                    }
                    let items = slot.as_array_mut().unwrap();
                    while items.len() <= i {
                        items.push(json!({}));
                    }
                    if last {
                        items[i] = value;
                        return;
                    }
                    &mut items[i]
                }
            };
        }
    }

    /// Remove the field at a dotted path (`a.b[0].c`).
    fn remove(object: &mut Value, path: &str) {
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        let pointer: String =
            parent.split('.').filter(|s| !s.is_empty()).map(|s| format!("/{}", s.replace('[', "/").replace(']', ""))).collect();
        object.pointer_mut(&pointer).and_then(Value::as_object_mut).unwrap().remove(key);
    }

    fn vm_with(path: &str, value: Value) -> Value {
        let mut v = vm();
        set(&mut v, path, value);
        v
    }

    fn vm_without(path: &str) -> Value {
        let mut v = vm();
        remove(&mut v, path);
        v
    }

    /// The one cause of validating `object` as a `resource`.
    fn one_cause(resource: &Resource, object: &Value) -> Cause {
        let causes = validate(resource, object);
        assert_eq!(causes.len(), 1, "expected one cause, got {causes:#?}");
        causes.into_iter().next().unwrap()
    }

    fn assert_cause(cause: &Cause, field: &str, reason: &str, message: &str) {
        assert_eq!((cause.field.as_str(), cause.reason.as_str(), cause.message.as_str()), (field, reason, message));
    }

    #[test]
    fn a_valid_vm_has_no_causes() {
        assert_eq!(validate(&VIRTUAL_MACHINE, &vm()), vec![]);
    }

    #[test]
    fn name_is_required() {
        let c = one_cause(&VIRTUAL_MACHINE, &vm_without("metadata.name"));
        assert_cause(&c, "metadata.name", REQUIRED, "Required value: name or generateName is required");
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("metadata.name", json!("")));
        assert_eq!((c.field.as_str(), c.reason.as_str()), ("metadata.name", REQUIRED));
        let mut no_metadata = vm();
        remove(&mut no_metadata, "metadata");
        assert_eq!(one_cause(&VIRTUAL_MACHINE, &no_metadata).field, "metadata.name");
    }

    #[test]
    fn names_are_dns_subdomains() {
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("metadata.name", json!("Web_0")));
        assert_cause(
            &c,
            "metadata.name",
            INVALID,
            "Invalid value: \"Web_0\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and \
             must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        );
        let long = "a".repeat(254);
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("metadata.name", json!(long)));
        assert_cause(&c, "metadata.name", INVALID, &format!("Invalid value: \"{long}\": must be no more than 253 characters"));
        assert_eq!(validate(&VIRTUAL_MACHINE, &vm_with("metadata.name", json!("web.shop-0"))), vec![]);
    }

    #[test]
    fn namespace_names_are_dns_labels() {
        let ns = |name: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        assert_eq!(validate(&NAMESPACE, &ns("shop-prod")), vec![]);
        assert_cause(
            &one_cause(&NAMESPACE, &ns("shop.prod")),
            "metadata.name",
            INVALID,
            "Invalid value: \"shop.prod\": must not contain dots",
        );
        let c = one_cause(&NAMESPACE, &ns("Shop"));
        assert!(c.message.starts_with("Invalid value: \"Shop\": a lowercase RFC 1123 label must consist of"), "{}", c.message);
        assert!(
            c.message.ends_with("(e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
            "{}",
            c.message
        );
        // A node name may have dots.
        assert_eq!(validate(&NODE, &json!({"metadata": {"name": "node-1.example.com"}})), vec![]);
    }

    #[test]
    fn metadata_namespace_is_a_dns_label() {
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("metadata.namespace", json!("Shop")));
        assert_eq!((c.field.as_str(), c.reason.as_str()), ("metadata.namespace", INVALID));
        assert!(c.message.starts_with("Invalid value: \"Shop\": a lowercase RFC 1123 label"));
    }

    #[test]
    fn label_key_problems_are_one_cause_each_and_values_too() {
        let causes = validate(&VIRTUAL_MACHINE, &vm_with("metadata.labels", json!({"app/": "web server"})));
        assert_eq!(causes.len(), 3, "{causes:#?}");
        assert!(causes.iter().all(|c| c.field == "metadata.labels" && c.reason == INVALID));
        assert_eq!(causes[0].message, "Invalid value: \"app/\": name part must be non-empty");
        assert!(causes[1].message.starts_with("Invalid value: \"app/\": name part must consist of alphanumeric characters"));
        assert_eq!(
            causes[2].message,
            "Invalid value: \"web server\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for \
             validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
    }

    #[test]
    fn labels_and_annotations_are_string_maps() {
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("metadata.labels.tier", json!(3)));
        assert_cause(
            &c,
            "metadata.labels.tier",
            TYPE_INVALID,
            "Invalid value: \"integer\": metadata.labels.tier in body must be of type string: \"integer\"",
        );
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("metadata.annotations", json!(["a"])));
        assert_cause(
            &c,
            "metadata.annotations",
            TYPE_INVALID,
            "Invalid value: \"array\": metadata.annotations in body must be of type object: \"array\"",
        );
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.metadata.labels.app", json!(true)));
        assert_eq!((c.field.as_str(), c.reason.as_str()), ("spec.template.metadata.labels.app", TYPE_INVALID));
    }

    #[test]
    fn annotation_keys_and_size_are_checked() {
        // Case does not matter in annotation keys, unlike the rest of a qualified name's rules.
        assert_eq!(validate(&VIRTUAL_MACHINE, &vm_with("metadata.annotations", json!({"Example.COM/Note": "x"}))), vec![]);
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("metadata.annotations", json!({"bad key": "x"})));
        assert_eq!((c.field.as_str(), c.reason.as_str()), ("metadata.annotations", INVALID));
        assert!(c.message.starts_with("Invalid value: \"bad key\": name part must consist of"));
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("metadata.annotations", json!({"big": "x".repeat(256 * 1024)})));
        assert_cause(&c, "metadata.annotations", TOO_LONG, "Too long: may not be more than 262144 bytes");
    }

    #[test]
    fn wrong_types_have_the_structural_schemas_message() {
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.cpu.cores", json!("string")));
        assert_cause(
            &c,
            "spec.template.spec.domain.cpu.cores",
            TYPE_INVALID,
            "Invalid value: \"string\": spec.template.spec.domain.cpu.cores in body must be of type integer: \"string\"",
        );
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.cpu.cores", json!(1.5)));
        assert_eq!(c.message, "Invalid value: \"number\": spec.template.spec.domain.cpu.cores in body must be of type integer: \"number\"");
        // A number with no fraction is an integer, as the API server decodes it.
        assert_eq!(validate(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.cpu.cores", json!(2.0))), vec![]);
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.running", json!("true")));
        assert_cause(
            &c,
            "spec.running",
            TYPE_INVALID,
            "Invalid value: \"string\": spec.running in body must be of type boolean: \"string\"",
        );
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.volumes", json!({"name": "root"})));
        assert_eq!((c.field.as_str(), c.reason.as_str()), ("spec.template.spec.volumes", TYPE_INVALID));
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.devices.interfaces[0].ports[0].port", json!("80")));
        assert_eq!(c.field, "spec.template.spec.domain.devices.interfaces[0].ports[0].port");
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.nodeSelector", json!({"zone": 1})));
        assert_eq!(c.field, "spec.template.spec.nodeSelector.zone");
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.volumes[0]", json!(null)));
        assert_cause(
            &c,
            "spec.template.spec.volumes[0]",
            TYPE_INVALID,
            "Invalid value: \"null\": spec.template.spec.volumes[0] in body must be of type object: \"null\"",
        );
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let mut v = vm_with("spec.template.spec.domain.cpu.cores", json!("2"));
        set(&mut v, "spec.template.spec.domain.cpu.sockets", json!(false));
        set(&mut v, "metadata.name", json!("Web"));
        remove(&mut v, "spec.template.spec.domain.devices.disks[0].name");
        let fields: Vec<String> = validate(&VIRTUAL_MACHINE, &v).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.template.spec.domain.cpu.cores",
                "spec.template.spec.domain.cpu.sockets",
                "spec.template.spec.domain.devices.disks[0].name"
            ]
        );
    }

    #[test]
    fn quantities_are_integers_or_quantity_strings() {
        for good in
            [json!("2Gi"), json!("512M"), json!(2147483648u64), json!("1.5G"), json!("+1e3"), json!(".5"), json!("1E"), json!("100m")]
        {
            assert_eq!(validate(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.memory.guest", good.clone())), vec![], "{good}");
        }
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.memory.guest", json!("2GB")));
        assert_cause(
            &c,
            "spec.template.spec.domain.memory.guest",
            INVALID,
            r#"Invalid value: "2GB": spec.template.spec.domain.memory.guest in body should match '^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$'"#,
        );
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.memory.guest", json!(true)));
        assert_cause(
            &c,
            "spec.template.spec.domain.memory.guest",
            TYPE_INVALID,
            "Invalid value: \"boolean\": spec.template.spec.domain.memory.guest in body must be of type integer,string: \"boolean\"",
        );
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.resources.requests.memory", json!("lots")));
        assert_eq!(c.field, "spec.template.spec.domain.resources.requests.memory");
        for bad in ["", "Gi", "1.5.5", "1e", "1Ki2", "- 1", "0x10"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn required_fields_are_kubevirts() {
        let cases = [
            ("spec", "spec"),
            ("spec.template", "spec.template"),
            ("spec.template.spec.domain", "spec.template.spec.domain"),
            ("spec.template.spec.domain.devices", "spec.template.spec.domain.devices"),
            ("spec.template.spec.domain.devices.disks[0].name", "spec.template.spec.domain.devices.disks[0].name"),
            ("spec.template.spec.volumes[0].containerDisk.image", "spec.template.spec.volumes[0].containerDisk.image"),
            (
                "spec.template.spec.domain.devices.interfaces[0].ports[0].port",
                "spec.template.spec.domain.devices.interfaces[0].ports[0].port",
            ),
            ("spec.dataVolumeTemplates[0].spec", "spec.dataVolumeTemplates[0].spec"),
        ];
        for (missing, field) in cases {
            assert_cause(&one_cause(&VIRTUAL_MACHINE, &vm_without(missing)), field, REQUIRED, "Required value");
        }
        // Null is pruned, so a required null is missing.
        assert_cause(&one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template", json!(null))), "spec.template", REQUIRED, "Required value");
        // What vmform always writes but KubeVirt does not need: a port's protocol, the run strategy (given `running`).
        assert_eq!(validate(&VIRTUAL_MACHINE, &vm_without("spec.template.spec.domain.devices.interfaces[0].ports[0].protocol")), vec![]);
        let mut v = vm_without("spec.runStrategy");
        set(&mut v, "spec.running", json!(false));
        assert_eq!(validate(&VIRTUAL_MACHINE, &v), vec![]);
    }

    #[test]
    fn unknown_fields_pass_and_are_not_errors() {
        let mut v = vm_with("spec.instancetype", json!({"name": "u1.medium"}));
        set(&mut v, "spec.template.spec.domain.devices.tpm", json!({}));
        set(&mut v, "spec.template.spec.domain.cpu.numa", json!({"guestMappingPassthrough": {}}));
        set(&mut v, "spec.template.spec.volumes[0].containerDisk.x-vendor", json!([1, 2]));
        set(&mut v, "status", json!({"ready": "whatever"}));
        assert_eq!(validate(&VIRTUAL_MACHINE, &v), vec![]);
    }

    #[test]
    fn running_and_run_strategy_are_exclusive() {
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.running", json!(true)));
        assert_cause(
            &c,
            "spec.running",
            INVALID,
            "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead",
        );
        // A null `running` is pruned, so it is not set.
        assert_eq!(validate(&VIRTUAL_MACHINE, &vm_with("spec.running", json!(null))), vec![]);
    }

    #[test]
    fn run_strategy_is_required_and_one_of_kubevirts() {
        assert_cause(
            &one_cause(&VIRTUAL_MACHINE, &vm_without("spec.runStrategy")),
            "spec.running",
            INVALID,
            "RunStrategy must be specified",
        );
        for strategy in RUN_STRATEGIES {
            assert_eq!(validate(&VIRTUAL_MACHINE, &vm_with("spec.runStrategy", json!(strategy))), vec![], "{strategy}");
        }
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.runStrategy", json!("always")));
        assert_cause(&c, "spec.runStrategy", INVALID, "Invalid RunStrategy (always)");
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.runStrategy", json!("WaitAsReceiver")));
        assert_cause(
            &c,
            "spec.runStrategy",
            INVALID,
            "Invalid RunStrategy (WaitAsReceiver), DecentralizedLiveMigration feature gate is not enabled in kubevirt resource",
        );
    }

    #[test]
    fn admission_rules_wait_for_a_clean_schema() {
        // Both a type error and a run-strategy clash: a real cluster reports only the first,
        // as its webhooks never see an object the schema refused.
        let mut v = vm_with("spec.running", json!(true));
        set(&mut v, "spec.template.spec.domain.cpu.cores", json!("two"));
        assert_eq!(one_cause(&VIRTUAL_MACHINE, &v).field, "spec.template.spec.domain.cpu.cores");
        let mut v = vm_with("spec.running", json!(true));
        set(&mut v, "metadata.name", json!("Web"));
        assert_eq!(one_cause(&VIRTUAL_MACHINE, &v).field, "metadata.name");
    }

    #[test]
    fn every_disk_needs_a_volume_of_its_name() {
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.devices.disks[0].name", json!("rootdisk")));
        assert_cause(
            &c,
            "spec.template.spec.domain.devices.disks[0].name",
            INVALID,
            "spec.template.spec.domain.devices.disks[0].Name 'rootdisk' not found.",
        );
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.devices.disks[2]", json!({"name": "iso", "cdrom": {}})));
        assert_cause(
            &c,
            "spec.template.spec.domain.devices.disks[2].name",
            INVALID,
            "DeclarativeHotplugVolumes feature gate not enabled, cannot define an empty CD-ROM disk",
        );
        // A volume without a disk is fine (cloud-init and friends may be attached anyway).
        assert_eq!(
            validate(
                &VIRTUAL_MACHINE,
                &vm_with("spec.template.spec.volumes[2]", json!({"name": "spare", "emptyDisk": {"capacity": "1Gi"}}))
            ),
            vec![]
        );
    }

    #[test]
    fn interfaces_and_networks_pair_up_by_name() {
        let c = one_cause(
            &VIRTUAL_MACHINE,
            &vm_with("spec.template.spec.networks[1]", json!({"name": "storage", "multus": {"networkName": "san"}})),
        );
        assert_cause(&c, "spec.template.spec.networks[1].name", REQUIRED, "spec.template.spec.networks[1].name 'storage' not found.");
        let c = one_cause(
            &VIRTUAL_MACHINE,
            &vm_with("spec.template.spec.domain.devices.interfaces[1]", json!({"name": "storage", "bridge": {}})),
        );
        assert_cause(
            &c,
            "spec.template.spec.domain.devices.interfaces[1].name",
            INVALID,
            "spec.template.spec.domain.devices.interfaces[1].name 'storage' not found.",
        );
    }

    #[test]
    fn port_protocols_on_the_pod_network_are_tcp_or_udp() {
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.domain.devices.interfaces[0].ports[0].protocol", json!("tcp")));
        assert_cause(
            &c,
            "spec.template.spec.domain.devices.interfaces[0].ports[0].protocol",
            INVALID,
            "Unknown protocol, only TCP or UDP allowed",
        );
        let mut v = vm_with("spec.template.spec.domain.devices.interfaces[0].ports[0].protocol", json!("SCTP"));
        set(&mut v, "spec.template.spec.networks[0]", json!({"name": "default", "multus": {"networkName": "lan"}}));
        assert_eq!(validate(&VIRTUAL_MACHINE, &v), vec![], "only the pod network forwards ports");
    }

    #[test]
    fn data_volume_templates_are_named_stored_sourced_and_used() {
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.dataVolumeTemplates[0].metadata.name", json!("")));
        assert_cause(
            &c,
            "spec.dataVolumeTemplate[0].name",
            REQUIRED,
            "'name' field must not be empty for DataVolumeTemplate entry spec.dataVolumeTemplate[0].name.",
        );
        let c = one_cause(&VIRTUAL_MACHINE, &vm_without("spec.dataVolumeTemplates[0].spec.storage"));
        assert_cause(&c, "spec.dataVolumeTemplate[0].PVC.Storage", INVALID, "Missing Data volume PVC or Storage");
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.dataVolumeTemplates[0].spec.pvc", json!({})));
        assert_cause(
            &c,
            "spec.dataVolumeTemplate[0].PVC.Storage",
            INVALID,
            "Duplicate storage definition, both target storage and target pvc defined",
        );
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.dataVolumeTemplates[0].spec.source", json!(null)));
        assert_cause(
            &c,
            "spec.dataVolumeTemplate[0].source.sourceRef",
            INVALID,
            "Data volume should have either Source, SourceRef, or be externally populated",
        );
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.dataVolumeTemplates[0].spec.source.http", json!({"url": "https://x/disk.img"})));
        assert_cause(&c, "spec.dataVolumeTemplate[0].source", INVALID, "Multiple dataVolume sources");
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.dataVolumeTemplates[0].spec.source", json!({})));
        assert_cause(&c, "spec.dataVolumeTemplate[0].source", INVALID, "Missing dataVolume valid source");
        let c = one_cause(&VIRTUAL_MACHINE, &vm_with("spec.template.spec.volumes[1].dataVolume.name", json!("other")));
        // The disk still has its volume; the template has lost its user.
        assert_cause(
            &c,
            "spec.dataVolumeTemplate[0]",
            REQUIRED,
            "DataVolumeTemplate entry spec.dataVolumeTemplate[0] must be referenced in the VMI template's 'volumes' list",
        );
        // A claim of the template's name uses it too.
        assert_eq!(
            validate(
                &VIRTUAL_MACHINE,
                &vm_with("spec.template.spec.volumes[1]", json!({"name": "data", "persistentVolumeClaim": {"claimName": "web-0-data"}}))
            ),
            vec![]
        );
    }

    fn vmi() -> Value {
        let mut v = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "web-0"}});
        v["spec"] = vm()["spec"]["template"]["spec"].clone();
        v
    }

    #[test]
    fn instances_share_the_instance_spec_rules() {
        assert_eq!(validate(&VIRTUAL_MACHINE_INSTANCE, &vmi()), vec![]);
        let mut v = vmi();
        v.as_object_mut().unwrap().remove("spec");
        assert_cause(&one_cause(&VIRTUAL_MACHINE_INSTANCE, &v), "spec", REQUIRED, "Required value");
        let mut v = vmi();
        v["spec"]["domain"]["devices"]["disks"][0]["name"] = json!("boot");
        assert_cause(
            &one_cause(&VIRTUAL_MACHINE_INSTANCE, &v),
            "spec.domain.devices.disks[0].name",
            INVALID,
            "spec.domain.devices.disks[0].Name 'boot' not found.",
        );
        let mut v = vmi();
        v["spec"]["domain"]["memory"]["guest"] = json!([]);
        assert_eq!(one_cause(&VIRTUAL_MACHINE_INSTANCE, &v).field, "spec.domain.memory.guest");
        // A VM's run strategy means nothing to an instance.
        assert_eq!(validate(&VIRTUAL_MACHINE_INSTANCE, &vmi()).len(), 0);
    }

    #[test]
    fn migrations_name_their_instance() {
        let migration = |spec: Value| json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration", "metadata": {"name": "m"}, "spec": spec});
        assert_eq!(validate(&MIGRATION, &migration(json!({"vmiName": "web-0"}))), vec![]);
        assert_cause(&one_cause(&MIGRATION, &migration(json!({}))), "spec.vmiName", REQUIRED, "vmiName is missing");
        assert_cause(&one_cause(&MIGRATION, &migration(json!({"vmiName": ""}))), "spec.vmiName", REQUIRED, "vmiName is missing");
        let c = one_cause(&MIGRATION, &migration(json!({"vmiName": 7})));
        assert_cause(
            &c,
            "spec.vmiName",
            TYPE_INVALID,
            "Invalid value: \"integer\": spec.vmiName in body must be of type string: \"integer\"",
        );
        let mut no_spec = migration(json!({}));
        no_spec.as_object_mut().unwrap().remove("spec");
        assert_cause(&one_cause(&MIGRATION, &no_spec), "spec", REQUIRED, "Required value");
    }

    #[test]
    fn leases_are_typed_and_their_durations_positive() {
        let lease = |spec: Value| json!({"metadata": {"name": "vmform-controller", "namespace": "vmform-system"}, "spec": spec});
        let good = json!({
            "holderIdentity": "host-1", "leaseDurationSeconds": 15, "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 0
        });
        assert_eq!(validate(&LEASE, &lease(good)), vec![]);
        let c = one_cause(&LEASE, &lease(json!({"leaseDurationSeconds": "15"})));
        assert_cause(
            &c,
            "spec.leaseDurationSeconds",
            TYPE_INVALID,
            "Invalid value: \"string\": spec.leaseDurationSeconds in body must be of type integer: \"string\"",
        );
        assert_cause(
            &one_cause(&LEASE, &lease(json!({"holderIdentity": 1}))),
            "spec.holderIdentity",
            TYPE_INVALID,
            "Invalid value: \"integer\": spec.holderIdentity in body must be of type string: \"integer\"",
        );
        assert_cause(
            &one_cause(&LEASE, &lease(json!({"leaseDurationSeconds": 0}))),
            "spec.leaseDurationSeconds",
            INVALID,
            "Invalid value: 0: must be greater than 0",
        );
        assert_cause(
            &one_cause(&LEASE, &lease(json!({"leaseTransitions": -1}))),
            "spec.leaseTransitions",
            INVALID,
            "Invalid value: -1: must be greater than or equal to 0",
        );
    }

    #[test]
    fn events_are_about_something_in_their_namespace() {
        let event = |involved: Value| json!({"metadata": {"name": "web-0.1", "namespace": "shop"}, "involvedObject": involved, "reason": "Started", "count": 1});
        assert_eq!(validate(&EVENT, &event(json!({"kind": "VirtualMachine", "name": "web-0", "namespace": "shop"}))), vec![]);
        let mut missing = event(json!({}));
        remove(&mut missing, "involvedObject");
        assert_cause(&one_cause(&EVENT, &missing), "involvedObject", REQUIRED, "Required value");
        let c = one_cause(&EVENT, &event(json!({"kind": "VirtualMachine", "name": "web-0", "namespace": "other"})));
        assert_cause(&c, "involvedObject.namespace", INVALID, "Invalid value: \"other\": does not match event.namespace");
        let c = one_cause(&EVENT, &event(json!({"kind": "Node", "name": "n1"})));
        assert_cause(&c, "involvedObject.namespace", INVALID, "Invalid value: \"\": does not match event.namespace");
        let mut node_event = event(json!({"kind": "Node", "name": "n1"}));
        node_event["metadata"]["namespace"] = json!("default");
        assert_eq!(validate(&EVENT, &node_event), vec![]);
        let mut miscounted = event(json!({"name": "web-0", "namespace": "shop"}));
        miscounted["count"] = json!("1");
        let c = one_cause(&EVENT, &miscounted);
        assert_eq!((c.field.as_str(), c.reason.as_str()), ("count", TYPE_INVALID));
    }

    #[test]
    fn nodes_and_namespaces_are_typed_lightly() {
        let node =
            json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k"}]}, "status": {"capacity": {"cpu": "4", "memory": "8Gi"}}});
        assert_cause(&one_cause(&NODE, &node), "spec.taints[0].effect", REQUIRED, "Required value");
        let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": "yes"}});
        assert_eq!(one_cause(&NODE, &node).field, "spec.unschedulable");
        let ns = json!({"metadata": {"name": "shop"}, "spec": {"finalizers": ["kubernetes", 1]}});
        assert_eq!(one_cause(&NAMESPACE, &ns).field, "spec.finalizers[1]");
    }

    #[test]
    fn non_objects_are_refused_whole() {
        for (value, actual) in [(json!([]), "array"), (json!("vm"), "string"), (json!(null), "null")] {
            let c = one_cause(&VIRTUAL_MACHINE, &value);
            assert_cause(&c, "", TYPE_INVALID, &format!("Invalid value: \"{actual}\": body must be of type object: \"{actual}\""));
        }
        assert_eq!(one_cause(&VIRTUAL_MACHINE, &vm_with("metadata", json!("web"))).field, "metadata");
        // A metadata of the wrong type says so once, and stops there.
        assert_eq!(one_cause(&VIRTUAL_MACHINE, &vm_with("metadata.name", json!(5))).reason, TYPE_INVALID);
    }

    /// Every JSON shape at every known place, and random JSON documents: answers, never panics.
    #[test]
    fn no_json_input_panics() {
        let odd = [
            json!(null),
            json!(true),
            json!(-1),
            json!(1.5),
            json!(""),
            json!("x"),
            json!([]),
            json!([null, 1, "a", {}]),
            json!({}),
            json!({"name": []}),
        ];
        for entry in schema_table() {
            let Some(resource) = KINDS.iter().find(|k| k.resource.kind == entry.kind).map(|k| k.resource) else { continue };
            let base = if resource == &VIRTUAL_MACHINE {
                vm()
            } else if resource == &VIRTUAL_MACHINE_INSTANCE {
                vmi()
            } else {
                json!({"metadata": {"name": "x"}})
            };
            let path = entry.path.replace("[]", "[0]").replace(".*", ".key");
            for value in &odd {
                let mut object = base.clone();
                set(&mut object, &path, value.clone());
                let _ = validate(resource, &object);
            }
        }
        // A small deterministic generator of arbitrary documents.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn arbitrary(next: &mut impl FnMut() -> u64, depth: u32) -> Value {
            let keys = [
                "metadata",
                "name",
                "spec",
                "template",
                "domain",
                "devices",
                "disks",
                "volumes",
                "networks",
                "interfaces",
                "running",
                "runStrategy",
                "labels",
                "dataVolumeTemplates",
                "storage",
                "source",
                "ports",
                "pod",
            ];
            match next() % if depth == 0 { 5 } else { 7 } {
                0 => Value::Null,
                1 => json!(next().is_multiple_of(2)),
                2 => json!((next() % 7) as i64 - 3),
                3 => json!(keys[(next() % keys.len() as u64) as usize]),
                4 => json!(0.5),
                5 => Value::Array((0..next() % 3).map(|_| arbitrary(next, depth - 1)).collect()),
                _ => Value::Object(
                    (0..next() % 4)
                        .map(|_| (keys[(next() % keys.len() as u64) as usize].to_string(), arbitrary(next, depth - 1)))
                        .collect(),
                ),
            }
        }
        for _ in 0..3000 {
            let document = arbitrary(&mut next, 6);
            for kind in KINDS {
                let _ = validate(kind.resource, &document);
            }
        }
    }

    #[test]
    fn dns_names() {
        assert!(is_dns1123_subdomain("web-0.shop"));
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        for bad in ["", "-a", "a-", "A", "a..b", ".a", "a_b", "ä"] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
        assert!(is_dns1123_label("shop-prod"));
        assert!(is_dns1123_label("0"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        for bad in ["", "a.b", "-a", "Shop", "a_b"] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn label_keys_follow_qualified_name_rules() {
        for good in ["app", "app.kubernetes.io/name", "kubevirt.io/vm", "A-b_c.D", "x/y"] {
            assert_eq!(label_key_problems(good), Vec::<String>::new(), "{good}");
        }
        assert_eq!(label_key_problems("/a"), ["prefix part must be non-empty"]);
        assert_eq!(label_key_problems(&"k".repeat(64)), ["name part must be no more than 63 characters"]);
        assert!(label_key_problems("a/b/c")[0].ends_with("with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
        assert_eq!(label_value_problems(""), Vec::<String>::new());
        assert_eq!(label_value_problems(&"v".repeat(64)), ["must be no more than 63 characters"]);
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
    }

    #[test]
    fn the_schema_table_lists_each_field_once_with_its_parent_first() {
        let entries: Vec<SchemaEntry> = schema_table().collect();
        let mut seen = HashSet::new();
        for e in &entries {
            assert!(seen.insert((e.kind, e.path.clone())), "{} {} twice", e.kind, e.path);
            if let Some((parent, _)) = e.path.rsplit_once('.').or_else(|| e.path.strip_suffix("[]").map(|p| (p, ""))) {
                assert!(seen.contains(&(e.kind, parent.to_string())), "{} {} before its parent", e.kind, e.path);
            }
            assert!(!(e.required && (e.path.ends_with("[]") || e.path.ends_with(".*"))), "{}", e.path);
        }
        let find = |kind, path: &str| entries.iter().find(|e| e.kind == kind && e.path == path).cloned();
        let cores = find("VirtualMachine", "spec.template.spec.domain.cpu.cores").unwrap();
        assert_eq!((cores.type_name, cores.required), ("integer", false));
        assert_eq!(find("VirtualMachine", "spec.template.spec.domain.memory.guest").unwrap().type_name, "int-or-string");
        assert!(find("VirtualMachine", "spec.template.spec.domain.devices.disks[].name").unwrap().required);
        assert_eq!(find("VirtualMachine", "spec.template.spec.nodeSelector.*").unwrap().type_name, "string");
        assert!(!find("VirtualMachine", "spec.runStrategy").unwrap().required);
        assert!(entries.len() > 200, "{}", entries.len());
    }
}
