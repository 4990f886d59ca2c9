//! What the handler asks of its node's libvirtd about a VMI's domain (libvirt uuid = VMI
//! uid): is it there, does it run, settle an outgoing migration, remove it; and, when
//! the node goes down, remove them all. Each call opens a connection of its own and
//! closes it.

use super::api::{Connection, DomainState, LINKED};
use crate::Error;

/// Have libvirtd probe QEMU's capabilities now (it does so once, lazily, taking seconds),
/// so the node's first guest does not wait for it.
pub fn warm_up(uri: &str) {
    if let Ok(conn) = Connection::open(uri) {
        let _ = conn.capabilities();
    }
}

/// Where the guest of an outgoing migration is, once libvirt's job has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// Its domain runs here with no job: it did not leave.
    Here,
    /// Its domain is gone from here (or shut off).
    Gone,
    /// The job still runs (an abort was asked), or libvirt did not answer: look again.
    Unsettled,
}

/// For a migration whose source launcher died: abort the job libvirt still runs for it
/// (libvirt resumes the guest here, unless it has switched over already), then say where
/// the guest is. Without libvirt: `Here`.
pub fn settle_outgoing(uri: &str, uid: &str) -> Outgoing {
    if !LINKED {
        return Outgoing::Here;
    }
    let Ok(conn) = Connection::open(uri) else { return Outgoing::Unsettled };
    match conn.guest_by_uuid(uid) {
        Err(_) => Outgoing::Gone,
        Ok(dom) if !dom.is_active().unwrap_or(true) => Outgoing::Gone,
        Ok(dom) => match dom.has_job() {
            Ok(false) => Outgoing::Here,
            Ok(true) => {
                if let Err(e) = dom.abort_job() {
                    tracing::info!("domain {uid}: the migration job was not aborted: {}", e.message);
                }
                Outgoing::Unsettled
            }
            Err(_) => Outgoing::Unsettled,
        },
    }
}

/// What libvirt says of this VMI's domain; all false when it is not defined there or
/// libvirt does not answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct DomainSeen {
    /// Its QEMU runs (the guest running, paused, or waiting for an incoming migration).
    pub active: bool,
    /// The guest itself runs.
    pub running: bool,
}

pub fn domain_seen(uri: &str, uid: &str) -> DomainSeen {
    let Ok(conn) = Connection::open(uri) else { return DomainSeen::default() };
    conn.guest_by_uuid(uid)
        .ok()
        .map(|d| DomainSeen { active: d.is_active().unwrap_or(false), running: d.state().is_ok_and(|s| s == DomainState::Running) })
        .unwrap_or_default()
}

/// Undefine the domain of this VMI if it is defined and not running.
pub fn undefine_if_inactive(uri: &str, uid: &str) {
    let Ok(conn) = Connection::open(uri) else { return };
    if let Ok(domain) = conn.guest_by_uuid(uid)
        && !domain.is_active().unwrap_or(true)
    {
        let _ = domain.undefine();
    }
}

/// Make sure no domain of this VMI is left: forced off and undefined. Without libvirt:
/// nothing to do.
pub fn remove_domain(uri: &str, uid: &str) -> Result<(), Error> {
    if !LINKED {
        return Ok(());
    }
    let conn = Connection::open(uri).map_err(|e| Error::Libvirt(format!("cannot reach libvirt at {uri}: {}", e.detail)))?;
    if let Ok(domain) = conn.guest_by_uuid(uid) {
        if domain.is_active().unwrap_or(false) {
            let _ = domain.destroy();
        }
        let _ = domain.undefine();
    }
    Ok(())
}

/// Force off and undefine every domain of a libvirt daemon (the node going down).
pub fn destroy_all_domains(uri: &str) {
    let Ok(conn) = Connection::open(uri) else { return };
    if let Ok(domains) = conn.all_guests() {
        for domain in domains {
            if domain.is_active().unwrap_or(false) {
                let _ = domain.destroy();
            }
            let _ = domain.undefine();
        }
    }
}
