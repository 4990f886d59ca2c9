//! The handler reaps the orphans the kernel hands it as a subreaper (libvirtd's QEMUs):
//! a test binary of its own, since a subreaper stays one for the rest of the process.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use vmform_runtime::libvirt::reaper::{alive, become_subreaper, reap_orphans};

/// Whether `pid` has exited but is not reaped.
fn zombie(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && !alive(pid)
}

#[test]
fn an_orphan_in_its_own_session_is_reaped_and_a_child_of_ours_is_left_to_its_waiter() {
    become_subreaper().unwrap();
    // A grandchild in its own session whose parent exits at once, as a daemonizing QEMU
    // does: the kernel hands it to us.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("orphan.pid");
    let script = format!("setsid sh -c 'echo $$ > {}; exec sleep 0.5' >/dev/null 2>&1 &", pid_file.display());
    assert!(Command::new("sh").args(["-c", &script]).status().unwrap().success());
    // A child of our own, in our session: its exit status belongs to whoever waits for it.
    let mut own = Command::new("sleep").arg("0.1").spawn().unwrap();
    let started = Instant::now();
    let orphan: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()) {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the orphan never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    while !zombie(orphan) {
        assert!(started.elapsed() < Duration::from_secs(10), "orphan {orphan} never exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(zombie(own.id() as i32), "our own child has exited too");
    assert_eq!(reap_orphans(), 1);
    assert!(!Path::new(&format!("/proc/{orphan}")).exists(), "the orphan is reaped");
    assert!(own.wait().unwrap().success(), "our own child's status is still there to wait for");
}
