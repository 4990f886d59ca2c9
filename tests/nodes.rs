//! `vmform up --nodes N`: several handler nodes on one machine, each with its own network
//! namespace, address and libvirtd, and `vmform down` leaving nothing of them behind.
//!
//! These need root (network namespaces, bind mounts); without it they return early.
//! One cluster at a time: a TCG guest takes most of a core.

mod common;

use vmform_schema_check::precondition;
use common::{assert_nothing_left, code, guest_disk, ip, is_root, processes_with, run, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Cluster {
    data: tempfile::TempDir,
    project: tempfile::TempDir,
    down: bool,
}

impl Cluster {
    /// `vmform up --detach --nodes N`; returns the cluster and what `up` printed.
    fn up(nodes: usize) -> (Cluster, String) {
        let data = tempfile::Builder::new().prefix("vmf").tempdir().unwrap();
        let n = nodes.to_string();
        let out = run(&["up", "--detach", "--nodes", &n, "--listen", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        (Cluster { data, project: tempfile::tempdir().unwrap(), down: false }, format!("{}{}", stdout(&out), stderr(&out)))
    }
    fn dir(&self) -> &str {
        self.data.path().to_str().unwrap()
    }
    fn node_dir(&self, node: &str) -> PathBuf {
        self.data.path().join("nodes").join(node)
    }
    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl").arg("--kubeconfig").arg(self.data.path().join("kubeconfig")).args(args).output().expect("kubectl runs");
        if out.status.success() { stdout(&out) } else { String::new() }
    }
    /// Wait until `jsonpath` of the object satisfies `check`.
    fn wait(&self, what: &[&str], jsonpath: &str, check: impl Fn(&str) -> bool, seconds: u64) -> String {
        let started = Instant::now();
        let path = format!("jsonpath={jsonpath}");
        loop {
            let mut args = vec!["get"];
            args.extend(what);
            args.extend(["-o", &path]);
            let value = self.kubectl(&args);
            if check(&value) {
                return value;
            }
            if started.elapsed() > Duration::from_secs(seconds) {
                let logs: Vec<String> = ["local", "local-0", "local-1"]
                    .iter()
                    .map(|n| format!("{n}: {}", std::fs::read_to_string(self.node_dir(n).join("handler.log")).unwrap_or_default()))
                    .collect();
                panic!("{what:?} {jsonpath} is {value:?} after {seconds} s\n{}\n{}", self.kubectl(&["get", "nodes", "-o", "wide"]), logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    fn node_field(&self, node: &str, jsonpath: &str) -> String {
        self.kubectl(&["get", "node", node, "-o", &format!("jsonpath={jsonpath}")])
    }
    fn wait_ready(&self, node: &str, seconds: u64) {
        self.wait(&["node", node], "{.status.conditions[?(@.type==\"Ready\")].status}", |s| s == "True", seconds);
    }
    fn socket_uri(&self, node: &str) -> String {
        format!("qemu+unix:///system?socket={}", self.node_dir(node).join("libvirt/run/libvirt-sock").display())
    }
    /// The libvirt host UUID of a node, from `virsh capabilities`.
    fn host_uuid(&self, node: &str) -> String {
        let out = Command::new("virsh").args(["-c", &self.socket_uri(node), "capabilities"]).output().expect("virsh runs");
        assert!(out.status.success(), "virsh capabilities on {node}: {}", stderr(&out));
        let caps = stdout(&out);
        caps.split("<uuid>").nth(1).and_then(|s| s.split("</uuid>").next()).expect("capabilities carry a host uuid").to_string()
    }
    fn down(&mut self) -> Output {
        self.down = true;
        run(&["down", "--data-dir", self.dir()])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.down {
            let _ = run(&["down", "--data-dir", self.dir()]);
        }
    }
}

#[test]
fn two_nodes_with_their_own_network_libvirtd_and_host_uuid_and_down_leaves_nothing() {
    if !precondition(is_root(), "root for network namespaces") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let disk = guest_disk();
    let started = Instant::now();
    let (mut c, printed) = Cluster::up(2);
    c.wait_ready("local-0", 90);
    c.wait_ready("local-1", 90);
    eprintln!("both nodes Ready {:.1} s after `up`", started.elapsed().as_secs_f64());
    assert!(printed.contains("vmform control plane running"), "{printed}");
    assert_eq!(c.kubectl(&["get", "node", "local", "--ignore-not-found", "-o", "name"]), "", "no node `local` with --nodes 2");

    let ip0 = c.node_field("local-0", "{.status.addresses[?(@.type==\"InternalIP\")].address}");
    let ip1 = c.node_field("local-1", "{.status.addresses[?(@.type==\"InternalIP\")].address}");
    assert!(ip0.starts_with("10.231.") && ip1.starts_with("10.231."), "{ip0} {ip1}");
    assert_ne!(ip0, ip1);
    let uri1 = c.node_field("local-1", "{.metadata.annotations.vmform\\.io/libvirt-migration-uri}");
    assert_eq!(uri1, format!("qemu+tcp://{ip1}/system"));
    // The heartbeat keeps the addresses.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.node_field("local-0", "{.status.addresses[?(@.type==\"InternalIP\")].address}"), ip0);

    let (u0, u1) = (c.host_uuid("local-0"), c.host_uuid("local-1"));
    assert_ne!(u0, u1, "distinct libvirt host UUIDs");
    assert_eq!(u0, std::fs::read_to_string(c.node_dir("local-0").join("host-uuid")).unwrap().trim());

    // Each node's libvirtd answers the other over TCP, from inside its namespace.
    let netns0 = std::fs::read_to_string(c.node_dir("local-0").join("node-network")).unwrap();
    let netns0 = netns0.lines().find_map(|l| l.strip_prefix("netns ")).unwrap().to_string();
    let netns1 = format!("{}-1", netns0.strip_suffix("-0").unwrap());
    for (ns, other) in [(&netns0, &ip1), (&netns1, &ip0)] {
        let out = Command::new("ip").args(["netns", "exec", ns, "virsh", "-c", &format!("qemu+tcp://{other}/system"), "hostname"]).output().unwrap();
        assert!(out.status.success(), "virsh from {ns} to {other}: {}", stderr(&out));
    }
    // The libvirtds run in the nodes' namespaces: their network namespace is not the host's.
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    for node in ["local-0", "local-1"] {
        let pid = std::fs::read_to_string(c.node_dir(node).join("libvirt/libvirtd.pid")).unwrap();
        let net = std::fs::read_link(format!("/proc/{}/ns/net", pid.trim())).unwrap();
        assert_ne!(net, host_net, "the libvirtd of {node} is in the host's network namespace");
    }

    // A guest runs on one of them.
    std::fs::write(
        c.project.path().join("vms.kdl"),
        format!(
            "vm \"one\" {{\n    namespace \"nodes\"\n    run-strategy \"always\"\n    cpu 1\n    memory \"128Mi\"\n    termination-grace \"5s\"\n    disk \"root\" {{\n        host-disk \"{}\" type=\"disk\"\n        bus \"virtio\"\n        read-only\n        boot-order 1\n    }}\n    network \"default\" masquerade=#true\n    port \"ssh\" 22\n}}\n",
            disk.display()
        ),
    )
    .unwrap();
    let kubeconfig = c.data.path().join("kubeconfig");
    let out = run(&["apply", "--auto-approve", c.project.path().to_str().unwrap(), "--kubeconfig", kubeconfig.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "apply: {}{}", stdout(&out), stderr(&out));
    c.wait(&["vm", "one", "-n", "nodes"], "{.status.printableStatus}", |s| s == "Running", 180);
    let node = c.kubectl(&["get", "vmi", "one", "-n", "nodes", "-o", "jsonpath={.status.nodeName}"]);
    assert!(node == "local-0" || node == "local-1", "{node}");
    let domains = |node: &str| {
        let out = Command::new("virsh").args(["-c", &c.socket_uri(node), "list", "--name"]).output().unwrap();
        stdout(&out).lines().filter(|l| !l.trim().is_empty()).count()
    };
    let other = if node == "local-0" { "local-1" } else { "local-0" };
    assert_eq!((domains(&node), domains(other)), (1, 0), "the guest's domain runs on {node} only");
    // Its forwarded port is bound on its node's address, which the host reaches over the
    // bridge (127.0.0.1 inside the node's namespace would not be).
    let ports = run(&["vm", "ports", "one", "-n", "nodes", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    assert_eq!(code(&ports), 0, "{}", stderr(&ports));
    let node_ip = c.kubectl(&["get", "node", &node, "-o", "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}"]);
    let listed = stdout(&ports);
    let address = listed
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{node_ip}:")))
        .unwrap_or_else(|| panic!("no port on the node's address {node_ip} in:\n{listed}"))
        .to_string();
    std::net::TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(5)).expect("the host reaches the forwarded port");
    let qemu: Vec<String> = processes_with("qemu-system").into_iter().filter(|p| p.contains("nodes_one") || p.contains(c.dir())).collect();
    eprintln!("QEMU of the guest: {qemu:?}");

    let data_dir = c.data.path().to_path_buf();
    let link_prefix = format!("vmf{}", netns0.trim_start_matches("vmform-").split('-').next().unwrap());
    let netns_prefix = netns0.trim_end_matches('0').to_string();
    let stopping = Instant::now();
    let out = c.down();
    assert_eq!(code(&out), 0, "down: {}{}", stdout(&out), stderr(&out));
    eprintln!("`down` with one guest took {:.1} s", stopping.elapsed().as_secs_f64());
    assert_nothing_left(&data_dir, &netns_prefix, &link_prefix);
}

#[test]
fn up_after_a_crash_reuses_the_network_and_down_still_cleans_up() {
    if !precondition(is_root(), "root for network namespaces") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut c, _) = Cluster::up(2);
    c.wait_ready("local-0", 90);
    c.wait_ready("local-1", 90);
    let ip0 = c.node_field("local-0", "{.status.addresses[?(@.type==\"InternalIP\")].address}");
    let pid: i32 = std::fs::read_to_string(c.data.path().join("vmform.pid")).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) of the server this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let gone = Instant::now();
    while Path::new(&format!("/proc/{pid}/cmdline")).exists() && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()) {
        assert!(gone.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The namespaces, bridge and libvirtds are still there; a new `up` takes them over.
    let out = run(&["up", "--detach", "--nodes", "2", "--listen", "127.0.0.1:0", "--data-dir", c.dir()]);
    assert_eq!(code(&out), 0, "up after a crash: {}{}", stdout(&out), stderr(&out));
    // The nodes are still Ready from before the crash: wait for the new handlers to have
    // registered them (their logs say so a second time).
    for node in ["local-0", "local-1"] {
        let waiting = Instant::now();
        let log = c.node_dir(node).join("handler.log");
        while std::fs::read_to_string(&log).unwrap_or_default().matches(", accelerator ").count() < 2 {
            assert!(waiting.elapsed() < Duration::from_secs(90), "the new handler of {node} did not register it");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    c.wait_ready("local-0", 90);
    c.wait_ready("local-1", 90);
    assert_eq!(c.node_field("local-0", "{.status.addresses[?(@.type==\"InternalIP\")].address}"), ip0, "the same subnet again");
    let handlers = processes_with(&format!("{} ", c.node_dir("local-0").display()));
    assert_eq!(handlers.iter().filter(|p| p.contains("runtime handler")).count(), 1, "one handler per node:\n{}", handlers.join("\n"));
    let netns0 = std::fs::read_to_string(c.node_dir("local-0").join("node-network")).unwrap();
    let netns0 = netns0.lines().find_map(|l| l.strip_prefix("netns ")).unwrap().to_string();
    let tag = netns0.trim_start_matches("vmform-").split('-').next().unwrap().to_string();
    let out = c.down();
    assert_eq!(code(&out), 0, "down: {}{}", stdout(&out), stderr(&out));
    assert_nothing_left(c.data.path(), &format!("vmform-{tag}-"), &format!("vmf{tag}"));
}

#[test]
fn one_node_is_node_local_in_the_hosts_network() {
    if !precondition(is_root(), "root for a private libvirtd") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut c, _) = Cluster::up(1);
    c.wait_ready("local", 90);
    assert_eq!(c.node_field("local", "{.status.addresses[?(@.type==\"InternalIP\")].address}"), "127.0.0.1");
    assert_eq!(c.node_field("local", "{.metadata.annotations.vmform\\.io/libvirt-migration-uri}"), "");
    assert!(!c.node_dir("local").join("node-network").exists());
    let pid = std::fs::read_to_string(c.node_dir("local").join("libvirt/libvirtd.pid")).unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/ns/net", pid.trim())).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "one node runs in the host's network"
    );
    let tag_prefix = format!("vmform-{}", &vmform_tag(c.data.path()));
    assert!(!ip(&["netns", "list"]).contains(&tag_prefix));
    let out = c.down();
    assert_eq!(code(&out), 0, "down: {}{}", stdout(&out), stderr(&out));
    assert_nothing_left(c.data.path(), &tag_prefix, &format!("vmf{}", vmform_tag(c.data.path())));
}

/// The 8 hex digits naming a data dir's network objects (runtime/src/libvirt/netns.rs).
fn vmform_tag(data_dir: &Path) -> String {
    vmform_runtime::libvirt::netns::tag(data_dir)
}

/// Without CAP_NET_ADMIN and CAP_SYS_ADMIN (dropped with capsh) `up --nodes 2` says it
/// cannot make namespaces and runs one node, `local`.
#[test]
fn without_the_capabilities_it_says_so_and_runs_one_node() {
    if !precondition(is_root() && Command::new("capsh").arg("--help").output().is_ok(), "root and capsh") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::Builder::new().prefix("vmf").tempdir().unwrap();
    let command = format!(
        "{} up --detach --nodes 2 --listen 127.0.0.1:0 --data-dir {}",
        env!("CARGO_BIN_EXE_vmform"),
        data.path().display()
    );
    let out = Command::new("capsh").args(["--drop=cap_net_admin,cap_sys_admin", "--", "-c", &command]).stdin(Stdio::null()).output().unwrap();
    let mut c = Cluster { data, project: tempfile::tempdir().unwrap(), down: false };
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("cannot make network namespaces here") && said.contains("running ONE node, `local`"), "{said}");
    // The node exists (NotReady: a private libvirtd needs CAP_SYS_ADMIN too, and it says why).
    c.wait(&["node", "local"], "{.metadata.name}", |s| s == "local", 60);
    assert_eq!(c.kubectl(&["get", "node", "local-0", "--ignore-not-found", "-o", "name"]), "");
    let out = c.down();
    assert_eq!(code(&out), 0, "down: {}{}", stdout(&out), stderr(&out));
    assert_nothing_left(c.data.path(), &format!("vmform-{}", vmform_tag(c.data.path())), &format!("vmf{}", vmform_tag(c.data.path())));
}
