//! Every example builds, its output is snapshotted, and every emitted object is accepted
//! by KubeVirt's own OpenAPI schema (../shared/kubevirt) when that is present.

mod common;
use common::*;

fn build(args: &[&str]) -> String {
    let out = vmform(args);
    assert_eq!(code(&out), 0, "vmform {args:?} failed:\n{}", stderr(&out));
    stdout(&out)
}

#[test]
fn every_example_builds_and_matches_its_snapshot() {
    let dirs = example_dirs();
    assert!(dirs.len() >= 8, "at least 8 example projects, found {}", dirs.len());
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let rel = format!("examples/{name}");
        let yaml = build(&["build", &rel]);
        assert!(yaml.starts_with("---\napiVersion: kubevirt.io/v1\n"), "{name}: YAML of VirtualMachines");
        insta::assert_snapshot!(format!("example-{name}"), yaml);
    }
}

/// The examples are in `vmform fmt`'s canonical layout (the README's `fmt --check` line).
#[test]
fn examples_are_formatted() {
    let o = vmform(&["fmt", "--check", "examples/"]);
    assert_eq!(code(&o), 0, "not formatted (run `vmform fmt examples/`):\n{}{}", stdout(&o), stderr(&o));
}

#[test]
fn params_switch_environments() {
    let staging = build(&["build", "examples/environments"]);
    let prod = build(&["build", "examples/environments", "--var", "env=prod"]);
    assert_ne!(staging, prod);
    assert!(prod.contains("namespace: orders-prod"), "the env param reaches the namespace:\n{prod}");
    insta::assert_snapshot!("example-environments-prod", prod);
}

#[test]
fn build_output_is_byte_for_byte_deterministic() {
    for dir in example_dirs() {
        let rel = dir.strip_prefix(root()).unwrap().to_string_lossy().to_string();
        let a = build(&["build", &rel]);
        let b = build(&["build", &rel]);
        assert_eq!(a, b, "{rel}: two builds differ");
        let ja = build(&["build", &rel, "-o", "json"]);
        assert_eq!(ja, build(&["build", &rel, "-o", "json"]), "{rel}: two JSON builds differ");
    }
}

#[test]
fn yaml_is_sorted_by_namespace_and_name() {
    for dir in example_dirs() {
        let rel = dir.strip_prefix(root()).unwrap().to_string_lossy().to_string();
        let json: serde_json::Value = serde_json::from_str(&build(&["build", &rel, "-o", "json"])).unwrap();
        let keys: Vec<(String, String)> = json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["metadata"]["namespace"].as_str().unwrap().into(), o["metadata"]["name"].as_str().unwrap().into()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{rel}");
    }
}

#[test]
fn every_emitted_object_is_accepted_by_kubevirts_schema() {
    let Some(schema) = vmform_schema_check::Schema::for_test() else { return };
    let mut checked = 0;
    for dir in example_dirs() {
        let rel = dir.strip_prefix(root()).unwrap().to_string_lossy().to_string();
        let list: serde_json::Value = serde_json::from_str(&build(&["build", &rel, "-o", "json"])).unwrap();
        for obj in list["items"].as_array().unwrap() {
            let violations = schema.validate("v1.VirtualMachine", obj);
            assert!(violations.is_empty(), "{rel}: {} is refused by KubeVirt's schema:\n{}", obj["metadata"]["name"], violations.join("\n"));
            checked += 1;
        }
    }
    assert!(checked >= 20, "checked only {checked} objects");
    println!("{checked} objects accepted by v1.VirtualMachine");
}

#[test]
fn every_object_is_marked_managed_by_vmform() {
    for dir in example_dirs() {
        let rel = dir.strip_prefix(root()).unwrap().to_string_lossy().to_string();
        let list: serde_json::Value = serde_json::from_str(&build(&["build", &rel, "-o", "json"])).unwrap();
        for obj in list["items"].as_array().unwrap() {
            assert_eq!(obj["metadata"]["labels"]["app.kubernetes.io/managed-by"], "vmform", "{rel}");
        }
    }
}

/// The book shows real files only: every `{{#include}}` names a file that exists, and
/// the example files it shows are compiled by the tests above.
#[test]
fn book_samples_are_real_example_files() {
    let src = root().join("book/src");
    let mut includes = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices("{{#include ") {
            let rest = &text[i + "{{#include ".len()..];
            let target = rest[..rest.find("}}").unwrap()].trim();
            let file = target.split(':').next().unwrap();
            let resolved = src.join(file);
            assert!(resolved.is_file(), "{}: {{{{#include {target}}}}} names a missing file", path.display());
            let canon = resolved.canonicalize().unwrap();
            let real = ["examples", "specs", "compiler/policies"].iter().any(|d| canon.starts_with(root().join(d).canonicalize().unwrap()));
            assert!(real, "{}: book samples come from examples/, specs/ or the built-in policies: {target}", path.display());
            includes += 1;
        }
    }
    assert!(includes > 0, "the book includes its samples from examples/");
}
