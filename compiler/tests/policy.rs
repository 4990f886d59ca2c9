//! Policy evaluation through the library: what the CLI tests cannot reach from specs.

use std::path::PathBuf;
use vmform_compiler::policy::{self, Level};
use vmform_compiler::{compile, Diagnostics, MemoryLoader, Options};


/// The compiler always pairs secure boot with SMM, so the rule's failing case is an object
/// changed by hand, as one from another tool could be.
#[test]
fn secure_boot_without_smm_is_denied() {
    let spec = "vm \"win\" {\n    namespace \"apps\"\n    memory \"4Gi\"\n    firmware \"efi\" secure-boot=#true\n}\n";
    let loader = MemoryLoader::new().with("w.kdl", spec);
    let mut c = compile(&loader, &[PathBuf::from("w.kdl")], &Options { source_maps: true, ..Options::default() });
    assert!(!c.has_errors());
    let builtin = c.sources.add(policy::BUILTIN_PATH.into(), policy::BUILTIN.into());
    let mut diags = Diagnostics::default();
    let pol = policy::parse(&c.sources, &[], Some(builtin), &mut diags);
    assert!(diags.is_empty(), "{:?}", diags.sorted());
    let only = vec!["secure-boot-needs-efi".to_string()];

    let clean = policy::check(&pol, &c.objects, Some(&only), (2026, 1, 1), &mut diags);
    assert!(clean.is_empty(), "{clean:?}");

    c.objects[0].object.spec.template.spec.domain.features = None;
    let found = policy::check(&pol, &c.objects, Some(&only), (2026, 1, 1), &mut diags);
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].rule.as_str(), found[0].level), ("secure-boot-needs-efi", Level::Error));
    assert!(found[0].span.is_some(), "points at the firmware node");
}

#[test]
fn globs() {
    assert!(policy::glob("*prod*", "shop-prod"));
    assert!(policy::glob("*prod*", "production"));
    assert!(!policy::glob("*prod*", "staging"));
    assert!(policy::glob("web-*", "web-0"));
    assert!(!policy::glob("web-*", "db-0"));
    assert!(policy::glob("db", "db") && !policy::glob("db", "db-1"));
    assert!(!policy::glob("a*a", "a"), "the two ends may not overlap");
}

fn parse_policy(text: &str) -> Vec<vmform_compiler::Code> {
    let mut sources = vmform_compiler::Sources::default();
    let id = sources.add("p.kdl".into(), text.into());
    let mut diags = Diagnostics::default();
    policy::parse(&sources, &[id], None, &mut diags);
    diags.sorted().iter().map(|d| d.code).collect()
}

#[test]
fn broken_policies_are_diagnostics_with_codes() {
    use vmform_compiler::Code;
    assert_eq!(parse_policy("rule \"r\" { deny \"object.(\" }\n"), [Code::BadCel]);
    assert_eq!(parse_policy("rule \"r\" severity=\"fatal\" { deny \"true\" }\n"), [Code::BadPolicy]);
    assert_eq!(parse_policy("rule \"r\" { description \"no deny\" }\n"), [Code::BadPolicy]);
    assert_eq!(parse_policy("rule \"r\" { deny \"true\" }\nexception \"r\" vm=\"db\"\n"), [Code::BadPolicy], "reason and owner are required");
    assert_eq!(parse_policy("rule \"r\" { deny \"true\" }\nexception \"r\" vm=\"db\" reason=\"x\" owner=\"y\" expires=\"soon\"\n"), [Code::BadPolicy]);
    assert_eq!(parse_policy("rule \"rr\" { deny \"true\" }\nexception \"r\" vm=\"db\" reason=\"x\" owner=\"y\"\n"), [Code::UnknownPolicyRule]);
    assert_eq!(parse_policy("rul \"r\" { deny \"true\" }\n"), [Code::UnknownNode]);
}
