//! `vmform runtime controller|handler|launcher`: the runtime's parts as processes of
//! their own, as a real cluster runs them (a Deployment, a DaemonSet, one per VM).
//! `vmform up` runs the same code for the local cluster.

use crate::cli::RuntimeCommand;
use crate::{EXIT_OK, EXIT_SPEC_ERRORS, EXIT_USAGE};
use vmform_runtime::{controller, handler};

pub fn run(command: RuntimeCommand) -> u8 {
    match command {
        RuntimeCommand::Launcher { vmi_dir, libvirt_uri, volumes_dir, accel, emulator, incoming } => {
            launcher(vmform_runtime::launcher::LauncherArgs { vmi_dir, libvirt_uri, volumes_dir, accel, emulator, incoming })
        }
        RuntimeCommand::Controller { target, volumes_dir, migrations } => {
            init_logging();
            crate::control_plane::runtime().block_on(async move {
                let Some(target) = connect(&target).await else { return EXIT_USAGE };
                let migrations = controller::MigrationConfig {
                    parallel_migrations_per_cluster: migrations.parallel_migrations_per_cluster,
                    parallel_outbound_migrations_per_node: migrations.parallel_outbound_migrations_per_node,
                    completion_timeout_per_gib: migrations.migration_completion_timeout_per_gib,
                    bandwidth_per_migration: migrations.migration_bandwidth,
                    max_downtime_ms: Some(migrations.migration_max_downtime),
                    ..Default::default()
                };
                let config = controller::ControllerConfig { volumes_dir, migrations, ..Default::default() };
                controller::run(target.client, config, crate::control_plane::wait_for_signal()).await;
                EXIT_OK
            })
        }
        RuntimeCommand::Handler { target, node, node_dir, volumes_dir, libvirt_uri, own_libvirtd: _, lease_duration, node_address, accel, node_labels } => {
            init_logging();
            crate::control_plane::runtime().block_on(async move {
                let Some(target) = connect(&target).await else { return EXIT_USAGE };
                let exe = std::env::current_exe().expect("the running binary has a path");
                let config = handler::HandlerConfig {
                    node,
                    node_dir,
                    volumes_dir,
                    libvirt: libvirt_uri.map_or(handler::LibvirtSource::Own, handler::LibvirtSource::Uri),
                    lease_duration,
                    launcher_command: launcher_command(&exe),
                    node_address,
                    accel: accel.config(),
                    labels: node_labels,
                };
                match handler::run(target.client, config, crate::control_plane::wait_for_signal()).await {
                    Ok(()) => EXIT_OK,
                    Err(e) => {
                        eprintln!("error: {e}");
                        EXIT_SPEC_ERRORS
                    }
                }
            })
        }
    }
}

/// The cluster a runtime part works for; `None` after saying why it cannot be reached.
async fn connect(target: &crate::cli::TargetArgs) -> Option<vmform_cluster::Target> {
    match vmform_cluster::connect(&target.wanted()).await {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// The launcher's command: the small `vmform-launcher` next to this binary when it is
/// there (a launcher runs per guest, so its memory counts), else `vmform runtime launcher`.
pub fn launcher_command(vmform: &std::path::Path) -> Vec<std::ffi::OsString> {
    let small = vmform.with_file_name("vmform-launcher");
    if small.is_file() { vec![small.into()] } else { vec![vmform.into(), "runtime".into(), "launcher".into()] }
}

/// A launcher's exit code is its own contract's (specs/runtime-contract.md), not the CLI's.
fn launcher(args: vmform_runtime::launcher::LauncherArgs) -> u8 {
    vmform_runtime::launcher::run(args).code() as u8
}

/// Log lines to stderr, `RUST_LOG`-filtered (default: info for vmform's own crates).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("vmform_runtime=info,vmform=info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).try_init();
}
