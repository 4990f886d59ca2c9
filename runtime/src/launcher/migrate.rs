//! The launcher's side of a live migration (KubeVirt's virt-launcher migration source and
//! target), through libvirt's peer-to-peer migration:
//!
//! - the **target** launcher (`--incoming UID`) prepares its own VMI dir (disk files, the
//!   console log), defines the domain on its node's libvirtd from the same VMI, and waits
//!   for the guest to arrive; it then supervises it as any launcher does;
//! - the **source** launcher, asked by `migrate.json`, reads that definition from the
//!   target's libvirtd and migrates the running guest into it (`VIR_MIGRATE_LIVE |
//!   PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE`, the scratch disks copied), on a thread of
//!   its own, while its main loop reports progress and aborts on request, on SIGTERM or at
//!   the completion timeout.
//!
//! Invariant: a guest is never running on two nodes and never lost. libvirt resumes the
//! guest on the target only after the source paused it for the last time, and resumes it
//! on the source when anything fails before that; the launcher only ever *aborts* the job
//! (which fails if the switch-over already happened) and never destroys a domain that
//! may be the only copy of the guest.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::domain::DomainPlan;
use super::session::{log, Conn, Launcher, POLL};
use crate::libvirt::{Connection, DomainState, Guest, Migration};
use crate::Error;
use super::{MigrateRequest, MigrationProgress, MigrationReport, LauncherPhase, Role, MIGRATE_ABORT_FILE, MIGRATE_FILE};

/// How often a running migration's progress is written to `status.json`.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The handler's request in the VMI dir, if there is one this launcher has not done yet.
pub(super) fn new_request(vmi_dir: &Path, done: Option<&MigrationReport>) -> Option<MigrateRequest> {
    let request: MigrateRequest = serde_json::from_slice(&std::fs::read(vmi_dir.join(MIGRATE_FILE)).ok()?).ok()?;
    if request.migration_uid.is_empty() || done.is_some_and(|d| d.uid == request.migration_uid) {
        return None;
    }
    Some(request)
}

/// Whether the handler asked to abort the migration `uid`.
fn abort_asked(vmi_dir: &Path, uid: &str) -> bool {
    std::fs::read_to_string(vmi_dir.join(MIGRATE_ABORT_FILE)).is_ok_and(|s| s.trim() == uid)
}

/// What the completed job took, from libvirt's statistics (read on the target, which keeps
/// them: the source's domain is gone).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Completed {
    pub time_elapsed_ms: Option<u64>,
    pub downtime_ms: Option<u64>,
}

/// A migration the source launcher runs.
pub(super) struct Outgoing {
    pub request: MigrateRequest,
    started: Instant,
    result: mpsc::Receiver<Result<Completed, Error>>,
    /// Why an abort was asked, once it was.
    aborting: Option<String>,
    last_report: Instant,
}

impl Outgoing {
    /// Start migrating the domain `plan.uuid` on a thread of its own (the libvirt call
    /// blocks until the job ends).
    pub fn start(source_uri: &str, plan: &DomainPlan, request: MigrateRequest) -> Outgoing {
        let (tx, rx) = mpsc::channel();
        let (uri, uuid, disks, req) = (source_uri.to_string(), plan.uuid.clone(), plan.local_disks.clone(), request.clone());
        std::thread::spawn(move || {
            let _ = tx.send(migrate(&uri, &uuid, &disks, &req));
        });
        Outgoing { request, started: Instant::now(), result: rx, aborting: None, last_report: Instant::now() }
    }

    /// Ask libvirt to abort the job (once). It cannot once the guest switched over: the
    /// migration then completes.
    fn abort(&mut self, dom: Option<&Guest>, why: String) {
        if self.aborting.is_some() {
            return;
        }
        log(&format!("aborting the migration: {why}"));
        if let Some(Err(e)) = dom.map(Guest::abort_job) {
            log(&format!("libvirt did not abort the job: {}", e.message));
        }
        self.aborting = Some(why);
    }

    fn timed_out(&self) -> bool {
        self.request.completion_timeout_seconds > 0 && self.started.elapsed() > Duration::from_secs(self.request.completion_timeout_seconds)
    }
}

/// What one turn of the source launcher's loop made of its migration.
pub(super) enum Turn {
    /// Still running.
    Running,
    /// The guest runs on the target now.
    Migrated(String),
    /// It ended and the guest is still here.
    StayedHere,
}

/// One turn of the source side: finished? abort asked (by the handler, SIGTERM or the
/// timeout)? progress to report?
pub(super) fn turn(l: &mut Launcher, conn: &mut Conn, plan: &DomainPlan, m: &mut Outgoing) -> Turn {
    let dom = conn.guest(&plan.uuid);
    match m.result.try_recv() {
        Ok(Ok(done)) => {
            let mut message = format!("the guest migrated to node {}", m.request.target_node);
            if let (Some(t), Some(d)) = (done.time_elapsed_ms, done.downtime_ms) {
                message.push_str(&format!(" in {t} ms (downtime {d} ms)"));
            }
            l.status.migration = Some(MigrationReport {
                state: MigrationProgress::Completed,
                message: message.clone(),
                time_elapsed_ms: done.time_elapsed_ms,
                downtime_ms: done.downtime_ms,
                ..report(&m.request, Role::Source)
            });
            return Turn::Migrated(message);
        }
        Ok(Err(e)) => {
            let (state, message) = match &m.aborting {
                Some(why) => (MigrationProgress::Aborted, format!("the migration was aborted ({why}); the guest stays on this node")),
                None => (MigrationProgress::Failed, format!("the migration failed: {e}; the guest stays on this node")),
            };
            l.status.migration = Some(MigrationReport { state, message: message.clone(), ..report(&m.request, Role::Source) });
            l.set(LauncherPhase::Running, message);
            return Turn::StayedHere;
        }
        Err(mpsc::TryRecvError::Disconnected) => {
            l.status.migration = Some(MigrationReport { state: MigrationProgress::Failed, message: "the migration thread ended without a word".into(), ..report(&m.request, Role::Source) });
            return Turn::StayedHere;
        }
        Err(mpsc::TryRecvError::Empty) => {}
    }
    let why = if abort_asked(&l.args.vmi_dir, &m.request.migration_uid) {
        Some("asked by the handler".to_string())
    } else if l.term.load(std::sync::atomic::Ordering::SeqCst) {
        Some("the launcher got SIGTERM".to_string())
    } else if m.timed_out() {
        Some(format!("not completed within its completion timeout of {} s", m.request.completion_timeout_seconds))
    } else {
        None
    };
    if let Some(why) = why {
        m.abort(dom.as_ref(), why);
    }
    if m.last_report.elapsed() >= PROGRESS_EVERY {
        m.last_report = Instant::now();
        if let Some(stats) = dom.as_ref().and_then(|d| d.job_progress().ok()) {
            let mut progress = l.status.migration.clone().unwrap_or_else(|| report(&m.request, Role::Source));
            progress.data_processed = stats.data_processed;
            progress.data_remaining = stats.data_remaining;
            l.status.migration = Some(progress);
            l.set(LauncherPhase::Running, format!("migrating to node {}", m.request.target_node));
        }
    }
    Turn::Running
}

/// The report of a migration that has just started.
pub(super) fn report(request: &MigrateRequest, role: Role) -> MigrationReport {
    MigrationReport { uid: request.migration_uid.clone(), role, ..Default::default() }
}

/// The migration itself (blocking): the target's definition of the domain as the
/// destination XML, then libvirt's peer-to-peer migration.
fn migrate(source_uri: &str, uuid: &str, local_disks: &[String], req: &MigrateRequest) -> Result<Completed, Error> {
    let failed = |message: String| Error::Launcher(message);
    let source = Connection::open(source_uri).map_err(|e| failed(format!("cannot connect to libvirt at {source_uri}: {}", e.message)))?;
    let dom = source.guest_by_uuid(uuid).map_err(|e| failed(format!("the domain is not here: {}", e.message)))?;
    let dest = Connection::open(&req.dest_uri).map_err(|e| failed(format!("cannot reach the target's libvirt at {}: {}", req.dest_uri, e.message)))?;
    let prepared = dest.guest_by_uuid(uuid).map_err(|_| failed("the target has not prepared the domain".to_string()))?;
    let xml = prepared.migratable_xml().map_err(|e| failed(format!("cannot read the target's domain: {}", e.message)))?;
    let migration = Migration {
        dest_uri: req.dest_uri.clone(),
        migrate_uri: req.migrate_uri.clone(),
        dest_xml: xml,
        bandwidth_mib: req.bandwidth_mib,
        // The scratch disks live in each node's own VMI dir: copied, as KubeVirt copies
        // local volumes.
        copy_disks: local_disks.to_vec(),
        unsafe_storage: req.shared_storage,
        auto_converge: req.allow_auto_converge,
    };
    if req.max_downtime_ms > 0
        && let Err(e) = dom.set_max_downtime(req.max_downtime_ms)
    {
        log(&format!("cannot set the downtime limit to {} ms: {}", req.max_downtime_ms, e.message));
    }
    log(&format!("migrating to {} over {}", req.dest_uri, req.migrate_uri));
    dom.migrate(&migration).map_err(|e| failed(e.message.trim().to_string()))?;
    let stats = dest.guest_by_uuid(uuid).and_then(|d| d.completed_job()).ok();
    Ok(Completed { time_elapsed_ms: stats.and_then(|s| s.time_elapsed_ms), downtime_ms: stats.and_then(|s| s.downtime_ms) })
}

/// How a receiving launcher's wait ended.
pub(super) enum Arrival {
    /// The guest runs here now.
    Arrived,
    /// SIGTERM before it arrived: the migration is off.
    Cancelled,
}

/// The target side: define the domain here from the VMI (this node's paths and ports)
/// and wait until the guest runs in it.
pub(super) fn receive(l: &mut Launcher, conn: &mut Conn, plan: &DomainPlan, uid: &str) -> Result<Arrival, Error> {
    let c = conn.get().ok_or_else(|| Error::Launcher("libvirtd went away".into()))?;
    if let Ok(dom) = c.guest_by_uuid(&plan.uuid) {
        if dom.is_active().unwrap_or(false) {
            // A receiving launcher started again after its guest arrived.
            return Ok(Arrival::Arrived);
        }
        let _ = dom.undefine();
    }
    super::prepare(&plan.prepare)?;
    let xml_path = l.args.vmi_dir.join(super::DOMAIN_XML_FILE);
    if let Err(e) = crate::files::write_atomically(&xml_path, plan.xml.as_bytes(), 0o644) {
        log(&format!("cannot write {}: {e}", xml_path.display()));
    }
    c.define(&plan.xml).map_err(|e| Error::Launcher(format!("libvirt refused the domain: {}", e.message)))?;
    l.status.ports = plan.ports.clone();
    l.status.migration = Some(MigrationReport { uid: uid.to_string(), role: Role::Target, ..Default::default() });
    l.set(LauncherPhase::Receiving, "the domain is prepared: waiting for the guest to arrive");
    loop {
        let Some(c) = conn.get() else {
            std::thread::sleep(POLL);
            continue;
        };
        match c.guest_by_uuid(&plan.uuid) {
            Ok(dom) => {
                let running = matches!(dom.state(), Ok(DomainState::Running));
                if running {
                    if let Some(m) = &mut l.status.migration {
                        m.state = MigrationProgress::Completed;
                    }
                    return Ok(Arrival::Arrived);
                }
                if l.term.load(std::sync::atomic::Ordering::SeqCst) {
                    // Invariant: never on two nodes, never lost. An incoming guest is
                    // paused until the switch-over; aborting is the source's to do.
                    if !dom.is_active().unwrap_or(false) {
                        let _ = dom.undefine();
                    } else {
                        log("SIGTERM while the guest is arriving: leaving the domain to libvirt");
                    }
                    return Ok(Arrival::Cancelled);
                }
            }
            Err(e) if e.no_domain => {
                if l.term.load(std::sync::atomic::Ordering::SeqCst) {
                    return Ok(Arrival::Cancelled);
                }
                return Err(Error::Launcher("the prepared domain was undefined outside the launcher".into()));
            }
            Err(e) => {
                conn.check(&e);
            }
        }
        std::thread::sleep(POLL);
    }
}
