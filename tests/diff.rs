//! `vmform diff`: the three formats (snapshots), exit codes, guards, and `--base REV`.

mod common;
use common::*;
use std::fs;
use std::path::Path;

/// The shop example, and a copy with a typical pull request applied: one more web replica,
/// a label, less memory for the database, a bigger ERP, and its data disk dropped.
fn shop_before_after(dir: &Path) -> (String, String) {
    let (old, new) = (dir.join("old"), dir.join("new"));
    for d in [&old, &new] {
        copy_dir(&root().join("examples/shop"), d);
    }
    let shop = new.join("shop.kdl");
    let text = fs::read_to_string(&shop).unwrap();
    let text = text
        .replace("count=3", "count=4")
        .replace("labels app=\"web\"", "labels app=\"web\" tier=\"front\"")
        .replace("memory \"16Gi\"", "memory \"8Gi\"");
    fs::write(&shop, text).unwrap();
    let erp = new.join("legacy/erp.kdl");
    let text = fs::read_to_string(&erp).unwrap().replace("cpu 2", "cpu 4");
    fs::write(&erp, text).unwrap();
    (old.to_string_lossy().into(), new.to_string_lossy().into())
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let t = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &t) } else { fs::copy(&p, &t).map(|_| ()).unwrap() }
    }
}

/// Each warning once, for the new specs: not again for the old ones.
#[test]
fn warnings_are_shown_once_for_the_new_specs() {
    let d = tempfile::tempdir().unwrap();
    let (old, new) = shop_before_after(d.path());
    // A warning only the old specs have: an unused template.
    fs::write(Path::new(&old).join("unused.kdl"), "template \"unused\" { memory \"1Gi\" }\n").unwrap();
    let diff = stderr(&vmform(&["diff", &old, &new]));
    let validate = stderr(&vmform(&["validate", &new]));
    let warnings = |s: &str| s.matches("vmform::W").count();
    assert!(warnings(&validate) > 0, "the shop example has warnings: {validate}");
    assert_eq!(warnings(&diff), warnings(&validate), "{diff}");
    assert!(!diff.contains("W0002"), "the old specs' warnings are not shown: {diff}");
    // The old specs' errors still are: they stop the diff.
    fs::write(Path::new(&old).join("unused.kdl"), "vm \"x\" { cpu 0 }\n").unwrap();
    let o = vmform(&["diff", &old, &new]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("E0"), "{}", stderr(&o));
}

#[test]
fn human_markdown_and_json_formats() {
    let d = tempfile::tempdir().unwrap();
    let (old, new) = shop_before_after(d.path());
    let human = vmform(&["diff", &old, &new]);
    assert_eq!(code(&human), 0, "{}", stderr(&human));
    let text = stdout(&human);
    assert!(text.contains("1 to add, 5 to change (2 need restart), 0 to replace, 0 to destroy"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour when piped");
    insta::assert_snapshot!("diff-human", text);

    let md = stdout(&vmform(&["diff", "--format", "markdown", &old, &new]));
    assert!(md.starts_with("### vmform diff\n\n**1 to add"), "summary first:\n{md}");
    assert!(md.contains("<details>"), "details folded");
    insta::assert_snapshot!("diff-markdown", md);

    let json: serde_json::Value = serde_json::from_str(&stdout(&vmform(&["diff", "--format", "json", &old, &new]))).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["summary"], serde_json::json!({"add": 1, "change": 5, "replace": 0, "destroy": 0}));
    let db = json["changes"].as_array().unwrap().iter().find(|c| c["name"] == "db").unwrap();
    assert_eq!(db["effect"], "restart");
    assert_eq!(db["fields"][0]["path"], "spec.template.spec.domain.memory.guest");
    assert_eq!((db["fields"][0]["old"].as_str(), db["fields"][0]["new"].as_str()), (Some("16Gi"), Some("8Gi")));
    insta::assert_snapshot!("diff-json", serde_json::to_string_pretty(&json).unwrap());
}

#[test]
fn detailed_exitcode_and_prevent_destroy() {
    let d = tempfile::tempdir().unwrap();
    let (old, new) = shop_before_after(d.path());
    assert_eq!(code(&vmform(&["diff", "--detailed-exitcode", &old, &old])), 0, "no changes");
    assert_eq!(code(&vmform(&["diff", "--detailed-exitcode", &old, &new])), 2, "changes");

    // Dropping the database's data disk loses data it is protected from losing.
    let shop = Path::new(&new).join("shop.kdl");
    let text = fs::read_to_string(&shop).unwrap();
    let start = text.find("    disk \"data\" {").unwrap();
    let end = start + text[start..].find("    }\n").unwrap() + "    }\n".len();
    fs::write(&shop, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let out = vmform(&["diff", "--detailed-exitcode", &old, &new]);
    assert_eq!(code(&out), 1, "a refused change is an error:\n{}", stdout(&out));
    assert!(stdout(&out).contains("refused: lifecycle prevent-destroy=#true"), "{}", stdout(&out));
    assert!(stderr(&out).contains("shop-staging/db has lifecycle prevent-destroy=#true"), "{}", stderr(&out));
}

#[test]
fn markdown_stays_under_a_comment_limit_and_says_what_was_cut() {
    let d = tempfile::tempdir().unwrap();
    let spec = |mem: &str| format!("vm \"web\" count=1000 {{\n    memory \"{mem}\"\n    labels size=\"{mem}\"\n}}\n");
    fs::write(d.path().join("old.kdl"), spec("1Gi")).unwrap();
    fs::write(d.path().join("new.kdl"), spec("2Gi")).unwrap();
    let out = vmform_in(d.path(), &["diff", "--format", "markdown", "old.kdl", "new.kdl"]);
    let md = stdout(&out);
    assert!(md.chars().count() < 65_000, "{} characters", md.chars().count());
    assert!(md.contains("were cut") || md.contains("was cut"), "says what was cut");
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn base_compares_with_a_git_revision_includes_too() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path();
    copy_dir(&root().join("examples/shop"), &repo.join("specs"));
    git(repo, &["init", "-q"]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "base"]);
    // Change only the included file: the old side must read it from git, not the work tree.
    let erp = repo.join("specs/legacy/erp.kdl");
    fs::write(&erp, fs::read_to_string(&erp).unwrap().replace("cpu 2", "cpu 4")).unwrap();

    let out = vmform_in(repo, &["diff", "--base", "HEAD", "specs"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("~ VirtualMachine shop-staging/erp"), "{text}");
    assert!(text.contains("spec.template.spec.domain.cpu.cores: 2 → 4"), "{text}");
    assert!(text.contains("0 to add, 1 to change (1 needs restart)"), "{text}");

    let out = vmform_in(repo, &["diff", "--base", "no-such-rev", "specs"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not a git revision"), "{}", stderr(&out));
}
