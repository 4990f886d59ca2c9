//! The crate's one error type. Each variant is a message a user can act on.

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("the cluster refused a request: {0}")]
    Api(String),
}

impl Error {
    /// Wrap a kube-rs error from a request to `server` (through `context`).
    pub fn from_kube(e: kube::Error, server: &str, context: &str) -> Error {
        match e {
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => {
                Error::Credentials { server: server.into(), context: context.into(), code: s.code, message: s.message.clone() }
            }
            kube::Error::Api(s) => Error::Api(format!("{} ({})", s.message, s.code)),
            kube::Error::HyperError(e) => Error::Unreachable { server: server.into(), reason: e.to_string() },
            kube::Error::Service(e) => Error::Unreachable { server: server.into(), reason: e.to_string() },
            other => Error::Api(other.to_string()),
        }
    }
}
