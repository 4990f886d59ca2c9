//! The runtime's one error type, [`Error`]: a variant per area (API requests, the node
//! dir, libvirt, the launcher, a VMI the runtime cannot run, the node's network, its
//! libvirtd, images, volumes). Where a message was a `String` before, a variant carries
//! the same text, so what people read is unchanged.
//!
//! The areas with many cases of their own keep an enum of details, wrapped here and
//! shown as they are: [`ImageError`] (registries and the image cache), [`VolumeError`]
//! (claim files and imports), [`DaemonError`] (a node's private libvirtd).

use crate::images::ImageError;
use crate::libvirt::{DaemonError, LibvirtError};
use crate::volumes::VolumeError;

/// The runtime's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- The controller and the handler ------------------------------------------------
    /// A request to the API server failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The handler's node dir (or a VMI dir in it) cannot be used.
    #[error("the node dir {path} cannot be used: {source}")]
    NodeDir { path: String, source: std::io::Error },
    /// The node's libvirt cannot be started or reached.
    #[error("libvirt: {0}")]
    Libvirt(String),
    /// `--accel kvm`, and the probe found that guests cannot run under KVM here.
    #[error("KVM was asked for (--accel kvm), but guests cannot run under it here: {0}")]
    KvmUnavailable(String),
    /// The controller could not provision a VM's volumes.
    #[error("volume: {0}")]
    VolumeProvisioning(String),

    /// The local runtime of `vmform up` could not start its nodes, or a node did not come
    /// up: the message says which and why.
    #[error("{0}")]
    Start(String),

    // --- libvirt calls --------------------------------------------------------------------
    /// A libvirt call failed (libvirt's message).
    #[error(transparent)]
    LibvirtCall(#[from] LibvirtError),

    // --- The launcher -----------------------------------------------------------------------
    /// A flag or value the runtime cannot take (the launcher's flags, `--accel`).
    #[error("{0}")]
    Usage(String),
    /// The files a domain needs could not be made ready; `image_pull`: a containerDisk's
    /// image could not be pulled (KubeVirt's `ErrImagePull`), told apart from other
    /// failures.
    #[error("{message}")]
    Prepare { image_pull: bool, message: String },
    /// The launcher could not start, receive or migrate its guest: the message says what.
    #[error("{0}")]
    Launcher(String),
    /// What the local runtime cannot serve in a VMI spec, one message per item.
    #[error("{}", .0.join("; "))]
    UnsupportedVmi(Vec<String>),
    /// A VMI the launcher cannot read (no name, no uid, no spec).
    #[error("{0}")]
    InvalidVmi(String),
    /// No free host port to forward a guest's port from.
    #[error("cannot find a free host port: {0}")]
    NoFreePort(std::io::Error),

    // --- The node ---------------------------------------------------------------------------
    /// The nodes' network namespaces, veths and bridge.
    #[error("{what}: {detail}")]
    Network { what: String, detail: String },
    /// A node's private libvirtd.
    #[error(transparent)]
    Daemon(#[from] DaemonError),

    // --- Images and volumes ---------------------------------------------------------------------
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
}

impl Error {
    /// A failure to make a domain's files ready that is not an image pull.
    pub fn prepare(message: impl Into<String>) -> Error {
        Error::Prepare { image_pull: false, message: message.into() }
    }

    /// Whether a containerDisk's image could not be pulled.
    pub fn is_image_pull(&self) -> bool {
        matches!(self, Error::Prepare { image_pull: true, .. })
    }
}
