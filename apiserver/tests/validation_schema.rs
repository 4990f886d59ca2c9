//! The API server's hand-written schema table against KubeVirt's own OpenAPI, and its
//! validation against real objects: every VirtualMachine, instance and migration in
//! KubeVirt's examples, and every object vmform's examples compile to, validate with no
//! causes.
//!
//! KubeVirt's reference data lives outside the project, in `../shared/kubevirt` next to the
//! workspace (never copied in); the tests that need it say so and pass when it is absent,
//! and fail under CI=true.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use vmform_apiserver::resources::Resource;
use vmform_apiserver::validation::{schema_table, validate};

fn kubevirt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/kubevirt")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The swagger `definitions`, or `None` (with a note) when the reference data is absent.
fn swagger_definitions() -> Option<Map<String, Value>> {
    let path = kubevirt_dir().join("openapi/swagger.json");
    if !vmform_schema_check::precondition(path.is_file(), &format!("KubeVirt's OpenAPI schema at {}", path.display())) {
        return None;
    }
    let text = std::fs::read_to_string(&path).expect("read swagger.json");
    let mut swagger: Value = serde_json::from_str(&text).expect("swagger.json is JSON");
    match swagger["definitions"].take() {
        Value::Object(definitions) => Some(definitions),
        _ => panic!("{} has no definitions", path.display()),
    }
}

/// A schema with its `$ref`s followed.
fn resolve<'a>(definitions: &'a Map<String, Value>, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/definitions/");
            let target = definitions.get(name).unwrap_or_else(|| panic!("dangling $ref {reference}"));
            resolve(definitions, target)
        }
        None => schema,
    }
}

/// The schema of the field at `path` (the table's syntax: `a.b[].c`, `m.*`) under the
/// definition `root`, and whether its parent requires it.
fn field_schema<'a>(definitions: &'a Map<String, Value>, root: &str, path: &str) -> Result<(&'a Value, bool), String> {
    let mut container = resolve(definitions, &definitions[root]);
    let segments: Vec<&str> = path.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        let (name, items) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (*segment, false),
        };
        let (mut schema, mut required) = if name == "*" {
            let values =
                container.get("additionalProperties").ok_or_else(|| format!("{path}: `{name}` but the swagger has no map here"))?;
            (values, false)
        } else {
            let property = container
                .get("properties")
                .and_then(|p| p.get(name))
                .ok_or_else(|| format!("{path}: the swagger has no field `{name}` here"))?;
            let required = container.get("required").and_then(Value::as_array).is_some_and(|r| r.iter().any(|f| f == name));
            (property, required)
        };
        if items {
            schema = schema.get("items").ok_or_else(|| format!("{path}: `{segment}` but the swagger has no list here"))?;
            required = false;
        }
        if i + 1 == segments.len() {
            return Ok((schema, required));
        }
        container = resolve(definitions, schema);
    }
    unreachable!("a path has at least one segment")
}

/// The table's type name for a swagger schema.
fn swagger_type(definitions: &Map<String, Value>, schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        if reference.ends_with("k8s.io.apimachinery.pkg.api.resource.Quantity") {
            return "int-or-string".into();
        }
        return swagger_type(definitions, resolve(definitions, schema));
    }
    match (schema.get("type").and_then(Value::as_str), schema.get("format").and_then(Value::as_str)) {
        (Some("string"), Some("int-or-string")) => "int-or-string".into(),
        (Some("object"), _) if schema.get("additionalProperties").is_some() => "map".into(),
        (Some(t), _) => t.into(),
        (None, _) => format!("(no type: {schema})"),
    }
}

/// The swagger definition of each kind whose table is checked; the core kinds are not in
/// KubeVirt's swagger.
fn definition_of(kind: &str) -> Option<&'static str> {
    match kind {
        "VirtualMachine" => Some("v1.VirtualMachine"),
        "VirtualMachineInstance" => Some("v1.VirtualMachineInstance"),
        "VirtualMachineInstanceMigration" => Some("v1.VirtualMachineInstanceMigration"),
        "MigrationPolicy" => Some("v1alpha1.MigrationPolicy"),
        _ => None,
    }
}

#[test]
fn every_field_in_the_table_has_kubevirts_type_and_required_flag() {
    let Some(definitions) = swagger_definitions() else { return };
    let mut problems = Vec::new();
    let (mut checked, mut unchecked_kinds) = (0, std::collections::BTreeSet::new());
    for entry in schema_table() {
        let Some(root) = definition_of(entry.kind) else {
            unchecked_kinds.insert(entry.kind);
            continue;
        };
        match field_schema(&definitions, root, &entry.path) {
            Err(problem) => problems.push(format!("{}: {problem}", entry.kind)),
            Ok((schema, required)) => {
                let actual = swagger_type(&definitions, schema);
                if actual != entry.type_name {
                    problems.push(format!("{} {}: the table says {}, the swagger {actual}", entry.kind, entry.path, entry.type_name));
                }
                if required != entry.required {
                    problems
                        .push(format!("{} {}: the table says required={}, the swagger {required}", entry.kind, entry.path, entry.required));
                }
                checked += 1;
            }
        }
    }
    assert!(problems.is_empty(), "the schema table disagrees with KubeVirt's swagger:\n{}", problems.join("\n"));
    assert!(checked > 200, "checked only {checked} fields");
    println!("{checked} fields agree with KubeVirt's swagger; not in it, so not checked: {unchecked_kinds:?}");
}

/// Every document of a multi-document YAML file, as JSON.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|document| !document.is_null())
        .collect()
}

#[test]
fn kubevirts_examples_validate_with_no_causes() {
    let dir = kubevirt_dir().join("examples");
    if !vmform_schema_check::precondition(dir.is_dir(), &format!("KubeVirt's examples at {}", dir.display())) {
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read examples/")
        .map(|e| e.expect("examples/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    let mut problems = Vec::new();
    for file in &files {
        for object in yaml_documents(file) {
            let (api_version, kind) = (object["apiVersion"].as_str().unwrap_or(""), object["kind"].as_str().unwrap_or(""));
            // Only the kinds the API server validates; pools, replica sets and the rest are not served.
            let Some(resource) = Resource::for_kind(api_version, kind).filter(|r| r.group == "kubevirt.io") else { continue };
            let causes = validate(resource, &object);
            if !causes.is_empty() {
                problems.push(format!("{} ({kind} {}): {causes:#?}", file.display(), object["metadata"]["name"]));
            }
            *checked.entry(kind.to_string()).or_default() += 1;
        }
    }
    assert!(problems.is_empty(), "KubeVirt's own examples are refused:\n{}", problems.join("\n"));
    assert!(checked.get("VirtualMachine").is_some_and(|n| *n >= 10), "too few VMs: {checked:?}");
    assert!(checked.get("VirtualMachineInstance").is_some_and(|n| *n >= 10), "too few VMIs: {checked:?}");
    assert!(checked.contains_key("VirtualMachineInstanceMigration"), "no migration: {checked:?}");
    println!("accepted from {} files: {checked:?}", files.len());
}


#[test]
fn every_object_vmforms_examples_emit_validates_with_no_causes() {
    let examples = workspace_root().join("examples");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&examples).expect("read examples/").map(|e| e.expect("examples/ entry").path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "at least 8 example projects, found {}", dirs.len());
    let vm = Resource::for_kind("kubevirt.io/v1", "VirtualMachine").expect("VirtualMachine is served");
    let mut checked = 0;
    for dir in dirs {
        let compiled = vmform_compiler::compile(&vmform_compiler::FsLoader, std::slice::from_ref(&dir), &vmform_compiler::Options::default());
        assert!(!compiled.has_errors(), "{} does not compile: {:?}", dir.display(), compiled.diagnostics);
        for object in &compiled.objects {
            let json = serde_json::to_value(&object.object).expect("a VirtualMachine serialises");
            let causes = validate(vm, &json);
            assert!(causes.is_empty(), "{}: {} is refused: {causes:#?}", dir.display(), object.object.metadata.name);
            checked += 1;
        }
    }
    assert!(checked >= 20, "checked only {checked} objects");
    println!("{checked} objects from vmform's examples accepted");
}
