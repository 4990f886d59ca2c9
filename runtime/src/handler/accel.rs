//! The node's accelerator: chosen once at start (`--accel`, the probe), shown on the
//! Node, and turned to TCG for good when a guest fails under KVM with a KVM-level error
//! although the probe passed (the fallback).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use super::HandlerConfig;
use crate::accel::{self, Accel, AccelChoice, Verdict};
use crate::kubevirt;

/// What the handler is told about acceleration.
#[derive(Debug, Clone)]
pub struct AccelConfig {
    pub choice: AccelChoice,
    /// The QEMU binary guests (and the probe) run in; `None`: libvirt's default.
    pub emulator: Option<PathBuf>,
    pub probe_timeout: Duration,
    /// Say KVM without the probe. A test hook: it lets every host exercise the fallback.
    pub trust_kvm: bool,
}

impl Default for AccelConfig {
    fn default() -> AccelConfig {
        AccelConfig { choice: AccelChoice::Auto, emulator: None, probe_timeout: accel::DEFAULT_PROBE_TIMEOUT, trust_kvm: false }
    }
}

impl AccelConfig {
    /// The flags that give a handler (or a detached `vmform up`) this configuration.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> =
            vec!["--accel".into(), self.choice.as_str().into(), "--accel-probe-timeout".into(), format!("{}s", self.probe_timeout.as_secs().max(1)).into()];
        if let Some(emulator) = &self.emulator {
            args.extend(["--emulator".into(), emulator.into()]);
        }
        if self.trust_kvm {
            args.push("--trust-kvm".into());
        }
        args
    }
}

/// The file that keeps a fallback across handler restarts, until the host reboots: a
/// probe on a half-working host can pass one time and not the next.
const FALLBACK_FILE: &str = "accel-fallback";

/// Decide the node's accelerator (blocking: the probe runs a guest).
pub(super) fn choose(config: &HandlerConfig, libvirt_uri: &str) -> Verdict {
    let accel = &config.accel;
    match accel.choice {
        AccelChoice::Tcg => return Verdict::new(Accel::Tcg, "chosen with --accel tcg"),
        AccelChoice::Auto => {
            if let Some(reason) = read_fallback(&config.node_dir) {
                return Verdict::new(Accel::Tcg, reason);
            }
        }
        AccelChoice::Kvm => {}
    }
    if accel.trust_kvm {
        return Verdict::new(Accel::Kvm, "taken on trust (--trust-kvm), not proven");
    }
    probe(config, libvirt_uri)
}

fn probe(config: &HandlerConfig, libvirt_uri: &str) -> Verdict {
    if !crate::libvirt::LINKED {
        return Verdict::new(Accel::Tcg, crate::libvirt::NOT_LINKED);
    }
    let qemu_log_dir = crate::libvirt::daemon::qemu_log_dir(&config.node_dir);
    let dir = config.node_dir.join("accel-probe");
    let target = accel::ProbeTarget { libvirt_uri, dir: &dir, emulator: config.accel.emulator.as_deref(), qemu_log_dir: Some(&qemu_log_dir) };
    accel::probe(&target, config.accel.probe_timeout)
}

/// Whether a launcher's failure shows that KVM itself failed, and so the node should turn
/// to TCG: the launcher ran under KVM, the node may fall back (`--accel auto`), and its
/// message has a KVM-level error. Returns that error's line.
pub(super) fn fallback_cause<'a>(choice: AccelChoice, launcher_accel: &str, exit_kind: &str, message: &'a str) -> Option<&'a str> {
    let failed = matches!(exit_kind, "Failed" | "Crashed");
    (choice == AccelChoice::Auto && launcher_accel == Accel::Kvm.as_str() && failed).then(|| accel::kvm_failure(message)).flatten()
}

/// Turn the node to TCG: remembered in the node dir, shown on the Node and as an Event.
pub(super) async fn fall_back(client: &Client, node_dir: &Path, node: &str, vmi: &str, cause: &str) -> Verdict {
    let verdict = Verdict::new(Accel::Tcg, format!("guest {vmi} failed under KVM ({cause}); guests run under TCG from now on"));
    tracing::warn!("node {node}: {}", verdict.reason);
    let boot = boot_id();
    if let Err(e) = crate::files::write_atomically(&node_dir.join(FALLBACK_FILE), format!("{boot}\n{}\n", verdict.reason).as_bytes(), 0o644) {
        tracing::warn!("node {node}: cannot record the fallback to TCG: {e}");
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({ "metadata": { "annotations": { accel::ACCEL_ANNOTATION: verdict.accel.as_str(), accel::ACCEL_REASON_ANNOTATION: verdict.reason } } });
    if let Err(e) = nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
        tracing::warn!("node {node}: cannot record the fallback to TCG on the Node: {e}");
    }
    if let Err(e) = record_event(client, node, "AcceleratorFallback", &verdict.reason).await {
        tracing::warn!("node {node}: cannot record the fallback event: {e}");
    }
    verdict
}

/// A Warning Event about the node, where `kubectl describe node` and `kubectl get events`
/// show it (Node events live in `default`, as the kubelet's do).
async fn record_event(client: &Client, node: &str, reason: &str, message: &str) -> Result<(), kube::Error> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let now = kubevirt::now();
    let event: Event = serde_json::from_value(json!({
        "metadata": { "generateName": format!("{node}.") },
        "involvedObject": { "apiVersion": "v1", "kind": "Node", "name": node, "uid": node },
        "reason": reason,
        "message": message,
        "type": "Warning",
        "source": { "component": "vmform-handler", "host": node },
        "reportingComponent": "vmform-handler",
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }))
    .expect("an Event deserialises");
    events.create(&PostParams::default(), &event).await.map(|_| ())
}

/// A fallback recorded since this host booted.
fn read_fallback(node_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(node_dir.join(FALLBACK_FILE)).ok()?;
    let (boot, reason) = text.split_once('\n')?;
    (boot == boot_id()).then(|| reason.trim().to_string())
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_kvm_failure_of_a_kvm_guest_on_an_auto_node_falls_back() {
        let msr = "the domain did not start: internal error: qemu unexpectedly closed the monitor: qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69";
        assert_eq!(fallback_cause(AccelChoice::Auto, "kvm", "Failed", msr), Some("error: failed to set MSR 0x10a to 0x69"));
        assert_eq!(fallback_cause(AccelChoice::Auto, "kvm", "Crashed", "a guest stopped: KVM internal error. Suberror: 1"), Some("a guest stopped: KVM internal error. Suberror: 1"));
        // Asked for KVM and nothing else: the guest fails, the node stays as asked.
        assert_eq!(fallback_cause(AccelChoice::Kvm, "kvm", "Failed", msr), None);
        // Already under TCG, or the guest's own failure, or a clean stop.
        assert_eq!(fallback_cause(AccelChoice::Auto, "tcg", "Failed", msr), None);
        assert_eq!(fallback_cause(AccelChoice::Auto, "kvm", "Failed", "the domain did not start: Cannot access storage file '/x.img'"), None);
        assert_eq!(fallback_cause(AccelChoice::Auto, "kvm", "Shutdown", msr), None);
    }

    #[test]
    fn a_fallback_lasts_until_the_host_reboots() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_fallback(dir.path()), None);
        std::fs::write(dir.path().join(FALLBACK_FILE), format!("{}\nguest x failed under KVM\n", boot_id())).unwrap();
        assert_eq!(read_fallback(dir.path()).as_deref(), Some("guest x failed under KVM"));
        std::fs::write(dir.path().join(FALLBACK_FILE), "another-boot\nguest x failed under KVM\n").unwrap();
        assert_eq!(read_fallback(dir.path()), None);
    }
}
