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
