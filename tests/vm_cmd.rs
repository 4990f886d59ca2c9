//! `vmform vm start|stop|restart|console|ports`: the real binary against the local control
//! plane's API server. The server runs in this process with no controller, so what the
//! commands do to the VM objects (KubeVirt's semantics, `specs/kubevirt-semantics.md`) is
//! exactly what is left to assert; the VMIs that `console` and `ports` read are made by
//! hand, with the annotations the local runtime's handler writes
//! (`specs/runtime-contract.md`).

mod common;

use common::{code, stderr, stdout};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use vmform_apiserver::local::{self, LocalServer, UpConfig};

struct Cluster {
    server: LocalServer,
    client: Client,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn up() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let server = local::up(UpConfig { data_dir: dir.path().join("data"), listen: "127.0.0.1:0".parse().unwrap() }).await.unwrap();
        let client = vmform_cluster::client(&vmform_cluster::TargetArgs::local(&server.data_dir)).await.unwrap().client;
        Cluster { server, client, dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.server.data_dir.kubeconfig()
    }

    /// `vmform ARGS --kubeconfig K`, off this runtime's threads (the server answers it).
    async fn vmform(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vmform"));
        command.args(args).arg("--kubeconfig").arg(self.kubeconfig());
        command
    }

    fn api(&self, kind: &str, plural: &str, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubevirt.io", "v1", kind), plural))
    }

    fn vms(&self, namespace: &str) -> Api<DynamicObject> {
        self.api("VirtualMachine", "virtualmachines", namespace)
    }

    fn vmis(&self) -> Api<DynamicObject> {
        self.api("VirtualMachineInstance", "virtualmachineinstances", "default")
    }

    async fn create_vm(&self, namespace: &str, name: &str, strategy: &str) {
        let vm = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": { "name": name },
            "spec": { "runStrategy": strategy, "template": { "spec": { "domain": { "devices": {}, "memory": { "guest": "128Mi" } } } } },
        });
        self.vms(namespace).create(&PostParams::default(), &serde_json::from_value(vm).unwrap()).await.unwrap();
    }

    /// A Running VMI with these annotations, as the handler leaves one; returns its uid.
    async fn create_vmi(&self, name: &str, annotations: Value) -> String {
        let vmi = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": { "name": name, "annotations": annotations },
            "spec": { "domain": { "devices": {}, "memory": { "guest": "128Mi" } }, "terminationGracePeriodSeconds": 30 },
        });
        let created = self.vmis().create(&PostParams::default(), &serde_json::from_value(vmi).unwrap()).await.unwrap();
        self.vmis().patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": { "phase": "Running" } }))).await.unwrap();
        created.metadata.uid.unwrap()
    }

    async fn vm(&self, namespace: &str, name: &str) -> Value {
        serde_json::to_value(self.vms(namespace).get(name).await.unwrap()).unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert_eq!(code(out), 0, "{}{}", stdout(out), stderr(out));
    stdout(out)
}

#[tokio::test]
async fn start_stop_and_restart_do_what_kubevirt_does() {
    let c = Cluster::up().await;
    c.create_vm("default", "web", "Halted").await;

    assert_eq!(ok(&c.vmform(&["vm", "start", "web", "--dry-run"]).await), "default/web: start accepted (dry run: nothing changed)\n");
    assert_eq!(c.vm("default", "web").await["spec"]["runStrategy"], "Halted");
    assert_eq!(ok(&c.vmform(&["vm", "start", "web"]).await), "default/web: start requested\n");
    assert_eq!(c.vm("default", "web").await["spec"]["runStrategy"], "Always");

    // KubeVirt's refusal, as the cluster words it, and exit 1.
    let out = c.vmform(&["vm", "start", "web"]).await;
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "error: cannot start default/web: Operation cannot be fulfilled on virtualmachine.kubevirt.io \"web\": Always does not support manual start requests\n"
    );
    assert_eq!(ok(&c.vmform(&["vm", "stop", "web", "--force"]).await), "default/web: stop requested\n");
    assert_eq!(c.vm("default", "web").await["spec"]["runStrategy"], "Halted");
    let out = c.vmform(&["vm", "restart", "web"]).await;
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("RunStategy Halted does not support manual restart requests"), "{}", stderr(&out));

    // A Manual VM with a running VMI: stop and restart go to the controller as requests.
    c.create_vm("default", "m", "Manual").await;
    let uid = c.create_vmi("m", json!({})).await;
    ok(&c.vmform(&["vm", "stop", "m", "--grace-period", "7"]).await);
    let vm = c.vm("default", "m").await;
    assert_eq!(vm["status"]["stateChangeRequests"], json!([{ "action": "Stop", "uid": uid }]));
    let vmi = serde_json::to_value(c.vmis().get("m").await.unwrap()).unwrap();
    assert_eq!(vmi["spec"]["terminationGracePeriodSeconds"], 7);
    c.vms("default").patch_status("m", &PatchParams::default(), &Patch::Merge(json!({ "status": { "stateChangeRequests": null } }))).await.unwrap();
    ok(&c.vmform(&["vm", "restart", "m", "--force"]).await);
    let vm = c.vm("default", "m").await;
    assert_eq!(vm["status"]["stateChangeRequests"], json!([{ "action": "Stop", "uid": uid }, { "action": "Start" }]));

    // Other namespaces with -n; a missing VM is exit 1.
    let namespaces: Api<DynamicObject> = Api::all_with(c.client.clone(), &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Namespace"), "namespaces"));
    namespaces.create(&PostParams::default(), &serde_json::from_value(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop" } })).unwrap()).await.unwrap();
    c.create_vm("shop", "cart", "Always").await;
    assert_eq!(ok(&c.vmform(&["vm", "stop", "cart", "-n", "shop"]).await), "shop/cart: stop requested\n");
    assert_eq!(c.vm("shop", "cart").await["spec"]["runStrategy"], "Halted");
    let out = c.vmform(&["vm", "start", "cart"]).await;
    assert_eq!((code(&out), stderr(&out).as_str()), (1, "error: VM default/cart not found\n"));
    c.server.stop().await;
}

#[tokio::test]
async fn an_unreachable_cluster_exits_1_and_usage_errors_exit_2() {
    let c = Cluster::up().await;
    // A cluster that is not there: a failure, as in every command (README, "Exit codes").
    let kubeconfig = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let address = c.server.address.trim_start_matches("https://").to_string();
    let nowhere = c.dir.path().join("nowhere.yaml");
    std::fs::write(&nowhere, kubeconfig.replace(&address, "127.0.0.1:1")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmform")).args(["vm", "start", "web", "--kubeconfig"]).arg(&nowhere).output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot be reached"), "{}", stderr(&out));
    // Flags that cannot go together, and a missing name.
    assert_eq!(code(&c.vmform(&["vm", "stop", "web", "--force", "--grace-period", "3"]).await), 2);
    assert_eq!(code(&c.vmform(&["vm", "start"]).await), 2);
    c.server.stop().await;
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

#[tokio::test]
async fn console_prints_the_tail_and_follows_the_log_across_a_restart() {
    let c = Cluster::up().await;
    c.create_vm("default", "web", "Always").await;
    let out = c.vmform(&["vm", "console", "web"]).await;
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("VM default/web is not running"), "{}", stderr(&out));

    let first = c.dir.path().join("first-console.log");
    append(&first, "boot\nlogin: \nhello\n");
    c.create_vmi("web", json!({ "vmform.io/console": first.to_str().unwrap() })).await;
    assert_eq!(ok(&c.vmform(&["vm", "console", "web", "--no-follow", "--tail", "2"]).await), "login: \nhello\n");
    assert_eq!(ok(&c.vmform(&["vm", "console", "web", "--no-follow", "--tail", "-1"]).await), "boot\nlogin: \nhello\n");

    let mut follow = c.command(&["vm", "console", "web", "--tail", "1"]);
    let child = follow.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    append(&first, "more output\n");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The VM restarts: a new VMI, with a new console log.
    c.vmis().delete("web", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = c.dir.path().join("second-console.log");
    append(&second, "boot again\n");
    c.create_vmi("web", json!({ "vmform.io/console": second.to_str().unwrap() })).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    append(&second, "and more\n");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Ctrl-C ends it cleanly.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\nmore output\nboot again\nand more\n");
    let notes = stderr(&out);
    assert!(notes.contains("the VirtualMachineInstance is gone") && notes.contains("a new VirtualMachineInstance"), "{notes}");
    c.server.stop().await;
}

#[tokio::test]
async fn ports_lists_what_the_handler_forwards() {
    let c = Cluster::up().await;
    c.create_vm("default", "web", "Always").await;
    let ports = json!([
        { "name": "http", "protocol": "TCP", "port": 80, "hostIP": "127.0.0.1", "hostPort": 40123 },
        { "name": "ssh", "protocol": "TCP", "port": 22, "hostIP": "127.0.0.1", "hostPort": 40124 },
    ]);
    c.create_vmi("web", json!({ "vmform.io/console": "/nonexistent/console.log", "vmform.io/ports": ports.to_string() })).await;
    assert_eq!(
        ok(&c.vmform(&["vm", "ports", "web"]).await),
        "NAME   PROTOCOL   GUEST PORT   HOST\nhttp   TCP        80           127.0.0.1:40123\nssh    TCP        22           127.0.0.1:40124\n"
    );
    // Its console log is not on this machine.
    let out = c.vmform(&["vm", "console", "web"]).await;
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("is not on this machine"), "{}", stderr(&out));

    // A VMI of a cluster that is not the local runtime carries neither annotation.
    c.create_vm("default", "elsewhere", "Always").await;
    c.create_vmi("elsewhere", json!({})).await;
    for command in ["ports", "console"] {
        let out = c.vmform(&["vm", command, "elsewhere"]).await;
        assert_eq!(code(&out), 1, "{command}");
        assert!(stderr(&out).contains("is not vmform's local runtime"), "{}", stderr(&out));
    }
    // The local runtime's VMI without forwarded ports.
    c.create_vm("default", "quiet", "Always").await;
    c.create_vmi("quiet", json!({ "vmform.io/console": "/nonexistent/console.log" })).await;
    assert_eq!(ok(&c.vmform(&["vm", "ports", "quiet"]).await), "default/quiet forwards no ports\n");
    c.server.stop().await;
}
