//! `vmform plan`, `apply` and `destroy`: compiled VMs against a Kubernetes cluster —
//! the local control plane or any cluster running KubeVirt — through kube-rs only.
//!
//! ```text
//! compiled VMs ─┐
//!               ├─ plan: normalise live, diff (the compiler's engine), drift ─▶ Plan ─▶ -out FILE
//! live objects ─┘   (ApplySet inventory: what this project owns)            │
//!                                                                            ▼
//!                    apply: lease ─▶ namespaces ─▶ parent ─▶ server-side apply ─▶ prune ─▶ parent
//! ```
//!
//! Invariant: apply changes only objects this project owns (members of its ApplySet) and
//! never more than the plan it showed; a saved plan whose live objects moved is refused.

pub mod apply;
pub mod error;
pub mod inventory;
pub mod lock;
pub mod plan;
pub mod target;
pub mod vm_state;

pub use error::DeployError;
