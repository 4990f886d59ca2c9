//! The decoded syntax tree: what each file says, with spans, before anything is resolved.
//!
//! Strings stay raw here (`Str`): `${...}` is expanded per machine during resolve, and
//! typed values (quantities, durations, choices) are parsed after that expansion.

use crate::source::{FileId, Span, Spanned};

/// A string as written, interpolation not yet applied.
pub type Str = Spanned<String>;
pub type Int = Spanned<i64>;
pub type Bool = Spanned<bool>;

#[derive(Debug, Clone)]
pub struct File {
    pub id: FileId,
    pub items: Vec<Item>,
}

/// Bodies are boxed: an item list then costs a pointer per item, and a vm's syntax can
/// be dropped on its own once its machines are made.
#[derive(Debug, Clone)]
pub enum Item {
    Param(Param),
    Defaults(Box<Body>),
    Instancetype(Instancetype),
    Template(Box<Template>),
    Vm(Box<Vm>),
    Include(Include),
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: Str,
    pub default: Option<Str>,
}

#[derive(Debug, Clone)]
pub struct Instancetype {
    pub name: Str,
    pub cpu: Option<Spanned<Cpu>>,
    pub memory: Option<Str>,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub name: Str,
    pub body: Body,
    /// The whole `template` node.
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub name: Str,
    pub count: Option<Int>,
    pub template: Option<Str>,
    pub instancetype: Option<Str>,
    pub body: Body,
    /// The whole `vm` node.
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Include {
    pub path: Str,
}

/// The settings of a machine; `defaults`, `template` and `vm` all hold one.
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub namespace: Option<Str>,
    pub labels: Vec<(Str, Str)>,
    pub annotations: Vec<(Str, Str)>,
    pub run_strategy: Option<Str>,
    pub cpu: Option<Spanned<Cpu>>,
    pub memory: Option<Str>,
    pub machine: Option<Str>,
    pub firmware: Option<Spanned<Firmware>>,
    pub disks: Vec<Disk>,
    pub networks: Vec<Network>,
    pub ports: Vec<Port>,
    pub cloud_init: Option<Spanned<CloudInit>>,
    pub node_selector: Vec<(Str, Str)>,
    pub eviction: Option<Str>,
    pub termination_grace: Option<Str>,
    pub lifecycle: Option<Spanned<Lifecycle>>,
}

/// `cpu N` (N cores) or `cpu sockets= cores= threads= model=`.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    pub cores: Option<Int>,
    pub sockets: Option<Int>,
    pub threads: Option<Int>,
    pub model: Option<Str>,
}

#[derive(Debug, Clone)]
pub struct Firmware {
    pub kind: Str,
    pub secure_boot: Option<Bool>,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub name: Str,
    /// Every SOURCE node written in this disk block (validation wants exactly one).
    pub sources: Vec<Spanned<DiskSource>>,
    pub bus: Option<Str>,
    pub boot_order: Option<Int>,
    pub read_only: Option<Bool>,
    pub serial: Option<Str>,
    pub cdrom: Option<Bool>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum DiskSource {
    Image(Str),
    Volume(Volume),
    Pvc(Str),
    HostDisk(HostDisk),
    EmptyDisk(Str),
}

impl DiskSource {
    pub fn keyword(&self) -> &'static str {
        match self {
            DiskSource::Image(_) => "image",
            DiskSource::Volume(_) => "volume",
            DiskSource::Pvc(_) => "pvc",
            DiskSource::HostDisk(_) => "host-disk",
            DiskSource::EmptyDisk(_) => "empty-disk",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub size: Option<Str>,
    pub storage_class: Option<Str>,
    pub access_mode: Option<Str>,
    pub source: Option<Str>,
}

#[derive(Debug, Clone)]
pub struct HostDisk {
    pub path: Str,
    pub kind: Option<Str>,
    pub capacity: Option<Str>,
    pub shared: Option<Bool>,
}

#[derive(Debug, Clone)]
pub struct Network {
    pub name: Str,
    pub masquerade: Option<Bool>,
    pub bridge: Option<Bool>,
    pub multus: Option<Str>,
    pub mac: Option<Str>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Port {
    pub name: Str,
    pub number: Int,
    pub protocol: Option<Str>,
    pub span: Span,
}

#[derive(Debug, Clone, Default)]
pub struct CloudInit {
    pub user_data: Option<Str>,
    pub user_data_file: Option<Str>,
    pub network_data: Option<Str>,
    pub network_data_file: Option<Str>,
    pub ssh_keys: Vec<Str>,
}

#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    pub prevent_destroy: Option<Bool>,
    pub ignore_changes: Vec<Str>,
    pub vm_actions: Option<Str>,
}
