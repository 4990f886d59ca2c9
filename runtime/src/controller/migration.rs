//! The VirtualMachineInstanceMigration reconciler (KubeVirt's migration controller): checks
//! a new migration, holds it while the limits are reached, picks the target node and
//! hands the migration to the nodes by writing the VMI's `status.migrationState`; then
//! follows what the handlers write there, phase by phase, into the migration's status.
//! Deleting a migration that runs aborts it (its finalizer holds it until the outcome).

use super::scheduler::{choose_node, used_by_node};
use crate::semantics::node_is_ready as is_ready;
use super::Context;
use crate::Error;
use crate::kubevirt::{self, MigrationConfiguration, MigrationPhase, MigrationState, Phase};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The cluster-wide migration settings (KubeVirt's `spec.configuration.migrations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationConfig {
    pub parallel_migrations_per_cluster: u32,
    pub parallel_outbound_migrations_per_node: u32,
    pub completion_timeout_per_gib: u64,
    /// Bytes per second, as a quantity; `None`: no limit.
    pub bandwidth_per_migration: Option<String>,
    /// QEMU's downtime limit: the longest the guest may be paused at the switch-over.
    pub max_downtime_ms: Option<u64>,
    /// How long the target may take to get ready before the migration fails (KubeVirt's
    /// target pod timeouts).
    pub target_ready_timeout: Duration,
}

/// vmform's downtime limit. KubeVirt's is 900 ms; QEMU goes on copying until what is left
/// fits the limit, so an idle guest pauses for about the limit. The runtime's nodes are
/// close (one machine, or one rack), so it aims lower; a guest that cannot get there runs
/// into its completion timeout, and a MigrationPolicy's `maxDowntimeMs` raises it.
pub const DEFAULT_MAX_DOWNTIME_MS: u64 = 100;

impl Default for MigrationConfig {
    /// KubeVirt's defaults, but the downtime limit.
    fn default() -> Self {
        MigrationConfig {
            parallel_migrations_per_cluster: 5,
            parallel_outbound_migrations_per_node: 2,
            completion_timeout_per_gib: kubevirt::DEFAULT_COMPLETION_TIMEOUT_PER_GIB,
            bandwidth_per_migration: None,
            max_downtime_ms: Some(DEFAULT_MAX_DOWNTIME_MS),
            target_ready_timeout: Duration::from_secs(300),
        }
    }
}

/// How often an unfinished migration is looked at besides its events (its timeouts).
const RECHECK: Duration = Duration::from_secs(2);

pub(super) async fn reconcile(vmim: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = vmim.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &kubevirt::migration_resource());
    let Some(m) = api.get_opt(&vmim.name_any()).await? else { return Ok(Action::await_change()) };
    let vmis: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.vmi_resource);
    let vmi_name = m.data.pointer("/spec/vmiName").and_then(Value::as_str).unwrap_or_default().to_string();
    let vmi = if vmi_name.is_empty() { None } else { vmis.get_opt(&vmi_name).await? };
    let uid = m.metadata.uid.clone().unwrap_or_default();
    // The VMI's migration state, when it is this migration's.
    let state = vmi.as_ref().and_then(MigrationState::of).filter(|s| s.migration_uid == uid);
    let phase = MigrationPhase::of(&m);

    if kubevirt::is_deleting(&m.metadata) {
        if !kubevirt::has_finalizer(&m.metadata, kubevirt::MIGRATION_FINALIZER) {
            return Ok(Action::await_change());
        }
        if let (Some(vmi), Some(s)) = (&vmi, &state)
            && s.in_flight()
        {
            // Deleting a running migration cancels it: the nodes abort, the guest stays.
            if !s.abort_requested {
                let mut abort = s.clone();
                abort.abort_requested = true;
                abort.failure_reason = Some("the migration was cancelled: its VirtualMachineInstanceMigration was deleted".into());
                vmis.patch_status(&vmi_name, &PatchParams::default(), &Patch::Merge(&abort.status_patch(vmi))).await?;
            }
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
        super::vm::remove_finalizer(&api, &m, kubevirt::MIGRATION_FINALIZER).await?;
        return Ok(Action::await_change());
    }
    if phase.is_some_and(MigrationPhase::is_final) {
        return Ok(Action::await_change());
    }
    let m = if kubevirt::has_finalizer(&m.metadata, kubevirt::MIGRATION_FINALIZER) {
        m
    } else {
        let mut finalizers = m.finalizers().to_vec();
        finalizers.push(kubevirt::MIGRATION_FINALIZER.to_string());
        let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": m.resource_version() } });
        api.patch(&m.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?
    };

    let Some(vmi) = vmi else {
        return fail(&api, &m, &format!("VirtualMachineInstance {namespace}/{vmi_name} does not exist")).await;
    };
    match (phase.unwrap_or(MigrationPhase::Pending), state) {
        (MigrationPhase::Pending, None) => start(&api, &vmis, &m, &vmi, &ctx).await,
        (_, None) => fail(&api, &m, "the VMI's migration state is gone (the VMI was replaced, or another migration took over)").await,
        (_, Some(state)) => follow(&api, &vmis, &m, &vmi, state, &ctx).await,
    }
}

/// A new migration: check it, wait for room under the limits, pick the target, hand over.
async fn start(api: &Api<DynamicObject>, vmis: &Api<DynamicObject>, m: &DynamicObject, vmi: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    if let Err(reason) = migratable(vmi) {
        return fail(api, m, &reason).await;
    }
    let Some(source) = vmi.data.pointer("/status/nodeName").and_then(Value::as_str).map(str::to_string) else {
        return fail(api, m, "the VMI is not on a node").await;
    };
    if kubevirt::condition(vmi, "LiveMigratable").is_none() {
        // Its handler has not said yet.
        return Ok(Action::requeue(RECHECK));
    }
    // Fresh: each placement here must see the ones before it (this loop runs one at a time).
    let all = Api::<DynamicObject>::all_with(ctx.client.clone(), &kubevirt::migration_resource()).list(&ListParams::default()).await?;
    let in_flight: Vec<String> = all
        .items
        .iter()
        .filter(|o| o.metadata.uid != m.metadata.uid && MigrationPhase::of(o).is_some_and(MigrationPhase::in_flight))
        .map(|o| o.data.pointer("/status/migrationState/sourceNode").and_then(Value::as_str).unwrap_or_default().to_string())
        .collect();
    if let Err(waiting) = limits(&in_flight, &source, &ctx.migrations) {
        set_phase(api, m, MigrationPhase::Pending, None, Some(&waiting)).await?;
        return Ok(Action::requeue(RECHECK));
    }
    let nodes = ctx.nodes.state();
    let used = used_by_node(&ctx.vmis.state(), vmi.metadata.uid.as_deref().unwrap_or_default());
    let mut selector: BTreeMap<String, String> = vmi.data.pointer("/spec/nodeSelector").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    let added: BTreeMap<String, String> = m.data.pointer("/spec/addedNodeSelector").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    selector.extend(added);
    let (candidates, other_hosts) = same_host_only(&nodes, &source, kubevirt::host_passthrough(&vmi.data["spec"]));
    let target = match choose_node(candidates.iter().copied(), &used, kubevirt::demand(&vmi.data["spec"]), &selector, Some(&source)) {
        Ok(t) => t,
        Err(message) => {
            let hosts = if other_hosts > 0 { format!(" ({other_hosts} node(s) of another host left out: the VMI's CPU model is host-passthrough)") } else { String::new() };
            return fail(api, m, &format!("no node can take the VMI: {message}{hosts}")).await;
        }
    };
    let m = set_phase(api, m, MigrationPhase::Scheduling, None, None).await?;
    let (configuration, policy) = configuration(vmi, ctx).await?;
    let state = MigrationState {
        migration_uid: m.metadata.uid.clone().unwrap_or_default(),
        source_node: source,
        target_node: target.clone(),
        migration_configuration: Some(configuration),
        migration_policy_name: policy,
        ..Default::default()
    };
    // The hand-over: from this write on the nodes act.
    let vmi = vmis.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&state.status_patch(vmi))).await?;
    let label = json!({ "metadata": { "labels": { kubevirt::MIGRATION_TARGET_NODE_LABEL: target } } });
    vmis.patch(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&label)).await?;
    set_phase(api, &m, MigrationPhase::PreparingTarget, Some(&state), None).await?;
    Ok(Action::requeue(RECHECK))
}

/// A migration the nodes have: its phase from what they wrote, and its timeouts.
async fn follow(
    api: &Api<DynamicObject>,
    vmis: &Api<DynamicObject>,
    m: &DynamicObject,
    vmi: &DynamicObject,
    state: MigrationState,
    ctx: &Context,
) -> Result<Action, Error> {
    let phase = phase_of(&state);
    if phase.is_final() {
        let stats = vmi.annotations().get(kubevirt::MIGRATION_STATS_ANNOTATION).filter(|s| s.contains(&state.migration_uid)).cloned();
        if let Some(stats) = stats.filter(|_| phase == MigrationPhase::Succeeded) {
            let patch = json!({ "metadata": { "annotations": { kubevirt::MIGRATION_STATS_ANNOTATION: stats } } });
            api.patch(&m.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        let m = api.get(&m.name_any()).await?;
        set_phase(api, &m, phase, Some(&state), None).await?;
        return Ok(Action::await_change());
    }
    // A target that never gets ready (its node went away, its handler is stuck) fails
    // the migration before it starts; once started, the source's timeout governs.
    if !state.started() && !state.abort_requested {
        let target_ready = ctx.nodes.get(&kube::runtime::reflector::ObjectRef::new(&state.target_node)).is_some_and(|n| is_ready(&n));
        let waited = since(m, MigrationPhase::PreparingTarget);
        let reason = if !target_ready {
            Some(format!("the target node {} is not ready", state.target_node))
        } else if waited.is_some_and(|w| w > ctx.migrations.target_ready_timeout) {
            Some(format!("the target node {} did not get ready within {} s", state.target_node, ctx.migrations.target_ready_timeout.as_secs()))
        } else {
            None
        };
        if let Some(reason) = reason {
            let mut abort = state.clone();
            abort.abort_requested = true;
            abort.failure_reason = Some(reason);
            vmis.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&abort.status_patch(vmi))).await?;
            return Ok(Action::requeue(RECHECK));
        }
    }
    set_phase(api, m, phase, Some(&state), None).await?;
    Ok(Action::requeue(RECHECK))
}

/// The nodes a migration may go to: all, or for a host-passthrough CPU only those of the
/// source's host (a CPU of another host may lack features the guest uses); and how many
/// were left out for that.
pub(super) fn same_host_only<'a>(nodes: &'a [Arc<k8s_openapi::api::core::v1::Node>], source: &str, host_passthrough: bool) -> (Vec<&'a k8s_openapi::api::core::v1::Node>, usize) {
    let all: Vec<&k8s_openapi::api::core::v1::Node> = nodes.iter().map(|n| n.as_ref()).collect();
    if !host_passthrough {
        return (all, 0);
    }
    let host = all.iter().find(|n| n.name_any() == source).and_then(|n| kubevirt::host_of(n)).map(str::to_string);
    let (same, other): (Vec<_>, Vec<_>) = all.into_iter().partition(|n| host.is_some() && kubevirt::host_of(n) == host.as_deref());
    (same, other.len())
}

/// The phase a migration is in, from the VMI's migration state.
pub(super) fn phase_of(state: &MigrationState) -> MigrationPhase {
    if state.completed && !state.failed {
        MigrationPhase::Succeeded
    } else if state.failed {
        MigrationPhase::Failed
    } else if state.started() {
        MigrationPhase::Running
    } else if state.target_node_address.is_some() {
        MigrationPhase::TargetReady
    } else {
        MigrationPhase::PreparingTarget
    }
}

/// Whether a VMI may migrate now: KubeVirt's migration admission (`Cannot migrate VMI, …`).
fn migratable(vmi: &DynamicObject) -> Result<(), String> {
    let name = vmi.name_any();
    if kubevirt::is_deleting(&vmi.metadata) {
        return Err(format!("VMI {name} is being deleted"));
    }
    if Phase::of(vmi) != Phase::Running {
        return Err(format!("Cannot migrate VMI {name}: it is {}, not Running", Phase::of(vmi).as_str()));
    }
    if let Some(c) = kubevirt::condition(vmi, "LiveMigratable").filter(|c| c["status"] == "False") {
        let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        return Err(format!("Cannot migrate VMI, Reason: {}, Message: {}", text("reason"), text("message")));
    }
    if let Some(other) = MigrationState::of(vmi).filter(MigrationState::in_flight) {
        return Err(format!(
            "in-flight migration detected. Active migration job ({}) is currently already in progress for VMI {name}.",
            other.migration_uid
        ));
    }
    Ok(())
}

/// Whether one more migration out of `source` fits the limits, given the sources of those
/// in flight; else why it waits.
pub(super) fn limits(in_flight: &[String], source: &str, config: &MigrationConfig) -> Result<(), String> {
    if in_flight.len() >= config.parallel_migrations_per_cluster as usize {
        return Err(format!(
            "waiting: {} migrations run in the cluster, the most at once (parallelMigrationsPerCluster)",
            config.parallel_migrations_per_cluster
        ));
    }
    let outbound = in_flight.iter().filter(|s| *s == source).count();
    if outbound >= config.parallel_outbound_migrations_per_node as usize {
        return Err(format!(
            "waiting: {outbound} migrations leave node {source}, the most at once (parallelOutboundMigrationsPerNode)"
        ));
    }
    Ok(())
}

/// The options for this VMI's migration: the cluster's, under the MigrationPolicy that
/// matches it best (KubeVirt: the most matching labels, then the name).
async fn configuration(vmi: &DynamicObject, ctx: &Context) -> Result<(MigrationConfiguration, Option<String>), Error> {
    let policies: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &kubevirt::migration_policy_resource());
    let policies = policies.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    let namespace = vmi.namespace().unwrap_or_default();
    let ns_labels = Api::<k8s_openapi::api::core::v1::Namespace>::all(ctx.client.clone())
        .get_opt(&namespace)
        .await?
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    let policy = best_policy(&policies, vmi.labels(), &ns_labels);
    Ok((effective(&ctx.migrations, policy.map(|p| &p.data["spec"])), policy.map(|p| p.name_any())))
}

pub(super) fn best_policy<'a>(policies: &'a [DynamicObject], vmi_labels: &BTreeMap<String, String>, ns_labels: &BTreeMap<String, String>) -> Option<&'a DynamicObject> {
    let matches = |selector: &Value, labels: &BTreeMap<String, String>| -> Option<usize> {
        let wanted = selector.as_object().map(|o| o.iter().collect::<Vec<_>>()).unwrap_or_default();
        wanted.iter().all(|(k, v)| labels.get(k.as_str()).map(String::as_str) == v.as_str()).then_some(wanted.len())
    };
    policies
        .iter()
        .filter_map(|p| {
            let selectors = &p.data["spec"]["selectors"];
            let n = matches(&selectors["virtualMachineInstanceSelector"], vmi_labels)? + matches(&selectors["namespaceSelector"], ns_labels)?;
            Some((n, p))
        })
        .max_by(|(a, p), (b, q)| a.cmp(b).then_with(|| q.name_any().cmp(&p.name_any())))
        .map(|(_, p)| p)
}

pub(super) fn effective(cluster: &MigrationConfig, policy: Option<&Value>) -> MigrationConfiguration {
    let from_policy = |k: &str| policy.and_then(|p| p.get(k)).filter(|v| !v.is_null());
    MigrationConfiguration {
        bandwidth_per_migration: from_policy("bandwidthPerMigration")
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            .or_else(|| cluster.bandwidth_per_migration.clone()),
        completion_timeout_per_gi_b: Some(from_policy("completionTimeoutPerGiB").and_then(Value::as_u64).unwrap_or(cluster.completion_timeout_per_gib)),
        parallel_migrations_per_cluster: Some(cluster.parallel_migrations_per_cluster),
        parallel_outbound_migrations_per_node: Some(cluster.parallel_outbound_migrations_per_node),
        allow_auto_converge: from_policy("allowAutoConverge").and_then(Value::as_bool),
        max_downtime_ms: from_policy("maxDowntimeMs").and_then(Value::as_u64).or(cluster.max_downtime_ms),
    }
}

/// How long ago the migration entered `phase`, by its phaseTransitionTimestamps.
fn since(m: &DynamicObject, phase: MigrationPhase) -> Option<Duration> {
    let stamp = m
        .data
        .pointer("/status/phaseTransitionTimestamps")?
        .as_array()?
        .iter()
        .rev()
        .find(|t| t["phase"] == phase.as_str())?["phaseTransitionTimestamp"]
        .as_str()?
        .to_string();
    let at = chrono::DateTime::parse_from_rfc3339(&stamp).ok()?;
    (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).to_std().ok()
}

/// A migration that cannot happen: Failed at once, with why.
async fn fail(api: &Api<DynamicObject>, m: &DynamicObject, reason: &str) -> Result<Action, Error> {
    let state = MigrationState { failed: true, failure_reason: Some(reason.to_string()), end_timestamp: Some(kubevirt::now()), ..Default::default() };
    tracing::info!("migration {}/{} failed: {reason}", m.namespace().unwrap_or_default(), m.name_any());
    set_phase(api, m, MigrationPhase::Failed, Some(&state), None).await?;
    Ok(Action::await_change())
}

/// Write the migration's phase (every phase passed on the way gets its transition time)
/// and its copy of the migration state; `waiting`: why a pending one waits. Nothing is
/// written when nothing changed.
async fn set_phase(api: &Api<DynamicObject>, m: &DynamicObject, phase: MigrationPhase, state: Option<&MigrationState>, waiting: Option<&str>) -> Result<DynamicObject, Error> {
    let current = MigrationPhase::of(m);
    let mut transitions: Vec<Value> = m.data.pointer("/status/phaseTransitionTimestamps").and_then(Value::as_array).cloned().unwrap_or_default();
    let now = kubevirt::now();
    if current != Some(phase) {
        // The phases passed on the way (a fast migration passes some between two looks);
        // a failure may have come from any of them, so only Pending is filled in then.
        let passed = MigrationPhase::ALL
            .into_iter()
            .filter(|p| current.is_none_or(|c| *p > c) && *p < phase && !p.is_final() && (phase != MigrationPhase::Failed || *p == MigrationPhase::Pending));
        for p in passed.chain([phase]) {
            transitions.push(json!({ "phase": p.as_str(), "phaseTransitionTimestamp": now }));
        }
    }
    let mut status = json!({ "phase": phase.as_str(), "phaseTransitionTimestamps": transitions });
    if let Some(state) = state {
        status["migrationState"] = state.to_patch();
    }
    let conditions: Vec<Value> = match waiting {
        Some(message) => vec![json!({ "type": "Pending", "status": "True", "reason": "MigrationLimitReached", "message": message, "lastProbeTime": null, "lastTransitionTime": now })],
        None => Vec::new(),
    };
    status["conditions"] = json!(conditions);
    let unchanged = current == Some(phase)
        && state.is_none_or(|s| m.data.pointer("/status/migrationState").and_then(|v| serde_json::from_value::<MigrationState>(v.clone()).ok()).as_ref() == Some(s))
        && m.data.pointer("/status/conditions").and_then(Value::as_array).map(Vec::len).unwrap_or(0) == conditions.len();
    if unchanged {
        return Ok(m.clone());
    }
    let patch = json!({ "metadata": { "resourceVersion": m.resource_version() }, "status": status });
    Ok(api.patch_status(&m.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, vmi: Value, ns: Value, spec: Value) -> DynamicObject {
        let mut spec = spec;
        spec["selectors"] = json!({ "virtualMachineInstanceSelector": vmi, "namespaceSelector": ns });
        serde_json::from_value(json!({ "apiVersion": "migrations.kubevirt.io/v1alpha1", "kind": "MigrationPolicy", "metadata": { "name": name }, "spec": spec })).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn limits_are_kubevirts_five_per_cluster_and_two_out_of_a_node() {
        let config = MigrationConfig::default();
        assert_eq!(limits(&[], "a", &config), Ok(()));
        let two_from_a = ["a".to_string(), "a".to_string()];
        assert!(limits(&two_from_a, "a", &config).unwrap_err().contains("2 migrations leave node a"));
        assert_eq!(limits(&two_from_a, "b", &config), Ok(()));
        let five: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
        assert!(limits(&five, "f", &config).unwrap_err().contains("5 migrations run in the cluster"));
        assert_eq!(limits(&five[..4], "f", &config), Ok(()));
    }

    #[test]
    fn the_policy_with_the_most_matching_labels_wins_then_the_name() {
        let vmi = labels(&[("app", "db"), ("tier", "gold")]);
        let ns = labels(&[("env", "prod")]);
        let policies = [
            policy("by-app", json!({ "app": "db" }), json!({}), json!({ "bandwidthPerMigration": "8Mi" })),
            policy("by-app-and-env", json!({ "app": "db" }), json!({ "env": "prod" }), json!({ "completionTimeoutPerGiB": 40 })),
            policy("other", json!({ "app": "web" }), json!({}), json!({})),
            policy("b-same", json!({ "tier": "gold" }), json!({ "env": "prod" }), json!({})),
        ];
        // Two match with two labels each: the first by name.
        assert_eq!(best_policy(&policies, &vmi, &ns).map(|p| p.name_any()).as_deref(), Some("b-same"));
        assert_eq!(best_policy(&policies[..3], &vmi, &ns).map(|p| p.name_any()).as_deref(), Some("by-app-and-env"));
        assert_eq!(best_policy(&policies[2..3], &vmi, &ns), None);
        let config = effective(&MigrationConfig::default(), Some(&policies[1].data["spec"]));
        assert_eq!(config.completion_timeout_per_gi_b, Some(40));
        assert_eq!(config.bandwidth_per_migration, None);
        let config = effective(&MigrationConfig::default(), Some(&policies[0].data["spec"]));
        assert_eq!((config.completion_timeout_per_gi_b, config.bandwidth_per_migration.as_deref()), (Some(150), Some("8Mi")));
    }

    #[test]
    fn a_host_passthrough_cpu_only_moves_within_its_host() {
        let node = |name: &str, boot: &str| -> Arc<k8s_openapi::api::core::v1::Node> {
            Arc::new(serde_json::from_value(json!({ "metadata": { "name": name }, "status": { "nodeInfo": {
                "bootID": boot, "machineID": "", "systemUUID": "", "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "",
                "kubeletVersion": "", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64" } } })).unwrap())
        };
        let nodes = [node("a-0", "boot-a"), node("a-1", "boot-a"), node("b-0", "boot-b")];
        let names = |v: &[&k8s_openapi::api::core::v1::Node]| v.iter().map(|n| n.name_any()).collect::<Vec<_>>();
        let (any, left_out) = same_host_only(&nodes, "a-0", false);
        assert_eq!((names(&any), left_out), (vec!["a-0".to_string(), "a-1".into(), "b-0".into()], 0));
        let (same, left_out) = same_host_only(&nodes, "a-0", true);
        assert_eq!((names(&same), left_out), (vec!["a-0".to_string(), "a-1".into()], 1));
    }

    #[test]
    fn phases_follow_what_the_nodes_wrote() {
        let mut s = MigrationState { migration_uid: "m".into(), source_node: "a".into(), target_node: "b".into(), ..Default::default() };
        assert_eq!(phase_of(&s), MigrationPhase::PreparingTarget);
        s.target_node_address = Some("10.0.0.2".into());
        assert_eq!(phase_of(&s), MigrationPhase::TargetReady);
        s.start_timestamp = Some("2026-12-02T00:00:00Z".into());
        assert_eq!(phase_of(&s), MigrationPhase::Running);
        let mut failed = s.clone();
        failed.failed = true;
        assert_eq!(phase_of(&failed), MigrationPhase::Failed);
        s.completed = true;
        assert_eq!(phase_of(&s), MigrationPhase::Succeeded);
    }
}
