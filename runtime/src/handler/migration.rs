//! The handler's part in a live migration (KubeVirt's virt-handler on the source and the
//! target node). The controller hands a migration to the nodes by writing the VMI's
//! `status.migrationState` (source, target); then:
//!
//! - the **target** handler starts a receiving launcher (`--incoming`), and once it has
//!   prepared the domain writes `targetNodeAddress` (the migration is TargetReady); if that
//!   launcher dies before the guest arrived, it asks for an abort;
//! - the **source** handler writes `startTimestamp`, then `migrate.json` for its launcher;
//!   it passes abort requests on (`migrate-abort`), and writes the outcome: `failed`, or —
//!   once its launcher saw the guest leave — `completed` with the VMI's `nodeName` moved to
//!   the target, in one write.
//!
//! Invariant: a guest is never running on two nodes and never lost. Only the source handler
//! moves `nodeName`, and only after its launcher reported the guest gone to the target (or,
//! with that launcher dead, once libvirt's job is aborted or over, the source's domain is
//! gone and the target's libvirt shows the guest running there); every
//! write is guarded by the resourceVersion it was decided on, so the controller, the target
//! and the source never act on different readings of one migration.

use super::launchers::LauncherStatus;
use super::NodeSync;
use crate::Error;
use crate::libvirt::domains::{domain_seen, settle_outgoing, undefine_if_inactive, Outgoing};
use crate::kubevirt::{self, MigrationState};
use crate::launcher::{MigrateRequest, MigrationProgress, Role, MIGRATE_ABORT_FILE, MIGRATE_FILE};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::path::Path;

impl NodeSync {
    /// The source side of an in-flight migration of a VMI on this node. `true`: the VMI
    /// was handled (its guest left, or its outcome written); `false`: the usual sync goes on.
    pub(super) async fn sync_migration_source(
        &mut self,
        api: &Api<DynamicObject>,
        vmi: &DynamicObject,
        ms: &MigrationState,
        alive: bool,
        status: Option<&LauncherStatus>,
    ) -> Result<bool, Error> {
        let dir = self.launchers.dir_of(vmi.metadata.uid.as_deref().unwrap_or_default());
        let report = status.and_then(|s| s.migration(&ms.migration_uid));
        let exit = status.and_then(|s| s.exit.as_ref());
        if exit.is_some_and(|e| e.migrated()) {
            self.complete(api, vmi, ms, report, &dir).await?;
            return Ok(true);
        }
        if !alive && ms.started() {
            // The launcher is gone mid-migration without saying how it ended, and libvirt's
            // job goes on without it. Stop the job first, so the guest cannot switch over
            // after this decides; then libvirt's word on where the guest runs decides.
            let uri = self.uri.clone();
            let uid = vmi.metadata.uid.clone().unwrap_or_default();
            let here = tokio::task::spawn_blocking({
                let uid = uid.clone();
                move || settle_outgoing(&uri, &uid)
            })
            .await
            .expect("no panic");
            let there = match (here, self.target_libvirt(&ms.target_node).await) {
                (Outgoing::Gone, Some(target)) => tokio::task::spawn_blocking(move || domain_seen(&target, &uid).running).await.expect("no panic"),
                _ => false,
            };
            match here {
                // The next tick looks again.
                Outgoing::Unsettled => return Ok(true),
                Outgoing::Gone if there => {
                    self.complete(api, vmi, ms, report, &dir).await?;
                    return Ok(true);
                }
                // Still here (a new launcher takes it over) or gone (the usual sync says so).
                Outgoing::Here | Outgoing::Gone => {
                    self.fail(api, vmi, ms, "the source's launcher stopped during the migration", false, &dir).await?;
                    return Ok(false);
                }
            }
        }
        if let Some(r) = report
            && matches!(r.state, MigrationProgress::Failed | MigrationProgress::Aborted)
        {
            let aborted = r.state == MigrationProgress::Aborted;
            let reason = ms.failure_reason.clone().filter(|_| ms.abort_requested).unwrap_or_else(|| r.message.clone());
            self.fail(api, vmi, ms, &reason, aborted, &dir).await?;
            return Ok(true);
        }
        if ms.abort_requested {
            if !ms.started() {
                let reason = ms.failure_reason.clone().unwrap_or_else(|| "aborted before it started".to_string());
                self.fail(api, vmi, ms, &reason, true, &dir).await?;
                return Ok(true);
            }
            if std::fs::read_to_string(dir.join(MIGRATE_ABORT_FILE)).ok().as_deref().map(str::trim) != Some(ms.migration_uid.as_str()) {
                let _ = crate::files::write_atomically(&dir.join(MIGRATE_ABORT_FILE), ms.migration_uid.as_bytes(), 0o644);
            }
            return Ok(false);
        }
        let Some(address) = ms.target_node_address.clone().filter(|_| alive) else { return Ok(false) };
        let vmi = if ms.started() {
            std::borrow::Cow::Borrowed(vmi)
        } else {
            // Claim the start before the launcher begins: a write the controller or the
            // target made meanwhile (an abort, a failure) makes this one fail instead.
            let mut started = ms.clone();
            started.start_timestamp = Some(kubevirt::now());
            started.mode = Some("PreCopy".into());
            std::borrow::Cow::Owned(api.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&started.status_patch(vmi))).await?)
        };
        if report.is_none() && read_request(&dir).is_none_or(|r| r.migration_uid != ms.migration_uid) {
            let request = self.request(&vmi, ms, &address).await;
            tracing::info!(
                "VMI {}/{}: migrating to {} ({})",
                vmi.namespace().unwrap_or_default(),
                vmi.name_any(),
                ms.target_node,
                request.migrate_uri
            );
            let bytes = serde_json::to_vec_pretty(&request).expect("the request serialises");
            crate::files::write_atomically(&dir.join(MIGRATE_FILE), &bytes, 0o644)
                .map_err(|source| Error::NodeDir { path: dir.display().to_string(), source })?;
        }
        Ok(false)
    }

    /// What the source launcher is asked to do.
    async fn request(&self, vmi: &DynamicObject, ms: &MigrationState, address: &str) -> MigrateRequest {
        let config = ms.migration_configuration.clone().unwrap_or_default();
        let bandwidth_mib = config
            .bandwidth_per_migration
            .as_deref()
            .and_then(|q| kubevirt::quantity(&Value::String(q.to_string())))
            .map(|bytes| (bytes / f64::from(1 << 20)).ceil() as u64)
            .unwrap_or(0);
        let per_gib = config.completion_timeout_per_gi_b.unwrap_or(kubevirt::DEFAULT_COMPLETION_TIMEOUT_PER_GIB);
        let shared_storage = match self.target_node(&ms.target_node).await {
            Some(node) => node.annotations().get(kubevirt::STORAGE_ANNOTATION).is_some_and(|s| *s == self.storage),
            None => false,
        };
        MigrateRequest {
            migration_uid: ms.migration_uid.clone(),
            dest_uri: super::node::migration_uri(address),
            migrate_uri: format!("tcp://{address}"),
            bandwidth_mib,
            completion_timeout_seconds: completion_timeout(&vmi.data["spec"], per_gib),
            shared_storage,
            allow_auto_converge: config.allow_auto_converge.unwrap_or(false),
            max_downtime_ms: config.max_downtime_ms.unwrap_or(0),
            target_node: ms.target_node.clone(),
        }
    }

    /// The guest runs on the target now: the VMI moves there, in one status write.
    async fn complete(
        &mut self,
        api: &Api<DynamicObject>,
        vmi: &DynamicObject,
        ms: &MigrationState,
        report: Option<&crate::launcher::MigrationReport>,
        dir: &Path,
    ) -> Result<(), Error> {
        let stats = json!({
            "migrationUid": ms.migration_uid,
            "timeElapsedMs": report.and_then(|r| r.time_elapsed_ms),
            "downtimeMs": report.and_then(|r| r.downtime_ms),
        });
        // The labels first: once nodeName moves, this handler never looks at the VMI again.
        let meta = json!({
            "metadata": {
                "resourceVersion": vmi.resource_version(),
                "labels": { kubevirt::NODE_NAME_LABEL: ms.target_node, kubevirt::MIGRATION_TARGET_NODE_LABEL: null },
                "annotations": { kubevirt::MIGRATION_STATS_ANNOTATION: stats.to_string() },
            }
        });
        let vmi = api.patch(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&meta)).await?;
        let mut done = ms.clone();
        done.completed = true;
        done.end_timestamp = Some(kubevirt::now());
        if done.abort_requested {
            done.abort_status = Some("Failed".into());
        }
        let mut patch = done.status_patch(&vmi);
        // Invariant: a guest is never running on two nodes. This is the one place a VMI's
        // node changes after scheduling, and it runs only once the guest left this node.
        patch["status"]["nodeName"] = json!(ms.target_node);
        api.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tracing::info!("VMI {}/{}: migrated to {}", vmi.namespace().unwrap_or_default(), vmi.name_any(), ms.target_node);
        remove_requests(dir);
        Ok(())
    }

    /// The migration failed and the guest stays (or stayed) here.
    async fn fail(&mut self, api: &Api<DynamicObject>, vmi: &DynamicObject, ms: &MigrationState, reason: &str, aborted: bool, dir: &Path) -> Result<(), Error> {
        let mut failed = ms.clone();
        failed.failed = true;
        failed.end_timestamp = Some(kubevirt::now());
        failed.failure_reason = Some(reason.to_string());
        if ms.abort_requested {
            failed.abort_status = Some(if aborted { "Succeeded" } else { "Failed" }.into());
        }
        let vmi = api.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&failed.status_patch(vmi))).await?;
        let meta = json!({ "metadata": { "labels": { kubevirt::MIGRATION_TARGET_NODE_LABEL: null } } });
        api.patch(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&meta)).await?;
        tracing::info!("VMI {}/{}: the migration to {} failed: {reason}", vmi.namespace().unwrap_or_default(), vmi.name_any(), ms.target_node);
        remove_requests(dir);
        Ok(())
    }

    /// The target side of an in-flight migration to this node.
    pub(super) async fn sync_migration_target(&mut self, vmi: &DynamicObject, ms: &MigrationState) -> Result<(), Error> {
        let uid = vmi.metadata.uid.clone().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &vmi.namespace().unwrap_or_default(), &kubevirt::vmi_resource());
        let dir = self.launchers.dir_of(&uid);
        let status = super::launchers::read_status(&dir);
        let (alive, ours) = match self.launchers.by_uid.get_mut(&uid) {
            Some(l) => (l.alive(), l.incoming.as_deref() == Some(ms.migration_uid.as_str())),
            None => (false, false),
        };
        if ms.abort_requested {
            // The source aborts; the outcome it writes ends this side too.
            return Ok(());
        }
        if !alive {
            if !ours {
                let object = serde_json::to_value(vmi).expect("objects serialise");
                return self
                    .launchers
                    .spawn(&uid, &object, &self.launcher_args(), Some(&ms.migration_uid))
                    .map_err(|source| Error::NodeDir { path: dir.display().to_string(), source });
            }
            let arrived = status.as_ref().and_then(|s| s.migration(&ms.migration_uid)).is_some_and(|m| m.state == MigrationProgress::Completed);
            if !arrived {
                // As when a target pod dies: the migration cannot finish; the source aborts it.
                let why = status.and_then(|s| s.exit).map(|e| format!(": {}", e.message)).unwrap_or_default();
                let reason = format!("the target's launcher on node {} stopped before the guest arrived{why}", self.node);
                self.ask_abort(&api, vmi, ms, &reason).await?;
            }
            return Ok(());
        }
        let receiving = status.as_ref().is_some_and(|s| s.phase == "Receiving" && s.migration(&ms.migration_uid).is_some_and(|m| m.role == Role::Target));
        if receiving && ms.target_node_address.is_none() {
            let Some(address) = self.node_address else {
                let reason = format!("node {} has no address other nodes can migrate to (start its handler with --node-address)", self.node);
                return self.ask_abort(&api, vmi, ms, &reason).await;
            };
            let mut ready = ms.clone();
            ready.target_node_address = Some(address.to_string());
            api.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&ready.status_patch(vmi))).await?;
        }
        Ok(())
    }

    async fn ask_abort(&self, api: &Api<DynamicObject>, vmi: &DynamicObject, ms: &MigrationState, reason: &str) -> Result<(), Error> {
        let mut abort = ms.clone();
        abort.abort_requested = true;
        abort.failure_reason = Some(reason.to_string());
        tracing::warn!("VMI {}/{}: {reason}: asking for an abort", vmi.namespace().unwrap_or_default(), vmi.name_any());
        api.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&abort.status_patch(vmi))).await?;
        Ok(())
    }

    /// A launcher of a VMI that is neither this node's nor migrating here: a receiving
    /// launcher whose migration ended without it stops, and the domain it prepared goes;
    /// anything else stays as it is.
    pub(super) async fn sync_elsewhere(&mut self, vmi: &DynamicObject) {
        let uid = vmi.metadata.uid.clone().unwrap_or_default();
        let Some(launcher) = self.launchers.by_uid.get_mut(&uid) else { return };
        let status = super::launchers::read_status(&launcher.dir);
        if !launcher.alive() {
            let arrived = status.as_ref().and_then(|s| s.migration.as_ref()).is_some_and(|m| m.role == Role::Target && m.state == MigrationProgress::Completed);
            if launcher.incoming.take().is_some() && !arrived {
                // Invariant: never lost. Only an inactive definition goes; a running
                // guest is never touched here.
                let uri = self.uri.clone();
                let _ = tokio::task::spawn_blocking(move || undefine_if_inactive(&uri, &uid)).await;
            }
            return;
        }
        match status.map(|s| s.phase) {
            Some(phase) if phase == "Receiving" || phase == "Starting" => launcher.terminate(),
            Some(phase) if self.warned.insert(uid) => {
                let on = vmi.data.pointer("/status/nodeName").and_then(Value::as_str).unwrap_or("");
                tracing::error!(
                    "VMI {}/{} runs on node {on:?} but its guest also has a launcher here ({phase}): leaving both alone",
                    vmi.namespace().unwrap_or_default(),
                    vmi.name_any(),
                );
            }
            _ => {}
        }
    }

    async fn target_node(&self, name: &str) -> Option<Node> {
        Api::<Node>::all(self.client.clone()).get_opt(name).await.ok().flatten()
    }

    /// The target node's libvirt, as the source reaches it.
    async fn target_libvirt(&self, node: &str) -> Option<String> {
        self.target_node(node).await?.annotations().get(kubevirt::MIGRATION_URI_ANNOTATION).cloned()
    }
}

fn read_request(dir: &Path) -> Option<MigrateRequest> {
    serde_json::from_slice(&std::fs::read(dir.join(MIGRATE_FILE)).ok()?).ok()
}

fn remove_requests(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(MIGRATE_FILE));
    let _ = std::fs::remove_file(dir.join(MIGRATE_ABORT_FILE));
}

/// KubeVirt's acceptable completion time: `completionTimeoutPerGiB` for every GiB to move
/// (the guest's memory and the disks copied with it), in whole seconds, at least one.
pub fn completion_timeout(spec: &Value, per_gib: u64) -> u64 {
    let memory = kubevirt::guest_memory(spec).unwrap_or(0);
    let copied: u64 = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/emptyDisk/capacity"))
        .filter_map(kubevirt::quantity)
        .map(|b| b as u64)
        .sum();
    ((per_gib as u128 * (memory + copied) as u128) >> 30).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_completion_timeout_grows_with_what_moves() {
        let spec = |memory: &str, volumes: Value| json!({ "domain": { "memory": { "guest": memory } }, "volumes": volumes });
        assert_eq!(completion_timeout(&spec("1Gi", json!([])), 150), 150);
        assert_eq!(completion_timeout(&spec("256Mi", json!([])), 150), 37);
        // An emptyDisk is copied with the guest; a shared disk is not.
        let with_disks = json!([{ "name": "e", "emptyDisk": { "capacity": "1Gi" } }, { "name": "h", "hostDisk": { "path": "/x", "shared": true } }]);
        assert_eq!(completion_timeout(&spec("1Gi", with_disks), 150), 300);
        assert_eq!(completion_timeout(&spec("1Mi", json!([])), 150), 1, "never 0: 0 means no limit to the launcher");
    }
}
