//! The names KubeVirt (and vmform's runtime, where it adds its own) gives its resources,
//! labels, annotations and finalizers: written once, here, for the runtime, plan and
//! apply, and the CLI alike.

use kube::api::{ApiResource, GroupVersionKind};

pub fn vm_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"), "virtualmachines")
}

pub fn vmi_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"), "virtualmachineinstances")
}

pub fn migration_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstanceMigration"), "virtualmachineinstancemigrations")
}

pub fn migration_policy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("migrations.kubevirt.io", "v1alpha1", "MigrationPolicy"), "migrationpolicies")
}

/// The Ready reason of a VMI whose containerDisk image could not be pulled (KubeVirt's, and
/// the kubelet's, `ErrImagePull`); the VM shows it, then `ImagePullBackOff`.
pub const IMAGE_PULL_FAILED: &str = "ErrImagePull";

/// Set by the controller when it schedules a VMI, so `kubectl get vmi -l` finds a node's VMIs.
pub const NODE_NAME_LABEL: &str = "kubevirt.io/nodeName";
/// The VM generation a VMI was created from (KubeVirt's annotation).
pub const VM_GENERATION_ANNOTATION: &str = "kubevirt.io/vm-generation";
/// The VM controller's: on a VM until its VMI and data volumes are gone, and on the VMIs it
/// creates until their outcome is recorded on the VM.
pub const VM_CONTROLLER_FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";
/// On every VMI from scheduling until its handler saw the guest gone (KubeVirt's VMI
/// controller keeps it until the launcher pod is gone).
pub const HANDLER_FINALIZER: &str = "foregroundDeleteVirtualMachine";
/// The forwarded ports of a VMI, as JSON (see specs/runtime-contract.md).
pub const PORTS_ANNOTATION: &str = "vmform.io/ports";
/// The serial console log of a VMI on its node.
pub const CONSOLE_ANNOTATION: &str = "vmform.io/console";
/// On a VMI while it migrates: the node it is moving to (KubeVirt's label).
pub const MIGRATION_TARGET_NODE_LABEL: &str = "kubevirt.io/migrationTargetNodeName";
/// The migration controller's, on every VirtualMachineInstanceMigration until its outcome
/// is final: deleting a running migration aborts it first.
pub const MIGRATION_FINALIZER: &str = "kubevirt.io/migrationJobFinalize";
/// What a completed migration took (libvirt's job statistics), as JSON: on the VMI (the
/// source handler's) and on its VirtualMachineInstanceMigration (the controller's copy).
pub const MIGRATION_STATS_ANNOTATION: &str = "vmform.io/migration-stats";
/// On a Node: the libvirt URI other nodes migrate guests to (`qemu+tcp://ADDR/system`).
pub const MIGRATION_URI_ANNOTATION: &str = "vmform.io/libvirt-migration-uri";
/// On a Node: which machine and storage it runs on; nodes that agree see the same files.
pub const STORAGE_ANNOTATION: &str = "vmform.io/storage";
/// Nodes' heartbeat leases live here, as on Kubernetes.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
