//! Server-side apply and `metadata.managedFields`, kept the way the Kubernetes API server
//! keeps them (k8s.io/apimachinery `managedfields` on top of
//! sigs.k8s.io/structured-merge-diff), on plain `serde_json::Value` objects.
//!
//! # Field sets
//!
//! Every write records who set which fields. A field is a path into the object; the fields
//! an entry owns are written as `fieldsV1`, exactly as Kubernetes writes them:
//! `{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:running":{}}}`. `"."` inside a
//! node means the node itself is owned as well as what is listed under it.
//!
//! - Objects are granular: each key is its own field. An empty object is a leaf.
//! - Lists are atomic (one leaf, owned and replaced whole): the KubeVirt CRDs declare no
//!   list type. Two lists of `metadata` are granular, as in `ObjectMeta`:
//!   `ownerReferences` is a map keyed by `uid` (`k:{"uid":"…"}`; each reference is atomic,
//!   `structType=atomic` upstream) and `finalizers` is a set (`v:"name"`). A granular list
//!   whose items cannot all be keyed (a reference without a `uid`, a finalizer that is not
//!   a scalar) falls back to atomic.
//! - Never owned: `apiVersion`, `kind`, and in the top-level `metadata`: `name`,
//!   `namespace`, `uid`, `resourceVersion`, `generation`, `creationTimestamp`,
//!   `deletionTimestamp`, `deletionGracePeriodSeconds`, `managedFields`, `selfLink`, nor
//!   `metadata` itself.
//! - The main resource (`subresource` None) does not track `status`; the status
//!   subresource tracks only `status`. Entries of both live side by side.
//!
//! Entries are `{manager, operation, apiVersion, time, fieldsType: "FieldsV1", fieldsV1,
//! subresource?}`, one per (manager, operation, subresource), sorted as the API server
//! sorts them (Apply before Update, then by time, manager, apiVersion, subresource).
//! An entry whose field set becomes empty is dropped.
//!
//! # Apply ([`apply`])
//!
//! The applied field set is every leaf of the request body. The body (without its
//! `metadata.managedFields`, which are never read) is merged into the live object: objects
//! key by key, the two granular lists item by item, everything else replaced. Fields the
//! manager applied last time, does not apply now, and nobody else owns are then removed,
//! with any object or list left empty by that removal. Fields the merge changes or adds
//! that another entry owns — any manager, any operation — are conflicts: a 409 unless
//! `force`, which moves them to the applier. Removed fields leave every other entry. The
//! applier's Apply entry becomes exactly the applied set; its time moves only when the
//! object changed. A field applied with the value it already has is shared, not a conflict.
//!
//! # Update ([`update`])
//!
//! Create, PUT and JSON/merge patches: old and new are compared leaf by leaf. Added and
//! changed fields move to the manager's Update entry (time = now), removed fields leave
//! every entry. As upstream, a map that did not exist before is owned itself too (`"."`),
//! so a created object's entry reads `{"f:spec":{".":{},"f:running":{}}}`. A write that
//! changes no tracked field leaves `managedFields` exactly as stored.
//!
//! # Conflicts
//!
//! As `NewConflictError` in `managedfields/internal/conflict.go`: `Apply failed with 1
//! conflict: conflict with "kubectl-edit" using kubevirt.io/v1: .spec.running`, or
//! `Apply failed with N conflicts: conflicts with "a":\n- .spec.x\nconflicts with …`,
//! owners sorted by their manager identifier. An owner is printed as upstream prints it:
//! `"name"`, then ` with subresource "status"` if any, then ` using <apiVersion>` for an
//! Update entry only (an Apply owner has no apiVersion in its identifier). Paths are
//! `fieldpath.Path.String()`: `.metadata.labels.app.kubernetes.io/name` (field names are
//! not escaped), `.metadata.ownerReferences[uid="…"]`, `.metadata.finalizers[="…"]`.
//! One `FieldManagerConflict` cause per field, `message` `conflict with <owner>`.
//!
//! # Simplified, compared with the API server
//!
//! - No schema: every object key is treated as a declared field, so an Apply set never
//!   holds `"."` for a map's own node (upstream does for keys of maps with
//!   `additionalProperties` whose values are objects, and for `x-kubernetes-preserve-unknown-fields`).
//! - No version conversion: entries keep the apiVersion they were written with, and field
//!   sets are compared as they are.
//! - Upstream refuses an apply body carrying `metadata.managedFields`; here they are
//!   ignored. An update's `new` may carry `managedFields` (upstream accepts that as a reset
//!   of ownership); here they are ignored too, and ownership comes from `old`.
//! - Entries that cannot be read (unknown operation or fieldsType, malformed fieldsV1) are
//!   dropped; upstream resets all managedFields in that case.
//! - No cap on the number of Update entries (upstream folds the oldest into
//!   `ancient-changes` past ten), no `before-first-apply` for objects without entries, and
//!   no migration of client-side-apply ownership.
//! - A granular list merges by key, keeping the live order and appending new items;
//!   upstream interleaves the two orders.
//! - A new Apply entry whose apply changed nothing gets `now` as its time (upstream leaves
//!   it without one); removed fields leave their parents' empty objects removed rather
//!   than null.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value, json};

use crate::error::{ApiError, Cause};
use crate::validation::go_quote;

/// Which operation wrote the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "Apply" => Some(Operation::Apply),
            "Update" => Some(Operation::Update),
            _ => None,
        }
    }
}

/// Server-side apply of `applied` (the request body, already parsed; it carries apiVersion, kind, metadata.name, …)
/// onto `live` (None when the object does not exist yet: apply creates it).
/// Returns the merged object with `metadata.managedFields` updated. `subresource` is None for the main
/// resource or Some("status").
// `ApiError` is the server's one error type, returned unboxed by every handler.
pub fn apply(live: Option<&Value>, applied: &Value, manager: &str, force: bool, subresource: Option<&str>, now: &str) -> Result<Value, ApiError> {
    if !applied.is_object() {
        return Err(ApiError::bad_request("the applied configuration must be a JSON object"));
    }
    if applied.get("metadata").is_some_and(|metadata| !metadata.is_object()) {
        return Err(ApiError::bad_request("the applied configuration's metadata must be a JSON object"));
    }
    if live.is_some_and(|live| !live.is_object()) {
        return Err(ApiError::bad_request("the stored object is not a JSON object"));
    }
    let scope = Scope::of(subresource);
    let config = applied_config(applied, scope);
    let applied_fields = field_set(&tracked_view(&config, scope));
    let api_version = api_version_of(applied).or_else(|| live.and_then(api_version_of)).unwrap_or_default();
    let applier = |time: Option<String>, fields: FieldSet| Entry {
        manager: manager.to_string(),
        operation: Operation::Apply,
        subresource: subresource.map(str::to_string),
        api_version: api_version.clone(),
        time,
        fields,
    };

    let Some(live) = live else {
        if scope == Scope::Status {
            return Err(ApiError::not_found("the object does not exist, so its status cannot be applied"));
        }
        let mut created = config;
        write_entries(&mut created, vec![applier(Some(now.to_string()), applied_fields)]);
        return Ok(created);
    };

    let mut entries = read_entries(live);
    let previous = take_entry(&mut entries, manager, Operation::Apply, subresource);
    let owned_by_others = entries.iter().fold(FieldSet::default(), |all, entry| all.union(&entry.fields));

    let mut merged = live.clone();
    merge_into(&mut Vec::new(), &mut merged, &config);
    if let Some(previous) = &previous {
        let dropped = field_set(&tracked_view(&merged, scope))
            .intersection(&previous.fields)
            .difference(&applied_fields)
            .difference(&owned_by_others);
        for path in dropped.paths() {
            remove_field(&mut merged, &path);
        }
    }

    let changes = compare(&tracked_view(live, scope), &tracked_view(&merged, scope));
    let written = changes.modified.union(&changes.added);
    let conflicts: Vec<(&Entry, FieldSet)> = entries
        .iter()
        .map(|entry| (entry, entry.fields.intersection(&written)))
        .filter(|(_, fields)| !fields.is_empty())
        .collect();
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    // With force the conflicting fields move to the applier; without, `written` and the
    // other entries are disjoint and this only drops what the apply removed.
    for entry in &mut entries {
        entry.fields = entry.fields.difference(&written).difference(&changes.removed);
    }

    // Upstream moves the time only when the apply changed the object.
    let time = match previous {
        Some(previous) if changes.is_empty() => previous.time.or_else(|| Some(now.to_string())),
        _ => Some(now.to_string()),
    };
    entries.push(applier(time, applied_fields));
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// Record the ownership an ordinary write (create, update/PUT, JSON/merge patch) gives `manager`:
/// `new` is the object about to be stored, `old` what was stored before (None on create).
/// Returns `new` with `metadata.managedFields` updated.
pub fn update(old: Option<&Value>, new: Value, manager: &str, subresource: Option<&str>, now: &str) -> Value {
    if !new.is_object() || old.is_some_and(|old| !old.is_object()) {
        return new;
    }
    let mut new = new;
    let scope = Scope::of(subresource);
    let nothing = Value::Object(Map::new());
    let changes = compare(&tracked_view(old.unwrap_or(&nothing), scope), &tracked_view(&new, scope));
    if changes.is_empty() {
        // Not even a new time stamp; and what the client sent is not stored.
        let stored = old.and_then(|old| old.pointer("/metadata/managedFields")).cloned();
        set_managed_fields(&mut new, stored);
        return new;
    }

    let mut entries = old.map(read_entries).unwrap_or_default();
    let written = changes.modified.union(&changes.added);
    for entry in &mut entries {
        entry.fields = entry.fields.difference(&written).difference(&changes.removed);
    }
    if !written.is_empty() {
        let previous = take_entry(&mut entries, manager, Operation::Update, subresource).map(|entry| entry.fields).unwrap_or_default();
        entries.push(Entry {
            manager: manager.to_string(),
            operation: Operation::Update,
            subresource: subresource.map(str::to_string),
            api_version: api_version_of(&new).or_else(|| old.and_then(api_version_of)).unwrap_or_default(),
            time: Some(now.to_string()),
            fields: previous.union(&written),
        });
    }
    write_entries(&mut new, entries);
    new
}

// ---------------------------------------------------------------------------------------
// What is tracked

/// `metadata` fields the server sets itself: nobody owns them.
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Which part of the object a write owns: the main resource ignores status, the status
/// subresource ignores everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Main,
    Status,
}

impl Scope {
    fn of(subresource: Option<&str>) -> Scope {
        if subresource == Some("status") { Scope::Status } else { Scope::Main }
    }

    fn tracks(self, top_level_key: &str) -> bool {
        match self {
            Scope::Main => !matches!(top_level_key, "apiVersion" | "kind" | "status"),
            Scope::Status => top_level_key == "status",
        }
    }
}

/// The object with only the fields `scope` tracks, so that every walk below can treat
/// every field alike.
fn tracked_view(object: &Value, scope: Scope) -> Value {
    let mut view = Map::new();
    for (key, value) in object.as_object().into_iter().flatten().filter(|(key, _)| scope.tracks(key)) {
        let value = match (key.as_str(), value) {
            ("metadata", Value::Object(metadata)) => Value::Object(
                metadata
                    .iter()
                    .filter(|(field, _)| !UNTRACKED_METADATA.contains(&field.as_str()))
                    .map(|(field, value)| (field.clone(), value.clone()))
                    .collect(),
            ),
            _ => value.clone(),
        };
        view.insert(key.clone(), value);
    }
    Value::Object(view)
}

/// The part of an apply body that is merged: everything but `managedFields` for the main
/// resource, only `status` for the status subresource.
fn applied_config(applied: &Value, scope: Scope) -> Value {
    let mut config = match scope {
        Scope::Main => applied.clone(),
        Scope::Status => {
            let mut status_only = Map::new();
            if let Some(status) = applied.get("status") {
                status_only.insert("status".to_string(), status.clone());
            }
            Value::Object(status_only)
        }
    };
    if let Some(metadata) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    config
}

fn api_version_of(object: &Value) -> Option<String> {
    object.get("apiVersion").and_then(Value::as_str).filter(|version| !version.is_empty()).map(str::to_string)
}

// ---------------------------------------------------------------------------------------
// Paths and field sets

/// One step of a field path, as structured-merge-diff spells them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PathElement {
    /// A key of an object: `f:name` in fieldsV1, `.name` in a path.
    Field(String),
    /// An item of a keyed list, by its key as compact JSON: `k:{"uid":"…"}`, `[uid="…"]`.
    KeyedItem(String),
    /// An item of a set, by its value as JSON: `v:"…"`, `[="…"]`.
    SetItem(String),
    /// A list item by position: `i:0`, `[0]`. Only ever read from stored entries.
    Index(usize),
}

impl PathElement {
    fn fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::KeyedItem(key) => format!("k:{key}"),
            PathElement::SetItem(value) => format!("v:{value}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    fn from_fields_v1_key(key: &str) -> Option<Self> {
        let (prefix, rest) = key.split_at_checked(2)?;
        match prefix {
            "f:" => Some(PathElement::Field(rest.to_string())),
            // Re-serialised so that the same key always compares equal.
            "k:" => match serde_json::from_str::<Value>(rest).ok()? {
                key @ Value::Object(_) => Some(PathElement::KeyedItem(key.to_string())),
                _ => None,
            },
            "v:" => Some(PathElement::SetItem(serde_json::from_str::<Value>(rest).ok()?.to_string())),
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }

    /// Whether this element names `item`, the `index`th item of a list.
    fn selects(&self, index: usize, item: &Value) -> bool {
        match self {
            PathElement::Field(_) => false,
            PathElement::KeyedItem(key) => serde_json::from_str::<Map<String, Value>>(key)
                .is_ok_and(|key| !key.is_empty() && key.iter().all(|(field, value)| item.get(field) == Some(value))),
            PathElement::SetItem(value) => serde_json::from_str::<Value>(value).is_ok_and(|value| value == *item),
            PathElement::Index(position) => *position == index,
        }
    }
}

/// As `PathElement.String()` upstream.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::KeyedItem(key) => {
                let text = match serde_json::from_str::<Value>(key) {
                    Ok(Value::Object(fields)) => fields.iter().map(|(name, value)| format!("{name}={}", go_value_string(value))).collect::<Vec<_>>().join(","),
                    _ => key.clone(),
                };
                write!(f, "[{text}]")
            }
            PathElement::SetItem(value) => {
                let text = serde_json::from_str::<Value>(value).map(|value| go_value_string(&value)).unwrap_or_else(|_| value.clone());
                write!(f, "[={text}]")
            }
            PathElement::Index(index) => write!(f, "[{index}]"),
        }
    }
}

fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// `value.ToString` of structured-merge-diff: strings quoted as Go's `%q`.
fn go_value_string(value: &Value) -> String {
    match value {
        Value::String(text) => go_quote(text),
        Value::Array(items) => format!("[{}]", items.iter().map(go_value_string).collect::<Vec<_>>().join(",")),
        Value::Object(fields) => format!("{{{}}}", fields.iter().map(|(name, value)| format!("{name}={}", go_value_string(value))).collect::<Vec<_>>().join(";")),
        other => other.to_string(),
    }
}


/// A set of field paths, stored as a tree the way structured-merge-diff stores it:
/// `members` are the paths that end here, `children` the ones that go deeper.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn union(&self, other: &FieldSet) -> FieldSet {
        let mut union = self.clone();
        union.members.extend(other.members.iter().cloned());
        for (element, theirs) in &other.children {
            let merged = match union.children.get(element) {
                Some(ours) => ours.union(theirs),
                None => theirs.clone(),
            };
            union.children.insert(element.clone(), merged);
        }
        union
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let children = self
            .children
            .iter()
            .filter_map(|(element, ours)| {
                let common = ours.intersection(other.children.get(element)?);
                if common.is_empty() { None } else { Some((element.clone(), common)) }
            })
            .collect();
        FieldSet { members: self.members.intersection(&other.members).cloned().collect(), children }
    }

    /// The paths of `self` not in `other` (exact paths: a member of `other` does not take
    /// away what lies below it).
    fn difference(&self, other: &FieldSet) -> FieldSet {
        let children = self
            .children
            .iter()
            .filter_map(|(element, ours)| {
                let rest = match other.children.get(element) {
                    Some(theirs) => ours.difference(theirs),
                    None => ours.clone(),
                };
                if rest.is_empty() { None } else { Some((element.clone(), rest)) }
            })
            .collect();
        FieldSet { members: self.members.difference(&other.members).cloned().collect(), children }
    }

    /// Every path, in upstream's iteration order: at each level the members, then the
    /// children, each sorted.
    fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut paths = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut paths);
        paths
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, paths: &mut Vec<Vec<PathElement>>) {
        for member in &self.members {
            let mut path = prefix.clone();
            path.push(member.clone());
            paths.push(path);
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect_paths(prefix, paths);
            prefix.pop();
        }
    }

    fn to_fields_v1(&self) -> Map<String, Value> {
        let mut encoded = Map::new();
        for member in &self.members {
            encoded.insert(member.fields_v1_key(), json!({}));
        }
        for (element, child) in &self.children {
            let mut node = child.to_fields_v1();
            if self.members.contains(element) {
                node.insert(".".to_string(), json!({}));
            }
            encoded.insert(element.fields_v1_key(), Value::Object(node));
        }
        encoded
    }

    /// None when `fieldsV1` is not what Kubernetes writes.
    fn from_fields_v1(encoded: &Value) -> Option<FieldSet> {
        let mut set = FieldSet::default();
        for (key, node) in encoded.as_object()? {
            if key == "." {
                continue;
            }
            let element = PathElement::from_fields_v1_key(key)?;
            let node_fields = node.as_object()?;
            if node_fields.is_empty() || node_fields.contains_key(".") {
                set.members.insert(element.clone());
            }
            let child = FieldSet::from_fields_v1(node)?;
            if !child.is_empty() {
                set.children.insert(element, child);
            }
        }
        Some(set)
    }
}

/// Adds `path` to `set`, unless it is the object itself or its top-level `metadata`,
/// which nobody owns (upstream strips them from every set).
fn record(set: &mut FieldSet, path: &[PathElement]) {
    let is_metadata = matches!(path, [PathElement::Field(name)] if name == "metadata");
    if !path.is_empty() && !is_metadata {
        set.insert(path);
    }
}

// ---------------------------------------------------------------------------------------
// The shape of a value at a path

#[derive(Debug, Clone, Copy)]
enum ListKind {
    Atomic,
    /// A map keyed by this field of each item.
    Keyed(&'static str),
    Set,
}

/// The lists that are not atomic: those of `ObjectMeta`.
fn list_kind(path: &[PathElement]) -> ListKind {
    match path {
        [PathElement::Field(metadata), PathElement::Field(list)] if metadata == "metadata" => match list.as_str() {
            "ownerReferences" => ListKind::Keyed("uid"),
            "finalizers" => ListKind::Set,
            _ => ListKind::Atomic,
        },
        _ => ListKind::Atomic,
    }
}

/// The path element naming `item` in a list of `kind`; None for an item that cannot be
/// named, which makes the whole list atomic.
fn item_element(kind: ListKind, item: &Value) -> Option<PathElement> {
    match kind {
        ListKind::Atomic => None,
        ListKind::Keyed(field) => {
            let key = item.get(field).filter(|key| !key.is_object() && !key.is_array())?;
            Some(PathElement::KeyedItem(format!("{{{}:{key}}}", Value::from(field))))
        }
        ListKind::Set => (!item.is_object() && !item.is_array()).then(|| PathElement::SetItem(item.to_string())),
    }
}

/// The items of a granular list by their element; the first of duplicates wins, as upstream.
fn granular_items(kind: ListKind, items: &[Value]) -> Option<BTreeMap<PathElement, &Value>> {
    if matches!(kind, ListKind::Atomic) {
        return None;
    }
    let mut by_element = BTreeMap::new();
    for item in items {
        by_element.entry(item_element(kind, item)?).or_insert(item);
    }
    Some(by_element)
}

enum Shape<'a> {
    /// An object (`list` false) or a granular list (`list` true): each child its own field.
    Container { children: BTreeMap<PathElement, &'a Value>, list: bool },
    /// A scalar, null, an atomic list, or an item of a granular list.
    Leaf,
}

fn shape<'a>(path: &[PathElement], value: &'a Value) -> Shape<'a> {
    if matches!(path.last(), Some(PathElement::KeyedItem(_) | PathElement::SetItem(_) | PathElement::Index(_))) {
        return Shape::Leaf;
    }
    match value {
        Value::Object(fields) => Shape::Container {
            children: fields.iter().map(|(key, value)| (PathElement::Field(key.clone()), value)).collect(),
            list: false,
        },
        Value::Array(items) => match granular_items(list_kind(path), items) {
            Some(children) => Shape::Container { children, list: true },
            None => Shape::Leaf,
        },
        _ => Shape::Leaf,
    }
}

// ---------------------------------------------------------------------------------------
// Walks

/// The fields a configuration sets (structured-merge-diff's `ToFieldSet`): its leaves.
/// An empty object is a leaf; an empty granular list sets nothing.
fn field_set(view: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    collect_fields(&mut Vec::new(), view, &mut set);
    set
}

fn collect_fields(path: &mut Vec<PathElement>, value: &Value, set: &mut FieldSet) {
    match shape(path, value) {
        Shape::Container { children, list } if list || !children.is_empty() => {
            for (element, child) in children {
                path.push(element);
                collect_fields(path, child, set);
                path.pop();
            }
        }
        _ => record(set, path),
    }
}

/// What a write did, field by field (structured-merge-diff's `Compare`).
#[derive(Debug, Default)]
struct Changes {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

fn compare(old: &Value, new: &Value) -> Changes {
    let mut changes = Changes::default();
    compare_at(&mut Vec::new(), Some(old), Some(new), &mut changes);
    changes
}

fn compare_at(path: &mut Vec<PathElement>, old: Option<&Value>, new: Option<&Value>, changes: &mut Changes) {
    let old_shape = old.map(|value| shape(path, value));
    let new_shape = new.map(|value| shape(path, value));
    match (&old_shape, &new_shape) {
        (None | Some(Shape::Leaf), None | Some(Shape::Leaf)) => compare_leaf(path, old, new, changes),
        (Some(Shape::Container { list: old_list, .. }), Some(Shape::Container { list: new_list, .. })) if old_list != new_list => {
            compare_reshaped(path, &old_shape, &new_shape, changes)
        }
        (Some(Shape::Leaf), Some(Shape::Container { .. })) | (Some(Shape::Container { .. }), Some(Shape::Leaf)) => {
            compare_reshaped(path, &old_shape, &new_shape, changes)
        }
        _ => {
            let no_children = BTreeMap::new();
            let old_children = children_of(&old_shape).unwrap_or(&no_children);
            let new_children = children_of(&new_shape).unwrap_or(&no_children);
            // Empty on both sides: a leaf, so that `{}` and an absent field stay distinct.
            if old_children.is_empty() && new_children.is_empty() {
                compare_leaf(path, old, new, changes);
                return;
            }
            let elements: BTreeSet<&PathElement> = old_children.keys().chain(new_children.keys()).collect();
            for element in elements {
                path.push(element.clone());
                compare_at(path, old_children.get(element).copied(), new_children.get(element).copied(), changes);
                path.pop();
            }
            // A map or list that appears or disappears is itself added or removed: the
            // `"."` of an Update entry.
            match (old, new) {
                (None, Some(_)) => record(&mut changes.added, path),
                (Some(_), None) => record(&mut changes.removed, path),
                _ => {}
            }
        }
    }
}

fn children_of<'s, 'a>(shape: &'s Option<Shape<'a>>) -> Option<&'s BTreeMap<PathElement, &'a Value>> {
    match shape {
        Some(Shape::Container { children, .. }) => Some(children),
        _ => None,
    }
}

fn compare_leaf(path: &[PathElement], old: Option<&Value>, new: Option<&Value>, changes: &mut Changes) {
    match (old, new) {
        (None, Some(_)) => record(&mut changes.added, path),
        (Some(_), None) => record(&mut changes.removed, path),
        (Some(old), Some(new)) if old != new => record(&mut changes.modified, path),
        _ => {}
    }
}

/// A field that changed kind (a map became a scalar, say): the field itself is modified,
/// what it held before is removed and what it holds now is added.
fn compare_reshaped(path: &mut Vec<PathElement>, old: &Option<Shape<'_>>, new: &Option<Shape<'_>>, changes: &mut Changes) {
    record(&mut changes.modified, path);
    for (element, child) in children_of(old).into_iter().flatten() {
        path.push(element.clone());
        compare_at(path, Some(*child), None, changes);
        path.pop();
    }
    for (element, child) in children_of(new).into_iter().flatten() {
        path.push(element.clone());
        compare_at(path, None, Some(*child), changes);
        path.pop();
    }
}

/// Merges an apply configuration into the live object: objects key by key, granular lists
/// item by item (new items appended), everything else replaced.
fn merge_into(path: &mut Vec<PathElement>, live: &mut Value, config: &Value) {
    let kind = list_kind(path);
    let granular_lists = match (&*live, config) {
        (Value::Array(live_items), Value::Array(config_items)) => {
            granular_items(kind, live_items).is_some() && granular_items(kind, config_items).is_some()
        }
        _ => false,
    };
    match (live, config) {
        (Value::Object(live_fields), Value::Object(config_fields)) => {
            for (key, value) in config_fields {
                path.push(PathElement::Field(key.clone()));
                match live_fields.get_mut(key) {
                    Some(existing) => merge_into(path, existing, value),
                    None => {
                        live_fields.insert(key.clone(), value.clone());
                    }
                }
                path.pop();
            }
        }
        (Value::Array(live_items), Value::Array(config_items)) if granular_lists => {
            for item in config_items {
                let element = item_element(kind, item);
                match live_items.iter().position(|existing| item_element(kind, existing) == element) {
                    Some(index) => live_items[index] = item.clone(),
                    None => live_items.push(item.clone()),
                }
            }
        }
        (live, config) => *live = config.clone(),
    }
}

/// Removes the field at `path` from `value`. Returns whether `value` is left empty by it,
/// so that the caller removes it in turn.
fn remove_field(value: &mut Value, path: &[PathElement]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match value {
        Value::Object(fields) => {
            let PathElement::Field(name) = first else {
                return false;
            };
            let Some(child) = fields.get_mut(name) else {
                return false;
            };
            if !rest.is_empty() && !remove_field(child, rest) {
                return false;
            }
            fields.remove(name);
            fields.is_empty()
        }
        Value::Array(items) => {
            let Some(index) = items.iter().enumerate().position(|(index, item)| first.selects(index, item)) else {
                return false;
            };
            if !rest.is_empty() && !remove_field(&mut items[index], rest) {
                return false;
            }
            items.remove(index);
            items.is_empty()
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// managedFields entries

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: Operation,
    subresource: Option<String>,
    api_version: String,
    time: Option<String>,
    fields: FieldSet,
}

impl Entry {
    /// None for an entry that cannot be read.
    fn from_json(entry: &Value) -> Option<Entry> {
        let text = |field: &str| entry.get(field).and_then(Value::as_str);
        if text("fieldsType").is_some_and(|fields_type| fields_type != "FieldsV1") {
            return None;
        }
        let fields = match entry.get("fieldsV1") {
            Some(encoded) => FieldSet::from_fields_v1(encoded)?,
            None => FieldSet::default(),
        };
        Some(Entry {
            manager: text("manager").unwrap_or_default().to_string(),
            operation: Operation::parse(text("operation")?)?,
            subresource: text("subresource").filter(|subresource| !subresource.is_empty()).map(str::to_string),
            api_version: text("apiVersion").unwrap_or_default().to_string(),
            time: text("time").map(str::to_string),
            fields,
        })
    }

    fn to_json(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": self.operation.as_str(),
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": Value::Object(self.fields.to_fields_v1()),
        });
        if let Some(time) = &self.time {
            entry["time"] = json!(time);
        }
        if let Some(subresource) = &self.subresource {
            entry["subresource"] = json!(subresource);
        }
        entry
    }

    fn is(&self, manager: &str, operation: Operation, subresource: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == subresource
    }

    /// The API server's manager identifier (`BuildManagerIdentifier`: the entry as JSON
    /// without fields and time, and without apiVersion for Apply): what conflicts are
    /// grouped and sorted by.
    fn identifier(&self) -> String {
        let mut parts = Vec::new();
        if !self.manager.is_empty() {
            parts.push(format!("\"manager\":{}", Value::from(self.manager.as_str())));
        }
        parts.push(format!("\"operation\":\"{}\"", self.operation.as_str()));
        if self.operation == Operation::Update && !self.api_version.is_empty() {
            parts.push(format!("\"apiVersion\":{}", Value::from(self.api_version.as_str())));
        }
        if let Some(subresource) = &self.subresource {
            parts.push(format!("\"subresource\":{}", Value::from(subresource.as_str())));
        }
        format!("{{{}}}", parts.join(","))
    }

    /// How a conflict names this owner (`printManager` upstream).
    fn describe(&self) -> String {
        let mut text = go_quote(&self.manager);
        if let Some(subresource) = &self.subresource {
            text.push_str(&format!(" with subresource {}", go_quote(subresource)));
        }
        if self.operation == Operation::Update {
            text.push_str(&format!(" using {}", self.api_version));
        }
        text
    }

    /// The API server's order of entries.
    fn order(&self, other: &Entry) -> Ordering {
        let key = |entry: &Entry| {
            let seconds = entry
                .time
                .as_deref()
                .and_then(|time| chrono::DateTime::parse_from_rfc3339(time).ok())
                .map_or(0, |time| time.timestamp());
            (entry.operation.as_str(), seconds, entry.manager.clone(), entry.api_version.clone(), entry.subresource.clone().unwrap_or_default())
        };
        key(self).cmp(&key(other))
    }
}

/// The readable entries of `object`, one per (manager, operation, subresource).
fn read_entries(object: &Value) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let stored = object.pointer("/metadata/managedFields").and_then(Value::as_array);
    for entry in stored.into_iter().flatten().filter_map(Entry::from_json) {
        match entries.iter_mut().find(|known| known.is(&entry.manager, entry.operation, entry.subresource.as_deref())) {
            Some(known) => known.fields = known.fields.union(&entry.fields),
            None => entries.push(entry),
        }
    }
    entries
}

fn take_entry(entries: &mut Vec<Entry>, manager: &str, operation: Operation, subresource: Option<&str>) -> Option<Entry> {
    let index = entries.iter().position(|entry| entry.is(manager, operation, subresource))?;
    Some(entries.remove(index))
}

fn write_entries(object: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|entry| !entry.fields.is_empty());
    entries.sort_by(Entry::order);
    let encoded = if entries.is_empty() { None } else { Some(Value::Array(entries.iter().map(Entry::to_json).collect())) };
    set_managed_fields(object, encoded);
}

/// Sets (or, with None, removes) `metadata.managedFields`.
fn set_managed_fields(object: &mut Value, managed_fields: Option<Value>) {
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    match managed_fields {
        Some(managed_fields) => {
            let metadata = fields.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
            if let Some(metadata) = metadata.as_object_mut() {
                metadata.insert("managedFields".to_string(), managed_fields);
            }
        }
        None => {
            if let Some(metadata) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("managedFields");
            }
        }
    }
}

fn conflict_error(conflicts: &[(&Entry, FieldSet)]) -> ApiError {
    let mut by_owner: Vec<(&Entry, Vec<String>)> =
        conflicts.iter().map(|(owner, fields)| (*owner, fields.paths().iter().map(|path| path_string(path)).collect())).collect();
    by_owner.sort_by_key(|(owner, _)| owner.identifier());
    let total: usize = by_owner.iter().map(|(_, paths)| paths.len()).sum();

    let single = match by_owner.as_slice() {
        [(owner, paths)] => match paths.as_slice() {
            [path] => Some(format!("Apply failed with 1 conflict: conflict with {}: {path}", owner.describe())),
            _ => None,
        },
        _ => None,
    };
    let message = single.unwrap_or_else(|| {
        let sections: Vec<String> = by_owner
            .iter()
            .map(|(owner, paths)| {
                let mut lines = vec![format!("conflicts with {}:", owner.describe())];
                lines.extend(paths.iter().map(|path| format!("- {path}")));
                lines.join("\n")
            })
            .collect();
        format!("Apply failed with {total} conflicts: {}", sections.join("\n"))
    });

    ApiError::conflict(message).with_causes(
        by_owner
            .iter()
            .flat_map(|(owner, paths)| {
                let message = format!("conflict with {}", owner.describe());
                paths.iter().map(move |path| Cause::new("FieldManagerConflict", path.clone(), message.clone()))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-11-25T14:00:00Z";
    const T2: &str = "2026-11-25T15:00:00Z";
    const T3: &str = "2026-11-25T16:00:00Z";

    fn vm(metadata: Value, spec: Value) -> Value {
        let mut object = json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec,
        });
        for (key, value) in metadata.as_object().unwrap() {
            object["metadata"][key] = value.clone();
        }
        object
    }

    fn entries(object: &Value) -> Vec<Value> {
        object.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default()
    }

    fn entry(object: &Value, manager: &str, operation: &str) -> Option<Value> {
        entries(object).into_iter().find(|e| e["manager"] == manager && e["operation"] == operation)
    }

    fn fields(object: &Value, manager: &str, operation: &str) -> Value {
        entry(object, manager, operation).map(|e| e["fieldsV1"].clone()).unwrap_or(Value::Null)
    }

    fn without_managed_fields(object: &Value) -> Value {
        let mut object = object.clone();
        object["metadata"].as_object_mut().unwrap().remove("managedFields");
        object
    }

    fn running(value: bool) -> Value {
        vm(json!({}), json!({"running": value}))
    }

    #[test]
    fn apply_creates_the_object_and_owns_every_applied_leaf() {
        let body = vm(
            json!({"labels": {"app": "web"}}),
            json!({
                "running": true,
                "template": {"spec": {
                    "domain": {"cpu": {"cores": 2}, "devices": {}},
                    "volumes": [{"name": "root", "containerDisk": {"image": "fedora"}}],
                }},
            }),
        );
        let created = apply(None, &body, "vmform", false, None, T1).unwrap();

        assert_eq!(without_managed_fields(&created), body);
        assert_eq!(
            entries(&created),
            vec![json!({
                "manager": "vmform",
                "operation": "Apply",
                "apiVersion": "kubevirt.io/v1",
                "time": T1,
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {
                        "f:running": {},
                        "f:template": {"f:spec": {
                            "f:domain": {"f:cpu": {"f:cores": {}}, "f:devices": {}},
                            "f:volumes": {},
                        }},
                    },
                },
            })]
        );
    }

    #[test]
    fn reapplying_the_same_configuration_changes_nothing() {
        let body = vm(json!({"labels": {"app": "web"}}), json!({"running": true}));
        let created = apply(None, &body, "vmform", false, None, T1).unwrap();
        let again = apply(Some(&created), &body, "vmform", false, None, T2).unwrap();
        assert_eq!(again, created, "same fields, same time");
    }

    #[test]
    fn appliers_of_disjoint_fields_both_keep_theirs() {
        let created = apply(None, &running(true), "a", false, None, T1).unwrap();
        let labels = vm(json!({"labels": {"team": "infra"}}), json!({}));
        let both = apply(Some(&created), &labels, "b", false, None, T2).unwrap();

        assert_eq!(both["spec"]["running"], json!(true));
        assert_eq!(both["metadata"]["labels"], json!({"team": "infra"}));
        assert_eq!(fields(&both, "a", "Apply"), json!({"f:spec": {"f:running": {}}}));
        // `spec: {}` in b's body is an empty object: a leaf b now owns alongside a's running.
        assert_eq!(fields(&both, "b", "Apply"), json!({"f:metadata": {"f:labels": {"f:team": {}}}, "f:spec": {}}));
        assert_eq!(entry(&both, "a", "Apply").unwrap()["time"], T1);
        assert_eq!(entry(&both, "b", "Apply").unwrap()["time"], T2);
    }

    #[test]
    fn applying_a_different_value_to_a_field_another_manager_owns_is_a_conflict() {
        let created = apply(None, &running(true), "vmform", false, None, T1).unwrap();
        let edited = update(Some(&created), running(false), "kubectl-edit", None, T2);

        let error = apply(Some(&edited), &running(true), "vmform", false, None, T3).unwrap_err();
        assert_eq!(error.code, 409);
        assert_eq!(error.reason, "Conflict");
        assert_eq!(error.message, "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using kubevirt.io/v1: .spec.running");
        assert_eq!(error.causes(), vec![Cause::new("FieldManagerConflict", ".spec.running", "conflict with \"kubectl-edit\" using kubevirt.io/v1")]);
        let status = error.to_status();
        assert_eq!(status["details"]["causes"][0]["reason"], "FieldManagerConflict");
    }

    #[test]
    fn several_conflicts_are_listed_per_owner() {
        let spec = |running: bool, cores: u32| json!({"running": running, "template": {"spec": {"domain": {"cpu": {"cores": cores}}}}});
        let created = apply(None, &vm(json!({}), spec(true, 2)), "vmform", false, None, T1).unwrap();
        let edited = update(Some(&created), vm(json!({}), spec(false, 4)), "kubectl-edit", None, T2);

        let error = apply(Some(&edited), &vm(json!({}), spec(true, 2)), "vmform", false, None, T3).unwrap_err();
        assert_eq!(
            error.message,
            "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using kubevirt.io/v1:\n- .spec.running\n- .spec.template.spec.domain.cpu.cores"
        );
        let fields: Vec<&str> = error.causes().iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, [".spec.running", ".spec.template.spec.domain.cpu.cores"]);
    }

    #[test]
    fn conflicts_with_several_owners_are_sorted_and_an_applier_is_named_without_version() {
        let created = apply(None, &vm(json!({}), json!({"running": true})), "zz-applier", false, None, T1).unwrap();
        let edited = update(Some(&created), vm(json!({"labels": {"app": "web"}}), json!({"running": true})), "kubectl-edit", None, T2);

        let error = apply(Some(&edited), &vm(json!({"labels": {"app": "db"}}), json!({"running": false})), "vmform", false, None, T3).unwrap_err();
        assert_eq!(
            error.message,
            "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using kubevirt.io/v1:\n- .metadata.labels.app\nconflicts with \"zz-applier\":\n- .spec.running"
        );
        assert_eq!(error.causes()[1], Cause::new("FieldManagerConflict", ".spec.running", "conflict with \"zz-applier\""));
    }

    #[test]
    fn applying_the_value_a_field_already_has_shares_it() {
        let created = apply(None, &running(true), "a", false, None, T1).unwrap();
        let shared = apply(Some(&created), &running(true), "b", false, None, T2).unwrap();

        assert_eq!(without_managed_fields(&shared), without_managed_fields(&created));
        assert_eq!(fields(&shared, "a", "Apply"), json!({"f:spec": {"f:running": {}}}));
        assert_eq!(fields(&shared, "b", "Apply"), json!({"f:spec": {"f:running": {}}}));
    }

    #[test]
    fn force_takes_the_field_from_its_owner() {
        let body = vm(json!({"labels": {"app": "web"}}), json!({"running": true}));
        let created = apply(None, &body, "a", false, None, T1).unwrap();

        let forced = apply(Some(&created), &running(false), "b", true, None, T2).unwrap();
        assert_eq!(forced["spec"]["running"], json!(false));
        assert_eq!(fields(&forced, "b", "Apply"), json!({"f:spec": {"f:running": {}}}));
        assert_eq!(fields(&forced, "a", "Apply"), json!({"f:metadata": {"f:labels": {"f:app": {}}}}));

        // Once a has nothing left, its entry goes.
        let mut labels_too = running(false);
        labels_too["metadata"]["labels"] = json!({"app": "db"});
        let all = apply(Some(&forced), &labels_too, "b", true, None, T3).unwrap();
        assert_eq!(entry(&all, "a", "Apply"), None);
        assert_eq!(entries(&all).len(), 1);
    }

    #[test]
    fn a_field_no_longer_applied_and_owned_by_nobody_else_is_removed() {
        let body = vm(json!({"labels": {"app": "web", "tier": "front"}}), json!({"running": true, "template": {"spec": {"hostname": "web"}}}));
        let created = apply(None, &body, "a", false, None, T1).unwrap();

        let smaller = apply(Some(&created), &vm(json!({"labels": {"app": "web"}}), json!({"running": true})), "a", false, None, T2).unwrap();
        assert_eq!(smaller["metadata"]["labels"], json!({"app": "web"}));
        // `template` and `template.spec` were left empty by the removal, and went with it.
        assert_eq!(smaller["spec"], json!({"running": true}));
        assert_eq!(fields(&smaller, "a", "Apply"), json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:running": {}}}));
        assert_eq!(entry(&smaller, "a", "Apply").unwrap()["time"], T2);
    }

    #[test]
    fn a_field_no_longer_applied_but_owned_by_another_manager_stays() {
        let body = vm(json!({}), json!({"running": true, "runStrategy": "Always"}));
        let created = apply(None, &body, "a", false, None, T1).unwrap();
        let shared = apply(Some(&created), &vm(json!({}), json!({"runStrategy": "Always"})), "b", false, None, T2).unwrap();

        let dropped = apply(Some(&shared), &running(true), "a", false, None, T3).unwrap();
        assert_eq!(dropped["spec"], json!({"running": true, "runStrategy": "Always"}));
        assert_eq!(fields(&dropped, "a", "Apply"), json!({"f:spec": {"f:running": {}}}));
        assert_eq!(fields(&dropped, "b", "Apply"), json!({"f:spec": {"f:runStrategy": {}}}));
    }

    #[test]
    fn a_field_no_longer_applied_but_set_by_an_update_stays() {
        let created = apply(None, &vm(json!({}), json!({"running": true, "runStrategy": "Always"})), "a", false, None, T1).unwrap();
        let edited = update(Some(&created), vm(json!({}), json!({"running": true, "runStrategy": "Manual"})), "kubectl-edit", None, T2);

        let dropped = apply(Some(&edited), &running(true), "a", false, None, T3).unwrap();
        assert_eq!(dropped["spec"]["runStrategy"], json!("Manual"));
    }

    #[test]
    fn update_moves_changed_fields_to_its_manager_and_drops_removed_ones() {
        let body = vm(json!({"labels": {"app": "web", "tier": "front"}}), json!({"running": true}));
        let created = apply(None, &body, "vmform", false, None, T1).unwrap();

        let mut edited_body = vm(json!({"labels": {"app": "web"}}), json!({"running": false}));
        edited_body["metadata"]["managedFields"] = created["metadata"]["managedFields"].clone();
        let edited = update(Some(&created), edited_body, "kubectl-edit", None, T2);

        assert_eq!(fields(&edited, "vmform", "Apply"), json!({"f:metadata": {"f:labels": {"f:app": {}}}}));
        assert_eq!(fields(&edited, "kubectl-edit", "Update"), json!({"f:spec": {"f:running": {}}}));
        let edit = entry(&edited, "kubectl-edit", "Update").unwrap();
        assert_eq!(edit["time"], T2);
        assert_eq!(edit["apiVersion"], "kubevirt.io/v1");
        assert_eq!(entry(&edited, "vmform", "Apply").unwrap()["time"], T1);

        // A second edit by the same manager adds to its entry.
        let again = update(Some(&edited), vm(json!({"labels": {"app": "db"}}), json!({"running": false})), "kubectl-edit", None, T3);
        assert_eq!(fields(&again, "kubectl-edit", "Update"), json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:running": {}}}));
        assert_eq!(entry(&again, "vmform", "Apply"), None, "an entry left with nothing is dropped");
    }

    #[test]
    fn update_on_create_owns_every_field_and_each_new_map() {
        let object = vm(
            json!({"labels": {"app": "web"}, "uid": "u-1", "resourceVersion": "7", "creationTimestamp": T1}),
            json!({"running": true, "template": {"spec": {"domain": {"cpu": {"cores": 2}}, "networks": [{"name": "default", "pod": {}}]}}}),
        );
        let created = update(None, object.clone(), "kubectl-create", None, T1);

        assert_eq!(without_managed_fields(&created), object);
        assert_eq!(
            entries(&created),
            vec![json!({
                "manager": "kubectl-create",
                "operation": "Update",
                "apiVersion": "kubevirt.io/v1",
                "time": T1,
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {
                        ".": {},
                        "f:running": {},
                        "f:template": {".": {}, "f:spec": {
                            ".": {},
                            "f:domain": {".": {}, "f:cpu": {".": {}, "f:cores": {}}},
                            "f:networks": {},
                        }},
                    },
                },
            })]
        );
    }

    #[test]
    fn an_update_that_changes_nothing_leaves_managed_fields_alone() {
        let created = update(None, running(true), "kubectl-create", None, T1);
        let mut same = created.clone();
        same["metadata"]["managedFields"] = json!([{"manager": "mallory", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]);
        same["metadata"]["resourceVersion"] = json!("8");
        let unchanged = update(Some(&created), same, "kubectl-edit", None, T2);
        assert_eq!(unchanged["metadata"]["managedFields"], created["metadata"]["managedFields"]);
    }

    #[test]
    fn managed_fields_sent_by_a_client_are_never_stored() {
        let mut body = running(true);
        body["metadata"]["managedFields"] = json!([{"manager": "mallory", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:running": {}}}}]);
        let applied = apply(None, &body, "vmform", false, None, T1).unwrap();
        assert_eq!(entries(&applied).len(), 1);
        assert_eq!(entry(&applied, "vmform", "Apply").unwrap()["fieldsV1"], json!({"f:spec": {"f:running": {}}}));

        let created = update(None, body, "kubectl-create", None, T1);
        assert_eq!(entry(&created, "mallory", "Apply"), None);
        assert!(entry(&created, "kubectl-create", "Update").is_some());
    }

    #[test]
    fn the_status_subresource_is_tracked_apart() {
        let created = apply(None, &running(true), "vmform", false, None, T1).unwrap();
        let mut with_status = created.clone();
        with_status["status"] = json!({"ready": true, "printableStatus": "Running"});
        let reported = update(Some(&created), with_status, "virt-controller", Some("status"), T2);

        let status_entry = entry(&reported, "virt-controller", "Update").unwrap();
        assert_eq!(status_entry["subresource"], "status");
        assert_eq!(status_entry["fieldsV1"], json!({"f:status": {".": {}, "f:printableStatus": {}, "f:ready": {}}}));
        assert_eq!(fields(&reported, "vmform", "Apply"), json!({"f:spec": {"f:running": {}}}));

        // The main resource neither tracks status nor conflicts with its owner.
        let mut body = running(false);
        body["status"] = json!({"ready": false});
        let reapplied = apply(Some(&reported), &body, "vmform", false, None, T3).unwrap();
        assert_eq!(fields(&reapplied, "vmform", "Apply"), json!({"f:spec": {"f:running": {}}}));
        let mut status_only_body = running(true);
        status_only_body["status"] = json!({"ready": false});
        let untouched = apply(Some(&reported), &status_only_body, "vmform", false, None, T3).unwrap();
        assert_eq!(entry(&untouched, "vmform", "Apply").unwrap()["time"], T1, "status is the server's to reset");
        assert_eq!(fields(&reapplied, "virt-controller", "Update"), status_entry["fieldsV1"]);

        // Applying status owns only status, in an entry of its own.
        let status_body = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "web"}, "spec": {"running": true}, "status": {"ready": true, "created": true}});
        let status_applied = apply(Some(&reported), &status_body, "status-applier", false, Some("status"), T3).unwrap();
        assert_eq!(status_applied["spec"]["running"], json!(true));
        assert_eq!(status_applied["status"]["created"], json!(true));
        let applied_entry = entry(&status_applied, "status-applier", "Apply").unwrap();
        assert_eq!(applied_entry["subresource"], "status");
        assert_eq!(applied_entry["fieldsV1"], json!({"f:status": {"f:created": {}, "f:ready": {}}}));
    }

    #[test]
    fn conflict_paths_spell_label_keys_as_they_are() {
        let labels = json!({"labels": {"app.kubernetes.io/name": "web"}});
        let created = update(None, vm(labels, json!({})), "helm", None, T1);
        let body = vm(json!({"labels": {"app.kubernetes.io/name": "api"}}), json!({}));
        let error = apply(Some(&created), &body, "vmform", false, None, T2).unwrap_err();
        assert_eq!(error.message, "Apply failed with 1 conflict: conflict with \"helm\" using kubevirt.io/v1: .metadata.labels.app.kubernetes.io/name");
        assert_eq!(error.causes()[0].field, ".metadata.labels.app.kubernetes.io/name");
        assert_eq!(fields(&created, "helm", "Update")["f:metadata"]["f:labels"]["f:app.kubernetes.io/name"], json!({}));
    }

    #[test]
    fn finalizers_and_owner_references_are_owned_item_by_item() {
        let owner = |uid: &str, controller: bool| json!({"apiVersion": "v1", "kind": "Namespace", "name": "ns", "uid": uid, "controller": controller});
        let a = vm(json!({"finalizers": ["a.example/cleanup"], "ownerReferences": [owner("u1", true)]}), json!({}));
        let created = apply(None, &a, "a", false, None, T1).unwrap();
        assert_eq!(
            fields(&created, "a", "Apply")["f:metadata"],
            json!({"f:finalizers": {"v:\"a.example/cleanup\"": {}}, "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}}})
        );

        let b = vm(json!({"finalizers": ["b.example/cleanup"]}), json!({}));
        let both = apply(Some(&created), &b, "b", false, None, T2).unwrap();
        assert_eq!(both["metadata"]["finalizers"], json!(["a.example/cleanup", "b.example/cleanup"]));

        // An item is one field: a different reference under the same uid conflicts.
        let rival = vm(json!({"ownerReferences": [owner("u1", false)]}), json!({}));
        let error = apply(Some(&both), &rival, "b", false, None, T3).unwrap_err();
        assert_eq!(error.message, "Apply failed with 1 conflict: conflict with \"a\": .metadata.ownerReferences[uid=\"u1\"]");

        // a lets go of its finalizer: it leaves the list, b's stays.
        let released = apply(Some(&both), &vm(json!({"ownerReferences": [owner("u1", true)]}), json!({})), "a", false, None, T3).unwrap();
        assert_eq!(released["metadata"]["finalizers"], json!(["b.example/cleanup"]));

        // An update recording a new finalizer owns the item and, being new, the list.
        let created = update(None, vm(json!({"finalizers": ["x"]}), json!({})), "controller", None, T1);
        assert_eq!(fields(&created, "controller", "Update"), json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"x\"": {}}}, "f:spec": {}}));
    }

    #[test]
    fn a_set_item_conflict_is_spelled_with_its_value() {
        let created = update(None, vm(json!({"finalizers": ["keep"]}), json!({})), "controller", None, T1);
        // Only a change conflicts, and a set item cannot change: removing it is the only move.
        let element = PathElement::from_fields_v1_key("v:\"keep\"").unwrap();
        assert_eq!(path_string(&[PathElement::Field("metadata".into()), PathElement::Field("finalizers".into()), element]), ".metadata.finalizers[=\"keep\"]");
        assert!(fields(&created, "controller", "Update")["f:metadata"]["f:finalizers"]["v:\"keep\""].is_object());
    }

    #[test]
    fn stored_field_sets_round_trip() {
        let stored = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}, "f:ownerReferences": {".": {}, "k:{\"uid\":\"u1\"}": {}}},
            "f:spec": {".": {}, "f:running": {}, "f:template": {"f:spec": {"f:volumes": {}}}},
        });
        let set = FieldSet::from_fields_v1(&stored).unwrap();
        assert_eq!(Value::Object(set.to_fields_v1()), stored);
        let paths: Vec<String> = set.paths().iter().map(|p| path_string(p)).collect();
        assert_eq!(
            paths,
            [
                ".spec",
                ".metadata.labels",
                ".metadata.ownerReferences",
                ".metadata.labels.app",
                ".metadata.ownerReferences[uid=\"u1\"]",
                ".spec.running",
                ".spec.template.spec.volumes"
            ]
        );
        assert_eq!(FieldSet::from_fields_v1(&json!({"x:odd": {}})), None);
        assert_eq!(FieldSet::from_fields_v1(&json!({"f:a": 1})), None);
    }

    #[test]
    fn unreadable_stored_entries_are_dropped() {
        let mut live = update(None, running(true), "kubectl-create", None, T1);
        live["metadata"]["managedFields"].as_array_mut().unwrap().push(json!({"manager": "x", "operation": "Patch", "fieldsV1": {}}));
        live["metadata"]["managedFields"].as_array_mut().unwrap().push(json!("nonsense"));
        let edited = update(Some(&live), running(false), "kubectl-edit", None, T2);
        let managers: Vec<Value> = entries(&edited).iter().map(|e| e["manager"].clone()).collect();
        assert_eq!(managers, [json!("kubectl-create"), json!("kubectl-edit")]);
    }

    #[test]
    fn entries_are_sorted_as_the_api_server_sorts_them() {
        let created = update(None, vm(json!({"labels": {"a": "1"}}), json!({})), "zeta", None, T1);
        let applied = apply(Some(&created), &running(true), "omega", false, None, T3).unwrap();
        let edited = update(Some(&applied), vm(json!({"labels": {"a": "1", "b": "2"}}), json!({"running": true})), "alpha", None, T2);
        let order: Vec<(Value, Value)> = entries(&edited).iter().map(|e| (e["operation"].clone(), e["manager"].clone())).collect();
        assert_eq!(order, [(json!("Apply"), json!("omega")), (json!("Update"), json!("zeta")), (json!("Update"), json!("alpha"))]);
    }

    #[test]
    fn a_field_that_changes_kind_takes_over_what_it_held() {
        let created = apply(None, &vm(json!({}), json!({"template": {"spec": {"hostname": "web"}}})), "a", false, None, T1).unwrap();
        // a owns the leaf below `template`, not `template`: replacing the map removes a's
        // leaf, which is not a conflict (as upstream).
        let flattened = apply(Some(&created), &vm(json!({}), json!({"template": "flat"})), "b", false, None, T2).unwrap();
        assert_eq!(flattened["spec"], json!({"template": "flat"}));
        assert_eq!(entry(&flattened, "a", "Apply"), None);
        assert_eq!(fields(&flattened, "b", "Apply"), json!({"f:spec": {"f:template": {}}}));

        // Now b owns `template` itself, and turning it back into a map conflicts.
        let error = apply(Some(&flattened), &created, "a", false, None, T3).unwrap_err();
        assert_eq!(error.message, "Apply failed with 1 conflict: conflict with \"b\": .spec.template");
    }

    #[test]
    fn odd_documents_never_panic() {
        let odd = [
            json!({}),
            json!({"metadata": {}}),
            json!({"metadata": {"managedFields": "x"}}),
            json!({"metadata": {"managedFields": [1, null, {"operation": "Apply", "fieldsV1": {"k:not json": {}}}]}}),
            json!({"metadata": {"managedFields": [{"manager": "m", "operation": "Update", "fieldsV1": {"f:spec": {"f:x": {"i:0": {}}}}}]}}),
            json!({"metadata": {"ownerReferences": [1, {"uid": {"nested": true}}], "finalizers": [{"a": 1}, "b"]}}),
            json!({"metadata": {"ownerReferences": [{"uid": "u"}, {"uid": "u"}], "finalizers": ["b", "b", 3]}}),
            json!({"metadata": {"ownerReferences": {"uid": "u"}, "finalizers": "b", "labels": []}}),
            json!({"spec": {"a": {"b": {"c": [[], {}, null]}}}, "status": [1]}),
            json!({"spec": "flat", "status": {"x": {"y": 1}}}),
            json!({"spec": null, "apiVersion": 7, "kind": []}),
        ];
        for live in &odd {
            for body in &odd {
                for subresource in [None, Some("status")] {
                    for force in [false, true] {
                        let stored = update(None, live.clone(), "a", subresource, T1);
                        if let Ok(applied) = apply(Some(&stored), body, "b", force, subresource, T2) {
                            let _ = apply(Some(&applied), live, "a", force, subresource, T3);
                            let _ = update(Some(&applied), body.clone(), "c", subresource, T3);
                        }
                        let _ = update(Some(&stored), body.clone(), "b", subresource, T2);
                    }
                }
            }
        }
    }

    #[test]
    fn inputs_that_are_not_objects_are_refused_or_passed_through() {
        let error = apply(None, &json!([1, 2]), "vmform", false, None, T1).unwrap_err();
        assert_eq!(error.code, 400);
        let error = apply(Some(&json!("live")), &running(true), "vmform", false, None, T1).unwrap_err();
        assert_eq!(error.code, 400);
        let error = apply(None, &json!({"metadata": 3}), "vmform", false, None, T1).unwrap_err();
        assert_eq!(error.code, 400);

        assert_eq!(update(None, json!(null), "m", None, T1), json!(null));
        assert_eq!(update(Some(&json!(4)), json!({"a": 1}), "m", None, T1), json!({"a": 1}));
        // Odd shapes inside an object are just values.
        let odd = json!({"metadata": "x", "spec": [1, {"a": null}]});
        let recorded = update(None, odd.clone(), "m", None, T1);
        assert_eq!(recorded, odd, "no metadata object to record into");
        let applied = apply(None, &json!({"spec": {"a": null, "b": []}}), "m", false, None, T1).unwrap();
        assert_eq!(fields(&applied, "m", "Apply"), json!({"f:spec": {"f:a": {}, "f:b": {}}}));
    }
}
