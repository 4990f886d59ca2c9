//! `vmform vm migrate` and `vmform vm migrate-cancel`: a KubeVirt
//! VirtualMachineInstanceMigration, created (or deleted) and followed to its end. The
//! cluster does the work (specs/migration-design.md); this only asks and reports, so it
//! means the same on the local control plane and on any KubeVirt cluster.

use crate::cli::VmArgs;
use crate::error::{Done, Error, Outcome};
use crate::print_stdout;
use crate::vm_lookup::{cluster_error, connect, connect_to_instance, running_instance};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vmform_runtime::kubevirt::{self, MigrationPhase, MigrationState};

const POLL: Duration = Duration::from_millis(200);

pub(crate) fn migrations(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kubevirt::migration_resource())
}

/// The VMI's node.
pub(crate) fn node_of(vmi: &DynamicObject) -> String {
    vmi.data.pointer("/status/nodeName").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A new migration of the VMI `vmi` (optionally to one node), as `virtctl migrate` makes one.
pub(crate) async fn create(client: &kube::Client, namespace: &str, vmi: &str, to: Option<&str>) -> Result<DynamicObject, kube::Error> {
    let mut spec = json!({ "vmiName": vmi });
    if let Some(node) = to {
        spec["addedNodeSelector"] = json!({ "kubernetes.io/hostname": node });
    }
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": { "generateName": "kubevirt-migrate-vm-", "namespace": namespace },
        "spec": spec,
    }))
    .expect("a migration object deserialises");
    migrations(client, namespace).create(&PostParams::default(), &object).await
}

/// How a followed migration ended.
pub(crate) enum Ended {
    Succeeded { source: String, target: String, time_elapsed_ms: Option<u64>, downtime_ms: Option<u64> },
    Failed(String),
    /// The object went away before it said how it ended.
    Deleted,
    TimedOut(String),
}

impl Ended {
    /// One line for people: where it went and what it took, or why not.
    pub(crate) fn describe(&self, took: Duration) -> String {
        match self {
            Ended::Succeeded { source, target, time_elapsed_ms, downtime_ms } => {
                let mut line = format!("migrated from {source} to {target} in {:.1} s", took.as_secs_f64());
                if let (Some(job), Some(down)) = (time_elapsed_ms, downtime_ms) {
                    line.push_str(&format!(" (libvirt's job {job} ms, the guest paused {down} ms)"));
                }
                line
            }
            Ended::Failed(reason) => format!("the migration failed: {reason}"),
            Ended::Deleted => "the migration object was deleted before it ended".to_string(),
            Ended::TimedOut(phase) => format!("the migration had not ended yet (it is {phase}; it goes on)"),
        }
    }
}

/// Follow the migration `name` until it ends or `timeout` passes; `on_phase` hears of each
/// phase it enters (from its phaseTransitionTimestamps, so none is missed between looks).
pub(crate) async fn follow(api: &Api<DynamicObject>, name: &str, timeout: Duration, mut on_phase: impl FnMut(&str)) -> Result<Ended, kube::Error> {
    let started = Instant::now();
    let mut seen = 0usize;
    loop {
        let Some(m) = api.get_opt(name).await? else { return Ok(Ended::Deleted) };
        let phases: Vec<String> = m
            .data
            .pointer("/status/phaseTransitionTimestamps")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(|t| t["phase"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for phase in phases.iter().skip(seen) {
            on_phase(phase);
        }
        seen = seen.max(phases.len());
        let state: MigrationState = m.data.pointer("/status/migrationState").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
        match MigrationPhase::of(&m) {
            Some(MigrationPhase::Succeeded) => {
                let stats: Value = m.metadata.annotations.as_ref().and_then(|a| a.get(kubevirt::MIGRATION_STATS_ANNOTATION)).and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
                return Ok(Ended::Succeeded {
                    source: state.source_node,
                    target: state.target_node,
                    time_elapsed_ms: stats["timeElapsedMs"].as_u64(),
                    downtime_ms: stats["downtimeMs"].as_u64(),
                });
            }
            Some(MigrationPhase::Failed) => return Ok(Ended::Failed(state.failure_reason.unwrap_or_else(|| "no reason given".into()))),
            phase => {
                if started.elapsed() > timeout {
                    return Ok(Ended::TimedOut(phase.map_or("new", MigrationPhase::as_str).to_string()));
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) async fn migrate(args: &VmArgs, to: Option<&str>, detach: bool, timeout: Duration) -> Outcome {
    let (target, namespace, vmi) = connect_to_instance(args).await?;
    let name = &args.name;
    if to.is_some_and(|to| to == node_of(&vmi)) {
        return Err(Error::failed(format!("VM {namespace}/{name} already runs on node {}", node_of(&vmi))));
    }
    let started = Instant::now();
    let m = match create(&target.client, &namespace, name, to).await {
        Ok(m) => m,
        Err(kube::Error::Api(s)) if s.code != 401 && s.code != 403 => {
            return Err(Error::failed(format!("cannot migrate {namespace}/{name}: {}", s.message)));
        }
        Err(e) => return Err(cluster_error(&target, e)),
    };
    let m_name = m.metadata.name.clone().unwrap_or_default();
    print_stdout(&format!("{namespace}/{name}: migration {m_name} created (on node {})\n", node_of(&vmi)));
    if detach {
        return Ok(Done::Ok);
    }
    let api = migrations(&target.client, &namespace);
    let followed = follow(&api, &m_name, timeout, |phase| print_stdout(&format!("  {phase:<16} {:>5.1} s\n", started.elapsed().as_secs_f64())));
    let interrupted = tokio::signal::ctrl_c();
    let ended = tokio::select! {
        ended = followed => ended,
        _ = interrupted => {
            return Err(Error::failed(format!("stopped following: migration {m_name} goes on (`vmform vm migrate-cancel {name}` cancels it)")));
        }
    };
    match ended {
        Ok(ended @ Ended::Succeeded { .. }) => {
            print_stdout(&format!("{namespace}/{name}: {}\n", ended.describe(started.elapsed())));
            Ok(Done::Ok)
        }
        Ok(other) => {
            Err(Error::failed(format!("{namespace}/{name}: {}", other.describe(started.elapsed()))))
        }
        Err(e) => Err(cluster_error(&target, e)),
    }
}

pub(crate) async fn cancel(args: &VmArgs) -> Outcome {
    let (target, namespace) = connect(args).await?;
    let name = &args.name;
    let api = migrations(&target.client, &namespace);
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => return Err(cluster_error(&target, e)),
    };
    let running: Vec<DynamicObject> = list
        .into_iter()
        .filter(|m| m.data.pointer("/spec/vmiName").and_then(Value::as_str) == Some(name.as_str()))
        .filter(|m| !MigrationPhase::of(m).is_some_and(MigrationPhase::is_final) && m.metadata.deletion_timestamp.is_none())
        .collect();
    if running.is_empty() {
        return Err(Error::failed(format!("no migration of VM {namespace}/{name} is running")));
    }
    for m in &running {
        let m_name = m.metadata.name.clone().unwrap_or_default();
        // KubeVirt's way (virtctl migrate-cancel): delete it; its finalizer holds it until
        // the nodes have aborted.
        if let Err(e) = api.delete(&m_name, &DeleteParams::default()).await {
            return Err(cluster_error(&target, e));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match api.get_opt(&m_name).await {
                Ok(None) => break,
                Ok(Some(_)) => tokio::time::sleep(POLL).await,
                Err(e) => return Err(cluster_error(&target, e)),
            }
        }
        let vmi = running_instance(&target, &namespace, name).await.ok();
        let state = vmi.as_ref().and_then(MigrationState::of).filter(|s| Some(&s.migration_uid) == m.metadata.uid.as_ref());
        let on = vmi.as_ref().map(node_of).unwrap_or_default();
        match state {
            Some(s) if s.completed => print_stdout(&format!("{namespace}/{name}: the migration {m_name} completed before it could be cancelled: the VM runs on node {on}\n")),
            Some(s) if s.in_flight() => {
                return Err(Error::failed(format!("{namespace}/{name}: the migration {m_name} is still being aborted")));
            }
            _ => print_stdout(&format!("{namespace}/{name}: migration {m_name} cancelled; the VM stays on node {on}\n")),
        }
    }
    Ok(Done::Ok)
}
