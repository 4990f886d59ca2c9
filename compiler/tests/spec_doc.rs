//! The diagnostics table in `specs/language.md` lists exactly the compiler's codes, in the
//! order of `Code::ALL`: one row per code, first column the bare code (`| E0101 | …`).

use std::collections::BTreeSet;
use vmform_compiler::Code;

/// The first cell of every table row that starts with `| E` or `| W`.
fn documented_codes(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("| E") || l.starts_with("| W"))
        .filter_map(|l| l.split('|').nth(1))
        .map(|cell| cell.trim().to_string())
        .collect()
}

#[test]
fn diagnostics_table_lists_every_code_in_order() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/language.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));

    let documented = documented_codes(&text);
    let compiler: Vec<String> = Code::ALL.iter().map(|c| c.as_str().to_string()).collect();
    if documented == compiler {
        return;
    }

    let doc_set: BTreeSet<&str> = documented.iter().map(String::as_str).collect();
    let code_set: BTreeSet<&str> = compiler.iter().map(String::as_str).collect();
    let missing: Vec<&str> = compiler.iter().map(String::as_str).filter(|c| !doc_set.contains(c)).collect();
    let extra: Vec<&str> = documented.iter().map(String::as_str).filter(|c| !code_set.contains(c)).collect();
    let mut seen = BTreeSet::new();
    let repeated: BTreeSet<&str> = documented.iter().map(String::as_str).filter(|c| !seen.insert(*c)).collect();

    let mut msg = format!("the diagnostics table in {} is out of step with `Code::ALL`\n", path.display());
    if !missing.is_empty() {
        msg.push_str(&format!("  missing from the table (add a row): {}\n", missing.join(", ")));
    }
    if !extra.is_empty() {
        msg.push_str(&format!("  in the table but not in the compiler (remove the row): {}\n", extra.join(", ")));
    }
    if !repeated.is_empty() {
        msg.push_str(&format!(
            "  listed more than once: {}\n",
            repeated.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if missing.is_empty() && extra.is_empty() {
        let first = documented.iter().zip(&compiler).position(|(d, c)| d != c).unwrap_or(0);
        msg.push_str(&format!(
            "  same codes, different order: row {} is {:?}, the compiler has {:?} there\n",
            first + 1,
            documented.get(first),
            compiler.get(first)
        ));
    }
    msg.push_str(&format!("  table:    {}\n  compiler: {}", documented.join(" "), compiler.join(" ")));
    panic!("{msg}");
}

#[test]
fn extraction_reads_the_first_cell_of_code_rows_only() {
    let sample = "| code | severity |\n|---|---|\n| E0001 | error | x | `a` |\n| W0003 | warning | y | z |\n| 0 | exit |\n";
    assert_eq!(documented_codes(sample), ["E0001", "W0003"]);
}
