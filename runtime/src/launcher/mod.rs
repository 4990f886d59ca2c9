//! The launcher: one process per VMI, modelled on KubeVirt's virt-launcher. It reads the
//! VMI from its dir, prepares the disks, defines and starts the libvirt domain, watches
//! it until it stops, and reports through `status.json` and its exit code
//! (specs/runtime-contract.md).
//!
//! [`domain`] (VMI → domain XML) and [`seed`] (the cloud-init disk) are plain code;
//! [`supervise`] and [`migrate`] reach libvirt through [`crate::libvirt`] only. Layers:
//! `supervise` → `migrate` → `session` → `mod` (files and types).

pub mod domain;
mod migrate;
pub mod seed;
mod session;
mod supervise;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::accel::Accel;
use crate::Error;
use domain::{ForwardedPort, Prepare};

/// What `vmform runtime launcher` is given.
#[derive(Debug, Clone)]
pub struct LauncherArgs {
    /// `<data>/nodes/<node>/vmis/<uid>`: holds `vmi.json`; the launcher writes the rest.
    pub vmi_dir: PathBuf,
    /// The node's libvirtd, e.g. `qemu+unix:///system?socket=…`.
    pub libvirt_uri: String,
    /// `<data>/volumes`: PVCs and DataVolumes are `<namespace>/<claim>.img` in it.
    pub volumes_dir: PathBuf,
    pub accel: Accel,
    /// `--emulator PATH`: the QEMU binary guests run in; `None`: libvirt's default.
    pub emulator: Option<PathBuf>,
    /// `--incoming MIGRATION_UID`: receive the guest of a live migration instead of
    /// starting it (the target side; specs/runtime-contract.md).
    pub incoming: Option<String>,
}

impl LauncherArgs {
    /// `--vmi-dir DIR --libvirt-uri URI --volumes-dir DIR [--accel kvm|tcg] [--emulator PATH] [--incoming UID]`,
    /// as the handler passes them (the small `vmform-launcher` binary has no CLI library).
    pub fn from_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<LauncherArgs, Error> {
        let usage = |message: String| Error::Usage(message);
        let (mut vmi_dir, mut libvirt_uri, mut volumes_dir, mut accel, mut emulator, mut incoming) = (None, None, None, Accel::Tcg, None, None);
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let flag = flag.to_string_lossy().into_owned();
            let value = args.next().ok_or_else(|| usage(format!("{flag} needs a value")))?;
            match flag.as_str() {
                "--vmi-dir" => vmi_dir = Some(PathBuf::from(value)),
                "--volumes-dir" => volumes_dir = Some(PathBuf::from(value)),
                "--libvirt-uri" => libvirt_uri = Some(value.to_string_lossy().into_owned()),
                "--accel" => accel = value.to_string_lossy().parse().map_err(|e| usage(format!("--accel: {e}")))?,
                "--emulator" => emulator = Some(PathBuf::from(value)),
                "--incoming" => incoming = Some(value.to_string_lossy().into_owned()),
                other => return Err(usage(format!("unknown flag {other}"))),
            }
        }
        Ok(LauncherArgs {
            vmi_dir: vmi_dir.ok_or_else(|| usage("--vmi-dir is required".into()))?,
            libvirt_uri: libvirt_uri.ok_or_else(|| usage("--libvirt-uri is required".into()))?,
            volumes_dir: volumes_dir.ok_or_else(|| usage("--volumes-dir is required".into()))?,
            accel,
            emulator,
            incoming,
        })
    }
}

/// How the guest ended (the `exit.kind` of `status.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitKind {
    /// The guest powered off, from inside or after the ACPI request on SIGTERM.
    Shutdown,
    /// SIGTERM, and the guest was still up after the grace period: destroyed.
    ForcedOff,
    /// QEMU died or the domain crashed.
    Crashed,
    /// The domain could not be defined or started.
    Failed,
    /// The guest live-migrated to another node and runs there now.
    Migrated,
    /// A containerDisk's image could not be pulled (KubeVirt's `ErrImagePull`).
    ImagePull,
}

impl ExitKind {
    pub const ALL: [ExitKind; 6] = [ExitKind::Shutdown, ExitKind::ForcedOff, ExitKind::Crashed, ExitKind::Failed, ExitKind::Migrated, ExitKind::ImagePull];

    /// The launcher's exit code (specs/runtime-contract.md).
    pub fn code(self) -> i32 {
        match self {
            ExitKind::Shutdown => 0,
            ExitKind::ForcedOff => 10,
            ExitKind::Crashed => 11,
            ExitKind::Failed => 12,
            ExitKind::Migrated => 13,
            ExitKind::ImagePull => 14,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExitKind::Shutdown => "Shutdown",
            ExitKind::ForcedOff => "ForcedOff",
            ExitKind::Crashed => "Crashed",
            ExitKind::Failed => "Failed",
            ExitKind::Migrated => "Migrated",
            ExitKind::ImagePull => "ImagePull",
        }
    }

    /// The inverse of [`ExitKind::code`].
    pub fn from_code(code: i32) -> Option<ExitKind> {
        ExitKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// What [`run`] returns: the kind, and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LauncherExit {
    pub kind: ExitKind,
    pub message: String,
}

impl LauncherExit {
    pub fn new(kind: ExitKind, message: impl Into<String>) -> LauncherExit {
        LauncherExit { kind, message: message.into() }
    }

    /// The process exit code: 0, 10, 11, 12 or 13.
    pub fn code(&self) -> i32 {
        self.kind.code()
    }
}

/// `status.json`'s phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LauncherPhase {
    Starting,
    /// A receiving launcher (`--incoming`): the target domain is defined and waits for
    /// the guest to arrive.
    Receiving,
    Running,
    ShuttingDown,
    Stopped,
}

/// `status.json`, rewritten atomically on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub phase: LauncherPhase,
    pub domain: String,
    pub accel: String,
    pub message: String,
    pub ports: Vec<ForwardedPort>,
    pub exit: Option<LauncherExit>,
    /// The live migration this launcher takes part in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationReport>,
    pub updated: String,
}

/// `migrate.json`: the handler asks the source launcher to live-migrate its guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct MigrateRequest {
    /// The VirtualMachineInstanceMigration's uid: a launcher does each one at most once.
    pub migration_uid: String,
    /// The target node's libvirt: `qemu+tcp://ADDR/system`.
    pub dest_uri: String,
    /// Where QEMU sends the guest: `tcp://ADDR`.
    pub migrate_uri: String,
    /// MiB/s; 0: no limit (KubeVirt's `bandwidthPerMigration`).
    pub bandwidth_mib: u64,
    /// Abort when not done after this many seconds (KubeVirt's `completionTimeoutPerGiB`
    /// times the guest's size); 0: no limit.
    pub completion_timeout_seconds: u64,
    /// Source and target see the same files (the nodes of one machine): libvirt's check
    /// for shared storage, which cannot tell, is skipped.
    pub shared_storage: bool,
    pub allow_auto_converge: bool,
    /// The longest the guest may be paused at the switch-over; 0: QEMU's default.
    pub max_downtime_ms: u64,
    /// The target node's name, for messages.
    pub target_node: String,
}

/// Which side of a migration a launcher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Role {
    #[default]
    Source,
    Target,
}

/// How far a launcher's migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MigrationProgress {
    #[default]
    Running,
    /// The guest runs on the target now.
    Completed,
    /// The guest stays on the source: libvirt gave up.
    Failed,
    /// The guest stays on the source: the migration was aborted (asked, or timed out).
    Aborted,
}

/// `status.json`'s `migration`: the launcher's side of one live migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct MigrationReport {
    pub uid: String,
    pub role: Role,
    pub state: MigrationProgress,
    pub message: String,
    /// Bytes sent so far and still to send (libvirt's job statistics), while it runs.
    pub data_processed: u64,
    pub data_remaining: u64,
    /// Of the completed job (libvirt's statistics, read on the target): milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_elapsed_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
}

pub const VMI_FILE: &str = "vmi.json";
pub const PID_FILE: &str = "launcher.pid";
pub const STATUS_FILE: &str = "status.json";
pub const CONSOLE_FILE: &str = "console.log";
pub const DOMAIN_XML_FILE: &str = "domain.xml";
pub const DISKS_DIR: &str = "disks";
/// The handler's migration request to the source launcher ([`MigrateRequest`]).
pub const MIGRATE_FILE: &str = "migrate.json";
/// The handler asks the source launcher to abort the migration whose uid it holds.
pub const MIGRATE_ABORT_FILE: &str = "migrate-abort";

/// Read a VMI dir's `status.json`.
pub fn read_status(vmi_dir: &Path) -> io::Result<Status> {
    let bytes = std::fs::read(vmi_dir.join(STATUS_FILE))?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Write a VMI dir's `status.json` atomically, stamping `updated`.
pub fn write_status(vmi_dir: &Path, status: &mut Status) -> io::Result<()> {
    status.updated = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut bytes = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    bytes.push(b'\n');
    crate::files::write_atomically(&vmi_dir.join(STATUS_FILE), &bytes, 0o644)
}

/// Make the files of a plan ready, in order. The message names the volume and the path;
/// an image that could not be pulled is told apart ([`Error::Prepare`]'s `image_pull`), as
/// KubeVirt tells `ErrImagePull` from other failures.
pub fn prepare(items: &[Prepare]) -> Result<(), Error> {
    for item in items {
        match item {
            Prepare::Existing { volume, path } => match std::fs::metadata(path) {
                Ok(m) if m.is_file() || is_block_device(&m) => {}
                Ok(_) => return Err(Error::prepare(format!("volume \"{volume}\": {} is not a file", path.display()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::prepare(format!("volume \"{volume}\": disk image {} does not exist", path.display())));
                }
                Err(e) => return Err(Error::prepare(format!("volume \"{volume}\": cannot read {}: {e}", path.display()))),
            },
            Prepare::Sparse { volume, path, size } => {
                if path.exists() {
                    continue;
                }
                let made = (|| {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
                    f.set_len(*size)
                })();
                made.map_err(|e| Error::prepare(format!("volume \"{volume}\": cannot create {}: {e}", path.display())))?;
            }
            Prepare::CloudInitSeed { volume, path, user_data, meta_data, network_data } => {
                let made = (|| {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    seed::write_seed(path, user_data, meta_data, network_data.as_deref())
                })();
                made.map_err(|e| Error::prepare(format!("volume \"{volume}\": cannot write the cloud-init seed {}: {e}", path.display())))?;
            }
            Prepare::ContainerDisk { volume, image, disk_path, policy, cache_dir, overlay } => {
                container_disk(image, disk_path.as_deref(), policy.as_deref(), cache_dir, overlay)
                    .map_err(|e| Error::Prepare { image_pull: e.is_image_pull(), message: format!("volume \"{volume}\": {e}") })?;
            }
        }
    }
    Ok(())
}

/// Pull a containerDisk's image into the node's cache (or find it there, by its pull
/// policy), then put a fresh qcow2 overlay on its disk: the guest writes there, and loses
/// it at the next start, as KubeVirt's containerDisk promises.
fn container_disk(image: &str, disk_path: Option<&str>, policy: Option<&str>, cache_dir: &Path, overlay: &Path) -> Result<(), Error> {
    let mut request = crate::images::PullRequest::new(image, cache_dir);
    request.policy = policy.and_then(crate::images::PullPolicy::parse);
    request.disk_path = disk_path.map(str::to_string);
    let pulled = crate::images::pull_blocking(&request).map_err(|e| Error::Prepare { image_pull: true, message: e.to_string() })?;
    if let Some(dir) = overlay.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::prepare(format!("cannot create {}: {e}", dir.display())))?;
    }
    let _ = std::fs::remove_file(overlay);
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", pulled.format.as_str(), "-b"])
        .arg(&pulled.disk)
        .arg(overlay)
        .output()
        .map_err(|e| Error::prepare(format!("cannot run qemu-img (install qemu-utils): {e}")))?;
    if !out.status.success() {
        return Err(Error::prepare(format!("cannot make the overlay {} on {}: {}", overlay.display(), pulled.disk.display(), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

fn is_block_device(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    m.file_type().is_block_device()
}

/// A free port on `ip` inside the network namespace `netns` (`/run/netns/NAME`), where the
/// node's QEMU binds its forwarded ports: checked from a thread that joins that namespace
/// for the check (setns moves only the calling thread) and then ends. `port` 0: any;
/// another: that one, if it is free.
pub fn free_port_in(netns: &str, ip: std::net::Ipv4Addr, port: u16, protocol: &str) -> io::Result<u16> {
    let (path, udp) = (format!("/run/netns/{netns}"), protocol.eq_ignore_ascii_case("UDP"));
    std::thread::spawn(move || -> io::Result<u16> {
        use std::os::fd::AsRawFd;
        let ns = std::fs::File::open(&path)?;
        // SAFETY: setns on an open namespace file; it affects this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if udp {
            Ok(std::net::UdpSocket::bind((ip, port))?.local_addr()?.port())
        } else {
            Ok(std::net::TcpListener::bind((ip, port))?.local_addr()?.port())
        }
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("the port check panicked")))
}

/// A free port on 127.0.0.1 for `TCP` or `UDP`: bound, read, released (QEMU binds it a
/// moment later).
pub fn free_host_port(protocol: &str) -> io::Result<u16> {
    if protocol.eq_ignore_ascii_case("udp") {
        Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
    } else {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }
}

/// Run a VMI to its end (blocking). Writes `launcher.pid` and `status.json` in the VMI
/// dir; SIGTERM asks the guest to shut down. Returns how it ended; the process should
/// exit with [`LauncherExit::code`].
pub fn run(args: LauncherArgs) -> LauncherExit {
    if !crate::libvirt::LINKED {
        return LauncherExit::new(ExitKind::Failed, format!("{} (feature `libvirt` of vmform-runtime)", crate::libvirt::NOT_LINKED));
    }
    supervise::run(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_small_binary_reads_the_handlers_flags() {
        let args = |list: &[&str]| LauncherArgs::from_args(list.iter().map(std::ffi::OsString::from));
        let parsed = args(&["--vmi-dir", "/d", "--libvirt-uri", "qemu:///x", "--volumes-dir", "/v", "--accel", "kvm"]).unwrap();
        assert_eq!((parsed.vmi_dir, parsed.libvirt_uri.as_str(), parsed.volumes_dir, parsed.accel), (PathBuf::from("/d"), "qemu:///x", PathBuf::from("/v"), Accel::Kvm));
        let plain = args(&["--vmi-dir", "/d", "--libvirt-uri", "u", "--volumes-dir", "/v"]).unwrap();
        assert_eq!((plain.accel, plain.incoming), (Accel::Tcg, None));
        let receiving = args(&["--vmi-dir", "/d", "--libvirt-uri", "u", "--volumes-dir", "/v", "--incoming", "m-1"]).unwrap();
        assert_eq!(receiving.incoming.as_deref(), Some("m-1"));
        assert!(args(&["--vmi-dir", "/d"]).unwrap_err().to_string().contains("--libvirt-uri"));
        assert!(args(&["--vmi-dir"]).unwrap_err().to_string().contains("needs a value"));
        assert!(args(&["--bogus", "1"]).unwrap_err().to_string().contains("unknown flag"));
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(LauncherExit::new(ExitKind::Shutdown, "").code(), 0);
        assert_eq!(LauncherExit::new(ExitKind::ForcedOff, "").code(), 10);
        assert_eq!(LauncherExit::new(ExitKind::Crashed, "").code(), 11);
        assert_eq!(LauncherExit::new(ExitKind::Failed, "").code(), 12);
        assert_eq!(LauncherExit::new(ExitKind::Migrated, "").code(), 13);
        for k in ExitKind::ALL {
            assert_eq!(ExitKind::from_code(k.code()), Some(k));
        }
    }

    #[test]
    fn status_json_has_the_contract_shape() {
        let dir = tempfile::tempdir().unwrap();
        let mut status = Status {
            phase: LauncherPhase::Stopped,
            domain: "default_vm".into(),
            accel: "tcg".into(),
            message: "done".into(),
            ports: vec![ForwardedPort {
                name: Some("http".into()),
                protocol: "TCP".into(),
                port: 80,
                host_ip: "127.0.0.1".into(),
                host_port: 40123,
            }],
            exit: Some(LauncherExit::new(ExitKind::ForcedOff, "destroyed")),
            migration: None,
            updated: String::new(),
        };
        write_status(dir.path(), &mut status).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("status.json")).unwrap()).unwrap();
        assert_eq!(v["phase"], "Stopped");
        assert_eq!(v["ports"][0]["hostIP"], "127.0.0.1");
        assert_eq!(v["ports"][0]["hostPort"], 40123);
        assert_eq!(v["exit"]["kind"], "ForcedOff");
        assert_eq!(v["exit"]["message"], "destroyed");
        assert!(v["updated"].as_str().unwrap().ends_with('Z'));
        assert_eq!(read_status(dir.path()).unwrap(), status);
    }

    #[test]
    fn prepare_reports_missing_files_and_makes_sparse_ones() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.img");
        let err = prepare(&[Prepare::Existing { volume: "root".into(), path: missing.clone() }]).unwrap_err().to_string();
        assert!(err.contains("volume \"root\"") && err.contains(&missing.display().to_string()), "{err}");
        let sparse = dir.path().join("sub/empty.img");
        prepare(&[Prepare::Sparse { volume: "scratch".into(), path: sparse.clone(), size: 1 << 30 }]).unwrap();
        let m = std::fs::metadata(&sparse).unwrap();
        assert_eq!(m.len(), 1 << 30);
        use std::os::unix::fs::MetadataExt;
        assert!(m.blocks() < 16, "sparse");
    }
}
