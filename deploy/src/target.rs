//! Which cluster a run talks to: vmform-cluster's choice (kubeconfig, context, the local
//! control plane) and its probe (unreachable, refused credentials, no KubeVirt), with
//! deploy's error type.

use crate::error::DeployError;
pub use vmform_cluster::target::{Target, TargetArgs};

/// Connect to the target cluster and check it serves KubeVirt's VirtualMachines.
pub async fn connect(args: &TargetArgs) -> Result<Target, DeployError> {
    Ok(vmform_cluster::connect(args).await?)
}
