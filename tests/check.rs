//! `vmform check`: built-in rules (each with a passing and a failing case, run through
//! `--test`), user policies, exceptions, the five output formats, and exit codes.

mod common;
use common::*;
use std::fs;
use std::path::Path;

const POLICY: &str = r#"rule "prod-memory-cap" severity="error" {
    description "Production VMs stay under 8Gi of memory."
    match namespace="*prod*"
    deny "quantity(object.spec.template.spec.domain.memory.guest).isGreaterThan(quantity('8Gi'))" message="prod VMs stay under 8Gi" path="spec.template.spec.domain.memory.guest"
}
"#;

const SPECS: &str = r#"vm "db" {
    namespace "shop-prod"
    labels app="db"
    eviction "none"
    memory "16Gi"
}
vm "web" {
    namespace "shop-prod"
    labels app="web"
    eviction "none"
    memory "4Gi"
}
"#;

fn setup(dir: &Path, exceptions: &str) -> (String, String) {
    fs::write(dir.join("specs.kdl"), SPECS).unwrap();
    fs::write(dir.join("policy.kdl"), format!("{POLICY}{exceptions}")).unwrap();
    ("specs.kdl".into(), "policy.kdl".into())
}

#[test]
fn every_builtin_rule_has_a_passing_and_a_failing_case() {
    let dir = root().join("compiler/policies/tests");
    let out = vmform(&["check", "--test", &dir.to_string_lossy()]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
    let builtin = fs::read_to_string(root().join("compiler/policies/builtin.kdl")).unwrap();
    let ids: Vec<&str> = builtin.lines().filter_map(|l| l.strip_prefix("rule \"")).map(|l| &l[..l.find('"').unwrap()]).collect();
    assert!(ids.len() >= 12, "at least 12 built-in rules, found {}", ids.len());
    let doc = fs::read_to_string(root().join("specs/policy.md")).unwrap();
    for id in ids {
        assert!(doc.contains(&format!("| `{id}` |")), "specs/policy.md documents {id}");
        assert!(dir.join(format!("{id}-pass.kdl")).is_file(), "{id} has a passing case");
        // secure-boot-needs-efi cannot fail on compiled specs (the compiler refuses them);
        // its failing case is the object test below.
        if id != "secure-boot-needs-efi" {
            assert!(dir.join(format!("{id}-fail.kdl")).is_file(), "{id} has a failing case");
        }
    }
}

/// Counts read as English: one VM and one rule are singular.
#[test]
fn the_summary_counts_one_vm_and_one_rule_in_the_singular() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("one.kdl");
    fs::write(&f, "vm \"web\" {\n    memory \"1Gi\"\n}\n").unwrap();
    let out = vmform(&["check", &f.to_string_lossy(), "--rules", "none"]);
    assert!(stdout(&out).contains("1 VM checked against 1 rule: 0 errors, 0 warnings, 0 notes"), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn a_broken_test_case_fails_the_test_run() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("case.kdl"), "// rules: no-default-namespace\n// expect: no-default-namespace apps/x\nvm \"x\" {\n    namespace \"apps\"\n    memory \"1Gi\"\n}\n").unwrap();
    let out = vmform(&["check", "--test", &d.path().to_string_lossy()]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("missing:    no-default-namespace apps/x"), "{}", stdout(&out));
}

#[test]
fn user_rules_point_at_the_spec_that_set_the_field() {
    let d = tempfile::tempdir().unwrap();
    let (specs, policy) = setup(d.path(), "");
    let out = vmform_in(d.path(), &["check", &specs, "--policy", &policy, "--rules", "none"]);
    assert_eq!(code(&out), 1, "an error finding fails the check:\n{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("error[prod-memory-cap] shop-prod/db: prod VMs stay under 8Gi\n  --> specs.kdl:5:12"), "{text}");
    assert!(!text.contains("shop-prod/web"), "web is under the cap:\n{text}");
}

#[test]
fn exceptions_waive_until_they_expire() {
    let d = tempfile::tempdir().unwrap();
    let (specs, policy) = setup(d.path(), "exception \"prod-memory-cap\" vm=\"db\" reason=\"migration in Q1\" owner=\"dba-team\" expires=\"2999-01-31\"\n");
    let out = vmform_in(d.path(), &["check", &specs, "--policy", &policy, "--rules", "none"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("waived by an exception: migration in Q1 (owner dba-team, until 2999-01-31)"), "{}", stdout(&out));

    let (specs, policy) = setup(d.path(), "exception \"prod-memory-cap\" vm=\"db\" reason=\"migration\" owner=\"dba-team\" expires=\"2020-01-31\"\n");
    let out = vmform_in(d.path(), &["check", &specs, "--policy", &policy, "--rules", "none"]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(text.contains("error[exception-expired]") && text.contains("expired on 2020-01-31"), "an expired exception is a finding:\n{text}");
    assert!(text.contains("error[prod-memory-cap] shop-prod/db"), "and waives nothing:\n{text}");

    let (specs, policy) = setup(d.path(), "exception \"prod-memory-cap\" vm=\"db\" reason=\"forever\" owner=\"dba-team\"\n");
    assert_eq!(code(&vmform_in(d.path(), &["check", &specs, "--policy", &policy, "--rules", "none"])), 0, "no expiry, no end");
}

#[test]
fn exceptions_are_not_allowed_in_specs() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("s.kdl"), format!("{SPECS}exception \"prod-memory-cap\" vm=\"db\" reason=\"x\" owner=\"y\"\n")).unwrap();
    let out = vmform_in(d.path(), &["check", "s.kdl"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("unknown node `exception`") && stderr(&out).contains("policy file"), "{}", stderr(&out));
}

#[test]
fn fail_on_and_rule_selection() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("s.kdl"), "vm \"x\" {\n    memory \"1Gi\"\n    labels app=\"x\"\n    eviction \"none\"\n}\n").unwrap();
    // Only a warning (default namespace): passes by default, fails with --fail-on warning.
    assert_eq!(code(&vmform_in(d.path(), &["check", "s.kdl"])), 0);
    assert_eq!(code(&vmform_in(d.path(), &["check", "s.kdl", "--fail-on", "warning"])), 1);
    assert_eq!(code(&vmform_in(d.path(), &["check", "s.kdl", "--fail-on", "warning", "--rules", "app-label"])), 0);
    let out = vmform_in(d.path(), &["check", "s.kdl", "--rules", "no-such-rule"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no built-in rule `no-such-rule`"), "{}", stderr(&out));
    fs::write(d.path().join("bad-policy.kdl"), "rule \"r\" { deny \"object.(\" }\n").unwrap();
    let out = vmform_in(d.path(), &["check", "s.kdl", "--policy", "bad-policy.kdl"]);
    assert_eq!(code(&out), 2, "a broken policy is a usage error");
    assert!(stderr(&out).contains("E0502"), "{}", stderr(&out));
}

#[test]
fn five_output_formats() {
    let d = tempfile::tempdir().unwrap();
    let (specs, policy) = setup(d.path(), "exception \"prod-memory-cap\" vm=\"web\" reason=\"n/a\" owner=\"ops\" expires=\"2999-01-01\"\n");
    let run = |format: &str| stdout(&vmform_in(d.path(), &["check", &specs, "--policy", &policy, "--format", format]));

    let human = run("human");
    insta::assert_snapshot!("check-human", human);

    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(json["summary"]["error"], 1);
    insta::assert_snapshot!("check-json", serde_json::to_string_pretty(&json).unwrap());

    // SARIF 2.1.0: every structure the specification requires of a result we emit.
    let sarif: serde_json::Value = serde_json::from_str(&run("sarif")).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert!(sarif["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run0 = &sarif["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "vmform");
    let rules = run0["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["id"] == "prod-memory-cap"));
    for r in run0["results"].as_array().unwrap() {
        let id = r["ruleId"].as_str().unwrap();
        assert_eq!(rules[r["ruleIndex"].as_u64().unwrap() as usize]["id"], id, "ruleIndex points at its rule");
        assert!(["error", "warning", "note"].contains(&r["level"].as_str().unwrap()));
        assert!(!r["message"]["text"].as_str().unwrap().is_empty());
        let loc = &r["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "specs.kdl");
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1 && loc["region"]["startColumn"].as_u64().unwrap() >= 1);
    }
    let db = run0["results"].as_array().unwrap().iter().find(|r| r["ruleId"] == "prod-memory-cap").unwrap();
    assert_eq!(db["locations"][0]["physicalLocation"]["region"], serde_json::json!({"startLine": 5, "startColumn": 12}));
    insta::assert_snapshot!("check-sarif", serde_json::to_string_pretty(&sarif).unwrap().replace(env!("CARGO_PKG_VERSION"), "VERSION"));

    let gh = run("github");
    assert!(gh.contains("::error file=specs.kdl,line=5,col=12,title=vmform prod-memory-cap::shop-prod/db: prod VMs stay under 8Gi"), "{gh}");
    insta::assert_snapshot!("check-github", gh);

    let junit = run("junit");
    assert!(junit.starts_with("<?xml") && junit.contains("<failure type=\"error\" message=\"prod VMs stay under 8Gi\">"), "{junit}");
    insta::assert_snapshot!("check-junit", junit);
}
