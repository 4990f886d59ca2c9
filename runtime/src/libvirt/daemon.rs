//! A private libvirtd for one node: its own config, state, sockets and logs under
//! `<node dir>/libvirt/`, bind-mounted over the standard libvirt paths inside a mount
//! namespace of its own, so several "nodes" run side by side on one machine without
//! touching the host's libvirt (specs/runtime-environment.md).
//!
//! Plain code: nothing here links libvirt. The daemon answers on
//! `<node dir>/libvirt/run/libvirt-sock`; [`NodeDaemon::uri`] is the URI to give libvirt
//! clients.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The standard libvirt paths a node's daemon sees its own dirs at (dir under
/// `<node dir>/libvirt/`, mount point).
const MOUNTS: [(&str, &str); 5] = [
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
];

/// Where QEMU logs of a node's domains are (`<domain>.log`, appended at every start): its
/// own libvirtd's log dir, else the host libvirtd's.
pub fn qemu_log_dir(node_dir: &Path) -> PathBuf {
    let own = node_dir.join("libvirt/log/qemu");
    if node_dir.join("libvirt").is_dir() { own } else { PathBuf::from("/var/log/libvirt/qemu") }
}

/// A unix socket path must fit `sun_path` (108 bytes, with the terminating NUL).
const SUN_PATH_MAX: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("libvirtd is not installed (looked for {looked_for}): install libvirt-daemon-system")]
    NotInstalled { looked_for: String },
    #[error(
        "cannot start a private libvirtd: {what}: {source} (it needs root, or at least CAP_SYS_ADMIN, for a mount namespace and bind mounts)"
    )]
    NotPermitted { what: String, source: io::Error },
    #[error(
        "libvirtd's socket path {path} is {len} bytes long, over the {SUN_PATH_MAX} a unix socket allows: use a shorter data dir"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("libvirtd exited ({status}) before its socket answered; the end of {log}:\n{tail}")]
    Exited { status: String, log: PathBuf, tail: String },
    #[error("libvirtd's socket {socket} did not answer within {secs} s; the end of {log}:\n{tail}")]
    SocketTimeout { socket: PathBuf, secs: u64, log: PathBuf, tail: String },
    #[error("libvirtd (pid {pid}) did not stop, even after SIGKILL")]
    WontStop { pid: i32 },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// How to run a node's daemon. Built with [`DaemonConfig::new`]; the fields are public so
/// callers can adjust what they need (issue 7 adds a network namespace and a TCP listen
/// address here).
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The node's dir: the daemon's files go to `<node_dir>/libvirt/`.
    pub node_dir: PathBuf,
    /// libvirtd.conf `host_uuid`: distinct per node (migration refuses "the same host").
    pub host_uuid: uuid::Uuid,
    /// The daemon binary: a bare name is looked up in PATH, /usr/sbin and /sbin.
    pub libvirtd: PathBuf,
    /// Where the config is seeded from the first time (the host's /etc/libvirt).
    pub etc_template: PathBuf,
    /// How long to wait for the socket to answer.
    pub start_timeout: Duration,
    /// How long `stop()` waits after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// A network namespace (`/run/netns/<name>`) to run the daemon in, entered before
    /// its mount namespace is made (`vmform up --nodes N`).
    pub netns: Option<String>,
    /// The node's address: libvirtd listens on TCP there (no authentication: it is only
    /// reachable on the nodes' bridge) and QEMU takes migrations there.
    pub listen_address: Option<Ipv4Addr>,
}

/// The file in a node dir that says which network namespace and address the node's
/// daemon has (written by `vmform up --nodes N`; absent for a node in the host's
/// network): lines `netns NAME` and `address IPV4`. [`DaemonConfig::new`] reads it, so
/// whoever (re)starts the daemon starts it in the node's network.
pub const NODE_NETWORK_FILE: &str = "node-network";

/// Write (`Some`) or remove (`None`) a node dir's [`NODE_NETWORK_FILE`].
pub fn write_node_network(node_dir: &Path, network: Option<(&str, Ipv4Addr)>) -> io::Result<()> {
    let path = node_dir.join(NODE_NETWORK_FILE);
    match network {
        Some((netns, address)) => crate::files::write_atomically(&path, format!("netns {netns}\naddress {address}\n").as_bytes(), 0o644),
        None => match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// A node dir's network namespace and address, from its [`NODE_NETWORK_FILE`].
pub fn read_node_network(node_dir: &Path) -> (Option<String>, Option<Ipv4Addr>) {
    let text = fs::read_to_string(node_dir.join(NODE_NETWORK_FILE)).unwrap_or_default();
    let mut netns = None;
    let mut address = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("netns", v)) => netns = Some(v.trim().to_string()),
            Some(("address", v)) => address = v.trim().parse().ok(),
            _ => {}
        }
    }
    (netns, address)
}

impl DaemonConfig {
    /// The daemon of `node_dir`, in the network its [`NODE_NETWORK_FILE`] names (if any).
    pub fn new(node_dir: &Path, host_uuid: uuid::Uuid) -> DaemonConfig {
        let (netns, listen_address) = read_node_network(node_dir);
        DaemonConfig {
            node_dir: node_dir.to_path_buf(),
            host_uuid,
            libvirtd: PathBuf::from("libvirtd"),
            etc_template: PathBuf::from("/etc/libvirt"),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(15),
            netns,
            listen_address,
        }
    }

    /// `<node_dir>/libvirt`.
    pub fn base(&self) -> PathBuf {
        self.node_dir.join("libvirt")
    }
}

/// The libvirt URI of a node's private daemon.
pub fn uri_for(node_dir: &Path) -> String {
    format!("qemu+unix:///system?socket={}", socket_for(node_dir).display())
}

/// The read-write socket of a node's private daemon.
pub fn socket_for(node_dir: &Path) -> PathBuf {
    node_dir.join("libvirt/run/libvirt-sock")
}

/// A node's running private libvirtd. Dropping it leaves the daemon running (it outlives
/// the handler that started it); [`NodeDaemon::stop`] stops it.
#[derive(Debug)]
pub struct NodeDaemon {
    config: DaemonConfig,
    pid: i32,
    adopted: bool,
}

impl NodeDaemon {
    /// Start the node's daemon, or adopt the one already running for `node_dir` (its pid
    /// file names a live libvirtd whose socket answers).
    pub fn ensure_running(node_dir: &Path, host_uuid: uuid::Uuid) -> Result<NodeDaemon, DaemonError> {
        NodeDaemon::ensure_running_with(DaemonConfig::new(node_dir, host_uuid))
    }

    pub fn ensure_running_with(config: DaemonConfig) -> Result<NodeDaemon, DaemonError> {
        let socket = socket_for(&config.node_dir);
        let len = socket.as_os_str().len();
        if len > SUN_PATH_MAX {
            return Err(DaemonError::SocketPathTooLong { path: socket, len });
        }
        let base = config.base();
        for (dir, _) in MOUNTS {
            fs::create_dir_all(base.join(dir)).map_err(io_err(format!("cannot create {}", base.join(dir).display())))?;
        }
        // One caller at a time per node: two handlers must not start two daemons.
        let _lock = Lock::take(&base.join(".lock"))?;

        if let Some(pid) = read_pid(&pid_file(&config)).filter(|pid| is_libvirtd(*pid)) {
            wait_for_socket(&config, pid)?;
            return Ok(NodeDaemon { config, pid, adopted: true });
        }

        let libvirtd = find_libvirtd(&config.libvirtd)?;
        seed_config(&config)?;
        for sock in ["libvirt-sock", "libvirt-sock-ro", "libvirt-admin-sock"] {
            let _ = fs::remove_file(base.join("run").join(sock));
        }
        let _ = fs::remove_file(pid_file(&config));
        for (_, target) in MOUNTS {
            fs::create_dir_all(target).map_err(io_err(format!("cannot create the mount point {target}")))?;
        }

        let stderr_path = base.join("log/libvirtd.stderr");
        let stderr = fs::File::create(&stderr_path).map_err(io_err(format!("cannot create {}", stderr_path.display())))?;
        let mounts = MOUNTS
            .iter()
            .map(|(dir, target)| Ok((cstring(&base.join(dir))?, cstring(Path::new(target))?)))
            .collect::<Result<Vec<_>, DaemonError>>()?;
        // The namespace is opened before the fork; the child enters it first.
        let netns = match &config.netns {
            Some(name) => {
                let path = Path::new("/run/netns").join(name);
                Some(fs::File::open(&path).map_err(io_err(format!("cannot open the network namespace {}", path.display())))?)
            }
            None => None,
        };
        let mut command = Command::new(&libvirtd);
        if config.listen_address.is_some() {
            command.arg("--listen");
        }
        command
            .arg("-d")
            .arg("-p")
            .arg(pid_file(&config))
            .arg("-f")
            .arg(base.join("etc/libvirtd.conf"))
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().map_err(io_err("cannot dup a file"))?)
            .stderr(stderr)
            .env_remove("LIBVIRT_DEFAULT_URI");
        // SAFETY: the closure runs in the forked child before exec and only makes raw
        // system calls on data prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                if let Some(ns) = &netns {
                    use std::os::fd::AsRawFd;
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                enter_private_mounts(&mounts)
            });
        }
        let mut child = command.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => DaemonError::NotPermitted { what: "unshare/mount".into(), source: e },
            io::ErrorKind::NotFound => DaemonError::NotInstalled { looked_for: libvirtd.display().to_string() },
            _ if e.raw_os_error() == Some(libc::EPERM) => {
                DaemonError::NotPermitted { what: "unshare/mount".into(), source: e }
            }
            _ => DaemonError::Io { what: format!("cannot start {}", libvirtd.display()), source: e },
        })?;
        // With -d the foreground process returns once the daemon has initialised (or
        // failed to).
        let deadline = Instant::now() + config.start_timeout;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io_err("cannot wait for libvirtd"))? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(timeout_error(&config));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            return Err(exited_error(&config, status.to_string()));
        }
        let Some(pid) = read_pid(&pid_file(&config)) else {
            return Err(exited_error(&config, "no pid file".into()));
        };
        wait_for_socket(&config, pid)?;
        Ok(NodeDaemon { config, pid, adopted: false })
    }

    /// `qemu+unix:///system?socket=<node_dir>/libvirt/run/libvirt-sock`.
    pub fn uri(&self) -> String {
        uri_for(&self.config.node_dir)
    }

    pub fn socket_path(&self) -> PathBuf {
        socket_for(&self.config.node_dir)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the daemon was already running (and adopted) rather than started.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The daemon's own log.
    pub fn log_path(&self) -> PathBuf {
        log_file(&self.config)
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    /// Whether the daemon process is still alive.
    pub fn is_running(&self) -> bool {
        is_alive(self.pid)
    }

    /// Stop the daemon: SIGTERM, wait, SIGKILL. Its mounts live only in its own mount
    /// namespace, so none stay behind on the host. QEMU processes it started keep running
    /// (as with any libvirtd restart).
    pub fn stop(self) -> Result<(), DaemonError> {
        let pid = self.pid;
        if is_alive(pid) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
            if !wait_dead(pid, self.config.stop_timeout) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                if !wait_dead(pid, Duration::from_secs(5)) {
                    return Err(DaemonError::WontStop { pid });
                }
            }
        }
        let _ = fs::remove_file(pid_file(&self.config));
        Ok(())
    }
}

fn pid_file(config: &DaemonConfig) -> PathBuf {
    config.base().join("libvirtd.pid")
}

fn log_file(config: &DaemonConfig) -> PathBuf {
    config.base().join("log/libvirtd.log")
}

fn cstring(p: &Path) -> Result<CString, DaemonError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| DaemonError::Io {
        what: format!("path {} has a NUL byte", p.display()),
        source: io::ErrorKind::InvalidInput.into(),
    })
}

/// In the child, before exec: a mount namespace of its own, private propagation (so no
/// mount leaks back to the host), then the node's dirs over the standard paths.
fn enter_private_mounts(mounts: &[(CString, CString)]) -> io::Result<()> {
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(io::Error::last_os_error());
        }
        let root = c"/";
        if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
            return Err(io::Error::last_os_error());
        }
        for (source, target) in mounts {
            if libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

fn find_libvirtd(name: &Path) -> Result<PathBuf, DaemonError> {
    if name.components().count() > 1 {
        return if name.is_file() {
            Ok(name.to_path_buf())
        } else {
            Err(DaemonError::NotInstalled { looked_for: name.display().to_string() })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| DaemonError::NotInstalled { looked_for: format!("{} in PATH and /usr/sbin", name.display()) })
}

/// The node's config: the host's /etc/libvirt copied the first time, then our
/// libvirtd.conf and qemu.conf written every time, and the default network's autostart
/// removed (each node would otherwise start a dnsmasq on the same bridge).
fn seed_config(config: &DaemonConfig) -> Result<(), DaemonError> {
    let etc = config.base().join("etc");
    let seeded = etc.join(".vmform-seeded");
    if !seeded.exists() && config.etc_template.is_dir() {
        copy_tree(&config.etc_template, &etc).map_err(io_err(format!(
            "cannot copy {} to {}",
            config.etc_template.display(),
            etc.display()
        )))?;
        fs::write(&seeded, b"").map_err(io_err(format!("cannot write {}", seeded.display())))?;
    }
    let _ = fs::remove_file(etc.join("qemu/networks/autostart/default.xml"));
    let write = |name: &str, text: String| {
        let path = etc.join(name);
        crate::files::write_atomically(&path, text.as_bytes(), 0o644).map_err(io_err(format!("cannot write {}", path.display())))
    };
    write("libvirtd.conf", libvirtd_conf(config))?;
    write("qemu.conf", qemu_conf(config))?;
    Ok(())
}

/// libvirtd.conf of a node: unix sockets, no authentication (the socket is 0700 and
/// root's), a log file in the node's log dir; with a listen address also TCP there,
/// without authentication (the nodes' bridge is private to this machine).
pub fn libvirtd_conf(config: &DaemonConfig) -> String {
    let tcp = match config.listen_address {
        Some(a) => format!("listen_tcp = 1\nlisten_addr = \"{a}\"\nauth_tcp = \"none\"\n"),
        None => "listen_tcp = 0\n".to_string(),
    };
    format!(
        "# Written by vmform for the node at {node}.\n\
         host_uuid = \"{uuid}\"\n\
         unix_sock_group = \"root\"\n\
         unix_sock_rw_perms = \"0700\"\n\
         unix_sock_ro_perms = \"0700\"\n\
         unix_sock_admin_perms = \"0700\"\n\
         auth_unix_rw = \"none\"\n\
         auth_unix_ro = \"none\"\n\
         listen_tls = 0\n\
         {tcp}\
         log_level = 3\n\
         log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
        node = config.node_dir.display(),
        uuid = config.host_uuid,
    )
}

/// qemu.conf of a node: QEMU as root without ownership changes, security drivers,
/// cgroups, namespaces or virtlogd (specs/runtime-environment.md).
pub fn qemu_conf(config: &DaemonConfig) -> String {
    let migration = match config.listen_address {
        Some(a) => format!("migration_address = \"{a}\"\nmigration_host = \"{a}\"\n"),
        None => String::new(),
    };
    format!(
        "# Written by vmform for the node at {node}.\n\
         user = \"root\"\n\
         group = \"root\"\n\
         dynamic_ownership = 0\n\
         remember_owner = 0\n\
         security_driver = \"none\"\n\
         cgroup_controllers = [ ]\n\
         namespaces = [ ]\n\
         stdio_handler = \"file\"\n\
         {migration}",
        node = config.node_dir.display(),
    )
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(entry.path())?;
            let _ = fs::remove_file(&target);
            std::os::unix::fs::symlink(link, &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok().filter(|p| *p > 0)
}

/// Alive and not a zombie.
fn is_alive(pid: i32) -> bool {
    if unsafe { libc::kill(pid, 0) } != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])).unwrap_or(true),
        Err(_) => false,
    }
}

fn is_libvirtd(pid: i32) -> bool {
    is_alive(pid) && fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "libvirtd")
}

fn wait_dead(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn wait_for_socket(config: &DaemonConfig, pid: i32) -> Result<(), DaemonError> {
    let socket = socket_for(&config.node_dir);
    let deadline = Instant::now() + config.start_timeout;
    loop {
        if UnixStream::connect(&socket).is_ok() {
            return Ok(());
        }
        if !is_alive(pid) {
            return Err(exited_error(config, format!("pid {pid} is gone")));
        }
        if Instant::now() > deadline {
            return Err(timeout_error(config));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn exited_error(config: &DaemonConfig, status: String) -> DaemonError {
    let (log, tail) = log_tail(config);
    DaemonError::Exited { status, log, tail }
}

fn timeout_error(config: &DaemonConfig) -> DaemonError {
    let (log, tail) = log_tail(config);
    DaemonError::SocketTimeout { socket: socket_for(&config.node_dir), secs: config.start_timeout.as_secs(), log, tail }
}

/// The last lines of the daemon's log, or of its stderr when the log says nothing.
fn log_tail(config: &DaemonConfig) -> (PathBuf, String) {
    let log = log_file(config);
    let stderr = config.base().join("log/libvirtd.stderr");
    for path in [&stderr, &log] {
        let tail = tail_lines(path, 15);
        if !tail.trim().is_empty() {
            return (path.clone(), tail);
        }
    }
    (log, "(empty)".into())
}

pub(crate) fn tail_lines(path: &Path, lines: usize) -> String {
    let Ok(mut file) = fs::File::open(path) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An exclusive flock, released on drop.
struct Lock {
    _file: fs::File,
}

impl Lock {
    fn take(path: &Path) -> Result<Lock, DaemonError> {
        use std::os::fd::AsRawFd;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(DaemonError::Io { what: format!("cannot lock {}", path.display()), source: io::Error::last_os_error() });
        }
        Ok(Lock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_and_socket() {
        assert_eq!(uri_for(Path::new("/d/nodes/n1")), "qemu+unix:///system?socket=/d/nodes/n1/libvirt/run/libvirt-sock");
    }

    #[test]
    fn socket_path_too_long_is_refused() {
        let long = PathBuf::from("/tmp").join("x".repeat(100));
        let err = NodeDaemon::ensure_running(&long, uuid::Uuid::new_v4()).unwrap_err();
        assert!(matches!(err, DaemonError::SocketPathTooLong { .. }), "{err}");
        assert!(err.to_string().contains("shorter data dir"), "{err}");
        assert!(!long.exists(), "nothing is created for a refused dir");
    }

    #[test]
    fn missing_libvirtd_names_the_package() {
        let dir = std::env::temp_dir().join(format!("vmform-daemon-test-{}", uuid::Uuid::new_v4().simple()));
        let mut config = DaemonConfig::new(&dir, uuid::Uuid::new_v4());
        config.libvirtd = PathBuf::from("no-such-libvirtd-binary");
        let err = NodeDaemon::ensure_running_with(config).unwrap_err();
        assert!(err.to_string().contains("install libvirt-daemon-system"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A daemon that fails at start: the error carries the end of what it said.
    #[test]
    fn a_daemon_that_exits_shows_its_log() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = tempfile::Builder::new().prefix("vmf-daemon-").tempdir_in("/tmp").unwrap();
        let fake = dir.path().join("fake-libvirtd");
        fs::write(&fake, "#!/bin/sh\necho 'error : cannot parse config: bad setting' >&2\nexit 6\n").unwrap();
        fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mut config = DaemonConfig::new(&dir.path().join("node"), uuid::Uuid::new_v4());
        config.libvirtd = fake;
        let err = NodeDaemon::ensure_running_with(config).unwrap_err();
        assert!(matches!(err, DaemonError::Exited { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("exit status: 6") && text.contains("cannot parse config: bad setting"), "{text}");
        // The node's config was seeded and written.
        let etc = dir.path().join("node/libvirt/etc");
        assert!(fs::read_to_string(etc.join("qemu.conf")).unwrap().contains("security_driver = \"none\""));
        assert!(!etc.join("qemu/networks/autostart/default.xml").exists());
    }

    #[test]
    fn config_files_carry_the_settings() {
        let config = DaemonConfig::new(Path::new("/d/n1"), uuid::Uuid::nil());
        let l = libvirtd_conf(&config);
        assert!(l.contains("host_uuid = \"00000000-0000-0000-0000-000000000000\""));
        assert!(l.contains("auth_unix_rw = \"none\""));
        let q = qemu_conf(&config);
        for s in ["security_driver = \"none\"", "stdio_handler = \"file\"", "dynamic_ownership = 0", "namespaces = [ ]"] {
            assert!(q.contains(s), "{s}");
        }
        assert!(l.contains("listen_tcp = 0") && !q.contains("migration_address"));
    }

    #[test]
    fn a_node_with_an_address_listens_on_tcp_there() {
        let dir = tempfile::tempdir().unwrap();
        write_node_network(dir.path(), Some(("vmform-x-0", Ipv4Addr::new(10, 231, 7, 1)))).unwrap();
        let config = DaemonConfig::new(dir.path(), uuid::Uuid::nil());
        assert_eq!(config.netns.as_deref(), Some("vmform-x-0"));
        let l = libvirtd_conf(&config);
        for s in ["listen_tcp = 1\n", "listen_addr = \"10.231.7.1\"", "auth_tcp = \"none\""] {
            assert!(l.contains(s), "{s} in {l}");
        }
        let q = qemu_conf(&config);
        assert!(q.contains("migration_address = \"10.231.7.1\"") && q.contains("migration_host = \"10.231.7.1\""), "{q}");
        write_node_network(dir.path(), None).unwrap();
        assert_eq!(DaemonConfig::new(dir.path(), uuid::Uuid::nil()).netns, None);
    }
}
