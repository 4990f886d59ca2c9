//! The controller (KubeVirt's virt-controller): cluster-wide, talks only to the API
//! server. Three loops, each a kube-rs watcher → reconcile pipeline:
//!
//! - `vm`: one VMI per VirtualMachine as its run strategy and start/stop requests say,
//!   and the VM's status;
//! - `scheduler`: places pending VMIs on nodes, refuses what the runtime cannot serve,
//!   fails VMIs of a node that stopped answering;
//! - `migration`: VirtualMachineInstanceMigrations: checks, limits, the target node, the
//!   hand-over to the nodes, and the phases the nodes' progress gives;
//! - `nodes`: a node whose heartbeat Lease expired goes NotReady.

mod migration;
mod nodes;
mod scheduler;
pub mod strategy;
mod vm;
mod volumes;

pub use migration::{MigrationConfig, DEFAULT_MAX_DOWNTIME_MS};
pub use volumes::Volumes;

use crate::kubevirt;
use crate::Error;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Where the local runtime keeps PVC and DataVolume files (`<data>/volumes`); `None`
    /// on a cluster whose storage is provisioned by others.
    pub volumes_dir: Option<PathBuf>,
    /// How often node leases are checked.
    pub node_check_interval: Duration,
    pub migrations: MigrationConfig,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig { volumes_dir: None, node_check_interval: Duration::from_secs(2), migrations: MigrationConfig::default() }
    }
}

pub(crate) struct Context {
    client: Client,
    vm_resource: ApiResource,
    vmi_resource: ApiResource,
    nodes: reflector::Store<Node>,
    vmis: reflector::Store<DynamicObject>,
    /// VMIs placed on a node whose placement the VMI cache may not show yet.
    placements: tokio::sync::Mutex<HashMap<String, (String, kubevirt::Demand)>>,
    volumes: volumes::LocalVolumes,
    migrations: MigrationConfig,
}

impl Context {
    /// What the launcher would refuse of a VMI spec (nothing when no launcher can run:
    /// a build without libvirt).
    fn unsupported(&self, spec: &serde_json::Value) -> Vec<String> {
        if crate::libvirt::LINKED { crate::launcher::domain::unsupported(spec) } else { Vec::new() }
    }
}

/// Run the controller until `shutdown` resolves.
pub async fn run(client: Client, config: ControllerConfig, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    let vm_resource = kubevirt::vm_resource();
    let vmi_resource = kubevirt::vmi_resource();
    let node_api: Api<Node> = Api::all(client.clone());
    let vmi_api: Api<DynamicObject> = Api::all_with(client.clone(), &vmi_resource);
    let vm_api: Api<DynamicObject> = Api::all_with(client.clone(), &vm_resource);

    let (nodes, node_writer) = reflector::store();
    let vmi_writer = reflector::store::Writer::new(vmi_resource.clone());
    let vmis = vmi_writer.as_reader();
    // Node changes (Ready, capacity) wake every pending VMI and every VM.
    let (node_tx, node_rx) = tokio::sync::broadcast::channel::<()>(16);
    let scheduler_node_rx = node_tx.subscribe();
    let node_stream = reflector::reflector(node_writer, watcher(node_api.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects()
        .filter_map(|r| async move { r.ok() });
    let vmi_stream = reflector::reflector(vmi_writer, watcher(vmi_api.clone(), watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .filter_map(|r| async move { r.ok() });
    let ctx = Arc::new(Context {
        client: client.clone(),
        vm_resource: vm_resource.clone(),
        vmi_resource: vmi_resource.clone(),
        nodes: nodes.clone(),
        vmis: vmis.clone(),
        placements: Default::default(),
        volumes: volumes::LocalVolumes::new(config.volumes_dir.clone()),
        migrations: config.migrations.clone(),
    });
    let shutdown = futures_util::FutureExt::shared(Box::pin(shutdown));

    let node_tx2 = node_tx;
    let caches = async move {
        let nodes = node_stream.for_each(|_| {
            let _ = node_tx2.send(());
            async {}
        });
        let vmis = vmi_stream.for_each(|_| async {});
        tokio::join!(nodes, vmis);
    };
    let wake = |rx: tokio::sync::broadcast::Receiver<()>| tokio_stream::wrappers::BroadcastStream::new(rx).map(|_| ());

    let vm_controller = Controller::new_with(vm_api, watcher::Config::default(), vm_resource.clone())
        .watches_with(vmi_api.clone(), vmi_resource.clone(), watcher::Config::default(), |vmi: DynamicObject| {
            let namespace = vmi.metadata.namespace.clone();
            vmi.metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .filter(|o| o.controller == Some(true) && o.kind == "VirtualMachine")
                .map(move |o| ObjectRef::new_with(&o.name, kubevirt::vm_resource()).within(namespace.as_deref().unwrap_or("")))
        })
        .reconcile_all_on(wake(node_rx))
        .graceful_shutdown_on(shutdown.clone())
        .run(vm::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let migration_resource = kubevirt::migration_resource();
    let migration_api: Api<DynamicObject> = Api::all_with(client.clone(), &migration_resource);
    let migrations = Controller::new_with(migration_api, watcher::Config::default(), migration_resource.clone());
    let migration_store = migrations.store();
    let migration_controller = migrations
        // A VMI's progress moves its unfinished migrations on.
        .watches_with(vmi_api.clone(), vmi_resource.clone(), watcher::Config::default(), move |vmi: DynamicObject| {
            let (namespace, name) = (vmi.metadata.namespace.clone().unwrap_or_default(), vmi.metadata.name.clone().unwrap_or_default());
            migration_store
                .state()
                .into_iter()
                .filter(|m| {
                    m.metadata.namespace.as_deref() == Some(namespace.as_str())
                        && m.data.pointer("/spec/vmiName").and_then(serde_json::Value::as_str) == Some(name.as_str())
                        && !kubevirt::MigrationPhase::of(m).is_some_and(kubevirt::MigrationPhase::is_final)
                })
                .map(|m| ObjectRef::from_obj_with(m.as_ref(), kubevirt::migration_resource()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.clone())
        // One at a time: the limits and the target's room count the ones before.
        .with_config(kube::runtime::controller::Config::default().concurrency(1))
        .run(migration::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let vmi_controller = Controller::new_with(vmi_api, watcher::Config::default(), vmi_resource.clone())
        .reconcile_all_on(wake(scheduler_node_rx))
        .graceful_shutdown_on(shutdown.clone())
        // One placement at a time: each sees the ones before it.
        .with_config(kube::runtime::controller::Config::default().concurrency(1))
        .run(scheduler::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let node_lifecycle = nodes::watch_leases(client, nodes, config.node_check_interval);
    tokio::select! {
        _ = async { tokio::join!(vm_controller, vmi_controller, migration_controller) } => {}
        _ = caches => {}
        _ = node_lifecycle => {}
        _ = shutdown => {}
    }
}

fn error_policy<K>(_object: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    match error {
        // A write raced another: read again soon.
        Error::Kube(kube::Error::Api(s)) if s.code == 409 => Action::requeue(Duration::from_millis(100)),
        e => {
            tracing::warn!("reconcile failed: {e}");
            Action::requeue(Duration::from_secs(2))
        }
    }
}
