//! `vmform up`, `down`, `status` and `token create`: the local control plane's
//! lifecycle on this machine.

use crate::error::{Done, Error, Kind, Outcome};
use crate::process::{init_logging, runtime, wait_for_signal};
use crate::say;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vmform_apiserver::local::{self, UpConfig};
use vmform_cluster::local::{DataDir, CONTEXT};
use vmform_runtime::accel::AccelChoice;
use vmform_runtime::handler::AccelConfig;
use vmform_runtime::supervisor::{LocalRuntime, NodeAccel, NodeOptions};

/// How long `up --detach` waits for the server.
const WAIT: Duration = Duration::from_secs(30);
/// How long `down` waits: guests get their grace period to shut down first.
const DOWN_WAIT: Duration = Duration::from_secs(90);

fn usage_hint(kubeconfig: &Path) -> String {
    format!(
        "kubeconfig: {k} (context {CONTEXT})\n\n  export KUBECONFIG={k}\n  kubectl get namespaces\n  kubectl get vm -A",
        k = kubeconfig.display()
    )
}

/// `node_lease`: the runtime's node lease duration, or `None` for the API server alone.
/// `nodes`: how many handler nodes (1: node `local`; N ≥ 2: `local-0` … in network
/// namespaces of their own).
pub fn up(data_dir: PathBuf, listen: SocketAddr, detach: bool, node_lease: Option<Duration>, nodes: usize, options: NodeOptions) -> Outcome {
    if detach {
        return up_detached(data_dir, listen, node_lease, nodes, &options);
    }
    init_logging();
    runtime().block_on(async move {
        let server = match local::up(UpConfig { data_dir, listen }).await {
            Ok(s) => s,
            Err(e) => {
                return Err(Error::usage(format!("{e}")));
            }
        };
        say!("vmform control plane listening on {} (data dir {})", server.address, server.data_dir.0.display());
        let vm_runtime = if let Some(lease) = node_lease {
            let exe = std::env::current_exe().expect("the running binary has a path");
            match LocalRuntime::start(&server.data_dir, exe.into(), lease, nodes, &options).await {
                Ok(r) => {
                    if let Some(notice) = r.notice() {
                        eprintln!("warning: {notice}");
                    }
                    match r.nodes() {
                        [node] => say!("runtime: controller, and the handler of node {} (its log: {})", node.name, node.dir.join("handler.log").display()),
                        nodes => {
                            say!("runtime: controller, and the handlers of {} nodes:", nodes.len());
                            for node in nodes {
                                let address = node.address.map(|a| a.to_string()).unwrap_or_default();
                                let netns = node.netns.as_deref().unwrap_or_default();
                                say!("  node {}: address {address}, network namespace {netns} (its log: {})", node.name, node.dir.join("handler.log").display());
                            }
                        }
                    }
                    // Nodes decide how they run guests (the KVM probe) as they start:
                    // say so, and with --accel kvm refuse a node that cannot.
                    let report = node_report(&r, &options.accel).await;
                    if let Err(e) = write_runtime_report(&server.data_dir, &report) {
                        eprintln!("warning: cannot write {}: {e}", runtime_report_path(&server.data_dir).display());
                    }
                    if let Err(e) = report {
                        r.stop().await;
                        server.stop().await;
                        return Err(Error::usage(e));
                    }
                    Some(r)
                }
                Err(e) => {
                    server.stop().await;
                    return Err(Error::usage(format!("the VM runtime did not start: {e}")));
                }
            }
        } else {
            None
        };
        say!("{}", usage_hint(&server.data_dir.kubeconfig()));
        wait_for_signal().await;
        eprintln!("stopping");
        if let Some(r) = vm_runtime {
            eprintln!("stopping the guests and the nodes' libvirtds and networks");
            r.stop().await;
        }
        server.stop().await;
        Ok(Done::Ok)
    })
}

/// How long nodes may take to decide how they run guests, beyond the probe's own limit.
const NODE_START: Duration = Duration::from_secs(60);

/// Each node's accelerator, printed; an error when a node runs no guests although
/// `--accel kvm` asked for KVM, or a node never started.
async fn node_report(runtime: &LocalRuntime, accel: &AccelConfig) -> Result<Vec<NodeAccel>, String> {
    let nodes = runtime.node_accelerators(accel.probe_timeout + NODE_START).await.map_err(|e| e.to_string())?;
    for node in &nodes {
        say!("{node}");
    }
    match nodes.iter().find(|n| n.accel.is_none()) {
        Some(node) if accel.choice == AccelChoice::Kvm => Err(format!("{node}")),
        _ => Ok(nodes),
    }
}

/// `<data>/runtime.json`: what the runtime of the `vmform up` with this pid reported, for
/// `up --detach` to wait on and print.
#[derive(serde::Serialize, serde::Deserialize)]
struct RuntimeReport {
    pid: u32,
    #[serde(default)]
    nodes: Vec<NodeAccel>,
    #[serde(default)]
    error: Option<String>,
}

fn runtime_report_path(dir: &DataDir) -> PathBuf {
    dir.0.join("runtime.json")
}

fn write_runtime_report(dir: &DataDir, report: &Result<Vec<NodeAccel>, String>) -> std::io::Result<()> {
    let (nodes, error) = match report {
        Ok(nodes) => (nodes.clone(), None),
        Err(e) => (Vec::new(), Some(e.clone())),
    };
    let report = RuntimeReport { pid: std::process::id(), nodes, error };
    vmform_cluster::files::write_atomically(&runtime_report_path(dir), &serde_json::to_vec_pretty(&report).expect("JSON serialises"), 0o644)
}

fn read_runtime_report(dir: &DataDir, pid: u32) -> Option<RuntimeReport> {
    let report: RuntimeReport = serde_json::from_slice(&std::fs::read(runtime_report_path(dir)).ok()?).ok()?;
    (report.pid == pid).then_some(report)
}

/// Start `vmform up` again as a background process writing to the log file, and wait
/// until it serves (or fails, showing the end of its log).
fn up_detached(data_dir: PathBuf, listen: SocketAddr, node_lease: Option<Duration>, nodes: usize, options: &NodeOptions) -> Outcome {
    use std::os::unix::process::CommandExt;
    let dir = DataDir(data_dir.clone());
    if dir.in_use() {
        let pid = dir.read_server_info().map(|i| format!(" (pid {})", i.pid)).unwrap_or_default();
        return Err(Error::usage(format!("the data dir {} is in use by another vmform server{pid}; stop it with `vmform down`", data_dir.display())));
    }
    if let Err(e) = std::fs::create_dir_all(&data_dir) {
        return Err(Error::usage(format!("the data dir {} cannot be used: {e}", data_dir.display())));
    }
    let log = match std::fs::OpenOptions::new().create(true).append(true).open(dir.log_file()) {
        Ok(f) => f,
        Err(e) => {
            return Err(Error::usage(format!("cannot open the log file {}: {e}", dir.log_file().display())));
        }
    };
    if nodes >= 2 && node_lease.is_some() {
        // The server falls back to one node then; say so here, not only in its log.
        let leftover = Path::new("/run/netns").join(vmform_runtime::libvirt::netns::netns_name(&data_dir, 0)).exists();
        if let (false, Err(e)) = (leftover, vmform_runtime::libvirt::netns::probe()) {
            eprintln!("warning: cannot make network namespaces here ({e}); they need CAP_SYS_ADMIN and CAP_NET_ADMIN: running ONE node, `local`, instead of {nodes}");
        }
    }
    let exe = std::env::current_exe().expect("the running binary has a path");
    let mut child = match std::process::Command::new(exe)
        .args(["up", "--listen", &listen.to_string(), "--data-dir"])
        .arg(&data_dir)
        .args(match node_lease {
            Some(lease) => vec!["--node-lease-duration".to_string(), format!("{}s", lease.as_secs())],
            None => vec!["--no-runtime".to_string()],
        })
        .args(["--nodes".to_string(), nodes.to_string()])
        .args(options.to_args())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("the log file handle clones"))
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Err(Error::usage(format!("cannot start the server: {e}")));
        }
    };
    let started = Instant::now();
    let mut serving = None;
    // The server first, then (with the runtime) each node's verdict on how it runs guests.
    let wait = if node_lease.is_some() { WAIT + options.accel.probe_timeout + NODE_START } else { WAIT };
    while started.elapsed() < wait {
        if let Ok(Some(status)) = child.try_wait() {
            let report = read_runtime_report(&dir, child.id());
            match report.and_then(|r| r.error) {
                Some(error) => return Err(Error::usage(error)),
                None => {
                    eprintln!("error: the server exited ({status}); the end of {}:", dir.log_file().display());
                    let log = std::fs::read_to_string(dir.log_file()).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    for line in tail.into_iter().rev() {
                        eprintln!("  {line}");
                    }
                }
            }
            return Err(Error::Reported(Kind::Usage));
        }
        if serving.is_none() {
            serving = dir.read_server_info().filter(|i| i.pid == child.id());
        }
        if let Some(info) = &serving {
            let report = if node_lease.is_some() { read_runtime_report(&dir, child.id()) } else { Some(RuntimeReport { pid: info.pid, nodes: vec![], error: None }) };
            if let Some(report) = report.filter(|r| r.error.is_none()) {
                say!("vmform control plane running in the background on {} (pid {}, data dir {})", info.address, info.pid, data_dir.display());
                for node in &report.nodes {
                    say!("{node}");
                }
                say!("log: {}; stop it with `vmform down`", dir.log_file().display());
                say!("{}", usage_hint(&dir.kubeconfig()));
                return Ok(Done::Ok);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::usage(format!("the server did not start within {} s; see {}", WAIT.as_secs(), dir.log_file().display())))
}

fn read_pid(dir: &DataDir) -> Option<i32> {
    std::fs::read_to_string(dir.pid_file()).ok()?.trim().parse().ok()
}

pub fn down(data_dir: PathBuf) -> Outcome {
    let dir = DataDir(data_dir.clone());
    if !dir.in_use() {
        say!("the local control plane is not running (data dir {})", data_dir.display());
        return Ok(Done::Ok);
    }
    let Some(pid) = read_pid(&dir) else {
        return Err(Error::usage(format!("a server holds {} but its pid file {} is missing", data_dir.display(), dir.pid_file().display())));
    };
    // SAFETY: kill(2) with a pid read from our own pid file and a plain signal number.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(Error::usage(format!("cannot signal the server (pid {pid}): {}", std::io::Error::last_os_error())));
    }
    let started = Instant::now();
    // Stopped means gone: the lock is released a moment before the process has exited.
    // SAFETY: kill(2) with signal 0 only asks whether the pid exists.
    let gone = || unsafe { libc::kill(pid, 0) } != 0;
    while started.elapsed() < DOWN_WAIT {
        if !dir.in_use() && gone() {
            say!("stopped the local control plane (pid {pid})");
            return Ok(Done::Ok);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::usage(format!("the server (pid {pid}) did not stop within {} s", DOWN_WAIT.as_secs())))
}

pub fn status(data_dir: PathBuf, kubeconfig_only: bool) -> Outcome {
    let dir = DataDir(data_dir.clone());
    if kubeconfig_only {
        say!("{}", dir.kubeconfig().display());
        return if dir.in_use() { Ok(Done::Ok) } else { Err(Error::FAILED) };
    }
    let Some(info) = dir.read_server_info().filter(|_| dir.in_use()) else {
        say!("not running (data dir {})", data_dir.display());
        return Err(Error::FAILED);
    };
    say!("running: pid {}, {} since {}", info.pid, info.address, info.started);
    say!("version: vmform {}", info.version);
    say!("data dir: {}", data_dir.display());
    say!("kubeconfig: {} (context {CONTEXT})", dir.kubeconfig().display());
    match runtime().block_on(counts(&dir.kubeconfig())) {
        Ok((counts, nodes)) => {
            if !nodes.is_empty() {
                say!("nodes:");
                for node in nodes {
                    say!("  {node}");
                }
            }
            say!("objects:");
            for (kind, n) in counts {
                say!("  {kind:<46} {n}");
            }
            Ok(Done::Ok)
        }
        Err(e) => Err(Error::cluster(format!("the server does not answer: {e}"))),
    }
}

/// Object counts per resource, and how each node runs guests, read through the API as
/// any client would.
async fn counts(kubeconfig: &Path) -> Result<(Vec<(String, usize)>, Vec<NodeAccel>), Box<dyn std::error::Error>> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
    let wanted = vmform_cluster::TargetArgs { kubeconfig: Some(kubeconfig.to_path_buf()), ..Default::default() };
    let client = vmform_cluster::client(&wanted).await?.client;
    let mut out = vec![];
    for r in vmform_apiserver::resources::ALL {
        let gvk = GroupVersionKind::gvk(r.group, r.version, r.kind);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk_with_plural(&gvk, r.plural));
        out.push((r.qualified(), api.list_metadata(&ListParams::default()).await?.items.len()));
    }
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    let nodes = nodes.list(&ListParams::default()).await?.items.iter().filter_map(NodeAccel::of).collect();
    Ok((out, nodes))
}

pub fn token_create(data_dir: PathBuf, name: &str, read_only: bool) -> Outcome {
    match local::create_token(&data_dir, name, read_only) {
        Ok(token) => {
            say!("{token}");
            Ok(Done::Ok)
        }
        Err(e) => {
            Err(Error::usage(format!("cannot record the token in {}: {e}", data_dir.display())))
        }
    }
}
