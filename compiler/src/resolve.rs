//! Resolve a run: params and `--var`, defaults, templates, instancetypes and `count`,
//! giving one merged [`Machine`] per VM with every string interpolated.

use crate::ast::*;
use crate::decode::did_you_mean;
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::source::{Sources, Span, Spanned};
use std::collections::{BTreeMap, BTreeSet};

/// Most machines one `vm` node may stamp out.
pub const MAX_COUNT: i64 = 1000;

/// One machine after resolve: the merged body of defaults, template, instancetype and vm.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: Spanned<String>,
    pub body: Body,
    /// The `vm` node this machine came from.
    pub span: Span,
    /// Span of `instancetype="…"`, when the machine uses one.
    pub instancetype: Option<Span>,
    /// The `template` node the machine uses, if any.
    pub template: Option<Span>,
}

/// Resolve the run and hand each machine to `sink` as soon as it is made, so the caller
/// can validate and lower it and drop it before the next: a fleet's machines are never
/// all in memory at once.
///
/// `sink` also gets the spans of strings whose interpolation failed so far: their values
/// are not what the user wrote, so further checks of them would only mislead.
pub fn resolve(
    files: &[File],
    vms: Vec<Box<Vm>>,
    vars: &[(String, String)],
    sources: &Sources,
    diags: &mut Diagnostics,
    sink: &mut dyn FnMut(Machine, &BTreeSet<Span>, &mut Diagnostics),
) {
    let defs = Definitions::collect(files, sources, diags);
    let values = param_values(&defs.params, vars, diags);
    let mut used = Used::default();
    let mut failed = BTreeSet::new();
    // Each vm's syntax is dropped once its machines are made.
    for vm in vms {
        check_unique_children(&vm.body, diags);
        let count = count_of(&vm, diags);
        let (body, template, instancetype) = merged_body(&vm, &defs, &mut used, diags);
        let indexes: Vec<Option<u32>> = match count {
            Some(n) => (0..n).map(Some).collect(),
            None => vec![None],
        };
        for index in indexes {
            let mut cx = Interp { values: &values, index, used: &mut used.params, diags, sources, failed: &mut failed };
            let base = cx.string(&vm.name);
            // `vm "web-${index}" count=3` names itself; plain `vm "web" count=3` gets -N.
            let name = match index {
                Some(i) if !vm.name.value.contains("${index}") => format!("{base}-{i}"),
                _ => base,
            };
            let body = cx.body(&body);
            sink(Machine { name: Spanned::new(name, vm.name.span), body, span: vm.span, instancetype, template }, &failed, diags);
        }
    }
    defs.report_unused(&used, diags);
}

/// The run's params, templates and instancetypes by name, and its defaults combined.
struct Definitions<'a> {
    params: BTreeMap<&'a str, &'a Param>,
    templates: BTreeMap<&'a str, &'a Template>,
    instancetypes: BTreeMap<&'a str, &'a Instancetype>,
    defaults: Body,
}

/// The names the vms used, to report the definitions nothing uses.
#[derive(Default)]
struct Used {
    params: BTreeSet<String>,
    templates: BTreeSet<String>,
    instancetypes: BTreeSet<String>,
}

impl<'a> Definitions<'a> {
    fn collect(files: &'a [File], sources: &'a Sources, diags: &mut Diagnostics) -> Definitions<'a> {
        let mut params: BTreeMap<&str, &Param> = BTreeMap::new();
        let mut templates: BTreeMap<&str, &Template> = BTreeMap::new();
        let mut instancetypes: BTreeMap<&str, &Instancetype> = BTreeMap::new();
        let mut defaults_blocks: Vec<(&std::path::Path, &Body)> = vec![];
        for file in files {
            for item in &file.items {
                match item {
                    Item::Param(p) => define(&mut params, &p.name, p, "param", diags),
                    Item::Template(t) => {
                        check_unique_children(&t.body, diags);
                        define(&mut templates, &t.name, t, "template", diags)
                    }
                    Item::Instancetype(i) => define(&mut instancetypes, &i.name, i, "instancetype", diags),
                    Item::Defaults(b) => {
                        check_unique_children(b, diags);
                        defaults_blocks.push((&sources.get(file.id).path, b));
                    }
                    Item::Vm(_) | Item::Include(_) => {}
                }
            }
        }
        // Several defaults blocks combine in the order of their files' paths, not of the
        // command line, so `vmform build a.kdl b.kdl` and `b.kdl a.kdl` emit the same objects.
        defaults_blocks.sort_by_key(|(path, _)| *path);
        let mut defaults = Body::default();
        for (_, b) in defaults_blocks {
            defaults = merge_defaults(defaults, b, diags);
        }
        Definitions { params, templates, instancetypes, defaults }
    }

    fn report_unused(&self, used: &Used, diags: &mut Diagnostics) {
        for (name, p) in &self.params {
            if !used.params.contains(*name) {
                diags.push(unused("param", name, p.name.span));
            }
        }
        for (name, t) in &self.templates {
            if !used.templates.contains(*name) {
                diags.push(unused("template", name, t.name.span));
            }
        }
        for (name, i) in &self.instancetypes {
            if !used.instancetypes.contains(*name) {
                diags.push(unused("instancetype", name, i.name.span));
            }
        }
    }
}

/// Param values: --var wins over the declared default.
fn param_values(params: &BTreeMap<&str, &Param>, vars: &[(String, String)], diags: &mut Diagnostics) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in vars {
        if params.contains_key(k.as_str()) {
            values.insert(k.clone(), v.clone());
        } else {
            let mut d = Diagnostic::new(Code::UnknownVar, format!("--var {k}=… names no declared param"));
            d = match did_you_mean(k, params.keys().copied()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None if params.is_empty() => d.help("declare it with `param \"NAME\" default=\"…\"`"),
                None => d.help(format!("declared params: {}", params.keys().copied().collect::<Vec<_>>().join(", "))),
            };
            diags.push(d);
        }
    }
    for (name, p) in params {
        if !values.contains_key(*name) {
            match &p.default {
                Some(d) => {
                    values.insert(name.to_string(), d.value.clone());
                }
                None => {
                    diags.push(
                        Diagnostic::new(Code::MissingParam, format!("param `{name}` has no value"))
                            .at(p.name.span, "no default")
                            .help(format!("pass `--var {name}=VALUE` or declare `default=\"…\"`")),
                    );
                    // A stand-in value, so uses of the param are not reported again as unknown.
                    values.insert(name.to_string(), name.to_string());
                }
            }
        }
    }
    values
}

/// The vm's `count`, if any; out of range is reported, and one machine is made so the
/// vm's other errors are reported too.
fn count_of(vm: &Vm, diags: &mut Diagnostics) -> Option<u32> {
    match &vm.count {
        Some(c) if !(1..=MAX_COUNT).contains(&c.value) => {
            diags.push(
                Diagnostic::new(Code::BadCount, format!("count is {}; it must be between 1 and {MAX_COUNT}", c.value))
                    .at(c.span, "out of range")
                    .help("remove the vm to have none; use several vm nodes for more"),
            );
            Some(1)
        }
        Some(c) => Some(c.value as u32),
        None => None,
    }
}

/// defaults ⊕ template ⊕ vm; the instancetype supplies cpu and memory. Also the spans of
/// the template and instancetype used.
fn merged_body(vm: &Vm, defs: &Definitions, used: &mut Used, diags: &mut Diagnostics) -> (Body, Option<Span>, Option<Span>) {
    let mut body = defs.defaults.clone();
    let mut template = None;
    if let Some(t) = &vm.template {
        used.templates.insert(t.value.clone());
        match defs.templates.get(t.value.as_str()) {
            Some(tpl) => {
                template = Some(tpl.span);
                body = merge(&body, &tpl.body)
            }
            None => diags.push(unknown(Code::UnknownTemplate, "template", t, defs.templates.keys().copied())),
        }
    }
    body = merge(&body, &vm.body);
    let mut instancetype = None;
    if let Some(it_name) = &vm.instancetype {
        used.instancetypes.insert(it_name.value.clone());
        match defs.instancetypes.get(it_name.value.as_str()) {
            Some(it) => {
                instancetype = Some(it_name.span);
                apply_instancetype(&mut body, it, it_name, diags);
            }
            None => diags.push(unknown(Code::UnknownInstancetype, "instancetype", it_name, defs.instancetypes.keys().copied())),
        }
    }
    (body, template, instancetype)
}

/// The instancetype's cpu and memory replace the body's; setting them as well is an error,
/// as in KubeVirt.
fn apply_instancetype(body: &mut Body, it: &Instancetype, it_name: &Str, diags: &mut Diagnostics) {
    for (set, what, it_has) in [
        (body.cpu.as_ref().map(|c| c.span), "cpu", it.cpu.is_some()),
        (body.memory.as_ref().map(|m| m.span), "memory", it.memory.is_some()),
    ] {
        if let (Some(span), true) = (set, it_has) {
            diags.push(
                Diagnostic::new(Code::InstancetypeOverride, format!("{what} is set here, but instancetype `{}` already sets it", it_name.value))
                    .at(span, format!("overrides the instancetype's {what}"))
                    .also(it_name.span, "instancetype chosen here")
                    .help(format!("remove this {what}, or pick an instancetype of the size you need (as in KubeVirt, an instancetype's cpu and memory cannot be overridden)")),
            );
        }
    }
    if it.cpu.is_some() {
        body.cpu = it.cpu.clone();
    }
    if it.memory.is_some() {
        body.memory = it.memory.clone();
    }
}

fn unused(kind: &str, name: &str, span: Span) -> Diagnostic {
    Diagnostic::new(Code::UnusedDefinition, format!("{kind} `{name}` is never used"))
        .at(span, "defined here")
        .help(format!("remove it, or use it; an unused {kind} is often a misspelt one"))
}

fn unknown<'a>(code: Code, kind: &str, name: &Str, known: impl Iterator<Item = &'a str> + Clone) -> Diagnostic {
    let d = Diagnostic::new(code, format!("unknown {kind} `{}`", name.value)).at(name.span, format!("no {kind} of this name"));
    match did_you_mean(&name.value, known.clone()) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None => {
            let all: Vec<&str> = known.collect();
            if all.is_empty() {
                d.help(format!("no {kind} is defined in this run; define one with `{kind} \"{}\" {{ … }}`", name.value))
            } else {
                d.help(format!("defined: {}", all.join(", ")))
            }
        }
    }
}

fn define<'a, T>(map: &mut BTreeMap<&'a str, &'a T>, name: &'a Str, item: &'a T, kind: &str, diags: &mut Diagnostics)
where
    T: HasName,
{
    if let Some(first) = map.get(name.value.as_str()) {
        diags.push(
            Diagnostic::new(Code::DuplicateDefinition, format!("{kind} `{}` is defined twice", name.value))
                .at(name.span, "defined again here")
                .also(first.name_span(), "first defined here")
                .help(format!("rename one of them; {kind} names are shared by every file of a run")),
        );
    } else {
        map.insert(&name.value, item);
    }
}

trait HasName {
    fn name_span(&self) -> Span;
}
impl HasName for Param {
    fn name_span(&self) -> Span {
        self.name.span
    }
}
impl HasName for Template {
    fn name_span(&self) -> Span {
        self.name.span
    }
}
impl HasName for Instancetype {
    fn name_span(&self) -> Span {
        self.name.span
    }
}

/// Two disks, networks or ports with one name in a single block are a mistake, not a merge.
fn check_unique_children(b: &Body, diags: &mut Diagnostics) {
    fn check<'a>(kind: &str, names: impl Iterator<Item = &'a Str>, diags: &mut Diagnostics) {
        let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
        for n in names {
            if let Some(first) = seen.get(n.value.as_str()) {
                diags.push(
                    Diagnostic::new(Code::DuplicateChild, format!("two {kind}s are named `{}`", n.value))
                        .at(n.span, "second one here")
                        .also(*first, "first one here")
                        .help(format!("give each {kind} its own name")),
                );
            } else {
                seen.insert(&n.value, n.span);
            }
        }
    }
    check("disk", b.disks.iter().map(|d| &d.name), diags);
    check("network", b.networks.iter().map(|n| &n.name), diags);
    check("port", b.ports.iter().map(|p| &p.name), diags);
}

/// Several `defaults` blocks combine; the same setting in two of them is an error.
fn merge_defaults(acc: Body, next: &Body, diags: &mut Diagnostics) -> Body {
    let spans = |b: &Body| -> Vec<(&'static str, Option<Span>)> {
        vec![
            ("namespace", b.namespace.as_ref().map(|x| x.span)),
            ("run-strategy", b.run_strategy.as_ref().map(|x| x.span)),
            ("cpu", b.cpu.as_ref().map(|x| x.span)),
            ("memory", b.memory.as_ref().map(|x| x.span)),
            ("machine", b.machine.as_ref().map(|x| x.span)),
            ("firmware", b.firmware.as_ref().map(|x| x.span)),
            ("cloud-init", b.cloud_init.as_ref().map(|x| x.span)),
            ("eviction", b.eviction.as_ref().map(|x| x.span)),
            ("termination-grace", b.termination_grace.as_ref().map(|x| x.span)),
            ("lifecycle", b.lifecycle.as_ref().map(|x| x.span)),
        ]
    };
    let mut twice = |what: String, first: Span, again: Span| {
        diags.push(
            Diagnostic::new(Code::Duplicate, format!("{what} is set in two defaults blocks"))
                .at(again, "set again here")
                .also(first, "first set here")
                .help("defaults apply to the whole run; set each one once"),
        );
    };
    for ((what, a), (_, b)) in spans(&acc).into_iter().zip(spans(next)) {
        if let (Some(a), Some(b)) = (a, b) {
            twice(format!("`{what}`"), a, b);
        }
    }
    // Keys and named items too: otherwise the block read last would silently win.
    for (kind, a, b) in [
        ("label", &acc.labels, &next.labels),
        ("annotation", &acc.annotations, &next.annotations),
        ("node-selector key", &acc.node_selector, &next.node_selector),
    ] {
        for (k, _) in b {
            if let Some((first, _)) = a.iter().find(|(x, _)| x.value == k.value) {
                twice(format!("{kind} `{}`", k.value), first.span, k.span);
            }
        }
    }
    let named = |names: Vec<&Str>, others: Vec<&Str>| -> Vec<(Span, Span, String)> {
        others
            .into_iter()
            .filter_map(|o| names.iter().find(|n| n.value == o.value).map(|n| (n.span, o.span, o.value.clone())))
            .collect()
    };
    for (kind, pairs) in [
        ("disk", named(acc.disks.iter().map(|d| &d.name).collect(), next.disks.iter().map(|d| &d.name).collect())),
        ("network", named(acc.networks.iter().map(|n| &n.name).collect(), next.networks.iter().map(|n| &n.name).collect())),
        ("port", named(acc.ports.iter().map(|p| &p.name).collect(), next.ports.iter().map(|p| &p.name).collect())),
    ] {
        for (first, again, name) in pairs {
            twice(format!("{kind} `{name}`"), first, again);
        }
    }
    merge(&acc, next)
}

/// Overlay `over` on `base`: single settings from `over` win, maps merge by key, and
/// disks, networks and ports merge by name (field by field within one disk).
pub fn merge(base: &Body, over: &Body) -> Body {
    fn pick<T: Clone>(over: &Option<T>, base: &Option<T>) -> Option<T> {
        over.clone().or_else(|| base.clone())
    }
    fn named<T: Clone>(base: &[T], over: &[T], name: impl Fn(&T) -> &str, merge: impl Fn(&T, &T) -> T) -> Vec<T> {
        let mut out: Vec<T> = base.to_vec();
        for (i, o) in over.iter().enumerate() {
            // A second item of one name in the same block is reported (E0310), not merged.
            if over[..i].iter().any(|x| name(x) == name(o)) {
                continue;
            }
            match out.iter_mut().find(|b| name(b) == name(o)) {
                Some(b) => *b = merge(b, o),
                None => out.push(o.clone()),
            }
        }
        out
    }
    let concat = |a: &[(Str, Str)], b: &[(Str, Str)]| a.iter().chain(b).cloned().collect::<Vec<_>>();
    Body {
        namespace: pick(&over.namespace, &base.namespace),
        labels: concat(&base.labels, &over.labels),
        annotations: concat(&base.annotations, &over.annotations),
        run_strategy: pick(&over.run_strategy, &base.run_strategy),
        cpu: pick(&over.cpu, &base.cpu),
        memory: pick(&over.memory, &base.memory),
        machine: pick(&over.machine, &base.machine),
        firmware: pick(&over.firmware, &base.firmware),
        disks: named(&base.disks, &over.disks, |d| &d.name.value, |b, o| Disk {
            name: o.name.clone(),
            sources: if o.sources.is_empty() { b.sources.clone() } else { o.sources.clone() },
            bus: pick(&o.bus, &b.bus),
            boot_order: pick(&o.boot_order, &b.boot_order),
            read_only: pick(&o.read_only, &b.read_only),
            serial: pick(&o.serial, &b.serial),
            cdrom: pick(&o.cdrom, &b.cdrom),
            span: o.span,
        }),
        networks: named(&base.networks, &over.networks, |n| &n.name.value, |b, o| Network {
            name: o.name.clone(),
            masquerade: pick(&o.masquerade, &b.masquerade),
            bridge: pick(&o.bridge, &b.bridge),
            multus: pick(&o.multus, &b.multus),
            mac: pick(&o.mac, &b.mac),
            span: o.span,
        }),
        ports: named(&base.ports, &over.ports, |p| &p.name.value, |_, o| o.clone()),
        cloud_init: pick(&over.cloud_init, &base.cloud_init),
        node_selector: concat(&base.node_selector, &over.node_selector),
        eviction: pick(&over.eviction, &base.eviction),
        termination_grace: pick(&over.termination_grace, &base.termination_grace),
        lifecycle: match (&base.lifecycle, &over.lifecycle) {
            (Some(b), Some(o)) => Some(Spanned::new(
                Lifecycle {
                    prevent_destroy: pick(&o.value.prevent_destroy, &b.value.prevent_destroy),
                    ignore_changes: b.value.ignore_changes.iter().chain(&o.value.ignore_changes).cloned().collect(),
                    vm_actions: pick(&o.value.vm_actions, &b.value.vm_actions),
                },
                o.span,
            )),
            (b, o) => pick(o, b),
        },
    }
}

/// Expands `${param}` and `${index}` in every string of a body; `$${` is a literal `${`.
struct Interp<'a, 'u> {
    values: &'a BTreeMap<String, String>,
    index: Option<u32>,
    used: &'u mut BTreeSet<String>,
    diags: &'u mut Diagnostics,
    sources: &'a Sources,
    failed: &'u mut BTreeSet<Span>,
}

impl Interp<'_, '_> {
    fn string(&mut self, s: &Str) -> String {
        let v = &s.value;
        if !v.contains('$') {
            return v.clone();
        }
        let errors_before = self.diags.len();
        let out = self.expand(s);
        if self.diags.len() > errors_before {
            self.failed.insert(s.span);
        }
        out
    }

    fn expand(&mut self, s: &Str) -> String {
        let v = &s.value;
        let mut out = String::with_capacity(v.len());
        let mut i = 0;
        while let Some(rel) = v[i..].find('$') {
            let at = i + rel;
            out.push_str(&v[i..at]);
            let rest = &v[at..];
            if rest.starts_with("$${") {
                out.push_str("${");
                i = at + 3;
            } else if rest.starts_with("${") {
                let Some(close) = rest.find('}') else {
                    self.diags.push(
                        Diagnostic::new(Code::BadInterpolation, "`${` is not closed by `}`")
                            .at(self.sub_span(s, at, rest.len()), "unclosed")
                            .help("write `${name}`, or `$${` for a literal `${`"),
                    );
                    return out;
                };
                let name = &rest[2..close];
                let span = self.sub_span(s, at, close + 1);
                if name == "index" {
                    match self.index {
                        Some(n) => out.push_str(&n.to_string()),
                        None => self.diags.push(
                            Diagnostic::new(Code::IndexOutsideCount, "`${index}` is used in a vm without count")
                                .at(span, "no index here")
                                .help("add `count=N` to the vm, or remove `${index}`"),
                        ),
                    }
                } else if let Some(value) = self.values.get(name) {
                    self.used.insert(name.to_string());
                    out.push_str(value);
                } else if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    self.diags.push(
                        Diagnostic::new(Code::BadInterpolation, format!("`${{{name}}}` is not a param reference"))
                            .at(span, "malformed")
                            .help("write `${name}` with a declared param's name, or `$${` for a literal `${`"),
                    );
                } else {
                    let mut d = Diagnostic::new(Code::UnknownParam, format!("unknown param `{name}`")).at(span, "not declared");
                    d = match did_you_mean(name, self.values.keys().map(String::as_str).chain(["index"])) {
                        Some(x) => d.help(format!("did you mean `{x}`?")),
                        None => d.help(format!("declare it: `param \"{name}\" default=\"…\"`")),
                    };
                    self.diags.push(d);
                }
                i = at + close + 1;
            } else {
                out.push('$');
                i = at + 1;
            }
        }
        out.push_str(&v[i..]);
        out
    }

    /// The span of `value[start..start+len]`, exact when the string was written without
    /// escapes (the common case), else the whole string.
    fn sub_span(&self, s: &Str, start: usize, len: usize) -> Span {
        let written = self.sources.text(s.span);
        if written.len() == s.value.len() + 2 && written.starts_with('"') {
            Span::new(s.span.file, s.span.start as usize + 1 + start, len)
        } else {
            s.span
        }
    }

    fn s(&mut self, s: &Str) -> Str {
        Spanned::new(self.string(s), s.span)
    }
    fn o(&mut self, s: &Option<Str>) -> Option<Str> {
        s.as_ref().map(|s| self.s(s))
    }
    fn pairs(&mut self, v: &[(Str, Str)]) -> Vec<(Str, Str)> {
        v.iter().map(|(k, x)| (self.s(k), self.s(x))).collect()
    }

    fn body(&mut self, b: &Body) -> Body {
        Body {
            namespace: self.o(&b.namespace),
            labels: self.pairs(&b.labels),
            annotations: self.pairs(&b.annotations),
            run_strategy: self.o(&b.run_strategy),
            cpu: b.cpu.as_ref().map(|c| {
                Spanned::new(Cpu { model: self.o(&c.value.model), ..c.value.clone() }, c.span)
            }),
            memory: self.o(&b.memory),
            machine: self.o(&b.machine),
            firmware: b.firmware.as_ref().map(|f| {
                Spanned::new(Firmware { kind: self.s(&f.value.kind), secure_boot: f.value.secure_boot.clone() }, f.span)
            }),
            disks: b
                .disks
                .iter()
                .map(|d| Disk {
                    name: self.s(&d.name),
                    sources: d.sources.iter().map(|s| Spanned::new(self.source(&s.value), s.span)).collect(),
                    bus: self.o(&d.bus),
                    serial: self.o(&d.serial),
                    ..d.clone()
                })
                .collect(),
            networks: b
                .networks
                .iter()
                .map(|n| Network { name: self.s(&n.name), multus: self.o(&n.multus), mac: self.o(&n.mac), ..n.clone() })
                .collect(),
            ports: b.ports.iter().map(|p| Port { name: self.s(&p.name), protocol: self.o(&p.protocol), ..p.clone() }).collect(),
            cloud_init: b.cloud_init.as_ref().map(|c| {
                let ci = &c.value;
                Spanned::new(
                    CloudInit {
                        user_data: self.o(&ci.user_data),
                        user_data_file: self.o(&ci.user_data_file),
                        network_data: self.o(&ci.network_data),
                        network_data_file: self.o(&ci.network_data_file),
                        ssh_keys: ci.ssh_keys.iter().map(|k| self.s(k)).collect(),
                    },
                    c.span,
                )
            }),
            node_selector: self.pairs(&b.node_selector),
            eviction: self.o(&b.eviction),
            termination_grace: self.o(&b.termination_grace),
            lifecycle: b.lifecycle.as_ref().map(|l| {
                Spanned::new(
                    Lifecycle {
                        prevent_destroy: l.value.prevent_destroy.clone(),
                        ignore_changes: l.value.ignore_changes.iter().map(|p| self.s(p)).collect(),
                        vm_actions: l.value.vm_actions.as_ref().map(|v| self.s(v)),
                    },
                    l.span,
                )
            }),
        }
    }

    fn source(&mut self, s: &DiskSource) -> DiskSource {
        match s {
            DiskSource::Image(x) => DiskSource::Image(self.s(x)),
            DiskSource::Pvc(x) => DiskSource::Pvc(self.s(x)),
            DiskSource::EmptyDisk(x) => DiskSource::EmptyDisk(self.s(x)),
            DiskSource::Volume(v) => DiskSource::Volume(Volume {
                size: self.o(&v.size),
                storage_class: self.o(&v.storage_class),
                access_mode: self.o(&v.access_mode),
                source: self.o(&v.source),
            }),
            DiskSource::HostDisk(h) => DiskSource::HostDisk(HostDisk {
                path: self.s(&h.path),
                kind: self.o(&h.kind),
                capacity: self.o(&h.capacity),
                shared: h.shared.clone(),
            }),
        }
    }
}
