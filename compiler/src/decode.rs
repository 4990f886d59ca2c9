//! Decode a parsed KDL document into the [`ast`](crate::ast), with spans.
//!
//! Every node is checked against the names its context allows in [`grammar`]; unknown
//! names get a "did you mean" from the same tables, so suggestions, editor completion and
//! the grammar never drift apart.

use crate::ast::*;
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::grammar::{self, Block, Context};
use crate::source::{FileId, Span, Spanned};
use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};


/// Decode one file. Problems are pushed to `diags`; what could be decoded is returned.
pub fn decode_file(id: FileId, doc: &KdlDocument, diags: &mut Diagnostics) -> File {
    let mut d = Decoder { file: id, diags };
    let mut items = vec![];
    for node in doc.nodes() {
        if let Some(item) = d.top_item(node) {
            items.push(item);
        }
    }
    items.shrink_to_fit();
    File { id, items }
}

struct Decoder<'a> {
    file: FileId,
    diags: &'a mut Diagnostics,
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn type_name(v: &KdlValue) -> &'static str {
    match v {
        KdlValue::String(_) => "a string",
        KdlValue::Integer(_) => "an integer",
        KdlValue::Float(_) => "a number",
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Null => "#null",
    }
}

/// Checked access to one node's arguments, properties and children.
struct NodeRef<'n> {
    node: &'n KdlNode,
    name: &'n str,
    file: FileId,
}

impl<'n> NodeRef<'n> {
    fn span(&self) -> Span {
        Span::from_miette(self.file, self.node.span())
    }
    fn name_span(&self) -> Span {
        Span::from_miette(self.file, self.node.name().span())
    }
    /// The span of an entry's value alone (for a property, after the `=`).
    fn value_span(&self, e: &KdlEntry) -> Span {
        let whole = e.span();
        let repr_len = e.format().map(|f| f.value_repr.len()).unwrap_or(whole.len());
        let len = repr_len.min(whole.len());
        Span::new(self.file, whole.offset() + whole.len() - len, len)
    }
    fn args(&self) -> impl Iterator<Item = &'n KdlEntry> {
        self.node.entries().iter().filter(|e| e.name().is_none())
    }
    fn arg(&self, i: usize) -> Option<&'n KdlEntry> {
        self.args().nth(i)
    }
    fn prop(&self, key: &str) -> Option<&'n KdlEntry> {
        // KDL: the last occurrence of a property wins; duplicates are reported in `check`.
        self.node.entries().iter().rev().find(|e| e.name().map(|n| n.value()) == Some(key))
    }
}

impl Decoder<'_> {
    fn node<'n>(&self, node: &'n KdlNode) -> NodeRef<'n> {
        NodeRef { node, name: node.name().value(), file: self.file }
    }

    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Report unknown properties, surplus arguments, duplicate properties, and a
    /// children block on a node that takes none (or the lack of one where it is needed).
    fn check_node(&mut self, n: &NodeRef, max_args: usize, spec: &grammar::Node) {
        self.check(n, max_args, spec.props, spec.block);
    }

    fn check(&mut self, n: &NodeRef, max_args: usize, props: &[grammar::Prop], children: Block) {
        let mut seen: Vec<&str> = vec![];
        let mut nargs = 0;
        for e in n.node.entries() {
            match e.name() {
                Some(key) => {
                    let k = key.value();
                    let span = Span::from_miette(self.file, key.span());
                    if !props.iter().any(|p| p.name == k) {
                        let mut d = Diagnostic::new(
                            Code::UnknownProperty,
                            format!("`{}` has no property `{k}`", n.name),
                        )
                        .at(span, "unknown property");
                        d = match did_you_mean(k, props.iter().map(|p| p.name)) {
                            Some(s) => d.help(format!("did you mean `{s}`?")),
                            None if props.is_empty() => d.help(format!("`{}` takes no properties", n.name)),
                            None => d.help(format!("`{}` takes: {}", n.name, props.iter().map(|p| p.name).collect::<Vec<_>>().join(", "))),
                        };
                        self.err(d);
                    } else if seen.contains(&k) {
                        self.err(
                            Diagnostic::new(Code::Duplicate, format!("property `{k}` is given twice"))
                                .at(span, "given again here")
                                .help("remove one of them; KDL would silently keep only the last"),
                        );
                    }
                    seen.push(k);
                }
                None => {
                    nargs += 1;
                    if nargs > max_args {
                        let span = Span::from_miette(self.file, e.span());
                        let takes = match max_args {
                            0 => "no arguments".to_string(),
                            1 => "one argument".to_string(),
                            k => format!("{k} arguments"),
                        };
                        self.err(
                            Diagnostic::new(
                                Code::UnexpectedArgument,
                                format!("`{}` takes {takes}", n.name),
                            )
                            .at(span, "unexpected argument")
                            .help("remove it; to set two things, write two nodes (one per line, or separated by `;`)"),
                        );
                    }
                }
            }
        }
        match (children, n.node.children()) {
            (Block::None, Some(_)) => self.err(
                Diagnostic::new(Code::ChildrenExpected, format!("`{}` takes no children block", n.name))
                    .at(n.name_span(), "has a children block")
                    .help("write its settings as arguments or properties on the node itself"),
            ),
            (Block::Required(_), None) => self.err(
                Diagnostic::new(Code::ChildrenExpected, format!("`{}` needs a children block", n.name))
                    .at(n.span(), "no `{ ... }` block")
                    .help(format!("write `{} ... {{ ... }}`", n.name)),
            ),
            _ => {}
        }
    }

    fn value_of<T>(
        &mut self,
        n: &NodeRef,
        e: &KdlEntry,
        what: &str,
        want: &str,
        f: impl Fn(&KdlValue) -> Option<T>,
    ) -> Option<Spanned<T>> {
        let span = n.value_span(e);
        match f(e.value()) {
            Some(v) => Some(Spanned::new(v, span)),
            None => {
                self.err(
                    Diagnostic::new(
                        Code::WrongType,
                        format!("{what} must be {want}, found {}", type_name(e.value())),
                    )
                    .at(span, format!("expected {want}"))
                    .help(type_help(want)),
                );
                None
            }
        }
    }

    fn str_entry(&mut self, n: &NodeRef, e: Option<&KdlEntry>, what: &str) -> Option<Str> {
        self.value_of(n, e?, what, "a string", |v| v.as_string().map(str::to_owned))
    }
    fn int_entry(&mut self, n: &NodeRef, e: Option<&KdlEntry>, what: &str) -> Option<Int> {
        let e = e?;
        if let KdlValue::Integer(i) = e.value()
            && i64::try_from(*i).is_err() {
                self.err(
                    Diagnostic::new(Code::WrongType, format!("{what} is too large"))
                        .at(n.value_span(e), "too large")
                        .help("integers must fit in 64 bits; no vmform setting comes near that"),
                );
                return None;
            }
        self.value_of(n, e, what, "an integer", |v| match v {
            KdlValue::Integer(i) => i64::try_from(*i).ok(),
            _ => None,
        })
    }
    fn bool_entry(&mut self, n: &NodeRef, e: Option<&KdlEntry>, what: &str) -> Option<Bool> {
        self.value_of(n, e?, what, "#true or #false", |v| v.as_bool())
    }

    fn require<T>(&mut self, n: &NodeRef, v: Option<T>, present: bool, what: &str, example: &str) -> Option<T> {
        if v.is_none() && !present {
            self.err(
                Diagnostic::new(Code::MissingArgument, format!("`{}` needs {what}", n.name))
                    .at(n.name_span(), format!("{what} missing"))
                    .help(format!("write `{example}`")),
            );
        }
        v
    }

    /// The one required string argument of nodes such as `memory "2Gi"`.
    fn single_str(&mut self, n: &NodeRef, what: &str, example: &str) -> Option<Str> {
        self.check(n, 1, &[], Block::None);
        let e = n.arg(0);
        let v = self.str_entry(n, e, &format!("the value of `{}`", n.name));
        self.require(n, v, e.is_some(), what, example)
    }

    fn name_arg(&mut self, n: &NodeRef, example: &str) -> Option<Str> {
        let e = n.arg(0);
        let v = self.str_entry(n, e, &format!("the name of `{}`", n.name));
        self.require(n, v, e.is_some(), "a name", example)
    }

    fn unknown_node(&mut self, n: &NodeRef, allowed: Context, context: &str) {
        let allowed: Vec<&str> = allowed.node_names().collect();
        let mut d = Diagnostic::new(Code::UnknownNode, format!("unknown node `{}` in {context}", n.name))
            .at(n.name_span(), "unknown node");
        d = match did_you_mean(n.name, allowed.iter().copied()) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help(format!("{context} may contain: {}", allowed.join(", "))),
        };
        self.err(d);
    }

    fn top_item(&mut self, node: &KdlNode) -> Option<Item> {
        let n = self.node(node);
        match n.name {
            "param" => {
                self.check_node(&n, 1, &grammar::PARAM);
                let name = self.name_arg(&n, "param \"env\" default=\"staging\"")?;
                let default = self.str_entry(&n, n.prop("default"), "a param's default");
                Some(Item::Param(Param { name, default }))
            }
            "defaults" => {
                self.check_node(&n, 0, &grammar::DEFAULTS);
                Some(Item::Defaults(Box::new(self.body(&n, "defaults"))))
            }
            "instancetype" => {
                self.check_node(&n, 1, &grammar::INSTANCETYPE);
                let name = self.name_arg(&n, "instancetype \"small\" { cpu 1; memory \"2Gi\" }");
                let mut it = Instancetype { name: name.clone()?, cpu: None, memory: None };
                for child in children(node) {
                    let c = self.node(child);
                    match c.name {
                        "cpu" => {
                            let cpu = self.cpu(&c);
                            self.once(&c, &mut it.cpu, cpu);
                        }
                        "memory" => {
                            let m = self.single_str(&c, "a quantity", "memory \"2Gi\"");
                            self.once(&c, &mut it.memory, m);
                        }
                        _ => self.unknown_node(&c, Context::Instancetype, "an instancetype"),
                    }
                }
                Some(Item::Instancetype(it))
            }
            "template" => {
                self.check_node(&n, 1, &grammar::TEMPLATE);
                let name = self.name_arg(&n, "template \"linux\" { ... }");
                let body = self.body(&n, "a template");
                Some(Item::Template(Box::new(Template { name: name?, body, span: n.span() })))
            }
            "vm" => {
                self.check_node(&n, 1, &grammar::VM);
                let name = self.name_arg(&n, "vm \"web\" { ... }");
                let count = self.int_entry(&n, n.prop("count"), "count");
                let template = self.str_entry(&n, n.prop("template"), "template");
                let instancetype = self.str_entry(&n, n.prop("instancetype"), "instancetype");
                let body = self.body(&n, "a vm");
                Some(Item::Vm(Box::new(Vm { name: name?, count, template, instancetype, body, span: n.span() })))
            }
            "include" => {
                let path = self.single_str(&n, "a path", "include \"vms/web.kdl\"")?;
                if path.value.trim().is_empty() {
                    self.err(
                        Diagnostic::new(Code::BadPath, "include names no file")
                            .at(path.span, "empty path")
                            .help("write the path of a .kdl file, relative to this file"),
                    );
                    return None;
                }
                Some(Item::Include(Include { path }))
            }
            "exception" | "rule" => {
                self.err(
                    Diagnostic::new(Code::UnknownNode, format!("unknown node `{}` in a spec file", n.name))
                        .at(n.name_span(), "policy node in a spec")
                        .help("rules and exceptions belong in a policy file, given to `vmform check --policy`, never in the specs under check"),
                );
                None
            }
            _ => {
                self.unknown_node(&n, Context::Top, "the top level");
                None
            }
        }
    }

    /// Keep the first of a node that may appear once per block; report the others.
    fn once<T>(&mut self, n: &NodeRef, slot: &mut Option<T>, value: Option<T>) {
        if slot.is_some() {
            self.err(
                Diagnostic::new(Code::Duplicate, format!("`{}` is given twice in one block", n.name))
                    .at(n.name_span(), "given again here")
                    .help("keep one of them"),
            );
        } else if value.is_some() {
            *slot = value;
        }
    }

    fn body(&mut self, parent: &NodeRef, context: &str) -> Body {
        let mut b = Body::default();
        for node in children(parent.node) {
            let n = self.node(node);
            match n.name {
                "namespace" => {
                    let v = self.single_str(&n, "a namespace", "namespace \"shop\"");
                    self.once(&n, &mut b.namespace, v);
                }
                "labels" => {
                    let kv = self.map(&n);
                    b.labels.extend(kv);
                }
                "annotations" => {
                    let kv = self.map(&n);
                    b.annotations.extend(kv);
                }
                "node-selector" => {
                    let kv = self.map(&n);
                    b.node_selector.extend(kv);
                }
                "run-strategy" => {
                    let v = self.single_str(&n, "a strategy", "run-strategy \"always\"");
                    self.once(&n, &mut b.run_strategy, v);
                }
                "cpu" => {
                    let v = self.cpu(&n);
                    self.once(&n, &mut b.cpu, v);
                }
                "memory" => {
                    let v = self.single_str(&n, "a quantity", "memory \"4Gi\"");
                    self.once(&n, &mut b.memory, v);
                }
                "machine" => {
                    let v = self.single_str(&n, "a machine type", "machine \"q35\"");
                    self.once(&n, &mut b.machine, v);
                }
                "firmware" => {
                    self.check_node(&n, 1, &grammar::FIRMWARE);
                    let e = n.arg(0);
                    let kind = self.str_entry(&n, e, "the firmware");
                    let kind = self.require(&n, kind, e.is_some(), "a firmware kind", "firmware \"efi\"");
                    let secure_boot = self.bool_entry(&n, n.prop("secure-boot"), "secure-boot");
                    let v = kind.map(|kind| Spanned::new(Firmware { kind, secure_boot }, n.span()));
                    self.once(&n, &mut b.firmware, v);
                }
                "disk" => {
                    if let Some(d) = self.disk(&n) {
                        b.disks.push(d);
                    }
                }
                "network" => {
                    if let Some(net) = self.network(&n) {
                        b.networks.push(net);
                    }
                }
                "port" => {
                    self.check_node(&n, 2, &grammar::PORT);
                    let name = self.name_arg(&n, "port \"http\" 80");
                    let e = n.arg(1);
                    let number = self.int_entry(&n, e, "a port number");
                    let number = self.require(&n, number, e.is_some(), "a port number", "port \"http\" 80");
                    let protocol = self.str_entry(&n, n.prop("protocol"), "protocol");
                    if let (Some(name), Some(number)) = (name, number) {
                        b.ports.push(Port { name, number, protocol, span: n.span() });
                    }
                }
                "cloud-init" => {
                    let v = self.cloud_init(&n);
                    self.once(&n, &mut b.cloud_init, Some(v));
                }
                "eviction" => {
                    let v = self.single_str(&n, "a strategy", "eviction \"live-migrate\"");
                    self.once(&n, &mut b.eviction, v);
                }
                "termination-grace" => {
                    let v = self.single_str(&n, "a duration", "termination-grace \"30s\"");
                    self.once(&n, &mut b.termination_grace, v);
                }
                "lifecycle" => {
                    let v = self.lifecycle(&n);
                    self.once(&n, &mut b.lifecycle, Some(v));
                }
                _ => self.unknown_node(&n, Context::Body, context),
            }
        }
        // Exact sizes: a fleet keeps thousands of bodies until they are resolved.
        b.labels.shrink_to_fit();
        b.annotations.shrink_to_fit();
        b.node_selector.shrink_to_fit();
        b.disks.shrink_to_fit();
        b.networks.shrink_to_fit();
        b.ports.shrink_to_fit();
        b
    }

    /// `labels k="v" ...`: every property is a pair; arguments are not allowed.
    fn map(&mut self, n: &NodeRef) -> Vec<(Str, Str)> {
        if n.node.children().is_some() {
            self.check(n, 0, &[], Block::None);
        }
        let mut out: Vec<(Str, Str)> = vec![];
        for e in n.node.entries() {
            match e.name() {
                Some(key) => {
                    let k = Spanned::new(key.value().to_owned(), Span::from_miette(self.file, key.span()));
                    if let Some((first, _)) = out.iter().find(|(f, _)| f.value == k.value) {
                        self.err(
                            Diagnostic::new(Code::Duplicate, format!("key `{}` is given twice", k.value))
                                .at(k.span, "given again here")
                                .also(first.span, "first given here")
                                .help("remove one of them; KDL would silently keep only the last"),
                        );
                        continue;
                    }
                    if let Some(v) = self.str_entry(n, Some(e), &format!("the value of `{}`", k.value)) {
                        out.push((k, v));
                    }
                }
                None => self.err(
                    Diagnostic::new(Code::UnexpectedArgument, format!("`{}` takes only key=\"value\" pairs", n.name))
                        .at(Span::from_miette(self.file, e.span()), "not a key=\"value\" pair")
                        .help(format!("write `{} app=\"web\"`", n.name)),
                ),
            }
        }
        out
    }

    fn cpu(&mut self, n: &NodeRef) -> Option<Spanned<Cpu>> {
        self.check_node(n, 1, &grammar::CPU);
        let count = self.int_entry(n, n.arg(0), "the cpu count");
        let mut cpu = Cpu {
            cores: self.int_entry(n, n.prop("cores"), "cores"),
            sockets: self.int_entry(n, n.prop("sockets"), "sockets"),
            threads: self.int_entry(n, n.prop("threads"), "threads"),
            model: self.str_entry(n, n.prop("model"), "model"),
        };
        if let Some(c) = count {
            if cpu.cores.is_some() || cpu.sockets.is_some() || cpu.threads.is_some() {
                self.err(
                    Diagnostic::new(Code::UnexpectedArgument, "`cpu N` cannot be combined with sockets, cores or threads")
                        .at(c.span, "a count here")
                        .help("write either `cpu 4` (4 cores) or `cpu sockets=1 cores=4 threads=1`"),
                );
            } else {
                cpu.cores = Some(c);
            }
        } else if n.arg(0).is_none() && cpu.cores.is_none() && cpu.sockets.is_none() && cpu.threads.is_none() && cpu.model.is_none() {
            self.require::<()>(n, None, false, "a count or a topology", "cpu 2");
            return None;
        }
        Some(Spanned::new(cpu, n.span()))
    }

    fn disk(&mut self, n: &NodeRef) -> Option<Disk> {
        self.check_node(n, 1, &grammar::DISK);
        let name = self.name_arg(n, "disk \"root\" { image \"...\" }");
        let mut d = Disk {
            name: name?,
            sources: vec![],
            bus: None,
            boot_order: None,
            read_only: None,
            serial: None,
            cdrom: None,
            span: n.span(),
        };
        for node in children(n.node) {
            let c = self.node(node);
            let source = match c.name {
                "image" => self.single_str(&c, "an image reference", "image \"quay.io/containerdisks/fedora:41\"").map(DiskSource::Image),
                "pvc" => self.single_str(&c, "a claim name", "pvc \"data-claim\"").map(DiskSource::Pvc),
                "empty-disk" => self.single_str(&c, "a capacity", "empty-disk \"1Gi\"").map(DiskSource::EmptyDisk),
                "volume" => {
                    self.check_node(&c, 0, &grammar::VOLUME);
                    Some(DiskSource::Volume(Volume {
                        size: self.str_entry(&c, c.prop("size"), "size"),
                        storage_class: self.str_entry(&c, c.prop("storage-class"), "storage-class"),
                        access_mode: self.str_entry(&c, c.prop("access-mode"), "access-mode"),
                        source: self.str_entry(&c, c.prop("source"), "source"),
                    }))
                }
                "host-disk" => {
                    self.check_node(&c, 1, &grammar::HOST_DISK);
                    let e = c.arg(0);
                    let path = self.str_entry(&c, e, "the host-disk path");
                    let path = self.require(&c, path, e.is_some(), "a path", "host-disk \"/var/lib/app.img\"");
                    let kind = self.str_entry(&c, c.prop("type"), "type");
                    let capacity = self.str_entry(&c, c.prop("capacity"), "capacity");
                    let shared = self.bool_entry(&c, c.prop("shared"), "shared");
                    path.map(|path| DiskSource::HostDisk(HostDisk { path, kind, capacity, shared }))
                }
                "bus" => {
                    let v = self.single_str(&c, "a bus", "bus \"virtio\"");
                    self.once(&c, &mut d.bus, v);
                    continue;
                }
                "serial" => {
                    let v = self.single_str(&c, "a serial number", "serial \"DATA01\"");
                    self.once(&c, &mut d.serial, v);
                    continue;
                }
                "boot-order" => {
                    self.check(&c, 1, &[], Block::None);
                    let e = c.arg(0);
                    let v = self.int_entry(&c, e, "boot-order");
                    let v = self.require(&c, v, e.is_some(), "a number", "boot-order 1");
                    self.once(&c, &mut d.boot_order, v);
                    continue;
                }
                "read-only" | "cdrom" => {
                    self.check(&c, 1, &[], Block::None);
                    // `read-only` alone means #true, as a flag.
                    let v = match c.arg(0) {
                        None => Some(Spanned::new(true, c.span())),
                        e => self.bool_entry(&c, e, c.name),
                    };
                    let slot = if c.name == "cdrom" { &mut d.cdrom } else { &mut d.read_only };
                    self.once(&c, slot, v);
                    continue;
                }
                _ => {
                    self.unknown_node(&c, Context::Disk, "a disk");
                    continue;
                }
            };
            if let Some(s) = source {
                d.sources.push(Spanned::new(s, c.span()));
            }
        }
        Some(d)
    }

    fn network(&mut self, n: &NodeRef) -> Option<Network> {
        self.check_node(n, 1, &grammar::NETWORK);
        let name = self.name_arg(n, "network \"default\" masquerade=#true")?;
        let mut net = Network {
            name,
            masquerade: self.bool_entry(n, n.prop("masquerade"), "masquerade"),
            bridge: self.bool_entry(n, n.prop("bridge"), "bridge"),
            multus: self.str_entry(n, n.prop("multus"), "multus"),
            mac: self.str_entry(n, n.prop("mac"), "mac"),
            span: n.span(),
        };
        for node in children(n.node) {
            let c = self.node(node);
            match c.name {
                "mac" => {
                    let v = self.single_str(&c, "a MAC address", "mac \"02:00:00:00:00:01\"");
                    self.once(&c, &mut net.mac, v);
                }
                _ => self.unknown_node(&c, Context::Network, "a network"),
            }
        }
        Some(net)
    }

    fn cloud_init(&mut self, n: &NodeRef) -> Spanned<CloudInit> {
        self.check_node(n, 0, &grammar::CLOUD_INIT);
        let mut ci = CloudInit::default();
        for node in children(n.node) {
            let c = self.node(node);
            match c.name {
                "user-data" => {
                    let v = self.single_str(&c, "the user data", "user-data \"#cloud-config\\n...\"");
                    self.once(&c, &mut ci.user_data, v);
                }
                "user-data-file" => {
                    let v = self.single_str(&c, "a path", "user-data-file \"cloud-init/web.yaml\"");
                    self.once(&c, &mut ci.user_data_file, v);
                }
                "network-data" => {
                    let v = self.single_str(&c, "the network data", "network-data \"version: 2\\n...\"");
                    self.once(&c, &mut ci.network_data, v);
                }
                "network-data-file" => {
                    let v = self.single_str(&c, "a path", "network-data-file \"cloud-init/net.yaml\"");
                    self.once(&c, &mut ci.network_data_file, v);
                }
                "ssh-key" => {
                    if let Some(k) = self.single_str(&c, "a public key", "ssh-key \"ssh-ed25519 AAAA...\"") {
                        ci.ssh_keys.push(k);
                    }
                }
                _ => self.unknown_node(&c, Context::CloudInit, "cloud-init"),
            }
        }
        Spanned::new(ci, n.span())
    }

    fn lifecycle(&mut self, n: &NodeRef) -> Spanned<Lifecycle> {
        self.check_node(n, 0, &grammar::LIFECYCLE);
        let mut l = Lifecycle {
            prevent_destroy: self.bool_entry(n, n.prop("prevent-destroy"), "prevent-destroy"),
            ignore_changes: vec![],
            vm_actions: self.str_entry(n, n.prop("vm-actions"), "vm-actions"),
        };
        // KDL has no lists: `ignore-changes="a"` names one path, the child node
        // `ignore-changes "a" "b"` names several.
        if let Some(p) = self.str_entry(n, n.prop("ignore-changes"), "ignore-changes") {
            l.ignore_changes.push(p);
        }
        for node in children(n.node) {
            let c = self.node(node);
            match c.name {
                "ignore-changes" => {
                    self.check(&c, usize::MAX, &[], Block::None);
                    for e in c.args() {
                        if let Some(p) = self.str_entry(&c, Some(e), "a path") {
                            l.ignore_changes.push(p);
                        }
                    }
                }
                _ => self.unknown_node(&c, Context::Lifecycle, "lifecycle"),
            }
        }
        Spanned::new(l, n.span())
    }
}

fn children(node: &KdlNode) -> &[KdlNode] {
    node.children().map(|c| c.nodes()).unwrap_or(&[])
}

fn type_help(want: &str) -> String {
    match want {
        "a string" => "quote it: strings are written \"like this\"".into(),
        "an integer" => "write a whole number without quotes, e.g. 80".into(),
        _ => "write #true or #false (KDL v2 booleans)".into(),
    }
}
