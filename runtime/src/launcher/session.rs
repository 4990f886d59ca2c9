//! The running launcher's own state, which starting, supervising and migrating a guest
//! all use: its arguments and `status.json`, its log, what QEMU logs for its guest, and
//! the libvirt connection it keeps. Nothing here calls up into [`super::supervise`] or
//! [`super::migrate`].

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::libvirt::{Connection, Guest, LibvirtError};
use crate::Error;

use super::{LauncherArgs, LauncherExit, LauncherPhase, Status};

/// How often the domain's state is read.
pub const POLL: Duration = Duration::from_millis(100);
/// The longest wait between reconnection attempts while libvirtd is away.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long the launcher waits for libvirtd when it starts, and to clean up at the end.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

pub fn log(msg: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{now} launcher: {msg}");
}

pub struct Launcher {
    pub args: LauncherArgs,
    pub status: Status,
    pub term: Arc<AtomicBool>,
    /// The ports of an earlier launcher of this VMI (from its status.json), kept when
    /// attaching to the guest it started.
    pub earlier_ports: Vec<super::domain::ForwardedPort>,
    /// What QEMU logs for this guest from its start on.
    pub qemu_log: QemuLog,
}

/// The domain's QEMU log (libvirt appends to it at every start), read from where this
/// launcher's run of the guest began: it says why QEMU stopped or died.
#[derive(Default)]
pub struct QemuLog {
    path: std::path::PathBuf,
    from: u64,
}

impl QemuLog {
    pub fn at_end(path: std::path::PathBuf) -> QemuLog {
        let from = std::fs::metadata(&path).map_or(0, |m| m.len());
        QemuLog { path, from }
    }

    /// The line in which QEMU says KVM failed the guest, if it did.
    pub fn kvm_failure(&self) -> Option<String> {
        use std::io::{Read, Seek};
        let mut file = std::fs::File::open(&self.path).ok()?;
        file.seek(std::io::SeekFrom::Start(self.from)).ok()?;
        let mut text = String::new();
        file.take(1 << 20).read_to_string(&mut text).ok()?;
        crate::accel::kvm_failure(&text).map(str::to_string)
    }
}

impl Launcher {
    /// A launcher that has done nothing yet: `Starting`, no domain.
    pub fn new(args: LauncherArgs, term: Arc<AtomicBool>) -> Launcher {
        Launcher {
            status: Status {
                phase: LauncherPhase::Starting,
                domain: String::new(),
                accel: args.accel.as_str().into(),
                message: String::new(),
                ports: Vec::new(),
                exit: None,
                migration: None,
                updated: String::new(),
            },
            earlier_ports: Vec::new(),
            qemu_log: QemuLog::default(),
            args,
            term,
        }
    }

    pub fn set(&mut self, phase: LauncherPhase, message: impl Into<String>) {
        self.status.phase = phase;
        self.status.message = message.into();
        log(&format!("{:?}: {}", phase, self.status.message));
        if let Err(e) = super::write_status(&self.args.vmi_dir, &mut self.status) {
            log(&format!("cannot write status.json: {e}"));
        }
    }

    pub fn finish(&mut self, exit: LauncherExit) -> LauncherExit {
        self.status.exit = Some(exit.clone());
        self.set(LauncherPhase::Stopped, exit.message.clone());
        log(&format!("exit {} ({})", exit.kind.as_str(), exit.code()));
        exit
    }
}

/// The libvirt connection, reopened with back-off when libvirtd goes away (the guest's
/// QEMU keeps running meanwhile; a restarted libvirtd finds it again).
pub struct Conn {
    uri: String,
    conn: Option<Connection>,
    backoff: Duration,
    next_try: Instant,
}

impl Conn {
    /// The connection, reconnecting if it is time to try.
    pub fn get(&mut self) -> Option<&Connection> {
        if self.conn.is_none() && Instant::now() >= self.next_try {
            match Connection::open(&self.uri) {
                Ok(c) => {
                    log("reconnected to libvirtd");
                    self.conn = Some(c);
                    self.backoff = POLL;
                }
                Err(_) => {
                    self.next_try = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.conn.as_ref()
    }

    /// The domain of UUID `uuid`, if the connection is up and libvirt has it.
    pub fn guest(&mut self, uuid: &str) -> Option<Guest> {
        self.get().and_then(|c| c.guest_by_uuid(uuid).ok())
    }

    /// After an error: was it the connection? Then drop it (closing it), to reconnect.
    pub fn check(&mut self, e: &LibvirtError) -> bool {
        let alive = self.conn.as_ref().is_some_and(Connection::is_alive);
        if !alive {
            log(&format!("lost libvirtd ({}); reconnecting", e.message.trim()));
            self.conn = None;
            self.next_try = Instant::now() + self.backoff;
        }
        !alive
    }
}

/// The connection to libvirtd at `uri`, waiting for it a while (it may be starting), unless
/// SIGTERM came.
pub fn connect_patiently(uri: &str, term: &AtomicBool) -> Result<Conn, Error> {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    let mut backoff = POLL;
    loop {
        match Connection::open(uri) {
            Ok(c) => return Ok(Conn { uri: uri.to_string(), conn: Some(c), backoff: POLL, next_try: Instant::now() }),
            Err(e) if Instant::now() >= deadline || term.load(Ordering::SeqCst) => {
                return Err(Error::Launcher(format!("cannot connect to libvirt at {uri}: {}", e.message)));
            }
            Err(_) => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
