//! The launcher's libvirt side: define, start, watch, shut down, clean up.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::domain::{self, BuildOptions, DomainPlan, HostFirmware};
use crate::libvirt::{DomainState, Guest, LibvirtError, ShutoffReason};
use crate::Error;
use super::session::{connect_patiently, log, Conn, Launcher, QemuLog, CONNECT_PATIENCE, POLL};
use super::{ExitKind, LauncherArgs, LauncherExit, LauncherPhase};

/// Picks a free port for a protocol on the address forwarded ports bind.
type PortPicker = dyn FnMut(&str) -> std::io::Result<u16>;

pub(super) fn run(args: LauncherArgs) -> LauncherExit {
    crate::libvirt::silence_errors();
    let term = Arc::new(AtomicBool::new(false));
    let sig_ids: Vec<_> = [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT]
        .into_iter()
        .filter_map(|sig| signal_hook::flag::register(sig, Arc::clone(&term)).ok())
        .collect();
    let mut l = Launcher::new(args, term);
    let exit = run_inner(&mut l);
    for id in sig_ids {
        signal_hook::low_level::unregister(id);
    }
    exit
}

fn run_inner(l: &mut Launcher) -> LauncherExit {
    let dir = l.args.vmi_dir.clone();
    l.earlier_ports = super::read_status(&dir).map(|s| s.ports).unwrap_or_default();
    if let Err(e) = crate::files::write_atomically(&dir.join(super::PID_FILE), format!("{}\n", std::process::id()).as_bytes(), 0o644) {
        return l.finish(LauncherExit::new(ExitKind::Failed, format!("cannot write {}: {e}", dir.join(super::PID_FILE).display())));
    }
    let vmi: Value = match std::fs::read(dir.join(super::VMI_FILE)).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
        Ok(v) => v,
        Err(e) => return l.finish(LauncherExit::new(ExitKind::Failed, format!("cannot read {}: {e}", dir.join(super::VMI_FILE).display()))),
    };
    l.status.domain = domain::domain_name(&vmi).unwrap_or_default();
    l.set(LauncherPhase::Starting, "preparing the domain");

    let firmware = HostFirmware::detect();
    // A node with a network namespace of its own (`vmform up --nodes N`): its QEMU runs
    // there, so forwarded ports bind the node's address, which the host reaches.
    let node_dir = dir.parent().and_then(Path::parent).unwrap_or(&dir);
    let (netns, node_address) = crate::libvirt::daemon::read_node_network(node_dir);
    let qemu_log_dir = crate::libvirt::daemon::qemu_log_dir(node_dir);
    let (host_ip, mut host_port): (String, Box<PortPicker>) = match (netns, node_address) {
        (Some(netns), Some(address)) => {
            // A receiving launcher keeps the source's port numbers where they are free
            // here (each node has a network of its own), so a forwarded port moves with
            // only its address changed.
            let mut source_ports = if l.args.incoming.is_some() { source_ports(&vmi) } else { Vec::new() }.into_iter();
            (
                address.to_string(),
                Box::new(move |protocol: &str| match source_ports.next() {
                    Some(port) => super::free_port_in(&netns, address, port, protocol).or_else(|_| super::free_port_in(&netns, address, 0, protocol)),
                    None => super::free_port_in(&netns, address, 0, protocol),
                }),
            )
        }
        _ => ("127.0.0.1".to_string(), Box::new(super::free_host_port)),
    };
    let plan = match domain::build(
        &vmi,
        BuildOptions {
            host_ip: &host_ip,
            accel: l.args.accel,
            vmi_dir: &dir,
            volumes_dir: &l.args.volumes_dir,
            firmware: &firmware,
            host_port: &mut host_port,
            emulator: l.args.emulator.as_deref(),
        },
    ) {
        Ok(p) => p,
        Err(e) => return l.finish(LauncherExit::new(ExitKind::Failed, e.to_string())),
    };
    l.qemu_log = QemuLog::at_end(qemu_log_dir.join(format!("{}.log", plan.name)));

    let mut conn = match connect_patiently(&l.args.libvirt_uri, &l.term) {
        Ok(c) => c,
        Err(e) => return l.finish(LauncherExit::new(ExitKind::Failed, e.to_string())),
    };

    if let Some(uid) = l.args.incoming.clone() {
        return match super::migrate::receive(l, &mut conn, &plan, &uid) {
            Ok(super::migrate::Arrival::Arrived) => {
                l.set(LauncherPhase::Running, "the guest arrived (live migration)");
                let exit = supervise(l, &mut conn, &plan);
                cleanup(&mut conn, &plan);
                l.finish(exit)
            }
            Ok(super::migrate::Arrival::Cancelled) => {
                remove_dir(&plan.disks_dir);
                l.finish(LauncherExit::new(ExitKind::Shutdown, "SIGTERM before the guest arrived: not received"))
            }
            Err(message) => {
                remove_dir(&plan.disks_dir);
                l.finish(LauncherExit::new(ExitKind::Failed, format!("cannot receive the guest: {message}")))
            }
        };
    }

    // A replacement launcher attaches to the running domain of its VMI.
    let attached = match start_or_attach(l, &mut conn, &plan) {
        Ok(Start::Attached) => true,
        Ok(Start::Started) => false,
        Ok(Start::Cancelled) => {
            cleanup(&mut conn, &plan);
            return l.finish(LauncherExit::new(ExitKind::Shutdown, "SIGTERM before the guest was started: not started"));
        }
        Err(mut exit) => {
            // libvirt does not always relay QEMU's last words (a QEMU that died before its
            // monitor answered is "failed to connect to monitor socket"); its log has them.
            if let Some(line) = l.qemu_log.kvm_failure().filter(|line| exit.kind == ExitKind::Failed && !exit.message.contains(line.as_str())) {
                exit.message = format!("{}: QEMU said: {line}", exit.message);
            }
            cleanup(&mut conn, &plan);
            return l.finish(exit);
        }
    };
    let running = if attached { "attached to the running guest" } else { "the guest is running" };
    l.set(LauncherPhase::Running, running);

    let exit = supervise(l, &mut conn, &plan);
    cleanup(&mut conn, &plan);
    l.finish(exit)
}

enum Start {
    /// The domain was already running (a replacement launcher).
    Attached,
    Started,
    /// SIGTERM came before the domain was started.
    Cancelled,
}

/// Define and start the domain, or find it already running.
fn start_or_attach(l: &mut Launcher, conn: &mut Conn, plan: &DomainPlan) -> Result<Start, LauncherExit> {
    start_or_attach_inner(l, conn, plan).map_err(|e| LauncherExit::new(if e.is_image_pull() { ExitKind::ImagePull } else { ExitKind::Failed }, e.to_string()))
}

fn start_or_attach_inner(l: &mut Launcher, conn: &mut Conn, plan: &DomainPlan) -> Result<Start, Error> {
    let c = conn.get().ok_or_else(|| Error::prepare("libvirtd went away"))?;
    if let Ok(dom) = c.guest_by_uuid(&plan.uuid) {
        if dom.is_active().unwrap_or(false) {
            // The earlier launcher's forwarded ports still hold.
            l.status.ports = std::mem::take(&mut l.earlier_ports);
            log(&format!("domain {} is already running: attaching", plan.name));
            return Ok(Start::Attached);
        }
        log(&format!("undefining the leftover shut-off domain {}", plan.name));
        undefine(&dom).map_err(|e| Error::prepare(format!("cannot undefine the leftover domain {}: {e}", plan.name)))?;
    }
    if let Ok(dom) = c.guest_by_name(&plan.name) {
        if dom.is_active().unwrap_or(false) {
            let other = dom.uuid().unwrap_or_default();
            return Err(Error::prepare(format!("a running domain {} (uuid {other}) of another VMI is in the way", plan.name)));
        }
        log(&format!("undefining the leftover shut-off domain {} of another uid", plan.name));
        undefine(&dom).map_err(|e| Error::prepare(format!("cannot undefine the leftover domain {}: {e}", plan.name)))?;
    }

    if l.term.load(Ordering::SeqCst) {
        return Ok(Start::Cancelled);
    }
    if let Some(image) = plan.prepare.iter().find_map(|p| match p {
        super::domain::Prepare::ContainerDisk { image, .. } => Some(image),
        _ => None,
    }) {
        l.set(LauncherPhase::Starting, format!("pulling image {image}"));
    }
    super::prepare(&plan.prepare)?;
    let xml_path = l.args.vmi_dir.join(super::DOMAIN_XML_FILE);
    if let Err(e) = crate::files::write_atomically(&xml_path, plan.xml.as_bytes(), 0o644) {
        log(&format!("cannot write {}: {e}", xml_path.display()));
    }
    let dom = c.define(&plan.xml).map_err(|e| Error::prepare(format!("libvirt refused the domain: {}", e.message)))?;
    l.status.ports = plan.ports.clone();
    if let Err(e) = dom.start() {
        return Err(Error::prepare(format!("the domain did not start: {}", e.message)));
    }
    Ok(Start::Started)
}

/// The forwarded host ports the VMI had on its node (`vmform.io/ports`), in order.
fn source_ports(vmi: &Value) -> Vec<u16> {
    let ports = vmi.pointer("/metadata/annotations/vmform.io~1ports").and_then(Value::as_str).unwrap_or("[]");
    serde_json::from_str::<Vec<super::domain::ForwardedPort>>(ports).unwrap_or_default().into_iter().map(|p| p.host_port).collect()
}

/// Watch the domain until it is off (or has migrated away); act on SIGTERM and on the
/// handler's migration requests.
fn supervise(l: &mut Launcher, conn: &mut Conn, plan: &DomainPlan) -> LauncherExit {
    let mut shutdown_asked: Option<Instant> = None;
    let mut acpi_sent = false;
    let mut destroyed = false;
    let mut grace = plan.grace;
    let mut outgoing: Option<super::migrate::Outgoing> = None;
    loop {
        if outgoing.is_none()
            && shutdown_asked.is_none()
            && let Some(request) = super::migrate::new_request(&l.args.vmi_dir, l.status.migration.as_ref())
        {
            l.status.migration = Some(super::migrate::report(&request, super::Role::Source));
            l.set(LauncherPhase::Running, format!("migrating: {} over {}", request.dest_uri, request.migrate_uri));
            outgoing = Some(super::migrate::Outgoing::start(&l.args.libvirt_uri, plan, request));
        }
        if let Some(m) = &mut outgoing {
            // While the guest migrates its domain may vanish here at any moment: only the
            // migration's result says how it ended. SIGTERM aborts it first.
            match super::migrate::turn(l, conn, plan, m) {
                super::migrate::Turn::Running => {}
                super::migrate::Turn::Migrated(message) => return LauncherExit::new(ExitKind::Migrated, message),
                super::migrate::Turn::StayedHere => outgoing = None,
            }
            std::thread::sleep(POLL);
            continue;
        }
        if shutdown_asked.is_none() && l.term.load(Ordering::SeqCst) {
            shutdown_asked = Some(Instant::now());
            // A stop can shorten the grace period (`vmform vm stop --grace-period`,
            // virtctl's StopOptions): the handler rewrites vmi.json before its SIGTERM.
            if let Some(vmi) = std::fs::read(l.args.vmi_dir.join("vmi.json")).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()) {
                grace = domain::grace_period(&vmi);
            }
            l.set(LauncherPhase::ShuttingDown, format!("SIGTERM: asking the guest to shut down (grace {} s)", grace.as_secs()));
        }
        let Some(c) = conn.get() else {
            std::thread::sleep(POLL);
            continue;
        };
        let dom = match c.guest_by_uuid(&plan.uuid) {
            Ok(d) => d,
            Err(e) => {
                if conn.check(&e) {
                    continue;
                }
                if e.no_domain {
                    return LauncherExit::new(ExitKind::Crashed, "the domain disappeared (undefined outside the launcher)");
                }
                log(&format!("cannot look the domain up: {}", e.message));
                std::thread::sleep(POLL);
                continue;
            }
        };
        if let Some(asked) = shutdown_asked {
            if !acpi_sent {
                match dom.shutdown_acpi() {
                    Ok(_) => acpi_sent = true,
                    Err(e) => {
                        if conn.check(&e) {
                            continue;
                        }
                        // Not running any more: the state below says how it ended.
                        log(&format!("the ACPI shutdown request failed: {}", e.message));
                        acpi_sent = true;
                    }
                }
            }
            // Invariant: a launcher forwards termination to the guest (the ACPI request
            // above) and forces it off only once its grace period is over.
            if !destroyed && asked.elapsed() >= grace {
                match dom.destroy() {
                    Ok(()) => {
                        destroyed = true;
                        log("the grace period is over: destroyed the domain");
                    }
                    Err(e) => {
                        if conn.check(&e) {
                            continue;
                        }
                        log(&format!("destroy failed: {}", e.message));
                    }
                }
            }
        }
        match dom.state() {
            Ok(state) => {
                // QEMU stops (pauses) a guest whose vCPU KVM cannot run ("KVM internal
                // error"); it would stay so. The handler turns such a node to TCG.
                if state == (DomainState::Paused { unknown_reason: true })
                    && let Some(line) = l.qemu_log.kvm_failure()
                {
                    let _ = dom.destroy();
                    return LauncherExit::new(ExitKind::Crashed, format!("QEMU stopped the guest: {line}"));
                }
                if let Some(mut exit) = ended(state, shutdown_asked.is_some(), destroyed, grace) {
                    if exit.kind == ExitKind::Crashed
                        && let Some(line) = l.qemu_log.kvm_failure()
                    {
                        exit.message = format!("{}: {line}", exit.message);
                    }
                    return exit;
                }
            }
            Err(e) => {
                if conn.check(&e) {
                    continue;
                }
                log(&format!("cannot read the domain's state: {}", e.message));
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Whether a domain state means the guest has ended, and how.
fn ended(state: DomainState, asked: bool, destroyed: bool, grace: Duration) -> Option<LauncherExit> {
    let reason = match state {
        DomainState::Shutoff(reason) => reason,
        DomainState::Crashed => return Some(LauncherExit::new(ExitKind::Crashed, "the guest crashed")),
        _ => return None,
    };
    Some(match reason {
        ShutoffReason::Shutdown if asked => LauncherExit::new(ExitKind::Shutdown, "the guest shut down after the ACPI shutdown request"),
        ShutoffReason::Shutdown => LauncherExit::new(ExitKind::Shutdown, "the guest powered off"),
        _ if destroyed => LauncherExit::new(
            ExitKind::ForcedOff,
            format!("the guest was still running {} s after the ACPI shutdown request: forced off", grace.as_secs()),
        ),
        ShutoffReason::Destroyed => LauncherExit::new(ExitKind::Crashed, "the domain was destroyed outside the launcher"),
        ShutoffReason::Crashed => LauncherExit::new(ExitKind::Crashed, "QEMU died (the domain crashed)"),
        ShutoffReason::Failed => LauncherExit::new(ExitKind::Crashed, "the domain failed"),
        ShutoffReason::Migrated => LauncherExit::new(ExitKind::Shutdown, "the domain migrated to another node"),
        ShutoffReason::Saved => LauncherExit::new(ExitKind::Crashed, "the domain was saved outside the launcher"),
        ShutoffReason::Other(other) => LauncherExit::new(ExitKind::Crashed, format!("the domain stopped (shutoff reason {other})")),
    })
}

fn undefine(dom: &Guest) -> Result<(), LibvirtError> {
    dom.undefine_with_nvram()
}

/// Undefine the domain (if it is off) and remove the scratch disks. Keeps trying for a
/// while if libvirtd is away.
fn cleanup(conn: &mut Conn, plan: &DomainPlan) {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    loop {
        if let Some(c) = conn.get() {
            match c.guest_by_uuid(&plan.uuid) {
                Ok(dom) => {
                    if dom.is_active().unwrap_or(false) {
                        log("the domain is still running at cleanup: destroying it");
                        let _ = dom.destroy();
                    }
                    match undefine(&dom) {
                        Ok(()) => break,
                        Err(e) => log(&format!("cannot undefine {}: {e}", plan.name)),
                    }
                }
                Err(e) if e.no_domain => break,
                Err(e) => {
                    if !conn.check(&e) {
                        log(&format!("cannot look the domain up at cleanup: {}", e.message));
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            log(&format!("gave up undefining {}: libvirtd did not answer", plan.name));
            break;
        }
        std::thread::sleep(POLL);
    }
    remove_dir(&plan.disks_dir);
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log(&format!("cannot remove {}: {e}", dir.display())),
    }
}
