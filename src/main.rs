//! `vmform`: the one command-line binary.

mod check;
mod cli;
mod control_plane;
mod deploy_cmd;
mod diff_output;
mod error;
mod git_loader;
mod image_cmd;
mod lsp;
mod migration_cmd;
mod node_cmd;
mod process;
mod report;
mod runtime_cmd;
mod vm_cmd;
mod vm_lookup;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, DiagnosticFormat, Input, OutputFormat};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use error::{Done, Error, Kind, Outcome};
use vmform_compiler::{compile, emit, plural, Compilation, FsLoader, Options};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Validate { input } => validate(&input),
        Command::Build { input, output, out_dir } => build(&input, output, out_dir.as_deref()),
        Command::Fmt { paths, check, diff, recursive, format } => fmt(&paths, check, diff, recursive, format),
        Command::Check { paths, policy, rules, fail_on, format, vars, test } => {
            check::run(&check::Args { paths, policies: policy, rules, fail_on, format, vars, test })
        }
        Command::Diff { paths, base, vars, format, detailed_exitcode } => diff(&paths, base.as_deref(), vars, format, detailed_exitcode),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vmform", &mut std::io::stdout());
            Ok(Done::Ok)
        }
        Command::Man { out_dir } => man(out_dir.as_deref()),
        Command::Lsp { policy } => lsp::run(policy).map(|()| Done::Ok).map_err(|e| Error::usage(format!("vmform lsp: {e}"))),
        Command::Plan { project, out, detailed_exitcode, refresh_only, format } => {
            deploy_cmd::plan(&project, out.as_deref(), detailed_exitcode, refresh_only, format)
        }
        Command::Apply { project, guards, wait, timeout } => deploy_cmd::apply(&project, &guards, wait.then_some(timeout)),
        Command::Destroy { project, guards } => deploy_cmd::destroy(&project, &guards),
        Command::Show { path, project, target, format } => deploy_cmd::show(&path, project.as_deref(), &target, format),
        Command::Vm { command } => vm_cmd::run(command),
        Command::Node { command } => node_cmd::run(command),
        Command::Up { data_dir, listen, detach, no_runtime, node_lease_duration, nodes, accel, node_labels } => {
            let options = vmform_runtime::supervisor::NodeOptions { accel: accel.config(), labels: node_labels };
            control_plane::up(data_dir.resolve(), listen, detach, (!no_runtime).then_some(node_lease_duration), nodes.into(), options)
        }
        // The launcher's exit codes are its own contract (specs/runtime-contract.md).
        Command::Runtime { command: command @ cli::RuntimeCommand::Launcher { .. } } => return runtime_cmd::launcher(command),
        Command::Runtime { command } => runtime_cmd::run(command),
        Command::Image { command } => image_cmd::run(command),
        Command::Down { data_dir } => control_plane::down(data_dir.resolve()),
        Command::Status { data_dir, kubeconfig } => control_plane::status(data_dir.resolve(), kubeconfig),
        Command::Token { command: cli::TokenCommand::Create { data_dir, read_only, name } } => {
            control_plane::token_create(data_dir.resolve(), &name, read_only)
        }
    };
    error::report(outcome)
}

fn run_compile(input: &Input) -> Compilation {
    compile(&FsLoader, &input.paths, &Options { vars: input.vars.clone(), ..Options::default() })
}

/// The outcome of a compilation whose diagnostics were printed: a usage error for problems
/// with the paths given, a failure for errors in the specs.
pub(crate) fn compiled(c: &Compilation) -> Outcome {
    if c.diagnostics.errors().any(|d| d.is_input_error()) {
        Err(Error::Reported(Kind::Usage))
    } else if c.has_errors() {
        Err(Error::FAILED)
    } else {
        Ok(Done::Ok)
    }
}

fn validate(input: &Input) -> Outcome {
    let c = run_compile(input);
    match input.format {
        // The report is validate's output, so JSON goes to stdout for tools to read.
        DiagnosticFormat::Json => print_stdout(&report::render_json(&c.diagnostics, &c.sources)),
        DiagnosticFormat::Human => {
            report::print(&c.diagnostics, &c.sources, input.format);
            if !c.has_errors() {
                eprintln!("{} valid ({})", plural(c.objects.len(), "machine"), plural(c.sources.iter().count(), "file"));
            }
        }
    }
    compiled(&c)
}

fn build(input: &Input, output: OutputFormat, out_dir: Option<&Path>) -> Outcome {
    let c = run_compile(input);
    report::print(&c.diagnostics, &c.sources, input.format);
    if c.has_errors() {
        // Nothing is written when any error was found: never a partial output.
        return compiled(&c);
    }
    let objects = c.objects.iter().map(|o| &o.object);
    match out_dir {
        None => {
            let text = match output {
                OutputFormat::Yaml => emit::to_yaml(objects),
                OutputFormat::Json => emit::to_json(objects),
            };
            print_stdout(&text);
        }
        Some(dir) => {
            for o in objects {
                let ns = o.metadata.namespace.as_deref().unwrap_or("default");
                let (text, ext) = match output {
                    OutputFormat::Yaml => (emit::object_yaml(o), "yaml"),
                    OutputFormat::Json => (serde_json::to_string_pretty(o).expect("serialises") + "\n", "json"),
                };
                let path = dir.join(ns).join(format!("{}.{ext}", o.metadata.name));
                if let Err(e) = write_atomic(&path, text.as_bytes()) {
                    return Err(Error::usage(format!("cannot write {}: {e}", path.display())));
                }
            }
            eprintln!("wrote {} to {}", plural(c.objects.len(), "manifest"), dir.display());
        }
    }
    Ok(Done::Ok)
}

fn diff(paths: &[PathBuf], base: Option<&str>, vars: Vec<(String, String)>, format: cli::DiffFormat, detailed_exitcode: bool) -> Outcome {
    let options = Options { vars, ..Options::default() };
    let (a, b) = match (base, paths) {
        (Some(rev), paths) => match git_loader::GitLoader::new(rev) {
            Ok(git) => (compile(&git, paths, &options), compile(&FsLoader, paths, &options)),
            Err(e) => {
                return Err(Error::usage(format!("{e}")));
            }
        },
        (None, [old, new]) => (compile(&FsLoader, std::slice::from_ref(old), &options), compile(&FsLoader, std::slice::from_ref(new), &options)),
        (None, _) => {
            return Err(Error::usage("give OLD and NEW, or --base REV and the paths to compare"));
        }
    };
    // The new specs' warnings are what a review acts on; the old specs' would mostly repeat
    // them. The old specs' errors are shown, as they stop the diff.
    let old_errors: vmform_compiler::Diagnostics = a.diagnostics.errors().cloned().collect();
    report::print(&old_errors, &a.sources, cli::DiagnosticFormat::Human);
    report::print(&b.diagnostics, &b.sources, cli::DiagnosticFormat::Human);
    if a.has_errors() || b.has_errors() {
        // Input errors (usage) outrank errors in the specs.
        return Err([compiled(&a), compiled(&b)].into_iter().filter_map(Result::err).max_by_key(Error::exit_code).unwrap_or(Error::FAILED));
    }
    let changes = vmform_compiler::diff::diff(&a.objects, &b.objects);
    let text = match format {
        cli::DiffFormat::Human => diff_output::human(&changes, report::use_colour(std::io::stdout().is_terminal())),
        cli::DiffFormat::Json => diff_output::json(&changes),
        cli::DiffFormat::Markdown => diff_output::markdown(&changes, diff_output::MARKDOWN_LIMIT),
    };
    print_stdout(&text);
    let blocked: Vec<_> = changes.iter().filter(|c| c.blocked).collect();
    if !blocked.is_empty() {
        for c in blocked {
            eprintln!(
                "error: {}/{} has lifecycle prevent-destroy=#true, and this change loses data: {}",
                c.namespace, c.name, c.reason
            );
        }
        return Err(Error::FAILED);
    }
    match (detailed_exitcode, changes.is_empty()) {
        (true, false) => Ok(Done::Changes),
        _ => Ok(Done::Ok),
    }
}

fn fmt(paths: &[PathBuf], check: bool, diff: bool, recursive: bool, format: DiagnosticFormat) -> Outcome {
    // `-`: standard input to standard output, for an editor's format-on-save.
    let stdin = paths.iter().any(|p| p.as_os_str() == "-");
    if stdin && paths.len() > 1 {
        return Err(Error::usage("`-` (standard input) is formatted alone, without other paths"));
    }
    let mut files = vec![];
    for p in paths.iter().filter(|_| !stdin) {
        if let Err(e) = collect_kdl(p, recursive, &mut files) {
            return Err(Error::usage(format!("cannot read {}: {e}", p.display())));
        }
    }
    if stdin {
        files.push(PathBuf::from("<stdin>"));
    } else if files.is_empty() {
        return Err(Error::usage(format!("no .kdl file in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))));
    }
    let mut unformatted = vec![];
    let mut failed = false;
    for f in &files {
        let read = if stdin {
            let mut b = vec![];
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b).map(|_| b)
        } else {
            std::fs::read(f)
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                return Err(Error::usage(format!("cannot read {}: {e}", f.display())));
            }
        };
        // Parse through the compiler so syntax errors are reported like everywhere else.
        let (original, formatted) = match vmform_compiler::fmt::format_file(f, bytes) {
            Ok(pair) => pair,
            Err((diags, sources)) => {
                report::print(&diags, &sources, format);
                failed = true;
                continue;
            }
        };
        if stdin && !check {
            print_stdout(&formatted);
            continue;
        }
        if original == formatted {
            continue;
        }
        unformatted.push(f.clone());
        if check {
            println!("{}", f.display());
            if diff {
                let d = similar::TextDiff::from_lines(&original, &formatted);
                print_stdout(&d.unified_diff().header(&f.display().to_string(), &format!("{} (formatted)", f.display())).to_string());
            }
        } else if let Err(e) = write_atomic(f, formatted.as_bytes()) {
            return Err(Error::usage(format!("cannot write {}: {e}", f.display())));
        }
    }
    if !check && !unformatted.is_empty() {
        eprintln!("formatted {}", plural(unformatted.len(), "file"));
    }
    if failed || (check && !unformatted.is_empty()) { Err(Error::FAILED) } else { Ok(Done::Ok) }
}

/// The .kdl files of a path: the file itself, or those in a directory (in its
/// subdirectories too with `recursive`). A directory with none of its own is a folder of
/// projects (`examples/`), so it is searched whole, as `terraform fmt -recursive` would.
fn collect_kdl(p: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let found = out.len();
    collect_kdl_in(p, recursive, out)?;
    if out.len() == found && !recursive && p.is_dir() {
        collect_kdl_in(p, true, out)?;
    }
    Ok(())
}

fn collect_kdl_in(p: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !std::fs::metadata(p)?.is_dir() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for e in entries {
        if e.is_dir() {
            if recursive {
                collect_kdl_in(&e, recursive, out)?;
            }
        } else if e.extension().is_some_and(|x| x == "kdl") {
            out.push(e);
        }
    }
    Ok(())
}

fn man(out_dir: Option<&Path>) -> Outcome {
    let cmd = Cli::command();
    let render = |cmd: clap::Command| -> Vec<u8> {
        let mut buf = vec![];
        clap_mangen::Man::new(cmd).render(&mut buf).expect("rendering to memory cannot fail");
        buf
    };
    match out_dir {
        None => {
            let _ = std::io::stdout().write_all(&render(cmd));
        }
        Some(dir) => {
            let mut pages = vec![("vmform.1".to_string(), render(cmd.clone()))];
            for sub in cmd.get_subcommands() {
                let name = format!("vmform-{}", sub.get_name());
                pages.push((format!("{name}.1"), render(sub.clone().name(name))));
            }
            for (file, bytes) in pages {
                if let Err(e) = write_atomic(&dir.join(&file), &bytes) {
                    return Err(Error::usage(format!("cannot write {}: {e}", dir.join(file).display())));
                }
            }
        }
    }
    Ok(Done::Ok)
}

/// `println!` that ignores a closed pipe (`vmform status | head`).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::print_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use say;

pub(crate) fn print_stdout(s: &str) {
    // A closed pipe (`vmform build | head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

/// Write through a temporary file and rename, so a reader never sees half a file; the
/// directories are made as needed, and a file rewritten (`fmt`) keeps its permissions.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    vmform_cluster::files::write_atomically(path, bytes, mode)
}
