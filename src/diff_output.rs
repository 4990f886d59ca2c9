//! `vmform diff` output: Terraform-style text for people, JSON for tools.

use vmform_compiler::diff::{summary, Action, ObjectChange};
use vmform_compiler::effects::Effect;
use vmform_compiler::plural;

fn paint(colour: bool, code: &str, s: &str) -> String {
    if colour { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() }
}

fn action_colour(a: Action) -> &'static str {
    match a {
        Action::Create => "32",
        Action::Update => "33",
        Action::Replace => "35",
        Action::Delete => "31",
    }
}

fn effect_colour(e: Effect) -> &'static str {
    match e {
        Effect::None | Effect::Live => "32",
        Effect::Restart => "33",
        Effect::Replace | Effect::DataLoss => "31;1",
    }
}

fn value(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(v) => serde_json::to_string(v).expect("values serialise"),
    }
}

pub fn human(changes: &[ObjectChange], colour: bool) -> String {
    if changes.is_empty() {
        return "No changes.\n".into();
    }
    let mut out = String::new();
    for c in changes {
        let sym = paint(colour, action_colour(c.action), c.action.symbol());
        let what = match &c.old_namespace {
            Some(old) => format!("{old}/{} → {}/{}", c.name, c.namespace, c.name),
            None => format!("{}/{}", c.namespace, c.name),
        };
        let effect = paint(colour, effect_colour(c.effect), c.effect.as_str());
        out.push_str(&format!("{sym} VirtualMachine {what}  [{effect}] {}\n", c.reason));
        if c.blocked {
            let forbidden = match c.action {
                Action::Delete => "deleting this VM",
                Action::Replace => "replacing this VM (deleting and creating it again)",
                _ => "losing this VM's data",
            };
            out.push_str(&format!("    {}\n", paint(colour, "31;1", &format!("refused: lifecycle prevent-destroy=#true forbids {forbidden}"))));
        }
        for f in &c.fields {
            let sym = match (&f.old, &f.new) {
                (None, _) => "+",
                (_, None) => "-",
                _ => "~",
            };
            out.push_str(&format!(
                "    {sym} {}: {} → {}  [{}]\n",
                f.path,
                value(&f.old),
                value(&f.new),
                paint(colour, effect_colour(f.effect), f.effect.as_str())
            ));
        }
    }
    out.push('\n');
    out.push_str(&summary(changes));
    out.push('\n');
    out
}

pub fn json(changes: &[ObjectChange]) -> String {
    let count = |a: Action| changes.iter().filter(|c| c.action == a).count();
    let doc = serde_json::json!({
        "version": 1,
        "changes": changes,
        "summary": {
            "add": count(Action::Create),
            "change": count(Action::Update),
            "replace": count(Action::Replace),
            "destroy": count(Action::Delete),
        },
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("changes serialise");
    s.push('\n');
    s
}

/// GitHub refuses comments over 65,536 characters; keep a margin for the caller's header.
pub const MARKDOWN_LIMIT: usize = 65_000;

/// A pull-request comment: the summary and the risky changes first, every object's field
/// changes in a `<details>` block, cut to `limit` characters with a note saying what was cut.
pub fn markdown(changes: &[ObjectChange], limit: usize) -> String {
    let mut head = String::from("### vmform diff\n\n");
    if changes.is_empty() {
        head.push_str("No changes.\n");
        return head;
    }
    head.push_str(&format!("**{}**\n\n", summary(changes)));
    // Data loss and replacements first: they are what a reviewer must not miss.
    let mut ordered: Vec<&ObjectChange> = changes.iter().collect();
    ordered.sort_by_key(|c| (std::cmp::Reverse(c.effect), c.namespace.clone(), c.name.clone()));
    head.push_str("| | VM | effect | why |\n|---|---|---|---|\n");
    for c in &ordered {
        let flag = match c.effect {
            Effect::DataLoss => "⚠️ **data-loss**".to_string(),
            Effect::Replace => "**replace**".to_string(),
            e => e.as_str().to_string(),
        };
        let refused = if c.blocked { " — **refused by prevent-destroy**" } else { "" };
        head.push_str(&format!(
            "| `{}` | `{}/{}` | {flag} | {}{refused} |\n",
            c.action.symbol(),
            c.namespace,
            c.name,
            c.reason.replace('|', "\\|")
        ));
    }
    let mut details = String::new();
    let mut cut = 0;
    for (i, c) in ordered.iter().enumerate() {
        let mut block = format!("\n<details><summary><code>{} {}/{}</code> ({})</summary>\n\n```diff\n", c.action.symbol(), c.namespace, c.name, c.effect.as_str());
        for f in &c.fields {
            if let Some(o) = &f.old {
                block.push_str(&format!("- {}: {}\n", f.path, o));
            }
            if let Some(n) = &f.new {
                block.push_str(&format!("+ {}: {}  [{}]\n", f.path, n, f.effect.as_str()));
            }
        }
        block.push_str("```\n</details>\n");
        // Room for the note below, whatever is cut.
        if head.len() + details.len() + block.len() + 200 > limit {
            cut = ordered.len() - i;
            break;
        }
        details.push_str(&block);
    }
    let mut out = head;
    if out.len() > limit {
        out.truncate(limit.saturating_sub(200));
        while !out.is_char_boundary(out.len()) {
            out.pop();
        }
        out.push_str("\n\n*The table was cut to fit a comment; run `vmform diff` for the whole of it.*\n");
        return out;
    }
    out.push_str(&details);
    if cut > 0 {
        out.push_str(&format!("\n*Details of {} were cut to keep this comment under {limit} characters; run `vmform diff` for all of them.*\n", plural(cut, "more VM")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The note under a comment cut to fit counts what it left out: `1 more VM`.
    #[test]
    fn a_cut_comment_says_how_many_vms_it_left_out() {
        let change = |name: &str| ObjectChange {
            namespace: "shop".into(),
            name: name.into(),
            old_namespace: None,
            action: Action::Create,
            effect: Effect::None,
            reason: "new VM".into(),
            fields: vec![],
            blocked: false,
        };
        let changes = [change("a"), change("b")];
        let whole = markdown(&changes, MARKDOWN_LIMIT);
        // Room for the first VM's details and the note, not for the second's.
        let cut = markdown(&changes, whole.len() + 199);
        assert!(cut.contains("shop/a</code>") && !cut.contains("shop/b</code>"), "{cut}");
        assert!(cut.contains("*Details of 1 more VM were cut"), "{cut}");
    }
}
