//! Whether a VMI can live-migrate: KubeVirt's `LiveMigratable` condition, with its reasons
//! and messages, for what the local runtime can have. The nodes of one machine share its
//! data dir, so shared host disks and ReadWriteMany claims move; a claim only one node may
//! write (ReadWriteOnce), or whose access modes are unknown, does not.

use serde_json::Value;
use std::path::Path;

/// KubeVirt's reason for disks that cannot move.
pub const DISKS_NOT_MIGRATABLE: &str = "DisksNotLiveMigratable";
/// KubeVirt's reason for a CPU model that cannot move.
pub const CPU_MODE_NOT_MIGRATABLE: &str = "CPUModeLiveMigratable";

/// `Ok` when the VMI can live-migrate, else KubeVirt's reason and message.
/// `volumes_dir`: where the local runtime keeps claims and their access modes;
/// `same_host_peer`: whether another node runs on this node's host (a host-passthrough
/// CPU moves only there: a CPU of another host may lack its features).
pub fn check(namespace: &str, spec: &Value, volumes_dir: &Path, same_host_peer: bool) -> Result<(), (&'static str, String)> {
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let claim = volume.pointer("/persistentVolumeClaim/claimName").or_else(|| volume.pointer("/dataVolume/name")).and_then(Value::as_str);
        if let Some(claim) = claim {
            let record = std::fs::read(crate::volumes::access_modes_path(volumes_dir, namespace, claim)).ok();
            let modes: Option<Vec<String>> = record.and_then(|r| serde_json::from_slice::<Value>(&r).ok()).and_then(|v| serde_json::from_value(v["accessModes"].clone()).ok());
            match modes {
                None => {
                    return Err((
                        DISKS_NOT_MIGRATABLE,
                        format!("cannot migrate VMI: Unable to determine if PVC {claim} is shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)"),
                    ));
                }
                Some(modes) if !modes.iter().any(|m| m == "ReadWriteMany") => {
                    return Err((
                        DISKS_NOT_MIGRATABLE,
                        format!("cannot migrate VMI: PVC {claim} is not shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)"),
                    ));
                }
                Some(_) => {}
            }
        } else if volume.get("hostDisk").is_some() && volume.pointer("/hostDisk/shared").and_then(Value::as_bool) != Some(true) {
            return Err((DISKS_NOT_MIGRATABLE, "cannot migrate VMI with non-shared HostDisk".to_string()));
        }
    }
    if crate::kubevirt::host_passthrough(spec) && !same_host_peer {
        return Err((
            CPU_MODE_NOT_MIGRATABLE,
            "cannot migrate VMI: it uses CPU model host-passthrough, which moves only between nodes of one host, and no other node runs on its host".to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(dir: &Path, claim: &str, modes: &[&str]) {
        let path = crate::volumes::access_modes_path(dir, "ns", claim);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec(&json!({ "accessModes": modes })).unwrap()).unwrap();
    }

    #[test]
    fn shared_storage_moves_and_single_node_storage_does_not() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), "shared", &["ReadWriteMany"]);
        record(dir.path(), "single", &["ReadWriteOnce"]);
        let spec = |volumes: Value| json!({ "volumes": volumes });
        let ok = spec(json!([
            { "name": "a", "dataVolume": { "name": "shared" } },
            { "name": "b", "hostDisk": { "path": "/x.img", "type": "Disk", "shared": true } },
            { "name": "c", "cloudInitNoCloud": { "userData": "#" } },
            { "name": "d", "emptyDisk": { "capacity": "1Gi" } },
        ]));
        assert_eq!(check("ns", &ok, dir.path(), false), Ok(()));
        let rwo = spec(json!([{ "name": "a", "persistentVolumeClaim": { "claimName": "single" } }]));
        assert_eq!(
            check("ns", &rwo, dir.path(), true),
            Err((DISKS_NOT_MIGRATABLE, "cannot migrate VMI: PVC single is not shared, live migration requires that all PVCs must be shared (using ReadWriteMany access mode)".into()))
        );
        let unknown = spec(json!([{ "name": "a", "persistentVolumeClaim": { "claimName": "handmade" } }]));
        assert!(check("ns", &unknown, dir.path(), true).unwrap_err().1.contains("Unable to determine if PVC handmade is shared"));
        let host = spec(json!([{ "name": "a", "hostDisk": { "path": "/x.img", "type": "Disk" } }]));
        assert_eq!(check("ns", &host, dir.path(), true), Err((DISKS_NOT_MIGRATABLE, "cannot migrate VMI with non-shared HostDisk".into())));
    }

    #[test]
    fn a_host_passthrough_cpu_moves_only_to_a_node_of_the_same_host() {
        let dir = tempfile::tempdir().unwrap();
        let spec = json!({ "domain": { "cpu": { "model": "host-passthrough" } }, "volumes": [] });
        assert_eq!(check("ns", &spec, dir.path(), true), Ok(()));
        let (reason, message) = check("ns", &spec, dir.path(), false).unwrap_err();
        assert_eq!(reason, CPU_MODE_NOT_MIGRATABLE);
        assert!(message.contains("host-passthrough"), "{message}");
        let named = json!({ "domain": { "cpu": { "model": "Haswell" } }, "volumes": [] });
        assert_eq!(check("ns", &named, dir.path(), false), Ok(()));
    }
}
