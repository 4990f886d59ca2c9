//! KubeVirt's VM actions (`subresources.kubevirt.io`: start, stop, restart, migrate) and
//! server-side printing (`kubectl get` tables) on the local control plane, against kube-rs
//! and the real `kubectl`. The expected behaviour is KubeVirt's, written down in
//! `specs/kubevirt-semantics.md`; no guest runs here — VMIs are made by hand with the
//! phase each case needs.

use futures_util::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, Config};
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;
use common::*;

fn vms(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), "default", &resource("VirtualMachine", "virtualmachines"))
}

fn vmis(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), "default", &resource("VirtualMachineInstance", "virtualmachineinstances"))
}

fn migrations(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), "default", &resource("VirtualMachineInstanceMigration", "virtualmachineinstancemigrations"))
}

fn instance_spec() -> Value {
    json!({ "domain": { "devices": {}, "memory": { "guest": "128Mi" } } })
}

/// A VM with the given run strategy field(s) in its spec.
async fn create_vm(client: &Client, name: &str, strategy: Value) -> DynamicObject {
    let mut spec = json!({ "template": { "metadata": { "labels": { "app": name } }, "spec": instance_spec() } });
    spec.as_object_mut().unwrap().extend(strategy.as_object().unwrap().clone());
    let vm = json!({ "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": { "name": name }, "spec": spec });
    vms(client).create(&PostParams::default(), &serde_json::from_value(vm).unwrap()).await.unwrap()
}

/// A VMI as the controller would have made it, in `phase`; returns its uid.
async fn create_vmi(client: &Client, name: &str, phase: &str, extra_spec: Value) -> String {
    let mut spec = instance_spec();
    spec.as_object_mut().unwrap().extend(extra_spec.as_object().cloned().unwrap_or_default());
    let vmi = json!({ "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": { "name": name }, "spec": spec });
    let created = vmis(client).create(&PostParams::default(), &serde_json::from_value(vmi).unwrap()).await.unwrap();
    if !phase.is_empty() {
        vmis(client).patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": { "phase": phase } }))).await.unwrap();
    }
    created.metadata.uid.unwrap()
}

async fn set_vm_status(client: &Client, name: &str, status: Value) {
    vms(client).patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await.unwrap();
}

/// `PUT …/virtualmachines/NAME/ACTION` with `body`, as virtctl sends it.
async fn act(client: &Client, name: &str, action: &str, body: Value) -> Result<(), kube::core::Status> {
    let path = format!("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/{name}/{action}");
    let request = http::Request::put(path).header("Content-Type", "application/json").body(serde_json::to_vec(&body).unwrap()).unwrap();
    match client.request_text(request).await {
        Ok(text) => {
            assert_eq!(text, "", "202 Accepted has no body");
            Ok(())
        }
        Err(kube::Error::Api(status)) => Err(*status),
        Err(other) => panic!("{other:?}"),
    }
}

/// The refusal of an action: its code and message.
async fn refused(client: &Client, name: &str, action: &str, body: Value) -> (u16, String) {
    let status = act(client, name, action, body).await.expect_err("the action is refused");
    (status.code, status.message)
}

fn conflict(name: &str, message: &str) -> (u16, String) {
    (409, format!("Operation cannot be fulfilled on virtualmachine.kubevirt.io \"{name}\": {message}"))
}

async fn get(client: &Client, name: &str) -> Value {
    serde_json::to_value(vms(client).get(name).await.unwrap()).unwrap()
}

async fn requests(client: &Client, name: &str) -> Value {
    get(client, name).await["status"]["stateChangeRequests"].clone()
}

#[tokio::test]
async fn discovery_serves_the_subresource_group() {
    let h = start().await;
    let groups: Value = h.client.request(http::Request::get("/apis").body(vec![]).unwrap()).await.unwrap();
    let group = groups["groups"].as_array().unwrap().iter().find(|g| g["name"] == "subresources.kubevirt.io").expect("the group is listed");
    assert_eq!(group["preferredVersion"]["groupVersion"], "subresources.kubevirt.io/v1");
    let list: Value = h.client.request(http::Request::get("/apis/subresources.kubevirt.io/v1").body(vec![]).unwrap()).await.unwrap();
    let names: Vec<&str> = list["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["virtualmachines/start", "virtualmachines/stop", "virtualmachines/restart", "virtualmachines/migrate"]);
    // kube-rs's discovery still reads the whole server.
    let discovery = kube::discovery::Discovery::new(h.client.clone()).run().await.unwrap();
    assert!(discovery.groups().any(|g| g.name() == "kubevirt.io"));
    h.server.stop().await;
}

#[tokio::test]
async fn start_and_stop_flip_the_run_strategy_of_always_and_halted_vms() {
    let h = start().await;
    let c = &h.client;
    let created = create_vm(c, "web", json!({ "runStrategy": "Halted" })).await;
    let rv = created.metadata.resource_version.clone().unwrap();

    act(c, "web", "start", json!({})).await.unwrap();
    let vm = get(c, "web").await;
    assert_eq!(vm["spec"]["runStrategy"], "Always");
    assert_eq!(vm["metadata"]["generation"], 2, "a spec change");
    let managers: Vec<&str> = vm["metadata"]["managedFields"].as_array().unwrap().iter().map(|m| m["manager"].as_str().unwrap()).collect();
    assert!(managers.contains(&"virt-api"), "{managers:?}");
    // Watchers see the change like any other write.
    let mut events = vms(c).watch(&WatchParams::default().timeout(5), &rv).await.unwrap().boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Modified(o)) => assert_eq!(o.data["spec"]["runStrategy"], "Always"),
        other => panic!("{other:?}"),
    }

    assert_eq!(refused(c, "web", "start", json!({})).await, conflict("web", "Always does not support manual start requests"));
    act(c, "web", "stop", json!({})).await.unwrap();
    assert_eq!(get(c, "web").await["spec"]["runStrategy"], "Halted");
    // Halted with no VMI: nothing to stop.
    assert_eq!(refused(c, "web", "stop", json!({})).await, conflict("web", "VM is not running"));
    assert_eq!(refused(c, "web", "restart", json!({})).await, conflict("web", "RunStategy Halted does not support manual restart requests"));

    // Once: stop halts it; start and restart are refused.
    create_vm(c, "batch", json!({ "runStrategy": "Once" })).await;
    assert_eq!(refused(c, "batch", "start", json!({})).await, conflict("batch", "Once does not support manual start requests"));
    assert_eq!(refused(c, "batch", "restart", json!({})).await, conflict("batch", "RunStategy Once does not support manual restart requests"));
    act(c, "batch", "stop", json!({})).await.unwrap();
    assert_eq!(get(c, "batch").await["spec"]["runStrategy"], "Halted");
    h.server.stop().await;
}

#[tokio::test]
async fn the_deprecated_running_field_is_flipped_in_place() {
    let h = start().await;
    let c = &h.client;
    create_vm(c, "old", json!({ "running": false })).await;
    act(c, "old", "start", json!({})).await.unwrap();
    let vm = get(c, "old").await;
    assert_eq!(vm["spec"]["running"], true);
    assert!(vm["spec"].get("runStrategy").is_none());
    act(c, "old", "stop", json!({})).await.unwrap();
    assert_eq!(get(c, "old").await["spec"]["running"], false);
    h.server.stop().await;
}

#[tokio::test]
async fn manual_vms_get_state_change_requests() {
    let h = start().await;
    let c = &h.client;
    create_vm(c, "m", json!({ "runStrategy": "Manual" })).await;
    // No status at all yet: the whole status is added.
    act(c, "m", "start", json!({})).await.unwrap();
    let vm = get(c, "m").await;
    assert_eq!(vm["status"], json!({ "stateChangeRequests": [{ "action": "Start" }] }));
    assert_eq!(vm["spec"]["runStrategy"], "Manual", "the strategy stays");
    assert_eq!(vm["metadata"]["generation"], 1, "status only");
    // A second start while one is pending.
    let (code, message) = refused(c, "m", "start", json!({})).await;
    assert_eq!((code, message.as_str()), (500, "Internal error occurred: unable to complete request: stop/start already underway"));
    assert_eq!(refused(c, "m", "stop", json!({})).await, conflict("m", "VM is not running"));

    // The controller has started it: a VMI runs.
    set_vm_status(c, "m", json!({ "stateChangeRequests": null, "printableStatus": "Running" })).await;
    let uid = create_vmi(c, "m", "Running", json!({})).await;
    assert_eq!(refused(c, "m", "start", json!({})).await, conflict("m", "VM is already running"));
    act(c, "m", "stop", json!({})).await.unwrap();
    assert_eq!(requests(c, "m").await, json!([{ "action": "Stop", "uid": uid }]));
    // A stop replaces what is pending; a restart cannot.
    act(c, "m", "stop", json!({})).await.unwrap();
    assert_eq!(requests(c, "m").await, json!([{ "action": "Stop", "uid": uid }]));
    assert_eq!(refused(c, "m", "restart", json!({})).await.0, 500);

    // Restart of a running Manual VM: stop this VMI, then start a new one.
    set_vm_status(c, "m", json!({ "stateChangeRequests": null })).await;
    act(c, "m", "restart", json!({})).await.unwrap();
    assert_eq!(requests(c, "m").await, json!([{ "action": "Stop", "uid": uid }, { "action": "Start" }]));

    // A final VMI left behind by a Manual VM: start replaces it.
    set_vm_status(c, "m", json!({ "stateChangeRequests": null })).await;
    vmis(c).patch_status("m", &PatchParams::default(), &Patch::Merge(json!({ "status": { "phase": "Succeeded" } }))).await.unwrap();
    act(c, "m", "start", json!({ "paused": true })).await.unwrap();
    assert_eq!(requests(c, "m").await, json!([{ "action": "Stop", "uid": uid }, { "action": "Start", "data": { "paused": "true" } }]));
    h.server.stop().await;
}

#[tokio::test]
async fn rerun_on_failure_restarts_a_stopped_guest_but_not_a_failed_one() {
    let h = start().await;
    let c = &h.client;
    create_vm(c, "r", json!({ "runStrategy": "RerunOnFailure" })).await;
    // A start failure recorded by the controller is cleared by a manual action.
    set_vm_status(c, "r", json!({ "printableStatus": "Stopped", "startFailure": { "consecutiveFailCount": 2, "lastFailedVMIUID": "x" } })).await;
    let uid = create_vmi(c, "r", "Succeeded", json!({})).await;
    act(c, "r", "start", json!({})).await.unwrap();
    let vm = get(c, "r").await;
    assert_eq!(vm["status"]["stateChangeRequests"], json!([{ "action": "Stop", "uid": uid }, { "action": "Start" }]));
    assert!(vm["status"].get("startFailure").is_none(), "{}", vm["status"]);
    assert_eq!(vm["status"]["printableStatus"], "Stopped", "the rest of the status stays");

    set_vm_status(c, "r", json!({ "stateChangeRequests": null })).await;
    vmis(c).patch_status("r", &PatchParams::default(), &Patch::Merge(json!({ "status": { "phase": "Failed" } }))).await.unwrap();
    assert_eq!(refused(c, "r", "start", json!({})).await, conflict("r", "RerunOnFailure does not support starting VM from failed state"));
    // A final VMI is not running.
    assert_eq!(refused(c, "r", "stop", json!({})).await, conflict("r", "VM is not running"));
    h.server.stop().await;
}

#[tokio::test]
async fn stop_with_a_grace_period_shortens_the_vmis_and_halted_vms_accept_only_a_shorter_one() {
    let h = start().await;
    let c = &h.client;
    create_vm(c, "g", json!({ "runStrategy": "Manual" })).await;
    let uid = create_vmi(c, "g", "Running", json!({ "terminationGracePeriodSeconds": 30 })).await;
    act(c, "g", "stop", json!({ "gracePeriod": 5 })).await.unwrap();
    let vmi = serde_json::to_value(vmis(c).get("g").await.unwrap()).unwrap();
    assert_eq!(vmi["spec"]["terminationGracePeriodSeconds"], 5);
    assert_eq!(requests(c, "g").await, json!([{ "action": "Stop", "uid": uid }]));

    // A VM already halted whose VMI is still shutting down: only a force stop, with a
    // shorter grace period, is accepted.
    create_vm(c, "h", json!({ "runStrategy": "Halted" })).await;
    let uid = create_vmi(c, "h", "Running", json!({ "terminationGracePeriodSeconds": 30 })).await;
    let shorter = conflict("h", "Halted only supports manual stop requests with a shorter graceperiod");
    assert_eq!(refused(c, "h", "stop", json!({})).await, shorter);
    assert_eq!(refused(c, "h", "stop", json!({ "gracePeriod": 60 })).await, shorter);
    act(c, "h", "stop", json!({ "gracePeriod": 0 })).await.unwrap();
    assert_eq!(requests(c, "h").await, json!([{ "action": "Stop", "uid": uid }]));
    let vmi = serde_json::to_value(vmis(c).get("h").await.unwrap()).unwrap();
    assert_eq!(vmi["spec"]["terminationGracePeriodSeconds"], 0);
    h.server.stop().await;
}

#[tokio::test]
async fn restart_checks_its_grace_period_and_needs_a_vmi() {
    let h = start().await;
    let c = &h.client;
    create_vm(c, "a", json!({ "runStrategy": "Always" })).await;
    let (code, message) = refused(c, "a", "restart", json!({ "gracePeriodSeconds": 5 })).await;
    assert_eq!((code, message.as_str()), (400, "For force restart, only gracePeriod=0 is supported for now"));
    let (code, message) = refused(c, "a", "restart", json!({ "gracePeriodSeconds": -1 })).await;
    assert_eq!((code, message.as_str()), (400, "gracePeriod has to be greater or equal to 0"));
    assert_eq!(refused(c, "a", "restart", json!({})).await, conflict("a", "VM is not running: Halted"));

    let uid = create_vmi(c, "a", "Running", json!({})).await;
    act(c, "a", "restart", json!({ "gracePeriodSeconds": 0 })).await.unwrap();
    assert_eq!(requests(c, "a").await, json!([{ "action": "Stop", "uid": uid }, { "action": "Start" }]));
    let vmi = serde_json::to_value(vmis(c).get("a").await.unwrap()).unwrap();
    assert_eq!(vmi["spec"]["terminationGracePeriodSeconds"], 1, "a forced restart gives the guest one second");
    h.server.stop().await;
}

#[tokio::test]
async fn refusals_not_found_dry_run_methods_and_read_only_tokens() {
    let h = start().await;
    let c = &h.client;
    let status = act(c, "nope", "start", json!({})).await.unwrap_err();
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "virtualmachine.kubevirt.io \"nope\" not found");

    create_vm(c, "d", json!({ "runStrategy": "Halted" })).await;
    act(c, "d", "start", json!({ "dryRun": ["All"] })).await.unwrap();
    assert_eq!(get(c, "d").await["spec"]["runStrategy"], "Halted", "a dry run changes nothing");
    let (code, message) = refused(c, "d", "start", json!({ "paused": "yes" })).await;
    assert_eq!(code, 400);
    assert!(message.starts_with("Can not unmarshal Request body to struct"), "{message}");

    // Actions are PUTs; the ones vmform does not have yet say so.
    let raw = |method: &str, path: &str| http::Request::builder().method(method).uri(path).body(vec![]).unwrap();
    let code_of = |r: Result<String, kube::Error>| match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("{other:?}"),
    };
    let base = "/apis/subresources.kubevirt.io/v1/namespaces/default";
    assert_eq!(code_of(c.request_text(raw("GET", &format!("{base}/virtualmachines/d/start"))).await), 405);
    assert_eq!(code_of(c.request_text(raw("PUT", &format!("{base}/virtualmachineinstances/d/pause"))).await), 501);
    assert_eq!(code_of(c.request_text(raw("PUT", &format!("{base}/virtualmachines/d/fly"))).await), 404);

    let token = local::create_token(&h.server.data_dir.0, "viewer", true).unwrap();
    let kubeconfig = std::fs::read_to_string(h.server.data_dir.kubeconfig()).unwrap();
    let mut config: serde_yaml::Value = serde_yaml::from_str(&kubeconfig).unwrap();
    config["users"][0]["user"]["token"] = serde_yaml::Value::String(token);
    let kc: kube::config::Kubeconfig = serde_yaml::from_value(config).unwrap();
    let viewer = Client::try_from(Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap();
    let status = act(&viewer, "d", "start", json!({})).await.unwrap_err();
    assert_eq!(status.code, 403);
    assert!(status.message.contains("cannot update resource \"virtualmachines/start\" in API group \"subresources.kubevirt.io\""), "{}", status.message);
    assert_eq!(get(c, "d").await["spec"]["runStrategy"], "Halted");
    h.server.stop().await;
}

#[tokio::test]
async fn migrate_creates_a_migration_for_a_running_vmi() {
    let h = start().await;
    let c = &h.client;
    create_vm(c, "mig", json!({ "runStrategy": "Always" })).await;
    let status = act(c, "mig", "migrate", json!({})).await.unwrap_err();
    assert_eq!((status.code, status.message.as_str()), (404, "virtualmachineinstance.kubevirt.io \"mig\" not found"));
    create_vmi(c, "mig", "Scheduled", json!({})).await;
    assert_eq!(refused(c, "mig", "migrate", json!({})).await, conflict("mig", "VM is not running"));
    vmis(c).patch_status("mig", &PatchParams::default(), &Patch::Merge(json!({ "status": { "phase": "Running" } }))).await.unwrap();
    act(c, "mig", "migrate", json!({ "addedNodeSelector": { "zone": "b" } })).await.unwrap();
    let list = migrations(c).list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let m = &list.items[0];
    assert!(m.metadata.name.as_ref().unwrap().starts_with("kubevirt-migrate-vm-"));
    assert_eq!(m.data["spec"], json!({ "vmiName": "mig", "addedNodeSelector": { "zone": "b" } }));
    h.server.stop().await;
}

// ---- kubectl get: server-side printing -------------------------------------------------

/// Run kubectl off the runtime's thread: the server answers it from this runtime.
async fn kubectl(h: &Harness, args: &[&str]) -> Output {
    let kubeconfig = h.server.data_dir.kubeconfig();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().expect("kubectl runs"))
        .await
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "kubectl failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The words of each line.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

#[tokio::test]
async fn kubectl_get_prints_kubevirts_columns() {
    let h = start().await;
    let c = &h.client;
    create_vm(c, "web", json!({ "runStrategy": "Always" })).await;
    set_vm_status(c, "web", json!({ "printableStatus": "Running", "ready": true, "conditions": [{ "type": "Ready", "status": "True" }] })).await;
    create_vm(c, "db", json!({ "runStrategy": "Halted" })).await;
    let out = rows(&ok(kubectl(&h, &["get", "vm"]).await));
    assert_eq!(out[0], ["NAME", "AGE", "STATUS", "READY"]);
    assert_eq!(out[1][0], "db");
    assert_eq!(out[2][0], "web");
    assert_eq!(&out[2][2..], ["Running", "True"]);

    create_vmi(c, "web", "Running", json!({})).await;
    let status = json!({ "status": {
        "phase": "Running", "nodeName": "node-1", "interfaces": [{ "ipAddress": "10.0.2.15", "name": "default" }],
        "conditions": [{ "type": "Ready", "status": "True" }, { "type": "LiveMigratable", "status": "False" }],
    } });
    vmis(c).patch_status("web", &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    let out = rows(&ok(kubectl(&h, &["get", "vmi"]).await));
    assert_eq!(out[0], ["NAME", "AGE", "PHASE", "IP", "NODENAME", "READY"]);
    assert_eq!(&out[1][2..], ["Running", "10.0.2.15", "node-1", "True"]);
    let out = rows(&ok(kubectl(&h, &["get", "vmi", "web", "-o", "wide"]).await));
    assert_eq!(out[0], ["NAME", "AGE", "PHASE", "IP", "NODENAME", "READY", "LIVE-MIGRATABLE", "PAUSED"]);
    assert_eq!(&out[1][2..], ["Running", "10.0.2.15", "node-1", "True", "False"]);

    // Labels come from the rows' metadata; --sort-by asks for whole objects.
    let out = ok(kubectl(&h, &["get", "vm", "--show-labels", "--sort-by=.metadata.name"]).await);
    assert!(out.lines().next().unwrap().ends_with("LABELS"), "{out}");
    let out = rows(&ok(kubectl(&h, &["get", "vm", "-A", "--sort-by=.spec.runStrategy"]).await));
    assert_eq!(out[0], ["NAMESPACE", "NAME", "AGE", "STATUS", "READY"]);
    assert_eq!(out[1][1], "web");

    let out = rows(&ok(kubectl(&h, &["get", "namespaces"]).await));
    assert_eq!(out[0], ["NAME", "STATUS", "AGE"]);
    assert!(out.iter().any(|r| r[0] == "default" && r[1] == "Active"), "{out:?}");
    let node = json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "node-1" },
                       "status": { "conditions": [{ "type": "Ready", "status": "True" }], "nodeInfo": { "kubeletVersion": "vmform" } } });
    let nodes: Api<DynamicObject> = Api::all_with(c.clone(), &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Node"), "nodes"));
    nodes.create(&PostParams::default(), &serde_json::from_value(node).unwrap()).await.unwrap();
    let out = rows(&ok(kubectl(&h, &["get", "nodes"]).await));
    assert_eq!(out[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(out[1][..3], ["node-1", "Ready", "<none>"]);
    assert_eq!(out[1][4], "vmform");
    let out = rows(&ok(kubectl(&h, &["get", "vmim"]).await));
    assert!(out.is_empty() || out[0][0] == "No", "{out:?}");
    h.server.stop().await;
}

#[tokio::test]
async fn kubectl_get_watch_prints_a_row_per_change() {
    let h = start().await;
    let c = &h.client;
    create_vm(c, "web", json!({ "runStrategy": "Halted" })).await;
    set_vm_status(c, "web", json!({ "printableStatus": "Stopped" })).await;
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(h.server.data_dir.kubeconfig())
        .args(["get", "vm", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    act(c, "web", "start", json!({})).await.unwrap();
    set_vm_status(c, "web", json!({ "printableStatus": "Starting" })).await;
    set_vm_status(c, "web", json!({ "printableStatus": "Running" })).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    watch.kill().unwrap();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let out = rows(&text);
    assert_eq!(out[0], ["NAME", "AGE", "STATUS", "READY"], "{text}");
    let statuses: Vec<&str> = out[1..].iter().map(|r| r[2].as_str()).collect();
    // The start itself is a row too (a spec change); headers are printed once.
    assert_eq!(statuses.first(), Some(&"Stopped"), "{text}");
    assert_eq!(statuses.last(), Some(&"Running"), "{text}");
    assert!(statuses.contains(&"Starting"), "{text}");
    assert_eq!(text.matches("NAME").count(), 1, "{text}");
    h.server.stop().await;
}

#[tokio::test]
async fn tables_honour_include_object_and_keep_list_paging() {
    let h = start().await;
    let c = &h.client;
    for name in ["a", "b", "c"] {
        create_vm(c, name, json!({ "runStrategy": "Halted" })).await;
    }
    let table = |query: &str| {
        http::Request::get(format!("/apis/kubevirt.io/v1/namespaces/default/virtualmachines{query}"))
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
            .body(vec![])
            .unwrap()
    };
    let t: Value = c.request(table("?limit=2")).await.unwrap();
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["rows"].as_array().unwrap().len(), 2);
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let token = t["metadata"]["continue"].as_str().expect("paging carries on").to_string();
    let t: Value = c.request(table(&format!("?limit=2&continue={token}&includeObject=Object"))).await.unwrap();
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    assert_eq!(t["rows"][0]["object"]["spec"]["runStrategy"], "Halted");
    let t: Value = c.request(table("/b?includeObject=None")).await.unwrap();
    assert_eq!(t["rows"][0]["cells"][0], "b");
    assert!(t["rows"][0].get("object").is_none());
    let e = c.request::<Value>(table("?includeObject=Everything")).await.unwrap_err();
    assert!(matches!(e, kube::Error::Api(s) if s.code == 400));
    h.server.stop().await;
}
