//! The local runtime's storage provisioner, as the controller drives it: a VM's
//! `dataVolumeTemplates` become files under `<data>/volumes` before its first VMI (what
//! CDI does on a cluster), imports run on blocking threads and report progress into the
//! VM's status, and the files go when the VM is deleted.

use crate::Error;
use crate::volumes;
use kube::api::DynamicObject;
use kube::ResourceExt;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Whether a VM's data volumes are there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volumes {
    Ready,
    /// Being made; the text is the progress, e.g. `rootdisk: importing 42%`.
    Importing(String),
    /// Could not be made; the text says why.
    Failed(String),
}

#[derive(Debug, Clone)]
enum Job {
    Running(String),
    /// Failed; tried again after the instant, not before (no hot retry loop).
    Failed(String, std::time::Instant),
}

/// How long a failed import waits before it is tried again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) struct LocalVolumes {
    dir: Option<PathBuf>,
    jobs: Arc<Mutex<HashMap<(String, String), Job>>>,
    cancel: Arc<AtomicBool>,
}

impl Drop for LocalVolumes {
    fn drop(&mut self) {
        self.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn record_access_modes(dir: &std::path::Path, namespace: &str, template: &volumes::DataVolumeTemplate) -> std::io::Result<()> {
    let path = volumes::access_modes_path(dir, namespace, &template.name);
    let record = serde_json::to_vec(&serde_json::json!({ "accessModes": template.access_modes })).expect("JSON serialises");
    if std::fs::read(&path).ok().as_deref() == Some(&record[..]) {
        return Ok(());
    }
    crate::files::write_atomically(&path, &record, 0o600)
}

impl LocalVolumes {
    pub(crate) fn new(dir: Option<PathBuf>) -> LocalVolumes {
        LocalVolumes { dir, jobs: Default::default(), cancel: Default::default() }
    }

    /// Start what is missing and tell whether everything is there.
    pub(crate) async fn prepare(&self, vm: &DynamicObject) -> Volumes {
        let Some(dir) = &self.dir else { return Volumes::Ready };
        let namespace = vm.namespace().unwrap_or_default();
        let templates = vm.data.pointer("/spec/dataVolumeTemplates").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut waiting = Vec::new();
        for raw in &templates {
            let template = match volumes::DataVolumeTemplate::parse(raw) {
                Ok(t) => t,
                Err(e) => return Volumes::Failed(e.to_string()),
            };
            if volumes::claim_path(dir, &namespace, &template.name).exists() {
                // What a PVC object would say about the claim: whether it is shared
                // decides whether the VM can live-migrate.
                if let Err(e) = record_access_modes(dir, &namespace, &template) {
                    return Volumes::Failed(format!("data volume {}: cannot record its access modes: {e}", template.name));
                }
                continue;
            }
            let key = (namespace.clone(), template.name.clone());
            let mut jobs = self.jobs.lock().expect("the jobs lock is never poisoned");
            match jobs.get(&key) {
                Some(Job::Failed(message, retry)) if std::time::Instant::now() < *retry => return Volumes::Failed(message.clone()),
                Some(Job::Running(progress)) => waiting.push(format!("{}: {progress}", template.name)),
                Some(Job::Failed(..)) | None => {
                    jobs.insert(key.clone(), Job::Running("waiting".into()));
                    waiting.push(format!("{}: waiting", template.name));
                    let (jobs, cancel, dir, namespace) = (Arc::clone(&self.jobs), Arc::clone(&self.cancel), dir.clone(), namespace.clone());
                    tokio::task::spawn_blocking(move || {
                        let mut report = |p: volumes::Progress| {
                            jobs.lock().expect("never poisoned").insert(key.clone(), Job::Running(p.to_string()));
                        };
                        let result = volumes::provision(&dir, &namespace, &template, &mut report, &cancel);
                        let mut jobs = jobs.lock().expect("never poisoned");
                        match result {
                            Ok(_) => jobs.remove(&key),
                            Err(e) => jobs.insert(key, Job::Failed(e.to_string(), std::time::Instant::now() + RETRY_AFTER)),
                        };
                    });
                }
            }
        }
        if waiting.is_empty() { Volumes::Ready } else { Volumes::Importing(waiting.join(", ")) }
    }

    /// The claims a VMI names (`persistentVolumeClaim`, `dataVolume`) that have no file,
    /// each as `namespace/claim (path)`; none when this runtime does not keep volumes.
    pub(crate) fn missing_claims(&self, namespace: &str, spec: &Value) -> Vec<String> {
        let Some(dir) = &self.dir else { return Vec::new() };
        spec["volumes"]
            .as_array()
            .map(|volumes| {
                volumes
                    .iter()
                    .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName").or_else(|| v.pointer("/dataVolume/name")).and_then(Value::as_str))
                    .filter(|claim| !volumes::claim_path(dir, namespace, claim).exists())
                    .map(|claim| format!("{namespace}/{claim} ({})", volumes::claim_path(dir, namespace, claim).display()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Delete the files of a VM's data volume templates (its own volumes; claims it only
    /// refers to are left alone, as Kubernetes leaves a PVC).
    pub(crate) async fn delete_for(&self, vm: &DynamicObject) -> Result<(), Error> {
        let Some(dir) = self.dir.clone() else { return Ok(()) };
        let namespace = vm.namespace().unwrap_or_default();
        let names: Vec<String> = vm
            .data
            .pointer("/spec/dataVolumeTemplates")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            for name in names {
                volumes::delete(&dir, &namespace, &name).map_err(|e| Error::VolumeProvisioning(format!("data volume {name}: {e}")))?;
                let _ = std::fs::remove_file(volumes::access_modes_path(&dir, &namespace, &name));
            }
            Ok(())
        })
        .await
        .expect("the delete task does not panic")
    }
}
