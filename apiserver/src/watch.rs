//! Watches: newline-delimited JSON events, as kube-rs's `watcher` and `kubectl get -w`
//! read them.
//!
//! Where a watch starts:
//! - no `resourceVersion`, or `0`: ADDED for every object that exists now, then changes;
//! - `sendInitialEvents=true`: the same, then a BOOKMARK annotated
//!   `k8s.io/initial-events-end: "true"` (the streaming-list protocol);
//! - any other revision: every change after it, from the event history; a revision older
//!   than the history is answered with an in-stream ERROR event carrying a 410 Status —
//!   an HTTP 410 would make kube-rs retry the same watch forever.

use super::error::ApiError;
use super::handlers::Selection;
use super::resources::Resource;
use super::store::{Event, EventType, Store};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// A watch request, parsed.
pub struct WatchRequest {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub selection: Selection,
    pub resource_version: Option<u64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
}

/// How often a watch with bookmarks gets one while nothing happens.
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);
/// The longest a watch runs when the client gives no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl WatchRequest {
    pub fn timeout_from(seconds: Option<u64>) -> Duration {
        seconds.map_or(DEFAULT_TIMEOUT, Duration::from_secs)
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({ "type": kind, "object": object })).expect("JSON values serialise");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn bookmark(resource: &Resource, revision: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    line("BOOKMARK", &json!({ "kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata }))
}

fn expired(revision: u64, oldest: u64) -> Bytes {
    let status = ApiError::gone(format!("too old resource version: {revision} ({oldest})")).to_status();
    line("ERROR", &status)
}

/// Start a watch: the events go into the returned channel, one line each, until the
/// timeout, an error, or the client hangs up (the channel's receiver is dropped).
pub fn start(store: &Arc<Store>, request: WatchRequest) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(256);
    let in_scope = {
        let namespace = request.namespace.clone();
        let resource = request.resource;
        move |event: &Event| event.key.resource() == resource && namespace.as_ref().is_none_or(|ns| event.key.namespace == *ns)
    };
    // Take the starting point and the live feed at one instant, so that no event is lost
    // or repeated between them.
    let mut initial: Vec<Bytes> = vec![];
    let live = match request.resource_version.filter(|rv| *rv > 0 && !request.send_initial_events) {
        Some(rv) => match store.subscribe(rv) {
            Ok(sub) => {
                for event in sub.backlog.iter().filter(|e| in_scope(e)) {
                    if let Some(l) = event_line(event, &request.selection) {
                        initial.push(l);
                    }
                }
                Some(sub.live)
            }
            Err(oldest) => {
                initial.push(expired(rv, oldest));
                None
            }
        },
        None => {
            let (state, live) = store.subscribe_now();
            for (_, object) in state.range(request.resource, request.namespace.as_deref(), None) {
                if request.selection.matches(object) {
                    initial.push(line("ADDED", object));
                }
            }
            if request.send_initial_events && request.bookmarks {
                initial.push(bookmark(request.resource, state.revision(), true));
            }
            Some(live)
        }
    };
    let store = Arc::clone(store);
    tokio::spawn(async move {
        for l in initial {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        let Some(mut live) = live else { return };
        let deadline = tokio::time::sleep(request.timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            let next = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if request.bookmarks => Some(bookmark(request.resource, store.read().revision(), false)),
                received = live.recv() => match received {
                    Ok(event) if in_scope(&event) => event_line(&event, &request.selection),
                    Ok(_) => None,
                    // Fallen too far behind: end the watch the way the API server does, so
                    // the client re-lists instead of missing events.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let oldest = store.read().history_start();
                        let _ = tx.send(expired(0, oldest)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if let Some(l) = next
                && tx.send(l).await.is_err() {
                    return;
                }
        }
    });
    rx
}

/// The line a selective watch sends for an event: an object that stops matching the
/// selectors is DELETED for this watcher, one that starts matching is ADDED.
fn event_line(event: &Event, selection: &Selection) -> Option<Bytes> {
    let now = selection.matches(&event.object);
    let before = event.previous.as_deref().is_some_and(|p| selection.matches(p));
    let kind = match (event.kind, before, now) {
        (EventType::Deleted, true, _) => EventType::Deleted,
        (EventType::Deleted, false, _) => return None,
        (EventType::Added, _, true) => EventType::Added,
        (EventType::Modified, true, true) => EventType::Modified,
        (EventType::Modified, false, true) => EventType::Added,
        (EventType::Modified, true, false) => EventType::Deleted,
        _ => return None,
    };
    Some(line(kind.as_str(), &event.object))
}
