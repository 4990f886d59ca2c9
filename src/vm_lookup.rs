//! Finding a VM on a cluster: the connection, the VM's namespace and its running instance,
//! as every `vmform vm` and `vmform node` command needs them, with the same errors.

use crate::cli::VmArgs;
use crate::error::Error;
use kube::api::{Api, DynamicObject};
use vmform_cluster::kubevirt::{vm_resource, vmi_resource};
use vmform_cluster::{target, Target};

/// The cluster, and the VM's namespace (`-n`, else the context's, else `default`).
pub(crate) async fn connect(args: &VmArgs) -> Result<(Target, String), Error> {
    let target = target::connect(&args.target.wanted()).await.map_err(Error::cluster)?;
    let namespace = args.namespace.clone().unwrap_or_else(|| target.client.default_namespace().to_string());
    Ok((target, namespace))
}

/// A request that did not get an answer from the cluster, or was refused for who sent it.
pub(crate) fn cluster_error(target: &Target, e: kube::Error) -> Error {
    Error::cluster(target.error(e))
}

pub(crate) fn vms(target: &Target, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(target.client.clone(), namespace, &vm_resource())
}

/// The cluster, the VM's namespace and its running VirtualMachineInstance.
pub(crate) async fn connect_to_instance(args: &VmArgs) -> Result<(Target, String, DynamicObject), Error> {
    let (target, namespace) = connect(args).await?;
    let vmi = running_instance(&target, &namespace, &args.name).await?;
    Ok((target, namespace, vmi))
}

/// The VM's VirtualMachineInstance, after checking the VM exists.
pub(crate) async fn running_instance(target: &Target, namespace: &str, name: &str) -> Result<DynamicObject, Error> {
    match vms(target, namespace).get_opt(name).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(not_found(namespace, name)),
        Err(e) => return Err(cluster_error(target, e)),
    }
    match instance(target, namespace, name).await {
        Ok(Some(vmi)) => Ok(vmi),
        Ok(None) => Err(Error::failed(format!(
            "VM {namespace}/{name} is not running: it has no VirtualMachineInstance (start it with `vmform vm start {name}`)"
        ))),
        Err(e) => Err(cluster_error(target, e)),
    }
}

pub(crate) fn not_found(namespace: &str, name: &str) -> Error {
    Error::failed(format!("VM {namespace}/{name} not found"))
}

pub(crate) async fn instance(target: &Target, namespace: &str, name: &str) -> Result<Option<DynamicObject>, kube::Error> {
    let vmis: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), namespace, &vmi_resource());
    vmis.get_opt(name).await
}
