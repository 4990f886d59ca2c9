//! What a field change does to a running VM, under KubeVirt's semantics.
//!
//! This is the one place the change-effect table lives; `specs/change-effects.md` is its
//! prose, and `compiler/tests/effects.rs` has a test per row. Rows are tried in order and
//! the first whose pattern matches the field's path wins. In a pattern, `*` matches one
//! path segment: a map key or a list item's name (`disks[*]`).

use serde::Serialize;
use serde_json::Value;

/// How disruptive a change is, from least to most; an object's effect is its worst field's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Metadata only: the guest never notices.
    None,
    /// Applied to the running guest, no restart.
    Live,
    /// Saved now, takes effect at the next restart (KubeVirt's RestartRequired).
    Restart,
    /// The object must be deleted and created again.
    Replace,
    /// Persistent data is destroyed.
    DataLoss,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::None => "none",
            Effect::Live => "live",
            Effect::Restart => "restart",
            Effect::Replace => "replace",
            Effect::DataLoss => "data-loss",
        }
    }
}

/// How a field changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Modified,
}

/// How a row decides the effect.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// Always this effect.
    Fixed(Effect),
    /// A quantity: growing is `grow`, shrinking is `shrink` (memory hotplug, volume expansion).
    BySize { grow: Effect, shrink: Effect },
    /// Removing the item is `removed`, anything else is `otherwise`.
    ByRemoval { removed: Effect, otherwise: Effect },
    /// A volume marked `hotpluggable` (on its dataVolume or persistentVolumeClaim) is
    /// attached or detached live; any other volume changes at the next restart.
    ByHotplug,
}

pub struct Row {
    pub pattern: &'static str,
    pub rule: Rule,
    pub reason: &'static str,
}

use Effect::*;
use Rule::*;

/// The change-effect table. Keep it in step with `specs/change-effects.md`.
pub const TABLE: &[Row] = &[
    Row { pattern: "metadata.labels.*", rule: Fixed(None), reason: "metadata only" },
    Row { pattern: "metadata.annotations.*", rule: Fixed(None), reason: "metadata only" },
    Row {
        pattern: "spec.template.metadata.labels.*",
        rule: Fixed(None),
        reason: "instance labels: the running guest is unaffected, the next instance gets them",
    },
    Row {
        pattern: "spec.template.metadata.annotations.*",
        rule: Fixed(None),
        reason: "instance annotations: the running guest is unaffected, the next instance gets them",
    },
    Row { pattern: "spec.runStrategy", rule: Fixed(Live), reason: "the controller starts or stops the VM at once" },
    Row {
        pattern: "spec.dataVolumeTemplates[*]",
        rule: ByRemoval { removed: DataLoss, otherwise: Restart },
        reason: "removing a data volume template deletes the volume; a new one attaches at the next restart",
    },
    Row {
        pattern: "spec.dataVolumeTemplates[*].spec.storage.resources.requests.storage",
        rule: BySize { grow: Live, shrink: DataLoss },
        reason: "volumes expand online; a volume cannot shrink without being recreated",
    },
    Row {
        pattern: "spec.dataVolumeTemplates[*].**",
        rule: Fixed(DataLoss),
        reason: "a data volume's source, class and access modes are fixed once it exists: it must be recreated",
    },
    Row {
        pattern: "spec.template.spec.domain.cpu.sockets",
        rule: Fixed(Live),
        reason: "CPU hotplug adds or removes sockets in a running guest (within maxSockets)",
    },
    Row {
        pattern: "spec.template.spec.domain.memory.guest",
        rule: BySize { grow: Live, shrink: Restart },
        reason: "memory hotplug grows a running guest (within maxGuest); shrinking needs a restart",
    },
    Row { pattern: "spec.template.spec.nodeSelector.*", rule: Fixed(Live), reason: "a live migration moves the VM to a matching node" },
    Row { pattern: "spec.template.spec.tolerations", rule: Fixed(Live), reason: "applied to the running VM" },
    Row {
        pattern: "spec.template.spec.volumes[*]",
        rule: ByHotplug,
        reason: "hotpluggable volumes attach and detach live; others change at the next restart",
    },
    Row {
        pattern: "spec.template.spec.domain.devices.disks[*]",
        rule: ByRemoval { removed: Restart, otherwise: Restart },
        reason: "disk devices change at the next restart",
    },
    Row {
        pattern: "spec.template.**",
        rule: Fixed(Restart),
        reason: "takes effect at the next restart (KubeVirt sets RestartRequired)",
    },
];

/// Classify one field change; `old` and `new` are the values before and after.
pub fn classify(path: &str, change: Change, old: Option<&Value>, new: Option<&Value>) -> (Effect, &'static str) {
    for row in TABLE {
        if !matches(row.pattern, path) {
            continue;
        }
        let effect = match row.rule {
            Fixed(e) => e,
            ByRemoval { removed, otherwise } => {
                if change == Change::Removed { removed } else { otherwise }
            }
            ByHotplug => {
                let hot = |v: Option<&Value>| {
                    v.is_some_and(|v| {
                        ["/dataVolume/hotpluggable", "/persistentVolumeClaim/hotpluggable"]
                            .iter()
                            .any(|p| v.pointer(p) == Some(&Value::Bool(true)))
                    })
                };
                if hot(old) || hot(new) { Live } else { Restart }
            }
            BySize { grow, shrink } => match (old.and_then(quantity_bytes), new.and_then(quantity_bytes)) {
                (Some(a), Some(b)) if b < a => shrink,
                (Some(_), Some(_)) => grow,
                // Set or unset: no size to compare, so the cautious choice.
                _ => shrink.max(grow),
            },
        };
        return (effect, row.reason);
    }
    (Restart, "not in the change-effect table: assumed to need a restart")
}

/// Whether `path` matches `pattern`: `*` is one segment (a key or `[name]`), a trailing
/// `**` any number of further segments (at least one).
pub fn matches(pattern: &str, path: &str) -> bool {
    let p = segments(pattern);
    let s = segments(path);
    if p.last() == Some(&"**") {
        let head = &p[..p.len() - 1];
        return s.len() > head.len() && head.iter().zip(&s).all(|(a, b)| seg_eq(a, b));
    }
    p.len() == s.len() && p.iter().zip(&s).all(|(a, b)| seg_eq(a, b))
}

fn seg_eq(pattern: &str, seg: &str) -> bool {
    pattern == "*" || pattern == seg || (pattern == "[*]" && seg.starts_with('['))
}

/// Split `a.b[x].c` into `a`, `b`, `[x]`, `c`; a key with dots is written `["k.io/x"]`.
pub fn segments(path: &str) -> Vec<&str> {
    let mut out = vec![];
    let bytes = path.as_bytes();
    let (mut i, mut start) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'.' => {
                if i > start {
                    out.push(&path[start..i]);
                }
                start = i + 1;
            }
            b'[' => {
                if i > start {
                    out.push(&path[start..i]);
                }
                let end = path[i..].find(']').map_or(path.len(), |e| i + e + 1);
                out.push(&path[i..end]);
                i = end;
                start = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if start < path.len() {
        out.push(&path[start..]);
    }
    out
}

fn quantity_bytes(v: &Value) -> Option<u128> {
    crate::values::parse_quantity(v.as_str()?).ok().map(|q| q.bytes)
}
