//! KubeVirt's subresource API (`subresources.kubevirt.io`), as virt-api serves it:
//! `PUT …/namespaces/NS/virtualmachines/NAME/{start,stop,restart,migrate}`.
//!
//! Each action follows KubeVirt's rules to the letter (`specs/kubevirt-semantics.md` §1):
//! per run strategy it either patches the VM's run strategy (`spec.runStrategy`, or the
//! deprecated `spec.running`), appends state change requests to its status for the
//! controller, or refuses with KubeVirt's own message and code. The writes go through the
//! store like any other (`handlers::modify`), so they get a resourceVersion, bump the
//! generation where the spec changes, record managedFields, and reach watchers. Where
//! KubeVirt guards its patch with a JSON-patch `test` against the VM it read, the check
//! here runs on the store's writer thread against the VM the write replaces — a VM changed
//! in between is a 409, as there.

use super::error::{ApiError, Cause};
use super::handlers::{self, Edit, RequestScope, Writer};
use super::resources::{MIGRATION, VIRTUAL_MACHINE, VIRTUAL_MACHINE_INSTANCE};
use super::resources::kubevirt_actions::{GROUP, VM_ACTIONS};
pub use super::route::ActionRequest as Request;
use super::store::{Key, Store};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The field manager of the writes, as virt-api's own client is named.
const MANAGER: &str = "virt-api";

const VM_NOT_RUNNING: &str = "VM is not running";
const VOLUME_MIGRATION_RECOVERY: &str = "VM recovery required: Volume migration failed, leaving some volumes pointing to non-consistent targets; manual intervention is needed to reassign them to their original volumes.";

/// KubeVirt's other subresources: answered with 501 rather than a bare 404, so a client
/// learns what is missing.
const NOT_IMPLEMENTED: [&str; 17] = [
    "console", "vnc", "vnc/screenshot", "portforward", "pause", "unpause", "freeze", "unfreeze", "softreboot", "reset", "guestosinfo",
    "userlist", "filesystemlist", "addvolume", "removevolume", "memorydump", "expand-spec",
];

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StartOptions {
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    dry_run: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StopOptions {
    grace_period: Option<i64>,
    #[serde(default)]
    dry_run: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RestartOptions {
    grace_period_seconds: Option<i64>,
    #[serde(default)]
    dry_run: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MigrateOptions {
    added_node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    dry_run: Vec<String>,
}

/// Decode an options body as virt-api does (YAML or JSON; unknown fields ignored; an
/// empty body means the defaults).
fn options<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let parsed = match serde_json::from_slice::<T>(body) {
        Ok(t) => Ok(t),
        Err(json_error) if body.trim_ascii_start().starts_with(b"{") => Err(json_error.to_string()),
        Err(_) => serde_yaml::from_slice::<T>(body).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| ApiError::bad_request(format!("Can not unmarshal Request body to struct, error: {e}")))
}

fn dry_run(values: &[String]) -> Result<bool, ApiError> {
    match values {
        [] => Ok(false),
        [all] if all == "All" => Ok(true),
        other => Err(ApiError::bad_request(format!("Invalid dry run value: {other:?}; supported values: All"))),
    }
}

// KubeVirt's errors name the resource in the singular (`v1.Resource("virtualmachine")`).

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("{kind}.kubevirt.io \"{name}\" not found")).about("kubevirt.io", kind, name)
}

fn conflict(name: &str, message: &str) -> ApiError {
    ApiError::conflict(format!("Operation cannot be fulfilled on virtualmachine.kubevirt.io \"{name}\": {message}")).about("kubevirt.io", "virtualmachine", name)
}

fn internal(message: &str) -> ApiError {
    ApiError::internal(format!("Internal error occurred: {message}")).with_causes(vec![Cause::new("", "", message)])
}

/// Answer one request (`put`: whether its method is PUT, the only one the VM actions
/// take): `Ok` is KubeVirt's 202 Accepted.
pub async fn serve(store: &Store, request: &Request, put: bool, body: &[u8]) -> Result<(), ApiError> {
    let action = request.action.as_str();
    let vm_action = request.plural == "virtualmachines" && VM_ACTIONS.contains(&action);
    if vm_action && !put {
        return Err(ApiError::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"));
    }
    match (request.plural.as_str(), action) {
        ("virtualmachines", "start") => start(store, &request.namespace, &request.name, options(body)?).await,
        ("virtualmachines", "stop") => stop(store, &request.namespace, &request.name, options(body)?).await,
        ("virtualmachines", "restart") => restart(store, &request.namespace, &request.name, options(body)?).await,
        ("virtualmachines", "migrate") => migrate(store, &request.namespace, &request.name, options(body)?).await,
        ("virtualmachines" | "virtualmachineinstances", a) if NOT_IMPLEMENTED.contains(&a) || VM_ACTIONS.contains(&a) => Err(ApiError::new(
            501,
            "NotImplemented",
            format!("{GROUP} {} is not implemented by vmform's local control plane yet", request.resource()),
        )),
        _ => Err(ApiError::not_found("the server could not find the requested resource")),
    }
}

fn read(store: &Store, resource: &'static super::resources::Resource, namespace: &str, name: &str) -> Option<Value> {
    store.read().get(&Key::new(resource, namespace, name)).map(|o| (**o).clone())
}

/// The run strategy KubeVirt acts on (`VirtualMachine.RunStrategy()`): the deprecated
/// `spec.running` maps to Always/Halted; neither set means Halted.
fn run_strategy(vm: &Value) -> Result<String, ApiError> {
    let running = vm.pointer("/spec/running").and_then(Value::as_bool);
    let strategy = vm.pointer("/spec/runStrategy").and_then(Value::as_str);
    match (running, strategy) {
        (Some(_), Some(_)) => Err(internal("running and runstrategy are mutually exclusive")),
        (Some(true), None) => Ok("Always".into()),
        (Some(false), None) => Ok("Halted".into()),
        (None, Some(s)) => Ok(s.to_string()),
        (None, None) => Ok("Halted".into()),
    }
}

fn phase(vmi: &Value) -> &str {
    vmi.pointer("/status/phase").and_then(Value::as_str).unwrap_or("")
}

fn is_final(vmi: &Value) -> bool {
    matches!(phase(vmi), "Succeeded" | "Failed")
}

fn uid(object: &Value) -> String {
    object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string()
}

fn has_condition_true(object: &Value, kind: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

fn start_request(paused: bool) -> Value {
    if paused { json!({ "action": "Start", "data": { "paused": "true" } }) } else { json!({ "action": "Start" }) }
}

fn stop_request(vmi_uid: &str) -> Value {
    json!({ "action": "Stop", "uid": vmi_uid })
}

/// Whether a status is the zero `VirtualMachineStatus` (nothing set), where KubeVirt adds
/// the whole status instead of the list.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
        Value::Bool(true) => false,
    }
}

/// `getChangeRequestJSON`: append `changes` to `status.stateChangeRequests` of the VM as
/// read (`seen`), guarded by a test against the VM the write replaces; a stop alone
/// replaces pending requests, anything else with requests pending is refused; a manual
/// action clears the start-failure back-off.
async fn add_state_change_requests(store: &Store, namespace: &str, name: &str, seen: &Value, changes: Vec<Value>, dry_run: bool) -> Result<(), ApiError> {
    let seen_status = seen.get("status").cloned().unwrap_or(Value::Null);
    let seen_requests = seen_status.get("stateChangeRequests").cloned().unwrap_or(Value::Null);
    let pending = seen_requests.as_array().is_some_and(|a| !a.is_empty());
    let lone_stop = changes.len() == 1 && changes[0]["action"] == "Stop";
    if !is_zero(&seen_status) && pending && !lone_stop {
        return Err(internal("unable to complete request: stop/start already underway"));
    }
    let owned_name = name.to_string();
    let compute = move |current: &Value| -> Result<Value, ApiError> {
        let mut next = current.clone();
        let status = current.get("status").cloned().unwrap_or(Value::Null);
        if is_zero(&seen_status) {
            // `add /status`: whatever the status is now is replaced.
            next["status"] = json!({ "stateChangeRequests": changes });
        } else {
            let now_requests = status.get("stateChangeRequests").cloned().unwrap_or(Value::Null);
            if now_requests != seen_requests {
                return Err(conflict(&owned_name, "jsonpatch test operation does not apply: /status/stateChangeRequests has changed"));
            }
            next["status"]["stateChangeRequests"] = json!(changes);
            if seen_status.get("startFailure").is_some()
                && let Some(s) = next["status"].as_object_mut()
            {
                s.remove("startFailure");
            }
        }
        Ok(next)
    };
    write_vm(store, namespace, name, Some("status"), dry_run, compute).await
}

/// `getRunningPatch`: set the run strategy to Always (`running`) or Halted — or, on a VM
/// still written with the deprecated `spec.running`, that field — guarded by a test that
/// it is still what was read.
async fn set_running(store: &Store, namespace: &str, name: &str, seen: &Value, running: bool, dry_run: bool) -> Result<(), ApiError> {
    let owned_name = name.to_string();
    let seen_strategy = seen.pointer("/spec/runStrategy").cloned();
    let seen_running = seen.pointer("/spec/running").cloned();
    let compute = move |current: &Value| -> Result<Value, ApiError> {
        let mut next = current.clone();
        if let Some(seen) = &seen_strategy {
            if current.pointer("/spec/runStrategy") != Some(seen) {
                return Err(conflict(&owned_name, "jsonpatch test operation does not apply: /spec/runStrategy has changed"));
            }
            next["spec"]["runStrategy"] = json!(if running { "Always" } else { "Halted" });
        } else {
            if current.pointer("/spec/running").cloned() != seen_running {
                return Err(conflict(&owned_name, "jsonpatch test operation does not apply: /spec/running has changed"));
            }
            next["spec"]["running"] = json!(running);
        }
        Ok(next)
    };
    write_vm(store, namespace, name, None, dry_run, compute).await
}

async fn write_vm(
    store: &Store,
    namespace: &str,
    name: &str,
    subresource: Option<&str>,
    dry_run: bool,
    compute: impl FnOnce(&Value) -> Result<Value, ApiError> + Send + 'static,
) -> Result<(), ApiError> {
    let target = RequestScope { resource: &VIRTUAL_MACHINE, namespace: Some(namespace) };
    let writer = Writer { manager: MANAGER, dry_run };
    match handlers::modify(store, &target, name, subresource, &writer, Edit::Compute(Box::new(compute))).await {
        Ok(_) => Ok(()),
        // The VM went away between the read and the write.
        Err(e) if e.code == 404 => Err(not_found("virtualmachine", name)),
        // A refusal of the write itself (validation): KubeVirt wraps what its patch call
        // returns, other than a failed test, as an internal error.
        Err(e) if e.code == 409 || e.code == 500 => Err(e),
        Err(e) => Err(internal(&e.message)),
    }
}

/// Set the VMI's `spec.terminationGracePeriodSeconds` (test + replace), returning what it
/// was (0 if unset, as KubeVirt reports it).
async fn set_grace_period(store: &Store, namespace: &str, vmi: &Value, grace: i64, dry_run: bool) -> Result<i64, ApiError> {
    let seen = vmi.pointer("/spec/terminationGracePeriodSeconds").cloned();
    let old = seen.as_ref().and_then(Value::as_i64).unwrap_or(0);
    let name = vmi.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let target = RequestScope { resource: &VIRTUAL_MACHINE_INSTANCE, namespace: Some(namespace) };
    let writer = Writer { manager: MANAGER, dry_run };
    let compute = move |current: &Value| -> Result<Value, ApiError> {
        if current.pointer("/spec/terminationGracePeriodSeconds").cloned() != seen {
            return Err(internal("jsonpatch test operation does not apply: /spec/terminationGracePeriodSeconds has changed"));
        }
        let mut next = current.clone();
        next["spec"]["terminationGracePeriodSeconds"] = json!(grace);
        Ok(next)
    };
    match handlers::modify(store, &target, &name, None, &writer, Edit::Compute(Box::new(compute))).await {
        Ok(_) => Ok(old),
        Err(e) if e.code == 500 => Err(e),
        Err(e) => Err(internal(&e.message)),
    }
}

async fn start(store: &Store, namespace: &str, name: &str, options: StartOptions) -> Result<(), ApiError> {
    let dry_run = dry_run(&options.dry_run)?;
    let vm = read(store, &VIRTUAL_MACHINE, namespace, name).ok_or_else(|| not_found("virtualmachine", name))?;
    let vmi = read(store, &VIRTUAL_MACHINE_INSTANCE, namespace, name);
    if let Some(vmi) = &vmi
        && !is_final(vmi)
        && !matches!(phase(vmi), "Unknown" | "")
    {
        return Err(conflict(name, "VM is already running"));
    }
    if has_condition_true(&vm, "ManualRecoveryRequired") {
        return Err(conflict(name, VOLUME_MIGRATION_RECOVERY));
    }
    let strategy = run_strategy(&vm)?;
    match strategy.as_str() {
        // KubeVirt compares the template's start strategy by pointer here, so a paused
        // start always goes through a request (the controller then sets Always).
        "Halted" if options.paused => add_state_change_requests(store, namespace, name, &vm, vec![start_request(true)], dry_run).await,
        "Halted" => set_running(store, namespace, name, &vm, true, dry_run).await,
        "RerunOnFailure" | "Manual" => {
            let needs_restart = match &vmi {
                Some(vmi) if strategy == "RerunOnFailure" && phase(vmi) == "Succeeded" => true,
                Some(vmi) if strategy == "RerunOnFailure" && phase(vmi) == "Failed" => {
                    return Err(conflict(name, "RerunOnFailure does not support starting VM from failed state"));
                }
                Some(vmi) if strategy == "Manual" && is_final(vmi) => true,
                _ => false,
            };
            let changes = match (&vmi, needs_restart) {
                (Some(vmi), true) => vec![stop_request(&uid(vmi)), start_request(options.paused)],
                _ => vec![start_request(options.paused)],
            };
            add_state_change_requests(store, namespace, name, &vm, changes, dry_run).await
        }
        "Always" | "Once" => Err(conflict(name, &format!("{strategy} does not support manual start requests"))),
        // KubeVirt's switch has no other case: anything else is accepted and does nothing.
        _ => Ok(()),
    }
}

async fn stop(store: &Store, namespace: &str, name: &str, options: StopOptions) -> Result<(), ApiError> {
    let dry_run = dry_run(&options.dry_run)?;
    let vm = read(store, &VIRTUAL_MACHINE, namespace, name).ok_or_else(|| not_found("virtualmachine", name))?;
    let strategy = run_strategy(&vm)?;
    let vmi = read(store, &VIRTUAL_MACHINE_INSTANCE, namespace, name);
    let running = vmi.as_ref().filter(|v| !is_final(v));
    // The grace period goes onto the VMI first, whatever follows (KubeVirt's order).
    let mut old_grace = 0;
    if let (Some(vmi), Some(grace)) = (running, options.grace_period) {
        old_grace = set_grace_period(store, namespace, vmi, grace, dry_run).await?;
    }
    match strategy.as_str() {
        "Halted" => {
            let Some(vmi) = running else { return Err(conflict(name, VM_NOT_RUNNING)) };
            let had_grace = vmi.pointer("/spec/terminationGracePeriodSeconds").is_some_and(|g| !g.is_null());
            match options.grace_period {
                Some(grace) if !(had_grace && grace >= old_grace) => {
                    add_state_change_requests(store, namespace, name, &vm, vec![stop_request(&uid(vmi))], dry_run).await
                }
                _ => Err(conflict(name, "Halted only supports manual stop requests with a shorter graceperiod")),
            }
        }
        "RerunOnFailure" | "Manual" => {
            let Some(vmi) = running else { return Err(conflict(name, VM_NOT_RUNNING)) };
            add_state_change_requests(store, namespace, name, &vm, vec![stop_request(&uid(vmi))], dry_run).await
        }
        "Always" | "Once" => set_running(store, namespace, name, &vm, false, dry_run).await,
        _ => Ok(()),
    }
}

async fn restart(store: &Store, namespace: &str, name: &str, options: RestartOptions) -> Result<(), ApiError> {
    match options.grace_period_seconds {
        Some(g) if g > 0 => return Err(ApiError::bad_request("For force restart, only gracePeriod=0 is supported for now")),
        Some(g) if g < 0 => return Err(ApiError::bad_request("gracePeriod has to be greater or equal to 0")),
        _ => {}
    }
    let dry_run = dry_run(&options.dry_run)?;
    let vm = read(store, &VIRTUAL_MACHINE, namespace, name).ok_or_else(|| not_found("virtualmachine", name))?;
    if has_condition_true(&vm, "VolumesChange") {
        return Err(conflict(name, VOLUME_MIGRATION_RECOVERY));
    }
    let strategy = run_strategy(&vm)?;
    if strategy == "Halted" || strategy == "Once" {
        // Sic: KubeVirt's message says "RunStategy".
        return Err(conflict(name, &format!("RunStategy {strategy} does not support manual restart requests")));
    }
    // Sic: KubeVirt names Halted here whatever the strategy.
    let vmi = read(store, &VIRTUAL_MACHINE_INSTANCE, namespace, name).ok_or_else(|| conflict(name, "VM is not running: Halted"))?;
    let force = options.grace_period_seconds == Some(0);
    let old_grace = if force { Some(set_grace_period(store, namespace, &vmi, 1, dry_run).await?) } else { None };
    let result = add_state_change_requests(store, namespace, name, &vm, vec![stop_request(&uid(&vmi)), start_request(false)], dry_run).await;
    if let (Err(_), Some(old)) = (&result, old_grace) {
        // Put the grace period back, as KubeVirt tries to; its failure is only logged there.
        if let Some(current) = read(store, &VIRTUAL_MACHINE_INSTANCE, namespace, name) {
            let _ = set_grace_period(store, namespace, &current, old, dry_run).await;
        }
    }
    result
}

async fn migrate(store: &Store, namespace: &str, name: &str, options: MigrateOptions) -> Result<(), ApiError> {
    let dry_run = dry_run(&options.dry_run)?;
    read(store, &VIRTUAL_MACHINE, namespace, name).ok_or_else(|| not_found("virtualmachine", name))?;
    let vmi = read(store, &VIRTUAL_MACHINE_INSTANCE, namespace, name).ok_or_else(|| not_found("virtualmachineinstance", name))?;
    if phase(&vmi) != "Running" {
        return Err(conflict(name, VM_NOT_RUNNING));
    }
    let mut spec = json!({ "vmiName": name });
    if let Some(selector) = options.added_node_selector {
        spec["addedNodeSelector"] = json!(selector);
    }
    let migration = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": { "generateName": "kubevirt-migrate-vm-", "namespace": namespace },
        "spec": spec,
    });
    let target = RequestScope { resource: &MIGRATION, namespace: Some(namespace) };
    let writer = Writer { manager: MANAGER, dry_run };
    handlers::create(store, &target, &writer, migration).await.map(|_| ()).map_err(|e| internal(&e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_strategies_as_kubevirt_reads_them() {
        assert_eq!(run_strategy(&json!({ "spec": {} })).unwrap(), "Halted");
        assert_eq!(run_strategy(&json!({ "spec": { "running": true } })).unwrap(), "Always");
        assert_eq!(run_strategy(&json!({ "spec": { "running": false } })).unwrap(), "Halted");
        assert_eq!(run_strategy(&json!({ "spec": { "runStrategy": "Manual" } })).unwrap(), "Manual");
        let both = run_strategy(&json!({ "spec": { "running": true, "runStrategy": "Manual" } })).unwrap_err();
        assert_eq!(both.code, 500);
        assert_eq!(both.message, "Internal error occurred: running and runstrategy are mutually exclusive");
    }

    #[test]
    fn option_bodies_decode_like_virt_api() {
        let o: StopOptions = options(b"").unwrap();
        assert_eq!(o.grace_period, None);
        let o: StopOptions = options(br#"{"kind":"StopOptions","apiVersion":"subresources.kubevirt.io/v1","gracePeriod":0}"#).unwrap();
        assert_eq!(o.grace_period, Some(0));
        let o: StartOptions = options(b"paused: true\n").unwrap();
        assert!(o.paused);
        let e = options::<RestartOptions>(br#"{"gracePeriodSeconds":"soon"}"#).err().unwrap();
        assert_eq!(e.code, 400);
        assert!(e.message.starts_with("Can not unmarshal Request body to struct, error: "), "{}", e.message);
        assert!(dry_run(&["All".into()]).unwrap());
        assert_eq!(dry_run(&["Some".into()]).unwrap_err().code, 400);
    }

    #[test]
    fn errors_have_kubevirts_shapes() {
        let e = conflict("web", "VM is already running");
        assert_eq!(e.message, "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"web\": VM is already running");
        let s = e.to_status();
        assert_eq!(s["reason"], "Conflict");
        assert_eq!(s["details"]["kind"], "virtualmachine");
        assert_eq!(not_found("virtualmachine", "web").message, "virtualmachine.kubevirt.io \"web\" not found");
        assert_eq!(internal("boom").to_status()["details"]["causes"][0]["message"], "boom");
    }

    #[test]
    fn an_empty_status_is_the_zero_status() {
        assert!(is_zero(&Value::Null));
        assert!(is_zero(&json!({ "created": false, "stateChangeRequests": [] })));
        assert!(!is_zero(&json!({ "printableStatus": "Stopped" })));
    }

    #[test]
    fn discovery_lists_the_vm_actions() {
        use crate::resources::kubevirt_actions::{group, resource_list};
        let list = resource_list("v1").unwrap();
        assert_eq!(list["groupVersion"], "subresources.kubevirt.io/v1");
        let names: Vec<&str> = list["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["virtualmachines/start", "virtualmachines/stop", "virtualmachines/restart", "virtualmachines/migrate"]);
        assert!(resource_list("v1alpha3").is_some());
        assert!(resource_list("v2").is_none());
        assert_eq!(group()["preferredVersion"]["version"], "v1");
    }
}
