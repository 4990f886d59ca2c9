//! Printing diagnostics: miette's annotated snippets for people, JSON for tools.

use crate::cli::DiagnosticFormat;
use std::io::{IsTerminal, Write};
use vmform_compiler::{plural, Diagnostics, Sources};

/// Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org).
pub fn use_colour(stream_is_terminal: bool) -> bool {
    stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn render_human(diags: &Diagnostics, sources: &Sources, colour: bool) -> String {
    let theme = if colour { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let mut out = String::new();
    let sorted = diags.sorted();
    for d in &sorted {
        let report = d.report(sources);
        let _ = handler.render_report(&mut out, &report);
        out.push('\n');
    }
    // Count what was printed: identical diagnostics (one template, several vms) print once.
    let e = sorted.iter().filter(|d| d.severity() == vmform_compiler::Severity::Error).count();
    let w = sorted.len() - e;
    if e + w > 0 {
        out.push_str(&format!("{}, {}\n", plural(e, "error"), plural(w, "warning")));
    }
    out
}

pub fn render_json(diags: &Diagnostics, sources: &Sources) -> String {
    /// The documented `--format json` schema (book/src/cli-reference.md).
    #[derive(serde::Serialize)]
    struct Doc {
        diagnostics: Vec<vmform_compiler::diagnostic::Located>,
        errors: usize,
        warnings: usize,
    }
    let diagnostics: Vec<_> = diags.sorted().into_iter().map(|d| d.locate(sources)).collect();
    let errors = diagnostics.iter().filter(|d| d.severity == "error").count();
    let doc = Doc { warnings: diagnostics.len() - errors, errors, diagnostics };
    let mut s = serde_json::to_string_pretty(&doc).expect("diagnostics serialise");
    s.push('\n');
    s
}

/// Print diagnostics to stderr in the chosen format (nothing when there are none).
pub fn print(diags: &Diagnostics, sources: &Sources, format: DiagnosticFormat) {
    if diags.is_empty() && format == DiagnosticFormat::Human {
        return;
    }
    let stderr = std::io::stderr();
    let text = match format {
        DiagnosticFormat::Human => render_human(diags, sources, use_colour(stderr.is_terminal())),
        DiagnosticFormat::Json => render_json(diags, sources),
    };
    let _ = stderr.lock().write_all(text.as_bytes());
}
