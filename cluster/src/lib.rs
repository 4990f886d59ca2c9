//! vmform's access to a cluster (crate `vmform-cluster`): which cluster a run talks to
//! (kubeconfig, context, the local control plane), the local control plane's data dir,
//! the names KubeVirt gives its resources, labels and annotations, and the one builder of
//! kube clients every part of vmform uses.
//!
//! Below everything that talks to a cluster (deploy, the runtime, the CLI) and above the
//! compiler only: no server, no libvirt, no SQLite here.

pub mod files;
pub mod local;
pub mod quantity;
pub mod error;
pub mod kubevirt;
pub mod target;

pub use error::Error;
pub use target::{client, connect, Target, TargetArgs};
