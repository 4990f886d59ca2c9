//! vmform's runtime: the local control plane and the controller, handler and
//! launcher that run VMs through libvirt.
//!
//! Nothing is built here yet; the crate exists so that the workspace has the
//! shape ARCHITECTURE.md describes and the compiler's boundary is visible.
