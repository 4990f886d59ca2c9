//! `vmform check`: run the policy rules on compiled specs and report the findings in the
//! format a person or a CI system wants.

use crate::cli::{CheckFormat, DiagnosticFormat, FailOn, Input};
use crate::error::{Done, Error, Kind, Outcome};
use crate::{compiled, print_stdout, report};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use vmform_compiler::policy::{self, Finding, Level, Policy};
use vmform_compiler::{plural, CompiledVm, Diagnostics, FileId, Sources};

pub struct Args {
    pub paths: Vec<PathBuf>,
    pub policies: Vec<PathBuf>,
    pub rules: Option<Vec<String>>,
    pub fail_on: FailOn,
    pub format: CheckFormat,
    pub vars: Vec<(String, String)>,
    pub test: Option<PathBuf>,
}

pub fn run(args: &Args) -> Outcome {
    match &args.test {
        Some(dir) => run_tests(dir, args),
        None => run_check(args),
    }
}

/// Everything one check run produced.
struct Evaluation {
    sources: Sources,
    objects: Vec<CompiledVm>,
    findings: Vec<Finding>,
    rules: Vec<(String, Level, String)>,
}

/// Compile `paths`, load the policies into the same sources (so findings and policy errors
/// locate alike), and evaluate. `Err` is the exit code after printing what went wrong.
fn evaluate(paths: &[PathBuf], args: &Args) -> Result<Evaluation, Error> {
    let input = Input { paths: paths.to_vec(), vars: args.vars.clone(), format: DiagnosticFormat::Human };
    let mut c = vmform_compiler::compile(&vmform_compiler::FsLoader, &input.paths, &vmform_compiler::Options { vars: input.vars.clone(), source_maps: true });
    report::print(&c.diagnostics, &c.sources, DiagnosticFormat::Human);
    if c.has_errors() {
        return Err(compiled(&c).err().unwrap_or(Error::FAILED));
    }
    // Unknown ids in --rules are a usage error, with the ids that exist.
    let selected: Option<Vec<String>> = args.rules.as_ref().map(|r| r.iter().filter(|x| *x != "none").cloned().collect());
    let (pol, findings, diags) = run_policies(&mut c.sources, &c.objects, &args.policies, selected.as_deref())?;
    if !diags.is_empty() {
        report::print(&diags, &c.sources, DiagnosticFormat::Human);
        if diags.has_errors() {
            return Err(Error::Reported(Kind::Usage));
        }
    }
    let rules = pol
        .rules
        .iter()
        .filter(|r| !r.builtin || selected.as_ref().is_none_or(|s| s.contains(&r.id)))
        .map(|r| (r.id.clone(), r.level, r.description.clone()))
        .chain([("exception-expired".to_string(), Level::Error, "An exception past its expiry date: fix what it waived, or renew it.".to_string())])
        .collect();
    Ok(Evaluation { sources: std::mem::take(&mut c.sources), objects: std::mem::take(&mut c.objects), findings, rules })
}

/// Load the policy files of `policies` (files, or directories of `*.kdl` files) into
/// `sources` with the built-in rules, and evaluate them on `objects`: the policy, the
/// findings and the policy's own diagnostics. `Err` is a usage error (an unreadable policy,
/// an unknown rule id).
/// `vmform check` and `vmform lsp --policy` both run policies through this.
pub(crate) fn run_policies(
    sources: &mut Sources,
    objects: &[CompiledVm],
    policies: &[PathBuf],
    selected: Option<&[String]>,
) -> Result<(Policy, Vec<Finding>, Diagnostics), Error> {
    let mut policy_files = vec![];
    for p in policies {
        let files = policy_paths(p).map_err(|e| Error::usage(format!("cannot read policy {}: {e}", p.display())))?;
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| Error::usage(format!("cannot read policy {}: {e}", f.display())))?;
            policy_files.push(sources.add(f, text.into()));
        }
    }
    let builtin: FileId = sources.add(policy::BUILTIN_PATH.into(), policy::BUILTIN.into());
    let mut diags = Diagnostics::default();
    let pol: Policy = policy::parse(sources, &policy_files, Some(builtin), &mut diags);
    if let Some(sel) = selected {
        let known: BTreeSet<&str> = pol.rules.iter().filter(|r| r.builtin).map(|r| r.id.as_str()).collect();
        if let Some(bad) = sel.iter().find(|s| !known.contains(s.as_str())) {
            return Err(Error::usage(format!("--rules names no built-in rule `{bad}`; built-in rules: {}", known.into_iter().collect::<Vec<_>>().join(", "))));
        }
    }
    let findings = policy::check(&pol, objects, selected, today(), &mut diags);
    Ok((pol, findings, diags))
}

fn policy_paths(p: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !std::fs::metadata(p)?.is_dir() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
        .collect();
    v.sort();
    Ok(v)
}

fn fails(f: &Finding, fail_on: FailOn) -> bool {
    let threshold = match fail_on {
        FailOn::Error => Level::Error,
        FailOn::Warning => Level::Warning,
        FailOn::Note => Level::Note,
    };
    f.waived_by.is_none() && f.level >= threshold
}

fn run_check(args: &Args) -> Outcome {
    let out = match evaluate(&args.paths, args) {
        Ok(o) => o,
        Err(e) => return Err(e),
    };
    let text = match args.format {
        CheckFormat::Human => human(&out),
        CheckFormat::Json => json(&out),
        CheckFormat::Sarif => sarif(&out),
        CheckFormat::Github => github(&out),
        CheckFormat::Junit => junit(&out),
    };
    print_stdout(&text);
    if out.findings.iter().any(|f| fails(f, args.fail_on)) { Err(Error::FAILED) } else { Ok(Done::Ok) }
}

/// Today's date (UTC), for exception expiry.
fn today() -> (u32, u32, u32) {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as u32, m as u32, d as u32)
}

/// File, line and column of a finding, if it has a place.
fn place(out: &Evaluation, f: &Finding) -> Option<(String, usize, usize)> {
    let span = f.span?;
    let file = out.sources.get(span.file);
    let (line, col) = file.line_col(span.start as usize);
    Some((file.path.display().to_string(), line, col))
}

fn human(out: &Evaluation) -> String {
    let mut s = String::new();
    for f in &out.findings {
        s.push_str(&format!("{}[{}] {}/{}: {}\n", f.level.as_str(), f.rule, f.namespace, f.name, f.message));
        if let Some((file, line, col)) = place(out, f) {
            s.push_str(&format!("  --> {file}:{line}:{col}\n"));
        }
        if let Some(e) = &f.waived_by {
            s.push_str(&format!("  waived by an exception: {} (owner {}{})\n", e.reason, e.owner, e.expires.as_ref().map(|d| format!(", until {d}")).unwrap_or_default()));
        }
    }
    let count = |l: Level| out.findings.iter().filter(|f| f.level == l && f.waived_by.is_none()).count();
    let waived = out.findings.iter().filter(|f| f.waived_by.is_some()).count();
    s.push_str(&format!(
        "{} checked against {}: {}, {}, {}{}\n",
        plural(out.objects.len(), "VM"),
        plural(out.rules.len(), "rule"),
        plural(count(Level::Error), "error"),
        plural(count(Level::Warning), "warning"),
        plural(count(Level::Note), "note"),
        if waived > 0 { format!(" ({waived} waived)") } else { String::new() }
    ));
    s
}

fn json(out: &Evaluation) -> String {
    let findings: Vec<serde_json::Value> = out
        .findings
        .iter()
        .map(|f| {
            let mut v = serde_json::to_value(f).expect("findings serialise");
            if let Some((file, line, col)) = place(out, f) {
                v["file"] = file.into();
                v["line"] = line.into();
                v["column"] = col.into();
            }
            v
        })
        .collect();
    let count = |l: Level| out.findings.iter().filter(|f| f.level == l && f.waived_by.is_none()).count();
    let doc = serde_json::json!({
        "version": 1,
        "findings": findings,
        "summary": {
            "vms": out.objects.len(),
            "error": count(Level::Error),
            "warning": count(Level::Warning),
            "note": count(Level::Note),
            "waived": out.findings.iter().filter(|f| f.waived_by.is_some()).count(),
        },
    });
    serde_json::to_string_pretty(&doc).expect("serialises") + "\n"
}

/// SARIF 2.1.0 (OASIS): one run, the rules that ran in `tool.driver.rules`, one result per
/// finding; waived findings carry an external suppression with its justification.
fn sarif(out: &Evaluation) -> String {
    let rules: Vec<serde_json::Value> = out
        .rules
        .iter()
        .map(|(id, level, description)| {
            serde_json::json!({
                "id": id,
                "name": id,
                "shortDescription": { "text": description.split(". ").next().unwrap_or(description) },
                "fullDescription": { "text": description },
                "defaultConfiguration": { "level": level.as_str() },
                "help": { "text": description },
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = out
        .findings
        .iter()
        .map(|f| {
            let index = out.rules.iter().position(|r| r.0 == f.rule).unwrap_or(0);
            let mut r = serde_json::json!({
                "ruleId": f.rule,
                "ruleIndex": index,
                "level": f.level.as_str(),
                "message": { "text": format!("{}/{}: {}", f.namespace, f.name, f.message) },
                "locations": [],
            });
            if let Some((file, line, col)) = place(out, f) {
                r["locations"] = serde_json::json!([{
                    "physicalLocation": {
                        "artifactLocation": { "uri": file.replace('\\', "/") },
                        "region": { "startLine": line, "startColumn": col },
                    }
                }]);
            }
            if let Some(e) = &f.waived_by {
                r["suppressions"] = serde_json::json!([{ "kind": "external", "justification": format!("{} (owner {})", e.reason, e.owner) }]);
            }
            r
        })
        .collect();
    let doc = serde_json::json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": { "driver": {
                "name": "vmform",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/vmform/vmform",
                "rules": rules,
            }},
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&doc).expect("serialises") + "\n"
}

/// GitHub Actions workflow commands: an annotation per finding on its file and line.
fn github(out: &Evaluation) -> String {
    // Workflow-command data escapes %, CR and LF; properties also , and :.
    let data = |s: &str| s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    let prop = |s: &str| data(s).replace(':', "%3A").replace(',', "%2C");
    let mut s = String::new();
    for f in out.findings.iter().filter(|f| f.waived_by.is_none()) {
        let cmd = match f.level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Note => "notice",
        };
        let loc = place(out, f).map(|(file, line, col)| format!("file={},line={line},col={col},", prop(&file))).unwrap_or_default();
        s.push_str(&format!("::{cmd} {loc}title={}::{}\n", prop(&format!("vmform {}", f.rule)), data(&format!("{}/{}: {}", f.namespace, f.name, f.message))));
    }
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// JUnit XML: a test case per VM and rule that found something, and one passing case per
/// VM without findings.
fn junit(out: &Evaluation) -> String {
    let mut cases = String::new();
    let (mut tests, mut failures) = (0, 0);
    for vm in &out.objects {
        let meta = &vm.object.metadata;
        let (ns, name) = (meta.namespace.clone().unwrap_or_default(), meta.name.clone());
        let mine: Vec<&Finding> = out.findings.iter().filter(|f| f.namespace == ns && f.name == name).collect();
        if mine.is_empty() {
            tests += 1;
            cases.push_str(&format!("    <testcase classname=\"{}\" name=\"policy\"/>\n", xml(&format!("{ns}/{name}"))));
        }
        for f in mine {
            tests += 1;
            let at = place(out, f).map(|(file, line, col)| format!(" at {file}:{line}:{col}")).unwrap_or_default();
            if f.waived_by.is_some() {
                cases.push_str(&format!("    <testcase classname=\"{}\" name=\"{}\"><skipped message=\"waived by an exception\"/></testcase>\n", xml(&format!("{ns}/{name}")), xml(&f.rule)));
            } else {
                failures += 1;
                cases.push_str(&format!(
                    "    <testcase classname=\"{}\" name=\"{}\"><failure type=\"{}\" message=\"{}\">{}{}</failure></testcase>\n",
                    xml(&format!("{ns}/{name}")),
                    xml(&f.rule),
                    f.level.as_str(),
                    xml(&f.message),
                    xml(&f.message),
                    xml(&at)
                ));
            }
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"vmform check\" tests=\"{tests}\" failures=\"{failures}\">\n  <testsuite name=\"vmform check\" tests=\"{tests}\" failures=\"{failures}\">\n{cases}  </testsuite>\n</testsuites>\n"
    )
}

/// `--test DIR`: each `*.kdl` file is a case; its `// expect: RULE NAMESPACE/NAME` lines
/// are the findings it must produce, no more and no fewer (waived findings do not count).
fn run_tests(dir: &Path, args: &Args) -> Outcome {
    let cases = match policy_paths(dir) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            return Err(Error::usage(format!("{} holds no .kdl test case", dir.display())));
        }
        Err(e) => {
            return Err(Error::usage(format!("cannot read {}: {e}", dir.display())));
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for case in &cases {
        let text = std::fs::read_to_string(case).unwrap_or_default();
        let expected: BTreeSet<String> =
            text.lines().filter_map(|l| l.trim().strip_prefix("// expect:")).map(|e| e.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        // `// rules: a,b` in a case runs only those built-in rules, so a case can test one.
        let rules = text.lines().find_map(|l| l.trim().strip_prefix("// rules:")).map(|r| r.split(',').map(|x| x.trim().to_string()).collect());
        let case_args = Args { rules: rules.or_else(|| args.rules.clone()), paths: vec![], policies: args.policies.clone(), vars: args.vars.clone(), test: None, ..*args };
        let outcome = match evaluate(std::slice::from_ref(case), &case_args) {
            Ok(o) => o,
            Err(_) => {
                println!("FAIL {}: the case does not compile or its policy does not load", case.display());
                failed += 1;
                continue;
            }
        };
        let got: BTreeSet<String> =
            outcome.findings.iter().filter(|f| f.waived_by.is_none()).map(|f| format!("{} {}/{}", f.rule, f.namespace, f.name)).collect();
        if got == expected {
            println!("PASS {}", case.display());
            passed += 1;
        } else {
            println!("FAIL {}", case.display());
            for m in expected.difference(&got) {
                println!("    missing:    {m}");
            }
            for u in got.difference(&expected) {
                println!("    unexpected: {u}");
            }
            failed += 1;
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 { Err(Error::FAILED) } else { Ok(Done::Ok) }
}
