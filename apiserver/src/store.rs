//! The durable store: every object in SQLite (WAL, `synchronous=FULL`), a copy of every
//! object in memory for reads, and a window of recent events for watches.
//!
//! One writer thread owns the database. Writes reach it as [`Mutation`]s — closures that
//! turn the current object into the next one — so read-modify-write (updates with a
//! resourceVersion precondition, patches, server-side apply) runs against exactly the
//! state it will replace. The writer takes whatever writes are waiting, gives each the
//! next revision of the one global counter, commits them in one transaction (group
//! commit: one fsync for many writes), and only then publishes them to readers and
//! watchers and answers the callers.
//!
//! Invariant: an acknowledged write survives a crash of the server — callers are answered
//! only after the transaction holding their write has committed with `synchronous=FULL`.
//!
//! Invariant: resourceVersions never go backwards — the revision counter is stored in the
//! same transaction as the writes it numbers, and events reach watchers in revision order
//! because they are published under the state lock in commit order.

use super::error::{ApiError, Error};
use super::resources::{self, Resource};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use tokio::sync::{broadcast, oneshot};

/// How many recent events a watch can resume from.
const HISTORY: usize = 50_000;
/// How many waiting writes go into one transaction at most.
const MAX_BATCH: usize = 512;
/// How far a watcher may fall behind before its watch is ended (it then re-lists).
const WATCH_BUFFER: usize = 8_192;

/// Where an object lives: its resource's index in [`resources::ALL`], namespace ("" for
/// cluster-scoped), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub resource: usize,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(resource: &'static Resource, namespace: &str, name: &str) -> Self {
        Key { resource: resource_index(resource), namespace: namespace.to_string(), name: name.to_string() }
    }
    pub fn resource(&self) -> &'static Resource {
        resources::ALL[self.resource]
    }
}

fn resource_index(resource: &Resource) -> usize {
    resources::ALL.iter().position(|r| *r == resource).expect("resources come from resources::ALL")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A committed change, as watchers receive it.
#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    pub key: Key,
    pub revision: u64,
    /// The object after the change; for a deletion, the last state with the deletion's
    /// resourceVersion.
    pub object: Arc<Value>,
    /// The object before the change: a watch with a selector needs it to see an object
    /// leave its selection (sent as DELETED) or enter it (ADDED).
    pub previous: Option<Arc<Value>>,
}

/// What a mutation decided.
pub enum Change {
    /// Store this object (create or replace).
    Put(Value),
    /// Remove the object.
    Delete,
    /// Leave everything as it is (an update that changes nothing keeps its
    /// resourceVersion, as the API server does).
    Unchanged,
}

/// Turns the current object (`None`: absent) into a change. Runs on the writer thread
/// with the state every earlier write left.
pub type Mutation = Box<dyn FnOnce(Option<&Value>) -> Result<Change, ApiError> + Send>;

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Written {
    /// The stored object (with its new resourceVersion), the deleted object, or the
    /// unchanged current one.
    pub object: Option<Arc<Value>>,
    pub created: bool,
    pub deleted: bool,
}

/// Where a write's answer goes.
type Reply = oneshot::Sender<Result<Written, ApiError>>;

struct WriteRequest {
    key: Key,
    mutation: Mutation,
    dry_run: bool,
    reply: Reply,
}

/// The in-memory state readers see: exactly what has been committed.
pub struct State {
    objects: BTreeMap<Key, Arc<Value>>,
    revision: u64,
    /// Recent events in revision order; every event after `history_start` is here.
    history: VecDeque<Arc<Event>>,
    history_start: u64,
    events: broadcast::Sender<Arc<Event>>,
}

impl State {
    pub fn revision(&self) -> u64 {
        self.revision
    }
    pub fn get(&self, key: &Key) -> Option<&Arc<Value>> {
        self.objects.get(key)
    }
    /// Objects of one resource, in one namespace or all, in key order, starting after
    /// `after` (a namespace and name) when paging.
    pub fn range<'a>(
        &'a self,
        resource: &'static Resource,
        namespace: Option<&'a str>,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a {
        let index = resource_index(resource);
        let start = match after {
            Some((ns, name)) => Key { resource: index, namespace: ns.to_string(), name: format!("{name}\0") },
            None => Key { resource: index, namespace: namespace.unwrap_or("").to_string(), name: String::new() },
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.resource == index && namespace.is_none_or(|ns| k.namespace == ns))
    }
    /// The oldest revision a watch can start from.
    pub fn history_start(&self) -> u64 {
        self.history_start
    }
}

/// What a watch starts with: the committed events after its revision, then a live feed.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
}

/// The store: shared by every request handler.
pub struct Store {
    state: Arc<Mutex<State>>,
    writes: mpsc::Sender<WriteRequest>,
    commits: Arc<AtomicU64>,
}

impl Store {
    /// Open (or create) the database at `path`, load every object, and start the writer.
    pub fn open(path: &Path) -> Result<Store, Error> {
        let db_error = |source| Error::Database { path: path.display().to_string(), source };
        let db = Connection::open(path).map_err(db_error)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS objects (
                 resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                 revision INTEGER NOT NULL, body BLOB NOT NULL,
                 PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
        .map_err(db_error)?;
        let revision: u64 = db
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(db_error)?
            .unwrap_or(0) as u64;
        let mut objects = BTreeMap::new();
        {
            let mut rows = db.prepare("SELECT resource, namespace, name, body FROM objects").map_err(db_error)?;
            let mut rows = rows.query([]).map_err(db_error)?;
            while let Some(row) = rows.next().map_err(db_error)? {
                let resource: String = row.get(0).map_err(db_error)?;
                let namespace: String = row.get(1).map_err(db_error)?;
                let name: String = row.get(2).map_err(db_error)?;
                let body: Vec<u8> = row.get(3).map_err(db_error)?;
                // A resource this version no longer serves stays in the database untouched.
                let Some(index) = resources::ALL.iter().position(|r| r.qualified() == resource) else { continue };
                let object: Value = serde_json::from_slice(&body).map_err(|source| Error::Corrupt {
                    path: path.display().to_string(),
                    key: format!("{resource} {namespace}/{name}"),
                    source,
                })?;
                objects.insert(Key { resource: index, namespace, name }, Arc::new(object));
            }
        }
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let state = Arc::new(Mutex::new(State {
            objects,
            revision,
            history: VecDeque::new(),
            history_start: revision,
            events,
        }));
        let (writes, queue) = mpsc::channel();
        let writer_state = Arc::clone(&state);
        let commits = Arc::new(AtomicU64::new(0));
        let writer_commits = Arc::clone(&commits);
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || Writer { db, state: writer_state, commits: writer_commits }.run(queue))
            .expect("the store writer thread starts");
        Ok(Store { state, writes, commits })
    }

    /// How many transactions the writer has committed: with the revision, the mean
    /// group-commit batch.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The committed state, for reads. Hold it briefly: the writer needs it to publish.
    pub fn read(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `mutation` on the object at `key` and commit the result (unless `dry_run`).
    pub async fn write(&self, key: Key, dry_run: bool, mutation: Mutation) -> Result<Written, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteRequest { key, mutation, dry_run, reply })
            .map_err(|_| ApiError::internal("the store is shut down"))?;
        answer.await.map_err(|_| ApiError::internal("the store writer stopped"))?
    }

    /// Events after `revision`, and a live feed from there on, with no gap and no
    /// repeat; `Err` when `revision` is older than the history kept (410 Gone).
    pub fn subscribe(&self, revision: u64) -> Result<Subscription, u64> {
        let state = self.read();
        if revision < state.history_start {
            return Err(state.history_start);
        }
        let first = state.history.partition_point(|e| e.revision <= revision);
        let backlog = state.history.iter().skip(first).cloned().collect();
        Ok(Subscription { backlog, live: state.events.subscribe() })
    }

    /// A live feed only, with the current state: for watches that start "now".
    pub fn subscribe_now(&self) -> (MutexGuard<'_, State>, broadcast::Receiver<Arc<Event>>) {
        let state = self.read();
        let live = state.events.subscribe();
        (state, live)
    }
}

struct Writer {
    db: Connection,
    state: Arc<Mutex<State>>,
    commits: Arc<AtomicU64>,
}

/// A write the batch has decided on, waiting for its commit.
struct Pending {
    key: Key,
    kind: EventType,
    revision: u64,
    object: Arc<Value>,
    previous: Option<Arc<Value>>,
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<WriteRequest>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    fn commit_batch(&mut self, batch: Vec<WriteRequest>) {
        let mut revision = self.state.lock().unwrap_or_else(|p| p.into_inner()).revision;
        // Objects as this batch left them so far: later writes in the batch see earlier ones.
        let mut overlay: HashMap<Key, Option<Arc<Value>>> = HashMap::new();
        let mut pending: Vec<Pending> = vec![];
        // Each caller's answer, and whether it waits on the commit.
        let mut replies: Vec<(Reply, Result<Written, ApiError>, bool)> = vec![];
        for request in batch {
            let current: Option<Arc<Value>> = match overlay.get(&request.key) {
                Some(entry) => entry.clone(),
                None => self.state.lock().unwrap_or_else(|p| p.into_inner()).objects.get(&request.key).cloned(),
            };
            let committing = !request.dry_run;
            let outcome = match (request.mutation)(current.as_deref()) {
                Err(e) => Err(e),
                Ok(Change::Unchanged) => {
                    replies.push((request.reply, Ok(Written { object: current, created: false, deleted: false }), false));
                    continue;
                }
                Ok(Change::Put(mut object)) => {
                    let next = revision + 1;
                    object["metadata"]["resourceVersion"] = Value::String(next.to_string());
                    let object = Arc::new(object);
                    if committing {
                        revision = next;
                        let kind = if current.is_some() { EventType::Modified } else { EventType::Added };
                        overlay.insert(request.key.clone(), Some(Arc::clone(&object)));
                        pending.push(Pending { key: request.key, kind, revision, object: Arc::clone(&object), previous: current.clone() });
                    }
                    Ok(Written { object: Some(object), created: current.is_none(), deleted: false })
                }
                Ok(Change::Delete) => match current {
                    None => Err(ApiError::not_found("object not found")),
                    Some(last) => {
                        let next = revision + 1;
                        let mut gone = (*last).clone();
                        gone["metadata"]["resourceVersion"] = Value::String(next.to_string());
                        let gone = Arc::new(gone);
                        if committing {
                            revision = next;
                            overlay.insert(request.key.clone(), None);
                            pending.push(Pending { key: request.key, kind: EventType::Deleted, revision, object: Arc::clone(&gone), previous: Some(last) });
                        }
                        Ok(Written { object: Some(gone), created: false, deleted: true })
                    }
                },
            };
            let committing = committing && outcome.is_ok();
            replies.push((request.reply, outcome, committing));
        }
        if !pending.is_empty() {
            if let Err(e) = self.persist(&pending, revision) {
                // Nothing of this batch is committed: every write in it fails, and the
                // in-memory state is left as it was.
                let message = format!("the store could not commit: {e}");
                for (reply, outcome, committing) in replies {
                    let _ = reply.send(if committing { Err(ApiError::internal(message.clone())) } else { outcome });
                }
                return;
            }
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.publish(pending, revision);
        }
        for (reply, outcome, _) in replies {
            // A caller that went away (a closed connection) is not an error: the write stands.
            let _ = reply.send(outcome);
        }
    }

    fn persist(&mut self, pending: &[Pending], revision: u64) -> rusqlite::Result<()> {
        let tx = self.db.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO objects (resource, namespace, name, revision, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (resource, namespace, name) DO UPDATE SET revision = excluded.revision, body = excluded.body",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3")?;
            for p in pending {
                let resource = p.key.resource().qualified();
                if p.kind == EventType::Deleted {
                    delete.execute(params![resource, p.key.namespace, p.key.name])?;
                } else {
                    let body = serde_json::to_vec(&*p.object).expect("JSON values serialise");
                    put.execute(params![resource, p.key.namespace, p.key.name, p.revision as i64, body])?;
                }
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('revision', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![revision as i64],
            )?;
        }
        tx.commit()
    }

    fn publish(&self, pending: Vec<Pending>, revision: u64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for p in pending {
            match p.kind {
                EventType::Deleted => state.objects.remove(&p.key),
                _ => state.objects.insert(p.key.clone(), Arc::clone(&p.object)),
            };
            let event = Arc::new(Event { kind: p.kind, key: p.key, revision: p.revision, object: p.object, previous: p.previous });
            if state.history.len() == HISTORY {
                let dropped = state.history.pop_front().expect("history is full");
                state.history_start = dropped.revision;
            }
            state.history.push_back(Arc::clone(&event));
            // No receiver is fine: nobody is watching.
            let _ = state.events.send(event);
        }
        state.revision = revision;
    }
}
