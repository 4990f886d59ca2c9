//! The plan: what applying the compiled VMs would change on the cluster, with the change
//! effect of each field (the compiler's diff engine, shared with `vmform diff`).
//!
//! Live objects are normalised before comparing: only fields the specs set, or that vmform
//! applied before (its `managedFields` entry), are compared, so what the server or KubeVirt
//! fills in (status, uid, resourceVersion, defaulted machine type, firmware uuid, MACs, …)
//! is never shown as a change. A changed field that another field manager owns was changed
//! outside vmform: it is reported as drift.

use crate::error::DeployError;
use crate::inventory::{self, ApplySet, APPLIED_RUN_STRATEGY, FIELD_MANAGER, PART_OF, PREVENT_DESTROY};
use crate::target::Target;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use vmform_compiler::diff::{self, Action, ObjectChange};
use vmform_compiler::kubevirt::VirtualMachine;
use vmform_compiler::model::{Lifecycle, VmActions};
use vmform_compiler::{CompiledVm, FileId, Span};
pub use vmform_cluster::kubevirt::vm_resource;

pub fn namespace_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Namespace"), "namespaces")
}

/// One write of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub action: Action,
    pub namespace: String,
    pub name: String,
    /// For a replace: where the object is deleted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_namespace: Option<String>,
    /// The object to apply (creates, updates, replaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// `none`, `live`, `restart`, `replace`, `data-loss`.
    pub effect: String,
    pub blocked: bool,
    /// Take `spec.runStrategy` back from the VM action that owns it (see [`VmAction`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub take_run_strategy: bool,
}

/// A run strategy a VM action changed on the cluster (KubeVirt's start and stop through
/// virt-api, virtctl, a UI), and what apply does about it. A VM action is operational
/// state, not drift: by default apply keeps it, as GitOps users configure Argo CD to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmAction {
    pub namespace: String,
    pub name: String,
    /// The run strategy the specs set, and the one the VM action left.
    pub specs: String,
    pub live: String,
    /// Who changed it (field managers), and when, as their managedFields entry says.
    pub managers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Apply keeps what the action did (else it sets the specs' run strategy again).
    pub kept: bool,
    /// The specs' run strategy changed since the last apply: that change is made.
    #[serde(default)]
    pub specs_changed: bool,
}

impl VmAction {
    /// One line for the plan, e.g. "demo/hello: stopped by a VM action at T (virt-api);
    /// apply keeps it stopped".
    pub fn describe(&self) -> String {
        let done = match self.live.as_str() {
            "Halted" => "stopped".to_string(),
            "Always" | "RerunOnFailure" if self.specs == "Halted" || self.specs == "Manual" => "started".to_string(),
            other => format!("set to run strategy {other}"),
        };
        let at = self.at.as_deref().map(|t| format!(" at {t}")).unwrap_or_default();
        let what = if self.kept {
            match self.live.as_str() {
                "Halted" => "apply keeps it stopped".to_string(),
                "Always" | "RerunOnFailure" => "apply keeps it running".to_string(),
                other => format!("apply keeps run strategy {other}"),
            }
        } else if self.specs_changed {
            format!("the specs now say {}: apply sets it", self.specs)
        } else {
            match self.specs.as_str() {
                "Halted" => "apply stops it again".to_string(),
                "Always" | "RerunOnFailure" => "apply starts it again".to_string(),
                other => format!("apply sets run strategy {other} again"),
            }
        };
        format!("{}/{}: {done} by a VM action{at} ({}); {what}", self.namespace, self.name, self.managers.join(", "))
    }
}

/// A field changed outside vmform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub namespace: String,
    pub name: String,
    pub path: String,
    /// The field managers that changed it.
    pub managers: Vec<String>,
}

/// A plan, as shown and as saved with `-out`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The saved plan's format.
    pub format_version: u32,
    pub project: String,
    pub applyset: String,
    pub server: String,
    pub context: String,
    pub created: String,
    /// Namespaces to create before anything else.
    pub namespaces: Vec<String>,
    /// Every namespace the project's VMs live in after the apply.
    pub member_namespaces: Vec<String>,
    pub steps: Vec<Step>,
    /// `namespace/name` → the [`version_of`] read, or `""` for "did not exist": a saved
    /// plan is refused if any of these moved.
    pub live_versions: BTreeMap<String, String>,
    pub drift: Vec<Drift>,
    /// The changes as `vmform diff --format json` shows them.
    pub changes: Value,
    /// The human rendering of the plan, for `vmform show FILE`.
    #[serde(default)]
    pub text: String,
    /// Refresh-only: report drift, change nothing.
    #[serde(default)]
    pub refresh_only: bool,
    /// Run strategies VM actions changed, and what apply does about each.
    #[serde(default)]
    pub vm_actions: Vec<VmAction>,
}

pub const FORMAT_VERSION: u32 = 1;

/// What to plan.
#[derive(Debug, Default, Clone)]
pub struct PlanOptions {
    /// Only these VMs (`name` or `namespace/name`).
    pub targets: Vec<String>,
    /// Not these VMs.
    pub excludes: Vec<String>,
    pub refresh_only: bool,
    /// What to do about VM actions, for every VM (`--vm-actions`); `None`: each VM's
    /// `lifecycle vm-actions`, keep by default.
    pub vm_actions: Option<VmActions>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn selected(options: &PlanOptions, namespace: &str, name: &str) -> bool {
    let hit = |list: &[String]| list.iter().any(|t| t == name || *t == key(namespace, name));
    (options.targets.is_empty() || hit(&options.targets)) && !hit(&options.excludes)
}

/// The object vmform applies for a compiled VM: the emitted object, labelled as a member
/// of the project's ApplySet.
pub fn desired_object(vm: &CompiledVm, set: &ApplySet) -> Value {
    let mut object = serde_json::to_value(&vm.object).expect("objects serialise");
    object["metadata"]["labels"][PART_OF] = json!(set.id);
    if vm.lifecycle.prevent_destroy {
        object["metadata"]["annotations"][PREVENT_DESTROY] = json!("true");
    }
    object["metadata"]["annotations"][APPLIED_RUN_STRATEGY] = json!(vm.object.spec.run_strategy);
    object
}

/// The field manager of KubeVirt's VM actions: virt-api writes `spec.runStrategy` for a
/// start or a stop (virtctl's, the UI's, `vmform vm`'s). Any other manager's edit is drift.
const VM_ACTION_MANAGER: &str = "virt-api";

/// Whether a VM action changed the live VM's run strategy, and what apply does about it:
/// the live value differs from the specs', virt-api owns it, and the specs' value is the
/// one last applied (else the specs changed, and apply makes that change).
fn vm_action(live: &Value, vm: &CompiledVm, policy: Option<VmActions>) -> Option<VmAction> {
    let live_strategy = live.pointer("/spec/runStrategy").and_then(Value::as_str)?;
    let specs = vm.object.spec.run_strategy.as_str();
    if live_strategy == specs {
        return None;
    }
    let managers = other_owners(live, "spec.runStrategy");
    if !managers.iter().any(|m| m == VM_ACTION_MANAGER) {
        return None;
    }
    let applied = live.pointer(&format!("/metadata/annotations/{}", APPLIED_RUN_STRATEGY.replace('/', "~1"))).and_then(Value::as_str);
    let specs_changed = applied.is_some_and(|a| a != specs);
    let kept = !specs_changed && policy.or(vm.lifecycle.vm_actions).unwrap_or(VmActions::Keep) == VmActions::Keep;
    let at = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e["manager"].as_str().is_some_and(|m| managers.iter().any(|x| x == m)) && e.pointer("/fieldsV1/f:spec/f:runStrategy").is_some())
        .filter_map(|e| e["time"].as_str())
        .max()
        .map(str::to_string);
    Some(VmAction {
        namespace: live["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
        name: live["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        specs: specs.to_string(),
        live: live_strategy.to_string(),
        managers,
        at,
        kept,
        specs_changed,
    })
}

/// vmform's own field set (fieldsV1) on a live object.
fn owned_fields(live: &Value) -> Value {
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .and_then(|entries| entries.iter().find(|e| e["manager"] == FIELD_MANAGER && e["operation"] == "Apply" && e.get("subresource").is_none()))
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

/// The part of `live` to compare: fields `desired` sets or `owned` records.
fn project(live: &Value, desired: Option<&Value>, owned: Option<&Value>) -> Value {
    // An owned field with no children listed is owned whole (a leaf, or an atomic value).
    let owned_whole = owned.is_some_and(|o| o.as_object().is_some_and(|m| m.keys().all(|k| k == ".")));
    if owned_whole && desired.is_none() {
        return live.clone();
    }
    match live {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let d = desired.and_then(|d| d.get(k));
                let o = owned.and_then(|o| o.get(format!("f:{k}")));
                if d.is_some() || o.is_some() {
                    out.insert(k.clone(), project(v, d, o));
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The live object as the compiler's type, holding only what vmform compares.
fn normalise(live: &Value, desired: Option<&Value>) -> Result<CompiledVm, String> {
    let owned = owned_fields(live);
    let mut compared = project(live, desired, Some(&owned));
    for field in ["apiVersion", "kind"] {
        compared[field] = live[field].clone();
    }
    // Fields the type cannot do without come from the live object when vmform no longer
    // owns them: `vmform vm stop` (virt-api) takes `runStrategy` over, and such a VM must
    // still read as one to be deleted.
    for field in ["runStrategy", "template"] {
        if compared.pointer(&format!("/spec/{field}")).is_none()
            && let Some(value) = live["spec"].get(field)
        {
            compared["spec"][field] = value.clone();
        }
    }
    let prevent_destroy = live.pointer(&format!("/metadata/annotations/{}", PREVENT_DESTROY.replace('/', "~1"))) == Some(&json!("true"));
    let meta = compared["metadata"].as_object_mut().ok_or("no metadata")?;
    meta.insert("name".into(), live["metadata"]["name"].clone());
    meta.insert("namespace".into(), live["metadata"]["namespace"].clone());
    if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
        labels.remove(PART_OF);
    }
    // Bookkeeping for VM actions, not a setting of the VM: never shown as a change.
    if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        annotations.remove(APPLIED_RUN_STRATEGY);
    }
    let object: VirtualMachine = serde_json::from_value(compared).map_err(|e| e.to_string())?;
    let nowhere = Span { file: FileId(0), start: 0, len: 0 };
    Ok(CompiledVm {
        object,
        lifecycle: Lifecycle { prevent_destroy, prevent_destroy_at: None, ignore_changes: vec![], vm_actions: None },
        span: nowhere,
        name_span: nowhere,
        source_map: BTreeMap::new(),
    })
}

/// The managers other than vmform that own `path` (a diff path) on `live`.
fn other_owners(live: &Value, path: &str) -> Vec<String> {
    let segments = path_segments(path);
    let mut managers = vec![];
    for entry in live.pointer("/metadata/managedFields").and_then(Value::as_array).into_iter().flatten() {
        let manager = entry["manager"].as_str().unwrap_or("");
        if manager == FIELD_MANAGER {
            continue;
        }
        let mut node = &entry["fieldsV1"];
        let mut found = true;
        for s in &segments {
            match node.get(format!("f:{s}")) {
                Some(n) => node = n,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found && !managers.iter().any(|m| m == manager) {
            managers.push(manager.to_string());
        }
    }
    managers
}

/// `spec.template.spec.domain.devices.disks[root].bus` → up to the atomic list:
/// `spec, template, spec, domain, devices, disks`; `metadata.labels["a/b"]` →
/// `metadata, labels, a/b`.
fn path_segments(path: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = path;
    while !rest.is_empty() {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        if end > 0 {
            out.push(rest[..end].to_string());
        }
        rest = &rest[end..];
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('[') {
            if r.starts_with('"') {
                // A quoted map key.
                let mut de = serde_json::Deserializer::from_str(r).into_iter::<String>();
                match de.next() {
                    Some(Ok(k)) => {
                        out.push(k);
                        rest = r[de.byte_offset()..].trim_start_matches(']');
                        rest = rest.strip_prefix('.').unwrap_or(rest);
                    }
                    _ => break,
                }
            } else {
                // A list item: lists are atomic, the list is the field.
                break;
            }
        }
    }
    out
}

/// The VMs of `set` on `target` now, in every namespace.
pub async fn members(target: &Target, set: &ApplySet) -> Result<Vec<DynamicObject>, DeployError> {
    let all: Api<DynamicObject> = Api::all_with(target.client.clone(), &vm_resource());
    Ok(all.list(&ListParams::default().labels(&set.selector())).await.map_err(|e| target.error(e))?.items)
}

/// Compute the plan of `compiled` for `set` on `target`.
pub async fn plan(target: &Target, set: &ApplySet, compiled: &[CompiledVm], options: &PlanOptions) -> Result<(Plan, Vec<ObjectChange>), DeployError> {
    let members = members(target, set).await?;
    let mut live: BTreeMap<String, Value> = BTreeMap::new();
    for m in members {
        let v = serde_json::to_value(&m).expect("objects serialise");
        let ns = m.metadata.namespace.clone().unwrap_or_default();
        let name = m.metadata.name.clone().unwrap_or_default();
        live.insert(key(&ns, &name), v);
    }
    let desired: Vec<&CompiledVm> = compiled
        .iter()
        .filter(|vm| selected(options, vm.object.metadata.namespace.as_deref().unwrap_or(""), &vm.object.metadata.name))
        .collect();
    let mut live_versions = BTreeMap::new();
    let mut old = vec![];
    let desired_by_key: BTreeMap<String, &CompiledVm> =
        desired.iter().map(|vm| (key(vm.object.metadata.namespace.as_deref().unwrap_or(""), &vm.object.metadata.name), *vm)).collect();

    // Namespaces first: a VM in a namespace that does not exist yet cannot exist either.
    let wanted: BTreeSet<String> = desired.iter().filter_map(|vm| vm.object.metadata.namespace.clone()).collect();
    let missing_namespaces = missing_namespaces(target, &wanted).await?;
    let unknown: Vec<&CompiledVm> = desired_by_key
        .iter()
        .filter(|(k, vm)| !live.contains_key(*k) && !missing_namespaces.iter().any(|ns| Some(ns.as_str()) == vm.object.metadata.namespace.as_deref()))
        .map(|(_, vm)| *vm)
        .collect();
    check_not_owned_elsewhere(target, set, unknown).await?;
    for k in desired_by_key.keys().filter(|k| !live.contains_key(*k)) {
        live_versions.insert(k.clone(), String::new());
    }
    for (k, object) in &live {
        let (ns, name) = k.split_once('/').expect("keys are namespace/name");
        if !selected(options, ns, name) {
            continue;
        }
        let desired_json = desired_by_key.get(k).map(|vm| desired_object(vm, set));
        let normalised = normalise(object, desired_json.as_ref())
            .map_err(|e| DeployError::Api(format!("the live VirtualMachine {k} cannot be read as vmform's type: {e}")))?;
        old.push(normalised);
        let meta: kube::core::ObjectMeta = serde_json::from_value(object["metadata"].clone()).unwrap_or_default();
        live_versions.insert(k.clone(), version_of(&meta));
    }
    let vm_actions: BTreeMap<String, VmAction> = desired_by_key
        .iter()
        .filter_map(|(k, vm)| Some((k.clone(), vm_action(live.get(k)?, vm, options.vm_actions)?)))
        .collect();
    let new: Vec<CompiledVm> = desired.iter().map(|vm| as_compared(vm, &vm_actions)).collect();
    let mut changes = diff::diff(&old, &new);
    let drift = drift(&changes, &live);
    if options.refresh_only {
        changes.clear();
    }

    let namespaces = if options.refresh_only { vec![] } else { missing_namespaces };
    let mut member_namespaces: BTreeSet<String> = wanted.clone();
    // Members outside the selection stay members.
    for k in live.keys() {
        let (ns, name) = k.split_once('/').expect("keys are namespace/name");
        if !selected(options, ns, name) {
            member_namespaces.insert(ns.to_string());
        }
    }

    let steps = changes.iter().map(|c| step(c, &desired_by_key, &vm_actions, set)).collect();
    let plan = Plan {
        format_version: FORMAT_VERSION,
        project: set.project.clone(),
        applyset: set.id.clone(),
        server: target.server.clone(),
        context: target.context.clone(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        namespaces,
        member_namespaces: member_namespaces.into_iter().collect(),
        steps,
        live_versions,
        drift,
        changes: serde_json::to_value(&changes).expect("changes serialise"),
        text: String::new(),
        refresh_only: options.refresh_only,
        vm_actions: if options.refresh_only { vec![] } else { vm_actions.into_values().collect() },
    };
    Ok((plan, changes))
}

/// The namespaces of `wanted` that do not exist yet.
async fn missing_namespaces(target: &Target, wanted: &BTreeSet<String>) -> Result<Vec<String>, DeployError> {
    let namespaces_api: Api<DynamicObject> = Api::all_with(target.client.clone(), &namespace_resource());
    let mut missing = vec![];
    for ns in wanted {
        if namespaces_api.get_opt(ns).await.map_err(|e| target.error(e))?.is_none() {
            missing.push(ns.clone());
        }
    }
    Ok(missing)
}

/// Invariant: apply changes only objects the project owns — a VM the specs name that
/// exists outside the inventory is someone else's, and the plan stops here. `unknown` are
/// the specs' VMs the inventory does not list; they are looked up several at a time, as a
/// first plan of a fleet asks once per VM.
async fn check_not_owned_elsewhere(target: &Target, set: &ApplySet, unknown: Vec<&CompiledVm>) -> Result<(), DeployError> {
    // For each name: (namespace, name, whether it is already ours) when it exists.
    type Found = Option<(String, String, bool)>;
    let found: Vec<Result<Found, DeployError>> = futures_util::stream::iter(unknown)
        .map(|vm| async move {
            let ns = vm.object.metadata.namespace.clone().unwrap_or_default();
            let api: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), &ns, &vm_resource());
            let existing = api.get_opt(&vm.object.metadata.name).await.map_err(|e| target.error(e))?;
            let member = existing.as_ref().is_some_and(|o| inventory::is_member(&serde_json::to_value(o).expect("objects serialise"), set));
            Ok(existing.map(|_| (ns, vm.object.metadata.name.clone(), member)))
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for f in found {
        match f? {
            // Created by another apply of this project since the list: plan again.
            Some((namespace, name, true)) => return Err(DeployError::StalePlan { moved: vec![key(&namespace, &name)] }),
            Some((namespace, name, false)) => {
                return Err(DeployError::NotOwned { kind: "VirtualMachine", namespace, name, project: set.project.clone() });
            }
            None => {}
        }
    }
    Ok(())
}

/// A VM as the plan compares it with the live one. The prevent-destroy annotation is part
/// of what is compared, so adding or removing `lifecycle prevent-destroy` is a change the
/// next apply makes. A run strategy a VM action set and apply keeps is no change.
fn as_compared(vm: &CompiledVm, vm_actions: &BTreeMap<String, VmAction>) -> CompiledVm {
    let mut vm = vm.clone();
    if vm.lifecycle.prevent_destroy {
        vm.object.metadata.annotations.insert(PREVENT_DESTROY.into(), "true".into());
    }
    let k = key(vm.object.metadata.namespace.as_deref().unwrap_or(""), &vm.object.metadata.name);
    if let Some(action) = vm_actions.get(&k).filter(|a| a.kept) {
        vm.object.spec.run_strategy = action.live.clone();
    }
    vm
}

/// Drift: the changed fields of updated VMs that another field manager owns.
fn drift(changes: &[ObjectChange], live: &BTreeMap<String, Value>) -> Vec<Drift> {
    let mut drift = vec![];
    for c in changes.iter().filter(|c| c.action == Action::Update) {
        let Some(object) = live.get(&key(&c.namespace, &c.name)) else { continue };
        for f in &c.fields {
            let managers = other_owners(object, &f.path);
            if !managers.is_empty() {
                drift.push(Drift { namespace: c.namespace.clone(), name: c.name.clone(), path: f.path.clone(), managers });
            }
        }
    }
    drift
}

/// The apply step of one change: the object to apply (none for a delete), and what to do
/// with a run strategy a VM action set.
fn step(c: &ObjectChange, desired_by_key: &BTreeMap<String, &CompiledVm>, vm_actions: &BTreeMap<String, VmAction>, set: &ApplySet) -> Step {
    let k = key(&c.namespace, &c.name);
    let action = vm_actions.get(&k);
    let mut object = desired_by_key.get(&k).filter(|_| c.action != Action::Delete).map(|vm| desired_object(vm, set));
    // Kept: the field is left to the VM action's manager, so no conflict arises.
    if let (Some(object), Some(_)) = (object.as_mut(), action.filter(|a| a.kept)) {
        object["spec"].as_object_mut().map(|spec| spec.remove("runStrategy"));
    }
    Step {
        action: c.action,
        namespace: c.namespace.clone(),
        name: c.name.clone(),
        old_namespace: c.old_namespace.clone(),
        object,
        effect: c.effect.as_str().to_string(),
        blocked: c.blocked,
        take_run_strategy: action.is_some_and(|a| !a.kept),
    }
}

/// The plan to delete everything the project owns.
pub async fn plan_destroy(target: &Target, set: &ApplySet, options: &PlanOptions) -> Result<(Plan, Vec<ObjectChange>), DeployError> {
    plan(target, set, &[], options).await
}

impl Plan {
    /// Whether applying this plan changes anything.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.namespaces.is_empty()
    }

    /// Read a saved plan, refusing one that is not a vmform plan of this format.
    pub fn load(path: &std::path::Path) -> Result<Plan, DeployError> {
        let fail = |reason: String| DeployError::PlanFile { path: path.display().to_string(), reason };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let plan: Plan = serde_json::from_slice(&bytes).map_err(|e| fail(format!("it is not a vmform plan ({e})")))?;
        if plan.format_version != FORMAT_VERSION {
            return Err(fail(format!("it has format {}, this vmform reads format {FORMAT_VERSION}", plan.format_version)));
        }
        Ok(plan)
    }

    /// Check the plan was made for this cluster.
    pub fn check_target(&self, target: &Target) -> Result<(), DeployError> {
        if self.server != target.server {
            return Err(DeployError::WrongPlan {
                what: format!("the cluster at {} (context {})", self.server, self.context),
                here: target.describe(),
            });
        }
        Ok(())
    }
}

/// What a plan depends on in a live VM, as a short string: its generation (which moves
/// with its spec) and its labels and annotations. Not its resourceVersion: a runtime
/// writes a VM's status all the time, and that must not make every plan stale.
pub fn version_of(meta: &kube::core::ObjectMeta) -> String {
    // FNV-1a: stable across runs and versions, so saved plans stay comparable.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let text = serde_json::to_string(&(&meta.labels, &meta.annotations)).expect("maps serialise");
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("g{}-{hash:016x}", meta.generation.unwrap_or(0))
}

/// The members of `set` now, as `namespace/name` → [`version_of`].
pub async fn live_versions(target: &Target, set: &ApplySet) -> Result<BTreeMap<String, String>, DeployError> {
    let members = members(target, set).await?;
    Ok(members
        .into_iter()
        .map(|m| (key(m.metadata.namespace.as_deref().unwrap_or(""), m.metadata.name.as_deref().unwrap_or("")), version_of(&m.metadata)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_whose_run_strategy_virt_api_took_over_still_reads_for_its_deletion() {
        // What `vmform vm stop` leaves: runStrategy Halted, owned by virt-api's update.
        let live = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {
                "name": "s0", "namespace": "bench", "labels": { "app.kubernetes.io/managed-by": "vmform" },
                "managedFields": [
                    { "manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {
                        "f:metadata": { "f:labels": { "f:app.kubernetes.io/managed-by": {} } },
                        "f:spec": { "f:template": {
                            "f:metadata": { "f:labels": { "f:app.kubernetes.io/managed-by": {} } },
                            "f:spec": { "f:domain": { "f:devices": { "f:disks": {} }, "f:memory": { "f:guest": {} } } },
                        } },
                    } },
                    { "manager": "virt-api", "operation": "Update", "fieldsV1": { "f:spec": { "f:runStrategy": {} } } },
                ],
            },
            "spec": { "runStrategy": "Halted", "template": {
                "metadata": { "labels": { "app.kubernetes.io/managed-by": "vmform" } },
                "spec": { "domain": { "devices": { "disks": [] }, "memory": { "guest": "128Mi" } } },
            } },
        });
        let read = normalise(&live, None).expect("the VM reads as vmform's type");
        assert_eq!(read.object.spec.run_strategy, "Halted");
    }

    #[test]
    fn a_plan_depends_on_spec_labels_and_annotations_not_on_status_writes() {
        let meta = |generation: i64, rv: &str, label: &str| -> kube::core::ObjectMeta {
            serde_json::from_value(serde_json::json!({
                "name": "web", "generation": generation, "resourceVersion": rv,
                "labels": { "app": label }, "annotations": { "vmform.io/prevent-destroy": "true" },
            }))
            .unwrap()
        };
        let planned = version_of(&meta(3, "100", "web"));
        // A runtime writing the VM's status moves its resourceVersion only.
        assert_eq!(version_of(&meta(3, "250", "web")), planned);
        assert_ne!(version_of(&meta(4, "251", "web")), planned, "a spec change");
        assert_ne!(version_of(&meta(3, "252", "api")), planned, "a label change");
    }

    #[test]
    fn diff_paths_map_to_managed_field_segments() {
        assert_eq!(path_segments("spec.template.spec.domain.memory.guest"), ["spec", "template", "spec", "domain", "memory", "guest"]);
        assert_eq!(path_segments("spec.template.spec.domain.devices.disks[root].bus"), ["spec", "template", "spec", "domain", "devices", "disks"]);
        assert_eq!(path_segments(r#"metadata.labels["app.kubernetes.io/name"]"#), ["metadata", "labels", "app.kubernetes.io/name"]);
    }

    #[test]
    fn projection_keeps_what_the_spec_sets_or_vmform_owns() {
        let live = json!({ "spec": { "runStrategy": "Always", "template": { "spec": { "domain": { "machine": { "type": "q35" }, "firmware": { "uuid": "x" } } } } }, "status": { "ready": true } });
        let desired = json!({ "spec": { "runStrategy": "Halted", "template": { "spec": { "domain": {} } } } });
        let owned = json!({ "f:spec": { "f:template": { "f:spec": { "f:domain": { "f:machine": {} } } } } });
        let p = project(&live, Some(&desired), Some(&owned));
        assert_eq!(p, json!({ "spec": { "runStrategy": "Always", "template": { "spec": { "domain": { "machine": { "type": "q35" } } } } } }));
    }
}
