//! vmform's API server (crate `vmform-apiserver`), the local control plane's: the
//! Kubernetes REST conventions (discovery, CRUD, watch, patch, server-side apply) for the
//! resources vmform needs, over TLS, with bearer tokens, backed by a durable SQLite store.
//! It knows nothing of the runtime (controller, handler, launcher): they meet only through
//! the Kubernetes API.
//!
//! ```text
//! request ─auth─▶ route (resource, namespace, name, subresource) ─▶ handler
//!   reads:  in-memory state ─▶ selectors, paging ─▶ JSON
//!   writes: validate ─▶ store writer (one thread, group commit) ─▶ SQLite (WAL, FULL sync)
//!                                          └─▶ in-memory state + watch history ─▶ watchers
//! ```
//!
//! Modules call downward only: `server` ─▶ `subresources`, `watch`, `table` ─▶ `handlers`
//! ─▶ `fieldmanager`, `selectors`, `validation`, `store`, `route`, `protobuf` ─▶
//! `resources` ─▶ `error`. (`local` starts it all on a data dir.)

pub mod auth;
pub mod error;
pub mod fieldmanager;
pub mod handlers;
pub mod local;
pub mod resources;
pub mod protobuf;
pub mod route;
pub mod selectors;
pub mod server;
pub mod store;
pub mod subresources;
pub mod table;
pub mod tls;
pub mod validation;
pub mod watch;

pub use error::{ApiError, Error};
