//! Validate resolved machines into the typed [`model`](crate::model): parse every value,
//! check every rule of `specs/language.md`, and report each problem at its span.

use crate::ast::{self, Str};
use crate::decode::did_you_mean;
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::load::{normalize, Loader};
use crate::model::*;
use crate::resolve::Machine;
use crate::source::{Sources, Span, Spanned};
use crate::values::{self, Quantity};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub struct Validator<'a> {
    pub loader: &'a dyn Loader,
    pub sources: &'a Sources,
    pub diags: &'a mut Diagnostics,
    /// Strings whose `${…}` could not be expanded: already reported, and their value is
    /// not what the user wrote, so no further check of them is reported.
    pub failed_interpolations: &'a BTreeSet<Span>,
}

impl Validator<'_> {
    fn err(&mut self, d: Diagnostic) {
        if d.primary.as_ref().is_some_and(|l| self.failed_interpolations.contains(&l.span)) {
            return;
        }
        self.diags.push(d);
    }

    /// Whether an error is already reported inside one of these nodes.
    fn has_error_within(&self, nodes: &[Span]) -> bool {
        self.diags.errors().filter_map(|d| d.primary.as_ref()).any(|l| {
            nodes.iter().any(|n| n.file == l.span.file && n.start <= l.span.start && l.span.end() <= n.end())
        })
    }

    fn choice<T: Copy>(&mut self, s: &Str, what: &str, parse: fn(&str) -> Option<T>, spellings: &[&str]) -> Option<T> {
        if let Some(v) = parse(&s.value) {
            return Some(v);
        }
        let mut d = Diagnostic::new(Code::InvalidChoice, format!("`{}` is not a valid {what}", s.value))
            .at(s.span, format!("not a valid {what}"));
        d = match did_you_mean(&s.value, spellings.iter().copied()) {
            Some(x) => d.help(format!("did you mean \"{x}\"?")),
            None => d.help(format!("use one of: {}", spellings.iter().map(|x| format!("\"{x}\"")).collect::<Vec<_>>().join(", "))),
        };
        self.err(d);
        None
    }

    fn quantity(&mut self, s: &Str, what: &str) -> Option<Quantity> {
        match values::parse_quantity(&s.value) {
            Ok(q) => Some(q),
            Err(e) => {
                self.err(
                    Diagnostic::new(Code::BadQuantity, format!("{what} `{}` is not a valid quantity: {e}", s.value))
                        .at(s.span, "not a quantity")
                        .help("write a whole number with a unit, e.g. \"512Mi\", \"4Gi\" or \"100Gi\" (MiB and GiB are accepted too)"),
                );
                None
            }
        }
    }

    /// A quantity that must be more than zero; zero is reported with `zero_code`.
    fn size(&mut self, s: &Str, what: &str, zero_code: Code) -> Option<Quantity> {
        let q = self.quantity(s, what)?;
        if q.bytes == 0 {
            self.err(
                Diagnostic::new(zero_code, format!("{what} is zero"))
                    .at(s.span, "zero")
                    .help(format!("give the {what} a size above zero, e.g. \"1Gi\"")),
            );
            return None;
        }
        Some(q)
    }

    fn dns_label(&mut self, s: &Spanned<String>, what: &str) -> bool {
        match values::check_dns_label(&s.value) {
            Ok(()) => true,
            Err(e) => {
                self.err(
                    Diagnostic::new(Code::BadName, format!("{what} `{}` is not a DNS-1123 label: {e}", s.value))
                        .at(s.span, "not a DNS-1123 label")
                        .help("Kubernetes names are lowercase letters, digits and `-`, at most 63 characters, starting and ending with a letter or digit"),
                );
                false
            }
        }
    }

    fn label_map(&mut self, pairs: &[(Str, Str)], what: &str, check_values: bool) -> BTreeMap<String, Spanned<String>> {
        let mut out = BTreeMap::new();
        for (k, v) in pairs {
            let mut ok = true;
            if let Err(e) = values::check_label_key(&k.value) {
                ok = false;
                self.err(
                    Diagnostic::new(Code::BadLabel, format!("`{}` is not a valid {what} key: {e}", k.value))
                        .at(k.span, "invalid key")
                        .help("keys are `name` or `prefix/name`: the prefix a DNS subdomain, the name up to 63 letters, digits, `-`, `_` or `.`"),
                );
            }
            if check_values
                && let Err(e) = values::check_label_value(&v.value) {
                    ok = false;
                    self.err(
                        Diagnostic::new(Code::BadLabel, format!("`{}` is not a valid {what} value: {e}", v.value))
                            .at(v.span, "invalid value")
                            .help("values are empty or up to 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit; put free text in annotations"),
                    );
                }
            if ok {
                out.insert(k.value.clone(), v.clone());
            }
        }
        out
    }

    fn positive(&mut self, v: &ast::Int, what: &str) -> Option<u32> {
        match u32::try_from(v.value) {
            Ok(n) if n >= 1 => Some(n),
            _ if v.value > 1 => {
                self.err(
                    Diagnostic::new(Code::WrongType, format!("{what} count {} is too large", v.value))
                        .at(v.span, "too large")
                        .help("KubeVirt counts cpu sockets, cores and threads as 32-bit numbers"),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::new(Code::ZeroResource, format!("{what} is {}; it must be at least 1", v.value))
                        .at(v.span, "must be at least 1")
                        .help(format!("a vm needs at least one {what}")),
                );
                None
            }
        }
    }

    /// Validate one machine. (Names taken twice are found on the finished objects, in
    /// `compile`, where they are sorted anyway.)
    pub fn validate(&mut self, m: &Machine) -> Option<Vm> {
        let errors_before = self.diags.errors().count();
        let b = &m.body;
        self.dns_label(&m.name, "vm name");
        let namespace = b.namespace.clone().unwrap_or_else(|| Spanned::new("default".into(), m.name.span));
        if b.namespace.is_some() {
            self.dns_label(&namespace, "namespace");
        }
        let labels = self.label_map(&b.labels, "label", true);
        let annotations = self.label_map(&b.annotations, "annotation", false);
        let node_selector = self.label_map(&b.node_selector, "node-selector", true);
        let run_strategy = match &b.run_strategy {
            Some(s) => self.choice(s, "run-strategy", RunStrategy::parse, RunStrategy::SPELLINGS).map(|r| Spanned::new(r, s.span)),
            None => Some(Spanned::new(RunStrategy::Always, m.name.span)),
        };
        let cpu = b.cpu.as_ref().map(|c| {
            let cpu = Cpu {
                cores: c.value.cores.as_ref().and_then(|v| self.positive(v, "cpu core")),
                sockets: c.value.sockets.as_ref().and_then(|v| self.positive(v, "cpu socket")),
                threads: c.value.threads.as_ref().and_then(|v| self.positive(v, "cpu thread")),
                model: c.value.model.as_ref().map(|m| m.value.clone()),
            };
            Spanned::new(cpu, c.span)
        });
        let memory = b.memory.as_ref().and_then(|s| self.size(s, "memory", Code::ZeroResource).map(|q| Spanned::new(q, s.span)));
        let firmware = b.firmware.as_ref().and_then(|f| {
            let kind = self.choice(&f.value.kind, "firmware", FirmwareKind::parse, FirmwareKind::SPELLINGS)?;
            let secure_boot = f.value.secure_boot.as_ref().is_some_and(|s| s.value);
            if secure_boot && kind != FirmwareKind::Efi {
                let sb = f.value.secure_boot.as_ref().map_or(f.span, |s| s.span);
                self.err(
                    Diagnostic::new(Code::SecureBootNeedsEfi, "secure boot needs EFI firmware")
                        .at(sb, "secure boot requested")
                        .also(f.value.kind.span, "but the firmware is not EFI")
                        .help("write `firmware \"efi\" secure-boot=#true`"),
                );
            }
            Some(Spanned::new(Firmware { kind, secure_boot }, f.span))
        });
        let eviction = b.eviction.as_ref().and_then(|s| self.choice(s, "eviction strategy", Eviction::parse, Eviction::SPELLINGS).map(|e| Spanned::new(e, s.span)));
        let termination_grace = b.termination_grace.as_ref().and_then(|s| match values::parse_duration(&s.value) {
            Ok(n) => Some(Spanned::new(n, s.span)),
            Err(e) => {
                self.err(
                    Diagnostic::new(Code::BadDuration, format!("`{}` is not a valid duration: {e}", s.value))
                        .at(s.span, "not a duration")
                        .help("write whole seconds, minutes or hours, e.g. \"30s\", \"2m\" or \"1h30m\""),
                );
                None
            }
        });

        let disks = self.disks(&b.disks);
        let networks = self.networks(&b.networks);
        let ports = self.ports(&b.ports, &networks);
        let cloud_init = b.cloud_init.as_ref().and_then(|c| self.cloud_init(c));
        let lifecycle = b.lifecycle.as_ref().map_or_else(Lifecycle::default, |l| Lifecycle {
            prevent_destroy: l.value.prevent_destroy.as_ref().is_some_and(|p| p.value),
            prevent_destroy_at: l.value.prevent_destroy.as_ref().filter(|p| p.value).map(|p| p.span),
            ignore_changes: l.value.ignore_changes.iter().map(|p| p.value.clone()).collect(),
            vm_actions: l.value.vm_actions.as_ref().and_then(|v| self.choice(v, "vm-actions", VmActions::parse, VmActions::SPELLINGS)),
        });

        // Not when the vm or its template already has an error: a memory node that failed
        // to decode, or an unknown instancetype, would otherwise be reported twice.
        let nodes: Vec<Span> = std::iter::once(m.span).chain(m.template).collect();
        if memory.is_none() && b.memory.is_none() && !self.has_error_within(&nodes) {
            self.err(
                Diagnostic::new(Code::NoMemory, format!("vm `{}` has no memory", m.name.value))
                    .at(m.name.span, "no memory set")
                    .help("write `memory \"2Gi\"` in the vm, its template or defaults, or use an instancetype that sets it; KubeVirt refuses a vm without memory"),
            );
        }
        if let Some(ev) = &eviction
            && ev.value == Eviction::LiveMigrate {
                self.warn_unmovable(ev.span, &disks);
            }
        if self.diags.errors().count() > errors_before {
            return None;
        }
        Some(Vm {
            name: m.name.clone(),
            namespace,
            labels,
            annotations,
            node_selector,
            run_strategy: run_strategy?,
            cpu,
            memory,
            machine: b.machine.clone(),
            firmware,
            disks,
            networks,
            ports,
            cloud_init,
            eviction,
            termination_grace,
            lifecycle,
            span: m.span,
        })
    }

    /// Live migration needs storage every node can reach: not a ReadWriteOnce volume and
    /// not a host-disk unless it is marked shared.
    fn warn_unmovable(&mut self, eviction: Span, disks: &[Disk]) {
        for d in disks {
            let why = match &d.source.value {
                Source::Volume(v) if matches!(v.access_mode, Some(AccessMode::ReadWriteOnce | AccessMode::ReadWriteOncePod)) => {
                    "its volume is ReadWriteOnce, so only one node can attach it"
                }
                Source::HostDisk { shared: false, .. } => "it is a host-disk on one node (not marked shared=#true)",
                _ => continue,
            };
            self.err(
                Diagnostic::new(Code::EvictionCannotMigrate, format!("disk `{}` cannot live-migrate: {why}", d.name.value))
                    .at(eviction, "live migration requested")
                    .also(d.source.span, "this storage cannot move")
                    .help("use access-mode=\"ReadWriteMany\" or host-disk shared=#true, or eviction \"none\""),
            );
        }
    }

    fn disks(&mut self, disks: &[ast::Disk]) -> Vec<Disk> {
        let mut out = vec![];
        let mut boot_orders: BTreeMap<u32, Span> = BTreeMap::new();
        for d in disks {
            self.dns_label(&d.name, "disk name");
            if d.name.value == crate::lower::CLOUD_INIT_DISK {
                self.err(
                    Diagnostic::new(Code::DuplicateChild, format!("disk name `{}` is reserved", d.name.value))
                        .at(d.name.span, "reserved for the cloud-init seed disk")
                        .help("choose another name; vmform names the cloud-init disk `cloudinitdisk`"),
                );
            }
            let source = match d.sources.as_slice() {
                [] => {
                    self.err(
                        Diagnostic::new(Code::NoDiskSource, format!("disk `{}` has no source", d.name.value))
                            .at(d.name.span, "no source")
                            .help("give it exactly one of: image, volume, pvc, host-disk, empty-disk"),
                    );
                    None
                }
                [one] => self.source(one),
                [first, second, ..] => {
                    self.err(
                        Diagnostic::new(
                            Code::TwoDiskSources,
                            format!("disk `{}` has more than one source ({} and {})", d.name.value, first.value.keyword(), second.value.keyword()),
                        )
                        .at(second.span, "second source")
                        .also(first.span, "first source")
                        .help("a disk has exactly one source; declare another disk for the other one"),
                    );
                    None
                }
            };
            let bus = d.bus.as_ref().and_then(|b| self.choice(b, "disk bus", Bus::parse, Bus::SPELLINGS));
            let cdrom = d.cdrom.as_ref().is_some_and(|c| c.value);
            if let (true, Some(b), Some(written)) = (cdrom, bus, &d.bus)
                && !matches!(b, Bus::Sata | Bus::Scsi) {
                    self.err(
                        Diagnostic::new(Code::InvalidChoice, format!("a cdrom cannot use the {} bus", b.spelling()))
                            .at(written.span, "not a cdrom bus")
                            .help("KubeVirt attaches cdroms on \"sata\" (the default) or \"scsi\""),
                    );
                }
            let boot_order = d.boot_order.as_ref().and_then(|b| match u32::try_from(b.value) {
                Ok(n) if n >= 1 => {
                    if let Some(&first) = boot_orders.get(&n) {
                        self.err(
                            Diagnostic::new(Code::DuplicateBootOrder, format!("two disks have boot-order {n}"))
                                .at(b.span, "used again here")
                                .also(first, "first used here")
                                .help("boot orders must be unique within a vm"),
                        );
                    } else {
                        boot_orders.insert(n, b.span);
                    }
                    Some(n)
                }
                _ => {
                    self.err(
                        Diagnostic::new(Code::InvalidChoice, format!("boot-order {} is not allowed", b.value))
                            .at(b.span, "must be 1 or more")
                            .help("boot-order counts from 1 (first to boot)"),
                    );
                    None
                }
            });
            if let (true, Some(s)) = (cdrom, &source) {
                let scratch = match &s.value {
                    Source::EmptyDisk(_) => Some("an empty-disk"),
                    Source::Volume(Volume { import: Import::Blank, .. }) => Some("a blank volume"),
                    _ => None,
                };
                if let Some(what) = scratch {
                    self.err(
                        Diagnostic::new(Code::CdromSource, format!("disk `{}` is a cdrom backed by {what}", d.name.value))
                            .at(s.span, "holds nothing to read")
                            .help("a cdrom is read-only media: give it an image, a pvc or a volume with source="),
                    );
                }
            }
            if let Some(src) = source {
                out.push(Disk {
                    name: d.name.clone(),
                    source: src,
                    bus,
                    boot_order,
                    read_only: d.read_only.as_ref().map(|r| r.value),
                    serial: d.serial.as_ref().map(|s| s.value.clone()),
                    cdrom,
                    span: d.span,
                });
            }
        }
        out
    }

    fn source(&mut self, s: &Spanned<ast::DiskSource>) -> Option<Spanned<Source>> {
        let src = match &s.value {
            ast::DiskSource::Image(i) => {
                if i.value.trim().is_empty() || i.value.contains(char::is_whitespace) {
                    self.err(
                        Diagnostic::new(Code::BadPath, format!("`{}` is not an image reference", i.value))
                            .at(i.span, "not an image reference")
                            .help("write a registry reference, e.g. \"quay.io/containerdisks/fedora:41\""),
                    );
                    return None;
                }
                Source::Image(i.value.clone())
            }
            ast::DiskSource::Pvc(p) => {
                self.dns_label(p, "claim name");
                Source::Pvc(p.value.clone())
            }
            ast::DiskSource::EmptyDisk(c) => Source::EmptyDisk(self.size(c, "empty-disk capacity", Code::BadQuantity)?),
            ast::DiskSource::Volume(v) => {
                let size = match &v.size {
                    Some(sz) => self.size(sz, "volume size", Code::BadQuantity),
                    None => {
                        self.err(
                            Diagnostic::new(Code::VolumeWithoutSize, "a volume needs a size")
                                .at(s.span, "no size=")
                                .help("write `volume size=\"100Gi\"`"),
                        );
                        None
                    }
                };
                let access_mode = v.access_mode.as_ref().and_then(|a| self.choice(a, "access mode", AccessMode::parse, AccessMode::SPELLINGS));
                let import = match &v.source {
                    None => Some(Import::Blank),
                    Some(u) if u.value.starts_with("https://") || u.value.starts_with("http://") => Some(Import::Http(u.value.clone())),
                    Some(u) if u.value.starts_with("docker://") => Some(Import::Registry(u.value.clone())),
                    Some(u) => {
                        self.err(
                            Diagnostic::new(Code::BadSource, format!("`{}` is not an http(s):// or docker:// URL", u.value))
                                .at(u.span, "unsupported source")
                                .help("import over HTTP with source=\"https://…\", from a registry with source=\"docker://…\", or omit source= for a blank volume"),
                        );
                        None
                    }
                };
                Source::Volume(Volume {
                    size: size?,
                    storage_class: v.storage_class.as_ref().map(|s| s.value.clone()),
                    access_mode,
                    import: import?,
                })
            }
            ast::DiskSource::HostDisk(h) => {
                if !h.path.value.starts_with('/') {
                    self.err(
                        Diagnostic::new(Code::BadPath, format!("host-disk path `{}` is not absolute", h.path.value))
                            .at(h.path.span, "relative path")
                            .help("a host-disk is a file on the node: write its absolute path, e.g. \"/var/lib/app/disk.img\""),
                    );
                }
                let kind = match &h.kind {
                    Some(k) => self.choice(k, "host-disk type", HostDiskKind::parse, HostDiskKind::SPELLINGS)?,
                    None => HostDiskKind::Disk,
                };
                let capacity = match &h.capacity {
                    Some(c) => Some(self.size(c, "host-disk capacity", Code::BadQuantity)?),
                    None => None,
                };
                if kind == HostDiskKind::DiskOrCreate && capacity.is_none() {
                    self.err(
                        Diagnostic::new(Code::HostDiskWithoutCapacity, "a disk-or-create host-disk needs a capacity")
                            .at(s.span, "no capacity=")
                            .help("write `host-disk \"/path\" type=\"disk-or-create\" capacity=\"20Gi\"`"),
                    );
                    return None;
                }
                Source::HostDisk { path: h.path.value.clone(), kind, capacity, shared: h.shared.as_ref().is_some_and(|x| x.value) }
            }
        };
        Some(Spanned::new(src, s.span))
    }

    fn networks(&mut self, nets: &[ast::Network]) -> Vec<Network> {
        let mut out = vec![];
        let mut pod: Option<Span> = None;
        for n in nets {
            self.dns_label(&n.name, "network name");
            let masq = n.masquerade.as_ref().is_some_and(|b| b.value);
            let bridge = n.bridge.as_ref().is_some_and(|b| b.value);
            let binding = match (masq, bridge) {
                (true, false) => Binding::Masquerade,
                (false, true) => Binding::Bridge,
                (both, _) => {
                    self.err(
                        Diagnostic::new(
                            Code::BadNetworkBinding,
                            format!("network `{}` {}", n.name.value, if both { "is both masquerade and bridge" } else { "has no binding" }),
                        )
                        .at(n.name.span, "needs exactly one binding")
                        .help("write masquerade=#true (NAT on the pod network) or bridge=#true"),
                    );
                    continue;
                }
            };
            if let Some(m) = &n.multus {
                if binding == Binding::Masquerade {
                    self.err(
                        Diagnostic::new(Code::BadNetworkBinding, format!("network `{}` uses masquerade on a multus network", n.name.value))
                            .at(m.span, "multus network")
                            .help("KubeVirt allows masquerade only on the pod network; use bridge=#true with multus"),
                    );
                    continue;
                }
                let valid = match m.value.split_once('/') {
                    Some((ns, name)) => values::check_dns_label(ns).is_ok() && values::check_dns_label(name).is_ok(),
                    None => values::check_dns_label(&m.value).is_ok(),
                };
                if !valid {
                    self.err(
                        Diagnostic::new(Code::BadName, format!("`{}` is not a NetworkAttachmentDefinition name", m.value))
                            .at(m.span, "not `namespace/name`")
                            .help("write multus=\"namespace/name\" or multus=\"name\""),
                    );
                }
            } else if let Some(first) = pod.replace(n.name.span) {
                self.err(
                    Diagnostic::new(Code::TwoPodNetworks, format!("network `{}` is a second pod network", n.name.value))
                        .at(n.name.span, "second pod network")
                        .also(first, "first pod network")
                        .help("a vm has at most one pod network; give the others multus=\"namespace/name\""),
                );
            }
            if let Some(mac) = &n.mac
                && let Err(e) = values::check_mac(&mac.value) {
                    self.err(
                        Diagnostic::new(Code::BadMac, format!("invalid MAC address: {e}"))
                            .at(mac.span, "not a MAC address")
                            .help("write six hex octets, e.g. \"02:00:00:00:00:01\" (02: marks a locally administered address)"),
                    );
                }
            out.push(Network { name: n.name.clone(), binding, multus: n.multus.as_ref().map(|m| m.value.clone()), mac: n.mac.as_ref().map(|m| m.value.clone()), span: n.span });
        }
        out
    }

    fn ports(&mut self, ports: &[ast::Port], networks: &[Network]) -> Vec<Port> {
        let mut out = vec![];
        let has_masquerade = networks.iter().any(|n| n.binding == Binding::Masquerade);
        let mut numbers: BTreeMap<(i64, String), Span> = BTreeMap::new();
        for p in ports {
            // Kubernetes port names are IANA service names: at most 15 characters.
            if p.name.value.len() > 15 || values::check_dns_label(&p.name.value).is_err() || !p.name.value.chars().any(|c| c.is_ascii_lowercase()) {
                self.err(
                    Diagnostic::new(Code::BadName, format!("port name `{}` is not a valid service name", p.name.value))
                        .at(p.name.span, "not an IANA service name")
                        .help("port names are at most 15 lowercase letters, digits and `-`, with at least one letter"),
                );
            }
            let proto = p.protocol.as_ref().map_or("tcp".to_string(), |s| s.value.to_ascii_lowercase());
            if let Some(&first) = numbers.get(&(p.number.value, proto.clone())) {
                self.err(
                    Diagnostic::new(Code::DuplicatePort, format!("port {} ({proto}) is declared twice", p.number.value))
                        .at(p.number.span, "declared again here")
                        .also(first, "first declared here")
                        .help("each port number and protocol is forwarded once; remove one of them"),
                );
            } else {
                numbers.insert((p.number.value, proto), p.number.span);
            }
            let number = match u16::try_from(p.number.value) {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    self.err(
                        Diagnostic::new(Code::PortOutOfRange, format!("port {} is outside 1-65535", p.number.value))
                            .at(p.number.span, "out of range")
                            .help("TCP and UDP ports are 1 to 65535"),
                    );
                    None
                }
            };
            if !has_masquerade {
                self.err(
                    Diagnostic::new(Code::PortWithoutMasquerade, format!("port `{}` needs a masquerade network", p.name.value))
                        .at(p.span, "no masquerade network to forward it on")
                        .help("add `network \"default\" masquerade=#true`; ports are forwarded on the masquerade NIC"),
                );
            }
            let protocol = match &p.protocol {
                Some(s) => {
                    let lower = Spanned::new(s.value.to_ascii_lowercase(), s.span);
                    self.choice(&lower, "protocol", Protocol::parse, Protocol::SPELLINGS)
                }
                None => Some(Protocol::Tcp),
            };
            if let (Some(number), Some(protocol)) = (number, protocol) {
                out.push(Port { name: p.name.value.clone(), number, protocol, span: p.span });
            }
        }
        out
    }

    fn cloud_init(&mut self, c: &Spanned<ast::CloudInit>) -> Option<Spanned<CloudInit>> {
        let ci = &c.value;
        if ci.user_data.is_none() && ci.user_data_file.is_none() && ci.network_data.is_none() && ci.network_data_file.is_none() && ci.ssh_keys.is_empty() {
            self.err(
                Diagnostic::new(Code::EmptyCloudInit, "cloud-init has no data")
                    .at(c.span, "empty cloud-init block")
                    .help("give it user-data, user-data-file, network-data, network-data-file or ssh-key, or remove it"),
            );
            return None;
        }
        let user_data = self.inline_or_file(&ci.user_data, &ci.user_data_file, "user-data")?;
        let network_data = self.inline_or_file(&ci.network_data, &ci.network_data_file, "network-data")?;
        let user_data = match (user_data, ci.ssh_keys.as_slice()) {
            (u, []) => u,
            (None, keys) => Some(format!("#cloud-config\n{}", ssh_section(keys))),
            (Some(u), keys) if u.starts_with("#cloud-config") && !u.contains("ssh_authorized_keys") => {
                let sep = if u.ends_with('\n') { "" } else { "\n" };
                Some(format!("{u}{sep}{}", ssh_section(keys)))
            }
            (Some(_), keys) => {
                self.err(
                    Diagnostic::new(Code::CloudInitConflict, "ssh-key needs #cloud-config user-data without its own ssh_authorized_keys")
                        .at(keys[0].span, "ssh-key here")
                        .help("add the key to the user-data's ssh_authorized_keys, or drop the ssh-key nodes"),
                );
                return None;
            }
        };
        Some(Spanned::new(CloudInit { user_data, network_data }, c.span))
    }

    /// `user-data "…"` or `user-data-file "path"` (relative to the spec file), not both.
    fn inline_or_file(&mut self, inline: &Option<Str>, file: &Option<Str>, what: &str) -> Option<Option<String>> {
        match (inline, file) {
            (Some(i), Some(f)) => {
                self.err(
                    Diagnostic::new(Code::CloudInitConflict, format!("{what} is given inline and as a file"))
                        .at(f.span, "file given here")
                        .also(i.span, "inline data given here")
                        .help(format!("keep either `{what}` or `{what}-file`")),
                );
                None
            }
            (Some(i), None) => Some(Some(i.value.clone())),
            (None, Some(f)) => {
                let spec = &self.sources.get(f.span.file).path;
                let path = normalize(&spec.parent().unwrap_or(Path::new("")).join(&f.value));
                let read = self.loader.read(&path).map_err(|e| e.to_string()).and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8 text".to_string()));
                match read {
                    Ok(text) => Some(Some(text)),
                    Err(e) => {
                        self.err(
                            Diagnostic::new(Code::CloudInitFile, format!("cannot read {what} file {}: {e}", path.display()))
                                .at(f.span, "cannot be read")
                                .help("the path is relative to the spec file that names it"),
                        );
                        None
                    }
                }
            }
            (None, None) => Some(None),
        }
    }
}

fn ssh_section(keys: &[Str]) -> String {
    let mut s = String::from("ssh_authorized_keys:\n");
    for k in keys {
        s.push_str(&format!("  - {}\n", k.value));
    }
    s
}
