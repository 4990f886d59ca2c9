//! The runtime's figures (book/src/benchmarks.md): the time from `vmform apply` to a
//! Running VM and to the guest's first console output, and from `vmform vm stop` to a
//! Stopped VM (p50 of 10), the launcher's own memory, and how many test guests one node
//! runs at once.
//!
//!   cargo bench --bench runtime            # all
//!   cargo bench --bench runtime -- start   # apply → Running only
//!   cargo bench --bench runtime -- fleet   # guests at once only (FLEET=20 by default)
//!
//! Needs what the tests need (libvirt, QEMU, the test guest); runs guests under TCG.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{guest_disk, run as vmform, stdout};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let disk = guest_disk();
    if wants("start") {
        start_times(&disk);
    }
    if wants("fleet") {
        let n = std::env::var("FLEET").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
        fleet(&disk, n);
    }
}

struct Cluster {
    data: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl Cluster {
    fn up() -> Cluster {
        let data = tempfile::Builder::new().prefix("vmfb").tempdir().unwrap();
        let out = vmform(&["up", "--detach", "--listen", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let c = Cluster { data, project: tempfile::tempdir().unwrap() };
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.get("node", "", "local", "{.status.conditions[0].status}") != "True" {
            assert!(Instant::now() < deadline, "node local never got Ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }
    fn kubeconfig(&self) -> PathBuf {
        self.data.path().join("kubeconfig")
    }
    fn apply(&self, spec: &str) {
        std::fs::write(self.project.path().join("vms.kdl"), spec).unwrap();
        let kubeconfig = self.kubeconfig();
        let out = vmform(&["apply", "--auto-approve", "--kubeconfig", kubeconfig.to_str().unwrap(), self.project.path().to_str().unwrap()]);
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    fn get(&self, kind: &str, namespace: &str, name: &str, jsonpath: &str) -> String {
        let output = format!("jsonpath={jsonpath}");
        let mut args = vec!["get", kind];
        if !name.is_empty() {
            args.push(name);
        }
        args.extend(["-o", &output]);
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        stdout(&common::kubectl(&self.kubeconfig(), &args, None))
    }
    fn vmis_dir(&self) -> PathBuf {
        self.data.path().join("nodes/local/vmis")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        vmform(&["down", "--data-dir", self.data.path().to_str().unwrap()]);
    }
}

fn spec(disk: &Path, names: &[String], memory: &str) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "vm \"{n}\" {{\n    namespace \"bench\"\n    run-strategy \"always\"\n    memory \"{memory}\"\n    disk \"root\" {{ host-disk \"{}\" type=\"disk\"; bus \"virtio\"; read-only; boot-order 1 }}\n    termination-grace \"0s\"\n}}\n",
                disk.display()
            )
        })
        .collect()
}

/// The console log of the one VMI dir in `vmis`, if it has one.
fn console_of(vmis: &Path, uid: &str) -> Option<String> {
    std::fs::read_to_string(vmis.join(uid).join("console.log")).ok()
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// apply → Running, → first console byte, → the guest's READY line; 10 runs.
fn start_times(disk: &Path) {
    let c = Cluster::up();
    let (mut running, mut first_output, mut ready, mut stopped) = (vec![], vec![], vec![], vec![]);
    for i in 0..10 {
        let name = format!("s{i}");
        let started = Instant::now();
        c.apply(&spec(disk, std::slice::from_ref(&name), "128Mi"));
        let mut t_running = None;
        let mut t_output = None;
        let uid = loop {
            let uid = c.get("vmi", "bench", &name, "{.metadata.uid}");
            if !uid.is_empty() {
                break uid;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if t_running.is_none() && c.get("vm", "bench", &name, "{.status.printableStatus}") == "Running" {
                t_running = Some(started.elapsed());
            }
            let log = console_of(&c.vmis_dir(), &uid).unwrap_or_default();
            if t_output.is_none() && !log.trim().is_empty() {
                t_output = Some(started.elapsed());
            }
            if log.contains("VMFORM-TEST-GUEST READY") && t_running.is_some() {
                ready.push(started.elapsed().as_secs_f64());
                break;
            }
            assert!(Instant::now() < deadline, "{name} never got READY");
            std::thread::sleep(Duration::from_millis(10));
        }
        running.push(t_running.unwrap().as_secs_f64());
        first_output.push(t_output.unwrap().as_secs_f64());
        // `vmform vm stop` → the VM Stopped (grace 0 s: libvirt ends QEMU at once).
        let kubeconfig = c.kubeconfig();
        let stopping = Instant::now();
        let out = vmform(&["vm", "stop", &name, "-n", "bench", "--kubeconfig", kubeconfig.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        while c.get("vm", "bench", &name, "{.status.printableStatus}") != "Stopped" {
            assert!(stopping.elapsed() < Duration::from_secs(120), "{name} never stopped");
            std::thread::sleep(Duration::from_millis(10));
        }
        stopped.push(stopping.elapsed().as_secs_f64());
        // One guest at a time: the next run starts on an idle node.
        std::fs::write(c.project.path().join("vms.kdl"), "").unwrap();
        vmform(&["destroy", "--auto-approve", "--kubeconfig", kubeconfig.to_str().unwrap(), c.project.path().to_str().unwrap()]);
        while !c.get("vmi", "bench", &name, "{.metadata.uid}").is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!("apply → Running:             p50 {:.3} s  (min {:.3}, max {:.3})", percentile(&mut running, 0.5), running[0], running[running.len() - 1]);
    println!("apply → first console output: p50 {:.3} s  (min {:.3}, max {:.3})", percentile(&mut first_output, 0.5), first_output[0], first_output[first_output.len() - 1]);
    println!("apply → guest READY line:     p50 {:.3} s  (min {:.3}, max {:.3})", percentile(&mut ready, 0.5), ready[0], ready[ready.len() - 1]);
    println!("vm stop → Stopped:            p50 {:.3} s  (min {:.3}, max {:.3})", percentile(&mut stopped, 0.5), stopped[0], stopped[stopped.len() - 1]);
}

/// Start `n` guests at once; report how many run and reach READY, and the launchers'
/// memory (VmRSS, without QEMU).
fn fleet(disk: &Path, n: usize) {
    let c = Cluster::up();
    let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
    let started = Instant::now();
    c.apply(&spec(disk, &names, "128Mi"));
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut last = (0, 0);
    loop {
        let statuses = c.get("vm", "bench", "", "{range .items[*]}{.status.printableStatus}{\"\\n\"}{end}");
        let running = statuses.lines().filter(|s| *s == "Running").count();
        let ready = std::fs::read_dir(c.vmis_dir())
            .map(|d| d.flatten().filter(|e| std::fs::read_to_string(e.path().join("console.log")).is_ok_and(|l| l.contains("VMFORM-TEST-GUEST READY"))).count())
            .unwrap_or(0);
        if (running, ready) != last {
            println!("{:6.1} s: {running}/{n} Running, {ready} READY", started.elapsed().as_secs_f64());
            last = (running, ready);
        }
        if ready >= running && running + statuses.lines().filter(|s| *s == "ErrorUnschedulable").count() >= n {
            break;
        }
        if Instant::now() > deadline {
            println!("gave up after 900 s");
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The launchers' own memory: VmRSS counts the shared libraries (libvirt.so and its
    // ~55 dependencies, also mapped by libvirtd) in full in every launcher; Pss shares
    // them out; RssAnon is what each launcher alone holds.
    let field = |text: &str, key: &str| text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok());
    let (mut rss, mut pss, mut anon) = (vec![], vec![], vec![]);
    for entry in std::fs::read_dir(c.vmis_dir()).unwrap().flatten() {
        let Some(pid) = std::fs::read_to_string(entry.path().join("launcher.pid")).ok().and_then(|p| p.trim().parse::<u32>().ok()) else { continue };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        if let (Some(r), Some(p), Some(a)) = (field(&status, "VmRSS:"), field(&rollup, "Pss:"), field(&status, "RssAnon:")) {
            rss.push(r / 1024.0);
            pss.push(p / 1024.0);
            anon.push(a / 1024.0);
        }
    }
    if !rss.is_empty() {
        let n = rss.len();
        println!("launcher memory over {n} launchers (p50 / max, MiB):");
        println!("  VmRSS   {:.1} / {:.1}", percentile(&mut rss, 0.5), rss[n - 1]);
        println!("  Pss     {:.1} / {:.1}", percentile(&mut pss, 0.5), pss[n - 1]);
        println!("  RssAnon {:.1} / {:.1}", percentile(&mut anon, 0.5), anon[n - 1]);
    }
    let unschedulable = c.get("vm", "bench", "", "{range .items[*]}{.metadata.name}={.status.printableStatus}{\" \"}{end}");
    println!("final: {unschedulable}");
}
