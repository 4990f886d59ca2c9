//! vmform's compiler: KDL VM specs in, `kubevirt.io/v1` VirtualMachine objects out.
//!
//! ```text
//! files ─load─▶ KDL (spans) ─decode─▶ AST ─resolve─▶ machines ─validate─▶ model ─lower─▶ objects
//! ```
//!
//! Each stage reports into one [`Diagnostics`] and carries on with what it could make
//! sense of, so a run reports every error it can find. The compiler does no I/O of its
//! own (input comes through a [`Loader`]) and never depends on tokio, kube or libvirt.
//!
//! Invariant: compiling is deterministic. File ids follow load order, maps are sorted,
//! and [`emit`] sorts objects by namespace and name, so the same files give
//! byte-identical output whatever the thread timing.
//!
//! Invariant: the compiler never panics on any input: bad input is a [`Diagnostic`] with
//! a span (checked by the fuzz target in `fuzz/` and the property tests).

pub mod ast;
pub mod decode;
pub mod diagnostic;
pub mod diff;
pub mod effects;
pub mod emit;
pub mod fmt;
pub mod grammar;
pub mod ide;
pub mod kubevirt;
mod lex;
pub mod load;
pub mod lower;
pub mod model;
pub mod policy;
pub mod resolve;
pub mod source;
pub mod validate;
pub mod values;

pub use diagnostic::{Code, Diagnostic, Diagnostics, Severity};
pub use load::{FsLoader, Loader, MemoryLoader};
pub use lower::CompiledVm;
pub use source::{FileId, Sources, Span};

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A count and its noun for a message: `1 VM`, `2 VMs`, `0 errors`. Every noun vmform counts
/// takes an `s`; the CLI and the deploy layer share this one helper.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// What a run is asked to compile.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--var NAME=VALUE` overrides of declared params, in command-line order.
    pub vars: Vec<(String, String)>,
    /// Record, for each emitted field, the span that produced it (`CompiledVm::source_map`).
    pub source_maps: bool,
}

/// The result of a run. `objects` is empty whenever `diagnostics` has errors, so a
/// caller can never emit half a run.
#[derive(Debug)]
pub struct Compilation {
    pub sources: Sources,
    pub diagnostics: Diagnostics,
    /// Sorted by namespace, then name.
    pub objects: Vec<CompiledVm>,
    pub timings: Timings,
}

/// Where a run's time went; the benchmark reports these.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Wall time of reading, parsing and decoding (files of a level in parallel).
    pub load_wall: Duration,
    /// CPU time inside the KDL parser, summed over threads.
    pub parse_cpu: Duration,
    /// CPU time decoding KDL into the AST, summed over threads.
    pub decode_cpu: Duration,
    pub resolve: Duration,
    pub validate: Duration,
    pub lower: Duration,
}

impl Compilation {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.has_errors()
    }
}

/// Two machines of one name in one namespace, reported at both names.
fn report_duplicate_machines(sorted: &[CompiledVm], diags: &mut Diagnostics) {
    let same = |a: &CompiledVm, b: &CompiledVm| {
        a.object.metadata.name == b.object.metadata.name && a.object.metadata.namespace == b.object.metadata.namespace
    };
    let mut first = 0;
    for i in 1..sorted.len() {
        if !same(&sorted[first], &sorted[i]) {
            first = i;
            continue;
        }
        let m = &sorted[i].object.metadata;
        diags.push(
            Diagnostic::new(
                Code::DuplicateMachine,
                format!("two machines are named `{}` in namespace `{}`", m.name, m.namespace.as_deref().unwrap_or("default")),
            )
            .at(sorted[i].name_span, "second machine of this name")
            .also(sorted[first].name_span, "first machine of this name")
            .help("machine names must be unique per namespace across every file of a run; with count=N, NAME-0 … NAME-(N-1) are taken"),
        );
    }
}

/// Compile the files and directories in `paths` (a directory means the `*.kdl` files
/// directly in it) with everything they include.
pub fn compile(loader: &dyn Loader, paths: &[PathBuf], options: &Options) -> Compilation {
    let mut diags = Diagnostics::default();
    let mut t = Timings::default();
    let mut clock = Instant::now();
    let mut lap = || {
        let now = Instant::now();
        let d = now - clock;
        clock = now;
        d
    };
    let loaded = load::load(loader, paths, &mut diags);
    t.load_wall = lap();
    t.parse_cpu = loaded.parse_time;
    t.decode_cpu = loaded.decode_time;
    // The vms are taken out of the syntax tree so resolve can drop each one when done.
    let mut files = loaded.files;
    let mut vm_nodes = vec![];
    for file in &mut files {
        for item in std::mem::take(&mut file.items) {
            match item {
                ast::Item::Vm(vm) => vm_nodes.push(vm),
                other => file.items.push(other),
            }
        }
    }
    let has_vm_node = !vm_nodes.is_empty();
    // Machines stream through resolve → validate → lower one at a time: at the peak only
    // the syntax tree and the finished objects are in memory, not every stage's copy.
    let machines: usize = vm_nodes
        .iter()
        .map(|vm| vm.count.as_ref().map_or(1, |c| c.value.clamp(1, resolve::MAX_COUNT) as usize))
        .sum();
    let mut objects: Vec<CompiledVm> = Vec::with_capacity(machines);
    let (mut validate_time, mut lower_time) = (Duration::ZERO, Duration::ZERO);
    let sources = &loaded.sources;
    resolve::resolve(&files, vm_nodes, &options.vars, sources, &mut diags, &mut |machine, failed, diags| {
        let started = Instant::now();
        let vm = validate::Validator { loader, sources, diags, failed_interpolations: failed }.validate(&machine);
        drop(machine);
        let validated = Instant::now();
        validate_time += validated - started;
        if let Some(vm) = vm {
            objects.push(lower::lower(&vm, options.source_maps));
        }
        lower_time += validated.elapsed();
    });
    drop(files);
    let sources = loaded.sources;
    t.resolve = lap().saturating_sub(validate_time + lower_time);
    t.validate = validate_time;
    t.lower = lower_time;
    if !has_vm_node && !diags.has_errors() {
        diags.push(
            Diagnostic::new(Code::EmptyRun, "the run defines no vm")
                .help("add a `vm \"name\" { … }` node; an empty run emits nothing"),
        );
    }
    fn key(o: &CompiledVm) -> (&Option<String>, &String, Span) {
        (&o.object.metadata.namespace, &o.object.metadata.name, o.name_span)
    }
    // The span orders machines of one name by their place in the run; an unstable sort
    // needs no scratch buffer of half the fleet.
    objects.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
    report_duplicate_machines(&objects, &mut diags);
    // Invariant: a run with errors emits nothing, so no caller can write half a run.
    if diags.has_errors() {
        objects.clear();
    }
    Compilation { sources, diagnostics: diags, objects, timings: t }
}
