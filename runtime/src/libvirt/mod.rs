//! The node side of libvirt: a private libvirtd per node ([`daemon`]) and the KVM probe
//! ([`kvm`]). Both are plain code (processes and files); only the launcher links libvirt.

pub mod daemon;
pub mod kvm;
pub mod netns;

pub use daemon::{DaemonConfig, DaemonError, NodeDaemon};
pub use kvm::{probe, Accel};
