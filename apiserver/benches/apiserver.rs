//! API server benchmark, with kube-rs clients over TLS against `vmform up`'s server:
//!
//! - durable creates per second of VirtualMachine objects from 8 concurrent clients
//!   (`BENCH_CREATES`, default 4,000);
//! - watch delivery latency with 100 watchers (`BENCH_WATCHERS`): the time from sending a
//!   write to each watcher receiving its event, p50 and p99 over every delivery.
//!
//! Run: `cargo bench -p vmform-apiserver --bench apiserver`; figures are in
//! book/src/benchmarks.md.

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vmform_apiserver::local::{self, UpConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn vm(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": { "name": name, "labels": { "app": "bench" } },
        "spec": {
            "runStrategy": "Halted",
            "template": { "spec": {
                "domain": { "cpu": { "cores": 2 }, "memory": { "guest": "4Gi" }, "devices": { "disks": [{ "name": "root", "disk": { "bus": "virtio" } }] } },
                "volumes": [{ "name": "root", "containerDisk": { "image": "quay.io/containerdisks/fedora:41" } }],
            } },
        },
    }))
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let server = local::up(UpConfig { data_dir: dir.path().to_path_buf(), listen: "127.0.0.1:0".parse().unwrap() }).await.unwrap();
    // vmform-cluster's one builder; each call makes a client with its own connections.
    let wanted = vmform_cluster::TargetArgs::local(&server.data_dir);
    let resource = vmform_cluster::kubevirt::vm_resource();

    // Creates: 8 clients, each with its own connection, each creating in a loop.
    let creates = env("BENCH_CREATES", 4_000);
    let clients = 8;
    let mut apis = Vec::new();
    for _ in 0..clients {
        let client = vmform_cluster::client(&wanted).await.unwrap().client;
        apis.push(Api::<DynamicObject>::namespaced_with(client, "default", &resource));
    }
    let started = Instant::now();
    let tasks: Vec<_> = apis
        .into_iter()
        .enumerate()
        .map(|(c, api)| {
            tokio::spawn(async move {
                for i in (c..creates).step_by(clients) {
                    api.create(&PostParams::default(), &vm(&format!("vm-{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let commits = server.store.commits();
    println!(
        "creates: {creates} VirtualMachines from {clients} clients in {:.2} s = {:.0} creates/s, in {commits} transactions (mean batch {:.1}), each committed with fsync before its answer",
        elapsed.as_secs_f64(),
        creates as f64 / elapsed.as_secs_f64(),
        creates as f64 / commits as f64
    );

    // Watch latency: 100 watchers on the namespace, one writer.
    let watchers = env("BENCH_WATCHERS", 100);
    let writes = env("BENCH_WATCH_WRITES", 200);
    let client = vmform_cluster::client(&wanted).await.unwrap().client;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "watched", &resource);
    let namespaces: Api<DynamicObject> = Api::all_with(client, &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Namespace"), "namespaces"));
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "watched" } })).unwrap())
        .await
        .unwrap();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut handles = vec![];
    for _ in 0..watchers {
        let api = api.clone();
        let sent = Arc::clone(&sent);
        let latencies = Arc::clone(&latencies);
        let mut stream = api.watch(&WatchParams::default().timeout(290), "0").await.unwrap().boxed();
        handles.push(tokio::spawn(async move {
            let mut seen = 0;
            while let Some(Ok(event)) = stream.next().await {
                if let WatchEvent::Added(o) = event {
                    let at = Instant::now();
                    let name = o.metadata.name.unwrap();
                    if let Some(t) = sent.lock().unwrap().get(&name) {
                        latencies.lock().unwrap().push(at - *t);
                    }
                    seen += 1;
                    if seen == writes {
                        return;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..writes {
        let name = format!("w-{i}");
        sent.lock().unwrap().insert(name.clone(), Instant::now());
        api.create(&PostParams::default(), &vm(&name)).await.unwrap();
        // A steady stream rather than a burst: latency, not throughput.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(60), h).await;
    }
    let mut all = latencies.lock().unwrap().clone();
    all.sort();
    println!(
        "watch: {} deliveries to {watchers} watchers of {writes} writes; latency from send to receipt p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        all.len(),
        percentile(&all, 0.5).as_secs_f64() * 1000.0,
        percentile(&all, 0.99).as_secs_f64() * 1000.0,
        all.last().unwrap().as_secs_f64() * 1000.0
    );
    server.stop().await;
}
