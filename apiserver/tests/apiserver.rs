//! The local control plane against a real client: kube-rs, typed and dynamic, its
//! `watcher`, and server-side apply. Each test starts its own server on a free port in a
//! fresh data dir and talks to it over TLS with the kubeconfig `vmform up` writes.

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config};
use serde_json::{json, Value};
use std::time::Duration;

mod common;
use common::*;

fn vms(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &vm_resource())
}

fn vm(name: &str, labels: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "runStrategy": "Halted",
            "template": { "spec": {
                "domain": { "devices": { "disks": [{ "name": "root", "disk": { "bus": "virtio" } }] }, "memory": { "guest": "1Gi" } },
                "volumes": [{ "name": "root", "containerDisk": { "image": "quay.io/containerdisks/fedora:41" } }],
            } },
        },
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn status_code(e: kube::Error) -> u16 {
    api_error(e).code
}

#[tokio::test]
async fn discovery_lists_the_served_resources_with_short_names() {
    let h = start().await;
    let discovery = kube::discovery::Discovery::new(h.client.clone()).run().await.unwrap();
    let (vm, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(r, _)| r.kind == "VirtualMachine")
        .expect("VirtualMachine is discovered");
    assert_eq!(vm.plural, "virtualmachines");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "status"));
    let kinds: Vec<String> = discovery.groups().flat_map(|g| g.recommended_resources()).map(|(r, _)| r.kind).collect();
    for kind in ["Namespace", "Node", "Event", "Lease", "VirtualMachineInstance", "VirtualMachineInstanceMigration"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    let list: Value = h.client.request(http::Request::get("/apis/kubevirt.io/v1").body(vec![]).unwrap()).await.unwrap();
    let short: Vec<&str> = list["resources"].as_array().unwrap().iter().filter_map(|r| r["shortNames"][0].as_str()).collect();
    assert_eq!(short, ["vm", "vmi", "vmim"]);
    h.server.stop().await;
}

#[tokio::test]
async fn typed_core_objects_round_trip() {
    let h = start().await;
    let namespaces: Api<Namespace> = Api::all(h.client.clone());
    let names: Vec<String> = namespaces.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|n| n.metadata.name).collect();
    assert!(names.contains(&"default".to_string()) && names.contains(&"kube-system".to_string()), "{names:?}");
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": "shop" } })).unwrap();
    let created = namespaces.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let nodes: Api<Node> = Api::all(h.client.clone());
    let node: Node = serde_json::from_value(json!({ "metadata": { "name": "node-1", "labels": { "kubernetes.io/hostname": "node-1" } } })).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    assert_eq!(nodes.get("node-1").await.unwrap().metadata.labels.unwrap()["kubernetes.io/hostname"], "node-1");

    let leases: Api<Lease> = Api::namespaced(h.client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({ "metadata": { "name": "node-1" }, "spec": { "holderIdentity": "node-1", "leaseDurationSeconds": 40 } })).unwrap();
    let mut lease = leases.create(&PostParams::default(), &lease).await.unwrap();
    lease.spec.as_mut().unwrap().lease_duration_seconds = Some(10);
    let replaced = leases.replace("node-1", &PostParams::default(), &lease).await.unwrap();
    assert_eq!(replaced.spec.unwrap().lease_duration_seconds, Some(10));

    let events: Api<Event> = Api::namespaced(h.client.clone(), "shop");
    let event: Event = serde_json::from_value(json!({
        "metadata": { "name": "web.1" },
        "involvedObject": { "kind": "VirtualMachine", "name": "web", "namespace": "shop" },
        "reason": "Started", "message": "VM started", "type": "Normal",
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    assert_eq!(events.list(&ListParams::default()).await.unwrap().items.len(), 1);
    events.delete("web.1", &DeleteParams::default()).await.unwrap();
    assert_eq!(status_code(events.get("web.1").await.unwrap_err()), 404);
    h.server.stop().await;
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields_and_page() {
    let h = start().await;
    let api = vms(&h.client, "default");
    for (name, labels) in [
        ("a", json!({ "app": "web", "tier": "front" })),
        ("b", json!({ "app": "web", "tier": "back" })),
        ("c", json!({ "app": "db" })),
        ("d", json!({})),
    ] {
        api.create(&PostParams::default(), &vm(name, labels)).await.unwrap();
    }
    let names = |list: kube::core::ObjectList<DynamicObject>| list.items.into_iter().map(|o| o.metadata.name.unwrap()).collect::<Vec<_>>();
    let select = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(api.list(&select("app=web")).await.unwrap()), ["a", "b"]);
    assert_eq!(names(api.list(&select("app!=web")).await.unwrap()), ["c", "d"]);
    assert_eq!(names(api.list(&select("tier in (front,middle)")).await.unwrap()), ["a"]);
    assert_eq!(names(api.list(&select("app notin (web)")).await.unwrap()), ["c", "d"]);
    assert_eq!(names(api.list(&select("tier")).await.unwrap()), ["a", "b"]);
    assert_eq!(names(api.list(&select("!tier")).await.unwrap()), ["c", "d"]);
    assert_eq!(names(api.list(&ListParams::default().fields("metadata.name=c")).await.unwrap()), ["c"]);
    assert_eq!(names(api.list(&ListParams::default().fields("metadata.namespace=other")).await.unwrap()), Vec::<String>::new());
    assert_eq!(status_code(api.list(&ListParams::default().fields("spec.running=true")).await.unwrap_err()), 400);

    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(names(first), ["a", "b", "c"]);
    let second = api.list(&ListParams::default().limit(3).continue_token(&token)).await.unwrap();
    assert!(second.metadata.continue_.is_none());
    assert_eq!(names(second), ["d"]);

    // Cluster-wide list sees every namespace.
    let all: Api<DynamicObject> = Api::all_with(h.client.clone(), &vm_resource());
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 4);
    h.server.stop().await;
}

#[tokio::test]
async fn stale_updates_conflict_and_generation_counts_spec_changes_only() {
    let h = start().await;
    let api = vms(&h.client, "default");
    let created = api.create(&PostParams::default(), &vm("web", json!({ "app": "web" }))).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    // A label change is metadata: the generation stays.
    let mut relabelled = created.clone();
    relabelled.metadata.labels.as_mut().unwrap().insert("tier".into(), "front".into());
    let relabelled = api.replace("web", &PostParams::default(), &relabelled).await.unwrap();
    assert_eq!(relabelled.metadata.generation, Some(1));
    assert_ne!(relabelled.metadata.resource_version, created.metadata.resource_version);

    // The first read is stale now: its update is refused, and nothing is lost.
    let mut stale = created.clone();
    stale.data["spec"]["runStrategy"] = json!("Always");
    let e = api_error(api.replace("web", &PostParams::default(), &stale).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("the object has been modified"), "{}", e.message);
    let live = api.get("web").await.unwrap();
    assert_eq!(live.data["spec"]["runStrategy"], "Halted");
    assert_eq!(live.metadata.labels.as_ref().unwrap()["tier"], "front");

    let mut fresh = live.clone();
    fresh.data["spec"]["runStrategy"] = json!("Always");
    let updated = api.replace("web", &PostParams::default(), &fresh).await.unwrap();
    assert_eq!(updated.metadata.generation, Some(2));

    // Status goes through its subresource only, and does not bump the generation.
    let status = json!({ "status": { "printableStatus": "Running", "ready": true } });
    let with_status = api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    assert_eq!(with_status.data["status"]["printableStatus"], "Running");
    assert_eq!(with_status.metadata.generation, Some(2));
    let mut sneaky = with_status.clone();
    sneaky.data["status"]["printableStatus"] = json!("Stopped");
    let after = api.replace("web", &PostParams::default(), &sneaky).await.unwrap();
    assert_eq!(after.data["status"]["printableStatus"], "Running", "the main resource ignores status");

    // An identical write changes nothing, not even the resourceVersion.
    let same = api.replace("web", &PostParams::default(), &after).await.unwrap();
    assert_eq!(same.metadata.resource_version, after.metadata.resource_version);
    h.server.stop().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let h = start().await;
    let api = vms(&h.client, "default");
    let mut object = vm("held", json!({}));
    object.metadata.finalizers = Some(vec!["vmform.io/protect".into()]);
    api.create(&PostParams::default(), &object).await.unwrap();
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = api.get("held").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    let clear = json!({ "metadata": { "finalizers": null } });
    api.patch("held", &PatchParams::default(), &Patch::Merge(&clear)).await.unwrap();
    assert_eq!(status_code(api.get("held").await.unwrap_err()), 404);
    h.server.stop().await;
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let h = start().await;
    let api = vms(&h.client, "default");
    let answered = api.create(&PostParams { dry_run: true, ..PostParams::default() }, &vm("ghost", json!({}))).await.unwrap();
    assert_eq!(answered.metadata.name.as_deref(), Some("ghost"));
    assert_eq!(status_code(api.get("ghost").await.unwrap_err()), 404);
    api.create(&PostParams::default(), &vm("real", json!({}))).await.unwrap();
    api.delete("real", &DeleteParams { dry_run: true, ..DeleteParams::default() }).await.unwrap();
    api.get("real").await.unwrap();
    h.server.stop().await;
}

#[tokio::test]
async fn server_side_apply_tracks_owners_and_names_conflicting_fields() {
    let h = start().await;
    let api = vms(&h.client, "default");
    let mut desired = vm("web", json!({ "app": "web" }));
    desired.metadata.managed_fields = None;
    let applied = api.patch("web", &PatchParams::apply("vmform"), &Patch::Apply(&desired)).await.unwrap();
    let managers: Vec<String> = applied.metadata.managed_fields.unwrap().into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, ["vmform"]);

    // Another manager changes a field vmform owns: a conflict that names the field.
    let mut theirs = desired.clone();
    theirs.data["spec"]["runStrategy"] = json!("Always");
    let e = api_error(api.patch("web", &PatchParams::apply("ops-script"), &Patch::Apply(&theirs)).await.unwrap_err());
    assert_eq!(e.code, 409);
    assert!(e.message.contains(".spec.runStrategy") && e.message.contains("\"vmform\""), "{}", e.message);

    // Forced, it takes the field over.
    let forced = api.patch("web", &PatchParams::apply("ops-script").force(), &Patch::Apply(&theirs)).await.unwrap();
    assert_eq!(forced.data["spec"]["runStrategy"], "Always");
    h.server.stop().await;
}

#[tokio::test]
async fn watcher_sees_every_change_in_order() {
    let h = start().await;
    let api = vms(&h.client, "default");
    for config in [watcher::Config::default(), watcher::Config::default().streaming_lists()] {
        api.create(&PostParams::default(), &vm("before", json!({}))).await.unwrap();
        let stream = watcher(api.clone(), config).applied_objects();
        let mut stream = Box::pin(stream);
        let first = tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.unwrap().unwrap().unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("before"));
        api.create(&PostParams::default(), &vm("after", json!({}))).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.unwrap().unwrap().unwrap();
        assert_eq!(next.metadata.name.as_deref(), Some("after"));
        drop(stream);
        api.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    }
    h.server.stop().await;
}

#[tokio::test]
async fn a_watch_from_a_revision_older_than_the_history_gets_an_in_stream_410() {
    let dir = tempfile::tempdir().unwrap();
    let up = || local::up(UpConfig { data_dir: dir.path().to_path_buf(), listen: "127.0.0.1:0".parse().unwrap() });
    let server = up().await.unwrap();
    let client = client_for(&server.data_dir.kubeconfig()).await;
    let created = vms(&client, "default").create(&PostParams::default(), &vm("old", json!({}))).await.unwrap();
    let rv = created.metadata.resource_version.unwrap();
    vms(&client, "default").create(&PostParams::default(), &vm("newer", json!({}))).await.unwrap();
    server.stop().await;
    // After a restart the event history starts afresh: the old revision is gone.
    let server = up().await.unwrap();
    let client = client_for(&server.data_dir.kubeconfig()).await;
    let api = vms(&client, "default");
    let mut events = api.watch(&kube::api::WatchParams::default(), &rv).await.unwrap().boxed();
    let event = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap().unwrap();
    match event {
        kube::core::WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_kubernetes_status_errors() {
    let h = start().await;
    let api = vms(&h.client, "default");

    let mut bad = vm("Not_A_Name", json!({}));
    let e = api_error(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    bad.metadata.name = Some("no-template".into());
    bad.data["spec"].as_object_mut().unwrap().remove("template");
    let e = api_error(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.template"), "{}", e.message);

    api.create(&PostParams::default(), &vm("twice", json!({}))).await.unwrap();
    let e = api_error(api.create(&PostParams::default(), &vm("twice", json!({}))).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));

    assert_eq!(status_code(api.get("missing").await.unwrap_err()), 404);
    assert_eq!(status_code(vms(&h.client, "no-such-ns").create(&PostParams::default(), &vm("x", json!({}))).await.unwrap_err()), 404);

    let raw = |method: &str, path: &str, body: Vec<u8>| {
        http::Request::builder().method(method).uri(path).header("content-type", "application/json").body(body).unwrap()
    };
    let code_of = |r: Result<Value, kube::Error>| status_code(r.unwrap_err());
    let vm_path = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
    assert_eq!(code_of(h.client.request::<Value>(raw("POST", vm_path, b"{not json".to_vec())).await), 400);
    let lease = serde_json::to_vec(&json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": { "name": "l" } })).unwrap();
    assert_eq!(code_of(h.client.request::<Value>(raw("POST", vm_path, lease)).await), 400);
    let huge = serde_json::to_vec(&json!({ "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": { "name": "big", "annotations": { "a": "x".repeat(4 << 20) } } })).unwrap();
    assert_eq!(code_of(h.client.request::<Value>(raw("POST", vm_path, huge)).await), 413);
    assert_eq!(code_of(h.client.request::<Value>(raw("GET", "/apis/kubevirt.io/v1/namespaces/default/pods", vec![])).await), 404);
    assert_eq!(code_of(h.client.request::<Value>(raw("POST", &format!("{vm_path}/twice"), vec![])).await), 405);
    h.server.stop().await;
}

#[tokio::test]
async fn tokens_decide_who_may_do_what() {
    let h = start().await;
    let kubeconfig = std::fs::read_to_string(h.server.data_dir.kubeconfig()).unwrap();
    let with_token = |token: Option<&str>| {
        let mut config: serde_yaml::Value = serde_yaml::from_str(&kubeconfig).unwrap();
        match token {
            Some(t) => config["users"][0]["user"]["token"] = serde_yaml::Value::String(t.into()),
            None => {
                config["users"][0]["user"] = serde_yaml::Value::Mapping(Default::default());
            }
        }
        config
    };
    let client_with = |config: serde_yaml::Value| async move {
        let kc: kube::config::Kubeconfig = serde_yaml::from_value(config).unwrap();
        Client::try_from(Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap()
    };
    let nobody = client_with(with_token(None)).await;
    assert_eq!(status_code(vms(&nobody, "default").list(&ListParams::default()).await.unwrap_err()), 401);
    let wrong = client_with(with_token(Some("vmform-not-a-token"))).await;
    assert_eq!(status_code(vms(&wrong, "default").list(&ListParams::default()).await.unwrap_err()), 401);

    let token = local::create_token(&h.server.data_dir.0, "viewer", true).unwrap();
    let viewer = client_with(with_token(Some(&token))).await;
    vms(&viewer, "default").list(&ListParams::default()).await.unwrap();
    let e = api_error(vms(&viewer, "default").create(&PostParams::default(), &vm("x", json!({}))).await.unwrap_err());
    assert_eq!(e.code, 403);
    assert!(e.message.contains("viewer") && e.message.contains("cannot create"), "{}", e.message);
    h.server.stop().await;
}

#[tokio::test]
async fn concurrent_updates_from_a_stale_read_get_one_409_each_and_lose_nothing() {
    let h = start().await;
    let api = vms(&h.client, "default");
    let base = api.create(&PostParams::default(), &vm("counter", json!({}))).await.unwrap();
    // Eight writers all start from the same read; exactly one may win.
    let attempts = (0..8).map(|i| {
        let api = api.clone();
        let mut object = base.clone();
        async move {
            object.metadata.annotations.get_or_insert_default().insert("writer".into(), i.to_string());
            api.replace("counter", &PostParams::default(), &object).await
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    let conflicts = results.iter().filter(|r| matches!(r, Err(kube::Error::Api(s)) if s.code == 409)).count();
    assert_eq!((won.len(), conflicts), (1, 7));
    let winner = won[0].as_ref().unwrap().metadata.annotations.as_ref().unwrap()["writer"].clone();
    assert_eq!(api.get("counter").await.unwrap().metadata.annotations.unwrap()["writer"], winner);
    h.server.stop().await;
}

#[tokio::test]
async fn watches_end_on_time_send_bookmarks_and_follow_selectors() {
    let h = start().await;
    let api = vms(&h.client, "default");
    api.create(&PostParams::default(), &vm("web", json!({ "app": "web" }))).await.unwrap();

    // The streaming-list protocol: the current objects, then the end-of-initial-events bookmark.
    let mut events = api.watch(&kube::api::WatchParams::default().initial_events(), "").await.unwrap().boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(&first, kube::core::WatchEvent::Added(o) if o.metadata.name.as_deref() == Some("web")), "{first:?}");
    match tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap() {
        kube::core::WatchEvent::Bookmark(b) => assert_eq!(b.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str), Some("true")),
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    drop(events);

    // timeoutSeconds ends the stream.
    let started = std::time::Instant::now();
    let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut events = api.watch(&kube::api::WatchParams::default().timeout(1), &rv).await.unwrap().boxed();
    assert!(tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().is_none());
    assert!(started.elapsed() >= Duration::from_millis(900), "ended after {:?}", started.elapsed());

    // A selective watch sees an object leave its selection as DELETED, and enter it as ADDED.
    let mut events = api.watch(&kube::api::WatchParams::default().labels("app=web"), &rv).await.unwrap().boxed();
    let relabel = |value: &str| json!({ "metadata": { "labels": { "app": value } } });
    api.patch("web", &PatchParams::default(), &Patch::Merge(&relabel("db"))).await.unwrap();
    api.patch("web", &PatchParams::default(), &Patch::Merge(&relabel("web"))).await.unwrap();
    let mut kinds = vec![];
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap() {
            kube::core::WatchEvent::Deleted(_) => kinds.push("DELETED"),
            kube::core::WatchEvent::Added(_) => kinds.push("ADDED"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, ["DELETED", "ADDED"]);
    h.server.stop().await;
}

#[tokio::test]
async fn json_patch_and_merge_patch_edit_objects() {
    let h = start().await;
    let api = vms(&h.client, "default");
    api.create(&PostParams::default(), &vm("web", json!({ "app": "web" }))).await.unwrap();
    let json_patch = |ops: Value| {
        let client = h.client.clone();
        async move {
            let request = http::Request::patch("/apis/kubevirt.io/v1/namespaces/default/virtualmachines/web")
                .header("content-type", "application/json-patch+json")
                .body(serde_json::to_vec(&ops).unwrap())
                .unwrap();
            client.request::<DynamicObject>(request).await
        }
    };
    let patched = json_patch(json!([
        { "op": "replace", "path": "/spec/runStrategy", "value": "Always" },
        { "op": "add", "path": "/metadata/labels/tier", "value": "front" },
    ]))
    .await
    .unwrap();
    assert_eq!(patched.data["spec"]["runStrategy"], "Always");
    assert_eq!(patched.metadata.labels.as_ref().unwrap()["tier"], "front");
    // A failing `test` operation changes nothing.
    let failing = json!([
        { "op": "test", "path": "/spec/runStrategy", "value": "Halted" },
        { "op": "replace", "path": "/spec/runStrategy", "value": "Manual" },
    ]);
    assert_eq!(status_code(json_patch(failing).await.unwrap_err()), 422);
    assert_eq!(api.get("web").await.unwrap().data["spec"]["runStrategy"], "Always");
    // A patch that would make the object invalid is refused with the field.
    let broken = json!({ "spec": { "template": { "spec": { "domain": { "cpu": { "cores": "two" } } } } } });
    let e = api_error(api.patch("web", &PatchParams::default(), &Patch::Merge(&broken)).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.template.spec.domain.cpu.cores"), "{}", e.message);
    h.server.stop().await;
}

#[tokio::test]
async fn a_data_dir_that_cannot_be_used_is_a_clear_startup_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let under_a_file = file.path().join("data");
    let e = local::up(UpConfig { data_dir: under_a_file, listen: "127.0.0.1:0".parse().unwrap() }).await.err().expect("startup fails");
    assert!(e.to_string().contains("cannot be used"), "{e}");

    // Two servers on one data dir: the second is refused, the first keeps its data.
    let h = start().await;
    vms(&h.client, "default").create(&PostParams::default(), &vm("kept", json!({}))).await.unwrap();
    let e = local::up(UpConfig { data_dir: h.server.data_dir.0.clone(), listen: "127.0.0.1:0".parse().unwrap() }).await.err().expect("locked");
    assert!(e.to_string().contains("in use by another vmform server"), "{e}");
    vms(&h.client, "default").get("kept").await.unwrap();
    h.server.stop().await;
}

#[tokio::test]
async fn a_namespace_stays_terminating_until_its_objects_are_gone() {
    let h = start().await;
    let namespaces: Api<Namespace> = Api::all(h.client.clone());
    namespaces.create(&PostParams::default(), &serde_json::from_value(json!({ "metadata": { "name": "shop" } })).unwrap()).await.unwrap();
    let api = vms(&h.client, "shop");
    let mut held = vm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/f".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    api.create(&PostParams::default(), &vm("free", json!({}))).await.unwrap();
    namespaces.delete("shop", &DeleteParams::default()).await.unwrap();
    let ns = namespaces.get("shop").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert_eq!(status_code(api.get("free").await.unwrap_err()), 404, "what can go, goes");
    assert!(api.get("held").await.unwrap().metadata.deletion_timestamp.is_some());
    // Nothing new in a terminating namespace.
    assert_eq!(status_code(api.create(&PostParams::default(), &vm("late", json!({}))).await.unwrap_err()), 403);
    // The last finalizer gone, the VM goes, and the namespace with it.
    api.patch("held", &PatchParams::default(), &Patch::Merge(&json!({ "metadata": { "finalizers": null } }))).await.unwrap();
    assert_eq!(status_code(namespaces.get("shop").await.unwrap_err()), 404);
    h.server.stop().await;
}

#[tokio::test]
async fn a_second_manager_applying_the_same_values_co_owns_them() {
    let h = start().await;
    let api = vms(&h.client, "default");
    let desired = vm("web", json!({ "shared": "v" }));
    api.patch("web", &PatchParams::apply("team-a"), &Patch::Apply(&desired)).await.unwrap();
    let both = api.patch("web", &PatchParams::apply("team-b"), &Patch::Apply(&desired)).await.unwrap();
    let managers: Vec<String> = both.metadata.managed_fields.unwrap().into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, ["team-a", "team-b"]);
    // team-a stops applying the label; team-b still owns it, so it stays.
    let without = vm("web", json!({}));
    let after = api.patch("web", &PatchParams::apply("team-a"), &Patch::Apply(&without)).await.unwrap();
    assert_eq!(after.metadata.labels.unwrap().get("shared").map(String::as_str), Some("v"));
    h.server.stop().await;
}
