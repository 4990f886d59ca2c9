//! Live migration's figures (book/src/benchmarks.md): for a 256 MiB test guest on the two
//! nodes of `vmform up --nodes 2`, migrated back and forth (MIGRATIONS=5 by default), the
//! migration's total time and the guest's downtime from libvirt's completed job
//! statistics, and the wall time of `vmform vm migrate` from the request to Succeeded.
//!
//!   cargo bench --bench migration
//!   MAX_DOWNTIME_MS=900 cargo bench --bench migration   # under a MigrationPolicy with that limit
//!
//! Needs root (network namespaces), libvirt, QEMU and the test guest; runs under TCG.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{guest_disk, run as vmform, stdout};
use std::path::Path;
use std::time::{Duration, Instant};

/// kubectl's output, as the bench reads values with jsonpath.
fn kubectl(kubeconfig: &str, args: &[&str], input: Option<&str>) -> String {
    stdout(&common::kubectl(Path::new(kubeconfig), args, input))
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn summary(what: &str, unit: &str, values: &[f64]) {
    println!(
        "{what:<34} p50 {:>7.0} {unit}   min {:>7.0}   max {:>7.0}   (n={})",
        percentile(values, 0.5),
        percentile(values, 0.0),
        percentile(values, 1.0),
        values.len()
    );
}

fn main() {
    let disk = guest_disk();
    let n: usize = std::env::var("MIGRATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);

    let data = tempfile::Builder::new().prefix("vmfb").tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    let up = vmform(&["up", "--detach", "--nodes", "2", "--listen", "127.0.0.1:0", "--data-dir", &dir]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let kubeconfig = data.path().join("kubeconfig").display().to_string();
    let result = std::panic::catch_unwind(|| {
        let wait = |args: &[&str], want: &str, seconds: u64| {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            while kubectl(&kubeconfig, args, None) != want {
                assert!(Instant::now() < deadline, "{args:?} never became {want:?}");
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        for node in ["local-0", "local-1"] {
            wait(&["get", "node", node, "-o", "jsonpath={.status.conditions[0].status}"], "True", 90);
        }
        if let Ok(limit) = std::env::var("MAX_DOWNTIME_MS") {
            let policy = format!("apiVersion: migrations.kubevirt.io/v1alpha1\nkind: MigrationPolicy\nmetadata:\n  name: bench\nspec:\n  maxDowntimeMs: {limit}\n  selectors:\n    namespaceSelector: {{}}\n");
            kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&policy));
        }
        let project = tempfile::tempdir().unwrap();
        let spec = format!(
            "vm \"bench\" {{\n    namespace \"bench\"\n    run-strategy \"always\"\n    cpu 1\n    memory \"256Mi\"\n    disk \"root\" {{\n        host-disk \"{}\" type=\"disk\" shared=#true\n        bus \"virtio\"\n        read-only\n        boot-order 1\n    }}\n    cloud-init {{\n        user-data \"#cloud-config\\n#vmform-marker bench\\n\"\n    }}\n    network \"default\" masquerade=#true\n    port \"ssh\" 22\n}}\n",
            disk.display()
        );
        std::fs::write(project.path().join("vms.kdl"), spec).unwrap();
        let applied = vmform(&["apply", "--auto-approve", "--kubeconfig", &kubeconfig, project.path().to_str().unwrap()]);
        assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
        wait(&["get", "vmi", "bench", "-n", "bench", "-o", "jsonpath={.status.conditions[?(@.type==\"LiveMigratable\")].status}"], "True", 180);
        // Let it boot: a migration of a booting guest measures the boot.
        std::thread::sleep(Duration::from_secs(20));

        let (mut total, mut downtime, mut wall) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let started = Instant::now();
            let out = vmform(&["vm", "migrate", "bench", "-n", "bench", "--kubeconfig", &kubeconfig]);
            let took = started.elapsed();
            assert!(out.status.success(), "migration {i}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let name = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(2).unwrap().to_string();
            let stats = kubectl(&kubeconfig, &["get", "vmim", &name, "-n", "bench", "-o", "jsonpath={.metadata.annotations.vmform\\.io/migration-stats}"], None);
            let stats: serde_json::Value = serde_json::from_str(&stats).expect("the migration's statistics");
            let (t, d) = (stats["timeElapsedMs"].as_f64().unwrap(), stats["downtimeMs"].as_f64().unwrap());
            println!("migration {}: job {t:.0} ms, downtime {d:.0} ms, vmform vm migrate {:.2} s", i + 1, took.as_secs_f64());
            total.push(t);
            downtime.push(d);
            wall.push(took.as_secs_f64() * 1000.0);
            std::thread::sleep(Duration::from_secs(2));
        }
        println!();
        summary("total (libvirt's job time)", "ms", &total);
        summary("downtime (libvirt's)", "ms", &downtime);
        summary("vmform vm migrate, request to end", "ms", &wall);
    });
    vmform(&["down", "--data-dir", &dir]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
