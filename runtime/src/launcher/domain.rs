//! A VirtualMachineInstance (`kubevirt.io/v1`, as JSON) → the libvirt domain XML the
//! launcher defines, and the files to prepare before it starts. Pure: the only inputs
//! are the VMI, the paths, the firmware found on the host and a source of free ports.
//!
//! [`unsupported`] lists what the local runtime cannot serve; [`build`] refuses exactly
//! those specs (both run the same [`analyse`]), so the controller can refuse a VMI at
//! scheduling time instead of the launcher failing later.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::accel::Accel;
use crate::Error;

/// The PCI slot of the first interface (on the root bus); at most [`MAX_NICS`] follow.
const NIC_SLOT: usize = 0x18;
/// Slots 0x18 to 0x1b: the ICH9 functions libvirt may use start at 0x1c.
const MAX_NICS: usize = 4;

/// The grace period when the VMI names none (KubeVirt's default).
pub const DEFAULT_GRACE_SECONDS: u64 = 30;

// --- Host firmware --------------------------------------------------------------------------

/// A UEFI firmware image: the code, and the template of its variable store (absent for a
/// combined image such as /usr/share/qemu/OVMF.fd, which runs as a ROM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    pub code: PathBuf,
    pub vars: Option<PathBuf>,
}

/// The UEFI firmware installed on the host: plain, and with secure boot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFirmware {
    pub efi: Option<Ovmf>,
    pub efi_secure: Option<Ovmf>,
}

/// Where Debian's `ovmf` and QEMU's own builds put the firmware.
pub const OVMF_DIRS: [&str; 2] = ["/usr/share/OVMF", "/usr/share/qemu"];

impl HostFirmware {
    /// Look for OVMF in [`OVMF_DIRS`].
    pub fn detect() -> HostFirmware {
        HostFirmware::detect_in(&OVMF_DIRS.map(Path::new))
    }

    pub fn detect_in(dirs: &[&Path]) -> HostFirmware {
        let find = |pairs: &[(&str, Option<&str>)]| {
            dirs.iter().find_map(|dir| {
                pairs.iter().find_map(|(code, vars)| {
                    let code = dir.join(code);
                    let vars = vars.map(|v| dir.join(v));
                    (code.is_file() && vars.as_ref().is_none_or(|v| v.is_file())).then_some(Ovmf { code, vars })
                })
            })
        };
        HostFirmware {
            efi: find(&[
                ("OVMF_CODE_4M.fd", Some("OVMF_VARS_4M.fd")),
                ("OVMF_CODE.fd", Some("OVMF_VARS.fd")),
                ("edk2-x86_64-code.fd", Some("edk2-i386-vars.fd")),
                ("OVMF.fd", None),
            ]),
            efi_secure: find(&[
                ("OVMF_CODE_4M.secboot.fd", Some("OVMF_VARS_4M.ms.fd")),
                ("OVMF_CODE.secboot.fd", Some("OVMF_VARS.ms.fd")),
                ("edk2-x86_64-secure-code.fd", Some("edk2-i386-vars.fd")),
            ]),
        }
    }
}

// --- The analysed VMI ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bus {
    Virtio,
    Sata,
    Scsi,
}

impl Bus {
    fn parse(s: &str) -> Option<Bus> {
        match s {
            "virtio" => Some(Bus::Virtio),
            "sata" => Some(Bus::Sata),
            "scsi" => Some(Bus::Scsi),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Bus::Virtio => "virtio",
            Bus::Sata => "sata",
            Bus::Scsi => "scsi",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// A file that must exist, or (`create`) is made sparse of that size when absent.
    HostDisk { path: PathBuf, create: Option<u64> },
    /// A scratch file, made for the run.
    EmptyDisk { capacity: u64 },
    /// A NoCloud seed, made for the run.
    CloudInit { user_data: Vec<u8>, network_data: Option<Vec<u8>> },
    /// A PVC or DataVolume: `<volumes dir>/<namespace>/<claim>.img`, must exist.
    Claim { claim: String, readonly: bool },
    /// KubeVirt's containerDisk: the image's disk, pulled into the node's image cache,
    /// under a fresh qcow2 overlay made for the run (writes are lost at every restart).
    ContainerDisk { image: String, path: Option<String>, policy: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
struct DiskModel {
    name: String,
    cdrom: bool,
    bus: Bus,
    readonly: bool,
    boot_order: Option<u64>,
    serial: Option<String>,
    cache: Option<&'static str>,
    shareable: bool,
    source: Source,
}

#[derive(Debug, Clone, PartialEq)]
struct PortModel {
    name: Option<String>,
    protocol: &'static str,
    port: u16,
}

#[derive(Debug, Clone, PartialEq)]
struct NicModel {
    name: String,
    device: &'static str,
    mac: Option<String>,
    ports: Vec<PortModel>,
}

#[derive(Debug, Clone, PartialEq)]
enum Firmware {
    Bios,
    Efi { ovmf: Ovmf, secure: bool },
}

/// What the launcher needs from a VMI spec, once checked.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    sockets: u64,
    cores: u64,
    threads: u64,
    cpu_model: Option<String>,
    memory_bytes: u64,
    machine: &'static str,
    firmware: Firmware,
    acpi: bool,
    smm: bool,
    rng: bool,
    disks: Vec<DiskModel>,
    nics: Vec<NicModel>,
    grace: u64,
    hostname: Option<String>,
}

/// Everything in a VMI spec (`spec` of a VirtualMachineInstance) that the local runtime
/// cannot serve, one message per item, each naming the volume, disk or interface and the
/// reason. Empty when the launcher can run it. Looks for OVMF on this host.
pub fn unsupported(vmi_spec: &Value) -> Vec<String> {
    unsupported_with(vmi_spec, &HostFirmware::detect())
}

/// [`unsupported`] with the host's firmware given.
pub fn unsupported_with(vmi_spec: &Value, firmware: &HostFirmware) -> Vec<String> {
    analyse(vmi_spec, firmware).err().unwrap_or_default()
}

/// The string at a JSON pointer, if there is one.
fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn is_set(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr).is_some_and(|x| !x.is_null())
}

/// A feature or device given as `{}` or `{enabled: bool}`: on unless `enabled: false`.
fn enabled(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(x) => x.get("enabled").and_then(Value::as_bool).unwrap_or(true),
    }
}

fn quantity(v: &Value, what: &str, problems: &mut Vec<String>) -> Option<u64> {
    let text = match v {
        Value::String(t) => t.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            problems.push(format!("{what}: `{v}` is not a quantity"));
            return None;
        }
    };
    // The one quantity parser: `1.5Gi` is KubeVirt's too; a fraction of a byte rounds up.
    match vmform_cluster::quantity::parse_amount(&text) {
        Ok(q) => match q.ceil().and_then(|b| u64::try_from(b).ok()) {
            Some(b) => Some(b),
            None if q.is_negative() => {
                problems.push(format!("{what}: `{text}` is negative"));
                None
            }
            None => {
                problems.push(format!("{what}: `{text}` is too large"));
                None
            }
        },
        Err(e) => {
            problems.push(format!("{what}: {e}"));
            None
        }
    }
}

/// A CPU quantity (`2`, `500m`, `1.5`) as a whole number of vCPUs, rounded up.
fn cpu_count(v: &Value) -> Option<u64> {
    let text = match v {
        Value::String(t) => t.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let cores = vmform_cluster::quantity::parse_amount(&text).ok()?.as_f64();
    (cores > 0.0 && cores < 4096.0).then(|| (cores.ceil() as u64).max(1))
}

fn positive(v: &Value, ptr: &str, what: &str, problems: &mut Vec<String>) -> Option<u64> {
    match v.pointer(ptr) {
        None | Some(Value::Null) => None,
        Some(x) => match x.as_u64().filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                problems.push(format!("{what}: `{x}` is not a positive whole number"));
                None
            }
        },
    }
}

/// Map a KubeVirt machine type to one this QEMU has.
fn machine_type(t: &str) -> Option<&'static str> {
    if t == "q35" || t.starts_with("pc-q35") {
        Some("q35")
    } else if t == "pc" || t == "i440fx" || t.starts_with("pc-i440fx") {
        Some("pc")
    } else {
        None
    }
}

/// Volume kinds the local runtime cannot serve, with the reason and the way out.
const UNSUPPORTED_VOLUMES: &[(&str, &str)] = &[
    ("ephemeral", "ephemeral volumes are not supported by the local runtime (no copy-on-write overlay); use the persistentVolumeClaim directly"),
    ("secret", "secret volumes are not supported by the local runtime; put the data in cloudInitNoCloud userData"),
    ("configMap", "configMap volumes are not supported by the local runtime; put the data in cloudInitNoCloud userData"),
    ("serviceAccount", "serviceAccount volumes are not supported by the local runtime"),
    ("downwardAPI", "downwardAPI volumes are not supported by the local runtime"),
    ("downwardMetrics", "downwardMetrics volumes are not supported by the local runtime"),
    ("cloudInitConfigDrive", "cloudInitConfigDrive is not supported by the local runtime; use cloudInitNoCloud"),
    ("sysprep", "sysprep volumes are not supported by the local runtime"),
    ("memoryDump", "memoryDump volumes are not supported by the local runtime"),
];

const SUPPORTED_VOLUMES: &[&str] = &["hostDisk", "emptyDisk", "cloudInitNoCloud", "persistentVolumeClaim", "dataVolume", "containerDisk"];

/// Devices the local runtime cannot give a guest.
const UNSUPPORTED_DEVICES: &[(&str, &str)] = &[
    ("gpus", "GPUs cannot be passed through by the local runtime"),
    ("hostDevices", "host devices cannot be passed through by the local runtime"),
    ("filesystems", "virtiofs filesystems are not supported by the local runtime"),
    ("watchdog", "watchdog devices are not supported by the local runtime"),
    ("clientPassthrough", "USB client passthrough is not supported by the local runtime"),
    ("downwardMetrics", "the downwardMetrics device is not supported by the local runtime"),
];

fn analyse(spec: &Value, firmware: &HostFirmware) -> Result<Model, Vec<String>> {
    let mut problems = Vec::new();
    let domain = spec.get("domain").cloned().unwrap_or(Value::Null);
    // Each part reports its problems in turn, so the messages keep the order of the spec.
    let cpu = analyse_cpu(spec, &domain, &mut problems);
    let memory_bytes = analyse_memory(&domain, &mut problems);
    let boot = analyse_machine_and_firmware(&domain, firmware, &mut problems);
    let devices = domain.get("devices").cloned().unwrap_or(Value::Null);
    let rng = analyse_devices(&devices, &mut problems);
    let disks = analyse_disks(spec, &devices, &mut problems);
    let nics = analyse_nics(spec, &devices, &mut problems);
    let grace = analyse_grace(spec, &mut problems);
    let hostname = spec.get("hostname").and_then(Value::as_str).map(str::to_string);

    if problems.is_empty() {
        Ok(Model {
            sockets: cpu.sockets,
            cores: cpu.cores,
            threads: cpu.threads,
            cpu_model: cpu.model,
            memory_bytes,
            machine: boot.machine,
            firmware: boot.firmware,
            acpi: boot.acpi,
            smm: boot.smm,
            rng,
            disks,
            nics,
            grace,
            hostname,
        })
    } else {
        Err(problems)
    }
}

/// The vCPU topology and model of a VMI spec.
struct CpuModel {
    sockets: u64,
    cores: u64,
    threads: u64,
    model: Option<String>,
}

/// CPU: the topology, or a count from the resources; what the local runtime cannot do
/// with CPUs (and the `Paused` start strategy, reported among them).
fn analyse_cpu(spec: &Value, domain: &Value, problems: &mut Vec<String>) -> CpuModel {
    let mut sockets = positive(domain, "/cpu/sockets", "spec.domain.cpu.sockets", problems);
    let cores = positive(domain, "/cpu/cores", "spec.domain.cpu.cores", problems);
    let threads = positive(domain, "/cpu/threads", "spec.domain.cpu.threads", problems);
    if sockets.is_none() && cores.is_none() && threads.is_none() {
        let from_resources = ["/resources/requests/cpu", "/resources/limits/cpu"].iter().find_map(|p| domain.pointer(p));
        if let Some(v) = from_resources {
            match cpu_count(v) {
                Some(n) => sockets = Some(n),
                None => problems.push(format!("spec.domain.resources: cpu `{v}` is not a CPU quantity")),
            }
        }
    }
    let (sockets, cores, threads) = (sockets.unwrap_or(1), cores.unwrap_or(1), threads.unwrap_or(1));
    if sockets * cores * threads > 255 {
        problems.push(format!("spec.domain.cpu: {} vCPUs is more than the local runtime runs (255)", sockets * cores * threads));
    }
    if str_at(spec, "/startStrategy") == Some("Paused") {
        problems.push("spec.startStrategy Paused is not supported by the local runtime (it has no pause or unpause yet); start it without --paused".into());
    }
    if domain.pointer("/cpu/dedicatedCpuPlacement").and_then(Value::as_bool) == Some(true) {
        problems.push("spec.domain.cpu.dedicatedCpuPlacement is not supported by the local runtime (no CPU pinning)".into());
    }
    if is_set(domain, "/cpu/realtime") {
        problems.push("spec.domain.cpu.realtime is not supported by the local runtime".into());
    }
    CpuModel { sockets, cores, threads, model: str_at(domain, "/cpu/model").map(str::to_string) }
}

/// Memory: the guest size, else the request, else the limit (bytes; 0 after a problem).
fn analyse_memory(domain: &Value, problems: &mut Vec<String>) -> u64 {
    if is_set(domain, "/memory/hugepages") {
        problems.push("spec.domain.memory.hugepages is not supported by the local runtime".into());
    }
    let memory = [
        ("/memory/guest", "spec.domain.memory.guest"),
        ("/resources/requests/memory", "spec.domain.resources.requests.memory"),
        ("/resources/limits/memory", "spec.domain.resources.limits.memory"),
    ]
    .iter()
    .find_map(|(p, what)| domain.pointer(p).filter(|v| !v.is_null()).map(|v| (v, *what)));
    let memory_bytes = match memory {
        Some((v, what)) => quantity(v, what, problems).unwrap_or(0),
        None => {
            problems.push("spec.domain: no memory size (memory.guest or resources.requests.memory)".into());
            0
        }
    };
    if memory.is_some() && memory_bytes > 0 && memory_bytes < 1 << 20 {
        problems.push(format!("spec.domain: memory of {memory_bytes} bytes is too small"));
    }
    memory_bytes
}

/// The machine type, the firmware and the features that go with them.
struct BootModel {
    machine: &'static str,
    firmware: Firmware,
    acpi: bool,
    smm: bool,
}

/// Machine and firmware: q35 or pc; BIOS, or OVMF found on this host.
fn analyse_machine_and_firmware(domain: &Value, firmware: &HostFirmware, problems: &mut Vec<String>) -> BootModel {
    let machine = match str_at(domain, "/machine/type") {
        None | Some("") => "q35",
        Some(t) => machine_type(t).unwrap_or_else(|| {
            problems.push(format!(
                "spec.domain.machine.type: machine type \"{t}\" is not supported by the local runtime (x86_64 QEMU: q35 or pc)"
            ));
            "q35"
        }),
    };
    let chosen = if let Some(efi) = domain.pointer("/firmware/bootloader/efi").filter(|v| !v.is_null()) {
        // KubeVirt turns secure boot on unless it is switched off.
        let secure = efi.get("secureBoot").and_then(Value::as_bool).unwrap_or(true);
        let found = if secure { &firmware.efi_secure } else { &firmware.efi };
        match found {
            Some(ovmf) => {
                if machine != "q35" && secure {
                    problems.push("spec.domain.firmware: EFI secure boot needs machine type q35".into());
                }
                Firmware::Efi { ovmf: ovmf.clone(), secure }
            }
            None => {
                let which = if secure { "OVMF with secure boot (OVMF_CODE_4M.secboot.fd)" } else { "OVMF (OVMF_CODE_4M.fd)" };
                problems.push(format!(
                    "spec.domain.firmware: EFI firmware needs {which} in {}, which is not installed on this host: install the ovmf package{}",
                    OVMF_DIRS.join(" or "),
                    if secure { ", or set efi.secureBoot: false" } else { "" }
                ));
                Firmware::Bios
            }
        }
    } else {
        Firmware::Bios
    };
    if is_set(domain, "/firmware/kernelBoot") {
        problems.push(
            "spec.domain.firmware.kernelBoot is not supported by the local runtime (it cannot pull the kernel's container image)".into(),
        );
    }
    let acpi = domain.pointer("/features/acpi").is_none_or(|v| v.is_null() || enabled(Some(v)));
    let secure_boot = matches!(chosen, Firmware::Efi { secure: true, .. });
    let smm = enabled(domain.pointer("/features/smm")) || secure_boot;
    BootModel { machine, firmware: chosen, acpi, smm }
}

/// Devices that cannot be given; whether the guest gets a random number generator.
fn analyse_devices(devices: &Value, problems: &mut Vec<String>) -> bool {
    for (key, why) in UNSUPPORTED_DEVICES {
        let present = match devices.get(*key) {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Bool(b)) => *b,
            Some(_) => true,
        };
        if present {
            problems.push(format!("spec.domain.devices.{key}: {why}"));
        }
    }
    if enabled(devices.get("tpm")) {
        problems.push("spec.domain.devices.tpm: a TPM is not supported by the local runtime (no swtpm)".into());
    }
    devices.get("rng").is_some_and(|v| !v.is_null())
}

/// Volumes, by name, and the disks on them: each disk names a volume; a volume without a
/// disk gets a virtio disk (as KubeVirt does).
fn analyse_disks(spec: &Value, devices: &Value, problems: &mut Vec<String>) -> Vec<DiskModel> {
    let volumes: Vec<Value> = spec.get("volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut sources: Vec<(String, Option<Source>)> = Vec::new();
    for vol in &volumes {
        let name = vol.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let source = volume_source(&name, vol, problems);
        sources.push((name, source));
    }
    let disk_specs: Vec<Value> = devices.get("disks").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut disks = Vec::new();
    for d in &disk_specs {
        let name = d.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let Some((_, source)) = sources.iter().find(|(n, _)| *n == name) else {
            problems.push(format!("disk \"{name}\": no volume of that name"));
            continue;
        };
        if let Some(disk) = disk_model(&name, d, source.clone(), problems) {
            disks.push(disk);
        }
    }
    for (name, source) in &sources {
        if !disk_specs.iter().any(|d| d.get("name").and_then(Value::as_str) == Some(name)) {
            let d = serde_json::json!({"name": name, "disk": {"bus": "virtio"}});
            if let Some(disk) = disk_model(name, &d, source.clone(), problems) {
                disks.push(disk);
            }
        }
    }
    disks
}

/// Interfaces: masquerade on the pod network, through QEMU's user networking.
fn analyse_nics(spec: &Value, devices: &Value, problems: &mut Vec<String>) -> Vec<NicModel> {
    let networks: Vec<Value> = spec.get("networks").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut nics = Vec::new();
    for i in devices.get("interfaces").and_then(Value::as_array).cloned().unwrap_or_default() {
        if let Some(nic) = nic_model(&i, &networks, problems) {
            nics.push(nic);
        }
    }
    if nics.len() > MAX_NICS {
        problems.push(format!("spec.domain.devices.interfaces: the local runtime gives a guest at most {MAX_NICS} interfaces"));
    }
    for n in &networks {
        let name = n.get("name").and_then(Value::as_str).unwrap_or("");
        if is_set(n, "/multus") {
            problems.push(format!(
                "network \"{name}\": multus networks are not supported by the local runtime (only the pod network)"
            ));
        }
    }
    nics
}

/// `spec.terminationGracePeriodSeconds`, in seconds.
fn analyse_grace(spec: &Value, problems: &mut Vec<String>) -> u64 {
    match spec.get("terminationGracePeriodSeconds") {
        None | Some(Value::Null) => DEFAULT_GRACE_SECONDS,
        Some(v) => v.as_u64().unwrap_or_else(|| {
            problems.push(format!("spec.terminationGracePeriodSeconds: `{v}` is not a whole number of seconds"));
            DEFAULT_GRACE_SECONDS
        }),
    }
}

fn volume_source(name: &str, vol: &Value, problems: &mut Vec<String>) -> Option<Source> {
    let Some(obj) = vol.as_object() else {
        problems.push(format!("volume \"{name}\": not an object"));
        return None;
    };
    for (kind, why) in UNSUPPORTED_VOLUMES {
        if obj.get(*kind).is_some_and(|v| !v.is_null()) {
            problems.push(format!("volume \"{name}\": {why}"));
            return None;
        }
    }
    if let Some(h) = obj.get("hostDisk") {
        let path = h.get("path").and_then(Value::as_str).unwrap_or("");
        if !path.starts_with('/') {
            problems.push(format!("volume \"{name}\": hostDisk path `{path}` is not absolute"));
            return None;
        }
        let create = match h.get("type").and_then(Value::as_str).unwrap_or("Disk") {
            "Disk" => None,
            "DiskOrCreate" => match h.get("capacity") {
                Some(c) if !c.is_null() => Some(quantity(c, &format!("volume \"{name}\": hostDisk capacity"), problems)?),
                _ => {
                    problems.push(format!("volume \"{name}\": a hostDisk of type DiskOrCreate needs a capacity"));
                    return None;
                }
            },
            other => {
                problems.push(format!("volume \"{name}\": hostDisk type \"{other}\" is not Disk or DiskOrCreate"));
                return None;
            }
        };
        return Some(Source::HostDisk { path: PathBuf::from(path), create });
    }
    if let Some(e) = obj.get("emptyDisk") {
        let Some(c) = e.get("capacity").filter(|c| !c.is_null()) else {
            problems.push(format!("volume \"{name}\": an emptyDisk needs a capacity"));
            return None;
        };
        let capacity = quantity(c, &format!("volume \"{name}\": emptyDisk capacity"), problems)?;
        return Some(Source::EmptyDisk { capacity });
    }
    if let Some(c) = obj.get("cloudInitNoCloud") {
        for key in ["secretRef", "networkDataSecretRef"] {
            if is_set(c, &format!("/{key}")) {
                problems.push(format!(
                    "volume \"{name}\": cloudInitNoCloud {key} is not supported by the local runtime (no secrets); put the data inline"
                ));
                return None;
            }
        }
        let user_data = inline_or_base64(name, c, "userData", problems)?.unwrap_or_default();
        let network_data = inline_or_base64(name, c, "networkData", problems)?;
        return Some(Source::CloudInit { user_data, network_data });
    }
    if let Some(c) = obj.get("containerDisk").filter(|c| !c.is_null()) {
        let Some(image) = c.get("image").and_then(Value::as_str).filter(|i| !i.is_empty()) else {
            problems.push(format!("volume \"{name}\": a containerDisk needs an image"));
            return None;
        };
        if is_set(c, "/imagePullSecret") {
            problems.push(format!(
                "volume \"{name}\": containerDisk imagePullSecret is not supported by the local runtime yet; put the registry's credentials in ~/.docker/config.json or $REGISTRY_AUTH_FILE"
            ));
            return None;
        }
        let policy = c.get("imagePullPolicy").and_then(Value::as_str).map(str::to_string);
        if let Some(p) = policy.as_deref().filter(|p| crate::images::PullPolicy::parse(p).is_none()) {
            problems.push(format!("volume \"{name}\": imagePullPolicy \"{p}\" is not Always, IfNotPresent or Never"));
            return None;
        }
        let path = c.get("path").and_then(Value::as_str).map(str::to_string);
        return Some(Source::ContainerDisk { image: image.to_string(), path, policy });
    }
    if let Some(p) = obj.get("persistentVolumeClaim") {
        let readonly = p.get("readOnly").and_then(Value::as_bool).unwrap_or(false);
        return claim(name, p.get("claimName"), "persistentVolumeClaim.claimName", readonly, problems);
    }
    if let Some(d) = obj.get("dataVolume") {
        return claim(name, d.get("name"), "dataVolume.name", false, problems);
    }
    let kinds: Vec<&String> = obj.keys().filter(|k| *k != "name").collect();
    match kinds.first() {
        Some(kind) => problems.push(format!(
            "volume \"{name}\": {kind} volumes are not supported by the local runtime (it serves {})",
            SUPPORTED_VOLUMES.join(", ")
        )),
        None => problems.push(format!("volume \"{name}\": no volume source")),
    }
    None
}

fn claim(name: &str, claim: Option<&Value>, what: &str, readonly: bool, problems: &mut Vec<String>) -> Option<Source> {
    match claim.and_then(Value::as_str) {
        Some(c) if !c.is_empty() && !c.contains('/') && c != "." && c != ".." => {
            Some(Source::Claim { claim: c.to_string(), readonly })
        }
        _ => {
            problems.push(format!("volume \"{name}\": {what} is missing or not a name"));
            None
        }
    }
}

/// `Some(None)`: neither given; `None`: a problem was reported.
fn inline_or_base64(name: &str, c: &Value, key: &str, problems: &mut Vec<String>) -> Option<Option<Vec<u8>>> {
    if let Some(text) = c.get(key).and_then(Value::as_str) {
        return Some(Some(text.as_bytes().to_vec()));
    }
    let b64key = format!("{key}Base64");
    if let Some(text) = c.get(&b64key).and_then(Value::as_str) {
        let compact: String = text.chars().filter(|ch| !ch.is_whitespace()).collect();
        return match base64::engine::general_purpose::STANDARD.decode(compact) {
            Ok(bytes) => Some(Some(bytes)),
            Err(e) => {
                problems.push(format!("volume \"{name}\": cloudInitNoCloud {b64key} is not base64: {e}"));
                None
            }
        };
    }
    Some(None)
}

fn disk_model(name: &str, d: &Value, source: Option<Source>, problems: &mut Vec<String>) -> Option<DiskModel> {
    let (kind, dev) = if let Some(x) = d.get("disk").filter(|v| !v.is_null()) {
        ("disk", x)
    } else if let Some(x) = d.get("cdrom").filter(|v| !v.is_null()) {
        ("cdrom", x)
    } else if d.get("lun").is_some_and(|v| !v.is_null()) {
        problems.push(format!("disk \"{name}\": lun disks are not supported by the local runtime (no SCSI passthrough); use a disk"));
        return None;
    } else {
        ("disk", &Value::Null)
    };
    let cdrom = kind == "cdrom";
    let default_bus = if cdrom { "sata" } else { "virtio" };
    let bus_name = dev.get("bus").and_then(Value::as_str).unwrap_or(default_bus);
    let Some(bus) = Bus::parse(bus_name) else {
        problems.push(format!("disk \"{name}\": bus \"{bus_name}\" is not supported by the local runtime (virtio, sata or scsi)"));
        return None;
    };
    if cdrom && bus == Bus::Virtio {
        problems.push(format!("disk \"{name}\": a cdrom cannot be on the virtio bus; use sata or scsi"));
        return None;
    }
    let claim_readonly = matches!(source, Some(Source::Claim { readonly: true, .. }));
    let readonly = dev.get("readonly").and_then(Value::as_bool).unwrap_or(cdrom) || claim_readonly;
    if readonly && !cdrom && bus == Bus::Sata {
        problems.push(format!("disk \"{name}\": a read-only disk cannot be on the sata bus (QEMU refuses it); use virtio, scsi or a cdrom"));
        return None;
    }
    let boot_order = match d.get("bootOrder") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                problems.push(format!("disk \"{name}\": bootOrder `{v}` is not a positive whole number"));
                return None;
            }
        },
    };
    let cache = match d.get("cache").and_then(Value::as_str) {
        None => None,
        Some("none") => Some("none"),
        Some("writethrough") => Some("writethrough"),
        Some("writeback") => Some("writeback"),
        Some(other) => {
            problems.push(format!("disk \"{name}\": cache mode \"{other}\" is not none, writethrough or writeback"));
            return None;
        }
    };
    let serial = d.get("serial").and_then(Value::as_str).map(str::to_string);
    let shareable = d.get("shareable").and_then(Value::as_bool).unwrap_or(false);
    Some(DiskModel { name: name.to_string(), cdrom, bus, readonly, boot_order, serial, cache, shareable, source: source? })
}

fn nic_model(i: &Value, networks: &[Value], problems: &mut Vec<String>) -> Option<NicModel> {
    let name = i.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    let binding = ["masquerade", "bridge", "sriov", "slirp", "passt", "macvtap", "binding"]
        .into_iter()
        .find(|k| i.get(*k).is_some_and(|v| !v.is_null()));
    match binding {
        Some("masquerade") => {}
        Some("bridge") => {
            problems.push(format!(
                "interface \"{name}\": bridge binding is not supported by the local runtime; use masquerade (with ports to forward)"
            ));
            return None;
        }
        Some("sriov") => {
            problems.push(format!("interface \"{name}\": SR-IOV is not supported by the local runtime; use masquerade"));
            return None;
        }
        Some(other) => {
            problems.push(format!("interface \"{name}\": {other} binding is not supported by the local runtime; use masquerade"));
            return None;
        }
        None => {
            problems.push(format!("interface \"{name}\": no binding; the local runtime supports masquerade"));
            return None;
        }
    }
    match networks.iter().find(|n| n.get("name").and_then(Value::as_str) == Some(&name)) {
        None => {
            problems.push(format!("interface \"{name}\": no network of that name"));
            return None;
        }
        Some(n) if is_set(n, "/pod") => {}
        // A multus network is reported once, with the networks.
        Some(_) => return None,
    }
    let device = match i.get("model").and_then(Value::as_str).unwrap_or("virtio") {
        "virtio" => "virtio-net-pci",
        "e1000" => "e1000",
        "e1000e" => "e1000e",
        "rtl8139" => "rtl8139",
        "pcnet" => "pcnet",
        "ne2k_pci" => "ne2k_pci",
        other => {
            problems.push(format!("interface \"{name}\": model \"{other}\" is not supported by the local runtime"));
            return None;
        }
    };
    if i.get("bootOrder").is_some_and(|v| !v.is_null()) {
        problems.push(format!("interface \"{name}\": network boot (bootOrder on an interface) is not supported by the local runtime"));
        return None;
    }
    let mac = i.get("macAddress").and_then(Value::as_str).map(str::to_string);
    if let Some(m) = &mac
        && vmform_compiler::values::check_mac(m).is_err()
    {
        problems.push(format!("interface \"{name}\": macAddress `{m}` is not a MAC address"));
        return None;
    }
    let mut ports = Vec::new();
    for p in i.get("ports").and_then(Value::as_array).cloned().unwrap_or_default() {
        let port_name = p.get("name").and_then(Value::as_str).map(str::to_string);
        let protocol = match p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") {
            "TCP" | "tcp" => "TCP",
            "UDP" | "udp" => "UDP",
            other => {
                problems.push(format!("interface \"{name}\": port protocol \"{other}\" cannot be forwarded (TCP or UDP)"));
                continue;
            }
        };
        match p.get("port").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0) {
            Some(port) => ports.push(PortModel { name: port_name, protocol, port }),
            None => problems.push(format!("interface \"{name}\": port `{}` is not a port number", p.get("port").unwrap_or(&Value::Null))),
        }
    }
    Some(NicModel { name, device, mac, ports })
}

// --- The domain --------------------------------------------------------------------------------

/// A port of the guest forwarded from the host, as `status.json` and the
/// `vmform.io/ports` annotation carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: String,
    pub port: u16,
    #[serde(rename = "hostIP")]
    pub host_ip: String,
    #[serde(rename = "hostPort")]
    pub host_port: u16,
}

/// A file to make ready before the domain starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepare {
    /// Must exist (a hostDisk of type Disk, a PVC or DataVolume).
    Existing { volume: String, path: PathBuf },
    /// A raw file made sparse of `size` bytes when absent (an emptyDisk in the scratch
    /// dir, a hostDisk of type DiskOrCreate).
    Sparse { volume: String, path: PathBuf, size: u64 },
    /// A NoCloud seed (vfat, label `cidata`).
    CloudInitSeed { volume: String, path: PathBuf, user_data: Vec<u8>, meta_data: Vec<u8>, network_data: Option<Vec<u8>> },
    /// A containerDisk: the image pulled into `cache_dir` (by `policy`, KubeVirt's default
    /// when `None`), and a new qcow2 `overlay` on its disk.
    ContainerDisk { volume: String, image: String, disk_path: Option<String>, policy: Option<String>, cache_dir: PathBuf, overlay: PathBuf },
}



/// What [`build`] makes of a VMI.
#[derive(Debug, Clone)]
pub struct DomainPlan {
    /// `<namespace>_<name>`.
    pub name: String,
    /// The VMI's `metadata.uid`, the domain's UUID.
    pub uuid: String,
    pub xml: String,
    /// In order.
    pub prepare: Vec<Prepare>,
    pub ports: Vec<ForwardedPort>,
    /// `spec.terminationGracePeriodSeconds`.
    pub grace: Duration,
    pub console_log: PathBuf,
    /// `<vmi dir>/disks`: scratch, removed when the launcher exits.
    pub disks_dir: PathBuf,
    /// The target devs (`vdb`) of the disks kept in `disks_dir` (emptyDisk, cloud-init):
    /// a live migration copies them to the target's own (KubeVirt's local volumes).
    pub local_disks: Vec<String>,
}

/// The inputs of [`build`] besides the VMI.
pub struct BuildOptions<'a> {
    pub accel: Accel,
    pub vmi_dir: &'a Path,
    pub volumes_dir: &'a Path,
    pub firmware: &'a HostFirmware,
    /// The address QEMU binds forwarded ports on: 127.0.0.1, or the node's own address
    /// when the node has a network namespace of its own (the host reaches it there).
    pub host_ip: &'a str,
    /// A free port on `host_ip` for a protocol (`TCP`, `UDP`).
    pub host_port: &'a mut dyn FnMut(&str) -> std::io::Result<u16>,
    /// The QEMU binary (`vmform up --emulator`); `None`: libvirt's default for the arch.
    pub emulator: Option<&'a Path>,
}

/// The domain name of a VMI: `<namespace>_<name>`.
pub fn domain_name(vmi: &Value) -> Option<String> {
    let name = str_at(vmi, "/metadata/name")?;
    let ns = str_at(vmi, "/metadata/namespace").filter(|n| !n.is_empty()).unwrap_or("default");
    Some(format!("{ns}_{name}"))
}

/// The grace period of a VMI (`spec.terminationGracePeriodSeconds`, default 30 s).
pub fn grace_period(vmi: &Value) -> Duration {
    Duration::from_secs(vmi.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(DEFAULT_GRACE_SECONDS))
}

/// VMI → domain XML and the files to prepare.
pub fn build(vmi: &Value, opts: BuildOptions<'_>) -> Result<DomainPlan, Error> {
    let name = str_at(vmi, "/metadata/name").filter(|n| !n.is_empty()).ok_or_else(|| Error::InvalidVmi("the VMI has no metadata.name".into()))?;
    let namespace = str_at(vmi, "/metadata/namespace").filter(|n| !n.is_empty()).unwrap_or("default");
    let uid = str_at(vmi, "/metadata/uid").ok_or_else(|| Error::InvalidVmi("the VMI has no metadata.uid".into()))?;
    let uuid = uuid::Uuid::parse_str(uid)
        .map_err(|e| Error::InvalidVmi(format!("the VMI's metadata.uid `{uid}` is not a UUID: {e}")))?
        .hyphenated()
        .to_string();
    let spec = vmi.get("spec").ok_or_else(|| Error::InvalidVmi("the VMI has no spec".into()))?;
    let model = analyse(spec, opts.firmware).map_err(Error::UnsupportedVmi)?;
    let vmi_id = VmiIdentity { name, namespace, uid, uuid: &uuid };
    let disks_dir = opts.vmi_dir.join("disks");
    let console_log = opts.vmi_dir.join("console.log");

    let mut xml = String::new();
    write_head(&mut xml, &vmi_id, &model, opts.accel);
    write_os(&mut xml, &model, &disks_dir);
    write_features(&mut xml, &model);
    write_cpu(&mut xml, &model, opts.accel);
    write_lifecycle(&mut xml);
    let _ = writeln!(xml, "  <devices>");
    if let Some(emulator) = opts.emulator {
        let _ = writeln!(xml, "    <emulator>{}</emulator>", xml_escape_path(emulator));
    }
    let files = write_disks(&mut xml, &model, &vmi_id, &disks_dir, opts.volumes_dir);
    write_console(&mut xml, &console_log);
    write_other_devices(&mut xml, &model);
    let _ = writeln!(xml, "  </devices>");
    let ports = write_nics(&mut xml, &model, &uuid, opts.host_ip, opts.host_port)?;
    let _ = writeln!(xml, "</domain>");

    Ok(DomainPlan {
        name: format!("{namespace}_{name}"),
        uuid,
        xml,
        prepare: files.prepare,
        ports,
        grace: Duration::from_secs(model.grace),
        console_log,
        disks_dir,
        local_disks: files.local_disks,
    })
}

/// Who the domain is: its VMI's name, namespace and uid, and the domain's UUID.
struct VmiIdentity<'a> {
    name: &'a str,
    namespace: &'a str,
    uid: &'a str,
    uuid: &'a str,
}

/// `<domain>`'s opening, name, UUID, the VMI it runs, its memory and vCPUs.
fn write_head(xml: &mut String, vmi: &VmiIdentity<'_>, model: &Model, accel: Accel) {
    let qemu_ns = if model.nics.is_empty() { "" } else { " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'" };
    let _ = writeln!(xml, "<domain type='{}'{qemu_ns}>", accel.domain_type());
    let _ = writeln!(xml, "  <name>{}</name>", xml_escape(&format!("{}_{}", vmi.namespace, vmi.name)));
    let _ = writeln!(xml, "  <uuid>{}</uuid>", vmi.uuid);
    let _ = writeln!(xml, "  <metadata>");
    let _ = writeln!(
        xml,
        "    <vmform:vmi xmlns:vmform='https://vmform.dev/xmlns/vmi/1' namespace='{}' name='{}' uid='{}'/>",
        xml_escape(vmi.namespace),
        xml_escape(vmi.name),
        xml_escape(vmi.uid)
    );
    let _ = writeln!(xml, "  </metadata>");
    let kib = model.memory_bytes.div_ceil(1024);
    let _ = writeln!(xml, "  <memory unit='KiB'>{kib}</memory>");
    let _ = writeln!(xml, "  <currentMemory unit='KiB'>{kib}</currentMemory>");
    let vcpus = model.sockets * model.cores * model.threads;
    let _ = writeln!(xml, "  <vcpu placement='static'>{vcpus}</vcpu>");
}

/// Boot: BIOS, or OVMF with a per-run variable store.
fn write_os(xml: &mut String, model: &Model, disks_dir: &Path) {
    let _ = writeln!(xml, "  <os>");
    let _ = writeln!(xml, "    <type arch='x86_64' machine='{}'>hvm</type>", model.machine);
    if let Firmware::Efi { ovmf, secure } = &model.firmware {
        match &ovmf.vars {
            Some(vars) => {
                let _ = writeln!(
                    xml,
                    "    <loader readonly='yes' secure='{}' type='pflash'>{}</loader>",
                    if *secure { "yes" } else { "no" },
                    xml_escape_path(&ovmf.code)
                );
                let _ = writeln!(xml, "    <nvram template='{}'>{}</nvram>", xml_escape_path(vars), xml_escape_path(&disks_dir.join("nvram.fd")));
            }
            None => {
                let _ = writeln!(xml, "    <loader type='rom'>{}</loader>", xml_escape_path(&ovmf.code));
            }
        }
    }
    let _ = writeln!(xml, "  </os>");
}

fn write_features(xml: &mut String, model: &Model) {
    let _ = writeln!(xml, "  <features>");
    if model.acpi {
        let _ = writeln!(xml, "    <acpi/>");
    }
    let _ = writeln!(xml, "    <apic/>");
    if model.smm {
        let _ = writeln!(xml, "    <smm state='on'/>");
    }
    let _ = writeln!(xml, "  </features>");
}

/// CPU: under TCG a model QEMU emulates; under KVM the host's.
fn write_cpu(xml: &mut String, model: &Model, accel: Accel) {
    let topology = format!("<topology sockets='{}' dies='1' cores='{}' threads='{}'/>", model.sockets, model.cores, model.threads);
    match (accel, model.cpu_model.as_deref()) {
        (Accel::Tcg, _) => {
            let _ = writeln!(xml, "  <cpu mode='custom' match='exact'>");
            let _ = writeln!(xml, "    <model fallback='allow'>qemu64</model>");
            let _ = writeln!(xml, "    {topology}");
            let _ = writeln!(xml, "  </cpu>");
        }
        (Accel::Kvm, Some("host-passthrough")) => {
            let _ = writeln!(xml, "  <cpu mode='host-passthrough'>\n    {topology}\n  </cpu>");
        }
        (Accel::Kvm, None | Some("") | Some("host-model")) => {
            let _ = writeln!(xml, "  <cpu mode='host-model'>\n    {topology}\n  </cpu>");
        }
        (Accel::Kvm, Some(m)) => {
            let _ = writeln!(xml, "  <cpu mode='custom' match='exact'>");
            let _ = writeln!(xml, "    <model fallback='allow'>{}</model>", xml_escape(m));
            let _ = writeln!(xml, "    {topology}");
            let _ = writeln!(xml, "  </cpu>");
        }
    }
}

/// The clock, and what a power-off, a reboot and a crash do.
fn write_lifecycle(xml: &mut String) {
    let _ = writeln!(xml, "  <clock offset='utc'/>");
    let _ = writeln!(xml, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(xml, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(xml, "  <on_crash>destroy</on_crash>");
}

/// The files the disks need, and the disks made for the run on this node.
struct DiskFiles {
    prepare: Vec<Prepare>,
    local_disks: Vec<String>,
}

/// Disks, with the files they need.
fn write_disks(xml: &mut String, model: &Model, vmi: &VmiIdentity<'_>, disks_dir: &Path, volumes_dir: &Path) -> DiskFiles {
    let mut files = DiskFiles { prepare: Vec::new(), local_disks: Vec::new() };
    let (mut virtio_disks, mut scsi_or_sata_disks) = (0usize, 0usize);
    if model.disks.iter().any(|d| d.bus == Bus::Scsi) {
        let _ = writeln!(xml, "    <controller type='scsi' index='0' model='virtio-scsi'/>");
    }
    for disk in &model.disks {
        let (path, prepare) = disk_file(disk, model, vmi, disks_dir, volumes_dir);
        files.prepare.push(prepare);
        let target = match disk.bus {
            Bus::Virtio => {
                virtio_disks += 1;
                format!("vd{}", drive_letters(virtio_disks - 1))
            }
            Bus::Sata | Bus::Scsi => {
                scsi_or_sata_disks += 1;
                format!("sd{}", drive_letters(scsi_or_sata_disks - 1))
            }
        };
        // Made for the run on this node: a migration copies them (the overlay's backing
        // image is pulled on the target too).
        if matches!(disk.source, Source::EmptyDisk { .. } | Source::CloudInit { .. } | Source::ContainerDisk { .. }) {
            files.local_disks.push(target.clone());
        }
        write_disk(xml, disk, &path, &target);
    }
    files
}

/// The file a disk's source is, and what makes it ready.
fn disk_file(disk: &DiskModel, model: &Model, vmi: &VmiIdentity<'_>, disks_dir: &Path, volumes_dir: &Path) -> (PathBuf, Prepare) {
    let volume = disk.name.clone();
    match &disk.source {
        Source::HostDisk { path, create } => {
            let prepare = match create {
                None => Prepare::Existing { volume, path: path.clone() },
                Some(size) => Prepare::Sparse { volume, path: path.clone(), size: *size },
            };
            (path.clone(), prepare)
        }
        Source::EmptyDisk { capacity } => {
            let path = disks_dir.join(format!("{}.img", disk.name));
            (path.clone(), Prepare::Sparse { volume, path, size: *capacity })
        }
        Source::CloudInit { user_data, network_data } => {
            let path = disks_dir.join(format!("{}-cidata.img", disk.name));
            let (name, namespace) = (vmi.name, vmi.namespace);
            let hostname = model.hostname.as_deref().unwrap_or(name);
            let meta_data = format!("instance-id: {name}.{namespace}\nlocal-hostname: {hostname}\n").into_bytes();
            let prepare = Prepare::CloudInitSeed { volume, path: path.clone(), user_data: user_data.clone(), meta_data, network_data: network_data.clone() };
            (path, prepare)
        }
        Source::Claim { claim, .. } => {
            let path = volumes_dir.join(vmi.namespace).join(format!("{claim}.img"));
            (path.clone(), Prepare::Existing { volume, path })
        }
        Source::ContainerDisk { image, path, policy } => {
            let overlay = disks_dir.join(format!("{}.qcow2", disk.name));
            let prepare = Prepare::ContainerDisk {
                volume,
                image: image.clone(),
                disk_path: path.clone(),
                policy: policy.clone(),
                cache_dir: crate::images::cache_dir_of(volumes_dir),
                overlay: overlay.clone(),
            };
            (overlay, prepare)
        }
    }
}

/// One `<disk>`: the file at `path` as target dev `target`.
fn write_disk(xml: &mut String, disk: &DiskModel, path: &Path, target: &str) {
    let device = if disk.cdrom { "cdrom" } else { "disk" };
    let format = if matches!(disk.source, Source::ContainerDisk { .. }) { "qcow2" } else { "raw" };
    let _ = writeln!(xml, "    <disk type='file' device='{device}'>");
    match disk.cache {
        Some(c) => {
            let _ = writeln!(xml, "      <driver name='qemu' type='{format}' cache='{c}'/>");
        }
        None => {
            let _ = writeln!(xml, "      <driver name='qemu' type='{format}'/>");
        }
    }
    let _ = writeln!(xml, "      <source file='{}'/>", xml_escape_path(path));
    let _ = writeln!(xml, "      <target dev='{target}' bus='{}'/>", disk.bus.as_str());
    if disk.readonly {
        let _ = writeln!(xml, "      <readonly/>");
    }
    if disk.shareable {
        let _ = writeln!(xml, "      <shareable/>");
    }
    if let Some(serial) = &disk.serial {
        let _ = writeln!(xml, "      <serial>{}</serial>", xml_escape(serial));
    }
    if let Some(order) = disk.boot_order {
        let _ = writeln!(xml, "      <boot order='{order}'/>");
    }
    let _ = writeln!(xml, "      <alias name='ua-disk-{}'/>", libvirt_alias(&disk.name));
    let _ = writeln!(xml, "    </disk>");
}

/// The serial console goes to a file the handler and people read.
fn write_console(xml: &mut String, console_log: &Path) {
    let _ = writeln!(xml, "    <serial type='file'>");
    let _ = writeln!(xml, "      <source path='{}' append='on'/>", xml_escape_path(console_log));
    let _ = writeln!(xml, "      <target port='0'/>");
    let _ = writeln!(xml, "    </serial>");
    let _ = writeln!(xml, "    <console type='file'>");
    let _ = writeln!(xml, "      <source path='{}' append='on'/>", xml_escape_path(console_log));
    let _ = writeln!(xml, "      <target type='serial' port='0'/>");
    let _ = writeln!(xml, "    </console>");
}

/// The random number generator (when asked for); no graphics, no balloon.
fn write_other_devices(xml: &mut String, model: &Model) {
    if model.rng {
        let _ = writeln!(xml, "    <rng model='virtio'>\n      <backend model='random'>/dev/urandom</backend>\n    </rng>");
    }
    let _ = writeln!(xml, "    <video>\n      <model type='none'/>\n    </video>");
    let _ = writeln!(xml, "    <memballoon model='none'/>");
}

/// Masquerade interfaces: QEMU user networking (KubeVirt's addresses: the guest is
/// 10.0.2.2 behind 10.0.2.1), the declared ports forwarded from `host_ip`.
fn write_nics(
    xml: &mut String,
    model: &Model,
    uuid: &str,
    host_ip: &str,
    host_port: &mut dyn FnMut(&str) -> std::io::Result<u16>,
) -> Result<Vec<ForwardedPort>, Error> {
    let mut ports = Vec::new();
    if model.nics.is_empty() {
        return Ok(ports);
    }
    let _ = writeln!(xml, "  <qemu:commandline>");
    for (i, nic) in model.nics.iter().enumerate() {
        let mut netdev = format!(
            "user,id=vmform-net{i},net=10.0.2.0/24,host=10.0.2.1,dhcpstart=10.0.2.2,dns=10.0.2.3,ipv6-net=fd10:0:2::/120,ipv6-host=fd10:0:2::1"
        );
        if let Some(h) = &model.hostname {
            let _ = write!(netdev, ",hostname={}", qemu_opt(h));
        }
        for p in &nic.ports {
            let port_on_host = host_port(p.protocol).map_err(Error::NoFreePort)?;
            let _ = write!(netdev, ",hostfwd={}:{}:{port_on_host}-:{}", p.protocol.to_ascii_lowercase(), host_ip, p.port);
            ports.push(ForwardedPort {
                name: p.name.clone(),
                protocol: p.protocol.to_string(),
                port: p.port,
                host_ip: host_ip.to_string(),
                host_port: port_on_host,
            });
        }
        let mac = nic.mac.clone().unwrap_or_else(|| mac_for(uuid, i));
        // A fixed slot high on the root bus: libvirt places its own devices from slot
        // 1 up without knowing of this one. No option ROM: nothing boots from the
        // network, and iPXE costs a second.
        let bus = if model.machine == "q35" { "pcie.0" } else { "pci.0" };
        let device = format!("{},netdev=vmform-net{i},mac={mac},bus={bus},addr={:#x},romfile=", nic.device, NIC_SLOT + i);
        for arg in ["-netdev", &netdev, "-device", &device] {
            let _ = writeln!(xml, "    <qemu:arg value='{}'/>", xml_escape(arg));
        }
    }
    let _ = writeln!(xml, "  </qemu:commandline>");
    Ok(ports)
}

/// 0 → a, 25 → z, 26 → aa (libvirt's disk names).
fn drive_letters(mut n: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// A stable locally administered MAC for the n-th interface of a VMI.
fn mac_for(uuid: &str, n: usize) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{uuid}/{n}").as_bytes());
    let b = digest.as_ref();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// A libvirt user alias: letters, digits, `-` and `_`.
fn libvirt_alias(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// A value inside a QEMU option list: commas doubled.
fn qemu_opt(v: &str) -> String {
    v.replace(',', ",,")
}

/// Text for an XML attribute or element: the five special characters escaped.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_escape_path(p: &Path) -> String {
    xml_escape(&p.to_string_lossy())
}

#[cfg(test)]
mod tests;
