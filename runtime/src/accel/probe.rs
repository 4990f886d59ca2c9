//! The KVM probe: proves that guests run under KVM on this node, or says why not.
//!
//! It starts a transient domain on the node's own libvirtd, built by the launcher's own
//! domain builder from a VMI, so it gets exactly the machine type, CPU model and CPU
//! features guests get under KVM. Its disk is [`PROBE_GUEST`](super::PROBE_GUEST), a
//! boot sector that goes to 64-bit long mode and writes a line to the serial console
//! there. KVM is chosen only when that line arrives. QEMU dying at start (the MSR
//! assertion of nested KVM), the guest stopping ("KVM internal error"), libvirt refusing
//! a KVM domain, or a hang until the time limit all say TCG, with the reason.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{kvm_failure, Accel, Verdict, PROBE_GUEST, PROBE_LONG_MODE, PROBE_REAL_MODE};
use crate::launcher::domain::{self, BuildOptions, HostFirmware};
use crate::libvirt::{Connection, DomainState, Guest};
use crate::Error;

/// The probe's domain, `<namespace>_<name>` as every domain is named.
const NAMESPACE: &str = "vmform-system";
const NAME: &str = "accel-probe";
/// The probe disk's size: SeaBIOS reads no boot sector from a disk of one sector.
const DISK_SIZE: u64 = 1 << 20;
const POLL: Duration = Duration::from_millis(50);

/// Where the probe runs.
pub struct ProbeTarget<'a> {
    /// The node's libvirtd.
    pub libvirt_uri: &'a str,
    /// A dir of the node's for the probe's files (made, then removed).
    pub dir: &'a Path,
    /// The QEMU binary guests use (`--emulator`); `None`: libvirt's default.
    pub emulator: Option<&'a Path>,
    /// libvirt's per-domain QEMU logs, where QEMU says why a guest stopped
    /// ([`qemu_log_dir`](crate::libvirt::daemon::qemu_log_dir)); `None`: not known.
    pub qemu_log_dir: Option<&'a Path>,
}

/// Run the probe, at most `timeout` (a hanging `/dev/kvm` is left behind then, its
/// domain destroyed).
pub fn probe(target: &ProbeTarget<'_>, timeout: Duration) -> Verdict {
    if !Path::new("/dev/kvm").exists() {
        return Verdict::new(Accel::Tcg, "this host has no /dev/kvm");
    }
    let (tx, rx) = mpsc::channel();
    let uri = target.libvirt_uri.to_string();
    let dir = target.dir.to_path_buf();
    let emulator = target.emulator.map(Path::to_path_buf);
    let qemu_log = target.qemu_log_dir.map(|d| d.join(format!("{NAMESPACE}_{NAME}.log")));
    let deadline = Instant::now() + timeout;
    // libvirt's calls can block for as long as QEMU hangs in /dev/kvm: the probe runs on
    // a thread of its own, and a hang is cut off here.
    std::thread::spawn(move || {
        let verdict = run(&uri, &dir, emulator.as_deref(), qemu_log.as_deref(), deadline);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = tx.send(verdict);
    });
    match rx.recv_timeout(timeout + Duration::from_secs(5)) {
        Ok(verdict) => verdict,
        Err(_) => {
            destroy_probe_domain(target.libvirt_uri);
            Verdict::new(Accel::Tcg, format!("a guest did not start under KVM within {} s (libvirt did not answer: a hanging /dev/kvm?)", timeout.as_secs()))
        }
    }
}

fn run(uri: &str, dir: &Path, emulator: Option<&Path>, qemu_log: Option<&Path>, deadline: Instant) -> Verdict {
    let started = Instant::now();
    let plan = match prepare(dir, emulator) {
        Ok(plan) => plan,
        Err(e) => return Verdict::new(Accel::Tcg, format!("the KVM probe could not be prepared: {e}")),
    };
    let Ok(conn) = Connection::open(uri) else {
        return Verdict::new(Accel::Tcg, format!("the KVM probe could not reach libvirt at {uri}"));
    };
    destroy_leftover(&conn);
    if let Some(log) = qemu_log {
        let _ = std::fs::remove_file(log);
    }
    match conn.start_transient(&plan.xml) {
        Err(e) => {
            // libvirt does not always relay QEMU's last words ("failed to connect to monitor
            // socket" when QEMU died first); the domain's log has them.
            let log = qemu_log.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
            let why = kvm_failure(&e.message).or_else(|| kvm_failure(&log)).unwrap_or_else(|| reason(&e.message, ""));
            Verdict::new(Accel::Tcg, format!("QEMU did not start a guest under KVM: {why}"))
        }
        Ok(dom) => {
            let verdict = watch(&dom, &plan.console_log, qemu_log, started, deadline);
            let _ = dom.destroy();
            verdict
        }
    }
}

/// The probe's files, and its domain as the launcher would define it under KVM.
fn prepare(dir: &Path, emulator: Option<&Path>) -> Result<domain::DomainPlan, Error> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| Error::prepare(format!("{}: {e}", dir.display())))?;
    let disk = dir.join("probe-guest.img");
    let mut image = PROBE_GUEST.to_vec();
    image.resize(DISK_SIZE as usize, 0);
    std::fs::write(&disk, image).map_err(|e| Error::prepare(format!("{}: {e}", disk.display())))?;
    let vmi = json!({
        "metadata": { "name": NAME, "namespace": NAMESPACE, "uid": uuid::Uuid::new_v4().to_string() },
        "spec": {
            "domain": {
                "resources": { "requests": { "memory": "32Mi" } },
                "devices": { "disks": [{ "name": "probe", "disk": { "bus": "virtio" } }] },
            },
            "volumes": [{ "name": "probe", "hostDisk": { "path": disk, "type": "Disk" } }],
        },
    });
    let firmware = HostFirmware::default();
    let mut no_ports = |_: &str| Err(std::io::Error::other("the probe forwards no ports"));
    domain::build(
        &vmi,
        BuildOptions { accel: Accel::Kvm, vmi_dir: dir, volumes_dir: dir, firmware: &firmware, host_ip: "127.0.0.1", host_port: &mut no_ports, emulator },
    )
}

/// Wait for the guest's long-mode line, its QEMU to stop, or the deadline.
fn watch(dom: &Guest, console_log: &Path, qemu_log: Option<&Path>, started: Instant, deadline: Instant) -> Verdict {
    loop {
        let console = std::fs::read_to_string(console_log).unwrap_or_default();
        if console.contains(PROBE_LONG_MODE) {
            return Verdict::new(Accel::Kvm, format!("a 64-bit guest with the guests' machine type and CPU ran under KVM ({} ms)", started.elapsed().as_millis()));
        }
        let stage = if console.contains(PROBE_REAL_MODE) { "after its boot sector started" } else { "before its boot sector ran" };
        let running = dom.state().is_ok_and(|state| state == DomainState::Running);
        if !running {
            // QEMU stops a guest whose vCPU KVM cannot run; it says why in its log.
            let log = qemu_log.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
            return Verdict::new(Accel::Tcg, format!("a guest stopped under KVM {stage}: {}", reason(&log, "QEMU stopped it")));
        }
        if Instant::now() >= deadline {
            return Verdict::new(Accel::Tcg, format!("a guest did not reach 64-bit mode under KVM within {} s ({stage})", (deadline - started).as_secs()));
        }
        std::thread::sleep(POLL);
    }
}

/// The line that says KVM failed, else the last line said, else `fallback`.
fn reason<'a>(text: &'a str, fallback: &'a str) -> &'a str {
    kvm_failure(text).or_else(|| text.lines().map(str::trim).rfind(|l| !l.is_empty())).unwrap_or(fallback)
}

fn destroy_leftover(conn: &Connection) {
    if let Ok(dom) = conn.guest_by_name(&format!("{NAMESPACE}_{NAME}")) {
        let _ = dom.destroy();
        let _ = dom.undefine();
    }
}

fn destroy_probe_domain(uri: &str) {
    let uri = uri.to_string();
    // Even this may block on a QEMU stuck in the kernel: never wait for it.
    std::thread::spawn(move || {
        if let Ok(conn) = Connection::open(&uri) {
            destroy_leftover(&conn);
        }
    });
}
