//! vmform's runtime: the local control plane (a Kubernetes-compatible API server with
//! its store), and the controller, handler and launcher that run VMs through libvirt.
//!
//! The compiler stays free of tokio, kube and libvirt; everything that needs them
//! lives here.

pub mod accel;
pub mod apiserver;
pub mod controller;
pub mod error;
pub mod files;
pub mod handler;
pub mod images;
pub mod kubevirt;
pub mod launcher;
pub mod libvirt;
pub mod local;
pub mod semantics;
pub mod supervisor;
pub mod volumes;

pub use error::Error;
