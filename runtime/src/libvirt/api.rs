//! libvirt itself, through the `virt` crate: the one place that calls it, and the one
//! place that knows whether it is linked (cargo feature `libvirt`). Without the feature
//! every type here still exists, and opening a connection fails with
//! [`NOT_LINKED`]; the launcher, the KVM probe and the handler compile the same either way.
//!
//! A [`Connection`] closes when dropped; a [`Guest`] is one domain of it.

use std::fmt;

/// Whether this build links libvirt.
pub const LINKED: bool = cfg!(feature = "libvirt");

/// What a build without libvirt says when asked for it.
pub const NOT_LINKED: &str = "this vmform was built without libvirt";

/// A libvirt call that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtError {
    /// libvirt's message.
    pub message: String,
    /// libvirt's message with its level, code and domain (`virt`'s `Display`).
    pub detail: String,
    /// libvirt's "no domain with matching uuid/name".
    pub no_domain: bool,
}

impl fmt::Display for LibvirtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LibvirtError {}

/// A domain's state, as far as the runtime tells states apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    Running,
    /// Paused; `unknown_reason`: paused for a reason libvirt does not know (QEMU stopped
    /// a vCPU that KVM cannot run).
    Paused { unknown_reason: bool },
    Shutoff(ShutoffReason),
    Crashed,
    /// Any other state (blocked, shutting down, suspended by the guest, …).
    Other,
}

/// Why a domain is shut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutoffReason {
    /// The guest powered off.
    Shutdown,
    /// Destroyed (by someone: the launcher knows whether it was it).
    Destroyed,
    /// QEMU died.
    Crashed,
    Failed,
    Migrated,
    Saved,
    /// Another reason, with libvirt's number.
    Other(i32),
}

/// How far a running job (a migration) is: bytes sent and still to send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub data_processed: u64,
    pub data_remaining: u64,
}

/// What a completed migration job took (milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompletedJob {
    pub time_elapsed_ms: Option<u64>,
    pub downtime_ms: Option<u64>,
}

/// A live, peer-to-peer migration of a domain to another libvirtd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migration {
    /// The target's libvirtd.
    pub dest_uri: String,
    /// Where QEMU sends the guest.
    pub migrate_uri: String,
    /// The domain's definition on the target (its migratable XML).
    pub dest_xml: String,
    /// MiB/s; 0: no limit.
    pub bandwidth_mib: u64,
    /// The target devs of disks to copy (not shared between the nodes).
    pub copy_disks: Vec<String>,
    /// Skip libvirt's check for shared storage (which cannot tell).
    pub unsafe_storage: bool,
    pub auto_converge: bool,
}

#[cfg(feature = "libvirt")]
mod linked {
    use virt::connect::Connect;
    use virt::domain::{Domain, MigrateParameters};
    use virt::error::ErrorNumber;
    use virt::sys;

    use super::{CompletedJob, DomainState, JobProgress, LibvirtError, Migration, ShutoffReason};

    impl From<virt::error::Error> for LibvirtError {
        fn from(e: virt::error::Error) -> LibvirtError {
            LibvirtError { message: e.message().to_string(), detail: e.to_string(), no_domain: e.code() == ErrorNumber::NoDomain }
        }
    }

    /// libvirt prints every error to stderr by default, expected ones ("no domain with
    /// matching uuid") included; the runtime reports what matters itself.
    pub fn silence_errors() {
        virt::error::clear_error_callback();
    }

    /// A connection to a libvirtd, closed when dropped.
    pub struct Connection(Connect);

    impl Connection {
        pub fn open(uri: &str) -> Result<Connection, LibvirtError> {
            Ok(Connection(Connect::open(Some(uri))?))
        }

        pub fn is_alive(&self) -> bool {
            self.0.is_alive().unwrap_or(false)
        }

        /// Have libvirtd probe QEMU's capabilities now (it does so once, lazily).
        pub fn capabilities(&self) -> Result<String, LibvirtError> {
            Ok(self.0.get_capabilities()?)
        }

        pub fn guest_by_uuid(&self, uuid: &str) -> Result<Guest, LibvirtError> {
            Ok(Guest(Domain::lookup_by_uuid_string(&self.0, uuid)?))
        }

        pub fn guest_by_name(&self, name: &str) -> Result<Guest, LibvirtError> {
            Ok(Guest(Domain::lookup_by_name(&self.0, name)?))
        }

        /// Define a persistent domain.
        pub fn define(&self, xml: &str) -> Result<Guest, LibvirtError> {
            Ok(Guest(Domain::define_xml(&self.0, xml)?))
        }

        /// Start a transient domain.
        pub fn start_transient(&self, xml: &str) -> Result<Guest, LibvirtError> {
            Ok(Guest(Domain::create_xml(&self.0, xml, 0)?))
        }

        pub fn all_guests(&self) -> Result<Vec<Guest>, LibvirtError> {
            Ok(self.0.list_all_domains(0)?.into_iter().map(Guest).collect())
        }
    }

    impl Drop for Connection {
        fn drop(&mut self) {
            let _ = self.0.close();
        }
    }

    /// One domain.
    pub struct Guest(Domain);

    impl Guest {
        pub fn is_active(&self) -> Result<bool, LibvirtError> {
            Ok(self.0.is_active()?)
        }

        pub fn uuid(&self) -> Result<String, LibvirtError> {
            Ok(self.0.get_uuid_string()?)
        }

        pub fn state(&self) -> Result<DomainState, LibvirtError> {
            let (state, reason) = self.0.get_state()?;
            Ok(match state {
                sys::VIR_DOMAIN_RUNNING => DomainState::Running,
                sys::VIR_DOMAIN_PAUSED => DomainState::Paused { unknown_reason: reason == sys::VIR_DOMAIN_PAUSED_UNKNOWN as i32 },
                sys::VIR_DOMAIN_CRASHED => DomainState::Crashed,
                sys::VIR_DOMAIN_SHUTOFF => DomainState::Shutoff(match reason as sys::virDomainShutoffReason {
                    sys::VIR_DOMAIN_SHUTOFF_SHUTDOWN => ShutoffReason::Shutdown,
                    sys::VIR_DOMAIN_SHUTOFF_DESTROYED => ShutoffReason::Destroyed,
                    sys::VIR_DOMAIN_SHUTOFF_CRASHED => ShutoffReason::Crashed,
                    sys::VIR_DOMAIN_SHUTOFF_FAILED => ShutoffReason::Failed,
                    sys::VIR_DOMAIN_SHUTOFF_MIGRATED => ShutoffReason::Migrated,
                    sys::VIR_DOMAIN_SHUTOFF_SAVED => ShutoffReason::Saved,
                    _ => ShutoffReason::Other(reason),
                }),
                _ => DomainState::Other,
            })
        }

        pub fn start(&self) -> Result<(), LibvirtError> {
            self.0.create()?;
            Ok(())
        }

        /// Force it off.
        pub fn destroy(&self) -> Result<(), LibvirtError> {
            Ok(self.0.destroy()?)
        }

        /// Press the ACPI power button.
        pub fn shutdown_acpi(&self) -> Result<(), LibvirtError> {
            self.0.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)?;
            Ok(())
        }

        pub fn undefine(&self) -> Result<(), LibvirtError> {
            Ok(self.0.undefine()?)
        }

        /// Undefine it with its UEFI variable store (or plainly, where it has none).
        pub fn undefine_with_nvram(&self) -> Result<(), LibvirtError> {
            Ok(self.0.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_NVRAM).or_else(|_| self.0.undefine())?)
        }

        /// Abort the domain's running job (a migration): libvirt resumes the guest here. It
        /// fails once the guest has switched over. The `virt` crate has no wrapper for it.
        pub fn abort_job(&self) -> Result<(), LibvirtError> {
            // SAFETY: a valid domain handle; virDomainAbortJob only reads it.
            if unsafe { sys::virDomainAbortJob(self.0.as_ptr()) } != 0 {
                return Err(virt::error::Error::last_error().into());
            }
            Ok(())
        }

        /// Whether a job (a migration) runs on the domain.
        pub fn has_job(&self) -> Result<bool, LibvirtError> {
            Ok(self.0.get_job_info()?.r#type != sys::VIR_DOMAIN_JOB_NONE as i32)
        }

        pub fn job_progress(&self) -> Result<JobProgress, LibvirtError> {
            let stats = self.0.get_job_stats(0)?;
            Ok(JobProgress { data_processed: stats.data_processed.unwrap_or(0), data_remaining: stats.data_remaining.unwrap_or(0) })
        }

        /// The statistics of the job that completed last (kept by a migration's target).
        pub fn completed_job(&self) -> Result<CompletedJob, LibvirtError> {
            let stats = self.0.get_job_stats(sys::VIR_DOMAIN_JOB_STATS_COMPLETED)?;
            Ok(CompletedJob { time_elapsed_ms: stats.time_elapsed, downtime_ms: stats.downtime })
        }

        /// Its definition as a migration's target takes it.
        pub fn migratable_xml(&self) -> Result<String, LibvirtError> {
            Ok(self.0.get_xml_desc(sys::VIR_DOMAIN_XML_MIGRATABLE)?)
        }

        pub fn set_max_downtime(&self, ms: u64) -> Result<(), LibvirtError> {
            self.0.migrate_set_max_downtime(ms, 0)?;
            Ok(())
        }

        /// Migrate it live, peer to peer, persisted on the target and undefined here
        /// (blocks until the job ends).
        pub fn migrate(&self, m: &Migration) -> Result<(), LibvirtError> {
            let params = MigrateParameters {
                uri: Some(m.migrate_uri.clone()),
                dest_xml: Some(m.dest_xml.clone()),
                persist_xml: Some(m.dest_xml.clone()),
                bandwidth: (m.bandwidth_mib > 0).then_some(m.bandwidth_mib),
                migrate_disks: m.copy_disks.clone(),
                ..Default::default()
            };
            let mut flags = sys::VIR_MIGRATE_LIVE | sys::VIR_MIGRATE_PEER2PEER | sys::VIR_MIGRATE_PERSIST_DEST | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
            if !m.copy_disks.is_empty() {
                flags |= sys::VIR_MIGRATE_NON_SHARED_INC;
            }
            if m.unsafe_storage {
                flags |= sys::VIR_MIGRATE_UNSAFE;
            }
            if m.auto_converge {
                flags |= sys::VIR_MIGRATE_AUTO_CONVERGE;
            }
            self.0.migrate_to_uri3(Some(&m.dest_uri), params, flags)?;
            Ok(())
        }
    }
}

#[cfg(not(feature = "libvirt"))]
mod linked {
    //! Without libvirt: nothing can be opened, so no [`Connection`] or [`Guest`] exists.

    use std::convert::Infallible;

    use super::{CompletedJob, DomainState, JobProgress, LibvirtError, Migration, NOT_LINKED};

    pub fn silence_errors() {}

    pub struct Connection(Infallible);

    impl Connection {
        pub fn open(_uri: &str) -> Result<Connection, LibvirtError> {
            Err(LibvirtError { message: NOT_LINKED.into(), detail: NOT_LINKED.into(), no_domain: false })
        }
        pub fn is_alive(&self) -> bool {
            match self.0 {}
        }
        pub fn capabilities(&self) -> Result<String, LibvirtError> {
            match self.0 {}
        }
        pub fn guest_by_uuid(&self, _uuid: &str) -> Result<Guest, LibvirtError> {
            match self.0 {}
        }
        pub fn guest_by_name(&self, _name: &str) -> Result<Guest, LibvirtError> {
            match self.0 {}
        }
        pub fn define(&self, _xml: &str) -> Result<Guest, LibvirtError> {
            match self.0 {}
        }
        pub fn start_transient(&self, _xml: &str) -> Result<Guest, LibvirtError> {
            match self.0 {}
        }
        pub fn all_guests(&self) -> Result<Vec<Guest>, LibvirtError> {
            match self.0 {}
        }
    }

    pub struct Guest(Infallible);

    impl Guest {
        pub fn is_active(&self) -> Result<bool, LibvirtError> {
            match self.0 {}
        }
        pub fn uuid(&self) -> Result<String, LibvirtError> {
            match self.0 {}
        }
        pub fn state(&self) -> Result<DomainState, LibvirtError> {
            match self.0 {}
        }
        pub fn start(&self) -> Result<(), LibvirtError> {
            match self.0 {}
        }
        pub fn destroy(&self) -> Result<(), LibvirtError> {
            match self.0 {}
        }
        pub fn shutdown_acpi(&self) -> Result<(), LibvirtError> {
            match self.0 {}
        }
        pub fn undefine(&self) -> Result<(), LibvirtError> {
            match self.0 {}
        }
        pub fn undefine_with_nvram(&self) -> Result<(), LibvirtError> {
            match self.0 {}
        }
        pub fn abort_job(&self) -> Result<(), LibvirtError> {
            match self.0 {}
        }
        pub fn has_job(&self) -> Result<bool, LibvirtError> {
            match self.0 {}
        }
        pub fn job_progress(&self) -> Result<JobProgress, LibvirtError> {
            match self.0 {}
        }
        pub fn completed_job(&self) -> Result<CompletedJob, LibvirtError> {
            match self.0 {}
        }
        pub fn migratable_xml(&self) -> Result<String, LibvirtError> {
            match self.0 {}
        }
        pub fn set_max_downtime(&self, _ms: u64) -> Result<(), LibvirtError> {
            match self.0 {}
        }
        pub fn migrate(&self, _m: &Migration) -> Result<(), LibvirtError> {
            match self.0 {}
        }
    }
}

pub use linked::{silence_errors, Connection, Guest};
