//! What the API server's tests share: a server of their own on a free port in a fresh
//! data dir, and a kube client that talks to it over TLS with the kubeconfig `vmform up`
//! writes.

#![allow(dead_code)]

use kube::api::{ApiResource, GroupVersionKind};
use kube::Client;
pub use vmform_apiserver::local::{self, LocalServer, UpConfig};

pub struct Harness {
    pub server: LocalServer,
    pub client: Client,
    _dir: tempfile::TempDir,
}

/// A client through the kubeconfig at `kubeconfig`, from vmform-cluster's one builder.
pub async fn client_for(kubeconfig: &std::path::Path) -> Client {
    let wanted = vmform_cluster::TargetArgs { kubeconfig: Some(kubeconfig.to_path_buf()), ..Default::default() };
    vmform_cluster::client(&wanted).await.unwrap().client
}

/// A server on a free port in a fresh data dir, and a client of it.
pub async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let server = local::up(UpConfig { data_dir: dir.path().to_path_buf(), listen: "127.0.0.1:0".parse().unwrap() }).await.unwrap();
    let client = client_for(&server.data_dir.kubeconfig()).await;
    Harness { server, client, _dir: dir }
}

/// A `kubevirt.io/v1` resource.
pub fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubevirt.io", "v1", kind), plural)
}

pub fn vm_resource() -> ApiResource {
    resource("VirtualMachine", "virtualmachines")
}
