//! The API server's errors: [`Error`], the crate's one error type (a server that could not
//! start: its data dir, store, TLS, listener), and [`ApiError`], a request refused, which
//! travels as a Kubernetes `Status` with its HTTP code (and is [`Error::Bootstrap`] when the
//! server refuses its own first writes).

use serde::Serialize;
use serde_json::{json, Value};

/// One reason a request was refused, as `Status.details.causes[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`, `FieldManagerConflict`, …
    pub reason: String,
    pub message: String,
    /// The offending field, as the API server spells it: `spec.template.spec.domain`.
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause { reason: reason.into(), message: message.into(), field: field.into() }
    }
}

/// What a refusal is about: `Status.details`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
}

/// A refused request. Serialises as a `meta/v1` `Status` with `status: Failure`.
/// The details are boxed: errors travel through every handler's `Result`, and most have none.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, `Gone`,
    /// `Unauthorized`, `Forbidden`, `MethodNotAllowed`, `RequestEntityTooLarge`,
    /// `UnsupportedMediaType`, `NotAcceptable`, `InternalError`.
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<Details>>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }
    fn details_mut(&mut self) -> &mut Details {
        self.details.get_or_insert_with(Box::default)
    }
    /// Fill `details` with the object this error is about.
    pub fn about(mut self, group: &str, kind: &str, name: &str) -> Self {
        let d = self.details_mut();
        d.group = Some(group.to_string());
        d.kind = Some(kind.to_string());
        d.name = Some(name.to_string());
        self
    }
    /// Set `details.causes`.
    pub fn with_causes(mut self, causes: Vec<Cause>) -> Self {
        self.details_mut().causes = causes;
        self
    }
    pub fn causes(&self) -> &[Cause] {
        self.details.as_ref().map_or(&[], |d| &d.causes)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(404, "NotFound", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(409, "Conflict", message)
    }
    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }
    /// 422 Invalid, as the API server answers an object that fails validation:
    /// `VirtualMachine.kubevirt.io "x" is invalid: [spec.template: Required value, …]`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let list: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let joined = if list.len() == 1 { list[0].clone() } else { format!("[{}]", list.join(", ")) };
        ApiError::new(422, "Invalid", format!("{qualified} \"{name}\" is invalid: {joined}")).about(group, kind, name).with_causes(causes)
    }

    /// The `Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            if let Some(n) = &d.name {
                details.insert("name".into(), json!(n));
            }
            if let Some(g) = &d.group {
                details.insert("group".into(), json!(g));
            }
            if let Some(k) = &d.kind {
                // The API server puts the plural resource name here for most errors; the
                // kind is what kubectl prints, and what clients match on.
                details.insert("kind".into(), json!(k));
            }
            if !d.causes.is_empty() {
                details.insert("causes".into(), serde_json::to_value(&d.causes).expect("causes serialise"));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

/// Why the API server did not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the data dir {path} cannot be used: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("the data dir {path} is in use by another vmform server{pid}; stop it with `vmform down`")]
    Locked { path: String, pid: String },
    #[error("cannot open the database {path}: {source}")]
    Database { path: String, source: rusqlite::Error },
    #[error("the database {path} holds an object that is not valid JSON ({key}): {source}")]
    Corrupt { path: String, key: String, source: serde_json::Error },
    #[error("cannot read or write {path}: {source}")]
    TlsFile { path: String, source: std::io::Error },
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the TLS configuration is refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot create the system namespaces: {0}")]
    Bootstrap(ApiError),
}
