//! The CLI's promises: exit codes, output formats, colour, fmt, and bad input.

mod common;
use common::*;
use std::fs;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

const GOOD: &str = "vm \"web\" {\n    memory \"1Gi\"\n    cpu 1\n    disk \"root\" {\n        image \"quay.io/containerdisks/fedora:41\"\n    }\n}\n";

#[test]
fn exit_codes() {
    let d = tmp();
    fs::write(d.path().join("good.kdl"), GOOD).unwrap();
    fs::write(d.path().join("bad.kdl.txt"), "").unwrap();
    let bad = d.path().join("bad");
    fs::create_dir(&bad).unwrap();
    fs::write(bad.join("a.kdl"), "vm \"web\" { memroy \"1Gi\" }\n").unwrap();
    let p = |x: &str| d.path().join(x).to_string_lossy().to_string();

    assert_eq!(code(&vmform(&["validate", &p("good.kdl")])), 0, "clean specs");
    assert_eq!(code(&vmform(&["validate", &p("bad")])), 1, "errors in the specs");
    assert_eq!(code(&vmform(&["validate", &p("missing.kdl")])), 2, "a path that does not exist");
    let empty = d.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = vmform(&["validate", &empty.to_string_lossy()]);
    assert_eq!(code(&out), 2, "a directory without .kdl files");
    assert!(stderr(&out).contains("holds no .kdl file"), "{}", stderr(&out));
    assert_eq!(code(&vmform(&["validate", "--no-such-flag", &p("good.kdl")])), 2, "usage error");
    assert_eq!(code(&vmform(&["validate", &p("good.kdl"), "--var", "novalue"])), 2, "a --var without =");
    assert_eq!(code(&vmform(&["build", &p("bad")])), 1);
}

#[test]
fn diagnostics_as_json_have_location_code_and_severity() {
    let d = tmp();
    let f = d.path().join("web.kdl");
    fs::write(&f, "vm \"web\" {\n    memory \"0Gi\"\n    eviction \"live-migrate\"\n    disk \"d\" { host-disk \"/srv/web.img\" }\n}\n").unwrap();
    let out = vmform(&["validate", "--format", "json", &f.to_string_lossy()]);
    assert_eq!(code(&out), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("validate --format json prints JSON on stdout");
    assert_eq!(v["errors"], 1);
    assert_eq!(v["warnings"], 1);
    let diags = v["diagnostics"].as_array().unwrap();
    let err = &diags[0];
    assert_eq!(err["code"], "E0203");
    assert_eq!(err["severity"], "error");
    assert_eq!((err["line"].as_u64(), err["column"].as_u64()), (Some(2), Some(12)));
    assert!(err["file"].as_str().unwrap().ends_with("web.kdl"));
    assert!(err["message"].as_str().unwrap().contains("memory is zero"));
    let warn = &diags[1];
    assert_eq!((warn["code"].as_str(), warn["severity"].as_str()), (Some("W0001"), Some("warning")));
}

#[test]
fn warnings_do_not_fail_a_run_and_are_kept_apart() {
    let d = tmp();
    let f = d.path().join("w.kdl");
    fs::write(&f, "template \"unused\" { memory \"1Gi\" }\nvm \"a\" { memory \"1Gi\"; disk \"d\" { empty-disk \"1Gi\" } }\n").unwrap();
    let out = vmform(&["validate", &f.to_string_lossy()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("W0002") && err.contains("0 errors, 1 warning"), "{err}");
}

#[test]
fn no_colour_when_not_a_terminal() {
    let d = tmp();
    let f = d.path().join("bad.kdl");
    fs::write(&f, "vm \"web\" { memroy \"1Gi\" }\n").unwrap();
    let out = vmform(&["validate", &f.to_string_lossy()]);
    let err = stderr(&out);
    assert!(err.contains("did you mean `memory`?"), "{err}");
    assert!(!err.contains('\u{1b}'), "escape codes in piped output:\n{err:?}");
}

#[test]
fn human_diagnostics_show_the_file_line_and_span() {
    let d = tmp();
    let f = d.path().join("bad.kdl");
    fs::write(&f, "vm \"web\" {\n    run-strategy \"allways\"\n}\n").unwrap();
    let err = stderr(&vmform(&["validate", &f.to_string_lossy()]));
    assert!(err.contains("vmform::E0107"), "{err}");
    assert!(err.contains("bad.kdl:2:18"), "{err}");
    assert!(err.contains("did you mean \"always\"?"), "{err}");
}

#[test]
fn build_writes_one_file_per_object_and_nothing_on_error() {
    let d = tmp();
    let out_dir = d.path().join("out");
    let o = vmform(&["build", "examples/web-fleet", "--out-dir", &out_dir.to_string_lossy()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut files = vec![];
    for ns in fs::read_dir(&out_dir).unwrap() {
        for f in fs::read_dir(ns.unwrap().path()).unwrap() {
            files.push(f.unwrap().path());
        }
    }
    let whole = stdout(&vmform(&["build", "examples/web-fleet"]));
    assert_eq!(files.len(), whole.matches("\n---\n").count() + 1, "one file per object");
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        assert!(whole.contains(text.trim_start_matches("---\n")), "{} matches the combined output", f.display());
    }

    let bad = d.path().join("bad.kdl");
    fs::write(&bad, format!("{GOOD}vm \"x\" {{ cpu 0 }}\n")).unwrap();
    let out2 = d.path().join("out2");
    let o = vmform(&["build", &bad.to_string_lossy(), "--out-dir", &out2.to_string_lossy()]);
    assert_eq!(code(&o), 1);
    assert!(!out2.exists(), "no output at all when the specs have errors");
    let o = vmform(&["build", &bad.to_string_lossy()]);
    assert!(o.stdout.is_empty(), "no partial YAML on stdout");
}

#[test]
fn build_json_is_a_kubernetes_list() {
    let o = vmform(&["build", "examples/database", "-o", "json"]);
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["kind"], "List");
    assert!(v["items"].as_array().unwrap().iter().all(|o| o["kind"] == "VirtualMachine"));
}

#[test]
fn fmt_check_lists_files_then_fmt_fixes_them_and_keeps_comments() {
    let d = tmp();
    let messy = d.path().join("messy.kdl");
    let tidy = d.path().join("tidy.kdl");
    fs::write(&messy, "// the web tier\nvm web {\n  memory \"1Gi\"; cpu 1 // small\n      disk root { image \"quay.io/containerdisks/fedora:41\" }\n}\n").unwrap();
    fs::write(&tidy, GOOD).unwrap();
    let dir = d.path().to_string_lossy().to_string();

    let o = vmform(&["fmt", "--check", &dir]);
    assert_eq!(code(&o), 1, "unformatted files make --check fail");
    assert_eq!(stdout(&o).trim(), messy.to_string_lossy(), "only the unformatted file is listed");
    let o = vmform(&["fmt", "--check", "--diff", &dir]);
    assert!(stdout(&o).contains("+    cpu 1 // small"), "{}", stdout(&o));
    let before = fs::read_to_string(&messy).unwrap();
    assert_eq!(fs::read_to_string(&messy).unwrap(), before, "--check changes nothing");

    let build_before = stdout(&vmform(&["build", &dir]));
    assert_eq!(code(&vmform(&["fmt", &dir])), 0);
    let after = fs::read_to_string(&messy).unwrap();
    assert_eq!(
        after,
        "// the web tier\nvm \"web\" {\n    memory \"1Gi\"\n    cpu 1 // small\n    disk \"root\" {\n        image \"quay.io/containerdisks/fedora:41\"\n    }\n}\n"
    );
    assert_eq!(code(&vmform(&["fmt", "--check", &dir])), 0, "formatted files pass --check");
    assert_eq!(stdout(&vmform(&["build", &dir])), build_before, "fmt keeps meaning");
}

/// `vmform fmt --check examples/`: a directory with no spec of its own holds projects, and
/// is searched recursively; one with specs of its own is formatted alone unless `-r`.
#[test]
fn fmt_searches_a_folder_of_projects_recursively() {
    let d = tmp();
    let messy = "vm web {\n  memory \"1Gi\"; cpu 1\n}\n";
    for (dir, text) in [("a", messy), ("b/deep", messy), ("c", GOOD)] {
        fs::create_dir_all(d.path().join(dir)).unwrap();
        fs::write(d.path().join(dir).join("x.kdl"), text).unwrap();
    }
    let p = |x: &str| d.path().join(x).to_string_lossy().to_string();
    let o = vmform(&["fmt", "--check", &p("")]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{}\n{}\n", p("a/x.kdl"), p("b/deep/x.kdl")), "both projects below it");
    // `b` has no spec of its own either; `a` has, so its subdirectories need -r.
    assert_eq!(stdout(&vmform(&["fmt", "--check", &p("b")])).trim(), p("b/deep/x.kdl"));
    fs::create_dir(d.path().join("a/sub")).unwrap();
    fs::write(d.path().join("a/sub/y.kdl"), messy).unwrap();
    assert_eq!(stdout(&vmform(&["fmt", "--check", &p("a")])).trim(), p("a/x.kdl"));
    assert_eq!(stdout(&vmform(&["fmt", "--check", "-r", &p("a")])).lines().count(), 2);
    assert_eq!(code(&vmform(&["fmt", &p("")])), 0);
    assert_eq!(code(&vmform(&["fmt", "--check", &p("")])), 0, "all formatted");
    let empty = d.path().join("empty/sub");
    fs::create_dir_all(&empty).unwrap();
    let o = vmform(&["fmt", &p("empty")]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no .kdl file in"), "{}", stderr(&o));
}

/// `vmform fmt -` is an editor's format-on-save: the text on stdin, formatted on stdout.
#[test]
fn fmt_dash_formats_standard_input_to_standard_output() {
    let o = vmform_with_stdin(&["fmt", "-"], "vm web {\n  memory \"1Gi\"; cpu 1 // small\n}\n");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "vm \"web\" {\n    memory \"1Gi\"\n    cpu 1 // small\n}\n");
    let o = vmform_with_stdin(&["fmt", "-"], GOOD);
    assert_eq!(stdout(&o), GOOD, "formatted text comes back as it is");
    // A syntax error: reported on stderr, nothing on stdout for the editor to write back.
    let o = vmform_with_stdin(&["fmt", "-"], "vm \"web\" {\n    labels app=\n}\n");
    assert_eq!(code(&o), 1);
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("E0001") && stderr(&o).contains("<stdin>:2:12"), "{}", stderr(&o));
    let o = vmform_with_stdin(&["fmt", "--check", "-"], "vm web {\n}\n");
    assert_eq!((code(&o), stdout(&o).trim()), (1, "<stdin>"));
    assert_eq!(code(&vmform_with_stdin(&["fmt", "--check", "-"], GOOD)), 0);
    let o = vmform(&["fmt", "-", "examples/shop"]);
    assert_eq!(code(&o), 2, "stdin is formatted alone: {}", stderr(&o));
}

#[test]
fn fmt_refuses_invalid_kdl_and_leaves_the_file_alone() {
    let d = tmp();
    let f = d.path().join("broken.kdl");
    let text = "vm \"web\" {\n    memory \"1Gi\"\n";
    fs::write(&f, text).unwrap();
    let o = vmform(&["fmt", &f.to_string_lossy()]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("E0001"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&f).unwrap(), text);
}

#[test]
fn bad_input_gets_a_clear_diagnostic_and_no_output() {
    let d = tmp();
    let case = |name: &str, bytes: &[u8]| {
        let f = d.path().join(name);
        fs::write(&f, bytes).unwrap();
        let o = vmform(&["build", &f.to_string_lossy()]);
        (code(&o), stderr(&o), o.stdout.is_empty())
    };
    let (c, err, empty) = case("latin1.kdl", b"vm \"caf\xe9\" { }\n");
    assert_eq!((c, empty), (1, true));
    assert!(err.contains("E0002") && err.contains("not valid UTF-8"), "{err}");

    let (c, err, empty) = case("syntax.kdl", b"vm \"web\" { memory \"1Gi }\n");
    assert_eq!((c, empty), (1, true));
    assert!(err.contains("E0001"), "{err}");

    let (c, err, _) = case("missing-include.kdl", b"include \"nope/other.kdl\"\n");
    assert_eq!(c, 1);
    assert!(err.contains("E0003") && err.contains("included here"), "{err}");

    fs::write(d.path().join("b.kdl"), "include \"cycle-a.kdl\"\n").unwrap();
    let (c, err, _) = case("cycle-a.kdl", b"include \"b.kdl\"\nvm \"x\" { disk \"d\" { empty-disk \"1Gi\" } }\n");
    assert_eq!(c, 1);
    assert!(err.contains("E0004") && err.contains("include cycle"), "{err}");

    let (c, err, _) = case("empty.kdl", b"");
    assert_eq!(c, 0, "an empty file is valid but warned about");
    assert!(err.contains("W0003") && err.contains("defines no vm"), "{err}");

    // 50 MB: refused with a message, never a panic or an out-of-memory.
    let mut big = Vec::with_capacity(50 << 20);
    while big.len() < 50 << 20 {
        big.extend_from_slice(b"vm \"web\" { memory \"1Gi\" }\n");
    }
    let (c, err, empty) = case("huge.kdl", &big);
    assert_eq!((c, empty), (1, true));
    assert!(err.contains("E0005") && err.contains("at most 32 MiB"), "{err}");
}

/// `vmform show` with no argument shows the project of the current directory, as
/// `terraform show` does: with no cluster to ask, it gets as far as asking.
#[test]
fn show_without_arguments_shows_the_project_here() {
    let d = tmp();
    fs::write(d.path().join("vms.kdl"), GOOD).unwrap();
    let o = vmform_in(d.path(), &["show", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(code(&o), 1, "a cluster error, not a usage error: {}", stderr(&o));
    assert!(stderr(&o).contains("cannot read the kubeconfig"), "{}", stderr(&o));
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let o = vmform(&["completions", "bash"]);
    assert_eq!(code(&o), 0);
    let s = stdout(&o);
    assert!(s.contains("vmform") && s.contains("validate") && s.contains("--out-dir"), "bash completion knows the commands");
    let o = vmform(&["man"]);
    let s = stdout(&o);
    assert!(s.starts_with(".ie") || s.contains(".TH vmform"), "roff man page:\n{}", &s[..s.len().min(200)]);
    let d = tmp();
    assert_eq!(code(&vmform(&["man", "--out-dir", &d.path().to_string_lossy()])), 0);
    for page in ["vmform.1", "vmform-build.1", "vmform-validate.1", "vmform-fmt.1"] {
        assert!(d.path().join(page).is_file(), "{page}");
    }
}

/// book/src/cli-reference.md is generated from `--help`; regenerate with
/// `UPDATE_CLI_REFERENCE=1 cargo test --test cli`.
#[test]
fn cli_reference_in_the_book_matches_the_help() {
    let mut md = String::from("# CLI reference\n\n<!-- Generated from `vmform --help` by tests/cli.rs; do not edit by hand. -->\n\n");
    md.push_str("Exit codes, the same in every command (the README's table): `0` success (warnings allowed); `1` a failure: errors in the specs, findings, files to format (`fmt --check`), a change or action refused or failed, a cluster that cannot be reached or refuses the credentials, a local control plane that is not running (`status`); `2` usage: the command line, a path that cannot be read or written, a local control plane that cannot start as asked, and, with `--detailed-exitcode`, changes present.\n\n");
    md.push_str("`validate --format json` prints `{\"diagnostics\": [{\"file\", \"line\", \"column\", \"code\", \"severity\", \"message\", \"label\", \"help\"}], \"errors\": N, \"warnings\": N}` on stdout; other commands print diagnostics on stderr.\n\n");
    md.push_str("Colour is used only when the output is a terminal and `NO_COLOR` is unset.\n\n");
    let help = |args: &[&str]| stdout(&vmform(args));
    let top = help(&["--help"]);
    md.push_str(&format!("## vmform\n\n```text\n{top}```\n"));
    // Every command the top-level help lists, so a new command cannot be left out.
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A wrapped description continues further in than the command names.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 12, "{commands:?}");
    for sub in commands {
        md.push_str(&format!("\n## vmform {sub}\n\n```text\n{}```\n", help(&[sub, "--help"])));
        if sub == "token" {
            md.push_str(&format!("\n## vmform token create\n\n```text\n{}```\n", help(&["token", "create", "--help"])));
        }
    }
    let path = root().join("book/src/cli-reference.md");
    if std::env::var_os("UPDATE_CLI_REFERENCE").is_some() {
        fs::write(&path, &md).unwrap();
    }
    let current = fs::read_to_string(&path).unwrap_or_default();
    assert!(current == md, "book/src/cli-reference.md is stale; run UPDATE_CLI_REFERENCE=1 cargo test --test cli");
}

/// The same failure gets the same exit code in every command (README, "Exit codes"): a
/// cluster that cannot be reached is a failure (1), never a usage error, whichever command
/// meets it.
#[test]
fn an_unreachable_cluster_is_exit_1_in_every_command() {
    let d = tmp();
    fs::write(d.path().join("vms.kdl"), GOOD).unwrap();
    // A kubeconfig whose server refuses connections at once.
    let kubeconfig = d.path().join("nowhere.yaml");
    fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\n\
users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
    )
    .unwrap();
    let k = kubeconfig.to_string_lossy().to_string();
    let specs = d.path().to_string_lossy().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["plan", &specs],
        vec!["apply", &specs, "--auto-approve"],
        vec!["destroy", &specs, "--auto-approve"],
        vec!["show", &specs],
        vec!["vm", "start", "web"],
        vec!["vm", "stop", "web"],
        vec!["vm", "console", "web", "--no-follow"],
        vec!["vm", "ports", "web"],
        vec!["vm", "migrate", "web"],
        vec!["vm", "migrate-cancel", "web"],
        vec!["node", "cordon", "local"],
        vec!["node", "drain", "local"],
    ];
    for command in commands {
        let mut args = command.clone();
        args.extend(["--kubeconfig", &k]);
        let out = vmform(&args);
        assert_eq!(code(&out), 1, "{command:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.contains("127.0.0.1:1"), "{command:?} says where it could not reach: {err}");
    }
}
