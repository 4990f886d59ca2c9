//! Policy benchmark: every built-in rule on a 10,000-VM fleet.
//!
//! Reports the time of `policy::check` alone (compiling is measured by the `compile`
//! bench). Run: `cargo bench -p vmform-compiler --bench check`; figures are in
//! book/src/benchmarks.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use vmform_compiler::{compile, policy, Diagnostics, MemoryLoader, Options};


fn main() {
    let vms = 10_000;
    let mut s = String::new();
    for i in 0..vms {
        let ns = if i % 2 == 0 { "fleet-prod" } else { "fleet-dev" };
        s.push_str(&format!(
            "vm \"svc-{i}\" {{\n    namespace \"{ns}\"\n    labels app=\"svc\"\n    cpu sockets=1 cores=2\n    memory \"4Gi\"\n    disk \"root\" {{ image \"quay.io/containerdisks/fedora:41\"; boot-order 1 }}\n    disk \"data\" {{ volume size=\"20Gi\" storage-class=\"ssd\" access-mode=\"ReadWriteMany\" }}\n    network \"default\" masquerade=#true\n    port \"http\" 8080\n    eviction \"live-migrate\"\n    cloud-init {{ user-data \"#cloud-config\\npackages: [nginx]\\n\" }}\n}}\n"
        ));
    }
    let loader = MemoryLoader::new().with("fleet.kdl", s);
    let mut c = compile(&loader, &[PathBuf::from("fleet.kdl")], &Options { source_maps: true, ..Options::default() });
    assert!(!c.has_errors());
    let builtin = c.sources.add(policy::BUILTIN_PATH.into(), policy::BUILTIN.into());
    let mut diags = Diagnostics::default();
    let pol = policy::parse(&c.sources, &[], Some(builtin), &mut diags);
    let mut best = Duration::MAX;
    let mut findings = 0;
    for _ in 0..3 {
        let started = Instant::now();
        findings = policy::check(&pol, &c.objects, None, (2026, 11, 25), &mut diags).len();
        best = best.min(started.elapsed());
    }
    assert!(diags.is_empty(), "{:?}", diags.sorted());
    if std::env::var_os("BENCH_PER_RULE").is_some() {
        for r in pol.rules.iter().map(|r| r.id.clone()).collect::<Vec<_>>() {
            let started = Instant::now();
            policy::check(&pol, &c.objects, Some(std::slice::from_ref(&r)), (2026, 11, 25), &mut diags);
            println!("  {r}: {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
        }
        let started = Instant::now();
        for o in &c.objects {
            std::hint::black_box(cel::to_value(&o.object).unwrap());
        }
        println!("  cel::to_value alone, one thread: {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        for o in &c.objects {
            std::hint::black_box(serde_json::to_value(&o.object).unwrap());
        }
        println!("  serde_json::to_value alone, one thread: {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        policy::check(&pol, &c.objects, Some(&[]), (2026, 11, 25), &mut diags);
        println!("  (no rule: object conversion only): {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    }
    println!("check of {vms} VMs with {} built-in rules: {:.1} ms (best of 3), {findings} findings", pol.rules.len(), best.as_secs_f64() * 1000.0);
}
