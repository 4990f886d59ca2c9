//! The language's grammar as data: which nodes each context accepts, their properties,
//! the kind of value each takes and a one-line description of each.
//!
//! One source of truth: the decoder checks nodes and properties against these tables (and
//! draws its "did you mean" from them), and editor tooling (`vmform lsp`: completion,
//! hover) reads the same tables, so what an editor offers is what the compiler accepts.

use crate::model::{AccessMode, Bus, Eviction, FirmwareKind, HostDiskKind, Protocol, RunStrategy, VmActions};

/// Where a node stands: the top level of a file, or inside the block of some node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Top,
    /// The block of `vm`, `template` and `defaults`.
    Body,
    Instancetype,
    Disk,
    Network,
    CloudInit,
    Lifecycle,
}

/// What a node's argument or a property's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// Any string.
    Str,
    Int,
    Bool,
    /// One of these spellings (a `choice!` of the model).
    Choice(&'static [&'static str]),
    /// A quantity such as `"4Gi"` (section 6.1).
    Quantity,
    /// A duration such as `"30s"` (section 6.2).
    Duration,
    /// The name a node declares (a vm, a param, a disk…).
    Name,
    /// The name of a template defined in the run.
    Template,
    /// The name of an instancetype defined in the run.
    Instancetype,
    /// A file path, relative to the file it is written in.
    Path,
}

/// A node's children block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    None,
    Optional(Context),
    Required(Context),
}

impl Block {
    pub fn context(self) -> Option<Context> {
        match self {
            Block::None => None,
            Block::Optional(c) | Block::Required(c) => Some(c),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Prop {
    pub name: &'static str,
    pub value: Value,
    pub doc: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub name: &'static str,
    /// The kind of the first argument, if the node takes one.
    pub arg: Option<Value>,
    pub props: &'static [Prop],
    pub block: Block,
    /// Key="value" pairs of free keys (`labels`, `annotations`, `node-selector`).
    pub pairs: bool,
    pub doc: &'static str,
}

impl Node {
    pub fn prop(&self, name: &str) -> Option<&'static Prop> {
        self.props.iter().find(|p| p.name == name)
    }
    pub fn prop_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.props.iter().map(|p| p.name)
    }
}

const fn node(name: &'static str, arg: Option<Value>, props: &'static [Prop], block: Block, doc: &'static str) -> Node {
    Node { name, arg, props, block, pairs: false, doc }
}
const fn prop(name: &'static str, value: Value, doc: &'static str) -> Prop {
    Prop { name, value, doc }
}
const fn pairs(name: &'static str, doc: &'static str) -> Node {
    Node { name, arg: None, props: &[], block: Block::None, pairs: true, doc }
}
const fn leaf(name: &'static str, arg: Value, doc: &'static str) -> Node {
    node(name, Some(arg), &[], Block::None, doc)
}

use Value::*;

// Top level.
pub const PARAM: Node = node("param", Some(Name), &[prop("default", Str, "The param's value when no `--var` sets it.")], Block::None,
    "Declares a string parameter, used as `${NAME}` in strings.");
pub const DEFAULTS: Node = node("defaults", None, &[], Block::Required(Context::Body), "Settings applied to every vm of the run.");
pub const INSTANCETYPE: Node = node("instancetype", Some(Name), &[], Block::Required(Context::Instancetype),
    "A named size (cpu and memory) that a vm names with `instancetype=`.");
pub const TEMPLATE: Node = node("template", Some(Name), &[], Block::Required(Context::Body),
    "A reusable machine body that a vm names with `template=`.");
pub const VM: Node = node(
    "vm",
    Some(Name),
    &[
        prop("count", Int, "Make this many machines (1-1000), named NAME-0 … NAME-(N-1) or by `${index}`."),
        prop("template", Template, "The template whose body this vm starts from."),
        prop("instancetype", Instancetype, "The instancetype that sets this vm's cpu and memory."),
    ],
    Block::Optional(Context::Body),
    "Declares a virtual machine (or `count` of them).",
);
pub const INCLUDE: Node = leaf("include", Path, "Reads another spec file, relative to this one.");

// Machine bodies.
pub const NAMESPACE: Node = leaf("namespace", Str, "The machine's namespace (a DNS-1123 label); `default` when absent.");
pub const LABELS: Node = pairs("labels", "Labels (key=\"value\") on the VirtualMachine and its instance.");
pub const ANNOTATIONS: Node = pairs("annotations", "Annotations (key=\"value\") on the VirtualMachine.");
pub const NODE_SELECTOR: Node = pairs("node-selector", "Node labels (key=\"value\") the machine must be scheduled on.");
pub const RUN_STRATEGY: Node = leaf("run-strategy", Choice(RunStrategy::SPELLINGS), "When the machine runs; `always` when absent.");
pub const CPU: Node = node(
    "cpu",
    Some(Int),
    &[
        prop("sockets", Int, "CPU sockets."),
        prop("cores", Int, "Cores per socket."),
        prop("threads", Int, "Threads per core."),
        prop("model", Str, "The CPU model, e.g. `host-passthrough`."),
    ],
    Block::None,
    "CPUs: a count (`cpu 2`, cores) or a topology (`cpu sockets=1 cores=2 threads=1`).",
);
pub const MEMORY: Node = leaf("memory", Quantity, "Guest memory, a quantity such as \"4Gi\".");
pub const MACHINE: Node = leaf("machine", Str, "The machine type, e.g. \"q35\".");
pub const FIRMWARE: Node = node(
    "firmware",
    Some(Choice(FirmwareKind::SPELLINGS)),
    &[prop("secure-boot", Bool, "Secure boot (needs `efi`).")],
    Block::None,
    "Firmware: `bios` or `efi`.",
);
pub const DISK: Node = node("disk", Some(Name), &[], Block::Required(Context::Disk), "A disk: one source (image, volume, pvc, host-disk, empty-disk) and options.");
pub const NETWORK: Node = node(
    "network",
    Some(Name),
    &[
        prop("masquerade", Bool, "NAT behind the pod's address (the pod network only)."),
        prop("bridge", Bool, "Bridge the guest onto the network."),
        prop("multus", Str, "A Multus network, `NAD` or `NS/NAD`; absent means the pod network."),
        prop("mac", Str, "The interface's MAC address."),
    ],
    Block::Optional(Context::Network),
    "A network interface; exactly one of masquerade or bridge.",
);
pub const PORT: Node = node(
    "port",
    Some(Name),
    &[prop("protocol", Choice(Protocol::SPELLINGS), "`tcp` (the default) or `udp`.")],
    Block::None,
    "A port forwarded to the guest: `port \"http\" 80`.",
);
pub const CLOUD_INIT: Node = node("cloud-init", None, &[], Block::Required(Context::CloudInit), "A cloud-init NoCloud seed disk.");
pub const EVICTION: Node = leaf("eviction", Choice(Eviction::SPELLINGS), "What happens on a node drain: `live-migrate` or `none`.");
pub const TERMINATION_GRACE: Node = leaf("termination-grace", Duration, "How long the guest has to shut down, e.g. \"30s\".");
pub const LIFECYCLE: Node = node(
    "lifecycle",
    None,
    &[
        prop("prevent-destroy", Bool, "`vmform apply` refuses to delete this machine."),
        prop("ignore-changes", Str, "A field path whose drift `plan` does not report."),
        prop("vm-actions", Choice(VmActions::SPELLINGS), "Keep (default) or revert a run strategy changed by a VM action."),
    ],
    Block::Optional(Context::Lifecycle),
    "Guards for plan and apply; never emitted.",
);

// Inside `disk`.
pub const IMAGE: Node = leaf("image", Str, "Source: a container disk image reference.");
pub const VOLUME: Node = node(
    "volume",
    None,
    &[
        prop("size", Quantity, "The volume's size (required)."),
        prop("storage-class", Str, "The storage class; the cluster's default when absent."),
        prop("access-mode", Choice(AccessMode::SPELLINGS), "The volume's access mode."),
        prop("source", Str, "Import from an `http(s)://` URL or a `docker://` image; blank when absent."),
    ],
    Block::None,
    "Source: a new data volume made with the machine.",
);
pub const PVC: Node = leaf("pvc", Str, "Source: an existing persistent volume claim.");
pub const HOST_DISK: Node = node(
    "host-disk",
    Some(Path),
    &[
        prop("type", Choice(HostDiskKind::SPELLINGS), "`disk` (must exist) or `disk-or-create`."),
        prop("capacity", Quantity, "The size of a disk-or-create image."),
        prop("shared", Bool, "The image is shared between nodes."),
    ],
    Block::None,
    "Source: an image file on the node (an absolute path).",
);
pub const EMPTY_DISK: Node = leaf("empty-disk", Quantity, "Source: a blank scratch disk of this capacity, gone when the guest stops.");
pub const BUS: Node = leaf("bus", Choice(Bus::SPELLINGS), "The disk bus; KubeVirt picks when absent.");
pub const BOOT_ORDER: Node = leaf("boot-order", Int, "Boot priority (1 first); unique among the machine's disks.");
pub const READ_ONLY: Node = leaf("read-only", Bool, "The guest cannot write the disk; alone it means #true.");
pub const SERIAL: Node = leaf("serial", Str, "The disk's serial number, as the guest sees it.");
pub const CDROM: Node = leaf("cdrom", Bool, "Attach as a CD-ROM; alone it means #true.");

// Inside `network`.
pub const MAC: Node = leaf("mac", Str, "The interface's MAC address.");

// Inside `cloud-init`.
pub const USER_DATA: Node = leaf("user-data", Str, "The user data (cloud-config or a script).");
pub const USER_DATA_FILE: Node = leaf("user-data-file", Path, "A file holding the user data, relative to this file.");
pub const NETWORK_DATA: Node = leaf("network-data", Str, "The network data (netplan v2 or v1).");
pub const NETWORK_DATA_FILE: Node = leaf("network-data-file", Path, "A file holding the network data, relative to this file.");
pub const SSH_KEY: Node = leaf("ssh-key", Str, "An SSH public key added to the cloud-config.");

// Inside `lifecycle`.
pub const IGNORE_CHANGES: Node = leaf("ignore-changes", Str, "Field paths whose drift `plan` does not report (any number of arguments).");

const TOP_NODES: &[Node] = &[PARAM, DEFAULTS, INSTANCETYPE, TEMPLATE, VM, INCLUDE];
const BODY_NODES: &[Node] = &[
    NAMESPACE, LABELS, ANNOTATIONS, RUN_STRATEGY, CPU, MEMORY, MACHINE, FIRMWARE, DISK, NETWORK, PORT, CLOUD_INIT,
    NODE_SELECTOR, EVICTION, TERMINATION_GRACE, LIFECYCLE,
];
const INSTANCETYPE_NODES: &[Node] = &[CPU, MEMORY];
const DISK_NODES: &[Node] = &[IMAGE, VOLUME, PVC, HOST_DISK, EMPTY_DISK, BUS, BOOT_ORDER, READ_ONLY, SERIAL, CDROM];
const NETWORK_NODES: &[Node] = &[MAC];
const CLOUD_INIT_NODES: &[Node] = &[USER_DATA, USER_DATA_FILE, NETWORK_DATA, NETWORK_DATA_FILE, SSH_KEY];
const LIFECYCLE_NODES: &[Node] = &[IGNORE_CHANGES];

impl Context {
    /// The nodes this context accepts, in the order the reference lists them.
    pub fn nodes(self) -> &'static [Node] {
        match self {
            Context::Top => TOP_NODES,
            Context::Body => BODY_NODES,
            Context::Instancetype => INSTANCETYPE_NODES,
            Context::Disk => DISK_NODES,
            Context::Network => NETWORK_NODES,
            Context::CloudInit => CLOUD_INIT_NODES,
            Context::Lifecycle => LIFECYCLE_NODES,
        }
    }
    pub fn node(self, name: &str) -> Option<&'static Node> {
        self.nodes().iter().find(|n| n.name == name)
    }
    pub fn node_names(self) -> impl Iterator<Item = &'static str> {
        self.nodes().iter().map(|n| n.name)
    }
}

/// The context inside the blocks of `path` (node names, outermost first), if every one of
/// them is a node that takes a block where it stands.
pub fn context_of(path: &[&str]) -> Option<Context> {
    path.iter().try_fold(Context::Top, |ctx, name| ctx.node(name)?.block.context())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_contexts_follow_the_blocks() {
        assert_eq!(context_of(&[]), Some(Context::Top));
        assert_eq!(context_of(&["vm", "disk"]), Some(Context::Disk));
        assert_eq!(context_of(&["template", "network"]), Some(Context::Network));
        assert_eq!(context_of(&["defaults", "lifecycle"]), Some(Context::Lifecycle));
        assert_eq!(context_of(&["instancetype"]), Some(Context::Instancetype));
        assert_eq!(context_of(&["vm", "memory"]), None, "memory takes no block");
        assert_eq!(context_of(&["disk"]), None, "disk is not a top-level node");
    }

    #[test]
    fn every_node_and_property_is_documented_once_per_context() {
        for ctx in [Context::Top, Context::Body, Context::Instancetype, Context::Disk, Context::Network, Context::CloudInit, Context::Lifecycle] {
            let names: Vec<_> = ctx.node_names().collect();
            for (i, n) in ctx.nodes().iter().enumerate() {
                assert!(!n.doc.is_empty(), "{} has no doc", n.name);
                assert!(!names[..i].contains(&n.name), "{} twice in {ctx:?}", n.name);
                for p in n.props {
                    assert!(!p.doc.is_empty(), "{}.{} has no doc", n.name, p.name);
                }
            }
        }
    }
}
