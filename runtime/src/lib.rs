//! vmform's runtime: the controller, handler and launcher that run VMs through libvirt,
//! and the supervisor `vmform up` runs them with. It reaches any API server (the local
//! control plane's, crate `vmform-apiserver`, or a real cluster's) through kube only.

pub mod accel;
pub mod controller;
pub mod disk_files;
pub mod error;
pub mod handler;
pub mod images;
pub mod kubevirt;
pub mod launcher;
pub mod libvirt;
pub mod semantics;
pub mod supervisor;
pub mod volumes;

pub use error::Error;
// Moved to vmform-cluster; the old paths keep resolving for the runtime's modules.
pub use vmform_cluster::files;
