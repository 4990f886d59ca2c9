//! The launchers of one node, as the handler sees them: spawned in sessions of their own
//! (so a handler restart never stops them), found again from their VMI dirs after a
//! restart, and read through the files of specs/runtime-contract.md.

use serde::Deserialize;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `status.json`, as the launcher writes it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct LauncherStatus {
    pub phase: String,
    pub domain: String,
    pub accel: String,
    pub message: String,
    pub ports: Vec<serde_json::Value>,
    pub exit: Option<LauncherExit>,
    pub migration: Option<crate::launcher::MigrationReport>,
}

impl LauncherStatus {
    /// The launcher's report on the migration `uid`, if it took part in it.
    pub fn migration(&self, uid: &str) -> Option<&crate::launcher::MigrationReport> {
        self.migration.as_ref().filter(|m| m.uid == uid)
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct LauncherExit {
    /// Shutdown, ForcedOff, Crashed, Failed or Migrated.
    pub kind: String,
    pub message: String,
}

impl LauncherExit {
    /// Shutdown and ForcedOff end a run as asked; Crashed and Failed are failures.
    pub fn succeeded(&self) -> bool {
        matches!(self.kind.as_str(), "Shutdown" | "ForcedOff")
    }
    /// The guest left for another node.
    pub fn migrated(&self) -> bool {
        self.kind == "Migrated"
    }
}

pub struct Launcher {
    pub dir: PathBuf,
    pid: Option<i32>,
    child: Option<std::process::Child>,
    pub terminated: Option<Instant>,
    /// The migration a receiving launcher was started for (`--incoming`).
    pub incoming: Option<String>,
}

impl Launcher {
    /// Whether the launcher process still runs (reaping it if it is our child).
    pub fn alive(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            return matches!(child.try_wait(), Ok(None));
        }
        match self.pid {
            Some(pid) => process_runs(pid, &self.dir),
            None => false,
        }
    }

    /// Ask the launcher to stop its guest (it forwards this as an ACPI shutdown).
    pub fn terminate(&mut self) {
        if self.terminated.is_none() {
            if let Some(pid) = self.pid {
                // SAFETY: kill(2) with a pid we started or found in our own VMI dir.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            self.terminated = Some(Instant::now());
        }
    }
}

/// Whether `pid` runs and is the launcher of `dir` (a recycled pid is not).
fn process_runs(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    if !crate::libvirt::reaper::alive(pid) {
        return false;
    }
    let dir = dir.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == dir)
}

pub fn read_status(dir: &Path) -> Option<LauncherStatus> {
    serde_json::from_slice(&std::fs::read(dir.join("status.json")).ok()?).ok()
}

pub fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("launcher.pid")).ok()?.trim().parse().ok()
}

/// The launchers of a node, by VMI uid.
pub struct Launchers {
    pub vmis_dir: PathBuf,
    command: Vec<OsString>,
    pub by_uid: HashMap<String, Launcher>,
}

impl Launchers {
    /// Find the launchers an earlier handler left: every VMI dir, with its process if
    /// it still runs.
    pub fn adopt(vmis_dir: PathBuf, command: Vec<OsString>) -> std::io::Result<Launchers> {
        std::fs::create_dir_all(&vmis_dir)?;
        let mut by_uid = HashMap::new();
        for entry in std::fs::read_dir(&vmis_dir)? {
            let entry = entry?;
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            let uid = entry.file_name().to_string_lossy().into_owned();
            let pid = read_pid(&dir).filter(|pid| process_runs(*pid, &dir));
            let incoming = read_status(&dir).and_then(|s| s.migration).filter(|m| m.role == crate::launcher::Role::Target).map(|m| m.uid);
            by_uid.insert(uid, Launcher { dir, pid, child: None, terminated: None, incoming });
        }
        Ok(Launchers { vmis_dir, command, by_uid })
    }

    pub fn dir_of(&self, uid: &str) -> PathBuf {
        self.vmis_dir.join(uid)
    }

    /// Start a launcher for a VMI: write `vmi.json`, spawn it in a new session with its
    /// output in `launcher.log`. `incoming`: a receiving launcher for that migration.
    pub fn spawn(&mut self, uid: &str, vmi: &serde_json::Value, args: &[OsString], incoming: Option<&str>) -> std::io::Result<()> {
        use std::os::unix::process::CommandExt;
        let dir = self.dir_of(uid);
        std::fs::create_dir_all(&dir)?;
        crate::files::write_atomically(&dir.join("vmi.json"), &serde_json::to_vec_pretty(vmi).expect("JSON serialises"), 0o644)?;
        // A finished earlier launcher's status would be read as this one's outcome; an
        // unfinished one's stays, for a replacement that takes its guest over (its ports).
        if read_status(&dir).is_some_and(|s| s.exit.is_some()) {
            let _ = std::fs::remove_file(dir.join("status.json"));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("launcher.log"))?;
        let mut command = std::process::Command::new(&self.command[0]);
        command.args(&self.command[1..]).arg("--vmi-dir").arg(&dir).args(args);
        if let Some(migration) = incoming {
            command.arg("--incoming").arg(migration);
            // An earlier migration's request must not reach this launcher.
            let _ = std::fs::remove_file(dir.join(crate::launcher::MIGRATE_FILE));
            let _ = std::fs::remove_file(dir.join(crate::launcher::MIGRATE_ABORT_FILE));
        }
        command.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // Invariant: a handler restart never stops a running guest. The launcher gets a
        // session of its own and no pipe to the handler, so neither a signal to the
        // handler's group nor its death reaches it.
        // SAFETY: setsid is async-signal-safe; it detaches the launcher from the
        // handler's session and process group, so signals to the handler miss it.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pid = child.id() as i32;
        self.by_uid.insert(uid.to_string(), Launcher { dir, pid: Some(pid), child: Some(child), terminated: None, incoming: incoming.map(str::to_string) });
        Ok(())
    }
}
