//! The crate boundaries of ARCHITECTURE.md's table, read from `cargo metadata`: what each
//! crate may never link, directly or through any dependency. Only normal
//! dependencies count (not dev-dependencies, which tests and benchmarks use, nor build
//! dependencies, which are not linked); features are the workspace's defaults.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Crate → what its dependency closure must not hold.
const NEVER: &[(&str, &[&str])] = &[
    // The compiler runs anywhere: CI runners, pull-request review, an editor.
    ("vmform-compiler", &["tokio", "kube", "virt", "axum", "rusqlite"]),
    // Cluster access is small: no server, no libvirt, no SQLite.
    ("vmform-cluster", &["axum", "rusqlite", "virt", "vmform-apiserver", "vmform-runtime", "vmform-deploy"]),
    // plan/apply talk to any cluster through kube.
    ("vmform-deploy", &["axum", "rusqlite", "virt", "vmform-apiserver", "vmform-runtime"]),
    // The API server knows nothing of nodes.
    ("vmform-apiserver", &["virt", "vmform-runtime", "vmform-deploy"]),
    // The runtime reaches any API server through kube only.
    ("vmform-runtime", &["rusqlite", "vmform-apiserver", "vmform-deploy"]),
];

/// The names of the packages `package` links: its normal dependencies, theirs, and so on
/// (not `package` itself).
fn closure(metadata: &Value, package: &str) -> Result<BTreeSet<String>, String> {
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .ok_or("no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let nodes: BTreeMap<&str, &Value> =
        metadata["resolve"]["nodes"].as_array().ok_or("no resolve graph")?.iter().filter_map(|n| Some((n["id"].as_str()?, n))).collect();
    let root = metadata["workspace_members"]
        .as_array()
        .ok_or("no workspace members")?
        .iter()
        .filter_map(Value::as_str)
        .find(|id| names.get(id) == Some(&package))
        .ok_or_else(|| format!("{package} is not a workspace member"))?;
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        let node = nodes.get(id).ok_or_else(|| format!("{id} is not in the resolve graph"))?;
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null());
            let Some(pkg) = dep["pkg"].as_str() else { continue };
            if normal && seen.insert(pkg) {
                todo.push(pkg);
            }
        }
    }
    Ok(seen.into_iter().filter_map(|id| names.get(id).map(|n| n.to_string())).collect())
}

/// Every broken rule, as `crate links forbidden`.
fn violations(metadata: &Value, rules: &[(&str, &[&str])]) -> Result<Vec<String>, String> {
    let mut broken = Vec::new();
    for (package, never) in rules {
        let linked = closure(metadata, package)?;
        for forbidden in *never {
            if linked.contains(*forbidden) {
                broken.push(format!("{package} links {forbidden}"));
            }
        }
    }
    Ok(broken)
}

#[test]
fn no_crate_links_what_the_design_forbids_it() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    // The rules must be about real crates: a renamed crate must not pass by being absent.
    for (package, _) in NEVER {
        let linked = closure(&metadata, package).unwrap();
        assert!(!linked.is_empty(), "{package} has no dependencies at all?");
    }
    assert!(closure(&metadata, "vmform-runtime").unwrap().contains("kube"), "the runtime reaches clusters through kube");
    assert_eq!(violations(&metadata, NEVER).unwrap(), Vec::<String>::new());
}

/// A small made-up workspace: `app` → `lib` (normal) → `tokio` (normal); `app` → `sqlite`
/// (dev only); `lib` → `cc` (build only).
fn fabricated() -> Value {
    let dep = |name: &str, kind: Value| serde_json::json!({ "name": name, "pkg": format!("{name} 1.0"), "dep_kinds": [{ "kind": kind, "target": null }] });
    serde_json::json!({
        "packages": (["app", "lib", "tokio", "sqlite", "cc"].map(|n| serde_json::json!({ "id": format!("{n} 1.0"), "name": n }))),
        "workspace_members": ["app 1.0", "lib 1.0"],
        "resolve": { "nodes": [
            { "id": "app 1.0", "deps": [dep("lib", Value::Null), dep("sqlite", "dev".into())] },
            { "id": "lib 1.0", "deps": [dep("tokio", Value::Null), dep("cc", "build".into())] },
            { "id": "tokio 1.0", "deps": [] },
            { "id": "sqlite 1.0", "deps": [] },
            { "id": "cc 1.0", "deps": [] },
        ] },
    })
}

#[test]
fn the_closure_follows_normal_dependencies_through_every_level_and_only_them() {
    let metadata = fabricated();
    assert_eq!(closure(&metadata, "app").unwrap(), BTreeSet::from(["lib".to_string(), "tokio".to_string()]));
    assert_eq!(closure(&metadata, "lib").unwrap(), BTreeSet::from(["tokio".to_string()]));
    assert!(closure(&metadata, "tokio").is_err(), "not a workspace member");
}

#[test]
fn a_forbidden_crate_anywhere_in_the_closure_is_a_violation() {
    let metadata = fabricated();
    assert_eq!(violations(&metadata, &[("app", &["tokio", "sqlite", "cc"])]).unwrap(), ["app links tokio"]);
    assert_eq!(violations(&metadata, &[("lib", &["sqlite"])]).unwrap(), Vec::<String>::new());
}
