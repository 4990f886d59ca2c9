//! `vmform plan`, `apply`, `destroy` and `show` end to end: the `vmform` binary against a
//! local control plane the test starts, with kubectl playing the other people who touch
//! the cluster.

mod common;

use common::{code, stderr, stdout};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A local control plane in a fresh data dir, and a project directory of specs.
struct World {
    data: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let data = tempfile::tempdir().unwrap();
        let out = run(&["up", "--detach", "--no-runtime", "--listen", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let project = tempfile::Builder::new().prefix("shop").tempdir().unwrap();
        World { data, project }
    }
    fn kubeconfig(&self) -> PathBuf {
        self.data.path().join("kubeconfig")
    }
    fn write(&self, spec: &str) {
        std::fs::write(self.project.path().join("vms.kdl"), spec).unwrap();
    }
    /// Run vmform with the project's path and the test cluster's kubeconfig.
    fn vmform(&self, args: &[&str]) -> Output {
        let kubeconfig = self.kubeconfig();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
        let applies_a_saved_plan = args.first() == Some(&"apply") && args.iter().any(|a| a.ends_with(".plan"));
        if args.first() != Some(&"show") && !applies_a_saved_plan {
            all.push(self.project.path().to_str().unwrap());
        }
        run(&all)
    }
    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl").arg("--kubeconfig").arg(self.kubeconfig()).args(args).output().expect("kubectl runs")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        run(&["down", "--data-dir", self.data.path().to_str().unwrap()]);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmform")).args(args).stdin(Stdio::null()).output().expect("run vmform")
}

fn spec(memory: &str, labels: &str, data_disk: bool, extra_vm: bool) -> String {
    let data = if data_disk { "    disk \"data\" { volume size=\"10Gi\" storage-class=\"ssd\" access-mode=\"ReadWriteMany\" }\n" } else { "" };
    let mut s = format!(
        "vm \"web\" {{\n    namespace \"shop\"\n    labels {labels}\n    run-strategy \"halted\"\n    cpu 1\n    memory \"{memory}\"\n    disk \"root\" {{ image \"quay.io/containerdisks/fedora:41\"; boot-order 1 }}\n{data}    network \"default\" masquerade=#true\n}}\n"
    );
    if extra_vm {
        s.push_str("vm \"worker\" {\n    namespace \"shop\"\n    run-strategy \"halted\"\n    memory \"1Gi\"\n    disk \"root\" { image \"quay.io/containerdisks/fedora:41\" }\n}\n");
    }
    s
}

fn applied(o: &Output) -> String {
    assert_eq!(code(o), 0, "apply failed: {}{}", stdout(o), stderr(o));
    stdout(o)
}

#[test]
fn apply_then_plan_shows_no_changes_and_effects_are_classified() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", true, true));
    let first = applied(&w.vmform(&["apply", "--auto-approve"]));
    assert!(first.contains("+ namespace shop") && first.contains("2 added"), "{first}");
    let again = w.vmform(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}{}", stdout(&again), stderr(&again));
    assert!(stdout(&again).contains("No changes."), "{}", stdout(&again));

    // A memory change needs a restart; a label change does nothing to the guest.
    w.write(&spec("2Gi", "app=\"web\" tier=\"front\"", true, true));
    let plan = w.vmform(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&plan), 2);
    let text = stdout(&plan);
    assert!(text.contains("restart") && text.contains("memory"), "{text}");
    assert!(text.contains("labels.tier") && text.contains("[none]"), "{text}");
    applied(&w.vmform(&["apply", "--auto-approve"]));
    let live = w.kubectl(&["get", "vm", "-n", "shop", "web", "-o", "jsonpath={.spec.template.spec.domain.memory.guest}"]);
    assert_eq!(stdout(&live), "2Gi");

    // Removing a data volume loses data: refused without --allow-data-loss, and nothing is written.
    w.write(&spec("2Gi", "app=\"web\" tier=\"front\"", false, true));
    let refused = w.vmform(&["apply", "--auto-approve"]);
    assert_eq!(code(&refused), 1);
    assert!(stderr(&refused).contains("--allow-data-loss"), "{}", stderr(&refused));
    let still = w.kubectl(&["get", "vm", "-n", "shop", "web", "-o", "jsonpath={.spec.dataVolumeTemplates[0].metadata.name}"]);
    assert!(!stdout(&still).is_empty(), "the data volume is still there");
    applied(&w.vmform(&["apply", "--auto-approve", "--allow-data-loss"]));

    // A VM removed from the specs is pruned.
    w.write(&spec("2Gi", "app=\"web\" tier=\"front\"", false, false));
    let pruned = applied(&w.vmform(&["apply", "--auto-approve"]));
    assert!(pruned.contains("1 destroyed"), "{pruned}");
    assert!(!w.kubectl(&["get", "vm", "-n", "shop", "worker"]).status.success());
}

#[test]
fn objects_outside_the_inventory_are_never_touched() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, false));
    applied(&w.vmform(&["apply", "--auto-approve"]));
    // Someone else's VM in the same namespace, created with kubectl.
    let theirs = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: vm-cirros\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        devices: {}\n        memory: { guest: 128Mi }\n";
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(w.kubeconfig())
        .args(["apply", "-n", "shop", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), theirs.as_bytes()).unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let plan = w.vmform(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&plan), 0, "the foreign VM is not pruned: {}", stdout(&plan));
    // A spec that names it is refused.
    let mut specs = spec("1Gi", "app=\"web\"", false, false);
    specs.push_str("vm \"vm-cirros\" {\n    namespace \"shop\"\n    run-strategy \"halted\"\n    memory \"1Gi\"\n    disk \"root\" { image \"quay.io/containerdisks/fedora:41\" }\n}\n");
    w.write(&specs);
    let refused = w.vmform(&["plan"]);
    assert_eq!(code(&refused), 1);
    assert!(stderr(&refused).contains("is not managed by project"), "{}", stderr(&refused));
    assert!(w.kubectl(&["get", "vm", "-n", "shop", "vm-cirros"]).status.success());
}

#[test]
fn a_saved_plan_applies_exactly_and_is_refused_once_stale() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, false));
    applied(&w.vmform(&["apply", "--auto-approve"]));
    w.write(&spec("2Gi", "app=\"web\"", false, false));
    let file = w.project.path().join("change.plan");
    let planned = w.vmform(&["plan", "--out", file.to_str().unwrap()]);
    assert_eq!(code(&planned), 0, "{}", stderr(&planned));
    let shown = run(&["show", file.to_str().unwrap()]);
    assert!(stdout(&shown).contains("memory"), "{}", stdout(&shown));

    // Someone changes the VM after the plan: the plan is refused, naming it.
    assert!(w.kubectl(&["label", "vm", "-n", "shop", "web", "touched=yes"]).status.success());
    let stale = w.vmform(&["apply", file.to_str().unwrap()]);
    assert_eq!(code(&stale), 1);
    assert!(stderr(&stale).contains("stale") && stderr(&stale).contains("shop/web"), "{}", stderr(&stale));
    let memory = w.kubectl(&["get", "vm", "-n", "shop", "web", "-o", "jsonpath={.spec.template.spec.domain.memory.guest}"]);
    assert_eq!(stdout(&memory), "1Gi", "nothing of the stale plan was applied");

    // A fresh plan applies, and shows the kubectl label as drift? No: labels vmform does not
    // set are not compared. The fresh plan applies without a prompt.
    let fresh = w.vmform(&["plan", "--out", file.to_str().unwrap()]);
    assert_eq!(code(&fresh), 0);
    applied(&w.vmform(&["apply", file.to_str().unwrap()]));
    let memory = w.kubectl(&["get", "vm", "-n", "shop", "web", "-o", "jsonpath={.spec.template.spec.domain.memory.guest}"]);
    assert_eq!(stdout(&memory), "2Gi");

    // A corrupt plan file is refused plainly.
    std::fs::write(&file, "{ not a plan").unwrap();
    let corrupt = w.vmform(&["apply", file.to_str().unwrap()]);
    assert_eq!(code(&corrupt), 1);
    assert!(stderr(&corrupt).contains("is not a vmform plan"), "{}", stderr(&corrupt));
}

#[test]
fn changes_made_outside_vmform_show_as_drift_and_are_set_back() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, false));
    applied(&w.vmform(&["apply", "--auto-approve"]));
    let patch = r#"{"spec":{"runStrategy":"Always"}}"#;
    let edited = w.kubectl(&["patch", "vm", "-n", "shop", "web", "--type", "merge", "-p", patch, "--field-manager", "kubectl-edit"]);
    assert!(edited.status.success(), "{}", stderr(&edited));
    let plan = w.vmform(&["plan"]);
    let text = stdout(&plan);
    assert!(text.contains("Drift") && text.contains("spec.runStrategy") && text.contains("kubectl-edit"), "{text}");
    let refresh = w.vmform(&["plan", "--refresh-only", "--detailed-exitcode"]);
    assert!(stdout(&refresh).contains("kubectl-edit"), "{}", stdout(&refresh));
    applied(&w.vmform(&["apply", "--auto-approve", "--force-conflicts"]));
    let strategy = w.kubectl(&["get", "vm", "-n", "shop", "web", "-o", "jsonpath={.spec.runStrategy}"]);
    assert_eq!(stdout(&strategy), "Halted");
}

/// Without a terminal the answer is read from stdin; here it ends before one.
#[test]
fn with_no_answer_before_the_end_of_input_apply_applies_nothing() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, false));
    let refused = w.vmform(&["apply"]);
    assert_eq!(code(&refused), 1);
    assert!(stderr(&refused).contains("--auto-approve"), "{}", stderr(&refused));
    assert!(!w.kubectl(&["get", "vm", "-n", "shop", "web"]).status.success(), "nothing was applied");
}

#[test]
fn concurrent_applies_serialise_on_the_project_lease() {
    let w = World::new();
    let mut specs = String::new();
    for i in 0..30 {
        specs.push_str(&format!(
            "vm \"vm-{i}\" {{\n    namespace \"shop\"\n    run-strategy \"halted\"\n    memory \"1Gi\"\n    disk \"root\" {{ image \"quay.io/containerdisks/fedora:41\" }}\n}}\n"
        ));
    }
    w.write(&specs);
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_vmform"))
            .args(["apply", "--auto-approve", "--kubeconfig", w.kubeconfig().to_str().unwrap(), w.project.path().to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    // Both plans saw no VMs; the one that got the lease second finds its plan stale and
    // says so instead of creating twice.
    let outcomes = [code(&a), code(&b)];
    assert!(outcomes.contains(&0), "{}{}{}{}", stdout(&a), stderr(&a), stdout(&b), stderr(&b));
    for o in [&a, &b] {
        if code(o) != 0 {
            assert!(stderr(o).contains("stale"), "{}", stderr(o));
        }
    }
    let listed = w.kubectl(&["get", "vm", "-n", "shop", "-o", "name"]);
    assert_eq!(stdout(&listed).lines().count(), 30);
    let again = w.vmform(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", stdout(&again));
}

#[test]
fn an_apply_killed_half_way_converges_on_the_next_one() {
    let w = World::new();
    let mut specs = String::new();
    for i in 0..200 {
        specs.push_str(&format!(
            "vm \"vm-{i}\" {{\n    namespace \"shop\"\n    run-strategy \"halted\"\n    memory \"1Gi\"\n    disk \"root\" {{ image \"quay.io/containerdisks/fedora:41\" }}\n}}\n"
        ));
    }
    w.write(&specs);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmform"))
        .args(["apply", "--auto-approve", "--kubeconfig", w.kubeconfig().to_str().unwrap(), w.project.path().to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has written some VMs.
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while seen.matches("created").count() < 20 {
        let n = std::io::Read::read(&mut out, &mut buf).unwrap();
        assert!(n > 0, "the apply ended before writing 20 VMs: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let partial = stdout(&w.kubectl(&["get", "vm", "-n", "shop", "-o", "name"])).lines().count();
    assert!(partial > 0 && partial < 200, "{partial} VMs after the kill");
    // The killed apply's lease is still held: the next apply waits for it to expire.
    let next = w.vmform(&["apply", "--auto-approve", "--lock-timeout", "60s"]);
    assert_eq!(code(&next), 0, "{}{}", stdout(&next), stderr(&next));
    assert_eq!(stdout(&w.kubectl(&["get", "vm", "-n", "shop", "-o", "name"])).lines().count(), 200);
    let again = w.vmform(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&again), 0);
}

#[test]
fn destroy_removes_the_project_but_respects_prevent_destroy() {
    let w = World::new();
    let mut specs = spec("1Gi", "app=\"web\"", false, false);
    specs.push_str("vm \"db\" {\n    namespace \"shop\"\n    run-strategy \"halted\"\n    memory \"1Gi\"\n    disk \"root\" { image \"quay.io/containerdisks/fedora:41\" }\n    disk \"data\" { volume size=\"10Gi\" }\n    lifecycle prevent-destroy=#true\n}\n");
    w.write(&specs);
    applied(&w.vmform(&["apply", "--auto-approve"]));
    let refused = w.vmform(&["destroy", "--auto-approve", "--allow-data-loss"]);
    assert_eq!(code(&refused), 1);
    // The refusal names the rule, the change, where the rule is written and how to lift it.
    let why = stderr(&refused);
    assert!(why.contains("lifecycle prevent-destroy=#true forbids this plan: shop/db would be deleted"), "{why}");
    assert!(why.contains("shop/db: `lifecycle prevent-destroy=#true` is set at ") && why.contains("vms.kdl:16:"), "{why}");
    assert!(why.contains("help: to lift the rule, remove `prevent-destroy=#true` there"), "{why}");
    assert!(!why.contains("lose data"), "{why}");
    assert!(w.kubectl(&["get", "vm", "-n", "shop", "web"]).status.success(), "nothing was destroyed");
    // Removing the protected VM from the specs is refused as well; the live VM says why.
    w.write(&spec("1Gi", "app=\"web\"", false, false));
    let db_gone = w.vmform(&["apply", "--auto-approve", "--allow-data-loss"]);
    assert_eq!(code(&db_gone), 1);
    assert!(stderr(&db_gone).contains("shop/db: its live VM carries vmform.io/prevent-destroy=true"), "{}", stderr(&db_gone));
    assert!(w.kubectl(&["get", "vm", "-n", "shop", "db"]).status.success());
}

#[test]
fn destroy_deletes_everything_the_project_owns() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, true));
    applied(&w.vmform(&["apply", "--auto-approve"]));
    let destroyed = applied(&w.vmform(&["destroy", "--auto-approve"]));
    assert!(destroyed.contains("2 destroyed"), "{destroyed}");
    assert_eq!(stdout(&w.kubectl(&["get", "vm", "-n", "shop", "-o", "name"])).lines().count(), 0);
    let shown = run(&["show", "--project", w.project.path().file_name().unwrap().to_str().unwrap(), "--kubeconfig", w.kubeconfig().to_str().unwrap()]);
    assert!(stdout(&shown).contains(": 0 VMs"), "{}", stdout(&shown));
}

/// What apply created, destroy removes once empty; a namespace that was there before stays.
#[test]
fn destroy_removes_the_namespaces_apply_created_and_only_those() {
    let w = World::new();
    let made = w.kubectl(&["create", "namespace", "ours-before"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let mut specs = spec("1Gi", "app=\"web\"", false, false);
    specs.push_str("vm \"old\" {\n    namespace \"ours-before\"\n    run-strategy \"halted\"\n    memory \"1Gi\"\n}\n");
    w.write(&specs);
    let out = applied(&w.vmform(&["apply", "--auto-approve"]));
    assert!(out.contains("namespace/shop: created") && !out.contains("namespace/ours-before: created"), "{out}");
    let parent = stdout(&w.kubectl(&["get", "configmap", "-n", "default", "-l", "applyset.kubernetes.io/id", "-o", "jsonpath={.items[*].metadata.annotations.vmform\\.io/created-namespaces}"]));
    assert_eq!(parent, "shop", "the ApplySet parent records what apply created");
    // Something of someone else's in a namespace apply created keeps it there.
    let foreign = w.kubectl(&["create", "configmap", "notes", "-n", "shop", "--from-literal=a=b"]);
    assert!(foreign.status.success(), "{}", stderr(&foreign));
    applied(&w.vmform(&["destroy", "--auto-approve"]));
    assert!(w.kubectl(&["get", "namespace", "shop"]).status.success(), "a namespace with someone else's object in it stays");
    let removed = w.kubectl(&["delete", "configmap", "notes", "-n", "shop"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    // Apply again, then destroy: now the namespace it created is empty and goes.
    applied(&w.vmform(&["apply", "--auto-approve"]));
    let out = applied(&w.vmform(&["destroy", "--auto-approve"]));
    assert!(out.contains("namespace/shop: deleted (vmform created it, and it is empty)"), "{out}");
    assert!(!w.kubectl(&["get", "namespace", "shop"]).status.success(), "the namespace apply created is gone");
    assert!(w.kubectl(&["get", "namespace", "ours-before"]).status.success(), "a namespace that existed before is never removed");
}

#[test]
fn an_unreachable_cluster_is_a_plain_error() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:9\", insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: x}}]\ncontexts: [{name: nowhere, context: {cluster: c, user: u}}]\ncurrent-context: nowhere\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("vms.kdl"), spec("1Gi", "app=\"web\"", false, false)).unwrap();
    let out = run(&["plan", "--kubeconfig", kubeconfig.to_str().unwrap(), dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("cannot be reached") && stderr(&out).contains("127.0.0.1:9"), "{}", stderr(&out));
}

#[test]
fn prevent_destroy_added_later_reaches_the_cluster_and_destroy_honours_targets() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, true));
    applied(&w.vmform(&["apply", "--auto-approve"]));
    // Protecting an applied VM is a change the next apply makes.
    let protected = spec("1Gi", "app=\"web\"", false, true).replacen("    network", "    lifecycle prevent-destroy=#true\n    network", 1);
    w.write(&protected);
    let plan = w.vmform(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&plan), 2, "{}", stdout(&plan));
    assert!(stdout(&plan).contains("prevent-destroy"), "{}", stdout(&plan));
    applied(&w.vmform(&["apply", "--auto-approve"]));
    let refused = w.vmform(&["destroy", "--auto-approve", "--allow-data-loss"]);
    assert_eq!(code(&refused), 1, "{}", stdout(&refused));
    assert!(stderr(&refused).contains("prevent-destroy"), "{}", stderr(&refused));
    // --target limits a destroy to the named VMs.
    let one = applied(&w.vmform(&["destroy", "--auto-approve", "--target", "worker"]));
    assert!(one.contains("1 destroyed"), "{one}");
    assert!(w.kubectl(&["get", "vm", "-n", "shop", "web"]).status.success());
    assert!(!w.kubectl(&["get", "vm", "-n", "shop", "worker"]).status.success());
}

#[test]
fn a_plan_saved_under_a_bare_file_name_is_written_private() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, false));
    let out = Command::new(env!("CARGO_BIN_EXE_vmform"))
        .args(["plan", "--out", "bare.plan", "--kubeconfig", w.kubeconfig().to_str().unwrap(), "."])
        .current_dir(w.project.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mode = std::fs::metadata(w.project.path().join("bare.plan")).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
}

#[test]
fn wait_returns_once_vms_report_their_state_and_times_out_with_a_list_otherwise() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, false));
    // No runtime sets the VM's status here: the wait times out and says on what.
    let timed_out = w.vmform(&["apply", "--auto-approve", "--wait", "--timeout", "2s"]);
    assert_eq!(code(&timed_out), 1);
    assert!(stderr(&timed_out).contains("shop/web to be Stopped"), "{}", stderr(&timed_out));
    // When something reports the state (here kubectl, standing in for KubeVirt's controller),
    // the wait ends.
    w.write(&spec("1Gi", "app=\"web\" tier=\"front\"", false, false));
    let apply = Command::new(env!("CARGO_BIN_EXE_vmform"))
        .args(["apply", "--auto-approve", "--wait", "--timeout", "60s", "--kubeconfig", w.kubeconfig().to_str().unwrap(), w.project.path().to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let status = w.kubectl(&["patch", "vm", "-n", "shop", "web", "--subresource=status", "--type", "merge", "-p", r#"{"status":{"printableStatus":"Stopped"}}"#]);
    assert!(status.status.success(), "{}", stderr(&status));
    let done = apply.wait_with_output().unwrap();
    assert_eq!(code(&done), 0, "{}{}", stdout(&done), stderr(&done));
    assert!(stdout(&done).contains("virtualmachine/web (shop): Stopped"), "{}", stdout(&done));
}

#[test]
fn wrong_credentials_and_plans_for_elsewhere_are_refused_plainly() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, false));
    let config = std::fs::read_to_string(w.kubeconfig()).unwrap();
    let token = config.lines().find_map(|l| l.trim().strip_prefix("token: ")).unwrap();
    let wrong = w.project.path().join("wrong-kubeconfig");
    std::fs::write(&wrong, config.replace(token, "vmform-not-the-token")).unwrap();
    let out = run(&["plan", "--kubeconfig", wrong.to_str().unwrap(), w.project.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("refused the credentials") && stderr(&out).contains("401"), "{}", stderr(&out));

    let file = w.project.path().join("p.plan");
    assert_eq!(code(&w.vmform(&["plan", "--out", file.to_str().unwrap()])), 0);
    let other = run(&["apply", "--project", "someone-else", "--kubeconfig", w.kubeconfig().to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(code(&other), 1);
    assert!(stderr(&other).contains("the plan is for project"), "{}", stderr(&other));
    // A plan made against one cluster is refused by another.
    let second = World::new();
    let elsewhere = run(&["apply", "--kubeconfig", second.kubeconfig().to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(code(&elsewhere), 1);
    assert!(stderr(&elsewhere).contains("the plan is for the cluster at"), "{}", stderr(&elsewhere));
    assert!(!second.kubectl(&["get", "vm", "-n", "shop", "web"]).status.success());
}

/// The prompt on a real terminal (a pty from util-linux's `script`): end of input and any
/// answer but `yes` apply nothing.
#[test]
fn an_interrupted_or_declined_prompt_applies_nothing() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, false));
    let command = format!(
        "{} apply --kubeconfig {} {}",
        env!("CARGO_BIN_EXE_vmform"),
        w.kubeconfig().display(),
        w.project.path().display()
    );
    for (input, expected) in [("\u{4}", "the prompt was interrupted"), ("no\n", "Apply cancelled.")] {
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(2));
        std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(text.contains("Enter a value:") && text.contains(expected), "{text}");
        assert_eq!(code(&out), 1, "{text}");
        assert!(!w.kubectl(&["get", "vm", "-n", "shop", "web"]).status.success(), "nothing was applied");
    }
}

/// As Terraform does: with no terminal, the answer is read from standard input.
#[test]
fn an_answer_piped_into_apply_and_destroy_is_read() {
    let w = World::new();
    w.write(&spec("1Gi", "app=\"web\"", false, false));
    let piped = |args: &[&str], input: &str| {
        let kubeconfig = w.kubeconfig();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmform"))
            .args(args)
            .args(["--kubeconfig", kubeconfig.to_str().unwrap(), w.project.path().to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    // The end of input before an answer applies nothing.
    let out = piped(&["apply"], "");
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(!w.kubectl(&["get", "vm", "-n", "shop", "web"]).status.success(), "nothing was applied");
    let out = piped(&["apply"], "yes\n");
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(w.kubectl(&["get", "vm", "-n", "shop", "web"]).status.success(), "applied");
    let out = piped(&["destroy"], "yes\n");
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(!w.kubectl(&["get", "vm", "-n", "shop", "web"]).status.success(), "destroyed");
}

fn run_strategy(w: &World) -> String {
    stdout(&w.kubectl(&["get", "vm", "-n", "shop", "web", "-o", "jsonpath={.spec.runStrategy}"]))
}

/// A VM action (start, stop) is operational state: plan says what it did and what apply
/// does about it, and apply makes no conflict of it (specs/change-effects.md, "VM actions").
#[test]
fn stop_then_apply_keeps_the_vm_stopped_unless_told_to_revert() {
    let w = World::new();
    let always = spec("1Gi", "app=\"web\"", false, false).replace("run-strategy \"halted\"", "run-strategy \"always\"");
    w.write(&always);
    applied(&w.vmform(&["apply", "--auto-approve"]));
    let stop = run(&["vm", "stop", "web", "-n", "shop", "--kubeconfig", w.kubeconfig().to_str().unwrap()]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    assert_eq!(run_strategy(&w), "Halted");

    // Nothing to change, and the plan says why the VM is stopped.
    let plan = w.vmform(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&plan), 0, "{}{}", stdout(&plan), stderr(&plan));
    let text = stdout(&plan);
    assert!(text.contains("shop/web: stopped by a VM action at 20") && text.contains("(virt-api); apply keeps it stopped"), "{text}");
    assert!(!text.contains("Drift"), "a VM action is not drift: {text}");
    // A change of something else applies without a conflict, and keeps it stopped.
    w.write(&always.replace("memory \"1Gi\"", "memory \"2Gi\""));
    let out = applied(&w.vmform(&["apply", "--auto-approve"]));
    assert!(out.contains("apply keeps it stopped"), "{out}");
    assert_eq!(run_strategy(&w), "Halted");
    let memory = w.kubectl(&["get", "vm", "-n", "shop", "web", "-o", "jsonpath={.spec.template.spec.domain.memory.guest}"]);
    assert_eq!(stdout(&memory), "2Gi");

    // For one run: revert. The specs' run strategy is set again, and vmform owns it again.
    let plan = stdout(&w.vmform(&["plan", "--vm-actions", "revert"]));
    assert!(plan.contains("apply starts it again") && plan.contains("spec.runStrategy"), "{plan}");
    applied(&w.vmform(&["apply", "--auto-approve", "--vm-actions", "revert"]));
    assert_eq!(run_strategy(&w), "Always");
    let again = w.vmform(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", stdout(&again));
    assert!(!stdout(&again).contains("VM action"), "{}", stdout(&again));

    // Per VM: lifecycle vm-actions="revert" makes every apply revert.
    let reverting = always.replace("    cpu 1\n", "    cpu 1\n    lifecycle vm-actions=\"revert\"\n");
    w.write(&reverting);
    applied(&w.vmform(&["apply", "--auto-approve"]));
    let stop = run(&["vm", "stop", "web", "-n", "shop", "--kubeconfig", w.kubeconfig().to_str().unwrap()]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    let out = applied(&w.vmform(&["apply", "--auto-approve"]));
    assert!(out.contains("apply starts it again"), "{out}");
    assert_eq!(run_strategy(&w), "Always");
}

#[test]
fn start_then_apply_keeps_it_running_and_a_changed_spec_still_wins() {
    let w = World::new();
    let halted = spec("1Gi", "app=\"web\"", false, false);
    w.write(&halted);
    applied(&w.vmform(&["apply", "--auto-approve"]));
    let start = run(&["vm", "start", "web", "-n", "shop", "--kubeconfig", w.kubeconfig().to_str().unwrap()]);
    assert_eq!(code(&start), 0, "{}", stderr(&start));
    assert_eq!(run_strategy(&w), "Always");
    let text = stdout(&w.vmform(&["plan"]));
    assert!(text.contains("shop/web: started by a VM action at") && text.contains("apply keeps it running"), "{text}");
    applied(&w.vmform(&["apply", "--auto-approve"]));
    assert_eq!(run_strategy(&w), "Always");
    // The specs themselves now say manual: that is a change of the specs, and apply makes it.
    w.write(&halted.replace("run-strategy \"halted\"", "run-strategy \"manual\""));
    let text = stdout(&w.vmform(&["plan"]));
    assert!(text.contains("the specs now say Manual: apply sets it"), "{text}");
    applied(&w.vmform(&["apply", "--auto-approve"]));
    assert_eq!(run_strategy(&w), "Manual");
}

#[test]
fn restart_then_apply_changes_nothing() {
    let w = World::new();
    let always = spec("1Gi", "app=\"web\"", false, false).replace("run-strategy \"halted\"", "run-strategy \"always\"");
    w.write(&always);
    applied(&w.vmform(&["apply", "--auto-approve"]));
    // No runtime here: an instance stands in for the running guest a restart needs.
    let vmi = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: { name: web, namespace: shop }\nspec: { domain: { devices: {} } }\n";
    let mut kubectl = Command::new("kubectl").arg("--kubeconfig").arg(w.kubeconfig()).args(["apply", "-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    use std::io::Write as _;
    kubectl.stdin.take().unwrap().write_all(vmi.as_bytes()).unwrap();
    assert!(kubectl.wait_with_output().unwrap().status.success());
    let restart = run(&["vm", "restart", "web", "-n", "shop", "--kubeconfig", w.kubeconfig().to_str().unwrap()]);
    assert_eq!(code(&restart), 0, "{}", stderr(&restart));
    let plan = w.vmform(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&plan), 0, "{}{}", stdout(&plan), stderr(&plan));
    assert!(stdout(&plan).contains("No changes.") && !stdout(&plan).contains("VM action"), "{}", stdout(&plan));
}
