//! libvirt on a node: libvirt itself ([`api`], the one module that calls the `virt` crate
//! and the one that knows whether it is linked), a private libvirtd per node
//! ([`daemon`]), the node's network ([`netns`]), the reaping of libvirt's orphans
//! ([`reaper`]), and what the handler asks of a node's domains ([`domains`]). The launcher
//! and the KVM probe (`crate::accel`) reach libvirt through here.

pub mod api;
pub mod daemon;
pub mod domains;
pub mod netns;
pub mod reaper;

pub use api::{silence_errors, CompletedJob, Connection, DomainState, Guest, JobProgress, LibvirtError, Migration, ShutoffReason, LINKED, NOT_LINKED};
pub use daemon::{DaemonConfig, DaemonError, NodeDaemon};
