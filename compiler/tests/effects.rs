//! Each row of the change-effect table (`compiler/src/effects.rs`,
//! `specs/change-effects.md`) with a change that exercises it, through real specs where the
//! language can express the field.

use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use vmform_compiler::diff::{diff, Action, ObjectChange};
use vmform_compiler::effects::{classify, Change, Effect, TABLE};
use vmform_compiler::{compile, CompiledVm, MemoryLoader, Options};


fn objects(spec: &str) -> Vec<CompiledVm> {
    let loader = MemoryLoader::new().with("a.kdl", spec);
    let c = compile(&loader, &[PathBuf::from("a.kdl")], &Options::default());
    assert!(!c.has_errors(), "{spec}\n{:?}", c.diagnostics.sorted());
    c.objects
}

/// A vm with every kind of field the rows below change.
fn vm(body: &str) -> String {
    format!("vm \"web\" {{\n    memory \"2Gi\"\n    network \"default\" masquerade=#true\n{body}\n}}\n")
}

fn changes(old: &str, new: &str) -> Vec<ObjectChange> {
    diff(&objects(old), &objects(new))
}

/// The one changed object's effect, and the effect of the field at `path`.
fn effect_of(old: &str, new: &str, path: &str) -> (Effect, Effect) {
    let c = changes(old, new);
    assert_eq!(c.len(), 1, "{c:#?}");
    let f = c[0].fields.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("no change at {path}: {:#?}", c[0].fields));
    (c[0].effect, f.effect)
}

#[test]
fn table_rows_all_have_a_test_and_a_line_in_the_spec() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../specs/change-effects.md")).unwrap();
    let me = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/effects.rs")).unwrap();
    for row in TABLE {
        assert!(doc.contains(&format!("`{}`", row.pattern)), "specs/change-effects.md lacks the row `{}`", row.pattern);
        assert!(me.contains(&format!("row: {}", row.pattern)), "no test names `row: {}`", row.pattern);
    }
}

#[test]
fn labels_and_annotations_are_metadata_only() {
    // row: metadata.labels.*
    // row: spec.template.metadata.labels.*
    let (obj, f) = effect_of(&vm("labels app=\"a\""), &vm("labels app=\"b\""), "metadata.labels.app");
    assert_eq!((obj, f), (Effect::None, Effect::None));
    let c = changes(&vm("labels app=\"a\""), &vm("labels app=\"b\""));
    let t = c[0].fields.iter().find(|f| f.path == "spec.template.metadata.labels.app").unwrap();
    assert_eq!(t.effect, Effect::None);
    // row: metadata.annotations.*
    let (_, f) = effect_of(&vm("annotations \"x.io/a\"=\"1\""), &vm("annotations \"x.io/a\"=\"2\""), "metadata.annotations[\"x.io/a\"]");
    assert_eq!(f, Effect::None);
    // row: spec.template.metadata.annotations.* — the language sets none; classify directly.
    assert_eq!(classify("spec.template.metadata.annotations.a", Change::Added, None, Some(&json!("1"))).0, Effect::None);
}

#[test]
fn run_strategy_applies_at_once() {
    // row: spec.runStrategy
    let (_, f) = effect_of(&vm("run-strategy \"always\""), &vm("run-strategy \"halted\""), "spec.runStrategy");
    assert_eq!(f, Effect::Live);
}

#[test]
fn data_volumes() {
    let with = |size: &str, class: &str| vm(&format!("    disk \"data\" {{ volume size=\"{size}\" storage-class=\"{class}\" }}"));
    // row: spec.dataVolumeTemplates[*].spec.storage.resources.requests.storage
    let path = "spec.dataVolumeTemplates[web-data].spec.storage.resources.requests.storage";
    assert_eq!(effect_of(&with("10Gi", "ssd"), &with("20Gi", "ssd"), path), (Effect::Live, Effect::Live), "volumes grow online");
    assert_eq!(effect_of(&with("20Gi", "ssd"), &with("10Gi", "ssd"), path).1, Effect::DataLoss, "shrinking recreates");
    // row: spec.dataVolumeTemplates[*].**
    let (obj, f) = effect_of(&with("10Gi", "ssd"), &with("10Gi", "hdd"), "spec.dataVolumeTemplates[web-data].spec.storage.storageClassName");
    assert_eq!((obj, f), (Effect::DataLoss, Effect::DataLoss));
    // row: spec.dataVolumeTemplates[*]
    let (obj, f) = effect_of(&with("10Gi", "ssd"), &vm(""), "spec.dataVolumeTemplates[web-data]");
    assert_eq!((obj, f), (Effect::DataLoss, Effect::DataLoss), "removing a data volume loses it");
    let (_, f) = effect_of(&vm(""), &with("10Gi", "ssd"), "spec.dataVolumeTemplates[web-data]");
    assert_eq!(f, Effect::Restart, "a new data volume attaches at the next restart");
}

#[test]
fn cpu_sockets_hotplug_and_other_topology_restarts() {
    // row: spec.template.spec.domain.cpu.sockets
    let (_, f) = effect_of(&vm("cpu sockets=1 cores=2"), &vm("cpu sockets=2 cores=2"), "spec.template.spec.domain.cpu.sockets");
    assert_eq!(f, Effect::Live);
    // row: spec.template.**
    let (obj, f) = effect_of(&vm("cpu sockets=1 cores=2"), &vm("cpu sockets=1 cores=4"), "spec.template.spec.domain.cpu.cores");
    assert_eq!((obj, f), (Effect::Restart, Effect::Restart));
    let (_, f) = effect_of(&vm("machine \"q35\""), &vm("machine \"pc-q35-rhel9.4.0\""), "spec.template.spec.domain.machine.type");
    assert_eq!(f, Effect::Restart);
}

#[test]
fn memory_grows_live_and_shrinks_at_restart() {
    // row: spec.template.spec.domain.memory.guest
    let a = "vm \"web\" {\n    memory \"2Gi\"\n}\n";
    let b = "vm \"web\" {\n    memory \"4Gi\"\n}\n";
    let path = "spec.template.spec.domain.memory.guest";
    assert_eq!(effect_of(a, b, path).1, Effect::Live);
    assert_eq!(effect_of(b, a, path).1, Effect::Restart);
}

#[test]
fn placement_applies_live() {
    // row: spec.template.spec.nodeSelector.*
    let (_, f) = effect_of(&vm("node-selector zone=\"a\""), &vm("node-selector zone=\"b\""), "spec.template.spec.nodeSelector.zone");
    assert_eq!(f, Effect::Live);
    // row: spec.template.spec.tolerations — not in the language; classify directly.
    assert_eq!(classify("spec.template.spec.tolerations", Change::Modified, Some(&json!([])), Some(&json!([{}]))).0, Effect::Live);
}

#[test]
fn disks_and_volumes_change_at_restart() {
    // row: spec.template.spec.volumes[*]
    // row: spec.template.spec.domain.devices.disks[*]
    let c = changes(&vm(""), &vm("    disk \"scratch\" { empty-disk \"1Gi\" }"));
    let f: BTreeMap<&str, Effect> = c[0].fields.iter().map(|f| (f.path.as_str(), f.effect)).collect();
    assert_eq!(f["spec.template.spec.volumes[scratch]"], Effect::Restart);
    assert_eq!(f["spec.template.spec.domain.devices.disks[scratch]"], Effect::Restart);
    assert_eq!(c[0].effect, Effect::Restart);
    // A hotpluggable volume (vmform emits none, a live cluster object may have one).
    let hot = json!({"name": "extra", "persistentVolumeClaim": {"claimName": "x", "hotpluggable": true}});
    assert_eq!(classify("spec.template.spec.volumes[extra]", Change::Added, None, Some(&hot)).0, Effect::Live);
    assert_eq!(classify("spec.template.spec.volumes[extra]", Change::Removed, Some(&hot), None).0, Effect::Live);
}

#[test]
fn an_object_takes_its_worst_fields_effect() {
    let c = changes(&vm("labels app=\"a\"\n    cpu sockets=1"), &vm("labels app=\"b\"\n    cpu sockets=2\n    machine \"q35\""));
    assert_eq!(c[0].action, Action::Update);
    assert_eq!(c[0].effect, Effect::Restart);
    assert!(c[0].reason.starts_with("spec.template.spec.domain.machine.type"), "{}", c[0].reason);
}

#[test]
fn creates_deletes_renames_and_namespace_moves() {
    let two = format!("{}vm \"db\" {{\n    memory \"1Gi\"\n    disk \"data\" {{ volume size=\"1Gi\" }}\n}}\n", vm(""));
    let c = changes(&vm(""), &two);
    assert_eq!((c.len(), c[0].action, c[0].effect), (1, Action::Create, Effect::None));

    let c = changes(&two, &vm(""));
    assert_eq!((c[0].name.as_str(), c[0].action, c[0].effect), ("db", Action::Delete, Effect::DataLoss), "deleting a VM that owns volumes");
    let c = changes(&vm(""), "vm \"other\" { memory \"2Gi\" }\n");
    let acts: Vec<(&str, Action)> = c.iter().map(|c| (c.name.as_str(), c.action)).collect();
    assert_eq!(acts, [("other", Action::Create), ("web", Action::Delete)], "a rename is a delete and a create");
    assert_eq!(c[1].effect, Effect::Replace);

    let moved = vm("namespace \"prod\"");
    let c = changes(&vm(""), &moved);
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].action, c[0].old_namespace.as_deref(), c[0].namespace.as_str()), (Action::Replace, Some("default"), "prod"));
}

#[test]
fn no_change_is_no_change_whatever_the_order() {
    let a = vm("    disk \"a\" { empty-disk \"1Gi\" }\n    disk \"b\" { empty-disk \"1Gi\" }\n    labels x=\"1\" y=\"2\"");
    let b = vm("    labels y=\"2\" x=\"1\"\n    disk \"a\" { empty-disk \"1Gi\" }\n    disk \"b\" { empty-disk \"1Gi\" }");
    assert_eq!(changes(&a, &b), vec![]);
}

#[test]
fn prevent_destroy_blocks_data_loss_and_ignore_changes_hides_paths() {
    let db = |size: &str, extra: &str| {
        format!("vm \"db\" {{\n    memory \"1Gi\"\n    disk \"data\" {{ volume size=\"{size}\" }}\n    lifecycle prevent-destroy=#true {extra}\n}}\n")
    };
    let c = changes(&db("20Gi", ""), &db("10Gi", ""));
    assert!(c[0].blocked && c[0].effect == Effect::DataLoss, "{c:#?}");
    let c = changes(&db("10Gi", ""), &db("20Gi", ""));
    assert!(!c[0].blocked, "growing loses nothing");
    let c = changes(&db("10Gi", ""), "");
    assert!(c[0].blocked && c[0].action == Action::Delete);

    let ignore = |mem: &str| format!("vm \"web\" {{\n    memory \"{mem}\"\n    labels a=\"{mem}\"\n    lifecycle ignore-changes=\"spec.template.spec.domain.memory\"\n}}\n");
    let c = changes(&ignore("1Gi"), &ignore("2Gi"));
    let paths: Vec<&str> = c[0].fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["metadata.labels.a", "spec.template.metadata.labels.a"], "memory is ignored");
}
