//! `vmform lsp` under a real LSP client: runs the pytest-lsp suite in `tests/lsp/`
//! against the binary cargo built. Without pytest-lsp the test skips, and fails under
//! `CI=true` (`.ci/run` installs it).

use std::process::Command;

#[test]
fn lsp_suite_passes_under_pytest_lsp() {
    let has_pytest_lsp = Command::new("python3")
        .args(["-c", "import pytest_lsp"])
        .status()
        .is_ok_and(|s| s.success());
    if !vmform_schema_check::precondition(has_pytest_lsp, "python3 with pytest-lsp (pip install pytest-lsp)") {
        return;
    }
    let out = Command::new("python3")
        .args(["-m", "pytest", "tests/lsp", "-q", "-p", "no:cacheprovider"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("VMFORM_BIN", env!("CARGO_BIN_EXE_vmform"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the LSP suite failed:\n{stdout}\n{stderr}");
    // pytest exits 5 when it collected nothing; a pass must have run tests.
    assert!(stdout.contains(" passed"), "no LSP test ran:\n{stdout}");
}

/// `scripts/vscode-extension` builds and packages the VS Code extension from npm: the
/// `.vsix` holds the compiled client, the manifest that starts `vmform lsp` for KDL and
/// the grammar. Without npm the test skips, and fails under `CI=true`.
#[test]
fn vscode_extension_packages() {
    let has_npm = Command::new("npm").arg("--version").output().is_ok_and(|o| o.status.success());
    if !vmform_schema_check::precondition(has_npm, "npm (Node.js 20 or later) to package editors/vscode") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vsix = dir.path().join("vmform.vsix");
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/vscode-extension")).arg(&vsix).output().expect("the script runs");
    assert!(out.status.success(), "scripts/vscode-extension failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // A .vsix is a zip; list it with python3, which the LSP suite needs anyway.
    let list = Command::new("python3")
        .args(["-c", "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))"])
        .arg(&vsix)
        .output()
        .expect("python3 runs");
    let names = String::from_utf8_lossy(&list.stdout);
    for want in ["extension/package.json", "extension/out/extension.js", "extension/syntaxes/kdl.tmLanguage.json", "extension/node_modules/vscode-languageclient/package.json"] {
        assert!(names.lines().any(|n| n == want), "{want} is not in the package:\n{names}");
    }
    assert!(!names.contains("extension/src/"), "the TypeScript sources are left out");
}
