//! The node side of libvirt: a private libvirtd per node ([`daemon`]) and the KVM probe
//! ([`kvm`]), the node's network ([`netns`]) and the reaping of libvirt's orphans
//! ([`reaper`]). All plain code (processes and files); only the launcher links libvirt.

pub mod daemon;
pub mod kvm;
pub mod netns;
pub mod reaper;

pub use daemon::{DaemonConfig, DaemonError, NodeDaemon};
pub use kvm::{probe, Accel};
