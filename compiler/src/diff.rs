//! The semantic diff of two sets of compiled objects, shared by `vmform diff` and (later)
//! `vmform plan`: per object an action, per field its path, old and new value, and the
//! change effect of [`effects`](crate::effects).
//!
//! Objects are compared as JSON trees: maps by key, lists of named items (disks, volumes,
//! interfaces, networks, ports, data volume templates) by name, other lists as a whole.

use crate::effects::{self, Change, Effect};
use crate::lower::CompiledVm;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    /// Deleted and created again: the namespace changed.
    Replace,
    Delete,
}

impl Action {
    /// The symbol of Terraform's plan output.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// As `spec.template.spec.domain.memory.guest`; list items by name, `disks[root]`;
    /// keys that are not plain words quoted, `labels["app.kubernetes.io/name"]`.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
    pub effect: Effect,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectChange {
    pub namespace: String,
    pub name: String,
    /// For a replace, the namespace it had before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_namespace: Option<String>,
    pub action: Action,
    /// The worst effect of the object's changes.
    pub effect: Effect,
    pub reason: String,
    pub fields: Vec<FieldChange>,
    /// `lifecycle prevent-destroy=#true` forbids this change (it would lose data).
    pub blocked: bool,
}

/// Every change from `old` to `new`, ordered by namespace and name. Unchanged objects
/// are left out; fields named in a new object's `lifecycle ignore-changes` are hidden.
pub fn diff(old: &[CompiledVm], new: &[CompiledVm]) -> Vec<ObjectChange> {
    let key = |o: &CompiledVm| (o.object.metadata.namespace.clone().unwrap_or_default(), o.object.metadata.name.clone());
    let old_by_key: BTreeMap<_, _> = old.iter().map(|o| (key(o), o)).collect();
    let new_by_key: BTreeMap<_, _> = new.iter().map(|o| (key(o), o)).collect();
    let mut changes = vec![];
    let mut replaced_old = vec![];

    for (k, n) in &new_by_key {
        match old_by_key.get(k) {
            Some(o) => {
                if let Some(c) = update(o, n) {
                    changes.push(c);
                }
            }
            None => {
                // Same name in another namespace, gone from there: a namespace change.
                let moved = old_by_key
                    .iter()
                    .find(|(ok, _)| ok.1 == k.1 && !new_by_key.contains_key(*ok) && !replaced_old.contains(*ok));
                match moved {
                    Some((ok, o)) => {
                        replaced_old.push((*ok).clone());
                        let destroys = owns_volumes(o);
                        changes.push(ObjectChange {
                            namespace: k.0.clone(),
                            name: k.1.clone(),
                            old_namespace: Some(ok.0.clone()),
                            action: Action::Replace,
                            effect: if destroys { Effect::DataLoss } else { Effect::Replace },
                            reason: if destroys {
                                format!("the namespace changes from {}: the VM and its data volumes are deleted and created again, empty", ok.0)
                            } else {
                                format!("the namespace changes from {}: the VM is deleted and created again", ok.0)
                            },
                            fields: vec![],
                            blocked: o.lifecycle.prevent_destroy && destroys,
                        });
                    }
                    None => changes.push(ObjectChange {
                        namespace: k.0.clone(),
                        name: k.1.clone(),
                        old_namespace: None,
                        action: Action::Create,
                        effect: Effect::None,
                        reason: "new VM".into(),
                        fields: vec![],
                        blocked: false,
                    }),
                }
            }
        }
    }
    for (k, o) in &old_by_key {
        if new_by_key.contains_key(k) || replaced_old.contains(k) {
            continue;
        }
        let destroys = owns_volumes(o);
        changes.push(ObjectChange {
            namespace: k.0.clone(),
            name: k.1.clone(),
            old_namespace: None,
            action: Action::Delete,
            effect: if destroys { Effect::DataLoss } else { Effect::Replace },
            reason: if destroys {
                "the VM is deleted with the data volumes it owns".into()
            } else {
                "the VM is deleted; its guest stops".into()
            },
            fields: vec![],
            blocked: o.lifecycle.prevent_destroy,
        });
    }
    changes.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    changes
}

fn owns_volumes(o: &CompiledVm) -> bool {
    !o.object.spec.data_volume_templates.is_empty()
}

fn update(old: &CompiledVm, new: &CompiledVm) -> Option<ObjectChange> {
    // Most objects of a fleet are unchanged: compare the typed objects before building
    // JSON trees to walk.
    if old.object == new.object {
        return None;
    }
    let a = serde_json::to_value(&old.object).expect("objects serialise");
    let b = serde_json::to_value(&new.object).expect("objects serialise");
    let mut fields = vec![];
    walk("", Some(&a), Some(&b), &mut fields);
    let ignored = &new.lifecycle.ignore_changes;
    fields.retain(|f| !ignored.iter().any(|p| f.path == *p || f.path.starts_with(&format!("{p}.")) || f.path.starts_with(&format!("{p}["))));
    if fields.is_empty() {
        return None;
    }
    let worst = fields.iter().max_by_key(|f| f.effect).expect("not empty");
    let (effect, reason) = (worst.effect, format!("{}: {}", worst.path, worst.reason));
    Some(ObjectChange {
        namespace: new.object.metadata.namespace.clone().unwrap_or_default(),
        name: new.object.metadata.name.clone(),
        old_namespace: None,
        action: Action::Update,
        effect,
        reason,
        blocked: effect == Effect::DataLoss && (new.lifecycle.prevent_destroy || old.lifecycle.prevent_destroy),
        fields,
    })
}

/// Lists whose items are matched by name rather than position.
fn item_name(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str).or_else(|| v.pointer("/metadata/name").and_then(Value::as_str))
}

fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<FieldChange>) {
    // A block present on one side only is compared with an empty one, so each field in it
    // is reported, and classified, at its own path.
    let empty_object = Value::Object(serde_json::Map::new());
    let empty_array = Value::Array(vec![]);
    let (a, b) = match (a, b) {
        (None, Some(Value::Object(y))) if !y.is_empty() => (Some(&empty_object), b),
        (Some(Value::Object(x)), None) if !x.is_empty() => (a, Some(&empty_object)),
        (None, Some(Value::Array(y))) if !y.is_empty() && y.iter().all(|v| item_name(v).is_some()) => (Some(&empty_array), b),
        (Some(Value::Array(x)), None) if !x.is_empty() && x.iter().all(|v| item_name(v).is_some()) => (a, Some(&empty_array)),
        _ => (a, b),
    };
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                walk(&join_key(path, k), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y)))
            if x.iter().chain(y).all(|v| item_name(v).is_some()) && !(x.is_empty() && y.is_empty()) =>
        {
            // Named items: matched by name; order changes alone are not changes.
            let mut names: Vec<&str> = x.iter().filter_map(item_name).collect();
            for n in y.iter().filter_map(item_name) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            for n in names {
                let find = |l: &'_ [Value]| l.iter().find(|v| item_name(v) == Some(n)).cloned();
                let (i, j) = (find(x), find(y));
                let p = format!("{path}[{n}]");
                match (&i, &j) {
                    (Some(_), Some(_)) => walk(&p, i.as_ref(), j.as_ref(), out),
                    _ => leaf(p, i.as_ref(), j.as_ref(), out),
                }
            }
        }
        (a, b) if a == b => {}
        (a, b) => leaf(path.to_string(), a, b, out),
    }
}

fn leaf(path: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<FieldChange>) {
    let change = match (a, b) {
        (None, _) => Change::Added,
        (_, None) => Change::Removed,
        _ => Change::Modified,
    };
    let (effect, reason) = effects::classify(&path, change, a, b);
    out.push(FieldChange { path, old: a.cloned(), new: b.cloned(), effect, reason });
}

fn join_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", serde_json::to_string(key).expect("a string serialises")),
    }
}

/// The closing line of the human output, Terraform style.
pub fn summary(changes: &[ObjectChange]) -> String {
    let count = |a: Action| changes.iter().filter(|c| c.action == a).count();
    let restarts = changes.iter().filter(|c| c.action == Action::Update && c.effect == Effect::Restart).count();
    let change = if restarts > 0 {
        format!("{} to change ({restarts} {} restart)", count(Action::Update), if restarts == 1 { "needs" } else { "need" })
    } else {
        format!("{} to change", count(Action::Update))
    };
    format!(
        "{} to add, {change}, {} to replace, {} to destroy",
        count(Action::Create),
        count(Action::Replace),
        count(Action::Delete)
    )
}
