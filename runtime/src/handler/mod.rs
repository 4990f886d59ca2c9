//! The handler (KubeVirt's virt-handler): one per node. It registers the node and keeps
//! its heartbeat, starts a launcher for every VMI scheduled to the node, reports each
//! VMI's phase from what its launcher writes, stops guests of deleted VMIs, and lets a
//! VMI go (removes its finalizer) only once its guest is gone.
//!
//! The sync is level-triggered: every VMI event, and a short tick, compares each VMI of
//! the node with its launcher and writes only what differs.

mod accel;
mod launchers;
pub mod migratable;
mod migration;
mod node;

pub use accel::AccelConfig;
pub use launchers::{LauncherExit, LauncherStatus};
/// The node going down: every domain of its libvirtd forced off and undefined (kept here
/// for the local runtime's supervisor).
pub use crate::libvirt::domains::destroy_all_domains;
use crate::libvirt::domains::{domain_seen, remove_domain, warm_up};

use crate::kubevirt::{self, MigrationState, Phase};
use crate::Error;
use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use launchers::Launchers;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Where the node's libvirt comes from.
#[derive(Debug, Clone)]
pub enum LibvirtSource {
    /// Start (or adopt) a private libvirtd under the node dir: the local runtime.
    Own,
    /// Use this daemon: a real host's libvirtd.
    Uri(String),
}

#[derive(Debug, Clone)]
pub struct HandlerConfig {
    pub node: String,
    /// `<data>/nodes/<node>`: the node's libvirt and VMI dirs.
    pub node_dir: PathBuf,
    /// `<data>/volumes`: PVC and DataVolume files.
    pub volumes_dir: PathBuf,
    pub libvirt: LibvirtSource,
    /// The node lease's duration; it is renewed every quarter of it.
    pub lease_duration: Duration,
    /// The launcher's command line before its `--vmi-dir`: `vmform runtime launcher`.
    pub launcher_command: Vec<OsString>,
    /// The node's InternalIP (127.0.0.1 when `None`): `vmform up --nodes N` gives each node its own.
    pub node_address: Option<std::net::IpAddr>,
    pub accel: AccelConfig,
    /// Labels of the node besides the ones it always has (`vmform up --node-label`).
    pub labels: Vec<(String, String)>,
}

impl HandlerConfig {
    pub fn vmis_dir(&self) -> PathBuf {
        self.node_dir.join("vmis")
    }
}

/// How often launchers' files are read between VMI events.
const TICK: Duration = Duration::from_millis(100);

/// Run the handler until `shutdown` resolves. Guests keep running when it returns.
pub async fn run(client: Client, config: HandlerConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
    // libvirt prints every error to stderr by default, expected ones ("no domain with
    // matching uuid") included; the handler reports what matters itself.
    crate::libvirt::silence_errors();
    // From before libvirtd starts: the QEMUs of its capability probe are handed over too,
    // and libvirt waits for them to be reaped.
    let _reaper = match config.libvirt {
        LibvirtSource::Own => match crate::libvirt::reaper::become_subreaper() {
            Ok(()) => Some(Reaper(tokio::spawn(reap_orphans()))),
            Err(e) => {
                tracing::warn!("node {}: cannot reap libvirt's exited QEMUs ({e}); stopping a guest waits for init to", config.node);
                None
            }
        },
        LibvirtSource::Uri(_) => None,
    };
    let uri = match &config.libvirt {
        LibvirtSource::Uri(uri) => uri.clone(),
        LibvirtSource::Own => match start_libvirtd(&config).await {
            Ok(uri) => uri,
            Err(e) => {
                // The node shows why it takes no guests; whoever runs the handler retries.
                if let Err(k) = node::register_unavailable(&client, &config.node, "LibvirtUnavailable", &e.to_string()).await {
                    tracing::warn!("cannot record node {} as unavailable: {k}", config.node);
                }
                return Err(e);
            }
        },
    };
    let verdict = {
        let (config, uri) = (config.clone(), uri.clone());
        tokio::task::spawn_blocking(move || accel::choose(&config, &uri)).await.expect("choosing the accelerator does not panic")
    };
    tracing::info!("node {}: libvirt {uri}, accelerator {} ({})", config.node, verdict.accel, verdict.reason);
    if config.accel.choice == crate::accel::AccelChoice::Kvm && verdict.accel != crate::accel::Accel::Kvm {
        let error = Error::KvmUnavailable(verdict.reason);
        if let Err(k) = node::register_unavailable(&client, &config.node, "KVMUnavailable", &error.to_string()).await {
            tracing::warn!("cannot record node {} as unavailable: {k}", config.node);
        }
        return Err(error);
    }
    let storage = node::storage_id(&config.volumes_dir);
    node::register(
        &client,
        &node::NodeInfo {
            name: &config.node,
            accel: Some((&verdict, config.accel.choice)),
            libvirt_uri: &uri,
            address: config.node_address,
            storage: &storage,
            labels: &config.labels,
        },
    )
    .await?;
    let heartbeat = node::heartbeat(client.clone(), config.node.clone(), config.lease_duration);

    let vmis_dir = config.vmis_dir();
    let launchers = Launchers::adopt(vmis_dir.clone(), config.launcher_command.clone())
        .map_err(|source| Error::NodeDir { path: vmis_dir.display().to_string(), source })?;
    let resource = kubevirt::vmi_resource();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<()>(1);
    let watch = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .for_each(move |_| {
            let _ = wake_tx.try_send(());
            async {}
        });
    let mut launcher_args: Vec<OsString> = vec!["--libvirt-uri".into(), uri.clone().into(), "--volumes-dir".into(), config.volumes_dir.clone().into()];
    if let Some(emulator) = &config.accel.emulator {
        launcher_args.extend(["--emulator".into(), emulator.into()]);
    }
    let mut sync = NodeSync {
        client,
        node: config.node.clone(),
        launchers,
        launcher_args,
        accel: verdict,
        accel_choice: config.accel.choice,
        node_dir: config.node_dir.clone(),
        uri,
        volumes_dir: config.volumes_dir.clone(),
        node_address: config.node_address,
        storage,
        warned: Default::default(),
        peer: None,
    };
    let sync_loop = async {
        // Invariant: a handler restart never stops a running guest. Until the cache holds
        // every VMI, a launcher without a VMI may only look orphaned, so nothing is
        // stopped before the first full list.
        let _ = store.wait_until_ready().await;
        loop {
            sync.run(&store.state()).await;
            let _ = tokio::time::timeout(TICK, wake_rx.recv()).await;
        }
    };
    let watchdog = async {
        if matches!(config.libvirt, LibvirtSource::Own) {
            watch_libvirtd(&config).await
        } else {
            std::future::pending().await
        }
    };
    tokio::select! {
        _ = heartbeat => {}
        _ = watch => {}
        _ = sync_loop => {}
        e = watchdog => return e,
        _ = shutdown => {}
    }
    Ok(())
}

/// The reaping task, which ends with the handler.
struct Reaper(tokio::task::JoinHandle<()>);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reap the exited QEMUs (and libvirtds) handed to this subreaper, on every SIGCHLD and
/// at least once a second: libvirt waits for each stopped QEMU's pid to be gone.
async fn reap_orphans() {
    let mut exited = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    loop {
        match &mut exited {
            Some(signal) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), signal.recv()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        let _ = tokio::task::spawn_blocking(crate::libvirt::reaper::reap_orphans).await;
    }
}

/// Start the node's own libvirtd again whenever it dies. Its guests' QEMUs keep running
/// meanwhile, and a new libvirtd takes them over from its state dir; launchers reconnect.
async fn watch_libvirtd(config: &HandlerConfig) -> Result<(), Error> {
    let pid_file = config.node_dir.join("libvirt/libvirtd.pid");
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let alive = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .is_some_and(crate::libvirt::reaper::alive);
        if !alive {
            tracing::warn!("node {}: libvirtd is gone; starting it again", config.node);
            start_libvirtd(config).await?;
        }
    }
}

async fn start_libvirtd(config: &HandlerConfig) -> Result<String, Error> {
    let node_dir = config.node_dir.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&node_dir).map_err(|source| Error::NodeDir { path: node_dir.display().to_string(), source })?;
        let host_uuid = host_uuid(&node_dir).map_err(|source| Error::NodeDir { path: node_dir.display().to_string(), source })?;
        let daemon = crate::libvirt::daemon::NodeDaemon::ensure_running(&node_dir, host_uuid).map_err(|e| Error::Libvirt(e.to_string()))?;
        warm_up(&daemon.uri());
        Ok(daemon.uri().to_string())
    })
    .await
    .expect("starting libvirtd does not panic")
}

/// The node's libvirt host UUID, made once and kept: two nodes must differ, or libvirt
/// refuses to migrate between them.
fn host_uuid(node_dir: &std::path::Path) -> std::io::Result<uuid::Uuid> {
    let path = node_dir.join("host-uuid");
    if let Some(uuid) = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()) {
        return Ok(uuid);
    }
    let uuid = uuid::Uuid::new_v4();
    crate::files::write_atomically(&path, format!("{uuid}\n").as_bytes(), 0o644)?;
    Ok(uuid)
}

/// The handler's sync of its node's VMIs with their launchers (level-triggered, see
/// [`run`]), and what it keeps between rounds.
struct NodeSync {
    client: Client,
    node: String,
    launchers: Launchers,
    /// Every launcher's flags but `--accel` (see [`NodeSync::launcher_args`]).
    launcher_args: Vec<OsString>,
    /// The accelerator new guests get: a guest's KVM failure turns it to TCG.
    accel: crate::accel::Verdict,
    accel_choice: crate::accel::AccelChoice,
    node_dir: PathBuf,
    uri: String,
    volumes_dir: PathBuf,
    /// Where other nodes reach this one (`targetNodeAddress` of migrations here).
    node_address: Option<std::net::IpAddr>,
    /// Which files this node sees (its Node's `vmform.io/storage`).
    storage: String,
    /// VMIs already reported as running here while their VMI names another node.
    warned: std::collections::HashSet<String>,
    /// Whether another node runs on this node's host, and when that was last looked up.
    peer: Option<(std::time::Instant, bool)>,
}

impl NodeSync {
    /// The flags of a launcher started now.
    fn launcher_args(&self) -> Vec<OsString> {
        let mut args = self.launcher_args.clone();
        args.extend(["--accel".into(), self.accel.accel.as_str().into()]);
        args
    }

    async fn run(&mut self, vmis: &[std::sync::Arc<DynamicObject>]) {
        for vmi in vmis.iter().map(|v| v.as_ref()) {
            let on = vmi.data.pointer("/status/nodeName").and_then(Value::as_str);
            let result = if on == Some(self.node.as_str()) {
                self.sync_vmi(vmi).await
            } else if let Some(ms) = MigrationState::of(vmi).filter(|ms| ms.in_flight() && ms.target_node == self.node && !kubevirt::is_deleting(&vmi.metadata)) {
                self.sync_migration_target(vmi, &ms).await
            } else {
                self.sync_elsewhere(vmi).await;
                Ok(())
            };
            if let Err(e) = result {
                match e {
                    Error::Kube(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                    e => tracing::warn!("VMI {}/{}: {e}", vmi.namespace().unwrap_or_default(), vmi.name_any()),
                }
            }
        }
        // Launchers whose VMI is gone altogether: stop their guests, then forget them.
        let known: std::collections::HashSet<&str> = vmis.iter().filter_map(|v| v.metadata.uid.as_deref()).collect();
        let orphans: Vec<String> = self.launchers.by_uid.keys().filter(|uid| !known.contains(uid.as_str())).cloned().collect();
        for uid in orphans {
            let launcher = self.launchers.by_uid.get_mut(&uid).expect("listed above");
            if launcher.alive() {
                launcher.terminate();
            } else {
                let dir = launcher.dir.clone();
                self.launchers.by_uid.remove(&uid);
                let uri = self.uri.clone();
                let _ = tokio::task::spawn_blocking(move || remove_domain(&uri, &uid)).await;
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    async fn sync_vmi(&mut self, vmi: &DynamicObject) -> Result<(), Error> {
        let uid = vmi.metadata.uid.clone().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &vmi.namespace().unwrap_or_default(), &kubevirt::vmi_resource());
        let dir = self.launchers.dir_of(&uid);
        let alive = self.launchers.by_uid.get_mut(&uid).is_some_and(|l| l.alive());
        let status = launchers::read_status(&dir);

        if kubevirt::is_deleting(&vmi.metadata) {
            return self.sync_deleted_vmi(&api, vmi, &uid, &dir, alive, status).await;
        }
        let phase = Phase::of(vmi);
        if phase.is_final() {
            if alive {
                self.launchers.by_uid.get_mut(&uid).expect("alive").terminate();
            }
            return Ok(());
        }
        // A guest that left says so in its exit even when the migration's state was
        // written off meanwhile: libvirt's word on where the guest is wins.
        let migrated = status.as_ref().and_then(|s| s.exit.as_ref()).is_some_and(|e| e.migrated());
        if let Some(ms) = MigrationState::of(vmi).filter(|ms| ms.source_node == self.node && (ms.in_flight() || migrated))
            && self.sync_migration_source(&api, vmi, &ms, alive, status.as_ref()).await?
        {
            return Ok(());
        }
        let exit = status.as_ref().and_then(|s| s.exit.clone());
        let started = self.launchers.by_uid.contains_key(&uid);
        let next = match (alive, exit, started) {
            (true, _, _) => match &status {
                Some(s) if s.phase == "Running" || s.phase == "ShuttingDown" => Some(Observed::Running(Box::new(s.clone()))),
                _ => None,
            },
            (false, Some(exit), _) if dir.join("node-shutdown").exists() => Some(Observed::Exited(LauncherExit {
                kind: "NodeShutdown".into(),
                message: format!("the guest was stopped because its node shut down ({})", exit.message),
            })),
            (false, Some(exit), _) => {
                let launcher_accel = status.as_ref().map_or("", |s| s.accel.as_str());
                match accel::fallback_cause(self.accel_choice, launcher_accel, &exit.kind, &exit.message) {
                    // The probe passed, yet KVM failed this guest: the node turns to TCG
                    // and the guest starts again at once. The VMI never saw the failure,
                    // so it does not count toward a crash loop.
                    Some(cause) => {
                        let name = format!("{}/{}", vmi.namespace().unwrap_or_default(), vmi.name_any());
                        if self.accel.accel == crate::accel::Accel::Kvm {
                            self.accel = accel::fall_back(&self.client, &self.node_dir, &self.node, &name, cause).await;
                        }
                        tracing::info!("VMI {name}: starting again under TCG");
                        let object = serde_json::to_value(vmi).expect("objects serialise");
                        self.launchers
                            .spawn(&uid, &object, &self.launcher_args(), None)
                            .map_err(|source| Error::NodeDir { path: dir.display().to_string(), source })?;
                        None
                    }
                    _ => Some(Observed::Exited(exit)),
                }
            }
            (false, None, false) if phase == Phase::Scheduled => {
                let object = serde_json::to_value(vmi).expect("objects serialise");
                self.launchers
                    .spawn(&uid, &object, &self.launcher_args(), None)
                    .map_err(|source| Error::NodeDir { path: dir.display().to_string(), source })?;
                None
            }
            (false, None, _) => {
                // The launcher is gone without a word (killed, or the machine restarted).
                // If its guest still runs, a new launcher takes it over; if not, it failed.
                let uri = self.uri.clone();
                let domain_uid = uid.clone();
                let running = tokio::task::spawn_blocking(move || domain_seen(&uri, &domain_uid).active).await.expect("no panic");
                if running {
                    tracing::info!("VMI {}/{}: its launcher is gone but the guest runs; a new launcher takes it over", vmi.namespace().unwrap_or_default(), vmi.name_any());
                    let object = serde_json::to_value(vmi).expect("objects serialise");
                    self.launchers
                        .spawn(&uid, &object, &self.launcher_args(), None)
                        .map_err(|source| Error::NodeDir { path: dir.display().to_string(), source })?;
                    None
                } else {
                    Some(Observed::Exited(LauncherExit { kind: "Crashed".into(), message: "the guest's launcher stopped unexpectedly and the guest is gone".into() }))
                }
            }
        };
        match next {
            None => Ok(()),
            Some(Observed::Running(s)) => self.report_running(&api, vmi, &dir, &s).await,
            Some(Observed::Exited(exit)) => {
                let (phase, reason) = match exit.kind.as_str() {
                    _ if exit.succeeded() => (Phase::Succeeded, "GuestStopped"),
                    // KubeVirt's (and the kubelet's) word for an image that could not be pulled.
                    "ImagePull" => (Phase::Failed, kubevirt::IMAGE_PULL_FAILED),
                    kind => (Phase::Failed, kind),
                };
                write_status(&api, vmi, phase, ready_false(vmi, reason, &exit.message)).await
            }
        }
    }

    /// A VMI being deleted: its guest stopped first (SIGTERM to its launcher), then its
    /// domain removed, how it ended recorded, and the VMI let go (its finalizer removed).
    async fn sync_deleted_vmi(
        &mut self,
        api: &Api<DynamicObject>,
        vmi: &DynamicObject,
        uid: &str,
        dir: &std::path::Path,
        alive: bool,
        status: Option<LauncherStatus>,
    ) -> Result<(), Error> {
        if alive {
            let launcher = self.launchers.by_uid.get_mut(uid).expect("alive");
            if launcher.terminated.is_none() {
                // The stop may have shortened the grace period since the launcher
                // started: it reads vmi.json again on SIGTERM.
                let object = serde_json::to_vec_pretty(vmi).expect("objects serialise");
                let _ = crate::files::write_atomically(&dir.join("vmi.json"), &object, 0o644);
            }
            launcher.terminate();
            return Ok(());
        }
        let uri = self.uri.clone();
        let domain_uid = uid.to_string();
        tokio::task::spawn_blocking(move || remove_domain(&uri, &domain_uid)).await.expect("no panic")?;
        // The guest is gone: record how it ended, then let the VMI go.
        let mut vmi = vmi.clone();
        if !Phase::of(&vmi).is_final() {
            let (phase, condition) = match status.and_then(|s| s.exit) {
                Some(exit) if !exit.succeeded() => (Phase::Failed, ready_false(&vmi, &exit.kind, &exit.message)),
                Some(exit) => (Phase::Succeeded, ready_false(&vmi, "GuestStopped", &exit.message)),
                None => (Phase::Succeeded, ready_false(&vmi, "PodTerminating", "stopped before its guest started")),
            };
            let patch = kubevirt::phase_patch(&vmi, phase, vec![condition]);
            vmi = api.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        if kubevirt::has_finalizer(&vmi.metadata, kubevirt::HANDLER_FINALIZER) {
            let finalizers: Vec<&String> = vmi.finalizers().iter().filter(|f| *f != kubevirt::HANDLER_FINALIZER).collect();
            let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": vmi.resource_version() } });
            api.patch(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        self.launchers.by_uid.remove(uid);
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

    async fn report_running(&mut self, api: &Api<DynamicObject>, vmi: &DynamicObject, dir: &std::path::Path, s: &LauncherStatus) -> Result<(), Error> {
        let console = dir.join("console.log").display().to_string();
        let ports = serde_json::to_string(&s.ports).expect("JSON serialises");
        let annotations = vmi.annotations();
        let mut vmi = std::borrow::Cow::Borrowed(vmi);
        if annotations.get(kubevirt::CONSOLE_ANNOTATION) != Some(&console) || annotations.get(kubevirt::PORTS_ANNOTATION) != Some(&ports) {
            // Guarded like the status write after it, which then builds on what this returns.
            let patch = json!({ "metadata": { "resourceVersion": vmi.resource_version(), "annotations": { kubevirt::CONSOLE_ANNOTATION: console, kubevirt::PORTS_ANNOTATION: ports } } });
            vmi = std::borrow::Cow::Owned(api.patch(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?);
        }
        let stamp = kubevirt::now();
        let peer = kubevirt::host_passthrough(&vmi.data["spec"]) && self.same_host_peer().await;
        let migratable = match migratable::check(&vmi.namespace().unwrap_or_default(), &vmi.data["spec"], &self.volumes_dir, peer) {
            Ok(()) => kubevirt::make_condition("LiveMigratable", true, "", "", kubevirt::condition(&vmi, "LiveMigratable"), &stamp),
            Err((reason, message)) => kubevirt::make_condition("LiveMigratable", false, reason, &message, kubevirt::condition(&vmi, "LiveMigratable"), &stamp),
        };
        if Phase::of(&vmi) == Phase::Running && kubevirt::condition_is_true(&vmi, "Ready") && kubevirt::condition(&vmi, "LiveMigratable") == Some(&migratable) {
            return Ok(());
        }
        let ready = kubevirt::make_condition("Ready", true, "", "", kubevirt::condition(&vmi, "Ready"), &stamp);
        let patch = kubevirt::phase_patch(&vmi, Phase::Running, vec![ready, migratable]);
        api.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }
}

impl NodeSync {
    /// Whether another node runs on this node's host (looked up at most every 10 s).
    async fn same_host_peer(&mut self) -> bool {
        if let Some((at, peer)) = self.peer
            && at.elapsed() < Duration::from_secs(10)
        {
            return peer;
        }
        let Ok(nodes) = Api::<k8s_openapi::api::core::v1::Node>::all(self.client.clone()).list(&Default::default()).await else { return false };
        let mine = nodes.items.iter().find(|n| n.name_any() == self.node).and_then(kubevirt::host_of).map(str::to_string);
        let peer = mine.is_some_and(|h| nodes.items.iter().any(|n| n.name_any() != self.node && kubevirt::host_of(n) == Some(h.as_str())));
        self.peer = Some((std::time::Instant::now(), peer));
        peer
    }
}

enum Observed {
    Running(Box<LauncherStatus>),
    Exited(LauncherExit),
}

async fn write_status(api: &Api<DynamicObject>, vmi: &DynamicObject, phase: Phase, condition: Value) -> Result<(), Error> {
    let patch = kubevirt::phase_patch(vmi, phase, vec![condition]);
    api.patch_status(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

fn ready_false(vmi: &DynamicObject, reason: &str, message: &str) -> Value {
    kubevirt::make_condition("Ready", false, reason, message, kubevirt::condition(vmi, "Ready"), &kubevirt::now())
}

/// Stop every guest of a node (the local runtime going down): each launcher gets
/// SIGTERM — an ACPI shutdown, then its grace period — and is waited for, at most
/// `timeout`. A `node-shutdown` marker tells the next handler these guests did not stop
/// by themselves, so their VMIs count as failed and run strategies restart them.
pub fn stop_guests(vmis_dir: &std::path::Path, timeout: Duration) {
    let Ok(entries) = std::fs::read_dir(vmis_dir) else { return };
    let mut waiting = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if let Some(pid) = launchers::read_pid(&dir)
            && launchers::read_status(&dir).is_none_or(|s| s.exit.is_none())
        {
            let _ = std::fs::write(dir.join("node-shutdown"), b"");
            // SAFETY: kill(2) on a launcher pid from our own VMI dir.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            waiting.push(pid);
        }
    }
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline && waiting.iter().any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()) {
        std::thread::sleep(Duration::from_millis(100));
    }
}
