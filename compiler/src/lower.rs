//! Lower the validated model to `kubevirt.io/v1` VirtualMachine objects, recording for
//! each emitted field the span of the spec that produced it (the source map).

use crate::kubevirt as kv;
use crate::model::*;
use crate::source::Span;
use std::collections::BTreeMap;

/// The cloud-init seed disk and volume name, as in KubeVirt's examples.
pub const CLOUD_INIT_DISK: &str = "cloudinitdisk";

/// One compiled machine: the object, its plan/apply guards, and where its fields came from.
#[derive(Debug, Clone)]
pub struct CompiledVm {
    pub object: kv::VirtualMachine,
    pub lifecycle: Lifecycle,
    /// The `vm` node that produced this object, and its name argument.
    pub span: Span,
    pub name_span: Span,
    /// Emitted field path (as `spec.template.spec.domain.memory.guest`, list items by
    /// name as `disks[root]`) → the span that set it. Empty unless
    /// [`Options::source_maps`](crate::Options) asked for it.
    pub source_map: BTreeMap<String, Span>,
}

/// Records the source map when one is wanted; building it costs a string per field, which
/// `build` and `validate` have no use for.
struct Recorder(Option<BTreeMap<String, Span>>);

impl Recorder {
    fn record(&mut self, path: impl FnOnce() -> String, span: Span) {
        if let Some(map) = &mut self.0 {
            map.insert(path(), span);
        }
    }
}

/// Lower one validated machine; with `source_map`, also record where each field came from.
pub fn lower(vm: &Vm, source_map: bool) -> CompiledVm {
    let mut map = Recorder(source_map.then(BTreeMap::new));
    let name = vm.name.value.clone();
    map.record(|| "metadata.name".into(), vm.name.span);
    map.record(|| "metadata.namespace".into(), vm.namespace.span);
    let (labels, annotations) = metadata(vm, &mut map);
    let domain = domain(vm, &mut map);
    let storage = storage(vm, &mut map);
    let (interfaces, networks) = network_devices(vm, &mut map);
    let node_selector = placement(vm, &mut map);

    let object = kv::VirtualMachine {
        api_version: kv::API_VERSION.into(),
        kind: "VirtualMachine".into(),
        metadata: kv::ObjectMeta { name, namespace: Some(vm.namespace.value.clone()), labels: labels.clone(), annotations },
        spec: kv::VirtualMachineSpec {
            run_strategy: vm.run_strategy.value.kubevirt().into(),
            data_volume_templates: storage.data_volume_templates,
            template: kv::InstanceTemplate {
                metadata: kv::TemplateMeta { labels, annotations: kv::StringMap::new() },
                spec: kv::InstanceSpec {
                    domain: kv::Domain { devices: kv::Devices { disks: storage.disks, interfaces }, ..domain },
                    networks,
                    volumes: storage.volumes,
                    node_selector,
                    eviction_strategy: vm.eviction.as_ref().map(|e| e.value.kubevirt().into()),
                    termination_grace_period_seconds: vm.termination_grace.as_ref().map(|t| t.value),
                },
            },
        },
    };
    CompiledVm { object, lifecycle: vm.lifecycle.clone(), span: vm.span, name_span: vm.name.span, source_map: map.0.unwrap_or_default() }
}

const DOMAIN: &str = "spec.template.spec.domain";

/// The VM's labels (with vmform's own) and annotations.
fn metadata(vm: &Vm, map: &mut Recorder) -> (kv::StringMap, kv::StringMap) {
    for (k, v) in &vm.labels {
        map.record(|| format!("metadata.labels[{k}]"), v.span);
    }
    // Invariant: every emitted object says it is vmform's (specs/language.md).
    let labels: kv::StringMap = vm
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .chain([(kv::MANAGED_BY_LABEL.to_string(), kv::MANAGED_BY.to_string())])
        .collect();
    for (k, v) in &vm.annotations {
        map.record(|| format!("metadata.annotations[{k}]"), v.span);
    }
    let annotations: kv::StringMap = vm.annotations.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect();
    (labels, annotations)
}

/// cpu, memory, machine type, firmware and the features firmware needs; no devices yet.
fn domain(vm: &Vm, map: &mut Recorder) -> kv::Domain {
    let cpu = vm.cpu.as_ref().map(|c| {
        map.record(|| format!("{DOMAIN}.cpu"), c.span);
        kv::Cpu { cores: c.value.cores, sockets: c.value.sockets, threads: c.value.threads, model: c.value.model.clone() }
    });
    let memory = vm.memory.as_ref().map(|m| {
        map.record(|| format!("{DOMAIN}.memory.guest"), m.span);
        kv::Memory { guest: m.value.text.clone() }
    });
    let machine = vm.machine.as_ref().map(|m| {
        map.record(|| format!("{DOMAIN}.machine.type"), m.span);
        kv::Machine { kind: m.value.clone() }
    });
    let mut features = None;
    let firmware = vm.firmware.as_ref().map(|f| {
        map.record(|| format!("{DOMAIN}.firmware"), f.span);
        let bootloader = match f.value.kind {
            FirmwareKind::Bios => kv::Bootloader { bios: Some(kv::Empty {}), efi: None },
            FirmwareKind::Efi => kv::Bootloader { bios: None, efi: Some(kv::Efi { secure_boot: f.value.secure_boot }) },
        };
        if f.value.secure_boot {
            features = Some(kv::Features { smm: Some(kv::FeatureState { enabled: true }) });
            map.record(|| format!("{DOMAIN}.features.smm"), f.span);
        }
        kv::Firmware { bootloader }
    });
    kv::Domain { cpu, memory, machine, firmware, features, devices: kv::Devices::default() }
}

/// The disks, their volumes and the DataVolume templates of imported volumes.
struct Storage {
    disks: Vec<kv::Disk>,
    volumes: Vec<kv::Volume>,
    data_volume_templates: Vec<kv::DataVolumeTemplate>,
}

fn storage(vm: &Vm, map: &mut Recorder) -> Storage {
    // Exact capacities: a fleet holds thousands of these lists at once.
    let devices = vm.disks.len() + usize::from(vm.cloud_init.is_some());
    let mut out = Storage {
        disks: Vec::with_capacity(devices),
        volumes: Vec::with_capacity(devices),
        data_volume_templates: Vec::with_capacity(vm.disks.iter().filter(|d| matches!(d.source.value, Source::Volume(_))).count()),
    };
    for d in &vm.disks {
        let disk_name = &d.name.value;
        map.record(|| format!("{DOMAIN}.devices.disks[{disk_name}]"), d.span);
        map.record(|| format!("spec.template.spec.volumes[{disk_name}]"), d.source.span);
        let target = kv::DiskTarget { bus: d.bus.map(|b| b.kubevirt().to_string()), readonly: d.read_only };
        out.disks.push(kv::Disk {
            name: disk_name.clone(),
            disk: (!d.cdrom).then(|| target.clone()),
            cdrom: d.cdrom.then_some(target),
            boot_order: d.boot_order,
            serial: d.serial.clone(),
        });
        out.volumes.push(volume(vm, d, map, &mut out.data_volume_templates));
    }
    if let Some(ci) = &vm.cloud_init {
        map.record(|| format!("spec.template.spec.volumes[{CLOUD_INIT_DISK}]"), ci.span);
        out.disks.push(kv::Disk {
            name: CLOUD_INIT_DISK.into(),
            disk: Some(kv::DiskTarget { bus: Some("virtio".into()), readonly: None }),
            ..Default::default()
        });
        out.volumes.push(kv::Volume {
            name: CLOUD_INIT_DISK.into(),
            cloud_init_no_cloud: Some(Box::new(kv::CloudInitNoCloud { user_data: ci.value.user_data.clone(), network_data: ci.value.network_data.clone() })),
            ..Default::default()
        });
    }
    out
}

/// The volume behind one disk; an imported volume also adds its DataVolume template.
fn volume(vm: &Vm, d: &Disk, map: &mut Recorder, data_volume_templates: &mut Vec<kv::DataVolumeTemplate>) -> kv::Volume {
    let disk_name = &d.name.value;
    let mut volume = kv::Volume { name: disk_name.clone(), ..Default::default() };
    match &d.source.value {
        Source::Image(image) => volume.container_disk = Some(Box::new(kv::ContainerDisk { image: image.clone() })),
        Source::Pvc(claim) => {
            volume.persistent_volume_claim = Some(Box::new(kv::PvcRef { claim_name: claim.clone(), read_only: d.read_only.filter(|r| *r) }))
        }
        Source::EmptyDisk(cap) => volume.empty_disk = Some(Box::new(kv::EmptyDisk { capacity: cap.text.clone() })),
        Source::HostDisk { path, kind, capacity, shared } => {
            volume.host_disk = Some(Box::new(kv::HostDisk {
                path: path.clone(),
                kind: kind.kubevirt().into(),
                capacity: capacity.as_ref().map(|c| c.text.clone()),
                shared: shared.then_some(true),
            }))
        }
        Source::Volume(v) => {
            let dv_name = format!("{}-{disk_name}", vm.name.value);
            map.record(|| format!("spec.dataVolumeTemplates[{dv_name}]"), d.source.span);
            volume.data_volume = Some(Box::new(kv::DataVolumeRef { name: dv_name.clone() }));
            let source = match &v.import {
                Import::Blank => kv::DataVolumeSource { blank: Some(kv::Empty {}), ..Default::default() },
                Import::Http(url) => kv::DataVolumeSource { http: Some(kv::UrlSource { url: url.clone() }), ..Default::default() },
                Import::Registry(url) => kv::DataVolumeSource { registry: Some(kv::UrlSource { url: url.clone() }), ..Default::default() },
            };
            data_volume_templates.push(kv::DataVolumeTemplate {
                metadata: kv::DataVolumeMeta { name: dv_name },
                spec: kv::DataVolumeSpec {
                    source,
                    storage: kv::StorageSpec {
                        access_modes: v.access_mode.map(|a| a.kubevirt().to_string()).into_iter().collect(),
                        resources: kv::StorageResources { requests: [("storage", v.size.text.clone())].into_iter().collect() },
                        storage_class_name: v.storage_class.clone(),
                    },
                },
            });
        }
    }
    volume
}

/// The interfaces and the networks they attach to; masquerade interfaces carry the ports.
fn network_devices(vm: &Vm, map: &mut Recorder) -> (Vec<kv::Interface>, Vec<kv::Network>) {
    let mut interfaces = Vec::with_capacity(vm.networks.len());
    let mut networks = Vec::with_capacity(vm.networks.len());
    for n in &vm.networks {
        let net_name = &n.name.value;
        map.record(|| format!("{DOMAIN}.devices.interfaces[{net_name}]"), n.span);
        map.record(|| format!("spec.template.spec.networks[{net_name}]"), n.span);
        let ports = if n.binding == Binding::Masquerade {
            vm.ports
                .iter()
                .map(|p| {
                    map.record(|| format!("{DOMAIN}.devices.interfaces[{net_name}].ports[{}]", p.name), p.span);
                    kv::Port { name: p.name.clone(), port: p.number, protocol: p.protocol.kubevirt().into() }
                })
                .collect()
        } else {
            vec![]
        };
        interfaces.push(kv::Interface {
            name: net_name.clone(),
            masquerade: (n.binding == Binding::Masquerade).then_some(kv::Empty {}),
            bridge: (n.binding == Binding::Bridge).then_some(kv::Empty {}),
            ports,
            mac_address: n.mac.clone(),
        });
        networks.push(kv::Network {
            name: net_name.clone(),
            pod: n.multus.is_none().then_some(kv::Empty {}),
            multus: n.multus.as_ref().map(|m| kv::MultusNetwork { network_name: m.clone() }),
        });
    }
    (interfaces, networks)
}

/// The node selector; also records where the run strategy, eviction and grace period come from.
fn placement(vm: &Vm, map: &mut Recorder) -> kv::StringMap {
    for (k, v) in &vm.node_selector {
        map.record(|| format!("spec.template.spec.nodeSelector[{k}]"), v.span);
    }
    map.record(|| "spec.runStrategy".into(), vm.run_strategy.span);
    if let Some(e) = &vm.eviction {
        map.record(|| "spec.template.spec.evictionStrategy".into(), e.span);
    }
    if let Some(t) = &vm.termination_grace {
        map.record(|| "spec.template.spec.terminationGracePeriodSeconds".into(), t.span);
    }
    vm.node_selector.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect()
}
