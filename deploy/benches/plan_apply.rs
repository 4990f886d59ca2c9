//! Plan and apply benchmark: `vmform plan` / `vmform apply` of a 1,000-VM project
//! (`BENCH_VMS`) against `vmform up`'s server, and `kubectl apply --server-side` of the same
//! objects for comparison. Every figure is wall time:
//!
//! 1. plan against the empty cluster (every VM a create);
//! 2. apply of that plan (default options, 8 server-side applies in flight);
//! 3. a no-change plan after the apply (first, and best of 3 more);
//! 4. `kubectl apply --server-side --field-manager bench -R -f DIR` of the same objects
//!    (one YAML file per object, as `vmform build --out-dir` writes them, plus the
//!    namespaces) into a second fresh control plane, then its no-change re-apply;
//! 5. the ratio vmform apply / kubectl apply;
//!
//! then the request phases a plan and an apply are made of, timed alone on the first
//! control plane (the list of members, the per-VM GETs of a create plan, the namespace
//! GETs, server-side apply creates 8 in flight and one at a time).
//!
//! Run: `cargo bench -p vmform-deploy --bench plan_apply`; figures are in
//! book/src/benchmarks.md.

use futures_util::{stream, StreamExt};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vmform_compiler::{compile, emit, CompiledVm, MemoryLoader, Options};
use vmform_deploy::apply::{self, ApplyOptions};
use vmform_deploy::inventory::ApplySet;
use vmform_deploy::plan::{self, desired_object, namespace_resource, vm_resource, PlanOptions};
use vmform_deploy::target::{self, Target, TargetArgs};
use vmform_apiserver::local::{self, LocalServer, UpConfig};

/// The project's namespaces; VMs are spread over them.
const NAMESPACES: usize = 4;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The project's specs: `vms` VMs over [`NAMESPACES`] namespaces, 100 per file.
fn write_specs(dir: &Path, vms: usize) -> Vec<PathBuf> {
    let mut files = vec![];
    for (f, chunk) in (0..vms).collect::<Vec<_>>().chunks(100).enumerate() {
        let mut s = String::new();
        for &i in chunk {
            let ns = format!("bench-{}", i % NAMESPACES);
            let tier = ["front", "back", "batch"][i % 3];
            s.push_str(&format!(
                "vm \"vm-{i}\" {{\n    namespace \"{ns}\"\n    labels app=\"svc-{}\" tier=\"{tier}\"\n    run-strategy \"halted\"\n    cpu sockets=1 cores=2\n    memory \"4Gi\"\n    disk \"root\" {{ image \"quay.io/containerdisks/fedora:41\"; boot-order 1 }}\n    network \"default\" masquerade=#true\n}}\n",
                i % 10
            ));
        }
        let path = dir.join(format!("vms-{f:03}.kdl"));
        std::fs::write(&path, s).unwrap();
        files.push(path);
    }
    files
}

/// `vmform build --out-dir`'s layout (DIR/NAMESPACE/NAME.yaml), plus the namespaces in a
/// file that sorts first, since kubectl applies files in path order and does not create
/// namespaces.
fn write_manifests(dir: &Path, objects: &[CompiledVm]) {
    let mut namespaces = String::new();
    for n in 0..NAMESPACES {
        namespaces.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench-{n}\n"));
    }
    std::fs::write(dir.join("00-namespaces.yaml"), namespaces).unwrap();
    for o in objects {
        let ns = o.object.metadata.namespace.as_deref().unwrap_or("default");
        std::fs::create_dir_all(dir.join(ns)).unwrap();
        std::fs::write(dir.join(ns).join(format!("{}.yaml", o.object.metadata.name)), emit::object_yaml(&o.object)).unwrap();
    }
}

async fn start(dir: &Path) -> LocalServer {
    local::up(UpConfig { data_dir: dir.to_path_buf(), listen: "127.0.0.1:0".parse().unwrap() }).await.unwrap()
}

async fn connect(server: &LocalServer) -> Target {
    target::connect(&TargetArgs { kubeconfig: Some(server.data_dir.kubeconfig()), ..TargetArgs::default() }).await.unwrap()
}

/// Run kubectl against `server` off the runtime's worker threads (the server shares them).
async fn kubectl(server: &LocalServer, cache: &Path, args: &[&str]) -> (Duration, String) {
    let kubeconfig = server.data_dir.kubeconfig();
    let cache = cache.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(&args)
            .output()
            .expect("kubectl runs");
        let elapsed = started.elapsed();
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        (elapsed, String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .unwrap()
}

#[tokio::main]
async fn main() {
    let vms = env("BENCH_VMS", 1_000);
    let specs = tempfile::tempdir().unwrap();
    let files = write_specs(specs.path(), vms);
    let mut loader = MemoryLoader::new();
    for f in &files {
        loader = loader.with(f.clone(), std::fs::read(f).unwrap());
    }
    let started = Instant::now();
    let c = compile(&loader, &files, &Options::default());
    assert!(!c.has_errors(), "{:?}", c.diagnostics.sorted());
    assert_eq!(c.objects.len(), vms);
    println!("compile: {vms} VMs over {NAMESPACES} namespaces, {} KB of specs in {} files, in {}", loader.size() / 1024, files.len(), ms(started.elapsed()));
    let set = ApplySet::new("bench");

    // vmform on the first control plane.
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path()).await;
    let target = connect(&server).await;

    let started = Instant::now();
    let (first, _) = plan::plan(&target, &set, &c.objects, &PlanOptions::default()).await.unwrap();
    let plan_empty = started.elapsed();
    assert_eq!(first.steps.len(), vms);
    assert_eq!(first.namespaces.len(), NAMESPACES);

    let started = Instant::now();
    let applied = apply::apply(&target, &set, &first, &ApplyOptions::default(), &|_: &str| {}).await.unwrap();
    let apply_time = started.elapsed();
    assert_eq!(applied.created, vms);

    let started = Instant::now();
    let (again, _) = plan::plan(&target, &set, &c.objects, &PlanOptions::default()).await.unwrap();
    let no_change_first = started.elapsed();
    assert!(again.is_empty(), "the plan after the apply changes {} objects", again.steps.len());
    let mut no_change_best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let (p, _) = plan::plan(&target, &set, &c.objects, &PlanOptions::default()).await.unwrap();
        no_change_best = no_change_best.min(started.elapsed());
        assert!(p.is_empty());
    }

    // kubectl on a second fresh control plane, so it too starts empty.
    let manifests = tempfile::tempdir().unwrap();
    write_manifests(manifests.path(), &c.objects);
    let kdata = tempfile::tempdir().unwrap();
    let kserver = start(kdata.path()).await;
    let cache = tempfile::tempdir().unwrap();
    let dir = manifests.path().to_str().unwrap();
    let apply_args = ["apply", "--server-side", "--field-manager", "bench", "-R", "-f", dir];
    let (kubectl_apply, out) = kubectl(&kserver, cache.path(), &apply_args).await;
    assert_eq!(out.lines().filter(|l| l.contains("serverside-applied")).count(), vms + NAMESPACES, "{out}");
    let (kubectl_again, _) = kubectl(&kserver, cache.path(), &apply_args).await;
    // kubectl's fixed cost: process start, kubeconfig, TLS, one request (discovery cached).
    let (kubectl_fixed, _) = kubectl(&kserver, cache.path(), &["get", "namespace", "default"]).await;
    let ktarget = connect(&kserver).await;
    let all: Api<DynamicObject> = Api::all_with(ktarget.client.clone(), &vm_resource());
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), vms);
    kserver.stop().await;

    println!("vmform plan, empty cluster ({vms} creates, {NAMESPACES} namespaces): {}", ms(plan_empty));
    println!("vmform apply of that plan: {} = {:.0} VMs/s", ms(apply_time), vms as f64 / apply_time.as_secs_f64());
    println!("vmform plan + apply: {}", ms(plan_empty + apply_time));
    println!("vmform no-change plan: first {}, best of 3 more {} (target < 1 s)", ms(no_change_first), ms(no_change_best));
    println!("kubectl apply --server-side, empty cluster: {} = {:.0} VMs/s", ms(kubectl_apply), vms as f64 / kubectl_apply.as_secs_f64());
    println!("kubectl apply --server-side, no change: {}", ms(kubectl_again));
    println!("kubectl get namespace default (its fixed cost): {}", ms(kubectl_fixed));
    println!(
        "ratio vmform apply / kubectl apply: {:.2} (plan + apply / kubectl apply: {:.2}; target ≤ 1)",
        apply_time.as_secs_f64() / kubectl_apply.as_secs_f64(),
        (plan_empty + apply_time).as_secs_f64() / kubectl_apply.as_secs_f64()
    );

    // The phases, each alone, on the first control plane.
    let client = target.client.clone();
    let started = Instant::now();
    let members = all_vms(&client).list(&ListParams::default().labels(&set.selector())).await.unwrap();
    println!("phase: list of the {} members by label: {}", members.items.len(), ms(started.elapsed()));
    let selector = set.selector().replace('/', "%2F").replace('=', "%3D");
    let started = Instant::now();
    let request = http::Request::get(format!("/apis/kubevirt.io/v1/virtualmachines?labelSelector={selector}")).body(vec![]).unwrap();
    let body = client.request_text(request).await.unwrap();
    let fetched = started.elapsed();
    let started = Instant::now();
    let list: kube::core::ObjectList<DynamicObject> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.items.len(), members.items.len());
    println!(
        "phase: that list as text, {:.1} MB: {}, then decoded into DynamicObjects in {}",
        body.len() as f64 / 1e6,
        ms(fetched),
        ms(started.elapsed())
    );
    let started = Instant::now();
    for vm in &c.objects {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "absent", &vm_resource());
        assert!(api.get_opt(&vm.object.metadata.name).await.unwrap().is_none());
    }
    let gets = started.elapsed();
    println!("phase: {vms} GETs of absent VMs one at a time (a create plan's ownership check): {} = {:.2} ms each", ms(gets), gets.as_secs_f64() * 1000.0 / vms as f64);
    let started = Instant::now();
    stream::iter(&c.objects)
        .for_each_concurrent(8, |vm| {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "absent", &vm_resource());
            async move {
                assert!(api.get_opt(&vm.object.metadata.name).await.unwrap().is_none());
            }
        })
        .await;
    println!("phase: the same GETs 8 in flight: {}", ms(started.elapsed()));
    let namespaces: Api<DynamicObject> = Api::all_with(client.clone(), &namespace_resource());
    let started = Instant::now();
    for n in 0..NAMESPACES {
        namespaces.get_opt(&format!("bench-{n}")).await.unwrap();
    }
    println!("phase: {NAMESPACES} namespace GETs: {}", ms(started.elapsed()));

    for (label, in_flight) in [("8 in flight", 8), ("one at a time", 1)] {
        let ns = format!("phase-{in_flight}");
        let params = PatchParams::apply("vmform");
        let body = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
        namespaces.patch(&ns, &params, &Patch::Apply(&body)).await.unwrap();
        let objects: Vec<_> = c
            .objects
            .iter()
            .map(|vm| {
                let mut o = desired_object(vm, &set);
                o["metadata"]["namespace"] = json!(ns);
                o["metadata"]["labels"].as_object_mut().unwrap().remove(vmform_deploy::inventory::PART_OF);
                o
            })
            .collect();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &vm_resource());
        let started = Instant::now();
        stream::iter(&objects)
            .for_each_concurrent(in_flight, |o| {
                let (api, params) = (api.clone(), params.clone());
                async move {
                    api.patch(o["metadata"]["name"].as_str().unwrap(), &params, &Patch::Apply(o)).await.unwrap();
                }
            })
            .await;
        let t = started.elapsed();
        println!("phase: {vms} server-side apply creates {label}: {} = {:.0} VMs/s", ms(t), vms as f64 / t.as_secs_f64());
    }
    server.stop().await;
}

fn all_vms(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &vm_resource())
}
