//! `load_default` must return None (so callers print that they skipped) when the KubeVirt
//! reference data is absent. Kept in its own test binary because it changes the environment.

#[test]
fn load_default_is_none_without_the_kubevirt_dir() {
    // SAFETY: this binary has no other test, so no other thread reads the environment.
    unsafe { std::env::set_var("VMFORM_KUBEVIRT_DIR", "/nonexistent/kubevirt") };
    assert!(vmform_schema_check::Schema::load_default().is_none());
}
