//! What a VM's run strategy and its pending start/stop requests ask of its VMI: pure, so
//! every case is tested without a cluster. `vm.rs` reads the objects and carries it out.

use crate::kubevirt::{Phase, RunStrategy};

/// The VM's VMI, as far as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance<'a> {
    pub uid: &'a str,
    pub phase: Phase,
    pub deleting: bool,
}

/// One entry of `status.stateChangeRequests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Start,
    /// Stop the VMI with this uid (any VMI when `None`).
    Stop(Option<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Create a VMI from the template (there is none now).
    pub create: bool,
    /// Delete the current VMI (it is not being deleted yet).
    pub delete: bool,
    /// Queue a `Start` after the deletion: RerunOnFailure's way to run a failed VMI again.
    pub queue_start: bool,
    /// How many requests from the front of the queue are done.
    pub requests_done: usize,
}

/// What the VM's history says, besides its VMI and requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    /// A failed start waits for `status.startFailure.retryAfterTimestamp`.
    pub backing_off: bool,
    /// `status.runStrategy` is not the spec's yet: the VM is new, or was switched to this
    /// strategy (RerunOnFailure starts it then, and not after a clean shutdown).
    pub strategy_changed: bool,
}

/// KubeVirt's `syncRunStrategy` with the trimming of `stateChangeRequests`, in one step.
pub fn decide(strategy: RunStrategy, vmi: Option<Instance>, requests: &[Request], history: History) -> Decision {
    let mut decision = Decision::default();
    // Automatic starts wait out the back-off; so do requested ones of the strategies that
    // have one.
    let may_start = !history.backing_off || matches!(strategy, RunStrategy::Manual | RunStrategy::Halted);
    // Requests are served in order; one that cannot finish yet holds the rest.
    for request in requests {
        match request {
            Request::Stop(uid) => match vmi {
                Some(v) if uid.as_deref().is_none_or(|u| u == v.uid) => {
                    decision.delete = !v.deleting;
                    return decision;
                }
                // That VMI is gone (or was never this one): the stop is done.
                _ => decision.requests_done += 1,
            },
            Request::Start => match vmi {
                None => {
                    if may_start {
                        decision.create = true;
                        decision.requests_done += 1;
                    }
                    return decision;
                }
                Some(v) if v.phase.is_final() || v.deleting => {
                    // Clear the finished one first; the start is served once it is gone.
                    decision.delete = !v.deleting;
                    return decision;
                }
                Some(_) => decision.requests_done += 1,
            },
        }
    }
    match strategy {
        RunStrategy::Always => match vmi {
            None => decision.create = may_start,
            Some(v) if v.phase.is_final() => decision.delete = !v.deleting,
            Some(_) => {}
        },
        RunStrategy::RerunOnFailure => match vmi {
            None => decision.create = history.strategy_changed && may_start,
            // A guest that shut itself down stays down; a failure runs again.
            Some(v) if v.phase.is_final() && !v.deleting => {
                decision.delete = true;
                decision.queue_start = v.phase == Phase::Failed;
            }
            Some(_) => {}
        },
        // Once: a finished VMI is kept, so it never runs again by itself.
        RunStrategy::Once => decision.create = vmi.is_none() && may_start,
        // Manual: a finished VMI stays until a start or a delete.
        RunStrategy::Manual => {}
        RunStrategy::Halted => {
            if let Some(v) = vmi {
                decision.delete = !v.deleting;
            }
        }
    }
    decision
}

/// KubeVirt's `calculateStartBackoffTime` (max 300 s): 10 s × failures², plus up to
/// half of that again at random (`jitter` in 0..=1), at most 300 s.
pub fn start_backoff_seconds(consecutive_failures: u32, jitter: f64) -> u64 {
    let n = u64::from(consecutive_failures.min(100));
    let delay = 10 * n * n;
    let delay = delay + ((delay / 2) as f64 * jitter.clamp(0.0, 1.0)).round() as u64;
    delay.min(300)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(phase: Phase) -> Option<Instance<'static>> {
        Some(Instance { uid: "u1", phase, deleting: false })
    }
    const CREATE: Decision = Decision { create: true, delete: false, queue_start: false, requests_done: 0 };
    const DELETE: Decision = Decision { create: false, delete: true, queue_start: false, requests_done: 0 };
    const NOTHING: Decision = Decision { create: false, delete: false, queue_start: false, requests_done: 0 };
    const CALM: History = History { backing_off: false, strategy_changed: false };
    const BACKING_OFF: History = History { backing_off: true, strategy_changed: false };
    const NEW: History = History { backing_off: false, strategy_changed: true };

    #[test]
    fn always_keeps_one_running() {
        assert_eq!(decide(RunStrategy::Always, None, &[], CALM), CREATE);
        assert_eq!(decide(RunStrategy::Always, None, &[], BACKING_OFF), NOTHING);
        assert_eq!(decide(RunStrategy::Always, vmi(Phase::Running), &[], CALM), NOTHING);
        assert_eq!(decide(RunStrategy::Always, vmi(Phase::Succeeded), &[], CALM), DELETE);
        assert_eq!(decide(RunStrategy::Always, vmi(Phase::Failed), &[], CALM), DELETE);
    }

    #[test]
    fn rerun_on_failure_reruns_failures_only() {
        // New: started. A clean shutdown: cleared away, not restarted.
        assert_eq!(decide(RunStrategy::RerunOnFailure, None, &[], NEW), CREATE);
        assert_eq!(decide(RunStrategy::RerunOnFailure, vmi(Phase::Succeeded), &[], CALM), DELETE);
        assert_eq!(decide(RunStrategy::RerunOnFailure, None, &[], CALM), NOTHING);
        // A failure: cleared away with a start queued, which the next round serves.
        assert_eq!(decide(RunStrategy::RerunOnFailure, vmi(Phase::Failed), &[], CALM), Decision { queue_start: true, ..DELETE });
        assert_eq!(decide(RunStrategy::RerunOnFailure, None, &[Request::Start], CALM), Decision { requests_done: 1, ..CREATE });
        assert_eq!(decide(RunStrategy::RerunOnFailure, None, &[Request::Start], BACKING_OFF), NOTHING);
    }

    #[test]
    fn once_runs_once() {
        assert_eq!(decide(RunStrategy::Once, None, &[], CALM), CREATE);
        assert_eq!(decide(RunStrategy::Once, vmi(Phase::Failed), &[], CALM), NOTHING);
        assert_eq!(decide(RunStrategy::Once, vmi(Phase::Succeeded), &[], CALM), NOTHING);
    }

    #[test]
    fn manual_and_halted() {
        assert_eq!(decide(RunStrategy::Manual, None, &[], NEW), NOTHING);
        assert_eq!(decide(RunStrategy::Manual, vmi(Phase::Succeeded), &[], CALM), NOTHING);
        assert_eq!(decide(RunStrategy::Halted, vmi(Phase::Running), &[], CALM), DELETE);
        let deleting = Some(Instance { uid: "u1", phase: Phase::Running, deleting: true });
        assert_eq!(decide(RunStrategy::Halted, deleting, &[], CALM), NOTHING);
        assert_eq!(decide(RunStrategy::Halted, None, &[], CALM), NOTHING);
    }

    #[test]
    fn requests_are_served_in_order() {
        let restart = [Request::Stop(Some("u1".into())), Request::Start];
        // The stop holds the start until the old VMI is gone...
        assert_eq!(decide(RunStrategy::Manual, vmi(Phase::Running), &restart, CALM), DELETE);
        // ...then both finish: the stop is done and the start creates.
        assert_eq!(decide(RunStrategy::Manual, None, &restart, CALM), Decision { requests_done: 2, ..CREATE });
        // A stop for another (older) VMI does not touch the new one.
        let stale = [Request::Stop(Some("old".into()))];
        assert_eq!(decide(RunStrategy::Manual, vmi(Phase::Running), &stale, CALM), Decision { requests_done: 1, ..NOTHING });
        // A start while running is done at once; a start after a finished run clears it first.
        assert_eq!(decide(RunStrategy::Manual, vmi(Phase::Running), &[Request::Start], CALM), Decision { requests_done: 1, ..NOTHING });
        assert_eq!(decide(RunStrategy::Manual, vmi(Phase::Succeeded), &[Request::Start], CALM), DELETE);
        // A manual start is served even while backing off.
        assert_eq!(decide(RunStrategy::Manual, None, &[Request::Start], BACKING_OFF), Decision { requests_done: 1, ..CREATE });
    }

    #[test]
    fn backoff_grows_with_the_square_of_the_failures() {
        assert_eq!(start_backoff_seconds(1, 0.0), 10);
        assert_eq!(start_backoff_seconds(1, 1.0), 15);
        assert_eq!(start_backoff_seconds(2, 0.0), 40);
        assert_eq!(start_backoff_seconds(3, 1.0), 135);
        assert_eq!(start_backoff_seconds(5, 0.0), 250);
        assert_eq!(start_backoff_seconds(6, 0.0), 300);
        assert_eq!(start_backoff_seconds(1000, 1.0), 300);
    }
}
