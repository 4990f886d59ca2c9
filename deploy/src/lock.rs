//! One apply per project at a time: a `coordination.k8s.io/v1` Lease per project, taken
//! before the first write, renewed while the apply runs, released at the end. A crashed
//! apply's lease expires after its duration, and the next apply takes it over.

use crate::error::DeployError;
use crate::inventory::{ApplySet, PARENT_NAMESPACE};
use crate::target::Target;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long a lease holds without renewal.
const LEASE_SECONDS: i64 = 30;
const RENEW_EVERY: Duration = Duration::from_secs(10);

fn lease_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"), "leases")
}

fn micro_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A held lock; [`Lock::release`] gives it back.
pub struct Lock {
    api: Api<DynamicObject>,
    name: String,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
}

fn lease_body(name: &str, holder: &str, resource_version: Option<&str>, transitions: i64) -> DynamicObject {
    let now = micro_time(chrono::Utc::now());
    let mut v = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": name, "namespace": PARENT_NAMESPACE, "labels": { "app.kubernetes.io/managed-by": "vmform" } },
        "spec": { "holderIdentity": holder, "leaseDurationSeconds": LEASE_SECONDS, "acquireTime": now, "renewTime": now, "leaseTransitions": transitions },
    });
    if let Some(rv) = resource_version {
        v["metadata"]["resourceVersion"] = json!(rv);
    }
    serde_json::from_value(v).expect("a lease deserialises")
}

/// Whether a lease's holder has stopped renewing it.
fn expired(lease: &Value) -> bool {
    let renewed = lease.pointer("/spec/renewTime").and_then(Value::as_str).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let duration = lease.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64).unwrap_or(LEASE_SECONDS);
    renewed.is_none_or(|r| r.with_timezone(&chrono::Utc) + chrono::Duration::seconds(duration) < chrono::Utc::now())
}

/// Take the project's lease, waiting up to `timeout` for another holder to let go.
pub async fn acquire(target: &Target, set: &ApplySet, timeout: Duration) -> Result<Lock, DeployError> {
    let api: Api<DynamicObject> = Api::namespaced_with(target.client.clone(), PARENT_NAMESPACE, &lease_resource());
    let name = format!("{}-lock", set.parent);
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
    let holder = format!("vmform@{host}/{}", std::process::id());
    let started = Instant::now();
    loop {
        let current = api.get_opt(&name).await.map_err(|e| target.error(e))?;
        let attempt = match &current {
            None => api.create(&PostParams::default(), &lease_body(&name, &holder, None, 0)).await,
            Some(lease) => {
                let value = serde_json::to_value(lease).expect("objects serialise");
                if expired(&value) || value.pointer("/spec/holderIdentity").and_then(Value::as_str) == Some(holder.as_str()) {
                    let transitions = value.pointer("/spec/leaseTransitions").and_then(Value::as_i64).unwrap_or(0) + 1;
                    api.replace(&name, &PostParams::default(), &lease_body(&name, &holder, lease.metadata.resource_version.as_deref(), transitions)).await
                } else {
                    let other = value.pointer("/spec/holderIdentity").and_then(Value::as_str).unwrap_or("someone").to_string();
                    if started.elapsed() >= timeout {
                        return Err(DeployError::Locked {
                            project: set.project.clone(),
                            holder: other,
                            namespace: PARENT_NAMESPACE.into(),
                            lease: name,
                            waited_seconds: timeout.as_secs(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        };
        match attempt {
            Ok(_) => break,
            // Another apply got there first: look again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(target.error(e).into()),
        }
    }
    let renewer = {
        let (api, name, holder) = (api.clone(), name.clone(), holder.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let Ok(Some(lease)) = api.get_opt(&name).await else { continue };
                let mut value = serde_json::to_value(&lease).expect("objects serialise");
                if value.pointer("/spec/holderIdentity").and_then(Value::as_str) != Some(holder.as_str()) {
                    return;
                }
                value["spec"]["renewTime"] = json!(micro_time(chrono::Utc::now()));
                let renewed: DynamicObject = serde_json::from_value(value).expect("a lease deserialises");
                let _ = api.replace(&name, &PostParams::default(), &renewed).await;
            }
        })
    };
    Ok(Lock { api, name, holder, renewer })
}

impl Lock {
    /// Give the lease back (only if it is still ours).
    pub async fn release(self) {
        self.renewer.abort();
        if let Ok(Some(lease)) = self.api.get_opt(&self.name).await {
            let value = serde_json::to_value(&lease).expect("objects serialise");
            if value.pointer("/spec/holderIdentity").and_then(Value::as_str) == Some(self.holder.as_str()) {
                let precondition = kube::api::Preconditions { resource_version: lease.metadata.resource_version.clone(), uid: None };
                let _ = self.api.delete(&self.name, &DeleteParams { preconditions: Some(precondition), ..DeleteParams::default() }).await;
            }
        }
    }
}
