//! Is KVM usable here? A `/dev/kvm` that exists is not enough: on some machines it opens
//! and then hangs. The probe boots QEMU's own firmware under KVM in a child process with a
//! hard time limit, and says KVM only when the firmware ran to its end.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How guests are run: hardware virtualisation, or QEMU's emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`, as `--accel` and `status.json` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The libvirt domain type: `kvm`, or `qemu` for TCG.
    pub fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Accel, String> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(format!("unknown accelerator `{s}`: expected kvm or tcg")),
        }
    }
}

/// The probe's default time limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// What SeaBIOS prints on its debug port once it has tried every boot device: the
/// firmware ran its whole power-on self test, so the accelerator executes guest code.
const FIRMWARE_DONE: &[&str] = &["No bootable device", "Booting from "];

/// Probe KVM with a time limit. Returns [`Accel::Kvm`] only when a guest demonstrably
/// runs under KVM within `timeout`; anything else (no `/dev/kvm`, no QEMU, an error, a
/// hang) gives [`Accel::Tcg`]. The child QEMU is killed when the time is up.
pub fn probe(timeout: Duration) -> Accel {
    probe_detailed(timeout).0
}

/// [`probe`], with a sentence saying why (for logs).
pub fn probe_detailed(timeout: Duration) -> (Accel, String) {
    if !Path::new("/dev/kvm").exists() {
        return (Accel::Tcg, "no /dev/kvm".into());
    }
    let Some(qemu) = find_qemu() else {
        return (Accel::Tcg, "qemu-system-x86_64 not found".into());
    };
    let dir = match tempdir() {
        Ok(d) => d,
        Err(e) => return (Accel::Tcg, format!("cannot make a scratch dir: {e}")),
    };
    let debug_log = dir.join("firmware.log");
    let result = run_probe(&qemu, &debug_log, timeout);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_probe(qemu: &Path, debug_log: &Path, timeout: Duration) -> (Accel, String) {
    use std::os::unix::process::CommandExt;
    let start = Instant::now();
    let mut command = Command::new(qemu);
    command
        .args(["-accel", "kvm", "-machine", "q35", "-m", "16", "-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-chardev", &format!("file,id=dbg,path={}", debug_log.display())])
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=dbg"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // A probe whose caller dies (a handler killed mid-probe) must not outlive it; the
    // calling thread waits for the probe, so it lives as long as the probe should.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (Accel::Tcg, format!("cannot start {}: {e}", qemu.display())),
    };
    loop {
        let log = std::fs::read_to_string(debug_log).unwrap_or_default();
        if FIRMWARE_DONE.iter().any(|m| log.contains(m)) {
            kill(child);
            return (Accel::Kvm, format!("the firmware ran under KVM in {} ms", start.elapsed().as_millis()));
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let err = err.lines().last().unwrap_or("").trim().to_string();
                return (Accel::Tcg, format!("QEMU with KVM exited ({status}): {err}"));
            }
            Ok(None) => {}
            Err(e) => {
                kill(child);
                return (Accel::Tcg, format!("cannot wait for QEMU: {e}"));
            }
        }
        if start.elapsed() >= timeout {
            kill(child);
            return (Accel::Tcg, format!("QEMU with KVM did not run the firmware within {} ms", timeout.as_millis()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL the child and reap it, but never wait long: a process stuck in the kernel
/// (as on a hanging /dev/kvm) may take a while to go; a thread reaps it then, so no
/// zombie stays behind.
fn kill(mut child: Child) {
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

fn find_qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
}

fn tempdir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vmform-kvm-probe-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}
