//! The runtime of the local cluster, as `vmform up` runs it next to its API server: the
//! controller in-process, and the handler of node `local` as a child process (so killing
//! it, as a DaemonSet pod can be killed, leaves guests running), restarted when it exits.
//! Stopping it stops every guest of the node and the node's libvirtd: nothing runs after
//! `vmform down`.

use crate::controller::{self, ControllerConfig};
use crate::Error;
use vmform_cluster::local::DataDir;
use crate::libvirt::netns::Network;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// The node the local runtime runs.
pub const LOCAL_NODE: &str = "local";

/// How long `stop` lets guests shut down before forcing them off: KubeVirt's default
/// grace period, and a little.
const GUEST_STOP_TIMEOUT: Duration = Duration::from_secs(35);

pub struct LocalRuntime {
    client: kube::Client,
    stop: watch::Sender<bool>,
    controller: tokio::task::JoinHandle<()>,
    handlers: Vec<tokio::task::JoinHandle<()>>,
    nodes: Vec<LocalNode>,
    network: Option<Network>,
    notice: Option<String>,
}

/// A Node kept from an earlier run says how that run's handler ran guests: until the
/// new handler has decided, it says nothing (and takes no guests).
async fn forget_verdict(client: &kube::Client, name: &str) -> Result<(), Error> {
    use kube::api::{Patch, PatchParams};
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    match nodes.get_opt(name).await {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(()),
        Err(e) => return Err(Error::Start(format!("cannot read node {name}: {e}"))),
    }
    let annotations = serde_json::json!({ "metadata": { "annotations": {
        crate::accel::ACCEL_ANNOTATION: null, crate::accel::ACCEL_REASON_ANNOTATION: null, crate::accel::ACCEL_CHOICE_ANNOTATION: null,
    } } });
    nodes.patch(name, &PatchParams::default(), &Patch::Merge(&annotations)).await.map_err(|e| Error::Start(format!("cannot update node {name}: {e}")))?;
    let starting = serde_json::json!({ "status": { "conditions": [{
        "type": "Ready", "status": "Unknown", "reason": "HandlerStarting", "message": "the vmform handler is starting",
        "lastHeartbeatTime": crate::kubevirt::now(), "lastTransitionTime": crate::kubevirt::now(),
    }] } });
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&starting)).await.map_err(|e| Error::Start(format!("cannot update node {name}: {e}")))?;
    Ok(())
}

/// What every node of the local runtime is given.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    pub accel: crate::handler::AccelConfig,
    /// `--node-label KEY=VALUE`.
    pub labels: Vec<(String, String)>,
}

impl NodeOptions {
    /// The flags of `vmform up` that give its (detached) self these options.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = self.accel.to_args();
        for (key, value) in &self.labels {
            args.extend(["--node-label".into(), format!("{key}={value}").into()]);
        }
        args
    }
}

/// How a node runs guests, as its handler recorded it on the Node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeAccel {
    pub node: String,
    /// `kvm` or `tcg`; `None`: the node runs no guests.
    pub accel: Option<String>,
    /// Why: the accelerator's reason, or the node's NotReady message.
    pub reason: String,
    /// What `--accel` asked for (`auto`, `kvm`, `tcg`), when the node says.
    #[serde(default)]
    pub choice: Option<String>,
}

impl NodeAccel {
    /// What a Node says, once its handler has decided.
    pub fn of(node: &k8s_openapi::api::core::v1::Node) -> Option<NodeAccel> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let annotations = node.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).filter(|v| !v.is_empty()).cloned();
        let choice = annotation(crate::accel::ACCEL_CHOICE_ANNOTATION);
        if let Some(accel) = annotation(crate::accel::ACCEL_ANNOTATION) {
            return Some(NodeAccel { node: name, accel: Some(accel), reason: annotation(crate::accel::ACCEL_REASON_ANNOTATION).unwrap_or_default(), choice });
        }
        let conditions = node.status.as_ref()?.conditions.as_ref()?;
        let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "False")?;
        Some(NodeAccel { node: name, accel: None, reason: ready.message.clone().unwrap_or_default(), choice })
    }
}

impl std::fmt::Display for NodeAccel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.accel {
            Some(accel) => write!(f, "node {}: guests run under {accel} ({})", self.node, self.reason)?,
            None => write!(f, "node {}: runs no guests: {}", self.node, self.reason)?,
        }
        match &self.choice {
            Some(choice) => write!(f, " [--accel {choice}]"),
            None => Ok(()),
        }
    }
}

/// One node of the local runtime.
#[derive(Debug, Clone)]
pub struct LocalNode {
    pub name: String,
    pub dir: PathBuf,
    /// Its network namespace and address (`--nodes N`, N ≥ 2); `None`: the host's network.
    pub netns: Option<String>,
    pub address: Option<Ipv4Addr>,
}

impl LocalRuntime {
    /// Start the controller and the handlers of `nodes` nodes (1: node `local` in the
    /// host's network; N ≥ 2: `local-0` … in network namespaces of their own, or node
    /// `local` with a [`notice`](Self::notice) saying why when namespaces cannot be
    /// made). `vmform` is the command that runs vmform (a handler is `vmform runtime
    /// handler …`).
    pub async fn start(dir: &DataDir, vmform: OsString, node_lease: Duration, nodes: usize, options: &NodeOptions) -> Result<LocalRuntime, Error> {
        // vmform-cluster's one builder, through the kubeconfig the server wrote.
        let client = vmform_cluster::client(&vmform_cluster::TargetArgs::local(dir)).await.map_err(|e| Error::Start(e.to_string()))?.client;
        let (network, notice) = if nodes >= 2 {
            let data_dir = dir.0.clone();
            let state = dir.nodes().join("network");
            tokio::task::spawn_blocking(move || make_network(&data_dir, &state, nodes)).await.map_err(|e| Error::Start(e.to_string()))?
        } else {
            (None, None)
        };
        let nodes: Vec<LocalNode> = match &network {
            Some(net) => net
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| LocalNode {
                    name: format!("{LOCAL_NODE}-{i}"),
                    dir: dir.nodes().join(format!("{LOCAL_NODE}-{i}")),
                    netns: Some(n.netns.clone()),
                    address: Some(n.address),
                })
                .collect(),
            None => vec![LocalNode { name: LOCAL_NODE.into(), dir: dir.nodes().join(LOCAL_NODE), netns: None, address: None }],
        };
        for node in &nodes {
            std::fs::create_dir_all(&node.dir).map_err(|e| Error::Start(format!("{}: {e}", node.dir.display())))?;
            // Whoever starts the node's libvirtd (its handler, again after a crash) starts
            // it in the node's network.
            let net = node.netns.as_deref().zip(node.address);
            crate::libvirt::daemon::write_node_network(&node.dir, net).map_err(|e| Error::Start(format!("{}: {e}", node.dir.display())))?;
        }
        for node in &nodes {
            forget_verdict(&client, &node.name).await?;
        }
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let config = ControllerConfig { volumes_dir: Some(dir.volumes()), ..Default::default() };
        let controller = tokio::spawn(controller::run(client.clone(), config, until_stopped(stopped.clone())));
        let mut handlers = Vec::new();
        for node in &nodes {
            let mut args: Vec<OsString> = vec!["runtime".into(), "handler".into(), "--own-libvirtd".into(), "--node".into(), node.name.clone().into()];
            args.extend(["--lease-duration".into(), format!("{}s", node_lease.as_secs().max(1)).into()]);
            for (flag, value) in [("--kubeconfig", dir.kubeconfig()), ("--node-dir", node.dir.clone()), ("--volumes-dir", dir.volumes())] {
                args.push(flag.into());
                args.push(value.into());
            }
            if let Some(address) = node.address {
                args.extend(["--node-address".into(), address.to_string().into()]);
            }
            args.extend(options.to_args());
            handlers.push(tokio::spawn(supervise(vmform.clone(), args, node.dir.join("handler.log"), stopped.clone())));
        }
        Ok(LocalRuntime { client, stop, controller, handlers, nodes, network, notice })
    }

    /// The nodes it runs.
    pub fn nodes(&self) -> &[LocalNode] {
        &self.nodes
    }

    /// Why it runs one node when more were asked for.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// Wait until every node has said how it runs guests (its accelerator, or why it runs
    /// none), at most `timeout`.
    pub async fn node_accelerators(&self, timeout: Duration) -> Result<Vec<NodeAccel>, Error> {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(self.client.clone());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut said = Vec::new();
            for node in &self.nodes {
                if let Some(accel) = nodes.get_opt(&node.name).await.ok().flatten().as_ref().and_then(NodeAccel::of) {
                    said.push(accel);
                }
            }
            if said.len() == self.nodes.len() {
                return Ok(said);
            }
            if tokio::time::Instant::now() >= deadline {
                let silent: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).filter(|n| !said.iter().any(|s| s.node == *n)).collect();
                return Err(Error::Start(format!("node {} did not start within {} s (see its handler.log)", silent.join(", "), timeout.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stop the handlers and the controller, then the nodes' guests and libvirtds, then
    /// their network (namespaces, veths, bridge).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for handler in self.handlers {
            let _ = handler.await;
        }
        let _ = self.controller.await;
        let stops: Vec<_> = self.nodes.into_iter().map(|node| tokio::task::spawn_blocking(move || stop_node(&node.dir))).collect();
        for stop in stops {
            let _ = stop.await;
        }
        if let Some(network) = self.network {
            let _ = tokio::task::spawn_blocking(move || {
                for e in network.teardown() {
                    tracing::warn!("cannot remove the nodes' network: {e}");
                }
            })
            .await;
        }
    }
}

/// The network of `nodes` nodes, made (or reused after a crash); `None` and why when
/// network namespaces cannot be made here.
fn make_network(data_dir: &std::path::Path, state: &std::path::Path, nodes: usize) -> (Option<Network>, Option<String>) {
    let network = Network::plan(data_dir, state, nodes);
    // A namespace of this data dir left by a crash proves we can; else try a throwaway one.
    let reusing = std::path::Path::new("/run/netns").join(&network.nodes[0].netns).exists();
    if !reusing && let Err(e) = crate::libvirt::netns::probe() {
        let why = format!(
            "cannot make network namespaces here ({e}); they need CAP_SYS_ADMIN and CAP_NET_ADMIN: running ONE node, `{LOCAL_NODE}`, instead of {nodes}"
        );
        return (None, Some(why));
    }
    match network.ensure() {
        Ok(()) => (Some(network), None),
        Err(e) => {
            for e in network.teardown() {
                tracing::warn!("cannot remove a partly made network: {e}");
            }
            (None, Some(format!("cannot make the nodes' network ({e}): running ONE node, `{LOCAL_NODE}`, instead of {nodes}")))
        }
    }
}

/// Run the handler, again whenever it exits (after a pause that grows while it keeps
/// failing), until told to stop; then SIGTERM it and wait.
async fn supervise(vmform: OsString, args: Vec<OsString>, log: PathBuf, mut stopped: watch::Receiver<bool>) {
    let mut pause = Duration::from_secs(1);
    stop_stale_handler(&log.with_file_name("handler.pid"));
    loop {
        let output = match std::fs::OpenOptions::new().create(true).append(true).open(&log) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("cannot open the handler's log {}: {e}", log.display());
                return;
            }
        };
        let mut command = tokio::process::Command::new(&vmform);
        command.args(&args).stdin(std::process::Stdio::null()).stdout(output.try_clone().expect("log handles clone")).stderr(output);
        // Its own process group: a Ctrl-C meant for `vmform up` must not reach it first.
        command.process_group(0);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot start the handler: {e}");
                return;
            }
        };
        let pid_file = log.with_file_name("handler.pid");
        if let Some(pid) = child.id() {
            let _ = std::fs::write(&pid_file, format!("{pid}\n"));
        }
        let started = std::time::Instant::now();
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = stopped.wait_for(|s| *s) => None,
        };
        match exited {
            Some(status) => {
                if *stopped.borrow() {
                    return;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    pause = Duration::from_secs(1);
                }
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::warn!("the handler exited ({status}); restarting it in {} s (its log: {})", pause.as_secs(), log.display());
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            None => {
                if let Some(pid) = child.id() {
                    // SAFETY: kill(2) on our own child.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                return;
            }
        }
    }
}

/// A handler a killed `vmform up` left running (it is in a process group of its own) is
/// stopped before a new one starts for its node: two handlers of a node would fight.
fn stop_stale_handler(pid_file: &std::path::Path) {
    let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) else { return };
    let node_dir = pid_file.parent().map(|d| d.as_os_str().as_encoded_bytes().to_vec()).unwrap_or_default();
    let is_it = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == node_dir.as_slice()) && c.windows(7).any(|w| w == b"handler"))
    };
    if pid <= 0 || !is_it(pid) {
        return;
    }
    tracing::warn!("stopping handler pid {pid}, left running by an earlier vmform up");
    // SAFETY: kill(2) of a process whose command line names this node's dir.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for _ in 0..100 {
        if !is_it(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Stop every guest of the node, then its libvirtd.
fn stop_node(node_dir: &std::path::Path) {
    crate::handler::stop_guests(&node_dir.join("vmis"), GUEST_STOP_TIMEOUT);
    let running = std::fs::read_to_string(node_dir.join("libvirt/libvirtd.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    let host_uuid = std::fs::read_to_string(node_dir.join("host-uuid")).ok().and_then(|s| s.trim().parse().ok());
    let (true, Some(host_uuid)) = (running, host_uuid) else { return };
    match crate::libvirt::NodeDaemon::ensure_running(node_dir, host_uuid) {
        Ok(daemon) => {
            // Guests whose launchers did not finish in time are forced off: QEMU would
            // outlive libvirtd otherwise.
            crate::handler::destroy_all_domains(&daemon.uri());
            if let Err(e) = daemon.stop() {
                tracing::warn!("cannot stop the node's libvirtd: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot reach the node's libvirtd to stop it: {e}"),
    }
}
