//! `vmform plan`, `apply`, `destroy` and `show`: the CLI around `vmform-deploy`.

use crate::cli::{ApplyArgs, PlanFormat, ProjectArgs, TargetArgs};
use crate::error::{Done, Error, Outcome};
use crate::{diff_output, print_stdout, report};
use std::io::{BufRead, IsTerminal, Write};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vmform_compiler::diff::ObjectChange;
use vmform_compiler::{compile, plural, CompiledVm, FsLoader, Options};
use vmform_deploy::apply::{self, ApplyOptions};
use vmform_deploy::inventory::ApplySet;
use vmform_deploy::plan::{self, Plan, PlanOptions};
use vmform_deploy::target::{self, Target};
use vmform_deploy::DeployError;

/// One line on stdout. A closed pipe (`vmform apply … | head`) must not stop an apply
/// half-way, so write errors are ignored.
fn say(line: &str) {
    print_stdout(&format!("{line}\n"));
}

/// A failure of plan, apply or destroy, with the fields of a conflict under it.
fn deploy_error(e: DeployError) -> Error {
    let mut message = e.to_string();
    if let DeployError::Conflict { fields, .. } = &e {
        for f in fields {
            message.push_str(&format!("\n  {}: {}", f.field, f.message));
        }
    }
    Error::Failed(message)
}

/// [`deploy_error`], and for a refusal by `lifecycle prevent-destroy`, where each refused
/// VM's rule is written and how to lift it.
fn guard_error(e: DeployError, args: &ProjectArgs) -> Error {
    let DeployError::PreventDestroy { refused } = &e else { return deploy_error(e) };
    let mut message = e.to_string();
    let sites = prevent_destroy_sites(args);
    for r in refused {
        message.push_str(&match sites.get(&r.vm) {
            Some(site) => format!("\n  {}: `lifecycle prevent-destroy=#true` is set at {site}", r.vm),
            None => format!("\n  {}: its live VM carries vmform.io/prevent-destroy=true, from `lifecycle prevent-destroy=#true` in its specs", r.vm),
        });
    }
    message.push_str("\nhelp: to lift the rule, remove `prevent-destroy=#true` there (or set it to #false) and run `vmform apply`, so the cluster knows; then run this again");
    Error::Failed(message)
}

/// `namespace/name` → `file:line:column` of each VM's `prevent-destroy=#true`, from the
/// project's specs when they compile (quietly: the refusal is the message here).
fn prevent_destroy_sites(args: &ProjectArgs) -> BTreeMap<String, String> {
    if args.paths.is_empty() {
        return BTreeMap::new();
    }
    let c = compile(&FsLoader, &args.paths, &Options { vars: args.vars.clone(), ..Options::default() });
    c.objects
        .iter()
        .filter_map(|vm| {
            let span = vm.lifecycle.prevent_destroy_at?;
            let file = c.sources.get(span.file);
            let (line, column) = file.line_col(span.start as usize);
            let key = format!("{}/{}", vm.object.metadata.namespace.as_deref().unwrap_or(""), vm.object.metadata.name);
            Some((key, format!("{}:{line}:{column}", file.path.display())))
        })
        .collect()
}

/// The project name: `--project`, else the first path's directory (or file) name.
fn project_name(project: Option<&str>, paths: &[PathBuf]) -> Option<String> {
    if let Some(p) = project {
        return Some(p.to_string());
    }
    let first = paths.first()?;
    let full = std::fs::canonicalize(first).unwrap_or_else(|_| first.clone());
    let name = if full.is_dir() { full.file_name() } else { full.file_stem() };
    name.map(|n| n.to_string_lossy().into_owned())
}

/// Compile the project's specs; `None` (after printing the diagnostics) on errors.
fn compile_specs(args: &ProjectArgs) -> Result<Vec<CompiledVm>, Error> {
    if args.paths.is_empty() {
        return Err(Error::usage("give the spec files or directories of the project"));
    }
    let c = compile(&FsLoader, &args.paths, &Options { vars: args.vars.clone(), ..Options::default() });
    report::print(&c.diagnostics, &c.sources, crate::cli::DiagnosticFormat::Human);
    if c.has_errors() {
        return Err(crate::compiled(&c).err().unwrap_or(Error::FAILED));
    }
    Ok(c.objects)
}

fn render(target: &Target, set: &ApplySet, plan: &Plan, changes: &[ObjectChange], colour: bool) -> String {
    let mut out = format!("Target: {} (project {}, ApplySet {})\n\n", target.describe(), set.project, set.id);
    for ns in &plan.namespaces {
        out.push_str(&format!("+ namespace {ns}\n"));
    }
    if !plan.namespaces.is_empty() {
        out.push('\n');
    }
    if plan.refresh_only {
        if plan.drift.is_empty() {
            out.push_str("No drift: the cluster matches what vmform applied.\n");
        }
    } else {
        out.push_str(&diff_output::human(changes, colour));
    }
    if !plan.vm_actions.is_empty() {
        out.push_str("\nVM actions (start and stop change the run strategy; lifecycle vm-actions or --vm-actions keep|revert decide what apply does):\n");
        for action in &plan.vm_actions {
            out.push_str(&format!("  ~ {}\n", action.describe()));
        }
    }
    if !plan.drift.is_empty() {
        out.push_str("\nDrift (changed outside vmform; an apply sets them back, with --force-conflicts where another field manager owns them):\n");
        for d in &plan.drift {
            out.push_str(&format!("  ~ {}/{} {}: changed by {}\n", d.namespace, d.name, d.path, d.managers.join(", ")));
        }
    }
    let pending: Vec<&plan::Step> = plan.steps.iter().filter(|s| s.effect == "restart").collect();
    if !pending.is_empty() {
        out.push_str(&format!(
            "\nThe changes to {} take effect at the next restart (apply with --restart to restart running VMs).\n",
            plural(pending.len(), "VM")
        ));
    }
    out
}

/// Plan the project against the target; prints nothing.
async fn make_plan(args: &ProjectArgs, refresh_only: bool) -> Result<(Target, ApplySet, Plan, Vec<ObjectChange>), Error> {
    let compiled = compile_specs(args)?;
    let Some(project) = project_name(args.project.as_deref(), &args.paths) else {
        return Err(Error::usage("cannot name the project: give --project"));
    };
    let set = ApplySet::new(&project);
    let target = target::connect(&args.target.wanted()).await.map_err(deploy_error)?;
    let options = PlanOptions { targets: args.targets.clone(), excludes: args.excludes.clone(), refresh_only, vm_actions: args.vm_actions };
    for name in args.targets.iter().filter(|t| !compiled.iter().any(|vm| vm.object.metadata.name == **t || format!("{}/{}", vm.object.metadata.namespace.as_deref().unwrap_or(""), vm.object.metadata.name) == **t)) {
        eprintln!("warning: --target {name} names no VM in the specs");
    }
    let (plan, changes) = plan::plan(&target, &set, &compiled, &options).await.map_err(deploy_error)?;
    Ok((target, set, plan, changes))
}

fn colour() -> bool {
    report::use_colour(std::io::stdout().is_terminal())
}

pub fn plan(args: &ProjectArgs, out: Option<&Path>, detailed_exitcode: bool, refresh_only: bool, format: PlanFormat) -> Outcome {
    crate::process::runtime().block_on(async {
        let (target, set, mut plan, changes) = make_plan(args, refresh_only).await?;
        plan.text = render(&target, &set, &plan, &changes, false);
        match format {
            PlanFormat::Human => print_stdout(&render(&target, &set, &plan, &changes, colour())),
            PlanFormat::Json => print_stdout(&(serde_json::to_string_pretty(&plan).expect("plans serialise") + "\n")),
        }
        if let Some(path) = out {
            let json = serde_json::to_vec_pretty(&plan).expect("plans serialise");
            // Plans hold whole objects, cloud-init user data included: readable by the owner only.
            if let Err(e) = vmform_cluster::files::write_atomically(path, &json, 0o600) {
                return Err(Error::failed(format!("cannot write the plan to {}: {e}", path.display())));
            }
            eprintln!("Saved the plan to {}; apply exactly it with `vmform apply {}`.", path.display(), path.display());
        }
        let blocked: Vec<_> = plan.steps.iter().filter(|s| s.blocked).collect();
        for s in &blocked {
            eprintln!("error: {}/{} has lifecycle prevent-destroy=#true, and this change loses data", s.namespace, s.name);
        }
        if !blocked.is_empty() {
            return Err(Error::FAILED);
        }
        // Refresh-only reports drift as its change, as `terraform plan -refresh-only` does.
        let changed = if plan.refresh_only { !plan.drift.is_empty() } else { !plan.is_empty() };
        if detailed_exitcode && changed { Ok(Done::Changes) } else { Ok(Done::Ok) }
    })
}

/// Ask for `yes`, reading the answer from `input`: the terminal, or whatever stdin is
/// (`echo yes | vmform apply …`), as terraform does. Any other answer cancels; the end of
/// input before an answer is an error.
fn confirm(question: &str, input: &mut impl BufRead, out: &mut impl Write) -> Result<bool, String> {
    let _ = write!(out, "\n{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: ");
    let _ = out.flush();
    let mut answer = String::new();
    match input.read_line(&mut answer) {
        Ok(0) => Err("the prompt was interrupted (end of input) before an answer; nothing was done (--auto-approve does it without asking)".into()),
        Ok(_) => Ok(answer.trim() == "yes"),
        Err(e) => Err(format!("the prompt was interrupted ({e}); nothing was done")),
    }
}

/// Ask, and say why nothing happens when the answer is not `yes`.
fn approved(question: &str, what: &str) -> bool {
    let stdin = std::io::stdin();
    let answer = confirm(question, &mut stdin.lock(), &mut std::io::stdout());
    // A terminal echoed the answer and its newline; an answer from a pipe did not.
    if !stdin.is_terminal() {
        say("");
    }
    match answer {
        Ok(true) => true,
        Ok(false) => {
            eprintln!("{what} cancelled.");
            false
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

fn apply_options(guards: &ApplyArgs, wait: Option<std::time::Duration>) -> ApplyOptions {
    ApplyOptions { force_conflicts: guards.force_conflicts, allow_data_loss: guards.allow_data_loss, restart: guards.restart, wait, lock_timeout: guards.lock_timeout }
}

/// Progress on a terminal: a line per write, and a spinner per VM while `--wait` waits.
struct TerminalProgress {
    bars: indicatif::MultiProgress,
    waiting: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl apply::Progress for TerminalProgress {
    fn line(&self, line: &str) {
        let _ = self.bars.println(line);
    }
    fn waiting(&self, vm: &str, wanted: &str, current: &str, done: bool) {
        let mut bars = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars.entry(vm.to_string()).or_insert_with(|| {
            let bar = self.bars.add(indicatif::ProgressBar::new_spinner());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        let current = if current.is_empty() { "no status yet" } else { current };
        if done {
            bar.finish_with_message(format!("{vm}: {wanted}"));
        } else {
            bar.set_message(format!("{vm}: waiting for {wanted} (now {current})"));
        }
    }
}

async fn run_apply(target: &Target, set: &ApplySet, plan: &Plan, options: &ApplyOptions, destroying: bool) -> Outcome {
    let plain = |line: &str| say(line);
    let terminal = TerminalProgress { bars: indicatif::MultiProgress::new(), waiting: Default::default() };
    let progress: &dyn apply::Progress = if std::io::stdout().is_terminal() { &terminal } else { &plain };
    match apply::apply(target, set, plan, options, progress).await {
        Ok(done) => {
            say(&format!(
                "\n{} complete! {} added, {} changed, {} replaced, {} destroyed{}.",
                if destroying { "Destroy" } else { "Apply" },
                done.created,
                done.updated,
                done.replaced,
                done.deleted,
                if done.namespaces > 0 { format!("; {} created", plural(done.namespaces, "namespace")) } else { String::new() }
            ));
            for vm in &done.restart_pending {
                say(&format!("restart pending: {vm} is running with its old settings until its next restart (vmform apply --restart)"));
            }
            for vm in &done.restarted {
                say(&format!("restarted: {vm}"));
            }
            for (vm, why) in &done.restart_failed {
                eprintln!("error: {vm} was updated but not restarted: {why}");
            }
            if done.restart_failed.is_empty() { Ok(Done::Ok) } else { Err(Error::FAILED) }
        }
        Err(e) => Err(deploy_error(e)),
    }
}

/// A single path that is a saved plan rather than specs.
fn saved_plan(paths: &[PathBuf]) -> Option<PathBuf> {
    match paths {
        [one] if one.is_file() && one.extension().is_none_or(|e| e != "kdl") => Some(one.clone()),
        _ => None,
    }
}

pub fn apply(args: &ProjectArgs, guards: &ApplyArgs, wait: Option<std::time::Duration>) -> Outcome {
    crate::process::runtime().block_on(async {
        let options = apply_options(guards, wait);
        if let Some(file) = saved_plan(&args.paths) {
            let plan = match Plan::load(&file) {
                Ok(p) => p,
                Err(e) => return Err(deploy_error(e)),
            };
            let target = match target::connect(&args.target.wanted()).await {
                Ok(t) => t,
                Err(e) => return Err(deploy_error(e)),
            };
            if let Err(e) = plan.check_target(&target) {
                return Err(deploy_error(e));
            }
            if let Some(project) = args.project.as_deref().filter(|p| *p != plan.project) {
                return Err(deploy_error(DeployError::WrongPlan { what: format!("project {}", plan.project), here: format!("project {project}") }));
            }
            let set = ApplySet::new(&plan.project);
            if set.id != plan.applyset {
                return Err(deploy_error(DeployError::WrongPlan { what: format!("ApplySet {}", plan.applyset), here: format!("project {} ({})", set.project, set.id) }));
            }
            print_stdout(&plan.text);
            return run_apply(&target, &set, &plan, &options, false).await;
        }
        let (target, set, mut plan, changes) = make_plan(args, false).await?;
        plan.text = render(&target, &set, &plan, &changes, false);
        print_stdout(&render(&target, &set, &plan, &changes, colour()));
        if plan.is_empty() {
            return Ok(Done::Ok);
        }
        if let Err(e) = apply::check_guards(&plan, &options) {
            return Err(guard_error(e, args));
        }
        if !guards.auto_approve && !approved("Do you want to perform these actions?", "Apply") {
            return Err(Error::FAILED);
        }
        run_apply(&target, &set, &plan, &options, false).await
    })
}

pub fn destroy(args: &ProjectArgs, guards: &ApplyArgs) -> Outcome {
    crate::process::runtime().block_on(async {
        let Some(project) = project_name(args.project.as_deref(), &args.paths) else {
            return Err(Error::usage("cannot name the project: give its paths or --project"));
        };
        let set = ApplySet::new(&project);
        let target = match target::connect(&args.target.wanted()).await {
            Ok(t) => t,
            Err(e) => return Err(deploy_error(e)),
        };
        let options = PlanOptions { targets: args.targets.clone(), excludes: args.excludes.clone(), refresh_only: false, vm_actions: None };
        let (mut plan, changes) = match plan::plan_destroy(&target, &set, &options).await {
            Ok(p) => p,
            Err(e) => return Err(deploy_error(e)),
        };
        plan.text = render(&target, &set, &plan, &changes, false);
        print_stdout(&render(&target, &set, &plan, &changes, colour()));
        if plan.is_empty() {
            return Ok(Done::Ok);
        }
        let options = apply_options(guards, None);
        if let Err(e) = apply::check_guards(&plan, &options) {
            return Err(guard_error(e, args));
        }
        if !guards.auto_approve && !approved(&format!("Do you really want to destroy these VMs of project {project}?"), "Destroy") {
            return Err(Error::FAILED);
        }
        run_apply(&target, &set, &plan, &options, true).await
    })
}

/// `path`: a saved plan, or the specs of the project whose live VMs to show (`.` by
/// default, as `terraform show` shows the working directory's state).
pub fn show(path: &Path, project: Option<&str>, target_args_: &TargetArgs, format: PlanFormat) -> Outcome {
    let paths = [path.to_path_buf()];
    if let Some(file) = saved_plan(&paths) {
        return match Plan::load(&file) {
            Ok(plan) => {
                match format {
                    PlanFormat::Human => print_stdout(&plan.text),
                    PlanFormat::Json => print_stdout(&(serde_json::to_string_pretty(&plan).expect("plans serialise") + "\n")),
                }
                Ok(Done::Ok)
            }
            Err(e) => Err(deploy_error(e)),
        };
    }
    let Some(project) = project_name(project, &paths) else {
        return Err(Error::usage(format!("cannot name the project of {}: give --project", path.display())));
    };
    let project = project.as_str();
    crate::process::runtime().block_on(async {
        let target = match target::connect(&target_args_.wanted()).await {
            Ok(t) => t,
            Err(e) => return Err(deploy_error(e)),
        };
        let set = ApplySet::new(project);
        let members = plan::members(&target, &set).await.map_err(deploy_error)?;
        match format {
            PlanFormat::Json => {
                let items: Vec<serde_json::Value> = members.iter().map(|o| serde_json::to_value(o).expect("objects serialise")).collect();
                print_stdout(&(serde_json::to_string_pretty(&serde_json::json!({ "project": project, "target": target.server, "items": items })).expect("serialises") + "\n"));
            }
            PlanFormat::Human => {
                let mut text = format!("Project {project} on {}: {}\n", target.describe(), plural(members.len(), "VM"));
                for o in &members {
                    let status = o.data.pointer("/status/printableStatus").and_then(|s| s.as_str()).unwrap_or("-");
                    let strategy = o.data.pointer("/spec/runStrategy").and_then(|s| s.as_str()).unwrap_or("-");
                    // A VM that cannot get on says why, in one line.
                    let why = vmform_deploy::vm_state::stuck(&o.data)
                        .map(|s| s.reason)
                        .or_else(|| vmform_deploy::vm_state::failure(&o.data))
                        .map(|why| format!(": {why}"))
                        .unwrap_or_default();
                    text.push_str(&format!(
                        "  {}/{}  run-strategy {strategy}  status {status}{why}\n",
                        o.metadata.namespace.as_deref().unwrap_or(""),
                        o.metadata.name.as_deref().unwrap_or("")
                    ));
                }
                print_stdout(&text);
            }
        }
        Ok(Done::Ok)
    })
}

#[cfg(test)]
mod tests {
    use super::confirm;

    /// The answer comes from any input, a pipe as well as a terminal: only `yes` approves,
    /// and the end of input before an answer is an error.
    #[test]
    fn the_prompt_reads_its_answer_from_any_input() {
        let ask = |input: &str| {
            let mut shown = vec![];
            let answer = confirm("Do you want to perform these actions?", &mut input.as_bytes(), &mut shown);
            (answer, String::from_utf8(shown).unwrap())
        };
        let (answer, shown) = ask("yes\n");
        assert_eq!(answer, Ok(true));
        assert!(shown.contains("Do you want to perform these actions?") && shown.ends_with("Enter a value: "), "{shown}");
        assert_eq!(ask("yes").0, Ok(true), "the last line needs no newline");
        assert_eq!(ask("no\n").0, Ok(false));
        assert_eq!(ask("\nyes\n").0, Ok(false), "an empty line is an answer, and not yes");
        assert_eq!(ask("yess\n").0, Ok(false));
        let eof = ask("").0.unwrap_err();
        assert!(eof.contains("end of input") && eof.contains("--auto-approve"), "{eof}");
    }
}
