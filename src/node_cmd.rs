//! `vmform node cordon|uncordon|drain`: node maintenance, as `kubectl cordon` and `kubectl
//! drain` do it for a KubeVirt node. A drain cordons the node, then moves each VMI off it
//! by its `evictionStrategy` — a live migration (KubeVirt's VirtualMachineInstanceMigration),
//! or a stop (the VMI is deleted, as an evicted launcher pod ends it, and the VM's run
//! strategy decides what comes next) — and reports what happened to each.
//!
//! A drain that leaves a VMI on the node, or runs out of time, is a failure (exit 1).

use crate::cli::{NodeArgs, NodeCommand};
use crate::migration_cmd::{self, Ended};
use crate::error::{Done, Error, Outcome};
use crate::print_stdout;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vmform_deploy::target::{self, Target};
use vmform_runtime::kubevirt::{self, Phase, RunStrategy};

const POLL: Duration = Duration::from_millis(500);
/// How long a drain watches a stopped VM for the new VMI its run strategy starts.
const RESTART_WATCH: Duration = Duration::from_secs(60);

pub fn run(command: NodeCommand) -> Outcome {
    crate::process::runtime().block_on(async move {
        match command {
            NodeCommand::Cordon { node } => with_node(&node, |t, n| async move { set_unschedulable(&t, &n, true).await }).await,
            NodeCommand::Uncordon { node } => with_node(&node, |t, n| async move { set_unschedulable(&t, &n, false).await }).await,
            NodeCommand::Drain { node, timeout } => with_node(&node, |t, n| async move { drain(&t, &n, timeout).await }).await,
        }
    })
}

async fn with_node<F, Fut>(args: &NodeArgs, action: F) -> Outcome
where
    F: FnOnce(Target, String) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let target = target::connect(&args.target.wanted()).await.map_err(Error::cluster)?;
    action(target, args.name.clone()).await
}

/// A missing node is a failure of the request; anything else, of the cluster.
fn failure(target: &Target, e: kube::Error) -> Outcome {
    match e {
        kube::Error::Api(s) if s.code == 404 => Err(Error::failed(s.message)),
        e => Err(crate::vm_lookup::cluster_error(target, e)),
    }
}

async fn set_unschedulable(target: &Target, node: &str, unschedulable: bool) -> Outcome {
    match cordon(target, node, unschedulable).await {
        Ok(changed) => {
            let what = if unschedulable { "cordoned" } else { "uncordoned" };
            print_stdout(&format!("node/{node} {}{what}\n", if changed { "" } else { "already " }));
            Ok(Done::Ok)
        }
        Err(e) => failure(target, e),
    }
}

/// Set `spec.unschedulable`; whether it changed.
async fn cordon(target: &Target, node: &str, unschedulable: bool) -> Result<bool, kube::Error> {
    let nodes: Api<Node> = Api::all(target.client.clone());
    let current = nodes.get(node).await?;
    if current.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) == unschedulable {
        return Ok(false);
    }
    let patch = json!({ "spec": { "unschedulable": if unschedulable { json!(true) } else { Value::Null } } });
    nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(true)
}

/// What a drain does with one VMI, and how far it got.
enum Step {
    Migrating { migration: String },
    Stopping { uid: String },
    /// Stopped; watching for the VMI the VM's run strategy starts.
    Restarting { since: Instant, strategy: RunStrategy },
    Done { outcome: String, moved: bool },
}

struct Item {
    namespace: String,
    name: String,
    /// The VM that owns the VMI, if any.
    vm: Option<String>,
    started: Instant,
    step: Step,
}

async fn drain(target: &Target, node: &str, timeout: Duration) -> Outcome {
    match cordon(target, node, true).await {
        Ok(changed) => print_stdout(&format!("node/{node} {}cordoned\n", if changed { "" } else { "already " })),
        Err(e) => return failure(target, e),
    }
    let vmi_api: Api<DynamicObject> = Api::all_with(target.client.clone(), &kubevirt::vmi_resource());
    let vmis = match vmi_api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => return failure(target, e),
    };
    let mut items = Vec::new();
    for vmi in vmis.iter().filter(|v| migration_cmd::node_of(v) == node && !Phase::of(v).is_final()) {
        match start(target, vmi).await {
            Ok(item) => items.push(item),
            Err(e) => return failure(target, e),
        }
    }
    if items.is_empty() {
        print_stdout(&format!("node/{node} drained: no VM ran on it\n"));
        return Ok(Done::Ok);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut waiting = false;
        for item in &mut items {
            if let Err(e) = advance(target, item).await {
                return failure(target, e);
            }
            waiting |= !matches!(item.step, Step::Done { .. });
        }
        if !waiting || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let width = items.iter().map(|i| i.namespace.len() + i.name.len() + 1).max().unwrap_or(0);
    let mut all_moved = true;
    for item in &items {
        let (outcome, moved) = match &item.step {
            Step::Done { outcome, moved } => (outcome.clone(), *moved),
            _ => (format!("not done within {} s", timeout.as_secs()), false),
        };
        all_moved &= moved;
        print_stdout(&format!("  {:<width$}  {outcome}\n", format!("{}/{}", item.namespace, item.name)));
    }
    if all_moved {
        print_stdout(&format!("node/{node} drained\n"));
        Ok(Done::Ok)
    } else {
        Err(Error::failed(format!("node/{node} is not drained: a VM could not be moved off it")))
    }
}

/// Begin moving one VMI off the node, by its evictionStrategy.
async fn start(target: &Target, vmi: &DynamicObject) -> Result<Item, kube::Error> {
    let namespace = vmi.metadata.namespace.clone().unwrap_or_default();
    let name = vmi.metadata.name.clone().unwrap_or_default();
    let vm = vmi.metadata.owner_references.iter().flatten().find(|o| o.kind == "VirtualMachine").map(|o| o.name.clone());
    let strategy = vmi.data.pointer("/spec/evictionStrategy").and_then(Value::as_str).unwrap_or("None").to_string();
    let migratable = kubevirt::condition(vmi, "LiveMigratable");
    let can_migrate = migratable.is_some_and(|c| c["status"] == "True");
    let why_not = migratable.and_then(|c| c["message"].as_str()).unwrap_or("its handler has not said whether it can").to_string();
    let item = |step| Item { namespace: namespace.clone(), name: name.clone(), vm: vm.clone(), started: Instant::now(), step };
    let step = match strategy.as_str() {
        "LiveMigrate" | "LiveMigrateIfPossible" if can_migrate => {
            let m = migration_cmd::create(&target.client, &namespace, &name, None).await?;
            print_stdout(&format!("{namespace}/{name}: migrating (evictionStrategy {strategy})\n"));
            Step::Migrating { migration: m.metadata.name.unwrap_or_default() }
        }
        // KubeVirt blocks the eviction of such a VMI: it stays, and the drain does not finish.
        "LiveMigrate" => Step::Done { outcome: format!("NOT moved: evictionStrategy LiveMigrate, but it cannot migrate ({why_not}); it keeps running here"), moved: false },
        "External" => Step::Done { outcome: "left alone: evictionStrategy External (another controller moves it)".into(), moved: true },
        _ => {
            let uid = vmi.metadata.uid.clone().unwrap_or_default();
            let why = if strategy == "LiveMigrateIfPossible" { format!("it cannot migrate: {why_not}") } else { format!("evictionStrategy {strategy}") };
            stop(target, &namespace, &name, &uid).await?;
            print_stdout(&format!("{namespace}/{name}: stopping ({why})\n"));
            Step::Stopping { uid }
        }
    };
    Ok(item(step))
}

/// Delete the VMI, as the eviction of its launcher ends it: its guest gets its grace period.
async fn stop(target: &Target, namespace: &str, name: &str, uid: &str) -> Result<(), kube::Error> {
    let vmis: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), namespace, &kubevirt::vmi_resource());
    let params = DeleteParams { preconditions: Some(kube::api::Preconditions { uid: Some(uid.to_string()), resource_version: None }), ..Default::default() };
    match vmis.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Look at one item again and move it on.
async fn advance(target: &Target, item: &mut Item) -> Result<(), kube::Error> {
    let vmis: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), &item.namespace, &kubevirt::vmi_resource());
    match &item.step {
        Step::Done { .. } => {}
        Step::Migrating { migration } => {
            let api = migration_cmd::migrations(&target.client, &item.namespace);
            let ended = migration_cmd::follow(&api, migration, Duration::ZERO, |_| {}).await?;
            if !matches!(ended, Ended::TimedOut(_)) {
                let moved = matches!(ended, Ended::Succeeded { .. });
                let outcome = ended.describe(item.started.elapsed());
                print_stdout(&format!("{}/{}: {outcome}\n", item.namespace, item.name));
                item.step = Step::Done { outcome, moved };
            }
        }
        Step::Stopping { uid } => {
            let current = vmis.get_opt(&item.name).await?;
            if current.as_ref().and_then(|v| v.metadata.uid.as_ref()) != Some(uid) {
                let strategy = match &item.vm {
                    Some(vm) => {
                        let vms: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), &item.namespace, &kubevirt::vm_resource());
                        vms.get_opt(vm).await?.map(|vm| RunStrategy::of(&vm))
                    }
                    None => None,
                };
                item.step = match strategy {
                    Some(strategy) => Step::Restarting { since: Instant::now(), strategy },
                    None => Step::Done { outcome: "stopped".into(), moved: true },
                };
            }
        }
        Step::Restarting { since, strategy } => {
            let (since, strategy) = (*since, *strategy);
            let next = vmis.get_opt(&item.name).await?;
            let placed = next.as_ref().map(migration_cmd::node_of).filter(|n| !n.is_empty());
            let outcome = match (placed, strategy) {
                (Some(node), s) => Some(format!("stopped; its run strategy {} started it again on node {node}", s.as_str())),
                (None, RunStrategy::Always) if since.elapsed() > RESTART_WATCH => {
                    Some(format!("stopped; run strategy Always, but it was not started again within {} s", RESTART_WATCH.as_secs()))
                }
                (None, RunStrategy::Always) => None,
                // Manual, RerunOnFailure (a clean stop is not a failure), Halted, Once: it
                // stays stopped until someone starts it.
                (None, s) => Some(format!("stopped; its run strategy {} keeps it stopped", s.as_str())),
            };
            if let Some(outcome) = outcome {
                print_stdout(&format!("{}/{}: {outcome}\n", item.namespace, item.name));
                item.step = Step::Done { outcome, moved: true };
            }
        }
    }
    Ok(())
}
