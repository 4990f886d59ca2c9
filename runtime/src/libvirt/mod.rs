//! The node side of libvirt: a private libvirtd per node ([`daemon`]), the node's network
//! ([`netns`]) and the reaping of libvirt's orphans ([`reaper`]). All plain code
//! (processes and files); only the launcher and the KVM probe (`crate::accel`) link libvirt.

pub mod daemon;
pub mod netns;
pub mod reaper;

pub use daemon::{DaemonConfig, DaemonError, NodeDaemon};
