//! What the commands that run for a while need of the process: one tokio runtime, the
//! signals that stop them, and log lines.

/// The one tokio runtime a command runs its async work on.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts")
}

/// Until Ctrl-C or SIGTERM (what `vmform down` sends).
pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM can be caught");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Log lines to stderr, `RUST_LOG`-filtered (default: info for vmform's own crates).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("vmform_runtime=info,vmform=info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).try_init();
}
