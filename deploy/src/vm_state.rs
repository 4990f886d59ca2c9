//! What a VirtualMachine's status says while someone waits for it: the states it will not
//! leave by itself soon, so a wait can stop at once and say why rather than time out.

use serde_json::Value;

/// KubeVirt's printable statuses that need a change from someone (a fixed spec, a node
/// that fits, a reachable registry, a claim), or at least a long back-off, to move on.
pub const STUCK_STATES: &[&str] =
    &["CrashLoopBackOff", "ErrorUnschedulable", "DataVolumeError", "ErrorDataVolumeNotFound", "ErrorPvcNotFound", "ErrImagePull", "ImagePullBackOff"];

/// Conditions that say why, most telling first.
const WHY: &[&str] = &["Failure", "PodScheduled", "Synchronized", "DataVolumesReady", "Ready"];

/// A VM in a state it will not leave by itself soon, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub state: String,
    pub reason: String,
}

/// The VM's printable status (`status.printableStatus`), or "" before it has one.
pub fn printable_status(vm: &Value) -> &str {
    vm.pointer("/status/printableStatus").and_then(Value::as_str).unwrap_or("")
}

/// Whether the VM (a whole object) is stuck, and why.
pub fn stuck(vm: &Value) -> Option<Stuck> {
    let state = printable_status(vm);
    STUCK_STATES.contains(&state).then(|| Stuck { state: state.to_string(), reason: reason(vm).unwrap_or_else(|| "no condition says why".into()) })
}

/// Why the VM's last run failed, while that is what it is dealing with (its `Failure`
/// condition): a runner whose one run (`Once`) failed says so here.
pub fn failure(vm: &Value) -> Option<String> {
    let conditions = vm.pointer("/status/conditions")?.as_array()?;
    let failure = conditions.iter().find(|c| c["type"] == "Failure" && c["status"] == "True")?;
    failure["message"].as_str().filter(|m| !m.is_empty()).map(str::to_string)
}

fn reason(vm: &Value) -> Option<String> {
    let conditions = vm.pointer("/status/conditions")?.as_array()?;
    WHY.iter().find_map(|kind| {
        let condition = conditions.iter().find(|c| c["type"] == *kind)?;
        let failing = if *kind == "Failure" { condition["status"] == "True" } else { condition["status"] == "False" };
        let message = condition["message"].as_str().filter(|m| failing && !m.is_empty())?;
        Some(match condition["reason"].as_str().filter(|r| !r.is_empty()) {
            Some(reason) => format!("{reason}: {message}"),
            None => message.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_crash_loop_is_stuck_with_the_failure_that_caused_it() {
        let vm = json!({ "status": { "printableStatus": "CrashLoopBackOff", "conditions": [
            { "type": "Ready", "status": "False", "reason": "VMINotExists", "message": "VMI does not exist" },
            { "type": "Failure", "status": "True", "reason": "VMIFailed", "message": "the domain did not start: Cannot access storage file '/no/disk.img'" },
        ] } });
        assert_eq!(stuck(&vm), Some(Stuck { state: "CrashLoopBackOff".into(), reason: "VMIFailed: the domain did not start: Cannot access storage file '/no/disk.img'".into() }));
    }

    #[test]
    fn unschedulable_says_what_the_scheduler_said() {
        let vm = json!({ "status": { "printableStatus": "ErrorUnschedulable", "conditions": [
            { "type": "Ready", "status": "False", "reason": "GuestNotRunning", "message": "guest not running" },
            { "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient memory." },
        ] } });
        assert_eq!(stuck(&vm).unwrap().reason, "Unschedulable: 0/1 nodes are available: 1 Insufficient memory.");
    }

    #[test]
    fn states_that_move_on_by_themselves_are_not_stuck() {
        for state in ["", "Starting", "Provisioning", "Running", "Stopping", "Stopped", "Migrating", "WaitingForVolumeBinding"] {
            assert_eq!(stuck(&json!({ "status": { "printableStatus": state } })), None, "{state}");
        }
        assert_eq!(stuck(&json!({ "status": { "printableStatus": "DataVolumeError" } })).unwrap().reason, "no condition says why");
    }
}
