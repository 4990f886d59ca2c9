//! Apply a plan: exactly its steps, in a safe order, under the project's lock.
//!
//! Order: namespaces, then the ApplySet parent (naming every namespace members will be in),
//! then creates and updates (server-side apply, field manager `vmform`), then replaces, then
//! prunes, then the parent again (naming only what is left).

use crate::error::{ConflictingField, DeployError, Refused};
use crate::inventory::{self, ApplySet, CREATED_NAMESPACES, FIELD_MANAGER, PARENT_NAMESPACE, PART_OF};
use crate::lock;
use crate::plan::{self, namespace_resource, vm_resource, Plan, Step};
use crate::target::Target;
use futures_util::{stream, StreamExt};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vmform_compiler::diff::Action;

/// How an apply may go.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Take fields another manager owns instead of stopping at the conflict.
    pub force_conflicts: bool,
    pub allow_data_loss: bool,
    /// Restart running VMs whose changes need one.
    pub restart: bool,
    /// Wait for every touched VM to reach its run strategy's state.
    pub wait: Option<Duration>,
    pub lock_timeout: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions { force_conflicts: false, allow_data_loss: false, restart: false, wait: None, lock_timeout: Duration::from_secs(60) }
    }
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct Applied {
    pub namespaces: usize,
    pub created: usize,
    pub updated: usize,
    pub replaced: usize,
    pub deleted: usize,
    /// Namespaces vmform had created and removed again, empty.
    pub namespaces_deleted: usize,
    /// VMs whose change takes effect at their next restart.
    pub restart_pending: Vec<String>,
    pub restarted: Vec<String>,
    /// VMs updated but not restarted, and why: the apply goes on without them.
    pub restart_failed: Vec<(String, String)>,
}

/// Where an apply reports what it does.
pub trait Progress: Sync {
    /// One finished write.
    fn line(&self, line: &str);
    /// A VM's state while `--wait` waits; `done` once it is in the `wanted` state.
    fn waiting(&self, vm: &str, wanted: &str, current: &str, done: bool) {
        if done {
            self.line(&format!("{vm}: {wanted}"));
        } else {
            let _ = current;
        }
    }
}

/// A plain closure reports lines only.
impl<F: Fn(&str) + Sync> Progress for F {
    fn line(&self, line: &str) {
        self(line)
    }
}

/// Writes in flight at once: enough to hide round trips, few enough for a small server.
const IN_FLIGHT: usize = 8;

fn config_map_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "ConfigMap"), "configmaps")
}

/// Refuse a plan that would lose data without permission, or break prevent-destroy.
pub fn check_guards(plan: &Plan, options: &ApplyOptions) -> Result<(), DeployError> {
    let refused: Vec<Refused> = plan
        .steps
        .iter()
        .filter(|s| s.blocked)
        .map(|s| Refused {
            vm: format!("{}/{}", s.namespace, s.name),
            change: match s.action {
                Action::Delete => "deleted",
                Action::Replace => "replaced (deleted and created again)",
                _ => "changed in a way that loses data",
            },
        })
        .collect();
    if !refused.is_empty() {
        return Err(DeployError::PreventDestroy { refused });
    }
    let losing: Vec<String> = plan.steps.iter().filter(|s| s.effect == "data-loss").map(|s| format!("{}/{}", s.namespace, s.name)).collect();
    if !losing.is_empty() && !options.allow_data_loss {
        return Err(DeployError::DataLoss { objects: losing });
    }
    Ok(())
}

fn conflict(step: &Step, e: kube::Error, target: &Target) -> DeployError {
    match e {
        kube::Error::Api(s) if s.code == 409 => {
            let fields = s
                .details
                .as_ref()
                .map(|d| d.causes.iter().map(|c| ConflictingField { field: c.field.clone(), message: c.message.clone() }).collect())
                .unwrap_or_default();
            DeployError::Conflict {
                namespace: step.namespace.clone(),
                name: step.name.clone(),
                message: format!("{}; apply with --force-conflicts to take these fields over", s.message),
                fields,
            }
        }
        other => target.error(other).into(),
    }
}

/// A conflict over `spec.runStrategy` alone.
fn only_run_strategy_conflicts(status: &kube::core::Status) -> bool {
    let causes = status.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
    status.code == 409 && !causes.is_empty() && causes.iter().all(|c| c.field == ".spec.runStrategy")
}

async fn server_side_apply(api: &Api<DynamicObject>, name: &str, object: &Value, force: bool) -> Result<DynamicObject, kube::Error> {
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = force;
    api.patch(name, &params, &Patch::Apply(object)).await
}

/// Apply `plan` to `target`. `progress` hears one line per write.
pub async fn apply(target: &Target, set: &ApplySet, plan: &Plan, options: &ApplyOptions, progress: &dyn Progress) -> Result<Applied, DeployError> {
    plan.check_target(target)?;
    check_guards(plan, options)?;
    let lock = lock::acquire(target, set, options.lock_timeout).await?;
    let result = apply_locked(target, set, plan, options, progress).await;
    lock.release().await;
    result
}

/// Invariant: never more than the plan showed — every object the plan read must be as it
/// was when the plan was made.
async fn check_fresh(target: &Target, set: &ApplySet, plan: &Plan) -> Result<(), DeployError> {
    let now = plan::live_versions(target, set).await?;
    let mut moved = vec![];
    for (k, rv) in &plan.live_versions {
        let current = now.get(k).cloned().unwrap_or_default();
        if &current != rv {
            moved.push(k.clone());
        }
    }
    for k in now.keys() {
        if !plan.live_versions.contains_key(k) && plan.steps.iter().any(|s| format!("{}/{}", s.namespace, s.name) == *k) {
            moved.push(k.clone());
        }
    }
    if moved.is_empty() { Ok(()) } else { Err(DeployError::StalePlan { moved }) }
}

async fn apply_locked(target: &Target, set: &ApplySet, plan: &Plan, options: &ApplyOptions, progress: &dyn Progress) -> Result<Applied, DeployError> {
    check_fresh(target, set, plan).await?;
    let mut applied = Applied::default();

    let namespaces: Api<DynamicObject> = Api::all_with(target.client.clone(), &namespace_resource());
    for ns in &plan.namespaces {
        let object = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": { PART_OF: set.id } } });
        server_side_apply(&namespaces, ns, &object, false).await.map_err(|e| target.error(e))?;
        progress.line(&format!("namespace/{ns}: created"));
        applied.namespaces += 1;
    }

    let parents: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), PARENT_NAMESPACE, &config_map_resource());
    let mut before: Vec<String> = plan.member_namespaces.clone();
    for s in &plan.steps {
        before.extend(s.old_namespace.clone());
        before.push(s.namespace.clone());
    }
    before.sort();
    before.dedup();
    let kinds = ["Namespace", "VirtualMachine.kubevirt.io"];
    // Recorded before any VM is written: an apply killed half-way still knows what it made.
    let mut created = created_namespaces(target, set).await?;
    created.extend(plan.namespaces.iter().filter(|ns| !created.contains(ns)).cloned().collect::<Vec<_>>());
    created.sort();
    server_side_apply(&parents, &set.parent, &set.parent_object(&before, &kinds, &created), true).await.map_err(|e| target.error(e))?;

    write_members(target, set, plan, options, progress, &mut applied).await?;

    for step in plan.steps.iter().filter(|s| s.action == Action::Replace) {
        let old_ns = step.old_namespace.as_deref().unwrap_or(&step.namespace);
        let old: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), old_ns, &vm_resource());
        delete_member(target, set, &old, old_ns, &step.name, plan).await?;
        let new: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), &step.namespace, &vm_resource());
        let object = step.object.as_ref().expect("replaces carry their object");
        server_side_apply(&new, &step.name, object, options.force_conflicts).await.map_err(|e| conflict(step, e, target))?;
        progress.line(&format!("virtualmachine/{} ({} → {}): replaced", step.name, old_ns, step.namespace));
        applied.replaced += 1;
    }

    for step in plan.steps.iter().filter(|s| s.action == Action::Delete) {
        let api: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), &step.namespace, &vm_resource());
        delete_member(target, set, &api, &step.namespace, &step.name, plan).await?;
        progress.line(&format!("virtualmachine/{} ({}): deleted", step.name, step.namespace));
        applied.deleted += 1;
    }

    let after: Vec<String> = plan.member_namespaces.clone();
    // What apply created and the project no longer uses goes, once nothing is left in it.
    for ns in created.clone().iter().filter(|ns| !after.contains(ns)) {
        if remove_namespace_if_empty(target, set, ns).await? {
            progress.line(&format!("namespace/{ns}: deleted (vmform created it, and it is empty)"));
            applied.namespaces_deleted += 1;
            created.retain(|c| c != ns);
        }
    }
    // The plan's member namespaces are those of every VM the project keeps: none means
    // nothing is left to own (a destroy), and the parent goes too.
    if after.is_empty() {
        match parents.delete(&set.parent, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(target.error(e).into()),
        }
    } else {
        server_side_apply(&parents, &set.parent, &set.parent_object(&after, &kinds, &created), true).await.map_err(|e| target.error(e))?;
    }

    if let Some(timeout) = options.wait {
        wait_for(target, plan, timeout, progress).await?;
    }
    Ok(applied)
}

/// Creates and updates, several at a time; running VMs whose change needs a restart are
/// restarted (with `--restart`) or reported as pending.
async fn write_members(target: &Target, set: &ApplySet, plan: &Plan, options: &ApplyOptions, progress: &dyn Progress, applied: &mut Applied) -> Result<(), DeployError> {
    let writes: Vec<&Step> = plan.steps.iter().filter(|s| matches!(s.action, Action::Create | Action::Update)).collect();
    let results: Vec<Result<(&Step, DynamicObject), DeployError>> = stream::iter(writes)
        .map(|step| async move {
            let api: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), &step.namespace, &vm_resource());
            let object = step.object.as_ref().expect("creates and updates carry their object");
            if step.action == Action::Create {
                // Someone may have created a VM of this name since the plan: a server-side
                // apply would quietly adopt it. Stop instead.
                if let Some(existing) = api.get_opt(&step.name).await.map_err(|e| target.error(e))? {
                    let value = serde_json::to_value(&existing).expect("objects serialise");
                    return Err(if inventory::is_member(&value, set) {
                        DeployError::StalePlan { moved: vec![format!("{}/{}", step.namespace, step.name)] }
                    } else {
                        DeployError::NotOwned { kind: "VirtualMachine", namespace: step.namespace.clone(), name: step.name.clone(), project: set.project.clone() }
                    });
                }
            }
            let written = match server_side_apply(&api, &step.name, object, options.force_conflicts).await {
                // The plan said apply takes the run strategy back from a VM action: that
                // conflict, and only that one, is forced.
                Err(kube::Error::Api(s)) if step.take_run_strategy && only_run_strategy_conflicts(&s) => server_side_apply(&api, &step.name, object, true).await,
                other => other,
            }
            .map_err(|e| conflict(step, e, target))?;
            let verb = if step.action == Action::Create { "created" } else { "updated" };
            progress.line(&format!("virtualmachine/{} ({}): {verb}", step.name, step.namespace));
            Ok((step, written))
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    for r in results {
        let (step, written) = r?;
        if step.action == Action::Create {
            applied.created += 1;
        } else {
            applied.updated += 1;
            // A stopped VM takes its changes at its next start; only a running one waits
            // for a restart.
            let running = written.data.pointer("/status/printableStatus").and_then(Value::as_str) == Some("Running");
            if step.effect == "restart" && running {
                let vm = format!("{}/{}", step.namespace, step.name);
                if !options.restart {
                    applied.restart_pending.push(vm);
                } else {
                    match restart(target, &step.namespace, &step.name).await {
                        Ok(()) => applied.restarted.push(vm),
                        Err(e) => applied.restart_failed.push((vm, e.to_string())),
                    }
                }
            }
        }
    }
    Ok(())
}

/// The namespaces an earlier apply of the project created: recorded on its ApplySet parent,
/// and (from before that record was kept) labelled as the project's when it made them.
async fn created_namespaces(target: &Target, set: &ApplySet) -> Result<Vec<String>, DeployError> {
    let parents: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), PARENT_NAMESPACE, &config_map_resource());
    let parent = parents.get_opt(&set.parent).await.map_err(|e| target.error(e))?;
    let recorded = parent.as_ref().and_then(|p| p.metadata.annotations.as_ref()?.get(CREATED_NAMESPACES).cloned()).unwrap_or_default();
    let mut created: Vec<String> = recorded.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect();
    let namespaces: Api<DynamicObject> = Api::all_with(target.client.clone(), &namespace_resource());
    let labelled = namespaces.list_metadata(&kube::api::ListParams::default().labels(&set.selector())).await.map_err(|e| target.error(e))?;
    created.extend(labelled.items.into_iter().filter_map(|n| n.metadata.name));
    created.sort();
    created.dedup();
    Ok(created)
}

/// How long a namespace to remove may take to empty (deleted VMs stopping their guests).
const NAMESPACE_DRAIN: Duration = Duration::from_secs(120);

/// Kinds whose objects keep a namespace in use, and those every namespace gets from the
/// cluster itself (which do not).
const NAMESPACE_CONTENTS: &[(&str, &str, &str, &[&str])] = &[
    ("kubevirt.io", "v1", "virtualmachines", &[]),
    ("kubevirt.io", "v1", "virtualmachineinstances", &[]),
    ("cdi.kubevirt.io", "v1beta1", "datavolumes", &[]),
    ("", "v1", "persistentvolumeclaims", &[]),
    ("", "v1", "pods", &[]),
    ("", "v1", "services", &[]),
    ("", "v1", "secrets", &[]),
    ("", "v1", "configmaps", &["kube-root-ca.crt"]),
];

/// Delete a namespace vmform created, if it is still the one it created (its part-of
/// label) and holds nothing; `true` when it is gone.
async fn remove_namespace_if_empty(target: &Target, set: &ApplySet, ns: &str) -> Result<bool, DeployError> {
    let namespaces: Api<DynamicObject> = Api::all_with(target.client.clone(), &namespace_resource());
    let Some(namespace) = namespaces.get_opt(ns).await.map_err(|e| target.error(e))? else { return Ok(true) };
    if !inventory::is_member(&serde_json::to_value(&namespace).expect("objects serialise"), set) {
        return Ok(false);
    }
    // VMs just deleted may take their guests' grace period to go.
    let deadline = Instant::now() + NAMESPACE_DRAIN;
    loop {
        let mut going = false;
        for (group, version, plural, ignored) in NAMESPACE_CONTENTS {
            let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, ""), plural);
            let api: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), ns, &resource);
            let list = match api.list_metadata(&kube::api::ListParams::default()).await {
                Ok(list) => list,
                // A kind this cluster does not serve holds nothing.
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => return Err(target.error(e).into()),
            };
            for o in list.items.iter().filter(|o| !ignored.contains(&o.metadata.name.as_deref().unwrap_or(""))) {
                if o.metadata.deletion_timestamp.is_none() {
                    return Ok(false);
                }
                going = true;
            }
        }
        if !going {
            break;
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    match namespaces.delete(ns, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(true),
        Err(e) => Err(target.error(e).into()),
    }
}

/// Delete a member only if it is still as the plan saw it: its version checked, then the
/// delete made with the resourceVersion of that read as precondition (a status write in
/// between is read again; a change the plan did not see refuses the delete).
async fn delete_member(target: &Target, set: &ApplySet, api: &Api<DynamicObject>, namespace: &str, name: &str, plan: &Plan) -> Result<(), DeployError> {
    let planned = plan.live_versions.get(&format!("{namespace}/{name}")).cloned().unwrap_or_default();
    let stale = || DeployError::StalePlan { moved: vec![format!("{namespace}/{name}")] };
    for _ in 0..5 {
        let Some(live) = api.get_opt(name).await.map_err(|e| target.error(e))? else { return Ok(()) };
        if !inventory::is_member(&serde_json::to_value(&live).expect("objects serialise"), set) {
            return Err(DeployError::NotOwned { kind: "VirtualMachine", namespace: namespace.into(), name: name.into(), project: set.project.clone() });
        }
        if plan::version_of(&live.metadata) != planned {
            return Err(stale());
        }
        let params = DeleteParams { preconditions: Some(Preconditions { resource_version: live.metadata.resource_version.clone(), uid: None }), ..DeleteParams::default() };
        match api.delete(name, &params).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(target.error(e).into()),
        }
    }
    Err(stale())
}

/// KubeVirt's restart: `PUT …/virtualmachines/NAME/restart` in `subresources.kubevirt.io`.
async fn restart(target: &Target, namespace: &str, name: &str) -> Result<(), DeployError> {
    let path = format!("/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}/restart");
    let request = http::Request::put(path).header("content-type", "application/json").body(b"{}".to_vec()).expect("a valid request");
    match target.client.request_text(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(DeployError::Api("the cluster does not serve KubeVirt's restart subresource".into())),
        Err(e) => Err(target.error(e).into()),
    }
}

/// The state a VM reaches under its run strategy.
fn wanted_state(object: &Value) -> Option<&'static str> {
    match object.pointer("/spec/runStrategy").and_then(Value::as_str)? {
        "Always" | "RerunOnFailure" => Some("Running"),
        "Halted" => Some("Stopped"),
        _ => None,
    }
}

async fn wait_for(target: &Target, plan: &Plan, timeout: Duration, progress: &dyn Progress) -> Result<(), DeployError> {
    let mut waiting: Vec<(&Step, &'static str)> = plan
        .steps
        .iter()
        .filter(|s| s.action != Action::Delete)
        .filter_map(|s| Some((s, wanted_state(s.object.as_ref()?)?)))
        .collect();
    let started = Instant::now();
    while !waiting.is_empty() {
        let mut still = vec![];
        for (step, state) in waiting {
            let api: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), &step.namespace, &vm_resource());
            let now = api.get_opt(&step.name).await.map_err(|e| target.error(e))?;
            let status = now.as_ref().map_or("", |o| crate::vm_state::printable_status(&o.data));
            let vm = format!("virtualmachine/{} ({})", step.name, step.namespace);
            progress.waiting(&vm, state, status, status == state);
            // The timeout is for slowness: a VM that cannot get there ends the wait now.
            if let Some(stuck) = now.as_ref().and_then(|o| crate::vm_state::stuck(&o.data)).filter(|_| status != state) {
                return Err(DeployError::Stuck { vm: format!("{}/{}", step.namespace, step.name), state: stuck.state, reason: stuck.reason });
            }
            if status != state {
                still.push((step, state));
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if started.elapsed() >= timeout {
            return Err(DeployError::WaitTimeout {
                seconds: timeout.as_secs(),
                waiting: waiting.iter().map(|(s, state)| format!("{}/{} to be {state}", s.namespace, s.name)).collect(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
