//! How guests are accelerated on a node: KVM or QEMU's emulator (TCG), and why.
//!
//! Hosts differ: `/dev/kvm` may be missing, may hang, may work, or may half-work (QEMU's
//! firmware runs under KVM, a 64-bit guest with the guests' CPU model dies with an MSR
//! assertion or "KVM internal error"). So KVM is chosen only after [`probe`] has run a
//! guest that reaches 64-bit long mode under the very domain definition guests get, and
//! a guest that still fails under KVM with a KVM-level error ([`kvm_failure`]) turns its
//! node to TCG (the handler's fallback).

mod probe;
pub use probe::{probe, ProbeTarget};

use std::time::Duration;

/// How guests are run: hardware virtualisation, or QEMU's emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`, as `--accel`, the Node and `status.json` spell it.
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
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Accel, crate::Error> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(crate::Error::Usage(format!("unknown accelerator `{s}`: expected kvm or tcg"))),
        }
    }
}

/// What `vmform up --accel` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM when the probe proves guests run under it, else TCG; a guest that fails
    /// under KVM turns the node to TCG.
    #[default]
    Auto,
    /// KVM or nothing: a node whose probe fails takes no guests, and says why.
    Kvm,
    /// Always TCG (KubeVirt's `useEmulation`); no probe.
    Tcg,
}

impl AccelChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for AccelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AccelChoice {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<AccelChoice, crate::Error> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => Err(crate::Error::Usage(format!("unknown accelerator `{s}`: expected auto, kvm or tcg"))),
        }
    }
}

/// The accelerator a node runs guests with, and a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub accel: Accel,
    pub reason: String,
}

impl Verdict {
    pub fn new(accel: Accel, reason: impl Into<String>) -> Verdict {
        Verdict { accel, reason: reason.into() }
    }
}

/// The probe's default time limit. Generous: on a slow nested KVM the firmware alone
/// takes over 3 s, and a working KVM must never lose to the clock. Only a hanging
/// `/dev/kvm` waits it out.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The probe's guest: a boot sector that enters 64-bit long mode (`probe-guest.S`).
pub const PROBE_GUEST: &[u8] = include_bytes!("probe-guest.bin");
/// What the probe's guest writes on COM1 in real mode, then in long mode.
pub const PROBE_REAL_MODE: &str = "VMFORM-ACCEL-PROBE REAL-MODE";
pub const PROBE_LONG_MODE: &str = "VMFORM-ACCEL-PROBE LONG-MODE";

/// What QEMU, KVM and libvirt say when the accelerator (not the guest, its disks or its
/// configuration) is what failed. Matched case-insensitively, anywhere in a line.
const KVM_FAILURES: &[&str] = &[
    // QEMU setting the vCPU's MSRs at reset (IA32_ARCH_CAPABILITIES on nested KVM).
    "failed to set msr",
    "kvm_buf_set_msrs",
    // KVM could not emulate an instruction, or entering the guest failed.
    "kvm internal error",
    "kvm run failed",
    "error: kvm_run",
    "kvm_run failed",
    "kvm: entry failed",
    "kvm_init_vcpu failed",
    "kvm_create_vm",
    "failed to initialize kvm",
    "could not access kvm kernel module",
    "kvm version too old",
    "kvm version not supported",
    "kvm is not available",
    "kvm not supported",
    // libvirt refusing a KVM domain on a host whose QEMU has no KVM.
    "domain requires kvm, but it is not available",
    "domaintype=kvm",
];

/// The line of `message` that shows KVM itself failed, if any (QEMU's stderr as libvirt
/// relays it, or the domain's log), without the prefixes QEMU and libvirt put before it.
pub fn kvm_failure(message: &str) -> Option<&str> {
    const QEMU: &str = "qemu-system-x86_64: ";
    let line = message.lines().map(str::trim).find(|line| is_kvm_failure(line))?;
    Some(match line.rfind(QEMU).map(|i| line[i + QEMU.len()..].trim()) {
        Some(own) if is_kvm_failure(own) => own,
        _ => line,
    })
}

fn is_kvm_failure(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    KVM_FAILURES.iter().any(|pattern| lower.contains(pattern))
}

/// Node annotations that say which accelerator the node runs guests with, and why.
pub const ACCEL_ANNOTATION: &str = "vmform.io/accel";
pub const ACCEL_REASON_ANNOTATION: &str = "vmform.io/accel-reason";
/// What the node was asked for (`--accel`).
pub const ACCEL_CHOICE_ANNOTATION: &str = "vmform.io/accel-choice";

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as QEMU 7.2 and libvirt 9.0 printed them on real hosts (the half-working
    /// nested KVM of shared/notes/kvm-on-these-machines.md, and a host without KVM).
    #[test]
    fn kvm_failures_are_told_from_other_failures() {
        let msr = "internal error: qemu unexpectedly closed the monitor: 2026-12-04T10:00:01.123456Z qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n\
                   qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.";
        assert_eq!(kvm_failure(msr), Some("error: failed to set MSR 0x10a to 0x69"));
        let internal = "KVM internal error. Suberror: 1\nextra data[0]: 0x0000000000000001\nRAX=0000000000000001 RBX=0000000000000000";
        assert_eq!(kvm_failure(internal), Some("KVM internal error. Suberror: 1"));
        let run = "error: kvm run failed Bad address\nRAX=0000000000000000";
        assert_eq!(kvm_failure(run), Some("error: kvm run failed Bad address"));
        let no_module = "internal error: process exited while connecting to monitor: Could not access KVM kernel module: No such file or directory\nqemu-system-x86_64: failed to initialize kvm: No such file or directory";
        assert_eq!(kvm_failure(no_module), Some("internal error: process exited while connecting to monitor: Could not access KVM kernel module: No such file or directory"));
        let libvirt = "unsupported configuration: Domain requires KVM, but it is not available. Check that virtualization is enabled in the host BIOS, and host configuration is setup to load the kvm modules.";
        assert!(kvm_failure(libvirt).is_some());

        // Failures that are the guest's or its configuration's: no fallback.
        for other in [
            "Cannot access storage file '/no/such/disk.img': No such file or directory",
            "internal error: qemu unexpectedly closed the monitor: qemu-system-x86_64: -drive file=/x.img: Could not open '/x.img': Permission denied",
            "operation failed: guest CPU doesn't match specification: missing features: avx512f",
            "the guest powered off",
            "",
        ] {
            assert_eq!(kvm_failure(other), None, "{other}");
        }
    }

    #[test]
    fn accel_choices_parse_as_flags_spell_them() {
        for choice in [AccelChoice::Auto, AccelChoice::Kvm, AccelChoice::Tcg] {
            assert_eq!(choice.as_str().parse::<AccelChoice>().unwrap(), choice);
        }
        assert!("hvf".parse::<AccelChoice>().unwrap_err().to_string().contains("auto, kvm or tcg"));
    }

    /// The committed boot sector is what `probe-guest.S` assembles to.
    #[test]
    fn the_probe_guest_is_its_source_assembled() {
        assert_eq!(PROBE_GUEST.len(), 512);
        assert_eq!(&PROBE_GUEST[510..], &[0x55, 0xaa], "a boot signature");
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/accel/probe-guest.S");
        let dir = tempfile::tempdir().unwrap();
        let object = dir.path().join("g.o");
        let binary = dir.path().join("g.bin");
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            let out = std::process::Command::new(program)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("{program} (GNU binutils, with gcc on this machine kind) is needed to check the probe guest: {e}"));
            assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run("as", &["--64".as_ref(), "-o".as_ref(), object.as_os_str(), src.as_os_str()]);
        run(
            "ld",
            &["-m", "elf_x86_64", "-Ttext", "0x7c00", "--oformat", "binary", "-e", "_start", "-o"]
                .map(std::ffi::OsStr::new)
                .into_iter()
                .chain([binary.as_os_str(), object.as_os_str()])
                .collect::<Vec<_>>(),
        );
        assert_eq!(std::fs::read(&binary).unwrap(), PROBE_GUEST, "probe-guest.bin is stale: assemble probe-guest.S again (see its header)");
    }
}
