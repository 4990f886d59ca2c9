//! The runtime of the local cluster, as `vmform up` runs it next to its API server: the
//! controller in-process, and the handler of node `local` as a child process (so killing
//! it, as a DaemonSet pod can be killed, leaves guests running), restarted when it exits.
//! Stopping it stops every guest of the node and the node's libvirtd: nothing runs after
//! `vmform down`.

use crate::controller::{self, ControllerConfig};
use crate::local::DataDir;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// The node the local runtime runs.
pub const LOCAL_NODE: &str = "local";

/// How long `stop` lets guests shut down before forcing them off: KubeVirt's default
/// grace period, and a little.
const GUEST_STOP_TIMEOUT: Duration = Duration::from_secs(35);

pub struct LocalRuntime {
    stop: watch::Sender<bool>,
    controller: tokio::task::JoinHandle<()>,
    handler: tokio::task::JoinHandle<()>,
    node_dir: PathBuf,
}

impl DataDir {
    pub fn nodes(&self) -> PathBuf {
        self.0.join("nodes")
    }
    pub fn volumes(&self) -> PathBuf {
        self.0.join("volumes")
    }
}

/// A kube client for the local control plane, from the kubeconfig it wrote.
pub async fn local_client(dir: &DataDir) -> Result<kube::Client, String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(dir.kubeconfig()).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

impl LocalRuntime {
    /// Start the controller and the handler. `vmform` is the command that runs vmform
    /// (the handler is `vmform runtime handler …`).
    pub async fn start(dir: &DataDir, vmform: OsString, node_lease: Duration) -> Result<LocalRuntime, String> {
        let client = local_client(dir).await?;
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let config = ControllerConfig { volumes_dir: Some(dir.volumes()), ..Default::default() };
        let controller = tokio::spawn(controller::run(client, config, until_stopped(stopped.clone())));
        let node_dir = dir.nodes().join(LOCAL_NODE);
        std::fs::create_dir_all(&node_dir).map_err(|e| format!("{}: {e}", node_dir.display()))?;
        let mut args: Vec<OsString> = vec!["runtime".into(), "handler".into(), "--own-libvirtd".into(), "--node".into(), LOCAL_NODE.into()];
        args.extend(["--lease-duration".into(), format!("{}s", node_lease.as_secs().max(1)).into()]);
        for (flag, value) in [("--kubeconfig", dir.kubeconfig()), ("--node-dir", node_dir.clone()), ("--volumes-dir", dir.volumes())] {
            args.push(flag.into());
            args.push(value.into());
        }
        let handler = tokio::spawn(supervise(vmform, args, node_dir.join("handler.log"), stopped));
        Ok(LocalRuntime { stop, controller, handler, node_dir })
    }

    /// Stop the handler and the controller, then the node's guests and its libvirtd.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handler.await;
        let _ = self.controller.await;
        let node_dir = self.node_dir;
        let _ = tokio::task::spawn_blocking(move || stop_node(&node_dir)).await;
    }
}

/// Run the handler, again whenever it exits (after a pause that grows while it keeps
/// failing), until told to stop; then SIGTERM it and wait.
async fn supervise(vmform: OsString, args: Vec<OsString>, log: PathBuf, mut stopped: watch::Receiver<bool>) {
    let mut pause = Duration::from_secs(1);
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
