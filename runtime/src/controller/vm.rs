//! The VirtualMachine reconciler: one VMI per VM as the run strategy and the start/stop
//! requests say, created from the template, and the VM's status kept in step with it.

use super::strategy::{self, Decision, Instance, Request};
use super::Context;
use crate::Error;
use crate::kubevirt::{self, Phase, RunStrategy};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub(super) const MANAGER: &str = "vmform-controller";

pub(super) async fn reconcile(vm: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = vm.namespace().unwrap_or_default();
    let name = vm.name_any();
    let vms: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.vm_resource);
    let vmis: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.vmi_resource);
    // Fresh reads: the decision must see the newest VM (its requests) and VMI.
    let Some(vm) = vms.get_opt(&name).await? else { return Ok(Action::await_change()) };
    let vm_uid = vm.uid().unwrap_or_default();
    let vmi = vmis.get_opt(&name).await?.filter(|i| owned_by(i, &vm_uid));

    if kubevirt::is_deleting(&vm.metadata) {
        return finish_deletion(&vm, vmi.as_ref(), &vms, &vmis, &ctx).await;
    }
    if !kubevirt::has_finalizer(&vm.metadata, kubevirt::VM_CONTROLLER_FINALIZER) {
        let mut finalizers = vm.finalizers().to_vec();
        finalizers.push(kubevirt::VM_CONTROLLER_FINALIZER.to_string());
        let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": vm.resource_version() } });
        vms.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }

    let now = chrono::Utc::now();
    let strategy = RunStrategy::of(&vm);
    let retry_after = vm
        .data
        .pointer("/status/startFailure/retryAfterTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let history = strategy::History {
        backing_off: retry_after.is_some_and(|t| t > now),
        strategy_changed: vm.data.pointer("/status/runStrategy").and_then(Value::as_str) != Some(strategy.as_str()),
    };
    let requests = requests(&vm);
    // A start of a Halted VM (a paused one; the plain one patches the spec itself) turns
    // it to Always, as KubeVirt's controller does; the request is served under Always.
    if strategy == RunStrategy::Halted && requests.first() == Some(&Request::Start) {
        let patch = if vm.data.pointer("/spec/running").is_some() { json!({ "spec": { "running": true } }) } else { json!({ "spec": { "runStrategy": "Always" } }) };
        let mut patch = patch;
        patch["metadata"] = json!({ "resourceVersion": vm.resource_version() });
        vms.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }
    let instance = vmi.as_ref().map(|i| Instance {
        uid: i.metadata.uid.as_deref().unwrap_or(""),
        phase: Phase::of(i),
        deleting: kubevirt::is_deleting(&i.metadata),
    });
    let mut decision = strategy::decide(strategy, instance, &requests, history);

    // Data volumes are made before the first VMI that needs them.
    let mut provisioning = None;
    if decision.create {
        match ctx.volumes.prepare(&vm).await {
            super::Volumes::Ready => {}
            other => {
                decision.create = false;
                decision.requests_done = 0;
                provisioning = Some(other);
            }
        }
    }

    if decision.delete
        && let Some(vmi) = &vmi
    {
        vmis.delete(&vmi.name_any(), &DeleteParams { preconditions: uid_precondition(vmi), ..Default::default() }).await.map(|_| ()).or_else(ignore_not_found)?;
    }
    let mut created = None;
    if decision.create {
        let paused = vm
            .data
            .pointer("/status/stateChangeRequests/0")
            .filter(|r| r["action"] == "Start")
            .is_some_and(|r| r.pointer("/data/paused").and_then(Value::as_str) == Some("true"));
        let mut new = new_vmi(&vm);
        if paused {
            new.data["spec"]["startStrategy"] = json!("Paused");
        }
        created = Some(vmis.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &new).await?);
    }

    let current = created.as_ref().or(vmi.as_ref());
    let status = status(&vm, current, strategy, decision, provisioning.as_ref(), &now);
    if Some(&status) != vm.data.get("status") {
        let mut next = vm.clone();
        next.data["status"] = status;
        vms.replace_status(&name, &PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &next).await?;
    }
    // A final VMI's outcome is now on the VM: the controller lets go of it.
    if let Some(vmi) = vmi.as_ref().filter(|i| Phase::of(i).is_final() && kubevirt::has_finalizer(&i.metadata, kubevirt::VM_CONTROLLER_FINALIZER)) {
        remove_finalizer(&vmis, vmi, kubevirt::VM_CONTROLLER_FINALIZER).await?;
    }
    Ok(match (provisioning, retry_after) {
        (Some(super::Volumes::Importing(_)), _) => Action::requeue(Duration::from_secs(1)),
        (Some(_), _) => Action::requeue(Duration::from_secs(10)),
        (None, Some(t)) if t > now && created.is_none() => Action::requeue((t - now).to_std().unwrap_or_default() + Duration::from_millis(50)),
        _ => Action::requeue(Duration::from_secs(60)),
    })
}

pub(super) async fn remove_finalizer(api: &Api<DynamicObject>, object: &DynamicObject, finalizer: &str) -> Result<(), Error> {
    let finalizers: Vec<&String> = object.finalizers().iter().filter(|f| *f != finalizer).collect();
    let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": object.resource_version() } });
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()).or_else(ignore_not_found)?;
    Ok(())
}

/// The VM is being deleted: its VMI goes first, then its data volumes, then the finalizer.
async fn finish_deletion(
    vm: &DynamicObject,
    vmi: Option<&DynamicObject>,
    vms: &Api<DynamicObject>,
    vmis: &Api<DynamicObject>,
    ctx: &Context,
) -> Result<Action, Error> {
    if let Some(vmi) = vmi {
        if Phase::of(vmi).is_final() && kubevirt::has_finalizer(&vmi.metadata, kubevirt::VM_CONTROLLER_FINALIZER) {
            remove_finalizer(vmis, vmi, kubevirt::VM_CONTROLLER_FINALIZER).await?;
        }
        if !kubevirt::is_deleting(&vmi.metadata) {
            vmis.delete(&vmi.name_any(), &DeleteParams { preconditions: uid_precondition(vmi), ..Default::default() }).await.map(|_| ()).or_else(ignore_not_found)?;
        }
        let mut next = vm.clone();
        next.data["status"]["printableStatus"] = json!("Terminating");
        next.data["status"]["ready"] = json!(false);
        if next.data.get("status") != vm.data.get("status") {
            vms.replace_status(&vm.name_any(), &PostParams::default(), &next).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if !kubevirt::has_finalizer(&vm.metadata, kubevirt::VM_CONTROLLER_FINALIZER) {
        return Ok(Action::await_change());
    }
    ctx.volumes.delete_for(vm).await?;
    let finalizers: Vec<&String> = vm.finalizers().iter().filter(|f| *f != kubevirt::VM_CONTROLLER_FINALIZER).collect();
    let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": vm.resource_version() } });
    vms.patch(&vm.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()).or_else(ignore_not_found)?;
    Ok(Action::await_change())
}

fn uid_precondition(object: &DynamicObject) -> Option<kube::api::Preconditions> {
    Some(kube::api::Preconditions { uid: object.metadata.uid.clone(), resource_version: None })
}

fn ignore_not_found(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(s) if s.code == 404 => Ok(()),
        e => Err(e),
    }
}

pub(super) fn owned_by(vmi: &DynamicObject, vm_uid: &str) -> bool {
    vmi.owner_references().iter().any(|o| o.uid == vm_uid && o.controller == Some(true))
}

fn requests(vm: &DynamicObject) -> Vec<Request> {
    let Some(list) = vm.data.pointer("/status/stateChangeRequests").and_then(Value::as_array) else { return Vec::new() };
    list.iter()
        .filter_map(|r| match r["action"].as_str() {
            Some("Start") => Some(Request::Start),
            Some("Stop") => Some(Request::Stop(r.pointer("/uid").and_then(Value::as_str).map(str::to_string))),
            _ => None,
        })
        .collect()
}

/// The VMI for a VM: its template, owned by it, named like it (KubeVirt's convention).
fn new_vmi(vm: &DynamicObject) -> DynamicObject {
    let template = vm.data.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
    let mut annotations = template.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({}));
    annotations[kubevirt::VM_GENERATION_ANNOTATION] = json!(vm.metadata.generation.unwrap_or(1).to_string());
    let owner = vm.controller_owner_ref(&kubevirt::vm_resource()).expect("a stored VM has a name and uid");
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": vm.name_any(),
            "namespace": vm.namespace(),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
            "finalizers": [kubevirt::VM_CONTROLLER_FINALIZER],
        },
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    }))
    .expect("a VMI deserialises")
}

/// The VM's new `status` (KubeVirt's `updateStatus`), from the VMI it now has and what
/// this reconcile did.
fn status(
    vm: &DynamicObject,
    vmi: Option<&DynamicObject>,
    strategy: RunStrategy,
    decision: Decision,
    provisioning: Option<&super::Volumes>,
    now: &chrono::DateTime<chrono::Utc>,
) -> Value {
    let mut status = vm.data.get("status").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let phase = vmi.map(Phase::of);
    let is_final = phase.is_some_and(Phase::is_final);
    let restarts = matches!(strategy, RunStrategy::Always | RunStrategy::RerunOnFailure | RunStrategy::Once);
    let start_failure = start_failure(&status, vmi, restarts, is_final, now);
    let fail_count = start_failure.as_ref().and_then(|f| f["consecutiveFailCount"].as_u64()).unwrap_or(0);
    // The last run failed pulling its image: KubeVirt shows ErrImagePull, then
    // ImagePullBackOff while it waits to try again.
    let pull_failed = match vmi.filter(|_| is_final) {
        Some(i) => kubevirt::condition(i, "Ready").is_some_and(|c| c["reason"] == kubevirt::IMAGE_PULL_FAILED),
        None => kubevirt::condition(vm, "Failure").is_some_and(|c| c["reason"] == kubevirt::IMAGE_PULL_FAILED),
    };
    let seen = Seen {
        vm,
        vmi,
        phase,
        is_final,
        stopping: vmi.is_some_and(|i| !is_final && (kubevirt::is_deleting(&i.metadata) || decision.delete)),
        restarts,
        fail_count,
        pull_failed,
        provisioning,
        decision,
        stamp: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    status["printableStatus"] = json!(seen.printable_status());
    status["ready"] = json!(vmi.is_some_and(|i| kubevirt::condition_is_true(i, "Ready")) && !seen.stopping);
    status["created"] = json!(vmi.is_some());
    // Recorded once a VMI was made under it, so RerunOnFailure can tell "new" (start it)
    // from "stopped by its guest" (leave it).
    if vmi.is_some() {
        status["runStrategy"] = json!(strategy.as_str());
    }
    match vmi {
        Some(i) => {
            let started_from = i.annotations().get(kubevirt::VM_GENERATION_ANNOTATION).and_then(|g| g.parse::<i64>().ok());
            status["observedGeneration"] = json!(started_from.unwrap_or(vm.metadata.generation.unwrap_or(1)));
            status["desiredGeneration"] = json!(vm.metadata.generation.unwrap_or(1));
        }
        None => {
            set_or_remove(&mut status, "observedGeneration", None);
            set_or_remove(&mut status, "desiredGeneration", None);
        }
    }
    set_or_remove(&mut status, "startFailure", start_failure.clone());
    let mut remaining: Vec<Value> = vm
        .data
        .pointer("/status/stateChangeRequests")
        .and_then(Value::as_array)
        .map(|l| l.iter().skip(decision.requests_done).cloned().collect())
        .unwrap_or_default();
    if decision.queue_start {
        remaining.push(json!({ "action": "Start" }));
    }
    set_or_remove(&mut status, "stateChangeRequests", (!remaining.is_empty()).then(|| json!(remaining)));
    status["conditions"] = json!(seen.conditions());
    status
}

/// Start failures: a VMI that ended without ever running counts once; one that ran
/// clears them (KubeVirt's syncStartFailureStatus).
fn start_failure(
    status: &Value,
    vmi: Option<&DynamicObject>,
    restarts: bool,
    is_final: bool,
    now: &chrono::DateTime<chrono::Utc>,
) -> Option<Value> {
    let mut start_failure = status.get("startFailure").cloned().filter(Value::is_object);
    if let Some(vmi) = vmi {
        let uid = vmi.metadata.uid.clone().unwrap_or_default();
        if !restarts || kubevirt::ever_ran(vmi) {
            start_failure = None;
        } else if is_final && start_failure.as_ref().is_none_or(|f| f["lastFailedVMIUID"] != uid.as_str()) {
            let count = start_failure.as_ref().and_then(|f| f["consecutiveFailCount"].as_u64()).unwrap_or(0) as u32 + 1;
            let jitter = (uuid::Uuid::new_v4().as_u128() % 1001) as f64 / 1000.0;
            let retry = *now + chrono::Duration::seconds(strategy::start_backoff_seconds(count, jitter) as i64);
            start_failure = Some(json!({
                "consecutiveFailCount": count,
                "lastFailedVMIUID": uid,
                "retryAfterTimestamp": retry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }));
        }
    } else if !restarts {
        start_failure = None;
    }
    start_failure
}

/// What [`status`] found, from which the printable status and the conditions follow.
struct Seen<'a> {
    vm: &'a DynamicObject,
    vmi: Option<&'a DynamicObject>,
    phase: Option<Phase>,
    is_final: bool,
    stopping: bool,
    /// The run strategy starts the VM again after a failure.
    restarts: bool,
    /// Consecutive start failures.
    fail_count: u64,
    /// The last run failed pulling its image.
    pull_failed: bool,
    provisioning: Option<&'a super::Volumes>,
    decision: Decision,
    stamp: String,
}

impl Seen<'_> {
    fn previous(&self, kind: &str) -> Option<Value> {
        kubevirt::condition(self.vm, kind).cloned()
    }

    /// KubeVirt's setPrintableStatus: the first that applies.
    fn printable_status(&self) -> &'static str {
        let (vmi, phase, is_final, provisioning) = (self.vmi, self.phase, self.is_final, self.provisioning);
        let failing = self.fail_count > 0;
        let vmi_condition = |kind: &str, reason: &str| vmi.and_then(|i| kubevirt::condition(i, kind)).filter(|c| c["status"] == "False" && c["reason"] == reason).is_some();
        // KubeVirt's IsMigrating: started and not ended.
        let migrating = vmi.and_then(kubevirt::MigrationState::of).is_some_and(|m| m.started() && m.end_timestamp.is_none());
        if self.stopping {
            "Stopping"
        } else if migrating {
            "Migrating"
        } else if phase == Some(Phase::Running) {
            "Running"
        } else if vmi_condition("Synchronized", "FailedPvcNotFound") {
            "ErrorPvcNotFound"
        } else if matches!(provisioning, Some(super::Volumes::Failed(_))) {
            "DataVolumeError"
        } else if vmi_condition("PodScheduled", "Unschedulable") {
            "ErrorUnschedulable"
        } else if matches!(provisioning, Some(super::Volumes::Importing(_))) {
            "Provisioning"
        } else if self.decision.create || matches!(phase, Some(Phase::Pending | Phase::Scheduling | Phase::Scheduled)) {
            "Starting"
        } else if (vmi.is_none() || is_final) && failing && self.restarts && self.pull_failed {
            if vmi.is_some() && self.fail_count <= 1 { "ErrImagePull" } else { "ImagePullBackOff" }
        } else if (vmi.is_none() || is_final) && failing && self.restarts {
            "CrashLoopBackOff"
        } else if vmi.is_none() || is_final {
            "Stopped"
        } else {
            "Unknown"
        }
    }

    /// The VM's conditions: Ready, the VMI's others, Failure, DataVolumesReady,
    /// RestartRequired.
    fn conditions(&self) -> Vec<Value> {
        let (vm, vmi, stamp) = (self.vm, self.vmi, &self.stamp);
        let mut conditions = Vec::new();
        conditions.push(match vmi.and_then(|i| kubevirt::condition(i, "Ready")) {
            // Going away: not ready any more, whatever the VMI said last.
            Some(_) if self.stopping => kubevirt::make_condition("Ready", false, "PodTerminating", "the VMI is being stopped", self.previous("Ready").as_ref(), stamp),
            Some(c) => c.clone(),
            None if vmi.is_none() => kubevirt::make_condition("Ready", false, "VMINotExists", "VMI does not exist", self.previous("Ready").as_ref(), stamp),
            None => kubevirt::make_condition("Ready", false, "VMIConditionMissing", "VMI is missing the Ready condition", self.previous("Ready").as_ref(), stamp),
        });
        // The VMI's other conditions (PodScheduled, Synchronized, LiveMigratable, ...) show on
        // the VM too, as KubeVirt copies them.
        if let Some(list) = vmi.and_then(|i| i.data.pointer("/status/conditions")).and_then(Value::as_array) {
            conditions.extend(list.iter().filter(|c| c["type"] != "Ready").cloned());
        }
        // Why the last run failed, while that is what the VM is doing about: a failed VMI,
        // or the back-off after one.
        let failing = self.fail_count > 0;
        let failure = vmi.filter(|_| self.phase == Some(Phase::Failed)).map(failure_message).or_else(|| {
            self.previous("Failure").filter(|_| failing && vmi.is_none_or(|_| self.is_final)).and_then(|c| c["message"].as_str().map(str::to_string))
        });
        if let Some(message) = failure {
            let reason = if self.pull_failed { kubevirt::IMAGE_PULL_FAILED } else { "VMIFailed" };
            conditions.push(kubevirt::make_condition("Failure", true, reason, &message, self.previous("Failure").as_ref(), stamp));
        }
        match self.provisioning {
            Some(super::Volumes::Importing(progress)) => conditions.push(kubevirt::make_condition(
                "DataVolumesReady",
                false,
                "ImportInProgress",
                progress,
                self.previous("DataVolumesReady").as_ref(),
                stamp,
            )),
            Some(super::Volumes::Failed(message)) => {
                conditions.push(kubevirt::make_condition("DataVolumesReady", false, "ImportFailed", message, self.previous("DataVolumesReady").as_ref(), stamp))
            }
            _ => {}
        }
        if let Some(vmi) = vmi.filter(|_| !self.is_final && !self.stopping)
            && vmi.data.get("spec") != vm.data.pointer("/spec/template/spec")
        {
            conditions.push(kubevirt::make_condition(
                "RestartRequired",
                true,
                "",
                "a non-live-updatable field was changed in the template spec",
                self.previous("RestartRequired").as_ref(),
                stamp,
            ));
        }
        conditions
    }
}

fn failure_message(vmi: &DynamicObject) -> String {
    vmi.data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find(|c| c["status"] == "False" && c.get("message").is_some()))
        .and_then(|c| c["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| "the VMI failed".to_string())
}

fn set_or_remove(object: &mut Value, key: &str, value: Option<Value>) {
    match value {
        Some(v) => object[key] = v,
        None => {
            if let Some(map) = object.as_object_mut() {
                map.remove(key);
            }
        }
    }
}
