//! `vmform check`: policy rules in KDL with CEL expressions over the emitted objects.
//!
//! ```kdl
//! rule "prod-memory-cap" severity="error" {
//!     description "why the rule exists"
//!     match namespace="*prod*"                       // optional: namespace=, name=, label k="v"
//!     deny "quantity(object.spec.template.spec.domain.memory.guest) > quantity('64Gi')" \
//!         message="prod VMs stay under 64Gi" path="spec.template.spec.domain.memory.guest"
//! }
//! exception "prod-memory-cap" vm="db" namespace="shop-prod" reason="…" owner="…" expires="2027-01-31"
//! ```
//!
//! A `deny` is a CEL expression over `object` (the emitted VirtualMachine, as JSON) that is
//! true for an offending object, the negation of a Kubernetes ValidatingAdmissionPolicy
//! validation. Findings point at the spec span that produced `path=`, through the
//! compiler's source map. Exceptions live only in policy files.

use crate::decode::did_you_mean;
use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::lower::CompiledVm;
use crate::source::{FileId, Sources, Span};
use cel::extractors::This;
use kdl::{KdlDocument, KdlNode};
use serde::Serialize;
use std::sync::Arc;

/// The built-in rules, in the same format as user policies.
pub const BUILTIN: &str = include_str!("../policies/builtin.kdl");
pub const BUILTIN_PATH: &str = "<built-in rules>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Note,
    Warning,
    Error,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "note" => Some(Level::Note),
            "warning" => Some(Level::Warning),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Note => "note",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

pub struct Rule {
    pub id: String,
    pub level: Level,
    pub description: String,
    pub matcher: Matcher,
    pub denies: Vec<Deny>,
    pub builtin: bool,
}

#[derive(Default)]
pub struct Matcher {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub labels: Vec<(String, String)>,
}

pub struct Deny {
    pub expression: String,
    program: cel::Program,
    pub message: String,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Exception {
    pub rule: String,
    pub vm: String,
    pub namespace: Option<String>,
    pub reason: String,
    pub owner: String,
    /// `YYYY-MM-DD`; the exception no longer applies after that day.
    pub expires: Option<String>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Default)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub exceptions: Vec<Exception>,
}

/// One rule broken by one VM (or one expired exception).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: String,
    pub level: Level,
    pub message: String,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Where in the specs (or, for an expired exception, the policy file).
    #[serde(skip)]
    pub span: Option<Span>,
    /// An exception that waives this finding; waived findings never fail a check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waived_by: Option<Exception>,
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || !s[first.len()..].ends_with(last) || s.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Parse policy files (already in `sources`) into rules and exceptions; problems are
/// diagnostics like any spec error.
pub fn parse(sources: &Sources, files: &[FileId], builtin: Option<FileId>, diags: &mut Diagnostics) -> Policy {
    let mut policy = Policy::default();
    for &id in files.iter().chain(builtin.iter()) {
        let text = sources.get(id).text.clone();
        let doc = match text.parse::<KdlDocument>() {
            Ok(d) => d,
            Err(e) => {
                for d in e.diagnostics {
                    diags.push(
                        Diagnostic::new(Code::KdlSyntax, d.message.unwrap_or_else(|| "invalid KDL".into()))
                            .at(Span::from_miette(id, d.span), d.label.unwrap_or_else(|| "here".into()))
                            .help(d.help.unwrap_or_else(|| "policy files are KDL v2".into())),
                    );
                }
                continue;
            }
        };
        for node in doc.nodes() {
            let span = Span::from_miette(id, node.span());
            match node.name().value() {
                "rule" => {
                    if let Some(r) = rule(node, id, Some(id) == builtin, diags) {
                        if policy.rules.iter().any(|x| x.id == r.id) {
                            diags.push(
                                Diagnostic::new(Code::DuplicateDefinition, format!("rule `{}` is defined twice", r.id))
                                    .at(span, "defined again here")
                                    .help("rule ids are shared by every policy file and the built-in rules"),
                            );
                        } else {
                            policy.rules.push(r);
                        }
                    }
                }
                "exception" => {
                    if let Some(e) = exception(node, id, diags) {
                        policy.exceptions.push(e);
                    }
                }
                other => {
                    let mut d = Diagnostic::new(Code::UnknownNode, format!("unknown node `{other}` in a policy file"))
                        .at(Span::from_miette(id, node.name().span()), "unknown node");
                    d = match did_you_mean(other, ["rule", "exception"]) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.help("policy files hold `rule` and `exception` nodes"),
                    };
                    diags.push(d);
                }
            }
        }
    }
    for e in &policy.exceptions {
        if !policy.rules.iter().any(|r| r.id == e.rule) {
            diags.push(
                Diagnostic::new(Code::UnknownPolicyRule, format!("exception names unknown rule `{}`", e.rule))
                    .at(e.span, "no rule of this id")
                    .help(match did_you_mean(&e.rule, policy.rules.iter().map(|r| r.id.as_str())) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "name a built-in rule or one defined in a policy file".into(),
                    }),
            );
        }
    }
    policy
}

fn str_prop(node: &KdlNode, key: &str) -> Option<String> {
    node.get(key).and_then(|v| v.as_string()).map(str::to_string)
}

fn policy_error(id: FileId, node: &KdlNode, message: String, help: &str) -> Diagnostic {
    Diagnostic::new(Code::BadPolicy, message).at(Span::from_miette(id, node.span()), "in this node").help(help.to_string())
}

fn rule(node: &KdlNode, id: FileId, builtin: bool, diags: &mut Diagnostics) -> Option<Rule> {
    let Some(rule_id) = node.get(0).and_then(|v| v.as_string()) else {
        diags.push(policy_error(id, node, "a rule needs an id".into(), "write `rule \"my-rule\" severity=\"error\" { … }`"));
        return None;
    };
    let level = match str_prop(node, "severity").as_deref() {
        None => Level::Error,
        Some(s) => match Level::parse(s) {
            Some(l) => l,
            None => {
                diags.push(policy_error(id, node, format!("`{s}` is not a severity"), "use \"error\", \"warning\" or \"note\""));
                return None;
            }
        },
    };
    let mut r = Rule { id: rule_id.to_string(), level, description: String::new(), matcher: Matcher::default(), denies: vec![], builtin };
    let mut wrote_deny = false;
    for child in node.children().map(|c| c.nodes()).unwrap_or(&[]) {
        match child.name().value() {
            "description" => r.description = child.get(0).and_then(|v| v.as_string()).unwrap_or_default().to_string(),
            "match" => {
                r.matcher.namespace = str_prop(child, "namespace");
                r.matcher.name = str_prop(child, "name");
            }
            "label" => {
                for e in child.entries() {
                    if let (Some(k), Some(v)) = (e.name(), e.value().as_string()) {
                        r.matcher.labels.push((k.value().to_string(), v.to_string()));
                    }
                }
            }
            "deny" => {
                wrote_deny = true;
                let Some(expr) = child.get(0).and_then(|v| v.as_string()) else {
                    diags.push(policy_error(id, child, "deny needs a CEL expression".into(), "write `deny \"object.metadata.namespace == 'default'\" message=\"…\"`"));
                    continue;
                };
                match cel_env().compile(expr) {
                    Ok(program) => r.denies.push(Deny {
                        expression: expr.to_string(),
                        program,
                        message: str_prop(child, "message").unwrap_or_else(|| format!("rule {rule_id} denies this VM")),
                        path: str_prop(child, "path"),
                    }),
                    Err(e) => diags.push(
                        Diagnostic::new(Code::BadCel, format!("the CEL expression of rule `{rule_id}` does not parse: {e}"))
                            .at(Span::from_miette(id, child.span()), "invalid CEL")
                            .help("write a CEL expression over `object`, e.g. \"object.metadata.namespace == 'default'\""),
                    ),
                }
            }
            other => diags.push(
                Diagnostic::new(Code::UnknownNode, format!("unknown node `{other}` in a rule"))
                    .at(Span::from_miette(id, child.name().span()), "unknown node")
                    .help("a rule holds `description`, `match`, `label` and `deny` nodes"),
            ),
        }
    }
    if !wrote_deny {
        diags.push(policy_error(id, node, format!("rule `{rule_id}` has no deny"), "give it at least one `deny \"CEL\" message=\"…\"`"));
        return None;
    }
    // A rule whose deny failed to parse is reported there and not run.
    (!r.denies.is_empty()).then_some(r)
}

fn exception(node: &KdlNode, id: FileId, diags: &mut Diagnostics) -> Option<Exception> {
    let span = Span::from_miette(id, node.span());
    let rule = node.get(0).and_then(|v| v.as_string());
    let (vm, reason, owner) = (str_prop(node, "vm"), str_prop(node, "reason"), str_prop(node, "owner"));
    let (Some(rule), Some(vm), Some(reason), Some(owner)) = (rule, vm, reason, owner) else {
        diags.push(policy_error(
            id,
            node,
            "an exception needs a rule id, vm=, reason= and owner=".into(),
            "write `exception \"rule-id\" vm=\"name\" reason=\"why\" owner=\"who\" expires=\"2027-01-31\"`",
        ));
        return None;
    };
    let expires = str_prop(node, "expires");
    if let Some(e) = &expires
        && parse_date(e).is_none() {
            diags.push(policy_error(id, node, format!("`{e}` is not a date"), "write expires=\"YYYY-MM-DD\""));
            return None;
        }
    Some(Exception { rule: rule.to_string(), vm, namespace: str_prop(node, "namespace"), reason, owner, expires, span })
}

/// `YYYY-MM-DD` as a comparable tuple.
pub fn parse_date(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split('-');
    let (y, m, d) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    (it.next().is_none() && s.len() == 10 && (1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
}

/// CEL's standard library with the strings extension (`lowerAscii`, `split`,
/// `lastIndexOf`, `substring` …), as Kubernetes enables it for admission policies.
fn cel_env() -> Arc<cel::Env> {
    static ENV: std::sync::OnceLock<Arc<cel::Env>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        env.add_extension(cel::extensions::strings).expect("the strings extension registers");
        Arc::new(env)
    })
    .clone()
}

/// A CEL context with vmform's functions: `quantity(s)` is a size in bytes, with the
/// Kubernetes quantity library's `isGreaterThan`, `isLessThan` and `asInteger` methods.
fn context() -> cel::Context<'static, 'static> {
    let mut ctx = cel::Context::with_env(cel_env());
    let registered = [
        ctx.add_function("quantity", |s: Arc<String>| -> i64 {
            crate::values::parse_quantity(&s).map_or(-1, |q| i64::try_from(q.bytes).unwrap_or(i64::MAX))
        }),
        ctx.add_function("isGreaterThan", |This(a): This<i64>, b: i64| a > b),
        ctx.add_function("isLessThan", |This(a): This<i64>, b: i64| a < b),
        ctx.add_function("asInteger", |This(a): This<i64>| a),
    ];
    assert!(registered.iter().all(Result::is_ok), "vmform's CEL functions have fresh names");
    ctx
}

/// Evaluate every rule on every object. `today` decides which exceptions have expired.
/// `selected` limits the built-in rules to those ids (user rules always run).
pub fn check(policy: &Policy, objects: &[CompiledVm], selected: Option<&[String]>, today: (u32, u32, u32), diags: &mut Diagnostics) -> Vec<Finding> {
    // Objects are independent: evaluate them on all cores, each thread with its own
    // context; the findings are sorted at the end, so the result never depends on timing.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(objects.len().max(1));
    let chunk = objects.len().div_ceil(threads).max(1);
    let results: Vec<(Vec<Finding>, Diagnostics)> = std::thread::scope(|s| {
        let handles: Vec<_> = objects
            .chunks(chunk)
            .map(|part| s.spawn(move || check_objects(policy, part, selected, today)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("a policy thread panicked")).collect()
    });
    let mut findings = vec![];
    for (f, d) in results {
        findings.extend(f);
        diags.extend(d);
    }
    findings.extend(expired_exceptions(policy, today));
    findings.sort_by(|a, b| (&a.namespace, &a.name, &a.rule).cmp(&(&b.namespace, &b.name, &b.rule)));
    findings
}

fn check_objects(policy: &Policy, objects: &[CompiledVm], selected: Option<&[String]>, today: (u32, u32, u32)) -> (Vec<Finding>, Diagnostics) {
    let mut findings = vec![];
    let mut diags = Diagnostics::default();
    let base = context();
    for vm in objects {
        let meta = &vm.object.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let mut ctx = base.new_inner_scope();
        ctx.add_variable_from_value("object", cel::to_value(&vm.object).expect("objects convert to CEL"));
        ctx.add_variable_from_value(
            "vmform",
            cel::to_value(serde_json::json!({ "preventDestroy": vm.lifecycle.prevent_destroy })).expect("JSON converts to CEL"),
        );
        for rule in &policy.rules {
            if rule.builtin && selected.is_some_and(|s| !s.contains(&rule.id)) {
                continue;
            }
            let m = &rule.matcher;
            if m.namespace.as_ref().is_some_and(|g| !glob(g, &namespace))
                || m.name.as_ref().is_some_and(|g| !glob(g, &meta.name))
                || m.labels.iter().any(|(k, v)| meta.labels.get(k) != Some(v.as_str()))
            {
                continue;
            }
            for deny in &rule.denies {
                match deny.program.execute(&ctx) {
                    Ok(cel::Value::Bool(false)) => {}
                    Ok(cel::Value::Bool(true)) => {
                        let span = deny.path.as_deref().and_then(|p| locate(vm, p)).or(Some(vm.name_span));
                        let waived_by = policy
                            .exceptions
                            .iter()
                            .find(|e| {
                                e.rule == rule.id
                                    && glob(&e.vm, &meta.name)
                                    && e.namespace.as_ref().is_none_or(|n| glob(n, &namespace))
                                    && e.expires.as_deref().and_then(parse_date).is_none_or(|d| d >= today)
                            })
                            .cloned();
                        findings.push(Finding {
                            rule: rule.id.clone(),
                            level: rule.level,
                            message: deny.message.clone(),
                            namespace: namespace.clone(),
                            name: meta.name.clone(),
                            path: deny.path.clone(),
                            span,
                            waived_by,
                        });
                    }
                    Ok(other) => diags.push(
                        Diagnostic::new(Code::BadCel, format!("rule `{}` gave {other:?} for {namespace}/{}, not a boolean", rule.id, meta.name))
                            .help("a deny expression must be true or false"),
                    ),
                    Err(e) => diags.push(
                        Diagnostic::new(Code::BadCel, format!("rule `{}` failed on {namespace}/{}: {e}", rule.id, meta.name))
                            .help("guard optional fields with has(…), as in a ValidatingAdmissionPolicy"),
                    ),
                }
            }
        }
    }
    (findings, diags)
}

/// An expired exception is itself a finding: someone promised to fix something.
fn expired_exceptions(policy: &Policy, today: (u32, u32, u32)) -> Vec<Finding> {
    let mut findings = vec![];
    for e in &policy.exceptions {
        if let Some(d) = e.expires.as_deref().and_then(parse_date)
            && d < today {
                findings.push(Finding {
                    rule: "exception-expired".into(),
                    level: Level::Error,
                    message: format!("the exception to `{}` for vm `{}` (owner {}) expired on {}", e.rule, e.vm, e.owner, e.expires.as_deref().unwrap_or("")),
                    namespace: e.namespace.clone().unwrap_or_default(),
                    name: e.vm.clone(),
                    path: None,
                    span: Some(e.span),
                    waived_by: None,
                });
            }
    }
    findings
}

/// The span of the spec that produced `path`: the entry itself, else the first entry
/// below it.
fn locate(vm: &CompiledVm, path: &str) -> Option<Span> {
    if let Some(s) = vm.source_map.get(path) {
        return Some(*s);
    }
    vm.source_map
        .iter()
        .find(|(k, _)| k.starts_with(path) && matches!(k.as_bytes().get(path.len()), Some(b'.' | b'[')))
        .map(|(_, s)| *s)
}
