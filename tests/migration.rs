//! Live migration between the two nodes of `vmform up --nodes 2`, with real guests under
//! TCG: the guest keeps running across the move (its serial counter goes on with the same
//! boot id), it moves back, a migration that cannot finish (cancelled, its target's or its
//! source's launcher killed, its target's libvirtd killed, timed out) leaves it on its source, a source launcher killed
//! during a fast migration leaves it on exactly one node, a source handler killed as a
//! migration starts is replaced and finishes it, and a drain empties a node by each
//! VM's eviction strategy and run strategy, two migrations out of it at a time, keeping the
//! one VM that asks to live-migrate but cannot. `vmform down` must leave nothing behind.
//!
//! These need root (network namespaces, bind mounts); without it they return early. One
//! cluster at a time: a TCG guest takes most of a core.

mod common;

use vmform_schema_check::precondition;
use common::{assert_nothing_left, code, guest_disk, is_root, run, stderr, stdout};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A VM of the test guest. `disk` is the root disk's extra properties (`shared=#true`);
/// `body` goes inside the `vm` node.
fn vm(name: &str, disk_props: &str, body: &str) -> String {
    format!(
        "vm \"{name}\" {{\n    namespace \"mig\"\n    cpu 1\n    memory \"128Mi\"\n    termination-grace \"5s\"\n    disk \"root\" {{\n        host-disk \"{}\" type=\"disk\" {disk_props}\n        bus \"virtio\"\n        read-only\n        boot-order 1\n    }}\n{body}}}\n",
        guest_disk().display()
    )
}

/// Two nodes, `vmform down` on drop, which must leave no process, namespace, veth or mount.
struct Cluster {
    data: tempfile::TempDir,
    project: tempfile::TempDir,
    started: Instant,
}

impl Cluster {
    fn up() -> Cluster {
        let data = tempfile::Builder::new().prefix("vmf").tempdir().unwrap();
        let out = run(&["up", "--detach", "--nodes", "2", "--listen", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        let c = Cluster { data, project: tempfile::tempdir().unwrap(), started: Instant::now() };
        for node in ["local-0", "local-1"] {
            c.wait(&["node", node], "{.status.conditions[?(@.type==\"Ready\")].status}", |s| s == "True", 90);
        }
        c
    }
    fn kubeconfig(&self) -> String {
        self.data.path().join("kubeconfig").display().to_string()
    }
    fn node_dir(&self, node: &str) -> PathBuf {
        self.data.path().join("nodes").join(node)
    }
    fn vmform(&self, args: &[&str]) -> Output {
        let kubeconfig = self.kubeconfig();
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", &kubeconfig]);
        run(&all)
    }
    fn apply(&self, spec: &str) {
        std::fs::write(self.project.path().join("vms.kdl"), spec).unwrap();
        let out = self.vmform(&["apply", "--auto-approve", self.project.path().to_str().unwrap()]);
        assert_eq!(code(&out), 0, "apply: {}{}", stdout(&out), stderr(&out));
    }
    fn kubectl(&self, args: &[&str], input: Option<&str>) -> Output {
        common::kubectl(&self.data.path().join("kubeconfig"), args, input)
    }
    /// `kubectl get WHAT -o jsonpath=PATH` ("" when it fails).
    fn get(&self, what: &[&str], jsonpath: &str) -> String {
        let mut args = vec!["get"];
        args.extend(what);
        let path = format!("jsonpath={jsonpath}");
        args.extend(["-o", &path]);
        let out = self.kubectl(&args, None);
        if out.status.success() { stdout(&out) } else { String::new() }
    }
    fn vmi(&self, name: &str, jsonpath: &str) -> String {
        self.get(&["vmi", name, "-n", "mig"], jsonpath)
    }
    fn wait(&self, what: &[&str], jsonpath: &str, check: impl Fn(&str) -> bool, seconds: u64) -> String {
        let started = Instant::now();
        loop {
            let value = self.get(what, jsonpath);
            if check(&value) {
                return value;
            }
            if started.elapsed() > Duration::from_secs(seconds) {
                panic!("{what:?} {jsonpath} is {value:?} after {seconds} s\n{}", self.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    /// What to show when a wait fails: the objects and the handlers' logs.
    fn diagnostics(&self) -> String {
        let objects = stdout(&self.kubectl(&["get", "vm,vmi,vmim", "-A", "-o", "yaml"], None));
        let logs: Vec<String> = ["local-0", "local-1"]
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(self.node_dir(n).join("handler.log")).unwrap_or_default();
                format!("--- handler {n}:\n{}", log.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect();
        let server = std::fs::read_to_string(self.data.path().join("vmform.log")).unwrap_or_default();
        let server: Vec<&str> = server.lines().filter(|l| l.contains("migration")).collect();
        format!("{objects}\n{}\n--- server (migration lines):\n{}", logs.join("\n"), server.join("\n"))
    }
    /// The console log of a VMI on a node (every run of it there, appended).
    fn console(&self, node: &str, uid: &str) -> String {
        std::fs::read_to_string(self.node_dir(node).join("vmis").join(uid).join("console.log")).unwrap_or_default()
    }
    fn wait_ticks(&self, node: &str, uid: &str, after: u64, seconds: u64) -> Vec<(u64, String)> {
        let started = Instant::now();
        loop {
            let t = ticks(&self.console(node, uid));
            if t.last().is_some_and(|(n, _)| *n > after) {
                return t;
            }
            assert!(started.elapsed() < Duration::from_secs(seconds), "no tick after {after} on {node} in {seconds} s:\n{}", self.console(node, uid));
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    fn libvirt(&self, node: &str) -> String {
        format!("qemu+unix:///system?socket={}", self.node_dir(node).join("libvirt/run/libvirt-sock").display())
    }
    /// The domains defined on a node (running or not).
    fn domains(&self, node: &str) -> Vec<String> {
        let out = Command::new("virsh").args(["-c", &self.libvirt(node), "list", "--all", "--name"]).output().expect("virsh runs");
        stdout(&out).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
    }
    fn running(&self, node: &str) -> Vec<String> {
        let out = Command::new("virsh").args(["-c", &self.libvirt(node), "list", "--name"]).output().expect("virsh runs");
        stdout(&out).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
    }
    /// The handler process of a node.
    fn handler_pid(&self, node: &str) -> Option<i32> {
        let dir = format!("--node-dir {} ", self.node_dir(node).display());
        common::processes_with("runtime handler").iter().find(|p| p.contains(&dir)).and_then(|p| p.split(' ').next()?.parse().ok())
    }
    /// `vmform vm migrate web --detach`, returning once the source handler (on `source`)
    /// has asked its launcher to migrate: the migration's name, and the guest's last tick
    /// before.
    fn migrate_detached(&self, uid: &str, source: &str) -> (String, (u64, String)) {
        let out = self.vmform(&["vm", "migrate", "web", "-n", "mig", "--detach"]);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        let m = stdout(&out).split_whitespace().nth(2).unwrap().to_string();
        let m_uid = self.get(&["vmim", &m, "-n", "mig"], "{.metadata.uid}");
        let request = self.node_dir(source).join("vmis").join(uid).join("migrate.json");
        let started = Instant::now();
        while !std::fs::read_to_string(&request).is_ok_and(|r| r.contains(&m_uid)) {
            assert!(started.elapsed() < Duration::from_secs(60), "no migrate.json for {m}\n{}", self.diagnostics());
            std::thread::sleep(Duration::from_millis(10));
        }
        (m, ticks(&self.console(source, uid)).last().unwrap().clone())
    }
    /// The guest runs on `on` only, the VMI says so, and it goes on ticking with the boot id
    /// it had at `last_before`: the same guest, never restarted.
    fn assert_runs_only_on(&self, uid: &str, on: &str, off: &str, last_before: &(u64, String)) {
        self.wait(&["vmi", "web", "-n", "mig"], "{.status.nodeName}", |n| n == on, 30);
        let started = Instant::now();
        while (self.running(on), self.domains(off)) != (vec!["mig_web".to_string()], vec![]) {
            assert!(started.elapsed() < Duration::from_secs(30), "the guest runs on {on} only: {:?} / {:?}\n{}", self.running(on), self.domains(off), self.diagnostics());
            std::thread::sleep(Duration::from_millis(250));
        }
        self.wait_vm("web", "Running", 60);
        let after = self.wait_ticks(on, uid, last_before.0 + 2, 60);
        assert!(after.iter().filter(|(n, _)| *n > last_before.0).all(|(_, id)| *id == last_before.1), "the same boot: {after:?}");
        assert_eq!(self.vmi("web", "{.metadata.uid}"), uid);
    }
    fn wait_vm(&self, name: &str, status: &str, seconds: u64) {
        self.wait(&["vm", name, "-n", "mig"], "{.status.printableStatus}", |s| s == status, seconds);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = run(&["down", "--data-dir", self.data.path().to_str().unwrap()]);
        if !std::thread::panicking() {
            eprintln!("the test took {:.0} s", self.started.elapsed().as_secs_f64());
            assert_eq!(code(&out), 0, "down: {}{}", stdout(&out), stderr(&out));
            let tag = vmform_runtime::libvirt::netns::tag(self.data.path());
            assert_nothing_left(self.data.path(), &format!("vmform-{tag}-"), &format!("vmf{tag}"));
        }
    }
}

/// The guest's `tick N BOOT-ID` lines, in order (a line cut by the switch-over matches
/// on neither node).
fn ticks(log: &str) -> Vec<(u64, String)> {
    log.lines()
        .filter_map(|l| {
            let mut words = l.trim().split(' ');
            match (words.next(), words.next().and_then(|n| n.parse().ok()), words.next(), words.next()) {
                (Some("tick"), Some(n), Some(id), None) if id.len() == 36 => Some((n, id.to_string())),
                _ => None,
            }
        })
        .collect()
}

fn other(node: &str) -> &'static str {
    if node == "local-0" { "local-1" } else { "local-0" }
}

/// The guest moved from `from` to `to` without a restart: the VMI is the same one, its
/// domain runs on `to` only, and the console on `to` goes on from where `from` stopped,
/// with the same boot id and no new boot.
fn assert_moved(c: &Cluster, uid: &str, from: &str, to: &str, boots_on_to: usize) {
    assert_eq!(c.vmi("web", "{.metadata.uid}"), uid, "the same VMI");
    assert_eq!(c.vmi("web", "{.status.nodeName}"), to);
    assert_eq!(c.vmi("web", "{.metadata.labels.kubevirt\\.io/nodeName}"), to);
    assert_eq!(c.vmi("web", "{.metadata.labels.kubevirt\\.io/migrationTargetNodeName}"), "", "the migration's label is gone");
    assert_eq!((c.running(to), c.domains(from)), (vec!["mig_web".to_string()], vec![]), "the guest runs on {to} only");
    let before = ticks(&c.console(from, uid));
    let (last_before, boot_id) = before.last().cloned().expect("the guest ticked on its source");
    let after = c.wait_ticks(to, uid, last_before + 2, 60);
    let on_to: Vec<&(u64, String)> = after.iter().filter(|(n, _)| *n > last_before).collect();
    let first_after = on_to[0].0;
    assert!(
        (last_before + 1..=last_before + 2).contains(&first_after),
        "the counter goes on: {last_before} on {from}, then {first_after} on {to} (2 when the switch-over cut a line)"
    );
    assert!(on_to.iter().all(|(_, id)| *id == boot_id), "the same boot id {boot_id} on {to}: {on_to:?}");
    assert_eq!(c.console(to, uid).matches("VMFORM-TEST-GUEST READY").count(), boots_on_to, "no new boot on {to}");
    c.wait_vm("web", "Running", 30);
}

#[test]
fn a_running_guest_migrates_live_and_back_without_a_restart() {
    if !precondition(is_root(), "root for network namespaces") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::up();
    c.apply(&vm(
        "web",
        "shared=#true",
        "    run-strategy \"always\"\n    cloud-init {\n        user-data \"#cloud-config\\n#vmform-marker moving\\n\"\n    }\n    network \"default\" masquerade=#true\n    port \"ssh\" 22\n",
    ));
    c.wait_vm("web", "Running", 180);
    let uid = c.vmi("web", "{.metadata.uid}");
    let a = c.vmi("web", "{.status.nodeName}");
    let b = other(&a);
    c.wait(&["vmi", "web", "-n", "mig"], "{.status.conditions[?(@.type==\"LiveMigratable\")].status}", |s| s == "True", 30);
    c.wait_ticks(&a, &uid, 2, 120);
    assert!(c.console(&a, &uid).contains("VMFORM-USER-DATA: #vmform-marker moving"));

    // There: `vmform vm migrate` follows it through KubeVirt's phases.
    let out = c.vmform(&["vm", "migrate", "web", "-n", "mig"]);
    assert_eq!(code(&out), 0, "{}{}\n{}", stdout(&out), stderr(&out), c.diagnostics());
    let said = stdout(&out);
    assert!(said.contains(&format!("mig/web: migrated from {a} to {b} in ")) && said.contains("the guest paused"), "{said}");
    assert_moved(&c, &uid, &a, b, 0);
    let m = c.get(&["vmim", "-n", "mig"], "{.items[0].metadata.name}");
    assert_eq!(c.get(&["vmim", &m, "-n", "mig"], "{.status.phase}"), "Succeeded");
    let phases = c.get(&["vmim", &m, "-n", "mig"], "{.status.phaseTransitionTimestamps[*].phase}");
    assert_eq!(phases, "Pending Scheduling Scheduled PreparingTarget TargetReady Running Succeeded");
    let state = |path: &str| c.vmi("web", &format!("{{.status.migrationState.{path}}}"));
    assert_eq!((state("completed"), state("sourceNode"), state("targetNode"), state("mode")), ("true".into(), a.clone(), b.to_string(), "PreCopy".into()));
    assert!(!state("startTimestamp").is_empty() && !state("endTimestamp").is_empty());
    let stats: serde_json::Value = serde_json::from_str(&c.get(&["vmim", &m, "-n", "mig"], "{.metadata.annotations.vmform\\.io/migration-stats}")).unwrap();
    assert!(stats["downtimeMs"].as_u64().is_some() && stats["timeElapsedMs"].as_u64().is_some(), "{stats}");
    // The console and the forwarded port followed it.
    let console = c.vmform(&["vm", "console", "web", "-n", "mig", "--no-follow", "--tail", "-1"]);
    assert_eq!(console.status.code(), Some(0), "{}", stderr(&console));
    assert!(!stdout(&console).contains("READY") && ticks(&stdout(&console)).len() >= 2, "the new node's log: {}", stdout(&console));
    let ip_b = c.get(&["node", b], "{.status.addresses[?(@.type==\"InternalIP\")].address}");
    let ports = stdout(&c.vmform(&["vm", "ports", "web", "-n", "mig"]));
    assert!(ports.contains(&format!("{ip_b}:")), "the port is forwarded on {b}'s address now: {ports}");

    // And back, to a node named.
    let out = c.vmform(&["vm", "migrate", "web", "-n", "mig", "--to", &a]);
    assert_eq!(code(&out), 0, "{}{}\n{}", stdout(&out), stderr(&out), c.diagnostics());
    assert!(stdout(&out).contains(&format!("migrated from {b} to {a}")), "{}", stdout(&out));
    assert_moved(&c, &uid, b, &a, 1);
    let refused = c.vmform(&["vm", "migrate", "web", "-n", "mig", "--to", &a]);
    assert_eq!(code(&refused), 1);
    assert!(stderr(&refused).contains(&format!("already runs on node {a}")), "{}", stderr(&refused));

    // KubeVirt's subresource (what virtctl migrate calls) does it too.
    let url = "/apis/subresources.kubevirt.io/v1/namespaces/mig/virtualmachines/web/migrate";
    let out = c.kubectl(&["replace", "--raw", url, "-f", "-"], Some("{}"));
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait(&["vmi", "web", "-n", "mig"], "{.status.nodeName}", |n| n == b, 120);
    c.wait(&["vmi", "web", "-n", "mig"], "{.status.migrationState.completed}", |s| s == "true", 60);
    assert_moved(&c, &uid, &a, b, 0);
    assert_eq!(c.get(&["vmim", "-n", "mig"], "{.items[*].status.phase}"), "Succeeded Succeeded Succeeded");

    // The source's launcher dies while libvirt migrates the guest: whichever way the job
    // ends without it, the guest runs on exactly one node, the one the VMI names, and was
    // never restarted.
    let (m, last_before) = c.migrate_detached(&uid, b);
    // The launcher reads the request on its next turn and starts libvirt's job; the job
    // takes about a second.
    std::thread::sleep(Duration::from_millis(400));
    let pid: i32 = std::fs::read_to_string(c.node_dir(b).join("vmis").join(&uid).join("launcher.pid")).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) of the source launcher this cluster started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let phase = c.wait(&["vmim", &m, "-n", "mig"], "{.status.phase}", |p| p == "Succeeded" || p == "Failed", 60);
    let (on, off) = if phase == "Succeeded" { (a.as_str(), b) } else { (b, a.as_str()) };
    eprintln!("the source launcher was killed mid-migration: the migration {phase}, the guest is on {on}");
    c.assert_runs_only_on(&uid, on, off, &last_before);

    // The source's handler dies as the migration starts: its launcher carries on alone, and
    // the handler `vmform up` starts again finishes the hand-over from what it left.
    let (m, last_before) = c.migrate_detached(&uid, on);
    let handler = c.handler_pid(on).expect("the source's handler runs");
    // SAFETY: kill(2) of a handler this cluster started.
    unsafe { libc::kill(handler, libc::SIGKILL) };
    let phase = c.wait(&["vmim", &m, "-n", "mig"], "{.status.phase}", |p| p == "Succeeded" || p == "Failed", 90);
    assert_eq!(phase, "Succeeded", "{}", c.diagnostics());
    assert!(c.handler_pid(on).is_some_and(|p| p != handler), "a new handler runs on {on}");
    c.assert_runs_only_on(&uid, off, on, &last_before);
}

#[test]
fn a_migration_that_cannot_finish_leaves_the_guest_on_its_source() {
    if !precondition(is_root(), "root for network namespaces") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::up();
    // 1 MiB/s: the guest's memory takes a minute to copy, longer than its completion
    // timeout (150 s per GiB: 18 s for 128 MiB).
    let policy = "apiVersion: migrations.kubevirt.io/v1alpha1\nkind: MigrationPolicy\nmetadata:\n  name: slow\nspec:\n  bandwidthPerMigration: 1Mi\n  selectors:\n    virtualMachineInstanceSelector:\n      speed: slow\n";
    let out = c.kubectl(&["apply", "-f", "-"], Some(policy));
    assert!(out.status.success(), "{}", stderr(&out));
    c.apply(&vm("web", "shared=#true", "    labels speed=\"slow\"\n    run-strategy \"always\"\n"));
    c.wait_vm("web", "Running", 180);
    let uid = c.vmi("web", "{.metadata.uid}");
    let a = c.vmi("web", "{.status.nodeName}");
    let b = other(&a);
    c.wait(&["vmi", "web", "-n", "mig"], "{.status.conditions[?(@.type==\"LiveMigratable\")].status}", |s| s == "True", 30);
    c.wait_ticks(&a, &uid, 1, 120);

    // Stays on the source, keeps running and ticking, nothing is left on the target.
    let stayed = |what: &str| {
        assert_eq!(c.vmi("web", "{.metadata.uid}"), uid, "{what}: the same VMI");
        assert_eq!(c.vmi("web", "{.status.nodeName}"), a, "{what}: still on {a}");
        assert_eq!(c.vmi("web", "{.status.migrationState.failed}"), "true", "{what}");
        let started = Instant::now();
        while !c.domains(b).is_empty() {
            assert!(started.elapsed() < Duration::from_secs(30), "{what}: the target keeps a domain: {:?}", c.domains(b));
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(c.running(&a), vec!["mig_web".to_string()], "{what}: the guest runs on {a}");
        let last = ticks(&c.console(&a, &uid)).last().unwrap().0;
        c.wait_ticks(&a, &uid, last + 1, 30);
        assert_eq!(c.console(&a, &uid).matches("VMFORM-TEST-GUEST READY").count(), 1, "{what}: never restarted");
        c.wait_vm("web", "Running", 30);
    };
    let start_slow = || {
        let out = c.vmform(&["vm", "migrate", "web", "-n", "mig", "--detach"]);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        let name = stdout(&out).split_whitespace().nth(2).unwrap().to_string();
        c.wait(&["vmim", &name, "-n", "mig"], "{.status.phase}", |p| p == "Running", 60);
        c.wait_vm("web", "Migrating", 10);
        assert_eq!(c.vmi("web", "{.status.migrationState.migrationPolicyName}"), "slow");
        name
    };

    // Cancelled: deleting the migration object aborts it.
    let m = start_slow();
    std::thread::sleep(Duration::from_secs(1));
    let out = c.vmform(&["vm", "migrate-cancel", "web", "-n", "mig"]);
    assert_eq!(code(&out), 0, "{}{}\n{}", stdout(&out), stderr(&out), c.diagnostics());
    assert!(stdout(&out).contains(&format!("migration {m} cancelled; the VM stays on node {a}")), "{}", stdout(&out));
    assert_eq!(c.get(&["vmim", &m, "-n", "mig", "--ignore-not-found"], "{.metadata.name}"), "", "the migration object is gone");
    assert_eq!(c.vmi("web", "{.status.migrationState.abortStatus}"), "Succeeded");
    assert!(c.vmi("web", "{.status.migrationState.failureReason}").contains("cancelled"));
    stayed("cancelled");

    // The target's launcher dies mid-way: the migration fails, the guest stays.
    let m = start_slow();
    let pid: i32 = std::fs::read_to_string(c.node_dir(b).join("vmis").join(&uid).join("launcher.pid")).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) of the receiving launcher this cluster started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    c.wait(&["vmim", &m, "-n", "mig"], "{.status.phase}", |p| p == "Failed", 60);
    let reason = c.get(&["vmim", &m, "-n", "mig"], "{.status.migrationState.failureReason}");
    assert!(reason.contains(&format!("the target's launcher on node {b} stopped before the guest arrived")), "{reason}");
    stayed("target launcher killed");

    // The source's launcher dies mid-way: its handler aborts the job libvirt still runs
    // for it, the migration fails, and a new launcher takes the guest over where it runs.
    let m = start_slow();
    let pid: i32 = std::fs::read_to_string(c.node_dir(&a).join("vmis").join(&uid).join("launcher.pid")).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) of the source launcher this cluster started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    c.wait(&["vmim", &m, "-n", "mig"], "{.status.phase}", |p| p == "Failed", 60);
    let reason = c.get(&["vmim", &m, "-n", "mig"], "{.status.migrationState.failureReason}");
    assert!(reason.contains("the source's launcher stopped during the migration"), "{reason}");
    stayed("source launcher killed");

    // The target's libvirtd dies mid-way: the source's libvirt loses its peer and ends the
    // job, the guest stays, and the target's handler starts its libvirtd again.
    let m = start_slow();
    let conf = format!("{} ", c.node_dir(b).join("libvirt/etc/libvirtd.conf").display());
    let daemon: i32 = common::processes_with("libvirtd").iter().find(|p| p.contains(&conf)).and_then(|p| p.split(' ').next()?.parse().ok()).expect("the target's libvirtd runs");
    // SAFETY: kill(2) of a libvirtd this cluster started.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    c.wait(&["vmim", &m, "-n", "mig"], "{.status.phase}", |p| p == "Failed", 90);
    eprintln!("the target's libvirtd killed: {}", c.get(&["vmim", &m, "-n", "mig"], "{.status.migrationState.failureReason}"));
    stayed("target libvirtd killed");
    c.wait(&["node", b], "{.status.conditions[?(@.type==\"Ready\")].status}", |s| s == "True", 60);

    // Too slow: aborted at its completion timeout.
    let started = Instant::now();
    let out = c.vmform(&["vm", "migrate", "web", "-n", "mig"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("not completed within its completion timeout of 18 s"), "{}", stderr(&out));
    assert!(started.elapsed() > Duration::from_secs(18), "aborted only after its timeout");
    stayed("timed out");
}

/// What a watcher of the migrations saw while a drain ran: the most in flight at once
/// (handed to the nodes, not yet ended), and the messages of those kept Pending.
#[derive(Default)]
struct Seen {
    most_in_flight: usize,
    pending_because: Vec<String>,
}

/// Look at the namespace's migrations every 100 ms until `stop`.
fn watch_migrations(kubeconfig: PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let out = common::kubectl(&kubeconfig, &["get", "vmim", "-n", "mig", "-o", "json"], None);
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let phase = |m: &serde_json::Value| m.pointer("/status/phase").and_then(|p| p.as_str()).unwrap_or("Pending").to_string();
            let in_flight = items.iter().filter(|m| !["Pending", "Succeeded", "Failed"].contains(&phase(m).as_str())).count();
            seen.most_in_flight = seen.most_in_flight.max(in_flight);
            for m in items.iter().filter(|m| phase(m) == "Pending") {
                for c in m.pointer("/status/conditions").and_then(|c| c.as_array()).into_iter().flatten() {
                    let said = format!("{}: {}", c["reason"].as_str().unwrap_or_default(), c["message"].as_str().unwrap_or_default());
                    if !seen.pending_because.contains(&said) {
                        seen.pending_because.push(said);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        seen
    })
}

#[test]
fn a_drain_migrates_what_may_move_and_stops_the_rest_by_run_strategy() {
    if !precondition(is_root(), "root for network namespaces") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::up();
    // Everything starts on local-0.
    let out = c.vmform(&["node", "cordon", "local-1"]);
    assert_eq!((code(&out), stdout(&out)), (0, "node/local-1 cordoned\n".to_string()), "{}", stderr(&out));
    // Three movers: one more than may leave a node at once (parallelOutboundMigrationsPerNode 2).
    let movers = ["mover-a", "mover-b", "mover-c"];
    let mut specs: Vec<String> = movers.iter().map(|m| vm(m, "shared=#true", "    run-strategy \"always\"\n    eviction \"live-migrate\"\n")).collect();
    specs.push(vm("stopper", "", "    run-strategy \"always\"\n"));
    specs.push(vm("manual", "", "    run-strategy \"manual\"\n"));
    // Asks to live-migrate, but its host disk is not shared: KubeVirt refuses its eviction.
    specs.push(vm("stuck", "", "    run-strategy \"always\"\n    eviction \"live-migrate\"\n"));
    c.apply(&specs.concat());
    let out = c.vmform(&["vm", "start", "manual", "-n", "mig"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all = ["mover-a", "mover-b", "mover-c", "stopper", "manual", "stuck"];
    for name in all {
        c.wait_vm(name, "Running", 240);
        assert_eq!(c.get(&["vmi", name, "-n", "mig"], "{.status.nodeName}"), "local-0");
    }
    for name in ["stopper", "stuck"] {
        c.wait(&["vmi", name, "-n", "mig"], "{.status.conditions[?(@.type==\"LiveMigratable\")].status}", |s| s == "False", 30);
    }
    // Booted guests: a guest still unpacking its initramfs dirties memory faster than two
    // shared cores move it.
    for name in movers {
        let uid = c.get(&["vmi", name, "-n", "mig"], "{.metadata.uid}");
        c.wait_ticks("local-0", &uid, 0, 240);
    }
    let out = c.vmform(&["node", "uncordon", "local-1"]);
    assert_eq!((code(&out), stdout(&out)), (0, "node/local-1 uncordoned\n".to_string()));

    // A VM that cannot move is refused at once, with KubeVirt's reason.
    let out = c.vmform(&["vm", "migrate", "stopper", "-n", "mig"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("Cannot migrate VMI, Reason: DisksNotLiveMigratable, Message: cannot migrate VMI with non-shared HostDisk"),
        "{}",
        stderr(&out)
    );

    let uid = |name: &str| c.get(&["vmi", name, "-n", "mig"], "{.metadata.uid}");
    let mover_uids: Vec<String> = movers.iter().map(|m| uid(m)).collect();
    let (stopper_uid, stuck_uid) = (uid("stopper"), uid("stuck"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_migrations(c.data.path().join("kubeconfig"), stop.clone());
    let out = c.vmform(&["node", "drain", "local-0"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    let said = stdout(&out);
    assert_eq!(code(&out), 1, "{said}{}\n{}", stderr(&out), c.diagnostics());
    assert!(stderr(&out).contains("node/local-0 is not drained: a VM could not be moved off it"), "{}", stderr(&out));
    assert!(said.starts_with("node/local-0 cordoned\n"), "{said}");
    let line = |name: &str| said.lines().rev().find(|l| l.trim_start().starts_with(&format!("mig/{name} "))).unwrap_or_default().to_string();
    for name in movers {
        assert!(line(name).contains("migrated from local-0 to local-1"), "{said}");
    }
    assert!(line("stopper").contains("stopped; its run strategy Always started it again on node local-1"), "{said}");
    assert!(line("manual").contains("stopped; its run strategy Manual keeps it stopped"), "{said}");
    assert!(
        line("stuck").contains("NOT moved: evictionStrategy LiveMigrate, but it cannot migrate (cannot migrate VMI with non-shared HostDisk"),
        "{said}"
    );
    assert_eq!(c.get(&["node", "local-0"], "{.spec.unschedulable}"), "true");
    // The limits held: two migrations out of local-0 at once, the third kept Pending, saying why.
    assert_eq!(seen.most_in_flight, 2, "migrations in flight at once, at most");
    assert!(
        seen.pending_because.iter().any(|s| s == "MigrationLimitReached: waiting: 2 migrations leave node local-0, the most at once (parallelOutboundMigrationsPerNode)"),
        "{:?}",
        seen.pending_because
    );

    // The movers are the same guests on local-1; the stopper a new one there; manual is
    // off; stuck keeps running where it was.
    for (name, before) in movers.iter().zip(&mover_uids) {
        assert_eq!(&uid(name), before);
        assert_eq!(c.get(&["vmi", name, "-n", "mig"], "{.status.nodeName}"), "local-1");
    }
    c.wait_vm("stopper", "Running", 120);
    assert_ne!(uid("stopper"), stopper_uid);
    assert_eq!(c.get(&["vmi", "stopper", "-n", "mig"], "{.status.nodeName}"), "local-1");
    c.wait_vm("manual", "Stopped", 60);
    assert_eq!((uid("stuck"), c.get(&["vmi", "stuck", "-n", "mig"], "{.status.nodeName}")), (stuck_uid, "local-0".to_string()));
    assert_eq!(c.running("local-0"), vec!["mig_stuck".to_string()], "only the VM that may not move runs on the drained node");

    // Once it is gone, the drain is done: the node is drained with nothing to move.
    let out = c.kubectl(&["delete", "vm", "stuck", "-n", "mig", "--wait=true"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait(&["vmi", "stuck", "-n", "mig"], "{.metadata.name}", str::is_empty, 60);
    let out = c.vmform(&["node", "drain", "local-0"]);
    assert_eq!(
        (code(&out), stdout(&out)),
        (0, "node/local-0 already cordoned\nnode/local-0 drained: no VM ran on it\n".to_string()),
        "{}",
        stderr(&out)
    );

    let out = c.vmform(&["node", "uncordon", "local-0"]);
    assert_eq!(code(&out), 0);
    assert_eq!(c.get(&["node", "local-0"], "{.spec.unschedulable}"), "");
    let out = c.vmform(&["node", "drain", "nowhere"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));
}
