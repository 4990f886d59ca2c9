//! The validated model: one [`Vm`] per machine, every value typed and checked, spans kept
//! so later stages (lowering's source map, policy findings) can point back at the specs.

use crate::source::{Span, Spanned};
use crate::values::Quantity;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Vm {
    pub name: Spanned<String>,
    /// Span of the `namespace` node, or of the vm's name when the namespace is defaulted.
    pub namespace: Spanned<String>,
    pub labels: BTreeMap<String, Spanned<String>>,
    pub annotations: BTreeMap<String, Spanned<String>>,
    pub node_selector: BTreeMap<String, Spanned<String>>,
    pub run_strategy: Spanned<RunStrategy>,
    pub cpu: Option<Spanned<Cpu>>,
    pub memory: Option<Spanned<Quantity>>,
    pub machine: Option<Spanned<String>>,
    pub firmware: Option<Spanned<Firmware>>,
    pub disks: Vec<Disk>,
    pub networks: Vec<Network>,
    pub ports: Vec<Port>,
    pub cloud_init: Option<Spanned<CloudInit>>,
    pub eviction: Option<Spanned<Eviction>>,
    pub termination_grace: Option<Spanned<u64>>,
    pub lifecycle: Lifecycle,
    /// The `vm` node.
    pub span: Span,
}

/// Declares a string-valued choice: its spellings in the language and in KubeVirt.
macro_rules! choice {
    ($name:ident { $($variant:ident = $lang:literal => $kube:literal,)* }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant,)* }
        impl $name {
            pub const SPELLINGS: &'static [&'static str] = &[$($lang,)*];
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($lang => Some($name::$variant),)* _ => None }
            }
            pub fn kubevirt(self) -> &'static str {
                match self { $($name::$variant => $kube,)* }
            }
            pub fn spelling(self) -> &'static str {
                match self { $($name::$variant => $lang,)* }
            }
        }
    };
}

choice!(RunStrategy {
    Always = "always" => "Always",
    RerunOnFailure = "rerun-on-failure" => "RerunOnFailure",
    Manual = "manual" => "Manual",
    Halted = "halted" => "Halted",
    Once = "once" => "Once",
});

// What `apply` does about a run strategy a VM action (`vmform vm start|stop`, virtctl,
// the UI) changed on the cluster since the specs' value was applied.
choice!(VmActions {
    Keep = "keep" => "keep",
    Revert = "revert" => "revert",
});

choice!(Eviction {
    LiveMigrate = "live-migrate" => "LiveMigrate",
    None = "none" => "None",
});

choice!(FirmwareKind {
    Bios = "bios" => "bios",
    Efi = "efi" => "efi",
});

choice!(Bus {
    Virtio = "virtio" => "virtio",
    Sata = "sata" => "sata",
    Scsi = "scsi" => "scsi",
    Usb = "usb" => "usb",
});

choice!(AccessMode {
    ReadWriteOnce = "ReadWriteOnce" => "ReadWriteOnce",
    ReadWriteMany = "ReadWriteMany" => "ReadWriteMany",
    ReadOnlyMany = "ReadOnlyMany" => "ReadOnlyMany",
    ReadWriteOncePod = "ReadWriteOncePod" => "ReadWriteOncePod",
});

choice!(HostDiskKind {
    Disk = "disk" => "Disk",
    DiskOrCreate = "disk-or-create" => "DiskOrCreate",
});

choice!(Protocol {
    Tcp = "tcp" => "TCP",
    Udp = "udp" => "UDP",
});

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpu {
    pub cores: Option<u32>,
    pub sockets: Option<u32>,
    pub threads: Option<u32>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub kind: FirmwareKind,
    pub secure_boot: bool,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub name: Spanned<String>,
    pub source: Spanned<Source>,
    pub bus: Option<Bus>,
    pub boot_order: Option<u32>,
    pub read_only: Option<bool>,
    pub serial: Option<String>,
    pub cdrom: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Image(String),
    Volume(Volume),
    Pvc(String),
    HostDisk { path: String, kind: HostDiskKind, capacity: Option<Quantity>, shared: bool },
    EmptyDisk(Quantity),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub size: Quantity,
    pub storage_class: Option<String>,
    pub access_mode: Option<AccessMode>,
    pub import: Import,
}

/// Where a new data volume's content comes from (CDI's `source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Import {
    Blank,
    Http(String),
    Registry(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Masquerade,
    Bridge,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub name: Spanned<String>,
    pub binding: Binding,
    /// `namespace/name` of a Multus NetworkAttachmentDefinition; `None` is the pod network.
    pub multus: Option<String>,
    pub mac: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub number: u16,
    pub protocol: Protocol,
    pub span: Span,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudInit {
    pub user_data: Option<String>,
    pub network_data: Option<String>,
}

/// Plan/apply guards; never emitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub prevent_destroy: bool,
    /// Where `prevent-destroy=#true` is written, for the refusal to point at.
    pub prevent_destroy_at: Option<crate::Span>,
    pub ignore_changes: Vec<String>,
    /// `None`: not set here (plan/apply default: keep).
    pub vm_actions: Option<VmActions>,
}
