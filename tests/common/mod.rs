//! Helpers shared by the end-to-end tests: run the real `vmform` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn vmform(args: &[&str]) -> Output {
    vmform_in(&root(), args)
}

pub fn vmform_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmform"))
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .output()
        .expect("run vmform")
}

/// `vmform ARGS` in the project root with `input` on its stdin.
pub fn vmform_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmform"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmform");
    // Dropping stdin after writing closes it: the end of input.
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally, not by a signal")
}

/// Every example project: each directory directly under examples/.
pub fn example_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Live processes (zombies are not) whose command line mentions `needle`.
pub fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.is_empty() && cmd.contains(needle) {
            out.push(format!("{pid} {cmd}"));
        }
    }
    out
}

pub fn ip(args: &[&str]) -> String {
    stdout(&Command::new("ip").args(args).output().expect("ip (iproute2) runs"))
}

/// Nothing of a data dir's cluster is left: no process, namespace, veth, bridge or mount.
pub fn assert_nothing_left(data_dir: &Path, netns_prefix: &str, link_prefix: &str) {
    let dir = data_dir.to_str().unwrap();
    let procs = processes_with(dir);
    assert!(procs.is_empty(), "processes left behind:\n{}", procs.join("\n"));
    let namespaces = ip(&["netns", "list"]);
    assert!(!namespaces.contains(netns_prefix), "namespaces left behind:\n{namespaces}");
    let links = ip(&["-br", "link"]);
    assert!(!links.contains(link_prefix), "links left behind:\n{links}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(dir) || l.contains(netns_prefix)).collect();
    assert!(left.is_empty(), "mounts left behind:\n{}", left.join("\n"));
}

/// `vmform ARGS` with no stdin (it never waits for a prompt answer).
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmform")).args(args).stdin(Stdio::null()).output().expect("run vmform")
}

/// `kubectl --kubeconfig KUBECONFIG ARGS`, with `input` on its stdin.
pub fn kubectl(kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs (it is installed by .ci/run)");
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// Whether the tests run as root (private libvirtds, network namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The test guest's disk, built once (scripts/test-guest caches it).
pub fn guest_disk() -> PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let out = Command::new(root().join("scripts/test-guest")).output().expect("scripts/test-guest runs");
        assert!(out.status.success(), "building the test guest failed: {}", stderr(&out));
        let disk = root().join("target/test-guest/disk.img");
        assert!(disk.exists());
        disk
    })
    .clone()
}
