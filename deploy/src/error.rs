//! The deploy layer's one error type. Each variant is a message a user can act on.

/// A field another manager owns, from a server-side apply conflict.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictingField {
    pub field: String,
    pub message: String,
}

/// A change `lifecycle prevent-destroy` forbids: the VM (`namespace/name`) and what the
/// plan would do to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub vm: String,
    /// "deleted", "replaced (deleted and created again)", "changed in a way that loses data".
    pub change: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Which cluster, reaching it, and what it refused: vmform-cluster's.
    #[error(transparent)]
    Cluster(#[from] vmform_cluster::Error),
    #[error("{kind} {namespace}/{name} exists and is not managed by project {project}: vmform never changes objects it does not own; rename the VM in the specs, or delete the object with kubectl first")]
    NotOwned { kind: &'static str, namespace: String, name: String, project: String },
    #[error("{namespace}/{name}: {message}")]
    Conflict { namespace: String, name: String, message: String, fields: Vec<ConflictingField> },
    #[error("the plan is stale: {} changed on the cluster since the plan was made ({}); run `vmform plan` again", vmform_compiler::plural(moved.len(), "object"), moved.join(", "))]
    StalePlan { moved: Vec<String> },
    #[error("the plan file {path} cannot be used: {reason}")]
    PlanFile { path: String, reason: String },
    #[error("the plan is for {what}, but this run targets {here}")]
    WrongPlan { what: String, here: String },
    #[error("project {project} is locked by {holder} (lease {namespace}/{lease}); it was not released within {waited_seconds} s")]
    Locked { project: String, holder: String, namespace: String, lease: String, waited_seconds: u64 },
    #[error("the plan loses data ({}); apply it with --allow-data-loss if that is intended", objects.join(", "))]
    DataLoss { objects: Vec<String> },
    #[error("lifecycle prevent-destroy=#true forbids this plan: {}", refused.iter().map(|r| format!("{} would be {}", r.vm, r.change)).collect::<Vec<_>>().join("; "))]
    PreventDestroy { refused: Vec<Refused> },
    #[error("the cluster refused a request: {0}")]
    Api(String),
    #[error("timed out after {seconds} s waiting for: {}", waiting.join(", "))]
    WaitTimeout { seconds: u64, waiting: Vec<String> },
    #[error("{vm} is {state}, which it will not leave by itself soon: {reason}")]
    Stuck { vm: String, state: String, reason: String },
}
