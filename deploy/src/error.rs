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
    #[error("cannot read the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("the cluster at {server} cannot be reached: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("the cluster at {server} refused the credentials of context {context} ({code}): {message}")]
    Credentials { server: String, context: String, code: u16, message: String },
    #[error(
        "the cluster at {server} does not serve kubevirt.io/v1 VirtualMachines: KubeVirt is not installed there (or its CRDs are missing); install KubeVirt, or run `vmform up` for a local cluster"
    )]
    NoKubeVirt { server: String },
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

impl DeployError {
    /// Wrap a kube-rs error from a request to `server`.
    pub fn from_kube(e: kube::Error, server: &str, context: &str) -> DeployError {
        match e {
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => {
                DeployError::Credentials { server: server.into(), context: context.into(), code: s.code, message: s.message.clone() }
            }
            kube::Error::Api(s) => DeployError::Api(format!("{} ({})", s.message, s.code)),
            kube::Error::HyperError(e) => DeployError::Unreachable { server: server.into(), reason: e.to_string() },
            kube::Error::Service(e) => DeployError::Unreachable { server: server.into(), reason: e.to_string() },
            other => DeployError::Api(other.to_string()),
        }
    }
}
