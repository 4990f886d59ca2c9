//! Checks the validator against KubeVirt's own example manifests (which must pass) and
//! against mutated copies of them (which must fail at the expected path). Every test skips,
//! with a message, when the KubeVirt reference data is not present, and fails under CI=true.

use serde_json::{Value, json};
use std::path::Path;
use vmform_schema_check::{Schema, kubevirt_dir};

fn schema() -> Option<Schema> {
    Schema::for_test()
}

/// Every YAML document in `dir/*.yaml`, as `(file name, document)`.
fn documents(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !value.is_null() {
                docs.push((name.clone(), value));
            }
        }
    }
    docs
}

/// The swagger definition for a KubeVirt kind, or None for kinds outside KubeVirt's API
/// (PriorityClass, ResourceClaimTemplate).
fn definition(api_version: &str, kind: &str) -> Option<String> {
    let version = api_version.rsplit('/').next()?;
    api_version
        .contains("kubevirt.io/")
        .then(|| format!("{version}.{kind}"))
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

/// Validates every KubeVirt document in `dir` and returns the failures, one line each.
fn failures(schema: &Schema, dir: &Path, wanted: impl Fn(&str) -> bool) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut failed = Vec::new();
    for (file, doc) in documents(dir) {
        let Some(def) = definition(doc["apiVersion"].as_str().unwrap_or(""), kind(&doc)) else {
            continue;
        };
        if !wanted(kind(&doc)) {
            continue;
        }
        checked += 1;
        for err in schema.validate(&def, &doc) {
            failed.push(format!("{file} ({def}): {err}"));
        }
    }
    (checked, failed)
}

#[test]
fn every_virtual_machine_example_is_valid() {
    let Some(schema) = schema() else { return };
    let (checked, failed) = failures(&schema, &kubevirt_dir().join("examples"), |k| {
        k == "VirtualMachine"
    });
    assert!(
        checked >= 10,
        "expected the VirtualMachine examples, found only {checked}"
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    eprintln!("{checked} VirtualMachine examples valid");
}

/// Not required by vmform, but exercises far more of the schema: VMIs, pools, replica
/// sets, migrations, instancetypes and preferences, including the 119 common ones.
#[test]
fn every_other_kubevirt_example_is_valid() {
    let Some(schema) = schema() else { return };
    let root = kubevirt_dir().join("examples");
    let mut checked = 0;
    let mut failed = Vec::new();
    for dir in [root.clone(), root.join("common-instancetypes")] {
        let (n, f) = failures(&schema, &dir, |k| k != "VirtualMachine");
        checked += n;
        failed.extend(f);
    }
    assert!(
        checked >= 150,
        "expected the other examples, found only {checked}"
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    eprintln!("{checked} other KubeVirt examples valid");
}

/// vm-alpine-datavolume.yaml: a VM with a disk, memory, and a dataVolumeTemplate.
fn base_vm() -> Value {
    let docs = documents(&kubevirt_dir().join("examples"));
    let (_, vm) = docs
        .into_iter()
        .find(|(file, _)| file == "vm-alpine-datavolume.yaml")
        .expect("vm-alpine-datavolume.yaml");
    vm
}

/// Sets (or, for `None`, removes) the field at JSON `pointer` of the base VM, checking
/// first that the base VM is valid, and returns the violations. A leading `~VMI` stands
/// for the VMI spec inside the VM.
fn violations(schema: &Schema, pointer: &str, new: Option<Value>) -> Vec<String> {
    let mut vm = base_vm();
    let none: Vec<String> = vec![];
    assert_eq!(schema.validate("v1.VirtualMachine", &vm), none);
    let pointer = pointer.replace("~VMI", "/spec/template/spec");
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let key = key.replace("~1", "/").replace("~0", "~");
    match (vm.pointer_mut(parent), new) {
        (Some(Value::Array(items)), Some(new)) => items[key.parse::<usize>().unwrap()] = new,
        (Some(Value::Object(map)), Some(new)) => _ = map.insert(key, new),
        (Some(Value::Object(map)), None) => _ = map.remove(&key).expect("field to remove"),
        _ => panic!("cannot change {pointer}"),
    }
    schema.validate("v1.VirtualMachine", &vm)
}

#[test]
fn mutations_fail_at_the_expected_path() {
    let Some(schema) = schema() else { return };
    #[rustfmt::skip]
    let cases = [
        ("~VMI/domain/devices/bogus", Some(json!(true)),
            "spec.template.spec.domain.devices.bogus: unknown field"),
        ("~VMI/terminationGracePeriodSeconds", Some(json!("30")),
            "spec.template.spec.terminationGracePeriodSeconds: expected integer, found string"),
        ("~VMI/domain", None,
            "spec.template.spec.domain: missing required field"),
        ("/spec/running", Some(json!("true")),
            "spec.running: expected boolean, found string"),
        ("~VMI/domain/devices/disks/0/disk/bus", Some(json!(1)),
            "spec.template.spec.domain.devices.disks[0].disk.bus: expected string, found integer"),
        ("~VMI/domain/devices/disks/0/name", None,
            "spec.template.spec.domain.devices.disks[0].name: missing required field"),
        ("~VMI/domain/cpu", Some(json!({"cores": 1.5})),
            "spec.template.spec.domain.cpu.cores: expected integer, found number"),
        ("~VMI/domain/devices/disks/0/bootOrder", Some(json!(4_294_967_296u64)),
            "spec.template.spec.domain.devices.disks[0].bootOrder: 4294967296 does not fit in a signed 32-bit integer"),
        // v1.Rng is an empty Go struct: `type: object` without properties, still closed.
        ("~VMI/domain/devices/rng", Some(json!({"rate": 1})),
            "spec.template.spec.domain.devices.rng.rate: unknown field"),
        ("~VMI/domain/devices", Some(Value::Null),
            "spec.template.spec.domain.devices: expected object, found null"),
        ("/metadata/label", Some(json!({})),
            "metadata.label: unknown field"),
        ("/metadata/labels/kubevirt.io~1vm", Some(json!(1)),
            r#"metadata.labels["kubevirt.io/vm"]: expected string, found integer"#),
        ("~VMI/domain/memory/guest", Some(json!("128MB")),
            r#"spec.template.spec.domain.memory.guest: "128MB" is not a valid quantity (like "2Gi", "500m", "1e3")"#),
        ("~VMI/domain/memory/guest", Some(json!(1.5)),
            "spec.template.spec.domain.memory.guest: expected integer or quantity string, found number"),
        // dataVolumeTemplates[].spec is CDI's v1beta1.DataVolumeSpec, checked like the rest.
        ("/spec/dataVolumeTemplates/0/spec/source/registry/uri", Some(json!("x")),
            "spec.dataVolumeTemplates[0].spec.source.registry.uri: unknown field"),
        ("/spec/dataVolumeTemplates/0/spec/pvc/accessModes/0", Some(json!("ReadWriteSometimes")),
            r#"spec.dataVolumeTemplates[0].spec.pvc.accessModes[0]: "ReadWriteSometimes" is not one of ["ReadOnlyMany","ReadWriteMany","ReadWriteOnce","ReadWriteOncePod"]"#),
        ("/spec/dataVolumeTemplates/0/spec", None,
            "spec.dataVolumeTemplates[0].spec: missing required field"),
        ("/apiVersion", Some(json!("kubevirt.io/v1alpha3")),
            r#"apiVersion: expected "kubevirt.io/v1", found "kubevirt.io/v1alpha3""#),
        ("/kind", Some(json!("VirtualMachineInstance")),
            r#"kind: expected "VirtualMachine", found "VirtualMachineInstance""#),
        ("/kind", None,
            r#"kind: missing required field (want "VirtualMachine")"#),
    ];
    for (pointer, new, expected) in cases {
        assert_eq!(violations(&schema, pointer, new), [expected], "{pointer}");
    }
}

#[test]
fn accepted_variants_stay_valid() {
    let Some(schema) = schema() else { return };
    let cases = [
        ("~VMI/domain/memory/guest", json!(134_217_728)),
        ("~VMI/domain/memory/guest", json!("0.5Gi")),
        ("~VMI/domain/devices/rng", json!({})),
        ("/status", Value::Null), // v1.VirtualMachineStatus is nullable
        ("/metadata/creationTimestamp", Value::Null), // type [string, null]
        (
            "/metadata/annotations",
            json!({"vmform.dev/source": "x.kdl"}),
        ),
    ];
    for (pointer, new) in cases {
        let none: Vec<String> = vec![];
        assert_eq!(violations(&schema, pointer, Some(new)), none, "{pointer}");
    }
}

#[test]
fn int_or_string_accepts_both() {
    let Some(schema) = schema() else { return };
    let template = json!({"spec": {"template": {"spec": {"domain": {"devices": {}}}}}});
    let pool = |max: Value| json!({"selector": {}, "virtualMachineTemplate": template, "maxUnavailable": max});
    for ok in [json!(1), json!("50%")] {
        assert_eq!(
            schema.validate("v1beta1.VirtualMachinePoolSpec", &pool(ok)),
            Vec::<String>::new()
        );
    }
    assert_eq!(
        schema.validate("v1beta1.VirtualMachinePoolSpec", &pool(json!(true))),
        vec!["maxUnavailable: expected integer or string, found boolean".to_string()]
    );
}

#[test]
fn unknown_definition_is_reported() {
    let Some(schema) = schema() else { return };
    assert_eq!(
        schema.validate("v1.Nope", &json!({})),
        vec![r#"(root): no definition named "v1.Nope" in the schema"#.to_string()]
    );
}

#[test]
fn load_reports_a_missing_directory() {
    let err = Schema::load(Path::new("/nonexistent/kubevirt"))
        .err()
        .expect("load should fail");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

/// swagger.json alone is enough: every `$ref` in it, including the CDI `v1beta1.*` types
/// that `dataVolumeTemplates[].spec` uses, names one of its own definitions.
#[test]
fn swagger_refs_all_resolve() {
    if schema().is_none() {
        return;
    }
    let text = std::fs::read(kubevirt_dir().join("openapi/swagger.json")).unwrap();
    let doc: Value = serde_json::from_slice(&text).unwrap();
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| match (k.as_str(), v) {
                ("$ref", Value::String(r)) => out.push(r),
                _ => refs(v, out),
            }),
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc["definitions"], &mut all);
    let dangling: Vec<_> = all
        .iter()
        .filter(|r| doc.pointer(&r[1..]).is_none())
        .collect();
    assert!(dangling.is_empty(), "dangling refs: {dangling:?}");
    assert!(all.contains(&"#/definitions/v1beta1.DataVolumeSpec"));
}
