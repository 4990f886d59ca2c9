//! `vmform runtime controller|handler|launcher`: the runtime's parts as processes of
//! their own, as a real cluster runs them (a Deployment, a DaemonSet, one per VM).
//! `vmform up` runs the same code for the local cluster.

use crate::cli::RuntimeCommand;
use crate::error::{Done, Error, Outcome};
use crate::process::{init_logging, runtime, wait_for_signal};
use std::process::ExitCode;
use vmform_runtime::{controller, handler};

pub fn run(command: RuntimeCommand) -> Outcome {
    match command {
        RuntimeCommand::Launcher { .. } => unreachable!("main runs the launcher through `launcher`, for its own exit codes"),
        RuntimeCommand::Controller { target, volumes_dir, migrations } => {
            init_logging();
            runtime().block_on(async move {
                let target = connect(&target).await?;
                let migrations = controller::MigrationConfig {
                    parallel_migrations_per_cluster: migrations.parallel_migrations_per_cluster,
                    parallel_outbound_migrations_per_node: migrations.parallel_outbound_migrations_per_node,
                    completion_timeout_per_gib: migrations.migration_completion_timeout_per_gib,
                    bandwidth_per_migration: migrations.migration_bandwidth,
                    max_downtime_ms: Some(migrations.migration_max_downtime),
                    ..Default::default()
                };
                let config = controller::ControllerConfig { volumes_dir, migrations, ..Default::default() };
                controller::run(target.client, config, wait_for_signal()).await;
                Ok(Done::Ok)
            })
        }
        RuntimeCommand::Handler { target, node, node_dir, volumes_dir, libvirt_uri, own_libvirtd: _, lease_duration, node_address, accel, node_labels } => {
            init_logging();
            runtime().block_on(async move {
                let target = connect(&target).await?;
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
                handler::run(target.client, config, wait_for_signal()).await.map(|()| Done::Ok).map_err(Error::failed)
            })
        }
    }
}

/// The cluster a runtime part works for.
async fn connect(target: &crate::cli::TargetArgs) -> Result<vmform_cluster::Target, Error> {
    vmform_cluster::connect(&target.wanted()).await.map_err(Error::cluster)
}

/// The launcher's command: the small `vmform-launcher` next to this binary when it is
/// there (a launcher runs per guest, so its memory counts), else `vmform runtime launcher`.
pub fn launcher_command(vmform: &std::path::Path) -> Vec<std::ffi::OsString> {
    let small = vmform.with_file_name("vmform-launcher");
    if small.is_file() { vec![small.into()] } else { vec![vmform.into(), "runtime".into(), "launcher".into()] }
}

/// `vmform runtime launcher`. Its exit code is its own contract's
/// (specs/runtime-contract.md), not the CLI's, so it bypasses [`Outcome`].
pub fn launcher(command: RuntimeCommand) -> ExitCode {
    let RuntimeCommand::Launcher { vmi_dir, libvirt_uri, volumes_dir, accel, emulator, incoming } = command else {
        unreachable!("only the launcher command is given here")
    };
    let args = vmform_runtime::launcher::LauncherArgs { vmi_dir, libvirt_uri, volumes_dir, accel, emulator, incoming };
    ExitCode::from(vmform_runtime::launcher::run(args).code() as u8)
}
