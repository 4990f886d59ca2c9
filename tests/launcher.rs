//! The launcher against a real private libvirtd and the test guest (scripts/test-guest)
//! under TCG, one guest at a time: boot with cloud-init user data and a forwarded port,
//! shutdown on SIGTERM, the forced-off path, a QEMU killed, a missing disk, libvirtd
//! restarting under a running guest, and a replacement launcher attaching.
//!
//! The launcher runs as the real `vmform-launcher` binary, so signals, exit codes and
//! memory are the real ones.
//!
//! Needs root, libvirtd and qemu-system-x86_64 (skipped with a message otherwise, failing
//! under CI=true).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmform_runtime::launcher::{self, ExitKind, LauncherPhase};
use vmform_runtime::libvirt::NodeDaemon;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn have(cmd: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| Path::new(d).join(cmd).exists())
}

struct Node {
    dir: tempfile::TempDir,
    volumes: PathBuf,
    daemon: Option<NodeDaemon>,
    host_uuid: uuid::Uuid,
}

impl Node {
    fn uri(&self) -> String {
        vmform_runtime::libvirt::daemon::uri_for(self.dir.path())
    }

    fn vmi_dir(&self, uid: &str) -> PathBuf {
        let d = self.dir.path().join("vmis").join(uid);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn virsh(&self, args: &[&str]) -> String {
        let out = Command::new("virsh").arg("-c").arg(self.uri()).args(args).output().expect("virsh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every domain libvirt has, running or defined.
    fn domains(&self) -> Vec<String> {
        self.virsh(&["list", "--all", "--name"]).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
    }
}

impl Drop for Node {
    /// After a failure too: no guest, no daemon left behind.
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            for name in self.domains() {
                self.virsh(&["destroy", &name]);
                self.virsh(&["undefine", "--nvram", &name]);
            }
            let _ = d.stop();
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.launcher.try_wait() {
            let _ = self.launcher.kill();
            let _ = self.launcher.wait();
        }
        for pid in qemu_pids(&self.name) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

struct Guest {
    name: String,
    dir: PathBuf,
    launcher: Child,
    started: Instant,
}

fn vmi(name: &str, uid: &str, disk: &Path, user_data: &str, grace: u64) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "tests", "uid": uid},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "domain": {
                "cpu": {"cores": 1},
                "memory": {"guest": "128Mi"},
                "devices": {
                    "disks": [
                        {"name": "root", "disk": {"bus": "virtio", "readonly": true}, "bootOrder": 1},
                        {"name": "cloudinit", "disk": {"bus": "virtio"}},
                        {"name": "scratch", "disk": {"bus": "virtio"}}
                    ],
                    "interfaces": [{"name": "default", "masquerade": {}, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]
                }
            },
            "networks": [{"name": "default", "pod": {}}],
            "volumes": [
                {"name": "root", "hostDisk": {"path": disk, "type": "Disk"}},
                {"name": "cloudinit", "cloudInitNoCloud": {"userData": user_data}},
                {"name": "scratch", "emptyDisk": {"capacity": "64Mi"}}
            ]
        }
    })
}

/// The launcher process: `vmform-launcher`, as the handler starts it.
fn start_launcher(node: &Node, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("launcher.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_vmform-launcher"))
        .args(["--accel", "tcg", "--vmi-dir"])
        .arg(dir)
        .arg("--libvirt-uri")
        .arg(node.uri())
        .arg("--volumes-dir")
        .arg(&node.volumes)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn launch(node: &Node, name: &str, disk: &Path, user_data: &str, grace: u64) -> Guest {
    let uid = uuid::Uuid::new_v4().to_string();
    let dir = node.vmi_dir(&uid);
    std::fs::write(dir.join("vmi.json"), vmi(name, &uid, disk, user_data, grace).to_string()).unwrap();
    let started = Instant::now();
    let launcher = start_launcher(node, &dir);
    Guest { name: format!("tests_{name}"), dir, launcher, started }
}

fn console(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("console.log")).unwrap_or_default()
}

fn launcher_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("launcher.log")).unwrap_or_default()
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l.trim_end_matches('\r').trim() == line)
}

/// Wait for a console line; panics with the console and the launcher's log.
fn wait_line(g: &mut Guest, line: &str, timeout: Duration) -> Duration {
    let deadline = Instant::now() + timeout;
    loop {
        if has_line(&console(&g.dir), line) {
            return g.started.elapsed();
        }
        if let Ok(Some(status)) = g.launcher.try_wait() {
            panic!("the launcher exited ({status}) before {line:?}\nconsole:\n{}\nlog:\n{}", console(&g.dir), launcher_log(&g.dir));
        }
        assert!(Instant::now() < deadline, "no {line:?} within {timeout:?}\nconsole:\n{}\nlog:\n{}", console(&g.dir), launcher_log(&g.dir));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(g: &mut Guest, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = g.launcher.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = g.launcher.kill();
            let _ = g.launcher.wait();
            panic!("the launcher did not exit within {timeout:?}\nlog:\n{}", launcher_log(&g.dir));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(dir: &Path) -> launcher::Status {
    launcher::read_status(dir).unwrap()
}

fn wait_phase(dir: &Path, phase: LauncherPhase, timeout: Duration) -> launcher::Status {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = launcher::read_status(dir)
            && s.phase == phase
        {
            return s;
        }
        assert!(Instant::now() < deadline, "status.json never reached {phase:?}\nlog:\n{}", launcher_log(dir));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(g: &Guest) {
    unsafe { libc::kill(g.launcher.id() as i32, libc::SIGTERM) };
}

/// QEMU processes of a domain (libvirt passes `-name guest=<name>,…`); zombies excluded.
fn qemu_pids(domain: &str) -> Vec<i32> {
    let needle = format!("guest={domain},");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
            .unwrap_or(true);
        if cmdline.contains("qemu-system") && cmdline.contains(&needle) && !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let prefix = format!("{field}:");
    s.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// After a launcher has exited: no domain, no QEMU, no scratch dir, and the exit recorded.
fn assert_clean(node: &Node, g: &Guest, kind: ExitKind) {
    let s = status(&g.dir);
    assert_eq!(s.phase, LauncherPhase::Stopped);
    let exit = s.exit.expect("exit recorded");
    assert_eq!(exit.kind, kind, "{}", exit.message);
    assert!(!g.dir.join("disks").exists(), "disks/ removed");
    assert!(!node.domains().contains(&g.name), "domain {} left defined: {:?}", g.name, node.domains());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !qemu_pids(&g.name).is_empty() {
        assert!(Instant::now() < deadline, "QEMU of {} left running: {:?}", g.name, qemu_pids(&g.name));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn launcher_runs_real_guests() {
    let tools = ["libvirtd", "virsh", "qemu-system-x86_64"].iter().all(|t| have(t));
    if !vmform_schema_check::precondition(unsafe { libc::geteuid() } == 0 && tools, "root, libvirtd, virsh and qemu-system-x86_64") {
        return;
    }
    let disk = common::guest_disk();
    // Short path: the socket path must stay under 108 bytes.
    let dir = tempfile::Builder::new().prefix("vmf-launcher-").tempdir_in("/tmp").unwrap();
    let volumes = dir.path().join("volumes");
    std::fs::create_dir_all(&volumes).unwrap();
    let host_uuid = uuid::Uuid::new_v4();
    let daemon = NodeDaemon::ensure_running(dir.path(), host_uuid).unwrap_or_else(|e| panic!("{e}"));
    assert!(!daemon.adopted());
    let daemon_pid = daemon.pid();
    let mut node = Node { dir, volumes, daemon: Some(daemon), host_uuid };
    // A second ensure_running adopts the same daemon.
    let again = NodeDaemon::ensure_running(node.dir.path(), node.host_uuid).unwrap();
    assert!(again.adopted());
    assert_eq!(again.pid(), daemon_pid);
    drop(again);
    assert!(node.domains().is_empty());

    boot_and_shutdown(&node, &disk);
    forced_off(&node, &disk);
    qemu_killed(&node, &disk);
    missing_disk(&node);
    libvirtd_restart(&mut node, &disk);
    replacement_attaches(&node, &disk);

    // The daemon stops and leaves no mount behind.
    let node_dir = node.dir.path().to_path_buf();
    let daemon = node.daemon.take().unwrap();
    let pid = daemon.pid();
    daemon.stop().unwrap();
    // Gone (a zombie for a moment, until init reaps it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains("(libvirtd)") && !s.contains(") Z")) {
        assert!(Instant::now() < deadline, "libvirtd {pid} still running");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(node_dir.to_str().unwrap()), "a mount of {} is left:\n{mounts}", node_dir.display());
}

fn boot_and_shutdown(node: &Node, disk: &Path) {
    // A shut-off domain of the same name left from an earlier run is replaced.
    let leftover = node.dir.path().join("leftover.xml");
    std::fs::write(
        &leftover,
        "<domain type='qemu'><name>tests_hello</name><memory unit='MiB'>64</memory><os><type arch='x86_64' machine='q35'>hvm</type></os></domain>",
    )
    .unwrap();
    node.virsh(&["define", leftover.to_str().unwrap()]);
    assert_eq!(node.domains(), vec!["tests_hello".to_string()]);

    let mut g = launch(node, "hello", disk, "#cloud-config\n#vmform-marker hello\n", 30);
    let ready = wait_line(&mut g, "VMFORM-TEST-GUEST READY", BOOT_TIMEOUT);
    wait_line(&mut g, "VMFORM-USER-DATA: #vmform-marker hello", Duration::from_secs(30));
    eprintln!("READY {:.1} s after the launcher started", ready.as_secs_f64());

    let pid: u32 = std::fs::read_to_string(g.dir.join("launcher.pid")).unwrap().trim().parse().unwrap();
    assert_eq!(pid, g.launcher.id());
    let s = wait_phase(&g.dir, LauncherPhase::Running, Duration::from_secs(10));
    assert_eq!(s.domain, "tests_hello");
    assert_eq!(s.accel, "tcg");
    assert!(g.dir.join("domain.xml").exists());
    assert!(g.dir.join("disks").is_dir());
    assert!(node.domains().contains(&g.name));
    assert_eq!(qemu_pids(&g.name).len(), 1);

    // The declared port is forwarded from a free port on 127.0.0.1, and QEMU listens.
    assert_eq!(s.ports.len(), 1);
    let p = &s.ports[0];
    assert_eq!((p.name.as_deref(), p.protocol.as_str(), p.port, p.host_ip.as_str()), (Some("http"), "TCP", 80, "127.0.0.1"));
    std::net::TcpStream::connect(("127.0.0.1", p.host_port)).expect("QEMU listens on the forwarded port");

    // VmRSS counts the pages of libvirt.so and its ~55 libraries the launcher maps
    // (about 12 MiB, shared with libvirtd and every other client); RssAnon is the
    // launcher's own memory.
    let (rss, anon, file) = (status_kib(pid, "VmRSS"), status_kib(pid, "RssAnon"), status_kib(pid, "RssFile"));
    eprintln!("launcher VmRSS {rss} KiB (RssAnon {anon} KiB, RssFile {file} KiB) while the guest runs");
    assert!(anon < 15 * 1024, "launcher RssAnon {anon} KiB");

    let asked = Instant::now();
    sigterm(&g);
    let code = wait_exit(&mut g, Duration::from_secs(60));
    eprintln!("shutdown took {:.1} s after SIGTERM", asked.elapsed().as_secs_f64());
    assert_eq!(code, 0, "log:\n{}", launcher_log(&g.dir));
    assert!(has_line(&console(&g.dir), "VMFORM-TEST-GUEST POWEROFF"), "{}", console(&g.dir));
    assert_clean(node, &g, ExitKind::Shutdown);
    assert!(asked.elapsed() < Duration::from_secs(30), "within the grace period");
}

fn forced_off(node: &Node, disk: &Path) {
    let mut g = launch(node, "stubborn", disk, "#cloud-config\n#vmform-ignore-acpi\n", 3);
    wait_line(&mut g, "VMFORM-TEST-GUEST IGNORING-ACPI", BOOT_TIMEOUT);
    wait_phase(&g.dir, LauncherPhase::Running, Duration::from_secs(10));
    let asked = Instant::now();
    sigterm(&g);
    wait_phase(&g.dir, LauncherPhase::ShuttingDown, Duration::from_secs(5));
    let code = wait_exit(&mut g, Duration::from_secs(30));
    let took = asked.elapsed();
    eprintln!("forced off {:.1} s after SIGTERM (grace 3 s)", took.as_secs_f64());
    assert_eq!(code, 10, "log:\n{}", launcher_log(&g.dir));
    assert!(took >= Duration::from_secs(3), "the grace period was waited");
    assert!(!has_line(&console(&g.dir), "VMFORM-TEST-GUEST POWEROFF"));
    assert_clean(node, &g, ExitKind::ForcedOff);
}

fn qemu_killed(node: &Node, disk: &Path) {
    let mut g = launch(node, "victim", disk, "#vmform-marker victim\n", 30);
    wait_line(&mut g, "VMFORM-TEST-GUEST READY", BOOT_TIMEOUT);
    let pids = qemu_pids(&g.name);
    assert_eq!(pids.len(), 1);
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    let code = wait_exit(&mut g, Duration::from_secs(30));
    assert_eq!(code, 11, "log:\n{}", launcher_log(&g.dir));
    assert_clean(node, &g, ExitKind::Crashed);
}

fn missing_disk(node: &Node) {
    let missing = node.dir.path().join("no-such-disk.img");
    let mut g = launch(node, "nodisk", &missing, "", 30);
    let code = wait_exit(&mut g, Duration::from_secs(60));
    assert_eq!(code, 12, "log:\n{}", launcher_log(&g.dir));
    let exit = status(&g.dir).exit.unwrap();
    assert!(exit.message.contains(missing.to_str().unwrap()) && exit.message.contains("volume \"root\""), "{}", exit.message);
    assert_clean(node, &g, ExitKind::Failed);
}

/// libvirtd stops under a running guest and comes back: the guest keeps running, the
/// launcher reconnects and still shuts it down.
fn libvirtd_restart(node: &mut Node, disk: &Path) {
    let mut g = launch(node, "survivor", disk, "#vmform-marker survivor\n", 30);
    wait_line(&mut g, "VMFORM-USER-DATA: #vmform-marker survivor", BOOT_TIMEOUT);
    wait_phase(&g.dir, LauncherPhase::Running, Duration::from_secs(10));
    let qemu = qemu_pids(&g.name);
    node.daemon.take().unwrap().stop().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(g.launcher.try_wait().unwrap().is_none(), "the launcher outlives libvirtd\n{}", launcher_log(&g.dir));
    assert_eq!(qemu_pids(&g.name), qemu, "QEMU keeps running without libvirtd");
    let daemon = NodeDaemon::ensure_running(node.dir.path(), node.host_uuid).unwrap_or_else(|e| panic!("{e}"));
    assert!(!daemon.adopted());
    node.daemon = Some(daemon);
    // The ticks go on; then the launcher, reconnected, shuts the guest down.
    let ticks = console(&g.dir).lines().filter(|l| l.starts_with("tick ")).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while console(&g.dir).lines().filter(|l| l.starts_with("tick ")).count() <= ticks {
        assert!(Instant::now() < deadline, "the guest stopped ticking");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !launcher_log(&g.dir).contains("reconnected to libvirtd") {
        assert!(Instant::now() < deadline, "the launcher did not reconnect\n{}", launcher_log(&g.dir));
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm(&g);
    let code = wait_exit(&mut g, Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{}", launcher_log(&g.dir));
    assert!(has_line(&console(&g.dir), "VMFORM-TEST-GUEST POWEROFF"));
    assert_clean(node, &g, ExitKind::Shutdown);
}

/// A launcher killed outright leaves the guest running; the next one attaches to it.
fn replacement_attaches(node: &Node, disk: &Path) {
    let mut g = launch(node, "handover", disk, "#vmform-marker handover\n", 30);
    wait_line(&mut g, "VMFORM-USER-DATA: #vmform-marker handover", BOOT_TIMEOUT);
    let before = wait_phase(&g.dir, LauncherPhase::Running, Duration::from_secs(10));
    let boot_id = console(&g.dir).lines().find(|l| l.starts_with("VMFORM-BOOT-ID")).unwrap().to_string();
    g.launcher.kill().unwrap();
    g.launcher.wait().unwrap();
    assert_eq!(qemu_pids(&g.name).len(), 1, "the guest outlives its launcher");

    g.launcher = start_launcher(node, &g.dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(&g.dir);
        if s.phase == LauncherPhase::Running && s.message.contains("attached") {
            assert_eq!(s.ports, before.ports, "the forwarded ports are kept");
            break;
        }
        assert!(Instant::now() < deadline, "the replacement did not attach\n{}", launcher_log(&g.dir));
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid: u32 = std::fs::read_to_string(g.dir.join("launcher.pid")).unwrap().trim().parse().unwrap();
    assert_eq!(pid, g.launcher.id());
    sigterm(&g);
    let code = wait_exit(&mut g, Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{}", launcher_log(&g.dir));
    let boots: Vec<_> = console(&g.dir).lines().filter(|l| l.starts_with("VMFORM-BOOT-ID")).map(String::from).collect();
    assert_eq!(boots, vec![boot_id], "one boot");
    assert_clean(node, &g, ExitKind::Shutdown);
}
