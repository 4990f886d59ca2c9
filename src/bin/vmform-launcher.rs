//! The launcher (KubeVirt's virt-launcher) as a small binary of its own: one runs per
//! guest, so it carries only what a launcher needs, not the whole `vmform` CLI. The
//! handler starts it when it sits next to `vmform`, and `vmform runtime launcher`
//! otherwise; both take the same flags (`--vmi-dir`, `--libvirt-uri`, `--volumes-dir`,
//! `--accel`, `--incoming`).

use std::process::ExitCode;
use vmform_runtime::launcher::{self, LauncherArgs};

fn main() -> ExitCode {
    match LauncherArgs::from_args(std::env::args_os().skip(1)) {
        Ok(args) => ExitCode::from(launcher::run(args).code() as u8),
        Err(message) => {
            eprintln!("error: {message}\nusage: vmform-launcher --vmi-dir DIR --libvirt-uri URI --volumes-dir DIR [--accel kvm|tcg] [--incoming MIGRATION_UID]");
            ExitCode::from(2)
        }
    }
}
