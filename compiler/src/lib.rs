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
pub mod emit;
pub mod fmt;
pub mod kubevirt;
pub mod load;
pub mod lower;
pub mod model;
pub mod resolve;
pub mod source;
pub mod validate;
pub mod values;

pub use diagnostic::{Code, Diagnostic, Diagnostics, Severity};
pub use load::Loader;
pub use lower::CompiledVm;
pub use source::{FileId, Sources, Span};

use std::path::PathBuf;

/// What a run is asked to compile.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--var NAME=VALUE` overrides of declared params, in command-line order.
    pub vars: Vec<(String, String)>,
}

/// The result of a run. `objects` is empty whenever `diagnostics` has errors, so a
/// caller can never emit half a run.
#[derive(Debug)]
pub struct Compilation {
    pub sources: Sources,
    pub diagnostics: Diagnostics,
    /// Sorted by namespace, then name.
    pub objects: Vec<CompiledVm>,
}

impl Compilation {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.has_errors()
    }
}

/// Compile the files and directories in `paths` (a directory means the `*.kdl` files
/// directly in it) with everything they include.
pub fn compile(loader: &dyn Loader, paths: &[PathBuf], options: &Options) -> Compilation {
    let mut diags = Diagnostics::default();
    let loaded = load::load(loader, paths, &mut diags);
    let machines = resolve::resolve(&loaded.files, &options.vars, &loaded.sources, &mut diags);
    let vms = validate::Validator { loader, sources: &loaded.sources, diags: &mut diags }.run(&machines);
    let has_vm_node = loaded.files.iter().flat_map(|f| &f.items).any(|i| matches!(i, ast::Item::Vm(_)));
    if !has_vm_node && !diags.has_errors() {
        diags.push(
            Diagnostic::new(Code::EmptyRun, "the run defines no vm")
                .help("add a `vm \"name\" { … }` node; an empty run emits nothing"),
        );
    }
    let mut objects: Vec<CompiledVm> = if diags.has_errors() { vec![] } else { vms.iter().map(lower::lower).collect() };
    objects.sort_by(|a, b| {
        let key = |o: &CompiledVm| (o.object.metadata.namespace.clone(), o.object.metadata.name.clone());
        key(a).cmp(&key(b))
    });
    Compilation { sources: loaded.sources, diagnostics: diags, objects }
}
