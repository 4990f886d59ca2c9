//! The KubeVirt API objects as the runtime reads and writes them: dynamic objects (so a
//! field the runtime does not know is never lost on the way), the names KubeVirt uses for
//! labels, annotations and finalizers (vmform-cluster's, re-exported), and the few typed
//! readings the runtime needs.

use kube::api::DynamicObject;
use kube::core::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

// The names (resources, labels, annotations, finalizers) live in vmform-cluster, for
// plan and apply and the CLI too; `crate::kubevirt::…` keeps reaching them.
pub use vmform_cluster::kubevirt::*;

/// A VMI's `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Scheduling,
    Scheduled,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    pub fn of(vmi: &DynamicObject) -> Phase {
        match vmi.data.pointer("/status/phase").and_then(Value::as_str).unwrap_or("") {
            "" | "Pending" => Phase::Pending,
            "Scheduling" => Phase::Scheduling,
            "Scheduled" => Phase::Scheduled,
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            _ => Phase::Unknown,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Scheduling => "Scheduling",
            Phase::Scheduled => "Scheduled",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }
    /// Succeeded and Failed never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// KubeVirt's default `completionTimeoutPerGiB`: seconds a migration may take per GiB it moves.
pub const DEFAULT_COMPLETION_TIMEOUT_PER_GIB: u64 = 150;

/// A VirtualMachineInstanceMigration's `status.phase`, in the order a migration goes
/// through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MigrationPhase {
    Pending,
    Scheduling,
    Scheduled,
    PreparingTarget,
    TargetReady,
    Running,
    Succeeded,
    Failed,
}

impl MigrationPhase {
    pub const ALL: [MigrationPhase; 8] = [
        MigrationPhase::Pending,
        MigrationPhase::Scheduling,
        MigrationPhase::Scheduled,
        MigrationPhase::PreparingTarget,
        MigrationPhase::TargetReady,
        MigrationPhase::Running,
        MigrationPhase::Succeeded,
        MigrationPhase::Failed,
    ];
    /// `None` for an object no controller has seen yet (no phase).
    pub fn of(vmim: &DynamicObject) -> Option<MigrationPhase> {
        let phase = vmim.data.pointer("/status/phase").and_then(Value::as_str)?;
        Self::ALL.into_iter().find(|p| p.as_str() == phase)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationPhase::Pending => "Pending",
            MigrationPhase::Scheduling => "Scheduling",
            MigrationPhase::Scheduled => "Scheduled",
            MigrationPhase::PreparingTarget => "PreparingTarget",
            MigrationPhase::TargetReady => "TargetReady",
            MigrationPhase::Running => "Running",
            MigrationPhase::Succeeded => "Succeeded",
            MigrationPhase::Failed => "Failed",
        }
    }
    pub fn is_final(self) -> bool {
        matches!(self, MigrationPhase::Succeeded | MigrationPhase::Failed)
    }
    /// Handed to the nodes and not finished: it counts against the limits.
    pub fn in_flight(self) -> bool {
        self > MigrationPhase::Pending && !self.is_final()
    }
}

/// The migration options in force for one migration (KubeVirt's
/// `migrationState.migrationConfiguration`): the cluster's, with a MigrationPolicy's on top.
/// Unset options serialise as null, so a merge patch removes an earlier migration's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MigrationConfiguration {
    /// Bytes per second, as a quantity (`64Mi`); `0` or none: no limit.
    pub bandwidth_per_migration: Option<String>,
    pub completion_timeout_per_gi_b: Option<u64>,
    pub parallel_migrations_per_cluster: Option<u32>,
    pub parallel_outbound_migrations_per_node: Option<u32>,
    pub allow_auto_converge: Option<bool>,
    /// The longest the guest may be paused at the switch-over (QEMU's downtime limit).
    pub max_downtime_ms: Option<u64>,
}

/// A VMI's `status.migrationState` (KubeVirt's `VirtualMachineInstanceMigrationState`), the
/// part the runtime reads and writes. The controller writes who and where; the target
/// handler `targetNodeAddress`; the source handler the start and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct MigrationState {
    pub migration_uid: String,
    pub source_node: String,
    pub target_node: String,
    pub target_node_address: Option<String>,
    pub start_timestamp: Option<String>,
    pub end_timestamp: Option<String>,
    pub mode: Option<String>,
    pub completed: bool,
    pub failed: bool,
    pub failure_reason: Option<String>,
    pub abort_requested: bool,
    pub abort_status: Option<String>,
    pub migration_configuration: Option<MigrationConfiguration>,
    pub migration_policy_name: Option<String>,
}

impl MigrationState {
    pub fn of(vmi: &DynamicObject) -> Option<MigrationState> {
        serde_json::from_value(vmi.data.pointer("/status/migrationState")?.clone()).ok()
    }
    /// Handed to the nodes, and neither completed nor failed.
    pub fn in_flight(&self) -> bool {
        !self.migration_uid.is_empty() && !self.completed && !self.failed
    }
    pub fn started(&self) -> bool {
        self.start_timestamp.is_some()
    }
    /// The whole state as a merge patch value: every field written (unset ones as null),
    /// so nothing of an earlier migration's state survives.
    pub fn to_patch(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("the migration state serialises");
        for flag in ["completed", "failed", "abortRequested"] {
            if v[flag] == Value::Bool(false) {
                v[flag] = Value::Null;
            }
        }
        v
    }
    /// A merge patch of the VMI's status with this state, guarded by `vmi`'s resourceVersion.
    pub fn status_patch(&self, vmi: &DynamicObject) -> Value {
        serde_json::json!({ "metadata": { "resourceVersion": vmi.metadata.resource_version }, "status": { "migrationState": self.to_patch() } })
    }
}

/// `spec.runStrategy`, with the deprecated `spec.running` read as KubeVirt reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStrategy {
    Always,
    RerunOnFailure,
    Once,
    Manual,
    Halted,
}

impl RunStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStrategy::Always => "Always",
            RunStrategy::RerunOnFailure => "RerunOnFailure",
            RunStrategy::Once => "Once",
            RunStrategy::Manual => "Manual",
            RunStrategy::Halted => "Halted",
        }
    }
    pub fn of(vm: &DynamicObject) -> RunStrategy {
        match vm.data.pointer("/spec/runStrategy").and_then(Value::as_str) {
            Some("Always") => RunStrategy::Always,
            Some("RerunOnFailure") => RunStrategy::RerunOnFailure,
            Some("Once") => RunStrategy::Once,
            Some("Manual") => RunStrategy::Manual,
            Some("Halted") => RunStrategy::Halted,
            _ => match vm.data.pointer("/spec/running").and_then(Value::as_bool) {
                Some(true) => RunStrategy::Always,
                _ => RunStrategy::Halted,
            },
        }
    }
}

/// What a VMI asks of a node: vCPUs, the CPU it requests in millicores, and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// KubeVirt's default `cpuAllocationRatio`: a vCPU without an explicit request asks for
/// a tenth of a core.
const CPU_ALLOCATION_RATIO: u64 = 10;

pub fn vcpus(spec: &Value) -> u64 {
    let cpu = &spec["domain"]["cpu"];
    let part = |k: &str| cpu.get(k).and_then(Value::as_u64).filter(|n| *n > 0);
    if part("sockets").is_some() || part("cores").is_some() || part("threads").is_some() {
        return part("sockets").unwrap_or(1) * part("cores").unwrap_or(1) * part("threads").unwrap_or(1);
    }
    // Without a topology KubeVirt gives the guest as many vCPUs as whole cores requested.
    quantity(&spec["domain"]["resources"]["requests"]["cpu"])
        .or_else(|| quantity(&spec["domain"]["resources"]["limits"]["cpu"]))
        .map(|cores| cores.ceil().max(1.0) as u64)
        .unwrap_or(1)
}

/// The guest's memory: `domain.memory.guest`, else the memory request, else the limit.
pub fn guest_memory(spec: &Value) -> Option<u64> {
    quantity(&spec["domain"]["memory"]["guest"])
        .or_else(|| quantity(&spec["domain"]["resources"]["requests"]["memory"]))
        .or_else(|| quantity(&spec["domain"]["resources"]["limits"]["memory"]))
        .map(|b| b as u64)
}

/// Whether the guest's CPU is the host's own (`domain.cpu.model: host-passthrough`): it can
/// move only to a node of the same host.
pub fn host_passthrough(spec: &Value) -> bool {
    spec.pointer("/domain/cpu/model").and_then(Value::as_str) == Some("host-passthrough")
}

/// Which host a Node runs on: its boot id (`status.nodeInfo.bootID`), shared by the nodes
/// `vmform up --nodes N` runs on one machine.
pub fn host_of(node: &k8s_openapi::api::core::v1::Node) -> Option<&str> {
    node.status.as_ref()?.node_info.as_ref().map(|i| i.boot_id.as_str()).filter(|b| !b.is_empty())
}

pub fn demand(spec: &Value) -> Demand {
    let cpu_millis = quantity(&spec["domain"]["resources"]["requests"]["cpu"])
        .map(|c| (c * 1000.0).ceil() as u64)
        .unwrap_or_else(|| vcpus(spec) * 1000 / CPU_ALLOCATION_RATIO);
    Demand { cpu_millis, memory_bytes: guest_memory(spec).unwrap_or(0) }
}

/// A Kubernetes quantity (`"512Mi"`, `"1.5"`, `"500m"`, `"1.5Gi"`, or a number) as a
/// float, read by the one quantity parser.
pub fn quantity(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => parse_quantity(s),
        other => vmform_cluster::quantity::of_json(other).map(|a| a.as_f64()),
    }
}

fn parse_quantity(s: &str) -> Option<f64> {
    vmform_cluster::quantity::parse_amount(s.trim()).ok().map(|a| a.as_f64())
}

/// The condition of the given type in `status.conditions`, if any.
pub fn condition<'a>(object: &'a DynamicObject, kind: &str) -> Option<&'a Value> {
    object.data.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == kind)
}

pub fn condition_is_true(object: &DynamicObject, kind: &str) -> bool {
    condition(object, kind).is_some_and(|c| c["status"] == "True")
}

/// A condition as Kubernetes writes it; `lastTransitionTime` is kept from `previous`
/// when the status did not change, so a steady condition does not look new.
pub fn make_condition(kind: &str, status: bool, reason: &str, message: &str, previous: Option<&Value>, now: &str) -> Value {
    let status = if status { "True" } else { "False" };
    let since = previous
        .filter(|p| p["status"] == status)
        .and_then(|p| p.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| Value::String(now.to_string()));
    let mut c = serde_json::json!({ "type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since });
    if !reason.is_empty() {
        c["reason"] = Value::String(reason.to_string());
    }
    if !message.is_empty() {
        c["message"] = Value::String(message.to_string());
    }
    c
}

/// Whether a VMI ever reached Running (its `status.phaseTransitionTimestamps` say so).
pub fn ever_ran(vmi: &DynamicObject) -> bool {
    Phase::of(vmi) == Phase::Running
        || vmi.data.pointer("/status/phaseTransitionTimestamps").and_then(Value::as_array).is_some_and(|l| l.iter().any(|t| t["phase"] == "Running"))
}

/// A `status` merge patch moving a VMI to `phase`, with the transition recorded in
/// `phaseTransitionTimestamps` when the phase changes, and `conditions` replacing those
/// of the same type. Guarded by the resourceVersion it was read at.
pub fn phase_patch(vmi: &DynamicObject, phase: Phase, conditions: Vec<Value>) -> Value {
    let mut all: Vec<Value> = vmi.data.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    for c in conditions {
        all.retain(|x| x["type"] != c["type"]);
        all.push(c);
    }
    let mut status = serde_json::json!({ "phase": phase.as_str(), "conditions": all });
    if Phase::of(vmi) != phase || vmi.data.pointer("/status/phase").is_none() {
        let mut transitions: Vec<Value> = vmi.data.pointer("/status/phaseTransitionTimestamps").and_then(Value::as_array).cloned().unwrap_or_default();
        transitions.push(serde_json::json!({ "phase": phase.as_str(), "phaseTransitionTimestamp": now() }));
        status["phaseTransitionTimestamps"] = Value::Array(transitions);
    }
    serde_json::json!({ "metadata": { "resourceVersion": vmi.metadata.resource_version }, "status": status })
}

pub fn is_deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

pub fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.as_ref().is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// Now, as the API's timestamps are written (RFC 3339, seconds, UTC).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn demand_follows_kubevirt_defaults() {
        let spec = json!({ "domain": { "cpu": { "cores": 2, "sockets": 2 }, "memory": { "guest": "64Mi" } } });
        assert_eq!(vcpus(&spec), 4);
        assert_eq!(demand(&spec), Demand { cpu_millis: 400, memory_bytes: 64 << 20 });
        let spec = json!({ "domain": { "resources": { "requests": { "cpu": "1500m", "memory": "1Gi" } } } });
        assert_eq!(vcpus(&spec), 2);
        assert_eq!(demand(&spec), Demand { cpu_millis: 1500, memory_bytes: 1 << 30 });
        assert_eq!(vcpus(&json!({})), 1);
        assert_eq!(demand(&json!({})).cpu_millis, 100);
    }

    #[test]
    fn a_migration_state_patch_clears_what_an_earlier_one_set() {
        let earlier = MigrationState {
            migration_uid: "m1".into(),
            completed: true,
            abort_requested: true,
            migration_configuration: Some(MigrationConfiguration { bandwidth_per_migration: Some("1Mi".into()), ..Default::default() }),
            ..Default::default()
        };
        let later = MigrationState { migration_uid: "m2".into(), migration_configuration: Some(MigrationConfiguration::default()), ..Default::default() };
        let mut stored = serde_json::to_value(&earlier).unwrap();
        // As the API server applies a merge patch.
        json_patch::merge(&mut stored, &later.to_patch());
        assert_eq!(serde_json::from_value::<MigrationState>(stored.clone()).unwrap(), later);
        assert!(stored.get("completed").is_none() && stored["migrationConfiguration"].get("bandwidthPerMigration").is_none(), "{stored}");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("512Mi"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("2G"), Some(2e9));
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("3"), Some(3.0));
        assert_eq!(parse_quantity("3x"), None);
        assert_eq!(parse_quantity("1.5Gi"), Some(1610612736.0));
        assert_eq!(parse_quantity("129e6"), Some(129e6));
    }
}
