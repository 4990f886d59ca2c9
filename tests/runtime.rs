//! The bundled runtime end to end: `vmform up` with its controller, handler and
//! launchers, real guests (the project's test guest, under QEMU's TCG) started by
//! `vmform apply` and kubectl, and watched through their serial consoles.
//!
//! Guests are slow to boot under TCG on two busy cores, so the tests of this file run
//! one at a time (`GUESTS`), and every wait is generous.

mod common;

use common::{code, guest_disk, run, stderr, stdout};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One test with guests at a time.
static GUESTS: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    GUESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A local cluster with the runtime, in a fresh data dir; `vmform down` on drop, which
/// must leave no guest, launcher or libvirtd behind.
struct Cluster {
    data: tempfile::TempDir,
    project: tempfile::TempDir,
    /// What `vmform up --detach` printed.
    up: String,
}

impl Cluster {
    fn up() -> Cluster {
        Cluster::up_with(&[])
    }
    fn up_with(flags: &[&str]) -> Cluster {
        Cluster::up_by(flags, run)
    }
    /// `vmform up` in a mount namespace of its own with `/dev/null` over `/dev/kvm`: KVM
    /// taken away from it (and from its handler, libvirtd and QEMUs), the host unchanged.
    fn up_without_kvm() -> Cluster {
        Cluster::up_by(&[], |args| {
            let vmform = env!("CARGO_BIN_EXE_vmform");
            let script = r#"[ ! -e /dev/kvm ] || mount --bind /dev/null /dev/kvm || exit 99; exec "$0" "$@""#;
            let out = Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", script, vmform]).args(args).output().expect("unshare runs");
            assert_ne!(out.status.code(), Some(99), "cannot bind /dev/null over /dev/kvm: {}", stderr(&out));
            out
        })
    }
    fn up_by(flags: &[&str], run: impl Fn(&[&str]) -> Output) -> Cluster {
        let data = tempfile::Builder::new().prefix("vmf").tempdir().unwrap();
        let mut args = vec!["up", "--detach", "--listen", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()];
        args.extend(flags);
        let out = run(&args);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        let project = tempfile::tempdir().unwrap();
        let cluster = Cluster { data, project, up: stdout(&out) };
        // The handler registers node `local` once its libvirtd answers.
        cluster.wait("node", "", "local", "{.status.conditions[?(@.type==\"Ready\")].status}", |s| s == "True", 60);
        cluster
    }
    fn kubeconfig(&self) -> PathBuf {
        self.data.path().join("kubeconfig")
    }
    fn node_dir(&self) -> PathBuf {
        self.data.path().join("nodes/local")
    }
    fn libvirt_uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.node_dir().join("libvirt/run/libvirt-sock").display())
    }
    /// Write the specs and `vmform apply` them.
    fn apply(&self, spec: &str) -> String {
        std::fs::write(self.project.path().join("vms.kdl"), spec).unwrap();
        let out = self.vmform(&["apply", "--auto-approve", self.project.path().to_str().unwrap()]);
        assert_eq!(code(&out), 0, "apply failed: {}{}", stdout(&out), stderr(&out));
        stdout(&out)
    }
    fn vmform(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        let kubeconfig = self.kubeconfig();
        all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
        run(&all)
    }
    fn kubectl(&self, args: &[&str], input: Option<&str>) -> Output {
        common::kubectl(&self.kubeconfig(), args, input)
    }
    /// A field of an object through kubectl's jsonpath ("" when the object is missing).
    fn get(&self, kind: &str, namespace: &str, name: &str, jsonpath: &str) -> String {
        let mut args = vec!["get", kind, name, "-o"];
        let path = format!("jsonpath={jsonpath}");
        args.push(&path);
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        let out = self.kubectl(&args, None);
        if out.status.success() { stdout(&out) } else { String::new() }
    }
    /// Wait until `check` holds for the field, or fail with what it last was.
    fn wait(&self, kind: &str, namespace: &str, name: &str, jsonpath: &str, check: impl Fn(&str) -> bool, seconds: u64) -> String {
        let started = Instant::now();
        loop {
            let value = self.get(kind, namespace, name, jsonpath);
            if check(&value) {
                return value;
            }
            if started.elapsed() > Duration::from_secs(seconds) {
                let vm = self.kubectl(&["get", kind, name, "-n", namespace, "-o", "yaml"], None);
                let log = std::fs::read_to_string(self.node_dir().join("handler.log")).unwrap_or_default();
                panic!(
                    "{kind} {namespace}/{name}: {jsonpath} is {value:?} after {seconds} s\n{}\nhandler log (end):\n{}",
                    stdout(&vm),
                    log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    fn wait_status(&self, namespace: &str, vm: &str, status: &str, seconds: u64) {
        self.wait("vm", namespace, vm, "{.status.printableStatus}", |s| s == status, seconds);
    }
    /// The VMI's console log on the node.
    fn console(&self, namespace: &str, vm: &str) -> String {
        let uid = self.get("vmi", namespace, vm, "{.metadata.uid}");
        std::fs::read_to_string(self.node_dir().join("vmis").join(uid).join("console.log")).unwrap_or_default()
    }
    /// Wait until the current VMI's console has a line matching `needle`; returns the log.
    fn wait_console(&self, namespace: &str, vm: &str, needle: &str, seconds: u64) -> String {
        let started = Instant::now();
        loop {
            let log = self.console(namespace, vm);
            if log.lines().any(|l| l.contains(needle)) {
                return log;
            }
            assert!(started.elapsed() < Duration::from_secs(seconds), "no {needle:?} on the console of {namespace}/{vm} after {seconds} s:\n{log}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    fn virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh").arg("-c").arg(self.libvirt_uri()).args(args).output().expect("virsh runs")
    }
    /// The pid of a runtime process of this cluster: "runtime handler", "libvirtd".
    fn pid_of(&self, what: &str) -> Option<i32> {
        let dir = self.data.path().to_str().unwrap().to_string();
        processes().into_iter().find(|(_, cmd)| cmd.contains(what) && cmd.contains(&dir)).map(|(p, _)| p)
    }
    /// The pid of the QEMU running a domain, if any.
    fn qemu_pid(&self, domain: &str) -> Option<i32> {
        qemu_pids().into_iter().find(|(_, cmd)| cmd.contains(&format!("guest={domain},")) && cmd.contains(self.data.path().to_str().unwrap())).map(|(p, _)| p)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = run(&["down", "--data-dir", self.data.path().to_str().unwrap()]);
        if !std::thread::panicking() {
            assert_eq!(code(&out), 0, "vmform down: {}{}", stdout(&out), stderr(&out));
            let left = processes_of(self.data.path());
            assert!(left.is_empty(), "vmform down left processes behind:\n{}", left.join("\n"));
        }
    }
}

/// Every process with its command line.
fn processes() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if cmd.is_empty() {
            continue;
        }
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        out.push((pid, cmd));
    }
    out
}

/// The processes of a cluster's data dir, as "pid command line".
fn processes_of(data_dir: &std::path::Path) -> Vec<String> {
    let dir = data_dir.to_str().unwrap();
    processes().into_iter().filter(|(_, cmd)| cmd.contains(dir)).map(|(p, c)| format!("{p} {c}")).collect()
}

fn qemu_pids() -> Vec<(i32, String)> {
    processes().into_iter().filter(|(_, c)| c.starts_with("/usr/bin/qemu-system") || c.contains("qemu-system-x86_64 ")).collect()
}

fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a pid the test found.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
}

/// A vm of the test guest. `extra` goes inside the vm block.
fn guest_vm(namespace: &str, name: &str, strategy: &str, user_data: &str, extra: &str) -> String {
    let disk = guest_disk();
    format!(
        r##"vm "{name}" {{
    namespace "{namespace}"
    run-strategy "{strategy}"
    cpu 1
    memory "128Mi"
    disk "root" {{
        host-disk "{disk}" type="disk"
        bus "virtio"
        read-only
        boot-order 1
    }}
    cloud-init {{
        user-data "#cloud-config\n{user_data}\n"
    }}
{extra}
}}
"##,
        disk = disk.display()
    )
}

fn boot_id(log: &str) -> String {
    log.lines().rev().find_map(|l| l.split("VMFORM-BOOT-ID ").nth(1)).map(|s| s.trim().to_string()).expect("the console has a boot id")
}

#[test]
fn a_vm_boots_shows_its_console_and_stops_through_acpi() {
    let _one = one_at_a_time();
    let c = Cluster::up();
    c.apply(&guest_vm("boot", "hello", "always", "#vmform-marker hello", "    termination-grace \"30s\""));
    c.wait_status("boot", "hello", "Running", 120);
    assert_eq!(c.get("vm", "boot", "hello", "{.status.ready}"), "true");
    // cloud-init user-data reached the guest through the cidata seed the launcher built
    // (the guest prints it right after its READY line).
    let log = c.wait_console("boot", "hello", "VMFORM-USER-DATA", 120);
    assert!(log.contains("VMFORM-TEST-GUEST READY"), "{log}");
    assert!(log.contains("VMFORM-USER-DATA: #vmform-marker hello"), "{log}");
    // `vmform vm console` prints the same log.
    let console = c.vmform(&["vm", "console", "hello", "-n", "boot", "--no-follow", "--tail", "1000"]);
    assert_eq!(code(&console), 0, "{}", stderr(&console));
    assert!(stdout(&console).contains("VMFORM-TEST-GUEST READY"), "{}", stdout(&console));
    c.wait_console("boot", "hello", "tick 2", 60);
    // Its disk is a host disk only this node may use: it cannot live-migrate, and says why.
    let migratable = c.get("vmi", "boot", "hello", "{.status.conditions[?(@.type==\"LiveMigratable\")]}");
    assert!(migratable.contains("\"status\":\"False\"") && migratable.contains("non-shared HostDisk") && migratable.contains("DisksNotLiveMigratable"), "{migratable}");

    let stop = c.vmform(&["vm", "stop", "hello", "-n", "boot"]);
    assert_eq!(code(&stop), 0, "{}{}", stdout(&stop), stderr(&stop));
    let uid = c.get("vmi", "boot", "hello", "{.metadata.uid}");
    let log_path = c.node_dir().join("vmis").join(&uid).join("console.log");
    let started = Instant::now();
    let mut last_log = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(l) = std::fs::read_to_string(&log_path) {
            last_log = l;
        }
        if last_log.contains("VMFORM-TEST-GUEST POWEROFF") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(last_log.contains("VMFORM-TEST-GUEST POWEROFF"), "the guest got the ACPI power button within its grace period:\n{last_log}");
    c.wait_status("boot", "hello", "Stopped", 60);
    assert_eq!(c.get("vmi", "boot", "hello", "{.metadata.name}"), "", "the VMI is gone");
    assert_eq!(c.qemu_pid("boot_hello"), None, "no QEMU is left");
}

#[test]
fn a_guest_that_ignores_acpi_is_forced_off_after_its_grace_period() {
    let _one = one_at_a_time();
    let c = Cluster::up();
    c.apply(&guest_vm("deaf", "deaf", "always", "#vmform-ignore-acpi", "    termination-grace \"5s\""));
    c.wait_status("deaf", "deaf", "Running", 120);
    c.wait_console("deaf", "deaf", "IGNORING-ACPI", 120);
    let stopped_at = Instant::now();
    let stop = c.vmform(&["vm", "stop", "deaf", "-n", "deaf"]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    c.wait_status("deaf", "deaf", "Stopped", 60);
    let took = stopped_at.elapsed();
    assert!(took >= Duration::from_secs(5), "forced off only after the 5 s grace period, took {took:?}");
    assert_eq!(c.qemu_pid("deaf_deaf"), None);
}

#[test]
fn always_restarts_a_guest_that_powered_off_and_one_whose_qemu_was_killed() {
    let _one = one_at_a_time();
    let c = Cluster::up();
    c.apply(&guest_vm("alw", "web", "always", "#vmform-marker a", ""));
    c.wait_status("alw", "web", "Running", 120);
    let first_uid = c.get("vmi", "alw", "web", "{.metadata.uid}");
    let first = boot_id(&c.wait_console("alw", "web", "VMFORM-BOOT-ID", 120));
    c.wait_console("alw", "web", "tick 1", 60);

    // The guest powers itself off (its ACPI button, pressed behind vmform's back).
    let out = c.virsh(&["shutdown", "alw_web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait("vmi", "alw", "web", "{.metadata.uid}", |u| !u.is_empty() && u != first_uid, 90);
    c.wait_status("alw", "web", "Running", 120);
    let second_uid = c.get("vmi", "alw", "web", "{.metadata.uid}");
    let second = boot_id(&c.wait_console("alw", "web", "VMFORM-BOOT-ID", 120));
    assert_ne!(first, second, "a new boot");
    c.wait_console("alw", "web", "tick 1", 60);

    // QEMU dies: a failure of a guest that had been running, restarted at once (the
    // start back-off is only for guests that never got to run).
    let pid = c.qemu_pid("alw_web").expect("QEMU runs");
    kill(pid, libc::SIGKILL);
    c.wait("vmi", "alw", "web", "{.metadata.uid}", |u| !u.is_empty() && u != second_uid, 90);
    c.wait_status("alw", "web", "Running", 120);
    let third = boot_id(&c.wait_console("alw", "web", "VMFORM-BOOT-ID", 120));
    assert_ne!(second, third);
    assert_eq!(c.get("vm", "alw", "web", "{.status.startFailure}"), "", "a run that reached Running clears the failures");
}

#[test]
fn rerun_on_failure_restarts_only_a_failed_guest_and_halted_stops_it() {
    let _one = one_at_a_time();
    let c = Cluster::up();
    c.apply(&guest_vm("rr", "db", "rerun-on-failure", "#vmform-marker r", ""));
    c.wait_status("rr", "db", "Running", 120);
    c.wait_console("rr", "db", "tick 1", 120);
    let first_uid = c.get("vmi", "rr", "db", "{.metadata.uid}");
    kill(c.qemu_pid("rr_db").expect("QEMU runs"), libc::SIGKILL);
    c.wait("vmi", "rr", "db", "{.metadata.uid}", |u| !u.is_empty() && u != first_uid, 90);
    c.wait_status("rr", "db", "Running", 120);
    c.wait_console("rr", "db", "tick 1", 120);

    // A clean shutdown from inside: the VMI is cleared away and the VM stays down.
    assert!(c.virsh(&["shutdown", "rr_db"]).status.success());
    c.wait("vmi", "rr", "db", "{.metadata.name}", |n| n.is_empty(), 60);
    c.wait_status("rr", "db", "Stopped", 30);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.get("vmi", "rr", "db", "{.metadata.name}"), "", "not restarted");
    assert_eq!(c.get("vm", "rr", "db", "{.status.printableStatus}"), "Stopped");

    // Start it by hand, then change the strategy to halted: it is stopped.
    let start = c.vmform(&["vm", "start", "db", "-n", "rr"]);
    assert_eq!(code(&start), 0, "{}", stderr(&start));
    c.wait_status("rr", "db", "Running", 120);
    c.apply(&guest_vm("rr", "db", "halted", "#vmform-marker r", ""));
    c.wait_status("rr", "db", "Stopped", 60);
    assert_eq!(c.get("vmi", "rr", "db", "{.metadata.name}"), "");
    assert_eq!(c.qemu_pid("rr_db"), None);
}

#[test]
fn killing_the_handler_leaves_the_guest_running_and_a_new_handler_adopts_it() {
    let _one = one_at_a_time();
    let c = Cluster::up();
    // A shared host disk (the nodes of this machine all see it) can live-migrate.
    c.apply(&guest_vm("hk", "app", "always", "#vmform-marker h", "    termination-grace \"20s\"").replace("type=\"disk\"", "type=\"disk\" shared=#true"));
    c.wait_status("hk", "app", "Running", 120);
    c.wait("vmi", "hk", "app", "{.status.conditions[?(@.type==\"LiveMigratable\")].status}", |s| s == "True", 30);
    let log = c.wait_console("hk", "app", "tick 1", 120);
    let boot = boot_id(&log);
    let qemu = c.qemu_pid("hk_app").expect("QEMU runs");
    let dir = c.data.path().to_str().unwrap().to_string();
    let handler = processes().into_iter().find(|(_, cmd)| cmd.contains("runtime handler") && cmd.contains(&dir)).expect("a handler runs").0;
    kill(handler, libc::SIGKILL);
    // `vmform up` starts a new handler; the guest never stopped.
    let started = Instant::now();
    let new_handler = loop {
        if let Some((pid, _)) = processes().into_iter().find(|(p, cmd)| *p != handler && cmd.contains("runtime handler") && cmd.contains(&dir)) {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no new handler");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(new_handler, handler);
    let ticks_before = c.console("hk", "app").matches("tick ").count();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.qemu_pid("hk_app"), Some(qemu), "the same QEMU runs");
    let log = c.console("hk", "app");
    assert!(log.matches("tick ").count() > ticks_before, "the guest kept ticking");
    assert_eq!(boot_id(&log), boot, "and was not rebooted");
    assert_eq!(c.get("vm", "hk", "app", "{.status.printableStatus}"), "Running");
    // The new handler drives the adopted guest: a stop reaches it.
    let stop = c.vmform(&["vm", "stop", "app", "-n", "hk"]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    c.wait_status("hk", "app", "Stopped", 60);
    assert_eq!(c.qemu_pid("hk_app"), None);
}

#[test]
fn a_vm_larger_than_the_node_is_unschedulable_and_bad_volumes_are_reported() {
    let _one = one_at_a_time();
    let c = Cluster::up();
    let huge = guest_vm("bad", "huge", "always", "#x", "").replace("memory \"128Mi\"", "memory \"4096Gi\"");
    let missing = format!(
        "vm \"missing\" {{\n    namespace \"bad\"\n    run-strategy \"always\"\n    memory \"64Mi\"\n    disk \"root\" {{ host-disk \"{}\" type=\"disk\"; boot-order 1 }}\n}}\n",
        c.data.path().join("no-such-disk.img").display()
    );
    let container = "vm \"image\" {\n    namespace \"bad\"\n    run-strategy \"always\"\n    memory \"64Mi\"\n    disk \"root\" { image \"quay.io/containerdisks/fedora:41\"; boot-order 1 }\n}\n";
    let claim = "vm \"claim\" {\n    namespace \"bad\"\n    run-strategy \"always\"\n    memory \"64Mi\"\n    disk \"root\" { pvc \"nowhere\"; boot-order 1 }\n}\n";
    // `apply --wait` stops as soon as a VM is in a state it will not leave by itself,
    // long before its timeout, and names the VM, the state and why.
    std::fs::write(c.project.path().join("vms.kdl"), format!("{huge}\n{missing}\n{container}\n{claim}")).unwrap();
    let asked = Instant::now();
    let out = c.vmform(&["apply", "--auto-approve", "--wait", "--timeout", "10m", c.project.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(asked.elapsed() < Duration::from_secs(300), "--wait sat out its timeout: {:?}", asked.elapsed());
    let why = stderr(&out);
    assert!(why.contains("which it will not leave by itself soon") && ["ErrorPvcNotFound", "ErrorUnschedulable", "CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff"].iter().any(|s| why.contains(s)), "{why}");
    // A claim with no volume behind it: KubeVirt's ErrorPvcNotFound, naming where it is looked for.
    c.wait_status("bad", "claim", "ErrorPvcNotFound", 60);
    let why = c.get("vmi", "bad", "claim", "{.status.conditions[?(@.type==\"Synchronized\")].message}");
    assert!(why.contains("bad/nowhere") && why.contains("volumes/bad/nowhere.img"), "{why}");
    c.wait_status("bad", "huge", "ErrorUnschedulable", 60);
    let message = c.get("vmi", "bad", "huge", "{.status.conditions[?(@.type==\"PodScheduled\")].message}");
    assert!(message.contains("Insufficient memory"), "{message}");

    // A missing disk file: the launcher fails, the VM says why and backs off.
    c.wait_status("bad", "missing", "CrashLoopBackOff", 90);
    let failure = c.get("vm", "bad", "missing", "{.status.conditions[?(@.type==\"Failure\")].message}");
    assert!(failure.contains("no-such-disk.img"), "{failure}");
    // A container disk whose registry cannot be reached: the volume, the image and why.
    c.wait("vm", "bad", "image", "{.status.conditions[?(@.type==\"Failure\")].message}", |m| m.contains("\"root\"") && m.contains("quay.io/containerdisks/fedora:41"), 60);
    c.wait_status("bad", "image", "ImagePullBackOff", 30);
    assert!(qemu_pids().iter().all(|(_, cmd)| !cmd.contains(c.data.path().to_str().unwrap())), "no QEMU runs for these");
    // `vmform show` says, one line each, why they do not run.
    let shown = stdout(&c.vmform(&["show", c.project.path().to_str().unwrap()]));
    for (vm, why) in [("bad/huge", "status ErrorUnschedulable: Unschedulable: "), ("bad/missing", "no-such-disk.img"), ("bad/claim", "status ErrorPvcNotFound: ")] {
        assert!(shown.lines().any(|l| l.contains(vm) && l.contains(why)), "{vm}: {why}\n{shown}");
    }

    // `vm start --wait` of a VM that does not restart by itself: its failed instance ends the wait.
    let manual = missing.replace("vm \"missing\"", "vm \"manual\"").replace("run-strategy \"always\"", "run-strategy \"manual\"");
    c.apply(&format!("{huge}\n{missing}\n{container}\n{claim}\n{manual}"));
    c.wait_status("bad", "manual", "Stopped", 30);
    let out = c.vmform(&["vm", "start", "manual", "-n", "bad", "--wait", "--timeout", "10m"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("did not start") && stderr(&out).contains("no-such-disk.img"), "{}", stderr(&out));
    // And of one that does: it is unschedulable, and says so.
    let out = c.vmform(&["vm", "restart", "huge", "-n", "bad", "--wait", "--timeout", "10m"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("ErrorUnschedulable") && stderr(&out).contains("Insufficient memory"), "{}", stderr(&out));
}

#[test]
fn deleting_a_vm_removes_its_domain_launcher_and_scratch_disks() {
    let _one = one_at_a_time();
    let c = Cluster::up();
    let spec = guest_vm("del", "tmp", "always", "#vmform-marker d", "    disk \"scratch\" { empty-disk \"64Mi\" }\n    termination-grace \"10s\"");
    c.apply(&spec);
    c.wait_status("del", "tmp", "Running", 120);
    c.wait_console("del", "tmp", "tick 1", 120);
    let uid = c.get("vmi", "del", "tmp", "{.metadata.uid}");
    let vmi_dir = c.node_dir().join("vmis").join(&uid);
    assert!(vmi_dir.join("disks").read_dir().map(|d| d.count()).unwrap_or(0) > 0, "the scratch disk and the seed are on the node");
    let out = c.vmform(&["destroy", "--auto-approve", c.project.path().to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    c.wait("vm", "del", "tmp", "{.metadata.name}", |n| n.is_empty(), 60);
    assert_eq!(c.get("vmi", "del", "tmp", "{.metadata.name}"), "");
    assert_eq!(c.qemu_pid("del_tmp"), None);
    let domains = c.virsh(&["list", "--all", "--name"]);
    assert_eq!(stdout(&domains).trim(), "", "no domain is left defined");
    let started = Instant::now();
    while vmi_dir.exists() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!vmi_dir.exists(), "the VMI's dir and scratch disks are gone");
    assert!(!processes().iter().any(|(_, cmd)| cmd.contains("runtime launcher") && cmd.contains(&uid)), "no launcher is left");
}

#[test]
fn kubectl_drives_the_runtime_too() {
    let _one = one_at_a_time();
    let c = Cluster::up();
    let disk = guest_disk();
    let yaml = format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {{ name: kc, namespace: default }}
spec:
  runStrategy: Manual
  template:
    spec:
      domain:
        devices:
          disks: [{{ name: root, disk: {{ bus: virtio, readonly: true }} }}]
        memory: {{ guest: 128Mi }}
      volumes: [{{ name: root, hostDisk: {{ path: "{}", type: Disk }} }}]
"#,
        disk.display()
    );
    let out = c.kubectl(&["apply", "-f", "-"], Some(&yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_status("default", "kc", "Stopped", 30);
    // virtctl's way of starting it: PUT on the subresource.
    let out = c.kubectl(&["replace", "--raw", "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/kc/start", "-f", "-"], Some("{}"));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    c.wait_status("default", "kc", "Running", 120);
    let table = c.kubectl(&["get", "vmi", "kc"], None);
    assert!(stdout(&table).contains("Running"), "{}", stdout(&table));
    // A change that needs a restart says so on the VM; a restart applies it.
    let first_uid = c.get("vmi", "default", "kc", "{.metadata.uid}");
    let out = c.kubectl(&["patch", "vm", "kc", "--type", "merge", "-p", r#"{"spec":{"template":{"spec":{"domain":{"memory":{"guest":"160Mi"}}}}}}"#], None);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait("vm", "default", "kc", "{.status.conditions[?(@.type==\"RestartRequired\")].status}", |s| s == "True", 30);
    // `--wait` returns once the new instance runs.
    let restart = c.vmform(&["vm", "restart", "kc", "-n", "default", "--wait", "--timeout", "5m"]);
    assert_eq!(code(&restart), 0, "{}", stderr(&restart));
    let uid = c.get("vmi", "default", "kc", "{.metadata.uid}");
    assert!(!uid.is_empty() && uid != first_uid, "a new VMI");
    assert_eq!(c.get("vm", "default", "kc", "{.status.printableStatus}"), "Running");
    assert_eq!(c.get("vmi", "default", "kc", "{.spec.domain.memory.guest}"), "160Mi");
    assert_eq!(c.get("vm", "default", "kc", "{.status.conditions[?(@.type==\"RestartRequired\")].status}"), "");
    let out = c.kubectl(&["replace", "--raw", "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/kc/stop", "-f", "-"], Some("{}"));
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_status("default", "kc", "Stopped", 60);
    let out = c.kubectl(&["delete", "vm", "kc", "--wait=true", "--timeout=60s"], None);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_node_whose_handler_stops_answering_goes_not_ready_and_its_vms_move_on() {
    let _one = one_at_a_time();
    let c = Cluster::up_with(&["--node-lease-duration", "4s"]);
    c.apply(&guest_vm("nl", "svc", "always", "#vmform-marker n", "    termination-grace \"5s\""));
    c.wait_status("nl", "svc", "Running", 120);
    let first_uid = c.get("vmi", "nl", "svc", "{.metadata.uid}");
    let handler = c.pid_of("runtime handler").expect("a handler runs");
    // A frozen handler: alive (so `vmform up` does not restart it) but silent.
    kill(handler, libc::SIGSTOP);
    c.wait("node", "", "local", "{.status.conditions[?(@.type==\"Ready\")].status}", |s| s == "Unknown", 30);
    // The controller fails the VMI on the lost node; Always wants a new one, which has
    // nowhere to go.
    c.wait("vm", "nl", "svc", "{.status.printableStatus}", |s| s == "ErrorUnschedulable", 30);
    let message = c.get("vmi", "nl", "svc", "{.status.conditions[?(@.type==\"PodScheduled\")].message}");
    assert!(message.contains("not ready"), "{message}");
    kill(handler, libc::SIGCONT);
    // Back: the node is Ready, the old guest (its VMI gone) is stopped, the new VMI runs.
    c.wait("node", "", "local", "{.status.conditions[?(@.type==\"Ready\")].status}", |s| s == "True", 30);
    c.wait_status("nl", "svc", "Running", 120);
    assert_ne!(c.get("vmi", "nl", "svc", "{.metadata.uid}"), first_uid);
    let started = Instant::now();
    while qemu_pids().iter().filter(|(_, cmd)| cmd.contains("guest=nl_svc,")).count() > 1 {
        assert!(started.elapsed() < Duration::from_secs(30), "the old guest was never stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_guest_keeps_running_while_libvirtd_restarts() {
    let _one = one_at_a_time();
    let c = Cluster::up();
    c.apply(&guest_vm("lv", "db", "always", "#vmform-marker l", "    termination-grace \"10s\""));
    c.wait_status("lv", "db", "Running", 120);
    c.wait_console("lv", "db", "tick 1", 120);
    let qemu = c.qemu_pid("lv_db").expect("QEMU runs");
    let libvirtd = c.pid_of("libvirtd").expect("libvirtd runs");
    kill(libvirtd, libc::SIGKILL);
    // The handler starts it again; the guest never noticed.
    let started = Instant::now();
    loop {
        if c.pid_of("libvirtd").is_some_and(|p| p != libvirtd) && c.virsh(&["domstate", "lv_db"]).status.success() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "libvirtd was not restarted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(c.qemu_pid("lv_db"), Some(qemu));
    let ticks = c.console("lv", "db").matches("tick ").count();
    std::thread::sleep(Duration::from_secs(3));
    assert!(c.console("lv", "db").matches("tick ").count() > ticks, "the guest kept running");
    assert_eq!(c.get("vm", "lv", "db", "{.status.printableStatus}"), "Running");
    // The launcher still drives it through the new daemon.
    let stop = c.vmform(&["vm", "stop", "db", "-n", "lv"]);
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
    c.wait_status("lv", "db", "Stopped", 60);
    assert_eq!(c.qemu_pid("lv_db"), None);
}

/// Serve one file over HTTP on 127.0.0.1, slowly enough (about 4 MiB/s) that an import's
/// progress can be seen. Returns the URL.
fn serve_slowly(file: PathBuf) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/disk.img", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let file = file.clone();
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let body = std::fs::read(&file).unwrap();
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n", body.len());
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for chunk in body.chunks(256 * 1024) {
                    if stream.write_all(chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(60));
                }
            });
        }
    });
    url
}

#[test]
fn a_data_volume_is_imported_over_http_and_ports_are_forwarded() {
    let _one = one_at_a_time();
    let c = Cluster::up();
    let url = serve_slowly(guest_disk());
    let spec = format!(
        "vm \"imp\" {{\n    namespace \"dv\"\n    run-strategy \"always\"\n    memory \"128Mi\"\n    disk \"root\" {{\n        volume size=\"64Mi\" source=\"{url}\"\n        bus \"virtio\"\n        boot-order 1\n    }}\n    network \"default\" masquerade=#true\n    port \"ssh\" 22\n}}\n"
    );
    c.apply(&spec);
    // The import shows in the VM's status while it runs.
    let progress = c.wait("vm", "dv", "imp", "{.status.conditions[?(@.type==\"DataVolumesReady\")].message}", |m| m.contains('%'), 60);
    assert!(progress.contains("imp-root"), "{progress}");
    assert_eq!(c.get("vm", "dv", "imp", "{.status.printableStatus}"), "Provisioning");
    c.wait_status("dv", "imp", "Running", 180);
    // The guest boots from the imported copy.
    c.wait_console("dv", "imp", "VMFORM-TEST-GUEST READY", 120);
    let migratable = c.get("vmi", "dv", "imp", "{.status.conditions[?(@.type==\"LiveMigratable\")].message}");
    assert!(migratable.contains("PVC imp-root is not shared"), "a claim without ReadWriteMany cannot move: {migratable}");
    let volume = c.data.path().join("volumes/dv/imp-root.img");
    assert_eq!(std::fs::metadata(&volume).unwrap().len(), 64 << 20, "grown to the requested size");

    // Its declared port is forwarded from a loopback port that `vmform vm ports` lists.
    let ports = c.vmform(&["vm", "ports", "imp", "-n", "dv"]);
    assert_eq!(code(&ports), 0, "{}", stderr(&ports));
    let table = stdout(&ports);
    let host_port: u16 = table
        .lines()
        .find(|l| l.contains("ssh"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("127.0.0.1:")).and_then(|p| p.parse().ok()))
        .unwrap_or_else(|| panic!("no 127.0.0.1 port for ssh in:\n{table}"));
    std::net::TcpStream::connect(("127.0.0.1", host_port)).expect("QEMU listens on the forwarded port");

    // Deleting the VM deletes the volume it owns (a loss the plan asks to confirm).
    let out = c.vmform(&["destroy", "--auto-approve", "--allow-data-loss", c.project.path().to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    c.wait("vm", "dv", "imp", "{.metadata.name}", |n| n.is_empty(), 90);
    assert!(!volume.exists(), "the data volume was deleted with its VM");
}

// --- How guests are accelerated: KVM when proven, TCG otherwise, on every kind of host ---

/// A stand-in `qemu-system-x86_64` for faults this host may not have (named as a fake):
/// it passes every run through to the real QEMU, except a guest asked to run under KVM,
/// for which it behaves as `kvm` says: `msr` dies as QEMU does on a nested KVM that
/// half-works (shared/notes/kvm-on-these-machines.md), `hang` never starts.
fn fake_qemu(dir: &std::path::Path, kvm: &str) -> PathBuf {
    let behaviour = match kvm {
        "msr" => "echo \"qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\" >&2\n  echo \"qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion \\`ret == cpu->kvm_msr_buf->nmsrs' failed.\" >&2\n  exit 134",
        "hang" => "exec sleep 600",
        other => panic!("no fake for {other}"),
    };
    let path = dir.join("qemu-system-x86_64");
    let script = format!(
        "#!/bin/sh\nkvm=no guest=no\nfor a in \"$@\"; do\n  case \"$a\" in kvm|*accel=kvm*) kvm=yes ;; guest=*) guest=yes ;; esac\ndone\nif [ $kvm = yes ] && [ $guest = yes ]; then\n  {behaviour}\nfi\nexec /usr/bin/qemu-system-x86_64 \"$@\"\n"
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Whether KVM was refused before any QEMU ran (no `/dev/kvm`, or one libvirt cannot use):
/// a fake QEMU is never asked then, and the reason is libvirt's or the probe's own.
fn refused_before_qemu(reason: &str) -> bool {
    ["has no /dev/kvm", "Domain requires KVM", "domaintype=kvm"].iter().any(|r| reason.contains(r))
}

impl Cluster {
    /// Wait until the node's handlers (the first, then each one restarted) have chosen
    /// an accelerator `n` times; their log lines saying so.
    fn wait_for_accelerator_choices(&self, n: usize) -> Vec<String> {
        let log = self.node_dir().join("handler.log");
        let started = Instant::now();
        loop {
            let chosen: Vec<String> = std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains(", accelerator ")).map(str::to_string).collect();
            if chosen.len() >= n {
                return chosen;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no new handler chose an accelerator:\n{}", chosen.join("\n"));
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The node's accelerator and its reason, from its annotations.
    fn node_accel(&self) -> (String, String) {
        let accel = self.get("node", "", "local", "{.metadata.annotations.vmform\\.io/accel}");
        let reason = self.get("node", "", "local", "{.metadata.annotations.vmform\\.io/accel-reason}");
        (accel, reason)
    }
}

#[test]
fn the_node_says_which_accelerator_it_chose_and_why_and_tcg_can_be_asked_for() {
    let _one = one_at_a_time();
    // This host as it is: whatever its KVM does, the node says what it chose and why, in
    // `up`'s output, on the Node and in `vmform status`.
    let c = Cluster::up();
    let (accel, reason) = c.node_accel();
    assert!(accel == "kvm" || accel == "tcg", "{accel}");
    assert!(!reason.is_empty());
    let line = format!("node local: guests run under {accel} ({reason})");
    assert!(c.up.contains(&line), "up said:\n{}", c.up);
    assert_eq!(c.get("node", "", "local", "{.metadata.annotations.vmform\\.io/accel-choice}"), "auto");
    let status = run(&["status", "--data-dir", c.data.path().to_str().unwrap()]);
    assert!(stdout(&status).contains(&line), "{}", stdout(&status));
    drop(c);

    // Asked for TCG, and given labels: node-selectors of VMs find the node.
    let c = Cluster::up_with(&["--accel", "tcg", "--node-label", "example.com/edge=true"]);
    assert_eq!(c.node_accel(), ("tcg".to_string(), "chosen with --accel tcg".to_string()));
    assert_eq!(c.get("node", "", "local", "{.metadata.labels.example\\.com/edge}"), "true");
    // A label set by hand stays when the handler registers the node again.
    let labelled = c.kubectl(&["label", "node", "local", "example.com/rack=r1"], None);
    assert!(labelled.status.success(), "{}", stderr(&labelled));
    kill(c.pid_of("runtime handler").expect("a handler runs"), libc::SIGKILL);
    c.wait_for_accelerator_choices(2);
    c.wait("node", "", "local", "{.status.conditions[?(@.type==\"Ready\")].status}", |s| s == "True", 30);
    assert_eq!(c.get("node", "", "local", "{.metadata.labels.example\\.com/rack}"), "r1");
    assert_eq!(c.get("node", "", "local", "{.metadata.labels.example\\.com/edge}"), "true");
}

#[test]
fn without_kvm_the_node_says_so_and_guests_run_under_tcg() {
    let _one = one_at_a_time();
    let c = Cluster::up_without_kvm();
    let (accel, reason) = c.node_accel();
    assert_eq!(accel, "tcg", "{reason}");
    assert!(reason.to_lowercase().contains("kvm"), "the reason names KVM: {reason}");
    c.apply(&guest_vm("nokvm", "vm", "always", "#vmform-marker nokvm", ""));
    c.wait_console("nokvm", "vm", "VMFORM-TEST-GUEST READY", 120);
}

#[test]
fn a_half_working_kvm_is_found_by_the_probe_and_guests_run_under_tcg() {
    let _one = one_at_a_time();
    let fakes = tempfile::tempdir().unwrap();
    let qemu = fake_qemu(fakes.path(), "msr");
    let c = Cluster::up_with(&["--emulator", qemu.to_str().unwrap()]);
    let (accel, reason) = c.node_accel();
    assert_eq!(accel, "tcg", "{reason}");
    assert!(refused_before_qemu(&reason) || reason.contains("failed to set MSR 0x10a"), "{reason}");
    c.apply(&guest_vm("hw", "vm", "always", "#vmform-marker hw", ""));
    c.wait_status("hw", "vm", "Running", 120);
    c.wait_console("hw", "vm", "VMFORM-TEST-GUEST READY", 120);
    drop(c);

    // Asked for KVM on such a host: a clear error at `up`, and nothing left running.
    let data = tempfile::Builder::new().prefix("vmf").tempdir().unwrap();
    let out = run(&["up", "--detach", "--listen", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap(), "--accel", "kvm", "--emulator", qemu.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}{}", stdout(&out), stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("node local: runs no guests: KVM was asked for (--accel kvm), but guests cannot run under it here"), "{said}");
    let left = processes_of(data.path());
    assert!(left.is_empty(), "a refused `up` left processes behind:\n{}", left.join("\n"));
}

#[test]
fn a_hanging_kvm_is_cut_off_by_the_probes_time_limit() {
    let _one = one_at_a_time();
    let fakes = tempfile::tempdir().unwrap();
    let qemu = fake_qemu(fakes.path(), "hang");
    let c = Cluster::up_with(&["--emulator", qemu.to_str().unwrap(), "--accel-probe-timeout", "3s"]);
    let (accel, reason) = c.node_accel();
    assert_eq!(accel, "tcg", "{reason}");
    assert!(refused_before_qemu(&reason) || reason.contains("within 3 s"), "{reason}");
    c.apply(&guest_vm("hang", "vm", "always", "#vmform-marker hang", ""));
    c.wait_console("hang", "vm", "VMFORM-TEST-GUEST READY", 120);
}

/// The probe passed (here: taken on trust, so that every host takes this path), yet a
/// guest fails under KVM: the node turns to TCG, says so, and the guest runs at once,
/// without counting toward a crash loop.
#[test]
fn a_guest_that_fails_under_kvm_turns_its_node_to_tcg_and_starts_at_once() {
    let _one = one_at_a_time();
    let fakes = tempfile::tempdir().unwrap();
    let qemu = fake_qemu(fakes.path(), "msr");
    let c = Cluster::up_with(&["--emulator", qemu.to_str().unwrap(), "--trust-kvm"]);
    assert_eq!(c.node_accel().0, "kvm");
    std::fs::write(c.project.path().join("vms.kdl"), guest_vm("fb", "vm", "always", "#vmform-marker fb", "")).unwrap();
    let out = c.vmform(&["apply", "--auto-approve", "--wait", "--timeout", "5m", c.project.path().to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    c.wait_console("fb", "vm", "VMFORM-TEST-GUEST READY", 120);

    let (accel, reason) = c.node_accel();
    assert_eq!(accel, "tcg");
    assert!(reason.starts_with("guest fb/vm failed under KVM ("), "{reason}");
    // Under KVM the fake QEMU dies with the MSR assertion; with no /dev/kvm at all,
    // libvirt refuses the KVM domain first. Either is a KVM failure.
    assert!(refused_before_qemu(&reason) || reason.contains("failed to set MSR 0x10a to 0x69"), "{reason}");
    let events = c.kubectl(&["get", "events", "-n", "default", "-o", "jsonpath={.items[?(@.involvedObject.name==\"local\")].reason}"], None);
    assert!(stdout(&events).contains("AcceleratorFallback"), "{}{}", stdout(&events), stderr(&events));
    assert_eq!(c.get("vm", "fb", "vm", "{.status.startFailure}"), "", "the KVM failure did not count toward a crash loop");
    let uid = c.get("vmi", "fb", "vm", "{.metadata.uid}");
    let launcher_status = std::fs::read_to_string(c.node_dir().join("vmis").join(uid).join("status.json")).unwrap();
    assert!(launcher_status.contains("\"accel\": \"tcg\"") || launcher_status.contains("\"accel\":\"tcg\""), "{launcher_status}");

    // The fallback outlasts the handler: a new one does not trust KVM again.
    kill(c.pid_of("runtime handler").expect("a handler runs"), libc::SIGKILL);
    let second = c.wait_for_accelerator_choices(2).pop().unwrap();
    assert!(second.contains("accelerator tcg (guest fb/vm failed under KVM"), "{second}");
    let status = run(&["status", "--data-dir", c.data.path().to_str().unwrap()]);
    assert!(stdout(&status).contains("node local: guests run under tcg (guest fb/vm failed under KVM"), "{}", stdout(&status));
}

// --- Container disks pulled from a registry ---

/// Debian's `docker-registry` (the CNCF distribution registry) on 127.0.0.1 at a free port,
/// its storage in a temporary directory.
struct Registry {
    child: Option<std::process::Child>,
    port: u16,
    /// Its storage and log, removed with it.
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n", dir.path().join("storage").display());
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child: Some(child), port, _dir: dir }
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A vm booting the container disk `image`.
fn image_vm(namespace: &str, name: &str, image: &str, marker: &str) -> String {
    format!(
        "vm \"{name}\" {{\n    namespace \"{namespace}\"\n    run-strategy \"always\"\n    memory \"128Mi\"\n    disk \"root\" {{\n        image \"{image}\"\n        boot-order 1\n    }}\n    cloud-init {{\n        user-data \"#cloud-config\\n#vmform-marker {marker}\\n\"\n    }}\n}}\n"
    )
}

#[test]
fn a_container_disk_from_a_registry_boots_and_restarts_from_the_cache() {
    let tools = std::path::Path::new("/usr/bin/docker-registry").exists() && Command::new("skopeo").arg("--version").output().is_ok();
    if !vmform_schema_check::precondition(tools, "docker-registry and skopeo (Debian packages)") {
        return;
    }
    let _one = one_at_a_time();
    let mut registry = Registry::start();
    // The test guest, packed and pushed by skopeo (never by vmform).
    let image = format!("{}/vmform/test-guest:1", registry.addr());
    let pushed = run_script("scripts/container-disk", &[guest_disk().to_str().unwrap(), &image]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let c = Cluster::up();
    let missing = format!("{}/vmform/test-guest:nope", registry.addr());
    // And a data volume imported from the same image (CDI's registry source).
    let imported = image_vm("cd", "imported", "", "imported").replace("image \"\"", &format!("volume size=\"64Mi\" source=\"docker://{image}\""));
    std::fs::write(c.project.path().join("vms.kdl"), image_vm("cd", "guest", &image, "cd") + &image_vm("cd", "typo", &missing, "typo") + &imported).unwrap();
    let out = c.vmform(&["apply", "--auto-approve", c.project.path().to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    c.wait_status("cd", "guest", "Running", 180);
    c.wait_console("cd", "guest", "VMFORM-USER-DATA: #vmform-marker cd", 120);
    // It boots from a qcow2 overlay of its own on the cached image.
    let uid = c.get("vmi", "cd", "guest", "{.metadata.uid}");
    let overlay = c.node_dir().join("vmis").join(&uid).join("disks/root.qcow2");
    let info = Command::new("qemu-img").args(["info", "--output=json", "-U"]).arg(&overlay).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(info.contains("\"format\": \"qcow2\"") && info.contains(&c.data.path().join("images").display().to_string()), "{info}");
    // A tag the registry does not have: ErrImagePull, then ImagePullBackOff, naming the image.
    c.wait("vm", "cd", "typo", "{.status.printableStatus}", |s| s == "ErrImagePull" || s == "ImagePullBackOff", 120);
    c.wait("vm", "cd", "typo", "{.status.conditions[?(@.type==\"Failure\")].message}", |m| m.contains(&missing) && m.contains("not found"), 60);
    assert_eq!(c.get("vm", "cd", "typo", "{.status.conditions[?(@.type==\"Failure\")].reason}"), "ErrImagePull");
    c.wait_status("cd", "typo", "ImagePullBackOff", 60);

    c.wait_console("cd", "imported", "VMFORM-USER-DATA: #vmform-marker imported", 180);
    let claim = c.data.path().join("volumes/cd/imported-root.img");
    assert!(claim.is_file(), "the imported volume is {}", claim.display());

    // `vmform image pull` fills a cache the same way, here a data dir of its own.
    let elsewhere = tempfile::tempdir().unwrap();
    let pulled = run(&["image", "pull", &image, "--data-dir", elsewhere.path().to_str().unwrap()]);
    assert_eq!(code(&pulled), 0, "{}", stderr(&pulled));
    assert!(stdout(&pulled).contains("(pulled; raw disk of"), "{}", stdout(&pulled));

    // With the registry gone, a restart boots from the cache (a pinned tag: IfNotPresent).
    registry.stop();
    let again = run(&["image", "pull", &image, "--data-dir", elsewhere.path().to_str().unwrap()]);
    assert!(stdout(&again).contains("(from the cache;"), "{}{}", stdout(&again), stderr(&again));
    let restarted = c.vmform(&["vm", "restart", "guest", "-n", "cd", "--wait", "--timeout", "5m"]);
    assert_eq!(code(&restarted), 0, "{}{}", stdout(&restarted), stderr(&restarted));
    let second = c.get("vmi", "cd", "guest", "{.metadata.uid}");
    assert_ne!(second, uid);
    c.wait_console("cd", "guest", "VMFORM-TEST-GUEST READY", 120);

    // The cache lists the image as in use, and prune keeps it until no guest boots from it.
    let data = c.data.path().to_str().unwrap();
    let listed = stdout(&run(&["image", "list", "--data-dir", data]));
    assert!(listed.lines().any(|l| l.contains("vmform/test-guest:1") && l.ends_with("(in use)")), "{listed}");
    let pruned = stdout(&run(&["image", "prune", "--data-dir", data]));
    assert!(pruned.contains("0 images removed, 1 kept (in use)"), "{pruned}");
    let out = c.vmform(&["destroy", "--auto-approve", "--allow-data-loss", c.project.path().to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let started = Instant::now();
    loop {
        let pruned = stdout(&run(&["image", "prune", "--data-dir", data]));
        if pruned.contains("1 image removed, 0 kept") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the image stayed in use: {pruned}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(stdout(&run(&["image", "list", "--data-dir", data])).contains("0 images"));
}

fn run_script(script: &str, args: &[&str]) -> Output {
    Command::new(common::root().join(script)).args(args).output().expect("the script runs")
}
