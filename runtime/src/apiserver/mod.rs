//! The local control plane's API server: the Kubernetes REST conventions (discovery,
//! CRUD, watch, patch, server-side apply) for the resources vmform needs, over TLS, with
//! bearer tokens, backed by a durable SQLite store.
//!
//! ```text
//! request ─auth─▶ route (resource, namespace, name, subresource) ─▶ handler
//!   reads:  in-memory state ─▶ selectors, paging ─▶ JSON
//!   writes: validate ─▶ store writer (one thread, group commit) ─▶ SQLite (WAL, FULL sync)
//!                                          └─▶ in-memory state + watch history ─▶ watchers
//! ```

pub mod auth;
pub mod error;
pub mod fieldmanager;
pub mod handlers;
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
