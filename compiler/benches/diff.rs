//! Diff benchmark: two 10,000-VM fleets that differ in 1% of their VMs.
//!
//! Reports the time of `diff::diff` alone (compiling both sides is measured by the
//! `compile` bench). Run: `cargo bench -p vmform-compiler --bench diff`; figures are in
//! book/src/benchmarks.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use vmform_compiler::{compile, diff, MemoryLoader, Options};


/// `vms` explicit VMs; those with `i % 100 == 0` get `changed` applied.
fn fleet(vms: usize, changed: bool) -> MemoryLoader {
    let mut s = String::new();
    for i in 0..vms {
        let touched = changed && i % 100 == 0;
        let memory = if touched { "8Gi" } else { "4Gi" };
        let extra = if touched { " owner=\"team-b\"" } else { "" };
        s.push_str(&format!(
            "vm \"svc-{i}\" {{\n    namespace \"fleet\"\n    labels app=\"svc\"{extra}\n    cpu sockets=1 cores=2\n    memory \"{memory}\"\n    disk \"root\" {{ image \"quay.io/containerdisks/fedora:41\"; boot-order 1 }}\n    disk \"data\" {{ volume size=\"20Gi\" storage-class=\"ssd\" access-mode=\"ReadWriteMany\" }}\n    network \"default\" masquerade=#true\n    port \"http\" 8080\n    node-selector zone=\"a\"\n}}\n"
        ));
    }
    MemoryLoader::new().with("fleet.kdl", s)
}

fn main() {
    let vms = 10_000;
    let paths = [PathBuf::from("fleet.kdl")];
    let old = compile(&fleet(vms, false), &paths, &Options::default());
    let new = compile(&fleet(vms, true), &paths, &Options::default());
    assert!(!old.has_errors() && !new.has_errors());
    let mut best = Duration::MAX;
    let mut changed = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let changes = diff::diff(&old.objects, &new.objects);
        best = best.min(started.elapsed());
        changed = changes.len();
    }
    assert_eq!(changed, vms / 100);
    println!("diff of two {vms}-VM fleets, {changed} VMs changed: {:.1} ms (best of 5)", best.as_secs_f64() * 1000.0);
}
