//! The local control plane as a user meets it: `vmform up`, `status`, `token create`,
//! `down`, with the `kubectl` on this machine pointed at the kubeconfig `up` writes —
//! and the crash test: writes acknowledged before a SIGKILL are all there after a restart.

mod common;

use common::{code, stderr, stdout};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A detached local control plane in a fresh data dir, stopped (`vmform down`) on drop.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn up() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let out = vmform(&dir, &["up", "--detach", "--no-runtime", "--listen", "127.0.0.1:0"]);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains("export KUBECONFIG="), "{}", stdout(&out));
        Cluster { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn kubeconfig(&self) -> PathBuf {
        self.path().join("kubeconfig")
    }
    fn kubectl(&self, args: &[&str]) -> Output {
        common::kubectl(&self.kubeconfig(), args, None)
    }
    fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        common::kubectl(&self.kubeconfig(), args, Some(input))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        vmform(&self.dir, &["down"]);
    }
}

fn vmform(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmform"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run vmform")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "kubectl failed: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

const VM: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: web
  labels: { app: web }
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices:
          disks: [{ name: root, disk: { bus: virtio } }]
        memory: { guest: 1Gi }
      volumes: [{ name: root, containerDisk: { image: "quay.io/containerdisks/fedora:41" } }]
"#;

#[test]
fn up_status_and_down_manage_the_control_plane() {
    let cluster = Cluster::up();
    let status = vmform(&cluster.dir, &["status"]);
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    let text = stdout(&status);
    assert!(text.contains("running: pid") && text.contains("https://127.0.0.1:"), "{text}");
    assert!(text.contains("namespaces") && text.contains("virtualmachines.kubevirt.io"), "{text}");
    let mode = std::fs::metadata(cluster.kubeconfig()).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    let kubeconfig = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
    assert!(kubeconfig.contains("current-context: vmform-local"), "{kubeconfig}");

    // A second server on the same data dir is refused, and the first keeps running.
    let second = vmform(&cluster.dir, &["up", "--no-runtime", "--listen", "127.0.0.1:0"]);
    assert_eq!(code(&second), 2);
    assert!(stderr(&second).contains("in use by another vmform server"), "{}", stderr(&second));

    let down = vmform(&cluster.dir, &["down"]);
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    let status = vmform(&cluster.dir, &["status"]);
    assert_eq!(code(&status), 1);
    assert!(stdout(&status).contains("not running"));
    assert!(!cluster.path().join("vmform.pid").exists());
}

#[test]
fn kubectl_creates_reads_watches_and_deletes() {
    let cluster = Cluster::up();
    ok(cluster.kubectl_stdin(&["apply", "-f", "-"], VM));
    let listed = ok(cluster.kubectl(&["get", "vm"]));
    assert!(listed.contains("web"), "{listed}");
    // Client-side apply again, with a change: a patch, not a conflict.
    ok(cluster.kubectl_stdin(&["apply", "-f", "-"], &VM.replace("runStrategy: Halted", "runStrategy: Always")));
    let object: Value = serde_json::from_str(&ok(cluster.kubectl(&["get", "virtualmachine", "web", "-o", "json"]))).unwrap();
    assert_eq!(object["spec"]["runStrategy"], "Always");
    assert_eq!(object["metadata"]["generation"], 2);

    // Server-side apply with kubectl's field manager; a second manager conflicts.
    ok(cluster.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &VM.replace("name: web", "name: ssa")));
    let conflict = cluster.kubectl_stdin(&["apply", "--server-side", "--field-manager", "other", "-f", "-"], &VM.replace("name: web", "name: ssa").replace("Halted", "Always"));
    assert!(!conflict.status.success());
    assert!(stderr(&conflict).contains("conflict") && stderr(&conflict).contains(".spec.runStrategy"), "{}", stderr(&conflict));

    // `get --watch` prints the change another client makes.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["get", "vm", "--watch", "--output-watch-events", "--request-timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    ok(cluster.kubectl(&["label", "vm", "web", "tier=front"]));
    ok(cluster.kubectl(&["delete", "vm", "web", "--wait=false"]));
    std::thread::sleep(Duration::from_secs(1));
    watch.kill().unwrap();
    let watched = stdout(&watch.wait_with_output().unwrap());
    assert!(watched.contains("MODIFIED") && watched.contains("DELETED"), "{watched}");

    ok(cluster.kubectl(&["delete", "vm", "ssa"]));
    ok(cluster.kubectl(&["wait", "--for=delete", "vm/ssa", "--timeout=10s"]));
    let gone = cluster.kubectl(&["get", "vm", "ssa"]);
    assert!(!gone.status.success() && stderr(&gone).contains("NotFound"), "{}", stderr(&gone));
}

#[test]
fn kubectl_wait_and_namespaces() {
    let cluster = Cluster::up();
    ok(cluster.kubectl(&["create", "namespace", "shop"]));
    ok(cluster.kubectl_stdin(&["apply", "-n", "shop", "-f", "-"], VM));
    ok(cluster.kubectl(&["wait", "-n", "shop", "--for=jsonpath={.spec.runStrategy}=Halted", "vm/web", "--timeout=10s"]));
    let all = ok(cluster.kubectl(&["get", "vm", "-A"]));
    assert!(all.contains("shop") && all.contains("web"), "{all}");
    ok(cluster.kubectl(&["delete", "namespace", "shop"]));
    let after = cluster.kubectl(&["get", "vm", "-n", "shop", "web"]);
    assert!(!after.status.success(), "deleting a namespace deletes its VMs");
}

#[test]
fn a_read_only_token_reads_but_cannot_write() {
    let cluster = Cluster::up();
    let token = vmform(&cluster.dir, &["token", "create", "--read-only", "--name", "viewer"]);
    assert_eq!(code(&token), 0);
    let token = stdout(&token).trim().to_string();
    let read = ok(cluster.kubectl(&["--token", &token, "get", "namespaces"]));
    assert!(read.contains("default"), "{read}");
    let write = cluster.kubectl(&["--token", &token, "create", "namespace", "nope"]);
    assert!(!write.status.success());
    assert!(stderr(&write).contains("Forbidden") || stderr(&write).contains("forbidden"), "{}", stderr(&write));
    let wrong = cluster.kubectl(&["--token", "vmform-wrong", "get", "namespaces"]);
    assert!(stderr(&wrong).contains("Unauthorized"), "{}", stderr(&wrong));
}

/// KubeVirt's own example VirtualMachines, when ../shared/kubevirt is present.
#[test]
fn kubectl_applies_kubevirts_example_virtual_machines() {
    let examples = common::root().join("../shared/kubevirt/examples");
    if !vmform_schema_check::precondition(examples.is_dir(), &format!("KubeVirt's examples at {}", examples.display())) {
        return;
    }
    let cluster = Cluster::up();
    let mut applied = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(file).unwrap();
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text).filter_map(|d| serde::Deserialize::deserialize(d).ok()).collect();
        if !docs.iter().any(|d| d["kind"] == "VirtualMachine") || docs.iter().any(|d| d["kind"] != "VirtualMachine") {
            continue;
        }
        let out = cluster.kubectl(&["apply", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", file.display(), stderr(&out));
        applied += 1;
    }
    assert!(applied >= 10, "only {applied} example files were VirtualMachines");
    let listed = ok(cluster.kubectl(&["get", "vm", "-o", "name"]));
    assert!(listed.lines().count() >= applied, "{listed}");
}

/// The crash test: four writers create and update objects while the server is killed
/// with SIGKILL; after a restart every acknowledged write is there with (at least) its
/// acknowledged resourceVersion, and new resourceVersions are higher than any before.
#[test]
// The server child is killed and waited for on every path but a failed assertion, which
// ends the test process anyway.
#[allow(clippy::zombie_processes)]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: &Path| -> (Child, String) {
        let _ = std::fs::remove_file(dir.join("server.json"));
        let child = Command::new(env!("CARGO_BIN_EXE_vmform"))
            .args(["up", "--no-runtime", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(dir.join("server.json")) {
                let info: Value = serde_json::from_str(&text).unwrap();
                if info["pid"] == child.id() {
                    return (child, info["address"].as_str().unwrap().to_string());
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (mut server, _) = start(dir.path());
    let kubeconfig = dir.path().join("kubeconfig");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Each writer: (name, acknowledged resourceVersion, acknowledged counter).
    let acknowledged: Vec<Vec<(String, u64, u64)>> = runtime.block_on(async {
        let client = client(&kubeconfig).await;
        let writers = (0..4).map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(client, "default", &lease_resource());
                let mut acked = vec![];
                for i in 0.. {
                    let name = format!("w{w}-{}", i / 3);
                    // Create, then update twice: both kinds of write are in flight at the kill.
                    let body = json!({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": { "name": name, "annotations": { "counter": (i % 3).to_string() } },
                        "spec": { "holderIdentity": format!("writer-{w}") },
                    });
                    let result = if i % 3 == 0 {
                        api.create(&Default::default(), &serde_json::from_value(body).unwrap()).await
                    } else {
                        let patch = json!({ "metadata": { "annotations": { "counter": (i % 3).to_string() } } });
                        api.patch(&name, &Default::default(), &kube::api::Patch::Merge(&patch)).await
                    };
                    match result {
                        Ok(o) => acked.push((name, o.metadata.resource_version.unwrap().parse().unwrap(), i % 3)),
                        Err(_) => return acked,
                    }
                }
                acked
            })
        });
        let handles: Vec<_> = writers.collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.kill().unwrap(); // SIGKILL
        let mut all = vec![];
        for h in handles {
            all.push(h.await.unwrap());
        }
        all
    });
    let _ = server.wait();
    let total: usize = acknowledged.iter().map(Vec::len).sum();
    assert!(total > 20, "only {total} writes were acknowledged before the kill");

    let (mut server, _) = start(dir.path());
    runtime.block_on(async {
        let client = client(&kubeconfig).await;
        let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(client, "default", &lease_resource());
        let mut highest = 0;
        for (name, rv, counter) in acknowledged.iter().flatten().cloned() {
            let live = api.get(&name).await.unwrap_or_else(|e| panic!("acknowledged {name} is lost: {e}"));
            let live_rv: u64 = live.metadata.resource_version.clone().unwrap().parse().unwrap();
            assert!(live_rv >= rv, "{name}: resourceVersion went back from {rv} to {live_rv}");
            let live_counter: u64 = live.metadata.annotations.as_ref().unwrap()["counter"].parse().unwrap();
            if live_rv == rv {
                assert_eq!(live_counter, counter, "{name} at {rv}");
            }
            highest = highest.max(live_rv);
        }
        let fresh = api
            .create(
                &Default::default(),
                &serde_json::from_value(json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": { "name": "after-restart" } })).unwrap(),
            )
            .await
            .unwrap();
        let fresh_rv: u64 = fresh.metadata.resource_version.unwrap().parse().unwrap();
        assert!(fresh_rv > highest, "a new write got {fresh_rv}, not above {highest}");
    });
    server.kill().unwrap();
    let _ = server.wait();
}

fn lease_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(&kube::api::GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"), "leases")
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let wanted = vmform_cluster::TargetArgs { kubeconfig: Some(kubeconfig.to_path_buf()), ..Default::default() };
    vmform_cluster::client(&wanted).await.unwrap().client
}

#[test]
fn a_server_that_cannot_start_in_the_background_says_why() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = vmform(&dir, &["up", "--detach", "--no-runtime", "--listen", &addr]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("the server exited") && err.contains(&format!("cannot listen on {addr}")), "{err}");
    // Nothing is left claiming to run.
    assert_eq!(code(&vmform(&dir, &["status"])), 1);
}

#[test]
fn malformed_apply_bodies_are_refused_and_change_nothing() {
    let cluster = Cluster::up();
    ok(cluster.kubectl_stdin(&["apply", "--server-side", "-f", "-"], VM));
    let before = ok(cluster.kubectl(&["get", "vm", "web", "-o", "jsonpath={.metadata.resourceVersion}"]));
    let token = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
    let token = token.lines().find_map(|l| l.trim().strip_prefix("token: ")).unwrap().to_string();
    let address = {
        let text = std::fs::read_to_string(cluster.path().join("server.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()["address"].as_str().unwrap().to_string()
    };
    // kubectl refuses bad YAML before sending it; a raw client does not.
    for (body, content_type) in [
        ("spec: [unclosed", "application/apply-patch+yaml"),
        ("{\"spec\": ", "application/merge-patch+json"),
        ("[{\"op\": \"jump\"}]", "application/json-patch+json"),
    ] {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(cluster.path().join("ca.crt"))
            .args(["-X", "PATCH", "-H", &format!("Authorization: Bearer {token}"), "-H", &format!("Content-Type: {content_type}")])
            .args(["--data-binary", body])
            .arg(format!("{address}/apis/kubevirt.io/v1/namespaces/default/virtualmachines/web?fieldManager=raw"))
            .output()
            .expect("curl runs");
        let status: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stdout(&out)));
        assert_eq!((status["kind"].as_str(), status["code"].as_u64()), (Some("Status"), Some(400)), "{content_type}: {status}");
    }
    let after = ok(cluster.kubectl(&["get", "vm", "web", "-o", "jsonpath={.metadata.resourceVersion}"]));
    assert_eq!(before, after);
}

/// kubectl's typed create commands send protobuf: Namespace and ConfigMap are read.
#[test]
fn kubectl_create_configmap_sends_protobuf_and_works() {
    let cluster = Cluster::up();
    let binary = cluster.path().join("blob.bin");
    std::fs::write(&binary, [0u8, 159, 146, 150, 255]).unwrap();
    let from_file = format!("--from-file=blob={}", binary.display());
    ok(cluster.kubectl(&["create", "configmap", "settings", "--from-literal=mode=fast", &from_file]));
    let object: Value = serde_json::from_str(&ok(cluster.kubectl(&["get", "configmap", "settings", "-o", "json"]))).unwrap();
    assert_eq!(object["data"]["mode"], "fast");
    assert_eq!(object["binaryData"]["blob"], "AJ+Slv8=", "bytes round-trip as base64");
}
