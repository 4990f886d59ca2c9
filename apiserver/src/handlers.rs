//! The verbs: get, list, create, update, patch, delete, deletecollection — with the
//! object bookkeeping the API server does on every write (uid, creationTimestamp,
//! generation, resourceVersion preconditions, managedFields, finalizers, status).

use super::error::{ApiError, Cause};
use super::fieldmanager;
use super::resources::{Resource, NAMESPACE};
use super::route::Query;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{Change, Key, Store, Written};
use super::validation;
use base64::Engine;
use serde_json::{json, Value};

/// Where a request is aimed, after routing: a resource, in a namespace or cluster-wide.
pub struct RequestScope<'a> {
    pub resource: &'static Resource,
    pub namespace: Option<&'a str>,
}

/// Who asks, for field ownership.
pub struct Writer<'a> {
    /// `fieldManager`, else the client's user agent up to its first `/`, as the API server
    /// derives it.
    pub manager: &'a str,
    pub dry_run: bool,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `virtualmachines.kubevirt.io "web" not found`
fn not_found(resource: &Resource, name: &str) -> ApiError {
    ApiError::not_found(format!("{} \"{name}\" not found", resource.qualified())).about(resource.group, resource.plural, name)
}

fn namespace_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/namespace").and_then(Value::as_str)
}

fn name_of(object: &Value) -> &str {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

fn resource_version(object: &Value) -> Option<&str> {
    object.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Parse a request body: JSON, or YAML where the content type says so (server-side apply
/// bodies are YAML by definition; JSON is YAML too).
pub fn parse_body(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if content_type.contains("protobuf") {
        return super::protobuf::decode(body);
    }
    if content_type.contains("cbor") {
        return Err(ApiError::new(415, "UnsupportedMediaType", "CBOR bodies are not accepted; send application/json"));
    }
    let parsed = if content_type.contains("yaml") {
        serde_yaml::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
    };
    match parsed {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::bad_request("the request body must be an object")),
        Err(e) => Err(ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))),
    }
}

pub fn get(store: &Store, target: &RequestScope, name: &str) -> Result<Value, ApiError> {
    let key = Key::new(target.resource, target.namespace.unwrap_or(""), name);
    store.read().get(&key).map(|o| (**o).clone()).ok_or_else(|| not_found(target.resource, name))
}

/// The selectors of a list or watch.
pub struct Selection {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
}

impl Selection {
    pub fn parse(query: &Query) -> Result<Selection, ApiError> {
        Ok(Selection {
            labels: query.get("labelSelector").map(LabelSelector::parse).transpose()?,
            fields: query.get("fieldSelector").map(FieldSelector::parse).transpose()?,
        })
    }
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.as_ref().is_none_or(|l| l.matches(object.pointer("/metadata/labels").and_then(Value::as_object)))
            && self.fields.as_ref().is_none_or(|f| f.matches(object))
    }
}

/// A `continue` token: where the previous page stopped, and at which revision.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: u64,
    namespace: String,
    name: String,
}

pub fn list(store: &Store, target: &RequestScope, query: &Query) -> Result<Value, ApiError> {
    let selection = Selection::parse(query)?;
    let limit = query.number("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let token = match query.get("continue") {
        None => None,
        Some(raw) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(raw)
                .ok()
                .and_then(|b| serde_json::from_slice::<Continue>(&b).ok())
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?,
        ),
    };
    let state = store.read();
    if let Some(t) = &token {
        // Pages after the first come from the current state; a token older than the
        // watch history is refused, so a client re-lists rather than miss a change
        // it could no longer catch up on with a watch.
        if t.rv < state.history_start() {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
    }
    let after = token.as_ref().map(|t| (t.namespace.as_str(), t.name.as_str()));
    let mut items = vec![];
    let mut next = None;
    for (_, object) in state.range(target.resource, target.namespace, after) {
        if !selection.matches(object) {
            continue;
        }
        if limit.is_some_and(|l| items.len() == l) {
            let last: &Value = items.last().expect("limit > 0");
            let token = Continue {
                rv: token.as_ref().map_or(state.revision(), |t| t.rv),
                namespace: namespace_of(last).unwrap_or("").to_string(),
                name: name_of(last).to_string(),
            };
            next = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).expect("tokens serialise")));
            break;
        }
        items.push((**object).clone());
    }
    let mut metadata = json!({ "resourceVersion": state.revision().to_string() });
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    Ok(json!({
        "kind": target.resource.list_kind(),
        "apiVersion": target.resource.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

/// Refuse a body whose apiVersion, kind or namespace disagrees with the URL.
fn check_body_matches(target: &RequestScope, object: &mut Value) -> Result<(), ApiError> {
    let r = target.resource;
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' or 'apiVersion' is missing in the request body: a {} needs apiVersion {} and kind {}",
            r.kind,
            r.api_version(),
            r.kind
        )));
    }
    if api_version != r.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            r.api_version()
        )));
    }
    if kind != r.kind {
        return Err(ApiError::bad_request(format!("the kind in the data ({kind}) does not match the expected kind ({})", r.kind)));
    }
    if !object.get("metadata").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    // An empty namespace is an unset one, as protobuf clients send it.
    if namespace_of(object) == Some("")
        && let Some(m) = object["metadata"].as_object_mut()
    {
        m.remove("namespace");
    }
    match (target.namespace, namespace_of(object)) {
        (Some(url), Some(body)) if url != body => {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
        (Some(url), None) => object["metadata"]["namespace"] = json!(url),
        (None, Some(_)) if !r.namespaced => {
            if let Some(m) = object["metadata"].as_object_mut() {
                m.remove("namespace");
            }
        }
        (None, Some(_)) => return Err(ApiError::bad_request("a namespaced object must be written through its namespace's URL")),
        _ => {}
    }
    Ok(())
}

/// Refuse an invalid object with 422 and every cause found.
fn validate(resource: &Resource, object: &Value) -> Result<(), ApiError> {
    let causes = validation::validate(resource, object);
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(resource.group, resource.kind, name_of(object), causes)) }
}

/// A namespaced object can only be created in a namespace that exists and is not
/// being deleted.
fn check_namespace(store: &Store, resource: &Resource, namespace: Option<&str>) -> Result<(), ApiError> {
    let Some(ns) = namespace.filter(|_| resource.namespaced) else { return Ok(()) };
    let state = store.read();
    match state.get(&Key::new(&NAMESPACE, "", ns)) {
        None => Err(not_found(&NAMESPACE, ns)),
        Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(ApiError::new(
            403,
            "Forbidden",
            format!("{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", resource.qualified(), name_of(n)),
        )),
        Some(_) => Ok(()),
    }
}

/// Random suffix for `generateName`, from the API server's alphabet (no vowels, no
/// look-alike digits).
fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Fill what the server owns on a new object.
fn initialize(resource: &Resource, object: &mut Value) {
    let meta = &mut object["metadata"];
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(now());
    meta["generation"] = json!(1);
    let m = meta.as_object_mut().expect("metadata is an object");
    for server_owned in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        m.remove(server_owned);
    }
    if resource == &NAMESPACE {
        let name = name_of(object).to_string();
        object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        object["spec"] = json!({ "finalizers": ["kubernetes"] });
        object["status"] = json!({ "phase": "Active" });
    } else if resource.has_status && resource.group == "kubevirt.io" {
        // A custom resource with a status subresource ignores status on create.
        if let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
    }
}

pub async fn create(store: &Store, target: &RequestScope<'_>, writer: &Writer<'_>, mut object: Value) -> Result<Value, ApiError> {
    check_body_matches(target, &mut object)?;
    if name_of(&object).is_empty()
        && let Some(prefix) = object.pointer("/metadata/generateName").and_then(Value::as_str).filter(|p| !p.is_empty()) {
            object["metadata"]["name"] = json!(format!("{prefix}{}", name_suffix()));
        }
    if object.get("metadata").is_none() {
        object["metadata"] = json!({});
    }
    validate(target.resource, &object)?;
    let namespace = namespace_of(&object).map(str::to_string);
    check_namespace(store, target.resource, namespace.as_deref())?;
    let resource = target.resource;
    let name = name_of(&object).to_string();
    let key = Key::new(resource, namespace.as_deref().unwrap_or(""), &name);
    let manager = writer.manager.to_string();
    let written = store
        .write(
            key,
            writer.dry_run,
            Box::new(move |current| {
                if current.is_some() {
                    return Err(ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", resource.qualified()))
                        .about(resource.group, resource.plural, &name));
                }
                initialize(resource, &mut object);
                Ok(Change::Put(fieldmanager::update(None, object, &manager, None, &now())))
            }),
        )
        .await?;
    Ok(written_object(written))
}

fn written_object(written: Written) -> Value {
    written.object.map(|o| (*o).clone()).unwrap_or(Value::Null)
}

/// How a write computes the next object from the current one.
pub enum Edit {
    /// PUT: the body replaces the object.
    Replace(Value),
    /// JSON merge patch (RFC 7386); also strategic merge patch, whose directives the
    /// served types never need.
    MergePatch(Value),
    /// JSON patch (RFC 6902).
    JsonPatch(Value),
    /// Server-side apply.
    Apply { body: Value, force: bool },
    /// The next object as a function of the current one, run on the store's writer thread:
    /// KubeVirt's VM actions (`subresources.rs`) decide from exactly the state they replace.
    Compute(Computation),
}

/// How [`Edit::Compute`] makes the next object from the current one.
pub type Computation = Box<dyn FnOnce(&Value) -> Result<Value, ApiError> + Send>;

/// Update, patch or apply one object (or its status).
pub async fn modify(store: &Store, target: &RequestScope<'_>, name: &str, subresource: Option<&str>, writer: &Writer<'_>, edit: Edit) -> Result<(Value, bool), ApiError> {
    let resource = target.resource;
    let namespace = target.namespace.map(str::to_string);
    if let Edit::Replace(body) | Edit::Apply { body, .. } = &edit
        && name_of(body) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(body)
            )));
        }
    let edit = match edit {
        Edit::Replace(mut body) => {
            check_body_matches(target, &mut body)?;
            Edit::Replace(body)
        }
        Edit::Apply { mut body, force } => {
            check_body_matches(target, &mut body)?;
            // Applying to an object that does not exist yet creates it.
            check_namespace(store, resource, namespace.as_deref())?;
            Edit::Apply { body, force }
        }
        other => other,
    };
    let key = Key::new(resource, namespace.as_deref().unwrap_or(""), name);
    let manager = writer.manager.to_string();
    let name = name.to_string();
    let subresource = subresource.map(str::to_string);
    let written = store
        .write(
            key,
            writer.dry_run,
            Box::new(move |current| next_object(resource, &name, subresource.as_deref(), &manager, current, edit)),
        )
        .await?;
    // Removing the last finalizer deleted the object: a Terminating namespace may now be empty.
    if let (true, false, Some(ns)) = (written.deleted, writer.dry_run, namespace.as_deref()) {
        finish_namespace(store, ns).await;
    }
    let created = written.created;
    Ok((written_object(written), created))
}

/// The heart of every update: the edit applied to the current object, then what the API
/// server keeps for itself.
fn next_object(resource: &'static Resource, name: &str, subresource: Option<&str>, manager: &str, current: Option<&Value>, edit: Edit) -> Result<Change, ApiError> {
    let now = now();
    let Some(current) = current else {
        return match edit {
            Edit::Apply { body, .. } if subresource.is_none() => {
                let mut object = fieldmanager::apply(None, &body, manager, true, None, &now)?;
                // Validated before the server fills anything in, so the fill-in can rely
                // on a well-formed metadata.
                validate(resource, &object)?;
                initialize(resource, &mut object);
                Ok(Change::Put(object))
            }
            _ => Err(not_found(resource, name)),
        };
    };
    let is_apply = matches!(edit, Edit::Apply { .. });
    let (mut next, precondition) = match edit {
        Edit::Replace(body) => {
            let rv = resource_version(&body).map(str::to_string);
            if rv.is_none() && resource.group == "kubevirt.io" {
                return Err(ApiError::invalid(
                    resource.group,
                    resource.kind,
                    name,
                    vec![Cause::new("FieldValueInvalid", "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")],
                ));
            }
            (body, rv)
        }
        Edit::MergePatch(patch) => {
            let mut next = current.clone();
            json_patch::merge(&mut next, &strip_directives(patch));
            let rv = resource_version(&next).filter(|rv| Some(*rv) != resource_version(current)).map(str::to_string);
            (next, rv)
        }
        Edit::JsonPatch(patch) => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch).map_err(|e| ApiError::bad_request(format!("the JSON patch could not be decoded: {e}")))?;
            let mut next = current.clone();
            json_patch::patch(&mut next, &ops).map_err(|e| ApiError::new(422, "Invalid", format!("the JSON patch could not be applied: {e}")))?;
            let rv = resource_version(&next).filter(|rv| Some(*rv) != resource_version(current)).map(str::to_string);
            (next, rv)
        }
        Edit::Apply { body, force } => {
            let rv = resource_version(&body).map(str::to_string);
            (fieldmanager::apply(Some(current), &body, manager, force, subresource, &now)?, rv)
        }
        Edit::Compute(compute) => (compute(current)?, None),
    };
    // Invariant: a stale update never wins — this runs on the store's writer thread, so
    // `current` is exactly the state the write would replace.
    if let Some(rv) = precondition
        && Some(rv.as_str()) != resource_version(current) {
            return Err(ApiError::conflict(format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                resource.qualified()
            ))
            .about(resource.group, resource.plural, name));
        }
    if !next.is_object() || !next.get("metadata").is_some_and(Value::is_object) {
        return Err(ApiError::bad_request("the result of the write is not an object with metadata"));
    }
    // What the server owns is never taken from the request.
    for field in ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match current["metadata"].get(field) {
            Some(v) => next["metadata"][field] = v.clone(),
            None => {
                next["metadata"].as_object_mut().expect("checked above").remove(field);
            }
        }
    }
    for field in ["apiVersion", "kind"] {
        next[field] = current[field].clone();
    }
    // The main resource leaves status alone; the status subresource changes nothing else.
    if resource.has_status {
        if subresource == Some("status") {
            let status = next.get("status").cloned();
            let mut only_status = current.clone();
            match status {
                Some(s) => only_status["status"] = s,
                None => {
                    only_status.as_object_mut().expect("objects are objects").remove("status");
                }
            }
            only_status["metadata"]["managedFields"] = next["metadata"].get("managedFields").cloned().unwrap_or(Value::Null);
            next = only_status;
        } else {
            match current.get("status") {
                Some(s) => next["status"] = s.clone(),
                None => {
                    next.as_object_mut().expect("objects are objects").remove("status");
                }
            }
        }
    }
    next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    if next["metadata"].get("managedFields").is_some_and(Value::is_null) {
        next["metadata"].as_object_mut().expect("checked above").remove("managedFields");
    }
    if !matches!(subresource, Some("status")) {
        validate(resource, &next)?;
    }
    // Ownership: apply recorded it already; every other write records an Update.
    if !is_apply {
        next = fieldmanager::update(Some(current), next, manager, subresource, &now);
    }
    if spec_changed(current, &next) {
        let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        next["metadata"]["generation"] = json!(generation + 1);
    }
    // Unchanged only if ownership is unchanged too: a second manager applying the same
    // values becomes a co-owner, and that must be stored.
    if next == *current {
        return Ok(Change::Unchanged);
    }
    // The last finalizer removed from an object being deleted completes the deletion.
    if next.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&next).is_empty() {
        return Ok(Change::Delete);
    }
    Ok(Change::Put(next))
}

/// Whether anything but metadata and status changed: what bumps `metadata.generation`.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut o = v.as_object().cloned().unwrap_or_default();
        o.remove("metadata");
        o.remove("status");
        o
    };
    strip(old) != strip(new)
}

fn finalizers(object: &Value) -> Vec<&str> {
    object.pointer("/metadata/finalizers").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// Strategic merge patch directives (`$patch`, `$setElementOrder/…`, `$retainKeys`,
/// `$deleteFromPrimitiveList/…`) are dropped: the served types have no merge keys, so a
/// strategic merge patch means what a merge patch means.
fn strip_directives(patch: Value) -> Value {
    match patch {
        Value::Object(map) => Value::Object(map.into_iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k, strip_directives(v))).collect()),
        other => other,
    }
}

/// What `DELETE` may carry.
#[derive(Default)]
pub struct DeleteOptions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    pub fn parse(body: &[u8]) -> Result<(DeleteOptions, bool), ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok((DeleteOptions::default(), false));
        }
        let v = parse_body(body, "application/json")?;
        let dry_run = v.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All"));
        let pre = v.get("preconditions");
        Ok((
            DeleteOptions {
                uid: pre.and_then(|p| p.get("uid")).and_then(Value::as_str).map(str::to_string),
                resource_version: pre.and_then(|p| p.get("resourceVersion")).and_then(Value::as_str).map(str::to_string),
            },
            dry_run,
        ))
    }
}

/// Delete one object: at once, or — while it has finalizers — mark it with a
/// deletionTimestamp and leave it for whoever owns the finalizers.
pub async fn delete(store: &Store, target: &RequestScope<'_>, name: &str, writer: &Writer<'_>, options: DeleteOptions) -> Result<Value, ApiError> {
    let resource = target.resource;
    let key = Key::new(resource, target.namespace.unwrap_or(""), name);
    let owned_name = name.to_string();
    let written = store
        .write(
            key,
            writer.dry_run,
            Box::new(move |current| {
                let Some(current) = current else { return Err(not_found(resource, &owned_name)) };
                let meta = &current["metadata"];
                let precondition_failed = |what: &str, want: &str, have: &str| {
                    Err(ApiError::conflict(format!("Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"))
                        .about(resource.group, resource.plural, &owned_name))
                };
                if let Some(uid) = &options.uid {
                    let have = meta["uid"].as_str().unwrap_or("");
                    if uid != have {
                        return precondition_failed("UID", uid, have);
                    }
                }
                if let Some(rv) = &options.resource_version {
                    let have = meta["resourceVersion"].as_str().unwrap_or("");
                    if rv != have {
                        return precondition_failed("ResourceVersion", rv, have);
                    }
                }
                // A namespace always goes through Terminating (it carries the `kubernetes`
                // finalizer in spec): it is removed once nothing is left in it.
                if finalizers(current).is_empty() && resource != &NAMESPACE {
                    return Ok(Change::Delete);
                }
                if meta.get("deletionTimestamp").is_some() {
                    return Ok(Change::Unchanged);
                }
                let mut next = current.clone();
                next["metadata"]["deletionTimestamp"] = json!(now());
                next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
                next["metadata"]["generation"] = json!(generation + 1);
                if resource == &NAMESPACE {
                    next["status"] = json!({ "phase": "Terminating" });
                }
                Ok(Change::Put(next))
            }),
        )
        .await?;
    let deleted = written.deleted;
    let object = written_object(written);
    if !writer.dry_run {
        if resource == &NAMESPACE {
            empty_namespace(store, name, writer).await;
        } else if deleted
            && let Some(ns) = target.namespace {
                finish_namespace(store, ns).await;
            }
    }
    Ok(object)
}

/// Deleting a namespace deletes what is in it. The namespace itself is marked
/// Terminating (it carries the `kubernetes` finalizer in spirit) and goes once empty.
async fn empty_namespace(store: &Store, namespace: &str, writer: &Writer<'_>) {
    let keys: Vec<Key> = {
        let state = store.read();
        super::resources::ALL
            .iter()
            .filter(|r| r.namespaced)
            .flat_map(|r| state.range(r, Some(namespace), None).map(|(k, _)| k.clone()).collect::<Vec<_>>())
            .collect()
    };
    for key in keys {
        let target = RequestScope { resource: key.resource(), namespace: Some(namespace) };
        // An object already gone, or one waiting on its finalizers, is fine here.
        let _ = Box::pin(delete(store, &target, &key.name, writer, DeleteOptions::default())).await;
    }
    finish_namespace(store, namespace).await;
}

/// Remove a Terminating namespace once nothing is left in it.
async fn finish_namespace(store: &Store, namespace: &str) {
    let ready = {
        let state = store.read();
        let terminating = state.get(&Key::new(&NAMESPACE, "", namespace)).is_some_and(|n| n.pointer("/metadata/deletionTimestamp").is_some());
        terminating && super::resources::ALL.iter().filter(|r| r.namespaced).all(|r| state.range(r, Some(namespace), None).next().is_none())
    };
    if ready {
        let key = Key::new(&NAMESPACE, "", namespace);
        let _ = store
            .write(
                key,
                false,
                Box::new(|current| match current {
                    Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Ok(Change::Delete),
                    _ => Ok(Change::Unchanged),
                }),
            )
            .await;
    }
}

/// Delete every object of a collection that the selectors match.
pub async fn delete_collection(store: &Store, target: &RequestScope<'_>, query: &Query, writer: &Writer<'_>) -> Result<Value, ApiError> {
    let selection = Selection::parse(query)?;
    let names: Vec<(String, String)> = {
        let state = store.read();
        state
            .range(target.resource, target.namespace, None)
            .filter(|(_, o)| selection.matches(o))
            .map(|(k, _)| (k.namespace.clone(), k.name.clone()))
            .collect()
    };
    let mut items = vec![];
    for (ns, name) in names {
        let t = RequestScope { resource: target.resource, namespace: if ns.is_empty() { None } else { Some(ns.as_str()) } };
        match delete(store, &t, &name, writer, DeleteOptions::default()).await {
            Ok(o) => items.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let revision = store.read().revision();
    Ok(json!({
        "kind": target.resource.list_kind(),
        "apiVersion": target.resource.api_version(),
        "metadata": { "resourceVersion": revision.to_string() },
        "items": items,
    }))
}
